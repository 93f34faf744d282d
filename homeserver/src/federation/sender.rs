//! The persistent per-destination transaction sender (DESIGN.md, "Federation"; STYLE.md 4 and 7;
//! Matrix server-server API, "Transactions").
//!
//! [`TransactionSender`] is the handle; behind it a coordinator task owns one worker task per
//! destination, each owning that destination's state. Request handlers and the room layer only
//! enqueue; nothing is ever sent from inside a request.
//!
//! - **Persistent** events (PDUs: chat, membership, room state, room deletion) are written to
//!   `federation_outbound` before the worker is woken, and deleted only after the destination
//!   answered 200 to the transaction carrying them. A restart resumes from the table.
//! - **Ephemeral** events (EDUs: typing, presence, signaling) go through a bounded in-memory
//!   queue per destination and are dropped, and counted, when it is full or the destination is
//!   backing off.
//! - Per destination, **one transaction in flight**, of at most 50 PDUs and 100 EDUs; the next one
//!   is formed while it is on its way. Rows get their transaction id when the batch is formed and
//!   keep it, in the database, for every retry, even across restarts, so the receiver recognises
//!   a retry whose first answer was lost.
//! - A failure (transport, non-200, database) retries the same transaction after an exponential
//!   backoff with full jitter ([`Backoff`]), recorded in `federation_destinations` for operators.
//! - A destination that has failed without a break for longer than `federation.give_up_after`
//!   is **given up**: its queued PDUs are dropped (counted, and logged), and new ones are not
//!   queued for it, so a peer that never returns cannot grow the queue forever. It is taken back
//!   when it sends us a verified request ([`TransactionSender::heard_from`]) or an operator asks
//!   for a retry ([`TransactionSender::retry_now`]). The mark lives in the database and, for the
//!   hot enqueue path, in memory; several processes sharing a database each learn a give-up
//!   from their own worker or at start-up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_federation::backoff::Backoff;
use confab_federation::ids::{ServerName, random_alphanumeric};
use confab_federation::policy::{PolicyError, ServerAcl};
use confab_federation::transaction::{
    Edu, MAX_EDUS, MAX_PDUS, Pdu, SEND_PATH_PREFIX, Transaction, TransactionResponse,
};
use confab_schema::models::{NewOutboundPdu, OutboundPdu};
use confab_schema::{AsyncConnection, AsyncPgConnection, DbError, DbPool, queries};
use reqwest::Method;
use tokio::sync::{Notify, mpsc, watch};

use super::client::{FederationClient, OutboundError};
use crate::cluster::wire::Message;
use crate::cluster::{Cluster, SenderCommand, Singleton};
use crate::config::FederationSettings;

/// Commands queued from handles to the coordinator before enqueuers wait (wakes) or ephemeral
/// events are dropped.
const COMMAND_QUEUE: usize = 4096;

