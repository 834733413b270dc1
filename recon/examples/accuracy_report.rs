//! Prints measured vs true values for every preset phantom over several trajectories:
//! `cargo run -p coherency-recon --example accuracy_report [seeds] [frames] [phantom] [select|all|MM,DEG]`.
//!
//! Family mode runs the wound-phantom family through the server's policy
//! (`phantom::harness::run`: gate, region, centre-ray target; no oracle) and prints, per class
//! and seed, truth against the automatic and polygon figures with their `±`, which bars of
//! issue #23 each misses and why a measurement failed, then a summary table:
//! `cargo run --release -p coherency-recon --example accuracy_report -- family [seeds] [frames] [class|-|sampled:SEED:N] [f32|u16]`.
//!
//! Frames go through the server's quality gate first (each against the last accepted one),
//! with its frame selection (`select`, the default; `MM,DEG` for other thresholds) or
//! without it (`all`); each run prints
//! how many frames were fused. `phantom` filters by name (`cap`, `limb`, …; `-` for all).

use std::time::Instant;

use coherency_recon::measure::{measure_auto, measure_polygon, MeasureConfig, WoundMeasurements};
use coherency_recon::phantom::family::{self, Case};
use coherency_recon::phantom::harness::{self, Bars, Encoding, Run};
use coherency_recon::phantom::wound::WoundPhantom;
use coherency_recon::phantom::{presets, GroundTruth, Phantom, PhantomSpec, ScanConfig};
use coherency_recon::tsdf::{Aabb, TsdfConfig, TsdfVolume};
use coherency_recon::QualityGate;
use coherency_recon::ReconError;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("family") {
        return family_report(&args[2..]);
    }
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let frames: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let only: Option<&str> = args.get(3).map(|s| s.as_str()).filter(|s| *s != "-");
    let gate = match args.get(4).map(String::as_str) {
        Some("all") => QualityGate::default().without_selection(),
        // `MM,DEG`: selection with other thresholds.
        Some(t) if t.contains(',') => {
            let mut v = t.split(',').filter_map(|x| x.parse::<f64>().ok());
            let (mm, deg) = (v.next().ok_or("MM,DEG")?, v.next().ok_or("MM,DEG")?);
            QualityGate { min_translation_mm: mm, min_rotation_deg: deg, ..QualityGate::default() }
        }
        _ => QualityGate::default(),
    };
    let (mut total_frames, mut total_fused) = (0usize, 0usize);
    let cases: Vec<(&str, PhantomSpec)> = presets::labelled();
    for (name, spec) in cases {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let ph = Phantom::new(spec);
        let t = *ph.truth();
        println!(
            "== {name}: truth area {:.1} bed {:.1} perim {:.2} L {:.2} W {:.2} maxd {:.2} meand {:.2} vol {:.1}",
            t.outline_area_mm2,
            t.bed_area_mm2,
            t.perimeter_mm,
            t.length_mm,
            t.width_mm,
            t.max_depth_mm,
            t.mean_depth_mm,
            t.volume_mm3
        );
        for seed in 0..seeds {
            let t0 = Instant::now();
            let mut sc = ScanConfig::iphone(seed);
            sc.frames = frames;
            let scan = ph.scan(&sc);
            let t_render = t0.elapsed();
            let cfg = TsdfConfig { roi: Some(Aabb::around(t.target_world, 0.06)), ..TsdfConfig::default() };
            let mut vol = TsdfVolume::new(cfg)?;
            let t1 = Instant::now();
            let kept = gate.accepted_indices(&scan.frames);
            for &i in &kept {
                vol.integrate(&scan.frames[i])?;
            }
            let t_fuse = t1.elapsed();
            total_frames += scan.frames.len();
            total_fused += kept.len();
            let t2 = Instant::now();
            let m = measure_auto(&vol, t.target_world, &MeasureConfig::default());
            let t_meas = t2.elapsed();
            match m {
                Ok(m) => {
                    let e = |v: &coherency_recon::Measurement, tv: f64| {
                        format!("{:+.2}{}", v.value - tv, if v.contains(tv) { "" } else { "!" })
                    };
                    println!(
                        "  seed {seed}: area {:.1}±{:.1} ({}, {:+.2}%) bed {} perim {} L {} W {} maxd {}±{:.2} vol {:.0}±{:.0} ({:+.2}%) {:?} res {:.3}mm  [fused {}/{}, render {:.0?} fuse {:.0?} measure {:.0?}, {} KiB]",
                        m.outline_area_mm2.value, m.outline_area_mm2.uncertainty,
                        e(&m.outline_area_mm2, t.outline_area_mm2),
                        (m.outline_area_mm2.value / t.outline_area_mm2 - 1.0) * 100.0,
                        e(&m.bed_area_mm2, t.bed_area_mm2),
                        e(&m.perimeter_mm, t.perimeter_mm),
                        e(&m.length_mm, t.length_mm),
                        e(&m.width_mm, t.width_mm),
                        e(&m.max_depth_mm, t.max_depth_mm), m.max_depth_mm.uncertainty,
                        m.volume_mm3.value, m.volume_mm3.uncertainty,
                        (m.volume_mm3.value / t.volume_mm3 - 1.0) * 100.0,
                        m.skin_model, m.skin_residual_mm,
                        kept.len(), scan.frames.len(),
                        t_render, t_fuse, t_meas, vol.memory_bytes() / 1024,
                    );
                }
                Err(err) => println!("  seed {seed}: ERROR {err}"),
            }
            let k = scan.frames.len() / 2;
            let key = &scan.frames[k];
            let poly = ph.outline_in_image(&key.intrinsics, &scan.true_poses[k], 64);
            match measure_polygon(&vol, &poly, &key.intrinsics, &key.pose, &MeasureConfig::default()) {
                Ok(m) => println!(
                    "          polygon: area {:+.2}% vol {:+.2}% L {:+.2} W {:+.2} maxd {:+.2} in={}{}{}{}",
                    (m.outline_area_mm2.value / t.outline_area_mm2 - 1.0) * 100.0,
                    (m.volume_mm3.value / t.volume_mm3 - 1.0) * 100.0,
                    m.length_mm.value - t.length_mm,
                    m.width_mm.value - t.width_mm,
                    m.max_depth_mm.value - t.max_depth_mm,
                    u8::from(m.outline_area_mm2.contains(t.outline_area_mm2)),
                    u8::from(m.volume_mm3.contains(t.volume_mm3)),
                    u8::from(m.length_mm.contains(t.length_mm)),
                    u8::from(m.max_depth_mm.contains(t.max_depth_mm)),
                ),
                Err(err) => println!("          polygon: ERROR {err}"),
            }
        }
    }
    println!(
        "fused {total_fused} of {total_frames} frames ({:.1} % skipped as redundant or unusable)",
        100.0 * (1.0 - total_fused as f64 / total_frames.max(1) as f64)
    );
    Ok(())
}

