//! Guest sessions: no accounts. A session is created with a display name and gets a user id, a
//! device id and an opaque access token; only the token's SHA-256 is stored. A session is kept
//! while it is used or in a room, and deleted once it has been neither for `sessions.idle_ttl`
//! ([`sweep_idle`]); its use is recorded when it authenticates, at most once an hour.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_federation::ids::{DeviceId, ServerName, UserId};
use confab_schema::models::Session;
use confab_schema::{DbPool, queries};
use rand::RngCore;

use crate::config::{SessionSettings, Settings};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::time::now_ms;

/// Who a socket (or a request) belongs to, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
}

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// A new session, with the only copy of its token.
#[derive(Debug, serde::Serialize)]
pub struct NewSession {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
    pub access_token: String,
}

/// Trims and checks a display name: 1–64 characters of any script, no control characters.
pub fn validate_display_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(ApiError::new(
            ErrorCode::BadDisplayName,
            format!("a display name must have 1 to {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::BadDisplayName,
            "a display name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// A fresh random token: 256 bits, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates a guest session.
pub async fn create_guest(
    pool: &DbPool,
    server: &ServerName,
    display_name: &str,
) -> Result<NewSession, ApiError> {
    let display_name = validate_display_name(display_name)?;
    let user_id = UserId::generate_guest(server);
    let device_id = DeviceId::generate();
    let token = new_token();
    let now = now_ms();
    let mut db = confab_schema::connect(pool).await?;
    queries::insert_session(
        &mut db,
        &Session {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            display_name: display_name.clone(),
            token_hash: hash_token(&token),
            created_ts: now,
            last_seen_ts: now,
        },
    )
    .await?;
    Ok(NewSession {
        user_id: user_id.to_string(),
        device_id: device_id.to_string(),
        display_name,
        access_token: token,
    })
}

/// The session a token belongs to. Lookup is by hash, so response time reveals nothing usable
/// about other tokens.
pub async fn authenticate(pool: &DbPool, token: &str) -> Result<Identity, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(unauthorized());
    }
    let mut db = confab_schema::connect(pool).await?;
    let session = queries::session_by_token_hash(&mut db, &hash_token(token))
        .await?
        .ok_or_else(unauthorized)?;
    let now = now_ms();
    let resolution = duration_ms(SessionSettings::LAST_SEEN_RESOLUTION);
    if now.saturating_sub(session.last_seen_ts) >= resolution {
        // The use counts towards keeping the session (`sessions.idle_ttl`). Failing to record
        // it only leaves it to the next authentication, so it does not fail this one.
        if let Err(err) =
            queries::touch_session(&mut db, &session.user_id, now, now - resolution).await
        {
            tracing::debug!(error = %err, "recording a session's use failed");
        }
    }
    Ok(Identity {
        user_id: session.user_id,
        device_id: session.device_id,
        display_name: session.display_name,
    })
}

/// Ends a session.
pub async fn logout(pool: &DbPool, who: &Identity) -> Result<(), ApiError> {
    let mut db = confab_schema::connect(pool).await?;
    queries::delete_session(&mut db, &who.user_id).await?;
    Ok(())
}

/// Most sessions deleted per statement, so that a backlog of idle ones (a first run after an
/// upgrade, say) is worked through in short transactions.
const SWEEP_BATCH: i64 = 1000;

/// Deletes the guest sessions (user id, device id, display name, token hash) that are in no
/// room and unused for `sessions.idle_ttl`, counting them in `confab_sessions_expired_total`;
/// called by the sweeper every `rooms.sweep_interval`. A failure is logged and left to the
/// next run. Returns how many it deleted.
pub async fn sweep_idle(pool: &DbPool, settings: &Settings, metrics: &Metrics) -> usize {
    let unused_since = now_ms().saturating_sub(duration_ms(settings.sessions.idle_ttl));
    let mut deleted = 0;
    loop {
        let batch = async {
            let mut db = confab_schema::connect(pool).await?;
            queries::delete_idle_sessions(&mut db, unused_since, SWEEP_BATCH).await
        }
        .await;
        match batch {
            Ok(users) => {
                deleted += users.len();
                metrics.sessions_expired.inc_by(users.len() as u64);
                if users.len() < usize::try_from(SWEEP_BATCH).unwrap_or(usize::MAX) {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "deleting idle sessions failed; retrying next sweep");
                break;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(sessions = deleted, "idle guest sessions deleted");
    }
    deleted
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "missing or unknown access token; create a session first",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(validate_display_name("  Zoë  ").unwrap(), "Zoë");
        assert_eq!(validate_display_name("山田太郎").unwrap(), "山田太郎");
        assert_eq!(
            validate_display_name(&"ش".repeat(64))
                .unwrap()
                .chars()
                .count(),
            64
        );
        for bad in ["", "   ", "a\u{0007}b", "line\nbreak"] {
            assert_eq!(
                validate_display_name(bad).unwrap_err().code,
                ErrorCode::BadDisplayName
            );
        }
        assert!(validate_display_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_token());
        assert_eq!(hash_token(&a).len(), 32);
    }
}
