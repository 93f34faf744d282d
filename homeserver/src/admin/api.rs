//! The admin API's wire types and thin handlers (parse → call → respond). Every route sits behind
//! [`super::gate`]; admin actions reuse the room layer's unchecked seams (`kick_as`,
//! `set_locked_as`, `delete_room`) and the schema queries, acting as [`super::admin_identity`].
//!
//! Routes, under [`super::PREFIX`], all answering JSON:
//! `GET /rooms`, `GET|DELETE /rooms/{room_id}`, `POST /rooms/{room_id}/lock|unlock`,
//! `GET|POST /rooms/{room_id}/invites`, `DELETE /invites/{invite_id}`,
//! `POST /rooms/{room_id}/kick/{user_id}`, `GET /sessions`, `GET /federation/peers`,
//! `POST /federation/peers/{server}/deny|allow|retry`, `GET /keys`, `POST /keys/rotate`,
//! `GET /stats`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use confab_federation::ids::{RoomId, ServerName, UserId};
use confab_federation::policy::PolicyError;
use confab_schema::models::{AclOverride, Invite, Room, membership};
use confab_schema::queries;
use serde::{Deserialize, Serialize};

use crate::engine::CloseReason;
use crate::error::{ApiError, ErrorCode};
use crate::federation::identity::{PUBLISHED_VALIDITY_MS, ServerIdentity};
use crate::rooms::{InviteOptions, InviteOut};
use crate::sessions::{hash_token, new_token};
use crate::state::AppState;
use crate::time::now_ms;

type Data = web::Data<AppState>;
type ApiResult = Result<HttpResponse, ApiError>;

/// Registers the admin routes (the caller wraps them in [`super::gate`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/rooms", web::get().to(list_rooms))
        .route("/rooms/{room_id}", web::get().to(show_room))
        .route("/rooms/{room_id}", web::delete().to(close_room))
        .route("/rooms/{room_id}/lock", web::post().to(lock))
        .route("/rooms/{room_id}/unlock", web::post().to(unlock))
        .route("/rooms/{room_id}/invites", web::get().to(list_invites))
        .route("/rooms/{room_id}/invites", web::post().to(create_invite))
        .route("/rooms/{room_id}/kick/{user_id}", web::post().to(kick))
        .route("/invites/{invite_id}", web::delete().to(revoke_invite))
        .route("/sessions", web::get().to(sessions))
        .route("/federation/peers", web::get().to(peers))
        .route("/federation/peers/{server}/deny", web::post().to(deny))
        .route("/federation/peers/{server}/allow", web::post().to(allow))
        .route("/federation/peers/{server}/retry", web::post().to(retry))
        .route("/keys", web::get().to(keys))
        .route("/keys/rotate", web::post().to(rotate_key))
        .route("/stats", web::get().to(stats))
        .default_service(web::to(not_found));
}

// ---- wire types --------------------------------------------------------------------------

/// A room as the room list shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomRow {
    pub room_id: String,
    pub origin: String,
    pub host: String,
    pub locked: bool,
    pub created_ts: i64,
    /// When it will be deleted, if nobody is connected.
    pub expires_ts: Option<i64>,
    /// Distinct users with a live connection to the room.
    pub connected: usize,
    /// Members whose membership is `joined`.
    pub joined: usize,
}

/// A member with their live devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberRow {
    pub user_id: String,
    pub display_name: String,
    /// `host`, `cohost` or `guest`.
    pub role: String,
    pub membership: String,
    /// The server in the user id: where the user's session lives.
    pub home_server: String,
    /// Devices connected to the room now.
    pub devices: Vec<String>,
}

/// What happened in a room, without any content.
#[derive(Debug, Serialize, Deserialize)]
pub struct Activity {
    pub events: i64,
    pub latest_seq: i64,
    pub last_event_ts: Option<i64>,
    /// `chat`, `member` or `lock`; chat stays ciphertext and is never read.
    pub last_event_type: Option<String>,
}

