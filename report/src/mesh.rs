//! A scan's mesh as a picture for a report: the binary glTF the reconstruction stores (one
//! primitive, `POSITION`, `NORMAL`, `u32` or `u16` indices) read back, seen from outside the
//! skin along the normal of the plane of least variance through the vertices (as the browser
//! viewer finds it), shaded, and the wound coloured: vertices more than
//! [`WOUND_LEVEL_M`] into the depression below the skin's median level. A z-buffer rasteriser
//! in plain Rust, so a report renders on any machine.

use thiserror::Error;

/// Depth into the depression from which a vertex is drawn as wound (the contour level the
/// measurement uses, `docs/measurement.md`; `WOUND_LEVEL_M` in `web/dashboard/src/viewer.js`).
pub const WOUND_LEVEL_M: f64 = 0.0008;
/// Largest vertex count read back (the reconstruction's meshes stay far below it).
const MAX_VERTICES: usize = 8 << 20;

/// The picture spans the wound's extent times this.
const FRAME_MARGIN: f64 = 2.0;
/// …and at least this much skin (metres).
const FRAME_MIN_M: f64 = 0.02;

const SKIN: [f64; 3] = [217.0, 179.0, 154.0];
const WOUND: [f64; 3] = [192.0, 57.0, 43.0];
const BACKGROUND: u8 = 255;

/// A triangle mesh in metres.
#[derive(Debug, Clone, Default)]
pub struct TriMesh {
    pub positions: Vec<[f32; 3]>,
    /// Per vertex, as stored; empty when the file had none (faces then shade flat).
    pub normals: Vec<[f32; 3]>,
    pub indices: Vec<u32>,
}

/// A rendered picture: RGBA, rows top to bottom.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
    /// Millimetres of skin per pixel (the view is orthographic).
    pub mm_per_px: f64,
    /// Pixels drawn as wound.
    pub wound_pixels: usize,
    /// Pixels drawn at all.
    pub covered_pixels: usize,
}

