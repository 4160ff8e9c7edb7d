//! `POST /v1/messages/count_tokens`: Anthropic's token counter, passed through. It generates
//! nothing and is not billed, so it takes no credit hold and leaves no usage record; it is
//! authenticated like every route and counts as a request toward the key's limits (rpm,
//! allowed models), through the same admission as metered calls (`Engine::admit_unbilled`).
//! What the upstream may send is bounded as for a metered call (`upstream_timeout_secs`,
//! `max_upstream_body_bytes`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::Extension;
use tollgate_core::record::Endpoint;
use tollgate_core::request::count_tokens_model;
use tollgate_core::Code;

use super::exchange::{
    add_headers, error_chain, header_str, read_capped, read_limited, upstream_message, BodyError,
};
use super::upstream::{self, Credential};
use crate::body::read_body;
use crate::error::{rate_headers, ApiError};
use crate::extract::Authed;
use crate::state::{RequestCtx, SharedState};

pub async fn count_tokens(
    State(s): State<SharedState>,
    Extension(ctx): Extension<RequestCtx>,
    Authed(caller): Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cfg = &s.engine.config.server;
    let bytes = read_body(body, &headers, cfg.max_body_bytes).await?;
    let model = count_tokens_model(&bytes)?;
    let provider = s.engine.router.resolve_count_tokens(&model)?.clone();
    let (api_key, rate) = s.engine.admit_unbilled(&caller, &provider, &model).await?;
    let rate = rate_headers(&rate);
    let with_rate = |mut e: ApiError| {
        e.headers.extend(rate.iter().cloned());
        e
    };
    let Some(url) = provider.count_tokens_url.clone() else {
        return Err(with_rate(ApiError::new(
            Code::ProviderError,
            format!("provider {} has an invalid base_url", provider.name),
        )));
    };
    let (version, beta) = (
        header_str(&headers, "anthropic-version"),
        header_str(&headers, "anthropic-beta"),
    );
    let out = upstream::request(
        url,
        &ctx.request_id,
        &Credential {
            kind: provider.kind,
            api: Endpoint::Messages,
            api_key: &api_key,
            anthropic_version: version.as_deref(),
            anthropic_beta: beta.as_deref(),
        },
    )
    .map_err(|e| with_rate(upstream::invalid_header(&provider.name, e)))?;
    let limit = Duration::from_secs(cfg.upstream_timeout_secs);
    let max_body = cfg.max_upstream_body_bytes;
    let name = provider.name.clone();
    // One deadline for the answer and its body, as for a metered call.
    let answered = tokio::time::timeout(limit, async {
        let resp = upstream::send_once(&s.http, out, bytes).await.map_err(|e| {
            ApiError::new(
                Code::ProviderError,
                format!("provider {name} is unreachable: {}", error_chain(&e)),
            )
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_limited(resp, 1024 * 1024).await.unwrap_or_default();
            let message = upstream_message(&body)
                .unwrap_or_else(|| format!("provider {name} answered {}", status.as_u16()));
            return Err(ApiError::new(Code::Upstream(status.as_u16()), message));
        }
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let body = read_capped(resp, max_body).await.map_err(|e| match e {
            BodyError::TooLarge => ApiError::new(
                Code::ProviderError,
                format!(
                    "provider {name} sent a response larger than {max_body} bytes (server.max_upstream_body_bytes)"
                ),
            ),
            BodyError::Broken(e) => ApiError::new(
                Code::ProviderError,
                format!("provider {name} broke off its response: {}", error_chain(&e)),
            ),
        })?;
        Ok((status, content_type, body))
    })
    .await;
    let (status, content_type, body) = match answered {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(with_rate(e)),
        Err(_) => {
            return Err(with_rate(ApiError::new(
                Code::UpstreamTimeout,
                format!(
                    "provider {} did not answer within {}s",
                    provider.name,
                    limit.as_secs()
                ),
            )))
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    add_headers(&mut response, &rate);
    Ok(response)
}
