//! This server's federation identity: its name, its ed25519 signing key and the public halves of
//! the keys it signed with before (server-server API, "Retrieving server keys" → "Publishing
//! Keys": `verify_keys` and `old_verify_keys`).
//!
//! On disk, in the data directory:
//!
//! - `signing.key`: the current key, one line `ed25519 <version> <seed>`, owner-only (0600), in
//!   the format [`confab_federation::keys`] reads and writes (Synapse's, so operators know it).
//! - `old_signing_keys.json`: retired keys as `{"ed25519:<v>": {"key": "<public>",
//!   "expired_ts": <ms>}}`, exactly the `old_verify_keys` member of the key document. A file of
//!   its own because the key file format holds one secret key and old keys are public: keeping
//!   them apart means the secret file never needs rewriting with more content, the old keys
//!   need no secrecy, and the JSON is published as it is stored.
//!
//! Rotation ([`ServerIdentity::rotate`]) retires the current key into the old-keys file first,
//! then replaces the key file atomically (write beside it, rename over it). A crash in between
//! leaves the current key listed as old too, which loading ignores, so no step can lose a key
//! that other servers still need to check what we signed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use confab_federation::ids::{ServerName, random_alphanumeric};
use confab_federation::keys::{
    KeyError, OldVerifyKey, build_server_keys_document, generate_if_missing, read_signing_key_file,
    write_signing_key_file,
};
use confab_federation::signing::{KeyId, SigningKey, VerifyKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The current signing key's file name inside the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// The retired keys' file name inside the data directory.
pub const OLD_KEYS_FILE: &str = "old_signing_keys.json";

/// How long the key document we publish says it is valid: a day, so that a rotation reaches
/// every peer within a day while peers refetch at most daily. (The spec asks for at least an
/// hour; receivers cap it at seven days.)
pub const PUBLISHED_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;

/// Why the identity could not be loaded, rotated or published.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The signing key file is missing, unreadable or invalid, or building the document failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The old keys file is not what [`ServerIdentity::rotate`] writes.
    #[error("invalid old keys file {path}: {reason}")]
    OldKeys {
        /// The file read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file of the identity failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// One entry of the old keys file, the wire shape of an `old_verify_keys` entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OldKeyEntry {
    key: String,
    expired_ts: u64,
}

/// This server's name and keys.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Our server name, the `origin` of everything we sign.
    pub server_name: ServerName,
    /// The key we sign with now.
    pub key: SigningKey,
    /// Keys we signed with before, still published so that what they signed can be checked.
    pub old_keys: BTreeMap<KeyId, OldVerifyKey>,
}

impl ServerIdentity {
    /// Loads the identity from `data_dir`, first generating a key if there is none (the first
    /// start of a server).
    pub fn load_or_generate(
        data_dir: &Path,
        server_name: ServerName,
    ) -> Result<Self, IdentityError> {
        fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let key = generate_if_missing(&data_dir.join(SIGNING_KEY_FILE))?;
        Self::with_old_keys(data_dir, server_name, key)
    }

    /// Loads the identity from `data_dir`; the key must exist (tools that act as a running
    /// server must not invent a key other servers have never seen).
    pub fn load(data_dir: &Path, server_name: ServerName) -> Result<Self, IdentityError> {
        let key = read_signing_key_file(&data_dir.join(SIGNING_KEY_FILE))?;
        Self::with_old_keys(data_dir, server_name, key)
    }

    /// An identity that exists only in memory, for tools and tests.
    pub fn in_memory(server_name: ServerName, key: SigningKey) -> Self {
        Self {
            server_name,
            key,
            old_keys: BTreeMap::new(),
        }
    }

    fn with_old_keys(
        data_dir: &Path,
        server_name: ServerName,
        key: SigningKey,
    ) -> Result<Self, IdentityError> {
        let mut old_keys = read_old_keys(&data_dir.join(OLD_KEYS_FILE))?;
        // Left behind by a rotation interrupted between its two writes; see the module docs.
        old_keys.remove(key.key_id());
        Ok(Self {
            server_name,
            key,
            old_keys,
        })
    }

    /// Retires the current key of the identity in `data_dir` (as expired at `now_ms`) and
    /// replaces it with a new one; returns the new identity. The running server keeps the key
    /// it loaded until it restarts.
    pub fn rotate(
        data_dir: &Path,
        server_name: ServerName,
        now_ms: u64,
    ) -> Result<Self, IdentityError> {
        let current = Self::load_or_generate(data_dir, server_name)?;
        let mut old_keys = current.old_keys;
        old_keys.insert(
            current.key.key_id().clone(),
            OldVerifyKey {
                key: current.key.verify_key(),
                expired_ts: now_ms,
            },
        );
        write_old_keys(&data_dir.join(OLD_KEYS_FILE), &old_keys)?;

        let new_key = loop {
            let id = KeyId::ed25519(&random_alphanumeric(8)).map_err(KeyError::from)?;
            if !old_keys.contains_key(&id) {
                break SigningKey::generate(id).map_err(KeyError::from)?;
            }
        };
        let key_path = data_dir.join(SIGNING_KEY_FILE);
        let next_path = data_dir.join(format!("{SIGNING_KEY_FILE}.next"));
        // A leftover from an interrupted rotation holds a key nobody has seen; replace it.
        match fs::remove_file(&next_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(IdentityError::Io {
                    path: next_path,
                    source: e,
                });
            }
            _ => {}
        }
        write_signing_key_file(&next_path, &new_key)?;
        fs::rename(&next_path, &key_path).map_err(|source| IdentityError::Io {
            path: key_path,
            source,
        })?;
        Ok(Self {
            server_name: current.server_name,
            key: new_key,
            old_keys,
        })
    }

    /// The signed key document served at `/_matrix/key/v2/server`, valid for
    /// [`PUBLISHED_VALIDITY_MS`] from `now_ms`.
    pub fn key_document(&self, now_ms: u64) -> Result<Value, IdentityError> {
        Ok(build_server_keys_document(
            &self.server_name,
            &self.key,
            &self.old_keys,
            now_ms.saturating_add(PUBLISHED_VALIDITY_MS),
        )?)
    }
}

