//! Rim location: where the wound wall meets the skin, to a fraction of the fusion blur.
//!
//! Fusion blurs the rim (pixel footprint, noise, pose jitter, voxels): a depth profile
//! across the rim is the true profile — zero on the skin, a wall of some slope, then the
//! bed — convolved with a Gaussian of width `σ`. The model is a *clipped* blurred ramp,
//!
//! `d(s) = b + D·[R(s − s0) − R(s − s1)]/(s1 − s0) + c·W(s; s0, s1)`,
//!
//! with `s` the inward distance, `R` the blurred ramp, `s0` the rim, `s1 ≥ s0` the bed
//! corner (`s1 = s0` is a blurred step: a vertical wall), `D` the depth at the corner and
//! `W` a blurred bulge that bends the wall without changing `D` (a curved wall, as on a
//! bowl). The model is linear in `b, D, c`; `s0`, `s1` are found per ~5 mm sector by a
//! grid and pattern search, `σ` for the whole outline by golden-section search, so every
//! choice is continuous in the data. Profiles run from 5 mm outside the first contour to
//! 2 mm past where the bed is reached, so the window always spans the wall.

use super::uncertainty::Boundary;
use super::{normal_depth, smooth_closed, taubin, Prepared};

/// Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
pub(super) fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

/// Gaussian-blurred ramp `max(u, 0)` and half parabola `max(u, 0)²` (closed forms).
fn blurred(u: f64, sigma: f64) -> (f64, f64) {
    let z = u / sigma;
    let cdf = 0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * z * z).exp() / std::f64::consts::TAU.sqrt();
    (u * cdf + sigma * pdf, (u * u + sigma * sigma) * cdf + u * sigma * pdf)
}

/// Smallest wall width used (mm): below it the clipped ramp is a blurred step to
/// well within numerical noise, and dividing by the width stays well conditioned.
const MIN_WALL_MM: f64 = 1e-3;

/// The three basis values `[1, step-ramp, bulge]` at inward distance `s` for a rim at
/// `s0`, wall width `w` and blur `sigma` (mm).
fn basis(s: f64, s0: f64, w: f64, sigma: f64) -> [f64; 3] {
    let w = w.max(MIN_WALL_MM);
    let (r0, q0) = blurred(s - s0, sigma);
    let (r1, q1) = blurred(s - s0 - w, sigma);
    let ramp = r0 - r1;
    // Unblurred: u(u − w) on the wall, 0 on skin and bed.
    let bulge = q0 - q1 - 2.0 * w * r1 - w * ramp;
    [1.0, ramp / w, bulge]
}

/// Ridge on the bulge (per sample, mm⁴): a wall is only bent where the data clearly ask
/// for it (a bowl's wall), never to let a wrong rim fit a straight wall.
const BULGE_RIDGE_MM4: f64 = 1.0;

/// Largest share of the wall's mean slope the bulge may take off the slope at the rim.
const MAX_RIM_FLATTENING: f64 = 0.5;

/// Penalty on the wall width (per sample, mm, per blur width): a blurred step and a
/// blurred ramp narrower than about the blur are nearly the same profile (the ramp
/// reads as a step blurred by `√(σ² + w²/12)`), so the rim would slide along that
/// valley; the penalty takes the narrowest wall the data allow. It saturates at 1.5 blur
/// widths, so a wall the data resolve is not pulled at all.
const WALL_PENALTY_MM: f64 = 0.0;

/// A profile fit for fixed `(s0, w, σ)`.
#[derive(Debug, Clone, Copy)]
struct LinearFit {
    sse: f64,
    /// `[b, D, c]`.
    coef: [f64; 3],
}

