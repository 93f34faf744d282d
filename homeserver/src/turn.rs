//! ICE servers for clients: STUN URLs, and TURN with short-lived credentials in the TURN REST
//! convention (coturn's `use-auth-secret`): the username is `<expiry unix time>:<user id>` and
//! the password is base64(HMAC-SHA1(secret, username)), so the TURN server can check them with
//! nothing but the shared secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::config::IceSettings;

/// The `ice_servers` list for a client (`user` names the TURN username; anonymous otherwise).
pub fn ice_servers(ice: &IceSettings, user: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    if !ice.stun_urls.is_empty() {
        out.push(json!({ "urls": ice.stun_urls }));
    }
    if !ice.turn_urls.is_empty() && !ice.turn_secret.is_empty() {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(ice.turn_credential_ttl.as_secs());
        let (username, credential) =
            turn_credential(&ice.turn_secret, expiry, user.unwrap_or("confab"));
        out.push(json!({
            "urls": ice.turn_urls,
            "username": username,
            "credential": credential,
        }));
    }
    out
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

    #[test]
    fn known_answer() {
        // HMAC-SHA1("secret", "1700000000:alice"), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let (user, pass) = turn_credential("secret", 1_700_000_000, "alice");
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }
}
