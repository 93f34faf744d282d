//! Row structs, one per table, as diesel reads and writes them.

use diesel::prelude::*;

use crate::schema::{
    events, federation_acl_overrides, federation_destinations, federation_outbound,
    federation_received_txns, invites, knocks, room_members, rooms, sessions,
};

/// A guest session: one user with one device, found by the hash of its access token.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub display_name: String,
    pub token_hash: Vec<u8>,
    pub created_ts: i64,
    pub last_seen_ts: i64,
}

/// A room, with the countdown to its deletion when nobody is connected.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = rooms, check_for_backend(diesel::pg::Pg))]
pub struct Room {
    pub room_id: String,
    pub origin: String,
    pub host_user_id: String,
    pub locked: bool,
    pub created_ts: i64,
    pub last_seq: i64,
    pub expires_ts: Option<i64>,
    /// Whether any joined member may make invite links (otherwise the hosts only).
    pub guests_may_share: bool,
    /// Whether a newcomer with a valid invite who finds the room locked knocks (otherwise is refused).
    pub lobby: bool,
}

/// States of `knocks.state`.
pub mod knock {
    /// Waiting for a host.
    pub const PENDING: &str = "pending";
    /// Let in by a host: the next join of the knocker succeeds despite the lock.
    pub const ADMITTED: &str = "admitted";
    /// Turned away by a host.
    pub const REFUSED: &str = "refused";
}

/// A newcomer's knock at a locked room with a lobby.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = knocks, check_for_backend(diesel::pg::Pg))]
pub struct Knock {
    pub room_id: String,
    pub user_id: String,
    pub display_name: String,
    /// The invite the knocker holds; used when they come in.
    pub invite_id: String,
    pub state: String,
    pub created_ts: i64,
    /// When the state last changed; a knock lapses a while after it.
    pub updated_ts: i64,
}

/// Membership states of `room_members.membership`.
pub mod membership {
    /// Currently a member.
    pub const JOINED: &str = "joined";
    /// Left of their own accord; may rejoin without an invite, even when the room is locked.
    pub const LEFT: &str = "left";
    /// Removed by the host; needs an invite created after the kick.
    pub const KICKED: &str = "kicked";
}

/// A user's membership of a room. `is_host` is set for the room's host and its co-hosts (the
/// room row names the host).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = room_members, check_for_backend(diesel::pg::Pg))]
pub struct Member {
    pub room_id: String,
    pub user_id: String,
    pub display_name: String,
    pub is_host: bool,
    pub membership: String,
    pub joined_ts: i64,
    pub updated_ts: i64,
}

/// An invite to a room; the token itself is stored only as a hash.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = invites, check_for_backend(diesel::pg::Pg))]
pub struct Invite {
    pub invite_id: String,
    pub room_id: String,
    pub token_hash: Vec<u8>,
    pub created_by: String,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub revoked_ts: Option<i64>,
}

/// One persisted, sequenced event of a room's log.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct Event {
    pub room_id: String,
    pub seq: i64,
    pub sender: String,
    pub device_id: String,
    pub origin_ts: i64,
    pub content: serde_json::Value,
}

/// An event to append: the sequence number is assigned by [`crate::queries::append_events`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub sender: String,
    pub device_id: String,
    pub origin_ts: i64,
    pub content: serde_json::Value,
}

/// Events appended to one room, and the other servers taking part in it then (on the room's
/// origin; empty elsewhere), which are to be sent them.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    pub events: Vec<Event>,
    pub servers: Vec<String>,
}

/// A persistent event queued for a federation destination until it acknowledges it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = federation_outbound, check_for_backend(diesel::pg::Pg))]
pub struct OutboundPdu {
    /// Position in the queue; orders a destination's rows.
    pub seq: i64,
    pub destination: String,
    /// The PDU as the room layer built it.
    pub pdu: serde_json::Value,
    pub created_ts: i64,
    /// The transaction the row was put in, kept for every retry of that transaction.
    pub txn_id: Option<String>,
    /// Failed attempts to deliver the transaction holding the row.
    pub attempts: i32,
}

/// A PDU to queue; the sequence number is assigned by the database.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = federation_outbound, check_for_backend(diesel::pg::Pg))]
pub struct NewOutboundPdu {
    pub destination: String,
    pub pdu: serde_json::Value,
    pub created_ts: i64,
}

/// How delivery to one destination is going.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = federation_destinations, check_for_backend(diesel::pg::Pg))]
pub struct DestinationState {
    pub destination: String,
    /// Failed transactions in a row since the last success.
    pub failures: i32,
    /// No retry before this time, while failing.
    pub retry_after_ts: Option<i64>,
    pub last_success_ts: Option<i64>,
    pub last_failure_ts: Option<i64>,
    /// When the current run of failures began; `None` while healthy.
    pub failing_since_ts: Option<i64>,
    /// When the destination was given up (its queue dropped); `None` unless it is.
    pub given_up_ts: Option<i64>,
    /// Persistent events dropped for it, in total.
    pub dropped_pdus: i64,
}

/// A transaction received from another server, with the answer it got.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = federation_received_txns, check_for_backend(diesel::pg::Pg))]
pub struct ReceivedTxn {
    pub origin: String,
    pub txn_id: String,
    pub received_ts: i64,
    pub response: serde_json::Value,
}

/// An operator's decision to deny or allow federation with a server, made through the admin API.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = federation_acl_overrides, check_for_backend(diesel::pg::Pg))]
pub struct AclOverride {
    /// A full server name, or a host alone (every port).
    pub server_name: String,
    /// `true` to allow, `false` to deny.
    pub allowed: bool,
    pub updated_ts: i64,
}
