//! The event writer: every event a room of ours appends goes through here, chat and state changes
//! (membership, lock) alike, by one path: append and queue for the other servers in one
//! transaction, then fan-out by the room's owner, then the answer. Nothing is acknowledged or
//! shown before it is durable.
//!
//! Chat is group-committed: appends are queued, taken in batches and committed in one
//! transaction per batch, so thousands of messages per second cost tens of commits. A state
//! change ([`EventWriter::change`]) is a function run in a transaction of its own, in queue order
//! with the chat around it, which may append events through its [`Appender`].
//!
//! There are a few writers, each owning the rooms that hash to it: a room's events go through
//! one queue, so they are numbered in the order they were sent, while commits of different rooms
//! overlap and Postgres can flush their WAL together. A writer runs state changes of different
//! rooms at once (a few), but never two of one room, nor a room's chat beside its change. Each
//! transaction touches its own rooms' rows only, and no two running at once share a room, so
//! they cannot deadlock each other.
//!
//! A chat message is checked against its room's owner once more just before its batch commits:
//! a kick committed and fanned out after the message was queued (the kick went first in the
//! queue) leaves the sender no longer a member, and the message is refused rather than logged
//! after the kick.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use confab_federation::ids::ServerName;
use confab_schema::models::{Appended, Event, NewEvent};
use confab_schema::queries::{Batch, ChatTxnKey, RoomAppend};
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, queries};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::live::LiveRooms;
use super::reply::{ChatReply, Committed};
use crate::error::{ApiError, ErrorCode};
use crate::federation::rooms::queue::{queue_appended, wake};
use crate::federation::sender::TransactionSender;
use crate::metrics::Metrics;

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 512;

/// Number of writer shards. Two, on this two-core machine: against four, at a steady 5,000
/// events/s each commit holds twice the messages, which took the ack p50 from 8.7–9.0 to
/// 6.4–8.0 ms and the server's CPU per event from 139–153 to 129–133 µs, with the closed-loop
/// rate unchanged (README, Performance).
const SHARDS: usize = 2;

/// Requests waiting per shard.
const QUEUE: usize = 8192;

/// A state change run in the writer's transaction; appends through the [`Appender`].
type ChangeFn = Box<
    dyn for<'c> FnOnce(
            &'c mut AsyncPgConnection,
            &'c mut Appender,
        ) -> BoxFuture<'c, Result<(), ApiError>>
        + Send,
>;

enum Request {
    Chat {
        room_id: String,
        event: NewEvent,
        txn_id: Option<String>,
        reply: ChatReply,
    },
    Change {
        room_id: String,
        apply: ChangeFn,
        reply: oneshot::Sender<Result<Vec<Event>, ApiError>>,
    },
}

/// Appends a state change's events to its room and queues them for the room's other servers,
/// in the change's transaction; they are fanned out after the commit.
pub struct Appender {
    room_id: String,
    sender: TransactionSender,
    events: Vec<Event>,
    woken: Vec<ServerName>,
}

impl Appender {
    /// Appends `events` to the room (numbered after its newest) and queues them for its other
    /// servers. Returns what was appended and to which servers it goes.
    pub async fn append(
        &mut self,
        db: &mut AsyncPgConnection,
        events: &[NewEvent],
    ) -> Result<Appended, ApiError> {
        let appended = queries::append_events(db, &self.room_id, events)
            .await?
            .ok_or_else(ApiError::room_not_found)?;
        self.woken
            .extend(queue_appended(&self.sender, db, &appended).await?);
        self.events.extend(appended.events.iter().cloned());
        Ok(appended)
    }
}

/// Handle to the writer tasks.
#[derive(Clone)]
pub struct EventWriter {
    shards: Vec<mpsc::Sender<Request>>,
    metrics: Metrics,
}

