//! The JSON of federated rooms: requests, answers, the event inside a PDU, and the EDUs.

use confab_schema::models::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::protocol::ConnectedDevice;

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
    pub fn from_event(e: &Event) -> Self {
        Self {
            seq: e.seq,
            sender: e.sender.clone(),
            device_id: e.device_id.clone(),
            origin_ts: e.origin_ts,
            content: e.content.clone(),
        }
    }

    pub fn into_event(self, room_id: &str) -> Event {
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
pub struct JoinedRoom {
    pub room_id: String,
    pub host_user_id: String,
    pub locked: bool,
    /// The room's settings, as its latest `settings` event says them.
    #[serde(default)]
    pub guests_may_share: bool,
    #[serde(default)]
    pub lobby: bool,
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
pub struct JoinRequest {
    pub user_id: String,
    pub display_name: String,
    #[serde(default)]
    pub invite_token: Option<String>,
    /// The newest event the joiner's replica already has.
    #[serde(default)]
    pub since: i64,
}

/// A request of a member of a room of another server, forwarded by the member's homeserver to
/// the room's origin (`POST …/rooms/{roomId}/request`), which applies the same rules as to its own
/// users and answers what its client API would.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    pub user_id: String,
    pub device_id: String,
    pub request: RoomRequest,
}

/// What a forwarded [`MemberRequest`] asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RoomRequest {
    /// An invite link (`POST /rooms/{room_id}/invites`); answered with the invite and its token.
    CreateInvite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_in_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_uses: Option<u32>,
    },
    /// The room's invites (hosts); answered `{invites}`.
    ListInvites,
    /// Revoke an invite (hosts); answered `{}`.
    RevokeInvite { invite_id: String },
    /// Lock or unlock (hosts); answered with the room summary.
    SetLocked { locked: bool },
    /// Change settings (hosts); answered with the room summary.
    Settings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guests_may_share: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lobby: Option<bool>,
    },
    /// Kick a member (hosts); answered as the kick endpoint.
    Kick { user_id: String },
    /// Make a member a co-host or a guest (the host); answered as the role endpoint.
    SetRole { user_id: String, role: String },
    /// Admit or refuse a knock (hosts); answered as the knocks endpoint.
    AnswerKnock { user_id: String, admit: bool },
    /// Close the room for everyone (the host); answered `{}`.
    Close,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    pub user_id: String,
    pub device_id: String,
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
    /// The sending device's id for the message (see the `chat` request): the origin appends a
    /// message once per room, user, device and id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub events: Vec<SendItem>,
}

/// The outcome of one forwarded message: its number and time, or why it was refused.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SendResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendResponse {
    pub results: Vec<SendResult>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
    pub online: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectedResponse {
    pub connected: Vec<ConnectedDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<WireEvent>,
    pub latest_seq: i64,
}

/// The query of the events endpoint.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    pub since: i64,
}

#[derive(Deserialize)]
pub struct PresenceEdu {
    pub room_id: String,
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
    pub online: bool,
}

#[derive(Deserialize)]
pub struct TypingEdu {
    pub room_id: String,
    pub user_id: String,
    pub device_id: String,
    pub typing: bool,
}

#[derive(Deserialize)]
pub struct DeviceEdu {
    pub user_id: String,
    pub device_id: String,
}

#[derive(Deserialize)]
pub struct SignalEdu {
    pub room_id: String,
    pub from: DeviceEdu,
    pub to: DeviceEdu,
    pub payload: String,
}