/// Why an event could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// This server does not federate with the destination.
    #[error(transparent)]
    Denied(#[from] PolicyError),
    /// Federation is disabled on this server (`federation.enabled`).
    #[error("federation is disabled on this server")]
    Disabled,
    /// The destination is this server.
    #[error("{0} is this server")]
    OwnServer(String),
    /// The event could not be written to the queue.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The event could not be encoded as JSON.
    #[error("cannot encode the event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Counters of what the sender did, for tests and (later) metrics.
#[derive(Debug, Default)]
pub struct SenderStats {
    /// Transactions a destination acknowledged.
    pub transactions_sent: AtomicU64,
    /// Attempts that failed and will be retried.
    pub transactions_failed: AtomicU64,
    /// PDUs acknowledged.
    pub pdus_sent: AtomicU64,
    /// EDUs acknowledged.
    pub edus_sent: AtomicU64,
    /// EDUs dropped: queue full, destination backing off, given up or denied.
    pub edus_dropped: AtomicU64,
    /// PDUs dropped because their destination was given up.
    pub pdus_dropped: AtomicU64,
}

impl SenderStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

enum Command {
    Wake(ServerName),
    /// Cut a backoff short: an operator asked for an attempt now.
    Retry(ServerName),
    Ephemeral(ServerName, Edu),
}

/// Destinations given up on, shared by the handles and the workers.
#[derive(Debug, Default)]
struct GivenUp(Mutex<HashSet<ServerName>>);

impl GivenUp {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<ServerName>> {
        // A set of names cannot be left half-updated; poisoning is ignored.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn contains(&self, destination: &ServerName) -> bool {
        self.set().contains(destination)
    }
}

/// What every worker shares.
#[derive(Clone)]
struct SenderContext {
    pool: DbPool,
    client: FederationClient,
    backoff: Backoff,
    ephemeral_queue: usize,
    give_up_after_ms: i64,
    given_up: Arc<GivenUp>,
    stats: Arc<SenderStats>,
    shutdown: watch::Receiver<bool>,
}

/// The handle to the sender; cheap to clone.
#[derive(Clone)]
pub struct TransactionSender {
    commands: mpsc::Sender<Command>,
    pool: DbPool,
    acl: Arc<ServerAcl>,
    origin: ServerName,
    enabled: bool,
    given_up: Arc<GivenUp>,
    stats: Arc<SenderStats>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for TransactionSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionSender")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl TransactionSender {
    /// Starts the sender on the current runtime; it first resumes every destination with
    /// events left in the queue.
    pub fn start(
        pool: DbPool,
        client: FederationClient,
        acl: Arc<ServerAcl>,
        settings: &FederationSettings,
        cluster: Cluster,
    ) -> Self {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(SenderStats::default());
        let given_up = Arc::new(GivenUp::default());
        let origin = client.origin().clone();
        let context = Arc::new(SenderContext {
            pool: pool.clone(),
            client,
            backoff: Backoff::new(settings.retry_base, settings.retry_cap),
            ephemeral_queue: settings.ephemeral_queue,
            give_up_after_ms: i64::try_from(settings.give_up_after.as_millis()).unwrap_or(i64::MAX),
            given_up: given_up.clone(),
            stats: stats.clone(),
            shutdown: shutdown_rx,
        });
        tokio::spawn(coordinate(context, receiver, cluster));
        Self {
            commands,
            pool,
            acl,
            origin,
            enabled: settings.enabled,
            given_up,
            stats,
            shutdown: Arc::new(shutdown),
        }
    }

    /// Queues `pdu` for `destination` in Postgres, then wakes the destination's worker. Its
    /// `order` is replaced by its position in the queue. Returns that position.
    pub async fn enqueue_persistent(
        &self,
        destination: &ServerName,
        pdu: Pdu,
    ) -> Result<i64, SenderError> {
        let mut conn = confab_schema::connect(&self.pool).await?;
        let seqs = self.queue(&mut conn, &[(destination.clone(), pdu)]).await?;
        drop(conn);
        self.wake(destination).await;
        Ok(seqs.first().copied().unwrap_or_default())
    }

    /// Writes PDUs to the queue through `conn`, which may be inside the caller's transaction so
    /// that an event and its delivery commit together; call [`Self::wake`] for each destination
    /// after the commit. Refuses the whole batch if one destination is refused. PDUs for a
    /// destination that was given up are not queued, only counted; the numbers returned are
    /// those of the PDUs queued, in the order given.
    pub async fn queue(
        &self,
        conn: &mut AsyncPgConnection,
        items: &[(ServerName, Pdu)],
    ) -> Result<Vec<i64>, SenderError> {
        let now = crate::time::now_ms();
        let mut rows = Vec::with_capacity(items.len());
        let mut skipped: HashMap<&ServerName, i64> = HashMap::new();
        for (destination, pdu) in items {
            self.check_destination(destination)?;
            if self.given_up.contains(destination) {
                *skipped.entry(destination).or_default() += 1;
                continue;
            }
            rows.push(NewOutboundPdu {
                destination: destination.to_string(),
                pdu: serde_json::to_value(pdu)?,
                created_ts: now,
            });
        }
        for (destination, n) in skipped {
            queries::count_dropped_pdus(conn, destination.as_str(), n).await?;
            SenderStats::add(&self.stats.pdus_dropped, usize::try_from(n).unwrap_or(0));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(queries::enqueue_outbound(conn, &rows).await?)
    }

    /// Tells `destination`'s worker that rows are waiting. If the sender has stopped, the rows
    /// wait for the next start.
    pub async fn wake(&self, destination: &ServerName) {
        let _ = self.commands.send(Command::Wake(destination.clone())).await;
    }

    /// Forgets `destination`'s failures and makes its worker try again now, even in the middle
    /// of a backoff (an operator knows the peer is back). Returns whether the destination was
    /// known: sent to before, or with events queued.
    /// A destination that was given up is taken back: events are queued for it again.
    pub async fn retry_now(&self, destination: &ServerName) -> Result<bool, SenderError> {
        let mut conn = confab_schema::connect(&self.pool).await?;
        let known = queries::clear_destination_backoff(&mut conn, destination.as_str()).await?
            || queries::count_outbound(&mut conn, destination.as_str()).await? > 0;
        drop(conn);
        self.given_up.set().remove(destination);
        if known {
            let _ = self
                .commands
                .send(Command::Retry(destination.clone()))
                .await;
        }
        Ok(known)
    }

    /// A server we had given up on sent us a verified request, so it is up again: take it back
    /// and deliver to it now. Cheap for every other server (a look-up in memory), so it may be
    /// called for every inbound request.
    pub async fn heard_from(&self, server: &ServerName) {
        if !self.given_up.contains(server) {
            return;
        }
        match self.retry_now(server).await {
            Ok(_) => {
                tracing::info!(destination = %server, "given-up destination is back: delivering to it again")
            }
            Err(err) => {
                tracing::warn!(destination = %server, error = %err, "cannot take back a given-up destination yet")
            }
        }
    }

    /// Whether `destination` was given up (see the module docs).
    pub fn is_given_up(&self, destination: &ServerName) -> bool {
        self.given_up.contains(destination)
    }

    /// Sends an ephemeral event to `destination`, best-effort: it is dropped (and counted) if
    /// the destination is refused, backing off, given up, or has too many waiting.
    pub fn send_ephemeral(&self, destination: &ServerName, edu: Edu) {
        if self.check_destination(destination).is_err()
            || self.given_up.contains(destination)
            || self
                .commands
                .try_send(Command::Ephemeral(destination.clone(), edu))
                .is_err()
        {
            SenderStats::add(&self.stats.edus_dropped, 1);
        }
    }

    /// A command another worker passed on to this one, which runs the sender.
    pub async fn from_other_worker(&self, command: SenderCommand) {
        match command {
            SenderCommand::Wake { destination } => {
                if let Ok(destination) = ServerName::parse(&destination) {
                    self.wake(&destination).await;
                }
            }
            SenderCommand::Retry { destination } => {
                if let Ok(destination) = ServerName::parse(&destination) {
                    let _ = self.commands.send(Command::Retry(destination)).await;
                }
            }
            SenderCommand::Edu { destination, edu } => {
                if let (Ok(destination), Ok(edu)) =
                    (ServerName::parse(&destination), serde_json::from_str(&edu))
                {
                    self.send_ephemeral(&destination, edu);
                }
            }
        }
    }

    /// What the sender did so far.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// Stops every worker, abandoning transactions in flight; their rows stay queued for the
    /// next start.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether events for `destination` would be queued (federation on, not us, not denied).
    pub fn accepts(&self, destination: &ServerName) -> bool {
        self.check_destination(destination).is_ok()
    }

    fn check_destination(&self, destination: &ServerName) -> Result<(), SenderError> {
        if !self.enabled {
            return Err(SenderError::Disabled);
        }
        if destination == &self.origin {
            return Err(SenderError::OwnServer(destination.to_string()));
        }
        Ok(self.acl.check(destination)?)
    }
}

/// A worker as the coordinator sees it.
struct WorkerHandle {
    wake: Arc<Notify>,
    retry: Arc<Notify>,
    edus: mpsc::Sender<Edu>,
}

/// The coordinator. On the worker that runs the sender (the only process of a homeserver
/// always does; see [`crate::cluster`]) it resumes destinations with queued rows, then routes
/// commands to workers, starting one per destination on first use; elsewhere it passes every
/// command to the worker that runs it. A term ends when this worker stops running the sender:
/// its destination workers stop, and the rows they had not delivered wait for the next holder,
/// with their transaction ids.
async fn coordinate(
    context: Arc<SenderContext>,
    mut commands: mpsc::Receiver<Command>,
    cluster: Cluster,
) {
    let mut shutdown = context.shutdown.clone();
    let mut leading = cluster.leadership(Singleton::Sender);
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => pass_on(&cluster, command),
                    None => return,
                },
                changed = leading.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
        let (term_over, term_rx) = watch::channel(false);
        let term = Arc::new(SenderContext {
            shutdown: term_rx,
            ..(*context).clone()
        });
        let stopped = lead(&term, &mut commands, &mut leading, &mut shutdown).await;
        term_over.send_replace(true);
        if stopped {
            return;
        }
    }
}

