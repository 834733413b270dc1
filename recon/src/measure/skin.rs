//! The skin surface around the wound: candidate models, a robust upper-envelope fit for
//! the first pass, and the choice among models by how well each predicts skin it was not
//! fitted to.
//!
//! - **Models** (height graphs `s(x, y)` in the local frame): plane, quadratic, quartic
//!   and a cylinder (a limb: exact where a polynomial leaves a curvature misfit that grows
//!   as `y⁴/8R³`, already 0.1 mm at 15 mm on a 38 mm forearm).
//! - **Upper envelope** ([`envelope`]): the first pass must not settle on a wound's flat
//!   bed (a plane is a plane). Weights are asymmetric: a cell far *below* the model
//!   weighs nothing, one above weighs fully, so the fit rises to the skin and stays there.
//! - **Choice by evidence** ([`choose`]): each model is fitted to the skin ring with one
//!   45° sector left out and predicts that sector, as it must predict the skin across the
//!   hole. Models are blended with weights falling smoothly with their prediction error
//!   (no hard switch: a 0.05 mm change in the input must not flip the model), and the
//!   spread between them is kept for the uncertainty.

use super::{terms, Skin, SkinModel};
use crate::linalg::NormalEquations;

/// Coordinates are scaled by this before polynomial terms are formed, metres.
pub(crate) const SCALE_M: f64 = 0.02;

/// A limb: `s = z0 + a·t + g(u − u0)` with `u`, `t` the coordinates across and along the
/// axis (axis at angle `theta` + 90° from x) and `g(u) = −κu² / (1 + √(1 − κ²u²))`, the
/// exact circle of curvature `κ` (convex for κ > 0) through its top line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cylinder {
    p: [f64; 5], // theta, u0, z0, a, kappa
}

impl Cylinder {
    fn eval_p(p: &[f64; 5], x: f64, y: f64) -> f64 {
        let (s, c) = p[0].sin_cos();
        let u = x * c + y * s - p[1];
        let t = -x * s + y * c;
        let k = p[4];
        let q = (1.0 - (k * u).powi(2)).max(0.0);
        p[2] + p[3] * t - k * u * u / (1.0 + q.sqrt())
    }

    pub(crate) fn eval(&self, x: f64, y: f64) -> f64 {
        Self::eval_p(&self.p, x, y)
    }

    pub(crate) fn grad(&self, x: f64, y: f64) -> (f64, f64) {
        let (s, c) = self.p[0].sin_cos();
        let u = x * c + y * s - self.p[1];
        let k = self.p[4];
        let q = (1.0 - (k * u).powi(2)).max(1e-6);
        let du = -k * u / q.sqrt();
        let dt = self.p[3];
        (du * c - dt * s, du * s + dt * c)
    }

    /// Seeds from a quadratic's Hessian (the most curved direction is across the axis),
    /// then Gauss–Newton with Levenberg damping on the weighted squared residuals.
    pub(crate) fn fit(pts: &[[f64; 3]], w: &[f64], seed: &Skin) -> Option<Cylinder> {
        if seed.degree != 2 || pts.len() < 30 {
            return None;
        }
        Self::refine(pts, w, Self::seed(seed)?.p)
    }

    /// Initial parameters from a quadratic, if it is curved enough to be a limb.
    fn seed(seed: &Skin) -> Option<Cylinder> {
        let sc = seed.scale;
        let c = &seed.coef; // 1, u, v, u², uv, v²
        let (gx, gy) = (c[1] / sc, c[2] / sc);
        let (hxx, hxy, hyy) = (2.0 * c[3] / (sc * sc), c[4] / (sc * sc), 2.0 * c[5] / (sc * sc));
        // Eigen of [[hxx, hxy], [hxy, hyy]]: the most negative eigenvalue is −κ.
        let tr = 0.5 * (hxx + hyy);
        let disc = (0.25 * (hxx - hyy).powi(2) + hxy * hxy).sqrt();
        let (l1, l2) = (tr - disc, tr + disc);
        let lam = if l1.abs() >= l2.abs() { l1 } else { l2 };
        let theta = 0.5 * (2.0 * hxy).atan2(hxx - hyy) + if lam == l1 { std::f64::consts::FRAC_PI_2 } else { 0.0 };
        let kappa = -lam;
        if kappa.abs() < 1.0 {
            return None; // flatter than a 1 m radius: the polynomials cover it
        }
        let (s, co) = theta.sin_cos();
        let gu = gx * co + gy * s;
        let gt = -gx * s + gy * co;
        let u0 = gu / kappa;
        Some(Cylinder { p: [theta, u0, c[0] + 0.5 * kappa * u0 * u0, gt, kappa] })
    }

