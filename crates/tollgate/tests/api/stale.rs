//! A usage answer read while the store is behind says so: `x-tollgate-stale: true`.

use std::time::Duration;

use futures_util::future::join_all;
use sha2::{Digest, Sha256};

use crate::helpers::*;

/// Every route that reads usage from the store, with the key that may call it.
fn usage_routes(app: &TestApp) -> Vec<(String, String)> {
    let cfg = {
        let h = hex::encode(Sha256::digest(b"mock/gpt-4o-mini"));
        format!("cfg_{}", &h[..12])
    };
    let user = [
        "/v1/usage".to_string(),
        "/v1/usage/models".into(),
        "/v1/usage/export".into(),
        "/v1/usage/export?format=csv".into(),
        "/v1/user/models".into(),
        "/v1/user/me".into(),
        "/v1/user/logs".into(),
        "/v1/model-usage".into(),
        format!("/v1/model-usage/{cfg}"),
    ];
    let admin = [
        "/v1/organization/usage/completions?start_time=0".to_string(),
        "/v1/organization/usage/embeddings?start_time=0".into(),
        "/v1/organization/costs?start_time=0".into(),
        "/admin/requests".into(),
        format!("/admin/requests/{}", "req_none"),
        format!("/admin/accounts/{}/credits", app.account_id),
    ];
    user.into_iter()
        .map(|p| (p, app.user_key.clone()))
        .chain(admin.into_iter().map(|p| (p, app.admin_key.clone())))
        .collect()
}

/// (path, status, x-tollgate-stale) of every usage route, all at once.
async fn stale_headers(app: &TestApp) -> Vec<(String, u16, Option<String>)> {
    join_all(usage_routes(app).into_iter().map(|(path, key)| async move {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let stale = r
            .headers()
            .get("x-tollgate-stale")
            .map(|v| v.to_str().unwrap().to_string());
        let status = r.status().as_u16();
        // Read streamed bodies (the export) to the end.
        let _ = r.bytes().await.unwrap();
        (path, status, stale)
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_read_while_the_database_is_locked_is_marked_stale() {
    let app = spawn_app().await;
    let r = app
        .post_bearer("/v1/chat/completions", &app.chat_body("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status(), 200);

    // Current data: no header anywhere.
    for (path, status, stale) in stale_headers(&app).await {
        let want = if path.starts_with("/admin/requests/") {
            404
        } else {
            200
        };
        assert_eq!(status, want, "{path}");
        assert_eq!(stale, None, "{path} is current");
    }

    // Another process holds the write lock; a request finishes that the store cannot take yet.
    let db = rusqlite::Connection::open(app._dir.path().join("data/tollgate.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = app
        .post_bearer("/v1/chat/completions", &app.chat_body("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status(), 200);
    let started = std::time::Instant::now();
    for (path, status, stale) in stale_headers(&app).await {
        let want = if path.starts_with("/admin/requests/") {
            404
        } else {
            200
        };
        assert_eq!(status, want, "{path}");
        assert_eq!(
            stale.as_deref(),
            Some("true"),
            "{path} answered while behind"
        );
    }
    // Answered after the bounded wait, not hanging on the lock.
    assert!(started.elapsed() < Duration::from_secs(10));
    db.execute_batch("COMMIT").unwrap();

    // Caught up: current again, and the request made while locked is there.
    for (path, _, stale) in stale_headers(&app).await {
        assert_eq!(stale, None, "{path} is current again");
    }
    assert_eq!(app.records().await.len(), 2);
}
