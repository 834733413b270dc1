//! Interval calibration: measured error against the reported `±` on every preset phantom
//! plus a steep punch on a forearm-like limb, automatic and polygon outlines:
//! `cargo run -p coherency-recon --example calibration -- [seeds] [frames] [phantom|-] [f32|u16]`;
//! the wound-phantom family through the server's policy, seeds `FROM..TO` (held-out seeds
//! are any beyond the five the tests use):
//! `cargo run --release -p coherency-recon --example calibration -- family FROM TO [f32|u16]`.
//!
//! Every frame is fused (as `recon/tests/accuracy.rs` does). Each run prints the signed
//! error and the half-width of area, length, width, max depth and volume; the end prints
//! the calibration table: per quantity and predicted half-width bin, the coverage (share of
//! intervals that contain the truth) and the median and largest `|error| / half-width`.
//! With `u16`, frames are re-quantised to 0.1 mm as the protocol's `u16_0.1mm` decodes.

use coherency_recon::measure::{measure_auto, measure_polygon, MeasureConfig, WoundMeasurements};
use coherency_recon::phantom::family;
use coherency_recon::phantom::harness::{self, Encoding};
use coherency_recon::phantom::wound::WoundPhantom;
use coherency_recon::phantom::{presets, CavityShape, GroundTruth, Phantom, PhantomSpec, ScanConfig, SkinShape};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};

/// One observation: quantity, path, error, half-width (same units: % or mm).
struct Obs {
    quantity: &'static str,
    path: &'static str,
    error: f64,
    half_width: f64,
}

/// A steep punch (near-vertical wall, rounded bed) on a 38 mm limb, the failing class
/// as far as the preset generator can draw it.
fn punch_forearm() -> PhantomSpec {
    PhantomSpec {
        skin: SkinShape::Cylinder { radius: 0.038 },
        cavity: CavityShape::EllipsoidalCap { semi_major: 0.007, semi_minor: 0.007, depth: 0.003, wall: 0.02 },
        orientation: 0.0,
        world_from_phantom: presets::default_placement(),
    }
}

fn observations(m: &WoundMeasurements, t: &GroundTruth, path: &'static str) -> Vec<Obs> {
    let pct = |v: f64, u: f64, tv: f64| ((v / tv - 1.0) * 100.0, u / tv * 100.0);
    let mut out = Vec::new();
    let (e, h) = pct(m.outline_area_mm2.value, m.outline_area_mm2.uncertainty, t.outline_area_mm2);
    out.push(Obs { quantity: "area %", path, error: e, half_width: h });
    out.push(Obs {
        quantity: "length mm",
        path,
        error: m.length_mm.value - t.length_mm,
        half_width: m.length_mm.uncertainty,
    });
    out.push(Obs {
        quantity: "width mm",
        path,
        error: m.width_mm.value - t.width_mm,
        half_width: m.width_mm.uncertainty,
    });
    out.push(Obs {
        quantity: "depth mm",
        path,
        error: m.max_depth_mm.value - t.max_depth_mm,
        half_width: m.max_depth_mm.uncertainty,
    });
    let (e, h) = pct(m.volume_mm3.value, m.volume_mm3.uncertainty, t.volume_mm3);
    out.push(Obs { quantity: "volume %", path, error: e, half_width: h });
    out
}

