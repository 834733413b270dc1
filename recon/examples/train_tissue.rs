//! Trains the tissue classifier shipped in `recon/src/colour/weights.json` from the CSV of
//! `tissue_samples` (see `recon/train/train.sh`): a multilayer perceptron with one tanh
//! hidden layer, softmax output, cross-entropy with class weights ∝ 1/√frequency (capped at
//! `CLASS_CAP`, default 2), Adam,
//! mini-batches, a 10 % held-out split reported at the end. Deterministic for a seed.
//!
//! `train_tissue SAMPLES.csv OUT.json HIDDEN EPOCHS SEED PROVENANCE_JSON`

// Index loops read as the formulas they implement.
#![allow(clippy::needless_range_loop)]

use coherency_recon::colour::{LearnedClassifier, FEATURES};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const K: usize = 5;

struct Net {
    h: usize,
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
}

impl Net {
    fn params(&mut self) -> [&mut Vec<f64>; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    fn forward(&self, x: &[f64]) -> (Vec<f64>, [f64; K]) {
        let hid: Vec<f64> = (0..self.h)
            .map(|j| (self.b1[j] + (0..FEATURES).map(|i| self.w1[j * FEATURES + i] * x[i]).sum::<f64>()).tanh())
            .collect();
        let mut z = [0.0; K];
        for k in 0..K {
            z[k] = self.b2[k] + (0..self.h).map(|j| self.w2[k * self.h + j] * hid[j]).sum::<f64>();
        }
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e = z.map(|v| (v - m).exp());
        let s: f64 = e.iter().sum();
        (hid, e.map(|v| v / s))
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (input, output) = (&a[1], &a[2]);
    let h: usize = a[3].parse().expect("hidden units");
    let epochs: usize = a[4].parse().expect("epochs");
    let seed: u64 = a[5].parse().expect("seed");
    let provenance: serde_json::Value = serde_json::from_str(&a[6]).expect("provenance JSON");

    let text = std::fs::read_to_string(input).expect("read samples");
    let mut data: Vec<(Vec<f64>, usize)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let v: Vec<f64> = l.split(',').filter_map(|x| x.parse().ok()).collect();
            (v.len() == FEATURES + 1).then(|| (v[..FEATURES].to_vec(), v[FEATURES] as usize))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    data.shuffle(&mut rng);
    let n_val = data.len() / 10;
    let (val, train) = data.split_at(n_val);
    let mut mean = [0.0; FEATURES];
    let mut sd = [0.0; FEATURES];
    for (x, _) in train {
        for i in 0..FEATURES {
            mean[i] += x[i] / train.len() as f64;
        }
    }
    for (x, _) in train {
        for i in 0..FEATURES {
            sd[i] += (x[i] - mean[i]).powi(2) / train.len() as f64;
        }
    }
    let sd: Vec<f64> = sd.iter().map(|v| v.sqrt().max(1e-6)).collect();
    let norm = |x: &[f64]| -> Vec<f64> { (0..FEATURES).map(|i| (x[i] - mean[i]) / sd[i]).collect() };
    // DROP=i,j,…: features left out (held at their mean, weights 0), to compare feature sets
    // on one sample dump.
    let drop: Vec<usize> = std::env::var("DROP")
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).filter(|i| *i < FEATURES).collect())
        .unwrap_or_default();
    let norm = |x: &[f64]| -> Vec<f64> {
        let mut v = norm(x);
        for &i in &drop {
            v[i] = 0.0;
        }
        v
    };
    let train: Vec<(Vec<f64>, usize)> = train.iter().map(|(x, c)| (norm(x), *c)).collect();
    let val: Vec<(Vec<f64>, usize)> = val.iter().map(|(x, c)| (norm(x), *c)).collect();
    let mut counts = [0.0f64; K];
    for (_, c) in &train {
        counts[*c] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    // Rare classes count more, up to CLASS_CAP (default 2): more would teach the net to
    // call a rare class wherever it is unsure.
    let cap: f64 = std::env::var("CLASS_CAP").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let cw: Vec<f64> =
        counts.iter().map(|c| if *c > 0.0 { (total / K as f64 / c).sqrt().min(cap) } else { 0.0 }).collect();
    eprintln!("train {} val {} counts {:?} class weights {:?}", train.len(), val.len(), counts, cw);

    let init = |rng: &mut StdRng, n: usize, fan: usize| -> Vec<f64> {
        (0..n).map(|_| rng.gen_range(-1.0..1.0) * (3.0 / fan as f64).sqrt()).collect()
    };
    let mut w1 = init(&mut rng, h * FEATURES, FEATURES);
    for j in 0..h {
        for &i in &drop {
            w1[j * FEATURES + i] = 0.0;
        }
    }
    let mut net = Net { h, w1, b1: vec![0.0; h], w2: init(&mut rng, K * h, h), b2: vec![0.0; K] };
    let sizes = [h * FEATURES, h, K * h, K];
    let mut m: Vec<Vec<f64>> = sizes.iter().map(|s| vec![0.0; *s]).collect();
    let mut v: Vec<Vec<f64>> = sizes.iter().map(|s| vec![0.0; *s]).collect();
    let (lr, b1, b2, eps, l2) = (0.01, 0.9, 0.999, 1e-8, 1e-4);
    let batch = 256;
    let mut step = 0i32;
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        let mut loss = 0.0;
        for chunk in order.chunks(batch) {
            let mut g: Vec<Vec<f64>> = sizes.iter().map(|s| vec![0.0; *s]).collect();
            for &idx in chunk {
                let (x, c) = &train[idx];
                let (hid, p) = net.forward(x);
                loss -= cw[*c] * p[*c].max(1e-12).ln();
                let dz: Vec<f64> = (0..K).map(|k| cw[*c] * (p[k] - if k == *c { 1.0 } else { 0.0 })).collect();
                let mut dh = vec![0.0; h];
                for k in 0..K {
                    g[3][k] += dz[k];
                    for j in 0..h {
                        g[2][k * h + j] += dz[k] * hid[j];
                        dh[j] += dz[k] * net.w2[k * h + j];
                    }
                }
                for j in 0..h {
                    let da = dh[j] * (1.0 - hid[j] * hid[j]);
                    g[1][j] += da;
                    for i in 0..FEATURES {
                        g[0][j * FEATURES + i] += da * x[i];
                    }
                }
            }
            step += 1;
            let bs = chunk.len() as f64;
            for (pi, p) in net.params().into_iter().enumerate() {
                for q in 0..p.len() {
                    let grad = g[pi][q] / bs + if pi % 2 == 0 { l2 * p[q] } else { 0.0 };
                    m[pi][q] = b1 * m[pi][q] + (1.0 - b1) * grad;
                    v[pi][q] = b2 * v[pi][q] + (1.0 - b2) * grad * grad;
                    let mh = m[pi][q] / (1.0 - b1.powi(step));
                    let vh = v[pi][q] / (1.0 - b2.powi(step));
                    p[q] -= lr * mh / (vh.sqrt() + eps);
                }
            }
        }
        if epoch % 5 == 4 || epoch + 1 == epochs {
            eprintln!("epoch {} loss {:.4}", epoch + 1, loss / train.len() as f64);
        }
    }
    let mut confusion = [[0usize; K]; K];
    for (x, c) in &val {
        let (_, p) = net.forward(x);
        let best = (0..K).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap_or(0);
        confusion[*c][best] += 1;
    }
    let correct: usize = (0..K).map(|k| confusion[k][k]).sum();
    eprintln!(
        "held-out accuracy {:.3}; confusion (row = truth) {:?}",
        correct as f64 / val.len().max(1) as f64,
        confusion
    );

