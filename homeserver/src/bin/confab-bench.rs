//! `confab-bench`: the load generator. It starts a Confab homeserver (embedded Postgres, in a
//! temporary data directory) and, for reference, a **bare relay** — a lean tokio-tungstenite
//! server that only forwards frames between sockets of a room (no auth, no JSON, a 4 KiB read
//! buffer, one batched writer per socket) — each as its own process, drives them with real
//! WebSocket clients from this process, and prints throughput, latency percentiles, server CPU
//! per message, server memory, and the generator's own CPU (a saturated generator shows).
//!
//! ```text
//! confab-bench signal [--rooms 100] [--clients 8] [--secs 10] [--window 1] [--rate 0]
//!                     # signaling relay: closed loop with `--window` in flight per client, or
//!                     # open loop at `--rate` messages/s in all; the bare relay in the same run
//! confab-bench join   [--rooms 125] [--clients 8]                # every member subscribes at once
//! confab-bench chat   [--rooms 100] [--clients 8] [--secs 10] [--rate 0]  # persisted chat
//!                     # (each with a txn_id, as the web client sends; CONFAB_BENCH_NO_TXN=1: none)
//! confab-bench idle   [--conns 10000]           # memory of idle, subscribed sockets in rooms of 8
//! confab-bench hold   [--conns 50000] [--secs 60] [--heartbeat 15] [--workers 1]
//!                     # that many subscribed sockets in rooms of 8, from source addresses spread
//!                     # over 127.0.0.0/8, held with the server's pings answered; counts errors;
//!                     # with --workers, served by that many workers on one Postgres
//! confab-bench soak   [--minutes 10] [--rate 4000] [--rooms 100] [--clients 8]
//!                     # open-loop chat at about half the closed-loop capacity, a line a minute
//! confab-bench federation [--rooms 100] [--window 8] [--secs 10] [--rate 0]
//!                     # chat from users of B to users of A in rooms on B, through signed
//!                     # transactions; closed loop (`--window` in flight per room) or open loop
//! confab-bench hostile [--secs 10] [--rate 2000]
//!                     # local chat acks (open loop) with no attack, then while a hostile
//!                     # homeserver keeps 32 gapped transactions in flight and answers each
//!                     # gap-fill request after 5 s
//! confab-bench workers [--rooms 100] [--clients 8] [--secs 10] [--chat-rate 5000] [--signal-rate 10000]
//!                     # two workers on one Postgres against one process on the same Postgres:
//!                     # send-to-delivery of chat and signaling across workers, the bus's
//!                     # ceiling, singletons taken over after a SIGKILL
//! confab-bench all                                               # the README's figures
//!
//! CONFAB_BENCH_SERIES=1: the chat shapes and `workers` also print the latency per 250 ms, to
//! tell a tail spread over the run from one made of stalls.
//! confab-bench bare-relay --listen 127.0.0.1:0                   # (internal) the reference relay
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 200;

fn main() -> anyhow::Result<()> {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().cloned().unwrap_or_else(|| "all".into());
    let opt = |name: &str, default: u64| -> u64 {
        args.windows(2)
            .find(|w| w[0] == format!("--{name}"))
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(default)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command.as_str() {
            "bare-relay" => {
                let listen = args
                    .windows(2)
                    .find(|w| w[0] == "--listen")
                    .map(|w| w[1].clone())
                    .unwrap_or_else(|| "127.0.0.1:0".into());
                bare_relay(&listen).await
            }
            "signal" => {
                let (rooms, clients, secs) =
                    (opt("rooms", 100), opt("clients", 8), opt("secs", 10));
                let drive = match opt("rate", 0) {
                    0 => Drive::Closed(opt("window", 1) as usize),
                    rate => Drive::Open(rate),
                };
                signal_bench(rooms as usize, clients as usize, secs, drive).await
            }
            "join" => {
                join_storm_bench(opt("rooms", 125) as usize, opt("clients", 8) as usize).await
            }
            "chat" => {
                let (rooms, clients, secs, rate) = (
                    opt("rooms", 100),
                    opt("clients", 8),
                    opt("secs", 10),
                    opt("rate", 0),
                );
                chat_bench(rooms as usize, clients as usize, secs, rate).await
            }
            "idle" => idle_bench(opt("conns", 10_000) as usize).await,
            "hold" => {
                hold_bench(
                    opt("conns", 50_000) as usize,
                    opt("secs", 60),
                    opt("heartbeat", 15),
                    opt("workers", 1) as usize,
                )
                .await
            }
            "hold-part" => hold_part().await,
            "soak" => {
                soak_bench(
                    opt("minutes", 10),
                    opt("rate", 4_000),
                    opt("rooms", 100) as usize,
                    opt("clients", 8) as usize,
                )
                .await
            }
            "federation" => {
                federation_bench(
                    opt("rooms", 100) as usize,
                    opt("window", 8) as usize,
                    opt("secs", 10),
                    opt("rate", 0),
                )
                .await
            }
            "hostile" => hostile_bench(opt("secs", 10), opt("rate", 2_000)).await,
            "workers" => {
                workers_bench(
                    (
                        opt("rooms", 100) as usize,
                        opt("clients", 8) as usize,
                        opt("secs", 10),
                    ),
                    (opt("chat-rate", 5_000), opt("signal-rate", 10_000)),
                )
                .await
            }
            "all" => {
                print_machine();
                signal_bench(100, 8, 10, Drive::Closed(1)).await?;
                signal_bench(10, 8, 10, Drive::Closed(16)).await?;
                signal_bench(100, 8, 10, Drive::Open(10_000)).await?;
                join_storm_bench(125, 8).await?;
                idle_bench(10_000).await?;
                chat_bench(100, 8, 10, 0).await?;
                for _ in 0..3 {
                    chat_bench(100, 8, 10, 5_000).await?;
                }
                federation_bench(100, 8, 10, 0).await?;
                federation_bench(100, 1, 10, 1_000).await?;
                hostile_bench(10, 2_000).await?;
                // As many as this machine's file limit lets one process hold, when that is fewer.
                let most = hold_capacity();
                if most < 50_000 {
                    println!(
                        "\n(50,000 held sockets: not possible here, the hard RLIMIT_NOFILE allows \
                         {most} more descriptors per process; holding {most})"
                    );
                }
                hold_bench(most.min(50_000), 60, 15, 1).await?;
                // 50,000 over as many workers as the file limit needs, one machine.
                hold_bench(50_000, 60, 15, 50_000usize.div_ceil(most.max(1)).max(2)).await
            }
            other => bail!("unknown command {other:?}; see the doc comment of confab-bench"),
        }
    })
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores, {cpu}; generator on the same machine");
}

// ---- processes -----------------------------------------------------------------------------

/// A server process under test, killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    _data: Option<tempfile::TempDir>,
}

impl ServerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the process has used.
    fn cpu_seconds(&self) -> f64 {
        proc_stat(&self.pid().to_string()).map_or(0.0, |(_, ticks)| ticks) / clock_ticks()
    }

    /// Resident memory in bytes.
    fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGTERM, so Confab stops its embedded Postgres; then wait for it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn sibling_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server at {addr} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `confab serve` with its own embedded Postgres and limits raised for load.
async fn start_confab(extra: &[(&str, &str)]) -> anyhow::Result<ServerProcess> {
    let data = bench_dir()?;
    let mut server = spawn_confab(data.path(), extra).await?;
    server._data = Some(data);
    Ok(server)
}

/// A temporary directory that the embedded Postgres's unprivileged user may enter.
fn bench_dir() -> anyhow::Result<tempfile::TempDir> {
    let data = tempfile::Builder::new()
        .prefix("confab-bench-")
        .tempdir_in("/tmp")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(data)
}

/// Starts `confab serve` on data directory `data` (its signing key, and its embedded Postgres
/// unless `extra` gives a `database.url`) with limits raised for load.
async fn spawn_confab(
    data: &std::path::Path,
    extra: &[(&str, &str)],
) -> anyhow::Result<ServerProcess> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cmd = Command::new(sibling_binary("confab"));
    cmd.arg("serve")
        .env("CONFAB__SERVER__LISTEN", addr.to_string())
        .env("CONFAB__SERVER__NAME", addr.to_string())
        .env("CONFAB__SERVER__PUBLIC_URL", format!("http://{addr}"))
        .env("CONFAB__SERVER__DATA_DIR", data)
        // Several servers run at once; none of the benchmarks reads the admin listener.
        .env("CONFAB__ADMIN__LISTEN", "")
        .env("CONFAB__LOG__LEVEL", "warn")
        // The benchmark measures throughput, so the per-connection abuse limits are lifted.
        .env("CONFAB__LIMITS__MESSAGES_PER_SECOND", "1000000")
        .env("CONFAB__LIMITS__MESSAGE_BURST", "1000000")
        .env("CONFAB__LIMITS__MAX_CONNECTIONS_PER_USER", "100000")
        .env("CONFAB__LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "1000000")
        .env("CONFAB__LIMITS__MAX_ROOMS_PER_USER", "100000")
        .env("CONFAB__LIMITS__SESSIONS_PER_MINUTE", "1000000")
        .env("CONFAB__LIMITS__JOIN_FAILURES_PER_MINUTE", "1000000")
        .env("CONFAB__DATABASE__POOL_SIZE", "16")
        .stdout(Stdio::null());
    cmd.stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .context("start confab (build it: cargo build --release)")?;
    wait_listening(addr).await;
    // Health means the database answers too.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "confab never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ServerProcess {
        child,
        addr,
        _data: None,
    })
}

async fn start_bare_relay() -> anyhow::Result<ServerProcess> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["bare-relay", "--listen", &addr.to_string()])
        .spawn()?;
    wait_listening(addr).await;
    Ok(ServerProcess {
        child,
        addr,
        _data: None,
    })
}

// ---- the bare relay ------------------------------------------------------------------------

