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
