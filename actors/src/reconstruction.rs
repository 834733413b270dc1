//! Live reconstruction: each streaming scan's frames are fused into its TSDF volume as they
//! arrive, on a small process-wide CPU pool, off the ack path. The capture session hands a
//! decoded frame to [`LiveScan::push`] (cheap: the planes are still compressed) and reads
//! [`LiveScan::progress`] on its progress tick; at finish the finish hook takes the volume
//! with [`LiveScan::finish`], so only surface extraction and measurement remain.
//!
//! **Pool.** [`FusionPool::global`] runs one worker thread per core. A scan with queued
//! frames is scheduled once; a worker fuses at most [`BATCH`] of its frames and puts it
//! back at the end of the run queue, so concurrent scans share the cores round-robin.
//!
//! **Latency.** Each frame's time from [`LiveScan::push`] to the end of its fusion is
//! recorded in a bounded histogram ([`FuseLag`], read with [`LiveScan::fuse_lag`]);
//! `cargo run --release -p coherency-actors --example fusion_latency` drives the pool with
//! several scans at a fixed frame rate and reports its percentiles.
//!
//! **Bounded queue, frame selection under load.** Each scan queues at most [`QUEUE_CAP`]
//! frames; a frame arriving at a full queue is skipped (counted). Fusion then no longer
//! covers every frame, so the live volume is marked incomplete and the finish hook fuses
//! the stored frames again instead (the durable frames are the truth; results never depend
//! on load). The same happens when a session did not see the stream from frame 1 (a
//! restart on another node) or a frame did not decode.
//!
//! **Frame selection.** The [`QualityGate`] also turns away frames whose camera moved less
//! than 1 mm and 0.5° since the last accepted frame (code `redundant`, no warning to the
//! phone): at 60 fps a steady scan repeats its view for several frames, and skipping them before
//! integration is most of the per-frame cost. The decision depends only on the frames.
//!
//! **Same result as fusing at finish.** Frames go through the same [`QualityGate`] (against
//! the previous accepted pose) and the same [`TsdfConfig`]; the only difference is the
//! region of interest, placed around the point seen at the principal point of the first
//! accepted frame with depth there (at finish that was the middle frame): the 12 cm box
//! holds the wound either way while the phone is held over it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use coherency_protocol::scan::{warning, DepthFrame};
use coherency_recon::tsdf::Aabb;
use coherency_recon::{
    DepthImage, Frame, GateRun, Intrinsics, Pose, QualityGate, ReconError, TsdfConfig, TsdfVolume, Vec3,
};

/// Frames a scan may queue before new ones are skipped.
pub const QUEUE_CAP: usize = 24;
/// Frames a worker fuses for one scan before moving to the next scan.
pub const BATCH: usize = 4;
/// Half the side of the region of interest around the target, metres (a 12 cm box).
pub const ROI_HALF_M: f64 = 0.06;
/// Radius of the disc around the target whose coverage is reported, metres.
pub const COVERAGE_RADIUS_M: f64 = 0.025;
/// Live coverage is recomputed at most this often (it walks the bricks).
const COVERAGE_EVERY: std::time::Duration = std::time::Duration::from_millis(120);
/// Accepted frames kept while no region of interest is placed yet.
const PRE_ROI_CAP: usize = 30;
/// A gating reason stays in the progress warnings for this many frames after it happened.
const REASON_FRAMES: u64 = 15;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Converts a decoded protocol frame to a reconstruction frame: depth in f32 metres,
/// intrinsics from the row-major `k` (skew ignored), the row-major world-from-camera pose
/// (OpenCV axes), confidence rescaled from `0..=max` to ARKit's `0..=2`.
pub fn to_recon_frame(f: &DepthFrame) -> Result<Frame, ReconError> {
    let depth = f.depth_metres().map_err(|e| ReconError::Format(e.to_string()))?;
    let confidence = match f.confidence_raw().map_err(|e| ReconError::Format(e.to_string()))? {
        Some(raw) => {
            let max = f.confidence.as_ref().map_or(2, |c| c.max()).max(1) as u32;
            Some(raw.iter().map(|&c| ((u32::from(c) * 2 + max / 2) / max).min(2) as u8).collect())
        }
        None => None,
    };
    let k = &f.intrinsics;
    let intrinsics = Intrinsics {
        fx: f64::from(k[0]),
        fy: f64::from(k[4]),
        cx: f64::from(k[2]),
        cy: f64::from(k[5]),
        width: f.width,
        height: f.height,
    };
    let pose = wire_pose(f)?;
    let frame = Frame { depth: DepthImage::new(f.width, f.height, depth, confidence)?, intrinsics, pose };
    frame.validate()?;
    Ok(frame)
}

