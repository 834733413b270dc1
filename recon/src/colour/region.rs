//! The wound surface on the mesh and the periwound ring around it.
//!
//! Everything is judged in the skin tangent plane at the wound (`centre_world`,
//! `normal_world` of the measurement): a triangle belongs to the wound when its centroid
//! projects inside the outline, it does not face away from the skin normal (the far side of
//! a thin limb projects inside too), and it lies in the mesh component that holds most of
//! that area (an unrelated surface behind, e.g. a floor, is another component). The
//! periwound ring is the skin of the same component between [`RING_INNER_M`] and
//! [`RING_OUTER_M`] outside the outline, facing out.

use crate::geometry::Vec3;
use crate::mesh::Mesh;

/// Inner edge of the periwound ring, metres outside the outline (clear of the rim's blur).
pub const RING_INNER_M: f64 = 0.003;
/// Outer edge of the periwound ring, metres outside the outline.
pub const RING_OUTER_M: f64 = 0.012;
/// A wound triangle's normal may not point further from the skin normal than this (cos).
const MIN_WOUND_FACING: f64 = -0.3;
/// A ring vertex must face out at least this much (cos to the skin normal).
const MIN_RING_FACING: f64 = 0.3;

/// The skin tangent frame at the wound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TangentFrame {
    pub centre: Vec3,
    pub normal: Vec3,
    e1: Vec3,
    e2: Vec3,
}

impl TangentFrame {
    pub fn new(centre: Vec3, normal: Vec3) -> Self {
        let normal = normal.normalized();
        let e1 = normal.any_perpendicular();
        let e2 = normal.cross(e1);
        TangentFrame { centre, normal, e1, e2 }
    }

    /// Tangent-plane coordinates of a world point.
    pub fn project(&self, p: Vec3) -> [f64; 2] {
        let d = p - self.centre;
        [d.dot(self.e1), d.dot(self.e2)]
    }

    pub fn polygon(&self, outline: &[Vec3]) -> Polygon {
        Polygon::new(outline.iter().map(|p| self.project(*p)).collect())
    }
}

/// A closed polygon in the tangent plane.
#[derive(Debug, Clone)]
pub(crate) struct Polygon {
    pts: Vec<[f64; 2]>,
    lo: [f64; 2],
    hi: [f64; 2],
}

