//! Hooks through which capture sessions report queue depths, lag and retries, so the server
//! can export them to Prometheus without this crate knowing about Prometheus.
//!
//! Calls are made from actor handlers and writer tasks: implementations must be cheap and
//! must not block (update an atomic or a gauge). Scan ids are passed for implementations
//! that aggregate per node; they are not meant as metric labels (unbounded cardinality).

use std::time::Duration;

use coherency_protocol::ids::ScanId;

use crate::store::StoreKind;

/// Receives capture metrics. Every method has a no-op default.
pub trait SessionMetrics: Send + Sync + 'static {
    /// A session started (`+1`) or stopped (`-1`).
    fn sessions(&self, _delta: i64) {}
    /// A session's durable-write backlog (frames received but not yet durable) changed.
    fn durable_backlog(&self, _scan_id: ScanId, _frames: usize, _bytes: usize) {}
    /// A session's quality-record queue depth changed (records waiting for MongoDB).
    fn quality_queue(&self, _scan_id: ScanId, _records: usize) {}
    /// A chunk of `frames` frames became durable; `lag` is the time from receipt of its
    /// oldest frame to the commit (frame → durable-ack latency, worst frame of the chunk).
    fn durable(&self, _frames: u64, _lag: Duration) {}
    /// A store call failed transiently and will be retried.
    fn store_retry(&self, _store: StoreKind) {}
    /// A session told its phone to slow down (`true`) or resume (`false`).
    fn flow(&self, _scan_id: ScanId, _slowed: bool) {}
    /// Quality records were dropped (queue full, or the sink failed for good).
    fn quality_dropped(&self, _scan_id: ScanId, _records: u64) {}
}

/// Discards every metric.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl SessionMetrics for NoMetrics {}