/// `GET /rooms/{room_id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomDetail {
    pub room: RoomRow,
    pub members: Vec<MemberRow>,
    /// Without tokens, which are stored hashed anyway.
    pub invites: Vec<InviteOut>,
    pub activity: Activity,
}

/// A new invite and the link to hand out.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedInvite {
    #[serde(flatten)]
    pub invite: InviteOut,
    /// `<public_url>/#/join/<room>/<token>`, the web client's link without the E2EE secret.
    pub link: String,
}

/// A connected device.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionRow {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
    pub rooms: Vec<String>,
}

/// How federation with one server is going.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerRow {
    pub server: String,
    /// Persistent events waiting for it.
    pub queued: i64,
    /// Failed transactions in a row.
    pub failures: i32,
    pub retry_after_ts: Option<i64>,
    pub last_success_ts: Option<i64>,
    pub last_failure_ts: Option<i64>,
    /// Whether the sender waits before the next attempt.
    pub backing_off: bool,
    /// When its current run of failures began, if it is failing.
    #[serde(default)]
    pub failing_since_ts: Option<i64>,
    /// Whether it was given up (`federation.give_up_after`): nothing is queued for it until it
    /// is back.
    #[serde(default)]
    pub given_up: bool,
    /// When it was given up.
    #[serde(default)]
    pub given_up_ts: Option<i64>,
    /// Persistent events dropped for it, in total (at give-up and while given up).
    #[serde(default)]
    pub dropped: i64,
    /// `allowed`, `denied` or `not on the allow list`.
    pub federation: String,
    /// An admin's decision (`allow` or `deny`), if one was made.
    pub admin_override: Option<String>,
}

/// One of this server's signing keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyRow {
    pub key_id: String,
    pub public_key: String,
    /// For retired keys: when they stopped being used.
    pub expired_ts: Option<u64>,
}

/// `GET /keys`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeysOut {
    pub server_name: String,
    /// The key the running server signs with.
    pub current: KeyRow,
    /// What the key document published now says.
    pub valid_until_ts: u64,
    pub old_keys: Vec<KeyRow>,
    /// A key rotated in on disk that the running server will use after a restart.
    pub pending_key_id: Option<String>,
}

/// One figure of `/metrics`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

// ---- rooms -------------------------------------------------------------------------------

fn parse_room_id(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::new(ErrorCode::BadRoomId, format!("room id: {e}")))
}

async fn require_room(state: &AppState, room_id: &str) -> Result<Room, ApiError> {
    let room_id = parse_room_id(room_id)?;
    let mut db = confab_schema::connect(&state.pool).await?;
    queries::room(&mut db, room_id.as_str())
        .await?
        .ok_or_else(ApiError::room_not_found)
}

async fn room_row(state: &AppState, room: &Room) -> Result<RoomRow, ApiError> {
    let mut db = confab_schema::connect(&state.pool).await?;
    let members = queries::members(&mut db, &room.room_id).await?;
    Ok(RoomRow {
        room_id: room.room_id.clone(),
        origin: room.origin.clone(),
        host: room.host_user_id.clone(),
        locked: room.locked,
        created_ts: room.created_ts,
        expires_ts: room.expires_ts,
        connected: state.engine.connected_users(&room.room_id),
        joined: members
            .iter()
            .filter(|m| m.membership == membership::JOINED)
            .count(),
    })
}

fn invite_out(invite: &Invite, token: Option<String>) -> InviteOut {
    InviteOut {
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

async fn list_rooms(state: Data) -> ApiResult {
    let rooms = {
        let mut db = confab_schema::connect(&state.pool).await?;
        queries::all_rooms(&mut db).await?
    };
    let mut out = Vec::with_capacity(rooms.len());
    for room in &rooms {
        out.push(room_row(&state, room).await?);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "rooms": out })))
}

