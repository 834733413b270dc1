//! The fusion policy: how a scan's frames become a volume, a target, a mesh and
//! measurements. It exists once and both ways of fusing a scan go through it:
//!
//! - **live** ([`ScanFusion::new`] + [`ScanFusion::offer`]): frames arrive one at a time
//!   while the phone streams; the region of interest is placed around the point seen at the
//!   principal point of the first accepted frame with depth there (the middle of the scan is
//!   not known yet); accepted frames seen before that wait, at most [`PRE_ROI_CAP`] of them;
//! - **from stored frames** ([`ScanFusion::fuse_all`]): every frame is known, so all are
//!   gated first and the region is placed around the middle accepted frame's centre point.
//!
//! Either way each frame passes the same [`QualityGate`] (against the previous accepted
//! pose, with its redundancy check first), is integrated into a [`TsdfVolume`] with the
//! default [`TsdfConfig`] limited to a [`ROI_HALF_M`] box, and a frame that would exceed the
//! memory budget is rejected as `memory_budget`. The 16 cm box holds the wound wherever it
//! was placed while the phone is held over it, with the skin ring a 60 mm wound's
//! measurement needs even 10 mm off-centre.
//!
//! [`ScanFusion::finish`] then finds the **target**: the protocol carries no wound position,
//! so it is where the phone pointed: the rays through the principal points of all accepted
//! frames are cast onto the fused surface and the hit nearest their component-wise median is
//! taken (one frame's ray moves with the hand, the median is where the wound was kept); where
//! no ray hits, the median depth of the 5×5 pixels at the principal point of the middle
//! accepted frame (or the nearest one with depth at its centre). [`FusedScan::mesh_and_measure`] meshes the volume and runs [`measure_auto`] there;
//! [`FusedScan::measure_polygon`] measures a clinician's outline instead.

use std::collections::VecDeque;
use std::time::Instant;

use crate::measure::{
    locate, measure_auto_with_views, measure_polygon, MeasureConfig, View, WoundMeasurements, WoundNotFound,
};
use crate::mesh::{extract_mesh, Mesh};
use crate::tsdf::{Aabb, Coverage, TsdfConfig, TsdfVolume};
use crate::{Frame, GateRun, Intrinsics, Pose, QualityGate, ReconError, Vec3};

/// Half the side of the region of interest around the target, metres (a 16 cm box, the
/// largest search area of [`measure_auto`]; about 7 MiB of bricks for a scan, within the
/// 32 MiB budget).
pub const ROI_HALF_M: f64 = 0.08;
/// Radius of the disc around the target whose coverage is reported, metres.
pub const COVERAGE_RADIUS_M: f64 = 0.025;
/// Fusion weight below which mesh cubes are left out.
pub const MESH_MIN_WEIGHT: f32 = 0.5;
/// Accepted frames kept while no region of interest is placed yet (live only).
pub const PRE_ROI_CAP: usize = 30;

/// The world point seen at the principal point of `f`: the median valid depth of the 5×5
/// pixels around it.
pub fn centre_point(f: &Frame) -> Option<Vec3> {
    let k = &f.intrinsics;
    let (ci, cj) = (k.cx.round() as i64, k.cy.round() as i64);
    let mut d: Vec<f32> = Vec::with_capacity(25);
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

/// An accepted frame as the target search needs it.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub seq: u64,
    pub pose: Pose,
    pub intrinsics: Intrinsics,
    /// The point at its principal point, if it had depth there.
    pub centre: Option<Vec3>,
}

/// What happened to one offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Integrated (with any frames that were waiting for the region of interest).
    Fused,
    /// Turned away by the gate (its reason code) or the memory budget (`memory_budget`).
    Rejected(&'static str),
    /// Accepted, waiting for a frame with depth at its centre to place the region.
    Waiting,
    /// Accepted but not integrated: the volume no longer holds every accepted frame.
    Lost,
}