/// Sends a command to the worker that runs the sender.
fn pass_on(cluster: &Cluster, command: Command) {
    let message = match command {
        Command::Wake(destination) => Message::Wake {
            destination: destination.to_string(),
        },
        Command::Retry(destination) => Message::Retry {
            destination: destination.to_string(),
        },
        Command::Ephemeral(destination, edu) => match serde_json::to_string(&edu) {
            Ok(edu) => Message::Edu {
                destination: destination.to_string(),
                edu,
            },
            Err(_) => return,
        },
    };
    cluster.to_sender(message);
}

/// One term of running the sender. Returns true when the sender was shut down, false when
/// this worker stopped running it.
async fn lead(
    context: &Arc<SenderContext>,
    commands: &mut mpsc::Receiver<Command>,
    leading: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut workers: HashMap<ServerName, WorkerHandle> = HashMap::new();
    let mut attempt = 0;
    loop {
        match resume(context).await {
            Ok(destinations) => {
                for destination in destinations {
                    worker(&mut workers, context, &destination)
                        .wake
                        .notify_one();
                }
                break;
            }
            Err(err) => {
                let delay = context.backoff.delay(attempt, &mut rand::rng());
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %err, ?delay, "cannot resume federation delivery yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return true,
                    _ = leading.changed() => if !*leading.borrow_and_update() { return false },
                }
            }
        }
    }
    loop {
        let command = tokio::select! {
            command = commands.recv() => command,
            _ = shutdown.changed() => None,
            _ = leading.changed() => {
                if !*leading.borrow_and_update() {
                    return false;
                }
                continue;
            }
        };
        match command {
            None => return true,
            Some(Command::Wake(destination)) => {
                worker(&mut workers, context, &destination)
                    .wake
                    .notify_one();
            }
            Some(Command::Retry(destination)) => {
                let handle = worker(&mut workers, context, &destination);
                handle.retry.notify_one();
                handle.wake.notify_one();
            }
            Some(Command::Ephemeral(destination, edu)) => {
                let handle = worker(&mut workers, context, &destination);
                if handle.edus.try_send(edu).is_err() {
                    SenderStats::add(&context.stats.edus_dropped, 1);
                }
            }
        }
    }
}