async fn show_room(state: Data, path: web::Path<String>) -> ApiResult {
    let room = require_room(&state, &path).await?;
    let row = room_row(&state, &room).await?;
    let mut db = confab_schema::connect(&state.pool).await?;
    let members = queries::members(&mut db, &room.room_id).await?;
    let invites = queries::invites_of_room(&mut db, &room.room_id).await?;
    let (events, last) = queries::room_activity(&mut db, &room.room_id).await?;
    drop(db);
    let mut devices: HashMap<String, Vec<String>> = HashMap::new();
    for device in state.engine.connected_devices(&room.room_id) {
        devices
            .entry(device.user_id)
            .or_default()
            .push(device.device_id);
    }
    let members = members
        .into_iter()
        .map(|m| MemberRow {
            role: if m.user_id == room.host_user_id {
                crate::protocol::role::HOST
            } else if m.is_host && m.membership == membership::JOINED {
                crate::protocol::role::COHOST
            } else {
                crate::protocol::role::GUEST
            }
            .to_owned(),
            home_server: m
                .user_id
                .split_once(':')
                .map_or_else(String::new, |(_, server)| server.to_owned()),
            devices: devices.remove(&m.user_id).unwrap_or_default(),
            user_id: m.user_id,
            display_name: m.display_name,
            membership: m.membership,
        })
        .collect();
    let detail = RoomDetail {
        room: row,
        members,
        invites: invites.iter().map(|i| invite_out(i, None)).collect(),
        activity: Activity {
            events,
            latest_seq: room.last_seq,
            last_event_ts: last.as_ref().map(|e| e.origin_ts),
            last_event_type: last.as_ref().and_then(|e| {
                e.content
                    .get("type")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            }),
        },
    };
    Ok(HttpResponse::Ok().json(detail))
}

async fn set_locked(state: Data, room_id: &str, locked: bool) -> ApiResult {
    let room_id = parse_room_id(room_id)?;
    let admin = super::admin_identity(&state);
    let room = state
        .rooms
        .set_locked_as(room_id.as_str(), &admin, locked)
        .await?;
    Ok(HttpResponse::Ok().json(room_row(&state, &room).await?))
}

async fn lock(state: Data, path: web::Path<String>) -> ApiResult {
    set_locked(state, &path, true).await
}

async fn unlock(state: Data, path: web::Path<String>) -> ApiResult {
    set_locked(state, &path, false).await
}

async fn close_room(state: Data, path: web::Path<String>) -> ApiResult {
    let room_id = parse_room_id(&path)?;
    state
        .rooms
        .delete_room(room_id.as_str(), CloseReason::Closed)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "room_id": room_id, "closed": true })))
}