/// Least squares for `b, D, c` with a light ridge on `c`, so the bulge fades out
/// continuously as the wall narrows to a step (where it would be collinear).
fn fit_linear(profile: &[(f64, f64)], s0: f64, w: f64, sigma: f64) -> Option<LinearFit> {
    let mut a = [[0.0f64; 3]; 3];
    let mut y = [0.0f64; 3];
    let mut rows = Vec::with_capacity(profile.len());
    for &(s, d) in profile {
        let f = basis(s, s0, w, sigma);
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += f[i] * f[j];
            }
            y[i] += f[i] * d;
        }
        rows.push((f, d));
    }
    a[2][2] += profile.len() as f64 * BULGE_RIDGE_MM4;
    let mut c = solve3(a, y)?;
    // A wall that leaves the skin tangentially has no rim to find: any point of the skin
    // could start it. The bulge may bend the wall, but its slope at the rim stays at least
    // `1 − MAX_RIM_FLATTENING` of the wall's mean slope (`D/w − c·w ≥ …`), so the rim is
    // where the profile departs from the skin.
    let wc = w.max(MIN_WALL_MM);
    if c[1] > 0.0 && c[2] * wc * wc > MAX_RIM_FLATTENING * c[1] {
        let k = MAX_RIM_FLATTENING / (wc * wc);
        let (mut a2, mut y2) = ([[0.0f64; 2]; 2], [0.0f64; 2]);
        for (f, d) in &rows {
            let g = [f[0], f[1] + k * f[2]];
            for i in 0..2 {
                for j in 0..2 {
                    a2[i][j] += g[i] * g[j];
                }
                y2[i] += g[i] * d;
            }
        }
        let det = a2[0][0] * a2[1][1] - a2[0][1] * a2[1][0];
        if !det.is_finite() || det.abs() <= 1e-14 * (a2[0][0] * a2[1][1]).abs().max(1e-300) {
            return None;
        }
        let b = (y2[0] * a2[1][1] - a2[0][1] * y2[1]) / det;
        let dd = (a2[0][0] * y2[1] - a2[1][0] * y2[0]) / det;
        c = [b, dd, k * dd];
    }
    // A rim is a depression: the depth at the corner must be positive.
    if c[1] <= 0.0 {
        return None;
    }
    let sse = rows.iter().map(|(f, d)| (f[0] * c[0] + f[1] * c[1] + f[2] * c[2] - d).powi(2)).sum();
    Some(LinearFit { sse, coef: c })
}

/// Solves a 3×3 symmetric system by Cramer's rule (None when singular).
fn solve3(a: [[f64; 3]; 3], y: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    let scale = a[0][0].abs() * a[1][1].abs() * a[2][2].abs();
    if !d.is_finite() || d.abs() <= 1e-14 * scale.max(1e-300) {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut m = a;
        for r in 0..3 {
            m[r][k] = y[r];
        }
        *o = det(&m) / d;
    }
    Some(out)
}

/// Objective of the rim search: residual sum of squares plus the wall-width penalty.
fn sse(profile: &[(f64, f64)], s0: f64, w: f64, sigma: f64) -> f64 {
    let pen = profile.len() as f64 * (WALL_PENALTY_MM * (w / sigma).min(1.5)).powi(2);
    fit_linear(profile, s0, w, sigma).map_or(f64::INFINITY, |f| f.sse + pen)
}

/// The fitted rim of one profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ProfileFit {
    /// Rim position, inward distance (mm).
    pub s0: f64,
    /// Wall width `s1 − s0` (mm).
    pub w: f64,
    /// Residual sum of squares (mm²).
    pub sse: f64,
    /// Depth at the bed corner (mm).
    pub depth: f64,
    /// Standard deviation of `s0` from the curvature of the SSE (mm), before any
    /// correlation inflation.
    pub sd_s0: f64,
}

/// Range of rim positions searched, inward distance from the first contour (mm).
const S0_RANGE: (f64, f64) = (-4.5, 1.5);
/// Step of the coarse grid of rim positions (mm); the pattern search refines from the best
/// grid point down to 0.5 µm.
const S0_GRID_MM: f64 = 0.25;
/// Widest wall searched (mm): a 20° wall 10 mm deep.
const W_MAX: f64 = 30.0;

