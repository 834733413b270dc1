//! Finish-time reconstruction: the capture sessions' [`FinishHook`] over the real stores.
//!
//! When a stream finishes, [`ReconstructionHook::on_finish`]:
//!
//! 0. waits while phones are still streaming to this node (until no frame has arrived for
//!    [`FINISH_QUIET`]), for at most `scan_finish_defer_max_ms`: the acks of the scans still
//!    streaming come first, and the scan stays `processing` meanwhile;
//! 1. unless live fusion already holds every frame, reads the scan's stored `frame`
//!    messages back from the blob store through the `scan_frames` index, in seq order;
//! 2. on a thread of its own, bounded by a semaphore with one permit per core so that many
//!    finishing scans share the CPU fairly (and never on the I/O threads that serve the
//!    phones' sockets), at normal priority while no phone streams to this node and at the
//!    live-fusion workers' lower priority from the moment one does
//!    ([`step_aside_if_streaming`]): decodes each message (`scan::decode_client`) and
//!    converts it to a `coherency_recon` frame: depth in f32
//!    metres, intrinsics from the row-major `k` (`fx`, `fy`, `cx`, `cy`; the skew term is
//!    ignored), the pose from the row-major world-from-camera `pose` (OpenCV axes, as the
//!    protocol specifies), and the confidence plane rescaled from `0..=max` to ARKit's
//!    `0..=2`;
//! 3. on that thread: gates frames (`QualityGate`), fuses them into a `TsdfVolume` limited
//!    to a 12 cm box around the target, meshes the volume and runs [`measure_auto`];
//! 4. writes the mesh as PLY and GLB to the blob store (`scans/{id}/mesh.ply|glb`), the
//!    measurements to PostgreSQL (`scan_measurements`, method `auto`, idempotent) and a
//!    reconstruction document to MongoDB (`reconstructions`: inputs, parameters, per-stage
//!    timings, quality), one per scan, replaced on a re-run.
//!
//! While a scan is in the hook (waiting for quiet, for a core, or being reconstructed) its
//! `updated_at` is touched every quarter of `scan_processing_stale_secs`
//! ([`ReconstructionHook::with_stale_after`]), so a node that is merely slow never has its
//! scan taken over as stale (by another node, or by its own recovery pass).
//!
//! Outcomes: no usable frame (none decodes, passes the quality gate or has depth at its
//! centre) fails the scan. When the surface is built but the automatic segmentation finds
//! no wound near the target, the scan still completes, with its mesh and no automatic
//! measurement (the document says why): a clinician can then draw the outline.
//!
//! **Target point.** The protocol carries no wound position, so the target is where the
//! phone was pointing in the middle of the scan: the ray through the principal point
//! (`cx`, `cy`) of the middle accepted frame. Before fusion (to place the region of
//! interest) it is the median depth of the 5×5 pixels around that point; after fusion the
//! same ray is cast onto the fused surface and the hit replaces it. A phone held over a
//! wound keeps it near the centre of the view, and the automatic segmentation looks for the
//! wound within 15 mm of the target. If no depth is found at the centre of the middle frame,
//! the frames nearest the middle are tried in turn.
//!
//! [`ReconstructionHook::remeasure_polygon`] re-runs fusion from the stored frames (the
//! volume is not kept in memory or storage: it is cheap to rebuild and this keeps the result
//! reproducible) and measures the clinician's outline drawn on a keyframe.

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use coherency_actors::capture::activity::{since_last_frame, wait_for_quiet};
use coherency_actors::reconstruction::{centre_point, to_recon_frame, Accepted, LiveResult};
use coherency_actors::stats::CaptureStats;
use coherency_actors::store::{
    process_finished, FinishHook, FinishedScan, QualityRecord, QualitySink, ScanIndex, StoreError,
};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{decode_client, ClientMsg};
use coherency_recon::measure::{check_outline, OutlineMethod, SkinModel};
use coherency_recon::mesh::extract_mesh;
use coherency_recon::tsdf::Aabb;
use coherency_recon::{
    measure_auto, measure_polygon, Coverage, Frame, GateRun, MeasureConfig, Measurement, QualityGate, ReconError,
    TsdfConfig, TsdfVolume, Vec3, WoundMeasurements,
};
use mongodb::bson::{doc, Document};
use serde::Serialize;
use sqlx::{PgPool, Row};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::clock::Clock;
use crate::store::blob::BlobStore;
use crate::store::scans::{blob_error, mongo_error, pg_error, MongoQualitySink};
use crate::store::Stores;

/// The MongoDB collection holding one reconstruction document per scan.
pub const RECONSTRUCTIONS: &str = "reconstructions";
/// Half the side of the fusion region of interest around the target, metres (a 12 cm box).
pub const ROI_HALF_M: f64 = coherency_actors::reconstruction::ROI_HALF_M;
/// Fusion weight below which mesh cubes are left out.
pub const MESH_MIN_WEIGHT: f32 = 0.5;
/// How long no frame must have arrived on the node before a deferred finish starts.
pub const FINISH_QUIET: Duration = Duration::from_secs(1);
/// Radius of the coverage disc reported in the reconstruction document, metres.
const COVERAGE_RADIUS_M: f64 = coherency_actors::reconstruction::COVERAGE_RADIUS_M;

/// The finish hook that reconstructs and measures a scan.
#[derive(Clone)]
pub struct ReconstructionHook {
    blobs: BlobStore,
    pg: PgPool,
    mongo: mongodb::Database,
    clock: Clock,
    cpu: Arc<Semaphore>,
    /// Longest a finished scan's reconstruction waits for phones to stop streaming here.
    defer_max: Duration,
    /// How often a scan in the hook has its `updated_at` touched (zero: never).
    heartbeat: Duration,
}

