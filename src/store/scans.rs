//! Scans in storage: the `scans` / `scan_frames` / `scan_chunks` tables (PostgreSQL, the
//! system of record), raw frame chunks in the blob store, and per-frame quality records in
//! MongoDB (`scan_quality_buckets`, one document per 32 frames). Implements the capture
//! actors' storage traits ([`ScanIndex`], [`FrameStore`], [`QualitySink`]) and the queries
//! the scan API needs.
//!
//! Error messages never carry PHI or database values: only the store, the kind of failure
//! and, for PostgreSQL, the SQLSTATE. Connection-level failures are `Transient` (the writers
//! retry them); everything else is `Permanent`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use coherency_actors::reconstruction::FrameLocation;
use coherency_actors::store::{
    quality_bucket, ChunkSpec, FrameCommit, FrameStore, QualityRecord, QualitySink, ScanIndex, ScanState, ScanStatus,
    StoreError, StoredChunk,
};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::DepthFrame;
use mongodb::bson::{doc, Document};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, OnceCell};
use uuid::Uuid;

use super::blob::BlobStore;
use crate::clock::Clock;

/// The MongoDB collection holding per-frame quality records, bucketed
/// ([`MongoQualitySink`]). It replaced `scan_frame_quality` (one document per frame), which
/// is no longer written; its documents are derived data and may be dropped.
pub const QUALITY_COLLECTION: &str = "scan_quality_buckets";

// ---------------------------------------------------------------------------------------
// error mapping
// ---------------------------------------------------------------------------------------

/// Classifies a PostgreSQL error without echoing its message (which can quote values).
pub fn pg_error(e: &sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            StoreError::Transient(format!("postgres: {}", pg_kind(e)))
        }
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 08: connection exception; 40001 / 40P01: serialisation failure / deadlock;
            // 53: insufficient resources; 57P01-57P03: admin shutdown, crash, cannot connect now.
            let transient = code.starts_with("08")
                || code.starts_with("53")
                || matches!(code.as_str(), "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03");
            let msg = format!("postgres: database error {code}");
            if transient {
                StoreError::Transient(msg)
            } else {
                StoreError::Permanent(msg)
            }
        }
        _ => StoreError::Permanent(format!("postgres: {}", pg_kind(e))),
    }
}

fn pg_kind(e: &sqlx::Error) -> &'static str {
    use sqlx::Error as E;
    match e {
        E::Io(_) => "connection i/o error",
        E::Tls(_) => "tls error",
        E::PoolTimedOut => "pool timed out",
        E::PoolClosed => "pool closed",
        E::WorkerCrashed => "connection worker crashed",
        E::Protocol(_) => "protocol error",
        E::RowNotFound => "row not found",
        E::ColumnDecode { .. } | E::Decode(_) => "decode error",
        _ => "error",
    }
}

/// Classifies a MongoDB error. Anything that is not a programming or configuration error
/// is worth retrying: quality records are derived data with a long retry budget.
pub fn mongo_error(e: &mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind as K;
    match &*e.kind {
        K::InvalidArgument { .. } | K::BsonSerialization(_) | K::BsonDeserialization(_) | K::Authentication { .. } => {
            StoreError::Permanent("mongo: request refused".into())
        }
        K::Io(_) | K::ServerSelection { .. } | K::ConnectionPoolCleared { .. } => {
            StoreError::Transient("mongo: unreachable".into())
        }
        _ => StoreError::Transient("mongo: error".into()),
    }
}

/// Classifies a blob store error.
pub fn blob_error(e: &object_store::Error) -> StoreError {
    use object_store::Error as E;
    match e {
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => StoreError::Permanent("blob: request refused".into()),
        _ => StoreError::Transient("blob: write failed".into()),
    }
}

// ---------------------------------------------------------------------------------------
// FrameStore over the blob store
// ---------------------------------------------------------------------------------------

/// Raw frame chunks in the blob store, written through to stable storage.
#[derive(Clone)]
pub struct BlobFrameStore {
    blobs: BlobStore,
}

impl BlobFrameStore {
    pub fn new(blobs: BlobStore) -> Self {
        Self { blobs }
    }
}