/// Learns which destinations were given up, then returns those with rows queued.
async fn resume(context: &SenderContext) -> Result<Vec<ServerName>, DbError> {
    let mut conn = confab_schema::connect(&context.pool).await?;
    let given_up = server_names(&queries::given_up_destinations(&mut conn).await?);
    context.given_up.set().extend(given_up);
    Ok(server_names(
        &queries::destinations_with_outbound(&mut conn).await?,
    ))
}

fn server_names(names: &[String]) -> Vec<ServerName> {
    names
        .iter()
        .filter_map(|name| match ServerName::parse(name) {
            Ok(name) => Some(name),
            Err(err) => {
                tracing::error!(destination = %name, error = %err, "queued for an invalid server name");
                None
            }
        })
        .collect()
}

fn worker<'a>(
    workers: &'a mut HashMap<ServerName, WorkerHandle>,
    context: &Arc<SenderContext>,
    destination: &ServerName,
) -> &'a WorkerHandle {
    workers.entry(destination.clone()).or_insert_with(|| {
        let wake = Arc::new(Notify::new());
        let retry = Arc::new(Notify::new());
        let (edus, receiver) = mpsc::channel(context.ephemeral_queue);
        let worker = DestinationWorker {
            destination: destination.clone(),
            context: context.clone(),
            wake: wake.clone(),
            retry: retry.clone(),
            edus: receiver,
            carried: VecDeque::new(),
            in_flight: None,
            acknowledged: None,
            prepared: None,
            failures: 0,
            shutdown: context.shutdown.clone(),
        };
        tokio::spawn(worker.run());
        WorkerHandle { wake, retry, edus }
    })
}

/// The transaction being delivered to a destination, kept until it is acknowledged.
#[derive(Debug, Clone)]
struct InFlight {
    txn_id: String,
    transaction: Transaction,
    /// Whether queue rows belong to it (an EDU-only transaction has none).
    has_rows: bool,
}

/// What an acknowledged transaction leaves to write to the database.
#[derive(Debug)]
struct Acknowledged {
    /// Whose rows to delete (none for EDU-only transactions).
    txn_ids: Vec<String>,
}

/// How a delivery attempt ended.
enum Outcome {
    Delivered(TransactionResponse),
    Failed(String),
    Denied(PolicyError),
}

/// One destination's state, owned by its task.
struct DestinationWorker {
    destination: ServerName,
    context: Arc<SenderContext>,
    wake: Arc<Notify>,
    /// Notified when an operator asks for an attempt now; separate from `wake`, which every
    /// enqueue notifies and which must not cut a backoff short.
    retry: Arc<Notify>,
    edus: mpsc::Receiver<Edu>,
    /// EDUs taken off the channel while idle, sent first.
    carried: VecDeque<Edu>,
    in_flight: Option<InFlight>,
    /// The last transaction acknowledged, until its rows are deleted.
    acknowledged: Option<Acknowledged>,
    /// The next transaction, formed while the one in flight was on its way.
    prepared: Option<Formed>,
    /// Failed attempts in a row.
    failures: u32,
    shutdown: watch::Receiver<bool>,
}