/// One scan's fusion in progress (see the module docs).
pub struct ScanFusion {
    gate: GateRun,
    vol: Option<TsdfVolume>,
    /// Centre of the region of interest once placed.
    anchor: Option<Vec3>,
    pre_roi: VecDeque<(u64, Frame)>,
    accepted: Vec<Accepted>,
    rejected: Vec<(u64, &'static str)>,
    fused: u64,
    /// Every accepted frame is in the volume (none lost to a full wait list or an error).
    lossless: bool,
    fuse_s: f64,
}

impl Default for ScanFusion {
    fn default() -> Self {
        Self::new()
    }
}

impl ScanFusion {
    /// Live fusion: the region of interest is placed by the first accepted frame with depth
    /// at its centre.
    pub fn new() -> Self {
        Self {
            gate: GateRun::new(QualityGate::default()),
            vol: None,
            anchor: None,
            pre_roi: VecDeque::new(),
            accepted: Vec::new(),
            rejected: Vec::new(),
            fused: 0,
            lossless: true,
            fuse_s: 0.0,
        }
    }

    /// Whether a frame at `pose` is redundant (the gate's first check, decided before its
    /// depth is decoded); a redundant frame is recorded as rejected and must not be
    /// offered.
    pub fn skip_redundant(&mut self, seq: u64, pose: &Pose) -> bool {
        let redundant = self.gate.is_redundant(pose);
        if redundant {
            self.rejected.push((seq, "redundant"));
        }
        redundant
    }

    /// Gates frame `seq` and integrates it if accepted.
    pub fn offer(&mut self, seq: u64, frame: Frame) -> Offer {
        let t = Instant::now();
        let out = self.offer_timed(seq, frame);
        self.fuse_s += t.elapsed().as_secs_f64();
        out
    }

    fn offer_timed(&mut self, seq: u64, frame: Frame) -> Offer {
        if let Some(issue) = self.gate.judge(seq, &frame) {
            self.rejected.push((seq, issue.code()));
            return Offer::Rejected(issue.code());
        }
        let centre = centre_point(&frame);
        self.accepted.push(Accepted { seq, pose: frame.pose, intrinsics: frame.intrinsics, centre });
        if self.vol.is_none() {
            let Some(p0) = centre else {
                if self.pre_roi.len() == PRE_ROI_CAP {
                    self.pre_roi.pop_front();
                    self.lossless = false;
                }
                self.pre_roi.push_back((seq, frame));
                return Offer::Waiting;
            };
            if self.place(p0).is_err() {
                self.lossless = false;
                return Offer::Lost;
            }
            let waiting: Vec<(u64, Frame)> = self.pre_roi.drain(..).collect();
            for (s, f) in &waiting {
                self.integrate(*s, f);
            }
        }
        self.integrate(seq, &frame)
    }

    fn place(&mut self, p0: Vec3) -> Result<(), ReconError> {
        let cfg = TsdfConfig { roi: Some(Aabb::around(p0, ROI_HALF_M)), ..TsdfConfig::default() };
        self.vol = Some(TsdfVolume::new(cfg)?);
        self.anchor = Some(p0);
        Ok(())
    }

    fn integrate(&mut self, seq: u64, frame: &Frame) -> Offer {
        let Some(vol) = self.vol.as_mut() else { return Offer::Lost };
        match vol.integrate(frame) {
            Ok(_) => {
                self.fused += 1;
                Offer::Fused
            }
            Err(ReconError::MemoryBudgetExceeded { .. }) => {
                self.rejected.push((seq, "memory_budget"));
                Offer::Rejected("memory_budget")
            }
            Err(_) => {
                self.lossless = false;
                Offer::Lost
            }
        }
    }

    /// Fuses a whole scan's frames (seq, frame), in seq order: all are gated first, the
    /// region of interest is placed around the middle accepted frame's centre, then the
    /// accepted ones are integrated. `between` runs before each integration (the caller
    /// may yield the CPU there). Fails when no frame is usable.
    pub fn fuse_all(frames: &[(u64, Frame)], between: &mut dyn FnMut()) -> Result<FusedScan, ReconError> {
        let t = Instant::now();
        let mut s = Self::new();
        let mut keep: Vec<&(u64, Frame)> = Vec::with_capacity(frames.len());
        for f in frames {
            match s.gate.judge(f.0, &f.1) {
                None => {
                    s.accepted.push(Accepted {
                        seq: f.0,
                        pose: f.1.pose,
                        intrinsics: f.1.intrinsics,
                        centre: centre_point(&f.1),
                    });
                    keep.push(f);
                }
                Some(i) => s.rejected.push((f.0, i.code())),
            }
        }
        let (_, p0) = middle_key(&s.accepted)?;
        s.place(p0)?;
        for (seq, frame) in keep {
            between();
            let vol = s.vol.as_mut().ok_or_else(|| ReconError::NotEnoughData("no volume".into()))?;
            match vol.integrate(frame) {
                Ok(_) => s.fused += 1,
                Err(ReconError::MemoryBudgetExceeded { .. }) => s.rejected.push((*seq, "memory_budget")),
                Err(e) => return Err(e),
            }
        }
        s.fuse_s = t.elapsed().as_secs_f64();
        s.finish()
    }

