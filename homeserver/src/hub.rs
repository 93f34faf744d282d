//! The room hub: who is live in which room, and fan-out to them.
//!
//! Each connected socket has a [`ConnHandle`]: a bounded queue of ready-made text frames drained
//! by that socket's writer task. The hub keeps, per room, the live subscribers by user and device,
//! and hands every frame to the right queues.
//!
//! Departure from STYLE point 4 (an actor per room driven through channels): the relay of
//! signaling is the hot path, and routing it through a room task would add a second task hop per
//! message on a two-core machine. Instead the reader task of the sending socket looks the target
//! up under a short, never-awaited lock and pushes straight into the target's queue, as the bare
//! relay does. State changes that must touch the database (first subscriber clears the room's
//! expiry, last one starts it) are serialized per room by an async mutex, so the countdown can
//! never be started while someone is connected.
//!
//! Ordering: persisted events are published after commit, possibly by several tasks. Each room
//! remembers the newest sequence number it has fanned out; an older one is dropped (a subscriber
//! who needed it read it from the database), and a gap is filled from the database first, which is
//! safe because a room's numbers are assigned under its row lock, so everything before a committed
//! event is committed too. Every subscriber therefore sees the log in order, exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytestring::ByteString;
use confab_federation::ids::ServerName;
use confab_federation::transaction::Edu;
use confab_schema::models::Event;
use confab_schema::{DbPool, queries};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::error::{ApiError, ErrorCode};
use crate::federation::sender::TransactionSender;
use crate::metrics::Metrics;
use crate::protocol::{ConnectedDevice, DeviceRef, EventOut, Outgoing};
use crate::time::now_ms;

/// Events read per page while a subscriber catches up.
const CATCH_UP_PAGE: i64 = 500;

/// Close code for a client that stopped reading.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// The sending side of one socket.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per process.
    pub id: u64,
    tx: mpsc::Sender<ByteString>,
    control: Arc<ConnControl>,
}

/// Lets anyone holding a handle close the socket with a reason.
#[derive(Debug, Default)]
pub struct ConnControl {
    close: Mutex<Option<(u16, String)>>,
    notify: Notify,
    closed: AtomicBool,
}

impl ConnHandle {
    /// A handle and the receiving end its writer task drains.
    pub fn new(id: u64, queue: usize) -> (Self, mpsc::Receiver<ByteString>, Arc<ConnControl>) {
        let (tx, rx) = mpsc::channel(queue);
        let control = Arc::new(ConnControl::default());
        (
            Self {
                id,
                tx,
                control: control.clone(),
            },
            rx,
            control,
        )
    }

    /// Queues a frame without waiting. A full queue means the client stopped reading: it is
    /// disconnected as a slow consumer rather than slowing down the room (it can resume).
    /// Nothing is queued once a close was asked for: what a client receives is then always
    /// everything up to some point, so resuming after the last event it got misses nothing
    /// (a frame refused for a full queue followed by a later one accepted would be a gap).
    pub fn send(&self, frame: ByteString) -> bool {
        if self.control.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(
                    CLOSE_SLOW_CONSUMER,
                    "slow consumer: the client did not read its messages",
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame, waiting for room in the queue: used only for a socket's own backlog.
    pub async fn send_wait(&self, frame: ByteString) -> bool {
        !self.control.closed.load(Ordering::Acquire) && self.tx.send(frame).await.is_ok()
    }

    /// Asks the socket's writer to close it with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.control.close.lock()
            && slot.is_none()
        {
            *slot = Some((code, reason.to_owned()));
        }
        self.control.closed.store(true, Ordering::Release);
        self.control.notify.notify_waiters();
    }
}

impl ConnControl {
    /// Resolves once someone asked for the socket to be closed; returns the code and reason.
    /// Both the socket's reader and its writer wait on it.
    pub async fn closed(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            if self.closed.load(Ordering::Acquire) {
                let reason = self.close.lock().ok().and_then(|s| s.clone());
                return reason.unwrap_or((1000, String::new()));
            }
            notified.await;
        }
    }
}

/// Who a socket belongs to, once authenticated.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
}

#[derive(Debug)]
struct Subscriber {
    display_name: Arc<str>,
    conn: ConnHandle,
    /// Newest event sequence number this subscriber has been sent.
    last_seq: i64,
    /// False while the subscriber reads its backlog; live events are not pushed until then.
    live: bool,
}

/// Live subscribers of a room, by user, then device.
type Subscribers = HashMap<String, HashMap<String, Subscriber>>;

/// A device connected to a federated room through another homeserver.
#[derive(Debug, Clone)]
struct RemoteDevice {
    /// The homeserver it is connected to: its user's.
    server: String,
    display_name: Arc<str>,
    /// When its server last said it is connected (on the origin, which expires silent ones).
    seen: std::time::Instant,
}