impl DestinationWorker {
    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            if self.in_flight.is_none() {
                match self.form().await {
                    Ok(Some(batch)) => self.in_flight = Some(batch),
                    Ok(None) => {
                        if self.idle().await {
                            continue;
                        }
                        return;
                    }
                    Err(err) => {
                        if self
                            .back_off(&format!("cannot read the queue: {err}"))
                            .await
                        {
                            continue;
                        }
                        return;
                    }
                }
            }
            let Some(batch) = self.in_flight.clone() else {
                continue;
            };
            // While this transaction is on its way, the next one is formed (and the last one's
            // bookkeeping written), so that the database is not on the critical path of a busy
            // destination: only the round trip is. On a task of its own, so that stopping
            // mid-delivery never abandons it in the middle of its database transaction.
            let prepare = self.prepared.is_none().then(|| {
                let (context, destination) = (self.context.clone(), self.destination.clone());
                let (acknowledged, exclude) = (self.acknowledged.take(), batch.txn_id.clone());
                tokio::spawn(async move {
                    let formed = form_rows(
                        &context,
                        &destination,
                        acknowledged.as_ref(),
                        Some(&exclude),
                    )
                    .await;
                    (formed, acknowledged)
                })
            });
            let mut shutdown = self.shutdown.clone();
            let outcome = tokio::select! {
                outcome = self.deliver(&batch) => outcome,
                _ = shutdown.changed() => return,
            };
            if let Some(prepare) = prepare {
                match prepare.await {
                    Ok((Ok(next), _)) => self.prepared = (!next.rows.is_empty()).then_some(next),
                    Ok((Err(err), acknowledged)) => {
                        // Written with the next batch instead; the rows stay queued meanwhile.
                        self.acknowledged = acknowledged;
                        tracing::debug!(destination = %self.destination, error = %err, "cannot form the next transaction ahead");
                    }
                    Err(err) => {
                        tracing::error!(destination = %self.destination, error = %err, "forming the next transaction failed")
                    }
                }
            }
            let keep_going = match outcome {
                Outcome::Delivered(response) => {
                    self.acknowledged(&batch, &response);
                    true
                }
                Outcome::Failed(reason) => {
                    let keep_going = self.back_off(&reason).await;
                    if keep_going {
                        self.reread_after_failure().await;
                    }
                    keep_going
                }
                Outcome::Denied(reason) => self.refused(&reason).await,
            };
            if !keep_going {
                return;
            }
        }
    }

    /// The next transaction: the one formed ahead while the last was on its way (topped up with
    /// rows queued since, if it has room), or else one formed now by [`form_rows`]; plus waiting
    /// EDUs.
    async fn form(&mut self) -> Result<Option<InFlight>, DbError> {
        let formed = match self.prepared.take() {
            Some(prepared) => top_up(&self.context, &self.destination, prepared).await?,
            None => {
                let acknowledged = self.acknowledged.take();
                match form_rows(
                    &self.context,
                    &self.destination,
                    acknowledged.as_ref(),
                    None,
                )
                .await
                {
                    Ok(formed) => formed,
                    Err(err) => {
                        // Written with the next batch instead; until then the rows stay queued.
                        self.acknowledged = acknowledged;
                        return Err(err);
                    }
                }
            }
        };
        let edus = take_edus(&mut self.carried, &mut self.edus, MAX_EDUS);
        if formed.rows.is_empty() && edus.is_empty() {
            return Ok(None);
        }
        let transaction = Transaction {
            origin: self.context.client.origin().clone(),
            origin_server_ts: super::now_ms(),
            pdus: formed.rows.iter().filter_map(queued_pdu).collect(),
            edus,
        };
        Ok(Some(InFlight {
            txn_id: formed.txn_id,
            transaction,
            has_rows: !formed.rows.is_empty(),
        }))
    }

    async fn deliver(&self, batch: &InFlight) -> Outcome {
        let body = match serde_json::to_value(&batch.transaction) {
            Ok(body) => body,
            Err(err) => return Outcome::Failed(format!("cannot encode the transaction: {err}")),
        };
        let path = format!("{SEND_PATH_PREFIX}{}", batch.txn_id);
        match self
            .context
            .client
            .request(&self.destination, Method::PUT, &path, Some(&body))
            .await
        {
            Ok(response) if response.status == 200 => {
                Outcome::Delivered(serde_json::from_value(response.body).unwrap_or_default())
            }
            Ok(response) => {
                Outcome::Failed(format!("answered {}: {}", response.status, response.body))
            }
            Err(OutboundError::Policy(
                err @ (PolicyError::Denied(_) | PolicyError::NotAllowed(_)),
            )) => Outcome::Denied(err),
            Err(err) => Outcome::Failed(err.to_string()),
        }
    }

    /// The destination answered 200: its rows are forgotten, and its success recorded, with the
    /// next batch ([`Self::form`]).
    fn acknowledged(&mut self, batch: &InFlight, response: &TransactionResponse) {
        for (event_id, result) in &response.pdus {
            if let Some(error) = &result.error {
                // As in Matrix, a refused PDU is not retried: the destination will not change
                // its mind about it.
                tracing::warn!(destination = %self.destination, %event_id, %error, "PDU refused");
            }
        }
        // An EDU-only transaction after failures ends the run of failures too, or a later
        // failure would count from its start and give the destination up too early.
        if batch.has_rows || self.failures > 0 {
            // Added to any not written yet, so that no acknowledged row is forgotten.
            let done = self.acknowledged.get_or_insert_with(|| Acknowledged {
                txn_ids: Vec::new(),
            });
            if batch.has_rows {
                done.txn_ids.push(batch.txn_id.clone());
            }
        }
        let stats = &self.context.stats;
        SenderStats::add(&stats.transactions_sent, 1);
        SenderStats::add(&stats.pdus_sent, batch.transaction.pdus.len());
        SenderStats::add(&stats.edus_sent, batch.transaction.edus.len());
        self.in_flight = None;
        self.failures = 0;
    }

    /// Before a failed transaction is sent again, its rows are read again: those deleted
    /// meanwhile (their room was deleted, see `queries::delete_room`) are not sent, so that
    /// nothing of a deleted room waits in memory for a destination that is down. The
    /// transaction formed ahead is dropped for the same reason; its rows keep their id in the
    /// database, and [`form_rows`] forms it again from what is left. Only after a failure, so a
    /// healthy destination pays nothing for it. If the database does not answer, the
    /// transaction is resent as it was.
    async fn reread_after_failure(&mut self) {
        self.prepared = None;
        let Some(batch) = self.in_flight.as_mut().filter(|b| b.has_rows) else {
            return;
        };
        let rows = async {
            let mut conn = confab_schema::connect(&self.context.pool).await?;
            queries::outbound_txn_rows(&mut conn, self.destination.as_str(), &batch.txn_id).await
        }
        .await;
        let Ok(rows) = rows else {
            return;
        };
        batch.transaction.pdus = rows.iter().filter_map(queued_pdu).collect();
        batch.has_rows = !rows.is_empty();
        if !batch.has_rows && batch.transaction.edus.is_empty() {
            self.in_flight = None;
        }
    }

    /// We may not talk to the destination (the deny or allow list changed since the rows were
    /// queued): nothing queued for it will ever be sent, so it is dropped.
    async fn refused(&mut self, reason: &PolicyError) -> bool {
        let dropped = async {
            let mut conn = confab_schema::connect(&self.context.pool).await?;
            queries::delete_outbound_for(&mut conn, self.destination.as_str()).await
        }
        .await;
        tracing::warn!(destination = %self.destination, %reason, ?dropped, "dropping queued federation events");
        self.prepared = None;
        let mut edus = self
            .in_flight
            .take()
            .map_or(0, |b| b.transaction.edus.len());
        edus += self.carried.drain(..).count();
        while self.edus.try_recv().is_ok() {
            edus += 1;
        }
        SenderStats::add(&self.context.stats.edus_dropped, edus);
        match dropped {
            Ok(_) => self.idle().await,
            Err(err) => self.back_off(&err.to_string()).await,
        }
    }

    /// Waits for work; `false` when the sender is stopping.
    async fn idle(&mut self) -> bool {
        tokio::select! {
            () = self.wake.notified() => true,
            // Consumed here too, so that a retry asked for while idle does not cut short a
            // later, unrelated backoff.
            () = self.retry.notified() => true,
            edu = self.edus.recv() => match edu {
                Some(edu) => {
                    self.carried.push_back(edu);
                    true
                }
                None => false,
            },
            _ = self.shutdown.changed() => false,
        }
    }

    /// Waits out the backoff after a failure, dropping the EDUs that arrive meanwhile; `false`
    /// when the sender is stopping.
    async fn back_off(&mut self, reason: &str) -> bool {
        let delay = self.context.backoff.delay(self.failures, &mut rand::rng());
        self.failures = self.failures.saturating_add(1);
        SenderStats::add(&self.context.stats.transactions_failed, 1);
        tracing::info!(destination = %self.destination, failures = self.failures, ?delay, %reason, "federation transaction failed; retrying later");
        if let Some(failing_since) = self.record_failure(delay).await
            && crate::time::now_ms().saturating_sub(failing_since) >= self.context.give_up_after_ms
            && let Some(keep_going) = self.give_up(failing_since).await
        {
            return keep_going;
        }
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return true,
                () = self.retry.notified() => {
                    self.failures = 0;
                    return true;
                }
                edu = self.edus.recv() => match edu {
                    Some(_) => SenderStats::add(&self.context.stats.edus_dropped, 1),
                    None => return false,
                },
                _ = self.shutdown.changed() => return false,
            }
        }
    }

    /// The destination has failed for longer than `give_up_after`: drop its queue and stop
    /// queueing for it, then wait for work (a retry or a request from it takes it back). `None`
    /// if the database could not record it: the caller keeps backing off and tries again at the
    /// next failure.
    async fn give_up(&mut self, failing_since: i64) -> Option<bool> {
        // Marked first, so that no new row is queued while the old ones are deleted.
        self.context.given_up.set().insert(self.destination.clone());
        let now = crate::time::now_ms();
        let dropped = async {
            let mut conn = confab_schema::connect(&self.context.pool).await?;
            queries::give_up_destination(&mut conn, self.destination.as_str(), now).await
        }
        .await;
        let dropped = match dropped {
            Ok(n) => n,
            Err(err) => {
                self.context.given_up.set().remove(&self.destination);
                tracing::warn!(destination = %self.destination, error = %err, "cannot give up on a failing destination yet");
                return None;
            }
        };
        let failing_for = Duration::from_millis(u64::try_from(now - failing_since).unwrap_or(0));
        tracing::warn!(
            destination = %self.destination,
            dropped,
            ?failing_for,
            "giving up on a destination that keeps failing: its queued events are dropped and none \
             are queued until it is back (a request from it, or `confab admin federation retry`)"
        );
        SenderStats::add(
            &self.context.stats.pdus_dropped,
            usize::try_from(dropped).unwrap_or(0),
        );
        self.prepared = None;
        let mut edus = self
            .in_flight
            .take()
            .map_or(0, |b| b.transaction.edus.len());
        edus += self.carried.drain(..).count();
        while self.edus.try_recv().is_ok() {
            edus += 1;
        }
        SenderStats::add(&self.context.stats.edus_dropped, edus);
        self.failures = 0;
        Some(self.idle().await)
    }

    /// Records a failure for operators; returns when the current run of failures began, if the
    /// database could say.
    async fn record_failure(&self, delay: Duration) -> Option<i64> {
        let now = crate::time::now_ms();
        let retry_after = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let failures = i32::try_from(self.failures).unwrap_or(i32::MAX);
        let result = async {
            let mut conn = confab_schema::connect(&self.context.pool).await?;
            if let Some(batch) = self.in_flight.as_ref().filter(|b| b.has_rows) {
                queries::count_outbound_attempt(
                    &mut conn,
                    self.destination.as_str(),
                    &batch.txn_id,
                )
                .await?;
            }
            queries::record_destination_failure(
                &mut conn,
                self.destination.as_str(),
                failures,
                retry_after,
                now,
            )
            .await
        }
        .await;
        match result {
            Ok(since) => Some(since),
            Err(err) => {
                tracing::debug!(error = %err, "cannot record a federation failure");
                None
            }
        }
    }
}

