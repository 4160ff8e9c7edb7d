//! `tollgate store copy`: an embedded install (the real binary on SQLite) moved into a real
//! PostgreSQL, twice, then served from PostgreSQL with the same numbers and the same keys.

use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::pg::TestDb;

const ENCRYPTION: &str =
    "\n[security]\nencryption_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
const ALL_TIME: &str = "start=2000-01-01&end=2099-12-31";

/// Everything the public API shows about an account that a copy must keep.
async fn snapshot(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    account: &str,
    key: &str,
) -> Value {
    let models = get_json(http, &format!("{base}/v1/usage/models?{ALL_TIME}"), key).await;
    let credits = get_json(http, &format!("{base}/v1/credits"), key).await;
    let audit = get_json(
        http,
        &format!("{base}/admin/accounts/{account}/credits"),
        admin,
    )
    .await;
    let usage = get_json(http, &format!("{base}/v1/usage"), key).await;
    json!({
        "models": models["data"],
        "credits": credits,
        "audit": {
            "grants": audit["grants_nanos"], "refunds": audit["refunds_nanos"],
            "charges": audit["charges_nanos"], "charges_records": audit["charges_nanos_records"],
            "balance": audit["balance_nanos"], "consistent": audit["consistent"],
        },
        "month": usage["monthly"],
        "total_requests": usage["total_requests"],
    })
}

