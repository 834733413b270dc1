//! Dumps labelled tissue samples from training colour phantoms, for `recon/train/`:
//! `tissue_samples CASES SEED OUT.csv`. Each case (`phantom::tissue::training_cases`, random
//! geometry, map, skin tone; never an evaluation case) is scanned, fused and coloured under
//! two random lighting conditions (neutral, warm, cold or a random cast; −1.5…+1.5 EV),
//! and every seen wound vertex becomes one row: the classifier's features
//! (`colour::features`) and the true class at the vertex (`colour::TissueClass` index).

use std::io::Write;

use coherency_recon::colour::{features, wound_samples, TissueClass};
use coherency_recon::phantom::colour::{Illuminant, Lighting};
use coherency_recon::phantom::tissue::{prepare, training_cases, ColourCase, ColourScanConfig};
use coherency_recon::Vec3;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rows(case: &ColourCase) -> Vec<String> {
    let Ok(p) = prepare(case, &ColourScanConfig::default()) else {
        eprintln!("{}: not prepared", case.name);
        return Vec::new();
    };
    let mut rng = StdRng::seed_from_u64(case.seed);
    let mut out = Vec::new();
    for k in 0..2u64 {
        let illuminant = match rng.gen_range(0..4) {
            0 => Illuminant::Neutral,
            1 => Illuminant::Warm,
            2 => Illuminant::Cold,
            _ => Illuminant::Custom([rng.gen_range(0.6..1.0), rng.gen_range(0.7..1.0), rng.gen_range(0.5..1.0)]),
        };
        let lighting = Lighting { illuminant, ev: rng.gen_range(-1.5..1.5) };
        let images = p.scan.images(&lighting, case.seed * 10 + k);
        let views = p.views(&images);
        let colours = coherency_recon::colour::colour_vertices(&p.mesh, &views);
        let Ok((_, samples)) = wound_samples(&p.mesh, &colours, &p.wound) else { continue };
        for (v, s) in samples {
            let q = p.mesh.positions[v as usize];
            let Some(class) = p.phantom.class_at_world(Vec3::new(f64::from(q[0]), f64::from(q[1]), f64::from(q[2])))
            else {
                continue;
            };
            let f: Vec<String> = features(&s).iter().map(|x| format!("{x:.5}")).collect();
            out.push(format!("{},{}", f.join(","), class.index()));
        }
    }
    eprintln!("{}: {} rows", case.name, out.len());
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let path = args.get(3).cloned().unwrap_or_else(|| "tissue_samples.csv".into());
    let cases = training_cases(n, seed);
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(4);
    let chunks: Vec<Vec<ColourCase>> =
        (0..threads).map(|t| cases.iter().skip(t).step_by(threads).cloned().collect()).collect();
    let all: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> =
            chunks.iter().map(|c| s.spawn(move || c.iter().flat_map(rows).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("a worker")).collect()
    });
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create the output"));
    let header: Vec<String> = (0..coherency_recon::colour::FEATURES).map(|i| format!("f{i}")).collect();
    writeln!(f, "{},class", header.join(",")).expect("write");
    for r in &all {
        writeln!(f, "{r}").expect("write");
    }
    let mut counts = [0usize; 5];
    for r in &all {
        if let Some(c) = r.rsplit(',').next().and_then(|c| c.parse::<usize>().ok()) {
            counts[c] += 1;
        }
    }
    for c in TissueClass::ALL {
        eprintln!("{:<12} {}", c.as_str(), counts[c.index()]);
    }
}
