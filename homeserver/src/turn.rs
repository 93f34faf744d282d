//! ICE servers for clients: STUN URLs for anyone, and TURN with short-lived credentials in the
//! TURN REST convention (coturn's `use-auth-secret`) for joined members of a live room only: the
//! username is `<expiry unix time>:<user id>` and the password is base64(HMAC-SHA1(secret,
//! username)), so the TURN server can check them with nothing but the shared secret.
//!
//! Why only members: a TURN server relays to whatever peer address the client names, so
//! credentials for anyone who asks make it an open relay. "Live" is read from the stored room
//! (it exists and its idle countdown has not run out), not from this process's engine, so that
//! it holds however many processes share the database.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confab_schema::models::membership;
use confab_schema::{DbPool, queries};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::IceSettings;
use crate::engine::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::rooms::parse_room_id;
use crate::time::now_ms;

/// The answer of `GET /rooms/{room_id}/ice_servers`.
#[derive(Debug, Serialize)]
pub struct IceGrant {
    /// STUN, then TURN with credentials (when configured).
    pub ice_servers: Vec<Value>,
    /// How long the TURN credentials stay valid from now; `None` without TURN. Relative, so a
    /// client's clock does not matter.
    pub expires_in_ms: Option<u64>,
}

/// The STUN servers, which anyone may have (`GET /config`).
pub fn stun_servers(ice: &IceSettings) -> Vec<Value> {
    if ice.stun_urls.is_empty() {
        Vec::new()
    } else {
        vec![json!({ "urls": ice.stun_urls })]
    }
}

/// STUN and TURN for `who` in `room_id`: refused with `room_not_found` unless the room exists
/// and has not expired, and with `not_member` unless `who` is a joined member of it.
pub async fn grant(
    pool: &DbPool,
    ice: &IceSettings,
    room_id: &str,
    who: &Identity,
) -> Result<IceGrant, ApiError> {
    let room_id = parse_room_id(room_id)?;
    let now = now_ms();
    let (room, member) = {
        let mut db = confab_schema::connect(pool).await?;
        let room = queries::room(&mut db, room_id.as_str()).await?;
        let member = queries::member(&mut db, room_id.as_str(), &who.user_id).await?;
        (room, member)
    };
    // A room past its countdown is gone, whether or not the sweeper got to it yet.
    let live = room.is_some_and(|r| r.expires_ts.is_none_or(|ts| ts > now));
    if !live {
        return Err(ApiError::room_not_found());
    }
    let joined = member.is_some_and(|m| m.membership == membership::JOINED);
    if !joined {
        return Err(ApiError::new(
            ErrorCode::NotMember,
            "TURN credentials are for members of the room: join it first",
        ));
    }
    let now_secs = u64::try_from(now / 1000).unwrap_or(0);
    Ok(ice_servers(ice, &who.user_id, now_secs))
}

/// STUN, and TURN credentials for `user` valid `turn_credential_ttl` from `now_secs`.
pub fn ice_servers(ice: &IceSettings, user: &str, now_secs: u64) -> IceGrant {
    let mut servers = stun_servers(ice);
    if !ice.turn_enabled() {
        return IceGrant {
            ice_servers: servers,
            expires_in_ms: None,
        };
    }
    let ttl = ice.turn_credential_ttl.as_secs();
    let (username, credential) =
        turn_credential(&ice.turn_secret, now_secs.saturating_add(ttl), user);
    servers.push(json!({
        "urls": ice.turn_urls,
        "username": username,
        "credential": credential,
    }));
    IceGrant {
        ice_servers: servers,
        expires_in_ms: Some(ttl.saturating_mul(1000)),
    }
}

