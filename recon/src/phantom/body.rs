//! Body parts the family's wounds sit on: a plane, a (finite) cylinder, an ellipsoid with
//! the wound at its pole, a saddle; optionally a background plane (a floor) far behind.
//!
//! Every body is placed with the wound centre at the origin and the outward skin normal
//! +z there. Near the wound the skin is the graph `z = h(x, y)` over the tangent plane, and
//! a point below the skin is located by its *foot* on the skin (tangent-plane coordinates
//! `(x, y)`) and its depth `t` along the inward normal, which is how the cavity is cut
//! (`cavity.rs`) and how its ground truth is integrated (`truth.rs`).

use crate::geometry::Vec3;

/// The skin surface of a body part, in phantom coordinates (wound centre at the origin,
/// outward normal +z there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body {
    /// The plane z = 0 (back, abdomen, a large limb seen closely).
    Plane,
    /// A limb: a cylinder of `radius` with its axis along x through (0, 0, −radius);
    /// with `half_length`, capped by flat discs at x = ±half_length (finger, toe).
    Cylinder {
        /// Limb radius, metres.
        radius: f64,
        /// Half the limb's length, metres; `None` for an infinitely long limb.
        half_length: Option<f64>,
    },
    /// An ellipsoid with semi-axes `a` (x), `b` (y), `c` (z), centred at (0, 0, −c), the
    /// wound at its pole: principal skin radii `a²/c` and `b²/c` there (heel, sacrum, calf).
    Ellipsoid {
        /// Semi-axis along x, metres.
        a: f64,
        /// Semi-axis along y, metres.
        b: f64,
        /// Semi-axis along z (the pole's normal), metres.
        c: f64,
    },
    /// The saddle-like graph `z = −x²/2r1 − y²/2r2`: principal radii `r1` and `r2` at the
    /// wound, positive where the skin bends away from the outward normal (like a limb),
    /// negative where it bends towards it; opposite signs give a saddle (negative Gauss
    /// curvature: the neck, the web of a hand).
    Saddle {
        /// Radius along x, metres (signed).
        r1: f64,
        /// Radius along y, metres (signed).
        r2: f64,
    },
}

/// Most iterations of the Newton foot-point projection (ellipsoid, saddle): near the
/// wound (depth ≪ radius) it converges to machine precision in 2–4.
const FOOT_ITERATIONS: usize = 8;

impl Body {
    /// A short name for reports.
    pub fn label(&self) -> String {
        match *self {
            Body::Plane => "plane".into(),
            Body::Cylinder { radius, half_length: None } => format!("cylinder R{:.0}", radius * 1e3),
            Body::Cylinder { radius, half_length: Some(l) } => {
                format!("cylinder R{:.0} L{:.0}", radius * 1e3, 2.0 * l * 1e3)
            }
            Body::Ellipsoid { a, b, c } => {
                format!("ellipsoid R{:.0}x{:.0}", a * a / c * 1e3, b * b / c * 1e3)
            }
            Body::Saddle { r1, r2 } => format!("saddle R{:.0}/{:.0}", r1 * 1e3, r2 * 1e3),
        }
    }

    /// The smallest absolute principal radius at the wound, metres (∞ for a plane).
    pub fn min_radius(&self) -> f64 {
        match *self {
            Body::Plane => f64::INFINITY,
            Body::Cylinder { radius, .. } => radius,
            Body::Ellipsoid { a, b, c } => (a * a / c).min(b * b / c),
            Body::Saddle { r1, r2 } => r1.abs().min(r2.abs()),
        }
    }

    /// Skin height `h(x, y)` over the tangent plane at the wound and its first and second
    /// derivatives `(h, hx, hy, hxx, hxy, hyy)`; `None` where the skin is not a graph.
    pub fn graph(&self, x: f64, y: f64) -> Option<[f64; 6]> {
        match *self {
            Body::Plane => Some([0.0; 6]),
            Body::Cylinder { radius: r, .. } => {
                let q = r * r - y * y;
                if q <= 0.0 {
                    return None;
                }
                let s = q.sqrt();
                Some([s - r, 0.0, -y / s, 0.0, 0.0, -r * r / (s * s * s)])
            }
            Body::Ellipsoid { a, b, c } => {
                let q = 1.0 - x * x / (a * a) - y * y / (b * b);
                if q <= 0.0 {
                    return None;
                }
                let s = q.sqrt();
                let (qx, qy) = (-2.0 * x / (a * a), -2.0 * y / (b * b));
                let (qxx, qyy) = (-2.0 / (a * a), -2.0 / (b * b));
                // h = c·sqrt(q) − c.
                let hx = c * qx / (2.0 * s);
                let hy = c * qy / (2.0 * s);
                let hxx = c * (qxx / (2.0 * s) - qx * qx / (4.0 * s * s * s));
                let hyy = c * (qyy / (2.0 * s) - qy * qy / (4.0 * s * s * s));
                let hxy = -c * qx * qy / (4.0 * s * s * s);
                Some([c * s - c, hx, hy, hxx, hxy, hyy])
            }
            Body::Saddle { r1, r2 } => {
                Some([-x * x / (2.0 * r1) - y * y / (2.0 * r2), -x / r1, -y / r2, -1.0 / r1, 0.0, -1.0 / r2])
            }
        }
    }