#[async_trait]
impl FrameStore for BlobFrameStore {
    async fn put_chunk(
        &self,
        spec: &ChunkSpec,
        bytes: Bytes,
        sha256: Option<[u8; 32]>,
    ) -> Result<StoredChunk, StoreError> {
        let key = spec.suggested_key();
        let stored = self.blobs.put_durable_hashed(&key, bytes, sha256).await.map_err(|e| blob_error(&e))?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&stored.sha256, &mut sha256)
            .map_err(|_| StoreError::Permanent("blob: bad digest".into()))?;
        Ok(StoredChunk { key: stored.key, sha256, size: stored.size })
    }
}

// ---------------------------------------------------------------------------------------
// ScanIndex over PostgreSQL
// ---------------------------------------------------------------------------------------

/// Most frame commits merged into one transaction by the group-commit task.
const GROUP_COMMIT_MAX: usize = 256;

/// Hears a scan's progress and status changes as the index stores them (the dashboard's
/// publisher), so the store does not depend on who listens.
#[async_trait]
pub trait ScanLifecycle: Send + Sync {
    /// Frames up to `acked` are durable.
    async fn progress(&self, scan: ScanId, acked: u64);
    /// The scan moved to `status`.
    async fn status(&self, scan: ScanId, status: &str);
}

/// The frame index and scan status in PostgreSQL.
///
/// Frame commits from every capture session of the node go through one group-commit task:
/// it takes whatever commits are waiting, writes them in one transaction (three statements
/// whatever the number of scans), and answers each caller only once that transaction has
/// committed. While a transaction is in flight the next commits queue up, so under load one
/// WAL flush covers many scans, and alone a commit waits for nothing.
#[derive(Clone)]
pub struct PgScanIndex {
    pool: PgPool,
    clock: Clock,
    commits: mpsc::Sender<PendingCommit>,
    events: Option<Arc<dyn ScanLifecycle>>,
}

/// A frame commit waiting for the group-commit task, and who to tell.
struct PendingCommit {
    commit: FrameCommit,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Longest a dashboard event may hold up a commit or status change.
const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

impl PgScanIndex {
    /// Starts the group-commit task on the store I/O runtime (every phone's acks wait for
    /// it, so it must not share a thread with other work); it ends when every handle is
    /// dropped.
    pub fn new(pool: PgPool, clock: Clock) -> Self {
        let (commits, rx) = mpsc::channel(GROUP_COMMIT_MAX * 4);
        super::io_runtime().spawn(group_commit_task(pool.clone(), clock.clone(), rx));
        Self { pool, clock, commits, events: None }
    }

    /// Also publishes progress and status changes for the dashboard.
    pub fn with_events(mut self, events: impl ScanLifecycle + 'static) -> Self {
        self.events = Some(Arc::new(events));
        self
    }
}

async fn group_commit_task(pool: PgPool, clock: Clock, mut rx: mpsc::Receiver<PendingCommit>) {
    let mut batch: Vec<PendingCommit> = Vec::with_capacity(GROUP_COMMIT_MAX);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let commits: Vec<&FrameCommit> = batch.iter().map(|p| &p.commit).collect();
        let res = commit_isolated(&pool, &clock, &commits).await;
        match res {
            // A permanent error (a scan that no longer exists, a constraint) must not fail
            // the other scans of the batch: each is tried on its own.
            Err(StoreError::Permanent(_)) if batch.len() > 1 => {
                for p in batch.drain(..) {
                    let res = commit_isolated(&pool, &clock, &[&p.commit]).await;
                    let _ = p.done.send(res);
                }
            }
            res => {
                for p in batch.drain(..) {
                    let _ = p.done.send(res.clone());
                }
            }
        }
    }
}

/// [`commit_batch`], with a panic turned into a transient error so the task lives on.
async fn commit_isolated(pool: &PgPool, clock: &Clock, commits: &[&FrameCommit]) -> Result<(), StoreError> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(commit_batch(pool, clock, commits))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Transient("postgres: index commit panicked".into())))
}

