//! Several replicas (real `tollgate serve` processes) on one real PostgreSQL: the same numbers
//! on every replica, no overspend, revocations and grants seen everywhere within a second.

use std::time::{Duration, Instant};

use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::pg::TestDb;

pub struct Replicas {
    pub bases: Vec<String>,
    pub admin: String,
    pub _children: Vec<tokio::process::Child>,
    pub _dir: tempfile::TempDir,
    _mock: MockServer,
    pub db: TestDb,
}

/// Starts `n` replicas on a fresh database; the first creates the schema and the admin key.
async fn start_replicas(n: usize) -> Replicas {
    start_replicas_via(n, None).await
}

/// As `start_replicas`, the replicas reaching the database at `via` (host:port of a relay).
pub async fn start_replicas_via(n: usize, via: Option<&str>) -> Replicas {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let db = TestDb::create().await;
    let url = via.map_or_else(|| db.url.clone(), |addr| db.url_via(addr));
    let dir = tempfile::tempdir().unwrap();
    let (mut bases, mut children, mut admin) = (Vec::new(), Vec::new(), None);
    for i in 0..n {
        let config = dir.path().join(format!("r{i}.toml"));
        let text = config_toml(
            &dir.path().join(format!("data{i}")),
            &mock.base_url(),
            "127.0.0.1:0",
        ) + &format!(
            "\n[store]\nkind = \"postgres\"\nurl = \"{url}\"\nreplica_id = \"r{i}\"\n",
        );
        std::fs::write(&config, text).unwrap();
        // Through a relay the test cuts, every request logs the outage: keep the output quiet.
        let quiet: &[(&str, &str)] = if via.is_some() {
            &[("TOLLGATE_LOG", "off")]
        } else {
            &[]
        };
        let (child, base, key) = start_binary_env(&config, quiet).await;
        if i == 0 {
            admin = Some(key.expect("the first replica creates the admin key"));
        } else {
            assert!(
                key.is_none(),
                "only one admin key is created for the database"
            );
        }
        bases.push(base);
        children.push(child);
    }
    Replicas {
        bases,
        admin: admin.unwrap(),
        _children: children,
        _dir: dir,
        _mock: mock,
        db,
    }
}

pub async fn chat(http: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap()
}

