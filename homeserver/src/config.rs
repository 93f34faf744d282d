//! The typed settings, loaded with the `config` crate from the compiled-in defaults
//! (`config/default.toml`), an optional file, and `CONFAB__SECTION__KEY` environment variables.
//! Unknown keys and invalid values stop start-up with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_federation::ids::ServerName;
use serde::Deserialize;

/// The defaults, documented line by line.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or merged, or a key is unknown or of the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable.
    #[error("configuration: `{key}` {reason}")]
    Invalid {
        /// The offending key, `section.key`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Every setting of a homeserver. See `config/default.toml` for what each one does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub rooms: RoomSettings,
    pub sessions: SessionSettings,
    pub limits: Limits,
    pub websocket: WebSocketSettings,
    pub ice: IceSettings,
    pub federation: FederationSettings,
    pub admin: AdminSettings,
    pub cluster: ClusterSettings,
    pub log: LogSettings,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// The server name in every id this server mints.
    pub name: ServerName,
    /// Listen address for HTTP.
    pub listen: SocketAddr,
    /// The URL people reach the server at.
    pub public_url: String,
    /// State folder (embedded Postgres, keys).
    pub data_dir: PathBuf,
    /// Built web client to serve at `/`.
    pub web_client_dir: PathBuf,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// PEM certificate chain for serving HTTPS directly; empty for plain HTTP.
    pub tls_cert_file: PathBuf,
    /// PEM private key of that certificate; empty for plain HTTP.
    pub tls_key_file: PathBuf,
    /// Reverse proxies whose `X-Forwarded-For` names the client (IPs or CIDR blocks).
    pub trusted_proxies: Vec<String>,
}

impl ServerSettings {
    /// The certificate chain file, if HTTPS is configured.
    pub fn tls_cert_file(&self) -> Option<&Path> {
        Some(self.tls_cert_file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The private key file, if HTTPS is configured.
    pub fn tls_key_file(&self) -> Option<&Path> {
        Some(self.tls_key_file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The trusted proxies, parsed.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        parse_networks(&self.trusted_proxies)
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL; empty for the embedded cluster.
    pub url: String,
    /// Pool size.
    pub pool_size: usize,
    /// Longest wait for a pooled connection (free, new or rechecked) before a request is
    /// answered `unavailable`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest a statement waits for a lock (Postgres `lock_timeout`) before it is cancelled
    /// and the request answered `unavailable`.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// Where the PostgreSQL binaries are; empty to search.
    pub postgres_bin_dir: String,
}

/// `[rooms]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// Idle time before an empty room is deleted.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// Sweeper period.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Connected participants per room.
    pub max_participants: usize,
    /// How long the host may have no device connected while others are in the room before the
    /// room gets a new host (a reload or a dropped network is shorter).
    #[serde(with = "humantime_serde")]
    pub host_absence_grace: Duration,
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// A guest session in no room and unused for this long is deleted.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
}

impl SessionSettings {
    /// How stale a session's `last_seen_ts` may get before an authentication records the use:
    /// one write an hour at most per session, however busy it is, instead of one per request.
    pub const LAST_SEEN_RESOLUTION: Duration = Duration::from_secs(3600);
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub hard_frame_bytes: usize,
    pub max_event_bytes: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub max_connections_per_user: usize,
    pub max_connections_per_address: usize,
    pub max_rooms_per_user: usize,
    pub send_queue_frames: usize,
    pub sessions_per_minute: u32,
    pub join_failures_per_minute: u32,
}

/// `[websocket]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    pub allowed_origins: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub client_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
}

/// `[ice]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceSettings {
    /// STUN URLs, handed to anyone (`GET /config`) and to room members.
    pub stun_urls: Vec<String>,
    /// TURN URLs, handed with credentials only to joined members of a live room.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`; empty: no TURN.
    pub turn_secret: String,
    /// Lifetime of the credentials; clients renew them before they run out.
    #[serde(with = "humantime_serde")]
    pub turn_credential_ttl: Duration,
}

impl IceSettings {
    /// The shortest `turn_credential_ttl`: clients renew at four fifths of the lifetime, and a
    /// shorter one would have them asking every few seconds.
    pub const MIN_CREDENTIAL_TTL: Duration = Duration::from_secs(60);

