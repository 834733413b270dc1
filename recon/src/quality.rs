//! Per-frame quality: statistics, and a gate that turns away frames that are unusable
//! or add nothing, with reasons.
//!
//! Live fusion and the finish step compute [`FrameStats`] for every frame against the
//! last *accepted* frame's pose and run the [`QualityGate`]; its issues become live
//! guidance for the phone ("move closer", "tracking lost"). The gate also does the frame
//! selection: a frame whose camera moved less than both `min_translation_mm` (1 mm) and
//! `min_rotation_deg` (0.5°) since the last accepted frame is [`QualityIssue::Redundant`] (no
//! guidance: holding still is fine). The decision depends only on the frames, never on
//! timing or load, so live fusion and a re-fusion of the stored frames keep the same
//! frames.
//!
//! **Judged around the wound.** The depth a frame gives is judged over its
//! [`WoundRegion`]: the disc of [`REGION_RADIUS_M`] (40 mm) on the surface seen at the
//! principal point, where the protocol asks the phone to keep the wound
//! (`docs/protocol.md`, *Aiming*). A heel or a finger fills 5–25 % of the frame with a
//! floor a metre behind it; the whole frame's median is then the floor's, but the region's
//! is the wound's. The whole frame only has to show that the lens is not covered
//! (`min_valid_fraction`, 3 %). `docs/capture-quality.md` has the rule and its reasons.

use crate::geometry::{DepthImage, Frame, Intrinsics, Pose};

/// Radius of the wound region on the surface, metres: a wound up to 60 mm across with a
/// ring of skin around it at the aimed point.
pub const REGION_RADIUS_M: f64 = 0.04;
/// Without depth at the principal point, the region is the centred rectangle of this
/// fraction of the image's width and height (about the disc's size at 0.3 m).
pub const FALLBACK_REGION_FRACTION: f64 = 0.2;
/// Half the side of the square of pixels around the principal point whose median depth
/// places the region (5×5, as `fusion::centre_point`).
const CENTRE_HALF: i64 = 2;

/// The median valid depth of the 5×5 pixels around the principal point of an image read
/// through `depth_at(i, j)` (metres; anything not finite and positive is no depth). The
/// same point `fusion::centre_point` aims the target at.
pub fn centre_depth_with(k: &Intrinsics, depth_at: impl Fn(u32, u32) -> f32) -> Option<f64> {
    let (ci, cj) = (k.cx.round() as i64, k.cy.round() as i64);
    let mut d: Vec<f32> = Vec::with_capacity(25);
    for j in cj - CENTRE_HALF..=cj + CENTRE_HALF {
        for i in ci - CENTRE_HALF..=ci + CENTRE_HALF {
            if i >= 0 && j >= 0 && i < i64::from(k.width) && j < i64::from(k.height) {
                let z = depth_at(i as u32, j as u32);
                if DepthImage::is_valid_depth(z) {
                    d.push(z);
                }
            }
        }
    }
    if d.is_empty() {
        return None;
    }
    d.sort_by(f32::total_cmp);
    Some(f64::from(d[d.len() / 2]))
}

/// The part of a depth image the gate judges (see the module docs): an ellipse of
/// [`REGION_RADIUS_M`] at the centre depth around the principal point (`fx·R/z` by
/// `fy·R/z` pixels), or without a centre depth the central rectangle
/// ([`FALLBACK_REGION_FRACTION`]); clipped to the image, never empty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WoundRegion {
    cx: f64,
    cy: f64,
    /// Semi-axes (disc) or half-sides (rectangle), pixels.
    rx: f64,
    ry: f64,
    disc: bool,
    width: u32,
    height: u32,
}

impl WoundRegion {
    /// The region of an image with intrinsics `k` whose centre depth is `centre_depth_m`.
    pub fn locate(k: &Intrinsics, centre_depth_m: Option<f64>) -> Self {
        // At least a pixel and a half, so that the pixel nearest the principal point is in
        // (the principal point may lie on the image border).
        let (rx, ry, disc) = match centre_depth_m {
            Some(z) => (k.fx * REGION_RADIUS_M / z, k.fy * REGION_RADIUS_M / z, true),
            None => {
                let f = FALLBACK_REGION_FRACTION / 2.0;
                (f * f64::from(k.width), f * f64::from(k.height), false)
            }
        };
        WoundRegion { cx: k.cx, cy: k.cy, rx: rx.max(1.5), ry: ry.max(1.5), disc, width: k.width, height: k.height }
    }

    /// The region of `depth` (seen with intrinsics `k`).
    pub fn of(k: &Intrinsics, depth: &DepthImage) -> Self {
        Self::locate(k, centre_depth_with(k, |i, j| depth.get(i, j).unwrap_or(0.0)))
    }

