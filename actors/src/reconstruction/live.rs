//! The [`Reconstruction`] actor: one per scan, on a [`ReconstructionPool`] arbiter. While
//! the phone streams it fuses each frame the capture session hands it ([`LiveScan::push`])
//! through the scan's [`ScanFusion`]; at finish ([`Finish`]) it hands that volume to the
//! finish step (`super::finish`), stays busy until the result is stored, then stops. The
//! finish step's waits and I/O run on the finishing caller's runtime and its CPU work on a
//! thread of its own, both at normal priority: the arbiter runs at the live-fusion priority.
//!
//! **Bounded mailbox, frame selection under load.** The mailbox holds at most
//! [`QUEUE_CAP`] frames; a frame pushed to a full one is skipped (counted) and never waits:
//! the capture session's acks never depend on fusion. Fusion then no longer covers every
//! frame, so the live volume is marked incomplete and the finish step fuses the stored
//! frames instead (the durable frames are the truth; results never depend on load); frames
//! still queued when such a scan finishes are dropped unfused. The same happens when a
//! session did not see the stream from frame 1 (a restart on another node) or a frame did
//! not decode.
//!
//! **Sharing the cores.** After [`BATCH`] frames the actor yields its arbiter, so the scans
//! on one arbiter take turns.
//!
//! **Progress.** The session reads [`LiveScan::progress`] on its own tick without a message
//! round trip: the actor publishes a copy after each frame. Coverage walks the bricks, so it
//! is recomputed at most every [`COVERAGE_EVERY`].
//!
//! **Guidance.** When it has caught up with its mailbox, the actor runs the wound-level
//! probe ([`ScanFusion::probe`]: where the wound is relative to where the phone points)
//! every [`PROBE_EVERY`] — less often when a probe costs more than a tenth of that — and
//! once more at [`LiveScan::settle`]; its answer becomes a progress warning
//! (`wound_not_found`, `wound_off_centre`, `rim_not_seen`) until the next probe.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use coherency_protocol::scan::{warning, DepthFrame};
use coherency_recon::{Guidance, ScanFusion};

use super::finish::FinishJob;
use super::lag::FuseLag;
use super::pool::ReconstructionPool;
use super::{to_recon_frame, wire_pose};
use crate::store::StoreError;

/// Frames a scan may queue before new ones are skipped.
pub const QUEUE_CAP: usize = 24;
/// Frames an actor fuses before yielding its arbiter to the other scans on it.
pub const BATCH: usize = 4;
/// Live coverage is recomputed at most this often (it walks the bricks).
pub const COVERAGE_EVERY: Duration = Duration::from_millis(120);
/// A gating reason stays in the progress warnings for this many frames after it happened.
const REASON_FRAMES: u64 = 15;
/// The wound-level probe ([`ScanFusion::probe`]) runs at most this often, and only when the
/// actor has caught up with its mailbox.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// ... once this many frames are fused (a volume of a few frames shows too little of the
/// wound to judge) ...
pub const PROBE_MIN_FUSED: u64 = 8;
/// ... and never more than this share of the arbiter's time: the gap after a probe is at
/// least its cost times this.
const PROBE_GAP_PER_COST: u32 = 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    /// Warnings from recent quality-gate rejections and the latest wound-level probe
    /// (`warning::*` strings).
    pub warnings: Vec<&'static str>,
    /// The latest wound-level probe, if one has run.
    pub guidance: Option<Guidance>,
}

/// What live fusion hands to the finish step.
pub struct LiveResult {
    /// The scan's fusion as it stands.
    pub fusion: ScanFusion,
    /// Frames skipped because the mailbox was full.
    pub skipped_load: u64,
    /// Whether the volume holds every frame `1..=last_seq` that passed the gate.
    pub complete: bool,
    /// Highest seq seen.
    pub last_seq: u64,
    /// The seqs of the frames that carried a colour image, in the order they came: the
    /// finish reads only these back for the mesh's colours (none: nothing is read).
    pub colour_seqs: Vec<u64>,
}

/// What the actor and its handles share: figures it publishes, counts they keep.
#[derive(Default)]
struct Shared {
    progress: Mutex<LiveProgress>,
    lag: Mutex<FuseLag>,
    skipped: AtomicU64,
    /// Frames pushed and not yet handled.
    queued: AtomicUsize,
    /// Finishing: no more frames are taken.
    closed: AtomicBool,
}

