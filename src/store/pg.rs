//! PostgreSQL pool and migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{Unreachable, CONNECT_TIMEOUT};
use crate::config::Config;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the pool and checks one connection works.
pub async fn connect(config: &Config) -> Result<PgPool, Unreachable> {
    let unreachable = |reason: String| Unreachable { service: "postgres", url: config.database_url.masked(), reason };
    let options: PgConnectOptions =
        config.database_url.expose().parse().map_err(|e: sqlx::Error| unreachable(e.to_string()))?;
    let options = options.application_name("coherency");
    let pool = PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(Duration::from_secs(300))
        .connect_with(options)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(pool)
}

/// Applies pending migrations; returns how many were applied now.
pub async fn migrate(pool: &PgPool) -> Result<usize, sqlx::migrate::MigrateError> {
    let before: i64 = applied_count(pool).await.unwrap_or(0);
    MIGRATOR.run(pool).await?;
    let after = applied_count(pool).await.unwrap_or(0);
    Ok((after - before).max(0) as usize)
}

async fn applied_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await
}

/// `SELECT 1`.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
