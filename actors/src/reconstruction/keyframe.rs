//! The keyframe a clinician is asked to draw the outline on when a scan's automatic
//! measurement failed (`needs_outline`, docs/api.md).
//!
//! Among the frames the quality gate accepted, the one that looks most squarely at the skin
//! around the target: it maximises `cos(view, surface normal)` (the view direction from the
//! target to the camera against the fused surface's normal there), less a penalty for being
//! far from the usual 0.25 m scanning distance, subject to the wound disc (the target and a
//! ring of [`DISC_RADIUS_M`] around it on the skin's tangent plane) lying inside the image
//! with a margin of [`MARGIN_FRACTION`] of its smaller side. Scores within [`TIE`] of the best
//! count as equal and the tie goes to the frame nearest the middle of the scan (the user
//! aims there). When no frame holds the whole disc, the frames that hold the target are
//! scored alike; when none holds the target, the middle frame is suggested.

use coherency_recon::fusion::COVERAGE_RADIUS_M;
use coherency_recon::{Intrinsics, Pose, TsdfVolume, Vec3};

/// Radius of the wound disc that must fit in the image, metres (the coverage disc: the
/// automatic measurement found no outline, so its size is not known).
pub const DISC_RADIUS_M: f64 = COVERAGE_RADIUS_M;
/// Margin left around the disc, as a fraction of the image's smaller side.
pub const MARGIN_FRACTION: f64 = 0.05;
/// The scanning distance the guidance asks for, metres.
pub const PREFERRED_DISTANCE_M: f64 = 0.25;
/// Score lost per metre away from [`PREFERRED_DISTANCE_M`] (0.1 m costs as much as a
/// ~25° tilt at normal incidence).
const DISTANCE_WEIGHT: f64 = 1.0;
/// Scores closer than this to the best are a tie.
const TIE: f64 = 1e-3;
/// Points on the disc's rim that must project inside the image.
const RIM_POINTS: usize = 16;

/// A frame the gate accepted, as the choice needs it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The frame's seq.
    pub seq: u64,
    pub intrinsics: Intrinsics,
    /// World-from-camera (OpenCV axes).
    pub pose: Pose,
}

/// The outward normal of the fused surface at `target` (the gradient of the signed
/// distance, positive in front of the surface), or `None` where the volume has no surface
/// there to differentiate.
pub fn surface_normal(vol: &TsdfVolume, target: Vec3) -> Option<Vec3> {
    let h = vol.voxel_size();
    let axis = |d: Vec3| {
        let (a, b) = (vol.sample(target + d)?, vol.sample(target - d)?);
        Some((a.sdf_m - b.sdf_m) / (2.0 * h))
    };
    let g = Vec3::new(axis(Vec3::new(h, 0.0, 0.0))?, axis(Vec3::new(0.0, h, 0.0))?, axis(Vec3::new(0.0, 0.0, h))?);
    let n = g.norm();
    (n.is_finite() && n > 1e-6).then(|| g * (1.0 / n))
}

/// The mean direction from `target` to the cameras: the normal to use where the volume
/// gives none (the phone was held facing the skin).
pub fn mean_view(candidates: &[Candidate], target: Vec3) -> Option<Vec3> {
    let sum = candidates.iter().fold(Vec3::ZERO, |acc, c| acc + (c.pose.position() - target).normalized());
    let n = sum.norm();
    (n.is_finite() && n > 1e-9).then(|| sum * (1.0 / n))
}

/// Index into `candidates` (accepted frames in seq order) of the suggested keyframe (see
/// the module docs); `None` only when there is no candidate.
pub fn suggest(candidates: &[Candidate], target: Vec3, normal: Vec3) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    // The normal may come out pointing into the skin; the cameras are on the outside.
    let normal = match mean_view(candidates, target) {
        Some(v) if v.dot(normal) < 0.0 => -normal,
        _ => normal,
    };
    let rim = disc_rim(target, normal, DISC_RADIUS_M);
    let middle = (candidates.len() - 1) as f64 / 2.0;
    let best = |fits: &dyn Fn(&Candidate) -> bool| -> Option<usize> {
        let scored: Vec<(usize, f64)> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| fits(c))
            .map(|(i, c)| (i, score(c, target, normal)))
            .collect();
        let top = scored.iter().map(|&(_, s)| s).fold(f64::NEG_INFINITY, f64::max);
        scored
            .into_iter()
            .filter(|&(_, s)| s >= top - TIE)
            .min_by(|a, b| (a.0 as f64 - middle).abs().total_cmp(&(b.0 as f64 - middle).abs()))
            .map(|(i, _)| i)
    };
    best(&|c| std::iter::once(target).chain(rim.iter().copied()).all(|p| inside(c, p)))
        .or_else(|| best(&|c| inside(c, target)))
        .or(Some(candidates.len() / 2))
}

