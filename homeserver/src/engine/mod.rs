//! The live room engine: the only place a room's live state changes.
//!
//! - [`room`]: the rules of one live room, a state machine with no I/O (its unit tests drive
//!   every race by calling it directly, in each order).
//! - [`live`]: the registry of live rooms, each owned by one [`room::RoomState`] behind a lock
//!   never held across an await; fan-out of committed events and a subscriber's catch-up.
//! - [`idle`]: the idle countdown's rules and its writes.
//! - [`writer`]: the one path of every event a room of ours appends (append and federation queue
//!   in one transaction, then fan-out).
//! - [`conn`]: a socket's sending side.
//!
//! [`Engine`] is what sockets and services call. Whether a room is ours or a replica is decided
//! here: a replica's chat goes to its origin (which numbers it), a replica's new subscriber is
//! announced to the origin, which answers with who else is connected.
//!
//! Why a lock and not a task per room: the relay of signaling is the hot path, and a task per
//! room would add a second wake per message (socket → room → socket) on a two-core machine,
//! where the bare relay has one. The lock gives the same single order of decisions; everything
//! that must wait (the database, other servers) happens outside it, ordered by the room's
//! fan-out and countdown locks (see [`live`]).

pub mod conn;
pub mod idle;
pub mod live;
pub mod reply;
pub mod room;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use confab_federation::ids::{RoomId, ServerName};
use confab_schema::DbPool;
use confab_schema::models::{Event, NewEvent};

pub use crate::sessions::Identity;
pub use conn::{CLOSE_SLOW_CONSUMER, ConnHandle};
pub use reply::ChatReply;
pub use room::{CloseReason, edu};

use crate::cluster::Cluster;
use crate::config::Settings;
use crate::error::{ApiError, ErrorCode};
use crate::federation::client::FederationClient;
use crate::federation::rooms::forwarder::ChatForwarder;
use crate::federation::rooms::outbound;
use crate::federation::rooms::wire::SendItem;
use crate::federation::sender::TransactionSender;
use crate::metrics::Metrics;
use crate::protocol::{ConnectedDevice, Outgoing};
use crate::time::now_ms;
use confab_schema::cluster::ConnectionRefused;
use idle::Countdown;
use live::{LiveRoom, LiveRooms};
use room::RoomLimits;
use writer::EventWriter;

fn too_many_for_user(open: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyConnections,
        format!("this user already has {open} live connections, the most allowed; close one"),
    )
}

/// What other workers tell a worker's engine (see [`crate::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomNews {
    /// A room was deleted.
    Closed {
        room_id: String,
        reason: CloseReason,
    },
    /// Notifications may have been missed: every live room catches up from the table.
    Resync,
    /// This worker's rows may have been taken away: write them again.
    Reassert,
    /// A room's live news from another worker, as its engine wrote it.
    Live {
        worker: String,
        room_id: String,
        body: String,
    },
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// An engine that ends the tasks holding it once the server is gone.
pub struct WeakEngine(Weak<Inner>);

