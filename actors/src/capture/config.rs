//! Tunables of the capture path. The server fills these from its config struct; the
//! defaults suit 256×192 frames at 30–60 fps.

use std::time::Duration;

use coherency_protocol::limits;

use crate::retry::RetryPolicy;

/// Everything a capture session can be tuned with.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// `welcome.window`: most unacked frames a phone may have in flight.
    pub window: u32,
    /// A chunk object holds at most this many frames…
    pub chunk_max_frames: usize,
    /// …and at most this many bytes (a single larger frame is a chunk of its own).
    pub chunk_max_bytes: usize,
    /// Zero (the default): group commit — a partial chunk is written as soon as nothing of
    /// the scan is in flight in the durable pipeline, so a frame waits at most for the
    /// write already under way. Otherwise a partial chunk waits until its oldest frame is
    /// this old (fewer, larger objects, e.g. for object stores billed per request; every
    /// ack then waits up to this long).
    pub flush_window: Duration,
    /// Chunks that may wait between the session and the blob writer, and between the blob
    /// writer and the index writer; beyond it the session keeps frames in its backlog.
    pub writer_queue_chunks: usize,
    /// Tell the phone `slow` (and stop answering the pump) once this many frames are
    /// received but not durable…
    pub slow_above_frames: usize,
    /// …or this many bytes.
    pub slow_above_bytes: usize,
    /// Send `resume` once the backlog is at most this many frames…
    pub resume_below_frames: usize,
    /// …and at most this many bytes.
    pub resume_below_bytes: usize,
    /// Retries of blob and index writes. When it gives up, the phone gets `unavailable`
    /// (close 1013) and resumes later; frames not yet durable are dropped by the server and
    /// resent by the phone.
    pub durable_retry: RetryPolicy,
    /// Retries of quality writes (derived data; long budget).
    pub quality_retry: RetryPolicy,
    /// Retries of loading the scan on attach and of status changes.
    pub control_retry: RetryPolicy,
    /// Most quality records waiting for MongoDB per session; more are dropped (and counted)
    /// to be rebuilt from the raw frames.
    pub quality_queue_cap: usize,
    /// Most quality records written in one call (a call also ends at the last seq of a
    /// storage bucket, `store::QUALITY_BUCKET_FRAMES`).
    pub quality_batch: usize,
    /// How long a quality write waits for the rest of its bucket after its first record.
    /// Long enough for a bucket of 32 frames to fill at 30 fps (≈ 1.07 s), so a steady
    /// stream writes each bucket once, whole — a bucket written in pieces costs the Mongo
    /// server a document rewrite per piece (`docs/performance.md` § Scan ingest). A scan
    /// slower than 16 fps writes its buckets in two pieces or more. When the stream finishes
    /// the last, partial bucket goes at once (the queue is closed). Quality records never
    /// hold up acks; only readers of the quality collection see them this much later.
    pub quality_linger: Duration,
    /// Records per outbox: a pump that falls this far behind is disconnected.
    pub outbox_capacity: usize,
    /// How often `progress` is sent while frames arrive (must be ≤ `PROGRESS_INTERVAL`).
    pub progress_every: Duration,
    /// Fuse frames into the scan's TSDF volume as they arrive (`crate::reconstruction`),
    /// so progress carries fused frames and coverage and finish only meshes and measures.
    pub live_fusion: bool,
    /// Most scans of this process fused live at once; a scan that starts beyond it streams
    /// without a live volume (progress without coverage) and is fused at finish, so a
    /// crowded node keeps its cores for acks.
    pub live_fusion_max_scans: usize,
    /// A session with no connection and nothing left to write stops after this long.
    pub idle_timeout: Duration,
    /// The same, once the stream has finished.
    pub finished_idle_timeout: Duration,
    /// Longest a session handing its scan over (another node takes it, or this node drains)
    /// spends making its received frames durable before it stops anyway; what is still not
    /// durable then is resent by the phone. Stays under the node bus's 3 s request timeout,
    /// so the node asking for the scan hears the answer.
    pub handover_timeout: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            window: limits::DEFAULT_WINDOW,
            chunk_max_frames: 8,
            chunk_max_bytes: 4 * 1024 * 1024,
            flush_window: Duration::ZERO,
            writer_queue_chunks: 4,
            slow_above_frames: 48,
            slow_above_bytes: 32 * 1024 * 1024,
            resume_below_frames: 16,
            resume_below_bytes: 8 * 1024 * 1024,
            durable_retry: RetryPolicy {
                initial: Duration::from_millis(20),
                max_delay: Duration::from_secs(1),
                give_up_after: Some(Duration::from_secs(30)),
            },
            quality_retry: RetryPolicy {
                initial: Duration::from_millis(50),
                max_delay: Duration::from_secs(5),
                give_up_after: Some(Duration::from_secs(3600)),
            },
            control_retry: RetryPolicy {
                initial: Duration::from_millis(20),
                max_delay: Duration::from_millis(500),
                give_up_after: Some(Duration::from_secs(5)),
            },
            quality_queue_cap: 4096,
            quality_batch: 64,
            quality_linger: Duration::from_secs(2),
            outbox_capacity: 256,
            progress_every: Duration::from_millis(100),
            live_fusion: true,
            live_fusion_max_scans: usize::MAX,
            idle_timeout: Duration::from_secs(60),
            finished_idle_timeout: Duration::from_secs(5),
            handover_timeout: Duration::from_secs(2),
        }
    }
}
