//! Server discovery: from a server name to the host and port to connect to (server-server API,
//! "Server discovery" → "Resolving server names"), as pure functions; the HTTP request for the
//! well-known document and the DNS lookup belong to the caller.
//!
//! Confab follows the spec's steps without SRV records:
//!
//! 1. An IP literal is used as is, with its port or 8448.
//! 2. A host name with an explicit port is used as is.
//! 3. Otherwise the caller fetches `https://<host>/.well-known/matrix/server`; if it answers with
//!    a valid `{"m.server": "<name>[:<port>]"}`, the delegated name is used with its port or 8448
//!    (an IP literal or a name with a port as is, the spec's steps 3.1–3.2).
//! 4. If the well-known lookup fails, `<host>:8448`.
//!
//! Answers are kept in a [`WellKnownCache`] as the spec recommends: for as long as the answer's
//! `Cache-Control: max-age` says, else 24 hours, never longer than 48 hours; an answer that says
//! "no delegation" (an error status, an invalid document) for an hour; a failure to get any answer
//! (no connection, a timeout, a 5xx) for a minute, so that a blip does not send federation to the
//! wrong port for an hour, while a host that is down is not asked again before every request.
//!
//! SRV records (the spec's steps 3.3–3.4 and 5–6) are left out: they need a DNS library the
//! homeserver does not otherwise use, and a well-known document covers every deployment Confab
//! targets. Which addresses may then be connected to is [`crate::policy`]'s business.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ids::ServerName;

/// The port federation uses when a name does not say ("Resolving server names").
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;

/// Where the delegation document lives on a server name's host.
pub const WELL_KNOWN_PATH: &str = "/.well-known/matrix/server";

/// The largest well-known document read; real ones are a few dozen bytes.
pub const MAX_WELL_KNOWN_BYTES: usize = 16 * 1024;

/// Why a well-known document was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The body is not a JSON object.
    #[error("the well-known document is not a JSON object")]
    NotAnObject,
    /// `m.server` is missing or not a string.
    #[error("the well-known document has no m.server string")]
    MissingServer,
    /// `m.server` is not a valid server name.
    #[error("m.server in the well-known document is not a valid server name")]
    InvalidServer,
}

/// Where to send requests for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host to connect to and to check the TLS certificate against: a DNS name, or an IP
    /// literal (IPv6 in brackets, as URLs want it).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Destination {
    /// The host as an IP address, if it is a literal; such hosts are not resolved, so their
    /// address must be checked directly.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// The base URL (`scheme://host:port`) for `scheme`.
    pub fn base_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// The destination for `name` when no well-known lookup is needed or it failed: the name's own
/// host and its port or 8448 (steps 1, 2 and 4).
pub fn direct_destination(name: &ServerName) -> Destination {
    Destination {
        host: name.host().to_owned(),
        port: name.port().unwrap_or(DEFAULT_FEDERATION_PORT),
    }
}

/// Whether `name` needs a well-known lookup first (step 3): only host names without a port.
pub fn needs_well_known(name: &ServerName) -> bool {
    name.port().is_none() && direct_destination(name).ip().is_none()
}

/// Parses a well-known document and returns the delegated server name (`m.server`).
pub fn parse_well_known(body: &[u8]) -> Result<ServerName, DiscoveryError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| DiscoveryError::NotAnObject)?;
    let object = value.as_object().ok_or(DiscoveryError::NotAnObject)?;
    let server = object
        .get("m.server")
        .and_then(Value::as_str)
        .ok_or(DiscoveryError::MissingServer)?;
    ServerName::parse(server).map_err(|_| DiscoveryError::InvalidServer)
}

/// How long a well-known document is used when its answer carries no `max-age`.
pub const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest a well-known document is used, whatever its headers say.
pub const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 60 * 60);
/// How long an answer meaning "no delegation" (an error status, an invalid document) is used.
pub const WELL_KNOWN_NEGATIVE_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a failure to get any answer (connection, timeout, 5xx) is remembered.
pub const WELL_KNOWN_FAILURE_TTL: Duration = Duration::from_secs(60);

/// How long to use a well-known document served with `cache_control` (the `Cache-Control`
/// header's value, if any): its `max-age`, or [`WELL_KNOWN_DEFAULT_TTL`], at most
/// [`WELL_KNOWN_MAX_TTL`]; `no-store` and `no-cache` mean not at all.
pub fn well_known_ttl(cache_control: Option<&str>) -> Duration {
    let mut ttl = WELL_KNOWN_DEFAULT_TTL;
    for directive in cache_control.unwrap_or_default().split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(seconds) = directive
            .strip_prefix("max-age=")
            .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
        {
            ttl = Duration::from_secs(seconds);
        }
    }
    ttl.min(WELL_KNOWN_MAX_TTL)
}

/// Well-known answers per server name: the delegated name, or `None` for "connect directly".
/// Bounded: when full, expired answers are dropped first, then the one expiring soonest.
#[derive(Debug)]
pub struct WellKnownCache {
    entries: Mutex<HashMap<ServerName, (Option<ServerName>, Instant)>>,
    capacity: usize,
}

