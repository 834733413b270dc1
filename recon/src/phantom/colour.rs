//! Colour phantoms: a family [`WoundPhantom`] with a textured skin and wound bed whose
//! tissue map is known, rendered as the phone's colour camera would see it.
//!
//! - **Tissue maps** ([`TissueMap`]) live on the skin tangent plane in *normalised wound
//!   coordinates*: polar `(t, φ)` with `t = ρ / r(φ)` (0 at the centre, 1 on the outline),
//!   so one map fits any outline. A map is a base class and layered regions (a blob, the
//!   margin band `t > 1 − w`, the core `t < t₀`, an angular sector), each boundary wobbled
//!   by smooth noise; the last region containing a point wins. A surface point takes the
//!   class at its foot on the skin (walls take the class at the rim).
//! - **Appearance**: per phantom (seeded) each class's colour is drawn from a realistic
//!   range and textured (granulation: granular bumps with their own specular glints;
//!   slough: fibrinous streaks; eschar: dry, mottled, cracked; epithelial: smooth pink;
//!   other: pale tendon/maceration); skin tones from light to dark with mottling and pores.
//! - **Light**: a key light (direction drawn per phantom), ambient, a gradient across the
//!   skin, vignetting, Blinn–Phong highlights strongest on the moist bed. The frame's
//!   radiance under a white light is rendered once ([`RadianceImage`]); [`Lighting`]
//!   (illuminant cast: neutral, warm ~3000 K, cold ~7000 K; exposure in EV) and sensor
//!   noise are applied when it is exposed to an sRGB image, so one geometry serves every
//!   lighting condition.
//! - **Truth**: per-class 3D area of the wound surface inside the outline, by a fine polar
//!   triangulation of the cavity surface (as `truth.rs` integrates the bed area).
//!
//! - **Colour checker** (optional, [`ColourPhantom::with_card`]): a ColorChecker Classic
//!   ([`CheckerCard`], Mini-sized by default) lying on the skin tangent plane at the wound,
//!   beside it and wholly outside the periwound ring (3–12 mm from the outline), so it never
//!   enters the periwound calibration. Its patches' reflectances are the published colours
//!   (`colour::checker_reference_linear`), its surround black, matte; it is lit by the same key
//!   light, ambient, gradient and vignetting as the skin, and exposed with the same cast, EV and
//!   noise. It exists in the colour rendering only: the depth frames do not see it (on a curved
//!   body it floats tangent to the skin at the wound centre).
//!
//! Colour frames share the depth frame's pose (as ARKit delivers them) and use the depth
//! intrinsics scaled to the colour resolution.

use std::f64::consts::TAU;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::wound::{WoundPhantom, WoundSpec};
use super::{gaussian, PhantomScan, ScanConfig, Surface, TrajectoryOptions};
use crate::colour::{checker_reference_linear, linear_to_srgb8, srgb_to_linear, RgbImage, TissueClass};
use crate::geometry::{Intrinsics, Pose, Vec3};

/// One layered region of a tissue map, in normalised wound coordinates.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionShape {
    /// A disc centred at polar `(t, φ)` (φ radians in the cavity frame) with radius
    /// `radius`, in normalised coordinates.
    Blob {
        /// Centre, fraction of the outline radius.
        t: f64,
        /// Centre direction, radians.
        phi: f64,
        /// Radius, in the same normalised units.
        radius: f64,
    },
    /// The band along the outline, `t > 1 − width`.
    Margin {
        /// Band width, fraction of the outline radius.
        width: f64,
    },
    /// The centre, `t < t_max`.
    Core {
        /// Outer edge, fraction of the outline radius.
        t_max: f64,
    },
    /// The angular sector from `from` to `to` (radians, counter-clockwise).
    Sector {
        /// Start angle.
        from: f64,
        /// End angle.
        to: f64,
    },
}

/// A region of a map and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueRegion {
    /// Where.
    pub shape: RegionShape,
    /// What.
    pub class: TissueClass,
    /// Boundary irregularity, normalised units (0 = exact shape).
    pub wobble: f64,
}

/// A tissue map of the wound bed.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueMap {
    /// Name for reports.
    pub name: String,
    /// Class where no region applies.
    pub base: TissueClass,
    /// Regions, later ones on top.
    pub regions: Vec<TissueRegion>,
    /// Seed of the boundary wobble.
    pub seed: u64,
}

/// The evaluation maps (the four situations). Training uses [`TissueMap::random`].
pub mod maps {
    use super::*;
    use TissueClass::*;

    fn region(shape: RegionShape, class: TissueClass, wobble: f64) -> TissueRegion {
        TissueRegion { shape, class, wobble }
    }

