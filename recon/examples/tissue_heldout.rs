//! The tissue classifier on training-distribution phantoms it was not trained on:
//! `tissue_heldout CASES SEED` (SEED other than the training run's, 1). Each case
//! (`phantom::tissue::training_cases`: random geometry, map, skin tone) is scanned under
//! two random lights (neutral, warm or cold; −1…+1 EV), colour at the server's 640×480; prints each class's mean signed
//! and mean absolute error, the analyses with a class outside ±5 points, and how many.
use coherency_recon::colour::TissueClass;
use coherency_recon::phantom::tissue::{prepare, random_lighting, training_cases, ColourCase, ColourScanConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Per analysis: its label and each class's (reported, true) percent.
fn analyses(case: &ColourCase) -> Vec<(String, [(f64, f64); 5])> {
    let Ok(p) = prepare(case, &ColourScanConfig::server_resolution()) else { return Vec::new() };
    let mut rng = StdRng::seed_from_u64(case.seed ^ 0x6269);
    let mut out = Vec::new();
    for k in 0..2u64 {
        let lighting = random_lighting(&mut rng);
        let Ok(c) = p.composition(&lighting, case.seed * 10 + k) else { continue };
        let truth = p.phantom.tissue_truth();
        let shares = TissueClass::ALL.map(|k| (c.share(k).percent, truth.percent(k)));
        out.push((format!("{} {}", case.name, lighting.label()), shares));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let cases = training_cases(n, seed);
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(4);
    let all: Vec<(String, [(f64, f64); 5])> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let cases = &cases;
                s.spawn(move || cases.iter().skip(t).step_by(threads).flat_map(analyses).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a worker")).collect()
    });
    let m = all.len().max(1) as f64;
    let (mut signed, mut abs) = ([0.0f64; 5], [0.0f64; 5]);
    let mut missing = 0;
    for (label, shares) in &all {
        let mut miss = false;
        for k in TissueClass::ALL {
            let (got, truth) = shares[k.index()];
            signed[k.index()] += (got - truth) / m;
            abs[k.index()] += (got - truth).abs() / m;
            if (got - truth).abs() > 5.0 {
                println!("  outside ±5: {label} {}: {got:.1} vs {truth:.1}", k.as_str());
                miss = true;
            }
        }
        missing += usize::from(miss);
    }
    for k in TissueClass::ALL {
        println!(
            "{:<12} mean error {:+.2}, mean absolute error {:.2} points",
            k.as_str(),
            signed[k.index()],
            abs[k.index()]
        );
    }
    println!("{} analyses of {n} cases; every class within ±5 points on {}", all.len(), all.len() - missing);
}
