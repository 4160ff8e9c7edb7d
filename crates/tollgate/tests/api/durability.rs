//! Nothing lost, nothing twice: `kill -9` under concurrent load, then a restart.

use std::sync::Arc;
use std::time::Duration;

use mock_upstream::{MockConfig, MockServer};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_answered_and_counts_nothing_twice() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    // A fixed port so the restarted process is reachable at the same address.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        &config,
        config_toml(
            &dir.path().join("data"),
            &mock.base_url(),
            &format!("127.0.0.1:{port}"),
        ),
    )
    .unwrap();
    let (mut child, base, admin) = start_binary(&config).await;
    let admin = admin.expect("first start prints the admin key");
    let http = reqwest::Client::new();
    let (account, _, key) = create_account_and_key(&http, &base, &admin).await;
    grant(&http, &base, &admin, &account, "1000").await;

    // 16 clients loop until the kill; each remembers the ids of responses it fully received.
    let completed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (http, base, key, completed) =
            (http.clone(), base.clone(), key.clone(), completed.clone());
        tasks.push(tokio::spawn(async move {
            let stream = i % 2 == 0;
            loop {
                let body = json!({"model": "gpt-4o-mini", "stream": stream,
                                  "messages": [{"role": "user", "content": "load test"}]});
                let Ok(resp) = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                let id = request_id(&resp);
                let Ok(text) = resp.text().await else { return };
                let whole = if stream {
                    text.trim_end().ends_with("data: [DONE]")
                } else {
                    serde_json::from_str::<Value>(&text).is_ok()
                };
                if whole {
                    completed.lock().push(id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let completed = completed.lock().clone();
    assert!(
        completed.len() > 50,
        "too little load to prove anything: {}",
        completed.len()
    );

    let (_child, base, again) = start_binary(&config).await;
    assert!(
        again.is_none(),
        "the admin key is created only on the first start"
    );
    // The restarted gateway has replayed its journal before answering; wait for one answer,
    // then read every stored id (more than an API page under load).
    let v: Value = http
        .get(format!("{base}/admin/requests?limit=1"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["data"].is_array());
    let db = rusqlite::Connection::open(dir.path().join("data/tollgate.db")).unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT request_id FROM usage_records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a request id is stored twice");
    for id in &completed {
        assert!(
            unique.contains(id.as_str()),
            "answered request {id} was lost"
        );
    }
    // Every record the gateway has was served by the upstream, once.
    let served: std::collections::HashSet<String> = mock
        .ledger()
        .into_iter()
        .filter_map(|e| e.request_id)
        .collect();
    assert!(unique.iter().all(|id| served.contains(*id)));

    // Rollups were built once per record even though the journal was replayed.
    let (n, tokens): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens + output_tokens), 0) FROM usage_records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    for table in ["usage_rollup_minute", "usage_rollup_hour"] {
        let (rn, rt): (i64, i64) = db
            .query_row(
                &format!("SELECT SUM(requests), SUM(input_tokens + output_tokens) FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rn, rt), (n, tokens), "{table} disagrees with the records");
    }
}

#[tokio::test]
async fn replaying_the_journal_twice_counts_each_record_once() {
    use tollgate_core::store::RecordStore;
    use tollgate_store::SqliteStore;
    let app = spawn_app().await;
    for _ in 0..3 {
        let r = app
            .post_bearer("/v1/chat/completions", &app.chat_body("gpt-4o", false))
            .await;
        assert_eq!(r.status(), 200);
    }
    let records = app.records().await;
    assert_eq!(records.len(), 3);
    let typed: Vec<tollgate::record::UsageRecord> = records
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect();
    let store = SqliteStore::open(&app._dir.path().join("data/tollgate.db")).unwrap();
    assert_eq!(store.insert_usage(typed.clone()).await.unwrap(), 0);
    assert_eq!(store.insert_usage(typed).await.unwrap(), 0);
    assert_eq!(store.count_usage().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_served_and_kept_while_the_database_is_locked() {
    let app = spawn_app().await;
    // Another process takes the database's write lock: the batch writer cannot commit.
    let db = rusqlite::Connection::open(app._dir.path().join("data/tollgate.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let r = app
            .post_bearer("/v1/chat/completions", &app.chat_body("gpt-4o-mini", false))
            .await;
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the hot path waited for the database: {:?}",
        started.elapsed()
    );
    db.execute_batch("COMMIT").unwrap();
    let stored: std::collections::HashSet<String> = app
        .records()
        .await
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert!(
            stored.contains(id),
            "{id} lost while the database was locked"
        );
    }
    assert_eq!(stored.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_requests_at_the_upstream_records_each_once_as_interrupted_and_charged() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Slow requests must still be at the upstream when the process dies.
    let toml = config_toml(
        &dir.path().join("data"),
        &mock.base_url(),
        &format!("127.0.0.1:{port}"),
    )
    .replace("upstream_timeout_secs = 2", "upstream_timeout_secs = 60");
    std::fs::write(&config, toml).unwrap();
    let (mut child, base, admin) = start_binary(&config).await;
    let admin = admin.expect("first start prints the admin key");
    let http = reqwest::Client::new();
    let (account, _, key) = create_account_and_key(&http, &base, &admin).await;
    grant(&http, &base, &admin, &account, "10").await;
    let chat = |stream: bool, mock: Value| {
        json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 100, "mock": mock,
               "messages": [{"role": "user", "content": "a question that takes a while to answer"}]})
    };

    // Finished before the kill: each must keep its one, real record.
    let mut finished = std::collections::HashSet::new();
    for stream in [false, true, false, true] {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat(stream, json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        finished.insert(request_id(&r));
        r.text().await.unwrap();
    }
    // In flight at the kill: 4 waiting for an answer that never comes, 4 streams half way through.
    let mut slow = Vec::new();
    for i in 0..8 {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let body = if i % 2 == 0 {
            chat(false, json!({"hang": true}))
        } else {
            chat(true, json!({"chunk_delay_ms": 500, "output_tokens": 100}))
        };
        slow.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await;
            if let Ok(r) = r {
                let _ = r.text().await;
            }
        }));
    }
    let in_flight = |ledger: Vec<mock_upstream::LedgerEntry>| -> Vec<String> {
        ledger
            .into_iter()
            .filter_map(|e| e.request_id)
            .filter(|id| !finished.contains(id))
            .collect()
    };
    for _ in 0..200 {
        if in_flight(mock.ledger()).len() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the streams send a few events.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let interrupted = in_flight(mock.ledger());
    assert_eq!(
        interrupted.len(),
        8,
        "the slow requests did not all reach the upstream"
    );
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    for t in slow {
        t.await.unwrap();
    }

    let (_child, base, _) = start_binary(&config).await;
    let get = |path: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let r = http.get(path).bearer_auth(&admin).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let records = get(format!("{base}/admin/requests?limit=1000")).await;
    let records = records["data"].as_array().unwrap();
    // Exactly one record per request the upstream saw, the finished ones not doubled.
    assert_eq!(records.len(), 12, "{records:#?}");
    let by_id: std::collections::HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_id.len(), 12);
    for id in &finished {
        let r = by_id[id.as_str()];
        assert_eq!(
            (&r["status"], &r["provenance"]),
            (&json!("success"), &json!("provider")),
            "{r}"
        );
    }
    for id in &interrupted {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no record for {id}, in flight at the kill"));
        assert_eq!(r["status"], "interrupted", "{r}");
        assert_eq!(r["provenance"], "estimated", "{r}");
        assert_eq!(r["error_code"], "gateway_restarted", "{r}");
        assert!(r["input_tokens"].as_i64().unwrap() > 0, "{r}");
        assert_eq!(r["output_tokens"], 0, "{r}");
        assert!(r["charged_nanos"].as_i64().unwrap() > 0, "charged: {r}");
        assert_eq!(r["charged_nanos"], r["cost_nanos"], "{r}");
    }
    // Charged: the balance is the grant less every record's charge, and the audit agrees.
    let audit = get(format!("{base}/admin/accounts/{account}/credits")).await;
    let charged: i64 = records
        .iter()
        .map(|r| r["charged_nanos"].as_i64().unwrap())
        .sum();
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    assert_eq!(audit["charges_nanos"], json!(charged), "{audit}");
    assert_eq!(
        audit["balance_nanos"],
        json!(10_000_000_000 - charged),
        "{audit}"
    );
    // And the usage APIs count them.
    let usage: Value = http
        .get(format!("{base}/v1/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["monthly"]["request_count"], 12, "{usage}");
    assert_eq!(usage["monthly"]["success_count"], 4, "{usage}");
}
