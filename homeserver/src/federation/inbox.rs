//! Receiving federation transactions (`PUT /_matrix/federation/v1/send/{txnId}`): the checks,
//! the admission of one transaction per origin at a time, the idempotency by `(origin, txn_id)`,
//! and the seam where the room layer takes over.
//!
//! A transaction is recorded in `federation_received_txns` and handed to its
//! [`TransactionHandler`] inside one database transaction. The record's row lock makes a second
//! copy of the same transaction (a sender retrying after a lost answer) wait for the first and
//! then get the recorded answer, so a transaction id is handled once. A handler that writes to
//! the database through the connection it is given commits with the record: exactly once.
//!
//! Nothing waits on the network while it holds a database connection: a handler that finds it
//! must read something from another server first (events missing before the transaction's) says
//! so, the database transaction is rolled back and its connection returned, the handler fetches,
//! and the transaction is handled again with what was fetched. Together with the [`InboundGate`]
//! (one transaction per origin at a time, as Matrix servers do, and a cap on all of them), a
//! hostile origin that answers slowly holds at most one pooled connection, and only briefly.
//!
//! The server's handler is `super::rooms::RoomsHandler`; it also passes every item to the
//! [`FederationInbox`], a broadcast for observers (tests). [`FederationInbox`] is itself a
//! handler that only broadcasts, before the record commits (at least once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use confab_federation::ids::ServerName;
use confab_federation::transaction::{
    Edu, Pdu, Transaction, TransactionError, TransactionResponse,
};
use confab_schema::models::ReceivedTxn;
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, DbPool, queries};
use futures_util::future::BoxFuture;
use serde::Deserialize as _;
use tokio::sync::{Notify, broadcast};

use super::error::{MatrixError, MatrixErrorCode};

/// How long received transaction ids are remembered. A sender whose answer was lost retries the
/// same id within its backoff cap (an hour by default), so a day is ample.
pub const RECEIVED_TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Rounds of "handle, find something missing, fetch it" for one transaction before it is answered
/// with a failure (and retried by its sender later): an origin whose answers never close the gap
/// cannot keep a transaction going.
const MAX_FETCH_ROUNDS: usize = 3;

/// When a refused sender should try again: about the time one transaction takes.
const BUSY_RETRY_AFTER_MS: u64 = 1000;

/// What a handler did with a transaction.
pub struct Handled {
    /// The outcome of each PDU.
    pub response: TransactionResponse,
    /// What to do once the transaction's record committed (fan-out, EDUs): never for a copy
    /// of a transaction handled before.
    pub after_commit: Option<BoxFuture<'static, ()>>,
}

/// How far a handler got with a transaction.
pub enum Step<M> {
    /// Handled; the record commits with what the handler wrote.
    Done(Handled),
    /// Something must be read from another server first: the database transaction is rolled
    /// back and its connection returned before [`TransactionHandler::fetch`] runs.
    Fetch(M),
}

/// What handles the contents of new transactions (federated rooms: `super::rooms`).
pub trait TransactionHandler: Send + Sync {
    /// What [`Self::handle`] found missing.
    type Missing: Send;
    /// What [`Self::fetch`] has read so far, for the next [`Self::handle`].
    type Fetched: Default + Send + Sync;

    /// Handles the PDUs and EDUs of a transaction from `origin` that was not handled before,
    /// inside the database transaction that records it (`db`), with what was fetched for it so
    /// far; returns the outcome of each PDU, or what must be fetched first. It must not wait on
    /// the network. An error rolls everything back and answers 500, so the sender retries.
    fn handle<'a>(
        &'a self,
        db: &'a mut AsyncPgConnection,
        origin: &'a ServerName,
        transaction: &'a Transaction,
        fetched: &'a Self::Fetched,
    ) -> BoxFuture<'a, Result<Step<Self::Missing>, DbError>>;

    /// Reads what [`Self::handle`] found missing, holding no database connection, into
    /// `fetched`. An error answers 500, so the sender retries.
    fn fetch<'a>(
        &'a self,
        origin: &'a ServerName,
        missing: Self::Missing,
        fetched: &'a mut Self::Fetched,
    ) -> BoxFuture<'a, Result<(), DbError>>;
}