/// The frame's world-from-camera pose from its row-major matrix (OpenCV axes), without
/// decoding the depth.
pub fn wire_pose(f: &DepthFrame) -> Result<Pose, ReconError> {
    let p = f.pose.map(f64::from);
    Pose::from_matrix([
        [p[0], p[1], p[2], p[3]],
        [p[4], p[5], p[6], p[7]],
        [p[8], p[9], p[10], p[11]],
        [p[12], p[13], p[14], p[15]],
    ])
}

/// The world point seen at the principal point of `f`: the median valid depth of the 5×5
/// pixels around it.
pub fn centre_point(f: &Frame) -> Option<Vec3> {
    let k = &f.intrinsics;
    let (ci, cj) = (k.cx.round() as i64, k.cy.round() as i64);
    let mut d: Vec<f32> = Vec::new();
    for j in cj - 2..=cj + 2 {
        for i in ci - 2..=ci + 2 {
            if i >= 0 && j >= 0 {
                if let Some(z) = f.depth.get(i as u32, j as u32) {
                    d.push(z);
                }
            }
        }
    }
    if d.is_empty() {
        return None;
    }
    d.sort_by(f32::total_cmp);
    let z = f64::from(d[d.len() / 2]);
    Some(f.pose.transform(k.ray(k.cx, k.cy) * z))
}

/// An accepted frame as the finish step needs it (to find the target).
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub seq: u64,
    pub pose: Pose,
    pub intrinsics: Intrinsics,
    /// The point at its principal point, if it had depth there.
    pub centre: Option<Vec3>,
}

/// What live fusion hands to the finish step.
pub struct LiveResult {
    /// The fused volume (`None` if no frame was accepted).
    pub vol: Option<TsdfVolume>,
    /// Every accepted frame, in seq order.
    pub accepted: Vec<Accepted>,
    /// Frames fused.
    pub fused: u64,
    /// Rejected frames and the gate's reason code.
    pub rejected: Vec<(u64, &'static str)>,
    /// Frames skipped because the queue was full.
    pub skipped_load: u64,
    /// Whether the volume holds every frame `1..=last_seq` that passed the gate.
    pub complete: bool,
    /// Highest seq seen.
    pub last_seq: u64,
    /// Worker time spent fusing, ms.
    pub fuse_ms: f64,
}

/// Live figures for the progress message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    /// Frames fused so far.
    pub frames_fused: u64,
    /// Covered fraction of the wound disc (see `TsdfVolume::coverage`), 0..=1.
    pub coverage: f32,
    /// Frames skipped because fusion was behind.
    pub skipped_load: u64,
    /// Warnings from recent quality-gate rejections (`warning::*` strings).
    pub warnings: Vec<&'static str>,
}

struct Queue {
    /// Frames with the time they were pushed.
    frames: VecDeque<(DepthFrame, Instant)>,
    /// A worker is fusing this scan's frames or the scan is in the run queue.
    scheduled: bool,
    closed: bool,
    /// `finish` ran.
    finished: bool,
    /// Frames skipped because the queue was full.
    skipped_load: u64,
}

