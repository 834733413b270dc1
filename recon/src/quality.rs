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

use crate::geometry::{DepthImage, Frame, Pose};

/// Statistics of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    /// Fraction of pixels with a depth measurement.
    pub valid_fraction: f64,
    /// Fraction of pixels with ARKit confidence 2 (high), if confidence was sent.
    pub high_confidence_fraction: Option<f64>,
    /// Median measured depth, metres (`None` without any measurement).
    pub median_depth_m: Option<f64>,
    /// Camera translation since the previous frame, millimetres.
    pub translation_jump_mm: Option<f64>,
    /// Camera rotation since the previous frame, degrees.
    pub rotation_jump_deg: Option<f64>,
}

impl FrameStats {
    /// Computes the statistics; `previous_pose` is the pose of the frame before (if any).
    pub fn compute(frame: &Frame, previous_pose: Option<&Pose>) -> FrameStats {
        FrameStats::from_parts(&frame.depth, &frame.pose, previous_pose)
    }

    /// Same as [`FrameStats::compute`] from parts.
    pub fn from_parts(depth: &DepthImage, pose: &Pose, previous_pose: Option<&Pose>) -> FrameStats {
        let n = depth.depth.len().max(1);
        // Valid depths are finite and positive, so their bit patterns sort like the values:
        // the median is selected on integers (same value as on floats, cheaper compares),
        // and the compaction is branch-free.
        let mut valid = vec![0u32; depth.depth.len()];
        let mut count = 0usize;
        for &d in &depth.depth {
            if let Some(slot) = valid.get_mut(count) {
                *slot = d.to_bits();
            }
            count += usize::from(DepthImage::is_valid_depth(d));
        }
        valid.truncate(count);
        let valid_fraction = valid.len() as f64 / n as f64;
        let median_depth_m = if valid.is_empty() {
            None
        } else {
            let mid = valid.len() / 2;
            valid.select_nth_unstable(mid);
            Some(f64::from(f32::from_bits(valid[mid])))
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
        FrameStats { valid_fraction, high_confidence_fraction, median_depth_m, translation_jump_mm, rotation_jump_deg }
    }
}

/// Why a frame was rejected. Each maps to a hint for the person scanning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityIssue {
    /// Too few pixels have depth (covered lens, pointing at the sky, too close).
    TooLittleValidDepth {
        /// Observed fraction.
        fraction: f64,
        /// Required fraction.
        min: f64,
    },
    /// The scene is closer than the sensor measures well.
    TooClose {
        /// Median depth, metres.
        median_m: f64,
        /// Minimum, metres.
        min_m: f64,
    },
    /// The scene is too far for millimetre accuracy.
    TooFar {
        /// Median depth, metres.
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

/// Thresholds for accepting a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityGate {
    /// Minimum fraction of pixels with depth.
    pub min_valid_fraction: f64,
    /// Minimum median depth, metres.
    pub min_median_depth_m: f64,
    /// Maximum median depth, metres.
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
            min_valid_fraction: 0.3,
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
            issues.push(QualityIssue::TooLittleValidDepth { fraction: s.valid_fraction, min: self.min_valid_fraction });
        }
        if let Some(m) = s.median_depth_m {
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
        let s = FrameStats::from_parts(&img, &Pose::IDENTITY, None);
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
            assert_eq!(FrameStats::from_parts(&img, &Pose::IDENTITY, None).median_depth_m, want, "{:?}", &d[..1]);
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
}
