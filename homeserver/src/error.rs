//! The one error type of the client API: a stable machine-readable code, a human reason, and an
//! explicit table from code to HTTP status. Internal detail (SQL, IO) is logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use confab_schema::DbError;
use confab_schema::diesel_error;
use serde::Serialize;

/// Machine-readable error codes; `homeserver/PROTOCOL.md` lists what each means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    BadDisplayName,
    BadRoomId,
    BadUserId,
    Unauthorized,
    NotHost,
    NotMember,
    Forbidden,
    FederationDenied,
    RoomLocked,
    InviteRequired,
    Kicked,
    InviteInvalid,
    InviteExpired,
    InviteRevoked,
    InviteUsedUp,
    /// The room is locked and has a lobby: the caller's knock waits for a host's answer.
    Knocking,
    /// A host refused the caller's knock.
    KnockRefused,
    RoomNotFound,
    NotFound,
    RoomFull,
    TooManyRooms,
    /// The caller already has the most live invite links one member may have in a room.
    TooManyInvites,
    /// The room's lobby already holds the most knocks it may.
    TooManyKnocks,
    RateLimited,
    TooManyConnections,
    FrameTooLarge,
    EventTooLarge,
    BodyTooLarge,
    UnknownType,
    NotSubscribed,
    DeviceNotInRoom,
    AlreadyAuthenticated,
    NotAuthenticated,
    /// The admin API is off: no `admin.token` is configured.
    AdminDisabled,
    /// The caller's address may not use the admin API (`admin.allowed_addresses`).
    AddressNotAllowed,
    /// The WebSocket handshake came from a web origin the server does not allow.
    OriginNotAllowed,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for the tests that keep `homeserver/PROTOCOL.md` complete.
    pub const ALL: [ErrorCode; 39] = {
        use ErrorCode::*;
        [
            BadRequest,
            BadDisplayName,
            BadRoomId,
            BadUserId,
            Unauthorized,
            NotHost,
            NotMember,
            Forbidden,
            FederationDenied,
            RoomLocked,
            InviteRequired,
            Kicked,
            InviteInvalid,
            InviteExpired,
            InviteRevoked,
            InviteUsedUp,
            Knocking,
            KnockRefused,
            RoomNotFound,
            NotFound,
            RoomFull,
            TooManyRooms,
            TooManyInvites,
            TooManyKnocks,
            RateLimited,
            TooManyConnections,
            FrameTooLarge,
            EventTooLarge,
            BodyTooLarge,
            UnknownType,
            NotSubscribed,
            DeviceNotInRoom,
            AlreadyAuthenticated,
            NotAuthenticated,
            AdminDisabled,
            AddressNotAllowed,
            OriginNotAllowed,
            Unavailable,
            Internal,
        ]
    };

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            BadDisplayName => "bad_display_name",
            BadRoomId => "bad_room_id",
            BadUserId => "bad_user_id",
            Unauthorized => "unauthorized",
            NotHost => "not_host",
            Forbidden => "forbidden",
            FederationDenied => "federation_denied",
            NotMember => "not_member",
            RoomLocked => "room_locked",
            InviteRequired => "invite_required",
            Kicked => "kicked",
            InviteInvalid => "invite_invalid",
            InviteExpired => "invite_expired",
            InviteRevoked => "invite_revoked",
            InviteUsedUp => "invite_used_up",
            Knocking => "knocking",
            KnockRefused => "knock_refused",
            RoomNotFound => "room_not_found",
            NotFound => "not_found",
            RoomFull => "room_full",
            TooManyRooms => "too_many_rooms",
            TooManyInvites => "too_many_invites",
            TooManyKnocks => "too_many_knocks",
            RateLimited => "rate_limited",
            TooManyConnections => "too_many_connections",
            FrameTooLarge => "frame_too_large",
            EventTooLarge => "event_too_large",
            BodyTooLarge => "body_too_large",
            UnknownType => "unknown_type",
            NotSubscribed => "not_subscribed",
            DeviceNotInRoom => "device_not_in_room",
            AlreadyAuthenticated => "already_authenticated",
            NotAuthenticated => "not_authenticated",
            AdminDisabled => "admin_disabled",
            AddressNotAllowed => "address_not_allowed",
            OriginNotAllowed => "origin_not_allowed",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }

    /// The HTTP status a REST answer with this code carries.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BadRequest | BadDisplayName | BadRoomId | BadUserId | UnknownType
            | AlreadyAuthenticated => StatusCode::BAD_REQUEST,
            Unauthorized | NotAuthenticated => StatusCode::UNAUTHORIZED,
            NotHost | NotMember | Forbidden | FederationDenied | RoomLocked | InviteRequired
            | Kicked | InviteInvalid | InviteExpired | InviteRevoked | InviteUsedUp | Knocking
            | KnockRefused | NotSubscribed | AdminDisabled | AddressNotAllowed
            | OriginNotAllowed => StatusCode::FORBIDDEN,
            RoomNotFound | NotFound | DeviceNotInRoom => StatusCode::NOT_FOUND,
            RoomFull => StatusCode::CONFLICT,
            TooManyRooms | TooManyInvites | TooManyKnocks | RateLimited | TooManyConnections => {
                StatusCode::TOO_MANY_REQUESTS
            }
            FrameTooLarge | EventTooLarge | BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// When a client is told to try again after the database was unavailable: long enough not to
/// hammer a server that is recovering, short enough that a restart of Postgres goes unnoticed.
pub const UNAVAILABLE_RETRY_MS: u64 = 1000;

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct ApiError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub reason: String,
    /// For `rate_limited` and `unavailable`: when to try again.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with a code and a reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            retry_after_ms: None,
        }
    }

    /// A `bad_request` error.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, reason)
    }

    /// The answer for a room that does not exist (or no longer does).
    pub fn room_not_found() -> Self {
        Self::new(
            ErrorCode::RoomNotFound,
            "no such room: it was closed, expired or never existed",
        )
    }

    /// The answer for a failure whose details must stay in the log.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(context, error = %err, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }

    /// The body sent to clients.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            code: self.code,
            reason: &self.reason,
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// The JSON of an error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            let mut answer = ApiError::new(
                ErrorCode::Unavailable,
                "the database is unavailable; try again shortly",
            );
            answer.retry_after_ms = Some(UNAVAILABLE_RETRY_MS);
            answer
        } else {
            ApiError::internal("database", &err)
        }
    }
}

impl From<diesel_error::Error> for ApiError {
    fn from(err: diesel_error::Error) -> Self {
        DbError::from(err).into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(ms) = self.retry_after_ms {
            res.insert_header(("Retry-After", ms.div_ceil(1000).to_string()));
        }
        res.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_protocol_table() {
        let protocol = include_str!("../PROTOCOL.md");
        let table = &protocol[protocol.find("## Error codes").unwrap()..];
        for code in ErrorCode::ALL {
            assert!(
                table.contains(&format!("`{}`", code.as_str())),
                "{} is not in PROTOCOL.md's error table",
                code.as_str()
            );
        }
    }

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
    }
}