impl WellKnownCache {
    /// A cache of at most `capacity` server names.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ServerName, (Option<ServerName>, Instant)>> {
        // A map of plain values cannot be left half-updated; poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer kept for `server`, if it is still fresh at `now`: `Some(None)` means "no
    /// delegation, connect directly".
    pub fn get(&self, server: &ServerName, now: Instant) -> Option<Option<ServerName>> {
        let entries = self.entries();
        let (delegated, expires) = entries.get(server)?;
        (now < *expires).then(|| delegated.clone())
    }

    /// Keeps `delegated` as the answer for `server` for `ttl` from `now`.
    pub fn insert(
        &self,
        server: &ServerName,
        delegated: Option<ServerName>,
        ttl: Duration,
        now: Instant,
    ) {
        let mut entries = self.entries();
        if ttl.is_zero() {
            entries.remove(server);
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(server) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(name, _)| name.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(server.clone(), (delegated, now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn literals_and_explicit_ports_skip_well_known() {
        for (server, host, port) in [
            ("1.2.3.4", "1.2.3.4", 8448),
            ("1.2.3.4:8008", "1.2.3.4", 8008),
            ("[2001:db8::1]", "[2001:db8::1]", 8448),
            ("[::1]:9000", "[::1]", 9000),
            ("example.org:443", "example.org", 443),
        ] {
            let n = name(server);
            assert!(!needs_well_known(&n), "{server}");
            assert_eq!(
                direct_destination(&n),
                Destination {
                    host: host.into(),
                    port
                }
            );
        }
        assert!(needs_well_known(&name("example.org")));
        assert_eq!(
            direct_destination(&name("example.org")).base_url("https"),
            "https://example.org:8448"
        );
    }

    #[test]
    fn destination_ip() {
        let d = direct_destination(&name("[::1]:8448"));
        assert_eq!(d.ip(), Some("::1".parse().unwrap()));
        assert_eq!(d.base_url("http"), "http://[::1]:8448");
        assert_eq!(direct_destination(&name("example.org")).ip(), None);
    }

    #[test]
    fn well_known_documents() {
        assert_eq!(
            parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#),
            Ok(name("matrix.example.org:443"))
        );
        assert_eq!(
            parse_well_known(br#"{"m.server": "delegated.example", "other": 1}"#),
            Ok(name("delegated.example"))
        );
        assert_eq!(parse_well_known(b"[]"), Err(DiscoveryError::NotAnObject));
        assert_eq!(
            parse_well_known(b"<html>"),
            Err(DiscoveryError::NotAnObject)
        );
        assert_eq!(
            parse_well_known(br#"{"m.server": 5}"#),
            Err(DiscoveryError::MissingServer)
        );
        assert_eq!(
            parse_well_known(br#"{"m.server": "https://x.example/"}"#),
            Err(DiscoveryError::InvalidServer)
        );
    }

    #[test]
    fn well_known_lifetimes_follow_cache_control_within_the_cap() {
        assert_eq!(well_known_ttl(None), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(well_known_ttl(Some("public")), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(
            well_known_ttl(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(
            well_known_ttl(Some("Max-Age=\"30\"")),
            Duration::from_secs(30)
        );
        assert_eq!(well_known_ttl(Some("max-age=31536000")), WELL_KNOWN_MAX_TTL);
        assert_eq!(well_known_ttl(Some("max-age=60, no-store")), Duration::ZERO);
        assert_eq!(well_known_ttl(Some("no-cache")), Duration::ZERO);
        assert_eq!(
            well_known_ttl(Some("max-age=-5")),
            WELL_KNOWN_DEFAULT_TTL,
            "an unreadable max-age is ignored"
        );
    }

    #[test]
    fn cached_answers_expire_and_the_cache_stays_bounded() {
        let cache = WellKnownCache::new(2);
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        cache.insert(
            &name("a.example"),
            Some(name("a.example:443")),
            10 * second,
            t0,
        );
        cache.insert(&name("b.example"), None, 5 * second, t0);
        assert_eq!(
            cache.get(&name("a.example"), t0 + 9 * second),
            Some(Some(name("a.example:443")))
        );
        assert_eq!(cache.get(&name("b.example"), t0), Some(None));
        assert_eq!(cache.get(&name("a.example"), t0 + 10 * second), None);
        assert_eq!(cache.get(&name("c.example"), t0), None);

        // Full: the answer expiring soonest (b) makes room.
        cache.insert(&name("c.example"), None, 20 * second, t0 + second);
        assert_eq!(cache.get(&name("b.example"), t0 + second), None);
        assert!(cache.get(&name("a.example"), t0 + second).is_some());
        assert!(cache.get(&name("c.example"), t0 + second).is_some());
        // Expired answers go first, before any fresh one.
        cache.insert(&name("d.example"), None, 20 * second, t0 + 11 * second);
        assert!(cache.get(&name("c.example"), t0 + 11 * second).is_some());
        assert!(cache.get(&name("d.example"), t0 + 11 * second).is_some());

        // A zero lifetime forgets what was kept.
        cache.insert(&name("d.example"), None, Duration::ZERO, t0 + 12 * second);
        assert_eq!(cache.get(&name("d.example"), t0 + 12 * second), None);
    }
}