    /// Frames integrated so far.
    pub fn fused(&self) -> u64 {
        self.fused
    }

    /// Frames turned away so far (seq, reason code), in the order they were judged.
    pub fn rejected(&self) -> &[(u64, &'static str)] {
        &self.rejected
    }

    /// Whether every accepted frame so far is in the volume (none waits or was lost).
    pub fn holds_every_accepted_frame(&self) -> bool {
        self.lossless && self.pre_roi.is_empty()
    }

    /// Covered fraction of the disc around the region's centre, 0..=1 (`None` before the
    /// region is placed). Walks the bricks: callers rate-limit it.
    pub fn live_coverage(&self) -> Option<f64> {
        let (vol, anchor) = (self.vol.as_ref()?, self.anchor?);
        Some(vol.coverage(anchor, COVERAGE_RADIUS_M).observed_fraction)
    }

    /// Wound-level guidance from the volume as it stands ([`Guidance`]): the wound located
    /// as [`measure_auto`]'s first pass finds it ([`locate`], [`PROBE_CELL_M`] cells) around
    /// where the latest
    /// [`PROBE_FRAMES`] accepted frames point. `None` before the region is placed or when
    /// those frames' rays see no surface (the frame-level warnings say why). Tens of
    /// milliseconds: callers rate-limit it.
    pub fn probe(&self) -> Option<Guidance> {
        let vol = self.vol.as_ref()?;
        let recent = &self.accepted[self.accepted.len().saturating_sub(PROBE_FRAMES)..];
        let target = median_centre_hit(vol, recent)?;
        let cfg = MeasureConfig { cell_m: PROBE_CELL_M, ..MeasureConfig::default() };
        Some(match locate(vol, target, &cfg) {
            Ok(w) if (w.centre_world - target).norm() > OFF_CENTRE_M => Guidance::OffCentre,
            Ok(w) if w.rim_unseen > PROBE_MAX_UNSEEN => Guidance::RimNotSeen,
            Ok(_) => Guidance::Measurable,
            Err(ReconError::WoundNotFound(w)) => match w {
                WoundNotFound::NoDepression => Guidance::NotFound,
                WoundNotFound::ExceedsScanRegion => Guidance::OffCentre,
                WoundNotFound::RimNotSeen => Guidance::RimNotSeen,
            },
            // Too little surface near the target: not a wound-level matter.
            Err(_) => Guidance::Unknown,
        })
    }

    /// Time spent in [`Self::offer`], ms.
    pub fn fuse_ms(&self) -> f64 {
        self.fuse_s * 1e3
    }

    /// Ends fusion: finds the target on the fused surface (see the module docs). Fails when
    /// no frame was accepted or none had depth at its centre.
    pub fn finish(self) -> Result<FusedScan, ReconError> {
        let (key, p0) = middle_key(&self.accepted)?;
        let vol = self.vol.ok_or_else(|| ReconError::NotEnoughData("no depth at the centre of any frame".into()))?;
        let hit = median_centre_hit(&vol, &self.accepted);
        Ok(FusedScan {
            target: hit.unwrap_or(p0),
            target_from_surface: hit.is_some(),
            middle_seq: key.seq,
            vol,
            fused: self.fused,
            rejected: self.rejected,
            accepted: self.accepted,
            fuse_ms: self.fuse_s * 1e3,
        })
    }
}

/// Cell of the probe's height field, metres (four times fewer cells than a measurement's).
pub const PROBE_CELL_M: f64 = 0.001;
/// Accepted frames whose centre rays place the probe's target: the last two seconds or so
/// of a scan, so the guidance follows where the phone points now.
pub const PROBE_FRAMES: usize = 30;
/// A wound whose centre lies further than this from where the phone points is off centre,
/// metres.
pub const OFF_CENTRE_M: f64 = 0.015;
/// Largest share of the ring just outside the wound that may lack fused surface before
/// the rim is reported not seen.
pub const PROBE_MAX_UNSEEN: f64 = 0.2;

/// What the live probe ([`ScanFusion::probe`]) says about the wound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guidance {
    /// A wound is found where the phone points and its outline is seen all round.
    Measurable,
    /// No depression near where the phone points.
    NotFound,
    /// The wound found is more than [`OFF_CENTRE_M`] from where the phone points, or runs
    /// past the largest search area.
    OffCentre,
    /// No closed outline, or more than [`PROBE_MAX_UNSEEN`] of the ring around the wound
    /// without fused surface.
    RimNotSeen,
    /// Too little surface near the target to say.
    Unknown,
}

/// The middle accepted frame, else the nearest one with depth at its centre, and that point.
pub fn middle_key(accepted: &[Accepted]) -> Result<(Accepted, Vec3), ReconError> {
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

/// Where the accepted frames' principal rays meet the fused surface: the component-wise
/// median of every hit. One frame's ray moves with the hand (a jittered trajectory aims
/// anywhere within several millimetres of the wound); the median of all of them is where
/// the user kept the wound, and moves by little when one frame is added or dropped.
fn median_centre_hit(vol: &TsdfVolume, accepted: &[Accepted]) -> Option<Vec3> {
    let mut sampler = vol.sampler();
    let hits: Vec<Vec3> = accepted
        .iter()
        .filter_map(|a| {
            let k = &a.intrinsics;
            let origin = a.pose.position();
            let dir = a.pose.rotate(k.ray(k.cx, k.cy)).normalized();
            sampler.raycast(origin, dir, 0.05, 1.0).map(|t| origin + dir * t)
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    let median = |f: fn(&Vec3) -> f64| {
        let mut v: Vec<f64> = hits.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    };
    let m = Vec3::new(median(|p| p.x), median(|p| p.y), median(|p| p.z));
    // The median point need not lie on the surface: take the hit nearest to it.
    hits.iter().copied().min_by(|a, b| (*a - m).norm().total_cmp(&(*b - m).norm()))
}

/// A fused scan and where its wound is looked for.
pub struct FusedScan {
    pub vol: TsdfVolume,
    /// Where the automatic segmentation looks for the wound.
    pub target: Vec3,
    /// Whether the target is on the fused surface (else the centre depth of the key frame).
    pub target_from_surface: bool,
    /// Seq of the frame whose centre ray gave the target.
    pub middle_seq: u64,
    /// Frames integrated.
    pub fused: u64,
    /// Frames turned away (seq, reason code).
    pub rejected: Vec<(u64, &'static str)>,
    /// The frames the gate accepted, in the order they were judged.
    accepted: Vec<Accepted>,
    /// Time spent fusing, ms.
    pub fuse_ms: f64,
}

/// A fused scan's surface and automatic measurement.
pub struct Measured {
    /// The mesh as PLY.
    pub ply: Vec<u8>,
    /// The mesh as binary glTF (no vertex colours).
    pub glb: Vec<u8>,
    /// The mesh itself (to colour it, and write the GLB again with its colours).
    pub mesh: Mesh,
    pub triangles: usize,
    pub mesh_ms: f64,
    /// Coverage of the disc around the target.
    pub coverage: Coverage,
    /// The automatic measurement, or why there is none (no wound near the target).
    pub measured: Result<WoundMeasurements, ReconError>,
    pub measure_ms: f64,
}

impl FusedScan {
    /// The frames the gate accepted (pose, intrinsics, centre point), in the order they
    /// were judged: e.g. to choose the keyframe a clinician draws an outline on.
    pub fn accepted(&self) -> &[Accepted] {
        &self.accepted
    }

    /// The surface of the volume, as [`FusedScan::mesh_and_measure`] meshes it.
    pub fn mesh(&self) -> Mesh {
        extract_mesh(&self.vol, MESH_MIN_WEIGHT)
    }

    /// Meshes the volume and measures the wound at the target. `between` runs between the
    /// two stages.
    pub fn mesh_and_measure(&self, between: &mut dyn FnMut()) -> Measured {
        let t = Instant::now();
        let mesh = self.mesh();
        let (ply, glb) = (mesh.to_ply(), mesh.to_glb());
        let triangles = mesh.triangle_count();
        let mesh_ms = ms(t);
        between();
        let t = Instant::now();
        let coverage = self.vol.coverage(self.target, COVERAGE_RADIUS_M);
        let views: Vec<View> = self.accepted.iter().map(|a| View { intrinsics: a.intrinsics, pose: a.pose }).collect();
        let measured = measure_auto_with_views(&self.vol, self.target, &views, &MeasureConfig::default());
        Measured { ply, glb, mesh, triangles, mesh_ms, coverage, measured, measure_ms: ms(t) }
    }

    /// Measures a clinician's outline drawn on a keyframe taken with `intrinsics` from
    /// `pose` (image coordinates of that frame).
    pub fn measure_polygon(
        &self,
        polygon_px: &[[f64; 2]],
        intrinsics: &Intrinsics,
        pose: &Pose,
    ) -> Result<WoundMeasurements, ReconError> {
        measure_polygon(&self.vol, polygon_px, intrinsics, pose, &MeasureConfig::default())
    }
}

/// The policy's parameters, as recorded with each reconstruction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parameters {
    pub voxel_size_m: f64,
    pub truncation_voxels: f64,
    pub depth_min_m: f64,
    pub depth_max_m: f64,
    pub roi_half_m: f64,
    pub memory_budget_bytes: usize,
    pub mesh_min_weight: f64,
    pub measure_cell_m: f64,
    pub measure_max_radius_m: f64,
    pub coverage_factor: f64,
}

/// The parameters every fusion uses.
pub fn parameters() -> Parameters {
    let t = TsdfConfig::default();
    let m = MeasureConfig::default();
    Parameters {
        voxel_size_m: f64::from(t.voxel_size_m),
        truncation_voxels: f64::from(t.truncation_voxels),
        depth_min_m: f64::from(t.depth_min_m),
        depth_max_m: f64::from(t.depth_max_m),
        roi_half_m: ROI_HALF_M,
        memory_budget_bytes: t.memory_budget_bytes,
        mesh_min_weight: f64::from(MESH_MIN_WEIGHT),
        measure_cell_m: m.cell_m,
        measure_max_radius_m: m.max_radius_m,
        coverage_factor: m.coverage_factor,
    }
}

/// What re-fusing `frames` stored frames of `pixels` each holds at once, beside `stored`
/// bytes of their messages: each frame's depth (f32) and confidence (u8), the volume at its
/// memory budget and a polygon's height-field grids (a dozen f64 grids of at most 473²
/// cells: an outline within `MAX_OUTLINE_RADIUS_M` at the default 0.5 mm cell).
pub fn refuse_bytes(stored: usize, frames: usize, pixels: usize) -> usize {
    let decoded = frames.saturating_mul(pixels.saturating_mul(5));
    let fixed = TsdfConfig::default().memory_budget_bytes + 12 * 8 * 473 * 473;
    stored.saturating_add(decoded).saturating_add(fixed)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{presets, Phantom, ScanConfig};

    fn scan(n: usize) -> Vec<(u64, Frame)> {
        let r = Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig::iphone(1));
        r.frames.into_iter().take(n).enumerate().map(|(i, f)| (i as u64 + 1, f)).collect()
    }

    #[test]
    fn live_and_stored_fusion_keep_the_same_frames_and_find_the_same_target() {
        let frames = scan(60);
        let mut live = ScanFusion::new();
        for (seq, f) in frames.iter().cloned() {
            if !live.skip_redundant(seq, &f.pose) {
                live.offer(seq, f);
            }
        }
        assert!(live.holds_every_accepted_frame());
        let live = live.finish().expect("live result");
        let stored = ScanFusion::fuse_all(&frames, &mut || {}).expect("stored result");
        assert_eq!(live.fused, stored.fused);
        assert_eq!(live.rejected, stored.rejected);
        assert_eq!(live.middle_seq, stored.middle_seq);
        assert!((live.target - stored.target).norm() < 0.002, "targets 2 mm apart at most");
    }

    #[test]
    fn a_scan_with_no_usable_frame_has_no_result() {
        let mut frames = scan(5);
        for (_, f) in &mut frames {
            f.depth.depth.iter_mut().for_each(|d| *d = 0.0);
        }
        assert!(matches!(ScanFusion::fuse_all(&frames, &mut || {}), Err(ReconError::NotEnoughData(_))));
        let mut live = ScanFusion::new();
        for (seq, f) in frames {
            live.offer(seq, f);
        }
        assert!(live.finish().is_err());
    }
}
