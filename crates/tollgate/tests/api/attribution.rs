//! Who spent it: the end user (`x-tollgate-user`, OpenAI `user`, Anthropic `metadata.user_id`)
//! and tags (`x-tollgate-tags`) land on the record, filter the usage APIs, group OpenAI's
//! organization usage by `user_id`, and come out in the export; a bad header is a 400 naming
//! it, in the caller's error shape, and nothing is forwarded.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    /// A chat completion (Bearer) or a message (`x-api-key`) with extra headers.
    async fn send_with(
        &self,
        anthropic: bool,
        body: Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let path = if anthropic {
            "/v1/messages"
        } else {
            "/v1/chat/completions"
        };
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        req = if anthropic {
            req.header("x-api-key", &self.user_key)
                .header("anthropic-version", "2023-06-01")
        } else {
            req.bearer_auth(&self.user_key)
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// Sends a request with extra headers; returns its record once written.
    async fn attributed(&self, anthropic: bool, body: Value, headers: &[(&str, &str)]) -> Value {
        let r = self.send_with(anthropic, body.clone(), headers).await;
        assert_eq!(r.status(), 200, "{body}");
        let id = request_id(&r);
        let _ = r.bytes().await.unwrap();
        self.wait_record(&id).await
    }

    async fn refused_with(&self, anthropic: bool, body: Value, headers: &[(&str, &str)]) -> Value {
        let r = self.send_with(anthropic, body.clone(), headers).await;
        assert_eq!(r.status(), 400, "{headers:?} {body}");
        r.json().await.unwrap()
    }
}

fn tokens(records: &[&Value]) -> (i64, i64, i64) {
    let mut t = (0, 0, 0);
    for r in records {
        t.0 += 1;
        t.1 += r["input_tokens"].as_i64().unwrap();
        t.2 += r["output_tokens"].as_i64().unwrap();
    }
    t
}

#[tokio::test]
async fn end_users_and_tags_are_recorded_filtered_grouped_and_exported() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("100"),
        ..Spawn::default()
    })
    .await;
    let chat = |user: Option<&str>| {
        let mut b = app.chat_body("gpt-4o-mini", false);
        if let Some(u) = user {
            b["user"] = json!(u);
        }
        b
    };
    let msg = |user: &str| {
        json!({"model": "claude-sonnet-4-20250514", "max_tokens": 20,
               "messages": [{"role": "user", "content": "hi there"}],
               "metadata": {"user_id": user}})
    };
    let search = [("x-tollgate-tags", "team=ads, feature=search")];
    let a1 = app.attributed(false, chat(Some("alice")), &search).await;
    let a2 = app.attributed(false, chat(Some("alice")), &[]).await;
    // The header wins over the body.
    let b = app
        .attributed(
            false,
            chat(Some("body-user")),
            &[
                ("x-tollgate-user", "bob"),
                ("x-tollgate-tags", "feature=chat"),
            ],
        )
        .await;
    let c = app
        .attributed(true, msg("carol"), &[("x-tollgate-tags", "feature=search")])
        .await;
    let none = app.attributed(false, chat(None), &[]).await;

    assert_eq!(a1["user"], "alice");
    assert_eq!(a1["tags"], json!({"feature": "search", "team": "ads"}));
    assert_eq!(a2["user"], "alice");
    assert!(a2.get("tags").is_none_or(|t| t == &json!({})), "{a2}");
    assert_eq!(b["user"], "bob");
    assert_eq!(c["user"], "carol");
    assert_eq!(c["tags"], json!({"feature": "search"}));
    assert!(none.get("user").is_none_or(Value::is_null), "{none}");

    // Filters on a usage API: one user, two users, one tag.
    let models = |q: &str| {
        let app = &app;
        let q = q.to_string();
        async move {
            let v = app
                .get_with(
                    &app.user_key,
                    &format!("/v1/usage/models?start=2000-01-01&end=2999-12-31&{q}"),
                )
                .await;
            let mut t = (0, 0, 0);
            for row in v["data"].as_array().unwrap() {
                t.0 += row["requests"].as_i64().unwrap();
                t.1 += row["prompt_tokens"].as_i64().unwrap();
                t.2 += row["completion_tokens"].as_i64().unwrap();
            }
            t
        }
    };
    assert_eq!(models("user=alice").await, tokens(&[&a1, &a2]));
    assert_eq!(
        models("user=alice&user=carol").await,
        tokens(&[&a1, &a2, &c])
    );
    assert_eq!(models("tag=feature%3Dsearch").await, tokens(&[&a1, &c]));
    assert_eq!(models("tag=team=ads").await, tokens(&[&a1]));
    assert_eq!(models("user=nobody").await, (0, 0, 0));
    assert_eq!(models("").await, tokens(&[&a1, &a2, &b, &c, &none]));

    // Both at once, a bad tag, a bad user: 400 naming the parameter.
    for (q, param) in [
        ("user=alice&tag=feature=search", "tag"),
        ("tag=feature", "tag"),
        ("tag=a%20b=c", "tag"),
        (&format!("user={}", "u".repeat(300)) as &str, "user"),
    ] {
        let r = app
            .http
            .get(format!("{}/v1/usage/models?{q}", app.base))
            .bearer_auth(&app.user_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{q}: {v}");
    }

    // OpenAI's organization usage, grouped by user_id: each user, and null for the rest, add up
    // to the whole.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3 * 86_400;
    let org = app
        .get_with(
            &app.admin_key,
            &format!("/v1/organization/usage/completions?start_time={since}&bucket_width=1d&limit=7&group_by=user_id"),
        )
        .await;
    assert_eq!(org["has_more"], false, "{org}");
    let mut by_user: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for bucket in org["data"].as_array().unwrap() {
        for r in bucket["results"].as_array().unwrap() {
            let u = r["user_id"].as_str().unwrap_or("(none)").to_string();
            let e = by_user.entry(u).or_default();
            e.0 += r["num_model_requests"].as_i64().unwrap();
            e.1 += r["input_tokens"].as_i64().unwrap();
            e.2 += r["output_tokens"].as_i64().unwrap();
        }
    }
    let want: BTreeMap<String, (i64, i64, i64)> = [
        ("alice".to_string(), tokens(&[&a1, &a2])),
        ("bob".to_string(), tokens(&[&b])),
        ("carol".to_string(), tokens(&[&c])),
        ("(none)".to_string(), tokens(&[&none])),
    ]
    .into();
    assert_eq!(by_user, want);

    // The export carries both columns, and filters by them.
    let csv = app
        .http
        .get(format!("{}/v1/usage/export?format=csv&user=bob", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].ends_with(",user,tags"), "{}", lines[0]);
    assert!(lines[1].ends_with(",bob,feature=chat"), "{}", lines[1]);
    let v: Value = app
        .http
        .get(format!(
            "{}/v1/usage/export?format=json&tag=team=ads",
            app.base
        ))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["request_id"], a1["request_id"]);
    assert_eq!(rows[0]["tags"], json!({"feature": "search", "team": "ads"}));
}