/// One transaction for the frame rows, chunks and `acked_seq` of several commits (any
/// scans). Idempotent, like each commit alone: chunks are upserted on their key, frame rows
/// kept on (scan, seq), `acked_seq` only moves forward.
async fn commit_batch(pool: &PgPool, clock: &Clock, commits: &[&FrameCommit]) -> Result<(), StoreError> {
    let mut chunks: BTreeMap<&str, (Uuid, String, i64)> = BTreeMap::new();
    let mut acked: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut seen = HashSet::new();
    let n: usize = commits.iter().map(|c| c.frames.len()).sum();
    let mut scan_ids = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut chunk_keys = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity(n);
    let mut lengths = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut captured_us = Vec::with_capacity(n);
    let mut captured_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    for c in commits {
        let scan = c.scan_id.as_uuid();
        chunks.insert(&c.chunk.key, (scan, hex::encode(c.chunk.sha256), to_i64(c.chunk.size)));
        let a = acked.entry(scan).or_insert(0);
        *a = (*a).max(to_i64(c.acked_seq));
        for f in &c.frames {
            if !seen.insert((scan, f.seq)) {
                continue;
            }
            scan_ids.push(scan);
            seqs.push(to_i64(f.seq));
            chunk_keys.push(c.chunk.key.as_str());
            offsets.push(to_i64(f.offset));
            lengths.push(to_i64(f.length));
            hashes.push(hex::encode(f.sha256));
            captured_us.push(to_i64(f.captured_at_us));
            captured_at.push(f.captured_at());
        }
    }
    let mut chunk_keys_u = Vec::with_capacity(chunks.len());
    let mut chunk_scans = Vec::with_capacity(chunks.len());
    let mut chunk_hashes = Vec::with_capacity(chunks.len());
    let mut chunk_sizes = Vec::with_capacity(chunks.len());
    for (key, (scan, sha, size)) in chunks {
        chunk_keys_u.push(key);
        chunk_scans.push(scan);
        chunk_hashes.push(sha);
        chunk_sizes.push(size);
    }
    let (acked_ids, acked_seqs): (Vec<Uuid>, Vec<i64>) = acked.into_iter().unzip();
    let now = clock.now();
    let mut tx = pool.begin().await.map_err(|e| pg_error(&e))?;
    sqlx::query!(
        "INSERT INTO scan_chunks (key, scan_id, sha256, size)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::bigint[])
         ON CONFLICT (key) DO UPDATE SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size",
        chunk_keys_u.as_slice() as &[&str],
        &chunk_scans,
        &chunk_hashes,
        &chunk_sizes,
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| pg_error(&e))?;
    sqlx::query!(
        r#"INSERT INTO scan_frames (scan_id, seq, chunk_key, "offset", length, sha256, captured_us, captured_at)
           SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
                                $7::bigint[], $8::timestamptz[])
           ON CONFLICT (scan_id, seq) DO NOTHING"#,
        &scan_ids,
        &seqs,
        chunk_keys.as_slice() as &[&str],
        &offsets,
        &lengths,
        &hashes,
        &captured_us,
        // `captured_at` is NULL where the phone's clock is implausible
        captured_at.as_slice() as &[Option<DateTime<Utc>>],
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| pg_error(&e))?;
    let updated = sqlx::query!(
        "UPDATE scans AS s SET acked_seq = GREATEST(s.acked_seq, u.acked),
                status = CASE WHEN s.status = 'created' THEN 'streaming' ELSE s.status END,
                updated_at = $3
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, acked)
         WHERE s.id = u.id",
        &acked_ids,
        &acked_seqs,
        now,
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| pg_error(&e))?;
    if updated.rows_affected() != acked_ids.len() as u64 {
        return Err(StoreError::Permanent("postgres: no such scan".into()));
    }
    tx.commit().await.map_err(|e| pg_error(&e))?;
    Ok(())
}

