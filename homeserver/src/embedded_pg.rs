//! The embedded Postgres default: with no database URL configured, the homeserver runs a private
//! cluster under `<data_dir>/postgres` with the PostgreSQL binaries installed on the machine. It
//! listens on a unix socket in that folder only (no TCP port), is created on first start, reused
//! afterwards, and stopped when the server stops. Started as root, it runs as an unprivileged
//! user, because Postgres refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the embedded cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    /// No folder with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "no PostgreSQL server binaries found (looked in {searched}). Install them (Debian/Ubuntu: \
         `apt-get install postgresql`), point `database.postgres_bin_dir` at them, or set \
         `database.url` (CONFAB__DATABASE__URL) to use an existing Postgres server"
    )]
    NoBinaries {
        /// Where we looked.
        searched: String,
    },
    /// A PostgreSQL tool failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// Which tool.
        tool: &'static str,
        /// Its output.
        detail: String,
    },
    /// Files or users could not be set up.
    #[error("embedded Postgres: {0}")]
    Setup(String),
}

/// A running private cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    started_here: bool,
}

/// The database role the cluster is initialised with.
const SUPERUSER: &str = "confab";

impl EmbeddedPostgres {
    /// Creates the cluster under `root` if needed and starts it unless it is already running.
    /// `settings` are extra `postgres -c name=value` options (tests turn fsync off).
    pub fn start(
        root: &Path,
        bin_dir: Option<&Path>,
        settings: &[(&str, &str)],
    ) -> Result<Self, EmbeddedPgError> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.to_path_buf(),
            None => find_bin_dir()?,
        };
        let run_as = unprivileged_user()?;
        std::fs::create_dir_all(root)
            .map_err(|e| EmbeddedPgError::Setup(format!("creating {}: {e}", root.display())))?;
        // The tools run from `/` (the unprivileged user may not be able to enter our working
        // directory), so every path handed to them must be absolute.
        let root = &std::fs::canonicalize(root)
            .map_err(|e| EmbeddedPgError::Setup(format!("resolving {}: {e}", root.display())))?;
        let data = root.join("data");
        let socket_dir = root.join("run");
        for dir in [root, &socket_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| EmbeddedPgError::Setup(format!("creating {}: {e}", dir.display())))?;
        }
        if let Some((uid, gid)) = run_as {
            for dir in [root, &socket_dir] {
                nix::unistd::chown(dir, Some(uid), Some(gid))
                    .map_err(|e| EmbeddedPgError::Setup(format!("chown {}: {e}", dir.display())))?;
            }
        }
        set_mode(root, 0o700)?;
        let mut pg = Self {
            bin_dir,
            data,
            socket_dir,
            run_as,
            started_here: false,
        };
        if !pg.data.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        if !pg.is_running() {
            pg.pg_ctl_start(settings)?;
            pg.started_here = true;
        }
        Ok(pg)
    }

    /// A connection URL for `database` over the unix socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost/{database}?host={}",
            self.socket_dir.display()
        )
    }

    /// Stops the cluster if this process started it (fast shutdown: sessions are disconnected,
    /// everything committed is kept).
    pub fn stop(&self) -> Result<(), EmbeddedPgError> {
        if !self.started_here {
            return Ok(());
        }
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
    }

    fn initdb(&self) -> Result<(), EmbeddedPgError> {
        let data = self.data.display().to_string();
        // Trust is safe here: the only way in is the unix socket in a folder only the cluster's
        // owner can open.
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ],
        )
    }

    fn is_running(&self) -> bool {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "status"]).is_ok()
    }

    fn pg_ctl_start(&self, settings: &[(&str, &str)]) -> Result<(), EmbeddedPgError> {
        let data = self.data.display().to_string();
        let log = self.data.join("postgres.log").display().to_string();
        let mut options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c unix_socket_permissions=0700",
            self.socket_dir.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        )
    }

    fn run(&self, tool: &'static str, args: &[&str]) -> Result<(), EmbeddedPgError> {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.args(args).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
            // The tools look at $HOME; root's is not readable by the unprivileged user.
            cmd.env("HOME", "/tmp").current_dir("/");
        }
        let out = cmd.output().map_err(|e| EmbeddedPgError::Tool {
            tool,
            detail: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if detail.is_empty() {
                detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            Err(EmbeddedPgError::Tool { tool, detail })
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), EmbeddedPgError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| EmbeddedPgError::Setup(format!("chmod {}: {e}", path.display())))
}

/// Postgres refuses to run as root, so as root we run it as `postgres` (or `nobody`).
fn unprivileged_user() -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, EmbeddedPgError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    Err(EmbeddedPgError::Setup(
        "running as root, and there is neither a `postgres` nor a `nobody` user to run \
         Postgres as"
            .into(),
    ))
}

/// Finds a folder with the server binaries: PATH, then `pg_config --bindir`, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedPgError> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|t| dir.join(t).is_file())
    };
    let mut searched = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            // A PATH entry may hold symlinks to the real binaries (Debian's wrappers do).
            let dir = std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(dir);
            if complete(&dir) {
                return Ok(dir);
            }
        }
        searched.push("PATH".to_owned());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&dir) {
            return Ok(dir);
        }
    }
    searched.push("pg_config --bindir".to_owned());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    searched.push("/usr/lib/postgresql/*/bin".to_owned());
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(EmbeddedPgError::NoBinaries {
            searched: searched.join(", "),
        })
}
