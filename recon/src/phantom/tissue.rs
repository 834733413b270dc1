//! Tissue-composition cases on colour phantoms, and a harness that runs one through the
//! server's pipeline: depth frames fused by [`ScanFusion::fuse_all`], the mesh, the
//! clinician path's measurement (the true outline traced on the middle frame, as
//! `harness.rs` does), then per lighting condition [`colour_vertices`] and
//! [`tissue_analysis`] on the colour views (reported poses, as the phone sends them).
//!
//! Evaluation cases ([`evaluation_cases`]) and training cases ([`training_cases`]) use
//! different geometries, maps, colour seeds and trajectory seeds: nothing is tested on
//! what the classifier was trained on.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::body::Body;
use super::cavity::{Bed, Cavity, Outline};
use super::colour::{maps, Appearance, ColourPhantom, ColourScan, Illuminant, Lighting, TissueMap, SKIN_TONES};
use super::family::FILLET_M;
use super::presets::default_placement;
use super::wound::WoundSpec;
use super::{ScanConfig, TrajectoryOptions};
use crate::colour::{
    colour_vertices, default_classifier, tissue_analysis, tissue_composition, ColourView, RgbImage, TissueAnalysis,
    TissueClassifier, TissueComposition, TissueCorrection, TissueError, VertexColours,
};
use crate::fusion::{ScanFusion, MESH_MIN_WEIGHT};
use crate::geometry::Frame;
use crate::measure::WoundMeasurements;
use crate::mesh::{extract_mesh, Mesh};
use crate::ReconError;

/// A colour phantom to scan.
#[derive(Debug, Clone)]
pub struct ColourCase {
    /// `geometry/map/skin` for reports.
    pub name: String,
    /// Geometry.
    pub spec: WoundSpec,
    /// Look.
    pub appearance: Appearance,
    /// Trajectory seed.
    pub seed: u64,
}

fn cavity(outline: Outline, depth_mm: f64, wall_deg: f64, bed: Bed, orientation: f64) -> Cavity {
    Cavity { outline, orientation, depth_m: depth_mm * 1e-3, wall_deg, bed, fillet_m: FILLET_M }
}

fn spec(body: Body, cavity: Cavity) -> WoundSpec {
    WoundSpec { body, cavity, background_m: None, world_from_phantom: default_placement() }
}

/// The four evaluation geometries, one per evaluation map: a round wound on flat skin, an
/// ellipse on a leg, a lobed sacral wound, a heel.
pub fn evaluation_geometries() -> Vec<(&'static str, WoundSpec)> {
    vec![
        (
            "plane-circle36",
            spec(Body::Plane, cavity(Outline::Circle { radius: 0.018 }, 4.0, 45.0, Bed::Rounded { power: 4.0 }, 0.0)),
        ),
        (
            "leg-ellipse44",
            spec(
                Body::Cylinder { radius: 0.06, half_length: None },
                cavity(Outline::Ellipse { semi_major: 0.022, semi_minor: 0.015 }, 3.0, 35.0, Bed::Flat, 0.4),
            ),
        ),
        (
            "sacrum-lobed48",
            spec(
                Body::Ellipsoid { a: (0.09f64 * 0.4).sqrt(), b: (0.14f64 * 0.4).sqrt(), c: 0.4 },
                cavity(
                    Outline::Lobed {
                        mean_radius: 0.021,
                        harmonics: vec![(2, 0.14, 0.4), (3, 0.07, 1.3), (5, 0.03, 2.0)],
                    },
                    2.0,
                    25.0,
                    Bed::Flat,
                    0.3,
                ),
            ),
        ),
        (
            "heel-circle28",
            spec(
                Body::Ellipsoid { a: 0.035, b: 0.045, c: 0.030 },
                cavity(Outline::Circle { radius: 0.014 }, 3.0, 50.0, Bed::Rounded { power: 2.0 }, 0.0),
            ),
        ),
    ]
}

/// Evaluation: each of the four maps ([`maps::evaluation`]) on its geometry, scanned
/// along `trajectories` seeds; trajectory `s` has skin tone `s mod 5` (light to dark).
pub fn evaluation_cases(trajectories: u64) -> Vec<ColourCase> {
    let mut out = Vec::new();
    for (m, (map, (geo, spec))) in maps::evaluation().into_iter().zip(evaluation_geometries()).enumerate() {
        for s in 0..trajectories {
            let tone = SKIN_TONES[(s % 5) as usize];
            out.push(ColourCase {
                name: format!("{geo}/{}/skin{}/t{s}", map.name, s % 5),
                spec: spec.clone(),
                appearance: Appearance { skin_srgb: tone, map: map.clone(), seed: 1000 + 10 * m as u64 + s },
                seed: 500 + s,
            });
        }
    }
    out
}

