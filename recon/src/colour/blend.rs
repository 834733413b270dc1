//! Vertex colours blended from the colour views.
//!
//! Each view that sees a vertex contributes one bilinear sample (linear RGB) with weight
//! `cos²θ · (REFERENCE_DISTANCE / z)²`: `θ` between the vertex normal and the ray to the
//! camera (oblique views smear the surface over fewer pixels), `z` the depth in the view
//! (a nearer view resolves more). A view is skipped for a vertex outside its image (with
//! a margin), facing away or grazing (`cos θ < MIN_COS`), or hidden behind nearer
//! surface in the view's depth frame (`OCCLUSION_TOLERANCE_M`).
//!
//! Specular highlights of a moist bed move with the camera, so they are outliers among a
//! vertex's samples: the blend is the weighted mean of the samples whose luminance is
//! within `[1/SPECULAR_RATIO, SPECULAR_RATIO]` of the vertex's weighted median luminance.

use super::{luminance, ColourView, VertexColours};
use crate::geometry::{DepthImage, Vec3};
use crate::mesh::Mesh;

/// Views more oblique than this (cos θ) do not colour a vertex (about 78°).
const MIN_COS: f64 = 0.2;
/// Distance at which a sample has unit distance weight, metres.
const REFERENCE_DISTANCE_M: f64 = 0.25;
/// A vertex further behind the depth frame's surface than this is occluded, metres.
const OCCLUSION_TOLERANCE_M: f64 = 0.004;
/// ... plus this fraction of the depth (depth noise grows with distance).
const OCCLUSION_TOLERANCE_REL: f64 = 0.01;
/// Pixels of margin kept from the image border.
const BORDER_PX: f64 = 2.0;
/// Samples brighter or darker than this factor of the median are left out.
const SPECULAR_RATIO: f32 = 1.35;

struct Sample {
    rgb: [f32; 3],
    luma: f32,
    w: f32,
}

/// Blends every vertex's colour from the views, weighted by view angle (cosine between
/// the vertex normal and the ray to the camera) and distance (nearer is sharper),
/// skipping views where the vertex is outside the image, faces away, or is occluded per
/// the depth frame. Views whose image does not match its intrinsics are ignored.
pub fn colour_vertices(mesh: &Mesh, views: &[ColourView<'_>]) -> VertexColours {
    let n = mesh.positions.len();
    let mut per_vertex: Vec<Vec<Sample>> = (0..n).map(|_| Vec::new()).collect();
    for view in views {
        let k = &view.intrinsics;
        if !view.image.is_valid()
            || k.width as usize != view.image.width
            || k.height as usize != view.image.height
            || k.validate().is_err()
        {
            continue;
        }
        let cam = view.pose.position();
        let (w, h) = (f64::from(k.width) - 1.0, f64::from(k.height) - 1.0);
        for (i, (p, nrm)) in mesh.positions.iter().zip(&mesh.normals).enumerate() {
            let pw = Vec3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
            let pc = view.pose.inverse_transform(pw);
            if pc.z <= 0.01 {
                continue;
            }
            let (u, v) = (k.fx * pc.x / pc.z + k.cx, k.fy * pc.y / pc.z + k.cy);
            if u < BORDER_PX || v < BORDER_PX || u > w - BORDER_PX || v > h - BORDER_PX {
                continue;
            }
            let to_cam = (cam - pw).normalized();
            let nw = Vec3::new(f64::from(nrm[0]), f64::from(nrm[1]), f64::from(nrm[2]));
            let cos = nw.dot(to_cam);
            if cos < MIN_COS {
                continue;
            }
            if let Some(f) = view.depth {
                if occluded(&f.depth, &f.intrinsics, &f.pose, pw) {
                    continue;
                }
            }
            let Some(rgb) = view.image.sample_linear(u, v) else { continue };
            let wt = (cos * cos * (REFERENCE_DISTANCE_M / pc.z).powi(2)) as f32;
            per_vertex[i].push(Sample { rgb, luma: luminance(rgb), w: wt });
        }
    }
    let mut out = VertexColours { linear_rgb: vec![[0.0; 3]; n], weight: vec![0.0; n] };
    for (i, samples) in per_vertex.iter_mut().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let median = weighted_median_luma(samples);
        let (lo, hi) = (median / SPECULAR_RATIO, median * SPECULAR_RATIO + 1e-4);
        let (mut acc, mut wsum) = ([0.0f32; 3], 0.0f32);
        for s in samples.iter().filter(|s| s.luma >= lo && s.luma <= hi) {
            for (a, v) in acc.iter_mut().zip(s.rgb) {
                *a += s.w * v;
            }
            wsum += s.w;
        }
        if wsum > 0.0 {
            out.linear_rgb[i] = acc.map(|a| a / wsum);
            out.weight[i] = wsum;
        }
    }
    out
}

fn weighted_median_luma(samples: &mut [Sample]) -> f32 {
    samples.sort_by(|a, b| a.luma.total_cmp(&b.luma));
    let total: f32 = samples.iter().map(|s| s.w).sum();
    let mut acc = 0.0;
    for s in samples.iter() {
        acc += s.w;
        if acc >= 0.5 * total {
            return s.luma;
        }
    }
    samples.last().map_or(0.0, |s| s.luma)
}

