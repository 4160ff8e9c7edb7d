//! `records.retention_days` through the real binary, on SQLite and on PostgreSQL: records past
//! it leave the request log and record lookups; every usage total and balance stays.

use std::sync::Arc;

use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};
use tollgate::record::UsageRecord;
use tollgate_core::store::Store;

use crate::helpers::*;
use crate::pg::TestDb;

const DAY_MS: i64 = 86_400_000;
const ALL_TIME: &str = "start=2000-01-01&end=2099-12-31";

/// The numbers retention must not move.
async fn totals(
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
    json!({
        "models": models["data"],
        "credits": credits,
        "grants": audit["grants_nanos"],
        "charges": audit["charges_nanos"],
        "balance": audit["balance_nanos"],
        // The dropped records' charges are retired with them: the audit still adds up.
        "consistent": audit["consistent"],
        "charges_records": audit["charges_nanos_records"],
    })
}

async fn status(http: &reqwest::Client, base: &str, admin: &str, id: &str) -> u16 {
    http.get(format!("{base}/admin/requests/{id}"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn request_log(http: &reqwest::Client, base: &str, admin: &str) -> Vec<String> {
    let v = get_json(http, &format!("{base}/admin/requests?limit=1000"), admin).await;
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn retention_keeps_totals(postgres: bool) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let db = if postgres {
        Some(TestDb::create().await)
    } else {
        None
    };
    let data = dir.path().join("data");
    let config = dir.path().join("tollgate.toml");
    let store_toml = db.as_ref().map_or(String::new(), |db| {
        format!("\n[store]\nkind = \"postgres\"\nurl = \"{}\"\n", db.url)
    });
    std::fs::write(
        &config,
        config_toml(&data, &mock.base_url(), "127.0.0.1:0") + &store_toml,
    )
    .unwrap();

    // Two requests today.
    let (child, base, admin) = start_binary(&config).await;
    let admin = admin.unwrap();
    let (account, _, key) = create_account_and_key(&http, &base, &admin).await;
    grant(&http, &base, &admin, &account, "5").await;
    let mut recent = Vec::new();
    for _ in 0..2 {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        recent.push(request_id(&r));
    }
    let mut template: Option<UsageRecord> = None;
    for _ in 0..100 {
        let r = http
            .get(format!("{base}/admin/requests/{}", recent[1]))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            template = Some(r.json().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let template = template.expect("the record is stored");
    stop_binary(child).await;

    // Records of the same account from 100 and 10 days ago, written into the store directly
    // (with their rollups and charges, as the gateway would have).
    let now = template.created_at_ms;
    let old = |id: &str, days: i64| {
        let mut r = template.clone();
        r.request_id = id.into();
        r.created_at_ms = now - days * DAY_MS;
        r.finished_at_ms = r.created_at_ms + 5;
        r
    };
    let backdated = vec![
        old("req_old_1", 100),
        old("req_old_2", 100),
        old("req_10d", 10),
    ];
    {
        let store: Arc<dyn Store> = match &db {
            Some(db) => Arc::new(
                tollgate_store::PgStore::connect(&db.url, 2, "test")
                    .await
                    .unwrap(),
            ),
            None => Arc::new(tollgate_store::SqliteStore::open(&data.join("tollgate.db")).unwrap()),
        };
        assert_eq!(store.insert_usage(backdated).await.unwrap(), 3);
    }

    // Without retention: every record is there.
    let (child, base, _) = start_binary(&config).await;
    let before = totals(&http, &base, &admin, &account, &key).await;
    let mut all: Vec<String> = recent
        .iter()
        .cloned()
        .chain(["req_old_1", "req_old_2", "req_10d"].map(String::from))
        .collect();
    all.sort();
    assert_eq!(request_log(&http, &base, &admin).await, all);
    stop_binary(child).await;

    // With 30 days' retention (set by environment): the start's pass drops the 100-day-old
    // records; the rest stay, and so does every total.
    let (_child, base, _) =
        start_binary_env(&config, &[("TOLLGATE_RECORDS__RETENTION_DAYS", "30")]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status(&http, &base, &admin, "req_old_1").await != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status(&http, &base, &admin, "req_old_2").await, 404);
    assert_eq!(status(&http, &base, &admin, "req_10d").await, 200);
    let mut kept: Vec<String> = recent.iter().cloned().chain(["req_10d".into()]).collect();
    kept.sort();
    assert_eq!(request_log(&http, &base, &admin).await, kept);
    let after = totals(&http, &base, &admin, &account, &key).await;
    assert_eq!(after, before, "rollups and balances are kept");
    assert_eq!(after["consistent"], true, "{after}");
    let models = after["models"].as_array().unwrap();
    assert_eq!(models[0]["requests"], 5, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_records_and_keeps_totals_on_sqlite() {
    retention_keeps_totals(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_records_and_keeps_totals_on_postgres() {
    retention_keeps_totals(true).await;
}
