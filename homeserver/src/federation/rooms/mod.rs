//! Federated rooms (DESIGN.md, "Identity and rooms" and "Federation"). A room lives on its
//! origin, the server in its id: the origin decides joins, numbers the room's events and keeps its
//! membership, invites and lock. Another homeserver whose users join holds a replica of the room
//! (its row, members and events, with the origin's sequence numbers), from which its own users'
//! sockets are served exactly as for a local room, resume included.
//!
//! - **Persistent** (through the transaction sender, so a server that is down gets them later,
//!   once and in order): every event the origin appends goes, as a `confab.event` PDU, once to
//!   each server in `room_servers`, queued in the very transaction that appends it. A replica
//!   applies events in sequence order only; a gap is filled from the origin's events endpoint
//!   first, a repeat is ignored. Deletion (close, idle expiry) is a `confab.room_deleted` PDU,
//!   which purges the replica.
//! - **Requests** (signed, answered at once): join with an invite token (the origin applies every
//!   rule of a local join and answers with the room's state), leave, announce a device (the answer
//!   lists who is connected), read events, and send chat, which a user's homeserver forwards to
//!   the origin in order and in batches, one request in flight per origin.
//! - **Ephemeral** (EDUs, best-effort): presence, typing and signaling, routed in a star through
//!   the origin by the rooms' owners (`crate::engine`), payloads untouched.
//!
//! Every inbound request speaks only for users of the server that signed it, and only a room's
//! origin sends that room's events; what other servers' users may do here is budgeted per user
//! and per server ([`budget`]), and every field read from another server is bounded
//! ([`wire::bounded`]).
//!
//! The parts, each importing only those before it: [`wire`] (the JSON of every request, answer
//! and EDU), [`budget`] (what other servers' users may do), [`refusal`] (a refusal's Matrix shape), [`queue`] (PDUs queued for other servers in
//! the appending transaction), [`outbound`] (signed requests to a room's origin), [`forwarder`]
//! (our users' chat on its way to origins), [`replica`] (applying an origin's state and events),
//! [`inbound`] (received transactions) and [`endpoints`] (the origin's HTTP handlers).

pub mod budget;
pub mod endpoints;
pub mod forwarder;
pub mod inbound;
pub mod outbound;
pub mod queue;
pub mod refusal;
pub mod replica;
pub mod wire;

/// PDU type of a room event, sent by the room's origin.
pub const EVENT_PDU: &str = "confab.event";
/// PDU type of a room's deletion, sent by the room's origin.
pub const DELETED_PDU: &str = "confab.room_deleted";
/// Where the room endpoints live.
pub const PATH: &str = "/_confab/federation/v1";
/// Chat messages forwarded in one request, at most.
pub const MAX_SEND_BATCH: usize = 100;