#[tokio::test]
async fn a_bad_attribution_header_or_field_is_a_400_naming_it_and_nothing_is_forwarded() {
    let app = spawn_app_with(Spawn {
        grant_usd: Some("100"),
        ..Spawn::default()
    })
    .await;
    let long = "u".repeat(257);
    let chat = app.chat_body("gpt-4o-mini", false);
    for (headers, param) in [
        (
            vec![("x-tollgate-tags", "feature=a,feature=b")],
            "x-tollgate-tags",
        ),
        (vec![("x-tollgate-tags", "feature")], "x-tollgate-tags"),
        (vec![("x-tollgate-tags", "fea ture=a")], "x-tollgate-tags"),
        (
            vec![(
                "x-tollgate-tags",
                "a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1",
            )],
            "x-tollgate-tags",
        ),
        (vec![("x-tollgate-user", long.as_str())], "x-tollgate-user"),
    ] {
        let v = app.refused_with(false, chat.clone(), &headers).await;
        assert_eq!(v["error"]["param"], param, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        // Anthropic callers get Anthropic's shape.
        let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "x"}]});
        let v = app.refused_with(true, body, &headers).await;
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(param),
            "{v}"
        );
    }
    let mut bad_user = chat.clone();
    bad_user["user"] = json!(42);
    let v = app.refused_with(false, bad_user, &[]).await;
    assert_eq!(v["error"]["param"], "user");
    let mut long_user = chat.clone();
    long_user["user"] = json!(long);
    let v = app.refused_with(false, long_user, &[]).await;
    assert_eq!(v["error"]["param"], "user");
    let anthropic_bad = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5,
                               "messages": [{"role": "user", "content": "x"}],
                               "metadata": {"user_id": ["x"]}});
    let v = app.refused_with(true, anthropic_bad, &[]).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metadata.user_id"),
        "{v}"
    );
    // Nothing reached the upstream, and nothing was charged.
    assert!(app.mock.ledger().is_empty());
    let records = app.records().await;
    assert!(!records.is_empty());
    assert!(records
        .iter()
        .all(|r| r["status"] == "refused" && r["charged_nanos"] == 0));
}