/// Queue rows put into a transaction, with its id.
#[derive(Debug)]
struct Formed {
    rows: Vec<OutboundPdu>,
    txn_id: String,
    /// Formed now under a new id, so never sent yet: it may still take more rows.
    fresh: bool,
}

/// Forms the next transaction from the queue: the one its oldest rows already belong to, if any
/// (a retry after a restart), else up to [`MAX_PDUS`] new rows under a new id. Rows of `exclude`
/// (the transaction on its way while this one is formed ahead) are not looked at.
///
/// The bookkeeping of the transaction acknowledged last (its rows deleted, the destination's
/// success recorded) is written in the same database transaction, and that one commits without
/// waiting for the disk. A Postgres crash can forget it, and that is harmless: rows whose deletion
/// is forgotten are resent under their transaction id, which the destination answers from its
/// record; rows whose transaction id is forgotten are resent under a new one, and the receiver
/// applies a room's events by sequence number, so a repeat changes nothing.
async fn form_rows(
    context: &SenderContext,
    destination: &ServerName,
    acknowledged: Option<&Acknowledged>,
    exclude: Option<&str>,
) -> Result<Formed, DbError> {
    let destination = destination.as_str();
    let mut conn = confab_schema::connect(&context.pool).await?;
    conn.transaction(async |db| {
        queries::commit_asynchronously(db).await?;
        if let Some(done) = acknowledged {
            for txn_id in &done.txn_ids {
                queries::delete_outbound_txn(db, destination, txn_id).await?;
            }
            queries::record_destination_success(db, destination, crate::time::now_ms()).await?;
        }
        loop {
            let limit = i64::try_from(MAX_PDUS).unwrap_or(i64::MAX);
            let mut rows = queries::outbound_head(db, destination, exclude, limit).await?;
            let selection = select_batch(&rows);
            rows.truncate(selection.take);
            if let Some(txn_id) = selection.existing {
                // All of its rows, not only the head's: a row whose chat committed late, with a
                // lower number, can sit among them, and a retry must carry what the first
                // attempt did, or the receiver, which answers a known id from its record, would
                // never apply the rest.
                let rows = queries::outbound_txn_rows(db, destination, &txn_id).await?;
                break Ok(Formed {
                    rows,
                    txn_id,
                    fresh: false,
                });
            }
            let txn_id = mint_txn_id();
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            let taken = if seqs.is_empty() {
                0
            } else {
                queries::assign_outbound_txn(db, destination, &seqs, &txn_id).await?
            };
            // Another sender (the previous run, still stopping) formed a transaction from these
            // rows first: resend that one instead.
            if taken == seqs.len() {
                break Ok(Formed {
                    rows,
                    txn_id,
                    fresh: true,
                });
            }
        }
    })
    .await
}

