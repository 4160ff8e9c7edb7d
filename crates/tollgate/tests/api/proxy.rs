//! The proxy plane through its public HTTP API: metering equals the upstream's truth, and
//! hostile input gets the right status and shape and leaves nothing behind.

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn chat_is_metered_exactly_and_forwarded_with_the_providers_key() {
    let app = spawn_app().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}],
                      "mock": {"output_tokens": 7, "cached_tokens": 2, "reasoning_tokens": 3}});
    let resp = app.post_bearer("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let out: Value = resp.json().await.unwrap();
    let rec = app.record(&id).await.unwrap();
    let e = app.ledger_entry(&id);
    assert_matches_ledger(&rec, &e);
    // The upstream's usage object reaches the client unchanged.
    assert_eq!(out["usage"]["prompt_tokens"], json!(4));
    assert_eq!(out["usage"]["completion_tokens"], json!(10));
    // 4 input of which 2 cached, 10 output: (2*2.5e9 + 2*1.25e9 + 10*1e10) / 1e6 nano-USD.
    assert_eq!(
        rec["cost_nanos"],
        json!((2 * 2_500_000_000i64 + 2 * 1_250_000_000 + 10 * 10_000_000_000) / 1_000_000)
    );
    assert_eq!(rec["status"], "success");
    assert_eq!(rec["provenance"], "provider");
    assert_eq!(rec["account_id"], json!(app.account_id));
    assert_eq!(rec["key_id"], json!(app.key_id));
    assert_eq!(e.auth.as_deref(), Some("Bearer sk-upstream-openai"));
}

#[tokio::test]
async fn stream_without_include_usage_hides_the_usage_chunk_but_meters_it() {
    let app = spawn_app().await;
    let resp = app
        .post_bearer("/v1/chat/completions", &app.chat_body("gpt-4o-mini", true))
        .await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("data: {")) {
        let v: Value = serde_json::from_str(&line[6..]).unwrap();
        assert!(
            v.get("usage").is_none_or(Value::is_null),
            "client got a usage chunk: {line}"
        );
    }
    let rec = app.record(&id).await.unwrap();
    let e = app.ledger_entry(&id);
    assert!(e.usage_reported);
    assert_matches_ledger(&rec, &e);
    assert_eq!(rec["streamed"], json!(true));
    assert_eq!(rec["provenance"], "provider");
}

#[tokio::test]
async fn anthropic_stream_with_cache_counts_input_once() {
    let app = spawn_app().await;
    let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "a b c d e f"}],
                      "mock": {"cached_tokens": 4, "output_tokens": 5}});
    let resp = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", &app.user_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    assert_eq!(resp.headers()["request-id"], id.as_str());
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_stop"));
    let rec = app.record(&id).await.unwrap();
    let e = app.ledger_entry(&id);
    assert_matches_ledger(&rec, &e);
    assert_eq!(rec["input_tokens"], json!(7));
    assert_eq!(e.auth.as_deref(), Some("sk-upstream-anthropic"));
    // 3 uncached at $3/M, 4 cached at $0.30/M, 5 output at $15/M.
    assert_eq!(
        rec["cost_nanos"],
        json!((3 * 3_000_000_000i64 + 4 * 300_000_000 + 5 * 15_000_000_000) / 1_000_000)
    );
}

