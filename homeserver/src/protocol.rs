//! Wire types of the client protocol (`homeserver/PROTOCOL.md`): what the REST API and the
//! WebSocket accept and send. Behaviour lives elsewhere; this module only shapes JSON.

use std::borrow::Cow;

use confab_schema::models::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Base path of the client API (REST, and the WebSocket at `{CLIENT_PREFIX}/ws`).
pub const CLIENT_PREFIX: &str = "/_confab/client/v1";

/// A serialized text frame, ready for any number of sockets: cloning it shares the bytes.
pub type Frame = tokio_tungstenite::tungstenite::Utf8Bytes;

/// One WebSocket request, as parsed in a single pass: every field any request type may carry is
/// optional here, so that the request `type` and `id` are known (and can be named in the error)
/// even when another field is missing or malformed. Strings borrow from the frame when they can.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub msg_type: Cow<'a, str>,
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub room_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub token: Option<Cow<'a, str>>,
    #[serde(default)]
    pub since: Option<i64>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub ciphertext: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub to: Option<DeviceRefIn<'a>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub payload: Option<Cow<'a, str>>,
    #[serde(default)]
    pub typing: Option<bool>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub txn_id: Option<Cow<'a, str>>,
}

/// The request types of the WebSocket protocol: the one list that dispatch (an exhaustive match
/// on [`Request`]), metric labels and `homeserver/PROTOCOL.md` (checked by a test) follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestType {
    Auth,
    Ping,
    Subscribe,
    Unsubscribe,
    Chat,
    Signal,
    Typing,
}

impl RequestType {
    /// Every request type.
    pub const ALL: [RequestType; 7] = [
        RequestType::Auth,
        RequestType::Ping,
        RequestType::Subscribe,
        RequestType::Unsubscribe,
        RequestType::Chat,
        RequestType::Signal,
        RequestType::Typing,
    ];

    /// The `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Auth => "auth",
            RequestType::Ping => "ping",
            RequestType::Subscribe => "subscribe",
            RequestType::Unsubscribe => "unsubscribe",
            RequestType::Chat => "chat",
            RequestType::Signal => "signal",
            RequestType::Typing => "typing",
        }
    }

    /// The type named `raw`, if it is one.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// A WebSocket request with the fields its type requires.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Auth {
        token: &'a str,
    },
    Ping,
    Subscribe {
        room_id: &'a str,
        since: i64,
    },
    Unsubscribe {
        room_id: &'a str,
    },
    Chat {
        room_id: &'a str,
        kind: &'a str,
        ciphertext: &'a str,
        /// The client's id for this message: a resend with the same id gets the first answer.
        txn_id: Option<&'a str>,
    },
    Signal {
        room_id: &'a str,
        to: (&'a str, &'a str),
        payload: &'a str,
    },
    Typing {
        room_id: &'a str,
        typing: bool,
    },
}

/// Longest chat transaction id, in bytes.
pub const MAX_TXN_ID_BYTES: usize = 64;

/// A chat transaction id, if one was given: 1 to [`MAX_TXN_ID_BYTES`] bytes.
pub fn checked_txn_id(txn_id: Option<&str>) -> Result<Option<&str>, crate::error::ApiError> {
    match txn_id {
        Some(id) if id.is_empty() || id.len() > MAX_TXN_ID_BYTES => {
            Err(crate::error::ApiError::bad_request(format!(
                "txn_id must have 1 to {MAX_TXN_ID_BYTES} bytes"
            )))
        }
        other => Ok(other),
    }
}

fn required<'a>(
    field: &'a Option<Cow<'_, str>>,
    name: &str,
) -> Result<&'a str, crate::error::ApiError> {
    field
        .as_deref()
        .ok_or_else(|| crate::error::ApiError::bad_request(format!("missing field `{name}`")))
}

