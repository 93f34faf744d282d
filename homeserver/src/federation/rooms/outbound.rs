//! The user's homeserver asking a room's origin: signed requests answered at once (join with an
//! invite token, leave, announce a device, read events). Each returns what the origin said; what
//! to do with it is the caller's (see [`super::replica`] and `crate::engine`).

use confab_federation::ids::{RoomId, ServerName};
use confab_schema::models::Event;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::PATH;
use super::refusal::{refusal, unreachable};
use super::wire::{
    ConnectedResponse, EventsPage, JoinRequest, JoinedRoom, LeaveRequest, MemberRequest,
    PresenceRequest, RoomRequest,
};
use crate::error::{ApiError, ErrorCode};
use crate::federation::client::FederationClient;
use crate::protocol::ConnectedDevice;
use crate::sessions::Identity;

/// A signed request to `origin`, its 200 answer parsed as `T`.
pub async fn call<T: DeserializeOwned>(
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

/// Asks a room's origin to join `who` (it applies every rule of a local join); `since` is the
/// newest event our replica already has. Returns the room's state.
pub async fn join(
    client: &FederationClient,
    room_id: &RoomId,
    who: &Identity,
    invite_token: Option<&str>,
    since: i64,
) -> Result<JoinedRoom, ApiError> {
    let origin = room_id.server_name();
    let body = serde_json::to_value(JoinRequest {
        user_id: who.user_id.clone(),
        display_name: who.display_name.clone(),
        invite_token: invite_token.map(str::to_owned),
        since,
    })
    .unwrap_or_default();
    let path = format!("{PATH}/rooms/{room_id}/join");
    let joined: JoinedRoom = call(client, origin, Method::POST, &path, Some(&body)).await?;
    if joined.room_id != room_id.as_str() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("{origin} answered for another room"),
        ));
    }
    Ok(joined)
}

/// A page of the room's events after `since`.
pub async fn fetch_events(
    client: &FederationClient,
    room_id: &RoomId,
    since: i64,
) -> Result<EventsPage, ApiError> {
    let path = format!("{PATH}/rooms/{room_id}/events?since={since}");
    call(client, room_id.server_name(), Method::GET, &path, None).await
}

/// Tells a room's origin that `who` left; the origin's membership event follows as a PDU.
pub async fn leave(
    client: &FederationClient,
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
        client,
        room_id.server_name(),
        Method::POST,
        &path,
        Some(&body),
    )
    .await?;
    Ok(())
}

/// Forwards a request of `who`, a member of a room of another server, to the room's origin;
/// returns its answer, or its refusal with the origin's code.
pub async fn member_request<T: DeserializeOwned>(
    client: &FederationClient,
    room_id: &RoomId,
    who: &Identity,
    request: &RoomRequest,
) -> Result<T, ApiError> {
    let body = serde_json::to_value(MemberRequest {
        user_id: who.user_id.clone(),
        device_id: who.device_id.clone(),
        request: request.clone(),
    })
    .unwrap_or_default();
    let path = format!("{PATH}/rooms/{room_id}/request");
    call(
        client,
        room_id.server_name(),
        Method::POST,
        &path,
        Some(&body),
    )
    .await
}

/// Announces (or confirms) a device subscribed to a replica to the room's origin; returns the
/// origin's list of who is connected.
pub async fn announce(
    client: &FederationClient,
    room_id: &RoomId,
    who: &Identity,
) -> Result<Vec<ConnectedDevice>, ApiError> {
    let body = serde_json::to_value(PresenceRequest {
        user_id: who.user_id.clone(),
        device_id: who.device_id.clone(),
        display_name: who.display_name.clone(),
        online: true,
    })
    .unwrap_or_default();
    let path = format!("{PATH}/rooms/{room_id}/presence");
    let answer: ConnectedResponse = call(
        client,
        room_id.server_name(),
        Method::POST,
        &path,
        Some(&body),
    )
    .await?;
    Ok(answer.connected)
}

/// Pages read to fill one gap, at most; a longer gap is filled over the next transactions.
const MAX_GAP_PAGES: usize = 4;

/// The events after `since` and before `until`, from the room's origin, at most
/// [`MAX_GAP_PAGES`] pages of them.
pub async fn fetch_missing(
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
