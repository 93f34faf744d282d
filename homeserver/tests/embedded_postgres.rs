//! The embedded Postgres under `confab serve`, with real processes and the cluster's production
//! durability settings (fsync and synchronous commit on, unlike the shared test cluster): its
//! postmaster killed with SIGKILL (what the OOM killer does) under a chat burst is started again
//! by the server, which carries on and loses nothing acknowledged; a server started again right
//! after such a crash starts its cluster instead of trusting `pg_ctl status`; a cluster left
//! running by a server that crashed is adopted, supervised and stopped with the next one; and,
//! started as root in a folder Postgres's user cannot enter, the server says which folder and
//! what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{PATIENCE, WsClient};

/// Longest a server (and its cluster, recovering from a crash) may take to become healthy.
const START_BOUND: Duration = Duration::from_secs(60);

/// A data directory in /tmp that Postgres's unprivileged user can reach when the tests run as
/// root.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("confab-embedded-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `confab serve` with its embedded cluster (no database URL) under `data`; killed when
/// dropped, so a failing test leaves no server behind.
struct Serve {
    child: Child,
    base: String,
    /// The admin listener (metrics), on a port of its own.
    admin_base: String,
    data: PathBuf,
    log: PathBuf,
}

impl Serve {
    fn spawn(data: &Path, port: u16) -> Self {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = data.join(format!("serve-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let admin_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .arg("serve")
            .env("CONFAB__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("CONFAB__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("CONFAB__SERVER__NAME", format!("127.0.0.1:{port}"))
            .env(
                "CONFAB__SERVER__PUBLIC_URL",
                format!("http://127.0.0.1:{port}"),
            )
            .env("CONFAB__SERVER__DATA_DIR", data)
            .env("CONFAB__SERVER__WEB_CLIENT_DIR", "/nonexistent")
            .env_remove("CONFAB__DATABASE__URL")
            .env("CONFAB__DATABASE__POOL_SIZE", "8")
            .env("CONFAB__DATABASE__CONNECT_TIMEOUT", "1s")
            .env("CONFAB__LIMITS__MESSAGES_PER_SECOND", "100000")
            .env("CONFAB__LIMITS__MESSAGE_BURST", "100000")
            .env("CONFAB__LIMITS__SEND_QUEUE_FRAMES", "8192")
            .env("CONFAB__LOG__LEVEL", "warn,confab=info")
            .env_remove("RUST_LOG")
            // The server logs to stdout; errors before logging starts go to stderr.
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin_base: format!("http://127.0.0.1:{admin_port}"),
            data: data.to_path_buf(),
            log,
        }
    }

    /// What it printed, log and errors.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/health` until the server and its database answer (bounded).
    async fn healthy(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Ok(res) = http.get(format!("{}/health", self.base)).send().await
                && res.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("confab serve exited ({status}): {}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "confab serve never became healthy: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `check` holds on the metrics text (bounded).
    async fn wait_for_metric(&self, http: &reqwest::Client, line: &str) {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let text = http
                .get(format!("{}/metrics", self.admin_base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no `{line}` in the metrics: {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.data.join("postgres/data/postmaster.pid")
    }

    /// The PID of the cluster's postmaster.
    fn postmaster(&self) -> i32 {
        std::fs::read_to_string(self.pid_file())
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn kill(&mut self) {
        signal(
            i32::try_from(self.child.id()).unwrap(),
            nix::sys::signal::SIGKILL,
        );
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        signal(
            i32::try_from(self.child.id()).unwrap(),
            nix::sys::signal::SIGTERM,
        );
        self.child.wait().unwrap()
    }

    fn ws_url(&self) -> String {
        format!("{}/_confab/client/v1/ws", self.base.replace("http", "ws"))
    }

    async fn call(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = http.request(method, format!("{}/_confab/client/v1{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn ok(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (status, body) = self.call(http, method, path, token, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    async fn guest(&self, http: &reqwest::Client, name: &str) -> String {
        let body = self
            .ok(
                http,
                reqwest::Method::POST,
                "/sessions",
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Every event of the room, from its log.
    async fn log(&self, http: &reqwest::Client, room: &str, token: &str) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        loop {
            let since = events.last().map_or(0, |e| e["seq"].as_i64().unwrap());
            let page = self
                .ok(
                    http,
                    reqwest::Method::GET,
                    &format!("/rooms/{room}/events?since={since}&limit=500"),
                    Some(token),
                    None,
                )
                .await;
            let page = page["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return events;
            }
            events.extend(page);
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops a cluster a failed test left running (the server that would have stopped it is gone).
struct StopClusterOnDrop(PathBuf);

impl Drop for StopClusterOnDrop {
    fn drop(&mut self) {
        if self.0.join("data/postmaster.pid").exists()
            && let Ok(pg) = confab::embedded_pg::EmbeddedPostgres::start(&self.0, None, &[])
        {
            let _ = pg.stop();
        }
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// A client authenticated and subscribed to `room` from `since`.
async fn connect(ws: &str, token: &str, room: &str, since: i64) -> WsClient {
    let mut c = WsClient::connect_url(ws).await;
    let reply = c.request(json!({"type": "auth", "token": token})).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    let reply = c
        .request(json!({"type": "subscribe", "room_id": room, "since": since}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    c
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

/// What one client saw.
#[derive(Default)]
struct Record {
    /// Ciphertexts sent, in order.
    sent: Vec<String>,
    /// Acknowledged: ciphertext and the number it got.
    acked: Vec<(String, i64)>,
    /// Sends answered with a retryable `unavailable`.
    refused: usize,
    /// Every room event received, in order.
    events: Vec<Value>,
}

/// Sends chat with request ids, keeping `WINDOW` unanswered, until `stop`; reports each ack on
/// `acks`. Answers other than an ack must be a retryable `unavailable` (the database away).
async fn chat(
    mut c: WsClient,
    room: String,
    who: usize,
    acks: tokio::sync::mpsc::UnboundedSender<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (WsClient, Record) {
    const WINDOW: usize = 8;
    // A bound on the loop, far beyond what the test waits for.
    const MOST: usize = 200_000;
    let mut record = Record::default();
    let mut in_flight = 0;
    loop {
        while in_flight < WINDOW && !*stop.borrow() && record.sent.len() < MOST {
            let id = record.sent.len();
            let text = format!("c{who}-{id:06}");
            record.sent.push(text.clone());
            c.send(json!({"type": "chat", "id": id, "room_id": room, "kind": "text", "ciphertext": text}))
                .await;
            in_flight += 1;
        }
        if in_flight == 0 {
            return (c, record);
        }
        let msg = c.next().await;
        match msg["type"].as_str() {
            Some("ack") => {
                let id = usize::try_from(msg["id"].as_u64().unwrap()).unwrap();
                let seq = msg["result"]["seq"].as_i64().unwrap();
                record.acked.push((record.sent[id].clone(), seq));
                in_flight -= 1;
                let _ = acks.send(());
            }
            Some("error") => {
                assert_eq!(msg["code"], "unavailable", "client {who}: {msg}");
                assert!(msg["retry_after_ms"].as_u64().is_some(), "{msg}");
                record.refused += 1;
                in_flight -= 1;
            }
            Some("event") => record.events.push(msg),
            _ => {}
        }
    }
}

async fn acks(rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>, n: usize, what: &str) {
    for got in 0..n {
        tokio::time::timeout(START_BOUND, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: only {got} of {n} acks"))
            .expect("a client stopped");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_postmaster_is_started_again_and_nothing_acknowledged_is_lost() {
    const CLIENTS: usize = 4;
    let data = data_dir();
    let _cleanup = StopClusterOnDrop(data.path().join("postgres"));
    let http = reqwest::Client::new();
    let mut serve = Serve::spawn(data.path(), free_port());
    serve.healthy(&http).await;

    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        tokens.push(serve.guest(&http, &format!("Guest {i}")).await);
    }
    let room = serve
        .ok(
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
        let invite = serve
            .ok(
                &http,
                reqwest::Method::POST,
                &format!("/rooms/{room}/invites"),
                Some(&tokens[0]),
                Some(json!({})),
            )
            .await;
        serve
            .ok(
                &http,
                reqwest::Method::POST,
                &format!("/rooms/{room}/join"),
                Some(token),
                Some(json!({"invite_token": invite["token"]})),
            )
            .await;
    }
    let ws = serve.ws_url();
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for (who, token) in tokens.iter().enumerate() {
        let c = connect(&ws, token, &room, 0).await;
        clients.push(tokio::spawn(chat(
            c,
            room.clone(),
            who,
            acks_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(acks_tx);
    acks(&mut acks_rx, 300, "before the kill").await;

    // The OOM killer's way: SIGKILL to the postmaster, mid-burst.
    let killed = serve.postmaster();
    let killed_at = Instant::now();
    signal(killed, nix::sys::signal::SIGKILL);

    // The server notices, starts it again (Postgres recovers from its WAL), counts it, and the
    // clients, on the same sockets, get acks again.
    serve
        .wait_for_metric(&http, "confab_embedded_postgres_restarts_total 1")
        .await;
    serve.healthy(&http).await;
    let back_in = killed_at.elapsed();
    assert_ne!(serve.postmaster(), killed, "a new postmaster");
    while acks_rx.try_recv().is_ok() {}
    acks(&mut acks_rx, 200, "after the restart").await;
    stop_tx.send_replace(true);
    let mut records = Vec::new();
    for c in clients {
        records.push(
            tokio::time::timeout(PATIENCE, c)
                .await
                .expect("clients stop")
                .unwrap(),
        );
    }
    let stderr = serve.output();
    assert!(
        stderr.contains("embedded Postgres stopped unexpectedly"),
        "a warning says so: {stderr}"
    );

    let log = serve.log(&http, &room, &tokens[0]).await;
    let log_seqs = seqs(&log);
    assert_eq!(
        log_seqs,
        (1..=log_seqs.len() as i64).collect::<Vec<_>>(),
        "the log is numbered without a gap"
    );
    let at: HashMap<i64, &str> = log
        .iter()
        .filter(|e| e["content"]["type"] == "chat")
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["content"]["ciphertext"].as_str().unwrap(),
            )
        })
        .collect();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for text in at.values() {
        *times.entry(text).or_default() += 1;
    }
    let (mut acked, mut refused) = (0, 0);
    for (who, (_, record)) in records.iter().enumerate() {
        acked += record.acked.len();
        refused += record.refused;
        // Every acknowledged message is in the log once, under the number its ack gave.
        for (text, seq) in &record.acked {
            assert_eq!(at.get(seq), Some(&text.as_str()), "client {who}: ack {seq}");
            assert_eq!(times.get(text.as_str()), Some(&1), "client {who}: {text}");
        }
        // Its messages are in the log in the order sent, none twice (one refused while the
        // database went away may have committed all the same: its outcome was unknown).
        let mine: Vec<&str> = log
            .iter()
            .filter(|e| e["content"]["type"] == "chat")
            .map(|e| e["content"]["ciphertext"].as_str().unwrap())
            .filter(|t| t.starts_with(&format!("c{who}-")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        assert_eq!(mine, sorted, "client {who}: its messages in the order sent");
        // What it saw live, on a socket open throughout, is the start of the log: no gap.
        let seen = seqs(&record.events);
        assert_eq!(seen, log_seqs[..seen.len()], "client {who}: live stream");
    }
    assert!(refused > 0, "the kill came mid-burst");

    // Each client resumes from the last event it saw and gets the rest of the log, once.
    for (who, (old, record)) in records.into_iter().enumerate() {
        old.close().await;
        let since = record
            .events
            .last()
            .map_or(0, |e| e["seq"].as_i64().unwrap());
        let mut c = connect(&ws, &tokens[who], &room, since).await;
        let missed = &log_seqs[record.events.len()..];
        let got = seqs(&c.events(missed.len()).await);
        assert_eq!(got, missed, "client {who}: resumed stream");
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
        "postmaster killed: {acked} acknowledged, all kept; {refused} sends refused \
         `unavailable` meanwhile; healthy again {back_in:?} after the kill"
    );
    let status = serve.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_started_right_after_a_crash_starts_its_cluster_again() {
    let data = data_dir();
    let _cleanup = StopClusterOnDrop(data.path().join("postgres"));
    let http = reqwest::Client::new();
    let port = free_port();
    let mut first = Serve::spawn(data.path(), port);
    first.healthy(&http).await;
    let token = first.guest(&http, "Ada").await;

    // The server and then its postmaster die at once. Until its parent reaps it, the dead
    // postmaster is a zombie that `pg_ctl status` calls running.
    let postmaster = first.postmaster();
    first.kill();
    signal(postmaster, nix::sys::signal::SIGKILL);

    // Started again at once, the server starts its cluster and serves.
    let started = Instant::now();
    let mut second = Serve::spawn(data.path(), port);
    second.healthy(&http).await;
    let took = started.elapsed();
    assert_ne!(second.postmaster(), postmaster);
    let (status, body) = second
        .call(&http, reqwest::Method::GET, "/rooms", Some(&token), None)
        .await;
    assert_eq!(status, 200, "the session survived the crash: {body}");
    eprintln!("started again right after the crash: healthy in {took:?}");
    let pid_file = second.pid_file();
    assert!(second.terminate().success());
    assert!(!pid_file.exists(), "its cluster stopped with it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_left_by_a_crashed_server_is_adopted_supervised_and_stopped() {
    let data = data_dir();
    let _cleanup = StopClusterOnDrop(data.path().join("postgres"));
    let http = reqwest::Client::new();
    let port = free_port();
    let mut crashed = Serve::spawn(data.path(), port);
    crashed.healthy(&http).await;
    let token = crashed.guest(&http, "Ada").await;
    crashed.kill();
    let left_running = crashed.postmaster();

    let mut next = Serve::spawn(data.path(), port);
    next.healthy(&http).await;
    assert_eq!(
        next.postmaster(),
        left_running,
        "the running cluster is used"
    );
    assert!(next.output().contains("adopted"), "{}", next.output());
    let (status, _) = next
        .call(&http, reqwest::Method::GET, "/rooms", Some(&token), None)
        .await;
    assert_eq!(status, 200);

    // A second server on the same data directory would take the cluster from under this one.
    let intruder = Serve::spawn(data.path(), free_port());
    let status = tokio::task::spawn_blocking(move || {
        let mut intruder = intruder;
        let status = intruder.child.wait().unwrap();
        (status, intruder.output())
    });
    let (status, stderr) = tokio::time::timeout(START_BOUND, status)
        .await
        .expect("the second server stops")
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("another `confab serve`"), "{stderr}");

    // Supervised like a cluster it started: killed, it comes back.
    signal(left_running, nix::sys::signal::SIGKILL);
    next.wait_for_metric(&http, "confab_embedded_postgres_restarts_total 1")
        .await;
    next.healthy(&http).await;
    assert_ne!(next.postmaster(), left_running);
    let (status, _) = next
        .call(&http, reqwest::Method::GET, "/rooms", Some(&token), None)
        .await;
    assert_eq!(status, 200);

    // And stopped with the server.
    let pid_file = next.pid_file();
    assert!(next.terminate().success());
    assert!(
        !pid_file.exists(),
        "the adopted cluster stopped with the server"
    );
}

/// Runs a PostgreSQL tool as the user the cluster runs as (as root, `postgres`).
fn pg_tool(tool: &str, args: &[&str]) -> std::process::Output {
    let bin = confab::embedded_pg::find_bin_dir().unwrap().join(tool);
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).current_dir("/").env("LC_ALL", "C");
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_running_but_refusing_connections_is_waited_for() {
    let data = data_dir();
    let root = data.path().join("postgres");
    let _cleanup = StopClusterOnDrop(root.clone());
    // A cluster, then started as a standby without hot standby: its postmaster runs (`pg_ctl
    // status` says so) and refuses every connection until it is promoted.
    let pg = tokio::task::spawn_blocking({
        let root = root.clone();
        move || confab::embedded_pg::EmbeddedPostgres::start(&root, None, &[]).unwrap()
    })
    .await
    .unwrap();
    pg.stop().unwrap();
    let pgdata = root.join("data");
    let socket = root.join("run");
    {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(pgdata.join("postgresql.conf"))
            .unwrap();
        writeln!(conf, "hot_standby = off").unwrap();
    }
    std::fs::File::create(pgdata.join("standby.signal")).unwrap();
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(
            &pgdata.join("standby.signal"),
            Some(user.uid),
            Some(user.gid),
        )
        .unwrap();
    }
    let options = format!(
        "-c listen_addresses='' -c unix_socket_directories='{}' -c unix_socket_permissions=0700",
        socket.display()
    );
    let pgdata_arg = pgdata.display().to_string();
    let log = pgdata.join("postgres.log").display().to_string();
    let out = pg_tool(
        "pg_ctl",
        &["-D", &pgdata_arg, "-l", &log, "-o", &options, "-W", "start"],
    );
    assert!(out.status.success(), "{out:?}");
    let socket_arg = socket.display().to_string();
    let deadline = Instant::now() + START_BOUND;
    loop {
        // 1: running, rejecting connections.
        let out = pg_tool("pg_isready", &["-h", &socket_arg, "-d", "postgres"]);
        if out.status.code() == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the standby never ran: {out:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The server finds it running and refusing, and waits for it …
    let http = reqwest::Client::new();
    let mut serve = Serve::spawn(data.path(), free_port());
    let deadline = Instant::now() + START_BOUND;
    while !serve.output().contains("not accepting connections yet") {
        if let Some(status) = serve.child.try_wait().unwrap() {
            panic!("confab serve exited ({status}): {}", serve.output());
        }
        assert!(Instant::now() < deadline, "{}", serve.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // … until it accepts them.
    let out = pg_tool("pg_ctl", &["-D", &pgdata_arg, "promote"]);
    assert!(out.status.success(), "{out:?}");
    serve.healthy(&http).await;
    let pid_file = serve.pid_file();
    assert!(serve.terminate().success());
    assert!(
        !pid_file.exists(),
        "the adopted cluster stopped with the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn started_as_root_in_a_folder_postgres_cannot_enter_it_names_the_folder() {
    if !nix::unistd::geteuid().is_root() {
        // Not root: Postgres runs as the caller, who can enter their own folders.
        eprintln!("skipped: only root runs the cluster as another user");
        return;
    }
    // What `mktemp -d` makes: mode 0700, owned by root.
    let private = tempfile::Builder::new()
        .prefix("confab-private-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = private.path().join("data");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env(
            "CONFAB__SERVER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("CONFAB__SERVER__DATA_DIR", &data)
        .env("CONFAB__ADMIN__LISTEN", "")
        .env_remove("CONFAB__DATABASE__URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = serve.stderr.take().unwrap();
    let reading = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    });
    let Ok(stderr) = tokio::time::timeout(START_BOUND, reading).await else {
        let _ = serve.kill();
        let _ = serve.wait();
        panic!("confab serve did not stop with an error");
    };
    let stderr = stderr.unwrap();
    let status = serve.wait().unwrap();
    assert!(!status.success());
    let folder = private.path().display().to_string();
    assert!(
        stderr.contains(&format!("cannot enter {folder} (mode 0700")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`chmod o+x {folder}`")),
        "{stderr}"
    );
    assert!(stderr.contains("`database.url`"), "{stderr}");
    assert!(!data.join("postgres/data/PG_VERSION").exists());
}
