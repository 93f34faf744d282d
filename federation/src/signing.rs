//! Ed25519 server keys and Matrix JSON signatures: the one place in Confab that signs or checks
//! a signature (Matrix specification, Appendices, "Signing JSON": "Signing Details" and
//! "Checking for a Signature"; test vectors from "Cryptographic Test Vectors").
//!
//! A [`SigningKey`] is a 32-byte ed25519 seed plus its key id `ed25519:<version>`; a
//! [`VerifyKey`] is the matching 32-byte public key. [`sign_json`] and [`verify_json`] add and
//! check entries in an object's `signatures` member over the canonical JSON of the object without
//! its `signatures` and `unsigned` members. All cryptography is ring's.

use std::fmt;
use std::str::FromStr;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::canonical_json::{CanonicalJsonError, object_to_canonical_string_without};
use crate::ids::ServerName;
use crate::unpadded_base64::{self, Base64Error};

/// The only signing algorithm Matrix defines, and the prefix of every key id.
pub const ED25519_ALGORITHM: &str = "ed25519";

/// Members that a JSON signature does not cover ("Signing Details"): intermediaries may add
/// signatures and unsigned data without invalidating existing signatures.
const UNSIGNED_MEMBERS: [&str; 2] = ["signatures", "unsigned"];

/// Why a key could not be made or a signature could not be made or checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigningError {
    /// A key id that is not `ed25519:` followed by 1–255 characters from `[a-zA-Z0-9_]`.
    #[error("invalid key id {0:?}: expected ed25519:<version> with version in [a-zA-Z0-9_]")]
    InvalidKeyId(String),
    /// A seed or public key that is not 32 bytes or is refused by ring.
    #[error("invalid ed25519 key material")]
    InvalidKey,
    /// The operating system's random number generator failed while generating a key.
    #[error("the system random number generator failed")]
    Rng,
    /// Only JSON objects can carry signatures.
    #[error("only JSON objects can be signed")]
    NotAnObject,
    /// The object (minus `signatures` and `unsigned`) has no canonical JSON form.
    #[error("object has no canonical JSON form: {0}")]
    Canonical(#[from] CanonicalJsonError),
    /// `signatures`, or the entry for the server in it, is not an object, or a signature is not
    /// a string.
    #[error("the signatures member is malformed")]
    MalformedSignatures,
    /// There is no signature at all from the server ("Checking for a Signature", step 1).
    #[error("no signature from {0}")]
    NoSignatureFromServer(String),
    /// The server signed, but not with the requested key.
    #[error("no signature from {server} with key {key_id}")]
    NoSignatureWithKey {
        /// The server whose signature was looked for.
        server: String,
        /// The key id that was looked for.
        key_id: String,
    },
    /// The signature is not valid base64 (step 4).
    #[error("signature is not valid base64")]
    SignatureNotBase64,
    /// The signature does not match the canonical JSON and the key (step 7).
    #[error("signature verification failed")]
    BadSignature,
}

/// A signing key identifier, `ed25519:<version>` (Appendices, "Signing Details"; the version's
/// character set comes from the server keys definition in the server-server API).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The key id `ed25519:<version>`.
    pub fn ed25519(version: &str) -> Result<Self, SigningError> {
        Self::parse(&format!("{ED25519_ALGORITHM}:{version}"))
    }

    /// Parses `ed25519:<version>`; any other algorithm is refused, since we could not use it.
    pub fn parse(s: &str) -> Result<Self, SigningError> {
        let valid = s
            .strip_prefix(ED25519_ALGORITHM)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|version| {
                !version.is_empty()
                    && version.len() <= 255
                    && version
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(SigningError::InvalidKeyId(s.chars().take(300).collect()))
        }
    }

    /// The whole id, `ed25519:<version>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `ed25519:`.
    pub fn version(&self) -> &str {
        self.0
            .get(ED25519_ALGORITHM.len() + 1..)
            .unwrap_or_default()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = SigningError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An ed25519 public key, which verifies what the matching [`SigningKey`] signed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyKey([u8; 32]);

impl VerifyKey {
    /// Wraps the 32 raw bytes of a public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Decodes a public key from (unpadded or padded) base64, as found in key documents.
    pub fn from_base64(text: &str) -> Result<Self, Base64Error> {
        unpadded_base64::decode_array(text).map(Self)
    }

    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key as unpadded base64, as published in key documents.
    pub fn to_base64(&self) -> String {
        unpadded_base64::encode(self.0)
    }

    /// Checks an ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SigningError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .map_err(|_| SigningError::BadSignature)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({})", self.to_base64())
    }
}

