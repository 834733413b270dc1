//! Wound segmentation and measurement on a fused TSDF volume.
//!
//! Both methods work in a local frame at the wound: a robust RANSAC plane through the
//! surrounding skin gives the normal `n`; the fused surface is ray cast along `-n` on a
//! regular grid (0.5 mm) into a height field `h(x, y)`; the skin is a polynomial
//! surface `s(x, y)` (quadratic, or quartic when the quadratic leaves a curvature
//! misfit, as on a limb) fitted robustly to an annulus of skin around the wound; the
//! wound depth is `D = s - h`.
//!
//! - [`measure_auto`]: the most significant depression near the target, with thresholds
//!   relative to the local noise and the depression's own depth (`detect`); its outline is
//!   a low contour of the normal depth (at most `rim_level_m`), moved to where the wall
//!   meets the skin by fitting a blurred, clipped ramp to the depth profiles along the
//!   outline's normals (`rim`).
//! - [`measure_polygon`]: a clinician's outline in a keyframe image, ray cast onto the
//!   fused surface.
//!
//! Definitions of every measurement, and the uncertainty model behind each `±`, are in
//! `docs/measurement.md`; the phantom's ground truth uses the same definitions.

mod detect;
mod frame;
mod skin;

use ndarray::Array2;

use self::skin::SkinSurface;
use crate::geometry::{Intrinsics, Pose, Vec3};
use crate::linalg::{sym3_eigen, NormalEquations};
use crate::phantom::length_width;
use crate::tsdf::{TsdfVolume, BRICK};
use crate::ReconError;
pub use synth::View;
use uncertainty::{Boundary, Figures};

mod polygon;
mod rim;
mod synth;
mod uncertainty;
mod volume;

/// Segmentation and measurement settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureConfig {
    /// Height-field cell size, metres.
    pub cell_m: f64,
    /// Wounds are searched within this distance of the target, metres.
    pub max_radius_m: f64,
    /// Deepest level of the first outline contour, metres (the rim is then fitted from it).
    pub rim_level_m: f64,
    /// Gap between the wound outline and the skin annulus used for the skin fit, metres.
    pub skin_margin_m: f64,
    /// Width of that annulus, metres.
    pub skin_ring_m: f64,
    /// Coverage factor of the reported uncertainties (3 ≈ 99.7 % for Gaussian errors).
    pub coverage_factor: f64,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            cell_m: 0.0005,
            max_radius_m: 0.06,
            rim_level_m: 0.0008,
            skin_margin_m: 0.002,
            skin_ring_m: 0.012,
            coverage_factor: 3.0,
        }
    }
}

/// A value with its uncertainty: the true value lies in `value ± uncertainty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Best estimate.
    pub value: f64,
    /// Half-width of the interval.
    pub uncertainty: f64,
}

impl Measurement {
    /// Whether `x` lies inside the interval.
    pub fn contains(&self, x: f64) -> bool {
        (x - self.value).abs() <= self.uncertainty
    }
}

impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ± {:.2}", self.value, self.uncertainty)
    }
}

/// How the outline was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlineMethod {
    /// Automatic depth segmentation around a target point.
    Automatic,
    /// A clinician-drawn polygon projected onto the surface.
    ClinicianPolygon,
}

/// The skin model fitted around the wound, by its class (the one with the largest weight
/// when several are blended, see `docs/measurement.md`, *Finding the wound*). The stored
/// values are these two; a plane and a cylinder count as quadratic (at most six
/// parameters), the trace ([`AutoTrace::skin`]) names the exact models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkinModel {
    /// A surface of at most six parameters: plane, quadratic polynomial or cylinder.
    Quadratic,
    /// Quartic polynomial height field.
    Quartic,
}

/// Why the automatic segmentation found no wound it could measure. Each reason has a
/// stable code ([`WoundNotFound::code`], also [`ReconError::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WoundNotFound {
    /// No depression significantly below the skin near the target.
    NoDepression,
    /// The depression, or the skin ring around it that its measurement needs, reaches the
    /// edge of the largest search area.
    ExceedsScanRegion,
    /// A depression was found but no closed outline around it.
    RimNotSeen,
}

impl WoundNotFound {
    /// Stable code: `no_depression`, `wound_exceeds_scan_region` or `rim_not_seen`.
    pub fn code(self) -> &'static str {
        match self {
            WoundNotFound::NoDepression => "no_depression",
            WoundNotFound::ExceedsScanRegion => "wound_exceeds_scan_region",
            WoundNotFound::RimNotSeen => "rim_not_seen",
        }
    }
}

impl std::fmt::Display for WoundNotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WoundNotFound::NoDepression => "no depression significantly below the skin near the target",
            WoundNotFound::ExceedsScanRegion => "the depression reaches the edge of the largest search area",
            WoundNotFound::RimNotSeen => "no closed outline around the wound",
        })
    }
}

impl From<WoundNotFound> for ReconError {
    fn from(w: WoundNotFound) -> Self {
        ReconError::WoundNotFound(w)
    }
}

/// Wound measurements, in clinical units (mm, mm², mm³), each with its `±`.
#[derive(Debug, Clone, PartialEq)]
pub struct WoundMeasurements {
    /// Area enclosed by the outline, measured on the skin surface.
    pub outline_area_mm2: Measurement,
    /// Area of the wound bed surface.
    pub bed_area_mm2: Measurement,
    /// Outline length on the skin.
    pub perimeter_mm: Measurement,
    /// Longest straight distance between two outline points.
    pub length_mm: Measurement,
    /// Extent perpendicular to the length, in the skin tangent plane.
    pub width_mm: Measurement,
    /// Deepest point below the skin, along the skin normal.
    pub max_depth_mm: Measurement,
    /// Volume divided by outline area.
    pub mean_depth_mm: Measurement,
    /// Volume between the skin surface and the wound bed.
    pub volume_mm3: Measurement,
    /// Outline on the skin, world coordinates (metres), counter-clockwise seen from outside.
    pub outline_world: Vec<Vec3>,
    /// Outline centroid on the skin, world coordinates.
    pub centre_world: Vec3,
    /// Outward skin normal at the centre.
    pub normal_world: Vec3,
    /// Endpoints of the length, world coordinates.
    pub length_endpoints_world: [Vec3; 2],
    /// How the outline was obtained.
    pub method: OutlineMethod,
    /// Skin model used.
    pub skin_model: SkinModel,
    /// Robust RMS of the skin fit residuals, mm.
    pub skin_residual_mm: f64,
    /// Fraction of grid cells inside the outline without a fused surface (filled by interpolation).
    pub missing_fraction: f64,
}

/// Polynomial skin height field `s(x, y)` in the local frame (coordinates scaled by `scale`).
#[derive(Debug, Clone)]
struct Skin {
    degree: usize,
    coef: Vec<f64>,
    scale: f64,
    rms: f64,
}

fn terms(degree: usize) -> Vec<(i32, i32)> {
    let mut t = Vec::new();
    for d in 0..=degree as i32 {
        for i in 0..=d {
            t.push((d - i, i));
        }
    }
    t
}

impl Skin {
    fn eval(&self, x: f64, y: f64) -> f64 {
        let (u, v) = (x / self.scale, y / self.scale);
        terms(self.degree).iter().zip(&self.coef).map(|(&(a, b), c)| c * u.powi(a) * v.powi(b)).sum()
    }

    fn grad(&self, x: f64, y: f64) -> (f64, f64) {
        let (u, v) = (x / self.scale, y / self.scale);
        let mut gx = 0.0;
        let mut gy = 0.0;
        for (&(a, b), c) in terms(self.degree).iter().zip(&self.coef) {
            if a > 0 {
                gx += c * f64::from(a) * u.powi(a - 1) * v.powi(b);
            }
            if b > 0 {
                gy += c * f64::from(b) * u.powi(a) * v.powi(b - 1);
            }
        }
        (gx / self.scale, gy / self.scale)
    }

    /// Least-squares fit to `(x, y, h)` points.
    fn fit(points: &[[f64; 3]], degree: usize, scale: f64) -> Option<Skin> {
        let t = terms(degree);
        if points.len() < t.len() * 3 {
            return None;
        }
        let mut ne = NormalEquations::new(t.len());
        let mut row = vec![0.0; t.len()];
        for p in points {
            let (u, v) = (p[0] / scale, p[1] / scale);
            for (k, &(a, b)) in t.iter().enumerate() {
                row[k] = u.powi(a) * v.powi(b);
            }
            ne.add(&row, p[2], 1.0);
        }
        let coef = ne.solve()?.to_vec();
        let mut s = Skin { degree, coef, scale, rms: 0.0 };
        let ss: f64 = points.iter().map(|p| (p[2] - s.eval(p[0], p[1])).powi(2)).sum();
        s.rms = (ss / points.len() as f64).sqrt();
        Some(s)
    }