/// A handle on one scan's [`Reconstruction`] actor. Cheap to clone.
#[derive(Clone)]
pub struct LiveScan {
    addr: Addr<Reconstruction>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LiveScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveScan").field("progress", &*lock(&self.shared.progress)).finish()
    }
}

impl PartialEq for LiveScan {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}
impl Eq for LiveScan {}

impl ReconstructionPool {
    /// Starts live fusion for a scan unless `max` scans of this pool already have it
    /// (`None`: the scan streams without a live volume and is fused at finish).
    /// `complete_from_start` is false when earlier frames of the scan were received by
    /// another session.
    pub fn start_live(&self, complete_from_start: bool, max: usize) -> Option<LiveScan> {
        let live = self.live_counter().clone();
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        let started = self.start(complete_from_start, Some(live.clone()));
        if started.is_none() {
            live.fetch_sub(1, Ordering::AcqRel);
        }
        started
    }

    /// Starts an actor that has seen no frame, to finish a scan fused from its stored
    /// frames.
    pub(crate) fn start_idle(&self) -> Option<LiveScan> {
        self.start(false, None)
    }

    fn start(&self, complete: bool, live: Option<Arc<AtomicUsize>>) -> Option<LiveScan> {
        let slot = self.slot()?;
        slot.load.fetch_add(1, Ordering::AcqRel);
        let shared = Arc::new(Shared::default());
        let (s, load) = (shared.clone(), slot.load.clone());
        let addr = Reconstruction::start_in_arbiter(&slot.arbiter, move |_| Reconstruction {
            fusion: Some(ScanFusion::new()),
            shared: s,
            complete,
            first_seq: None,
            last_seq: 0,
            colour_seqs: Vec::new(),
            since_yield: 0,
            last_coverage: None,
            probe: ProbeClock::default(),
            load,
            live,
        });
        Some(LiveScan { addr, shared })
    }
}

impl LiveScan {
    /// Queues a frame for fusion; never blocks. Returns false if it was skipped (mailbox
    /// full, or fusion finishing).
    pub fn push(&self, frame: DepthFrame) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match self.addr.try_send(FuseFrame(frame, Instant::now())) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                self.shared.skipped.fetch_add(1, Ordering::AcqRel);
                false
            }
            Err(SendError::Closed(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                false
            }
        }
    }

    /// The latest live figures.
    pub fn progress(&self) -> LiveProgress {
        lock(&self.shared.progress).clone()
    }

    /// The figures once every frame pushed so far has been processed, with the coverage
    /// recomputed: the scan's final progress (the session sends it before `finished`).
    /// Frames still queued are fused first, so this waits up to a full mailbox of fusion
    /// work; callers bound the wait. `None` when the actor has stopped.
    pub async fn settle(&self) -> Option<LiveProgress> {
        self.addr.send(Settle).await.ok()
    }

    /// Push → fused latencies of the frames processed so far (fused or rejected by the
    /// quality gate; frames skipped on a full mailbox are not in it, see `skipped_load`).
    pub fn fuse_lag(&self) -> FuseLag {
        lock(&self.shared.lag).clone()
    }

    /// Stops taking frames, waits until the queued ones are fused (dropped unfused when
    /// frames were already skipped) and hands out the fusion. Later calls, and a stopped
    /// actor, answer `None`. Benchmarks and tests use it; a scan's finish goes through
    /// [`Finish`] instead and keeps the volume in the actor.
    pub async fn take(&self) -> Option<LiveResult> {
        self.shared.closed.store(true, Ordering::Release);
        self.addr.send(TakeLive).await.ok().flatten()
    }

    /// Runs the finish step in the actor (see `super::finish`), which stops once it is
    /// done. A stopped actor is an error, never a panic.
    pub(crate) async fn finish(&self, job: FinishJob) -> Result<(), StoreError> {
        self.shared.closed.store(true, Ordering::Release);
        match self.addr.send(Finish(job)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Permanent("reconstruction: the scan's actor stopped".into())),
        }
    }
}

