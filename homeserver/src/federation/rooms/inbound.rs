//! Received transactions of federated rooms (the seam is [`TransactionHandler`]): the room
//! PDUs of origins, applied to our replicas in the transaction that records the received
//! transaction, and the EDUs (presence, typing, signaling), handed to the rooms' owners after the
//! commit. Every inbound item speaks only for users of the server that signed it, and only a
//! room's origin may send that room's events.
//!
//! A transaction whose events do not follow on from a replica's newest (events went missing:
//! a replica rebuilt, an answer lost) is not applied with a hole: the handler names the gaps,
//! the receiver rolls back and returns its connection, the gaps are read from the origin's
//! events endpoint, and the transaction is handled again with them.

use std::collections::HashMap;
use std::sync::Arc;

use confab_federation::ids::{RoomId, ServerName};
use confab_federation::transaction::{Edu, Pdu, PduResult, Transaction, TransactionResponse};
use confab_schema::models::Event;
use confab_schema::{AsyncPgConnection, DbError, queries};
use futures_util::future::BoxFuture;
use serde::Deserialize as _;
use serde_json::Value;

use super::budget::{Action, RemoteBudgets};
use super::outbound::fetch_missing;
use super::replica::{Effect, Replicas, apply_room_events};
use super::wire::{PresenceEdu, SignalEdu, TypingEdu, WireEvent};
use super::{DELETED_PDU, EVENT_PDU};
use crate::engine::{CloseReason, Engine, edu};
use crate::federation::inbox::{FederationInbox, Handled, Inbound, Step, TransactionHandler};
use crate::metrics::Metrics;
use crate::protocol::ConnectedDevice;

/// Handles received transactions: the room PDUs of origins, and the EDUs of federated rooms.
/// Every item is also passed to the [`FederationInbox`] for observers.
#[derive(Clone)]
pub struct RoomsHandler {
    replicas: Replicas,
    engine: Engine,
    inbox: FederationInbox,
    budgets: Arc<RemoteBudgets>,
    metrics: Metrics,
    /// `limits.max_event_bytes`: the largest signaling payload passed on.
    max_event_bytes: usize,
}

impl RoomsHandler {
    pub fn new(
        replicas: Replicas,
        engine: Engine,
        inbox: FederationInbox,
        budgets: Arc<RemoteBudgets>,
        metrics: Metrics,
        max_event_bytes: usize,
    ) -> Self {
        Self {
            replicas,
            engine,
            inbox,
            budgets,
            metrics,
            max_event_bytes,
        }
    }
}

/// Events a replica is missing: it has them up to `have`, and the transaction's next is `next`.
pub struct Gap {
    room_id: RoomId,
    have: i64,
    next: i64,
}

/// Events read from origins to fill gaps, by room id.
pub type GapFills = HashMap<String, Vec<Event>>;

impl TransactionHandler for RoomsHandler {
    type Missing = Vec<Gap>;
    type Fetched = GapFills;

    fn handle<'a>(
        &'a self,
        db: &'a mut AsyncPgConnection,
        origin: &'a ServerName,
        transaction: &'a Transaction,
        fetched: &'a GapFills,
    ) -> BoxFuture<'a, Result<Step<Vec<Gap>>, DbError>> {
        Box::pin(async move {
            let mut response = TransactionResponse::default();
            let mut effects = Vec::new();
            let gaps = self
                .handle_pdus(
                    db,
                    origin,
                    &transaction.pdus,
                    fetched,
                    &mut response,
                    &mut effects,
                )
                .await?;
            if !gaps.is_empty() {
                return Ok(Step::Fetch(gaps));
            }
            let this = self.clone();
            let edus = transaction.edus.clone();
            let origin = origin.clone();
            let items: Vec<Inbound> = transaction
                .pdus
                .iter()
                .map(|pdu| Inbound::Pdu {
                    origin: origin.clone(),
                    pdu: pdu.clone(),
                })
                .chain(transaction.edus.iter().map(|edu| Inbound::Edu {
                    origin: origin.clone(),
                    edu: edu.clone(),
                }))
                .collect();
            Ok(Step::Done(Handled {
                response,
                after_commit: Some(Box::pin(async move {
                    this.replicas.run_effects(effects).await;
                    for edu in &edus {
                        this.handle_edu(&origin, edu).await;
                    }
                    this.inbox.publish(items);
                })),
            }))
        })
    }

    fn fetch<'a>(
        &'a self,
        _origin: &'a ServerName,
        gaps: Vec<Gap>,
        fetched: &'a mut GapFills,
    ) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move {
            for gap in gaps {
                // If this fails the whole transaction fails (and is retried), rather than
                // acknowledging events this replica could not place.
                let events =
                    fetch_missing(self.replicas.client(), &gap.room_id, gap.have, gap.next)
                        .await
                        .map_err(|e| {
                            DbError::Unavailable(format!(
                                "cannot fill a gap in {}: {e}",
                                gap.room_id
                            ))
                        })?;
                fetched
                    .entry(gap.room_id.to_string())
                    .or_default()
                    .extend(events);
            }
            Ok(())
        })
    }
}