    /// Mostly granulation with a slough island and a thin epithelial margin.
    pub fn slough_island() -> TissueMap {
        TissueMap {
            name: "slough-island".into(),
            base: Granulation,
            regions: vec![
                region(RegionShape::Blob { t: 0.35, phi: 1.0, radius: 0.38 }, Slough, 0.12),
                region(RegionShape::Margin { width: 0.1 }, Epithelial, 0.04),
            ],
            seed: 101,
        }
    }

    /// Mixed quadrants: granulation, slough and eschar sectors, epithelial margin.
    pub fn mixed_quadrants() -> TissueMap {
        TissueMap {
            name: "mixed-quadrants".into(),
            base: Granulation,
            regions: vec![
                region(RegionShape::Sector { from: 0.3, to: 2.1 }, Slough, 0.15),
                region(RegionShape::Sector { from: 3.0, to: 4.5 }, Eschar, 0.15),
                region(RegionShape::Margin { width: 0.12 }, Epithelial, 0.05),
            ],
            seed: 202,
        }
    }

    /// An eschar cap with a granulation rim and a slough crescent.
    pub fn eschar_cap() -> TissueMap {
        TissueMap {
            name: "eschar-cap".into(),
            base: Granulation,
            regions: vec![
                region(RegionShape::Core { t_max: 0.62 }, Eschar, 0.1),
                region(RegionShape::Blob { t: 0.75, phi: 4.0, radius: 0.25 }, Slough, 0.1),
            ],
            seed: 303,
        }
    }

    /// An epithelialising wound: a wide pink margin, granulation, a little slough and an
    /// exposed tendon ("other").
    pub fn epithelialising() -> TissueMap {
        TissueMap {
            name: "epithelialising".into(),
            base: Granulation,
            regions: vec![
                region(RegionShape::Margin { width: 0.32 }, Epithelial, 0.08),
                region(RegionShape::Blob { t: 0.2, phi: 2.5, radius: 0.2 }, Slough, 0.08),
                region(RegionShape::Blob { t: 0.3, phi: 5.5, radius: 0.14 }, Other, 0.05),
            ],
            seed: 404,
        }
    }

    /// The four evaluation maps.
    pub fn evaluation() -> Vec<TissueMap> {
        vec![slough_island(), mixed_quadrants(), eschar_cap(), epithelialising()]
    }
}

impl TissueMap {
    /// A random map for training: a random base and one to four random regions.
    pub fn random(seed: u64) -> TissueMap {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7469_7373_7565);
        let pick = |rng: &mut StdRng, weights: [f64; 5]| -> TissueClass {
            let total: f64 = weights.iter().sum();
            let mut x = rng.gen_range(0.0..total);
            for (k, w) in weights.iter().enumerate() {
                if x < *w {
                    return TissueClass::ALL[k];
                }
                x -= w;
            }
            TissueClass::Granulation
        };
        let base = pick(&mut rng, [5.0, 2.0, 1.5, 0.5, 0.0]);
        let n = rng.gen_range(1..=4);
        let regions = (0..n)
            .map(|_| {
                let shape = match rng.gen_range(0..4) {
                    0 | 1 => RegionShape::Blob {
                        t: rng.gen_range(0.0..0.8),
                        phi: rng.gen_range(0.0..TAU),
                        radius: rng.gen_range(0.1..0.5),
                    },
                    2 => RegionShape::Margin { width: rng.gen_range(0.05..0.35) },
                    _ => {
                        let from = rng.gen_range(0.0..TAU);
                        RegionShape::Sector { from, to: from + rng.gen_range(0.5..2.5) }
                    }
                };
                let class = if matches!(shape, RegionShape::Margin { .. }) && rng.gen_bool(0.6) {
                    TissueClass::Epithelial
                } else {
                    pick(&mut rng, [2.0, 2.5, 2.0, 1.0, 0.4])
                };
                TissueRegion { shape, class, wobble: rng.gen_range(0.0..0.15) }
            })
            .collect();
        TissueMap { name: format!("random-{seed}"), base, regions, seed }
    }

    /// The class at normalised polar `(t, φ)`, tangent-plane point `(x, y)` (metres).
    fn class_at(&self, t: f64, phi: f64, x: f64, y: f64) -> TissueClass {
        let mut class = self.base;
        for (k, r) in self.regions.iter().enumerate() {
            let wob = if r.wobble > 0.0 {
                r.wobble * fbm(self.seed.wrapping_add(k as u64 * 7919), x / 0.004, y / 0.004, 3)
            } else {
                0.0
            };
            // Signed "distance" in normalised units, negative inside.
            let d = match r.shape {
                RegionShape::Blob { t: tc, phi: pc, radius } => {
                    let (cx, cy) = (tc * pc.cos(), tc * pc.sin());
                    let (px, py) = (t * phi.cos(), t * phi.sin());
                    (px - cx).hypot(py - cy) - radius
                }
                RegionShape::Margin { width } => (1.0 - width) - t,
                RegionShape::Core { t_max } => t - t_max,
                RegionShape::Sector { from, to } => {
                    let span = (to - from).rem_euclid(TAU);
                    let rel = (phi - from).rem_euclid(TAU);
                    if rel <= span {
                        -(rel.min(span - rel)).min(1.0) * 0.5
                    } else {
                        (rel - span).min(TAU - rel).min(1.0) * 0.5
                    }
                }
            };
            if d + wob < 0.0 {
                class = r.class;
            }
        }
        class
    }
}

