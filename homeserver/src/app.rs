//! The application: the one place that builds every service (pool, engine, rooms, sessions,
//! federation sender and client) and the actix app, for production and tests alike, and `serve`,
//! which runs them until told to stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::HttpService;
use actix_service::{IntoServiceFactory as _, ServiceFactoryExt as _, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::dev::{ServerHandle, Service};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, web};
use confab_schema::DbPool;
use futures_util::FutureExt;
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Inbound, Singleton};
use crate::config::Settings;
use crate::engine::{CloseReason, Engine, RoomNews, WeakEngine};
use crate::error::ApiError;
use crate::federation::Federation;
use crate::federation::identity::ServerIdentity;
use crate::federation::inbox::{FederationInbox, TransactionReceiver};
use crate::federation::rooms::budget::RemoteBudgets;
use crate::federation::rooms::inbound::RoomsHandler;
use crate::federation::rooms::replica::Replicas;
use crate::federation::sender::TransactionSender;
use crate::limiter::KeyedLimiter;
use crate::metrics::Metrics;
use crate::rooms::Rooms;
use crate::routes;
pub use crate::state::AppState;

/// Builds every service and starts their background tasks (event writer, federation sender) on
/// the current runtime.
pub fn build(
    settings: Settings,
    pool: DbPool,
    federation: Federation,
    (cluster, from_workers): (Cluster, mpsc::UnboundedReceiver<Inbound>),
) -> AppState {
    let settings = Arc::new(settings);
    let metrics = Metrics::new();
    let federation_sender = TransactionSender::start(
        pool.clone(),
        federation.client.clone(),
        federation.acl.clone(),
        &settings.federation,
        cluster.clone(),
    );
    let engine = Engine::start(
        &settings,
        pool.clone(),
        metrics.clone(),
        federation_sender.clone(),
        federation.client.clone(),
        cluster.clone(),
    );
    tokio::spawn(hear_other_workers(
        from_workers,
        engine.downgrade(),
        federation_sender.clone(),
    ));
    let replicas = Replicas::new(
        pool.clone(),
        engine.clone(),
        federation.client.clone(),
        settings.server.name.clone(),
        settings.federation.enabled,
    );
    let rooms = Rooms::new(
        pool.clone(),
        settings.clone(),
        engine.clone(),
        replicas.clone(),
        federation_sender.clone(),
        metrics.clone(),
    );
    let federation_inbox = FederationInbox::new();
    let remote_budgets = Arc::new(RemoteBudgets::new(&settings));
    let transactions = TransactionReceiver::new(
        pool.clone(),
        RoomsHandler::new(
            replicas.clone(),
            engine.clone(),
            federation_inbox.clone(),
            remote_budgets.clone(),
            metrics.clone(),
            settings.limits.max_event_bytes,
        ),
        settings.federation.max_inbound_transactions,
        cluster.is_worker().then(|| cluster.worker_id().to_owned()),
    );
    let limits = &settings.limits;
    AppState {
        session_limiter: KeyedLimiter::new(limits.sessions_per_minute),
        join_limiter: KeyedLimiter::new(limits.join_failures_per_minute),
        federated_join_limiter: KeyedLimiter::new(
            limits.join_failures_per_minute.saturating_mul(10),
        ),
        // Validated with the rest of the settings.
        socket_addresses: crate::limiter::ConnectionCap::new(
            settings.limits.max_connections_per_address,
        ),
        trusted_proxies: settings.server.trusted_proxy_networks().unwrap_or_default(),
        placement: Arc::new(crate::ws::placement::Placement::new(
            metrics.ws_sockets_by_worker.clone(),
        )),
        settings,
        pool,
        metrics,
        engine,
        cluster,
        rooms,
        replicas,
        federation,
        federation_sender,
        federation_inbox,
        remote_budgets,
        transactions,
    }
}

/// The sockets a server listens on: the public one (client API, WebSocket, federation, web
/// client, `/health`) and the operator's (admin API, `/metrics`), which is never the public
/// one; `None` when `admin.listen` is empty.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.listen` and `admin.listen`.
    pub fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let bind = |addr: std::net::SocketAddr, key: &str| {
            TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({key}): {e}"))
        };
        Ok(Self {
            public: bind(settings.server.listen, "server.listen")?,
            admin: settings
                .admin
                .listen
                .map(|addr| bind(addr, "admin.listen"))
                .transpose()?,
        })
    }
}

/// A running server.
pub struct Running {
    /// Stops the HTTP server (both listeners).
    pub handle: ServerHandle,
    /// Resolves when the server has stopped.
    pub server: actix_web::dev::Server,
    /// The shared context.
    pub state: Arc<AppState>,
}

/// Which listener an app is built for; each has its own route table (see `crate::routes`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Public,
    Operator,
}

