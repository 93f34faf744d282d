//! Receiving federation transactions (`PUT /_matrix/federation/v1/send/{txnId}`): the checks,
//! the idempotency by `(origin, txn_id)`, and the seam where the room layer takes over.
//!
//! A transaction is recorded in `federation_received_txns` and handed to its
//! [`TransactionHandler`] inside one database transaction. The record's row lock makes a second
//! copy of the same transaction (a sender retrying after a lost answer) wait for the first and
//! then get the recorded answer, so a transaction id is handled once. A handler that writes to
//! the database through the connection it is given commits with the record: exactly once.
//!
//! The server's handler is `super::rooms::RoomsHandler`; it also passes every item to the
//! [`FederationInbox`], a broadcast for observers (tests). [`FederationInbox`] is itself a
//! handler that only broadcasts, before the record commits (at least once).

use confab_federation::ids::ServerName;
use confab_federation::transaction::{
    Edu, Pdu, Transaction, TransactionError, TransactionResponse,
};
use confab_schema::models::ReceivedTxn;
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, DbPool, queries};
use futures_util::future::BoxFuture;
use serde::Deserialize as _;
use tokio::sync::broadcast;

use super::error::{MatrixError, MatrixErrorCode};

/// How long received transaction ids are remembered. A sender whose answer was lost retries the
/// same id within its backoff cap (an hour by default), so a day is ample.
pub const RECEIVED_TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// What a handler did with a transaction.
pub struct Handled {
    /// The outcome of each PDU.
    pub response: TransactionResponse,
    /// What to do once the transaction's record committed (fan-out, EDUs): never for a copy
    /// of a transaction handled before.
    pub after_commit: Option<BoxFuture<'static, ()>>,
}

/// What handles the contents of new transactions (federated rooms: `super::rooms`).
pub trait TransactionHandler: Send + Sync {
    /// Handles the PDUs and EDUs of a transaction from `origin` that was not handled before,
    /// inside the database transaction that records it (`db`); returns the outcome of each PDU.
    /// An error rolls everything back and answers 500, so the sender retries.
    fn handle<'a>(
        &'a self,
        db: &'a mut AsyncPgConnection,
        origin: &'a ServerName,
        transaction: &'a Transaction,
    ) -> BoxFuture<'a, Result<Handled, DbError>>;
}

/// One item of a received transaction, as [`FederationInbox`] broadcasts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A persistent event.
    Pdu {
        /// The server that sent it.
        origin: ServerName,
        /// The event.
        pdu: Pdu,
    },
    /// An ephemeral event.
    Edu {
        /// The server that sent it.
        origin: ServerName,
        /// The event.
        edu: Edu,
    },
}

/// The stand-in handler: accepts every PDU and broadcasts each item, PDUs first, in transaction
/// order. Subscribers that fall more than the channel's capacity behind lose the oldest items
/// (tokio's broadcast `Lagged`), which is acceptable for a stand-in and for tests.
#[derive(Debug, Clone)]
pub struct FederationInbox {
    sender: broadcast::Sender<Inbound>,
}

impl FederationInbox {
    /// Items buffered for the slowest subscriber.
    pub const CAPACITY: usize = 4096;

    /// An inbox nobody listens to yet.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(Self::CAPACITY).0,
        }
    }

    /// Receives every item handled from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Inbound> {
        self.sender.subscribe()
    }

    /// Passes items to the subscribers, in order.
    pub fn publish(&self, items: Vec<Inbound>) {
        for item in items {
            // No subscriber is not an error: nobody is observing.
            let _ = self.sender.send(item);
        }
    }
}

impl Default for FederationInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl TransactionHandler for FederationInbox {
    fn handle<'a>(
        &'a self,
        _db: &'a mut AsyncPgConnection,
        origin: &'a ServerName,
        transaction: &'a Transaction,
    ) -> BoxFuture<'a, Result<Handled, DbError>> {
        Box::pin(async move {
            for pdu in &transaction.pdus {
                // No subscriber is not an error: the stand-in has nobody to give them to.
                let _ = self.sender.send(Inbound::Pdu {
                    origin: origin.clone(),
                    pdu: pdu.clone(),
                });
            }
            for edu in &transaction.edus {
                let _ = self.sender.send(Inbound::Edu {
                    origin: origin.clone(),
                    edu: edu.clone(),
                });
            }
            Ok(Handled {
                response: TransactionResponse::accept_all(transaction),
                after_commit: None,
            })
        })
    }
}