    /// Robust fit: iteratively drops points whose residual exceeds 3 robust sigmas.
    #[cfg(test)]
    fn fit_robust(points: &[[f64; 3]], degree: usize, scale: f64) -> Option<Skin> {
        let mut s = Skin::fit(points, degree, scale)?;
        for _ in 0..5 {
            let mut res: Vec<f64> = points.iter().map(|p| (p[2] - s.eval(p[0], p[1])).abs()).collect();
            let mid = res.len() / 2;
            res.select_nth_unstable_by(mid, f64::total_cmp);
            let sigma = 1.4826 * res[mid];
            let lim = (3.0 * sigma).max(5e-5);
            let kept: Vec<[f64; 3]> =
                points.iter().copied().filter(|p| (p[2] - s.eval(p[0], p[1])).abs() < lim).collect();
            s = Skin::fit(&kept, degree, scale)?;
        }
        Some(s)
    }
}

/// The fused surface resampled as heights along the local normal.
#[derive(Clone)]
struct HeightField {
    origin: Vec3,
    e1: Vec3,
    e2: Vec3,
    n: Vec3,
    cell: f64,
    half: usize,
    /// Height above the local plane, metres (NaN where nothing was found).
    h: Array2<f64>,
    /// Fusion weight at the surface (0 where nothing was found).
    w: Array2<f64>,
}

impl HeightField {
    fn side(&self) -> usize {
        2 * self.half + 1
    }

    fn xy(&self, i: usize, j: usize) -> (f64, f64) {
        ((i as f64 - self.half as f64) * self.cell, (j as f64 - self.half as f64) * self.cell)
    }

    fn world(&self, x: f64, y: f64, z: f64) -> Vec3 {
        self.origin + self.e1 * x + self.e2 * y + self.n * z
    }

    fn local(&self, p: Vec3) -> [f64; 3] {
        let d = p - self.origin;
        [d.dot(self.e1), d.dot(self.e2), d.dot(self.n)]
    }

    fn build(vol: &TsdfVolume, origin: Vec3, n: Vec3, half_m: f64, cell: f64) -> HeightField {
        // The grid axes follow `n` continuously (away from |n.x| = 0.9): `n × x̂`.
        let e1 = n.any_perpendicular();
        let e2 = n.cross(e1);
        let half = (half_m / cell).ceil() as usize;
        let side = 2 * half + 1;
        let mut f = HeightField {
            origin,
            e1,
            e2,
            n,
            cell,
            half,
            h: Array2::from_elem((side, side), f64::NAN),
            w: Array2::zeros((side, side)),
        };
        let top = 0.02;
        let mut sampler = vol.sampler();
        for j in 0..side {
            for i in 0..side {
                let (x, y) = f.xy(i, j);
                let start = f.world(x, y, top);
                if let Some(t) = sampler.raycast(start, -n, 0.0, top + 0.045) {
                    f.h[[j, i]] = top - t;
                    let w = sampler.sample(start - n * t).map_or(0.0, |s| s.weight);
                    f.w[[j, i]] = w;
                }
            }
        }
        f
    }

    /// Bilinear interpolation of a grid at local `(x, y)`.
    fn bilinear(&self, g: &Array2<f64>, x: f64, y: f64) -> f64 {
        let fi = x / self.cell + self.half as f64;
        let fj = y / self.cell + self.half as f64;
        let max = (self.side() - 1) as f64;
        let fi = fi.clamp(0.0, max - 1e-9);
        let fj = fj.clamp(0.0, max - 1e-9);
        let (i0, j0) = (fi.floor() as usize, fj.floor() as usize);
        let (tx, ty) = (fi - i0 as f64, fj - j0 as f64);
        let v = |i: usize, j: usize| g[[j, i]];
        (v(i0, j0) * (1.0 - tx) + v(i0 + 1, j0) * tx) * (1.0 - ty)
            + (v(i0, j0 + 1) * (1.0 - tx) + v(i0 + 1, j0 + 1) * tx) * ty
    }
}

/// Zero-crossing points of the TSDF within `radius` of `centre`, with the summed gradient
/// direction (which side is free space).
fn surface_points(vol: &TsdfVolume, centre: Vec3, radius: f64) -> (Vec<Vec3>, Vec3) {
    let vs = vol.voxel_size();
    let bm = vs * BRICK as f64;
    let mut pts = Vec::new();
    let mut grad = Vec3::ZERO;
    let mut s = vol.sampler();
    for b in vol.bricks() {
        let c = Vec3::new(
            (f64::from(b.key.x) + 0.5) * bm,
            (f64::from(b.key.y) + 0.5) * bm,
            (f64::from(b.key.z) + 0.5) * bm,
        );
        if (c - centre).norm() > radius + bm {
            continue;
        }
        for (i, (&sd, &w)) in b.sdf.iter().zip(b.weight.iter()).enumerate() {
            if w <= 0.0 || sd.abs() > 0.5 {
                continue;
            }
            let g = [
                i64::from(b.key.x) * 8 + (i % BRICK) as i64,
                i64::from(b.key.y) * 8 + ((i / BRICK) % BRICK) as i64,
                i64::from(b.key.z) * 8 + (i / (BRICK * BRICK)) as i64,
            ];
            for axis in 0..3 {
                let mut o = g;
                o[axis] += 1;
                let Some((s2, w2)) = s.voxel(o) else { continue };
                if w2 <= 0.0 || (sd < 0.0) == (s2 < 0.0) || s2.abs() > 0.5 {
                    continue;
                }
                let t = f64::from(sd / (sd - s2));
                let mut p = [g[0] as f64 + 0.5, g[1] as f64 + 0.5, g[2] as f64 + 0.5];
                p[axis] += t;
                let p = Vec3::new(p[0] * vs, p[1] * vs, p[2] * vs);
                if (p - centre).norm() <= radius {
                    pts.push(p);
                    let mut gv = [0.0; 3];
                    gv[axis] = f64::from((s2 - sd).signum());
                    grad = grad + Vec3::from_array(gv);
                }
            }
        }
    }
    (pts, grad)
}

