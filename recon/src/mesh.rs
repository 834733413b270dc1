//! Surface extraction and export: marching cubes over the TSDF bricks, with a
//! per-brick mesh cache so only bricks whose neighbourhood changed since the last
//! extraction are re-meshed; welding into one indexed mesh; binary PLY and binary
//! glTF (`.glb`) encoders; point clouds.
//!
//! Vertices sit on voxel edges where the interpolated TSDF crosses zero; normals are
//! the normalised TSDF gradient (central differences), pointing towards free space.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::mc_tables::{triangle_table, EDGES};
use crate::tsdf::{BrickKey, BrickMap, TsdfVolume, BRICK};

/// An indexed triangle mesh in world coordinates (metres).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    /// Vertex positions.
    pub positions: Vec<[f32; 3]>,
    /// Unit vertex normals, pointing out of the skin.
    pub normals: Vec<[f32; 3]>,
    /// Triangles, three vertex indices each, counter-clockwise seen from outside.
    pub indices: Vec<u32>,
}

/// Points with normals sampled on the fused surface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointCloud {
    /// Positions, metres.
    pub points: Vec<[f32; 3]>,
    /// Unit normals.
    pub normals: Vec<[f32; 3]>,
}

/// What one [`MeshExtractor::update`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Bricks re-meshed.
    pub bricks_extracted: usize,
    /// Bricks whose cached mesh was still valid.
    pub bricks_reused: usize,
    /// Triangles in the whole mesh after the update.
    pub triangles: usize,
}

#[derive(Debug, Clone, Default)]
struct BrickMesh {
    extracted_at: u64,
    positions: Vec<[f32; 3]>,
    normals: Vec<[f32; 3]>,
    /// Global voxel-edge key of each vertex, for welding across bricks.
    keys: Vec<u64>,
    indices: Vec<u32>,
}

const PAD: usize = BRICK + 3; // voxels -1..=BRICK+1 along each axis

/// Incremental marching-cubes extractor with a per-brick cache.
#[derive(Debug)]
pub struct MeshExtractor {
    min_weight: f32,
    cache: BrickMap<BrickMesh>,
    sdf: Vec<f32>,
    weight: Vec<f32>,
    vertex_of_edge: Vec<u32>,
}

impl MeshExtractor {
    /// An extractor that ignores cubes with any corner fused with less than `min_weight`.
    pub fn new(min_weight: f32) -> Self {
        MeshExtractor {
            min_weight: min_weight.max(1e-6),
            cache: BrickMap::default(),
            sdf: vec![0.0; PAD * PAD * PAD],
            weight: vec![0.0; PAD * PAD * PAD],
            vertex_of_edge: vec![u32::MAX; (BRICK + 1).pow(3) * 3],
        }
    }

