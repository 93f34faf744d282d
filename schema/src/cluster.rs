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
    for table in ["room_devices", "worker_connections", "inbound_transactions"] {
        diesel::sql_query(format!("DELETE FROM {table} WHERE worker_id = $1"))
            .bind::<Text, _>(worker_id)
            .execute(conn)
            .await?;
    }
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
    for table in [
        "room_workers",
        "room_devices",
        "worker_connections",
        "inbound_transactions",
    ] {
        diesel::sql_query(format!(
            concat!(
                "DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM workers w \
                 WHERE w.worker_id = t.worker_id AND w.lease_until_ts > ",
                db_now_ms!(),
                ")"
            ),
            table
        ))
        .execute(conn)
        .await?;
    }
    Ok(diesel::sql_query(
        "UPDATE rooms r SET expires_ts = $1 WHERE r.expires_ts IS NULL AND NOT EXISTS \
         (SELECT 1 FROM room_workers rw WHERE rw.room_id = r.room_id)",
    )
    .bind::<BigInt, _>(deadline)
    .execute(conn)
    .await?)
}

/// A device connected to a room through a live worker.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RoomDevice {
    #[diesel(sql_type = Text)]
    pub room_id: String,
    #[diesel(sql_type = Text)]
    pub user_id: String,
    #[diesel(sql_type = Text)]
    pub device_id: String,
    /// The worker it is connected through.
    #[diesel(sql_type = Text)]
    pub worker_id: String,
    #[diesel(sql_type = Text)]
    pub display_name: String,
}

/// One device asking for a place in a room, through one worker's socket (`conn_id`; 0 for a
/// device another server announced).
#[derive(Debug, Clone, Copy)]
pub struct DeviceClaim<'a> {
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub worker_id: &'a str,
    pub conn_id: i64,
    pub display_name: &'a str,
}

/// What [`admit_device`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The device has its place; every device connected now, itself included.
    Admitted(Vec<RoomDevice>),
    /// The room has `max_users` other users connected already.
    Full,
    /// The room is gone.
    Gone,
}

/// The devices connected through live workers, of users who are joined members: one who left
/// or was kicked stops counting when that commits, before any worker has taken them out.
const LIVE_DEVICES: &str = concat!(
    "SELECT d.room_id, d.user_id, d.device_id, d.worker_id, d.display_name FROM room_devices d \
     JOIN workers w ON w.worker_id = d.worker_id AND w.lease_until_ts > ",
    db_now_ms!(),
    " JOIN room_members m ON m.room_id = d.room_id AND m.user_id = d.user_id \
     AND m.membership = 'joined' \
     WHERE d.room_id = ANY($1) ORDER BY d.room_id, d.user_id, d.device_id"
);

/// Gives a device its place in a room unless `max_users` other users are connected through
/// live workers, under the room's row lock: every worker admits through here, so the last place
/// goes to one of them. A device already connected elsewhere moves to this claim's worker and
/// socket.
pub async fn admit_device(
    conn: &mut Conn,
    claim: &DeviceClaim<'_>,
    max_users: usize,
) -> Result<Admission, DbError> {
    conn.transaction(async |db| {
        let locked: Vec<RoomIdRow> =
            diesel::sql_query("SELECT room_id FROM rooms WHERE room_id = $1 FOR UPDATE")
                .bind::<Text, _>(claim.room_id)
                .load(db)
                .await?;
        if locked.is_empty() {
            return Ok(Admission::Gone);
        }
        let mut devices: Vec<RoomDevice> = diesel::sql_query(LIVE_DEVICES)
            .bind::<Array<Text>, _>(vec![claim.room_id])
            .load(db)
            .await?;
        let mut users: Vec<&str> = devices.iter().map(|d| d.user_id.as_str()).collect();
        users.dedup();
        if !users.contains(&claim.user_id) && users.len() >= max_users {
            return Ok(Admission::Full);
        }
        diesel::sql_query(
            "INSERT INTO room_devices (room_id, user_id, device_id, worker_id, conn_id, display_name) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, user_id, device_id) DO UPDATE \
             SET worker_id = EXCLUDED.worker_id, conn_id = EXCLUDED.conn_id, \
             display_name = EXCLUDED.display_name",
        )
        .bind::<Text, _>(claim.room_id)
        .bind::<Text, _>(claim.user_id)
        .bind::<Text, _>(claim.device_id)
        .bind::<Text, _>(claim.worker_id)
        .bind::<BigInt, _>(claim.conn_id)
        .bind::<Text, _>(claim.display_name)
        .execute(db)
        .await?;
        devices.retain(|d| !(d.user_id == claim.user_id && d.device_id == claim.device_id));
        devices.push(RoomDevice {
            room_id: claim.room_id.to_owned(),
            user_id: claim.user_id.to_owned(),
            device_id: claim.device_id.to_owned(),
            worker_id: claim.worker_id.to_owned(),
            display_name: claim.display_name.to_owned(),
        });
        Ok::<_, DbError>(Admission::Admitted(devices))
    })
    .await
}

