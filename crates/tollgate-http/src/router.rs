//! The router: every route, the per-request context middleware, and the one place an error
//! becomes a response in the caller's style.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tollgate_core::id::new_id;
use tollgate_core::Code;

use crate::error::{ApiError, ErrorStyle};
use crate::server::ClientAddr;
use crate::state::{RequestCtx, SharedState};
use crate::{admin, compat, proxy};

pub fn routes(state: SharedState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/messages", post(proxy::messages))
        .route("/v1/models", get(proxy::list_models))
        .nest("/admin", admin::routes())
        .merge(compat::routes())
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Gives every request an id and an error style, and renders any `ApiError` in that style: the
/// one place errors become HTTP responses.
async fn request_context(
    axum::extract::State(s): axum::extract::State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ctx = RequestCtx {
        request_id: new_id("req", 12),
        style: ErrorStyle::detect(req.headers(), req.uri().path()),
        started: Instant::now(),
        started_ms: s.engine.clock.now_ms(),
        stale: Arc::default(),
    };
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip());
    // An address that keeps presenting bad keys is refused before any key lookup.
    let blocked = ip.is_some_and(|ip| s.engine.limiter.auth_blocked(ip));
    let may_have_body = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let mut resp = if blocked {
        let mut err = ApiError::new(
            Code::RateLimited,
            "too many failed authentication attempts from this address; retry in a minute",
        );
        err.headers.push(("retry-after", "60".into()));
        err.into_response()
    } else {
        req.extensions_mut().insert(ctx.clone());
        next.run(req).await
    };
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        if err.code == Code::InvalidApiKey {
            if let Some(ip) = ip {
                s.engine.limiter.auth_failed(ip);
            }
        }
        resp = err.render(ctx.style);
        if may_have_body && err.refused_before_body() {
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
    }
    if ctx.is_stale() {
        resp.headers_mut()
            .insert("x-tollgate-stale", HeaderValue::from_static("true"));
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        if ctx.style == ErrorStyle::Anthropic {
            resp.headers_mut().insert("request-id", v.clone());
        }
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
