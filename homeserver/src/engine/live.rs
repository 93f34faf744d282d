//! The rooms with live state in this process: one [`LiveRoom`] per room, holding the room's
//! [`RoomState`] (its only owner) behind a lock that is never held across an await. Everything
//! that changes a room's live state goes through [`LiveRooms::with`], so each room's decisions
//! are taken one at a time; the effects that need I/O are applied after the decision, in the
//! order they were decided: ephemeral events to other servers at once, the idle countdown through
//! [`IdleWriter`], and committed events through the room's fan-out, which fills a gap from the
//! database before it delivers.
//!
//! Ordering: persisted events are published after commit. Each room remembers the newest
//! sequence number it has fanned out; an older one is dropped (a subscriber who needed it read
//! it from the database), and a gap is filled from the database first, which is safe because a
//! room's numbers are assigned under its row lock, so everything before a committed event is
//! committed too. Every subscriber therefore sees the log in order, exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use confab_federation::ids::ServerName;
use confab_federation::transaction::Edu;
use confab_schema::models::Event;
use confab_schema::{DbPool, queries};

use super::conn::{CLOSE_SLOW_CONSUMER, ConnHandle, Wakes};
use super::idle::{Countdown, IdleWriter};
use super::reply::{ChatReply, Committed};
use super::room::{CloseReason, Effects, GoLive, RoomLimits, RoomState};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::federation::sender::TransactionSender;
use crate::metrics::Metrics;
use crate::protocol::{EventOut, Outgoing};
use crate::sessions::Identity;

/// Events read per page while a subscriber catches up.
const CATCH_UP_PAGE: i64 = 500;

/// One room's live state and the locks that order its I/O.
#[derive(Debug)]
pub struct LiveRoom {
    room_id: Arc<str>,
    state: Mutex<RoomState>,
    /// Serializes publishers, so a gap is filled before anything after it is delivered.
    fanout: tokio::sync::Mutex<()>,
    idle: IdleWriter,
}

impl LiveRoom {
    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RoomState> {
        // A panic while deciding cannot leave the state half-updated in a way that matters more
        // than losing the room, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the room's state.
    pub fn read<R>(&self, f: impl FnOnce(&RoomState) -> R) -> R {
        f(&self.state())
    }
}

/// The registry of live rooms; shared by the engine and the event writer.
pub struct LiveRooms {
    rooms: RwLock<HashMap<Arc<str>, Arc<LiveRoom>>>,
    pool: DbPool,
    metrics: Metrics,
    sender: TransactionSender,
    server_name: ServerName,
    limits: RoomLimits,
    countdown: Countdown,
    /// The other workers, told of every event committed here and every room closed here.
    cluster: Cluster,
}

impl LiveRooms {
    pub fn new(
        pool: DbPool,
        metrics: Metrics,
        sender: TransactionSender,
        server_name: ServerName,
        limits: RoomLimits,
        countdown: Countdown,
        cluster: Cluster,
    ) -> Self {
        Self {
            rooms: RwLock::default(),
            pool,
            metrics,
            sender,
            server_name,
            limits,
            countdown,
            cluster,
        }
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub fn countdown(&self) -> &Countdown {
        &self.countdown
    }

    /// The room's live state, if it has any here.
    pub fn get(&self, room_id: &str) -> Option<Arc<LiveRoom>> {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room_id)
            .cloned()
    }

    /// The room's live state, loaded from its row and members (one snapshot) on first use.
    pub async fn load(&self, room_id: &str) -> Result<Arc<LiveRoom>, ApiError> {
        if let Some(live) = self.get(room_id) {
            return Ok(live);
        }
        let (room, members) = {
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::room_with_members(&mut db, room_id)
                .await?
                .ok_or_else(ApiError::room_not_found)?
        };
        let (live, inserted) = {
            let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
            match rooms.get(room_id) {
                Some(live) => (live.clone(), false),
                None => {
                    let live = Arc::new(LiveRoom {
                        room_id: room_id.into(),
                        state: Mutex::new(RoomState::new(
                            room_id,
                            &room.origin,
                            room.origin == self.server_name.as_str(),
                            room.last_seq,
                            &members,
                            self.limits,
                        )),
                        fanout: tokio::sync::Mutex::new(()),
                        idle: IdleWriter::new(),
                    });
                    rooms.insert(room_id.into(), live.clone());
                    (live, true)
                }
            }
        };
        self.metrics.live_rooms.set(self.len() as i64);
        if inserted {
            // An event committed after the snapshot but published before the room was here
            // reached nobody: fan out from the snapshot's number to the newest one.
            self.publish(room_id, &[], Vec::new()).await;
        }
        Ok(live)
    }