/// Skin tones from light to dark (sRGB), the Fitzpatrick range.
pub const SKIN_TONES: [[u8; 3]; 5] = [[233, 196, 172], [214, 166, 134], [184, 136, 102], [140, 98, 70], [92, 64, 48]];

/// How a colour phantom looks.
#[derive(Debug, Clone, PartialEq)]
pub struct Appearance {
    /// The skin tone (sRGB), e.g. one of [`SKIN_TONES`].
    pub skin_srgb: [u8; 3],
    /// The wound bed's tissue map.
    pub map: TissueMap,
    /// Seed of the colours drawn within each class, the textures and the light rig.
    pub seed: u64,
}

/// Colours (linear) of one phantom's classes and its light rig.
#[derive(Debug, Clone)]
struct Palette {
    tissue: [[f64; 3]; 5],
    skin: [f64; 3],
    key_dir: Vec3,
    gradient_dir: Vec3,
    gradient: f64,
    ambient: f64,
    key: f64,
}

fn lin(srgb: [f64; 3]) -> [f64; 3] {
    srgb.map(|v| f64::from(srgb_to_linear((v / 255.0) as f32)))
}

impl Palette {
    fn draw(a: &Appearance) -> Self {
        let mut rng = StdRng::seed_from_u64(a.seed ^ 0x636f_6c6f_7572);
        let mut range = |lo: [f64; 3], hi: [f64; 3]| {
            let s: f64 = rng.gen();
            let j = [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)];
            lin([0, 1, 2]
                .map(|c| (lo[c] + s * (hi[c] - lo[c]) + 0.25 * j[c] * (hi[c] - lo[c]) * 0.5).clamp(0.0, 255.0)))
        };
        let tissue = [
            range([140.0, 28.0, 34.0], [205.0, 62.0, 66.0]), // granulation: beefy red
            range([196.0, 168.0, 92.0], [236.0, 214.0, 160.0]), // slough: yellow to cream
            range([26.0, 18.0, 13.0], [72.0, 52.0, 40.0]),   // eschar: black to dark brown
            range([212.0, 138.0, 138.0], [242.0, 182.0, 178.0]), // epithelial: pink
            range([196.0, 198.0, 196.0], [228.0, 226.0, 222.0]), // other: tendon, maceration
        ];
        let jitter = [rng.gen_range(-6.0..6.0), rng.gen_range(-6.0..6.0), rng.gen_range(-6.0..6.0)];
        let skin = lin([0, 1, 2].map(|c| (f64::from(a.skin_srgb[c]) + jitter[c]).clamp(0.0, 255.0)));
        let el = rng.gen_range(35f64..70.0).to_radians();
        let az = rng.gen_range(0.0..TAU);
        let key_dir = Vec3::new(el.cos() * az.cos(), el.cos() * az.sin(), el.sin());
        let ga = rng.gen_range(0.0..TAU);
        Palette {
            tissue,
            skin,
            key_dir,
            gradient_dir: Vec3::new(ga.cos(), ga.sin(), 0.0),
            gradient: rng.gen_range(0.1..0.3),
            ambient: rng.gen_range(0.3..0.45),
            key: rng.gen_range(0.6..0.8),
        }
    }
}

/// Per-class 3D areas of the wound surface inside the outline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TissueTruth {
    /// Area per class, mm², [`TissueClass::ALL`] order.
    pub area_mm2: [f64; 5],
    /// Total, mm².
    pub total_mm2: f64,
}

impl TissueTruth {
    /// Share of a class, percent.
    pub fn percent(&self, class: TissueClass) -> f64 {
        100.0 * self.area_mm2[class.index()] / self.total_mm2
    }
}

/// A ColorChecker Classic lying on the skin tangent plane beside the wound (colour frames
/// only). Chart coordinates: columns along `direction_rad + turn_rad`, rows 90° clockwise
/// from it seen from the skin's outside, so the card shows its front to the camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckerCard {
    /// Distance of the card's centre from the wound centre in the tangent plane, metres.
    pub distance_m: f64,
    /// Direction of the card's centre from the wound centre (phantom frame), radians.
    pub direction_rad: f64,
    /// In-plane turn of the card's columns from that direction, radians.
    pub turn_rad: f64,
    /// Patch pitch, metres (patches are 0.8 pitch wide; the card 6.8 × 4.8 pitches).
    pub pitch_m: f64,
}

