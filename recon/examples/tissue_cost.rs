//! Cost of tissue analysis at a scan's finish, on one core: `colour_vertices` +
//! `tissue_composition` + `card_calibration` (the colour checker search the finish runs on
//! every scan's views, card or not) for a typical scan (60 depth frames fused, 12 colour
//! views of 640×480, the scan's mesh). Prints the median of RUNS runs after a warm-up:
//! `cargo run --release -p coherency-recon --example tissue_cost -- [RUNS] [CASE]`.

use std::time::Instant;

use coherency_recon::colour::{card_calibration, colour_vertices, default_classifier, tissue_composition};
use coherency_recon::phantom::colour::Lighting;
use coherency_recon::phantom::tissue::{evaluation_cases, prepare, ColourScanConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(9);
    let idx: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let cases = evaluation_cases(5);
    let case = &cases[idx % cases.len()];
    let config = ColourScanConfig { frames: 60, colour_every: 5, colour_scale: 2.5 };
    let p = prepare(case, &config).expect("prepared");
    let images = p.scan.images(&Lighting::NEUTRAL, 1);
    let views = p.views(&images);
    let (w, h) = (images[0].1.width, images[0].1.height);
    let mut colour_ms = Vec::new();
    let mut tissue_ms = Vec::new();
    let mut card_ms = Vec::new();
    for _ in 0..runs + 1 {
        let t = Instant::now();
        let colours = colour_vertices(&p.mesh, &views);
        colour_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let c = tissue_composition(&p.mesh, &colours, &p.wound, default_classifier(), &[]).expect("composition");
        tissue_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(c);
        let t = Instant::now();
        std::hint::black_box(card_calibration(&views));
        card_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    colour_ms.remove(0);
    tissue_ms.remove(0);
    card_ms.remove(0);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cm, tm, km) = (median(&mut colour_ms), median(&mut tissue_ms), median(&mut card_ms));
    println!(
        "{}: {} vertices, {} triangles, {} views {w}×{h}: colour_vertices {cm:.1} ms + tissue_composition {tm:.1} ms + card_calibration {km:.1} ms = {:.1} ms (median of {runs})",
        case.name,
        p.mesh.positions.len(),
        p.mesh.triangle_count(),
        views.len(),
        cm + tm + km
    );
}