    /// Gauss–Newton with Levenberg damping from `p`.
    fn refine(pts: &[[f64; 3]], w: &[f64], mut p: [f64; 5]) -> Option<Cylinder> {
        let sse = |p: &[f64; 5]| -> f64 {
            pts.iter().zip(w).map(|(q, &wi)| wi * (q[2] - Self::eval_p(p, q[0], q[1])).powi(2)).sum()
        };
        let mut cur = sse(&p);
        let mut lambda = 1e-3;
        let steps = [1e-4, 1e-5, 1e-6, 1e-5, 0.05];
        for _ in 0..30 {
            let mut ne = NormalEquations::new(5);
            let mut row = [0.0; 5];
            for (q, &wi) in pts.iter().zip(w) {
                if wi <= 0.0 {
                    continue;
                }
                let f0 = Self::eval_p(&p, q[0], q[1]);
                for k in 0..5 {
                    let mut pk = p;
                    pk[k] += steps[k];
                    row[k] = (Self::eval_p(&pk, q[0], q[1]) - f0) / steps[k];
                }
                ne.add(&row, q[2] - f0, wi);
            }
            let mut improved = false;
            for _ in 0..6 {
                let Some(d) = ne.damped(lambda).solve() else { break };
                let mut trial = p;
                for k in 0..5 {
                    trial[k] += d[k];
                }
                let e = sse(&trial);
                if e.is_finite() && e < cur {
                    let gain = cur - e;
                    p = trial;
                    cur = e;
                    lambda = (lambda * 0.3).max(1e-9);
                    improved = gain > 1e-12 * cur.max(1e-30);
                    break;
                }
                lambda *= 10.0;
            }
            if !improved {
                break;
            }
        }
        (p.iter().all(|v| v.is_finite()) && p[4].abs() > 1.0).then_some(Cylinder { p })
    }
}

/// One candidate skin model.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    Poly(Skin),
    Cyl(Cylinder),
}

impl Part {
    fn eval(&self, x: f64, y: f64) -> f64 {
        match self {
            Part::Poly(s) => s.eval(x, y),
            Part::Cyl(c) => c.eval(x, y),
        }
    }

    fn grad(&self, x: f64, y: f64) -> (f64, f64) {
        match self {
            Part::Poly(s) => s.grad(x, y),
            Part::Cyl(c) => c.grad(x, y),
        }
    }

    fn params(&self) -> usize {
        match self {
            Part::Poly(s) => terms(s.degree).len(),
            Part::Cyl(_) => 5,
        }
    }

    fn model(&self) -> SkinModel {
        match self {
            Part::Poly(s) if s.degree > 2 => SkinModel::Quartic,
            _ => SkinModel::Quadratic,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Part::Poly(s) if s.degree <= 1 => "plane",
            Part::Poly(s) if s.degree == 2 => "quadratic",
            Part::Poly(_) => "quartic",
            Part::Cyl(_) => "cylinder",
        }
    }
}

/// Which model a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Plane,
    Quadratic,
    Quartic,
    Cylinder,
}

/// The skin surface the wound is measured against: a blend of candidate models.
#[derive(Debug, Clone)]
pub(crate) struct SkinSurface {
    parts: Vec<(f64, Part)>,
    /// Polynomial degree equivalent to the blend's parameter count (for the uncertainty).
    pub(crate) degree: usize,
    /// Robust RMS of the residuals on the skin ring, metres.
    pub(crate) rms: f64,
    /// Skin cells the model was fitted to.
    pub(crate) n_points: usize,
    /// The model with the largest blend weight.
    pub(crate) model: SkinModel,
}

impl SkinSurface {
    pub(crate) fn single(part: Part, rms: f64, n_points: usize) -> SkinSurface {
        let model = part.model();
        let degree = degree_for(part.params());
        SkinSurface { parts: vec![(1.0, part)], degree, rms, n_points, model }
    }

    pub(crate) fn eval(&self, x: f64, y: f64) -> f64 {
        self.parts.iter().map(|(w, p)| w * p.eval(x, y)).sum()
    }

