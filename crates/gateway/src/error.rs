//! The one error type of the gateway. Each surface renders it in its own envelope and status code.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use protocol::WireError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    Authentication,
    Permission,
    NotFound,
    RateLimit,
    Budget,
    /// The upstream answered with an error of its own; `status` carries its status code.
    Upstream,
    /// The upstream answered with something that is not a valid response (non-JSON, truncated, reset).
    BadGateway,
    Timeout,
    /// No capacity right now (queue full, every deployment cooling down).
    Unavailable,
    Internal,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// For `Upstream`: the upstream's own status, kept faithfully.
    pub status: Option<StatusCode>,
    /// For `Upstream`: the upstream's own error type string (`rate_limit_error`, …), when it had one.
    pub upstream_type: Option<String>,
    /// For `Upstream`: the status the upstream really sent (before 5xx became 502).
    pub upstream_status: Option<u16>,
    /// `Retry-After`, in milliseconds (kept small: every `Result` carries this type).
    retry_after_ms: Option<std::num::NonZeroU64>,
    /// Headers the answer carries (the budget's, on a 402).
    pub headers: Option<Box<Vec<(&'static str, String)>>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            param: None,
            code: None,
            status: None,
            upstream_type: None,
            upstream_status: None,
            retry_after_ms: None,
            headers: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidRequest, message)
    }

    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Error {
        let mut e = Error::invalid(message);
        e.param = Some(param.into());
        e
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadGateway, message)
    }

    pub fn model_not_found(model: &str) -> Error {
        let mut e = Error::new(
            ErrorKind::NotFound,
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        e.code = Some("model_not_found".into());
        e.param = Some("model".into());
        e
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Error {
        self.code = Some(code.into());
        self
    }

    /// The status an `Upstream` error is answered with.
    pub fn with_status(mut self, s: StatusCode) -> Error {
        self.status = Some(s);
        self
    }

    pub fn with_retry_after(mut self, d: Duration) -> Error {
        self.set_retry_after(Some(d));
        self
    }

    /// How long the caller should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms.map(|ms| Duration::from_millis(ms.get()))
    }

    pub fn set_retry_after(&mut self, d: Option<Duration>) {
        self.retry_after_ms = d.and_then(|d| std::num::NonZeroU64::new(d.as_millis().max(1) as u64));
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::Permission => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Budget => StatusCode::PAYMENT_REQUIRED,
            ErrorKind::Upstream => self.status.unwrap_or(StatusCode::BAD_GATEWAY),
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` for this error.
    pub fn openai_type(&self) -> &str {
        const OPENAI_TYPES: &[&str] = &[
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "not_found_error",
            "rate_limit_error",
            "insufficient_quota",
            "server_error",
        ];
        if let (ErrorKind::Upstream, Some(t)) = (self.kind, self.upstream_type.as_deref())
            && OPENAI_TYPES.contains(&t)
        {
            return t;
        }
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::PayloadTooLarge | ErrorKind::NotFound => {
                "invalid_request_error"
            }
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Budget => "insufficient_quota",
            ErrorKind::Upstream => match self.status().as_u16() {
                400 | 404 | 409 | 413 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                _ => "server_error",
            },
            ErrorKind::BadGateway | ErrorKind::Timeout | ErrorKind::Internal => "server_error",
            ErrorKind::Unavailable => "service_unavailable",
        }
    }

    /// Anthropic's `error.type` for this error: the upstream's own type when it is an Anthropic type
    /// that goes with the status we answer (a `billing_error` stays one; an OpenAI upstream's
    /// `invalid_request_error` on a 404 becomes `not_found_error`).
    pub fn anthropic_type(&self) -> &str {
        if let (ErrorKind::Upstream, Some(t)) = (self.kind, self.upstream_type.as_deref())
            && protocol::anthropic::status_for_error_type(t) == self.status().as_u16()
        {
            return t;
        }
        match self.kind {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Budget => "billing_error",
            ErrorKind::Upstream => match self.status().as_u16() {
                400 | 409 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 | 503 => "overloaded_error",
                _ => "api_error",
            },
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::BadGateway | ErrorKind::Internal => "api_error",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<WireError> for Error {
    fn from(w: WireError) -> Error {
        let mut e = Error::invalid(w.message);
        e.param = w.param;
        e.code = w.code.map(str::to_string);
        e
    }
}
