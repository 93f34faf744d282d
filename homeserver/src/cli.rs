//! The command line: `confab serve` runs the homeserver (with the embedded Postgres unless a
//! database URL is configured); `confab default-config` prints the defaults; `confab federation …`
//! holds the federation debugging and key tools (`crate::federation::tools`); `confab admin …`
//! operates a running server through its admin API (`crate::admin::cli`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app;
use crate::config::{LogFormat, Settings};
use crate::embedded_pg::SupervisedPostgres;

/// Confab: a federated homeserver for ephemeral, end-to-end-encrypted meetings.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the homeserver.
    Serve {
        /// A TOML file overriding `config/default.toml`; CONFAB__SECTION__KEY variables override both.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the documented default configuration.
    DefaultConfig,
    /// Federation tools: sign and verify JSON, sign or send requests, rotate the key.
    Federation {
        #[command(subcommand)]
        command: crate::federation::tools::FederationCommand,
    },
    /// Operate a running server through its admin API (needs `admin.token`).
    Admin(crate::admin::cli::AdminArgs),
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Federation { command } => crate::federation::tools::run(command),
        Command::Admin(args) => crate::admin::cli::run(args),
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_tracing(&settings);
            raise_fd_limit();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(settings))
        }
    }
}

fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Each WebSocket is a file descriptor; lift the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // A bad certificate or key stops start-up before the database is touched.
    crate::tls::server_config(&settings.server)?;
    let embedded = if settings.database.url.is_empty() {
        let root = settings.server.data_dir.join("postgres");
        let bin = (!settings.database.postgres_bin_dir.is_empty())
            .then(|| PathBuf::from(&settings.database.postgres_bin_dir));
        let pg = SupervisedPostgres::start(root, bin).await?;
        if pg.cluster().adopted() {
            tracing::warn!(
                data = %pg.cluster().data_dir().display(),
                "adopted the embedded Postgres left running by an earlier server; it is \
                 supervised and stopped with this one"
            );
        }
        tracing::info!(url = %pg.cluster().url("confab"), "embedded Postgres running");
        Some(pg)
    } else {
        None
    };
    let url = match &embedded {
        Some(pg) => {
            let cluster = pg.cluster();
            confab_schema::create_database(&cluster.url("postgres"), "confab", None).await?;
            cluster.url("confab")
        }
        None => settings.database.url.clone(),
    };
    let restarts = embedded.as_ref().map(SupervisedPostgres::restarts);
    let result = serve_with_database(settings, &url, restarts).await;
    if let Some(pg) = embedded {
        tracing::info!("stopping embedded Postgres");
        if let Err(err) = pg.stop().await {
            tracing::warn!(error = %err, "embedded Postgres did not stop cleanly");
        }
    }
    result
}

/// `embedded_restarts`: the embedded cluster's restart counter, exported with the server's
/// metrics.
async fn serve_with_database(
    settings: Settings,
    url: &str,
    embedded_restarts: Option<prometheus::IntCounter>,
) -> anyhow::Result<()> {
    let (listen, admin_listen) = (settings.server.listen, settings.admin.listen);
    let state = app::prepare(settings, url).await?;
    if let Some(counter) = embedded_restarts {
        state.metrics.register(counter);
    }
    let listeners = app::Listeners::bind(&state.settings)?;
    let running = app::serve(listeners, state)?;
    match admin_listen {
        Some(admin) => tracing::info!(
            %listen,
            %admin,
            server_name = %running.state.settings.server.name,
            "Confab is serving (admin API and metrics on the admin address only)"
        ),
        None => tracing::info!(
            %listen,
            server_name = %running.state.settings.server.name,
            "Confab is serving (admin.listen is empty: no admin API, no metrics)"
        ),
    }
    let handle = running.handle.clone();
    let engine = running.state.engine.clone();
    let federation_sender = running.state.federation_sender.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: telling clients to reconnect");
        engine.shutdown();
        // Queued federation events stay in the database for the next start.
        federation_sender.shutdown();
        handle.stop(true).await;
    });
    running.server.await?;
    if running.state.cluster.is_worker()
        && let Err(err) = running.state.cluster.retire(&running.state.pool).await
    {
        tracing::warn!(error = %err, "could not retire this worker; its lease runs out instead");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