    pub(crate) fn grad(&self, x: f64, y: f64) -> (f64, f64) {
        self.parts.iter().fold((0.0, 0.0), |a, (w, p)| {
            let g = p.grad(x, y);
            (a.0 + w * g.0, a.1 + w * g.1)
        })
    }

    /// Blend weights by model name, for the trace.
    pub(crate) fn weights(&self) -> Vec<(&'static str, f64)> {
        self.parts.iter().map(|(w, p)| (p.name(), *w)).collect()
    }

    /// Name of the model with the largest weight.
    pub(crate) fn kind_name(&self) -> &'static str {
        self.parts.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map_or("none", |p| p.1.name())
    }
}

/// The smallest polynomial degree with at least `params` terms.
fn degree_for(params: usize) -> usize {
    (0..=6).find(|&d| terms(d).len() >= params).unwrap_or(6)
}

/// Weighted least-squares polynomial.
pub(crate) fn fit_poly(pts: &[[f64; 3]], w: &[f64], degree: usize) -> Option<Skin> {
    let t = terms(degree);
    let used = w.iter().filter(|&&v| v > 0.0).count();
    if used < t.len() * 3 {
        return None;
    }
    let mut ne = NormalEquations::new(t.len());
    let mut row = vec![0.0; t.len()];
    for (p, &wi) in pts.iter().zip(w) {
        if wi <= 0.0 {
            continue;
        }
        let (u, v) = (p[0] / SCALE_M, p[1] / SCALE_M);
        for (k, &(a, b)) in t.iter().enumerate() {
            row[k] = u.powi(a) * v.powi(b);
        }
        ne.add(&row, p[2], wi);
    }
    let coef = ne.solve()?.to_vec();
    Some(Skin { degree, coef, scale: SCALE_M, rms: 0.0 })
}

/// Fits one model; a cylinder starts from `prev` when given (the previous round of a
/// reweighting), else from the quadratic.
fn fit_kind(kind: Kind, pts: &[[f64; 3]], w: &[f64], prev: Option<&Part>) -> Option<Part> {
    match (kind, prev) {
        (Kind::Plane, _) => fit_poly(pts, w, 1).map(Part::Poly),
        (Kind::Quadratic, _) => fit_poly(pts, w, 2).map(Part::Poly),
        (Kind::Quartic, _) => fit_poly(pts, w, 4).map(Part::Poly),
        (Kind::Cylinder, Some(Part::Cyl(c))) => Cylinder::refine(pts, w, c.p).map(Part::Cyl),
        (Kind::Cylinder, _) => {
            let q = fit_poly(pts, w, 2)?;
            Cylinder::fit(pts, w, &q).map(Part::Cyl)
        }
    }
}

/// Median of a slice (empty: 0), reordering it.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    v.select_nth_unstable_by(mid, f64::total_cmp);
    v[mid]
}

/// Largest sigma an upper envelope uses to judge a cell as below the skin, metres: about
/// the fused surface's noise at 0.35 m (the far end of a hand-held scan). A noisier scan
/// only lifts the first-pass skin onto its noise peaks, which the final ring fit undoes.
const ENVELOPE_SIGMA_CAP_M: f64 = 1e-4;

/// Most reweighting rounds of a robust fit (it usually settles in fewer than ten).
const MAX_ROUNDS: usize = 20;

