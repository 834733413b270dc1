//! Accuracy of the whole pipeline (phantom → fusion → segmentation → measurement)
//! against analytic ground truth, on a flat skin patch and on a curved limb, for a
//! spherical cap, an ellipsoidal cap and an irregular lobed wound, each scanned along
//! five different seeded trajectories with the iPhone noise model.
//!
//! Bars (from the product brief), checked for the clinician-polygon outline:
//! area within 2 %, length and width within 1 mm, max depth within 0.5 mm, volume
//! within 5 %, coefficient of variation across trajectories ≤ 1 % (area) and ≤ 3 %
//! (volume), and every `±` interval containing the true value.
//!
//! The automatic outline (blurred-rim fit, see `docs/measurement.md`) meets the depth,
//! volume and volume-CV bars; its area is unbiased on average but one noisy
//! trajectory in 30 still reads +3.3 % and one −2.3 %, length/width up to 1.1 mm, and
//! area CV up to 1.8 % on the limb cap. Its tests assert that level (area within 3.5 %,
//! length/width within 1.25 mm, area CV ≤ 2 %) so a regression is caught, and its
//! intervals must contain the truth.
//!
//! These scans fuse every frame. One more test scans along the same arcs over 600 frames
//! (60 fps for 10 s) through the server's quality gate, whose frame selection then skips
//! most frames, and holds the result to the same bars. (The 60-frame scans do not go
//! through the gate: on two limb trajectories it turns away all but 4–5 frames, see
//! `docs/measurement.md`, *Frame selection and quality gating*.)

use coherency_recon::measure::{measure_auto, measure_auto_traced, measure_polygon, MeasureConfig, WoundMeasurements};
use coherency_recon::phantom::{presets, CavityShape, GroundTruth, Phantom, PhantomSpec, ScanConfig, SkinShape};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};
use coherency_recon::QualityGate;

const TRAJECTORIES: u64 = 5;

struct Run {
    auto: WoundMeasurements,
    polygon: WoundMeasurements,
}

/// Scans along each trajectory with `frames` frames and measures; with a `gate`, only the
/// frames it accepts are fused (as live fusion and the finish step do).
fn scan_and_measure(spec: PhantomSpec, frames: usize, gate: Option<QualityGate>) -> (GroundTruth, Vec<Run>) {
    let phantom = Phantom::new(spec);
    let truth = *phantom.truth();
    let runs = (0..TRAJECTORIES)
        .map(|seed| {
            let scan = phantom.scan(&ScanConfig { frames, ..ScanConfig::iphone(seed) });
            let cfg = TsdfConfig { roi: Some(Aabb::around(truth.target_world, 0.06)), ..TsdfConfig::default() };
            let mut vol = TsdfVolume::new(cfg).expect("valid config");
            let kept = match gate {
                Some(g) => g.accepted_indices(&scan.frames),
                None => (0..scan.frames.len()).collect(),
            };
            if gate.is_some() {
                assert!(kept.len() < frames * 2 / 3, "seed {seed}: selection keeps {} of {frames}", kept.len());
            }
            for &i in &kept {
                vol.integrate(&scan.frames[i]).expect("frame integrates");
            }
            assert!(vol.memory_bytes() <= 32 << 20, "{} bytes", vol.memory_bytes());
            let auto = measure_auto(&vol, truth.target_world, &MeasureConfig::default())
                .expect("automatic segmentation finds the wound");
            // The clinician traces the true outline on the middle keyframe (the
            // reported, jittered pose is what the server knows).
            let k = scan.frames.len() / 2;
            let key = &scan.frames[k];
            let outline = phantom.outline_in_image(&key.intrinsics, &scan.true_poses[k], 64);
            let polygon = measure_polygon(&vol, &outline, &key.intrinsics, &key.pose, &MeasureConfig::default())
                .expect("the traced outline lies on the surface");
            Run { auto, polygon }
        })
        .collect();
    (truth, runs)
}

fn cv(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}

fn rel(value: f64, truth: f64) -> f64 {
    (value / truth - 1.0).abs()
}

/// Every `±` must contain the truth.
fn assert_intervals_contain_truth(m: &WoundMeasurements, t: &GroundTruth, label: &str) {
    let checks = [
        ("outline area", m.outline_area_mm2, t.outline_area_mm2),
        ("bed area", m.bed_area_mm2, t.bed_area_mm2),
        ("perimeter", m.perimeter_mm, t.perimeter_mm),
        ("length", m.length_mm, t.length_mm),
        ("width", m.width_mm, t.width_mm),
        ("max depth", m.max_depth_mm, t.max_depth_mm),
        ("mean depth", m.mean_depth_mm, t.mean_depth_mm),
        ("volume", m.volume_mm3, t.volume_mm3),
    ];
    for (name, meas, truth) in checks {
        assert!(meas.contains(truth), "{label}: {name} {meas} does not contain the true {truth:.3}");
    }
}