fn parse_status(s: &str) -> Result<ScanStatus, StoreError> {
    Ok(match s {
        "created" => ScanStatus::Created,
        "streaming" => ScanStatus::Streaming,
        "processing" => ScanStatus::Processing,
        "complete" => ScanStatus::Complete,
        "failed" => ScanStatus::Failed,
        "cancelled" => ScanStatus::Cancelled,
        _ => return Err(StoreError::Permanent("postgres: unknown scan status".into())),
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl ScanIndex for PgScanIndex {
    async fn load_scan(&self, scan_id: ScanId) -> Result<ScanState, StoreError> {
        let row = sqlx::query!("SELECT status, acked_seq FROM scans WHERE id = $1", scan_id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| pg_error(&e))?
            .ok_or_else(|| StoreError::Permanent("postgres: no such scan".into()))?;
        Ok(ScanState { status: parse_status(&row.status)?, acked_seq: u64::try_from(row.acked_seq).unwrap_or(0) })
    }

    async fn commit_frames(&self, commit: &FrameCommit) -> Result<(), StoreError> {
        let gone = || StoreError::Transient("postgres: group commit stopped".into());
        let (done, answer) = oneshot::channel();
        self.commits.send(PendingCommit { commit: commit.clone(), done }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())??;
        if let Some(ev) = self.events.clone() {
            // Off the ack path: the board may lag a little, the phone's ack must not.
            let (scan, acked) = (commit.scan_id, commit.acked_seq);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(EVENT_TIMEOUT, ev.progress(scan, acked)).await;
            });
        }
        Ok(())
    }

    async fn set_status(&self, scan_id: ScanId, status: ScanStatus) -> Result<(), StoreError> {
        let now = self.clock.now();
        let finished = matches!(status, ScanStatus::Processing);
        let res = sqlx::query!(
            "UPDATE scans SET status = $2, updated_at = $3,
                    finished_at = CASE WHEN $4 THEN coalesce(finished_at, $3) ELSE finished_at END
             WHERE id = $1",
            scan_id.as_uuid(),
            status.as_str(),
            now,
            finished,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| pg_error(&e))?;
        if res.rows_affected() != 1 {
            return Err(StoreError::Permanent("postgres: no such scan".into()));
        }
        if let Some(ev) = &self.events {
            let _ = tokio::time::timeout(EVENT_TIMEOUT, ev.status(scan_id, status.as_str())).await;
        }
        Ok(())
    }

    async fn touch_processing(&self, scan_id: ScanId) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE scans SET updated_at = $2 WHERE id = $1 AND status = 'processing'",
            scan_id.as_uuid(),
            self.clock.now(),
        )
        .execute(&self.pool)
        .await
        .map_err(|e| pg_error(&e))?;
        Ok(())
    }

    async fn claim_stale(&self, stale: std::time::Duration) -> Result<Option<(ScanId, u64)>, StoreError> {
        let now = self.clock.now();
        let cutoff = now - chrono::Duration::from_std(stale).unwrap_or(chrono::Duration::MAX);
        let row = sqlx::query!(
            "UPDATE scans SET updated_at = $1
             WHERE id = (SELECT id FROM scans WHERE status = 'processing' AND updated_at < $2
                         ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, acked_seq",
            now,
            cutoff,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| pg_error(&e))?;
        Ok(row.map(|r| (ScanId::from_uuid(r.id), u64::try_from(r.acked_seq).unwrap_or(0))))
    }
}

impl PgScanIndex {
    /// Where the scan's stored `frame` messages are, in seq order (`scan_frames`).
    pub async fn locate_frames(&self, scan_id: ScanId) -> Result<Vec<FrameLocation>, StoreError> {
        locate_frames(&self.pool, scan_id).await
    }
}

/// Where the scan's stored `frame` messages are, in seq order (`scan_frames`).
pub async fn locate_frames(pool: &PgPool, scan_id: ScanId) -> Result<Vec<FrameLocation>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT seq, chunk_key, "offset", length FROM scan_frames WHERE scan_id = $1 ORDER BY seq"#,
        scan_id.as_uuid(),
    )
    .fetch_all(pool)
    .await
    .map_err(|e| pg_error(&e))?;
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
    Ok(rows
        .into_iter()
        .map(|r| FrameLocation {
            seq: u64::try_from(r.seq).unwrap_or(0),
            chunk_key: r.chunk_key,
            offset: unsigned(r.offset),
            length: unsigned(r.length),
        })
        .collect())
}