    /// Whether TURN is configured (URLs and a secret).
    pub fn turn_enabled(&self) -> bool {
        !self.turn_urls.is_empty() && !self.turn_secret.is_empty()
    }
}

impl std::fmt::Debug for IceSettings {
    // Settings are logged and printed in errors; the TURN secret must never be.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceSettings")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &redacted(&self.turn_secret))
            .field("turn_credential_ttl", &self.turn_credential_ttl)
            .finish()
    }
}

/// What a secret looks like in `Debug` output: empty stays visibly empty.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

/// `[federation]`: talking to other homeservers (see `homeserver/src/federation/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// Serve the federation endpoints (key document, `/_matrix/federation/…`) and talk to
    /// other servers at all.
    pub enabled: bool,
    /// Talk to other servers over plain `http://` instead of HTTPS; for tests and local demos.
    pub allow_insecure_http: bool,
    /// Connect to loopback, private, link-local and unique-local addresses; for tests and
    /// local demos (otherwise federation could be used to probe the operator's network).
    pub allow_private_addresses: bool,
    /// Servers never federated with, inbound or outbound; an entry without a port covers every
    /// port of that host.
    pub denied_servers: Vec<ServerName>,
    /// If not empty, the only servers federated with.
    pub allowed_servers: Vec<ServerName>,
    /// Time limit of every outbound request, connecting and reading the answer included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest answer read from another server, in bytes.
    pub max_response_bytes: usize,
    /// Largest federation request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Ceiling of the first retry delay of a failed transaction; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest delay between retries of a failed transaction.
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
    /// Ephemeral events (typing, signaling) held per destination waiting to be sent.
    pub ephemeral_queue: usize,
    /// Received transactions handled at once, from all servers together (one per server).
    pub max_inbound_transactions: usize,
    /// Chat messages, and signaling and typing messages, each, that one other server's users
    /// together may send to our rooms per second (presence gets a tenth).
    pub remote_server_events_per_second: u32,
    /// The same for one user of another server.
    pub remote_user_events_per_second: u32,
    /// How long a device connected through another server counts without being confirmed.
    #[serde(with = "humantime_serde")]
    pub presence_lease: Duration,
    /// A destination failing without a break for longer than this is given up: its queued
    /// persistent events are dropped and no new ones are queued until it is back.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
}

/// `[admin]`: the operator's listener (admin API, metrics) and `confab admin`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address of the operator's surface (admin API and `/metrics`), which the public
    /// listener never serves; `None` (an empty string) serves neither anywhere.
    #[serde(deserialize_with = "optional_address")]
    pub listen: Option<SocketAddr>,
    /// Bearer token of the admin API; empty disables it.
    pub token: String,
    /// IPs or CIDR blocks allowed to use the admin listener (admin API and metrics); empty
    /// allows any address.
    pub allowed_addresses: Vec<String>,
}

impl std::fmt::Debug for AdminSettings {
    // Settings are logged and printed in errors; the token must never be.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &redacted(&self.token))
            .field("allowed_addresses", &self.allowed_addresses)
            .finish()
    }
}

/// A socket address, or nothing for an empty string (a listener switched off).
fn optional_address<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = String::deserialize(deserializer)?;
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{raw:?} is not an address and port (e.g. \"127.0.0.1:9008\"), nor empty"
        ))
    })
}

/// Whether two listen addresses would take the same port (an unspecified address takes it on
/// every address of its family, and `[::]` usually on IPv4 ones too).
fn listeners_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl AdminSettings {
    /// The allowed addresses, parsed: a bare IP is a block of one address.
    pub fn allowed_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        parse_networks(&self.allowed_addresses)
    }
}

