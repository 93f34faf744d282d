//! The rules of rooms over their stored state: creation, joining (invites, lock, lobby, kick,
//! capacity), leaving, invites, lock, settings, roles and the host's succession, knocks, kick,
//! close, and deleting expired rooms. Handlers call
//! these; these read the schema and change rooms through the engine: every event goes through
//! its writer ([`EventWriter::change`]), whose fan-out lets each room's owner apply what changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use confab_federation::ids::{RoomId, ServerName};
use confab_schema::models::{Invite, Knock, Member, NewEvent, Room, knock, membership};
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, DbPool, queries};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::engine::writer::EventWriter;
use crate::engine::{CloseReason, Engine, Identity};
use crate::error::{ApiError, ErrorCode};
use crate::federation::rooms::outbound;
use crate::federation::rooms::queue::{deleted_pdu, queue_pdus, wake};
use crate::federation::rooms::replica::Replicas;
use crate::federation::rooms::wire::RoomRequest;
use crate::federation::sender::TransactionSender;
use crate::metrics::Metrics;
use crate::protocol::{self, KnockOut, MemberOut, RoomSummary, role};
use crate::sessions::{hash_token, new_token};
use crate::time::now_ms;

/// The rooms service; cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    pool: DbPool,
    settings: Arc<Settings>,
    engine: Engine,
    replicas: Replicas,
    sender: TransactionSender,
    metrics: Metrics,
}

/// Options of a new invite.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteOptions {
    /// Seconds until the invite stops working; none for as long as the room lives.
    pub expires_in_secs: Option<u64>,
    /// How many joins it admits; none for unlimited.
    pub max_uses: Option<u32>,
}

/// An invite as its creator sees it (with the token) or as the list shows it (without).
#[derive(Debug, Serialize, Deserialize)]
pub struct InviteOut {
    pub invite_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub room_id: String,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub revoked: bool,
    /// Who made it: the host, or a member while guests may share.
    #[serde(default)]
    pub created_by: String,
}

/// A change of the room's settings; a field left out keeps its value.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// Whether any joined member may make invite links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guests_may_share: Option<bool>,
    /// Whether a newcomer with a valid invite who finds the room locked knocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<bool>,
}

/// A member's new role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub user_id: String,
    /// `cohost` or `guest`.
    pub role: String,
}

/// The answer to a role change.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoleOut {
    pub room_id: String,
    pub user_id: String,
    pub role: String,
}

/// A host's answer to a knock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnockAnswer {
    pub user_id: String,
    /// `true` to let them in, `false` to turn them away.
    pub admit: bool,
}

/// The answer to a knock's answer: what the knock is now.
#[derive(Debug, Serialize, Deserialize)]
pub struct KnockAnswerOut {
    pub room_id: String,
    pub user_id: String,
    pub state: String,
}

/// How long a knock lives after its last change: waiting for an answer, or admitted and not yet
/// used. A knocker's client asks again every few seconds; one who gave up is forgotten after this.
pub const KNOCK_TTL_MS: i64 = 5 * 60 * 1000;
/// Knocks waiting at once in one room's lobby, at most.
pub const MAX_KNOCKS: usize = 20;

/// When the host of each occupied room of ours was first seen away, as the sweeper keeps it
/// between its rounds (see [`Rooms::sweep_absent_hosts`]).
#[derive(Debug, Default)]
pub struct AbsentHosts {
    since: HashMap<String, (String, i64)>,
}

/// Who may do something: the host alone (naming co-hosts, closing the room), or any host (the
/// host and the co-hosts: invites, lock, settings, kick, knocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authority {
    Host,
    Hosts,
}

/// A member's role in a room.
fn role_of(room: &Room, member: &Member) -> &'static str {
    if member.user_id == room.host_user_id {
        role::HOST
    } else if member.is_host && member.membership == membership::JOINED {
        role::COHOST
    } else {
        role::GUEST
    }
}

/// Whether `user_id` has the authority of a host (the host, or a joined co-host).
fn has_hosts_authority(room: &Room, member: Option<&Member>, user_id: &str) -> bool {
    room.host_user_id == user_id
        || member.is_some_and(|m| m.is_host && m.membership == membership::JOINED)
}

/// Live invite links (neither revoked nor expired) one member who is not a host may have in a
/// room at once: enough to share the room again and again, too few to fill the database.
pub const MAX_GUEST_INVITES: i64 = 10;

/// The answer to a kick: who was kicked, and which invites the kick revoked. A kick revokes every
/// invite the member joined with (so a new guest session holding the same link is refused, and
/// everyone else holding it needs a new one). A member who joined without one (the host, who created
/// the room) or whose invites the host had revoked already revokes nothing, and `invite_revoked`
/// says so. A member who left and came back joined with the invite of their first join.
#[derive(Debug, Serialize, Deserialize)]
pub struct KickOut {
    pub room_id: String,
    pub user_id: String,
    pub kicked: bool,
    /// Whether the kick revoked at least one invite.
    pub invite_revoked: bool,
    /// The invites this kick revoked, oldest first (one revoked earlier is not listed again).
    pub revoked_invites: Vec<String>,
}

impl InviteOut {
    fn from_row(invite: &Invite, token: Option<String>) -> Self {
        Self {
            invite_id: invite.invite_id.clone(),
            token,
            room_id: invite.room_id.clone(),
            created_ts: invite.created_ts,
            expires_ts: invite.expires_ts,
            max_uses: invite.max_uses,
            uses: invite.uses,
            revoked: invite.revoked_ts.is_some(),
            created_by: invite.created_by.clone(),
        }
    }
}

pub fn parse_room_id(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::new(ErrorCode::BadRoomId, format!("room id: {e}")))
}

async fn require_room(db: &mut AsyncPgConnection, room_id: &str) -> Result<Room, ApiError> {
    queries::room(db, room_id)
        .await?
        .ok_or_else(ApiError::room_not_found)
}

