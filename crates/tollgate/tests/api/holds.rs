//! A credit hold bounds what a request can cost: output is capped to what the hold covers
//! (`x-tollgate-max-tokens`), a stream that passes its hold is ended with an error event in its
//! own wire format, and an upstream that bills past the cap is recorded as billed and flagged.
//! With an honest upstream the balance never goes below zero.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn audit_of(&self, account: &str) -> Value {
        self.http
            .get(format!("{}/admin/accounts/{account}/credits", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn messages_x_api_key(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/messages", self.base))
            .header("x-api-key", &self.user_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// What one proxied response said.
struct Answer {
    status: u16,
    id: String,
    remaining: Option<i64>,
    capped: Option<u64>,
    text: String,
}

async fn answer(r: reqwest::Response) -> Answer {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().parse::<i64>().unwrap())
    };
    let (remaining, capped) = (
        header("x-credits-remaining"),
        header("x-tollgate-max-tokens").map(|n| n as u64),
    );
    Answer {
        status: r.status().as_u16(),
        id: request_id(&r),
        remaining,
        capped,
        text: r.text().await.unwrap(),
    }
}

fn chat(max_tokens: Option<u64>, stream: bool, mock: Value) -> Value {
    let mut b = json!({"model": "gpt-4o", "stream": stream, "mock": mock,
                       "messages": [{"role": "user", "content": "hello there world"}]});
    if let Some(m) = max_tokens {
        b["max_tokens"] = json!(m);
    }
    b
}

/// The scenario: $0.030, 200 concurrent requests (half with max_tokens 10, half with
/// none; a quarter streamed), an upstream that would write 1,000 tokens but honours the cap it is
/// sent. Nothing overspends: every cap holds and the balance ends at or above zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_honest_upstream_two_hundred_concurrent_requests_never_overspend() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("0.030"),
        ..Spawn::default()
    })
    .await;
    let reqs = (0..200).map(|i| {
        let body = chat(
            (i % 2 == 0).then_some(10),
            i % 4 == 1,
            json!({"output_tokens": 1000}),
        );
        let app = &app;
        async move {
            (
                i,
                answer(app.post_bearer("/v1/chat/completions", &body).await).await,
            )
        }
    });
    let results = join_all(reqs).await;
    let ok: Vec<_> = results.iter().filter(|(_, a)| a.status == 200).collect();
    let refused = results.iter().filter(|(_, a)| a.status == 402).count();
    assert_eq!(ok.len() + refused, 200, "only 200s and 402s expected");
    assert!(
        !ok.is_empty() && refused > 0,
        "ok={} refused={refused}",
        ok.len()
    );
    for (_, a) in &results {
        if let Some(r) = a.remaining {
            assert!(r >= 0, "x-credits-remaining went negative: {r}");
        }
    }
    let mut capped = 0;
    for (i, a) in &ok {
        let served = app.ledger_entry(&a.id).output_tokens;
        let asked = if i % 2 == 0 { 10 } else { 1000 };
        // The upstream saw the cap: it wrote no more than it, and no more than was asked.
        assert!(served <= asked, "{served} > {asked}");
        if let Some(cap) = a.capped {
            capped += 1;
            assert!(cap >= 1 && served <= cap, "served {served}, cap {cap}");
        }
        let rec = app.record(&a.id).await.unwrap();
        assert_eq!(rec["anomaly"], Value::Null, "{rec}");
        assert_eq!(rec["output_tokens"], json!(served), "{rec}");
    }
    assert!(capped > 0, "some requests were capped to the balance");
    let audit = app.audit_of(&app.account_id).await;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    assert!(audit["balance_nanos"].as_i64().unwrap() >= 0, "{audit}");
    assert_eq!(audit["held_nanos"], json!(0), "{audit}");
    assert_eq!(flagged(&audit, "over_reported").0, 0, "{audit}");
    // Sequentially, the rest is spent down; it never goes below zero.
    loop {
        let a = answer(
            app.post_bearer(
                "/v1/chat/completions",
                &chat(None, false, json!({"output_tokens": 1000})),
            )
            .await,
        )
        .await;
        if a.status == 402 {
            break;
        }
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(a.remaining.unwrap() >= 0);
    }
    let audit = app.audit_of(&app.account_id).await;
    assert!(audit["balance_nanos"].as_i64().unwrap() >= 0, "{audit}");
}