struct State {
    gate: GateRun,
    vol: Option<TsdfVolume>,
    target: Option<Vec3>,
    pre_roi: VecDeque<(u64, Frame)>,
    accepted: Vec<Accepted>,
    rejected: Vec<(u64, &'static str)>,
    fused: u64,
    complete: bool,
    first_seq: Option<u64>,
    last_seq: u64,
    fuse_s: f64,
    last_coverage: Option<Instant>,
}

struct Inner {
    queue: Mutex<Queue>,
    state: Mutex<State>,
    progress: Mutex<LiveProgress>,
    lag: Mutex<FuseLag>,
    idle: tokio::sync::Notify,
    pool: &'static FusionPool,
}

/// One scan's live fusion. Cheap to clone (shared).
#[derive(Clone)]
pub struct LiveScan(Arc<Inner>);

impl std::fmt::Debug for LiveScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveScan").field("progress", &*lock(&self.0.progress)).finish()
    }
}

impl PartialEq for LiveScan {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for LiveScan {}

/// Scans with live fusion in this process (counted while any handle of one exists).
static LIVE_SCANS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Inner {
    fn drop(&mut self) {
        LIVE_SCANS.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveScan {
    /// Starts live fusion for a scan unless `max` scans of this process already have it
    /// (`None`: the scan streams without a live volume and is fused at finish).
    pub fn try_new(complete_from_start: bool, max: usize) -> Option<Self> {
        LIVE_SCANS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self::counted(complete_from_start))
    }

    /// Starts live fusion for a scan on the process-wide pool. `complete_from_start` is
    /// false when earlier frames of the scan were received by another session.
    pub fn new(complete_from_start: bool) -> Self {
        LIVE_SCANS.fetch_add(1, Ordering::AcqRel);
        Self::counted(complete_from_start)
    }

    /// Scans with live fusion in this process now.
    pub fn running() -> usize {
        LIVE_SCANS.load(Ordering::Acquire)
    }

    fn counted(complete_from_start: bool) -> Self {
        Self(Arc::new(Inner {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                scheduled: false,
                closed: false,
                finished: false,
                skipped_load: 0,
            }),
            state: Mutex::new(State {
                gate: GateRun::new(QualityGate::default()),
                vol: None,
                target: None,
                pre_roi: VecDeque::new(),
                accepted: Vec::new(),
                rejected: Vec::new(),
                fused: 0,
                complete: complete_from_start,
                first_seq: None,
                last_seq: 0,
                fuse_s: 0.0,
                last_coverage: None,
            }),
            progress: Mutex::new(LiveProgress::default()),
            lag: Mutex::new(FuseLag::default()),
            idle: tokio::sync::Notify::new(),
            pool: FusionPool::global(),
        }))
    }

    /// Queues a frame for fusion; never blocks. Returns false if it was skipped (queue full
    /// or fusion finished).
    pub fn push(&self, frame: DepthFrame) -> bool {
        let schedule = {
            let mut q = lock(&self.0.queue);
            if q.closed {
                return false;
            }
            if q.frames.len() >= QUEUE_CAP {
                // Only the queue's lock here: the actor never waits for a fusing worker.
                q.skipped_load += 1;
                return false;
            }
            q.frames.push_back((frame, Instant::now()));
            !std::mem::replace(&mut q.scheduled, true)
        };
        if schedule {
            self.0.pool.submit(self.clone());
        }
        true
    }

    /// The latest live figures.
    pub fn progress(&self) -> LiveProgress {
        lock(&self.0.progress).clone()
    }

    /// Push → fused latencies of the frames processed so far (fused or rejected by the
    /// quality gate; frames skipped on a full queue are not in it, see `skipped_load`).
    pub fn fuse_lag(&self) -> FuseLag {
        lock(&self.0.lag).clone()
    }

