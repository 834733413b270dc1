//! Per-vertex confusion of one evaluation scan (`phantom::tissue::evaluation_cases(5)`):
//! `tissue_confusion CASE_INDEX [neutral|warm|cold]`. For each true class, how many wound
//! vertices the classifier gave each class, before (`raw`) and after the one-ring
//! smoothing (`smoothed`), beside the share the composition reports; this located the
//! remaining ±5-point miss (`docs/measurement.md`, "Limits").
use std::collections::HashMap;

use coherency_recon::colour::{default_classifier, wound_samples, TissueClass};
use coherency_recon::phantom::colour::{Illuminant, Lighting};
use coherency_recon::phantom::tissue::{evaluation_cases, prepare, ColourScanConfig};
use coherency_recon::Vec3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let i: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let illuminant = match args.get(2).map(String::as_str) {
        Some("warm") => Illuminant::Warm,
        Some("cold") => Illuminant::Cold,
        _ => Illuminant::Neutral,
    };
    let cases = evaluation_cases(5);
    let Some(case) = cases.get(i) else {
        eprintln!("case index 0..{}", cases.len());
        std::process::exit(2);
    };
    let p = prepare(case, &ColourScanConfig::server_resolution()).expect("the scan fuses and measures");
    let lighting = Lighting { illuminant, ev: 0.0 };
    // The seed recon/tests/tissue.rs uses for this case.
    let a = p.analyse(&lighting, 17 + i as u64, default_classifier(), &[]);
    let analysis = a.analysis.expect("a composition");
    let (_, samples) = wound_samples(&p.mesh, &a.colours, &p.wound).expect("samples");
    let argmax = |pr: [f32; 5]| (0..5).max_by(|&x, &y| pr[x].total_cmp(&pr[y])).unwrap_or(0);
    let raw: HashMap<u32, usize> =
        samples.iter().map(|(v, s)| (*v, argmax(default_classifier().classify(s)))).collect();
    let (mut smoothed, mut unsmoothed) = ([[0usize; 5]; 5], [[0usize; 5]; 5]);
    for (v, c) in analysis.vertex_classes.iter().enumerate() {
        let Some(c) = c else { continue };
        let q = p.mesh.positions[v];
        let Some(t) = p.phantom.class_at_world(Vec3::new(f64::from(q[0]), f64::from(q[1]), f64::from(q[2]))) else {
            continue;
        };
        smoothed[t.index()][c.index()] += 1;
        if let Some(r) = raw.get(&(v as u32)) {
            unsmoothed[t.index()][*r] += 1;
        }
    }
    println!("{} {}", case.name, lighting.label());
    println!(
        "{:<12} {:>6} {:>12}  vertices given [gran, slough, eschar, epith, other]",
        "true class", "truth", "reported"
    );
    let truth = p.phantom.tissue_truth();
    for k in TissueClass::ALL {
        let s = analysis.composition.share(k);
        println!(
            "{:<12} {:6.1} {:6.1} ± {:3.1}  raw {:?} smoothed {:?}",
            k.as_str(),
            truth.percent(k),
            s.percent,
            s.percent_pm,
            unsmoothed[k.index()],
            smoothed[k.index()]
        );
    }
}