/// Coarse grid, then a pattern search on `(s0, w)` for a fixed blur.
fn fit_profile_from(
    profile: &[(f64, f64)],
    sigma: f64,
    start: Option<(f64, f64)>,
    fixed_s0: Option<f64>,
) -> Option<ProfileFit> {
    let (mut s0, w) = match start {
        Some(p) => p,
        None => {
            let mut best = (f64::INFINITY, 0.0, 0.0);
            let ws = [0.0, 0.15, 0.3, 0.5, 0.75, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0, 16.0, 22.0, 29.0];
            let n = if fixed_s0.is_some() { 0 } else { ((S0_RANGE.1 - S0_RANGE.0) / S0_GRID_MM).round() as usize };
            for k in 0..=n {
                let s0 = fixed_s0.unwrap_or(S0_RANGE.0 + S0_GRID_MM * k as f64);
                for &w in &ws {
                    let e = sse(profile, s0, w, sigma);
                    if e < best.0 {
                        best = (e, s0, w);
                    }
                }
            }
            if !best.0.is_finite() {
                return None;
            }
            (best.1, best.2)
        }
    };
    let mut cur = sse(profile, s0, w, sigma);
    if !cur.is_finite() {
        return fit_profile_from(profile, sigma, None, fixed_s0).filter(|_| start.is_some());
    }
    // Pattern search on the two corners (rim s0, bed corner s1 = s0 + w): moving one
    // corner alone keeps the other in place, so the valley along the wall is walked.
    let mut s1 = s0 + w;
    let at = |s0: f64, s1: f64| {
        let s0 = s0.clamp(S0_RANGE.0, S0_RANGE.1);
        let s1 = s1.clamp(s0, s0 + W_MAX);
        (s0, s1, sse(profile, s0, s1 - s0, sigma))
    };
    let mut h = 0.1;
    for _ in 0..400 {
        if h < 5e-4 {
            break;
        }
        let mut moved = false;
        let moves: &[(f64, f64)] = if fixed_s0.is_some() {
            &[(0.0, 1.0), (0.0, -1.0)]
        } else {
            &[(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0), (1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)]
        };
        for &(a, b) in moves {
            let (n0, n1, e) = at(s0 + a * h, s1 + b * h);
            if e < cur {
                (s0, s1, cur) = (n0, n1, e);
                moved = true;
                break;
            }
        }
        if !moved {
            h *= 0.5;
        }
    }
    let w = s1 - s0;
    let fit = fit_linear(profile, s0, w, sigma)?;
    // The spread is only needed for the final fits ([`with_spread`]), not inside the blur
    // search.
    Some(ProfileFit { s0, w, sse: cur, depth: fit.coef[1], sd_s0: f64::NAN })
}

/// `fit` with the standard deviation of its rim: the Fisher information of `s0` with the
/// bed corner re-fitted at each trial rim (the profile likelihood), `Var = 2σ_r² / SSE''`.
fn with_spread(profile: &[(f64, f64)], sigma: f64, fit: ProfileFit) -> ProfileFit {
    let (s0, s1, cur) = (fit.s0, fit.s0 + fit.w, fit.sse);
    let best_s1 = |t0: f64| {
        let (mut t1, mut e) = (s1.max(t0), sse(profile, t0, (s1 - t0).max(0.0), sigma));
        let mut h = 0.05;
        while h > 1e-3 {
            let mut moved = false;
            for d in [h, -h] {
                let c = (t1 + d).max(t0);
                let ec = sse(profile, t0, c - t0, sigma);
                if ec < e {
                    (t1, e) = (c, ec);
                    moved = true;
                    break;
                }
            }
            if !moved {
                h *= 0.5;
            }
        }
        e
    };
    let h = 0.03;
    let curv = (best_s1(s0 + h) + best_s1(s0 - h) - 2.0 * cur) / (h * h);
    let dof = (profile.len() as f64 - 6.0).max(1.0);
    let sd_s0 = if curv > 0.0 && curv.is_finite() { (2.0 * cur / dof / curv).sqrt() } else { f64::INFINITY };
    ProfileFit { sd_s0, ..fit }
}

/// Fits the rim of one profile `(inward distance, depth)` in mm for a known blur.
#[cfg(test)]
fn fit_profile(profile: &[(f64, f64)], sigma: f64) -> Option<ProfileFit> {
    fit_profile_from(profile, sigma, None, None).map(|f| with_spread(profile, sigma, f))
}

