//! Finding the wound in a height field: which depression, and which cells belong to it.
//!
//! Every threshold is relative: to the noise of the depth `D = s − h` (from the skin fit's
//! residual and the fused surface's own sigma at its weight) and to the depression's own
//! depth. A 1 mm abrasion and a 10 mm crater are found by the same rule, and a fixed
//! millimetre never sits at a shallow wound's depth.
//!
//! - **Candidates**: connected regions with `D > 4σ_D`, at least [`MIN_DEPTH_M`] deep,
//!   whose significance `V / (σ_D·√(A·a_c))` (volume against the noise a region of that
//!   area would show, `a_c` the area over which fused noise is correlated) passes
//!   [`MIN_SIGNIFICANCE`].
//! - **Target**: candidates are ranked by significance × `exp(−d²/2·(25 mm)²)`, `d` the
//!   distance from the target to the region's nearest cell (so the region that holds the
//!   target is not penalised at all).
//! - **Region**: core `D > max(4σ_D, 0.5·D_max)`, grown (hysteresis) into
//!   `D > max(2σ_D, 0.1·D_max)`, holes filled.

use ndarray::Array2;

use super::{flood, HeightField, WoundNotFound};
use crate::tsdf::TsdfVolume;

/// Shallowest depression reported as a wound, metres (below the family's 1 mm minimum).
pub(crate) const MIN_DEPTH_M: f64 = 0.0004;
/// Least significance (in noise units of a region its size) of a wound.
pub(crate) const MIN_SIGNIFICANCE: f64 = 8.0;
/// Distance scale of the preference for the depression nearest the target, metres.
pub(crate) const TARGET_SCALE_M: f64 = 0.025;

/// The depression chosen and its cells.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    /// Cells of the wound (holes filled).
    pub(crate) region: Array2<bool>,
    /// Its deepest cell.
    pub(crate) seed: (usize, usize),
    /// Robust maximum depth below the first-pass skin, metres.
    pub(crate) d_max: f64,
    /// Median depth noise over the region, metres.
    pub(crate) sigma_d: f64,
    /// Candidates considered, and the chosen one's significance and distance (m).
    pub(crate) candidates: usize,
    pub(crate) significance: f64,
    pub(crate) distance_m: f64,
}

/// Depth noise per cell: the skin fit's residual sigma (the scan's own evidence of the
/// surface noise and the model's misfit), scaled by how much less (or more) the cell was
/// seen than the typical cell: the fused surface's sigma goes as `1/√weight`
/// ([`TsdfVolume::sigma_for_weight`]). The factor is bounded to ½…4; a cell with nothing
/// fused counts four times as noisy. (The weight law's absolute sigma overstates the
/// fused surface's noise about threefold: the ray cast interpolates neighbouring voxels.)
pub(crate) fn sigma_grid(field: &HeightField, sigma_skin: f64, vol: &TsdfVolume) -> Array2<f64> {
    let mut ws: Vec<f64> = field.w.iter().copied().filter(|&w| w > 0.0).collect();
    let w_ref = if ws.is_empty() {
        1.0
    } else {
        let mid = ws.len() / 2;
        ws.select_nth_unstable_by(mid, f64::total_cmp);
        ws[mid]
    };
    let s_ref = vol.sigma_for_weight(w_ref);
    field.w.mapv(|w| {
        let factor = if w > 0.0 { (vol.sigma_for_weight(w) / s_ref).clamp(0.5, 4.0) } else { 4.0 };
        sigma_skin * factor
    })
}

/// 4-connected components of `mask`: a label per cell (0 = none) and the count.
fn label(mask: &Array2<bool>) -> (Array2<u32>, u32) {
    let (h, w) = mask.dim();
    let mut lab = Array2::zeros((h, w));
    let mut n = 0u32;
    let mut stack = Vec::new();
    for j in 0..h {
        for i in 0..w {
            if !mask[[j, i]] || lab[[j, i]] != 0 {
                continue;
            }
            n += 1;
            lab[[j, i]] = n;
            stack.push((i, j));
            while let Some((a, b)) = stack.pop() {
                let mut push = |ii: usize, jj: usize| {
                    if mask[[jj, ii]] && lab[[jj, ii]] == 0 {
                        lab[[jj, ii]] = n;
                        stack.push((ii, jj));
                    }
                };
                if a > 0 {
                    push(a - 1, b);
                }
                if a + 1 < w {
                    push(a + 1, b);
                }
                if b > 0 {
                    push(a, b - 1);
                }
                if b + 1 < h {
                    push(a, b + 1);
                }
            }
        }
    }
    (lab, n)
}

