//! The live WebSocket session: authentication by first message, subscriptions, chat, signaling,
//! typing, heartbeats and every per-connection limit. One reader task (this module's loop) and
//! one writer task per socket; the writer drains the socket's bounded queue (see `hub`).

use std::collections::HashSet;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use bytestring::ByteString;
use confab_schema::models::NewEvent;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::hub::{ConnHandle, Identity};
use crate::protocol::{self, Incoming, Outgoing};
use crate::sessions;
use crate::time::now_ms;

/// Close code: too many connections for this user.
const CLOSE_TOO_MANY: u16 = 4029;

/// `GET /_confab/client/v1/ws`: checks the Origin, upgrades, and spawns the session.
pub async fn handshake(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    if let Some(origin) = req.headers().get("origin") {
        let allowed = origin.to_str().is_ok_and(|o| {
            state
                .settings
                .allowed_origins()
                .any(|a| a == o.trim_end_matches('/'))
        });
        if !allowed {
            state.count_error(ErrorCode::Unauthorized);
            return Ok(HttpResponse::Forbidden().json(json!({
                "code": "origin_not_allowed",
                "reason": "this web origin may not open a session on this server",
            })));
        }
    }
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let hard = state.settings.limits.hard_frame_bytes;
    let stream = stream
        .max_frame_size(hard)
        .aggregate_continuations()
        .max_continuation_size(hard);
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        Connection::run(state, session, stream).await;
    });
    Ok(response)
}

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

struct Connection {
    state: std::sync::Arc<AppState>,
    conn: ConnHandle,
    who: Option<Identity>,
    rooms: HashSet<String>,
    rate: RateLimit,
}

type Stream = actix_ws::AggregatedMessageStream;

impl Connection {
    async fn run(state: std::sync::Arc<AppState>, session: actix_ws::Session, mut stream: Stream) {
        let limits = &state.settings.limits;
        let (conn, mut rx, control) =
            ConnHandle::new(state.hub.next_conn_id(), limits.send_queue_frames);
        let mut me = Connection {
            rate: RateLimit::new(limits.messages_per_second, limits.message_burst),
            state: state.clone(),
            conn,
            who: None,
            rooms: HashSet::new(),
        };

        // The writer: drains the queue into the socket, and closes it when asked.
        let mut writer_session = session.clone();
        let writer_control = control.clone();
        let linger = state.settings.websocket.client_timeout;
        let writer = actix_web::rt::spawn(async move {
            let control = writer_control;
            // A frame whose send a close interrupted: sent first when flushing, so that the
            // client still gets an unbroken run of frames and resumes after the last one.
            let mut carried = None;
            let (code, reason) = loop {
                tokio::select! {
                    biased;
                    closing = control.closed() => break closing,
                    frame = rx.recv() => match frame {
                        Some(frame) => {
                            // A client that stopped reading blocks this send for as long as it
                            // does not read; the close asked for meanwhile (slow consumer) must
                            // not wait behind it. The channel send is cancel-safe.
                            tokio::select! {
                                biased;
                                sent = writer_session.text(frame.clone()) => {
                                    if sent.is_err() {
                                        return;
                                    }
                                }
                                closing = control.closed() => {
                                    carried = Some(frame);
                                    break closing;
                                }
                            }
                        }
                        // Every sender is gone: the reader ended, having asked for a close.
                        None => break control.closed().await,
                    },
                }
            };
            // Flush what was queued before the close (e.g. `kicked`, `shutdown`, an error), then
            // the close frame; a client that does not read them within `client_timeout` is
            // dropped without (it resumes after the last event it got, like any other).
            let flush = async {
                let queued = std::iter::from_fn(|| rx.try_recv().ok());
                for frame in carried.into_iter().chain(queued) {
                    if writer_session.text(frame).await.is_err() {
                        return;
                    }
                }
                let _ = writer_session
                    .close(Some(CloseReason {
                        code: CloseCode::from(code),
                        description: Some(reason),
                    }))
                    .await;
            };
            let _ = tokio::time::timeout(linger, flush).await;
        });

        let ws = &state.settings.websocket;
        let mut heartbeat = tokio::time::interval(ws.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let auth_deadline = tokio::time::sleep(ws.auth_timeout);
        tokio::pin!(auth_deadline);
        let mut ping_session = session;

        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    last_heard = Instant::now();
                    match msg {
                        Ok(AggregatedMessage::Text(text)) => {
                            if !me.on_text(&text).await {
                                break;
                            }
                        }
                        Ok(AggregatedMessage::Binary(_)) => {
                            me.reply_error(None, "binary", &ApiError::bad_request(
                                "binary frames are not part of the protocol; send JSON text",
                            ));
                        }
                        Ok(AggregatedMessage::Ping(bytes)) => {
                            let _ = ping_session.pong(&bytes).await;
                        }
                        Ok(AggregatedMessage::Pong(_)) => {}
                        Ok(AggregatedMessage::Close(_)) => break,
                        Err(err) => {
                            let (code, reason) = match err {
                                actix_ws::ProtocolError::Overflow => (
                                    1009,
                                    "frame above the hard size limit".to_owned(),
                                ),
                                // RFC 6455 answers a text frame that is not UTF-8 with 1007;
                                // actix-ws reports it only as an I/O error carrying the text of
                                // a `Utf8Error`.
                                actix_ws::ProtocolError::Io(e)
                                    if e.kind() == std::io::ErrorKind::InvalidData
                                        && e.to_string().contains("utf-8") =>
                                {
                                    (1007, "text frames must be valid UTF-8".to_owned())
                                }
                                other => (1002, format!("protocol error: {other}")),
                            };
                            me.conn.close(code, &reason);
                            break;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > ws.client_timeout {
                        me.conn.close(1001, "no traffic from the client: considered dead");
                        break;
                    }
                    if ping_session.ping(b"").await.is_err() {
                        break;
                    }
                }
                // Closed by someone else (slow consumer, session ended): stop reading and leave
                // the rooms now, even if the client never answers the close.
                _ = control.closed() => break,
                () = &mut auth_deadline, if me.who.is_none() => {
                    me.conn.close(1008, "authenticate with an `auth` message first");
                    break;
                }
            }
        }

        if let Some(who) = &me.who {
            let rooms: Vec<String> = me.rooms.drain().collect();
            state.hub.disconnect(who, &me.conn, &rooms).await;
        }
        // Dropping the last queue sender ends the writer once it has flushed; a close already
        // asked for is carried out by the writer itself.
        me.conn.close(1000, "");
        drop(me);
        let _ = writer.await;
    }

