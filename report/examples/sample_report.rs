//! Writes a sample wound report (50 assessments, a real phantom mesh) to the path given, to
//! look at the layout: `cargo run -p coherency-report --example sample_report -- /tmp/r.pdf`.

use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_recon::ScanFusion;
use coherency_report::{render, ChartData, ChartPoint, LatestMesh, Row, Tone, Verdict, WoundReport};

fn real_mesh() -> Vec<u8> {
    let phantom = Phantom::new(presets::spherical_cap(false));
    let frames: Vec<_> =
        phantom.scan(&ScanConfig::iphone(1)).frames.into_iter().enumerate().map(|(i, f)| (i as u64 + 1, f)).collect();
    let fused = ScanFusion::fuse_all(&frames, &mut || {}).expect("the phantom fuses");
    fused.mesh_and_measure(&mut || {}).glb
}

fn report(n: usize, glb: Option<Vec<u8>>) -> WoundReport {
    let area = |i: usize| 480.0 - 2.0 * i as f64;
    WoundReport {
        generated: "2026-12-07 09:00 UTC".into(),
        patient: vec![("Name".into(), "Ada Example".into()), ("Born".into(), "1950-02-03".into())],
        wound: vec![
            ("Site".into(), "Sacrum (midline), SNOMED CT 54735007".into()),
            ("Type".into(), "Pressure injury".into()),
        ],
        verdict: Verdict {
            tone: Tone::Bad,
            text: "Not on track: the area fell by 3.1 ± 2.0 % by day 28, less than the 40 % expected at four weeks."
                .into(),
        },
        figures: vec![
            "Not closing: the area trend is flat or growing.".into(),
            "Area rate: −2.0 ± 0.5 mm²/week (linear).".into(),
        ],
        chart: ChartData {
            points: (0..n)
                .map(|i| ChartPoint { day: 3.0 * i as f64, value: area(i), pm: 18.0, counted: i % 9 != 4 })
                .collect(),
            threshold: Some((288.0, "−40 % at four weeks".into())),
            verdict_day: 28.0,
            trend: Some((480.0, -0.3)),
            closure: None,
        },
        rows: (0..n)
            .map(|i| Row {
                cells: [
                    format!("2026-{:02}-{:02}", 1 + i / 28, 1 + i % 28),
                    format!("{}", 3 * i),
                    "automatic".into(),
                    format!("{:.1} ± 18.0", area(i)),
                    "720 ± 68".into(),
                    "2.70 ± 0.30".into(),
                    format!("{:+.1} ± 3.1", -0.4 * i as f64),
                    if i % 9 == 4 { "excluded".into() } else { "counted".into() },
                ],
                note: (i % 9 == 4).then(|| "Excluded: the dressing hid part of the edge.".into()),
                muted: i % 9 == 4,
            })
            .collect(),
        mesh: glb.map(|glb| LatestMesh { glb, taken: "2026-12-05".into() }),
    }
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "sample-report.pdf".into());
    let out = render(&report(50, Some(real_mesh()))).expect("renders");
    std::fs::write(&path, &out.pdf).expect("writes");
    println!("{path}: {} pages, {} bytes", out.pages, out.pdf.len());
}
