//! Re-pricing: the bundled table reproduces what was charged exactly; another table gives the
//! hand-computed difference; records keep the version of the table that priced them; nothing
//! changes.

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn reprice(&self, query: &str, body: Option<&Value>) -> reqwest::Response {
        let url = format!("{}/admin/reprice{query}", self.base);
        let req = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        req.bearer_auth(&self.admin_key).send().await.unwrap()
    }
}

#[tokio::test]
async fn repricing_reproduces_the_charges_and_prices_another_table() {
    let app = spawn_app().await;
    for model in [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o",
    ] {
        let r = app
            .post_bearer("/v1/chat/completions", &app.chat_body(model, false))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let r = app
        .post_bearer("/v1/chat/completions", &app.chat_body("gpt-unknown", false))
        .await;
    assert_eq!(r.status(), 404);
    let _ = r.bytes().await.unwrap();
    let records = app.records().await;
    assert_eq!(records.len(), 6);
    let sum = |f: &dyn Fn(&Value) -> bool, field: &str| -> i64 {
        records
            .iter()
            .filter(|r| f(r))
            .map(|r| r[field].as_i64().unwrap())
            .sum()
    };

    // The table the gateway prices with reproduces every record's cost.
    let r = app.reprice("", None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let version = v["price_version"].as_str().unwrap().to_string();
    assert!(
        version.starts_with("pt_") && version.len() == 19,
        "{version}"
    );
    let t = &v["totals"];
    assert_eq!(t["requests"], 6);
    assert_eq!(t["cost_nanos"], sum(&|_| true, "cost_nanos"));
    assert_eq!(t["charged_nanos"], sum(&|_| true, "charged_nanos"));
    assert_eq!(t["repriced_cost_nanos"], t["cost_nanos"]);
    assert_eq!(t["difference_nanos"], 0);
    assert_eq!(t["unreproduced"], 0);
    assert_eq!(
        v["records_by_price_version"],
        json!({version.as_str(): 5, "none": 1})
    );
    let priced: Vec<&Value> = records
        .iter()
        .filter(|r| r["status"] == "success")
        .collect();
    assert!(priced
        .iter()
        .all(|r| r["price_version"] == version.as_str()));

    // Another table: gpt-4o-mini at USD 0.30 in and 1.20 out per million tokens (300 and 1,200
    // nano-USD a token, so each record's cost is exact), gpt-4o not priced at all.
    let file = json!({"models": [{"model": "gpt-4o-mini", "owned_by": "openai",
        "display_name": "GPT-4o mini", "input": "0.30", "output": "1.20", "max_output_tokens": 100}]});
    let v: Value = app.reprice("", Some(&file)).await.json().await.unwrap();
    let mini = |r: &Value| r["model_requested"] == "gpt-4o-mini";
    let want = sum(&mini, "input_tokens") * 300 + sum(&mini, "output_tokens") * 1200;
    let m = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o-mini")
        .unwrap();
    assert_eq!(m["requests"], 3);
    assert_eq!(m["repriced_cost_nanos"], want);
    assert_eq!(m["difference_nanos"], want - sum(&mini, "cost_nanos"));
    let big = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .unwrap();
    assert_eq!(big["repriced_cost_nanos"], Value::Null);
    let t = &v["totals"];
    assert_eq!(
        t["unpriced_cost_nanos"],
        sum(&|r| r["model_requested"] == "gpt-4o", "cost_nanos")
    );
    assert_eq!(t["difference_nanos"], want - sum(&mini, "cost_nanos"));
    assert_ne!(v["price_version"], version.as_str());

    // A window with nothing in it, one account, and the answers it refuses.
    let v: Value = app
        .reprice("?from=2000-01-01&to=2000-01-31", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["totals"]["requests"], 0);
    let v: Value = app
        .reprice(&format!("?account_id={}", app.account_id), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["totals"]["requests"], 6);
    for (q, body, status, param) in [
        ("?account_id=acct_nope", None, 404, "account_id"),
        ("?from=2030-01-02&to=2030-01-01", None, 400, "to"),
        ("?from=yesterday", None, 400, "from"),
        ("", Some(json!({"models": []})), 400, "body"),
        ("", Some(json!([1, 2])), 400, "body"),
    ] {
        let r = app.reprice(q, body.as_ref()).await;
        assert_eq!(r.status(), status, "{q}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{q}: {e}");
    }
    let r = app
        .http
        .get(format!("{}/admin/reprice", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The CLI answers the same, on the same data dir (the gateway still running).
    let file_path = app._dir.path().join("other-prices.json");
    std::fs::write(&file_path, file.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(app._dir.path().join("tollgate.toml"))
        .args(["prices", "reprice", "--json", "--prices"])
        .arg(&file_path)
        .env("TOLLGATE_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let api: Value = app.reprice("", Some(&file)).await.json().await.unwrap();
    assert_eq!(cli["totals"], api["totals"]);
    assert_eq!(cli["models"], api["models"]);
    // Nothing changed.
    assert_eq!(app.records().await, records);
}
