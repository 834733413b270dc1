//! Per-frame capture statistics: valid-depth fraction, median distance and the camera's
//! jump since the previous accepted frame. A stand-in for the live figures the
//! reconstruction will produce; cheap enough to run on the session's thread: a frame is
//! judged from an even sample of at most [`SAMPLES`] pixels, read straight from the
//! decoded plane without converting the whole image.

use coherency_protocol::scan::{warning, DepthFormat, DepthFrame};

/// Most pixels sampled (evenly) to judge a frame.
pub const SAMPLES: usize = 8192;
/// Closer than this median distance (metres) raises `too_close`.
pub const TOO_CLOSE_M: f32 = 0.15;
/// Farther than this median distance (metres) raises `too_far`.
pub const TOO_FAR_M: f32 = 0.6;
/// Below this valid fraction, `low_valid_depth`.
pub const LOW_VALID_FRACTION: f32 = 0.5;
/// Below this valid fraction a frame is not fused.
pub const REJECT_VALID_FRACTION: f32 = 0.1;
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
}

/// Valid fraction and median distance of a depth image in metres (0 = no depth), from an
/// even sample of at most [`SAMPLES`] pixels.
pub fn depth_stats(metres: &[f32]) -> DepthStats {
    stats_of(metres.iter().step_by(stride(metres.len())).copied())
}

/// [`depth_stats`] of a decoded frame, read from its samples in their wire format (an
/// undecodable plane counts as no depth).
pub fn frame_depth_stats(frame: &DepthFrame) -> DepthStats {
    let Ok(raw) = frame.depth_raw() else {
        return DepthStats { valid_fraction: 0.0, median_m: None };
    };
    let format = frame.depth.format();
    let width = format.bytes_per_sample();
    let pixels = raw.len() / width;
    let at = move |i: usize| -> f32 {
        let b = &raw[i * width..(i + 1) * width];
        match format {
            DepthFormat::F32Metres => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DepthFormat::U16TenthMillimetres => f32::from(u16::from_le_bytes([b[0], b[1]])) * 1e-4,
            DepthFormat::U16Millimetres => f32::from(u16::from_le_bytes([b[0], b[1]])) * 1e-3,
        }
    };
    stats_of((0..pixels).step_by(stride(pixels)).map(at))
}

/// An odd step giving at most about [`SAMPLES`] samples: odd, so that it does not alias
/// with even row widths and periodic patterns.
fn stride(pixels: usize) -> usize {
    (pixels / SAMPLES).max(1) | 1
}

fn stats_of(samples: impl Iterator<Item = f32>) -> DepthStats {
    let mut total = 0usize;
    let mut sample: Vec<f32> = Vec::with_capacity(SAMPLES + 1);
    for m in samples {
        total += 1;
        if m.is_finite() && m > 0.0 {
            sample.push(m);
        }
    }
    if total == 0 {
        return DepthStats { valid_fraction: 0.0, median_m: None };
    }
    let valid_fraction = sample.len() as f32 / total as f32;
    let median_m = if sample.is_empty() {
        None
    } else {
        let mid = sample.len() / 2;
        let (_, m, _) = sample.select_nth_unstable_by(mid, f32::total_cmp);
        Some(*m)
    };
    DepthStats { valid_fraction, median_m }
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
    /// Good enough to fuse: enough valid depth and no tracking loss.
    pub accepted: bool,
    /// Warnings from [`warning`], in a stable order.
    pub warnings: Vec<&'static str>,
    /// 0..=1, higher is better: valid fraction, discounted when too close or far, or moving.
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
        let mut quality = depth.valid_fraction;
        if let Some(m) = depth.median_m {
            if m < TOO_CLOSE_M {
                warnings.push(warning::TOO_CLOSE);
                quality *= 0.5;
            } else if m > TOO_FAR_M {
                warnings.push(warning::TOO_FAR);
                quality *= 0.5;
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
        if depth.valid_fraction < LOW_VALID_FRACTION {
            warnings.push(warning::LOW_VALID_DEPTH);
        }
        if self.mean_interval_us.is_some_and(|m| m > LOW_RATE_INTERVAL_US) {
            warnings.push(warning::LOW_FRAME_RATE);
        }
        let accepted = depth.valid_fraction >= REJECT_VALID_FRACTION && !lost;
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
}
