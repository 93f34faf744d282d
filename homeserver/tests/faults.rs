//! Faults, with real processes and real Postgres: a client that stops reading, a federation
//! peer that never comes back, Postgres restarted under traffic, a statement stuck behind a lock
//! held by another database client, and the server killed with SIGKILL in the middle of a chat
//! burst. Each test checks that what was acknowledged is kept,
//! in order and once, and that the server recovers by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use confab::embedded_pg::EmbeddedPostgres;
use confab::federation::inbox::Inbound;
use confab::federation::sender::SenderStats;
use confab_federation::ids::ServerName;
use confab_federation::transaction::Pdu;
use confab_schema::queries;
use serde_json::{Value, json};
use support::process::ServeProcess;
use support::{PATIENCE, TestDb, TestServer, WsClient, is_chat};

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

/// The largest send buffer the kernel lets a TCP socket grow to: what loopback can absorb on
/// the server's side of a client that stopped reading.
fn max_send_buffer() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    text.split_whitespace().nth(2).unwrap().parse().unwrap()
}

// ---- slow consumer ------------------------------------------------------------------------

/// A subscriber's backlog is sent before its socket reads again: a client that stops reading
/// during it is closed after `websocket.client_timeout`, as its reader would find a dead one.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_its_backlog_is_closed_in_time() {
    const CIPHERTEXT: usize = 48_000;
    let s = TestServer::start_with(&[
        ("CONFAB__LIMITS__SEND_QUEUE_FRAMES", "16"),
        ("CONFAB__LIMITS__MAX_EVENT_BYTES", "49152"),
        ("CONFAB__LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("CONFAB__LIMITS__MESSAGE_BURST", "100000"),
        ("CONFAB__WEBSOCKET__HEARTBEAT_INTERVAL", "250ms"),
        ("CONFAB__WEBSOCKET__CLIENT_TIMEOUT", "1s"),
    ])
    .await;
    let (room, g) = s.room_with(2).await;
    // A backlog larger than the kernel's buffers and the socket's queue can hold.
    let frame = CIPHERTEXT + 512;
    let backlog = (max_send_buffer() + (1 << 20)) / frame + 16 + 64;
    let filler = "x".repeat(CIPHERTEXT - 8);
    let (mut sender, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let mut last = 0;
    for i in 0..backlog {
        let ack = sender.chat(&room, &format!("{i:07}{filler}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        last = ack["result"]["seq"].as_i64().unwrap();
    }
    sender.close().await;
    let (mut watcher, _) = WsClient::joined(&s, &g[1], &room, last).await;

    let mut slow = WsClient::connect_small_buffer(&s.ws_url()).await;
    slow.auth(&g[2]).await;
    let reply = slow
        .request(json!({"type": "subscribe", "room_id": room, "since": 0}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    // From here on the slow client reads nothing; the watcher sees it come and go.
    let device = g[2].device_id.as_str();
    watcher
        .wait_for(|m| m["type"] == "presence" && m["device_id"] == device && m["online"] == true)
        .await;
    // Bounded here: the server's pings keep the watcher's own patience from running out.
    let gone = watcher
        .wait_for(|m| m["type"] == "presence" && m["device_id"] == device && m["online"] == false);
    tokio::time::timeout(PATIENCE, gone)
        .await
        .expect("the client that stopped reading its backlog is still connected");
    drop(slow);
    s.stop().await;
}

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
    let (room, g) = s.room_with(2).await;
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

// ---- a federated peer that never returns --------------------------------------------------

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Polls `check` until it holds, failing after [`PATIENCE`]: waiting on real state that has no
/// notification (the sender's counters, the database).
async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Runs `confab admin --server <s> <args>`, which must succeed; returns its stdout.
async fn admin(s: &TestServer, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.arg("admin")
        .arg("--server")
        .arg(s.admin_base())
        .args(args)
        .env("CONFAB_ADMIN_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("confab admin finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `confab admin federation peers --json`, the row of `peer`.
async fn peer_row(s: &TestServer, peer: &ServerName) -> Value {
    let all: Value =
        serde_json::from_str(&admin(s, &["federation", "peers", "--json"]).await).unwrap();
    all["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["server"] == peer.as_str())
        .unwrap_or_else(|| panic!("{peer} is not listed: {all}"))
        .clone()
}

fn pdu(n: usize) -> Pdu {
    serde_json::from_value(json!({
        "event_id": format!("$giveup{n}"),
        "room_id": "!room:a.example",
        "type": "confab.chat",
        "content": {"ciphertext": format!("c{n}")},
    }))
    .unwrap()
}

async fn queued(server: &TestServer, destination: &ServerName) -> i64 {
    let mut conn = confab_schema::connect(&server.state.pool).await.unwrap();
    queries::count_outbound(&mut conn, destination.as_str())
        .await
        .unwrap()
}

/// The next PDU `server` received, failing after [`PATIENCE`].
async fn next_pdu(server: &TestServer) -> Pdu {
    let mut inbox = server.inbox.lock().await;
    loop {
        match tokio::time::timeout(PATIENCE, inbox.recv())
            .await
            .expect("no PDU arrived in time")
            .unwrap()
        {
            Inbound::Pdu { pdu, .. } => return pdu,
            Inbound::Edu { .. } => {}
        }
    }
}

/// Queues `n` PDUs numbered from `first` for `peer`, which is down, and waits until the sender
/// gives up on it and drops them.
async fn given_up(a: &TestServer, peer: &ServerName, first: usize, n: usize) {
    let sender = &a.state.federation_sender;
    let dropped = SenderStats::get(&sender.stats().pdus_dropped);
    for i in first..first + n {
        sender.enqueue_persistent(peer, pdu(i)).await.unwrap();
    }
    wait_until("the sender gives up on the peer", async || {
        SenderStats::get(&sender.stats().pdus_dropped) >= dropped + n as u64
    })
    .await;
    assert!(sender.is_given_up(peer));
    assert_eq!(queued(a, peer).await, 0, "the queue was dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_returns_is_given_up_and_taken_back() {
    let a = TestServer::start_federating(&[
        ("CONFAB__ADMIN__TOKEN", ADMIN_TOKEN),
        ("CONFAB__FEDERATION__RETRY_BASE", "20ms"),
        ("CONFAB__FEDERATION__RETRY_CAP", "100ms"),
        ("CONFAB__FEDERATION__GIVE_UP_AFTER", "1s"),
    ])
    .await;
    let b = TestServer::start_federating(&[]).await.stop_keeping().await;
    let b_name = b.server_name();
    let sender = &a.state.federation_sender;

    // Down for longer than give_up_after: the queue is dropped, and counted.
    let started = Instant::now();
    given_up(&a, &b_name, 0, 30).await;
    let gave_up_in = started.elapsed();
    assert!(
        gave_up_in >= Duration::from_secs(1),
        "not before give_up_after: {gave_up_in:?}"
    );
    let row = peer_row(&a, &b_name).await;
    assert_eq!(row["given_up"], true, "{row}");
    assert_eq!(row["dropped"], 30, "{row}");
    assert_eq!(row["queued"], 0, "{row}");
    assert!(row["given_up_ts"].is_i64(), "{row}");
    let table = admin(&a, &["federation", "peers"]).await;
    let line = table
        .lines()
        .find(|l| l.starts_with(b_name.as_str()))
        .unwrap();
    assert!(line.contains("given up "), "{table}");
    assert!(table.lines().next().unwrap().contains("DROPPED"), "{table}");

    // While given up the queue stays bounded: new events are counted, not queued.
    for i in 30..40 {
        sender.enqueue_persistent(&b_name, pdu(i)).await.unwrap();
    }
    assert_eq!(queued(&a, &b_name).await, 0);
    let row = peer_row(&a, &b_name).await;
    assert_eq!(row["dropped"], 40, "{row}");

    // An operator's retry takes it back: what is queued next is delivered.
    let b = b.start().await;
    admin(&a, &["federation", "retry", b_name.as_str()]).await;
    assert!(!sender.is_given_up(&b_name));
    let row = peer_row(&a, &b_name).await;
    assert_eq!(row["given_up"], false, "{row}");
    sender.enqueue_persistent(&b_name, pdu(40)).await.unwrap();
    assert_eq!(next_pdu(&b).await.event_id, "$giveup40");

    // Given up again; this time the peer comes back by itself and says so with a request.
    let b = b.stop_keeping().await;
    given_up(&a, &b_name, 41, 5).await;
    assert_eq!(peer_row(&a, &b_name).await["dropped"], 45);
    let b = b.start().await;
    let answer = b
        .signed_request(
            &a.server_name(),
            reqwest::Method::GET,
            "/_confab/federation/v1/ping",
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(
        !sender.is_given_up(&b_name),
        "a verified request takes it back"
    );
    sender.enqueue_persistent(&b_name, pdu(46)).await.unwrap();
    assert_eq!(next_pdu(&b).await.event_id, "$giveup46");
    let row = peer_row(&a, &b_name).await;
    assert_eq!(
        (row["given_up"].clone(), row["dropped"].clone()),
        (json!(false), json!(45))
    );
    eprintln!("give up: after {gave_up_in:?} of failures (give_up_after 1s)");
}

// ---- Postgres restarted under traffic ----------------------------------------------------

/// A Postgres cluster of the test's own, in a temporary folder, that it may stop and start.
struct OwnCluster {
    root: std::path::PathBuf,
    pg: Option<EmbeddedPostgres>,
    _dir: tempfile::TempDir,
}

impl OwnCluster {
    async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("confab-faults-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        // When the tests run as root, Postgres runs as an unprivileged user that must reach it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("pg");
        let mut cluster = Self {
            root,
            pg: None,
            _dir: dir,
        };
        cluster.up().await;
        cluster
    }

    fn url(&self) -> String {
        self.pg.as_ref().unwrap().url("{db}")
    }

    async fn up(&mut self) {
        let root = self.root.clone();
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&root, None, &[]))
            .await
            .unwrap()
            .expect("start the test's own Postgres");
        self.pg = Some(pg);
    }

    /// Fast shutdown: sessions are cut, everything committed is kept.
    async fn down(&mut self) {
        let pg = self.pg.take().unwrap();
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .unwrap()
            .expect("stop the test's own Postgres");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            let _ = pg.stop();
        }
    }
}

/// Runs `call`, which must answer well within a hang's reach; returns its answer and duration.
async fn promptly<T>(what: &str, call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {PATIENCE:?}"));
    (answer, started.elapsed())
}

fn assert_unavailable(what: &str, body: &Value) {
    assert_eq!(body["code"], "unavailable", "{what}: {body}");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{what}: {body}"
    );
}

// ---- a statement stuck behind a lock --------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_stuck_behind_a_lock_is_cancelled_with_a_retryable_error() {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

    let s = TestServer::start_with(&[("CONFAB__DATABASE__LOCK_TIMEOUT", "300ms")]).await;
    let host = s.guest("Host").await;
    let room = s.room(&host).await;
    // Another client of the database (a stuck session, an operator's open transaction) holds the
    // room's row; locking the room needs it.
    let mut blocker = AsyncPgConnection::establish(&s.db.url).await.unwrap();
    blocker.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query("SELECT 1 FROM rooms WHERE room_id = $1 FOR UPDATE")
        .bind::<Text, _>(&room)
        .execute(&mut blocker)
        .await
        .unwrap();

    let lock = format!("/rooms/{room}/lock");
    let ((status, body), _) = promptly(
        "a lock request behind a held row",
        s.post(&lock, &host.token, json!({})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_unavailable("a lock request behind a held row", &body);
    // Nothing else is held up: the server answers requests that need other rows.
    let (status, body) = s.get(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["locked"], false, "{body}");

    // The row released, the same request goes through, on the same pool.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let (status, body) = s.post(&lock, &host.token, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = s.get(&format!("/rooms/{room}"), &host.token).await;
    assert_eq!(body["locked"], true, "{body}");
}

/// One client chatting without a pause through the outage, one message at a time: each message
/// with the answer it got. Reports each answer on `progress` (`true` for an ack).
async fn steady_chat(
    mut c: WsClient,
    room: String,
    progress: tokio::sync::mpsc::UnboundedSender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (WsClient, Vec<(String, Value)>) {
    let mut answers = Vec::new();
    // Bounded: the test stops it long before.
    for i in 0..100_000 {
        if *stop.borrow() {
            break;
        }
        let text = format!("steady-{i:06}");
        let (reply, _) = promptly("a chat send", c.chat(&room, &text)).await;
        let _ = progress.send(reply["type"] == "ack");
        answers.push((text, reply));
    }
    (c, answers)
}

/// Waits for `n` acknowledgements from [`steady_chat`].
async fn steady_acks(progress: &mut tokio::sync::mpsc::UnboundedReceiver<bool>, n: usize) {
    let mut acks = 0;
    while acks < n {
        let ack = tokio::time::timeout(PATIENCE, progress.recv())
            .await
            .unwrap_or_else(|_| panic!("{acks} of {n} chat acks in {PATIENCE:?}"))
            .expect("the steady sender stopped");
        acks += usize::from(ack);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_traffic_costs_retryable_errors_and_nothing_acknowledged() {
    let mut cluster = OwnCluster::start().await;
    let db = TestDb::on_cluster(&cluster.url(), "confab").await;
    let s = TestServer::start_on_database(
        db,
        &[
            ("CONFAB__DATABASE__CONNECT_TIMEOUT", "1s"),
            // The steady sender gets its refusals at once, and at once sends again.
            ("CONFAB__LIMITS__MESSAGES_PER_SECOND", "100000"),
            ("CONFAB__LIMITS__MESSAGE_BURST", "100000"),
        ],
    )
    .await;
    let (room, g) = s.room_with(3).await;
    let (mut a, _) = WsClient::joined(&s, &g[0], &room, 0).await;
    let (mut b, _) = WsClient::joined(&s, &g[1], &room, 0).await;
    let (steady, _) = WsClient::joined(&s, &g[2], &room, 0).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let steady = tokio::spawn(steady_chat(steady, room.clone(), progress_tx, stop_rx));
    let mut acked = Vec::new();
    for i in 0..20 {
        let ack = a.chat(&room, &format!("before-{i}")).await;
        acked.push(ack["result"]["seq"].as_i64().unwrap());
    }
    steady_acks(&mut progress, 20).await;

    // Stopped while the steady sender is mid-flight.
    let went_down = Instant::now();
    cluster.down().await;

    // The sockets stay open and answer what needs no database …
    for c in [&mut a, &mut b] {
        let (pong, _) = promptly("a ping", c.request(json!({"type": "ping"}))).await;
        assert_eq!(pong["type"], "ack", "{pong}");
    }
    // … health says so at once …
    let (res, took) = promptly("/health", s.http.get(format!("{}/health", s.base)).send()).await;
    assert_eq!(res.unwrap().status(), 503);
    let mut slowest = took;
    // … and what needs it is refused promptly, with a retryable error.
    let ((status, body), took) = promptly(
        "GET /rooms/…",
        s.get(&format!("/rooms/{room}"), &g[1].token),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_unavailable("GET /rooms/…", &body);
    slowest = slowest.max(took);
    let ((status, body), took) = promptly(
        "POST /sessions",
        s.call(
            reqwest::Method::POST,
            "/sessions",
            None,
            Some(json!({"display_name": "Late"})),
        ),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_unavailable("POST /sessions", &body);
    slowest = slowest.max(took);
    let res = s
        .http
        .get(format!("{}/_confab/client/v1/rooms/{room}", s.base))
        .bearer_auth(&g[1].token)
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    for i in 0..3 {
        let (reply, took) = promptly("a chat send", a.chat(&room, &format!("down-{i}"))).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_unavailable("a chat send", &reply);
        slowest = slowest.max(took);
    }
    // A socket opened now is told to retry its `auth`, and kept open for it.
    let mut late = WsClient::connect(&s).await;
    let (reply, took) = promptly(
        "an auth",
        late.request(json!({"type": "auth", "token": g[3].token})),
    )
    .await;
    assert_unavailable("an auth", &reply);
    slowest = slowest.max(took);
    assert!(
        slowest < Duration::from_secs(5),
        "answers while the database is away take at most about database.connect_timeout: {slowest:?}"
    );

    cluster.up().await;
    let down_for = went_down.elapsed();
    let came_back = Instant::now();

    // The server recovers by itself: health, then chat, live to the other sockets.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let res = s
            .http
            .get(format!("{}/health", s.base))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_in = came_back.elapsed();
    let reply = late
        .request(json!({"type": "auth", "token": g[3].token}))
        .await;
    assert_eq!(
        reply["type"], "ack",
        "the same socket authenticates now: {reply}"
    );
    for i in 0..5 {
        let ack = a.chat(&room, &format!("after-{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        acked.push(ack["result"]["seq"].as_i64().unwrap());
    }
    steady_acks(&mut progress, 5).await;
    stop_tx.send_replace(true);
    let (steady, answers) = tokio::time::timeout(PATIENCE, steady)
        .await
        .expect("the steady sender stops")
        .unwrap();

    // The steady sender only ever got acks or retryable refusals, never a hang or another error.
    let mut refused = 0;
    for (text, reply) in &answers {
        match reply["type"].as_str() {
            Some("ack") => acked.push(reply["result"]["seq"].as_i64().unwrap()),
            _ => {
                assert_unavailable(text, reply);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the steady sender ran through the outage");
    acked.sort_unstable();

    // Everything acknowledged is in the log, once, under its number; nothing refused while the
    // database was away for good is.
    let log = log_of(&s, &room, &g[1].token).await;
    let log_chats: Vec<&Value> = log
        .iter()
        .filter(|e| e["content"]["type"] == "chat")
        .collect();
    let log_texts: Vec<&str> = log_chats
        .iter()
        .map(|e| e["content"]["ciphertext"].as_str().unwrap())
        .collect();
    let mut unique = log_texts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), log_texts.len(), "no message twice");
    for seq in &acked {
        assert!(
            log.iter().any(|e| e["seq"] == *seq),
            "acknowledged {seq} is in the log"
        );
    }
    for (text, reply) in &answers {
        if reply["type"] == "ack" {
            let at = log_chats
                .iter()
                .find(|e| e["seq"] == reply["result"]["seq"]);
            assert_eq!(at.unwrap()["content"]["ciphertext"], text.as_str());
        }
    }
    assert!(
        log_texts.iter().all(|t| !t.starts_with("down-")),
        "{log_texts:?}"
    );

    // The other socket, open throughout, got the whole log live: in order, no gap, no repeat.
    let last = log.last().unwrap()["seq"].as_i64().unwrap();
    let mut live = Vec::new();
    while live.last() != Some(&last) {
        live.push(
            b.wait_for(|m| m["type"] == "event").await["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    let first_live = live[0];
    let expected: Vec<i64> = seqs(&log)
        .into_iter()
        .filter(|s| *s >= first_live)
        .collect();
    assert_eq!(live, expected, "the live stream through the outage");
    eprintln!(
        "postgres restart: down for {down_for:?}, slowest answer meanwhile {slowest:?}, \
         healthy {recovered_in:?} after it was back; the steady sender got {} acks and {refused} \
         retryable refusals",
        answers.len() - refused
    );
    for c in [a, b, steady, late] {
        c.close().await;
    }
    s.stop().await;
}

/// Every event of a room, from its log (REST, paged).
async fn log_of(s: &TestServer, room: &str, token: &str) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    loop {
        let since = events.last().map_or(0, |e| e["seq"].as_i64().unwrap());
        let (status, page) = s
            .get(
                &format!("/rooms/{room}/events?since={since}&limit=500"),
                token,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let page = page["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

// ---- SIGKILL during a chat burst ----------------------------------------------------------

/// What one client saw of the burst before the server died.
#[derive(Default)]
struct BurstRecord {
    /// Ciphertexts sent, in order.
    sent: Vec<String>,
    /// Acknowledged: ciphertext and the number it got, in the order the acks came.
    acked: Vec<(String, i64)>,
    /// Every room event received, in order.
    events: Vec<Value>,
}

/// Sends chat with request ids, keeping `WINDOW` unacknowledged, until the socket dies; reports
/// each ack on `acks`.
async fn burst(
    mut c: WsClient,
    room: String,
    who: usize,
    acks: tokio::sync::mpsc::UnboundedSender<()>,
) -> BurstRecord {
    const WINDOW: usize = 16;
    // A bound on the loop, far beyond what is sent before the kill.
    const MOST: usize = 100_000;
    let mut record = BurstRecord::default();
    // The request id of the n-th message is n; its ciphertext names the client and n. `false`
    // once the connection is gone.
    async fn send(c: &mut WsClient, room: &str, who: usize, record: &mut BurstRecord) -> bool {
        let text = format!("c{who}-{:06}", record.sent.len());
        let id = record.sent.len();
        record.sent.push(text.clone());
        c.try_send(
            json!({"type": "chat", "id": id, "room_id": room, "kind": "text", "ciphertext": text}),
        )
        .await
    }
    for _ in 0..WINDOW {
        if !send(&mut c, &room, who, &mut record).await {
            return record;
        }
    }
    loop {
        let msg = match c.next_raw().await {
            Some(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                serde_json::from_str::<Value>(&t).unwrap()
            }
            Some(_) | None => return record,
        };
        match msg["type"].as_str() {
            Some("ack") => {
                let id = usize::try_from(msg["id"].as_u64().unwrap()).unwrap();
                let text = record.sent[id].clone();
                record
                    .acked
                    .push((text, msg["result"]["seq"].as_i64().unwrap()));
                let _ = acks.send(());
                if record.sent.len() < MOST && !send(&mut c, &room, who, &mut record).await {
                    return record;
                }
            }
            Some("event") => record.events.push(msg),
            Some("error") => panic!("client {who}: {msg}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_chat_burst_loses_nothing_acknowledged() {
    const CLIENTS: usize = 4;
    const ACKS_BEFORE_KILL: usize = 400;
    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = reqwest::Client::new();
    let mut first = ServeProcess::spawn(port, data.path(), &db.url);
    first.healthy(&http).await;

    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        let session = first
            .call(
                &http,
                reqwest::Method::POST,
                "/sessions",
                None,
                Some(json!({"display_name": format!("Guest {i}")})),
            )
            .await;
        tokens.push(session["access_token"].as_str().unwrap().to_owned());
    }
    let room = first
        .call(
            &http,
            reqwest::Method::POST,
            "/rooms",
            Some(&tokens[0]),
            Some(json!({})),
        )
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in &tokens[1..] {
        let invite = first
            .call(
                &http,
                reqwest::Method::POST,
                &format!("/rooms/{room}/invites"),
                Some(&tokens[0]),
                Some(json!({})),
            )
            .await;
        first
            .call(
                &http,
                reqwest::Method::POST,
                &format!("/rooms/{room}/join"),
                Some(token),
                Some(json!({"invite_token": invite["token"]})),
            )
            .await;
    }
    let connect = async |server: &ServeProcess, token: &str, since: i64| {
        let mut c = WsClient::connect_url(&server.ws_url()).await;
        let reply = c.request(json!({"type": "auth", "token": token})).await;
        assert_eq!(reply["type"], "ack", "{reply}");
        let reply = c
            .request(json!({"type": "subscribe", "room_id": room, "since": since}))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
        c
    };

    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut bursts = Vec::new();
    for (who, token) in tokens.iter().enumerate() {
        let c = connect(&first, token, 0).await;
        bursts.push(tokio::spawn(burst(c, room.clone(), who, acks_tx.clone())));
    }
    drop(acks_tx);
    for n in 0..ACKS_BEFORE_KILL {
        tokio::time::timeout(PATIENCE, acks_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} acks in {PATIENCE:?}"))
            .expect("a client stopped before the kill");
    }
    first.kill();
    let mut records = Vec::new();
    for b in bursts {
        records.push(tokio::time::timeout(PATIENCE, b).await.unwrap().unwrap());
    }

    let restarting = Instant::now();
    let mut second = ServeProcess::spawn(port, data.path(), &db.url);
    second.healthy(&http).await;
    let restarted_in = restarting.elapsed();
    let log = second.log(&http, &room, &tokens[0]).await;
    let log_seqs = seqs(&log);
    assert_eq!(
        log_seqs,
        (1..=log_seqs.len() as i64).collect::<Vec<_>>(),
        "the log is numbered without a gap"
    );
    let at: std::collections::HashMap<i64, &str> = log
        .iter()
        .filter(|e| e["content"]["type"] == "chat")
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["content"]["ciphertext"].as_str().unwrap(),
            )
        })
        .collect();
    let mut in_log: std::collections::HashMap<&str, usize> = Default::default();
    for text in at.values() {
        *in_log.entry(text).or_default() += 1;
    }

    let (mut acked, mut unacked_kept, mut sent) = (0, 0, 0);
    for (who, record) in records.iter().enumerate() {
        sent += record.sent.len();
        acked += record.acked.len();
        // Every acknowledged message is in the log once, under the number its ack gave.
        for (text, seq) in &record.acked {
            assert_eq!(at.get(seq), Some(&text.as_str()), "client {who}: ack {seq}");
            assert_eq!(
                in_log.get(text.as_str()),
                Some(&1),
                "client {who}: {text} once"
            );
        }
        // Each client's messages are in the log in the order sent, each at most once, and
        // they are a prefix of what it sent: the first one missing was never committed, and
        // neither was anything after it.
        let mine: Vec<&str> = log
            .iter()
            .filter(|e| e["content"]["type"] == "chat")
            .map(|e| e["content"]["ciphertext"].as_str().unwrap())
            .filter(|t| t.starts_with(&format!("c{who}-")))
            .collect();
        assert_eq!(
            mine,
            record.sent[..mine.len()]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            "client {who}: its messages, in order"
        );
        assert!(mine.len() >= record.acked.len());
        assert!(
            record.sent.len() > record.acked.len(),
            "client {who}: the kill came mid-burst, with messages unacknowledged"
        );
        unacked_kept += mine.len() - record.acked.len();
        // What it saw live before the kill is the start of the log.
        let seen = seqs(&record.events);
        assert_eq!(seen, log_seqs[..seen.len()], "client {who}: live stream");
    }

    // Each client resumes from the last event it saw and gets the rest of the log, once.
    for (who, record) in records.iter().enumerate() {
        let since = record
            .events
            .last()
            .map_or(0, |e| e["seq"].as_i64().unwrap());
        let mut c = connect(&second, &tokens[who], since).await;
        let missed = &log_seqs[record.events.len()..];
        let got = seqs(&c.events(missed.len()).await);
        assert_eq!(got, missed, "client {who}: resumed stream");
        // Nothing more: a ping's ack comes back with nothing in front of it.
        let pong = c.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "ack");
        assert!(
            !c.pending.iter().any(|m| m["type"] == "event"),
            "client {who}: a duplicate after the resume: {:?}",
            c.pending
        );
        c.close().await;
    }
    eprintln!(
        "sigkill: {sent} sent by {CLIENTS} clients, {acked} acknowledged before the kill, \
         {unacked_kept} more committed without an ack, log of {} events; healthy again \
         {restarted_in:?} after the restart",
        log.len()
    );
    second.kill();
}
