//! Workers of one homeserver sharing this database (README, "Scaling out"): their leases, the
//! rooms each has devices in (what the idle countdown reads across workers), the locks that make
//! one worker the holder of a singleton, and the notification bus (Postgres's LISTEN/NOTIFY).
//!
//! Lease times are the database's clock (`clock_timestamp()`), so that workers whose own clocks
//! differ agree on who is alive.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::{Stream, StreamExt};

use crate::DbError;

type Conn = AsyncPgConnection;

/// The database's clock in milliseconds, as SQL.
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// The advisory lock keys Confab takes, all in one place so that none is taken for two things.
pub mod locks {
    /// Held while migrations run, so that workers starting at once apply them one at a time.
    pub const MIGRATIONS: i64 = 0x636f_6e66_6162_0001;
    /// Held by the worker that runs the federation sender.
    pub const SENDER: i64 = 0x636f_6e66_6162_0002;
    /// Held by the worker that runs the sweeper (idle rooms, sessions, received transactions).
    pub const SWEEPER: i64 = 0x636f_6e66_6162_0003;
}

/// Most bytes of one notification's payload: Postgres refuses 8,000 and more.
pub const MAX_PAYLOAD_BYTES: usize = 7_900;

#[derive(QueryableByName)]
struct RoomIdRow {
    #[diesel(sql_type = Text)]
    room_id: String,
}

#[derive(QueryableByName)]
struct WorkerRow {
    #[diesel(sql_type = Text)]
    worker_id: String,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct SpillId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct SpillPayload {
    #[diesel(sql_type = Text)]
    payload: String,
}

/// A worker starts: the rooms it had devices in before (a restart under the same id) are no
/// longer held by it, and its lease begins. Returns the rooms it let go of.
pub async fn start_worker(
    conn: &mut Conn,
    worker_id: &str,
    lease_ms: i64,
) -> Result<Vec<String>, DbError> {
    let released = release_rooms(conn, worker_id).await?;
    diesel::sql_query(concat!(
        "INSERT INTO workers (worker_id, started_ts, lease_until_ts) VALUES ($1, ",
        db_now_ms!(),
        ", ",
        db_now_ms!(),
        " + $2) ON CONFLICT (worker_id) DO UPDATE SET started_ts = EXCLUDED.started_ts, \
         lease_until_ts = EXCLUDED.lease_until_ts"
    ))
    .bind::<Text, _>(worker_id)
    .bind::<BigInt, _>(lease_ms)
    .execute(conn)
    .await?;
    Ok(released)
}

/// Extends a worker's lease to `lease_ms` from now.
pub async fn renew_worker(conn: &mut Conn, worker_id: &str, lease_ms: i64) -> Result<(), DbError> {
    diesel::sql_query(concat!(
        "INSERT INTO workers (worker_id, started_ts, lease_until_ts) VALUES ($1, ",
        db_now_ms!(),
        ", ",
        db_now_ms!(),
        " + $2) ON CONFLICT (worker_id) DO UPDATE SET lease_until_ts = EXCLUDED.lease_until_ts"
    ))
    .bind::<Text, _>(worker_id)
    .bind::<BigInt, _>(lease_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// A worker stops for good: its rows go. Returns the rooms it had devices in.
pub async fn retire_worker(conn: &mut Conn, worker_id: &str) -> Result<Vec<String>, DbError> {
    let released = release_rooms(conn, worker_id).await?;
    diesel::sql_query("DELETE FROM workers WHERE worker_id = $1")
        .bind::<Text, _>(worker_id)
        .execute(conn)
        .await?;
    Ok(released)
}

async fn release_rooms(conn: &mut Conn, worker_id: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<RoomIdRow> =
        diesel::sql_query("DELETE FROM room_workers WHERE worker_id = $1 RETURNING room_id")
            .bind::<Text, _>(worker_id)
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|r| r.room_id).collect())
}

/// The workers whose lease has not run out, by id.
pub async fn live_workers(conn: &mut Conn) -> Result<Vec<String>, DbError> {
    let rows: Vec<WorkerRow> = diesel::sql_query(concat!(
        "SELECT worker_id FROM workers WHERE lease_until_ts > ",
        db_now_ms!(),
        " ORDER BY worker_id"
    ))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.worker_id).collect())
}