#[tokio::test]
async fn missing_usage_is_estimated_locally() {
    let app = spawn_app().await;
    for stream in [false, true] {
        let mut body = app.chat_body("gpt-4o", stream);
        body["mock"] = json!({"omit_usage": true, "output_tokens": 6});
        let resp = app.post_bearer("/v1/chat/completions", &body).await;
        let id = request_id(&resp);
        let _ = resp.text().await.unwrap();
        let rec = app.record(&id).await.unwrap();
        assert_eq!(rec["provenance"], "estimated", "{rec}");
        assert_eq!(rec["status"], "success");
        // The mock's 6 words, counted by the bundled o200k BPE; the prompt is
        // 3 framing + 3 words + 3 priming.
        let expected =
            tollgate::metering::tokenizer::count_text("lorem ipsum dolor sit amet consectetur");
        assert!(expected >= 6);
        assert_eq!(rec["output_tokens"], json!(expected), "{rec}");
        assert_eq!(rec["input_tokens"], json!(9), "{rec}");
        assert!(rec["cost_nanos"].as_i64().unwrap() > 0);
    }
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_recorded_cancelled_with_real_usage() {
    let app = spawn_app().await;
    let mut body = app.chat_body("gpt-4o", true);
    body["mock"] = json!({"chunk_delay_ms": 20, "output_tokens": 30});
    let resp = app.post_bearer("/v1/chat/completions", &body).await;
    let id = request_id(&resp);
    let mut stream = resp.bytes_stream();
    let _ = stream.next().await.unwrap().unwrap();
    drop(stream);
    let rec = app.wait_record(&id).await;
    assert_eq!(rec["status"], "cancelled", "{rec}");
    assert_eq!(
        rec["provenance"], "provider",
        "the gateway kept reading to learn real usage"
    );
    let e = app.ledger_entry(&id);
    assert!(e.completed);
    assert_matches_ledger(&rec, &e);
}

#[tokio::test]
async fn upstream_cut_mid_stream_is_an_error_with_estimated_tokens() {
    let app = spawn_app().await;
    let mut body = app.chat_body("gpt-4o", true);
    body["mock"] = json!({"cut_at_chunk": 3, "output_tokens": 10});
    let resp = app.post_bearer("/v1/chat/completions", &body).await;
    let id = request_id(&resp);
    // The client's stream breaks instead of ending cleanly.
    let whole = resp.text().await;
    assert!(whole.is_err() || !whole.unwrap().contains("[DONE]"));
    let rec = app.wait_record(&id).await;
    assert_eq!(rec["status"], "error");
    assert_eq!(rec["provenance"], "estimated");
    assert_eq!(rec["input_tokens"], json!(9));
}

async fn raw(
    app: &TestApp,
    path: &str,
    auth: Option<(&str, String)>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut rb = app.http.post(format!("{}{path}", app.base)).body(body);
    if let Some((h, v)) = auth {
        rb = rb.header(h, v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    assert!(r.headers().contains_key("x-request-id"));
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Checks the error shape for the style and returns (type, code-or-null).
fn shape(style: &str, v: &Value) -> (String, Value) {
    if style == "x-api-key" {
        assert_eq!(v["type"], "error", "{v}");
        (
            v["error"]["type"].as_str().unwrap().to_string(),
            Value::Null,
        )
    } else {
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"].as_object().unwrap().contains_key("param"), "{v}");
        (
            v["error"]["type"].as_str().unwrap().to_string(),
            v["error"]["code"].clone(),
        )
    }
}

/// (name, auth header, body, status, OpenAI type, Anthropic type, code)
type Case<'a> = (
    &'a str,
    Option<(&'a str, String)>,
    Vec<u8>,
    u16,
    &'a str,
    &'a str,
    &'a str,
);

#[tokio::test]
async fn hostile_input_gets_its_status_in_the_callers_shape_and_charges_nothing() {
    let app = spawn_app().await;
    let revoked = {
        let (_, key_id, key) = create_account_and_key(&app.http, &app.base, &app.admin_key).await;
        let r = app
            .http
            .delete(format!("{}/admin/keys/{key_id}", app.base))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        key
    };
    let good = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    for style in ["bearer", "x-api-key"] {
        let auth = |k: &str| -> Option<(&'static str, String)> {
            Some(if style == "bearer" {
                ("authorization", format!("Bearer {k}"))
            } else {
                ("x-api-key", k.to_string())
            })
        };
        let path = if style == "bearer" {
            "/v1/chat/completions"
        } else {
            "/v1/messages"
        };
        let cases: Vec<Case> = vec![
            (
                "missing key",
                None,
                good.clone(),
                401,
                "authentication_error",
                "authentication_error",
                "missing_api_key",
            ),
            (
                "bad key",
                auth("tg-nope"),
                good.clone(),
                401,
                "authentication_error",
                "authentication_error",
                "invalid_api_key",
            ),
            (
                "revoked key",
                auth(&revoked),
                good.clone(),
                401,
                "authentication_error",
                "authentication_error",
                "api_key_inactive",
            ),
            (
                "bad json",
                auth(&app.user_key),
                b"{not json".to_vec(),
                400,
                "invalid_request_error",
                "invalid_request_error",
                "invalid_json",
            ),
            (
                "no model",
                auth(&app.user_key),
                br#"{"messages":[]}"#.to_vec(),
                400,
                "invalid_request_error",
                "invalid_request_error",
                "invalid_request",
            ),
            (
                "unknown model",
                auth(&app.user_key),
                br#"{"model":"nope-1","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#
                    .to_vec(),
                404,
                "invalid_request_error",
                "not_found_error",
                "model_not_found",
            ),
            (
                "too large",
                auth(&app.user_key),
                big.clone().into_bytes(),
                413,
                "invalid_request_error",
                "request_too_large",
                "request_too_large",
            ),
        ];
        for (name, a, body, status, oa_type, an_type, code) in cases {
            let (got, v) = raw(&app, path, a, body).await;
            assert_eq!(got, status, "{style} {name}: {v}");
            let (ty, c) = shape(style, &v);
            if style == "bearer" {
                assert_eq!(ty, oa_type, "{name}");
                assert_eq!(c, json!(code), "{name}");
            } else {
                assert_eq!(ty, an_type, "{name}");
            }
        }
    }
    // An authenticated caller's refused requests are counted (status `refused`, nothing
    // charged: 4 cases in each style); unauthenticated ones leave nothing.
    let records = app.records().await;
    assert_eq!(records.len(), 8, "{records:?}");
    for r in &records {
        assert_eq!(r["status"], "refused", "{r}");
        assert_eq!(r["charged_nanos"], 0, "{r}");
        assert_eq!(r["cost_nanos"], 0, "{r}");
        assert_eq!(r["input_tokens"], 0, "{r}");
        assert_eq!(r["account_id"], json!(app.account_id), "{r}");
        assert!(
            [400, 404, 413].contains(&r["http_status"].as_u64().unwrap()),
            "{r}"
        );
    }
    assert!(
        app.mock.ledger().is_empty(),
        "a rejected request reached the upstream"
    );
}

#[tokio::test]
async fn upstream_failures_are_recorded_and_reported_in_the_callers_shape() {
    let app = spawn_app().await;
    // Unreachable provider: 502.
    let resp = app
        .post_bearer(
            "/v1/chat/completions",
            &json!({"model": "dead-model", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(resp.status(), 502);
    // A failed exchange costs nothing and still reports the balance ($100 = 10^8 credits).
    assert_eq!(resp.headers()["x-credits-remaining"], "100000000");
    let id = request_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_error");
    assert_eq!(app.record(&id).await.unwrap()["status"], "error");
    // Timeout: 504.
    let mut body = app.chat_body("gpt-4o", false);
    body["mock"] = json!({"hang": true});
    let resp = app.post_bearer("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 504);
    let id = request_id(&resp);
    assert_eq!(app.record(&id).await.unwrap()["http_status"], json!(504));
    // The upstream's own 429, with its message, in the Anthropic shape for an x-api-key caller.
    let resp = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", &app.user_key)
        .json(&json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "x"}], "mock": {"error_status": 429}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let id = request_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["message"], "mock upstream error");
    let rec = app.record(&id).await.unwrap();
    assert_eq!(
        (
            rec["status"].clone(),
            rec["http_status"].clone(),
            rec["cost_nanos"].clone()
        ),
        (json!("error"), json!(429), json!(0))
    );
}

#[tokio::test]
async fn admin_api_needs_an_admin_key_and_keys_are_shown_once() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/admin/accounts", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    let keys: Value = app
        .http
        .get(format!(
            "{}/admin/accounts/{}/keys",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let k = &keys["data"][0];
    assert!(k.get("key").is_none() && k.get("key_hash").is_none(), "{k}");
    assert_eq!(k["last4"], json!(&app.user_key[app.user_key.len() - 4..]));
    assert!(app.user_key.starts_with("tg-"));
}

#[tokio::test]
async fn models_and_embeddings() {
    let app = spawn_app().await;
    let r: Value = app
        .http
        .get(format!("{}/v1/models", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4o") && ids.contains(&"claude-sonnet-4-20250514"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"gemini-2.5-pro"),
        "unrouted models are not listed"
    );
    let resp = app
        .post_bearer(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": ["a b c", "d e"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let rec = app.record(&id).await.unwrap();
    assert_matches_ledger(&rec, &app.ledger_entry(&id));
    assert_eq!(rec["endpoint"], "embeddings");
}
