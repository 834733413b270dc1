//! The wound-phantom family: named classes (the failure classes and the corners of
//! the space) and a Latin-hypercube sample over the whole space.
//!
//! The space (issue #23): openings 8–60 mm, depths 1–10 mm, wall angles 20–90°, flat,
//! rounded and sloped beds, round, elliptical and lobed outlines, skin from flat to tightly
//! curved in one or two directions (radii from 25 mm), body parts that fill little of the
//! frame. A wound never wraps round a limb: opening ≤ 1.2 × the smallest skin radius.
//! `docs/phantoms.md` lists the classes and how to run them.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::body::Body;
use super::cavity::{Bed, Cavity, Outline};
use super::presets::default_placement;
use super::wound::WoundSpec;
use super::TrajectoryOptions;

/// One phantom of the family with the way it is scanned.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Stable name (`punch-forearm`, `s23-4`, …).
    pub name: String,
    /// The phantom.
    pub spec: WoundSpec,
    /// How the camera moves (the presets' arc unless the class says otherwise).
    pub trajectory: TrajectoryOptions,
}

impl Case {
    /// One line describing the case for reports.
    pub fn describe(&self) -> String {
        let bg = self.spec.background_m.map(|b| format!(" + floor {:.2} m below", b)).unwrap_or_default();
        format!("{}: {} on {}{bg}", self.name, self.spec.cavity.label(), self.spec.body.label())
    }
}

/// Fillet of the wall–bed corner used by the family, metres of depth.
pub const FILLET_M: f64 = 0.0002;

fn cavity(outline: Outline, depth_mm: f64, wall_deg: f64, bed: Bed, orientation: f64) -> Cavity {
    Cavity { outline, orientation, depth_m: depth_mm * 1e-3, wall_deg, bed, fillet_m: FILLET_M }
}

fn case(name: &str, body: Body, cavity: Cavity, background_m: Option<f64>) -> Case {
    Case {
        name: name.to_string(),
        spec: WoundSpec { body, cavity, background_m, world_from_phantom: default_placement() },
        trajectory: TrajectoryOptions::default(),
    }
}

fn circle(opening_mm: f64) -> Outline {
    Outline::Circle { radius: opening_mm * 0.5e-3 }
}

fn ellipse(long_mm: f64, short_mm: f64) -> Outline {
    Outline::Ellipse { semi_major: long_mm * 0.5e-3, semi_minor: short_mm * 0.5e-3 }
}

/// An ellipsoid body whose principal skin radii at the pole are `r1_mm` (along x) and
/// `r2_mm` (along y), with its z semi-axis `c_mm`.
fn ellipsoid_with_radii(r1_mm: f64, r2_mm: f64, c_mm: f64) -> Body {
    let c = c_mm * 1e-3;
    Body::Ellipsoid { a: (r1_mm * 1e-3 * c).sqrt(), b: (r2_mm * 1e-3 * c).sqrt(), c }
}

/// Sacrum-like lobed outline, about 60 mm across at its widest.
fn sacrum_outline() -> Outline {
    Outline::Lobed { mean_radius: 0.0245, harmonics: vec![(2, 0.14, 0.4), (3, 0.07, 1.3), (5, 0.03, 2.0)] }
}

/// The punched forearm wound: circle 14 mm, 3 mm deep, 88° walls, flat bed, on a
/// 38 mm limb.
pub fn punch_forearm() -> Case {
    case(
        "punch-forearm",
        Body::Cylinder { radius: 0.038, half_length: None },
        cavity(circle(14.0), 3.0, 88.0, Bed::Flat, 0.0),
        None,
    )
}

/// The sacrum: a lobed wound about 60 mm across, 2 mm deep with 25° walls, on
/// gently doubly-curved skin (radii 90 × 140 mm at the wound, on a body about 38 × 47 cm
/// across, so it fills the frame as a back does).
pub fn sacrum_lobed() -> Case {
    case(
        "sacrum-lobed",
        ellipsoid_with_radii(90.0, 140.0, 400.0),
        cavity(sacrum_outline(), 2.0, 25.0, Bed::Flat, 0.3),
        None,
    )
}

