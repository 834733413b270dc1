//! Connections to the backing services, opened once at start and shared: PostgreSQL (system
//! of record), Redis (rate limits, presence, leases, bus), MongoDB (reconstruction and
//! activity documents) and the blob store (raw frames, meshes).

pub mod blob;
pub mod mongo;
pub mod pg;
pub mod redis;
pub mod scans;

use std::time::Duration;

use crate::config::Config;

/// A backing service could not be reached at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {service} at {url}: {reason}")]
pub struct Unreachable {
    pub service: &'static str,
    /// The URL with its password masked.
    pub url: String,
    pub reason: String,
}

/// Every backing service, connected.
#[derive(Clone)]
pub struct Stores {
    pub pg: sqlx::PgPool,
    pub redis: redis::Redis,
    pub mongo: mongodb::Database,
    pub blobs: blob::BlobStore,
}

/// How long start-up waits for each service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Stores {
    /// Connects to all four; the first that fails is named in the error.
    pub async fn connect(config: &Config) -> Result<Self, Unreachable> {
        let pg = pg::connect(config).await?;
        let redis = redis::Redis::connect(config).await?;
        let mongo = mongo::connect(config).await?;
        let blobs = blob::BlobStore::open(&config.blob_url, &config.node_name()).await?;
        Ok(Self { pg, redis, mongo, blobs })
    }

    /// Pings every service, each bounded by `timeout`; returns the names of those that failed.
    pub async fn readiness(&self, timeout: Duration) -> Vec<&'static str> {
        let (p, r, m, b) = tokio::join!(
            tokio::time::timeout(timeout, pg::ping(&self.pg)),
            tokio::time::timeout(timeout, self.redis.ping()),
            tokio::time::timeout(timeout, mongo::ping(&self.mongo)),
            tokio::time::timeout(timeout, self.blobs.ping()),
        );
        let mut failed = Vec::new();
        if !matches!(p, Ok(Ok(()))) {
            failed.push("postgres");
        }
        if !matches!(r, Ok(Ok(()))) {
            failed.push("redis");
        }
        if !matches!(m, Ok(Ok(()))) {
            failed.push("mongo");
        }
        if !matches!(b, Ok(Ok(()))) {
            failed.push("blob");
        }
        failed
    }
}
