//! Colour on the reconstruction: vertex colours blended from the scan's colour frames,
//! per-scan colour calibration, and tissue composition of the wound bed on the mesh.
//!
//! The server decodes each colour frame to an [`RgbImage`] and hands it in with its own
//! intrinsics and pose ([`ColourView`]). From there everything is pure and synchronous:
//!
//! 1. [`colour_vertices`] blends a linear-RGB colour per mesh vertex from the views
//!    (`blend.rs`: view angle, distance, visibility against the depth frame, specular
//!    rejection);
//! 2. [`tissue_composition`] selects the wound surface inside the outline (`region.rs`),
//!    calibrates white balance and exposure from the periwound skin (`calibrate.rs`),
//!    classifies each vertex with a [`TissueClassifier`]
//!    (`classify.rs`, default a small learned model shipped in `weights.json`), applies a
//!    clinician's [`TissueCorrection`]s and reports per-class 3D areas with an uncertainty
//!    (`tissue.rs`);
//! 3. [`card_calibration`] finds a ColorChecker Classic in the views (`checker.rs`); when there
//!    is one, its gains calibrate the displayed vertex colours and give the skin's own tone
//!    ([`skin_tone`]), while the classifier keeps the periwound calibration.
//!
//! `docs/measurement.md` ("Tissue composition") documents the method, its figures and
//! its limits.

mod blend;
mod calibrate;
mod checker;
mod classify;
mod corrections;
mod region;
mod tissue;

pub use blend::colour_vertices;
pub use calibrate::{skin_tone, Calibration, CalibrationSource, REFERENCE_SKIN_LINEAR};
pub use checker::{
    card_calibration, checker_reference_linear, delta_e2000, detect_checker, CardCalibration, CheckerDetection,
    CHECKER_LAB_D50,
};
pub use classify::{default_classifier, features, LearnedClassifier, FEATURES};
pub use corrections::{correction_rows, sample_of_json, CorrectionRows};
pub use tissue::{tissue_analysis, tissue_composition, wound_samples, TissueAnalysis};

use crate::geometry::{Frame, Intrinsics, Pose, Vec3};

/// An sRGB image, 8 bits per channel, row-major, 3 bytes per pixel, top row first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// `width · height · 3` bytes, R G B per pixel.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        RgbImage { width, height, data: vec![0; width * height * 3] }
    }

    /// Whether `data` has exactly `width · height · 3` bytes and the image is not empty.
    pub fn is_valid(&self) -> bool {
        self.width > 0 && self.height > 0 && self.data.len() == self.width * self.height * 3
    }

    /// The pixel at column `i`, row `j` (must be inside).
    pub fn pixel(&self, i: usize, j: usize) -> [u8; 3] {
        let k = (j * self.width + i) * 3;
        [self.data[k], self.data[k + 1], self.data[k + 2]]
    }

    /// Bilinear sample in linear RGB at image coordinates `(u, v)` (pixel centres at
    /// integers); `None` outside the image.
    pub fn sample_linear(&self, u: f64, v: f64) -> Option<[f32; 3]> {
        if !(u >= 0.0 && v >= 0.0 && u <= (self.width - 1) as f64 && v <= (self.height - 1) as f64) {
            return None;
        }
        let (i0, j0) = (u.floor() as usize, v.floor() as usize);
        let (i1, j1) = ((i0 + 1).min(self.width - 1), (j0 + 1).min(self.height - 1));
        let (fu, fv) = ((u - i0 as f64) as f32, (v - j0 as f64) as f32);
        let lut = srgb_lut();
        let mut out = [0.0f32; 3];
        for (i, j, w) in
            [(i0, j0, (1.0 - fu) * (1.0 - fv)), (i1, j0, fu * (1.0 - fv)), (i0, j1, (1.0 - fu) * fv), (i1, j1, fu * fv)]
        {
            let k = (j * self.width + i) * 3;
            for c in 0..3 {
                out[c] += w * lut[usize::from(self.data[k + c])];
            }
        }
        Some(out)
    }
}