/// One stored `frame` message cut from its chunk object and decoded.
pub fn frame_in_chunk(chunk: &[u8], offset: u64, length: u64) -> Result<DepthFrame, StoreError> {
    let range = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(length).ok())
        .and_then(|(a, n)| a.checked_add(n).map(|b| a..b))
        .filter(|r| r.end <= chunk.len())
        .ok_or_else(|| StoreError::Permanent("blob: stored frame outside its chunk".into()))?;
    match coherency_protocol::scan::decode_client(&chunk[range]) {
        Ok(coherency_protocol::scan::ClientMsg::Frame(f)) => Ok(*f),
        _ => Err(StoreError::Permanent("blob: stored frame does not decode".into())),
    }
}

/// Frame `seq` of the scan as the phone sent it (`None` when no such frame is stored):
/// one index row, one chunk read.
pub async fn read_frame(
    pg: &PgPool,
    blobs: &BlobStore,
    scan_id: ScanId,
    seq: u64,
) -> Result<Option<DepthFrame>, StoreError> {
    let Some((key, offset, length)) = frame_location(pg, scan_id, seq).await? else { return Ok(None) };
    let chunk = blobs.get(&key).await.map_err(|e| blob_error(&e))?;
    frame_in_chunk(&chunk, offset, length).map(Some)
}

/// Where one stored `frame` message of the scan is: (chunk key, offset, length).
pub async fn frame_location(pg: &PgPool, scan_id: ScanId, seq: u64) -> Result<Option<(String, u64, u64)>, StoreError> {
    let Ok(seq) = i64::try_from(seq) else { return Ok(None) };
    let row = sqlx::query!(
        r#"SELECT chunk_key, "offset", length FROM scan_frames WHERE scan_id = $1 AND seq = $2"#,
        scan_id.as_uuid(),
        seq,
    )
    .fetch_optional(pg)
    .await
    .map_err(|e| pg_error(&e))?;
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
    Ok(row.map(|r| (r.chunk_key, unsigned(r.offset), unsigned(r.length))))
}

// ---------------------------------------------------------------------------------------
// QualitySink over MongoDB
// ---------------------------------------------------------------------------------------

/// Per-frame quality records in MongoDB, one document per scan per bucket of
/// [`coherency_actors::store::QUALITY_BUCKET_FRAMES`] consecutive seqs:
///
/// ```text
/// { _id: "<scan>:<first seq, 12 digits>", scan_id: "<scan>", first_seq: 33, last_seq: 64,
///   frames: { "33": { captured_at_us, width, height, valid_fraction, median_depth_m,
///                     pose_jump_mm, pose_jump_deg, accepted, warnings }, "34": {…}, … } }
/// ```
///
/// A write is one `update` command with one upsert per bucket touched, `$set` of
/// `frames.<seq>` per record: idempotent on (scan, seq) — a record written again replaces
/// itself, the bucket's other records stay — so a retried or repeated batch converges
/// without transactions (SecantusDB has none). The writer sends whole buckets, so normally
/// each bucket is one upsert that creates it. SecantusDB's CPU is per document written:
/// bucketing cut it about 16× against one upserted document per frame
/// (`docs/performance.md` § Scan ingest).
#[derive(Clone)]
pub struct MongoQualitySink {
    db: mongodb::Database,
    index_made: std::sync::Arc<OnceCell<()>>,
}

impl MongoQualitySink {
    pub fn new(db: mongodb::Database) -> Self {
        Self { db, index_made: Default::default() }
    }

    async fn ensure_index(&self) {
        let _ = self
            .index_made
            .get_or_init(|| async {
                let cmd = doc! {
                    "createIndexes": QUALITY_COLLECTION,
                    "indexes": [{ "key": { "scan_id": 1, "first_seq": 1 }, "name": "scan_first_seq" }],
                };
                if let Err(e) = self.db.run_command(cmd).await {
                    tracing::debug!(error = %mongo_error(&e), "could not create the quality index");
                }
            })
            .await;
    }
}

