//! `confab serve` as processes of their own (to be killed with SIGKILL), and HAProxy in front of
//! several of them: the parts a deployment runs, started and stopped by the tests themselves.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `confab serve` as a process of its own, on a database of the shared test cluster; killed
/// (SIGKILL) when dropped, so that a failing test leaves nothing running.
pub struct ServeProcess {
    child: std::process::Child,
    pub base: String,
}

impl ServeProcess {
    /// The only process of a homeserver named after its address.
    pub fn spawn(port: u16, data: &Path, database_url: &str) -> Self {
        let name = format!("127.0.0.1:{port}");
        Self::spawn_with(port, data, database_url, &[("CONFAB__SERVER__NAME", &name)])
    }

    /// With extra `CONFAB__…` settings (a worker's id, a server name shared by workers).
    pub fn spawn_with(port: u16, data: &Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(data.join(format!("serve-{port}.log")))
            .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_confab"));
        command
            .arg("serve")
            .env("CONFAB__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "CONFAB__SERVER__PUBLIC_URL",
                format!("http://127.0.0.1:{port}"),
            )
            .env("CONFAB__SERVER__DATA_DIR", data)
            .env("CONFAB__SERVER__WEB_CLIENT_DIR", "/nonexistent")
            // No admin listener: tests run in parallel, and none of these needs it.
            .env("CONFAB__ADMIN__LISTEN", "")
            .env("CONFAB__DATABASE__URL", database_url)
            .env("CONFAB__DATABASE__POOL_SIZE", "8")
            .env("CONFAB__LIMITS__MESSAGES_PER_SECOND", "100000")
            .env("CONFAB__LIMITS__MESSAGE_BURST", "100000")
            .env("CONFAB__LIMITS__SEND_QUEUE_FRAMES", "8192")
            .env("CONFAB__LOG__LEVEL", "warn");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Polls `/health` until the server and its database answer (bounded).
    pub async fn healthy(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = http.get(format!("{}/health", self.base)).send().await
                && res.status() == 200
            {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "confab serve exited early"
            );
            assert!(
                Instant::now() < deadline,
                "confab serve never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    /// Stops it the way an operator does (SIGTERM), and waits until it has exited.
    pub async fn terminate(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "confab serve did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        ws_url(&self.base)
    }

    pub async fn call(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        call(http, &self.base, method, path, token, body).await
    }

    /// Every event of the room, from its log.
    pub async fn log(&self, http: &reqwest::Client, room: &str, token: &str) -> Vec<Value> {
        log(http, &self.base, room, token).await
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The client WebSocket URL under `base`.
pub fn ws_url(base: &str) -> String {
    format!("{}/_confab/client/v1/ws", base.replace("http", "ws"))
}

/// A client REST call under `base`, which must succeed.
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, format!("{base}/_confab/client/v1{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Every event of the room, from its log.
pub async fn log(http: &reqwest::Client, base: &str, room: &str, token: &str) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    loop {
        let since = events.last().map_or(0, |e| e["seq"].as_i64().unwrap());
        let page = call(
            http,
            base,
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

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's HAProxy in front of workers on loopback, as README "Scaling out" configures it:
/// WebSocket upgrades, a health check on `/health`, `X-Forwarded-For`, a retry on another
/// worker when one refuses the connection. No room affinity (round robin), so that the tests
/// show correctness does not depend on it; a request with a `w` cookie naming a worker goes to
/// that one while it is up, so a test can put each client on a worker of its choosing. Stopped
/// when dropped.
pub struct HaProxy {
    child: std::process::Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// On `port`, in front of `workers` (id, port). Fails, not skips, where HAProxy is not
    /// installed: `make test` installs it.
    pub async fn start(port: u16, workers: &[(&str, u16)]) -> Self {
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("HAProxy is not installed: `make haproxy` (Debian's haproxy package)");
        let dir = tempfile::tempdir().unwrap();
        let mut servers = String::new();
        let mut rules = String::new();
        for (id, worker_port) in workers {
            servers.push_str(&format!(
                "    server {id} 127.0.0.1:{worker_port} check inter 500ms fall 2 rise 2\n"
            ));
            rules.push_str(&format!(
                "    use-server {id} if {{ req.cook(w) -m str {id} }}\n"
            ));
        }
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n\
             \x20   timeout server 60s\n    timeout tunnel 1h\n    option forwardfor\n\
             \x20   retries 3\n    option redispatch 1\n\
             frontend public\n    bind 127.0.0.1:{port}\n    default_backend workers\n\
             backend workers\n    balance roundrobin\n    option httpchk GET /health\n\
             \x20   http-check expect status 200\n{rules}{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = std::process::Command::new(binary)
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(check.success(), "HAProxy refused the test's configuration");
        let child = std::process::Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{}/health", proxy.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "HAProxy never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }

    pub fn ws_url(&self) -> String {
        ws_url(&self.base)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