    /// Whether the region is the disc around the centre point (false: the fallback
    /// rectangle, without depth at the principal point).
    pub fn is_disc(&self) -> bool {
        self.disc
    }

    /// The region's rows: `(row, first column, end column)` with the end exclusive, top to
    /// bottom, every row non-empty.
    pub fn spans(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let clamp = |v: f64, n: u32| v.clamp(0.0, f64::from(n)) as u32;
        let j0 = clamp((self.cy - self.ry).ceil(), self.height);
        let j1 = clamp((self.cy + self.ry).floor() + 1.0, self.height);
        (j0..j1).filter_map(move |j| {
            let half = if self.disc {
                let dy = (f64::from(j) - self.cy) / self.ry;
                self.rx * (1.0 - dy * dy).max(0.0).sqrt()
            } else {
                self.rx
            };
            let i0 = clamp((self.cx - half).ceil(), self.width);
            let i1 = clamp((self.cx + half).floor() + 1.0, self.width);
            (i1 > i0).then_some((j, i0, i1))
        })
    }

    /// Number of pixels in the region.
    pub fn pixel_count(&self) -> usize {
        self.spans().map(|(_, a, b)| (b - a) as usize).sum()
    }
}

/// Valid fraction and median of the valid depths among `depths` (`None` without any).
/// Valid depths are finite and positive, so their bit patterns sort like the values: the
/// median is selected on integers (same value as on floats, cheaper compares), and the
/// compaction is branch-free.
fn valid_and_median(n: usize, depths: impl Iterator<Item = f32>) -> (f64, Option<f64>) {
    let mut valid = vec![0u32; n];
    let mut count = 0usize;
    for d in depths {
        if let Some(slot) = valid.get_mut(count) {
            *slot = d.to_bits();
        }
        count += usize::from(DepthImage::is_valid_depth(d));
    }
    valid.truncate(count);
    let fraction = count as f64 / n.max(1) as f64;
    if valid.is_empty() {
        return (fraction, None);
    }
    let mid = valid.len() / 2;
    valid.select_nth_unstable(mid);
    (fraction, Some(f64::from(f32::from_bits(valid[mid]))))
}

/// Statistics of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    /// Fraction of pixels with a depth measurement (whole frame).
    pub valid_fraction: f64,
    /// Fraction of pixels with ARKit confidence 2 (high), if confidence was sent.
    pub high_confidence_fraction: Option<f64>,
    /// Median measured depth over the whole frame, metres (`None` without any measurement).
    pub median_depth_m: Option<f64>,
    /// Fraction of the [`WoundRegion`]'s pixels with a depth measurement.
    pub region_valid_fraction: f64,
    /// Median measured depth in the [`WoundRegion`], metres (`None` without any there).
    pub region_median_depth_m: Option<f64>,
    /// Camera translation since the previous frame, millimetres.
    pub translation_jump_mm: Option<f64>,
    /// Camera rotation since the previous frame, degrees.
    pub rotation_jump_deg: Option<f64>,
}

impl FrameStats {
    /// Computes the statistics; `previous_pose` is the pose of the frame before (if any).
    pub fn compute(frame: &Frame, previous_pose: Option<&Pose>) -> FrameStats {
        FrameStats::from_parts(&frame.depth, &frame.intrinsics, &frame.pose, previous_pose)
    }

    /// Same as [`FrameStats::compute`] from parts (`k` must match the image's size).
    pub fn from_parts(depth: &DepthImage, k: &Intrinsics, pose: &Pose, previous_pose: Option<&Pose>) -> FrameStats {
        let n = depth.depth.len().max(1);
        let (valid_fraction, median_depth_m) = valid_and_median(depth.depth.len(), depth.depth.iter().copied());
        // A size mismatch is refused by `Frame::validate`; the whole frame stands in for the
        // region rather than index out of the image.
        let (region_valid_fraction, region_median_depth_m) = if k.width == depth.width && k.height == depth.height {
            let region = WoundRegion::of(k, depth);
            let w = depth.width as usize;
            let row =
                |(j, a, b): (u32, u32, u32)| &depth.depth[j as usize * w + a as usize..j as usize * w + b as usize];
            valid_and_median(region.pixel_count(), region.spans().flat_map(row).copied())
        } else {
            (valid_fraction, median_depth_m)
        };
        let high_confidence_fraction =
            depth.confidence.as_ref().map(|c| c.iter().filter(|v| **v >= 2).count() as f64 / n as f64);
        let (translation_jump_mm, rotation_jump_deg) = match previous_pose {
            Some(p) => {
                let (t, r) = p.difference(pose);
                (Some(t * 1000.0), Some(r))
            }
            None => (None, None),
        };
        FrameStats {
            valid_fraction,
            high_confidence_fraction,
            median_depth_m,
            region_valid_fraction,
            region_median_depth_m,
            translation_jump_mm,
            rotation_jump_deg,
        }
    }
}