/// Devices connected through other homeservers, by user, then device.
type RemoteDevices = HashMap<String, HashMap<String, RemoteDevice>>;

/// Ephemeral event types exchanged between the homeservers of a federated room.
pub mod edu {
    /// A device connected to or left a room.
    pub const PRESENCE: &str = "confab.presence";
    /// A device started or stopped typing.
    pub const TYPING: &str = "confab.typing";
    /// An opaque signaling payload for one device.
    pub const SIGNAL: &str = "confab.signal";
}

/// How the hub reaches other homeservers: set once federation is up.
#[derive(Debug, Clone)]
pub struct FederationLink {
    /// Sends ephemeral events (presence, typing, signaling).
    pub sender: TransactionSender,
    /// This server's name, to tell rooms of ours from replicas.
    pub server_name: ServerName,
}

/// A room with live state in this process.
#[derive(Debug)]
pub struct LiveRoom {
    room_id: Arc<str>,
    /// Serializes subscription changes, which may write the room's expiry.
    transitions: tokio::sync::Mutex<()>,
    /// Newest sequence number fanned out; also serializes publishers.
    fanout: tokio::sync::Mutex<i64>,
    subs: Mutex<Subscribers>,
    /// Devices connected through other homeservers (federated rooms). Lock order: `subs` first.
    remote: Mutex<RemoteDevices>,
    /// The room's origin server.
    origin: String,
    /// Whether this server is the room's origin; otherwise this is a replica.
    origin_is_self: bool,
    closed: AtomicBool,
}

impl LiveRoom {
    fn subs(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        // A panic while holding this lock cannot leave the map half-updated in a way that
        // matters more than losing the whole hub, so poisoning is ignored.
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, RemoteDevices> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no device is connected, here or through another server.
    fn is_empty(&self) -> bool {
        self.subs().is_empty() && self.remote().is_empty()
    }

    /// Distinct users connected, here or through another server.
    fn user_count(&self) -> usize {
        let subs = self.subs();
        let remote = self.remote();
        subs.len() + remote.keys().filter(|u| !subs.contains_key(*u)).count()
    }

    /// Whether `user_id` has a device connected, here or through another server.
    fn has_user(&self, user_id: &str) -> bool {
        self.subs().contains_key(user_id) || self.remote().contains_key(user_id)
    }

    /// Servers to tell about something that happened here: from the origin, every server with
    /// devices in the room; from a replica, the origin, which passes it on.
    fn local_targets(&self) -> Vec<String> {
        if self.origin_is_self {
            self.remote_servers(None)
        } else {
            vec![self.origin.clone()]
        }
    }

    /// Servers to pass on something `from` told us: only the origin passes anything on.
    fn forward_targets(&self, from: &str) -> Vec<String> {
        if self.origin_is_self {
            self.remote_servers(Some(from))
        } else {
            Vec::new()
        }
    }

    fn remote_servers(&self, except: Option<&str>) -> Vec<String> {
        let mut servers: Vec<String> = self
            .remote()
            .values()
            .flat_map(|d| d.values().map(|r| r.server.clone()))
            .filter(|s| Some(s.as_str()) != except)
            .collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }

    /// Sends `frame` to every live subscriber except `except`.
    fn broadcast(&self, frame: &ByteString, except: Option<(&str, &str)>) {
        for (user, devices) in self.subs().iter() {
            for (device, sub) in devices {
                if except != Some((user.as_str(), device.as_str())) {
                    sub.conn.send(frame.clone());
                }
            }
        }
    }
}

/// Why a room was closed, as sent to its subscribers.
#[derive(Debug, Clone, Copy)]
pub enum CloseReason {
    /// The host closed it.
    Closed,
    /// It was idle for the configured time.
    Expired,
}

impl CloseReason {
    /// The reason's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::Expired => "expired",
        }
    }
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct RoomHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    rooms: RwLock<HashMap<Arc<str>, Arc<LiveRoom>>>,
    link: OnceLock<FederationLink>,
    conns: Mutex<HashMap<u64, (String, ConnHandle)>>,
    next_conn_id: AtomicU64,
    pool: DbPool,
    metrics: Metrics,
    max_participants: usize,
    max_connections_per_user: usize,
    idle_ttl_ms: i64,
}

