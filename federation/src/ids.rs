//! Identifiers shared by every Confab server: server names, user ids, room ids and device ids.
//!
//! They follow the Matrix grammar (`@localpart:server`, `!opaque:server`) restricted to what a
//! Confab server ever mints, so that anything received from the network is validated once, at the
//! edge, and carried around as a typed value afterwards.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is longer than Matrix's 255-byte limit for ids.
    #[error("identifier is longer than 255 bytes")]
    TooLong,
    /// The identifier does not start with the sigil its kind requires.
    #[error("identifier must start with '{0}'")]
    MissingSigil(char),
    /// There is no `:server_name` part.
    #[error("identifier has no ':server_name' part")]
    MissingServerName,
    /// The part before the server name is empty or has characters outside the allowed set.
    #[error("identifier has an invalid local part")]
    InvalidLocalpart,
    /// The server name is not a valid hostname, IPv4 or bracketed IPv6 address with optional port.
    #[error("invalid server name")]
    InvalidServerName,
    /// A device id must be 1–64 ASCII letters or digits.
    #[error("invalid device id")]
    InvalidDeviceId,
}

const MAX_ID_LEN: usize = 255;

/// A homeserver's name: `host[:port]`, where host is a DNS name, an IPv4 address or a bracketed
/// IPv6 literal (Matrix server-server API, "Server names").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    /// Parses and validates a server name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_ID_LEN {
            return Err(IdError::InvalidServerName);
        }
        let (host, port) = split_host_port(s)?;
        if let Some(port) = port {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(IdError::InvalidServerName);
            }
            if port.parse::<u16>().is_err() {
                return Err(IdError::InvalidServerName);
            }
        }
        if let Some(v6) = host.strip_prefix('[') {
            let inner = v6.strip_suffix(']').ok_or(IdError::InvalidServerName)?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| IdError::InvalidServerName)?;
        } else if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(IdError::InvalidServerName);
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without a port (brackets kept for IPv6 literals).
    pub fn host(&self) -> &str {
        split_host_port(&self.0).map(|(h, _)| h).unwrap_or(&self.0)
    }

    /// The explicit port, if the name has one.
    pub fn port(&self) -> Option<u16> {
        split_host_port(&self.0)
            .ok()
            .and_then(|(_, p)| p)
            .and_then(|p| p.parse().ok())
    }
}

/// Splits `host[:port]`, minding the colons inside a bracketed IPv6 literal.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), IdError> {
    if s.starts_with('[') {
        let end = s.find(']').ok_or(IdError::InvalidServerName)?;
        let (host, rest) = s.split_at(end + 1);
        match rest {
            "" => Ok((host, None)),
            _ => rest
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or(IdError::InvalidServerName),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => Ok((h, Some(p))),
            None => Ok((s, None)),
        }
    }
}

/// Splits `<sigil><local>:<server>` and validates both halves.
fn parse_sigiled(s: &str, sigil: char) -> Result<(String, ServerName), IdError> {
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    let rest = s.strip_prefix(sigil).ok_or(IdError::MissingSigil(sigil))?;
    let (local, server) = rest.split_once(':').ok_or(IdError::MissingServerName)?;
    if local.is_empty() || !local.bytes().all(is_local_char) {
        return Err(IdError::InvalidLocalpart);
    }
    Ok((local.to_owned(), ServerName::parse(server)?))
}

/// The characters Matrix allows in user localparts (lower case only), which also covers every
/// opaque room id Confab mints.
fn is_local_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'=' | b'-' | b'/')
}

/// Random lower-case letters and digits, for the opaque parts of the ids a server mints.
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

