//! Per-frame quality: statistics, a gate that rejects unusable frames with reasons,
//! and a selector that skips frames adding nothing (the phone barely moved).
//!
//! The capture session computes [`FrameStats`] for every frame (cheap: one pass over
//! the depth map), runs the [`QualityGate`] and reports its issues back to the phone
//! as live guidance ("move closer", "hold steady"), then asks the [`FrameSelector`]
//! whether the frame is worth fusing.

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
}

impl QualityIssue {
    /// A stable machine-readable code for the issue.
    pub fn code(&self) -> &'static str {
        match self {
            QualityIssue::TooLittleValidDepth { .. } => "too_little_depth",
            QualityIssue::TooClose { .. } => "too_close",
            QualityIssue::TooFar { .. } => "too_far",
            QualityIssue::PoseJump { .. } => "pose_jump",
        }
    }
}

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
}

impl Default for QualityGate {
    fn default() -> Self {
        QualityGate {
            min_valid_fraction: 0.3,
            min_median_depth_m: 0.12,
            max_median_depth_m: 0.5,
            max_translation_jump_mm: 40.0,
            max_rotation_jump_deg: 15.0,
        }
    }
}

impl QualityGate {
    /// All issues of a frame; empty means the frame passes.
    pub fn check(&self, s: &FrameStats) -> Vec<QualityIssue> {
        let mut issues = Vec::new();
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

    /// Whether a frame passes.
    pub fn passes(&self, s: &FrameStats) -> bool {
        self.check(s).is_empty()
    }
}

/// Decision of the [`FrameSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Fuse this frame.
    Keep,
    /// The camera barely moved since the last kept frame.
    SkipRedundant,
}

/// Keeps frames that add viewpoints: skips a frame when the camera moved less than
/// both thresholds since the last kept frame, but never skips more than
/// `max_skipped` in a row (a steady hand still averages noise down).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSelector {
    /// Minimum translation since the last kept frame, millimetres.
    pub min_translation_mm: f64,
    /// Minimum rotation since the last kept frame, degrees.
    pub min_rotation_deg: f64,
    /// Frames skipped in a row before one is kept anyway.
    pub max_skipped: u32,
    last_kept: Option<Pose>,
    skipped: u32,
}

impl Default for FrameSelector {
    fn default() -> Self {
        FrameSelector::new(2.0, 1.0, 5)
    }
}

impl FrameSelector {
    /// A selector with the given thresholds.
    pub fn new(min_translation_mm: f64, min_rotation_deg: f64, max_skipped: u32) -> Self {
        FrameSelector { min_translation_mm, min_rotation_deg, max_skipped, last_kept: None, skipped: 0 }
    }

    /// Decides for a frame that passed the quality gate.
    pub fn consider(&mut self, pose: &Pose) -> Selection {
        if let Some(last) = &self.last_kept {
            let (t, r) = last.difference(pose);
            if t * 1000.0 < self.min_translation_mm && r < self.min_rotation_deg && self.skipped < self.max_skipped {
                self.skipped += 1;
                return Selection::SkipRedundant;
            }
        }
        self.last_kept = Some(*pose);
        self.skipped = 0;
        Selection::Keep
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
    fn selector_skips_a_still_camera_but_not_forever() {
        let mut sel = FrameSelector::new(2.0, 1.0, 3);
        let p = Pose::IDENTITY;
        assert_eq!(sel.consider(&p), Selection::Keep);
        for _ in 0..3 {
            assert_eq!(sel.consider(&p), Selection::SkipRedundant);
        }
        assert_eq!(sel.consider(&p), Selection::Keep);
        let mut q = p;
        q.translation = [0.005, 0.0, 0.0];
        assert_eq!(sel.consider(&q), Selection::Keep);
    }
}
