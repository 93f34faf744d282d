//! One socket's protocol, transport aside: authentication by first message, the per-connection
//! rate limit, and every typed request handed to the engine. Each request with an id gets
//! exactly one reply (an ack or an error); replies and pushed frames go through the socket's
//! queue ([`ConnHandle`]), so they leave in the order they were decided.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::engine::live::LiveRoom;
use crate::engine::{ChatReply, ConnHandle, Identity};
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{self, Outgoing, Request};
use crate::rooms::parse_room_id;
use crate::sessions;
use crate::state::AppState;

/// Close code: too many connections for this user.
const CLOSE_TOO_MANY: u16 = 4029;

/// A token bucket: `rate` per second, `burst` at once.
struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self) -> Result<(), u64> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

/// The protocol state of one socket.
pub struct Session {
    state: Arc<AppState>,
    conn: ConnHandle,
    /// Shared, not copied, by every request the socket makes.
    who: Option<Arc<Identity>>,
    /// The rooms subscribed to, held so that a message looks nothing up to find its room.
    rooms: HashMap<String, Arc<LiveRoom>>,
    rate: RateLimit,
    /// The client's address as the per-address limit counts it.
    address: String,
}

impl Session {
    pub fn new(state: Arc<AppState>, conn: ConnHandle, address: String) -> Self {
        let limits = &state.settings.limits;
        Self {
            rate: RateLimit::new(limits.messages_per_second, limits.message_burst),
            state,
            conn,
            who: None,
            rooms: HashMap::new(),
            address,
        }
    }

