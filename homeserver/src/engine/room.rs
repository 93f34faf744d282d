//! The rules of one live room, as a state machine with no I/O: who is subscribed (here) and
//! connected (through other homeservers), who is a member, what has been fanned out, and every
//! decision that changes any of it — subscribe, unsubscribe, presence, capacity, kick and leave,
//! close, the idle state, and a replica's updates from its origin. [`super::live`] holds one per
//! room behind a lock that is never held across an await, so the decisions of a room are taken
//! one after another in one order, whatever task asks; this module only decides and queues frames.
//!
//! Frames go straight into the sockets' queues ([`ConnHandle::send`], which never waits); what
//! must leave the process (ephemeral events for other homeservers) comes back as [`Effects`].

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::Frame;
use confab_schema::models::{Event, Member, membership};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::conn::{ConnHandle, Wakes};
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{ConnectedDevice, DeviceRef, EventOut, Outgoing};
use crate::sessions::Identity;

/// Ephemeral event types exchanged between the homeservers of a federated room.
pub mod edu {
    /// A device connected to or left a room.
    pub const PRESENCE: &str = "confab.presence";
    /// A device started or stopped typing.
    pub const TYPING: &str = "confab.typing";
    /// An opaque signaling payload for one device.
    pub const SIGNAL: &str = "confab.signal";
}

/// An ephemeral event for other homeservers, decided here and sent by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct OutEdu {
    pub to: Vec<String>,
    pub edu_type: &'static str,
    pub content: Value,
}

/// What a room on one of several workers tells the others (see [`crate::cluster`]), as JSON
/// on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorkers {
    /// A device connected here came or went.
    Presence {
        device: ConnectedDevice,
        online: bool,
    },
    /// A device connected here started or stopped typing.
    Typing {
        user_id: String,
        device_id: String,
        typing: bool,
    },
    /// A signal for a device connected through `worker`.
    Signal {
        worker: String,
        from: (String, String),
        to: (String, String),
        payload: String,
    },
    /// A replica's member list was rewritten outside the event log: read it again.
    Members,
    /// Chat for the worker that writes the room (see [`RoomState::writer`]), from a socket on
    /// worker `reply_to`, which waits for the [`ToWorkers::ChatAnswer`] to request `request`.
    Chat {
        reply_to: String,
        request: u64,
        sender: String,
        device_id: String,
        kind: String,
        ciphertext: String,
        txn_id: Option<String>,
    },
    /// What became of forwarded chat: its number and time, or why not.
    ChatAnswer {
        request: u64,
        committed: Option<(i64, i64)>,
        error: Option<(ErrorCode, String)>,
    },
    /// Another server's ephemeral event, applied here first (checked, and passed on to other
    /// servers): the other workers apply it for their own sockets only.
    Relay {
        server: String,
        edu_type: String,
        content: Value,
    },
}

/// What a decision asks of the world outside the room.
#[derive(Debug, Default)]
pub struct Effects {
    pub edus: Vec<OutEdu>,
    /// For the other workers of this homeserver (only when there are any).
    pub to_workers: Vec<ToWorkers>,
    /// Places this worker held for devices that are gone (user, device, socket; 0 for a device
    /// another server announced), to give back in the database.
    pub released: Vec<(String, String, u64)>,
    /// Socket writers with frames queued by the decision, woken once it is taken.
    pub wakes: Wakes,
}

impl Effects {
    fn edu(&mut self, to: Vec<String>, edu_type: &'static str, content: Value) {
        if !to.is_empty() {
            self.edus.push(OutEdu {
                to,
                edu_type,
                content,
            });
        }
    }
}

/// Limits a room enforces.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Distinct users connected at once, here or through other servers.
    pub max_participants: usize,
    /// Devices one remote user may have connected.
    pub max_devices_per_user: usize,
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

/// A device connected to a federated room through another homeserver.
#[derive(Debug, Clone)]
struct RemoteDevice {
    /// The homeserver it is connected to: its user's.
    server: String,
    display_name: Arc<str>,
    /// When its server last said it is connected (on the origin, which expires silent ones).
    seen: Instant,
}

/// A device connected to the room through another worker of this homeserver.
#[derive(Debug, Clone)]
struct PeerDevice {
    worker: Arc<str>,
    display_name: Arc<str>,
}

/// By user, then device.
type Devices<T> = HashMap<String, HashMap<String, T>>;

/// Whether a subscriber that read its backlog up to some point may switch to live delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum GoLive {
    /// Switched: every later event will be pushed.
    Live,
    /// Events after the backlog were fanned out meanwhile: read again from this number.
    Behind(i64),
    /// The subscription is gone (kicked, replaced, closed).
    Gone,
}

/// Why a room was closed, as sent to its subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// The reason named `name` on the wire.
    pub fn parse(name: &str) -> Option<Self> {
        [CloseReason::Closed, CloseReason::Expired]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// The live state of one room.
#[derive(Debug)]
pub struct RoomState {
    room_id: Arc<str>,
    origin: String,
    origin_is_self: bool,
    limits: RoomLimits,
    subs: Devices<Subscriber>,
    remote: Devices<RemoteDevice>,
    /// Devices connected through the other workers of this homeserver.
    peers: Devices<PeerDevice>,
    /// One of several workers: capacity is decided under the room's row lock in the database
    /// (`confab_schema::cluster::admit_device`), and what happens here is told to the others.
    shared: bool,
    /// Every member's membership as of `published`: joined, left or kicked.
    members: HashMap<String, &'static str>,
    /// Newest sequence number fanned out.
    published: i64,
    closed: bool,
}

fn membership_of(raw: &str) -> Option<&'static str> {
    [membership::JOINED, membership::LEFT, membership::KICKED]
        .into_iter()
        .find(|m| *m == raw)
}

fn not_subscribed() -> ApiError {
    ApiError::new(
        ErrorCode::NotSubscribed,
        "this connection is not subscribed to that room",
    )
}

/// The answer to a device that finds no place.
pub fn room_full(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::RoomFull,
        format!("the room already has its maximum of {max} participants"),
    )
}