impl Polygon {
    pub fn new(pts: Vec<[f64; 2]>) -> Self {
        let mut lo = [f64::INFINITY; 2];
        let mut hi = [f64::NEG_INFINITY; 2];
        for p in &pts {
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        Polygon { pts, lo, hi }
    }

    pub fn is_usable(&self) -> bool {
        self.pts.len() >= 3 && self.lo[0].is_finite() && self.hi[0] > self.lo[0] && self.hi[1] > self.lo[1]
    }

    /// Even–odd point-in-polygon test.
    pub fn contains(&self, q: [f64; 2]) -> bool {
        if q[0] < self.lo[0] || q[1] < self.lo[1] || q[0] > self.hi[0] || q[1] > self.hi[1] {
            return false;
        }
        let n = self.pts.len();
        let mut inside = false;
        let mut j = n - 1;
        for i in 0..n {
            let (a, b) = (self.pts[i], self.pts[j]);
            if (a[1] > q[1]) != (b[1] > q[1]) && q[0] < (b[0] - a[0]) * (q[1] - a[1]) / (b[1] - a[1]) + a[0] {
                inside = !inside;
            }
            j = i;
        }
        inside
    }

    /// Whether `q` is within `margin` of the bounding box.
    pub fn near_box(&self, q: [f64; 2], margin: f64) -> bool {
        q[0] >= self.lo[0] - margin
            && q[1] >= self.lo[1] - margin
            && q[0] <= self.hi[0] + margin
            && q[1] <= self.hi[1] + margin
    }

    /// Distance from `q` to the polygon's edges.
    pub fn distance(&self, q: [f64; 2]) -> f64 {
        let n = self.pts.len();
        let mut best = f64::INFINITY;
        let mut j = n - 1;
        for i in 0..n {
            let (a, b) = (self.pts[j], self.pts[i]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let l2 = dx * dx + dy * dy;
            let t = if l2 > 0.0 { (((q[0] - a[0]) * dx + (q[1] - a[1]) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
            let (ex, ey) = (a[0] + t * dx - q[0], a[1] + t * dy - q[1]);
            best = best.min(ex * ex + ey * ey);
            j = i;
        }
        best.sqrt()
    }
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[parent[i as usize] as usize];
        parent[i as usize] = p;
        i = p;
    }
    i
}

/// Connected components of the mesh (by shared vertices): a label per vertex.
pub(crate) fn components(mesh: &Mesh) -> Vec<u32> {
    let mut parent: Vec<u32> = (0..mesh.positions.len() as u32).collect();
    for t in mesh.indices.chunks_exact(3) {
        let a = find(&mut parent, t[0]);
        for &v in &t[1..] {
            let b = find(&mut parent, v);
            if a != b {
                parent[b as usize] = a;
            }
        }
    }
    (0..parent.len() as u32).map(|i| find(&mut parent, i)).collect()
}

pub(crate) fn pos(mesh: &Mesh, i: u32) -> Vec3 {
    let p = mesh.positions[i as usize];
    Vec3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]))
}

/// The wound surface: its triangles (indices into `mesh.indices / 3`), and per mesh
/// vertex the share of wound area it carries (a third of each wound triangle's area,
/// m²; 0 for vertices not on the wound).
pub(crate) struct WoundRegion {
    pub triangles: Vec<usize>,
    pub vertex_area: Vec<f64>,
    pub area_m2: f64,
    /// Mesh component label of the wound.
    pub component: u32,
}

/// Selects the wound surface inside `polygon` (see the module docs).
pub(crate) fn wound_region(
    mesh: &Mesh,
    frame: &TangentFrame,
    polygon: &Polygon,
    labels: &[u32],
) -> Option<WoundRegion> {
    let mut candidates: Vec<(usize, f64, u32)> = Vec::new();
    for (t, tri) in mesh.indices.chunks_exact(3).enumerate() {
        let (a, b, c) = (pos(mesh, tri[0]), pos(mesh, tri[1]), pos(mesh, tri[2]));
        let centroid = (a + b + c) * (1.0 / 3.0);
        let q = frame.project(centroid);
        if !polygon.contains(q) {
            continue;
        }
        let cr = (b - a).cross(c - a);
        let area = 0.5 * cr.norm();
        if area <= 0.0 || cr.normalized().dot(frame.normal) < MIN_WOUND_FACING {
            continue;
        }
        candidates.push((t, area, labels[tri[0] as usize]));
    }
    let mut by_label: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
    for (_, a, l) in &candidates {
        *by_label.entry(*l).or_insert(0.0) += a;
    }
    let component = by_label.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))?.0;
    let mut vertex_area = vec![0.0; mesh.positions.len()];
    let mut triangles = Vec::new();
    let mut area_m2 = 0.0;
    for (t, a, l) in candidates {
        if l != component {
            continue;
        }
        triangles.push(t);
        area_m2 += a;
        for &v in &mesh.indices[3 * t..3 * t + 3] {
            vertex_area[v as usize] += a / 3.0;
        }
    }
    Some(WoundRegion { triangles, vertex_area, area_m2, component })
}

/// Vertices of the periwound ring (see the module docs), seen or not.
pub(crate) fn periwound_ring(
    mesh: &Mesh,
    frame: &TangentFrame,
    polygon: &Polygon,
    labels: &[u32],
    component: u32,
) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, (p, n)) in mesh.positions.iter().zip(&mesh.normals).enumerate() {
        if labels[i] != component {
            continue;
        }
        let pw = Vec3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
        let q = frame.project(pw);
        if !polygon.near_box(q, RING_OUTER_M) || polygon.contains(q) {
            continue;
        }
        let nw = Vec3::new(f64::from(n[0]), f64::from(n[1]), f64::from(n[2]));
        if nw.dot(frame.normal) < MIN_RING_FACING {
            continue;
        }
        let d = polygon.distance(q);
        if (RING_INNER_M..=RING_OUTER_M).contains(&d) {
            out.push(i as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_contains_and_distance() {
        let sq = Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        assert!(sq.contains([0.5, 0.5]));
        assert!(!sq.contains([1.5, 0.5]));
        assert!((sq.distance([1.5, 0.5]) - 0.5).abs() < 1e-12);
        assert!((sq.distance([0.5, 0.4]) - 0.4).abs() < 1e-12);
    }
}
