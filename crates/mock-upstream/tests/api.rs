#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};

async fn server() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `data:` payloads of an OpenAI SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

/// (event, data) pairs of an Anthropic SSE body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (ev, data) = e.split_once('\n').unwrap();
            let ev = ev.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], ev.as_str());
            (ev, data)
        })
        .collect()
}

const SYSTEM_PROMPT: &str = "You are terse."; // 3 words

fn chat_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "text", "text": "say hello to me"}]}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}
// input = (3 + 1) + (4 + 1) = 9

#[tokio::test]
async fn chat_non_stream_usage_and_ledger() {
    let srv = server().await;
    srv.set_config(MockConfig {
        cached_tokens: 2,
        reasoning_tokens: 5,
        ..MockConfig::default()
    });
    let resp = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .header("authorization", "Bearer sk-upstream")
        .header("x-tollgate-request-id", "req-1")
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mock_id = resp.headers()["x-mock-id"].to_str().unwrap().to_owned();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], mock_id.as_str());
    assert!(mock_id.starts_with("chatcmpl-"));
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 16);
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], 9);
    assert_eq!(u["completion_tokens"], 21);
    assert_eq!(u["total_tokens"], 30);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 2);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 5);

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 1);
    let e = &ledger[0];
    assert_eq!(e.id, mock_id);
    assert_eq!(e.request_id.as_deref(), Some("req-1"));
    assert_eq!(e.auth.as_deref(), Some("Bearer sk-upstream"));
    assert_eq!(e.api, "chat.completions");
    assert!(!e.streamed);
    assert_eq!(
        (
            e.input_tokens,
            e.output_tokens,
            e.cached_tokens,
            e.reasoning_tokens
        ),
        (9, 21, 2, 5)
    );
    assert!(e.usage_reported && e.completed);
    assert_eq!(e.status, 200);

    srv.reset();
    assert!(srv.ledger().is_empty());
}

#[tokio::test]
async fn chat_max_tokens_caps_output() {
    let srv = server().await;
    let v: Value = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"max_completion_tokens": 3})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "lorem ipsum dolor");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn chat_stream_with_and_without_usage() {
    let srv = server().await;
    // With include_usage.
    let resp = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({
            "stream": true,
            "stream_options": {"include_usage": true},
            "mock": {"output_tokens": 4}
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = sse_data(&resp.text().await.unwrap());
    // role + 4 words + finish + usage + [DONE]
    assert_eq!(data.len(), 8);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..7]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "lorem ipsum dolor sit");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[5]["usage"].is_null());
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], 9);
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);

    // Without include_usage.
    let body = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"stream": true})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&body);
    assert_eq!(data.len(), 16 + 3);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(!body.contains("\"usage\""));

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 2);
    assert!(ledger[0].streamed && ledger[0].completed && ledger[0].usage_reported);
    assert_eq!((ledger[0].input_tokens, ledger[0].output_tokens), (9, 4));
    assert!(ledger[1].streamed && ledger[1].completed && !ledger[1].usage_reported);
    assert_eq!((ledger[1].input_tokens, ledger[1].output_tokens), (9, 16));
}

#[tokio::test]
async fn chat_stream_cut_at_chunk() {
    let srv = server().await;
    srv.set_config(MockConfig {
        cut_at_chunk: Some(3),
        chunk_delay_ms: 1,
        ..MockConfig::default()
    });
    let resp = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body should end with an error");
    let data = sse_data(std::str::from_utf8(&got).unwrap());
    assert_eq!(data.len(), 3);
    let e = &srv.ledger()[0];
    assert!(!e.completed && !e.usage_reported);
    assert_eq!(e.output_tokens, 16);

    // Same cut without delay (all events in one frame): still delivered.
    let resp = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(
            json!({"stream": true, "mock": {"chunk_delay_ms": 0}}),
        ))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => failed = true,
        }
    }
    assert!(failed);
    assert_eq!(sse_data(std::str::from_utf8(&got).unwrap()).len(), 3);
}