/// Records whether `worker_id` has devices connected to the room, and sets the room's idle
/// countdown to match, under the room's row lock: no countdown while any live worker has
/// devices there, one ending at `deadline` once none has. Returns false when the room is gone.
///
/// Two statements in one transaction, not one: the second must see what a worker that held the
/// row lock before us committed, and a statement sees only what was committed when it began.
pub async fn set_room_worker(
    conn: &mut Conn,
    room_id: &str,
    worker_id: &str,
    connected: bool,
    deadline: i64,
) -> Result<bool, DbError> {
    conn.transaction(async |db| {
        let locked: Vec<RoomIdRow> =
            diesel::sql_query("SELECT room_id FROM rooms WHERE room_id = $1 FOR UPDATE")
                .bind::<Text, _>(room_id)
                .load(db)
                .await?;
        if locked.is_empty() {
            return Ok(false);
        }
        if connected {
            diesel::sql_query(
                "WITH held AS (INSERT INTO room_workers (room_id, worker_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING) \
                 UPDATE rooms SET expires_ts = NULL WHERE room_id = $1 AND expires_ts IS NOT NULL",
            )
            .bind::<Text, _>(room_id)
            .bind::<Text, _>(worker_id)
            .execute(db)
            .await?;
        } else {
            diesel::sql_query(concat!(
                "WITH gone AS (DELETE FROM room_workers WHERE room_id = $1 AND worker_id = $2) \
                 UPDATE rooms SET expires_ts = $3 WHERE room_id = $1 AND NOT EXISTS ( \
                 SELECT 1 FROM room_workers rw JOIN workers w ON w.worker_id = rw.worker_id \
                 WHERE rw.room_id = $1 AND rw.worker_id <> $2 AND w.lease_until_ts > ",
                db_now_ms!(),
                ")"
            ))
            .bind::<Text, _>(room_id)
            .bind::<Text, _>(worker_id)
            .bind::<BigInt, _>(deadline)
            .execute(db)
            .await?;
        }
        Ok::<_, DbError>(true)
    })
    .await
}

/// Rooms that nobody holds any more start their idle countdown, ending at `deadline`: the rows
/// of workers whose lease ran out are taken away, and every room with no countdown and no row of
/// a live worker starts one (a worker that died with devices connected, or rooms left from a
/// run before). Returns how many started.
pub async fn start_orphan_countdowns(conn: &mut Conn, deadline: i64) -> Result<usize, DbError> {
    diesel::sql_query(concat!(
        "DELETE FROM room_workers rw WHERE NOT EXISTS (SELECT 1 FROM workers w \
         WHERE w.worker_id = rw.worker_id AND w.lease_until_ts > ",
        db_now_ms!(),
        ")"
    ))
    .execute(conn)
    .await?;
    Ok(diesel::sql_query(
        "UPDATE rooms r SET expires_ts = $1 WHERE r.expires_ts IS NULL AND NOT EXISTS \
         (SELECT 1 FROM room_workers rw WHERE rw.room_id = r.room_id)",
    )
    .bind::<BigInt, _>(deadline)
    .execute(conn)
    .await?)
}

