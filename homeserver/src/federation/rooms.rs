//! Federated rooms (DESIGN.md, "Identity and rooms" and "Federation"). A room lives on its
//! origin, the server in its id: the origin decides joins, numbers the room's events and keeps its
//! membership, invites and lock. Another homeserver whose users join holds a replica of the room
//! (its row, members and events, with the origin's sequence numbers), from which its own users'
//! sockets are served exactly as for a local room, resume included.
//!
//! - **Persistent** (through the transaction sender, so a server that is down gets them later,
//!   once and in order): every event the origin appends goes, as a `confab.event` PDU, once to
//!   each server in `room_servers`, queued in the very transaction that appends it. A replica
//!   applies events in sequence order only; a gap is filled from the origin's events endpoint
//!   first, a repeat is ignored. Deletion (close, idle expiry) is a `confab.room_deleted` PDU,
//!   which purges the replica.
//! - **Requests** (signed, answered at once): join with an invite token (the origin applies every
//!   rule of a local join and answers with the room's state), leave, announce a device (the answer
//!   lists who is connected), read events, and send chat, which a user's homeserver forwards to
//!   the origin in order and in batches, one request in flight per origin.
//! - **Ephemeral** (EDUs, best-effort): presence, typing and signaling, routed in a star through
//!   the origin by the hub (`crate::hub`), payloads untouched.
//!
//! Every inbound request speaks only for users of the server that signed it, and only a room's
//! origin may send that room's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use confab_federation::ids::{RoomId, ServerName, UserId};
use confab_federation::transaction::{Edu, Pdu, PduResult, Transaction, TransactionResponse};
use confab_schema::models::{Appended, Event, Member, Room, membership};
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, queries};
use futures_util::future::BoxFuture;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::auth::FederatedRequest;
use super::client::{FederationClient, OutboundError};
use super::inbox::{Handled, Inbound, TransactionHandler};
use super::sender::TransactionSender;
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::hub::{CloseReason, Identity, edu};
use crate::protocol::{ConnectedDevice, DeviceRef};
use crate::time::now_ms;

/// PDU type of a room event, sent by the room's origin.
pub const EVENT_PDU: &str = "confab.event";
/// PDU type of a room's deletion, sent by the room's origin.
pub const DELETED_PDU: &str = "confab.room_deleted";
/// Where the room endpoints live.
const PATH: &str = "/_confab/federation/v1";
/// Serialized bytes of events in one answer: well under the default 1 MiB answer limit, and at
/// least one event whatever its size.
const PAGE_BYTES: usize = 256 * 1024;
/// Events in one answer, at most.
const PAGE_EVENTS: i64 = 500;
/// Chat messages forwarded in one request, at most.
pub const MAX_SEND_BATCH: usize = 100;
/// Forwarded chat messages waiting per origin before senders wait.
const FORWARD_QUEUE: usize = 4096;

// ---- wire types ------------------------------------------------------------------------------

/// A room event between servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    pub seq: i64,
    pub sender: String,
    pub device_id: String,
    pub origin_ts: i64,
    pub content: Value,
}

impl WireEvent {
    fn from_event(e: &Event) -> Self {
        Self {
            seq: e.seq,
            sender: e.sender.clone(),
            device_id: e.device_id.clone(),
            origin_ts: e.origin_ts,
            content: e.content.clone(),
        }
    }

    fn into_event(self, room_id: &str) -> Event {
        Event {
            room_id: room_id.to_owned(),
            seq: self.seq,
            sender: self.sender,
            device_id: self.device_id,
            origin_ts: self.origin_ts,
            content: self.content,
        }
    }
}

/// A member of a room between servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMember {
    pub user_id: String,
    pub display_name: String,
    pub is_host: bool,
    pub membership: String,
    pub joined_ts: i64,
    pub updated_ts: i64,
}

/// The origin's answer to a join: what a replica needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomState {
    pub room_id: String,
    pub host_user_id: String,
    pub locked: bool,
    pub created_ts: i64,
    pub latest_seq: i64,
    pub members: Vec<WireMember>,
    /// Events after the joiner's `since`, a page of them; the rest is read from the events
    /// endpoint.
    pub events: Vec<WireEvent>,
    pub connected: Vec<ConnectedDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    user_id: String,
    display_name: String,
    #[serde(default)]
    invite_token: Option<String>,
    /// The newest event the joiner's replica already has.
    #[serde(default)]
    since: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveRequest {
    user_id: String,
    device_id: String,
}

/// One chat message forwarded to its room's origin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendItem {
    pub room_id: String,
    pub sender: String,
    pub device_id: String,
    pub kind: String,
    pub ciphertext: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    events: Vec<SendItem>,
}

