//! The HTTP boundary's one error type. Handlers return `ApiError`; it becomes a response in one
//! place (`render`), in the caller's own error format: OpenAI's shape for `Authorization: Bearer`
//! callers, Anthropic's for `x-api-key` callers. Codes are stable strings a client may match on.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which error format the caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    OpenAi,
    Anthropic,
}

impl ErrorStyle {
    /// A non-empty `x-api-key` or an `anthropic-version` header means an Anthropic-style caller;
    /// otherwise OpenAI-style, except that an unauthenticated call to the Anthropic endpoint is
    /// answered Anthropic-style.
    pub fn detect(headers: &axum::http::HeaderMap, path: &str) -> Self {
        let has_x_api_key = headers
            .get("x-api-key")
            .is_some_and(|v| !v.as_bytes().is_empty());
        // Anthropic's SDKs always send `anthropic-version` (and 2.x authenticates with Bearer).
        let anthropic_sdk = headers.contains_key("anthropic-version");
        if has_x_api_key
            || anthropic_sdk
            || (path == "/v1/messages" && !headers.contains_key("authorization"))
        {
            ErrorStyle::Anthropic
        } else {
            ErrorStyle::OpenAi
        }
    }
}

/// Stable error codes. Status, OpenAI `type` and `code` are fixed per variant here, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidRequest,
    UnsupportedParameter,
    MissingApiKey,
    InvalidApiKey,
    ApiKeyInactive,
    UserInactive,
    InsufficientBalance,
    PermissionDenied,
    NotFound,
    ModelNotFound,
    MethodNotAllowed,
    RequestTooLarge,
    RateLimited,
    Internal,
    DbError,
    ProviderError,
    ModelUnavailable,
    UpstreamTimeout,
    /// An upstream's own 4xx/5xx, passed on with its status and message.
    Upstream(u16),
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        let s = match self {
            InvalidJson | InvalidRequest | UnsupportedParameter => 400,
            MissingApiKey | InvalidApiKey | ApiKeyInactive | UserInactive => 401,
            InsufficientBalance => 402,
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

    /// The `code` field.
    pub fn code(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidRequest => "invalid_request",
            UnsupportedParameter => "unsupported_parameter",
            MissingApiKey => "missing_api_key",
            InvalidApiKey => "invalid_api_key",
            ApiKeyInactive => "api_key_inactive",
            UserInactive => "user_inactive",
            InsufficientBalance => "insufficient_balance",
            PermissionDenied => "permission_denied",
            NotFound => "not_found",
            ModelNotFound => "model_not_found",
            MethodNotAllowed => "method_not_allowed",
            RequestTooLarge => "request_too_large",
            RateLimited => "rate_limit_exceeded",
            Internal => "internal_error",
            DbError => "db_error",
            ProviderError => "provider_error",
            ModelUnavailable => "model_unavailable",
            UpstreamTimeout => "upstream_timeout",
            Upstream(_) => "upstream_error",
        }
    }

    /// OpenAI-shape `type`, following CrossModel's table.
    pub fn openai_type(self) -> &'static str {
        match self.status().as_u16() {
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
    pub fn anthropic_type(self) -> &'static str {
        match self.status().as_u16() {
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
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
    /// Extra response headers (e.g. `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
        Self::new(ErrorCode::InvalidRequest, message).with_param(param)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// The response body in the caller's format.
    pub fn body(&self, style: ErrorStyle) -> serde_json::Value {
        match style {
            ErrorStyle::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.code.openai_type(),
                    "param": self.param,
                    "code": self.code.code(),
                }
            }),
            ErrorStyle::Anthropic => json!({
                "type": "error",
                "error": { "type": self.code.anthropic_type(), "message": self.message }
            }),
        }
    }

    /// Refused before the request body was read: the connection cannot be reused (the unread
    /// body would be taken for the next request), so the response says `Connection: close`.
    pub fn refused_before_body(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::MissingApiKey
                | ErrorCode::InvalidApiKey
                | ErrorCode::ApiKeyInactive
                | ErrorCode::UserInactive
                | ErrorCode::RequestTooLarge
                | ErrorCode::RateLimited
        )
    }

    /// The one place an error becomes an HTTP response.
    pub fn render(&self, style: ErrorStyle) -> Response {
        let mut resp = (self.code.status(), axum::Json(self.body(style))).into_response();
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        resp
    }
}

/// A handler's error becomes a placeholder response carrying the error; the request middleware
/// (`app::request_context`) renders it in the caller's style, since only it knows the style.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.code.status().into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

impl From<crate::ledger::StoreError> for ApiError {
    fn from(e: crate::ledger::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::new(ErrorCode::DbError, "the usage store is unavailable")
    }
}