/// One scan's reconstruction (see the module docs).
pub struct Reconstruction {
    fusion: Option<ScanFusion>,
    shared: Arc<Shared>,
    /// Every frame from seq 1 on was offered, none lost.
    complete: bool,
    first_seq: Option<u64>,
    last_seq: u64,
    /// Frames that carried a colour image.
    colour_seqs: Vec<u64>,
    since_yield: usize,
    last_coverage: Option<Instant>,
    probe: ProbeClock,
    /// Actors on this actor's arbiter.
    load: Arc<AtomicUsize>,
    /// The pool's count of live scans, when this one is counted in it.
    live: Option<Arc<AtomicUsize>>,
}

impl Actor for Reconstruction {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(QUEUE_CAP);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.load.fetch_sub(1, Ordering::AcqRel);
        if let Some(live) = self.live.take() {
            live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A frame to fuse, with the time it was pushed.
struct FuseFrame(DepthFrame, Instant);

impl Message for FuseFrame {
    type Result = ();
}

impl Handler<FuseFrame> for Reconstruction {
    type Result = ();

    fn handle(&mut self, FuseFrame(frame, pushed): FuseFrame, ctx: &mut Context<Self>) {
        let behind = self.shared.queued.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let skipped = self.shared.skipped.load(Ordering::Acquire);
        if skipped > 0 && self.shared.closed.load(Ordering::Acquire) {
            // The volume misses frames and will not be used: fusing the rest is waste.
            return;
        }
        self.fuse_one(&frame);
        let lag = pushed.elapsed();
        let enough = self.fusion.as_ref().is_some_and(|f| f.fused() >= PROBE_MIN_FUSED);
        if behind == 0 && skipped == 0 && enough && self.probe.due(Instant::now()) {
            self.run_probe();
        }
        // Published before it counts as processed: whoever sees the frame counted (a test, the
        // benchmark) sees its figures too.
        self.publish(skipped, false);
        lock(&self.shared.lag).record(lag);
        self.since_yield += 1;
        if self.since_yield >= BATCH {
            self.since_yield = 0;
            ctx.wait(actix::fut::wrap_future(tokio::task::yield_now()));
        }
    }
}

impl Reconstruction {
    fn fuse_one(&mut self, wire: &DepthFrame) {
        let seq = wire.seq;
        self.first_seq.get_or_insert(seq);
        if seq != self.last_seq + 1 && self.last_seq != 0 {
            self.complete = false;
        }
        self.last_seq = self.last_seq.max(seq);
        if wire.colour_jpeg.is_some() {
            self.colour_seqs.push(seq);
        }
        let Some(fusion) = self.fusion.as_mut() else { return };
        // Frame selection first, on the pose alone: a redundant frame is never fused, so its
        // depth need not be decoded.
        if wire_pose(wire).is_ok_and(|pose| fusion.skip_redundant(seq, &pose)) {
            return;
        }
        match to_recon_frame(wire) {
            Ok(frame) => {
                fusion.offer(seq, frame);
            }
            Err(e) => {
                tracing::debug!(seq, error = %e, "frame not usable for live fusion");
                self.complete = false;
            }
        }
    }

    /// Runs the wound-level probe on the volume as it stands and keeps its answer.
    fn run_probe(&mut self) {
        let Some(fusion) = self.fusion.as_ref() else { return };
        let t = Instant::now();
        let g = fusion.probe();
        self.probe.ran(t, t.elapsed());
        if g.is_some() {
            self.probe.last = g;
        }
    }

    /// Publishes the figures; the coverage only every [`COVERAGE_EVERY`] unless `force`.
    fn publish(&mut self, skipped: u64, force: bool) {
        let Some(fusion) = self.fusion.as_ref() else { return };
        let now = Instant::now();
        let mut coverage = None;
        if force || self.last_coverage.is_none_or(|t| now.duration_since(t) >= COVERAGE_EVERY) {
            if let Some(c) = fusion.live_coverage() {
                coverage = Some(c as f32);
                self.last_coverage = Some(now);
            }
        }
        let mut warnings = recent_warnings(fusion.rejected(), self.last_seq);
        warnings.extend(self.probe.last.and_then(guidance_warning));
        let mut p = lock(&self.shared.progress);
        p.frames_fused = fusion.fused();
        p.skipped_load = skipped;
        p.warnings = warnings;
        p.guidance = self.probe.last;
        if let Some(c) = coverage {
            p.coverage = c;
        }
    }

    /// Hands out the fusion (once).
    fn take_live(&mut self) -> Option<LiveResult> {
        let fusion = self.fusion.take()?;
        let skipped_load = self.shared.skipped.load(Ordering::Acquire);
        if self.last_seq == 0 && skipped_load == 0 {
            // Nothing was pushed.
            return None;
        }
        let complete =
            self.complete && skipped_load == 0 && self.first_seq == Some(1) && fusion.holds_every_accepted_frame();
        let colour_seqs = std::mem::take(&mut self.colour_seqs);
        Some(LiveResult { fusion, skipped_load, complete, last_seq: self.last_seq, colour_seqs })
    }
}

/// When the wound-level probe last ran, what it cost and what it said.
#[derive(Debug, Default)]
struct ProbeClock {
    next: Option<Instant>,
    last: Option<Guidance>,
}

impl ProbeClock {
    /// Whether a probe may run now: the first one as soon as the actor is idle, then every
    /// [`PROBE_EVERY`] (longer when probes are costly).
    fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    fn ran(&mut self, at: Instant, cost: Duration) {
        self.next = Some(at + PROBE_EVERY.max(cost * PROBE_GAP_PER_COST));
    }
}

/// The progress warning for a probe's answer (none when the wound is measurable).
fn guidance_warning(g: Guidance) -> Option<&'static str> {
    match g {
        Guidance::NotFound => Some(warning::WOUND_NOT_FOUND),
        Guidance::OffCentre => Some(warning::WOUND_OFF_CENTRE),
        Guidance::RimNotSeen => Some(warning::RIM_NOT_SEEN),
        Guidance::Measurable | Guidance::Unknown => None,
    }
}

/// Gate reasons of the last [`REASON_FRAMES`] frames, as progress warnings.
fn recent_warnings(rejected: &[(u64, &'static str)], last_seq: u64) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (seq, code) in rejected.iter().rev() {
        if seq + REASON_FRAMES < last_seq {
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

/// Publishes the final figures ([`LiveScan::settle`]); the mailbox is first in, first out,
/// so every frame pushed before has been processed.
struct Settle;

impl Message for Settle {
    type Result = LiveProgress;
}

impl Handler<Settle> for Reconstruction {
    type Result = MessageResult<Settle>;

    fn handle(&mut self, _: Settle, _: &mut Context<Self>) -> Self::Result {
        let skipped = self.shared.skipped.load(Ordering::Acquire);
        // The final word on the wound from the live volume (guidance even when it missed
        // frames under load and the stored frames are fused at finish instead).
        self.run_probe();
        self.publish(skipped, true);
        MessageResult(lock(&self.shared.progress).clone())
    }
}

/// Hands out the live fusion ([`LiveScan::take`]).
struct TakeLive;

impl Message for TakeLive {
    type Result = Option<LiveResult>;
}

impl Handler<TakeLive> for Reconstruction {
    type Result = MessageResult<TakeLive>;

    fn handle(&mut self, _: TakeLive, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.take_live())
    }
}

/// Runs the scan's finish step with the live volume; the actor stops when it is done.
pub(crate) struct Finish(pub(crate) FinishJob);

impl Message for Finish {
    type Result = Result<(), StoreError>;
}

impl Handler<Finish> for Reconstruction {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    #[tracing::instrument(skip_all, fields(scan_id = %msg.0.scan_id))]
    fn handle(&mut self, msg: Finish, _: &mut Context<Self>) -> Self::Result {
        let live = self.take_live();
        // The finish step's waits and I/O run on the finishing caller's runtime, at normal
        // priority: this arbiter runs at the live-fusion priority, and a finish waiting
        // behind busy processes there would be starved. The actor stays busy (and keeps the
        // scan) until the result is stored.
        let job = msg.0;
        let task = job.runtime.clone().spawn(super::finish::run(job, live));
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(task).map(|r, _, ctx: &mut Context<Self>| {
            ctx.stop();
            r.unwrap_or_else(|_| Err(StoreError::Permanent("reconstruction: the finish step panicked".into())))
        })))
    }
}