    fn send(&self, msg: &Outgoing<'_>) {
        self.conn.send(msg.to_frame());
    }

    fn ack(&self, id: Option<&Value>, result: &Value) {
        if let Some(id) = id {
            self.send(&Outgoing::Ack { id, result });
        }
    }

    fn reply_error(&self, id: Option<&Value>, request: &str, err: &ApiError) {
        self.state.count_error(err.code);
        self.send(&Outgoing::Error {
            id,
            request,
            code: err.code.as_str(),
            reason: &err.reason,
            retry_after_ms: err.retry_after_ms,
        });
    }

    /// Handles one text frame; `false` ends the session.
    async fn on_text(&mut self, text: &ByteString) -> bool {
        let limits = &self.state.settings.limits;
        let msg = match protocol::decode_request(text, limits.max_frame_bytes) {
            Ok(msg) => msg,
            Err(refused) => {
                self.reply_error(refused.id.as_ref(), &refused.request, &refused.error);
                return true;
            }
        };
        let id = msg.id.as_ref();
        let kind: &str = &msg.msg_type;
        if let Err(retry) = self.rate.take() {
            let mut err = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} messages per second per connection",
                    limits.messages_per_second
                ),
            );
            err.retry_after_ms = Some(retry);
            self.reply_error(id, kind, &err);
            return true;
        }
        self.state
            .metrics
            .ws_messages
            .with_label_values(&[metric_type(kind)])
            .inc();

        let Some(who) = self.who.clone() else {
            return self.authenticate(&msg).await;
        };
        let result = match kind {
            "auth" => Err(ApiError::new(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            "ping" => Ok(json!({})),
            "subscribe" => {
                return self.subscribe(&who, &msg).await;
            }
            "unsubscribe" => self.unsubscribe(&who, &msg).await,
            "chat" => {
                self.chat(&who, &msg).await;
                return true;
            }
            "signal" => self.signal(&who, &msg),
            "typing" => self.typing(&who, &msg),
            other => Err(ApiError::new(
                ErrorCode::UnknownType,
                format!("unknown request type {other:?}"),
            )),
        };
        match result {
            Ok(value) => self.ack(id, &value),
            Err(err) => self.reply_error(id, kind, &err),
        }
        true
    }

    async fn authenticate(&mut self, msg: &Incoming<'_>) -> bool {
        let id = msg.id.as_ref();
        if msg.msg_type != "auth" {
            self.reply_error(
                id,
                &msg.msg_type,
                &ApiError::new(
                    ErrorCode::NotAuthenticated,
                    "the first message must be `auth` with an access token",
                ),
            );
            self.conn.close(1008, "not authenticated");
            return false;
        }
        let token = msg.token.as_deref().unwrap_or_default();
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
        if let Err(err) = self.state.hub.register(&who.user_id, &self.conn) {
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
        self.who = Some(who);
        true
    }

    async fn subscribe(&mut self, who: &Identity, msg: &Incoming<'_>) -> bool {
        let id = msg.id.as_ref();
        let since = msg.since.unwrap_or(0);
        if since < 0 {
            self.reply_error(
                id,
                "subscribe",
                &ApiError::bad_request("`since` is the last sequence number seen: 0 or more"),
            );
            return true;
        }
        let result = async {
            let room_id = required(&msg.room_id, "room_id")?;
            let room_id = self.state.check_subscriber(room_id, who).await?;
            let live = self
                .state
                .hub
                .subscribe(room_id.as_str(), who, &self.conn, since)
                .await?;
            self.rooms.insert(room_id.to_string());
            if room_id.server_name() != &self.state.settings.server.name {
                // A replica: the origin learns of this device and tells who else is there. If
                // it cannot be reached the room still works here, read-only in effect.
                if let Err(err) =
                    crate::federation::rooms::announce(&self.state, &room_id, who).await
                {
                    if err.code != ErrorCode::Unavailable {
                        // The origin refused (no longer a member, room full): so do we.
                        self.state
                            .hub
                            .unsubscribe(room_id.as_str(), who, self.conn.id)
                            .await;
                        self.rooms.remove(room_id.as_str());
                        return Err(err);
                    }
                    tracing::warn!(room_id = %room_id, error = %err, "could not announce a device to the room's origin");
                }
            }
            let summary = self.state.get_room(room_id.as_str(), who).await?;
            Ok::<_, ApiError>((live, summary))
        }
        .await;
        match result {
            Ok((live, summary)) => {
                let value = serde_json::to_value(&summary).unwrap_or_default();
                self.ack(id, &value);
                if let Err(err) = self.state.hub.catch_up(&live, who, &self.conn, since).await {
                    self.reply_error(id, "subscribe", &err);
                }
            }
            Err(err) => self.reply_error(id, "subscribe", &err),
        }
        true
    }

    async fn unsubscribe(&mut self, who: &Identity, msg: &Incoming<'_>) -> Result<Value, ApiError> {
        let room_id = required(&msg.room_id, "room_id")?;
        if !self.rooms.remove(room_id) {
            return Err(not_subscribed());
        }
        self.state.hub.unsubscribe(room_id, who, self.conn.id).await;
        Ok(json!({}))
    }

    /// Queues the event in order and acknowledges it from a separate task once committed, so the
    /// socket keeps reading (signaling must not wait behind a database commit).
    async fn chat(&mut self, who: &Identity, msg: &Incoming<'_>) {
        let id = msg.id.clone();
        let prepared = (|| {
            let room_id = required(&msg.room_id, "room_id")?;
            let kind = required(&msg.kind, "kind")?;
            let ciphertext = required(&msg.ciphertext, "ciphertext")?;
            let content = protocol::checked_chat_content(
                kind,
                ciphertext,
                self.state.settings.limits.max_event_bytes,
            )?;
            if !self.state.hub.is_subscribed(room_id, who, self.conn.id) {
                return Err(not_subscribed());
            }
            Ok((room_id.to_owned(), kind, ciphertext, content))
        })();
        let (room_id, kind, ciphertext, content) = match prepared {
            Ok(p) => p,
            Err(err) => return self.reply_error(id.as_ref(), "chat", &err),
        };
        // A room of another homeserver: its origin numbers the message; ours forwards it.
        let origin = confab_federation::ids::RoomId::parse(&room_id)
            .ok()
            .map(|r| r.server_name().clone())
            .filter(|s| s != &self.state.settings.server.name);
        let pending: PendingChat = match origin {
            Some(origin) => {
                let item = crate::federation::rooms::SendItem {
                    room_id: room_id.clone(),
                    sender: who.user_id.clone(),
                    device_id: who.device_id.clone(),
                    kind: kind.to_owned(),
                    ciphertext: ciphertext.to_owned(),
                };
                let rx = self
                    .state
                    .chat_forwarder
                    .forward(&self.state.federation.client, &origin, item)
                    .await;
                Box::pin(async move {
                    rx.await.unwrap_or_else(|_| {
                        Err(ApiError::internal("chat forwarder", &"forwarder stopped"))
                    })
                })
            }
            None => {
                let pending = self
                    .state
                    .writer
                    .enqueue(
                        &room_id,
                        NewEvent {
                            sender: who.user_id.clone(),
                            device_id: who.device_id.clone(),
                            origin_ts: now_ms(),
                            content,
                        },
                    )
                    .await;
                Box::pin(async move { pending.await.map(|e| (e.seq, e.origin_ts)) })
            }
        };
        let conn = self.conn.clone();
        let state = self.state.clone();
        actix_web::rt::spawn(async move {
            match pending.await {
                Ok((seq, ts)) => {
                    if let Some(id) = &id {
                        let result = json!({ "seq": seq, "ts": ts });
                        conn.send(
                            Outgoing::Ack {
                                id,
                                result: &result,
                            }
                            .to_frame(),
                        );
                    }
                }
                Err(err) => {
                    state.count_error(err.code);
                    conn.send(
                        Outgoing::Error {
                            id: id.as_ref(),
                            request: "chat",
                            code: err.code.as_str(),
                            reason: &err.reason,
                            retry_after_ms: err.retry_after_ms,
                        }
                        .to_frame(),
                    );
                }
            }
        });
    }

    fn signal(&self, who: &Identity, msg: &Incoming<'_>) -> Result<Value, ApiError> {
        let room_id = required(&msg.room_id, "room_id")?;
        let to = msg
            .to
            .as_ref()
            .ok_or_else(|| ApiError::bad_request("missing field `to`"))?;
        let payload = required(&msg.payload, "payload")?;
        self.check_event_size(payload)?;
        self.state.hub.relay_signal(
            room_id,
            who,
            self.conn.id,
            &to.user_id,
            &to.device_id,
            payload,
        )?;
        Ok(json!({}))
    }

    fn typing(&self, who: &Identity, msg: &Incoming<'_>) -> Result<Value, ApiError> {
        let room_id = required(&msg.room_id, "room_id")?;
        let typing = msg
            .typing
            .ok_or_else(|| ApiError::bad_request("missing field `typing`"))?;
        self.state.hub.typing(room_id, who, self.conn.id, typing)?;
        Ok(json!({}))
    }

    fn check_event_size(&self, payload: &str) -> Result<(), ApiError> {
        let max = self.state.settings.limits.max_event_bytes;
        if payload.len() > max {
            return Err(ApiError::new(
                ErrorCode::EventTooLarge,
                format!("ciphertext and payloads are limited to {max} bytes"),
            ));
        }
        Ok(())
    }
}

/// A chat message on its way: its number and time once committed (here or at the room's origin).
type PendingChat = std::pin::Pin<Box<dyn Future<Output = Result<(i64, i64), ApiError>> + Send>>;

fn required<'a>(
    field: &'a Option<std::borrow::Cow<'_, str>>,
    name: &str,
) -> Result<&'a str, ApiError> {
    field
        .as_deref()
        .ok_or_else(|| ApiError::bad_request(format!("missing field `{name}`")))
}

fn not_subscribed() -> ApiError {
    ApiError::new(
        ErrorCode::NotSubscribed,
        "this connection is not subscribed to that room",
    )
}

/// Metric label for a request type; unknown types share one label so that clients cannot grow
/// the metric without bound.
fn metric_type(kind: &str) -> &'static str {
    match kind {
        "auth" => "auth",
        "ping" => "ping",
        "subscribe" => "subscribe",
        "unsubscribe" => "unsubscribe",
        "chat" => "chat",
        "signal" => "signal",
        "typing" => "typing",
        _ => "unknown",
    }
}
