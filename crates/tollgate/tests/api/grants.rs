//! Grants are bounded (per grant and per balance) so no balance or sum can overflow, and the
//! credit audit shows records whose upstream numbers were flagged.

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn post_credits(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}/admin/accounts/{}/credits",
                self.base, self.account_id
            ))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn credit_audit(&self) -> Value {
        let r = self
            .http
            .get(format!(
                "{}/admin/accounts/{}/credits",
                self.base, self.account_id
            ))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

fn assert_refused(status: u16, v: &Value, field: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    assert_eq!(v["error"]["param"], field, "{v}");
}

#[tokio::test]
async fn a_grant_that_would_overflow_the_balance_is_refused_and_nothing_is_written() {
    let app = spawn_app_with(Spawn::default()).await;
    // The grants of the report: two of 9,000,000,000 USD (the second used to wrap to negative).
    for _ in 0..2 {
        let (status, v) = app.post_credits(json!({"amount_usd": "9000000000"})).await;
        assert_refused(status, &v, "amount_usd");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_grant_usd"),
            "{v}"
        );
    }
    // In credits (10^6 per USD): 2·10^12 credits is 2,000,000 USD, past the default per-grant cap.
    let (status, v) = app
        .post_credits(json!({"amount_credits": 2_000_000_000_000i64}))
        .await;
    assert_refused(status, &v, "amount_credits");
    // Negative credits name their field too.
    let (status, v) = app.post_credits(json!({"amount_credits": -5})).await;
    assert_refused(status, &v, "amount_credits");
    let audit = app.credit_audit().await;
    assert_eq!(audit["entries"], json!([]), "{audit}");
    assert_eq!(audit["balance_nanos"], json!(0));
    assert_eq!(audit["consistent"], json!(true));

    // The default cap itself is accepted.
    let (status, v) = app.post_credits(json!({"amount_usd": "1000000"})).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["balance_nanos"], json!(1_000_000_000_000_000i64));
}

#[tokio::test]
async fn the_balance_cap_refuses_the_grant_past_it_and_replays_still_answer() {
    let app = spawn_app_with(Spawn {
        extra_toml: "[credits]\nmax_grant_usd = 100\nmax_balance_usd = 150\n".into(),
        ..Spawn::default()
    })
    .await;
    let (status, v) = app
        .post_credits(json!({"amount_usd": "100", "idempotency_key": "first"}))
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app
        .post_credits(json!({"amount_usd": "100.000000001"}))
        .await;
    assert_refused(status, &v, "amount_usd");
    // 100 + 60 > 150: refused, in either unit, as a grant or a refund.
    let (status, v) = app.post_credits(json!({"amount_usd": "60"})).await;
    assert_refused(status, &v, "amount_usd");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_balance_usd"),
        "{v}"
    );
    let (status, v) = app
        .post_credits(json!({"amount_credits": 60_000_000, "kind": "refund"}))
        .await;
    assert_refused(status, &v, "amount_credits");
    // A replay of the first grant is answered as before, cap or no cap: nothing new is added.
    let (status, v) = app
        .post_credits(json!({"amount_usd": "100", "idempotency_key": "first"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], json!(true));
    // Up to the cap exactly is fine.
    let (status, v) = app.post_credits(json!({"amount_usd": "50"})).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["balance_nanos"], json!(150_000_000_000i64));
    let audit = app.credit_audit().await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit["grants_nanos"], json!(150_000_000_000i64));
    assert_eq!(audit["consistent"], json!(true));
}

#[tokio::test]
async fn the_cli_grant_applies_the_same_limits() {
    let app = spawn_app_with(Spawn::default()).await;
    let config = app._dir.path().join("tollgate.toml");
    let grant = |usd: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&config)
            .args([
                "credits",
                "grant",
                "--account",
                &app.account_id,
                "--usd",
                usd,
            ])
            .env("TOLLGATE_LOG", "error")
            .output()
            .unwrap()
    };
    let out = grant("9000000000");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_grant_usd"), "{err}");
    let out = grant("12.5");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = app.credit_audit().await;
    assert_eq!(audit["grants_nanos"], json!(12_500_000_000i64), "{audit}");
}

#[test]
fn grant_limits_are_validated_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("[credits]\nmax_grant_usd = 0\n", "credits.max_grant_usd"),
        (
            "[credits]\nmax_grant_usd = 200\nmax_balance_usd = 100\n",
            "credits.max_grant_usd",
        ),
        (
            "[credits]\nmax_balance_usd = 9000000000\n",
            "credits.max_balance_usd",
        ),
    ] {
        let path = dir.path().join("t.toml");
        std::fs::write(&path, extra).unwrap();
        let err = tollgate::config::load_from(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

/// Records flagged by metering (clamped, over-reported) are counted per kind in the audit, with
/// the ids of the first 100. The records are written straight to the store: producing them
/// through an upstream is the metering tests' job.
#[tokio::test]
async fn the_audit_counts_flagged_records_per_kind_with_their_ids() {
    use tollgate_core::record::Anomaly;
    use tollgate_core::store::RecordStore;
    use tollgate_store::SqliteStore;
    let app = spawn_app().await;
    for _ in 0..2 {
        let r = app
            .post_bearer("/v1/chat/completions", &app.chat_body("gpt-4o-mini", false))
            .await;
        assert_eq!(r.status(), 200);
    }
    let audit = app.credit_audit().await;
    assert_eq!(audit["anomalies"], json!([]), "{audit}");

    let template: tollgate::record::UsageRecord =
        serde_json::from_value(app.records().await[0].clone()).unwrap();
    let mut flagged = Vec::new();
    for i in 0..105 {
        let mut r = template.clone();
        r.request_id = format!("req_clamped_{i:03}");
        r.created_at_ms = template.created_at_ms + 1000 + i;
        r.charged_nanos = 0;
        r.cost_nanos = 0;
        r.anomaly = Some(Anomaly::Clamped);
        flagged.push(r);
    }
    for i in 0..2 {
        let mut r = template.clone();
        r.request_id = format!("req_over_{i}");
        r.created_at_ms = template.created_at_ms + 5000 - i;
        r.charged_nanos = 0;
        r.cost_nanos = 0;
        r.anomaly = Some(Anomaly::OverReported);
        flagged.push(r);
    }
    let store = SqliteStore::open(&app._dir.path().join("data/tollgate.db")).unwrap();
    assert_eq!(store.insert_usage(flagged).await.unwrap(), 107);

    let audit = app.credit_audit().await;
    let clamped: Vec<Value> = (0..100)
        .map(|i| json!(format!("req_clamped_{i:03}")))
        .collect();
    assert_eq!(
        audit["anomalies"],
        json!([
            {"anomaly": "clamped", "count": 105, "charged_nanos": 0, "request_ids": clamped},
            // Oldest first.
            {"anomaly": "over_reported", "count": 2, "charged_nanos": 0,
             "request_ids": ["req_over_1", "req_over_0"]},
        ]),
        "{audit}"
    );
    // Another account's audit shows none of them.
    let (other, _, _) = create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    let v: Value = app
        .http
        .get(format!("{}/admin/accounts/{other}/credits", app.base))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["anomalies"], json!([]), "{v}");
}