/// Blur that minimises the summed SSE of every profile's own rim fit (golden section,
/// warm-started per profile). With `fixed_s0` every rim stays there (a drawn outline)
/// and only the wall and the blur are fitted. Returns `(σ, fits)`.
pub(super) fn fit_blur(
    profiles: &[Vec<(f64, f64)>],
    fixed_s0: Option<f64>,
    fixed_sigma: Option<f64>,
) -> (f64, Vec<Option<ProfileFit>>) {
    if let Some(sigma) = fixed_sigma {
        return (sigma, fits_at(profiles, sigma, fixed_s0));
    }
    let usable: Vec<&Vec<(f64, f64)>> = profiles.iter().filter(|p| p.len() >= 12).collect();
    let total = |sigma: f64, starts: &mut Vec<Option<(f64, f64)>>, fresh: bool| -> f64 {
        let mut sum = 0.0;
        for (p, st) in usable.iter().zip(starts.iter_mut()) {
            let from = if fresh { None } else { *st };
            if let Some(f) = fit_profile_from(p, sigma, from, fixed_s0) {
                sum += f.sse;
                *st = Some((f.s0, f.w));
            } else {
                sum += p.iter().map(|q| q.1 * q.1).sum::<f64>();
            }
        }
        sum
    };
    // A coarse grid of blurs with fresh fits finds the basin (a warm start alone can
    // stay in a wrong one: rim and blur trade off on shallow walls), then golden-section
    // search with warm starts refines it continuously.
    let grid = [0.2, 0.3, 0.45, 0.65, 0.9, 1.25, 1.7, 2.3];
    let mut best = (f64::INFINITY, 0usize, Vec::new());
    for (k, &sg) in grid.iter().enumerate() {
        let mut st = vec![None; usable.len()];
        let e = total(sg, &mut st, true);
        if e < best.0 {
            best = (e, k, st);
        }
    }
    let k = best.1;
    let mut starts = best.2;
    let (mut a, mut b) = (if k == 0 { 0.12 } else { grid[k - 1] }, if k + 1 == grid.len() { 2.6 } else { grid[k + 1] });
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (b - g * (b - a), a + g * (b - a));
    let (mut f1, mut f2) = (total(x1, &mut starts.clone(), false), total(x2, &mut starts.clone(), false));
    for _ in 0..30 {
        if b - a < 2e-3 {
            break;
        }
        if f1 <= f2 {
            (b, x2, f2) = (x2, x1, f1);
            x1 = b - g * (b - a);
            f1 = total(x1, &mut starts, false);
        } else {
            (a, x1, f1) = (x1, x2, f2);
            x2 = a + g * (b - a);
            f2 = total(x2, &mut starts, false);
        }
    }
    let sigma = 0.5 * (a + b);
    (sigma, fits_at(profiles, sigma, fixed_s0))
}

/// Every usable profile's rim fit at blur `sigma` (mm), with its spread.
fn fits_at(profiles: &[Vec<(f64, f64)>], sigma: f64, fixed_s0: Option<f64>) -> Vec<Option<ProfileFit>> {
    profiles
        .iter()
        .map(|p| {
            if p.len() >= 12 {
                fit_profile_from(p, sigma, None, fixed_s0).map(|f| with_spread(p, sigma, f))
            } else {
                None
            }
        })
        .collect()
}

/// Keeps a profile (sorted by inward distance) up to 2 mm past where it first reaches
/// 95 % of its deepest value within `reach` mm inward — so the window spans a steep wall
/// and a stretch of bed — but no further than 1.5 mm past where it first reaches
/// `max(2.5 mm, 0.6 × deepest)`: on a bowl, whose wall never ends in a corner, the
/// window stays near the rim, where a bent wall describes it.
pub(super) fn wall_window(mut prof: Vec<(f64, f64)>, reach: f64) -> Vec<(f64, f64)> {
    prof.sort_by(|a, b| a.0.total_cmp(&b.0));
    let deepest = prof.iter().filter(|p| p.0 <= reach).map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let first = |level: f64| prof.iter().find(|p| p.0 >= 0.0 && p.1 >= level).map(|p| p.0);
    let Some(corner) = first(0.95 * deepest) else {
        return prof;
    };
    let level = first((0.6 * deepest).max(2.5)).unwrap_or(corner);
    let end = (corner + 2.0).min(level + 1.5);
    prof.retain(|p| p.0 <= end);
    prof
}

/// The rim found along an outline.
#[derive(Debug, Clone)]
pub(super) struct RimFit {
    /// Rim polyline, local metres, counter-clockwise.
    pub rim: Vec<[f64; 2]>,
    /// Fusion blur σ fitted on the whole outline, metres.
    pub sigma_blur_m: f64,
    /// Length of outline in each sector, metres.
    pub sector_len_m: Vec<f64>,
    /// Standard deviation of each sector's rim offset, metres (Fisher information,
    /// inflated for the correlation of neighbouring profile samples).
    pub sector_sd_m: Vec<f64>,
    /// Each sector's bed-corner depth, metres.
    pub sector_depth_m: Vec<f64>,
    /// Rim ambiguity of walls too narrow to tell from a blurred step (length-weighted
    /// mean of [`narrow_wall_sd`]), metres; common to the whole outline.
    pub narrow_sd_m: f64,
    /// Wall area the fused surface may not show, m² (sum of [`hidden_wall_area`] over
    /// the sectors).
    pub hidden_wall_m2: f64,
}

/// Systematic rim error per unit of blur (model mismatch: blur not exactly Gaussian nor
/// the same all round, walls not straight), one standard deviation.
const RIM_BIAS_PER_BLUR: f64 = 0.05;