#[tokio::test]
async fn anthropic_non_stream_and_stream() {
    let srv = server().await;
    let body = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": "hello there"}],
        "mock": {"cached_tokens": 2, "output_tokens": 5}
    });
    // input = 2 (system) + 2 + 1 = 5
    let v: Value = client()
        .post(format!("{}/v1/messages", srv.base_url()))
        .header("x-api-key", "sk-ant-upstream")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "message");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["content"][0]["text"], "lorem ipsum dolor sit amet");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 3, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2})
    );

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let text = client()
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&sbody)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let start_usage = &events[0].1["message"]["usage"];
    assert_eq!(start_usage["input_tokens"], 3);
    assert_eq!(start_usage["cache_read_input_tokens"], 2);
    assert_eq!(start_usage["output_tokens"], 1);
    let delta = &events[9].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    let streamed_text: String = events[3..8]
        .iter()
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed_text, "lorem ipsum dolor sit amet");

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 2);
    for e in &ledger {
        assert_eq!(e.api, "messages");
        assert_eq!(
            (e.input_tokens, e.output_tokens, e.cached_tokens),
            (5, 5, 2)
        );
        assert!(e.completed && e.usage_reported);
    }
    assert_eq!(ledger[0].auth.as_deref(), Some("sk-ant-upstream"));
    assert!(ledger[1].streamed);
}

#[tokio::test]
async fn anthropic_stream_omit_usage_and_cut() {
    let srv = server().await;
    let body = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 2,
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"omit_usage": true}
    });
    let text = client()
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 3 + 2 + 3);
    assert!(events[0].1["message"].get("usage").is_none());
    assert!(events[6].1.get("usage").is_none());
    assert_eq!(events[6].1["delta"]["stop_reason"], "max_tokens");

    let mut cut = body.clone();
    cut["mock"] = json!({"cut_at_chunk": 6});
    let resp = client()
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&cut)
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.is_err());

    let ledger = srv.ledger();
    assert!(ledger[0].completed && !ledger[0].usage_reported);
    assert_eq!(ledger[0].output_tokens, 2);
    assert!(!ledger[1].completed && !ledger[1].usage_reported);
}

