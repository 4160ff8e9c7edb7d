//! `spawn_app`: a gateway on port 0 over a fresh data dir, in front of an in-process mock
//! upstream, with an admin key and one account with a user key.

use mock_upstream::{MockConfig, MockServer};
use serde_json::{json, Value};
use tollgate::clock::ManualClock;
use tollgate::{Application, Config};

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub user_key: String,
    pub account_id: String,
    pub key_id: String,
    pub mock: MockServer,
    pub http: reqwest::Client,
    pub _dir: tempfile::TempDir,
}

pub fn config_toml(data_dir: &std::path::Path, mock_base: &str, listen: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
data_dir = "{data}"
upstream_timeout_secs = 2
drain_timeout_secs = 10
max_body_bytes = 65536

[providers.mock]
kind = "openai"
base_url = "{mock_base}/v1"
api_key = "sk-upstream-openai"
models = ["gpt-*", "text-embedding-*"]

[providers.mockant]
kind = "anthropic"
base_url = "{mock_base}/v1"
api_key = "sk-upstream-anthropic"
models = ["claude-*"]

[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-dead"
models = ["dead-*"]

[prices."dead-model"]
input = "1"
output = "1"
"#,
        data = data_dir.display()
    )
}

pub fn load_config(dir: &std::path::Path, mock_base: &str, extra_toml: &str) -> Config {
    let path = dir.join("tollgate.toml");
    let text = config_toml(&dir.join("data"), mock_base, "127.0.0.1:0") + extra_toml;
    std::fs::write(&path, text).unwrap();
    tollgate::config::load_from(Some(&path), &[]).unwrap()
}

/// Options for `spawn_app_with`.
#[derive(Default)]
pub struct Spawn {
    /// Appended to the test config (new tables only).
    pub extra_toml: String,
    /// Time as the gateway sees it; the system clock when `None`.
    pub clock: Option<ManualClock>,
    /// Credits granted to the test account, in USD; none when `None`.
    pub grant_usd: Option<&'static str>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Spawn {
        grant_usd: Some("100.00"),
        ..Spawn::default()
    })
    .await
}

pub async fn spawn_app_with(opts: Spawn) -> TestApp {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = load_config(dir.path(), &mock.base_url(), &opts.extra_toml);
    let app = match opts.clock {
        Some(c) => Application::build_with_clock(config, std::sync::Arc::new(c))
            .await
            .unwrap(),
        None => Application::build(config).await.unwrap(),
    };
    let base = format!("http://{}", app.local_addr().unwrap());
    let admin_key = app.bootstrap_admin_key.clone().unwrap().key;
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let (account_id, key_id, user_key) = create_account_and_key(&http, &base, &admin_key).await;
    if let Some(usd) = opts.grant_usd {
        grant(&http, &base, &admin_key, &account_id, usd).await;
    }
    TestApp {
        base,
        admin_key,
        user_key,
        account_id,
        key_id,
        mock,
        http,
        _dir: dir,
    }
}

pub async fn create_account_and_key(
    http: &reqwest::Client,
    base: &str,
    admin_key: &str,
) -> (String, String, String) {
    let account: Value = http
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(admin_key)
        .json(&json!({"name": "team"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account_id = account["id"].as_str().unwrap().to_string();
    let key: Value = http
        .post(format!("{base}/admin/accounts/{account_id}/keys"))
        .bearer_auth(admin_key)
        .json(&json!({"name": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        account_id,
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    )
}

impl TestApp {
    /// GET `path` with `key`; asserts 200 and returns the JSON body.
    pub async fn get_with(&self, key: &str, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }
    pub fn chat_body(&self, model: &str, stream: bool) -> Value {
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there world"}]})
    }

    pub async fn post_bearer(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.user_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn record(&self, request_id: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/admin/requests/{request_id}", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        Some(r.json().await.unwrap())
    }

    pub async fn records(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/admin/requests?limit=10000", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"].as_array().unwrap().clone()
    }

    /// Waits (briefly) for a record that is written after the response ends, e.g. a cancelled one.
    pub async fn wait_record(&self, request_id: &str) -> Value {
        for _ in 0..100 {
            if let Some(r) = self.record(request_id).await {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no record for {request_id}");
    }

    pub fn ledger_entry(&self, request_id: &str) -> mock_upstream::LedgerEntry {
        self.mock
            .ledger()
            .into_iter()
            .find(|e| e.request_id.as_deref() == Some(request_id))
            .unwrap_or_else(|| panic!("mock has no entry for {request_id}"))
    }
}

pub fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// Asserts that a record's tokens equal what the mock served.
pub fn assert_matches_ledger(record: &Value, e: &mock_upstream::LedgerEntry) {
    assert_eq!(
        record["input_tokens"],
        json!(e.input_tokens),
        "input: {record}"
    );
    assert_eq!(
        record["output_tokens"],
        json!(e.output_tokens),
        "output: {record}"
    );
    assert_eq!(
        record["cached_tokens"],
        json!(e.cached_tokens),
        "cached: {record}"
    );
    assert_eq!(
        record["reasoning_tokens"],
        json!(e.reasoning_tokens),
        "reasoning: {record}"
    );
}

/// Grants USD credits to an account (no idempotency key).
pub async fn grant(
    http: &reqwest::Client,
    base: &str,
    admin_key: &str,
    account_id: &str,
    usd: &str,
) -> Value {
    let r = http
        .post(format!("{base}/admin/accounts/{account_id}/credits"))
        .bearer_auth(admin_key)
        .json(&json!({"amount_usd": usd}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// From a credit audit: how many of the account's records are flagged `kind` and what they
/// charged (0, 0 when none are).
pub fn flagged(audit: &Value, kind: &str) -> (i64, i64) {
    audit["anomalies"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["anomaly"] == kind))
        .map_or((0, 0), |a| {
            (
                a["count"].as_i64().unwrap(),
                a["charged_nanos"].as_i64().unwrap(),
            )
        })
}

/// Starts the real binary; returns the child, its base URL and (first start only) the admin key.
pub async fn start_binary(
    config: &std::path::Path,
) -> (tokio::process::Child, String, Option<String>) {
    start_binary_env(config, &[]).await
}

/// As `start_binary`, with extra environment variables (e.g. `TOLLGATE_*` config overrides).
pub async fn start_binary_env(
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, Option<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("TOLLGATE_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let mut admin = None;
    while let Ok(Some(line)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), lines.next_line())
            .await
            .unwrap_or(Ok(None))
    {
        let t = line.trim();
        if t.starts_with("tg-") {
            admin = Some(t.to_string());
        }
    }
    (child, base, admin)
}

/// Stops a `start_binary` child the way an operator would (SIGTERM: a clean shutdown that
/// stores every record), and waits for it.
pub async fn stop_binary(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("the gateway stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
}

/// GET with a bearer key; the JSON body (asserting 200).
pub async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> Value {
    let r = http.get(url).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.unwrap()
}
