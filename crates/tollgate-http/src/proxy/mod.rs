//! The proxy endpoints: `/v1/chat/completions`, `/v1/embeddings`, `/v1/responses`,
//! `/v1/messages` (OpenAI and Anthropic wire formats), `/v1/models`, and the unbilled
//! `/v1/messages/count_tokens` (`count_tokens.rs`). A metered request goes through named phases:
//! authenticate (extractor) → read and check the body → route → price → admit (engine) →
//! exchange (forward, pass the answer back, `Ticket::settle` exactly once at the end).
//! An authenticated request refused before the exchange is recorded too (status `refused`), so
//! request counts include it; an unauthenticated one leaves nothing.

pub mod client;
mod count_tokens;
pub mod exchange;
pub mod sse;
pub mod upstream;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tollgate_core::account::Caller;
use tollgate_core::attribution::{Attribution, TAGS_HEADER, USER_HEADER};
use tollgate_core::fingerprint::Fingerprints;
use tollgate_core::record::Endpoint;
use tollgate_core::request::ProxyRequest;
use tollgate_core::Code;
use tollgate_engine::settle::Arrival;

use crate::body::read_body;
use crate::error::{status, ApiError, ErrorStyle};
use crate::extract::Authed;
use crate::state::{RequestCtx, SharedState};

pub use count_tokens::count_tokens;

pub async fn chat_completions(
    s: State<SharedState>,
    ctx: Extension<RequestCtx>,
    caller: Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, caller, headers, body, Endpoint::ChatCompletions).await
}

pub async fn embeddings(
    s: State<SharedState>,
    ctx: Extension<RequestCtx>,
    caller: Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, caller, headers, body, Endpoint::Embeddings).await
}

pub async fn messages(
    s: State<SharedState>,
    ctx: Extension<RequestCtx>,
    caller: Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, caller, headers, body, Endpoint::Messages).await
}

pub async fn responses(
    s: State<SharedState>,
    ctx: Extension<RequestCtx>,
    caller: Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, caller, headers, body, Endpoint::Responses).await
}

/// The one proxy handler; the metered routes differ only in their endpoint.
async fn proxy(
    State(s): State<SharedState>,
    Extension(ctx): Extension<RequestCtx>,
    Authed(caller): Authed,
    headers: HeaderMap,
    body: Body,
    api: Endpoint,
) -> Result<Response, ApiError> {
    let header = |name| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    let mut who = match Attribution::from_headers(header(USER_HEADER), header(TAGS_HEADER)) {
        Ok(a) => a,
        Err(e) => {
            let none = Attribution::default();
            let none = (none, Fingerprints::default());
            return Err(refused(&s, &ctx, &caller, api, None, false, none, e.into()).await);
        }
    };
    let bytes = match read_body(body, &headers, s.engine.config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let who = (who, Fingerprints::default());
            return Err(refused(&s, &ctx, &caller, api, None, false, who, e).await);
        }
    };
    let mut req = match ProxyRequest::parse(api, bytes.clone()) {
        Ok(r) => r,
        Err(e) => {
            let model = model_of(&bytes);
            let (model, who) = (model.as_deref(), (who, Fingerprints::default()));
            return Err(refused(&s, &ctx, &caller, api, model, false, who, e.into()).await);
        }
    };
    who.or_body_user(req.user.take());
    let fingerprints = s.engine.fingerprints(&caller.account_id, api, &req.json);
    let admitted = async {
        let provider = s.engine.router.resolve(&req.model, api)?.clone();
        let price = s.engine.prices.lookup(&req.model)?;
        let admitted = s
            .engine
            .admit(
                arrival(&ctx, (who.clone(), fingerprints)),
                &caller,
                api,
                &provider,
                price,
                &mut req,
            )
            .await?;
        Ok::<_, ApiError>((provider, admitted))
    }
    .await;
    match admitted {
        Ok((provider, admitted)) => {
            exchange::Exchange::new(s.clone(), api, provider, &headers, req, admitted)
                .run()
                .await
        }
        Err(e) => {
            let (model, stream) = (Some(req.model.as_str()), req.stream);
            let who = (who, fingerprints);
            Err(refused(&s, &ctx, &caller, api, model, stream, who, e).await)
        }
    }
}

/// The request as it arrived: who it is for and, once its body is read, its fingerprints.
fn arrival(ctx: &RequestCtx, (attribution, fingerprints): (Attribution, Fingerprints)) -> Arrival {
    Arrival {
        request_id: ctx.request_id.clone(),
        started: ctx.started,
        started_ms: ctx.started_ms,
        attribution,
        fingerprints,
    }
}

/// An authenticated request answered here, without an exchange: record it (`refused`, zero
/// tokens and cost) and give a 402 the balance the account has available.
#[allow(clippy::too_many_arguments)]
async fn refused(
    s: &SharedState,
    ctx: &RequestCtx,
    caller: &Caller,
    api: Endpoint,
    model: Option<&str>,
    streamed: bool,
    who: (Attribution, Fingerprints),
    mut err: ApiError,
) -> ApiError {
    let http_status = status(err.code).as_u16();
    s.engine.record_refused(
        &arrival(ctx, who),
        caller,
        api,
        model,
        streamed,
        http_status,
        err.code.as_str(),
    );
    if err.code == Code::InsufficientBalance {
        if let Ok(available) = s.engine.spendable_nanos(&caller.account_id).await {
            let credits = s.engine.credits.nanos_to_credits(available);
            err.headers
                .push(("x-credits-remaining", credits.to_string()));
        }
    }
    err
}

/// The model a body names, for the record of a body refused as invalid.
fn model_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    serde_json::from_slice::<ModelOnly>(bytes).ok()?.model
}

/// `GET /v1/models`: every priced model some provider routes, in the caller's format.
pub async fn list_models(
    State(s): State<SharedState>,
    Extension(ctx): Extension<RequestCtx>,
    _caller: Authed,
) -> Result<Response, ApiError> {
    let mut models: Vec<_> = s
        .engine
        .prices
        .iter()
        .filter(|e| s.engine.router.route(&e.model).is_some())
        .collect();
    models.sort_by(|a, b| a.model.cmp(&b.model));
    let body = match ctx.style {
        ErrorStyle::OpenAi => json!({
            "object": "list",
            "data": models.iter().map(|m| json!({
                "id": m.model, "object": "model", "created": 0, "owned_by": m.owned_by,
            })).collect::<Vec<_>>(),
        }),
        ErrorStyle::Anthropic => json!({
            "data": models.iter().map(|m| json!({
                "type": "model", "id": m.model, "display_name": m.display_name,
                "created_at": "1970-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": models.first().map(|m| m.model.clone()),
            "last_id": models.last().map(|m| m.model.clone()),
        }),
    };
    Ok(Json(body).into_response())
}