impl WeakEngine {
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

struct Inner {
    live: Arc<LiveRooms>,
    writer: EventWriter,
    /// Authenticated sockets, by user.
    conns: Mutex<HashMap<String, Vec<ConnHandle>>>,
    next_conn_id: AtomicU64,
    max_connections_per_user: usize,
    max_connections_per_address: usize,
    max_event_bytes: usize,
    /// How long a subscriber's backlog may wait for the client to read (its socket's reader,
    /// which notices a dead client, waits meanwhile).
    catch_up_patience: Duration,
    metrics: Metrics,
    client: FederationClient,
    forwarder: ChatForwarder,
    /// Chat handed to the worker that writes its room, by request, waiting for its answer.
    handed_on: Mutex<HashMap<u64, HandedOn>>,
    next_request: AtomicU64,
    /// Writers that did not answer in time, and since when: chat for their rooms is written
    /// here for a lease (they may be dead; their devices stop counting when it runs out).
    silent: Mutex<HashMap<String, Instant>>,
    lease: Duration,
}

/// Chat handed to another worker, kept until it answers.
struct HandedOn {
    reply: ChatReply,
    room_id: String,
    writer: String,
    event: NewEvent,
    txn_id: String,
}

/// How long chat handed to another worker waits for its answer before it is written here
/// instead, under the same transaction id, so that it is appended once even if the other did
/// append it.
const HANDED_ON_PATIENCE: Duration = Duration::from_secs(1);

impl Engine {
    /// The engine, with its writer tasks started on the current runtime.
    pub fn start(
        settings: &Settings,
        pool: DbPool,
        metrics: Metrics,
        sender: TransactionSender,
        client: FederationClient,
        cluster: Cluster,
    ) -> Self {
        let countdown = Countdown::new(settings.rooms.idle_ttl, cluster.worker_id());
        let live = Arc::new(LiveRooms::new(
            pool,
            metrics.clone(),
            sender.clone(),
            settings.server.name.clone(),
            RoomLimits {
                max_participants: settings.rooms.max_participants,
                max_devices_per_user: settings.limits.max_connections_per_user,
            },
            countdown,
            cluster,
        ));
        let writer = EventWriter::start(live.clone(), metrics.clone(), sender);
        Self {
            inner: Arc::new(Inner {
                live,
                writer,
                conns: Mutex::default(),
                next_conn_id: AtomicU64::new(1),
                max_connections_per_user: settings.limits.max_connections_per_user,
                max_connections_per_address: settings.limits.max_connections_per_address,
                max_event_bytes: settings.limits.max_event_bytes,
                catch_up_patience: settings.websocket.client_timeout,
                metrics,
                client,
                forwarder: ChatForwarder::default(),
                handed_on: Mutex::default(),
                next_request: AtomicU64::new(1),
                silent: Mutex::default(),
                lease: settings.cluster.lease,
            }),
        }
    }

    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    fn live(&self) -> &LiveRooms {
        &self.inner.live
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        self.live().server_name()
    }

    /// The idle countdown's rules.
    pub fn countdown(&self) -> &Countdown {
        self.live().countdown()
    }

    /// The event writer: the only way events are appended to rooms of ours.
    pub fn writer(&self) -> &EventWriter {
        &self.inner.writer
    }

    pub fn pool(&self) -> &DbPool {
        self.live().pool()
    }

