//! Accuracy of the whole pipeline on the wound-phantom family (issue #23): each named
//! class (`phantom::family::named`, `docs/phantoms.md`) is scanned along five seeded
//! trajectories (60 frames, 256×192, iPhone noise) and run through the server's own policy
//! (`phantom::harness::run`: quality gate, region of interest and centre-ray target of
//! `ScanFusion::fuse_all`, no oracle), and held to the issue's bars:
//!
//! - the automatic measurement succeeds on every scan;
//! - area within 2 %, length and width within 1 mm, max depth within 0.5 mm, volume within
//!   5 %, on the automatic and on the clinician-polygon path;
//! - coefficient of variation across the five scans ≤ 1 % (area) and ≤ 3 % (volume);
//! - every `±` contains the truth.
//!
//! Classes the pipeline does not hold yet are `#[ignore]`d with what fails (the baseline
//! in `docs/phantoms.md`); they run with `cargo nextest run -p coherency-recon --test
//! accuracy_family --run-ignored all`. Every failure of a class is reported at once.

use coherency_recon::phantom::family;
use coherency_recon::phantom::harness::{self, Bars, Encoding, Run};
use coherency_recon::phantom::wound::WoundPhantom;
use coherency_recon::phantom::ScanConfig;
use coherency_recon::{ReconError, WoundMeasurements};

const TRAJECTORIES: u64 = 5;

fn runs(name: &str, encoding: Encoding) -> Vec<Run> {
    let case = family::by_name(name).expect("a named class");
    let phantom = WoundPhantom::new(case.spec.clone());
    (0..TRAJECTORIES).map(|seed| harness::run_phantom(&phantom, &case, &ScanConfig::iphone(seed), encoding)).collect()
}

fn auto(r: &Run) -> &Result<WoundMeasurements, ReconError> {
    &r.auto
}

fn polygon(r: &Run) -> &Result<WoundMeasurements, ReconError> {
    &r.polygon
}

/// Every bar the class misses, one line each.
fn misses(name: &str, runs: &[Run]) -> Vec<String> {
    let bars = Bars::ISSUE;
    let mut out = Vec::new();
    type Pick = fn(&Run) -> &Result<WoundMeasurements, ReconError>;
    for (path, pick) in [("auto", auto as Pick), ("polygon", polygon as Pick)] {
        let mut measured = Vec::new();
        for (seed, r) in runs.iter().enumerate() {
            match pick(r) {
                Err(e) => out.push(format!("{name} seed {seed} {path}: no measurement: {e}")),
                Ok(m) => {
                    out.extend(bars.misses(m, &r.truth).into_iter().map(|x| format!("{name} seed {seed} {path}: {x}")));
                    measured.push(m);
                }
            }
        }
        if measured.len() == runs.len() {
            let area: Vec<f64> = measured.iter().map(|m| m.outline_area_mm2.value).collect();
            let vol: Vec<f64> = measured.iter().map(|m| m.volume_mm3.value).collect();
            let (ca, cv) = (harness::cv(&area), harness::cv(&vol));
            if ca > bars.area_cv {
                out.push(format!("{name} {path}: area CV {:.2}%", ca * 100.0));
            }
            if cv > bars.volume_cv {
                out.push(format!("{name} {path}: volume CV {:.2}%", cv * 100.0));
            }
        }
    }
    out
}

fn check(name: &str) {
    let runs = runs(name, Encoding::F32);
    let misses = misses(name, &runs);
    assert!(misses.is_empty(), "{} misses:\n{}", misses.len(), misses.join("\n"));
}

