//! The services every handler receives, built once by `crate::app`. This module holds handles
//! only: it imports no handler and decides nothing.

use std::sync::Arc;

use confab_schema::DbPool;

use crate::cluster::Cluster;
use crate::config::Settings;
use crate::engine::Engine;
use crate::federation::Federation;
use crate::federation::inbox::{FederationInbox, TransactionReceiver};
use crate::federation::rooms::budget::RemoteBudgets;
use crate::federation::rooms::inbound::RoomsHandler;
use crate::federation::rooms::replica::Replicas;
use crate::federation::sender::TransactionSender;
use crate::limiter::KeyedLimiter;
use crate::metrics::Metrics;
use crate::rooms::Rooms;

/// Everything a request handler or background task needs; passed explicitly, never global.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: DbPool,
    pub metrics: Metrics,
    /// The live room engine: sockets, rooms' owners, the event writer.
    pub engine: Engine,
    /// This process among its homeserver's workers.
    pub cluster: Cluster,
    /// The rules of rooms over their stored state.
    pub rooms: Rooms,
    /// Replicas of other servers' rooms.
    pub replicas: Replicas,
    /// Identity, keys of others, outbound client; see `crate::federation`.
    pub federation: Federation,
    /// Delivers our events to other servers; the only way anything is sent to them.
    pub federation_sender: TransactionSender,
    /// Every item of received transactions, for observers (see `crate::federation::inbox`).
    pub federation_inbox: FederationInbox,
    /// What other servers' users may do in our rooms.
    pub remote_budgets: Arc<RemoteBudgets>,
    /// Receives other servers' transactions and applies them to federated rooms.
    pub transactions: TransactionReceiver<RoomsHandler>,
    /// Guest sessions created per client address.
    pub session_limiter: KeyedLimiter,
    /// Refused joins per client address, and per federated server.
    pub join_limiter: KeyedLimiter,
    pub federated_join_limiter: KeyedLimiter,
    /// Which HTTP worker thread serves which socket.
    pub placement: Arc<crate::ws::placement::Placement>,
    /// Live WebSockets per client address.
    pub socket_addresses: crate::limiter::ConnectionCap,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}