impl Incoming<'_> {
    /// The request's type, if it is one of the protocol's.
    pub fn request_type(&self) -> Option<RequestType> {
        RequestType::parse(&self.msg_type)
    }

    /// The typed request: its type known and the fields that type requires present.
    pub fn request(&self) -> Result<Request<'_>, crate::error::ApiError> {
        use crate::error::{ApiError, ErrorCode};
        let Some(kind) = self.request_type() else {
            return Err(ApiError::new(
                ErrorCode::UnknownType,
                format!("unknown request type {:?}", self.msg_type),
            ));
        };
        Ok(match kind {
            RequestType::Auth => Request::Auth {
                token: self.token.as_deref().unwrap_or_default(),
            },
            RequestType::Ping => Request::Ping,
            RequestType::Subscribe => {
                let since = self.since.unwrap_or(0);
                if since < 0 {
                    return Err(ApiError::bad_request(
                        "`since` is the last sequence number seen: 0 or more",
                    ));
                }
                Request::Subscribe {
                    room_id: required(&self.room_id, "room_id")?,
                    since,
                }
            }
            RequestType::Unsubscribe => Request::Unsubscribe {
                room_id: required(&self.room_id, "room_id")?,
            },
            RequestType::Chat => Request::Chat {
                room_id: required(&self.room_id, "room_id")?,
                kind: required(&self.kind, "kind")?,
                ciphertext: required(&self.ciphertext, "ciphertext")?,
                txn_id: checked_txn_id(self.txn_id.as_deref())?,
            },
            RequestType::Signal => {
                let room_id = required(&self.room_id, "room_id")?;
                let to = self
                    .to
                    .as_ref()
                    .ok_or_else(|| ApiError::bad_request("missing field `to`"))?;
                Request::Signal {
                    room_id,
                    to: (&to.user_id, &to.device_id),
                    payload: required(&self.payload, "payload")?,
                }
            }
            RequestType::Typing => Request::Typing {
                room_id: required(&self.room_id, "room_id")?,
                typing: self
                    .typing
                    .ok_or_else(|| ApiError::bad_request("missing field `typing`"))?,
            },
        })
    }
}

/// A text frame that is not a request the server can act on, and how to answer it.
#[derive(Debug)]
pub struct RefusedFrame<'a> {
    /// The request's id, when one could be read and is valid, so the client's request still
    /// gets its one reply.
    pub id: Option<Value>,
    /// The request type to name in the error (`frame` when even that is unreadable).
    pub request: Cow<'a, str>,
    /// The error to send.
    pub error: crate::error::ApiError,
}

/// Decodes one text frame of the WebSocket protocol: the size limit, the JSON, and the request
/// id's rules. This is all the socket does with untrusted bytes before a handler sees typed
/// fields; it is a pure function so that it can be fuzzed on its own (`homeserver/fuzz`).
pub fn decode_request(
    text: &str,
    max_frame_bytes: usize,
) -> Result<Incoming<'_>, RefusedFrame<'_>> {
    use crate::error::{ApiError, ErrorCode};
    if text.len() > max_frame_bytes {
        return Err(RefusedFrame {
            id: None,
            request: Cow::Borrowed("frame"),
            error: ApiError::new(
                ErrorCode::FrameTooLarge,
                format!("frames are limited to {max_frame_bytes} bytes"),
            ),
        });
    }
    let msg: Incoming = match serde_json::from_str(text) {
        Ok(msg) => msg,
        Err(err) => {
            let envelope: Option<Envelope> = serde_json::from_str(text).ok();
            let (id, request) = match envelope {
                Some(e) => (e.id.filter(valid_request_id), e.msg_type.map(Cow::Owned)),
                None => (None, None),
            };
            return Err(RefusedFrame {
                id,
                request: request.unwrap_or(Cow::Borrowed("frame")),
                error: ApiError::bad_request(format!("not a valid request: {err}")),
            });
        }
    };
    if msg.id.as_ref().is_some_and(|id| !valid_request_id(id)) {
        // Not echoed: an id that breaks the rules may be what makes the client's matching fail.
        return Err(RefusedFrame {
            id: None,
            request: msg.msg_type,
            error: ApiError::bad_request(
                "`id` must be a string of at most 64 characters or a non-negative integer",
            ),
        });
    }
    Ok(msg)
}

/// Request ids are echoed in replies, so they are kept small and simple.
pub fn valid_request_id(id: &Value) -> bool {
    match id {
        Value::String(s) => s.chars().count() <= 64,
        Value::Number(n) => n.is_u64(),
        _ => false,
    }
}

/// Deserializes an optional string borrowing from the frame when it has no escapes: serde only
/// borrows into a bare `Cow<str>`, so `Option<Cow<str>>` needs this to avoid an allocation per
/// field on the hot path.
fn borrowed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

