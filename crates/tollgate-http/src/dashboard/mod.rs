//! The usage dashboard: a static single-page app (plain HTML, CSS and JavaScript, no build
//! step) served at `/dashboard` from assets embedded in the binary, which reads the usage APIs
//! that exist (`/v1/usage`, `/v1/credits`, `/v1/model-usage`, `/v1/webhooks`, `/v1/usage/export`,
//! the admin API) with the session cookie, plus the few thin reads in `api` that no existing
//! endpoint answers (a key list a user key may read, the request log with a status filter, a
//! stacked series, the credit history, in-flight requests, the all-accounts overview).
//!
//! - `assets`: the embedded files, their versioned URLs and headers (CSP, caching)
//! - `api`: sign-in / session / sign-out and the thin reads

pub mod api;
pub mod assets;

use axum::response::{IntoResponse, Redirect, Response};

use crate::routes::{Access, Routes};

pub fn routes() -> Routes {
    use Access::*;
    Routes::new()
        .get("/", Public, root)
        .get("/dashboard", Public, assets::page)
        .get("/dashboard/assets/{file}", Public, assets::asset)
        .post("/dashboard/api/session", User, api::sign_in)
        .get("/dashboard/api/session", Public, api::session)
        .delete("/dashboard/api/session", User, api::sign_out)
        .get("/dashboard/api/live", User, api::live)
        .get("/dashboard/api/series", User, api::series)
        .get("/dashboard/api/keys", User, api::keys)
        .get("/dashboard/api/requests", User, api::requests)
        .get("/dashboard/api/credits", User, api::credits)
        .get("/dashboard/api/accounts", Admin, api::accounts)
}

/// `GET /`: the dashboard is the gateway's only page.
async fn root() -> Response {
    Redirect::to("/dashboard").into_response()
}