    /// Stops accepting frames, waits until every queued frame is fused (only the batch in
    /// flight when frames were already skipped) and returns the result. Later calls return
    /// `None`.
    pub async fn finish(&self) -> Option<LiveResult> {
        let (skipped_load, again) = {
            let mut q = lock(&self.0.queue);
            let again = std::mem::replace(&mut q.finished, true);
            q.closed = true;
            if q.skipped_load > 0 {
                // The volume misses frames and will not be used: fusing the rest is waste.
                q.frames.clear();
            }
            (q.skipped_load, again)
        };
        if again {
            return None;
        }
        loop {
            let mut notified = std::pin::pin!(self.0.idle.notified());
            notified.as_mut().enable();
            if !lock(&self.0.queue).scheduled {
                break;
            }
            notified.await;
        }
        let mut s = lock(&self.0.state);
        if s.last_seq == 0 && skipped_load == 0 {
            // Nothing was pushed. (Frames were, but none fused before the queue was dropped:
            // the result below says incomplete, so the scan is fused from storage.)
            return None;
        }
        // Accepted frames still waiting for a region of interest were never fused.
        let complete = s.complete && skipped_load == 0 && s.first_seq == Some(1) && s.pre_roi.is_empty();
        let out = LiveResult {
            vol: s.vol.take(),
            accepted: std::mem::take(&mut s.accepted),
            fused: s.fused,
            rejected: std::mem::take(&mut s.rejected),
            skipped_load,
            complete,
            last_seq: s.last_seq,
            fuse_ms: s.fuse_s * 1e3,
        };
        s.last_seq = 0;
        Some(out)
    }

    /// Fuses up to [`BATCH`] queued frames (on a pool worker). Returns whether frames remain.
    fn run_batch(&self) -> bool {
        let (frames, skipped_load): (Vec<(DepthFrame, Instant)>, u64) = {
            let mut q = lock(&self.0.queue);
            let n = q.frames.len().min(BATCH);
            (q.frames.drain(..n).collect(), q.skipped_load)
        };
        {
            let mut s = lock(&self.0.state);
            let mut lags = [Duration::ZERO; BATCH];
            for (lag, (f, pushed)) in lags.iter_mut().zip(&frames) {
                s.fuse_one(f);
                *lag = pushed.elapsed();
            }
            let mut hist = lock(&self.0.lag);
            for lag in &lags[..frames.len()] {
                hist.record(*lag);
            }
            drop(hist);
            let now = Instant::now();
            let mut coverage = None;
            if s.last_coverage.is_none_or(|t| now.duration_since(t) >= COVERAGE_EVERY) {
                if let (Some(vol), Some(target)) = (&s.vol, s.target) {
                    coverage = Some(vol.coverage(target, COVERAGE_RADIUS_M).observed_fraction as f32);
                    s.last_coverage = Some(now);
                }
            }
            // The session reads this on its progress tick: hold the lock only to copy.
            let warnings = s.recent_warnings();
            let mut p = lock(&self.0.progress);
            p.frames_fused = s.fused;
            p.skipped_load = skipped_load;
            p.warnings = warnings;
            if let Some(c) = coverage {
                p.coverage = c;
            }
        }
        let mut q = lock(&self.0.queue);
        if q.frames.is_empty() {
            q.scheduled = false;
            drop(q);
            self.0.idle.notify_waiters();
            false
        } else {
            true
        }
    }
}