impl EventWriter {
    /// Starts the writer tasks on the current runtime.
    pub fn start(live: Arc<LiveRooms>, metrics: Metrics, federation: TransactionSender) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(rx, live.clone(), metrics.clone(), federation.clone()));
                tx
            })
            .collect();
        Self { shards, metrics }
    }

    fn shard(&self, room_id: &str) -> &mpsc::Sender<Request> {
        // FNV-1a: any stable spread will do; a room must always map to the same shard.
        let hash = room_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    /// Queues a chat event, answered through `reply` once it is committed and fanned out (or
    /// refused). Queueing happens before this returns, so calls made in order are committed in
    /// order.
    pub async fn enqueue(
        &self,
        room_id: &str,
        event: NewEvent,
        txn_id: Option<String>,
        reply: ChatReply,
    ) {
        let queued = self
            .shard(room_id)
            .send(Request::Chat {
                room_id: room_id.to_owned(),
                event,
                txn_id,
                reply,
            })
            .await;
        if let Err(mpsc::error::SendError(Request::Chat { reply, .. })) = queued {
            reply.answer_now(Err(stopped()), &self.metrics);
        }
    }

    /// Runs `apply` in a transaction of its own, in queue order with the room's chat; the events
    /// it appends are queued for the other servers in that transaction and fanned out after the
    /// commit. Returns `apply`'s result and the events appended.
    pub async fn change<R, F>(&self, room_id: &str, apply: F) -> Result<(R, Vec<Event>), ApiError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut AsyncPgConnection,
                &'c mut Appender,
            ) -> BoxFuture<'c, Result<R, ApiError>>
            + Send
            + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let apply: ChangeFn = Box::new(move |db, appender| {
            Box::pin(async move {
                let result = apply(db, appender).await?;
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                Ok(())
            })
        });
        let (reply, rx) = oneshot::channel();
        self.shard(room_id)
            .send(Request::Change {
                room_id: room_id.to_owned(),
                apply,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        let events = rx.await.unwrap_or_else(|_| Err(stopped()))?;
        let result = out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(stopped)?;
        Ok((result, events))
    }
}

fn stopped() -> ApiError {
    ApiError::internal("event writer", &"writer stopped")
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    live: Arc<LiveRooms>,
    metrics: Metrics,
    federation: TransactionSender,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut changes = Changes::default();
    loop {
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(first) => first,
                None => break,
            },
            () = changes.one_done(), if !changes.is_empty() => continue,
        };
        let mut change = None;
        match first {
            Request::Chat { .. } => batch.push(first),
            Request::Change { .. } => change = Some(first),
        }
        while change.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next @ Request::Chat { .. }) => batch.push(next),
                // A change waits for the chat queued before it.
                Ok(next) => change = Some(next),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // Chat queued after a change of its room commits after it.
            if !changes.is_empty() {
                let rooms: Vec<&str> = batch
                    .iter()
                    .filter_map(|req| match req {
                        Request::Chat { room_id, .. } => Some(room_id.as_str()),
                        Request::Change { .. } => None,
                    })
                    .collect();
                changes.wait_for_rooms(&rooms).await;
            }
            commit_chat(&live, &metrics, &federation, &mut batch).await;
        }
        if let Some(Request::Change {
            room_id,
            apply,
            reply,
        }) = change
        {
            let (live, federation, room) = (live.clone(), federation.clone(), room_id.clone());
            let job = async move {
                let result = commit_change(&live, &federation, &room, apply).await;
                let _ = reply.send(result);
            };
            changes.start(room_id, job).await;
        }
    }
    changes.wait_for_all().await;
}

/// Most state changes of different rooms a shard runs at once. A change is a transaction of its
/// own, a join about ten statements: one at a time per shard made a storm of joins wait in line
/// with the cores half idle (README, Performance).
const CONCURRENT_CHANGES: usize = 4;

/// Most changes held back behind a running change of their room before the shard stops taking
/// requests off its queue.
const HELD_CHANGES: usize = 256;

