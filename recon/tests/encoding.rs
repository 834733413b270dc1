//! The automatic measurement must not depend on how depth was encoded on the wire: the
//! same frames sent as `f32_m` and as `u16_0.1mm` (re-quantised exactly as the server
//! decodes it, `f32::from(round(m / 1e-4)) * 1e-4`) must give areas within 0.3 %.
//!
//! The phantom's own 0.25 mm pre-quantisation puts many depths on exact ties of the
//! 0.1 mm grid, which could hide or fake the effect, so the frames are rendered without it.

use coherency_recon::measure::{measure_auto, MeasureConfig, WoundMeasurements};
use coherency_recon::phantom::{presets, NoiseModel, Phantom, PhantomSpec, ScanConfig};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};
use coherency_recon::Frame;

fn requantise(frames: &mut [Frame]) {
    for f in frames {
        for d in f.depth.depth.iter_mut() {
            if d.is_finite() && *d > 0.0 {
                let units = (f64::from(*d) / 1e-4).round().clamp(0.0, 65535.0) as u16;
                *d = f32::from(units) * 1e-4;
            }
        }
    }
}

fn measure(spec: PhantomSpec, seed: u64, u16: bool) -> (WoundMeasurements, f64) {
    let phantom = Phantom::new(spec);
    let truth = *phantom.truth();
    let noise = NoiseModel { quantisation_m: 0.0, ..NoiseModel::iphone() };
    let mut scan = phantom.scan(&ScanConfig { noise, ..ScanConfig::iphone(seed) });
    if u16 {
        requantise(&mut scan.frames);
    }
    let cfg = TsdfConfig { roi: Some(Aabb::around(truth.target_world, 0.06)), ..TsdfConfig::default() };
    let mut vol = TsdfVolume::new(cfg).expect("valid config");
    for f in &scan.frames {
        vol.integrate(f).expect("frame integrates");
    }
    let m = measure_auto(&vol, truth.target_world, &MeasureConfig::default()).expect("the wound is found");
    (m, truth.outline_area_mm2)
}

#[test]
fn the_same_frames_as_f32_and_as_u16_tenth_millimetres_give_the_same_area() {
    for (label, spec) in [("cap/plane", presets::spherical_cap(false)), ("irregular/limb", presets::irregular(true))] {
        let (a, _) = measure(spec.clone(), 1, false);
        let (b, _) = measure(spec, 1, true);
        let (fa, fb) = (a.outline_area_mm2.value, b.outline_area_mm2.value);
        let rel = (fb / fa - 1.0).abs();
        eprintln!("{label}: f32 {fa:.2} mm², u16 {fb:.2} mm², Δ {:.3} %", rel * 100.0);
        assert!(rel <= 0.003, "{label}: area f32 {fa:.2} vs u16 {fb:.2} mm² ({:.2} %)", rel * 100.0);
    }
}
