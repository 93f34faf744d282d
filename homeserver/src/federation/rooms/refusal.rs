//! How a room's origin refuses, and how its refusal reaches our user: Matrix's error shape plus
//! Confab's own code, so that the user's homeserver can pass the exact reason on to its client.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use confab_federation::ids::ServerName;
use confab_schema::DbError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorCode};
use crate::federation::client::OutboundError;

/// A refusal by a room's origin, in Matrix's error shape plus Confab's own code, so that the
/// user's homeserver can pass the exact reason on to its client.
#[derive(Debug)]
pub struct RoomRefusal(pub ApiError);

impl From<ApiError> for RoomRefusal {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<DbError> for RoomRefusal {
    fn from(err: DbError) -> Self {
        Self(err.into())
    }
}

impl std::fmt::Display for RoomRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for RoomRefusal {
    fn status_code(&self) -> StatusCode {
        self.0.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let errcode = match status.as_u16() {
            400 => "M_BAD_JSON",
            401 => "M_UNAUTHORIZED",
            403 => "M_FORBIDDEN",
            404 => "M_NOT_FOUND",
            413 => "M_TOO_LARGE",
            429 => "M_LIMIT_EXCEEDED",
            _ => "M_UNKNOWN",
        };
        let mut body = json!({
            "errcode": errcode,
            "error": self.0.reason,
            "code": self.0.code,
        });
        // Matrix's field for M_LIMIT_EXCEEDED, which Confab's own answers use too.
        if let Some(ms) = self.0.retry_after_ms {
            body["retry_after_ms"] = json!(ms);
        }
        HttpResponse::build(status).json(body)
    }
}

/// What a user sees when the room's origin cannot be asked.
pub fn unreachable(origin: &ServerName, err: &OutboundError) -> ApiError {
    if let OutboundError::Policy(policy) = err {
        return ApiError::new(
            ErrorCode::FederationDenied,
            format!("this homeserver does not federate with {origin}: {policy}"),
        );
    }
    tracing::warn!(%origin, error = %err, "room origin unreachable");
    let mut e = ApiError::new(
        ErrorCode::Unavailable,
        format!("the room's homeserver {origin} cannot be reached right now"),
    );
    e.retry_after_ms = Some(5000);
    e
}

/// The origin's refusal, with its own code when it sent one.
pub fn refusal(origin: &ServerName, status: u16, body: &Value) -> ApiError {
    let reason = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    let code = body
        .get("code")
        .and_then(|c| ErrorCode::deserialize(c).ok())
        .filter(|c| *c != ErrorCode::Internal);
    match code {
        Some(code) => ApiError {
            retry_after_ms: body.get("retry_after_ms").and_then(Value::as_u64),
            ..ApiError::new(code, reason)
        },
        // A Matrix refusal before any room rule ran, e.g. its deny list.
        None if status == 403 => ApiError::new(
            ErrorCode::FederationDenied,
            format!("the room's homeserver {origin} refused this server: {reason}"),
        ),
        None => {
            let mut e = ApiError::new(
                ErrorCode::Unavailable,
                format!("the room's homeserver {origin} answered {status}: {reason}"),
            );
            e.retry_after_ms = Some(5000);
            e
        }
    }
}
