//! A phone's depth frame as a picture a clinician can draw on: each pixel shaded by how
//! squarely the surface there faces the camera (the normal from the back-projected
//! neighbours, lit from the camera), so skin, the wound's rim and its bed read as relief;
//! pixels without depth are black. Greyscale PNG, the frame's own resolution, row 0 at the
//! top as the phone sent it, so a pixel of the picture is a pixel of the frame (the outline
//! API's keyframe coordinates).

use super::ReportError;

/// Pinhole intrinsics of the depth image, pixels.
#[derive(Debug, Clone, Copy)]
pub struct Pinhole {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

/// The shaded greyscale pixels (0 where there is no depth).
pub fn shade(depth: &[f32], width: u32, height: u32, k: Pinhole) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let valid = |z: f32| z.is_finite() && z > 0.0;
    let at = |u: usize, v: usize| -> Option<[f64; 3]> {
        let z = *depth.get(v * w + u)?;
        valid(z).then(|| {
            let z = f64::from(z);
            [(u as f64 - k.cx) * z / k.fx, (v as f64 - k.cy) * z / k.fy, z]
        })
    };
    let mut out = vec![0u8; w * h];
    for v in 0..h {
        for u in 0..w {
            let Some(p) = at(u, v) else { continue };
            // Central differences where both neighbours exist, else one-sided.
            let diff = |before: Option<[f64; 3]>, after: Option<[f64; 3]>| match (before, after) {
                (Some(a), Some(b)) => Some([b[0] - a[0], b[1] - a[1], b[2] - a[2]]),
                (None, Some(b)) => Some([b[0] - p[0], b[1] - p[1], b[2] - p[2]]),
                (Some(a), None) => Some([p[0] - a[0], p[1] - a[1], p[2] - a[2]]),
                (None, None) => None,
            };
            let du = diff(u.checked_sub(1).and_then(|a| at(a, v)), at(u + 1, v).filter(|_| u + 1 < w));
            let dv = diff(v.checked_sub(1).and_then(|a| at(u, a)), at(u, v + 1).filter(|_| v + 1 < h));
            let (Some(du), Some(dv)) = (du, dv) else {
                out[v * w + u] = 128;
                continue;
            };
            let n = [du[1] * dv[2] - du[2] * dv[1], du[2] * dv[0] - du[0] * dv[2], du[0] * dv[1] - du[1] * dv[0]];
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            // Lit from the camera: the view ray towards the point is p / |p|.
            let pl = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            let facing = if len > 0.0 && pl > 0.0 {
                ((n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) / (len * pl)).abs()
            } else {
                0.5
            };
            out[v * w + u] = (40.0 + 215.0 * facing).round().clamp(1.0, 255.0) as u8;
        }
    }
    out
}

/// The shaded depth frame as a greyscale PNG.
pub fn depth_png(depth: &[f32], width: u32, height: u32, k: Pinhole) -> Result<Vec<u8>, ReportError> {
    if depth.len() != width as usize * height as usize || width == 0 || height == 0 {
        return Err(ReportError::Render("depth size"));
    }
    let grey = shade(depth, width, height, k);
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|_| ReportError::Render("png header"))?;
    w.write_image_data(&grey).map_err(|_| ReportError::Render("png data"))?;
    w.finish().map_err(|_| ReportError::Render("png end"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pit_in_a_wall_facing_the_camera_shows_as_relief_and_missing_depth_as_black() {
        let (w, h) = (64u32, 48u32);
        let k = Pinhole { fx: 60.0, fy: 60.0, cx: 31.5, cy: 23.5 };
        // A wall 0.3 m away with a 30 mm-deep bowl 80 mm across (steep sides) in the middle,
        // and a strip of no depth.
        let depth: Vec<f32> = (0..h)
            .flat_map(|v| (0..w).map(move |u| (u, v)))
            .map(|(u, v)| {
                if u < 4 {
                    return 0.0;
                }
                let (du, dv) = (f64::from(u) - 31.5, f64::from(v) - 23.5);
                let r2 = du * du + dv * dv;
                (0.3 + if r2 < 64.0 { 0.03 * (1.0 - r2 / 64.0) } else { 0.0 }) as f32
            })
            .collect();
        let g = shade(&depth, w, h, k);
        let px = |u: u32, v: u32| g[(v * w + u) as usize];
        assert_eq!(px(1, 10), 0, "no depth: black");
        // The flat wall faces the camera: bright.
        let wall = px(31, 23 + 12);
        assert!(wall > 230, "wall {wall}");
        // The bowl's steep side turns away from the camera: clearly darker than the wall beside it.
        let side = px(31 + 6, 23);
        assert!(side + 20 < wall, "side {side} wall {wall}");
        let png = depth_png(&depth, w, h, k).unwrap();
        assert!(png.starts_with(&[0x89, b'P', b'N', b'G']));
        assert_eq!(depth_png(&depth[..10], w, h, k).unwrap_err(), ReportError::Render("depth size"));
    }
}
