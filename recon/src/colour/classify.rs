//! The tissue classifier shipped with the crate: a small multilayer perceptron (or, with no
//! hidden layer, multinomial logistic regression) on [`FEATURES`] colour and texture
//! features of a calibrated surface sample, its weights in `weights.json` (provenance in
//! the file's `provenance` and in `docs/measurement.md`; trained by `recon/train/`).

use std::sync::OnceLock;

use super::{TissueClassifier, TissueSample};

/// Number of features [`features`] computes.
pub const FEATURES: usize = 18;

/// The classifier's inputs for one sample: L*, a*, b* (÷100), chroma (÷100), the hue
/// direction `(a*, b*) / (C* + 5)`, log chromaticities `ln(R/G)`, `ln(B/G)`, `ln Y`, the
/// neighbourhood median L*, a*, b* (÷100), the neighbourhood median absolute deviation of
/// `ln Y`, `ln(R/G)`, `ln(B/G)` (×5), and the periwound's uncalibrated `ln Y`, `ln(R/G)`,
/// `ln(B/G)` (the skin tone under the scan's light). The neighbourhood's robust statistics
/// (not its mean and standard deviation) keep a boundary from reading as texture or
/// blending the two tissues' colours; the Lab spreads are not used: they grow with the
/// calibration gains.
pub fn features(s: &TissueSample) -> [f32; FEATURES] {
    let [l, a, b] = s.lab;
    let c = (a * a + b * b).sqrt();
    let [ly, lrg, lbg] = super::log_chroma(s.rgb);
    [
        l / 100.0,
        a / 100.0,
        b / 100.0,
        c / 100.0,
        a / (c + 5.0),
        b / (c + 5.0),
        lrg,
        lbg,
        ly,
        s.neighbourhood_median[0] / 100.0,
        s.neighbourhood_median[1] / 100.0,
        s.neighbourhood_median[2] / 100.0,
        s.neighbourhood_log_mad[0] * 5.0,
        s.neighbourhood_log_mad[1] * 5.0,
        s.neighbourhood_log_mad[2] * 5.0,
        s.periwound_log[0],
        s.periwound_log[1],
        s.periwound_log[2],
    ]
}

/// A classifier read from the weights format of `weights.json`.
#[derive(Debug, Clone)]
pub struct LearnedClassifier {
    name: String,
    mean: Vec<f32>,
    scale: Vec<f32>,
    /// Hidden layer, `hidden × FEATURES`, row-major (empty: logistic regression).
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// Output layer, `5 × inputs` (inputs = hidden units, or FEATURES).
    w2: Vec<f32>,
    b2: Vec<f32>,
}

fn floats(v: &serde_json::Value, key: &str) -> Result<Vec<f32>, String> {
    let arr = v.get(key).and_then(|x| x.as_array()).ok_or_else(|| format!("missing array {key}"))?;
    let mut out = Vec::new();
    for x in arr {
        match x {
            serde_json::Value::Array(row) => {
                for y in row {
                    out.push(y.as_f64().ok_or_else(|| format!("{key}: not a number"))? as f32);
                }
            }
            other => out.push(other.as_f64().ok_or_else(|| format!("{key}: not a number"))? as f32),
        }
    }
    Ok(out)
}

impl LearnedClassifier {
    /// Parses the weights format (`name`, `mean`, `scale` per feature, `w1` hidden×features,
    /// `b1`, `w2` 5×inputs, `b2`), checking every shape.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let name = v.get("name").and_then(|x| x.as_str()).ok_or("missing name")?.to_string();
        let (mean, scale) = (floats(&v, "mean")?, floats(&v, "scale")?);
        let (w1, b1, w2, b2) = (floats(&v, "w1")?, floats(&v, "b1")?, floats(&v, "w2")?, floats(&v, "b2")?);
        let inputs = if b1.is_empty() { FEATURES } else { b1.len() };
        if mean.len() != FEATURES
            || scale.len() != FEATURES
            || w1.len() != b1.len() * FEATURES
            || b2.len() != 5
            || w2.len() != 5 * inputs
            || scale.iter().any(|s| *s <= 0.0)
        {
            return Err("weights have the wrong shape".into());
        }
        Ok(LearnedClassifier { name, mean, scale, w1, b1, w2, b2 })
    }

    /// Class probabilities for raw features.
    pub fn predict(&self, f: &[f32; FEATURES]) -> [f32; 5] {
        let x: Vec<f32> = (0..FEATURES).map(|i| (f[i] - self.mean[i]) / self.scale[i]).collect();
        let hidden: Vec<f32> = if self.b1.is_empty() {
            x
        } else {
            self.b1
                .iter()
                .enumerate()
                .map(|(h, b)| {
                    (b + self.w1[h * FEATURES..(h + 1) * FEATURES].iter().zip(&x).map(|(w, v)| w * v).sum::<f32>())
                        .tanh()
                })
                .collect()
        };
        let n = hidden.len();
        let mut z = [0.0f32; 5];
        for (k, zk) in z.iter_mut().enumerate() {
            *zk = self.b2[k] + self.w2[k * n..(k + 1) * n].iter().zip(&hidden).map(|(w, v)| w * v).sum::<f32>();
        }
        softmax(z)
    }
}

/// Numerically stable softmax.
pub(crate) fn softmax(z: [f32; 5]) -> [f32; 5] {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e = z.map(|v| (v - m).exp());
    let s: f32 = e.iter().sum();
    e.map(|v| v / s)
}

impl TissueClassifier for LearnedClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn classify(&self, sample: &TissueSample) -> [f32; 5] {
        self.predict(&features(sample))
    }
}

/// The weights shipped with the crate.
const WEIGHTS: &str = include_str!("weights.json");

/// The classifier shipped with the crate (weights in `weights.json`).
pub fn default_classifier() -> &'static dyn TissueClassifier {
    static C: OnceLock<LearnedClassifier> = OnceLock::new();
    C.get_or_init(|| match LearnedClassifier::from_json(WEIGHTS) {
        Ok(c) => c,
        // The file is part of the crate and checked by a unit test; a broken one is a
        // build defect, not a run-time condition.
        Err(e) => panic!("recon/src/colour/weights.json: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{linear_to_lab, TissueClass};
    use super::*;

    fn sample(srgb: [u8; 3]) -> TissueSample {
        let rgb = srgb.map(|v| super::super::srgb_to_linear(f32::from(v) / 255.0));
        let lab = linear_to_lab(rgb);
        TissueSample {
            rgb,
            lab,
            neighbourhood_mean: lab,
            neighbourhood_std: [3.0, 3.0, 3.0],
            neighbourhood_median: lab,
            neighbourhood_log_mad: [0.05, 0.05, 0.05],
            // A medium skin at the colour phantoms' nominal exposure (half scale).
            periwound_log: super::super::log_chroma(super::super::REFERENCE_SKIN_LINEAR.map(|v| (v * 0.5) as f32)),
        }
    }

    #[test]
    fn the_shipped_weights_load_and_give_probabilities() {
        let c = default_classifier();
        assert!(c.name().contains('@'));
        let p = c.classify(&sample([170, 40, 45]));
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn typical_colours_get_their_class() {
        let c = default_classifier();
        let argmax = |p: [f32; 5]| TissueClass::ALL[(0..5).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap_or(0)];
        assert_eq!(argmax(c.classify(&sample([180, 45, 50]))), TissueClass::Granulation);
        assert_eq!(argmax(c.classify(&sample([225, 200, 130]))), TissueClass::Slough);
        assert_eq!(argmax(c.classify(&sample([40, 30, 25]))), TissueClass::Eschar);
    }
}
