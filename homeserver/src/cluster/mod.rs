//! This process among the workers of its homeserver (README, "Scaling out"; DESIGN.md, "Operating
//! it"). Workers share one Postgres and reach each other only through it:
//!
//! - **Leases.** Every process, the only one of its homeserver too, keeps a row in `workers`
//!   whose lease it renews every third of `cluster.lease`; the rooms it has devices in are rows
//!   of `room_workers` (written by the idle countdown, [`crate::engine::idle`]). A worker whose
//!   lease ran out stops counting as connected anywhere.
//! - **Singletons.** The federation sender and the sweeper run on one worker at a time: the
//!   holder of a session-level advisory lock on this worker's own database session (the
//!   [`Listener`]). Postgres drops the lock with the session, so when the holder dies another
//!   worker takes it at its next tick. The only process of a homeserver holds them all.
//! - **The bus.** Rooms' news (events committed, a room deleted) and the sender's wake-ups go
//!   out as notifications after the commit, batched per channel into payloads under Postgres's
//!   8,000-byte limit ([`wire`]); what arrives is handed to [`Inbound`]'s reader. A worker that
//!   missed some (its session dropped, or the notifier died between its commit and its notify)
//!   is told to [`Inbound::Resync`]: after every reconnection and at every tick, so each room
//!   catches up from its last sequence number within a tick.
//!
//! - **Live news.** What a room does that is not persisted (a device came or went, typing, a
//!   signal, another server's ephemeral event) goes out the same way, at once: to every worker,
//!   or a signal to the channel of the one worker its device is on. Who is connected where is
//!   also kept in `room_devices` (the room's capacity is decided there, under its row lock), which
//!   each worker reads again at every tick, so news missed or a worker that died is caught up.
//!
//! The only process of a homeserver (`cluster.worker_id` empty) sends and listens for nothing.

pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use confab_schema::DbPool;
use confab_schema::cluster::{self as db, Listener, Notification, locks};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::config::ClusterSettings;
use crate::time::now_ms;
use wire::{Message, ROOMS_CHANNEL, SENDER_CHANNEL, worker_channel};

/// The id the only process of a homeserver has among workers.
pub const SOLE_WORKER: &str = "main";

/// How long a spilled payload waits for its reader before it is pruned.
const SPILL_KEPT_MS: i64 = 60_000;

/// What only one worker at a time runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    /// The federation sender.
    Sender,
    /// The sweeper: idle rooms, absent hosts, idle sessions, old transaction ids.
    Sweeper,
}

impl Singleton {
    const ALL: [Singleton; 2] = [Singleton::Sender, Singleton::Sweeper];

    fn lock_key(self) -> i64 {
        match self {
            Singleton::Sender => locks::SENDER,
            Singleton::Sweeper => locks::SWEEPER,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What arrives from the other workers, for the engine and the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A room's events up to `seq` are committed.
    Committed { room_id: String, seq: i64 },
    /// A room was deleted; `reason` as [`crate::engine::CloseReason`] names it.
    Closed { room_id: String, reason: String },
    /// A command for the federation sender (only its holder is told).
    ToSender(SenderCommand),
    /// A room's live news from worker `worker`, as its engine wrote it.
    Live {
        worker: String,
        room_id: String,
        body: String,
    },
    /// Notifications may have been missed: every live room should catch up from the database.
    Resync,
    /// This worker's lease had run out and is renewed again: what it holds must be written
    /// again, since other workers may have taken its rows away meanwhile.
    Reassert,
}

/// What other workers ask of the federation sender's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderCommand {
    /// Rows are queued for `destination`.
    Wake { destination: String },
    /// An operator asked for a delivery attempt to `destination` now.
    Retry { destination: String },
    /// An ephemeral event for `destination`, as JSON.
    Edu { destination: String, edu: String },
}

/// Counters for tests and operators.
#[derive(Debug)]
pub struct ClusterStats {
    /// Notifications sent (each holds one or more messages).
    pub notifications_sent: prometheus::IntCounter,
    /// Messages sent to other workers.
    pub messages_sent: prometheus::IntCounter,
    /// Messages received from other workers.
    pub messages_received: prometheus::IntCounter,
    /// Times the listening session was (re)opened.
    pub listener_connects: AtomicU64,
    /// Notifications that could not be sent (their news reaches others at their next resync).
    pub notify_failures: AtomicU64,
    /// The listening session's backend process id, 0 while there is none.
    pub listener_pid: AtomicI32,
}

impl Default for ClusterStats {
    fn default() -> Self {
        // Static, valid definitions: construction cannot fail.
        let counter = |name: &str, help: &str| {
            prometheus::IntCounter::new(name, help).unwrap_or_else(|_| panic!("metric {name}"))
        };
        Self {
            notifications_sent: counter(
                "bus_notifications_sent_total",
                "Notifications sent to the other workers",
            ),
            messages_sent: counter(
                "bus_messages_sent_total",
                "Messages sent to the other workers (several per notification)",
            ),
            messages_received: counter(
                "bus_messages_received_total",
                "Messages received from the other workers",
            ),
            listener_connects: AtomicU64::default(),
            notify_failures: AtomicU64::default(),
            listener_pid: AtomicI32::default(),
        }
    }
}

impl ClusterStats {
    pub fn listener_connects(&self) -> u64 {
        self.listener_connects.load(Ordering::Relaxed)
    }

