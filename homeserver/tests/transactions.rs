//! Federation transactions between real servers on 127.0.0.1: persistent events delivered once
//! and in order, across a destination that is down and a sender that restarts; ephemeral ones
//! best-effort; replayed and oversized transactions; denied destinations never sent to.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;

use confab::federation::inbox::Inbound;
use confab::federation::sender::{SenderError, SenderStats};
use confab_federation::ids::ServerName;
use confab_federation::policy::PolicyError;
use confab_federation::transaction::{Edu, Pdu};
use confab_federation::xmatrix::sign_request;
use confab_schema::models::NewOutboundPdu;
use confab_schema::queries;
use serde_json::{Value, json};
use support::{PATIENCE, StoppedServer, TestServer};
use tokio::sync::broadcast::error::TryRecvError;

/// Retries come quickly in tests, so a destination coming back is noticed at once.
const FAST_RETRY: [(&str, &str); 2] = [
    ("CONFAB__FEDERATION__RETRY_BASE", "20ms"),
    ("CONFAB__FEDERATION__RETRY_CAP", "200ms"),
];

fn pdu(n: usize) -> Pdu {
    serde_json::from_value(json!({
        "event_id": format!("$event{n}"),
        "room_id": "!room:a.example",
        "type": "confab.chat",
        "content": {"ciphertext": format!("c{n}")},
    }))
    .unwrap()
}

/// The next item B's inbox received, failing after [`PATIENCE`].
async fn next_inbound(server: &TestServer) -> Inbound {
    let mut inbox = server.inbox.lock().await;
    tokio::time::timeout(PATIENCE, inbox.recv())
        .await
        .expect("nothing arrived in the inbox in time")
        .unwrap()
}

/// The next `n` PDUs the inbox received (EDUs are skipped), with their origin.
async fn next_pdus(server: &TestServer, n: usize) -> Vec<(ServerName, Pdu)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if let Inbound::Pdu { origin, pdu } = next_inbound(server).await {
            out.push((origin, pdu));
        }
    }
    out
}

fn assert_inbox_empty(server: &TestServer) {
    let mut inbox = server.inbox.try_lock().unwrap();
    assert!(
        matches!(inbox.try_recv(), Err(TryRecvError::Empty)),
        "the inbox received more"
    );
}

/// Polls `check` until it holds, failing after [`PATIENCE`]: waiting on real state.
async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn queued(server: &TestServer, destination: &ServerName) -> i64 {
    let mut conn = confab_schema::connect(&server.state.pool).await.unwrap();
    queries::count_outbound(&mut conn, destination.as_str())
        .await
        .unwrap()
}

