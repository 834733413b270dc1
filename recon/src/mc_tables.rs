//! Marching-cubes case table, generated at first use instead of transcribed.
//!
//! For each of the 256 inside/outside corner patterns the iso-curve is traced on the
//! six cube faces (each face's segments depend only on that face's four corners, so
//! neighbouring cubes always agree and the mesh is watertight; on ambiguous faces the
//! inside corners are kept apart), the face segments are chained into closed loops
//! across the cube, and every loop is fanned into triangles. Orientation is fixed so
//! that triangles wind counter-clockwise seen from the outside (positive TSDF), i.e.
//! their normals agree with the TSDF gradient.
//!
//! Corner `c` sits at `(c & 1, (c >> 1) & 1, (c >> 2) & 1)`. Edge `e` starts at corner
//! `EDGES[e].0` and runs along axis `EDGES[e].1`.

use std::sync::OnceLock;

/// Edges as (start corner, axis).
pub(crate) const EDGES: [(u8, u8); 12] =
    [(0, 0), (2, 0), (4, 0), (6, 0), (0, 1), (1, 1), (4, 1), (5, 1), (0, 2), (1, 2), (2, 2), (3, 2)];

fn corner_pos(c: u8) -> [i32; 3] {
    [i32::from(c & 1), i32::from((c >> 1) & 1), i32::from((c >> 2) & 1)]
}

fn edge_of(a: u8, b: u8) -> usize {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let axis = match hi ^ lo {
        1 => 0,
        2 => 1,
        _ => 2,
    };
    EDGES.iter().position(|&(c, ax)| c == lo && ax == axis).unwrap_or(0)
}

/// The six faces as corner cycles, counter-clockwise seen from outside the cube.
fn faces() -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    for axis in 0..3usize {
        let (a1, a2) = ((axis + 1) % 3, (axis + 2) % 3);
        for side in 0..2u8 {
            let mk = |u: u8, v: u8| -> u8 {
                let mut c = side << axis;
                c |= u << a1;
                c |= v << a2;
                c
            };
            // (a1, a2) counter-clockwise has normal +axis (a1 × a2 = axis, cyclic).
            let mut cyc = [mk(0, 0), mk(1, 0), mk(1, 1), mk(0, 1)];
            if side == 0 {
                cyc.reverse();
            }
            out.push(cyc);
        }
    }
    out
}

fn build_case(mask: u8, faces: &[[u8; 4]]) -> Vec<[u8; 3]> {
    let inside = |c: u8| mask & (1 << c) != 0;
    let mut next = [usize::MAX; 12];
    for f in faces {
        let mut crossings: Vec<(usize, bool)> = Vec::new();
        for k in 0..4 {
            let (a, b) = (f[k], f[(k + 1) % 4]);
            if inside(a) != inside(b) {
                crossings.push((edge_of(a, b), !inside(a) && inside(b)));
            }
        }
        let n = crossings.len();
        for (i, &(e, is_in)) in crossings.iter().enumerate() {
            if !is_in {
                continue;
            }
            for s in 1..n {
                let (e2, in2) = crossings[(i + s) % n];
                if !in2 {
                    next[e] = e2;
                    break;
                }
            }
        }
    }
    let mut used = [false; 12];
    let mut tris = Vec::new();
    for start in 0..12 {
        if next[start] == usize::MAX || used[start] {
            continue;
        }
        let mut lp = Vec::new();
        let mut e = start;
        while !used[e] {
            used[e] = true;
            lp.push(e as u8);
            e = next[e];
            if e == usize::MAX {
                break;
            }
        }
        for k in 1..lp.len().saturating_sub(1) {
            tris.push([lp[0], lp[k], lp[k + 1]]);
        }
    }
    tris
}

fn edge_mid(e: u8) -> [f64; 3] {
    let (c, axis) = EDGES[usize::from(e)];
    let p = corner_pos(c);
    let mut m = [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])];
    m[usize::from(axis)] += 0.5;
    m
}

fn build() -> Vec<Vec<[u8; 3]>> {
    let faces = faces();
    let mut table: Vec<Vec<[u8; 3]>> = (0..=255u8).map(|m| build_case(m, &faces)).collect();
    // Orientation check on the single-corner case: the normal must point away from
    // the inside corner 0, towards (1, 1, 1).
    let t = table[1][0];
    let (p0, p1, p2) = (edge_mid(t[0]), edge_mid(t[1]), edge_mid(t[2]));
    let u = [p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]];
    let v = [p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]];
    let n = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
    if n[0] + n[1] + n[2] < 0.0 {
        for case in table.iter_mut() {
            for tri in case.iter_mut() {
                tri.swap(1, 2);
            }
        }
    }
    table
}

/// Triangles (as edge triples) for each corner mask; bit `c` set = corner `c` inside.
pub(crate) fn triangle_table() -> &'static [Vec<[u8; 3]>] {
    static TABLE: OnceLock<Vec<Vec<[u8; 3]>>> = OnceLock::new();
    TABLE.get_or_init(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_uses_exactly_the_crossed_edges() {
        let table = triangle_table();
        assert!(table[0].is_empty() && table[255].is_empty());
        for (mask, case) in table.iter().enumerate() {
            let mut crossed = [false; 12];
            for (e, &(c, axis)) in EDGES.iter().enumerate() {
                let d = c | (1 << axis);
                crossed[e] = ((mask >> c) & 1) != ((mask >> d) & 1);
            }
            let mut used = [false; 12];
            for t in case {
                for &e in t {
                    used[usize::from(e)] = true;
                }
            }
            assert_eq!(crossed, used, "mask {mask}");
            assert!(case.len() <= 12);
        }
    }

    #[test]
    fn complementary_single_corner_cases_are_single_triangles() {
        let table = triangle_table();
        for c in 0..8 {
            assert_eq!(table[1 << c].len(), 1);
            assert_eq!(table[255 ^ (1 << c)].len(), 1);
        }
        // Two adjacent corners: a quad, two triangles.
        assert_eq!(table[0b11].len(), 2);
    }
}
