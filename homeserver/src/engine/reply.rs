//! Where the answer to a chat message goes once its fate is known: the socket that sent it, or a
//! caller that waits. A socket's ack is queued with the room's fan-out of the same commit (see
//! [`super::live::LiveRooms::publish`]), so a sender gets the others' messages and its own ack in
//! one write.

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::conn::{ConnHandle, Wakes};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::protocol::Outgoing;

/// A committed message's number and time.
pub type Committed = (i64, i64);

/// The answer's destination.
#[derive(Debug)]
pub enum ChatReply {
    /// The socket that sent the message, with the request's id: an ack frame (`seq`, `ts`) or
    /// an error frame.
    Socket { conn: ConnHandle, id: Option<Value> },
    /// A caller that waits for the outcome (a batch another server forwarded).
    Caller(oneshot::Sender<Result<Committed, ApiError>>),
}

impl ChatReply {
    /// Answers; a socket's writer is woken when `wakes` is dropped.
    pub fn answer(self, result: Result<Committed, ApiError>, metrics: &Metrics, wakes: &mut Wakes) {
        match self {
            Self::Caller(tx) => {
                let _ = tx.send(result);
            }
            Self::Socket { conn, id } => {
                let frame = match result {
                    Ok(_) if id.is_none() => return,
                    Ok((seq, ts)) => Outgoing::Ack {
                        id: id.as_ref().unwrap_or(&Value::Null),
                        result: &json!({ "seq": seq, "ts": ts }),
                    }
                    .to_frame(),
                    Err(err) => {
                        metrics.count_error(err.code);
                        Outgoing::Error {
                            id: id.as_ref(),
                            request: "chat",
                            code: err.code.as_str(),
                            reason: &err.reason,
                            retry_after_ms: err.retry_after_ms,
                        }
                        .to_frame()
                    }
                };
                conn.push(frame, wakes);
            }
        }
    }

    /// [`Self::answer`], waking at once.
    pub fn answer_now(self, result: Result<Committed, ApiError>, metrics: &Metrics) {
        self.answer(result, metrics, &mut Wakes::default());
    }
}
