//! The application: its context (`AppState`), the one place that builds the actix app for both
//! production and tests, and `run`, which serves until told to stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{ServerHandle, Service};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use confab_schema::DbPool;
use futures_util::FutureExt;

use crate::config::Settings;
use crate::error::{ApiError, ErrorCode};
use crate::federation::Federation;
use crate::federation::identity::ServerIdentity;
use crate::federation::inbox::FederationInbox;
use crate::federation::sender::TransactionSender;
use crate::hub::{FederationLink, RoomHub};
use crate::limiter::KeyedLimiter;
use crate::metrics::Metrics;
use crate::routes;
use crate::writer::EventWriter;

/// Everything a request handler or background task needs; passed explicitly, never global.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: DbPool,
    pub hub: RoomHub,
    pub writer: EventWriter,
    pub metrics: Metrics,
    /// Identity, keys of others, outbound client; see `crate::federation`.
    pub federation: Federation,
    /// Delivers our events to other servers; the only way anything is sent to them.
    pub federation_sender: TransactionSender,
    /// Every item of received transactions, for observers (see `crate::federation::inbox`).
    pub federation_inbox: FederationInbox,
    /// Forwards our users' chat in other servers' rooms to those rooms' origins.
    pub chat_forwarder: crate::federation::rooms::ChatForwarder,
    /// Guest sessions created per client address.
    pub session_limiter: KeyedLimiter,
    /// Refused joins per client address, and per federated server.
    pub join_limiter: KeyedLimiter,
    pub federated_join_limiter: KeyedLimiter,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl AppState {
    /// Builds the context and starts its background tasks (event writer, federation sender) on
    /// the current runtime.
    pub fn new(settings: Settings, pool: DbPool, federation: Federation) -> Self {
        let metrics = Metrics::new();
        let hub = RoomHub::new(
            pool.clone(),
            metrics.clone(),
            settings.rooms.max_participants,
            settings.limits.max_connections_per_user,
            settings.rooms.idle_ttl,
        );
        let federation_sender = TransactionSender::start(
            pool.clone(),
            federation.client.clone(),
            federation.acl.clone(),
            &settings.federation,
        );
        hub.link_federation(FederationLink {
            sender: federation_sender.clone(),
            server_name: settings.server.name.clone(),
        });
        let limits = settings.limits.clone();
        let trusted_proxies = settings.server.trusted_proxy_networks().unwrap_or_default();
        let writer = EventWriter::start(
            pool.clone(),
            hub.clone(),
            metrics.clone(),
            federation_sender.clone(),
        );
        Self {
            settings: Arc::new(settings),
            pool,
            hub,
            writer,
            metrics,
            federation,
            federation_sender,
            federation_inbox: FederationInbox::new(),
            chat_forwarder: Default::default(),
            session_limiter: KeyedLimiter::new(limits.sessions_per_minute),
            join_limiter: KeyedLimiter::new(limits.join_failures_per_minute),
            federated_join_limiter: KeyedLimiter::new(
                limits.join_failures_per_minute.saturating_mul(10),
            ),
            // Validated with the rest of the settings.
            trusted_proxies,
        }
    }

    /// Counts an error answered to a client.
    pub fn count_error(&self, code: ErrorCode) {
        self.metrics
            .errors
            .with_label_values(&[code.as_str()])
            .inc();
    }

    /// Whether the database answers.
    pub async fn check_database(&self) -> Result<(), ApiError> {
        let mut conn = confab_schema::connect(&self.pool).await?;
        confab_schema::ping(&mut conn).await?;
        Ok(())
    }
}

/// A running server.
pub struct Running {
    /// Stops the HTTP server.
    pub handle: ServerHandle,
    /// Resolves when the server has stopped.
    pub server: actix_web::dev::Server,
    /// The shared context.
    pub state: Arc<AppState>,
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

/// Builds the HTTP server on `listener` (HTTPS when `server.tls_cert_file` is set) and starts
/// the sweeper; the caller awaits `server`.
pub fn serve(listener: TcpListener, state: AppState) -> anyhow::Result<Running> {
    let tls = crate::tls::server_config(&state.settings.server)?;
    let state = Arc::new(state);
    let data = web::Data::from(state.clone());
    let web_dir = state.settings.server.web_client_dir.clone();
    let serve_web = web_dir.join("index.html").is_file();
    let body_limit = state.settings.server.max_body_bytes;
    let metrics = state.metrics.clone();
    let csp = content_security_policy(&state.settings.server.public_url);
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        let mut app = App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(routes::json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(routes::query_error))
            .app_data(web::PathConfig::default().error_handler(routes::path_error))
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
            .configure(routes::configure);
        if serve_web {
            app = app.service(
                actix_files::Files::new("/", &web_dir)
                    .index_file("index.html")
                    .prefer_utf8(true),
            );
        }
        app
    })
    // Protocol frames are small and latency-bound: without this, Nagle's algorithm holds a
    // frame back until the previous one is acknowledged (up to a delayed-ACK timeout).
    .tcp_nodelay(true)
    // Sockets get `shutdown` and close themselves; give them a moment before the hard stop.
    .shutdown_timeout(5)
    .disable_signals();
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    tokio::spawn(sweeper(state.clone()));
    tokio::spawn(crate::federation::rooms::presence_lease(
        Arc::downgrade(&state),
        state.settings.federation.presence_lease,
    ));
    Ok(Running {
        handle,
        server,
        state,
    })
}

/// Deletes idle rooms, and forgets old received federation transaction ids, every
/// `rooms.sweep_interval`.
async fn sweeper(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.settings.rooms.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = state.sweep_expired().await {
            tracing::warn!(error = %err.reason, "room sweep failed; retrying next tick");
        }
        crate::sessions::sweep_idle(&state.pool, &state.settings, &state.metrics).await;
        if let Err(err) = crate::federation::inbox::prune_received(&state.pool).await {
            tracing::warn!(error = %err, "pruning received transaction ids failed");
        }
        // Stop when the server is gone (only the sweeper holds the state then).
        if Arc::strong_count(&state) == 1 {
            return;
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
    let state = AppState::new(settings, pool, federation);
    let decisions = crate::admin::load_acl_overrides(&state)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.reason))?;
    if decisions > 0 {
        tracing::info!(decisions, "admin federation decisions applied");
    }
    let restarted = state
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