    /// Re-meshes every brick whose neighbourhood changed since its last extraction.
    pub fn update(&mut self, vol: &TsdfVolume) -> ExtractStats {
        let mut stats = ExtractStats::default();
        let keys: Vec<BrickKey> = vol.bricks().map(|b| b.key).collect();
        for key in keys {
            let mut newest = 0u64;
            for dz in -1..=1 {
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        if let Some(b) = vol.brick_slot(key.offset(dx, dy, dz)) {
                            newest = newest.max(b.modified);
                        }
                    }
                }
            }
            if let Some(c) = self.cache.get(&key) {
                if c.extracted_at >= newest && newest > 0 {
                    stats.bricks_reused += 1;
                    continue;
                }
            }
            let m = self.extract_brick(vol, key, vol.generation());
            self.cache.insert(key, m);
            stats.bricks_extracted += 1;
        }
        stats.triangles = self.cache.values().map(|m| m.indices.len() / 3).sum();
        stats
    }

    /// Drops every cached brick mesh (the next update re-meshes everything).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Approximate bytes held by the cache.
    pub fn memory_bytes(&self) -> usize {
        self.cache
            .values()
            .map(|m| m.positions.capacity() * 24 + m.keys.capacity() * 8 + m.indices.capacity() * 4)
            .sum::<usize>()
            + self.cache.capacity() * 64
    }

    /// The welded mesh of all cached bricks.
    pub fn mesh(&self) -> Mesh {
        let mut keys: Vec<&BrickKey> = self.cache.keys().collect();
        keys.sort();
        let mut out = Mesh::default();
        let mut welded: HashMap<u64, u32> = HashMap::new();
        for k in keys {
            let Some(bm) = self.cache.get(k) else { continue };
            let remap: Vec<u32> = bm
                .keys
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    *welded.entry(*key).or_insert_with(|| {
                        out.positions.push(bm.positions[i]);
                        out.normals.push(bm.normals[i]);
                        (out.positions.len() - 1) as u32
                    })
                })
                .collect();
            for t in bm.indices.chunks_exact(3) {
                let (a, b, c) = (remap[t[0] as usize], remap[t[1] as usize], remap[t[2] as usize]);
                if a != b && b != c && a != c {
                    out.indices.extend_from_slice(&[a, b, c]);
                }
            }
        }
        out
    }

    fn load_block(&mut self, vol: &TsdfVolume, key: BrickKey) {
        self.weight.iter_mut().for_each(|w| *w = 0.0);
        let b = BRICK as i32;
        for bz in -1..=1 {
            for by in -1..=1 {
                for bx in -1..=1 {
                    let Some(br) = vol.brick_slot(key.offset(bx, by, bz)) else {
                        continue;
                    };
                    // Local padded range covered by this neighbour.
                    for z in 0..b {
                        let lz = bz * b + z + 1;
                        if !(0..PAD as i32).contains(&lz) {
                            continue;
                        }
                        for y in 0..b {
                            let ly = by * b + y + 1;
                            if !(0..PAD as i32).contains(&ly) {
                                continue;
                            }
                            for x in 0..b {
                                let lx = bx * b + x + 1;
                                if !(0..PAD as i32).contains(&lx) {
                                    continue;
                                }
                                let src = ((z * b + y) * b + x) as usize;
                                let dst = ((lz as usize * PAD) + ly as usize) * PAD + lx as usize;
                                self.sdf[dst] = br.sdf[src];
                                self.weight[dst] = br.weight[src];
                            }
                        }
                    }
                }
            }
        }
    }

    fn extract_brick(&mut self, vol: &TsdfVolume, key: BrickKey, now: u64) -> BrickMesh {
        self.load_block(vol, key);
        self.vertex_of_edge.iter_mut().for_each(|v| *v = u32::MAX);
        let table = triangle_table();
        let vs = vol.voxel_size() as f32;
        let mut out = BrickMesh { extracted_at: now, ..BrickMesh::default() };
        let at = |x: usize, y: usize, z: usize| (z * PAD + y) * PAD + x;
        let b = BRICK;
        let origin = [i64::from(key.x) * b as i64, i64::from(key.y) * b as i64, i64::from(key.z) * b as i64];
        for z in 0..b {
            for y in 0..b {
                for x in 0..b {
                    let mut vals = [0.0f32; 8];
                    let mut ok = true;
                    let mut mask = 0usize;
                    for (c, v) in vals.iter_mut().enumerate() {
                        let i = at(x + 1 + (c & 1), y + 1 + ((c >> 1) & 1), z + 1 + ((c >> 2) & 1));
                        if self.weight[i] < self.min_weight {
                            ok = false;
                            break;
                        }
                        *v = self.sdf[i];
                        if *v < 0.0 {
                            mask |= 1 << c;
                        }
                    }
                    if !ok || mask == 0 || mask == 255 {
                        continue;
                    }
                    // A +1/-1 jump is a truncation artefact (e.g. behind thin parts), not a surface.
                    if vals.iter().any(|v| v.abs() >= 0.999) {
                        continue;
                    }
                    for tri in &table[mask] {
                        let mut idx = [0u32; 3];
                        for (k, &e) in tri.iter().enumerate() {
                            let (c, axis) = EDGES[usize::from(e)];
                            let (cx, cy, cz) =
                                (x + usize::from(c & 1), y + usize::from((c >> 1) & 1), z + usize::from((c >> 2) & 1));
                            let slot = ((cz * (b + 1) + cy) * (b + 1) + cx) * 3 + usize::from(axis);
                            if self.vertex_of_edge[slot] == u32::MAX {
                                let d = usize::from(c | (1 << axis));
                                let (s0, s1) = (vals[usize::from(c)], vals[d]);
                                let t = (s0 / (s0 - s1)).clamp(0.0, 1.0);
                                let mut g = [origin[0] + cx as i64, origin[1] + cy as i64, origin[2] + cz as i64];
                                let mut p = [g[0] as f32 + 0.5, g[1] as f32 + 0.5, g[2] as f32 + 0.5];
                                p[usize::from(axis)] += t;
                                let n0 = self.gradient(cx + 1, cy + 1, cz + 1);
                                let mut o = [cx + 1, cy + 1, cz + 1];
                                o[usize::from(axis)] += 1;
                                let n1 = self.gradient(o[0], o[1], o[2]);
                                let mut n = [
                                    n0[0] * (1.0 - t) + n1[0] * t,
                                    n0[1] * (1.0 - t) + n1[1] * t,
                                    n0[2] * (1.0 - t) + n1[2] * t,
                                ];
                                let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
                                if len > 0.0 {
                                    n.iter_mut().for_each(|v| *v /= len);
                                }
                                out.positions.push([p[0] * vs, p[1] * vs, p[2] * vs]);
                                out.normals.push(n);
                                let m = (1i64 << 20) - 1;
                                g.iter_mut().for_each(|v| *v &= m);
                                out.keys.push(
                                    ((g[0] as u64) << 42)
                                        | ((g[1] as u64) << 22)
                                        | ((g[2] as u64) << 2)
                                        | u64::from(axis),
                                );
                                self.vertex_of_edge[slot] = (out.positions.len() - 1) as u32;
                            }
                            idx[k] = self.vertex_of_edge[slot];
                        }
                        out.indices.extend_from_slice(&idx);
                    }
                }
            }
        }
        out
    }

    /// TSDF gradient at padded local voxel `(x, y, z)` (one-sided where a neighbour is unobserved).
    fn gradient(&self, x: usize, y: usize, z: usize) -> [f32; 3] {
        let at = |x: usize, y: usize, z: usize| (z * PAD + y) * PAD + x;
        let c = at(x, y, z);
        let mut g = [0.0f32; 3];
        let pos = [x, y, z];
        for (axis, gv) in g.iter_mut().enumerate() {
            let mut lo = pos;
            let mut hi = pos;
            let mut span = 0.0;
            let mut vlo = self.sdf[c];
            let mut vhi = self.sdf[c];
            if pos[axis] > 0 {
                lo[axis] -= 1;
                let i = at(lo[0], lo[1], lo[2]);
                if self.weight[i] > 0.0 {
                    vlo = self.sdf[i];
                    span += 1.0;
                }
            }
            if pos[axis] + 1 < PAD {
                hi[axis] += 1;
                let i = at(hi[0], hi[1], hi[2]);
                if self.weight[i] > 0.0 {
                    vhi = self.sdf[i];
                    span += 1.0;
                }
            }
            if span > 0.0 {
                *gv = (vhi - vlo) / span;
            }
        }
        g
    }
}

