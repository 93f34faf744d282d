//! The origin's side: requests from other servers about rooms of ours (join, events, leave,
//! presence, forwarded chat). Thin: the caller was authenticated by `crate::federation::auth`;
//! these parse, check that the caller speaks for its own users only, and call a service.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use confab_federation::ids::{RoomId, ServerName, UserId};
use confab_schema::models::membership;
use confab_schema::{AsyncPgConnection, DbError, queries};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::MAX_SEND_BATCH;
use super::budget::Action;
use super::refusal::RoomRefusal;
use super::wire::{
    ConnectedResponse, EventsPage, EventsQuery, JoinRequest, JoinedRoom, LeaveRequest,
    MemberRequest, PresenceRequest, RoomRequest, SendItem, SendRequest, SendResponse, SendResult,
    WireEvent, WireMember,
};
use crate::engine::{ChatReply, Identity};
use crate::error::{ApiError, ErrorCode};
use crate::federation::auth::FederatedRequest;
use crate::protocol::ConnectedDevice;
use crate::state::AppState;
use crate::time::now_ms;

/// Serialized bytes of events in one answer: well under the default 1 MiB answer limit, and at
/// least one event whatever its size.
const PAGE_BYTES: usize = 256 * 1024;
/// Events in one answer, at most.
const PAGE_EVENTS: i64 = 500;

type Data = web::Data<AppState>;

/// A room of ours, from the path.
fn own_room(state: &AppState, raw: &str) -> Result<RoomId, ApiError> {
    let room_id = RoomId::parse(raw)
        .map_err(|e| ApiError::new(ErrorCode::BadRoomId, format!("room id: {e}")))?;
    if room_id.server_name() != &state.settings.server.name {
        return Err(ApiError::new(
            ErrorCode::RoomNotFound,
            "that room does not live on this homeserver",
        ));
    }
    Ok(room_id)
}

/// A user of the server that signed the request: no server speaks for another's users.
fn own_user(origin: &ServerName, raw: &str) -> Result<UserId, ApiError> {
    let user = UserId::parse(raw)
        .map_err(|e| ApiError::new(ErrorCode::BadUserId, format!("user id: {e}")))?;
    if user.server_name() != origin {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{origin} cannot act for {user}, a user of another server"),
        ));
    }
    Ok(user)
}

/// A refusal for `who` being over its budget for `action`: `M_LIMIT_EXCEEDED` with
/// `retry_after_ms`, counted.
fn over_budget(state: &AppState, action: Action, wait: Duration, who: &str) -> ApiError {
    state
        .metrics
        .remote_over_budget
        .with_label_values(&[action.as_str()])
        .inc();
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    ApiError {
        retry_after_ms: Some(ms),
        ..ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "{who} is over its budget for {} here; try again in {ms} ms",
                action.as_str()
            ),
        )
    }
}

