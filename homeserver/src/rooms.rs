//! The rules of rooms over their stored state: creation, joining (invites, lock, kick,
//! capacity), leaving, invites, lock, kick, close, and deleting expired rooms. Handlers call
//! these; these read the schema and change rooms through the engine: every event goes through
//! its writer ([`EventWriter::change`]), whose fan-out lets each room's owner apply what changed.

use std::sync::Arc;
use std::time::Duration;

use confab_federation::ids::{RoomId, ServerName};
use confab_schema::models::{Invite, Member, NewEvent, Room, membership};
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
use crate::protocol::{self, MemberOut, RoomSummary};
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

async fn require_host(
    db: &mut AsyncPgConnection,
    room_id: &str,
    who: &Identity,
) -> Result<Room, ApiError> {
    let room = require_room(db, room_id).await?;
    if room.host_user_id != who.user_id {
        return Err(ApiError::new(
            ErrorCode::NotHost,
            "only the room's host may do this",
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
                    role: if m.is_host { "host" } else { "guest" }.to_owned(),
                    user_id: m.user_id,
                    display_name: m.display_name,
                    membership: m.membership,
                })
                .collect(),
            latest_seq: room.last_seq,
            is_host: room.host_user_id == who.user_id,
            guests_may_share: room.guests_may_share,
            can_share: room.host_user_id == who.user_id || room.guests_may_share,
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
                        return Ok(room);
                    }
                    let returning = prior == Some(membership::LEFT);
                    // A returning member presents no invite: the one they first came in with
                    // stays recorded, and a kick revokes that.
                    let mut used_invite = None;
                    if !returning {
                        if room.locked {
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
                    Ok(Room { last_seq, ..room })
                })
            })
            .await
            .map(|(room, _)| room)
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
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_host(&mut db, room_id.as_str(), who).await?;
        }
        if target == who.user_id {
            return Err(ApiError::bad_request(
                "the host cannot kick themselves; close the room instead",
            ));
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
        self.writer()
            .change(room_id, move |db, appender| {
                Box::pin(async move {
                    let room_id = room_key.as_str();
                    let _room = queries::room_for_update(db, room_id)
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
                    let event = NewEvent {
                        sender: actor.user_id.clone(),
                        device_id: actor.device_id.clone(),
                        origin_ts: now,
                        content: protocol::member_content(&target, &member.display_name, &state),
                    };
                    let appended = appender.append(db, &[event]).await?;
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
        if room_id.server_name() != &self.settings.server.name {
            let request = RoomRequest::CreateInvite {
                expires_in_secs: options.expires_in_secs,
                max_uses: options.max_uses,
            };
            return outbound::member_request(self.replicas.client(), &room_id, who, &request).await;
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
        if room.host_user_id != who.user_id {
            if !room.guests_may_share {
                return Err(ApiError::new(
                    ErrorCode::NotHost,
                    "only the host may make invite links: the host has not let guests share",
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
        let mut db = confab_schema::connect(&self.pool).await?;
        require_host(&mut db, room_id.as_str(), who).await?;
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
        let mut db = confab_schema::connect(&self.pool).await?;
        require_host(&mut db, room_id.as_str(), who).await?;
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
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_host(&mut db, room_id.as_str(), who).await?;
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
        {
            let mut db = confab_schema::connect(&self.pool).await?;
            require_host(&mut db, room_id.as_str(), who).await?;
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
                    let event = NewEvent {
                        sender: actor.user_id.clone(),
                        device_id: actor.device_id.clone(),
                        origin_ts: now_ms(),
                        content: protocol::settings_content(room.guests_may_share, &changed),
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
        let mut db = confab_schema::connect(&self.pool).await?;
        require_host(&mut db, room_id.as_str(), who).await?;
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

    /// At start-up no session is live: every room without a countdown starts one.
    pub async fn restart_countdowns(&self) -> Result<usize, ApiError> {
        self.engine.countdown().restart_all(&self.pool).await
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