    /// Number of rooms with live state here.
    pub fn len(&self) -> usize {
        self.rooms.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live room.
    pub fn all(&self) -> Vec<Arc<LiveRoom>> {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Takes one decision on the room's state, then sends the ephemeral events it produced.
    pub fn with<R>(
        &self,
        live: &LiveRoom,
        decide: impl FnOnce(&mut RoomState, &mut Effects) -> R,
    ) -> R {
        let mut fx = Effects::default();
        let result = decide(&mut live.state(), &mut fx);
        self.apply(fx);
        result
    }

    fn apply(&self, fx: Effects) {
        let Effects { edus, wakes } = fx;
        drop(wakes);
        for edu in edus {
            for target in &edu.to {
                if let Ok(server) = ServerName::parse(target) {
                    self.sender.send_ephemeral(
                        &server,
                        Edu {
                            edu_type: edu.edu_type.to_owned(),
                            content: edu.content.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Brings the room's idle countdown in line with its state. Returns false when the room's
    /// row is gone.
    pub async fn sync_idle(&self, live: &LiveRoom) -> Result<bool, ApiError> {
        live.idle
            .sync(&self.countdown, &self.pool, &live.room_id, || {
                let state = live.state();
                (!state.is_closed()).then(|| state.is_idle())
            })
            .await
    }

    /// [`Self::sync_idle`] where nobody waits for the answer: a failure is logged, and the
    /// start-up countdown catches a room whose countdown could not be written.
    pub async fn sync_idle_logged(&self, live: &LiveRoom) {
        if let Err(err) = self.sync_idle(live).await {
            tracing::warn!(room_id = %live.room_id, error = %err, "could not write a room's idle countdown");
        }
    }

    /// Fans committed events of one room out to its live subscribers, in sequence order, first
    /// filling any gap before them from the database (with no events: up to the newest). The
    /// `answers` to the chat committed with them are queued in the same burst as the fan-out.
    pub async fn publish(
        &self,
        room_id: &str,
        events: &[Event],
        answers: Vec<(ChatReply, Committed)>,
    ) {
        // Events handed in were committed by this worker (the others read theirs from the
        // table): the other workers are told after the commit, never inside it.
        if let Some(last) = events.last() {
            self.cluster.committed(room_id, last.seq);
        }
        let Some(live) = self.get(room_id) else {
            let mut wakes = Wakes::default();
            for (reply, answer) in answers {
                reply.answer(Ok(answer), &self.metrics, &mut wakes);
            }
            return;
        };
        let _fanout = live.fanout.lock().await;
        let published = live.read(RoomState::published);
        let first = events.iter().map(|e| e.seq).find(|s| *s > published);
        let fill_to = match first {
            Some(first) => first - 1,
            None if events.is_empty() => i64::MAX,
            None => published,
        };
        if fill_to > published {
            let missing = async {
                let mut db = confab_schema::connect(&self.pool).await?;
                // After a load, the events the snapshot missed: a moment's worth.
                let limit = if events.is_empty() {
                    CATCH_UP_PAGE
                } else {
                    fill_to - published
                };
                queries::events_after(&mut db, room_id, published, limit).await
            }
            .await;
            match missing {
                Ok(missing) => self.deliver(&live, &missing, Vec::new()),
                // Subscribers will miss the gap until they resume; say so loudly.
                Err(err) => tracing::error!(room_id, error = %err, "could not fill a fan-out gap"),
            }
        }
        self.deliver(&live, events, answers);
        drop(_fanout);
        self.sync_idle_logged(&live).await;
    }

    fn deliver(&self, live: &LiveRoom, events: &[Event], answers: Vec<(ChatReply, Committed)>) {
        if events.is_empty() && answers.is_empty() {
            return;
        }
        self.with(live, |state, fx| {
            for event in events {
                state.deliver(event, fx);
            }
            for (reply, answer) in answers {
                reply.answer(Ok(answer), &self.metrics, &mut fx.wakes);
            }
        });
    }

    /// Sends a new subscriber every event after `since`, then switches it to live delivery
    /// without a gap or a duplicate (see the module docs). A client that does not take its
    /// backlog within `patience` is closed as a slow consumer (it can resume).
    pub async fn catch_up(
        &self,
        live: &LiveRoom,
        who: &Identity,
        conn: &ConnHandle,
        since: i64,
        patience: std::time::Duration,
    ) -> Result<(), ApiError> {
        // A client may claim more than exists (a replayed or forged `since`): it is owed
        // everything after the room's newest event, not after its claim.
        let mut last = since.min(live.read(RoomState::published));
        loop {
            let page = {
                let mut db = confab_schema::connect(&self.pool).await?;
                queries::events_after(&mut db, &live.room_id, last, CATCH_UP_PAGE).await?
            };
            for event in &page {
                let frame = Outgoing::Event(EventOut::from(event)).to_frame();
                match tokio::time::timeout(patience, conn.send_wait(frame)).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(_) => {
                        conn.close(
                            CLOSE_SLOW_CONSUMER,
                            "slow consumer: the client did not read its backlog",
                        );
                        return Ok(());
                    }
                }
                last = event.seq;
            }
            if page.len() as i64 == CATCH_UP_PAGE {
                continue;
            }
            match self.with(live, |state, _| state.go_live(who, conn.id, last)) {
                GoLive::Live | GoLive::Gone => return Ok(()),
                GoLive::Behind(_) => {}
            }
        }
    }

    /// Forgets a room deleted here, tells its subscribers, and the other workers.
    pub fn close(&self, room_id: &str, reason: CloseReason) {
        self.cluster.closed(room_id, reason.as_str());
        self.close_here(room_id, reason);
    }

    /// Forgets a deleted room and tells its subscribers here.
    pub fn close_here(&self, room_id: &str, reason: CloseReason) {
        let removed = self
            .rooms
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room_id);
        if let Some(live) = removed {
            self.with(&live, |state, fx| state.close(reason, fx));
        }
        self.metrics.live_rooms.set(self.len() as i64);
    }

    /// Brings the room's subscribers up to the newest of its committed events that `seq` is
    /// not beyond, reading them from the table a page at a time (another worker committed
    /// them). Nothing to do for a room not live here.
    pub async fn catch_up_to(&self, room_id: &str, seq: i64) {
        while let Some(live) = self.get(room_id) {
            let before = live.read(RoomState::published);
            if before >= seq {
                return;
            }
            self.publish(room_id, &[], Vec::new()).await;
            if live.read(RoomState::published) == before {
                // Nothing read (the database is away, or the room is gone): the next resync
                // tries again.
                return;
            }
        }
    }

    /// Every live room catches up with what other workers committed (a notification missed).
    pub async fn resync(&self) {
        let rooms = self.all();
        if rooms.is_empty() {
            return;
        }
        let ids: Vec<&str> = rooms.iter().map(|l| l.room_id()).collect();
        let newest = async {
            let mut db = confab_schema::connect(&self.pool).await?;
            confab_schema::cluster::last_seqs(&mut db, &ids).await
        }
        .await;
        match newest {
            Ok(newest) => {
                for (room_id, seq) in newest {
                    self.catch_up_to(&room_id, seq).await;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not look for events other workers committed")
            }
        }
    }

    /// Writes again whether this worker has devices in each live room (its rows may have been
    /// taken away while its lease had run out).
    pub async fn reassert(&self) {
        for live in self.all() {
            live.idle.forget().await;
            self.sync_idle_logged(&live).await;
        }
    }

    /// Replaces a room's membership with what its row says now (a replica that took its
    /// origin's member list outside the event log).
    pub async fn refresh_members(&self, room_id: &str) -> Result<(), ApiError> {
        let Some(live) = self.get(room_id) else {
            return Ok(());
        };
        let members = {
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::members(&mut db, room_id).await?
        };
        self.with(&live, |state, _| state.set_members(&members));
        Ok(())
    }

    /// Takes off every remote device its server has not confirmed for `lease` (on rooms of
    /// ours): an offline notice lost on the way, or a server that restarted or went away, must
    /// not leave a ghost that holds a place in the room and keeps it from expiring.
    pub async fn expire_remote_devices(&self, lease: std::time::Duration) -> usize {
        let mut expired = 0;
        for live in self.all() {
            let now = Instant::now();
            let stale = live.read(|s| s.stale_remote_devices(lease, now));
            if stale.is_empty() {
                continue;
            }
            for (server, device) in stale {
                tracing::info!(room = %live.room_id, user = %device.user_id, device = %device.device_id, %server, "remote device not confirmed in time; taken off");
                // The same path as its server saying it left.
                if self
                    .with(&live, |s, fx| {
                        s.remote_presence(&server, &device, false, now, fx)
                    })
                    .is_ok()
                {
                    expired += 1;
                }
            }
            self.sync_idle_logged(&live).await;
        }
        expired
    }
}