/// The `_id` of the bucket starting at `first_seq`.
fn bucket_id(scan_id: ScanId, first_seq: u64) -> String {
    format!("{scan_id}:{first_seq:012}")
}

/// One record inside its bucket (the scan and the seq are the bucket's and the key's).
fn quality_fields(r: &QualityRecord) -> Document {
    let opt = |v: Option<f32>| v.map(f64::from);
    doc! {
        "captured_at_us": to_i64(r.captured_at_us),
        "width": i64::from(r.width),
        "height": i64::from(r.height),
        "valid_fraction": f64::from(r.valid_fraction),
        "median_depth_m": opt(r.median_depth_m),
        "pose_jump_mm": opt(r.pose_jump_mm),
        "pose_jump_deg": opt(r.pose_jump_deg),
        "accepted": r.accepted,
        "warnings": r.warnings.clone(),
    }
}

/// The upserts for `records`: one per (scan, bucket), records in the order given (a later
/// record of the same seq wins, as it would in separate writes).
fn bucket_upserts(records: &[QualityRecord]) -> Vec<Document> {
    let mut buckets: BTreeMap<(ScanId, u64), Document> = BTreeMap::new();
    for r in records {
        let (first, last) = quality_bucket(r.seq);
        let set = buckets.entry((r.scan_id, first)).or_insert_with(|| {
            doc! { "scan_id": r.scan_id.to_string(), "first_seq": to_i64(first), "last_seq": to_i64(last) }
        });
        set.insert(format!("frames.{}", r.seq), quality_fields(r));
    }
    buckets
        .into_iter()
        .map(|((scan, first), set)| {
            doc! { "q": { "_id": bucket_id(scan, first) }, "u": { "$set": set }, "upsert": true }
        })
        .collect()
}

#[async_trait]
impl QualitySink for MongoQualitySink {
    async fn write_quality(&self, records: &[QualityRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.ensure_index().await;
        let reply = self
            .db
            .run_command(doc! { "update": QUALITY_COLLECTION, "updates": bucket_upserts(records), "ordered": false })
            .await
            .map_err(|e| mongo_error(&e))?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            if !errors.is_empty() {
                // A duplicate key means a concurrent upsert of the same bucket won the race:
                // retrying turns it into an update.
                return Err(StoreError::Transient(format!("mongo: {} write errors", errors.len())));
            }
        }
        Ok(())
    }
}

/// Every quality record stored for a scan, in seq order (each seq once).
pub async fn quality_records(db: &mongodb::Database, scan_id: ScanId) -> Result<Vec<QualityRecord>, StoreError> {
    use futures_util::TryStreamExt;
    let bad = || StoreError::Permanent("mongo: malformed quality bucket".into());
    let buckets: Vec<Document> = db
        .collection::<Document>(QUALITY_COLLECTION)
        .find(doc! { "scan_id": scan_id.to_string() })
        .sort(doc! { "first_seq": 1 })
        .await
        .map_err(|e| mongo_error(&e))?
        .try_collect()
        .await
        .map_err(|e| mongo_error(&e))?;
    let mut out = BTreeMap::new();
    for bucket in &buckets {
        for (key, value) in bucket.get_document("frames").map_err(|_| bad())? {
            let seq: u64 = key.parse().map_err(|_| bad())?;
            let fields = value.as_document().ok_or_else(bad)?;
            out.insert(seq, quality_record(scan_id, seq, fields).ok_or_else(bad)?);
        }
    }
    Ok(out.into_values().collect())
}

