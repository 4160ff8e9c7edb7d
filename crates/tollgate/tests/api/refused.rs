//! Requests the gateway refuses after authentication are counted: one `refused` record each,
//! nothing charged, so "total requests (all statuses)" includes them and successes do not.

use serde_json::{json, Value};
use tollgate::clock::ManualClock;

use crate::helpers::*;

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

impl TestApp {
    async fn post_with(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A new key of the test account with `limits`: (id, key).
    async fn limited_key(&self, limits: Value) -> (String, String) {
        let v: Value = self
            .http
            .post(format!(
                "{}/admin/accounts/{}/keys",
                self.base, self.account_id
            ))
            .bearer_auth(&self.admin_key)
            .json(&json!({"name": "limited", "limits": limits}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn refused_requests_are_counted_with_nothing_charged_and_unauthenticated_ones_are_not() {
    let clock = ManualClock::new(at("2026-03-04T10:00:00Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("10"),
        ..Spawn::default()
    })
    .await;
    // One model, two requests a minute.
    let (key_id, key) = app
        .limited_key(json!({"rpm_limit": 2, "allowed_models": ["gpt-4o-mini"]}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            app.post_with(&key, &chat("gpt-4o-mini")).await.status(),
            200
        );
    }
    // (body, status, code, model recorded)
    let cases = [
        (
            json!({"model": "gpt-4o-mini", "messages": "not a list"}),
            400,
            "invalid_request",
            "gpt-4o-mini",
        ),
        (chat("nope-1"), 404, "model_not_found", "nope-1"),
        (chat("gpt-4o"), 403, "permission_denied", "gpt-4o"),
        (
            chat("gpt-4o-mini"),
            429,
            "rate_limit_exceeded",
            "gpt-4o-mini",
        ),
    ];
    let mut refused_ids = Vec::new();
    for (body, status, code, _) in &cases {
        let r = app.post_with(&key, body).await;
        assert_eq!(r.status(), *status, "{body}");
        refused_ids.push(request_id(&r));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], *code, "{v}");
    }
    // Unauthenticated: nothing to count, nobody to count it for.
    for bad in ["tg-not-a-key", ""] {
        let r = app.post_with(bad, &chat("gpt-4o-mini")).await;
        assert_eq!(r.status(), 401);
    }

    // An account with no credits: 402, with what it has available.
    let (empty_account, _, empty_key) =
        create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    let r = app.post_with(&empty_key, &chat("gpt-4o-mini")).await;
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["x-credits-remaining"], "0");
    let no_balance_id = request_id(&r);

    // Exactly one record per authenticated request: 2 served, 4 + 1 refused.
    let records = app.records().await;
    assert_eq!(records.len(), 7, "{records:#?}");
    for (id, (_, status, code, model)) in refused_ids.iter().zip(&cases) {
        let r = app.record(id).await.unwrap();
        assert_eq!(r["status"], "refused", "{r}");
        assert_eq!(r["http_status"], *status, "{r}");
        assert_eq!(r["error_code"], *code, "{r}");
        assert_eq!(r["model_requested"], *model, "{r}");
        assert_eq!(r["key_id"], json!(key_id), "{r}");
        assert_eq!(r["endpoint"], "chat.completions", "{r}");
        for field in [
            "input_tokens",
            "output_tokens",
            "cost_nanos",
            "charged_nanos",
        ] {
            assert_eq!(r[field], 0, "{field}: {r}");
        }
    }
    let r = app.record(&no_balance_id).await.unwrap();
    assert_eq!(
        (&r["status"], &r["http_status"], &r["error_code"]),
        (
            &json!("refused"),
            &json!(402),
            &json!("insufficient_balance")
        )
    );
    assert_eq!(r["account_id"], json!(empty_account));

    // CrossModel: request_count is every status, success_count only successes; LLMHub's total
    // and the per-model breakdown count the same records.
    let usage = app.get_with(&app.user_key, "/v1/usage").await;
    for window in ["daily", "weekly", "monthly"] {
        assert_eq!(usage[window]["request_count"], 6, "{window}: {usage}");
        assert_eq!(usage[window]["success_count"], 2, "{window}: {usage}");
        assert_eq!(usage[window]["cost_micro"], usage["monthly"]["cost_micro"]);
    }
    assert_eq!(usage["total_requests"], 6, "{usage}");
    let models = app.get_with(&app.user_key, "/v1/usage/models").await;
    let per_model: i64 = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(per_model, 6, "{models}");
    let empty_usage = app.get_with(&empty_key, "/v1/usage").await;
    assert_eq!(empty_usage["daily"]["request_count"], 1, "{empty_usage}");
    assert_eq!(empty_usage["daily"]["success_count"], 0, "{empty_usage}");

    // Refusals cost nothing: the audit still balances and only the 2 served were charged.
    let audit: Value = app
        .http
        .get(format!(
            "{}/admin/accounts/{}/credits",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    let charged: i64 = records
        .iter()
        .map(|r| r["charged_nanos"].as_i64().unwrap())
        .sum();
    assert_eq!(audit["charges_nanos"], json!(charged), "{audit}");
    assert_eq!(
        app.mock.ledger().len(),
        2,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn a_402_tells_the_caller_what_is_available() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("0.000010"),
        ..Spawn::default()
    })
    .await;
    // Up to 1,000 output tokens of a Claude model cost more than $0.00001 (10 credits).
    let r = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", &app.user_key)
        .json(
            &json!({"model": "claude-sonnet-4-20250514", "max_tokens": 1000,
                      "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["x-credits-remaining"], "10");
    let id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "billing_error", "{v}");
    let rec = app.record(&id).await.unwrap();
    assert_eq!(
        (&rec["status"], &rec["endpoint"], &rec["provider"]),
        (&json!("refused"), &json!("messages"), &json!("mockant"))
    );
}
