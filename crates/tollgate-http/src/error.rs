//! The HTTP boundary's one error type. Handlers return `ApiError`; it becomes a response in one
//! place (`render`), in the caller's own error format: OpenAI's shape for `Authorization: Bearer`
//! callers, Anthropic's for `x-api-key` callers. Codes are stable strings a client may match on.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_core::error::RateStatus;
use tollgate_core::{Code, DomainError};

/// Which error format the caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    OpenAi,
    Anthropic,
}

impl ErrorStyle {
    /// A non-empty `x-api-key` or an `anthropic-version` header means an Anthropic-style caller;
    /// otherwise OpenAI-style, except that an unauthenticated call to an Anthropic endpoint
    /// (`/v1/messages`, `/v1/messages/count_tokens`) is answered Anthropic-style.
    pub fn detect(headers: &axum::http::HeaderMap, path: &str) -> Self {
        let has_x_api_key = headers
            .get("x-api-key")
            .is_some_and(|v| !v.as_bytes().is_empty());
        // Anthropic's SDKs always send `anthropic-version` (and 2.x authenticates with Bearer).
        let anthropic_sdk = headers.contains_key("anthropic-version");
        if has_x_api_key
            || anthropic_sdk
            || (is_anthropic_path(path) && !headers.contains_key("authorization"))
        {
            ErrorStyle::Anthropic
        } else {
            ErrorStyle::OpenAi
        }
    }
}

fn is_anthropic_path(path: &str) -> bool {
    path == "/v1/messages" || path == "/v1/messages/count_tokens"
}

/// The one mapping of domain codes to HTTP: status, OpenAI `type`, Anthropic `error.type`.
pub fn status(code: Code) -> StatusCode {
    use Code::*;
    let s = match code {
        InvalidJson | InvalidRequest | UnsupportedParameter => 400,
        MissingApiKey | InvalidApiKey | ApiKeyInactive | UserInactive => 401,
        InsufficientBalance | CreditHoldExceeded => 402,
        PermissionDenied => 403,
        NotFound | ModelNotFound => 404,
        MethodNotAllowed => 405,
        RequestTooLarge => 413,
        RateLimited => 429,
        Internal | DbError => 500,
        ProviderError => 502,
        ModelUnavailable => 503,
        UpstreamTimeout => 504,
        Upstream(s) => s,
    };
    StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// OpenAI-shape `type`, following CrossModel's table.
pub fn openai_type(code: Code) -> &'static str {
    match status(code).as_u16() {
        400 | 404 | 405 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        502 => "provider_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// Anthropic-shape `error.type`, from Anthropic's published table.
pub fn anthropic_type(code: Code) -> &'static str {
    match status(code).as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `x-ratelimit-*` headers of a key's rate windows.
pub fn rate_headers(rate: &RateStatus) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(w) = rate.requests {
        h.push(("x-ratelimit-limit-requests", w.limit.to_string()));
        h.push(("x-ratelimit-remaining-requests", w.remaining.to_string()));
        h.push(("x-ratelimit-reset-requests", format!("{}s", w.reset_secs)));
    }
    if let Some(w) = rate.tokens {
        h.push(("x-ratelimit-limit-tokens", w.limit.to_string()));
        h.push(("x-ratelimit-remaining-tokens", w.remaining.to_string()));
        h.push(("x-ratelimit-reset-tokens", format!("{}s", w.reset_secs)));
    }
    h
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub param: Option<String>,
    /// Extra response headers (e.g. `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            headers: Vec::new(),
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message).with_param(param)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        DomainError::internal(e).into()
    }

    /// The response body in the caller's format.
    pub fn body(&self, style: ErrorStyle) -> serde_json::Value {
        match style {
            ErrorStyle::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": openai_type(self.code),
                    "param": self.param,
                    "code": self.code.as_str(),
                }
            }),
            ErrorStyle::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic_type(self.code), "message": self.message }
            }),
        }
    }

    /// Refused before the request body was read: the connection cannot be reused (the unread
    /// body would be taken for the next request), so the response says `Connection: close`.
    pub fn refused_before_body(&self) -> bool {
        matches!(
            self.code,
            Code::MissingApiKey
                | Code::InvalidApiKey
                | Code::ApiKeyInactive
                | Code::UserInactive
                | Code::RequestTooLarge
                | Code::RateLimited
        )
    }

    /// The one place an error becomes an HTTP response.
    pub fn render(&self, style: ErrorStyle) -> Response {
        let mut resp = (status(self.code), axum::Json(self.body(style))).into_response();
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        resp
    }
}

/// A handler's error becomes a placeholder response carrying the error; the request middleware
/// (`router::request_context`) renders it in the caller's style, since only it knows the style.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = status(self.code).into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// Domain errors become HTTP errors here and nowhere else.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let mut headers = e.rate.as_deref().map(rate_headers).unwrap_or_default();
        if let Some(secs) = e.retry_after_secs {
            headers.push(("retry-after", secs.to_string()));
        }
        Self {
            code: e.code,
            message: e.message,
            param: e.param,
            headers,
        }
    }
}

impl From<tollgate_core::StoreError> for ApiError {
    fn from(e: tollgate_core::StoreError) -> Self {
        DomainError::from(e).into()
    }
}