/// The same flood against an upstream that ignores max_tokens: the provider's bill is the
/// truth, so the records carry its numbers, and each one is flagged `over_reported` (in the
/// record and in the credit audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_billing_past_the_cap_is_recorded_as_billed_and_flagged() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("0.030"),
        ..Spawn::default()
    })
    .await;
    let mock = json!({"output_tokens": 1000, "ignore_max_tokens": true});
    let reqs = (0..200).map(|_| {
        let body = chat(Some(10), false, mock.clone());
        let app = &app;
        async move { answer(app.post_bearer("/v1/chat/completions", &body).await).await }
    });
    let results = join_all(reqs).await;
    let ok: Vec<_> = results.iter().filter(|a| a.status == 200).collect();
    assert!(!ok.is_empty());
    let mut charged = 0;
    for a in &ok {
        let rec = app.record(&a.id).await.unwrap();
        assert_eq!(rec["anomaly"], json!("over_reported"), "{rec}");
        assert_eq!(rec["output_tokens"], json!(1000), "{rec}");
        assert_eq!(rec["provenance"], json!("provider"), "{rec}");
        charged += rec["charged_nanos"].as_i64().unwrap();
    }
    let audit = app.audit_of(&app.account_id).await;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    assert_eq!(
        flagged(&audit, "over_reported"),
        (ok.len() as i64, charged),
        "{audit}"
    );
    assert_eq!(audit["charges_nanos"], json!(charged));
}

/// No max_tokens (or more than the balance covers) on a small balance: the request goes upstream
/// capped to what the hold covers, in the client's own field or `max_completion_tokens` /
/// `max_tokens`, and the response says so. A balance that cannot pay even the input is 402.
#[tokio::test]
async fn a_request_the_balance_cannot_cover_in_full_is_capped_and_told() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("0.001"),
        ..Spawn::default()
    })
    .await;
    let many = json!({"output_tokens": 100_000});
    // gpt-4o: 4 input tokens (held as 34 at $2.50/M) and $10/M output: $0.001 covers about 90
    // tokens, and each request spends nearly all of it: the next one gets a new $0.001.
    for (body, stream) in [
        (chat(None, false, many.clone()), false),
        (chat(None, true, many.clone()), true),
        (chat(Some(50_000), false, many.clone()), false),
    ] {
        let a = answer(app.post_bearer("/v1/chat/completions", &body).await).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let cap = a.capped.expect("x-tollgate-max-tokens");
        assert!((80..=100).contains(&cap), "{cap}");
        // The mock wrote exactly the cap it was sent.
        assert_eq!(
            app.ledger_entry(&a.id).output_tokens,
            cap,
            "stream={stream}"
        );
        let rec = app.wait_record(&a.id).await;
        assert_eq!(rec["output_tokens"], json!(cap));
        assert_eq!(rec["anomaly"], Value::Null, "{rec}");
        assert!(a.remaining.unwrap() >= 0);
        grant(
            &app.http,
            &app.base,
            &app.admin_key,
            &app.account_id,
            "0.001",
        )
        .await;
    }
    // A cap the balance covers is left alone, and not announced.
    let a = answer(
        app.post_bearer("/v1/chat/completions", &chat(Some(3), false, many.clone()))
            .await,
    )
    .await;
    assert_eq!((a.status, a.capped), (200, None));
    assert_eq!(app.ledger_entry(&a.id).output_tokens, 3);
    // Anthropic: max_tokens is lowered in place.
    let a = answer(
        app.messages_x_api_key(
            &json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 8192,
            "messages": [{"role": "user", "content": "hello there world"}], "mock": many}),
        )
        .await,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let cap = a.capped.expect("x-tollgate-max-tokens");
    assert!(cap < 8192);
    assert_eq!(app.ledger_entry(&a.id).output_tokens, cap);
    assert!(a.remaining.unwrap() >= 0);
    let audit = app.audit_of(&app.account_id).await;
    assert!(audit["balance_nanos"].as_i64().unwrap() >= 0, "{audit}");

    // An input the balance cannot pay: 402, nothing forwarded.
    let before = app.mock.ledger().len();
    let long = "word ".repeat(5000);
    let r = app
        .post_bearer(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(r.status(), 402);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_balance", "{v}");
    assert_eq!(app.mock.ledger().len(), before);
}

