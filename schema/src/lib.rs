//! Confab's data layer. Postgres is reached only through this crate: the embedded migrations, the
//! diesel `schema`, the row models and every query. Query functions take `&mut AsyncPgConnection`
//! so that a caller can run several of them inside one transaction.

pub mod cluster;
pub mod models;
pub mod queries;
pub mod schema;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use diesel_async::{AsyncConnection, AsyncPgConnection};

/// The migrations under `schema/migrations`, compiled into the binary so that a server upgrades
/// its database on start-up with nothing else to install.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A pool of async Postgres connections.
pub type DbPool = Pool<AsyncPgConnection>;
/// A connection checked out of the pool; derefs to `AsyncPgConnection`.
pub type DbConn = Object<AsyncPgConnection>;

/// Everything that can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query failed (constraint, syntax, lost connection …).
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// No connection could be had from the pool (database down, or pool exhausted).
    #[error("no database connection: {0}")]
    Unavailable(String),
    /// The pool could not be built from the configuration.
    #[error("bad database configuration: {0}")]
    Config(String),
    /// A migration failed to apply.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl DbError {
    /// Whether the failure is the database being unreachable or too slow rather than a bad
    /// query: callers answer those with a retryable error.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::DatabaseErrorKind as Kind;
        match self {
            DbError::Unavailable(_) => true,
            // The connection broke under the query (no answer at all: socket closed, server gone).
            DbError::Query(diesel::result::Error::DatabaseError(
                Kind::ClosedConnection | Kind::UnableToSendCommand,
                _,
            )) => true,
            // The server answered that it is going away or not ready, or cancelled a statement
            // that waited too long for a lock. diesel-async keeps only the message of such an error, not its
            // SQLSTATE (55P03, 57P01-57P03, class 08), so these are recognised by Postgres's own
            // (untranslated, as `lc_messages` is C by default) wording; a translated one is
            // answered `internal`, as before.
            DbError::Query(diesel::result::Error::DatabaseError(Kind::Unknown, info)) => {
                const RETRYABLE: [&str; 7] = [
                    // `lock_timeout` (55P03): the statement waited too long for a lock.
                    "canceling statement due to lock timeout",
                    "terminating connection due to administrator command",
                    "terminating connection due to unexpected postmaster exit",
                    "the database system is shutting down",
                    "the database system is starting up",
                    "the database system is in recovery mode",
                    "the database system is not yet accepting connections",
                ];
                RETRYABLE.iter().any(|m| info.message().starts_with(m))
            }
            _ => false,
        }
    }
}

/// Builds a connection pool of at most `max_size` connections for `url`. Waiting for a free
/// connection, opening one and checking an idle one each give up after `timeout`, so that with
/// the database away (or the pool exhausted) callers get [`DbError::Unavailable`] promptly
/// instead of waiting for as long as it takes. Every connection runs with Postgres's
/// `lock_timeout` set to `lock_timeout`, so a statement stuck behind a lock another client holds
/// is cancelled (an error [`DbError::is_unavailable`] recognises) rather than holding its request
/// and its connection for good. (Not `statement_timeout`: Postgres arms a timer around every
/// statement for it, which cost a tenth of the federation benchmark's throughput here; the lock
/// timer is armed only when a statement actually waits, and every statement Confab runs is
/// bounded by an index and a limit, so waiting on a lock is the way one gets stuck.)
pub fn build_pool(
    url: &str,
    max_size: usize,
    timeout: std::time::Duration,
    lock_timeout: std::time::Duration,
) -> Result<DbPool, DbError> {
    let setup = format!("SET lock_timeout = {}", lock_timeout.as_millis().max(1));
    let mut config = ManagerConfig::default();
    // A checkout does not ask the server `SELECT 1` first: a connection whose server went away
    // (a Postgres restart, a killed backend) has its socket closed and is found broken without
    // it, and one that breaks silently fails its first statement and is dropped then. The test
    // query was a round trip and a statement for Postgres to run on every checkout, as many as
    // the statements themselves on the join path.
    config.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let setup = setup.clone();
        Box::pin(async move {
            use diesel_async::SimpleAsyncConnection;
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// Checks a connection out of the pool.
pub async fn connect(pool: &DbPool) -> Result<DbConn, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Applies every pending migration. Runs on a blocking thread because diesel's migration harness
/// is synchronous.
pub async fn run_migrations(url: &str) -> Result<(), DbError> {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    // Workers starting at once take turns; the lock goes with this session when it is dropped.
    conn.batch_execute(&format!(
        "SELECT pg_advisory_lock({})",
        cluster::locks::MIGRATIONS
    ))
    .await?;
    tokio::task::spawn_blocking(move || {
        let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
        harness
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|e| DbError::Migration(e.to_string()))
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))?
    .map(|applied| {
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
    })
}

/// Creates database `name` on the server behind `maintenance_url` (a URL for an existing
/// database such as `postgres`) unless it exists; with `template`, as a copy of that database,
/// which is how tests get a migrated database in milliseconds.
pub async fn create_database(
    maintenance_url: &str,
    name: &str,
    template: Option<&str>,
) -> Result<bool, DbError> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    if !is_plain_identifier(name) || template.is_some_and(|t| !is_plain_identifier(t)) {
        return Err(DbError::Config(format!("unsafe database name {name:?}")));
    }
    let mut conn = AsyncPgConnection::establish(maintenance_url)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(name)
            .get_result(&mut conn)
            .await?;
    if found.exists {
        return Ok(false);
    }
    // Database names cannot be bound as parameters; both were checked to be plain identifiers.
    let sql = match template {
        Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
        None => format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"),
    };
    diesel::sql_query(sql).execute(&mut conn).await?;
    Ok(true)
}

/// Drops database `name`, disconnecting whoever is still connected to it.
pub async fn drop_database(maintenance_url: &str, name: &str) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    if !is_plain_identifier(name) {
        return Err(DbError::Config(format!("unsafe database name {name:?}")));
    }
    let mut conn = AsyncPgConnection::establish(maintenance_url)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Checks that the database answers.
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute("SELECT 1").await?;
    Ok(())
}

fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
pub use diesel::result as diesel_error;

/// A short fingerprint of the embedded migrations: tests name their template database after it,
/// so a new migration gets a new template instead of a stale one.
pub fn migrations_fingerprint() -> String {
    use diesel::migration::MigrationSource;
    let names = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map(|ms| {
            ms.iter()
                .map(|m| m.name().to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let hash = names.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::DbError;
    use diesel::result::{DatabaseErrorKind as Kind, Error};

    fn db_error(kind: Kind, message: &str) -> DbError {
        DbError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn postgres_going_away_is_unavailable_and_a_bad_query_is_not() {
        for unavailable in [
            DbError::Unavailable("connection refused".into()),
            db_error(Kind::ClosedConnection, "closed"),
            db_error(Kind::UnableToSendCommand, "connection closed"),
            db_error(
                Kind::Unknown,
                "terminating connection due to administrator command",
            ),
            db_error(Kind::Unknown, "the database system is shutting down"),
            db_error(Kind::Unknown, "the database system is starting up"),
        ] {
            assert!(unavailable.is_unavailable(), "{unavailable}");
        }
        for other in [
            db_error(Kind::UniqueViolation, "duplicate key"),
            db_error(Kind::Unknown, "syntax error at or near \"SELEC\""),
            DbError::Query(Error::NotFound),
        ] {
            assert!(!other.is_unavailable(), "{other}");
        }
    }
}
