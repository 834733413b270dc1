//! Clinicians' tissue corrections as training data: the server's export
//! (`GET /v1/admin/tissue-corrections.ndjson`, one correction per line with its class and the
//! calibrated [`TissueSample`]s of the wound inside its region) turned into the classifier's
//! rows — [`features`] of each sample, labelled with the correction's class — the rows
//! `recon/train/train.sh` adds to the phantoms' when `CORRECTIONS` names an export
//! (`recon/examples/correction_samples.rs`).

use serde_json::Value;

use super::{features, TissueClass, TissueSample, FEATURES};

/// The training rows of an export, and what was left out of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CorrectionRows {
    /// `(features, class)`, one per usable sample, in the export's order.
    pub rows: Vec<([f32; FEATURES], TissueClass)>,
    /// Lines that are not JSON or name no known class.
    pub skipped_corrections: usize,
    /// Samples whose fields are not three numbers each.
    pub skipped_samples: usize,
}

fn triple(v: &Value, key: &str) -> Option<[f32; 3]> {
    match v.get(key)?.as_array()?.as_slice() {
        [x, y, z] => Some([x.as_f64()? as f32, y.as_f64()? as f32, z.as_f64()? as f32]),
        _ => None,
    }
}

/// A sample as the export writes it.
pub fn sample_of_json(v: &Value) -> Option<TissueSample> {
    let s = TissueSample {
        rgb: triple(v, "rgb")?,
        lab: triple(v, "lab")?,
        neighbourhood_mean: triple(v, "neighbourhood_mean")?,
        neighbourhood_std: triple(v, "neighbourhood_std")?,
        neighbourhood_median: triple(v, "neighbourhood_median")?,
        neighbourhood_log_mad: triple(v, "neighbourhood_log_mad")?,
        periwound_log: triple(v, "periwound_log")?,
    };
    features(&s).iter().all(|f| f.is_finite()).then_some(s)
}

/// Reads an export (pages concatenated; blank lines ignored).
pub fn correction_rows(ndjson: &str) -> CorrectionRows {
    let mut out = CorrectionRows::default();
    for line in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = serde_json::from_str::<Value>(line).ok();
        let class = parsed.as_ref().and_then(|c| c.get("class")?.as_str()).and_then(TissueClass::parse);
        let (Some(c), Some(class)) = (parsed.as_ref(), class) else {
            out.skipped_corrections += 1;
            continue;
        };
        for s in c.get("samples").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            match sample_of_json(s) {
                Some(s) => out.rows.push((features(&s), class)),
                None => out.skipped_samples += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_becomes_rows_labelled_with_each_corrections_class() {
        let s = serde_json::json!({"rgb": [0.4, 0.1, 0.1], "lab": [40.0, 45.0, 25.0],
            "neighbourhood_mean": [40.0, 44.0, 24.0], "neighbourhood_std": [2.0, 3.0, 2.0],
            "neighbourhood_median": [40.0, 45.0, 25.0], "neighbourhood_log_mad": [0.05, 0.04, 0.06],
            "periwound_log": [-1.0, 0.6, -0.4]});
        let bad = serde_json::json!({"rgb": [0.4, 0.1], "lab": [40.0, 45.0, 25.0]});
        let text = [
            serde_json::json!({"class": "slough", "samples": [s, s]}).to_string(),
            String::new(),
            serde_json::json!({"class": "eschar", "samples": [s, bad]}).to_string(),
            serde_json::json!({"class": "necrosis", "samples": [s]}).to_string(),
            "not json".to_owned(),
        ]
        .join("\n");
        let r = correction_rows(&text);
        let classes: Vec<TissueClass> = r.rows.iter().map(|(_, c)| *c).collect();
        assert_eq!(classes, [TissueClass::Slough, TissueClass::Slough, TissueClass::Eschar]);
        assert_eq!((r.skipped_corrections, r.skipped_samples), (2, 1));
        let sample = sample_of_json(&s).expect("a sample");
        assert_eq!(r.rows[0].0, features(&sample));
        assert_eq!(sample.periwound_log, [-1.0, 0.6, -0.4]);
    }
}