/// Content-Security-Policy of the web client: only this origin, and the WebSocket at
/// `public_url` (named, since not every browser counts ws: as 'self'); media and images from
/// blobs (files received peer to peer); nothing inline but styles.
fn content_security_policy(public_url: &str) -> String {
    let socket = public_url
        .trim_end_matches('/')
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; media-src 'self' blob:; \
         connect-src 'self' {socket}; worker-src 'self' blob:; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

/// Builds the HTTP server on `listeners` (the public one HTTPS when `server.tls_cert_file` is
/// set; the admin one always plain HTTP, for loopback or a private network) and starts the
/// sweeper; the caller awaits `server`.
pub fn serve(listeners: Listeners, state: AppState) -> anyhow::Result<Running> {
    let tls = crate::tls::server_config(&state.settings.server)?;
    let state = Arc::new(state);
    let data = web::Data::from(state.clone());
    let web_dir = state.settings.server.web_client_dir.clone();
    let serve_web = web_dir.join("index.html").is_file();
    let body_limit = state.settings.server.max_body_bytes;
    let metrics = state.metrics.clone();
    let csp = content_security_policy(&state.settings.server.public_url);
    let make_app = move |surface: Surface| {
        let metrics = metrics.clone();
        let mut app = App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(crate::extract::json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(crate::extract::query_error))
            .app_data(web::PathConfig::default().error_handler(crate::extract::path_error))
            .app_data(web::PayloadConfig::default().limit(body_limit))
            .wrap(
                DefaultHeaders::new()
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::REFERRER_POLICY, "no-referrer"))
                    .add((header::X_FRAME_OPTIONS, "DENY"))
                    .add((header::CONTENT_SECURITY_POLICY, csp.as_str()))
                    .add((
                        "Permissions-Policy",
                        "camera=(self), microphone=(self), display-capture=(self)",
                    )),
            )
            .wrap_fn(move |req, srv| {
                let start = Instant::now();
                let method = req.method().to_string();
                let metrics = metrics.clone();
                srv.call(req).map(move |res| {
                    if let Ok(res) = &res {
                        // REST refusals are counted by code, like the WebSocket's.
                        if let Some(api) = res
                            .response()
                            .error()
                            .and_then(|e| e.as_error::<ApiError>())
                        {
                            metrics.errors.with_label_values(&[api.code.as_str()]).inc();
                        }
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".to_owned());
                        metrics
                            .http_latency
                            .with_label_values(&[
                                method.as_str(),
                                route.as_str(),
                                routes::status_label(res.status()),
                            ])
                            .observe(start.elapsed().as_secs_f64());
                    }
                    res
                })
            })
            .configure(match surface {
                Surface::Public => routes::configure,
                Surface::Operator => routes::configure_operator,
            });
        if serve_web && surface == Surface::Public {
            app = app.service(
                actix_files::Files::new("/", &web_dir)
                    .index_file("index.html")
                    .prefer_utf8(true),
            );
        }
        app
    };
    let public_addr = listeners.public.local_addr()?;
    // Built by hand rather than with `HttpServer` for actix-http's upgrade seam: WebSocket
    // connections leave the HTTP dispatcher for `crate::ws` (see there). Every listener's
    // service is built here, the same way; each is typed by its stream, so each is built where
    // it is listened on. Only the public one hands upgrades to the WebSocket: on the admin
    // listener an upgrade request is an ordinary request, which its route table answers 404.
    macro_rules! http_service {
        ($addr:expr, $app:expr $(, upgrade = $state:expr)?) => {
            HttpService::build()
                // Protocol frames are small and latency-bound: without this, Nagle's algorithm
                // holds a frame back until the previous one is acknowledged.
                .tcp_nodelay(true)
                .local_addr($addr)
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                $(.upgrade(fn_service(move |(req, framed)| {
                    crate::ws::upgrade($state.clone(), req, framed)
                })))?
                .finish(map_config(
                    $app.into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    |(): ()| AppConfig::default(),
                ))
        };
    }
    let builder = actix_server::Server::build()
        // Sockets get `shutdown` and close themselves; give them a moment before the hard stop.
        .shutdown_timeout(5)
        .disable_signals();
    let upgrade_state = state.clone();
    let public_app = make_app.clone();
    let mut builder = match tls {
        Some(config) => builder.listen("confab", listeners.public, move || {
            let state = upgrade_state.clone();
            http_service!(public_addr, public_app(Surface::Public), upgrade = state)
                .rustls_0_23(config.clone())
        })?,
        None => builder.listen("confab", listeners.public, move || {
            let state = upgrade_state.clone();
            // Called on each worker thread as it starts.
            state.placement.register_current_worker();
            http_service!(public_addr, public_app(Surface::Public), upgrade = state).tcp()
        })?,
    };
    if let Some(admin) = listeners.admin {
        let admin_addr = admin.local_addr()?;
        let open_to_all = state
            .settings
            .admin
            .allowed_networks()
            .is_ok_and(|networks| networks.is_empty());
        if !admin_addr.ip().is_loopback() && open_to_all {
            tracing::warn!(
                %admin_addr,
                "the admin listener is not on loopback and admin.allowed_addresses is empty: \
                 anyone who reaches it can read the metrics and try admin tokens"
            );
        }
        builder = builder.listen("confab-admin", admin, move || {
            http_service!(admin_addr, make_app(Surface::Operator)).tcp()
        })?;
    }
    let server = builder.run();
    let handle = server.handle();
    tokio::spawn(sweeper(state.clone()));
    tokio::spawn(Engine::presence_lease(
        state.engine.downgrade(),
        state.settings.federation.presence_lease,
    ));
    Ok(Running {
        handle,
        server,
        state,
    })
}