async fn require_authority(
    db: &mut AsyncPgConnection,
    room_id: &str,
    who: &Identity,
    authority: Authority,
) -> Result<Room, ApiError> {
    let room = require_room(db, room_id).await?;
    let allowed = match authority {
        Authority::Host => room.host_user_id == who.user_id,
        Authority::Hosts => {
            let member = queries::member(db, room_id, &who.user_id).await?;
            has_hosts_authority(&room, member.as_ref(), &who.user_id)
        }
    };
    if !allowed {
        return Err(ApiError::new(
            ErrorCode::NotHost,
            match authority {
                Authority::Host => "only the room's host may do this",
                Authority::Hosts => "only the room's host or a co-host may do this",
            },
        ));
    }
    Ok(room)
}

async fn require_member(
    db: &mut AsyncPgConnection,
    room_id: &str,
    who: &Identity,
) -> Result<Room, ApiError> {
    let room = require_room(db, room_id).await?;
    let joined = queries::member(db, room_id, &who.user_id)
        .await?
        .is_some_and(|m| m.membership == membership::JOINED);
    if !joined {
        return Err(ApiError::new(
            ErrorCode::NotMember,
            "you are not a member of this room",
        ));
    }
    Ok(room)
}

fn member_event(who: &Identity, state: &str) -> NewEvent {
    NewEvent {
        sender: who.user_id.clone(),
        device_id: who.device_id.clone(),
        origin_ts: now_ms(),
        content: protocol::member_content(&who.user_id, &who.display_name, state),
    }
}

impl Rooms {
    pub fn new(
        pool: DbPool,
        settings: Arc<Settings>,
        engine: Engine,
        replicas: Replicas,
        sender: TransactionSender,
        metrics: Metrics,
    ) -> Self {
        Self {
            pool,
            settings,
            engine,
            replicas,
            sender,
            metrics,
        }
    }

    fn writer(&self) -> &EventWriter {
        self.engine.writer()
    }

    /// Describes a room to `who`.
    pub async fn room_summary(&self, room: &Room, who: &Identity) -> Result<RoomSummary, ApiError> {
        let mut db = confab_schema::connect(&self.pool).await?;
        let members = queries::members(&mut db, &room.room_id).await?;
        let me = members.iter().find(|m| m.user_id == who.user_id);
        let is_host = has_hosts_authority(room, me, &who.user_id);
        let my_role = match me {
            Some(m) => role_of(room, m),
            None if room.host_user_id == who.user_id => role::HOST,
            None => role::GUEST,
        };
        // Knocks live on the room's origin; a replica's hosts are told of them by the `knock`
        // events, whose latest state per knocker the replica's log holds.
        let since = now_ms().saturating_sub(KNOCK_TTL_MS);
        let knocks = if !is_host {
            Vec::new()
        } else if room.origin == self.settings.server.name.as_str() {
            queries::knocks_of_room(&mut db, &room.room_id, knock::PENDING, since)
                .await?
                .into_iter()
                .map(|k| knock_out(&k))
                .collect()
        } else {
            let events =
                queries::events_of_type_since(&mut db, &room.room_id, "knock", since, 1000).await?;
            pending_knocks_of(&events, &members, now_ms())
        };
        Ok(RoomSummary {
            room_id: room.room_id.clone(),
            origin: room.origin.clone(),
            host: room.host_user_id.clone(),
            locked: room.locked,
            created_ts: room.created_ts,
            expires_ts: room.expires_ts,
            max_participants: self.settings.rooms.max_participants,
            connected: self.engine.connected_devices(&room.room_id),
            members: members
                .into_iter()
                .map(|m| MemberOut {
                    role: role_of(room, &m).to_owned(),
                    user_id: m.user_id,
                    display_name: m.display_name,
                    membership: m.membership,
                })
                .collect(),
            latest_seq: room.last_seq,
            is_host,
            guests_may_share: room.guests_may_share,
            can_share: is_host || room.guests_may_share,
            lobby: room.lobby,
            role: my_role.to_owned(),
            knocks,
        })
    }

    /// Creates a room hosted by `who`. Nobody is connected yet, so its idle countdown starts now.
    pub async fn create_room(&self, who: &Identity) -> Result<RoomSummary, ApiError> {
        let mut db = confab_schema::connect(&self.pool).await?;
        let hosted = queries::count_hosted_rooms(&mut db, &who.user_id).await?;
        let max = self.settings.limits.max_rooms_per_user;
        if hosted >= max as i64 {
            return Err(ApiError::new(
                ErrorCode::TooManyRooms,
                format!("you already host {hosted} live rooms, the most allowed"),
            ));
        }
        let now = now_ms();
        let room = Room {
            room_id: RoomId::generate(&self.settings.server.name).to_string(),
            origin: self.settings.server.name.to_string(),
            host_user_id: who.user_id.clone(),
            locked: false,
            created_ts: now,
            last_seq: 0,
            expires_ts: Some(self.engine.countdown().deadline(now)),
            guests_may_share: false,
            lobby: false,
        };
        let host = Member {
            room_id: room.room_id.clone(),
            user_id: who.user_id.clone(),
            display_name: who.display_name.clone(),
            is_host: true,
            membership: membership::JOINED.to_owned(),
            joined_ts: now,
            updated_ts: now,
        };
        drop(db);
        let event = member_event(who, membership::JOINED);
        let room_key = room.room_id.clone();
        let (room, _) = self
            .writer()
            .change(&room_key, move |db, appender| {
                Box::pin(async move {
                    queries::insert_room(db, &room).await?;
                    queries::upsert_member(db, &host).await?;
                    appender.append(db, &[event]).await?;
                    queries::room(db, &room.room_id)
                        .await?
                        .ok_or_else(ApiError::room_not_found)
                })
            })
            .await?;
        self.room_summary(&room, who).await
    }

    /// The summary of a room `who` is a member of.
    pub async fn get_room(&self, room_id: &str, who: &Identity) -> Result<RoomSummary, ApiError> {
        let room_id = parse_room_id(room_id)?;
        let room = {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_member(&mut db, room_id.as_str(), who).await?
        };
        self.room_summary(&room, who).await
    }

    /// The rooms `who` can rejoin.
    pub async fn my_rooms(&self, who: &Identity) -> Result<Vec<RoomSummary>, ApiError> {
        let rooms = {
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::rooms_of_user(&mut db, &who.user_id).await?
        };
        let mut out = Vec::with_capacity(rooms.len());
        for room in &rooms {
            out.push(self.room_summary(room, who).await?);
        }
        Ok(out)
    }

