//! The idle countdown, in one place: a room with nobody connected is deleted `rooms.idle_ttl`
//! after the last one left. The room's owner says when it is idle ([`super::room::RoomState::is_idle`]);
//! this module writes that to the room's row (`expires_ts`), restarts countdowns after a restart,
//! and finds the rooms whose time is up for the sweeper.
//!
//! The row is written by [`IdleWriter::sync`], which reads the owner's current answer under the
//! room's writer lock and writes only a change: concurrent callers are serialized and the last
//! write always reflects the latest state, so the countdown can never be left running while
//! someone is connected, nor stopped while nobody is.

use std::time::Duration;

use confab_schema::{DbPool, queries};

use crate::error::ApiError;
use crate::time::now_ms;

/// The countdown's length.
#[derive(Debug, Clone, Copy)]
pub struct Countdown {
    ttl_ms: i64,
}

impl Countdown {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// When a room left empty at `now` expires.
    pub fn deadline(&self, now: i64) -> i64 {
        now.saturating_add(self.ttl_ms)
    }

    /// Writes a room's idle state to its row: a countdown from now when idle, none otherwise.
    /// Returns false when the room is gone.
    pub async fn write(&self, pool: &DbPool, room_id: &str, idle: bool) -> Result<bool, ApiError> {
        let expires = idle.then(|| self.deadline(now_ms()));
        let mut db = confab_schema::connect(pool).await?;
        Ok(queries::set_room_expiry(&mut db, room_id, expires)
            .await?
            .is_some())
    }

    /// At start-up no session is live: every room without a countdown starts one (rooms already
    /// counting keep their deadline). Returns how many started.
    pub async fn restart_all(&self, pool: &DbPool) -> Result<usize, ApiError> {
        let mut db = confab_schema::connect(pool).await?;
        Ok(queries::start_idle_countdowns(&mut db, self.deadline(now_ms())).await?)
    }
}

/// What was last written of one room's idle state (`None`: nothing known), guarded so that
/// writes of one room happen one at a time.
#[derive(Debug)]
pub struct IdleWriter {
    written: tokio::sync::Mutex<Option<bool>>,
}

impl IdleWriter {
    /// `counting`: whether the room's row had a countdown when its live state was loaded.
    pub fn new(counting: bool) -> Self {
        Self {
            written: tokio::sync::Mutex::new(Some(counting)),
        }
    }

    /// Brings the row in line with `idle_now()`, read after taking the lock. Returns false when
    /// the room's row is gone.
    pub async fn sync(
        &self,
        countdown: &Countdown,
        pool: &DbPool,
        room_id: &str,
        idle_now: impl Fn() -> Option<bool>,
    ) -> Result<bool, ApiError> {
        let mut written = self.written.lock().await;
        // `None`: the room was closed meanwhile, and its row is gone or going.
        let Some(idle) = idle_now() else {
            return Ok(false);
        };
        if *written == Some(idle) {
            return Ok(true);
        }
        // Unknown until written: a failed write is tried again by the next change.
        *written = None;
        let exists = countdown.write(pool, room_id, idle).await?;
        *written = Some(idle);
        Ok(exists)
    }
}

/// Rooms whose countdown is over, a page at a time, for the sweeper.
pub async fn expired_rooms(pool: &DbPool, page: i64) -> Result<Vec<String>, ApiError> {
    let mut db = confab_schema::connect(pool).await?;
    Ok(queries::expired_rooms(&mut db, now_ms(), page).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_saturates() {
        assert_eq!(Countdown::new(Duration::from_secs(2)).deadline(1000), 3000);
        assert_eq!(Countdown::new(Duration::MAX).deadline(5), i64::MAX);
    }
}
