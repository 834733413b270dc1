//! A family phantom: a [`Body`] with a general [`Cavity`] cut at its pole, optionally a
//! background plane far behind, placed in the world. It renders and scans through the
//! same sensor model and trajectory code as the presets.

use rand::rngs::StdRng;

use super::body::Body;
use super::cavity::{Carved, Cavity};
use super::{
    apply_sensor, project_outline, render_clean, scan_along, trajectory, GroundTruth, NoiseModel, PhantomScan,
    ScanConfig, Surface, TrajectoryOptions,
};
use crate::geometry::{DepthImage, Intrinsics, Pose, Vec3};

/// Ray-march step through the cavity, metres (as the presets).
const MARCH_STEP_M: f64 = 0.00015;
/// Times a ray that leaves the skin again through the opening (concave skin) is followed.
const MAX_REENTRIES: usize = 3;

/// Everything that defines a family phantom.
#[derive(Debug, Clone, PartialEq)]
pub struct WoundSpec {
    /// The body part (wound at its pole, outward normal +z).
    pub body: Body,
    /// The cavity, in the tangent plane at the pole.
    pub cavity: Cavity,
    /// A background plane (a floor or table) this far behind the wound along −z, metres.
    pub background_m: Option<f64>,
    /// Where the phantom sits in the world (maps phantom coordinates to world).
    pub world_from_phantom: Pose,
}

/// A family phantom ready to render, with its ground truth computed once.
#[derive(Debug, Clone)]
pub struct WoundPhantom {
    spec: WoundSpec,
    carved: Carved,
    phantom_from_world: Pose,
    max_depth: f64,
    truth: GroundTruth,
}

impl WoundPhantom {
    /// Prepares the cavity and computes the ground truth.
    pub fn new(spec: WoundSpec) -> Self {
        let carved = Carved::new(spec.cavity.clone());
        let truth = super::truth::wound_truth(&spec.body, &carved, &spec.world_from_phantom);
        WoundPhantom {
            phantom_from_world: spec.world_from_phantom.inverse(),
            max_depth: truth.max_depth_mm / 1000.0,
            spec,
            carved,
            truth,
        }
    }

    /// The specification.
    pub fn spec(&self) -> &WoundSpec {
        &self.spec
    }

    /// Ground truth.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// The carved cavity (its depth function and outline).
    pub fn carved(&self) -> &Carved {
        &self.carved
    }

    /// Depth below the skin at tangent-plane point `(x, y)` (phantom frame), metres.
    pub fn depth_at(&self, x: f64, y: f64) -> f64 {
        self.carved.depth(x, y)
    }

    /// Points of the true outline (lifted onto the skin) in world coordinates, `n`
    /// samples counter-clockwise.
    pub fn outline_world(&self, n: usize) -> Vec<Vec3> {
        (0..n)
            .filter_map(|i| {
                let (x, y) = self.carved.outline_point(i as f64 * std::f64::consts::TAU / n as f64);
                self.spec.body.skin_point(x, y)
            })
            .map(|p| self.spec.world_from_phantom.transform(p))
            .collect()
    }

    /// The true outline projected into an image: what a clinician would trace. Points
    /// behind the camera are skipped.
    pub fn outline_in_image(&self, intrinsics: &Intrinsics, pose: &Pose, n: usize) -> Vec<[f64; 2]> {
        project_outline(self.outline_world(n), intrinsics, pose)
    }

    /// Renders the exact depth map seen from `pose`; 0 where nothing is hit.
    pub fn render_clean(&self, intrinsics: &Intrinsics, pose: &Pose) -> Vec<f32> {
        render_clean(self, intrinsics, pose)
    }

    /// Renders a depth map from the true `pose` and applies the sensor model.
    pub fn render(&self, intrinsics: &Intrinsics, pose: &Pose, noise: &NoiseModel, rng: &mut StdRng) -> DepthImage {
        apply_sensor(&self.render_clean(intrinsics, pose), intrinsics, noise, rng)
    }

    /// A seeded hand-held trajectory around the wound.
    pub fn trajectory(&self, seed: u64, frames: usize, options: &TrajectoryOptions) -> Vec<Pose> {
        trajectory(&self.spec.world_from_phantom, seed, frames, options)
    }

    /// Renders a whole capture along the seeded trajectory.
    pub fn scan(&self, config: &ScanConfig, options: &TrajectoryOptions) -> PhantomScan {
        scan_along(self, self.trajectory(config.seed, config.frames, options), config, self.truth)
    }

    /// Where the ray enters the cavity's surface, marching from the skin entry `ts`.
    fn march_cavity(&self, o: Vec3, dir: Vec3, ts: f64) -> Result<f64, Option<f64>> {
        let body = &self.spec.body;
        // f > 0 in air (above the cavity surface), < 0 in material.
        let f = |t: f64| -> Option<f64> {
            let (x, y, depth) = body.foot(o + dir * t)?;
            Some(self.carved.depth(x, y) - depth)
        };
        let norm = dir.norm();
        let step = MARCH_STEP_M / norm;
        let max_steps = ((4.0 * self.carved.bound() + 4.0 * self.max_depth + 0.004) / MARCH_STEP_M) as usize;
        // Along the ray, `f` falls by at most (1 + slope of D)·(1 − κ·depth)⁻¹ per metre
        // (≤ 2·(1 + slope) while the depth is under half the skin radius): a step of half
        // f / (1 + slope) cannot jump over the surface. Never below the presets' fixed step.
        let slope = self.carved.slope_bound();
        let safe = |v: f64| if slope.is_finite() { 0.5 * v / (1.0 + slope) / norm } else { 0.0 };
        let mut lo = ts;
        let mut t = ts;
        let mut v = f(ts).unwrap_or(0.0);
        for _ in 0..max_steps {
            t += step.max(safe(v));
            let p = o + dir * t;
            let Some((x, y, depth)) = body.foot(p) else { return Err(None) };
            v = self.carved.depth(x, y) - depth;
            if v < 0.0 {
                let mut hi = t;
                for _ in 0..40 {
                    let mid = 0.5 * (lo + hi);
                    match f(mid) {
                        Some(m) if m >= 0.0 => lo = mid,
                        _ => hi = mid,
                    }
                }
                return Ok(0.5 * (lo + hi));
            }
            if depth < -MARCH_STEP_M {
                // Back above the skin through the opening: look for the next entry.
                return Err(Some(t));
            }
            lo = t;
        }
        Err(None)
    }

    fn background_hit(&self, o: Vec3, dir: Vec3) -> Option<f64> {
        let z = -self.spec.background_m?;
        if dir.z >= 0.0 {
            return None;
        }
        let t = (z - o.z) / dir.z;
        (t > 0.0).then_some(t)
    }
}

impl Surface for WoundPhantom {
    fn phantom_from_world(&self) -> &Pose {
        &self.phantom_from_world
    }

    fn intersect(&self, o: Vec3, dir: Vec3) -> Option<f64> {
        let body = &self.spec.body;
        let mut start = 0.0;
        for _ in 0..=MAX_REENTRIES {
            let origin = o + dir * start;
            let Some(te) = body.enter(origin, dir) else { break };
            let ts = start + te;
            let p = o + dir * ts;
            if self.carved.depth(p.x, p.y) <= 0.0 {
                return Some(ts);
            }
            match self.march_cavity(o, dir, ts) {
                Ok(t) => return Some(t),
                Err(Some(t)) => start = t,
                Err(None) => break,
            }
        }
        self.background_hit(o, dir)
    }
}