/// Meshes the whole volume in one go (no cache).
pub fn extract_mesh(vol: &TsdfVolume, min_weight: f32) -> Mesh {
    let mut ex = MeshExtractor::new(min_weight);
    ex.update(vol);
    ex.mesh()
}

impl Mesh {
    /// Number of triangles.
    pub fn triangle_count(&self) -> usize {
        self.indices.len() / 3
    }

    /// Total triangle area, m².
    pub fn area(&self) -> f64 {
        self.indices
            .chunks_exact(3)
            .map(|t| {
                let p = |i: u32| self.positions[i as usize].map(f64::from);
                let (a, b, c) = (p(t[0]), p(t[1]), p(t[2]));
                let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
                let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
                let n = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
                0.5 * (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt()
            })
            .sum()
    }

    /// The vertices as a point cloud.
    pub fn to_point_cloud(&self) -> PointCloud {
        PointCloud { points: self.positions.clone(), normals: self.normals.clone() }
    }

    /// Binary little-endian PLY with positions, normals and triangle faces.
    pub fn to_ply(&self) -> Vec<u8> {
        let mut out = ply_header(self.positions.len(), Some(self.triangle_count()));
        out.reserve(self.positions.len() * 24 + self.triangle_count() * 13);
        write_points(&mut out, &self.positions, &self.normals);
        for t in self.indices.chunks_exact(3) {
            out.push(3);
            for i in t {
                out.extend_from_slice(&(*i as i32).to_le_bytes());
            }
        }
        out
    }

    /// Binary glTF 2.0 (`.glb`): one mesh with POSITION, NORMAL and u32 indices.
    pub fn to_glb(&self) -> Vec<u8> {
        self.glb(None)
    }

    /// [`Mesh::to_glb`] with per-vertex sRGB colours as `COLOR_0` (normalised unsigned
    /// bytes, RGBA, e.g. from `colour::VertexColours::to_srgb8`). Colours of the wrong
    /// length are left out.
    pub fn to_glb_coloured(&self, colours: &[[u8; 4]]) -> Vec<u8> {
        self.glb((colours.len() == self.positions.len()).then_some(colours))
    }

    fn glb(&self, colours: Option<&[[u8; 4]]>) -> Vec<u8> {
        let n = self.positions.len();
        let has_mesh = n > 0 && !self.indices.is_empty();
        let mut bin = Vec::with_capacity(n * 24 + self.indices.len() * 4);
        let mut json = String::new();
        if has_mesh {
            for p in &self.positions {
                p.iter().for_each(|v| bin.extend_from_slice(&v.to_le_bytes()));
            }
            for p in &self.normals {
                p.iter().for_each(|v| bin.extend_from_slice(&v.to_le_bytes()));
            }
            for i in &self.indices {
                bin.extend_from_slice(&i.to_le_bytes());
            }
            if let Some(c) = colours {
                c.iter().for_each(|rgba| bin.extend_from_slice(rgba));
            }
            let mut min = [f32::INFINITY; 3];
            let mut max = [f32::NEG_INFINITY; 3];
            for p in &self.positions {
                for k in 0..3 {
                    min[k] = min[k].min(p[k]);
                    max[k] = max[k].max(p[k]);
                }
            }
            let vb = n * 12;
            let ib = self.indices.len() * 4;
            let _ = write!(
                json,
                concat!(
                    "{{\"asset\":{{\"version\":\"2.0\",\"generator\":\"coherency-recon\"}},",
                    "\"scene\":0,\"scenes\":[{{\"nodes\":[0]}}],\"nodes\":[{{\"mesh\":0}}],",
                    "\"meshes\":[{{\"primitives\":[{{\"attributes\":{{\"POSITION\":0,\"NORMAL\":1{colour_attr}}},\"indices\":2,\"mode\":4}}]}}],",
                    "\"buffers\":[{{\"byteLength\":{total}}}],",
                    "\"bufferViews\":[",
                    "{{\"buffer\":0,\"byteOffset\":0,\"byteLength\":{vb},\"target\":34962}},",
                    "{{\"buffer\":0,\"byteOffset\":{vb},\"byteLength\":{vb},\"target\":34962}},",
                    "{{\"buffer\":0,\"byteOffset\":{ioff},\"byteLength\":{ib},\"target\":34963}}{colour_view}],",
                    "\"accessors\":[",
                    "{{\"bufferView\":0,\"componentType\":5126,\"count\":{n},\"type\":\"VEC3\",\"min\":[{a},{b},{c}],\"max\":[{d},{e},{f}]}},",
                    "{{\"bufferView\":1,\"componentType\":5126,\"count\":{n},\"type\":\"VEC3\"}},",
                    "{{\"bufferView\":2,\"componentType\":5125,\"count\":{ni},\"type\":\"SCALAR\"}}{colour_accessor}]}}"
                ),
                colour_attr = if colours.is_some() { ",\"COLOR_0\":3" } else { "" },
                colour_view = if colours.is_some() {
                    format!(",{{\"buffer\":0,\"byteOffset\":{},\"byteLength\":{},\"target\":34962}}", 2 * vb + ib, n * 4)
                } else {
                    String::new()
                },
                colour_accessor = if colours.is_some() {
                    format!(",{{\"bufferView\":3,\"componentType\":5121,\"normalized\":true,\"count\":{n},\"type\":\"VEC4\"}}")
                } else {
                    String::new()
                },
                total = bin.len(),
                vb = vb,
                ioff = 2 * vb,
                ib = ib,
                n = n,
                ni = self.indices.len(),
                a = min[0],
                b = min[1],
                c = min[2],
                d = max[0],
                e = max[1],
                f = max[2],
            );
        } else {
            json.push_str(
                "{\"asset\":{\"version\":\"2.0\",\"generator\":\"coherency-recon\"},\"scene\":0,\"scenes\":[{\"nodes\":[]}]}",
            );
        }
        let mut jb = json.into_bytes();
        while !jb.len().is_multiple_of(4) {
            jb.push(b' ');
        }
        while !bin.len().is_multiple_of(4) {
            bin.push(0);
        }
        let total = 12 + 8 + jb.len() + if has_mesh { 8 + bin.len() } else { 0 };
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(b"glTF");
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(jb.len() as u32).to_le_bytes());
        out.extend_from_slice(b"JSON");
        out.extend_from_slice(&jb);
        if has_mesh {
            out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
            out.extend_from_slice(b"BIN\0");
            out.extend_from_slice(&bin);
        }
        out
    }
}