/// One colour frame as the server has it.
#[derive(Debug, Clone, Copy)]
pub struct ColourView<'a> {
    /// The decoded image.
    pub image: &'a RgbImage,
    /// Pinhole intrinsics of this colour image (its own resolution), OpenCV convention.
    pub intrinsics: Intrinsics,
    /// World-from-colour-camera pose (computer-vision camera frame: x right, y down, z
    /// forward).
    pub pose: Pose,
    /// The depth frame taken with it, for visibility (a vertex hidden behind nearer
    /// surface in this view is not coloured from it); `None` = no occlusion test.
    pub depth: Option<&'a Frame>,
}

/// Per mesh vertex (same order as `Mesh::positions`): linear-RGB colour (0..=1, not yet
/// calibrated) and the blending weight (0 = no view saw it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VertexColours {
    /// Linear RGB, 0..=1 per channel.
    pub linear_rgb: Vec<[f32; 3]>,
    /// Total blending weight; 0 where no view saw the vertex.
    pub weight: Vec<f32>,
}

/// sRGB of a vertex no view saw.
pub const UNSEEN_SRGB: [u8; 4] = [128, 128, 128, 255];

impl VertexColours {
    /// sRGB bytes with alpha 255 for a GLB `COLOR_0` attribute (unseen vertices a neutral
    /// grey), after applying `calibration` if given.
    pub fn to_srgb8(&self, calibration: Option<&Calibration>) -> Vec<[u8; 4]> {
        let gains = calibration.map_or([1.0f32; 3], |c| c.gains.map(|g| g as f32));
        self.linear_rgb
            .iter()
            .zip(&self.weight)
            .map(|(c, w)| {
                if *w <= 0.0 {
                    return UNSEEN_SRGB;
                }
                let s = [0, 1, 2].map(|k| linear_to_srgb8(c[k] * gains[k]));
                [s[0], s[1], s[2], 255]
            })
            .collect()
    }

    /// Share of vertices some view saw.
    pub fn seen_fraction(&self) -> f64 {
        if self.weight.is_empty() {
            return 0.0;
        }
        self.weight.iter().filter(|w| **w > 0.0).count() as f64 / self.weight.len() as f64
    }
}

/// The classes of wound-bed tissue reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TissueClass {
    /// Beefy red, granular, moist: healthy healing tissue.
    Granulation,
    /// Yellow, cream or grey fibrinous devitalised tissue.
    Slough,
    /// Black or dark brown dry necrotic tissue.
    Eschar,
    /// Pink new epithelium, usually at the margin.
    Epithelial,
    /// Anything else inside the outline (exposed tendon or bone, maceration, dressing).
    Other,
}

impl TissueClass {
    /// Every class, in the order of every per-class array of this module.
    pub const ALL: [TissueClass; 5] = [
        TissueClass::Granulation,
        TissueClass::Slough,
        TissueClass::Eschar,
        TissueClass::Epithelial,
        TissueClass::Other,
    ];