/// A server's ed25519 signing key: the secret seed, the ring key pair derived from it and the
/// key id it is published under.
pub struct SigningKey {
    key_id: KeyId,
    // ring cannot export a seed from a key pair, so the seed is kept alongside to be saved.
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Rebuilds a key from its 32-byte seed (the form the key file and the spec's test vectors
    /// use).
    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> Result<Self, SigningError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| SigningError::InvalidKey)?;
        Ok(Self { key_id, seed, pair })
    }

    /// Generates a new key from the operating system's random number generator.
    pub fn generate(key_id: KeyId) -> Result<Self, SigningError> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| SigningError::Rng)?;
        Self::from_seed(key_id, seed)
    }

    /// The secret seed, for saving the key. Handle with care.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The id this key signs under, `ed25519:<version>`.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The public half.
    pub fn verify_key(&self) -> VerifyKey {
        let mut bytes = [0u8; 32];
        // An ed25519 public key is always 32 bytes; zip keeps this panic-free regardless.
        for (dst, src) in bytes.iter_mut().zip(self.pair.public_key().as_ref()) {
            *dst = *src;
        }
        VerifyKey(bytes)
    }

    /// Signs raw bytes, returning the 64-byte ed25519 signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

impl fmt::Debug for SigningKey {
    // Never print the seed: keys end up in logs through Debug far too easily.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("verify_key", &self.verify_key())
            .finish_non_exhaustive()
    }
}

/// The canonical JSON a signature on `object` covers: the object without `signatures` and
/// `unsigned` ("Signing Details").
pub fn signed_bytes(object: &Map<String, Value>) -> Result<String, SigningError> {
    Ok(object_to_canonical_string_without(
        object,
        &UNSIGNED_MEMBERS,
    )?)
}

/// Signs a JSON object as `server_name` and adds the signature under
/// `signatures.<server_name>.<key id>`, keeping any signatures already there and leaving
/// `unsigned` untouched ("Signing Details").
///
/// On error the value is left unchanged.
pub fn sign_json(
    value: &mut Value,
    server_name: &ServerName,
    key: &SigningKey,
) -> Result<(), SigningError> {
    let object = value.as_object_mut().ok_or(SigningError::NotAnObject)?;
    // Check the shape of `signatures` before signing, so a malformed one is reported rather than
    // overwritten.
    match object.get("signatures") {
        None => {}
        Some(Value::Object(signatures)) => match signatures.get(server_name.as_str()) {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(SigningError::MalformedSignatures),
        },
        Some(_) => return Err(SigningError::MalformedSignatures),
    }
    let signature = unpadded_base64::encode(key.sign(signed_bytes(object)?.as_bytes()));
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    let by_server = signatures
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?
        .entry(server_name.as_str())
        .or_insert_with(|| Value::Object(Map::new()));
    by_server
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?
        .insert(key.key_id().as_str().to_owned(), Value::String(signature));
    Ok(())
}