/// Where one stored `frame` message is.
struct IndexRow {
    seq: u64,
    chunk_key: String,
    offset: usize,
    length: usize,
}

/// A stored `frame` message, not yet decoded.
struct RawFrame {
    seq: u64,
    msg: Bytes,
}

/// A frame as read back from storage.
struct StoredFrame {
    seq: u64,
    frame: Frame,
}

/// What fusion produced.
struct Fusion {
    vol: TsdfVolume,
    target: Vec3,
    target_from_surface: bool,
    middle_seq: u64,
    fused: usize,
    rejected: Vec<(u64, &'static str)>,
    /// `live` (fused while streaming) or `at_finish` (fused from the stored frames).
    mode: &'static str,
    fuse_ms: f64,
}

/// Why a re-measurement could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RemeasureError {
    /// No stored frame with that seq.
    #[error("no frame with that seq")]
    NoKeyframe,
    /// The scan has no frames yet.
    #[error("the scan has no frames")]
    NoFrames,
    /// The outline could not be measured (misses the surface, too few points...).
    #[error("{0}")]
    Recon(ReconError),
    /// Re-fusing the scan would take the request past its allocation budget.
    #[error("{0}")]
    TooLarge(crate::alloc::OverBudget),
    /// Storage failed.
    #[error("{0}")]
    Store(StoreError),
}