    /// Joins `who` to a room: as a returning member, or with an invite token. The decision and
    /// its writes happen in one transaction with the room row locked.
    pub async fn join_room(
        &self,
        room_id: &str,
        who: &Identity,
        invite_token: Option<&str>,
    ) -> Result<RoomSummary, ApiError> {
        let room_id = parse_room_id(room_id)?;
        let room = if room_id.server_name() == &self.settings.server.name {
            self.join_core(&room_id, who, invite_token, None).await?
        } else {
            self.replicas.join(&room_id, who, invite_token).await?
        };
        self.room_summary(&room, who).await
    }

    /// Applies the rules of joining a room of ours to `who`, a user of this server or, through
    /// federation, of `via`, which then takes part in the room. The decision and its writes
    /// happen in one transaction with the room row locked. Returns the room.
    pub async fn join_core(
        &self,
        room_id: &RoomId,
        who: &Identity,
        invite_token: Option<&str>,
        via: Option<&ServerName>,
    ) -> Result<Room, ApiError> {
        let connected_elsewhere = self.engine.is_connected(room_id.as_str(), &who.user_id);
        let connected = self.engine.connected_users(room_id.as_str());
        let max = self.settings.rooms.max_participants;
        let now = now_ms();
        let (who, room_key) = (who.clone(), room_id.to_string());
        let invite_token = invite_token.map(str::to_owned);
        let via = via.cloned();
        let event = member_event(&who, membership::JOINED);
        self.writer()
            .change(room_id.as_str(), move |db, appender| {
                Box::pin(async move {
                    let room_id = room_key.as_str();
                    let room = queries::room_for_update(db, room_id)
                        .await?
                        .ok_or_else(ApiError::room_not_found)?;
                    let existing = queries::member(db, room_id, &who.user_id).await?;
                    let prior = existing.as_ref().map(|m| m.membership.as_str());
                    if prior == Some(membership::JOINED) {
                        return Ok(JoinOutcome::Joined(room));
                    }
                    let returning = prior == Some(membership::LEFT);
                    // A returning member presents no invite: the one they first came in with
                    // stays recorded, and a kick revokes that.
                    let mut used_invite = None;
                    if !returning {
                        if room.locked && !room.lobby {
                            return Err(ApiError::new(
                                ErrorCode::RoomLocked,
                                "the room is locked: only people who were in it before may join",
                            ));
                        }
                        let token = invite_token.as_deref().ok_or_else(|| match prior {
                            Some(_) => kicked_error(),
                            None => ApiError::new(
                                ErrorCode::InviteRequired,
                                "an invite is needed to join this room",
                            ),
                        })?;
                        let invite =
                            queries::invite_by_token_hash_for_update(db, &hash_token(token))
                                .await?
                                .filter(|i| i.room_id == room_id)
                                .ok_or_else(|| {
                                    ApiError::new(
                                        ErrorCode::InviteInvalid,
                                        "this invite is not valid for this room",
                                    )
                                })?;
                        // A kicked member needs an invite made after the kick. Checked before the
                        // invite's own state: the link they were kicked with is revoked too, and
                        // `kicked` is the more useful answer to them.
                        let kicked_at = existing
                            .as_ref()
                            .filter(|_| prior == Some(membership::KICKED))
                            .map(|m| m.updated_ts);
                        if kicked_at.is_some_and(|t| invite.created_ts <= t) {
                            return Err(kicked_error());
                        }
                        check_invite(&invite, now)?;
                        if room.locked {
                            // The lobby: a valid invite knocks, and comes in once admitted.
                            let knocked = queries::knock_for_update(db, room_id, &who.user_id)
                                .await?
                                .filter(|k| k.updated_ts.saturating_add(KNOCK_TTL_MS) > now);
                            match knocked.as_ref().map(|k| k.state.as_str()) {
                                Some(knock::ADMITTED) => {
                                    queries::delete_knock(db, room_id, &who.user_id).await?;
                                }
                                Some(knock::REFUSED) => return Err(knock_refused_error()),
                                Some(_) => return Err(knocking_error()),
                                None => {
                                    let since = now.saturating_sub(KNOCK_TTL_MS);
                                    let waiting =
                                        queries::knocks_of_room(db, room_id, knock::PENDING, since)
                                            .await?;
                                    if waiting.len() >= MAX_KNOCKS {
                                        return Err(ApiError::new(
                                            ErrorCode::TooManyKnocks,
                                            format!(
                                                "{MAX_KNOCKS} people are already waiting in this \
                                                 room's lobby; try again later"
                                            ),
                                        ));
                                    }
                                    queries::put_knock(
                                        db,
                                        &Knock {
                                            room_id: room_id.to_owned(),
                                            user_id: who.user_id.clone(),
                                            display_name: who.display_name.clone(),
                                            invite_id: invite.invite_id.clone(),
                                            state: knock::PENDING.to_owned(),
                                            created_ts: now,
                                            updated_ts: now,
                                        },
                                    )
                                    .await?;
                                    let event = NewEvent {
                                        sender: who.user_id.clone(),
                                        device_id: who.device_id.clone(),
                                        origin_ts: now,
                                        content: protocol::knock_content(
                                            &who.user_id,
                                            &who.display_name,
                                            knock::PENDING,
                                            now.saturating_add(KNOCK_TTL_MS),
                                        ),
                                    };
                                    appender.append(db, &[event]).await?;
                                    return Ok(JoinOutcome::Knocked);
                                }
                            }
                        }
                        queries::use_invite(db, &invite.invite_id).await?;
                        used_invite = Some(invite.invite_id);
                    }
                    if !connected_elsewhere && connected >= max {
                        return Err(ApiError::new(
                            ErrorCode::RoomFull,
                            format!("the room already has its maximum of {max} participants"),
                        ));
                    }
                    queries::upsert_member(
                        db,
                        &Member {
                            room_id: room.room_id.clone(),
                            user_id: who.user_id.clone(),
                            display_name: who.display_name.clone(),
                            is_host: false,
                            membership: membership::JOINED.to_owned(),
                            joined_ts: now,
                            updated_ts: now,
                        },
                    )
                    .await?;
                    if let Some(invite_id) = &used_invite {
                        queries::record_member_invite(db, room_id, &who.user_id, invite_id, now)
                            .await?;
                    }
                    if let Some(server) = &via {
                        queries::add_room_server(db, &room.room_id, server.as_str()).await?;
                    }
                    let appended = appender.append(db, &[event]).await?;
                    let last_seq = appended.events.last().map_or(room.last_seq, |e| e.seq);
                    Ok(JoinOutcome::Joined(Room { last_seq, ..room }))
                })
            })
            .await
            .and_then(|(outcome, _)| match outcome {
                JoinOutcome::Joined(room) => Ok(room),
                // The knock is committed (and the hosts told) before the answer says so.
                JoinOutcome::Knocked => Err(knocking_error()),
            })
    }