/// A state change's transaction, its fan-out and its answer.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The state changes of a shard: those running, each on a task of its own and at most one per
/// room, and those held back, in queue order, behind a running change of their room (or the
/// bound). A room's changes thus take effect in queue order while other rooms' go past them.
#[derive(Default)]
struct Changes {
    tasks: JoinSet<()>,
    running: HashMap<tokio::task::Id, String>,
    held: VecDeque<(String, Job)>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.held.is_empty()
    }

    fn is_running(&self, room_id: &str) -> bool {
        self.running.values().any(|r| r == room_id)
    }

    /// Whether a change of the room is running or held back.
    fn is_busy(&self, room_id: &str) -> bool {
        self.is_running(room_id) || self.held.iter().any(|(r, _)| r == room_id)
    }

    /// Waits for one change to end (forever when none runs or is held), then starts those held
    /// back that may run now.
    async fn one_done(&mut self) {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => {
                self.running.remove(&id);
            }
            Some(Err(err)) => {
                // Its caller is told the writer stopped (its answer was dropped).
                tracing::error!(error = %err, "a state change failed");
                self.running.remove(&err.id());
            }
            // Nothing runs: whatever is held may start now (it always has, but waiting here for
            // nothing would stall the writer).
            None if self.held.is_empty() => std::future::pending().await,
            None => {}
        }
        self.start_held();
    }

    /// Starts, in queue order, each held change whose room has nothing running or held ahead.
    fn start_held(&mut self) {
        let mut passed: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.held.len() && self.tasks.len() < CONCURRENT_CHANGES {
            let room = &self.held[i].0;
            if self.is_running(room) || passed.contains(room) {
                passed.push(room.clone());
                i += 1;
                continue;
            }
            if let Some((room, job)) = self.held.remove(i) {
                self.spawn(room, job);
            }
        }
    }

    fn spawn(&mut self, room_id: String, job: Job) {
        let task = self.tasks.spawn(job);
        self.running.insert(task.id(), room_id);
    }

    /// Starts a change now if its room is idle and there is room for it, else holds it back
    /// (waiting only when too many are held).
    async fn start(&mut self, room_id: String, job: impl Future<Output = ()> + Send + 'static) {
        if !self.is_busy(&room_id) && self.tasks.len() < CONCURRENT_CHANGES {
            return self.spawn(room_id, Box::pin(job));
        }
        self.held.push_back((room_id, Box::pin(job)));
        while self.held.len() > HELD_CHANGES {
            self.one_done().await;
        }
    }

    /// Waits until no change of these rooms runs or is held.
    async fn wait_for_rooms(&mut self, rooms: &[&str]) {
        while rooms.iter().any(|r| self.is_busy(r)) {
            self.one_done().await;
        }
    }

    async fn wait_for_all(&mut self) {
        while !self.is_empty() {
            self.one_done().await;
        }
    }
}

/// Runs one state change and fans out what it appended.
async fn commit_change(
    live: &LiveRooms,
    federation: &TransactionSender,
    room_id: &str,
    apply: ChangeFn,
) -> Result<Vec<Event>, ApiError> {
    let mut db = confab_schema::connect(live.pool()).await?;
    let mut appender = Appender {
        room_id: room_id.to_owned(),
        sender: federation.clone(),
        events: Vec::new(),
        woken: Vec::new(),
    };
    db.transaction(async |db| apply(db, &mut appender).await)
        .await?;
    drop(db);
    wake(federation, &appender.woken).await;
    live.publish(room_id, &appender.events, Vec::new()).await;
    Ok(appender.events)
}

/// One room's part of a batch: its events, each with its transaction key (if the client gave
/// an id) and where its answer goes.
struct RoomBatch {
    room_id: String,
    events: Vec<NewEvent>,
    keys: Vec<Option<ChatTxnKey>>,
    replies: Vec<ChatReply>,
    /// Repeats within the batch of one of `events` (by index), answered as it is.
    repeats: Vec<(usize, ChatReply)>,
}

/// What became of one of a room's events in a committed batch.
enum Outcome {
    /// Appended: the index among the room's appended events.
    Appended(usize),
    /// Its transaction id was committed before: the number and time it got then.
    Seen(Committed),
}