/// `cos(view, normal)` less the distance penalty.
fn score(c: &Candidate, target: Vec3, normal: Vec3) -> f64 {
    let to_camera = c.pose.position() - target;
    let distance = to_camera.norm();
    let cos = if distance > 1e-9 { to_camera.dot(normal) / distance } else { -1.0 };
    cos - DISTANCE_WEIGHT * (distance - PREFERRED_DISTANCE_M).abs()
}

/// Whether world point `p` projects inside `c`'s image with the margin.
fn inside(c: &Candidate, p: Vec3) -> bool {
    let k = &c.intrinsics;
    let margin = MARGIN_FRACTION * f64::from(k.width.min(k.height));
    k.project(c.pose.inverse_transform(p)).is_some_and(|(u, v)| {
        u >= margin && v >= margin && u <= f64::from(k.width) - 1.0 - margin && v <= f64::from(k.height) - 1.0 - margin
    })
}

/// Points on the circle of `radius` around `centre` in the plane normal to `normal`.
fn disc_rim(centre: Vec3, normal: Vec3, radius: f64) -> Vec<Vec3> {
    let a = normal.any_perpendicular().normalized();
    let b = normal.cross(a).normalized();
    (0..RIM_POINTS)
        .map(|i| {
            let t = std::f64::consts::TAU * i as f64 / RIM_POINTS as f64;
            centre + a * (radius * t.cos()) + b * (radius * t.sin())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera_at(eye: Vec3, target: Vec3) -> Candidate {
        Candidate {
            seq: 0,
            intrinsics: Intrinsics::iphone_256x192(),
            pose: Pose::look_at(eye, target, Vec3::new(0.0, 1.0, 0.0)),
        }
    }

    #[test]
    fn the_frame_facing_the_skin_squarely_at_the_usual_distance_wins() {
        let target = Vec3::ZERO;
        let normal = Vec3::new(0.0, 0.0, 1.0);
        let oblique = camera_at(Vec3::new(0.15, 0.0, 0.2), target);
        let square = camera_at(Vec3::new(0.0, 0.0, 0.25), target);
        let far = camera_at(Vec3::new(0.0, 0.0, 0.45), target);
        assert_eq!(suggest(&[oblique, square, far], target, normal), Some(1));
        // A normal pointing into the skin is turned round.
        assert_eq!(suggest(&[oblique, square, far], target, -normal), Some(1));
    }

    #[test]
    fn a_frame_that_cuts_the_wound_off_is_passed_over() {
        let target = Vec3::ZERO;
        let normal = Vec3::new(0.0, 0.0, 1.0);
        // Square on and scoring 0.81, but so close (60 mm) that the 25 mm disc overflows the
        // image; the frame at 45° (0.71) shows it whole.
        let too_close = camera_at(Vec3::new(0.0, 0.0, 0.06), target);
        let tilted = camera_at(Vec3::new(0.177, 0.0, 0.177), target);
        assert_eq!(suggest(&[too_close, tilted], target, normal), Some(1));
        // Without the tilted one, the close one still holds the target: it is suggested.
        assert_eq!(suggest(&[too_close], target, normal), Some(0));
    }

    #[test]
    fn equal_frames_go_to_the_middle_and_none_at_all_to_none() {
        let target = Vec3::ZERO;
        let normal = Vec3::new(0.0, 0.0, 1.0);
        let same = camera_at(Vec3::new(0.0, 0.0, 0.25), target);
        assert_eq!(suggest(&[same; 5], target, normal), Some(2));
        assert_eq!(suggest(&[], target, normal), None);
        // Nothing sees the target: the middle frame still gives the clinician a view.
        let away = camera_at(Vec3::new(0.0, 0.0, 0.25), Vec3::new(1.0, 0.0, 0.25));
        assert_eq!(suggest(&[away; 3], target, normal), Some(1));
    }
}