    /// Leaves a room; the member may come back without an invite, even if it is locked.
    pub async fn leave_room(&self, room_id: &str, who: &Identity) -> Result<(), ApiError> {
        let room_id = parse_room_id(room_id)?;
        if room_id.server_name() == &self.settings.server.name {
            return self
                .change_membership(room_id.as_str(), who, &who.user_id, membership::LEFT)
                .await
                .map(drop);
        }
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_member(&mut db, room_id.as_str(), who).await?;
        }
        outbound::leave(self.replicas.client(), &room_id, who).await?;
        // The origin's membership event follows; the replica reflects the leave at once.
        let mut db = confab_schema::connect(&self.pool).await?;
        queries::set_membership(
            &mut db,
            room_id.as_str(),
            &who.user_id,
            membership::LEFT,
            now_ms(),
        )
        .await?;
        drop(db);
        self.engine
            .member_gone(room_id.as_str(), &who.user_id)
            .await;
        Ok(())
    }

    /// Kicks a member (host only), joined or left: their live sessions in the room end at once,
    /// the invites they joined with are revoked, and coming back takes an invite created after
    /// the kick.
    pub async fn kick(
        &self,
        room_id: &str,
        who: &Identity,
        target: &str,
    ) -> Result<KickOut, ApiError> {
        let room_id = parse_room_id(room_id)?;
        confab_federation::ids::UserId::parse(target)
            .map_err(|e| ApiError::new(ErrorCode::BadUserId, format!("user id: {e}")))?;
        if !self.is_ours(&room_id) {
            let request = RoomRequest::Kick {
                user_id: target.to_owned(),
            };
            return self.forward(&room_id, who, &request).await;
        }
        if target == who.user_id {
            return Err(ApiError::bad_request(
                "you cannot kick yourself; leave the room instead",
            ));
        }
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            let room = require_authority(&mut db, room_id.as_str(), who, Authority::Hosts).await?;
            if target == room.host_user_id {
                return Err(ApiError::new(
                    ErrorCode::NotHost,
                    "nobody in the room may remove its host",
                ));
            }
            let target_member = queries::member(&mut db, room_id.as_str(), target).await?;
            let target_is_cohost = target_member.is_some_and(|m| m.is_host);
            if target_is_cohost && room.host_user_id != who.user_id {
                return Err(ApiError::new(
                    ErrorCode::NotHost,
                    "only the room's host may remove a co-host",
                ));
            }
        }
        self.kick_as(room_id.as_str(), who, target).await
    }

    /// Kicks `target` on the authority of `actor` (the host, or an operator through the admin
    /// API), without checking that authority: the caller did. The room's owner takes the kicked
    /// user's sockets out as it fans the kick event out (a member who had left has none).
    pub async fn kick_as(
        &self,
        room_id: &str,
        actor: &Identity,
        target: &str,
    ) -> Result<KickOut, ApiError> {
        self.require_origin(room_id)?;
        let revoked_invites = self
            .change_membership(room_id, actor, target, membership::KICKED)
            .await?;
        Ok(KickOut {
            room_id: room_id.to_owned(),
            user_id: target.to_owned(),
            kicked: true,
            invite_revoked: !revoked_invites.is_empty(),
            revoked_invites,
        })
    }

    /// Records a membership change of `target` and its event, as one transaction; the event
    /// reaches every server in the room, after which a server left with no member leaves the
    /// room's servers. Leaving takes a joined member; a kick takes a joined member or one who
    /// left (who could otherwise come back to a locked room forever), and revokes the invites
    /// they joined with, in the same transaction: returns those it revoked.
    pub async fn change_membership(
        &self,
        room_id: &str,
        actor: &Identity,
        target: &str,
        state: &str,
    ) -> Result<Vec<String>, ApiError> {
        let now = now_ms();
        let (room_key, actor, target, state) = (
            room_id.to_owned(),
            actor.clone(),
            target.to_owned(),
            state.to_owned(),
        );
        let connected = self.engine.connected_user_ids(room_id);
        self.writer()
            .change(room_id, move |db, appender| {
                Box::pin(async move {
                    let room_id = room_key.as_str();
                    let room = queries::room_for_update(db, room_id)
                        .await?
                        .ok_or_else(ApiError::room_not_found)?;
                    let kicking = state == membership::KICKED;
                    let member = queries::member(db, room_id, &target).await?;
                    let Some(member) = member.filter(|m| {
                        m.membership == membership::JOINED
                            || (kicking && m.membership == membership::LEFT)
                    }) else {
                        return Err(ApiError::new(
                            ErrorCode::NotMember,
                            "that user is not a member of this room",
                        ));
                    };
                    queries::set_membership(db, room_id, &target, &state, now).await?;
                    let revoked = if kicking {
                        // The links they joined with, and the links they made while guests
                        // could share: either would bring them back with a new guest session.
                        let mut revoked =
                            queries::revoke_invites_of_member(db, room_id, &target, now).await?;
                        revoked.extend(
                            queries::revoke_invites_made_by(db, room_id, &target, now).await?,
                        );
                        revoked
                    } else {
                        Vec::new()
                    };
                    // Leaving for good ends a co-host's role; the host's passes on.
                    if member.is_host {
                        queries::set_member_is_host(db, room_id, &target, false).await?;
                    }
                    let mut events = vec![NewEvent {
                        sender: actor.user_id.clone(),
                        device_id: actor.device_id.clone(),
                        origin_ts: now,
                        content: protocol::member_content(&target, &member.display_name, &state),
                    }];
                    if target == room.host_user_id
                        && let Some(next) = succeed(db, &room, &connected, now).await?
                    {
                        events.push(next);
                    }
                    let appended = appender.append(db, &events).await?;
                    let target_server = target.split_once(':').map_or("", |(_, s)| s);
                    if appended.servers.iter().any(|s| s == target_server) {
                        let members = queries::members(db, room_id).await?;
                        let remaining = members.iter().any(|m| {
                            m.membership == membership::JOINED
                                && m.user_id
                                    .split_once(':')
                                    .is_some_and(|(_, s)| s == target_server)
                        });
                        if !remaining {
                            queries::remove_room_server(db, room_id, target_server).await?;
                        }
                    }
                    Ok(revoked)
                })
            })
            .await
            .map(|(revoked, _)| revoked)
    }

    /// Creates an invite: the host may, and any joined member while the host lets guests share
    /// (at most [`MAX_GUEST_INVITES`] live links each). A member of a room of another server asks
    /// through this server, which forwards the request to the room's origin.
    pub async fn create_invite(
        &self,
        room_id: &str,
        who: &Identity,
        options: &InviteOptions,
    ) -> Result<InviteOut, ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            let request = RoomRequest::CreateInvite {
                expires_in_secs: options.expires_in_secs,
                max_uses: options.max_uses,
            };
            return self.forward(&room_id, who, &request).await;
        }
        if options.max_uses == Some(0) {
            return Err(ApiError::bad_request("max_uses must be at least 1"));
        }
        let expires_in = options.expires_in_secs.map(Duration::from_secs);
        if expires_in.is_some_and(|d| d.is_zero() || d > Duration::from_secs(366 * 86400)) {
            return Err(ApiError::bad_request(
                "expires_in_secs must be between 1 and a year",
            ));
        }
        let mut db = confab_schema::connect(&self.pool).await?;
        let now = now_ms();
        let room = require_member(&mut db, room_id.as_str(), who).await?;
        let me = queries::member(&mut db, room_id.as_str(), &who.user_id).await?;
        if !has_hosts_authority(&room, me.as_ref(), &who.user_id) {
            if !room.guests_may_share {
                return Err(ApiError::new(
                    ErrorCode::NotHost,
                    "only the hosts may make invite links: they have not let guests share",
                ));
            }
            let live =
                queries::count_live_invites_made_by(&mut db, room_id.as_str(), &who.user_id, now)
                    .await?;
            if live >= MAX_GUEST_INVITES {
                return Err(ApiError::new(
                    ErrorCode::TooManyInvites,
                    format!(
                        "you already have {live} live invite links in this room, the most a \
                         guest may have"
                    ),
                ));
            }
        }
        let token = new_token();
        let invite = Invite {
            invite_id: confab_federation::ids::random_alphanumeric(12),
            room_id: room_id.to_string(),
            token_hash: hash_token(&token),
            created_by: who.user_id.clone(),
            created_ts: now,
            expires_ts: expires_in.map(|d| now.saturating_add(d.as_millis() as i64)),
            max_uses: options
                .max_uses
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            uses: 0,
            revoked_ts: None,
        };
        queries::insert_invite(&mut db, &invite).await?;
        Ok(InviteOut::from_row(&invite, Some(token)))
    }

    /// Lists a room's invites (host only).
    pub async fn list_invites(
        &self,
        room_id: &str,
        who: &Identity,
    ) -> Result<Vec<InviteOut>, ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            #[derive(Deserialize)]
            struct Listed {
                invites: Vec<InviteOut>,
            }
            let listed: Listed = self
                .forward(&room_id, who, &RoomRequest::ListInvites)
                .await?;
            return Ok(listed.invites);
        }
        let mut db = confab_schema::connect(&self.pool).await?;
        require_authority(&mut db, room_id.as_str(), who, Authority::Hosts).await?;
        let invites = queries::invites_of_room(&mut db, room_id.as_str()).await?;
        Ok(invites
            .iter()
            .map(|i| InviteOut::from_row(i, None))
            .collect())
    }

    /// Revokes an invite (host only).
    pub async fn revoke_invite(
        &self,
        room_id: &str,
        who: &Identity,
        invite_id: &str,
    ) -> Result<(), ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            let request = RoomRequest::RevokeInvite {
                invite_id: invite_id.to_owned(),
            };
            let _: serde_json::Value = self.forward(&room_id, who, &request).await?;
            return Ok(());
        }
        let mut db = confab_schema::connect(&self.pool).await?;
        require_authority(&mut db, room_id.as_str(), who, Authority::Hosts).await?;
        if !queries::revoke_invite(&mut db, room_id.as_str(), invite_id, now_ms()).await? {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "no such invite in this room",
            ));
        }
        Ok(())
    }

    /// Locks or unlocks a room (host only) and tells everyone.
    pub async fn set_locked(
        &self,
        room_id: &str,
        who: &Identity,
        locked: bool,
    ) -> Result<RoomSummary, ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            return self
                .forward(&room_id, who, &RoomRequest::SetLocked { locked })
                .await;
        }
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_authority(&mut db, room_id.as_str(), who, Authority::Hosts).await?;
        }
        let room = self.set_locked_as(room_id.as_str(), who, locked).await?;
        self.room_summary(&room, who).await
    }

    /// Locks or unlocks a room on the authority of `actor`, unchecked (see [`Self::kick_as`]),
    /// and tells everyone. Returns the room as it is now.
    pub async fn set_locked_as(
        &self,
        room_id: &str,
        actor: &Identity,
        locked: bool,
    ) -> Result<Room, ApiError> {
        self.require_origin(room_id)?;
        let event = NewEvent {
            sender: actor.user_id.clone(),
            device_id: actor.device_id.clone(),
            origin_ts: now_ms(),
            content: protocol::lock_content(locked),
        };
        let room_key = room_id.to_owned();
        let (room, _) = self
            .writer()
            .change(room_id, move |db, appender| {
                Box::pin(async move {
                    let room = queries::set_room_locked(db, &room_key, locked)
                        .await?
                        .ok_or_else(ApiError::room_not_found)?;
                    let appended = appender.append(db, &[event]).await?;
                    let last_seq = appended.events.last().map_or(room.last_seq, |e| e.seq);
                    Ok(Room { last_seq, ..room })
                })
            })
            .await?;
        Ok(room)
    }

    /// Changes the room's settings (host only) and tells everyone.
    pub async fn set_settings(
        &self,
        room_id: &str,
        who: &Identity,
        change: &SettingsChange,
    ) -> Result<RoomSummary, ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            let request = RoomRequest::Settings {
                guests_may_share: change.guests_may_share,
                lobby: change.lobby,
            };
            return self.forward(&room_id, who, &request).await;
        }
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_authority(&mut db, room_id.as_str(), who, Authority::Hosts).await?;
        }
        let room = self.set_settings_as(room_id.as_str(), who, change).await?;
        self.room_summary(&room, who).await
    }

    /// Changes the room's settings on the authority of `actor`, unchecked (see
    /// [`Self::kick_as`]): the change is a `settings` event with every setting as it is after it,
    /// applied by the origin and carried to the replicas like the lock. Returns the room as it is
    /// now.
    pub async fn set_settings_as(
        &self,
        room_id: &str,
        actor: &Identity,
        change: &SettingsChange,
    ) -> Result<Room, ApiError> {
        self.require_origin(room_id)?;
        let (room_key, actor, change) = (room_id.to_owned(), actor.clone(), change.clone());
        let (room, _) = self
            .writer()
            .change(room_id, move |db, appender| {
                Box::pin(async move {
                    let mut room = queries::room_for_update(db, &room_key)
                        .await?
                        .ok_or_else(ApiError::room_not_found)?;
                    let mut changed = Vec::new();
                    if let Some(share) = change.guests_may_share
                        && share != room.guests_may_share
                    {
                        room = queries::set_room_guests_may_share(db, &room_key, share)
                            .await?
                            .ok_or_else(ApiError::room_not_found)?;
                        changed.push("guests_may_share");
                    }
                    if let Some(lobby) = change.lobby
                        && lobby != room.lobby
                    {
                        room = queries::set_room_lobby(db, &room_key, lobby)
                            .await?
                            .ok_or_else(ApiError::room_not_found)?;
                        changed.push("lobby");
                    }
                    let event = NewEvent {
                        sender: actor.user_id.clone(),
                        device_id: actor.device_id.clone(),
                        origin_ts: now_ms(),
                        content: protocol::settings_content(
                            room.guests_may_share,
                            room.lobby,
                            &changed,
                        ),
                    };
                    let appended = appender.append(db, &[event]).await?;
                    let last_seq = appended.events.last().map_or(room.last_seq, |e| e.seq);
                    Ok(Room { last_seq, ..room })
                })
            })
            .await?;
        Ok(room)
    }

    /// Deletes a room now (host only) and tells everyone.
    pub async fn close_room(&self, room_id: &str, who: &Identity) -> Result<(), ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            let _: serde_json::Value = self.forward(&room_id, who, &RoomRequest::Close).await?;
            return Ok(());
        }
        let mut db = confab_schema::connect(&self.pool).await?;
        require_authority(&mut db, room_id.as_str(), who, Authority::Host).await?;
        drop(db);
        self.delete_room(room_id.as_str(), CloseReason::Closed)
            .await
    }

    /// Deletes a room now, unchecked (see [`Self::kick_as`]), and tells everyone.
    pub async fn delete_room(&self, room_id: &str, reason: CloseReason) -> Result<(), ApiError> {
        if !self.delete_room_everywhere(room_id, reason, false).await? {
            return Err(ApiError::room_not_found());
        }
        Ok(())
    }

    /// A page of a room's events after `since` (members only).
    pub async fn events(
        &self,
        room_id: &str,
        who: &Identity,
        since: i64,
        limit: i64,
    ) -> Result<(Vec<confab_schema::models::Event>, i64), ApiError> {
        let room_id = parse_room_id(room_id)?;
        let mut db = confab_schema::connect(&self.pool).await?;
        let room = require_member(&mut db, room_id.as_str(), who).await?;
        let events =
            queries::events_after(&mut db, room_id.as_str(), since, limit.clamp(1, 500)).await?;
        Ok((events, room.last_seq))
    }

    /// Deletes rooms whose idle time is up; returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, ApiError> {
        let mut deleted = 0;
        loop {
            let expired = { crate::engine::idle::expired_rooms(&self.pool, 100).await? };
            let full = expired.len() == 100;
            for room_id in &expired {
                // Each room in its own transaction, with its deletion queued for the other
                // servers taking part.
                if self
                    .delete_room_everywhere(room_id, CloseReason::Expired, true)
                    .await?
                {
                    tracing::info!(room_id, "room expired and deleted");
                    self.metrics.rooms_expired.inc();
                    deleted += 1;
                }
            }
            if !full {
                break;
            }
        }
        self.metrics.room_sweeps.inc();
        Ok(deleted)
    }

    /// At start-up: every room that no live worker holds devices in starts its countdown
    /// (this process's rows from its last run are gone by then).
    pub async fn restart_countdowns(&self) -> Result<usize, ApiError> {
        self.engine.countdown().start_orphans(&self.pool).await
    }

    /// Deletes a room with everything in it, tells its other servers (on the origin), and
    /// closes its live state. `only_if_expired` makes the deletion conditional on the idle
    /// deadline having passed (the sweeper's race with someone coming back). Returns whether
    /// the room was deleted.
    pub async fn delete_room_everywhere(
        &self,
        room_id: &str,
        reason: CloseReason,
        only_if_expired: bool,
    ) -> Result<bool, ApiError> {
        let now = now_ms();
        let sender = &self.sender;
        let mut db = confab_schema::connect(&self.pool).await?;
        let woken = db
            .transaction(async |db| {
                // Locked first, so that a join committing meanwhile is seen with its server.
                if queries::room_for_update(db, room_id).await?.is_none() {
                    return Ok::<_, DbError>(None);
                }
                let servers = queries::room_servers(db, room_id).await?;
                let deleted = if only_if_expired {
                    queries::delete_room_if_expired(db, room_id, now).await?
                } else {
                    queries::delete_room(db, room_id).await?
                };
                if !deleted {
                    return Ok(None);
                }
                let pdus = [deleted_pdu(room_id, reason)];
                Ok(Some(queue_pdus(sender, db, &servers, &pdus).await?))
            })
            .await?;
        drop(db);
        let Some(woken) = woken else {
            return Ok(false);
        };
        wake(sender, &woken).await;
        self.engine.close(room_id, reason);
        Ok(true)
    }

    fn is_ours(&self, room_id: &RoomId) -> bool {
        room_id.server_name() == &self.settings.server.name
    }

    /// Forwards a member's request about a room of another server to its origin, which decides.
    async fn forward<T: serde::de::DeserializeOwned>(
        &self,
        room_id: &RoomId,
        who: &Identity,
        request: &RoomRequest,
    ) -> Result<T, ApiError> {
        outbound::member_request(self.replicas.client(), room_id, who, request).await
    }

    /// Makes a joined member a co-host or a guest again (the host only) and tells everyone.
    pub async fn set_role(
        &self,
        room_id: &str,
        who: &Identity,
        change: &RoleChange,
    ) -> Result<RoleOut, ApiError> {
        let room_id = parse_room_id(room_id)?;
        if change.role != role::COHOST && change.role != role::GUEST {
            return Err(ApiError::bad_request("`role` must be `cohost` or `guest`"));
        }
        if !self.is_ours(&room_id) {
            let request = RoomRequest::SetRole {
                user_id: change.user_id.clone(),
                role: change.role.clone(),
            };
            return self.forward(&room_id, who, &request).await;
        }
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_authority(&mut db, room_id.as_str(), who, Authority::Host).await?;
        }
        let (room_key, actor, change) = (room_id.to_string(), who.clone(), change.clone());
        let (out, _) = self
            .writer()
            .change(room_id.as_str(), move |db, appender| {
                Box::pin(async move {
                    let room = queries::room_for_update(db, &room_key)
                        .await?
                        .ok_or_else(ApiError::room_not_found)?;
                    if room.host_user_id != actor.user_id {
                        // The host changed since the check (a succession).
                        return Err(ApiError::new(
                            ErrorCode::NotHost,
                            "only the room's host may do this",
                        ));
                    }
                    if change.user_id == room.host_user_id {
                        return Err(ApiError::bad_request(
                            "the host's own role does not change this way",
                        ));
                    }
                    let member = queries::member(db, &room_key, &change.user_id)
                        .await?
                        .filter(|m| m.membership == membership::JOINED)
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::NotMember,
                                "that user is not a member of this room",
                            )
                        })?;
                    let cohost = change.role == role::COHOST;
                    if member.is_host != cohost {
                        queries::set_member_is_host(db, &room_key, &change.user_id, cohost).await?;
                        let event = NewEvent {
                            sender: actor.user_id.clone(),
                            device_id: actor.device_id.clone(),
                            origin_ts: now_ms(),
                            content: protocol::role_content(
                                &change.user_id,
                                &change.role,
                                if cohost { "promoted" } else { "demoted" },
                                None,
                            ),
                        };
                        appender.append(db, &[event]).await?;
                    }
                    Ok(RoleOut {
                        room_id: room_key.clone(),
                        user_id: change.user_id.clone(),
                        role: change.role.clone(),
                    })
                })
            })
            .await?;
        Ok(out)
    }

    /// Admits or refuses a knock at the room's lobby (hosts) and tells everyone; the knocker's
    /// next join comes in (admitted) or gets `knock_refused`.
    pub async fn answer_knock(
        &self,
        room_id: &str,
        who: &Identity,
        answer: &KnockAnswer,
    ) -> Result<KnockAnswerOut, ApiError> {
        let room_id = parse_room_id(room_id)?;
        if !self.is_ours(&room_id) {
            let request = RoomRequest::AnswerKnock {
                user_id: answer.user_id.clone(),
                admit: answer.admit,
            };
            return self.forward(&room_id, who, &request).await;
        }
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_authority(&mut db, room_id.as_str(), who, Authority::Hosts).await?;
        }
        let now = now_ms();
        let (room_key, actor, answer) = (room_id.to_string(), who.clone(), answer.clone());
        let (out, _) = self
            .writer()
            .change(room_id.as_str(), move |db, appender| {
                Box::pin(async move {
                    queries::room_for_update(db, &room_key)
                        .await?
                        .ok_or_else(ApiError::room_not_found)?;
                    let waiting = queries::knock_for_update(db, &room_key, &answer.user_id)
                        .await?
                        .filter(|k| {
                            k.state == knock::PENDING
                                && k.updated_ts.saturating_add(KNOCK_TTL_MS) > now
                        })
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::NotFound,
                                "nobody of that id is knocking at this room",
                            )
                        })?;
                    let state = if answer.admit {
                        knock::ADMITTED
                    } else {
                        knock::REFUSED
                    };
                    queries::set_knock_state(db, &room_key, &answer.user_id, state, now).await?;
                    let event = NewEvent {
                        sender: actor.user_id.clone(),
                        device_id: actor.device_id.clone(),
                        origin_ts: now,
                        content: protocol::knock_content(
                            &waiting.user_id,
                            &waiting.display_name,
                            state,
                            now.saturating_add(KNOCK_TTL_MS),
                        ),
                    };
                    appender.append(db, &[event]).await?;
                    Ok(KnockAnswerOut {
                        room_id: room_key.clone(),
                        user_id: answer.user_id.clone(),
                        state: state.to_owned(),
                    })
                })
            })
            .await?;
        Ok(out)
    }

    /// One round of the sweeper's watch over hosts who are away: in each occupied room of ours
    /// (someone connected) whose host has had no device connected, here or through another
    /// server, for `rooms.host_absence_grace` (counted from the first round that found them
    /// away, so a reload or a dropped network between two rounds never counts), the room gets a
    /// new host (see [`succeed`]). `absent` is the sweeper's memory between rounds; `now` is
    /// passed in so that a test can drive a round at a chosen time. Returns how many rooms got a
    /// new host.
    pub async fn sweep_absent_hosts(
        &self,
        absent: &mut AbsentHosts,
        now: i64,
    ) -> Result<usize, ApiError> {
        let occupied = self.engine.occupied_rooms();
        let rows = {
            let ids: Vec<&str> = occupied.iter().map(String::as_str).collect();
            let mut db = confab_schema::connect(&self.pool).await?;
            queries::rooms_by_ids(&mut db, &ids).await?
        };
        let grace =
            i64::try_from(self.settings.rooms.host_absence_grace.as_millis()).unwrap_or(i64::MAX);
        let mut seen = HashSet::new();
        let mut handed = 0;
        for room in rows {
            if self.engine.is_connected(&room.room_id, &room.host_user_id) {
                continue;
            }
            seen.insert(room.room_id.clone());
            let since = absent
                .since
                .entry(room.room_id.clone())
                .or_insert_with(|| (room.host_user_id.clone(), now));
            if since.0 != room.host_user_id {
                // Another host since the last round: their absence starts now.
                *since = (room.host_user_id.clone(), now);
            }
            if now.saturating_sub(since.1) < grace {
                continue;
            }
            if self
                .hand_over_if_absent(&room.room_id, &room.host_user_id)
                .await?
            {
                handed += 1;
            }
            absent.since.remove(&room.room_id);
            seen.remove(&room.room_id);
        }
        absent.since.retain(|room_id, _| seen.contains(room_id));
        Ok(handed)
    }

    /// Gives the room a new host if `host` still is its host and is still away; returns whether
    /// it did.
    async fn hand_over_if_absent(&self, room_id: &str, host: &str) -> Result<bool, ApiError> {
        let (room_key, host, engine) = (room_id.to_owned(), host.to_owned(), self.engine.clone());
        let (handed, _) = self
            .writer()
            .change(room_id, move |db, appender| {
                Box::pin(async move {
                    let Some(room) = queries::room_for_update(db, &room_key).await? else {
                        return Ok(false);
                    };
                    // Read under the room's row lock, in the writer's order: the host who came
                    // back, or a succession since, ends it.
                    if room.host_user_id != host || engine.is_connected(&room_key, &host) {
                        return Ok(false);
                    }
                    let connected = engine.connected_user_ids(&room_key);
                    match succeed(db, &room, &connected, now_ms()).await? {
                        Some(event) => {
                            appender.append(db, &[event]).await?;
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                })
            })
            .await?;
        Ok(handed)
    }

    /// Refuses to change a replica: only a room's origin numbers its events, so a change made
    /// here would fork the room's log.
    fn require_origin(&self, room_id: &str) -> Result<(), ApiError> {
        let room = parse_room_id(room_id)?;
        if room.server_name() != &self.settings.server.name {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this room lives on {}; only that homeserver can change it",
                    room.server_name()
                ),
            ));
        }
        Ok(())
    }
}

