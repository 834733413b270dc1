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