/// The reference: `/room/<n>/<index>` joins socket `index` to room `n`; a binary frame whose
/// first byte is a target index is forwarded, as is, to that socket of the room. As lean as a
/// relay of this shape gets: no auth, no envelope, a 4 KiB read buffer, routing through a map
/// behind a lock never held across an await, and one writer per socket that writes every frame
/// waiting and then flushes once.
// tungstenite fixes the handshake callback's signature, error type included.
#[allow(clippy::result_large_err)]
async fn bare_relay(listen: &str) -> anyhow::Result<()> {
    type Peers = Arc<std::sync::RwLock<HashMap<(u32, u8), mpsc::UnboundedSender<Message>>>>;
    let peers: Peers = Arc::default();
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        // Small frames must go out at once, as browsers' and Confab's sockets do.
        let _ = stream.set_nodelay(true);
        let peers = peers.clone();
        tokio::spawn(async move {
            let mut path = String::new();
            let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                            res| {
                path = req.uri().path().to_owned();
                Ok(res)
            };
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(16 * 1024);
            let Ok(ws) =
                tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                    .await
            else {
                return;
            };
            let mut parts = path.trim_start_matches("/room/").split('/');
            let room: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let me: u8 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
            peers.write().expect("lock").insert((room, me), tx);
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                    while let Ok(m) = rx.try_recv() {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Binary(data) = &msg
                    && let Some(&target) = data.first()
                    && let Some(peer) = peers.read().expect("lock").get(&(room, target))
                {
                    let _ = peer.send(msg.clone());
                }
            }
            peers.write().expect("lock").remove(&(room, me));
        });
    }
}

// ---- REST setup against Confab -------------------------------------------------------------

struct Member {
    token: String,
    user_id: String,
    device_id: String,
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut req = http
        .post(format!("{base}/_confab/client/v1{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Creates `rooms` rooms of `clients` members each (the first is the host).
/// Sets up `rooms` rooms of `clients` members each (sessions, the room, an invite, the joins),
/// eight rooms at a time; in room order.
async fn setup_rooms(addr: SocketAddr, rooms: usize, clients: usize) -> Vec<(String, Vec<Member>)> {
    let http = reqwest::Client::new();
    futures_util::stream::iter(0..rooms)
        .map(|r| setup_room(&http, addr, r, clients))
        .buffered(8)
        .collect()
        .await
}

async fn setup_room(
    http: &reqwest::Client,
    addr: SocketAddr,
    r: usize,
    clients: usize,
) -> (String, Vec<Member>) {
    let base = format!("http://{addr}");
    let members = setup_users(addr, clients, &format!("r{r}c")).await;
    let room = post(http, &base, "/rooms", Some(&members[0].token), json!({})).await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let invite = post(
        http,
        &base,
        &format!("/rooms/{room_id}/invites"),
        Some(&members[0].token),
        json!({}),
    )
    .await;
    for m in &members[1..] {
        post(
            http,
            &base,
            &format!("/rooms/{room_id}/join"),
            Some(&m.token),
            json!({"invite_token": invite["token"]}),
        )
        .await;
    }
    (room_id, members)
}

/// The generator's sockets read into 4 KiB, as the servers do: tungstenite's default of 128 KiB
/// is zeroed before every read, which made `memset` a third of the generator's CPU in the chat
/// benchmark and the generator, not the server, the limit of the closed-loop shapes.
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects (without Nagle's algorithm, as browsers do), authenticates and (optionally)
/// subscribes, skipping the backlog.
async fn confab_client(addr: SocketAddr, m: &Member, room: Option<&str>) -> Ws {
    confab_client_from(addr, m, room, None).await
}

/// [`confab_client`] from a given loopback source address (so that many sockets do not run out
/// of one address's ephemeral ports).
async fn confab_client_from(
    addr: SocketAddr,
    m: &Member,
    room: Option<&str>,
    from: Option<std::net::Ipv4Addr>,
) -> Ws {
    // Naming the room lets the server serve the room's sockets on one thread, as the web
    // client does (the homeserver's `ws::placement`).
    let url = match room {
        Some(room) => format!("ws://{addr}/_confab/client/v1/ws?room={room}"),
        None => format!("ws://{addr}/_confab/client/v1/ws"),
    };
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(from) = from {
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind a source address");
    }
    let stream = socket.connect(addr).await.expect("connect");
    // Without Nagle's algorithm, as browsers do.
    stream.set_nodelay(true).expect("nodelay");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(client_config()),
    )
    .await
    .expect("handshake");
    ws.send(Message::text(
        json!({"type": "auth", "id": 1, "token": m.token}).to_string(),
    ))
    .await
    .unwrap();
    wait_reply(&mut ws, 1).await;
    if let Some(room) = room {
        ws.send(Message::text(
            json!({"type": "subscribe", "id": 2, "room_id": room, "since": i64::MAX / 2})
                .to_string(),
        ))
        .await
        .unwrap();
        wait_reply(&mut ws, 2).await;
    }
    ws
}

async fn wait_reply(ws: &mut Ws, id: u64) {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if v["id"] == json!(id) {
                assert_eq!(v["type"], "ack", "{v}");
                return;
            }
        }
    }
    panic!("socket closed before reply {id}");
}

// ---- measurements --------------------------------------------------------------------------

#[derive(Default)]
struct Samples {
    micros: std::sync::Mutex<Vec<u32>>,
    /// With `CONFAB_BENCH_SERIES` set: when each sample was taken, in ms since the first, so
    /// that [`Samples::print_series`] can show whether the tail is spread or comes in stalls.
    at_ms: std::sync::Mutex<Vec<(u32, u32)>>,
}

static SERIES: std::sync::LazyLock<Option<Instant>> =
    std::sync::LazyLock::new(|| std::env::var_os("CONFAB_BENCH_SERIES").map(|_| Instant::now()));

impl Samples {
    fn push(&self, d: Duration) {
        let micros = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        if let Ok(mut v) = self.micros.lock() {
            v.push(micros);
        }
        if let Some(start) = *SERIES {
            let at = u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX);
            if let Ok(mut v) = self.at_ms.lock() {
                v.push((at, micros));
            }
        }
    }

    /// With `CONFAB_BENCH_SERIES` set, one line per 250 ms: samples, p99 and the largest.
    fn print_series(&self) {
        let Ok(v) = self.at_ms.lock() else { return };
        let mut windows: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for &(at, micros) in v.iter() {
            windows.entry(at / 250).or_default().push(micros);
        }
        for (w, mut lat) in windows {
            lat.sort_unstable();
            let p99 = lat[(lat.len() - 1) * 99 / 100];
            println!(
                "      {:>7.2} s  {:>6} samples  p99 {:>7.2} ms  max {:>7.2} ms",
                f64::from(w) / 4.0,
                lat.len(),
                f64::from(p99) / 1000.0,
                f64::from(lat[lat.len() - 1]) / 1000.0
            );
        }
    }

    /// Takes the samples so far, leaving none.
    fn take(&self) -> Samples {
        let taken = self
            .micros
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let at_ms = self
            .at_ms
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        Samples {
            micros: std::sync::Mutex::new(taken),
            at_ms: std::sync::Mutex::new(at_ms),
        }
    }

    fn percentiles(&self) -> (f64, f64, f64, usize) {
        let mut v = self.micros.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        let at = |p: f64| {
            if v.is_empty() {
                0.0
            } else {
                f64::from(v[((v.len() as f64 - 1.0) * p) as usize]) / 1000.0
            }
        };
        (at(0.5), at(0.99), at(0.999), v.len())
    }
}

struct Window {
    measuring: AtomicBool,
    messages: AtomicU64,
}

/// Runs the load for 2 s of warm-up and `secs` of measurement, sampling the server's CPU.
async fn measure(server: &ServerProcess, window: &Window, secs: u64) -> (f64, f64) {
    let m = measure_all(server, window, secs).await;
    (m.elapsed, m.server)
}

/// CPU seconds spent during a measurement, by whom.
struct Spent {
    elapsed: f64,
    server: f64,
    /// The server's child processes: its embedded Postgres.
    postgres: f64,
    generator: f64,
}

/// [`measure`], with the CPU of the server's embedded Postgres and of the generator as well:
/// the persisted-chat shapes share the two cores three ways.
async fn measure_all(server: &ServerProcess, window: &Window, secs: u64) -> Spent {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, pg0, gen0) = (
        server.cpu_seconds(),
        descendants_cpu_seconds(server.pid()),
        own_cpu_seconds(),
    );
    window.measuring.store(true, Ordering::Release);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    window.measuring.store(false, Ordering::Release);
    Spent {
        elapsed: t0.elapsed().as_secs_f64(),
        server: server.cpu_seconds() - cpu0,
        postgres: descendants_cpu_seconds(server.pid()) - pg0,
        generator: own_cpu_seconds() - gen0,
    }
}

/// CPU seconds (user + system) of every process descended from `pid`, `pid` itself excluded.
fn descendants_cpu_seconds(pid: u32) -> f64 {
    let mut procs: Vec<(u32, u32, f64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, ticks)) = proc_stat(&p.to_string()) {
            procs.push((p, ppid, ticks));
        }
    }
    // Walk down from `pid`: each process found is a parent to look for in turn.
    let mut parents = vec![pid];
    let mut total = 0.0;
    while let Some(parent) = parents.pop() {
        for &(p, ppid, ticks) in &procs {
            if ppid == parent {
                parents.push(p);
                total += ticks;
            }
        }
    }
    total / clock_ticks()
}

fn payload(start: Instant) -> String {
    let nanos = start.elapsed().as_nanos();
    let mut p = format!("{nanos}:");
    while p.len() < PAYLOAD {
        p.push('x');
    }
    p
}

fn parse_sent(start: Instant, payload: &str) -> Option<Duration> {
    let nanos: u128 = payload.split(':').next()?.parse().ok()?;
    Some(
        start
            .elapsed()
            .saturating_sub(Duration::from_nanos(nanos as u64)),
    )
}

// ---- signaling ----------------------------------------------------------------------------

/// The generator's own CPU seconds (user + system), to show when it, not the server, is the
/// limit.
fn own_cpu_seconds() -> f64 {
    proc_stat("self").map_or(0.0, |(_, ticks)| ticks) / clock_ticks()
}

/// A process's parent and its CPU (user + system, in clock ticks), from `/proc/{pid}/stat`.
fn proc_stat(pid: &str) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: the parent is the 4th, utime and stime are
    // the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields
        .get(11..13)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Some((ppid, ticks))
}