/// Sends notifications: `payloads[i]` on `channels[i]`, delivered to listeners when this
/// statement commits (it runs on its own, so at once), in order.
pub async fn notify(conn: &mut Conn, channels: &[&str], payloads: &[&str]) -> Result<(), DbError> {
    diesel::sql_query(
        "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(c, p, n) \
         ORDER BY n",
    )
    .bind::<Array<Text>, _>(channels)
    .bind::<Array<Text>, _>(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps a payload too large for a notification; returns its id.
pub async fn spill(conn: &mut Conn, payload: &str, now_ts: i64) -> Result<i64, DbError> {
    let row: SpillId = diesel::sql_query(
        "INSERT INTO bus_spill (payload, created_ts) VALUES ($1, $2) RETURNING id",
    )
    .bind::<Text, _>(payload)
    .bind::<BigInt, _>(now_ts)
    .get_result(conn)
    .await?;
    Ok(row.id)
}

/// Takes a spilled payload (it is read once).
pub async fn take_spilled(conn: &mut Conn, id: i64) -> Result<Option<String>, DbError> {
    let row: Option<SpillPayload> =
        diesel::sql_query("DELETE FROM bus_spill WHERE id = $1 RETURNING payload")
            .bind::<BigInt, _>(id)
            .get_result(conn)
            .await
            .optional()?;
    Ok(row.map(|r| r.payload))
}

/// Deletes spilled payloads older than `before_ts` that nobody took (their reader was gone).
pub async fn prune_spill(conn: &mut Conn, before_ts: i64) -> Result<usize, DbError> {
    Ok(
        diesel::sql_query("DELETE FROM bus_spill WHERE created_ts < $1")
            .bind::<BigInt, _>(before_ts)
            .execute(conn)
            .await?,
    )
}

/// One notification received.
#[derive(Debug, Clone)]
pub struct Notification {
    pub channel: String,
    pub payload: String,
}

/// A worker's own session with the database, outside the pool: it listens for notifications,
/// and holds the session-level advisory locks that make it a singleton's holder. Postgres drops
/// both with the session, so a worker that dies (or loses this connection) lets go of its
/// singletons at once; keepalives set on the server side bound how long a vanished peer holds
/// them.
pub struct Listener {
    conn: Conn,
}

impl Listener {
    /// Opens the session and listens on `channels` (names made of ASCII letters, digits, `_`
    /// and `.`; they are quoted).
    pub async fn connect(url: &str, channels: &[&str]) -> Result<Self, DbError> {
        let mut conn = Conn::establish(url)
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        let mut setup = String::from(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3;",
        );
        for channel in channels {
            debug_assert!(
                channel
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
            );
            setup.push_str(&format!(" LISTEN \"{channel}\";"));
        }
        conn.batch_execute(&setup).await?;
        Ok(Self { conn })
    }

    /// Takes the advisory lock `key` if nobody holds it; held until released or the session
    /// ends. Returns whether this session holds it now.
    pub async fn try_lock(&mut self, key: i64) -> Result<bool, DbError> {
        let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(key)
            .get_result(&mut self.conn)
            .await?;
        Ok(row.locked)
    }

    /// Lets go of the advisory lock `key`.
    pub async fn unlock(&mut self, key: i64) -> Result<(), DbError> {
        diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(key)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// A round trip: fails when the session is gone.
    pub async fn ping(&mut self) -> Result<(), DbError> {
        self.conn.batch_execute("SELECT 1").await?;
        Ok(())
    }

    /// The session's backend process id (what `pg_terminate_backend` takes).
    pub async fn backend_pid(&mut self) -> Result<i32, DbError> {
        #[derive(QueryableByName)]
        struct Pid {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let row: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(&mut self.conn)
            .await?;
        Ok(row.pid)
    }

    /// The notifications received, in order; an error means the session is gone.
    pub fn notifications(&mut self) -> impl Stream<Item = Result<Notification, DbError>> + '_ {
        self.conn.notifications_stream().map(|n| {
            n.map(|n| Notification {
                channel: n.channel,
                payload: n.payload,
            })
            .map_err(DbError::from)
        })
    }
}

#[derive(QueryableByName)]
struct LastSeq {
    #[diesel(sql_type = Text)]
    room_id: String,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

/// The newest sequence number of each of `room_ids` that still exists.
pub async fn last_seqs(conn: &mut Conn, room_ids: &[&str]) -> Result<Vec<(String, i64)>, DbError> {
    let rows: Vec<LastSeq> =
        diesel::sql_query("SELECT room_id, last_seq FROM rooms WHERE room_id = ANY($1)")
            .bind::<Array<Text>, _>(room_ids)
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|r| (r.room_id, r.last_seq)).collect())
}