    pub fn listener_pid(&self) -> i32 {
        self.listener_pid.load(Ordering::Relaxed)
    }
}

/// This worker; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    worker_id: Arc<str>,
    is_worker: bool,
    outgoing: Option<mpsc::UnboundedSender<(Arc<str>, String)>>,
    /// The channels messages go out on: every worker's, the sender's holder's.
    rooms_channel: Arc<str>,
    sender_channel: Arc<str>,
    leading: [watch::Sender<bool>; 2],
    stats: ClusterStats,
    /// Set by fault tests: this worker behaves as one that dies between its commits and their
    /// notifications.
    dropping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("worker_id", &self.inner.worker_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Registers this worker (letting go of the rooms it held in a previous run under the same
    /// id) and starts its lease and, for one of several workers, its listener and bus. Returns
    /// the cluster and the reader of what arrives.
    pub async fn start(
        settings: &ClusterSettings,
        pool: DbPool,
        database_url: &str,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Inbound>), confab_schema::DbError> {
        let worker_id: Arc<str> = if settings.is_worker() {
            settings.worker_id.as_str().into()
        } else {
            SOLE_WORKER.into()
        };
        let lease_ms = i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX);
        {
            let mut conn = confab_schema::connect(&pool).await?;
            db::start_worker(&mut conn, &worker_id, lease_ms).await?;
        }
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let is_worker = settings.is_worker();
        let (outgoing, outgoing_rx) = if is_worker {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let cluster = Self {
            inner: Arc::new(Inner {
                worker_id,
                is_worker,
                outgoing,
                rooms_channel: ROOMS_CHANNEL.into(),
                sender_channel: SENDER_CHANNEL.into(),
                // The only process of a homeserver holds every singleton.
                leading: [
                    watch::Sender::new(!is_worker),
                    watch::Sender::new(!is_worker),
                ],
                stats: ClusterStats::default(),
                dropping: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        let weak = Arc::downgrade(&cluster.inner);
        tokio::spawn(renew_lease(
            weak.clone(),
            pool.clone(),
            settings.lease,
            inbound_tx.clone(),
        ));
        if let Some(rx) = outgoing_rx {
            tokio::spawn(send_notifications(
                cluster.inner.worker_id.clone(),
                pool.clone(),
                rx,
                weak.clone(),
            ));
            tokio::spawn(listen(
                weak,
                pool,
                database_url.to_owned(),
                settings.lease / 3,
                inbound_tx,
            ));
        }
        Ok((cluster, inbound_rx))
    }

    /// This worker's id (`main` for the only process of a homeserver).
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Whether this process is one of several workers.
    pub fn is_worker(&self) -> bool {
        self.inner.is_worker
    }

    /// Whether this worker runs `singleton` now.
    pub fn leads(&self, singleton: Singleton) -> bool {
        *self.inner.leading[singleton.index()].borrow()
    }

    /// Follows whether this worker runs `singleton`.
    pub fn leadership(&self, singleton: Singleton) -> watch::Receiver<bool> {
        self.inner.leading[singleton.index()].subscribe()
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.inner.stats
    }

    /// Tells the other workers that a room's events up to `seq` are committed.
    pub fn committed(&self, room_id: &str, seq: i64) {
        // On the hot path of every commit: the only process builds nothing.
        if self.inner.outgoing.is_none() {
            return;
        }
        self.send(
            &self.inner.rooms_channel,
            Message::Committed {
                room_id: room_id.to_owned(),
                seq,
            },
        );
    }

    /// Tells the other workers that a room was deleted.
    pub fn closed(&self, room_id: &str, reason: &str) {
        self.send(
            &self.inner.rooms_channel,
            Message::Closed {
                room_id: room_id.to_owned(),
                reason: reason.to_owned(),
            },
        );
    }

    /// Passes a command to the worker that runs the federation sender.
    pub fn to_sender(&self, message: Message) {
        self.send(&self.inner.sender_channel, message);
    }

    /// Tells a room's live news (`body`, as the engine writes it) to worker `to`, or to all.
    pub fn live(&self, room_id: &str, body: String, to: Option<&str>) {
        if self.inner.outgoing.is_none() {
            return;
        }
        let message = Message::Live {
            room_id: room_id.to_owned(),
            body,
        };
        match to {
            Some(worker) => self.send(&worker_channel(worker).into(), message),
            None => self.send(&self.inner.rooms_channel, message),
        }
    }

    /// This worker stops for good (a graceful shutdown): its rows go, so that the rooms only it
    /// held start their countdown at the next sweep rather than a lease later.
    pub async fn retire(&self, pool: &DbPool) -> Result<(), confab_schema::DbError> {
        let mut conn = confab_schema::connect(pool).await?;
        db::retire_worker(&mut conn, &self.inner.worker_id).await?;
        Ok(())
    }

    /// For fault tests: while set, nothing this worker has to tell the others is sent, as if
    /// it died after each commit and before its notification.
    pub fn drop_notifications(&self, dropping: bool) {
        self.inner.dropping.store(dropping, Ordering::Relaxed);
    }

    fn send(&self, channel: &Arc<str>, message: Message) {
        if self.inner.dropping.load(Ordering::Relaxed) {
            return;
        }
        if let Some(outgoing) = &self.inner.outgoing {
            let _ = outgoing.send((channel.clone(), message.to_line()));
        }
    }
}

/// Renews this worker's lease every third of it, until the cluster is gone; on the way out the
/// worker's rows go (its rooms start their countdown at the next sweep, unless others hold
/// them). A renewal after the lease had run out asks for [`Inbound::Reassert`].
async fn renew_lease(
    cluster: std::sync::Weak<Inner>,
    pool: DbPool,
    lease: Duration,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        let worker_id = inner.worker_id.clone();
        drop(inner);
        let result = async {
            let mut conn = confab_schema::connect(&pool).await?;
            db::renew_worker(&mut conn, &worker_id, lease_ms).await
        }
        .await;
        match result {
            Ok(()) => {
                if renewed.elapsed() >= lease {
                    tracing::warn!(worker = %worker_id, "lease renewed after it had run out");
                    let _ = inbound.send(Inbound::Reassert);
                }
                renewed = tokio::time::Instant::now();
            }
            Err(err) => {
                tracing::warn!(worker = %worker_id, error = %err, "could not renew this worker's lease")
            }
        }
    }
}

/// Sends what was queued for the other workers: everything waiting is taken at once and sent
/// in one statement, a payload per channel and 7,900 bytes.
async fn send_notifications(
    worker_id: Arc<str>,
    pool: DbPool,
    mut rx: mpsc::UnboundedReceiver<(Arc<str>, String)>,
    cluster: std::sync::Weak<Inner>,
) {
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, 4096).await > 0 {
        let lines = queued.len();
        let result = async {
            let mut conn = confab_schema::connect(&pool).await?;
            let mut channels: Vec<Arc<str>> = Vec::new();
            let mut payloads = Vec::new();
            let mut by_channel: Vec<(Arc<str>, Vec<String>)> = Vec::new();
            for (channel, line) in queued.drain(..) {
                match by_channel.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, lines)) => lines.push(line),
                    None => by_channel.push((channel, vec![line])),
                }
            }
            for (channel, mut lines) in by_channel {
                let (packed, too_large) = wire::pack(&worker_id, &lines, db::MAX_PAYLOAD_BYTES);
                lines.clear();
                for line in too_large {
                    let id = db::spill(&mut conn, &line, now_ms()).await?;
                    lines.push(Message::Spilled { id }.to_line());
                }
                let (spilled, _) = wire::pack(&worker_id, &lines, db::MAX_PAYLOAD_BYTES);
                for payload in packed.into_iter().chain(spilled) {
                    channels.push(channel.clone());
                    payloads.push(payload);
                }
            }
            let channels: Vec<&str> = channels.iter().map(|c| &**c).collect();
            let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
            db::notify(&mut conn, &channels, &payloads).await?;
            Ok::<_, confab_schema::DbError>(payloads.len())
        }
        .await;
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        match result {
            Ok(sent) => {
                inner.stats.notifications_sent.inc_by(sent as u64);
                inner.stats.messages_sent.inc_by(lines as u64);
            }
            Err(err) => {
                inner.stats.notify_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, lost = lines, "could not notify the other workers; they catch up at their next resync");
            }
        }
        drop(inner);
        queued.clear();
    }
}