/// Reflectance of the card's black surround.
const CARD_SURROUND: f64 = 0.012;
/// Height of the card's face above the tangent plane, metres.
const CARD_THICKNESS_M: f64 = 0.0003;
/// Half-extents of the card, pitches.
const CARD_HALF: [f64; 2] = [3.4, 2.4];

impl CheckerCard {
    /// Nearest distance from the outline to the card: beyond the 12 mm periwound ring with a
    /// 4 mm margin.
    pub const CLEARANCE_M: f64 = 0.016;

    /// A ColorChecker Classic Mini (pitch 12 mm: 82 × 58 mm) with its long side across the
    /// direction `direction_rad`, its near edge [`CheckerCard::CLEARANCE_M`] beyond the
    /// outline's farthest point, turned `turn_rad` off the across position (a turn brings a
    /// corner nearer: the card moves out so the clearance holds).
    pub fn beside(wound: &WoundPhantom, direction_rad: f64, turn_rad: f64) -> CheckerCard {
        let pitch_m = 0.012;
        let r = wound.carved().cavity().outline.max_radius();
        // Reach of the card towards the wound, from its centre, for this turn.
        let (s, c) = (turn_rad - std::f64::consts::FRAC_PI_2).sin_cos();
        let reach = (CARD_HALF[0] * c.abs() + CARD_HALF[1] * s.abs()) * pitch_m;
        CheckerCard {
            distance_m: r + Self::CLEARANCE_M + reach,
            direction_rad,
            turn_rad: turn_rad - std::f64::consts::FRAC_PI_2,
            pitch_m,
        }
    }

    /// Chart coordinates (pitches: columns, rows from the card centre) of tangent-plane point
    /// `(x, y)`.
    fn chart(&self, x: f64, y: f64) -> [f64; 2] {
        let (cx, cy) = (self.distance_m * self.direction_rad.cos(), self.distance_m * self.direction_rad.sin());
        let a = self.direction_rad + self.turn_rad;
        let (dx, dy) = (x - cx, y - cy);
        let col = (dx * a.cos() + dy * a.sin()) / self.pitch_m;
        let row = (dx * a.sin() - dy * a.cos()) / self.pitch_m;
        [col, row]
    }

    /// The card's reflectance at tangent-plane point `(x, y)`; `None` off the card.
    pub fn reflectance(&self, x: f64, y: f64) -> Option<[f64; 3]> {
        let [u, v] = self.chart(x, y);
        if u.abs() > CARD_HALF[0] || v.abs() > CARD_HALF[1] {
            return None;
        }
        let (col, row) = ((u + 2.5).round(), (v + 1.5).round());
        let on_patch = (0.0..6.0).contains(&col)
            && (0.0..4.0).contains(&row)
            && (u - (col - 2.5)).abs() <= 0.4
            && (v - (row - 1.5)).abs() <= 0.4;
        Some(if on_patch { checker_reference_linear()[row as usize * 6 + col as usize] } else { [CARD_SURROUND; 3] })
    }

    /// The centre of chart patch `k` (chart order) on the tangent plane, metres.
    pub fn patch_centre(&self, k: usize) -> (f64, f64) {
        let (u, v) = ((k % 6) as f64 - 2.5, (k / 6) as f64 - 1.5);
        let (cx, cy) = (self.distance_m * self.direction_rad.cos(), self.distance_m * self.direction_rad.sin());
        let a = self.direction_rad + self.turn_rad;
        let p = self.pitch_m;
        (cx + p * (u * a.cos() + v * a.sin()), cy + p * (u * a.sin() - v * a.cos()))
    }
}

/// A colour phantom: geometry, appearance, and truth.
#[derive(Debug, Clone)]
pub struct ColourPhantom {
    /// The geometry.
    pub wound: WoundPhantom,
    /// How it looks.
    pub appearance: Appearance,
    palette: Palette,
    truth: TissueTruth,
    card: Option<CheckerCard>,
}

/// Illuminant colour casts on the camera's output (linear RGB multipliers, brightest
/// channel 1): what remains after a phone's partial white balance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Illuminant {
    /// Daylight-balanced, no cast.
    Neutral,
    /// Warm tungsten light, about 3000 K.
    Warm,
    /// Cold light (overcast daylight, cool LEDs), about 7000 K.
    Cold,
    /// Any cast.
    Custom([f64; 3]),
}

impl Illuminant {
    /// The linear RGB multipliers.
    pub fn gains(self) -> [f64; 3] {
        match self {
            Illuminant::Neutral => [1.0, 1.0, 1.0],
            Illuminant::Warm => [1.0, 0.68, 0.36],
            Illuminant::Cold => [0.7, 0.83, 1.0],
            Illuminant::Custom(g) => g,
        }
    }

