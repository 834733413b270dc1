//! Appends clinicians' tissue corrections, as the server exports them
//! (`GET /v1/admin/tissue-corrections.ndjson`, pages concatenated), to a training CSV in the
//! format of `tissue_samples` (the classifier's features, then the class index):
//! `correction_samples CORRECTIONS.ndjson SAMPLES.csv` (`colour::correction_rows`).
//! `recon/train/train.sh` runs it when `CORRECTIONS` names an export. Prints the rows per
//! class and what was skipped to standard error.
use std::io::Write;

use coherency_recon::colour::{correction_rows, TissueClass, FEATURES};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: correction_samples CORRECTIONS.ndjson SAMPLES.csv");
        std::process::exit(2);
    };
    let r = correction_rows(&std::fs::read_to_string(input).expect("read the corrections"));
    let fresh = !std::fs::metadata(output).is_ok_and(|m| m.len() > 0);
    let file = std::fs::OpenOptions::new().create(true).append(true).open(output).expect("open the samples");
    let mut out = std::io::BufWriter::new(file);
    if fresh {
        let header: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
        writeln!(out, "{},class", header.join(",")).expect("write");
    }
    let mut per_class = [0usize; 5];
    for (f, class) in &r.rows {
        let f: Vec<String> = f.iter().map(|x| format!("{x:.5}")).collect();
        writeln!(out, "{},{}", f.join(","), class.index()).expect("write");
        per_class[class.index()] += 1;
    }
    out.flush().expect("write");
    for c in TissueClass::ALL {
        eprintln!("{:<12} {}", c.as_str(), per_class[c.index()]);
    }
    eprintln!("skipped: {} corrections, {} samples", r.skipped_corrections, r.skipped_samples);
}
