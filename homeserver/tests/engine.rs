//! The room engine's races, each forced into a given interleaving against a real server and
//! Postgres by driving the engine and the event writer directly (no sockets, no sleeps): what the
//! room's owner, the writer's queue and the idle countdown decide must be what some serial order
//! of the same requests gives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use confab::engine::idle::{Countdown, IdleWriter};
use confab::engine::{ChatReply, ConnHandle, Identity};
use confab::error::ErrorCode;
use confab_federation::ids::RoomId;
use support::{Guest, TestServer};

fn identity(g: &Guest) -> Identity {
    Identity {
        user_id: g.user_id.clone(),
        device_id: g.device_id.clone(),
        display_name: "someone".into(),
    }
}

async fn expiry(server: &TestServer, room: &str) -> Option<i64> {
    server.expiry(room).await
}

/// A kick and the kicked user's subscribe, in both orders: the kicked device ends up not
/// subscribed, told `kicked`, and its chat refused, whichever came first.
#[tokio::test(flavor = "multi_thread")]
async fn a_kick_and_a_subscribe_end_with_the_kicked_device_out_in_either_order() {
    let server = TestServer::start().await;
    for kick_first in [false, true] {
        let (room, guests) = server.room_with(2).await;
        let room_id = RoomId::parse(&room).unwrap();
        let (host, stays, kicked) = (&guests[0], identity(&guests[1]), identity(&guests[2]));
        let engine = &server.state.engine;
        // Someone is live already, so the room's owner is loaded and decides at once.
        let (stay_conn, _stay_rx, _) = ConnHandle::new(engine.next_conn_id(), 64);
        engine
            .subscribe(&room_id, &stays, &stay_conn, 0)
            .await
            .unwrap();
        let (conn, mut rx, _) = ConnHandle::new(engine.next_conn_id(), 64);
        let host = identity(host);
        let kick = server.state.rooms.kick_as(&room, &host, &kicked.user_id);
        let subscribe = engine.subscribe(&room_id, &kicked, &conn, 0);
        // `join!` polls in order: the first named is queued (or decided) first.
        let (kicked_ok, subscribed) = if kick_first {
            tokio::join!(kick, subscribe)
        } else {
            let (s, k) = tokio::join!(subscribe, kick);
            (k, s)
        };
        kicked_ok.unwrap();
        match subscribed {
            // Admitted before the kick reached the owner: then taken out by it, and told.
            Ok(_) => {
                let frames: Vec<String> = std::iter::from_fn(|| rx.try_next())
                    .map(|f| f.to_string())
                    .collect();
                assert!(
                    frames.iter().any(|f| f.contains(r#""type":"kicked""#)),
                    "kick_first={kick_first}: {frames:?}"
                );
            }
            Err(err) => assert_eq!(err.code, ErrorCode::NotMember, "kick_first={kick_first}"),
        }
        let connected = engine.connected_devices(&room);
        assert!(
            !connected.iter().any(|d| d.user_id == kicked.user_id),
            "kick_first={kick_first}: {connected:?}"
        );
        assert!(connected.iter().any(|d| d.user_id == stays.user_id));
        let live = engine.room(&room).unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        engine
            .chat(
                &live,
                &kicked,
                conn.id,
                ("text", "x"),
                None,
                ChatReply::Caller(reply),
            )
            .await;
        let answer = answer.await.unwrap();
        assert_eq!(answer.err().map(|e| e.code), Some(ErrorCode::NotSubscribed));
        // A second subscribe is refused by the owner's own membership, without the database.
        let (again, _rx, _) = ConnHandle::new(engine.next_conn_id(), 64);
        let err = engine
            .subscribe(&room_id, &kicked, &again, 0)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotMember);
    }
}

/// A lock and a newcomer's join, queued together: they take effect in queue order, as the
/// writer runs every change of a room one after another.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_and_a_join_take_effect_in_the_order_they_were_queued() {
    let server = TestServer::start().await;
    for lock_first in [true, false] {
        let host = server.guest("Host").await;
        let room = server.room(&host).await;
        let room_id = RoomId::parse(&room).unwrap();
        let newcomer = server.guest("New").await;
        let invite = server.invite(&host, &room, serde_json::json!({})).await;
        let token = invite["token"].as_str().unwrap().to_owned();
        let (rooms, host_id, who) = (&server.state.rooms, identity(&host), identity(&newcomer));
        let lock = rooms.set_locked_as(&room, &host_id, true);
        let join = rooms.join_core(&room_id, &who, Some(&token), None);
        let (locked, joined) = if lock_first {
            tokio::join!(lock, join)
        } else {
            let (j, l) = tokio::join!(join, lock);
            (l, j)
        };
        assert!(locked.unwrap().locked);
        if lock_first {
            assert_eq!(joined.unwrap_err().code, ErrorCode::RoomLocked);
        } else {
            joined.unwrap();
            // Joined before the lock: an earlier member, so the room's owner admits them.
            assert!(
                server
                    .state
                    .engine
                    .is_member(&room, &who.user_id)
                    .await
                    .unwrap()
            );
        }
    }
}

/// The last one leaving and someone arriving at once: the countdown decided on a state that
/// is already stale when it is written must not be what stays. Forced: the first write reads
/// "idle" and is held there until the room is no longer idle and the second write is on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_countdown_ends_as_the_latest_state_says_whatever_order_the_writes_land_in() {
    let server = TestServer::start().await;
    let host = server.guest("Host").await;
    let room = server.room(&host).await;
    let countdown = Countdown::new(
        std::time::Duration::from_secs(1800),
        server.state.cluster.worker_id(),
    );
    let pool = server.state.pool.clone();
    // The room as its owner sees it: idle, then someone arrives.
    let idle = Arc::new(AtomicBool::new(false));
    let writer = Arc::new(IdleWriter::new());
    // Nothing known written, so that both syncs write.
    writer.forget().await;
    idle.store(true, Ordering::SeqCst);
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let first = {
        let (writer, pool, room, idle) = (writer.clone(), pool.clone(), room.clone(), idle.clone());
        let countdown = countdown.clone();
        tokio::spawn(async move {
            let go_rx = std::sync::Mutex::new(go_rx);
            writer
                .sync(&countdown, &pool, &room, || {
                    let seen = idle.load(Ordering::SeqCst);
                    // Held here, having decided, until the state has moved on.
                    read_tx.send(()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                    Some(seen)
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || read_rx.recv().unwrap())
        .await
        .unwrap();
    idle.store(false, Ordering::SeqCst);
    let second = {
        let (writer, pool, room, idle) = (writer.clone(), pool.clone(), room.clone(), idle.clone());
        tokio::spawn(async move {
            writer
                .sync(&countdown, &pool, &room, || {
                    Some(idle.load(Ordering::SeqCst))
                })
                .await
        })
    };
    go_tx.send(()).unwrap();
    assert!(first.await.unwrap().unwrap());
    assert!(second.await.unwrap().unwrap());
    assert_eq!(
        expiry(&server, &room).await,
        None,
        "someone is connected: no countdown"
    );
}