/// Training: `n` cases with random geometries (circle, ellipse or lobed outline of
/// 24–50 mm on flat, cylindrical or ellipsoidal skin), random maps ([`TissueMap::random`]),
/// skin tones uniform over the listed range (a little beyond both ends), and seeds disjoint from the evaluation's.
// 6.28 and 3.14 are the ranges the shipped weights were trained with (changing them would
// change every training case).
#[allow(clippy::approx_constant)]
pub fn training_cases(n: usize, seed: u64) -> Vec<ColourCase> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0074_7261_696e);
    (0..n)
        .map(|i| {
            let r = rng.gen_range(0.012..0.025);
            let outline = match rng.gen_range(0..3) {
                0 => Outline::Circle { radius: r },
                1 => Outline::Ellipse { semi_major: r, semi_minor: r * rng.gen_range(0.6..0.95) },
                _ => Outline::Lobed {
                    mean_radius: r * 0.9,
                    harmonics: vec![
                        (2, rng.gen_range(0.05..0.18), rng.gen_range(0.0..6.28)),
                        (3, rng.gen_range(0.0..0.08), 1.0),
                    ],
                },
            };
            let bed = match rng.gen_range(0..3) {
                0 => Bed::Flat,
                1 => Bed::Rounded { power: rng.gen_range(2.0..5.0) },
                _ => Bed::Sloped { tilt: rng.gen_range(-0.4..0.4), direction: rng.gen_range(0.0..6.28) },
            };
            let body = match rng.gen_range(0..3) {
                0 => Body::Plane,
                1 => Body::Cylinder { radius: rng.gen_range(0.045..0.1), half_length: None },
                _ => {
                    let c = rng.gen_range(0.05..0.3);
                    Body::Ellipsoid {
                        a: (rng.gen_range(0.06..0.2f64) * c).sqrt(),
                        b: (rng.gen_range(0.06..0.2f64) * c).sqrt(),
                        c,
                    }
                }
            };
            let cav =
                cavity(outline, rng.gen_range(1.5..5.0), rng.gen_range(25.0..70.0), bed, rng.gen_range(0.0..3.14));
            // Uniform over the whole range of tones, a little beyond both ends.
            let u: f64 = rng.gen_range(-0.15..(SKIN_TONES.len() as f64 - 0.85));
            let a = (u.floor().max(0.0) as usize).min(SKIN_TONES.len() - 2);
            let f = u - a as f64;
            let tone = [0, 1, 2].map(|c| {
                (f64::from(SKIN_TONES[a][c]) * (1.0 - f) + f64::from(SKIN_TONES[a + 1][c]) * f)
                    .round()
                    .clamp(0.0, 255.0) as u8
            });
            ColourCase {
                name: format!("train-{i}"),
                spec: spec(body, cav),
                appearance: Appearance {
                    skin_srgb: tone,
                    map: TissueMap::random(seed.wrapping_mul(7919).wrapping_add(i as u64)),
                    seed: 900_000 + seed * 1000 + i as u64,
                },
                seed: 700_000 + seed * 1000 + i as u64,
            }
        })
        .collect()
}

/// A case scanned, fused, meshed and measured, ready for colour.
pub struct Prepared {
    /// The phantom.
    pub phantom: ColourPhantom,
    /// Its capture.
    pub scan: ColourScan,
    /// The fused mesh.
    pub mesh: Mesh,
    /// The clinician-path measurement (true outline traced on the middle frame).
    pub wound: WoundMeasurements,
}

/// Frames and colour sampling of a tissue test scan.
#[derive(Debug, Clone, Copy)]
pub struct ColourScanConfig {
    /// Depth frames.
    pub frames: usize,
    /// One colour frame every this many depth frames.
    pub colour_every: usize,
    /// Colour resolution relative to the depth's.
    pub colour_scale: f64,
}

impl Default for ColourScanConfig {
    /// 24 depth frames, 12 colour frames at 512×384 (what the shipped classifier was trained
    /// on: `recon/train/`).
    fn default() -> Self {
        ColourScanConfig { frames: 24, colour_every: 2, colour_scale: 2.0 }
    }
}

