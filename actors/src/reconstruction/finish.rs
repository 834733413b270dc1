//! The finish step of a scan, run by its [`super::Reconstruction`] actor, and the
//! [`Reconstructor`] that starts it: the capture sessions' [`FinishHook`], the stale-scan
//! recovery and the clinician re-measurement.
//!
//! When a stream finishes:
//!
//! 0. it waits while phones are still streaming to this node (until no frame has arrived
//!    for [`FINISH_QUIET`]), for at most the configured defer: the acks of the scans still
//!    streaming come first, and the scan stays `processing` meanwhile;
//! 1. unless live fusion holds every frame, it reads the scan's stored `frame` messages
//!    back through the [`FrameReader`], in seq order;
//! 2. on a thread of its own, once one of the pool's per-core permits is free (many
//!    finishing scans share the CPU fairly, and never on the I/O threads), at normal
//!    priority while no phone streams to this node and at the live-fusion priority from the
//!    moment one does (a thread cannot raise its priority again, hence a thread per job):
//!    decodes the frames and fuses them, or takes the live volume, through the one fusion
//!    policy ([`coherency_recon::fusion`]), then meshes and measures; then colours the mesh
//!    from a bounded choice of the colour frames and analyses the tissue inside the
//!    automatic outline ([`super::colour`]; after live fusion only the stored frames that
//!    carry a colour image are read back, for their colour);
//! 3. stores the mesh (PLY, and GLB with `COLOR_0` when it was coloured), the automatic
//!    measurement with its tissue composition or the reason there is none (idempotent) and
//!    the reconstruction document through the [`ReconstructionSink`].
//!
//! While a scan is here its `updated_at` is touched every quarter of the stale bound
//! ([`Reconstructor::with_stale_after`]), so a node that is merely slow never has its scan
//! taken over. Quality records lost on the way (a full queue, a stopped node) are rebuilt
//! from the stored frames.
//!
//! Outcomes: no usable frame fails the scan. Otherwise the scan's reconstruction outcome is
//! stored with its mesh ([`NewReconstruction`]): `measured` beside the automatic
//! measurement, or, when the surface is built but the automatic segmentation finds no
//! wound near the target, `needs_outline` with a stable reason code ([`failure_reason`]) and
//! a suggested keyframe ([`super::keyframe`]): the scan still completes, its mesh is served,
//! and a clinician can draw the outline.

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{decode_client, ClientMsg};
use coherency_protocol::{Code, ErrorCode};
use coherency_recon::colour::{CardCalibration, TissueComposition};
use coherency_recon::fusion::{parameters, refuse_bytes, Accepted, FusedScan, Measured};
use coherency_recon::measure::{OutlineMethod, SkinModel};
use coherency_recon::{Frame, ReconError, ScanFusion, WoundMeasurements};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::colour::{self, Choosing, ColourFrames};
use super::keyframe::{mean_view, suggest, surface_normal, Candidate};
use super::live::LiveResult;
use super::pool::ReconstructionPool;
use super::ports::{
    FailureReason, FrameLocation, FrameReader, MeasureMethod, MeshFormat, MeshKeys, NewMeasurement, NewReconstruction,
    ReconOutcome, ReconstructionDoc, ReconstructionSink, RecordedCard, SuggestedKeyframe, ValuePm, WoundFigures,
};
use super::{lower_priority_to, to_recon_frame};
use crate::capture::activity::{since_last_frame, wait_for_quiet};
use crate::retry::RetryPolicy;
use crate::stats::CaptureStats;
use crate::store::{process_finished, FinishHook, FinishedScan, QualityRecord, QualitySink, ScanIndex, StoreError};

/// How long no frame must have arrived on the node before a deferred finish starts.
pub const FINISH_QUIET: Duration = Duration::from_secs(1);
/// How many more times a gap in a scan's quality records is read before it is rebuilt.
const QUALITY_RECHECKS: u32 = 3;
/// Most scans one recovery pass takes over.
const RECOVER_BATCH: usize = 16;

/// Counts a request's allocations on the thread that works for it, and refuses work that
/// would exceed its budget. The server implements it over its counting allocator.
pub trait WorkBudget: Send + Sync + 'static {
    /// Makes the request's account current on the calling thread until the guard drops.
    fn enter(&self) -> Box<dyn std::any::Any>;
    /// Refuses `bytes` of `what` when they would exceed the request's budget (the reason).
    fn check(&self, what: &'static str, bytes: usize) -> Result<(), String>;
}

/// A clinician's re-measurement of a finished scan.
pub struct RemeasureRequest {
    pub scan_id: ScanId,
    /// The frame the outline was drawn on.
    pub keyframe_seq: u64,
    /// The outline, `[u, v]` pixels of that frame.
    pub polygon: Vec<[f64; 2]>,
    /// Who drew it.
    pub created_by: Uuid,
    /// The request's allocation budget, if it has one.
    pub budget: Option<Arc<dyn WorkBudget>>,
    /// Store the measurement, or only answer it.
    pub mode: RemeasureMode,
}

