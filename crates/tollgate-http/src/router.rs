//! The router: every route, the per-request context middleware, and the one place an error
//! becomes a response in the caller's style.
//!
//! Routes are registered through `routes::Routes`, which records each one's method, path and
//! access as it adds it; [`route_table`] is built by the same code as [`routes`], so a route
//! cannot be served without being listed (the authorization test walks that list).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tollgate_core::Code;

use crate::error::{ApiError, ErrorStyle};
use crate::routes::{Access, RouteInfo, Routes};
use crate::state::{ClientAddr, RequestCtx, SharedState};
use crate::{admin, compat, dashboard, insights, proxy, webhooks};

/// Every route the gateway serves. Adding one is one line here, in `admin::routes` or in
/// `compat::routes`.
fn all_routes() -> Routes {
    use Access::*;
    Routes::new()
        .post("/v1/chat/completions", User, proxy::chat_completions)
        .post("/v1/embeddings", User, proxy::embeddings)
        .post("/v1/messages", User, proxy::messages)
        .post("/v1/responses", User, proxy::responses)
        .post("/v1/messages/count_tokens", User, proxy::count_tokens)
        .get("/v1/models", User, proxy::list_models)
        .get("/v1/usage/insights", User, insights::insights)
        .nest("/admin", admin::routes())
        .merge(compat::routes())
        .merge(webhooks::routes())
        .merge(dashboard::routes())
        .get("/health", Public, health)
        .get("/metrics", Public, crate::metrics::metrics)
}

async fn health() -> &'static str {
    "ok"
}

/// The routes `routes` serves, with their access, from the same list the router is built from.
pub fn route_table() -> Vec<RouteInfo> {
    all_routes().table()
}

/// The routes, without the per-request context: `app` puts that around the whole router.
pub fn routes(state: SharedState) -> Router {
    all_routes()
        .into_router()
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .with_state(state)
}

/// The service as served: `router` inside `request_context` and the body limit, applied once
/// around the whole router. (`Router::layer` wraps every route instead, and each layer's
/// boxed service was cloned and boxed again on every request: ~26 allocations per request in
/// the routing alone.)
pub fn app(
    state: SharedState,
    router: Router,
) -> impl tower_service::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    use tower_layer::Layer;
    let max_body = state.engine.config.server.max_body_bytes;
    let with_ctx = axum::middleware::from_fn_with_state(state, request_context).layer(router);
    axum::extract::DefaultBodyLimit::max(max_body).layer(with_ctx)
}

/// Gives every request an id and an error style, and renders any `ApiError` in that style: the
/// one place errors become HTTP responses.
async fn request_context(
    axum::extract::State(s): axum::extract::State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ctx = RequestCtx {
        request_id: tollgate_core::id::request_id(),
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

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn every_route_is_listed_once_with_its_access() {
        let table = route_table();
        let mut seen = std::collections::HashSet::new();
        for r in &table {
            assert!(
                seen.insert((r.method.clone(), r.path.clone())),
                "listed twice: {r:?}"
            );
        }
        let access = |m: Method, p: &str| {
            table
                .iter()
                .find(|r| r.method == m && r.path == p)
                .map(|r| r.access)
        };
        assert_eq!(access(Method::GET, "/health"), Some(Access::Public));
        assert_eq!(
            access(Method::POST, "/admin/accounts/{id}/credits"),
            Some(Access::Admin)
        );
        assert_eq!(
            access(Method::POST, "/v1/chat/completions"),
            Some(Access::User)
        );
    }

    /// The table is only the router's own if nothing builds routes around it: no module but
    /// this one makes an axum `Router` or adds a route to one.
    #[test]
    fn no_route_is_added_outside_the_recording_builder() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // This test names what it looks for; only code before it counts.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let is_builder = f.ends_with("routes.rs");
            for needle in [
                "Router::new",
                "Router::<",
                ".route(\"",
                ".route_service(",
                ".nest_service(",
            ] {
                let n = text.matches(needle).count();
                let allowed = usize::from(is_builder && needle == "Router::new");
                assert!(
                    n <= allowed,
                    "{} has `{needle}`: register routes through routes::Routes so the \
                     authorization test sees them",
                    f.display()
                );
            }
        }
    }
}