    let rows = |w: &[f64], cols: usize| -> Vec<Vec<f64>> {
        w.chunks(cols).map(|r| r.iter().map(|v| (v * 1e6).round() / 1e6).collect()).collect()
    };
    let mut prov = provenance;
    prov["training_rows"] = serde_json::json!(train.len());
    prov["held_out_rows"] = serde_json::json!(val.len());
    prov["held_out_accuracy"] = serde_json::json!((correct as f64 / val.len().max(1) as f64 * 1000.0).round() / 1000.0);
    prov["model"] = serde_json::json!(format!("MLP {FEATURES}-{h}-{K} tanh/softmax, Adam lr {lr}, batch {batch}, {epochs} epochs, L2 {l2}, class weights 1/sqrt(freq) capped at {cap}, seed {seed}"));
    if !drop.is_empty() {
        prov["features_left_out"] = serde_json::json!(drop);
    }
    let out = serde_json::json!({
        "name": prov["name"].clone(),
        "provenance": prov,
        "mean": mean.iter().map(|v| (v * 1e6).round() / 1e6).collect::<Vec<_>>(),
        "scale": sd.iter().map(|v| (v * 1e6).round() / 1e6).collect::<Vec<_>>(),
        "w1": rows(&net.w1, FEATURES),
        "b1": net.b1.iter().map(|v| (v * 1e6).round() / 1e6).collect::<Vec<_>>(),
        "w2": rows(&net.w2, h),
        "b2": net.b2.iter().map(|v| (v * 1e6).round() / 1e6).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&out).expect("serialise");
    LearnedClassifier::from_json(&text).expect("the written weights load");
    std::fs::write(output, text + "\n").expect("write weights");
}