/// Names the room's next host once its host left for good, in the caller's transaction with the
/// room row locked: among the joined members, one connected first (here or through another
/// server), among those a co-host first, then the longest present (the earliest join), then by
/// user id. Returns the `role` event to append, or `None` if nobody is left to take over.
async fn succeed(
    db: &mut AsyncPgConnection,
    room: &Room,
    connected: &HashSet<String>,
    now: i64,
) -> Result<Option<NewEvent>, ApiError> {
    let members = queries::members(db, &room.room_id).await?;
    let Some(next) = members
        .iter()
        .filter(|m| m.membership == membership::JOINED && m.user_id != room.host_user_id)
        .min_by_key(|m| {
            (
                !connected.contains(&m.user_id),
                !m.is_host,
                m.joined_ts,
                m.user_id.as_str(),
            )
        })
    else {
        return Ok(None);
    };
    queries::set_member_is_host(db, &room.room_id, &room.host_user_id, false).await?;
    queries::set_member_is_host(db, &room.room_id, &next.user_id, true).await?;
    queries::set_room_host(db, &room.room_id, &next.user_id).await?;
    tracing::info!(room_id = %room.room_id, host = %next.user_id, "the room has a new host");
    Ok(Some(NewEvent {
        sender: next.user_id.clone(),
        device_id: String::new(),
        origin_ts: now,
        content: protocol::role_content(
            &next.user_id,
            role::HOST,
            "succession",
            Some(&room.host_user_id),
        ),
    }))
}

