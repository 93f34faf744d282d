//! `config/demo/two-servers.sh --check` against the built binary: two homeservers on loopback,
//! each with its own embedded Postgres, that must answer `/health` and federate both ways; the
//! script then stops both. Keeps the demo (and `make demo`) from rotting.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_two_server_demo_federates_and_stops() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let demo = tempfile::Builder::new()
        .prefix("confab-demo-")
        .tempdir_in("/tmp")
        .unwrap();
    let (alpha, beta) = (free_port(), free_port());
    let (alpha_admin, beta_admin) = (free_port(), free_port());
    let out = Command::new("bash")
        .arg(repo.join("config/demo/two-servers.sh"))
        .arg("--check")
        .env("CONFAB_BIN", env!("CARGO_BIN_EXE_confab"))
        .env("DEMO_DIR", demo.path())
        .env("ALPHA_PORT", alpha.to_string())
        .env("BETA_PORT", beta.to_string())
        .env("ALPHA_ADMIN_PORT", alpha_admin.to_string())
        .env("BETA_ADMIN_PORT", beta_admin.to_string())
        .env("WEB_CLIENT_DIR", "/nonexistent")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("alpha -> beta: federation ping answered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("beta -> alpha: federation ping answered"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{alpha}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{beta}")),
        "{stdout}"
    );
    // Both servers were stopped with their clusters: no Postgres left running on the folder.
    for name in ["alpha", "beta"] {
        let pid = demo.path().join(name).join("postgres/data/postmaster.pid");
        assert!(!pid.exists(), "{name}'s embedded Postgres still runs");
        assert!(demo.path().join(name).join("signing.key").exists());
    }
}
