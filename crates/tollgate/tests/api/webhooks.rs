//! Webhook deliveries survive kill -9: an event whose first attempt failed is delivered by the
//! restarted process, with the same `webhook-id`. (Signatures, retries, 410 and the rest are
//! tested end to end in tests/python/test_webhooks.py against an independent verifier.)

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::post;
use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::helpers::*;

async fn deliveries(http: &reqwest::Client, base: &str, key: &str, hook: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{base}/v1/webhooks/{hook}/deliveries"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queued_before_kill_9_is_delivered_after_restart_with_its_id() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        config_toml(&dir.path().join("data"), &mock.base_url(), "127.0.0.1:0")
            + "\n[webhooks]\nallow_private_targets = true\n",
    )
    .unwrap();
    let (mut child, base, admin) = start_binary(&config).await;
    let admin = admin.unwrap();
    let http = reqwest::Client::new();
    let (_, _, key) = create_account_and_key(&http, &base, &admin).await;

    // The receiver's port, closed for now: the first attempt fails to connect.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook: Value = http
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["credits.low"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let queued: Value = http
        .post(format!("{base}/v1/webhooks/{hook_id}/test"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event_id = queued["event_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let d = deliveries(&http, &base, &key, &hook_id).await;
        if let Some(a) = d.first() {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["state"], "pending", "{failed}");
    assert!(failed["status_code"].is_null(), "{failed}");
    assert!(failed["next_retry_at"].is_string(), "{failed}");

    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    // The receiver comes up; the restarted gateway delivers the same event.
    let (tx, mut rx) = mpsc::unbounded_channel::<(HeaderMap, String)>();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_child, base, _) = start_binary(&config).await;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("delivered after the restart")
        .unwrap();
    assert_eq!(headers["webhook-id"], event_id.as_str());
    assert!(headers["webhook-signature"]
        .to_str()
        .unwrap()
        .starts_with("v1,"));
    let payload: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["type"], "webhook.test");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = deliveries(&http, &base, &key, &hook_id).await;
        if d.first().is_some_and(|a| a["state"] == "succeeded") {
            assert_eq!(d.len(), 2, "{d:?}");
            assert_eq!(d[0]["attempt"], 2);
            break;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Exactly once to this receiver (a second copy would arrive by now).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "delivered twice");
}
