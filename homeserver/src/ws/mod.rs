//! The WebSocket: the handshake (with its Origin check), and per socket one reader (this
//! module's loop: frames, heartbeats, the auth deadline) and one writer, which drains the
//! socket's bounded queue (see `crate::engine::conn`). What the frames mean is [`session`]'s.

pub mod session;

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use futures_util::StreamExt;
use serde_json::json;

use crate::engine::ConnHandle;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use session::Session;

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
            state.metrics.count_error(ErrorCode::OriginNotAllowed);
            return Ok(HttpResponse::Forbidden().json(json!({
                "code": ErrorCode::OriginNotAllowed.as_str(),
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

/// Serves one upgraded socket until it closes.
struct Connection;

type Stream = actix_ws::AggregatedMessageStream;

impl Connection {
    async fn run(state: std::sync::Arc<AppState>, session: actix_ws::Session, mut stream: Stream) {
        let limits = &state.settings.limits;
        let (conn, mut rx, control) =
            ConnHandle::new(state.engine.next_conn_id(), limits.send_queue_frames);
        let mut me = Session::new(state.clone(), conn.clone());

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
                            conn.close(code, &reason);
                            break;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > ws.client_timeout {
                        conn.close(1001, "no traffic from the client: considered dead");
                        break;
                    }
                    if ping_session.ping(b"").await.is_err() {
                        break;
                    }
                }
                // Closed by someone else (slow consumer, session ended): stop reading and leave
                // the rooms now, even if the client never answers the close.
                _ = control.closed() => break,
                () = &mut auth_deadline, if !me.is_authenticated() => {
                    conn.close(1008, "authenticate with an `auth` message first");
                    break;
                }
            }
        }

        me.end().await;
        // Dropping the last queue sender ends the writer once it has flushed; a close already
        // asked for is carried out by the writer itself.
        conn.close(1000, "");
        drop(me);
        let _ = writer.await;
    }
}