/// The first gap in `events` (sorted by sequence number, without repeats) after `have`: the
/// last number there is before it, and the first after it.
fn first_gap(have: i64, events: &[Event]) -> Option<(i64, i64)> {
    (have + 1..)
        .zip(events.iter().filter(|e| e.seq > have))
        .find(|(expected, e)| e.seq != *expected)
        .map(|(expected, e)| (expected - 1, e.seq))
}

impl RoomsHandler {
    /// Applies the room PDUs of a transaction: each room's events together (one lock, one
    /// insert), rooms in the order they first appear, deletions last. Refusals are per PDU.
    /// If a replica has a gap, applies nothing and returns the gaps to fill first.
    async fn handle_pdus(
        &self,
        db: &mut AsyncPgConnection,
        origin: &ServerName,
        pdus: &[Pdu],
        fetched: &GapFills,
        response: &mut TransactionResponse,
        effects: &mut Vec<Effect>,
    ) -> Result<Vec<Gap>, DbError> {
        let refuse = |why: &str| PduResult {
            error: Some(why.to_owned()),
        };
        let mut rooms: Vec<(RoomId, Vec<(String, Event)>)> = Vec::new();
        let mut deletions = Vec::new();
        for pdu in pdus {
            let result = if pdu.event_type != EVENT_PDU && pdu.event_type != DELETED_PDU {
                // Not ours to interpret; accepted so that the sender does not retry it.
                PduResult::default()
            } else if let Ok(room_id) = RoomId::parse(&pdu.room_id) {
                if room_id.server_name() != origin {
                    refuse("only a room's origin sends its events")
                } else if pdu.event_type == DELETED_PDU {
                    let reason = match pdu.rest.get("reason").and_then(Value::as_str) {
                        Some("expired") => CloseReason::Expired,
                        _ => CloseReason::Closed,
                    };
                    deletions.push((room_id, reason));
                    PduResult::default()
                } else if let Some(event) = pdu
                    .rest
                    .get("event")
                    .and_then(|e| WireEvent::deserialize(e).ok())
                {
                    let event = event.into_event(room_id.as_str());
                    match rooms.iter_mut().find(|(r, _)| r == &room_id) {
                        Some((_, events)) => events.push((pdu.event_id.clone(), event)),
                        None => rooms.push((room_id, vec![(pdu.event_id.clone(), event)])),
                    }
                    PduResult::default()
                } else {
                    refuse("no event in the PDU")
                }
            } else {
                refuse("bad room id")
            };
            response.pdus.insert(pdu.event_id.clone(), result);
        }
        let ids: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
        let replicas = queries::rooms_by_ids(db, &ids).await?;
        let mut batches = Vec::with_capacity(rooms.len());
        let mut gaps = Vec::new();
        for (room_id, events) in rooms {
            let Some(room) = replicas.iter().find(|r| r.room_id == room_id.as_str()) else {
                // No replica here (never joined, or expired here): nothing to update.
                continue;
            };
            if room.origin != origin.as_str() {
                for (event_id, _) in &events {
                    response.pdus.insert(
                        event_id.clone(),
                        refuse("this room has another origin here"),
                    );
                }
                continue;
            }
            let mut events: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
            if let Some(filled) = fetched.get(room_id.as_str()) {
                events.extend(filled.iter().cloned());
            }
            events.sort_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
            if let Some((have, next)) = first_gap(room.last_seq, &events) {
                gaps.push(Gap {
                    room_id,
                    have,
                    next,
                });
                continue;
            }
            batches.push((room_id.to_string(), events));
        }
        if !gaps.is_empty() {
            return Ok(gaps);
        }
        let (_, more) = apply_room_events(db, self.engine.server_name().as_str(), batches).await?;
        effects.extend(more);
        for (room_id, reason) in deletions {
            let ours = queries::room(db, room_id.as_str())
                .await?
                .is_some_and(|r| r.origin == origin.as_str());
            if ours {
                queries::delete_room(db, room_id.as_str()).await?;
                effects.push(Effect::Close(room_id.to_string(), reason));
            }
        }
        Ok(Vec::new())
    }
}