/// Why a frame was rejected. Each maps to a hint for the person scanning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityIssue {
    /// Too few pixels have depth: in the wound region (pointing past the body part, too
    /// close) or, with `whole_frame`, in the whole frame (covered lens).
    TooLittleValidDepth {
        /// Observed fraction.
        fraction: f64,
        /// Required fraction.
        min: f64,
        /// The fraction is the whole frame's (else the wound region's).
        whole_frame: bool,
    },
    /// The wound region is closer than the sensor measures well.
    TooClose {
        /// Median depth in the wound region, metres.
        median_m: f64,
        /// Minimum, metres.
        min_m: f64,
    },
    /// The wound region is too far for millimetre accuracy.
    TooFar {
        /// Median depth in the wound region, metres.
        median_m: f64,
        /// Maximum, metres.
        max_m: f64,
    },
    /// The pose moved implausibly since the previous frame (tracking glitch or relocalisation).
    PoseJump {
        /// Translation, millimetres.
        translation_mm: f64,
        /// Rotation, degrees.
        rotation_deg: f64,
    },
    /// The camera barely moved since the last accepted frame: the view is already fused
    /// (frame selection; not a problem to report to the person scanning).
    Redundant {
        /// Translation since the last accepted frame, millimetres.
        translation_mm: f64,
        /// Rotation since the last accepted frame, degrees.
        rotation_deg: f64,
    },
}

impl QualityIssue {
    /// A stable machine-readable code for the issue.
    pub fn code(&self) -> &'static str {
        match self {
            QualityIssue::TooLittleValidDepth { .. } => "too_little_depth",
            QualityIssue::TooClose { .. } => "too_close",
            QualityIssue::TooFar { .. } => "too_far",
            QualityIssue::PoseJump { .. } => "pose_jump",
            QualityIssue::Redundant { .. } => "redundant",
        }
    }
}

/// Most frames a pose-jump limit is multiplied by (see [`QualityGate::after_gap`]): one
/// second at 30 frames/s.
pub const MAX_JUMP_GAP: u64 = 30;

/// Thresholds for accepting a frame. The depth rules are judged in the frame's
/// [`WoundRegion`]; the whole frame only has to show the lens is not covered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityGate {
    /// Minimum fraction of the whole frame's pixels with depth (a covered lens has none).
    pub min_valid_fraction: f64,
    /// Minimum fraction of the wound region's pixels with depth.
    pub min_region_valid_fraction: f64,
    /// Minimum median depth in the wound region, metres.
    pub min_median_depth_m: f64,
    /// Maximum median depth in the wound region, metres.
    pub max_median_depth_m: f64,
    /// Maximum translation between consecutive frames, millimetres.
    pub max_translation_jump_mm: f64,
    /// Maximum rotation between consecutive frames, degrees.
    pub max_rotation_jump_deg: f64,
    /// Frame selection: a frame that moved less than this *and* less than
    /// `min_rotation_deg` since the last accepted frame is redundant, millimetres (0
    /// turns selection off).
    pub min_translation_mm: f64,
    /// See `min_translation_mm`, degrees.
    pub min_rotation_deg: f64,
}

impl Default for QualityGate {
    fn default() -> Self {
        QualityGate {
            min_valid_fraction: 0.03,
            min_region_valid_fraction: 0.5,
            min_median_depth_m: 0.12,
            max_median_depth_m: 0.5,
            max_translation_jump_mm: 40.0,
            max_rotation_jump_deg: 15.0,
            // Conservative: 2 mm and 1° lost accuracy on a phantom trajectory with few usable
            // frames (docs/measurement.md, Frame selection).
            min_translation_mm: 1.0,
            min_rotation_deg: 0.5,
        }
    }
}

impl QualityGate {
    /// All issues of a frame; empty means the frame passes.
    pub fn check(&self, s: &FrameStats) -> Vec<QualityIssue> {
        let mut issues = Vec::new();
        // First, so that a caller may decide on the poses alone (before decoding the depth)
        // and still report the same first issue.
        if let (Some(t), Some(r)) = (s.translation_jump_mm, s.rotation_jump_deg) {
            if self.redundant_motion(t, r) {
                issues.push(QualityIssue::Redundant { translation_mm: t, rotation_deg: r });
            }
        }
        if s.valid_fraction < self.min_valid_fraction {
            issues.push(QualityIssue::TooLittleValidDepth {
                fraction: s.valid_fraction,
                min: self.min_valid_fraction,
                whole_frame: true,
            });
        } else if s.region_valid_fraction < self.min_region_valid_fraction {
            issues.push(QualityIssue::TooLittleValidDepth {
                fraction: s.region_valid_fraction,
                min: self.min_region_valid_fraction,
                whole_frame: false,
            });
        }
        if let Some(m) = s.region_median_depth_m {
            if m < self.min_median_depth_m {
                issues.push(QualityIssue::TooClose { median_m: m, min_m: self.min_median_depth_m });
            } else if m > self.max_median_depth_m {
                issues.push(QualityIssue::TooFar { median_m: m, max_m: self.max_median_depth_m });
            }
        }
        if let (Some(t), Some(r)) = (s.translation_jump_mm, s.rotation_jump_deg) {
            if t > self.max_translation_jump_mm || r > self.max_rotation_jump_deg {
                issues.push(QualityIssue::PoseJump { translation_mm: t, rotation_deg: r });
            }
        }
        issues
    }