/// Robust fit of one model: Tukey biweights on the residuals (4.685 robust sigmas),
/// times the prior weights `w0`. With `upper`, residuals below the model are weighed as
/// an envelope: a cell more than two sigmas below fades out smoothly, so a wound's bed
/// cannot hold the surface down. Returns the model, the robust sigma and the final weights.
pub(crate) fn robust(kind: Kind, pts: &[[f64; 3]], w0: &[f64], upper: bool) -> Option<(Part, f64, Vec<f64>)> {
    let mut w = w0.to_vec();
    let mut part = fit_kind(kind, pts, &w, None)?;
    let mut sigma = f64::INFINITY;
    for round in 0..MAX_ROUNDS {
        let res: Vec<f64> = pts.iter().map(|p| p[2] - part.eval(p[0], p[1])).collect();
        // Sigma of the skin: from the residuals above the model when it is an envelope
        // (the cells below are wound), else from all with weight.
        let mut a: Vec<f64> = if upper {
            res.iter().zip(w0).filter(|(r, &wi)| **r > 0.0 && wi > 0.0).map(|(r, _)| *r).collect()
        } else {
            res.iter().zip(w0).filter(|(_, &wi)| wi > 0.0).map(|(r, _)| r.abs()).collect()
        };
        let new_sigma = (1.4826 * median(&mut a)).max(2e-5);
        // An envelope judges "below" on the sensor's noise scale at most: a model sunk
        // into a wide wound leaves a large scatter above it, which must not widen the
        // band that keeps the wound's cells in the fit (a self-consistent wrong fit).
        let s_used = if upper { new_sigma.min(ENVELOPE_SIGMA_CAP_M) } else { new_sigma };
        let k = 4.685 * new_sigma;
        for ((wi, &w0i), &r) in w.iter_mut().zip(w0).zip(&res) {
            let tukey = |r: f64| if r.abs() >= k { 0.0 } else { (1.0 - (r / k).powi(2)).powi(2) };
            *wi = w0i
                * if upper {
                    if r >= 0.0 {
                        tukey(r)
                    } else {
                        let t = (-r / s_used - 2.0).max(0.0);
                        (-t * t).exp()
                    }
                } else {
                    tukey(r)
                };
        }
        let next = fit_kind(kind, pts, &w, Some(&part))?;
        let converged = (new_sigma - sigma).abs() < 1e-3 * new_sigma && round > 2;
        part = next;
        sigma = new_sigma;
        if converged {
            break;
        }
    }
    Some((part, sigma, w))
}

/// First-pass skin over a whole height field: an upper envelope, the quadratic, or the
/// quartic or the cylinder when the quadratic leaves a misfit they remove: the envelope
/// that has the largest (distance-weighted) share of cells within three sigmas of it
/// wins, on the smallest sigma any of them reached. Returns the surface and that share. `w0` weighs cells by their
/// distance from the target.
pub(crate) fn envelope(pts: &[[f64; 3]], w0: &[f64]) -> Option<(SkinSurface, f64)> {
    // A deterministic subsample: ten thousand cells pin six to fifteen parameters.
    let stride = (pts.len() / 10_000).max(1);
    let pts: Vec<[f64; 3]> = pts.iter().step_by(stride).copied().collect();
    let w0: Vec<f64> = w0.iter().step_by(stride).copied().collect();
    let (pts, w0) = (&pts[..], &w0[..]);
    let total: f64 = w0.iter().sum::<f64>().max(1e-12);
    let fits: Vec<(Kind, Part, f64)> = [Kind::Quadratic, Kind::Quartic, Kind::Cylinder]
        .into_iter()
        .filter_map(|kind| robust(kind, pts, w0, true).map(|(part, sigma, _)| (kind, part, sigma)))
        .collect();
    // Judge every envelope on one scale, the smallest sigma any reached: a model that
    // follows the skin has more of it within three such sigmas. (Each model's own sigma
    // would reward one that drops a limb's flanks as "below", or one sunk into a wide
    // wound whose scatter makes its own band wide.)
    let common = fits.iter().map(|f| f.2).fold(f64::INFINITY, f64::min).max(2e-5);
    let mut best: Option<(f64, SkinSurface, f64)> = None;
    for (kind, part, sigma) in fits {
        let kept: f64 = pts
            .iter()
            .zip(w0)
            .filter(|(p, _)| (p[2] - part.eval(p[0], p[1])).abs() <= 3.0 * common)
            .map(|(_, w)| w)
            .sum::<f64>()
            / total;
        // The quartic's extra freedom must earn its place: 3 % more skin.
        let score = kept - if kind == Kind::Quartic { 0.03 } else { 0.0 };
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, SkinSurface::single(part, sigma, pts.len()), kept));
        }
    }
    best.map(|(_, s, kept)| (s, kept))
}

/// Sectors a ring is split into for the leave-one-out prediction.
const SECTORS: usize = 8;
/// Scale of the blend: a model whose prediction error (mean square) is this fraction
/// above the best one's weighs `1/e` as much.
const BLEND_TAU: f64 = 0.1;