fn assert_in_order(pdus: &[(ServerName, Pdu)], origin: &ServerName, from: usize) {
    for (i, (o, pdu)) in pdus.iter().enumerate() {
        assert_eq!(o, origin);
        assert_eq!(pdu.event_id, format!("$event{}", from + i));
        assert_eq!(pdu.rest["content"]["ciphertext"], format!("c{}", from + i));
    }
    assert!(
        pdus.windows(2).all(|w| w[0].1.order < w[1].1.order),
        "orders must increase"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_events_arrive_once_in_order_in_batches() {
    let a = TestServer::start_federating(&FAST_RETRY).await;
    let b = TestServer::start_federating(&FAST_RETRY).await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let sender = &a.state.federation_sender;

    for n in 0..120 {
        sender.enqueue_persistent(&b_name, pdu(n)).await.unwrap();
    }
    sender.send_ephemeral(
        &b_name,
        Edu {
            edu_type: "m.typing".into(),
            content: json!({"typing": true}),
        },
    );
    let pdus = next_pdus(&b, 120).await;
    assert_in_order(&pdus, &a_name, 0);

    wait_until("A's queue is empty", async || {
        queued(&a, &b_name).await == 0
    })
    .await;
    // The sender dequeues, records the success and only then counts: wait for the counters.
    wait_until("all 120 PDUs and the EDU are counted as sent", async || {
        let stats = sender.stats();
        SenderStats::get(&stats.pdus_sent) >= 120 && SenderStats::get(&stats.edus_sent) >= 1
    })
    .await;
    let stats = sender.stats();
    assert_eq!(SenderStats::get(&stats.pdus_sent), 120);
    assert_eq!(SenderStats::get(&stats.edus_sent), 1);
    // At most 50 PDUs per transaction: at least three transactions.
    assert!(SenderStats::get(&stats.transactions_sent) >= 3);
    assert_eq!(SenderStats::get(&stats.transactions_failed), 0);
    // Whatever else arrived is the EDU, once.
    let mut inbox = b.inbox.try_lock().unwrap();
    let mut edus = 0;
    loop {
        match inbox.try_recv() {
            Ok(Inbound::Edu { origin, edu }) => {
                assert_eq!(
                    (origin, edu.edu_type.as_str()),
                    (a_name.clone(), "m.typing")
                );
                edus += 1;
            }
            Ok(other) => panic!("delivered twice: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(edus <= 1);

    // Only rows the destination acknowledged are deleted, and the destination is healthy.
    let mut conn = confab_schema::connect(&a.state.pool).await.unwrap();
    let state = queries::destination_state(&mut conn, b_name.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.failures, 0);
    assert!(state.last_success_ts.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_is_down_gets_everything_once_when_it_comes_back() {
    let a = TestServer::start_federating(&FAST_RETRY).await;
    let b = TestServer::start_federating(&FAST_RETRY)
        .await
        .stop_keeping()
        .await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let sender = &a.state.federation_sender;

    for n in 0..70 {
        sender.enqueue_persistent(&b_name, pdu(n)).await.unwrap();
    }
    wait_until("A failed to reach B twice", async || {
        SenderStats::get(&sender.stats().transactions_failed) >= 2
    })
    .await;
    assert_eq!(queued(&a, &b_name).await, 70);
    // Ephemeral events to a destination that is backing off are dropped, and counted.
    let dropped = SenderStats::get(&sender.stats().edus_dropped);
    for _ in 0..3 {
        sender.send_ephemeral(
            &b_name,
            Edu {
                edu_type: "m.typing".into(),
                content: json!({}),
            },
        );
    }
    wait_until("the EDUs are dropped", async || {
        SenderStats::get(&sender.stats().edus_dropped) >= dropped + 3
    })
    .await;
    {
        let mut conn = confab_schema::connect(&a.state.pool).await.unwrap();
        let state = queries::destination_state(&mut conn, b_name.as_str())
            .await
            .unwrap()
            .unwrap();
        assert!(state.failures >= 2, "{state:?}");
        assert!(state.retry_after_ts.is_some());
    }

    let b = b.start().await;
    let pdus = next_pdus(&b, 70).await;
    assert_in_order(&pdus, &a_name, 0);
    wait_until("A's queue is empty", async || {
        queued(&a, &b_name).await == 0
    })
    .await;
    // Counted just after the rows are deleted.
    wait_until("the 70 PDUs are counted as sent", async || {
        SenderStats::get(&sender.stats().pdus_sent) >= 70
    })
    .await;
    assert_eq!(SenderStats::get(&sender.stats().pdus_sent), 70);
    let mut inbox = b.inbox.try_lock().unwrap();
    while let Ok(item) = inbox.try_recv() {
        assert!(
            matches!(item, Inbound::Edu { .. }),
            "delivered twice: {item:?}"
        );
    }
}

/// A server A with `n` PDUs queued for a server B that is down, after A tried to send them.
async fn queued_for_a_peer_that_is_down(n: usize) -> (TestServer, StoppedServer) {
    let a = TestServer::start_federating(&FAST_RETRY).await;
    let b = TestServer::start_federating(&FAST_RETRY)
        .await
        .stop_keeping()
        .await;
    let b_name = b.server_name();
    for i in 0..n {
        a.state
            .federation_sender
            .enqueue_persistent(&b_name, pdu(i))
            .await
            .unwrap();
    }
    wait_until("A tried to reach B", async || {
        SenderStats::get(&a.state.federation_sender.stats().transactions_failed) >= 1
    })
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_sender_resumes_from_postgres() {
    // Queued while B is down; A tries (so the first rows get their transaction id) and stops.
    let (a, b) = queued_for_a_peer_that_is_down(60).await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let a = a.restart().await;
    assert_eq!(queued(&a, &b_name).await, 60);

    // The new sender resumes by itself: nothing is enqueued or woken after the restart.
    let b = b.start().await;
    let first = next_pdus(&b, 30).await;
    assert_in_order(&first, &a_name, 0);

    // Restarted again in the middle of delivery, with more queued meanwhile.
    let a = a.restart().await;
    for n in 60..90 {
        a.state
            .federation_sender
            .enqueue_persistent(&b_name, pdu(n))
            .await
            .unwrap();
    }
    let rest = next_pdus(&b, 60).await;
    assert_in_order(&rest, &a_name, 30);
    wait_until("A's queue is empty", async || {
        queued(&a, &b_name).await == 0
    })
    .await;
    assert_inbox_empty(&b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_resent_after_a_restart_carries_all_its_rows() {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    let (a, b) = queued_for_a_peer_that_is_down(10).await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let a = a.stop_keeping().await;
    // One transaction formed of all ten rows, as if the chat behind $event4 had committed after
    // it was formed: a row with a lower number than some of the transaction's, in none.
    let mut db = AsyncPgConnection::establish(&a.db.url).await.unwrap();
    let tied = diesel::sql_query(
        "UPDATE federation_outbound SET txn_id = CASE WHEN pdu->>'event_id' = $1 THEN NULL \
         ELSE 'formedbeforerestart' END",
    )
    .bind::<Text, _>("$event4")
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(tied, 10);
    drop(db);

    let (a, b) = (a.start().await, b.start().await);
    let mut ids: Vec<String> = next_pdus(&b, 10)
        .await
        .into_iter()
        .map(|(origin, pdu)| {
            assert_eq!(origin, a_name);
            pdu.event_id
        })
        .collect();
    ids.sort_by_key(|id| id[6..].parse::<usize>().unwrap());
    assert_eq!(
        ids,
        (0..10).map(|n| format!("$event{n}")).collect::<Vec<_>>()
    );
    wait_until("A's queue is empty", async || {
        queued(&a, &b_name).await == 0
    })
    .await;
    assert_inbox_empty(&b);
}

/// Sends `PUT /_matrix/federation/v1/send/{txn_id}` to `to`, signed by hand with `from`'s key.
async fn put_transaction(
    from: &TestServer,
    to: &TestServer,
    txn_id: &str,
    body: &Value,
) -> (u16, Value) {
    let path = format!("/_matrix/federation/v1/send/{txn_id}");
    let auth = sign_request(
        &from.server_name(),
        &to.server_name(),
        "PUT",
        &path,
        Some(body),
        &from.state.federation.identity.key,
    )
    .unwrap();
    let res = to
        .http
        .put(format!("{}{path}", to.base))
        .header("Authorization", auth.to_string())
        .json(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn body(origin: &ServerName, pdus: std::ops::Range<usize>, edus: usize) -> Value {
    json!({
        "origin": origin,
        "origin_server_ts": 1,
        "pdus": pdus.map(pdu).collect::<Vec<_>>(),
        "edus": (0..edus).map(|n| json!({"edu_type": "m.typing", "content": {"n": n}})).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_transaction_is_acknowledged_and_not_delivered_twice() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    let a_name = a.server_name();

    let first = body(&a_name, 0..2, 1);
    let (status, answer) = put_transaction(&a, &b, "txn1", &first).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"pdus": {"$event0": {}, "$event1": {}}}));
    assert_eq!(next_pdus(&b, 2).await.len(), 2);
    assert!(matches!(next_inbound(&b).await, Inbound::Edu { .. }));

    // The same id again, even with other content: the first answer, nothing delivered.
    let (status, again) = put_transaction(&a, &b, "txn1", &first).await;
    assert_eq!((status, &again), (200, &answer));
    let (status, again) = put_transaction(&a, &b, "txn1", &body(&a_name, 5..6, 0)).await;
    assert_eq!((status, &again), (200, &answer));

    // Two copies at once are handled once.
    let twins = body(&a_name, 2..3, 0);
    let (one, two) = tokio::join!(
        put_transaction(&a, &b, "txn2", &twins),
        put_transaction(&a, &b, "txn2", &twins)
    );
    assert_eq!((one.0, two.0), (200, 200));
    assert_eq!(one.1, two.1);

    // The next thing in the inbox is txn2's one PDU, then txn3's: nothing was delivered twice.
    let (status, _) = put_transaction(&a, &b, "txn3", &body(&a_name, 3..4, 0)).await;
    assert_eq!(status, 200);
    let next = next_pdus(&b, 2).await;
    assert_eq!(next[0].1.event_id, "$event2");
    assert_eq!(next[1].1.event_id, "$event3");
    assert_inbox_empty(&b);

    // The same id from another origin is another transaction.
    let c = TestServer::start_federating(&[]).await;
    let (status, _) = put_transaction(&c, &b, "txn1", &body(&c.server_name(), 7..8, 0)).await;
    assert_eq!(status, 200);
    let (origin, pdu) = next_pdus(&b, 1).await.remove(0);
    assert_eq!(
        (origin, pdu.event_id.as_str()),
        (c.server_name(), "$event7")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_over_the_limits_or_malformed_are_refused() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    let a_name = a.server_name();
    let errcode = |v: &Value| v["errcode"].as_str().unwrap_or_default().to_owned();

    let (status, answer) = put_transaction(&a, &b, "big1", &body(&a_name, 0..51, 0)).await;
    assert_eq!(
        (status, errcode(&answer).as_str()),
        (413, "M_TOO_LARGE"),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("at most 50 PDUs")
    );
    let (status, answer) = put_transaction(&a, &b, "big2", &body(&a_name, 0..0, 101)).await;
    assert_eq!(
        (status, errcode(&answer).as_str()),
        (413, "M_TOO_LARGE"),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("at most 100 EDUs")
    );

    let (status, answer) = put_transaction(&a, &b, "bad", &json!({"pdus": "no"})).await;
    assert_eq!(
        (status, errcode(&answer).as_str()),
        (400, "M_BAD_JSON"),
        "{answer}"
    );
    let other = ServerName::parse("elsewhere.example").unwrap();
    let (status, answer) = put_transaction(&a, &b, "spoof", &body(&other, 0..1, 0)).await;
    assert_eq!(
        (status, errcode(&answer).as_str()),
        (403, "M_FORBIDDEN"),
        "{answer}"
    );

    // A refused transaction is not recorded: the same id with an acceptable body is handled.
    let (status, answer) = put_transaction(&a, &b, "big1", &body(&a_name, 0..50, 100)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(next_pdus(&b, 50).await.len(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_destination_is_never_sent_to() {
    let b = TestServer::start_federating(&[]).await;
    let b_name = b.server_name();
    let mut env = FAST_RETRY.to_vec();
    env.push(("CONFAB__FEDERATION__DENIED_SERVERS", b_name.as_str()));
    let a = TestServer::start_federating(&env).await;
    let sender = &a.state.federation_sender;

    let err = sender
        .enqueue_persistent(&b_name, pdu(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SenderError::Denied(PolicyError::Denied(_))),
        "{err}"
    );
    sender.send_ephemeral(
        &b_name,
        Edu {
            edu_type: "m.typing".into(),
            content: json!({}),
        },
    );
    assert_eq!(SenderStats::get(&sender.stats().edus_dropped), 1);
    assert_eq!(queued(&a, &b_name).await, 0);
    let own = sender
        .enqueue_persistent(&a.server_name(), pdu(0))
        .await
        .unwrap_err();
    assert!(matches!(own, SenderError::OwnServer(_)), "{own}");

    // Rows queued before the deny list named B (written straight to the table here) are
    // dropped by the worker instead of sent.
    {
        let mut conn = confab_schema::connect(&a.state.pool).await.unwrap();
        let row = NewOutboundPdu {
            destination: b_name.to_string(),
            pdu: serde_json::to_value(pdu(1)).unwrap(),
            created_ts: 0,
        };
        queries::enqueue_outbound(&mut conn, &[row]).await.unwrap();
    }
    sender.wake(&b_name).await;
    wait_until("the rows for B are dropped", async || {
        queued(&a, &b_name).await == 0
    })
    .await;
    assert_eq!(SenderStats::get(&sender.stats().transactions_sent), 0);
    assert_inbox_empty(&b);
}
