//! The data directory holds key hashes, provider-key ciphertext and every record: owner-only.

use serde_json::json;

use crate::helpers::*;

/// Every file under `dir` is 0600 and every directory 0700 (the list of offenders is empty).
#[cfg(unix)]
fn not_private(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        if mode != 0o700 {
            bad.push(format!("{} is a directory with mode {mode:o}", d.display()));
        }
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let mode = meta.permissions().mode() & 0o777;
                if mode != 0o600 {
                    bad.push(format!("{} has mode {mode:o}", path.display()));
                }
            }
        }
    }
    bad
}

#[cfg(unix)]
#[tokio::test]
async fn every_file_in_the_data_dir_is_owner_only() {
    let app =
        spawn_app_with(Spawn {
            extra_toml:
                "[security]\nencryption_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n"
                    .into(),
            grant_usd: Some("10"),
            ..Spawn::default()
        })
        .await;
    // A provider key (ciphertext in the database), requests (journal, records, rollups).
    let r = app
        .http
        .put(format!(
            "{}/admin/accounts/{}/provider-keys/mock",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .json(&json!({"api_key": "sk-own-key"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for stream in [false, true] {
        let r = app
            .post_bearer(
                "/v1/chat/completions",
                &app.chat_body("gpt-4o-mini", stream),
            )
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    assert_eq!(app.records().await.len(), 2);

    // An imported price file, written by the CLI into the same data dir.
    let prices = app._dir.path().join("prices.json");
    std::fs::write(
        &prices,
        r#"{"my-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "litellm_provider": "openai"}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(app._dir.path().join("tollgate.toml"))
        .args(["prices", "import"])
        .arg(&prices)
        .env("TOLLGATE_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let data = app._dir.path().join("data");
    for name in [
        "tollgate.db",
        "tollgate.db-wal",
        "journal",
        "prices.imported.json",
    ] {
        assert!(data.join(name).exists(), "{name} missing");
    }
    assert_eq!(not_private(&data), Vec::<String>::new());
}

/// A database and directories left readable by an older version are made owner-only on start.
#[cfg(unix)]
#[tokio::test]
async fn files_left_readable_are_made_owner_only_on_start() {
    use std::os::unix::fs::PermissionsExt;
    let mock = mock_upstream::MockServer::start(mock_upstream::MockConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("journal")).unwrap();
    // An empty file is an empty SQLite database.
    std::fs::write(data.join("tollgate.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("tollgate.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    for p in [data.clone(), data.join("journal")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = load_config(dir.path(), &mock.base_url(), "");
    let app = tollgate::Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let admin = app.bootstrap_admin_key.clone().unwrap().key;
    tokio::spawn(app.run_until_stopped());
    let r = reqwest::Client::new()
        .get(format!("{base}/admin/accounts"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(not_private(&data), Vec::<String>::new());
}