/// The outcome of one forwarded message: its number and time, or why it was refused.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SendResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendResponse {
    results: Vec<SendResult>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceRequest {
    user_id: String,
    device_id: String,
    display_name: String,
    online: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConnectedResponse {
    connected: Vec<ConnectedDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventsPage {
    events: Vec<WireEvent>,
    latest_seq: i64,
}

/// The query of [`events`].
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    since: i64,
}

// ---- errors ----------------------------------------------------------------------------------

/// A refusal by a room's origin, in Matrix's error shape plus Confab's own code, so that the
/// user's homeserver can pass the exact reason on to its client.
#[derive(Debug)]
pub struct RoomRefusal(pub ApiError);

impl From<ApiError> for RoomRefusal {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<DbError> for RoomRefusal {
    fn from(err: DbError) -> Self {
        Self(err.into())
    }
}

impl std::fmt::Display for RoomRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for RoomRefusal {
    fn status_code(&self) -> StatusCode {
        self.0.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let errcode = match status.as_u16() {
            400 => "M_BAD_JSON",
            401 => "M_UNAUTHORIZED",
            403 => "M_FORBIDDEN",
            404 => "M_NOT_FOUND",
            413 => "M_TOO_LARGE",
            429 => "M_LIMIT_EXCEEDED",
            _ => "M_UNKNOWN",
        };
        let mut body = json!({
            "errcode": errcode,
            "error": self.0.reason,
            "code": self.0.code,
        });
        // Matrix's field for M_LIMIT_EXCEEDED, which Confab's own answers use too.
        if let Some(ms) = self.0.retry_after_ms {
            body["retry_after_ms"] = json!(ms);
        }
        HttpResponse::build(status).json(body)
    }
}

/// What a user sees when the room's origin cannot be asked.
fn unreachable(origin: &ServerName, err: &OutboundError) -> ApiError {
    if let OutboundError::Policy(policy) = err {
        return ApiError::new(
            ErrorCode::FederationDenied,
            format!("this homeserver does not federate with {origin}: {policy}"),
        );
    }
    tracing::warn!(%origin, error = %err, "room origin unreachable");
    let mut e = ApiError::new(
        ErrorCode::Unavailable,
        format!("the room's homeserver {origin} cannot be reached right now"),
    );
    e.retry_after_ms = Some(5000);
    e
}

/// The origin's refusal, with its own code when it sent one.
fn refusal(origin: &ServerName, status: u16, body: &Value) -> ApiError {
    let reason = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    let code = body
        .get("code")
        .and_then(|c| ErrorCode::deserialize(c).ok())
        .filter(|c| *c != ErrorCode::Internal);
    match code {
        Some(code) => ApiError {
            retry_after_ms: body.get("retry_after_ms").and_then(Value::as_u64),
            ..ApiError::new(code, reason)
        },
        // A Matrix refusal before any room rule ran, e.g. its deny list.
        None if status == 403 => ApiError::new(
            ErrorCode::FederationDenied,
            format!("the room's homeserver {origin} refused this server: {reason}"),
        ),
        None => {
            let mut e = ApiError::new(
                ErrorCode::Unavailable,
                format!("the room's homeserver {origin} answered {status}: {reason}"),
            );
            e.retry_after_ms = Some(5000);
            e
        }
    }
}

/// A signed request to `origin`, its 200 answer parsed as `T`.
async fn call<T: DeserializeOwned>(
    client: &FederationClient,
    origin: &ServerName,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<T, ApiError> {
    let response = client
        .request(origin, method, path, body)
        .await
        .map_err(|e| unreachable(origin, &e))?;
    if response.status != 200 {
        return Err(refusal(origin, response.status, &response.body));
    }
    serde_json::from_value(response.body).map_err(|e| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("{origin} answered in an unexpected shape: {e}"),
        )
    })
}

// ---- the origin's side: queueing events for the other servers --------------------------------

/// The PDU carrying one event of a room.
pub fn event_pdu(event: &Event) -> Pdu {
    let mut rest = serde_json::Map::new();
    rest.insert(
        "event".to_owned(),
        serde_json::to_value(WireEvent::from_event(event)).unwrap_or_default(),
    );
    Pdu {
        event_id: format!("${}:{}", event.seq, event.room_id),
        room_id: event.room_id.clone(),
        event_type: EVENT_PDU.to_owned(),
        order: 0,
        rest,
    }
}

fn deleted_pdu(room_id: &str, reason: CloseReason) -> Pdu {
    let mut rest = serde_json::Map::new();
    rest.insert("reason".to_owned(), json!(reason.as_str()));
    Pdu {
        event_id: format!("$deleted:{room_id}"),
        room_id: room_id.to_owned(),
        event_type: DELETED_PDU.to_owned(),
        order: 0,
        rest,
    }
}

/// Queues PDUs for servers, through `db` (the caller's transaction, so that an event and its
/// delivery commit together). Servers this one does not federate with (denied since they
/// joined) are skipped: the room goes on without them. Returns the servers to wake after the
/// commit.
async fn queue_pdus(
    sender: &TransactionSender,
    db: &mut AsyncPgConnection,
    servers: &[String],
    pdus: &[Pdu],
) -> Result<Vec<ServerName>, DbError> {
    let mut items = Vec::new();
    let mut woken = Vec::new();
    for server in servers {
        let Ok(name) = ServerName::parse(server) else {
            continue;
        };
        if !sender.accepts(&name) {
            continue;
        }
        items.extend(pdus.iter().map(|p| (name.clone(), p.clone())));
        woken.push(name);
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    match sender.queue(db, &items).await {
        Ok(_) => Ok(woken),
        Err(super::sender::SenderError::Db(e)) => Err(e),
        // Checked above; an encoding failure of our own JSON cannot happen.
        Err(other) => {
            tracing::error!(error = %other, "could not queue room events");
            Ok(Vec::new())
        }
    }
}

/// Queues freshly appended events for every other server in their room (on the origin).
pub async fn queue_appended(
    sender: &TransactionSender,
    db: &mut AsyncPgConnection,
    appended: &Appended,
) -> Result<Vec<ServerName>, DbError> {
    if appended.servers.is_empty() || appended.events.is_empty() {
        return Ok(Vec::new());
    }
    let pdus: Vec<Pdu> = appended.events.iter().map(event_pdu).collect();
    queue_pdus(sender, db, &appended.servers, &pdus).await
}

/// Wakes the sender for servers whose PDUs committed.
pub async fn wake(sender: &TransactionSender, servers: &[ServerName]) {
    for server in servers {
        sender.wake(server).await;
    }
}

impl AppState {
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
        let sender = &self.federation_sender;
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
        self.hub.close(room_id, reason);
        Ok(true)
    }
}

// ---- the user's homeserver: asking the origin -------------------------------------------------

/// Joins `who` to a room of another homeserver: asks its origin (which applies every rule), then
/// stores or refreshes the replica and catches it up. Returns the replica's room row.
pub async fn join_remote(
    state: &AppState,
    room_id: &RoomId,
    who: &Identity,
    invite_token: Option<&str>,
) -> Result<Room, ApiError> {
    if !state.settings.federation.enabled {
        return Err(ApiError::new(
            ErrorCode::RoomNotFound,
            "that room lives on another homeserver, and federation is disabled here",
        ));
    }
    let origin = room_id.server_name();
    let since = {
        let mut db = confab_schema::connect(&state.pool).await?;
        queries::room(&mut db, room_id.as_str())
            .await?
            .map_or(0, |r| r.last_seq)
    };
    let body = serde_json::to_value(JoinRequest {
        user_id: who.user_id.clone(),
        display_name: who.display_name.clone(),
        invite_token: invite_token.map(str::to_owned),
        since,
    })
    .unwrap_or_default();
    let path = format!("{PATH}/rooms/{room_id}/join");
    let room_state: RoomState = call(
        &state.federation.client,
        origin,
        Method::POST,
        &path,
        Some(&body),
    )
    .await?;
    if room_state.room_id != room_id.as_str() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("{origin} answered for another room"),
        ));
    }
    store_replica(state, origin, room_state).await?;
    catch_up_replica(state, room_id).await?;
    let mut db = confab_schema::connect(&state.pool).await?;
    queries::room(&mut db, room_id.as_str())
        .await?
        .ok_or_else(ApiError::room_not_found)
}

