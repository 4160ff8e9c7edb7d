//! `GET /metrics`: the engine's Prometheus metrics in the text exposition format, behind an
//! optional bearer token (`metrics.token`). 404 when `metrics.enabled` is off.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tollgate_core::Code;

use crate::error::ApiError;
use crate::extract::presented_key;
use crate::state::SharedState;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(
    State(s): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(m) = &s.engine.metrics else {
        return Err(ApiError::new(
            Code::NotFound,
            "metrics are off (metrics.enabled = false)",
        ));
    };
    if let Some(token) = &s.engine.config.metrics.token {
        // Compared as digests: equal length, and no early exit on the token's own bytes.
        let given = presented_key(&headers).map(|k| Sha256::digest(k.as_bytes()));
        if given != Some(Sha256::digest(token.as_bytes())) {
            return Err(ApiError::new(
                Code::InvalidApiKey,
                "/metrics needs Authorization: Bearer <metrics.token>",
            ));
        }
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response())
}
