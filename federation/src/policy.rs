//! Who this server federates with and which addresses it may connect to.
//!
//! Two independent checks, both pure:
//!
//! - [`ServerAcl`]: the operator's deny and allow lists of server names, applied to the origin of
//!   every inbound request and the destination of every outbound one (DESIGN.md, "Federation":
//!   admins can deny or allow federation per server). Matrix has server ACLs only per room
//!   (`m.room.server_acl`); Confab's are per server, so this is its own, simpler rule.
//! - [`classify`] / [`check_address`]: what kind of IP address a server name resolved to, and
//!   whether federation may connect there. The server-server API ("Resolving server names")
//!   says nothing about this, but a homeserver that connects wherever a remote name points can be
//!   made to probe its operator's network (server-side request forgery), so loopback, private and
//!   link-local ranges are refused unless the operator allows them for tests and local demos, and
//!   addresses no server can legitimately have (unspecified, multicast, documentation, reserved)
//!   are refused always.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;

use crate::ids::ServerName;

/// Why federation with a server or an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The server is on the deny list.
    #[error("federation with {0} is denied by this server's configuration")]
    Denied(String),
    /// An allow list is configured and the server is not on it.
    #[error("{0} is not on this server's list of allowed federation peers")]
    NotAllowed(String),
    /// The address is of a kind federation never connects to, or only when private addresses
    /// are allowed.
    #[error("refusing to connect to {address} ({class}){hint}")]
    AddressRefused {
        /// The address refused.
        address: IpAddr,
        /// What kind of address it is.
        class: AddressClass,
        /// How to allow it, when configuration can.
        hint: &'static str,
    },
}

/// The operator's per-server deny and allow lists.
///
/// An entry with a port matches that exact name; an entry without one matches the host on any
/// port, because operators think of a server by its host. Host names compare case-insensitively,
/// as DNS does. The deny list wins over the allow list; an empty allow list allows everyone.
///
/// On top of the configured lists, decisions made at run time ([`ServerAcl::set_override`], the
/// admin API's `federation deny|allow`) win over both lists, an exact name over a host. They sit
/// behind a lock inside the ACL so that every holder of the shared `Arc` sees a change at once.
#[derive(Debug, Default)]
pub struct ServerAcl {
    denied: HashSet<String>,
    allowed: HashSet<String>,
    /// Run-time decisions by name or host: `true` allows, `false` denies.
    overrides: RwLock<HashMap<String, bool>>,
}

impl Clone for ServerAcl {
    fn clone(&self) -> Self {
        Self {
            denied: self.denied.clone(),
            allowed: self.allowed.clone(),
            overrides: RwLock::new(self.overrides_read().clone()),
        }
    }
}

impl ServerAcl {
    /// Builds the lists.
    pub fn new<'a>(
        denied: impl IntoIterator<Item = &'a ServerName>,
        allowed: impl IntoIterator<Item = &'a ServerName>,
    ) -> Self {
        let normalize = |name: &ServerName| name.as_str().to_ascii_lowercase();
        Self {
            denied: denied.into_iter().map(normalize).collect(),
            allowed: allowed.into_iter().map(normalize).collect(),
            overrides: RwLock::default(),
        }
    }

    fn overrides_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, bool>> {
        // The map is replaced entry by entry, so a panic elsewhere cannot leave it half-written.
        self.overrides.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Allows (`true`) or denies (`false`) federation with `server` from now on, whatever the
    /// configured lists say. `server` is a full name, or a host for every port.
    pub fn set_override(&self, server: &str, allowed: bool) {
        self.overrides
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.to_ascii_lowercase(), allowed);
    }

    /// The run-time decisions, by name or host, sorted.
    pub fn overrides(&self) -> Vec<(String, bool)> {
        let mut all: Vec<_> = self
            .overrides_read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all
    }

    /// Whether this server may federate with `server`.
    pub fn check(&self, server: &ServerName) -> Result<(), PolicyError> {
        let full = server.as_str().to_ascii_lowercase();
        let host = server.host().to_ascii_lowercase();
        let listed = |list: &HashSet<String>| list.contains(&full) || list.contains(&host);
        let decided = {
            let overrides = self.overrides_read();
            overrides
                .get(&full)
                .or_else(|| overrides.get(&host))
                .copied()
        };
        match decided {
            Some(true) => return Ok(()),
            Some(false) => return Err(PolicyError::Denied(server.to_string())),
            None => {}
        }
        if listed(&self.denied) {
            return Err(PolicyError::Denied(server.to_string()));
        }
        if !self.allowed.is_empty() && !listed(&self.allowed) {
            return Err(PolicyError::NotAllowed(server.to_string()));
        }
        Ok(())
    }
}

