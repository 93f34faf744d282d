//! Federation in the homeserver (DESIGN.md, "Federation"; Matrix server-server API): this
//! server's identity and key publication, authentication of inbound requests, the outbound
//! client with discovery and address policy, the cache of other servers' keys, and the
//! `confab federation …` tools. The protocol itself (signing, key documents, the cache's rules,
//! discovery and policy) lives in the `confab-federation` crate; this module adds HTTP.
//!
//! Routes (registered in `routes.rs`):
//! - `GET /_matrix/key/v2/server`: our key document (unauthenticated, as in Matrix);
//! - everything under `/_matrix/federation/` and `/_confab/federation/`: X-Matrix authenticated
//!   by [`auth::authenticate`] before any handler runs;
//! - `GET|POST /_confab/federation/v1/ping`: answers with the verified origin (and the body it
//!   signed), to check two servers trust each other end to end. It is Confab's own, not under
//!   `/_matrix/`, because Matrix's similar `GET /_matrix/federation/v1/version` is
//!   unauthenticated;
//! - `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs, handled once per
//!   id by [`inbox`]; our own transactions are sent by [`sender::TransactionSender`];
//! - `/_confab/federation/v1/rooms/{roomId}/{join,leave,presence,events}` and
//!   `/_confab/federation/v1/send_chat`: federated rooms, see [`rooms`].

pub mod auth;
pub mod client;
pub mod endpoints;
pub mod error;
pub mod identity;
pub mod inbox;
pub mod rooms;
pub mod sender;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use confab_federation::backoff::Backoff;
use confab_federation::key_cache::{KeyCachePolicy, RemoteKeyCache};
use confab_federation::policy::ServerAcl;

use crate::config::{FederationSettings, Settings};
use client::{FederationClient, OutboundError};
use identity::ServerIdentity;

/// Everything federation needs at run time; one per server, inside `AppState`.
#[derive(Debug)]
pub struct Federation {
    /// The `[federation]` settings.
    pub settings: FederationSettings,
    /// Our name and keys.
    pub identity: Arc<ServerIdentity>,
    /// Which servers we federate with.
    pub acl: Arc<ServerAcl>,
    /// The outbound client.
    pub client: FederationClient,
    /// Other servers' keys, fetched through `client`.
    pub keys: RemoteKeyCache<FederationClient>,
}

/// How the key cache treats servers: a refetch for an unknown key id at most once a minute;
/// failing servers retried after up to 5 s, doubling to 30 minutes; ten thousand servers held.
const KEY_CACHE_POLICY: KeyCachePolicy = KeyCachePolicy {
    backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(30 * 60)),
    min_refetch_interval_ms: 60_000,
    max_entries: 10_000,
};

impl Federation {
    /// Builds the federation context for `settings`, acting as `identity`.
    pub fn new(settings: &Settings, identity: ServerIdentity) -> Result<Self, OutboundError> {
        let settings = settings.federation.clone();
        let identity = Arc::new(identity);
        let acl = Arc::new(ServerAcl::new(
            &settings.denied_servers,
            &settings.allowed_servers,
        ));
        let client = FederationClient::new(&settings, identity.clone(), acl.clone())?;
        let keys = RemoteKeyCache::new(client.clone(), KEY_CACHE_POLICY);
        Ok(Self {
            settings,
            identity,
            acl,
            client,
            keys,
        })
    }
}

/// Now, in the unsigned milliseconds the federation protocol uses.
pub fn now_ms() -> u64 {
    u64::try_from(crate::time::now_ms()).unwrap_or(0)
}
