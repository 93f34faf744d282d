//! Hostile input at every boundary, in one table per surface (WebSocket, REST, federation): each
//! row is one input and the exact machine-readable answer it must get. This is the one place that
//! lists the boundaries; the other tests cover the flows. After every row the server must still
//! serve a normal chat round trip, and nothing may have panicked or answered `internal`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use confab_federation::xmatrix::sign_request;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Guest, TestServer, WsClient};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const MAX_FRAME: usize = 32 * 1024;
const HARD_FRAME: usize = 64 * 1024;
const MAX_EVENT: usize = 1024;
const MAX_BODY: usize = 32 * 1024;
const MAX_FEDERATION_BODY: usize = 32 * 1024;

/// Panics anywhere in this process: the servers run in it, so a handler or task that panicked
/// shows up here even when actix or tokio swallowed it.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// `n` nested arrays around nothing: `[[…]]`.
fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// A JSON text of exactly `len` bytes: `prefix` then spaces then `suffix`, which JSON ignores.
fn padded(prefix: &str, suffix: &str, len: usize) -> String {
    let text = format!(
        "{prefix}{}{suffix}",
        " ".repeat(len - prefix.len() - suffix.len())
    );
    assert_eq!(text.len(), len);
    text
}

/// Where a WebSocket row is sent.
#[derive(Clone, Copy, PartialEq)]
enum Socket {
    /// The host's socket, authenticated and subscribed, used by row after row.
    Shared,
    /// A fresh authenticated socket of the host (rows that end the connection).
    FreshAuthed,
    /// A fresh socket that has not authenticated.
    FreshUnauthed,
}

