//! The replica: another server's room as this server holds it for its own users (its row,
//! members and events, with the origin's sequence numbers), from which their sockets are served
//! exactly as for a local room, resume included. A replica applies the origin's events in
//! sequence order only: a repeat is ignored, a gap ends the run (the caller fills it from the
//! origin's events endpoint first). Applied events are fanned out by the room's owner in the
//! engine, which applies what they change (a member who left or was removed) to the live state.

use confab_federation::ids::{RoomId, ServerName};
use confab_schema::models::{Event, Member, Room, membership};
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, DbPool, queries};
use serde_json::Value;

use super::outbound;
use super::wire::JoinedRoom;
use crate::engine::{CloseReason, Engine, Identity};
use crate::error::{ApiError, ErrorCode};
use crate::federation::client::FederationClient;
use crate::time::now_ms;

/// Most pages of events read from a room's origin when joining it.
const MAX_CATCH_UP_PAGES: usize = 64;

/// What to do once a replica's changes committed: fan-out first, then closes.
pub enum Effect {
    Publish(String, Vec<Event>),
    Close(String, CloseReason),
}

/// The replicas of this server: joining rooms of other servers and applying their origins'
/// events; cheap to clone.
#[derive(Clone)]
pub struct Replicas {
    pool: DbPool,
    engine: Engine,
    client: FederationClient,
    server_name: ServerName,
    federation_enabled: bool,
}

impl Replicas {
    pub fn new(
        pool: DbPool,
        engine: Engine,
        client: FederationClient,
        server_name: ServerName,
        federation_enabled: bool,
    ) -> Self {
        Self {
            pool,
            engine,
            client,
            server_name,
            federation_enabled,
        }
    }

    pub fn client(&self) -> &FederationClient {
        &self.client
    }

    /// Joins `who` to a room of another homeserver: asks its origin (which applies every rule),
    /// then stores or refreshes the replica and catches it up. Returns the replica's room row.
    pub async fn join(
        &self,
        room_id: &RoomId,
        who: &Identity,
        invite_token: Option<&str>,
    ) -> Result<Room, ApiError> {
        if !self.federation_enabled {
            return Err(ApiError::new(
                ErrorCode::RoomNotFound,
                "that room lives on another homeserver, and federation is disabled here",
            ));
        }
        let since = {
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::room(&mut db, room_id.as_str())
                .await?
                .map_or(0, |r| r.last_seq)
        };
        let joined = outbound::join(&self.client, room_id, who, invite_token, since).await?;
        self.store(room_id.server_name(), joined).await?;
        self.catch_up(room_id).await?;
        let mut db = confab_schema::connect(&self.pool).await?;
        queries::room(&mut db, room_id.as_str())
            .await?
            .ok_or_else(ApiError::room_not_found)
    }

