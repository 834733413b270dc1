//! What the capture actors need from storage, as small async traits. `src/store` implements
//! them against the blob store, PostgreSQL and MongoDB; [`crate::testing`] has in-memory
//! fakes with fault injection. Actors never import the server crate.
//!
//! Every call is idempotent on its natural key, because writers retry, sessions restart and
//! phones resend: a chunk is keyed by (scan, first seq, last seq), a frame index row by
//! (scan, seq), a quality record by (scan, seq).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use coherency_protocol::ids::ScanId;
use coherency_protocol::{Code, ErrorCode};
use serde::{Deserialize, Serialize};

/// A storage failure, split by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: connection refused or reset, timeout, pool exhausted, serialisation
    /// failure, 5xx from an object store.
    #[error("transient store error: {0}")]
    Transient(String),
    /// Retrying will not help: constraint violation that is not a duplicate, bad
    /// configuration, permission denied, the scan does not exist.
    #[error("permanent store error: {0}")]
    Permanent(String),
}

impl StoreError {
    /// Whether the operation may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

impl ErrorCode for StoreError {
    fn code(&self) -> Code {
        match self {
            StoreError::Transient(_) => Code::Unavailable,
            StoreError::Permanent(_) => Code::Internal,
        }
    }
}

/// Which store an event is about (metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// The blob store ([`FrameStore`]).
    Blob,
    /// PostgreSQL ([`ScanIndex`]).
    Index,
    /// MongoDB ([`QualitySink`]).
    Quality,
}

impl StoreKind {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Blob => "blob",
            StoreKind::Index => "index",
            StoreKind::Quality => "quality",
        }
    }
}

// ---------------------------------------------------------------------------------------
// blob store
// ---------------------------------------------------------------------------------------

/// Which frames a chunk object holds: `first_seq..=last_seq` of one scan, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSpec {
    /// The scan.
    pub scan_id: ScanId,
    /// Seq of the first frame in the chunk.
    pub first_seq: u64,
    /// Seq of the last frame in the chunk.
    pub last_seq: u64,
}

impl ChunkSpec {
    /// The object key the in-memory store uses, and a sensible one for real stores:
    /// `scans/{scan_id}/frames/{first:012}-{last:012}.mpk`. Deterministic, so a retried
    /// write lands on the same object.
    pub fn suggested_key(&self) -> String {
        format!("scans/{}/frames/{:012}-{:012}.mpk", self.scan_id, self.first_seq, self.last_seq)
    }
}

/// A chunk object that is durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    /// The object key (relative to the store's root or prefix).
    pub key: String,
    /// SHA-256 of the whole object.
    pub sha256: [u8; 32],
    /// Object size in bytes.
    pub size: u64,
}

/// Raw frames, as the phone sent them, in the blob store.
///
/// A chunk's bytes are the concatenation of the frames' encoded `frame` messages (each a
/// MessagePack map exactly as received), so a chunk is a valid MessagePack stream and each
/// frame can be cut out with the offsets in its [`FrameRow`].
#[async_trait]
pub trait FrameStore: Send + Sync + 'static {
    /// Writes one chunk object and returns only once it is durable (written through to
    /// stable storage). Idempotent: writing the same spec again with the same bytes must
    /// succeed (overwrite or keep the existing object). `sha256`, when given, is the SHA-256
    /// of `bytes`, already computed by the caller (a one-frame chunk is its frame, which the
    /// session hashed on arrival); the store returns it instead of hashing the bytes again.
    async fn put_chunk(
        &self,
        spec: &ChunkSpec,
        bytes: Bytes,
        sha256: Option<[u8; 32]>,
    ) -> Result<StoredChunk, StoreError>;
}

// ---------------------------------------------------------------------------------------
// scan index (PostgreSQL)
// ---------------------------------------------------------------------------------------

/// A scan's lifecycle: `created → streaming → processing → complete | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    /// Created through the API; no frame yet.
    Created,
    /// A phone is (or was) streaming frames.
    Streaming,
    /// The stream finished; reconstruction is running.
    Processing,
    /// Reconstruction finished.
    Complete,
    /// Reconstruction or the stream failed for good.
    Failed,
    /// Cancelled through the API.
    Cancelled,
}

impl ScanStatus {
    /// The string used in the database, the API and `finished.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Created => "created",
            ScanStatus::Streaming => "streaming",
            ScanStatus::Processing => "processing",
            ScanStatus::Complete => "complete",
            ScanStatus::Failed => "failed",
            ScanStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the stream has ended successfully (a `hello` is answered with `finished`).
    pub fn stream_finished(self) -> bool {
        matches!(self, ScanStatus::Processing | ScanStatus::Complete)
    }

    /// Whether frames may still be streamed.
    pub fn streamable(self) -> bool {
        matches!(self, ScanStatus::Created | ScanStatus::Streaming)
    }
}

/// What the database knows about a scan's stream, loaded when a capture session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanState {
    /// Current status.
    pub status: ScanStatus,
    /// Highest seq such that every frame `1..=acked_seq` is indexed (0: none).
    pub acked_seq: u64,
}

