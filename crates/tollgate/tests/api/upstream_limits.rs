//! An upstream cannot make the gateway hold unbounded memory or keep a stream open forever:
//! `server.max_upstream_body_bytes`, `server.max_sse_event_bytes` and `server.max_stream_secs`
//! end such exchanges with an error in the caller's format (a 502 body, or a last error event in
//! the stream's own wire format) and a record, and the gateway keeps serving.

use std::time::{Duration, Instant};

use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};
use tollgate::config::ServerConfig;
use tollgate::Application;

use crate::helpers::{create_account_and_key, grant, load_config, request_id, TestApp};

/// `spawn_app` with `[server]` settings changed by `set`.
pub(crate) async fn spawn_limited(set: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = load_config(dir.path(), &mock.base_url(), "");
    set(&mut config.server);
    config.validate().unwrap();
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let admin_key = app.bootstrap_admin_key.clone().unwrap().key;
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let (account_id, key_id, user_key) = create_account_and_key(&http, &base, &admin_key).await;
    grant(&http, &base, &admin_key, &account_id, "100.00").await;
    TestApp {
        base,
        admin_key,
        user_key,
        account_id,
        key_id,
        mock,
        http,
        _dir: dir,
    }
}

const CLAUDE: &str = "claude-sonnet-4-20250514";

fn chat(stream: bool, mock: Value) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "mock": mock,
           "messages": [{"role": "user", "content": "hello there world"}]})
}

fn messages(stream: bool, mock: Value) -> Value {
    json!({"model": CLAUDE, "max_tokens": 50, "stream": stream, "mock": mock,
           "messages": [{"role": "user", "content": "hello there world"}]})
}

impl TestApp {
    async fn post_x_api_key(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.user_key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Both APIs still answer normally (JSON and stream), and are recorded as successes.
    async fn still_serves(&self) {
        for stream in [false, true] {
            let r = self
                .post_bearer("/v1/chat/completions", &chat(stream, json!({})))
                .await;
            assert_eq!(r.status(), 200);
            let id = request_id(&r);
            r.bytes().await.unwrap();
            assert_eq!(self.wait_record(&id).await["status"], "success");
            let r = self
                .post_x_api_key("/v1/messages", &messages(stream, json!({})))
                .await;
            assert_eq!(r.status(), 200);
            let id = request_id(&r);
            r.bytes().await.unwrap();
            assert_eq!(self.wait_record(&id).await["status"], "success");
        }
    }
}

/// The record of a request the gateway cut short: an error with `code`, its input estimated.
async fn assert_cut_short(app: &TestApp, id: &str, http_status: u16, code: &str) {
    let rec = app.wait_record(id).await;
    assert_eq!(rec["status"], "error", "{rec}");
    assert_eq!(rec["http_status"], json!(http_status), "{rec}");
    assert_eq!(rec["error_code"], code, "{rec}");
    assert_eq!(rec["provenance"], "estimated", "{rec}");
    assert!(rec["input_tokens"].as_i64().unwrap() > 0, "{rec}");
}

/// SSE events of a whole stream body.
fn events(body: &str) -> Vec<&str> {
    body.split("\n\n").filter(|e| !e.is_empty()).collect()
}

/// The `data:` JSON of one event.
fn data(event: &str) -> Value {
    let line = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {event:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// An OpenAI stream's clean end with an error: `data: {"error":...}` then `data: [DONE]`.
fn assert_openai_error_end(body: &str, code: &str) {
    let ev = events(body);
    assert!(ev.len() >= 2, "{body:?}");
    assert_eq!(ev[ev.len() - 1], "data: [DONE]", "{body:?}");
    let err = data(ev[ev.len() - 2]);
    assert_eq!(err["error"]["code"], code, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_"));
}

/// An Anthropic stream's clean end with an error: `event: error`.
fn assert_anthropic_error_end(body: &str, code: &str) {
    let ev = events(body);
    let last = ev.last().unwrap_or_else(|| panic!("empty stream"));
    assert!(last.starts_with("event: error\n"), "{body:?}");
    let err = data(last);
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["error"]["type"], "api_error", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("{code}: ")), "{message}");
}

#[tokio::test]
async fn a_json_reply_past_the_body_limit_is_a_502_and_recorded() {
    let app = spawn_limited(|s| s.max_upstream_body_bytes = 1024 * 1024).await;
    let pad = json!({"pad_bytes": 3 * 1024 * 1024});

    let r = app
        .post_bearer("/v1/chat/completions", &chat(false, pad.clone()))
        .await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().contains_key("x-credits-remaining"));
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_error", "{v}");
    assert_eq!(v["error"]["type"], "provider_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_upstream_body_bytes"));
    assert_cut_short(&app, &id, 502, "upstream_body_too_large").await;

    let r = app
        .post_x_api_key("/v1/messages", &messages(false, pad))
        .await;
    assert_eq!(r.status(), 502);
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    assert_cut_short(&app, &id, 502, "upstream_body_too_large").await;

