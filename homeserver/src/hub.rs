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
use std::sync::{Arc, Mutex, RwLock};

use bytestring::ByteString;
use confab_schema::models::Event;
use confab_schema::{DbPool, queries};
use tokio::sync::{Notify, mpsc};

use crate::error::{ApiError, ErrorCode};
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
    pub fn send(&self, frame: ByteString) -> bool {
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
        self.tx.send(frame).await.is_ok()
    }

    /// Asks the socket's writer to close it with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.control.close.lock()
            && slot.is_none()
        {
            *slot = Some((code, reason.to_owned()));
        }
        self.control.closed.store(true, Ordering::Release);
        self.control.notify.notify_one();
    }
}

impl ConnControl {
    /// Resolves once someone asked for the socket to be closed; returns the code and reason.
    pub async fn closed(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            if self.closed.load(Ordering::Acquire) {
                let reason = self.close.lock().ok().and_then(|mut s| s.take());
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

/// A room with live state in this process.
#[derive(Debug)]
pub struct LiveRoom {
    room_id: Arc<str>,
    /// Serializes subscription changes, which may write the room's expiry.
    transitions: tokio::sync::Mutex<()>,
    /// Newest sequence number fanned out; also serializes publishers.
    fanout: tokio::sync::Mutex<i64>,
    subs: Mutex<Subscribers>,
    closed: AtomicBool,
}

impl LiveRoom {
    fn subs(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        // A panic while holding this lock cannot leave the map half-updated in a way that
        // matters more than losing the whole hub, so poisoning is ignored.
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
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
    fn as_str(self) -> &'static str {
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
        self.room(room_id).map_or(0, |r| r.subs().len())
    }

    /// Whether `user_id` has a device connected to the room.
    pub fn is_connected(&self, room_id: &str, user_id: &str) -> bool {
        self.room(room_id)
            .is_some_and(|r| r.subs().contains_key(user_id))
    }

    /// The devices connected to a room.
    pub fn connected_devices(&self, room_id: &str) -> Vec<ConnectedDevice> {
        let Some(room) = self.room(room_id) else {
            return Vec::new();
        };
        let subs = room.subs();
        let mut out: Vec<ConnectedDevice> = subs
            .iter()
            .flat_map(|(user, devices)| {
                devices.iter().map(move |(device, sub)| ConnectedDevice {
                    user_id: user.clone(),
                    device_id: device.clone(),
                    display_name: sub.display_name.to_string(),
                })
            })
            .collect();
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
            let subs = live.subs();
            let already = subs.contains_key(&who.user_id);
            if !already && subs.len() >= self.inner.max_participants {
                return Err(ApiError::new(
                    ErrorCode::RoomFull,
                    format!(
                        "the room already has its maximum of {} participants",
                        self.inner.max_participants
                    ),
                ));
            }
            subs.is_empty()
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
            (removed, subs.is_empty())
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
        if empty {
            self.start_countdown(room_id).await;
        }
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
        let target = subs
            .get(to_user)
            .and_then(|d| d.get(to_device))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::DeviceNotInRoom,
                    "the addressed device is not connected to this room",
                )
            })?;
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
        let (devices, empty) = {
            let mut subs = live.subs();
            let devices = subs.remove(user_id).unwrap_or_default();
            (devices, subs.is_empty())
        };
        if devices.is_empty() {
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
        }
        if empty {
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
                Arc::new(LiveRoom {
                    room_id: room_id.into(),
                    transitions: tokio::sync::Mutex::new(()),
                    fanout: tokio::sync::Mutex::new(room.last_seq),
                    subs: Mutex::default(),
                    closed: AtomicBool::new(false),
                })
            })
            .clone();
        self.inner.metrics.live_rooms.set(self.live_rooms() as i64);
        Ok(live)
    }
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