/// How the generator drives a signaling run.
#[derive(Clone, Copy)]
enum Drive {
    /// Each client keeps `n` pings in flight to the next client of its room's ring, which
    /// answers each; a ping's round trip is two relayed messages.
    Closed(usize),
    /// Every client sends one-way signals to the next at a fixed share of `rate` messages/s in
    /// all; the latency is one way.
    Open(u64),
}

/// Signaling, the bare relay and Confab in the same run, one after the other.
async fn signal_bench(rooms: usize, clients: usize, secs: u64, drive: Drive) -> anyhow::Result<()> {
    let mode = match drive {
        Drive::Closed(n) => format!("closed loop, {n} in flight per client"),
        Drive::Open(rate) => format!("open loop at {rate} msg/s in all"),
    };
    println!(
        "\n== signaling relay: {rooms} rooms x {clients} clients, {PAYLOAD}-byte payloads, {mode}, {secs} s =="
    );
    let bare = {
        let server = start_bare_relay().await?;
        let mut sockets = Vec::new();
        for r in 0..rooms {
            let mut ring = Vec::new();
            for c in 0..clients {
                let (ws, _) = tokio_tungstenite::connect_async_with_config(
                    format!("ws://{}/room/{r}/{c}", server.addr),
                    Some(client_config()),
                    true,
                )
                .await?;
                ring.push(ws);
            }
            sockets.push(ring);
        }
        run_signal(&server, sockets, secs, drive, bare_frames).await
    };
    let confab = {
        let server = start_confab(&[]).await?;
        let setup = setup_rooms(server.addr, rooms, clients).await;
        let mut sockets = Vec::new();
        let mut rings = Vec::new();
        for (room_id, members) in &setup {
            let mut ring = Vec::new();
            for m in members {
                ring.push(confab_client(server.addr, m, Some(room_id)).await);
            }
            sockets.push(ring);
            rings.push((
                room_id.clone(),
                members
                    .iter()
                    .map(|m| (m.user_id.clone(), m.device_id.clone()))
                    .collect::<Vec<_>>(),
            ));
        }
        let frames =
            move |room: usize, from: usize, to: usize| confab_frames(&rings, room, from, to);
        run_signal(&server, sockets, secs, drive, frames).await
    };
    report("bare relay", &bare);
    report("confab", &confab);
    println!(
        "confab/bare: throughput {:.0} %, server CPU per message {:.2}x, p99 {:.2}x",
        100.0 * confab.rate / bare.rate.max(1.0),
        confab.cpu_us_per_msg / bare.cpu_us_per_msg.max(0.001),
        confab.p99 / bare.p99.max(0.001)
    );
    Ok(())
}

/// Builds the frame a client sends another, from its kind byte and body; and reads a received
/// frame's kind byte and body.
trait SignalFrames: Send + Sync + 'static {
    fn frame(&self, kind: u8, body: &str) -> Message;
}

/// The bare relay's frames: `[target, kind]` and the body.
struct BareFrame(u8);

impl SignalFrames for BareFrame {
    fn frame(&self, kind: u8, body: &str) -> Message {
        let mut v = Vec::with_capacity(2 + body.len());
        v.extend_from_slice(&[self.0, kind]);
        v.extend_from_slice(body.as_bytes());
        Message::binary(v)
    }
}

fn bare_frames(_room: usize, _from: usize, to: usize) -> BareFrame {
    BareFrame(to as u8)
}

/// Confab's `signal` request to one device, built once up to the payload.
struct ConfabFrame(String);

impl SignalFrames for ConfabFrame {
    fn frame(&self, kind: u8, body: &str) -> Message {
        let mut text = String::with_capacity(self.0.len() + body.len() + 3);
        text.push_str(&self.0);
        text.push(kind as char);
        text.push_str(body);
        text.push_str("\"}");
        Message::text(text)
    }
}

fn confab_frames(
    rings: &[(String, Vec<(String, String)>)],
    room: usize,
    _from: usize,
    to: usize,
) -> ConfabFrame {
    let (room_id, ring) = &rings[room];
    let (user, device) = &ring[to];
    ConfabFrame(format!(
        r#"{{"type":"signal","room_id":"{room_id}","to":{{"user_id":"{user}","device_id":"{device}"}},"payload":""#
    ))
}

/// The kind byte and body of a received signal: the bare relay's binary frame, or the
/// `payload` of Confab's `signal` frame (found without parsing the rest of the JSON, so that
/// the generator stays cheap).
fn received(msg: &Message) -> Option<(u8, &str)> {
    match msg {
        Message::Binary(data) if data.len() >= 2 => {
            Some((data[1], std::str::from_utf8(&data[2..]).ok()?))
        }
        Message::Text(text) => {
            let text: &str = text;
            if !text.starts_with(r#"{"type":"signal""#) {
                return None;
            }
            let at = text.find(r#""payload":""#)? + 11;
            let rest = &text[at..];
            let end = rest.find('"')?;
            let (kind, body) = rest[..end].split_at(1);
            Some((kind.as_bytes()[0], body))
        }
        _ => None,
    }
}

/// Drives `sockets` (rooms of clients in ring order) for 2 s of warm-up and `secs` of
/// measurement; `frames(room, from, to)` builds a client's frames for another.
async fn run_signal<F: SignalFrames>(
    server: &ServerProcess,
    sockets: Vec<Vec<Ws>>,
    secs: u64,
    drive: Drive,
    frames: impl Fn(usize, usize, usize) -> F,
) -> Figures {
    let window = Arc::new(Window {
        measuring: AtomicBool::new(false),
        messages: AtomicU64::new(0),
    });
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let total: usize = sockets.iter().map(Vec::len).sum();
    let mut tasks = Vec::new();
    for (r, ring) in sockets.into_iter().enumerate() {
        let n = ring.len();
        for (c, ws) in ring.into_iter().enumerate() {
            let to_next = frames(r, c, (c + 1) % n);
            let to_prev = frames(r, c, (c + n - 1) % n);
            let (window, samples, stop) = (window.clone(), samples.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                let to_next = Arc::new(to_next);
                match drive {
                    Drive::Closed(in_flight) => {
                        for _ in 0..in_flight {
                            let _ = sink.feed(to_next.frame(b'p', &payload(start))).await;
                        }
                        let _ = sink.flush().await;
                    }
                    Drive::Open(rate) => {
                        // A steady share of the rate, phases spread, independent of receipts.
                        let period = Duration::from_secs_f64(total as f64 / rate as f64);
                        let (to_next, ticker_stop) = (to_next.clone(), stop.clone());
                        let (sink, sink_back) = {
                            let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                            (tx, async move {
                                while let Some(m) = rx.recv().await {
                                    if sink.send(m).await.is_err() {
                                        return;
                                    }
                                }
                            })
                        };
                        tokio::spawn(sink_back);
                        tokio::spawn(async move {
                            tokio::time::sleep(period.mul_f64(rand::random::<f64>())).await;
                            let mut tick = tokio::time::interval(period);
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                            while !ticker_stop.load(Ordering::Acquire) {
                                tick.tick().await;
                                if sink.send(to_next.frame(b'o', &payload(start))).is_err() {
                                    return;
                                }
                            }
                            sink.closed().await;
                        });
                        while let Some(Ok(msg)) = stream.next().await {
                            if stop.load(Ordering::Acquire) {
                                return;
                            }
                            if let Some((b'o', body)) = received(&msg)
                                && window.measuring.load(Ordering::Acquire)
                            {
                                window.messages.fetch_add(1, Ordering::Relaxed);
                                if let Some(latency) = parse_sent(start, body) {
                                    samples.push(latency);
                                }
                            }
                        }
                        return;
                    }
                }
                while let Some(Ok(msg)) = stream.next().await {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Some((kind, body)) = received(&msg) else {
                        continue;
                    };
                    if window.measuring.load(Ordering::Acquire) {
                        window.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    if kind == b'p' {
                        let _ = sink.send(to_prev.frame(b'q', body)).await;
                    } else {
                        if window.measuring.load(Ordering::Acquire)
                            && let Some(rtt) = parse_sent(start, body)
                        {
                            samples.push(rtt);
                        }
                        let _ = sink.send(to_next.frame(b'p', &payload(start))).await;
                    }
                }
            }));
        }
    }
    let own0 = own_cpu_seconds();
    let (elapsed, cpu) = measure(server, &window, secs).await;
    let own = own_cpu_seconds() - own0;
    stop.store(true, Ordering::Release);
    let rss = server.rss_bytes();
    for t in &tasks {
        t.abort();
    }
    let mut f = figures(&window, &samples, elapsed, cpu, rss);
    // `measure` includes its 2 s warm-up in the generator's time.
    f.generator_cpu = own / (elapsed + 2.0) * 100.0;
    f.server_cpu = cpu / elapsed * 100.0;
    f
}

struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    samples: usize,
    cpu_us_per_msg: f64,
    rss_mib: f64,
    /// Percent of one core.
    server_cpu: f64,
    generator_cpu: f64,
}

fn report(name: &str, f: &Figures) {
    println!(
        "{name:>10}: {:>9.0} msg/s  latency p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} samples)  server CPU {:.2} us/msg ({:.0} % of a core)  RSS {:.0} MiB  generator CPU {:.0} % of a core",
        f.rate,
        f.p50,
        f.p99,
        f.p999,
        f.samples,
        f.cpu_us_per_msg,
        f.server_cpu,
        f.rss_mib,
        f.generator_cpu
    );
}

fn figures(window: &Window, samples: &Samples, elapsed: f64, cpu: f64, rss: u64) -> Figures {
    let messages = window.messages.load(Ordering::Relaxed) as f64;
    let (p50, p99, p999, n) = samples.percentiles();
    Figures {
        rate: messages / elapsed,
        p50,
        p99,
        p999,
        samples: n,
        cpu_us_per_msg: if messages > 0.0 {
            cpu * 1e6 / messages
        } else {
            0.0
        },
        rss_mib: rss as f64 / (1024.0 * 1024.0),
        server_cpu: cpu / elapsed * 100.0,
        generator_cpu: 0.0,
    }
}

// ---- joining ------------------------------------------------------------------------------

