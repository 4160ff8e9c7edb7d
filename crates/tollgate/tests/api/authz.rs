//! Authorization, generated from the router's own route table (`tollgate_http::router::
//! route_table`, the list the router is built from): every route × every kind of bad or foreign
//! credential × both header styles. A new route is covered the moment it is registered; a new
//! user route is assumed to read account data (so foreign ids must get 404) unless listed in
//! `READS_NO_ACCOUNT_DATA`.

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_http::router::route_table;
use tollgate_http::routes::{Access, RouteInfo};

use crate::helpers::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    /// `Authorization: Bearer K`: OpenAI's error shape.
    Bearer,
    /// `x-api-key: K` + `anthropic-version`: Anthropic's error shape.
    Anthropic,
}

/// User routes whose answer does not depend on whose account is asked about: `account_id` /
/// `key_id` in their query are irrelevant, and the test checks only that they change nothing.
const READS_NO_ACCOUNT_DATA: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
];

/// A body each proxy route accepts (the mock upstream answers it with 200).
fn valid_body(path: &str) -> Value {
    match path {
        "/v1/chat/completions" => json!({"model": "gpt-4o", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}),
        "/v1/embeddings" => json!({"model": "text-embedding-3-small", "input": "hi"}),
        "/v1/messages" => json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}),
        "/v1/responses" => json!({"model": "gpt-4o", "max_output_tokens": 5, "input": "hi"}),
        "/v1/messages/count_tokens" => json!({"model": "claude-sonnet-4-20250514",
            "messages": [{"role": "user", "content": "hi"}]}),
        "/v1/webhooks" => json!({"url": "https://93.184.215.14/hook", "events": ["credits.low"]}),
        "/v1/webhooks/{id}/rotate-secret"
        | "/v1/webhooks/{id}/test"
        | "/v1/webhooks/{id}/deliveries/{delivery_id}/retry" => json!({}),
        "/v1/webhooks/{id}" => json!({"active": true}),
        // Signs in with the key in the header; the body is not read.
        "/dashboard/api/session" => json!({}),
        other => panic!("POST {other} is a new user route: add a body it accepts to valid_body"),
    }
}

/// Everything the matrix needs: two tenants and one key in every bad state.
struct World {
    app: TestApp,
    /// Another tenant: account, one of its keys.
    other_account: String,
    other_key_id: String,
    revoked_user: String,
    revoked_admin: String,
    /// On an account with no credits, so a balance check before authentication would show.
    expired_user: String,
    expired_admin: String,
    disabled_user: String,
    disabled_admin: String,
    /// The user account's webhook, one of its deliveries, and spares for DELETE to use up.
    webhook: String,
    delivery: String,
    spare_webhooks: std::sync::Mutex<Vec<String>>,
}