impl RoomState {
    /// A room as stored: its newest sequence number and its members at that number.
    pub fn new(
        room_id: &str,
        origin: &str,
        origin_is_self: bool,
        last_seq: i64,
        members: &[Member],
        limits: RoomLimits,
        shared: bool,
    ) -> Self {
        Self {
            room_id: room_id.into(),
            origin: origin.to_owned(),
            origin_is_self,
            limits,
            subs: HashMap::default(),
            remote: HashMap::default(),
            peers: HashMap::default(),
            shared,
            members: members
                .iter()
                .filter_map(|m| Some((m.user_id.clone(), membership_of(&m.membership)?)))
                .collect(),
            published: last_seq,
            closed: false,
        }
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// Whether this server is the room's origin (otherwise this is a replica).
    pub fn origin_is_self(&self) -> bool {
        self.origin_is_self
    }

    /// Newest sequence number fanned out.
    pub fn published(&self) -> i64 {
        self.published
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether `user_id` is a joined member.
    pub fn is_member(&self, user_id: &str) -> bool {
        self.members.get(user_id) == Some(&membership::JOINED)
    }

    /// Replaces the membership (a replica that took the origin's member list).
    pub fn set_members(&mut self, members: &[Member]) {
        self.members = members
            .iter()
            .filter_map(|m| Some((m.user_id.clone(), membership_of(&m.membership)?)))
            .collect();
    }

    /// Whether the room counts as empty for its idle countdown: nobody connected, here or (on
    /// the origin) through another server. A replica's knowledge of other servers' devices says
    /// nothing about its own countdown: only its own subscribers stop it.
    pub fn is_idle(&self) -> bool {
        self.subs.is_empty() && (!self.origin_is_self || self.remote.is_empty())
    }

    /// Whether nothing is connected at all, so the live state may be dropped.
    pub fn is_unused(&self) -> bool {
        self.subs.is_empty() && self.remote.is_empty()
    }

    /// Distinct users connected, here, through another worker or through another server.
    pub fn user_count(&self) -> usize {
        let mut users: Vec<&String> = self
            .subs
            .keys()
            .chain(self.remote.keys())
            .chain(self.peers.keys())
            .collect();
        users.sort_unstable();
        users.dedup();
        users.len()
    }

    /// Whether `user_id` has a device connected, here, through another worker or through
    /// another server.
    pub fn has_user(&self, user_id: &str) -> bool {
        self.subs.contains_key(user_id)
            || self.remote.contains_key(user_id)
            || self.peers.contains_key(user_id)
    }

    /// The worker that appends this room's chat, of several workers with devices in it: the
    /// first by id. Workers that see the room's devices differently for a moment may both
    /// append (the room's row lock keeps the log whole); one writer keeps their transactions
    /// from waiting on each other. `None`: this one (`me`).
    pub fn writer(&self, me: &str) -> Option<String> {
        if !self.shared {
            return None;
        }
        let first = self
            .peers
            .values()
            .flat_map(|d| d.values().map(|p| &*p.worker))
            .chain((!self.subs.is_empty()).then_some(me))
            .min()?;
        (first != me).then(|| first.to_owned())
    }

    /// Whether this room is live on one of several workers.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The users with a device connected through another server (what a worker adds to the
    /// database's count when it admits).
    pub fn remote_users(&self) -> Vec<String> {
        self.remote.keys().cloned().collect()
    }

    /// Whether this socket is `who`'s live subscription.
    pub fn is_subscribed(&self, who: &Identity, conn_id: u64) -> bool {
        self.subs
            .get(&who.user_id)
            .and_then(|d| d.get(&who.device_id))
            .is_some_and(|s| s.conn.id == conn_id)
    }

    /// The devices connected, sorted.
    pub fn connected_devices(&self) -> Vec<ConnectedDevice> {
        let local = self.subs.iter().flat_map(|(user, devices)| {
            devices.iter().map(move |(device, sub)| ConnectedDevice {
                user_id: user.clone(),
                device_id: device.clone(),
                display_name: sub.display_name.to_string(),
            })
        });
        let remote = self.remote.iter().flat_map(|(user, devices)| {
            devices.iter().map(move |(device, r)| ConnectedDevice {
                user_id: user.clone(),
                device_id: device.clone(),
                display_name: r.display_name.to_string(),
            })
        });
        let peers = self.peers.iter().flat_map(|(user, devices)| {
            devices.iter().map(move |(device, p)| ConnectedDevice {
                user_id: user.clone(),
                device_id: device.clone(),
                display_name: p.display_name.to_string(),
            })
        });
        let mut out: Vec<ConnectedDevice> = local.chain(remote).chain(peers).collect();
        out.sort_by(|a, b| (&a.user_id, &a.device_id).cmp(&(&b.user_id, &b.device_id)));
        out.dedup_by(|a, b| a.user_id == b.user_id && a.device_id == b.device_id);
        out
    }

    /// This server's own subscribed devices.
    pub fn local_devices(&self) -> Vec<Identity> {
        self.subs
            .iter()
            .flat_map(|(user, devices)| {
                devices.iter().map(move |(device, sub)| Identity {
                    user_id: user.clone(),
                    device_id: device.clone(),
                    display_name: sub.display_name.to_string(),
                })
            })
            .collect()
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
            .remote
            .values()
            .flat_map(|d| d.values().map(|r| r.server.clone()))
            .filter(|s| Some(s.as_str()) != except)
            .collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }

    /// Sends `frame` to every subscriber except `except`.
    fn broadcast(&self, frame: &Frame, except: Option<(&str, &str)>, fx: &mut Effects) {
        for (user, devices) in &self.subs {
            for (device, sub) in devices {
                if except != Some((user.as_str(), device.as_str())) {
                    sub.conn.push(frame.clone(), &mut fx.wakes);
                }
            }
        }
    }

    fn presence_frame(&self, user_id: &str, device_id: &str, name: &str, online: bool) -> Frame {
        Outgoing::Presence {
            room_id: &self.room_id,
            user_id,
            device_id,
            display_name: name,
            online,
        }
        .to_frame()
    }

    fn presence_edu(&self, user_id: &str, device_id: &str, name: &str, online: bool) -> Value {
        json!({
            "room_id": &*self.room_id, "user_id": user_id, "device_id": device_id,
            "display_name": name, "online": online,
        })
    }

    fn check_capacity(&self, user_id: &str) -> Result<(), ApiError> {
        // Across workers the database decided, under the room's row lock.
        if self.shared {
            return Ok(());
        }
        if !self.has_user(user_id) && self.user_count() >= self.limits.max_participants {
            return Err(room_full(self.limits.max_participants));
        }
        Ok(())
    }

    /// Why `user_id` could not subscribe now, before any place is looked for.
    pub fn subscribe_refusal(&self, user_id: &str) -> Option<ApiError> {
        if self.closed {
            return Some(ApiError::room_not_found());
        }
        if !self.is_member(user_id) {
            return Some(ApiError::new(
                ErrorCode::NotMember,
                "you are not a member of this room",
            ));
        }
        None
    }

    /// Makes `conn` `who`'s live subscription, reading its backlog from `since` first (see
    /// [`Self::go_live`]): only a joined member, and only while there is a place.
    pub fn subscribe(
        &mut self,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
        fx: &mut Effects,
    ) -> Result<(), ApiError> {
        if let Some(refused) = self.subscribe_refusal(&who.user_id) {
            return Err(refused);
        }
        self.check_capacity(&who.user_id)?;
        let old = self.subs.entry(who.user_id.clone()).or_default().insert(
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
                old.conn.push(
                    Outgoing::Replaced {
                        room_id: &self.room_id,
                    }
                    .to_frame(),
                    &mut fx.wakes,
                );
            }
            Some(_) => {}
            None => {
                // A device that was connected through another worker has moved here.
                self.remove_peer(&who.user_id, &who.device_id, None);
                let frame =
                    self.presence_frame(&who.user_id, &who.device_id, &who.display_name, true);
                self.broadcast(&frame, Some((&who.user_id, &who.device_id)), fx);
                self.tell_workers_presence(who, true, fx);
                // A replica announces its devices to the origin itself, and waits for the
                // answer (see `crate::federation::rooms::outbound::announce`).
                if self.origin_is_self {
                    fx.edu(
                        self.local_targets(),
                        edu::PRESENCE,
                        self.presence_edu(&who.user_id, &who.device_id, &who.display_name, true),
                    );
                }
            }
        }
        Ok(())
    }

    /// Switches a subscriber that has read its backlog up to `last` to live delivery, unless
    /// newer events were fanned out meanwhile (it reads those first): so it gets every event
    /// once, in order.
    pub fn go_live(&mut self, who: &Identity, conn_id: u64, last: i64) -> GoLive {
        let published = self.published;
        let Some(sub) = self
            .subs
            .get_mut(&who.user_id)
            .and_then(|d| d.get_mut(&who.device_id))
            .filter(|s| s.conn.id == conn_id)
        else {
            return GoLive::Gone;
        };
        if published > last {
            return GoLive::Behind(last);
        }
        sub.last_seq = last;
        sub.live = true;
        GoLive::Live
    }

    /// Ends one socket's subscription. Returns whether it was subscribed.
    pub fn unsubscribe(&mut self, who: &Identity, conn_id: u64, fx: &mut Effects) -> bool {
        let Some(devices) = self.subs.get_mut(&who.user_id) else {
            return false;
        };
        if devices
            .get(&who.device_id)
            .is_none_or(|s| s.conn.id != conn_id)
        {
            return false;
        }
        devices.remove(&who.device_id);
        if devices.is_empty() {
            self.subs.remove(&who.user_id);
        }
        let frame = self.presence_frame(&who.user_id, &who.device_id, &who.display_name, false);
        self.broadcast(&frame, None, fx);
        fx.edu(
            self.local_targets(),
            edu::PRESENCE,
            self.presence_edu(&who.user_id, &who.device_id, &who.display_name, false),
        );
        self.tell_workers_presence(who, false, fx);
        self.release(&who.user_id, &who.device_id, conn_id, fx);
        self.forget_replica_devices();
        true
    }

    fn tell_workers_presence(&self, who: &Identity, online: bool, fx: &mut Effects) {
        if self.shared {
            fx.to_workers.push(ToWorkers::Presence {
                device: ConnectedDevice {
                    user_id: who.user_id.clone(),
                    device_id: who.device_id.clone(),
                    display_name: who.display_name.clone(),
                },
                online,
            });
        }
    }

    /// Gives back the place a device held in the database (several workers only).
    fn release(&self, user_id: &str, device_id: &str, conn_id: u64, fx: &mut Effects) {
        if self.shared {
            fx.released
                .push((user_id.to_owned(), device_id.to_owned(), conn_id));
        }
    }

    /// Forgets a device connected through another worker (through `worker`, if given); returns
    /// its name if it was known.
    fn remove_peer(
        &mut self,
        user_id: &str,
        device_id: &str,
        worker: Option<&str>,
    ) -> Option<Arc<str>> {
        let devices = self.peers.get_mut(user_id)?;
        if worker.is_some_and(|w| devices.get(device_id).is_some_and(|p| &*p.worker != w)) {
            return None;
        }
        let gone = devices.remove(device_id)?;
        if devices.is_empty() {
            self.peers.remove(user_id);
        }
        Some(gone.display_name)
    }

    /// A device connected through another worker came (`online`) or went. A device that came
    /// there while it still has a socket here moved: the old socket is told it was replaced.
    pub fn peer_presence(
        &mut self,
        worker: &str,
        device: &ConnectedDevice,
        online: bool,
        fx: &mut Effects,
    ) {
        if self.closed {
            return;
        }
        let (user, dev) = (device.user_id.as_str(), device.device_id.as_str());
        if !online {
            if let Some(name) = self.remove_peer(user, dev, Some(worker)) {
                let frame = self.presence_frame(user, dev, &name, false);
                self.broadcast(&frame, None, fx);
            }
            return;
        }
        if !self.is_member(user) {
            return;
        }
        if let Some(old) = self.subs.get_mut(user).and_then(|d| d.remove(dev)) {
            if self.subs.get(user).is_some_and(HashMap::is_empty) {
                self.subs.remove(user);
            }
            old.conn.push(
                Outgoing::Replaced {
                    room_id: &self.room_id,
                }
                .to_frame(),
                &mut fx.wakes,
            );
        }
        let known = self
            .peers
            .entry(user.to_owned())
            .or_default()
            .insert(
                dev.to_owned(),
                PeerDevice {
                    worker: worker.into(),
                    display_name: device.display_name.as_str().into(),
                },
            )
            .is_some();
        if !known {
            let frame = self.presence_frame(user, dev, &device.display_name, true);
            self.broadcast(&frame, Some((user, dev)), fx);
        }
    }

    /// Replaces what this worker knows of devices connected through the others with the
    /// database's list (`devices`, every worker's; `me` is this one's id), telling the local
    /// subscribers what changed: a worker that died, or news that was missed.
    pub fn set_peers(&mut self, devices: &[(ConnectedDevice, String)], me: &str, fx: &mut Effects) {
        if self.closed {
            return;
        }
        let mut fresh: Devices<PeerDevice> = HashMap::default();
        for (d, worker) in devices {
            // A device another server announced to another worker is that worker's to route
            // (unless this one heard of it too).
            let remote = self
                .remote
                .get(&d.user_id)
                .is_some_and(|r| r.contains_key(&d.device_id));
            if worker == me || remote || !self.is_member(&d.user_id) {
                continue;
            }
            fresh.entry(d.user_id.clone()).or_default().insert(
                d.device_id.clone(),
                PeerDevice {
                    worker: worker.as_str().into(),
                    display_name: d.display_name.as_str().into(),
                },
            );
        }
        let old = std::mem::replace(&mut self.peers, fresh);
        for (user, devices) in &old {
            for (device, p) in devices {
                if !self.peers.get(user).is_some_and(|d| d.contains_key(device)) {
                    let frame = self.presence_frame(user, device, &p.display_name, false);
                    self.broadcast(&frame, None, fx);
                }
            }
        }
        for (user, devices) in &self.peers {
            for (device, p) in devices {
                if !old.get(user).is_some_and(|d| d.contains_key(device)) {
                    let frame = self.presence_frame(user, device, &p.display_name, true);
                    self.broadcast(&frame, Some((user, device)), fx);
                }
            }
        }
    }

    /// A device connected through another worker is (not) typing.
    pub fn peer_typing(&self, user_id: &str, device_id: &str, typing: bool, fx: &mut Effects) {
        let frame = Outgoing::Typing {
            room_id: &self.room_id,
            user_id,
            device_id,
            typing,
        }
        .to_frame();
        self.broadcast(&frame, Some((user_id, device_id)), fx);
    }

    /// A signal another worker passed on for a device connected here, or (on the origin)
    /// through a server whose presence this worker heard; returns whether it went anywhere.
    pub fn peer_signal(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        payload: &str,
        fx: &mut Effects,
    ) -> bool {
        self.signal_here(from, to, payload, fx) || self.signal_server(from, to, payload, None, fx)
    }

    /// Queues a signal for a device subscribed here, if it is.
    fn signal_here(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        payload: &str,
        fx: &mut Effects,
    ) -> bool {
        let Some(target) = self.subs.get(to.0).and_then(|d| d.get(to.1)) else {
            return false;
        };
        target.conn.push(
            Outgoing::Signal {
                room_id: &self.room_id,
                from: DeviceRef {
                    user_id: from.0.into(),
                    device_id: from.1.into(),
                },
                payload,
            }
            .to_frame(),
            &mut fx.wakes,
        );
        true
    }

    /// On the origin, passes a signal to the server a device is connected through, if it is
    /// and that is not `except` (the server it came from).
    fn signal_server(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        payload: &str,
        except: Option<&str>,
        fx: &mut Effects,
    ) -> bool {
        let server = self
            .remote
            .get(to.0)
            .and_then(|d| d.get(to.1))
            .filter(|r| self.origin_is_self && Some(r.server.as_str()) != except)
            .map(|r| r.server.clone());
        let Some(server) = server else {
            return false;
        };
        fx.edu(
            vec![server],
            edu::SIGNAL,
            signal_edu(&self.room_id, from.0, from.1, to, payload),
        );
        true
    }

    /// Passes a signal to the worker the device is connected through, if it is.
    fn signal_peer(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        payload: &str,
        fx: &mut Effects,
    ) -> bool {
        let Some(peer) = self.peers.get(to.0).and_then(|d| d.get(to.1)) else {
            return false;
        };
        fx.to_workers.push(ToWorkers::Signal {
            worker: peer.worker.to_string(),
            from: (from.0.to_owned(), from.1.to_owned()),
            to: (to.0.to_owned(), to.1.to_owned()),
            payload: payload.to_owned(),
        });
        true
    }

    /// A replica with nobody connected here hears no more presence from the origin, so what it
    /// knows of other servers' devices goes stale: it forgets them (the next local subscriber
    /// gets a fresh list).
    fn forget_replica_devices(&mut self) {
        if !self.origin_is_self && self.subs.is_empty() {
            self.remote.clear();
        }
    }

    /// Whether `who`, on this socket, may send chat now: subscribed, and a joined member.
    pub fn check_chat(&self, who: &Identity, conn_id: u64) -> Result<(), ApiError> {
        if !self.is_subscribed(who, conn_id) || !self.is_member(&who.user_id) {
            return Err(not_subscribed());
        }
        Ok(())
    }

    /// Relays an opaque signaling payload to one device: here, or through the homeserver it is
    /// connected to (from a replica: through the origin). The payload is passed on untouched.
    pub fn signal(
        &self,
        from: &Identity,
        conn_id: u64,
        to: (&str, &str),
        payload: &str,
        fx: &mut Effects,
    ) -> Result<(), ApiError> {
        if !self.is_subscribed(from, conn_id) {
            return Err(not_subscribed());
        }
        let sender = (from.user_id.as_str(), from.device_id.as_str());
        if self.signal_here(sender, to, payload, fx) || self.signal_peer(sender, to, payload, fx) {
            return Ok(());
        }
        let server = self
            .remote
            .get(to.0)
            .and_then(|d| d.get(to.1))
            .map(|r| r.server.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::DeviceNotInRoom,
                    "the addressed device is not connected to this room",
                )
            })?;
        let target = if self.origin_is_self {
            server
        } else {
            self.origin.clone()
        };
        fx.edu(
            vec![target],
            edu::SIGNAL,
            signal_edu(&self.room_id, &from.user_id, &from.device_id, to, payload),
        );
        Ok(())
    }

    /// Tells the room's other devices that `from` is (not) typing.
    pub fn typing(
        &self,
        from: &Identity,
        conn_id: u64,
        typing: bool,
        fx: &mut Effects,
    ) -> Result<(), ApiError> {
        if !self.is_subscribed(from, conn_id) {
            return Err(not_subscribed());
        }
        let frame = Outgoing::Typing {
            room_id: &self.room_id,
            user_id: &from.user_id,
            device_id: &from.device_id,
            typing,
        }
        .to_frame();
        self.broadcast(&frame, Some((&from.user_id, &from.device_id)), fx);
        if self.shared {
            fx.to_workers.push(ToWorkers::Typing {
                user_id: from.user_id.clone(),
                device_id: from.device_id.clone(),
                typing,
            });
        }
        fx.edu(
            self.local_targets(),
            edu::TYPING,
            json!({
                "room_id": &*self.room_id, "user_id": from.user_id,
                "device_id": from.device_id, "typing": typing,
            }),
        );
        Ok(())
    }

    /// Fans one committed event out to every live subscriber that has not had it, and applies
    /// what it changes (a member who left or was removed loses their subscriptions, after they
    /// got the event). The caller hands events in sequence order with no gap; an older one is
    /// ignored (a subscriber who needed it read it from the database).
    pub fn deliver(&mut self, event: &Event, fx: &mut Effects) {
        if event.seq <= self.published {
            return;
        }
        let frame = Outgoing::Event(EventOut::from(event)).to_frame();
        for devices in self.subs.values_mut() {
            for sub in devices.values_mut() {
                if sub.live && sub.last_seq < event.seq {
                    sub.conn.push(frame.clone(), &mut fx.wakes);
                    sub.last_seq = event.seq;
                }
            }
        }
        self.published = event.seq;
        if event.content.get("type").and_then(Value::as_str) != Some("member") {
            return;
        }
        let user = event.content.get("user_id").and_then(Value::as_str);
        let state = event
            .content
            .get("membership")
            .and_then(Value::as_str)
            .and_then(membership_of);
        if let (Some(user), Some(state)) = (user, state) {
            self.members.insert(user.to_owned(), state);
            if state != membership::JOINED {
                self.remove_user(user, fx);
            }
        }
    }

    /// A member left in a way the log does not show yet (a replica whose origin's event
    /// follows): taken out now.
    pub fn member_gone(&mut self, user_id: &str, fx: &mut Effects) {
        self.members.insert(user_id.to_owned(), membership::LEFT);
        self.remove_user(user_id, fx);
    }

    /// Takes a user who is no longer a member out of the room: their subscriptions here (each
    /// socket told `kicked`) and their devices connected through other servers.
    fn remove_user(&mut self, user_id: &str, fx: &mut Effects) {
        // Every worker takes the event's decision for its own sockets; what it knew of the
        // user's devices on the others just goes.
        for (device, p) in self.peers.remove(user_id).unwrap_or_default() {
            let frame = self.presence_frame(user_id, &device, &p.display_name, false);
            self.broadcast(&frame, None, fx);
        }
        let remote = self.remote.remove(user_id).unwrap_or_default();
        for (device, r) in &remote {
            let frame = self.presence_frame(user_id, device, &r.display_name, false);
            self.broadcast(&frame, None, fx);
            self.release(user_id, device, 0, fx);
            fx.edu(
                self.forward_targets(&r.server),
                edu::PRESENCE,
                self.presence_edu(user_id, device, &r.display_name, false),
            );
        }
        let devices = self.subs.remove(user_id).unwrap_or_default();
        if devices.is_empty() {
            return;
        }
        let kicked = Outgoing::Kicked {
            room_id: &self.room_id,
        }
        .to_frame();
        for (device, sub) in devices {
            sub.conn.push(kicked.clone(), &mut fx.wakes);
            self.release(user_id, &device, sub.conn.id, fx);
            let frame = self.presence_frame(user_id, &device, &sub.display_name, false);
            self.broadcast(&frame, None, fx);
            fx.edu(
                self.local_targets(),
                edu::PRESENCE,
                self.presence_edu(user_id, &device, &sub.display_name, false),
            );
        }
        self.forget_replica_devices();
    }

    /// The room is gone: every subscriber is told, and nothing is admitted any more.
    pub fn close(&mut self, reason: CloseReason, fx: &mut Effects) {
        self.closed = true;
        let frame = Outgoing::RoomClosed {
            room_id: &self.room_id,
            reason: reason.as_str(),
        }
        .to_frame();
        self.broadcast(&frame, None, fx);
        self.subs.clear();
        self.remote.clear();
        self.peers.clear();
    }

    /// A device connected to or left the room through homeserver `from` (its user's, or, on a
    /// replica, the origin passing it on). On the origin, remote devices count like local ones
    /// for capacity and the idle countdown, and the news is passed on to the other servers.
    ///
    /// `relayed`: another worker of ours applied it first (it checked it and passed it on);
    /// this worker only keeps its own list and tells its own sockets.
    pub fn remote_presence(
        &mut self,
        from: &str,
        device: &ConnectedDevice,
        online: bool,
        (now, relayed): (Instant, bool),
        fx: &mut Effects,
    ) -> Result<(), ApiError> {
        if self.closed {
            return Err(ApiError::room_not_found());
        }
        let server = device
            .user_id
            .split_once(':')
            .map_or(from, |(_, server)| server)
            .to_owned();
        if self.shared && !relayed {
            fx.to_workers.push(ToWorkers::Relay {
                server: from.to_owned(),
                edu_type: edu::PRESENCE.to_owned(),
                content: self.presence_edu(
                    &device.user_id,
                    &device.device_id,
                    &device.display_name,
                    online,
                ),
            });
        }
        let changed = if relayed {
            let changed = self.note_remote(device, online, server, now);
            if changed && !online {
                // This worker may be the one that admitted it.
                self.release(&device.user_id, &device.device_id, 0, fx);
            }
            changed
        } else if online {
            if self.origin_is_self && !self.is_member(&device.user_id) {
                return Err(ApiError::new(
                    ErrorCode::NotMember,
                    "that user is not a member of this room",
                ));
            }
            let known = self.remote.get(&device.user_id).map_or(0, |d| {
                d.len() - usize::from(d.contains_key(&device.device_id))
            });
            self.check_capacity(&device.user_id)?;
            if known >= self.limits.max_devices_per_user {
                return Err(ApiError::new(
                    ErrorCode::TooManyConnections,
                    "that user already has the most devices allowed in this room",
                ));
            }
            self.note_remote(device, true, server, now)
        } else {
            let removed = self.note_remote(device, false, server, now);
            if removed {
                self.release(&device.user_id, &device.device_id, 0, fx);
            }
            removed
        };
        if changed && relayed {
            let frame = self.presence_frame(
                &device.user_id,
                &device.device_id,
                &device.display_name,
                online,
            );
            self.broadcast(&frame, None, fx);
        } else if changed {
            let frame = self.presence_frame(
                &device.user_id,
                &device.device_id,
                &device.display_name,
                online,
            );
            self.broadcast(&frame, None, fx);
            fx.edu(
                self.forward_targets(from),
                edu::PRESENCE,
                self.presence_edu(
                    &device.user_id,
                    &device.device_id,
                    &device.display_name,
                    online,
                ),
            );
        }
        Ok(())
    }

    /// Adds (`online`) or removes a device connected through another server; returns whether
    /// that changed the list.
    fn note_remote(
        &mut self,
        device: &ConnectedDevice,
        online: bool,
        server: String,
        now: Instant,
    ) -> bool {
        if online {
            return self
                .remote
                .entry(device.user_id.clone())
                .or_default()
                .insert(
                    device.device_id.clone(),
                    RemoteDevice {
                        server,
                        display_name: device.display_name.as_str().into(),
                        seen: now,
                    },
                )
                .is_none();
        }
        let removed = self
            .remote
            .get_mut(&device.user_id)
            .and_then(|d| d.remove(&device.device_id))
            .is_some();
        if self
            .remote
            .get(&device.user_id)
            .is_some_and(HashMap::is_empty)
        {
            self.remote.remove(&device.user_id);
        }
        removed
    }

    /// On the origin, the remote devices whose server has not confirmed them for `lease`, with
    /// their server: to be taken off as if their server said they left.
    pub fn stale_remote_devices(
        &self,
        lease: Duration,
        now: Instant,
    ) -> Vec<(String, ConnectedDevice)> {
        if !self.origin_is_self {
            return Vec::new();
        }
        self.remote
            .iter()
            .flat_map(|(user, devices)| {
                devices
                    .iter()
                    .filter(|(_, r)| now.saturating_duration_since(r.seen) > lease)
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
            .collect()
    }

    /// On a replica, replaces what it knows of devices connected through other servers with the
    /// origin's list (`ours` are this server's own devices, which it knows better), telling the
    /// local subscribers what changed.
    pub fn set_remote_devices(
        &mut self,
        devices: &[ConnectedDevice],
        ours: &str,
        now: Instant,
        fx: &mut Effects,
    ) {
        if self.closed {
            return;
        }
        let mut fresh: Devices<RemoteDevice> = HashMap::default();
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
                    seen: now,
                },
            );
        }
        let old = std::mem::replace(&mut self.remote, fresh);
        for (user, devices) in &old {
            for (device, r) in devices {
                if !self
                    .remote
                    .get(user)
                    .is_some_and(|d| d.contains_key(device))
                {
                    let frame = self.presence_frame(user, device, &r.display_name, false);
                    self.broadcast(&frame, None, fx);
                }
            }
        }
        for (user, devices) in &self.remote {
            for (device, r) in devices {
                if !old.get(user).is_some_and(|d| d.contains_key(device)) {
                    let frame = self.presence_frame(user, device, &r.display_name, true);
                    self.broadcast(&frame, None, fx);
                }
            }
        }
    }

    /// Whether `from` may speak for the device: on the origin, the device must be connected
    /// through `from`; on a replica, only the origin speaks.
    fn remote_speaker(&self, from: &str, user_id: &str, device_id: &str) -> bool {
        if self.origin_is_self {
            self.remote
                .get(user_id)
                .and_then(|d| d.get(device_id))
                .is_some_and(|r| r.server == from)
        } else {
            from == self.origin
        }
    }

    /// A typing notice from homeserver `from`.
    /// `relayed` as for [`Self::remote_presence`].
    pub fn remote_typing(
        &self,
        from: &str,
        (user_id, device_id): (&str, &str),
        typing: bool,
        relayed: bool,
        fx: &mut Effects,
    ) {
        if !relayed && !self.remote_speaker(from, user_id, device_id) {
            return;
        }
        let frame = Outgoing::Typing {
            room_id: &self.room_id,
            user_id,
            device_id,
            typing,
        }
        .to_frame();
        self.broadcast(&frame, None, fx);
        if relayed {
            return;
        }
        if self.shared {
            fx.to_workers.push(ToWorkers::Relay {
                server: from.to_owned(),
                edu_type: edu::TYPING.to_owned(),
                content: json!({ "room_id": &*self.room_id, "user_id": user_id, "device_id": device_id, "typing": typing }),
            });
        }
        fx.edu(
            self.forward_targets(from),
            edu::TYPING,
            json!({ "room_id": &*self.room_id, "user_id": user_id, "device_id": device_id, "typing": typing }),
        );
    }

    /// A signal from homeserver `from` for one device: delivered if it is connected here, passed
    /// on by the origin if it is connected through a third server, dropped otherwise (signaling
    /// is best-effort; the sender's client renegotiates). Returns whether it went anywhere.
    pub fn remote_signal(
        &self,
        from: &str,
        sender: (&str, &str),
        to: (&str, &str),
        payload: &str,
        fx: &mut Effects,
    ) -> bool {
        if !self.remote_speaker(from, sender.0, sender.1) {
            return false;
        }
        self.signal_here(sender, to, payload, fx)
            || self.signal_peer(sender, to, payload, fx)
            || self.signal_server(sender, to, payload, Some(from), fx)
    }
}

