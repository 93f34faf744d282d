//! The route tables, in one place — the public listener's ([`configure`]) and the operator's
//! ([`configure_operator`]) — and the thin REST handlers: parse → authorize → call a domain
//! function → respond.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::engine::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{JsonResult, optional_body};
use crate::federation::{
    auth as federation_auth, endpoints as federation, rooms::endpoints as federated_rooms,
};
use crate::rooms::{InviteOptions, KnockAnswer, RoleChange, SettingsChange};
use crate::state::AppState;
use crate::{limiter, sessions, turn, ws};

pub use crate::protocol::CLIENT_PREFIX;

/// The path of the Prometheus metrics on the admin listener.
pub const METRICS_PATH: &str = "/metrics";

/// The public listener's routes: client API and WebSocket, federation, `/health` (for load
/// balancers); never the operator's surface, whose paths are answered `not_found` here like any
/// unknown path, whatever the method.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route(METRICS_PATH, web::route().to(not_found))
        .service(web::scope("/_confab/admin").default_service(web::to(not_found)))
        .service(
            web::scope(CLIENT_PREFIX)
                .route("/config", web::get().to(client_config))
                .route("/sessions", web::post().to(create_session))
                .route("/sessions/me", web::get().to(whoami))
                .route("/sessions/me", web::delete().to(logout))
                .route("/rooms", web::post().to(create_room))
                .route("/rooms", web::get().to(my_rooms))
                .route("/rooms/{room_id}", web::get().to(get_room))
                .route("/rooms/{room_id}", web::delete().to(close_room))
                .route("/rooms/{room_id}/join", web::post().to(join_room))
                .route("/rooms/{room_id}/leave", web::post().to(leave_room))
                .route("/rooms/{room_id}/events", web::get().to(events))
                .route("/rooms/{room_id}/invites", web::post().to(create_invite))
                .route("/rooms/{room_id}/invites", web::get().to(list_invites))
                .route(
                    "/rooms/{room_id}/invites/{invite_id}",
                    web::delete().to(revoke_invite),
                )
                .route("/rooms/{room_id}/lock", web::post().to(lock))
                .route("/rooms/{room_id}/unlock", web::post().to(unlock))
                .route("/rooms/{room_id}/kick", web::post().to(kick))
                .route("/rooms/{room_id}/settings", web::post().to(settings))
                .route("/rooms/{room_id}/role", web::post().to(set_role))
                .route("/rooms/{room_id}/knocks", web::post().to(answer_knock))
                .route("/rooms/{room_id}/ice_servers", web::get().to(ice_servers))
                .route("/ws", web::get().to(ws::not_an_upgrade))
                .default_service(web::to(not_found)),
        )
        // Federation: the key document is public; everything under the two federation scopes
        // passes X-Matrix authentication before any handler (see `crate::federation`).
        .route(
            "/_matrix/key/v2/server",
            web::get().to(federation::server_keys),
        )
        .service(
            web::scope("/_matrix/federation")
                .wrap(actix_web::middleware::from_fn(
                    federation_auth::authenticate,
                ))
                .route(
                    "/v1/send/{txn_id}",
                    web::put().to(federation::send_transaction),
                )
                .default_service(web::to(federation::unrecognized)),
        )
        .service(
            web::scope("/_confab/federation/v1")
                .wrap(actix_web::middleware::from_fn(
                    federation_auth::authenticate,
                ))
                .route("/ping", web::get().to(federation::ping))
                .route("/ping", web::post().to(federation::ping))
                .route(
                    "/rooms/{room_id}/join",
                    web::post().to(federated_rooms::join),
                )
                .route(
                    "/rooms/{room_id}/leave",
                    web::post().to(federated_rooms::leave),
                )
                .route(
                    "/rooms/{room_id}/presence",
                    web::post().to(federated_rooms::presence),
                )
                .route(
                    "/rooms/{room_id}/request",
                    web::post().to(federated_rooms::member_request),
                )
                .route(
                    "/rooms/{room_id}/events",
                    web::get().to(federated_rooms::events),
                )
                .route("/send_chat", web::post().to(federated_rooms::send_chat))
                .default_service(web::to(federation::unrecognized)),
        );
}

/// The admin listener's routes (`admin.listen`): the admin API and the metrics, and nothing else.
/// Every request passes the address check (`admin.allowed_addresses`) first; admin calls pass
/// the enabled and token checks too, and are logged.
pub fn configure_operator(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(METRICS_PATH)
            .wrap(actix_web::middleware::from_fn(crate::admin::peer_gate))
            .route(web::get().to(metrics)),
    )
    .service(
        web::scope(crate::admin::PREFIX)
            .wrap(actix_web::middleware::from_fn(crate::admin::gate))
            .configure(crate::admin::api::configure),
    )
    .default_service(web::to(not_found));
}

/// The caller's session, from `Authorization: Bearer <token>`.
pub struct Authed(pub Identity);

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("extractor", &"no app state"))?;
            let token = token.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "send the access token as `Authorization: Bearer <token>`",
                )
            })?;
            sessions::authenticate(&state.pool, &token)
                .await
                .map(Authed)
        })
    }
}

type Data = web::Data<AppState>;
type ApiResult = Result<HttpResponse, ApiError>;

async fn health(state: Data) -> HttpResponse {
    let check = async {
        let mut conn = confab_schema::connect(&state.pool).await?;
        confab_schema::ping(&mut conn).await?;
        Ok::<_, ApiError>(())
    };
    match check.await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok", "database": "ok"})),
        Err(err) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "database": err.reason})),
    }
}

