//! Per-address limits on what an unauthenticated caller can repeat: creating guest sessions and
//! failing to join rooms. Invite tokens carry 256 random bits, so guessing one is hopeless
//! anyway; the limit keeps a caller from trying at all, and from enumerating room ids. The same
//! keyed buckets budget what other servers' users may do (`federation::rooms::budget`).
//!
//! Each key (a client address, a federated server's name, a remote user) has a token bucket
//! refilled continuously at its rate, holding at most its burst. Memory is bounded: past
//! [`MAX_KEYS`] keys, the buckets that have refilled (which behave as new ones) are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use ipnet::IpNet;

use crate::error::{ApiError, ErrorCode};

/// Most keys tracked at once per limiter.
pub const MAX_KEYS: usize = 65_536;

/// A keyed token bucket.
pub struct KeyedLimiter {
    /// Tokens gained per second.
    rate: f64,
    /// Tokens a bucket holds at most: what may be spent at once after a quiet spell.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl KeyedLimiter {
    /// A limiter allowing `per_minute` actions a minute per key, all of them at once if saved up.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self::with_rate(per_minute / 60.0, per_minute)
    }

    /// A limiter allowing `per_second` actions a second per key, and up to `burst` at once if
    /// saved up.
    pub fn with_rate(per_second: f64, burst: f64) -> Self {
        Self {
            rate: per_second.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one action of `key`; when it has none left, says how long until it has one.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_n(key, 1)
    }

    /// Spends `n` actions of `key` at once, or none of them: when it has fewer than `n` left,
    /// says how long until it has them. More than a full bucket counts as a full bucket, so that
    /// a batch larger than the burst waits for a full bucket rather than forever.
    pub fn take_n(&self, key: &str, n: u32) -> Result<(), Duration> {
        let n = f64::from(n).min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_KEYS {
            let full = self.burst;
            buckets.retain(|_, b| self.refilled(*b, now).tokens < full);
            if buckets.len() >= MAX_KEYS {
                // Every tracked key is mid-limit: forget the lot rather than grow, since an
                // attacker able to fill the table holds more addresses than a limit can stop.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        *bucket = self.refilled(*bucket, now);
        if bucket.tokens < n {
            return Err(Duration::from_secs_f64((n - bucket.tokens) / self.rate));
        }
        bucket.tokens -= n;
        Ok(())
    }

    /// Gives back one action of `key` taken by [`Self::take`] for an attempt that turned out not
    /// to count (it succeeded, or failed for a reason that is not a guess).
    pub fn give_back(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            *bucket = self.refilled(*bucket, now);
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        Bucket {
            tokens: (bucket.tokens + gained).min(self.burst),
            at: now,
        }
    }
}

/// Runs `attempt` unless `key` has used up its refusals; a refusal of the kind an outsider
/// probing for rooms or invites gets spends one.
///
/// The refusal is taken from the budget *before* the attempt and given back when the attempt
/// succeeds or fails for another reason: checking first and taking after would let any number
/// of concurrent guesses pass the check while the budget still looks full.
pub async fn limit_refusals<T>(
    limiter: &KeyedLimiter,
    key: &str,
    attempt: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    limiter
        .take(key)
        .map_err(|wait| rate_limited(wait, "too many refused joins"))?;
    let result = attempt.await;
    if !matches!(&result, Err(err) if is_probe(err.code)) {
        limiter.give_back(key);
    }
    result
}

/// Refusals that say a guess was wrong; not those a rightful guest can meet (a full room, a
/// database that is away).
fn is_probe(code: ErrorCode) -> bool {
    use ErrorCode::*;
    matches!(
        code,
        RoomNotFound
            | BadRoomId
            | InviteRequired
            | InviteInvalid
            | InviteExpired
            | InviteRevoked
            | InviteUsedUp
            | RoomLocked
            | Kicked
    )
}

/// A `rate_limited` answer saying when to come back.
pub fn rate_limited(wait: Duration, what: &str) -> ApiError {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    ApiError {
        retry_after_ms: Some(ms),
        ..ApiError::new(
            ErrorCode::RateLimited,
            format!("{what} from here; try again in {} s", ms.div_ceil(1000)),
        )
    }
}

/// The address a request comes from: the peer, or, when the peer is one of `trusted_proxies`,
/// the last address in `X-Forwarded-For` that is not one of them (earlier entries are whatever
/// the client claimed). `None` only for a request without a peer (never over TCP).
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    client_ip_of(req.peer_addr(), req.headers(), trusted_proxies)
}

/// [`client_ip`] from a request's peer and headers.
pub fn client_ip_of(
    peer: Option<std::net::SocketAddr>,
    headers: &actix_web::http::header::HeaderMap,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
}

/// The limiter key of an address: IPv6 clients get a whole /64 each, as one host usually does.
pub fn address_key(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_string(),
        None => "unknown".to_owned(),
    }
}