/// What kind of address an IP is, as far as federation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// A globally routable unicast address.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and deprecated IPv6 site-local fec0::/10.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598): private to a provider's network.
    SharedAddressSpace,
    /// 169.254.0.0/16, fe80::/10 (includes cloud metadata services at 169.254.169.254).
    LinkLocal,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// 0.0.0.0, :: (connecting there reaches the local host on Linux).
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// Everything else that is not public unicast: 0/8, 192.0.0/24, 198.18/15 (benchmarking),
    /// 240/4, IPv4-compatible ::/96, discard-only 100::/64, Teredo 2001::/32, ….
    Reserved,
}

impl AddressClass {
    /// Whether `federation.allow_private_addresses` unlocks this class. Unspecified, multicast,
    /// broadcast, documentation and reserved addresses are never a homeserver, so nothing does.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Self::Loopback
                | Self::Private
                | Self::SharedAddressSpace
                | Self::LinkLocal
                | Self::UniqueLocal
        )
    }
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedAddressSpace => "shared address space",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Reserved => "reserved",
        })
    }
}

/// Classifies an address. IPv6 forms that embed an IPv4 address a translator would connect to
/// (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified by that
/// IPv4 address, so `::ffff:127.0.0.1` is loopback, not public.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedAddressSpace
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_documentation() {
        AddressClass::Documentation
    } else if a == 0 || a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let [s0, s1, ..] = segments;
    let octets = ip.octets();
    let embedded_v4 =
        |at: usize| Ipv4Addr::new(octets[at], octets[at + 1], octets[at + 2], octets[at + 3]);
    match s0 {
        // NAT64 well-known prefix 64:ff9b::/96: the last 32 bits are the IPv4 destination.
        0x0064 if s1 == 0xff9b && segments[2..6].iter().all(|&s| s == 0) => {
            classify_v4(embedded_v4(12))
        }
        // 6to4: 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
        0x2002 => classify_v4(embedded_v4(2)),
        0x2001 if s1 == 0x0db8 => AddressClass::Documentation,
        // Teredo 2001:0::/32 tunnels to an address we cannot check.
        0x2001 if s1 == 0 => AddressClass::Reserved,
        _ if s0 & 0xff00 == 0xff00 => AddressClass::Multicast,
        _ if s0 & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        _ if s0 & 0xffc0 == 0xfec0 => AddressClass::Private,
        _ if s0 & 0xfe00 == 0xfc00 => AddressClass::UniqueLocal,
        // Global unicast is 2000::/3; everything else (IPv4-compatible ::/96, discard-only
        // 100::/64, unassigned space) is reserved.
        _ if s0 & 0xe000 == 0x2000 => AddressClass::Public,
        _ => AddressClass::Reserved,
    }
}

