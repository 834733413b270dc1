//! Calibrates the weight of the classifier's ambiguity in the tissue shares' `±`
//! (`colour::tissue`'s `PM_SOFT`) on training-distribution phantoms that are neither
//! trained on nor evaluated: `tissue_interval CASES SEED` (SEED other than the training
//! run's). Each case is scanned under two random lights; per class share it splits the
//! `±` into the floor, the ambiguity term and the unseen share, and prints the coverage
//! of the truth for a range of weights and the smallest weight that holds 95 %.

use coherency_recon::colour::TissueClass;
use coherency_recon::phantom::tissue::{prepare, random_lighting, training_cases, ColourCase, ColourScanConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The `±` floor of `colour::tissue` (`PM_FLOOR`), points.
const FLOOR: f64 = 2.0;
/// The ambiguity weight the shipped `±` was computed with (`PM_SOFT`).
const SOFT: f64 = 1.0;

/// Per class share: |error|, ambiguity term at weight 1, unseen points.
fn shares(case: &ColourCase) -> Vec<(f64, f64, f64)> {
    let Ok(p) = prepare(case, &ColourScanConfig::default()) else { return Vec::new() };
    let mut rng = StdRng::seed_from_u64(case.seed ^ 0x7063);
    let mut out = Vec::new();
    for k in 0..2u64 {
        let lighting = random_lighting(&mut rng);
        let Ok(c) = p.composition(&lighting, case.seed * 10 + k) else { continue };
        let unseen = (1.0 - c.coloured_fraction) * 100.0;
        for class in TissueClass::ALL {
            let s = c.share(class);
            let err = (s.percent - p.phantom.tissue_truth().percent(class)).abs();
            out.push((err, (s.percent_pm - FLOOR - unseen) / SOFT, unseen));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(24);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let cases = training_cases(n, seed);
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(4);
    let all: Vec<(f64, f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let cases = &cases;
                s.spawn(move || cases.iter().skip(t).step_by(threads).flat_map(shares).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a worker")).collect()
    });
    let coverage = |w: f64| all.iter().filter(|(e, a, u)| *e <= FLOOR + w * a + u).count() as f64 / all.len() as f64;
    for w in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0] {
        println!("weight {w:.1}: the ± holds the truth in {:.1} % of {} shares", 100.0 * coverage(w), all.len());
    }
    let w95 = (0..=200).map(|i| f64::from(i) * 0.01).find(|w| coverage(*w) >= 0.95);
    println!("smallest weight holding 95 %: {}", w95.map_or("none up to 2".into(), |w| format!("{w:.2}")));
}