async fn kick(state: Data, path: web::Path<(String, String)>) -> ApiResult {
    let (room_id, user_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    UserId::parse(&user_id)
        .map_err(|e| ApiError::new(ErrorCode::BadUserId, format!("user id: {e}")))?;
    let admin = super::admin_identity(&state);
    let kicked = state
        .rooms
        .kick_as(room_id.as_str(), &admin, &user_id)
        .await?;
    Ok(HttpResponse::Ok().json(kicked))
}

// ---- invites -----------------------------------------------------------------------------

/// `encodeURIComponent`, as the web client encodes link parts (`web-client/src/state/links.ts`).
fn encode_uri_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The web client's invite link without the E2EE secret, which only the host's browser knows:
/// people who open it are asked for the room's passphrase.
pub fn invite_link(public_url: &str, room_id: &str, token: &str) -> String {
    format!(
        "{}/#/join/{}/{}",
        public_url.trim_end_matches('/'),
        encode_uri_component(room_id),
        encode_uri_component(token)
    )
}

async fn create_invite(
    state: Data,
    path: web::Path<String>,
    req: actix_web::HttpRequest,
    body: crate::extract::JsonResult<InviteOptions>,
) -> ApiResult {
    let options = crate::extract::optional_body(&req, body)?.unwrap_or_default();
    if options.max_uses == Some(0) {
        return Err(ApiError::bad_request("max_uses must be at least 1"));
    }
    let expires_in = options.expires_in_secs.map(Duration::from_secs);
    if expires_in.is_some_and(|d| d.is_zero() || d > Duration::from_secs(366 * 86400)) {
        return Err(ApiError::bad_request(
            "expires_in_secs must be between 1 and a year",
        ));
    }
    let room = require_room(&state, &path).await?;
    if room.origin != state.settings.server.name.as_str() {
        return Err(ApiError::bad_request(
            "that room's invites are kept by its origin server; ask its admin",
        ));
    }
    let admin = super::admin_identity(&state);
    let now = now_ms();
    let token = new_token();
    let invite = Invite {
        invite_id: confab_federation::ids::random_alphanumeric(12),
        room_id: room.room_id.clone(),
        token_hash: hash_token(&token),
        created_by: admin.user_id,
        created_ts: now,
        expires_ts: expires_in.map(|d| now.saturating_add(d.as_millis() as i64)),
        max_uses: options
            .max_uses
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        uses: 0,
        revoked_ts: None,
    };
    let mut db = confab_schema::connect(&state.pool).await?;
    queries::insert_invite(&mut db, &invite).await?;
    let link = invite_link(&state.settings.server.public_url, &room.room_id, &token);
    Ok(HttpResponse::Created().json(CreatedInvite {
        invite: invite_out(&invite, Some(token)),
        link,
    }))
}

async fn list_invites(state: Data, path: web::Path<String>) -> ApiResult {
    let room = require_room(&state, &path).await?;
    let mut db = confab_schema::connect(&state.pool).await?;
    let invites = queries::invites_of_room(&mut db, &room.room_id).await?;
    let invites: Vec<_> = invites.iter().map(|i| invite_out(i, None)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "invites": invites })))
}

async fn revoke_invite(state: Data, path: web::Path<String>) -> ApiResult {
    let mut db = confab_schema::connect(&state.pool).await?;
    let invite = queries::invite(&mut db, &path)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such invite"))?;
    queries::revoke_invite(&mut db, &invite.room_id, &invite.invite_id, now_ms()).await?;
    let invite = queries::invite(&mut db, &path)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such invite"))?;
    Ok(HttpResponse::Ok().json(invite_out(&invite, None)))
}

// ---- sessions ----------------------------------------------------------------------------

async fn sessions(state: Data) -> ApiResult {
    let rooms = {
        let mut db = confab_schema::connect(&state.pool).await?;
        queries::all_rooms(&mut db).await?
    };
    // Devices are known to the hub per room; gathered over every room, by user and device.
    let mut by_device: BTreeMap<(String, String), SessionRow> = BTreeMap::new();
    for room in &rooms {
        for device in state.engine.connected_devices(&room.room_id) {
            by_device
                .entry((device.user_id.clone(), device.device_id.clone()))
                .or_insert_with(|| SessionRow {
                    user_id: device.user_id,
                    device_id: device.device_id,
                    display_name: device.display_name,
                    rooms: Vec::new(),
                })
                .rooms
                .push(room.room_id.clone());
        }
    }
    let sessions: Vec<SessionRow> = by_device.into_values().collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": sessions })))
}

// ---- federation --------------------------------------------------------------------------

fn parse_server(raw: &str) -> Result<ServerName, ApiError> {
    ServerName::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("{raw:?} is not a server name: {e}")))
}