macro_rules! server_scoped_id {
    ($(#[$doc:meta])* $name:ident, $sigil:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            full: String,
            server: ServerName,
        }

        impl $name {
            /// Parses and validates an identifier received from outside.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let (_, server) = parse_sigiled(s, $sigil)?;
                Ok(Self { full: s.to_owned(), server })
            }

            /// Builds an identifier from a local part this server chose.
            pub fn new(localpart: &str, server: &ServerName) -> Result<Self, IdError> {
                Self::parse(&format!("{}{}:{}", $sigil, localpart, server.as_str()))
            }

            /// The whole identifier, sigil included.
            pub fn as_str(&self) -> &str {
                &self.full
            }

            /// The part between the sigil and the server name.
            pub fn localpart(&self) -> &str {
                let end = self.full.len() - self.server.as_str().len() - 1;
                &self.full[1..end]
            }

            /// The server the identifier belongs to.
            pub fn server_name(&self) -> &ServerName {
                &self.server
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.full)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.full)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

server_scoped_id!(
    /// A user: `@localpart:server_name`. Guests get a random localpart.
    UserId,
    '@'
);
server_scoped_id!(
    /// A room: `!opaque:server_name`; the server named is the room's origin, its authority.
    RoomId,
    '!'
);

impl RoomId {
    /// Mints a fresh room id on `server` with 18 random characters (about 93 bits).
    pub fn generate(server: &ServerName) -> Self {
        Self {
            full: format!("!{}:{}", random_alphanumeric(18), server.as_str()),
            server: server.clone(),
        }
    }
}

impl UserId {
    /// Mints a fresh guest user id on `server`.
    pub fn generate_guest(server: &ServerName) -> Self {
        Self {
            full: format!("@guest-{}:{}", random_alphanumeric(12), server.as_str()),
            server: server.clone(),
        }
    }
}

/// One device (one browser's guest session) of a user: 1–64 ASCII letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses and validates a device id received from outside.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(IdError::InvalidDeviceId);
        }
        Ok(Self(s.to_owned()))
    }

    /// Mints a fresh device id (10 upper-case letters, as Matrix servers do).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self(
            (0..10)
                .map(|_| char::from(b'A' + rng.random_range(0..26u8)))
                .collect(),
        )
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ServerName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl Serialize for ServerName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in [
            "example.org",
            "example.org:8448",
            "127.0.0.1:8008",
            "[::1]",
            "[::1]:8448",
            "localhost",
        ] {
            let name = ServerName::parse(ok).unwrap();
            assert_eq!(name.as_str(), ok);
        }
        assert_eq!(ServerName::parse("[::1]:80").unwrap().host(), "[::1]");
        assert_eq!(ServerName::parse("a.b:80").unwrap().port(), Some(80));
        for bad in [
            "",
            "exa mple.org",
            "a:99999",
            "a:",
            "[::1",
            "[zz]",
            "a:b",
            "a/b",
            "ü.org",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn user_and_room_ids() {
        let u = UserId::parse("@alice:example.org:8448").unwrap();
        assert_eq!(u.localpart(), "alice");
        assert_eq!(u.server_name().as_str(), "example.org:8448");
        let r = RoomId::parse("!abc:[::1]:8008").unwrap();
        assert_eq!(r.localpart(), "abc");
        assert_eq!(r.server_name().as_str(), "[::1]:8008");
        assert_eq!(
            UserId::parse("alice:x").unwrap_err(),
            IdError::MissingSigil('@')
        );
        assert_eq!(
            UserId::parse("@alice").unwrap_err(),
            IdError::MissingServerName
        );
        assert_eq!(UserId::parse("@:x").unwrap_err(), IdError::InvalidLocalpart);
        assert_eq!(
            UserId::parse("@Alice:x").unwrap_err(),
            IdError::InvalidLocalpart
        );
        assert_eq!(
            RoomId::parse(&format!("!{}:x", "a".repeat(300))).unwrap_err(),
            IdError::TooLong
        );
    }

    #[test]
    fn generated_ids_parse_back() {
        let server = ServerName::parse("confab.test:8008").unwrap();
        let room = RoomId::generate(&server);
        assert_eq!(RoomId::parse(room.as_str()).unwrap(), room);
        let user = UserId::generate_guest(&server);
        assert_eq!(UserId::parse(user.as_str()).unwrap(), user);
        let device = DeviceId::generate();
        assert_eq!(DeviceId::parse(device.as_str()).unwrap(), device);
        assert_ne!(RoomId::generate(&server), room);
    }

    #[test]
    fn serde_validates() {
        let r: Result<RoomId, _> = serde_json::from_str("\"!x:bad host\"");
        assert!(r.is_err());
        let r: RoomId = serde_json::from_str("\"!x:host\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"!x:host\"");
        assert!(serde_json::from_str::<DeviceId>("\"ab-c\"").is_err());
    }
}