    /// The skin point above `(x, y)` of the tangent plane.
    pub fn skin_point(&self, x: f64, y: f64) -> Option<Vec3> {
        self.graph(x, y).map(|g| Vec3::new(x, y, g[0]))
    }

    /// Unit outward normal of the skin above `(x, y)`.
    pub fn normal(&self, x: f64, y: f64) -> Option<Vec3> {
        self.graph(x, y).map(|g| Vec3::new(-g[1], -g[2], 1.0).normalized())
    }

    /// Foot of `p` on the skin: tangent-plane coordinates `(x, y)` of the skin point whose
    /// normal passes through `p`, and the depth of `p` below it along the inward normal
    /// (negative above the skin). Meant for points near the wound.
    pub fn foot(&self, p: Vec3) -> Option<(f64, f64, f64)> {
        match *self {
            Body::Plane => Some((p.x, p.y, -p.z)),
            Body::Cylinder { radius: r, .. } => {
                let zz = p.z + r;
                let rho = (p.y * p.y + zz * zz).sqrt();
                if rho <= 0.0 {
                    return None;
                }
                Some((p.x, r * p.y / rho, r - rho))
            }
            Body::Ellipsoid { .. } | Body::Saddle { .. } => self.foot_newton(p),
        }
    }

    /// Solves `p = S(x, y) − t·n(x, y)` by Newton's method with the analytic derivatives
    /// of the skin point and of its unit normal.
    fn foot_newton(&self, p: Vec3) -> Option<(f64, f64, f64)> {
        let (mut x, mut y) = (p.x, p.y);
        let mut t = self.graph(x, y)?[0] - p.z;
        for _ in 0..FOOT_ITERATIONS {
            let [h, hx, hy, hxx, hxy, hyy] = self.graph(x, y)?;
            let w = (1.0 + hx * hx + hy * hy).sqrt();
            let m = Vec3::new(-hx, -hy, 1.0);
            let n = m * (1.0 / w);
            let r = Vec3::new(x, y, h) - n * t - p;
            if r.norm() < 1e-12 {
                break;
            }
            // ∂n/∂x and ∂n/∂y of n = m / |m|.
            let w3 = w * w * w;
            let nx = Vec3::new(-hxx, -hxy, 0.0) * (1.0 / w) - m * ((hx * hxx + hy * hxy) / w3);
            let ny = Vec3::new(-hxy, -hyy, 0.0) * (1.0 / w) - m * ((hx * hxy + hy * hyy) / w3);
            // Columns of the Jacobian of S − t·n: ∂/∂x, ∂/∂y, ∂/∂t.
            let cx = Vec3::new(1.0, 0.0, hx) - nx * t;
            let cy = Vec3::new(0.0, 1.0, hy) - ny * t;
            let ct = -n;
            let det = cx.dot(cy.cross(ct));
            if det.abs() < 1e-15 {
                return None;
            }
            // Cramer's rule for J·δ = −r.
            let b = -r;
            x += b.dot(cy.cross(ct)) / det;
            y += cx.dot(b.cross(ct)) / det;
            t += cx.dot(cy.cross(b)) / det;
        }
        Some((x, y, t))
    }

    /// Ray parameter of the first point where `o + t·dir` enters the body (phantom frame),
    /// ignoring any cavity.
    pub fn enter(&self, o: Vec3, dir: Vec3) -> Option<f64> {
        match *self {
            Body::Plane => {
                if dir.z >= 0.0 {
                    return None;
                }
                let t = -o.z / dir.z;
                (t > 0.0).then_some(t)
            }
            Body::Cylinder { radius: r, half_length } => enter_cylinder(o, dir, r, half_length),
            Body::Ellipsoid { a, b, c } => {
                // ((x/a)² + (y/b)² + ((z + c)/c)² = 1.
                let (ox, oy, oz) = (o.x / a, o.y / b, (o.z + c) / c);
                let (dx, dy, dz) = (dir.x / a, dir.y / b, dir.z / c);
                let qa = dx * dx + dy * dy + dz * dz;
                let qb = 2.0 * (ox * dx + oy * dy + oz * dz);
                let qc = ox * ox + oy * oy + oz * oz - 1.0;
                first_root(qa, qb, qc)
            }
            Body::Saddle { r1, r2 } => {
                // F(p) = z + x²/2r1 + y²/2r2, material where F < 0.
                let f = |p: Vec3| p.z + p.x * p.x / (2.0 * r1) + p.y * p.y / (2.0 * r2);
                let qa = dir.x * dir.x / (2.0 * r1) + dir.y * dir.y / (2.0 * r2);
                let qb = dir.z + o.x * dir.x / r1 + o.y * dir.y / r2;
                let qc = f(o);
                if qc <= 0.0 {
                    return None;
                }
                let roots = real_roots(qa, qb, qc);
                // The first root where F goes from positive to negative.
                roots.into_iter().filter(|&t| t > 0.0).find(|&t| {
                    let p = o + dir * t;
                    let grad = Vec3::new(p.x / r1, p.y / r2, 1.0);
                    grad.dot(dir) < 0.0
                })
            }
        }
    }
}