/// The transactions being handled: at most one per origin, and at most `max` in all. A sender
/// keeps one transaction in flight per destination (server-server API, "Transactions"), so
/// another one from an origin whose transaction is still being handled is that sender
/// misbehaving; it is told to come back ([`MatrixErrorCode::LimitExceeded`] with
/// `retry_after_ms`), which costs the receiver nothing while it waits. A copy of the transaction
/// being handled (a sender that gave up waiting and retried) waits for it instead, and gets its
/// answer.
pub struct InboundGate {
    max: usize,
    busy: Mutex<HashMap<ServerName, InFlight>>,
}

struct InFlight {
    txn_id: String,
    /// Woken when it is done.
    done: Arc<Notify>,
}

/// What [`InboundGate::check`] found.
enum Check<'a> {
    Admit,
    /// A copy of this transaction is being handled: wait until it is done.
    WaitFor(&'a Arc<Notify>),
    Refuse(MatrixError),
}

/// An admitted transaction's place in the [`InboundGate`], given back when dropped.
pub struct Admission<'a> {
    gate: &'a InboundGate,
    origin: ServerName,
}

impl InboundGate {
    /// A gate for `max` transactions at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// Admits transaction `txn_id` from `origin`, once a copy of it being handled is done; or
    /// says why not.
    pub async fn admit(
        &self,
        origin: &ServerName,
        txn_id: &str,
    ) -> Result<Admission<'_>, MatrixError> {
        loop {
            let done = {
                let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
                match self.check(&busy, origin, txn_id) {
                    Check::Refuse(refused) => return Err(refused),
                    // Registered before the lock is let go, so the wake-up cannot be missed.
                    Check::WaitFor(copy) => copy.clone().notified_owned(),
                    Check::Admit => {
                        busy.insert(
                            origin.clone(),
                            InFlight {
                                txn_id: txn_id.to_owned(),
                                done: Arc::new(Notify::new()),
                            },
                        );
                        return Ok(Admission {
                            gate: self,
                            origin: origin.clone(),
                        });
                    }
                }
            };
            done.await;
        }
    }

    /// The refusal [`Self::admit`] would answer now, if any: for a check before the request is
    /// read or verified (`super::auth`), which admits nothing.
    pub fn would_refuse(&self, origin: &ServerName, txn_id: &str) -> Option<MatrixError> {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        match self.check(&busy, origin, txn_id) {
            Check::Refuse(refused) => Some(refused),
            Check::WaitFor(_) | Check::Admit => None,
        }
    }

    fn check<'b>(
        &self,
        busy: &'b HashMap<ServerName, InFlight>,
        origin: &ServerName,
        txn_id: &str,
    ) -> Check<'b> {
        let refused = match busy.get(origin) {
            Some(copy) if copy.txn_id == txn_id => return Check::WaitFor(&copy.done),
            Some(_) => format!(
                "another transaction from {origin} is still being handled; send one at a time"
            ),
            None if busy.len() >= self.max => {
                "too many transactions are being handled; try again shortly".to_owned()
            }
            None => return Check::Admit,
        };
        Check::Refuse(
            MatrixError::new(MatrixErrorCode::LimitExceeded, refused)
                .retry_after(BUSY_RETRY_AFTER_MS),
        )
    }

    /// Transactions being handled now.
    pub fn busy(&self) -> usize {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Copies of transactions being handled that wait for them: each holds the wake-up of the
    /// one it copies.
    pub fn copies_waiting(&self) -> usize {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.values()
            .map(|f| Arc::strong_count(&f.done).saturating_sub(1))
            .sum()
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut busy = self.gate.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = busy.remove(&self.origin) {
            done.done.notify_waiters();
        }
    }
}

/// Receives transactions for a handler: admission, checks, idempotency, fetch rounds.
pub struct TransactionReceiver<H> {
    pool: DbPool,
    handler: H,
    gate: InboundGate,
    /// Set on one of several workers.
    worker_id: Option<String>,
}

/// A transaction marked in the database as the one its origin has being handled, across
/// workers; the mark goes when this is dropped.
struct OriginClaim {
    /// Taken by [`OriginClaim::release`]; otherwise the drop lets go in the background.
    pool: Option<DbPool>,
    origin: String,
    txn_id: String,
    worker_id: String,
}

