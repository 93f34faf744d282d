//! The embedded Postgres default: with no database URL configured, the homeserver runs a private
//! cluster under `<data_dir>/postgres` with the PostgreSQL binaries installed on the machine. It
//! listens on a unix socket in that folder only (no TCP port), is created on first start, reused
//! afterwards, and stopped when the server stops. Started as root, it runs as an unprivileged
//! user, because Postgres refuses to run as root. Under `confab serve` it is supervised
//! ([`SupervisedPostgres`]): a postmaster that dies (the OOM killer, say) is started again, and a
//! cluster left running by a server that crashed is adopted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        /// Its output (and, for a failed start, the end of the cluster's log).
        detail: String,
    },
    /// Files or users could not be set up.
    #[error("embedded Postgres: {0}")]
    Setup(String),
    /// Running as root, the cluster runs as an unprivileged user, and a folder on the way to
    /// the cluster does not let that user through (a home folder of mode 0700, a `mktemp -d`
    /// folder): without this check initdb says only "Permission denied".
    #[error(
        "embedded Postgres: Postgres refuses to run as root, so it runs as the user `{user}`, \
         which cannot enter {} (mode {mode:04o}, owner uid {owner}) on the way to {}. Either \
         let it through with `chmod o+x {}` (it can then pass through that folder, not list or \
         read it), or set `database.url` (CONFAB__DATABASE__URL) to a Postgres server you run",
        dir.display(),
        target.display(),
        dir.display()
    )]
    Unreachable {
        /// The unprivileged user Postgres runs as.
        user: String,
        /// The first folder on the path it may not enter.
        dir: PathBuf,
        /// That folder's permission bits.
        mode: u32,
        /// That folder's owner.
        owner: u32,
        /// Where the cluster lives.
        target: PathBuf,
    },
    /// Another `confab serve` supervises the cluster in this folder.
    #[error(
        "embedded Postgres: another `confab serve` is using {} (it holds {}); stop it first, or \
         give this server its own `server.data_dir`",
        root.display(),
        lock.display()
    )]
    InUse {
        /// The cluster's folder.
        root: PathBuf,
        /// The lock file the other server holds.
        lock: PathBuf,
    },
    /// The cluster runs but did not come to accept connections in time.
    #[error(
        "embedded Postgres in {} did not accept connections within {waited:?} ({detail}); see \
         its log, {}",
        data.display(),
        data.join("postgres.log").display()
    )]
    NotReady {
        /// The data directory.
        data: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// What it was doing when we gave up.
        detail: String,
    },
}

/// A private cluster, running (or, under [`SupervisedPostgres`], brought back when it is not).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    /// `postgres -c` settings, kept to start it again with the same ones.
    settings: Vec<(String, String)>,
    /// Whether it was already running when we started: left by a server that crashed (or, for
    /// the tests' shared cluster, by another test process).
    adopted: bool,
}

/// The database role the cluster is initialised with.
const SUPERUSER: &str = "confab";

/// Longest a start waits for the cluster to accept connections: as long as `pg_ctl -w` waits
/// by default (crash recovery replays the WAL since the last checkpoint first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the cluster's `postmaster.pid` says, checked against the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postmaster {
    /// No postmaster: no lock file, or its process is gone (a stale file, which Postgres
    /// removes itself when it starts).
    Absent,
    /// The process in the lock file is dead but not yet reaped (a zombie): `pg_ctl status`
    /// still calls it running, and Postgres refuses to start until it is reaped.
    Dead(i32),
    /// A live postmaster.
    Alive(i32),
}

/// What the server's own cluster runs with, beyond Postgres's defaults.
///
/// `wal_init_zero = off`: Postgres fills each new 16 MiB WAL segment with zeros and syncs it
/// before the first record goes in, and the commit that needs the segment waits for that. A
/// server writing chat at 5,000 events/s needs a new segment every 3 s or so until old ones are
/// recycled, and each stalled every commit for 60–90 ms (the whole of the ack p99 at that rate,
/// README, "Performance"). Without the zeros the segment is created sparse; what is given up is
/// learning of a full disk when a segment is made rather than when it is written, and the
/// supervisor restarts a postmaster that stops on a full disk either way.
pub const SERVER_SETTINGS: &[(&str, &str)] = &[("wal_init_zero", "off")];