/// Writes the origin's state of a room into the replica, then fans out what was new.
async fn store_replica(
    state: &AppState,
    origin: &ServerName,
    room_state: RoomState,
) -> Result<(), ApiError> {
    let now = now_ms();
    let idle = i64::try_from(state.settings.rooms.idle_ttl.as_millis()).unwrap_or(i64::MAX);
    let room_id = room_state.room_id.clone();
    let row = Room {
        room_id: room_id.clone(),
        origin: origin.to_string(),
        host_user_id: room_state.host_user_id.clone(),
        locked: room_state.locked,
        created_ts: room_state.created_ts,
        last_seq: 0,
        expires_ts: Some(now.saturating_add(idle)),
    };
    let events: Vec<Event> = room_state
        .events
        .into_iter()
        .map(|e| e.into_event(&room_id))
        .collect();
    let mut db = confab_schema::connect(&state.pool).await?;
    let effects = db
        .transaction(async |db| {
            // A replica that already has newer events than this answer (PDUs overtook it) has
            // newer state too: only the events are taken from the answer then.
            let newer_here = queries::room_for_update(db, &room_id)
                .await?
                .is_some_and(|r| r.last_seq > room_state.latest_seq);
            if newer_here {
                let (_, effects) = apply_events(db, state, &room_id, events).await?;
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
            let (_, effects) = apply_events(db, state, &room_id, events).await?;
            Ok(effects)
        })
        .await?;
    drop(db);
    run_effects(state, effects).await;
    Ok(())
}

/// Reads the events a replica is missing from the room's origin, page by page, until it has
/// them all.
async fn catch_up_replica(state: &AppState, room_id: &RoomId) -> Result<(), ApiError> {
    loop {
        let since = {
            let mut db = confab_schema::connect(&state.pool).await?;
            match queries::room(&mut db, room_id.as_str()).await? {
                Some(room) => room.last_seq,
                None => return Ok(()),
            }
        };
        let page = fetch_events(&state.federation.client, room_id, since).await?;
        if page.events.is_empty() {
            return Ok(());
        }
        let events = page
            .events
            .into_iter()
            .map(|e| e.into_event(room_id.as_str()))
            .collect();
        let mut db = confab_schema::connect(&state.pool).await?;
        let (applied, effects) = db
            .transaction(async |db| apply_events(db, state, room_id.as_str(), events).await)
            .await?;
        drop(db);
        run_effects(state, effects).await;
        if applied == 0 {
            // The origin sent nothing that fits after `since`: stop rather than ask forever.
            return Ok(());
        }
    }
}

async fn fetch_events(
    client: &FederationClient,
    room_id: &RoomId,
    since: i64,
) -> Result<EventsPage, ApiError> {
    let path = format!("{PATH}/rooms/{room_id}/events?since={since}");
    call(client, room_id.server_name(), Method::GET, &path, None).await
}

/// Tells a room's origin that `who` left; the origin's membership event follows as a PDU.
pub async fn leave_remote(
    state: &AppState,
    room_id: &RoomId,
    who: &Identity,
) -> Result<(), ApiError> {
    let body = serde_json::to_value(LeaveRequest {
        user_id: who.user_id.clone(),
        device_id: who.device_id.clone(),
    })
    .unwrap_or_default();
    let path = format!("{PATH}/rooms/{room_id}/leave");
    let _: Value = call(
        &state.federation.client,
        room_id.server_name(),
        Method::POST,
        &path,
        Some(&body),
    )
    .await?;
    Ok(())
}

/// Announces a device that subscribed to a replica to the room's origin, and takes the origin's
/// list of who is connected.
pub async fn announce(state: &AppState, room_id: &RoomId, who: &Identity) -> Result<(), ApiError> {
    let body = serde_json::to_value(PresenceRequest {
        user_id: who.user_id.clone(),
        device_id: who.device_id.clone(),
        display_name: who.display_name.clone(),
        online: true,
    })
    .unwrap_or_default();
    let path = format!("{PATH}/rooms/{room_id}/presence");
    let answer: ConnectedResponse = call(
        &state.federation.client,
        room_id.server_name(),
        Method::POST,
        &path,
        Some(&body),
    )
    .await?;
    state.hub.set_remote_devices(
        room_id.as_str(),
        &answer.connected,
        state.settings.server.name.as_str(),
    );
    Ok(())
}

/// Keeps the lists of devices connected through other servers true both ways, every third of
/// `federation.presence_lease`: the origin takes off remote devices not confirmed within the
/// lease, and a replica confirms each of its own connected devices to the origin (whose answer
/// also refreshes the replica's list of everyone else). Ends when the server's state is gone.
pub async fn presence_lease(state: std::sync::Weak<AppState>, lease: std::time::Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        state.hub.expire_remote_devices(lease).await;
        let confirmations = state
            .hub
            .replica_devices()
            .into_iter()
            .filter_map(|(room, who)| Some((RoomId::parse(&room).ok()?, who)))
            .map(|(room_id, who)| {
                let state = state.clone();
                async move {
                    if let Err(err) = announce(&state, &room_id, &who).await {
                        // The origin may be down; the next round tries again.
                        tracing::debug!(room = %room_id, user = %who.user_id, error = %err.reason, "device not confirmed to the origin");
                    }
                }
            });
        // Concurrently: one unreachable origin must not hold back the others past the lease.
        futures_util::future::join_all(confirmations).await;
    }
}