fn check(spec: PhantomSpec, label: &str) {
    check_with(spec, label, 60, None);
}

fn check_with(spec: PhantomSpec, label: &str, frames: usize, gate: Option<QualityGate>) {
    let (t, runs) = scan_and_measure(spec, frames, gate);
    for (seed, r) in runs.iter().enumerate() {
        let p = &r.polygon;
        let tag = format!("{label} seed {seed} polygon");
        assert!(
            rel(p.outline_area_mm2.value, t.outline_area_mm2) <= 0.02,
            "{tag}: area {} vs {}",
            p.outline_area_mm2,
            t.outline_area_mm2
        );
        assert!((p.length_mm.value - t.length_mm).abs() <= 1.0, "{tag}: length {} vs {}", p.length_mm, t.length_mm);
        assert!((p.width_mm.value - t.width_mm).abs() <= 1.0, "{tag}: width {} vs {}", p.width_mm, t.width_mm);
        assert!(
            (p.max_depth_mm.value - t.max_depth_mm).abs() <= 0.5,
            "{tag}: max depth {} vs {}",
            p.max_depth_mm,
            t.max_depth_mm
        );
        assert!(rel(p.volume_mm3.value, t.volume_mm3) <= 0.05, "{tag}: volume {} vs {}", p.volume_mm3, t.volume_mm3);
        assert_intervals_contain_truth(p, &t, &tag);

        let a = &r.auto;
        let tag = format!("{label} seed {seed} auto");
        assert!(
            rel(a.outline_area_mm2.value, t.outline_area_mm2) <= 0.035,
            "{tag}: area {} vs {}",
            a.outline_area_mm2,
            t.outline_area_mm2
        );
        assert!((a.length_mm.value - t.length_mm).abs() <= 1.25, "{tag}: length {} vs {}", a.length_mm, t.length_mm);
        assert!((a.width_mm.value - t.width_mm).abs() <= 1.25, "{tag}: width {} vs {}", a.width_mm, t.width_mm);
        assert!(
            (a.max_depth_mm.value - t.max_depth_mm).abs() <= 0.5,
            "{tag}: max depth {} vs {}",
            a.max_depth_mm,
            t.max_depth_mm
        );
        assert!(rel(a.volume_mm3.value, t.volume_mm3) <= 0.05, "{tag}: volume {} vs {}", a.volume_mm3, t.volume_mm3);
        assert_intervals_contain_truth(a, &t, &tag);
    }
    let series = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let p_area = cv(&series(&|r| r.polygon.outline_area_mm2.value));
    let p_vol = cv(&series(&|r| r.polygon.volume_mm3.value));
    assert!(p_area <= 0.01, "{label}: polygon area CV {p_area:.4}");
    assert!(p_vol <= 0.03, "{label}: polygon volume CV {p_vol:.4}");
    let a_area = cv(&series(&|r| r.auto.outline_area_mm2.value));
    let a_vol = cv(&series(&|r| r.auto.volume_mm3.value));
    assert!(a_area <= 0.02, "{label}: auto area CV {a_area:.4}");
    assert!(a_vol <= 0.03, "{label}: auto volume CV {a_vol:.4}");
}

#[test]
fn spherical_cap_on_flat_skin_meets_the_accuracy_bars() {
    check(presets::spherical_cap(false), "cap/plane");
}

#[test]
fn ellipsoidal_cap_on_flat_skin_meets_the_accuracy_bars() {
    check(presets::ellipsoid(false), "ellipsoid/plane");
}

#[test]
fn irregular_wound_on_flat_skin_meets_the_accuracy_bars() {
    check(presets::irregular(false), "irregular/plane");
}

#[test]
fn spherical_cap_on_a_limb_meets_the_accuracy_bars() {
    check(presets::spherical_cap(true), "cap/limb");
}

#[test]
fn ellipsoidal_cap_on_a_limb_meets_the_accuracy_bars() {
    check(presets::ellipsoid(true), "ellipsoid/limb");
}

#[test]
fn irregular_wound_on_a_limb_meets_the_accuracy_bars() {
    check(presets::irregular(true), "irregular/limb");
}

#[test]
fn a_60_fps_orbit_through_the_gate_with_frame_selection_meets_the_accuracy_bars() {
    // The flat cap's arcs over 600 frames, about 0.5 mm and 0.2° a frame: selection keeps
    // about two frames in five, and the result must still meet every bar.
    check_with(presets::spherical_cap(false), "cap/plane 600 frames", 600, Some(QualityGate::default()));
}