    /// Short name for reports.
    pub fn label(self) -> &'static str {
        match self {
            Illuminant::Neutral => "neutral",
            Illuminant::Warm => "warm",
            Illuminant::Cold => "cold",
            Illuminant::Custom(_) => "custom",
        }
    }
}

/// Light and exposure of one capture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lighting {
    /// Colour cast.
    pub illuminant: Illuminant,
    /// Exposure relative to the phantom's nominal, EV (−1 halves the light).
    pub ev: f64,
}

impl Lighting {
    /// Neutral light, nominal exposure.
    pub const NEUTRAL: Lighting = Lighting { illuminant: Illuminant::Neutral, ev: 0.0 };

    /// Short name for reports.
    pub fn label(&self) -> String {
        format!("{} {:+.0} EV", self.illuminant.label(), self.ev)
    }
}

/// Nominal exposure: linear camera value of a white surface under the full key light.
const EXPOSURE: f64 = 0.5;
/// Sensor noise: variance `SHOT · v + READ²` in linear units.
const SHOT: f64 = 0.0003;
const READ: f64 = 0.0015;

/// Linear radiance of one frame under a white light, before exposure, cast and noise.
#[derive(Debug, Clone, PartialEq)]
pub struct RadianceImage {
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// RGB per pixel, linear.
    pub data: Vec<[f32; 3]>,
}

impl RadianceImage {
    /// The sRGB image a camera gives under `lighting`, with sensor noise drawn from `seed`.
    pub fn expose(&self, lighting: &Lighting, seed: u64) -> RgbImage {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6578_706f_7365);
        let table = gaussian_table();
        let g = lighting.illuminant.gains();
        let k = EXPOSURE * 2f64.powf(lighting.ev);
        let mut out = RgbImage::new(self.width, self.height);
        for (px, rad) in out.data.chunks_exact_mut(3).zip(&self.data) {
            for c in 0..3 {
                let v = f64::from(rad[c]) * g[c] * k;
                let sd = (SHOT * v.max(0.0) + READ * READ).sqrt();
                let noisy = v + sd * table[(rng.next_u32() >> 20) as usize];
                px[c] = linear_to_srgb8(noisy as f32);
            }
        }
        out
    }
}

/// A rendered colour capture: the depth scan and, for some of its frames, the radiance.
#[derive(Debug, Clone)]
pub struct ColourScan {
    /// Depth frames (reported poses), true poses, geometric truth.
    pub scan: PhantomScan,
    /// Colour intrinsics (the depth intrinsics scaled).
    pub colour_intrinsics: Intrinsics,
    /// `(frame index, radiance)` for the frames with colour.
    pub colour: Vec<(usize, RadianceImage)>,
}

impl ColourScan {
    /// The colour frames as the phone would send them under `lighting` (noise seeded per
    /// frame from `seed`): `(frame index, image)`.
    pub fn images(&self, lighting: &Lighting, seed: u64) -> Vec<(usize, RgbImage)> {
        self.colour
            .iter()
            .map(|(i, r)| (*i, r.expose(lighting, seed.wrapping_mul(1000).wrapping_add(*i as u64))))
            .collect()
    }
}

impl ColourPhantom {
    /// Prepares the phantom and its tissue truth.
    pub fn new(spec: WoundSpec, appearance: Appearance) -> Self {
        Self::from_wound(WoundPhantom::new(spec), appearance)
    }

    /// The same from an already built geometry (its truth is computed once per geometry).
    pub fn from_wound(wound: WoundPhantom, appearance: Appearance) -> Self {
        let palette = Palette::draw(&appearance);
        let mut p = ColourPhantom {
            wound,
            appearance,
            palette,
            truth: TissueTruth { area_mm2: [0.0; 5], total_mm2: 0.0 },
            card: None,
        };
        p.truth = p.compute_truth();
        p
    }

    /// Per-class truth.
    pub fn tissue_truth(&self) -> &TissueTruth {
        &self.truth
    }

    /// The same phantom with a colour checker on the skin beside the wound.
    pub fn with_card(self, card: CheckerCard) -> Self {
        ColourPhantom { card: Some(card), ..self }
    }

    /// The card, if any.
    pub fn card(&self) -> Option<&CheckerCard> {
        self.card.as_ref()
    }

    /// The skin's true colour (linear RGB reflectance, before mottling): what a calibration
    /// that keeps the skin's tone should find on the periwound skin.
    pub fn skin_linear(&self) -> [f64; 3] {
        self.palette.skin
    }