#[derive(Debug, Error, PartialEq)]
pub enum MeshError {
    #[error("the stored mesh is not a binary glTF this server wrote: {0}")]
    Format(&'static str),
    #[error("the mesh has no triangles")]
    Empty,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// One accessor's bytes: `(slice, count, component type)`.
fn accessor<'a>(
    json: &serde_json::Value,
    bin: &'a [u8],
    index: &serde_json::Value,
) -> Result<(&'a [u8], usize, u64), MeshError> {
    let bad = MeshError::Format;
    let i = index.as_u64().ok_or(bad("accessor index"))? as usize;
    let acc = json["accessors"].get(i).ok_or(bad("accessor missing"))?;
    let count = acc["count"].as_u64().ok_or(bad("accessor count"))? as usize;
    let kind = acc["componentType"].as_u64().ok_or(bad("component type"))?;
    let view = json["bufferViews"]
        .get(acc["bufferView"].as_u64().ok_or(bad("buffer view index"))? as usize)
        .ok_or(bad("buffer view missing"))?;
    if view.get("byteStride").is_some_and(|s| !s.is_null()) {
        return Err(bad("interleaved buffer views"));
    }
    let start = view["byteOffset"].as_u64().unwrap_or(0) as usize + acc["byteOffset"].as_u64().unwrap_or(0) as usize;
    let len = view["byteLength"].as_u64().ok_or(bad("buffer view length"))? as usize;
    let slice = bin
        .get(start..start.checked_add(len).ok_or(bad("buffer view range"))?)
        .ok_or(bad("buffer view outside the buffer"))?;
    Ok((slice, count, kind))
}

fn vec3s(slice: &[u8], count: usize, kind: u64) -> Result<Vec<[f32; 3]>, MeshError> {
    if kind != 5126 || count.checked_mul(12).is_none_or(|n| n > slice.len()) || count > MAX_VERTICES {
        return Err(MeshError::Format("vertex attribute"));
    }
    Ok(slice[..count * 12]
        .chunks_exact(12)
        .map(|c| {
            let f = |k: usize| f32::from_le_bytes([c[k], c[k + 1], c[k + 2], c[k + 3]]);
            [f(0), f(4), f(8)]
        })
        .collect())
}

/// Reads a binary glTF 2.0 file's first primitive.
pub fn read_glb(bytes: &[u8]) -> Result<TriMesh, MeshError> {
    let bad = MeshError::Format;
    if bytes.get(0..4) != Some(b"glTF") || u32_at(bytes, 4) != Some(2) {
        return Err(bad("no glTF 2 header"));
    }
    let json_len = u32_at(bytes, 12).ok_or(bad("truncated"))? as usize;
    if bytes.get(16..20) != Some(b"JSON") {
        return Err(bad("first chunk is not JSON"));
    }
    let json_end = 20usize.checked_add(json_len).ok_or(bad("chunk length"))?;
    let json: serde_json::Value = serde_json::from_slice(bytes.get(20..json_end).ok_or(bad("truncated JSON chunk"))?)
        .map_err(|_| bad("JSON chunk"))?;
    let prim = &json["meshes"][0]["primitives"][0];
    if prim.is_null() {
        return Err(MeshError::Empty);
    }
    let bin_len = u32_at(bytes, json_end).ok_or(bad("no binary chunk"))? as usize;
    if bytes.get(json_end + 4..json_end + 8) != Some(b"BIN\0") {
        return Err(bad("second chunk is not BIN"));
    }
    let bin = bytes.get(json_end + 8..json_end + 8 + bin_len).ok_or(bad("truncated binary chunk"))?;
    let (s, n, k) = accessor(&json, bin, &prim["attributes"]["POSITION"])?;
    let positions = vec3s(s, n, k)?;
    let normals = match prim["attributes"].get("NORMAL") {
        Some(i) => {
            let (s, n, k) = accessor(&json, bin, i)?;
            let v = vec3s(s, n, k)?;
            if v.len() == positions.len() {
                v
            } else {
                Vec::new()
            }
        }
        None => Vec::new(),
    };
    let (s, n, k) = accessor(&json, bin, &prim["indices"])?;
    let indices: Vec<u32> = match k {
        5125 if n.checked_mul(4).is_some_and(|b| b <= s.len()) => {
            s[..n * 4].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        5123 if n.checked_mul(2).is_some_and(|b| b <= s.len()) => {
            s[..n * 2].chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect()
        }
        _ => return Err(bad("indices")),
    };
    if indices.iter().any(|&i| i as usize >= positions.len()) {
        return Err(bad("an index past the vertices"));
    }
    if indices.len() < 3 {
        return Err(MeshError::Empty);
    }
    Ok(TriMesh { positions, normals, indices })
}

type V3 = [f64; 3];

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
fn unit(a: V3) -> V3 {
    let n = dot(a, a).sqrt();
    if n > 0.0 {
        [a[0] / n, a[1] / n, a[2] / n]
    } else {
        [0.0, 0.0, 1.0]
    }
}
fn of(p: [f32; 3]) -> V3 {
    [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]
}

/// The unit normal of the plane of least variance through `pts` (power iteration on
/// `tr(C)·I − C`, whose largest eigenvector is `C`'s smallest), and the centroid.
fn skin_plane(pts: &[[f32; 3]]) -> (V3, V3) {
    let n = pts.len().max(1) as f64;
    let mut c = [0.0; 3];
    for p in pts {
        let p = of(*p);
        (0..3).for_each(|k| c[k] += p[k] / n);
    }
    let mut cov = [[0.0; 3]; 3];
    for p in pts {
        let d = sub(of(*p), c);
        for a in 0..3 {
            for b in 0..3 {
                cov[a][b] += d[a] * d[b];
            }
        }
    }
    let tr = cov[0][0] + cov[1][1] + cov[2][2];
    let m = |a: usize, b: usize| if a == b { tr - cov[a][b] } else { -cov[a][b] };
    let mut v = unit([0.3, 0.2, 1.0]);
    for _ in 0..64 {
        v = unit([
            m(0, 0) * v[0] + m(0, 1) * v[1] + m(0, 2) * v[2],
            m(1, 0) * v[0] + m(1, 1) * v[1] + m(1, 2) * v[2],
            m(2, 0) * v[0] + m(2, 1) * v[1] + m(2, 2) * v[2],
        ]);
    }
    (c, v)
}

/// Renders `mesh` into a `width × height` picture with a `margin`-pixel border.
pub fn render(mesh: &TriMesh, width: u32, height: u32, margin: u32) -> Result<Picture, MeshError> {
    if mesh.indices.len() < 3 || mesh.positions.is_empty() {
        return Err(MeshError::Empty);
    }
    let (c, n) = skin_plane(&mesh.positions);
    let mut h: Vec<f64> = mesh.positions.iter().map(|p| dot(sub(of(*p), c), n)).collect();
    let mut sorted = h.clone();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[sorted.len() / 2];
    let (lo, hi) = (sorted[0] - med, sorted[sorted.len() - 1] - med);
    // The wound goes into the skin: the side with the larger excursion from the median.
    let sign = if lo.abs() > hi.abs() { -1.0 } else { 1.0 };
    h.iter_mut().for_each(|v| *v = sign * (*v - med));
    let out = [-sign * n[0], -sign * n[1], -sign * n[2]];
    // Up on the page: the world's up (ARKit: +y) as seen in the skin plane.
    let world_up = if dot([0.0, 1.0, 0.0], out).abs() < 0.9 { [0.0, 1.0, 0.0] } else { [1.0, 0.0, 0.0] };
    let d = dot(world_up, out);
    let up = unit([world_up[0] - d * out[0], world_up[1] - d * out[1], world_up[2] - d * out[2]]);
    let right = cross(up, out);
    let light = unit([
        out[0] + 0.4 * up[0] - 0.3 * right[0],
        out[1] + 0.4 * up[1] - 0.3 * right[1],
        out[2] + 0.4 * up[2] - 0.3 * right[2],
    ]);

    let proj: Vec<V3> = mesh
        .positions
        .iter()
        .map(|p| {
            let q = sub(of(*p), c);
            [dot(q, right), dot(q, up), dot(q, out)]
        })
        .collect();
    let bounds = |pick: &dyn Fn(usize) -> bool| {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (_, p) in proj.iter().enumerate().filter(|(i, _)| pick(*i)) {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        (x0 <= x1).then_some((x0, x1, y0, y1))
    };
    // Framed on the wound with as much skin around it again (at least FRAME_MIN_M across),
    // else the whole mesh.
    let (x0, x1, y0, y1) = match bounds(&|i| h[i] > WOUND_LEVEL_M) {
        Some((a, b, c2, d)) => {
            let half = ((b - a).max(d - c2) * FRAME_MARGIN / 2.0).max(FRAME_MIN_M / 2.0);
            let (cx, cy) = ((a + b) / 2.0, (c2 + d) / 2.0);
            (cx - half, cx + half, cy - half, cy + half)
        }
        None => bounds(&|_| true).unwrap_or((-0.01, 0.01, -0.01, 0.01)),
    };
    let (w, hgt) = (f64::from(width), f64::from(height));
    let m = f64::from(margin);
    let scale = ((w - 2.0 * m) / (x1 - x0).max(1e-9)).min((hgt - 2.0 * m) / (y1 - y0).max(1e-9));
    let (ox, oy) = ((w - (x1 - x0) * scale) / 2.0, (hgt - (y1 - y0) * scale) / 2.0);
    let screen: Vec<[f64; 3]> =
        proj.iter().map(|p| [ox + (p[0] - x0) * scale, hgt - (oy + (p[1] - y0) * scale), p[2]]).collect();

    let shade = |normal: V3, wound: bool| {
        let lambert = dot(unit(normal), light).max(0.0);
        let k = 0.35 + 0.65 * lambert;
        let base = if wound { WOUND } else { SKIN };
        [base[0] * k, base[1] * k, base[2] * k]
    };
    let colours: Vec<V3> = if mesh.normals.len() == mesh.positions.len() {
        mesh.normals.iter().zip(&h).map(|(nv, depth)| shade(of(*nv), *depth > WOUND_LEVEL_M)).collect()
    } else {
        Vec::new()
    };

    let (wi, hi_px) = (width as usize, height as usize);
    let mut zbuf = vec![f64::NEG_INFINITY; wi * hi_px];
    let mut rgba = vec![BACKGROUND; wi * hi_px * 4];
    let mut wound_px = vec![false; wi * hi_px];
    for t in mesh.indices.chunks_exact(3) {
        let [a, b, cc] = [t[0] as usize, t[1] as usize, t[2] as usize];
        let (pa, pb, pc) = (screen[a], screen[b], screen[cc]);
        let area = (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pb[1] - pa[1]) * (pc[0] - pa[0]);
        if area.abs() < 1e-12 {
            continue;
        }
        let flat = if colours.is_empty() {
            let fnrm = cross(
                sub(of(mesh.positions[b]), of(mesh.positions[a])),
                sub(of(mesh.positions[cc]), of(mesh.positions[a])),
            );
            let fnrm = if dot(fnrm, out) < 0.0 { [-fnrm[0], -fnrm[1], -fnrm[2]] } else { fnrm };
            Some(shade(fnrm, (h[a] + h[b] + h[cc]) / 3.0 > WOUND_LEVEL_M))
        } else {
            None
        };
        let in_wound = (h[a] + h[b] + h[cc]) / 3.0 > WOUND_LEVEL_M;
        let bx0 = pa[0].min(pb[0]).min(pc[0]).floor().max(0.0) as usize;
        let bx1 = (pa[0].max(pb[0]).max(pc[0]).ceil() as usize).min(wi.saturating_sub(1));
        let by0 = pa[1].min(pb[1]).min(pc[1]).floor().max(0.0) as usize;
        let by1 = (pa[1].max(pb[1]).max(pc[1]).ceil() as usize).min(hi_px.saturating_sub(1));
        for y in by0..=by1 {
            for x in bx0..=bx1 {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let w0 = ((pb[0] - px) * (pc[1] - py) - (pb[1] - py) * (pc[0] - px)) / area;
                let w1 = ((pc[0] - px) * (pa[1] - py) - (pc[1] - py) * (pa[0] - px)) / area;
                let w2 = 1.0 - w0 - w1;
                if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                    continue;
                }
                let z = w0 * pa[2] + w1 * pb[2] + w2 * pc[2];
                let i = y * wi + x;
                if z <= zbuf[i] {
                    continue;
                }
                zbuf[i] = z;
                let col = flat.unwrap_or_else(|| {
                    let (ca, cb, ccl) = (colours[a], colours[b], colours[cc]);
                    [0, 1, 2].map(|k| w0 * ca[k] + w1 * cb[k] + w2 * ccl[k])
                });
                rgba[i * 4..i * 4 + 3].copy_from_slice(&col.map(|v| v.round().clamp(0.0, 255.0) as u8));
                wound_px[i] = in_wound;
            }
        }
    }
    Ok(Picture {
        width,
        height,
        rgba,
        mm_per_px: 1000.0 / scale,
        wound_pixels: wound_px.iter().filter(|w| **w).count(),
        covered_pixels: zbuf.iter().filter(|z| z.is_finite()).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square patch of skin 40 mm across, with (`pit`) a 10 mm-wide, 3 mm-deep pit in the middle,
    /// as binary glTF the way the reconstruction writes it (positions, normals, u32 indices).
    fn pit_glb(pit: bool) -> Vec<u8> {
        let n = 41usize;
        let mut pos = Vec::new();
        for j in 0..n {
            for i in 0..n {
                let (x, y) = ((i as f32 - 20.0) / 1000.0, (j as f32 - 20.0) / 1000.0);
                let r = (x * x + y * y).sqrt();
                let z = if pit && r < 0.005 { -0.003 * (1.0 - (r / 0.005).powi(2)) } else { 0.0 };
                pos.push([x, y, z]);
            }
        }
        let mut idx = Vec::new();
        for j in 0..n - 1 {
            for i in 0..n - 1 {
                let k = (j * n + i) as u32;
                idx.extend_from_slice(&[k, k + 1, k + n as u32, k + 1, k + n as u32 + 1, k + n as u32]);
            }
        }
        let mut bin = Vec::new();
        pos.iter().flatten().for_each(|v| bin.extend_from_slice(&v.to_le_bytes()));
        pos.iter().for_each(|_| [0f32, 0.0, 1.0].iter().for_each(|v| bin.extend_from_slice(&v.to_le_bytes())));
        idx.iter().for_each(|v| bin.extend_from_slice(&v.to_le_bytes()));
        let vb = pos.len() * 12;
        let json = format!(
            r#"{{"asset":{{"version":"2.0"}},"meshes":[{{"primitives":[{{"attributes":{{"POSITION":0,"NORMAL":1}},"indices":2}}]}}],"bufferViews":[{{"buffer":0,"byteOffset":0,"byteLength":{vb}}},{{"buffer":0,"byteOffset":{vb},"byteLength":{vb}}},{{"buffer":0,"byteOffset":{},"byteLength":{}}}],"accessors":[{{"bufferView":0,"componentType":5126,"count":{},"type":"VEC3"}},{{"bufferView":1,"componentType":5126,"count":{},"type":"VEC3"}},{{"bufferView":2,"componentType":5125,"count":{},"type":"SCALAR"}}]}}"#,
            2 * vb,
            idx.len() * 4,
            pos.len(),
            pos.len(),
            idx.len()
        );
        let mut jb = json.into_bytes();
        while jb.len() % 4 != 0 {
            jb.push(b' ');
        }
        let mut out = b"glTF".to_vec();
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&((28 + jb.len() + bin.len()) as u32).to_le_bytes());
        out.extend_from_slice(&(jb.len() as u32).to_le_bytes());
        out.extend_from_slice(b"JSON");
        out.extend_from_slice(&jb);
        out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
        out.extend_from_slice(b"BIN\0");
        out.extend_from_slice(&bin);
        out
    }

    #[test]
    fn a_pit_in_flat_skin_is_drawn_as_a_wound_of_its_true_size_framed_on_it() {
        let mesh = read_glb(&pit_glb(true)).unwrap();
        assert_eq!(mesh.positions.len(), 41 * 41);
        let pic = render(&mesh, 400, 400, 20).unwrap();
        // The wound is ~8.6 mm across: framed at the 20 mm minimum over the 360 px inside the margin.
        assert!((pic.mm_per_px - 20.0 / 360.0).abs() < 1e-6, "{}", pic.mm_per_px);
        assert_eq!(pic.covered_pixels, 400 * 400, "the skin fills the frame");
        // Deeper than 0.8 mm: r < 5·√(1 − 0.8/3) mm ≈ 4.28 mm → area ≈ 57.6 mm², on triangles of 1 mm.
        let wound_mm2 = pic.wound_pixels as f64 * pic.mm_per_px * pic.mm_per_px;
        assert!((40.0..80.0).contains(&wound_mm2), "{wound_mm2}");
        // The centre is wound-coloured (red dominant), a corner skin-coloured.
        let px = |x: usize, y: usize| &pic.rgba[(y * 400 + x) * 4..(y * 400 + x) * 4 + 3];
        let centre = px(200, 200);
        assert!(u32::from(centre[0]) > 2 * u32::from(centre[1]), "{centre:?}");
        let skin = px(10, 10);
        assert!(skin[1] > 100 && skin[0] > skin[2], "{skin:?}");
    }

    #[test]
    fn skin_without_a_wound_is_drawn_whole_with_a_border() {
        let pic = render(&read_glb(&pit_glb(false)).unwrap(), 400, 400, 20).unwrap();
        assert!((pic.mm_per_px - 40.0 / 360.0).abs() < 1e-6, "{}", pic.mm_per_px);
        assert_eq!(pic.wound_pixels, 0);
        assert_eq!(&pic.rgba[(5 * 400 + 5) * 4..(5 * 400 + 5) * 4 + 3], &[255, 255, 255]);
    }

    #[test]
    fn a_damaged_file_is_refused_by_name_never_read_past_its_end() {
        let glb = pit_glb(true);
        assert!(matches!(read_glb(&glb[..glb.len() - 10]), Err(MeshError::Format(_))));
        assert!(matches!(read_glb(b"glTF"), Err(MeshError::Format(_))));
        assert!(matches!(read_glb(&[]), Err(MeshError::Format(_))));
        let mut wrong_index = glb.clone();
        let n = wrong_index.len();
        wrong_index[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_glb(&wrong_index).unwrap_err(), MeshError::Format("an index past the vertices"));
    }
}
