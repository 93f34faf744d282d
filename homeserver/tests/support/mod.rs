//! Test support: a real Postgres cluster shared by the test processes, one fresh database per
//! test cloned from a migrated template, real homeservers on 127.0.0.1, and real WebSocket and
//! HTTP clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use confab::app::{self, AppState};
use confab::config::Settings;
use confab::embedded_pg::{EmbeddedPgError, EmbeddedPostgres};
use confab::federation::inbox::Inbound;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once before failing (a bound
/// that turns a bug into a failure instead of a hang, not a way to wait for things).
pub const PATIENCE: Duration = Duration::from_secs(10);

static CLUSTER: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// URL template of the shared cluster, with `{db}` where the database name goes.
async fn cluster() -> &'static str {
    CLUSTER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("CONFAB_TEST_DATABASE_URL") {
                return url;
            }
            let root = workspace_root().join("target").join("test-postgres");
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&root).unwrap();
                // Test processes may start at once; one of them creates and starts the cluster.
                let lock = std::fs::File::create(root.with_extension("lock")).unwrap();
                lock.lock().unwrap();
                let pg = EmbeddedPostgres::start(
                    &root,
                    None,
                    &[
                        ("fsync", "off"),
                        ("synchronous_commit", "off"),
                        ("max_connections", "400"),
                    ],
                )
                .unwrap_or_else(|err| match err {
                    // The two ways out, as the tests see them.
                    EmbeddedPgError::Unreachable { .. } => panic!(
                        "{err}. For the tests, the database URL is \
                         CONFAB_TEST_DATABASE_URL: a Postgres URL with {{db}} where the \
                         database name goes"
                    ),
                    err => panic!("start the test Postgres cluster: {err}"),
                });
                let url = pg.url("{db}");
                // Left running for the next test process; `make test` stops it at the end.
                std::mem::forget(pg);
                url
            })
            .await
            .unwrap()
        })
        .await
}

static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let cluster = cluster().await;
            let name = format!(
                "confab_template_{}",
                confab_schema::migrations_fingerprint()
            );
            let lock_path = workspace_root().join("target").join(format!("{name}.lock"));
            let lock = std::fs::File::create(&lock_path).unwrap();
            tokio::task::block_in_place(|| lock.lock().unwrap());
            let maintenance = cluster.replace("{db}", "postgres");
            if confab_schema::create_database(&maintenance, &name, None)
                .await
                .unwrap()
            {
                confab_schema::run_migrations(&cluster.replace("{db}", &name))
                    .await
                    .unwrap();
            }
            drop(lock);
            name
        })
        .await
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A database of one's own, dropped when the value is.
pub struct TestDb {
    pub url: String,
    name: String,
    maintenance: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let template = template().await;
        let cluster = cluster().await;
        let name = format!("test_{}", confab_federation::ids::random_alphanumeric(16));
        let maintenance = cluster.replace("{db}", "postgres");
        confab_schema::create_database(&maintenance, &name, Some(template))
            .await
            .unwrap();
        Self {
            url: cluster.replace("{db}", &name),
            name,
            maintenance,
        }
    }
}

impl TestDb {
    /// A new database `name` on another cluster (one a test owns, given as a URL template with
    /// `{db}`), left empty for the server's migrations.
    pub async fn on_cluster(cluster: &str, name: &str) -> Self {
        let maintenance = cluster.replace("{db}", "postgres");
        confab_schema::create_database(&maintenance, name, None)
            .await
            .unwrap();
        Self {
            url: cluster.replace("{db}", name),
            name: name.to_owned(),
            maintenance,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (maintenance, name) = (self.maintenance.clone(), self.name.clone());
        // Drop runs outside async context; a short-lived runtime on its own thread does the work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(confab_schema::drop_database(&maintenance, &name));
        })
        .join();
    }
}

/// A homeserver on 127.0.0.1 with its own database: the public listener at `base`, and the
/// admin listener (admin API, metrics) on a port of its own at [`TestServer::admin_base`].
pub struct TestServer {
    pub base: String,
    pub port: u16,
    /// The admin listener's port; `None` when the test switched it off (`CONFAB__ADMIN__LISTEN`
    /// empty).
    pub admin_port: Option<u16>,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<()>,
    pub db: Arc<TestDb>,
    /// The server's own data directory (its signing key), kept across restarts.
    pub data_dir: Arc<tempfile::TempDir>,
    /// Everything the server's federation inbox received, subscribed before it started
    /// listening so that nothing delivered can be missed.
    pub inbox: tokio::sync::Mutex<tokio::sync::broadcast::Receiver<Inbound>>,
}