#[tokio::test]
async fn error_status_and_control_endpoints() {
    let srv = server().await;
    let c = client();
    let cfg: Value = c
        .post(format!("{}/_mock/config", srv.base_url()))
        .json(&json!({"error_status": 429}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["error_status"], 429);
    assert_eq!(cfg["output_tokens"], 16);

    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "mock_error");

    let resp = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&json!({"model": "claude-sonnet-4-20250514", "messages": [], "mock": {"error_status": 529}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 529);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");

    // Unknown knob -> 400.
    let resp = c
        .post(format!("{}/_mock/config", srv.base_url()))
        .json(&json!({"nope": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Clear the error (null resets an optional knob).
    c.post(format!("{}/_mock/config", srv.base_url()))
        .json(&json!({"error_status": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(srv.config().error_status, None);

    let v: Value = c
        .post(format!("{}/v1/embeddings", srv.base_url()))
        .json(&json!({"model": "text-embedding-3-small", "input": ["a b c", "d"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    let models: Value = c
        .get(format!("{}/v1/models", srv.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o"));

    let ledger: Vec<mock_upstream::LedgerEntry> = c
        .get(format!("{}/_mock/ledger", srv.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger.len(), 3);
    assert_eq!(ledger[0].status, 429);
    assert_eq!(ledger[1].status, 529);
    assert!(!ledger[0].usage_reported && ledger[0].input_tokens == 0);
    assert_eq!(ledger[2].api, "embeddings");
    assert_eq!(ledger[2].input_tokens, 4);

    let resp = c
        .post(format!("{}/_mock/reset", srv.base_url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert!(srv.ledger().is_empty());
}

#[tokio::test]
async fn hang_never_answers() {
    let srv = server().await;
    let res = client()
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .timeout(std::time::Duration::from_millis(200))
        .json(&chat_body(json!({"mock": {"hang": true}})))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    let e = &srv.ledger()[0];
    assert_eq!(e.status, 0);
    assert!(!e.completed);
}

#[tokio::test]
async fn binary_prints_listening_line() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--port", "0", "--chunks", "2"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("mock-upstream listening on ")
        .unwrap()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"));
    let v: Value = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 2);
    child.kill().await.unwrap();
}

// ---- Adversarial knobs ----

fn anthropic_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello there"}]
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}
// input = 2 + 1 = 3

/// Reads a body to its end (or first error): (bytes, frames, ended with an error).
async fn read_frames(resp: reqwest::Response) -> (Vec<u8>, Vec<usize>, bool) {
    let mut stream = resp.bytes_stream();
    let (mut got, mut frames) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                frames.push(b.len());
                got.extend_from_slice(&b);
            }
            Err(_) => return (got, frames, true),
        }
    }
    (got, frames, false)
}

#[tokio::test]
async fn report_tokens_verbatim() {
    let srv = server().await;
    let c = client();
    let max = u64::MAX;
    let knobs = json!({"report_input_tokens": max, "report_output_tokens": 7, "cached_tokens": 2});

    // Chat, JSON.
    let v: Value = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"mock": knobs})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"].as_u64(), Some(max));
    assert_eq!(u["completion_tokens"], 7);
    assert_eq!(u["total_tokens"].as_u64(), Some(max), "saturating sum");
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 2);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 16);

    // Chat, SSE with include_usage.
    let text = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({
            "stream": true,
            "stream_options": {"include_usage": true},
            "mock": knobs
        })))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"].as_u64(), Some(max));
    assert_eq!(usage["usage"]["completion_tokens"], 7);

    // Chat, SSE without include_usage: nothing reported.
    c.post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"stream": true, "mock": knobs})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Anthropic, JSON: input_tokens verbatim (no cache subtraction).
    let v: Value = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(json!({"mock": knobs})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["input_tokens"].as_u64(), Some(max));
    assert_eq!(v["usage"]["output_tokens"], 7);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 2);

    // Anthropic, SSE.
    let text = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(json!({"stream": true, "mock": knobs})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(
        events[0].1["message"]["usage"]["input_tokens"].as_u64(),
        Some(max)
    );
    let (name, delta) = &events[events.len() - 2];
    assert_eq!(name, "message_delta");
    assert_eq!(delta["usage"]["output_tokens"], 7);

    // Embeddings: input only.
    let v: Value = c
        .post(format!("{}/v1/embeddings", srv.base_url()))
        .json(&json!({"model": "text-embedding-3-small", "input": "a b c", "mock": knobs}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(max));
    assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(max));

    // Without the knobs, the reported numbers are the real ones.
    c.post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(json!({"mock": {"cached_tokens": 2}})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 7);
    let real = |e: &mock_upstream::LedgerEntry| (e.input_tokens, e.output_tokens);
    let reported =
        |e: &mock_upstream::LedgerEntry| (e.reported_input_tokens, e.reported_output_tokens);
    for e in &ledger[..3] {
        assert_eq!(real(e), (9, 16), "the ledger keeps what was generated");
        assert!(e.completed);
    }
    assert_eq!(reported(&ledger[0]), (Some(max), Some(7)));
    assert_eq!(reported(&ledger[1]), (Some(max), Some(7)));
    assert!(ledger[1].usage_reported);
    assert_eq!(reported(&ledger[2]), (None, None));
    assert!(!ledger[2].usage_reported);
    for e in &ledger[3..5] {
        assert_eq!(real(e), (3, 16));
        assert_eq!(e.cached_tokens, 2);
        assert_eq!(reported(e), (Some(max), Some(7)));
        assert!(e.usage_reported && e.completed);
    }
    assert_eq!(real(&ledger[5]), (3, 0));
    assert_eq!(reported(&ledger[5]), (Some(max), None));
    // Anthropic's wire input_tokens excludes the 2 cached tokens.
    assert_eq!(reported(&ledger[6]), (Some(1), Some(16)));

    // The knobs go through the control endpoint too, and null clears them.
    let cfg: Value = c
        .post(format!("{}/_mock/config", srv.base_url()))
        .json(&json!({"report_output_tokens": max}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["report_output_tokens"].as_u64(), Some(max));
    assert_eq!(srv.config().report_output_tokens, Some(max));
    c.post(format!("{}/_mock/config", srv.base_url()))
        .json(&json!({"report_output_tokens": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(srv.config(), MockConfig::default());
}

#[tokio::test]
async fn ignore_max_tokens_generates_everything() {
    let srv = server().await;
    let c = client();
    let mock = json!({"ignore_max_tokens": true, "output_tokens": 5});

    let v: Value = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(
            json!({"max_completion_tokens": 3, "max_tokens": 2, "mock": mock}),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "lorem ipsum dolor sit amet"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 5);

    let text = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({
            "max_tokens": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
            "mock": mock
        })))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // role + 5 words + finish + usage + [DONE]
    let data = sse_data(&text);
    assert_eq!(data.len(), 9);
    let usage: Value = serde_json::from_str(&data[7]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);

    let v: Value = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(json!({"max_tokens": 2, "mock": mock})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["text"], "lorem ipsum dolor sit amet");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 5);

    let text = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(
            json!({"max_tokens": 2, "stream": true, "mock": mock}),
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let deltas = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .count();
    assert_eq!(deltas, 5);
    assert_eq!(events[events.len() - 2].1["usage"]["output_tokens"], 5);

    // Without the knob, the cap applies as before.
    let v: Value = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(
            json!({"max_tokens": 2, "mock": {"output_tokens": 5}}),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["output_tokens"], 2);

    let ledger = srv.ledger();
    let outputs: Vec<u64> = ledger.iter().map(|e| e.output_tokens).collect();
    assert_eq!(outputs, [5, 5, 5, 5, 2]);
    for e in &ledger[..4] {
        assert_eq!(e.reported_output_tokens, Some(5));
    }
}

#[tokio::test]
async fn pad_bytes_adds_a_padding_field() {
    let srv = server().await;
    let c = client();
    let pad = 3u64 << 20;
    let mock = json!({"pad_bytes": pad});
    let check = |v: &Value| {
        let p = v["padding"].as_str().unwrap();
        assert_eq!(p.len() as u64, pad);
        assert!(p.bytes().all(|b| b == b'x'));
    };

    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"mock": mock})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    check(&v);
    assert_eq!(v["usage"]["prompt_tokens"], 9);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let v: Value = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(json!({"mock": mock})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check(&v);
    assert_eq!(v["usage"]["input_tokens"], 3);

    let v: Value = c
        .post(format!("{}/v1/embeddings", srv.base_url()))
        .json(&json!({"model": "text-embedding-3-small", "input": "a b", "mock": mock}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check(&v);
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    // Streams are not padded.
    let text = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"stream": true, "mock": mock})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("padding"));
    assert_eq!(sse_data(&text).len(), 16 + 3);

    // Not padded without the knob.
    let v: Value = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("padding").is_none());

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 5);
    for e in &ledger {
        assert!(e.completed && e.status == 200);
        // Only the (unpadded) stream lacks usage: no include_usage.
        assert_eq!(e.usage_reported, !e.streamed);
    }
}

