//! Federated rooms between real homeservers on 127.0.0.1, each with its own database and name:
//! users of A and C meet in a room on B through their own servers (chat, typing, presence,
//! signaling), B's lock, kick, close and idle expiry reach A and C, nothing persistent is lost or
//! reordered when B restarts or A is down, and servers cannot act beyond their own users.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Guest, TestServer, WsClient};

/// Fast retries, so that a server coming back is noticed at once.
const FAST_RETRY: [(&str, &str); 2] = [
    ("CONFAB__FEDERATION__RETRY_BASE", "50ms"),
    ("CONFAB__FEDERATION__RETRY_CAP", "200ms"),
];

async fn federating(extra: &[(&str, &str)]) -> TestServer {
    let mut env = FAST_RETRY.to_vec();
    env.extend_from_slice(extra);
    TestServer::start_federating(&env).await
}

/// Joins `guest` of `server` to `room` (on another server) with an invite token.
async fn join_remote(
    server: &TestServer,
    guest: &Guest,
    room: &str,
    token: &Value,
) -> (u16, Value) {
    server
        .post(
            &format!("/rooms/{room}/join"),
            &guest.token,
            json!({ "invite_token": token }),
        )
        .await
}

fn is_event_from(msg: &Value, sender: &str) -> bool {
    msg["type"] == "event" && msg["sender"] == sender
}