// Wound classes the presets lack, built from the preset generator (until the phantom family
// lands): the automatic path must find the wound on each, over three trajectories. The
// area and length bars depend on the rim fit, so these check that the segmentation found
// *the wound* (area within 25 %, max depth within 0.5 mm, volume within 12 %); the family
// suite holds them to the product bars.

fn hard(skin: SkinShape, cavity: CavityShape) -> PhantomSpec {
    PhantomSpec { skin, cavity, orientation: 0.4, world_from_phantom: presets::default_placement() }
}

fn finds_the_wound(spec: PhantomSpec, label: &str) {
    let phantom = Phantom::new(spec);
    let t = *phantom.truth();
    for seed in 0..3 {
        let scan = phantom.scan(&ScanConfig::iphone(seed));
        let cfg = TsdfConfig { roi: Some(Aabb::around(t.target_world, 0.08)), ..TsdfConfig::default() };
        let mut vol = TsdfVolume::new(cfg).expect("valid config");
        for f in &scan.frames {
            vol.integrate(f).expect("frame integrates");
        }
        let (r, trace) = measure_auto_traced(&vol, t.target_world, &[], &MeasureConfig::default());
        let a = r.unwrap_or_else(|e| panic!("{label} seed {seed}: {} ({e}); {trace:?}", e.code()));
        let tag = format!("{label} seed {seed} auto");
        assert!(
            rel(a.outline_area_mm2.value, t.outline_area_mm2) <= 0.25,
            "{tag}: area {} vs {}",
            a.outline_area_mm2,
            t.outline_area_mm2
        );
        assert!(
            (a.max_depth_mm.value - t.max_depth_mm).abs() <= 0.5,
            "{tag}: depth {} vs {}",
            a.max_depth_mm,
            t.max_depth_mm
        );
        assert!(rel(a.volume_mm3.value, t.volume_mm3) <= 0.12, "{tag}: volume {} vs {}", a.volume_mm3, t.volume_mm3);
    }
}

#[test]
fn the_automatic_path_finds_a_steep_punch_on_a_forearm() {
    let cavity = CavityShape::EllipsoidalCap { semi_major: 0.007, semi_minor: 0.007, depth: 0.003, wall: 0.02 };
    finds_the_wound(hard(SkinShape::Cylinder { radius: 0.038 }, cavity), "punch/R38");
}

#[test]
fn the_automatic_path_finds_a_wide_steep_punch_on_a_tight_limb() {
    let cavity = CavityShape::EllipsoidalCap { semi_major: 0.013, semi_minor: 0.013, depth: 0.004, wall: 0.02 };
    finds_the_wound(hard(SkinShape::Cylinder { radius: 0.035 }, cavity), "wide punch/R35");
}

#[test]
fn the_automatic_path_finds_a_large_shallow_lobed_wound() {
    let cavity = CavityShape::Irregular {
        mean_radius: 0.025,
        harmonics: vec![(3, 0.15, 0.4), (2, 0.1, 1.0)],
        depth: 0.002,
        wall: 0.6,
        tilt: 0.0,
        tilt_angle: 0.0,
    };
    finds_the_wound(hard(SkinShape::Cylinder { radius: 0.11 }, cavity), "lobed 2 mm/R110");
}

#[test]
fn the_automatic_path_finds_a_wide_flat_wound() {
    let cavity = CavityShape::EllipsoidalCap { semi_major: 0.03, semi_minor: 0.03, depth: 0.003, wall: 0.3 };
    finds_the_wound(hard(SkinShape::Plane, cavity), "wide flat");
}

#[test]
#[ignore = "#23 open: an 8 mm, 1 mm deep dish reads up to +26 % area (seed 1: 63.2 ± 9.1 mm² against 50.3; skin texture moves the rim on the shallow wall); the polygon path holds (docs/measurement.md, Known limits)"]
fn the_automatic_path_finds_a_small_shallow_wound() {
    finds_the_wound(hard(SkinShape::Plane, CavityShape::SphericalCap { radius: 0.004, depth: 0.001 }), "small shallow");
}

#[test]
fn a_scan_without_a_wound_fails_with_no_depression() {
    let phantom = Phantom::new(hard(SkinShape::Plane, CavityShape::SphericalCap { radius: 0.01, depth: 1e-5 }));
    let t = *phantom.truth();
    let scan = phantom.scan(&ScanConfig::iphone(2));
    let cfg = TsdfConfig { roi: Some(Aabb::around(t.target_world, 0.08)), ..TsdfConfig::default() };
    let mut vol = TsdfVolume::new(cfg).expect("valid config");
    for f in &scan.frames {
        vol.integrate(f).expect("frame integrates");
    }
    let err = measure_auto(&vol, t.target_world, &MeasureConfig::default()).expect_err("there is no wound");
    assert_eq!(err.code(), "no_depression", "{err}");
}