/// Just the `type` and `id` of a request, read when the full request does not parse.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type", default)]
    pub msg_type: Option<String>,
    #[serde(default)]
    pub id: Option<Value>,
}

/// The addressee of a signaling message.
#[derive(Debug, Deserialize)]
pub struct DeviceRefIn<'a> {
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(borrow)]
    pub device_id: Cow<'a, str>,
}

/// A device named in an outgoing message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRef<'a> {
    pub user_id: Cow<'a, str>,
    pub device_id: Cow<'a, str>,
}

/// Messages the server pushes over the WebSocket.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outgoing<'a> {
    /// The one success reply to a request that carried an id.
    Ack { id: &'a Value, result: &'a Value },
    /// The one failure reply to a request (with its id, if it had one).
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        request: &'a str,
        code: &'a str,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A persisted room event.
    Event(EventOut<'a>),
    /// A device's live subscription to a room began or ended.
    Presence {
        room_id: &'a str,
        user_id: &'a str,
        device_id: &'a str,
        display_name: &'a str,
        online: bool,
    },
    /// Someone started or stopped typing.
    Typing {
        room_id: &'a str,
        user_id: &'a str,
        device_id: &'a str,
        typing: bool,
    },
    /// An opaque WebRTC signaling payload from one device to another.
    Signal {
        room_id: &'a str,
        from: DeviceRef<'a>,
        payload: &'a str,
    },
    /// This user was kicked from the room.
    Kicked { room_id: &'a str },
    /// The room is gone.
    RoomClosed { room_id: &'a str, reason: &'a str },
    /// The same device subscribed from another socket.
    Replaced { room_id: &'a str },
    /// The server is going away.
    Shutdown {
        reason: &'a str,
        retry_after_ms: u64,
    },
}

/// A persisted event as clients see it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct EventOut<'a> {
    pub room_id: Cow<'a, str>,
    pub seq: i64,
    pub ts: i64,
    pub sender: Cow<'a, str>,
    pub device_id: Cow<'a, str>,
    pub content: Cow<'a, Value>,
}

impl<'a> From<&'a Event> for EventOut<'a> {
    fn from(e: &'a Event) -> Self {
        EventOut {
            room_id: Cow::Borrowed(&e.room_id),
            seq: e.seq,
            ts: e.origin_ts,
            sender: Cow::Borrowed(&e.sender),
            device_id: Cow::Borrowed(&e.device_id),
            content: Cow::Borrowed(&e.content),
        }
    }
}

impl Outgoing<'_> {
    /// Serializes the message into a text frame.
    pub fn to_frame(&self) -> Frame {
        thread_local! {
            // A frame is written into this thread's scratch buffer and copied out at its exact
            // size: serializing into a fresh string grows it several times per frame, and a
            // frame waiting in a queue would keep the grown capacity.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            // Serializing these types cannot fail: every map key is a string.
            let _ = serde_json::to_writer(&mut *buf, self);
            let frame =
                Frame::try_from(tokio_tungstenite::tungstenite::Bytes::copy_from_slice(buf))
                    .unwrap_or_default();
            // One very large frame does not stay in the buffer for the thread's life.
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            frame
        })
    }
}

/// Content of the server-generated `member` event.
pub fn member_content(user_id: &str, display_name: &str, membership: &str) -> Value {
    serde_json::json!({
        "type": "member",
        "user_id": user_id,
        "display_name": display_name,
        "membership": membership,
    })
}

/// Content of the server-generated `lock` event.
pub fn lock_content(locked: bool) -> Value {
    serde_json::json!({ "type": "lock", "locked": locked })
}

/// Content of the server-generated `settings` event: the room's settings as they are after the
/// change (every setting, so that one event says the whole state), and the names of those the
/// change set to a new value (so that clients can say what changed, whatever they saw before).
pub fn settings_content(guests_may_share: bool, lobby: bool, changed: &[&str]) -> Value {
    serde_json::json!({
        "type": "settings",
        "guests_may_share": guests_may_share,
        "lobby": lobby,
        "changed": changed,
    })
}