/// `rooms` rooms, each with a host and `clients - 1` guests holding its invite (made
/// beforehand); then every one of them at once joins (REST, the guests), opens a socket,
/// authenticates and subscribes. Reported: the time until every one is subscribed.
async fn join_storm_bench(rooms: usize, clients: usize) -> anyhow::Result<()> {
    println!(
        "\n== join storm: {} clients into {rooms} rooms at once (join, socket, auth, subscribe) ==",
        rooms * clients
    );
    let server = start_confab(&[]).await?;
    let (addr, base, http) = (
        server.addr,
        format!("http://{}", server.addr),
        reqwest::Client::new(),
    );
    let mut plan = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let members = setup_users(addr, clients, &format!("j{r}c")).await;
        let room = post(&http, &base, "/rooms", Some(&members[0].token), json!({})).await;
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        let path = format!("/rooms/{room_id}/invites");
        let invite = post(&http, &base, &path, Some(&members[0].token), json!({})).await;
        plan.push((
            room_id,
            invite["token"].as_str().unwrap().to_owned(),
            members,
        ));
    }
    let (cpu0, pg0, gen0) = (
        server.cpu_seconds(),
        descendants_cpu_seconds(server.pid()),
        own_cpu_seconds(),
    );
    let start = Instant::now();
    let done = Arc::new(Samples::default());
    let mut joins = Vec::new();
    for (room_id, invite, members) in plan {
        for (i, m) in members.into_iter().enumerate() {
            let (room_id, invite, done, base, http) = (
                room_id.clone(),
                invite.clone(),
                done.clone(),
                base.clone(),
                http.clone(),
            );
            joins.push(tokio::spawn(async move {
                if i > 0 {
                    let path = format!("/rooms/{room_id}/join");
                    post(
                        &http,
                        &base,
                        &path,
                        Some(&m.token),
                        json!({"invite_token": invite}),
                    )
                    .await;
                }
                let ws = confab_client(addr, &m, Some(&room_id)).await;
                done.push(start.elapsed());
                ws
            }));
        }
    }
    let mut held = Vec::new();
    for j in joins {
        held.push(j.await?);
    }
    let all = start.elapsed().as_secs_f64();
    let (server_cpu, pg_cpu, gen_cpu) = (
        server.cpu_seconds() - cpu0,
        descendants_cpu_seconds(server.pid()) - pg0,
        own_cpu_seconds() - gen0,
    );
    let (p50, p99, _, n) = done.percentiles();
    println!(
        "    confab: {n} joined and subscribed in {all:.2} s (each done: p50 {p50:.0} ms, p99 {p99:.0} ms after the start)  \
         CPU: server {:.0} %, Postgres {:.0} %, generator {:.0} % of a core",
        server_cpu / all * 100.0,
        pg_cpu / all * 100.0,
        gen_cpu / all * 100.0,
    );
    drop(held);
    Ok(())
}

// ---- persisted chat -----------------------------------------------------------------------

/// Every client sends chat events and waits for each ack (closed loop, `rate` 0) or sends at a
/// fixed total `rate` (open loop); reported: committed events per second, ack latency, and
/// deliveries to the other members.
async fn chat_bench(rooms: usize, clients: usize, secs: u64, rate: u64) -> anyhow::Result<()> {
    let mode = if rate == 0 {
        "closed loop".to_owned()
    } else {
        format!("open loop at {rate} events/s")
    };
    println!(
        "\n== persisted chat: {rooms} rooms x {clients} clients, {PAYLOAD}-byte ciphertexts, {mode}, {secs} s =="
    );
    let server = start_confab(&[]).await?;
    let load = ChatLoad::start(server.addr, rooms, clients, rate).await;
    let spent = measure_all(&server, &load.window, secs).await;
    let elapsed = spent.elapsed;
    let rss = server.rss_bytes();
    load.stop();
    drop(server);
    let f = figures(&load.window, &load.samples, elapsed, spent.server, rss);
    println!(
        "    confab: {:>9.0} events/s committed and acked, {:.0} deliveries/s to other members  ack p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} samples)  server CPU {:.1} us/event ({:.0} % of a core)  Postgres {:.1} us/event ({:.0} %)  generator {:.0} % of a core  RSS {:.0} MiB",
        f.rate,
        load.delivered.load(Ordering::Relaxed) as f64 / elapsed,
        f.p50,
        f.p99,
        f.p999,
        f.samples,
        f.cpu_us_per_msg,
        f.server_cpu,
        spent.postgres * 1e6 / (f.rate * elapsed).max(1.0),
        spent.postgres / elapsed * 100.0,
        spent.generator / elapsed * 100.0,
        f.rss_mib
    );
    load.samples.print_series();
    Ok(())
}

