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
//! SRV records (the spec's steps 3.3–3.4 and 5–6) are left out: they need a DNS library the
//! homeserver does not otherwise use, and a well-known document covers every deployment Confab
//! targets. Which addresses may then be connected to is [`crate::policy`]'s business.

use std::net::IpAddr;

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
}
