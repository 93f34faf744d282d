//! Exactly once across retries: a chat message sent again with the same `txn_id` (a client
//! resending after a lost ack, a forwarded batch replayed) gets the first answer and appends
//! nothing, over the socket, through federation forwarding, and within one writer batch.
#![allow(clippy::unwrap_used)]

mod support;

use confab::engine::ChatReply;
use confab_schema::models::NewEvent;
use reqwest::Method;
use serde_json::{Value, json};
use support::{TestServer, WsClient};

/// How many events of `room` carry `ciphertext`.
async fn copies(server: &TestServer, room: &str, ciphertext: &str) -> usize {
    let mut db = confab_schema::connect(&server.state.pool).await.unwrap();
    confab_schema::queries::events_after(&mut db, room, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.content["ciphertext"] == ciphertext)
        .count()
}

fn chat(room: &str, ciphertext: &str, txn_id: &str) -> Value {
    json!({"type": "chat", "room_id": room, "kind": "text", "ciphertext": ciphertext,
           "txn_id": txn_id})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resend_after_a_lost_ack_gets_the_first_answer() {
    let server = TestServer::start().await;
    let (room, guests) = server.room_with(1).await;
    let (sender, observer) = (&guests[0], &guests[1]);
    let (mut watching, _) = WsClient::joined(&server, observer, &room, 0).await;

    // Sent, then the socket is gone before the ack could be read: the observer seeing the
    // message shows it was committed.
    let (mut first, _) = WsClient::joined(&server, sender, &room, 0).await;
    first.send(chat(&room, "once", "txn-1")).await;
    let seen = watching
        .wait_for(|m| m["content"]["ciphertext"] == "once")
        .await;
    first.close().await;

    // The same device comes back and sends it again, as the web client does with what it
    // holds unacknowledged.
    let (mut again, _) =
        WsClient::joined(&server, sender, &room, seen["seq"].as_i64().unwrap()).await;
    let ack = again.request(chat(&room, "once", "txn-1")).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["seq"], seen["seq"], "the first answer: {ack}");
    assert_eq!(ack["result"]["ts"], seen["ts"]);

    // Twice more at once on one socket: one answer for both.
    let a = again.request(chat(&room, "twice", "txn-2")).await;
    let b = again.request(chat(&room, "twice", "txn-2")).await;
    assert_eq!(a["result"]["seq"], b["result"]["seq"], "{a} {b}");

    // The observer got each message once: the next event after "once" is the first "twice".
    let once = seen["seq"].as_i64().unwrap();
    let next = watching
        .wait_for(|m| m["type"] == "event" && m["seq"].as_i64() > Some(once))
        .await;
    assert_eq!(next["content"]["ciphertext"], "twice", "{next}");
    assert_eq!(next["seq"], a["result"]["seq"]);
    assert_eq!(copies(&server, &room, "once").await, 1);
    assert_eq!(copies(&server, &room, "twice").await, 1);

    // The id is the device's: another device may use the same one for its own message.
    let other = watching.request(chat(&room, "theirs", "txn-1")).await;
    assert_eq!(other["type"], "ack", "{other}");
    assert_ne!(other["result"]["seq"], seen["seq"]);

    // An id is bounded like every field.
    let long = again.request(chat(&room, "x", &"t".repeat(65))).await;
    assert_eq!(long["type"], "error", "{long}");
    assert_eq!(long["code"], "bad_request");
    server.stop().await;
}

/// Two messages with one key queued while the writer is held inside a state change of the same
/// room are taken in one batch: one event, one answer for both.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_within_one_batch_is_answered_as_the_first() {
    let server = TestServer::start().await;
    let (room, guests) = server.room_with(0).await;
    let host = &guests[0];
    let writer = server.state.engine.writer().clone();
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let held = tokio::spawn({
        let (writer, room) = (writer.clone(), room.clone());
        async move {
            writer
                .change(&room, move |_db, _appender| {
                    Box::pin(async move {
                        let _ = entered_tx.send(());
                        let _ = released.await;
                        Ok(())
                    })
                })
                .await
                .unwrap();
        }
    });
    entered.await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let event = NewEvent {
            sender: host.user_id.clone(),
            device_id: host.device_id.clone(),
            origin_ts: 1,
            content: json!({"type": "chat", "kind": "text", "ciphertext": "batched"}),
        };
        writer
            .enqueue(&room, event, Some("same".into()), ChatReply::Caller(reply))
            .await;
        answers.push(answer);
    }
    release.send(()).unwrap();
    held.await.unwrap();
    let first = answers.remove(0).await.unwrap().unwrap();
    let second = answers.remove(0).await.unwrap().unwrap();
    assert_eq!(first, second);
    assert_eq!(copies(&server, &room, "batched").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_forwarded_batch_appends_nothing_twice() {
    let b = TestServer::start_federating(&[]).await;
    let a = TestServer::start_federating(&[]).await;
    let host = b.guest("Host").await;
    let room = b.room(&host).await;
    let invite = b.invite(&host, &room, json!({})).await;
    let alice = a.guest("Alice").await;
    let (status, body) = a
        .post(
            &format!("/rooms/{room}/join"),
            &alice.token,
            json!({ "invite_token": invite["token"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The batch A's forwarder sends for Alice's message, captured and sent again.
    let batch = json!({"events": [
        {"room_id": room, "sender": alice.user_id, "device_id": alice.device_id,
         "kind": "text", "ciphertext": "forwarded", "txn_id": "f-1"},
    ]});
    let mut results = Vec::new();
    for _ in 0..2 {
        let answer = a
            .signed_request(
                &b.server_name(),
                Method::POST,
                "/_confab/federation/v1/send_chat",
                Some(&batch),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        results.push(answer.body["results"][0].clone());
    }
    assert!(results[0]["seq"].is_i64(), "{}", results[0]);
    assert_eq!(results[0], results[1], "the replay gets the first answer");
    assert_eq!(copies(&b, &room, "forwarded").await, 1);

    // Through the socket of Alice's own server, a message with no id still gets one on its
    // way, so the origin sees each forwarded message once.
    let (mut client, _) = WsClient::joined(&a, &alice, &room, 0).await;
    let ack = client
        .request(json!({"type": "chat", "room_id": room, "kind": "text", "ciphertext": "no id"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    use confab_schema::schema::events;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut db = confab_schema::connect(&b.state.pool).await.unwrap();
    let remembered: i64 = events::table
        .filter(events::sender.eq(&alice.user_id))
        .filter(events::txn_id.is_not_null())
        .count()
        .get_result(&mut db)
        .await
        .unwrap();
    assert_eq!(remembered, 2, "the origin remembers both forwarded ids");
    a.stop().await;
    b.stop().await;
}