/// Keeps this worker's own session open: listens on the bus, takes the singletons nobody
/// holds, and passes on what arrives. When the session is lost every singleton is let go at
/// once (Postgres lets go of its locks too), and it is opened again.
async fn listen(
    cluster: std::sync::Weak<Inner>,
    pool: DbPool,
    url: String,
    tick_every: Duration,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A worker whose session was lost leaves the singletons to the others for a lease: its
    // connection to the database has just proved unreliable, and the others tick meanwhile.
    let mut humble_until = tokio::time::Instant::now();
    loop {
        retry.tick().await;
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        let worker_id = inner.worker_id.clone();
        drop(inner);
        let own = worker_channel(&worker_id);
        // Worker ids are of a-z, 0-9, '-' and '_' (validated with the settings).
        let name = format!("confab worker {worker_id}");
        let channels = [ROOMS_CHANNEL, SENDER_CHANNEL, &own];
        let mut listener = match Listener::connect(&url, &channels, &name).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open this worker's listening session; retrying");
                continue;
            }
        };
        if let Some(inner) = cluster.upgrade() {
            inner
                .stats
                .listener_connects
                .fetch_add(1, Ordering::Relaxed);
            let pid = listener.backend_pid().await.unwrap_or(0);
            inner.stats.listener_pid.store(pid, Ordering::Relaxed);
        }
        tracing::info!(worker = %worker_id, "listening to the other workers");
        let ended = serve_session(
            &cluster,
            &pool,
            &mut listener,
            (tick_every, humble_until),
            &inbound,
        )
        .await;
        humble_until = tokio::time::Instant::now() + tick_every * 3;
        if let Some(inner) = cluster.upgrade() {
            inner.stats.listener_pid.store(0, Ordering::Relaxed);
            for leading in &inner.leading {
                leading.send_if_modified(|l| std::mem::replace(l, false));
            }
        }
        match ended {
            Some(err) => {
                tracing::warn!(worker = %worker_id, error = %err, "this worker's listening session was lost; its singletons are let go")
            }
            None => return,
        }
    }
}

