//! Extractors: authentication happens here, once, for every route. A handler that takes
//! `Authed` has a valid caller (key known, not revoked, not expired, account enabled); `Admin`
//! also requires an admin key; `UsageQuery` adds the parsed query string.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use tollgate_core::account::Caller;
use tollgate_core::attribution::parse_tag;
use tollgate_core::{Code, DomainError};
use tollgate_engine::reports::Scope;

use crate::error::ApiError;
use crate::params::Params;
use crate::session;
use crate::state::{RequestCtx, SharedState};

/// The presented credential: `x-api-key: K` or `Authorization: Bearer K`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        if !k.is_empty() {
            return Some(k.trim());
        }
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Some(token.trim())
    } else {
        None
    }
}

/// An authenticated caller (any role). The credential is a header key or, failing that, a
/// dashboard session cookie; a request authenticated by cookie that changes something must
/// carry the session's CSRF token in `x-csrf-token` (a page of another origin cannot read it).
/// The session, if any, is left in the request's extensions for the dashboard's handlers.
pub struct Authed(pub Caller);

impl FromRequestParts<SharedState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &SharedState) -> Result<Self, ApiError> {
        if let Some(key) = presented_key(&parts.headers) {
            return Ok(Authed(s.engine.keys.authenticate(Some(key)).await?));
        }
        let Some(id) = session::cookie_id(&parts.headers) else {
            return Ok(Authed(s.engine.keys.authenticate(None).await?));
        };
        let Some(sess) = s.sessions.get(id, s.engine.clock.now_ms()) else {
            // Not `invalid_api_key`: a browser polling with a stale cookie must not trip the
            // failed-authentication brake.
            return Err(ApiError::new(
                Code::MissingApiKey,
                "the dashboard session has expired or was signed out: sign in again",
            ));
        };
        // The key is checked on every request: a revoked key's session ends with it.
        let caller = s
            .engine
            .keys
            .authenticate_hash(sess.key_hash.clone())
            .await?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if !safe && !token.is_some_and(|t| session::tokens_match(t, &sess.csrf)) {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "a request authenticated by the session cookie must send the session's \
                 `x-csrf-token` (GET /dashboard/api/session)",
            ));
        }
        parts.extensions.insert(sess);
        Ok(Authed(caller))
    }
}

/// An authenticated admin caller; a user key gets 403.
pub struct Admin(pub Caller);

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &SharedState) -> Result<Self, ApiError> {
        let Authed(caller) = Authed::from_request_parts(parts, s).await?;
        if !caller.is_admin() {
            return Err(DomainError::new(
                Code::PermissionDenied,
                "this endpoint needs an admin key",
            )
            .into());
        }
        Ok(Admin(caller))
    }
}

/// The most end users one usage query may name.
const MAX_USER_FILTER: usize = 100;

/// A usage-API request: the caller and the query string's parameters.
pub struct UsageQuery {
    pub caller: Caller,
    pub p: Params,
    ctx: Option<RequestCtx>,
}

impl FromRequestParts<SharedState> for UsageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &SharedState) -> Result<Self, ApiError> {
        let Authed(caller) = Authed::from_request_parts(parts, s).await?;
        Ok(UsageQuery {
            caller,
            p: Params::parse(parts.uri.query()),
            ctx: parts.extensions.get::<RequestCtx>().cloned(),
        })
    }
}

impl UsageQuery {
    /// Whose usage this request reads (`account_id` / `key_id`, checked against the caller).
    pub async fn scope(&self, s: &SharedState) -> Result<Scope, ApiError> {
        let (users, tag) = self.attribution()?;
        Ok(s.engine
            .scope(
                &self.caller,
                self.p.get("account_id")?,
                self.p.get("key_id")?,
            )
            .await?
            .attributed(users, tag)?)
    }

    /// `user` (one or more end users) and `tag` (one `key=value`), checked.
    fn attribution(&self) -> Result<(Vec<String>, Option<String>), ApiError> {
        let users = self.p.users("user")?;
        if users.len() > MAX_USER_FILTER {
            return Err(ApiError::invalid(
                "user",
                format!("at most {MAX_USER_FILTER} users per query"),
            ));
        }
        let tag = match self.p.get("tag")? {
            None => None,
            Some(t) => {
                let (k, v) =
                    parse_tag(t).map_err(|e| ApiError::invalid("tag", format!("`tag`: {e}")))?;
                Some(format!("{k}={v}"))
            }
        };
        Ok((users, tag))
    }

    /// Waits until the caller's finished requests are in the store; if the store is behind, the
    /// response is marked stale.
    pub async fn read_your_writes(&self, s: &SharedState) {
        match &self.ctx {
            Some(ctx) => ctx.read_your_writes(s).await,
            None => {
                s.engine.read_your_writes().await;
            }
        }
    }
}

/// A request body read up to `server.max_body_bytes`; past it, 413 in the caller's error shape
/// (axum's own limit would answer in plain text).
pub struct LimitedBody(pub Bytes);

impl FromRequest<SharedState> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &SharedState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let limit = s.engine.config.server.max_body_bytes;
        Ok(LimitedBody(
            crate::body::read_body(body, &parts.headers, limit).await?,
        ))
    }
}