/// Family mode (see the module docs).
fn family_report(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let seeds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let frames: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let filter = args.get(2).map(String::as_str).unwrap_or("-");
    let encoding = match args.get(3).map(String::as_str) {
        Some("u16") => Encoding::U16Tenth,
        _ => Encoding::F32,
    };
    let cases: Vec<Case> = match filter.strip_prefix("sampled:") {
        Some(rest) => {
            let mut it = rest.split(':').filter_map(|x| x.parse::<u64>().ok());
            let (seed, n) = (it.next().ok_or("sampled:SEED:N")?, it.next().ok_or("sampled:SEED:N")?);
            family::sampled(seed, n as usize)
        }
        None => family::named().into_iter().filter(|c| filter == "-" || c.name.contains(filter)).collect(),
    };
    let mut table = Vec::new();
    for case in &cases {
        let phantom = WoundPhantom::new(case.spec.clone());
        let t = *phantom.truth();
        println!(
            "== {} | truth area {:.1} bed {:.1} perim {:.2} L {:.2} W {:.2} maxd {:.2} vol {:.1}",
            case.describe(),
            t.outline_area_mm2,
            t.bed_area_mm2,
            t.perimeter_mm,
            t.length_mm,
            t.width_mm,
            t.max_depth_mm,
            t.volume_mm3
        );
        let mut runs = Vec::new();
        for seed in 0..seeds {
            let cfg = ScanConfig { frames, ..ScanConfig::iphone(seed) };
            let r = harness::run_phantom(&phantom, case, &cfg, encoding);
            let rejected: Vec<String> = r.rejected.iter().map(|(c, n)| format!("{c}×{n}")).collect();
            let mut valid: Vec<f64> = r.frame_stats.iter().map(|s| s.valid_fraction).collect();
            valid.sort_by(f64::total_cmp);
            let mut far: Vec<f64> = r.frame_stats.iter().filter_map(|s| s.median_depth_m).collect();
            far.sort_by(f64::total_cmp);
            let mid = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
            println!(
                "  seed {seed}: fused {}/{} (rejected {}; whole-frame valid {:.0}% median {:.2} m), target {} | render {:.0} fuse {:.0} measure {:.0} polygon {:.0} ms",
                r.fused,
                r.frames,
                if rejected.is_empty() { "none".to_string() } else { rejected.join(" ") },
                mid(&valid) * 100.0,
                mid(&far),
                r.target_error_mm.map_or("-".to_string(), |e| format!("{e:.1} mm off")),
                r.timings.render_ms,
                r.timings.fuse_ms,
                r.timings.measure_ms,
                r.timings.polygon_ms,
            );
            println!("    auto:    {}", line(&r.auto, &t));
            println!("    polygon: {}", line(&r.polygon, &t));
            runs.push(r);
        }
        let row = summarise(case, &t, &runs);
        println!("  -> {row}");
        table.push(row);
    }
    println!();
    println!("| class | auto measured | auto meets bars | polygon meets bars | auto area % | auto vol % | auto L/W mm | auto maxd mm | poly area % | poly vol % | CV area/vol auto | CV area/vol poly | ± misses a/p | why |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    Ok(())
}

fn line(m: &Result<WoundMeasurements, ReconError>, t: &GroundTruth) -> String {
    match m {
        Err(e) => format!("FAILED: {e}"),
        Ok(m) => {
            let misses = Bars::ISSUE.misses(m, t);
            format!(
                "area {:.1}±{:.1} ({:+.2}%) L {:+.2}±{:.2} W {:+.2}±{:.2} maxd {:+.2}±{:.2} vol {:.0}±{:.0} ({:+.2}%) {}",
                m.outline_area_mm2.value,
                m.outline_area_mm2.uncertainty,
                (m.outline_area_mm2.value / t.outline_area_mm2 - 1.0) * 100.0,
                m.length_mm.value - t.length_mm,
                m.length_mm.uncertainty,
                m.width_mm.value - t.width_mm,
                m.width_mm.uncertainty,
                m.max_depth_mm.value - t.max_depth_mm,
                m.max_depth_mm.uncertainty,
                m.volume_mm3.value,
                m.volume_mm3.uncertainty,
                (m.volume_mm3.value / t.volume_mm3 - 1.0) * 100.0,
                if misses.is_empty() { "ok".to_string() } else { format!("MISSES {}", misses.join(", ")) }
            )
        }
    }
}

/// One markdown row: counts, worst errors (signed, largest magnitude), CVs, reasons.
fn summarise(case: &Case, t: &GroundTruth, runs: &[Run]) -> String {
    let ok = |f: fn(&Run) -> &Result<WoundMeasurements, ReconError>| -> Vec<&WoundMeasurements> {
        runs.iter().filter_map(|r| f(r).as_ref().ok()).collect()
    };
    let auto = ok(|r| &r.auto);
    let poly = ok(|r| &r.polygon);
    let pass = |ms: &[&WoundMeasurements]| ms.iter().filter(|m| Bars::ISSUE.misses(m, t).is_empty()).count();
    let worst = |ms: &[&WoundMeasurements], f: &dyn Fn(&WoundMeasurements) -> f64| -> String {
        ms.iter()
            .map(|m| f(m))
            .fold(None, |acc: Option<f64>, v| match acc {
                Some(a) if a.abs() >= v.abs() => Some(a),
                _ => Some(v),
            })
            .map_or("-".to_string(), |v| format!("{v:+.1}"))
    };
    let area = |m: &WoundMeasurements| (m.outline_area_mm2.value / t.outline_area_mm2 - 1.0) * 100.0;
    let vol = |m: &WoundMeasurements| (m.volume_mm3.value / t.volume_mm3 - 1.0) * 100.0;
    let lw = |m: &WoundMeasurements| {
        let (l, w) = (m.length_mm.value - t.length_mm, m.width_mm.value - t.width_mm);
        if l.abs() >= w.abs() {
            l
        } else {
            w
        }
    };
    let maxd = |m: &WoundMeasurements| m.max_depth_mm.value - t.max_depth_mm;
    let cvs = |ms: &[&WoundMeasurements]| {
        if ms.len() < 2 {
            return "-".to_string();
        }
        let a: Vec<f64> = ms.iter().map(|m| m.outline_area_mm2.value).collect();
        let v: Vec<f64> = ms.iter().map(|m| m.volume_mm3.value).collect();
        format!("{:.1}/{:.1}", harness::cv(&a) * 100.0, harness::cv(&v) * 100.0)
    };
    let misses = |ms: &[&WoundMeasurements]| {
        ms.iter().map(|m| harness::intervals(m, t).iter().filter(|(_, v, tv)| !v.contains(*tv)).count()).sum::<usize>()
    };
    let mut why: Vec<String> = Vec::new();
    for r in runs {
        if let Err(e) = &r.auto {
            let s = e.to_string();
            if !why.contains(&s) {
                why.push(s);
            }
        }
    }
    format!(
        "| {} | {}/{} | {}/{} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
        case.name,
        auto.len(),
        runs.len(),
        pass(&auto),
        runs.len(),
        pass(&poly),
        runs.len(),
        worst(&auto, &area),
        worst(&auto, &vol),
        worst(&auto, &lw),
        worst(&auto, &maxd),
        worst(&poly, &area),
        worst(&poly, &vol),
        cvs(&auto),
        cvs(&poly),
        misses(&auto),
        misses(&poly),
        if why.is_empty() { "-".to_string() } else { why.join("; ") }
    )
}
