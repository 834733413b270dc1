//! The blur this scan's fusion gives a wall, measured by synthesis.
//!
//! A vertical step (the wound's first rim, at its fitted depth, cut into the fitted skin) is
//! rendered from the scan's own accepted views (intrinsics and poses, so the same pixel
//! footprints, distances and tilts, and the same hidden wall faces), fused with the scan's
//! own fusion settings, and its rim fitted with the rim held where it truly is: the blur that
//! fit needs is the blur of a wall in this scan. The rim fit on the real surface then uses it
//! instead of trading blur against wall width (a ramp of width `w` blurred by `σ` looks like a
//! step blurred by `√(σ² + w²/12)`; docs/measurement.md, *Rim*).

use super::rim::fit_rim_with;
use super::skin::SkinSurface;
use super::{along_normal, row_crossings, HeightField};
use crate::geometry::{DepthImage, Frame, Intrinsics, Pose};
use crate::tsdf::{Aabb, TsdfVolume};

/// One accepted view of the scan: what the server knows of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub intrinsics: Intrinsics,
    pub pose: Pose,
}

/// Skin around the rim rendered with the step, metres.
const MARGIN_M: f64 = 0.008;
/// Cells of the step's inside mask, metres (at most [`MAX_MASK_CELLS`] of them).
const MASK_CELL_M: f64 = 5e-5;
/// Most cells of the inside mask (4 MB).
const MAX_MASK_CELLS: usize = 4_000_000;
/// Ray-march step before bisection, metres.
const MARCH_M: f64 = 2e-4;
/// Most views rendered (evenly chosen).
const MAX_VIEWS: usize = 30;
/// Cells of the skin grid the rays are marched against, metres.
const SKIN_CELL_M: f64 = 2.5e-4;

/// The step's scene: height `skin(x, y) − depth·[inside rim]` over the rim's box.
struct Scene {
    depth: f64,
    x0: f64,
    y0: f64,
    /// Inside mask: cells of `cell`, `nx × ny`.
    cell: f64,
    nx: usize,
    ny: usize,
    inside: Vec<bool>,
    /// The skin sampled every [`SKIN_CELL_M`], `sx × sy` (bilinear between).
    skin: Vec<f64>,
    sx: usize,
    sy: usize,
    /// Steepest skin slope on that grid.
    slope: f64,
    z_top: f64,
    z_bottom: f64,
}

impl Scene {
    /// Skin height and whether `(x, y)` is inside the rim; `None` outside the box.
    fn sample(&self, x: f64, y: f64) -> Option<(f64, bool)> {
        let (fi, fj) = ((x - self.x0) / self.cell, (y - self.y0) / self.cell);
        if fi.is_nan() || fj.is_nan() || fi < 0.0 || fj < 0.0 {
            return None;
        }
        let (i, j) = (fi as usize, fj as usize);
        if i >= self.nx || j >= self.ny {
            return None;
        }
        let (gi, gj) = ((x - self.x0) / SKIN_CELL_M, (y - self.y0) / SKIN_CELL_M);
        let (i0, j0) = ((gi as usize).min(self.sx - 2), (gj as usize).min(self.sy - 2));
        let (tx, ty) = (gi - i0 as f64, gj - j0 as f64);
        let g = |i: usize, j: usize| self.skin[j * self.sx + i];
        let s = (g(i0, j0) * (1.0 - tx) + g(i0 + 1, j0) * tx) * (1.0 - ty)
            + (g(i0, j0 + 1) * (1.0 - tx) + g(i0 + 1, j0 + 1) * tx) * ty;
        Some((s, self.inside[j * self.nx + i]))
    }

    fn above(&self, p: [f64; 3]) -> Option<bool> {
        self.sample(p[0], p[1]).map(|(s, inside)| p[2] > if inside { s - self.depth } else { s })
    }