    /// Normalised polar coordinates `(t, φ)` of tangent-plane point `(x, y)`.
    fn normalised(&self, x: f64, y: f64) -> (f64, f64) {
        let cav = self.wound.carved().cavity();
        let (s, c) = cav.orientation.sin_cos();
        let (xc, yc) = (x * c + y * s, -x * s + y * c);
        let phi = yc.atan2(xc);
        (xc.hypot(yc) / cav.outline.radius(phi), phi.rem_euclid(TAU))
    }

    /// The tissue class at tangent-plane point `(x, y)`; `None` on skin (outside the
    /// outline).
    pub fn class_at(&self, x: f64, y: f64) -> Option<TissueClass> {
        let (t, phi) = self.normalised(x, y);
        (t < 1.0).then(|| self.appearance.map.class_at(t, phi, x, y))
    }

    /// The tissue class of the surface at (or nearest to) world point `p`; `None` on skin.
    pub fn class_at_world(&self, p: Vec3) -> Option<TissueClass> {
        let q = self.wound.spec().world_from_phantom.inverse_transform(p);
        let (x, y, _) = self.wound.spec().body.foot(q)?;
        self.class_at(x, y)
    }

    /// The cavity surface point above tangent-plane point `(x, y)` (phantom frame).
    fn surface(&self, x: f64, y: f64) -> Vec3 {
        let body = &self.wound.spec().body;
        let s = body.skin_point(x, y).unwrap_or(Vec3::new(x, y, 0.0));
        let n = body.normal(x, y).unwrap_or(Vec3::new(0.0, 0.0, 1.0));
        s - n * self.wound.depth_at(x, y)
    }

    fn compute_truth(&self) -> TissueTruth {
        let carved = self.wound.carved();
        let (m_phi, m_t) = (512usize, 160usize);
        let point = |i: usize, j: usize| {
            let phi = (i % m_phi) as f64 * TAU / m_phi as f64;
            let t = 1.0 - (1.0 - j as f64 / m_t as f64).powi(2);
            let (x, y) = carved.polar_point(t, phi);
            let body = &self.wound.spec().body;
            let d = if j == m_t { 0.0 } else { carved.depth(x, y) };
            let s = body.skin_point(x, y).unwrap_or(Vec3::new(x, y, 0.0));
            let n = body.normal(x, y).unwrap_or(Vec3::new(0.0, 0.0, 1.0));
            (s - n * d, (x, y))
        };
        let mut area = [0.0f64; 5];
        for i in 0..m_phi {
            for j in 0..m_t {
                let (p00, p10, p01, p11) = (point(i, j), point(i + 1, j), point(i, j + 1), point(i + 1, j + 1));
                for (a, b, c) in [(p00, p10, p11), (p00, p11, p01)] {
                    let ar = 0.5 * (b.0 - a.0).cross(c.0 - a.0).norm();
                    let (x, y) = ((a.1 .0 + b.1 .0 + c.1 .0) / 3.0, (a.1 .1 + b.1 .1 + c.1 .1) / 3.0);
                    // Centroids of the outermost ring can fall a hair outside the outline.
                    let class = self.class_at(x, y).unwrap_or_else(|| {
                        let (t, phi) = self.normalised(x, y);
                        self.appearance.map.class_at(t.min(0.999), phi, x, y)
                    });
                    area[class.index()] += ar;
                }
            }
        }
        let total: f64 = area.iter().sum();
        TissueTruth { area_mm2: area.map(|a| a * 1e6), total_mm2: total * 1e6 }
    }

