//! The operator's side of the homeserver: the admin HTTP API under [`PREFIX`] ([`api`]) and the
//! `confab admin …` command line that calls it ([`cli`]).
//!
//! The admin API and the metrics are served on the admin listener (`admin.listen`, loopback by
//! default) only, never on the public one: behind a reverse proxy every public request comes from
//! the proxy's address, so no address check there could tell the operator from the internet.
//! Every admin call passes [`gate`] first, a middleware around the whole scope, so no admin
//! handler can run unchecked: the API must be enabled (`admin.token` set, else
//! `admin_disabled`), the peer address must be in `admin.allowed_addresses` (else
//! `address_not_allowed`), and the bearer token must match (else `unauthorized`), compared in
//! constant time over SHA-256 digests. Every call, refused or not, is logged with the peer
//! address, method, path (which names the target room, user, invite or server) and outcome;
//! never with the token. The metrics pass [`peer_gate`], the address check alone.
//!
//! Admin actions act as [`admin_identity`], `@_admin:<server_name>` with device `ADMIN`: guest
//! ids are always `@guest-…` (`UserId::generate_guest`), so no session can ever hold it, and
//! events the admin causes (kick, lock) name it as their sender.

pub mod api;
pub mod cli;

use std::net::IpAddr;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use confab_schema::queries;

use crate::engine::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Base path of the admin API.
pub const PREFIX: &str = "/_confab/admin/v1";

/// The localpart admin actions are done as; never a guest's (those start with `guest-`).
pub const ADMIN_LOCALPART: &str = "_admin";
/// The device id admin actions are done from.
pub const ADMIN_DEVICE: &str = "ADMIN";

/// The actor of admin actions on this server.
pub fn admin_identity(state: &AppState) -> Identity {
    Identity {
        user_id: format!("@{ADMIN_LOCALPART}:{}", state.settings.server.name),
        device_id: ADMIN_DEVICE.to_owned(),
        display_name: "Server admin".to_owned(),
    }
}

/// Whether `given` is the configured token, in time independent of where they differ: both are
/// hashed first, so the comparison always runs over 32 bytes and reveals nothing about length.
pub fn tokens_match(configured: &str, given: &str) -> bool {
    let a = ring::digest::digest(&ring::digest::SHA256, configured.as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// Whether `peer` may call the admin API when `networks` are allowed (none: any address).
fn address_allowed(networks: &[ipnet::IpNet], peer: Option<IpAddr>) -> bool {
    if networks.is_empty() {
        return true;
    }
    // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
    peer.map(|ip| ip.to_canonical())
        .is_some_and(|ip| networks.iter().any(|n| n.contains(&ip)))
}

fn state_of(req: &ServiceRequest) -> Result<&AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|data| data.get_ref())
        .ok_or_else(|| ApiError::internal("admin gate", &"no app state"))
}

/// The address check of the admin listener: the TCP peer must be in `admin.allowed_addresses`.
fn check_peer(state: &AppState, req: &ServiceRequest) -> Result<(), ApiError> {
    // Validated at load, so this cannot fail; refusing would be the safe answer anyway.
    let networks = state
        .settings
        .admin
        .allowed_networks()
        .map_err(|e| ApiError::internal("admin.allowed_addresses", &e))?;
    if !address_allowed(&networks, req.peer_addr().map(|a| a.ip())) {
        return Err(ApiError::new(
            ErrorCode::AddressNotAllowed,
            "this address may not use the admin listener (see `admin.allowed_addresses`)",
        ));
    }
    Ok(())
}

fn check(req: &ServiceRequest) -> Result<(), ApiError> {
    let state = state_of(req)?;
    let configured = &state.settings.admin.token;
    if configured.is_empty() {
        return Err(ApiError::new(
            ErrorCode::AdminDisabled,
            "the admin API is disabled on this server: set `admin.token` to enable it",
        ));
    }
    check_peer(state, req)?;
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if tokens_match(configured, given) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::Unauthorized, "wrong admin token")),
        None => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "send the admin token as `Authorization: Bearer <token>`",
        )),
    }
}

/// The middleware around the admin scope: checks, calls, and logs who did what with which
/// outcome.
pub async fn gate(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let res = match check(&req) {
        Ok(()) => next.call(req).await?,
        Err(err) => req.error_response(err),
    };
    let status = res.status().as_u16();
    let code = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map_or("ok", |e| e.code.as_str());
    let info = res.request().match_info();
    let room = info.get("room_id").unwrap_or("-").to_owned();
    let user = info.get("user_id").unwrap_or("-").to_owned();
    let server = info.get("server").unwrap_or("-").to_owned();
    if status < 400 {
        tracing::info!(%peer, %method, %path, %room, %user, %server, status, outcome = code, "admin call");
    } else {
        tracing::warn!(%peer, %method, %path, %room, %user, %server, status, outcome = code, "admin call failed");
    }
    Ok(res)
}

/// The middleware around the admin listener's other routes (the metrics): the address check.
pub async fn peer_gate(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match state_of(&req).and_then(|state| check_peer(state, &req)) {
        Ok(()) => next.call(req).await,
        Err(err) => {
            let peer = req
                .peer_addr()
                .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
            tracing::warn!(%peer, path = %req.path(), outcome = err.code.as_str(), "admin listener call refused");
            Ok(req.error_response(err))
        }
    }
}

/// Applies the federation decisions operators made before (kept in the database) to the live
/// ACL; called once at start-up.
pub async fn load_acl_overrides(state: &AppState) -> Result<usize, ApiError> {
    let mut db = confab_schema::connect(&state.pool).await?;
    let overrides = queries::acl_overrides(&mut db).await?;
    for row in &overrides {
        state
            .federation
            .acl
            .set_override(&row.server_name, row.allowed);
    }
    Ok(overrides.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(tokens_match("0123456789abcdef", "0123456789abcdef"));
        assert!(!tokens_match("0123456789abcdef", "0123456789abcdeF"));
        assert!(!tokens_match("0123456789abcdef", "0123456789abcde"));
        assert!(!tokens_match("0123456789abcdef", ""));
    }

    #[test]
    fn addresses_match_blocks() {
        let nets: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(address_allowed(&nets, ip("127.0.0.1")));
        assert!(address_allowed(&nets, ip("::ffff:10.9.8.7")));
        assert!(!address_allowed(&nets, ip("127.0.0.2")));
        assert!(!address_allowed(&nets, ip("::1")));
        assert!(!address_allowed(&nets, None));
        assert!(address_allowed(&[], ip("203.0.113.9")));
    }

    #[test]
    fn admin_localpart_is_no_guest_localpart() {
        let guest = confab_federation::ids::UserId::generate_guest(
            &confab_federation::ids::ServerName::parse("a.example").unwrap(),
        );
        assert!(!guest.as_str().starts_with(&format!("@{ADMIN_LOCALPART}:")));
    }
}
