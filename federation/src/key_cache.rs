//! Other servers' keys, fetched on demand and cached (server-server API, "Retrieving server
//! keys": a receiver fetches `GET /_matrix/key/v2/server` from the origin and may cache the
//! answer until its `valid_until_ts`, read no further than seven days ahead).
//!
//! [`RemoteKeyCache`] owns the policy and nothing of the transport: it is generic over a
//! [`KeyFetcher`] that returns the raw key document, which the cache checks with
//! [`crate::keys::parse_server_keys_document`] (right server, self-signed, not expired) before
//! believing a word of it. The rules:
//!
//! - a document is used until its (capped) `valid_until_ts`, then fetched again;
//! - a key id the cached document does not know causes one refetch, in case the server rotated
//!   its key, but at most one per [`KeyCachePolicy::min_refetch_interval_ms`] per server, so
//!   requests naming made-up key ids cannot turn us into a tool for flooding that server;
//! - a server whose fetch fails is not asked again until a [`Backoff`] delay has passed, which
//!   grows with every consecutive failure, so a dead or hostile server costs one failed request
//!   per delay instead of one per inbound request.
//!
//! - the cache holds at most [`KeyCachePolicy::max_entries`] servers: past it, entries that hold nothing useful
//!   go first, then the least recently used, valid keys or not (they are fetched again if that
//!   server comes back), and a document with more than [`MAX_KEYS_PER_SERVER`] keys is refused,
//!   so that requests claiming endless made-up origins (every subdomain of a wildcard domain can
//!   serve a valid key document) cannot grow the cache without bound.
//!
//! Time is passed in (`now_ms`) rather than read, so that tests can move it.
//! Two lookups racing for the same uncached server may both fetch; the later answer wins. That
//! costs one spare request and keeps the cache free of async locks and of any runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::backoff::Backoff;
use crate::ids::ServerName;
use crate::keys::{ServerKeys, parse_server_keys_document};
use crate::signing::{KeyId, VerifyKey};

/// Most keys (current and old) a server's document may list to be cached.
pub const MAX_KEYS_PER_SERVER: usize = 64;

/// Fetches a server's key document, e.g. over HTTP; the cache does the checking.
pub trait KeyFetcher: Send + Sync {
    /// Why a fetch failed; only its text is kept.
    type Error: std::fmt::Display;

    /// Fetches `GET /_matrix/key/v2/server` from `server` and returns the JSON body.
    fn fetch_server_keys(
        &self,
        server: &ServerName,
    ) -> impl Future<Output = Result<Value, Self::Error>> + Send;
}

/// Why no key could be found to check a signature with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// Fetching the server's keys failed, or the document it returned was refused.
    #[error("cannot get the keys of {server}: {reason}")]
    Unavailable {
        /// The server asked.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The server's keys failed to fetch recently; it is not asked again until `retry_at_ms`.
    #[error(
        "the keys of {server} failed to fetch {failures} time(s) in a row; not retrying before {retry_at_ms}"
    )]
    BackingOff {
        /// The server.
        server: String,
        /// Consecutive failures so far.
        failures: u32,
        /// When the next fetch may happen, in milliseconds since the Unix epoch.
        retry_at_ms: u64,
    },
    /// The server's current document has no such key, or the key had expired.
    #[error("{server} has no valid key {key_id}")]
    UnknownKey {
        /// The server.
        server: String,
        /// The key id asked for.
        key_id: String,
    },
}

/// Tuning of a [`RemoteKeyCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCachePolicy {
    /// Delays between fetch attempts of a failing server.
    pub backoff: Backoff,
    /// The least time between two fetches of a server caused by unknown key ids.
    pub min_refetch_interval_ms: u64,
    /// Most servers held.
    pub max_entries: usize,
}

impl Default for KeyCachePolicy {
    /// One minute between refetches; failing servers retried after up to 1 s, doubling to an
    /// hour; ten thousand servers.
    fn default() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(3600)),
            min_refetch_interval_ms: 60_000,
            max_entries: 10_000,
        }
    }
}

