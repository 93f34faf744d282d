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

/// Statements of the workers' database waiting for a row lock.
async fn lock_waiters(server: &TestServer) -> i64 {
    server
        .count(
            "SELECT count(*) AS n FROM pg_locks WHERE NOT granted \
             AND locktype IN ('tuple', 'transactionid')",
        )
        .await
}

fn signal(room: &str, to: &Guest, payload: &str) -> Value {
    json!({"type": "signal", "room_id": room,
           "to": {"user_id": to.user_id, "device_id": to.device_id}, "payload": payload})
}

/// Presence, typing and signals between devices on different workers: told over the bus, a
/// signal only to the worker its device is on, one too large for a notification through the
/// spill table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_typing_and_signals_reach_a_device_on_another_worker() {
    let w = TestServer::start_workers(2, FAST).await;
    let (room, host, guest) = shared_room(&w).await;
    let (mut on_w0, _) = WsClient::joined(&w[0], &host, &room, 0).await;
    let (mut on_w1, ack) = WsClient::joined(&w[1], &guest, &room, 0).await;
    // The newcomer on w1 is told who is connected through w0, and w0's device that it came.
    let connected = ack["result"]["connected"].as_array().unwrap();
    assert!(
        connected.iter().any(|d| d["user_id"] == host.user_id),
        "{ack}"
    );
    let online = on_w0
        .wait_for(|m| m["type"] == "presence" && m["user_id"] == guest.user_id)
        .await;
    assert_eq!(online["online"], true, "{online}");
    assert_eq!(w[0].state.engine.connected_users(&room), 2);

    let reply = on_w0
        .request(json!({"type": "typing", "room_id": room, "typing": true}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let typing = on_w1.wait_for(|m| m["type"] == "typing").await;
    assert_eq!(typing["user_id"], host.user_id, "{typing}");
    assert_eq!(typing["typing"], true);

    let reply = on_w0.request(signal(&room, &guest, "offer from w0")).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let got = on_w1.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"], "offer from w0");
    assert_eq!(got["from"]["device_id"], host.device_id);
    // 16,000 bytes: more than a notification holds.
    let large = "s".repeat(16_000);
    let reply = on_w1.request(signal(&room, &host, &large)).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let got = on_w0.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"].as_str().map(str::len), Some(16_000));
    assert_eq!(got["from"]["user_id"], guest.user_id);
    assert_eq!(
        w[0].count("SELECT count(*) AS n FROM bus_spill").await,
        0,
        "a spilled payload is read once and deleted"
    );

    on_w1.close().await;
    let offline = on_w0
        .wait_for(|m| m["type"] == "presence" && m["user_id"] == guest.user_id)
        .await;
    assert_eq!(offline["online"], false, "{offline}");
}

/// The same device opens a socket on another worker: the old socket is told it was replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_moves_to_another_worker_replaces_its_old_socket() {
    let w = TestServer::start_workers(2, FAST).await;
    let (room, host, guest) = shared_room(&w).await;
    let (_host_on_w0, _) = WsClient::joined(&w[0], &host, &room, 0).await;
    let (mut old, _) = WsClient::joined(&w[0], &guest, &room, 0).await;
    let (mut new, _) = WsClient::joined(&w[1], &guest, &room, 0).await;
    old.wait_for(|m| m["type"] == "replaced").await;
    let refused = old.chat(&room, "from the old socket").await;
    assert_eq!(refused["code"], "not_subscribed", "{refused}");
    let ack = new.chat(&room, "from the new socket").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // One place, held by the new socket's worker.
    let held = w[0]
        .count(&format!(
            "SELECT count(*) AS n FROM room_devices WHERE room_id = '{room}' \
             AND user_id = '{}' AND worker_id = 'w1'",
            guest.user_id
        ))
        .await;
    assert_eq!(held, 1);
}