/// IPs and CIDR blocks; a bare IP is a block of one address.
fn parse_networks(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|raw| raw.trim())
        // An empty environment variable reads as one empty entry: it means "no list".
        .filter(|raw| !raw.is_empty())
        .map(|raw| {
            raw.parse::<ipnet::IpNet>()
                .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{raw:?} is neither an IP address nor a CIDR block"))
        })
        .collect()
}

/// `[cluster]`: several workers of one homeserver on one database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This worker's id; empty when the process is its homeserver's only one.
    pub worker_id: String,
    /// How long a worker that stopped renewing its lease still counts as alive.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl ClusterSettings {
    /// Whether this process is one of several workers.
    pub fn is_worker(&self) -> bool {
        !self.worker_id.is_empty()
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads defaults, then `file`, then the given `CONFAB__…` variables (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let env = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CONFAB__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CONFAB")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("websocket.allowed_origins")
                .with_list_parse_key("ice.stun_urls")
                .with_list_parse_key("ice.turn_urls")
                .with_list_parse_key("federation.denied_servers")
                .with_list_parse_key("federation.allowed_servers")
                .with_list_parse_key("admin.allowed_addresses")
                .with_list_parse_key("server.trusted_proxies")
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if !(self.server.public_url.starts_with("http://")
            || self.server.public_url.starts_with("https://"))
        {
            return invalid("server.public_url", "must start with http:// or https://");
        }
        match (self.server.tls_cert_file(), self.server.tls_key_file()) {
            (Some(_), None) => {
                return invalid(
                    "server.tls_key_file",
                    "must be set too when server.tls_cert_file is (both or neither)",
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "server.tls_cert_file",
                    "must be set too when server.tls_key_file is (both or neither)",
                );
            }
            _ => {}
        }
        let id = &self.cluster.worker_id;
        if id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return invalid(
                "cluster.worker_id",
                "must be empty or 1 to 32 of a-z, 0-9, '-' and '_'",
            );
        }
        if self.cluster.is_worker() && self.database.url.trim().is_empty() {
            return invalid(
                "cluster.worker_id",
                "needs database.url: workers share one external database, and the embedded one \
                 belongs to a single process",
            );
        }
        if self.cluster.lease < Duration::from_secs(3) {
            return invalid("cluster.lease", "must be at least 3s");
        }
        if self.rooms.max_participants < 2 {
            return invalid("rooms.max_participants", "must be at least 2");
        }
        if self.rooms.idle_ttl.is_zero() {
            return invalid("rooms.idle_ttl", "must be longer than zero");
        }
        if self.sessions.idle_ttl < 2 * SessionSettings::LAST_SEEN_RESOLUTION {
            // Use is recorded at most once an hour: a shorter idle time could delete a
            // session that is in use.
            return invalid("sessions.idle_ttl", "must be at least 2h");
        }
        if self.rooms.host_absence_grace < Duration::from_secs(1) {
            return invalid("rooms.host_absence_grace", "must be at least 1s");
        }
        if self.rooms.sweep_interval.is_zero() {
            return invalid("rooms.sweep_interval", "must be longer than zero");
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.database.connect_timeout.is_zero() {
            return invalid("database.connect_timeout", "must be longer than zero");
        }
        if self.database.lock_timeout < Duration::from_millis(1) {
            return invalid("database.lock_timeout", "must be at least 1ms");
        }
        if self.limits.max_event_bytes >= self.limits.max_frame_bytes {
            return invalid(
                "limits.max_event_bytes",
                "must be smaller than limits.max_frame_bytes",
            );
        }
        if self.limits.max_frame_bytes > self.limits.hard_frame_bytes {
            return invalid(
                "limits.max_frame_bytes",
                "must not exceed limits.hard_frame_bytes",
            );
        }
        if self.limits.messages_per_second == 0 || self.limits.message_burst == 0 {
            return invalid("limits.messages_per_second", "must be at least 1");
        }
        if self.limits.send_queue_frames < 16 {
            return invalid("limits.send_queue_frames", "must be at least 16");
        }
        if self.limits.sessions_per_minute == 0 {
            return invalid("limits.sessions_per_minute", "must be at least 1");
        }
        if self.limits.join_failures_per_minute == 0 {
            return invalid("limits.join_failures_per_minute", "must be at least 1");
        }
        if self.limits.max_connections_per_address == 0 {
            return invalid("limits.max_connections_per_address", "must be at least 1");
        }
        if let Err(reason) = self.server.trusted_proxy_networks() {
            return invalid("server.trusted_proxies", &reason);
        }
        if self.websocket.heartbeat_interval >= self.websocket.client_timeout {
            return invalid(
                "websocket.heartbeat_interval",
                "must be shorter than websocket.client_timeout",
            );
        }
        if self.federation.request_timeout.is_zero() {
            return invalid("federation.request_timeout", "must be longer than zero");
        }
        if self.federation.max_response_bytes < 1024 {
            return invalid("federation.max_response_bytes", "must be at least 1024");
        }
        if self.federation.max_request_bytes < 1024 {
            return invalid("federation.max_request_bytes", "must be at least 1024");
        }
        if self.federation.give_up_after.is_zero() {
            return invalid("federation.give_up_after", "must be longer than zero");
        }
        if self.federation.retry_cap < self.federation.retry_base {
            return invalid(
                "federation.retry_cap",
                "must be at least federation.retry_base",
            );
        }
        if self.federation.presence_lease < Duration::from_millis(300) {
            return invalid("federation.presence_lease", "must be at least 300ms");
        }
        if self.federation.ephemeral_queue == 0 {
            return invalid("federation.ephemeral_queue", "must be at least 1");
        }
        if self.federation.remote_server_events_per_second == 0
            || self.federation.remote_user_events_per_second == 0
        {
            return invalid(
                "federation.remote_server_events_per_second",
                "this and federation.remote_user_events_per_second must be at least 1",
            );
        }
        // Each holds a pooled connection while it writes: some must stay for everyone else.
        let inbound = self.federation.max_inbound_transactions;
        if inbound == 0 || inbound >= self.database.pool_size {
            return invalid(
                "federation.max_inbound_transactions",
                "must be at least 1 and less than database.pool_size",
            );
        }
        if let Err(reason) = self.admin.allowed_networks() {
            return invalid("admin.allowed_addresses", &reason);
        }
        if let Some(admin) = self.admin.listen
            && listeners_collide(admin, self.server.listen)
        {
            return invalid(
                "admin.listen",
                "must not take server.listen's port: the admin API and metrics have a \
                 listener of their own, which the public one never serves",
            );
        }
        if self.ice.turn_credential_ttl < IceSettings::MIN_CREDENTIAL_TTL {
            return invalid("ice.turn_credential_ttl", "must be at least 1m");
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return invalid(
                "admin.token",
                "must be empty or at least 16 characters long",
            );
        }
        if self.log.level.trim().is_empty() {
            return invalid("log.level", "must not be empty");
        }
        Ok(())
    }

    /// The `Origin` values allowed on the WebSocket handshake.
    pub fn allowed_origins(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.server.public_url.trim_end_matches('/')).chain(
            self.websocket
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/')),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8008");
        assert_eq!(s.rooms.idle_ttl, Duration::from_secs(30 * 60));
        assert_eq!(s.sessions.idle_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.rooms.max_participants, 8);
        assert!(s.database.url.is_empty());
        assert_eq!(s.log.format, LogFormat::Text);
        assert!(s.admin.token.is_empty());
        assert_eq!(s.admin.listen, Some("127.0.0.1:9008".parse().unwrap()));
        assert_eq!(s.ice.turn_credential_ttl, Duration::from_secs(3600));
        let nets = s.admin.allowed_networks().unwrap();
        assert!(
            nets.iter()
                .any(|n| n.contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()))
        );
        assert!(
            nets.iter()
                .any(|n| n.contains(&"::1".parse::<std::net::IpAddr>().unwrap()))
        );
    }

    #[test]
    fn environment_overrides() {
        let s = Settings::load_from(
            None,
            env(&[
                ("CONFAB__SERVER__LISTEN", "127.0.0.1:9000"),
                ("CONFAB__ROOMS__IDLE_TTL", "2s"),
                ("CONFAB__ROOMS__MAX_PARTICIPANTS", "3"),
                (
                    "CONFAB__WEBSOCKET__ALLOWED_ORIGINS",
                    "http://a.test,http://b.test",
                ),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen.port(), 9000);
        assert_eq!(s.rooms.idle_ttl, Duration::from_secs(2));
        assert_eq!(s.rooms.max_participants, 3);
        assert_eq!(
            s.websocket.allowed_origins,
            vec!["http://a.test", "http://b.test"]
        );
    }

    #[test]
    fn admin_addresses_from_the_environment() {
        let s = Settings::load_from(
            None,
            env(&[(
                "CONFAB__ADMIN__ALLOWED_ADDRESSES",
                "10.0.0.1, 192.168.0.0/16",
            )]),
        )
        .unwrap();
        assert_eq!(s.admin.allowed_networks().unwrap().len(), 2);
        let s =
            Settings::load_from(None, env(&[("CONFAB__ADMIN__ALLOWED_ADDRESSES", "")])).unwrap();
        assert!(s.admin.allowed_networks().unwrap().is_empty());
        let err = Settings::load_from(None, env(&[("CONFAB__ADMIN__TOKEN", "short")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.token"), "{err}");
        assert!(
            !format!(
                "{:?}",
                Settings::load_from(
                    None,
                    env(&[("CONFAB__ADMIN__TOKEN", "a-secret-of-sixteen")])
                )
                .unwrap()
            )
            .contains("a-secret")
        );
    }

    #[test]
    fn the_admin_listener_is_its_own() {
        let s = Settings::load_from(None, env(&[("CONFAB__ADMIN__LISTEN", "")])).unwrap();
        assert_eq!(s.admin.listen, None);
        let s = Settings::load_from(None, env(&[("CONFAB__ADMIN__LISTEN", "[::1]:9100")])).unwrap();
        assert_eq!(s.admin.listen, Some("[::1]:9100".parse().unwrap()));
        for (public, admin) in [
            ("127.0.0.1:8008", "127.0.0.1:8008"),
            ("0.0.0.0:8008", "127.0.0.1:8008"),
            ("127.0.0.1:8008", "[::]:8008"),
        ] {
            let err = Settings::load_from(
                None,
                env(&[
                    ("CONFAB__SERVER__LISTEN", public),
                    ("CONFAB__ADMIN__LISTEN", admin),
                ]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("admin.listen"), "{public} {admin}: {err}");
        }
        // Another address on the same port is another listener.
        Settings::load_from(
            None,
            env(&[
                ("CONFAB__SERVER__LISTEN", "192.0.2.1:8008"),
                ("CONFAB__ADMIN__LISTEN", "127.0.0.1:8008"),
            ]),
        )
        .unwrap();
        let err = Settings::load_from(None, env(&[("CONFAB__ADMIN__LISTEN", "localhost")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn turn_credentials_live_at_least_a_minute_and_the_secret_stays_out_of_debug() {
        let err = Settings::load_from(None, env(&[("CONFAB__ICE__TURN_CREDENTIAL_TTL", "30s")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ice.turn_credential_ttl"), "{err}");
        let s = Settings::load_from(
            None,
            env(&[("CONFAB__ICE__TURN_SECRET", "a-turn-secret-to-keep")]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("a-turn-secret"));
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[rooms]\nidle_tl = \"1m\"\n").unwrap();
        let err = Settings::load_from(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_tl"), "{err}");
        let err = Settings::load_from(None, env(&[("CONFAB__SERVER__LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../../README.md");
        let mut section = "";
        let mut keys = 0;
        for line in DEFAULT_TOML.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
                let key = format!("`{section}.{}`", key.trim());
                assert!(readme.contains(&key), "README.md does not document {key}");
                keys += 1;
            }
        }
        assert!(keys > 20, "parsed only {keys} settings");
    }

    /// The README's configuration table gives each setting's default as `config/default.toml`
    /// has it (strings without their quotes, the empty string as "empty").
    #[test]
    fn readme_defaults_agree_with_default_toml() {
        let readme = include_str!("../../README.md");
        let mut section = "";
        for line in DEFAULT_TOML.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
                continue;
            }
            let Some((key, value)) = line.split_once('=').filter(|_| !line.starts_with('#')) else {
                continue;
            };
            let name = format!("`{section}.{}`", key.trim());
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("README.md has no table row for {name}"));
            let documented = row.split('|').nth(2).unwrap().trim();
            let value = value.trim();
            let expected = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some("") => "empty".to_owned(),
                Some(text) => format!("`{text}`"),
                None => format!("`{value}`"),
            };
            assert_eq!(documented, expected, "README.md's default of {name}");
        }
    }

    #[test]
    fn too_short_a_session_idle_time_is_refused() {
        let err = Settings::load_from(None, env(&[("CONFAB__SESSIONS__IDLE_TTL", "30m")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sessions.idle_ttl"), "{err}");
        let s = Settings::load_from(None, env(&[("CONFAB__SESSIONS__IDLE_TTL", "2h")])).unwrap();
        assert_eq!(s.sessions.idle_ttl, Duration::from_secs(7200));
    }

    #[test]
    fn example_configs_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
        for (file, name) in [("alpha.toml", "alpha:8008"), ("beta.toml", "beta:8008")] {
            let s = Settings::load_from(Some(&examples.join(file)), env(&[])).unwrap();
            assert_eq!(s.server.name.to_string(), name);
            assert!(s.federation.allow_insecure_http && s.federation.allow_private_addresses);
            assert!(s.database.url.ends_with(name.split(':').next().unwrap()));
        }
        // The workers of docker/compose.workers.yaml: each is given its id there.
        let workers = examples.join("workers.toml");
        let s = Settings::load_from(Some(&workers), env(&[("CONFAB__CLUSTER__WORKER_ID", "w2")]))
            .unwrap();
        assert!(s.cluster.is_worker() && !s.database.url.is_empty());
        assert_eq!(s.server.trusted_proxies, ["172.28.0.10"]);
    }

    #[test]
    fn invalid_values_are_named() {
        let err = Settings::load_from(None, env(&[("CONFAB__SERVER__LISTEN", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = Settings::load_from(None, env(&[("CONFAB__ROOMS__IDLE_TTL", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_ttl"), "{err}");
        let err = Settings::load_from(None, env(&[("CONFAB__SERVER__NAME", "bad name")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("name"), "{err}");
        let err = Settings::load_from(
            None,
            env(&[("CONFAB__ADMIN__ALLOWED_ADDRESSES", "10.0.0.0/8,nope")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin.allowed_addresses"), "{err}");
        let err = Settings::load_from(None, env(&[("CONFAB__SERVER__TLS_CERT_FILE", "c.pem")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls_key_file"), "{err}");
        let err = Settings::load_from(None, env(&[("CONFAB__SERVER__TLS_KEY_FILE", "k.pem")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls_cert_file"), "{err}");
        let err = Settings::load_from(None, env(&[("CONFAB__ROOMS__MAX_PARTICIPANTS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rooms.max_participants"), "{err}");
    }
}