async fn peers(state: Data) -> ApiResult {
    let mut db = confab_schema::connect(&state.pool).await?;
    let states = queries::all_destination_states(&mut db).await?;
    let depths: HashMap<String, i64> = queries::outbound_depths(&mut db)
        .await?
        .into_iter()
        .collect();
    drop(db);
    let overrides: HashMap<String, bool> = state.federation.acl.overrides().into_iter().collect();
    let mut names: Vec<String> = states
        .iter()
        .map(|s| s.destination.clone())
        .chain(depths.keys().cloned())
        .chain(overrides.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    let states: HashMap<&str, _> = states.iter().map(|s| (s.destination.as_str(), s)).collect();
    let now = now_ms();
    let peers: Vec<PeerRow> = names
        .iter()
        .map(|name| {
            let st = states.get(name.as_str());
            let retry_after_ts = st.and_then(|s| s.retry_after_ts);
            let federation = match ServerName::parse(name) {
                Ok(server) => match state.federation.acl.check(&server) {
                    Ok(()) => "allowed",
                    Err(PolicyError::NotAllowed(_)) => "not on the allow list",
                    Err(_) => "denied",
                }
                .to_owned(),
                Err(_) => "invalid name".to_owned(),
            };
            PeerRow {
                server: name.clone(),
                queued: depths.get(name).copied().unwrap_or(0),
                failures: st.map_or(0, |s| s.failures),
                retry_after_ts,
                last_success_ts: st.and_then(|s| s.last_success_ts),
                last_failure_ts: st.and_then(|s| s.last_failure_ts),
                backing_off: retry_after_ts.is_some_and(|t| t > now),
                failing_since_ts: st.and_then(|s| s.failing_since_ts),
                given_up: st.is_some_and(|s| s.given_up_ts.is_some()),
                given_up_ts: st.and_then(|s| s.given_up_ts),
                dropped: st.map_or(0, |s| s.dropped_pdus),
                federation,
                admin_override: overrides
                    .get(name)
                    .map(|allowed| if *allowed { "allow" } else { "deny" }.to_owned()),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "peers": peers })))
}

async fn decide(state: Data, raw: &str, allowed: bool) -> ApiResult {
    let server = parse_server(raw)?;
    let name = server.as_str().to_ascii_lowercase();
    // Stored first: a decision the next start would forget must not take effect now.
    let mut db = confab_schema::connect(&state.pool).await?;
    queries::upsert_acl_override(
        &mut db,
        &AclOverride {
            server_name: name.clone(),
            allowed,
            updated_ts: now_ms(),
        },
    )
    .await?;
    drop(db);
    state.federation.acl.set_override(&name, allowed);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "server": name, "allowed": allowed })))
}

async fn deny(state: Data, path: web::Path<String>) -> ApiResult {
    decide(state, &path, false).await
}

async fn allow(state: Data, path: web::Path<String>) -> ApiResult {
    decide(state, &path, true).await
}

async fn retry(state: Data, path: web::Path<String>) -> ApiResult {
    let server = parse_server(&path)?;
    let known = state
        .federation_sender
        .retry_now(&server)
        .await
        .map_err(|e| ApiError::internal("federation retry", &e))?;
    if !known {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("nothing was ever sent to {server} and nothing is queued for it"),
        ));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "server": server, "retrying": true })))
}

// ---- keys --------------------------------------------------------------------------------

fn key_row(id: &str, public: String, expired_ts: Option<u64>) -> KeyRow {
    KeyRow {
        key_id: id.to_owned(),
        public_key: public,
        expired_ts,
    }
}

async fn on_disk_key_id(state: &AppState) -> Result<String, ApiError> {
    let (dir, name) = (
        state.settings.server.data_dir.clone(),
        state.settings.server.name.clone(),
    );
    let identity = tokio::task::spawn_blocking(move || ServerIdentity::load(&dir, name))
        .await
        .map_err(|e| ApiError::internal("key load", &e))?
        .map_err(|e| ApiError::internal("key load", &e))?;
    Ok(identity.key.key_id().to_string())
}

async fn keys(state: Data) -> ApiResult {
    let identity = &state.federation.identity;
    let current = identity.key.key_id().to_string();
    let on_disk = on_disk_key_id(&state).await?;
    Ok(HttpResponse::Ok().json(KeysOut {
        server_name: identity.server_name.to_string(),
        current: key_row(&current, identity.key.verify_key().to_base64(), None),
        valid_until_ts: crate::federation::now_ms().saturating_add(PUBLISHED_VALIDITY_MS),
        old_keys: identity
            .old_keys
            .iter()
            .map(|(id, old)| key_row(id.as_str(), old.key.to_base64(), Some(old.expired_ts)))
            .collect(),
        pending_key_id: (on_disk != current).then_some(on_disk),
    }))
}