/// Capacity is counted across workers under the room's row lock: two devices on two workers
/// asking for the last place at once (both made to wait on the lock, then let go together) get
/// one place between them; a worker whose lease ran out holds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_place_goes_to_one_device_whichever_workers_ask() {
    let env = [FAST, &[("CONFAB__ROOMS__MAX_PARTICIPANTS", "2")]].concat();
    let w = TestServer::start_workers(2, &env).await;
    let host = w[0].guest("Host").await;
    let room = w[0].room(&host).await;
    let invite = w[0].invite(&host, &room, json!({ "max_uses": 10 })).await;
    let (a, b, c) = (
        w[0].guest("A").await,
        w[1].guest("B").await,
        w[1].guest("C").await,
    );
    for (server, guest) in [(&w[0], &a), (&w[1], &b), (&w[1], &c)] {
        server.join(guest, &room, &invite).await;
    }
    let (_host_on_w0, _) = WsClient::joined(&w[0], &host, &room, 0).await;
    let mut on_w0 = WsClient::authed(&w[0], &a).await;
    let mut on_w1 = WsClient::authed(&w[1], &b).await;

    use diesel_async::SimpleAsyncConnection;
    let mut lock = confab_schema::connect(&w[0].state.pool).await.unwrap();
    lock.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM rooms WHERE room_id = '{room}' FOR UPDATE"
    ))
    .await
    .unwrap();
    let subscribe = json!({"type": "subscribe", "id": 1, "room_id": room, "since": 0});
    on_w0.send(subscribe.clone()).await;
    on_w1.send(subscribe).await;
    until("both wait for the room's row lock", || async {
        lock_waiters(&w[0]).await == 2
    })
    .await;
    lock.batch_execute("COMMIT").await.unwrap();
    let answers = [
        on_w0.wait_for(|m| m["id"] == 1).await,
        on_w1.wait_for(|m| m["id"] == 1).await,
    ];
    let admitted = answers.iter().filter(|m| m["type"] == "ack").count();
    let full: Vec<_> = answers
        .iter()
        .filter(|m| m["code"] == "room_full")
        .collect();
    assert_eq!((admitted, full.len()), (1, 1), "{answers:?}");

    // The room is full on both workers now.
    let (late_server, late) = (&w[1], &c);
    let mut on_late = WsClient::authed(late_server, late).await;
    let reply = on_late
        .request(json!({"type": "subscribe", "room_id": room, "since": 0}))
        .await;
    assert_eq!(reply["code"], "room_full", "{reply}");

    // Whoever got the place is on a worker that dies: once its lease has run out, it holds
    // none (here the worker's row is made to look dead; the real socket stays, told nothing).
    let winner_worker = if answers[0]["type"] == "ack" {
        "w0"
    } else {
        "w1"
    };
    sql(
        &w[0],
        &format!(
            "INSERT INTO workers VALUES ('ghost', 0, 0); \
             UPDATE room_devices SET worker_id = 'ghost' WHERE room_id = '{room}' \
             AND worker_id = '{winner_worker}' AND user_id <> '{}'",
            host.user_id
        ),
    )
    .await;
    let reply = on_late
        .request(json!({"type": "subscribe", "room_id": room, "since": 0}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
}

/// Connections per user and per client address are counted across workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold_across_workers() {
    let env = [
        FAST,
        &[
            ("CONFAB__LIMITS__MAX_CONNECTIONS_PER_USER", "2"),
            ("CONFAB__LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "3"),
        ],
    ]
    .concat();
    let w = TestServer::start_workers(2, &env).await;
    let a = w[0].guest("A").await;
    let first = WsClient::authed(&w[0], &a).await;
    let _second = WsClient::authed(&w[1], &a).await;
    let mut third = WsClient::connect(&w[1]).await;
    let reply = third
        .request(json!({"type": "auth", "token": a.token}))
        .await;
    assert_eq!(reply["code"], "too_many_connections", "{reply}");
    // One closes on w0; its place is given back, and w1 admits another.
    first.close().await;
    let user = a.user_id.clone();
    until("w0 gives the place back", || async {
        w[0].count(&format!(
            "SELECT count(*) AS n FROM worker_connections WHERE user_id = '{user}'"
        ))
        .await
            == 1
    })
    .await;
    let _third = WsClient::authed(&w[1], &a).await;

    // Two of A's on w1 and one of B's on w0 fill the address (all come from 127.0.0.1).
    let b = w[0].guest("B").await;
    let _b = WsClient::authed(&w[0], &b).await;
    let c = w[1].guest("C").await;
    let mut refused = WsClient::connect(&w[0]).await;
    let reply = refused
        .request(json!({"type": "auth", "token": c.token}))
        .await;
    assert_eq!(reply["code"], "too_many_connections", "{reply}");
    assert!(
        reply["reason"].as_str().unwrap().contains("address"),
        "{reply}"
    );
}

/// One inbound federation transaction per origin across workers: a second worker is refused
/// while another handles one, and takes over when the first one's lease ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_inbound_transaction_per_origin_across_workers() {
    use confab_schema::cluster::{claim_origin, release_origin};
    let w = TestServer::start_workers(2, FAST).await;
    let mut db = confab_schema::connect(&w[0].state.pool).await.unwrap();
    let origin = "other.example";
    assert!(claim_origin(&mut db, origin, "w0", "t1").await.unwrap());
    assert!(!claim_origin(&mut db, origin, "w1", "t2").await.unwrap());
    // Another origin is not held up.
    assert!(
        claim_origin(&mut db, "third.example", "w1", "t9")
            .await
            .unwrap()
    );
    release_origin(&mut db, origin, "w0", "t1").await.unwrap();
    assert!(claim_origin(&mut db, origin, "w1", "t2").await.unwrap());
    // w1 "dies": its lease is over, so its mark no longer holds anyone up.
    assert!(!claim_origin(&mut db, origin, "w0", "t3").await.unwrap());
    sql(
        &w[0],
        "INSERT INTO workers VALUES ('ghost', 0, 0); \
         UPDATE inbound_transactions SET worker_id = 'ghost' WHERE worker_id = 'w1'",
    )
    .await;
    assert!(claim_origin(&mut db, origin, "w0", "t3").await.unwrap());
}

