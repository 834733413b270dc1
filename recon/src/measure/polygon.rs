//! A clinician's outline: its rim blur, skin guard and position uncertainty.
//!
//! The drawn outline *is* the wound's edge, so its `±` covers the measurement given the
//! outline: where each drawn point lands on the fused surface (a pixel's footprint and the
//! surface noise along the ray) and the keyframe's pose. The pose moves the whole outline
//! rigidly, which changes neither area, volume, length nor width to first order; only its depth error
//! scales the outline.

use super::rim::{fit_rim_with, RimFit};
use super::uncertainty::Boundary;

/// Keyframe pose error assumed for ARKit/ARCore-class tracking over a wound scan:
/// translation (one standard deviation), metres.
pub(super) const POSE_TRANSLATION_SD_M: f64 = 0.25e-3;
/// ... and rotation, radians (0.03°).
pub(super) const POSE_ROTATION_SD_RAD: f64 = 0.03 * std::f64::consts::PI / 180.0;

/// The blur of the fused rim along a drawn outline: a rim fit whose rim stays on the
/// outline (only the blur and the walls are fitted).
pub(super) fn blur_at(outline: &[[f64; 2]], depth: impl Fn(f64, f64) -> f64) -> RimFit {
    fit_rim_with(outline, depth, true, None)
}

/// Skin guard outside the outline: the fixed margin, or three blur widths where the
/// blurred wall reaches further (the same rule as the automatic path).
pub(super) fn skin_margin(margin_m: f64, sigma_blur_m: f64) -> f64 {
    margin_m.max(3.0 * sigma_blur_m)
}

/// Position uncertainty of a drawn outline ray cast from `distance_m` with a pixel
/// footprint of `pixel_m` on the surface, `sigma_h` the fused surface's noise.
pub(super) fn boundary(rim: &RimFit, distance_m: f64, pixel_m: f64, sigma_h: f64) -> Boundary {
    // One drawn point: a pixel's footprint (uniform, ±half a pixel) and the surface noise
    // along its ray; points within about a millimetre share the same cells.
    let point_sd = ((pixel_m * pixel_m) / 12.0 + sigma_h * sigma_h).sqrt();
    let sector_sd_m = rim.sector_len_m.iter().map(|l| point_sd / (l / 1e-3).max(1.0).sqrt()).collect();
    Boundary {
        sector_len_m: rim.sector_len_m.clone(),
        sector_sd_m,
        common_sd_m: 0.0,
        scale_sd: POSE_TRANSLATION_SD_M / distance_m.max(1e-3),
        rigid_sd_m: (POSE_TRANSLATION_SD_M.powi(2) + (distance_m * POSE_ROTATION_SD_RAD).powi(2)).sqrt(),
        rim_depth_m: rim.rim_depth_m(),
        hidden_wall_m2: rim.hidden_wall_m2,
    }
}
