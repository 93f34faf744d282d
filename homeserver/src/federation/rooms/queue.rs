//! The origin's side of persistent delivery: the PDU of each appended event (and of a room's
//! deletion), queued for every other server in the room in the very transaction that appends it,
//! so nothing can be committed and not queued.

use confab_federation::ids::ServerName;
use confab_federation::transaction::Pdu;
use confab_schema::models::{Appended, Event};
use confab_schema::{AsyncPgConnection, DbError};
use serde_json::json;

use super::wire::WireEvent;
use super::{DELETED_PDU, EVENT_PDU};
use crate::engine::room::CloseReason;
use crate::federation::sender::{SenderError, TransactionSender};

/// The PDU carrying one event of a room.
pub fn event_pdu(event: &Event) -> Pdu {
    let mut rest = serde_json::Map::new();
    rest.insert(
        "event".to_owned(),
        serde_json::to_value(WireEvent::from_event(event)).unwrap_or_default(),
    );
    Pdu {
        event_id: format!("${}:{}", event.seq, event.room_id),
        room_id: event.room_id.clone(),
        event_type: EVENT_PDU.to_owned(),
        order: 0,
        rest,
    }
}

pub fn deleted_pdu(room_id: &str, reason: CloseReason) -> Pdu {
    let mut rest = serde_json::Map::new();
    rest.insert("reason".to_owned(), json!(reason.as_str()));
    Pdu {
        event_id: format!("$deleted:{room_id}"),
        room_id: room_id.to_owned(),
        event_type: DELETED_PDU.to_owned(),
        order: 0,
        rest,
    }
}

/// Queues PDUs for servers, through `db` (the caller's transaction, so that an event and its
/// delivery commit together). Servers this one does not federate with (denied since they
/// joined) are skipped: the room goes on without them. Returns the servers to wake after the
/// commit.
pub async fn queue_pdus(
    sender: &TransactionSender,
    db: &mut AsyncPgConnection,
    servers: &[String],
    pdus: &[Pdu],
) -> Result<Vec<ServerName>, DbError> {
    let mut items = Vec::new();
    let mut woken = Vec::new();
    for server in servers {
        let Ok(name) = ServerName::parse(server) else {
            continue;
        };
        if !sender.accepts(&name) {
            continue;
        }
        items.extend(pdus.iter().map(|p| (name.clone(), p.clone())));
        woken.push(name);
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    match sender.queue(db, &items).await {
        Ok(_) => Ok(woken),
        Err(SenderError::Db(e)) => Err(e),
        // Checked above; an encoding failure of our own JSON cannot happen.
        Err(other) => {
            tracing::error!(error = %other, "could not queue room events");
            Ok(Vec::new())
        }
    }
}

/// Queues freshly appended events for every other server in their room (on the origin).
pub async fn queue_appended(
    sender: &TransactionSender,
    db: &mut AsyncPgConnection,
    appended: &Appended,
) -> Result<Vec<ServerName>, DbError> {
    if appended.servers.is_empty() || appended.events.is_empty() {
        return Ok(Vec::new());
    }
    let pdus: Vec<Pdu> = appended.events.iter().map(event_pdu).collect();
    queue_pdus(sender, db, &appended.servers, &pdus).await
}

/// Wakes the sender for servers whose PDUs committed.
pub async fn wake(sender: &TransactionSender, servers: &[ServerName]) {
    for server in servers {
        sender.wake(server).await;
    }
}
