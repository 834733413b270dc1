//! Per-frame capture statistics: valid-depth fraction and median distance, over the whole
//! frame and over the wound region, and the camera's jump since the previous accepted
//! frame. They make the capture verdict (warnings, `progress.quality`, the quality record)
//! on the session's thread, so they must be cheap: a frame is judged from an even sample of
//! at most [`SAMPLES`] pixels of the whole frame and as many of the wound region, read
//! straight from the decoded plane without converting the whole image.
//!
//! The depth rule is the reconstruction's quality gate (`coherency_recon::quality`): the
//! wound region is the same [`WoundRegion`] (the 40 mm disc around the aimed point), and a
//! frame is accepted with at least [`REJECT_VALID_FRACTION`] of the whole frame and
//! [`REGION_VALID_FRACTION`] of the region valid and the region's median within
//! [`TOO_CLOSE_M`]…[`TOO_FAR_M`]. The whole-frame fraction below [`LOW_VALID_FRACTION`]
//! is a warning only (`docs/capture-quality.md`).

use coherency_protocol::scan::{warning, DepthFormat, DepthFrame};
use coherency_recon::quality::{centre_depth_with, WoundRegion};
use coherency_recon::Intrinsics;

/// Most pixels sampled (evenly) to judge a frame, and again its wound region.
pub const SAMPLES: usize = 8192;
/// Closer than this median distance of the wound region (metres) raises `too_close` and
/// the frame is not fused (the gate's `min_median_depth_m`).
pub const TOO_CLOSE_M: f32 = 0.12;
/// Farther than this median distance of the wound region (metres) raises `too_far` and the
/// frame is not fused (the gate's `max_median_depth_m`).
pub const TOO_FAR_M: f32 = 0.5;
/// Below this valid fraction of the whole frame, `low_valid_depth` (a warning only: a small
/// body part with nothing behind it in the sensor's range leaves most of the frame empty).
pub const LOW_VALID_FRACTION: f32 = 0.3;
/// Below this valid fraction of the wound region, `low_valid_depth` and the frame is not
/// fused (the gate's `min_region_valid_fraction`).
pub const REGION_VALID_FRACTION: f32 = 0.5;
/// Below this valid fraction of the whole frame (a covered lens) a frame is not fused (the
/// gate's `min_valid_fraction`).
pub const REJECT_VALID_FRACTION: f32 = 0.03;
/// Translation between consecutive frames above which the phone is `moving_too_fast`, mm.
pub const FAST_TRANSLATION_MM: f32 = 20.0;
/// Rotation between consecutive frames above which the phone is `moving_too_fast`, degrees.
pub const FAST_ROTATION_DEG: f32 = 5.0;
/// Translation above which tracking was probably lost (frame not fused), mm.
pub const LOST_TRANSLATION_MM: f32 = 100.0;
/// Rotation above which tracking was probably lost (frame not fused), degrees.
pub const LOST_ROTATION_DEG: f32 = 30.0;
/// Mean frame interval (phone clock) above which `low_frame_rate` is raised, microseconds
/// (below about 7 fps).
pub const LOW_RATE_INTERVAL_US: f32 = 150_000.0;

/// Statistics of one depth image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthStats {
    /// Fraction of pixels with a finite, positive depth, 0..=1.
    pub valid_fraction: f32,
    /// Median of the valid depths, metres (`None` without valid depth).
    pub median_m: Option<f32>,
    /// Fraction of the wound region's pixels with depth, 0..=1.
    pub region_valid_fraction: f32,
    /// Median of the wound region's valid depths, metres: the distance to the wound.
    pub region_median_m: Option<f32>,
}

impl DepthStats {
    const NONE: DepthStats =
        DepthStats { valid_fraction: 0.0, median_m: None, region_valid_fraction: 0.0, region_median_m: None };
}