/// One session's life; returns why it ended (`None`: the cluster is gone).
async fn serve_session(
    cluster: &std::sync::Weak<Inner>,
    pool: &DbPool,
    listener: &mut Listener,
    (tick_every, humble_until): (Duration, tokio::time::Instant),
    inbound: &mpsc::UnboundedSender<Inbound>,
) -> Option<confab_schema::DbError> {
    enum Step {
        Note(Option<Result<Notification, confab_schema::DbError>>),
        Tick,
    }
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            note = async { std::pin::pin!(listener.notifications()).next().await } => Step::Note(note),
            _ = tick.tick() => Step::Tick,
        };
        let inner = cluster.upgrade()?;
        match step {
            Step::Note(Some(Ok(note))) => {
                let leads_sender = *inner.leading[Singleton::Sender.index()].borrow();
                let received = receive(&inner.worker_id, leads_sender, pool, note, inbound).await;
                inner.stats.messages_received.inc_by(received as u64);
            }
            Step::Note(Some(Err(err))) => return Some(err),
            Step::Note(None) => {
                return Some(confab_schema::DbError::Unavailable(
                    "listening session closed".into(),
                ));
            }
            Step::Tick => {
                if let Err(err) = listener.ping().await {
                    return Some(err);
                }
                let humble = tokio::time::Instant::now() < humble_until;
                for singleton in Singleton::ALL {
                    let leading = &inner.leading[singleton.index()];
                    if humble || *leading.borrow() {
                        continue;
                    }
                    match listener.try_lock(singleton.lock_key()).await {
                        Ok(true) => {
                            tracing::info!(worker = %inner.worker_id, ?singleton, "this worker now runs it");
                            leading.send_replace(true);
                        }
                        Ok(false) => {}
                        Err(err) => return Some(err),
                    }
                }
                // A worker that died between its commit and its notify told nobody.
                let _ = inbound.send(Inbound::Resync);
                if *inner.leading[Singleton::Sweeper.index()].borrow()
                    && let Ok(mut conn) = confab_schema::connect(pool).await
                {
                    let _ = db::prune_spill(&mut conn, now_ms() - SPILL_KEPT_MS).await;
                }
            }
        }
    }
}