/// Standard deviation of a rim whose wall is too narrow to tell from a blurred step: a
/// ramp of width `w` blurred by `σ` reads as a step blurred by `σ_e = √(σ² + w²/12)`, so
/// any wall up to `√12·σ_e` wide fits, and the rim lies anywhere from the step's centre to
/// half that width outward (uniform: `σ_e/2`). Fades out between 1.5 and 2.5 `σ_e`, where
/// the two corners of the wall separate.
pub(super) fn narrow_wall_sd(w_mm: f64, sigma_mm: f64) -> f64 {
    let se = (sigma_mm * sigma_mm + w_mm * w_mm / 12.0).sqrt();
    (2.5 - w_mm / se).clamp(0.0, 1.0) * se / 2.0
}

/// Apparent wall slope (width over depth) up to which a fused wall may be a vertical one
/// smeared by the views' tilt, and where that reading has faded out.
const STEEP_WALL_WD: (f64, f64) = (0.75, 1.0);

/// Standard deviation of the rim of a wall that may be steeper than it looks (mm). Views
/// tilted from the skin normal by θ see a wall's face from one side only, and fusion
/// smears a vertical wall of depth `D` into one about `D·tan θ` wide (hand-held scans
/// tilt 15–30°, so `w/D` of 0.3–0.6 for any wall steeper than about 60°). On such a wall
/// the clipped ramp puts the rim at the foot of the smear, while a vertical wall's top
/// sits up to one blur width inward (phantom family: 0.3–0.45 mm on 88–90° punches, none
/// on 60–75° walls). The profile cannot tell the two apart, so the rim is stated as
/// lying anywhere in that width: one third of the blur, so the coverage factor spans it.
pub(super) fn steep_wall_sd(w_mm: f64, depth_mm: f64, sigma_mm: f64) -> f64 {
    steepness(w_mm, depth_mm) * sigma_mm / 3.0
}

/// How far a fitted wall of width `w_mm` and depth `depth_mm` reads as steeper than the
/// views resolve: 1 up to [`STEEP_WALL_WD`]`.0` of `w/D`, fading to 0 at `.1` (0 without depth).
fn steepness(w_mm: f64, depth_mm: f64) -> f64 {
    if depth_mm <= 0.0 {
        return 0.0;
    }
    let (a, b) = STEEP_WALL_WD;
    ((b - w_mm / depth_mm) / (b - a)).clamp(0.0, 1.0)
}

/// Wall area per unit of outline a steep-looking wall may hide (mm): a vertical wall of
/// depth `D` and a floor reaching its foot (`D + w` of surface across the wall's fused
/// width `w`) against the straight slope fusion shows (`√(D² + w²)`), faded like
/// [`steep_wall_sd`].
/// The steepness is judged on the fitted wall, the width is the wall's fused width: its
/// ramp and its blur together (a step blurred by
/// `σ` spans about `√12·σ`, as wide as a ramp of the same variance).
pub(super) fn hidden_wall_area(w_mm: f64, depth_mm: f64, sigma_mm: f64) -> f64 {
    let w = w_mm.hypot(12f64.sqrt() * sigma_mm);
    steepness(w_mm, depth_mm) * (depth_mm + w - depth_mm.hypot(w))
}

impl RimFit {
    /// Length-weighted mean bed-corner depth, metres.
    pub(super) fn rim_depth_m(&self) -> f64 {
        let total: f64 = self.sector_len_m.iter().sum();
        if total > 0.0 {
            self.sector_len_m.iter().zip(&self.sector_depth_m).map(|(l, d)| l * d).sum::<f64>() / total
        } else {
            0.0
        }
    }

    /// Position uncertainty of a fitted rim.
    pub(super) fn boundary(&self) -> Boundary {
        Boundary {
            sector_len_m: self.sector_len_m.clone(),
            sector_sd_m: self.sector_sd_m.clone(),
            common_sd_m: (RIM_BIAS_PER_BLUR * self.sigma_blur_m).hypot(self.narrow_sd_m),
            scale_sd: 0.0,
            rigid_sd_m: 0.0,
            rim_depth_m: self.rim_depth_m(),
            hidden_wall_m2: self.hidden_wall_m2,
        }
    }
}

/// Profile samples every 0.2 mm; the height field is bilinear on 0.5 mm cells, so about
/// two and a half neighbouring samples carry one cell's noise (0.1 mm gave the same rims
/// on the phantom family at twice the cost).
const PROFILE_STEP_MM: f64 = 0.2;

