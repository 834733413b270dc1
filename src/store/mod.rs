//! Connections to the backing services, opened once at start and shared: PostgreSQL (system
//! of record), Redis (rate limits, presence, leases, bus), MongoDB (reconstruction and
//! activity documents) and the blob store (raw frames, meshes).
//!
//! The Redis connection and the MongoDB client are driven by [`io_runtime`], a small runtime
//! of their own, not by whichever runtime thread opened them: the node's request workers,
//! socket arbiters and main thread all share these connections, and a shared connection
//! whose I/O only one of those threads could drive would stall everyone's calls while that
//! thread was busy (CPU starvation, a long synchronous step).

pub mod blob;
pub mod booking;
pub mod capture_codes;
pub mod measurements;
pub mod mongo;
pub mod patient_names;
pub mod pg;
pub mod photos;
pub mod reconstruction;
pub mod redis;
pub mod scans;
pub mod users;
pub mod wounds;

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

/// Threads of [`io_runtime`].
const IO_THREADS: usize = 2;

/// The process-wide runtime that drives the shared store connections (`store-io` threads).
/// It only moves bytes between sockets and waiting callers: nothing CPU-bound runs on it.
pub fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("store-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the store I/O runtime: {e}"))
    })
}

/// Runs `f` on [`io_runtime`] and waits for it from the caller's runtime: whatever `f`
/// spawns (a connection's driver, a client's monitors) lives there.
pub async fn on_io<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    match io_runtime().spawn(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => unreachable!("the store I/O runtime never shuts down or cancels"),
    }
}

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