    /// The gate for a frame `gap` frames (by sequence number) after the last accepted one:
    /// the pose-jump limits are per frame, so the pose may have moved up to `gap` times
    /// them (at most [`MAX_JUMP_GAP`] times). Without this a stretch of rejected frames
    /// (a covered lens, a look away) would make every later frame a "jump" from a pose long
    /// past, and the rest of the scan would be rejected. A glitch right after an accepted
    /// frame still is one.
    pub fn after_gap(&self, gap: u64) -> QualityGate {
        let n = gap.clamp(1, MAX_JUMP_GAP) as f64;
        QualityGate {
            max_translation_jump_mm: self.max_translation_jump_mm * n,
            max_rotation_jump_deg: self.max_rotation_jump_deg * n,
            ..*self
        }
    }

    fn redundant_motion(&self, translation_mm: f64, rotation_deg: f64) -> bool {
        translation_mm < self.min_translation_mm && rotation_deg < self.min_rotation_deg
    }

    /// Whether a frame at `pose` is [`QualityIssue::Redundant`] after the last accepted
    /// frame's pose: the first issue [`QualityGate::check`] would report, decided from the
    /// poses alone (live fusion skips such a frame without decoding its depth).
    pub fn is_redundant(&self, pose: &Pose, last_accepted: Option<&Pose>) -> bool {
        last_accepted.is_some_and(|p| {
            let (t, r) = p.difference(pose);
            self.redundant_motion(t * 1000.0, r)
        })
    }

    /// Whether a frame passes.
    pub fn passes(&self, s: &FrameStats) -> bool {
        self.check(s).is_empty()
    }

    /// The same gate without frame selection (every usable frame is accepted).
    pub fn without_selection(self) -> Self {
        QualityGate { min_translation_mm: 0.0, min_rotation_deg: 0.0, ..self }
    }

    /// Runs the gate over a sequence as live fusion and the finish step do ([`GateRun`])
    /// and returns the accepted frames' indices.
    pub fn accepted_indices(&self, frames: &[Frame]) -> Vec<usize> {
        let mut run = GateRun::new(*self);
        (0..frames.len()).filter(|&i| run.judge(i as u64, &frames[i]).is_none()).collect()
    }
}

/// The gate run over one scan's frames in sequence order. It remembers the last accepted
/// frame (sequence number and pose), against which every frame is judged: redundancy, and
/// the pose jump scaled by the frames since ([`QualityGate::after_gap`]). Live fusion, the
/// finish step and [`QualityGate::accepted_indices`] all judge through it, so they keep the
/// same frames.
#[derive(Debug, Clone)]
pub struct GateRun {
    gate: QualityGate,
    last: Option<(u64, Pose)>,
}

impl GateRun {
    pub fn new(gate: QualityGate) -> Self {
        GateRun { gate, last: None }
    }

    /// Whether a frame at `pose` is redundant: [`GateRun::judge`]'s first issue for it,
    /// decided before its depth is decoded.
    pub fn is_redundant(&self, pose: &Pose) -> bool {
        self.gate.is_redundant(pose, self.last.as_ref().map(|(_, p)| p))
    }

    /// Judges frame `seq`: its first issue, or `None` when it is accepted (it then becomes
    /// the frame the next ones are judged against).
    pub fn judge(&mut self, seq: u64, frame: &Frame) -> Option<QualityIssue> {
        let (gap, prev) = match &self.last {
            Some((s, p)) => (seq.saturating_sub(*s), Some(p)),
            None => (1, None),
        };
        let issue = self.gate.after_gap(gap).check(&FrameStats::compute(frame, prev)).first().copied();
        if issue.is_none() {
            self.last = Some((seq, frame.pose));
        }
        issue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Intrinsics, Vec3};

    fn frame(fill: f32, valid_every: usize, pose: Pose) -> Frame {
        let k = Intrinsics::iphone_256x192();
        let d = (0..k.pixel_count()).map(|i| if i % valid_every == 0 { fill } else { 0.0 }).collect();
        Frame {
            depth: DepthImage::new(k.width, k.height, d, Some(vec![2; k.pixel_count()])).unwrap(),
            intrinsics: k,
            pose,
        }
    }