impl State {
    fn fuse_one(&mut self, wire: &DepthFrame) {
        let t = Instant::now();
        let seq = wire.seq;
        self.first_seq.get_or_insert(seq);
        if seq != self.last_seq + 1 && self.last_seq != 0 {
            self.complete = false;
        }
        self.last_seq = self.last_seq.max(seq);
        // Frame selection first, on the pose alone: a redundant frame is never fused, so its
        // depth need not be decoded (the gate reports `redundant` first for it too).
        if wire_pose(wire).is_ok_and(|pose| self.gate.is_redundant(&pose)) {
            self.rejected.push((seq, "redundant"));
            return;
        }
        let frame = match to_recon_frame(wire) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(seq, error = %e, "frame not usable for live fusion");
                self.complete = false;
                return;
            }
        };
        if let Some(issue) = self.gate.judge(seq, &frame) {
            self.rejected.push((seq, issue.code()));
            return;
        }
        let centre = centre_point(&frame);
        self.accepted.push(Accepted { seq, pose: frame.pose, intrinsics: frame.intrinsics, centre });
        if self.vol.is_none() {
            match centre {
                Some(p0) => {
                    let cfg = TsdfConfig { roi: Some(Aabb::around(p0, ROI_HALF_M)), ..TsdfConfig::default() };
                    match TsdfVolume::new(cfg) {
                        Ok(v) => {
                            self.vol = Some(v);
                            self.target = Some(p0);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "live fusion: no volume");
                            self.complete = false;
                            return;
                        }
                    }
                }
                None => {
                    if self.pre_roi.len() == PRE_ROI_CAP {
                        self.pre_roi.pop_front();
                        self.complete = false;
                    }
                    self.pre_roi.push_back((seq, frame));
                    return;
                }
            }
            let waiting: Vec<(u64, Frame)> = self.pre_roi.drain(..).collect();
            for (s, f) in &waiting {
                self.integrate(*s, f);
            }
        }
        self.integrate(seq, &frame);
        self.fuse_s += t.elapsed().as_secs_f64();
    }

    fn integrate(&mut self, seq: u64, frame: &Frame) {
        let Some(vol) = self.vol.as_mut() else { return };
        match vol.integrate(frame) {
            Ok(_) => self.fused += 1,
            Err(ReconError::MemoryBudgetExceeded { .. }) => self.rejected.push((seq, "memory_budget")),
            Err(e) => {
                tracing::warn!(seq, error = %e, "live fusion failed for a frame");
                self.complete = false;
            }
        }
    }

    /// Gate reasons of the last [`REASON_FRAMES`] frames, as progress warnings.
    fn recent_warnings(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for (seq, code) in self.rejected.iter().rev() {
            if seq + REASON_FRAMES < self.last_seq {
                break;
            }
            let w = match *code {
                "too_little_depth" => warning::LOW_VALID_DEPTH,
                "too_close" => warning::TOO_CLOSE,
                "too_far" => warning::TOO_FAR,
                "pose_jump" => warning::TRACKING_LOST,
                _ => continue,
            };
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }
}

/// Push → fused latencies: a log histogram with 16 buckets per power of two of
/// microseconds (values within about 6 %), fixed size whatever the number of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseLag {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

/// Sub-buckets per power of two in [`FuseLag`].
const LAG_SUB: u64 = 16;
/// Buckets of [`FuseLag`]: up to 2⁴⁰ µs, far beyond any real lag.
const LAG_BUCKETS: usize = (LAG_SUB as usize) * 37;

impl Default for FuseLag {
    fn default() -> Self {
        FuseLag { buckets: vec![0; LAG_BUCKETS], count: 0, max_us: 0 }
    }
}

impl FuseLag {
    fn bucket(us: u64) -> usize {
        if us < LAG_SUB {
            return us as usize;
        }
        let octave = u64::from(63 - us.leading_zeros()); // ≥ 4
        let sub = (us >> (octave - 4)) & (LAG_SUB - 1);
        (((octave - 3) * LAG_SUB + sub) as usize).min(LAG_BUCKETS - 1)
    }

    /// The largest value, µs, that falls in bucket `i`.
    fn upper_us(i: usize) -> u64 {
        let i = i as u64;
        if i < LAG_SUB {
            return i;
        }
        let (octave, sub) = (i / LAG_SUB + 3, i % LAG_SUB);
        ((LAG_SUB + sub + 1) << (octave - 4)) - 1
    }

    /// Adds one latency.
    pub fn record(&mut self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &FuseLag) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0..=1), rounded up to its bucket's upper edge (never above the
    /// maximum); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(Self::upper_us(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }
}

/// Fusion workers to start (0: one per core).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Default niceness of the fusion workers: live fusion is a preview, acks are the promise,
/// so under load the scheduler prefers the ack path (weight 110 against 1024 at nice 0).
pub const DEFAULT_WORKER_NICE: i32 = 10;
static WORKER_NICE: AtomicI32 = AtomicI32::new(DEFAULT_WORKER_NICE);

/// Lowers the calling thread's priority to [`WORKER_NICE`] (Linux; elsewhere a no-op).
/// For threads that do reconstruction work and then end (a thread cannot raise itself
/// back without privileges).
pub fn lower_priority() {
    let nice = WORKER_NICE.load(Ordering::Relaxed);
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: on Linux, PRIO_PROCESS with who = 0 sets the nice value of the calling
        // thread only; the call reads and writes no memory of ours.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if r != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "fusion worker keeps normal priority");
        }
    }
}