    /// Albedo (linear), specular strength and a bump-normal perturbation at tangent-plane
    /// point `(x, y)`.
    fn material(&self, x: f64, y: f64) -> ([f64; 3], f64, [f64; 2]) {
        let seed = self.appearance.seed;
        let pal = &self.palette;
        let Some(class) = self.class_at(x, y) else {
            // Skin: low-frequency mottling and fine pores.
            let m =
                1.0 + 0.06 * fbm(seed ^ 11, x / 0.008, y / 0.008, 3) + 0.04 * noise(seed ^ 12, x / 0.0006, y / 0.0006);
            let red = 0.03 * fbm(seed ^ 13, x / 0.01, y / 0.01, 2);
            let s = pal.skin;
            return ([s[0] * m * (1.0 + red), s[1] * m, s[2] * m], 0.03, [0.0, 0.0]);
        };
        let base = pal.tissue[class.index()];
        // Low-frequency variation within a class (±10 % per channel).
        let var = [0, 1, 2].map(|c| 1.0 + 0.1 * fbm(seed ^ (20 + c as u64), x / 0.007, y / 0.007, 2));
        let mut rgb = [0, 1, 2].map(|c| base[c] * var[c]);
        let (spec, bump) = match class {
            TissueClass::Granulation => {
                // Granules about 1 mm across: bright domes, darker clefts.
                let g = noise(seed ^ 31, x / 0.0009, y / 0.0009);
                let dome = 1.0 - g.abs();
                let f = 0.7 + 0.5 * dome;
                rgb = [rgb[0] * f, rgb[1] * (0.8 + 0.3 * dome), rgb[2] * (0.8 + 0.3 * dome)];
                let h = 1e-4;
                let gx = (noise(seed ^ 31, (x + h) / 0.0009, y / 0.0009) - g) / h * 0.0003;
                let gy = (noise(seed ^ 31, x / 0.0009, (y + h) / 0.0009) - g) / h * 0.0003;
                (0.3, [gx.clamp(-0.6, 0.6), gy.clamp(-0.6, 0.6)])
            }
            TissueClass::Slough => {
                // Fibrinous streaks along a drawn direction.
                let a = (seed % 628) as f64 / 100.0;
                let (u, v) = (x * a.cos() + y * a.sin(), -x * a.sin() + y * a.cos());
                let f = 1.0 + 0.12 * noise(seed ^ 41, u / 0.004, v / 0.0006);
                rgb = rgb.map(|c| c * f);
                (0.15, [0.0, 0.0])
            }
            TissueClass::Eschar => {
                // Dry leathery mottling with cracks.
                let m = 1.0 + 0.2 * fbm(seed ^ 51, x / 0.002, y / 0.002, 3);
                let crack = noise(seed ^ 52, x / 0.003, y / 0.003).abs();
                let c = if crack < 0.05 { 0.6 } else { 1.0 };
                rgb = rgb.map(|v| v * m * c);
                (0.03, [0.0, 0.0])
            }
            TissueClass::Epithelial => {
                let f = 1.0 + 0.05 * noise(seed ^ 61, x / 0.001, y / 0.001);
                rgb = rgb.map(|c| c * f);
                (0.1, [0.0, 0.0])
            }
            TissueClass::Other => {
                let f = 1.0 + 0.06 * fbm(seed ^ 71, x / 0.0015, y / 0.005, 2);
                rgb = rgb.map(|c| c * f);
                (0.2, [0.0, 0.0])
            }
        };
        (rgb.map(|v| v.clamp(0.0, 1.0)), spec, bump)
    }

    /// Renders the frame's linear radiance under a white light from `pose` (true pose).
    pub fn render_radiance(&self, k: &Intrinsics, pose: &Pose) -> RadianceImage {
        let (w, h) = (k.width as usize, k.height as usize);
        let cam_in_phantom = self.wound.phantom_from_world().compose(pose);
        let o = cam_in_phantom.position();
        let body = self.wound.spec().body;
        let pal = &self.palette;
        let mut data = vec![[0.02f32; 3]; w * h];
        let (cxn, cyn) = (k.cx, k.cy);
        let rmax2 = (cxn * cxn + cyn * cyn).max(1.0);
        for j in 0..h {
            for i in 0..w {
                let dir = cam_in_phantom.rotate(k.ray(i as f64, j as f64));
                let surface = self.wound.intersect(o, dir);
                let card = self.card_hit(o, dir).filter(|(t, _)| surface.is_none_or(|ts| *t <= ts + 1e-4));
                let Some(t) = card.map(|c| c.0).or(surface) else { continue };
                let p = o + dir * t;
                let to_cam = (o - p).normalized();
                let vignette = 1.0 - 0.25 * (((i as f64 - cxn).powi(2) + (j as f64 - cyn).powi(2)) / rmax2);
                let foot = body.foot(p).filter(|f| f.2 > -0.002);
                let (albedo, spec, n) = match (card, foot) {
                    // The card: matte, facing up from the tangent plane.
                    (Some((_, albedo)), _) => (albedo, 0.0, Vec3::new(0.0, 0.0, 1.0)),
                    (None, Some((x, y, _))) => {
                        let (albedo, spec, bump) = self.material(x, y);
                        let hh = 5e-5;
                        let dx = self.surface(x + hh, y) - self.surface(x - hh, y);
                        let dy = self.surface(x, y + hh) - self.surface(x, y - hh);
                        let mut n = dx.cross(dy).normalized();
                        if n.dot(to_cam) < 0.0 {
                            n = -n;
                        }
                        let t1 = dx.normalized();
                        let t2 = n.cross(t1);
                        let n = (n + t1 * bump[0] + t2 * bump[1]).normalized();
                        (albedo, spec, n)
                    }
                    // The floor behind.
                    (None, None) => ([0.25, 0.24, 0.22], 0.0, Vec3::new(0.0, 0.0, 1.0)),
                };
                let grad = (1.0 + pal.gradient * p.dot(pal.gradient_dir) / 0.04).clamp(0.6, 1.4);
                let ndl = n.dot(pal.key_dir).max(0.0);
                let half = (pal.key_dir + to_cam).normalized();
                let highlight = spec * n.dot(half).max(0.0).powi(60) * pal.key * 3.0;
                let light = (pal.ambient + pal.key * ndl) * grad * vignette;
                data[j * w + i] = [0, 1, 2].map(|c| (albedo[c] * light + highlight * grad * vignette) as f32);
            }
        }
        RadianceImage { width: w, height: h, data }
    }