/// One frame's index row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRow {
    /// The frame's seq.
    pub seq: u64,
    /// Byte offset of the frame's message inside the chunk object.
    pub offset: u64,
    /// Length of the frame's message in bytes.
    pub length: u64,
    /// SHA-256 of the frame's message bytes.
    pub sha256: [u8; 32],
    /// Capture time on the phone's clock, microseconds, as sent (`frame.ts`).
    pub captured_at_us: u64,
}

impl FrameRow {
    /// The capture time as a timestamp, when it is a plausible Unix time (the protocol only
    /// recommends the Unix epoch).
    pub fn captured_at(&self) -> Option<DateTime<Utc>> {
        let us = i64::try_from(self.captured_at_us).ok()?;
        DateTime::from_timestamp_micros(us).filter(|t| t.timestamp() > 946_684_800)
    }
}

/// One transaction's worth of index writes: a chunk's frame rows and the scan's new
/// `acked_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameCommit {
    /// The scan.
    pub scan_id: ScanId,
    /// The chunk object every row points into.
    pub chunk: StoredChunk,
    /// The chunk's frames, in seq order, contiguous.
    pub frames: Vec<FrameRow>,
    /// The scan's durable seq after this commit (the last row's seq). Frames are committed
    /// in order, so every frame up to it is indexed once this commit is.
    pub acked_seq: u64,
}

/// The system of record for frames and scan status (PostgreSQL).
#[async_trait]
pub trait ScanIndex: Send + Sync + 'static {
    /// The scan's status and durable seq. A capture session calls this when it starts; its
    /// `welcome.acked` comes from here.
    async fn load_scan(&self, scan_id: ScanId) -> Result<ScanState, StoreError>;

    /// In one transaction: insert the frame rows (idempotent on (scan, seq): an existing row
    /// is left as it is, `ON CONFLICT DO NOTHING`), set the chunk's metadata, set
    /// `acked_seq = GREATEST(acked_seq, commit.acked_seq)`, and move a `created` scan to
    /// `streaming`. Returns only once committed.
    async fn commit_frames(&self, commit: &FrameCommit) -> Result<(), StoreError>;

    /// Moves the scan to `status`. Idempotent. Setting `processing` records that the stream
    /// finished with every frame up to `acked_seq` durable.
    async fn set_status(&self, scan_id: ScanId, status: ScanStatus) -> Result<(), StoreError>;

    /// Moves a `processing` scan's `updated_at` to now, so it does not look abandoned while
    /// this node is still finishing it. Does nothing to a scan in another status.
    async fn touch_processing(&self, scan_id: ScanId) -> Result<(), StoreError>;

    /// Claims one scan left `processing` for longer than `stale` (the node finishing it
    /// stopped): its `updated_at` moves to now, so no other node claims it again before
    /// `stale` has passed once more. Answers the scan and its last durable seq.
    async fn claim_stale(&self, stale: std::time::Duration) -> Result<Option<(ScanId, u64)>, StoreError>;
}

// ---------------------------------------------------------------------------------------
// per-frame quality (MongoDB)
// ---------------------------------------------------------------------------------------

/// Per-frame capture quality, derived from the raw frame (so it can always be rebuilt from
/// the blob store). Stored in MongoDB, upserted on (scan_id, seq).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    /// The scan.
    pub scan_id: ScanId,
    /// The frame's seq.
    pub seq: u64,
    /// Phone capture time, microseconds.
    pub captured_at_us: u64,
    /// Depth image width and height.
    pub width: u32,
    /// Depth image height.
    pub height: u32,
    /// Fraction of pixels with valid depth, 0..=1.
    pub valid_fraction: f32,
    /// Median valid depth in metres.
    pub median_depth_m: Option<f32>,
    /// Camera translation since the previous accepted frame, millimetres.
    pub pose_jump_mm: Option<f32>,
    /// Camera rotation since the previous accepted frame, degrees.
    pub pose_jump_deg: Option<f32>,
    /// Whether the frame is good enough to fuse.
    pub accepted: bool,
    /// Capture warnings raised by this frame (strings from `scan::warning`).
    pub warnings: Vec<String>,
}

impl QualityRecord {
    /// The record of `frame` as [`crate::stats::CaptureStats`] judged it (`v`).
    pub fn of(scan_id: ScanId, frame: &coherency_protocol::scan::DepthFrame, v: &crate::stats::FrameVerdict) -> Self {
        QualityRecord {
            scan_id,
            seq: frame.seq,
            captured_at_us: frame.captured_at_us,
            width: frame.width,
            height: frame.height,
            valid_fraction: v.depth.valid_fraction,
            median_depth_m: v.depth.median_m,
            pose_jump_mm: v.jump.map(|j| j.translation_mm),
            pose_jump_deg: v.jump.map(|j| j.rotation_deg),
            accepted: v.accepted,
            warnings: v.warnings.iter().map(|w| (*w).to_owned()).collect(),
        }
    }
}

