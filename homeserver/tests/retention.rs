//! Nothing kept longer than promised (README, "Retention"): guest sessions in no room and unused
//! for `sessions.idle_ttl` are deleted, their use is recorded (at most once an hour), and a
//! deleted room's rows queued for other servers go with it, but for its deletion notice, which
//! waits until it is delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab::federation::inbox::Inbound;
use confab_schema::queries;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use serde_json::json;
use support::{Guest, PATIENCE, TestServer, WsClient};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Sets a session's recorded last use, as if it had last been used then.
async fn set_last_seen(s: &TestServer, who: &Guest, ts: i64) {
    let mut conn = confab_schema::connect(&s.state.pool).await.unwrap();
    let n = diesel::sql_query("UPDATE sessions SET last_seen_ts = $1 WHERE user_id = $2")
        .bind::<BigInt, _>(ts)
        .bind::<Text, _>(&who.user_id)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn last_seen(s: &TestServer, who: &Guest) -> Option<i64> {
    let mut conn = confab_schema::connect(&s.state.pool).await.unwrap();
    queries::session_by_token_hash(&mut conn, &confab::sessions::hash_token(&who.token))
        .await
        .unwrap()
        .map(|session| session.last_seen_ts)
}

/// The status of an authenticated request: 200 while the session lives, 401 once it is gone.
async fn status_of(s: &TestServer, who: &Guest) -> u16 {
    let (status, body) = s.get("/sessions/me", &who.token).await;
    if status == 401 {
        assert_eq!(body["code"], "unauthorized", "{body}");
    }
    status
}

async fn sweep(s: &TestServer) -> usize {
    confab::sessions::sweep_idle(&s.state.pool, &s.state.settings, &s.state.metrics).await
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_in_no_room_are_deleted_and_the_others_kept() {
    // The sweeper's own runs are an hour apart: the test runs the sweep itself.
    let s = TestServer::start_with(&[("CONFAB__ROOMS__SWEEP_INTERVAL", "1h")]).await;
    assert_eq!(
        s.state.settings.sessions.idle_ttl,
        Duration::from_secs(7 * 24 * 3600),
        "the default"
    );
    let idle = s.guest("Idle").await;
    let returning = s.guest("Returning").await;
    let (room, g) = s.room_with(2).await;
    let (host, member, left) = (g[0].clone(), g[1].clone(), g[2].clone());
    let (status, body) = s
        .post(&format!("/rooms/{room}/leave"), &left.token, json!({}))
        .await;
    assert_eq!(status, 204, "{body}");
    let recent = s.guest("Recent").await;

    // Eight days without use, but for `recent`; `returning` comes back now.
    let long_ago = now_ms() - 8 * DAY_MS;
    for who in [&idle, &returning, &host, &member, &left] {
        set_last_seen(&s, who, long_ago).await;
    }
    let came_back = now_ms();
    assert_eq!(status_of(&s, &returning).await, 200);
    assert!(
        last_seen(&s, &returning).await.unwrap() >= came_back,
        "its use was recorded"
    );

    assert_eq!(sweep(&s).await, 1, "only the idle session in no room");
    assert_eq!(status_of(&s, &idle).await, 401, "its token stopped working");
    for who in [&returning, &recent, &host, &member, &left] {
        assert_eq!(status_of(&s, who).await, 200, "{} is kept", who.user_id);
    }
    assert!(
        s.metrics()
            .await
            .lines()
            .any(|l| l == "confab_sessions_expired_total 1"),
        "counted"
    );

    // The room goes (the host's request is a use of the host's session); the members who had
    // not been back are in no room any more, and go at the next sweep.
    for who in [&member, &left] {
        set_last_seen(&s, who, long_ago).await;
    }
    let (status, body) = s.delete(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(sweep(&s).await, 2);
    for who in [&member, &left] {
        assert_eq!(last_seen(&s, who).await, None, "{} deleted", who.user_id);
    }
    for who in [&host, &returning, &recent] {
        assert_eq!(status_of(&s, who).await, 200, "{} is kept", who.user_id);
    }
    assert_eq!(sweep(&s).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_use_is_recorded_at_most_once_an_hour() {
    let s = TestServer::start().await;
    let who = s.guest("Ada").await;

    // Used half an hour ago: a request now writes nothing.
    let half_an_hour_ago = now_ms() - HOUR_MS / 2;
    set_last_seen(&s, &who, half_an_hour_ago).await;
    assert_eq!(status_of(&s, &who).await, 200);
    let c = WsClient::authed(&s, &who).await;
    assert_eq!(last_seen(&s, &who).await, Some(half_an_hour_ago));

    // Over an hour ago: the next authentication records it, over REST …
    set_last_seen(&s, &who, now_ms() - 2 * HOUR_MS).await;
    let before = now_ms();
    assert_eq!(status_of(&s, &who).await, 200);
    assert!(last_seen(&s, &who).await.unwrap() >= before);

    // … and over the WebSocket.
    set_last_seen(&s, &who, now_ms() - 2 * HOUR_MS).await;
    let before = now_ms();
    let again = WsClient::authed(&s, &who).await;
    assert!(last_seen(&s, &who).await.unwrap() >= before);
    for socket in [c, again] {
        socket.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_deletes_idle_sessions_by_itself() {
    let s = TestServer::start_with(&[("CONFAB__ROOMS__SWEEP_INTERVAL", "50ms")]).await;
    let idle = s.guest("Idle").await;
    set_last_seen(&s, &idle, now_ms() - 8 * DAY_MS).await;
    let deadline = Instant::now() + PATIENCE;
    while last_seen(&s, &idle).await.is_some() {
        assert!(Instant::now() < deadline, "the sweeper never deleted it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_of(&s, &idle).await, 401);
}

/// The room ids of the rows queued for `destination`, with their PDU types, oldest first.
async fn queued_rooms(s: &TestServer, destination: &str) -> Vec<(String, String)> {
    let mut conn = confab_schema::connect(&s.state.pool).await.unwrap();
    queries::outbound_head(&mut conn, destination, None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            (
                row.pdu["room_id"].as_str().unwrap().to_owned(),
                row.pdu["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_rooms_queued_rows_go_with_it_but_its_deletion_notice() {
    assert_eq!(
        queries::ROOM_DELETED_PDU,
        confab::federation::rooms::DELETED_PDU,
        "the schema keeps the notice the room layer sends"
    );
    let a = TestServer::start_federating(&[
        ("CONFAB__FEDERATION__RETRY_BASE", "20ms"),
        ("CONFAB__FEDERATION__RETRY_CAP", "100ms"),
    ])
    .await;
    // The other server is down: what is queued for it waits.
    let b = TestServer::start_federating(&[]).await.stop_keeping().await;
    let b_name = b.server_name().to_string();
    let host = a.guest("Host").await;
    let closed = a.room(&host).await;
    let kept = a.room(&host).await;
    {
        // As after a user of the other server joined both rooms.
        let mut conn = confab_schema::connect(&a.state.pool).await.unwrap();
        for room in [&closed, &kept] {
            queries::add_room_server(&mut conn, room, &b_name)
                .await
                .unwrap();
        }
    }
    let (mut c, _) = WsClient::joined(&a, &host, &closed, 0).await;
    let reply = c
        .request(json!({"type": "subscribe", "room_id": kept, "since": 0}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    for i in 0..5 {
        for room in [&closed, &kept] {
            let ack = c.chat(room, &format!("m{i}")).await;
            assert_eq!(ack["type"], "ack", "{ack}");
        }
    }
    let queued = queued_rooms(&a, &b_name).await;
    assert_eq!(queued.iter().filter(|(r, _)| *r == closed).count(), 5);
    assert_eq!(queued.iter().filter(|(r, _)| *r == kept).count(), 5);

    let (status, body) = a.delete(&format!("/rooms/{closed}"), &host.token).await;
    assert_eq!(status, 204, "{body}");
    let queued = queued_rooms(&a, &b_name).await;
    let of_closed: Vec<&(String, String)> = queued.iter().filter(|(r, _)| *r == closed).collect();
    assert_eq!(
        of_closed,
        vec![&(closed.clone(), "confab.room_deleted".to_owned())],
        "only the deletion notice of the closed room is left"
    );
    assert_eq!(queued.iter().filter(|(r, _)| *r == kept).count(), 5);

    // The notice waits for the server to come back, and is delivered.
    let b = b.start().await;
    let mut inbox = b.inbox.lock().await;
    loop {
        match tokio::time::timeout(PATIENCE, inbox.recv())
            .await
            .expect("the deletion notice arrives")
            .unwrap()
        {
            Inbound::Pdu { pdu, .. } if pdu.room_id == closed => {
                assert_eq!(pdu.event_type, "confab.room_deleted");
                break;
            }
            _ => {}
        }
    }
    drop(inbox);
    let deadline = Instant::now() + PATIENCE;
    while !queued_rooms(&a, &b_name).await.is_empty() {
        assert!(Instant::now() < deadline, "the queue never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await;
}