/// Valid fraction and median distance of a depth image in metres (0 = no depth), from an
/// even sample of at most [`SAMPLES`] pixels. Without a camera model the wound region is
/// the whole image.
pub fn depth_stats(metres: &[f32]) -> DepthStats {
    let (valid_fraction, median_m) = stats_of(metres.iter().step_by(stride(metres.len())).copied());
    DepthStats { valid_fraction, median_m, region_valid_fraction: valid_fraction, region_median_m: median_m }
}

/// [`depth_stats`] of a decoded frame, read from its samples in their wire format (an
/// undecodable plane counts as no depth), with its wound region placed by its intrinsics
/// (skew is ignored, as fusion does).
pub fn frame_depth_stats(frame: &DepthFrame) -> DepthStats {
    let Ok(raw) = frame.depth_raw() else {
        return DepthStats::NONE;
    };
    let format = frame.depth.format();
    let width = format.bytes_per_sample();
    let pixels = raw.len() / width;
    let at = |i: usize| -> f32 {
        let Some(b) = raw.get(i * width..(i + 1) * width) else { return 0.0 };
        match format {
            DepthFormat::F32Metres => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DepthFormat::U16TenthMillimetres => f32::from(u16::from_le_bytes([b[0], b[1]])) * 1e-4,
            DepthFormat::U16Millimetres => f32::from(u16::from_le_bytes([b[0], b[1]])) * 1e-3,
        }
    };
    let (valid_fraction, median_m) = stats_of((0..pixels).step_by(stride(pixels)).map(at));
    let k = &frame.intrinsics;
    let k = Intrinsics {
        fx: f64::from(k[0]),
        fy: f64::from(k[4]),
        cx: f64::from(k[2]),
        cy: f64::from(k[5]),
        width: frame.width,
        height: frame.height,
    };
    let w = frame.width as usize;
    let region = WoundRegion::locate(&k, centre_depth_with(&k, |i, j| at(j as usize * w + i as usize)));
    let in_region = region.spans().flat_map(|(j, a, b)| (a..b).map(move |i| j as usize * w + i as usize));
    let (region_valid_fraction, region_median_m) = stats_of(in_region.step_by(stride(region.pixel_count())).map(at));
    DepthStats { valid_fraction, median_m, region_valid_fraction, region_median_m }
}

/// An odd step giving at most about [`SAMPLES`] samples: odd, so that it does not alias
/// with even row widths and periodic patterns.
fn stride(pixels: usize) -> usize {
    (pixels / SAMPLES).max(1) | 1
}

/// Valid fraction and median of the valid samples.
fn stats_of(samples: impl Iterator<Item = f32>) -> (f32, Option<f32>) {
    let mut total = 0usize;
    let mut sample: Vec<f32> = Vec::with_capacity(SAMPLES + 1);
    for m in samples {
        total += 1;
        if m.is_finite() && m > 0.0 {
            sample.push(m);
        }
    }
    if total == 0 {
        return (0.0, None);
    }
    let valid_fraction = sample.len() as f32 / total as f32;
    let median_m = if sample.is_empty() {
        None
    } else {
        let mid = sample.len() / 2;
        let (_, m, _) = sample.select_nth_unstable_by(mid, f32::total_cmp);
        Some(*m)
    };
    (valid_fraction, median_m)
}

/// The camera's motion between two world-from-camera poses (row-major 4×4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoseJump {
    /// Distance between the camera centres, millimetres.
    pub translation_mm: f32,
    /// Angle of the relative rotation, degrees.
    pub rotation_deg: f32,
}

/// The motion from pose `a` to pose `b`.
pub fn pose_jump(a: &[f32; 16], b: &[f32; 16]) -> PoseJump {
    let t = |p: &[f32; 16]| [p[3], p[7], p[11]];
    let (ta, tb) = (t(a), t(b));
    let translation_m = ((ta[0] - tb[0]).powi(2) + (ta[1] - tb[1]).powi(2) + (ta[2] - tb[2]).powi(2)).sqrt();
    // trace(Raᵀ·Rb) = Σᵢⱼ Ra[i][j]·Rb[i][j]
    let mut trace = 0.0f32;
    for i in 0..3 {
        for j in 0..3 {
            trace += a[i * 4 + j] * b[i * 4 + j];
        }
    }
    let cos = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0);
    PoseJump { translation_mm: translation_m * 1000.0, rotation_deg: cos.acos().to_degrees() }
}