fn signal_edu(room_id: &str, user: &str, device: &str, to: (&str, &str), payload: &str) -> Value {
    json!({
        "room_id": room_id,
        "from": { "user_id": user, "device_id": device },
        "to": { "user_id": to.0, "device_id": to.1 },
        "payload": payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "!r:here";

    fn member(user: &str, state: &str) -> Member {
        Member {
            room_id: ROOM.into(),
            user_id: user.into(),
            display_name: user.into(),
            is_host: false,
            membership: state.into(),
            joined_ts: 0,
            updated_ts: 0,
        }
    }

    fn room(origin_is_self: bool, members: &[&str]) -> RoomState {
        let members: Vec<Member> = members
            .iter()
            .map(|u| member(u, membership::JOINED))
            .collect();
        RoomState::new(
            ROOM,
            "here",
            origin_is_self,
            0,
            &members,
            RoomLimits {
                max_participants: 3,
                max_devices_per_user: 2,
            },
            false,
        )
    }

    fn who(user: &str, device: &str) -> Identity {
        Identity {
            user_id: user.into(),
            device_id: device.into(),
            display_name: user.into(),
        }
    }

    struct Socket {
        conn: ConnHandle,
        rx: super::super::conn::Outbox,
    }

    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    fn socket() -> Socket {
        let (conn, rx, _) =
            ConnHandle::new(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed), 64);
        Socket { conn, rx }
    }

    impl Socket {
        fn frames(&mut self) -> Vec<Value> {
            std::iter::from_fn(|| self.rx.try_next())
                .map(|f| serde_json::from_str(&f).unwrap())
                .collect()
        }
    }

    fn member_event(seq: i64, user: &str, state: &str) -> Event {
        Event {
            room_id: ROOM.into(),
            seq,
            sender: "@host:here".into(),
            device_id: "H".into(),
            origin_ts: 0,
            content: crate::protocol::member_content(user, user, state),
        }
    }

    fn subscribed(room: &mut RoomState, w: &Identity) -> Socket {
        let mut s = socket();
        room.subscribe(w, &s.conn, 0, &mut Effects::default())
            .unwrap();
        assert_eq!(room.go_live(w, s.conn.id, 0), GoLive::Live);
        s.frames();
        s
    }

    #[test]
    fn only_members_subscribe_and_capacity_counts_users() {
        let mut r = room(true, &["@a:here", "@b:here", "@c:here", "@d:here"]);
        let mut fx = Effects::default();
        let err = r
            .subscribe(&who("@x:here", "X"), &socket().conn, 0, &mut fx)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotMember);
        for u in ["@a:here", "@b:here", "@c:here"] {
            r.subscribe(&who(u, "1"), &socket().conn, 0, &mut fx)
                .unwrap();
        }
        // A second device of a user already in takes no new place.
        r.subscribe(&who("@a:here", "2"), &socket().conn, 0, &mut fx)
            .unwrap();
        let err = r
            .subscribe(&who("@d:here", "1"), &socket().conn, 0, &mut fx)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::RoomFull);
        assert_eq!(r.user_count(), 3);
    }

    #[test]
    fn a_kick_between_membership_check_and_subscribe_leaves_nobody_subscribed() {
        // The interleaving that was possible before: the kick is fanned out first, then the
        // kicked user's subscribe arrives. The owner decides against its own membership.
        let mut r = room(true, &["@host:here", "@k:here"]);
        let mut fx = Effects::default();
        r.deliver(&member_event(1, "@k:here", membership::KICKED), &mut fx);
        let s = socket();
        let err = r
            .subscribe(&who("@k:here", "K"), &s.conn, 0, &mut fx)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotMember);
        assert!(!r.has_user("@k:here"));
        // And in the other order: subscribed first, then kicked: told, and out.
        let mut r = room(true, &["@host:here", "@k:here"]);
        let mut s = subscribed(&mut r, &who("@k:here", "K"));
        r.deliver(&member_event(1, "@k:here", membership::KICKED), &mut fx);
        let frames = s.frames();
        assert_eq!(
            frames[0]["type"], "event",
            "the kick event first: {frames:?}"
        );
        assert_eq!(frames[1]["type"], "kicked");
        assert!(!r.is_subscribed(&who("@k:here", "K"), s.conn.id));
        assert!(r.check_chat(&who("@k:here", "K"), s.conn.id).is_err());
    }

    #[test]
    fn chat_and_signal_are_checked_on_every_message() {
        let mut r = room(true, &["@a:here", "@b:here"]);
        let a = who("@a:here", "A");
        let sa = subscribed(&mut r, &a);
        let mut sb = subscribed(&mut r, &who("@b:here", "B"));
        let mut fx = Effects::default();
        r.signal(&a, sa.conn.id, ("@b:here", "B"), "sdp", &mut fx)
            .unwrap();
        assert_eq!(sb.frames()[0]["payload"], "sdp");
        // Another socket of the same device is not the subscription.
        assert_eq!(
            r.signal(&a, sa.conn.id + 1000, ("@b:here", "B"), "x", &mut fx)
                .unwrap_err()
                .code,
            ErrorCode::NotSubscribed
        );
        assert_eq!(
            r.signal(&a, sa.conn.id, ("@b:here", "NOPE"), "x", &mut fx)
                .unwrap_err()
                .code,
            ErrorCode::DeviceNotInRoom
        );
        r.check_chat(&a, sa.conn.id).unwrap();
        r.deliver(&member_event(1, "@a:here", membership::LEFT), &mut fx);
        assert!(r.check_chat(&a, sa.conn.id).is_err());
        assert!(
            r.signal(&a, sa.conn.id, ("@b:here", "B"), "x", &mut fx)
                .is_err()
        );
    }

    #[test]
    fn a_backlog_reader_goes_live_only_when_nothing_was_fanned_out_past_it() {
        let mut r = room(true, &["@a:here", "@host:here"]);
        let a = who("@a:here", "A");
        let mut s = socket();
        let mut fx = Effects::default();
        r.subscribe(&a, &s.conn, 0, &mut fx).unwrap();
        // An event committed and fanned out while the backlog (up to 0) was read.
        r.deliver(&member_event(1, "@host:here", membership::JOINED), &mut fx);
        assert!(s.frames().is_empty(), "not pushed before it is live");
        assert_eq!(r.go_live(&a, s.conn.id, 0), GoLive::Behind(0));
        assert_eq!(r.go_live(&a, s.conn.id, 1), GoLive::Live);
        r.deliver(&member_event(2, "@host:here", membership::JOINED), &mut fx);
        let frames = s.frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["seq"], 2);
        // An old event fanned out again reaches nobody.
        r.deliver(&member_event(2, "@host:here", membership::JOINED), &mut fx);
        assert!(s.frames().is_empty());
    }

    fn shared_room(members: &[&str]) -> RoomState {
        let mut r = room(true, members);
        r.shared = true;
        r
    }

    fn device(user: &str, dev: &str) -> ConnectedDevice {
        ConnectedDevice {
            user_id: user.into(),
            device_id: dev.into(),
            display_name: user.into(),
        }
    }

    #[test]
    fn on_one_of_several_workers_news_goes_to_the_others_and_places_are_given_back() {
        let mut r = shared_room(&["@a:here", "@b:here", "@c:here", "@d:here"]);
        let a = who("@a:here", "A");
        let mut fx = Effects::default();
        let mut on_a = socket();
        // Capacity (3 here) is the database's to decide: a fourth user is not refused here.
        let others: Vec<(ConnectedDevice, String)> = ["@b:here", "@c:here", "@d:here"]
            .iter()
            .map(|u| (device(u, "X"), "w2".to_owned()))
            .collect();
        r.set_peers(&others, "w1", &mut fx);
        r.subscribe(&a, &on_a.conn, 0, &mut fx).unwrap();
        assert_eq!(r.user_count(), 4);
        assert!(matches!(
            &fx.to_workers[..],
            [ToWorkers::Presence { online: true, .. }]
        ));
        assert_eq!(r.go_live(&a, on_a.conn.id, 0), GoLive::Live);
        on_a.frames();
        // A signal for a device on another worker goes to that worker only.
        let mut fx = Effects::default();
        r.signal(&a, on_a.conn.id, ("@b:here", "X"), "sdp", &mut fx)
            .unwrap();
        assert!(matches!(
            &fx.to_workers[..],
            [ToWorkers::Signal { worker, payload, .. }] if worker == "w2" && payload == "sdp"
        ));
        assert!(fx.edus.is_empty());
        // Typing is told to the others; leaving gives the place back under this socket's id.
        let mut fx = Effects::default();
        r.typing(&a, on_a.conn.id, true, &mut fx).unwrap();
        assert!(matches!(
            &fx.to_workers[..],
            [ToWorkers::Typing { typing: true, .. }]
        ));
        let mut fx = Effects::default();
        assert!(r.unsubscribe(&a, on_a.conn.id, &mut fx));
        assert_eq!(
            fx.released,
            vec![("@a:here".to_owned(), "A".to_owned(), on_a.conn.id)]
        );
    }

    #[test]
    fn a_device_that_comes_up_on_another_worker_replaces_its_socket_here() {
        let mut r = shared_room(&["@a:here", "@b:here"]);
        let (a, b) = (who("@a:here", "A"), who("@b:here", "B"));
        let mut on_a = subscribed(&mut r, &a);
        let mut on_b = subscribed(&mut r, &b);
        on_a.frames(); // B's presence
        let mut fx = Effects::default();
        r.peer_presence("w2", &device("@a:here", "A"), true, &mut fx);
        assert_eq!(on_a.frames()[0]["type"], "replaced");
        assert!(!r.is_subscribed(&a, on_a.conn.id));
        // B sees A online once more (now through w2), and A's old socket gives nothing back:
        // its place moved with it.
        assert_eq!(on_b.frames()[0]["type"], "presence");
        assert!(fx.released.is_empty());
        // Its going away from w2 is news from w2 only.
        let mut fx = Effects::default();
        r.peer_presence("w3", &device("@a:here", "A"), false, &mut fx);
        assert!(r.has_user("@a:here"));
        r.peer_presence("w2", &device("@a:here", "A"), false, &mut fx);
        assert!(!r.has_user("@a:here"));
        assert_eq!(on_b.frames()[0]["online"], false);
        // A kick removes what this worker knew of the user's devices elsewhere, too.
        r.peer_presence("w2", &device("@b:here", "B2"), true, &mut fx);
        r.deliver(&member_event(1, "@b:here", "kicked"), &mut fx);
        assert!(!r.has_user("@b:here"));
    }

    #[test]
    fn the_same_device_on_a_new_socket_replaces_the_old_one() {
        let mut r = room(true, &["@a:here"]);
        let a = who("@a:here", "A");
        let mut old = subscribed(&mut r, &a);
        let new = socket();
        r.subscribe(&a, &new.conn, 0, &mut Effects::default())
            .unwrap();
        assert_eq!(old.frames()[0]["type"], "replaced");
        assert!(r.is_subscribed(&a, new.conn.id));
        assert!(!r.unsubscribe(&a, old.conn.id, &mut Effects::default()));
        assert!(r.is_subscribed(&a, new.conn.id));
    }

    #[test]
    fn idle_on_the_origin_counts_remote_devices_and_on_a_replica_only_its_own() {
        let now = Instant::now();
        let remote = ConnectedDevice {
            user_id: "@r:there".into(),
            device_id: "R".into(),
            display_name: "r".into(),
        };
        let mut origin = room(true, &["@a:here", "@r:there"]);
        let mut fx = Effects::default();
        assert!(origin.is_idle());
        origin
            .remote_presence("there", &remote, true, (now, false), &mut fx)
            .unwrap();
        assert!(!origin.is_idle());
        let a = who("@a:here", "A");
        let s = subscribed(&mut origin, &a);
        origin
            .remote_presence("there", &remote, false, (now, false), &mut fx)
            .unwrap();
        assert!(!origin.is_idle());
        origin.unsubscribe(&a, s.conn.id, &mut fx);
        assert!(origin.is_idle());

        let mut replica = room(false, &["@a:here"]);
        replica.set_remote_devices(std::slice::from_ref(&remote), "here", now, &mut fx);
        assert!(
            replica.is_idle(),
            "another server's device does not stop our countdown"
        );
        let s = subscribed(&mut replica, &a);
        assert!(!replica.is_idle());
        replica.unsubscribe(&a, s.conn.id, &mut fx);
        assert!(
            replica.is_idle() && replica.is_unused(),
            "stale remote list forgotten"
        );
    }

    #[test]
    fn remote_devices_need_membership_capacity_and_expire_without_confirmation() {
        let now = Instant::now();
        let mut r = room(true, &["@r:there"]);
        let mut fx = Effects::default();
        let device = |d: &str, user: &str| ConnectedDevice {
            user_id: user.into(),
            device_id: d.into(),
            display_name: "r".into(),
        };
        assert_eq!(
            r.remote_presence(
                "there",
                &device("X", "@x:there"),
                true,
                (now, false),
                &mut fx
            )
            .unwrap_err()
            .code,
            ErrorCode::NotMember
        );
        r.remote_presence(
            "there",
            &device("1", "@r:there"),
            true,
            (now, false),
            &mut fx,
        )
        .unwrap();
        r.remote_presence(
            "there",
            &device("2", "@r:there"),
            true,
            (now, false),
            &mut fx,
        )
        .unwrap();
        assert_eq!(
            r.remote_presence(
                "there",
                &device("3", "@r:there"),
                true,
                (now, false),
                &mut fx
            )
            .unwrap_err()
            .code,
            ErrorCode::TooManyConnections
        );
        let later = now + Duration::from_secs(10);
        assert!(
            r.stale_remote_devices(Duration::from_secs(30), later)
                .is_empty()
        );
        assert_eq!(
            r.stale_remote_devices(Duration::from_secs(5), later).len(),
            2
        );
    }

    #[test]
    fn close_tells_everyone_and_admits_nobody() {
        let mut r = room(true, &["@a:here"]);
        let a = who("@a:here", "A");
        let mut s = subscribed(&mut r, &a);
        r.close(CloseReason::Expired, &mut Effects::default());
        let frames = s.frames();
        assert_eq!(frames[0]["type"], "room_closed");
        assert_eq!(frames[0]["reason"], "expired");
        let err = r
            .subscribe(&a, &socket().conn, 0, &mut Effects::default())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::RoomNotFound);
    }

    #[test]
    fn presence_goes_to_other_servers_from_the_origin_and_to_the_origin_from_a_replica() {
        let now = Instant::now();
        let remote = ConnectedDevice {
            user_id: "@r:there".into(),
            device_id: "R".into(),
            display_name: "r".into(),
        };
        let mut origin = room(true, &["@a:here", "@r:there"]);
        let mut fx = Effects::default();
        origin
            .remote_presence("there", &remote, true, (now, false), &mut fx)
            .unwrap();
        assert!(fx.edus.is_empty(), "nobody else to tell");
        let a = who("@a:here", "A");
        let s = subscribed(&mut origin, &a);
        let mut fx = Effects::default();
        origin.unsubscribe(&a, s.conn.id, &mut fx);
        assert_eq!(fx.edus[0].to, vec!["there".to_owned()]);
        assert_eq!(fx.edus[0].edu_type, edu::PRESENCE);

        let mut replica = room(false, &["@a:here"]);
        let s = subscribed(&mut replica, &a);
        let mut fx = Effects::default();
        replica.unsubscribe(&a, s.conn.id, &mut fx);
        assert_eq!(
            fx.edus[0].to,
            vec!["here".to_owned()],
            "the origin, named in the room id"
        );
    }
}