/// RANSAC plane (deterministic sampling) refined by least squares on its inliers.
/// Returns a point on the plane and the unit normal.
fn ransac_plane(pts: &[Vec3], threshold: f64) -> Option<(Vec3, Vec3)> {
    if pts.len() < 50 {
        return None;
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let stride = (pts.len() / 4000).max(1);
    let mut best: Option<(usize, Vec3, Vec3)> = None;
    for _ in 0..300 {
        let (a, b, c) = (pts[next(pts.len())], pts[next(pts.len())], pts[next(pts.len())]);
        let n = (b - a).cross(c - a);
        if n.norm() < 1e-9 {
            continue;
        }
        let n = n.normalized();
        let count = pts.iter().step_by(stride).filter(|p| (**p - a).dot(n).abs() < threshold).count();
        if best.as_ref().is_none_or(|bb| count > bb.0) {
            best = Some((count, a, n));
        }
    }
    let (_, a, n) = best?;
    let inliers: Vec<Vec3> = pts.iter().copied().filter(|p| (*p - a).dot(n).abs() < threshold).collect();
    let mean = inliers.iter().fold(Vec3::ZERO, |s, p| s + *p) * (1.0 / inliers.len() as f64);
    let mut cov = [[0.0; 3]; 3];
    for p in &inliers {
        let d = (*p - mean).to_array();
        for r in 0..3 {
            for c in 0..3 {
                cov[r][c] += d[r] * d[c];
            }
        }
    }
    let (_, vecs) = sym3_eigen(cov);
    let normal = Vec3::new(vecs[0][0], vecs[1][0], vecs[2][0]).normalized();
    Some((mean, normal))
}

/// Chamfer distance (cells) from every cell to the nearest `true` cell of `mask`.
fn distance_to(mask: &Array2<bool>) -> Array2<f64> {
    let (h, w) = mask.dim();
    let big = 1e9f64;
    let mut d = Array2::from_shape_fn((h, w), |(j, i)| if mask[[j, i]] { 0.0 } else { big });
    let (a, b) = (1.0, std::f64::consts::SQRT_2);
    for j in 0..h {
        for i in 0..w {
            let mut v = d[[j, i]];
            if i > 0 {
                v = v.min(d[[j, i - 1]] + a);
            }
            if j > 0 {
                v = v.min(d[[j - 1, i]] + a);
                if i > 0 {
                    v = v.min(d[[j - 1, i - 1]] + b);
                }
                if i + 1 < w {
                    v = v.min(d[[j - 1, i + 1]] + b);
                }
            }
            d[[j, i]] = v;
        }
    }
    for j in (0..h).rev() {
        for i in (0..w).rev() {
            let mut v = d[[j, i]];
            if i + 1 < w {
                v = v.min(d[[j, i + 1]] + a);
            }
            if j + 1 < h {
                v = v.min(d[[j + 1, i]] + a);
                if i + 1 < w {
                    v = v.min(d[[j + 1, i + 1]] + b);
                }
                if i > 0 {
                    v = v.min(d[[j + 1, i - 1]] + b);
                }
            }
            d[[j, i]] = v;
        }
    }
    d
}

/// 4-connected flood fill from `seed` over cells where `ok` holds.
fn flood(ok: &Array2<bool>, seed: (usize, usize)) -> Array2<bool> {
    let (h, w) = ok.dim();
    let mut out = Array2::from_elem((h, w), false);
    if !ok[[seed.1, seed.0]] {
        return out;
    }
    let mut stack = vec![seed];
    out[[seed.1, seed.0]] = true;
    while let Some((i, j)) = stack.pop() {
        let mut push = |ii: usize, jj: usize| {
            if ok[[jj, ii]] && !out[[jj, ii]] {
                out[[jj, ii]] = true;
                stack.push((ii, jj));
            }
        };
        if i > 0 {
            push(i - 1, j);
        }
        if i + 1 < w {
            push(i + 1, j);
        }
        if j > 0 {
            push(i, j - 1);
        }
        if j + 1 < h {
            push(i, j + 1);
        }
    }
    out
}

/// Closed contours of `f` at `level` (marching squares on cell centres), as local
/// `(x, y)` polygons. Values below the level (or NaN) are outside.
fn contours(field: &HeightField, f: &Array2<f64>, level: f64) -> Vec<Vec<[f64; 2]>> {
    let side = field.side();
    let inside = |i: usize, j: usize| f[[j, i]] >= level;
    let val = |i: usize, j: usize| {
        let v = f[[j, i]];
        if v.is_nan() {
            level - 1.0
        } else {
            v
        }
    };
    // Edge ids: horizontal edge (i,j)-(i+1,j) = 2*(j*side+i), vertical (i,j)-(i,j+1) = +1.
    let point = |id: usize| -> [f64; 2] {
        let cell = id / 2;
        let (i, j) = (cell % side, cell / side);
        let (i2, j2) = if id.is_multiple_of(2) { (i + 1, j) } else { (i, j + 1) };
        let (a, b) = (val(i, j), val(i2, j2));
        let t = ((level - a) / (b - a)).clamp(0.0, 1.0);
        let (x0, y0) = field.xy(i, j);
        let (x1, y1) = field.xy(i2, j2);
        [x0 + (x1 - x0) * t, y0 + (y1 - y0) * t]
    };
    let mut next: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for j in 0..side - 1 {
        for i in 0..side - 1 {
            // Corners counter-clockwise: (i,j), (i+1,j), (i+1,j+1), (i,j+1).
            let c = [inside(i, j), inside(i + 1, j), inside(i + 1, j + 1), inside(i, j + 1)];
            let e = [
                2 * (j * side + i),         // bottom: (i,j)-(i+1,j)
                2 * (j * side + i + 1) + 1, // right: (i+1,j)-(i+1,j+1)
                2 * ((j + 1) * side + i),   // top: (i,j+1)-(i+1,j+1)
                2 * (j * side + i) + 1,     // left: (i,j)-(i,j+1)
            ];
            // Crossing on side k between corner k and k+1; oriented so inside is on the left.
            let mut crossings: Vec<(usize, bool)> = Vec::new();
            for k in 0..4 {
                let (a, b) = (c[k], c[(k + 1) % 4]);
                if a != b {
                    crossings.push((e[k], b));
                }
            }
            if crossings.is_empty() {
                continue;
            }
            let saddle_join = if crossings.len() == 4 {
                let m = (val(i, j) + val(i + 1, j) + val(i + 1, j + 1) + val(i, j + 1)) / 4.0;
                m >= level
            } else {
                false
            };
            // Segments run from an exit crossing (inside → outside along the CCW walk)
            // to an entry crossing, keeping the inside on the left. Saddles: the
            // centre value decides whether the two inside corners are joined.
            let n = crossings.len();
            let step = if n == 4 && saddle_join { 1 } else { n - 1 };
            for (k, &(eid, enters)) in crossings.iter().enumerate() {
                if enters {
                    continue;
                }
                next.insert(eid, crossings[(k + step) % n].0);
            }
        }
    }
    let mut out = Vec::new();
    let mut used = std::collections::HashSet::new();
    // Sorted so the outline (and every measurement fitted along it) is the same on every
    // run: hash-map order is randomised per process.
    let mut keys: Vec<usize> = next.keys().copied().collect();
    keys.sort_unstable();
    for start in keys {
        if used.contains(&start) {
            continue;
        }
        let mut poly = Vec::new();
        let mut cur = start;
        let mut closed = false;
        while used.insert(cur) {
            poly.push(point(cur));
            match next.get(&cur) {
                Some(&n) => {
                    cur = n;
                    if cur == start {
                        closed = true;
                        break;
                    }
                }
                None => break,
            }
        }
        if closed && poly.len() >= 8 {
            out.push(poly);
        }
    }
    out
}

fn shoelace(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    (0..n)
        .map(|i| {
            let (a, b) = (p[i], p[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        / 2.0
}

/// Whether `p` lies inside the polygon `poly` (even-odd rule; an empty polygon has no inside).
pub fn point_in_polygon(p: [f64; 2], poly: &[[f64; 2]]) -> bool {
    if poly.is_empty() {
        return false;
    }
    let mut inside = false;
    let n = poly.len();
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0] {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Integrates `f(x, y)` over a polygon by scanlines (rows `dy` apart, samples `dx` apart).
/// Where the horizontal line at `y` crosses the closed polygon `poly`, sorted (pairs of
/// entries and exits), into `xs`.
fn row_crossings(poly: &[[f64; 2]], y: f64, xs: &mut Vec<f64>) {
    xs.clear();
    let n = poly.len();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + 1) % n]);
        if (a[1] > y) != (b[1] > y) {
            xs.push(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
        }
    }
    xs.sort_by(f64::total_cmp);
}

fn integrate_polygon(poly: &[[f64; 2]], step: f64, mut f: impl FnMut(f64, f64) -> f64) -> f64 {
    let (mut ymin, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in poly {
        ymin = ymin.min(p[1]);
        ymax = ymax.max(p[1]);
    }
    let rows = ((ymax - ymin) / step).ceil().max(1.0) as usize;
    let dy = (ymax - ymin) / rows as f64;
    let mut xs = Vec::new();
    let mut total = 0.0;
    for r in 0..rows {
        let y = ymin + (r as f64 + 0.5) * dy;
        row_crossings(poly, y, &mut xs);
        for pair in xs.chunks_exact(2) {
            let (x0, x1) = (pair[0], pair[1]);
            let k = ((x1 - x0) / step).ceil().max(1.0) as usize;
            let dx = (x1 - x0) / k as f64;
            for s in 0..k {
                total += f(x0 + (s as f64 + 0.5) * dx, y) * dx * dy;
            }
        }
    }
    total
}

struct Prepared {
    field: HeightField,
    skin: SkinSurface,
    alt_skin_delta: f64,
    missing_fraction: f64,
    depth: Array2<f64>,
    grad_h: (Array2<f64>, Array2<f64>),
}

/// The skin ring around a wound of `cells` grid cells: (inner guard, width), metres.
/// The width grows with the wound (`0.6·r_eq`, from `skin_ring_m` up to 20 mm): a wide
/// wound's skin model must hold across a wide hole, so it needs a wide ring to be pinned.
fn ring_size(cells: usize, cell: f64, cfg: &MeasureConfig) -> (f64, f64) {
    let r_eq = (cells as f64 * cell * cell / std::f64::consts::PI).sqrt();
    (cfg.skin_margin_m, (0.6 * r_eq).clamp(cfg.skin_ring_m, cfg.skin_ring_m.max(0.02)))
}

/// Soft ring membership at distance `d` (metres) from the wound: 1 inside the ring,
/// tapering linearly over [`RING_TAPER_M`] at both edges, so no cell flips in or out.
fn ring_weight(d: f64, guard: f64, width: f64) -> f64 {
    let up = ((d - guard) / RING_TAPER_M + 0.5).clamp(0.0, 1.0);
    let down = ((guard + width - d) / RING_TAPER_M + 0.5).clamp(0.0, 1.0);
    up * down
}

/// Taper of the skin ring's edges, metres.
const RING_TAPER_M: f64 = 0.001;

/// Fits the skin on the ring around `wound` (grid mask) and prepares depth grids. The
/// skin model is chosen among plane, quadratic, quartic and cylinder by how well each
/// predicts ring sectors it was not fitted to, and blended (see [`skin::choose`]).
fn prepare(field: HeightField, wound: &Array2<bool>, cfg: &MeasureConfig) -> Result<Prepared, ReconError> {
    let dist = distance_to(wound);
    let side = field.side();
    let cells = wound.iter().filter(|&&v| v).count();
    let (guard, width) = ring_size(cells, field.cell, cfg);
    let mut pts = Vec::new();
    let mut weights = Vec::new();
    let (mut cx, mut cy) = (0.0, 0.0);
    for j in 0..side {
        for i in 0..side {
            let (x, y) = field.xy(i, j);
            if wound[[j, i]] {
                cx += x / cells as f64;
                cy += y / cells as f64;
            }
            let wgt = ring_weight(dist[[j, i]] * field.cell, guard, width);
            let h = field.h[[j, i]];
            if wgt > 0.0 && h.is_finite() {
                pts.push([x, y, h]);
                weights.push(wgt);
            }
        }
    }
    let (skin, runner_up) = skin::choose(&pts, &weights, [cx, cy])
        .ok_or_else(|| ReconError::NotEnoughData("too little skin around the wound".into()))?;
    let mut missing = 0usize;
    let mut total = 0usize;
    let mut depth = Array2::from_elem((side, side), f64::NAN);
    let mut hfill = field.h.clone();
    let mut inside = Vec::with_capacity(cells);
    for j in 0..side {
        for i in 0..side {
            if wound[[j, i]] {
                total += 1;
                if !field.h[[j, i]].is_finite() {
                    missing += 1;
                }
                let (x, y) = field.xy(i, j);
                inside.push([x, y]);
            }
        }
    }
    // How far the two best models disagree across the hole.
    let spread = runner_up.map_or(0.0, |r| skin.rms_difference(&r, &inside));
    // Fill holes in the height field by iterated neighbour averaging.
    for _ in 0..50 {
        let mut changed = false;
        let prev = hfill.clone();
        for j in 0..side {
            for i in 0..side {
                if prev[[j, i]].is_finite() {
                    continue;
                }
                let mut s = 0.0;
                let mut c = 0;
                for (di, dj) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
                    let (ii, jj) = (i as i64 + di, j as i64 + dj);
                    if ii >= 0 && jj >= 0 && (ii as usize) < side && (jj as usize) < side {
                        let v = prev[[jj as usize, ii as usize]];
                        if v.is_finite() {
                            s += v;
                            c += 1;
                        }
                    }
                }
                if c > 0 {
                    hfill[[j, i]] = s / f64::from(c);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for j in 0..side {
        for i in 0..side {
            let (x, y) = field.xy(i, j);
            if hfill[[j, i]].is_finite() {
                depth[[j, i]] = skin.eval(x, y) - hfill[[j, i]];
            }
        }
    }
    // Gradients of the bed from a lightly smoothed copy (binomial, σ ≈ 1 cell): noise
    // would otherwise inflate the bed area.
    let mut hs = hfill.clone();
    for _ in 0..2 {
        for axis in 0..2 {
            let prev = hs.clone();
            for j in 1..side - 1 {
                for i in 1..side - 1 {
                    let (a, b) = if axis == 0 {
                        (prev[[j, i - 1]], prev[[j, i + 1]])
                    } else {
                        (prev[[j - 1, i]], prev[[j + 1, i]])
                    };
                    let v = 0.25 * a + 0.5 * prev[[j, i]] + 0.25 * b;
                    if v.is_finite() {
                        hs[[j, i]] = v;
                    }
                }
            }
        }
    }
    let mut gx = Array2::zeros((side, side));
    let mut gy = Array2::zeros((side, side));
    for j in 1..side - 1 {
        for i in 1..side - 1 {
            let (a, b, c, d) = (hs[[j, i + 1]], hs[[j, i - 1]], hs[[j + 1, i]], hs[[j - 1, i]]);
            if a.is_finite() && b.is_finite() && c.is_finite() && d.is_finite() {
                gx[[j, i]] = (a - b) / (2.0 * field.cell);
                gy[[j, i]] = (c - d) / (2.0 * field.cell);
            }
        }
    }
    let mut f = field;
    f.h = hfill;
    Ok(Prepared {
        field: f,
        skin,
        alt_skin_delta: spread,
        missing_fraction: if total > 0 { missing as f64 / total as f64 } else { 0.0 },
        depth,
        grad_h: (gx, gy),
    })
}

/// Normal depth (depth along the skin normal) at local `(x, y)`.
fn normal_depth(p: &Prepared, x: f64, y: f64) -> f64 {
    along_normal(&p.skin, p.field.bilinear(&p.depth, x, y), x, y)
}

/// Vertical depth `d` below `skin` at local `(x, y)` as depth along the skin's normal.
fn along_normal(skin: &SkinSurface, d: f64, x: f64, y: f64) -> f64 {
    let (gx, gy) = skin.grad(x, y);
    d / (1.0 + gx * gx + gy * gy).sqrt()
}

/// Computes every measurement for an outline (local `(x, y)` polygon, counter-clockwise).
fn measure_outline(
    p: &Prepared,
    outline: &[[f64; 2]],
    boundary: &Boundary,
    sigma_blur_m: f64,
    method: OutlineMethod,
    cfg: &MeasureConfig,
    vol: &TsdfVolume,
) -> WoundMeasurements {
    let f = &p.field;
    let skin = &p.skin;
    let step = f.cell / 2.0;
    let outline_area = integrate_polygon(outline, step, |x, y| {
        let (gx, gy) = skin.grad(x, y);
        (1.0 + gx * gx + gy * gy).sqrt()
    });
    // Over the outline dilated by 3σ_blur, with the wall's blur spill put back.
    let (volume, spill) = volume::spill_corrected(outline, sigma_blur_m, step, |x, y| f.bilinear(&p.depth, x, y));
    let bed_area = integrate_polygon(outline, step, |x, y| {
        let gx = f.bilinear(&p.grad_h.0, x, y);
        let gy = f.bilinear(&p.grad_h.1, x, y);
        (1.0 + gx * gx + gy * gy).sqrt()
    });
    let outline3: Vec<Vec3> = outline.iter().map(|q| f.world(q[0], q[1], skin.eval(q[0], q[1]))).collect();
    let perimeter: f64 = (0..outline3.len()).map(|i| (outline3[(i + 1) % outline3.len()] - outline3[i]).norm()).sum();
    let n = outline.len() as f64;
    let (cx, cy) = outline.iter().fold((0.0, 0.0), |s, q| (s.0 + q[0] / n, s.1 + q[1] / n));
    let (gx, gy) = skin.grad(cx, cy);
    let normal = (f.n - f.e1 * gx - f.e2 * gy).normalized();
    let centre = f.world(cx, cy, skin.eval(cx, cy));
    // The longest chord picks the outline's extremes: on a fitted rim, sector-to-sector
    // scatter makes bumps it would measure, so length and width are taken on the rim
    // smoothed as the roughness figure smooths it. A drawn outline is the definition.
    let smooth = taubin(outline, 30);
    let (length, width) = if method == OutlineMethod::Automatic {
        let smooth3: Vec<Vec3> = smooth.iter().map(|q| f.world(q[0], q[1], skin.eval(q[0], q[1]))).collect();
        length_width(&smooth3, normal)
    } else {
        length_width(&outline3, normal)
    };
    let mut ends = [outline3[0], outline3[0]];
    let mut best = 0.0;
    for a in &outline3 {
        for b in &outline3 {
            let d = (*a - *b).norm();
            if d > best {
                best = d;
                ends = [*a, *b];
            }
        }
    }

    // Deepest point: quadratic fit around the deepest cell, to average out noise.
    let side = f.side();
    let mut best_cell = None;
    let mut best_d = f64::NEG_INFINITY;
    let mut sigma_sum = 0.0;
    let mut sigma_n = 0.0;
    let inside = rasterize(f, outline);
    for j in 0..side {
        for i in 0..side {
            let (x, y) = f.xy(i, j);
            if !inside[[j, i]] {
                continue;
            }
            let d = normal_depth(p, x, y);
            if d > best_d {
                best_d = d;
                best_cell = Some((x, y));
            }
            let w = f.w[[j, i]];
            if w > 0.0 {
                sigma_sum += vol.sigma_for_weight(w);
                sigma_n += 1.0;
            }
        }
    }
    let sigma_h = if sigma_n > 0.0 { sigma_sum / sigma_n } else { f64::from(vol.config().noise_sigma_at_reference_m) };
    let mut max_depth = best_d.max(0.0);
    // Blur fills the bottom: Gaussian blur of a paraboloid lowers its vertex by
    // `tr(H)/2·σ²`, a V-shaped bottom (a narrow bed between steep walls) by up to twice
    // that. Stated in the interval, not added to the value: on a flat bed the curvature
    // at the deepest cell is the noise's, and the vertex already reads high there.
    let mut bottom_fill = 0.0;
    if let Some((x0, y0)) = best_cell {
        let r = 1.5e-3;
        let mut pts = Vec::new();
        let k = (r / f.cell) as i64;
        for dj in -k..=k {
            for di in -k..=k {
                let (x, y) = (x0 + di as f64 * f.cell, y0 + dj as f64 * f.cell);
                pts.push([x - x0, y - y0, normal_depth(p, x, y)]);
            }
        }
        if let Some(q) = Skin::fit(&pts, 2, 0.001) {
            // Vertex of the fitted paraboloid, if it lies within the window.
            let c = &q.coef; // terms: 1, u, v, u², uv, v²
            let (a, b, cc, d, e, ff) = (c[0], c[1], c[2], c[3], c[4], c[5]);
            let det = 4.0 * d * ff - e * e;
            if det > 0.0 && d < 0.0 {
                let u = (e * cc - 2.0 * ff * b) / det;
                let v = (e * b - 2.0 * d * cc) / det;
                if u.abs() <= r / 0.001 && v.abs() <= r / 0.001 {
                    let sigma_mm = sigma_blur_m * 1e3;
                    bottom_fill = -(d + ff) * sigma_mm * sigma_mm;
                    max_depth = a + b * u + cc * v + d * u * u + e * u * v + ff * v * v;
                }
            } else {
                max_depth = a;
            }
        }
    }

    let vs = vol.voxel_size();
    // Skin prediction over the wound: the fit's residual over the parameters it spends,
    // extrapolated into the hole (×4) and inflated by N/N_eff (fused-surface noise is
    // correlated over about three cells, so nine cells carry one independent residual),
    // plus half the disagreement between the two skin models.
    let p_terms = terms(skin.degree).len() as f64;
    let sigma_skin =
        (skin.rms.powi(2) * 4.0 * 9.0 * p_terms / skin.n_points.max(1) as f64 + p.alt_skin_delta.powi(2) * 0.25).sqrt();
    let figures = Figures {
        area: outline_area,
        perimeter,
        volume,
        spill,
        length,
        width,
        sigma_skin,
        sigma_h,
        voxel: vs,
        missing_fraction: p.missing_fraction,
        bottom_fill,
        roughness: (outline
            .iter()
            .zip(&smooth)
            .map(|(a, b)| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2))
            .sum::<f64>()
            / outline.len() as f64)
            .sqrt(),
    };
    let hw = uncertainty::half_widths(boundary, &figures, cfg.coverage_factor);
    let to_mm = 1e3;
    let to_mm2 = 1e6;
    let to_mm3 = 1e9;
    let mm = |v: f64, u: f64, s: f64| Measurement { value: v * s, uncertainty: u * s };
    WoundMeasurements {
        outline_area_mm2: mm(outline_area, hw.area, to_mm2),
        bed_area_mm2: mm(bed_area, hw.bed_area.max(hw.area * 1.2 + bed_area * 0.01), to_mm2),
        perimeter_mm: mm(perimeter, hw.perimeter, to_mm),
        length_mm: mm(length, hw.length, to_mm),
        width_mm: mm(width, hw.width, to_mm),
        max_depth_mm: mm(max_depth, hw.max_depth, to_mm),
        mean_depth_mm: mm(volume / outline_area.max(1e-12), hw.mean_depth, to_mm),
        volume_mm3: mm(volume, hw.volume, to_mm3),
        outline_world: outline3,
        centre_world: centre,
        normal_world: normal,
        length_endpoints_world: ends,
        method,
        skin_model: skin.model,
        skin_residual_mm: skin.rms * 1e3,
        missing_fraction: p.missing_fraction,
    }
}

/// Local plane at `target` from the surrounding surface: (point on plane, outward normal,
/// tilt in degrees between the RANSAC normal and the reweighted one, for the trace). The
/// RANSAC plane seeds an IRLS refinement (see [`frame`]), which is a continuous function
/// of the surface.
fn local_plane(vol: &TsdfVolume, target: Vec3, radius: f64) -> Result<(Vec3, Vec3, f64), ReconError> {
    let (pts, grad) = surface_points(vol, target, radius);
    let (c, mut n) = ransac_plane(&pts, 1.5e-3)
        .ok_or_else(|| ReconError::NotEnoughData("no fused surface near the target".into()))?;
    if n.dot(grad) < 0.0 {
        n = -n;
    }
    // The plane is the skin's tangent at the target: points weigh by their distance
    // from it (12 mm), so a tight limb's flanks do not tilt it.
    let (c2, n2) = frame::irls_plane(&pts, (c, n), target, (0.5 * radius).min(0.012), 1e-4);
    let tilt = n.dot(n2).clamp(-1.0, 1.0).acos().to_degrees();
    let origin = target - n2 * (target - c2).dot(n2);
    Ok((origin, n2, tilt))
}

fn smooth_closed(v: &[f64], half: usize) -> Vec<f64> {
    let n = v.len();
    (0..n)
        .map(|i| {
            let mut s = 0.0;
            for k in 0..=2 * half {
                s += v[(i + n + k - half) % n];
            }
            s / (2 * half + 1) as f64
        })
        .collect()
}

/// Taubin (λ|μ) smoothing of a closed polyline: removes vertex noise without the
/// shrinkage plain Laplacian smoothing causes.
fn taubin(p: &[[f64; 2]], iterations: usize) -> Vec<[f64; 2]> {
    let n = p.len();
    let mut cur = p.to_vec();
    for _ in 0..iterations {
        for factor in [0.5, -0.53] {
            let prev = cur.clone();
            for i in 0..n {
                let (a, b) = (prev[(i + n - 1) % n], prev[(i + 1) % n]);
                for k in 0..2 {
                    cur[i][k] = prev[i][k] + factor * (0.5 * (a[k] + b[k]) - prev[i][k]);
                }
            }
        }
    }
    cur
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoTrace {
    /// Angle between the RANSAC plane's normal and the reweighted one, degrees.
    pub plane_tilt_deg: f64,
    /// Half-side of each height field tried, mm (it grows when the wound or its skin ring
    /// reaches the border).
    pub field_half_mm: Vec<f64>,
    /// First-pass skin model (upper envelope) and the weighted share of cells it kept.
    pub first_model: &'static str,
    pub first_kept: f64,
    /// Robust sigma of the first-pass skin, mm.
    pub first_sigma_mm: f64,
    /// Deepest first-pass depth within 15 mm of the target, mm.
    pub max_depth_near_target_mm: f64,
    /// Candidate depressions, and the chosen one's significance and distance from the target (mm).
    pub candidates: usize,
    pub significance: f64,
    pub distance_mm: f64,
    /// Chosen region: area (mm²), robust depth (mm), median depth noise (mm).
    pub region_area_mm2: f64,
    pub region_depth_mm: f64,
    pub sigma_d_mm: f64,
    /// Final skin blend (model name, weight) and the contour level of the initial outline, mm.
    pub skin: Vec<(&'static str, f64)>,
    pub contour_mm: f64,
    /// Fitted rim blur, mm.
    pub blur_mm: f64,
    /// Blur of a wall in this scan's views, measured by synthesis, mm (0 without views).
    pub synth_blur_mm: f64,
    /// Angle between the plane at the target and the first-pass skin's normal at the
    /// wound, degrees (beyond 3° the field is rebuilt in the latter's frame).
    pub reframe_deg: f64,
}

/// Largest half-side the automatic search area grows to, metres: the server's region
/// of interest ([`crate::fusion::ROI_HALF_M`]).
pub const MAX_FIELD_HALF_M: f64 = crate::fusion::ROI_HALF_M;

/// Correlation area of fused-surface noise, in voxels² (neighbouring voxels share rays).
const CORRELATION_VOXELS2: f64 = 4.0;

/// Automatic segmentation and measurement of the wound at `target` (a world point on
/// or near the wound, e.g. where the clinician tapped, or the centre of the scan).
pub fn measure_auto(vol: &TsdfVolume, target: Vec3, cfg: &MeasureConfig) -> Result<WoundMeasurements, ReconError> {
    measure_auto_traced(vol, target, &[], cfg).0
}

/// [`measure_auto`] knowing the views the volume was fused from: the rim is then fitted at
/// the blur a wall gets from those views (measured by synthesis, `measure/synth.rs`)
/// instead of a blur fitted to the wound's own profiles.
pub fn measure_auto_with_views(
    vol: &TsdfVolume,
    target: Vec3,
    views: &[View],
    cfg: &MeasureConfig,
) -> Result<WoundMeasurements, ReconError> {
    measure_auto_traced(vol, target, views, cfg).0
}

/// Where the wound near `target` is, without measuring it: the first pass of
/// [`measure_auto`] (local plane, height field, upper-envelope skin, detection, the field
/// grown while the wound reaches its border). About a twentieth of a measurement's work at
/// 1 mm cells: the live guidance runs it while the phone scans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    /// Centroid of the wound's cells on the first-pass skin, world coordinates.
    pub centre_world: Vec3,
    /// Projected area of the wound's cells, mm².
    pub area_mm2: f64,
    /// Share of the 2 mm ring just outside the wound without fused surface, 0..=1: where
    /// the rim was not seen.
    pub rim_unseen: f64,
}

/// See [`Located`]; fails as [`measure_auto`] does when there is no wound to find.
pub fn locate(vol: &TsdfVolume, target: Vec3, cfg: &MeasureConfig) -> Result<Located, ReconError> {
    let mut trace = AutoTrace::default();
    let (origin, n, _) = local_plane(vol, target, cfg.max_radius_m * 0.6)?;
    let (field, det, centre, _) = search(vol, (origin, n), target, cfg.max_radius_m * 0.75, cfg, &mut trace)?;
    let dist = distance_to(&det.region);
    let (mut ring, mut unseen) = (0usize, 0usize);
    for ((j, i), &d) in dist.indexed_iter() {
        if d > 0.0 && d * field.cell <= 2e-3 {
            ring += 1;
            if !field.h[[j, i]].is_finite() {
                unseen += 1;
            }
        }
    }
    Ok(Located {
        centre_world: centre,
        area_mm2: trace.region_area_mm2,
        rim_unseen: if ring == 0 { 1.0 } else { unseen as f64 / ring as f64 },
    })
}

/// [`measure_auto`] with a trace of what it saw.
pub fn measure_auto_traced(
    vol: &TsdfVolume,
    target: Vec3,
    views: &[View],
    cfg: &MeasureConfig,
) -> (Result<WoundMeasurements, ReconError>, AutoTrace) {
    let mut trace = AutoTrace::default();
    let r = auto(vol, target, views, cfg, &mut trace);
    (r, trace)
}

/// Whether the wound (or its skin ring, where there is surface to fit) reaches the
/// border of the field: then a larger field is needed.
fn needs_larger_field(field: &HeightField, region: &Array2<bool>, cfg: &MeasureConfig) -> bool {
    let side = field.side();
    let cells = region.iter().filter(|&&v| v).count();
    let (guard, width) = ring_size(cells, field.cell, cfg);
    let reach = (guard + width) / field.cell;
    let dist = distance_to(region);
    (0..side).any(|k| {
        [(k, 0), (k, side - 1), (0, k), (side - 1, k)]
            .iter()
            .any(|&(i, j)| region[[j, i]] || (dist[[j, i]] <= reach && field.h[[j, i]].is_finite()))
    })
}

/// The wound's height field and detection: the first-pass skin (upper envelope) over a
/// field of half-side `half` in the frame `(origin, n)`, the depression nearest `target`,
/// and the field grown ×1.5 (up to [`MAX_FIELD_HALF_M`]) while the wound or its skin ring
/// reaches the border. Also returns the first-pass skin's normal at the region's centroid.
fn search(
    vol: &TsdfVolume,
    (origin, n): (Vec3, Vec3),
    target: Vec3,
    mut half: f64,
    cfg: &MeasureConfig,
    trace: &mut AutoTrace,
) -> Result<(HeightField, detect::Detection, Vec3, Vec3), ReconError> {
    let a_c = CORRELATION_VOXELS2 * vol.voxel_size().powi(2);
    loop {
        trace.field_half_mm.push(half * 1e3);
        let field = HeightField::build(vol, origin, n, half, cfg.cell_m);
        let side = field.side();
        let t = field.local(target);
        // First pass: the upper envelope of the skin, cells weighted by their distance
        // from the target (the skin far away may bend beyond any simple model).
        let rho = 0.6 * half;
        let mut pts = Vec::new();
        let mut w0 = Vec::new();
        for j in 0..side {
            for i in 0..side {
                let h = field.h[[j, i]];
                if h.is_finite() {
                    let (x, y) = field.xy(i, j);
                    pts.push([x, y, h]);
                    w0.push((-((x - t[0]).powi(2) + (y - t[1]).powi(2)) / (2.0 * rho * rho)).exp());
                }
            }
        }
        if pts.len() < 100 {
            return Err(ReconError::NotEnoughData("no fused surface near the target".into()));
        }
        let (skin0, kept) = skin::envelope(&pts, &w0)
            .ok_or_else(|| ReconError::NotEnoughData("too little fused surface to fit the skin".into()))?;
        trace.first_model = skin0.kind_name();
        trace.first_kept = kept;
        trace.first_sigma_mm = skin0.rms * 1e3;
        let d0 = Array2::from_shape_fn((side, side), |(j, i)| {
            let (x, y) = field.xy(i, j);
            skin0.eval(x, y) - field.h[[j, i]]
        });
        trace.max_depth_near_target_mm = (0..side * side)
            .filter_map(|k| {
                let (i, j) = (k % side, k / side);
                let (x, y) = field.xy(i, j);
                ((x - t[0]).hypot(y - t[1]) <= 0.015 && d0[[j, i]].is_finite()).then_some(d0[[j, i]])
            })
            .fold(f64::NEG_INFINITY, f64::max)
            * 1e3;
        let sigma = detect::sigma_grid(&field, skin0.rms, vol);
        let det = detect::detect(&field, &d0, &sigma, [t[0], t[1]], a_c)?;
        trace.candidates = det.candidates;
        trace.significance = det.significance;
        trace.distance_mm = det.distance_m * 1e3;
        trace.region_area_mm2 = det.region.iter().filter(|&&v| v).count() as f64 * field.cell * field.cell * 1e6;
        trace.region_depth_mm = det.d_max * 1e3;
        trace.sigma_d_mm = det.sigma_d * 1e3;
        if !needs_larger_field(&field, &det.region, cfg) {
            let (mut cx, mut cy, mut c) = (0.0, 0.0, 0.0f64);
            for ((j, i), &v) in det.region.indexed_iter() {
                if v {
                    let (x, y) = field.xy(i, j);
                    cx += x;
                    cy += y;
                    c += 1.0;
                }
            }
            let (cx, cy) = (cx / c.max(1.0), cy / c.max(1.0));
            let (gx, gy) = skin0.grad(cx, cy);
            let normal = (field.n - field.e1 * gx - field.e2 * gy).normalized();
            let centre = field.world(cx, cy, skin0.eval(cx, cy));
            return Ok((field, det, centre, normal));
        }
        if half >= MAX_FIELD_HALF_M - 1e-9 {
            return Err(WoundNotFound::ExceedsScanRegion.into());
        }
        half = (half * 1.5).min(MAX_FIELD_HALF_M);
    }
}

/// The skin normal at the wound may differ from the plane's at the target (a tight limb,
/// a target off the wound): beyond this angle the field is rebuilt in the frame of the
/// first-pass skin at the wound's centroid, degrees.
const REFRAME_DEG: f64 = 3.0;

fn auto(
    vol: &TsdfVolume,
    target: Vec3,
    views: &[View],
    cfg: &MeasureConfig,
    trace: &mut AutoTrace,
) -> Result<WoundMeasurements, ReconError> {
    let (origin, n, tilt) = local_plane(vol, target, cfg.max_radius_m * 0.6)?;
    trace.plane_tilt_deg = tilt;
    let a_c = CORRELATION_VOXELS2 * vol.voxel_size().powi(2);
    let (mut field, mut det, centre, normal) = search(vol, (origin, n), target, cfg.max_radius_m * 0.75, cfg, trace)?;
    let angle = normal.dot(n).clamp(-1.0, 1.0).acos().to_degrees();
    trace.reframe_deg = angle;
    if angle > REFRAME_DEG {
        let half = field.half as f64 * field.cell;
        if let Ok((f2, d2, _, _)) = search(vol, (centre, normal), target, half, cfg, trace) {
            field = f2;
            det = d2;
        }
    }
    let side = field.side();
    let seed = det.seed;
    let mut region = det.region.clone();
    let mut det = det;
    let raw = field.clone();
    let mut prepared = prepare(field, &region, cfg)?;
    // Second pass: the region again from the final skin (fitted on the ring, chosen by
    // evidence), which follows the skin better than the first-pass envelope; then the
    // final skin from that region's ring. Kept only if it is still the same wound.
    let sigma = detect::sigma_grid(&prepared.field, prepared.skin.rms, vol);
    let (sx0, sy0) = prepared.field.xy(seed.0, seed.1);
    if let Ok(d2) = detect::detect(&prepared.field, &prepared.depth, &sigma, [sx0, sy0], a_c) {
        let changed = d2.region.iter().zip(region.iter()).filter(|(a, b)| a != b).count();
        let cells = region.iter().filter(|&&v| v).count();
        // Refit only when the region moved by more than 1 % of its cells.
        if d2.region[[seed.1, seed.0]] && changed * 100 > cells && !needs_larger_field(&raw, &d2.region, cfg) {
            region = d2.region.clone();
            det = d2;
            prepared = prepare(raw, &region, cfg)?;
        }
    }
    trace.region_area_mm2 = region.iter().filter(|&&v| v).count() as f64 * prepared.field.cell.powi(2) * 1e6;
    trace.region_depth_mm = det.d_max * 1e3;
    trace.sigma_d_mm = det.sigma_d * 1e3;
    trace.skin = prepared.skin.weights();
    let f = &prepared.field;

    // Outline: contour of the normal depth, restricted to the region (dilated by 2 mm),
    // at a level relative to the noise and the wound's depth (never deeper than
    // `rim_level_m`: the rim fit starts from it and searches outward).
    let near = distance_to(&region).mapv(|d| d * f.cell <= 2e-3);
    let mut nd = Array2::from_elem((side, side), f64::NAN);
    for j in 0..side {
        for i in 0..side {
            if near[[j, i]] {
                let (x, y) = f.xy(i, j);
                nd[[j, i]] = normal_depth(&prepared, x, y);
            }
        }
    }
    let level = (3.0 * det.sigma_d).max(0.2 * det.d_max).min(cfg.rim_level_m);
    trace.contour_mm = level * 1e3;
    let (sx, sy) = f.xy(seed.0, seed.1);
    let loops = contours(f, &nd, level);
    let mut outline = loops
        .into_iter()
        .filter(|l| point_in_polygon([sx, sy], l))
        .max_by(|a, b| shoelace(a).abs().total_cmp(&shoelace(b).abs()))
        .ok_or(WoundNotFound::RimNotSeen)?;
    if shoelace(&outline) < 0.0 {
        outline.reverse();
    }

    let outline = taubin(&outline, 5);
    let mut fit = rim::fit_rim(&prepared, &outline, None);
    // The blur a wall gets from these views is a floor: a fit that found less traded blur
    // for wall width, and its rim lies outside the wall (`measure/synth.rs`).
    let mut depths: Vec<f64> = fit.sector_depth_m.iter().copied().filter(|d| *d > 0.0).collect();
    depths.sort_by(f64::total_cmp);
    if let Some(&depth) = depths.get(depths.len() / 2) {
        if let Some(blur) = synth::step_blur(&prepared.field, &prepared.skin, &fit.rim, depth, views, vol) {
            trace.synth_blur_mm = blur * 1e3;
            if blur > fit.sigma_blur_m {
                fit = rim::fit_rim(&prepared, &outline, Some(blur));
            }
        }
    }
    trace.blur_mm = fit.sigma_blur_m * 1e3;
    let boundary = fit.boundary();
    Ok(measure_outline(&prepared, &fit.rim, &boundary, fit.sigma_blur_m, OutlineMethod::Automatic, cfg, vol))
}

/// Most vertices a clinician-drawn outline may have.
pub const MAX_OUTLINE_POINTS: usize = 2000;

/// Longest outline accepted, pixels of its keyframe: eight times the perimeter of the
/// largest frame (`4 × (640 + 480)` ≈ 4,480 px for a frame filling the image); a wound traced
/// with a ragged edge stays well within it, a zig-zag across the image does not.
pub const MAX_OUTLINE_PERIMETER_PX: f64 = 8960.0;

/// Most points an outline is densified to before they are ray cast onto the surface: the
/// spacing is half a pixel, widened for the longest outlines so the count stays within this.
pub const MAX_OUTLINE_SAMPLES: usize = 4096;

/// Largest outline on the surface, metres from its centroid: twice the server's fusion
/// region (a 12 cm cube) could never hold more. Bounds the height field the outline is
/// measured on (≤ 473² cells at the default 0.5 mm).
pub const MAX_OUTLINE_RADIUS_M: f64 = 0.1;

/// Most cells on a side of the height field an outline is measured on.
const MAX_FIELD_SIDE: usize = 1024;

/// Refuses an outline before any work is sized from it: 3 to [`MAX_OUTLINE_POINTS`]
/// points, each finite and inside an image of `width × height` pixels (pixel centres at
/// integer coordinates: `0 ≤ u ≤ width − 1`, `0 ≤ v ≤ height − 1`), a perimeter of at most
/// [`MAX_OUTLINE_PERIMETER_PX`], and an enclosed area (even-odd) of at least one pixel.
/// Self-crossing outlines are accepted (measured by the even-odd rule): the work they
/// cause is bounded like any other's.
pub fn check_outline(polygon_px: &[[f64; 2]], width: u32, height: u32) -> Result<(), ReconError> {
    let n = polygon_px.len();
    if !(3..=MAX_OUTLINE_POINTS).contains(&n) {
        return Err(ReconError::InvalidOutline(format!("an outline needs 3 to {MAX_OUTLINE_POINTS} points, got {n}")));
    }
    if width == 0 || height == 0 {
        return Err(ReconError::InvalidIntrinsics);
    }
    let (umax, vmax) = (f64::from(width - 1), f64::from(height - 1));
    let inside = |p: &[f64; 2]| (0.0..=umax).contains(&p[0]) && (0.0..=vmax).contains(&p[1]);
    if let Some(i) = polygon_px.iter().position(|p| !inside(p)) {
        return Err(ReconError::InvalidOutline(format!(
            "point {i} lies outside the {width}x{height} keyframe (0 <= u <= {umax}, 0 <= v <= {vmax})"
        )));
    }
    let perimeter = outline_perimeter(polygon_px);
    if perimeter > MAX_OUTLINE_PERIMETER_PX {
        return Err(ReconError::InvalidOutline(format!(
            "the outline is {perimeter:.0} px long, more than {MAX_OUTLINE_PERIMETER_PX} px"
        )));
    }
    if shoelace(polygon_px).abs() < 1.0 {
        return Err(ReconError::InvalidOutline("the outline encloses less than one pixel".into()));
    }
    Ok(())
}

/// Closed perimeter of a polygon (finite for points inside an image).
fn outline_perimeter(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    (0..n).map(|i| (p[(i + 1) % n][0] - p[i][0]).hypot(p[(i + 1) % n][1] - p[i][1])).sum()
}

/// The outline densified to about half a pixel (wider for the longest outlines: at most
/// [`MAX_OUTLINE_SAMPLES`] + one point per vertex). The outline must have passed
/// [`check_outline`], so every edge is finite and shorter than the image's diagonal.
fn densify(polygon_px: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let spacing = (outline_perimeter(polygon_px) / MAX_OUTLINE_SAMPLES as f64).max(0.5);
    let n = polygon_px.len();
    let mut px = Vec::with_capacity(MAX_OUTLINE_SAMPLES + n);
    for i in 0..n {
        let (a, b) = (polygon_px[i], polygon_px[(i + 1) % n]);
        let len = (b[0] - a[0]).hypot(b[1] - a[1]);
        let k = (len / spacing).ceil().clamp(1.0, MAX_OUTLINE_SAMPLES as f64) as usize;
        for s in 0..k {
            let t = s as f64 / k as f64;
            px.push([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]);
        }
    }
    px
}

/// The grid cells whose centre lies inside `outline`, decided exactly as
/// [`point_in_polygon`] decides (even-odd rule, same crossing arithmetic), but row by row
/// from the edge crossings: `O(side · (edges + side))`, not `O(side² · edges)`.
fn rasterize(field: &HeightField, outline: &[[f64; 2]]) -> Array2<bool> {
    let side = field.side();
    let mut mask = Array2::from_elem((side, side), false);
    let n = outline.len();
    let mut xs = Vec::with_capacity(n);
    for j in 0..side {
        let (_, y) = field.xy(0, j);
        xs.clear();
        // Each edge from a vertex to the one before it, as `point_in_polygon` takes them:
        // the crossing's rounding then matches it bit for bit.
        for i in 0..n {
            let (a, b) = (outline[i], outline[(i + n - 1) % n]);
            if (a[1] > y) != (b[1] > y) {
                xs.push((b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0]);
            }
        }
        xs.sort_by(f64::total_cmp);
        // A centre x is inside when an odd number of crossings lie beyond it:
        // x0 <= x < x1 for one sorted pair. The index range is widened by a cell and
        // each candidate tested exactly, so rounding in the division decides nothing.
        for pair in xs.chunks_exact(2) {
            let (x0, x1) = (pair[0], pair[1]);
            let lo = (x0 / field.cell + field.half as f64).floor() - 1.0;
            let hi = (x1 / field.cell + field.half as f64).ceil() + 1.0;
            let (lo, hi) = (lo.max(0.0), hi.min((side - 1) as f64));
            if lo > hi {
                continue;
            }
            for i in lo as usize..=hi as usize {
                let (x, _) = field.xy(i, j);
                if x0 <= x && x < x1 {
                    mask[[j, i]] = true;
                }
            }
        }
    }
    mask
}

/// Measurement with a clinician-drawn outline: `polygon_px` are image coordinates
/// `[u, v]` in a keyframe taken with `intrinsics` from `pose` (world-from-camera).
///
/// Every size derived from the outline is bounded before it is allocated: the outline
/// must pass [`check_outline`] against the keyframe's image (else
/// [`ReconError::InvalidOutline`]), it is densified to at most [`MAX_OUTLINE_SAMPLES`]
/// points, and its extent on the surface (bounded by the fused volume, since every point
/// is a hit on it) must stay within [`MAX_OUTLINE_RADIUS_M`].
pub fn measure_polygon(
    vol: &TsdfVolume,
    polygon_px: &[[f64; 2]],
    intrinsics: &Intrinsics,
    pose: &Pose,
    cfg: &MeasureConfig,
) -> Result<WoundMeasurements, ReconError> {
    intrinsics.validate()?;
    pose.validate()?;
    check_outline(polygon_px, intrinsics.width, intrinsics.height)?;
    // Densify and cast every point onto the fused surface.
    let px = densify(polygon_px);
    let o = pose.position();
    let mut sampler = vol.sampler();
    let mut hits = Vec::with_capacity(px.len());
    for q in &px {
        let dir = pose.rotate(intrinsics.ray(q[0], q[1])).normalized();
        if let Some(t) = sampler.raycast(o, dir, 0.05, 1.0) {
            hits.push(o + dir * t);
        }
    }
    if hits.len() * 10 < px.len() * 8 {
        return Err(ReconError::SegmentationFailed("the outline does not lie on the reconstructed surface".into()));
    }
    let centroid = hits.iter().fold(Vec3::ZERO, |s, p| s + *p) * (1.0 / hits.len() as f64);
    let radius = hits.iter().map(|p| (*p - centroid).norm()).fold(0.0, f64::max);
    if radius > MAX_OUTLINE_RADIUS_M {
        return Err(ReconError::InvalidOutline(format!(
            "the outline reaches {:.0} mm from its centre on the surface, more than {:.0} mm",
            radius * 1e3,
            MAX_OUTLINE_RADIUS_M * 1e3
        )));
    }
    // The outline itself lies on skin: its plane orients the local frame.
    let (c, mut n) = ransac_plane(&hits, 2e-3)
        .or_else(|| ransac_plane(&hits.repeat(10), 2e-3))
        .ok_or_else(|| ReconError::NotEnoughData("outline too small".into()))?;
    if n.dot(o - c) < 0.0 {
        n = -n;
    }
    let origin = centroid - n * (centroid - c).dot(n);
    let half = radius + cfg.skin_margin_m + cfg.skin_ring_m + 0.004;
    let cells = half / cfg.cell_m;
    if !(cells.is_finite() && cells > 0.0 && 2.0 * cells.ceil() < MAX_FIELD_SIDE as f64) {
        return Err(ReconError::InvalidConfig(format!(
            "a {half} m height field at {} m cells exceeds {MAX_FIELD_SIDE} cells a side",
            cfg.cell_m
        )));
    }
    let field = HeightField::build(vol, origin, n, half, cfg.cell_m);
    let mut outline: Vec<[f64; 2]> = hits
        .iter()
        .map(|p| {
            let l = field.local(*p);
            [l[0], l[1]]
        })
        .collect();
    if shoelace(&outline) < 0.0 {
        outline.reverse();
    }
    let wound = rasterize(&field, &outline);
    let again = HeightField { h: field.h.clone(), w: field.w.clone(), ..field };
    let mut prepared = prepare(field, &wound, cfg)?;
    // The fused rim's blur along the drawn outline: it sets the skin guard (the blurred
    // wall must stay out of the skin fit) and the volume's spill ring.
    let mut blur = polygon::blur_at(&outline, |x, y| normal_depth(&prepared, x, y));
    let margin = polygon::skin_margin(cfg.skin_margin_m, blur.sigma_blur_m);
    if margin > cfg.skin_margin_m {
        let wider = MeasureConfig { skin_margin_m: margin, ..*cfg };
        prepared = prepare(again, &wound, &wider)?;
        blur = polygon::blur_at(&outline, |x, y| normal_depth(&prepared, x, y));
    }
    let dist = (centroid - o).norm();
    let pixel = dist / intrinsics.fx;
    // The fused surface's noise where the outline lies, from its fusion weight.
    let weights: Vec<f64> = outline.iter().map(|q| prepared.field.bilinear(&prepared.field.w, q[0], q[1])).collect();
    let sigma_h = weights.iter().map(|w| vol.sigma_for_weight(w.max(1.0))).sum::<f64>() / weights.len().max(1) as f64;
    let boundary = polygon::boundary(&blur, dist, pixel, sigma_h);
    Ok(measure_outline(&prepared, &outline, &boundary, blur.sigma_blur_m, OutlineMethod::ClinicianPolygon, cfg, vol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_integration_of_a_unit_square_and_circle() {
        let sq = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!((integrate_polygon(&sq, 0.01, |_, _| 1.0) - 1.0).abs() < 1e-9);
        assert!((integrate_polygon(&sq, 0.01, |x, _| x) - 0.5).abs() < 1e-6);
        let circle: Vec<[f64; 2]> = (0..2000)
            .map(|i| {
                let a = f64::from(i) * std::f64::consts::TAU / 2000.0;
                [a.cos(), a.sin()]
            })
            .collect();
        let a = integrate_polygon(&circle, 0.002, |_, _| 1.0);
        assert!((a - std::f64::consts::PI).abs() < 1e-4, "{a}");
        assert!(point_in_polygon([0.1, 0.2], &circle) && !point_in_polygon([0.9, 0.9], &circle));
    }

    fn depth_camera() -> Intrinsics {
        Intrinsics { fx: 210.0, fy: 210.0, cx: 127.5, cy: 95.5, width: 256, height: 192 }
    }

    fn refused_quickly(polygon: &[[f64; 2]]) -> String {
        let vol = TsdfVolume::new(crate::tsdf::TsdfConfig::default()).unwrap();
        let t = std::time::Instant::now();
        let r = measure_polygon(&vol, polygon, &depth_camera(), &Pose::IDENTITY, &MeasureConfig::default());
        assert!(t.elapsed() < std::time::Duration::from_millis(100), "took {:?}", t.elapsed());
        match r {
            Err(ReconError::InvalidOutline(why)) => why,
            other => panic!("expected InvalidOutline, got {other:?}"),
        }
    }

    #[test]
    fn an_outline_of_huge_coordinates_is_refused_at_once() {
        let why = refused_quickly(&[[1e308, 1e308], [-1e308, 1e308], [0.0, -1e308]]);
        assert!(why.contains("outside the 256x192 keyframe"), "{why}");
        refused_quickly(&[[1e6, 1e6], [-1e6, 1e6], [0.0, -1e6]]);
        refused_quickly(&[[10.0, 10.0], [f64::NAN, 20.0], [30.0, 10.0]]);
        refused_quickly(&[[10.0, 10.0], [f64::INFINITY, 20.0], [30.0, 10.0]]);
    }

    #[test]
    fn an_outline_must_lie_within_the_pixel_centres_of_its_keyframe() {
        let k = depth_camera();
        let (u, v) = (f64::from(k.width - 1), f64::from(k.height - 1));
        assert!(check_outline(&[[0.0, 0.0], [u, 0.0], [u, v], [0.0, v]], k.width, k.height).is_ok());
        for bad in [[u + 0.01, 10.0], [10.0, v + 0.01], [-0.01, 10.0], [10.0, -0.01]] {
            let poly = [[5.0, 5.0], bad, [50.0, 60.0]];
            let why = refused_quickly(&poly);
            assert!(why.contains("point 1 lies outside"), "{why}");
        }
    }

    #[test]
    fn outlines_that_would_make_work_explode_are_refused() {
        let (w, h) = (256, 192);
        let too_many: Vec<[f64; 2]> = (0..=MAX_OUTLINE_POINTS)
            .map(|i| {
                let a = i as f64 * std::f64::consts::TAU / (MAX_OUTLINE_POINTS + 1) as f64;
                [128.0 + 50.0 * a.cos(), 96.0 + 50.0 * a.sin()]
            })
            .collect();
        assert!(refused_quickly(&too_many).contains("3 to 2000 points"));
        assert!(refused_quickly(&too_many[..2]).contains("got 2"));
        // A comb across the whole image: 2000 vertices, ~380,000 px of outline.
        let comb: Vec<[f64; 2]> =
            (0..MAX_OUTLINE_POINTS).map(|i| [(i / 2) as f64 * 0.25, if i % 4 < 2 { 0.0 } else { 191.0 }]).collect();
        assert!(check_outline(&comb, w, h).unwrap_err().to_string().contains("px long"));
        // No area: collinear points, or a point repeated.
        for flat in [[[1.0, 1.0], [50.0, 50.0], [100.0, 100.0]], [[7.0, 7.0], [7.0, 7.0], [7.0, 7.0]]] {
            assert!(refused_quickly(&flat).contains("encloses less than one pixel"));
        }
    }

    #[test]
    fn densifying_the_longest_outline_stays_within_the_sample_bound() {
        // A comb of 21 teeth across the image, about 8,000 px of outline (near the bound).
        let mut comb: Vec<[f64; 2]> =
            (0..21).flat_map(|i| [[f64::from(12 * i), 0.0], [f64::from(12 * i + 6), 180.0]]).collect();
        comb.extend([[255.0, 191.0], [0.0, 191.0]]);
        check_outline(&comb, 256, 192).unwrap();
        assert!(outline_perimeter(&comb) > 7000.0);
        let px = densify(&comb);
        assert!(px.len() <= MAX_OUTLINE_SAMPLES + comb.len(), "{}", px.len());
        let square = [[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]];
        assert_eq!(densify(&square).len(), 80, "half-pixel spacing for ordinary outlines");
    }

    #[test]
    fn rasterizing_an_outline_agrees_with_the_point_in_polygon_test() {
        let field = HeightField {
            origin: Vec3::ZERO,
            e1: Vec3::new(1.0, 0.0, 0.0),
            e2: Vec3::new(0.0, 1.0, 0.0),
            n: Vec3::new(0.0, 0.0, 1.0),
            cell: 0.0005,
            half: 60,
            h: Array2::zeros((121, 121)),
            w: Array2::zeros((121, 121)),
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f64 / 10_000.0
        };
        for _ in 0..20 {
            // Star-shaped and self-crossing outlines, some vertices on cell centres.
            let poly: Vec<[f64; 2]> = (0..40)
                .map(|i| {
                    let a = f64::from(i) * 0.47 * std::f64::consts::TAU / 40.0 * if i % 3 == 0 { 2.1 } else { 1.0 };
                    let r = 0.005 + 0.025 * rnd();
                    let mut snap = |v: f64| if rnd() < 0.2 { (v / 0.0005).round() * 0.0005 } else { v };
                    [snap(r * a.cos()), snap(r * a.sin())]
                })
                .collect();
            let mask = rasterize(&field, &poly);
            for j in 0..121 {
                for i in 0..121 {
                    let (x, y) = field.xy(i, j);
                    assert_eq!(mask[[j, i]], point_in_polygon([x, y], &poly), "cell {i},{j}");
                }
            }
        }
    }

    #[test]
    fn skin_fit_recovers_a_quadratic() {
        let mut pts = Vec::new();
        for i in -20..=20 {
            for j in -20..=20 {
                let (x, y) = (f64::from(i) * 1e-3, f64::from(j) * 1e-3);
                pts.push([x, y, 0.001 + 0.1 * x - 3.0 * x * x + 2.0 * x * y]);
            }
        }
        let s = Skin::fit_robust(&pts, 2, 0.02).unwrap();
        assert!((s.eval(0.01, -0.005) - (0.001 + 0.001 - 3e-4 - 1e-4)).abs() < 1e-12);
        let (gx, gy) = s.grad(0.0, 0.0);
        assert!((gx - 0.1).abs() < 1e-9 && gy.abs() < 1e-9);
    }

    #[test]
    fn distance_transform_measures_cells() {
        let mut m = Array2::from_elem((11, 11), false);
        m[[5, 5]] = true;
        let d = distance_to(&m);
        assert_eq!(d[[5, 8]], 3.0);
        assert!((d[[8, 8]] - 3.0 * std::f64::consts::SQRT_2).abs() < 1e-12);
    }
}