/// The verdict on one frame, with the warnings it raises.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameVerdict {
    /// Depth statistics.
    pub depth: DepthStats,
    /// Motion since the previous accepted frame (`None` for the first).
    pub jump: Option<PoseJump>,
    /// Good enough to fuse: the gate's depth rule (enough valid depth in the whole frame
    /// and in the wound region, the wound region within range) and no tracking loss.
    pub accepted: bool,
    /// Warnings from [`warning`], in a stable order.
    pub warnings: Vec<&'static str>,
    /// 0..=1, higher is better: the wound region's valid fraction, halved when too close
    /// or too far, halved when moving too fast, 0 when tracking was lost
    /// (`progress.quality` is its moving average, `docs/protocol.md` §5.3).
    pub quality: f32,
}

/// Running state across the frames of one scan.
#[derive(Debug, Clone, Default)]
pub struct CaptureStats {
    prev_pose: Option<[f32; 16]>,
    prev_ts_us: Option<u64>,
    mean_interval_us: Option<f32>,
}

impl CaptureStats {
    /// Judges the next frame (in seq order) and updates the running state.
    pub fn observe_frame(&mut self, frame: &DepthFrame) -> FrameVerdict {
        self.judge(frame_depth_stats(frame), &frame.pose, frame.captured_at_us)
    }

    /// Like [`CaptureStats::observe_frame`], for a depth image already in metres.
    pub fn observe(&mut self, metres: &[f32], pose: &[f32; 16], captured_at_us: u64) -> FrameVerdict {
        self.judge(depth_stats(metres), pose, captured_at_us)
    }