/// A transaction formed ahead, with rows queued since it was formed added while it has room, so
/// that forming ahead never makes an event wait for one more round trip.
async fn top_up(
    context: &SenderContext,
    destination: &ServerName,
    mut formed: Formed,
) -> Result<Formed, DbError> {
    let room = MAX_PDUS.saturating_sub(formed.rows.len());
    if !formed.fresh || room == 0 {
        return Ok(formed);
    }
    let destination = destination.as_str();
    let mut conn = confab_schema::connect(&context.pool).await?;
    let added = conn
        .transaction(async |db| {
            queries::commit_asynchronously(db).await?;
            let rows = queries::outbound_unassigned(
                db,
                destination,
                i64::try_from(room).unwrap_or(i64::MAX),
            )
            .await?;
            if rows.is_empty() {
                return Ok(rows);
            }
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            let taken =
                queries::assign_outbound_txn(db, destination, &seqs, &formed.txn_id).await?;
            if taken == seqs.len() {
                Ok(rows)
            } else {
                // Some went to another sender meanwhile: read back what this one holds.
                formed.rows.clear();
                queries::outbound_txn_rows(db, destination, &formed.txn_id).await
            }
        })
        .await?;
    formed.rows.extend(added);
    Ok(formed)
}

/// Which queued rows the next transaction carries.
#[derive(Debug, PartialEq, Eq)]
struct Selection {
    /// The id the oldest rows were already given, to be reused.
    existing: Option<String>,
    /// How many of the oldest rows to take.
    take: usize,
}