    /// Where the ray from `o` along `dir` (phantom frame) meets the card's face, and the
    /// reflectance there.
    fn card_hit(&self, o: Vec3, dir: Vec3) -> Option<(f64, [f64; 3])> {
        let card = self.card.as_ref()?;
        if dir.z.abs() < 1e-9 {
            return None;
        }
        let t = (CARD_THICKNESS_M - o.z) / dir.z;
        if t <= 0.0 {
            return None;
        }
        let p = o + dir * t;
        card.reflectance(p.x, p.y).map(|r| (t, r))
    }

    /// Renders a whole capture: the depth scan along the seeded trajectory, and the
    /// radiance of every `colour_every`-th frame at `colour_scale` times the depth
    /// resolution, from the true pose.
    pub fn scan(
        &self,
        config: &ScanConfig,
        options: &TrajectoryOptions,
        colour_every: usize,
        colour_scale: f64,
    ) -> ColourScan {
        let scan = self.wound.scan(config, options);
        let k = config.intrinsics;
        let ck = k.scaled(
            (f64::from(k.width) * colour_scale).round() as u32,
            (f64::from(k.height) * colour_scale).round() as u32,
        );
        let colour = (0..scan.frames.len())
            .filter(|i| i % colour_every.max(1) == colour_every.max(1) / 2)
            .map(|i| (i, self.render_radiance(&ck, &scan.true_poses[i])))
            .collect();
        ColourScan { scan, colour_intrinsics: ck, colour }
    }
}

/// 4096 standard normal deviates (a fixed seed): sensor noise draws from it by a random
/// index, which is much cheaper than Box–Muller per channel.
fn gaussian_table() -> &'static [f64; 4096] {
    static T: std::sync::OnceLock<[f64; 4096]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(0x006e_6f69_7365);
        std::array::from_fn(|_| gaussian(&mut rng))
    })
}

fn hash(seed: u64, i: i64, j: i64) -> f64 {
    let mut h = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Smooth value noise in −1..1 with unit lattice spacing.
fn noise(seed: u64, x: f64, y: f64) -> f64 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (i, j) = (x0 as i64, y0 as i64);
    let a = hash(seed, i, j) + sx * (hash(seed, i + 1, j) - hash(seed, i, j));
    let b = hash(seed, i, j + 1) + sx * (hash(seed, i + 1, j + 1) - hash(seed, i, j + 1));
    a + sy * (b - a)
}

/// Fractal sum of `octaves` of [`noise`], about −1..1.
fn fbm(seed: u64, x: f64, y: f64, octaves: u32) -> f64 {
    let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * noise(seed.wrapping_add(u64::from(o) * 1013), x * f + 0.37 * f64::from(o), y * f);
        norm += amp;
        amp *= 0.5;
        f *= 2.0;
    }
    sum / norm * 1.6
}

#[cfg(test)]
mod tests {
    use super::super::family;
    use super::*;

    fn phantom(map: TissueMap) -> ColourPhantom {
        let case = family::punch_forearm();
        let spec = WoundSpec { cavity: super::super::cavity::Cavity { ..case.spec.cavity.clone() }, ..case.spec };
        ColourPhantom::new(spec, Appearance { skin_srgb: SKIN_TONES[1], map, seed: 1 })
    }

    #[test]
    fn truth_shares_sum_to_the_bed_area() {
        let p = phantom(maps::mixed_quadrants());
        let t = p.tissue_truth();
        let bed = p.wound.truth().bed_area_mm2;
        assert!((t.total_mm2 - bed).abs() / bed < 0.01, "{} vs {bed}", t.total_mm2);
        for c in [TissueClass::Granulation, TissueClass::Slough, TissueClass::Eschar, TissueClass::Epithelial] {
            assert!(t.percent(c) > 3.0, "{c:?} {}", t.percent(c));
        }
        assert!(t.area_mm2[TissueClass::Other.index()] == 0.0);
    }

    #[test]
    fn a_single_class_map_is_all_that_class() {
        let map = TissueMap { name: "g".into(), base: TissueClass::Slough, regions: vec![], seed: 0 };
        let p = phantom(map);
        assert!((p.tissue_truth().percent(TissueClass::Slough) - 100.0).abs() < 1e-9);
        assert_eq!(p.class_at(0.0, 0.0), Some(TissueClass::Slough));
        assert_eq!(p.class_at(0.05, 0.0), None);
    }
}
