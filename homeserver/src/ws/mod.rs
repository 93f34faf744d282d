//! The WebSocket. The HTTP server hands every upgrade request's connection to [`upgrade`] (actix-
//! http's upgrade seam), which checks it, answers the handshake itself and serves the socket with
//! tungstenite from then on: the HTTP dispatcher and its per-connection buffers are gone once a
//! socket is open, which is what keeps an idle socket small (see the README's figures).
//!
//! Per socket, one reader (frames, the liveness check, the auth deadline; what frames mean is
//! [`session`]'s) and one writer, which drains the socket's bounded queue (see
//! `crate::engine::conn`) in bursts: every frame waiting is written, then one flush.

pub mod placement;
pub mod session;

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix_codec::Framed;
use actix_http::{Method, Request, h1};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::engine::ConnHandle;
use crate::engine::conn::{ConnControl, Outbox};
use crate::error::{ApiError, ErrorCode};
use crate::limiter::{Slot, address_key, client_ip_of};
use crate::protocol::{CLIENT_PREFIX, Frame};
use crate::rooms::parse_room_id;
use crate::state::AppState;
use confab_federation::ids::RoomId;
use placement::Placed;
use session::Session;

/// Bytes read from a socket at a time. Protocol frames are small (a signal is a few hundred
/// bytes); a larger frame grows the buffer for as long as it is being read.
const READ_BUFFER: usize = 4096;

/// Bytes gathered before the writer writes to the socket even within a burst.
const WRITE_BUFFER: usize = 16 * 1024;

/// Takes over an upgrade request's connection: answers anything but a WebSocket handshake for
/// the client socket path with an HTTP error, checks the Origin, then serves the socket on its
/// own tasks, so that the HTTP connection's state is dropped now.
pub async fn upgrade<T>(
    state: Arc<AppState>,
    req: Request,
    framed: Framed<T, h1::Codec>,
) -> Result<(), actix_web::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parts = framed.into_parts();
    let (mut io, read_buf) = (parts.io, parts.read_buf);
    let head = req.head();
    let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok());
    let is_websocket = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let key = header("sec-websocket-key").map(str::to_owned);
    let path_ok = head.uri.path() == format!("{CLIENT_PREFIX}/ws");
    let room_hint = room_hint(head.uri.query());
    let mut refusal = if !path_ok {
        Some((
            404,
            ApiError::new(
                ErrorCode::NotFound,
                "no such endpoint (upgrades go to the WebSocket path only)",
            ),
        ))
    } else if head.method != Method::GET || !is_websocket || key.is_none() {
        Some((400, ApiError::bad_request("expected a WebSocket handshake")))
    } else if let Err(err) = &room_hint {
        Some((400, err.clone()))
    } else if header("sec-websocket-version") != Some("13") {
        Some((
            400,
            ApiError::bad_request("only WebSocket version 13 is spoken"),
        ))
    } else if let Some(origin) = header("origin")
        && !state
            .settings
            .allowed_origins()
            .any(|a| a == origin.trim_end_matches('/'))
    {
        Some((
            403,
            ApiError::new(
                ErrorCode::OriginNotAllowed,
                "this web origin may not open a session on this server",
            ),
        ))
    } else {
        None
    };
    // A place under the per-address cap, held by the socket for its life.
    let slot = match refusal {
        Some(_) => None,
        None => {
            let ip = client_ip_of(req.peer_addr(), &head.headers, &state.trusted_proxies);
            match state.socket_addresses.admit(address_key(ip)) {
                Ok(slot) => Some(slot),
                Err(err) => {
                    refusal = Some((429, err));
                    None
                }
            }
        }
    };
    if let Some((status, err)) = refusal {
        state.metrics.count_error(err.code);
        let body = json!({ "code": err.code.as_str(), "reason": err.reason }).to_string();
        let reason = match status {
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        io.write_all(response.as_bytes()).await?;
        return Ok(io.shutdown().await?);
    }
    let accept = derive_accept_key(key.unwrap_or_default().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\n\r\n"
    );
    io.write_all(response.as_bytes()).await?;
    io.flush().await?;
    let hard = state.settings.limits.hard_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_frame_size(Some(hard))
        .max_message_size(Some(hard));
    let read_buf = read_buf.to_vec();
    // Served on an HTTP worker's thread, with its reader and writer on that thread's runtime:
    // measured against serving every socket on the engine's multi-threaded runtime, relaying a
    // signal costs less this way (README, Performance), and the fan-out of committed events,
    // which crosses threads either way, wakes each writer once per burst. A plain TCP socket
    // that names its room moves to the thread of the room's other sockets (see `placement`);
    // a TLS one stays where it was accepted.
    let mut io = Some(io);
    if let Some(tcp) = (&mut io as &mut dyn Any).downcast_mut::<Option<tokio::net::TcpStream>>()
        && let Some(placed) = state
            .placement
            .place(room_hint.ok().flatten().as_ref().map(|r| r.as_str()))
        && let Some(tcp) = tcp.take()
    {
        let elsewhere = placed.elsewhere();
        let socket = Socket {
            state,
            read_buf,
            config,
            slot,
            placed: Some(placed),
        };
        let Some(elsewhere) = elsewhere else {
            actix_web::rt::spawn(socket.serve(tcp));
            return Ok(());
        };
        // Out of this thread's event loop, into the other's.
        let std = tcp.into_std()?;
        let job: placement::Job = Box::new(move || match tokio::net::TcpStream::from_std(std) {
            Ok(tcp) => drop(actix_web::rt::spawn(socket.serve(tcp))),
            Err(err) => tracing::warn!(error = %err, "a socket could not change threads"),
        });
        // Its worker stopped (the server is stopping): served here, as it would have been.
        if let Err(job) = elsewhere.run(job) {
            job();
        }
        return Ok(());
    }
    if let Some(io) = io {
        let socket = Socket {
            state,
            read_buf,
            config,
            slot,
            placed: None,
        };
        actix_web::rt::spawn(socket.serve(io));
    }
    Ok(())
}