/// A device's place is given back, if it is still held by this worker's socket `conn_id` (a
/// socket that replaced it, here or on another worker, keeps it). Returns whether it was.
pub async fn release_device(
    conn: &mut Conn,
    room_id: &str,
    (user_id, device_id): (&str, &str),
    worker_id: &str,
    conn_id: i64,
) -> Result<bool, DbError> {
    Ok(diesel::sql_query(
        "DELETE FROM room_devices WHERE room_id = $1 AND user_id = $2 AND device_id = $3 \
         AND worker_id = $4 AND conn_id = $5",
    )
    .bind::<Text, _>(room_id)
    .bind::<Text, _>(user_id)
    .bind::<Text, _>(device_id)
    .bind::<Text, _>(worker_id)
    .bind::<BigInt, _>(conn_id)
    .execute(conn)
    .await?
        > 0)
}

/// The devices connected to `room_ids` through live workers, by room, user and device.
pub async fn room_devices(conn: &mut Conn, room_ids: &[&str]) -> Result<Vec<RoomDevice>, DbError> {
    Ok(diesel::sql_query(LIVE_DEVICES)
        .bind::<Array<Text>, _>(room_ids)
        .load(conn)
        .await?)
}

/// Several rooms' events at once, for a worker bringing its rooms up to what others committed:
/// for each `(room, after, upto)`, the events numbered after `after` up to `upto`, by room and
/// number. One round trip for a whole batch of notifications.
pub async fn events_between(
    conn: &mut Conn,
    ranges: &[(&str, i64, i64)],
) -> Result<Vec<crate::models::Event>, DbError> {
    let rooms: Vec<&str> = ranges.iter().map(|r| r.0).collect();
    let afters: Vec<i64> = ranges.iter().map(|r| r.1).collect();
    let uptos: Vec<i64> = ranges.iter().map(|r| r.2).collect();
    // LATERAL: one range scan of the primary key per room. As a plain join the planner hashed
    // the ranges and scanned every event of the rooms (22 ms a batch at 5,000 events/s).
    Ok(diesel::sql_query(
        "SELECT e.room_id, e.seq, e.sender, e.device_id, e.origin_ts, e.content \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(room_id, after_seq, upto) \
         CROSS JOIN LATERAL (SELECT * FROM events \
         WHERE events.room_id = w.room_id AND events.seq > w.after_seq AND events.seq <= w.upto \
         ORDER BY events.seq) e \
         ORDER BY e.room_id, e.seq",
    )
    .bind::<Array<Text>, _>(rooms)
    .bind::<Array<BigInt>, _>(afters)
    .bind::<Array<BigInt>, _>(uptos)
    .load(conn)
    .await?)
}

/// Which limit a new connection would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefused {
    /// The user has this many connections open already.
    User(usize),
    /// The client address has this many.
    Address(usize),
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    by_user: i64,
    #[diesel(sql_type = BigInt)]
    by_address: i64,
}