struct Forward {
    item: SendItem,
    reply: oneshot::Sender<Result<(i64, i64), ApiError>>,
}

/// Forwards chat of this server's users to the origins of their rooms: one task per origin
/// takes what is waiting, up to [`MAX_SEND_BATCH`], and sends it in one request, so messages
/// reach the origin in the order they were sent and a busy room costs few requests.
#[derive(Default)]
pub struct ChatForwarder {
    queues: Mutex<HashMap<ServerName, mpsc::Sender<Forward>>>,
}

impl std::fmt::Debug for ChatForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatForwarder").finish_non_exhaustive()
    }
}

impl ChatForwarder {
    /// Queues a message for its room's origin; the receiver gets its number and time once the
    /// origin committed it, or why not. Calls made in order are sent in order.
    pub async fn forward(
        &self,
        client: &FederationClient,
        origin: &ServerName,
        item: SendItem,
    ) -> oneshot::Receiver<Result<(i64, i64), ApiError>> {
        let (reply, rx) = oneshot::channel();
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .entry(origin.clone())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
                    tokio::spawn(run_forwarder(client.clone(), origin.clone(), rx));
                    tx
                })
                .clone()
        };
        if let Err(mpsc::error::SendError(lost)) = queue.send(Forward { item, reply }).await {
            let _ = lost.reply.send(Err(ApiError::internal(
                "chat forwarder",
                &"forwarder stopped",
            )));
        }
        rx
    }
}