/// Commits a batch of chat and answers each message: after the fan-out of its room, in the same
/// burst (see [`LiveRooms::publish`]).
async fn commit_chat(
    live: &LiveRooms,
    metrics: &Metrics,
    federation: &TransactionSender,
    batch: &mut Vec<Request>,
) {
    let mut rooms: Vec<RoomBatch> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut keyed: HashMap<ChatTxnKey, (usize, usize)> = HashMap::new();
    for req in batch.drain(..) {
        let Request::Chat {
            room_id,
            event,
            txn_id,
            reply,
        } = req
        else {
            continue;
        };
        // The last check against the room's owner (see the module docs).
        let member = live
            .get(&room_id)
            .is_none_or(|room| room.read(|s| s.is_member(&event.sender)));
        if !member {
            reply.answer_now(
                Err(ApiError::new(
                    ErrorCode::NotMember,
                    "the sender is no longer a member of this room",
                )),
                metrics,
            );
            continue;
        }
        let key = txn_id.map(|txn_id| ChatTxnKey {
            room_id: room_id.clone(),
            user_id: event.sender.clone(),
            device_id: event.device_id.clone(),
            txn_id,
        });
        if let Some(&(r, e)) = key.as_ref().and_then(|k| keyed.get(k)) {
            rooms[r].repeats.push((e, reply));
            continue;
        }
        let r = match index.get(&room_id) {
            Some(&r) => r,
            None => {
                index.insert(room_id.clone(), rooms.len());
                rooms.push(RoomBatch {
                    room_id,
                    events: Vec::new(),
                    keys: Vec::new(),
                    replies: Vec::new(),
                    repeats: Vec::new(),
                });
                rooms.len() - 1
            }
        };
        let room = &mut rooms[r];
        if let Some(key) = &key {
            keyed.insert(key.clone(), (r, room.events.len()));
        }
        room.events.push(event);
        room.keys.push(key);
        room.replies.push(reply);
    }
    if rooms.is_empty() {
        return;
    }
    let count: usize = rooms.iter().map(|r| r.events.len()).sum();
    metrics.write_batch.observe(count as f64);
    // With several workers, another worker's batch may hold some of these rooms' rows: they are
    // left for a transaction of their own right after, rather than have the whole batch wait
    // (two workers' batches waiting on each other in turn made every room as slow as the
    // slowest). If none could be taken, the next attempt waits for them.
    let mut wait = !live.is_shared();
    while !rooms.is_empty() {
        let taken = commit_rooms(live, metrics, federation, std::mem::take(&mut rooms), wait).await;
        wait = taken.1 == 0;
        rooms = taken.0;
    }
}

/// Commits what it can of `rooms` (all of them when it may `wait` for their rows) and answers
/// each message; returns the rooms left for later, and how many were committed.
async fn commit_rooms(
    live: &LiveRooms,
    metrics: &Metrics,
    federation: &TransactionSender,
    rooms: Vec<RoomBatch>,
    wait: bool,
) -> (Vec<RoomBatch>, usize) {
    match commit(live, federation, &rooms, wait).await {
        Ok((committed, woken)) => {
            let mut later = Vec::new();
            let mut now = Vec::with_capacity(rooms.len());
            for (room, held) in rooms.into_iter().zip(committed) {
                match held {
                    Held::Later => later.push(room),
                    Held::Done(outcome) => now.push((room, outcome)),
                }
            }
            let done = now.len();
            let appended: usize = now
                .iter()
                .filter_map(|(_, o)| o.as_ref())
                .map(|(e, _)| e.len())
                .sum();
            metrics.events_persisted.inc_by(appended as u64);
            wake(federation, &woken).await;
            let mut published = Vec::with_capacity(done);
            for (room, outcome) in now {
                let Some((events, outcomes)) = outcome else {
                    let replies = room.replies.into_iter();
                    for reply in replies.chain(room.repeats.into_iter().map(|(_, r)| r)) {
                        reply.answer_now(Err(ApiError::room_not_found()), metrics);
                    }
                    continue;
                };
                let answer = |o: &Outcome| match *o {
                    Outcome::Appended(i) => (events[i].seq, events[i].origin_ts),
                    Outcome::Seen(first) => first,
                };
                let mut answers: Vec<(ChatReply, Committed)> = room
                    .replies
                    .into_iter()
                    .zip(&outcomes)
                    .map(|(reply, o)| (reply, answer(o)))
                    .collect();
                answers.extend(
                    room.repeats
                        .into_iter()
                        .map(|(e, reply)| (reply, answer(&outcomes[e]))),
                );
                published.push((room.room_id, events, answers));
            }
            live.publish_batch(published).await;
            (later, done)
        }
        Err(err) => {
            let err = ApiError::from(err);
            for room in rooms {
                let repeats = room.repeats.into_iter().map(|(_, r)| r);
                for reply in room.replies.into_iter().chain(repeats) {
                    reply.answer_now(Err(err.clone()), metrics);
                }
            }
            (Vec::new(), 0)
        }
    }
}