/// A room whose row another transaction holds (another worker's batch) is left out of a
/// worker's batch and committed right after, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_for_a_room_another_transaction_holds_is_committed_once_it_is_let_go() {
    let w = TestServer::start_workers(2, FAST).await;
    let (room, host, guest) = shared_room(&w).await;
    let (mut on_w0, _) = WsClient::joined(&w[0], &host, &room, 0).await;
    let (mut on_w1, _) = WsClient::joined(&w[1], &guest, &room, 0).await;
    let before = on_w0.chat(&room, "before").await["result"]["seq"]
        .as_i64()
        .unwrap();

    use diesel_async::SimpleAsyncConnection;
    let mut lock = confab_schema::connect(&w[0].state.pool).await.unwrap();
    lock.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM rooms WHERE room_id = '{room}' FOR UPDATE"
    ))
    .await
    .unwrap();
    on_w0
        .send(
            json!({"type": "chat", "id": 7, "room_id": room, "kind": "text",
                     "ciphertext": "while held", "txn_id": "held-1"}),
        )
        .await;
    // The writer skipped the held row, then waits for it: one statement waiting on the lock.
    until("the writer waits for the room's row", || async {
        lock_waiters(&w[0]).await == 1
    })
    .await;
    lock.batch_execute("COMMIT").await.unwrap();
    let ack = on_w0.wait_for(|m| m["id"] == 7).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["seq"].as_i64(), Some(before + 1));
    let got = on_w1
        .wait_for(|m| is_chat(m) && m["content"]["ciphertext"] == "while held")
        .await;
    assert_eq!(got["seq"].as_i64(), Some(before + 1));
    // Once: the next event follows it directly.
    let next = on_w1.chat(&room, "after").await;
    assert_eq!(next["result"]["seq"].as_i64(), Some(before + 2));
}