/// The roles of a room's members, as clients see them. The host (one, named by the room row) and
/// the co-hosts may lock, kick, invite, change settings and answer knocks; only the host names
/// co-hosts and closes the room.
pub mod role {
    pub const HOST: &str = "host";
    pub const COHOST: &str = "cohost";
    pub const GUEST: &str = "guest";
}

/// Content of the server-generated `role` event: `user_id` is now `role` (`host`, `cohost` or
/// `guest`), for `reason` (`promoted`, `demoted`, or `succession`: the host left for good, and
/// `previous`, who was the host, is a guest now).
pub fn role_content(user_id: &str, role: &str, reason: &str, previous: Option<&str>) -> Value {
    let mut content = serde_json::json!({
        "type": "role",
        "user_id": user_id,
        "role": role,
        "reason": reason,
    });
    if let Some(previous) = previous {
        content["previous"] = Value::from(previous);
    }
    content
}

/// Content of the server-generated `knock` event: a newcomer knocked at the locked room
/// (`pending`, until `expires_ts`), or a host answered (`admitted` or `refused`).
pub fn knock_content(user_id: &str, display_name: &str, state: &str, expires_ts: i64) -> Value {
    serde_json::json!({
        "type": "knock",
        "user_id": user_id,
        "display_name": display_name,
        "state": state,
        "expires_ts": expires_ts,
    })
}

/// Checks a chat message's kind and ciphertext against the protocol's rules and the event size
/// limit, and builds its content.
pub fn checked_chat_content(
    kind: &str,
    ciphertext: &str,
    max_event_bytes: usize,
) -> Result<Value, crate::error::ApiError> {
    use crate::error::{ApiError, ErrorCode};
    if kind.is_empty()
        || kind.len() > 32
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(ApiError::bad_request(
            "`kind` must be 1–32 characters of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    if ciphertext.len() > max_event_bytes {
        return Err(ApiError::new(
            ErrorCode::EventTooLarge,
            format!("ciphertext and payloads are limited to {max_event_bytes} bytes"),
        ));
    }
    Ok(chat_content(kind, ciphertext))
}

/// Content of a client's encrypted chat event.
pub fn chat_content(kind: &str, ciphertext: &str) -> Value {
    serde_json::json!({ "type": "chat", "kind": kind, "ciphertext": ciphertext })
}

/// A room as the REST API and the `subscribe` ack describe it.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct RoomSummary {
    pub room_id: String,
    pub origin: String,
    pub host: String,
    pub locked: bool,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
    pub max_participants: usize,
    pub connected: Vec<ConnectedDevice>,
    pub members: Vec<MemberOut>,
    pub latest_seq: i64,
    pub is_host: bool,
    /// Whether any joined member may make invite links (a setting of the host's).
    #[serde(default)]
    pub guests_may_share: bool,
    /// Whether the caller may make invite links now: a host, or any member while
    /// `guests_may_share` is on.
    #[serde(default)]
    pub can_share: bool,
    /// Whether a newcomer with a valid invite who finds the room locked knocks.
    #[serde(default)]
    pub lobby: bool,
    /// The caller's role: `host`, `cohost` or `guest`.
    #[serde(default)]
    pub role: String,
    /// Knocks waiting for an answer (for hosts; empty for everyone else), oldest first.
    #[serde(default)]
    pub knocks: Vec<KnockOut>,
}

/// A knock as hosts see it.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct KnockOut {
    pub user_id: String,
    pub display_name: String,
    pub state: String,
    /// When it lapses unless answered.
    pub expires_ts: i64,
}

/// A device live in a room.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct ConnectedDevice {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
}