fn store_copy(dir: &std::path::Path, from: &std::path::Path, to: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir)
        .args(["store", "copy", "--from"])
        .arg(format!("sqlite:{}", from.display()))
        .args(["--to", to])
        .env("TOLLGATE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "store copy failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn pg_count(c: &tokio_postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn chat(http: &reqwest::Client, base: &str, key: &str, stream: bool) -> reqwest::Response {
    http.post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hello there world"}]}),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_an_embedded_install_to_postgres_once() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // ---- on SQLite: two accounts, keys, grants, a refund, a provider key, metered requests ----
    let sqlite_toml = dir.path().join("sqlite.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &sqlite_toml,
        config_toml(&data, &mock.base_url(), "127.0.0.1:0") + ENCRYPTION,
    )
    .unwrap();
    let (child, base, admin) = start_binary(&sqlite_toml).await;
    let admin = admin.expect("first start creates the admin key");
    let (account, _, key) = create_account_and_key(&http, &base, &admin).await;
    grant(&http, &base, &admin, &account, "2.5").await;
    let r = http
        .post(format!("{base}/admin/accounts/{account}/credits"))
        .bearer_auth(&admin)
        .json(&json!({"kind": "refund", "amount_usd": "0.25", "idempotency_key": "refund-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, revoked_id, revoked_key) = {
        let k: Value = http
            .post(format!("{base}/admin/accounts/{account}/keys"))
            .bearer_auth(&admin)
            .json(&json!({"name": "old laptop"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            (),
            k["id"].as_str().unwrap().to_string(),
            k["key"].as_str().unwrap().to_string(),
        )
    };
    let rv = http
        .delete(format!("{base}/admin/keys/{revoked_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(rv.status().is_success());
    let (byok_account, _, byok_key) = create_account_and_key(&http, &base, &admin).await;
    grant(&http, &base, &admin, &byok_account, "1").await;
    let own = "sk-own-provider-key-4321";
    let r = http
        .put(format!(
            "{base}/admin/accounts/{byok_account}/provider-keys/mock"
        ))
        .bearer_auth(&admin)
        .json(&json!({"api_key": own}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut ids = Vec::new();
    for i in 0..5 {
        let r = chat(&http, &base, &key, i % 2 == 1).await;
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r));
        r.text().await.unwrap();
    }
    let r = chat(&http, &base, &byok_key, false).await;
    assert_eq!(r.status(), 200);
    ids.push(request_id(&r));
    // A refusal is a record too (zero tokens).
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let refused = request_id(&r);
    let expected_records = ids.len() + 1;
    for id in ids.iter().chain([&refused]) {
        for _ in 0..100 {
            let r = http
                .get(format!("{base}/admin/requests/{id}"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let before = snapshot(&http, &base, &admin, &account, &key).await;
    let before_byok = snapshot(&http, &base, &admin, &byok_account, &byok_key).await;
    let log: Value = get_json(&http, &format!("{base}/admin/requests?limit=100"), &admin).await;
    assert_eq!(log["data"].as_array().unwrap().len(), expected_records);
    let record = get_json(&http, &format!("{base}/admin/requests/{}", ids[0]), &admin).await;
    assert!(before["audit"]["charges"].as_i64().unwrap() > 0, "{before}");
    stop_binary(child).await;

    // ---- store copy, twice: the second run finds everything copied ----
    let db = TestDb::create().await;
    let sqlite = data.join("tollgate.db");
    let first = store_copy(dir.path(), &sqlite, &db.url);
    assert!(first.contains("verified"), "{first}");
    assert!(
        first.contains(&format!(
            "{expected_records} record(s) read, {expected_records} new"
        )),
        "{first}"
    );
    let c = db.client().await;
    let tables = [
        "accounts",
        "api_keys",
        "credit_entries",
        "provider_keys",
        "usage_records",
        "usage_rollup_minute",
        "usage_rollup_hour",
        "usage_rollup_day",
    ];
    let lite = rusqlite::Connection::open(&sqlite).unwrap();
    let mut counts = Vec::new();
    for t in tables {
        let n = pg_count(&c, t).await;
        let sql = format!("SELECT COUNT(*) FROM {t}");
        let in_sqlite: i64 = lite.query_row(&sql, [], |r| r.get(0)).unwrap();
        assert_eq!(
            n, in_sqlite,
            "{t}: every row copied, rollups rebuilt row for row"
        );
        counts.push(n);
    }
    assert_eq!(counts[4], expected_records as i64);
    assert_eq!(counts[3], 1, "the provider key");
    let pools: i64 = c
        .query_one(
            "SELECT COALESCE(SUM(available_nanos), 0)::bigint FROM credit_pools",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let second = store_copy(dir.path(), &sqlite, &db.url);
    assert!(second.contains("verified"), "{second}");
    assert!(
        second.contains("0 account(s) new") && second.contains("0 key(s) new"),
        "{second}"
    );
    assert!(second.contains("0 credit entr(ies) new"), "{second}");
    assert!(
        second.contains(&format!("{expected_records} record(s) read, 0 new")),
        "{second}"
    );
    let mut again = Vec::new();
    for t in tables {
        again.push(pg_count(&c, t).await);
    }
    assert_eq!(again, counts, "a second copy adds nothing");
    let pools_again: i64 = c
        .query_one(
            "SELECT COALESCE(SUM(available_nanos), 0)::bigint FROM credit_pools",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pools_again, pools, "a second copy moves no money");

    // ---- the binary on PostgreSQL: same numbers, same keys ----
    let pg_toml = dir.path().join("pg.toml");
    std::fs::write(
        &pg_toml,
        config_toml(&dir.path().join("pgdata"), &mock.base_url(), "127.0.0.1:0")
            + ENCRYPTION
            + &format!("\n[store]\nkind = \"postgres\"\nurl = \"{}\"\n", db.url),
    )
    .unwrap();
    let (_pg_child, pg_base, new_admin) = start_binary(&pg_toml).await;
    assert!(
        new_admin.is_none(),
        "the copied admin key is there: none is created"
    );
    let after = snapshot(&http, &pg_base, &admin, &account, &key).await;
    assert_eq!(after, before);
    let after_byok = snapshot(&http, &pg_base, &admin, &byok_account, &byok_key).await;
    assert_eq!(after_byok, before_byok);
    assert_eq!(
        after["audit"]["balance"].as_i64().unwrap(),
        before["audit"]["balance"].as_i64().unwrap()
    );
    let log: Value = get_json(
        &http,
        &format!("{pg_base}/admin/requests?limit=100"),
        &admin,
    )
    .await;
    assert_eq!(log["data"].as_array().unwrap().len(), expected_records);
    assert_eq!(
        get_json(
            &http,
            &format!("{pg_base}/admin/requests/{}", ids[0]),
            &admin
        )
        .await,
        record
    );

    // The old key still authenticates and spends the copied balance; the revoked one stays
    // revoked; the copied provider key still serves its account.
    let r = chat(&http, &pg_base, &key, false).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_eq!(
        chat(&http, &pg_base, &revoked_key, false).await.status(),
        401
    );
    let r = chat(&http, &pg_base, &byok_key, false).await;
    assert_eq!(r.status(), 200);
    let byok_id = request_id(&r);
    let entry = mock
        .ledger()
        .into_iter()
        .find(|e| e.request_id.as_deref() == Some(byok_id.as_str()))
        .unwrap();
    assert_eq!(
        entry.auth.as_deref(),
        Some(format!("Bearer {own}").as_str())
    );

    // The target has moved on (requests served from it): a copy now finds it differs from its
    // source, says how, and exits non-zero.
    for _ in 0..100 {
        if pg_count(&c, "usage_records").await == expected_records as i64 + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir.path())
        .args(["store", "copy", "--from"])
        .arg(format!("sqlite:{}", sqlite.display()))
        .args(["--to", &db.url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("mismatch: records"), "{stderr}");
    assert!(stderr.contains("does not match its source"), "{stderr}");
}