fn body<T: DeserializeOwned>(content: Option<&Value>) -> Result<T, ApiError> {
    let content = content.ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    T::deserialize(content).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// `POST /_confab/federation/v1/rooms/{roomId}/join`.
pub async fn join(
    state: Data,
    path: web::Path<String>,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, RoomRefusal> {
    let room_id = own_room(&state, &path)?;
    let join: JoinRequest = body(request.content.as_ref())?;
    let user = own_user(&request.origin, &join.user_id)?;
    let who = Identity {
        user_id: user.to_string(),
        device_id: String::new(),
        display_name: crate::sessions::validate_display_name(&join.display_name)?,
    };
    // All of a server's users share its budget: its own limit per address is out of our sight.
    crate::limiter::limit_refusals(
        &state.federated_join_limiter,
        request.origin.as_str(),
        state.rooms.join_core(
            &room_id,
            &who,
            join.invite_token.as_deref(),
            Some(&request.origin),
        ),
    )
    .await?;
    let answer = room_state(&state, room_id.as_str(), join.since.max(0)).await?;
    Ok(HttpResponse::Ok().json(answer))
}

async fn room_state(state: &AppState, room_id: &str, since: i64) -> Result<JoinedRoom, ApiError> {
    let mut db = confab_schema::connect(&state.pool).await?;
    let room = queries::room(&mut db, room_id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    let members = queries::members(&mut db, room_id).await?;
    let events = events_page(&mut db, room_id, since).await?;
    Ok(JoinedRoom {
        room_id: room.room_id,
        host_user_id: room.host_user_id,
        locked: room.locked,
        guests_may_share: room.guests_may_share,
        lobby: room.lobby,
        created_ts: room.created_ts,
        latest_seq: room.last_seq,
        members: members
            .into_iter()
            .map(|m| WireMember {
                user_id: m.user_id,
                display_name: m.display_name,
                is_host: m.is_host,
                membership: m.membership,
                joined_ts: m.joined_ts,
                updated_ts: m.updated_ts,
            })
            .collect(),
        events,
        connected: state.engine.connected_devices(room_id),
    })
}

/// Events after `since`, as many as fit in [`PAGE_BYTES`] (at least one).
async fn events_page(
    db: &mut AsyncPgConnection,
    room_id: &str,
    since: i64,
) -> Result<Vec<WireEvent>, DbError> {
    let events = queries::events_after(db, room_id, since, PAGE_EVENTS).await?;
    let mut bytes = 0;
    let mut page = Vec::new();
    for e in &events {
        bytes += e.content.to_string().len() + 128;
        if bytes > PAGE_BYTES && !page.is_empty() {
            break;
        }
        page.push(WireEvent::from_event(e));
    }
    Ok(page)
}

/// `GET /_confab/federation/v1/rooms/{roomId}/events?since=N`: for servers taking part.
pub async fn events(
    state: Data,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, RoomRefusal> {
    let room_id = own_room(&state, &path)?;
    let mut db = confab_schema::connect(&state.pool).await?;
    let room = queries::room(&mut db, room_id.as_str())
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    let servers = queries::room_servers(&mut db, room_id.as_str()).await?;
    if !servers.iter().any(|s| s == request.origin.as_str()) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{} takes no part in this room", request.origin),
        )
        .into());
    }
    let events = events_page(&mut db, room_id.as_str(), query.since.max(0)).await?;
    Ok(HttpResponse::Ok().json(EventsPage {
        events,
        latest_seq: room.last_seq,
    }))
}

/// `POST /_confab/federation/v1/rooms/{roomId}/leave`.
pub async fn leave(
    state: Data,
    path: web::Path<String>,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, RoomRefusal> {
    let room_id = own_room(&state, &path)?;
    let leave: LeaveRequest = body(request.content.as_ref())?;
    let user = own_user(&request.origin, &leave.user_id)?;
    let who = Identity {
        user_id: user.to_string(),
        device_id: leave.device_id,
        display_name: String::new(),
    };
    state
        .rooms
        .change_membership(room_id.as_str(), &who, &who.user_id, membership::LEFT)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /_confab/federation/v1/rooms/{roomId}/request`: a request of a member of one of our
/// rooms who is a user of the calling server, forwarded by it (see [`RoomRequest`]); answered as
/// the client API would answer one of our users.
pub async fn member_request(
    state: Data,
    path: web::Path<String>,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, RoomRefusal> {
    let room_id = own_room(&state, &path)?;
    let forwarded: MemberRequest = body(request.content.as_ref())?;
    let user = own_user(&request.origin, &forwarded.user_id)?;
    if forwarded.device_id.len() > 64 {
        return Err(ApiError::bad_request("device_id must have at most 64 bytes").into());
    }
    let who = Identity {
        user_id: user.to_string(),
        device_id: forwarded.device_id,
        display_name: String::new(),
    };
    let room = room_id.as_str();
    let answer = match forwarded.request {
        RoomRequest::CreateInvite {
            expires_in_secs,
            max_uses,
        } => {
            let options = crate::rooms::InviteOptions {
                expires_in_secs,
                max_uses,
            };
            json!(state.rooms.create_invite(room, &who, &options).await?)
        }
        RoomRequest::ListInvites => {
            json!({ "invites": state.rooms.list_invites(room, &who).await? })
        }
        RoomRequest::RevokeInvite { invite_id } => {
            state.rooms.revoke_invite(room, &who, &invite_id).await?;
            json!({})
        }
        RoomRequest::SetLocked { locked } => {
            json!(state.rooms.set_locked(room, &who, locked).await?)
        }
        RoomRequest::Settings {
            guests_may_share,
            lobby,
        } => {
            let change = crate::rooms::SettingsChange {
                guests_may_share,
                lobby,
            };
            json!(state.rooms.set_settings(room, &who, &change).await?)
        }
        RoomRequest::Kick { user_id } => json!(state.rooms.kick(room, &who, &user_id).await?),
        RoomRequest::SetRole { user_id, role } => {
            let change = crate::rooms::RoleChange { user_id, role };
            json!(state.rooms.set_role(room, &who, &change).await?)
        }
        RoomRequest::AnswerKnock { user_id, admit } => {
            let answer = crate::rooms::KnockAnswer { user_id, admit };
            json!(state.rooms.answer_knock(room, &who, &answer).await?)
        }
        RoomRequest::Close => {
            state.rooms.close_room(room, &who).await?;
            json!({})
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /_confab/federation/v1/rooms/{roomId}/presence`: a device of the calling server
/// connected to (or left) one of our rooms; answers with everyone connected.
pub async fn presence(
    state: Data,
    path: web::Path<String>,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, RoomRefusal> {
    let room_id = own_room(&state, &path)?;
    let p: PresenceRequest = body(request.content.as_ref())?;
    let user = own_user(&request.origin, &p.user_id)?;
    let origin = request.origin.as_str();
    state
        .remote_budgets
        .both(Action::Presence, origin, user.as_str())
        .map_err(|wait| over_budget(&state, Action::Presence, wait, user.as_str()))?;
    // Membership is checked by the room's owner when the device comes online; the device id
    // was bounded as it was read (`wire::bounded`).
    let device = ConnectedDevice {
        user_id: user.to_string(),
        device_id: p.device_id,
        display_name: crate::sessions::validate_display_name(&p.display_name)?,
    };
    let connected = state
        .engine
        .remote_presence(
            room_id.as_str(),
            request.origin.as_str(),
            &device,
            p.online,
            true,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ConnectedResponse { connected }))
}

/// `POST /_confab/federation/v1/send_chat`: chat of the calling server's users for our rooms,
/// appended in the order given; each gets its number or its refusal.
pub async fn send_chat(
    state: Data,
    FederatedRequest(request): FederatedRequest,
) -> Result<HttpResponse, RoomRefusal> {
    let send: SendRequest = body(request.content.as_ref())?;
    if send.events.len() > MAX_SEND_BATCH {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("at most {MAX_SEND_BATCH} messages per request"),
        )
        .into());
    }
    // The server's budget is taken for the whole batch or not at all, so that its sender
    // retries the batch as it was, in order.
    let origin = request.origin.as_str();
    state
        .remote_budgets
        .server(Action::Chat, origin, send.events.len())
        .map_err(|wait| over_budget(&state, Action::Chat, wait, origin))?;
    // Membership is read once per room and sender.
    let mut members: HashMap<(String, String), bool> = HashMap::new();
    let mut pending = Vec::with_capacity(send.events.len());
    for item in send.events {
        let checked = check_forwarded(&state, &request.origin, &item, &mut members).await;
        match checked {
            Ok(event) => {
                let (reply, rx) = oneshot::channel();
                state
                    .engine
                    .writer()
                    .enqueue(
                        &item.room_id,
                        event,
                        item.txn_id.clone(),
                        ChatReply::Caller(reply),
                    )
                    .await;
                pending.push(Ok(rx));
            }
            Err(err) => pending.push(Err(err)),
        }
    }
    let mut results = Vec::with_capacity(pending.len());
    for p in pending {
        let outcome = match p {
            Ok(waiting) => waiting
                .await
                .unwrap_or_else(|_| Err(ApiError::internal("event writer", &"writer stopped"))),
            Err(err) => Err(err),
        };
        results.push(match outcome {
            Ok((seq, ts)) => SendResult {
                seq: Some(seq),
                ts: Some(ts),
                ..SendResult::default()
            },
            Err(err) => SendResult {
                code: Some(err.code),
                reason: Some(err.reason),
                retry_after_ms: err.retry_after_ms,
                ..SendResult::default()
            },
        });
    }
    Ok(HttpResponse::Ok().json(SendResponse { results }))
}

async fn check_forwarded(
    state: &AppState,
    origin: &ServerName,
    item: &SendItem,
    members: &mut HashMap<(String, String), bool>,
) -> Result<confab_schema::models::NewEvent, ApiError> {
    let room_id = own_room(state, &item.room_id)?;
    let user = own_user(origin, &item.sender)?;
    state
        .remote_budgets
        .user(Action::Chat, user.as_str())
        .map_err(|wait| over_budget(state, Action::Chat, wait, user.as_str()))?;
    // The device id was bounded as it was read (`wire::bounded`); the txn id further here.
    crate::protocol::checked_txn_id(item.txn_id.as_deref())?;
    let content = crate::protocol::checked_chat_content(
        &item.kind,
        &item.ciphertext,
        state.settings.limits.max_event_bytes,
    )?;
    let key = (room_id.to_string(), user.to_string());
    let joined = match members.get(&key) {
        Some(joined) => *joined,
        None => {
            let joined = state
                .engine
                .is_member(room_id.as_str(), user.as_str())
                .await?;
            members.insert(key, joined);
            joined
        }
    };
    if !joined {
        return Err(ApiError::new(
            ErrorCode::NotMember,
            "the sender is not a member of this room",
        ));
    }
    Ok(confab_schema::models::NewEvent {
        sender: user.to_string(),
        device_id: item.device_id.clone(),
        origin_ts: now_ms(),
        content,
    })
}
