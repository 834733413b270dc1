//! The write paths under a capture session.
//!
//! Durable path: session → `BlobWriter` stage (chunk objects) → `PgWriter` stage (frame
//! index rows + `acked_seq` of a chunk, committed atomically; the server's index merges the
//! chunks of every scan that are ready at once into one transaction) → `Durable { up_to }`
//! back to the session, which then acks. The session cuts chunks by group commit (see
//! `CaptureSession::try_flush`), so under light load a chunk is one frame and under heavy
//! load chunks grow. Both stages are tokio tasks fed by bounded channels, so a slow
//! store fills the channels and the frames stay in the session's backlog, which drives
//! `slow`. Chunks are committed strictly in seq order, so `acked_seq` never covers a hole.
//! Each store call runs isolated ([`isolated`]): a panic is a transient failure and is
//! retried; if a stage task itself dies, the session is told and restarts the pipeline
//! (a new *generation*) and resubmits every frame that is not durable — writes are
//! idempotent on (scan, seq), so nothing is stored twice in the index.
//!
//! Quality path: records go through a bounded queue to one task that batches them by
//! storage bucket ([`crate::store::QUALITY_BUCKET_FRAMES`] consecutive seqs) and upserts
//! them, retrying for a long time (derived data must not hold up acks). When the queue is
//! full the newest record is dropped and counted: quality records are derived from the raw
//! frames and the reconstruction step rebuilds any that are missing. The task outlives its
//! session until its queue is written (or its retry budget runs out).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use bytes::Bytes;
use coherency_protocol::ids::ScanId;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metrics::SessionMetrics;
use crate::retry::{isolated, with_retry, RetryPolicy};
use crate::store::{
    quality_bucket, ChunkSpec, FrameCommit, FrameRow, FrameStore, QualityRecord, QualitySink, ScanIndex, StoreError,
    StoreKind,
};

/// One chunk object to write and index.
pub(crate) struct ChunkJob {
    pub spec: ChunkSpec,
    pub bytes: Bytes,
    /// SHA-256 of `bytes` when already known (a one-frame chunk: its frame's digest).
    pub sha256: Option<[u8; 32]>,
    pub rows: Vec<FrameRow>,
    /// When the oldest frame of the chunk was received.
    pub oldest: Instant,
}

/// What the durable pipeline reports to its session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum WriterEvent {
    /// Every frame up to `up_to` is durable.
    Durable { generation: u64, up_to: u64 },
    /// A write failed for good (permanent error, or the retry budget ran out).
    Failed { generation: u64, error: StoreError },
    /// A stage task ended unexpectedly (panic outside a store call).
    Crashed { generation: u64 },
}

/// A running durable pipeline. Dropping it aborts its tasks.
pub(crate) struct DurablePipeline {
    pub generation: u64,
    pub tx: mpsc::Sender<ChunkJob>,
    aborts: Vec<AbortHandle>,
}

impl Drop for DurablePipeline {
    fn drop(&mut self) {
        for a in &self.aborts {
            a.abort();
        }
    }
}

/// What the writers need.
#[derive(Clone)]
pub(crate) struct WriterDeps {
    pub frames: Arc<dyn FrameStore>,
    pub index: Arc<dyn ScanIndex>,
    pub metrics: Arc<dyn SessionMetrics>,
    pub retry: RetryPolicy,
    pub queue: usize,
}

pub(crate) fn spawn_durable(generation: u64, deps: WriterDeps, report: Recipient<WriterEvent>) -> DurablePipeline {
    let (tx, rx) = mpsc::channel::<ChunkJob>(deps.queue.max(1));
    let (pg_tx, pg_rx) = mpsc::channel(deps.queue.max(1));
    let blob = tokio::spawn(blob_stage(generation, deps.clone(), rx, pg_tx, report.clone()));
    let pg = tokio::spawn(pg_stage(generation, deps, pg_rx, report.clone()));
    let aborts = vec![blob.abort_handle(), pg.abort_handle()];
    // Supervision: a stage that dies of a panic is reported, and the session starts a new
    // generation. Aborted stages (pipeline dropped) are not reported.
    for handle in [blob, pg] {
        let report = report.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.await {
                if e.is_panic() {
                    report.do_send(WriterEvent::Crashed { generation });
                }
            }
        });
    }
    DurablePipeline { generation, tx, aborts }
}