    fn judge(&mut self, depth: DepthStats, pose: &[f32; 16], captured_at_us: u64) -> FrameVerdict {
        let jump = self.prev_pose.as_ref().map(|p| pose_jump(p, pose));
        if let Some(prev) = self.prev_ts_us {
            let dt = captured_at_us.saturating_sub(prev) as f32;
            self.mean_interval_us = Some(match self.mean_interval_us {
                Some(m) => 0.8 * m + 0.2 * dt,
                None => dt,
            });
        }
        self.prev_ts_us = Some(captured_at_us);

        let mut warnings = Vec::new();
        let mut quality = depth.region_valid_fraction;
        let mut in_range = true;
        if let Some(m) = depth.region_median_m {
            if m < TOO_CLOSE_M {
                warnings.push(warning::TOO_CLOSE);
                quality *= 0.5;
                in_range = false;
            } else if m > TOO_FAR_M {
                warnings.push(warning::TOO_FAR);
                quality *= 0.5;
                in_range = false;
            }
        }
        let lost = jump.is_some_and(|j| j.translation_mm > LOST_TRANSLATION_MM || j.rotation_deg > LOST_ROTATION_DEG);
        if lost {
            warnings.push(warning::TRACKING_LOST);
            quality = 0.0;
        } else if jump.is_some_and(|j| j.translation_mm > FAST_TRANSLATION_MM || j.rotation_deg > FAST_ROTATION_DEG) {
            warnings.push(warning::MOVING_TOO_FAST);
            quality *= 0.5;
        }
        let enough_depth =
            depth.valid_fraction >= REJECT_VALID_FRACTION && depth.region_valid_fraction >= REGION_VALID_FRACTION;
        if !enough_depth || depth.valid_fraction < LOW_VALID_FRACTION {
            warnings.push(warning::LOW_VALID_DEPTH);
        }
        if self.mean_interval_us.is_some_and(|m| m > LOW_RATE_INTERVAL_US) {
            warnings.push(warning::LOW_FRAME_RATE);
        }
        let accepted = enough_depth && in_range && !lost;
        // After a tracking loss, later frames are compared with the new pose: the phone's
        // tracking has re-localised and the old pose is no reference any more.
        if accepted || lost {
            self.prev_pose = Some(*pose);
        }
        FrameVerdict { depth, jump, accepted, warnings, quality: quality.clamp(0.0, 1.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: [f32; 16] = [1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.];

    #[test]
    fn valid_fraction_and_median_ignore_missing_depth() {
        let s = depth_stats(&[0.0, 0.3, f32::NAN, 0.5, 0.4, -1.0, f32::INFINITY, 0.2]);
        assert_eq!(s.valid_fraction, 0.5);
        assert!(matches!(s.median_m, Some(m) if m == 0.3 || m == 0.4));
        assert_eq!(depth_stats(&[0.0; 10]).median_m, None);
    }

    #[test]
    fn frame_stats_read_the_wire_format_like_the_metres_do() {
        use coherency_protocol::scan::{Compression, DepthPlane};
        let metres: Vec<f32> =
            (0..20_000).map(|i| if i % 4 == 0 { 0.0 } else { 0.2 + (i % 100) as f32 * 0.001 }).collect();
        for format in [DepthFormat::F32Metres, DepthFormat::U16TenthMillimetres, DepthFormat::U16Millimetres] {
            let frame = DepthFrame {
                seq: 1,
                captured_at_us: 0,
                width: 200,
                height: 100,
                depth: DepthPlane::encode(format, Compression::None, &metres),
                confidence: None,
                intrinsics: [100., 0., 100., 0., 100., 50., 0., 0., 1.],
                pose: I,
                colour_jpeg: None,
                colour_intrinsics: None,
                colour_pose: None,
            };
            let s = frame_depth_stats(&frame);
            assert!((s.valid_fraction - 0.75).abs() < 0.01, "{format:?}: {s:?}");
            assert!((s.median_m.expect("median") - 0.25).abs() < 0.003, "{format:?}: {s:?}");
        }
    }

    #[test]
    fn pose_jump_measures_translation_and_rotation() {
        let mut b = I;
        b[3] = 0.003;
        b[7] = 0.004;
        let j = pose_jump(&I, &b);
        assert!((j.translation_mm - 5.0).abs() < 1e-3);
        assert!(j.rotation_deg.abs() < 0.1);

        // 90° about z
        let r = [0., -1., 0., 0., 1., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.];
        assert!((pose_jump(&I, &r).rotation_deg - 90.0).abs() < 0.01);
    }

    #[test]
    fn a_pose_leap_is_tracking_lost_and_not_fused() {
        let mut s = CaptureStats::default();
        let depth = vec![0.3f32; 100];
        assert!(s.observe(&depth, &I, 0).accepted);
        let mut far = I;
        far[11] = 0.5;
        let v = s.observe(&depth, &far, 33_000);
        assert!(!v.accepted);
        assert!(v.warnings.contains(&warning::TRACKING_LOST));
        let v = s.observe(&depth, &far, 66_000);
        assert!(v.accepted && v.warnings.is_empty(), "{v:?}");
    }

    #[test]
    fn distance_and_coverage_warnings() {
        let mut s = CaptureStats::default();
        let v = s.observe(&[0.1f32; 100], &I, 0);
        assert_eq!(v.warnings, vec![warning::TOO_CLOSE]);
        let mut sparse = vec![0.0f32; 100];
        sparse[..30].fill(0.9);
        let v = s.observe(&sparse, &I, 33_000);
        assert_eq!(v.warnings, vec![warning::TOO_FAR, warning::LOW_VALID_DEPTH]);
    }

    /// A 256×192 frame (`u16_0.1mm`, zstd) of a body part: a disc of `radius_px` pixels at
    /// `near` metres around the principal point, `behind` metres elsewhere (0: nothing in
    /// range).
    fn body_part(radius_px: f32, near: f32, behind: f32) -> DepthFrame {
        use coherency_protocol::scan::{Compression, DepthPlane};
        let (w, h) = (256u32, 192u32);
        let metres: Vec<f32> = (0..w * h)
            .map(|p| {
                let (x, y) = ((p % w) as f32 - 127.5, (p / w) as f32 - 95.5);
                if x * x + y * y <= radius_px * radius_px {
                    near
                } else {
                    behind
                }
            })
            .collect();
        DepthFrame {
            seq: 1,
            captured_at_us: 0,
            width: w,
            height: h,
            depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &metres),
            confidence: None,
            intrinsics: [212., 0., 127.5, 0., 212., 95.5, 0., 0., 1.],
            pose: I,
            colour_jpeg: None,
            colour_intrinsics: None,
            colour_pose: None,
        }
    }

    #[test]
    fn a_small_body_part_is_judged_by_its_region_like_the_reconstruction_gate_does() {
        use coherency_recon::{FrameStats, QualityGate};
        // A heel about 70 mm across at 0.25 m (30 pixels of radius), the floor at 0.9 m; the
        // same heel with nothing behind it; a covered lens; aimed past the heel.
        let cases = [
            (body_part(30.0, 0.25, 0.9), true, vec![]),
            (body_part(30.0, 0.25, 0.0), true, vec![warning::LOW_VALID_DEPTH]),
            (body_part(8.0, 0.01, 0.0), false, vec![warning::TOO_CLOSE, warning::LOW_VALID_DEPTH]),
            (body_part(0.0, 0.25, 0.9), false, vec![warning::TOO_FAR]),
        ];
        for (i, (frame, accepted, warnings)) in cases.into_iter().enumerate() {
            let v = CaptureStats::default().observe_frame(&frame);
            assert_eq!((v.accepted, &v.warnings), (accepted, &warnings), "case {i}: {v:?}");
            let recon = crate::reconstruction::to_recon_frame(&frame).expect("a valid frame");
            let gate = QualityGate::default().check(&FrameStats::compute(&recon, None));
            assert_eq!(gate.is_empty(), accepted, "case {i}: the gate says {gate:?}");
        }
        let heel = frame_depth_stats(&body_part(30.0, 0.25, 0.9));
        assert!(heel.median_m.expect("depth") > 0.8, "{heel:?}");
        assert!((heel.region_median_m.expect("depth") - 0.25).abs() < 1e-3, "{heel:?}");
        assert!(heel.region_valid_fraction == 1.0 && heel.valid_fraction == 1.0, "{heel:?}");
    }

    #[test]
    fn capture_times_going_backwards_are_accepted_and_count_as_no_interval() {
        let mut s = CaptureStats::default();
        let depth = vec![0.3f32; 100];
        let mut pose = I;
        for (i, ts) in [400_000u64, 300_000, 200_000, 100_000, 0].into_iter().enumerate() {
            pose[3] = 0.002 * i as f32;
            let v = s.observe(&depth, &pose, ts);
            assert!(v.accepted && v.warnings.is_empty(), "ts {ts}: {v:?}");
        }
        // Slow frames still raise it afterwards.
        let v = (1..=10).map(|k| s.observe(&depth, &I, k * 300_000)).last().expect("verdicts");
        assert_eq!(v.warnings, vec![warning::LOW_FRAME_RATE]);
    }

    #[test]
    fn the_verdict_limits_are_the_reconstruction_gate_limits() {
        let gate = coherency_recon::QualityGate::default();
        assert_eq!(f64::from(TOO_CLOSE_M), f64::from(gate.min_median_depth_m as f32));
        assert_eq!(f64::from(TOO_FAR_M), f64::from(gate.max_median_depth_m as f32));
        assert_eq!(f64::from(REGION_VALID_FRACTION), f64::from(gate.min_region_valid_fraction as f32));
        assert_eq!(f64::from(REJECT_VALID_FRACTION), f64::from(gate.min_valid_fraction as f32));
    }
}