/// Handles `PUT /_matrix/federation/v1/send/{txn_id}` from the verified `origin`: checks the
/// body, then hands it to `handler` unless this transaction id was handled before, in which case
/// the answer given then is given again.
pub async fn receive_transaction(
    pool: &DbPool,
    handler: &dyn TransactionHandler,
    origin: &ServerName,
    txn_id: &str,
    content: Option<&serde_json::Value>,
) -> Result<TransactionResponse, MatrixError> {
    let content = content.ok_or_else(|| {
        MatrixError::new(MatrixErrorCode::NotJson, "a transaction needs a JSON body")
    })?;
    let transaction = Transaction::deserialize(content).map_err(|e| {
        MatrixError::new(MatrixErrorCode::BadJson, format!("not a transaction: {e}"))
    })?;
    transaction
        .validate(txn_id, origin)
        .map_err(|e| MatrixError::new(error_code(&e), e.to_string()))?;

    let internal = |e: DbError| MatrixError::internal("receive transaction", &e);
    let mut conn = confab_schema::connect(pool).await.map_err(internal)?;
    // Most retries find the record at once, without opening a transaction.
    if let Some(stored) = queries::received_txn_response(&mut conn, origin.as_str(), txn_id)
        .await
        .map_err(internal)?
    {
        return stored_response(stored);
    }
    let record = ReceivedTxn {
        origin: origin.to_string(),
        txn_id: txn_id.to_owned(),
        received_ts: crate::time::now_ms(),
        response: serde_json::json!({ "pdus": {} }),
    };
    let outcome = conn
        .transaction(async |db| {
            if !queries::claim_received_txn(db, &record).await? {
                // Another copy of this transaction was handled while we checked; its answer is
                // committed by now (the claim waited for it).
                let stored = queries::received_txn_response(db, origin.as_str(), txn_id).await?;
                return Ok::<_, DbError>(Err(stored));
            }
            let handled = handler.handle(db, origin, &transaction).await?;
            let value = serde_json::to_value(&handled.response).unwrap_or_default();
            queries::set_received_txn_response(db, origin.as_str(), txn_id, &value).await?;
            Ok(Ok(handled))
        })
        .await
        .map_err(internal)?;
    match outcome {
        Ok(handled) => {
            if let Some(after) = handled.after_commit {
                // Committed effects must run even if the sender gives up on this request (which
                // drops this future); the hub orders fan-out by sequence number either way.
                let _ = tokio::spawn(after).await;
            }
            Ok(handled.response)
        }
        Err(Some(stored)) => stored_response(stored),
        Err(None) => Err(MatrixError::internal(
            "receive transaction",
            &"a claimed transaction id has no record",
        )),
    }
}

fn stored_response(stored: serde_json::Value) -> Result<TransactionResponse, MatrixError> {
    serde_json::from_value(stored).map_err(|e| MatrixError::internal("stored transaction", &e))
}

/// Forgets transaction ids older than [`RECEIVED_TXN_RETENTION_MS`]; run by the sweeper.
pub async fn prune_received(pool: &DbPool) -> Result<usize, DbError> {
    let mut conn = confab_schema::connect(pool).await?;
    queries::delete_received_txns_before(
        &mut conn,
        crate::time::now_ms() - RECEIVED_TXN_RETENTION_MS,
    )
    .await
}

/// The Matrix error each refusal is answered with.
fn error_code(error: &TransactionError) -> MatrixErrorCode {
    match error {
        TransactionError::TooManyPdus(_) | TransactionError::TooManyEdus(_) => {
            MatrixErrorCode::TooLarge
        }
        TransactionError::OriginMismatch { .. } => MatrixErrorCode::Forbidden,
        TransactionError::InvalidTxnId | TransactionError::DuplicateEventId(_) => {
            MatrixErrorCode::BadJson
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_matrix_codes() {
        assert_eq!(
            error_code(&TransactionError::TooManyPdus(51)),
            MatrixErrorCode::TooLarge
        );
        assert_eq!(
            error_code(&TransactionError::TooManyEdus(101)),
            MatrixErrorCode::TooLarge
        );
        assert_eq!(
            error_code(&TransactionError::InvalidTxnId),
            MatrixErrorCode::BadJson
        );
        assert_eq!(
            error_code(&TransactionError::OriginMismatch {
                claimed: "a".into(),
                signed: "b".into()
            }),
            MatrixErrorCode::Forbidden
        );
    }
}