/// What becomes of a re-measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemeasureMode {
    /// Stored as a new measurement of the scan.
    Store,
    /// Computed exactly as [`RemeasureMode::Store`] computes it, stored nowhere: the
    /// clinician sees it before confirming (storing the same outline).
    Preview,
}

/// A re-measurement: the measurement, and the id it was stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct Remeasured {
    /// `None` for a [`RemeasureMode::Preview`].
    pub id: Option<Uuid>,
    pub measurement: NewMeasurement,
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
    /// The outline cannot be measured (outside the keyframe, misses the surface, too few
    /// points...).
    #[error("{0}")]
    Outline(String),
    /// Re-fusing the scan would take the request past its allocation budget.
    #[error("{0}")]
    TooLarge(String),
    /// Storage failed.
    #[error("{0}")]
    Store(StoreError),
    /// This node runs no reconstruction.
    #[error("reconstruction is not running on this node")]
    Unavailable,
}

impl ErrorCode for RemeasureError {
    fn code(&self) -> Code {
        match self {
            RemeasureError::NoKeyframe | RemeasureError::Outline(_) => Code::InvalidField,
            RemeasureError::NoFrames => Code::Conflict,
            RemeasureError::TooLarge(_) => Code::PayloadTooLarge,
            RemeasureError::Store(e) => e.code(),
            RemeasureError::Unavailable => Code::Unavailable,
        }
    }
}

/// Checks an outline against an image of `width × height` before any work (the bounds of
/// `coherency_recon::measure::check_outline`).
pub fn check_outline(polygon: &[[f64; 2]], width: u32, height: u32) -> Result<(), RemeasureError> {
    coherency_recon::measure::check_outline(polygon, width, height).map_err(|e| RemeasureError::Outline(e.to_string()))
}

/// Most vertices an outline may have.
pub const MAX_OUTLINE_POINTS: usize = coherency_recon::measure::MAX_OUTLINE_POINTS;

pub(super) struct Inner {
    pub(super) pool: ReconstructionPool,
    reader: Arc<dyn FrameReader>,
    sink: Arc<dyn ReconstructionSink>,
    quality: Arc<dyn QualitySink>,
    index: Arc<dyn ScanIndex>,
    /// Longest a finish waits for phones to stop streaming here.
    defer_max: Duration,
    /// How often a scan being finished has its `updated_at` touched (zero: never).
    heartbeat: Duration,
    /// Pause between reads of a scan's quality records while a gap remains.
    recheck_every: Duration,
}

/// Starts and serves reconstructions over the node's stores. Cheap to clone.
#[derive(Clone)]
pub struct Reconstructor(Arc<Inner>);

impl std::fmt::Debug for Reconstructor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconstructor").field("pool", &self.0.pool).finish()
    }
}

/// A finish for a scan's actor to run.
pub(crate) struct FinishJob {
    recon: Reconstructor,
    /// Where the finish step runs (the caller's runtime, at normal priority).
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) scan_id: ScanId,
    last_seq: u64,
    quality_dropped: u64,
}

