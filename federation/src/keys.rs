//! Server key documents and the signing key file.
//!
//! A server publishes its public keys in the shape of Matrix's `GET /_matrix/key/v2/server`
//! (server-server API, "Retrieving server keys" → "Publishing Keys", and the "Server Keys"
//! definition): `{server_name, valid_until_ts, verify_keys: {id: {key}}, old_verify_keys:
//! {id: {key, expired_ts}}, signatures}`, signed by its own current key. This module builds that
//! document and parses and checks a fetched one, as pure functions of their inputs and the
//! current time: fetching over HTTP and caching live elsewhere.
//!
//! It also owns the on-disk signing key file, one line in the Synapse-like form
//! `ed25519 <version> <unpadded base64 seed>`, written owner-only (0600).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::ids::{ServerName, random_alphanumeric};
use crate::signing::{
    ED25519_ALGORITHM, KeyId, SigningError, SigningKey, VerifyKey, sign_json, signing_key_ids,
    verify_json,
};
use crate::unpadded_base64;

/// The longest a fetched key document is trusted, whatever its `valid_until_ts` says: the spec
/// says to use the lesser of that and 7 days from now, so that a stolen key cannot be published
/// as valid for years.
pub const MAX_VALIDITY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Why a key document or key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The document does not have the required shape; the text says which part is wrong.
    #[error("malformed server key document: {0}")]
    Malformed(&'static str),
    /// The document is for another server than the one asked.
    #[error("key document is for {actual}, expected {expected}")]
    ServerNameMismatch {
        /// The server whose keys were requested.
        expected: String,
        /// The `server_name` in the document.
        actual: String,
    },
    /// `valid_until_ts` is already in the past.
    #[error("key document expired at {valid_until_ts} (now {now_ms})")]
    Expired {
        /// The document's `valid_until_ts`.
        valid_until_ts: u64,
        /// The time of the check.
        now_ms: u64,
    },
    /// `verify_keys` holds no ed25519 key.
    #[error("key document has no ed25519 verify key")]
    NoVerifyKeys,
    /// No signature by the server with any of its current verify keys.
    #[error("key document is not signed by any of its own verify keys")]
    NotSelfSigned,
    /// Signing the document failed, or one of its self-signatures is invalid.
    #[error("key document signature: {0}")]
    Signature(#[from] SigningError),
    /// The signing key file is not one `ed25519 <version> <base64 seed>` line.
    #[error("invalid signing key file {path}: {reason}")]
    InvalidKeyFile {
        /// The file read.
        path: PathBuf,
        /// What is wrong with it (never its contents: they are secret).
        reason: &'static str,
    },
    /// Reading or writing the signing key file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A key the server used to sign with, and when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldVerifyKey {
    /// The public key.
    pub key: VerifyKey,
    /// When the server stopped using it, in milliseconds since the Unix epoch.
    pub expired_ts: u64,
}

/// A checked server key document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    /// Whose keys these are.
    pub server_name: ServerName,
    /// Until when the current keys may be used, already capped at [`MAX_VALIDITY_MS`] from the
    /// time of the check; this is also when a cache should refetch.
    pub valid_until_ts: u64,
    /// Keys valid for requests and events until `valid_until_ts`.
    pub verify_keys: BTreeMap<KeyId, VerifyKey>,
    /// Keys that only verify what was signed before their `expired_ts`.
    pub old_verify_keys: BTreeMap<KeyId, OldVerifyKey>,
}

impl ServerKeys {
    /// The key to check a signature made with `key_id` at time `at_ms`: a current key up to
    /// `valid_until_ts`, an old key only before it expired.
    pub fn verify_key(&self, key_id: &KeyId, at_ms: u64) -> Option<&VerifyKey> {
        if let Some(key) = self.verify_keys.get(key_id) {
            return (at_ms <= self.valid_until_ts).then_some(key);
        }
        self.old_verify_keys
            .get(key_id)
            .filter(|old| at_ms < old.expired_ts)
            .map(|old| &old.key)
    }
}