macro_rules! class_test {
    ($(#[$attr:meta])* $test:ident, $name:literal) => {
        $(#[$attr])*
        #[test]
        fn $test() {
            check($name);
        }
    };
}

/// The clinician-polygon path alone, on classes where it already holds while the automatic
/// path does not (so a regression of the polygon path is caught before #23 P2 lands).
fn check_polygon(name: &str) {
    let runs = runs(name, Encoding::F32);
    let misses: Vec<String> = misses(name, &runs).into_iter().filter(|m| m.contains("polygon")).collect();
    assert!(misses.is_empty(), "{} misses:\n{}", misses.len(), misses.join("\n"));
}

class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 3/5 meet every bar (polygon 3/5); worst auto area +2.7 %, volume -4.4 %, L/W +0.6 mm, area CV 0.9 %; polygon: the bed area ± misses on 2"]
    punch_forearm_meets_the_bars,
    "punch-forearm"
);
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 0/5 meet every bar (polygon 2/5); worst auto area +13.8 %, volume -6.3 %, L/W +0.8 mm, area CV 4.3 %; polygon volume to -6.0 % (the fused wall sits 0.1 mm inside)"]
    punch_small_meets_the_bars,
    "punch-small"
);
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 4/5 meet every bar (polygon 5/5); worst auto area +1.1 %, width +1.04 mm on one scan, perimeter ± misses on one"]
    sacrum_lobed_meets_the_bars,
    "sacrum-lobed"
);
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 1/5 meet every bar (polygon 5/5); worst auto area -4.4 % (a 60° wall on a sloped bed), volume +2.6 %, area CV 1.1 %"]
    heel_meets_the_bars,
    "heel"
);
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 0/5 meet every bar (polygon 5/5); worst auto area -4.2 %, L/W +2.1 mm (a 1 mm deep 20° wall), area CV 2.8 %, intervals missing 5"]
    abrasion_meets_the_bars,
    "abrasion"
);
class_test!(crater_meets_the_bars, "crater");
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 3/5 meet every bar (polygon 3/5); worst auto area -2.9 %, max depth -0.75 mm (the blur fills the V-shaped bottom; inside its ± on 4 of 5)"]
    saddle_oblique_meets_the_bars,
    "saddle-oblique"
);
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 3/5 meet every bar (polygon 4/5); worst auto area -2.7 %, volume -1.7 %, L/W +0.6 mm, area CV 2.1 %"]
    lobed_steep_meets_the_bars,
    "lobed-steep"
);
class_test!(wide_flat_meets_the_bars, "wide-flat");
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 1/5 meet every bar (polygon 4/5); worst auto area +12.3 % (an 8 mm, 1 mm deep dish), volume -12.9 %, area CV 8.0 %"]
    small_shallow_meets_the_bars,
    "small-shallow"
);
class_test!(wrap_meets_the_bars, "wrap");
class_test!(
    #[ignore = "#23 open: all 5 scans measured automatically, 0/5 meet every bar (polygon 3/5); worst auto area -5.3 %, volume +7.7 %, max depth +0.63 mm, area CV 2.8 %"]
    heel_tight_meets_the_bars,
    "heel-tight"
);

#[test]
fn the_polygon_path_holds_on_the_sacrum() {
    check_polygon("sacrum-lobed");
}

#[test]
fn the_polygon_path_holds_on_the_abrasion() {
    check_polygon("abrasion");
}

#[test]
fn the_polygon_path_holds_on_the_crater() {
    check_polygon("crater");
}

#[test]
fn the_polygon_path_holds_on_the_heel() {
    check_polygon("heel");
}

#[test]
fn the_polygon_path_holds_on_the_wide_flat_wound() {
    check_polygon("wide-flat");
}

/// Steep walls (88° punch, 80° lobed wound): the automatic area within 3 % on every scan.
/// The rim fit used to trade blur for wall width and put the rim outside the wall (+13 %,
/// +6 %); it now fits at no less blur than a wall gets from the scan's own views.
#[test]
fn the_automatic_area_of_steep_walls_is_within_three_percent() {
    let mut out = Vec::new();
    for name in ["punch-forearm", "lobed-steep"] {
        for (seed, r) in runs(name, Encoding::F32).iter().enumerate() {
            match &r.auto {
                Ok(m) => {
                    let e = m.outline_area_mm2.value / r.truth.outline_area_mm2 - 1.0;
                    if e.abs() > 0.03 {
                        out.push(format!("{name} seed {seed}: area {:+.2} %", e * 100.0));
                    }
                }
                Err(e) => out.push(format!("{name} seed {seed}: {e}")),
            }
        }
    }
    assert!(out.is_empty(), "{}", out.join("\n"));
}

/// The same frames sent as `f32_m` and as `u16_0.1mm` must give automatic areas within
/// 0.3 % (issue #23). The sensor's own 0.25 mm quantisation is off here, so that ties
/// under the 0.1 mm rounding neither hide nor fake the effect.
fn check_encoding(name: &str) {
    let case = family::by_name(name).expect("a named class");
    let phantom = WoundPhantom::new(case.spec.clone());
    let mut out = Vec::new();
    for seed in 0..3 {
        let mut cfg = ScanConfig::iphone(seed);
        cfg.noise.quantisation_m = 0.0;
        let f = harness::run_phantom(&phantom, &case, &cfg, Encoding::F32);
        let u = harness::run_phantom(&phantom, &case, &cfg, Encoding::U16Tenth);
        match (&f.auto, &u.auto) {
            (Ok(a), Ok(b)) => {
                let d = b.outline_area_mm2.value / a.outline_area_mm2.value - 1.0;
                if d.abs() > 0.003 {
                    out.push(format!("{name} seed {seed}: u16 area {:+.2}% from f32", d * 100.0));
                }
            }
            (a, b) => out.push(format!(
                "{name} seed {seed}: f32 {}, u16 {}",
                a.as_ref().map_or_else(|e| e.to_string(), |_| "measured".into()),
                b.as_ref().map_or_else(|e| e.to_string(), |_| "measured".into())
            )),
        }
    }
    assert!(out.is_empty(), "{}", out.join("\n"));
}

#[test]
fn the_encoding_does_not_move_the_crater_area() {
    check_encoding("crater");
}

#[test]
#[ignore = "#23 open: the u16_0.1mm encoding moves the automatic area by 0.50 % on seed 0 (bar 0.3 %)"]
fn the_encoding_does_not_move_the_saddle_area() {
    check_encoding("saddle-oblique");
}

#[test]
fn the_encoding_does_not_move_the_lobed_steep_area() {
    check_encoding("lobed-steep");
}