/// Outward normals of a closed counter-clockwise polyline (central differences over ±2).
fn normals(outline: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let m = outline.len();
    (0..m)
        .map(|i| {
            let (a, b) = (outline[(i + m - 2) % m], outline[(i + 2) % m]);
            let (tx, ty) = (b[0] - a[0], b[1] - a[1]);
            let tl = (tx * tx + ty * ty).sqrt().max(1e-12);
            [ty / tl, -tx / tl]
        })
        .collect()
}

/// Sector `[a, b)` vertex ranges of about 5 mm of outline each.
fn sectors(m: usize, perimeter_m: f64) -> Vec<(usize, usize)> {
    let n = ((perimeter_m / 5e-3).round() as usize).clamp(8, 64).min(m);
    (0..n).map(|q| (q * m / n, (q + 1) * m / n)).collect()
}

/// Mean depth profile (inward distance mm, depth mm) of outline vertices `a..b`.
fn sector_profile(raw: &[Vec<f64>], a: usize, b: usize, s_out: f64) -> Vec<(f64, f64)> {
    let nt = raw.first().map_or(0, Vec::len);
    let mut prof = Vec::with_capacity(nt);
    for k in 0..nt {
        let (mut s, mut c) = (0.0, 0.0);
        for r in &raw[a..b] {
            if r[k].is_finite() {
                s += r[k];
                c += 1.0;
            }
        }
        if c > 0.0 {
            prof.push((-s_out + PROFILE_STEP_MM * k as f64, s / c));
        }
    }
    prof
}

/// Locates the rim along the outward normals of `outline` (local metres, counter-clockwise).
///
/// Profiles are sampled from 5 mm outside to `reach` inside (at most 15 mm, half the
/// outline's smaller extent so they never climb the opposite wall), averaged per sector;
/// one blur for the whole outline; a rim offset per sector, lightly smoothed and
/// interpolated between sector centres.
#[allow(clippy::needless_range_loop)] // per-vertex index across parallel arrays
pub(super) fn fit_rim(p: &Prepared, outline: &[[f64; 2]], blur_m: Option<f64>) -> RimFit {
    fit_rim_with(outline, |x, y| normal_depth(p, x, y), false, blur_m)
}

