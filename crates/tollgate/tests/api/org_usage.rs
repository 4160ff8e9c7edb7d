//! OpenAI organization usage: the current minute counts, and each request is reported under its
//! API (completions: chat completions and messages; embeddings apart; costs: all).

use serde_json::{json, Value};
use tollgate::clock::ManualClock;

use crate::helpers::*;

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

impl TestApp {
    async fn org(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn call(&self, path: &str, body: Value, anthropic: bool) -> Value {
        let req = self.http.post(format!("{}{path}", self.base)).json(&body);
        let req = if anthropic {
            req.header("x-api-key", &self.user_key)
        } else {
            req.bearer_auth(&self.user_key)
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let id = request_id(&r);
        let _ = r.bytes().await.unwrap();
        self.wait_record(&id).await
    }
}

/// Every bucket's results, flattened.
fn results(page: &Value) -> Vec<Value> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap().clone())
        .collect()
}

fn sum(results: &[Value], field: &str) -> i64 {
    results.iter().map(|r| r[field].as_i64().unwrap()).sum()
}

#[tokio::test]
async fn requests_of_the_current_minute_are_counted() {
    // Mid-minute, and a millisecond into a minute: both cases the floor used to drop.
    for now in ["2028-02-29T12:34:56.789Z", "2028-02-29T12:35:00.250Z"] {
        let clock = ManualClock::new(at(now));
        let app = spawn_app_with(Spawn {
            clock: Some(clock.clone()),
            grant_usd: Some("100"),
            ..Spawn::default()
        })
        .await;
        let mut tokens = 0;
        for _ in 0..19 {
            let r = app
                .call(
                    "/v1/chat/completions",
                    app.chat_body("gpt-4o-mini", false),
                    false,
                )
                .await;
            tokens += r["input_tokens"].as_i64().unwrap();
        }
        let day = at("2028-02-29T00:00:00Z") / 1000;
        let now_secs = at(now) / 1000;
        for (width, limit) in [("1d", 31), ("1h", 168), ("1m", 1440)] {
            let v = app
                .org(&format!(
                    "/v1/organization/usage/completions?start_time={day}&bucket_width={width}&group_by=model&limit={limit}"
                ))
                .await;
            let last = v["data"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(last["end_time"], json!(now_secs), "{now} {width}: {last}");
            assert_eq!(
                last["results"],
                json!([{"object": "organization.usage.completions.result", "input_tokens": tokens,
                        "output_tokens": last["results"][0]["output_tokens"], "input_cached_tokens": 0,
                        "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": 19,
                        "project_id": null, "user_id": null, "api_key_id": null, "model": "gpt-4o-mini",
                        "batch": null, "service_tier": null}]),
                "{now} {width}"
            );
            assert_eq!(sum(&results(&v), "num_model_requests"), 19, "{now} {width}");
        }
        let v = app
            .org(&format!("/v1/organization/costs?start_time={day}"))
            .await;
        let charged: i64 = app
            .records()
            .await
            .iter()
            .map(|r| r["charged_nanos"].as_i64().unwrap())
            .sum();
        let got: f64 = results(&v)
            .iter()
            .map(|r| r["amount"]["value"].as_f64().unwrap())
            .sum();
        assert!(charged > 0);
        assert!(
            (got - charged as f64 / 1e9).abs() < 1e-12,
            "{now}: costs {got} vs records {charged}"
        );
        // An explicit end_time in the current minute reads that minute whole, too.
        let v = app
            .org(&format!(
                "/v1/organization/usage/completions?start_time={day}&end_time={}&bucket_width=1d",
                now_secs + 1
            ))
            .await;
        assert_eq!(sum(&results(&v), "num_model_requests"), 19, "{now}");
    }
}

#[tokio::test]
async fn pages_of_minutes_count_each_request_once() {
    let clock = ManualClock::new(at("2028-02-29T12:00:10Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("100"),
        ..Spawn::default()
    })
    .await;
    // One request in each of 5 minutes, the last in the current minute.
    for _ in 0..5 {
        app.call(
            "/v1/chat/completions",
            app.chat_body("gpt-4o-mini", false),
            false,
        )
        .await;
        clock.advance(60_000);
    }
    clock.advance(-30_000); // now: 12:04:40, the fifth request at 12:04:10
    let start = at("2028-02-29T12:00:00Z") / 1000;
    let mut counts = Vec::new();
    let mut page = String::new();
    loop {
        let v = app
            .org(&format!(
                "/v1/organization/usage/completions?start_time={start}&bucket_width=1m&limit=2{page}"
            ))
            .await;
        for b in v["data"].as_array().unwrap() {
            counts.push(
                b["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["num_model_requests"].as_i64().unwrap())
                    .sum::<i64>(),
            );
        }
        match v["next_page"].as_str() {
            Some(p) => page = format!("&page={p}"),
            None => break,
        }
    }
    assert_eq!(counts, [1, 1, 1, 1, 1]);
}

#[tokio::test]
async fn embeddings_are_reported_apart_from_completions() {
    let clock = ManualClock::new(at("2028-02-29T12:00:30Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock.clone()),
        grant_usd: Some("100"),
        ..Spawn::default()
    })
    .await;
    let chat = app
        .call(
            "/v1/chat/completions",
            app.chat_body("gpt-4o-mini", false),
            false,
        )
        .await;
    let messages = app
        .call(
            "/v1/messages",
            json!({"model": "claude-sonnet-4-20250514", "max_tokens": 32,
                   "messages": [{"role": "user", "content": "hi there"}]}),
            true,
        )
        .await;
    let mut embeddings = Vec::new();
    for input in ["embed me", "and me too, please"] {
        embeddings.push(
            app.call(
                "/v1/embeddings",
                json!({"model": "text-embedding-3-small", "input": input}),
                false,
            )
            .await,
        );
    }
    assert_eq!(embeddings[0]["endpoint"], "embeddings");
    clock.advance(120_000);
    let day = at("2028-02-29T00:00:00Z") / 1000;

    let v = app
        .org(&format!(
            "/v1/organization/usage/completions?start_time={day}&group_by=model"
        ))
        .await;
    let mut models: Vec<String> = results(&v)
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_string())
        .collect();
    models.sort();
    assert_eq!(models, ["claude-sonnet-4-20250514", "gpt-4o-mini"]);
    assert_eq!(
        sum(&results(&v), "input_tokens"),
        chat["input_tokens"].as_i64().unwrap() + messages["input_tokens"].as_i64().unwrap()
    );

    let v = app
        .org(&format!(
            "/v1/organization/usage/embeddings?start_time={day}&group_by=model&group_by=api_key_id&group_by=project_id"
        ))
        .await;
    assert_eq!(v["object"], "page");
    let input: i64 = embeddings
        .iter()
        .map(|r| r["input_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(
        results(&v),
        [
            json!({"object": "organization.usage.embeddings.result", "input_tokens": input,
                "num_model_requests": 2, "project_id": app.account_id, "user_id": null,
                "api_key_id": app.key_id, "model": "text-embedding-3-small"})
        ]
    );
    // Without grouping, and in minutes (the embeddings were made at 12:00:30).
    let v = app
        .org(&format!(
            "/v1/organization/usage/embeddings?start_time={}&bucket_width=1m",
            at("2028-02-29T12:00:00Z") / 1000
        ))
        .await;
    assert_eq!(
        v["data"][0]["results"],
        json!([{"object": "organization.usage.embeddings.result", "input_tokens": input,
                "num_model_requests": 2, "project_id": null, "user_id": null,
                "api_key_id": null, "model": null}])
    );
    // Embeddings usage has no `batch` dimension, and costs still count every request.
    let r = app
        .http
        .get(format!(
            "{}/v1/organization/usage/embeddings?start_time={day}&group_by=batch",
            app.base
        ))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "group_by", "{e}");
    let r = app
        .http
        .get(format!(
            "{}/v1/organization/usage/embeddings?start_time={day}",
            app.base
        ))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "admin keys only");
    let v = app
        .org(&format!("/v1/organization/costs?start_time={day}"))
        .await;
    let charged: i64 = app
        .records()
        .await
        .iter()
        .map(|r| r["charged_nanos"].as_i64().unwrap())
        .sum();
    let got: f64 = results(&v)
        .iter()
        .map(|r| r["amount"]["value"].as_f64().unwrap())
        .sum();
    assert!((got - charged as f64 / 1e9).abs() < 1e-12);
    // The OpenAPI document describes the new route.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/organization/usage/embeddings"]["get"].is_object());
}
