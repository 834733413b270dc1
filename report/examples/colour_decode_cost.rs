//! What a scan's finish spends on its colour JPEGs before any tissue analysis, on one core:
//! `photo::score` (decoded at reduced size, sharpness and exposure) for each of the 24
//! frames scored, and `photo::decode_rgb_at_most(…, 640)` for each of the 12 views kept
//! (`actors/src/reconstruction/colour.rs`). The image is 1920×1440 (ARKit's
//! `capturedImage`), a textured synthetic close-up encoded with the project's encoder at
//! quantiser step 7 (about the loadtest's colour frame's size). Prints medians of RUNS:
//! `cargo run --release -p coherency-report --example colour_decode_cost -- [RUNS]`.
use std::time::Instant;

use coherency_report::jpeg_encode::encode_rgb;
use coherency_report::photo::{decode_rgb_at_most, score};

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(9);
    let (w, h) = (1920usize, 1440usize);
    let mut rgb = vec![0u8; w * h * 3];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for y in 0..h {
        for x in 0..w {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let grain = (state % 5) as f32 - 2.0;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let r = ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
            let lump = ((x as f32 / 9.0).sin() * (y as f32 / 11.0).cos()) * 18.0;
            let base = if r < 0.22 { [170.0 + lump, 45.0 + lump * 0.5, 48.0] } else { [205.0, 158.0, 128.0] };
            let i = 3 * (y * w + x);
            for c in 0..3 {
                rgb[i + c] = (base[c] + grain).clamp(0.0, 255.0) as u8;
            }
        }
    }
    let jpeg = encode_rgb(&rgb, w as u16, h as u16, 7).expect("encodes");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &dyn Fn()| {
        f();
        median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let s = time(&|| {
        std::hint::black_box(score(&jpeg).expect("scores"));
    });
    let d = time(&|| {
        std::hint::black_box(decode_rgb_at_most(&jpeg, 640).expect("decodes"));
    });
    println!(
        "{w}×{h}, {} B: score {s:.1} ms, decode to 640 px {d:.1} ms; a finish's 24 scores + 12 decodes = {:.0} ms (median of {runs})",
        jpeg.len(),
        24.0 * s + 12.0 * d
    );
}