/// Hands what other workers tell this one to the engine and the federation sender, in the
/// order it arrived. Ends when the engine is gone.
async fn hear_other_workers(
    mut from_workers: mpsc::UnboundedReceiver<Inbound>,
    engine: WeakEngine,
    sender: TransactionSender,
) {
    // What has arrived is taken at once: first the events committed elsewhere, all read in one
    // query (a room's deletion or a chat's answer that came with them is applied after them,
    // as it happened after them), then everything else in the order it came.
    let mut arrived = Vec::new();
    let mut committed = Vec::new();
    while from_workers.recv_many(&mut arrived, 1024).await > 0 {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        arrived.retain_mut(|inbound| match inbound {
            Inbound::Committed { room_id, seq } => {
                committed.push((std::mem::take(room_id), *seq));
                false
            }
            _ => true,
        });
        if !committed.is_empty() {
            engine.committed_elsewhere(&committed).await;
            committed.clear();
        }
        for inbound in arrived.drain(..) {
            let news = match inbound {
                Inbound::Committed { .. } => continue,
                Inbound::ToSender(command) => {
                    sender.from_other_worker(command).await;
                    continue;
                }
                Inbound::Closed { room_id, reason } => match CloseReason::parse(&reason) {
                    Some(reason) => RoomNews::Closed { room_id, reason },
                    None => continue,
                },
                Inbound::Resync => RoomNews::Resync,
                Inbound::Reassert => RoomNews::Reassert,
                Inbound::Live {
                    worker,
                    room_id,
                    body,
                } => RoomNews::Live {
                    worker,
                    room_id,
                    body,
                },
            };
            engine.from_other_worker(news).await;
        }
    }
}

/// Deletes idle rooms, and forgets old received federation transaction ids, every
/// `rooms.sweep_interval`, on the one worker that runs the sweeper.
async fn sweeper(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.settings.rooms.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rooms of ours whose host has been away since when; only this task reads or writes it.
    let mut absent = crate::rooms::AbsentHosts::default();
    loop {
        tick.tick().await;
        // Stop when the server is gone (only the sweeper holds the state then).
        if Arc::strong_count(&state) == 1 {
            return;
        }
        if !state.cluster.leads(Singleton::Sweeper) {
            // Another worker sweeps; what this one learnt of absent hosts goes stale.
            absent = crate::rooms::AbsentHosts::default();
            continue;
        }
        // Rooms whose devices were on a worker that died start counting.
        if let Err(err) = state.engine.countdown().start_orphans(&state.pool).await {
            tracing::warn!(error = %err.reason, "could not start the countdowns of rooms nobody holds");
        }
        if let Err(err) = state.rooms.sweep_expired().await {
            tracing::warn!(error = %err.reason, "room sweep failed; retrying next tick");
        }
        if let Err(err) = state
            .rooms
            .sweep_absent_hosts(&mut absent, crate::time::now_ms())
            .await
        {
            tracing::warn!(error = %err.reason, "host sweep failed; retrying next tick");
        }
        crate::sessions::sweep_idle(&state.pool, &state.settings, &state.metrics).await;
        if let Err(err) = crate::federation::inbox::prune_received(&state.pool).await {
            tracing::warn!(error = %err, "pruning received transaction ids failed");
        }
    }
}

/// Prepares the database (migrations, countdowns) and the federation identity (loading the
/// signing key from `server.data_dir`, or creating it on first start) and builds the state for
/// `settings` and `url`.
pub async fn prepare(settings: Settings, database_url: &str) -> anyhow::Result<AppState> {
    confab_schema::run_migrations(database_url).await?;
    let pool = confab_schema::build_pool(
        database_url,
        settings.database.pool_size,
        settings.database.connect_timeout,
        settings.database.lock_timeout,
    )?;
    let (data_dir, name) = (
        settings.server.data_dir.clone(),
        settings.server.name.clone(),
    );
    let identity =
        tokio::task::spawn_blocking(move || ServerIdentity::load_or_generate(&data_dir, name))
            .await??;
    tracing::info!(key_id = %identity.key.key_id(), "federation signing key loaded");
    let federation = Federation::new(&settings, identity)?;
    let cluster = Cluster::start(&settings.cluster, pool.clone(), database_url).await?;
    let state = build(settings, pool, federation, cluster);
    let bus = state.cluster.stats();
    for counter in [
        &bus.notifications_sent,
        &bus.messages_sent,
        &bus.messages_received,
    ] {
        state.metrics.register(counter.clone());
    }
    let decisions = crate::admin::load_acl_overrides(&state)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.reason))?;
    if decisions > 0 {
        tracing::info!(decisions, "admin federation decisions applied");
    }
    let restarted = state
        .rooms
        .restart_countdowns()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.reason))?;
    if restarted > 0 {
        tracing::info!(
            rooms = restarted,
            "idle countdown started for rooms left from the last run"
        );
    }
    Ok(state)
}