/// What a WebSocket row must get back.
enum WsAnswer {
    /// An `error` with this code, carrying the request's id if `Some`.
    Error(&'static str, Option<u64>),
    /// An `ack` for this id.
    Ack(u64),
    /// The socket closed with this code (after an error with this code, if `Some`).
    Close(u16, Option<&'static str>),
}

struct WsRow {
    name: &'static str,
    socket: Socket,
    frame: Message,
    answer: WsAnswer,
}

fn text(name: &'static str, frame: impl Into<String>, answer: WsAnswer) -> WsRow {
    WsRow {
        name,
        socket: Socket::Shared,
        frame: Message::text(frame.into()),
        answer,
    }
}

fn json_row(name: &'static str, frame: Value, answer: WsAnswer) -> WsRow {
    text(name, frame.to_string(), answer)
}

/// What a REST or federation row sends as its body.
enum Body {
    None,
    Json(Value),
    /// Bytes sent as they are, with this content type.
    Raw(Vec<u8>, &'static str),
}

struct HttpRow {
    name: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Body,
    /// Status and the body's `code` (client API) or `errcode` (federation); `None` for success.
    answer: (u16, Option<&'static str>),
}

fn http(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    token: Option<&str>,
    body: Body,
    answer: (u16, Option<&'static str>),
) -> HttpRow {
    HttpRow {
        name,
        method,
        path: path.into(),
        token: token.map(str::to_owned),
        body,
        answer,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_boundary_gets_its_exact_error_and_the_server_carries_on() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let peer = TestServer::start_federating(&[]).await;
    let s = TestServer::start_federating(&[
        ("CONFAB__LIMITS__MAX_FRAME_BYTES", &MAX_FRAME.to_string()),
        ("CONFAB__LIMITS__HARD_FRAME_BYTES", &HARD_FRAME.to_string()),
        ("CONFAB__LIMITS__MAX_EVENT_BYTES", &MAX_EVENT.to_string()),
        // Every row answered, none rate limited.
        ("CONFAB__LIMITS__MESSAGES_PER_SECOND", "10000"),
        ("CONFAB__LIMITS__MESSAGE_BURST", "10000"),
        ("CONFAB__SERVER__MAX_BODY_BYTES", &MAX_BODY.to_string()),
        (
            "CONFAB__FEDERATION__MAX_REQUEST_BYTES",
            &MAX_FEDERATION_BODY.to_string(),
        ),
    ])
    .await;
    let host = s.guest("Host").await;
    let guest = s.guest("Guest").await;
    let outsider = s.guest("Outsider").await;
    let foreigner = peer.guest("Foreigner").await;
    let room = s.room(&host).await;
    s.join_with_invite(&host, &guest, &room).await;
    let outsiders_room = s.room(&outsider).await;
    let (mut shared, _) = WsClient::joined(&s, &host, &room, 0).await;
    let (mut bystander, _) = WsClient::joined(&s, &guest, &room, 0).await;

    ws_rows(&s, &host, &foreigner, &room, &outsiders_room, &mut shared).await;
    resume_rows(&s, &host, &room, &mut shared).await;
    rest_rows(&s, &host, &outsider, &foreigner, &room).await;
    federation_rows(&s, &peer, &room).await;

    // Everyone carries on.
    let ack = shared.chat(&room, "still here").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let seq = ack["result"]["seq"].as_i64().unwrap();
    let event = bystander
        .wait_for(|m| m["type"] == "event" && m["seq"] == seq)
        .await;
    assert_eq!(event["content"]["ciphertext"], "still here");
    let internal = s
        .state
        .metrics
        .errors
        .with_label_values(&["internal"])
        .get();
    assert_eq!(internal, 0, "an input was answered with `internal`");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}

async fn ws_rows(
    s: &TestServer,
    host: &Guest,
    foreigner: &Guest,
    room: &str,
    outsiders_room: &str,
    shared: &mut WsClient,
) {
    use WsAnswer::{Ack, Close, Error};
    let ping = |id: u64| format!(r#"{{"type":"ping","id":{id},"pad":""#);
    let invalid_utf8 = Frame::message(
        b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    let rows = vec![
        // Size.
        text(
            "frame one byte over max_frame_bytes",
            padded(&ping(1), "\"}", MAX_FRAME + 1),
            Error("frame_too_large", None),
        ),
        text(
            "frame of exactly max_frame_bytes",
            padded(&ping(2), "\"}", MAX_FRAME),
            Ack(2),
        ),
        WsRow {
            name: "frame over hard_frame_bytes",
            socket: Socket::FreshAuthed,
            frame: Message::text("x".repeat(HARD_FRAME + 1)),
            answer: Close(1009, None),
        },
        json_row(
            "ciphertext one byte over max_event_bytes",
            json!({"type": "chat", "id": 3, "room_id": room, "kind": "text",
                   "ciphertext": "c".repeat(MAX_EVENT + 1)}),
            Error("event_too_large", Some(3)),
        ),
        json_row(
            "ciphertext of exactly max_event_bytes",
            json!({"type": "chat", "id": 4, "room_id": room, "kind": "text",
                   "ciphertext": "c".repeat(MAX_EVENT)}),
            Ack(4),
        ),
        json_row(
            "signal payload one byte over max_event_bytes",
            json!({"type": "signal", "id": 5, "room_id": room, "payload": "p".repeat(MAX_EVENT + 1),
                   "to": {"user_id": host.user_id, "device_id": host.device_id}}),
            Error("event_too_large", Some(5)),
        ),
        // Syntax.
        text("not JSON", "{not json", Error("bad_request", None)),
        text(
            "JSON but not an object",
            "[1,2,3]",
            Error("bad_request", None),
        ),
        WsRow {
            name: "binary frame",
            socket: Socket::Shared,
            frame: Message::binary(vec![0u8, 159, 146, 150]),
            answer: Error("bad_request", None),
        },
        // serde_json skips an unknown field without recursion, whatever its depth.
        text(
            "10,000 nested arrays in an unknown field (skipped)",
            format!(r#"{{"type":"ping","id":6,"x":{}}}"#, nested(10_000)),
            Ack(6),
        ),
        text(
            "10,000 nested arrays in a field the request reads",
            format!(
                r#"{{"type":"subscribe","id":7,"room_id":{}}}"#,
                nested(10_000)
            ),
            Error("bad_request", Some(7)),
        ),
        text(
            "10,000 nested arrays as the id, which is any JSON value",
            format!(r#"{{"type":"ping","id":{}}}"#, nested(10_000)),
            Error("bad_request", None),
        ),
        text(
            "lone UTF-16 surrogate escape in the ciphertext",
            format!(
                r#"{{"type":"chat","id":8,"room_id":"{room}","kind":"text","ciphertext":"\ud800"}}"#
            ),
            Error("bad_request", Some(8)),
        ),
        WsRow {
            name: "invalid UTF-8 in a text frame",
            socket: Socket::FreshAuthed,
            frame: Message::Frame(invalid_utf8),
            answer: Close(1007, None),
        },
        // Numbers.
        text(
            "id beyond u64",
            r#"{"type":"ping","id":18446744073709551616}"#,
            Error("bad_request", None),
        ),
        text(
            "negative id",
            r#"{"type":"ping","id":-1}"#,
            Error("bad_request", None),
        ),
        text(
            "float id",
            r#"{"type":"ping","id":1.5}"#,
            Error("bad_request", None),
        ),
        json_row(
            "id of 65 characters",
            json!({"type": "ping", "id": "x".repeat(65)}),
            Error("bad_request", None),
        ),
        text(
            "since beyond i64",
            format!(
                r#"{{"type":"subscribe","id":9,"room_id":"{room}","since":9223372036854775808}}"#
            ),
            Error("bad_request", Some(9)),
        ),
        text(
            "float since",
            format!(r#"{{"type":"subscribe","id":10,"room_id":"{room}","since":2.5}}"#),
            Error("bad_request", Some(10)),
        ),
        json_row(
            "negative since",
            json!({"type": "subscribe", "id": 11, "room_id": room, "since": -1}),
            Error("bad_request", Some(11)),
        ),
        // Types and kinds.
        json_row(
            "string where a boolean belongs",
            json!({"type": "typing", "id": 12, "room_id": room, "typing": "yes"}),
            Error("bad_request", Some(12)),
        ),
        json_row(
            "number where a string belongs",
            json!({"type": "chat", "id": 13, "room_id": room, "kind": "text", "ciphertext": 5}),
            Error("bad_request", Some(13)),
        ),
        json_row(
            "unknown request type",
            json!({"type": "teleport", "id": 14}),
            Error("unknown_type", Some(14)),
        ),
        json_row(
            "empty request type",
            json!({"type": "", "id": 15}),
            Error("unknown_type", Some(15)),
        ),
        json_row(
            "no request type",
            json!({"id": 16}),
            Error("bad_request", Some(16)),
        ),
        json_row(
            "chat kind outside a-z 0-9 . _ -",
            json!({"type": "chat", "id": 17, "room_id": room, "kind": "Text!", "ciphertext": "c"}),
            Error("bad_request", Some(17)),
        ),
        json_row(
            "unknown field (ignored, as the protocol allows)",
            json!({"type": "ping", "id": 18, "colour": "blue"}),
            Ack(18),
        ),
        // Identifiers.
        json_row(
            "malformed room id",
            json!({"type": "subscribe", "id": 19, "room_id": "not-a-room"}),
            Error("bad_room_id", Some(19)),
        ),
        json_row(
            "room id of another server",
            json!({"type": "subscribe", "id": 20, "room_id": "!abcdefghijklmnopqr:elsewhere.example"}),
            Error("room_not_found", Some(20)),
        ),
        json_row(
            "chat to a room of another server",
            json!({"type": "chat", "id": 21, "room_id": "!abcdefghijklmnopqr:elsewhere.example",
                   "kind": "text", "ciphertext": "c"}),
            Error("not_subscribed", Some(21)),
        ),
        json_row(
            "signal to a user of another server",
            json!({"type": "signal", "id": 22, "room_id": room, "payload": "p",
                   "to": {"user_id": "@someone:elsewhere.example", "device_id": "D"}}),
            Error("device_not_in_room", Some(22)),
        ),
        // Someone else's room.
        json_row(
            "subscribe to a room of which one is not a member",
            json!({"type": "subscribe", "id": 23, "room_id": outsiders_room}),
            Error("not_member", Some(23)),
        ),
        json_row(
            "chat in a room not subscribed to",
            json!({"type": "chat", "id": 24, "room_id": outsiders_room, "kind": "text", "ciphertext": "c"}),
            Error("not_subscribed", Some(24)),
        ),
        WsRow {
            name: "access token of another server",
            socket: Socket::FreshUnauthed,
            frame: Message::text(
                json!({"type": "auth", "id": 25, "token": foreigner.token}).to_string(),
            ),
            answer: Close(1008, Some("unauthorized")),
        },
    ];

    for row in rows {
        let name = row.name;
        let mut fresh = match row.socket {
            Socket::Shared => None,
            Socket::FreshAuthed => Some(WsClient::authed(s, host).await),
            Socket::FreshUnauthed => Some(WsClient::connect(s).await),
        };
        let socket = fresh.as_mut().unwrap_or(shared);
        socket.send_raw(row.frame).await;
        match row.answer {
            WsAnswer::Error(code, id) => {
                let reply = socket
                    .wait_for(|m| m["type"] == "error" || m["type"] == "ack")
                    .await;
                assert_eq!(
                    (
                        reply["type"].as_str(),
                        reply["code"].as_str(),
                        reply.get("id")
                    ),
                    (Some("error"), Some(code), id.map(Value::from).as_ref()),
                    "{name}: {reply}"
                );
            }
            WsAnswer::Ack(id) => {
                let reply = socket
                    .wait_for(|m| m["type"] == "error" || m["type"] == "ack")
                    .await;
                assert_eq!(
                    (reply["type"].as_str(), reply.get("id")),
                    (Some("ack"), Some(&Value::from(id))),
                    "{name}: {reply}"
                );
            }
            WsAnswer::Close(close, error) => {
                let closed = socket.closed().await;
                assert_eq!(closed.map(|(c, _)| c), Some(close), "{name}");
                let codes: Vec<&Value> = socket
                    .pending
                    .iter()
                    .filter(|m| m["type"] == "error")
                    .map(|m| &m["code"])
                    .collect();
                let expected: Vec<Value> = error.map(Value::from).into_iter().collect();
                assert_eq!(codes, expected.iter().collect::<Vec<_>>(), "{name}");
            }
        }
    }
}

/// Resuming from a sequence number: exactly the events after it, once, in order, whatever was
/// asked before on the same socket.
async fn resume_rows(s: &TestServer, host: &Guest, room: &str, shared: &mut WsClient) {
    // A device of its own: another socket of the host's device would replace the shared one.
    let reader = s.guest("Reader").await;
    s.join_with_invite(host, &reader, room).await;
    let mut last = 0;
    for text in ["one", "two", "three"] {
        last = shared.chat(room, text).await["result"]["seq"]
            .as_i64()
            .unwrap();
    }
    let mut c = WsClient::authed(s, &reader).await;
    let rows: &[(&str, i64, &[i64])] = &[
        ("resume from the latest", last, &[]),
        ("resume two behind", last - 2, &[last - 1, last]),
        ("the same resume replayed", last - 2, &[last - 1, last]),
        ("an earlier point after a later one", last - 1, &[last]),
        ("a later point after an earlier one", last, &[]),
    ];
    for &(name, since, expected) in rows {
        let reply = c
            .request(json!({"type": "subscribe", "room_id": room, "since": since}))
            .await;
        assert_eq!(reply["type"], "ack", "{name}: {reply}");
        // A ping's ack comes after every event the subscribe queued before it.
        let ping = c.request(json!({"type": "ping"})).await;
        assert_eq!(ping["type"], "ack", "{name}");
        let seqs: Vec<i64> = std::mem::take(&mut c.pending)
            .into_iter()
            .filter(|m| m["type"] == "event")
            .map(|m| m["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, expected, "{name}");
    }
}

async fn send_rest(s: &TestServer, row: HttpRow) -> (u16, Value) {
    let mut req = s.http.request(
        row.method,
        format!("{}/_confab/client/v1{}", s.base, row.path),
    );
    if let Some(token) = &row.token {
        req = req.bearer_auth(token);
    }
    req = match row.body {
        Body::None => req,
        Body::Json(value) => req.json(&value),
        Body::Raw(bytes, content_type) => req.header("content-type", content_type).body(bytes),
    };
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn rest_rows(s: &TestServer, host: &Guest, outsider: &Guest, foreigner: &Guest, room: &str) {
    let json = "application/json";
    let name_body = |len: usize| padded(r#"{"display_name":"x""#, "}", len).into_bytes();
    let expired = s.invite(host, room, json!({"expires_in_secs": 3600})).await;
    // The server's clock is not for tests to move: the invite's expiry is moved instead.
    expire_invite(s, expired["invite_id"].as_str().unwrap()).await;
    let revoked = s.invite(host, room, json!({})).await;
    let (status, _) = s
        .delete(
            &format!(
                "/rooms/{room}/invites/{}",
                revoked["invite_id"].as_str().unwrap()
            ),
            &host.token,
        )
        .await;
    assert_eq!(status, 204);
    let join = format!("/rooms/{room}/join");
    let invites = format!("/rooms/{room}/invites");
    let foreign_room = "/rooms/!abcdefghijklmnopqr:elsewhere.example";
    let h = Some(host.token.as_str());
    let o = Some(outsider.token.as_str());
    let outsider_id = outsider.user_id.as_str();
    let rows = vec![
        // Size.
        http(
            "body one byte over max_body_bytes",
            Method::POST,
            "/sessions",
            None,
            Body::Raw(name_body(MAX_BODY + 1), json),
            (413, Some("body_too_large")),
        ),
        http(
            "body of exactly max_body_bytes",
            Method::POST,
            "/sessions",
            None,
            Body::Raw(name_body(MAX_BODY), json),
            (201, None),
        ),
        // Syntax.
        http(
            "invalid UTF-8 in a JSON string",
            Method::POST,
            "/sessions",
            None,
            Body::Raw(b"{\"display_name\":\"\xff\xfe\"}".to_vec(), json),
            (400, Some("bad_request")),
        ),
        http(
            "10,000 nested arrays",
            Method::POST,
            "/sessions",
            None,
            Body::Raw(
                format!(r#"{{"display_name":{}}}"#, nested(10_000)).into_bytes(),
                json,
            ),
            (400, Some("bad_request")),
        ),
        http(
            "JSON sent as text/plain",
            Method::POST,
            "/sessions",
            None,
            Body::Raw(br#"{"display_name":"x"}"#.to_vec(), "text/plain"),
            (400, Some("bad_request")),
        ),
        http(
            "unknown field",
            Method::POST,
            &join,
            o,
            Body::Json(json!({"invite_token": "x", "role": "host"})),
            (400, Some("bad_request")),
        ),
        // Numbers.
        http(
            "max_uses beyond u32",
            Method::POST,
            &invites,
            h,
            Body::Json(json!({"max_uses": 4_294_967_296u64})),
            (400, Some("bad_request")),
        ),
        http(
            "float where an integer belongs",
            Method::POST,
            &invites,
            h,
            Body::Json(json!({"expires_in_secs": 1.5})),
            (400, Some("bad_request")),
        ),
        http(
            "negative expiry",
            Method::POST,
            &invites,
            h,
            Body::Json(json!({"expires_in_secs": -1})),
            (400, Some("bad_request")),
        ),
        http(
            "expiry one second over a year",
            Method::POST,
            &invites,
            h,
            Body::Json(json!({"expires_in_secs": 366 * 86400 + 1})),
            (400, Some("bad_request")),
        ),
        http(
            "since beyond i64 in a query",
            Method::GET,
            format!("/rooms/{room}/events?since=9223372036854775808"),
            h,
            Body::None,
            (400, Some("bad_request")),
        ),
        http(
            "negative since in a query",
            Method::GET,
            format!("/rooms/{room}/events?since=-1"),
            h,
            Body::None,
            (400, Some("bad_request")),
        ),
        // Identifiers.
        http(
            "malformed room id",
            Method::GET,
            "/rooms/not-a-room",
            h,
            Body::None,
            (400, Some("bad_room_id")),
        ),
        http(
            "room id of another server",
            Method::GET,
            foreign_room,
            h,
            Body::None,
            (404, Some("room_not_found")),
        ),
        http(
            "kick a malformed user id",
            Method::POST,
            format!("/rooms/{room}/kick"),
            h,
            Body::Json(json!({"user_id": "nobody"})),
            (400, Some("bad_user_id")),
        ),
        http(
            "kick a user of another server",
            Method::POST,
            format!("/rooms/{room}/kick"),
            h,
            Body::Json(json!({"user_id": "@someone:elsewhere.example"})),
            (403, Some("not_member")),
        ),
        // Tokens and invites.
        http(
            "a valid token on a room its user is not in",
            Method::GET,
            format!("/rooms/{room}/events"),
            o,
            Body::None,
            (403, Some("not_member")),
        ),
        http(
            "access token of another server",
            Method::GET,
            "/sessions/me",
            Some(foreigner.token.as_str()),
            Body::None,
            (401, Some("unauthorized")),
        ),
        http(
            "expired invite",
            Method::POST,
            &join,
            o,
            Body::Json(json!({"invite_token": expired["token"]})),
            (403, Some("invite_expired")),
        ),
        http(
            "revoked invite",
            Method::POST,
            &join,
            o,
            Body::Json(json!({"invite_token": revoked["token"]})),
            (403, Some("invite_revoked")),
        ),
        // Settings, roles and knocks.
        http(
            "an unknown setting",
            Method::POST,
            format!("/rooms/{room}/settings"),
            h,
            Body::Json(json!({"lobby": true, "waiting_room": true})),
            (400, Some("bad_request")),
        ),
        http(
            "a setting that is not a boolean",
            Method::POST,
            format!("/rooms/{room}/settings"),
            h,
            Body::Json(json!({"guests_may_share": "yes"})),
            (400, Some("bad_request")),
        ),
        http(
            "a role that does not exist",
            Method::POST,
            format!("/rooms/{room}/role"),
            h,
            Body::Json(json!({"user_id": outsider_id, "role": "admin"})),
            (400, Some("bad_request")),
        ),
        http(
            "a co-host who is not a member",
            Method::POST,
            format!("/rooms/{room}/role"),
            h,
            Body::Json(json!({"user_id": outsider_id, "role": "cohost"})),
            (403, Some("not_member")),
        ),
        http(
            "naming a co-host without being the host",
            Method::POST,
            format!("/rooms/{room}/role"),
            o,
            Body::Json(json!({"user_id": outsider_id, "role": "cohost"})),
            (403, Some("not_host")),
        ),
        http(
            "answering a knock without being a host",
            Method::POST,
            format!("/rooms/{room}/knocks"),
            o,
            Body::Json(json!({"user_id": outsider_id, "admit": true})),
            (403, Some("not_host")),
        ),
        http(
            "answering a knock without saying how",
            Method::POST,
            format!("/rooms/{room}/knocks"),
            h,
            Body::Json(json!({"user_id": outsider_id})),
            (400, Some("bad_request")),
        ),
    ];
    for row in rows {
        let (name, expected) = (row.name, row.answer);
        let (status, body) = send_rest(s, row).await;
        assert_eq!(
            (status, body.get("code").and_then(Value::as_str)),
            expected,
            "{name}: {body}"
        );
    }
}

/// Moves an invite's expiry into the past, in the server's own database.
async fn expire_invite(s: &TestServer, invite_id: &str) {
    use diesel_async::RunQueryDsl;
    let mut db = confab_schema::connect(&s.state.pool).await.unwrap();
    let updated = diesel::sql_query("UPDATE invites SET expires_ts = 1 WHERE invite_id = $1")
        .bind::<diesel::sql_types::Text, _>(invite_id)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(updated, 1);
}

/// Rows sent to `s` by `peer`, signed by `peer` over the JSON body (raw bodies are signed as if
/// they had none: each such row is refused before the signature is compared).
async fn federation_rows(s: &TestServer, peer: &TestServer, room: &str) {
    let json = "application/json";
    let origin = peer.server_name();
    let txn = |extra: Value| {
        let mut body = json!({"origin": origin, "origin_server_ts": 1, "pdus": [], "edus": []});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let raw_txn = |ts: &str| {
        format!(r#"{{"origin":"{origin}","origin_server_ts":{ts},"pdus":[],"edus":[]}}"#)
            .into_bytes()
    };
    let send = |id: &str| format!("/_matrix/federation/v1/send/{id}");
    let pdu = |id: &str| json!({"event_id": id, "room_id": room, "type": "confab.event"});
    let rows = vec![
        http(
            "body one byte over max_request_bytes",
            Method::PUT,
            send("big"),
            None,
            Body::Raw(padded("{", "}", MAX_FEDERATION_BODY + 1).into_bytes(), json),
            (413, Some("M_TOO_LARGE")),
        ),
        http(
            "invalid UTF-8",
            Method::PUT,
            send("utf8"),
            None,
            Body::Raw(b"{\"origin\":\"\xff\xfe\"}".to_vec(), json),
            (400, Some("M_NOT_JSON")),
        ),
        http(
            "10,000 nested arrays",
            Method::PUT,
            send("deep"),
            None,
            Body::Raw(
                format!(r#"{{"pdus":{}}}"#, nested(10_000)).into_bytes(),
                json,
            ),
            (400, Some("M_NOT_JSON")),
        ),
        http(
            "float, which canonical JSON cannot sign",
            Method::PUT,
            send("float"),
            None,
            Body::Raw(raw_txn("0.5"), json),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "integer beyond 2^53-1, which canonical JSON cannot sign",
            Method::PUT,
            send("huge"),
            None,
            Body::Raw(raw_txn("9007199254740992"), json),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "negative timestamp",
            Method::PUT,
            send("negative"),
            None,
            Body::Json(txn(json!({"origin_server_ts": -1}))),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "transaction id of 256 characters",
            Method::PUT,
            send(&"t".repeat(256)),
            None,
            Body::Json(txn(json!({}))),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "two PDUs with one event id",
            Method::PUT,
            send("twins"),
            None,
            Body::Json(txn(json!({"pdus": [pdu("$same"), pdu("$same")]}))),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "unknown fields (tolerated, as Matrix requires)",
            Method::PUT,
            send("extra"),
            None,
            Body::Json(txn(json!({"future_field": {"x": 1}}))),
            (200, None),
        ),
        http(
            "leave with a device id of 65 bytes",
            Method::POST,
            format!("/_confab/federation/v1/rooms/{room}/leave"),
            None,
            Body::Json(json!({"user_id": format!("@u:{origin}"), "device_id": "d".repeat(65)})),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "forwarded chat with a device id of 65 bytes",
            Method::POST,
            "/_confab/federation/v1/send_chat".to_owned(),
            None,
            Body::Json(
                json!({"events": [{"room_id": room, "sender": format!("@u:{origin}"),
                "device_id": "d".repeat(65), "kind": "text", "ciphertext": "c"}]}),
            ),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "join with a user id of 256 bytes",
            Method::POST,
            format!("/_confab/federation/v1/rooms/{room}/join"),
            None,
            Body::Json(
                json!({"user_id": format!("@{}:{origin}", "u".repeat(256)), "display_name": "U"}),
            ),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "presence with a display name of 257 bytes",
            Method::POST,
            format!("/_confab/federation/v1/rooms/{room}/presence"),
            None,
            Body::Json(json!({"user_id": format!("@u:{origin}"), "device_id": "D",
                "display_name": "n".repeat(257), "online": true})),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "join a room of another server",
            Method::POST,
            format!("/_confab/federation/v1/rooms/!abcdefghijklmnopqr:{origin}/join"),
            None,
            Body::Json(json!({"user_id": format!("@u:{origin}"), "display_name": "U"})),
            (404, Some("M_NOT_FOUND")),
        ),
        http(
            "a member request of an unknown type",
            Method::POST,
            format!("/_confab/federation/v1/rooms/{room}/request"),
            None,
            Body::Json(json!({"user_id": format!("@u:{origin}"), "device_id": "D",
                              "request": {"type": "become_host"}})),
            (400, Some("M_BAD_JSON")),
        ),
        http(
            "a member request for a user of another server",
            Method::POST,
            format!("/_confab/federation/v1/rooms/{room}/request"),
            None,
            Body::Json(json!({"user_id": "@u:elsewhere.example", "device_id": "D",
                              "request": {"type": "create_invite"}})),
            (403, Some("M_FORBIDDEN")),
        ),
        http(
            "a member request of someone who is not a member",
            Method::POST,
            format!("/_confab/federation/v1/rooms/{room}/request"),
            None,
            Body::Json(json!({"user_id": format!("@u:{origin}"), "device_id": "D",
                              "request": {"type": "set_locked", "locked": true}})),
            (403, Some("M_FORBIDDEN")),
        ),
    ];
    for row in rows {
        let (name, expected) = (row.name, row.answer);
        let content = match &row.body {
            Body::Json(value) => Some(value),
            _ => None,
        };
        let auth = sign_request(
            &origin,
            &s.server_name(),
            row.method.as_str(),
            &row.path,
            content,
            &peer.state.federation.identity.key,
        )
        .unwrap();
        let mut req = s
            .http
            .request(row.method, format!("{}{}", s.base, row.path))
            .header("Authorization", auth.to_string());
        req = match row.body {
            Body::None => req,
            Body::Json(value) => req.json(&value),
            Body::Raw(bytes, content_type) => req.header("content-type", content_type).body(bytes),
        };
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null);
        assert_eq!(
            (status, body.get("errcode").and_then(Value::as_str)),
            expected,
            "{name}: {body}"
        );
    }
}
