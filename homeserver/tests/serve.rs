//! `confab serve` as a user runs it: a process with its embedded Postgres, stopped with SIGTERM
//! and started again on the same data directory.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Serve {
    child: Child,
    base: String,
}

fn start(data: &std::path::Path, port: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env("CONFAB__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CONFAB__SERVER__NAME", format!("127.0.0.1:{port}"))
        .env(
            "CONFAB__SERVER__PUBLIC_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .env("CONFAB__SERVER__DATA_DIR", data)
        .env("CONFAB__SERVER__WEB_CLIENT_DIR", "/nonexistent")
        // No admin listener: tests run in parallel, and this one does not need it.
        .env("CONFAB__ADMIN__LISTEN", "")
        .env_remove("CONFAB__DATABASE__URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

impl Serve {
    /// Polls `/health` until the server and its database answer (bounded).
    async fn healthy(&mut self, http: &reqwest::Client) {
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_its_own_postgres_and_keeps_rooms_across_restarts() {
    let data = tempfile::Builder::new()
        .prefix("confab-serve-")
        .tempdir_in("/tmp")
        .unwrap();
    // When the tests run as root, Postgres runs as an unprivileged user that must reach the folder.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let http = reqwest::Client::new();

    let mut first = start(data.path(), port);
    first.healthy(&http).await;
    let api = |path: &str| format!("http://127.0.0.1:{port}/_confab/client/v1{path}");
    let session: Value = http
        .post(api("/sessions"))
        .json(&json!({"display_name": "Ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap();
    let room: Value = http
        .post(api("/rooms"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["room_id"].as_str().unwrap();
    let pid_file = data.path().join("postgres/data/postmaster.pid");
    assert!(
        pid_file.exists(),
        "the embedded cluster runs under the data directory"
    );

    let status = first.terminate();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
    assert!(
        !pid_file.exists(),
        "the embedded Postgres was stopped with the server"
    );

    let mut second = start(data.path(), port);
    second.healthy(&http).await;
    let res = http
        .get(api(&format!("/rooms/{room_id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "the session and room survived the restart"
    );
    assert!(second.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_setting_stops_start_up_with_its_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env("CONFAB__ROOMS__IDLE_TTL", "whenever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("idle_ttl"), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line for people: {stderr}"
    );
}