#[tokio::test]
async fn sse_no_boundary_bytes_sends_one_endless_event() {
    let srv = server().await;
    let c = client();
    let n = 200_000usize; // 3 full 64 KiB chunks + a partial one
    let expected = format!("data: {}", "x".repeat(n));

    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({
            "stream": true,
            "stream_options": {"include_usage": true},
            "mock": {"sse_no_boundary_bytes": n, "chunk_delay_ms": 5}
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (got, frames, failed) = read_frames(resp).await;
    assert!(!failed, "the body ends cleanly");
    assert!(got == expected.as_bytes(), "data: + {n} x, no boundary");
    assert!(frames.len() >= 5, "frames: {frames:?}");
    assert!(frames.iter().all(|&f| f <= 64 << 10), "frames: {frames:?}");

    let text = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .json(&anthropic_body(json!({
            "stream": true,
            "mock": {"sse_no_boundary_bytes": n}
        })))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, expected);

    // Non-streamed requests are unaffected.
    let v: Value = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"mock": {"sse_no_boundary_bytes": n}})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 16);

    // A client that gives up early leaves the entry incomplete.
    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(
            json!({"stream": true, "mock": {"sse_no_boundary_bytes": 256u64 << 20}}),
        ))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 4);
    for e in [&ledger[0], &ledger[1]] {
        assert!(e.streamed && e.completed && !e.usage_reported);
        assert_eq!(e.output_tokens, 0, "no word was generated");
        assert_eq!(
            (e.reported_input_tokens, e.reported_output_tokens),
            (None, None)
        );
        assert_eq!(e.status, 200);
    }
    assert_eq!(ledger[0].input_tokens, 9);
    assert_eq!(ledger[1].input_tokens, 3);
    assert!(ledger[2].completed && ledger[2].output_tokens == 16);
    assert!(ledger[3].streamed && !ledger[3].completed);
}

