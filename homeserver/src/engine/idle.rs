//! The idle countdown, in one place: a room with nobody connected is deleted `rooms.idle_ttl`
//! after the last one left. The room's owner says when it is idle ([`super::room::RoomState::is_idle`]);
//! this module writes that to the room's row (`expires_ts`), restarts countdowns after a restart,
//! and finds the rooms whose time is up for the sweeper.
//!
//! The row is written by [`IdleWriter::sync`], which reads the owner's current answer under the
//! room's writer lock and writes only a change: concurrent callers are serialized and the last
//! write always reflects the latest state, so the countdown can never be left running while
//! someone is connected, nor stopped while nobody is.
//!
//! Across workers (`crate::cluster`): what a worker writes is whether *it* has devices in the
//! room (a `room_workers` row); under the room's row lock the countdown stops with the first
//! worker's row and starts only when the last live worker's row goes. Rows of a worker whose
//! lease ran out are taken away by the sweeper, which then starts the countdowns nobody holds.

use std::time::Duration;

use std::sync::Arc;

use confab_schema::{DbPool, cluster, queries};

use crate::error::ApiError;
use crate::time::now_ms;

/// The countdown's length, and whose devices this process writes.
#[derive(Debug, Clone)]
pub struct Countdown {
    ttl_ms: i64,
    worker_id: Arc<str>,
}

impl Countdown {
    pub fn new(ttl: Duration, worker_id: &str) -> Self {
        Self {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            worker_id: worker_id.into(),
        }
    }

    /// When a room left empty at `now` expires.
    pub fn deadline(&self, now: i64) -> i64 {
        now.saturating_add(self.ttl_ms)
    }

    /// Writes whether this worker has devices in the room (`idle`: none), and so the room's
    /// countdown: from now once no live worker has any, none otherwise. Returns false when the
    /// room is gone.
    pub async fn write(&self, pool: &DbPool, room_id: &str, idle: bool) -> Result<bool, ApiError> {
        let mut db = confab_schema::connect(pool).await?;
        Ok(cluster::set_room_worker(
            &mut db,
            room_id,
            &self.worker_id,
            !idle,
            self.deadline(now_ms()),
        )
        .await?)
    }

    /// Starts the countdown of every room nobody holds: at start-up (this worker's rows from its
    /// last run are gone by then), and at every sweep (a worker whose lease ran out holds
    /// nothing). Rooms already counting keep their deadline. Returns how many started.
    pub async fn start_orphans(&self, pool: &DbPool) -> Result<usize, ApiError> {
        let mut db = confab_schema::connect(pool).await?;
        Ok(cluster::start_orphan_countdowns(&mut db, self.deadline(now_ms())).await?)
    }
}

/// What was last written of one room's idle state (`None`: nothing known), guarded so that
/// writes of one room happen one at a time.
#[derive(Debug)]
pub struct IdleWriter {
    written: tokio::sync::Mutex<Option<bool>>,
}

impl Default for IdleWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl IdleWriter {
    /// A room just loaded: this worker holds no row for it yet, whatever the countdown says.
    pub fn new() -> Self {
        Self {
            written: tokio::sync::Mutex::new(Some(true)),
        }
    }

    /// Forgets what was written, so that the next sync writes again (this worker's rows may
    /// have been taken away while its lease had run out).
    pub async fn forget(&self) {
        *self.written.lock().await = None;
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
        assert_eq!(
            Countdown::new(Duration::from_secs(2), "w").deadline(1000),
            3000
        );
        assert_eq!(Countdown::new(Duration::MAX, "w").deadline(5), i64::MAX);
    }
}
