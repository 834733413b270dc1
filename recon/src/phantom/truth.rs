//! Ground truth of a family phantom, by the definitions of `docs/measurement.md`
//! (*Measurement definitions*), integrated finely over the tangent plane:
//!
//! - outline area: `∬ sqrt(1 + |∇h|²) dx dy` of the skin inside the lifted outline;
//! - volume: the exact region volume `∬ ∫₀^D (1 − κ₁s)(1 − κ₂s) ds dA`
//!   `= ∬ (D − H·D² + K·D³/3) dA` (κ positive where the skin bends away from its outward
//!   normal, `H = (κ₁ + κ₂)/2`, `K = κ₁κ₂`), since the cavity is cut along the normals;
//! - perimeter, length and width: on the outline lifted onto the skin (3D), width across
//!   the length in the tangent plane at the wound;
//! - max depth: the largest normal depth; bed area: the area of the cavity's surface.

use std::f64::consts::TAU;

use super::body::Body;
use super::cavity::Carved;
use super::{length_width, GroundTruth, TruthSi};
use crate::geometry::{Pose, Vec3};

/// Polar samples of the area and volume integrals (angle × normalised radius).
const N_PHI: usize = 2048;
const N_T: usize = 400;

/// Integrand pieces at tangent-plane point `(x, y)`: the skin area element and the volume
/// per unit skin area for depth `d`.
fn elements(body: &Body, x: f64, y: f64, d: f64) -> (f64, f64) {
    let Some([_, hx, hy, hxx, hxy, hyy]) = body.graph(x, y) else { return (0.0, 0.0) };
    let w2 = 1.0 + hx * hx + hy * hy;
    let w = w2.sqrt();
    // Curvatures of the graph, positive for skin bending away from the outward normal.
    let sum = -((1.0 + hy * hy) * hxx - 2.0 * hx * hy * hxy + (1.0 + hx * hx) * hyy) / (w2 * w);
    let gauss = (hxx * hyy - hxy * hxy) / (w2 * w2);
    (w, d - 0.5 * sum * d * d + gauss * d * d * d / 3.0)
}

/// Computes a family phantom's ground truth.
pub(crate) fn wound_truth(body: &Body, carved: &Carved, world_from_phantom: &Pose) -> GroundTruth {
    let outline = &carved.cavity().outline;
    let orientation = carved.cavity().orientation;
    let dphi = TAU / N_PHI as f64;
    let dt = 1.0 / N_T as f64;
    let (mut area, mut volume, mut max_depth) = (0.0, 0.0, 0.0f64);
    for i in 0..N_PHI {
        let phi = (i as f64 + 0.5) * dphi;
        let r = outline.radius(phi);
        let (s, c) = (phi + orientation).sin_cos();
        for j in 0..N_T {
            let t = (j as f64 + 0.5) * dt;
            let (x, y) = (t * r * c, t * r * s);
            let d = carved.depth(x, y);
            max_depth = max_depth.max(d);
            let (w, v) = elements(body, x, y, d);
            let jac = r * r * t * dt * dphi;
            area += w * jac;
            volume += v * w * jac;
        }
    }
    // The deepest point on a finer polar grid.
    for i in 0..1024 {
        let phi = f64::from(i) * TAU / 1024.0;
        for j in 0..=2000 {
            let (x, y) = carved.polar_point(f64::from(j) / 2000.0, phi);
            max_depth = max_depth.max(carved.depth(x, y));
        }
    }

    // Bed area from a polar triangulation of the cavity surface.
    let (m_phi, m_t) = (1024usize, 400usize);
    let point = |i: usize, j: usize| {
        let phi = (i % m_phi) as f64 * TAU / m_phi as f64;
        // Rings crowd towards the rim, so a steep wall is one thin ring of triangles.
        let t = 1.0 - (1.0 - j as f64 / m_t as f64).powi(2);
        let (x, y) = carved.polar_point(t, phi);
        // The rim itself is at depth 0 (rounding could put it a hair inside).
        let d = if j == m_t { 0.0 } else { carved.depth(x, y) };
        let s = body.skin_point(x, y).unwrap_or(Vec3::new(x, y, 0.0));
        let n = body.normal(x, y).unwrap_or(Vec3::new(0.0, 0.0, 1.0));
        s - n * d
    };
    let tri = |a: Vec3, b: Vec3, c: Vec3| 0.5 * (b - a).cross(c - a).norm();
    let mut bed_area = 0.0;
    for i in 0..m_phi {
        for j in 0..m_t {
            let (p00, p10, p01, p11) = (point(i, j), point(i + 1, j), point(i, j + 1), point(i + 1, j + 1));
            bed_area += tri(p00, p10, p11) + tri(p00, p11, p01);
        }
    }

    let lifted = |n: usize| -> Vec<Vec3> {
        (0..n)
            .map(|i| {
                let (x, y) = carved.outline_point(i as f64 * TAU / n as f64);
                body.skin_point(x, y).unwrap_or(Vec3::new(x, y, 0.0))
            })
            .collect()
    };
    let fine = lifted(8192);
    let perimeter: f64 = (0..fine.len()).map(|i| (fine[(i + 1) % fine.len()] - fine[i]).norm()).sum();
    let (length, width) = length_width(&lifted(2048), Vec3::new(0.0, 0.0, 1.0));

    GroundTruth::from_si(TruthSi { area, bed_area, perimeter, length, width, max_depth, volume }, world_from_phantom)
}