fn line(obs: &[Obs]) -> String {
    obs.iter()
        .map(|o| {
            format!(
                "{} {:+.2}±{:.2}{}",
                o.quantity.split(' ').next().unwrap_or(""),
                o.error,
                o.half_width,
                if o.error.abs() <= o.half_width { "" } else { "!" }
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// Re-quantises depth to 0.1 mm steps exactly as the server decodes `u16_0.1mm`.
fn requantise(frames: &mut [coherency_recon::Frame]) {
    for f in frames {
        for d in f.depth.depth.iter_mut() {
            if d.is_finite() && *d > 0.0 {
                let units = (f64::from(*d) / 1e-4).round().clamp(0.0, 65535.0) as u16;
                *d = f32::from(units) * 1e-4;
            }
        }
    }
}

fn table(all: &[Obs]) {
    println!(
        "\n{:<10} {:<8} {:>14} {:>4} {:>9} {:>10} {:>10}",
        "quantity", "path", "half-width", "n", "cover %", "med |e|/h", "max |e|/h"
    );
    for q in ["area %", "length mm", "width mm", "depth mm", "volume %"] {
        for path in ["auto", "polygon"] {
            let mut v: Vec<&Obs> = all.iter().filter(|o| o.quantity == q && o.path == path).collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(|a, b| a.half_width.total_cmp(&b.half_width));
            // Three bins of equal count by predicted half-width.
            let bins = 3.min(v.len());
            for b in 0..bins {
                let chunk = &v[b * v.len() / bins..(b + 1) * v.len() / bins];
                let mut r: Vec<f64> = chunk.iter().map(|o| o.error.abs() / o.half_width.max(1e-12)).collect();
                r.sort_by(f64::total_cmp);
                let covered = r.iter().filter(|x| **x <= 1.0).count();
                println!(
                    "{:<10} {:<8} {:>6.2}–{:<7.2} {:>4} {:>9.1} {:>10.2} {:>10.2}",
                    q,
                    path,
                    chunk[0].half_width,
                    chunk[chunk.len() - 1].half_width,
                    chunk.len(),
                    100.0 * covered as f64 / chunk.len() as f64,
                    r[r.len() / 2],
                    r[r.len() - 1]
                );
            }
        }
    }
}

/// The wound-phantom family through the server's policy (`harness::run_phantom`), seeds
/// `from..to`: `calibration -- family FROM TO [f32|u16]`.
fn family_table(args: &[String]) {
    let from: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let to: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let encoding = if args.get(2).is_some_and(|s| s == "u16") { Encoding::U16Tenth } else { Encoding::F32 };
    let mut all = Vec::new();
    for case in family::named() {
        let phantom = WoundPhantom::new(case.spec.clone());
        println!("== {}", case.describe());
        for seed in from..to {
            let run = harness::run_phantom(&phantom, &case, &ScanConfig::iphone(seed), encoding);
            for (path, r) in [("auto", &run.auto), ("polygon", &run.polygon)] {
                match r {
                    Ok(m) => {
                        let o = observations(m, &run.truth, path);
                        println!("  seed {seed} {path}: {}", line(&o));
                        all.extend(o);
                    }
                    Err(e) => println!("  seed {seed} {path}: ERROR {e}"),
                }
            }
        }
    }
    table(&all);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("family") {
        family_table(&args[2..]);
        return Ok(());
    }
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let frames: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let only: Option<&str> = args.get(3).map(String::as_str).filter(|s| *s != "-");
    let u16 = args.get(4).is_some_and(|s| s == "u16");
    let mut cases: Vec<(&str, PhantomSpec)> = presets::labelled();
    cases.extend([("punch/forearm", punch_forearm())]);
    let mut all = Vec::new();
    for (name, spec) in cases {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let ph = Phantom::new(spec);
        let t = *ph.truth();
        println!(
            "== {name}: area {:.1} L {:.2} W {:.2} maxd {:.2} vol {:.1}",
            t.outline_area_mm2, t.length_mm, t.width_mm, t.max_depth_mm, t.volume_mm3
        );
        for seed in 0..seeds {
            let mut scan = ph.scan(&ScanConfig { frames, ..ScanConfig::iphone(seed) });
            if u16 {
                requantise(&mut scan.frames);
            }
            let cfg = TsdfConfig { roi: Some(Aabb::around(t.target_world, 0.06)), ..TsdfConfig::default() };
            let mut vol = TsdfVolume::new(cfg)?;
            for f in &scan.frames {
                vol.integrate(f)?;
            }
            match measure_auto(&vol, t.target_world, &MeasureConfig::default()) {
                Ok(m) => {
                    let o = observations(&m, &t, "auto");
                    println!("  seed {seed} auto:    {}", line(&o));
                    all.extend(o);
                }
                Err(e) => println!("  seed {seed} auto:    ERROR {e}"),
            }
            let k = scan.frames.len() / 2;
            let key = &scan.frames[k];
            let poly = ph.outline_in_image(&key.intrinsics, &scan.true_poses[k], 64);
            match measure_polygon(&vol, &poly, &key.intrinsics, &key.pose, &MeasureConfig::default()) {
                Ok(m) => {
                    let o = observations(&m, &t, "polygon");
                    println!("  seed {seed} polygon: {}", line(&o));
                    all.extend(o);
                }
                Err(e) => println!("  seed {seed} polygon: ERROR {e}"),
            }
        }
    }
    table(&all);
    Ok(())
}
