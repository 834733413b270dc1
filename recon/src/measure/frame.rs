//! The local frame at the wound: a point on the skin and the outward skin normal, a
//! continuous, deterministic function of the fused surface.
//!
//! The normal starts from a deterministic RANSAC plane through the surface points near
//! the target and is then refined by iteratively reweighted least squares with smooth
//! Tukey weights: the RANSAC inlier set is a hard, discrete choice (a 0.05 mm change in the
//! input can swap it), the reweighted fixed point is not.

use crate::geometry::Vec3;
use crate::linalg::sym3_eigen;

/// Weighted plane through `pts`: (weighted centroid, unit normal of least spread).
fn weighted_plane(pts: &[Vec3], w: &[f64]) -> Option<(Vec3, Vec3)> {
    let sw: f64 = w.iter().sum();
    if sw <= 0.0 {
        return None;
    }
    let mean = pts.iter().zip(w).fold(Vec3::ZERO, |s, (p, &wi)| s + *p * wi) * (1.0 / sw);
    let mut cov = [[0.0; 3]; 3];
    for (p, &wi) in pts.iter().zip(w) {
        let d = (*p - mean).to_array();
        for r in 0..3 {
            for c in 0..3 {
                cov[r][c] += wi * d[r] * d[c];
            }
        }
    }
    let (_, vecs) = sym3_eigen(cov);
    let n = Vec3::new(vecs[0][0], vecs[1][0], vecs[2][0]);
    (n.norm() > 0.0).then(|| (mean, n.normalized()))
}

/// Refines a plane `(c, n)` through `pts` by IRLS with Tukey biweights (tuning 4.685 robust
/// sigmas, the sigma floored at `floor_m`), keeping the normal's sign. Points near the
/// target count more (`radius`: Gaussian distance weight of that scale around `centre`).
pub(crate) fn irls_plane(pts: &[Vec3], init: (Vec3, Vec3), centre: Vec3, radius: f64, floor_m: f64) -> (Vec3, Vec3) {
    let (mut c, mut n) = init;
    let near: Vec<f64> =
        pts.iter().map(|p| (-(*p - centre).dot(*p - centre) / (2.0 * radius * radius)).exp()).collect();
    for _ in 0..12 {
        let mut res: Vec<f64> = pts.iter().map(|p| (*p - c).dot(n).abs()).collect();
        let mid = res.len() / 2;
        if res.is_empty() {
            break;
        }
        res.select_nth_unstable_by(mid, f64::total_cmp);
        let sigma = (1.4826 * res[mid]).max(floor_m);
        let k = 4.685 * sigma;
        let w: Vec<f64> = pts
            .iter()
            .zip(&near)
            .map(|(p, &d)| {
                let u = (*p - c).dot(n) / k;
                if u.abs() >= 1.0 {
                    0.0
                } else {
                    d * (1.0 - u * u).powi(2)
                }
            })
            .collect();
        let Some((c2, mut n2)) = weighted_plane(pts, &w) else { break };
        if n2.dot(n) < 0.0 {
            n2 = -n2;
        }
        let moved = (n2 - n).norm();
        c = c2;
        n = n2;
        if moved < 1e-9 {
            break;
        }
    }
    (c, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irls_ignores_a_pit_and_a_bump() {
        // A tilted plane with a 3 mm pit in the middle and a few outliers.
        let n_true = Vec3::new(0.1, -0.05, 1.0).normalized();
        let e1 = n_true.any_perpendicular();
        let e2 = n_true.cross(e1);
        let mut pts = Vec::new();
        for i in -30..=30 {
            for j in -30..=30 {
                let (x, y) = (f64::from(i) * 1e-3, f64::from(j) * 1e-3);
                let z = if x * x + y * y < 0.012f64.powi(2) { -0.003 } else { 0.0 };
                pts.push(e1 * x + e2 * y + n_true * z);
            }
        }
        let (_, n) = irls_plane(&pts, (Vec3::ZERO, Vec3::new(0.0, 0.0, 1.0)), Vec3::ZERO, 0.05, 5e-5);
        assert!(
            n.dot(n_true) > (0.05f64).to_radians().cos(),
            "normal off by {} deg",
            n.dot(n_true).acos().to_degrees()
        );
    }
}