/// The ed25519 key ids `server_name` has signed `value` with, ignoring ids with algorithms we do
/// not understand ("Checking for a Signature", step 2). Empty if there are none or `value` is
/// malformed.
pub fn signing_key_ids(value: &Value, server_name: &ServerName) -> Vec<KeyId> {
    value
        .get("signatures")
        .and_then(|s| s.get(server_name.as_str()))
        .and_then(Value::as_object)
        .map(|by_key| {
            by_key
                .keys()
                .filter_map(|id| KeyId::parse(id).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that `server_name` signed `value` with the key `key_id`, whose public half is `key`
/// ("Checking for a Signature"; finding the key, step 3, is the caller's job).
pub fn verify_json(
    value: &Value,
    server_name: &ServerName,
    key_id: &KeyId,
    key: &VerifyKey,
) -> Result<(), SigningError> {
    let object = value.as_object().ok_or(SigningError::NotAnObject)?;
    let signatures = match object.get("signatures") {
        None => return Err(SigningError::NoSignatureFromServer(server_name.to_string())),
        Some(Value::Object(signatures)) => signatures,
        Some(_) => return Err(SigningError::MalformedSignatures),
    };
    let by_key = match signatures.get(server_name.as_str()) {
        None => return Err(SigningError::NoSignatureFromServer(server_name.to_string())),
        Some(Value::Object(by_key)) => by_key,
        Some(_) => return Err(SigningError::MalformedSignatures),
    };
    let signature = match by_key.get(key_id.as_str()) {
        None => {
            return Err(SigningError::NoSignatureWithKey {
                server: server_name.to_string(),
                key_id: key_id.to_string(),
            });
        }
        Some(Value::String(signature)) => signature,
        Some(_) => return Err(SigningError::MalformedSignatures),
    };
    let signature =
        unpadded_base64::decode(signature).map_err(|_| SigningError::SignatureNotBase64)?;
    key.verify(signed_bytes(object)?.as_bytes(), &signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// "Cryptographic Test Vectors" → "Signing Key".
    const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

    fn test_key() -> SigningKey {
        let seed = unpadded_base64::decode_array(SEED).unwrap();
        SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), seed).unwrap()
    }

    fn domain() -> ServerName {
        ServerName::parse("domain").unwrap()
    }

    /// "Cryptographic Test Vectors" → "JSON Signing", both examples, byte for byte.
    #[test]
    fn spec_json_signing_vectors() {
        let key = test_key();
        let mut empty = json!({});
        sign_json(&mut empty, &domain(), &key).unwrap();
        assert_eq!(
            empty,
            json!({"signatures": {"domain": {"ed25519:1":
                "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})
        );

        let mut data: Value = serde_json::from_str(r#"{"one": 1, "two": "Two"}"#).unwrap();
        sign_json(&mut data, &domain(), &key).unwrap();
        assert_eq!(
            data,
            json!({"one": 1, "signatures": {"domain": {"ed25519:1":
                "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},
                "two": "Two"})
        );
        assert_eq!(
            verify_json(&data, &domain(), key.key_id(), &key.verify_key()),
            Ok(())
        );
    }

    /// "Cryptographic Test Vectors" → "Event Signing": an independent check of verification
    /// against signatures we did not produce. Event signatures cover the redacted event; the
    /// minimal event is its own redaction, and the message event's redaction empties `content`.
    #[test]
    fn spec_event_signing_vectors_verify() {
        let key = test_key();
        let minimal = json!({
            "auth_events": [], "content": {}, "depth": 3,
            "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
            "origin": "domain", "origin_server_ts": 1000000, "prev_events": [],
            "room_id": "!x:domain", "sender": "@a:domain",
            "signatures": {"domain": {"ed25519:1":
                "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},
            "type": "X", "unsigned": {"age_ts": 1000000}
        });
        assert_eq!(
            verify_json(&minimal, &domain(), key.key_id(), &key.verify_key()),
            Ok(())
        );
        let mut message = json!({
            "content": {"body": "Here is the message content"},
            "event_id": "$0:domain",
            "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
            "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
            "room_id": "!r:domain", "sender": "@u:domain",
            "signatures": {"domain": {"ed25519:1":
                "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"}},
            "unsigned": {"age_ts": 1000000}
        });
        assert_eq!(
            verify_json(&message, &domain(), key.key_id(), &key.verify_key()),
            Err(SigningError::BadSignature),
            "unredacted content is not what was signed"
        );
        message["content"] = json!({});
        assert_eq!(
            verify_json(&message, &domain(), key.key_id(), &key.verify_key()),
            Ok(())
        );
    }

    #[test]
    fn unsigned_and_existing_signatures_are_kept_and_not_covered() {
        let key = test_key();
        let mut v = json!({
            "one": 1, "two": "Two",
            "unsigned": {"age_ts": 5},
            "signatures": {"other.example": {"ed25519:x": "abc"}}
        });
        sign_json(&mut v, &domain(), &key).unwrap();
        assert_eq!(v["unsigned"], json!({"age_ts": 5}));
        assert_eq!(
            v["signatures"]["other.example"],
            json!({"ed25519:x": "abc"})
        );
        // Same signature as the spec vector: unsigned and foreign signatures are not covered.
        assert_eq!(
            v["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
        v["unsigned"] = json!({"age_ts": 6});
        assert_eq!(
            verify_json(&v, &domain(), key.key_id(), &key.verify_key()),
            Ok(())
        );
        assert_eq!(signing_key_ids(&v, &domain()), vec![key.key_id().clone()]);
    }

    #[test]
    fn flipped_bit_fails_verification() {
        let key = test_key();
        let mut v = json!({"one": 1, "two": "Two"});
        sign_json(&mut v, &domain(), &key).unwrap();
        let sig_text = v["signatures"]["domain"]["ed25519:1"].as_str().unwrap();
        let mut sig = unpadded_base64::decode(sig_text).unwrap();
        sig[10] ^= 0x01;
        let mut tampered = v.clone();
        tampered["signatures"]["domain"]["ed25519:1"] = json!(unpadded_base64::encode(&sig));
        assert_eq!(
            verify_json(&tampered, &domain(), key.key_id(), &key.verify_key()),
            Err(SigningError::BadSignature)
        );
        // A changed payload fails too.
        let mut changed = v.clone();
        changed["one"] = json!(2);
        assert_eq!(
            verify_json(&changed, &domain(), key.key_id(), &key.verify_key()),
            Err(SigningError::BadSignature)
        );
        // And so does another key.
        let other = SigningKey::generate(KeyId::ed25519("2").unwrap()).unwrap();
        assert_eq!(
            verify_json(&v, &domain(), key.key_id(), &other.verify_key()),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn precise_verification_errors() {
        let key = test_key();
        let vk = key.verify_key();
        let id = key.key_id();
        let check = |v: Value| verify_json(&v, &domain(), id, &vk);
        assert_eq!(check(json!([])), Err(SigningError::NotAnObject));
        assert_eq!(
            check(json!({})),
            Err(SigningError::NoSignatureFromServer("domain".into()))
        );
        assert_eq!(
            check(json!({"signatures": {"elsewhere": {}}})),
            Err(SigningError::NoSignatureFromServer("domain".into()))
        );
        assert_eq!(
            check(json!({"signatures": {"domain": {"ed25519:2": "AAAA"}}})),
            Err(SigningError::NoSignatureWithKey {
                server: "domain".into(),
                key_id: "ed25519:1".into()
            })
        );
        assert_eq!(
            check(json!({"signatures": "nope"})),
            Err(SigningError::MalformedSignatures)
        );
        assert_eq!(
            check(json!({"signatures": {"domain": []}})),
            Err(SigningError::MalformedSignatures)
        );
        assert_eq!(
            check(json!({"signatures": {"domain": {"ed25519:1": 7}}})),
            Err(SigningError::MalformedSignatures)
        );
        assert_eq!(
            check(json!({"signatures": {"domain": {"ed25519:1": "not base64!"}}})),
            Err(SigningError::SignatureNotBase64)
        );
        assert_eq!(
            check(json!({"signatures": {"domain": {"ed25519:1": "AAAA"}}})),
            Err(SigningError::BadSignature),
            "short signature"
        );
        assert!(matches!(
            check(json!({"x": 1.5, "signatures": {"domain": {"ed25519:1": "AAAA"}}})),
            Err(SigningError::Canonical(CanonicalJsonError::Float(_)))
        ));
    }

    #[test]
    fn padded_signatures_are_accepted() {
        let key = test_key();
        let mut v = json!({});
        sign_json(&mut v, &domain(), &key).unwrap();
        let sig = v["signatures"]["domain"]["ed25519:1"].as_str().unwrap();
        let padded = format!("{sig}==");
        v["signatures"]["domain"]["ed25519:1"] = json!(padded);
        assert_eq!(
            verify_json(&v, &domain(), key.key_id(), &key.verify_key()),
            Ok(())
        );
    }

    #[test]
    fn sign_json_refuses_bad_input_without_changing_it() {
        let key = test_key();
        let mut not_object = json!("x");
        assert_eq!(
            sign_json(&mut not_object, &domain(), &key),
            Err(SigningError::NotAnObject)
        );
        let mut bad = json!({"signatures": {"domain": "x"}, "unsigned": {"a": 1}});
        let before = bad.clone();
        assert_eq!(
            sign_json(&mut bad, &domain(), &key),
            Err(SigningError::MalformedSignatures)
        );
        assert_eq!(bad, before);
        let mut float = json!({"f": 0.5, "unsigned": {"a": 1}});
        let before = float.clone();
        assert!(matches!(
            sign_json(&mut float, &domain(), &key),
            Err(SigningError::Canonical(_))
        ));
        assert_eq!(float, before);
    }

    #[test]
    fn key_ids() {
        let id = KeyId::parse("ed25519:a_Bc9").unwrap();
        assert_eq!(id.version(), "a_Bc9");
        assert_eq!(id.to_string(), "ed25519:a_Bc9");
        assert_eq!(KeyId::ed25519("1").unwrap().as_str(), "ed25519:1");
        for bad in [
            "",
            "ed25519",
            "ed25519:",
            "curve25519:1",
            "ed25519:a-b",
            "ed25519:a:b",
            "ED25519:1",
            "ed25519:é",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
        assert!(KeyId::ed25519(&"a".repeat(256)).is_err());
    }

    #[test]
    fn keys_round_trip() {
        let key = SigningKey::generate(KeyId::ed25519("x").unwrap()).unwrap();
        let again = SigningKey::from_seed(key.key_id().clone(), *key.seed()).unwrap();
        assert_eq!(key.verify_key(), again.verify_key());
        let vk = VerifyKey::from_base64(&key.verify_key().to_base64()).unwrap();
        assert_eq!(vk, key.verify_key());
        assert!(VerifyKey::from_base64("AAAA").is_err());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&unpadded_base64::encode(key.seed())));
        let sig = key.sign(b"hello");
        assert_eq!(sig.len(), 64);
        assert_eq!(key.verify_key().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            key.verify_key().verify(b"hellO", &sig),
            Err(SigningError::BadSignature)
        );
    }
}