/// Ids are given to the oldest rows, and only when none has one, so rows that already belong to
/// a transaction are the oldest of their destination (but for rows committed late, with lower
/// numbers, which can sit among them): if the first row has an id, resend that transaction (all
/// its rows, which [`DestinationWorker::form`] loads); else take up to [`MAX_PDUS`] rows, which
/// will get a new id.
fn select_batch(rows: &[OutboundPdu]) -> Selection {
    match rows.first().and_then(|row| row.txn_id.clone()) {
        Some(txn_id) => Selection {
            take: rows
                .iter()
                .take_while(|row| row.txn_id.as_deref() == Some(txn_id.as_str()))
                .count(),
            existing: Some(txn_id),
        },
        None => Selection {
            existing: None,
            take: rows
                .iter()
                .take(MAX_PDUS)
                .take_while(|row| row.txn_id.is_none())
                .count(),
        },
    }
}

/// A new transaction id: unique per origin (120 random bits), safe in a path.
fn mint_txn_id() -> String {
    random_alphanumeric(24)
}

/// A queued row as a PDU, its `order` set to its queue position. Rows were checked when queued,
/// so one that does not parse is logged and left out (it is dequeued with its transaction).
fn queued_pdu(row: &OutboundPdu) -> Option<Pdu> {
    match serde_json::from_value::<Pdu>(row.pdu.clone()) {
        Ok(mut pdu) => {
            pdu.order = row.seq;
            Some(pdu)
        }
        Err(err) => {
            tracing::error!(seq = row.seq, error = %err, "queued PDU does not parse; skipped");
            None
        }
    }
}

/// Up to `max` EDUs: the carried ones first, then whatever waits in the channel.
fn take_edus(
    carried: &mut VecDeque<Edu>,
    channel: &mut mpsc::Receiver<Edu>,
    max: usize,
) -> Vec<Edu> {
    let mut edus: Vec<Edu> = carried.drain(..carried.len().min(max)).collect();
    while edus.len() < max {
        match channel.try_recv() {
            Ok(edu) => edus.push(edu),
            Err(_) => break,
        }
    }
    edus
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn row(seq: i64, txn_id: Option<&str>) -> OutboundPdu {
        OutboundPdu {
            seq,
            destination: "b.example".into(),
            pdu: json!({"event_id": format!("$e{seq}"), "room_id": "!r:a", "type": "t", "order": 0}),
            created_ts: 0,
            txn_id: txn_id.map(str::to_owned),
            attempts: 0,
        }
    }

    fn edu(n: usize) -> Edu {
        Edu {
            edu_type: "m.typing".into(),
            content: json!({ "n": n }),
        }
    }

    #[test]
    fn a_transaction_already_formed_is_resent_exactly() {
        let rows = vec![row(3, Some("t1")), row(4, Some("t1")), row(7, None)];
        assert_eq!(
            select_batch(&rows),
            Selection {
                existing: Some("t1".into()),
                take: 2
            }
        );
    }

    #[test]
    fn new_rows_are_batched_fifty_at_a_time() {
        let rows: Vec<_> = (1..=60).map(|s| row(s, None)).collect();
        assert_eq!(
            select_batch(&rows),
            Selection {
                existing: None,
                take: MAX_PDUS
            }
        );
        assert_eq!(
            select_batch(&rows[..3]),
            Selection {
                existing: None,
                take: 3
            }
        );
        assert_eq!(
            select_batch(&[]),
            Selection {
                existing: None,
                take: 0
            }
        );
    }

    #[test]
    fn queued_rows_become_pdus_in_queue_order() {
        let pdu = queued_pdu(&row(42, None)).unwrap();
        assert_eq!((pdu.order, pdu.event_id.as_str()), (42, "$e42"));
        let mut broken = row(43, None);
        broken.pdu = json!({"no": "room"});
        assert!(queued_pdu(&broken).is_none());
    }

    #[test]
    fn transaction_ids_are_fresh_and_path_safe() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| mint_txn_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            confab_federation::transaction::check_txn_id(id).unwrap();
        }
    }

    #[tokio::test]
    async fn edus_are_taken_carried_first_at_most_a_hundred() {
        let (tx, mut rx) = mpsc::channel(500);
        for n in 0..150 {
            tx.try_send(edu(n)).unwrap();
        }
        let mut carried: VecDeque<Edu> = (1000..1005).map(edu).collect();
        let first = take_edus(&mut carried, &mut rx, MAX_EDUS);
        assert_eq!(first.len(), MAX_EDUS);
        assert_eq!(first[0], edu(1000));
        assert_eq!(first[5], edu(0));
        let second = take_edus(&mut carried, &mut rx, MAX_EDUS);
        assert_eq!(second.len(), 55);
        assert_eq!(second[0], edu(95));
        assert!(take_edus(&mut carried, &mut rx, MAX_EDUS).is_empty());
    }

    #[test]
    fn backoff_ceilings_grow_with_failures() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = rand::rng();
        for failures in 0..10 {
            assert!(backoff.delay(failures, &mut rng) <= backoff.ceiling(failures));
        }
        assert_eq!(backoff.ceiling(10), Duration::from_secs(1));
    }
}