    /// Ray parameter of the first hit of local ray `o + t·d`, if it hits inside the box.
    /// Above the skin the ray advances by what the skin's slope allows (the surface never
    /// rises above the skin); below it, inside the wound, by [`MARCH_M`]; then bisection.
    fn hit(&self, o: [f64; 3], d: [f64; 3]) -> Option<f64> {
        if d[2] >= -1e-6 {
            return None;
        }
        let at = |t: f64| [o[0] + d[0] * t, o[1] + d[1] * t, o[2] + d[2] * t];
        let t1 = (self.z_bottom - o[2]) / d[2];
        let step = MARCH_M / (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let closing = -d[2] + self.slope * d[0].hypot(d[1]);
        let mut t = ((self.z_top - o[2]) / d[2]).max(0.0);
        let mut prev = t;
        while t <= t1 {
            let p = at(t);
            let (s, inside) = self.sample(p[0], p[1])?;
            if p[2] <= if inside { s - self.depth } else { s } {
                let (mut a, mut b) = (prev, t);
                for _ in 0..14 {
                    let m = 0.5 * (a + b);
                    if self.above(at(m))? {
                        a = m;
                    } else {
                        b = m;
                    }
                }
                return Some(0.5 * (a + b));
            }
            prev = t;
            let clearance = p[2] - s;
            t += if clearance > 0.0 { (0.9 * clearance / closing).max(step) } else { step };
        }
        None
    }
}

/// The blur (metres) the rim fit needs on a vertical wall at `rim` (local polygon of
/// `field`, counter-clockwise), `depth_m` deep in the skin `skin`, seen from `views` and
/// fused like `vol`; `None` when too little of it could be rendered or fitted.
pub(super) fn step_blur(
    field: &HeightField,
    skin: &SkinSurface,
    rim: &[[f64; 2]],
    depth_m: f64,
    views: &[View],
    vol: &TsdfVolume,
) -> Option<f64> {
    if views.is_empty() || rim.len() < 3 || depth_m.is_nan() || depth_m <= 0.0 {
        return None;
    }
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in rim {
        (xmin, xmax, ymin, ymax) = (xmin.min(p[0]), xmax.max(p[0]), ymin.min(p[1]), ymax.max(p[1]));
    }
    let (x0, y0) = (xmin - MARGIN_M, ymin - MARGIN_M);
    // Mask cells of 0.05 mm, coarser for a wound so large that they would exceed
    // MAX_MASK_CELLS (a wall's position is then known to a cell, still under a voxel).
    let (bw, bh) = (xmax - xmin + 2.0 * MARGIN_M, ymax - ymin + 2.0 * MARGIN_M);
    let cell = MASK_CELL_M.max((bw * bh / MAX_MASK_CELLS as f64).sqrt());
    let nx = (bw / cell).ceil() as usize + 1;
    let ny = (bh / cell).ceil() as usize + 1;
    let mut inside = vec![false; nx * ny];
    // Scanline fill: each row's crossings with the rim.
    let mut xs = Vec::new();
    for j in 0..ny {
        row_crossings(rim, y0 + (j as f64 + 0.5) * cell, &mut xs);
        for pair in xs.chunks_exact(2) {
            let (i0, i1) = (((pair[0] - x0) / cell - 0.5).ceil(), ((pair[1] - x0) / cell - 0.5).floor());
            let (i0, i1) = (i0.max(0.0) as usize, (i1.max(-1.0) + 1.0) as usize);
            for c in inside[j * nx..(j + 1) * nx].iter_mut().take(i1.min(nx)).skip(i0) {
                *c = true;
            }
        }
    }
    let (sx, sy) = ((bw / SKIN_CELL_M).ceil() as usize + 2, (bh / SKIN_CELL_M).ceil() as usize + 2);
    let mut skin_grid = Vec::with_capacity(sx * sy);
    for j in 0..sy {
        for i in 0..sx {
            skin_grid.push(skin.eval(x0 + i as f64 * SKIN_CELL_M, y0 + j as f64 * SKIN_CELL_M));
        }
    }
    let (mut zmin, mut zmax, mut slope) = (f64::MAX, f64::MIN, 0.0f64);
    for j in 0..sy {
        for i in 0..sx {
            let v = skin_grid[j * sx + i];
            (zmin, zmax) = (zmin.min(v), zmax.max(v));
            if i + 1 < sx {
                slope = slope.max((skin_grid[j * sx + i + 1] - v).abs() / SKIN_CELL_M);
            }
            if j + 1 < sy {
                slope = slope.max((skin_grid[(j + 1) * sx + i] - v).abs() / SKIN_CELL_M);
            }
        }
    }
    let scene = Scene {
        depth: depth_m,
        x0,
        y0,
        cell,
        nx,
        ny,
        inside,
        skin: skin_grid,
        sx,
        sy,
        slope: slope * std::f64::consts::SQRT_2,
        z_top: zmax + 0.002,
        z_bottom: zmin - depth_m - 0.002,
    };

    let centre = [0.5 * (xmin + xmax), 0.5 * (ymin + ymax)];
    let centre_world = field.world(centre[0], centre[1], skin.eval(centre[0], centre[1]));
    let half = 0.5 * (xmax - xmin).max(ymax - ymin) + MARGIN_M + 0.004 + depth_m;
    let mut cfg = *vol.config();
    cfg.roi = Some(Aabb::around(centre_world, half));
    let mut synth = TsdfVolume::new(cfg).ok()?;
    let (x1, y1) = (x0 + nx as f64 * cell, y0 + ny as f64 * cell);
    let corners = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]];
    let stride = views.len().div_ceil(MAX_VIEWS);
    let mut rendered = 0usize;
    for view in views.iter().step_by(stride) {
        let (intr, pose) = (&view.intrinsics, &view.pose);
        let (w, h) = (intr.width as usize, intr.height as usize);
        // The pixels the box can project to (its corners at the skin's extremes); a view
        // with a corner behind it is passed over.
        let projected: Option<Vec<(f64, f64)>> = corners
            .iter()
            .flat_map(|c| [scene.z_top, scene.z_bottom].map(|z| field.world(c[0], c[1], z)))
            .map(|p| intr.project(pose.inverse_transform(p)))
            .collect();
        let Some(projected) = projected else { continue };
        let (mut umin, mut umax, mut vmin, mut vmax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (u, v) in projected {
            (umin, umax, vmin, vmax) = (umin.min(u), umax.max(u), vmin.min(v), vmax.max(v));
        }
        let (i0, i1) = ((umin.floor().max(0.0)) as usize, (umax.ceil().max(0.0) as usize + 1).min(w));
        let (j0, j1) = ((vmin.floor().max(0.0)) as usize, (vmax.ceil().max(0.0) as usize + 1).min(h));
        let mut depth = vec![0.0f32; w * h];
        let o = field.local(pose.position());
        let mut any = false;
        for j in j0..j1 {
            for i in i0..i1 {
                let r = pose.rotate(intr.ray(i as f64, j as f64));
                let d = [r.dot(field.e1), r.dot(field.e2), r.dot(field.n)];
                if let Some(t) = scene.hit(o, d) {
                    depth[j * w + i] = t as f32;
                    any = true;
                }
            }
        }
        if !any {
            continue;
        }
        // No confidence map: fusion weighs every pixel as confidence 2.
        let image = DepthImage::new(intr.width, intr.height, depth, None).ok()?;
        synth.integrate(&Frame { depth: image, intrinsics: *intr, pose: *pose }).ok()?;
        rendered += 1;
    }
    if rendered < 3 {
        return None;
    }
    let sf = HeightField::build(&synth, field.origin, field.n, half, field.cell);
    let depth_at = |x: f64, y: f64| -> f64 {
        let hs = sf.bilinear(&sf.h, x, y);
        if !hs.is_finite() {
            return 0.0;
        }
        along_normal(skin, skin.eval(x, y) - hs, x, y)
    };
    // Enough of the step must have been seen for its fit to mean anything.
    let seen = rim.iter().filter(|p| sf.bilinear(&sf.h, p[0], p[1]).is_finite()).count();
    if seen * 2 < rim.len() {
        return None;
    }
    let fit = fit_rim_with(rim, depth_at, true, None);
    let blur = fit.sigma_blur_m;
    blur.is_finite().then_some(blur)
}
