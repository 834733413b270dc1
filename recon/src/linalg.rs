//! Small dense linear algebra: least-squares solves for surface fits and the
//! symmetric 3×3 eigenproblem for plane fits. Sizes are tiny (≤ 15 unknowns), so
//! plain Gaussian elimination on ndarray matrices is all that is needed.

use ndarray::{Array1, Array2};

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
pub(crate) fn solve(mut a: Array2<f64>, mut b: Array1<f64>) -> Option<Array1<f64>> {
    let n = b.len();
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    for col in 0..n {
        let mut piv = col;
        for r in (col + 1)..n {
            if a[[r, col]].abs() > a[[piv, col]].abs() {
                piv = r;
            }
        }
        if a[[piv, col]].abs() <= 1e-13 * scale {
            return None;
        }
        if piv != col {
            for c in 0..n {
                a.swap([piv, c], [col, c]);
            }
            b.swap(piv, col);
        }
        for r in (col + 1)..n {
            let f = a[[r, col]] / a[[col, col]];
            if f != 0.0 {
                for c in col..n {
                    a[[r, c]] -= f * a[[col, c]];
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut x = Array1::zeros(n);
    for r in (0..n).rev() {
        let mut s = b[r];
        for c in (r + 1)..n {
            s -= a[[r, c]] * x[c];
        }
        x[r] = s / a[[r, r]];
    }
    Some(x)
}

/// Accumulates the normal equations of a weighted linear least-squares problem.
#[derive(Clone)]
pub(crate) struct NormalEquations {
    ata: Array2<f64>,
    atb: Array1<f64>,
}

impl NormalEquations {
    pub(crate) fn new(n: usize) -> Self {
        NormalEquations { ata: Array2::zeros((n, n)), atb: Array1::zeros(n) }
    }

    #[allow(clippy::needless_range_loop)] // symmetric index math reads better with indices
    pub(crate) fn add(&mut self, row: &[f64], rhs: f64, weight: f64) {
        let n = row.len();
        for i in 0..n {
            let wi = weight * row[i];
            for j in i..n {
                self.ata[[i, j]] += wi * row[j];
            }
            self.atb[i] += wi * rhs;
        }
    }

    /// A copy with the diagonal scaled by `1 + lambda` (Levenberg–Marquardt damping of a
    /// Gauss–Newton step).
    pub(crate) fn damped(&self, lambda: f64) -> NormalEquations {
        let mut d = self.clone();
        for i in 0..d.atb.len() {
            let v = d.ata[[i, i]];
            d.ata[[i, i]] = v * (1.0 + lambda) + 1e-30;
        }
        d
    }

    pub(crate) fn solve(mut self) -> Option<Array1<f64>> {
        let n = self.atb.len();
        for i in 0..n {
            for j in 0..i {
                self.ata[[i, j]] = self.ata[[j, i]];
            }
        }
        solve(self.ata, self.atb)
    }
}

/// Eigen-decomposition of a symmetric 3×3 matrix (cyclic Jacobi). Returns eigenvalues
/// in ascending order and the matching eigenvectors as columns.
#[allow(clippy::needless_range_loop)] // Jacobi rotations are index math
pub(crate) fn sym3_eigen(m: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        if off < 1e-300 {
            break;
        }
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-300 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            for k in 0..3 {
                let (akp, akq) = (a[k][p], a[k][q]);
                a[k][p] = c * akp - s * akq;
                a[k][q] = s * akp + c * akq;
            }
            for k in 0..3 {
                let (apk, aqk) = (a[p][k], a[q][k]);
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in v.iter_mut() {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let mut idx = [0usize, 1, 2];
    idx.sort_by(|&i, &j| a[i][i].total_cmp(&a[j][j]));
    let vals = [a[idx[0]][idx[0]], a[idx[1]][idx[1]], a[idx[2]][idx[2]]];
    let mut vecs = [[0.0; 3]; 3];
    for (col, &i) in idx.iter().enumerate() {
        for r in 0..3 {
            vecs[r][col] = v[r][i];
        }
    }
    (vals, vecs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_recovers_a_known_solution() {
        let a = ndarray::arr2(&[[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]]);
        let x = ndarray::arr1(&[1.0, -2.0, 3.0]);
        let b = a.dot(&x);
        let got = solve(a, b).unwrap();
        for i in 0..3 {
            assert!((got[i] - x[i]).abs() < 1e-12);
        }
    }

    #[test]
    fn solve_reports_singular_matrices() {
        let a = ndarray::arr2(&[[1.0, 2.0], [2.0, 4.0]]);
        assert!(solve(a, ndarray::arr1(&[1.0, 2.0])).is_none());
    }

    #[test]
    fn eigen_finds_the_smallest_axis() {
        let m = [[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]];
        let (vals, vecs) = sym3_eigen(m);
        assert!((vals[0] - 0.5).abs() < 1e-12);
        assert!((vals[1] - 1.0).abs() < 1e-12);
        assert!((vals[2] - 3.0).abs() < 1e-12);
        assert!((vecs[2][0].abs() - 1.0).abs() < 1e-12);
    }
}