/// A server stopped by [`TestServer::stop_keeping`]: its name (port), database and keys are
/// kept for [`StoppedServer::start`].
pub struct StoppedServer {
    pub port: u16,
    admin_port: Option<u16>,
    env: Vec<(String, String)>,
    pub db: Arc<TestDb>,
    data_dir: Arc<tempfile::TempDir>,
}

impl StoppedServer {
    /// This server's name.
    pub fn server_name(&self) -> confab_federation::ids::ServerName {
        confab_federation::ids::ServerName::parse(&format!("127.0.0.1:{}", self.port)).unwrap()
    }

    /// Starts it again on the same port, database and keys.
    pub async fn start(self) -> TestServer {
        TestServer::start_on(
            self.db,
            self.env,
            self.port,
            self.admin_port.unwrap_or(0),
            self.data_dir,
        )
        .await
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `CONFAB__…` settings.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let db = Arc::new(TestDb::new().await);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data_dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_on(db, env, 0, 0, data_dir).await
    }

    /// Starts a server on a database of the test's choosing, plus extra `CONFAB__…` settings.
    pub async fn start_on_database(db: TestDb, env: &[(&str, &str)]) -> Self {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data_dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_on(Arc::new(db), env, 0, 0, data_dir).await
    }

    /// Starts a server that federates over plain HTTP with servers on loopback, as the other
    /// test servers are, plus extra `CONFAB__…` settings.
    pub async fn start_federating(env: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("CONFAB__FEDERATION__ALLOW_INSECURE_HTTP", "true"),
            ("CONFAB__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true"),
        ];
        all.extend_from_slice(env);
        Self::start_with(&all).await
    }

    /// `n` workers of one homeserver (README, "Scaling out"): servers on one database, with one
    /// server name (the first one's) and one signing key, each with a worker id of its own
    /// (`w0`, `w1`, …), plus extra `CONFAB__…` settings.
    pub async fn start_workers(n: usize, env: &[(&str, &str)]) -> Vec<Self> {
        let db = Arc::new(TestDb::new().await);
        let data_dir = Arc::new(tempfile::tempdir().unwrap());
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        drop(listener);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let mut all: Vec<(String, String)> = vec![
                ("CONFAB__SERVER__NAME".into(), name.clone()),
                ("CONFAB__DATABASE__URL".into(), db.url.clone()),
                ("CONFAB__CLUSTER__WORKER_ID".into(), format!("w{i}")),
            ];
            all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            workers.push(Self::start_on(db.clone(), all, 0, 0, data_dir.clone()).await);
        }
        workers
    }

    /// Sends `to` a request signed by this server, through its federation client (the one its
    /// sender and joins use), and returns the answer whatever its status.
    pub async fn signed_request(
        &self,
        to: &confab_federation::ids::ServerName,
        method: reqwest::Method,
        path: &str,
        content: Option<&Value>,
    ) -> confab::federation::client::FederationResponse {
        self.state
            .federation
            .client
            .request(to, method, path, content)
            .await
            .unwrap()
    }

    /// This server's name.
    pub fn server_name(&self) -> confab_federation::ids::ServerName {
        self.state.settings.server.name.clone()
    }

    /// `port` and `admin_port`: 0 for new ones.
    async fn start_on(
        db: Arc<TestDb>,
        env: Vec<(String, String)>,
        port: u16,
        admin_port: u16,
        data_dir: Arc<tempfile::TempDir>,
    ) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        // The admin listener on a loopback port of its own, unless the test switched it off.
        let admin_off = env
            .iter()
            .any(|(k, v)| k == "CONFAB__ADMIN__LISTEN" && v.trim().is_empty());
        let admin =
            (!admin_off).then(|| std::net::TcpListener::bind(("127.0.0.1", admin_port)).unwrap());
        let admin_port = admin.as_ref().map(|l| l.local_addr().unwrap().port());
        let mut all = vec![
            (
                "CONFAB__ADMIN__LISTEN".to_owned(),
                admin_port.map_or_else(String::new, |p| format!("127.0.0.1:{p}")),
            ),
            (
                "CONFAB__SERVER__NAME".to_owned(),
                format!("127.0.0.1:{port}"),
            ),
            (
                "CONFAB__SERVER__PUBLIC_URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ),
            (
                "CONFAB__SERVER__WEB_CLIENT_DIR".to_owned(),
                "/nonexistent".to_owned(),
            ),
            ("CONFAB__DATABASE__POOL_SIZE".to_owned(), "8".to_owned()),
            (
                "CONFAB__SERVER__DATA_DIR".to_owned(),
                data_dir.path().display().to_string(),
            ),
        ];
        all.extend(
            env.iter()
                .filter(|(k, _)| k != "CONFAB__ADMIN__LISTEN")
                .cloned(),
        );
        let settings = Settings::load_from(None, all).unwrap();
        let state = app::prepare(settings, &db.url).await.unwrap();
        let inbox = tokio::sync::Mutex::new(state.federation_inbox.subscribe());
        let listeners = app::Listeners {
            public: listener,
            admin,
        };
        let running = app::serve(listeners, state).unwrap();
        let handle = running.handle.clone();
        let server = running.server;
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            admin_port,
            state: running.state,
            http: reqwest::Client::new(),
            env,
            handle,
            task,
            db,
            data_dir,
            inbox,
        }
    }

    /// Stops the server, keeping what it needs to start again as the same server.
    pub async fn stop_keeping(self) -> StoppedServer {
        let stopped = StoppedServer {
            port: self.port,
            admin_port: self.admin_port,
            env: self.env.clone(),
            db: self.db.clone(),
            data_dir: self.data_dir.clone(),
        };
        self.stop().await;
        stopped
    }

    /// Stops the server (clients are told to reconnect) and starts it again on the same port and
    /// database, as a process restart would.
    pub async fn restart(self) -> Self {
        let (db, env, port) = (self.db.clone(), self.env.clone(), self.port);
        let (admin_port, data_dir) = (self.admin_port.unwrap_or(0), self.data_dir.clone());
        self.stop().await;
        Self::start_on(db, env, port, admin_port, data_dir).await
    }

    pub async fn stop(self) {
        self.state.engine.shutdown();
        self.state.federation_sender.shutdown();
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// The admin listener's base URL (admin API under `/_confab/admin/v1`, `/metrics`).
    pub fn admin_base(&self) -> String {
        let port = self
            .admin_port
            .expect("this test server has no admin listener");
        format!("http://127.0.0.1:{port}")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/_confab/client/v1/ws", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_confab/client/v1{}", self.base, path)
    }

    /// Sends a REST request; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Creates a guest session.
    pub async fn guest(&self, name: &str) -> Guest {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/sessions",
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        Guest {
            token: body["access_token"].as_str().unwrap().to_owned(),
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            device_id: body["device_id"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a room hosted by `host`; returns its id.
    pub async fn room(&self, host: &Guest) -> String {
        let (status, body) = self.post("/rooms", &host.token, json!({})).await;
        assert_eq!(status, 201, "{body}");
        body["room_id"].as_str().unwrap().to_owned()
    }

    /// A host, a room, and `n` more guests already joined through invites.
    pub async fn room_with(&self, n: usize) -> (String, Vec<Guest>) {
        let host = self.guest("Host").await;
        let room = self.room(&host).await;
        let mut guests = vec![host.clone()];
        for i in 0..n {
            let g = self.guest(&format!("Guest {i}")).await;
            self.join_with_invite(&host, &g, &room).await;
            guests.push(g);
        }
        (room, guests)
    }

    /// The Prometheus text of `/metrics`, from the admin listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin_base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates an invite; returns its token.
    pub async fn invite(&self, host: &Guest, room: &str, options: Value) -> Value {
        let (status, body) = self
            .post(&format!("/rooms/{room}/invites"), &host.token, options)
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Joins `guest` to `room` with a fresh invite from `host`.
    pub async fn join_with_invite(&self, host: &Guest, guest: &Guest, room: &str) {
        let invite = self.invite(host, room, json!({})).await;
        self.join(guest, room, &invite).await;
    }

    /// Joins `guest` to `room` here with `invite` (made here or on another worker).
    pub async fn join(&self, guest: &Guest, room: &str, invite: &Value) {
        let (status, body) = self
            .post(
                &format!("/rooms/{room}/join"),
                &guest.token,
                json!({ "invite_token": invite["token"] }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Reads one number, named `n`, from the server's database.
    pub async fn count(&self, query: &str) -> i64 {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut db = confab_schema::connect(&self.state.pool).await.unwrap();
        diesel::sql_query(query)
            .get_result::<N>(&mut db)
            .await
            .unwrap()
            .n
    }

    /// The room's idle deadline, as its row says.
    pub async fn expiry(&self, room: &str) -> Option<i64> {
        let mut db = confab_schema::connect(&self.state.pool).await.unwrap();
        confab_schema::queries::room(&mut db, room)
            .await
            .unwrap()
            .unwrap()
            .expires_ts
    }
}

#[derive(Clone, Debug)]
pub struct Guest {
    pub token: String,
    pub user_id: String,
    pub device_id: String,
}

/// A WebSocket client speaking the client protocol.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Pushes received while waiting for a reply, oldest first.
    pub pending: std::collections::VecDeque<Value>,
}

impl WsClient {
    pub async fn connect(server: &TestServer) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        Self {
            ws,
            next_id: 1,
            pending: Default::default(),
        }
    }

    /// Connects to any WebSocket URL (a server in another process, say).
    pub async fn connect_url(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            ws,
            next_id: 1,
            pending: Default::default(),
        }
    }

    /// Connects from loopback address `source` (so that a load balancer forwards it as that
    /// client), sending the cookie `w=<worker>` if given; `None` if the connection or the
    /// handshake fails (a server just killed).
    pub async fn try_connect_from(
        url: &str,
        source: std::net::IpAddr,
        worker: Option<&str>,
    ) -> Option<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let stream = socket.connect(addr).await.ok()?;
        let mut request = url.into_client_request().unwrap();
        if let Some(worker) = worker {
            request
                .headers_mut()
                .insert("cookie", format!("w={worker}").parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .ok()?;
        Some(Self {
            ws,
            next_id: 1,
            pending: Default::default(),
        })
    }

    /// Connects through a socket with a tiny kernel receive buffer, so that a client that stops
    /// reading makes the server's queue fill after a known number of bytes, not after whatever
    /// loopback's autotuned buffers would absorb.
    pub async fn connect_small_buffer(url: &str) -> Self {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        Self {
            ws,
            next_id: 1,
            pending: Default::default(),
        }
    }

    /// Authenticates a connected client.
    pub async fn auth(&mut self, guest: &Guest) {
        let reply = self
            .request(json!({"type": "auth", "token": guest.token}))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }

    /// Connects and authenticates.
    pub async fn authed(server: &TestServer, guest: &Guest) -> Self {
        let mut c = Self::connect(server).await;
        let reply = c
            .request(json!({"type": "auth", "token": guest.token}))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
        c
    }

    /// Connects, authenticates and subscribes to `room` from `since`; returns client and ack.
    pub async fn joined(
        server: &TestServer,
        guest: &Guest,
        room: &str,
        since: i64,
    ) -> (Self, Value) {
        let mut c = Self::authed(server, guest).await;
        let reply = c
            .request(json!({"type": "subscribe", "room_id": room, "since": since}))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
        (c, reply)
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    /// Sends, reporting instead of panicking if the connection is gone (a server just killed).
    pub async fn try_send(&mut self, value: Value) -> bool {
        self.ws.send(Message::text(value.to_string())).await.is_ok()
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// The next message from the server (`None` once the socket closed).
    pub async fn next_raw(&mut self) -> Option<Message> {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await {
                Err(_) => panic!("no message from the server within {PATIENCE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(msg))) => return Some(msg),
            }
        }
    }

    /// The next JSON message, from the pending pushes first.
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        self.next_fresh().await
    }

    async fn next_fresh(&mut self) -> Value {
        match self.next_raw().await {
            Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Sends a request with a fresh id and returns its one reply; pushes that arrive first are
    /// kept in `pending`.
    pub async fn request(&mut self, mut value: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        value["id"] = json!(id);
        self.send(value).await;
        loop {
            let msg = self.next_fresh().await;
            if msg["id"] == json!(id) && (msg["type"] == "ack" || msg["type"] == "error") {
                return msg;
            }
            self.pending.push_back(msg);
        }
    }

    /// Waits for the next message matching `pred` (from pending first); others are kept.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return self.pending.remove(pos).unwrap();
        }
        loop {
            let msg = self.next_fresh().await;
            if pred(&msg) {
                return msg;
            }
            self.pending.push_back(msg);
        }
    }

    /// Collects `n` room events (chat, member, lock), in arrival order.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.wait_for(|m| m["type"] == "event").await);
        }
        out
    }

    /// Sends a chat message and returns its ack.
    pub async fn chat(&mut self, room: &str, ciphertext: &str) -> Value {
        self.request(
            json!({"type": "chat", "room_id": room, "kind": "text", "ciphertext": ciphertext}),
        )
        .await
    }

    /// Waits for the socket to be closed by the server; returns the close frame, if any.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next_raw().await {
                None => return None,
                Some(Message::Close(frame)) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Message::Text(t)) => self.pending.push_back(serde_json::from_str(&t).unwrap()),
                Some(_) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Whether a pushed message is a chat event.
pub fn is_chat(m: &Value) -> bool {
    m["type"] == "event" && m["content"]["type"] == "chat"
}