/// A member of a room.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct MemberOut {
    pub user_id: String,
    pub display_name: String,
    pub role: String,
    pub membership: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_borrows_and_tolerates_missing_fields() {
        let raw = r#"{"type":"signal","room_id":"!a:b","to":{"user_id":"@u:b","device_id":"D"},"payload":"xyz"}"#;
        let m: Incoming = serde_json::from_str(raw).unwrap();
        assert_eq!(m.msg_type, "signal");
        assert!(matches!(m.payload, Some(Cow::Borrowed("xyz"))));
        assert_eq!(m.to.unwrap().device_id, "D");
        let m: Incoming = serde_json::from_str(r#"{"type":"chat","id":7}"#).unwrap();
        assert_eq!(m.id, Some(Value::from(7)));
        assert!(m.room_id.is_none());
        assert!(serde_json::from_str::<Incoming>(r#"{"id":1}"#).is_err());
    }

    #[test]
    fn decoding_names_what_it_can_of_a_refused_frame() {
        use crate::error::ErrorCode;
        fn refused(text: &str) -> RefusedFrame<'_> {
            decode_request(text, 64).unwrap_err()
        }
        let long = format!(r#"{{"type":"ping","id":1,"x":"{}"}}"#, "x".repeat(64));
        let r = refused(&long);
        assert_eq!(
            (r.error.code, r.id, &*r.request),
            (ErrorCode::FrameTooLarge, None, "frame")
        );
        // The request's own fields are wrong, but its type and id can still be named.
        let r = refused(r#"{"type":"chat","id":"a","kind":5}"#);
        assert_eq!(
            (r.error.code, r.id, &*r.request),
            (ErrorCode::BadRequest, Some(Value::from("a")), "chat")
        );
        // An id that breaks the rules is never echoed.
        let r = refused(r#"{"type":"chat","id":-1,"kind":5}"#);
        assert_eq!((r.id, &*r.request), (None, "chat"));
        let r = refused(r#"{"type":"ping","id":1.5}"#);
        assert_eq!((r.id, &*r.request), (None, "ping"));
        assert_eq!(refused("[1]").request, "frame");
        assert!(decode_request(r#"{"type":"ping","id":18446744073709551615}"#, 64).is_ok());
    }

    #[test]
    fn typed_requests_name_what_is_missing() {
        use crate::error::ErrorCode;
        let typed = |raw: &str| {
            let m: Incoming = serde_json::from_str(raw).unwrap();
            m.request().map_err(|e| e.code).map(|r| format!("{r:?}"))
        };
        assert_eq!(
            typed(
                r#"{"type":"signal","room_id":"!r:s","to":{"user_id":"@u:s","device_id":"D"},"payload":"p"}"#
            ),
            Ok(r#"Signal { room_id: "!r:s", to: ("@u:s", "D"), payload: "p" }"#.to_owned())
        );
        assert_eq!(
            typed(r#"{"type":"chat","room_id":"!r:s","kind":"text"}"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            typed(r#"{"type":"subscribe","room_id":"!r:s","since":-1}"#),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(typed(r#"{"type":"dance"}"#), Err(ErrorCode::UnknownType));
        assert_eq!(typed(r#"{"type":"ping"}"#), Ok("Ping".to_owned()));
        for t in RequestType::ALL {
            assert_eq!(RequestType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn every_request_type_is_in_the_protocol_table() {
        let protocol = include_str!("../PROTOCOL.md");
        let section = &protocol[protocol.find("### Client → server").unwrap()
            ..protocol.find("### Server → client").unwrap()];
        for t in RequestType::ALL {
            assert!(
                section.contains(&format!("| `{}` |", t.as_str())),
                "{} missing",
                t.as_str()
            );
        }
    }

    #[test]
    fn outgoing_shapes() {
        let v: Value = serde_json::from_str(
            &Outgoing::Signal {
                room_id: "!r:s",
                from: DeviceRef {
                    user_id: "@u:s".into(),
                    device_id: "D".into(),
                },
                payload: "p",
            }
            .to_frame(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"signal","room_id":"!r:s","from":{"user_id":"@u:s","device_id":"D"},"payload":"p"})
        );
        let id = Value::from("a");
        let v: Value = serde_json::from_str(
            &Outgoing::Error {
                id: Some(&id),
                request: "chat",
                code: "rate_limited",
                reason: "slow down",
                retry_after_ms: Some(20),
            }
            .to_frame(),
        )
        .unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["retry_after_ms"], 20);
    }

    #[test]
    fn event_round_trip() {
        let e = Event {
            room_id: "!r:s".into(),
            seq: 3,
            sender: "@u:s".into(),
            device_id: "D".into(),
            origin_ts: 5,
            content: chat_content("text", "abc"),
        };
        let frame = Outgoing::Event(EventOut::from(&e)).to_frame();
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "event");
        let back: EventOut = serde_json::from_value(v).unwrap();
        assert_eq!(back, EventOut::from(&e));
    }
}