/// Chooses the skin model on ring cells `pts` (prior weights `w0`, soft ring membership)
/// around `centre`: each candidate is fitted robustly with one 45° sector left out and
/// predicts it; candidates are blended by that prediction error. Returns the blend and
/// the runner-up model (its disagreement across the hole feeds the uncertainty).
pub(crate) fn choose(pts: &[[f64; 3]], w0: &[f64], centre: [f64; 2]) -> Option<(SkinSurface, Option<Part>)> {
    let sector: Vec<usize> = pts
        .iter()
        .map(|p| {
            let a = (p[1] - centre[1]).atan2(p[0] - centre[0]) + std::f64::consts::PI;
            ((a / std::f64::consts::TAU * SECTORS as f64) as usize).min(SECTORS - 1)
        })
        .collect();
    // Subsample for the leave-one-out fits (deterministic stride): thousands of cells
    // pin a model as well as tens of thousands.
    let stride = (pts.len() / 4000).max(1);
    let sub: Vec<usize> = (0..pts.len()).step_by(stride).collect();
    let sp: Vec<[f64; 3]> = sub.iter().map(|&i| pts[i]).collect();
    let sw: Vec<f64> = sub.iter().map(|&i| w0[i]).collect();
    let ss: Vec<usize> = sub.iter().map(|&i| sector[i]).collect();
    let mut cands: Vec<(Kind, f64)> = Vec::new();
    for kind in [Kind::Plane, Kind::Quadratic, Kind::Quartic, Kind::Cylinder] {
        let mut err = 0.0;
        let mut n = 0.0;
        let mut ok = true;
        for k in 0..SECTORS {
            let held: f64 = ss.iter().zip(&sw).filter(|(s, _)| **s == k).map(|(_, w)| w).sum();
            if held <= 0.0 {
                continue;
            }
            let w: Vec<f64> = sw.iter().zip(&ss).map(|(&w, &s)| if s == k { 0.0 } else { w }).collect();
            let Some((part, sigma, _)) = robust(kind, &sp, &w, false) else {
                ok = false;
                break;
            };
            // Robust prediction error of the held-out sector: residuals clipped at four
            // fitted sigmas, so a stray spot of fusion noise does not decide the model.
            let clip = 4.0 * sigma.max(2e-5) * 4.0;
            for ((p, &s), &wi) in sp.iter().zip(&ss).zip(&sw) {
                if s == k && wi > 0.0 {
                    let r = (p[2] - part.eval(p[0], p[1])).clamp(-clip, clip);
                    err += wi * r * r;
                    n += wi;
                }
            }
        }
        if ok && n > 0.0 {
            cands.push((kind, err / n));
        }
    }
    let best = cands.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return None;
    }
    cands.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut parts = Vec::new();
    let mut runner_up = None;
    let mut rms_sq = 0.0;
    let mut total = 0.0;
    let mut params = 0.0;
    for (rank, (kind, e)) in cands.iter().enumerate() {
        let weight = (-(e / best.max(1e-18) - 1.0) / BLEND_TAU).exp();
        if weight < 1e-3 && rank > 1 {
            continue;
        }
        let Some((part, sigma, _)) = robust(*kind, pts, w0, false) else { continue };
        if rank == 1 {
            runner_up = Some(part.clone());
        }
        if weight < 1e-3 {
            continue;
        }
        rms_sq += weight * sigma * sigma;
        params += weight * part.params() as f64;
        total += weight;
        parts.push((weight, part));
    }
    if parts.is_empty() {
        return None;
    }
    for p in &mut parts {
        p.0 /= total;
    }
    let model = parts.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map(|p| p.1.model())?;
    let surface = SkinSurface {
        degree: degree_for((params / total).round() as usize),
        rms: (rms_sq / total).sqrt(),
        n_points: w0.iter().filter(|&&w| w > 0.0).count(),
        model,
        parts,
    };
    Some((surface, runner_up))
}