impl ReconstructionHook {
    /// A hook over the node's stores. Every hook of the process shares one CPU pool: at most
    /// one reconstruction (finish or re-measurement) per core runs at a time.
    pub fn new(stores: &Stores, clock: Clock) -> Self {
        static CPU: OnceLock<Arc<Semaphore>> = OnceLock::new();
        let cpu = CPU
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                Arc::new(Semaphore::new(cores))
            })
            .clone();
        Self {
            blobs: stores.blobs.clone(),
            pg: stores.pg.clone(),
            mongo: stores.mongo.clone(),
            clock,
            cpu,
            defer_max: Duration::ZERO,
            heartbeat: Duration::ZERO,
        }
    }

    /// Scans still `processing` after `stale` count as abandoned and are taken over
    /// (`scan_processing_stale_secs`, zero: never): while a scan is in this hook its
    /// `updated_at` is touched every quarter of that, so it never looks abandoned.
    pub fn with_stale_after(mut self, stale: Duration) -> Self {
        self.heartbeat = stale / 4;
        self
    }

    /// Finish-time reconstruction first waits until no frame has arrived on this node for
    /// [`FINISH_QUIET`], for at most `max` (zero, the default: it starts at once). Phones
    /// still streaming keep the cores for their acks; the scan stays `processing` meanwhile.
    pub fn with_finish_defer(mut self, max: Duration) -> Self {
        self.defer_max = max;
        self
    }

    /// Runs CPU-heavy work once a core is free, on a thread of its own: at normal priority
    /// while no phone streams to this node, at the live-fusion workers' lower priority as
    /// soon as one does ([`step_aside_if_streaming`]), so that a scan's finish (seconds of
    /// fusion when it was not fused live) never delays the acks of phones still streaming,
    /// yet is not starved for no one's benefit when the CPU is busy with work from outside
    /// the node. The thread ends with the work, so a lowered priority never reaches other
    /// work.
    async fn on_cpu<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
        let _permit =
            self.cpu.clone().acquire_owned().await.map_err(|_| StoreError::Permanent("recon: pool closed".into()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A request waiting on this work (a re-measurement) counts its allocations.
        let account = crate::alloc::current();
        std::thread::Builder::new()
            .name("recon-finish".into())
            .spawn(move || {
                let _alloc = account.as_ref().map(crate::alloc::enter);
                step_aside_if_streaming();
                let _ = tx.send(f());
            })
            .map_err(|e| StoreError::Transient(format!("recon: no thread: {e}")))?;
        rx.await.map_err(|_| StoreError::Permanent("recon: worker panicked".into()))
    }

    /// Where the scan's stored `frame` messages are, in seq order (`scan_frames`).
    async fn frame_index(&self, scan_id: ScanId) -> Result<Vec<IndexRow>, StoreError> {
        let rows =
            sqlx::query(r#"SELECT seq, chunk_key, "offset", length FROM scan_frames WHERE scan_id = $1 ORDER BY seq"#)
                .bind(scan_id.as_uuid())
                .fetch_all(&self.pg)
                .await
                .map_err(|e| pg_error(&e))?;
        Ok(rows
            .iter()
            .map(|r| IndexRow {
                seq: u64::try_from(r.get::<i64, _>("seq")).unwrap_or(0),
                chunk_key: r.get("chunk_key"),
                offset: usize::try_from(r.get::<i64, _>("offset")).unwrap_or(usize::MAX),
                length: usize::try_from(r.get::<i64, _>("length")).unwrap_or(usize::MAX),
            })
            .collect())
    }

    /// Runs `f` on the reconstruction thread ([`Self::on_cpu`]) with the scan's stored
    /// frames, read and decoded there: reading a scan's chunks and decoding its hundreds of
    /// frames is CPU work that must not run on the I/O threads serving the phones' sockets,
    /// nor at their priority (a finishing scan would hold up the acks of those still
    /// streaming).
    ///
    /// The quality records of the seqs in `rebuild` are computed again on the way
    /// (`CaptureStats` over every frame in seq order, as the capture session does).
    async fn with_stored_frames<T: Send + 'static>(
        &self,
        scan_id: ScanId,
        rebuild: BTreeSet<u64>,
        f: impl FnOnce(Result<Decoded, StoreError>) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let index = self.frame_index(scan_id).await?;
        let (blobs, rt) = (self.blobs.clone(), tokio::runtime::Handle::current());
        self.on_cpu(move || f(read_frames(&blobs, &rt, &index).and_then(|raw| decode_frames(scan_id, raw, &rebuild))))
            .await
    }

    /// The seqs `1..=last_seq` with no quality record in MongoDB (lost with a node that
    /// stopped before writing them, or dropped when the queue was full). Empty when MongoDB
    /// cannot be read: the records are derived data, and the session's writer is still
    /// retrying them then.
    ///
    /// The session's writer sends its last records when the session ends and may still be
    /// writing them: a gap is read again [`QUALITY_RECHECKS`] times, a second apart, before
    /// it counts as lost.
    async fn missing_quality(&self, scan_id: ScanId, last_seq: u64) -> BTreeSet<u64> {
        let mut missing = BTreeSet::new();
        for attempt in 0..=QUALITY_RECHECKS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            missing = match crate::store::scans::quality_records(&self.mongo, scan_id).await {
                Ok(records) => {
                    let have: HashSet<u64> = records.iter().map(|r| r.seq).collect();
                    (1..=last_seq).filter(|s| !have.contains(s)).collect()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "quality records not checked");
                    return BTreeSet::new();
                }
            };
            if missing.is_empty() {
                break;
            }
        }
        missing
    }

    /// Reconstructs and measures one finished scan (see the module docs).
    #[tracing::instrument(skip_all, fields(scan_id = %scan.scan_id))]
    async fn reconstruct(&self, scan: &FinishedScan) -> Result<(), StoreError> {
        let started = self.clock.now();
        let deferred_ms = if self.defer_max.is_zero() {
            0.0
        } else {
            wait_for_quiet(FINISH_QUIET, self.defer_max).await.as_secs_f64() * 1e3
        };
        let t0 = Instant::now();
        let live = match &scan.live {
            Some(l) => l.finish().await,
            None => None,
        };
        // Frames live fusion skipped because the pool was behind (None: no live fusion).
        let live_skipped = live.as_ref().map(|l| l.skipped_load);
        let live = match live {
            Some(l) if l.complete && l.last_seq == scan.last_seq => Some(l),
            Some(l) => {
                tracing::info!(skipped = l.skipped_load, "live fusion incomplete; fusing the stored frames");
                None
            }
            None => None,
        };
        let missing = self.missing_quality(scan.scan_id, scan.last_seq).await;
        let work = match live {
            Some(l) if missing.is_empty() => {
                let n = scan.last_seq as usize;
                let (load_ms, work) = (ms(t0), self.on_cpu(move || finish_work(Some(l), &[])).await?);
                (work, n, load_ms, Vec::new())
            }
            live => {
                self.with_stored_frames(scan.scan_id, missing, move |decoded| {
                    let Decoded { frames, quality } = decoded?;
                    let (n, load_ms) = (frames.len(), ms(t0));
                    Ok::<_, StoreError>((finish_work(live, &frames), n, load_ms, quality))
                })
                .await??
            }
        };
        let (work, n_frames, load_ms, rebuilt) = work;
        let quality_rebuilt = match rebuilt.is_empty() {
            true => 0,
            false => match MongoQualitySink::new(self.mongo.clone()).write_quality(&rebuilt).await {
                Ok(()) => {
                    tracing::info!(records = rebuilt.len(), "missing quality records rebuilt from the stored frames");
                    rebuilt.len()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "missing quality records not rebuilt");
                    0
                }
            },
        };
        let mut doc = doc! {
            "scan_id": scan.scan_id.to_string(),
            "started_at": bson_time(started),
            "inputs": { "last_seq": to_i64(scan.last_seq), "frames_stored": to_i64(n_frames as u64),
                        "quality_dropped": to_i64(scan.quality_dropped),
                        "quality_rebuilt": to_i64(quality_rebuilt as u64) },
            "parameters": parameters(),
        };
        let Built { fusion, ply, glb, triangles, mesh_ms, coverage, measured, measure_ms } = match work {
            Ok(w) => w,
            Err(e) => {
                doc.insert("status", "failed");
                doc.insert("error", e.to_string());
                doc.insert("timings_ms", doc! { "load": load_ms });
                self.write_doc(scan.scan_id, doc).await?;
                return Err(StoreError::Permanent(format!("recon: {e}")));
            }
        };
        let t = Instant::now();
        let ply = self.put(&format!("scans/{}/mesh.ply", scan.scan_id), ply).await?;
        let glb = self.put(&format!("scans/{}/mesh.glb", scan.scan_id), glb).await?;
        let store_mesh_ms = ms(t);
        let t_pt = fusion.target;
        doc.insert(
            "target",
            doc! {
                "world_m": [t_pt.x, t_pt.y, t_pt.z],
                "method": "centre ray of the middle frame",
                "middle_seq": to_i64(fusion.middle_seq),
                "on_fused_surface": fusion.target_from_surface,
            },
        );
        doc.insert("quality", doc! {
            "fusion": fusion.mode,
            "live_skipped_load": live_skipped.map(to_i64),
            "frames_fused": to_i64(fusion.fused as u64),
            "frames_rejected": fusion.rejected.iter().map(|(s, c)| doc! {"seq": to_i64(*s), "code": *c}).collect::<Vec<_>>(),
            "bricks": to_i64(coverage.bricks as u64),
            "memory_bytes": to_i64(coverage.memory_bytes as u64),
            "observed_fraction": coverage.observed_fraction,
            "view_spread_deg": coverage.view_spread_deg,
            "median_surface_weight": coverage.median_surface_weight,
        });
        doc.insert(
            "mesh",
            doc! {
                "triangles": to_i64(triangles as u64),
                "ply": { "key": &ply.key, "sha256": &ply.sha256, "size": to_i64(ply.size) },
                "glb": { "key": &glb.key, "sha256": &glb.sha256, "size": to_i64(glb.size) },
            },
        );
        let m = match measured {
            Ok(m) => m,
            Err(e) => {
                // The surface exists; only the automatic outline failed (no wound near the
                // target). The scan completes without an automatic measurement and a
                // clinician can draw the outline (POST /v1/scans/{id}/measurements).
                doc.insert("status", "complete");
                doc.insert("measurement_error", e.to_string());
                doc.insert(
                    "timings_ms",
                    doc! { "deferred": deferred_ms, "load": load_ms, "fuse": fusion.fuse_ms, "mesh": mesh_ms,
                    "measure": measure_ms, "store_mesh": store_mesh_ms, "total": ms(t0) },
                );
                self.write_doc(scan.scan_id, doc).await?;
                tracing::info!(frames = fusion.fused, "scan reconstructed; no automatic outline");
                return Ok(());
            }
        };
        let t = Instant::now();
        let row = NewMeasurement {
            scan_id: scan.scan_id.as_uuid(),
            method: "auto",
            keyframe_seq: None,
            polygon: None,
            m: &m,
            mesh: Some(MeshKeys { ply_key: ply.key, ply_sha256: ply.sha256, glb_key: glb.key, glb_sha256: glb.sha256 }),
            created_by: None,
            at: self.clock.now(),
        };
        let id = insert_measurement(&self.pg, &row).await?;
        let pg_ms = ms(t);
        doc.insert("status", "complete");
        doc.insert("measurement_id", id.to_string());
        doc.insert("measurements", measurements_doc(&m));
        doc.insert(
            "timings_ms",
            doc! { "deferred": deferred_ms, "load": load_ms, "fuse": fusion.fuse_ms, "mesh": mesh_ms,
            "measure": measure_ms, "store_mesh": store_mesh_ms, "store_measurements": pg_ms, "total": ms(t0) },
        );
        self.write_doc(scan.scan_id, doc).await?;
        tracing::info!(frames = fusion.fused, total_ms = ms(t0), "scan reconstructed and measured");
        Ok(())
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<crate::store::blob::Stored, StoreError> {
        self.blobs.put_durable(key, Bytes::from(data)).await.map_err(|e| blob_error(&e))
    }

    /// Upserts the scan's reconstruction document.
    async fn write_doc(&self, scan_id: ScanId, mut d: Document) -> Result<(), StoreError> {
        d.insert("updated_at", bson_time(self.clock.now()));
        let cmd = doc! {
            "update": RECONSTRUCTIONS,
            "updates": [{ "q": { "scan_id": scan_id.to_string() }, "u": d, "upsert": true }],
        };
        self.mongo.run_command(cmd).await.map_err(|e| mongo_error(&e))?;
        Ok(())
    }

    /// Re-measures a scan with a clinician-drawn outline on the keyframe `keyframe_seq`
    /// (image coordinates of that frame), fusing the stored frames again. Stores and returns
    /// the new measurement row.
    ///
    /// The keyframe is read alone first and the outline checked against its image
    /// ([`check_outline`]): an outline outside it is refused before the scan's other
    /// frames are read or fused.
    pub async fn remeasure_polygon(
        &self,
        scan_id: ScanId,
        keyframe_seq: u64,
        polygon: Vec<[f64; 2]>,
        created_by: Uuid,
    ) -> Result<MeasurementRecord, RemeasureError> {
        let index = self.frame_index(scan_id).await.map_err(RemeasureError::Store)?;
        if index.is_empty() {
            return Err(RemeasureError::NoFrames);
        }
        let key_at = index.iter().position(|r| r.seq == keyframe_seq).ok_or(RemeasureError::NoKeyframe)?;
        let (blobs, rt, px) = (self.blobs.clone(), tokio::runtime::Handle::current(), polygon.clone());
        let m = self
            .on_cpu(move || {
                let none = BTreeSet::new();
                let decode = |rows: &[IndexRow]| {
                    read_frames(&blobs, &rt, rows).and_then(|raw| decode_frames(scan_id, raw, &none))
                };
                let key = decode(&index[key_at..=key_at])
                    .map_err(RemeasureError::Store)?
                    .frames
                    .pop()
                    .ok_or(RemeasureError::NoKeyframe)?;
                let (k, pose) = (key.frame.intrinsics, key.frame.pose);
                check_outline(&px, k.width, k.height).map_err(RemeasureError::Recon)?;
                crate::alloc::check("re-fusing the scan", refuse_bytes(&index, k.pixel_count()))
                    .map_err(RemeasureError::TooLarge)?;
                let frames = decode(&index).map_err(RemeasureError::Store)?.frames;
                let fusion = fuse(&frames).map_err(RemeasureError::Recon)?;
                measure_polygon(&fusion.vol, &px, &k, &pose, &MeasureConfig::default()).map_err(RemeasureError::Recon)
            })
            .await
            .map_err(RemeasureError::Store)??;
        let mesh = auto_mesh_keys(&self.pg, scan_id.as_uuid()).await.map_err(RemeasureError::Store)?;
        let row = NewMeasurement {
            scan_id: scan_id.as_uuid(),
            method: "polygon",
            keyframe_seq: Some(keyframe_seq),
            polygon: Some(serde_json::to_value(&polygon).unwrap_or_default()),
            m: &m,
            mesh,
            created_by: Some(created_by),
            at: self.clock.now(),
        };
        let id = insert_measurement(&self.pg, &row).await.map_err(RemeasureError::Store)?;
        let all =
            list_measurements(&self.pg, scan_id.as_uuid()).await.map_err(|e| RemeasureError::Store(pg_error(&e)))?;
        all.into_iter().find(|r| r.id == id).ok_or(RemeasureError::Store(StoreError::Permanent("lost row".into())))
    }
}