impl RoomHub {
    /// A hub with no rooms.
    pub fn new(
        pool: DbPool,
        metrics: Metrics,
        max_participants: usize,
        max_connections_per_user: usize,
        idle_ttl: std::time::Duration,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                rooms: RwLock::default(),
                link: OnceLock::new(),
                conns: Mutex::default(),
                next_conn_id: AtomicU64::new(1),
                pool,
                metrics,
                max_participants,
                max_connections_per_user,
                idle_ttl_ms: i64::try_from(idle_ttl.as_millis()).unwrap_or(i64::MAX),
            }),
        }
    }

    /// Connects the hub to federation; the first link set stays.
    pub fn link_federation(&self, link: FederationLink) {
        let _ = self.inner.link.set(link);
    }

    /// Sends an ephemeral event about a room to other homeservers, best-effort.
    fn send_edu(&self, targets: &[String], edu_type: &str, content: &Value) {
        let Some(link) = self.inner.link.get() else {
            return;
        };
        for target in targets {
            if let Ok(server) = ServerName::parse(target) {
                link.sender.send_ephemeral(
                    &server,
                    Edu {
                        edu_type: edu_type.to_owned(),
                        content: content.clone(),
                    },
                );
            }
        }
    }

    fn room(&self, room_id: &str) -> Option<Arc<LiveRoom>> {
        self.inner
            .rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room_id)
            .cloned()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, ConnHandle)>> {
        self.inner.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an authenticated socket, enforcing the per-user connection limit.
    pub fn register(&self, user_id: &str, conn: &ConnHandle) -> Result<(), ApiError> {
        let mut conns = self.conns();
        let open = conns.values().filter(|(u, _)| u == user_id).count();
        if open >= self.inner.max_connections_per_user {
            return Err(ApiError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "this user already has {open} live connections, the most allowed; close one"
                ),
            ));
        }
        conns.insert(conn.id, (user_id.to_owned(), conn.clone()));
        self.inner.metrics.ws_connections.set(conns.len() as i64);
        Ok(())
    }

    /// Forgets a socket and ends its subscriptions.
    pub async fn disconnect(&self, who: &Identity, conn: &ConnHandle, rooms: &[String]) {
        {
            let mut conns = self.conns();
            conns.remove(&conn.id);
            self.inner.metrics.ws_connections.set(conns.len() as i64);
        }
        for room_id in rooms {
            self.unsubscribe(room_id, who, conn.id).await;
        }
    }

    /// Closes every user's sockets of one user (a session ended).
    pub fn close_user(&self, user_id: &str, code: u16, reason: &str) {
        for (user, conn) in self.conns().values() {
            if user == user_id {
                conn.close(code, reason);
            }
        }
    }

    /// Tells every socket the server is going away, and closes it.
    pub fn shutdown(&self) {
        let frame = Outgoing::Shutdown {
            reason: "server restarting",
            retry_after_ms: 1000,
        }
        .to_frame();
        for (_, conn) in self.conns().values() {
            conn.send(frame.clone());
            conn.close(1012, "server restarting");
        }
    }

    /// Number of distinct users connected to a room.
    pub fn connected_users(&self, room_id: &str) -> usize {
        self.room(room_id).map_or(0, |r| r.user_count())
    }

    /// Whether `user_id` has a device connected to the room.
    pub fn is_connected(&self, room_id: &str, user_id: &str) -> bool {
        self.room(room_id).is_some_and(|r| r.has_user(user_id))
    }

    /// The devices connected to a room.
    pub fn connected_devices(&self, room_id: &str) -> Vec<ConnectedDevice> {
        let Some(room) = self.room(room_id) else {
            return Vec::new();
        };
        let mut out: Vec<ConnectedDevice> = room
            .subs()
            .iter()
            .flat_map(|(user, devices)| {
                devices.iter().map(move |(device, sub)| ConnectedDevice {
                    user_id: user.clone(),
                    device_id: device.clone(),
                    display_name: sub.display_name.to_string(),
                })
            })
            .collect();
        out.extend(room.remote().iter().flat_map(|(user, devices)| {
            devices.iter().map(move |(device, r)| ConnectedDevice {
                user_id: user.clone(),
                device_id: device.clone(),
                display_name: r.display_name.to_string(),
            })
        }));
        out.sort_by(|a, b| (&a.user_id, &a.device_id).cmp(&(&b.user_id, &b.device_id)));
        out
    }

    /// Number of rooms with live state here.
    pub fn live_rooms(&self) -> usize {
        self.inner
            .rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Makes `conn` a live subscriber of the room (the caller checked membership). The first
    /// subscriber stops the room's idle countdown. Returns once the subscriber is registered; the
    /// caller then acks and calls [`RoomHub::catch_up`].
    pub async fn subscribe(
        &self,
        room_id: &str,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
    ) -> Result<Arc<LiveRoom>, ApiError> {
        let live = self.live_room(room_id).await?;
        self.add_subscriber(&live, room_id, who, conn, since)
            .await?;
        Ok(live)
    }

    async fn add_subscriber(
        &self,
        live: &LiveRoom,
        room_id: &str,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
    ) -> Result<(), ApiError> {
        let _transition = live.transitions.lock().await;
        if live.closed.load(Ordering::Acquire) {
            return Err(ApiError::room_not_found());
        }
        let first = {
            if !live.has_user(&who.user_id) && live.user_count() >= self.inner.max_participants {
                return Err(ApiError::new(
                    ErrorCode::RoomFull,
                    format!(
                        "the room already has its maximum of {} participants",
                        self.inner.max_participants
                    ),
                ));
            }
            // A replica's knowledge of other servers' devices says nothing about whether its
            // own countdown runs: only its own subscribers stop it.
            if live.origin_is_self {
                live.is_empty()
            } else {
                live.subs().is_empty()
            }
        };
        if first {
            let mut db = confab_schema::connect(&self.inner.pool).await?;
            if queries::set_room_expiry(&mut db, room_id, None)
                .await?
                .is_none()
            {
                return Err(ApiError::room_not_found());
            }
        }
        let old = live.subs().entry(who.user_id.clone()).or_default().insert(
            who.device_id.clone(),
            Subscriber {
                display_name: who.display_name.as_str().into(),
                conn: conn.clone(),
                last_seq: since,
                live: false,
            },
        );
        match old {
            Some(old) if old.conn.id != conn.id => {
                old.conn.send(Outgoing::Replaced { room_id }.to_frame());
            }
            Some(_) => {}
            None => {
                let frame = Outgoing::Presence {
                    room_id,
                    user_id: &who.user_id,
                    device_id: &who.device_id,
                    display_name: &who.display_name,
                    online: true,
                }
                .to_frame();
                live.broadcast(&frame, Some((&who.user_id, &who.device_id)));
                // A replica announces its devices to the origin itself, and waits for the answer
                // (see `crate::federation::rooms::announce`).
                if live.origin_is_self {
                    self.send_edu(
                        &live.local_targets(),
                        edu::PRESENCE,
                        &presence_content(room_id, who, true),
                    );
                }
            }
        }
        Ok(())
    }

    /// Sends a new subscriber every event after `since`, then switches it to live delivery
    /// without a gap or a duplicate (see the module docs).
    pub async fn catch_up(
        &self,
        live: &LiveRoom,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
    ) -> Result<(), ApiError> {
        // A client may claim more than exists (a replayed or forged `since`): it is owed
        // everything after the room's newest event, not after its claim.
        let latest = {
            let mut db = confab_schema::connect(&self.inner.pool).await?;
            queries::room(&mut db, &live.room_id)
                .await?
                .map_or(0, |r| r.last_seq)
        };
        let mut last = since.min(latest);
        loop {
            let page = {
                let mut db = confab_schema::connect(&self.inner.pool).await?;
                queries::events_after(&mut db, &live.room_id, last, CATCH_UP_PAGE).await?
            };
            for event in &page {
                if !conn
                    .send_wait(Outgoing::Event(EventOut::from(event)).to_frame())
                    .await
                {
                    return Ok(());
                }
                last = event.seq;
            }
            if page.len() as i64 == CATCH_UP_PAGE {
                continue;
            }
            let published = live.fanout.lock().await;
            if *published <= last {
                let mut subs = live.subs();
                if let Some(sub) = subs
                    .get_mut(&who.user_id)
                    .and_then(|d| d.get_mut(&who.device_id))
                    .filter(|s| s.conn.id == conn.id)
                {
                    sub.last_seq = last;
                    sub.live = true;
                }
                return Ok(());
            }
        }
    }

    /// Ends one socket's subscription; the last one out starts the room's idle countdown.
    pub async fn unsubscribe(&self, room_id: &str, who: &Identity, conn_id: u64) {
        let Some(live) = self.room(room_id) else {
            return;
        };
        let _transition = live.transitions.lock().await;
        let (removed, empty) = {
            let remote_empty = live.remote().is_empty();
            let mut subs = live.subs();
            let removed = match subs.get_mut(&who.user_id) {
                Some(devices)
                    if devices
                        .get(&who.device_id)
                        .is_some_and(|s| s.conn.id == conn_id) =>
                {
                    devices.remove(&who.device_id);
                    if devices.is_empty() {
                        subs.remove(&who.user_id);
                    }
                    true
                }
                _ => false,
            };
            (removed, subs.is_empty() && remote_empty)
        };
        if !removed {
            return;
        }
        let frame = Outgoing::Presence {
            room_id,
            user_id: &who.user_id,
            device_id: &who.device_id,
            display_name: &who.display_name,
            online: false,
        }
        .to_frame();
        live.broadcast(&frame, None);
        self.send_edu(
            &live.local_targets(),
            edu::PRESENCE,
            &presence_content(room_id, who, false),
        );
        if empty || self.forget_replica_devices(&live) {
            self.start_countdown(room_id).await;
        }
    }

    /// A replica with nobody connected here hears no more presence from the origin, so what it
    /// knows of other servers' devices goes stale: it forgets them (the next local subscriber
    /// gets a fresh list) and, being empty, starts its own countdown. Returns whether it did.
    fn forget_replica_devices(&self, live: &LiveRoom) -> bool {
        if live.origin_is_self || !live.subs().is_empty() {
            return false;
        }
        let mut remote = live.remote();
        let had = !remote.is_empty();
        remote.clear();
        had
    }

    async fn start_countdown(&self, room_id: &str) {
        let expires = now_ms().saturating_add(self.inner.idle_ttl_ms);
        let result = async {
            let mut db = confab_schema::connect(&self.inner.pool).await?;
            queries::set_room_expiry(&mut db, room_id, Some(expires)).await
        }
        .await;
        if let Err(err) = result {
            // The start-up countdown catches rooms whose countdown could not be written now.
            tracing::warn!(room_id, error = %err, "could not start a room's idle countdown");
        }
    }

    /// Whether this socket is `who`'s live subscription to the room.
    pub fn is_subscribed(&self, room_id: &str, who: &Identity, conn_id: u64) -> bool {
        self.room(room_id).is_some_and(|r| {
            r.subs()
                .get(&who.user_id)
                .and_then(|d| d.get(&who.device_id))
                .is_some_and(|s| s.conn.id == conn_id)
        })
    }

    /// Relays an opaque signaling payload to one device of the room.
    pub fn relay_signal(
        &self,
        room_id: &str,
        from: &Identity,
        conn_id: u64,
        to_user: &str,
        to_device: &str,
        payload: &str,
    ) -> Result<(), ApiError> {
        let room = self.room(room_id).ok_or_else(not_subscribed)?;
        let subs = room.subs();
        let sender_ok = subs
            .get(&from.user_id)
            .and_then(|d| d.get(&from.device_id))
            .is_some_and(|s| s.conn.id == conn_id);
        if !sender_ok {
            return Err(not_subscribed());
        }
        let Some(target) = subs.get(to_user).and_then(|d| d.get(to_device)) else {
            drop(subs);
            return self.relay_signal_remote(&room, from, to_user, to_device, payload);
        };
        let frame = Outgoing::Signal {
            room_id,
            from: DeviceRef {
                user_id: from.user_id.as_str().into(),
                device_id: from.device_id.as_str().into(),
            },
            payload,
        }
        .to_frame();
        target.conn.send(frame);
        self.inner.metrics.signals_relayed.inc();
        Ok(())
    }

    /// Relays a signal to a device connected through another homeserver: from the origin to the
    /// device's server, from a replica to the origin. The payload is passed on untouched.
    fn relay_signal_remote(
        &self,
        room: &LiveRoom,
        from: &Identity,
        to_user: &str,
        to_device: &str,
        payload: &str,
    ) -> Result<(), ApiError> {
        let server = room
            .remote()
            .get(to_user)
            .and_then(|d| d.get(to_device))
            .map(|r| r.server.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::DeviceNotInRoom,
                    "the addressed device is not connected to this room",
                )
            })?;
        let target = if room.origin_is_self {
            server
        } else {
            room.origin.clone()
        };
        self.send_edu(
            &[target],
            edu::SIGNAL,
            &json!({
                "room_id": &*room.room_id,
                "from": { "user_id": from.user_id, "device_id": from.device_id },
                "to": { "user_id": to_user, "device_id": to_device },
                "payload": payload,
            }),
        );
        self.inner.metrics.signals_relayed.inc();
        Ok(())
    }

    /// Tells the room's other devices that `from` is (not) typing.
    pub fn typing(
        &self,
        room_id: &str,
        from: &Identity,
        conn_id: u64,
        typing: bool,
    ) -> Result<(), ApiError> {
        if !self.is_subscribed(room_id, from, conn_id) {
            return Err(not_subscribed());
        }
        let room = self.room(room_id).ok_or_else(not_subscribed)?;
        let frame = Outgoing::Typing {
            room_id,
            user_id: &from.user_id,
            device_id: &from.device_id,
            typing,
        }
        .to_frame();
        room.broadcast(&frame, Some((&from.user_id, &from.device_id)));
        self.send_edu(
            &room.local_targets(),
            edu::TYPING,
            &json!({
                "room_id": room_id,
                "user_id": from.user_id,
                "device_id": from.device_id,
                "typing": typing,
            }),
        );
        Ok(())
    }

    /// Fans committed events of one room out to its live subscribers, in sequence order.
    pub async fn publish(&self, room_id: &str, events: &[Event]) {
        let Some(live) = self.room(room_id) else {
            return;
        };
        let mut published = live.fanout.lock().await;
        for event in events {
            if event.seq <= *published {
                continue;
            }
            if event.seq > *published + 1 {
                let missing = async {
                    let mut db = confab_schema::connect(&self.inner.pool).await?;
                    queries::events_after(&mut db, room_id, *published, event.seq - *published - 1)
                        .await
                }
                .await;
                match missing {
                    Ok(missing) => {
                        for m in &missing {
                            deliver(&live, m);
                            *published = m.seq;
                        }
                    }
                    Err(err) => {
                        // Subscribers will miss the gap until they resume; say so loudly.
                        tracing::error!(room_id, error = %err, "could not fill a fan-out gap");
                    }
                }
            }
            deliver(&live, event);
            *published = event.seq;
        }
    }

    /// Removes a user's live subscriptions to a room, telling their sockets why.
    pub async fn kick(&self, room_id: &str, user_id: &str) {
        let Some(live) = self.room(room_id) else {
            return;
        };
        let _transition = live.transitions.lock().await;
        let remote_devices = live.remote().remove(user_id).unwrap_or_default();
        for (device, r) in &remote_devices {
            self.broadcast_presence(&live, room_id, user_id, device, &r.display_name, false);
            self.send_edu(
                &live.forward_targets(&r.server),
                edu::PRESENCE,
                &json!({
                    "room_id": room_id, "user_id": user_id, "device_id": device,
                    "display_name": &*r.display_name, "online": false,
                }),
            );
        }
        let (devices, empty) = {
            let mut subs = live.subs();
            let devices = subs.remove(user_id).unwrap_or_default();
            (devices, subs.is_empty())
        };
        let empty = empty && live.remote().is_empty();
        if devices.is_empty() {
            if empty && !remote_devices.is_empty() {
                self.start_countdown(room_id).await;
            }
            return;
        }
        let kicked = Outgoing::Kicked { room_id }.to_frame();
        for (device, sub) in devices {
            sub.conn.send(kicked.clone());
            let frame = Outgoing::Presence {
                room_id,
                user_id,
                device_id: &device,
                display_name: &sub.display_name,
                online: false,
            }
            .to_frame();
            live.broadcast(&frame, None);
            self.send_edu(
                &live.local_targets(),
                edu::PRESENCE,
                &json!({
                    "room_id": room_id, "user_id": user_id, "device_id": device,
                    "display_name": &*sub.display_name, "online": false,
                }),
            );
        }
        if empty || self.forget_replica_devices(&live) {
            self.start_countdown(room_id).await;
        }
    }

    /// Same as [`RoomHub::kick`], for a member who left of their own accord.
    pub async fn remove_member(&self, room_id: &str, user_id: &str) {
        self.kick(room_id, user_id).await;
    }

    /// Forgets a deleted room and tells its subscribers.
    pub fn close(&self, room_id: &str, reason: CloseReason) {
        let removed = self
            .inner
            .rooms
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room_id);
        if let Some(live) = removed {
            live.closed.store(true, Ordering::Release);
            let frame = Outgoing::RoomClosed {
                room_id,
                reason: reason.as_str(),
            }
            .to_frame();
            live.broadcast(&frame, None);
            live.subs().clear();
        }
        self.inner.metrics.live_rooms.set(self.live_rooms() as i64);
    }

    fn broadcast_presence(
        &self,
        live: &LiveRoom,
        room_id: &str,
        user_id: &str,
        device_id: &str,
        display_name: &str,
        online: bool,
    ) {
        let frame = Outgoing::Presence {
            room_id,
            user_id,
            device_id,
            display_name,
            online,
        }
        .to_frame();
        live.broadcast(&frame, None);
    }

    /// A device connected to or left the room through homeserver `from` (its user's, or, on a
    /// replica, the origin passing it on). On the origin, remote devices count like local ones
    /// for the idle countdown and capacity, and the news is passed on to the other servers.
    /// `load` creates the room's live state if there is none (the origin must; a replica with
    /// nobody connected has nobody to tell). Returns who is connected now.
    pub async fn remote_presence(
        &self,
        room_id: &str,
        from: &str,
        device: &ConnectedDevice,
        online: bool,
        load: bool,
    ) -> Result<Vec<ConnectedDevice>, ApiError> {
        let live = match self.room(room_id) {
            Some(live) => live,
            None if load => self.live_room(room_id).await?,
            None => return Ok(Vec::new()),
        };
        let _transition = live.transitions.lock().await;
        if live.closed.load(Ordering::Acquire) {
            return Err(ApiError::room_not_found());
        }
        let was_empty = live.is_empty();
        let server = device
            .user_id
            .split_once(':')
            .map_or(from, |(_, server)| server)
            .to_owned();
        if online {
            let known = live.remote().get(&device.user_id).map_or(0, |d| {
                d.len() - usize::from(d.contains_key(&device.device_id))
            });
            if !live.has_user(&device.user_id) && live.user_count() >= self.inner.max_participants {
                return Err(ApiError::new(
                    ErrorCode::RoomFull,
                    format!(
                        "the room already has its maximum of {} participants",
                        self.inner.max_participants
                    ),
                ));
            }
            if known >= self.inner.max_connections_per_user {
                return Err(ApiError::new(
                    ErrorCode::TooManyConnections,
                    "that user already has the most devices allowed in this room",
                ));
            }
        }
        let changed = {
            let mut remote = live.remote();
            if online {
                let devices = remote.entry(device.user_id.clone()).or_default();
                devices
                    .insert(
                        device.device_id.clone(),
                        RemoteDevice {
                            server,
                            display_name: device.display_name.as_str().into(),
                            seen: std::time::Instant::now(),
                        },
                    )
                    .is_none()
            } else {
                let removed = remote
                    .get_mut(&device.user_id)
                    .and_then(|d| d.remove(&device.device_id))
                    .is_some();
                if remote.get(&device.user_id).is_some_and(HashMap::is_empty) {
                    remote.remove(&device.user_id);
                }
                removed
            }
        };
        if changed {
            self.broadcast_presence(
                &live,
                room_id,
                &device.user_id,
                &device.device_id,
                &device.display_name,
                online,
            );
            self.send_edu(
                &live.forward_targets(from),
                edu::PRESENCE,
                &json!({
                    "room_id": room_id, "user_id": device.user_id, "device_id": device.device_id,
                    "display_name": device.display_name, "online": online,
                }),
            );
            if live.origin_is_self {
                if online && was_empty {
                    let mut db = confab_schema::connect(&self.inner.pool).await?;
                    queries::set_room_expiry(&mut db, room_id, None).await?;
                } else if !online && live.is_empty() {
                    self.start_countdown(room_id).await;
                }
            }
        }
        Ok(self.connected_devices(room_id))
    }

    /// On the origin, takes off every remote device its server has not confirmed for `lease`:
    /// an offline notice lost on the way, or a server that restarted or went away, must not
    /// leave a ghost that holds a place in the room and keeps it from expiring. Returns how many.
    pub async fn expire_remote_devices(&self, lease: std::time::Duration) -> usize {
        let rooms: Vec<Arc<LiveRoom>> = self
            .inner
            .rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| r.origin_is_self)
            .cloned()
            .collect();
        let mut expired = 0;
        for live in rooms {
            let stale: Vec<(String, ConnectedDevice)> = live
                .remote()
                .iter()
                .flat_map(|(user, devices)| {
                    devices
                        .iter()
                        .filter(|(_, r)| r.seen.elapsed() > lease)
                        .map(move |(device, r)| {
                            (
                                r.server.clone(),
                                ConnectedDevice {
                                    user_id: user.clone(),
                                    device_id: device.clone(),
                                    display_name: r.display_name.to_string(),
                                },
                            )
                        })
                })
                .collect();
            for (server, device) in stale {
                tracing::info!(room = %live.room_id, user = %device.user_id, device = %device.device_id, %server, "remote device not confirmed in time; taken off");
                // The same path as its server saying it left; a room already gone has no ghost.
                if self
                    .remote_presence(&live.room_id, &server, &device, false, false)
                    .await
                    .is_ok()
                {
                    expired += 1;
                }
            }
        }
        expired
    }

    /// On a replica, this server's own devices in each room, to confirm them to the origin.
    pub fn replica_devices(&self) -> Vec<(String, Identity)> {
        let rooms: Vec<Arc<LiveRoom>> = self
            .inner
            .rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| !r.origin_is_self && !r.closed.load(Ordering::Acquire))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for live in rooms {
            for (user, devices) in live.subs().iter() {
                for (device, sub) in devices {
                    out.push((
                        live.room_id.to_string(),
                        Identity {
                            user_id: user.clone(),
                            device_id: device.clone(),
                            display_name: sub.display_name.to_string(),
                        },
                    ));
                }
            }
        }
        out
    }

    /// On a replica, replaces what it knows of devices connected through other servers with the
    /// origin's list (`ours` are this server's own devices, which it knows better), telling the
    /// local subscribers what changed.
    pub fn set_remote_devices(&self, room_id: &str, devices: &[ConnectedDevice], ours: &str) {
        let Some(live) = self.room(room_id) else {
            return;
        };
        let mut fresh = RemoteDevices::new();
        for d in devices {
            let server = d.user_id.split_once(':').map_or("", |(_, s)| s);
            if server == ours {
                continue;
            }
            fresh.entry(d.user_id.clone()).or_default().insert(
                d.device_id.clone(),
                RemoteDevice {
                    server: server.to_owned(),
                    display_name: d.display_name.as_str().into(),
                    seen: std::time::Instant::now(),
                },
            );
        }
        let old = std::mem::replace(&mut *live.remote(), fresh.clone());
        for (user, devices) in &old {
            for (device, r) in devices {
                if !fresh.get(user).is_some_and(|d| d.contains_key(device)) {
                    self.broadcast_presence(&live, room_id, user, device, &r.display_name, false);
                }
            }
        }
        for (user, devices) in &fresh {
            for (device, r) in devices {
                if !old.get(user).is_some_and(|d| d.contains_key(device)) {
                    self.broadcast_presence(&live, room_id, user, device, &r.display_name, true);
                }
            }
        }
    }

    /// Whether `from` may speak for the device: on the origin, the device must be connected
    /// through `from`; on a replica, only the origin speaks.
    fn remote_speaker(live: &LiveRoom, from: &str, user_id: &str, device_id: &str) -> bool {
        if live.origin_is_self {
            live.remote()
                .get(user_id)
                .and_then(|d| d.get(device_id))
                .is_some_and(|r| r.server == from)
        } else {
            from == live.origin
        }
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
        let Some(live) = self.room(room_id) else {
            return;
        };
        if !Self::remote_speaker(&live, from, user_id, device_id) {
            return;
        }
        let frame = Outgoing::Typing {
            room_id,
            user_id,
            device_id,
            typing,
        }
        .to_frame();
        live.broadcast(&frame, None);
        self.send_edu(
            &live.forward_targets(from),
            edu::TYPING,
            &json!({ "room_id": room_id, "user_id": user_id, "device_id": device_id, "typing": typing }),
        );
    }

    /// A signal from homeserver `from` for one device: delivered if it is connected here, passed
    /// on by the origin if it is connected through a third server, dropped otherwise (signaling
    /// is best-effort; the sender's client renegotiates).
    pub fn remote_signal(
        &self,
        room_id: &str,
        from: &str,
        sender: &DeviceRef<'_>,
        to_user: &str,
        to_device: &str,
        payload: &str,
    ) {
        let Some(live) = self.room(room_id) else {
            return;
        };
        if !Self::remote_speaker(&live, from, &sender.user_id, &sender.device_id) {
            return;
        }
        let local = live
            .subs()
            .get(to_user)
            .and_then(|d| d.get(to_device))
            .map(|s| s.conn.clone());
        if let Some(conn) = local {
            conn.send(
                Outgoing::Signal {
                    room_id,
                    from: DeviceRef {
                        user_id: sender.user_id.clone(),
                        device_id: sender.device_id.clone(),
                    },
                    payload,
                }
                .to_frame(),
            );
            self.inner.metrics.signals_relayed.inc();
            return;
        }
        if !live.origin_is_self {
            return;
        }
        let server = live
            .remote()
            .get(to_user)
            .and_then(|d| d.get(to_device))
            .map(|r| r.server.clone());
        if let Some(server) = server.filter(|s| s != from) {
            self.send_edu(
                &[server],
                edu::SIGNAL,
                &json!({
                    "room_id": room_id,
                    "from": { "user_id": sender.user_id, "device_id": sender.device_id },
                    "to": { "user_id": to_user, "device_id": to_device },
                    "payload": payload,
                }),
            );
        }
    }

    /// The room's live state, created (from its newest sequence number) on first use.
    async fn live_room(&self, room_id: &str) -> Result<Arc<LiveRoom>, ApiError> {
        if let Some(live) = self.room(room_id) {
            return Ok(live);
        }
        let room = {
            let mut db = confab_schema::connect(&self.inner.pool).await?;
            queries::room(&mut db, room_id)
                .await?
                .ok_or_else(ApiError::room_not_found)?
        };
        let live = self
            .inner
            .rooms
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(room_id.into())
            .or_insert_with(|| {
                let origin_is_self = self
                    .inner
                    .link
                    .get()
                    .is_none_or(|l| l.server_name.as_str() == room.origin);
                Arc::new(LiveRoom {
                    room_id: room_id.into(),
                    transitions: tokio::sync::Mutex::new(()),
                    fanout: tokio::sync::Mutex::new(room.last_seq),
                    subs: Mutex::default(),
                    remote: Mutex::default(),
                    origin: room.origin.clone(),
                    origin_is_self,
                    closed: AtomicBool::new(false),
                })
            })
            .clone();
        self.inner.metrics.live_rooms.set(self.live_rooms() as i64);
        Ok(live)
    }
}

fn presence_content(room_id: &str, who: &Identity, online: bool) -> Value {
    json!({
        "room_id": room_id,
        "user_id": who.user_id,
        "device_id": who.device_id,
        "display_name": who.display_name,
        "online": online,
    })
}

fn not_subscribed() -> ApiError {
    ApiError::new(
        ErrorCode::NotSubscribed,
        "this connection is not subscribed to that room",
    )
}

/// Sends one event to every live subscriber that has not had it yet.
fn deliver(live: &LiveRoom, event: &Event) {
    let frame = Outgoing::Event(EventOut::from(event)).to_frame();
    for devices in live.subs().values_mut() {
        for sub in devices.values_mut() {
            if sub.live && sub.last_seq < event.seq {
                sub.conn.send(frame.clone());
                sub.last_seq = event.seq;
            }
        }
    }
}
