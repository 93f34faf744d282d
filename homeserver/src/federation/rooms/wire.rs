//! The JSON of federated rooms: requests, answers, the event inside a PDU, and the EDUs.
//!
//! Every string and object read from another server is bounded as it is read (the [`bounded`]
//! deserializers): an identifier longer than Matrix's 255 bytes, a device id outside 1 to 64
//! bytes, or an event over Matrix's 64 KiB is refused with the request (or, in a transaction,
//! the PDU or EDU that carries it is), so nothing unbounded reaches the engine or the database.

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
    #[serde(deserialize_with = "bounded::id")]
    pub sender: String,
    /// Empty for events no device sent (a join through another server, a kick by an operator).
    #[serde(deserialize_with = "bounded::device_id_or_none")]
    pub device_id: String,
    pub origin_ts: i64,
    #[serde(deserialize_with = "bounded::event_content")]
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
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::name")]
    pub display_name: String,
    pub is_host: bool,
    #[serde(deserialize_with = "bounded::word")]
    pub membership: String,
    pub joined_ts: i64,
    pub updated_ts: i64,
}

/// The origin's answer to a join: what a replica needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinedRoom {
    #[serde(deserialize_with = "bounded::id")]
    pub room_id: String,
    #[serde(deserialize_with = "bounded::id")]
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
    #[serde(deserialize_with = "bounded::devices")]
    pub connected: Vec<ConnectedDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::name")]
    pub display_name: String,
    #[serde(default, deserialize_with = "bounded::optional_id")]
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
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::device_id_or_none")]
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
    RevokeInvite {
        #[serde(deserialize_with = "bounded::id")]
        invite_id: String,
    },
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
    Kick {
        #[serde(deserialize_with = "bounded::id")]
        user_id: String,
    },
    /// Make a member a co-host or a guest (the host); answered as the role endpoint.
    SetRole {
        #[serde(deserialize_with = "bounded::id")]
        user_id: String,
        #[serde(deserialize_with = "bounded::word")]
        role: String,
    },
    /// Admit or refuse a knock (hosts); answered as the knocks endpoint.
    AnswerKnock {
        #[serde(deserialize_with = "bounded::id")]
        user_id: String,
        admit: bool,
    },
    /// Close the room for everyone (the host); answered `{}`.
    Close,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::device_id_or_none")]
    pub device_id: String,
}

/// One chat message forwarded to its room's origin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendItem {
    #[serde(deserialize_with = "bounded::id")]
    pub room_id: String,
    #[serde(deserialize_with = "bounded::id")]
    pub sender: String,
    #[serde(deserialize_with = "bounded::device_id")]
    pub device_id: String,
    #[serde(deserialize_with = "bounded::word")]
    pub kind: String,
    /// Bounded by `limits.max_event_bytes` where it is checked (`protocol::checked_chat_content`).
    pub ciphertext: String,
    /// The sending device's id for the message (see the `chat` request): the origin appends a
    /// message once per room, user, device and id.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::optional_id"
    )]
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
    /// With `rate_limited`: when to send it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendResponse {
    pub results: Vec<SendResult>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::device_id")]
    pub device_id: String,
    #[serde(deserialize_with = "bounded::name")]
    pub display_name: String,
    pub online: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectedResponse {
    #[serde(deserialize_with = "bounded::devices")]
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
    #[serde(deserialize_with = "bounded::id")]
    pub room_id: String,
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::device_id")]
    pub device_id: String,
    #[serde(deserialize_with = "bounded::name")]
    pub display_name: String,
    pub online: bool,
}

#[derive(Deserialize)]
pub struct TypingEdu {
    #[serde(deserialize_with = "bounded::id")]
    pub room_id: String,
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::device_id")]
    pub device_id: String,
    pub typing: bool,
}

#[derive(Deserialize)]
pub struct DeviceEdu {
    #[serde(deserialize_with = "bounded::id")]
    pub user_id: String,
    #[serde(deserialize_with = "bounded::device_id")]
    pub device_id: String,
}

#[derive(Deserialize)]
pub struct SignalEdu {
    #[serde(deserialize_with = "bounded::id")]
    pub room_id: String,
    pub from: DeviceEdu,
    pub to: DeviceEdu,
    /// Bounded by `limits.max_event_bytes` where it is passed on.
    pub payload: String,
}