fn quality_record(scan_id: ScanId, seq: u64, d: &Document) -> Option<QualityRecord> {
    let float = |k: &str| d.get(k).and_then(mongodb::bson::Bson::as_f64).map(|v| v as f32);
    let int = |k: &str| match d.get(k)? {
        mongodb::bson::Bson::Int64(v) => Some(*v),
        mongodb::bson::Bson::Int32(v) => Some(i64::from(*v)),
        _ => None,
    };
    Some(QualityRecord {
        scan_id,
        seq,
        captured_at_us: u64::try_from(int("captured_at_us")?).ok()?,
        width: u32::try_from(int("width")?).ok()?,
        height: u32::try_from(int("height")?).ok()?,
        valid_fraction: float("valid_fraction")?,
        median_depth_m: float("median_depth_m"),
        pose_jump_mm: float("pose_jump_mm"),
        pose_jump_deg: float("pose_jump_deg"),
        accepted: d.get_bool("accepted").ok()?,
        warnings: d
            .get_array("warnings")
            .ok()?
            .iter()
            .map(|w| w.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
    })
}

// ---------------------------------------------------------------------------------------
// queries for the scan API
// ---------------------------------------------------------------------------------------

/// A scan as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScanRecord {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub consult_id: Option<Uuid>,
    /// The wound the scan is of (`GET /v1/wounds/{id}`); every scan has one since wounds
    /// exist (older scans were moved into one wound per patient and body site).
    pub wound_id: Option<Uuid>,
    /// Where the wound is, as the scan was created with it (free text).
    pub body_site: String,
    /// `created`, `streaming`, `processing`, `complete`, `failed` or `cancelled`.
    pub status: String,
    /// Every frame with `seq <= acked_seq` is durable.
    pub acked_seq: i64,
    /// Frames indexed for the scan.
    pub frames: i64,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What `POST /v1/scans` stores.
pub struct NewScan {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub consult_id: Option<Uuid>,
    pub wound_id: Uuid,
    /// A wound to create with the scan (its id is `wound_id`), in the same transaction.
    pub new_wound: Option<super::wounds::WoundFields>,
    pub body_site: String,
    pub created_by: Uuid,
    pub at: DateTime<Utc>,
}

pub async fn insert(pool: &PgPool, s: &NewScan) -> Result<ScanRecord, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(w) = &s.new_wound {
        super::wounds::insert(&mut *tx, s.wound_id, s.patient_id, w, s.created_by, s.at).await?;
    }
    sqlx::query!(
        "INSERT INTO scans (id, patient_id, consult_id, wound_id, body_site, status, acked_seq, created_by, created_at,
             updated_at)
         VALUES ($1, $2, $3, $4, $5, 'created', 0, $6, $7, $7)",
        s.id,
        s.patient_id,
        s.consult_id,
        s.wound_id,
        s.body_site,
        s.created_by,
        s.at,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get(pool, s.id).await?.ok_or(sqlx::Error::RowNotFound)
}

// `get` and `list_for_patient` select the same columns into `ScanRecord`, each statement
// written out so the build checks it (`sqlx::query_as!`); `frames` is a count, never NULL.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ScanRecord>, sqlx::Error> {
    sqlx::query_as!(
        ScanRecord,
        r#"SELECT s.id, s.patient_id, s.consult_id, s.wound_id, s.body_site, s.status, s.acked_seq, s.created_by,
                  s.created_at, s.updated_at, s.finished_at,
                  (SELECT count(*) FROM scan_frames f WHERE f.scan_id = s.id) AS "frames!"
             FROM scans s WHERE s.id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await
}

/// The patient's scans, newest first, at most `limit`.
pub async fn list_for_patient(pool: &PgPool, patient_id: Uuid, limit: i64) -> Result<Vec<ScanRecord>, sqlx::Error> {
    sqlx::query_as!(
        ScanRecord,
        r#"SELECT s.id, s.patient_id, s.consult_id, s.wound_id, s.body_site, s.status, s.acked_seq, s.created_by,
                  s.created_at, s.updated_at, s.finished_at,
                  (SELECT count(*) FROM scan_frames f WHERE f.scan_id = s.id) AS "frames!"
             FROM scans s WHERE s.patient_id = $1 ORDER BY s.created_at DESC, s.id DESC LIMIT $2"#,
        patient_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// The patient a scan belongs to, and its status (the stream route's pre-upgrade check).
pub async fn owner_and_status(pool: &PgPool, id: Uuid) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let row = sqlx::query!("SELECT patient_id, status FROM scans WHERE id = $1", id).fetch_optional(pool).await?;
    Ok(row.map(|r| (r.patient_id, r.status)))
}
