//! Our users' chat in other servers' rooms, on its way to the rooms' origins, which number it.

use std::collections::HashMap;
use std::sync::Mutex;

use confab_federation::ids::ServerName;
use reqwest::Method;
use tokio::sync::{mpsc, oneshot};

use super::outbound::call;
use super::wire::{SendItem, SendRequest, SendResponse};
use super::{MAX_SEND_BATCH, PATH};
use crate::error::{ApiError, ErrorCode};
use crate::federation::client::FederationClient;

/// Forwarded chat messages waiting per origin before senders wait.
const FORWARD_QUEUE: usize = 4096;

struct Forward {
    item: SendItem,
    reply: oneshot::Sender<Result<(i64, i64), ApiError>>,
}

/// Forwards chat of this server's users to the origins of their rooms: one task per origin
/// takes what is waiting, up to [`MAX_SEND_BATCH`], and sends it in one request, so messages
/// reach the origin in the order they were sent and a busy room costs few requests.
#[derive(Default)]
pub struct ChatForwarder {
    queues: Mutex<HashMap<ServerName, mpsc::Sender<Forward>>>,
}

impl std::fmt::Debug for ChatForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatForwarder").finish_non_exhaustive()
    }
}

impl ChatForwarder {
    /// Queues a message for its room's origin; the receiver gets its number and time once the
    /// origin committed it, or why not. Calls made in order are sent in order.
    pub async fn forward(
        &self,
        client: &FederationClient,
        origin: &ServerName,
        item: SendItem,
    ) -> oneshot::Receiver<Result<(i64, i64), ApiError>> {
        let (reply, rx) = oneshot::channel();
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .entry(origin.clone())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
                    tokio::spawn(run_forwarder(client.clone(), origin.clone(), rx));
                    tx
                })
                .clone()
        };
        if let Err(mpsc::error::SendError(lost)) = queue.send(Forward { item, reply }).await {
            let _ = lost.reply.send(Err(ApiError::internal(
                "chat forwarder",
                &"forwarder stopped",
            )));
        }
        rx
    }
}

async fn run_forwarder(
    client: FederationClient,
    origin: ServerName,
    mut rx: mpsc::Receiver<Forward>,
) {
    let mut batch = Vec::with_capacity(MAX_SEND_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_SEND_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let body = serde_json::to_value(SendRequest {
            events: batch.iter().map(|f| f.item.clone()).collect(),
        })
        .unwrap_or_default();
        let path = format!("{PATH}/send_chat");
        match call::<SendResponse>(&client, &origin, Method::POST, &path, Some(&body)).await {
            Ok(answer) if answer.results.len() == batch.len() => {
                for (f, r) in batch.drain(..).zip(answer.results) {
                    let result = match (r.seq, r.ts, r.code) {
                        (Some(seq), Some(ts), None) => Ok((seq, ts)),
                        (_, _, code) => Err(ApiError {
                            retry_after_ms: r.retry_after_ms,
                            ..ApiError::new(
                                code.unwrap_or(ErrorCode::Unavailable),
                                r.reason
                                    .unwrap_or_else(|| "refused by the room's homeserver".into()),
                            )
                        }),
                    };
                    let _ = f.reply.send(result);
                }
            }
            Ok(_) => {
                let err = ApiError::new(
                    ErrorCode::Unavailable,
                    format!("{origin} answered for a different number of messages"),
                );
                for f in batch.drain(..) {
                    let _ = f.reply.send(Err(err.clone()));
                }
            }
            Err(err) => {
                for f in batch.drain(..) {
                    let _ = f.reply.send(Err(err.clone()));
                }
            }
        }
    }
}