impl OriginClaim {
    async fn take(
        pool: &DbPool,
        origin: &ServerName,
        txn_id: &str,
        worker_id: &str,
    ) -> Result<Self, MatrixError> {
        let claimed = async {
            let mut conn = confab_schema::connect(pool).await?;
            confab_schema::cluster::claim_origin(&mut conn, origin.as_str(), worker_id, txn_id)
                .await
        }
        .await
        .map_err(|e| MatrixError::internal("admit transaction", &e))?;
        if !claimed {
            return Err(MatrixError::new(
                MatrixErrorCode::LimitExceeded,
                format!(
                    "another transaction from {origin} is still being handled; send one at a time"
                ),
            )
            .retry_after(BUSY_RETRY_AFTER_MS));
        }
        Ok(Self {
            pool: Some(pool.clone()),
            origin: origin.to_string(),
            txn_id: txn_id.to_owned(),
            worker_id: worker_id.to_owned(),
        })
    }
}

impl OriginClaim {
    async fn release(mut self) {
        if let Some(pool) = self.pool.take() {
            self.let_go(pool).await;
        }
    }

    fn let_go(&self, pool: DbPool) -> impl Future<Output = ()> + Send + 'static {
        let (origin, txn_id, worker_id) = (
            self.origin.clone(),
            self.txn_id.clone(),
            self.worker_id.clone(),
        );
        async move {
            let released = async {
                let mut conn = confab_schema::connect(&pool).await?;
                confab_schema::cluster::release_origin(&mut conn, &origin, &worker_id, &txn_id)
                    .await
            }
            .await;
            if let Err(err) = released {
                // This origin's next transaction waits for this worker's lease to end.
                tracing::warn!(%origin, error = %err, "could not let go of an inbound transaction's mark");
            }
        }
    }
}

impl Drop for OriginClaim {
    fn drop(&mut self) {
        // The request was dropped half-way (the sender gave up waiting).
        if let Some(pool) = self.pool.take() {
            tokio::spawn(self.let_go(pool));
        }
    }
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
    type Missing = std::convert::Infallible;
    type Fetched = ();

    fn handle<'a>(
        &'a self,
        _db: &'a mut AsyncPgConnection,
        origin: &'a ServerName,
        transaction: &'a Transaction,
        _fetched: &'a (),
    ) -> BoxFuture<'a, Result<Step<Self::Missing>, DbError>> {
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
            Ok(Step::Done(Handled {
                response: TransactionResponse::accept_all(transaction),
                after_commit: None,
            }))
        })
    }

    fn fetch<'a>(
        &'a self,
        _origin: &'a ServerName,
        missing: Self::Missing,
        _fetched: &'a mut (),
    ) -> BoxFuture<'a, Result<(), DbError>> {
        match missing {}
    }
}

/// Why an attempt at a transaction's database transaction rolled back.
enum Attempt<M> {
    Failed(DbError),
    /// The handler must fetch this first.
    Fetch(M),
}

impl<M> From<confab_schema::diesel_error::Error> for Attempt<M> {
    fn from(err: confab_schema::diesel_error::Error) -> Self {
        Self::Failed(err.into())
    }
}

impl<M> From<DbError> for Attempt<M> {
    fn from(err: DbError) -> Self {
        Self::Failed(err)
    }
}