/// Quality records are stored in buckets of this many consecutive seqs of one scan: bucket
/// `k` holds seqs `k·32 + 1 ..= (k + 1)·32` (MongoDB: one document per bucket, see
/// `docs/api.md` § Scans). The quality writer ends a batch at a bucket's last seq, so a
/// steadily streaming scan writes each bucket once, whole: the Mongo server's cost is per
/// document written, not per record (`docs/performance.md` § Scan ingest).
pub const QUALITY_BUCKET_FRAMES: u64 = 32;

/// The bucket holding `seq`: its first and last seq (seq 0, never sent, maps to bucket 0).
pub fn quality_bucket(seq: u64) -> (u64, u64) {
    let first = seq.saturating_sub(1) / QUALITY_BUCKET_FRAMES * QUALITY_BUCKET_FRAMES + 1;
    (first, first.saturating_add(QUALITY_BUCKET_FRAMES - 1))
}

/// Where per-frame quality records go (MongoDB). Derived data: writes may fail and are
/// retried without holding up acks.
#[async_trait]
pub trait QualitySink: Send + Sync + 'static {
    /// Upserts the records on (scan_id, seq): a record written again replaces the earlier
    /// one, records of other seqs are kept. The records may span several buckets
    /// ([`QUALITY_BUCKET_FRAMES`]). Returns once acknowledged by the database.
    async fn write_quality(&self, records: &[QualityRecord]) -> Result<(), StoreError>;
}

// ---------------------------------------------------------------------------------------
// finish hook
// ---------------------------------------------------------------------------------------

/// A scan whose stream has finished: every frame `1..=last_seq` is durable and the scan
/// is `processing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedScan {
    /// The scan's live fusion, if the session ran one (`None` with `live_fusion` off).
    pub live: Option<crate::reconstruction::LiveScan>,
    /// The scan.
    pub scan_id: ScanId,
    /// Seq of the last frame (also the number of frames).
    pub last_seq: u64,
    /// Quality records that could not be queued (queue full) and must be rebuilt from the
    /// raw frames; 0 normally.
    pub quality_dropped: u64,
}

/// Runs `hook` on a finished scan and records the outcome through `index`: `complete`, or
/// `failed` when the hook fails (a panic counts as a failure), the status write retried
/// with `retry`. The capture session calls it when a stream finishes; a node taking over a
/// scan that another node left `processing` calls it too.
pub async fn process_finished(
    hook: Arc<dyn FinishHook>,
    index: Arc<dyn ScanIndex>,
    retry: &crate::retry::RetryPolicy,
    scan: FinishedScan,
) -> ScanStatus {
    use crate::retry::{isolated, with_retry};
    let scan_id = scan.scan_id;
    let outcome = match isolated(async move { hook.on_finish(scan).await }).await {
        Ok(()) => ScanStatus::Complete,
        Err(e) => {
            tracing::error!(%scan_id, error = %e, "processing failed");
            ScanStatus::Failed
        }
    };
    let res = with_retry(
        retry,
        || {
            let index = index.clone();
            isolated(async move { index.set_status(scan_id, outcome).await })
        },
        |_, _| {},
    )
    .await;
    if let Err(e) = res {
        tracing::error!(%scan_id, error = %e, "could not record the end of processing");
    }
    outcome
}

/// What happens after the stream finishes: [`crate::reconstruction::Reconstructor`] on a
/// serving node (fusion, surface extraction and measurement), [`NoReconstruction`] in tests
/// of the capture path alone.
#[async_trait]
pub trait FinishHook: Send + Sync + 'static {
    /// Runs once per finished stream (per capture session). `Ok` moves the scan to
    /// `complete`, `Err` to `failed`.
    async fn on_finish(&self, scan: FinishedScan) -> Result<(), StoreError>;
}

/// Hears each live scan's progress, the same figures the phone is sent (at the session's
/// progress rate). Called on the session's thread: it must only record, never block.
pub trait ProgressObserver: Send + Sync + 'static {
    fn progress(&self, scan_id: ScanId, progress: &coherency_protocol::scan::Progress);
}

/// Hears nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl ProgressObserver for NoObserver {
    fn progress(&self, _: ScanId, _: &coherency_protocol::scan::Progress) {}
}

/// The placeholder hook: nothing to do yet, the scan completes at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReconstruction;

#[async_trait]
impl FinishHook for NoReconstruction {
    async fn on_finish(&self, _scan: FinishedScan) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_buckets_are_aligned_runs_of_consecutive_seqs() {
        assert_eq!(quality_bucket(1), (1, 32));
        assert_eq!(quality_bucket(32), (1, 32));
        assert_eq!(quality_bucket(33), (33, 64));
        assert_eq!(quality_bucket(0), (1, 32));
        // Never panics, even for a seq no phone can reach.
        let (first, last) = quality_bucket(u64::MAX);
        assert_eq!((first % QUALITY_BUCKET_FRAMES, last), (1, u64::MAX));
    }
}