/// Builds this server's key document, signed by `current`, for the key endpoint.
///
/// `valid_until_ts` is the caller's choice; the spec asks publishers not to hand out documents
/// that expire within the hour, and readers cap it at seven days anyway.
pub fn build_server_keys_document(
    server_name: &ServerName,
    current: &SigningKey,
    old_keys: &BTreeMap<KeyId, OldVerifyKey>,
    valid_until_ts: u64,
) -> Result<Value, KeyError> {
    if old_keys.contains_key(current.key_id()) {
        return Err(KeyError::Malformed(
            "the current key is also listed among old keys",
        ));
    }
    let mut verify_keys = Map::new();
    verify_keys.insert(
        current.key_id().to_string(),
        json!({ "key": current.verify_key().to_base64() }),
    );
    let old_verify_keys: Map<String, Value> = old_keys
        .iter()
        .map(|(id, old)| {
            let entry = json!({ "key": old.key.to_base64(), "expired_ts": old.expired_ts });
            (id.to_string(), entry)
        })
        .collect();
    let mut document = json!({
        "server_name": server_name.as_str(),
        "valid_until_ts": valid_until_ts,
        "verify_keys": verify_keys,
        "old_verify_keys": old_verify_keys,
    });
    sign_json(&mut document, server_name, current)?;
    Ok(document)
}

/// Parses and checks a key document fetched from `expected_server` itself at time `now_ms`:
/// right server, not expired, well-formed keys, and signed by the server with its current keys
/// (every such signature must verify, and there must be at least one).
///
/// Key ids with algorithms other than ed25519 are skipped, as the spec tells verifiers to ignore
/// algorithms they do not understand.
pub fn parse_server_keys_document(
    document: &Value,
    expected_server: &ServerName,
    now_ms: u64,
) -> Result<ServerKeys, KeyError> {
    let object = document
        .as_object()
        .ok_or(KeyError::Malformed("not a JSON object"))?;

    let server_name =
        object
            .get("server_name")
            .and_then(Value::as_str)
            .ok_or(KeyError::Malformed(
                "server_name is missing or not a string",
            ))?;
    if server_name != expected_server.as_str() {
        return Err(KeyError::ServerNameMismatch {
            expected: expected_server.to_string(),
            actual: server_name.chars().take(255).collect(),
        });
    }

    let valid_until_ts =
        object
            .get("valid_until_ts")
            .and_then(Value::as_u64)
            .ok_or(KeyError::Malformed(
                "valid_until_ts is missing or not a non-negative integer",
            ))?;
    if valid_until_ts <= now_ms {
        return Err(KeyError::Expired {
            valid_until_ts,
            now_ms,
        });
    }

    let verify_keys = parse_key_map(object.get("verify_keys"), parse_key)?
        .ok_or(KeyError::Malformed("verify_keys is missing"))?;
    if verify_keys.is_empty() {
        return Err(KeyError::NoVerifyKeys);
    }
    let old_verify_keys = parse_key_map(object.get("old_verify_keys"), |entry| {
        let expired_ts =
            entry
                .get("expired_ts")
                .and_then(Value::as_u64)
                .ok_or(KeyError::Malformed(
                    "old_verify_keys entry has no integer expired_ts",
                ))?;
        Ok(OldVerifyKey {
            key: parse_key(entry)?,
            expired_ts,
        })
    })?
    .unwrap_or_default();
    if old_verify_keys
        .keys()
        .any(|id| verify_keys.contains_key(id))
    {
        return Err(KeyError::Malformed("a key id is both current and old"));
    }

    // Only current keys vouch for the document; a signature by an old key proves nothing now.
    let mut self_signed = false;
    for key_id in signing_key_ids(document, expected_server) {
        if let Some(key) = verify_keys.get(&key_id) {
            verify_json(document, expected_server, &key_id, key)?;
            self_signed = true;
        }
    }
    if !self_signed {
        return Err(KeyError::NotSelfSigned);
    }

    Ok(ServerKeys {
        server_name: expected_server.clone(),
        valid_until_ts: valid_until_ts.min(now_ms.saturating_add(MAX_VALIDITY_MS)),
        verify_keys,
        old_verify_keys,
    })
}