    /// Intrinsics of an image one row high.
    fn line(width: u32) -> Intrinsics {
        Intrinsics { fx: 1.0, fy: 1.0, cx: f64::from(width) / 2.0, cy: 0.0, width, height: 1 }
    }

    #[test]
    fn the_median_depth_is_the_median_of_the_valid_depths() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -0.3, f32::MIN_POSITIVE];
        let depth: Vec<f32> = (0..5_001u32)
            .map(|i| match i % 11 {
                0..=6 => specials[(i % 7) as usize],
                _ => 0.1 + ((i.wrapping_mul(2_654_435_761) >> 8) % 10_000) as f32 * 1e-4,
            })
            .collect();
        let mut valid: Vec<f32> = depth.iter().copied().filter(|d| DepthImage::is_valid_depth(*d)).collect();
        let mid = valid.len() / 2;
        valid.select_nth_unstable_by(mid, f32::total_cmp);
        let img = DepthImage::new(5_001, 1, depth, None).unwrap();
        let s = FrameStats::from_parts(&img, &line(5_001), &Pose::IDENTITY, None);
        assert_eq!(s.median_depth_m, Some(f64::from(valid[mid])));
        assert_eq!(s.valid_fraction, valid.len() as f64 / 5_001.0);
        // Other shapes: many equal values, neighbouring bit patterns, subnormals beside
        // +0.0, an even count, one value, none.
        let shapes: Vec<Vec<f32>> = vec![
            (0..4_000).map(|i| if i % 3 == 0 { 0.25 } else { 0.25 + (i % 7) as f32 * 1e-7 }).collect(),
            (0..4_096).map(|i| f32::from_bits(0x3e80_0000 + (i * 977 % 8_192))).collect(),
            (0..1_000).map(|i| f32::from_bits(1 + i * 3)).chain([0.0, f32::NAN, -1.0]).collect(),
            (1..=10).map(|i| 0.1 * i as f32).collect(),
            vec![0.3],
            vec![0.0, f32::NAN, f32::INFINITY],
        ];
        for d in shapes {
            let mut v: Vec<f32> = d.iter().copied().filter(|x| DepthImage::is_valid_depth(*x)).collect();
            let want = if v.is_empty() {
                None
            } else {
                let m = v.len() / 2;
                v.select_nth_unstable_by(m, f32::total_cmp);
                Some(f64::from(v[m]))
            };
            let img = DepthImage::new(d.len() as u32, 1, d.clone(), None).unwrap();
            let k = line(d.len() as u32);
            assert_eq!(FrameStats::from_parts(&img, &k, &Pose::IDENTITY, None).median_depth_m, want, "{:?}", &d[..1]);
        }
    }

    #[test]
    fn a_good_frame_passes_the_gate() {
        let f = frame(0.25, 1, Pose::IDENTITY);
        let s = FrameStats::compute(&f, None);
        assert_eq!(s.valid_fraction, 1.0);
        assert_eq!(s.median_depth_m, Some(f64::from(0.25f32)));
        assert_eq!(s.high_confidence_fraction, Some(1.0));
        assert!(QualityGate::default().passes(&s));
    }

    #[test]
    fn sparse_far_jumping_frames_are_rejected_with_every_reason() {
        let prev = Pose::IDENTITY;
        let mut moved = Pose::from_axis_angle(Vec3::new(0.0, 1.0, 0.0), 0.5);
        moved.translation = [0.1, 0.0, 0.0];
        let f = frame(0.9, 4, moved);
        let s = FrameStats::compute(&f, Some(&prev));
        assert!((s.translation_jump_mm.unwrap() - 100.0).abs() < 1e-9);
        let codes: Vec<_> = QualityGate::default().check(&s).iter().map(|i| i.code()).collect();
        assert_eq!(codes, vec!["too_little_depth", "too_far", "pose_jump"]);
        let near = FrameStats::compute(&frame(0.05, 1, Pose::IDENTITY), None);
        let codes: Vec<_> = QualityGate::default().check(&near).iter().map(|i| i.code()).collect();
        assert_eq!(codes, vec!["too_close"]);
    }

    #[test]
    fn a_stretch_of_unusable_frames_does_not_make_the_rest_of_the_scan_a_pose_jump() {
        let gate = QualityGate::default();
        let at = |x_mm: f64, usable: bool| {
            let mut p = Pose::IDENTITY;
            p.translation = [x_mm / 1000.0, 0.0, 0.0];
            frame(0.25, if usable { 1 } else { 10 }, p)
        };
        // 10 mm a frame (a steady sweep); frames 1..=9 have too little depth. Frame 10 is
        // 100 mm from the last accepted one, 10 frames later: a sweep, not a jump.
        let mut frames: Vec<Frame> = (0..=12).map(|k| at(10.0 * f64::from(k), !(1..=9).contains(&k))).collect();
        assert_eq!(gate.accepted_indices(&frames), vec![0, 10, 11, 12]);
        // The same 100 mm one frame after an accepted frame is a tracking glitch.
        frames[1] = at(100.0, true);
        let s = FrameStats::compute(&frames[1], Some(&frames[0].pose));
        assert_eq!(gate.after_gap(1).check(&s).iter().map(|i| i.code()).collect::<Vec<_>>(), vec!["pose_jump"]);
        // And however long the gap, the limit stops growing at MAX_JUMP_GAP frames.
        let far = FrameStats::compute(&at(40.0 * MAX_JUMP_GAP as f64 + 50.0, true), Some(&frames[0].pose));
        assert!(!gate.after_gap(10 * MAX_JUMP_GAP).passes(&far));
    }

    #[test]
    fn frames_that_barely_moved_since_the_last_accepted_one_are_redundant() {
        let gate = QualityGate::default();
        let at = |x_mm: f64, deg: f64| {
            let mut p = Pose::from_axis_angle(Vec3::new(0.0, 1.0, 0.0), deg.to_radians());
            p.translation = [x_mm / 1000.0, 0.0, 0.0];
            frame(0.25, 1, p)
        };
        // Still, then creeping 0.3 of the threshold a frame: every 4th frame has moved far
        // enough from the last accepted one (the comparison is with it, not with the
        // previous frame).
        let step = 0.3 * gate.min_translation_mm;
        let mut frames: Vec<Frame> = (0..3).map(|_| at(0.0, 0.0)).collect();
        frames.extend((1..=8).map(|k| at(step * f64::from(k), 0.0)));
        assert_eq!(gate.accepted_indices(&frames), vec![0, 6, 10]);
        let s = FrameStats::compute(&frames[1], Some(&frames[0].pose));
        assert_eq!(gate.check(&s).iter().map(|i| i.code()).collect::<Vec<_>>(), vec!["redundant"]);
        // A turn past the rotation threshold alone is a new view; so is the first frame.
        let turned = at(0.0, 1.5 * gate.min_rotation_deg);
        assert!(gate.passes(&FrameStats::compute(&turned, Some(&frames[0].pose))));
        assert!(gate.passes(&FrameStats::compute(&frames[0], None)));
        // Without selection every usable frame is accepted.
        assert_eq!(gate.without_selection().accepted_indices(&frames), (0..11).collect::<Vec<_>>());
        // Redundancy is decided from the poses alone and reported first.
        for (i, f) in frames.iter().enumerate().skip(1) {
            let last = &frames[*gate.accepted_indices(&frames[..i]).last().expect("frame 0")].pose;
            let first = gate.check(&FrameStats::compute(f, Some(last))).first().map(QualityIssue::code);
            assert_eq!(gate.is_redundant(&f.pose, Some(last)), first == Some("redundant"), "frame {i}");
        }
        let far = FrameStats::compute(&frame(0.9, 1, Pose::IDENTITY), Some(&Pose::IDENTITY));
        let codes: Vec<_> = gate.check(&far).iter().map(|i| i.code()).collect();
        assert_eq!(codes, vec!["redundant", "too_far"]);
        assert!(!gate.is_redundant(&Pose::IDENTITY, None));
    }

    #[test]
    fn a_phantom_orbit_at_60_fps_keeps_about_two_frames_in_five_and_the_fast_one_all() {
        use crate::phantom::{presets, Phantom, ScanConfig};
        let phantom = Phantom::new(presets::spherical_cap(false));
        let gate = QualityGate::default();
        // The accuracy trajectories: 60 frames along a 100–200° arc, a few degrees apart.
        let fast = phantom.scan(&ScanConfig::iphone(1));
        assert_eq!(gate.accepted_indices(&fast.frames).len(), fast.frames.len());
        // The same arc captured at 60 fps over 10 s: about 0.5 mm and 0.2° a frame.
        let slow = phantom.scan(&ScanConfig { frames: 600, ..ScanConfig::iphone(1) });
        let kept = gate.accepted_indices(&slow.frames).len();
        assert!((150..=350).contains(&kept), "{kept} of 600 kept");
    }

    /// A body part on its own, ray-cast: an ellipsoid or a cylinder along world x, its top
    /// at the world origin's height `top_z`, with a floor `floor_below_m` under the
    /// camera's first position (or nothing behind, as beyond the sensor's range).
    #[derive(Clone, Copy)]
    enum Part {
        /// Semi-axes, metres; centred on the world origin.
        Ellipsoid(Vec3),
        /// Radius, metres; axis along x through the world origin.
        Cylinder(f64),
    }

    struct Scene {
        part: Part,
        /// World z of the floor (a plane facing +z), if any.
        floor_z: Option<f64>,
    }

    impl Scene {
        fn top(&self) -> Vec3 {
            match self.part {
                Part::Ellipsoid(a) => Vec3::new(0.0, 0.0, a.z),
                Part::Cylinder(r) => Vec3::new(0.0, 0.0, r),
            }
        }

        fn hit(&self, o: Vec3, d: Vec3) -> Option<f64> {
            let quadratic = |a: f64, b: f64, c: f64| {
                let disc = b * b - 4.0 * a * c;
                (disc >= 0.0 && a > 0.0).then(|| (-b - disc.sqrt()) / (2.0 * a)).filter(|t| *t > 0.0)
            };
            let part = match self.part {
                Part::Ellipsoid(s) => {
                    let (o, d) =
                        (Vec3::new(o.x / s.x, o.y / s.y, o.z / s.z), Vec3::new(d.x / s.x, d.y / s.y, d.z / s.z));
                    quadratic(d.dot(d), 2.0 * o.dot(d), o.dot(o) - 1.0)
                }
                Part::Cylinder(r) => {
                    quadratic(d.y * d.y + d.z * d.z, 2.0 * (o.y * d.y + o.z * d.z), o.y * o.y + o.z * o.z - r * r)
                }
            };
            let floor = self.floor_z.and_then(|z| (d.z.abs() > 1e-12).then(|| (z - o.z) / d.z)).filter(|t| *t > 0.0);
            match (part, floor) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }

        /// The frame seen from `eye` aimed at `aim` (256×192, no noise).
        fn frame(&self, eye: Vec3, aim: Vec3) -> Frame {
            let k = Intrinsics::iphone_256x192();
            let pose = Pose::look_at(eye, aim, Vec3::new(0.0, 1.0, 0.0));
            let mut depth = Vec::with_capacity(k.pixel_count());
            for j in 0..k.height {
                for i in 0..k.width {
                    // The camera-frame ray has z = 1, so the ray parameter is the depth.
                    let d = pose.rotate(k.ray(f64::from(i), f64::from(j)));
                    depth.push(self.hit(pose.position(), d).map_or(0.0, |t| t as f32));
                }
            }
            Frame { depth: DepthImage::new(k.width, k.height, depth, None).unwrap(), intrinsics: k, pose }
        }

        /// Seen from `dist` metres above its top, tilted `tilt_deg` about world x.
        fn seen_above(&self, dist: f64, tilt_deg: f64) -> Frame {
            let t = tilt_deg.to_radians();
            let top = self.top();
            self.frame(top + Vec3::new(0.0, -dist * t.sin(), dist * t.cos()), top)
        }
    }

    const HEEL: Part = Part::Ellipsoid(Vec3 { x: 0.045, y: 0.035, z: 0.04 });
    const FINGER: Part = Part::Cylinder(0.025);

    fn codes(s: &FrameStats) -> Vec<&'static str> {
        QualityGate::default().check(s).iter().map(QualityIssue::code).collect()
    }

    #[test]
    fn a_heel_or_a_finger_with_the_floor_behind_is_judged_by_its_own_depth() {
        for (name, part) in [("heel", HEEL), ("finger R 25 mm", FINGER)] {
            for floor in [true, false] {
                let scene = Scene { part, floor_z: floor.then_some(0.25 - 0.9) };
                for (dist, tilt) in [(0.25, 0.0), (0.2, 25.0), (0.3, -20.0)] {
                    let f = scene.seen_above(dist, tilt);
                    let s = FrameStats::compute(&f, None);
                    let label = format!("{name}, floor {floor}, {dist} m, {tilt}°: {s:?}");
                    // The body part fills little of the frame: the whole frame's median is the
                    // floor's (the old rule rejected these as too far), or too few pixels
                    // have depth without a floor.
                    if floor {
                        assert!(s.median_depth_m.unwrap() > 0.5, "{label}");
                    } else {
                        assert!(s.valid_fraction < 0.3, "{label}");
                    }
                    assert!(WoundRegion::of(&f.intrinsics, &f.depth).is_disc(), "{label}");
                    assert!(s.region_valid_fraction >= 0.5, "{label}");
                    assert!((s.region_median_depth_m.unwrap() - dist).abs() < 0.03, "{label}");
                    assert_eq!(codes(&s), Vec::<&str>::new(), "{label}");
                }
            }
        }
    }

    #[test]
    fn a_covered_lens_or_an_aim_past_the_body_part_is_rejected() {
        let scene = Scene { part: HEEL, floor_z: Some(0.25 - 0.9) };
        let mut f = scene.seen_above(0.25, 0.0);
        // A finger over the lens: a few stray returns a centimetre away, 1 % of the frame.
        f.depth.depth.iter_mut().enumerate().for_each(|(i, d)| *d = if i % 100 == 0 { 0.01 } else { 0.0 });
        let s = FrameStats::compute(&f, None);
        assert_eq!(codes(&s), vec!["too_little_depth", "too_close"]);
        assert!(matches!(
            QualityGate::default().check(&s)[0],
            QualityIssue::TooLittleValidDepth { whole_frame: true, .. }
        ));
        f.depth.depth.fill(0.0);
        assert_eq!(codes(&FrameStats::compute(&f, None)), vec!["too_little_depth"]);
        // Aimed at the floor beside the heel: the principal point sees the floor 0.9 m away.
        let off = scene.frame(Vec3::new(0.15, 0.0, 0.25), Vec3::new(0.15, 0.0, -0.65));
        assert_eq!(codes(&FrameStats::compute(&off, None)), vec!["too_far"]);
        // Aimed past a finger with nothing behind it: no depth at the principal point, and
        // the central rectangle is mostly empty.
        let air = Scene { part: FINGER, floor_z: None };
        let past = air.frame(Vec3::new(0.0, 0.08, 0.275), Vec3::new(0.0, 0.08, 0.0));
        let s = FrameStats::compute(&past, None);
        assert!(!WoundRegion::of(&past.intrinsics, &past.depth).is_disc());
        assert!(s.region_valid_fraction < 0.5 && s.valid_fraction >= 0.03, "{s:?}");
        assert_eq!(codes(&s), vec!["too_little_depth"]);
    }

    #[test]
    fn the_region_is_a_40_mm_disc_at_the_centre_depth_clipped_to_the_image() {
        let k = Intrinsics::iphone_256x192();
        let r = WoundRegion::locate(&k, Some(0.212));
        // fx·0.04/0.212 = 40 pixels: about π·40² pixels.
        let n = r.pixel_count() as f64;
        assert!((n / (std::f64::consts::PI * 1600.0) - 1.0).abs() < 0.02, "{n}");
        assert!(r.spans().all(|(j, a, b)| j < k.height && a < b && b <= k.width));
        // Close up the disc is larger than the image: the region is the whole image.
        assert_eq!(WoundRegion::locate(&k, Some(0.02)).pixel_count(), k.pixel_count());
        // Far away it keeps at least the pixels around the principal point; on the border too.
        assert_eq!(WoundRegion::locate(&k, Some(50.0)).pixel_count(), 4);
        let corner = Intrinsics { cx: 256.0, cy: 192.0, ..k };
        assert!(WoundRegion::locate(&corner, Some(50.0)).pixel_count() >= 1);
        // Without a centre depth: the central 20 % of width and height.
        let c = WoundRegion::locate(&k, None);
        assert!(!c.is_disc());
        assert!((c.pixel_count() as f64 / (0.2 * 256.0 * 0.2 * 192.0) - 1.0).abs() < 0.1);
    }

    #[test]
    fn live_and_stored_fusion_keep_the_same_frames_of_a_small_body_part() {
        use crate::fusion::ScanFusion;
        let scene = Scene { part: HEEL, floor_z: Some(0.25 - 0.9) };
        // An arc over the heel with a covered lens, a look at the floor and a pause.
        let frames: Vec<(u64, Frame)> = (0..24u64)
            .map(|i| {
                let tilt = -30.0 + 2.5 * i as f64;
                let mut f = scene.seen_above(0.25, if (15..18).contains(&i) { -30.0 + 2.5 * 14.0 } else { tilt });
                if (5..8).contains(&i) {
                    f.depth.depth.fill(0.0);
                }
                if i == 11 {
                    f = scene.frame(f.pose.position() + Vec3::new(0.15, 0.0, 0.0), Vec3::new(0.15, 0.0, -0.65));
                }
                (i + 1, f)
            })
            .collect();
        let mut live = ScanFusion::new();
        for (seq, f) in frames.iter().cloned() {
            if !live.skip_redundant(seq, &f.pose) {
                live.offer(seq, f);
            }
        }
        let live = live.finish().expect("the live fusion has accepted frames");
        let stored = ScanFusion::fuse_all(&frames, &mut || {}).expect("the stored frames have accepted ones");
        assert_eq!(live.rejected, stored.rejected);
        assert_eq!(live.fused, stored.fused);
        let reasons: Vec<(u64, &str)> = stored.rejected.clone();
        assert_eq!(
            reasons,
            vec![
                (6, "too_little_depth"),
                (7, "too_little_depth"),
                (8, "too_little_depth"),
                (12, "too_far"),
                (16, "redundant"),
                (17, "redundant"),
                (18, "redundant")
            ]
        );
        let only: Vec<Frame> = frames.into_iter().map(|(_, f)| f).collect();
        assert_eq!(QualityGate::default().accepted_indices(&only).len() as u64, stored.fused);
    }
}
