//! Three workers of one homeserver, each a `confab serve` process of its own, behind Debian's
//! HAProxy on loopback (round robin: no room affinity), sharing one real Postgres (README,
//! "Scaling out"). Clients reach the workers only through the load balancer, from addresses of
//! their own that it forwards in `X-Forwarded-For`. A worker is killed with SIGKILL in the middle
//! of a conversation: its client reconnects through the load balancer to another worker and
//! resumes with nothing lost or doubled, its singletons move, and capacity, lock and kick hold
//! across the workers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use serde_json::{Value, json};
use support::process::{HaProxy, ServeProcess, call, free_port, log};
use support::{PATIENCE, TestDb, WsClient, is_chat};

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// `CONFAB__…` settings of a process.
type Settings = Vec<(String, String)>;

/// The homeserver: three workers, the load balancer, the database.
struct Deployment {
    db: TestDb,
    data: tempfile::TempDir,
    workers: HashMap<&'static str, ServeProcess>,
    /// Each worker's port and settings, to start it again.
    spawn: HashMap<&'static str, (u16, Settings)>,
    proxy: HaProxy,
    http: reqwest::Client,
}

impl Deployment {
    async fn start(env: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let data = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();
        let proxy_port = free_port();
        let name = format!("127.0.0.1:{proxy_port}");
        let public = format!("http://{name}");
        let mut workers = HashMap::new();
        let mut spawn = HashMap::new();
        let mut ports = Vec::new();
        // One after another: the first one writes the signing key all of them share.
        for id in WORKERS {
            let port = free_port();
            let all: Settings = [
                ("CONFAB__SERVER__NAME", name.as_str()),
                ("CONFAB__SERVER__PUBLIC_URL", public.as_str()),
                ("CONFAB__CLUSTER__WORKER_ID", id),
                ("CONFAB__CLUSTER__LEASE", "3s"),
            ]
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let mut worker = ServeProcess::spawn_with(port, data.path(), &db.url, &pairs(&all));
            worker.healthy(&http).await;
            workers.insert(id, worker);
            spawn.insert(id, (port, all));
            ports.push((id, port));
        }
        let proxy = HaProxy::start(proxy_port, &ports).await;
        Self {
            db,
            data,
            workers,
            spawn,
            proxy,
            http,
        }
    }

    /// Starts worker `id` again after it stopped, and waits until it is healthy.
    async fn restart(&mut self, id: &'static str) {
        let (port, env) = &self.spawn[id];
        let mut worker =
            ServeProcess::spawn_with(*port, self.data.path(), &self.db.url, &pairs(env));
        worker.healthy(&self.http).await;
        self.workers.insert(id, worker);
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        call(&self.http, &self.proxy.base, method, path, token, body).await
    }