    // A reply just under the limit still passes whole.
    let r = app
        .post_bearer(
            "/v1/chat/completions",
            &chat(false, json!({"pad_bytes": 1000 * 1000})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["padding"].as_str().unwrap().len(), 1000 * 1000);
    app.still_serves().await;
}

#[tokio::test]
async fn a_json_reply_without_a_length_is_cut_at_the_body_limit() {
    // A trickled body is chunked (no Content-Length): the limit is found while reading.
    let app = spawn_limited(|s| {
        s.max_upstream_body_bytes = 1024;
        s.upstream_timeout_secs = 60;
    })
    .await;
    let mock = json!({"pad_bytes": 64 * 1024, "trickle_ms": 1});
    let started = Instant::now();
    let r = app
        .post_bearer("/v1/chat/completions", &chat(false, mock.clone()))
        .await;
    assert_eq!(r.status(), 502);
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_error", "{v}");
    assert_cut_short(&app, &id, 502, "upstream_body_too_large").await;

    let r = app
        .post_x_api_key("/v1/messages", &messages(false, mock))
        .await;
    assert_eq!(r.status(), 502);
    let id = request_id(&r);
    assert_cut_short(&app, &id, 502, "upstream_body_too_large").await;
    // Cut after about 1 KiB, far before the 65 KiB body (~65 s at 1 ms a byte) is through.
    assert!(started.elapsed() < Duration::from_secs(20));
    app.still_serves().await;
}

#[tokio::test]
async fn an_sse_event_past_the_limit_ends_the_stream_with_an_error_event() {
    let app = spawn_limited(|s| s.max_sse_event_bytes = 64 * 1024).await;
    let junk = json!({"sse_no_boundary_bytes": 1024 * 1024});

    let r = app
        .post_bearer("/v1/chat/completions", &chat(true, junk.clone()))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body = r.text().await.unwrap();
    // Nothing of the unfinished event reaches the client: only the error event.
    assert!(!body.contains("xxxx"), "{} bytes forwarded", body.len());
    assert_openai_error_end(&body, "upstream_event_too_large");
    assert_cut_short(&app, &id, 200, "upstream_event_too_large").await;

    let r = app
        .post_x_api_key("/v1/messages", &messages(true, junk))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body = r.text().await.unwrap();
    assert!(!body.contains("xxxx"), "{} bytes forwarded", body.len());
    assert_anthropic_error_end(&body, "upstream_event_too_large");
    assert_cut_short(&app, &id, 200, "upstream_event_too_large").await;
    app.still_serves().await;
}

#[tokio::test]
async fn a_stream_past_its_maximum_duration_ends_with_an_error_event() {
    let app = spawn_limited(|s| s.max_stream_secs = 2).await;
    // 50 ms a byte: a stream of a few KiB would take minutes, and the idle timeout never fires.
    let slow = json!({"trickle_ms": 50, "output_tokens": 200});

    for anthropic in [false, true] {
        let started = Instant::now();
        let r = if anthropic {
            app.post_x_api_key("/v1/messages", &messages(true, slow.clone()))
                .await
        } else {
            app.post_bearer("/v1/chat/completions", &chat(true, slow.clone()))
                .await
        };
        assert_eq!(r.status(), 200);
        let id = request_id(&r);
        let body = tokio::time::timeout(Duration::from_secs(20), r.text())
            .await
            .expect("the stream outlived its maximum duration")
            .unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(2), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        if anthropic {
            assert_anthropic_error_end(&body, "stream_deadline");
        } else {
            assert_openai_error_end(&body, "stream_deadline");
            let err = data(events(&body)[events(&body).len() - 2]);
            assert_eq!(err["error"]["type"], "timeout_error", "{err}");
        }
        assert_cut_short(&app, &id, 200, "stream_deadline").await;
        let entry = app.ledger_entry(&id);
        assert!(!entry.completed, "the upstream was not read to its end");
    }
    app.still_serves().await;
}

#[tokio::test]
async fn a_trickling_json_reply_is_bounded_by_the_upstream_timeout() {
    // The test config's upstream_timeout_secs is 2; the body would take minutes.
    let app = spawn_limited(|_| {}).await;
    let slow = json!({"trickle_ms": 50, "output_tokens": 200});
    let started = Instant::now();
    let r = app
        .post_bearer("/v1/chat/completions", &chat(false, slow.clone()))
        .await;
    assert_eq!(r.status(), 504);
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout", "{v}");
    let r = app
        .post_x_api_key("/v1/messages", &messages(false, slow))
        .await;
    assert_eq!(r.status(), 504);
    let id2 = request_id(&r);
    assert!(started.elapsed() < Duration::from_secs(10));
    for id in [id, id2] {
        let rec = app.wait_record(&id).await;
        assert_eq!(rec["status"], "error", "{rec}");
        assert_eq!(rec["http_status"], json!(504), "{rec}");
        assert_eq!(rec["error_code"], "upstream_timeout", "{rec}");
    }
    app.still_serves().await;
}