/// The process-wide fusion workers (one per core).
pub struct FusionPool {
    run: Mutex<VecDeque<LiveScan>>,
    ready: Condvar,
    started: AtomicBool,
}

impl FusionPool {
    /// The niceness (0–19) workers take when they start; call before the first scan.
    pub fn set_worker_nice(nice: i32) {
        WORKER_NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
    }

    /// How many workers the pool starts (0, the default: one per core); call before the
    /// first scan. Benchmarks use it to measure one core.
    pub fn set_threads(threads: usize) {
        WORKERS.store(threads, Ordering::Relaxed);
    }

    /// The pool shared by every scan of the process; its workers start on first use.
    pub fn global() -> &'static FusionPool {
        static POOL: OnceLock<FusionPool> = OnceLock::new();
        let pool = POOL.get_or_init(|| FusionPool {
            run: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            started: AtomicBool::new(false),
        });
        if !pool.started.swap(true, Ordering::AcqRel) {
            let cores = match WORKERS.load(Ordering::Relaxed) {
                0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                n => n,
            };
            for i in 0..cores {
                let spawned = std::thread::Builder::new().name(format!("fusion-{i}")).spawn(move || {
                    lower_priority();
                    pool.work()
                });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "could not start a fusion worker");
                }
            }
        }
        pool
    }

    fn submit(&self, scan: LiveScan) {
        lock(&self.run).push_back(scan);
        self.ready.notify_one();
    }

    fn work(&self) {
        loop {
            let scan = {
                let mut run = lock(&self.run);
                loop {
                    if let Some(s) = run.pop_front() {
                        break s;
                    }
                    run = self.ready.wait(run).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let more = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan.run_batch()));
            match more {
                Ok(true) => self.submit(scan),
                Ok(false) => {}
                Err(_) => {
                    tracing::error!("live fusion panicked; the scan is fused again at finish");
                    let mut q = lock(&scan.0.queue);
                    q.frames.clear();
                    q.scheduled = false;
                    q.closed = true;
                    drop(q);
                    lock(&scan.0.state).complete = false;
                    scan.0.idle.notify_waiters();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coherency_protocol::scan::{Compression, ConfidencePlane, DepthFormat, DepthPlane};
    use coherency_recon::phantom::{presets, Phantom, ScanConfig};

    fn wire(seq: u64, f: &Frame) -> DepthFrame {
        DepthFrame {
            seq,
            captured_at_us: seq * 16_667,
            width: f.depth.width,
            height: f.depth.height,
            depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &f.depth.depth),
            confidence: f.depth.confidence.as_deref().map(|c| ConfidencePlane::encode(Compression::Zstd, 2, c)),
            intrinsics: f.intrinsics.to_row_major_f32(),
            pose: f.pose.to_row_major_f32(),
            colour_jpeg: None,
        }
    }

    fn frames(n: usize) -> Vec<DepthFrame> {
        let rendered = Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig::iphone(1));
        rendered.frames.iter().take(n).enumerate().map(|(i, f)| wire(i as u64 + 1, f)).collect()
    }

    #[test]
    fn live_fusion_admits_scans_up_to_its_cap_and_frees_a_place_when_one_ends() {
        let base = LiveScan::running();
        let first = LiveScan::try_new(true, base + 1).expect("a place under the cap");
        let shared = first.clone();
        assert!(LiveScan::try_new(true, base + 1).is_none(), "a second scan passed the cap");
        drop(first);
        assert!(LiveScan::try_new(true, base + 1).is_none(), "a handle still alive freed its place");
        drop(shared);
        assert!(LiveScan::try_new(true, base + 1).is_some(), "an ended scan kept its place");
    }

    #[test]
    fn the_lag_histogram_brackets_its_quantiles_within_its_resolution() {
        let mut h = FuseLag::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, exact) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0)] {
            let got = h.quantile(q).as_micros() as f64;
            assert!(got >= exact && got <= exact * 1.07, "q{q}: {got} vs {exact}");
        }
        let mut m = FuseLag::default();
        m.record(Duration::from_secs(3));
        m.merge(&h);
        assert_eq!((m.count(), m.max()), (10_001, Duration::from_secs(3)));
        for us in [0, 1, 15, 16, 17, 31, 32, 1_000, 123_456, u64::MAX / 2] {
            assert!(FuseLag::upper_us(FuseLag::bucket(us)) >= us.min(FuseLag::upper_us(LAG_BUCKETS - 1)), "{us}");
        }
    }

    #[tokio::test]
    async fn frames_pushed_no_faster_than_the_pool_fuses_give_a_complete_volume() {
        let live = LiveScan::new(true);
        let mut last_coverage = 0.0;
        for f in frames(20) {
            let seq = f.seq;
            if seq == 20 {
                // Coverage is recomputed at most every COVERAGE_EVERY; fusion may have
                // done all the frames before within one interval.
                tokio::time::sleep(COVERAGE_EVERY + Duration::from_millis(10)).await;
            }
            assert!(live.push(f));
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            while lock(&live.0.queue).scheduled {
                assert!(Instant::now() < deadline, "frame {seq} not fused");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            last_coverage = live.progress().coverage;
        }
        assert!(live.progress().frames_fused >= 18, "{:?}", live.progress());
        assert!(last_coverage > 0.0);
        let r = live.finish().await.expect("a result");
        assert!(r.complete && r.skipped_load == 0 && r.last_seq == 20);
        assert_eq!(r.fused as usize, r.accepted.len());
        assert!(r.vol.is_some());
        assert!(live.finish().await.is_none(), "the volume is handed out once");
    }

    #[tokio::test]
    async fn a_burst_beyond_the_queue_is_skipped_and_marks_the_volume_incomplete() {
        let live = LiveScan::new(true);
        let pushed = frames(60).into_iter().filter(|f| live.push(f.clone())).count();
        let r = live.finish().await.expect("a result");
        assert_eq!(r.skipped_load as usize, 60 - pushed);
        if r.skipped_load > 0 {
            assert!(!r.complete);
        }
        assert!(live.progress().frames_fused <= pushed as u64);
    }

    #[tokio::test]
    async fn live_fusion_keeps_exactly_the_frames_the_gate_keeps_on_the_stored_sequence() {
        // A slow orbit (the accuracy arc over 600 frames): many frames barely move.
        let rendered =
            Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig { frames: 600, ..ScanConfig::iphone(1) });
        // Decoding rounds depth to 0.1 mm, so the finish step sees the decoded frames.
        let wires: Vec<DepthFrame> =
            rendered.frames.iter().take(90).enumerate().map(|(i, f)| wire(i as u64 + 1, f)).collect();
        let stored: Vec<Frame> = wires.iter().map(|w| to_recon_frame(w).expect("decodes")).collect();
        let expected: Vec<u64> =
            QualityGate::default().accepted_indices(&stored).into_iter().map(|i| i as u64 + 1).collect();
        assert!(expected.len() < 60, "most frames are redundant: {} of 90 kept", expected.len());
        let live = LiveScan::new(true);
        for w in wires {
            let seq = w.seq;
            assert!(live.push(w));
            let deadline = Instant::now() + Duration::from_secs(30);
            while lock(&live.0.queue).scheduled {
                assert!(Instant::now() < deadline, "frame {seq} not fused");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let r = live.finish().await.expect("a result");
        assert!(r.complete);
        assert_eq!(r.accepted.iter().map(|a| a.seq).collect::<Vec<_>>(), expected);
        assert_eq!(r.fused as usize, expected.len());
        assert!(r.rejected.iter().all(|(_, code)| *code == "redundant"), "{:?}", r.rejected);
        assert!(live.progress().warnings.is_empty(), "holding still is not a problem to report");
    }

    #[tokio::test]
    async fn a_session_that_starts_mid_scan_never_claims_a_complete_volume() {
        let live = LiveScan::new(false);
        for f in frames(3) {
            live.push(f);
        }
        let r = live.finish().await.expect("a result");
        assert!(!r.complete);
    }
}