impl EmbeddedPostgres {
    /// Creates the cluster under `root` if needed and makes sure it runs and accepts
    /// connections: starts it unless it is already running, waits for one that is running but
    /// refusing connections (starting up, recovering after a crash), and starts it again if
    /// its postmaster turns out to be dead. A cluster found running is adopted: [`Self::stop`]
    /// stops it like one started here.
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
        if let Some((uid, gid)) = run_as {
            // `root` itself is given to that user below; the folders above it must let it in.
            if let Some((dir, mode, owner)) = root
                .parent()
                .and_then(|parent| first_untraversable(parent, uid, gid))
            {
                return Err(EmbeddedPgError::Unreachable {
                    user: user_name(uid),
                    dir,
                    mode,
                    owner,
                    target: data,
                });
            }
        }
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
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            adopted: false,
        };
        if !pg.data.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        pg.adopted = matches!(pg.postmaster(), Postmaster::Alive(_));
        pg.ensure_running(READY_TIMEOUT)?;
        Ok(pg)
    }

    /// A connection URL for `database` over the unix socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost/{database}?host={}",
            self.socket_dir.display()
        )
    }

    /// Whether the cluster was already running when [`Self::start`] found it.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the cluster (fast shutdown: sessions are disconnected, everything committed is
    /// kept), whether this process started it or adopted it: a cluster left running by a
    /// server that crashed belongs to the server that runs now.
    pub fn stop(&self) -> Result<(), EmbeddedPgError> {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
    }

    /// The postmaster as its lock file and the process table see it.
    pub fn postmaster(&self) -> Postmaster {
        let Ok(text) = std::fs::read_to_string(self.data.join("postmaster.pid")) else {
            return Postmaster::Absent;
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Postmaster::Absent;
        };
        match process_state(pid) {
            None => Postmaster::Absent,
            Some(state) if state == 'Z' || state == 'X' => Postmaster::Dead(pid),
            Some(_) => Postmaster::Alive(pid),
        }
    }

    /// Makes the cluster run and accept connections, within `timeout`: waits while it starts
    /// or recovers, waits for a dead postmaster to be reaped, starts it when there is none, and
    /// starts it again while the processes of a crashed one are still on their way out.
    pub fn ensure_running(&self, timeout: Duration) -> Result<(), EmbeddedPgError> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        let mut said = false;
        loop {
            match self.postmaster() {
                Postmaster::Alive(pid) => {
                    if self.accepts_connections() {
                        return Ok(());
                    }
                    if !said {
                        said = true;
                        tracing::info!(
                            pid,
                            data = %self.data.display(),
                            "embedded Postgres is running but not accepting connections yet \
                             (starting up or recovering); waiting for it"
                        );
                    }
                    last = "running, but refusing connections (starting up or recovering)".into();
                }
                Postmaster::Dead(pid) => {
                    // A dead postmaster that is our child (see `SupervisedPostgres`) is reaped
                    // here; another's waits for its parent, and Postgres will not start while
                    // the lock file names a process that still exists.
                    reap_dead_children();
                    last = format!("its postmaster (PID {pid}) has exited and is not yet reaped");
                }
                Postmaster::Absent => match self.pg_ctl_start() {
                    Ok(()) => continue,
                    Err(err) if leftovers_still_exiting(&err) => last = err.to_string(),
                    Err(err) => return Err(err),
                },
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedPgError::NotReady {
                    data: self.data.clone(),
                    waited: timeout,
                    detail: last,
                });
            }
            // A bounded wait on a process outside our control, which tells us nothing when it
            // changes state.
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Whether the cluster answers a connection: `pg_isready` where it is installed (it is
    /// part of every PostgreSQL client package), else the state the postmaster writes to its
    /// lock file.
    fn accepts_connections(&self) -> bool {
        if self.bin_dir.join("pg_isready").is_file() {
            let socket = self.socket_dir.display().to_string();
            return self
                .run(
                    "pg_isready",
                    &["-q", "-h", &socket, "-U", SUPERUSER, "-d", "postgres"],
                )
                .is_ok();
        }
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().nth(7).map(|l| l.trim() == "ready"))
            .unwrap_or(false)
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedPgError> {
        let data = self.data.display().to_string();
        let log_path = self.data.join("postgres.log");
        let log = log_path.display().to_string();
        let mut options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c unix_socket_permissions=0700",
            self.socket_dir.display()
        );
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let logged = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        )
        .map_err(|err| match err {
            // pg_ctl says only "could not start server"; the reason is in the log.
            EmbeddedPgError::Tool { tool, detail } => EmbeddedPgError::Tool {
                tool,
                detail: format!("{detail}; {}", log_since(&log_path, logged)),
            },
            other => other,
        })
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