/// Every named class (`docs/phantoms.md`, table "Named classes").
pub fn named() -> Vec<Case> {
    vec![
        punch_forearm(),
        case(
            "punch-small",
            Body::Cylinder { radius: 0.025, half_length: Some(0.035) },
            cavity(circle(8.0), 2.0, 90.0, Bed::Flat, 0.0),
            None,
        ),
        sacrum_lobed(),
        case(
            "heel",
            Body::Ellipsoid { a: 0.035, b: 0.045, c: 0.030 },
            cavity(ellipse(20.0, 14.0), 4.0, 60.0, Bed::Sloped { tilt: 0.3, direction: 1.0 }, 0.4),
            Some(0.65),
        ),
        case("abrasion", Body::Plane, cavity(ellipse(40.0, 25.0), 1.0, 20.0, Bed::Flat, 0.6), None),
        case(
            "crater",
            Body::Cylinder { radius: 0.060, half_length: None },
            cavity(circle(20.0), 10.0, 75.0, Bed::Rounded { power: 3.0 }, 0.0),
            None,
        ),
        case(
            "saddle-oblique",
            Body::Saddle { r1: 0.060, r2: -0.080 },
            cavity(ellipse(16.0, 10.0), 5.0, 45.0, Bed::Sloped { tilt: 0.25, direction: 2.5 }, 0.7),
            None,
        ),
        case(
            "lobed-steep",
            Body::Cylinder { radius: 0.045, half_length: None },
            cavity(
                Outline::Lobed { mean_radius: 0.0085, harmonics: vec![(3, 0.12, 0.2), (4, 0.05, 1.1)] },
                4.0,
                80.0,
                Bed::Flat,
                0.9,
            ),
            None,
        ),
        case("wide-flat", Body::Plane, cavity(circle(60.0), 3.0, 45.0, Bed::Flat, 0.0), None),
        case("small-shallow", Body::Plane, cavity(circle(8.0), 1.0, 30.0, Bed::Rounded { power: 4.0 }, 0.0), None),
        case(
            "wrap",
            Body::Cylinder { radius: 0.030, half_length: None },
            cavity(ellipse(30.0, 20.0), 1.5, 30.0, Bed::Flat, 0.0),
            None,
        ),
        case(
            "heel-tight",
            ellipsoid_with_radii(30.0, 45.0, 30.0),
            cavity(circle(15.0), 3.0, 70.0, Bed::Flat, 0.0),
            None,
        ),
    ]
}

/// The named class called `name`.
pub fn by_name(name: &str) -> Option<Case> {
    named().into_iter().find(|c| c.name == name)
}

/// Dimensions of the Latin hypercube.
const DIMS: usize = 10;

/// `n` cases drawn from the whole space by a Latin hypercube (each dimension's range cut
/// into `n` strata, each stratum used once), deterministic for `seed`. Radii are
/// log-uniform in 25–150 mm and raised where needed so the opening stays ≤ 1.2 × the
/// smallest radius; the aim is off the wound by up to 6 mm.
pub fn sampled(seed: u64, n: usize) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6661_6d69_6c79);
    let strata: Vec<Vec<usize>> = (0..DIMS)
        .map(|_| {
            let mut p: Vec<usize> = (0..n).collect();
            p.shuffle(&mut rng);
            p
        })
        .collect();
    (0..n)
        .map(|i| {
            let mut u = [0.0; DIMS];
            for (d, v) in u.iter_mut().enumerate() {
                *v = (strata[d][i] as f64 + rng.gen::<f64>()) / n as f64;
            }
            sampled_case(format!("s{seed}-{i}"), &u, &mut rng)
        })
        .collect()
}

fn pick<T: Copy>(u: f64, items: &[T]) -> T {
    items[((u * items.len() as f64) as usize).min(items.len() - 1)]
}

fn sampled_case(name: String, u: &[f64; DIMS], rng: &mut StdRng) -> Case {
    let opening_mm = 8.0 + 52.0 * u[0];
    let depth_mm = 1.0 + 9.0 * u[1];
    let wall_deg = 20.0 + 70.0 * u[2];
    let bed = match pick(u[3], &[0, 1, 2]) {
        0 => Bed::Flat,
        1 => Bed::Rounded { power: rng.gen_range(2.0..6.0) },
        _ => Bed::Sloped { tilt: rng.gen_range(0.1..0.4), direction: rng.gen_range(0.0..std::f64::consts::TAU) },
    };
    let half = opening_mm * 0.5e-3;
    let outline = match pick(u[4], &[0, 1, 2]) {
        0 => Outline::Circle { radius: half },
        1 => {
            let ratio = rng.gen_range(0.55..0.9);
            Outline::Ellipse { semi_major: half, semi_minor: half * ratio }
        }
        _ => {
            let harmonics = vec![
                (2, rng.gen_range(0.05..0.15), rng.gen_range(0.0..6.3)),
                (3, rng.gen_range(0.03..0.1), rng.gen_range(0.0..6.3)),
            ];
            let peak: f64 = 1.0 + harmonics.iter().map(|h| h.1).sum::<f64>();
            Outline::Lobed { mean_radius: half / peak, harmonics }
        }
    };
    let log_radius = |v: f64| (25.0f64.ln() + (150.0f64.ln() - 25.0f64.ln()) * v).exp();
    let r_floor = opening_mm / 1.2;
    let (r1, r2) = (log_radius(u[6]).max(r_floor), log_radius(u[7]).max(r_floor));
    let body = match pick(u[5], &[0, 1, 2, 3]) {
        0 => Body::Plane,
        1 => Body::Cylinder { radius: r1 * 1e-3, half_length: None },
        // The z semi-axis sets the body's size for the same radii at the wound: from a
        // heel-sized part (0.6 × the smaller radius) to a back-sized one (4 ×).
        2 => ellipsoid_with_radii(r1, r2, r1.min(r2) * rng.gen_range(0.6..4.0)),
        _ => Body::Saddle { r1: r1 * 1e-3, r2: -r2 * 1e-3 },
    };
    let orientation = u[8] * std::f64::consts::PI;
    let mut c = case(&name, body, cavity(outline, depth_mm, wall_deg, bed, orientation), None);
    c.trajectory.aim_offset_m = 0.006 * u[9];
    c
}
