//! The one error type of the federation API, in Matrix's shape: `{"errcode": "M_…", "error":
//! "…"}` (server-server API, "API standards"; codes from the client-server API's "Standard error
//! response"), with an explicit table from code to HTTP status. Federation peers are servers,
//! not Confab's browser clients, so they get Matrix's vocabulary rather than the client API's.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// The Matrix error codes the federation API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatrixErrorCode {
    /// Missing, malformed or unverifiable `Authorization: X-Matrix` (401).
    Unauthorized,
    /// The origin may not federate with this server (403).
    Forbidden,
    /// The request body is over `federation.max_request_bytes` (413).
    TooLarge,
    /// The request body is not JSON (400).
    NotJson,
    /// The request's JSON has no canonical form or the wrong shape (400).
    BadJson,
    /// The requested resource does not exist (404).
    NotFound,
    /// The endpoint does not exist, or federation is disabled (404).
    Unrecognized,
    /// Too many requests: the caller should wait `retry_after_ms` (429).
    LimitExceeded,
    /// Something failed on our side; details are in our log (500).
    Unknown,
}

impl MatrixErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::Forbidden => "M_FORBIDDEN",
            Self::TooLarge => "M_TOO_LARGE",
            Self::NotJson => "M_NOT_JSON",
            Self::BadJson => "M_BAD_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::Unrecognized => "M_UNRECOGNIZED",
            Self::LimitExceeded => "M_LIMIT_EXCEEDED",
            Self::Unknown => "M_UNKNOWN",
        }
    }

    /// The HTTP status an answer with this code carries.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotJson | Self::BadJson => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to another server.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {error}", code.as_str())]
pub struct MatrixError {
    /// What went wrong, for programs.
    pub code: MatrixErrorCode,
    /// What went wrong, for people.
    pub error: String,
    /// When to try again, for [`MatrixErrorCode::LimitExceeded`].
    pub retry_after_ms: Option<u64>,
}

impl MatrixError {
    /// An error with a code and a message.
    pub fn new(code: MatrixErrorCode, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
            retry_after_ms: None,
        }
    }

    /// The same error, telling the caller when to try again (Matrix's `retry_after_ms`).
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The answer for a failure whose details must stay in the log.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(context, error = %err, "internal federation error");
        Self::new(MatrixErrorCode::Unknown, "internal error")
    }
}

impl ResponseError for MatrixError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "errcode": self.code.as_str(), "error": self.error });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = json!(ms);
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_matrix_shape() {
        let err = MatrixError::new(MatrixErrorCode::TooLarge, "too big");
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.to_string(), "M_TOO_LARGE: too big");
    }

    #[tokio::test]
    async fn a_limit_says_when_to_come_back() {
        let err = MatrixError::new(MatrixErrorCode::LimitExceeded, "busy").retry_after(1000);
        let res = err.error_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(body["retry_after_ms"], 1000);
    }
}
