//! Faults, with real processes and real Postgres: a client that stops reading, a federation
//! peer that never comes back, Postgres restarted under traffic, and the server killed with
//! SIGKILL in the middle of a chat burst. Each test checks that what was acknowledged is kept,
//! in order and once, and that the server recovers by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use serde_json::{Value, json};
use support::{Guest, PATIENCE, TestServer, WsClient};

fn is_chat(m: &Value) -> bool {
    m["type"] == "event" && m["content"]["type"] == "chat"
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

async fn room_with(s: &TestServer, n: usize) -> (String, Vec<Guest>) {
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    let mut guests = vec![host.clone()];
    for i in 0..n {
        let g = s.guest(&format!("Guest {i}")).await;
        s.join_with_invite(&host, &g, &room).await;
        guests.push(g);
    }
    (room, guests)
}

/// The largest send buffer the kernel lets a TCP socket grow to: what loopback can absorb on
/// the server's side of a client that stopped reading.
fn max_send_buffer() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    text.split_whitespace().nth(2).unwrap().parse().unwrap()
}

// ---- slow consumer ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_dropped_and_resumes_without_slowing_the_room() {
    const QUEUE: usize = 16;
    const CIPHERTEXT: usize = 48_000;
    let s = TestServer::start_with(&[
        ("CONFAB__LIMITS__SEND_QUEUE_FRAMES", "16"),
        ("CONFAB__LIMITS__MAX_EVENT_BYTES", "49152"),
        ("CONFAB__LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("CONFAB__LIMITS__MESSAGE_BURST", "100000"),
    ])
    .await;
    let (room, g) = room_with(&s, 2).await;
    let (mut sender, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut reader, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let mut slow = WsClient::connect_small_buffer(&s.ws_url()).await;
    slow.auth(&g[2]).await;
    let reply = slow
        .request(json!({"type": "subscribe", "room_id": room, "since": 0}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    // Everything the slow client is owed from the past arrived: from here on it reads nothing.
    let joined = slow
        .wait_for(|m| m["type"] == "event" && m["content"]["user_id"] == g[2].user_id.as_str())
        .await;
    let slow_device = g[2].device_id.clone();

    // The healthy reader reads on its own task and reports what it sees. The sender waits for
    // it to see each message before sending the next, so that on a loaded machine it is never
    // the reader that falls a queue behind: only the client that stopped reading can.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        let mut chats = Vec::new();
        loop {
            let m = reader.next().await;
            if m["type"] == "presence"
                && m["device_id"] == slow_device.as_str()
                && m["online"] == false
            {
                seen_tx.send(None).unwrap();
            }
            if is_chat(&m) {
                let end = m["content"]["ciphertext"] == "end";
                seen_tx.send(m["seq"].as_i64()).unwrap();
                chats.push(m);
                if end {
                    return chats;
                }
            }
        }
    });
    let mut dropped = false;
    let mut sent_and_seen = async |ciphertext: &str, dropped: &mut bool| -> i64 {
        let ack = sender.chat(&room, ciphertext).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let seq = ack["result"]["seq"].as_i64().unwrap();
        loop {
            match tokio::time::timeout(PATIENCE, seen_rx.recv()).await {
                Err(_) => panic!("the healthy reader did not get message {seq} in {PATIENCE:?}"),
                Ok(None) => panic!("the healthy reader stopped"),
                Ok(Some(None)) => *dropped = true,
                Ok(Some(Some(got))) if got == seq => return seq,
                Ok(Some(Some(got))) => panic!("the healthy reader got {got}, expected {seq}"),
            }
        }
    };

    // Bytes the slow client's path can hold before the server's queue fills: the kernel's
    // buffers, actix-ws's channel of 32 frames, the queue and one frame in hand, with margin.
    let frame = CIPHERTEXT + 512;
    let bound = (max_send_buffer() + (1 << 20)) / frame + 32 + QUEUE + 64;
    let filler = "x".repeat(CIPHERTEXT - 8);
    let mut acked = Vec::new();
    let started = Instant::now();
    for i in 0..bound {
        if dropped {
            break;
        }
        acked.push(sent_and_seen(&format!("{i:08}{filler}"), &mut dropped).await);
    }
    assert!(
        dropped,
        "the slow client was still in the room after {bound} messages of {frame} bytes"
    );
    let burst = started.elapsed();
    acked.push(sent_and_seen("end", &mut dropped).await);

    // The others got everything, in order, once.
    let got = tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the reader got the end marker")
        .unwrap();
    assert_eq!(seqs(&got), acked, "the healthy reader's stream");

    // The slow one, reading again, finds an unbroken run of events, then the reason it was
    // closed.
    let (code, reason) = slow.closed().await.expect("a close frame");
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    let before: Vec<Value> = slow.pending.drain(..).filter(is_chat).collect();
    let before = seqs(&before);
    assert!(
        before.len() < acked.len() - 1,
        "the slow client really fell behind ({} of {})",
        before.len(),
        acked.len()
    );
    assert_eq!(
        before,
        acked[..before.len()],
        "what it got before the close is the start of the log, without a gap"
    );
    let last_seen = before
        .last()
        .copied()
        .unwrap_or(joined["seq"].as_i64().unwrap());

    // It resumes from the last event it saw and gets each one it missed, once.
    let (mut again, _) = WsClient::joined(&s, &g[2], &room, last_seen).await;
    let mut after = Vec::new();
    while after.last().map(|e: &Value| &e["content"]["ciphertext"]) != Some(&json!("end")) {
        after.push(again.wait_for(is_chat).await);
    }
    assert_eq!(
        seqs(&after),
        acked[before.len()..],
        "the resumed stream: the rest of the log, once"
    );
    eprintln!(
        "slow consumer: dropped after {} messages of {frame} bytes ({} reached it) in {burst:?}",
        acked.len() - 1,
        before.len()
    );
}