/// Reads `{key_id: entry}` into a map of ed25519 keys, skipping other algorithms. `None` if the
/// member is absent.
fn parse_key_map<T>(
    member: Option<&Value>,
    parse_entry: impl Fn(&Map<String, Value>) -> Result<T, KeyError>,
) -> Result<Option<BTreeMap<KeyId, T>>, KeyError> {
    let Some(member) = member else {
        return Ok(None);
    };
    let entries = member
        .as_object()
        .ok_or(KeyError::Malformed("a key map is not an object"))?;
    let mut keys = BTreeMap::new();
    for (id, entry) in entries {
        let is_ed25519 = id
            .strip_prefix(ED25519_ALGORITHM)
            .is_some_and(|rest| rest.starts_with(':'));
        if !is_ed25519 {
            continue;
        }
        let key_id = KeyId::parse(id).map_err(|_| KeyError::Malformed("invalid ed25519 key id"))?;
        let entry = entry
            .as_object()
            .ok_or(KeyError::Malformed("a key entry is not an object"))?;
        keys.insert(key_id, parse_entry(entry)?);
    }
    Ok(Some(keys))
}

fn parse_key(entry: &Map<String, Value>) -> Result<VerifyKey, KeyError> {
    let text = entry
        .get("key")
        .and_then(Value::as_str)
        .ok_or(KeyError::Malformed("a key entry has no string key"))?;
    VerifyKey::from_base64(text).map_err(|_| KeyError::Malformed("a key is not 32 bytes of base64"))
}

/// The key file line for `key`: `ed25519 <version> <unpadded base64 seed>`.
pub fn format_signing_key(key: &SigningKey) -> String {
    format!(
        "{ED25519_ALGORITHM} {} {}\n",
        key.key_id().version(),
        unpadded_base64::encode(key.seed())
    )
}

