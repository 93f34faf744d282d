//! The event writer: every persisted event goes through here. Appends are queued, taken in
//! batches, and committed in one transaction per batch (group commit), so that thousands of chat
//! messages per second cost tens of commits, not thousands. After the commit the events are fanned
//! out and each sender gets its acknowledgement: nothing is acknowledged or shown before it is
//! durable.
//!
//! There are a few writers, each owning the rooms that hash to it: a room's events still go
//! through one queue, so they are numbered in the order they were sent, while commits of
//! different rooms overlap and Postgres can flush their WAL together instead of one fsync
//! after another. The shards touch disjoint room rows, so they cannot deadlock each other.

use std::collections::{HashMap, VecDeque};

use confab_federation::ids::ServerName;
use confab_schema::models::{Event, NewEvent};
use confab_schema::{AsyncConnection, DbError, DbPool, queries};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::federation::rooms::{queue_appended, wake};
use crate::federation::sender::TransactionSender;
use crate::hub::RoomHub;
use crate::metrics::Metrics;

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 512;

struct AppendRequest {
    room_id: String,
    /// Taken (not copied) when the batch is committed.
    event: Option<NewEvent>,
    reply: oneshot::Sender<Result<Event, ApiError>>,
}

/// Number of writer shards.
const SHARDS: usize = 4;

/// Handle to the writer tasks.
#[derive(Clone)]
pub struct EventWriter {
    shards: Vec<mpsc::Sender<AppendRequest>>,
}

impl EventWriter {
    /// Starts the writer tasks on the current runtime.
    pub fn start(
        pool: DbPool,
        hub: RoomHub,
        metrics: Metrics,
        federation: TransactionSender,
    ) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(8192);
                tokio::spawn(run(
                    rx,
                    pool.clone(),
                    hub.clone(),
                    metrics.clone(),
                    federation.clone(),
                ));
                tx
            })
            .collect();
        Self { shards }
    }

    fn shard(&self, room_id: &str) -> &mpsc::Sender<AppendRequest> {
        // FNV-1a: any stable spread will do; a room must always map to the same shard.
        let hash = room_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    /// Queues an event and returns a future resolving once it is committed and fanned out.
    /// Queueing happens before this returns, so calls made in order are committed in order.
    pub async fn enqueue(
        &self,
        room_id: &str,
        event: NewEvent,
    ) -> impl Future<Output = Result<Event, ApiError>> + use<> {
        let (reply, rx) = oneshot::channel();
        let queued = self
            .shard(room_id)
            .send(AppendRequest {
                room_id: room_id.to_owned(),
                event: Some(event),
                reply,
            })
            .await
            .is_ok();
        async move {
            if !queued {
                return Err(ApiError::internal("event writer", &"writer stopped"));
            }
            rx.await
                .unwrap_or_else(|_| Err(ApiError::internal("event writer", &"writer stopped")))
        }
    }

    /// Appends one event and waits for its commit.
    pub async fn append(&self, room_id: &str, event: NewEvent) -> Result<Event, ApiError> {
        self.enqueue(room_id, event).await.await
    }
}

async fn run(
    mut rx: mpsc::Receiver<AppendRequest>,
    pool: DbPool,
    hub: RoomHub,
    metrics: Metrics,
    federation: TransactionSender,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics.write_batch.observe(batch.len() as f64);
        match commit(&pool, &federation, &mut batch).await {
            Ok((committed, woken)) => {
                metrics.events_persisted.inc_by(batch.len() as u64);
                wake(&federation, &woken).await;
                let mut queues: HashMap<String, VecDeque<Event>> = HashMap::new();
                for (room_id, events) in committed {
                    if let Some(events) = events {
                        hub.publish(&room_id, &events).await;
                        queues.insert(room_id, events.into());
                    }
                }
                for req in batch.drain(..) {
                    // Each room's events come back in the order its requests were queued.
                    let result = queues
                        .get_mut(&req.room_id)
                        .and_then(VecDeque::pop_front)
                        .ok_or_else(ApiError::room_not_found);
                    let _ = req.reply.send(result);
                }
            }
            Err(err) => {
                let err = ApiError::from(err);
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// What a committed batch appended, per room, and the federation destinations to wake.
type Committed = (Vec<(String, Option<Vec<Event>>)>, Vec<ServerName>);

/// Commits a batch: per room, one sequence update and one multi-row insert, and for federated
/// rooms the PDUs for the other servers, in the same transaction. A room that no longer exists
/// maps to `None`.
async fn commit(
    pool: &DbPool,
    federation: &TransactionSender,
    batch: &mut [AppendRequest],
) -> Result<Committed, DbError> {
    let mut by_room: Vec<(&str, Vec<NewEvent>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for req in batch.iter_mut() {
        let i = *index.entry(&req.room_id).or_insert_with(|| {
            by_room.push((&req.room_id, Vec::new()));
            by_room.len() - 1
        });
        if let Some(event) = req.event.take() {
            by_room[i].1.push(event);
        }
    }
    let mut conn = confab_schema::connect(pool).await?;
    let (appended, woken) = conn
        .transaction(async |conn| {
            let appended = queries::append_events_batch(conn, &by_room).await?;
            let mut woken = Vec::new();
            for a in appended.iter().flatten() {
                woken.extend(queue_appended(federation, conn, a).await?);
            }
            Ok::<_, DbError>((appended, woken))
        })
        .await?;
    let committed = by_room
        .iter()
        .zip(appended)
        .map(|((room_id, _), a)| ((*room_id).to_owned(), a.map(|a| a.events)))
        .collect();
    Ok((committed, woken))
}
