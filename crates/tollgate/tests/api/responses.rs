//! `/v1/responses` goes through the same phases as chat completions: upstream numbers are
//! clamped, a runaway stream is ended at its credit hold, stream caps apply, and a stream the
//! gateway ends closes with the Responses API's own error event. (The SDK-level checks against
//! the mock's ledger are in tests/python/test_responses_api.py.)

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::upstream_limits::spawn_limited;

fn responses(stream: bool, mock: Value) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "mock": mock,
           "input": [{"role": "user", "content": "hello there world"}]})
}

/// The clean end of a stream the gateway stopped: Responses' `event: error` with the code, the
/// next sequence number, and no `response.completed` (nor a chat-style `[DONE]`).
fn assert_responses_error_end(body: &str, code: &str) -> Value {
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last = events.last().unwrap_or_else(|| panic!("empty stream"));
    let data = last
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("{last:?}"));
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some(code)),
        "{v}"
    );
    assert_eq!(v["sequence_number"], json!(events.len() - 1), "{v}");
    assert!(!body.contains("response.completed") && !body.contains("[DONE]"));
    v
}

#[tokio::test]
async fn upstream_numbers_past_the_ceiling_are_clamped_and_flagged() {
    let app = spawn_app().await;
    let max = json!(u64::MAX);
    for stream in [false, true] {
        let mut body = responses(
            stream,
            json!({"report_input_tokens": max, "report_output_tokens": max}),
        );
        body["max_output_tokens"] = json!(10);
        let r = app.post_bearer("/v1/responses", &body).await;
        assert_eq!(r.status(), 200);
        let id = request_id(&r);
        r.bytes().await.unwrap();
        let rec = app.wait_record(&id).await;
        assert_eq!(rec["endpoint"], "responses", "{rec}");
        assert_eq!(rec["anomaly"], "clamped", "{rec}");
        assert_eq!(rec["provenance"], "provider", "{rec}");
        assert_eq!(
            (&rec["input_tokens"], &rec["output_tokens"]),
            (&json!(10_000_000), &json!(10_000_000)),
            "{rec}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_hold_ends_with_a_responses_error_event() {
    let app = spawn_app().await;
    let mut body = responses(
        true,
        json!({"output_tokens": 5000, "ignore_max_tokens": true}),
    );
    body["max_output_tokens"] = json!(10);
    let r = app.post_bearer("/v1/responses", &body).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    assert_responses_error_end(&text, "credit_hold_exceeded");
    let rec = app.wait_record(&id).await;
    assert_eq!(
        (rec["status"].as_str(), rec["error_code"].as_str()),
        (Some("error"), Some("credit_hold_exceeded")),
        "{rec}"
    );
    assert_eq!(rec["anomaly"], "over_reported", "{rec}");
    let out = rec["output_tokens"].as_i64().unwrap();
    assert!(out > 10 && out < 2000, "{rec}");
}

#[tokio::test]
async fn stream_caps_apply_to_responses_streams() {
    let app = spawn_limited(|s| {
        s.max_stream_secs = 2;
        s.max_sse_event_bytes = 64 * 1024;
    })
    .await;
    // 50 ms a byte: only the stream's deadline ends it.
    let started = Instant::now();
    let r = app
        .post_bearer(
            "/v1/responses",
            &responses(true, json!({"trickle_ms": 50, "output_tokens": 200})),
        )
        .await;
    let id = request_id(&r);
    let text = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .expect("the stream outlived its maximum duration")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    let err = assert_responses_error_end(&text, "stream_deadline");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("server.max_stream_secs"));
    let rec = app.wait_record(&id).await;
    assert_eq!(rec["error_code"], "stream_deadline", "{rec}");
    assert_eq!(rec["provenance"], "estimated", "{rec}");
    assert!(!app.ledger_entry(&id).completed);

    // An event with no end, past max_sse_event_bytes: nothing of it is forwarded.
    let r = app
        .post_bearer(
            "/v1/responses",
            &responses(true, json!({"sse_no_boundary_bytes": 1024 * 1024})),
        )
        .await;
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    assert!(!text.contains("xxxx"), "{} bytes forwarded", text.len());
    assert_responses_error_end(&text, "upstream_event_too_large");
    let rec = app.wait_record(&id).await;
    assert_eq!(rec["error_code"], "upstream_event_too_large", "{rec}");
}

#[tokio::test]
async fn refusals_and_upstream_failures_are_recorded_as_for_chat() {
    let app = spawn_app().await;
    // Over server.max_body_bytes (64 KiB in the test config): 413, refused, nothing forwarded.
    let big = json!({"model": "gpt-4o", "input": "x".repeat(70_000)});
    let r = app.post_bearer("/v1/responses", &big).await;
    assert_eq!(r.status(), 413);
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large", "{v}");
    let rec = app.wait_record(&id).await;
    assert_eq!(
        (rec["status"].as_str(), rec["endpoint"].as_str()),
        (Some("refused"), Some("responses")),
        "{rec}"
    );
    // An upstream that never answers: 504 within upstream_timeout_secs (2 here).
    let r = app
        .post_bearer("/v1/responses", &responses(false, json!({"hang": true})))
        .await;
    assert_eq!(r.status(), 504);
    let id = request_id(&r);
    let rec = app.wait_record(&id).await;
    assert_eq!(rec["error_code"], "upstream_timeout", "{rec}");
    assert_eq!(rec["endpoint"], "responses", "{rec}");
    // An upstream error keeps its status and message, in the OpenAI shape.
    let r = app
        .post_bearer(
            "/v1/responses",
            &responses(true, json!({"error_status": 429})),
        )
        .await;
    assert_eq!(r.status(), 429);
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "mock upstream error", "{v}");
    assert_eq!(v["error"]["code"], "upstream_error", "{v}");
    let rec = app.wait_record(&id).await;
    assert_eq!(rec["status"], "error", "{rec}");
    assert_eq!(rec["http_status"], json!(429), "{rec}");
    // count_tokens leaves no record, even refused: the count is unchanged.
    let before = app.records().await.len();
    let r = app
        .http
        .post(format!("{}/v1/messages/count_tokens", app.base))
        .header("x-api-key", &app.user_key)
        .json(&json!({"model": "claude-sonnet-4-20250514",
                      "messages": [{"role": "user", "content": "a b c"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"input_tokens": 4}));
    let r = app
        .http
        .post(format!("{}/v1/messages/count_tokens", app.base))
        .header("x-api-key", &app.user_key)
        .json(&json!({"model": "claude-sonnet-4-20250514"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.records().await.len(), before);
}