/// Whether a failed start is Postgres refusing because processes of a crashed postmaster are
/// still attached to its shared memory or named by its lock file: they exit by themselves
/// within moments of noticing their postmaster is gone, so trying again shortly succeeds.
fn leftovers_still_exiting(err: &EmbeddedPgError) -> bool {
    matches!(err, EmbeddedPgError::Tool { tool: "pg_ctl", detail }
        if detail.contains("is still in use") || detail.contains("already exists"))
}

/// What the cluster logged from byte `from` on (at most its last lines), for an error.
fn log_since(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let new = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = new.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    if tail.is_empty() {
        format!("nothing new in {}", path.display())
    } else {
        format!("its log ({}) says: {}", path.display(), tail.join(" | "))
    }
}

/// The state letter of process `pid` (`R`, `S`, `Z` …) from `/proc`, `None` if there is no such
/// process.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`: comm may hold spaces and parentheses, so look after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Reaps the dead `postgres` processes that are our children: the postmaster we started
/// (reparented to us when `pg_ctl` exits, as we are a child subreaper) and, after it died,
/// the server processes it left. Only those: other children are waited for by whoever
/// spawned them, and reaping them here would take their exit status away.
fn reap_dead_children() {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut fields = stat[close + 1..].split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if comm == "postgres" && state == Some("Z") && ppid == Some(me.as_str()) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// The first directory from `/` down to `path` (included) that a process running as
/// `uid`/`gid` may not pass through (no search permission), with its mode and owner.
/// Supplementary groups do not count: the tools run with those of the caller dropped.
fn first_untraversable(
    path: &Path,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
) -> Option<(PathBuf, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut at = PathBuf::new();
    for part in path.components() {
        at.push(part);
        // What does not exist yet is created by us below, and given to that user.
        let meta = std::fs::metadata(&at).ok()?;
        if !meta.is_dir() {
            return None;
        }
        let mode = meta.mode();
        let search = if meta.uid() == uid.as_raw() {
            mode & 0o100
        } else if meta.gid() == gid.as_raw() {
            mode & 0o010
        } else {
            mode & 0o001
        };
        if search == 0 {
            return Some((at, mode & 0o7777, meta.uid()));
        }
    }
    None
}

fn user_name(uid: nix::unistd::Uid) -> String {
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// The embedded cluster under `confab serve`: started (or adopted), watched, started again
/// when its postmaster dies (Postgres then recovers everything committed from its WAL), and
/// stopped when the server stops.
///
/// The server makes itself a child subreaper before starting the cluster, so the postmaster
/// becomes its child once `pg_ctl` exits: its death is a `SIGCHLD` noticed at once, and the
/// server reaps it, which a container's init may take seconds to do (until then `pg_ctl status`
/// calls the dead postmaster running and Postgres refuses to start). An adopted cluster is
/// not our child; a check every [`SupervisedPostgres::CHECK_INTERVAL`] notices its death.
/// A lock file under the cluster's folder keeps a second server from adopting (and later
/// stopping) the cluster of one that is still running.
pub struct SupervisedPostgres {
    pg: Arc<EmbeddedPostgres>,
    restarts: prometheus::IntCounter,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Held (locked) for as long as this server supervises the cluster.
    _lock: std::fs::File,
}

impl SupervisedPostgres {
    /// How often the postmaster of an adopted cluster is checked.
    pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

    /// Starts (or adopts) the cluster under `root` and watches it.
    pub async fn start(root: PathBuf, bin_dir: Option<PathBuf>) -> Result<Self, EmbeddedPgError> {
        std::fs::create_dir_all(&root)
            .map_err(|e| EmbeddedPgError::Setup(format!("creating {}: {e}", root.display())))?;
        let lock_path = root.join("confab-serve.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| {
            EmbeddedPgError::Setup(format!("creating {}: {e}", lock_path.display()))
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EmbeddedPgError::InUse {
                    root,
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(EmbeddedPgError::Setup(format!(
                    "locking {}: {e}",
                    lock_path.display()
                )));
            }
        }
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::debug!(error = %err, "not a child subreaper; the postmaster's death is noticed by polling");
        }
        // Registered before the cluster starts, so that no SIGCHLD of its postmaster is missed.
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| EmbeddedPgError::Setup(format!("listening for SIGCHLD: {e}")))?;
        let pg = tokio::task::spawn_blocking(move || {
            EmbeddedPostgres::start(&root, bin_dir.as_deref(), SERVER_SETTINGS)
        })
        .await
        .map_err(|e| EmbeddedPgError::Setup(e.to_string()))??;
        let pg = Arc::new(pg);
        let restarts = prometheus::IntCounter::new(
            "embedded_postgres_restarts_total",
            "Times the embedded Postgres was found dead and started again",
        )
        .map_err(|e| EmbeddedPgError::Setup(e.to_string()))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(watch(pg.clone(), restarts.clone(), sigchld, stopped));
        Ok(Self {
            pg,
            restarts,
            stop,
            task,
            _lock: lock,
        })
    }

    /// The running cluster.
    pub fn cluster(&self) -> &EmbeddedPostgres {
        &self.pg
    }

    /// The restart counter, for the server's metrics (`confab_embedded_postgres_restarts_total`).
    pub fn restarts(&self) -> prometheus::IntCounter {
        self.restarts.clone()
    }

    /// Stops watching, then stops the cluster.
    pub async fn stop(self) -> Result<(), EmbeddedPgError> {
        // First, or the watcher would start the cluster again as it goes down.
        self.stop.send_replace(true);
        let _ = self.task.await;
        let pg = self.pg.clone();
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .map_err(|e| EmbeddedPgError::Setup(e.to_string()))?
    }
}

