//! PostgreSQL pool and migrations.
//!
//! A pooled connection's socket answers through the runtime thread that opened it, whichever
//! thread uses it later. The pool is opened, and migrations run, on the store I/O runtime
//! ([`super::io_runtime`]): the connections made at start-up, which every thread then takes
//! from the pool, never wait for a busy request worker or the main thread.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::{Unreachable, CONNECT_TIMEOUT};
use crate::config::Config;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Longest one SQL statement may run (`statement_timeout` on every pooled connection): a
/// statement stuck behind a lock, or on a starved server, fails (503 `unavailable` in a
/// request) instead of holding its request and its connection for as long as it lasts.
/// Migrations run without it.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLSTATE of a statement cancelled by `statement_timeout` (`query_canceled`).
pub const QUERY_CANCELED: &str = "57014";

/// What a failed statement means for the caller, decided once for every caller (the error
/// envelope's `StorageError`, the booking store): the pool or the server is busy, the statement
/// ran out of time, the database refused a value it was given, or something is wrong inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    Busy,
    TimedOut,
    RefusedValue,
    Internal,
}

impl DbFailure {
    pub fn of(e: &sqlx::Error) -> Self {
        if let sqlx::Error::PoolTimedOut = e {
            return Self::Busy;
        }
        let sqlx::Error::Database(db) = e else { return Self::Internal };
        let Some(state) = db.code() else { return Self::Internal };
        if state == QUERY_CANCELED {
            return Self::TimedOut;
        }
        if REFUSED_VALUE_STATES.contains(&state.as_ref()) {
            // The backstop for input the boundary should have refused: logged by SQLSTATE
            // only (the database's message may quote the value), because each one is a
            // missing bound to add at the boundary.
            tracing::warn!(sqlstate = %state, "the database refused a value from a request; a bound is missing at the boundary");
            return Self::RefusedValue;
        }
        Self::Internal
    }

    /// The catalogue code a client gets.
    pub fn code(self) -> coherency_protocol::Code {
        use coherency_protocol::Code;
        match self {
            Self::Busy | Self::TimedOut => Code::Unavailable,
            Self::RefusedValue => Code::BadRequest,
            Self::Internal => Code::Internal,
        }
    }

    /// The message a client gets (an internal failure's cause is logged, never sent).
    pub fn message(self) -> &'static str {
        match self {
            Self::Busy => "the database is not answering; try again",
            Self::TimedOut => "the database did not answer in time; try again",
            Self::RefusedValue => "the request holds a value that cannot be stored",
            Self::Internal => "internal error",
        }
    }
}

/// SQLSTATEs by which PostgreSQL refuses a value a statement was given (rather than failing
/// itself): bad characters or encoding (22021, 22P05), text too long for its column (22001), a
/// number or date out of range (22003, 22008), text that does not parse as its type (22P02,
/// 22007), a bad LIKE escape (22025, 22019), and a value too large to index (54000). They
/// answer 400, not 500.
const REFUSED_VALUE_STATES: &[&str] =
    &["22021", "22P05", "22001", "22003", "22008", "22P02", "22007", "22025", "22019", "54000"];

/// Opens the pool and checks one connection works.
pub async fn connect(config: &Config) -> Result<PgPool, Unreachable> {
    let unreachable = |reason: String| Unreachable { service: "postgres", url: config.database_url.masked(), reason };
    let options: PgConnectOptions =
        config.database_url.expose().parse().map_err(|e: sqlx::Error| unreachable(e.to_string()))?;
    let options = options
        .application_name("coherency")
        .options([("statement_timeout", STATEMENT_TIMEOUT.as_millis().to_string())]);
    let pool = PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(Duration::from_secs(300));
    super::on_io(pool.connect_with(options)).await.map_err(|e| unreachable(e.to_string()))
}

/// Applies pending migrations on a connection of their own, without [`STATEMENT_TIMEOUT`]
/// (a migration may rewrite a large table); returns how many were applied now.
pub async fn migrate(pool: &PgPool) -> Result<usize, sqlx::migrate::MigrateError> {
    let options = pool.connect_options();
    super::on_io(async move {
        let mut conn = PgConnection::connect_with(&options).await?;
        sqlx::query!("SET statement_timeout = 0").execute(&mut conn).await?;
        let before: i64 = applied_count(&mut conn).await.unwrap_or(0);
        MIGRATOR.run_direct(&mut conn).await?;
        let after = applied_count(&mut conn).await.unwrap_or(0);
        let _ = conn.close().await;
        Ok((after - before).max(0) as usize)
    })
    .await
}

async fn applied_count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "applied!" FROM _sqlx_migrations WHERE success"#).fetch_one(conn).await
}

/// `SELECT 1`.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT 1 AS one").fetch_one(pool).await.map(|_| ())
}