/// Parts whose size the body does not show are held by a fixed allowance each
/// (`credits.hold_tokens_per_opaque_part`): an image by URL makes the same request need more.
#[tokio::test]
async fn input_the_body_cannot_show_is_held_by_the_allowance() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("0.001"),
        extra_toml: "\n[credits]\nhold_tokens_per_opaque_part = 200000\n".into(),
        ..Spawn::default()
    })
    .await;
    let with_image = |url: &str| {
        json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    // 200,000 tokens at $2.50/M = $0.50 held for the image: more than the balance.
    let r = app
        .post_bearer(
            "/v1/chat/completions",
            &with_image("https://example.com/a.png"),
        )
        .await;
    assert_eq!(r.status(), 402, "{}", r.text().await.unwrap());
    let r = app
        .post_bearer(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "max_tokens": 5,
                    "messages": [{"role": "user", "content": "what is this"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// An upstream that ignores the cap mid-stream: once the locally counted output passes what the
/// hold covers, the gateway ends the stream cleanly with an error event in the stream's wire
/// format, and records it (`error`, `credit_hold_exceeded`, flagged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_hold_is_ended_with_an_error_event_in_its_own_format() {
    let app = spawn_app().await;
    let runaway = json!({"output_tokens": 5000, "ignore_max_tokens": true});

    let a = answer(
        app.post_bearer(
            "/v1/chat/completions",
            &chat(Some(10), true, runaway.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(a.status, 200);
    let events: Vec<&str> = a.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{}", a.text);
    let err: Value =
        serde_json::from_str(events[events.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "credit_hold_exceeded", "{err}");
    assert_eq!(err["error"]["type"], "billing_error", "{err}");
    assert!(
        !a.text.contains("\"finish_reason\":\"stop\""),
        "cut before the end"
    );
    let rec = app.wait_record(&a.id).await;
    assert_eq!(
        (rec["status"].as_str(), rec["error_code"].as_str()),
        (Some("error"), Some("credit_hold_exceeded")),
        "{rec}"
    );
    assert_eq!(rec["anomaly"], json!("over_reported"), "{rec}");
    let out = rec["output_tokens"].as_i64().unwrap();
    assert!(out > 10 && out < 1000, "{rec}");

    let a = answer(
        app.messages_x_api_key(
            &json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 10,
            "stream": true, "mock": runaway,
            "messages": [{"role": "user", "content": "hello there world"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(a.status, 200);
    let last = a.text.trim_end().rsplit("\n\n").next().unwrap();
    let data = last
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("{last}"));
    let err: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (err["type"].as_str(), err["error"]["type"].as_str()),
        (Some("error"), Some("billing_error")),
        "{err}"
    );
    assert!(!a.text.contains("message_stop"));
    let rec = app.wait_record(&a.id).await;
    assert_eq!(rec["error_code"], json!("credit_hold_exceeded"), "{rec}");
    assert_eq!(rec["status"], json!("error"), "{rec}");

    // The same stream from an honest upstream runs to its end.
    let a = answer(
        app.post_bearer(
            "/v1/chat/completions",
            &chat(Some(10), true, json!({"output_tokens": 5000})),
        )
        .await,
    )
    .await;
    assert!(a.text.ends_with("data: [DONE]\n\n") && !a.text.contains("\"error\""));
    let rec = app.wait_record(&a.id).await;
    assert_eq!(
        (rec["status"].as_str(), rec["output_tokens"].as_i64()),
        (Some("success"), Some(10))
    );
}