/// Parses a key file's contents; `path` only names the file in errors.
pub fn parse_signing_key(contents: &str, path: &Path) -> Result<SigningKey, KeyError> {
    let invalid = |reason| KeyError::InvalidKeyFile {
        path: path.to_owned(),
        reason,
    };
    let mut lines = contents.lines().filter(|line| !line.trim().is_empty());
    let line = lines.next().ok_or_else(|| invalid("the file is empty"))?;
    // Synapse allows several keys per file; Confab signs with exactly one, and guessing which
    // of several was meant would be worse than refusing.
    if lines.next().is_some() {
        return Err(invalid("the file holds more than one key"));
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [algorithm, version, seed] = fields.as_slice() else {
        return Err(invalid("expected `ed25519 <version> <base64 seed>`"));
    };
    if *algorithm != ED25519_ALGORITHM {
        return Err(invalid("the algorithm is not ed25519"));
    }
    let key_id = KeyId::ed25519(version)
        .map_err(|_| invalid("the version is not 1-255 characters of [a-zA-Z0-9_]"))?;
    let seed = unpadded_base64::decode_array(seed)
        .map_err(|_| invalid("the seed is not 32 bytes of base64"))?;
    SigningKey::from_seed(key_id, seed).map_err(|_| invalid("the seed is not a valid key"))
}

/// Reads the signing key file at `path`.
pub fn read_signing_key_file(path: &Path) -> Result<SigningKey, KeyError> {
    let contents = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_signing_key(&contents, path)
}

/// Writes `key` to a new file at `path`, readable and writable by its owner only.
///
/// Never overwrites: if `path` exists the error is `Io` with kind `AlreadyExists`. The key is
/// written to a temporary file in the same directory and hard-linked into place, so `path`
/// either does not exist or holds a whole key, even after a crash or a concurrent writer.
pub fn write_signing_key_file(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_error(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let mut temp_name = file_name.to_owned();
    temp_name.push(format!(".tmp-{}", random_alphanumeric(12)));
    let temp_path = path.with_file_name(temp_name);

    let written = write_private_file(&temp_path, format_signing_key(key).as_bytes())
        .and_then(|()| fs::hard_link(&temp_path, path));
    // The temporary name is removed whether or not linking worked; after a successful link the
    // key lives on under `path`.
    let removed = fs::remove_file(&temp_path);
    written.map_err(io_error)?;
    removed.map_err(io_error)?;
    sync_parent_dir(path);
    Ok(())
}

/// Returns the key stored at `path`, first generating one with a random version and writing it
/// there if the file does not exist yet.
pub fn generate_if_missing(path: &Path) -> Result<SigningKey, KeyError> {
    match fs::symlink_metadata(path) {
        Ok(_) => return read_signing_key_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyError::Io {
                path: path.to_owned(),
                source,
            });
        }
    }
    let key = SigningKey::generate(KeyId::ed25519(&random_alphanumeric(8))?)?;
    match write_signing_key_file(path, &key) {
        Ok(()) => Ok(key),
        // Another process created it between our check and our write: use theirs.
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            read_signing_key_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Creates a new file with mode 0600 (on Unix) and writes and flushes `contents` to disk.
fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the secret is never readable by others, not even for a moment.
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the new directory entry durable. Best effort: not every platform or file system lets a
/// directory be opened and synced, and the key file itself is already on disk.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const HOUR: u64 = 60 * 60 * 1000;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn key(version: &str) -> SigningKey {
        SigningKey::generate(KeyId::ed25519(version).unwrap()).unwrap()
    }

    fn old_keys(old: &SigningKey) -> BTreeMap<KeyId, OldVerifyKey> {
        BTreeMap::from([(
            old.key_id().clone(),
            OldVerifyKey {
                key: old.verify_key(),
                expired_ts: NOW - HOUR,
            },
        )])
    }

    #[test]
    fn build_then_parse_round_trip() {
        let server = name("a.example");
        let current = key("2");
        let old = key("1");
        let doc = build_server_keys_document(&server, &current, &old_keys(&old), NOW + 24 * HOUR)
            .unwrap();
        assert_eq!(doc["server_name"], "a.example");
        assert_eq!(
            doc["verify_keys"]["ed25519:2"]["key"],
            current.verify_key().to_base64()
        );
        assert_eq!(
            doc["old_verify_keys"]["ed25519:1"]["expired_ts"],
            NOW - HOUR
        );
        assert!(doc["signatures"]["a.example"]["ed25519:2"].is_string());

        let keys = parse_server_keys_document(&doc, &server, NOW).unwrap();
        assert_eq!(keys.server_name, server);
        assert_eq!(keys.valid_until_ts, NOW + 24 * HOUR);
        assert_eq!(keys.verify_keys.len(), 1);
        assert_eq!(keys.old_verify_keys, old_keys(&old));

        let id2 = current.key_id();
        assert_eq!(keys.verify_key(id2, NOW), Some(&current.verify_key()));
        assert_eq!(keys.verify_key(id2, NOW + 25 * HOUR), None);
        assert_eq!(
            keys.verify_key(old.key_id(), NOW - 2 * HOUR),
            Some(&old.verify_key())
        );
        assert_eq!(keys.verify_key(old.key_id(), NOW), None);
        assert_eq!(keys.verify_key(&KeyId::ed25519("3").unwrap(), NOW), None);
    }

    #[test]
    fn validity_is_capped_at_seven_days() {
        let server = name("a.example");
        let current = key("1");
        let doc =
            build_server_keys_document(&server, &current, &BTreeMap::new(), NOW + 365 * 24 * HOUR)
                .unwrap();
        let keys = parse_server_keys_document(&doc, &server, NOW).unwrap();
        assert_eq!(keys.valid_until_ts, NOW + MAX_VALIDITY_MS);
    }

    #[test]
    fn refuses_wrong_server_expired_and_unsigned() {
        let server = name("a.example");
        let current = key("1");
        let doc =
            build_server_keys_document(&server, &current, &BTreeMap::new(), NOW + HOUR).unwrap();
        assert!(matches!(
            parse_server_keys_document(&doc, &name("b.example"), NOW),
            Err(KeyError::ServerNameMismatch { .. })
        ));
        assert!(matches!(
            parse_server_keys_document(&doc, &server, NOW + HOUR),
            Err(KeyError::Expired { .. })
        ));
        let mut unsigned = doc.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert!(matches!(
            parse_server_keys_document(&unsigned, &server, NOW),
            Err(KeyError::NotSelfSigned)
        ));
        // Signed only by a key it does not list as current.
        let stranger = key("9");
        let mut foreign = unsigned.clone();
        sign_json(&mut foreign, &server, &stranger).unwrap();
        assert!(matches!(
            parse_server_keys_document(&foreign, &server, NOW),
            Err(KeyError::NotSelfSigned)
        ));
        // Signed by another server with the listed key id: still not self-signed.
        let mut other = unsigned.clone();
        sign_json(&mut other, &name("b.example"), &current).unwrap();
        assert!(matches!(
            parse_server_keys_document(&other, &server, NOW),
            Err(KeyError::NotSelfSigned)
        ));
    }

    #[test]
    fn refuses_tampering() {
        let server = name("a.example");
        let current = key("1");
        let doc =
            build_server_keys_document(&server, &current, &BTreeMap::new(), NOW + HOUR).unwrap();
        let mut extended = doc.clone();
        extended["valid_until_ts"] = json!(NOW + 2 * HOUR);
        assert!(matches!(
            parse_server_keys_document(&extended, &server, NOW),
            Err(KeyError::Signature(SigningError::BadSignature))
        ));
        // A key swapped in together with its own signature: the listed key's signature fails.
        let attacker = SigningKey::from_seed(current.key_id().clone(), [7; 32]).unwrap();
        let mut swapped = doc.clone();
        swapped["verify_keys"]["ed25519:1"]["key"] = json!(attacker.verify_key().to_base64());
        assert!(matches!(
            parse_server_keys_document(&swapped, &server, NOW),
            Err(KeyError::Signature(SigningError::BadSignature))
        ));
        // Every signature by a current key must hold, not just one.
        let second = key("2");
        let mut two = doc.clone();
        two["verify_keys"]["ed25519:2"] = json!({"key": second.verify_key().to_base64()});
        two["signatures"] = json!({});
        sign_json(&mut two, &server, &current).unwrap();
        two["signatures"]["a.example"]["ed25519:2"] = json!(unpadded_base64::encode([0u8; 64]));
        assert!(matches!(
            parse_server_keys_document(&two, &server, NOW),
            Err(KeyError::Signature(SigningError::BadSignature))
        ));
    }

    /// One way to break a key document, for table-driven tests.
    type Mutation = (&'static str, fn(&mut Value));

    #[test]
    fn refuses_malformed_documents() {
        let server = name("a.example");
        let current = key("1");
        let good =
            build_server_keys_document(&server, &current, &BTreeMap::new(), NOW + HOUR).unwrap();
        let mutations: Vec<Mutation> = vec![
            ("not object", |v| *v = json!([])),
            ("no server_name", |v| v["server_name"] = json!(1)),
            ("negative ts", |v| v["valid_until_ts"] = json!(-1)),
            ("float ts", |v| v["valid_until_ts"] = json!(1.5)),
            ("no verify_keys", |v| {
                v.as_object_mut().unwrap().remove("verify_keys");
            }),
            ("verify_keys list", |v| v["verify_keys"] = json!([])),
            ("bad key id", |v| {
                v["verify_keys"]["ed25519:a-b"] = json!({"key": "AAAA"})
            }),
            ("short key", |v| {
                v["verify_keys"]["ed25519:1"]["key"] = json!("AAAA")
            }),
            ("entry not object", |v| {
                v["verify_keys"]["ed25519:1"] = json!("x")
            }),
            ("old without ts", |v| {
                v["old_verify_keys"]["ed25519:0"] =
                    json!({"key": unpadded_base64::encode([1u8; 32])});
            }),
            ("old and current", |v| {
                v["old_verify_keys"]["ed25519:1"] =
                    json!({"key": unpadded_base64::encode([1u8; 32]), "expired_ts": 5});
            }),
        ];
        for (what, mutate) in mutations {
            let mut doc = good.clone();
            mutate(&mut doc);
            assert!(
                matches!(
                    parse_server_keys_document(&doc, &server, NOW),
                    Err(KeyError::Malformed(_))
                ),
                "{what}"
            );
        }
        let mut no_ed25519 = good.clone();
        no_ed25519["verify_keys"] = json!({"curve25519:1": {"key": "AAAA"}});
        assert!(matches!(
            parse_server_keys_document(&no_ed25519, &server, NOW),
            Err(KeyError::NoVerifyKeys)
        ));
    }

    #[test]
    fn unknown_algorithms_and_members_are_ignored() {
        let server = name("a.example");
        let current = key("1");
        let mut doc =
            build_server_keys_document(&server, &current, &BTreeMap::new(), NOW + HOUR).unwrap();
        doc.as_object_mut().unwrap().remove("signatures");
        doc["verify_keys"]["future:1"] = json!({"key": "whatever", "extra": true});
        doc["something_new"] = json!({"nested": [1, 2]});
        doc.as_object_mut().unwrap().remove("old_verify_keys");
        sign_json(&mut doc, &server, &current).unwrap();
        doc["signatures"]["a.example"]["future:1"] = json!("???");
        let keys = parse_server_keys_document(&doc, &server, NOW).unwrap();
        assert_eq!(keys.verify_keys.len(), 1);
        assert!(keys.old_verify_keys.is_empty());
    }

    #[test]
    fn builder_refuses_current_key_among_old_ones() {
        let current = key("1");
        assert!(matches!(
            build_server_keys_document(&name("a.example"), &current, &old_keys(&current), NOW),
            Err(KeyError::Malformed(_))
        ));
    }

    /// A scratch directory under the system temp dir, removed on drop.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("confab-keys-{}", random_alphanumeric(12)));
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn key_file_round_trip_and_permissions() {
        let dir = ScratchDir::new();
        let path = dir.0.join("signing.key");
        let key = key("a_1");
        write_signing_key_file(&path, &key).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("ed25519 a_1 {}\n", unpadded_base64::encode(key.seed()))
        );
        let again = read_signing_key_file(&path).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        assert_eq!(again.verify_key(), key.verify_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwrites, and leaves no temporary files behind.
        let other = self::key("b");
        match write_signing_key_file(&path, &other) {
            Err(KeyError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists)
            }
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
        assert_eq!(
            read_signing_key_file(&path).unwrap().verify_key(),
            key.verify_key()
        );
    }

    #[test]
    fn generate_if_missing_creates_once() {
        let dir = ScratchDir::new();
        let path = dir.0.join("signing.key");
        let first = generate_if_missing(&path).unwrap();
        let second = generate_if_missing(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.verify_key(), second.verify_key());
        assert!(matches!(
            generate_if_missing(&dir.0.join("no-such-dir").join("k")),
            Err(KeyError::Io { .. })
        ));
    }

    /// The seed from the spec's test vectors, in Synapse's file format, padded and unpadded.
    #[test]
    fn parses_synapse_style_files() {
        let p = Path::new("test.key");
        let vector = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
        let key = parse_signing_key(&format!("ed25519 a_XyZ1 {vector}\n"), p).unwrap();
        assert_eq!(key.key_id().as_str(), "ed25519:a_XyZ1");
        let padded =
            parse_signing_key(&format!("\n  ed25519\ta_XyZ1  {vector}=  \n\n"), p).unwrap();
        assert_eq!(padded.verify_key(), key.verify_key());
    }

    #[test]
    fn refuses_bad_key_files_without_echoing_them() {
        let p = Path::new("test.key");
        let seed = unpadded_base64::encode([9u8; 32]);
        let bad = [
            String::new(),
            "   \n".to_owned(),
            format!("ed25519 1 {seed}\ned25519 2 {seed}"),
            format!("ed25519 {seed}"),
            format!("ed25519 1 {seed} extra"),
            format!("rsa 1 {seed}"),
            format!("ed25519 a-b {seed}"),
            "ed25519 1 AAAA".to_owned(),
            "ed25519 1 !!!!".to_owned(),
        ];
        for contents in bad {
            let err = parse_signing_key(&contents, p).unwrap_err();
            assert!(
                matches!(err, KeyError::InvalidKeyFile { .. }),
                "{contents:?}"
            );
            assert!(!err.to_string().contains(&seed));
        }
    }
}