/// Rotation writes the new key to the data directory; the running server keeps signing with the
/// key it loaded (other parts hold it for the process's life) until it restarts, which the answer
/// says.
async fn rotate_key(state: Data) -> ApiResult {
    let (dir, name) = (
        state.settings.server.data_dir.clone(),
        state.settings.server.name.clone(),
    );
    let now = crate::federation::now_ms();
    let identity = tokio::task::spawn_blocking(move || ServerIdentity::rotate(&dir, name, now))
        .await
        .map_err(|e| ApiError::internal("key rotation", &e))?
        .map_err(|e| ApiError::internal("key rotation", &e))?;
    tracing::info!(new_key_id = %identity.key.key_id(), "signing key rotated by an admin; used after a restart");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "new_key_id": identity.key.key_id().as_str(),
        "signing_key_id": state.federation.identity.key.key_id().as_str(),
        "restart_required": true,
    })))
}

// ---- stats -------------------------------------------------------------------------------

/// The figures of the Prometheus text format, without histogram buckets (sums and counts stay).
pub fn parse_metrics(text: &str) -> Vec<Figure> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_metric_line)
        .filter(|f| !f.name.ends_with("_bucket"))
        .collect()
}

fn parse_metric_line(line: &str) -> Option<Figure> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        // Label values are quoted with backslash escapes and may hold `}` (route patterns).
        let mut chars = after.char_indices();
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if in_value {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(if e == 'n' { '\n' } else { e });
                        }
                    }
                    '"' => {
                        labels.insert(
                            std::mem::take(&mut key).trim().to_owned(),
                            std::mem::take(&mut value),
                        );
                        in_value = false;
                    }
                    c => value.push(c),
                }
            } else {
                match c {
                    '"' => in_value = true,
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' | ',' => {}
                    c => key.push(c),
                }
            }
        }
        rest = &after[end? + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Figure {
        name,
        labels,
        value,
    })
}

async fn stats(state: Data) -> ApiResult {
    let rooms = {
        let mut db = confab_schema::connect(&state.pool).await?;
        queries::count_rooms(&mut db).await?
    };
    let sender = state.federation_sender.stats();
    use crate::federation::sender::SenderStats;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "rooms": rooms,
        "metrics": parse_metrics(&state.metrics.render()),
        "federation": {
            "transactions_sent": SenderStats::get(&sender.transactions_sent),
            "transactions_failed": SenderStats::get(&sender.transactions_failed),
            "pdus_sent": SenderStats::get(&sender.pdus_sent),
            "edus_sent": SenderStats::get(&sender.edus_sent),
            "edus_dropped": SenderStats::get(&sender.edus_dropped),
        },
    })))
}

async fn not_found() -> ApiResult {
    Err(ApiError::new(ErrorCode::NotFound, "no such admin endpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_match_the_web_client() {
        assert_eq!(
            invite_link("https://c.example/", "!abc:c.example:8448", "tok-_9"),
            "https://c.example/#/join/!abc%3Ac.example%3A8448/tok-_9"
        );
    }

    #[test]
    fn metrics_text_parses() {
        let text = "# HELP x y\n# TYPE x counter\nconfab_events_persisted_total 3\n\
            confab_errors_total{code=\"room_full\"} 1\n\
            confab_http_request_duration_seconds_bucket{le=\"0.1\"} 2\n\
            confab_http_request_duration_seconds_sum{method=\"GET\",route=\"/rooms/{room_id}\",status=\"2xx\"} 0.5\n";
        let figures = parse_metrics(text);
        assert_eq!(figures.len(), 3);
        assert_eq!(figures[0].name, "confab_events_persisted_total");
        assert_eq!(figures[0].value, 3.0);
        assert_eq!(figures[1].labels["code"], "room_full");
        assert_eq!(figures[2].labels["route"], "/rooms/{room_id}");
        assert_eq!(figures[2].labels["status"], "2xx");
        assert_eq!(figures[2].value, 0.5);
    }
}