/// Ray entry into a cylinder along x of radius `r` through (0, 0, −r), optionally capped.
fn enter_cylinder(o: Vec3, dir: Vec3, r: f64, half_length: Option<f64>) -> Option<f64> {
    let oz = o.z + r;
    let a = dir.y * dir.y + dir.z * dir.z;
    let b = 2.0 * (o.y * dir.y + oz * dir.z);
    let c = o.y * o.y + oz * oz - r * r;
    let side = if a > 0.0 { first_root(a, b, c) } else { None };
    let Some(l) = half_length else { return side };
    let inside_disc = |t: f64| {
        let p = o + dir * t;
        p.y * p.y + (p.z + r) * (p.z + r) <= r * r
    };
    if let Some(t) = side {
        if (o.x + dir.x * t).abs() <= l {
            return Some(t);
        }
    }
    // The end discs at x = ±l.
    if dir.x == 0.0 {
        return None;
    }
    [-l, l]
        .into_iter()
        .map(|x| (x - o.x) / dir.x)
        .filter(|&t| t > 0.0 && inside_disc(t))
        .filter(|&t| {
            // Entering: the ray moves towards x = 0 at the disc.
            let x = o.x + dir.x * t;
            x * dir.x < 0.0
        })
        .reduce(f64::min)
}

/// The smaller positive root of `a t² + b t + c` when the ray starts outside (c > 0).
fn first_root(a: f64, b: f64, c: f64) -> Option<f64> {
    if c <= 0.0 || a <= 0.0 {
        return None;
    }
    let disc = b * b - 4.0 * a * c;
    if disc < 0.0 {
        return None;
    }
    let t = (-b - disc.sqrt()) / (2.0 * a);
    (t > 0.0).then_some(t)
}

/// Real roots of `a t² + b t + c`, ascending.
fn real_roots(a: f64, b: f64, c: f64) -> Vec<f64> {
    if a.abs() < 1e-12 {
        return if b.abs() < 1e-15 { vec![] } else { vec![-c / b] };
    }
    let disc = b * b - 4.0 * a * c;
    if disc < 0.0 {
        return vec![];
    }
    let s = disc.sqrt();
    let (t1, t2) = ((-b - s) / (2.0 * a), (-b + s) / (2.0 * a));
    vec![t1.min(t2), t1.max(t2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_foot_of_a_point_below_the_skin_lies_on_its_normal() {
        let bodies = [
            Body::Plane,
            Body::Cylinder { radius: 0.038, half_length: None },
            Body::Ellipsoid { a: 0.035, b: 0.045, c: 0.03 },
            Body::Saddle { r1: 0.06, r2: -0.08 },
        ];
        for body in bodies {
            for &(x, y, t) in &[(0.0, 0.0, 0.003), (0.006, -0.004, 0.002), (-0.01, 0.008, 0.005)] {
                let s = body.skin_point(x, y).expect("on the skin");
                let p = s - body.normal(x, y).expect("normal") * t;
                let (fx, fy, ft) = body.foot(p).expect("foot");
                assert!((fx - x).abs() < 1e-9 && (fy - y).abs() < 1e-9 && (ft - t).abs() < 1e-9, "{body:?}");
            }
        }
    }

    #[test]
    fn rays_enter_each_body_at_its_skin() {
        let bodies = [
            Body::Plane,
            Body::Cylinder { radius: 0.038, half_length: Some(0.03) },
            Body::Ellipsoid { a: 0.035, b: 0.045, c: 0.03 },
            Body::Saddle { r1: 0.06, r2: -0.08 },
        ];
        for body in bodies {
            let o = Vec3::new(0.01, -0.02, 0.25);
            let target = Vec3::new(0.005, 0.004, 0.0);
            let dir = (body.skin_point(target.x, target.y).unwrap() - o).normalized();
            let t = body.enter(o, dir).expect("hits");
            let p = o + dir * t;
            let s = body.skin_point(p.x, p.y).unwrap();
            assert!((p - s).norm() < 1e-9, "{body:?}");
        }
    }
}