async fn admin_send(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let r = app
        .http
        .request(method.clone(), format!("{}{path}", app.base))
        .bearer_auth(&app.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

async fn new_account(app: &TestApp, name: &str) -> String {
    let v = admin_send(app, Method::POST, "/admin/accounts", json!({"name": name})).await;
    v["id"].as_str().unwrap().to_string()
}

/// A new key on `account`: (id, secret).
async fn new_key(app: &TestApp, account: &str, role: &str) -> (String, String) {
    let v = admin_send(
        app,
        Method::POST,
        &format!("/admin/accounts/{account}/keys"),
        json!({"name": "authz", "role": role}),
    )
    .await;
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

async fn world() -> World {
    let app = spawn_app_with(Spawn {
        // Hundreds of deliberately bad keys from one address: keep the brake out of the way.
        // Webhooks aimed at the gateway itself, so their attempts are quick (and fail).
        extra_toml: "\n[limits]\nauth_failures_per_minute = 1000000\n\
                     [webhooks]\nallow_private_targets = true\n"
            .into(),
        grant_usd: Some("100"),
        ..Spawn::default()
    })
    .await;
    let a = app.account_id.clone();
    // The admin key's own account pays for the admin key's proxied requests.
    let accounts = admin_send(&app, Method::GET, "/admin/accounts", Value::Null).await;
    let admin_account = accounts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    grant(&app.http, &app.base, &app.admin_key, &admin_account, "10").await;

    let (other_account, other_key_id, other_key) =
        create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    grant(&app.http, &app.base, &app.admin_key, &other_account, "10").await;
    // The other tenant has usage of its own, so a leak would have something to show.
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&other_key)
        .json(&valid_body("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let revoke = |id: String| {
        let app = &app;
        async move {
            admin_send(app, Method::DELETE, &format!("/admin/keys/{id}"), json!({})).await;
        }
    };
    let (id, revoked_user) = new_key(&app, &a, "user").await;
    revoke(id).await;
    let (id, revoked_admin) = new_key(&app, &a, "admin").await;
    revoke(id).await;

    let empty = new_account(&app, "empty").await;
    let expire = |id: String| {
        let app = &app;
        async move {
            admin_send(
                app,
                Method::PATCH,
                &format!("/admin/keys/{id}"),
                json!({"limits": {"expires_at_ms": 1_000}}),
            )
            .await;
        }
    };
    let (id, expired_user) = new_key(&app, &empty, "user").await;
    expire(id).await;
    let (id, expired_admin) = new_key(&app, &empty, "admin").await;
    expire(id).await;

    let off = new_account(&app, "disabled").await;
    grant(&app.http, &app.base, &app.admin_key, &off, "10").await;
    let (_, disabled_user) = new_key(&app, &off, "user").await;
    let (_, disabled_admin) = new_key(&app, &off, "admin").await;
    admin_send(
        &app,
        Method::PATCH,
        &format!("/admin/accounts/{off}"),
        json!({"disabled": true}),
    )
    .await;

    // The user's webhooks: one with a delivery attempted (its target answers 405), and spares.
    let hook = |app: &TestApp| {
        let (http, base, key) = (app.http.clone(), app.base.clone(), app.user_key.clone());
        async move {
            let v: Value = http
                .post(format!("{base}/v1/webhooks"))
                .bearer_auth(&key)
                .json(&json!({"url": format!("{base}/health"), "events": ["credits.low"]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string()
        }
    };
    let webhook = hook(&app).await;
    let mut spares = Vec::new();
    for _ in 0..12 {
        spares.push(hook(&app).await);
    }
    let r = app
        .http
        .post(format!("{}/v1/webhooks/{webhook}/test", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let delivery = loop {
        let v: Value = app
            .http
            .get(format!("{}/v1/webhooks/{webhook}/deliveries", app.base))
            .bearer_auth(&app.user_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = v["data"][0]["delivery_id"].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    World {
        webhook,
        delivery,
        spare_webhooks: std::sync::Mutex::new(spares),
        app,
        other_account,
        other_key_id,
        revoked_user,
        revoked_admin,
        expired_user,
        expired_admin,
        disabled_user,
        disabled_admin,
    }
}

/// The route's path with each `{param}` replaced by `fill(param)`.
fn concrete(path: &str, fill: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(&rest[..start]);
        out.push_str(&fill(&rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Path parameters with a value the caller's own tenant may use.
fn own_param(w: &World, route: &RouteInfo, param: &str) -> String {
    match (route.access, param) {
        // Admin routes: any value, since only whether authentication passed is checked there
        // (an admin may name any account). The account id is harmless for every admin method.
        (Access::Admin, _) => w.app.account_id.clone(),
        (_, "file") => "app.js".into(),
        (_, "model_config_id") => tollgate_http::compat::model_configs::config_id("mock", "gpt-4o"),
        // A deleted webhook is gone: each DELETE gets one of its own.
        (_, "id") if route.method == Method::DELETE => w
            .spare_webhooks
            .lock()
            .unwrap()
            .pop()
            .expect("enough spare webhooks"),
        (_, "id") => w.webhook.clone(),
        (_, "delivery_id") => w.delivery.clone(),
        (_, p) => panic!(
            "{} {} has a new path parameter `{p}`: give own_param a value the caller may use",
            route.method, route.path
        ),
    }
}

struct Answer {
    status: u16,
    body: Value,
    text: String,
}

async fn call(
    w: &World,
    style: Style,
    route: &RouteInfo,
    path_and_query: &str,
    key: Option<&str>,
) -> Answer {
    let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
    let mut req = w
        .app
        .http
        .request(method.clone(), format!("{}{path_and_query}", w.app.base));
    req = match (style, key) {
        (Style::Bearer, Some(k)) => req.bearer_auth(k),
        (Style::Bearer, None) => req,
        (Style::Anthropic, k) => {
            let req = req.header("anthropic-version", "2023-06-01");
            match k {
                Some(k) => req.header("x-api-key", k),
                None => req,
            }
        }
    };
    if method != Method::GET && method != Method::DELETE {
        let body = if route.access == Access::User {
            valid_body(&route.path)
        } else {
            json!({})
        };
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, body, text }
}

/// Asserts an error answer: status, and the caller's shape with the expected code (OpenAI
/// shape) or error type (Anthropic shape, which has no code).
/// What an error answer must be.
struct Want<'a> {
    status: u16,
    code: &'a str,
    message: Option<&'a str>,
}

fn want(status: u16, code: &str) -> Want<'_> {
    Want {
        status,
        code,
        message: None,
    }
}

#[track_caller]
fn assert_error(label: &str, style: Style, route: &RouteInfo, key_sent: bool, a: &Answer, w: Want) {
    let Want {
        status,
        code,
        message,
    } = w;
    let what = format!("{style:?} {} {} {label}", route.method, route.path);
    assert_eq!(a.status, status, "{what}: {}", a.text);
    // An unauthenticated call to the Anthropic endpoint is answered Anthropic-style even
    // without `anthropic-version` (see ErrorStyle::detect).
    let anthropic_path = route.path == "/v1/messages" || route.path == "/v1/messages/count_tokens";
    let anthropic_shape = style == Style::Anthropic || (anthropic_path && !key_sent);
    let msg = if anthropic_shape {
        assert_eq!(a.body["type"], "error", "{what}: {}", a.text);
        let want = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            _ => unreachable!(),
        };
        assert_eq!(a.body["error"]["type"], want, "{what}: {}", a.text);
        let keys: Vec<&String> = a.body["error"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["message", "type"], "{what}: {}", a.text);
        a.body["error"]["message"].as_str()
    } else {
        let e = a.body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: {}", a.text));
        let mut keys: Vec<&String> = e.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["code", "message", "param", "type"],
            "{what}: {}",
            a.text
        );
        assert_eq!(a.body["error"]["code"], code, "{what}: {}", a.text);
        let want = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "invalid_request_error",
            _ => unreachable!(),
        };
        assert_eq!(a.body["error"]["type"], want, "{what}: {}", a.text);
        a.body["error"]["message"].as_str()
    };
    let msg = msg.unwrap_or_else(|| panic!("{what}: no message: {}", a.text));
    if let Some(m) = message {
        assert_eq!(msg, m, "{what}");
    }
}

fn with_query(path: &str, q: &str) -> String {
    format!("{path}?{q}")
}

async fn matrix(style: Style) {
    let w = world().await;
    let table = route_table();
    assert!(table.len() > 20, "the route table looks empty: {table:?}");
    let mut checked = 0;
    for route in &table {
        let own_path = || concrete(&route.path, &|p| own_param(&w, route, p));
        let own = own_path();
        if route.access == Access::Public {
            for key in [None, Some("tg-garbage")] {
                let a = call(&w, style, route, &own, key).await;
                assert_eq!(
                    a.status, 200,
                    "{style:?} {} {}: {}",
                    route.method, route.path, a.text
                );
            }
            checked += 1;
            continue;
        }
        let admin_route = route.access == Access::Admin;
        let pick = |user: &str, admin: &str| {
            if admin_route {
                admin.to_string()
            } else {
                user.to_string()
            }
        };

        // Credentials that must not get past authentication, on every protected route. The
        // expired key's account has no credits: authentication comes before any balance check.
        let bad: [(&str, Option<String>, &str, Option<&str>); 5] = [
            ("no key", None, "missing_api_key", None),
            (
                "garbage key",
                Some("tg-garbage-0000".into()),
                "invalid_api_key",
                None,
            ),
            (
                "revoked key",
                Some(pick(&w.revoked_user, &w.revoked_admin)),
                "api_key_inactive",
                None,
            ),
            (
                "expired key",
                Some(pick(&w.expired_user, &w.expired_admin)),
                "api_key_inactive",
                Some("this API key has expired"),
            ),
            (
                "disabled account",
                Some(pick(&w.disabled_user, &w.disabled_admin)),
                "user_inactive",
                None,
            ),
        ];
        for (label, key, code, message) in &bad {
            let a = call(&w, style, route, &own, key.as_deref()).await;
            let w = Want {
                status: 401,
                code,
                message: *message,
            };
            assert_error(label, style, route, key.is_some(), &a, w);
        }

        if admin_route {
            // A user key is refused whatever the ids name (its own tenant's or another's), so
            // the answer tells nothing about what exists.
            let foreign = concrete(&route.path, &|_| w.other_account.clone());
            for path in [&own, &foreign] {
                let a = call(&w, style, route, path, Some(&w.app.user_key)).await;
                assert_error(
                    "user key",
                    style,
                    route,
                    true,
                    &a,
                    want(403, "permission_denied"),
                );
            }
            // The admin key passes authentication (the handler may still refuse the dummy ids
            // or empty body, but not with 401/403, and never with a 5xx).
            let a = call(&w, style, route, &own, Some(&w.app.admin_key)).await;
            assert!(
                !matches!(a.status, 401 | 403) && a.status < 500,
                "{style:?} admin key on {} {}: {} {}",
                route.method,
                route.path,
                a.status,
                a.text
            );
        } else {
            // User route: the own key and an admin key both work.
            let base = call(&w, style, route, &own_path(), Some(&w.app.user_key)).await;
            // 2xx: creating answers 201, queueing 202.
            assert!(
                (200..300).contains(&base.status),
                "{style:?} user key on {} {}: {} {}",
                route.method,
                route.path,
                base.status,
                base.text
            );
            let a = call(&w, style, route, &own_path(), Some(&w.app.admin_key)).await;
            assert!(
                (200..300).contains(&a.status),
                "{style:?} admin key on {} {}: {} {}",
                route.method,
                route.path,
                a.status,
                a.text
            );

            let no_account_data = READS_NO_ACCOUNT_DATA
                .iter()
                .any(|(m, p)| route.method.as_str() == *m && route.path == *p);
            let queries = [
                format!("account_id={}", w.other_account),
                format!("key_id={}", w.other_key_id),
            ];
            for q in &queries {
                let a = call(
                    &w,
                    style,
                    route,
                    &with_query(&own_path(), q),
                    Some(&w.app.user_key),
                )
                .await;
                if no_account_data {
                    // Ignored: same answer as without, and a proxied request is the caller's.
                    assert!(
                        (200..300).contains(&a.status),
                        "{style:?} {} {} ?{q}: {}",
                        route.method,
                        route.path,
                        a.text
                    );
                    assert!(
                        !a.text.contains(&w.other_account) && !a.text.contains(&w.other_key_id),
                        "{style:?} {} {} ?{q} shows the other tenant: {}",
                        route.method,
                        route.path,
                        a.text
                    );
                    if route.method == Method::GET {
                        assert_eq!(a.body, base.body, "{style:?} {} ?{q}", route.path);
                    }
                } else {
                    assert_error(
                        &format!("?{q}"),
                        style,
                        route,
                        true,
                        &a,
                        want(404, "not_found"),
                    );
                }
                // An admin may name any account or key on a user route.
                let a = call(
                    &w,
                    style,
                    route,
                    &with_query(&own_path(), q),
                    Some(&w.app.admin_key),
                )
                .await;
                assert!(
                    (200..300).contains(&a.status),
                    "{style:?} admin {} {} ?{q}: {} {}",
                    route.method,
                    route.path,
                    a.status,
                    a.text
                );
            }
            // Another tenant's ids in the path are as unknown as made-up ones.
            if route.path.contains('{') {
                for id in [&w.other_account, &w.other_key_id] {
                    let foreign = concrete(&route.path, &|_| id.clone());
                    let a = call(&w, style, route, &foreign, Some(&w.app.user_key)).await;
                    assert_error(
                        "foreign path id",
                        style,
                        route,
                        true,
                        &a,
                        want(404, "not_found"),
                    );
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, table.len());
    // Naming the other tenant in a proxied request's query charged nothing to it: its only
    // record is its own request from the setup.
    let theirs: Vec<Value> = w
        .app
        .records()
        .await
        .into_iter()
        .filter(|r| r["account_id"] == json!(w.other_account))
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_bad_and_foreign_credentials_in_the_openai_shape() {
    matrix(Style::Bearer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_bad_and_foreign_credentials_in_the_anthropic_shape() {
    matrix(Style::Anthropic).await;
}
