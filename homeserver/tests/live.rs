//! The live WebSocket session against a real server: fan-out, ack/error pairing, signaling,
//! typing, presence, resume, capacity, kick, TTL, restart and limits (hostile frames, one per
//! boundary, are in tests/hostile.rs).
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{TestServer, WsClient, is_chat};

#[tokio::test(flavor = "multi_thread")]
async fn authentication_comes_first() {
    let s = TestServer::start().await;
    let g = s.guest("A").await;

    let mut c = WsClient::connect(&s).await;
    let reply = c.request(json!({"type": "ping"})).await;
    assert_eq!(reply["code"], "not_authenticated");
    assert_eq!(c.closed().await.map(|(code, _)| code), Some(1008));

    let mut c = WsClient::connect(&s).await;
    let reply = c.request(json!({"type": "auth", "token": "wrong"})).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("unauthorized"))
    );
    assert_eq!(c.closed().await.map(|(code, _)| code), Some(1008));

    let mut c = WsClient::authed(&s, &g).await;
    let reply = c.request(json!({"type": "auth", "token": g.token})).await;
    assert_eq!(reply["code"], "already_authenticated");
    let reply = c.request(json!({"type": "ping"})).await;
    assert_eq!(reply["type"], "ack");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_are_closed_after_the_auth_timeout() {
    let s = TestServer::start_with(&[("CONFAB__WEBSOCKET__AUTH_TIMEOUT", "200ms")]).await;
    let mut c = WsClient::connect(&s).await;
    let (code, reason) = c.closed().await.unwrap();
    assert_eq!(code, 1008);
    assert!(reason.contains("auth"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_fans_out_to_everyone_in_order() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(2).await;
    let (mut a, ack) = WsClient::joined(&s, &g[0], &room, 0).await;
    assert_eq!(ack["result"]["room_id"], room.as_str());
    let (mut b, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let (mut c, _) = WsClient::joined(&s, &g[2], &room, 0).await;
    let history = c.events(3).await;
    assert!(history.iter().all(|e| e["content"]["type"] == "member"));

    let mut acked = Vec::new();
    for i in 0..5 {
        let reply = a.chat(&room, &format!("ciphertext-{i}")).await;
        assert_eq!(reply["type"], "ack", "{reply}");
        acked.push(reply["result"]["seq"].as_i64().unwrap());
    }
    assert!(acked.windows(2).all(|w| w[1] == w[0] + 1), "{acked:?}");
    for client in [&mut a, &mut b, &mut c] {
        let mut got = Vec::new();
        while got.len() < 5 {
            let e = client.wait_for(is_chat).await;
            got.push((
                e["seq"].as_i64().unwrap(),
                e["content"]["ciphertext"].as_str().unwrap().to_owned(),
            ));
        }
        let expected: Vec<_> = acked
            .iter()
            .enumerate()
            .map(|(i, seq)| (*seq, format!("ciphertext-{i}")))
            .collect();
        assert_eq!(got, expected);
    }
    let e = b
        .pending
        .iter()
        .chain(std::iter::empty())
        .find(|e| is_chat(e));
    assert!(e.is_none(), "no duplicates left over");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_with_an_id_gets_exactly_one_reply() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(0).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    // A mix of good and bad requests, each with an id; the replies must pair up one to one.
    let requests = vec![
        json!({"id": "p1", "type": "ping"}),
        json!({"id": "c1", "type": "chat", "room_id": room, "kind": "text", "ciphertext": "x"}),
        json!({"id": "c2", "type": "chat", "room_id": room, "kind": "BAD KIND", "ciphertext": "x"}),
        json!({"id": "c3", "type": "chat", "room_id": room, "kind": "text"}),
        json!({"id": "u1", "type": "frobnicate"}),
        json!({"id": 7, "type": "typing", "room_id": room, "typing": true}),
        json!({"id": "s1", "type": "signal", "room_id": room, "to": {"user_id": "@x:y", "device_id": "D"}, "payload": "p"}),
        json!({"id": "o1", "type": "chat", "room_id": "!other:127.0.0.1", "kind": "text", "ciphertext": "x"}),
    ];
    for r in &requests {
        a.send(r.clone()).await;
    }
    let mut replies = std::collections::HashMap::new();
    while replies.len() < requests.len() {
        let m = a
            .wait_for(|m| m["type"] == "ack" || m["type"] == "error")
            .await;
        assert!(
            replies.insert(m["id"].to_string(), m.clone()).is_none(),
            "two replies to {}",
            m["id"]
        );
    }
    let code = |id: &str| {
        replies[&json!(id).to_string()]["code"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(replies[&json!("p1").to_string()]["type"], "ack");
    assert_eq!(replies[&json!("c1").to_string()]["type"], "ack");
    assert_eq!(code("c2").as_deref(), Some("bad_request"));
    assert_eq!(code("c3").as_deref(), Some("bad_request"));
    assert_eq!(code("u1").as_deref(), Some("unknown_type"));
    assert_eq!(replies[&json!(7).to_string()]["type"], "ack");
    assert_eq!(code("s1").as_deref(), Some("device_not_in_room"));
    assert_eq!(code("o1").as_deref(), Some("not_subscribed"));
    assert_eq!(replies[&json!("u1").to_string()]["request"], "frobnicate");

    // Without an id, success is silent and failure names the request type.
    a.send(json!({"type": "typing", "room_id": room, "typing": false}))
        .await;
    a.send(json!({"type": "signal", "room_id": room, "to": {"user_id": "@x:y", "device_id": "D"}, "payload": "p"})).await;
    let err = a.wait_for(|m| m["type"] == "error").await;
    assert_eq!(
        (err["request"].as_str(), err["code"].as_str()),
        (Some("signal"), Some("device_not_in_room"))
    );
    assert!(err.get("id").is_none());
    let pong = a.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "ack");
    assert!(
        a.pending
            .iter()
            .all(|m| m["type"] != "ack" && m["type"] != "error"),
        "{:?}",
        a.pending
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signaling_reaches_only_the_addressed_device() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(2).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut b, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let (mut c, _) = WsClient::joined(&s, &g[2], &room, 0).await;
    let reply = a
        .request(json!({"type": "signal", "room_id": room, "to": {"user_id": g[1].user_id, "device_id": g[1].device_id}, "payload": "offer-for-b"}))
        .await;
    assert_eq!(reply["type"], "ack");
    let got = b.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"], "offer-for-b");
    assert_eq!(
        got["from"],
        json!({"user_id": g[0].user_id, "device_id": g[0].device_id})
    );
    // C gets nothing: its next signal is the one addressed to it afterwards.
    a.send(json!({"type": "signal", "room_id": room, "to": {"user_id": g[2].user_id, "device_id": g[2].device_id}, "payload": "for-c"})).await;
    let got = c.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"], "for-c");

    // A member who is not subscribed cannot be addressed, and cannot send.
    let outsider = s.guest("Outsider").await;
    let mut o = WsClient::authed(&s, &outsider).await;
    let reply = o
        .request(json!({"type": "signal", "room_id": room, "to": {"user_id": g[1].user_id, "device_id": g[1].device_id}, "payload": "x"}))
        .await;
    assert_eq!(reply["code"], "not_subscribed");
    let reply = o
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    assert_eq!(reply["code"], "not_member");
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_and_presence_reach_the_others() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut b, ack) = WsClient::joined(&s, &g[1], &room, 0).await;
    let connected = ack["result"]["connected"].as_array().unwrap();
    assert_eq!(connected.len(), 2, "{ack}");

    let online = a.wait_for(|m| m["type"] == "presence").await;
    assert_eq!(
        (online["user_id"].as_str(), online["online"].as_bool()),
        (Some(g[1].user_id.as_str()), Some(true))
    );
    assert_eq!(online["display_name"], "Guest 0");

    b.send(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    let typing = a.wait_for(|m| m["type"] == "typing").await;
    assert_eq!(
        (typing["user_id"].as_str(), typing["typing"].as_bool()),
        (Some(g[1].user_id.as_str()), Some(true))
    );

    b.close().await;
    let offline = a.wait_for(|m| m["type"] == "presence").await;
    assert_eq!(
        (offline["device_id"].as_str(), offline["online"].as_bool()),
        (Some(g[1].device_id.as_str()), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnecting_resumes_without_loss_or_duplicates() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut b, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let first = a.chat(&room, "one").await["result"]["seq"]
        .as_i64()
        .unwrap();
    let seen = b.wait_for(is_chat).await;
    assert_eq!(seen["seq"].as_i64(), Some(first));
    b.close().await;

    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(
            a.chat(&room, &format!("missed-{i}")).await["result"]["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    // Resume from the last event seen, while more arrive concurrently.
    let (mut b, _) = WsClient::joined(&s, &g[1], &room, first).await;
    for i in 0..10 {
        sent.push(
            a.chat(&room, &format!("live-{i}")).await["result"]["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let e = b.wait_for(|m| m["type"] == "event").await;
        got.push(e["seq"].as_i64().unwrap());
    }
    assert_eq!(got, sent);
    let extra = b.request(json!({"type": "ping"})).await;
    assert_eq!(extra["type"], "ack");
    assert!(
        !b.pending.iter().any(|m| m["type"] == "event"),
        "duplicates: {:?}",
        b.pending
    );

    // The REST backlog agrees.
    let (status, page) = s
        .get(
            &format!("/rooms/{room}/events?since={first}&limit=100"),
            &g[1].token,
        )
        .await;
    assert_eq!(status, 200);
    let seqs: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_socket_of_the_same_device_replaces_the_first() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut old, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let (mut new, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let replaced = old.wait_for(|m| m["type"] == "replaced").await;
    assert_eq!(replaced["room_id"], room.as_str());
    let reply = old.chat(&room, "from the old tab").await;
    assert_eq!(reply["code"], "not_subscribed");
    let reply = new.chat(&room, "from the new tab").await;
    assert_eq!(reply["type"], "ack");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_room_refuses_more_participants() {
    let s = TestServer::start_with(&[("CONFAB__ROOMS__MAX_PARTICIPANTS", "2")]).await;
    let (room, g) = s.room_with(2).await;
    let (_a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (_b, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let mut c = WsClient::authed(&s, &g[2]).await;
    let reply = c
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    assert_eq!(reply["code"], "room_full");
    // The REST join of a newcomer is refused too while the room is full.
    let newcomer = s.guest("Late").await;
    let invite = s.invite(&g[0], &room, json!({})).await;
    let (status, body) = s
        .post(
            &format!("/rooms/{room}/join"),
            &newcomer.token,
            json!({"invite_token": invite["token"]}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("room_full")));
}

#[tokio::test(flavor = "multi_thread")]
async fn kick_ends_the_live_session_at_once() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut host, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut guest, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &g[0].token,
            json!({"user_id": g[1].user_id}),
        )
        .await;
    assert_eq!(status, 200);
    let kicked = guest.wait_for(|m| m["type"] == "kicked").await;
    assert_eq!(kicked["room_id"], room.as_str());
    let reply = guest.chat(&room, "still here?").await;
    assert_eq!(reply["code"], "not_subscribed");
    let reply = guest
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    assert_eq!(reply["code"], "not_member");
    let event = host
        .wait_for(|m| m["type"] == "event" && m["content"]["membership"] == "kicked")
        .await;
    assert_eq!(event["content"]["user_id"], g[1].user_id.as_str());
    let gone = host
        .wait_for(|m| m["type"] == "presence" && m["online"] == false)
        .await;
    assert_eq!(gone["user_id"], g[1].user_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_close_reach_subscribers() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut guest, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    s.post(&format!("/rooms/{room}/lock"), &g[0].token, json!({}))
        .await;
    let lock = guest
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "lock")
        .await;
    assert_eq!(lock["content"]["locked"], true);
    s.delete(&format!("/rooms/{room}"), &g[0].token).await;
    let closed = guest.wait_for(|m| m["type"] == "room_closed").await;
    assert_eq!(closed["reason"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_rooms_expire_and_live_ones_do_not() {
    let s = TestServer::start_with(&[
        // Long enough that the new room, counting down until its first subscriber, outlives
        // the set-up even on a loaded machine.
        ("CONFAB__ROOMS__IDLE_TTL", "2s"),
        ("CONFAB__ROOMS__SWEEP_INTERVAL", "50ms"),
    ])
    .await;
    let (room, g) = s.room_with(1).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    a.chat(&room, "gone with the room").await;
    let events_of_room = format!("SELECT count(*) AS n FROM events WHERE room_id = '{room}'");
    // The join and the chat.
    assert!(s.count(&events_of_room).await >= 2);
    let (status, summary) = s.get(&format!("/rooms/{room}"), &g[0].token).await;
    assert_eq!(
        (status, summary["expires_ts"].clone()),
        (200, Value::Null),
        "a live room does not count down"
    );

    // Kept alive past its TTL by a connected participant: wait until the sweeper has completed
    // 45 more runs (at least 2.25 s, longer than the 2 s TTL).
    let sweeps = s.state.metrics.room_sweeps.get();
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while s.state.metrics.room_sweeps.get() < sweeps + 45 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper stopped running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _) = s.get(&format!("/rooms/{room}"), &g[0].token).await;
    assert_eq!(status, 200, "a room with a participant must not expire");
    assert_eq!(s.state.metrics.rooms_expired.get(), 0);

    a.close().await;
    // Once empty, the room is deleted by the sweeper: watch it go through the API.
    let deadline = std::time::Instant::now() + support::PATIENCE;
    loop {
        let (status, body) = s.get(&format!("/rooms/{room}"), &g[0].token).await;
        if status == 404 {
            assert_eq!(body["code"], "room_not_found");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "room never expired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(s.state.metrics.rooms_expired.get() >= 1);
    assert_eq!(s.count(&events_of_room).await, 0, "its events went with it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_rooms_and_backlog_and_tells_clients() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            a.chat(&room, &format!("before-{i}")).await["result"]["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    let s2 = {
        let restarting = tokio::spawn(s.restart());
        let shutdown = a.wait_for(|m| m["type"] == "shutdown").await;
        assert!(shutdown["retry_after_ms"].is_u64());
        restarting.await.unwrap()
    };
    let (status, summary) = s2.get(&format!("/rooms/{room}"), &g[1].token).await;
    assert_eq!(status, 200);
    assert!(
        summary["expires_ts"].is_i64(),
        "countdown restarted for an unattended room"
    );
    let (mut b, _) = WsClient::joined(&s2, &g[1], &room, 0).await;
    let got: Vec<i64> = b
        .events(2 + 5)
        .await
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(&got[2..], &sent[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_rate_and_connection_count_are_limited() {
    let s = TestServer::start_with(&[
        ("CONFAB__LIMITS__MESSAGES_PER_SECOND", "1"),
        ("CONFAB__LIMITS__MESSAGE_BURST", "5"),
        ("CONFAB__LIMITS__MAX_CONNECTIONS_PER_USER", "2"),
    ])
    .await;
    let g = s.guest("A").await;
    let mut a = WsClient::authed(&s, &g).await; // uses one token of the burst
    for _ in 0..4 {
        assert_eq!(a.request(json!({"type": "ping"})).await["type"], "ack");
    }
    let limited = a.request(json!({"type": "ping"})).await;
    assert_eq!(limited["code"], "rate_limited");
    assert!(limited["retry_after_ms"].as_u64().unwrap() > 0);

    let _b = WsClient::authed(&s, &g).await;
    let mut c = WsClient::connect(&s).await;
    let reply = c.request(json!({"type": "auth", "token": g.token})).await;
    assert_eq!(reply["code"], "too_many_connections");
    assert_eq!(c.closed().await.map(|(code, _)| code), Some(4029));
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_origins_cannot_open_a_session() {
    let s = TestServer::start_with(&[("CONFAB__WEBSOCKET__ALLOWED_ORIGINS", "http://app.example")])
        .await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    for (origin, ok) in [
        ("http://evil.example", false),
        ("http://app.example", true),
        (s.base.as_str(), true),
    ] {
        let mut req = s.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let result = tokio_tungstenite::connect_async(req).await;
        match (result, ok) {
            (Ok(_), true) => {}
            (Err(tokio_tungstenite::tungstenite::Error::Http(res)), false) => {
                assert_eq!(res.status(), 403);
            }
            (other, _) => panic!("origin {origin}: unexpected {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_sockets_are_detected_and_presence_follows() {
    let s = TestServer::start_with(&[
        ("CONFAB__WEBSOCKET__HEARTBEAT_INTERVAL", "100ms"),
        ("CONFAB__WEBSOCKET__CLIENT_TIMEOUT", "400ms"),
    ])
    .await;
    let (room, g) = s.room_with(1).await;
    let (mut watcher, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    // This client stops reading (so it never answers pings), like a vanished laptop.
    let (silent, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let online = watcher
        .wait_for(|m| m["type"] == "presence" && m["online"] == true)
        .await;
    assert_eq!(online["user_id"], g[1].user_id.as_str());
    // The watcher keeps answering pings because it reads; the silent one is dropped.
    let offline = watcher
        .wait_for(|m| m["type"] == "presence" && m["online"] == false)
        .await;
    assert_eq!(offline["user_id"], g[1].user_id.as_str());
    drop(silent);
    assert_eq!(
        watcher.request(json!({"type": "ping"})).await["type"],
        "ack"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_point_beyond_the_log_still_gets_new_events() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(1).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut b, _) = WsClient::joined(&s, &g[1], &room, 1_000_000_000).await;
    let seq = a.chat(&room, "after a bogus since").await["result"]["seq"]
        .as_i64()
        .unwrap();
    let e = b.wait_for(is_chat).await;
    assert_eq!(e["seq"].as_i64(), Some(seq));
}

/// The sockets placed on each HTTP worker thread, by the worker's index, from `/metrics`.
fn sockets_by_worker(metrics: &str) -> Vec<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("confab_ws_sockets_by_worker{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_that_name_their_room_are_served_on_one_worker_thread() {
    let s = TestServer::start().await;
    let (room, g) = s.room_with(3).await;
    let url = format!("{}?room={room}", s.ws_url());
    let mut clients = Vec::new();
    // One after another: the HTTP server hands accepted connections to its workers in turn, so
    // some of these are accepted on a thread other than the room's and must move.
    for guest in &g {
        let mut c = WsClient::connect_url(&url).await;
        c.auth(guest).await;
        let reply = c
            .request(json!({"type": "subscribe", "room_id": room, "since": 0}))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
        clients.push(c);
    }
    let placed = sockets_by_worker(&s.metrics().await);
    assert!(
        placed.len() >= 2,
        "this needs a server with two HTTP workers or more: {placed:?}"
    );
    let mut sorted = placed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted.pop(), Some(4), "all on one worker: {placed:?}");
    assert!(sorted.iter().all(|&n| n == 0), "{placed:?}");

    // Every socket relays, moved or not: each signals the next.
    for (i, c) in clients.iter_mut().enumerate() {
        let to = &g[(i + 1) % g.len()];
        let reply = c
            .request(json!({"type": "signal", "room_id": room, "to": {"user_id": to.user_id, "device_id": to.device_id}, "payload": format!("from-{i}")}))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c.wait_for(|m| m["type"] == "signal").await;
        let from = (i + g.len() - 1) % g.len();
        assert_eq!(got["payload"], format!("from-{from}"));
    }

    // A socket without a hint is served where it was accepted, and counted there.
    let mut plain = WsClient::authed(&s, &g[0]).await;
    let reply = plain.request(json!({"type": "ping"})).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let placed: i64 = sockets_by_worker(&s.metrics().await).iter().sum();
    assert_eq!(placed, 5);

    // A hint that is not a room id is refused, saying why.
    match tokio_tungstenite::connect_async(format!("{}?room=lobby", s.ws_url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 400);
            let body: Value = serde_json::from_slice(&res.body().clone().unwrap()).unwrap();
            assert_eq!(body["code"], "bad_room_id", "{body}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    s.stop().await;
}