/// What became of one room of a batch in [`commit`].
enum Held {
    /// Committed (`None`: the room no longer exists).
    Done(Option<(Vec<Event>, Vec<Outcome>)>),
    /// Another transaction held its row: left for later.
    Later,
}

/// What a committed batch did, per room: the events appended and what became of each event of
/// the batch; and the federation destinations to wake.
type CommittedBatch = (Vec<Held>, Vec<ServerName>);

/// Why an attempt at committing a batch ended without a commit.
enum Attempt {
    Db(DbError),
    /// A transaction id in the batch was committed before (see [`commit`]).
    Repeated,
}

impl From<DbError> for Attempt {
    fn from(err: DbError) -> Self {
        Self::Db(err)
    }
}

impl From<confab_schema::diesel_error::Error> for Attempt {
    fn from(err: confab_schema::diesel_error::Error) -> Self {
        Self::Db(err.into())
    }
}

/// Commits a batch: per room, one sequence update and one multi-row insert, and for federated
/// rooms the PDUs for the other servers, in the same transaction. A message whose transaction
/// id was committed before is not appended again: the insert finds it taken (a unique index),
/// the attempt is rolled back, and the batch is committed again without the repeats, which get
/// the first answer. A message that is no repeat thus costs no lookup.
///
/// Unless it may `wait`, rooms whose rows another transaction holds are left out
/// ([`Held::Later`]).
async fn commit(
    live: &LiveRooms,
    federation: &TransactionSender,
    rooms: &[RoomBatch],
    wait: bool,
) -> Result<CommittedBatch, DbError> {
    let mut conn = confab_schema::connect(live.pool()).await?;
    let mut seen: HashMap<ChatTxnKey, Committed> = HashMap::new();
    let mut looked_up = false;
    loop {
        let attempt = conn
            .transaction(async |conn| {
                if looked_up {
                    let keys: Vec<&ChatTxnKey> =
                        rooms.iter().flat_map(|r| r.keys.iter().flatten()).collect();
                    seen = queries::events_by_txn(conn, &keys)
                        .await?
                        .into_iter()
                        .map(|(key, seq, ts)| (key, (seq, ts)))
                        .collect();
                }
                let held_elsewhere = if wait {
                    Vec::new()
                } else {
                    let ids: Vec<&str> = rooms.iter().map(|r| r.room_id.as_str()).collect();
                    queries::lock_rooms_at_once(conn, &ids).await?.1
                };
                let later = |room: &RoomBatch| held_elsewhere.contains(&room.room_id);
                // Per room, the events to append, and what becomes of each event of the batch.
                let mut to_append = Vec::with_capacity(rooms.len());
                let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(rooms.len());
                for room in rooms.iter().filter(|r| !later(r)) {
                    let mut append = RoomAppend {
                        room_id: &room.room_id,
                        events: Vec::with_capacity(room.events.len()),
                        txn_ids: Vec::with_capacity(room.events.len()),
                    };
                    let mut outcome = Vec::with_capacity(room.events.len());
                    for (event, key) in room.events.iter().zip(&room.keys) {
                        match key.as_ref().and_then(|k| seen.get(k)) {
                            Some(&first) => outcome.push(Outcome::Seen(first)),
                            None => {
                                outcome.push(Outcome::Appended(append.events.len()));
                                append.events.push(event);
                                append.txn_ids.push(key.as_ref().map(|k| k.txn_id.as_str()));
                            }
                        }
                    }
                    to_append.push(append);
                    outcomes.push(outcome);
                }
                let Batch::Appended(appended) =
                    queries::append_events_batch(conn, &to_append).await?
                else {
                    return Err(Attempt::Repeated);
                };
                let mut woken = Vec::new();
                for a in appended.iter().flatten() {
                    woken.extend(queue_appended(federation, conn, a).await?);
                }
                let mut done = appended
                    .into_iter()
                    .zip(outcomes)
                    .map(|(a, outcome)| a.map(|a| (a.events, outcome)));
                let committed = rooms
                    .iter()
                    .map(|room| {
                        if later(room) {
                            Held::Later
                        } else {
                            Held::Done(done.next().flatten())
                        }
                    })
                    .collect();
                Ok::<_, Attempt>((committed, woken))
            })
            .await;
        match attempt {
            Ok(done) => return Ok(done),
            Err(Attempt::Db(err)) => return Err(err),
            // Once looked up, a repeat can only be a message committed meanwhile by another
            // writer of the same room: look again.
            Err(Attempt::Repeated) => looked_up = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// A change that runs until released and records when it ends.
    fn held(
        name: &'static str,
        log: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (
        oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (release, released) = oneshot::channel::<()>();
        let log = log.clone();
        let job = async move {
            let _ = released.await;
            log.lock().unwrap_or_else(|p| p.into_inner()).push(name);
        };
        (release, job)
    }

    fn log_of(log: &Arc<Mutex<Vec<&'static str>>>) -> Vec<&'static str> {
        log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[tokio::test]
    async fn changes_of_different_rooms_run_at_once_up_to_the_bound() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut changes = Changes::default();
        let mut releases = Vec::new();
        for name in ["a", "b", "c", "d", "e"] {
            let (release, job) = held(name, &log);
            releases.push(release);
            assert!(
                changes
                    .start(format!("!{name}:x"), job)
                    .now_or_never()
                    .is_some(),
                "taken without waiting"
            );
        }
        assert_eq!(changes.tasks.len(), CONCURRENT_CHANGES);
        assert!(changes.is_busy("!e:x"), "the fifth is held back");
        let _ = releases.remove(1).send(());
        changes.one_done().await;
        assert_eq!(log_of(&log), ["b"]);
        assert!(changes.is_running("!e:x"), "started when b ended");
        drop(releases);
        changes.wait_for_all().await;
        assert_eq!(log_of(&log).len(), 5);
    }

    #[tokio::test]
    async fn a_rooms_changes_run_in_queue_order_while_other_rooms_go_past() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut changes = Changes::default();
        let (release_a1, a1) = held("a1", &log);
        let (release_a2, a2) = held("a2", &log);
        let (release_b, b) = held("b", &log);
        for (room, job) in [("!a:x", a1), ("!a:x", a2), ("!b:x", b)] {
            assert!(changes.start(room.into(), job).now_or_never().is_some());
        }
        assert!(changes.is_running("!b:x"), "b goes past a's second change");
        assert_eq!(changes.held.len(), 1, "a's second waits for its first");
        // Releasing a's second before its first changes nothing: it has not started.
        let _ = release_a2.send(());
        let _ = release_b.send(());
        changes.one_done().await;
        assert_eq!(log_of(&log), ["b"]);
        assert!(changes.is_running("!a:x"), "a's first runs on");
        assert_eq!(changes.held.len(), 1, "and its second still waits");
        let _ = release_a1.send(());
        changes.wait_for_all().await;
        assert_eq!(log_of(&log), ["b", "a1", "a2"]);
    }

    #[tokio::test]
    async fn chat_waits_for_a_change_of_its_room_only() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut changes = Changes::default();
        let (release, job) = held("change", &log);
        assert!(changes.start("!a:x".into(), job).now_or_never().is_some());
        assert!(
            changes.wait_for_rooms(&["!b:x"]).now_or_never().is_some(),
            "chat of another room commits at once"
        );
        let mut waiting = Box::pin(changes.wait_for_rooms(&["!b:x", "!a:x"]));
        assert!((&mut waiting).now_or_never().is_none());
        drop(waiting);
        let _ = release.send(());
        changes.wait_for_rooms(&["!a:x"]).await;
        assert_eq!(log_of(&log), ["change"]);
    }
}