fn read_old_keys(path: &Path) -> Result<BTreeMap<KeyId, OldVerifyKey>, IdentityError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(IdentityError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let invalid = |reason: String| IdentityError::OldKeys {
        path: path.to_owned(),
        reason,
    };
    let entries: BTreeMap<String, OldKeyEntry> =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    entries
        .into_iter()
        .map(|(id, entry)| {
            let key_id = KeyId::parse(&id).map_err(|e| invalid(e.to_string()))?;
            let key = VerifyKey::from_base64(&entry.key)
                .map_err(|_| invalid(format!("the key of {id} is not 32 bytes of base64")))?;
            Ok((
                key_id,
                OldVerifyKey {
                    key,
                    expired_ts: entry.expired_ts,
                },
            ))
        })
        .collect()
}

/// Writes the old keys beside `path` and renames them over it, so the file is always whole.
fn write_old_keys(path: &Path, keys: &BTreeMap<KeyId, OldVerifyKey>) -> Result<(), IdentityError> {
    let io_error = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let entries: BTreeMap<&str, OldKeyEntry> = keys
        .iter()
        .map(|(id, old)| {
            let entry = OldKeyEntry {
                key: old.key.to_base64(),
                expired_ts: old.expired_ts,
            };
            (id.as_str(), entry)
        })
        .collect();
    let mut text =
        serde_json::to_string_pretty(&entries).map_err(|e| io_error(io::Error::other(e)))?;
    text.push('\n');
    let temp = path.with_extension(format!("json.tmp-{}", random_alphanumeric(8)));
    let written = fs::File::create(&temp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(io_error(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_federation::keys::parse_server_keys_document;

    const NOW: u64 = 1_700_000_000_000;

    fn name() -> ServerName {
        ServerName::parse("a.example").unwrap()
    }

    #[test]
    fn generated_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = ServerIdentity::load_or_generate(&data, name()).unwrap();
        let again = ServerIdentity::load_or_generate(&data, name()).unwrap();
        assert_eq!(first.key.key_id(), again.key.key_id());
        assert_eq!(first.key.verify_key(), again.key.verify_key());
        assert!(first.old_keys.is_empty());
        assert!(first.key.key_id().as_str().starts_with("ed25519:"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data.join(SIGNING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = ServerIdentity::load(&data, name()).unwrap();
        assert_eq!(loaded.key.key_id(), first.key.key_id());
        assert!(ServerIdentity::load(&dir.path().join("empty"), name()).is_err());
    }

    #[test]
    fn rotation_keeps_old_keys_published() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerIdentity::load_or_generate(dir.path(), name()).unwrap();
        let second = ServerIdentity::rotate(dir.path(), name(), NOW).unwrap();
        assert_ne!(second.key.key_id(), first.key.key_id());
        let third = ServerIdentity::rotate(dir.path(), name(), NOW + 5).unwrap();

        let loaded = ServerIdentity::load(dir.path(), name()).unwrap();
        assert_eq!(loaded.key.key_id(), third.key.key_id());
        assert_eq!(loaded.old_keys.len(), 2);
        assert_eq!(
            loaded.old_keys[first.key.key_id()],
            OldVerifyKey {
                key: first.key.verify_key(),
                expired_ts: NOW
            }
        );
        assert_eq!(loaded.old_keys[second.key.key_id()].expired_ts, NOW + 5);

        let doc = loaded.key_document(NOW + 10).unwrap();
        let keys = parse_server_keys_document(&doc, &name(), NOW + 10).unwrap();
        assert_eq!(keys.valid_until_ts, NOW + 10 + PUBLISHED_VALIDITY_MS);
        assert!(keys.verify_keys.contains_key(third.key.key_id()));
        assert_eq!(keys.old_verify_keys, loaded.old_keys);
        // Nothing but the two files is left behind.
        let mut files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, [OLD_KEYS_FILE, SIGNING_KEY_FILE]);
    }

    #[test]
    fn interrupted_rotation_does_not_list_the_current_key_as_old() {
        let dir = tempfile::tempdir().unwrap();
        let current = ServerIdentity::load_or_generate(dir.path(), name()).unwrap();
        // The first step of a rotation happened, the second did not.
        let mut old = BTreeMap::new();
        old.insert(
            current.key.key_id().clone(),
            OldVerifyKey {
                key: current.key.verify_key(),
                expired_ts: NOW,
            },
        );
        write_old_keys(&dir.path().join(OLD_KEYS_FILE), &old).unwrap();
        let loaded = ServerIdentity::load(dir.path(), name()).unwrap();
        assert!(loaded.old_keys.is_empty());
        loaded.key_document(NOW).unwrap();

        fs::write(dir.path().join(OLD_KEYS_FILE), "{\"ed25519:x\": 5}").unwrap();
        assert!(matches!(
            ServerIdentity::load(dir.path(), name()),
            Err(IdentityError::OldKeys { .. })
        ));
    }
}
