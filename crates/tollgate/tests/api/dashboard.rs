//! The dashboard at the HTTP level: the page and its assets (CSP, caching), signing in (the
//! cookie's flags), the session as a credential, CSRF on cookie writes, sign-out and revocation
//! ending a session, and the thin reads agreeing with the usage APIs.

use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

use crate::helpers::*;

/// Signs in with `key`: (cookie header value, CSRF token, the Set-Cookie line).
async fn sign_in(app: &TestApp, key: &str) -> (String, String, String) {
    let r = app
        .http
        .post(format!("{}/dashboard/api/session", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let set = r
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = r.json().await.unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    (
        cookie,
        body["csrf_token"].as_str().unwrap().to_string(),
        set,
    )
}

async fn with_cookie(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("cookie", cookie);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_expiring_cookie() {
    let app = spawn_app().await;
    let (cookie, csrf, set) = sign_in(&app, &app.user_key).await;
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    assert!(
        cookie.starts_with("tg_session=") && cookie.len() > 40,
        "{set}"
    );
    for want in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.contains(&want), "{want} missing: {set}");
    }
    assert!(!attrs.contains(&"Secure"), "plain HTTP: no Secure: {set}");
    assert_eq!(csrf.len(), 64);
    // The cookie is not the key, nor the CSRF token.
    assert!(!set.contains(&app.user_key) && !set.contains(&csrf));

    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = app
        .http
        .post(format!("{}/dashboard/api/session", app.base))
        .bearer_auth(&app.user_key)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let set = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");

    // The public session read looks at the cookie only: it is no oracle for keys in headers.
    for key in [app.user_key.as_str(), "tg-wrong"] {
        let me = app.get_with(key, "/dashboard/api/session").await;
        assert_eq!(me["signed_in"], false, "{me}");
        assert!(me.get("account_id").is_none());
    }

    // A wrong key gets no session.
    let r = app
        .http
        .post(format!("{}/dashboard/api/session", app.base))
        .bearer_auth("tg-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn the_session_cookie_is_a_credential_and_writes_need_its_csrf_token() {
    let app = spawn_app_with(Spawn {
        extra_toml: "\n[webhooks]\nallow_private_targets = true\n".into(),
        grant_usd: Some("10"),
        ..Spawn::default()
    })
    .await;
    let (cookie, csrf, _) = sign_in(&app, &app.user_key).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, me) = with_cookie(
        &app,
        get.clone(),
        "/dashboard/api/session",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["signed_in"], true);
    assert_eq!(me["account_id"], app.account_id.as_str());
    assert_eq!(me["key_id"], app.key_id.as_str());
    assert_eq!(me["csrf_token"], csrf.as_str());
    let (status, usage) = with_cookie(&app, get.clone(), "/v1/usage", &cookie, None, None).await;
    assert_eq!(status, 200, "{usage}");

    let hook = json!({"url": format!("{}/health", app.base), "events": ["credits.low"]});
    // No token, a wrong one, the token of another session: 403 in the OpenAI shape, nothing made.
    let (_, other_csrf, _) = sign_in(&app, &app.user_key).await;
    for token in [None, Some("0".repeat(64)), Some(other_csrf)] {
        let (status, body) = with_cookie(
            &app,
            post.clone(),
            "/v1/webhooks",
            &cookie,
            token.as_deref(),
            Some(hook.clone()),
        )
        .await;
        assert_eq!(status, 403, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "permission_denied");
        assert_eq!(body["error"]["type"], "permission_error");
    }
    let list = app.get_with(&app.user_key, "/v1/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // With the token it goes through; a header key needs no token.
    let (status, made) = with_cookie(
        &app,
        post.clone(),
        "/v1/webhooks",
        &cookie,
        Some(&csrf),
        Some(hook.clone()),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let r = app.post_bearer("/v1/webhooks", &hook).await;
    assert_eq!(r.status(), 201);
    // DELETE is a write too.
    let id = made["id"].as_str().unwrap();
    let path = format!("/v1/webhooks/{id}");
    let (status, _) = with_cookie(&app, reqwest::Method::DELETE, &path, &cookie, None, None).await;
    assert_eq!(status, 403);
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::DELETE,
        &path,
        &cookie,
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The proxy accepts the session too, with its token.
    let (status, _) = with_cookie(
        &app,
        post.clone(),
        "/v1/chat/completions",
        &cookie,
        None,
        Some(app.chat_body("gpt-4o-mini", false)),
    )
    .await;
    assert_eq!(status, 403);

    // A user's session reads only its own account.
    let (other, _, _) = create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    for path in [
        format!("/dashboard/api/keys?account_id={other}"),
        format!("/v1/usage?account_id={other}"),
    ] {
        let (status, body) = with_cookie(&app, get.clone(), &path, &cookie, None, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // And a user key's session cannot use the admin API.
    let (status, _) = with_cookie(&app, get, "/admin/accounts", &cookie, None, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn sign_out_and_revocation_end_the_session() {
    let app = spawn_app().await;
    let get = reqwest::Method::GET;
    let (cookie, csrf, _) = sign_in(&app, &app.user_key).await;
    // Signing out is a write: without the token it is refused and the session lives on.
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::DELETE,
        "/dashboard/api/session",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let r = app
        .http
        .delete(format!("{}/dashboard/api/session", app.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(
        set.starts_with("tg_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    // The old cookie is dead on the server, not only in the browser.
    let (status, body) = with_cookie(&app, get.clone(), "/v1/usage", &cookie, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_api_key");
    let (status, me) = with_cookie(
        &app,
        get.clone(),
        "/dashboard/api/session",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!((status, &me["signed_in"]), (200, &json!(false)));

    // A key revoked while signed in: its session stops working at once.
    let key: Value = app
        .http
        .post(format!(
            "{}/admin/accounts/{}/keys",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (cookie, _, _) = sign_in(&app, key["key"].as_str().unwrap()).await;
    let (status, _) = with_cookie(&app, get.clone(), "/v1/usage", &cookie, None, None).await;
    assert_eq!(status, 200);
    let r = app
        .http
        .delete(format!(
            "{}/admin/keys/{}",
            app.base,
            key["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = with_cookie(&app, get.clone(), "/v1/usage", &cookie, None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "api_key_inactive");

    // A made-up cookie is no credential.
    let (status, _) = with_cookie(
        &app,
        get,
        "/v1/usage",
        &format!("tg_session={}", "a".repeat(64)),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_page_and_assets_are_embedded_with_a_strict_policy() {
    let app = spawn_app().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{}/", app.base)).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()[LOCATION], "/dashboard");

    let r = http
        .get(format!("{}/dashboard", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
    let html = r.text().await.unwrap();
    assert!(html.contains("API key") && html.contains("Sign in"));
    // Every script and stylesheet is ours, versioned; none inline.
    let urls: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .chain(html.split("href=\"").skip(1))
        .map(|s| s.split('"').next().unwrap())
        .filter(|u| u.starts_with("/dashboard/assets/"))
        .collect();
    assert_eq!(urls.len(), 5, "{urls:?}");
    assert!(!html.contains("<script>") && !html.contains("https://"));
    for url in urls {
        let r = http.get(format!("{}{url}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(
            r.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert!(r.headers().contains_key(CONTENT_SECURITY_POLICY));
        assert!(!r.bytes().await.unwrap().is_empty());
        // Without its version the same file must be revalidated.
        let bare = url.split('?').next().unwrap();
        let r = http
            .get(format!("{}{bare}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache", "{bare}");
    }
    let r = http
        .get(format!("{}/dashboard/assets/nope.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_thin_reads_agree_with_the_usage_apis() {
    let app = spawn_app().await;
    for model in ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini"] {
        let r = app
            .post_bearer("/v1/chat/completions", &app.chat_body(model, false))
            .await;
        assert_eq!(r.status(), 200);
        // Apart by more than a millisecond: the log's order is the arrival's.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A refused request (unknown model) for the status filter.
    let r = app
        .post_bearer("/v1/chat/completions", &app.chat_body("gpt-nope-1", false))
        .await;
    assert_eq!(r.status(), 404);
    let key = &app.user_key;

    let q = "period=last_7_days&granularity=day&timezone=America/New_York";
    let rt = app.get_with(key, &format!("/v1/model-usage?{q}")).await;
    for group in ["model", "key", "provider", "none"] {
        let series = app
            .get_with(key, &format!("/dashboard/api/series?{q}&group={group}"))
            .await;
        let buckets = series["buckets"].as_array().unwrap();
        let ts = rt["timeSeries"].as_array().unwrap();
        assert_eq!(buckets.len(), ts.len());
        for (i, point) in ts.iter().enumerate() {
            assert_eq!(buckets[i]["date"], point["date"]);
            let sum = |f: &str| -> i64 {
                series["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g["points"][i][f].as_i64().unwrap())
                    .sum()
            };
            assert_eq!(
                sum("requests"),
                point["requests"].as_i64().unwrap(),
                "{group}"
            );
            assert_eq!(sum("tokens"), point["tokens"].as_i64().unwrap(), "{group}");
        }
        assert_eq!(series["totals"]["cost"], rt["summary"]["totalCost"]);
        assert_eq!(series["totals"]["requests"], rt["summary"]["totalRequests"]);
    }
    let by_model = app
        .get_with(key, &format!("/dashboard/api/series?{q}&group=model"))
        .await;
    for g in by_model["groups"].as_array().unwrap() {
        let id = g["id"].as_str().unwrap();
        let m = &rt["usageByModel"][id];
        assert_eq!(g["totals"]["cost"], m["totalCost"], "{id}");
        assert_eq!(g["totals"]["requests"], m["requestCount"], "{id}");
        assert_eq!(
            g["totals"]["avg_cost_per_request"], m["avgCostPerRequest"],
            "{id}"
        );
    }

    // The request log: newest first, the export's rows, filtered by status and model, paged.
    let log = app.get_with(key, "/dashboard/api/requests?limit=10").await;
    let rows = log["data"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["status"], "refused");
    assert_eq!(rows[0]["model_requested"], "gpt-nope-1");
    let refused = app
        .get_with(key, "/dashboard/api/requests?status=refused")
        .await;
    assert_eq!(refused["data"].as_array().unwrap().len(), 1);
    let ok = app
        .get_with(
            key,
            "/dashboard/api/requests?status=success&model=gpt-4o-mini",
        )
        .await;
    let ok = ok["data"].as_array().unwrap();
    assert_eq!(ok.len(), 2);
    assert!(ok.iter().all(|r| r["model_requested"] == "gpt-4o-mini"));
    let export = app.get_with(key, "/v1/usage/export?format=json").await;
    let newest_success = export
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["status"] == "success")
        .unwrap();
    let mut row = ok[0].clone();
    row.as_object_mut().unwrap().remove("key_name");
    assert_eq!(&row, newest_success);
    let page1 = app.get_with(key, "/dashboard/api/requests?limit=3").await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = app
        .get_with(
            key,
            &format!("/dashboard/api/requests?limit=3&cursor={cursor}"),
        )
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    // Filtered pages of one: every success once, in order, then no cursor.
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    loop {
        let page = app
            .get_with(
                key,
                &format!("/dashboard/api/requests?status=success&limit=1{cursor}"),
            )
            .await;
        for r in page["data"].as_array().unwrap() {
            seen.push(r["request_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = rows
        .iter()
        .filter(|r| r["status"] == "success")
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, want);
    let r = app
        .http
        .get(format!("{}/dashboard/api/requests?status=weird", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Keys: a user key lists its own account's keys with their month and last use.
    let keys = app.get_with(key, "/dashboard/api/keys").await;
    let k = &keys["data"][0];
    assert_eq!(k["key"]["id"], app.key_id.as_str());
    assert!(k["key"].get("key_hash").is_none());
    assert_eq!(k["month"]["requests"], 4);
    assert_eq!(k["last_used_ms"], rows[0]["created_at_ms"]);

    // Credits: the balance as /v1/credits has it, and the grant behind it.
    let credits = app.get_with(key, "/dashboard/api/credits").await;
    let v1 = app.get_with(key, "/v1/credits").await;
    assert_eq!(credits["balance_credits"], v1["balance_credits"]);
    assert_eq!(credits["available_credits"], v1["available_credits"]);
    assert_eq!(credits["entries"].as_array().unwrap().len(), 1);
    assert_eq!(credits["entries"][0]["amount_nanos"], 100_000_000_000i64);
    let live = app.get_with(key, "/dashboard/api/live").await;
    assert_eq!(live["in_flight"], 0);

    // The all-accounts overview is the admin's, with each account's month.
    let r = app
        .http
        .get(format!("{}/dashboard/api/accounts", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let all = app
        .get_with(&app.admin_key, "/dashboard/api/accounts")
        .await;
    let mine = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == app.account_id.as_str())
        .unwrap();
    let usage = app.get_with(key, "/v1/usage").await;
    assert_eq!(mine["month"]["requests"], usage["monthly"]["request_count"]);
    assert_eq!(mine["cost_micro"], usage["monthly"]["cost_micro"]);
    assert_eq!(mine["credits_used"], usage["total_credits_used"]);
}

/// Requests in flight show while they are at the upstream and are gone once they end.
#[tokio::test]
async fn requests_in_flight_are_counted() {
    let app = spawn_app().await;
    let base = app.base.clone();
    let key = app.user_key.clone();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
        "mock": {"latency_ms": 1500}});
    let http = app.http.clone();
    let slow = tokio::spawn(async move {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });
    let mut seen = 0;
    for _ in 0..100 {
        let live = app.get_with(&app.user_key, "/dashboard/api/live").await;
        seen = seen.max(live["in_flight"].as_u64().unwrap());
        if seen > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 1);
    assert_eq!(slow.await.unwrap(), 200);
    let live = app.get_with(&app.user_key, "/dashboard/api/live").await;
    assert_eq!(live["in_flight"], 0);
}