/// Records a live connection unless its user already has `max_user` or its address
/// `max_address` through live workers. The user's and the address's advisory locks (taken in
/// that order by everyone, so no two wait for each other) make the count and the insert one step.
pub async fn open_connection(
    conn: &mut Conn,
    (worker_id, conn_id): (&str, i64),
    (user_id, address): (&str, &str),
    (max_user, max_address): (usize, usize),
) -> Result<Result<(), ConnectionRefused>, DbError> {
    conn.transaction(async |db| {
        diesel::sql_query(
            "SELECT pg_advisory_xact_lock(1, hashtext($1)), pg_advisory_xact_lock(2, hashtext($2))",
        )
        .bind::<Text, _>(user_id)
        .bind::<Text, _>(address)
        .execute(db)
        .await?;
        let counts: Counts = diesel::sql_query(concat!(
            "SELECT count(*) FILTER (WHERE c.user_id = $1) AS by_user, \
             count(*) FILTER (WHERE c.address = $2) AS by_address \
             FROM worker_connections c JOIN workers w ON w.worker_id = c.worker_id \
             AND w.lease_until_ts > ",
            db_now_ms!(),
            " WHERE c.user_id = $1 OR c.address = $2"
        ))
        .bind::<Text, _>(user_id)
        .bind::<Text, _>(address)
        .get_result(db)
        .await?;
        let (by_user, by_address) = (counts.by_user as usize, counts.by_address as usize);
        if by_user >= max_user {
            return Ok(Err(ConnectionRefused::User(by_user)));
        }
        if by_address >= max_address {
            return Ok(Err(ConnectionRefused::Address(by_address)));
        }
        diesel::sql_query(
            "INSERT INTO worker_connections (worker_id, conn_id, user_id, address) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind::<Text, _>(worker_id)
        .bind::<BigInt, _>(conn_id)
        .bind::<Text, _>(user_id)
        .bind::<Text, _>(address)
        .execute(db)
        .await?;
        Ok::<_, DbError>(Ok(()))
    })
    .await
}

/// Forgets a live connection.
pub async fn close_connection(
    conn: &mut Conn,
    worker_id: &str,
    conn_id: i64,
) -> Result<(), DbError> {
    diesel::sql_query("DELETE FROM worker_connections WHERE worker_id = $1 AND conn_id = $2")
        .bind::<Text, _>(worker_id)
        .bind::<BigInt, _>(conn_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks transaction `txn_id` from `origin` as being handled by `worker_id`, unless another live
/// worker is handling one from that origin already (a row of this worker's own is left from one
/// whose release failed: the worker admits one per origin itself). Returns whether it was marked.
pub async fn claim_origin(
    conn: &mut Conn,
    origin: &str,
    worker_id: &str,
    txn_id: &str,
) -> Result<bool, DbError> {
    Ok(diesel::sql_query(concat!(
        "INSERT INTO inbound_transactions AS t (origin, worker_id, txn_id) VALUES ($1, $2, $3) \
         ON CONFLICT (origin) DO UPDATE SET worker_id = EXCLUDED.worker_id, txn_id = EXCLUDED.txn_id \
         WHERE t.worker_id = EXCLUDED.worker_id OR NOT EXISTS (SELECT 1 FROM workers w \
         WHERE w.worker_id = t.worker_id AND w.lease_until_ts > ",
        db_now_ms!(),
        ")"
    ))
    .bind::<Text, _>(origin)
    .bind::<Text, _>(worker_id)
    .bind::<Text, _>(txn_id)
    .execute(conn)
    .await?
        > 0)
}

/// The transaction [`claim_origin`] marked is done.
pub async fn release_origin(
    conn: &mut Conn,
    origin: &str,
    worker_id: &str,
    txn_id: &str,
) -> Result<(), DbError> {
    diesel::sql_query(
        "DELETE FROM inbound_transactions WHERE origin = $1 AND worker_id = $2 AND txn_id = $3",
    )
    .bind::<Text, _>(origin)
    .bind::<Text, _>(worker_id)
    .bind::<Text, _>(txn_id)
    .execute(conn)
    .await?;
    Ok(())
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

#[derive(QueryableByName)]
struct Holder {
    #[diesel(sql_type = BigInt)]
    key: i64,
    #[diesel(sql_type = Text)]
    name: String,
}

/// Who holds the singletons' locks in this database: each held key with the holder session's
/// `application_name` (`confab worker <id>`, see [`Listener::connect`]), by key.
pub async fn lock_holders(conn: &mut Conn) -> Result<Vec<(i64, String)>, DbError> {
    let rows: Vec<Holder> = diesel::sql_query(
        "SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS key, \
         coalesce(a.application_name, '') AS name FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY key",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.key, r.name)).collect())
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
    ///
    /// `name` is the session's `application_name`, so an operator (and a test) sees in
    /// `pg_stat_activity` which worker holds which of the locks in `pg_locks`.
    pub async fn connect(url: &str, channels: &[&str], name: &str) -> Result<Self, DbError> {
        let mut conn = Conn::establish(url)
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        debug_assert!(!name.contains('\''));
        let mut setup = format!(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3; SET application_name = '{name}';"
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