/// The watcher: on every `SIGCHLD` and every [`SupervisedPostgres::CHECK_INTERVAL`], checks
/// the postmaster, and brings the cluster back when it is gone.
async fn watch(
    pg: Arc<EmbeddedPostgres>,
    restarts: prometheus::IntCounter,
    mut sigchld: tokio::signal::unix::Signal,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SupervisedPostgres::CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sigchld.recv() => reap_dead_children(),
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        if matches!(pg.postmaster(), Postmaster::Alive(_)) {
            continue;
        }
        tracing::warn!(
            data = %pg.data.display(),
            "embedded Postgres stopped unexpectedly (its postmaster is gone); starting it again, \
             it recovers everything committed from its write-ahead log"
        );
        restarts.inc();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let again = pg.clone();
            match tokio::task::spawn_blocking(move || again.ensure_running(READY_TIMEOUT)).await {
                Ok(Ok(())) => {
                    tracing::warn!(
                        after_ms = started.elapsed().as_millis() as u64,
                        "embedded Postgres is running again"
                    );
                    break;
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "embedded Postgres did not start again; retrying")
                }
                Err(err) => tracing::error!(error = %err, "embedded Postgres restart failed"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_folder_another_user_cannot_enter_is_found() {
        let top = tempfile::tempdir().unwrap();
        let home = top.path().join("home");
        let inner = home.join("project/data");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let owner = nix::unistd::getuid();
        // Someone else: the owner's bits do not apply to them, nor the group's.
        let (other_uid, other_gid) = (
            nix::unistd::Uid::from_raw(owner.as_raw() + 4242),
            nix::unistd::Gid::from_raw(nix::unistd::getgid().as_raw() + 4242),
        );
        let (dir, mode, found_owner) = first_untraversable(&inner, other_uid, other_gid).unwrap();
        assert_eq!(dir, home);
        assert_eq!(mode, 0o700);
        assert_eq!(found_owner, owner.as_raw());
        // Its owner gets through; so does anyone once it has o+x.
        assert_eq!(
            first_untraversable(&inner, owner, nix::unistd::getgid()),
            None
        );
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o701)).unwrap();
        assert_eq!(first_untraversable(&inner, other_uid, other_gid), None);
        // Group members need g+x.
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let group = nix::unistd::getgid();
        assert_eq!(
            first_untraversable(&inner, other_uid, group).map(|f| f.0),
            Some(home.clone())
        );
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o710)).unwrap();
        assert_eq!(first_untraversable(&inner, other_uid, group), None);
    }

    #[test]
    fn the_unreachable_error_names_the_folder_and_both_ways_out() {
        let err = EmbeddedPgError::Unreachable {
            user: "postgres".into(),
            dir: "/root".into(),
            mode: 0o700,
            owner: 0,
            target: "/root/confab/data/postgres/data".into(),
        }
        .to_string();
        assert!(err.contains("cannot enter /root (mode 0700"), "{err}");
        assert!(err.contains("`chmod o+x /root`"), "{err}");
        assert!(err.contains("`database.url`"), "{err}");
        assert!(!err.contains("Permission denied"), "{err}");
    }

    #[test]
    fn process_states_come_from_proc() {
        assert!(matches!(
            process_state(i32::try_from(std::process::id()).unwrap()),
            Some('R' | 'S')
        ));
        assert_eq!(process_state(i32::MAX), None);
    }
}
