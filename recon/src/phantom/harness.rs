//! Runs a family case through the server's own policy and reports what a user would see.
//!
//! A scan is rendered along the case's seeded trajectory, its depth encoded as the phone
//! would send it ([`Encoding`]), then fused exactly as the finish step does:
//! [`ScanFusion::fuse_all`] (quality gate, region of interest around the middle accepted
//! frame, target from its centre ray) and [`FusedScan::mesh_and_measure`] for the
//! automatic measurement. No oracle: the wound's true position is never passed in. The
//! clinician path traces the true outline on the middle frame of the scan (projected with
//! its true pose, measured with its reported pose) and goes through
//! [`FusedScan::measure_polygon`], as `recon/tests/accuracy.rs` does.

use std::time::Instant;

use super::family::Case;
use super::wound::WoundPhantom;
use super::{GroundTruth, ScanConfig};
use crate::fusion::{FusedScan, ScanFusion};
use crate::geometry::Frame;
use crate::measure::WoundMeasurements;
use crate::{FrameStats, ReconError};

/// How the phone encodes depth on the wire (`docs/protocol.md`, depth planes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `f32_m`: float32 metres, as rendered.
    F32,
    /// `u16_0.1mm`: re-quantised as the protocol encodes and decodes it
    /// (`round(m · 10⁴)` as u16, 0 when out of range; decoded as `u16 / 10⁴` in f32).
    U16Tenth,
}

/// Wall-clock times of one run, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Rendering every frame (trajectory, ray casting, sensor model).
    pub render_ms: f64,
    /// Gate and fusion (`ScanFusion::fuse_all`).
    pub fuse_ms: f64,
    /// Meshing and the automatic measurement.
    pub measure_ms: f64,
    /// The polygon measurement.
    pub polygon_ms: f64,
}

