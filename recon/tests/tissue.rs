//! Tissue composition on colour phantoms (issue #26), through the server's pipeline
//! (`phantom::tissue::prepare`: fusion, mesh, the clinician-outline measurement; then
//! vertex colouring and tissue analysis from 12 colour views per scan at 640×480, the size
//! the server reduces a phone's colour image to, `ColourScanConfig::server_resolution`).
//!
//! - 4 tissue maps × 5 trajectories (skin tones light to dark) × 3 lights (neutral, warm
//!   ~3000 K, cold ~7000 K): every class of every scan within the issue's ±5 points of the
//!   truth, mean absolute error ≤ 2 points per class (mean absolute errors, the worst error
//!   and any miss printed with `--nocapture`);
//! - the same scans at −1, 0, +1 EV under the three lights: shares within ±3 points of
//!   each other;
//! - the `±` intervals contain the truth in most cases (the fraction is printed and held
//!   to ≥ 90 %);
//! - errors (no colour, an unseen or dark periwound) and clinicians' corrections.
//!
//! The classifier was trained on other phantoms (`recon/train/`, `training_cases`).

use std::sync::OnceLock;

use coherency_recon::colour::{
    colour_vertices, default_classifier, tissue_analysis, tissue_composition, TissueClass, TissueCorrection,
    TissueError, VertexColours,
};
use coherency_recon::phantom::colour::{ColourPhantom, Illuminant, Lighting};
use coherency_recon::phantom::tissue::{
    evaluation_cases, prepare, prepare_phantom, ColourCase, ColourScanConfig, Prepared,
};
use coherency_recon::phantom::wound::{WoundPhantom, WoundSpec};

const TRAJECTORIES: u64 = 5;

/// Percent and ± per class.
type Shares = [(f64, f64); 5];

fn lights() -> [Lighting; 3] {
    [
        Lighting { illuminant: Illuminant::Neutral, ev: 0.0 },
        Lighting { illuminant: Illuminant::Warm, ev: 0.0 },
        Lighting { illuminant: Illuminant::Cold, ev: 0.0 },
    ]
}