/// An accepted socket, before its tasks start.
struct Socket {
    state: Arc<AppState>,
    /// Bytes read past the handshake.
    read_buf: Vec<u8>,
    config: WebSocketConfig,
    /// Its place under the per-address cap, and on a worker thread; held for its life.
    slot: Option<Slot>,
    placed: Option<Placed>,
}

impl Socket {
    async fn serve<T>(self, io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = Some(self.config);
        let socket =
            WebSocketStream::from_partially_read(io, self.read_buf, Role::Server, config).await;
        let address = self.slot.as_ref().map_or("unknown", Slot::key).to_owned();
        serve(self.state, socket, address).await;
        drop((self.slot, self.placed));
    }
}

/// The room a socket says it is for (`?room=`), if it names one; a hint only (see `placement`).
fn room_hint(query: Option<&str>) -> Result<Option<RoomId>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Hint {
        room: Option<String>,
    }
    let Some(query) = query else { return Ok(None) };
    let hint = actix_web::web::Query::<Hint>::from_query(query)
        .map_err(|_| ApiError::bad_request("the WebSocket URL's query is not form-encoded"))?;
    hint.into_inner()
        .room
        .map(|room| parse_room_id(&room))
        .transpose()
}

/// `GET /_confab/client/v1/ws` without an upgrade: the upgrade itself never reaches the routes.
pub async fn not_an_upgrade() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::bad_request(
        "this is the WebSocket endpoint: open it with a WebSocket handshake",
    ))
}

/// Serves one socket until it closes.
async fn serve<T>(state: Arc<AppState>, socket: WebSocketStream<T>, address: String)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &state.settings.limits;
    let (conn, outbox, control) =
        ConnHandle::new(state.engine.next_conn_id(), limits.send_queue_frames);
    let (sink, mut stream) = socket.split();
    let ws = &state.settings.websocket;
    let writer = tokio::spawn(write(
        sink,
        outbox,
        control.clone(),
        ws.heartbeat_interval,
        ws.client_timeout,
    ));
    let mut me = Session::new(state.clone(), conn.clone(), address);

    let mut heartbeat = tokio::time::interval(ws.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let auth_deadline = tokio::time::sleep(ws.auth_timeout);
    tokio::pin!(auth_deadline);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { break };
                last_heard = Instant::now();
                match msg {
                    Ok(Message::Text(text)) => {
                        if !me.on_text(&text).await {
                            break;
                        }
                    }
                    Ok(Message::Binary(_)) => {
                        me.reply_error(None, "binary", &ApiError::bad_request(
                            "binary frames are not part of the protocol; send JSON text",
                        ));
                    }
                    // tungstenite answers pings itself.
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                    Ok(Message::Close(_)) => break,
                    Err(err) => {
                        let (code, reason) = match err {
                            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                                (1009, "frame above the hard size limit".to_owned())
                            }
                            // RFC 6455 answers a text frame that is not UTF-8 with 1007.
                            WsError::Utf8(_) => (1007, "text frames must be valid UTF-8".to_owned()),
                            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
                            | WsError::ConnectionClosed
                            | WsError::AlreadyClosed
                            | WsError::Io(_) => break,
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
    // The writer flushes what was queued and closes; a close already asked for keeps its code.
    conn.close(1000, "");
    drop(me);
    drop(conn);
    let _ = writer.await;
    drop(stream);
}

/// The writer: drains the queue into the socket in bursts, pings it every `heartbeat`, and
/// closes it when asked.
async fn write<S>(
    mut sink: S,
    mut outbox: Outbox,
    control: Arc<ConnControl>,
    heartbeat: std::time::Duration,
    linger: std::time::Duration,
) where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let mut ping = tokio::time::interval(heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    // The burst being written. One a close interrupted is written first when flushing, so that
    // the client still gets an unbroken run of frames and resumes after the last one.
    let mut carried: VecDeque<Frame> = VecDeque::new();
    let (code, reason) = loop {
        tokio::select! {
            biased;
            closing = control.closed() => break closing,
            () = outbox.take(&mut carried) => {
                    // A client that stopped reading blocks this write for as long as it does
                    // not read; the close asked for meanwhile (slow consumer) must not wait
                    // behind it.
                    let burst = async {
                        // Taken off only once fed, so a burst cut short by a close loses
                        // nothing (feeding is done within one poll, so cancellation cannot
                        // land between the write and the removal).
                        while let Some(frame) = carried.front() {
                            sink.feed(Message::Text(frame.clone())).await?;
                            carried.pop_front();
                        }
                        sink.flush().await
                    };
                    tokio::select! {
                        biased;
                        written = burst => if written.is_err() { return; },
                        closing = control.closed() => break closing,
                    }
                    Outbox::shrink(&mut carried);
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    // Flush what was queued before the close (e.g. `kicked`, `shutdown`, an error), then the
    // close frame; a client that does not read them within `client_timeout` is dropped without
    // (it resumes after the last event it got, like any other).
    let flush = async {
        outbox.try_take(&mut carried);
        for frame in carried {
            sink.feed(Message::Text(frame)).await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })))
        .await
    };
    let _ = tokio::time::timeout(linger, flush).await;
}