/// What one scan of a case gave.
#[derive(Debug)]
pub struct Run {
    /// Ground truth of the phantom.
    pub truth: GroundTruth,
    /// Frames rendered.
    pub frames: usize,
    /// Each rendered frame's whole-frame statistics (valid fraction, median depth) as the
    /// quality gate computes them, without the previous pose.
    pub frame_stats: Vec<FrameStats>,
    /// Frames the gate accepted and fusion integrated (0 when fusion failed).
    pub fused: u64,
    /// Frames turned away, by reason code, in order of first appearance.
    pub rejected: Vec<(&'static str, usize)>,
    /// Distance from the server's target to the true wound centre, mm.
    pub target_error_mm: Option<f64>,
    /// Fusion itself failed (e.g. no frame passed the gate): both results carry it too.
    pub fusion_error: Option<String>,
    /// The automatic measurement at the server's target.
    pub auto: Result<WoundMeasurements, ReconError>,
    /// The clinician-outline measurement on the middle frame.
    pub polygon: Result<WoundMeasurements, ReconError>,
    /// Where the time went.
    pub timings: Timings,
}

/// Scans `case` along trajectory `seed` with 60 iPhone-like 256×192 frames and runs the
/// server's policy on it.
pub fn run(case: &Case, seed: u64, encoding: Encoding) -> Run {
    run_with(case, &ScanConfig::iphone(seed), encoding)
}

/// [`run`] with any scan configuration (frame count, intrinsics, noise).
pub fn run_with(case: &Case, config: &ScanConfig, encoding: Encoding) -> Run {
    let phantom = WoundPhantom::new(case.spec.clone());
    run_phantom(&phantom, case, config, encoding)
}

/// [`run_with`] on an already built phantom (its truth is computed once per case).
pub fn run_phantom(phantom: &WoundPhantom, case: &Case, config: &ScanConfig, encoding: Encoding) -> Run {
    let t = Instant::now();
    let mut scan = phantom.scan(config, &case.trajectory);
    if encoding == Encoding::U16Tenth {
        for f in &mut scan.frames {
            requantise_u16_tenth(&mut f.depth.depth);
        }
    }
    let mut timings = Timings { render_ms: ms(t), ..Timings::default() };
    let truth = *phantom.truth();
    let frames: Vec<(u64, Frame)> = scan.frames.iter().cloned().enumerate().map(|(i, f)| (i as u64 + 1, f)).collect();
    let frame_stats: Vec<FrameStats> = scan.frames.iter().map(|f| FrameStats::compute(f, None)).collect();

    let t = Instant::now();
    let fused = match ScanFusion::fuse_all(&frames, &mut || {}) {
        Ok(f) => f,
        Err(e) => {
            let again = match &e {
                ReconError::NotEnoughData(s) => ReconError::NotEnoughData(s.clone()),
                other => ReconError::NotEnoughData(other.to_string()),
            };
            return Run {
                truth,
                frames: frames.len(),
                frame_stats,
                fused: 0,
                rejected: Vec::new(),
                target_error_mm: None,
                fusion_error: Some(e.to_string()),
                auto: Err(e),
                polygon: Err(again),
                timings,
            };
        }
    };
    timings.fuse_ms = ms(t);

    let t = Instant::now();
    let auto = fused.mesh_and_measure(&mut || {}).measured;
    timings.measure_ms = ms(t);

    let t = Instant::now();
    let polygon = measure_traced_outline(phantom, &fused, &scan.frames, &scan.true_poses);
    timings.polygon_ms = ms(t);

    Run {
        truth,
        frames: frames.len(),
        frame_stats,
        fused: fused.fused,
        rejected: tally(&fused.rejected),
        target_error_mm: Some((fused.target - truth.target_world).norm() * 1e3),
        fusion_error: None,
        auto,
        polygon,
        timings,
    }
}

/// The clinician traces the true outline on the middle frame (the reported, jittered pose
/// is what the server knows).
fn measure_traced_outline(
    phantom: &WoundPhantom,
    fused: &FusedScan,
    frames: &[Frame],
    true_poses: &[crate::geometry::Pose],
) -> Result<WoundMeasurements, ReconError> {
    let k = frames.len() / 2;
    let key = frames.get(k).ok_or_else(|| ReconError::NotEnoughData("no frames".into()))?;
    let outline = phantom.outline_in_image(&key.intrinsics, &true_poses[k], 64);
    fused.measure_polygon(&outline, &key.intrinsics, &key.pose)
}

/// Re-quantises depth exactly as a `u16_0.1mm` plane round-trips through the protocol.
pub fn requantise_u16_tenth(depth: &mut [f32]) {
    const PER_METRE: f32 = 10_000.0;
    for d in depth {
        let q = if d.is_finite() && *d > 0.0 {
            let q = (*d * PER_METRE).round();
            if q <= f32::from(u16::MAX) {
                q as u16
            } else {
                0
            }
        } else {
            0
        };
        *d = f32::from(q) / PER_METRE;
    }
}

fn tally(rejected: &[(u64, &'static str)]) -> Vec<(&'static str, usize)> {
    let mut out: Vec<(&'static str, usize)> = Vec::new();
    for (_, code) in rejected {
        match out.iter_mut().find(|(c, _)| c == code) {
            Some(e) => e.1 += 1,
            None => out.push((code, 1)),
        }
    }
    out
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The accuracy bars of issue #23 for one measurement and across a class's scans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bars {
    /// Largest relative outline-area error.
    pub area_rel: f64,
    /// Largest length and width error, mm.
    pub length_mm: f64,
    /// Largest max-depth error, mm.
    pub depth_mm: f64,
    /// Largest relative volume error.
    pub volume_rel: f64,
    /// Largest coefficient of variation of the area across scans.
    pub area_cv: f64,
    /// Largest coefficient of variation of the volume across scans.
    pub volume_cv: f64,
}

impl Bars {
    /// Area 2 %, length/width 1 mm, max depth 0.5 mm, volume 5 %; CV 1 % area, 3 % volume.
    pub const ISSUE: Bars =
        Bars { area_rel: 0.02, length_mm: 1.0, depth_mm: 0.5, volume_rel: 0.05, area_cv: 0.01, volume_cv: 0.03 };

    /// Every bar one measurement misses, and every `±` that does not contain the truth,
    /// as short phrases (empty when it meets them all).
    pub fn misses(&self, m: &WoundMeasurements, t: &GroundTruth) -> Vec<String> {
        let mut out = Vec::new();
        let rel = |v: f64, tv: f64| v / tv - 1.0;
        let area = rel(m.outline_area_mm2.value, t.outline_area_mm2);
        if area.abs() > self.area_rel {
            out.push(format!("area {:+.1}%", area * 100.0));
        }
        for (name, v, tv) in [("length", m.length_mm.value, t.length_mm), ("width", m.width_mm.value, t.width_mm)] {
            if (v - tv).abs() > self.length_mm {
                out.push(format!("{name} {:+.2}mm", v - tv));
            }
        }
        if (m.max_depth_mm.value - t.max_depth_mm).abs() > self.depth_mm {
            out.push(format!("max depth {:+.2}mm", m.max_depth_mm.value - t.max_depth_mm));
        }
        let vol = rel(m.volume_mm3.value, t.volume_mm3);
        if vol.abs() > self.volume_rel {
            out.push(format!("volume {:+.1}%", vol * 100.0));
        }
        for (name, v, tv) in intervals(m, t) {
            if !v.contains(tv) {
                out.push(format!("{name} ± misses"));
            }
        }
        out
    }
}

/// Each reported quantity beside its true value.
pub fn intervals<'a>(
    m: &'a WoundMeasurements,
    t: &GroundTruth,
) -> [(&'static str, &'a crate::measure::Measurement, f64); 8] {
    [
        ("area", &m.outline_area_mm2, t.outline_area_mm2),
        ("bed area", &m.bed_area_mm2, t.bed_area_mm2),
        ("perimeter", &m.perimeter_mm, t.perimeter_mm),
        ("length", &m.length_mm, t.length_mm),
        ("width", &m.width_mm, t.width_mm),
        ("max depth", &m.max_depth_mm, t.max_depth_mm),
        ("mean depth", &m.mean_depth_mm, t.mean_depth_mm),
        ("volume", &m.volume_mm3, t.volume_mm3),
    ]
}

/// Sample coefficient of variation (standard deviation over mean); 0 for fewer than two.
pub fn cv(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}