impl ColourScanConfig {
    /// [`Default`] with the colour frames at 640×480: the size the server reduces a phone's
    /// colour image to before colouring the mesh (its long side to 640 px; ARKit's
    /// 1920×1440 `capturedImage` becomes 640×480), so what a scan's finish works from.
    pub fn server_resolution() -> Self {
        ColourScanConfig { colour_scale: 2.5, ..ColourScanConfig::default() }
    }
}

/// Renders, fuses, meshes and measures a case.
pub fn prepare(case: &ColourCase, config: &ColourScanConfig) -> Result<Prepared, ReconError> {
    prepare_phantom(ColourPhantom::new(case.spec.clone(), case.appearance.clone()), case, config)
}

/// [`prepare`] with the phantom already built (e.g. from a geometry shared by several cases
/// with [`ColourPhantom::from_wound`]).
pub fn prepare_phantom(
    phantom: ColourPhantom,
    case: &ColourCase,
    config: &ColourScanConfig,
) -> Result<Prepared, ReconError> {
    let scan_config = ScanConfig { frames: config.frames, ..ScanConfig::iphone(case.seed) };
    let scan = phantom.scan(&scan_config, &TrajectoryOptions::default(), config.colour_every, config.colour_scale);
    let frames: Vec<(u64, Frame)> =
        scan.scan.frames.iter().cloned().enumerate().map(|(i, f)| (i as u64 + 1, f)).collect();
    let fused = ScanFusion::fuse_all(&frames, &mut || {})?;
    let mesh = extract_mesh(&fused.vol, MESH_MIN_WEIGHT);
    let k = scan.scan.frames.len() / 2;
    let key = &scan.scan.frames[k];
    let outline = phantom.wound.outline_in_image(&key.intrinsics, &scan.scan.true_poses[k], 96);
    let wound = fused.measure_polygon(&outline, &key.intrinsics, &key.pose)?;
    Ok(Prepared { phantom, scan, mesh, wound })
}

/// A random light of the held-out runs (`recon/examples/tissue_heldout.rs`,
/// `tissue_interval.rs`): neutral, warm or cold, −1…+1 EV.
pub fn random_lighting(rng: &mut impl Rng) -> Lighting {
    let illuminant = match rng.gen_range(0..3) {
        0 => Illuminant::Neutral,
        1 => Illuminant::Warm,
        _ => Illuminant::Cold,
    };
    Lighting { illuminant, ev: rng.gen_range(-1.0..1.0) }
}

/// One lighting condition's result.
pub struct Analysed {
    /// The colour images.
    pub images: Vec<(usize, RgbImage)>,
    /// Vertex colours.
    pub colours: VertexColours,
    /// The analysis.
    pub analysis: Result<TissueAnalysis, TissueError>,
}

impl Prepared {
    /// The colour views of `images` (reported poses, depth frames for visibility).
    pub fn views<'a>(&'a self, images: &'a [(usize, RgbImage)]) -> Vec<ColourView<'a>> {
        images
            .iter()
            .map(|(i, im)| {
                let f = &self.scan.scan.frames[*i];
                ColourView { image: im, intrinsics: self.scan.colour_intrinsics, pose: f.pose, depth: Some(f) }
            })
            .collect()
    }

    /// The composition under `lighting` (noise seed `seed`) with the shipped classifier and
    /// no corrections.
    pub fn composition(&self, lighting: &Lighting, seed: u64) -> Result<TissueComposition, TissueError> {
        let images = self.scan.images(lighting, seed);
        let colours = colour_vertices(&self.mesh, &self.views(&images));
        tissue_composition(&self.mesh, &colours, &self.wound, default_classifier(), &[])
    }

    /// Colours the mesh and analyses the tissue under `lighting` (noise seed `seed`).
    pub fn analyse(
        &self,
        lighting: &Lighting,
        seed: u64,
        classifier: &dyn TissueClassifier,
        corrections: &[TissueCorrection],
    ) -> Analysed {
        let images = self.scan.images(lighting, seed);
        let views = self.views(&images);
        let colours = colour_vertices(&self.mesh, &views);
        let analysis = tissue_analysis(&self.mesh, &colours, &self.wound, classifier, corrections);
        Analysed { images, colours, analysis }
    }
}