pub async fn audit(http: &reqwest::Client, base: &str, admin: &str, account: &str) -> Value {
    http.get(format!("{base}/admin/accounts/{account}/credits"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// 3 replicas × 200 concurrent requests against a balance that covers about 50 holds: the
/// balance never goes below zero, and Σ charged = Σ record charges = grants − balance, read
/// the same on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_overspend_one_balance() {
    let r = start_replicas(3).await;
    let http = reqwest::Client::new();
    // What one request holds and costs: measured on a calibration account.
    let (calib, _, calib_key) = create_account_and_key(&http, &r.bases[0], &r.admin).await;
    grant(&http, &r.bases[0], &r.admin, &calib, "1").await;
    let resp = chat(&http, &r.bases[0], &calib_key).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let mut charged = 0;
    for _ in 0..100 {
        let rec = http
            .get(format!("{}/admin/requests/{id}", r.bases[1]))
            .bearer_auth(&r.admin)
            .send()
            .await
            .unwrap();
        if rec.status() == 200 {
            charged = rec.json::<Value>().await.unwrap()["charged_nanos"]
                .as_i64()
                .unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(charged > 0, "the calibration request was charged");

    let (account, _, key) = create_account_and_key(&http, &r.bases[0], &r.admin).await;
    let grant_nanos = charged * 50;
    grant(
        &http,
        &r.bases[1],
        &r.admin,
        &account,
        &format!("0.{grant_nanos:09}"),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..600 {
        let (http, base, key) = (http.clone(), r.bases[i % 3].clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            chat(&http, &base, &key).await.status().as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // A request the rest of the balance cannot fully cover is served with its output capped to
    // what it covers, so a few more than 50 may be served: the money below is what must hold.
    assert!(
        (40..100).contains(&ok),
        "{ok} requests were served on ~50 requests' balance"
    );

    // Every record reaches the database (exactly one per served request); then every replica
    // reads the same audit.
    let c = r.db.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM usage_records WHERE account_id = $1 AND status = 'success'",
                &[&account],
            )
            .await
            .unwrap()
            .get(0);
        if n == ok as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline && n < ok as i64,
            "{n} records for {ok} requests"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = audit(&http, &r.bases[2], &r.admin, &account).await;
    let balance = first["balance_nanos"].as_i64().unwrap();
    assert!(balance >= 0, "{first}");
    assert_eq!(first["grants_nanos"].as_i64().unwrap(), grant_nanos);
    assert_eq!(
        first["charges_nanos"], first["charges_nanos_records"],
        "{first}"
    );
    assert_eq!(
        first["charges_nanos"].as_i64().unwrap(),
        grant_nanos - balance
    );
    assert_eq!(first["consistent"], true, "{first}");
    let l = &first["leases"];
    assert_eq!(
        l["available_nanos"].as_i64().unwrap() + l["leased_nanos"].as_i64().unwrap(),
        balance,
        "{first}"
    );
    for base in &r.bases {
        let a = audit(&http, base, &r.admin, &account).await;
        assert_eq!(a["balance_nanos"], first["balance_nanos"], "{base}: {a}");
        assert_eq!(a["charges_nanos"], first["charges_nanos"], "{base}: {a}");
    }
}

/// A request served by replica A shows in replica B's usage within a second; a key revoked on
/// B is refused by A within a second; a grant made on C is spendable on A within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_others_writes_within_a_second() {
    let r = start_replicas(3).await;
    let http = reqwest::Client::new();
    let (account, key_id, key) = create_account_and_key(&http, &r.bases[0], &r.admin).await;

    // No credits yet: refused on A. A grant on C is spendable on A within a second.
    assert_eq!(chat(&http, &r.bases[0], &key).await.status(), 402);
    grant(&http, &r.bases[2], &r.admin, &account, "1").await;
    let granted = Instant::now();
    let resp = loop {
        let resp = chat(&http, &r.bases[0], &key).await;
        if resp.status() == 200 || granted.elapsed() > Duration::from_secs(3) {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resp.status(), 200);
    assert!(
        granted.elapsed() < Duration::from_secs(1),
        "{:?}",
        granted.elapsed()
    );

    // Served on A, visible on B.
    let id = request_id(&resp);
    let done = Instant::now();
    loop {
        let rec = http
            .get(format!("{}/admin/requests/{id}", r.bases[1]))
            .bearer_auth(&r.admin)
            .send()
            .await
            .unwrap();
        if rec.status() == 200 {
            break;
        }
        assert!(done.elapsed() < Duration::from_secs(1), "not visible on B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage: Value = http
        .get(format!("{}/v1/usage", r.bases[1]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["daily"]["success_count"], 1, "{usage}");

    // Revoked on B: refused on A (which cached the key) within a second.
    let rv = http
        .delete(format!("{}/admin/keys/{key_id}", r.bases[1]))
        .bearer_auth(&r.admin)
        .send()
        .await
        .unwrap();
    assert!(rv.status().is_success(), "{}", rv.status());
    let revoked = Instant::now();
    loop {
        let s = chat(&http, &r.bases[0], &key).await.status();
        if s == 401 {
            break;
        }
        assert_eq!(s, 200);
        assert!(
            revoked.elapsed() < Duration::from_millis(1500),
            "still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        revoked.elapsed() < Duration::from_millis(1100),
        "{:?}",
        revoked.elapsed()
    );
}

/// kill -9 of a replica under load, then `tollgate journal replay` of its journal from
/// elsewhere (twice), then the replica's own restart: every completed response has exactly one
/// record in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_journal_is_replayed_once() {
    let mut r = start_replicas(2).await;
    let http = reqwest::Client::new();
    let (account, _, key) = create_account_and_key(&http, &r.bases[0], &r.admin).await;
    grant(&http, &r.bases[0], &r.admin, &account, "100").await;
    let completed = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (http, base, key, completed) = (
            http.clone(),
            r.bases[1].clone(),
            key.clone(),
            completed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(resp) = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "gpt-4o-mini", "stream": i % 2 == 0,
                                  "messages": [{"role": "user", "content": "load"}]}))
                    .send()
                    .await
                else {
                    return;
                };
                let id = request_id(&resp);
                let ok = resp.status() == 200;
                let Ok(text) = resp.text().await else { return };
                if ok && (text.trim_end().ends_with("[DONE]") || text.starts_with('{')) {
                    completed.lock().push(id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let child = &mut r._children[1];
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let completed = completed.lock().clone();
    assert!(completed.len() > 20, "too little load: {}", completed.len());

    let config = r._dir.path().join("r1.toml");
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&config)
            .args(["journal", "replay"])
            .arg(r._dir.path().join("data1/journal"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The dead replica restarts on its own data dir: its journal, delivered already, is
    // replayed once more on start, and still nothing is counted twice.
    let (child, base, _) = start_binary(&config).await;
    r._children[1] = child;
    let after = chat(&http, &base, &key).await;
    assert_eq!(after.status(), 200, "the restarted replica serves");
    let c = r.db.client().await;
    let rows = c
        .query(
            "SELECT request_id, COUNT(*) FROM usage_records WHERE account_id = $1 GROUP BY 1",
            &[&account],
        )
        .await
        .unwrap();
    let stored: std::collections::HashMap<String, i64> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for id in &completed {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "{id} must have exactly one record"
        );
    }
    // The audit agrees with the records on the surviving replica: at rest, once the writes in
    // flight (the survivor's own batch writer) have landed; a lost or doubled charge never would.
    let deadline = Instant::now() + Duration::from_secs(5);
    let a = loop {
        let a = audit(&http, &r.bases[0], &r.admin, &account).await;
        if a["consistent"] == true || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(a["charges_nanos"], a["charges_nanos_records"], "{a}");
    assert_eq!(a["consistent"], true, "{a}");
}

async fn limited_key(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    account: &str,
    limits: Value,
) -> (String, String) {
    let v: Value = http
        .post(format!("{base}/admin/accounts/{account}/keys"))
        .bearer_auth(admin)
        .json(&json!({"name": "limited", "limits": limits}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = v["key"].as_str().unwrap_or_else(|| panic!("{v}"));
    (v["id"].as_str().unwrap().to_string(), key.to_string())
}

/// Fires `per_replica` concurrent requests at each replica; returns how many were served,
/// failing on anything but 200 and 429.
async fn burst(http: &reqwest::Client, r: &Replicas, key: &str, per_replica: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..per_replica * r.bases.len() {
        let (http, base, key) = (
            http.clone(),
            r.bases[i % r.bases.len()].clone(),
            key.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let resp = chat(&http, &base, &key).await;
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (429, _) => {}
            (other, body) => panic!("unexpected status {other}: {body}"),
        }
    }
    ok
}

/// Waits until the current UTC minute has at least 20 s left, so a burst stays in one window.
async fn early_in_a_minute() {
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        % 60_000;
    if into > 40_000 {
        tokio::time::sleep(Duration::from_millis(60_500 - into)).await;
    }
}

/// A key's rpm and spend limits hold across 3 replicas: 3 × 40 concurrent requests on a key
/// allowed 30 per minute are served exactly 30 times (each replica alone would serve 40), and a
/// spend limit is never passed; a limit raised on one replica holds on the others within a
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_replicas() {
    let r = start_replicas(3).await;
    let http = reqwest::Client::new();
    let (account, _, _) = create_account_and_key(&http, &r.bases[0], &r.admin).await;
    grant(&http, &r.bases[0], &r.admin, &account, "10").await;

    let (rpm_id, rpm_key) = limited_key(
        &http,
        &r.bases[0],
        &r.admin,
        &account,
        json!({"rpm_limit": 30}),
    )
    .await;
    early_in_a_minute().await;
    let ok = burst(&http, &r, &rpm_key, 40).await;
    assert_eq!(ok, 30, "served {ok} of 120 on a key allowed 30 per minute");
    // Used up on every replica, including the ones that served few of them.
    for base in &r.bases {
        assert_eq!(chat(&http, base, &rpm_key).await.status(), 429, "{base}");
    }
    // Raised on one replica: served again on another within a second.
    let patched = http
        .patch(format!("{}/admin/keys/{rpm_id}", r.bases[2]))
        .bearer_auth(&r.admin)
        .json(&json!({"limits": {"rpm_limit": 60}}))
        .send()
        .await
        .unwrap();
    assert!(patched.status().is_success(), "{}", patched.status());
    let raised = Instant::now();
    loop {
        let status = chat(&http, &r.bases[0], &rpm_key).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(raised.elapsed() < Duration::from_millis(1100), "not raised");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Spend: a daily limit of about ten requests' worth, never passed across replicas.
    let limit_nanos: i64 = 200_000;
    let (spend_id, spend_key) = limited_key(
        &http,
        &r.bases[1],
        &r.admin,
        &account,
        json!({"spend_limit_nanos": limit_nanos, "spend_period": "daily"}),
    )
    .await;
    let served = burst(&http, &r, &spend_key, 40).await;
    assert!(
        (1..120).contains(&served),
        "{served} served under a spend limit"
    );
    let c = r.db.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let spent: i64 = loop {
        let row = c
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0)::BIGINT FROM usage_records \
                 WHERE key_id = $1 AND status = 'success'",
                &[&spend_id],
            )
            .await
            .unwrap();
        let (n, sum): (i64, i64) = (row.get(0), row.get(1));
        if n == served as i64 {
            break sum;
        }
        assert!(Instant::now() < deadline, "{n} records for {served} served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        spent <= limit_nanos,
        "spent {spent} nano-USD on a {limit_nanos} limit"
    );
    assert!(spent > 0);
}