impl<H: TransactionHandler> TransactionReceiver<H> {
    /// A receiver handing new transactions to `handler`, at most `max_at_once` at a time.
    /// `worker_id`: this process is one of several workers, which admit one transaction per
    /// origin across all of them.
    pub fn new(pool: DbPool, handler: H, max_at_once: usize, worker_id: Option<String>) -> Self {
        Self {
            pool,
            handler,
            gate: InboundGate::new(max_at_once),
            worker_id,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The transactions being handled now.
    pub fn gate(&self) -> &InboundGate {
        &self.gate
    }

    /// Handles `PUT /_matrix/federation/v1/send/{txn_id}` from the verified `origin`: checks the
    /// body, admits it (one per origin at a time), then hands it to the handler unless this
    /// transaction id was handled before, in which case the answer given then is given again.
    pub async fn receive(
        &self,
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
        let _admitted = self.gate.admit(origin, txn_id).await?;
        let Some(worker_id) = &self.worker_id else {
            return self.handle(origin, txn_id, &transaction).await;
        };
        let claim = OriginClaim::take(&self.pool, origin, txn_id, worker_id).await?;
        let handled = self.handle(origin, txn_id, &transaction).await;
        // Before the answer: the origin's next transaction may reach another worker at once.
        claim.release().await;
        handled
    }

    /// Handles an admitted transaction (see [`Self::receive`]).
    async fn handle(
        &self,
        origin: &ServerName,
        txn_id: &str,
        transaction: &Transaction,
    ) -> Result<TransactionResponse, MatrixError> {
        let internal = |e: DbError| MatrixError::internal("receive transaction", &e);
        let record = ReceivedTxn {
            origin: origin.to_string(),
            txn_id: txn_id.to_owned(),
            received_ts: crate::time::now_ms(),
            response: serde_json::json!({ "pdus": {} }),
        };
        let mut fetched = H::Fetched::default();
        for round in 0..MAX_FETCH_ROUNDS {
            let mut conn = confab_schema::connect(&self.pool).await.map_err(internal)?;
            // Most retries find the record at once, without opening a transaction.
            if round == 0
                && let Some(stored) =
                    queries::received_txn_response(&mut conn, origin.as_str(), txn_id)
                        .await
                        .map_err(internal)?
            {
                return stored_response(stored);
            }
            let outcome = conn
                .transaction(async |db| {
                    if !queries::claim_received_txn(db, &record).await? {
                        // Another copy of this transaction was handled while we checked; its
                        // answer is committed by now (the claim waited for it).
                        let stored =
                            queries::received_txn_response(db, origin.as_str(), txn_id).await?;
                        return Ok(Err(stored));
                    }
                    let step = self
                        .handler
                        .handle(db, origin, transaction, &fetched)
                        .await?;
                    let handled = match step {
                        Step::Done(handled) => handled,
                        // Rolls back the claim with everything else.
                        Step::Fetch(missing) => return Err(Attempt::Fetch(missing)),
                    };
                    let value = serde_json::to_value(&handled.response).unwrap_or_default();
                    queries::set_received_txn_response(db, origin.as_str(), txn_id, &value).await?;
                    Ok(Ok(handled))
                })
                .await;
            drop(conn);
            match outcome {
                Ok(Ok(handled)) => {
                    if let Some(after) = handled.after_commit {
                        // Committed effects must run even if the sender gives up on this request
                        // (which drops this future); the hub orders fan-out by sequence number
                        // either way.
                        let _ = tokio::spawn(after).await;
                    }
                    return Ok(handled.response);
                }
                Ok(Err(Some(stored))) => return stored_response(stored),
                Ok(Err(None)) => {
                    return Err(MatrixError::internal(
                        "receive transaction",
                        &"a claimed transaction id has no record",
                    ));
                }
                Err(Attempt::Failed(err)) => return Err(internal(err)),
                Err(Attempt::Fetch(_)) if round + 1 == MAX_FETCH_ROUNDS => break,
                Err(Attempt::Fetch(missing)) => self
                    .handler
                    .fetch(origin, missing, &mut fetched)
                    .await
                    .map_err(internal)?,
            }
        }
        Err(internal(DbError::Unavailable(format!(
            "{origin}'s transaction {txn_id} still misses events after {} fetches",
            MAX_FETCH_ROUNDS - 1
        ))))
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

    use std::future::Future as _;

    #[tokio::test]
    async fn one_transaction_per_origin_and_a_cap_on_all() {
        let gate = InboundGate::new(2);
        let (a, b, c) = (
            ServerName::parse("a.example").unwrap(),
            ServerName::parse("b.example").unwrap(),
            ServerName::parse("c.example").unwrap(),
        );
        let first = gate.admit(&a, "t1").await.unwrap();
        let another = gate.admit(&a, "t2").await.err().unwrap();
        assert_eq!(another.code, MatrixErrorCode::LimitExceeded);
        assert_eq!(another.retry_after_ms, Some(BUSY_RETRY_AFTER_MS));
        let second = gate.admit(&b, "t1").await.unwrap();
        // Full: a third origin is told to come back too.
        assert!(gate.admit(&c, "t1").await.is_err());
        assert_eq!(gate.busy(), 2);
        // A finished transaction gives its place back, to its origin or another.
        drop(first);
        let _third = gate.admit(&c, "t1").await.unwrap();
        assert!(gate.admit(&a, "t3").await.is_err());

        // A copy of the transaction being handled waits for it, then is admitted.
        let mut copy = Box::pin(gate.admit(&b, "t1"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(copy.as_mut().poll(&mut cx).is_pending());
        drop(second);
        let copy = copy.await.unwrap();
        assert_eq!(copy.origin, b);
    }

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