    // ---- sockets ---------------------------------------------------------------------------

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<ConnHandle>>> {
        self.inner.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an authenticated socket, enforcing the per-user connection limit (and, with
    /// several workers, both it and the per-address one across all of them, in the database).
    pub async fn register(
        &self,
        user_id: &str,
        conn: &ConnHandle,
        address: &str,
    ) -> Result<(), ApiError> {
        self.register_here(user_id, conn)?;
        if !self.live().is_shared() {
            return Ok(());
        }
        let inner = &self.inner;
        let limits = (
            inner.max_connections_per_user,
            inner.max_connections_per_address,
        );
        let opened = async {
            let mut db = confab_schema::connect(self.pool()).await?;
            confab_schema::cluster::open_connection(
                &mut db,
                (self.live().worker_id(), conn.id as i64),
                (user_id, address),
                limits,
            )
            .await
        }
        .await;
        let refused = match opened {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(ConnectionRefused::User(open))) => too_many_for_user(open),
            Ok(Err(ConnectionRefused::Address(open))) => ApiError::new(
                ErrorCode::TooManyConnections,
                format!("{open} live connections from this address already, the most allowed"),
            ),
            Err(err) => err.into(),
        };
        self.forget(user_id, conn);
        Err(refused)
    }

    fn register_here(&self, user_id: &str, conn: &ConnHandle) -> Result<(), ApiError> {
        let mut conns = self.conns();
        let mine = conns.entry(user_id.to_owned()).or_default();
        if mine.len() >= self.inner.max_connections_per_user {
            let open = mine.len();
            if open == 0 {
                conns.remove(user_id);
            }
            return Err(too_many_for_user(open));
        }
        mine.push(conn.clone());
        self.inner.metrics.ws_connections.inc();
        Ok(())
    }

    /// Forgets a registered socket here; returns whether it was registered.
    fn forget(&self, user_id: &str, conn: &ConnHandle) -> bool {
        let mut conns = self.conns();
        let Some(mine) = conns.get_mut(user_id) else {
            return false;
        };
        let before = mine.len();
        mine.retain(|c| c.id != conn.id);
        let forgotten = mine.len() < before;
        if forgotten {
            self.inner.metrics.ws_connections.dec();
        }
        if mine.is_empty() {
            conns.remove(user_id);
        }
        forgotten
    }

    /// Forgets a socket and ends its subscriptions.
    pub async fn disconnect(&self, who: &Identity, conn: &ConnHandle, rooms: &[String]) {
        let forgotten = self.forget(&who.user_id, conn);
        for room_id in rooms {
            self.unsubscribe(room_id, who, conn.id).await;
        }
        if forgotten && self.live().is_shared() {
            let closed = async {
                let mut db = confab_schema::connect(self.pool()).await?;
                confab_schema::cluster::close_connection(
                    &mut db,
                    self.live().worker_id(),
                    conn.id as i64,
                )
                .await
            }
            .await;
            if let Err(err) = closed {
                // It counts until this worker's lease runs out.
                tracing::warn!(user = %who.user_id, error = %err, "could not forget a connection");
            }
        }
    }

    /// Closes every socket of one user (a session ended).
    pub fn close_user(&self, user_id: &str, code: u16, reason: &str) {
        for conn in self.conns().get(user_id).into_iter().flatten() {
            conn.close(code, reason);
        }
    }

    /// Tells every socket the server is going away, and closes it.
    pub fn shutdown(&self) {
        let frame = Outgoing::Shutdown {
            reason: "server restarting",
            retry_after_ms: 1000,
        }
        .to_frame();
        for conn in self.conns().values().flatten() {
            conn.send(frame.clone());
            conn.close(1012, "server restarting");
        }
    }

    /// Makes `conn` `who`'s live subscription to the room, if they are a member and there is a
    /// place; the first one here stops the room's idle countdown, and on a replica the origin is
    /// told (and answers with who else is connected). Returns once the subscriber is admitted;
    /// the caller then acks and calls [`Engine::catch_up`].
    pub async fn subscribe(
        &self,
        room_id: &RoomId,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
    ) -> Result<Arc<LiveRoom>, ApiError> {
        let live = self.live().load(room_id.as_str()).await?;
        if self.live().is_shared() {
            // Several workers: the place is decided in the database first (a non-member is
            // refused before it writes anything).
            if let Some(refused) = live.read(|s| s.subscribe_refusal(&who.user_id)) {
                return Err(refused);
            }
            let device = ConnectedDevice {
                user_id: who.user_id.clone(),
                device_id: who.device_id.clone(),
                display_name: who.display_name.clone(),
            };
            self.live().admit(&live, &device, conn.id).await?;
            let subscribed = self
                .live()
                .with(&live, |s, fx| s.subscribe(who, conn, since, fx));
            if let Err(err) = subscribed {
                let id = (who.user_id.as_str(), who.device_id.as_str());
                self.live().release(room_id.as_str(), id, conn.id).await;
                return Err(err);
            }
        } else {
            self.live()
                .with(&live, |s, fx| s.subscribe(who, conn, since, fx))?;
        }
        let admitted = async {
            if !self.live().sync_idle(&live).await? {
                return Err(ApiError::room_not_found());
            }
            if room_id.server_name() != self.server_name() {
                // A replica: if the origin cannot be reached the room still works here,
                // read-only in effect; if it refuses (no longer a member, room full), so do we.
                match outbound::announce(&self.inner.client, room_id, who).await {
                    Ok(connected) => {
                        let ours = self.server_name().as_str();
                        self.live().with(&live, |s, fx| {
                            s.set_remote_devices(&connected, ours, Instant::now(), fx)
                        });
                    }
                    Err(err) if err.code == ErrorCode::Unavailable => {
                        tracing::warn!(room_id = %room_id, error = %err, "could not announce a device to the room's origin");
                    }
                    Err(err) => return Err(err),
                }
            }
            Ok(())
        }
        .await;
        if let Err(err) = admitted {
            self.unsubscribe(room_id.as_str(), who, conn.id).await;
            return Err(err);
        }
        Ok(live)
    }

    /// Sends a new subscriber its backlog, then switches it to live delivery.
    pub async fn catch_up(
        &self,
        live: &LiveRoom,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
    ) -> Result<(), ApiError> {
        self.live()
            .catch_up(live, who, conn, since, self.inner.catch_up_patience)
            .await
    }

    /// Ends one socket's subscription; the last one out starts the room's idle countdown.
    /// Returns whether it was subscribed.
    pub async fn unsubscribe(&self, room_id: &str, who: &Identity, conn_id: u64) -> bool {
        let Some(live) = self.live().get(room_id) else {
            return false;
        };
        let removed = self
            .live()
            .with(&live, |s, fx| s.unsubscribe(who, conn_id, fx));
        if removed {
            self.live().sync_idle_logged(&live).await;
        }
        removed
    }

    /// Sends a chat message (`kind`, `ciphertext`): appended here for a room of ours, forwarded
    /// to the origin for a replica. `reply` gets its number and time once committed, or why not;
    /// a message with a `txn_id` already committed gets the first answer again.
    pub async fn chat(
        &self,
        live: &LiveRoom,
        who: &Identity,
        conn_id: u64,
        (kind, ciphertext): (&str, &str),
        txn_id: Option<&str>,
        reply: ChatReply,
    ) {
        let metrics = &self.inner.metrics;
        let checked =
            crate::protocol::checked_chat_content(kind, ciphertext, self.inner.max_event_bytes)
                .and_then(|content| {
                    let ours = live.read(|s| {
                        s.check_chat(who, conn_id)?;
                        Ok::<_, ApiError>(s.origin_is_self())
                    })?;
                    Ok((content, ours))
                });
        let (content, ours) = match checked {
            Ok(checked) => checked,
            Err(err) => return reply.answer_now(Err(err), metrics),
        };
        let room_id = live.room_id();
        if ours {
            let event = NewEvent {
                sender: who.user_id.clone(),
                device_id: who.device_id.clone(),
                origin_ts: now_ms(),
                content,
            };
            if let Some(writer) = live
                .read(|s| s.writer(self.live().worker_id()))
                .filter(|w| !self.is_silent(w))
            {
                // Always with a transaction id: written here after all if the writer is
                // silent, it must not be appended twice.
                let txn_id = txn_id.map_or_else(crate::sessions::new_token, str::to_owned);
                return self.hand_on(room_id, writer, event, txn_id, reply);
            }
            let txn_id = txn_id.map(str::to_owned);
            return self
                .inner
                .writer
                .enqueue(room_id, event, txn_id, reply)
                .await;
        }
        let origin = match RoomId::parse(room_id) {
            Ok(id) => id.server_name().clone(),
            Err(e) => {
                let err = ApiError::new(ErrorCode::BadRoomId, format!("room id: {e}"));
                return reply.answer_now(Err(err), metrics);
            }
        };
        let item = SendItem {
            room_id: room_id.to_owned(),
            sender: who.user_id.clone(),
            device_id: who.device_id.clone(),
            kind: kind.to_owned(),
            ciphertext: ciphertext.to_owned(),
            // Always one, so that a forwarded batch sent again (a retry, or a replay) appends
            // nothing twice at the origin.
            txn_id: Some(txn_id.map_or_else(crate::sessions::new_token, str::to_owned)),
        };
        let rx = self
            .inner
            .forwarder
            .forward(&self.inner.client, &origin, item)
            .await;
        // The origin's answer comes back over HTTP, not with a fan-out of ours.
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let result = rx.await.unwrap_or_else(|_| {
                Err(ApiError::internal("chat forwarder", &"forwarder stopped"))
            });
            reply.answer_now(result, &metrics);
        });
    }