async fn blob_stage(
    generation: u64,
    deps: WriterDeps,
    mut rx: mpsc::Receiver<ChunkJob>,
    pg_tx: mpsc::Sender<(ChunkJob, crate::store::StoredChunk)>,
    report: Recipient<WriterEvent>,
) {
    while let Some(job) = rx.recv().await {
        let stored = with_retry(
            &deps.retry,
            || {
                let frames = deps.frames.clone();
                let spec = job.spec;
                let (bytes, sha256) = (job.bytes.clone(), job.sha256);
                isolated(async move { frames.put_chunk(&spec, bytes, sha256).await })
            },
            |e, attempt| {
                deps.metrics.store_retry(StoreKind::Blob);
                tracing::warn!(scan_id = %job.spec.scan_id, attempt, error = %e, "blob write failed, retrying");
            },
        )
        .await;
        match stored {
            Ok(stored) => {
                if pg_tx.send((job, stored)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                report.do_send(WriterEvent::Failed { generation, error });
                return;
            }
        }
    }
}

async fn pg_stage(
    generation: u64,
    deps: WriterDeps,
    mut rx: mpsc::Receiver<(ChunkJob, crate::store::StoredChunk)>,
    report: Recipient<WriterEvent>,
) {
    while let Some((job, chunk)) = rx.recv().await {
        let commit =
            Arc::new(FrameCommit { scan_id: job.spec.scan_id, chunk, frames: job.rows, acked_seq: job.spec.last_seq });
        let res = with_retry(
            &deps.retry,
            || {
                let index = deps.index.clone();
                let commit = commit.clone();
                isolated(async move { index.commit_frames(&commit).await })
            },
            |e, attempt| {
                deps.metrics.store_retry(StoreKind::Index);
                tracing::warn!(scan_id = %commit.scan_id, attempt, error = %e, "index commit failed, retrying");
            },
        )
        .await;
        match res {
            Ok(()) => {
                let frames = job.spec.last_seq + 1 - job.spec.first_seq;
                deps.metrics.durable(frames, job.oldest.elapsed());
                report.do_send(WriterEvent::Durable { generation, up_to: job.spec.last_seq });
            }
            Err(error) => {
                report.do_send(WriterEvent::Failed { generation, error });
                return;
            }
        }
    }
}

/// The quality-record queue of one session.
pub(crate) struct QualityQueue {
    /// `None` once closed: the writer then sends what it holds and ends.
    tx: Option<mpsc::Sender<QualityRecord>>,
    dropped: Arc<AtomicU64>,
}

impl QualityQueue {
    pub fn spawn(
        scan_id: ScanId,
        sink: Arc<dyn QualitySink>,
        metrics: Arc<dyn SessionMetrics>,
        retry: RetryPolicy,
        cap: usize,
        batch: usize,
        linger: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(cap.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let shape = BatchShape { max: batch.max(1), linger };
        tokio::spawn(quality_task(scan_id, sink, metrics, retry, shape, rx, dropped.clone()));
        Self { tx: Some(tx), dropped }
    }

    /// Queues a record; when the queue is full (or closed) the record is dropped and
    /// counted.
    pub fn push(&self, record: QualityRecord, metrics: &dyn SessionMetrics) {
        let scan_id = record.scan_id;
        if self.tx.as_ref().is_none_or(|tx| tx.try_send(record).is_err()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics.quality_dropped(scan_id, 1);
        }
        metrics.quality_queue(scan_id, self.len());
    }

    /// Records waiting in the queue (0 once closed: the writer holds the rest).
    pub fn len(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// No more records will come: the writer writes what it holds without waiting for its
    /// linger, then ends.
    pub fn close(&mut self) {
        self.tx = None;
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How quality writes are batched: at most `max` records, gathered for at most `linger`
/// after the first, and never past the last seq of a storage bucket
/// ([`crate::store::QUALITY_BUCKET_FRAMES`]): a scan streaming steadily fills a bucket well
/// within the linger, so each bucket is written once, whole — one document for the Mongo
/// server to write instead of one per frame, or one partial bucket updated again and again.
#[derive(Clone, Copy)]
struct BatchShape {
    max: usize,
    linger: Duration,
}

impl BatchShape {
    /// Whether the batch, ending with `last`, is ready to write before the linger is up.
    fn complete(&self, len: usize, last: u64) -> bool {
        len >= self.max || quality_bucket(last).1 == last
    }
}

async fn quality_task(
    scan_id: ScanId,
    sink: Arc<dyn QualitySink>,
    metrics: Arc<dyn SessionMetrics>,
    retry: RetryPolicy,
    shape: BatchShape,
    mut rx: mpsc::Receiver<QualityRecord>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(shape.max);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        let until = tokio::time::Instant::now() + shape.linger;
        while !shape.complete(batch.len(), batch.last().map_or(0, |r: &QualityRecord| r.seq)) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                // Closed (the session ended) or lingered long enough: write what we have.
                Ok(None) | Err(_) => break,
            }
        }
        let records: Arc<[QualityRecord]> = batch.drain(..).collect();
        let res = with_retry(
            &retry,
            || {
                let sink = sink.clone();
                let records = records.clone();
                isolated(async move { sink.write_quality(&records).await })
            },
            |e, attempt| {
                metrics.store_retry(StoreKind::Quality);
                if attempt == 1 || attempt % 20 == 0 {
                    tracing::warn!(%scan_id, attempt, error = %e, "quality write failed, retrying");
                }
            },
        )
        .await;
        if let Err(e) = res {
            tracing::error!(%scan_id, records = records.len(), error = %e, "quality records dropped");
            dropped.fetch_add(records.len() as u64, Ordering::Relaxed);
            metrics.quality_dropped(scan_id, records.len() as u64);
        }
        metrics.quality_queue(scan_id, rx.len());
    }
}