/// [`fit_rim`] on any depth function; with `rim_fixed` the rim stays on `outline` (a
/// drawn outline is the definition) and only the blur and the walls are fitted.
pub(super) fn fit_rim_with(
    outline: &[[f64; 2]],
    depth: impl Fn(f64, f64) -> f64,
    rim_fixed: bool,
    blur_m: Option<f64>,
) -> RimFit {
    let m = outline.len();
    let nrm = normals(outline);
    let perim: f64 = (0..m)
        .map(|i| {
            let (a, b) = (outline[i], outline[(i + 1) % m]);
            (b[0] - a[0]).hypot(b[1] - a[1])
        })
        .sum();
    let area = super::shoelace(outline).abs();
    // Inward reach: the inscribed radius of an equal-area disc, 2 mm to 15 mm.
    let reach = ((area / std::f64::consts::PI).sqrt() * 1e3).clamp(2.0, 15.0);
    let s_out = 5.0;
    let nt = ((s_out + reach) / PROFILE_STEP_MM).round() as usize + 1;
    let raw: Vec<Vec<f64>> = (0..m)
        .map(|i| {
            (0..nt)
                .map(|k| {
                    let t = (s_out - PROFILE_STEP_MM * k as f64) * 1e-3;
                    depth(outline[i][0] + nrm[i][0] * t, outline[i][1] + nrm[i][1] * t) * 1e3
                })
                .collect()
        })
        .collect();
    let secs = sectors(m, perim);
    let profiles: Vec<Vec<(f64, f64)>> =
        secs.iter().map(|&(a, b)| wall_window(sector_profile(&raw, a, b, s_out), reach)).collect();
    let (sigma, fits) = fit_blur(&profiles, rim_fixed.then_some(0.0), blur_m.map(|b| b * 1e3));
    let n = secs.len();
    let found: Vec<f64> = fits.iter().flatten().map(|f| f.s0).collect();
    let fallback = if found.is_empty() { 0.0 } else { found.iter().sum::<f64>() / found.len() as f64 };
    // Outward offsets (metres) of the rim from the outline, per sector.
    let raw_off: Vec<f64> = fits.iter().map(|f| -f.map_or(fallback, |f| f.s0) * 1e-3).collect();
    // Correlated profile samples: inflate the variance by the samples per cell.
    let inflate = (0.5 / PROFILE_STEP_MM).sqrt();
    let sector_len_m: Vec<f64> = secs
        .iter()
        .map(|&(a, b)| {
            (a..b)
                .map(|i| {
                    let (u, v) = (outline[i], outline[(i + 1) % m]);
                    (v[0] - u[0]).hypot(v[1] - u[1])
                })
                .sum()
        })
        .collect();
    let sector_sd_m: Vec<f64> = fits
        .iter()
        .zip(&sector_len_m)
        .map(|(f, len)| match f {
            Some(f) if f.sd_s0.is_finite() => f.sd_s0 * inflate * 1e-3,
            // No fit: the rim could be anywhere in the sector's width.
            _ => *len,
        })
        .collect();
    let sector_depth_m: Vec<f64> = fits.iter().map(|f| f.map_or(0.0, |f| f.depth * 1e-3)).collect();
    let total_len: f64 = sector_len_m.iter().sum::<f64>().max(1e-12);
    let narrow_sd_m = fits
        .iter()
        .zip(&sector_len_m)
        .map(|(f, l)| l * f.map_or(0.0, |f| narrow_wall_sd(f.w, sigma).max(steep_wall_sd(f.w, f.depth, sigma))))
        .sum::<f64>()
        / total_len
        * 1e-3;
    let hidden_wall_m2 = fits
        .iter()
        .zip(&sector_len_m)
        .map(|(f, l)| l * f.map_or(0.0, |f| hidden_wall_area(f.w, f.depth, sigma)))
        .sum::<f64>()
        * 1e-3;
    let off = smooth_closed(&raw_off, 1);
    let rim: Vec<[f64; 2]> = (0..m)
        .map(|i| {
            let pos = (i as f64 + 0.5) * n as f64 / m as f64 - 0.5;
            let k0 = pos.floor();
            let t = pos - k0;
            let k0 = (k0 as i64).rem_euclid(n as i64) as usize;
            let o = off[k0] * (1.0 - t) + off[(k0 + 1) % n] * t;
            [outline[i][0] + nrm[i][0] * o, outline[i][1] + nrm[i][1] * o]
        })
        .collect();
    RimFit {
        rim: taubin(&rim, 10),
        sigma_blur_m: sigma * 1e-3,
        sector_len_m,
        sector_sd_m,
        sector_depth_m,
        narrow_sd_m,
        hidden_wall_m2,
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    /// Exact depth of a wall of `angle` (degrees) and depth `d` meeting the skin at s = 0,
    /// flat bed, convolved with a Gaussian of `sigma` (numerically).
    pub fn true_profile(s: f64, d: f64, angle: f64, sigma: f64) -> f64 {
        let w = d / angle.to_radians().tan();
        let sharp = |u: f64| {
            if u <= 0.0 {
                0.0
            } else if u >= w {
                d
            } else {
                d * u / w
            }
        };
        let n = 400;
        let mut acc = 0.0;
        let mut wsum = 0.0;
        for k in 0..=n {
            let z = -6.0 + 12.0 * k as f64 / n as f64;
            let g = (-0.5 * z * z).exp();
            acc += g * sharp(s - z * sigma);
            wsum += g;
        }
        acc / wsum
    }

    pub fn profile(d: f64, angle: f64, sigma: f64, shift: f64, noise: f64, seed: u64) -> Vec<(f64, f64)> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1_000_000) as f64 / 1_000_000.0 - 0.5
        };
        let w = d / angle.to_radians().tan();
        let end = w + 2.0 * sigma + 3.0;
        let n = ((end + 5.0) / 0.1) as usize;
        let prof = (0..=n)
            .map(|k| {
                let s = -5.0 + 0.1 * k as f64;
                (s, true_profile(s - shift, d, angle, sigma) + noise * rnd() * 3.46)
            })
            .collect();
        wall_window(prof, 40.0)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn the_rim_of_a_blurred_wall_is_found_within_five_hundredths_of_a_millimetre() {
        let mut worst: (f64, f64, f64, f64) = (0.0, 0.0, 0.0, 0.0);
        let mut bad = Vec::new();
        for &d in &[1.0, 2.0, 3.0, 5.0, 10.0] {
            for &angle in &[20.0, 30.0, 45.0, 60.0, 75.0] {
                for &sigma in &[0.5, 0.8] {
                    let shift = -1.3;
                    let prof = profile(d, angle, sigma, shift, 0.0, 1);
                    let (blur, fits) = fit_blur(&[prof], None, None);
                    let f = fits[0].expect("fits");
                    let err = (f.s0 - shift).abs();
                    if err > worst.0 {
                        worst = (err, d, angle, sigma);
                    }
                    if err > 0.05 {
                        bad.push(format!("d {d} α {angle} σ {sigma}: rim {:.3} vs {shift} (blur {blur:.3})", f.s0));
                    }
                }
            }
        }
        eprintln!("worst rim error {:.4} mm at d {} α {} σ {}", worst.0, worst.1, worst.2, worst.3);
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn a_vertical_wall_is_found_within_its_narrow_wall_ambiguity() {
        // A blurred step and a blurred ramp narrower than the blur are nearly the same
        // profile: the rim lands within the stated ambiguity, not within 0.05 mm.
        for &d in &[1.0, 3.0, 10.0] {
            for &sigma in &[0.5, 0.8] {
                let prof = profile(d, 90.0, sigma, -1.3, 0.0, 1);
                let (blur, fits) = fit_blur(&[prof], None, None);
                let f = fits[0].expect("fits");
                let amb = narrow_wall_sd(f.w, blur) * 2.0 * 3f64.sqrt();
                let err = (f.s0 + 1.3).abs();
                assert!(err <= amb + 0.05, "d {d} σ {sigma}: rim {:.3}, w {:.3}, ambiguity {amb:.3}", f.s0, f.w);
            }
        }
    }

    #[test]
    fn a_skin_sloping_towards_the_wound_does_not_pull_the_rim_outward() {
        // One sector of a fused 8 mm, 1 mm deep dish (small-shallow, seed 0), every 0.5 mm
        // from 5 mm outside the first contour; the true rim is near -0.55 mm. The skin
        // outside leans towards the wound by 0.16 mm over 3 mm (fusion texture): a wall
        // allowed to leave the skin tangentially fitted it and put the rim at -4.0 mm.
        let samples =
            [0.16, 0.11, 0.08, 0.05, 0.02, 0.00, -0.00, -0.02, 0.02, 0.15, 0.37, 0.55, 0.65, 0.74, 0.80, 0.80, 0.80];
        let prof: Vec<(f64, f64)> = (0..=(samples.len() - 1) * 5)
            .map(|k| {
                let (i, t) = (k / 5, (k % 5) as f64 / 5.0);
                let v = samples[i] + (samples[(i + 1).min(samples.len() - 1)] - samples[i]) * t;
                (-5.0 + 0.1 * k as f64, v)
            })
            .collect();
        let (_, fits) = fit_blur(&[prof], None, None);
        let f = fits[0].expect("fits");
        assert!((f.s0 + 0.55).abs() < 0.6, "rim {:.2} (w {:.2})", f.s0, f.w);
    }

    #[test]
    fn a_wall_steeper_than_the_views_can_resolve_widens_the_rim_and_the_bed() {
        // Fused 3 mm deep walls 1.2 mm wide (w/D 0.4: any wall from 60° to vertical).
        assert!((steep_wall_sd(1.2, 3.0, 0.45) - 0.15).abs() < 1e-12);
        assert!(hidden_wall_area(1.2, 3.0, 0.45) > 1.0);
        // A 45° wall is resolved: nothing added.
        assert_eq!(steep_wall_sd(3.0, 3.0, 0.45), 0.0);
        assert_eq!(hidden_wall_area(3.0, 3.0, 0.45), 0.0);
        // In between, the statement fades continuously.
        let mid = steep_wall_sd(2.625, 3.0, 0.45);
        assert!(mid > 0.0 && mid < 0.15, "{mid}");
        // A blurred step (a drawn outline on a vertical wall) hides the corner its blur fills.
        let step = hidden_wall_area(0.0, 3.0, 0.5);
        assert!((step - (3.0 + 12f64.sqrt() * 0.5 - 3f64.hypot(12f64.sqrt() * 0.5))).abs() < 1e-12);
        assert_eq!(steep_wall_sd(1.0, 0.0, 0.5), 0.0);
    }

    #[test]
    fn noisy_profiles_give_a_rim_within_its_predicted_spread() {
        // 0.05 mm noise on a 2 mm, 80° wall: the Fisher spread and the narrow-wall
        // ambiguity must account for the observed error.
        let mut z2 = 0.0;
        let n = 20;
        for seed in 0..n {
            let prof = profile(2.0, 80.0, 0.7, 0.4, 0.05, seed + 3);
            let f = fit_profile(&prof, 0.7).expect("fits");
            z2 += ((f.s0 - 0.4) / f.sd_s0.hypot(narrow_wall_sd(f.w, 0.7))).powi(2);
        }
        let rms_z = (z2 / f64::from(n as u32)).sqrt();
        assert!(rms_z < 2.0 && rms_z > 0.3, "rms z-score {rms_z}");
    }
}