impl PointCloud {
    /// Binary little-endian PLY with positions and normals.
    pub fn to_ply(&self) -> Vec<u8> {
        let mut out = ply_header(self.points.len(), None);
        write_points(&mut out, &self.points, &self.normals);
        out
    }
}

fn ply_header(vertices: usize, faces: Option<usize>) -> Vec<u8> {
    let mut h = format!(
        "ply\nformat binary_little_endian 1.0\ncomment coherency-recon, metres\nelement vertex {vertices}\nproperty float x\nproperty float y\nproperty float z\nproperty float nx\nproperty float ny\nproperty float nz\n"
    );
    if let Some(f) = faces {
        let _ = write!(h, "element face {f}\nproperty list uchar int vertex_indices\n");
    }
    h.push_str("end_header\n");
    h.into_bytes()
}

fn write_points(out: &mut Vec<u8>, p: &[[f32; 3]], n: &[[f32; 3]]) {
    for (i, v) in p.iter().enumerate() {
        v.iter().for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
        let nn = n.get(i).copied().unwrap_or([0.0; 3]);
        nn.iter().for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{DepthImage, Frame, Intrinsics, Pose, Vec3};
    use crate::tsdf::TsdfConfig;

    fn wall_volume(dist: f32) -> TsdfVolume {
        let k = Intrinsics::iphone_256x192();
        let mut vol = TsdfVolume::new(TsdfConfig::default()).unwrap();
        let f = Frame {
            depth: DepthImage::new(k.width, k.height, vec![dist; k.pixel_count()], None).unwrap(),
            intrinsics: k,
            pose: Pose::IDENTITY,
        };
        vol.integrate(&f).unwrap();
        vol
    }

    #[test]
    fn a_coloured_glb_carries_color_0() {
        let m = Mesh {
            positions: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            normals: vec![[0.0, 0.0, 1.0]; 3],
            indices: vec![0, 1, 2],
        };
        let glb = m.to_glb_coloured(&[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]]);
        let json_len = u32::from_le_bytes([glb[12], glb[13], glb[14], glb[15]]) as usize;
        let json: serde_json::Value = serde_json::from_slice(&glb[20..20 + json_len]).expect("json");
        assert_eq!(json["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"], 3);
        assert_eq!(json["accessors"][3]["componentType"], 5121);
        assert_eq!(json["buffers"][0]["byteLength"], 3 * 24 + 12 + 12);
        assert_eq!(glb.len() as u32, u32::from_le_bytes([glb[8], glb[9], glb[10], glb[11]]));
        assert_eq!(&glb[glb.len() - 12..glb.len() - 9], &[255, 0, 0]);
        // Wrong length: plain GLB.
        assert_eq!(m.to_glb_coloured(&[[0; 4]]), m.to_glb());
    }

    #[test]
    fn a_wall_meshes_flat_with_normals_towards_the_camera() {
        let vol = wall_volume(0.25);
        let m = extract_mesh(&vol, 0.01);
        assert!(m.triangle_count() > 1000);
        for (p, n) in m.positions.iter().zip(&m.normals) {
            assert!((p[2] - 0.25).abs() < 2e-4, "{p:?}");
            assert!(n[2] < -0.99, "{n:?}");
        }
        // Triangle winding agrees with the normals.
        for t in m.indices.chunks_exact(3).take(100) {
            let p = |i: u32| Vec3::from_array(m.positions[i as usize].map(f64::from));
            let fn_ = (p(t[1]) - p(t[0])).cross(p(t[2]) - p(t[0]));
            assert!(fn_.z < 0.0);
        }
    }

    /// Welding across bricks: the mesh is a manifold whose only open edges are on the
    /// border of the observed patch (the case table's watertightness is tested in
    /// `mc_tables`).
    #[test]
    fn welded_wall_mesh_has_every_interior_edge_shared_by_two_triangles() {
        let vol = wall_volume(0.25);
        let m = extract_mesh(&vol, 0.01);
        let mut edges: HashMap<(u32, u32), i32> = HashMap::new();
        for t in m.indices.chunks_exact(3) {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                *edges.entry((a.min(b), a.max(b))).or_default() += 1;
            }
        }
        assert!(edges.values().all(|&c| c <= 2));
        let boundary = edges.values().filter(|&&c| c == 1).count();
        assert!(boundary * 10 < edges.len(), "{boundary} of {}", edges.len());
    }

    #[test]
    fn incremental_update_reuses_unchanged_bricks() {
        let mut vol = wall_volume(0.25);
        let mut ex = MeshExtractor::new(0.01);
        let first = ex.update(&vol);
        assert!(first.bricks_extracted > 0 && first.bricks_reused == 0);
        let again = ex.update(&vol);
        assert_eq!(again.bricks_extracted, 0);
        // A small frame touching only the centre re-meshes only nearby bricks.
        let k = Intrinsics::iphone_256x192();
        let mut d = vec![0.0f32; k.pixel_count()];
        for j in 90..100 {
            for i in 120..130 {
                d[j * 256 + i] = 0.25;
            }
        }
        let f =
            Frame { depth: DepthImage::new(k.width, k.height, d, None).unwrap(), intrinsics: k, pose: Pose::IDENTITY };
        vol.integrate(&f).unwrap();
        let third = ex.update(&vol);
        assert!(third.bricks_extracted > 0);
        assert!(third.bricks_extracted * 10 < first.bricks_extracted, "{third:?} {first:?}");
        assert_eq!(ex.mesh().triangle_count(), extract_mesh(&vol, 0.01).triangle_count());
    }

    #[test]
    fn ply_and_glb_have_valid_headers_and_sizes() {
        let m = extract_mesh(&wall_volume(0.25), 0.01);
        let ply = m.to_ply();
        let text = String::from_utf8_lossy(&ply[..300]);
        assert!(text.starts_with("ply\nformat binary_little_endian 1.0\n"));
        let hdr_end = ply.windows(11).position(|w| w == b"end_header\n").unwrap() + 11;
        assert_eq!(ply.len() - hdr_end, m.positions.len() * 24 + m.triangle_count() * 13);

        let glb = m.to_glb();
        assert_eq!(&glb[0..4], b"glTF");
        assert_eq!(u32::from_le_bytes(glb[8..12].try_into().unwrap()) as usize, glb.len());
        let jlen = u32::from_le_bytes(glb[12..16].try_into().unwrap()) as usize;
        assert_eq!(&glb[16..20], b"JSON");
        let json = std::str::from_utf8(&glb[20..20 + jlen]).unwrap();
        assert!(json.contains("\"POSITION\":0"));
        let blen = u32::from_le_bytes(glb[20 + jlen..24 + jlen].try_into().unwrap()) as usize;
        assert_eq!(blen, m.positions.len() * 24 + m.indices.len() * 4);
        assert!(glb.len().is_multiple_of(4));

        let empty = Mesh::default().to_glb();
        assert_eq!(&empty[0..4], b"glTF");
        assert!(empty.len().is_multiple_of(4));
    }
}