    /// Hands a subscriber's chat to the worker that writes its room; its answer comes back
    /// over the bus ([`Self::from_other_worker`]), or, if none comes in time, it is written here.
    fn hand_on(
        &self,
        room_id: &str,
        writer: String,
        event: NewEvent,
        txn_id: String,
        reply: ChatReply,
    ) {
        let request = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let text = |field: &str| event.content[field].as_str().unwrap_or_default().to_owned();
        let chat = room::ToWorkers::Chat {
            reply_to: self.live().worker_id().to_owned(),
            request,
            sender: event.sender.clone(),
            device_id: event.device_id.clone(),
            kind: text("kind"),
            ciphertext: text("ciphertext"),
            txn_id: Some(txn_id.clone()),
        };
        self.live().tell(room_id, &chat, Some(&writer));
        self.handed_on().insert(
            request,
            HandedOn {
                reply,
                room_id: room_id.to_owned(),
                writer,
                event,
                txn_id,
            },
        );
        let engine = self.downgrade();
        tokio::spawn(async move {
            tokio::time::sleep(HANDED_ON_PATIENCE).await;
            if let Some(engine) = engine.upgrade() {
                engine.write_unanswered(request).await;
            }
        });
    }

    fn handed_on(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HandedOn>> {
        self.inner
            .handed_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn silent(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.inner.silent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `worker` left chat handed to it unanswered within the last lease.
    fn is_silent(&self, worker: &str) -> bool {
        let lease = self.inner.lease;
        let mut silent = self.silent();
        silent.retain(|_, since| since.elapsed() < lease);
        silent.contains_key(worker)
    }

    /// Writes here chat whose writer did not answer in time (if it is still waiting).
    async fn write_unanswered(&self, request: u64) {
        let Some(waiting) = self.handed_on().remove(&request) else {
            return;
        };
        tracing::warn!(worker = %waiting.writer, room_id = %waiting.room_id, "a worker did not answer chat handed to it; written here");
        self.silent().insert(waiting.writer, Instant::now());
        self.inner
            .writer
            .enqueue(
                &waiting.room_id,
                waiting.event,
                Some(waiting.txn_id),
                waiting.reply,
            )
            .await;
    }

    /// Appends chat another worker handed on, and sends it the answer.
    async fn write_handed_on(&self, room_id: &str, chat: room::ToWorkers) {
        let room::ToWorkers::Chat {
            reply_to,
            request,
            sender,
            device_id,
            kind,
            ciphertext,
            txn_id,
        } = chat
        else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        match crate::protocol::checked_chat_content(&kind, &ciphertext, self.inner.max_event_bytes)
        {
            Ok(content) => {
                let event = NewEvent {
                    sender,
                    device_id,
                    origin_ts: now_ms(),
                    content,
                };
                self.inner
                    .writer
                    .enqueue(room_id, event, txn_id, ChatReply::Caller(tx))
                    .await;
            }
            Err(err) => {
                let _ = tx.send(Err(err));
            }
        }
        let live = self.inner.live.clone();
        let room_id = room_id.to_owned();
        tokio::spawn(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err(ApiError::internal("chat writer", &"the writer stopped")));
            let answer = room::ToWorkers::ChatAnswer {
                request,
                committed: result.as_ref().ok().copied(),
                error: result.err().map(|e| (e.code, e.reason)),
            };
            live.tell(&room_id, &answer, Some(&reply_to));
        });
    }

    /// Answers chat this worker handed on with the writer's answer.
    fn answer_handed_on(&self, answer: room::ToWorkers) {
        let room::ToWorkers::ChatAnswer {
            request,
            committed,
            error,
        } = answer
        else {
            return;
        };
        let Some(waiting) = self.handed_on().remove(&request) else {
            // Too late: it was written here meanwhile.
            return;
        };
        let result = match (committed, error) {
            (Some(committed), _) => Ok(committed),
            (None, Some((code, reason))) => Err(ApiError::new(code, reason)),
            (None, None) => Err(ApiError::internal("chat writer", &"no answer")),
        };
        waiting.reply.answer_now(result, &self.inner.metrics);
    }

    /// Relays an opaque signaling payload from a subscriber to one device of the room. The
    /// socket holds the room it subscribed to, so the relay path looks nothing up but the two
    /// devices.
    pub fn signal(
        &self,
        live: &LiveRoom,
        who: &Identity,
        conn_id: u64,
        to: (&str, &str),
        payload: &str,
    ) -> Result<(), ApiError> {
        self.live()
            .with(live, |s, fx| s.signal(who, conn_id, to, payload, fx))?;
        self.inner.metrics.signals_relayed.inc();
        Ok(())
    }

    /// Tells the room's other devices that a subscriber is (not) typing.
    pub fn typing(
        &self,
        live: &LiveRoom,
        who: &Identity,
        conn_id: u64,
        typing: bool,
    ) -> Result<(), ApiError> {
        self.live()
            .with(live, |s, fx| s.typing(who, conn_id, typing, fx))
    }

    /// The room's live state here, if it has any.
    pub fn room(&self, room_id: &str) -> Option<Arc<LiveRoom>> {
        self.live().get(room_id)
    }

    // ---- services ----------------------------------------------------------------------------

    /// Fans committed events of a room out (a replica's, applied from its origin).
    pub async fn publish(&self, room_id: &str, events: &[Event]) {
        self.live().publish(room_id, events, Vec::new()).await;
    }

    /// Forgets a deleted room and tells its subscribers, here and on the other workers.
    pub fn close(&self, room_id: &str, reason: CloseReason) {
        self.live().close(room_id, reason);
    }

    /// Brings the rooms live here up to what other workers committed (a batch of rooms and
    /// the numbers committed up to), read in one query.
    pub async fn committed_elsewhere(&self, news: &[(String, i64)]) {
        self.live().catch_up_many(news).await;
    }

    /// Applies what another worker did: its committed events reach the subscribers here (read
    /// from the table, in order, once), a room it deleted is closed here.
    pub async fn from_other_worker(&self, news: RoomNews) {
        match news {
            RoomNews::Closed { room_id, reason } => self.live().close_here(&room_id, reason),
            RoomNews::Resync => {
                self.live().resync().await;
                self.live().refresh_peers().await;
            }
            RoomNews::Live {
                worker,
                room_id,
                body,
            } => match serde_json::from_str::<room::ToWorkers>(&body) {
                Ok(chat @ room::ToWorkers::Chat { .. }) => {
                    self.write_handed_on(&room_id, chat).await
                }
                Ok(answer @ room::ToWorkers::ChatAnswer { .. }) => self.answer_handed_on(answer),
                Ok(news) => self.live().from_peer(&worker, &room_id, news).await,
                Err(err) => {
                    tracing::warn!(%worker, %room_id, error = %err, "unreadable news from another worker")
                }
            },
            RoomNews::Reassert => self.live().reassert().await,
        }
    }

    /// Number of rooms with live state here.
    pub fn live_rooms(&self) -> usize {
        self.live().len()
    }

    /// The devices connected to a room.
    pub fn connected_devices(&self, room_id: &str) -> Vec<ConnectedDevice> {
        self.live()
            .get(room_id)
            .map(|l| l.read(|s| s.connected_devices()))
            .unwrap_or_default()
    }

    /// The users connected to a room (here or through other servers).
    pub fn connected_user_ids(&self, room_id: &str) -> std::collections::HashSet<String> {
        self.connected_devices(room_id)
            .into_iter()
            .map(|d| d.user_id)
            .collect()
    }

    /// The live rooms of ours with at least one user connected.
    pub fn occupied_rooms(&self) -> Vec<String> {
        self.live()
            .all()
            .into_iter()
            .filter(|l| l.read(|s| s.origin_is_self() && s.user_count() > 0))
            .map(|l| l.room_id().to_owned())
            .collect()
    }

    /// Number of distinct users connected to a room.
    pub fn connected_users(&self, room_id: &str) -> usize {
        self.live()
            .get(room_id)
            .map_or(0, |l| l.read(|s| s.user_count()))
    }

    /// Whether `user_id` has a device connected to the room.
    pub fn is_connected(&self, room_id: &str, user_id: &str) -> bool {
        self.live()
            .get(room_id)
            .is_some_and(|l| l.read(|s| s.has_user(user_id)))
    }

    /// Whether `user_id` is a joined member, as the room's owner knows it (loading it).
    pub async fn is_member(&self, room_id: &str, user_id: &str) -> Result<bool, ApiError> {
        let live = self.live().load(room_id).await?;
        Ok(live.read(|s| s.is_member(user_id)))
    }

    /// Re-reads a room's membership from its row (see [`LiveRooms::refresh_members`]).
    pub async fn refresh_members(&self, room_id: &str) -> Result<(), ApiError> {
        self.live().refresh_members(room_id).await
    }

    /// Takes a member who left out of the room's live state before the log says so.
    pub async fn member_gone(&self, room_id: &str, user_id: &str) {
        if let Some(live) = self.live().get(room_id) {
            self.live().with(&live, |s, fx| s.member_gone(user_id, fx));
            self.live().sync_idle_logged(&live).await;
        }
    }

    // ---- other homeservers -------------------------------------------------------------------

    /// A device connected to or left the room through homeserver `from`. `load` creates the
    /// room's live state if there is none (the origin must; a replica with nobody connected has
    /// nobody to tell). Returns who is connected now.
    pub async fn remote_presence(
        &self,
        room_id: &str,
        from: &str,
        device: &ConnectedDevice,
        online: bool,
        load: bool,
    ) -> Result<Vec<ConnectedDevice>, ApiError> {
        let live = match self.live().get(room_id) {
            Some(live) => live,
            None if load => self.live().load(room_id).await?,
            None => return Ok(Vec::new()),
        };
        // On the origin with several workers, a device another server announces takes its
        // place in the database like one of ours (socket 0: it has none here).
        let counted = online && live.read(|s| s.is_shared() && s.origin_is_self());
        let everyone = if counted {
            if !live.read(|s| s.is_member(&device.user_id)) {
                return Err(ApiError::new(
                    ErrorCode::NotMember,
                    "that user is not a member of this room",
                ));
            }
            Some(self.live().admit(&live, device, 0).await?)
        } else {
            None
        };
        let applied = self.live().with(&live, |s, fx| {
            s.remote_presence(from, device, online, (Instant::now(), false), fx)
        });
        if let Err(err) = applied {
            if counted {
                let id = (device.user_id.as_str(), device.device_id.as_str());
                self.live().release(room_id, id, 0).await;
            }
            return Err(err);
        }
        self.live().sync_idle_logged(&live).await;
        Ok(everyone.unwrap_or_else(|| live.read(|s| s.connected_devices())))
    }

    /// A typing notice from homeserver `from`.
    pub fn remote_typing(
        &self,
        room_id: &str,
        from: &str,
        user_id: &str,
        device_id: &str,
        typing: bool,
    ) {
        if let Some(live) = self.live().get(room_id) {
            self.live().with(&live, |s, fx| {
                s.remote_typing(from, (user_id, device_id), typing, false, fx)
            });
        }
    }

    /// A signal from homeserver `from` for one device (see [`room::RoomState::remote_signal`]).
    pub fn remote_signal(
        &self,
        room_id: &str,
        from: &str,
        sender: (&str, &str),
        to: (&str, &str),
        payload: &str,
    ) {
        if let Some(live) = self.live().get(room_id)
            && self.live().with(&live, |s, fx| {
                s.remote_signal(from, sender, to, payload, fx)
            })
        {
            self.inner.metrics.signals_relayed.inc();
        }
    }

    /// One round of [`Engine::presence_lease`]: expires silent remote devices on rooms of ours,
    /// and confirms this server's devices to the origins of replicas.
    pub async fn confirm_presence(&self, lease: Duration) {
        self.live().expire_remote_devices(lease).await;
        let ours = self.server_name().as_str().to_owned();
        let confirmations = self
            .live()
            .all()
            .into_iter()
            .filter(|l| !l.read(|s| s.origin_is_self() || s.is_closed()))
            .flat_map(|live| {
                let room_id = RoomId::parse(live.room_id()).ok();
                let devices = live.read(|s| s.local_devices());
                devices
                    .into_iter()
                    .filter_map(move |who| Some((live.clone(), room_id.clone()?, who)))
            })
            .map(|(live, room_id, who)| {
                let ours = ours.clone();
                async move {
                    match outbound::announce(&self.inner.client, &room_id, &who).await {
                        Ok(connected) => self.live().with(&live, |s, fx| {
                            s.set_remote_devices(&connected, &ours, Instant::now(), fx)
                        }),
                        // The origin may be down; the next round tries again.
                        Err(err) => {
                            tracing::debug!(room = %room_id, user = %who.user_id, error = %err.reason, "device not confirmed to the origin")
                        }
                    }
                }
            });
        // Concurrently: one unreachable origin must not hold back the others past the lease.
        futures_util::future::join_all(confirmations).await;
    }

    /// Keeps the lists of devices connected through other servers true both ways, every third
    /// of `federation.presence_lease`: the origin takes off remote devices not confirmed within
    /// the lease, and a replica confirms each of its own connected devices to the origin (whose
    /// answer also refreshes the replica's list of everyone else). Ends when the engine is gone.
    pub async fn presence_lease(engine: WeakEngine, lease: Duration) {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.confirm_presence(lease).await;
        }
    }
}