impl Reconstructor {
    /// Reconstructions on `pool`, reading through `reader`, storing through `sink`,
    /// rebuilding lost quality records into `quality` and touching scans through `index`.
    pub fn new(
        pool: ReconstructionPool,
        reader: Arc<dyn FrameReader>,
        sink: Arc<dyn ReconstructionSink>,
        quality: Arc<dyn QualitySink>,
        index: Arc<dyn ScanIndex>,
    ) -> Self {
        Self(Arc::new(Inner {
            pool,
            reader,
            sink,
            quality,
            index,
            defer_max: Duration::ZERO,
            heartbeat: Duration::ZERO,
            recheck_every: Duration::from_secs(1),
        }))
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Inner {
            pool: shared.pool.clone(),
            reader: shared.reader.clone(),
            sink: shared.sink.clone(),
            quality: shared.quality.clone(),
            index: shared.index.clone(),
            defer_max: shared.defer_max,
            heartbeat: shared.heartbeat,
            recheck_every: shared.recheck_every,
        });
        f(&mut inner);
        Self(Arc::new(inner))
    }

    /// Scans still `processing` after `stale` count as abandoned and are taken over
    /// (zero: never): while a scan is being finished here its `updated_at` is touched every
    /// quarter of that, so it never looks abandoned.
    pub fn with_stale_after(self, stale: Duration) -> Self {
        self.with(|i| i.heartbeat = stale / 4)
    }

    /// A finish first waits until no frame has arrived on this node for [`FINISH_QUIET`],
    /// for at most `max` (zero, the default: it starts at once).
    pub fn with_finish_defer(self, max: Duration) -> Self {
        self.with(|i| i.defer_max = max)
    }

    /// How long to wait between reads of a scan's quality records while some are missing
    /// (default 1 s).
    pub fn with_quality_recheck(self, every: Duration) -> Self {
        self.with(|i| i.recheck_every = every)
    }

    /// The arbiters the scans' actors run on.
    pub(super) fn inner(&self) -> &Inner {
        &self.0
    }

    pub fn pool(&self) -> &ReconstructionPool {
        &self.0.pool
    }

    /// The scan's stored frame index and frame `seq` read and decoded alone: the first step
    /// of every re-fusion, before the other frames are read.
    pub(super) async fn read_keyframe(
        &self,
        scan_id: ScanId,
        seq: u64,
    ) -> Result<(Vec<FrameLocation>, Frame), RemeasureError> {
        let reader = &*self.0.reader;
        let index = reader.locate(scan_id).await.map_err(RemeasureError::Store)?;
        if index.is_empty() {
            return Err(RemeasureError::NoFrames);
        }
        let at = index.iter().position(|r| r.seq == seq).ok_or(RemeasureError::NoKeyframe)?;
        let raw = read_raw(reader, &index[at..=at]).await.map_err(RemeasureError::Store)?;
        let key = decode_frames(scan_id, raw, &BTreeSet::new(), &mut || {})
            .map_err(RemeasureError::Store)?
            .frames
            .pop()
            .ok_or(RemeasureError::NoKeyframe)?
            .1;
        Ok((index, key))
    }

    /// Every stored frame of `index`, once the re-fusion of frames of `pixels` pixels each
    /// is sized against the request's `budget` (refused before anything more is read).
    pub(super) async fn read_within_budget(
        &self,
        index: &[FrameLocation],
        pixels: usize,
        budget: Option<&Arc<dyn WorkBudget>>,
    ) -> Result<Vec<(u64, Bytes)>, RemeasureError> {
        if let Some(budget) = budget {
            let stored =
                index.iter().map(|r| usize::try_from(r.length).unwrap_or(usize::MAX)).fold(0, usize::saturating_add);
            budget
                .check("re-fusing the scan", refuse_bytes(stored, index.len(), pixels))
                .map_err(RemeasureError::TooLarge)?;
        }
        read_raw(&*self.0.reader, index).await.map_err(RemeasureError::Store)
    }

    /// What the scan's finish recorded of a colour checker (a remeasure reports the finish's
    /// card calibration rather than detecting the card again).
    pub(crate) async fn recorded_card(&self, scan_id: ScanId) -> Result<RecordedCard, RemeasureError> {
        self.0.sink.recorded_card(scan_id).await.map_err(RemeasureError::Store)
    }

    /// Re-measures a scan with a clinician-drawn outline on one of its frames, fusing the
    /// stored frames again (the volume is not kept: it is cheap to rebuild and this keeps
    /// the result reproducible), and stores the measurement unless the request is a
    /// preview; answers the measurement and, once stored, its id. A preview and the stored
    /// measurement of the same outline are computed by this one path, so they are equal.
    ///
    /// The keyframe is read alone first and the outline checked against its image, and
    /// the whole re-fusion sized against the request's budget, before the scan's other
    /// frames are read or fused.
    pub async fn remeasure(&self, req: RemeasureRequest) -> Result<Remeasured, RemeasureError> {
        let inner = &self.0;
        let (index, key) = self.read_keyframe(req.scan_id, req.keyframe_seq).await?;
        let (k, pose) = (key.intrinsics, key.pose);
        check_outline(&req.polygon, k.width, k.height)?;
        let raw = self.read_within_budget(&index, k.pixel_count(), req.budget.as_ref()).await?;
        let (scan_id, polygon, nice) = (req.scan_id, req.polygon.clone(), inner.pool.nice());
        let card = self.recorded_card(scan_id).await?;
        let (m, tissue) = on_cpu(inner.pool.cpu(), req.budget.clone(), nice, move || {
            let mut step = || step_aside_if_streaming(nice);
            let frames =
                decode_frames(scan_id, raw.clone(), &BTreeSet::new(), &mut step).map_err(RemeasureError::Store)?.frames;
            let fused = ScanFusion::fuse_all(&frames, &mut step).map_err(|e| RemeasureError::Outline(e.to_string()))?;
            drop(frames);
            let m = fused.measure_polygon(&polygon, &k, &pose).map_err(|e| RemeasureError::Outline(e.to_string()))?;
            // The tissue inside the clinician's outline, on the same mesh the finish coloured.
            let colour = ColourFrames::choose(&raw, Choosing::Colours, &mut step);
            drop(raw);
            let mesh = fused.mesh();
            drop(fused);
            let coloured = colour.colour(&mesh);
            let tissue = colour::tissue(&mesh, coloured.as_ref(), colour.unavailable(), &m, &[]);
            Ok::<_, RemeasureError>((m, colour::outcome(&tissue, colour.recorded_card(card).as_ref())))
        })
        .await
        .map_err(RemeasureError::Store)??;
        let mesh = inner.sink.reconstruction_mesh(scan_id).await.map_err(RemeasureError::Store)?;
        let row = NewMeasurement {
            scan_id,
            method: MeasureMethod::Polygon,
            keyframe_seq: Some(req.keyframe_seq),
            polygon: Some(req.polygon),
            figures: figures(&m),
            mesh,
            created_by: Some(req.created_by),
            tissue,
        };
        let id = match req.mode {
            RemeasureMode::Store => Some(inner.sink.write_measurement(&row).await.map_err(RemeasureError::Store)?),
            RemeasureMode::Preview => None,
        };
        Ok(Remeasured { id, measurement: row })
    }

    /// Reconstructs the scans other nodes left `processing` for longer than `stale`, every
    /// quarter of `stale` (1–60 s), for the life of the process; `stale` zero: never. Every
    /// step is idempotent, so a scan taken over twice ends the same.
    pub fn spawn_recovery(&self, stale: Duration, retry: RetryPolicy) {
        if stale.is_zero() {
            return;
        }
        let every = (stale / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                this.recover_stale(stale, &retry).await;
            }
        });
    }

    /// Takes over at most [`RECOVER_BATCH`] stale scans; answers how many.
    pub async fn recover_stale(&self, stale: Duration, retry: &RetryPolicy) -> usize {
        let index = self.0.index.clone();
        let mut taken = 0;
        while taken < RECOVER_BATCH {
            let (scan_id, last_seq) = match index.claim_stale(stale).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for scans left processing");
                    break;
                }
            };
            tracing::warn!(%scan_id, "scan left processing by a stopped node; reconstructing it here");
            let scan = FinishedScan { live: None, scan_id, last_seq, quality_dropped: 0 };
            process_finished(Arc::new(self.clone()), index.clone(), retry, scan).await;
            taken += 1;
        }
        taken
    }

    /// Touches the scan's `updated_at` every heartbeat for as long as the guard lives.
    fn keep_fresh(&self, scan_id: ScanId) -> Option<AbortOnDrop> {
        let every = self.0.heartbeat;
        if every.is_zero() {
            return None;
        }
        let index = self.0.index.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = index.touch_processing(scan_id).await {
                    tracing::warn!(%scan_id, error = %e, "processing scan not touched; it may be taken over as stale");
                }
            }
        })))
    }

    /// The seqs `1..=last_seq` with no quality record (lost with a node that stopped
    /// before writing them, or dropped when the queue was full). Empty when the records
    /// cannot be read: they are derived data, and the session's writer is still retrying
    /// them then. The session's writer may still be writing its last records: a gap is
    /// read again [`QUALITY_RECHECKS`] times before it counts as lost.
    async fn missing_quality(&self, scan_id: ScanId, last_seq: u64) -> BTreeSet<u64> {
        let mut missing = BTreeSet::new();
        for attempt in 0..=QUALITY_RECHECKS {
            if attempt > 0 {
                tokio::time::sleep(self.0.recheck_every).await;
            }
            missing = match self.0.reader.quality_seqs(scan_id).await {
                Ok(seqs) => {
                    let have: HashSet<u64> = seqs.into_iter().collect();
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
}

#[async_trait]
impl FinishHook for Reconstructor {
    async fn on_finish(&self, scan: FinishedScan) -> Result<(), StoreError> {
        let _fresh = self.keep_fresh(scan.scan_id);
        let actor = match scan.live {
            Some(live) => live,
            None => self
                .0
                .pool
                .start_idle()
                .ok_or_else(|| StoreError::Permanent("reconstruction: no arbiter to run on".into()))?,
        };
        let job = FinishJob {
            recon: self.clone(),
            runtime: tokio::runtime::Handle::current(),
            scan_id: scan.scan_id,
            last_seq: scan.last_seq,
            quality_dropped: scan.quality_dropped,
        };
        actor.finish(job).await
    }
}

/// Ends a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the CPU part of a finish produced.
struct Built {
    fused: FusedScan,
    measured: Measured,
    /// `live` (fused while streaming) or `at_finish` (fused from the stored frames).
    mode: &'static str,
    /// The colour frames chosen to colour the mesh.
    colour: ColourFrames,
    /// Choosing and decoding them, colouring the mesh and the tissue analysis.
    colour_ms: f64,
    /// The GLB with its vertex colours (`None`: nothing coloured it; the plain one stands).
    glb_coloured: Option<Vec<u8>>,
    /// The automatic measurement's tissue composition (`None`: no automatic measurement).
    tissue: Option<Result<TissueComposition, String>>,
    /// A colour checker's calibration, when one was seen in the colour frames.
    card: Option<CardCalibration>,
}

/// The finish step of one scan (see the module docs), with its live fusion if it has one.
pub(crate) async fn run(job: FinishJob, live: Option<LiveResult>) -> Result<(), StoreError> {
    let FinishJob { recon, scan_id, last_seq, quality_dropped, .. } = job;
    let inner = &recon.0;
    let sink = &inner.sink;
    let started = sink.now();
    let deferred_ms =
        if inner.defer_max.is_zero() { 0.0 } else { ms_of(wait_for_quiet(FINISH_QUIET, inner.defer_max).await) };
    let t0 = Instant::now();
    // Frames live fusion skipped because it was behind (None: no live fusion).
    let live_skipped = live.as_ref().map(|l| l.skipped_load);
    let live = match live {
        Some(l) if l.complete && l.last_seq == last_seq => Some((l.fusion, l.colour_seqs)),
        Some(l) => {
            tracing::info!(skipped = l.skipped_load, "live fusion incomplete; fusing the stored frames");
            None
        }
        None => None,
    };
    let missing = recon.missing_quality(scan_id, last_seq).await;
    let (nice, cpu) = (inner.pool.nice(), inner.pool.cpu());
    let (work, n_frames, load_ms, rebuilt) = match live {
        Some((fusion, colour_seqs)) if missing.is_empty() => {
            // Live fusion holds the geometry; only the frames with a colour image are read
            // back, for the mesh's colours (none: nothing is read).
            let raw = match colour_seqs.is_empty() {
                true => Vec::new(),
                false => {
                    let wanted: HashSet<u64> = colour_seqs.into_iter().collect();
                    let mut index = inner.reader.locate(scan_id).await?;
                    index.retain(|r| wanted.contains(&r.seq));
                    read_raw(&*inner.reader, &index).await?
                }
            };
            let load_ms = ms(t0);
            let work = on_cpu(cpu, None, nice, move || finish_work(Some(fusion), &[], &raw, nice)).await?;
            (work, usize::try_from(last_seq).unwrap_or(usize::MAX), load_ms, Vec::new())
        }
        live => {
            let live = live.map(|(fusion, _)| fusion);
            let index = inner.reader.locate(scan_id).await?;
            let raw = read_raw(&*inner.reader, &index).await?;
            on_cpu(cpu, None, nice, move || {
                let decoded = decode_frames(scan_id, raw.clone(), &missing, &mut || step_aside_if_streaming(nice))?;
                let (n, load_ms) = (decoded.frames.len(), ms(t0));
                Ok::<_, StoreError>((finish_work(live, &decoded.frames, &raw, nice), n, load_ms, decoded.quality))
            })
            .await??
        }
    };
    let quality_rebuilt = match rebuilt.is_empty() {
        true => 0,
        false => match inner.quality.write_quality(&rebuilt).await {
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
    let mut doc = Map::new();
    doc.insert("scan_id".into(), json!(scan_id.to_string()));
    doc.insert(
        "inputs".into(),
        json!({ "last_seq": to_i64(last_seq), "frames_stored": to_i64(n_frames as u64),
                "quality_dropped": to_i64(quality_dropped), "quality_rebuilt": to_i64(quality_rebuilt as u64) }),
    );
    doc.insert("parameters".into(), parameters_doc());
    let Built { fused, measured, mode, colour, colour_ms, glb_coloured, tissue, card } = match work {
        Ok(w) => w,
        Err(e) => {
            doc.insert("status".into(), json!("failed"));
            doc.insert("error".into(), json!(e.to_string()));
            doc.insert("timings_ms".into(), json!({ "load": load_ms }));
            sink.write_document(scan_id, ReconstructionDoc { started_at: started, body: doc }).await?;
            return Err(StoreError::Permanent(format!("recon: {e}")));
        }
    };
    let Measured { ply, glb, triangles, mesh_ms, coverage, measured, measure_ms, .. } = measured;
    if let Some(photos) = colour.photos() {
        sink.write_photos(scan_id, photos).await?;
    }
    let coloured = glb_coloured.is_some();
    let glb = glb_coloured.unwrap_or(glb);
    let t = Instant::now();
    let ply = sink.put_mesh(scan_id, MeshFormat::Ply, Bytes::from(ply)).await?;
    let glb = sink.put_mesh(scan_id, MeshFormat::Glb, Bytes::from(glb)).await?;
    let store_mesh_ms = ms(t);
    let tp = fused.target;
    doc.insert(
        "target".into(),
        json!({
            "world_m": [tp.x, tp.y, tp.z],
            "method": "centre ray of the middle frame",
            "middle_seq": to_i64(fused.middle_seq),
            "on_fused_surface": fused.target_from_surface,
        }),
    );
    doc.insert(
        "quality".into(),
        json!({
            "fusion": mode,
            "live_skipped_load": live_skipped.map(to_i64),
            "frames_fused": to_i64(fused.fused),
            "frames_rejected": fused.rejected.iter().map(|(s, c)| json!({"seq": to_i64(*s), "code": *c})).collect::<Vec<_>>(),
            "bricks": to_i64(coverage.bricks as u64),
            "memory_bytes": to_i64(coverage.memory_bytes as u64),
            "observed_fraction": coverage.observed_fraction,
            "view_spread_deg": coverage.view_spread_deg,
            "median_surface_weight": coverage.median_surface_weight,
        }),
    );
    doc.insert(
        "colour".into(),
        json!({
            "frames": colour.doc(),
            "vertex_colours": coloured,
            "unavailable": colour.unavailable(),
            "tissue": match &tissue {
                Some(Ok(t)) => json!({ "classifier": t.classifier, "coloured_fraction": t.coloured_fraction,
                                      "calibration": t.calibration.source.as_str() }),
                Some(Err(code)) => json!({ "unavailable": code }),
                None => Value::Null,
            },
            "card": card.as_ref().map(|c| json!({ "views_detected": c.views_detected, "best_view": c.view,
                                                  "median_delta_e00": c.median_delta_e,
                                                  "gains": c.calibration.gains,
                                                  "samples": c.calibration.samples })),
            "ms": colour_ms,
        }),
    );
    doc.insert(
        "mesh".into(),
        json!({
            "colour_0": coloured,
            "triangles": to_i64(triangles as u64),
            "ply": { "key": &ply.key, "sha256": &ply.sha256, "size": to_i64(ply.size) },
            "glb": { "key": &glb.key, "sha256": &glb.sha256, "size": to_i64(glb.size) },
        }),
    );
    let mesh = MeshKeys { ply_key: ply.key, ply_sha256: ply.sha256, glb_key: glb.key, glb_sha256: glb.sha256 };
    // The frame a clinician draws (or adjusts) an outline on, whether or not the automatic
    // measurement succeeded.
    let keyframe = suggested_keyframe(&fused).map(Box::new);
    doc.insert("suggested_keyframe_seq".into(), json!(keyframe.as_ref().map(|k| to_i64(k.seq))));
    let m = match measured {
        Ok(m) => m,
        Err(e) => {
            // The surface exists; only the automatic outline failed. The scan completes
            // `needs_outline`, with its mesh, the reason and a suggested keyframe, so a
            // clinician can draw the outline.
            let reason = failure_reason(&e);
            doc.insert("status".into(), json!("complete"));
            doc.insert("outcome".into(), json!("needs_outline"));
            doc.insert("measurement_error".into(), json!(e.to_string()));
            doc.insert("reason_code".into(), json!(reason.code));
            let row = NewReconstruction { scan_id, outcome: ReconOutcome::NeedsOutline { reason, keyframe }, mesh };
            sink.write_reconstruction(&row).await?;
            doc.insert(
                "timings_ms".into(),
                json!({ "deferred": deferred_ms, "load": load_ms, "fuse": fused.fuse_ms, "mesh": mesh_ms,
                        "measure": measure_ms, "store_mesh": store_mesh_ms, "total": ms(t0) }),
            );
            sink.write_document(scan_id, ReconstructionDoc { started_at: started, body: doc }).await?;
            tracing::info!(
                frames = fused.fused,
                "scan reconstructed; no automatic outline, needs a clinician's outline"
            );
            return Ok(());
        }
    };
    let t = Instant::now();
    let row = NewMeasurement {
        scan_id,
        method: MeasureMethod::Auto,
        keyframe_seq: None,
        polygon: None,
        figures: figures(&m),
        mesh: Some(mesh.clone()),
        created_by: None,
        tissue: colour::outcome(
            &tissue.unwrap_or_else(|| Err(colour::NO_COLOUR_FRAMES.to_owned())),
            card.as_ref().map(|c| &c.calibration),
        ),
    };
    let id = sink.write_measurement(&row).await?;
    sink.write_reconstruction(&NewReconstruction { scan_id, outcome: ReconOutcome::Measured { keyframe }, mesh })
        .await?;
    let pg_ms = ms(t);
    doc.insert("status".into(), json!("complete"));
    doc.insert("outcome".into(), json!("measured"));
    doc.insert("measurement_id".into(), json!(id.to_string()));
    doc.insert("measurements".into(), measurements_doc(&m));
    doc.insert(
        "timings_ms".into(),
        json!({ "deferred": deferred_ms, "load": load_ms, "fuse": fused.fuse_ms, "mesh": mesh_ms,
                "measure": measure_ms, "store_mesh": store_mesh_ms, "store_measurements": pg_ms, "total": ms(t0) }),
    );
    sink.write_document(scan_id, ReconstructionDoc { started_at: started, body: doc }).await?;
    tracing::info!(frames = fused.fused, total_ms = ms(t0), "scan reconstructed and measured");
    Ok(())
}

/// The CPU part of a finish: the live fusion (else fusion of `frames`), its mesh, coverage
/// and automatic measurement; then the mesh's colours from the colour frames among `raw`
/// (the stored messages) and the automatic measurement's tissue composition.
fn finish_work(
    live: Option<ScanFusion>,
    frames: &[(u64, Frame)],
    raw: &[(u64, Bytes)],
    nice: i32,
) -> Result<Built, ReconError> {
    let mut step = || step_aside_if_streaming(nice);
    let (fused, mode) = match live {
        Some(f) => (f.finish()?, "live"),
        None => (ScanFusion::fuse_all(frames, &mut step)?, "at_finish"),
    };
    step();
    let measured = fused.mesh_and_measure(&mut step);
    let t = Instant::now();
    let colour = ColourFrames::choose(raw, Choosing::ColoursAndPhotos, &mut step);
    let coloured = colour.colour(&measured.mesh);
    let tissue = measured
        .measured
        .as_ref()
        .ok()
        .map(|m| colour::tissue(&measured.mesh, coloured.as_ref(), colour.unavailable(), m, &[]));
    let card = colour.card();
    let glb_coloured =
        colour::coloured_glb(&measured.mesh, coloured.as_ref(), tissue.as_ref(), card.as_ref().map(|c| &c.calibration));
    drop(coloured);
    let colour_ms = ms(t);
    Ok(Built { fused, measured, mode, colour, colour_ms, glb_coloured, tissue, card })
}

/// Reconstructs `frames` (their stored messages `raw`) on the calling thread as a finish
/// does, for the demo scan ([`super::demo`]): the mesh as PLY and as GLB (with its colours),
/// the automatic measurement's figures and its tissue.
pub(crate) fn reconstruct_in_process(
    frames: &[(u64, Frame)],
    raw: &[(u64, Bytes)],
) -> Result<super::demo::DemoScan, String> {
    let built = finish_work(None, frames, raw, 0).map_err(|e| e.to_string())?;
    let Built { measured, glb_coloured, tissue, card, .. } = built;
    let figures = measured.measured.as_ref().ok().map(figures);
    let tissue = colour::outcome(
        &tissue.unwrap_or_else(|| Err(colour::NO_COLOUR_FRAMES.to_owned())),
        card.as_ref().map(|c| &c.calibration),
    );
    Ok(super::demo::DemoScan { ply: measured.ply, glb: glb_coloured.unwrap_or(measured.glb), figures, tissue })
}

/// Runs `f` once a core is free, on a thread of its own: at normal priority while no phone
/// streams to this node, at the live-fusion priority as soon as one does
/// ([`step_aside_if_streaming`]). The thread ends with the work, so a lowered priority never
/// reaches other work. A request waiting on the work counts its allocations there.
pub(super) async fn on_cpu<T: Send + 'static>(
    cpu: &Arc<Semaphore>,
    budget: Option<Arc<dyn WorkBudget>>,
    nice: i32,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    let _permit = cpu.clone().acquire_owned().await.map_err(|_| StoreError::Permanent("recon: pool closed".into()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("recon-finish".into())
        .spawn(move || {
            let _account = budget.as_ref().map(|b| b.enter());
            step_aside_if_streaming(nice);
            let _ = tx.send(f());
        })
        .map_err(|e| StoreError::Transient(format!("recon: no thread: {e}")))?;
    rx.await.map_err(|_| StoreError::Permanent("recon: worker panicked".into()))
}

/// Lowers the calling reconstruction thread to the live-fusion priority if a phone has
/// streamed to this node within [`FINISH_QUIET`]; called when the thread starts and between
/// frames. Until then it keeps normal priority: with nobody streaming there are no acks to
/// make way for, and at the lower priority a reconstruction competing with busy processes
/// outside the node runs many times slower. Once lowered it stays lowered until the thread
/// ends with its work.
pub(super) fn step_aside_if_streaming(nice: i32) {
    thread_local! {
        static LOWERED: Cell<bool> = const { Cell::new(false) };
    }
    if !LOWERED.get() && since_last_frame().is_some_and(|d| d < FINISH_QUIET) {
        lower_priority_to(nice);
        LOWERED.set(true);
    }
}

/// Reads the stored `frame` messages at `index` (slices of their chunks, each chunk read
/// once).
pub(super) async fn read_raw(
    reader: &dyn FrameReader,
    index: &[FrameLocation],
) -> Result<Vec<(u64, Bytes)>, StoreError> {
    let mut out = Vec::with_capacity(index.len());
    let mut chunk: Option<(&str, Bytes)> = None;
    for row in index {
        let bytes = match &chunk {
            Some((k, b)) if *k == row.chunk_key => b.clone(),
            _ => {
                let b = reader.read_chunk(&row.chunk_key).await?;
                chunk = Some((&row.chunk_key, b.clone()));
                b
            }
        };
        let slice = usize::try_from(row.offset)
            .ok()
            .zip(usize::try_from(row.length).ok())
            .and_then(|(start, len)| start.checked_add(len).map(|end| (start, end)))
            .filter(|&(_, end)| end <= bytes.len())
            .ok_or_else(|| StoreError::Permanent("recon: frame outside its chunk".into()))?;
        out.push((row.seq, bytes.slice(slice.0..slice.1)));
    }
    Ok(out)
}

/// Stored frames decoded for reconstruction, and the quality records rebuilt on the way.
pub(super) struct Decoded {
    pub(super) frames: Vec<(u64, Frame)>,
    quality: Vec<QualityRecord>,
}

/// Decodes stored `frame` messages into reconstruction frames; a frame that decodes but
/// cannot be used (its depth or pose is unusable) is left out with a warning. The quality
/// records of the seqs in `rebuild` are computed again (every frame goes through one
/// `CaptureStats` in seq order, so pose jumps are measured as during capture).
pub(super) fn decode_frames(
    scan_id: ScanId,
    raw: Vec<(u64, Bytes)>,
    rebuild: &BTreeSet<u64>,
    between: &mut dyn FnMut(),
) -> Result<Decoded, StoreError> {
    let mut frames = Vec::with_capacity(raw.len());
    let mut quality = Vec::with_capacity(rebuild.len());
    let mut stats = CaptureStats::default();
    for (seq, msg) in raw {
        between();
        match decode_client(&msg) {
            Ok(ClientMsg::Frame(f)) => {
                if !rebuild.is_empty() {
                    let v = stats.observe_frame(&f);
                    if rebuild.contains(&seq) {
                        quality.push(QualityRecord::of(scan_id, &f, &v));
                    }
                }
                match to_recon_frame(&f) {
                    Ok(frame) => frames.push((seq, frame)),
                    Err(e) => tracing::warn!(seq, error = %e, "stored frame not usable for reconstruction"),
                }
            }
            Ok(_) | Err(_) => return Err(StoreError::Permanent("recon: stored frame does not decode".into())),
        }
    }
    Ok(Decoded { frames, quality })
}

/// The keyframe to suggest for a clinician's outline (drawn where the automatic measurement
/// failed, adjusted where it did not; [`super::keyframe`]), among the frames the gate accepted: fusion kept
/// their cameras, so nothing is read back. `None` when no camera sees the wound.
fn suggested_keyframe(fused: &FusedScan) -> Option<SuggestedKeyframe> {
    let mut cameras: Vec<(Candidate, SuggestedKeyframe)> =
        fused.accepted().iter().filter_map(accepted_camera).collect();
    let candidates: Vec<Candidate> = cameras.iter().map(|(c, _)| *c).collect();
    let normal = surface_normal(&fused.vol, fused.target).or_else(|| mean_view(&candidates, fused.target))?;
    let at = suggest(&candidates, fused.target, normal)?;
    Some(cameras.swap_remove(at).1)
}

/// An accepted frame's camera, for the keyframe choice and as the API shows it (row-major
/// `k` and pose, as on the wire; the skew is the 0 fusion used); `None` when unusable.
fn accepted_camera(a: &Accepted) -> Option<(Candidate, SuggestedKeyframe)> {
    let i = a.intrinsics;
    i.validate().ok()?;
    let k = [i.fx, 0.0, i.cx, 0.0, i.fy, i.cy, 0.0, 0.0, 1.0];
    let pose: [f64; 16] = std::array::from_fn(|n| a.pose.matrix()[n / 4][n % 4]);
    let shown = SuggestedKeyframe { seq: a.seq, width: i.width, height: i.height, k, pose };
    Some((Candidate { seq: a.seq, intrinsics: i, pose: a.pose }, shown))
}

/// Most characters of a failure's words stored with its outcome.
const MAX_REASON_CHARS: usize = 500;

/// The stable code of an automatic measurement's failure (docs/api.md), from the
/// reconstruction's error: recon owns the codes ([`ReconError::code`]), the words may change.
pub(crate) fn failure_reason(e: &ReconError) -> FailureReason {
    FailureReason { code: e.code(), message: e.to_string().chars().take(MAX_REASON_CHARS).collect() }
}

fn figures(m: &WoundMeasurements) -> WoundFigures {
    let v = |x: coherency_recon::Measurement| ValuePm { value: x.value, uncertainty: x.uncertainty };
    WoundFigures {
        outline_area_mm2: v(m.outline_area_mm2),
        bed_area_mm2: v(m.bed_area_mm2),
        perimeter_mm: v(m.perimeter_mm),
        length_mm: v(m.length_mm),
        width_mm: v(m.width_mm),
        max_depth_mm: v(m.max_depth_mm),
        mean_depth_mm: v(m.mean_depth_mm),
        volume_mm3: v(m.volume_mm3),
        skin_model: skin_model(m.skin_model),
        skin_residual_mm: m.skin_residual_mm,
        missing_fraction: m.missing_fraction,
    }
}

fn skin_model(s: SkinModel) -> &'static str {
    match s {
        SkinModel::Quadratic => "quadratic",
        SkinModel::Quartic => "quartic",
    }
}

fn measurements_doc(m: &WoundMeasurements) -> Value {
    let v = |x: coherency_recon::Measurement| json!({ "value": x.value, "uncertainty": x.uncertainty });
    json!({
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
    })
}

fn parameters_doc() -> Value {
    let p = parameters();
    json!({
        "voxel_size_m": p.voxel_size_m,
        "truncation_voxels": p.truncation_voxels,
        "depth_min_m": p.depth_min_m,
        "depth_max_m": p.depth_max_m,
        "roi_half_m": p.roi_half_m,
        "memory_budget_bytes": to_i64(p.memory_budget_bytes as u64),
        "mesh_min_weight": p.mesh_min_weight,
        "measure_cell_m": p.measure_cell_m,
        "measure_max_radius_m": p.measure_max_radius_m,
        "coverage_factor": p.coverage_factor,
    })
}

fn ms(t: Instant) -> f64 {
    ms_of(t.elapsed())
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