    async fn guest(&self, name: &str) -> (String, String) {
        let session = self
            .call(
                reqwest::Method::POST,
                "/sessions",
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        (
            session["access_token"].as_str().unwrap().to_owned(),
            session["user_id"].as_str().unwrap().to_owned(),
        )
    }

    /// A room of `host`'s that each of `guests` joined with an invite of its own; its id.
    async fn room(&self, host: &str, guests: &[&str]) -> String {
        let room = self
            .call(reqwest::Method::POST, "/rooms", Some(host), Some(json!({})))
            .await["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
        for token in guests {
            let invite = self
                .call(
                    reqwest::Method::POST,
                    &format!("/rooms/{room}/invites"),
                    Some(host),
                    Some(json!({})),
                )
                .await;
            self.call(
                reqwest::Method::POST,
                &format!("/rooms/{room}/join"),
                Some(token),
                Some(json!({ "invite_token": invite["token"] })),
            )
            .await;
        }
        room
    }

    /// A socket through the load balancer from `source`, to `worker` while it is up.
    async fn socket(&self, source: &str, worker: &str, token: &str) -> Option<WsClient> {
        let source: IpAddr = source.parse().unwrap();
        let mut c = WsClient::try_connect_from(&self.proxy.ws_url(), source, Some(worker)).await?;
        let reply = c.request(json!({"type": "auth", "token": token})).await;
        (reply["type"] == "ack").then_some(c)
    }

    /// The worker a user's live connections are on, as the database records them.
    async fn workers_of(&self, user_id: &str) -> Vec<String> {
        self.strings(&format!(
            "SELECT worker_id AS s FROM worker_connections WHERE user_id = '{user_id}' ORDER BY 1"
        ))
        .await
    }

    /// The worker holding each singleton's advisory lock, from `pg_locks` (the sessions are
    /// named after their workers).
    async fn holders(&self) -> Vec<String> {
        self.strings(
            "SELECT coalesce(a.application_name, '') AS s FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' \
             AND l.granted AND a.application_name LIKE 'confab worker %' \
             AND a.datname = current_database() ORDER BY l.objid",
        )
        .await
    }

    async fn strings(&self, query: &str) -> Vec<String> {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            s: String,
        }
        use diesel_async::AsyncConnection;
        let mut db = diesel_async::AsyncPgConnection::establish(&self.db.url)
            .await
            .unwrap();
        diesel::sql_query(query)
            .load::<Row>(&mut db)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.s)
            .collect()
    }
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Sends `n` chat messages named `tag-i` and waits for their acks; returns their numbers.
async fn send_chats(c: &mut WsClient, room: &str, tag: &str, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let ack = c.chat(room, &format!("{tag}-{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        seqs.push(ack["result"]["seq"].as_i64().unwrap());
    }
    seqs
}

/// Chat events until the one numbered `last`.
async fn chat_until(c: &mut WsClient, last: i64) -> Vec<Value> {
    let mut got = Vec::new();
    while got
        .last()
        .is_none_or(|e: &Value| e["seq"].as_i64().unwrap() < last)
    {
        got.push(c.wait_for(is_chat).await);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_behind_haproxy_carry_a_room_through_a_sigkill() {
    let d = Deployment::start(&[
        ("CONFAB__ROOMS__MAX_PARTICIPANTS", "3"),
        ("CONFAB__LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "4"),
    ])
    .await;
    let (host_token, host) = d.guest("Host").await;
    let (a_token, a) = d.guest("A").await;
    let (b_token, b) = d.guest("B").await;
    let (c_token, c) = d.guest("C").await;
    let room = d.room(&host_token, &[&a_token, &b_token, &c_token]).await;

    // Each participant on a worker of its own, from an address of its own.
    let subscribe = |since: i64| json!({"type": "subscribe", "room_id": room, "since": since});
    let mut on_w1 = d.socket("127.0.0.11", "w1", &host_token).await.unwrap();
    let mut on_w2 = d.socket("127.0.0.12", "w2", &a_token).await.unwrap();
    let mut on_w3 = d.socket("127.0.0.13", "w3", &b_token).await.unwrap();
    for c in [&mut on_w1, &mut on_w2, &mut on_w3] {
        let reply = c.request(subscribe(0)).await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }
    assert_eq!(d.workers_of(&host).await, ["w1"]);
    assert_eq!(d.workers_of(&a).await, ["w2"]);
    assert_eq!(d.workers_of(&b).await, ["w3"]);

    // Chat from every worker reaches every worker, in order, once.
    let mut sent = send_chats(&mut on_w1, &room, "host", 5).await;
    sent.extend(send_chats(&mut on_w2, &room, "a", 5).await);
    sent.extend(send_chats(&mut on_w3, &room, "b", 5).await);
    let last = *sent.iter().max().unwrap();
    let mut seen_by_host = chat_until(&mut on_w1, last).await;
    for c in [&mut on_w2, &mut on_w3] {
        let got = chat_until(c, last).await;
        assert_eq!(got.len(), 15);
    }
    assert_eq!(seen_by_host.len(), 15);
    // A signal from w3 to the device on w1.
    let signal = json!({"type": "signal", "room_id": room,
        "to": {"user_id": host, "device_id": on_w1_device(&d, &host).await}, "payload": "offer"});
    let reply = on_w3.request(signal).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let got = on_w1.wait_for(|m| m["type"] == "signal").await;
    assert_eq!(got["payload"], "offer");

    // The worker the host is on, which started first and holds both singletons, is killed.
    let holders = d.holders().await;
    assert_eq!(
        holders,
        ["confab worker w1", "confab worker w1"],
        "{holders:?}"
    );
    let mut d = d;
    let killed = Instant::now();
    d.workers.get_mut("w1").unwrap().kill();
    drop(on_w1);
    // The others chat on meanwhile.
    let during = send_chats(&mut on_w2, &room, "a-during", 5).await;

    // The host reconnects through the load balancer, which sends it to a live worker, and
    // resumes from the last event it saw.
    let since = seen_by_host.last().unwrap()["seq"].as_i64().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut again = loop {
        if let Some(c) = d.socket("127.0.0.11", "w1", &host_token).await {
            break c;
        }
        assert!(Instant::now() < deadline, "the host could not reconnect");
    };
    let reply = again.request(subscribe(since)).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    // (w1's row stays until its lease runs out.)
    let mut moved_to = d.workers_of(&host).await;
    moved_to.retain(|w| w != "w1");
    assert!(moved_to == ["w2"] || moved_to == ["w3"], "{moved_to:?}");
    let after = send_chats(&mut on_w3, &room, "b-after", 2).await;
    seen_by_host.extend(chat_until(&mut again, *after.last().unwrap()).await);
    let texts: Vec<&str> = seen_by_host
        .iter()
        .map(|e| e["content"]["ciphertext"].as_str().unwrap())
        .collect();
    let seqs: Vec<i64> = seen_by_host
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "in order, once: {seqs:?}"
    );
    for (i, seq) in during.iter().enumerate() {
        assert_eq!(seqs.iter().filter(|s| *s == seq).count(), 1);
        assert!(texts.contains(&format!("a-during-{i}").as_str()));
    }
    let stored = log(&d.http, &d.proxy.base, &room, &host_token).await;
    let chat_in_log = stored
        .iter()
        .filter(|e| e["content"]["type"] == "chat")
        .count();
    assert_eq!(
        chat_in_log,
        seen_by_host.len(),
        "the host saw every chat event once"
    );

    // The singletons move to a live worker.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let holders = d.holders().await;
        if holders.len() == 2 && !holders.iter().any(|h| h.ends_with("w1")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nobody took the singletons over: {holders:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!(
        "singletons taken over {:?} after the SIGKILL",
        killed.elapsed()
    );

    // Capacity counts every worker: host, A and B are connected (on w2 and w3); C is refused.
    let mut on_c = d.socket("127.0.0.14", "w3", &c_token).await.unwrap();
    let reply = on_c.request(subscribe(0)).await;
    assert_eq!(reply["code"], "room_full", "{reply}");

    // A kick committed through any worker cuts B off on w3.
    let body = d
        .call(
            reqwest::Method::POST,
            &format!("/rooms/{room}/kick"),
            Some(&host_token),
            Some(json!({ "user_id": b })),
        )
        .await;
    assert!(body.is_object(), "{body}");
    on_w3.wait_for(|m| m["type"] == "kicked").await;
    // B's place is free: C, a member, takes it on w3.
    let reply = on_c.request(subscribe(0)).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    // The host locks the room through one worker; a newcomer who never joined is refused
    // through each of the others.
    d.call(
        reqwest::Method::POST,
        &format!("/rooms/{room}/lock"),
        Some(&host_token),
        None,
    )
    .await;
    let invite = d
        .call(
            reqwest::Method::POST,
            &format!("/rooms/{room}/invites"),
            Some(&host_token),
            Some(json!({})),
        )
        .await;
    let (newcomer, _) = d.guest("Newcomer").await;
    for worker in ["w2", "w3"] {
        let res = d
            .http
            .post(format!(
                "{}/_confab/client/v1/rooms/{room}/join",
                d.proxy.base
            ))
            .bearer_auth(&newcomer)
            .header("cookie", format!("w={worker}"))
            .json(&json!({ "invite_token": invite["token"] }))
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "room_locked", "{worker}: {body}");
    }
    let (_, _) = (a, c);

    // The load balancer forwards each client's address: four sockets from one address across
    // the workers fill its limit, a fifth is refused, another address is not held up.
    let (token, _) = d.guest("Many").await;
    let mut kept = Vec::new();
    for worker in ["w2", "w3", "w2", "w3"] {
        kept.push(d.socket("127.0.0.50", worker, &token).await.unwrap());
    }
    let source: IpAddr = "127.0.0.50".parse().unwrap();
    let mut fifth = WsClient::try_connect_from(&d.proxy.ws_url(), source, Some("w2"))
        .await
        .unwrap();
    let reply = fifth.request(json!({"type": "auth", "token": token})).await;
    assert_eq!(reply["code"], "too_many_connections", "{reply}");
    assert!(d.socket("127.0.0.51", "w2", &token).await.is_some());
}

/// The device id of the user's (only) session.
async fn on_w1_device(d: &Deployment, user_id: &str) -> String {
    d.strings(&format!(
        "SELECT device_id AS s FROM sessions WHERE user_id = '{user_id}'"
    ))
    .await
    .remove(0)
}

/// What one chatting client did and saw through a rolling restart.
#[derive(Default)]
struct Chatter {
    /// Ciphertexts sent, in order (each is also its transaction id).
    sent: Vec<String>,
    acked: std::collections::HashSet<String>,
    /// Every chat event received: number and ciphertext, in the order received.
    events: Vec<(i64, String)>,
    connections: usize,
}

/// A client that chats through the load balancer at a steady pace while `sending`, and, when
/// its socket is closed under it (its worker stopping), reconnects through the load balancer,
/// resumes from the last event it saw and sends again what was not acknowledged, under the same
/// transaction id, as the web client does. Returns once `done_at` names a number it has seen and
/// everything it sent is acknowledged.
async fn chatter(
    url: String,
    (token, room, who): (String, String, usize),
    sending: tokio::sync::watch::Receiver<bool>,
    quiet: tokio::sync::mpsc::UnboundedSender<()>,
    mut done_at: tokio::sync::watch::Receiver<Option<i64>>,
) -> Chatter {
    use tokio_tungstenite::tungstenite::Message;
    let mut me = Chatter::default();
    let mut told_quiet = false;
    let source: IpAddr = format!("127.0.0.{}", 20 + who).parse().unwrap();
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(25));
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "client {who} never finished");
        let Some(mut c) = WsClient::try_connect_from(&url, source, None).await else {
            pace.tick().await;
            continue;
        };
        me.connections += 1;
        let since = me.events.last().map_or(0, |e| e.0);
        let auth = json!({"type": "auth", "id": "auth", "token": token});
        if ask(&mut c, auth).await.is_none() {
            continue;
        }
        let sub = json!({"type": "subscribe", "id": "sub", "room_id": room, "since": since});
        if ask(&mut c, sub).await.is_none() {
            continue;
        }
        let chat = |i: usize, text: &str| {
            json!({"type": "chat", "id": i, "room_id": room, "kind": "text",
                   "ciphertext": text, "txn_id": text})
        };
        let mut ok = true;
        for (i, text) in me.sent.iter().enumerate() {
            if !me.acked.contains(text) {
                ok &= c.try_send(chat(i, text)).await;
            }
        }
        while ok {
            let msg = {
                tokio::select! {
                    raw = c.next_raw() => match raw {
                        Some(Message::Text(t)) => Some(serde_json::from_str::<Value>(&t).unwrap()),
                        Some(Message::Close(_)) | None => break,
                        Some(_) => None,
                    },
                    _ = pace.tick(), if *sending.borrow() => {
                        let text = format!("c{who}-{:05}", me.sent.len());
                        me.sent.push(text.clone());
                        ok = c.try_send(chat(me.sent.len() - 1, &text)).await;
                        None
                    }
                    _ = done_at.changed() => None,
                }
            };
            match msg.as_ref().and_then(|m| m["type"].as_str()) {
                Some("ack") => {
                    let id =
                        usize::try_from(msg.as_ref().unwrap()["id"].as_u64().unwrap()).unwrap();
                    me.acked.insert(me.sent[id].clone());
                }
                Some("event") if is_chat(msg.as_ref().unwrap()) => {
                    let m = msg.unwrap();
                    me.events.push((
                        m["seq"].as_i64().unwrap(),
                        m["content"]["ciphertext"].as_str().unwrap().to_owned(),
                    ));
                }
                // A worker that is stopping may refuse what arrives meanwhile: sent again
                // after the reconnection.
                Some("error") => {
                    assert_eq!(msg.as_ref().unwrap()["code"], "unavailable", "{msg:?}")
                }
                _ => {}
            }
            let all_acked = me.acked.len() == me.sent.len();
            if !*sending.borrow() && all_acked && !told_quiet {
                told_quiet = true;
                let _ = quiet.send(());
            }
            let seen = me.events.last().map_or(0, |e| e.0);
            if done_at.borrow().is_some_and(|at| seen >= at) && all_acked {
                return me;
            }
        }
    }
}

/// Sends a request and reads until its reply: `None` if the socket closes first or the reply is
/// an error (a worker stopping under it).
async fn ask(c: &mut WsClient, request: Value) -> Option<Value> {
    use tokio_tungstenite::tungstenite::Message;
    let id = request["id"].clone();
    if !c.try_send(request).await {
        return None;
    }
    loop {
        match c.next_raw().await? {
            Message::Text(t) => {
                let msg: Value = serde_json::from_str(&t).unwrap();
                if msg["id"] == id {
                    return (msg["type"] == "ack").then_some(msg);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Three workers are restarted one after another (SIGTERM, start, healthy) while four clients
/// chat through the load balancer: every message is committed once, every acknowledged one is
/// delivered to every client exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_workers_delivers_every_message_exactly_once() {
    const CLIENTS: usize = 4;
    let mut d = Deployment::start(&[]).await;
    let mut guests = Vec::new();
    for i in 0..CLIENTS {
        guests.push(d.guest(&format!("Guest {i}")).await);
    }
    let host_token = guests[0].0.clone();
    let others: Vec<&str> = guests[1..].iter().map(|(t, _)| t.as_str()).collect();
    let room = d.room(&host_token, &others).await;
    let (sending_tx, sending) = tokio::sync::watch::channel(true);
    let (done_tx, done_at) = tokio::sync::watch::channel(None);
    let (quiet_tx, mut quiet) = tokio::sync::mpsc::unbounded_channel();
    let clients: Vec<_> = guests
        .iter()
        .enumerate()
        .map(|(who, (token, _))| {
            tokio::spawn(chatter(
                d.proxy.ws_url(),
                (token.clone(), room.clone(), who),
                sending.clone(),
                quiet_tx.clone(),
                done_at.clone(),
            ))
        })
        .collect();

    for id in WORKERS {
        d.workers.get_mut(id).unwrap().terminate().await;
        d.restart(id).await;
    }
    sending_tx.send_replace(false);
    // Once every client has all it sent acknowledged, the log is complete: each client reads
    // up to its newest number.
    for _ in 0..CLIENTS {
        tokio::time::timeout(PATIENCE * 3, quiet.recv())
            .await
            .expect("a client's messages were not all acknowledged")
            .unwrap();
    }
    let last = log(&d.http, &d.proxy.base, &room, &host_token)
        .await
        .last()
        .map_or(0, |e| e["seq"].as_i64().unwrap());
    done_tx.send_replace(Some(last));
    let mut seen = Vec::new();
    for client in clients {
        seen.push(
            tokio::time::timeout(PATIENCE * 6, client)
                .await
                .unwrap()
                .unwrap(),
        );
    }

    let log = log(&d.http, &d.proxy.base, &room, &host_token).await;
    let chat: Vec<(i64, String)> = log
        .iter()
        .filter(|e| e["content"]["type"] == "chat")
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["content"]["ciphertext"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut once = std::collections::HashSet::new();
    for (_, text) in &chat {
        assert!(once.insert(text.clone()), "{text} committed twice");
    }
    let mut reconnections = 0;
    for (who, client) in seen.iter().enumerate() {
        reconnections += client.connections - 1;
        assert_eq!(client.acked.len(), client.sent.len(), "client {who}");
        for text in &client.sent {
            assert!(
                once.contains(text),
                "client {who}: {text} acknowledged but not in the log"
            );
        }
        assert_eq!(
            client.events, chat,
            "client {who} saw every message once, in order"
        );
    }
    assert!(
        reconnections >= 1,
        "nobody's worker was restarted under them"
    );
    eprintln!(
        "rolling restart: {} messages, {reconnections} reconnections, every one delivered once to {CLIENTS} clients",
        chat.len()
    );
}