async fn metrics(state: Data) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

async fn not_found() -> ApiResult {
    Err(ApiError::new(ErrorCode::NotFound, "no such endpoint"))
}

/// Public, so STUN only: TURN credentials go to room members alone (see [`ice_servers`]).
async fn client_config(state: Data) -> HttpResponse {
    let s = &state.settings;
    HttpResponse::Ok().json(json!({
        "server_name": s.server.name,
        "max_participants": s.rooms.max_participants,
        "ice_servers": turn::stun_servers(&s.ice),
        "limits": {
            "max_event_bytes": s.limits.max_event_bytes,
            "max_frame_bytes": s.limits.max_frame_bytes,
            "messages_per_second": s.limits.messages_per_second,
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    display_name: String,
}

async fn create_session(
    state: Data,
    req: HttpRequest,
    body: web::Json<CreateSession>,
) -> ApiResult {
    let address = limiter::address_key(limiter::client_ip(&req, &state.trusted_proxies));
    state
        .session_limiter
        .take(&address)
        .map_err(|wait| limiter::rate_limited(wait, "too many new sessions"))?;
    let session =
        sessions::create_guest(&state.pool, &state.settings.server.name, &body.display_name)
            .await?;
    Ok(HttpResponse::Created().json(session))
}

async fn whoami(Authed(who): Authed) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "user_id": who.user_id,
        "device_id": who.device_id,
        "display_name": who.display_name,
    }))
}

async fn logout(state: Data, Authed(who): Authed) -> ApiResult {
    sessions::logout(&state.pool, &who).await?;
    state.engine.close_user(&who.user_id, 1008, "session ended");
    Ok(HttpResponse::NoContent().finish())
}

async fn create_room(state: Data, Authed(who): Authed) -> ApiResult {
    Ok(HttpResponse::Created().json(state.rooms.create_room(&who).await?))
}

async fn my_rooms(state: Data, Authed(who): Authed) -> ApiResult {
    Ok(HttpResponse::Ok().json(json!({ "rooms": state.rooms.my_rooms(&who).await? })))
}

async fn get_room(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.get_room(&path, &who).await?))
}

async fn close_room(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    state.rooms.close_room(&path, &who).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    invite_token: Option<String>,
}

async fn join_room(
    state: Data,
    req: HttpRequest,
    Authed(who): Authed,
    path: web::Path<String>,
    body: JsonResult<JoinBody>,
) -> ApiResult {
    let body = optional_body(&req, body)?;
    let token = body.as_ref().and_then(|b| b.invite_token.as_deref());
    // Keyed by address, not user: guest sessions cost nothing to make.
    let address = limiter::address_key(limiter::client_ip(&req, &state.trusted_proxies));
    let joined = limiter::limit_refusals(
        &state.join_limiter,
        &address,
        state.rooms.join_room(&path, &who, token),
    )
    .await?;
    Ok(HttpResponse::Ok().json(joined))
}

async fn leave_room(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    state.rooms.leave_room(&path, &who).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    since: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    500
}

async fn events(
    state: Data,
    Authed(who): Authed,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> ApiResult {
    if query.since < 0 {
        return Err(ApiError::bad_request(
            "`since` is the last sequence number seen: 0 or more",
        ));
    }
    let (events, latest) = state
        .rooms
        .events(&path, &who, query.since, query.limit)
        .await?;
    let events: Vec<_> = events.iter().map(crate::protocol::EventOut::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events, "latest_seq": latest })))
}

async fn create_invite(
    state: Data,
    Authed(who): Authed,
    path: web::Path<String>,
    req: HttpRequest,
    body: JsonResult<InviteOptions>,
) -> ApiResult {
    let options = optional_body(&req, body)?.unwrap_or_default();
    Ok(HttpResponse::Created().json(state.rooms.create_invite(&path, &who, &options).await?))
}

async fn list_invites(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(json!({ "invites": state.rooms.list_invites(&path, &who).await? })))
}

async fn revoke_invite(
    state: Data,
    Authed(who): Authed,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (room_id, invite_id) = path.into_inner();
    state
        .rooms
        .revoke_invite(&room_id, &who, &invite_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn lock(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.set_locked(&path, &who, true).await?))
}

async fn unlock(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.set_locked(&path, &who, false).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    user_id: String,
}

/// STUN and TURN with fresh credentials, for a joined member of a live room only; not to be
/// cached (`no-store`), as the credentials are the caller's.
async fn ice_servers(state: Data, Authed(who): Authed, path: web::Path<String>) -> ApiResult {
    let grant = turn::grant(&state.pool, &state.settings.ice, &path, &who).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(grant))
}

async fn kick(
    state: Data,
    Authed(who): Authed,
    path: web::Path<String>,
    body: web::Json<KickBody>,
) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.kick(&path, &who, &body.user_id).await?))
}

async fn settings(
    state: Data,
    Authed(who): Authed,
    path: web::Path<String>,
    body: web::Json<SettingsChange>,
) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.set_settings(&path, &who, &body).await?))
}

async fn set_role(
    state: Data,
    Authed(who): Authed,
    path: web::Path<String>,
    body: web::Json<RoleChange>,
) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.set_role(&path, &who, &body).await?))
}

async fn answer_knock(
    state: Data,
    Authed(who): Authed,
    path: web::Path<String>,
    body: web::Json<KnockAnswer>,
) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.rooms.answer_knock(&path, &who, &body).await?))
}

/// The status code a default (non-API) error maps to, for the latency metric.
pub fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