/// Passes on one notification's messages, but for this worker's own; returns how many.
async fn receive(
    worker_id: &str,
    leads_sender: bool,
    pool: &DbPool,
    note: Notification,
    inbound: &mpsc::UnboundedSender<Inbound>,
) -> usize {
    let (from, messages) = wire::unpack(&note.payload);
    if from == worker_id {
        return 0;
    }
    if note.channel == SENDER_CHANNEL && !leads_sender {
        return 0;
    }
    let count = messages.len();
    for message in messages {
        match message {
            Message::Spilled { id } => {
                // Read once, by the worker (or the sender's holder) its channel is for.
                let spilled = async {
                    let mut conn = confab_schema::connect(pool).await?;
                    db::take_spilled(&mut conn, id).await
                }
                .await;
                match spilled {
                    Ok(Some(payload)) => {
                        for message in payload.split('\n').filter_map(Message::parse) {
                            pass_on(from, message, inbound);
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(id, error = %err, "could not read a spilled notification")
                    }
                }
            }
            message => pass_on(from, message, inbound),
        }
    }
    count
}

fn pass_on(from: &str, message: Message, inbound: &mpsc::UnboundedSender<Inbound>) {
    let arrived = match message {
        Message::Committed { room_id, seq } => Inbound::Committed { room_id, seq },
        Message::Closed { room_id, reason } => Inbound::Closed { room_id, reason },
        Message::Wake { destination } => Inbound::ToSender(SenderCommand::Wake { destination }),
        Message::Retry { destination } => Inbound::ToSender(SenderCommand::Retry { destination }),
        Message::Edu { destination, edu } => {
            Inbound::ToSender(SenderCommand::Edu { destination, edu })
        }
        Message::Live { room_id, body } => Inbound::Live {
            worker: from.to_owned(),
            room_id,
            body,
        },
        // Not nested: a spilled payload holds the lines themselves.
        Message::Spilled { .. } => return,
    };
    let _ = inbound.send(arrived);
}