    /// Whether the socket has authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.who.is_some()
    }

    /// Leaves every room the socket subscribed to and forgets it.
    pub async fn end(&mut self) {
        if let Some(who) = &self.who {
            let rooms: Vec<String> = self.rooms.drain().map(|(id, _)| id).collect();
            Box::pin(self.state.engine.disconnect(who, &self.conn, &rooms)).await;
        }
    }

    fn send(&self, msg: &Outgoing<'_>) {
        self.conn.send(msg.to_frame());
    }

    fn ack(&self, id: Option<&Value>, result: &Value) {
        if let Some(id) = id {
            self.send(&Outgoing::Ack { id, result });
        }
    }

    /// Answers a request (or a frame) with an error.
    pub fn reply_error(&self, id: Option<&Value>, request: &str, err: &ApiError) {
        self.state.metrics.count_error(err.code);
        self.send(&Outgoing::Error {
            id,
            request,
            code: err.code.as_str(),
            reason: &err.reason,
            retry_after_ms: err.retry_after_ms,
        });
    }

    /// Handles one text frame; `false` ends the session. Requests that wait on the database
    /// are boxed: a socket's task is as large as its largest wait, and an idle socket should not
    /// carry the room of a subscribe's queries while it waits for its next frame.
    pub async fn on_text(&mut self, text: &str) -> bool {
        let limits = &self.state.settings.limits;
        let msg = match protocol::decode_request(text, limits.max_frame_bytes) {
            Ok(msg) => msg,
            Err(refused) => {
                self.reply_error(refused.id.as_ref(), &refused.request, &refused.error);
                return true;
            }
        };
        let id = msg.id.as_ref();
        let name: &str = &msg.msg_type;
        if let Err(retry) = self.rate.take() {
            let mut err = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} messages per second per connection",
                    limits.messages_per_second
                ),
            );
            err.retry_after_ms = Some(retry);
            self.reply_error(id, name, &err);
            return true;
        }
        // Unknown types share one label, so that clients cannot grow the metric without bound.
        self.state.metrics.count_ws_message(msg.request_type());
        let request = msg.request();
        let Some(who) = self.who.clone() else {
            return Box::pin(self.authenticate(id, name, request)).await;
        };
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                self.reply_error(id, name, &err);
                return true;
            }
        };
        let result = match request {
            Request::Auth { .. } => Err(ApiError::new(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            Request::Ping => Ok(json!({})),
            Request::Subscribe { room_id, since } => {
                Box::pin(self.subscribe(&who, id, room_id, since)).await;
                return true;
            }
            Request::Unsubscribe { room_id } => Box::pin(self.unsubscribe(&who, room_id)).await,
            Request::Chat {
                room_id,
                kind,
                ciphertext,
                txn_id,
            } => {
                Box::pin(self.chat(&who, id, room_id, kind, ciphertext, txn_id)).await;
                return true;
            }
            Request::Signal {
                room_id,
                to,
                payload,
            } => self.signal(&who, room_id, to, payload),
            Request::Typing { room_id, typing } => match self.rooms.get(room_id) {
                Some(live) => self
                    .state
                    .engine
                    .typing(live, &who, self.conn.id, typing)
                    .map(|()| json!({})),
                None => Err(not_subscribed()),
            },
        };
        match result {
            Ok(value) => self.ack(id, &value),
            Err(err) => self.reply_error(id, name, &err),
        }
        true
    }

    async fn authenticate(
        &mut self,
        id: Option<&Value>,
        name: &str,
        request: Result<Request<'_>, ApiError>,
    ) -> bool {
        let Ok(Request::Auth { token }) = request else {
            self.reply_error(
                id,
                name,
                &ApiError::new(
                    ErrorCode::NotAuthenticated,
                    "the first message must be `auth` with an access token",
                ),
            );
            self.conn.close(1008, "not authenticated");
            return false;
        };
        let who = match sessions::authenticate(&self.state.pool, token).await {
            Ok(who) => who,
            Err(err) => {
                self.reply_error(id, "auth", &err);
                if err.code == ErrorCode::Unauthorized {
                    self.conn.close(1008, "authentication failed");
                    return false;
                }
                // The database being away is no reason to drop the socket: the client may retry.
                return true;
            }
        };
        let registered = self
            .state
            .engine
            .register(&who.user_id, &self.conn, &self.address)
            .await;
        if let Err(err) = registered {
            self.reply_error(id, "auth", &err);
            self.conn.close(CLOSE_TOO_MANY, "too many connections");
            return false;
        }
        self.ack(
            id,
            &json!({
                "user_id": who.user_id,
                "device_id": who.device_id,
                "display_name": who.display_name,
            }),
        );
        self.who = Some(Arc::new(who));
        true
    }

    async fn subscribe(&mut self, who: &Identity, id: Option<&Value>, room_id: &str, since: i64) {
        let engine = &self.state.engine;
        let result = async {
            let room_id = parse_room_id(room_id)?;
            let live = engine.subscribe(&room_id, who, &self.conn, since).await?;
            self.rooms.insert(room_id.to_string(), live.clone());
            let summary = self.state.rooms.get_room(room_id.as_str(), who).await?;
            Ok::<_, ApiError>((live, summary))
        }
        .await;
        match result {
            Ok((live, summary)) => {
                let value = serde_json::to_value(&summary).unwrap_or_default();
                self.ack(id, &value);
                if let Err(err) = engine.catch_up(&live, who, &self.conn, since).await {
                    self.reply_error(id, "subscribe", &err);
                }
            }
            Err(err) => self.reply_error(id, "subscribe", &err),
        }
    }

    async fn unsubscribe(&mut self, who: &Identity, room_id: &str) -> Result<Value, ApiError> {
        if self.rooms.remove(room_id).is_none() {
            return Err(not_subscribed());
        }
        self.state
            .engine
            .unsubscribe(room_id, who, self.conn.id)
            .await;
        Ok(json!({}))
    }

    /// Queues the message in order; it is acknowledged once committed, with the room's fan-out
    /// (see `crate::engine::reply`), so the socket keeps reading meanwhile (signaling must not
    /// wait behind a database commit).
    async fn chat(
        &mut self,
        who: &Identity,
        id: Option<&Value>,
        room_id: &str,
        kind: &str,
        ciphertext: &str,
        txn_id: Option<&str>,
    ) {
        let Some(live) = self.rooms.get(room_id) else {
            // A malformed message is answered for what it is, subscribed or not.
            let max = self.state.settings.limits.max_event_bytes;
            let err = protocol::checked_chat_content(kind, ciphertext, max)
                .err()
                .unwrap_or_else(not_subscribed);
            return self.reply_error(id, "chat", &err);
        };
        let reply = ChatReply::Socket {
            conn: self.conn.clone(),
            id: id.cloned(),
        };
        self.state
            .engine
            .chat(live, who, self.conn.id, (kind, ciphertext), txn_id, reply)
            .await;
    }

    fn signal(
        &self,
        who: &Identity,
        room_id: &str,
        to: (&str, &str),
        payload: &str,
    ) -> Result<Value, ApiError> {
        let max = self.state.settings.limits.max_event_bytes;
        if payload.len() > max {
            return Err(ApiError::new(
                ErrorCode::EventTooLarge,
                format!("ciphertext and payloads are limited to {max} bytes"),
            ));
        }
        let live = self.rooms.get(room_id).ok_or_else(not_subscribed)?;
        self.state
            .engine
            .signal(live, who, self.conn.id, to, payload)?;
        Ok(json!({}))
    }
}

fn not_subscribed() -> ApiError {
    ApiError::new(
        ErrorCode::NotSubscribed,
        "this connection is not subscribed to that room",
    )
}