/// Whether `origin` may tell us about `user_id` in `room_id`: a server speaks for its own
/// users, and a room's origin for everyone in it.
fn may_speak(origin: &ServerName, room_id: &str, user_id: &str) -> bool {
    let room_server = RoomId::parse(room_id).ok();
    let user_server = user_id.split_once(':').map(|(_, s)| s);
    user_server == Some(origin.as_str()) || room_server.is_some_and(|r| r.server_name() == origin)
}

impl RoomsHandler {
    /// Whether `user` of `origin` has budget left for an EDU of `action`; one over budget is
    /// dropped (EDUs are best-effort) and counted.
    fn within_budget(&self, action: Action, origin: &ServerName, user: &str) -> bool {
        let within = self.budgets.both(action, origin.as_str(), user).is_ok();
        if !within {
            self.metrics
                .remote_over_budget
                .with_label_values(&[action.as_str()])
                .inc();
        }
        within
    }

    async fn handle_edu(&self, origin: &ServerName, edu: &Edu) {
        let limit = self.max_event_bytes;
        match edu.edu_type.as_str() {
            edu::PRESENCE => {
                let Ok(p) = PresenceEdu::deserialize(&edu.content) else {
                    return;
                };
                // Every field was bounded as it was read (`wire::bounded`).
                if !may_speak(origin, &p.room_id, &p.user_id)
                    || !self.within_budget(Action::Presence, origin, &p.user_id)
                {
                    return;
                }
                // A device comes online through the signed, membership-checked presence request,
                // never an EDU: an origin takes only departures by EDU, a replica only its origin's
                // news.
                let room_is_ours = RoomId::parse(&p.room_id)
                    .is_ok_and(|r| r.server_name() == self.engine.server_name());
                let from_origin =
                    RoomId::parse(&p.room_id).is_ok_and(|r| r.server_name() == origin);
                if (room_is_ours && p.online) || (!room_is_ours && !from_origin) {
                    return;
                }
                let device = ConnectedDevice {
                    user_id: p.user_id,
                    device_id: p.device_id,
                    display_name: p.display_name,
                };
                if let Err(err) = self
                    .engine
                    .remote_presence(&p.room_id, origin.as_str(), &device, p.online, false)
                    .await
                {
                    tracing::debug!(error = %err, "presence for a room not here");
                }
            }
            edu::TYPING => {
                let Ok(t) = TypingEdu::deserialize(&edu.content) else {
                    return;
                };
                if may_speak(origin, &t.room_id, &t.user_id)
                    && self.within_budget(Action::Ephemeral, origin, &t.user_id)
                {
                    self.engine.remote_typing(
                        &t.room_id,
                        origin.as_str(),
                        &t.user_id,
                        &t.device_id,
                        t.typing,
                    );
                }
            }
            edu::SIGNAL => {
                let Ok(s) = SignalEdu::deserialize(&edu.content) else {
                    return;
                };
                if !may_speak(origin, &s.room_id, &s.from.user_id)
                    || s.payload.len() > limit
                    || !self.within_budget(Action::Ephemeral, origin, &s.from.user_id)
                {
                    return;
                }
                self.engine.remote_signal(
                    &s.room_id,
                    origin.as_str(),
                    (&s.from.user_id, &s.from.device_id),
                    (&s.to.user_id, &s.to.device_id),
                    &s.payload,
                );
            }
            _ => {}
        }
    }
}