impl SkinSurface {
    /// RMS difference between this surface and `other` over the given points.
    pub(crate) fn rms_difference(&self, other: &Part, xy: &[[f64; 2]]) -> f64 {
        if xy.is_empty() {
            return 0.0;
        }
        (xy.iter().map(|q| (self.eval(q[0], q[1]) - other.eval(q[0], q[1])).powi(2)).sum::<f64>() / xy.len() as f64)
            .sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cells of a height field `h` on a `half`-mm grid (0.5 mm), skipping a disc of
    /// `hole` mm around the centre, with a little deterministic noise.
    fn ring(half: f64, hole: f64, h: impl Fn(f64, f64) -> Option<f64>) -> Vec<[f64; 3]> {
        let n = (half / 0.5) as i32;
        let mut out = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for j in -n..=n {
            for i in -n..=n {
                let (x, y) = (f64::from(i) * 5e-4, f64::from(j) * 5e-4);
                if (x * x + y * y).sqrt() < hole * 1e-3 || (x * x + y * y).sqrt() > half * 1e-3 {
                    continue;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = ((state % 1000) as f64 / 1000.0 - 0.5) * 1e-4;
                if let Some(z) = h(x, y) {
                    out.push([x, y, z + noise]);
                }
            }
        }
        out
    }

    fn cylinder(r: f64) -> impl Fn(f64, f64) -> Option<f64> {
        // Axis at 30° in the tangent plane, slightly off the origin.
        move |x: f64, y: f64| {
            let (s, c) = (30f64.to_radians() + std::f64::consts::FRAC_PI_2).sin_cos();
            let u = x * c + y * s - 0.002;
            (u.abs() < r * 0.95).then(|| (r * r - u * u).sqrt() - r)
        }
    }

    fn ellipsoid(r1: f64, r2: f64) -> impl Fn(f64, f64) -> Option<f64> {
        // Principal radii r1 (along x) and r2 (along y) at the pole: x²/a² + y²/b² + z²/c² = 1
        // with a² = r1·c, b² = r2·c.
        move |x: f64, y: f64| {
            let c = 0.15;
            let q = 1.0 - x * x / (r1 * c) - y * y / (r2 * c);
            (q > 0.0).then(|| c * q.sqrt() - c)
        }
    }

    #[test]
    fn the_skin_model_picks_the_cylinder_on_a_limb() {
        let pts = ring(24.0, 10.0, cylinder(0.038));
        let w = vec![1.0; pts.len()];
        let (s, _) = choose(&pts, &w, [0.0, 0.0]).unwrap();
        assert_eq!(s.kind_name(), "cylinder", "{:?}", s.weights());
        // Predicts the hole within 20 µm.
        let truth = cylinder(0.038);
        for (x, y) in [(0.0, 0.0), (0.005, 0.003), (-0.004, 0.007)] {
            let e = (s.eval(x, y) - truth(x, y).unwrap()).abs();
            assert!(e < 2e-5, "error {e} at {x},{y}");
        }
    }

    #[test]
    fn the_skin_model_follows_an_ellipsoid_with_a_curved_polynomial() {
        let truth = ellipsoid(0.09, 0.14);
        let pts = ring(45.0, 25.0, &truth);
        let w = vec![1.0; pts.len()];
        let (s, _) = choose(&pts, &w, [0.0, 0.0]).unwrap();
        assert!(matches!(s.kind_name(), "quadratic" | "quartic"), "{:?}", s.weights());
        for (x, y) in [(0.0, 0.0), (0.015, 0.01), (-0.02, 0.02)] {
            let e = (s.eval(x, y) - truth(x, y).unwrap()).abs();
            assert!(e < 5e-5, "error {e} at {x},{y}");
        }
    }

    #[test]
    fn the_skin_model_is_a_plane_or_quadratic_on_flat_skin() {
        let pts = ring(20.0, 8.0, |x, y| Some(0.01 * x - 0.02 * y));
        let w = vec![1.0; pts.len()];
        let (s, _) = choose(&pts, &w, [0.0, 0.0]).unwrap();
        assert!(matches!(s.kind_name(), "plane" | "quadratic"), "{:?}", s.weights());
        assert!(s.eval(0.0, 0.0).abs() < 2e-5);
    }

    #[test]
    fn the_envelope_rises_to_the_skin_over_a_wide_flat_bed() {
        // A 30 mm wide, 4 mm deep flat-bedded punch on a 35 mm limb: the bed is a plane
        // that a band fit locks onto. The envelope must stay on the skin.
        let limb = cylinder(0.035);
        let pts = ring(45.0, 0.0, |x, y| {
            let s = limb(x, y)?;
            Some(if (x * x + y * y).sqrt() < 0.015 { s.min(-0.004) } else { s })
        });
        let w: Vec<f64> = pts.iter().map(|p| (-(p[0] * p[0] + p[1] * p[1]) / (2.0 * 0.027f64.powi(2))).exp()).collect();
        let (s, _) = envelope(&pts, &w).unwrap();
        let e = (s.eval(0.0, 0.0) - 0.0).abs();
        assert!(e < 2e-4, "the envelope is {e} m off the skin at the wound centre ({})", s.kind_name());
    }
}
