//! The edges of the HTTP boundary: body limits on every route, parameters of the wrong type,
//! what the HTTP/1 parser refuses before the router sees a request, and the first-start banner.

use std::process::Stdio;
use std::time::Duration;

use mock_upstream::{MockConfig, MockServer};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tollgate_http::router::route_table;
use tollgate_http::routes::Access;

use crate::helpers::*;

/// `x-api-key` + `anthropic-version` (Anthropic shape) or Bearer (OpenAI shape).
fn authed(req: reqwest::RequestBuilder, key: &str, anthropic: bool) -> reqwest::RequestBuilder {
    if anthropic {
        req.header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    } else {
        req.bearer_auth(key)
    }
}

/// (status, error type, OpenAI code or null, message) of an error answer in the caller's shape.
async fn error_of(r: reqwest::Response, anthropic: bool) -> (u16, String, Value, String) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status}: not JSON in the caller's shape: {text:?}"));
    if anthropic {
        assert_eq!(v["type"], "error", "{v}");
    }
    let e = &v["error"];
    (
        status,
        e["type"].as_str().unwrap_or_default().to_string(),
        if anthropic {
            Value::Null
        } else {
            e["code"].clone()
        },
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

// ---- item 6: every route that takes a body uses server.max_body_bytes, in the caller's shape ----

#[tokio::test]
async fn every_route_with_a_body_answers_an_oversized_one_with_413_in_the_callers_shape() {
    let app = spawn_app().await;
    let limit = 65536; // helpers' server.max_body_bytes
    let big = format!(
        "{{\"name\":\"{}\"}}",
        "x".repeat(limit + 1) // past the limit, far under axum's own 2 MiB default
    );
    let mut checked = 0;
    for route in route_table() {
        if !matches!(route.method, Method::POST | Method::PUT | Method::PATCH) {
            continue;
        }
        let key = match route.access {
            Access::Admin => &app.admin_key,
            _ => &app.user_key,
        };
        let path = route
            .path
            .replace("{id}", &app.account_id)
            .replace("{provider}", "mock");
        for anthropic in [false, true] {
            // Declared length: refused before the body is read.
            let declared = app
                .http
                .request(route.method.clone(), format!("{}{path}", app.base))
                .header("content-type", "application/json")
                .body(big.clone());
            // Chunked, no length: cut off as it passes the limit.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
                .as_bytes()
                .chunks(8192)
                .map(|c| Ok(c.to_vec()))
                .collect();
            let chunked = app
                .http
                .request(route.method.clone(), format!("{}{path}", app.base))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                )));
            for (how, req) in [("declared", declared), ("chunked", chunked)] {
                let r = authed(req, key, anthropic).send().await.unwrap();
                let (status, ty, code, msg) = error_of(r, anthropic).await;
                let what = format!(
                    "{} {} {how} anthropic={anthropic}",
                    route.method, route.path
                );
                assert_eq!(status, 413, "{what}: {msg}");
                if anthropic {
                    assert_eq!(ty, "request_too_large", "{what}");
                } else {
                    assert_eq!(
                        (ty.as_str(), code),
                        ("invalid_request_error", json!("request_too_large")),
                        "{what}"
                    );
                }
                assert!(msg.contains(&limit.to_string()), "{what}: {msg}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} routes take a body?");
    assert!(app.mock.ledger().is_empty());
}

#[tokio::test]
async fn admin_bodies_over_two_mib_work_when_max_body_bytes_allows_them() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = load_config(dir.path(), &mock.base_url(), "");
    config.server.max_body_bytes = 4 << 20;
    let app = tollgate::Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let admin = app.bootstrap_admin_key.clone().unwrap().key;
    tokio::spawn(app.run_until_stopped());
    // 3 MiB: over axum's default 2 MiB limit, under the configured 4 MiB. Trailing whitespace
    // keeps it valid JSON.
    let body = format!("{{\"name\":\"big\"}}{}", " ".repeat(3 << 20));
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

// ---- item 7: stream_options of the wrong type is refused, naming the parameter ----

#[tokio::test]
async fn stream_options_of_the_wrong_type_is_400_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        (json!("x"), "stream_options"),
        (
            json!({"include_usage": "yes"}),
            "stream_options.include_usage",
        ),
        (json!(true), "stream_options"),
        (json!({"include_usage": 1}), "stream_options.include_usage"),
    ];
    for (opts, param) in cases {
        for stream in [true, false] {
            for anthropic in [false, true] {
                let mut body = app.chat_body("gpt-4o", stream);
                body["stream_options"] = opts.clone();
                let req = app
                    .http
                    .post(format!("{}/v1/chat/completions", app.base))
                    .json(&body);
                let r = authed(req, &app.user_key, anthropic).send().await.unwrap();
                let what = format!("{opts} stream={stream} anthropic={anthropic}");
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                assert_eq!(status, 400, "{what}: {text}");
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    v["error"]["message"].as_str().unwrap().contains(param),
                    "{what}: {v}"
                );
                if anthropic {
                    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}");
                } else {
                    assert_eq!(v["error"]["param"], param, "{what}: {v}");
                    assert_eq!(v["error"]["code"], "invalid_request", "{what}: {v}");
                }
            }
        }
    }
    // Well-typed values still work, and nothing refused reached the upstream.
    assert!(app.mock.ledger().is_empty());
    let mut body = app.chat_body("gpt-4o", true);
    body["stream_options"] = json!({"include_usage": false});
    assert_eq!(
        app.post_bearer("/v1/chat/completions", &body)
            .await
            .status(),
        200
    );
}