    /// Stable lowercase name (`granulation`, `slough`, `eschar`, `epithelial`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            TissueClass::Granulation => "granulation",
            TissueClass::Slough => "slough",
            TissueClass::Eschar => "eschar",
            TissueClass::Epithelial => "epithelial",
            TissueClass::Other => "other",
        }
    }

    /// Parses [`TissueClass::as_str`].
    pub fn parse(s: &str) -> Option<TissueClass> {
        TissueClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Position in [`TissueClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A display colour (sRGB) for a tissue map: red, yellow, black-brown, pink, blue-grey.
    pub fn display_srgb(self) -> [u8; 3] {
        match self {
            TissueClass::Granulation => [200, 30, 40],
            TissueClass::Slough => [235, 210, 60],
            TissueClass::Eschar => [45, 30, 25],
            TissueClass::Epithelial => [250, 170, 190],
            TissueClass::Other => [120, 140, 170],
        }
    }
}

/// One class's share of the wound surface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TissueShare {
    /// The class.
    pub class: TissueClass,
    /// Its 3D surface area, mm².
    pub area_mm2: f64,
    /// Its share of the wound surface, percent (0..=100).
    pub percent: f64,
    /// Half-width of the interval meant to hold the true share about 95 % of the time,
    /// percentage points (see `docs/measurement.md`, "Tissue composition", for how
    /// often it does on the phantoms).
    pub percent_pm: f64,
}

/// Tissue composition of a wound.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueComposition {
    /// All five classes, in [`TissueClass::ALL`] order.
    pub shares: Vec<TissueShare>,
    /// 3D area of the classified wound surface, mm².
    pub wound_area_mm2: f64,
    /// Share of that area seen in colour (0..=1); shares are extrapolated over the rest.
    pub coloured_fraction: f64,
    /// The calibration applied.
    pub calibration: Calibration,
    /// The classifier, `name@version`.
    pub classifier: String,
}

impl TissueComposition {
    /// The share of one class.
    pub fn share(&self, class: TissueClass) -> &TissueShare {
        &self.shares[class.index()]
    }
}

/// A clinician's correction: every wound vertex inside the region takes its class.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueCorrection {
    /// Region outline in world coordinates (metres), as drawn by a clinician; it is
    /// projected on the wound's skin tangent plane like the wound outline.
    pub outline_world: Vec<Vec3>,
    /// The class every vertex inside takes.
    pub class: TissueClass,
}

/// What a classifier sees of one surface sample (a mesh vertex of the wound).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TissueSample {
    /// Calibrated linear RGB (0..~1; may exceed 1 after gains).
    pub rgb: [f32; 3],
    /// CIELAB (D65) of `rgb`.
    pub lab: [f32; 3],
    /// Mean of L*, a*, b* over the vertex's neighbourhood (two rings on the mesh, about
    /// 2 mm), texture context.
    pub neighbourhood_mean: [f32; 3],
    /// Standard deviation of L*, a*, b* over the same neighbourhood.
    pub neighbourhood_std: [f32; 3],
    /// Median of L*, a*, b* over the same neighbourhood (per channel): the colour of the
    /// tissue the vertex sits in, which a boundary within the neighbourhood does not move
    /// while the vertex's own tissue holds most of it (the mean blends both sides).
    pub neighbourhood_median: [f32; 3],
    /// Median absolute deviation of `ln Y`, `ln(R/G)` and `ln(B/G)` over the same
    /// neighbourhood (×1.4826, a standard deviation for normal data): texture contrast that
    /// per-channel gains leave unchanged (Lab spreads grow with the gains, so a dark skin's
    /// amplified noise would read as texture) and that a boundary does not inflate (the
    /// standard deviation of a smooth tissue next to a textured one reads as texture).
    pub neighbourhood_log_mad: [f32; 3],
    /// `ln Y`, `ln(R/G)`, `ln(B/G)` of the periwound ring's luminance-trimmed mean before
    /// calibration: the skin tone under the scan's light and exposure. Calibration divides
    /// the skin out of every colour; this tells the classifier which skin it was, as far as
    /// the light's cast and the exposure let it (`docs/measurement.md`, *Classification*).
    pub periwound_log: [f32; 3],
}

/// Classifies calibrated surface samples into tissue classes.
pub trait TissueClassifier: Send + Sync {
    /// `name@version`, e.g. `coherency-lab-mlp@1`, recorded with every result.
    fn name(&self) -> &str;
    /// Class probabilities (sum 1, [`TissueClass::ALL`] order) for one calibrated
    /// surface sample.
    fn classify(&self, sample: &TissueSample) -> [f32; 5];
}

/// Why no tissue composition could be computed. Messages carry no patient data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TissueError {
    /// No view coloured the wound surface (no colour frames, or none saw the wound).
    #[error("no colour: no colour frame saw the wound")]
    NoColour,
    /// Too little of the wound surface was seen in colour to report shares.
    #[error("too little colour: {:.0}% of the wound surface seen in colour", coloured_fraction * 100.0)]
    TooLittleColour {
        /// Share of the wound surface seen in colour.
        coloured_fraction: f64,
    },
    /// No skin around the outline was seen in colour, so nothing to calibrate from.
    #[error("no periwound skin seen in colour to calibrate from")]
    NoPeriwound,
    /// The skin around the outline is too dark to calibrate from (covered, in shadow or
    /// badly under-exposed).
    #[error("periwound skin too dark to calibrate from (luminance {luminance:.4})")]
    PeriwoundTooDark {
        /// Median linear luminance of the periwound ring (0..1).
        luminance: f64,
    },
    /// No wound surface inside the outline on the mesh.
    #[error("no wound surface inside the outline on the mesh")]
    NoWoundSurface,
}

impl TissueError {
    /// A stable, machine-readable code: `no_colour`, `too_little_colour`, `no_periwound`,
    /// `periwound_too_dark`, `no_wound_surface`.
    pub fn code(&self) -> &'static str {
        match self {
            TissueError::NoColour => "no_colour",
            TissueError::TooLittleColour { .. } => "too_little_colour",
            TissueError::NoPeriwound => "no_periwound",
            TissueError::PeriwoundTooDark { .. } => "periwound_too_dark",
            TissueError::NoWoundSurface => "no_wound_surface",
        }
    }
}

/// `ln Y`, `ln(R/G)`, `ln(B/G)` of a calibrated linear colour (offset by 10⁻³, about a
/// thousandth of the calibrated skin's level).
pub fn log_chroma(rgb: [f32; 3]) -> [f32; 3] {
    let eps = 1e-3;
    let [r, g, b] = rgb.map(|v| v.max(0.0) + eps);
    [(luminance(rgb).max(0.0) + eps).ln(), (r / g).ln(), (b / g).ln()]
}

/// sRGB byte → linear, by table.
pub fn srgb_lut() -> &'static [f32; 256] {
    static LUT: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    LUT.get_or_init(|| std::array::from_fn(|i| srgb_to_linear(i as f32 / 255.0)))
}

/// sRGB transfer function, 0..1 → linear 0..1.
pub fn srgb_to_linear(v: f32) -> f32 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// Linear 0..1 → sRGB 0..1 (clamped).
pub fn linear_to_srgb(v: f32) -> f32 {
    let v = v.clamp(0.0, 1.0);
    if v <= 0.003_130_8 {
        v * 12.92
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    }
}

/// Linear 0..1 → sRGB byte (clamped, rounded).
pub fn linear_to_srgb8(v: f32) -> u8 {
    (linear_to_srgb(v) * 255.0).round() as u8
}

/// Relative luminance Y of linear sRGB.
pub fn luminance(rgb: [f32; 3]) -> f32 {
    0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
}

/// CIELAB (D65 white) of linear sRGB.
pub fn linear_to_lab(rgb: [f32; 3]) -> [f32; 3] {
    let [r, g, b] = rgb.map(|v| v.max(0.0));
    let x = (0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / 0.950_47;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b;
    let z = (0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b) / 1.088_83;
    let f = |t: f32| if t > 0.008_856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srgb_round_trips_through_linear() {
        for i in 0..=255u8 {
            assert_eq!(linear_to_srgb8(srgb_lut()[usize::from(i)]), i);
        }
    }

    #[test]
    fn lab_of_white_and_black() {
        let w = linear_to_lab([1.0; 3]);
        assert!((w[0] - 100.0).abs() < 0.1 && w[1].abs() < 0.1 && w[2].abs() < 0.1, "{w:?}");
        let k = linear_to_lab([0.0; 3]);
        assert!(k[0].abs() < 1e-3);
        let red = linear_to_lab([1.0, 0.0, 0.0]);
        assert!((red[0] - 53.2).abs() < 0.5 && (red[1] - 80.1).abs() < 1.0, "{red:?}");
    }

    #[test]
    fn class_names_are_stable() {
        let names: Vec<_> = TissueClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["granulation", "slough", "eschar", "epithelial", "other"]);
        for c in TissueClass::ALL {
            assert_eq!(TissueClass::parse(c.as_str()), Some(c));
            assert_eq!(TissueClass::ALL[c.index()], c);
        }
    }

    #[test]
    fn unseen_vertices_are_grey_and_gains_apply() {
        let vc = VertexColours { linear_rgb: vec![[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]], weight: vec![1.0, 0.0] };
        let cal = Calibration { source: CalibrationSource::Periwound, gains: [2.0, 1.0, 0.5], samples: 1 };
        let s = vc.to_srgb8(Some(&cal));
        assert_eq!(s[1], UNSEEN_SRGB);
        assert_eq!(s[0][0], linear_to_srgb8(0.4));
        assert_eq!(s[0][2], linear_to_srgb8(0.1));
        assert_eq!(s[0][3], 255);
    }
}