    /// Runs what committed changes ask for.
    pub async fn run_effects(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Publish(room_id, events) => self.engine.publish(&room_id, &events).await,
                Effect::Close(room_id, reason) => self.engine.close(&room_id, reason),
            }
        }
    }

    /// Writes the origin's state of a room into the replica, then fans out what was new.
    async fn store(&self, origin: &ServerName, room_state: JoinedRoom) -> Result<(), ApiError> {
        let now = now_ms();
        let room_id = room_state.room_id.clone();
        let row = Room {
            room_id: room_id.clone(),
            origin: origin.to_string(),
            host_user_id: room_state.host_user_id.clone(),
            locked: room_state.locked,
            created_ts: room_state.created_ts,
            last_seq: 0,
            expires_ts: Some(self.engine.countdown().deadline(now)),
            guests_may_share: room_state.guests_may_share,
            lobby: room_state.lobby,
        };
        let events: Vec<Event> = room_state
            .events
            .into_iter()
            .map(|e| e.into_event(&room_id))
            .collect();
        let mut db = confab_schema::connect(&self.pool).await?;
        let effects = db
            .transaction(async |db| {
                // A replica that already has newer events than this answer (PDUs overtook it) has
                // newer state too: only the events are taken from the answer then.
                let newer_here = queries::room_for_update(db, &room_id)
                    .await?
                    .is_some_and(|r| r.last_seq > room_state.latest_seq);
                if newer_here {
                    let (_, effects) =
                        apply_events(db, self.server_name.as_str(), &room_id, events).await?;
                    return Ok::<_, DbError>(effects);
                }
                queries::upsert_replica_room(db, &row).await?;
                for m in &room_state.members {
                    queries::put_replica_member(
                        db,
                        &Member {
                            room_id: room_id.clone(),
                            user_id: m.user_id.clone(),
                            display_name: m.display_name.clone(),
                            is_host: m.is_host,
                            membership: m.membership.clone(),
                            joined_ts: m.joined_ts,
                            updated_ts: m.updated_ts,
                        },
                    )
                    .await?;
                }
                let (_, effects) =
                    apply_events(db, self.server_name.as_str(), &room_id, events).await?;
                Ok(effects)
            })
            .await?;
        drop(db);
        self.run_effects(effects).await;
        // The member list was written outside the event log.
        self.engine.refresh_members(&room_id).await
    }

    /// Reads the events a replica is missing from the room's origin, page by page, until it has
    /// them all, or [`MAX_CATCH_UP_PAGES`] pages: an origin that keeps answering with more (a
    /// hostile one) cannot keep a join going, and what is left comes with its next events, whose
    /// gap is filled then.
    async fn catch_up(&self, room_id: &RoomId) -> Result<(), ApiError> {
        for _ in 0..MAX_CATCH_UP_PAGES {
            let since = {
                let mut db = confab_schema::connect(&self.pool).await?;
                match queries::room(&mut db, room_id.as_str()).await? {
                    Some(room) => room.last_seq,
                    None => return Ok(()),
                }
            };
            let page = outbound::fetch_events(&self.client, room_id, since).await?;
            if page.events.is_empty() {
                return Ok(());
            }
            let events = page
                .events
                .into_iter()
                .map(|e| e.into_event(room_id.as_str()))
                .collect();
            let mut db = confab_schema::connect(&self.pool).await?;
            let (applied, effects) = db
                .transaction(async |db| {
                    apply_events(db, self.server_name.as_str(), room_id.as_str(), events).await
                })
                .await?;
            drop(db);
            self.run_effects(effects).await;
            if applied == 0 || page.latest_seq <= since + applied as i64 {
                // Caught up with what the origin says it has, or it sent nothing that fits after
                // `since`: stop rather than ask forever.
                return Ok(());
            }
        }
        tracing::warn!(%room_id, "catching up stopped after {MAX_CATCH_UP_PAGES} pages");
        Ok(())
    }
}

/// Applies events of the origin to a replica, in the caller's transaction, in order: a repeat
/// is skipped, a gap ends the run (the caller fills it). Returns how many were new and what to
/// do after the commit.
async fn apply_events(
    db: &mut AsyncPgConnection,
    ours: &str,
    room_id: &str,
    events: Vec<Event>,
) -> Result<(usize, Vec<Effect>), DbError> {
    apply_room_events(db, ours, vec![(room_id.to_owned(), events)]).await
}