/// What re-fusing the frames at `index` holds at once, frames of `pixels` each: the stored
/// messages, each frame's depth (f32) and confidence (u8), the volume at its memory budget
/// and the polygon's height-field grids (a dozen f64 grids of at most 473² cells: an outline
/// within `MAX_OUTLINE_RADIUS_M` at the default 0.5 mm cell).
fn refuse_bytes(index: &[IndexRow], pixels: usize) -> usize {
    let stored: usize = index.iter().map(|r| r.length).fold(0, usize::saturating_add);
    let decoded = index.len().saturating_mul(pixels.saturating_mul(5));
    let fixed = TsdfConfig::default().memory_budget_bytes + 12 * 8 * 473 * 473;
    stored.saturating_add(decoded).saturating_add(fixed)
}

/// How many more times a gap in a scan's quality records is read before it is rebuilt.
const QUALITY_RECHECKS: u32 = 3;

/// Most scans one recovery pass takes over.
const RECOVER_BATCH: usize = 16;

impl ReconstructionHook {
    /// Claims one scan left `processing` for longer than `stale` (the node reconstructing
    /// it stopped): its `updated_at` moves to now, so no other node claims it again before
    /// `stale` has passed once more. Answers the scan and its last durable seq.
    async fn claim_stale(&self, stale: Duration) -> Result<Option<(ScanId, u64)>, StoreError> {
        let now = self.clock.now();
        let cutoff = now - chrono::Duration::from_std(stale).unwrap_or(chrono::Duration::MAX);
        let row = sqlx::query(
            "UPDATE scans SET updated_at = $1
             WHERE id = (SELECT id FROM scans WHERE status = 'processing' AND updated_at < $2
                         ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, acked_seq",
        )
        .bind(now)
        .bind(cutoff)
        .fetch_optional(&self.pg)
        .await
        .map_err(|e| pg_error(&e))?;
        Ok(row.map(|r| {
            let last = u64::try_from(r.get::<i64, _>("acked_seq")).unwrap_or(0);
            (ScanId::from_uuid(r.get("id")), last)
        }))
    }
}

/// Reconstructs the scans other nodes left `processing` for longer than `stale` (they were
/// stopped while the scan waited or was being reconstructed), at most [`RECOVER_BATCH`] per
/// call, as a finishing session would (`process_finished`). Every step is idempotent (the
/// measurement row, the mesh keys, the reconstruction document), so a scan taken over twice
/// ends the same. Answers how many it took over.
async fn recover_stale(hook: &Arc<ReconstructionHook>, index: &Arc<dyn ScanIndex>, stale: Duration) -> usize {
    let retry = coherency_actors::capture::CaptureConfig::default().quality_retry;
    let mut taken = 0;
    while taken < RECOVER_BATCH {
        let (scan_id, last_seq) = match hook.claim_stale(stale).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for scans left processing");
                break;
            }
        };
        tracing::warn!(%scan_id, "scan left processing by a stopped node; reconstructing it here");
        let scan = FinishedScan { live: None, scan_id, last_seq, quality_dropped: 0 };
        process_finished(hook.clone(), index.clone(), &retry, scan).await;
        taken += 1;
    }
    taken
}

