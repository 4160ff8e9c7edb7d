//! Credits, limits and bring-your-own-key through the public API.

use futures_util::future::join_all;
use serde_json::{json, Value};
use tollgate::clock::ManualClock;

use crate::helpers::*;

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

impl TestApp {
    async fn admin_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn credits(&self) -> Value {
        self.http
            .get(format!("{}/v1/credits", self.base))
            .bearer_auth(&self.user_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn audit(&self) -> Value {
        self.admin_get(&format!("/admin/accounts/{}/credits", self.account_id))
            .await
    }

    async fn key_with_limits(&self, limits: Value) -> String {
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
        v["key"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string()
    }

    async fn chat_with(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// gpt-4o, 4 input tokens, output capped at 10: costs 4×2500 + 10×10000 = 110,000 nano-USD.
fn small_request() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hello there world"}],
           "mock": {"output_tokens": 10}})
}
const SMALL_COST: i64 = 110_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_never_overspend() {
    let app = spawn_app_with(Spawn::default()).await;
    // Enough for 90 requests at their real cost; far fewer at their held maximum.
    grant(
        &app.http,
        &app.base,
        &app.admin_key,
        &app.account_id,
        "0.0099",
    )
    .await;
    let reqs = (0..200).map(|_| async {
        let r = app
            .post_bearer("/v1/chat/completions", &small_request())
            .await;
        let status = r.status().as_u16();
        let remaining = r
            .headers()
            .get("x-credits-remaining")
            .map(|v| v.to_str().unwrap().parse::<i64>().unwrap());
        let body: Value = r.json().await.unwrap();
        (status, remaining, body)
    });
    let results = join_all(reqs).await;
    let ok = results.iter().filter(|r| r.0 == 200).count() as i64;
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 402).collect();
    assert_eq!(
        ok + refused.len() as i64,
        200,
        "only 200s and 402s expected"
    );
    assert!(
        ok > 0 && !refused.is_empty(),
        "ok={ok} refused={}",
        refused.len()
    );
    for (_, remaining, _) in &results {
        if let Some(r) = remaining {
            assert!(*r >= 0, "x-credits-remaining went negative: {r}");
        }
    }
    let e = &refused[0].2["error"];
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("billing_error"), Some("insufficient_balance"))
    );
    // A request the balance could not cover in full went upstream with its output capped to
    // what its hold covers (fewer than 10 tokens); the others cost SMALL_COST.
    let charged: i64 = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| {
            let u = &r.2["usage"];
            let output = u["completion_tokens"].as_i64().unwrap();
            assert!(u["prompt_tokens"] == 4 && output <= 10, "{}", r.2);
            4 * 2500 + output * 10_000
        })
        .sum();
    assert!(charged <= ok * SMALL_COST);
    let audit = app.audit().await;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    assert_eq!(audit["charges_nanos"], json!(charged));
    assert_eq!(audit["balance_nanos"], json!(9_900_000 - charged));
    assert!(audit["balance_nanos"].as_i64().unwrap() >= 0);
    assert_eq!(audit["held_nanos"], json!(0), "every hold was released");
    // Refused requests never reached the upstream.
    assert_eq!(app.mock.ledger().len() as i64, ok);
    // Sequentially, the rest of the balance is spent down to less than one request.
    loop {
        let r = app
            .post_bearer("/v1/chat/completions", &small_request())
            .await;
        if r.status() == 402 {
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let credits = app.credits().await;
    assert!(credits["balance_micro"].as_i64().unwrap() >= 0);
    assert_eq!(credits["uncollected_micro"], json!(0));
}

#[tokio::test]
async fn the_402_comes_in_the_anthropic_shape_for_x_api_key_callers() {
    let app = spawn_app_with(Spawn::default()).await;
    let r = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", &app.user_key)
        .json(&json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("billing_error"))
    );
    assert!(app.mock.ledger().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_sent_twice_even_concurrently_counts_once() {
    let app = spawn_app_with(Spawn::default()).await;
    let url = format!("{}/admin/accounts/{}/credits", app.base, app.account_id);
    let sends = (0..20).map(|_| {
        app.http
            .post(&url)
            .bearer_auth(&app.admin_key)
            .header("idempotency-key", "topup-2026-11")
            .json(&json!({"amount_usd": "5.00"}))
            .send()
    });
    let statuses: Vec<u16> = join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    let audit = app.audit().await;
    assert_eq!(audit["grants_nanos"], json!(5_000_000_000i64));
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    // The same key for a different amount is refused, not silently ignored.
    let r = app
        .http
        .post(&url)
        .bearer_auth(&app.admin_key)
        .header("idempotency-key", "topup-2026-11")
        .json(&json!({"amount_usd": "6.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(app.credits().await["balance_micro"], json!(5_000_000));
}

#[tokio::test]
async fn the_ledger_audit_holds_after_a_random_mix() {
    let app = spawn_app_with(Spawn::default()).await;
    let url = format!("{}/admin/accounts/{}/credits", app.base, app.account_id);
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % 1000
    };
    let (mut grants, mut refunds) = (0i64, 0i64);
    for i in 0..60 {
        let r = next();
        match r % 6 {
            0 => {
                let micro = 1_000 + (r as i64) * 7;
                app.http
                    .post(&url)
                    .bearer_auth(&app.admin_key)
                    .json(&json!({"amount_credits": micro}))
                    .send()
                    .await
                    .unwrap();
                grants += micro * 1000;
            }
            1 if i > 0 => {
                app.http
                    .post(&url)
                    .bearer_auth(&app.admin_key)
                    .json(&json!({"kind": "refund", "amount_usd": "0.000123"}))
                    .send()
                    .await
                    .unwrap();
                refunds += 123_000;
            }
            2 => {
                let mut b = small_request();
                b["mock"] = json!({"error_status": 500});
                let _ = app
                    .post_bearer("/v1/chat/completions", &b)
                    .await
                    .bytes()
                    .await;
            }
            3 => {
                let mut b = small_request();
                b["mock"] = json!({"omit_usage": true, "output_tokens": 5});
                let _ = app
                    .post_bearer("/v1/chat/completions", &b)
                    .await
                    .bytes()
                    .await;
            }
            _ => {
                let mut b = small_request();
                b["stream"] = json!(r % 2 == 0);
                b["mock"]["cached_tokens"] = json!(r % 3);
                let _ = app
                    .post_bearer("/v1/chat/completions", &b)
                    .await
                    .bytes()
                    .await;
            }
        }
    }
    let records = app.records().await;
    let charges: i64 = records
        .iter()
        .map(|r| r["charged_nanos"].as_i64().unwrap())
        .sum();
    let audit = app.audit().await;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    assert_eq!(audit["grants_nanos"], json!(grants));
    assert_eq!(audit["refunds_nanos"], json!(refunds));
    assert_eq!(audit["charges_nanos_records"], json!(charges));
    assert_eq!(audit["balance_nanos"], json!(grants - charges + refunds));
    assert_eq!(
        app.credits().await["balance_micro"],
        json!((grants - charges + refunds).div_euclid(1000))
    );
    assert!(
        records.iter().any(|r| r["status"] == "error")
            && records.iter().any(|r| r["provenance"] == "estimated")
    );
}

#[tokio::test]
async fn rate_limits_reset_at_the_utc_minute_with_headers_and_retry_after() {
    let clock = ManualClock::new(at("2026-03-01T23:59:30Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("10"),
        ..Spawn::default()
    })
    .await;
    let key = app.key_with_limits(json!({"rpm_limit": 2})).await;
    for left in ["1", "0"] {
        let r = app.chat_with(&key, &small_request()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], left);
    }
    let r = app.chat_with(&key, &small_request()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests-per-minute"),
        "{v}"
    );
    clock.set(at("2026-03-01T23:59:59.999Z"));
    assert_eq!(app.chat_with(&key, &small_request()).await.status(), 429);
    clock.set(at("2026-03-02T00:00:00Z"));
    assert_eq!(app.chat_with(&key, &small_request()).await.status(), 200);
}

#[tokio::test]
async fn tokens_per_minute_limit() {
    let clock = ManualClock::new(at("2026-03-01T10:00:00Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("10"),
        ..Spawn::default()
    })
    .await;
    let key = app.key_with_limits(json!({"tpm_limit": 20})).await;
    // Each request uses 4 + 10 tokens.
    assert_eq!(app.chat_with(&key, &small_request()).await.status(), 200);
    assert_eq!(app.chat_with(&key, &small_request()).await.status(), 200);
    let r = app.chat_with(&key, &small_request()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
    clock.advance(60_000);
    assert_eq!(app.chat_with(&key, &small_request()).await.status(), 200);
}

#[tokio::test]
async fn daily_spend_limit_resets_at_utc_midnight_and_weekly_on_monday() {
    let clock = ManualClock::new(at("2028-02-29T23:00:00Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("10"),
        ..Spawn::default()
    })
    .await;
    // The held maximum (~0.4 mUSD) fits once, then the spent 0.11 mUSD plus the next maximum does not.
    let daily = app
        .key_with_limits(json!({"spend_limit_nanos": 500_000, "spend_period": "daily"}))
        .await;
    assert_eq!(app.chat_with(&daily, &small_request()).await.status(), 200);
    let r = app.chat_with(&daily, &small_request()).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily spend"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2028-03-01T00:00:00Z"),
        "{v}"
    );
    clock.set(at("2028-03-01T00:00:00Z"));
    assert_eq!(app.chat_with(&daily, &small_request()).await.status(), 200);

    // 2028-03-05 is a Sunday; the ISO week resets Monday 2028-03-06 00:00 UTC.
    clock.set(at("2028-03-05T12:00:00Z"));
    let weekly = app
        .key_with_limits(json!({"spend_limit_nanos": 500_000, "spend_period": "weekly"}))
        .await;
    assert_eq!(app.chat_with(&weekly, &small_request()).await.status(), 200);
    clock.set(at("2028-03-05T23:59:59.999Z"));
    assert_eq!(app.chat_with(&weekly, &small_request()).await.status(), 429);
    clock.set(at("2028-03-06T00:00:00Z"));
    assert_eq!(app.chat_with(&weekly, &small_request()).await.status(), 200);
}

#[tokio::test]
async fn expired_revoked_and_disabled_are_401_with_their_codes_and_allow_lists_403() {
    let clock = ManualClock::new(at("2026-06-01T00:00:00Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("10"),
        ..Spawn::default()
    })
    .await;
    let expiring = app
        .key_with_limits(json!({"expires_at_ms": at("2026-06-01T00:00:01Z")}))
        .await;
    assert_eq!(
        app.chat_with(&expiring, &small_request()).await.status(),
        200
    );
    clock.advance(1_000);
    let r = app.chat_with(&expiring, &small_request()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "api_key_inactive"
    );

    let mini_only = app
        .key_with_limits(json!({"allowed_models": ["gpt-4o-mini"]}))
        .await;
    let r = app.chat_with(&mini_only, &small_request()).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "model");

    let r = app
        .http
        .patch(format!("{}/admin/accounts/{}", app.base, app.account_id))
        .bearer_auth(&app.admin_key)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.chat_with(&app.user_key, &small_request()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "user_inactive"
    );
}

#[tokio::test]
async fn repeated_auth_failures_are_slowed_down_before_any_key_lookup() {
    let app = spawn_app().await;
    for _ in 0..20 {
        assert_eq!(
            app.chat_with("tg-wrong", &small_request()).await.status(),
            401
        );
    }
    // Now even a good key from this address waits.
    let r = app.chat_with(&app.user_key, &small_request()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

const ENCRYPTION: &str =
    "\n[security]\nencryption_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";

#[tokio::test]
async fn bring_your_own_key_is_used_recorded_as_user_and_never_shown() {
    let app = spawn_app_with(Spawn {
        extra_toml: ENCRYPTION.into(),
        grant_usd: Some("1"),
        ..Spawn::default()
    })
    .await;
    let own = "sk-own-provider-key-9876";
    let r = app
        .http
        .put(format!(
            "{}/admin/accounts/{}/provider-keys/mock",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .json(&json!({"api_key": own}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown = r.text().await.unwrap();
    assert!(!shown.contains(own) && shown.contains("9876"), "{shown}");
    let before = app.credits().await["balance_micro"].clone();
    let r = app
        .post_bearer("/v1/chat/completions", &small_request())
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body = r.text().await.unwrap();
    assert!(!body.contains(own));
    assert_eq!(
        app.ledger_entry(&id).auth.as_deref(),
        Some(format!("Bearer {own}").as_str())
    );
    let rec = app.record(&id).await.unwrap();
    assert_eq!(
        (
            rec["source"].as_str(),
            rec["charged_nanos"].as_i64(),
            rec["cost_nanos"].as_i64()
        ),
        (Some("user"), Some(0), Some(SMALL_COST))
    );
    assert_eq!(
        app.credits().await["balance_micro"],
        before,
        "BYOK requests are not charged"
    );
    // The stored key is listed by its last four characters only, and the database holds no plaintext.
    let list = app
        .admin_get(&format!("/admin/accounts/{}/provider-keys", app.account_id))
        .await;
    assert!(!list.to_string().contains(own));
    let db = std::fs::read(app._dir.path().join("data/tollgate.db")).unwrap();
    assert!(
        !db.windows(own.len()).any(|w| w == own.as_bytes()),
        "plaintext key in the database"
    );
    // Other accounts still use the platform key.
    let (other, _, other_key) = create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    grant(&app.http, &app.base, &app.admin_key, &other, "1").await;
    let r = app.chat_with(&other_key, &small_request()).await;
    let id = request_id(&r);
    assert_eq!(
        app.ledger_entry(&id).auth.as_deref(),
        Some("Bearer sk-upstream-openai")
    );
}

/// A provider key is sent in an HTTP header, so one that is not visible ASCII is refused with a
/// 400 naming `api_key`, and nothing is stored. (A key ending in a multi-byte character used to
/// panic while taking its last four characters, dropping the connection.)
#[tokio::test]
async fn a_provider_key_that_cannot_be_sent_in_a_header_is_refused() {
    let app = spawn_app_with(Spawn {
        extra_toml: ENCRYPTION.into(),
        ..Spawn::default()
    })
    .await;
    let url = format!(
        "{}/admin/accounts/{}/provider-keys/mock",
        app.base, app.account_id
    );
    for bad in [
        "sk-own-key-\u{1d269}",
        "sk-own-ké-1234",
        "sk-own key-1234",
        "short",
    ] {
        let r = app
            .http
            .put(&url)
            .bearer_auth(&app.admin_key)
            .json(&json!({ "api_key": bad }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], "api_key", "{bad:?}: {body}");
    }
    let list = app
        .admin_get(&format!("/admin/accounts/{}/provider-keys", app.account_id))
        .await;
    assert_eq!(list["data"], json!([]), "a refused key was stored: {list}");
}