#[tokio::test]
async fn trickle_ms_sends_one_byte_at_a_time() {
    let srv = server().await;
    let c = client();

    // JSON: the normal body, byte by byte.
    let normal = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({"mock": {"output_tokens": 2}})))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(
            json!({"mock": {"output_tokens": 2, "trickle_ms": 1}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (got, frames, failed) = read_frames(resp).await;
    assert!(!failed);
    assert!(started.elapsed().as_millis() as usize >= got.len() - 1);
    assert!(frames.iter().all(|&f| f == 1), "frames: {frames:?}");
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&got).unwrap(),
        serde_json::from_slice(&normal).unwrap(),
    );
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["usage"], b["usage"]);
    assert_eq!(got.len(), normal.len());

    // SSE: every event arrives, byte by byte.
    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({
            "stream": true,
            "stream_options": {"include_usage": true},
            "mock": {"output_tokens": 1, "trickle_ms": 1}
        })))
        .send()
        .await
        .unwrap();
    let (got, frames, failed) = read_frames(resp).await;
    assert!(!failed);
    assert!(frames.iter().all(|&f| f == 1));
    let data = sse_data(std::str::from_utf8(&got).unwrap());
    assert_eq!(data.len(), 5);
    assert_eq!(data.last().unwrap(), "[DONE]");

    // With cut_at_chunk: the first event byte by byte, then the abort.
    let resp = c
        .post(format!("{}/v1/chat/completions", srv.base_url()))
        .json(&chat_body(json!({
            "stream": true,
            "mock": {"output_tokens": 1, "trickle_ms": 1, "cut_at_chunk": 1}
        })))
        .send()
        .await
        .unwrap();
    let (got, _, failed) = read_frames(resp).await;
    assert!(failed);
    let data = sse_data(std::str::from_utf8(&got).unwrap());
    assert_eq!(data.len(), 1);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");

    // A client deadline expires mid-body (stream and JSON): incomplete.
    let slow = json!({"trickle_ms": 20});
    let res = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .timeout(std::time::Duration::from_millis(300))
        .json(&anthropic_body(json!({"stream": true, "mock": slow})))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    assert!(res.unwrap_err().is_timeout());
    let res = c
        .post(format!("{}/v1/messages", srv.base_url()))
        .timeout(std::time::Duration::from_millis(300))
        .json(&anthropic_body(json!({"mock": slow})))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    assert!(res.unwrap_err().is_timeout());

    let ledger = srv.ledger();
    assert_eq!(ledger.len(), 6);
    for e in &ledger[..3] {
        assert!(e.completed && e.usage_reported);
    }
    assert!(!ledger[3].completed && !ledger[3].usage_reported);
    for e in &ledger[4..] {
        assert_eq!(e.status, 200);
        assert!(!e.completed && !e.usage_reported);
        assert_eq!(e.output_tokens, 16);
        assert_eq!(e.reported_output_tokens, Some(16));
    }
}