/// [`apply_events`] for several rooms at once, with a fixed number of statements whatever the
/// number of rooms and events (state changes aside): one to lock the rooms, one to insert the
/// events, one to move the rooms' sequence numbers.
pub async fn apply_room_events(
    db: &mut AsyncPgConnection,
    ours: &str,
    batches: Vec<(String, Vec<Event>)>,
) -> Result<(usize, Vec<Effect>), DbError> {
    let mut ids: Vec<&str> = batches.iter().map(|(r, _)| r.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rooms = queries::rooms_for_update(db, &ids).await?;
    let mut total = 0;
    let mut all_applied = Vec::new();
    let mut newest = Vec::new();
    let mut effects = Vec::new();
    for (room_id, events) in batches {
        let Some(room) = rooms.iter().find(|r| r.room_id == room_id) else {
            continue;
        };
        let (applied, someone_went) = apply_to_room(db, room, ours, events).await?;
        let Some(last) = applied.last().map(|e| e.seq) else {
            continue;
        };
        total += applied.len();
        newest.push((room_id.clone(), last));
        all_applied.extend(applied.iter().cloned());
        // The owner applies what the events change (a member who left or was removed) as it
        // fans them out, so a kicked user's sockets see the event first.
        effects.push(Effect::Publish(room_id.clone(), applied));
        if someone_went {
            // With none of our users left in it, this server takes no further part (the origin
            // stops sending), so the replica is purged rather than left to go stale.
            let members = queries::members(db, &room_id).await?;
            let ours_left = members.iter().any(|m| {
                m.membership == membership::JOINED
                    && m.user_id.split_once(':').is_some_and(|(_, s)| s == ours)
            });
            if !ours_left {
                queries::delete_room(db, &room_id).await?;
                newest.retain(|(r, _)| r != &room_id);
                all_applied.retain(|e| e.room_id != room_id);
                effects.push(Effect::Close(room_id.clone(), CloseReason::Closed));
            }
        }
    }
    queries::insert_replica_events(db, &all_applied, &newest).await?;
    Ok((total, effects))
}

/// A `role` event of the origin, applied to a replica: who is the host, who a co-host.
async fn apply_role(
    db: &mut AsyncPgConnection,
    room_id: &str,
    content: &Value,
) -> Result<(), DbError> {
    let user = content.get("user_id").and_then(Value::as_str);
    let role = content.get("role").and_then(Value::as_str);
    let (Some(user), Some(role)) = (user, role) else {
        return Ok(());
    };
    match role {
        crate::protocol::role::HOST => {
            if let Some(previous) = content.get("previous").and_then(Value::as_str) {
                queries::set_member_is_host(db, room_id, previous, false).await?;
            }
            queries::set_room_host(db, room_id, user).await?;
            queries::set_member_is_host(db, room_id, user, true).await?;
        }
        crate::protocol::role::COHOST => {
            queries::set_member_is_host(db, room_id, user, true).await?;
        }
        crate::protocol::role::GUEST => {
            queries::set_member_is_host(db, room_id, user, false).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The events of one locked replica room that follow on from its newest, with their state
/// changes (membership, lock) written; and whether one of our users left or was removed.
async fn apply_to_room(
    db: &mut AsyncPgConnection,
    room: &Room,
    ours: &str,
    events: Vec<Event>,
) -> Result<(Vec<Event>, bool), DbError> {
    let room_id = room.room_id.as_str();
    let mut last = room.last_seq;
    let mut applied = Vec::new();
    let mut someone_went = false;
    for event in events {
        if event.seq <= last {
            continue;
        }
        if event.seq > last + 1 {
            break;
        }
        last = event.seq;
        match event.content.get("type").and_then(Value::as_str) {
            Some("member") => {
                let user = event.content.get("user_id").and_then(Value::as_str);
                let state_ = event.content.get("membership").and_then(Value::as_str);
                let name = event
                    .content
                    .get("display_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let (Some(user), Some(m)) = (user, state_)
                    && [membership::JOINED, membership::LEFT, membership::KICKED].contains(&m)
                {
                    queries::upsert_member(
                        db,
                        &Member {
                            room_id: room_id.to_owned(),
                            user_id: user.to_owned(),
                            display_name: name.to_owned(),
                            is_host: false,
                            membership: m.to_owned(),
                            joined_ts: event.origin_ts,
                            updated_ts: event.origin_ts,
                        },
                    )
                    .await?;
                    let local = user.split_once(':').is_some_and(|(_, s)| s == ours);
                    someone_went |= local && m != membership::JOINED;
                    if m != membership::JOINED {
                        // Leaving for good ends a co-host's role, as on the origin.
                        queries::set_member_is_host(db, room_id, user, false).await?;
                    }
                }
            }
            Some("lock") => {
                let locked = event
                    .content
                    .get("locked")
                    .and_then(Value::as_bool)
                    .unwrap_or(room.locked);
                queries::set_room_locked(db, room_id, locked).await?;
            }
            Some("settings") => {
                if let Some(share) = event
                    .content
                    .get("guests_may_share")
                    .and_then(Value::as_bool)
                {
                    queries::set_room_guests_may_share(db, room_id, share).await?;
                }
                if let Some(lobby) = event.content.get("lobby").and_then(Value::as_bool) {
                    queries::set_room_lobby(db, room_id, lobby).await?;
                }
            }
            Some("role") => apply_role(db, room_id, &event.content).await?,
            _ => {}
        }
        applied.push(event);
    }
    Ok((applied, someone_went))
}