/// Whether world point `p` lies behind the surface the depth frame saw along its ray.
fn occluded(depth: &DepthImage, k: &crate::geometry::Intrinsics, pose: &crate::geometry::Pose, p: Vec3) -> bool {
    let pc = pose.inverse_transform(p);
    if pc.z <= 0.0 || depth.width != k.width || depth.height != k.height {
        return false;
    }
    let (u, v) = (k.fx * pc.x / pc.z + k.cx, k.fy * pc.y / pc.z + k.cy);
    let (i, j) = (u.round(), v.round());
    if i < 0.0 || j < 0.0 || i >= f64::from(depth.width) || j >= f64::from(depth.height) {
        return false;
    }
    // The farthest valid depth among the pixel and its 4 neighbours: a vertex on a depth
    // edge is occluded only if all of them are clearly in front of it.
    let mut farthest = f64::NEG_INFINITY;
    let (ii, jj) = (i as i64, j as i64);
    for (di, dj) in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)] {
        let (x, y) = (ii + di, jj + dj);
        if x < 0 || y < 0 {
            continue;
        }
        if let Some(d) = depth.get(x as u32, y as u32) {
            if DepthImage::is_valid_depth(d) {
                farthest = farthest.max(f64::from(d));
            }
        }
    }
    if !farthest.is_finite() {
        return false;
    }
    pc.z > farthest + OCCLUSION_TOLERANCE_M + OCCLUSION_TOLERANCE_REL * pc.z
}

#[cfg(test)]
mod tests {
    use super::super::RgbImage;
    use super::*;
    use crate::geometry::{Intrinsics, Pose};

    /// A flat square of two triangles at z = 0.25 facing a camera at the origin.
    fn square() -> Mesh {
        let z = 0.25f32;
        Mesh {
            positions: vec![[-0.01, -0.01, z], [0.01, -0.01, z], [0.01, 0.01, z], [-0.01, 0.01, z]],
            normals: vec![[0.0, 0.0, -1.0]; 4],
            indices: vec![0, 1, 2, 0, 2, 3],
        }
    }

    fn uniform(k: &Intrinsics, rgb: [u8; 3]) -> RgbImage {
        let mut im = RgbImage::new(k.width as usize, k.height as usize);
        for px in im.data.chunks_exact_mut(3) {
            px.copy_from_slice(&rgb);
        }
        im
    }

    #[test]
    fn a_vertex_takes_the_colour_of_the_view_that_sees_it() {
        let k = Intrinsics::iphone_256x192().scaled(512, 384);
        let im = uniform(&k, [200, 100, 50]);
        let view = ColourView { image: &im, intrinsics: k, pose: Pose::IDENTITY, depth: None };
        let vc = colour_vertices(&square(), &[view]);
        assert!(vc.weight.iter().all(|w| *w > 0.0));
        let s = vc.to_srgb8(None);
        assert_eq!(&s[0][..3], &[200, 100, 50]);
    }

    #[test]
    fn a_view_behind_the_surface_or_facing_away_does_not_colour_it() {
        let k = Intrinsics::iphone_256x192().scaled(512, 384);
        let im = uniform(&k, [200, 100, 50]);
        // Camera at z = 0.5 looking back towards −z: sees the square's back.
        let pose = Pose::look_at(Vec3::new(0.0, 0.0, 0.5), Vec3::new(0.0, 0.0, 0.25), Vec3::new(0.0, 1.0, 0.0));
        let view = ColourView { image: &im, intrinsics: k, pose, depth: None };
        let vc = colour_vertices(&square(), &[view]);
        assert!(vc.weight.iter().all(|w| *w == 0.0));
        assert!(vc.to_srgb8(None).iter().all(|c| *c == super::super::UNSEEN_SRGB));
    }

    #[test]
    fn an_occluded_vertex_is_not_coloured_from_that_view() {
        let k = Intrinsics::iphone_256x192();
        let im = uniform(&k, [10, 200, 10]);
        // The depth frame sees a surface at 0.15 m in front of the square.
        let depth =
            DepthImage { width: k.width, height: k.height, depth: vec![0.15; k.pixel_count()], confidence: None };
        let frame = crate::geometry::Frame { depth, intrinsics: k, pose: Pose::IDENTITY };
        let view = ColourView { image: &im, intrinsics: k, pose: Pose::IDENTITY, depth: Some(&frame) };
        let vc = colour_vertices(&square(), &[view]);
        assert!(vc.weight.iter().all(|w| *w == 0.0));
    }

    #[test]
    fn a_highlight_in_one_view_is_left_out_of_the_blend() {
        let k = Intrinsics::iphone_256x192().scaled(512, 384);
        let (a, b, c) = (uniform(&k, [120, 60, 60]), uniform(&k, [125, 62, 61]), uniform(&k, [255, 255, 255]));
        let views: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|im| ColourView { image: im, intrinsics: k, pose: Pose::IDENTITY, depth: None })
            .collect();
        let vc = colour_vertices(&square(), &views);
        let s = vc.to_srgb8(None)[0];
        assert!(s[0] <= 126 && s[1] <= 63, "{s:?}");
    }
}