#[derive(Debug, Clone, Default)]
struct Candidate {
    cells: Vec<(usize, usize)>,
    volume: f64,
    sigma_sum: f64,
    depths: Vec<f64>,
    nearest: f64,
}

/// Robust maximum: the 98th percentile of the depths (a lone noisy cell does not set it).
fn robust_max(depths: &mut [f64]) -> f64 {
    if depths.is_empty() {
        return 0.0;
    }
    let k = ((depths.len() as f64 - 1.0) * 0.98).round() as usize;
    depths.select_nth_unstable_by(k, f64::total_cmp);
    depths[k]
}

/// Finds the wound in depth `d` (skin minus height, NaN where unknown) with noise `sigma`,
/// nearest `target` (local x, y). `a_c` is the correlation area of fused noise, m².
pub(crate) fn detect(
    field: &HeightField,
    d: &Array2<f64>,
    sigma: &Array2<f64>,
    target: [f64; 2],
    a_c: f64,
) -> Result<Detection, WoundNotFound> {
    let side = field.side();
    let cell_area = field.cell * field.cell;
    let mask = Array2::from_shape_fn((side, side), |(j, i)| d[[j, i]] > 4.0 * sigma[[j, i]]);
    let (lab, n) = label(&mask);
    let mut cands = vec![Candidate { nearest: f64::INFINITY, ..Default::default() }; n as usize];
    for j in 0..side {
        for i in 0..side {
            let l = lab[[j, i]];
            if l == 0 {
                continue;
            }
            let c = &mut cands[l as usize - 1];
            let v = d[[j, i]];
            c.cells.push((i, j));
            c.volume += v * cell_area;
            c.sigma_sum += sigma[[j, i]];
            c.depths.push(v);
            let (x, y) = field.xy(i, j);
            c.nearest = c.nearest.min((x - target[0]).hypot(y - target[1]));
        }
    }
    let mut best: Option<(f64, usize, f64, f64)> = None;
    for (k, c) in cands.iter_mut().enumerate() {
        let dmax = robust_max(&mut c.depths.clone());
        if dmax < MIN_DEPTH_M {
            continue;
        }
        let area = c.cells.len() as f64 * cell_area;
        let s = c.sigma_sum / c.cells.len() as f64;
        let significance = c.volume / (s * (area * a_c).sqrt());
        if significance < MIN_SIGNIFICANCE {
            continue;
        }
        let score = significance * (-(c.nearest / TARGET_SCALE_M).powi(2) / 2.0).exp();
        if best.is_none_or(|b| score > b.0) {
            best = Some((score, k, significance, c.nearest));
        }
    }
    let Some((_, k, significance, distance_m)) = best else {
        return Err(WoundNotFound::NoDepression);
    };
    let chosen = &cands[k];
    let d_max = robust_max(&mut chosen.depths.clone());
    let mut sig: Vec<f64> = chosen.cells.iter().map(|&(i, j)| sigma[[j, i]]).collect();
    let mid = sig.len() / 2;
    sig.select_nth_unstable_by(mid, f64::total_cmp);
    let sigma_d = sig[mid];
    // Core: the chosen region's cells deeper than half its depth; seed at the deepest.
    let core_level = |j: usize, i: usize| (4.0 * sigma[[j, i]]).max(0.5 * d_max);
    let grow_level = |j: usize, i: usize| (2.0 * sigma[[j, i]]).max(0.1 * d_max);
    let mut region = Array2::from_elem((side, side), false);
    let mut stack = Vec::new();
    let mut seed = chosen.cells[0];
    let mut deepest = f64::NEG_INFINITY;
    for &(i, j) in &chosen.cells {
        let v = d[[j, i]];
        if v > core_level(j, i) {
            region[[j, i]] = true;
            stack.push((i, j));
        }
        if v > deepest && v <= d_max * 1.5 {
            deepest = v;
            seed = (i, j);
        }
    }
    while let Some((i, j)) = stack.pop() {
        for (di, dj) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
            let (ii, jj) = (i as i64 + di, j as i64 + dj);
            if ii < 0 || jj < 0 || ii as usize >= side || jj as usize >= side {
                continue;
            }
            let (ii, jj) = (ii as usize, jj as usize);
            if !region[[jj, ii]] && d[[jj, ii]] > grow_level(jj, ii) {
                region[[jj, ii]] = true;
                stack.push((ii, jj));
            }
        }
    }
    // Keep the piece that holds the seed, then fill its holes.
    let region = flood(&region, seed);
    let outside = flood(&region.mapv(|v| !v), (0, 0));
    let region = outside.mapv(|v| !v);
    Ok(Detection { region, seed, d_max, sigma_d, candidates: cands.len(), significance, distance_m })
}
