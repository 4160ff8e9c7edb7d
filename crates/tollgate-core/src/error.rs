//! Domain errors with stable codes. Services return `DomainError`; the HTTP layer maps each
//! `Code` to a status and an error shape once (tollgate-http's `error.rs`); the CLI prints the
//! message. `StoreError` says what kind of failure a backend met, so callers can retry what is
//! transient and set aside what never will succeed.

/// Stable error codes: the `code` string a client may match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidJson,
    InvalidRequest,
    UnsupportedParameter,
    MissingApiKey,
    InvalidApiKey,
    ApiKeyInactive,
    UserInactive,
    InsufficientBalance,
    /// A stream was ended because its cost passed the credit held for it.
    CreditHoldExceeded,
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

impl Code {
    /// The `code` field.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidRequest => "invalid_request",
            UnsupportedParameter => "unsupported_parameter",
            MissingApiKey => "missing_api_key",
            InvalidApiKey => "invalid_api_key",
            ApiKeyInactive => "api_key_inactive",
            UserInactive => "user_inactive",
            InsufficientBalance => "insufficient_balance",
            CreditHoldExceeded => "credit_hold_exceeded",
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
}

/// A key's rate windows at admission, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateStatus {
    pub requests: Option<RateWindow>,
    pub tokens: Option<RateWindow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub code: Code,
    pub message: String,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    /// When to retry (429).
    pub retry_after_secs: Option<i64>,
    /// The key's rate windows, when a limit refused the request (boxed: errors stay small).
    pub rate: Option<Box<RateStatus>>,
}

impl DomainError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            retry_after_secs: None,
            rate: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400 naming the parameter.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message).with_param(param)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// Logged here with its cause; the caller sees only "internal error".
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(Code::Internal, "internal error")
    }
}

/// What kind of failure a store met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Busy, locked, unreachable, I/O: retrying later may succeed.
    Unavailable,
    /// A uniqueness or idempotency rule refused the write.
    Conflict,
    /// The data itself is refused (a constraint it breaks): retrying never succeeds.
    Invalid,
    /// What is stored cannot be read back as what it should be.
    Corrupt,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Unavailable, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Conflict, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Invalid, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Corrupt, message)
    }
    /// Worth retrying.
    pub fn is_transient(&self) -> bool {
        self.kind == StoreErrorKind::Unavailable
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e.kind {
            StoreErrorKind::Conflict => DomainError::new(Code::InvalidRequest, e.message),
            _ => {
                tracing::error!(error = %e, "store error");
                DomainError::new(Code::DbError, "the usage store is unavailable")
            }
        }
    }
}
