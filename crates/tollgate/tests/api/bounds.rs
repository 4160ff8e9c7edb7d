//! Upstream numbers are bounded: an upstream reporting 2^64 − 1 tokens gets a record clamped to
//! `metering.max_tokens_per_request` and flagged `clamped`, and every total, report and the
//! credit audit stay sane, also after a restart on the same data.

use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};
use tollgate::Application;

use crate::helpers::*;

const ENCRYPTION: &str =
    "\n[security]\nencryption_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";

/// The default `metering.max_tokens_per_request`.
const CEILING: i64 = 10_000_000;

/// A running gateway that can be stopped (to start another on the same data dir).
struct Gateway {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(dir: &std::path::Path, mock: &MockServer) -> (Gateway, Option<String>) {
    let config = load_config(dir, &mock.base_url(), ENCRYPTION);
    let app = Application::build(config).await.unwrap();
    let admin = app.bootstrap_admin_key.clone().map(|k| k.key);
    let base = format!("http://{}", app.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(app.run_with_shutdown(async {
        let _ = rx.await;
    }));
    (
        Gateway {
            base,
            stop: Some(tx),
            done,
        },
        admin,
    )
}

impl Gateway {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.done.await.unwrap().unwrap();
    }
}

/// Every number in `v` is a finite, non-negative value (no wrapped or overflowed total).
fn assert_sane(path: &str, v: &Value) {
    fn walk(path: &str, at: &str, v: &Value) {
        match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                assert!(f.is_finite() && f >= 0.0, "{path}: {at} = {n}");
                // Nothing here comes near i64::MAX: a clamped record costs dollars, not 10^9 USD.
                if let Some(i) = n.as_i64() {
                    assert!(i < i64::MAX / 1024, "{path}: {at} = {i}");
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(path, &format!("{at}[{i}]"), x)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| walk(path, &format!("{at}.{k}"), x)),
            _ => {}
        }
    }
    walk(path, "", v);
}

async fn get(http: &reqwest::Client, base: &str, key: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_sane(path, &v);
    v
}

/// The reports an account's overflowing records used to break.
async fn check_reports(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    users: &[(&str, &str, i64)],
) {
    let now = chrono::Utc::now().timestamp();
    let start = now - 3 * 3600;
    for (account, key, clamped) in users {
        get(http, base, key, "/v1/usage").await;
        get(http, base, key, "/v1/usage/models").await;
        let credits = get(http, base, key, "/v1/credits").await;
        assert!(credits["balance_micro"].as_i64().unwrap() >= 0, "{credits}");
        let audit = get(
            http,
            base,
            admin,
            &format!("/admin/accounts/{account}/credits"),
        )
        .await;
        assert_eq!(audit["consistent"], json!(true), "{audit}");
        assert_eq!(
            audit["charges_nanos"], audit["charges_nanos_records"],
            "{audit}"
        );
        // The audit shows the flagged records.
        assert_eq!(
            json!(flagged(&audit, "clamped").0),
            json!(clamped),
            "{audit}"
        );
    }
    get(
        http,
        base,
        admin,
        &format!("/v1/organization/costs?start_time={start}"),
    )
    .await;
    for width in ["1d", "1h", "1m"] {
        get(
            http,
            base,
            admin,
            &format!(
                "/v1/organization/usage/completions?start_time={start}&bucket_width={width}&group_by=model"
            ),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_two_to_the_64_is_clamped_flagged_and_every_total_stays_sane() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (gw, admin) = start(dir.path(), &mock).await;
    let admin = admin.unwrap();
    let http = reqwest::Client::new();
    let base = gw.base.clone();
    let (account, _, key) = create_account_and_key(&http, &base, &admin).await;
    grant(&http, &base, &admin, &account, "1000").await;
    // A bring-your-own-key account (fee 0: charged nothing, so its rollups only sum costs).
    let (byok_account, _, byok_key) = create_account_and_key(&http, &base, &admin).await;
    let r = http
        .put(format!(
            "{base}/admin/accounts/{byok_account}/provider-keys/mock"
        ))
        .bearer_auth(&admin)
        .json(&json!({"api_key": "sk-own-key-1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let max = json!(u64::MAX);
    let liar = json!({"report_input_tokens": max, "report_output_tokens": max});
    let chat = |stream: bool| {
        json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 10,
               "messages": [{"role": "user", "content": "hello there world"}], "mock": liar})
    };
    let messages = |stream: bool| {
        json!({"model": "claude-3-5-haiku-20241022", "stream": stream, "max_tokens": 10,
               "messages": [{"role": "user", "content": "hello there world"}], "mock": liar})
    };
    let embeddings = json!({"model": "text-embedding-3-small", "input": "hello there",
                            "mock": {"report_input_tokens": max}});
    let sends: Vec<(&str, &str, Value)> = vec![
        (key.as_str(), "/v1/chat/completions", chat(false)),
        (key.as_str(), "/v1/chat/completions", chat(true)),
        (key.as_str(), "/v1/messages", messages(false)),
        (key.as_str(), "/v1/messages", messages(true)),
        (key.as_str(), "/v1/embeddings", embeddings),
        (byok_key.as_str(), "/v1/chat/completions", chat(false)),
        (byok_key.as_str(), "/v1/chat/completions", chat(true)),
        (byok_key.as_str(), "/v1/chat/completions", chat(false)),
    ];
    let mut ids = Vec::new();
    for (k, path, body) in &sends {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(k)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let id = request_id(&r);
        r.bytes().await.unwrap();
        ids.push((id, *path));
    }
    for (id, path) in &ids {
        let rec = get(&http, &base, &admin, &format!("/admin/requests/{id}")).await;
        assert_eq!(rec["anomaly"], json!("clamped"), "{path}: {rec}");
        assert_eq!(rec["input_tokens"], json!(CEILING), "{path}: {rec}");
        let output = if *path == "/v1/embeddings" {
            0
        } else {
            CEILING
        };
        assert_eq!(rec["output_tokens"], json!(output), "{path}: {rec}");
        // Priced at the clamped counts: 10M tokens at a few USD per million.
        let cost = rec["cost_nanos"].as_i64().unwrap();
        assert!(cost > 0 && cost < 100 * 1_000_000_000, "{path}: {rec}");
    }
    let users = [
        (account.as_str(), key.as_str(), 5),
        (byok_account.as_str(), byok_key.as_str(), 3),
    ];
    check_reports(&http, &base, &admin, &users).await;

    // The same data dir, a new process: it still answers, requests included.
    gw.stop().await;
    let (gw, again) = start(dir.path(), &mock).await;
    assert!(again.is_none(), "not a first start");
    let base = gw.base.clone();
    check_reports(&http, &base, &admin, &users).await;
    for k in [&key, &byok_key] {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(k)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{base}/admin/accounts/{account}/credits"))
        .bearer_auth(&admin)
        .json(&json!({"amount_usd": "1.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    check_reports(&http, &base, &admin, &users).await;
    gw.stop().await;
}
