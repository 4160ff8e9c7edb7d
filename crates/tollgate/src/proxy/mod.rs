//! The proxy plane: the OpenAI- and Anthropic-compatible endpoints. Handlers only authenticate,
//! read and check the request, and pick the route; `exchange` runs the rest of the request's
//! lifecycle (forward, stream back, meter once at the end).

pub mod admission;
pub mod exchange;
pub mod routing;
pub mod sse;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::app::{AppState, RequestCtx};
use crate::config::ProviderKind;
use crate::error::{ApiError, ErrorCode, ErrorStyle};
use crate::metering::usage::Api;

pub async fn chat_completions(
    State(s): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, headers, body, Api::ChatCompletions).await
}

pub async fn embeddings(
    State(s): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, headers, body, Api::Embeddings).await
}

pub async fn messages(
    State(s): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proxy(s, ctx, headers, body, Api::Messages).await
}

async fn proxy(
    s: Arc<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Body,
    api: Api,
) -> Result<Response, ApiError> {
    let caller = s.keys.authenticate(&headers).await?;
    let bytes = read_body(body, &headers, s.config.server.max_body_bytes).await?;
    let req = ProxyRequest::parse(api, bytes)?;
    let provider = s
        .router
        .route(&req.model)
        .ok_or_else(|| model_not_found(&req.model))?;
    if api == Api::Messages && provider.kind != ProviderKind::Anthropic {
        return Err(ApiError::invalid(
            "model",
            format!(
                "model {} is served by an OpenAI-compatible provider; call /v1/chat/completions",
                req.model
            ),
        ));
    }
    if api == Api::Embeddings && provider.kind != ProviderKind::Openai {
        return Err(ApiError::invalid(
            "model",
            format!("model {} has no embeddings endpoint", req.model),
        ));
    }
    let price = s.prices.get(&req.model).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!(
                "model {} has no price; add [prices.\"{}\"] to the config",
                req.model, req.model
            ),
        )
        .with_param("model")
    })?;
    let admitted = admission::admit(&s, &caller, api, provider, price, &req).await?;
    let exchange = exchange::Exchange {
        state: s.clone(),
        ctx,
        caller,
        api,
        provider: provider.clone(),
        api_key: admitted.api_key,
        source: admitted.source,
        price: price.clone(),
        anthropic_version: header_str(&headers, "anthropic-version"),
        anthropic_beta: header_str(&headers, "anthropic-beta"),
        req,
        settlement: Some((admitted.hold, admitted.permit)),
        available_after_hold: admitted.available,
        rate_headers: admitted.rate_headers,
    };
    exchange.run().await
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn model_not_found(model: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ModelNotFound,
        format!("the model `{model}` does not exist or is not routed by this gateway"),
    )
    .with_param("model")
}

/// Reads the body up to `limit` bytes. A declared length over the limit is refused before any
/// byte is read; a chunked body is cut off as soon as it passes the limit.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("request body is larger than the {limit} byte limit"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid("body", format!("could not read the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Who pays the provider for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The gateway's provider key; the account's credits are charged the cost.
    Platform,
    /// The account's own provider key; credits are charged only the configured fee.
    User,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Platform => "platform",
            Source::User => "user",
        }
    }

    /// What the account's credits are charged for a request of this `cost`.
    pub fn charge(self, cost: i64, byok_fee_bps: i64) -> i64 {
        match self {
            Source::Platform => cost,
            Source::User => crate::metering::money::div_round_half_up(
                i128::from(cost) * i128::from(byok_fee_bps),
                10_000,
            ) as i64,
        }
    }
}

/// A checked request: what the gateway needs from the body, and the body to forward.
pub struct ProxyRequest {
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk of an OpenAI stream.
    pub client_wants_usage: bool,
    pub json: Value,
    /// Sent upstream: the client's bytes, untouched unless usage had to be requested.
    pub forward: Bytes,
}

impl ProxyRequest {
    /// The output cap the client set, if any.
    pub fn max_output_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| self.json.get(*k).and_then(Value::as_u64))
    }

    pub fn parse(api: Api, bytes: Bytes) -> Result<Self, ApiError> {
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        let Some(obj) = json.as_object() else {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "the request body must be a JSON object",
            ));
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "model",
                    "`model` must be a non-empty string",
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "model",
                    "missing required parameter: `model`",
                ))
            }
        };
        match api {
            Api::ChatCompletions | Api::Messages => match obj.get("messages") {
                Some(Value::Array(m)) if !m.is_empty() => {}
                Some(_) => {
                    return Err(ApiError::invalid(
                        "messages",
                        "`messages` must be a non-empty array",
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        "messages",
                        "missing required parameter: `messages`",
                    ))
                }
            },
            Api::Embeddings => {
                if !obj
                    .get("input")
                    .is_some_and(|i| i.is_string() || i.is_array())
                {
                    return Err(ApiError::invalid(
                        "input",
                        "missing required parameter: `input` (string or array)",
                    ));
                }
            }
        }
        if api == Api::Messages && !obj.get("max_tokens").is_some_and(Value::is_u64) {
            return Err(ApiError::invalid(
                "max_tokens",
                "missing required parameter: `max_tokens` (integer)",
            ));
        }
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid("stream", "`stream` must be a boolean")),
        };
        if stream && api == Api::Embeddings {
            return Err(
                ApiError::new(ErrorCode::UnsupportedParameter, "embeddings cannot stream")
                    .with_param("stream"),
            );
        }
        let client_wants_usage = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let forward = if api == Api::ChatCompletions && stream && !client_wants_usage {
            // Ask for the usage chunk; the client, which did not ask, will not see it.
            let mut changed = json.clone();
            if let Some(o) = changed.as_object_mut() {
                o.insert("stream_options".into(), json!({"include_usage": true}));
            }
            Bytes::from(serde_json::to_vec(&changed).map_err(ApiError::internal)?)
        } else {
            bytes
        };
        Ok(Self {
            model,
            stream,
            client_wants_usage,
            json,
            forward,
        })
    }
}

/// `GET /v1/models`: every priced model some provider routes, in the caller's format.
pub async fn list_models(
    State(s): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.keys.authenticate(&headers).await?;
    let mut models: Vec<_> = s
        .prices
        .iter()
        .filter(|e| s.router.route(&e.model).is_some())
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