/// A TURN REST username and password valid until `expiry` (Unix seconds).
pub fn turn_credential(secret: &str, expiry: u64, user: &str) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    (username, STANDARD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ice(stun: &[&str], turn: &[&str], secret: &str) -> IceSettings {
        IceSettings {
            stun_urls: stun.iter().map(|s| s.to_string()).collect(),
            turn_urls: turn.iter().map(|s| s.to_string()).collect(),
            turn_secret: secret.to_owned(),
            turn_credential_ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA1("secret", "1700000000:alice"), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let (user, pass) = turn_credential("secret", 1_700_000_000, "alice");
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn credentials_name_the_member_and_last_the_ttl() {
        let settings = ice(&["stun:s"], &["turn:t"], "secret");
        let grant = ice_servers(&settings, "@g:x", 1_700_000_000);
        assert_eq!(grant.expires_in_ms, Some(3_600_000));
        assert_eq!(grant.ice_servers[0], json!({ "urls": ["stun:s"] }));
        let turn = &grant.ice_servers[1];
        assert_eq!(turn["username"], "1700003600:@g:x");
        assert_eq!(
            turn["credential"],
            turn_credential("secret", 1_700_003_600, "@g:x").1
        );
        // STUN is all anyone else gets.
        assert_eq!(stun_servers(&settings), vec![json!({ "urls": ["stun:s"] })]);
    }

    #[test]
    fn no_turn_without_urls_and_secret() {
        for settings in [ice(&[], &["turn:t"], ""), ice(&[], &[], "secret")] {
            let grant = ice_servers(&settings, "@g:x", 0);
            assert!(grant.ice_servers.is_empty());
            assert_eq!(grant.expires_in_ms, None);
        }
    }

    /// coturn's peer rules, as the README and `docker/turnserver.conf` give them.
    mod peer_rules {
        use std::net::IpAddr;

        const DOCKER: &str = include_str!("../../docker/turnserver.conf");
        const README: &str = include_str!("../../README.md");

        /// The `denied-peer-ip` ranges of a coturn configuration, as written.
        fn denied_lines(conf: &str) -> Vec<&str> {
            conf.lines()
                .filter_map(|l| l.trim().strip_prefix("denied-peer-ip="))
                .collect()
        }

        fn ranges(conf: &str) -> Vec<(IpAddr, IpAddr)> {
            denied_lines(conf)
                .into_iter()
                .map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
                    assert_eq!(a.is_ipv4(), b.is_ipv4(), "{range}");
                    assert!(a <= b, "{range}");
                    (a, b)
                })
                .collect()
        }

        fn denied(ranges: &[(IpAddr, IpAddr)], ip: &str) -> bool {
            let ip: IpAddr = ip.parse().unwrap();
            ranges
                .iter()
                .any(|(a, b)| a.is_ipv4() == ip.is_ipv4() && *a <= ip && ip <= *b)
        }

        /// The README's `/etc/turnserver.conf` block.
        fn readme_block() -> &'static str {
            let start = README.find("In `/etc/turnserver.conf`:").unwrap();
            let block = &README[start..];
            let open = block.find("```").unwrap() + 3;
            let close = open + block[open..].find("```").unwrap();
            &block[open..close]
        }

        #[test]
        fn every_non_public_range_is_denied_and_public_addresses_are_not() {
            for (name, conf) in [
                ("docker/turnserver.conf", DOCKER),
                ("README.md", readme_block()),
            ] {
                assert!(
                    conf.lines().any(|l| l.trim() == "no-multicast-peers"),
                    "{name}"
                );
                assert!(
                    !conf
                        .lines()
                        .any(|l| l.trim().starts_with("allow-loopback-peers")
                            || l.trim().starts_with("allowed-peer-ip")),
                    "{name} allows what it must deny"
                );
                let ranges = ranges(conf);
                for ip in [
                    // this network, RFC 1918, CGNAT (and Alibaba Cloud's metadata address)
                    "0.0.0.0",
                    "0.255.255.255",
                    "10.0.0.1",
                    "10.255.255.255",
                    "172.16.0.1",
                    "172.31.255.255",
                    "192.168.0.1",
                    "192.168.255.255",
                    "100.64.0.1",
                    "100.100.100.200",
                    "100.127.255.255",
                    // loopback, link-local (the metadata address of AWS, GCP, Azure …)
                    "127.0.0.1",
                    "127.0.0.2",
                    "127.255.255.255",
                    "169.254.0.1",
                    "169.254.169.254",
                    "169.254.255.255",
                    // IETF assignments (Oracle Cloud's older metadata address), documentation,
                    // benchmarking, multicast, reserved, broadcast
                    "192.0.0.192",
                    "192.0.2.1",
                    "198.18.0.1",
                    "198.51.100.1",
                    "203.0.113.1",
                    "224.0.0.1",
                    "239.255.255.250",
                    "240.0.0.1",
                    "255.255.255.255",
                    // IPv6: unspecified, loopback, IPv4-mapped and NAT64 forms of private
                    // addresses, ULA (AWS's IPv6 metadata address), link-local, multicast
                    "::",
                    "::1",
                    "::ffff:127.0.0.1",
                    "::ffff:169.254.169.254",
                    "::ffff:10.0.0.1",
                    "64:ff9b::a9fe:a9fe",
                    "64:ff9b:1::a00:1",
                    "fc00::1",
                    "fd00:ec2::254",
                    "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                    "fe80::1",
                    "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                    "fec0::1",
                    "ff02::1",
                    "2001:db8::1",
                    "2002:a9fe:a9fe::1",
                ] {
                    assert!(denied(&ranges, ip), "{name} does not deny {ip}");
                }
                for ip in [
                    "1.1.1.1",
                    "8.8.8.8",
                    "9.255.255.255",
                    "11.0.0.0",
                    "100.63.255.255",
                    "100.128.0.0",
                    "126.255.255.255",
                    "128.0.0.0",
                    "169.253.255.255",
                    "169.255.0.0",
                    "172.15.255.255",
                    "172.32.0.0",
                    "192.0.1.1",
                    "192.167.255.255",
                    "192.169.0.0",
                    "223.255.255.255",
                    "2606:4700:4700::1111",
                    "2001:4860:4860::8888",
                    "2a00:1450:4001::1",
                ] {
                    assert!(!denied(&ranges, ip), "{name} denies the public {ip}");
                }
            }
            assert_eq!(
                denied_lines(readme_block()),
                denied_lines(DOCKER),
                "README.md and docker/turnserver.conf deny different peers"
            );
        }
    }
}