// ---- item 8: what hyper's HTTP/1 parser refuses never reaches the router ----

/// Sends raw bytes on a fresh connection; returns everything the server sent before closing.
async fn raw_exchange(base: &str, request: &[u8]) -> Vec<u8> {
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut out = Vec::new();
    // Reading to the end proves the server closed the connection.
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
        .await
        .expect("the server kept the connection open after a parse error")
        .unwrap();
    out
}

/// Pins today's behaviour (documented in README, "Known limits"): requests the HTTP/1 parser
/// refuses get hyper's own bare 400, with no body in either error shape, because hyper writes
/// that response itself and offers no hook to give it one. They change nothing and the
/// gateway keeps serving.
#[tokio::test]
async fn requests_the_http1_parser_refuses_get_a_bare_400_and_change_nothing() {
    let app = spawn_app().await;
    let records_before = app.records().await.len();
    let body = r#"{"model":"claude-sonnet-4-20250514","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let host = app.base.trim_start_matches("http://");
    let key = &app.user_key;
    let cases: [(&str, Vec<u8>); 2] = [
        (
            "control byte in a header value",
            format!(
                "POST /v1/messages HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\n\
                 anthropic-version: 2023-06-01\r\nanthropic-beta: x\x01y\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "negative content-length",
            format!(
                "POST /v1/messages HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\n\
                 anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
                 content-length: -1\r\n\r\n{body}"
            )
            .into_bytes(),
        ),
    ];
    for (name, request) in cases {
        let answer = raw_exchange(&app.base, &request).await;
        let text = String::from_utf8_lossy(&answer).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(head.starts_with("HTTP/1.1 400 "), "{name}: {text:?}");
        assert!(rest.is_empty(), "{name}: a body appeared: {text:?}");
        // Below the router: no request id, no record.
        assert!(
            !head.to_ascii_lowercase().contains("x-request-id"),
            "{name}: {text:?}"
        );
    }
    // Still serving, and the refused requests left nothing behind.
    let r = app
        .http
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.mock.ledger().is_empty());
    assert_eq!(app.records().await.len(), records_before);
}

// ---- item 15: the first-start banner gives each SDK its own base URL ----

#[tokio::test]
async fn first_start_banner_prints_each_sdks_base_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_LOG", "warn")
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env("TOLLGATE_SERVER__DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    // The banner ends with the Anthropic line; stop there (or after a generous timeout).
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        let done = line.contains("Anthropic SDK");
        out.push(line);
        if done {
            break;
        }
    }
    let text = out.join("\n");
    let addr = out
        .first()
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .unwrap_or_else(|| panic!("no address in the banner:\n{text}"))
        .trim_start_matches("http://")
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{text}"
    );
    let line = |sdk: &str| {
        out.iter()
            .find(|l| l.contains(sdk))
            .unwrap_or_else(|| panic!("no {sdk} line in the banner:\n{text}"))
            .clone()
    };
    assert!(
        line("OpenAI SDK").contains(&format!("\"http://{addr}/v1\"")),
        "{text}"
    );
    let anthropic = line("Anthropic SDK");
    assert!(
        anthropic.contains(&format!("\"http://{addr}\"")),
        "the Anthropic SDK adds /v1 itself:\n{text}"
    );
    assert!(!anthropic.contains(&format!("{addr}/v1")), "{text}");
    // The printed base URL is the one an Anthropic client needs: /v1/messages lives under it.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "{}", r.text().await.unwrap());
    child.start_kill().unwrap();
}