/// Whether federation may connect to `ip`: public addresses always, private kinds only with
/// `allow_private`, the rest never.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), PolicyError> {
    let class = classify(ip);
    if class == AddressClass::Public || (allow_private && class.is_private()) {
        return Ok(());
    }
    Err(PolicyError::AddressRefused {
        address: ip,
        class,
        hint: if class.is_private() {
            "; set federation.allow_private_addresses to allow it"
        } else {
            ""
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_ipv4() {
        let cases = [
            ("8.8.8.8", AddressClass::Public),
            ("1.1.1.1", AddressClass::Public),
            ("100.63.255.255", AddressClass::Public),
            ("100.128.0.0", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
            ("198.20.0.1", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.255.254", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::SharedAddressSpace),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Reserved),
            ("224.0.0.1", AddressClass::Multicast),
            ("239.255.255.250", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("192.0.2.1", AddressClass::Documentation),
            ("198.51.100.7", AddressClass::Documentation),
            ("203.0.113.9", AddressClass::Documentation),
            ("192.0.0.8", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("198.19.255.255", AddressClass::Reserved),
            ("240.0.0.1", AddressClass::Reserved),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn classifies_ipv6() {
        let cases = [
            ("2001:4860:4860::8888", AddressClass::Public),
            ("2a00:1450::1", AddressClass::Public),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("fec0::1", AddressClass::Private),
            ("fc00::1", AddressClass::UniqueLocal),
            ("fd12:3456::1", AddressClass::UniqueLocal),
            ("ff02::1", AddressClass::Multicast),
            ("2001:db8::1", AddressClass::Documentation),
            ("2001:0:4136:e378::1", AddressClass::Reserved),
            ("100::1", AddressClass::Reserved),
            ("::127.0.0.1", AddressClass::Reserved),
            // Embedded IPv4 addresses are judged by the IPv4 address.
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:8.8.8.8", AddressClass::Public),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("64:ff9b::808:808", AddressClass::Public),
            ("2002:7f00:1::1", AddressClass::Loopback),
            ("2002:c0a8:101::1", AddressClass::Private),
            ("2002:808:808::1", AddressClass::Public),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn private_addresses_only_when_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(check_address(ip("8.8.8.8"), false), Ok(()));
        for private in ["127.0.0.1", "::1", "10.0.0.1", "fd00::1", "169.254.169.254"] {
            let err = check_address(ip(private), false).unwrap_err();
            assert!(err.to_string().contains("allow_private_addresses"), "{err}");
            assert_eq!(check_address(ip(private), true), Ok(()), "{private}");
        }
        for never in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "192.0.2.1"] {
            let err = check_address(ip(never), true).unwrap_err();
            assert!(!err.to_string().contains("allow_private"), "{err}");
        }
    }

    #[test]
    fn acl_denies_and_allows_by_name_or_host() {
        let n = |s: &str| ServerName::parse(s).unwrap();
        let open = ServerAcl::default();
        assert_eq!(open.check(&n("any.example")), Ok(()));

        let denied = [n("evil.example"), n("port.example:8448")];
        let acl = ServerAcl::new(&denied, std::iter::empty());
        assert!(matches!(
            acl.check(&n("evil.example")),
            Err(PolicyError::Denied(_))
        ));
        assert!(matches!(
            acl.check(&n("EVIL.example:1234")),
            Err(PolicyError::Denied(_))
        ));
        assert!(matches!(
            acl.check(&n("port.example:8448")),
            Err(PolicyError::Denied(_))
        ));
        assert_eq!(acl.check(&n("port.example:9999")), Ok(()));
        assert_eq!(acl.check(&n("good.example")), Ok(()));

        let allowed = [n("friend.example"), n("evil.example")];
        let acl = ServerAcl::new(&[n("evil.example")], &allowed);
        assert_eq!(acl.check(&n("friend.example:8448")), Ok(()));
        assert!(matches!(
            acl.check(&n("stranger.example")),
            Err(PolicyError::NotAllowed(_))
        ));
        // Deny wins over allow.
        assert!(matches!(
            acl.check(&n("evil.example")),
            Err(PolicyError::Denied(_))
        ));
    }

    #[test]
    fn run_time_decisions_win_over_the_lists() {
        let n = |s: &str| ServerName::parse(s).unwrap();
        let acl = ServerAcl::new(&[n("evil.example")], &[n("friend.example")]);
        acl.set_override("Evil.example", true);
        assert_eq!(acl.check(&n("evil.example:8448")), Ok(()));
        acl.set_override("friend.example:8448", false);
        assert!(matches!(
            acl.check(&n("friend.example:8448")),
            Err(PolicyError::Denied(_))
        ));
        assert_eq!(acl.check(&n("friend.example:1")), Ok(()));
        // An exact name wins over its host.
        acl.set_override("evil.example:1", false);
        assert!(acl.check(&n("evil.example:1")).is_err());
        assert_eq!(acl.check(&n("evil.example:2")), Ok(()));
        let shared = acl.clone();
        assert_eq!(shared.overrides().len(), 3);
    }
}