/// Waits until `check` holds for the server's database, reading it again after each change the
/// server makes; fails after the test patience.
async fn until_db<F>(server: &TestServer, what: &str, check: F)
where
    F: AsyncFn(&mut confab_schema::AsyncPgConnection) -> bool,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut db = confab_schema::connect(&server.state.pool).await.unwrap();
        if check(&mut db).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        // Polling a condition with a deadline: the change comes from another server's sender.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_of_two_servers_meet_in_a_room_on_a_third() {
    let (a, b, c) = tokio::join!(federating(&[]), federating(&[]), federating(&[]));
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let alice = a.guest("Alice").await;
    let carol = c.guest("Carol").await;

    for (server, guest) in [(&a, &alice), (&c, &carol)] {
        let invite = b.invite(&host, &room, json!({})).await;
        let (status, summary) = join_remote(server, guest, &room, &invite["token"]).await;
        assert_eq!(status, 200, "{summary}");
        assert_eq!(summary["origin"], b.server_name().as_str());
        assert_eq!(summary["host"], host.user_id);
        assert!(!summary["is_host"].as_bool().unwrap());
    }
    // The origin knows both servers take part, and both replicas list every member.
    let (status, on_b) = b.get(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b["members"].as_array().unwrap().len(), 3);

    let (mut hw, _) = WsClient::joined(&b, &host, &room, 0).await;
    let (mut aw, a_ack) = WsClient::joined(&a, &alice, &room, 0).await;
    // Alice's ack lists the host, connected through B.
    assert!(
        a_ack["result"]["connected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["user_id"] == host.user_id),
        "{a_ack}"
    );
    let presence = hw
        .wait_for(|m| m["type"] == "presence" && m["user_id"] == alice.user_id)
        .await;
    assert_eq!(presence["online"], true);
    let (mut cw, _) = WsClient::joined(&c, &carol, &room, 0).await;
    // Alice hears of Carol through B.
    let presence = aw
        .wait_for(|m| m["type"] == "presence" && m["user_id"] == carol.user_id)
        .await;
    assert_eq!(presence["online"], true);

    // Chat from A is numbered by B and reaches everyone once, with the same number.
    let ack = aw.chat(&room, "ciphertext-from-alice").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let seq = ack["result"]["seq"].as_i64().unwrap();
    for client in [&mut hw, &mut aw, &mut cw] {
        let event = client
            .wait_for(|m| is_event_from(m, &alice.user_id) && m["content"]["type"] == "chat")
            .await;
        assert_eq!(event["seq"], seq);
        assert_eq!(event["content"]["ciphertext"], "ciphertext-from-alice");
    }
    let ack = hw.chat(&room, "ciphertext-from-host").await;
    let seq = ack["result"]["seq"].as_i64().unwrap();
    for client in [&mut aw, &mut cw] {
        let event = client
            .wait_for(|m| is_event_from(m, &host.user_id) && m["content"]["type"] == "chat")
            .await;
        assert_eq!(event["seq"], seq);
    }

    // Typing from C reaches B and A.
    cw.send(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    for client in [&mut hw, &mut aw] {
        let typing = client
            .wait_for(|m| m["type"] == "typing" && m["user_id"] == carol.user_id)
            .await;
        assert_eq!(typing["typing"], true);
    }

    // Signaling: A → B, B → C and A → C (through B), payloads untouched.
    let signal = |to: &Guest, payload: &str| {
        json!({"type": "signal", "room_id": room,
               "to": {"user_id": to.user_id, "device_id": to.device_id}, "payload": payload})
    };
    let reply = aw.request(signal(&host, "sdp-a-to-host")).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let got = hw.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"], "sdp-a-to-host");
    assert_eq!(got["from"]["user_id"], alice.user_id);
    assert_eq!(got["from"]["device_id"], alice.device_id);
    hw.request(signal(&carol, "sdp-host-to-c")).await;
    let got = cw.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"], "sdp-host-to-c");
    assert_eq!(got["from"]["user_id"], host.user_id);
    aw.request(signal(&carol, "ice-a-to-c")).await;
    let got = cw
        .wait_for(|m| m["type"] == "signal" && m["payload"] == "ice-a-to-c")
        .await;
    assert_eq!(got["from"]["user_id"], alice.user_id);

    // Lock on B: a newcomer from C is refused with B's reason; the lock event reaches A.
    let (status, _) = b
        .post(&format!("/rooms/{room}/lock"), &host.token, json!({}))
        .await;
    assert_eq!(status, 200);
    let lock = aw
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "lock")
        .await;
    assert_eq!(lock["content"]["locked"], true);
    let dave = c.guest("Dave").await;
    let invite = b.invite(&host, &room, json!({})).await;
    let (status, refusal) = join_remote(&c, &dave, &room, &invite["token"]).await;
    assert_eq!(status, 403, "{refusal}");
    assert_eq!(refusal["code"], "room_locked");

    // Kick from B closes Alice's session on A, and A's replica records it.
    let (status, body) = b
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({ "user_id": alice.user_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    aw.wait_for(|m| m["type"] == "kicked" && m["room_id"] == room)
        .await;
    // With no member left, A takes no further part and purges its replica.
    let room_id = room.clone();
    until_db(&a, "A's replica to be purged", async |db| {
        confab_schema::queries::room(db, &room_id)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let offline = hw
        .wait_for(|m| {
            m["type"] == "presence" && m["user_id"] == alice.user_id && m["online"] == false
        })
        .await;
    assert_eq!(offline["device_id"], alice.device_id);

    // Close on B: C's client is told, and C's replica is gone.
    let (status, _) = b.delete(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 204);
    let closed = cw.wait_for(|m| m["type"] == "room_closed").await;
    assert_eq!(closed["reason"], "closed");
    until_db(&c, "C's replica to be purged", async |db| {
        confab_schema::queries::room(db, &room_id)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let (status, body) = c.get(&format!("/rooms/{room}"), &carol.token).await;
    assert_eq!(status, 404, "{body}");
}

/// A remote user joins through their own server with an invite too: the origin records it, and
/// kicking them revokes it, so a new guest of their server with the same link is refused.
#[tokio::test(flavor = "multi_thread")]
async fn kicking_a_remote_member_revokes_the_invite_they_joined_with() {
    let (a, b) = tokio::join!(federating(&[]), federating(&[]));
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let link = b.invite(&host, &room, json!({})).await;
    let alice = a.guest("Alice").await;
    let (status, body) = join_remote(&a, &alice, &room, &link["token"]).await;
    assert_eq!(status, 200, "{body}");

    let (status, kicked) = b
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({ "user_id": alice.user_id }),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(kicked["invite_revoked"], true);
    assert_eq!(kicked["revoked_invites"], json!([link["invite_id"]]));
    // A's replica, with none of A's users left, is purged once the kick reaches it.
    let room_id = room.clone();
    until_db(&a, "A's replica to be purged", async |db| {
        confab_schema::queries::room(db, &room_id)
            .await
            .unwrap()
            .is_none()
    })
    .await;

    let again = a.guest("Alice").await;
    let (status, refusal) = join_remote(&a, &again, &room, &link["token"]).await;
    assert_eq!(
        (status, refusal["code"].as_str()),
        (403, Some("invite_revoked")),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_expiry_on_the_origin_deletes_the_replicas() {
    // A and C keep idle replicas for an hour: only B's deletion can remove their copies.
    let keep = [("CONFAB__ROOMS__IDLE_TTL", "1h")];
    let (a, c) = tokio::join!(federating(&keep), federating(&keep));
    let b = federating(&[
        // Long enough for the new room, counting down until its host connects, to outlive the
        // set-up on a loaded machine.
        ("CONFAB__ROOMS__IDLE_TTL", "2s"),
        ("CONFAB__ROOMS__SWEEP_INTERVAL", "50ms"),
    ])
    .await;
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    // The host's connection stops the countdown that started with the room.
    let (host_ws, _) = WsClient::joined(&b, &host, &room, 0).await;
    let alice = a.guest("Alice").await;
    let carol = c.guest("Carol").await;
    let mut sockets = Vec::new();
    for (server, guest) in [(&a, &alice), (&c, &carol)] {
        let invite = b.invite(&host, &room, json!({})).await;
        let (status, body) = join_remote(server, guest, &room, &invite["token"]).await;
        assert_eq!(status, 200, "{body}");
        let (mut ws, _) = WsClient::joined(server, guest, &room, 0).await;
        let ack = ws.chat(&room, "still here").await;
        assert_eq!(ack["type"], "ack", "{ack}");
        sockets.push(ws);
    }

    // The host leaves the call; Alice and Carol, connected through A and C, keep B's room alive.
    host_ws.close().await;
    let mut db = confab_schema::connect(&b.state.pool).await.unwrap();
    let on_b = confab_schema::queries::room(&mut db, &room)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        on_b.expires_ts, None,
        "remote participants keep the room alive"
    );
    drop(db);

    // They leave too: B's countdown runs out and every copy goes.
    for ws in sockets {
        ws.close().await;
    }
    let room_id = room.clone();
    for (server, what) in [
        (&b, "B's room to expire"),
        (&a, "A's replica to be purged"),
        (&c, "C's replica to be purged"),
    ] {
        until_db(server, what, async |db| {
            confab_schema::queries::room(db, &room_id)
                .await
                .unwrap()
                .is_none()
        })
        .await;
    }
    let (status, body) = a.get(&format!("/rooms/{room}"), &alice.token).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = c.get(&format!("/rooms/{room}"), &carol.token).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_restart_and_a_peer_down_lose_and_reorder_nothing() {
    let a = federating(&[]).await;
    let b = federating(&[]).await;
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let alice = a.guest("Alice").await;
    let invite = b.invite(&host, &room, json!({})).await;
    let (status, body) = join_remote(&a, &alice, &room, &invite["token"]).await;
    assert_eq!(status, 200, "{body}");
    let (mut aw, _) = WsClient::joined(&a, &alice, &room, 0).await;
    // Every event from the first: the two joins, then the chat.
    let mut last = 0;

    // Ten messages, then B restarts, then ten more.
    let (mut hw, _) = WsClient::joined(&b, &host, &room, 0).await;
    for i in 0..10 {
        let ack = hw.chat(&room, &format!("m{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    drop(hw);
    let b = b.restart().await;
    let (mut hw, _) = WsClient::joined(&b, &host, &room, 0).await;
    for i in 10..20 {
        let ack = hw.chat(&room, &format!("m{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let chats = collect_chats(&mut aw, 20, &mut last).await;
    assert_eq!(chats, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());

    // A goes down; B goes on; A comes back and Alice resumes from where she was.
    aw.close().await;
    let stopped = a.stop_keeping().await;
    for i in 20..30 {
        let ack = hw.chat(&room, &format!("m{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let a = stopped.start().await;
    let (mut aw, _) = WsClient::joined(&a, &alice, &room, last).await;
    let chats = collect_chats(&mut aw, 10, &mut last).await;
    assert_eq!(chats, (20..30).map(|i| format!("m{i}")).collect::<Vec<_>>());

    // Exactly once: A's replica holds each of B's events once, with B's numbers.
    let mut on_a = confab_schema::connect(&a.state.pool).await.unwrap();
    let mut on_b = confab_schema::connect(&b.state.pool).await.unwrap();
    let events_a = confab_schema::queries::events_after(&mut on_a, &room, 0, 1000)
        .await
        .unwrap();
    let events_b = confab_schema::queries::events_after(&mut on_b, &room, 0, 1000)
        .await
        .unwrap();
    let seqs = |e: &[confab_schema::models::Event]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&events_a), seqs(&events_b));
    assert_eq!(
        events_a.iter().map(|e| &e.content).collect::<Vec<_>>(),
        events_b.iter().map(|e| &e.content).collect::<Vec<_>>()
    );

    // The sender records transaction ids without waiting for the disk, so a crash of its
    // Postgres can make it resend events under a new id: A applies them by number, once.
    let resent: Vec<Value> = events_b[events_b.len() - 5..]
        .iter()
        .map(|e| serde_json::to_value(confab::federation::rooms::queue::event_pdu(e)).unwrap())
        .collect();
    let txn = json!({"origin": b.server_name().as_str(), "origin_server_ts": 0,
                     "pdus": resent, "edus": []});
    let answer = b
        .signed_request(
            &a.server_name(),
            Method::PUT,
            "/_matrix/federation/v1/send/resent1",
            Some(&txn),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body["pdus"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r.get("error").is_none()),
        "{}",
        answer.body
    );
    // Alice's next event is the next message, not a repeat (collect_chats checks the numbers).
    let ack = hw.chat(&room, "m30").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(collect_chats(&mut aw, 1, &mut last).await, ["m30"]);
    let events_a = confab_schema::queries::events_after(&mut on_a, &room, 0, 1000)
        .await
        .unwrap();
    assert_eq!(events_a.len(), events_b.len() + 1);
}

/// Reads `n` chat events in order, checking their numbers follow `last`.
async fn collect_chats(client: &mut WsClient, n: usize, last: &mut i64) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let msg = client.wait_for(|m| m["type"] == "event").await;
        let seq = msg["seq"].as_i64().unwrap();
        assert_eq!(
            seq,
            *last + 1,
            "events arrive in order, without gaps or repeats"
        );
        *last = seq;
        if msg["content"]["type"] == "chat" {
            out.push(msg["content"]["ciphertext"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_act_only_for_their_own_users_and_rooms() {
    let a = federating(&[]).await;
    let c = federating(&[]).await;
    let b = federating(&[(
        "CONFAB__FEDERATION__DENIED_SERVERS",
        c.server_name().as_str(),
    )])
    .await;
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let invite = b.invite(&host, &room, json!({})).await;
    let carol = c.guest("Carol").await;
    let alice = a.guest("Alice").await;

    // A asks B to join a user of C: refused, whatever the invite.
    let client = &a.state.federation.client;
    let join_path = format!("/_confab/federation/v1/rooms/{room}/join");
    let answer = client
        .request(
            &b.server_name(),
            Method::POST,
            &join_path,
            Some(&json!({"user_id": carol.user_id, "display_name": "C", "invite_token": invite["token"]})),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["code"], "forbidden");

    // Without a valid invite, nobody joins through federation either.
    let (status, body) = join_remote(&a, &alice, &room, &json!("not-a-real-token")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "invite_invalid");

    // A takes no part in the room: it may not read its events or post to it.
    let answer = client
        .request(
            &b.server_name(),
            Method::GET,
            &format!("/_confab/federation/v1/rooms/{room}/events?since=0"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = client
        .request(
            &b.server_name(),
            Method::POST,
            "/_confab/federation/v1/send_chat",
            Some(&json!({"events": [
                {"room_id": room, "sender": alice.user_id, "device_id": alice.device_id,
                 "kind": "text", "ciphertext": "x"},
                {"room_id": room, "sender": host.user_id, "device_id": host.device_id,
                 "kind": "text", "ciphertext": "forged"},
            ]})),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["results"][0]["code"], "not_member");
    assert_eq!(answer.body["results"][1]["code"], "forbidden");

    // A PDU for B's room sent by A is refused: only the origin sends a room's events.
    let invite = b.invite(&host, &room, json!({})).await;
    let (status, body) = join_remote(&a, &alice, &room, &invite["token"]).await;
    assert_eq!(status, 200, "{body}");
    let txn = json!({
        "origin": a.server_name().as_str(),
        "origin_server_ts": 0,
        "pdus": [{"event_id": "$forged", "room_id": room, "type": "confab.event",
                  "event": {"seq": 99, "sender": host.user_id, "device_id": "X",
                            "origin_ts": 0, "content": {"type": "chat"}}}],
        "edus": [],
    });
    let answer = a
        .signed_request(
            &c.server_name(),
            Method::PUT,
            "/_matrix/federation/v1/send/forged1",
            Some(&txn),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body["pdus"]["$forged"]["error"].is_string(),
        "{}",
        answer.body
    );

    // A server cannot bring a device into B's room by EDU: devices come online only through
    // the signed, membership-checked presence request. (The answer comes after B handled it.)
    let txn = json!({
        "origin": a.server_name().as_str(),
        "origin_server_ts": 0,
        "pdus": [],
        "edus": [{"edu_type": "confab.presence", "content": {
            "room_id": room, "user_id": format!("@intruder:{}", a.server_name()),
            "device_id": "EVIL", "display_name": "Intruder", "online": true}}],
    });
    let answer = client
        .request(
            &b.server_name(),
            Method::PUT,
            "/_matrix/federation/v1/send/presence1",
            Some(&txn),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (status, summary) = b.get(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 200, "{summary}");
    assert!(
        !summary["connected"].to_string().contains("intruder"),
        "{summary}"
    );

    // A server B denies cannot bring its users in.
    let invite = b.invite(&host, &room, json!({})).await;
    let (status, body) = join_remote(&c, &carol, &room, &invite["token"]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "federation_denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_devices_count_only_while_their_server_confirms_them() {
    // Devices are confirmed every 300 ms and taken off after 900 ms without confirmation.
    let lease = [("CONFAB__FEDERATION__PRESENCE_LEASE", "900ms")];
    let (a, b) = tokio::join!(federating(&lease), federating(&lease));
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let alice = a.guest("Alice").await;
    let invite = b.invite(&host, &room, json!({})).await;
    let (status, summary) = join_remote(&a, &alice, &room, &invite["token"]).await;
    assert_eq!(status, 200, "{summary}");
    let (mut hw, _) = WsClient::joined(&b, &host, &room, 0).await;
    let (_aw, _) = WsClient::joined(&a, &alice, &room, 0).await;
    hw.wait_for(|m| {
        m["type"] == "presence" && m["device_id"] == alice.device_id && m["online"] == true
    })
    .await;

    // A says, signed, that Alice has two more devices, and then never confirms them: as if
    // their offline notices were lost, or A restarted without them.
    for ghost in ["GHOST1", "GHOST2"] {
        let answer = a
            .signed_request(
                &b.server_name(),
                Method::POST,
                &format!("/_confab/federation/v1/rooms/{room}/presence"),
                Some(&json!({
                    "user_id": alice.user_id, "device_id": ghost,
                    "display_name": "Guest 0001", "online": true,
                })),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        hw.wait_for(|m| m["type"] == "presence" && m["device_id"] == ghost && m["online"] == true)
            .await;
        // B takes it off by itself once the lease runs out.
        hw.wait_for(|m| m["type"] == "presence" && m["device_id"] == ghost && m["online"] == false)
            .await;
    }
    // By now more than a lease has passed since Alice's real device was first announced: it
    // stayed because A kept confirming it, and nobody was told it left.
    assert!(
        !hw.pending
            .iter()
            .any(|m| m["type"] == "presence" && m["device_id"] == alice.device_id),
        "{:?}",
        hw.pending
    );
    let connected = b.state.engine.connected_devices(&room);
    assert!(
        connected.iter().any(|d| d.device_id == alice.device_id),
        "{connected:?}"
    );
    assert!(!connected.iter().any(|d| d.device_id.starts_with("GHOST")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_guest_gets_an_invite_link_through_its_own_server_only_when_allowed() {
    let (a, b) = tokio::join!(federating(&[]), federating(&[]));
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let link = b.invite(&host, &room, json!({})).await;
    let alice = a.guest("Alice").await;
    let (status, body) = join_remote(&a, &alice, &room, &link["token"]).await;
    assert_eq!(status, 200, "{body}");
    let invites = format!("/rooms/{room}/invites");

    // Off: A forwards the request to B, and B's refusal comes back with its code.
    let (status, body) = a.post(&invites, &alice.token, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_host")),
        "{body}"
    );

    // B's host turns sharing on; the setting reaches A's replica as an event.
    let mut on_a = WsClient::authed(&a, &alice).await;
    let ack = on_a
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    assert_eq!(ack["result"]["guests_may_share"], false, "{ack}");
    let (status, _) = b
        .post(
            &format!("/rooms/{room}/settings"),
            &host.token,
            json!({"guests_may_share": true}),
        )
        .await;
    assert_eq!(status, 200);
    let event = on_a
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "settings")
        .await;
    assert_eq!(event["content"]["guests_may_share"], true);
    let (_, summary) = a.get(&format!("/rooms/{room}"), &alice.token).await;
    assert_eq!(
        (&summary["guests_may_share"], &summary["can_share"]),
        (&json!(true), &json!(true)),
        "{summary}"
    );
    // A settings change is the origin's: A refuses to change its replica.
    let (status, body) = a
        .post(
            &format!("/rooms/{room}/settings"),
            &alice.token,
            json!({"guests_may_share": false}),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Alice's link, made on B through A, admits a friend on A and one on B.
    let (status, shared) = a.post(&invites, &alice.token, json!({"max_uses": 2})).await;
    assert_eq!(status, 201, "{shared}");
    assert_eq!(shared["room_id"], room.as_str());
    let friend = a.guest("Friend").await;
    let (status, body) = join_remote(&a, &friend, &room, &shared["token"]).await;
    assert_eq!(status, 200, "{body}");
    let local = b.guest("Local").await;
    let (status, body) = join_remote(&b, &local, &room, &shared["token"]).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = b.get(&invites, &host.token).await;
    assert!(
        list["invites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["invite_id"] == shared["invite_id"]
                && i["created_by"] == alice.user_id.as_str()),
        "{list}"
    );

    // Kicking Alice on B revokes the link she made.
    let (status, kicked) = b
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{kicked}");
    assert!(
        kicked["revoked_invites"]
            .as_array()
            .unwrap()
            .contains(&shared["invite_id"]),
        "{kicked}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_cohost_acts_through_its_own_server_and_remote_knockers_are_answered() {
    let (a, b) = tokio::join!(federating(&[]), federating(&[]));
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let link = b.invite(&host, &room, json!({})).await;
    let alice = a.guest("Alice").await;
    let (status, body) = join_remote(&a, &alice, &room, &link["token"]).await;
    assert_eq!(status, 200, "{body}");

    // Before she is named, Alice's host requests are refused by the origin, through A.
    let (status, body) = a
        .post(&format!("/rooms/{room}/lock"), &alice.token, json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_host")),
        "{body}"
    );
    let (status, _) = b
        .post(
            &format!("/rooms/{room}/role"),
            &host.token,
            json!({"user_id": alice.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(status, 200);
    // A's replica learns her role from the event.
    let (room_id, alice_id) = (room.clone(), alice.user_id.clone());
    until_db(&a, "Alice to be a co-host on A", async |db| {
        confab_schema::queries::member(db, &room_id, &alice_id)
            .await
            .unwrap()
            .is_some_and(|m| m.is_host)
    })
    .await;
    let (_, summary) = a.get(&format!("/rooms/{room}"), &alice.token).await;
    assert_eq!(
        (&summary["role"], &summary["is_host"]),
        (&json!("cohost"), &json!(true)),
        "{summary}"
    );

    // Now A forwards her lock and her settings, and B applies them.
    let (status, body) = a
        .post(&format!("/rooms/{room}/lock"), &alice.token, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["locked"], true);
    let (status, body) = a
        .post(
            &format!("/rooms/{room}/settings"),
            &alice.token,
            json!({"lobby": true}),
        )
        .await;
    assert_eq!((status, &body["lobby"]), (200, &json!(true)), "{body}");

    // A knocker on A knocks through A; Alice, on A, lets them in.
    let mut alice_ws = WsClient::authed(&a, &alice).await;
    alice_ws
        .request(json!({"type": "subscribe", "room_id": room}))
        .await;
    let kim = a.guest("Kim").await;
    let (status, body) = join_remote(&a, &kim, &room, &link["token"]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("knocking")),
        "{body}"
    );
    let knock = alice_ws
        .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "knock")
        .await;
    assert_eq!(knock["content"]["user_id"], kim.user_id.as_str());
    // A reload of Alice's page on A finds the knock in her summary, from A's replica.
    let (_, summary) = a.get(&format!("/rooms/{room}"), &alice.token).await;
    let knocks = summary["knocks"].as_array().unwrap();
    assert_eq!(knocks.len(), 1, "{summary}");
    assert_eq!(knocks[0]["user_id"], kim.user_id.as_str());
    let (status, body) = a
        .post(
            &format!("/rooms/{room}/knocks"),
            &alice.token,
            json!({"user_id": kim.user_id, "admit": true}),
        )
        .await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("admitted")),
        "{body}"
    );
    let (status, body) = join_remote(&a, &kim, &room, &link["token"]).await;
    assert_eq!(status, 200, "{body}");
    let (room_id, kim_id) = (room.clone(), kim.user_id.clone());
    until_db(&a, "Kim to be a member on A", async |db| {
        confab_schema::queries::member(db, &room_id, &kim_id)
            .await
            .unwrap()
            .is_some_and(|m| m.membership == "joined")
    })
    .await;
    let (_, summary) = a.get(&format!("/rooms/{room}"), &alice.token).await;
    assert_eq!(summary["knocks"], json!([]), "{summary}");

    // Another one is turned away by the host on B.
    let ray = a.guest("Ray").await;
    let (status, body) = join_remote(&a, &ray, &room, &link["token"]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("knocking")),
        "{body}"
    );
    let (status, _) = b
        .post(
            &format!("/rooms/{room}/knocks"),
            &host.token,
            json!({"user_id": ray.user_id, "admit": false}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = join_remote(&a, &ray, &room, &link["token"]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("knock_refused")),
        "{body}"
    );

    // The host leaves for good: Alice, the co-host, is the host now, on both servers.
    let (status, _) = b
        .post(&format!("/rooms/{room}/leave"), &host.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let (room_id, alice_id) = (room.clone(), alice.user_id.clone());
    until_db(&a, "Alice to be the host on A", async |db| {
        confab_schema::queries::room(db, &room_id)
            .await
            .unwrap()
            .is_some_and(|r| r.host_user_id == alice_id)
    })
    .await;
    let (_, summary) = a.get(&format!("/rooms/{room}"), &alice.token).await;
    assert_eq!(
        (&summary["host"], &summary["role"]),
        (&json!(alice.user_id), &json!("host")),
        "{summary}"
    );
    // As the host, she names Kim co-host through A.
    let (status, body) = a
        .post(
            &format!("/rooms/{room}/role"),
            &alice.token,
            json!({"user_id": kim.user_id, "role": "cohost"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
