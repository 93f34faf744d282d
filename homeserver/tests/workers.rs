//! Several workers of one homeserver on one database (README, "Scaling out"): rooms' news goes
//! between them through Postgres, a worker that missed it catches up from the table, the idle
//! countdown waits for every live worker, and the singletons run on one worker at a time and
//! move when it loses its session. Real servers on loopback, one real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use confab::cluster::Singleton;
use serde_json::{Value, json};
use support::{Guest, PATIENCE, TestServer, WsClient, is_chat};

/// A short lease, so that a singleton moves within a second and a resync comes every second.
const FAST: &[(&str, &str)] = &[
    ("CONFAB__CLUSTER__LEASE", "3s"),
    ("CONFAB__ROOMS__SWEEP_INTERVAL", "100ms"),
];

/// Runs statements on the workers' database.
async fn sql(server: &TestServer, statements: &str) {
    use diesel_async::SimpleAsyncConnection;
    let mut db = confab_schema::connect(&server.state.pool).await.unwrap();
    db.batch_execute(statements).await.unwrap();
}

/// Waits, within [`PATIENCE`], until `condition` holds: for a state the test can only read.
async fn until<F: std::future::Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A room hosted on the first worker with a guest who joined through the second.
async fn shared_room(w: &[TestServer]) -> (String, Guest, Guest) {
    let host = w[0].guest("Host").await;
    let room = w[0].room(&host).await;
    let guest = w[1].guest("Guest").await;
    let invite = w[0].invite(&host, &room, json!({})).await;
    w[1].join(&guest, &room, &invite).await;
    (room, host, guest)
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_a_kick_on_one_worker_reach_the_devices_on_another_in_order_once() {
    let w = TestServer::start_workers(2, FAST).await;
    let (room, host, guest) = shared_room(&w).await;
    let (mut on_w0, ack) = WsClient::joined(&w[0], &host, &room, 0).await;
    let since = ack["last_seq"].as_i64().unwrap_or(0);
    let (mut on_w1, _) = WsClient::joined(&w[1], &guest, &room, since).await;

    for i in 0..20 {
        let ack = on_w0.chat(&room, &format!("from w0 {i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let ack = on_w1.chat(&room, "from w1").await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // Every chat event once, in sequence order, on both workers.
    let mut got = Vec::new();
    while got.len() < 21 {
        got.push(on_w1.wait_for(is_chat).await);
    }
    let numbers = seqs(&got);
    assert!(numbers.windows(2).all(|p| p[1] == p[0] + 1), "{numbers:?}");
    let mut back = Vec::new();
    while back.len() < 21 {
        back.push(on_w0.wait_for(is_chat).await);
    }
    assert_eq!(seqs(&back), numbers);

    // The kick is an event committed on w0; the guest's socket is on w1.
    let (status, body) = w[0]
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({ "user_id": guest.user_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    on_w1.wait_for(|m| m["type"] == "kicked").await;
    let refused = on_w1.chat(&room, "still here?").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_subscribed", "{refused}");
}

/// The notifying worker "dies" between its commit and its notification (its notifications are
/// dropped): the other worker still delivers, from the table, at its next resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_was_never_told_catches_up_from_the_table() {
    let w = TestServer::start_workers(2, FAST).await;
    let (room, host, guest) = shared_room(&w).await;
    let (mut on_w0, _) = WsClient::joined(&w[0], &host, &room, 0).await;
    let (mut on_w1, _) = WsClient::joined(&w[1], &guest, &room, 0).await;

    w[0].state.cluster.drop_notifications(true);
    let ack = on_w0.chat(&room, "told nobody").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let seq = ack["result"]["seq"].as_i64().unwrap();
    let event = on_w1.wait_for(is_chat).await;
    assert_eq!(event["seq"].as_i64(), Some(seq));
    assert_eq!(event["content"]["ciphertext"], "told nobody");
    // Once, even when the news comes late after all.
    w[0].state.cluster.drop_notifications(false);
    let ack = on_w0.chat(&room, "told").await;
    let next = on_w1.wait_for(is_chat).await;
    assert_eq!(next["seq"], ack["result"]["seq"], "{next}");
}

/// A worker's listening session is cut: it opens a new one, catches up with what was committed
/// meanwhile, and what it ran alone moves to the other worker (a worker that lost its session
/// leaves the singletons to the others for a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_reopened_and_its_singletons_move_to_another_worker() {
    let w = TestServer::start_workers(2, FAST).await;
    // Each singleton is held by exactly one worker.
    for singleton in [Singleton::Sender, Singleton::Sweeper] {
        let mut leading: Vec<_> = w
            .iter()
            .map(|s| s.state.cluster.leadership(singleton))
            .collect();
        let (a, b) = leading.split_at_mut(1);
        tokio::time::timeout(PATIENCE, async {
            tokio::select! {
                r = a[0].wait_for(|l| *l) => { r.unwrap(); }
                r = b[0].wait_for(|l| *l) => { r.unwrap(); }
            }
        })
        .await
        .expect("nobody took the singleton");
        let holders = w
            .iter()
            .filter(|s| s.state.cluster.leads(singleton))
            .count();
        assert_eq!(holders, 1, "{singleton:?}");
    }
    let holder = w
        .iter()
        .position(|s| s.state.cluster.leads(Singleton::Sweeper))
        .unwrap();
    let other = 1 - holder;

    let (room, host, guest) = shared_room(&w).await;
    let (mut on_other, _) = WsClient::joined(&w[other], &host, &room, 0).await;
    let (mut on_holder, _) = WsClient::joined(&w[holder], &guest, &room, 0).await;

    let connects = w[holder].state.cluster.stats().listener_connects();
    let pid = w[holder].state.cluster.stats().listener_pid();
    assert_ne!(pid, 0);
    let mut lost = w[holder].state.cluster.leadership(Singleton::Sweeper);
    let mut taken = w[other].state.cluster.leadership(Singleton::Sweeper);
    sql(&w[other], &format!("SELECT pg_terminate_backend({pid})")).await;
    // Committed while the holder's session is being replaced.
    let ack = on_other.chat(&room, "while you were away").await;
    assert_eq!(ack["type"], "ack", "{ack}");

    tokio::time::timeout(PATIENCE, lost.wait_for(|l| !*l))
        .await
        .expect("the worker kept a singleton whose lock went with its session")
        .unwrap();
    tokio::time::timeout(PATIENCE, taken.wait_for(|l| *l))
        .await
        .expect("the other worker did not take the sweeper over")
        .unwrap();
    let event = on_holder.wait_for(is_chat).await;
    assert_eq!(event["seq"], ack["result"]["seq"], "{event}");
    let stats = w[holder].state.cluster.stats();
    until("the session is reopened", || async {
        stats.listener_connects() > connects
    })
    .await;
    // The sweeper runs where it moved to.
    let sweeps = w[other].state.metrics.room_sweeps.get();
    until("the new holder sweeps", || async {
        w[other].state.metrics.room_sweeps.get() > sweeps + 2
    })
    .await;
}

/// The countdown starts only when nobody is connected on any live worker; a worker whose lease
/// ran out holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_countdown_waits_for_every_live_worker() {
    let w = TestServer::start_workers(2, FAST).await;
    let (room, host, guest) = shared_room(&w).await;
    let (on_w0, _) = WsClient::joined(&w[0], &host, &room, 0).await;
    let (on_w1, _) = WsClient::joined(&w[1], &guest, &room, 0).await;
    assert_eq!(w[0].expiry(&room).await, None);

    let holders = |room: String| {
        let server = &w[0];
        async move {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            let mut db = confab_schema::connect(&server.state.pool).await.unwrap();
            confab_schema::schema::room_workers::table
                .filter(confab_schema::schema::room_workers::room_id.eq(room))
                .select(confab_schema::schema::room_workers::worker_id)
                .order(confab_schema::schema::room_workers::worker_id)
                .load::<String>(&mut db)
                .await
                .unwrap()
        }
    };
    assert_eq!(holders(room.clone()).await, ["w0", "w1"]);

    on_w0.close().await;
    until("w0 lets go of the room", || async {
        holders(room.clone()).await == ["w1"]
    })
    .await;
    assert_eq!(
        w[0].expiry(&room).await,
        None,
        "w1 still has a device there"
    );

    on_w1.close().await;
    until("the countdown starts", || async {
        w[0].expiry(&room).await.is_some()
    })
    .await;
    assert!(holders(room.clone()).await.is_empty());

    // A worker that had a device there and whose lease runs out: the sweeper starts the
    // countdown then, not before.
    sql(
        &w[0],
        &format!(
            "INSERT INTO workers VALUES ('ghost', 0, 9223372036854775807); \
             INSERT INTO room_workers VALUES ('{room}', 'ghost'); \
             UPDATE rooms SET expires_ts = NULL WHERE room_id = '{room}'"
        ),
    )
    .await;
    until("a worker runs the sweeper", || async {
        w.iter().any(|s| s.state.cluster.leads(Singleton::Sweeper))
    })
    .await;
    let sweeper = w
        .iter()
        .find(|s| s.state.cluster.leads(Singleton::Sweeper))
        .unwrap();
    let sweeps = sweeper.state.metrics.room_sweeps.get();
    until("two sweeps", || async {
        sweeper.state.metrics.room_sweeps.get() > sweeps + 2
    })
    .await;
    assert_eq!(w[0].expiry(&room).await, None, "a live worker holds it");
    sql(
        &w[0],
        "UPDATE workers SET lease_until_ts = 0 WHERE worker_id = 'ghost'",
    )
    .await;
    until("the ghost's hold lapses", || async {
        w[0].expiry(&room).await.is_some()
    })
    .await;
    assert!(holders(room.clone()).await.is_empty());
}