/// Chat traffic from `clients` members in each of `rooms` rooms: closed loop (each sends its
/// next message on the ack of the last) when `rate` is 0, else an open loop of `rate` events/s
/// in all.
struct ChatLoad {
    window: Arc<Window>,
    samples: Arc<Samples>,
    delivered: Arc<AtomicU64>,
    /// Error replies from the server.
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChatLoad {
    async fn start(addr: SocketAddr, rooms: usize, clients: usize, rate: u64) -> Self {
        let setup = setup_rooms(addr, rooms, clients).await;
        let window = Arc::new(Window {
            measuring: AtomicBool::new(false),
            messages: AtomicU64::new(0),
        });
        let delivered = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(Samples::default());
        let stop = Arc::new(AtomicBool::new(false));
        let per_client = if rate == 0 {
            0.0
        } else {
            rate as f64 / (rooms * clients) as f64
        };
        let mut tasks = Vec::new();
        for (room_id, members) in &setup {
            for m in members {
                let ws = confab_client(addr, m, Some(room_id)).await;
                let (window, samples, stop, delivered, errors) = (
                    window.clone(),
                    samples.clone(),
                    stop.clone(),
                    delivered.clone(),
                    errors.clone(),
                );
                let room_id = room_id.clone();
                let mine = m.user_id.clone();
                tasks.push(tokio::spawn(async move {
                    let (sink, mut stream) = ws.split();
                    let sink = Arc::new(Mutex::new(sink));
                    let sent_at: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
                    let ciphertext = "c".repeat(PAYLOAD);
                    let send = {
                        let (sink, sent_at, room_id) = (sink.clone(), sent_at.clone(), room_id.clone());
                        move |id: u64| {
                            let (sink, sent_at, room_id, ciphertext) = (sink.clone(), sent_at.clone(), room_id.clone(), ciphertext.clone());
                            async move {
                                if let Ok(mut s) = sent_at.lock() {
                                    s.insert(id, Instant::now());
                                }
                                // With a transaction id, as the web client sends every message.
                                let mut msg = json!({"type": "chat", "id": id, "room_id": room_id, "kind": "text", "ciphertext": ciphertext, "txn_id": format!("t{id}")});
                                if std::env::var_os("CONFAB_BENCH_NO_TXN").is_some() { msg.as_object_mut().unwrap().remove("txn_id"); }
                                let _ = sink.lock().await.send(Message::text(msg.to_string())).await;
                            }
                        }
                    };
                    let mut next_id = 10u64;
                    if per_client > 0.0 {
                        // Open loop: a steady rate, independent of the acks; spread the clients' phases.
                        let period = Duration::from_secs_f64(1.0 / per_client);
                        let send = send.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(period.mul_f64(rand::random::<f64>())).await;
                            let mut tick = tokio::time::interval(period);
                            let mut id = 1_000_000u64;
                            while !stop.load(Ordering::Acquire) {
                                tick.tick().await;
                                id += 1;
                                send(id).await;
                            }
                        });
                    } else {
                        send(next_id).await;
                    }
                    while let Some(Ok(msg)) = stream.next().await {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Message::Text(text) = msg else { continue };
                        let text: &str = &text;
                        // Read without parsing the whole frame, so the generator stays cheap:
                        // seven deliveries arrive for every event sent.
                        if text.starts_with(r#"{"type":"ack""#) {
                            let id = text
                                .split_once(r#""id":"#)
                                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                                .and_then(|n| n.parse::<u64>().ok())
                                .unwrap_or(0);
                            let t = sent_at.lock().ok().and_then(|mut s| s.remove(&id));
                            if window.measuring.load(Ordering::Acquire) {
                                window.messages.fetch_add(1, Ordering::Relaxed);
                                if let Some(t) = t {
                                    samples.push(t.elapsed());
                                }
                            }
                            if per_client == 0.0 {
                                next_id += 1;
                                send(next_id).await;
                            }
                        } else if text.starts_with(r#"{"type":"event""#) {
                            if !sent_by(text, &mine) && window.measuring.load(Ordering::Acquire) {
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        } else if text.starts_with(r#"{"type":"error""#) {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("error: {text}");
                        }
                    }
                }));
            }
        }
        Self {
            window,
            samples,
            delivered,
            errors,
            stop,
            tasks,
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for ChatLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether an event frame's sender is `user_id`: its `sender` field comes before the content, so
/// the frame is scanned only that far. (A substring search for the whole field over every frame
/// was a seventh of the generator's CPU in the chat benchmark.)
fn sent_by(frame: &str, user_id: &str) -> bool {
    const FIELD: &[u8] = br#""sender":""#;
    frame
        .as_bytes()
        .windows(FIELD.len())
        .position(|w| w == FIELD)
        .is_some_and(|i| {
            frame[i + FIELD.len()..]
                .strip_prefix(user_id)
                .is_some_and(|rest| rest.starts_with('"'))
        })
}

/// The soak: open-loop chat at `rate` events/s for `minutes`, with a line a minute (events,
/// errors, ack latency, server memory) and a verdict on memory growth and latency drift.
async fn soak_bench(minutes: u64, rate: u64, rooms: usize, clients: usize) -> anyhow::Result<()> {
    println!(
        "\n== soak: persisted chat, open loop at {rate} events/s, {rooms} rooms x {clients} clients, {minutes} min =="
    );
    let server = start_confab(&[]).await?;
    let load = ChatLoad::start(server.addr, rooms, clients, rate).await;
    // Warm-up: caches, pools and allocator arenas reach their working size.
    tokio::time::sleep(Duration::from_secs(10)).await;
    load.window.measuring.store(true, Ordering::Release);
    let mut rows = Vec::new();
    for minute in 1..=minutes {
        let cpu0 = server.cpu_seconds();
        let errors0 = load.errors.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let events = load.window.messages.swap(0, Ordering::Relaxed);
        let samples = load.samples.take();
        let (p50, p99, p999, _) = samples.percentiles();
        let errors = load.errors.load(Ordering::Relaxed) - errors0;
        let rss = server.rss_bytes() as f64 / (1024.0 * 1024.0);
        let cpu = (server.cpu_seconds() - cpu0) / 60.0 * 100.0;
        println!(
            "    minute {minute:>3}: {:>7.0} events/s acked  errors {errors}  ack p50 {p50:.2} ms  p99 {p99:.2} ms  p99.9 {p999:.2} ms  server RSS {rss:.1} MiB  CPU {cpu:.0}%",
            events as f64 / 60.0
        );
        rows.push((events, errors, p99, rss));
    }
    load.stop();
    drop(server);
    let total: u64 = rows.iter().map(|r| r.0).sum();
    let errors: u64 = rows.iter().map(|r| r.1).sum();
    let (first_rss, last_rss) = (
        rows.first().map_or(0.0, |r| r.3),
        rows.last().map_or(0.0, |r| r.3),
    );
    let p99s: Vec<f64> = rows.iter().map(|r| r.2).collect();
    let (lo, hi) = p99s
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    println!(
        "    soak: {total} events acked, {errors} errors; server RSS {first_rss:.1} MiB after minute 1, {last_rss:.1} MiB after minute {minutes} ({:+.1} MiB); per-minute p99 between {lo:.2} and {hi:.2} ms",
        last_rss - first_rss
    );
    Ok(())
}

// ---- idle connections ---------------------------------------------------------------------

/// Opens `conns` idle sockets in rooms of 8, on the bare relay and then on Confab
/// (authenticated and subscribed), and reports each server's resident memory after all are open
/// and 5 s idle, minus its memory before the first one, per socket.
async fn idle_bench(conns: usize) -> anyhow::Result<()> {
    println!("\n== idle sockets: {conns} in rooms of 8 ==");
    let bare = start_bare_relay().await?;
    let before = bare.rss_bytes();
    let mut held = Vec::with_capacity(conns);
    for i in 0..conns {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            format!("ws://{}/room/{}/{}", bare.addr, i / 8, i % 8),
            Some(client_config()),
            false,
        )
        .await?;
        held.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let bare_growth = bare.rss_bytes().saturating_sub(before);
    drop(held);
    drop(bare);

    let server = start_confab(&[]).await?;
    let setup = setup_rooms(server.addr, conns.div_ceil(8), 8).await;
    let before = server.rss_bytes();
    let mut held = Vec::with_capacity(conns);
    'rooms: for (room_id, members) in &setup {
        for m in members {
            if held.len() == conns {
                break 'rooms;
            }
            held.push(confab_client(server.addr, m, Some(room_id)).await);
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = server.rss_bytes();
    let growth = after.saturating_sub(before);
    println!(
        "bare relay: {:.1} KiB per socket ({:.0} MiB for {conns})",
        bare_growth as f64 / 1024.0 / conns as f64,
        bare_growth as f64 / 1048576.0
    );
    println!(
        "    confab: {:.1} KiB per socket ({:.0} MiB for {conns}; total RSS {:.0} MiB)",
        growth as f64 / 1024.0 / conns as f64,
        growth as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    drop(held);
    Ok(())
}

/// The most sockets one process of [`hold_bench`] can hold: a part of the generator holds one
/// descriptor per socket and so does a server, and both inherit this process's limit, which
/// only CAP_SYS_RESOURCE can raise past its hard value. A thousand are kept for everything else
/// (each is a fresh process: what this one still has open from earlier shapes does not count).
fn hold_capacity() -> usize {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(_, hard)| hard);
    usize::try_from(hard)
        .unwrap_or(usize::MAX)
        .saturating_sub(1_000)
}

/// Holds `conns` authenticated, subscribed sockets in rooms of 8 for `secs` while the server
/// pings each every `heartbeat` seconds and drops any that does not answer; every socket is read
/// throughout, as a browser's is, so that pings are answered. Reported: sockets that ended or
/// failed before the end (the figure that must be 0), pings answered, server memory and CPU.
///
/// One process can hold no more sockets than its file limit allows, and that holds for the
/// generator too: the sockets are opened by child processes ([`hold_part`]) of at most that many
/// each, and with `workers` > 1 served by that many `confab serve` workers on one Postgres, the
/// members of each room spread over them in turn (as a load balancer without affinity does).
async fn hold_bench(conns: usize, secs: u64, heartbeat: u64, workers: usize) -> anyhow::Result<()> {
    let shape = if workers > 1 {
        format!("{workers} workers on one Postgres, the members of each room spread over them")
    } else {
        "one process".to_owned()
    };
    println!(
        "\n== held sockets: {conns} in rooms of 8 for {secs} s, server heartbeat every {heartbeat} s; {shape} =="
    );
    let per_process = hold_capacity();
    let per_server = conns.div_ceil(workers.max(1));
    anyhow::ensure!(
        per_server <= per_process,
        "{per_server} sockets a server need as many file descriptors, but the hard RLIMIT_NOFILE \
         allows at most {per_process} a process (raising it needs CAP_SYS_RESOURCE); use more \
         --workers"
    );
    let heartbeat_s = format!("{heartbeat}s");
    let timeout_s = format!("{}s", heartbeat * 3);
    let heartbeats = [
        (
            "CONFAB__WEBSOCKET__HEARTBEAT_INTERVAL",
            heartbeat_s.as_str(),
        ),
        ("CONFAB__WEBSOCKET__CLIENT_TIMEOUT", timeout_s.as_str()),
    ];
    let (servers, _pg, _dir) = if workers > 1 {
        let pg = PgCluster::start()?;
        let url = pg.database("hold").await?;
        let dir = bench_dir()?;
        let name = format!("127.0.0.1:{}", free_port());
        let mut servers = Vec::with_capacity(workers);
        for i in 0..workers {
            let id = format!("w{}", i + 1);
            let mut env = heartbeats.to_vec();
            env.extend([
                ("CONFAB__DATABASE__URL", url.as_str()),
                ("CONFAB__CLUSTER__WORKER_ID", id.as_str()),
                ("CONFAB__SERVER__NAME", name.as_str()),
            ]);
            servers.push(spawn_confab(dir.path(), &env).await?);
        }
        (servers, Some(pg), Some(dir))
    } else {
        (vec![start_confab(&heartbeats).await?], None, None)
    };
    let setup = setup_rooms(servers[0].addr, conns.div_ceil(8), 8).await;
    // Socket n: its server, room and token; the part that opens it.
    let sockets: Vec<Value> = setup
        .iter()
        .flat_map(|(room, members)| members.iter().map(move |m| (room, m)))
        .take(conns)
        .enumerate()
        .map(|(n, (room, m))| json!([n, servers[n % servers.len()].addr, room, m.token]))
        .collect();
    let opened_at = Instant::now();
    let mut parts = Vec::new();
    for chunk in sockets.chunks(per_process) {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("hold-part")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("the part's stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().context("the part's stdout")?);
        use std::io::Write;
        writeln!(stdin, "{}", Value::from(chunk.to_vec()))?;
        parts.push((child, stdin, stdout));
    }
    let line_of =
        |out: &mut std::io::BufReader<std::process::ChildStdout>| -> anyhow::Result<Vec<f64>> {
            use std::io::BufRead;
            let mut line = String::new();
            out.read_line(&mut line)?;
            let fields: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            anyhow::ensure!(
                !fields.is_empty(),
                "a part of the generator ended: {line:?}"
            );
            Ok(fields)
        };
    for (_, _, out) in &mut parts {
        // "opened <sockets>", once every socket of the part is subscribed.
        tokio::task::block_in_place(|| line_of(out))?;
    }
    let opened = opened_at.elapsed().as_secs_f64();
    // The hold starts when every part has opened all its sockets: "marked <pings so far>".
    let mut pings0 = 0.0;
    for (_, stdin, out) in &mut parts {
        use std::io::Write;
        writeln!(stdin, "mark")?;
        pings0 += tokio::task::block_in_place(|| line_of(out))?[0];
    }
    let server_cpu =
        |servers: &[ServerProcess]| servers.iter().map(ServerProcess::cpu_seconds).sum::<f64>();
    println!(
        "    opened, authenticated and subscribed {conns} sockets in {opened:.1} s, by {} generator processes; holding",
        parts.len()
    );
    let cpu0 = server_cpu(&servers);
    let held = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = held.elapsed().as_secs_f64();
    let cpu = server_cpu(&servers) - cpu0;
    let rss: u64 = servers.iter().map(ServerProcess::rss_bytes).sum();
    let (mut lost, mut pings, mut generator) = (0.0, -pings0, 0.0);
    for (mut child, mut stdin, mut out) in parts {
        use std::io::Write;
        writeln!(stdin, "stop")?;
        // "held <ended or failed> <pings> <CPU seconds of the part>".
        let f = tokio::task::block_in_place(|| line_of(&mut out))?;
        lost += f[0];
        pings += f[1];
        generator += f[2];
        let _ = child.wait();
    }
    println!(
        "    confab: {conns} held for {elapsed:.0} s: {lost} ended or failed, {pings} server pings \
         answered; servers: RSS {:.0} MiB in all, CPU {:.1} % of a core in all; generator {generator:.1} CPU s in all",
        rss as f64 / 1048576.0,
        cpu / elapsed * 100.0
    );
    anyhow::ensure!(lost == 0.0, "{lost} sockets ended before the end");
    Ok(())
}

/// One part of [`hold_bench`]'s generator, in a process of its own: reads its sockets (a JSON
/// array of `[n, server, room, token]`) from stdin, opens them from source addresses spread over
/// 127.0.0.0/8 (250 an address, by `n`, so the parts share none), says `opened`, holds them until
/// stdin says `stop`, and says `held`; `mark` on stdin is answered with the pings answered so far.
async fn hold_part() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let sockets: Vec<(usize, SocketAddr, String, String)> =
        serde_json::from_str(&lines.next_line().await?.context("no sockets")?)?;
    let failed = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let readers: Vec<_> = futures_util::stream::iter(sockets)
        .map(|(n, server, room, token)| async move {
            let host = 2 + n / 250;
            let from = std::net::Ipv4Addr::new(127, (host >> 8) as u8, host as u8, 1);
            let m = Member {
                token,
                user_id: String::new(),
                device_id: String::new(),
            };
            confab_client_from(server, &m, Some(&room), Some(from)).await
        })
        .buffer_unordered(32)
        .map(|mut ws| {
            let (failed, pings, stop) = (failed.clone(), pings.clone(), stop.clone());
            tokio::spawn(async move {
                let stopped = stop.notified();
                tokio::pin!(stopped);
                stopped.as_mut().enable();
                loop {
                    tokio::select! {
                        () = &mut stopped => return,
                        msg = ws.next() => match msg {
                            // tungstenite answers a ping with the next read.
                            Some(Ok(Message::Ping(_))) => {
                                pings.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            Some(Ok(_)) => {}
                        },
                    }
                }
            })
        })
        .collect()
        .await;
    println!("opened {}", readers.len());
    while let Some(line) = lines.next_line().await? {
        match line.as_str() {
            "mark" => println!("marked {}", pings.load(Ordering::Relaxed)),
            "stop" => break,
            _ => {}
        }
    }
    let (lost, answered) = (
        failed.load(Ordering::Relaxed),
        pings.load(Ordering::Relaxed),
    );
    stop.notify_waiters();
    for reader in readers {
        let _ = reader.await;
    }
    println!("held {lost} {answered} {:.1}", own_cpu_seconds());
    Ok(())
}

async fn setup_users(addr: SocketAddr, n: usize, prefix: &str) -> Vec<Member> {
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = post(
            &http,
            &base,
            "/sessions",
            None,
            json!({"display_name": format!("{prefix}{i}")}),
        )
        .await;
        out.push(Member {
            token: s["access_token"].as_str().unwrap().to_owned(),
            user_id: s["user_id"].as_str().unwrap().to_owned(),
            device_id: s["device_id"].as_str().unwrap().to_owned(),
        });
    }
    out
}

// ---- federation ----------------------------------------------------------------------------

/// Two homeservers, A and B, federating over loopback. Each room lives on B, with a sender who
/// is a user of B and a receiver who is a user of A (joined through A). Every message is
/// committed on B, sent to A in a signed transaction, committed in A's replica and pushed to the
/// receiver's socket on A; the latency is from the sender's send to the receiver's receipt.
/// Closed loop: each room keeps `window` messages in flight (a receipt releases the next).
/// Open loop (`rate` > 0): messages at a steady total rate.
async fn federation_bench(rooms: usize, window: usize, secs: u64, rate: u64) -> anyhow::Result<()> {
    let mode = if rate == 0 {
        format!("closed loop, {window} in flight per room")
    } else {
        format!("open loop at {rate} events/s")
    };
    println!(
        "\n== federated chat B -> A: {rooms} rooms on B, a sender on B and a receiver on A each, {PAYLOAD}-byte ciphertexts, {mode}, {secs} s =="
    );
    let federating = [
        ("CONFAB__FEDERATION__ALLOW_INSECURE_HTTP", "true"),
        ("CONFAB__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true"),
    ];
    let (a, b) = tokio::try_join!(start_confab(&federating), start_confab(&federating))?;
    let http = reqwest::Client::new();
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let senders = setup_users(b.addr, rooms, "sender").await;
    let receivers = setup_users(a.addr, rooms, "receiver").await;
    let mut room_ids = Vec::with_capacity(rooms);
    for (s, r) in senders.iter().zip(&receivers) {
        let room = post(&http, &base_b, "/rooms", Some(&s.token), json!({})).await;
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        let invite = post(
            &http,
            &base_b,
            &format!("/rooms/{room_id}/invites"),
            Some(&s.token),
            json!({}),
        )
        .await;
        post(
            &http,
            &base_a,
            &format!("/rooms/{room_id}/join"),
            Some(&r.token),
            json!({"invite_token": invite["token"]}),
        )
        .await;
        room_ids.push(room_id);
    }
    let window_state = Arc::new(Window {
        measuring: AtomicBool::new(false),
        messages: AtomicU64::new(0),
    });
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let per_room = rate as f64 / rooms as f64;
    let mut tasks = Vec::new();
    for ((room_id, s), r) in room_ids.iter().zip(&senders).zip(&receivers) {
        let mut rx_ws = confab_client(a.addr, r, Some(room_id)).await;
        let tx_ws = confab_client(b.addr, s, Some(room_id)).await;
        let (released_tx, mut released) = mpsc::unbounded_channel::<()>();
        let (window_state, samples, stop_rx) =
            (window_state.clone(), samples.clone(), stop.clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let stop = stop_rx;
            while let Some(Ok(msg)) = rx_ws.next().await {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["type"] != "event" || v["content"]["type"] != "chat" {
                    continue;
                }
                if window_state.measuring.load(Ordering::Acquire) {
                    window_state.messages.fetch_add(1, Ordering::Relaxed);
                    if let Some(d) = v["content"]["ciphertext"]
                        .as_str()
                        .and_then(|p| parse_sent(start, p))
                    {
                        samples.push(d);
                    }
                }
                let _ = released_tx.send(());
            }
        }));
        let room_id = room_id.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut acks) = tx_ws.split();
            // Acks are read and dropped, so the server never waits on this socket.
            tokio::spawn(async move { while let Some(Ok(_)) = acks.next().await {} });
            let chat = |id: u64| {
                let mut msg = json!({"type": "chat", "id": id, "room_id": room_id, "kind": "text",
                       "ciphertext": payload(start), "txn_id": format!("t{id}")});
                if std::env::var_os("CONFAB_BENCH_NO_TXN").is_some() {
                    msg.as_object_mut().unwrap().remove("txn_id");
                }
                msg.to_string()
            };
            let mut id = 10u64;
            if per_room > 0.0 {
                let period = Duration::from_secs_f64(1.0 / per_room);
                tokio::time::sleep(period.mul_f64(rand::random::<f64>())).await;
                let mut tick = tokio::time::interval(period);
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    id += 1;
                    if sink.send(Message::text(chat(id))).await.is_err() {
                        break;
                    }
                }
            } else {
                for _ in 0..window {
                    id += 1;
                    let _ = sink.send(Message::text(chat(id))).await;
                }
                while released.recv().await.is_some() && !stop.load(Ordering::Acquire) {
                    id += 1;
                    if sink.send(Message::text(chat(id))).await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    let cpu_a0 = a.cpu_seconds();
    let (elapsed, cpu_b) = measure(&b, &window_state, secs).await;
    let cpu_a = a.cpu_seconds() - cpu_a0;
    stop.store(true, Ordering::Release);
    let (rss_a, rss_b) = (a.rss_bytes(), b.rss_bytes());
    drop(a);
    drop(b);
    for t in tasks {
        t.abort();
    }
    let f = figures(&window_state, &samples, elapsed, cpu_b, rss_b);
    println!(
        "    confab: {:>9.0} events/s delivered on A  send-to-receipt p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} samples)  CPU per event: B {:.1} us, A {:.1} us (Postgres not included)  RSS B {:.0} MiB, A {:.0} MiB",
        f.rate,
        f.p50,
        f.p99,
        f.p999,
        f.samples,
        f.cpu_us_per_msg,
        if f.rate > 0.0 {
            cpu_a * 1e6 / (f.rate * elapsed)
        } else {
            0.0
        },
        f.rss_mib,
        rss_a as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

// ---- a hostile origin ------------------------------------------------------------------------

/// Local chat while another homeserver attacks through federation. The attacker holds a room
/// that a user of the server under test joined (so the server keeps a replica of it), then keeps
/// 32 transactions in flight, each with an event far past the replica's newest (a gap to fill
/// from the origin), sending the next as soon as one is answered, whatever the answer; it answers
/// every gap-fill request after 5 s. Reported: the local clients' ack latency and errors in an
/// open loop, first with no attack, then under it, and what the attacker's transactions got.
async fn hostile_bench(secs: u64, rate: u64) -> anyhow::Result<()> {
    println!(
        "\n== local chat under a hostile origin: 100 rooms x 8 clients, open loop at {rate} events/s, {secs} s quiet then {secs} s attacked (32 gapped transactions in flight, each gap-fill answer after 5 s) =="
    );
    let server = start_confab(&[
        ("CONFAB__FEDERATION__ALLOW_INSECURE_HTTP", "true"),
        ("CONFAB__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true"),
    ])
    .await?;
    let hostile = HostileOrigin::start(Duration::from_secs(5))?;
    let carol = setup_users(server.addr, 1, "carol").await.remove(0);
    post(
        &reqwest::Client::new(),
        &format!("http://{}", server.addr),
        &format!("/rooms/{}/join", hostile.room_id),
        Some(&carol.token),
        json!({}),
    )
    .await;
    for attacked in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(HostileAnswers::default());
        // Signed beforehand, so that the attacker's signing does not take the machine's CPU
        // from the server while it is measured (each transaction id is signed once).
        let signed: Vec<Vec<(String, String, Value)>> = (0..32)
            .filter(|_| attacked)
            .map(|worker| {
                (0..PRESIGNED_PER_ATTACKER)
                    .map(|n| hostile.signed(server.addr, &format!("w{worker}n{n}")))
                    .collect()
            })
            .collect();
        let load = ChatLoad::start(server.addr, 100, 8, rate).await;
        let attackers: Vec<_> = signed
            .into_iter()
            .map(|requests| {
                let (stop, answers) = (stop.clone(), answers.clone());
                let target = server.addr;
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    for (path, auth, body) in requests {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let status = match http
                            .put(format!("http://{target}{path}"))
                            .header("Authorization", auth)
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(res) => res.status().as_u16(),
                            Err(_) => 0,
                        };
                        answers.count(status);
                    }
                })
            })
            .collect();
        let gen0 = own_cpu_seconds();
        let (elapsed, cpu) = measure(&server, &load.window, secs).await;
        let generator = (own_cpu_seconds() - gen0) / (elapsed + 2.0) * 100.0;
        stop.store(true, Ordering::Release);
        for a in attackers {
            a.abort();
        }
        load.stop();
        let f = figures(
            &load.window,
            &load.samples,
            elapsed,
            cpu,
            server.rss_bytes(),
        );
        println!(
            "    {:>8}: {:>7.0} events/s acked  ack p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} samples)  errors {}  server CPU {:.0} % of a core  generator CPU {:.0} % of a core{}",
            if attacked { "attacked" } else { "quiet" },
            f.rate,
            f.p50,
            f.p99,
            f.p999,
            f.samples,
            load.errors.load(Ordering::Relaxed),
            f.server_cpu,
            generator,
            if attacked {
                format!(
                    "\n              the attacker's transactions (signed beforehand): {} answered 429 (M_LIMIT_EXCEEDED), {} answered 500 (gap not filled), {} otherwise",
                    answers.refused.load(Ordering::Relaxed),
                    answers.failed.load(Ordering::Relaxed),
                    answers.other.load(Ordering::Relaxed),
                )
            } else {
                String::new()
            }
        );
    }
    hostile.handle.stop(false).await;
    Ok(())
}

/// Transactions each of the 32 attackers has signed for its phase; it stops when they run out.
const PRESIGNED_PER_ATTACKER: usize = 2_500;

/// What the attacker's transactions were answered.
#[derive(Default)]
struct HostileAnswers {
    refused: AtomicU64,
    failed: AtomicU64,
    other: AtomicU64,
}

impl HostileAnswers {
    fn count(&self, status: u16) {
        let counter = match status {
            429 => &self.refused,
            500 => &self.failed,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A homeserver in this process that publishes a key, answers joins to its one room, and
/// answers its events endpoint only after `delay`, with events that never close a gap.
#[derive(Clone)]
struct HostileOrigin {
    name: confab_federation::ids::ServerName,
    key: Arc<confab_federation::signing::SigningKey>,
    room_id: String,
    handle: actix_web::dev::ServerHandle,
}

impl HostileOrigin {
    fn start(delay: Duration) -> anyhow::Result<Self> {
        use actix_web::{App, HttpResponse, HttpServer, web};
        use confab_federation::signing::{KeyId, SigningKey};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let name = confab_federation::ids::ServerName::parse(&listener.local_addr()?.to_string())?;
        let key = Arc::new(SigningKey::generate(KeyId::ed25519("hostile")?)?);
        let document = confab_federation::keys::build_server_keys_document(
            &name,
            &key,
            &std::collections::BTreeMap::new(),
            confab::federation::now_ms() + 24 * 3_600_000,
        )?;
        let room_id = format!("!hostile:{name}");
        let (room, origin) = (room_id.clone(), name.clone());
        let server = HttpServer::new(move || {
            let (document, room, origin) = (document.clone(), room.clone(), origin.clone());
            App::new()
                .route(
                    "/_matrix/key/v2/server",
                    web::get().to(move || {
                        let document = document.clone();
                        async move { HttpResponse::Ok().json(document) }
                    }),
                )
                .route(
                    "/_confab/federation/v1/rooms/{room}/join",
                    web::post().to(move |body: web::Json<Value>| {
                        let (room, origin) = (room.clone(), origin.clone());
                        async move { HttpResponse::Ok().json(hostile_room(&room, &origin, &body)) }
                    }),
                )
                .route(
                    "/_confab/federation/v1/rooms/{room}/events",
                    web::get().to(move || async move {
                        // The hostile part: slow, and with nothing that fills the gap.
                        tokio::time::sleep(delay).await;
                        HttpResponse::Ok().json(json!({"events": [], "latest_seq": 1}))
                    }),
                )
                .default_service(web::to(|| async { HttpResponse::Ok().json(json!({})) }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            name,
            key,
            room_id,
            handle,
        })
    }

    /// A signed transaction (path, `Authorization`, body) with an event far past anything the
    /// replica has.
    fn signed(&self, to: SocketAddr, txn_id: &str) -> (String, String, Value) {
        let destination = confab_federation::ids::ServerName::parse(&to.to_string()).unwrap();
        let body = json!({
            "origin": self.name,
            "origin_server_ts": confab::federation::now_ms(),
            "pdus": [{"event_id": format!("${txn_id}"), "room_id": self.room_id, "type": "confab.event",
                "event": {"seq": 1_000_000, "sender": format!("@host:{}", self.name), "device_id": "D",
                          "origin_ts": 1, "content": {"type": "chat", "kind": "text", "ciphertext": "c"}}}],
            "edus": [],
        });
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        let auth = confab_federation::xmatrix::sign_request(
            &self.name,
            &destination,
            "PUT",
            &path,
            Some(&body),
            &self.key,
        )
        .unwrap();
        (path, auth.to_string(), body)
    }
}

/// The hostile origin's answer to a join: a room whose one event is the joiner's.
fn hostile_room(room_id: &str, origin: &confab_federation::ids::ServerName, join: &Value) -> Value {
    let user = join["user_id"].as_str().unwrap_or_default();
    let host = format!("@host:{origin}");
    let member = |user: &str| {
        json!({"user_id": user, "display_name": "M", "is_host": false, "membership": "joined",
               "joined_ts": 1, "updated_ts": 1})
    };
    json!({
        "room_id": room_id, "host_user_id": host, "locked": false, "created_ts": 1, "latest_seq": 1,
        "members": [member(&host), member(user)],
        "events": [{"seq": 1, "sender": user, "device_id": "", "origin_ts": 1,
            "content": {"type": "member", "user_id": user, "membership": "joined", "display_name": "M"}}],
        "connected": [],
    })
}

// ---- workers -------------------------------------------------------------------------------

/// A Postgres cluster of the benchmark's own (the embedded one's code, in a temporary
/// directory), for servers given a `database.url`: one database for the workers, one for the
/// single process they are compared with, on the same Postgres.
struct PgCluster {
    pg: confab::embedded_pg::EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

impl PgCluster {
    fn start() -> anyhow::Result<Self> {
        let dir = bench_dir()?;
        // CONFAB_BENCH_PG_LOG=<file>: statements slower than 10 ms are logged, and the log is
        // copied there at the end (to see what holds the database up).
        let slow = if std::env::var_os("CONFAB_BENCH_PG_LOG").is_some() {
            "10"
        } else {
            "-1"
        };
        // As `confab serve` runs its own cluster, so that one process and the workers compare
        // on the same database.
        let mut settings = confab::embedded_pg::SERVER_SETTINGS.to_vec();
        settings.extend([
            ("max_connections", "200"),
            ("log_min_duration_statement", slow),
        ]);
        let pg = confab::embedded_pg::EmbeddedPostgres::start(
            &dir.path().join("postgres"),
            None,
            &settings,
        )?;
        Ok(Self { pg, _dir: dir })
    }

    /// A new, empty database; its URL.
    async fn database(&self, name: &str) -> anyhow::Result<String> {
        confab_schema::create_database(&self.pg.url("postgres"), name, None).await?;
        Ok(self.pg.url(name))
    }

    /// CPU seconds of the postmaster and every backend.
    fn cpu_seconds(&self) -> f64 {
        let pid = std::fs::read_to_string(self.pg.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok());
        pid.map_or(0.0, |pid| {
            proc_stat(&pid.to_string()).map_or(0.0, |(_, t)| t) / clock_ticks()
                + descendants_cpu_seconds(pid)
        })
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg.stop();
        if let Some(to) = std::env::var_os("CONFAB_BENCH_PG_LOG") {
            let _ = std::fs::copy(self.pg.data_dir().join("postgres.log"), to);
        }
    }
}

/// What is sent between the members of a room in a delivery run.
#[derive(Clone, Copy, PartialEq)]
enum Traffic {
    /// Persisted chat, fanned out to the seven others.
    Chat,
    /// A signal to the next member.
    Signal,
}

/// Send-to-delivery figures of one run.
struct Delivery {
    sent: f64,
    delivered: f64,
    /// Latencies of deliveries to a device on another worker than the sender's, and on the same.
    cross: Samples,
    same: Samples,
    errors: u64,
    server_cpu: f64,
    postgres_cpu: f64,
    generator_cpu: f64,
    elapsed: f64,
}

/// Drives `rooms` rooms of `clients` members, member `i` of each room connected to
/// `servers[i % servers.len()]` (set up through the first), each sending `traffic` at its share
/// of `rate` per second, for 2 s of warm-up and `secs` of measurement; every delivery's time from
/// send to receipt is sampled (the generator's own clock is in the payload).
async fn delivery_run(
    servers: &[&ServerProcess],
    pg: &PgCluster,
    (rooms, clients): (usize, usize),
    (secs, rate): (u64, u64),
    traffic: Traffic,
) -> Delivery {
    let setup = setup_rooms(servers[0].addr, rooms, clients).await;
    // Members alternate between the servers; with CONFAB_BENCH_AFFINITY=1 each room's members
    // are all on one (rooms alternate), as a load balancer with room affinity places them.
    let affinity = std::env::var_os("CONFAB_BENCH_AFFINITY").is_some();
    let place =
        move |room: usize, member: usize| (if affinity { room } else { member }) % servers.len();
    let worker_of: Arc<HashMap<String, usize>> = Arc::new(
        setup
            .iter()
            .enumerate()
            .flat_map(|(r, (_, members))| members.iter().enumerate().map(move |(i, m)| (r, i, m)))
            .map(|(r, i, m)| (m.user_id.clone(), place(r, i)))
            .collect(),
    );
    let window = Arc::new(Window {
        measuring: AtomicBool::new(false),
        messages: AtomicU64::new(0),
    });
    let (cross, same) = (Arc::new(Samples::default()), Arc::new(Samples::default()));
    let (delivered, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let period = Duration::from_secs_f64((rooms * clients) as f64 / rate as f64);
    let mut tasks = Vec::new();
    for (r, (room_id, members)) in setup.iter().enumerate() {
        for (i, m) in members.iter().enumerate() {
            let here = place(r, i);
            let ws = confab_client(servers[here].addr, m, Some(room_id)).await;
            let next = &members[(i + 1) % members.len()];
            let prefix = match traffic {
                Traffic::Chat => {
                    format!(r#"{{"type":"chat","room_id":"{room_id}","kind":"text","ciphertext":""#)
                }
                Traffic::Signal => format!(
                    r#"{{"type":"signal","room_id":"{room_id}","to":{{"user_id":"{}","device_id":"{}"}},"payload":""#,
                    next.user_id, next.device_id
                ),
            };
            let from_prev = place(r, (i + members.len() - 1) % members.len()) != here;
            let mine = m.user_id.clone();
            let (window, cross, same, delivered, errors, stop, worker_of) = (
                window.clone(),
                cross.clone(),
                same.clone(),
                delivered.clone(),
                errors.clone(),
                stop.clone(),
                worker_of.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                let ticker_stop = stop.clone();
                let window_sent = window.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(period.mul_f64(rand::random::<f64>())).await;
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut n = 0u64;
                    while !ticker_stop.load(Ordering::Acquire) {
                        tick.tick().await;
                        n += 1;
                        let mut text = prefix.clone();
                        text.push_str(&payload(start));
                        text.push('"');
                        if traffic == Traffic::Chat {
                            text.push_str(&format!(r#","txn_id":"t{n}""#));
                        }
                        text.push('}');
                        if window_sent.measuring.load(Ordering::Acquire) {
                            window_sent.messages.fetch_add(1, Ordering::Relaxed);
                        }
                        if sink.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(msg)) = stream.next().await {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Message::Text(text) = msg else { continue };
                    let text: &str = &text;
                    if text.starts_with(r#"{"type":"error""#) {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            println!("{:>12}  first error: {text}", "");
                        }
                        continue;
                    }
                    let (field, is_cross) = match traffic {
                        Traffic::Signal if text.starts_with(r#"{"type":"signal""#) => {
                            (r#""payload":""#, from_prev)
                        }
                        Traffic::Chat
                            if text.starts_with(r#"{"type":"event""#) && !sent_by(text, &mine) =>
                        {
                            let sender = text
                                .split_once(r#""sender":""#)
                                .and_then(|(_, rest)| rest.split('"').next())
                                .unwrap_or_default();
                            (r#""ciphertext":""#, worker_of.get(sender) != Some(&here))
                        }
                        _ => continue,
                    };
                    if !window.measuring.load(Ordering::Acquire) {
                        continue;
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                    let body = text.split_once(field).map_or("", |(_, rest)| rest);
                    if let Some(latency) = parse_sent(start, body) {
                        if is_cross { &cross } else { &same }.push(latency);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = |servers: &[&ServerProcess]| servers.iter().map(|s| s.cpu_seconds()).sum::<f64>();
    let (cpu0, pg0, gen0) = (cpu(servers), pg.cpu_seconds(), own_cpu_seconds());
    window.measuring.store(true, Ordering::Release);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    window.measuring.store(false, Ordering::Release);
    let elapsed = t0.elapsed().as_secs_f64();
    let (server_cpu, postgres_cpu, generator_cpu) = (
        cpu(servers) - cpu0,
        pg.cpu_seconds() - pg0,
        own_cpu_seconds() - gen0,
    );
    stop.store(true, Ordering::Release);
    for t in &tasks {
        t.abort();
    }
    Delivery {
        sent: window.messages.load(Ordering::Relaxed) as f64 / elapsed,
        delivered: delivered.load(Ordering::Relaxed) as f64 / elapsed,
        cross: cross.take(),
        same: same.take(),
        errors: errors.load(Ordering::Relaxed),
        server_cpu,
        postgres_cpu,
        generator_cpu,
        elapsed,
    }
}

fn report_delivery(name: &str, d: &Delivery) {
    let line = |s: &Samples| {
        let (p50, p99, _, n) = s.percentiles();
        if n == 0 {
            "—".to_owned()
        } else {
            format!("p50 {p50:.2} ms  p99 {p99:.2} ms ({n})")
        }
    };
    println!(
        "{name:>12}: {:>7.0} sent/s  {:>7.0} delivered/s  other worker: {}  same worker: {}  errors {}  CPU % of a core: servers {:.0}, Postgres {:.0}, generator {:.0}  ({:.1} us of server CPU per delivery)",
        d.sent,
        d.delivered,
        line(&d.cross),
        line(&d.same),
        d.errors,
        d.server_cpu / d.elapsed * 100.0,
        d.postgres_cpu / d.elapsed * 100.0,
        d.generator_cpu / d.elapsed * 100.0,
        d.server_cpu * 1e6 / (d.delivered * d.elapsed).max(1.0),
    );
    d.cross.print_series();
}

/// A counter from a worker's metrics (its admin listener).
async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Several workers on one Postgres against one process on the same Postgres, in one run:
/// persisted chat and signaling with each room's members spread over two workers, the bus's
/// ceiling, and how long a singleton takes to move after its worker is killed.
async fn workers_bench(
    (rooms, clients, secs): (usize, usize, u64),
    (chat_rate, signal_rate): (u64, u64),
) -> anyhow::Result<()> {
    println!(
        "\n== workers: {rooms} rooms x {clients}, members alternating between two workers on one Postgres, against one process on the same Postgres; {secs} s each =="
    );
    let pg = PgCluster::start()?;
    let one_url = pg.database("one").await?;
    let two_url = pg.database("two").await?;
    let one_dir = bench_dir()?;
    let one = spawn_confab(one_dir.path(), &[("CONFAB__DATABASE__URL", &one_url)]).await?;
    let two_dir = bench_dir()?;
    let name_port = free_port();
    let name = format!("127.0.0.1:{name_port}");
    let ids = ["w1", "w2"];
    let admins: Vec<SocketAddr> = ids
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()).parse())
        .collect::<Result<_, _>>()?;
    let spawn_worker = async |i: usize| {
        spawn_confab(
            two_dir.path(),
            &[
                ("CONFAB__DATABASE__URL", &two_url),
                ("CONFAB__CLUSTER__WORKER_ID", ids[i]),
                ("CONFAB__SERVER__NAME", &name),
                ("CONFAB__ADMIN__LISTEN", &admins[i].to_string()),
            ],
        )
        .await
    };
    let mut workers = [spawn_worker(0).await?, spawn_worker(1).await?];
    let bus = |admins: Vec<SocketAddr>| async move {
        let mut sum = (0.0, 0.0);
        for a in admins {
            sum.0 += metric(a, "confab_bus_notifications_sent_total").await;
            sum.1 += metric(a, "confab_bus_messages_sent_total").await;
        }
        sum
    };
    let pair: Vec<&ServerProcess> = workers.iter().collect();
    for (traffic, rate, what) in [
        (Traffic::Chat, chat_rate, "persisted chat"),
        (Traffic::Signal, signal_rate, "signaling to the next member"),
    ] {
        println!("-- {what}, open loop at {rate}/s in all");
        let d = delivery_run(&[&one], &pg, (rooms, clients), (secs, rate), traffic).await;
        report_delivery("one process", &d);
        let before = (Instant::now(), bus(admins.clone()).await);
        let d = delivery_run(&pair, &pg, (rooms, clients), (secs, rate), traffic).await;
        let after = bus(admins.clone()).await;
        let t = before.0.elapsed().as_secs_f64();
        report_delivery("two workers", &d);
        println!(
            "{:>12}  bus (both workers, whole run with set-up): {:.0} notifications/s carrying {:.0} messages/s",
            "",
            (after.0 - before.1.0) / t,
            (after.1 - before.1.1) / t
        );
    }
    // The ceiling: signaling across workers with no pause, as fast as it goes.
    println!("-- the bus's ceiling: signaling across workers, open loop far above what it carries");
    let before = (Instant::now(), bus(admins.clone()).await);
    let d = delivery_run(
        &pair,
        &pg,
        (rooms, clients),
        (secs, 200_000),
        Traffic::Signal,
    )
    .await;
    let after = bus(admins.clone()).await;
    let t = before.0.elapsed().as_secs_f64();
    report_delivery("two workers", &d);
    println!(
        "{:>12}  bus: {:.0} notifications/s carrying {:.0} messages/s (whole run with set-up)",
        "",
        (after.0 - before.1.0) / t,
        (after.1 - before.1.1) / t
    );
    drop(one);

    // Takeover: the worker holding the singletons is killed; the other takes them at its next
    // tick (a third of the default 10 s lease).
    println!("-- takeover after SIGKILL (default lease 10 s)");
    let pool =
        confab_schema::build_pool(&two_url, 2, Duration::from_secs(5), Duration::from_secs(5))?;
    let holders = async || -> Vec<(i64, String)> {
        let mut db = confab_schema::connect(&pool).await.expect("database");
        confab_schema::cluster::lock_holders(&mut db)
            .await
            .expect("locks")
    };
    let keys = [
        ("sender", confab_schema::cluster::locks::SENDER),
        ("sweeper", confab_schema::cluster::locks::SWEEPER),
    ];
    // Five times: the holder is killed, the other takes over, the killed one starts again.
    for _ in 0..5 {
        let held = holders().await;
        let holder = held
            .iter()
            .find(|(k, _)| *k == keys[0].1)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let victim = usize::from(holder.ends_with("w2"));
        let killed_at = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(workers[victim].pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let mut taken: Vec<Option<Duration>> = vec![None; keys.len()];
        while taken.iter().any(Option::is_none) && killed_at.elapsed() < Duration::from_secs(60) {
            let now = holders().await;
            for (i, (_, key)) in keys.iter().enumerate() {
                let moved = now
                    .iter()
                    .any(|(k, n)| k == key && !n.is_empty() && *n != holder);
                if moved && taken[i].is_none() {
                    taken[i] = Some(killed_at.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let line: Vec<String> = keys
            .iter()
            .zip(&taken)
            .map(|((what, _), t)| match t {
                Some(t) => format!("{what} {:.2} s", t.as_secs_f64()),
                None => format!("{what} NOT within 60 s"),
            })
            .collect();
        println!(
            "{:>12}: after the SIGKILL of {holder}: {}",
            "taken over",
            line.join(", ")
        );
        workers[victim] = spawn_worker(victim).await?;
    }
    Ok(())
}