/// What a join decided, when it decided something to commit.
enum JoinOutcome {
    Joined(Room),
    /// A new knock at a locked room's lobby.
    Knocked,
}

fn knocking_error() -> ApiError {
    ApiError::new(
        ErrorCode::Knocking,
        "the room is locked; the hosts have been asked to let you in: ask again to see their answer",
    )
}

fn knock_refused_error() -> ApiError {
    ApiError::new(
        ErrorCode::KnockRefused,
        "a host of this room did not let you in",
    )
}

/// The knocks still waiting, from a replica's `knock` events (the latest of each knocker wins;
/// one who is a joined member now came in), oldest first.
fn pending_knocks_of(
    events: &[confab_schema::models::Event],
    members: &[Member],
    now: i64,
) -> Vec<KnockOut> {
    let mut latest: Vec<KnockOut> = Vec::new();
    for e in events {
        let Ok(k) = serde_json::from_value::<KnockOut>(e.content.clone()) else {
            continue;
        };
        latest.retain(|o| o.user_id != k.user_id);
        latest.push(k);
    }
    latest.retain(|k| {
        k.state == knock::PENDING
            && k.expires_ts > now
            && !members
                .iter()
                .any(|m| m.user_id == k.user_id && m.membership == membership::JOINED)
    });
    latest
}

fn knock_out(k: &Knock) -> KnockOut {
    KnockOut {
        user_id: k.user_id.clone(),
        display_name: k.display_name.clone(),
        state: k.state.clone(),
        expires_ts: k.updated_ts.saturating_add(KNOCK_TTL_MS),
    }
}

fn kicked_error() -> ApiError {
    ApiError::new(
        ErrorCode::Kicked,
        "you were removed from this room; ask the host for a new invite",
    )
}

/// Why an invite can no longer be used, if it cannot.
fn check_invite(invite: &Invite, now: i64) -> Result<(), ApiError> {
    if invite.revoked_ts.is_some() {
        return Err(ApiError::new(
            ErrorCode::InviteRevoked,
            "this invite was revoked by the host",
        ));
    }
    if invite.expires_ts.is_some_and(|t| t <= now) {
        return Err(ApiError::new(
            ErrorCode::InviteExpired,
            "this invite has expired",
        ));
    }
    if invite.max_uses.is_some_and(|max| invite.uses >= max) {
        return Err(ApiError::new(
            ErrorCode::InviteUsedUp,
            "this invite has been used up",
        ));
    }
    Ok(())
}
