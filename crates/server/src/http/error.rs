//! Errors of the HTTP API: a small closed set of codes, one mapping to statuses, and a JSON body
//! `{"error": "...", "code": "..."}` with a message a person can act on.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The error codes clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MissingKey,
    WrongKey,
    Forbidden,
    PayloadTooLarge,
    UnsupportedEncoding,
    BadRequest,
    BadQuery,
    Busy,
    Overloaded,
    InProgress,
    NotReady,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingKey => "missing_key",
            ErrorCode::WrongKey => "wrong_key",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedEncoding => "unsupported_encoding",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::Busy => "busy",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::InProgress => "in_progress",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MissingKey => StatusCode::UNAUTHORIZED,
            ErrorCode::WrongKey | ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest | ErrorCode::BadQuery => StatusCode::BAD_REQUEST,
            ErrorCode::Busy => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded | ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InProgress => StatusCode::CONFLICT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before retrying, for the codes that invite a retry.
    fn retry_after_s(self) -> Option<u32> {
        match self {
            ErrorCode::Busy | ErrorCode::InProgress => Some(1),
            ErrorCode::Overloaded | ErrorCode::NotReady => Some(2),
            _ => None,
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The body of the answer: `{"error": message, "code": code}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message, "code": self.code.as_str() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code == ErrorCode::Internal {
            tracing::error!(error = %self.message, "internal error");
        }
        let mut resp = (self.code.status(), axum::Json(self.body())).into_response();
        if let Some(s) = self.code.retry_after_s() {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}
