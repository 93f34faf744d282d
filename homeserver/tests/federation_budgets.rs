//! No federated server can starve another: a hostile origin that answers gap-fill requests
//! slowly while sending many gapped transactions holds at most one transaction and no pooled
//! connection while it is slow, and local clients keep chatting; other servers' users get
//! budgets (chat, presence, signaling), answered `M_LIMIT_EXCEEDED` with `retry_after_ms`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use confab_federation::ids::ServerName;
use confab_federation::keys::build_server_keys_document;
use confab_federation::signing::{KeyId, SigningKey};
use confab_federation::xmatrix::sign_request;
use reqwest::Method;
use serde_json::{Value, json};
use support::{PATIENCE, TestServer, WsClient};
use tokio::sync::{mpsc, watch};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How a hostile origin signs what it sends.
#[derive(Clone)]
struct Signer {
    name: ServerName,
    key: Arc<SigningKey>,
    room_id: String,
}

impl Signer {
    /// A transaction from this origin carrying one event of its room numbered `seq`, signed.
    async fn send(&self, to: &TestServer, txn_id: &str, seq: i64) -> (u16, Value) {
        let body = json!({
            "origin": self.name,
            "origin_server_ts": confab::federation::now_ms(),
            "pdus": [{
                "event_id": format!("$e{seq}"),
                "room_id": self.room_id,
                "type": "confab.event",
                "event": chat_event(&self.name, seq),
            }],
            "edus": [],
        });
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        let auth = sign_request(
            &self.name,
            &to.server_name(),
            "PUT",
            &path,
            Some(&body),
            &self.key,
        )
        .unwrap();
        let res = to
            .http
            .put(format!("{}{path}", to.base))
            .header("Authorization", auth.to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

/// A homeserver that keeps to the protocol only as far as it must to hold a room that another
/// server has a replica of: it publishes a key, answers a join, and answers its events endpoint,
/// but once armed only when the test lets it (a slow, hostile origin), reporting each request.
struct HostileOrigin {
    signer: Signer,
    hold: Arc<AtomicBool>,
    /// `true` lets held answers go.
    release: watch::Sender<bool>,
    /// The `since` of every held events request, as it arrives.
    asked: mpsc::UnboundedReceiver<i64>,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Clone)]
struct Shared {
    name: ServerName,
    document: Value,
    room_id: String,
    hold: Arc<AtomicBool>,
    release: watch::Receiver<bool>,
    asked: mpsc::UnboundedSender<i64>,
}

impl HostileOrigin {
    async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let name = ServerName::parse(&format!("127.0.0.1:{port}")).unwrap();
        let key = SigningKey::generate(KeyId::ed25519("hostile").unwrap()).unwrap();
        let document = build_server_keys_document(
            &name,
            &key,
            &BTreeMap::new(),
            confab::federation::now_ms() + DAY_MS,
        )
        .unwrap();
        let room_id = format!("!hostile:{name}");
        let (release, release_rx) = watch::channel(false);
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let hold = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            name: name.clone(),
            document,
            room_id: room_id.clone(),
            hold: hold.clone(),
            release: release_rx,
            asked: asked_tx,
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .route("/_matrix/key/v2/server", web::get().to(key_document))
                .route(
                    "/_confab/federation/v1/rooms/{room}/join",
                    web::post().to(join),
                )
                .route(
                    "/_confab/federation/v1/rooms/{room}/events",
                    web::get().to(events),
                )
                // Whatever else the other server sends (its own transactions) is accepted.
                .default_service(web::to(|| async { HttpResponse::Ok().json(json!({})) }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            signer: Signer {
                name,
                key: Arc::new(key),
                room_id,
            },
            hold,
            release,
            asked,
            handle,
        }
    }

    /// From now on, events requests are reported and held until released.
    fn arm(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }
}

fn chat_event(origin: &ServerName, seq: i64) -> Value {
    json!({
        "seq": seq,
        "sender": format!("@host:{origin}"),
        "device_id": "HOSTDEVICE",
        "origin_ts": 1,
        "content": {"type": "chat", "kind": "text", "ciphertext": format!("c{seq}")},
    })
}

async fn key_document(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&shared.document)
}

async fn join(shared: web::Data<Shared>, body: web::Json<Value>) -> HttpResponse {
    let user = body["user_id"].as_str().unwrap_or_default().to_owned();
    let host = format!("@host:{}", shared.name);
    let member = |user: &str| {
        json!({"user_id": user, "display_name": "M", "is_host": false, "membership": "joined",
               "joined_ts": 1, "updated_ts": 1})
    };
    HttpResponse::Ok().json(json!({
        "room_id": shared.room_id,
        "host_user_id": host,
        "locked": false,
        "created_ts": 1,
        "latest_seq": 1,
        "members": [member(&host), member(&user)],
        "events": [{
            "seq": 1, "sender": user, "device_id": "", "origin_ts": 1,
            "content": {"type": "member", "user_id": user, "membership": "joined", "display_name": "M"},
        }],
        "connected": [],
    }))
}

#[derive(serde::Deserialize)]
struct Since {
    since: i64,
}

async fn events(shared: web::Data<Shared>, query: web::Query<Since>) -> HttpResponse {
    let since = query.since;
    // Unarmed, the room has its one event; armed, it has as many as anyone asks for.
    let mut newest = 1;
    if shared.hold.load(Ordering::SeqCst) {
        let _ = shared.asked.send(since);
        let mut release = shared.release.clone();
        // The hostile part: the answer comes only when the test lets it.
        let _ = release.wait_for(|go| *go).await;
        newest = since + 99;
    }
    let events: Vec<Value> = (since + 1..=newest)
        .map(|seq| chat_event(&shared.name, seq))
        .collect();
    HttpResponse::Ok().json(json!({"events": events, "latest_seq": newest.max(since)}))
}

/// Connections checked out of the server's pool right now.
fn pool_in_use(server: &TestServer) -> usize {
    let status = server.state.pool.status();
    status.size - status.available
}

/// A server of ours (no idle sweep during the test: nothing but the test's requests uses the
/// pool) where a guest joined the hostile origin's room: we hold a replica at event 1.
async fn replica_of_a_hostile_room() -> (Arc<TestServer>, HostileOrigin, String) {
    let s =
        Arc::new(TestServer::start_federating(&[("CONFAB__ROOMS__SWEEP_INTERVAL", "1h")]).await);
    let hostile = HostileOrigin::start().await;
    let room_id = hostile.signer.room_id.clone();
    let carol = s.guest("Carol").await;
    let (status, body) = s
        .post(&format!("/rooms/{room_id}/join"), &carol.token, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    (s, hostile, room_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_hostile_origin_holds_no_connection_and_local_chat_goes_on() {
    let (s, mut hostile, room_id) = replica_of_a_hostile_room().await;

    // Two local guests in a local room, connected.
    let (room, guests) = s.room_with(1).await;
    let (mut alice, _) = WsClient::joined(&s, &guests[0], &room, 0).await;
    let (mut bob, _) = WsClient::joined(&s, &guests[1], &room, 0).await;

    // 32 transactions at once, each with an event far past the replica's newest: each needs a
    // gap filled from the origin, which holds every answer.
    hostile.arm();
    let mut answers = tokio::task::JoinSet::new();
    for i in 0..32i64 {
        let (s, signer) = (s.clone(), hostile.signer.clone());
        answers.spawn(async move { (i, signer.send(&s, &format!("t{i}"), 10 + i).await) });
    }

    // The origin is asked to fill a gap: one transaction was admitted.
    let since = tokio::time::timeout(PATIENCE, hostile.asked.recv())
        .await
        .expect("no gap-fill request reached the origin")
        .unwrap();
    assert_eq!(since, 1);

    // The other 31 are told to come back, at once.
    for _ in 0..31 {
        let (i, (status, body)) = tokio::time::timeout(PATIENCE, answers.join_next())
            .await
            .expect("31 transactions should be refused while one is being handled")
            .unwrap()
            .unwrap();
        assert_eq!(status, 429, "transaction {i}: {body}");
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
        assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    }

    // Refused before its body is read or its signature checked: one signed with a key that is
    // not the origin's gets the same answer, not `M_UNAUTHORIZED`.
    let forger = Signer {
        key: Arc::new(SigningKey::generate(KeyId::ed25519("hostile").unwrap()).unwrap()),
        ..hostile.signer.clone()
    };
    let (status, body) = forger.send(&s, "forged", 99).await;
    assert_eq!(
        (status, &body["errcode"]),
        (429, &json!("M_LIMIT_EXCEEDED")),
        "{body}"
    );

    // While the origin holds its answer, the admitted transaction holds no connection (and
    // nothing else here uses one).
    assert_eq!(s.state.transactions.gate().busy(), 1);
    assert_eq!(
        pool_in_use(&s),
        0,
        "pooled connections in use while the hostile origin is slow"
    );

    // Local clients chat on without a single refusal.
    for n in 0..50 {
        let ack = alice.chat(&room, &format!("local {n}")).await;
        assert_eq!(ack["type"], "ack", "chat {n} during the attack: {ack}");
        let seen = bob
            .wait_for(|m| m["type"] == "event" && m["content"]["type"] == "chat")
            .await;
        assert_eq!(seen["content"]["ciphertext"], format!("local {n}"));
    }
    assert_eq!(s.state.transactions.gate().busy(), 1);
    assert!(
        hostile.asked.try_recv().is_err(),
        "asked the origin again while waiting"
    );

    // Let the origin answer: the admitted transaction fills its gap and commits.
    hostile.release.send(true).unwrap();
    let (i, (status, body)) = tokio::time::timeout(PATIENCE, answers.join_next())
        .await
        .expect("the admitted transaction should finish once the origin answers")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.state.transactions.gate().busy(), 0);
    let mut db = confab_schema::connect(&s.state.pool).await.unwrap();
    let replica = confab_schema::queries::room(&mut db, &room_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        replica.last_seq,
        10 + i,
        "the gap before event {} is filled",
        10 + i
    );
    hostile.handle.stop(true).await;
}

/// Any request signed by `from` to `to`, answered whatever its status.
async fn signed(
    from: &TestServer,
    to: &TestServer,
    method: Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let answer = from
        .signed_request(&to.server_name(), method, path, Some(&body))
        .await;
    (answer.status, answer.body)
}

/// The value of a counter with labels in Prometheus text, 0 if absent.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Most actions a bucket of `burst` refilled at `per_second` can have allowed over `elapsed`.
fn most_allowed(burst: f64, per_second: f64, elapsed: Duration) -> usize {
    (burst + per_second * elapsed.as_secs_f64()).floor() as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn other_servers_users_get_budgets_answered_with_retry_after() {
    // A: each remote user may send 1 event a second (2 at once), and announce a device every
    // 10 s (1 at once). A2: a remote server may send 1 chat message a second (2 at once).
    let a = TestServer::start_federating(&[
        ("CONFAB__FEDERATION__REMOTE_USER_EVENTS_PER_SECOND", "1"),
        (
            "CONFAB__FEDERATION__REMOTE_SERVER_EVENTS_PER_SECOND",
            "1000",
        ),
    ])
    .await;
    let a2 = TestServer::start_federating(&[(
        "CONFAB__FEDERATION__REMOTE_SERVER_EVENTS_PER_SECOND",
        "1",
    )])
    .await;
    let b = TestServer::start_federating(&[]).await;
    let host = a.guest("Host").await;
    let room = a.room(&host).await;
    let invite = a.invite(&host, &room, json!({})).await;
    let bea = b.guest("Bea").await;
    let (status, body) = b
        .post(
            &format!("/rooms/{room}/join"),
            &bea.token,
            json!({"invite_token": invite["token"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Signaling EDUs over a user's budget are dropped and counted (B has sent A nothing else
    // yet, so this transaction is the only one from B in progress).
    let over = |m: &str| counter(m, "confab_federation_over_budget_total{kind=\"ephemeral\"}");
    let before = over(&a.metrics().await);
    let signal = json!({"edu_type": "confab.signal", "content": {
        "room_id": room,
        "from": {"user_id": bea.user_id, "device_id": bea.device_id},
        "to": {"user_id": host.user_id, "device_id": host.device_id},
        "payload": "sdp",
    }});
    let started = Instant::now();
    let txn = json!({"origin": b.server_name(), "origin_server_ts": confab::federation::now_ms(),
                     "pdus": [], "edus": vec![signal; 10]});
    let (status, body) = signed(&b, &a, Method::PUT, "/_matrix/federation/v1/send/sig1", txn).await;
    assert_eq!(status, 200, "{body}");
    let dropped = over(&a.metrics().await) - before;
    let passed = 10 - dropped as usize;
    assert!(dropped > 0, "no signal was over budget");
    assert!(
        passed <= most_allowed(2.0, 1.0, started.elapsed()),
        "{passed} signals passed"
    );

    // Forwarded chat: each message over the user's budget gets its own refusal, through B to
    // Bea's socket, with when to try again.
    let (mut ws, _) = WsClient::joined(&b, &bea, &room, 0).await;
    let started = Instant::now();
    let mut acked = 0;
    let mut limited = 0;
    for n in 0..5 {
        let reply = ws.chat(&room, &format!("m{n}")).await;
        if reply["type"] == "ack" {
            acked += 1;
        } else {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            assert!(reply["retry_after_ms"].as_u64().unwrap() > 0, "{reply}");
            limited += 1;
        }
    }
    assert!(limited > 0, "no chat was over budget");
    assert!(
        acked <= most_allowed(2.0, 1.0, started.elapsed()),
        "{acked} chats acked"
    );

    // Presence: a device announced over the user's budget is refused, M_LIMIT_EXCEEDED.
    let path = format!("/_confab/federation/v1/rooms/{room}/presence");
    let started = Instant::now();
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..3 {
        let presence = json!({"user_id": bea.user_id, "device_id": format!("D{n}"),
                              "display_name": "Bea", "online": true});
        let (status, body) = signed(&b, &a, Method::POST, &path, presence).await;
        if status == 429 {
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
            assert_eq!(body["code"], "rate_limited", "{body}");
            assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
            refused += 1;
        } else {
            accepted += 1;
        }
    }
    assert!(refused > 0, "no presence was over budget");
    // The socket's own announcement took from the same budget.
    assert!(
        accepted < most_allowed(1.0, 0.1, started.elapsed()) + 1,
        "{accepted} accepted"
    );

    // A server over its budget is refused whole, for the batch as it was.
    let started = Instant::now();
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..6 {
        let item = json!({"events": [{"room_id": format!("!none:{}", a2.server_name()),
            "sender": bea.user_id, "device_id": bea.device_id, "kind": "text",
            "ciphertext": format!("x{n}")}]});
        let (status, body) = signed(
            &b,
            &a2,
            Method::POST,
            "/_confab/federation/v1/send_chat",
            item,
        )
        .await;
        if status == 429 {
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
            assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
            refused += 1;
        } else {
            assert_eq!(status, 200, "{body}");
            accepted += 1;
        }
    }
    assert!(refused > 0, "no batch was over the server's budget");
    assert!(
        accepted <= most_allowed(2.0, 1.0, started.elapsed()),
        "{accepted} accepted"
    );
}

/// A copy of a transaction being handled is recognised by its id as the handler reads it,
/// percent-decoded: a sender whose ids need encoding, retrying while the first is held, waits
/// for that answer rather than being refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_percent_encoded_transaction_waits_for_the_first() {
    let (s, mut hostile, _) = replica_of_a_hostile_room().await;

    // The first is admitted and held: its gap fill waits on the origin.
    hostile.arm();
    let (s1, signer) = (s.clone(), hostile.signer.clone());
    let mut first = tokio::spawn(async move { signer.send(&s1, "t%7E1", 10).await });
    tokio::select! {
        asked = hostile.asked.recv() => assert_eq!(asked, Some(1)),
        answered = &mut first => panic!("the first was answered at once: {answered:?}"),
    }

    // Its copy, sent the same way, waits for it (refused at once before the fix).
    let (s2, signer) = (s.clone(), hostile.signer.clone());
    let mut copy = tokio::spawn(async move { signer.send(&s2, "t%7E1", 10).await });
    let gate = s.state.transactions.gate();
    tokio::time::timeout(PATIENCE, async {
        while gate.copies_waiting() == 0 {
            tokio::select! {
                answered = &mut copy => panic!("the copy was answered at once: {answered:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await
    .expect("the copy never reached the gate");

    hostile.release.send(true).unwrap();
    let (status, body) = tokio::time::timeout(PATIENCE, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = tokio::time::timeout(PATIENCE, copy).await.unwrap().unwrap();
    assert_eq!(status, 200, "the copy gets the first's answer: {body}");
    assert_eq!(gate.copies_waiting(), 0);
    hostile.handle.stop(true).await;
}