/// Runs [`recover_stale`] every quarter of `stale` (1–60 s) for the
/// life of the process; `stale` zero: never.
pub fn spawn_recovery(hook: Arc<ReconstructionHook>, index: Arc<dyn ScanIndex>, stale: Duration) {
    if stale.is_zero() {
        return;
    }
    let every = (stale / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            recover_stale(&hook, &index, stale).await;
        }
    });
}

/// Ends a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ReconstructionHook {
    /// Touches the scan's `updated_at` every quarter of [`Self::with_stale_after`]'s bound
    /// for as long as the returned guard lives.
    fn keep_fresh(&self, scan_id: ScanId) -> Option<AbortOnDrop> {
        if self.heartbeat.is_zero() {
            return None;
        }
        let (pg, clock, every) = (self.pg.clone(), self.clock.clone(), self.heartbeat);
        Some(AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let touched = sqlx::query("UPDATE scans SET updated_at = $2 WHERE id = $1 AND status = 'processing'")
                    .bind(scan_id.as_uuid())
                    .bind(clock.now())
                    .execute(&pg)
                    .await;
                if let Err(e) = touched {
                    tracing::warn!(%scan_id, error = %e, "processing scan not touched; it may be taken over as stale");
                }
            }
        })))
    }
}

#[async_trait]
impl FinishHook for ReconstructionHook {
    async fn on_finish(&self, scan: FinishedScan) -> Result<(), StoreError> {
        let _fresh = self.keep_fresh(scan.scan_id);
        self.reconstruct(&scan).await
    }
}