/// Deserializers that refuse a field out of bounds with a message naming the bound.
pub mod bounded {
    use crate::protocol::ConnectedDevice;
    use serde::de::{Deserializer, Error};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    /// Matrix's limit on identifiers; also used for tokens, which are shorter.
    pub const MAX_ID_BYTES: usize = 255;
    /// A display name's limit: its most characters (`sessions`), four bytes each at most.
    pub const MAX_NAME_BYTES: usize = 4 * crate::sessions::MAX_DISPLAY_NAME_CHARS;
    /// A device id's limit, as a local client's (`protocol`).
    pub const MAX_DEVICE_ID_BYTES: usize = 64;
    /// A membership or message kind: a short word.
    pub const MAX_WORD_BYTES: usize = 32;
    /// Matrix's limit on the size of an event.
    pub const MAX_EVENT_BYTES: usize = 65_536;
    /// Devices listed as connected to one room: far more than a room admits
    /// (`rooms.max_participants` users with `limits.max_connections_per_user` devices each).
    pub const MAX_DEVICES: usize = 4096;

    fn string<'de, D: Deserializer<'de>>(d: D, min: usize, max: usize) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() < min || s.len() > max {
            return Err(D::Error::custom(format!(
                "a string of {min} to {max} bytes expected, got {}",
                s.len()
            )));
        }
        Ok(s)
    }

    /// A display name as another server sends it, checked further where it is taken
    /// (`sessions::validate_display_name`).
    pub fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        string(d, 0, MAX_NAME_BYTES)
    }

    /// An identifier or token: 1 to 255 bytes.
    pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        string(d, 1, MAX_ID_BYTES)
    }

    /// An optional [`id`].
    pub fn optional_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                if s.is_empty() || s.len() > MAX_ID_BYTES {
                    Err(D::Error::custom(format!(
                        "a string of 1 to {MAX_ID_BYTES} bytes expected, got {}",
                        s.len()
                    )))
                } else {
                    Ok(s)
                }
            })
            .transpose()
    }

    /// A device id: 1 to 64 bytes.
    pub fn device_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        string(d, 1, MAX_DEVICE_ID_BYTES)
    }

    /// A device id, or empty.
    pub fn device_id_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        string(d, 0, MAX_DEVICE_ID_BYTES)
    }

    /// A short word: 1 to 32 bytes.
    pub fn word<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        string(d, 1, MAX_WORD_BYTES)
    }

    /// Devices connected to a room, as its origin lists them: at most [`MAX_DEVICES`], each with
    /// an [`id`], a [`device_id`] and a [`name`].
    pub fn devices<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ConnectedDevice>, D::Error> {
        let devices = Vec::<ConnectedDevice>::deserialize(d)?;
        if devices.len() > MAX_DEVICES {
            return Err(D::Error::custom(format!(
                "at most {MAX_DEVICES} connected devices, got {}",
                devices.len()
            )));
        }
        let fits = |s: &str, min: usize, max: usize| (min..=max).contains(&s.len());
        let bad = devices.iter().any(|d| {
            !fits(&d.user_id, 1, MAX_ID_BYTES)
                || !fits(&d.device_id, 1, MAX_DEVICE_ID_BYTES)
                || !fits(&d.display_name, 0, MAX_NAME_BYTES)
        });
        if bad {
            return Err(D::Error::custom(
                "a connected device's ids or name are out of bounds",
            ));
        }
        Ok(devices)
    }

    /// An event's content: an object of at most 64 KiB as JSON.
    pub fn event_content<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        let value = Value::deserialize(d)?;
        if !value.is_object() {
            return Err(D::Error::custom("an event's content must be an object"));
        }
        let mut size = Counter(0);
        // Writing to a counter cannot fail.
        let _ = value.serialize(&mut serde_json::Serializer::new(&mut size));
        if size.0 > MAX_EVENT_BYTES {
            return Err(D::Error::custom(format!(
                "an event's content has at most {MAX_EVENT_BYTES} bytes, this one {}",
                size.0
            )));
        }
        Ok(value)
    }

    /// Counts the bytes written to it.
    struct Counter(usize);

    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_out_of_bounds_are_refused_as_they_are_read() {
        let leave = |device: &str| {
            LeaveRequest::deserialize(json!({"user_id": "@u:s", "device_id": device})).is_ok()
        };
        assert!(leave(&"d".repeat(64)));
        assert!(!leave(&"d".repeat(65)));
        let event = |content: Value| {
            WireEvent::deserialize(json!({"seq": 1, "sender": "@u:s", "device_id": "",
                "origin_ts": 1, "content": content}))
            .is_ok()
        };
        assert!(event(
            json!({"type": "chat", "ciphertext": "c".repeat(60_000)})
        ));
        assert!(!event(
            json!({"type": "chat", "ciphertext": "c".repeat(70_000)})
        ));
        assert!(!event(json!("not an object")));
        let device = json!({"user_id": "@u:s", "device_id": "D", "display_name": "U"});
        let page = |connected: Value| {
            ConnectedResponse::deserialize(json!({ "connected": connected })).is_ok()
        };
        assert!(page(json!(vec![device.clone(); 10])));
        assert!(!page(json!(vec![device; bounded::MAX_DEVICES + 1])));
        assert!(!page(
            json!([{"user_id": "@u:s", "device_id": "", "display_name": "U"}])
        ));
    }
}
