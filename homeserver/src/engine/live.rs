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
use super::room::{CloseReason, Effects, GoLive, RoomLimits, RoomState, ToWorkers, edu};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::federation::sender::TransactionSender;
use crate::metrics::Metrics;
use crate::protocol::{ConnectedDevice, EventOut, Outgoing};
use crate::sessions::Identity;

/// One room's part of a committed batch: its events and the answers to its chat.
pub type Published = (String, Vec<Event>, Vec<(ChatReply, Committed)>);

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
                            self.cluster.is_worker(),
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
        self.apply(&live.room_id, fx);
        result
    }

    fn apply(&self, room_id: &str, fx: Effects) {
        let Effects {
            edus,
            to_workers,
            released,
            wakes,
        } = fx;
        drop(wakes);
        for news in to_workers {
            let to = match &news {
                ToWorkers::Signal { worker, .. } => Some(worker.as_str()),
                _ => None,
            };
            self.tell(room_id, &news, to);
        }
        if !released.is_empty() {
            let (pool, room_id) = (self.pool.clone(), room_id.to_owned());
            let worker_id = self.cluster.worker_id().to_owned();
            // A place is given back under the socket's id, so that running after a newer
            // admission of the same device deletes nothing of it.
            tokio::spawn(async move {
                let result = async {
                    let mut db = confab_schema::connect(&pool).await?;
                    for (user, device, conn_id) in &released {
                        confab_schema::cluster::release_device(
                            &mut db,
                            &room_id,
                            (user, device),
                            &worker_id,
                            *conn_id as i64,
                        )
                        .await?;
                    }
                    Ok::<_, confab_schema::DbError>(())
                }
                .await;
                if let Err(err) = result {
                    // Its place is held until this worker's lease runs out.
                    tracing::warn!(room_id, error = %err, "could not give back a device's place");
                }
            });
        }
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
        if !events.is_empty() {
            return self
                .publish_batch(vec![(room_id.to_owned(), events.to_vec(), answers)])
                .await;
        }
        let Some(live) = self.get(room_id) else {
            let mut wakes = Wakes::default();
            for (reply, answer) in answers {
                reply.answer(Ok(answer), &self.metrics, &mut wakes);
            }
            return;
        };
        // Up to the newest: after a load, the events the snapshot missed (a moment's worth),
        // or what other workers committed.
        let _fanout = live.fanout.lock().await;
        let published = live.read(RoomState::published);
        let missing = async {
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::events_after(&mut db, room_id, published, CATCH_UP_PAGE).await
        }
        .await;
        match missing {
            Ok(missing) => self.deliver(&live, &missing, answers),
            Err(err) => {
                tracing::error!(room_id, error = %err, "could not read a room's newest events");
                self.deliver(&live, &[], answers);
            }
        }
        drop(_fanout);
        self.sync_idle_logged(&live).await;
    }

    /// [`Self::publish`] for the rooms of one committed batch (room, events, answers), the gaps
    /// before all of them read in one query: a room whose events come from several workers has
    /// one before nearly every commit.
    pub async fn publish_batch(&self, batch: Vec<Published>) {
        // Events handed in were committed by this worker (the others read theirs from the
        // table): the other workers are told after the commit, never inside it.
        for (room_id, events, _) in &batch {
            if let Some(last) = events.last() {
                self.cluster.committed(room_id, last.seq);
            }
        }
        let gaps: Vec<(&str, i64, i64)> = batch
            .iter()
            .filter_map(|(room_id, events, _)| {
                let published = self.get(room_id)?.read(RoomState::published);
                let first = events.iter().map(|e| e.seq).find(|s| *s > published)?;
                (first - 1 > published).then_some((room_id.as_str(), published, first - 1))
            })
            .collect();
        // On failure subscribers miss the gap until they resume (logged loudly).
        let missing = self.read_ranges(&gaps).await;
        let by_room = by_room(&missing);
        for (room_id, events, answers) in batch {
            let Some(live) = self.get(&room_id) else {
                let mut wakes = Wakes::default();
                for (reply, answer) in answers {
                    reply.answer(Ok(answer), &self.metrics, &mut wakes);
                }
                continue;
            };
            let gap = by_room.get(room_id.as_str()).copied().unwrap_or_default();
            let _fanout = live.fanout.lock().await;
            // Contiguous: the gap read ends where the events begin, and the room skips what it
            // was given meanwhile.
            self.deliver(&live, gap, Vec::new());
            self.deliver(&live, &events, answers);
            drop(_fanout);
            self.sync_idle_logged(&live).await;
        }
    }

    /// Several rooms' committed events in one query (see
    /// [`confab_schema::cluster::events_between`]); none, logged, if the database is away.
    async fn read_ranges(&self, ranges: &[(&str, i64, i64)]) -> Vec<Event> {
        if ranges.is_empty() {
            return Vec::new();
        }
        let read = async {
            let mut db = confab_schema::connect(&self.pool).await?;
            confab_schema::cluster::events_between(&mut db, ranges).await
        }
        .await;
        read.unwrap_or_else(|err| {
            tracing::error!(error = %err, "could not read rooms' committed events");
            Vec::new()
        })
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

    /// Brings many rooms up to what other workers committed (`news`: rooms and numbers, a
    /// batch of notifications): one query reads the events of all of them, then each room's
    /// are fanned out under its fan-out lock, in order. What is left (a room further behind than
    /// a page) is read by [`Self::catch_up_to`].
    pub async fn catch_up_many(&self, news: &[(String, i64)]) {
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for (room_id, seq) in news {
            let at = newest.entry(room_id.as_str()).or_insert(*seq);
            *at = (*at).max(*seq);
        }
        let mut behind = Vec::new();
        for (room_id, seq) in newest {
            if let Some(live) = self.get(room_id) {
                let published = live.read(RoomState::published);
                if published < seq {
                    behind.push((live, published, seq));
                }
            }
        }
        if behind.is_empty() {
            return;
        }
        let ranges: Vec<(&str, i64, i64)> = behind
            .iter()
            .map(|(live, after, seq)| (live.room_id(), *after, (*seq).min(after + CATCH_UP_PAGE)))
            .collect();
        // On failure each room reads its own below (and the next resync tries again).
        let events = self.read_ranges(&ranges).await;
        let by_room = by_room(&events);
        for (live, _, seq) in &behind {
            if let Some(mine) = by_room.get(live.room_id()) {
                // Contiguous from the number read after; the room skips what it has already.
                let _fanout = live.fanout.lock().await;
                self.deliver(live, mine, Vec::new());
            }
            if live.read(RoomState::published) < *seq {
                self.catch_up_to(live.room_id(), *seq).await;
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

    /// Applies a room's live news from another worker (see [`ToWorkers`]). Nothing to do for a
    /// room not live here: it has nobody here to tell, and reads who is where when it loads.
    pub async fn from_peer(&self, worker: &str, room_id: &str, news: ToWorkers) {
        let Some(live) = self.get(room_id) else {
            return;
        };
        if news == ToWorkers::Members {
            if let Err(err) = self.reload_members(&live).await {
                tracing::warn!(room_id, error = %err.reason, "could not read a room's members again");
            }
            return;
        }
        let me = self.cluster.worker_id();
        self.with(&live, |s, fx| match news {
            ToWorkers::Presence { device, online } => s.peer_presence(worker, &device, online, fx),
            ToWorkers::Typing {
                user_id,
                device_id,
                typing,
            } => s.peer_typing(&user_id, &device_id, typing, fx),
            ToWorkers::Signal {
                worker: to_worker,
                from,
                to,
                payload,
            } => {
                if to_worker == me
                    && s.peer_signal((&from.0, &from.1), (&to.0, &to.1), &payload, fx)
                {
                    self.metrics.signals_relayed.inc();
                }
            }
            // Handled by the engine, which has the writer.
            ToWorkers::Members | ToWorkers::Chat { .. } | ToWorkers::ChatAnswer { .. } => {}
            ToWorkers::Relay {
                server,
                edu_type,
                content,
            } => {
                let now = Instant::now();
                if edu_type == edu::PRESENCE {
                    let online = content.get("online").and_then(serde_json::Value::as_bool);
                    let device: Option<ConnectedDevice> = serde_json::from_value(content).ok();
                    if let (Some(device), Some(online)) = (device, online) {
                        let _ = s.remote_presence(&server, &device, online, (now, true), fx);
                    }
                } else if edu_type == edu::TYPING {
                    let field = |k: &str| content.get(k).and_then(serde_json::Value::as_str);
                    let typing = content.get("typing").and_then(serde_json::Value::as_bool);
                    if let (Some(u), Some(d), Some(t)) =
                        (field("user_id"), field("device_id"), typing)
                    {
                        s.remote_typing(&server, (u, d), t, true, fx);
                    }
                }
            }
        });
    }

    /// Reads again who is connected to each live room through the other workers (news that
    /// was missed, a worker that died): one query for every live room.
    pub async fn refresh_peers(&self) {
        if !self.cluster.is_worker() {
            return;
        }
        let rooms = self.all();
        if rooms.is_empty() {
            return;
        }
        let ids: Vec<&str> = rooms.iter().map(|l| l.room_id()).collect();
        let devices = async {
            let mut db = confab_schema::connect(&self.pool).await?;
            confab_schema::cluster::room_devices(&mut db, &ids).await
        }
        .await;
        let devices = match devices {
            Ok(devices) => devices,
            Err(err) => {
                tracing::warn!(error = %err, "could not read who is connected through the other workers");
                return;
            }
        };
        // Grouped first: filtering the whole list for each room cost rooms × devices every tick
        // (with 50,000 sockets in 6,250 rooms over three workers, most of two cores).
        let mut by_room: HashMap<&str, Vec<(ConnectedDevice, String)>> = HashMap::new();
        for d in &devices {
            by_room
                .entry(d.room_id.as_str())
                .or_default()
                .push(peer_of(d));
        }
        let me = self.cluster.worker_id();
        for live in &rooms {
            let here = by_room.remove(live.room_id()).unwrap_or_default();
            self.with(live, |s, fx| s.set_peers(&here, me, fx));
        }
    }

    /// Gives `who`'s socket `conn_id` a place in the room under its row lock, counting every
    /// worker's devices (several workers only; the only process counts in the room's state).
    /// On success, what this worker knows of the others' devices is the database's list.
    pub async fn admit(
        &self,
        live: &LiveRoom,
        who: &crate::protocol::ConnectedDevice,
        conn_id: u64,
    ) -> Result<Vec<ConnectedDevice>, ApiError> {
        use confab_schema::cluster::{Admission, DeviceClaim, admit_device};
        let claim = DeviceClaim {
            room_id: &live.room_id,
            user_id: &who.user_id,
            device_id: &who.device_id,
            worker_id: self.cluster.worker_id(),
            conn_id: conn_id as i64,
            display_name: &who.display_name,
        };
        let admission = {
            let mut db = confab_schema::connect(&self.pool).await?;
            admit_device(&mut db, &claim, self.limits.max_participants).await?
        };
        match admission {
            Admission::Gone => Err(ApiError::room_not_found()),
            Admission::Full => Err(super::room::room_full(self.limits.max_participants)),
            Admission::Admitted(devices) => {
                let devices: Vec<(ConnectedDevice, String)> = devices.iter().map(peer_of).collect();
                let me = self.cluster.worker_id();
                self.with(live, |s, fx| s.set_peers(&devices, me, fx));
                Ok(devices.into_iter().map(|(d, _)| d).collect())
            }
        }
    }

    /// Tells worker `to` (or every other one) a room's news.
    pub fn tell(&self, room_id: &str, news: &ToWorkers, to: Option<&str>) {
        match serde_json::to_string(news) {
            Ok(body) => self.cluster.live(room_id, body, to),
            Err(err) => {
                tracing::error!(room_id, error = %err, "could not write news for the other workers")
            }
        }
    }

    /// Whether this process is one of several workers.
    pub fn is_shared(&self) -> bool {
        self.cluster.is_worker()
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        self.cluster.worker_id()
    }

    /// Gives back a place [`Self::admit`] gave that the room's state then refused.
    pub async fn release(&self, room_id: &str, (user, device): (&str, &str), conn_id: u64) {
        let result = async {
            let mut db = confab_schema::connect(&self.pool).await?;
            confab_schema::cluster::release_device(
                &mut db,
                room_id,
                (user, device),
                self.cluster.worker_id(),
                conn_id as i64,
            )
            .await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(room_id, error = %err, "could not give back a device's place");
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
    /// The other workers are told to do the same.
    pub async fn refresh_members(&self, room_id: &str) -> Result<(), ApiError> {
        if self.is_shared() {
            self.apply(
                room_id,
                Effects {
                    to_workers: vec![ToWorkers::Members],
                    ..Effects::default()
                },
            );
        }
        let Some(live) = self.get(room_id) else {
            return Ok(());
        };
        self.reload_members(&live).await
    }

    async fn reload_members(&self, live: &LiveRoom) -> Result<(), ApiError> {
        let members = {
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::members(&mut db, &live.room_id).await?
        };
        self.with(live, |state, _| state.set_members(&members));
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
                        s.remote_presence(&server, &device, false, (now, false), fx)
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

fn peer_of(d: &confab_schema::cluster::RoomDevice) -> (ConnectedDevice, String) {
    (
        ConnectedDevice {
            user_id: d.user_id.clone(),
            device_id: d.device_id.clone(),
            display_name: d.display_name.clone(),
        },
        d.worker_id.clone(),
    )
}

/// Events ordered by room, as slices by room.
fn by_room(events: &[Event]) -> HashMap<&str, &[Event]> {
    events
        .chunk_by(|a, b| a.room_id == b.room_id)
        .map(|run| (run[0].room_id.as_str(), run))
        .collect()
}