/// Lowers the calling reconstruction thread to the live-fusion workers' priority
/// (`fusion_nice`) if a phone has streamed to this node within [`FINISH_QUIET`]; called
/// when the thread starts and between frames. Until then it keeps normal priority: with
/// nobody streaming there are no acks to make way for, and at the lower priority a
/// reconstruction competing with busy processes outside the node runs many times slower
/// (a nice 10 thread weighs 110 against 1024 for each nice 0 one). A thread cannot raise
/// its priority again, so once lowered it stays lowered until it ends with its work.
fn step_aside_if_streaming() {
    thread_local! {
        static LOWERED: Cell<bool> = const { Cell::new(false) };
    }
    if !LOWERED.get() && since_last_frame().is_some_and(|d| d < FINISH_QUIET) {
        coherency_actors::reconstruction::lower_priority();
        LOWERED.set(true);
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn bson_time(t: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parameters() -> Document {
    let t = TsdfConfig::default();
    let m = MeasureConfig::default();
    doc! {
        "voxel_size_m": f64::from(t.voxel_size_m),
        "truncation_voxels": f64::from(t.truncation_voxels),
        "depth_min_m": f64::from(t.depth_min_m),
        "depth_max_m": f64::from(t.depth_max_m),
        "roi_half_m": ROI_HALF_M,
        "memory_budget_bytes": to_i64(t.memory_budget_bytes as u64),
        "mesh_min_weight": f64::from(MESH_MIN_WEIGHT),
        "measure_cell_m": m.cell_m,
        "measure_max_radius_m": m.max_radius_m,
        "coverage_factor": m.coverage_factor,
    }
}

/// What the finish step computed.
struct Built {
    fusion: Fusion,
    ply: Vec<u8>,
    glb: Vec<u8>,
    triangles: usize,
    mesh_ms: f64,
    coverage: Coverage,
    measured: Result<WoundMeasurements, ReconError>,
    measure_ms: f64,
}

/// The CPU part of a finish: the live volume (else fusion of `frames`), its mesh,
/// coverage and automatic measurement.
fn finish_work(live: Option<LiveResult>, frames: &[StoredFrame]) -> Result<Built, ReconError> {
    let fusion = match live {
        Some(l) => from_live(l)?,
        None => fuse(frames)?,
    };
    step_aside_if_streaming();
    let t = Instant::now();
    let mesh = extract_mesh(&fusion.vol, MESH_MIN_WEIGHT);
    let (ply, glb) = (mesh.to_ply(), mesh.to_glb());
    let triangles = mesh.triangle_count();
    let mesh_ms = ms(t);
    step_aside_if_streaming();
    let t = Instant::now();
    let coverage = fusion.vol.coverage(fusion.target, COVERAGE_RADIUS_M);
    let measured = measure_auto(&fusion.vol, fusion.target, &MeasureConfig::default());
    let measure_ms = ms(t);
    Ok(Built { fusion, ply, glb, triangles, mesh_ms, coverage, measured, measure_ms })
}

/// Reads the stored `frame` messages at `index` (slices of their chunks, each chunk read
/// once).
fn read_frames(
    blobs: &BlobStore,
    rt: &tokio::runtime::Handle,
    index: &[IndexRow],
) -> Result<Vec<RawFrame>, StoreError> {
    let mut out = Vec::with_capacity(index.len());
    let mut chunk: Option<(&str, Bytes)> = None;
    for row in index {
        let bytes = match &chunk {
            Some((k, b)) if *k == row.chunk_key => b.clone(),
            _ => {
                let b = blobs.get_blocking(&row.chunk_key, rt).map_err(|e| blob_error(&e))?;
                chunk = Some((&row.chunk_key, b.clone()));
                b
            }
        };
        let end = row
            .offset
            .checked_add(row.length)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| StoreError::Permanent("recon: frame outside its chunk".into()))?;
        out.push(RawFrame { seq: row.seq, msg: bytes.slice(row.offset..end) });
    }
    Ok(out)
}

/// Stored frames decoded for reconstruction, and the quality records rebuilt on the way.
struct Decoded {
    frames: Vec<StoredFrame>,
    quality: Vec<QualityRecord>,
}

/// Decodes stored `frame` messages into reconstruction frames; a frame that decodes but
/// cannot be used (its depth or pose is unusable) is left out with a warning. The quality
/// records of the seqs in `rebuild` are computed again (every frame goes through one
/// `CaptureStats` in seq order, so pose jumps are measured as during capture).
fn decode_frames(scan_id: ScanId, raw: Vec<RawFrame>, rebuild: &BTreeSet<u64>) -> Result<Decoded, StoreError> {
    let mut frames = Vec::with_capacity(raw.len());
    let mut quality = Vec::with_capacity(rebuild.len());
    let mut stats = CaptureStats::default();
    for RawFrame { seq, msg } in raw {
        step_aside_if_streaming();
        match decode_client(&msg) {
            Ok(ClientMsg::Frame(f)) => {
                if !rebuild.is_empty() {
                    let v = stats.observe_frame(&f);
                    if rebuild.contains(&seq) {
                        quality.push(QualityRecord::of(scan_id, &f, &v));
                    }
                }
                match to_recon_frame(&f) {
                    Ok(frame) => frames.push(StoredFrame { seq, frame }),
                    Err(e) => tracing::warn!(seq, error = %e, "stored frame not usable for reconstruction"),
                }
            }
            Ok(_) | Err(_) => return Err(StoreError::Permanent("recon: stored frame does not decode".into())),
        }
    }
    Ok(Decoded { frames, quality })
}

/// Gates and fuses the stored frames around the target (see the module docs): the path
/// when no complete live fusion exists (a restarted session, frames skipped under load).
fn fuse(frames: &[StoredFrame]) -> Result<Fusion, ReconError> {
    let t = Instant::now();
    let mut gate = GateRun::new(QualityGate::default());
    let mut accepted: Vec<(&StoredFrame, Accepted)> = Vec::with_capacity(frames.len());
    let mut rejected = Vec::new();
    for f in frames {
        match gate.judge(f.seq, &f.frame) {
            None => {
                let a = Accepted {
                    seq: f.seq,
                    pose: f.frame.pose,
                    intrinsics: f.frame.intrinsics,
                    centre: centre_point(&f.frame),
                };
                accepted.push((f, a));
            }
            Some(i) => rejected.push((f.seq, i.code())),
        }
    }
    let keys: Vec<Accepted> = accepted.iter().map(|(_, a)| *a).collect();
    let (key, p0) = middle_key(&keys)?;
    let cfg = TsdfConfig { roi: Some(Aabb::around(p0, ROI_HALF_M)), ..TsdfConfig::default() };
    let mut vol = TsdfVolume::new(cfg)?;
    let mut fused = 0;
    for (f, _) in &accepted {
        step_aside_if_streaming();
        match vol.integrate(&f.frame) {
            Ok(_) => fused += 1,
            Err(ReconError::MemoryBudgetExceeded { .. }) => {
                rejected.push((f.seq, "memory_budget"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(locate(vol, key, p0, fused, rejected, "at_finish", ms(t)))
}

/// The middle accepted frame, else the nearest one with depth at its centre, and that point.
fn middle_key(accepted: &[Accepted]) -> Result<(Accepted, Vec3), ReconError> {
    if accepted.is_empty() {
        return Err(ReconError::NotEnoughData("no frame passed the quality gate".into()));
    }
    let mid = accepted.len() / 2;
    let order = (0..accepted.len()).map(|d| if d % 2 == 0 { mid + d / 2 } else { mid.wrapping_sub(d / 2 + 1) });
    order
        .filter_map(|i| accepted.get(i))
        .find_map(|a| a.centre.map(|p| (*a, p)))
        .ok_or_else(|| ReconError::NotEnoughData("no depth at the centre of any frame".into()))
}

/// Casts the key frame's centre ray onto the fused surface: the target.
fn locate(
    vol: TsdfVolume,
    key: Accepted,
    p0: Vec3,
    fused: usize,
    rejected: Vec<(u64, &'static str)>,
    mode: &'static str,
    fuse_ms: f64,
) -> Fusion {
    let k = &key.intrinsics;
    let origin = key.pose.position();
    let dir = key.pose.rotate(k.ray(k.cx, k.cy)).normalized();
    let hit = vol.raycast(origin, dir, 0.05, 1.0).map(|t| origin + dir * t);
    Fusion {
        target: hit.unwrap_or(p0),
        target_from_surface: hit.is_some(),
        middle_seq: key.seq,
        vol,
        fused,
        rejected,
        mode,
        fuse_ms,
    }
}

/// The finished live fusion, if it holds every frame of the scan.
fn from_live(live: LiveResult) -> Result<Fusion, ReconError> {
    let (key, p0) = middle_key(&live.accepted)?;
    let vol = live.vol.ok_or_else(|| ReconError::NotEnoughData("no depth at the centre of any frame".into()))?;
    Ok(locate(vol, key, p0, live.fused as usize, live.rejected, "live", live.fuse_ms))
}

fn measurements_doc(m: &WoundMeasurements) -> Document {
    let v = |x: Measurement| doc! { "value": x.value, "uncertainty": x.uncertainty };
    doc! {
        "outline_area_mm2": v(m.outline_area_mm2),
        "bed_area_mm2": v(m.bed_area_mm2),
        "perimeter_mm": v(m.perimeter_mm),
        "length_mm": v(m.length_mm),
        "width_mm": v(m.width_mm),
        "max_depth_mm": v(m.max_depth_mm),
        "mean_depth_mm": v(m.mean_depth_mm),
        "volume_mm3": v(m.volume_mm3),
        "skin_model": skin_model(m.skin_model),
        "skin_residual_mm": m.skin_residual_mm,
        "missing_fraction": m.missing_fraction,
        "outline_method": match m.method { OutlineMethod::Automatic => "auto", OutlineMethod::ClinicianPolygon => "polygon" },
    }
}

fn skin_model(s: SkinModel) -> &'static str {
    match s {
        SkinModel::Quadratic => "quadratic",
        SkinModel::Quartic => "quartic",
    }
}

// ---------------------------------------------------------------------------------------
// scan_measurements (PostgreSQL)
// ---------------------------------------------------------------------------------------

/// Where a scan's mesh is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeshKeys {
    /// Blob key of the PLY mesh.
    pub ply_key: String,
    /// Its SHA-256 (hex).
    pub ply_sha256: String,
    /// Blob key of the binary glTF mesh.
    pub glb_key: String,
    /// Its SHA-256 (hex).
    pub glb_sha256: String,
}

struct NewMeasurement<'a> {
    scan_id: Uuid,
    method: &'static str,
    keyframe_seq: Option<u64>,
    polygon: Option<serde_json::Value>,
    m: &'a WoundMeasurements,
    mesh: Option<MeshKeys>,
    created_by: Option<Uuid>,
    at: DateTime<Utc>,
}

/// Inserts a measurement row; the automatic row of a scan is replaced (a re-run of the
/// finish hook converges). Returns the row's id.
async fn insert_measurement(pg: &PgPool, n: &NewMeasurement<'_>) -> Result<Uuid, StoreError> {
    let m = n.m;
    let conflict = if n.method == "auto" {
        "ON CONFLICT (scan_id) WHERE method = 'auto' DO UPDATE SET
            outline_area_mm2 = EXCLUDED.outline_area_mm2, outline_area_mm2_pm = EXCLUDED.outline_area_mm2_pm,
            bed_area_mm2 = EXCLUDED.bed_area_mm2, bed_area_mm2_pm = EXCLUDED.bed_area_mm2_pm,
            perimeter_mm = EXCLUDED.perimeter_mm, perimeter_mm_pm = EXCLUDED.perimeter_mm_pm,
            length_mm = EXCLUDED.length_mm, length_mm_pm = EXCLUDED.length_mm_pm,
            width_mm = EXCLUDED.width_mm, width_mm_pm = EXCLUDED.width_mm_pm,
            max_depth_mm = EXCLUDED.max_depth_mm, max_depth_mm_pm = EXCLUDED.max_depth_mm_pm,
            mean_depth_mm = EXCLUDED.mean_depth_mm, mean_depth_mm_pm = EXCLUDED.mean_depth_mm_pm,
            volume_mm3 = EXCLUDED.volume_mm3, volume_mm3_pm = EXCLUDED.volume_mm3_pm,
            skin_model = EXCLUDED.skin_model, skin_residual_mm = EXCLUDED.skin_residual_mm,
            missing_fraction = EXCLUDED.missing_fraction,
            mesh_ply_key = EXCLUDED.mesh_ply_key, mesh_ply_sha256 = EXCLUDED.mesh_ply_sha256,
            mesh_glb_key = EXCLUDED.mesh_glb_key, mesh_glb_sha256 = EXCLUDED.mesh_glb_sha256,
            created_at = EXCLUDED.created_at"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO scan_measurements (id, scan_id, method, keyframe_seq, polygon,
            outline_area_mm2, outline_area_mm2_pm, bed_area_mm2, bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm,
            length_mm, length_mm_pm, width_mm, width_mm_pm, max_depth_mm, max_depth_mm_pm,
            mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
            skin_model, skin_residual_mm, missing_fraction,
            mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                 $22, $23, $24, $25, $26, $27, $28, $29, $30)
         {conflict}
         RETURNING id"
    );
    let mesh = n.mesh.as_ref();
    let mut q = sqlx::query_scalar::<_, Uuid>(&sql)
        .bind(Uuid::now_v7())
        .bind(n.scan_id)
        .bind(n.method)
        .bind(n.keyframe_seq.map(to_i64))
        .bind(n.polygon.clone());
    for x in [
        m.outline_area_mm2,
        m.bed_area_mm2,
        m.perimeter_mm,
        m.length_mm,
        m.width_mm,
        m.max_depth_mm,
        m.mean_depth_mm,
        m.volume_mm3,
    ] {
        q = q.bind(x.value).bind(x.uncertainty);
    }
    q.bind(skin_model(m.skin_model))
        .bind(m.skin_residual_mm)
        .bind(m.missing_fraction)
        .bind(mesh.map(|k| k.ply_key.clone()))
        .bind(mesh.map(|k| k.ply_sha256.clone()))
        .bind(mesh.map(|k| k.glb_key.clone()))
        .bind(mesh.map(|k| k.glb_sha256.clone()))
        .bind(n.created_by)
        .bind(n.at)
        .fetch_one(pg)
        .await
        .map_err(|e| pg_error(&e))
}

pub async fn auto_mesh_keys(pg: &PgPool, scan_id: Uuid) -> Result<Option<MeshKeys>, StoreError> {
    let row = sqlx::query(
        "SELECT mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256 FROM scan_measurements
         WHERE scan_id = $1 AND method = 'auto' AND mesh_ply_key IS NOT NULL",
    )
    .bind(scan_id)
    .fetch_optional(pg)
    .await
    .map_err(|e| pg_error(&e))?;
    Ok(row.map(|r| MeshKeys {
        ply_key: r.get("mesh_ply_key"),
        ply_sha256: r.get("mesh_ply_sha256"),
        glb_key: r.get("mesh_glb_key"),
        glb_sha256: r.get("mesh_glb_sha256"),
    }))
}

/// A value and its uncertainty: the true value lies in `value ± uncertainty`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ValuePm {
    pub value: f64,
    pub uncertainty: f64,
}

/// One set of wound measurements of a scan (mm, mm², mm³).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeasurementRecord {
    pub id: Uuid,
    pub scan_id: Uuid,
    /// `auto` (segmented at finish) or `polygon` (clinician-drawn outline).
    pub method: String,
    /// Polygon only: the keyframe the outline was drawn on.
    pub keyframe_seq: Option<i64>,
    /// Polygon only: the outline in the keyframe's image coordinates.
    #[schema(value_type = Option<Vec<Vec<f64>>>)]
    pub polygon: Option<serde_json::Value>,
    /// Area enclosed by the outline on the skin surface (the clinical wound area).
    pub outline_area_mm2: ValuePm,
    pub bed_area_mm2: ValuePm,
    pub perimeter_mm: ValuePm,
    pub length_mm: ValuePm,
    pub width_mm: ValuePm,
    pub max_depth_mm: ValuePm,
    pub mean_depth_mm: ValuePm,
    pub volume_mm3: ValuePm,
    /// `quadratic` or `quartic`.
    pub skin_model: String,
    pub skin_residual_mm: f64,
    pub missing_fraction: f64,
    pub mesh: Option<MeshKeys>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The scan's measurements, oldest first.
pub async fn list_measurements(pg: &PgPool, scan_id: Uuid) -> Result<Vec<MeasurementRecord>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM scan_measurements WHERE scan_id = $1 ORDER BY created_at, id")
        .bind(scan_id)
        .fetch_all(pg)
        .await?;
    let pm = |r: &sqlx::postgres::PgRow, c: &str| ValuePm {
        value: r.get(c),
        uncertainty: r.get(format!("{c}_pm").as_str()),
    };
    Ok(rows
        .iter()
        .map(|r| {
            let ply_key: Option<String> = r.get("mesh_ply_key");
            MeasurementRecord {
                id: r.get("id"),
                scan_id: r.get("scan_id"),
                method: r.get("method"),
                keyframe_seq: r.get("keyframe_seq"),
                polygon: r.get("polygon"),
                outline_area_mm2: pm(r, "outline_area_mm2"),
                bed_area_mm2: pm(r, "bed_area_mm2"),
                perimeter_mm: pm(r, "perimeter_mm"),
                length_mm: pm(r, "length_mm"),
                width_mm: pm(r, "width_mm"),
                max_depth_mm: pm(r, "max_depth_mm"),
                mean_depth_mm: pm(r, "mean_depth_mm"),
                volume_mm3: pm(r, "volume_mm3"),
                skin_model: r.get("skin_model"),
                skin_residual_mm: r.get("skin_residual_mm"),
                missing_fraction: r.get("missing_fraction"),
                mesh: ply_key.map(|ply_key| MeshKeys {
                    ply_key,
                    ply_sha256: r.get::<Option<String>, _>("mesh_ply_sha256").unwrap_or_default(),
                    glb_key: r.get::<Option<String>, _>("mesh_glb_key").unwrap_or_default(),
                    glb_sha256: r.get::<Option<String>, _>("mesh_glb_sha256").unwrap_or_default(),
                }),
                created_by: r.get("created_by"),
                created_at: r.get("created_at"),
            }
        })
        .collect())
}