/// Prepares cases on two threads, each geometry built once.
fn prepare_all(cases: &[ColourCase]) -> Vec<Prepared> {
    let threads = 2;
    let mut geometries: Vec<(WoundSpec, WoundPhantom)> = Vec::new();
    for c in cases {
        if !geometries.iter().any(|(s, _)| *s == c.spec) {
            geometries.push((c.spec.clone(), WoundPhantom::new(c.spec.clone())));
        }
    }
    let geometries = &geometries;
    let mut out: Vec<(usize, Prepared)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    cases
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, c)| {
                            let wound =
                                geometries.iter().find(|(s, _)| *s == c.spec).map(|g| g.1.clone()).expect("built");
                            let phantom = ColourPhantom::from_wound(wound, c.appearance.clone());
                            let config = ColourScanConfig::server_resolution();
                            (i, prepare_phantom(phantom, c, &config).expect("the scan fuses and measures"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a worker")).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, p)| p).collect()
}

/// Shares (percent, ±) of one scan under one lighting.
fn shares(p: &Prepared, lighting: &Lighting, seed: u64) -> Result<Shares, TissueError> {
    let a = p.analyse(lighting, seed, default_classifier(), &[]);
    let c = a.analysis?.composition;
    Ok(TissueClass::ALL.map(|k| (c.share(k).percent, c.share(k).percent_pm)))
}

#[test]
fn tissue_shares_match_the_truth_and_agree_across_lighting_and_exposure() {
    let cases = evaluation_cases(TRAJECTORIES);
    let prepared = prepare_all(&cases);
    let mut abs_err = [0.0f64; 5];
    let mut n = 0usize;
    let mut worst = (0.0f64, String::new());
    // The bar: every class of every scan within ±5 points.
    let mut accuracy_misses = Vec::new();
    let mut scans_missing: std::collections::BTreeSet<String> = Default::default();
    let mut misses = Vec::new();
    let (mut covered, mut intervals) = (0usize, 0usize);
    let mut ratios = Vec::new();
    let mut spread_worst = (0.0f64, String::new());
    let mut spreads = Vec::new();
    // Per scan: the three lights for accuracy, and the three lights at −1/+1 EV for consistency.
    let results: Vec<Vec<(Lighting, Shares)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let prepared = &prepared;
                s.spawn(move || {
                    prepared
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(2)
                        .map(|(i, p)| {
                            let mut conditions: Vec<Lighting> = lights().to_vec();
                            for l in lights() {
                                for ev in [-1.0, 1.0] {
                                    conditions.push(Lighting { ev, ..l });
                                }
                            }
                            let r: Vec<_> = conditions
                                .iter()
                                .map(|l| (*l, shares(p, l, 17 + i as u64).expect("a composition")))
                                .collect();
                            (i, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().expect("a worker")).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    });
    for ((case, p), res) in cases.iter().zip(&prepared).zip(&results) {
        let truth = p.phantom.tissue_truth();
        for (lighting, sh) in res.iter().filter(|(l, _)| l.ev == 0.0) {
            for k in TissueClass::ALL {
                let (pct, pm) = sh[k.index()];
                let err = pct - truth.percent(k);
                abs_err[k.index()] += err.abs();
                intervals += 1;
                ratios.push(err.abs() / pm);
                if err.abs() <= pm {
                    covered += 1;
                }
                let label = format!(
                    "{} {} {}: {pct:.1} ± {pm:.1} vs {:.1}",
                    case.name,
                    lighting.label(),
                    k.as_str(),
                    truth.percent(k)
                );
                if err.abs() > worst.0 {
                    worst = (err.abs(), label.clone());
                }
                if err.abs() > 5.0 {
                    accuracy_misses.push(label);
                    scans_missing.insert(case.name.clone());
                }
            }
            n += 1;
        }
        for k in TissueClass::ALL {
            let v: Vec<f64> = res.iter().map(|(_, sh)| sh[k.index()].0).collect();
            let spread = v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min);
            spreads.push(spread);
            if spread > spread_worst.0 {
                spread_worst = (spread, format!("{} {}", case.name, k.as_str()));
            }
            if spread > 6.0 {
                // Three points either side of the middle.
                misses.push(format!(
                    "{} {}: spread {spread:.1} points across lights and exposures",
                    case.name,
                    k.as_str()
                ));
            } else {
                for (l, sh) in res {
                    let mid =
                        0.5 * (v.iter().copied().fold(f64::MIN, f64::max) + v.iter().copied().fold(f64::MAX, f64::min));
                    if (sh[k.index()].0 - mid).abs() > 3.0 {
                        misses.push(format!(
                            "{} {} {}: {:.1} vs mid {mid:.1}",
                            case.name,
                            l.label(),
                            k.as_str(),
                            sh[k.index()].0
                        ));
                    }
                }
            }
        }
    }
    let mae: Vec<String> =
        TissueClass::ALL.iter().map(|k| format!("{} {:.2}", k.as_str(), abs_err[k.index()] / n as f64)).collect();
    let mean_spread = spreads.iter().sum::<f64>() / spreads.len() as f64;
    println!("tissue: {n} analyses ({} scans × 3 lights)", prepared.len());
    println!("tissue: mean absolute error (points): {}", mae.join(", "));
    println!("tissue: worst error {:.2} points ({})", worst.0, worst.1);
    println!(
        "tissue: ± intervals hold the truth in {covered} of {intervals} ({:.1} %)",
        100.0 * covered as f64 / intervals as f64
    );
    ratios.sort_by(f64::total_cmp);
    let q = |f: f64| ratios[((ratios.len() - 1) as f64 * f) as usize];
    println!("tissue: |error| / ± at the 50th, 90th, 95th percentile: {:.2}, {:.2}, {:.2}", q(0.5), q(0.9), q(0.95));
    println!(
        "tissue: spread across 3 lights × 3 exposures: mean {mean_spread:.2}, worst {:.2} points ({})",
        spread_worst.0, spread_worst.1
    );
    println!(
        "tissue: every class within ±5 points on {} of {} scans; misses:\n{}",
        prepared.len() - scans_missing.len(),
        prepared.len(),
        accuracy_misses.join("\n")
    );
    assert!(misses.is_empty(), "{} consistency misses:\n{}", misses.len(), misses.join("\n"));
    assert!(
        scans_missing.is_empty(),
        "±5 points missed on {} scans:\n{}",
        scans_missing.len(),
        accuracy_misses.join("\n")
    );
    for (k, e) in TissueClass::ALL.iter().zip(abs_err) {
        assert!(e / n as f64 <= 2.0, "{} mean absolute error {:.2} points", k.as_str(), e / n as f64);
    }
    assert!(covered as f64 >= 0.9 * intervals as f64, "± intervals hold the truth in only {covered} of {intervals}");
}

/// One small scan for the error and correction tests.
fn one() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| {
        let case = evaluation_cases(1).into_iter().nth(1).expect("a case");
        prepare(&case, &ColourScanConfig { frames: 16, colour_every: 2, colour_scale: 1.5 }).expect("prepared")
    })
}

#[test]
fn no_colour_is_a_clear_error() {
    let p = one();
    let colours = colour_vertices(&p.mesh, &[]);
    let err = tissue_composition(&p.mesh, &colours, &p.wound, default_classifier(), &[]).expect_err("no colour");
    assert_eq!(err, TissueError::NoColour);
    assert_eq!(err.code(), "no_colour");
}

/// The scan's colours with every vertex off the wound surface changed by `f`.
fn with_periwound(p: &Prepared, f: impl Fn(&mut [f32; 3], &mut f32)) -> VertexColours {
    let images = p.scan.images(&Lighting::NEUTRAL, 3);
    let views = p.views(&images);
    let mut colours = colour_vertices(&p.mesh, &views);
    let wound =
        tissue_analysis(&p.mesh, &colours, &p.wound, default_classifier(), &[]).expect("classes").vertex_classes;
    for (i, class) in wound.iter().enumerate() {
        if class.is_none() {
            f(&mut colours.linear_rgb[i], &mut colours.weight[i]);
        }
    }
    colours
}

#[test]
fn a_periwound_never_seen_or_covered_dark_is_a_clear_error() {
    let p = one();
    let unseen = with_periwound(p, |_, w| *w = 0.0);
    let err = tissue_composition(&p.mesh, &unseen, &p.wound, default_classifier(), &[]).expect_err("no skin");
    assert_eq!(err.code(), "no_periwound");
    let dark = with_periwound(p, |c, _| *c = [0.001, 0.001, 0.001]);
    let err = tissue_composition(&p.mesh, &dark, &p.wound, default_classifier(), &[]).expect_err("dark skin");
    assert_eq!(err.code(), "periwound_too_dark", "{err}");
}

#[test]
fn corrections_override_the_classes_inside_their_region() {
    let p = one();
    let images = p.scan.images(&Lighting::NEUTRAL, 3);
    let views = p.views(&images);
    let colours = colour_vertices(&p.mesh, &views);
    let classifier = default_classifier();
    let before = tissue_composition(&p.mesh, &colours, &p.wound, classifier, &[]).expect("composition");
    assert!(before.share(TissueClass::Other).percent < 1.0);
    // The whole wound called "other".
    let all = TissueCorrection { outline_world: p.wound.outline_world.clone(), class: TissueClass::Other };
    let after = tissue_composition(&p.mesh, &colours, &p.wound, classifier, &[all]).expect("composition");
    // Up to the rim: a rim triangle inside the outline can have a vertex just outside.
    assert!(after.share(TissueClass::Other).percent > 97.0, "{:?}", after.share(TissueClass::Other));
    // A disc around the centre (a third of the outline's radius) called eschar: the
    // vertices inside become eschar, the rest keep their class.
    let c = p.wound.centre_world;
    let n = p.wound.normal_world;
    let e1 = n.any_perpendicular();
    let e2 = n.cross(e1);
    let r = p.wound.outline_world.iter().map(|q| (*q - c).norm()).fold(f64::MAX, f64::min) / 3.0;
    let disc: Vec<_> = (0..32)
        .map(|i| {
            let a = f64::from(i) * std::f64::consts::TAU / 32.0;
            c + e1 * (r * a.cos()) + e2 * (r * a.sin())
        })
        .collect();
    let corr = TissueCorrection { outline_world: disc, class: TissueClass::Eschar };
    let base = tissue_analysis(&p.mesh, &colours, &p.wound, classifier, &[]).expect("classes").vertex_classes;
    let corrected = tissue_analysis(&p.mesh, &colours, &p.wound, classifier, &[corr]).expect("classes").vertex_classes;
    let (mut inside, mut changed_outside) = (0, 0);
    for (i, (b, a)) in base.iter().zip(&corrected).enumerate() {
        let q = p.mesh.positions[i];
        let v = coherency_recon::Vec3::new(f64::from(q[0]), f64::from(q[1]), f64::from(q[2])) - c;
        let planar = (v - n * v.dot(n)).norm();
        if a.is_some() && planar < r * 0.95 {
            assert_eq!(*a, Some(TissueClass::Eschar));
            inside += 1;
        } else if planar > r * 1.05 && a != b {
            changed_outside += 1;
        }
    }
    assert!(inside > 20, "{inside} vertices inside the correction");
    assert_eq!(changed_outside, 0);
}