/// What is known about one server.
#[derive(Debug, Default)]
struct Entry {
    /// The last document that checked out, if any.
    keys: Option<ServerKeys>,
    /// When the last fetch (successful or not) started.
    last_fetch_ms: u64,
    /// Consecutive failed fetches.
    failures: u32,
    /// When the entry was last looked up: the least recently used go first when the cache is full.
    last_used_ms: u64,
    /// No fetch before this time while `failures > 0`.
    retry_at_ms: u64,
}

impl Entry {
    fn fresh_keys(&self, now_ms: u64) -> Option<&ServerKeys> {
        self.keys.as_ref().filter(|k| now_ms < k.valid_until_ts)
    }
}

/// A cache of remote servers' verify keys in front of a [`KeyFetcher`].
#[derive(Debug)]
pub struct RemoteKeyCache<F> {
    fetcher: F,
    policy: KeyCachePolicy,
    entries: Mutex<HashMap<ServerName, Entry>>,
}

/// What a lookup decided under the lock.
enum Plan {
    Found(VerifyKey),
    Fetch,
}

impl<F: KeyFetcher> RemoteKeyCache<F> {
    /// An empty cache.
    pub fn new(fetcher: F, policy: KeyCachePolicy) -> Self {
        Self {
            fetcher,
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The fetcher, for callers that share its transport.
    pub fn fetcher(&self) -> &F {
        &self.fetcher
    }

    /// The key `server` signs with under `key_id`, valid at `now_ms`, fetching the server's
    /// document if the cache has none that is fresh, or (once) if it does not know `key_id`.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        now_ms: u64,
    ) -> Result<VerifyKey, KeyLookupError> {
        match self.plan(server, key_id, now_ms)? {
            Plan::Found(key) => return Ok(key),
            Plan::Fetch => {}
        }
        let fetched = self.fetcher.fetch_server_keys(server).await;
        let checked = fetched.map_err(|e| e.to_string()).and_then(|doc| {
            let keys =
                parse_server_keys_document(&doc, server, now_ms).map_err(|e| e.to_string())?;
            let count = keys.verify_keys.len() + keys.old_verify_keys.len();
            if count > MAX_KEYS_PER_SERVER {
                return Err(format!(
                    "the document lists {count} keys, more than the {MAX_KEYS_PER_SERVER} kept"
                ));
            }
            Ok(keys)
        });

        let mut entries = self.lock();
        let entry = entries.entry(server.clone()).or_default();
        match checked {
            Ok(keys) => {
                entry.keys = Some(keys);
                entry.failures = 0;
            }
            Err(reason) => {
                let delay = self.policy.backoff.delay(entry.failures, &mut rand::rng());
                entry.failures = entry.failures.saturating_add(1);
                // At least a millisecond, so that "right after a failure" is always backing off.
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
                entry.retry_at_ms = now_ms.saturating_add(delay_ms);
                return Err(KeyLookupError::Unavailable {
                    server: server.to_string(),
                    reason,
                });
            }
        }
        entry
            .fresh_keys(now_ms)
            .and_then(|keys| keys.verify_key(key_id, now_ms))
            .copied()
            .ok_or_else(|| unknown_key(server, key_id))
    }

    /// Servers held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no server is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached document of `server`, if any (fresh or not).
    pub fn cached(&self, server: &ServerName) -> Option<ServerKeys> {
        self.lock().get(server).and_then(|e| e.keys.clone())
    }

    /// Looks in the cache and decides whether to fetch; records the fetch's start.
    fn plan(
        &self,
        server: &ServerName,
        key_id: &KeyId,
        now_ms: u64,
    ) -> Result<Plan, KeyLookupError> {
        let mut entries = self.lock();
        if !entries.contains_key(server) && entries.len() >= self.policy.max_entries {
            make_room(&mut entries, self.policy.max_entries, now_ms);
        }
        let entry = entries.entry(server.clone()).or_default();
        entry.last_used_ms = now_ms;
        if let Some(keys) = entry.fresh_keys(now_ms) {
            if let Some(key) = keys.verify_key(key_id, now_ms) {
                return Ok(Plan::Found(*key));
            }
            // A key the document knows but that is no longer valid will not come back by
            // asking again; only a key id it has never heard of might be a new key.
            let known =
                keys.verify_keys.contains_key(key_id) || keys.old_verify_keys.contains_key(key_id);
            let refetched_recently =
                now_ms.saturating_sub(entry.last_fetch_ms) < self.policy.min_refetch_interval_ms;
            if known || refetched_recently {
                return Err(unknown_key(server, key_id));
            }
        }
        if entry.failures > 0 && now_ms < entry.retry_at_ms {
            return Err(KeyLookupError::BackingOff {
                server: server.to_string(),
                failures: entry.failures,
                retry_at_ms: entry.retry_at_ms,
            });
        }
        entry.last_fetch_ms = now_ms;
        Ok(Plan::Fetch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerName, Entry>> {
        // The map stays consistent even if a holder panicked: every update is a single assignment.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Frees a tenth of a full cache (so that this runs once per that many new servers, not once per
/// lookup): entries that hold nothing useful first, then the least recently used.
fn make_room(entries: &mut HashMap<ServerName, Entry>, max: usize, now_ms: u64) {
    let target = max - max.div_ceil(10);
    entries.retain(|_, e| e.fresh_keys(now_ms).is_some() || now_ms < e.retry_at_ms);
    if entries.len() <= target {
        return;
    }
    let mut by_use: Vec<(u64, ServerName)> = entries
        .iter()
        .map(|(name, e)| (e.last_used_ms, name.clone()))
        .collect();
    by_use.sort_unstable_by_key(|(used, _)| *used);
    let excess = entries.len() - target;
    for (_, name) in by_use.into_iter().take(excess) {
        entries.remove(&name);
    }
}

fn unknown_key(server: &ServerName, key_id: &KeyId) -> KeyLookupError {
    KeyLookupError::UnknownKey {
        server: server.to_string(),
        key_id: key_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{OldVerifyKey, build_server_keys_document};
    use crate::signing::SigningKey;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NOW: u64 = 1_700_000_000_000;
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    /// A server whose published document the test changes, counting fetches.
    struct FakeServer {
        document: Mutex<Result<Value, String>>,
        fetches: AtomicUsize,
    }

    impl KeyFetcher for &FakeServer {
        type Error = String;
        fn fetch_server_keys(
            &self,
            _server: &ServerName,
        ) -> impl Future<Output = Result<Value, String>> + Send {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let doc = self.document.lock().unwrap().clone();
            async move { doc }
        }
    }

    fn name() -> ServerName {
        ServerName::parse("remote.example").unwrap()
    }

    fn key(version: &str) -> SigningKey {
        SigningKey::generate(KeyId::ed25519(version).unwrap()).unwrap()
    }

    fn document(current: &SigningKey, old: &[(&SigningKey, u64)], valid_until: u64) -> Value {
        let old: BTreeMap<_, _> = old
            .iter()
            .map(|(k, expired_ts)| {
                let entry = OldVerifyKey {
                    key: k.verify_key(),
                    expired_ts: *expired_ts,
                };
                (k.key_id().clone(), entry)
            })
            .collect();
        build_server_keys_document(&name(), current, &old, valid_until).unwrap()
    }

    fn server(doc: Result<Value, String>) -> FakeServer {
        FakeServer {
            document: Mutex::new(doc),
            fetches: AtomicUsize::new(0),
        }
    }

    fn policy() -> KeyCachePolicy {
        KeyCachePolicy {
            backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(3600)),
            min_refetch_interval_ms: 60_000,
            max_entries: 10,
        }
    }

    fn fetches(s: &FakeServer) -> usize {
        s.fetches.load(Ordering::SeqCst)
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        // The fake fetcher never pends, so polling once with a no-op waker completes it.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the fake fetcher never pends"),
        }
    }

    #[test]
    fn caches_until_valid_until() {
        let k1 = key("1");
        let remote = server(Ok(document(&k1, &[], NOW + HOUR)));
        let cache = RemoteKeyCache::new(&remote, policy());
        let id = k1.key_id();
        assert_eq!(
            block_on(cache.verify_key(&name(), id, NOW)),
            Ok(k1.verify_key())
        );
        assert_eq!(
            block_on(cache.verify_key(&name(), id, NOW + HOUR - 1)),
            Ok(k1.verify_key())
        );
        assert_eq!(fetches(&remote), 1, "served from the cache while valid");

        // At valid_until the document is stale and fetched again.
        let k2 = key("2");
        *remote.document.lock().unwrap() = Ok(document(&k2, &[(&k1, NOW + HOUR)], NOW + 2 * HOUR));
        assert_eq!(
            block_on(cache.verify_key(&name(), k2.key_id(), NOW + HOUR)),
            Ok(k2.verify_key())
        );
        assert_eq!(fetches(&remote), 2);
        // k1 is now an old key that expired at NOW + HOUR.
        assert!(matches!(
            block_on(cache.verify_key(&name(), id, NOW + HOUR)),
            Err(KeyLookupError::UnknownKey { .. })
        ));
        assert_eq!(
            fetches(&remote),
            2,
            "a known but expired key is not refetched"
        );
    }

    #[test]
    fn validity_is_capped_at_seven_days() {
        let k1 = key("1");
        let remote = server(Ok(document(&k1, &[], NOW + 365 * DAY)));
        let cache = RemoteKeyCache::new(&remote, policy());
        block_on(cache.verify_key(&name(), k1.key_id(), NOW)).unwrap();
        block_on(cache.verify_key(&name(), k1.key_id(), NOW + 7 * DAY - 1)).unwrap();
        assert_eq!(fetches(&remote), 1);
        block_on(cache.verify_key(&name(), k1.key_id(), NOW + 7 * DAY)).unwrap();
        assert_eq!(fetches(&remote), 2, "refetched after seven days");
    }

    #[test]
    fn unknown_key_id_refetches_once() {
        let k1 = key("1");
        let remote = server(Ok(document(&k1, &[], NOW + DAY)));
        let cache = RemoteKeyCache::new(&remote, policy());
        block_on(cache.verify_key(&name(), k1.key_id(), NOW)).unwrap();

        // The server rotates to k2 a while later; a request signed with k2 triggers one refetch.
        let k2 = key("2");
        *remote.document.lock().unwrap() = Ok(document(&k2, &[(&k1, NOW + 2 * HOUR)], NOW + DAY));
        let later = NOW + 2 * HOUR;
        assert_eq!(
            block_on(cache.verify_key(&name(), k2.key_id(), later)),
            Ok(k2.verify_key())
        );
        assert_eq!(fetches(&remote), 2);

        // A key id the server does not have: exactly one more fetch, then refusals without
        // fetching until the refetch interval has passed.
        let bogus = KeyId::ed25519("bogus").unwrap();
        let unknown = |at| block_on(cache.verify_key(&name(), &bogus, at));
        let later = later + 10 * 60_000;
        assert!(matches!(
            unknown(later),
            Err(KeyLookupError::UnknownKey { .. })
        ));
        assert_eq!(fetches(&remote), 3);
        assert!(matches!(
            unknown(later + 1),
            Err(KeyLookupError::UnknownKey { .. })
        ));
        assert!(matches!(
            unknown(later + 59_999),
            Err(KeyLookupError::UnknownKey { .. })
        ));
        assert_eq!(fetches(&remote), 3, "no refetch within the interval");
        assert!(matches!(
            unknown(later + 60_000),
            Err(KeyLookupError::UnknownKey { .. })
        ));
        assert_eq!(fetches(&remote), 4);
        // The known keys kept working throughout.
        assert_eq!(
            block_on(cache.verify_key(&name(), k2.key_id(), later + 60_001)),
            Ok(k2.verify_key())
        );
        assert_eq!(fetches(&remote), 4);
    }

    #[test]
    fn refuses_documents_that_do_not_check_out() {
        let k1 = key("1");
        let mut forged = document(&k1, &[], NOW + DAY);
        forged["valid_until_ts"] = serde_json::json!(NOW + 2 * DAY);
        let remote = server(Ok(forged));
        let cache = RemoteKeyCache::new(&remote, policy());
        let err = block_on(cache.verify_key(&name(), k1.key_id(), NOW)).unwrap_err();
        assert!(matches!(err, KeyLookupError::Unavailable { .. }), "{err}");
        assert!(cache.cached(&name()).is_none());
    }

    #[test]
    fn failing_servers_are_backed_off() {
        let k1 = key("1");
        let remote = server(Err("connection refused".into()));
        let cache = RemoteKeyCache::new(&remote, policy());
        let id = k1.key_id();
        let lookup = |at| block_on(cache.verify_key(&name(), id, at));

        let mut now = NOW;
        for attempt in 0..5u32 {
            let err = lookup(now).unwrap_err();
            assert!(matches!(err, KeyLookupError::Unavailable { .. }), "{err}");
            assert_eq!(fetches(&remote), attempt as usize + 1);
            // Right after a failure: refused without asking the server.
            assert!(matches!(
                lookup(now),
                Err(KeyLookupError::BackingOff { failures, .. }) if failures == attempt + 1
            ));
            assert_eq!(fetches(&remote), attempt as usize + 1);
            // Once the longest possible delay for this attempt has passed, it is asked again.
            let ceiling = policy().backoff.ceiling(attempt);
            now += u64::try_from(ceiling.as_millis()).unwrap() + 1;
        }

        // It comes back: the next fetch after the delay succeeds and resets the failures.
        *remote.document.lock().unwrap() = Ok(document(&k1, &[], now + DAY));
        assert_eq!(lookup(now), Ok(k1.verify_key()));
        *remote.document.lock().unwrap() = Err("down again".into());
        let stale = now + DAY;
        assert!(matches!(
            lookup(stale),
            Err(KeyLookupError::Unavailable { .. })
        ));
        match lookup(stale) {
            Err(KeyLookupError::BackingOff { failures, .. }) => assert_eq!(failures, 1),
            other => panic!("{other:?}"),
        }
    }

    /// Every server asked publishes a valid document with one key, `ed25519:k`.
    struct EveryServer(SigningKey);

    impl KeyFetcher for &EveryServer {
        type Error = String;
        fn fetch_server_keys(
            &self,
            server: &ServerName,
        ) -> impl Future<Output = Result<Value, String>> + Send {
            let doc = build_server_keys_document(server, &self.0, &BTreeMap::new(), NOW + DAY)
                .map_err(|e| e.to_string());
            async move { doc }
        }
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used_even_with_valid_keys() {
        let remote = EveryServer(key("k"));
        let cache = RemoteKeyCache::new(&remote, policy());
        let id = remote.0.key_id();
        let server = |i: usize| ServerName::parse(&format!("s{i}.example")).unwrap();
        for i in 0..25 {
            assert!(block_on(cache.verify_key(&server(i), id, NOW + i as u64)).is_ok());
            // s0 is in use all along.
            assert!(block_on(cache.verify_key(&server(0), id, NOW + i as u64)).is_ok());
            assert!(cache.len() <= 10, "{} servers held", cache.len());
        }
        assert!(cache.cached(&server(0)).is_some());
        assert!(cache.cached(&server(24)).is_some());
        // The first ones after s0 were least recently used: gone, though their keys are valid.
        assert!(cache.cached(&server(1)).is_none());
    }

    #[test]
    fn a_document_with_too_many_keys_is_refused() {
        let current = key("k");
        let old: Vec<SigningKey> = (0..MAX_KEYS_PER_SERVER)
            .map(|i| key(&format!("o{i}")))
            .collect();
        let old: Vec<(&SigningKey, u64)> = old.iter().map(|k| (k, NOW - HOUR)).collect();
        let remote = server(Ok(document(&current, &old, NOW + HOUR)));
        let cache = RemoteKeyCache::new(&remote, policy());
        match block_on(cache.verify_key(&name(), current.key_id(), NOW)) {
            Err(KeyLookupError::Unavailable { reason, .. }) => {
                assert!(reason.contains("65 keys"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(cache.cached(&name()).is_none());
    }
}