async fn run_forwarder(
    client: FederationClient,
    origin: ServerName,
    mut rx: mpsc::Receiver<Forward>,
) {
    let mut batch = Vec::with_capacity(MAX_SEND_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_SEND_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let body = serde_json::to_value(SendRequest {
            events: batch.iter().map(|f| f.item.clone()).collect(),
        })
        .unwrap_or_default();
        let path = format!("{PATH}/send_chat");
        match call::<SendResponse>(&client, &origin, Method::POST, &path, Some(&body)).await {
            Ok(answer) if answer.results.len() == batch.len() => {
                for (f, r) in batch.drain(..).zip(answer.results) {
                    let result = match (r.seq, r.ts, r.code) {
                        (Some(seq), Some(ts), None) => Ok((seq, ts)),
                        (_, _, code) => Err(ApiError::new(
                            code.unwrap_or(ErrorCode::Unavailable),
                            r.reason
                                .unwrap_or_else(|| "refused by the room's homeserver".into()),
                        )),
                    };
                    let _ = f.reply.send(result);
                }
            }
            Ok(_) => {
                let err = ApiError::new(
                    ErrorCode::Unavailable,
                    format!("{origin} answered for a different number of messages"),
                );
                for f in batch.drain(..) {
                    let _ = f.reply.send(Err(err.clone()));
                }
            }
            Err(err) => {
                for f in batch.drain(..) {
                    let _ = f.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

// ---- the origin's side: requests from other servers ------------------------------------------

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
        state.join_core(
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

async fn room_state(state: &AppState, room_id: &str, since: i64) -> Result<RoomState, ApiError> {
    let mut db = confab_schema::connect(&state.pool).await?;
    let room = queries::room(&mut db, room_id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    let members = queries::members(&mut db, room_id).await?;
    let events = events_page(&mut db, room_id, since).await?;
    Ok(RoomState {
        room_id: room.room_id,
        host_user_id: room.host_user_id,
        locked: room.locked,
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
        connected: state.hub.connected_devices(room_id),
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
        .change_membership(room_id.as_str(), &who, &who.user_id, membership::LEFT)
        .await?;
    state
        .hub
        .remove_member(room_id.as_str(), &who.user_id)
        .await;
    Ok(HttpResponse::Ok().json(json!({})))
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
    if p.online {
        let mut db = confab_schema::connect(&state.pool).await?;
        let joined = queries::member(&mut db, room_id.as_str(), user.as_str())
            .await?
            .is_some_and(|m| m.membership == membership::JOINED);
        if !joined {
            return Err(ApiError::new(
                ErrorCode::NotMember,
                "that user is not a member of this room",
            )
            .into());
        }
    }
    if p.device_id.is_empty() || p.device_id.len() > 64 {
        return Err(ApiError::bad_request("device_id must have 1 to 64 bytes").into());
    }
    let device = ConnectedDevice {
        user_id: user.to_string(),
        device_id: p.device_id,
        display_name: crate::sessions::validate_display_name(&p.display_name)?,
    };
    let connected = state
        .hub
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
    // Membership is read once per room and sender.
    let mut members: HashMap<(String, String), bool> = HashMap::new();
    let mut pending = Vec::with_capacity(send.events.len());
    for item in send.events {
        let checked = check_forwarded(&state, &request.origin, &item, &mut members).await;
        match checked {
            Ok(event) => pending.push(Ok(state.writer.enqueue(&item.room_id, event).await)),
            Err(err) => pending.push(Err(err)),
        }
    }
    let mut results = Vec::with_capacity(pending.len());
    for p in pending {
        let outcome = match p {
            Ok(waiting) => waiting.await,
            Err(err) => Err(err),
        };
        results.push(match outcome {
            Ok(event) => SendResult {
                seq: Some(event.seq),
                ts: Some(event.origin_ts),
                ..SendResult::default()
            },
            Err(err) => SendResult {
                code: Some(err.code),
                reason: Some(err.reason),
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
    let content = crate::protocol::checked_chat_content(
        &item.kind,
        &item.ciphertext,
        state.settings.limits.max_event_bytes,
    )?;
    let key = (room_id.to_string(), user.to_string());
    let joined = match members.get(&key) {
        Some(joined) => *joined,
        None => {
            let mut db = confab_schema::connect(&state.pool).await?;
            let joined = queries::member(&mut db, room_id.as_str(), user.as_str())
                .await?
                .is_some_and(|m| m.membership == membership::JOINED);
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

// ---- the replica's side: applying what the origin sends ---------------------------------------

/// What to do once a replica's changes committed.
enum Effect {
    Publish(String, Vec<Event>),
    Kick(String, String),
    Leave(String, String),
    Close(String, CloseReason),
    Edu(ServerName, Edu),
}

async fn run_effects(state: &AppState, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Publish(room_id, events) => state.hub.publish(&room_id, &events).await,
            Effect::Kick(room_id, user) => state.hub.kick(&room_id, &user).await,
            Effect::Leave(room_id, user) => state.hub.remove_member(&room_id, &user).await,
            Effect::Close(room_id, reason) => state.hub.close(&room_id, reason),
            Effect::Edu(origin, edu) => handle_edu(state, &origin, &edu).await,
        }
    }
}

/// Applies events of the origin to a replica, in the caller's transaction, in order: a repeat
/// is skipped, a gap ends the run (the caller fills it). Returns how many were new and what to
/// do after the commit.
async fn apply_events(
    db: &mut AsyncPgConnection,
    state: &AppState,
    room_id: &str,
    events: Vec<Event>,
) -> Result<(usize, Vec<Effect>), DbError> {
    apply_room_events(db, state, vec![(room_id.to_owned(), events)]).await
}

/// [`apply_events`] for several rooms at once, with a fixed number of statements whatever the
/// number of rooms and events (state changes aside): one to lock the rooms, one to insert the
/// events, one to move the rooms' sequence numbers.
async fn apply_room_events(
    db: &mut AsyncPgConnection,
    state: &AppState,
    batches: Vec<(String, Vec<Event>)>,
) -> Result<(usize, Vec<Effect>), DbError> {
    let mut ids: Vec<&str> = batches.iter().map(|(r, _)| r.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rooms = queries::rooms_for_update(db, &ids).await?;
    let ours = state.settings.server.name.as_str();
    let mut total = 0;
    let mut all_applied = Vec::new();
    let mut newest = Vec::new();
    let mut effects = Vec::new();
    for (room_id, events) in batches {
        let Some(room) = rooms.iter().find(|r| r.room_id == room_id) else {
            continue;
        };
        let (applied, mut room_effects) = apply_to_room(db, room, ours, events).await?;
        let Some(last) = applied.last().map(|e| e.seq) else {
            continue;
        };
        total += applied.len();
        newest.push((room_id.clone(), last));
        all_applied.extend(applied.iter().cloned());
        // Publish before the membership effects, so a kicked user's sockets see the event first.
        effects.push(Effect::Publish(room_id.clone(), applied));
        let someone_went = room_effects
            .iter()
            .any(|e| matches!(e, Effect::Kick(..) | Effect::Leave(..)));
        effects.append(&mut room_effects);
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

/// The events of one locked replica room that follow on from its newest, with their state
/// changes (membership, lock) written and their effects listed.
async fn apply_to_room(
    db: &mut AsyncPgConnection,
    room: &Room,
    ours: &str,
    events: Vec<Event>,
) -> Result<(Vec<Event>, Vec<Effect>), DbError> {
    let room_id = room.room_id.as_str();
    let mut last = room.last_seq;
    let mut applied = Vec::new();
    let mut effects = Vec::new();
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
                    if local && m == membership::KICKED {
                        effects.push(Effect::Kick(room_id.to_owned(), user.to_owned()));
                    } else if local && m == membership::LEFT {
                        effects.push(Effect::Leave(room_id.to_owned(), user.to_owned()));
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
            _ => {}
        }
        applied.push(event);
    }
    Ok((applied, effects))
}

/// Handles received transactions: the room PDUs of origins, and the EDUs of federated rooms.
/// Every item is also passed to the [`super::inbox::FederationInbox`] for observers.
pub struct RoomsHandler {
    /// The server's context.
    pub state: Arc<AppState>,
}

impl TransactionHandler for RoomsHandler {
    fn handle<'a>(
        &'a self,
        db: &'a mut AsyncPgConnection,
        origin: &'a ServerName,
        transaction: &'a Transaction,
    ) -> BoxFuture<'a, Result<Handled, DbError>> {
        Box::pin(async move {
            let mut response = TransactionResponse::default();
            let mut effects = Vec::new();
            self.handle_pdus(db, origin, &transaction.pdus, &mut response, &mut effects)
                .await?;
            for edu in &transaction.edus {
                effects.push(Effect::Edu(origin.clone(), edu.clone()));
            }
            let state = self.state.clone();
            let inbox = state.federation_inbox.clone();
            let origin = origin.clone();
            let items: Vec<Inbound> = transaction
                .pdus
                .iter()
                .map(|pdu| Inbound::Pdu {
                    origin: origin.clone(),
                    pdu: pdu.clone(),
                })
                .chain(transaction.edus.iter().map(|edu| Inbound::Edu {
                    origin: origin.clone(),
                    edu: edu.clone(),
                }))
                .collect();
            Ok(Handled {
                response,
                after_commit: Some(Box::pin(async move {
                    run_effects(&state, effects).await;
                    inbox.publish(items);
                })),
            })
        })
    }
}

impl RoomsHandler {
    /// Applies the room PDUs of a transaction: each room's events together (one lock, one
    /// insert), rooms in the order they first appear, deletions last. Refusals are per PDU.
    async fn handle_pdus(
        &self,
        db: &mut AsyncPgConnection,
        origin: &ServerName,
        pdus: &[Pdu],
        response: &mut TransactionResponse,
        effects: &mut Vec<Effect>,
    ) -> Result<(), DbError> {
        let refuse = |why: &str| PduResult {
            error: Some(why.to_owned()),
        };
        let mut rooms: Vec<(RoomId, Vec<(String, Event)>)> = Vec::new();
        let mut deletions = Vec::new();
        for pdu in pdus {
            let result = if pdu.event_type != EVENT_PDU && pdu.event_type != DELETED_PDU {
                // Not ours to interpret; accepted so that the sender does not retry it.
                PduResult::default()
            } else if let Ok(room_id) = RoomId::parse(&pdu.room_id) {
                if room_id.server_name() != origin {
                    refuse("only a room's origin sends its events")
                } else if pdu.event_type == DELETED_PDU {
                    let reason = match pdu.rest.get("reason").and_then(Value::as_str) {
                        Some("expired") => CloseReason::Expired,
                        _ => CloseReason::Closed,
                    };
                    deletions.push((room_id, reason));
                    PduResult::default()
                } else if let Some(event) = pdu
                    .rest
                    .get("event")
                    .and_then(|e| WireEvent::deserialize(e).ok())
                {
                    let event = event.into_event(room_id.as_str());
                    match rooms.iter_mut().find(|(r, _)| r == &room_id) {
                        Some((_, events)) => events.push((pdu.event_id.clone(), event)),
                        None => rooms.push((room_id, vec![(pdu.event_id.clone(), event)])),
                    }
                    PduResult::default()
                } else {
                    refuse("no event in the PDU")
                }
            } else {
                refuse("bad room id")
            };
            response.pdus.insert(pdu.event_id.clone(), result);
        }
        let ids: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
        let replicas = queries::rooms_by_ids(db, &ids).await?;
        let mut batches = Vec::with_capacity(rooms.len());
        for (room_id, events) in rooms {
            let Some(room) = replicas.iter().find(|r| r.room_id == room_id.as_str()) else {
                // No replica here (never joined, or expired here): nothing to update.
                continue;
            };
            if room.origin != origin.as_str() {
                for (event_id, _) in &events {
                    response.pdus.insert(
                        event_id.clone(),
                        refuse("this room has another origin here"),
                    );
                }
                continue;
            }
            let mut events: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
            events.sort_by_key(|e| e.seq);
            let first = events.first().map_or(0, |e| e.seq);
            if first > room.last_seq + 1 {
                // Events went missing here (a replica rebuilt, an answer lost): read them from
                // the origin first, so that the replica's log never has a hole.
                // If that fails the whole transaction fails (and is retried), rather than
                // acknowledging events this replica could not place.
                let mut missing = fetch_missing(
                    &self.state.federation.client,
                    &room_id,
                    room.last_seq,
                    first,
                )
                .await
                .map_err(|e| {
                    DbError::Unavailable(format!("cannot fill a gap in {room_id}: {e}"))
                })?;
                missing.append(&mut events);
                events = missing;
            }
            batches.push((room_id.to_string(), events));
        }
        let (_, more) = apply_room_events(db, &self.state, batches).await?;
        effects.extend(more);
        for (room_id, reason) in deletions {
            let ours = queries::room(db, room_id.as_str())
                .await?
                .is_some_and(|r| r.origin == origin.as_str());
            if ours {
                queries::delete_room(db, room_id.as_str()).await?;
                effects.push(Effect::Close(room_id.to_string(), reason));
            }
        }
        Ok(())
    }
}

/// Pages read to fill one gap, at most; a longer gap is filled over the next transactions.
const MAX_GAP_PAGES: usize = 4;

/// The events after `since` and before `until`, from the room's origin, at most
/// [`MAX_GAP_PAGES`] pages of them.
async fn fetch_missing(
    client: &FederationClient,
    room_id: &RoomId,
    mut since: i64,
    until: i64,
) -> Result<Vec<Event>, ApiError> {
    let mut out = Vec::new();
    let mut pages = 0;
    while since.saturating_add(1) < until && pages < MAX_GAP_PAGES {
        pages += 1;
        let page = fetch_events(client, room_id, since).await?;
        let Some(last) = page.events.last().map(|e| e.seq) else {
            break;
        };
        out.extend(
            page.events
                .into_iter()
                .filter(|e| e.seq < until)
                .map(|e| e.into_event(room_id.as_str())),
        );
        if last <= since {
            break;
        }
        since = last;
    }
    Ok(out)
}

#[derive(Deserialize)]
struct PresenceEdu {
    room_id: String,
    user_id: String,
    device_id: String,
    display_name: String,
    online: bool,
}

#[derive(Deserialize)]
struct TypingEdu {
    room_id: String,
    user_id: String,
    device_id: String,
    typing: bool,
}

#[derive(Deserialize)]
struct DeviceEdu {
    user_id: String,
    device_id: String,
}

#[derive(Deserialize)]
struct SignalEdu {
    room_id: String,
    from: DeviceEdu,
    to: DeviceEdu,
    payload: String,
}

/// Whether `origin` may tell us about `user_id` in `room_id`: a server speaks for its own
/// users, and a room's origin for everyone in it.
/// Whether any identifier or name in an EDU is longer than any this server would accept.
fn too_long(fields: &[&str]) -> bool {
    fields.iter().any(|f| f.len() > 255)
}

fn may_speak(origin: &ServerName, room_id: &str, user_id: &str) -> bool {
    let room_server = RoomId::parse(room_id).ok();
    let user_server = user_id.split_once(':').map(|(_, s)| s);
    user_server == Some(origin.as_str()) || room_server.is_some_and(|r| r.server_name() == origin)
}

async fn handle_edu(state: &AppState, origin: &ServerName, edu: &Edu) {
    let limit = state.settings.limits.max_event_bytes;
    match edu.edu_type.as_str() {
        edu::PRESENCE => {
            let Ok(p) = PresenceEdu::deserialize(&edu.content) else {
                return;
            };
            if !may_speak(origin, &p.room_id, &p.user_id)
                || too_long(&[&p.device_id, &p.display_name])
            {
                return;
            }
            // A device comes online through the signed, membership-checked presence request,
            // never an EDU: an origin takes only departures by EDU, a replica only its origin's
            // news.
            let room_is_ours = RoomId::parse(&p.room_id)
                .is_ok_and(|r| r.server_name() == &state.settings.server.name);
            let from_origin = RoomId::parse(&p.room_id).is_ok_and(|r| r.server_name() == origin);
            if (room_is_ours && p.online) || (!room_is_ours && !from_origin) {
                return;
            }
            let device = ConnectedDevice {
                user_id: p.user_id,
                device_id: p.device_id,
                display_name: p.display_name,
            };
            if let Err(err) = state
                .hub
                .remote_presence(&p.room_id, origin.as_str(), &device, p.online, false)
                .await
            {
                tracing::debug!(error = %err, "presence for a room not here");
            }
        }
        edu::TYPING => {
            let Ok(t) = TypingEdu::deserialize(&edu.content) else {
                return;
            };
            if may_speak(origin, &t.room_id, &t.user_id) {
                state.hub.remote_typing(
                    &t.room_id,
                    origin.as_str(),
                    &t.user_id,
                    &t.device_id,
                    t.typing,
                );
            }
        }
        edu::SIGNAL => {
            let Ok(s) = SignalEdu::deserialize(&edu.content) else {
                return;
            };
            if !may_speak(origin, &s.room_id, &s.from.user_id) || s.payload.len() > limit {
                return;
            }
            let from = DeviceRef {
                user_id: s.from.user_id.as_str().into(),
                device_id: s.from.device_id.as_str().into(),
            };
            state.hub.remote_signal(
                &s.room_id,
                origin.as_str(),
                &from,
                &s.to.user_id,
                &s.to.device_id,
                &s.payload,
            );
        }
        _ => {}
    }
}
