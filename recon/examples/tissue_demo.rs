//! Renders one evaluation case and prints its tissue composition against the truth, and
//! writes the middle colour frame as PPM (for eyeballing): `cargo run -p coherency-recon
//! --example tissue_demo -- [CASE_INDEX] [OUT.ppm]`.

use std::time::Instant;

use coherency_recon::colour::{default_classifier, TissueClass};
use coherency_recon::phantom::colour::{Illuminant, Lighting};
use coherency_recon::phantom::tissue::{evaluation_cases, prepare, ColourScanConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idx: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let cases = evaluation_cases(5);
    let case = &cases[idx % cases.len()];
    let t = Instant::now();
    let prepared = match prepare(case, &ColourScanConfig::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", case.name);
            std::process::exit(1);
        }
    };
    println!(
        "{}: prepared in {:.0} ms, {} vertices",
        case.name,
        t.elapsed().as_secs_f64() * 1e3,
        prepared.mesh.positions.len()
    );
    let truth = prepared.phantom.tissue_truth();
    for lighting in [
        Lighting::NEUTRAL,
        Lighting { illuminant: Illuminant::Warm, ev: 0.0 },
        Lighting { illuminant: Illuminant::Cold, ev: 0.0 },
        Lighting { illuminant: Illuminant::Neutral, ev: -1.0 },
        Lighting { illuminant: Illuminant::Neutral, ev: 1.0 },
    ] {
        let t = Instant::now();
        let a = prepared.analyse(&lighting, 7, default_classifier(), &[]);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match &a.analysis {
            Ok(r) => {
                if lighting == Lighting::NEUTRAL {
                    let mut confusion = [[0usize; 5]; 5];
                    for (i, c) in r.vertex_classes.iter().enumerate() {
                        let (Some(c), q) = (c, prepared.mesh.positions[i]) else { continue };
                        let v = coherency_recon::Vec3::new(f64::from(q[0]), f64::from(q[1]), f64::from(q[2]));
                        if let Some(t) = prepared.phantom.class_at_world(v) {
                            confusion[t.index()][c.index()] += 1;
                        }
                    }
                    println!("confusion (row = truth, vertices): {confusion:?}");
                    let (_, samples) =
                        coherency_recon::colour::wound_samples(&prepared.mesh, &a.colours, &prepared.wound)
                            .expect("samples");
                    let mut groups: std::collections::BTreeMap<(usize, usize), (usize, [f64; 9])> = Default::default();
                    for (v, smp) in &samples {
                        let q = prepared.mesh.positions[*v as usize];
                        let w = coherency_recon::Vec3::new(f64::from(q[0]), f64::from(q[1]), f64::from(q[2]));
                        let (Some(t), Some(c)) = (prepared.phantom.class_at_world(w), r.vertex_classes[*v as usize])
                        else {
                            continue;
                        };
                        let e = groups.entry((t.index(), c.index())).or_insert((0, [0.0; 9]));
                        e.0 += 1;
                        for k in 0..3 {
                            e.1[k] += f64::from(smp.rgb[k]);
                            e.1[3 + k] += f64::from(smp.lab[k]);
                            e.1[6 + k] += f64::from(smp.neighbourhood_std[k]);
                        }
                    }
                    for ((t, c), (n, acc)) in groups {
                        let m: Vec<String> = acc.iter().map(|x| format!("{:.2}", x / n as f64)).collect();
                        println!(
                            "truth {t} -> {c}: {n:5}  rgb {} lab {} std {}",
                            m[..3].join(" "),
                            m[3..6].join(" "),
                            m[6..].join(" ")
                        );
                    }
                }
                let c = &r.composition;
                let line: Vec<String> = TissueClass::ALL
                    .iter()
                    .map(|&k| {
                        format!(
                            "{} {:.1}±{:.1} (truth {:.1})",
                            k.as_str(),
                            c.share(k).percent,
                            c.share(k).percent_pm,
                            truth.percent(k)
                        )
                    })
                    .collect();
                println!(
                    "{:<16} {:.0} ms  gains {:.2} {:.2} {:.2} seen {:.2}  {}",
                    lighting.label(),
                    ms,
                    c.calibration.gains[0],
                    c.calibration.gains[1],
                    c.calibration.gains[2],
                    c.coloured_fraction,
                    line.join(", ")
                );
            }
            Err(e) => println!("{:<16} error {e}", lighting.label()),
        }
        if let (Some(path), true) = (args.get(2), lighting == Lighting::NEUTRAL) {
            let (_, im) = &a.images[a.images.len() / 2];
            let mut out = format!("P6\n{} {}\n255\n", im.width, im.height).into_bytes();
            out.extend_from_slice(&im.data);
            std::fs::write(path, out).expect("write the image");
        }
    }
}