/// Live connections per client address, capped: a slot is held for as long as its connection
/// lives.
#[derive(Debug)]
pub struct ConnectionCap {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One connection's place under a [`ConnectionCap`]; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Slot {
    /// The address it counts against.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl ConnectionCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// A place for one more connection from `key`, unless it has the most allowed.
    pub fn admit(&self, key: String) -> Result<Slot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_default();
        if *n >= self.max {
            return Err(ApiError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "{} live connections from this address already, the most allowed",
                    self.max
                ),
            ));
        }
        *n += 1;
        Ok(Slot {
            key,
            open: self.open.clone(),
        })
    }

    /// Live connections from `key`.
    pub fn open(&self, key: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // An address with nothing open takes no memory.
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_a_closed_connection_frees_its_place() {
        let cap = ConnectionCap::new(2);
        let a = cap.admit("10.0.0.1".into()).unwrap();
        let _b = cap.admit("10.0.0.1".into()).unwrap();
        let err = cap.admit("10.0.0.1".into()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyConnections);
        assert!(
            cap.admit("10.0.0.2".into()).is_ok(),
            "other addresses are unaffected"
        );
        drop(a);
        assert_eq!(cap.open("10.0.0.1"), 1);
        let _c = cap.admit("10.0.0.1".into()).unwrap();
        drop(_c);
        drop(_b);
        assert_eq!(cap.open("10.0.0.1"), 0);
        assert!(
            cap.open.lock().unwrap().is_empty(),
            "nothing kept for a quiet address"
        );
    }

    #[test]
    fn a_key_gets_its_budget_then_waits_and_others_are_unaffected() {
        let limiter = KeyedLimiter::new(3);
        for _ in 0..3 {
            limiter.take("a").unwrap();
        }
        let wait = limiter.take("a").unwrap_err();
        // One token comes back every 20 s at 3 a minute.
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert!(limiter.take("a").is_err());
        assert!(limiter.take("b").is_ok());
        // What is given back can be taken again, but a bucket never holds more than its size.
        limiter.give_back("a");
        assert!(limiter.take("a").is_ok());
        for _ in 0..10 {
            limiter.give_back("b");
        }
        for _ in 0..3 {
            limiter.take("b").unwrap();
        }
        assert!(limiter.take("b").is_err());
    }

    /// Concurrent guesses: every attempt is in flight (awaiting, not yet refused) before the
    /// first one fails, as when many requests reach the database at once. Only the budget may
    /// get that far; the rest are refused `rate_limited` without an attempt.
    #[tokio::test]
    async fn concurrent_guesses_cannot_all_pass_the_budget() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const BUDGET: u32 = 3;
        const GUESSES: usize = 12;
        let limiter = KeyedLimiter::new(BUDGET);
        let entered = AtomicUsize::new(0);
        let guesses = (0..GUESSES).map(|_| {
            limit_refusals(&limiter, "guesser", async {
                entered.fetch_add(1, Ordering::SeqCst);
                // In flight until every other guess has been polled once (`join_all` polls
                // them in turn): the guesses overlap, as concurrent requests do.
                tokio::task::yield_now().await;
                Err::<(), _>(ApiError::new(ErrorCode::InviteInvalid, "wrong"))
            })
        });
        let results = futures_util::future::join_all(guesses).await;
        let limited = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.code == ErrorCode::RateLimited))
            .count();
        assert_eq!(entered.load(Ordering::SeqCst), BUDGET as usize);
        assert_eq!(limited, GUESSES - BUDGET as usize);

        // Successes and refusals that are not guesses give their token back.
        let limiter = KeyedLimiter::new(2);
        for _ in 0..5 {
            limit_refusals(&limiter, "rightful", async { Ok::<_, ApiError>(()) })
                .await
                .unwrap();
            let full = limit_refusals(&limiter, "rightful", async {
                Err::<(), _>(ApiError::new(ErrorCode::RoomFull, "full"))
            })
            .await;
            assert_eq!(full.unwrap_err().code, ErrorCode::RoomFull);
        }
    }

    #[test]
    fn refilled_buckets_are_dropped_past_the_key_limit() {
        let limiter = KeyedLimiter::new(60);
        {
            let mut buckets = limiter.buckets.lock().unwrap();
            let long_ago = Instant::now() - Duration::from_secs(120);
            for i in 0..MAX_KEYS {
                buckets.insert(
                    i.to_string(),
                    Bucket {
                        tokens: 0.0,
                        at: long_ago,
                    },
                );
            }
        }
        limiter.take("new").unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a = address_key(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = address_key(Some("2001:db8:1:2:bbbb::2".parse().unwrap()));
        assert_eq!(a, b);
        assert_eq!(
            address_key(Some("::ffff:10.0.0.1".parse().unwrap())),
            "10.0.0.1"
        );
    }
}