// ---- arithmetic on hostile numbers (found by tests/properties.rs in tollgate-core) ----

/// Decimal amounts with exponents at i32's limits are refused with 400 naming the field; the
/// exponent arithmetic used to overflow (a panic, so no answer at all, in a debug build).
#[tokio::test]
async fn grant_amounts_with_extreme_exponents_are_400_naming_the_field() {
    let app = spawn_app().await;
    for amount in [
        "1e2147483647",
        "1e-2147483648",
        "0.5e2147483647",
        "1e99999999999",
    ] {
        for anthropic in [false, true] {
            let req = app
                .http
                .post(format!(
                    "{}/admin/accounts/{}/credits",
                    app.base, app.account_id
                ))
                .json(&json!({"amount_usd": amount}));
            let r = authed(req, &app.admin_key, anthropic).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert_eq!(status, 400, "{amount}: {v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("amount_usd"),
                "{amount}: {v}"
            );
            if !anthropic {
                assert_eq!(v["error"]["param"], "amount_usd", "{amount}: {v}");
            }
        }
    }
    // Nothing was granted: the balance is the setup's 100 USD.
    let v: Value = app
        .http
        .get(format!("{}/v1/credits", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["balance_micro"], 100_000_000, "{v}");
}

/// An Anthropic upstream reporting `input_tokens` near 2^64 plus cache reads: the three input
/// fields used to be added unchecked (a panic in a debug build; in release a wrap to a tiny
/// number, i.e. a near-free request). Now the sum saturates, the request is answered and
/// recorded, and the record's input is not the wrapped value.
#[tokio::test]
async fn anthropic_input_plus_cache_reads_near_u64_max_does_not_wrap() {
    // The charge of such a record is enormous: one request per account (what a second charge
    // does to the balance is the upstream-bounds fix's business, not this test's).
    let app = spawn_app_with(Spawn {
        extra_toml: "\n[credits]\nenforce = false\n".into(),
        ..Spawn::default()
    })
    .await;
    for stream in [false, true] {
        let (_, _, key) = create_account_and_key(&app.http, &app.base, &app.admin_key).await;
        let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5, "stream": stream,
            "messages": [{"role": "user", "content": "hello there world"}],
            "mock": {"report_input_tokens": u64::MAX, "cached_tokens": 3}});
        let r = app
            .http
            .post(format!("{}/v1/messages", app.base))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "stream={stream}");
        let id = request_id(&r);
        let _ = r.bytes().await.unwrap();
        let rec = app.wait_record(&id).await;
        let input = rec["input_tokens"].as_u64().unwrap();
        let wrapped = u64::MAX.wrapping_add(3);
        assert!(
            input > wrapped,
            "stream={stream}: wrapped to {input}: {rec}"
        );
        assert!(rec["cost_nanos"].as_i64().unwrap() > 0, "{rec}");
        assert!(rec["charged_nanos"].as_i64().unwrap() >= 0, "{rec}");
    }
}

/// Absurd prices times absurd usage: the cost used to be a sum of i128 products that could
/// overflow (a panic in a debug build, a wrap to a negative cost in release). It saturates.
#[tokio::test]
async fn absurd_prices_times_absurd_usage_never_overflow_the_cost() {
    let app = spawn_app_with(Spawn {
        // The dearest price a config may set (an absurd one is refused at load: `pricing`).
        extra_toml: "\n[credits]\nenforce = false\n\n[prices.\"gpt-absurd\"]\n\
                     input = \"10000\"\noutput = \"10000\"\n"
            .into(),
        grant_usd: Some("1"),
        ..Spawn::default()
    })
    .await;
    let body = json!({"model": "gpt-absurd", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"report_input_tokens": u64::MAX, "report_output_tokens": u64::MAX}});
    let r = app.post_bearer("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let _ = r.bytes().await.unwrap();
    let rec = app.wait_record(&id).await;
    let cost = rec["cost_nanos"].as_i64().unwrap();
    assert!(cost > 0, "{rec}");
    assert!(rec["charged_nanos"].as_i64().unwrap() > 0, "{rec}");
    // The account's reports still answer (an overflowed or negative sum used to break them).
    let r = app
        .http
        .get(format!("{}/v1/usage", app.base))
        .bearer_auth(&app.user_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}
