//! Synthetic wound scans with known ground truth.
//!
//! A phantom is a skin surface with a cavity cut into it, rendered by ray casting the
//! exact geometry from a seeded camera trajectory, then degraded with an
//! iPhone-LiDAR-like noise model (distance-dependent noise, quantisation, edge dropout,
//! confidence levels, pose jitter). Ground truth is computed from the same analytic
//! description by fine numerical integration; every measurement the `measure` module
//! reports has its counterpart in [`GroundTruth`], with identical definitions (see
//! `docs/measurement.md`). Everything is deterministic for a given seed.
//!
//! Two generations live here:
//!
//! - the **presets** ([`Phantom`], [`PhantomSpec`], [`presets`]): a flat plane or a
//!   cylindrical limb, the cavity described in developed skin coordinates `(u, v)` (arc
//!   length on the skin, so the cylinder unrolls isometrically) as a star-shaped outline
//!   `r(φ)` and a cap depth profile along the inward skin normal. Their frames are fixed
//!   bit for bit (`recon/tests/phantom_family.rs`);
//! - the **family** ([`wound::WoundPhantom`], [`family`]): any [`body::Body`] (plane,
//!   finite or infinite cylinder, ellipsoid, saddle; optionally a floor behind) with a
//!   general [`cavity::Cavity`] (circle, ellipse or lobed outline in the tangent plane,
//!   wall angle 20–90°, flat, rounded or sloped bed), its truth (`truth.rs`), and
//!   [`harness::run`], which scans a family case through the server's own policy.
//!   `docs/phantoms.md` documents the family.

pub mod body;
pub mod cavity;
pub mod colour;
pub mod family;
pub mod harness;
pub mod tissue;
mod truth;
pub mod wound;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::geometry::{DepthImage, Frame, Intrinsics, Pose, Vec3};

/// The skin surface around the wound, in phantom coordinates (skin normal +z at the
/// wound centre, which is the origin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SkinShape {
    /// The plane z = 0.
    Plane,
    /// A limb: cylinder of this radius (metres) with its axis along x through
    /// (0, 0, -radius), so its top line is the x axis.
    Cylinder {
        /// Limb radius, metres.
        radius: f64,
    },
}

/// The cavity, described in developed skin coordinates around the wound centre.
#[derive(Debug, Clone, PartialEq)]
pub enum CavityShape {
    /// A spherical cap: circular outline of `radius`, deepest point `depth` (metres).
    SphericalCap {
        /// Outline radius, metres.
        radius: f64,
        /// Depth at the centre, metres.
        depth: f64,
    },
    /// An ellipsoidal cap: elliptical outline with these semi-axes; `wall` in (0, 1)
    /// sets the wall steepness (0 = vertical walls at the rim, →1 = shallow dish).
    EllipsoidalCap {
        /// Outline semi-axis along the orientation direction, metres.
        semi_major: f64,
        /// Outline semi-axis across, metres.
        semi_minor: f64,
        /// Depth at the centre, metres.
        depth: f64,
        /// Wall parameter k of the cap profile.
        wall: f64,
    },
    /// An irregular wound: outline `r(φ) = mean_radius · (1 + Σ a_n cos(nφ + p_n))`,
    /// cap profile with wall parameter `wall`, tilted bed (`tilt` fraction of extra
    /// depth towards angle `tilt_angle`), so the deepest point is off-centre.
    Irregular {
        /// Mean outline radius, metres.
        mean_radius: f64,
        /// Harmonics `(n, amplitude, phase)`.
        harmonics: Vec<(u32, f64, f64)>,
        /// Depth scale, metres.
        depth: f64,
        /// Wall parameter k of the cap profile.
        wall: f64,
        /// Relative extra depth towards `tilt_angle` at the rim.
        tilt: f64,
        /// Direction of the tilt, radians.
        tilt_angle: f64,
    },
}

/// A complete phantom: skin, cavity, how the cavity is rotated on the skin, and where
/// the whole thing sits in the world.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSpec {
    /// Skin surface.
    pub skin: SkinShape,
    /// Cavity.
    pub cavity: CavityShape,
    /// Rotation of the cavity's outline on the skin (radians, from the u axis).
    pub orientation: f64,
    /// Where the phantom sits in the world (maps phantom coordinates to world).
    pub world_from_phantom: Pose,
}

/// Ground-truth measurements, in the units clinicians read (mm, mm², mm³).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Area enclosed by the outline on the skin surface.
    pub outline_area_mm2: f64,
    /// Area of the wound bed surface (the cavity's inner surface).
    pub bed_area_mm2: f64,
    /// Length of the outline on the skin.
    pub perimeter_mm: f64,
    /// Longest straight distance between two outline points.
    pub length_mm: f64,
    /// Extent of the outline perpendicular to the length, within the skin's tangent plane.
    pub width_mm: f64,
    /// Deepest point below the skin, along the skin normal.
    pub max_depth_mm: f64,
    /// Volume divided by outline area.
    pub mean_depth_mm: f64,
    /// Volume between the skin surface and the wound bed.
    pub volume_mm3: f64,
    /// Wound centre on the skin surface, world coordinates (metres).
    pub target_world: Vec3,
    /// Outward skin normal at the centre, world coordinates.
    pub normal_world: Vec3,
}

/// Geometry of a wound in SI units (metres, m², m³) in the phantom's frame, before it is
/// turned into [`GroundTruth`].
pub(crate) struct TruthSi {
    pub area: f64,
    pub bed_area: f64,
    pub perimeter: f64,
    pub length: f64,
    pub width: f64,
    pub max_depth: f64,
    pub volume: f64,
}

impl GroundTruth {
    /// The clinician's units, and the wound centre (the phantom's origin, normal +z) in
    /// world coordinates.
    pub(crate) fn from_si(t: TruthSi, world_from_phantom: &Pose) -> GroundTruth {
        GroundTruth {
            outline_area_mm2: t.area * 1e6,
            bed_area_mm2: t.bed_area * 1e6,
            perimeter_mm: t.perimeter * 1e3,
            length_mm: t.length * 1e3,
            width_mm: t.width * 1e3,
            max_depth_mm: t.max_depth * 1e3,
            mean_depth_mm: t.volume / t.area * 1e3,
            volume_mm3: t.volume * 1e9,
            target_world: world_from_phantom.transform(Vec3::ZERO),
            normal_world: world_from_phantom.rotate(Vec3::new(0.0, 0.0, 1.0)),
        }
    }
}

/// World points projected into an image (what a clinician would trace); points behind
/// the camera are skipped.
pub(crate) fn project_outline(world: Vec<Vec3>, intrinsics: &Intrinsics, pose: &Pose) -> Vec<[f64; 2]> {
    world.into_iter().filter_map(|p| intrinsics.project(pose.inverse_transform(p))).map(|(u, v)| [u, v]).collect()
}

/// Depth noise and artefacts of the simulated sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseModel {
    /// Depth noise standard deviation at `reference_depth_m` for high-confidence pixels.
    pub sigma_at_reference_m: f64,
    /// Reference depth for the noise law, metres.
    pub reference_depth_m: f64,
    /// Noise grows as `(depth / reference)^exponent`.
    pub exponent: f64,
    /// Noise multiplier per confidence level 0, 1, 2.
    pub confidence_multiplier: [f64; 3],
    /// Depth quantisation step, metres (0 disables).
    pub quantisation_m: f64,
    /// Probability that a pixel at a depth edge is dropped.
    pub edge_dropout: f64,
    /// Depth jump to a neighbour that marks a pixel as an edge, metres.
    pub edge_threshold_m: f64,
    /// Probability that any pixel is dropped.
    pub random_dropout: f64,
    /// Standard deviation of the reported camera position error, metres.
    pub pose_jitter_translation_m: f64,
    /// Standard deviation of the reported camera rotation error, degrees.
    pub pose_jitter_rotation_deg: f64,
}

impl NoiseModel {
    /// iPhone-LiDAR-like defaults: 1 mm at 0.25 m growing quadratically, 0.25 mm
    /// quantisation, edge dropout, 0.25 mm / 0.03° pose jitter.
    pub fn iphone() -> Self {
        NoiseModel {
            sigma_at_reference_m: 0.001,
            reference_depth_m: 0.25,
            exponent: 2.0,
            confidence_multiplier: [3.0, 1.5, 1.0],
            quantisation_m: 0.00025,
            edge_dropout: 0.5,
            edge_threshold_m: 0.006,
            random_dropout: 0.005,
            pose_jitter_translation_m: 0.00025,
            pose_jitter_rotation_deg: 0.03,
        }
    }

    /// No noise at all (exact depth, exact poses, confidence still computed).
    pub fn none() -> Self {
        NoiseModel {
            sigma_at_reference_m: 0.0,
            reference_depth_m: 0.25,
            exponent: 2.0,
            confidence_multiplier: [1.0; 3],
            quantisation_m: 0.0,
            edge_dropout: 0.0,
            edge_threshold_m: 0.006,
            random_dropout: 0.0,
            pose_jitter_translation_m: 0.0,
            pose_jitter_rotation_deg: 0.0,
        }
    }

    /// Standard deviation of depth noise at `depth_m` for a confidence level.
    pub fn sigma(&self, depth_m: f64, confidence: u8) -> f64 {
        let c = usize::from(confidence.min(2));
        self.sigma_at_reference_m
            * (depth_m / self.reference_depth_m).powf(self.exponent)
            * self.confidence_multiplier[c]
    }
}

/// Parameters of a simulated capture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanConfig {
    /// Seed for the trajectory, the noise and the pose jitter.
    pub seed: u64,
    /// Number of frames.
    pub frames: usize,
    /// Depth camera intrinsics.
    pub intrinsics: Intrinsics,
    /// Sensor model.
    pub noise: NoiseModel,
}

impl ScanConfig {
    /// 60 iPhone-like 256×192 frames with the iPhone noise model.
    pub fn iphone(seed: u64) -> Self {
        ScanConfig { seed, frames: 60, intrinsics: Intrinsics::iphone_256x192(), noise: NoiseModel::iphone() }
    }
}

/// A rendered capture: frames with the *reported* (jittered) poses, the true poses,
/// and the ground truth.
#[derive(Debug, Clone)]
pub struct PhantomScan {
    /// Frames as the phone would send them.
    pub frames: Vec<Frame>,
    /// The exact poses the frames were rendered from.
    pub true_poses: Vec<Pose>,
    /// Ground truth of the phantom.
    pub truth: GroundTruth,
}

/// A phantom ready to render, with its ground truth computed once.
#[derive(Debug, Clone)]
pub struct Phantom {
    spec: PhantomSpec,
    /// Wall parameter k of the cap profile.
    wall: f64,
    depth_scale: f64,
    bound_radius: f64,
    max_depth: f64,
    truth: GroundTruth,
    phantom_from_world: Pose,
}

/// Cap profile g_k(t): 1 at the centre, 0 at the rim, the cross-section of an
/// ellipsoid cut by a plane (k = 0: hemi-ellipsoid, larger k: shallower walls).
fn cap_profile(t: f64, k: f64) -> f64 {
    if t >= 1.0 {
        return 0.0;
    }
    ((1.0 - t * t * (1.0 - k * k)).max(0.0).sqrt() - k) / (1.0 - k)
}

/// Standard normal sample (Box–Muller), avoiding an extra dependency.
pub(crate) fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Phantom {
    /// Prepares a phantom and computes its ground truth.
    pub fn new(spec: PhantomSpec) -> Self {
        let (wall, depth_scale) = match &spec.cavity {
            CavityShape::SphericalCap { radius, depth } => {
                let rs = (radius * radius + depth * depth) / (2.0 * depth);
                ((rs - depth) / rs, *depth)
            }
            CavityShape::EllipsoidalCap { depth, wall, .. } => (*wall, *depth),
            CavityShape::Irregular { depth, wall, .. } => (*wall, *depth),
        };
        let mut p = Phantom {
            phantom_from_world: spec.world_from_phantom.inverse(),
            spec,
            wall,
            depth_scale,
            bound_radius: 0.0,
            max_depth: 0.0,
            truth: GroundTruth {
                outline_area_mm2: 0.0,
                bed_area_mm2: 0.0,
                perimeter_mm: 0.0,
                length_mm: 0.0,
                width_mm: 0.0,
                max_depth_mm: 0.0,
                mean_depth_mm: 0.0,
                volume_mm3: 0.0,
                target_world: Vec3::ZERO,
                normal_world: Vec3::ZERO,
            },
        };
        p.bound_radius =
            (0..3600).map(|i| p.boundary(f64::from(i) * std::f64::consts::TAU / 3600.0)).fold(0.0, f64::max) * 1.001;
        p.truth = p.compute_truth();
        p.max_depth = p.truth.max_depth_mm / 1000.0;
        p
    }

    /// The specification this phantom was built from.
    pub fn spec(&self) -> &PhantomSpec {
        &self.spec
    }

    /// Ground truth.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Outline radius at angle `phi` in the cavity's own frame, metres.
    fn boundary(&self, phi: f64) -> f64 {
        match &self.spec.cavity {
            CavityShape::SphericalCap { radius, .. } => *radius,
            CavityShape::EllipsoidalCap { semi_major: a, semi_minor: b, .. } => {
                a * b / ((b * phi.cos()).powi(2) + (a * phi.sin()).powi(2)).sqrt()
            }
            CavityShape::Irregular { mean_radius, harmonics, .. } => {
                let s: f64 = harmonics.iter().map(|(n, a, p)| a * (f64::from(*n) * phi + p).cos()).sum();
                mean_radius * (1.0 + s)
            }
        }
    }

    /// Depth below the skin at polar position `(t = ρ / r(φ), φ)` in the cavity frame.
    fn depth_polar(&self, t: f64, phi: f64) -> f64 {
        let g = cap_profile(t, self.wall) * self.depth_scale;
        match &self.spec.cavity {
            CavityShape::Irregular { tilt, tilt_angle, .. } => g * (1.0 + tilt * t * (phi - tilt_angle).cos()),
            _ => g,
        }
    }

    /// Depth below the skin at developed skin coordinates `(u, v)`, metres (0 outside).
    pub fn depth_at(&self, u: f64, v: f64) -> f64 {
        let rho2 = u * u + v * v;
        if rho2 >= self.bound_radius * self.bound_radius {
            return 0.0;
        }
        let (s, c) = self.spec.orientation.sin_cos();
        let (x, y) = (u * c + v * s, -u * s + v * c);
        let phi = y.atan2(x);
        let t = rho2.sqrt() / self.boundary(phi);
        if t >= 1.0 {
            0.0
        } else {
            self.depth_polar(t, phi)
        }
    }

    /// Developed coordinates of the point at polar `(t, φ)` in the cavity frame.
    fn polar_to_uv(&self, t: f64, phi: f64) -> (f64, f64) {
        let rho = t * self.boundary(phi);
        let a = phi + self.spec.orientation;
        (rho * a.cos(), rho * a.sin())
    }

    /// Phantom-frame point at developed coordinates `(u, v)` and depth `d` below the skin.
    pub fn surface_point(&self, u: f64, v: f64, d: f64) -> Vec3 {
        match self.spec.skin {
            SkinShape::Plane => Vec3::new(u, v, -d),
            SkinShape::Cylinder { radius } => {
                let th = v / radius;
                let r = radius - d;
                Vec3::new(u, r * th.sin(), r * th.cos() - radius)
            }
        }
    }

    /// Points of the true outline in world coordinates (`n` samples, counter-clockwise).
    pub fn outline_world(&self, n: usize) -> Vec<Vec3> {
        (0..n)
            .map(|i| {
                let phi = i as f64 * std::f64::consts::TAU / n as f64;
                let (u, v) = self.polar_to_uv(1.0, phi);
                self.spec.world_from_phantom.transform(self.surface_point(u, v, 0.0))
            })
            .collect()
    }

    /// The true outline projected into an image: what a clinician would trace.
    /// Points behind the camera are skipped.
    pub fn outline_in_image(&self, intrinsics: &Intrinsics, pose: &Pose, n: usize) -> Vec<[f64; 2]> {
        project_outline(self.outline_world(n), intrinsics, pose)
    }

    fn compute_truth(&self) -> GroundTruth {
        let tau = std::f64::consts::TAU;
        let n_phi = 2048usize;
        let n_t = 400usize;
        let dphi = tau / n_phi as f64;
        let radius = match self.spec.skin {
            SkinShape::Plane => None,
            SkinShape::Cylinder { radius } => Some(radius),
        };
        let mut area = 0.0;
        let mut perimeter = 0.0;
        let mut volume = 0.0;
        let mut max_depth: f64 = 0.0;
        for i in 0..n_phi {
            let phi = (i as f64 + 0.5) * dphi;
            let r = self.boundary(phi);
            let h = 1e-6;
            let dr = (self.boundary(phi + h) - self.boundary(phi - h)) / (2.0 * h);
            area += 0.5 * r * r * dphi;
            perimeter += (r * r + dr * dr).sqrt() * dphi;
            let dt = 1.0 / n_t as f64;
            for j in 0..n_t {
                let t = (j as f64 + 0.5) * dt;
                let d = self.depth_polar(t, phi);
                max_depth = max_depth.max(d);
                let dv = match radius {
                    None => d,
                    Some(rr) => d - d * d / (2.0 * rr),
                };
                volume += dv * r * r * t * dt * dphi;
            }
        }
        // Exact maximum: refine along every direction on a finer grid.
        for i in 0..720 {
            let phi = f64::from(i) * tau / 720.0;
            for j in 0..=2000 {
                max_depth = max_depth.max(self.depth_polar(f64::from(j) / 2000.0, phi));
            }
        }

        // Bed area from a fine polar triangulation of the bed surface.
        let (m_phi, m_t) = (1024usize, 300usize);
        let point = |i: usize, j: usize| {
            let phi = (i % m_phi) as f64 * tau / m_phi as f64;
            let t = j as f64 / m_t as f64;
            let (u, v) = self.polar_to_uv(t, phi);
            self.surface_point(u, v, self.depth_polar(t, phi))
        };
        let mut bed_area = 0.0;
        let tri = |a: Vec3, b: Vec3, c: Vec3| 0.5 * (b - a).cross(c - a).norm();
        for i in 0..m_phi {
            for j in 0..m_t {
                let (p00, p10, p01, p11) = (point(i, j), point(i + 1, j), point(i, j + 1), point(i + 1, j + 1));
                bed_area += tri(p00, p10, p11) + tri(p00, p11, p01);
            }
        }

        // Length / width on the 3D outline (phantom frame: skin normal is +z at the centre).
        let outline: Vec<Vec3> = (0..2048)
            .map(|i| {
                let (u, v) = self.polar_to_uv(1.0, f64::from(i) * tau / 2048.0);
                self.surface_point(u, v, 0.0)
            })
            .collect();
        let (length, width) = length_width(&outline, Vec3::new(0.0, 0.0, 1.0));

        GroundTruth::from_si(
            TruthSi { area, bed_area, perimeter, length, width, max_depth, volume },
            &self.spec.world_from_phantom,
        )
    }

    /// Ray parameter `t` of the first hit of `o + t·dir` (phantom frame) with the surface.
    fn intersect(&self, o: Vec3, dir: Vec3) -> Option<f64> {
        let step = 0.00015 / dir.norm();
        match self.spec.skin {
            SkinShape::Plane => {
                if dir.z >= 0.0 {
                    return None;
                }
                let ts = -o.z / dir.z;
                if ts <= 0.0 {
                    return None;
                }
                let f = |t: f64| {
                    let p = o + dir * t;
                    p.z + self.depth_at(p.x, p.y)
                };
                self.march(ts, f, step, (self.max_depth + 0.002) / -dir.z)
            }
            SkinShape::Cylinder { radius } => {
                let oz = o.z + radius;
                let a = dir.y * dir.y + dir.z * dir.z;
                let b = 2.0 * (o.y * dir.y + oz * dir.z);
                let c = o.y * o.y + oz * oz - radius * radius;
                let disc = b * b - 4.0 * a * c;
                if a <= 0.0 || disc < 0.0 {
                    return None;
                }
                let ts = (-b - disc.sqrt()) / (2.0 * a);
                if ts <= 0.0 {
                    return None;
                }
                let f = |t: f64| {
                    let p = o + dir * t;
                    let zz = p.z + radius;
                    let r = (p.y * p.y + zz * zz).sqrt();
                    let v = radius * p.y.atan2(zz);
                    r - (radius - self.depth_at(p.x, v))
                };
                self.march(ts, f, step, 4.0 * (self.max_depth + 0.002) / dir.norm())
            }
        }
    }

    /// Marches from `t0` (where `f >= 0`) until `f < 0`, then bisects.
    fn march(&self, t0: f64, f: impl Fn(f64) -> f64, step: f64, max_len: f64) -> Option<f64> {
        let f0 = f(t0);
        if f0 <= 0.0 {
            return Some(t0);
        }
        let mut lo = t0;
        let mut t = t0;
        let end = t0 + max_len;
        while t < end {
            t += step;
            if f(t) < 0.0 {
                let mut hi = t;
                for _ in 0..30 {
                    let mid = 0.5 * (lo + hi);
                    if f(mid) >= 0.0 {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                return Some(0.5 * (lo + hi));
            }
            lo = t;
        }
        None
    }

    /// Renders the exact depth map (no noise) seen from `pose`; 0 where nothing is hit.
    pub fn render_clean(&self, intrinsics: &Intrinsics, pose: &Pose) -> Vec<f32> {
        render_clean(self, intrinsics, pose)
    }

    /// Renders a depth map from the true `pose` and applies the sensor model.
    pub fn render(&self, intrinsics: &Intrinsics, pose: &Pose, noise: &NoiseModel, rng: &mut StdRng) -> DepthImage {
        apply_sensor(&self.render_clean(intrinsics, pose), intrinsics, noise, rng)
    }

    /// A seeded hand-held trajectory: an arc around the wound at 0.2–0.35 m, tilted
    /// 10–40° from the skin normal, aimed near (not exactly at) the wound.
    pub fn trajectory(&self, seed: u64, frames: usize) -> Vec<Pose> {
        trajectory(&self.spec.world_from_phantom, seed, frames, &TrajectoryOptions::default())
    }

    /// Renders a whole capture: seeded trajectory, noisy frames, jittered reported poses.
    pub fn scan(&self, config: &ScanConfig) -> PhantomScan {
        scan_along(self, self.trajectory(config.seed, config.frames), config, self.truth)
    }
}

impl Surface for Phantom {
    fn phantom_from_world(&self) -> &Pose {
        &self.phantom_from_world
    }

    fn intersect(&self, o: Vec3, dir: Vec3) -> Option<f64> {
        Phantom::intersect(self, o, dir)
    }
}

/// Something a camera can see: a ray cast in phantom coordinates.
pub(crate) trait Surface {
    /// The inverse of the phantom's placement.
    fn phantom_from_world(&self) -> &Pose;
    /// Ray parameter `t` of the first hit of `o + t·dir` (phantom frame), if any.
    fn intersect(&self, o: Vec3, dir: Vec3) -> Option<f64>;
}

/// The exact depth map of `surface` seen from `pose`; 0 where nothing is hit.
pub(crate) fn render_clean(surface: &impl Surface, intrinsics: &Intrinsics, pose: &Pose) -> Vec<f32> {
    let (w, h) = (intrinsics.width as usize, intrinsics.height as usize);
    let cam_in_phantom = surface.phantom_from_world().compose(pose);
    let o = cam_in_phantom.position();
    let mut out = vec![0.0f32; w * h];
    for j in 0..h {
        for i in 0..w {
            let r = intrinsics.ray(i as f64, j as f64);
            let dir = cam_in_phantom.rotate(r);
            if let Some(t) = surface.intersect(o, dir) {
                // `r` has unit z, so the ray parameter is the camera-z depth.
                out[j * w + i] = t as f32;
            }
        }
    }
    out
}

/// Applies the sensor model to an exact depth map: confidence from the local surface
/// slope, edge and random dropout, distance-dependent noise and quantisation.
pub(crate) fn apply_sensor(clean: &[f32], intrinsics: &Intrinsics, noise: &NoiseModel, rng: &mut StdRng) -> DepthImage {
    let (w, h) = (intrinsics.width as usize, intrinsics.height as usize);
    let mut depth = vec![0.0f32; w * h];
    let mut conf = vec![0u8; w * h];
    let point = |i: usize, j: usize| -> Option<Vec3> {
        let d = f64::from(clean[j * w + i]);
        (d > 0.0).then(|| intrinsics.ray(i as f64, j as f64) * d)
    };
    for j in 0..h {
        for i in 0..w {
            let Some(p) = point(i, j) else { continue };
            let z = p.z;
            let nb = |di: isize, dj: isize| {
                let (ii, jj) = (i as isize + di, j as isize + dj);
                if ii < 0 || jj < 0 || ii >= w as isize || jj >= h as isize {
                    None
                } else {
                    point(ii as usize, jj as usize)
                }
            };
            let (l, r, u, d) = (nb(-1, 0), nb(1, 0), nb(0, -1), nb(0, 1));
            let mut edge = false;
            for q in [l, r, u, d].iter() {
                match q {
                    Some(q) if (q.z - z).abs() <= noise.edge_threshold_m => {}
                    _ => edge = true,
                }
            }
            let c = if edge {
                0
            } else {
                let (Some(l), Some(r), Some(u), Some(d)) = (l, r, u, d) else {
                    continue;
                };
                let n = (r - l).cross(d - u).normalized();
                let cos = n.dot(p.normalized()).abs();
                if cos < 0.3 {
                    0
                } else if cos < 0.6 {
                    1
                } else {
                    2
                }
            };
            if edge && rng.gen::<f64>() < noise.edge_dropout {
                continue;
            }
            if rng.gen::<f64>() < noise.random_dropout {
                continue;
            }
            let mut zn = z + noise.sigma(z, c) * gaussian(rng);
            if noise.quantisation_m > 0.0 {
                zn = (zn / noise.quantisation_m).round() * noise.quantisation_m;
            }
            depth[j * w + i] = zn as f32;
            conf[j * w + i] = c;
        }
    }
    DepthImage { width: intrinsics.width, height: intrinsics.height, depth, confidence: Some(conf) }
}

/// How the hand-held camera moves around the wound. The default is the arc every preset
/// has always used; the family widens it (off-centre aim, short one-sided arcs, other
/// distances) to exercise the server's target and gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrajectoryOptions {
    /// Range of the mean camera distance to the wound, metres.
    pub distance_m: (f64, f64),
    /// Range of the arc swept around the wound, degrees (≤ 90: one-sided, part of the rim
    /// behind a steep wall is never seen).
    pub arc_deg: (f64, f64),
    /// Range of the mean tilt from the skin normal, degrees.
    pub tilt_deg: (f64, f64),
    /// Bounds the distance along the trajectory, metres.
    pub clamp_m: (f64, f64),
    /// The aim point's constant offset from the wound centre in the skin tangent plane,
    /// metres (its direction is drawn from the seed); 0 aims at the wound as the presets do.
    pub aim_offset_m: f64,
}

impl Default for TrajectoryOptions {
    fn default() -> Self {
        TrajectoryOptions {
            distance_m: (0.22, 0.30),
            arc_deg: (100.0, 200.0),
            tilt_deg: (18.0, 28.0),
            clamp_m: (0.2, 0.35),
            aim_offset_m: 0.0,
        }
    }
}

impl TrajectoryOptions {
    /// A short one-sided sweep (60–90° of arc): part of the rim behind a steep wall is
    /// never seen (for guidance tests).
    pub fn one_sided() -> Self {
        TrajectoryOptions { arc_deg: (60.0, 90.0), ..TrajectoryOptions::default() }
    }

    /// The presets' arc aimed `mm` off the wound centre (up to 20 mm in the family).
    pub fn off_centre(mm: f64) -> Self {
        TrajectoryOptions { aim_offset_m: mm * 1e-3, ..TrajectoryOptions::default() }
    }
}

/// A seeded hand-held trajectory around the origin of `world_from_phantom` (the wound
/// centre, skin normal +z): an arc at the drawn distance, tilted from the skin normal with
/// a wobble, aimed near (not exactly at) the wound. With the default options this is
/// [`Phantom::trajectory`], bit for bit.
pub fn trajectory(world_from_phantom: &Pose, seed: u64, frames: usize, o: &TrajectoryOptions) -> Vec<Pose> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7261_6a65_6374_6f72);
    let dist0 = rng.gen_range(o.distance_m.0..o.distance_m.1);
    let span = rng.gen_range(o.arc_deg.0..o.arc_deg.1).to_radians();
    let az0 = rng.gen_range(0.0..std::f64::consts::TAU);
    let tilt_mid = rng.gen_range(o.tilt_deg.0..o.tilt_deg.1).to_radians();
    let tilt_amp = rng.gen_range(5f64..10.0).to_radians();
    let tilt_freq = rng.gen_range(1.0..2.0);
    let dist_phase = rng.gen_range(0.0..std::f64::consts::TAU);
    let roll = rng.gen_range(-0.3..0.3);
    let offset = if o.aim_offset_m > 0.0 {
        let a = rng.gen_range(0.0..std::f64::consts::TAU);
        Vec3::new(o.aim_offset_m * a.cos(), o.aim_offset_m * a.sin(), 0.0)
    } else {
        Vec3::ZERO
    };
    (0..frames)
        .map(|i| {
            let s = if frames > 1 { i as f64 / (frames - 1) as f64 } else { 0.5 };
            let az = az0 + span * s;
            let tilt = tilt_mid + tilt_amp * (std::f64::consts::TAU * tilt_freq * s).sin();
            let dist = (dist0 + 0.03 * (std::f64::consts::TAU * s + dist_phase).sin()).clamp(o.clamp_m.0, o.clamp_m.1);
            let eye = Vec3::new(dist * tilt.sin() * az.cos(), dist * tilt.sin() * az.sin(), dist * tilt.cos());
            let mut aim = Vec3::new(0.006 * (3.0 * az).sin(), 0.006 * (2.0 * az + 1.0).cos(), 0.0);
            if o.aim_offset_m > 0.0 {
                aim = aim + offset;
            }
            let up_angle = az + std::f64::consts::FRAC_PI_2 + roll;
            let up = Vec3::new(up_angle.cos(), up_angle.sin(), 0.0);
            let local = Pose::look_at(eye + offset, aim, up);
            world_from_phantom.compose(&local)
        })
        .collect()
}

/// Renders a capture of `surface` along `true_poses`: noisy frames and jittered reported
/// poses, seeded by `config.seed`.
pub(crate) fn scan_along(
    surface: &impl Surface,
    true_poses: Vec<Pose>,
    config: &ScanConfig,
    truth: GroundTruth,
) -> PhantomScan {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 1);
    let frames = true_poses
        .iter()
        .map(|pose| {
            let clean = render_clean(surface, &config.intrinsics, pose);
            let depth = apply_sensor(&clean, &config.intrinsics, &config.noise, &mut rng);
            let n = &config.noise;
            let axis = Vec3::new(gaussian(&mut rng), gaussian(&mut rng), gaussian(&mut rng));
            let angle = (n.pose_jitter_rotation_deg * gaussian(&mut rng)).to_radians();
            let mut reported = pose.compose(&Pose::from_axis_angle(axis, angle));
            let jitter =
                Vec3::new(gaussian(&mut rng), gaussian(&mut rng), gaussian(&mut rng)) * n.pose_jitter_translation_m;
            reported.translation = (pose.position() + jitter).to_array();
            Frame { depth, intrinsics: config.intrinsics, pose: reported }
        })
        .collect();
    PhantomScan { frames, true_poses, truth }
}

/// Longest chord of a closed outline, and the extent perpendicular to it within the
/// plane whose normal is `normal`. Inputs and outputs in the same unit.
pub fn length_width(outline: &[Vec3], normal: Vec3) -> (f64, f64) {
    let mut best = (0.0, 0usize, 0usize);
    for i in 0..outline.len() {
        for j in (i + 1)..outline.len() {
            let d = (outline[i] - outline[j]).dot(outline[i] - outline[j]);
            if d > best.0 {
                best = (d, i, j);
            }
        }
    }
    if outline.len() < 2 {
        return (0.0, 0.0);
    }
    let axis = (outline[best.2] - outline[best.1]).normalized();
    let across = normal.cross(axis).normalized();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in outline {
        let s = p.dot(across);
        lo = lo.min(s);
        hi = hi.max(s);
    }
    (best.0.sqrt(), hi - lo)
}

/// Ready-made phantoms used by the tests, the benches and the load tester.
pub mod presets {
    use super::*;

    /// Where phantoms sit in the world: tilted and offset, so nothing relies on the
    /// skin being horizontal or at the origin.
    pub fn default_placement() -> Pose {
        let mut p = Pose::from_axis_angle(Vec3::new(0.4, -0.7, 0.2), 0.5);
        p.translation = [0.12, -0.05, 0.4];
        p
    }

    /// The curved limb used by the presets: 50 mm radius.
    pub const LIMB_RADIUS_M: f64 = 0.05;

    fn skin(curved: bool) -> SkinShape {
        if curved {
            SkinShape::Cylinder { radius: LIMB_RADIUS_M }
        } else {
            SkinShape::Plane
        }
    }

    /// Spherical cap, 15 mm outline radius, 5 mm deep.
    pub fn spherical_cap(curved: bool) -> PhantomSpec {
        PhantomSpec {
            skin: skin(curved),
            cavity: CavityShape::SphericalCap { radius: 0.015, depth: 0.005 },
            orientation: 0.0,
            world_from_phantom: default_placement(),
        }
    }

    /// Ellipsoidal cap, 20 × 12 mm semi-axes, 6 mm deep, oblique on the skin.
    pub fn ellipsoid(curved: bool) -> PhantomSpec {
        PhantomSpec {
            skin: skin(curved),
            cavity: CavityShape::EllipsoidalCap { semi_major: 0.020, semi_minor: 0.012, depth: 0.006, wall: 0.45 },
            orientation: 0.5,
            world_from_phantom: default_placement(),
        }
    }

    /// The six presets with the labels every report and test uses (`cap/plane` …
    /// `irregular/limb`).
    pub fn labelled() -> Vec<(&'static str, PhantomSpec)> {
        vec![
            ("cap/plane", spherical_cap(false)),
            ("ellipsoid/plane", ellipsoid(false)),
            ("irregular/plane", irregular(false)),
            ("cap/limb", spherical_cap(true)),
            ("ellipsoid/limb", ellipsoid(true)),
            ("irregular/limb", irregular(true)),
        ]
    }

    /// Irregular lobed wound (~16 mm mean radius), 5 mm deep with a tilted bed.
    pub fn irregular(curved: bool) -> PhantomSpec {
        PhantomSpec {
            skin: skin(curved),
            cavity: CavityShape::Irregular {
                mean_radius: 0.016,
                harmonics: vec![(2, 0.18, 0.3), (3, 0.10, 1.9), (5, 0.04, 0.7)],
                depth: 0.005,
                wall: 0.5,
                tilt: 0.3,
                tilt_angle: 2.2,
            },
            orientation: 0.2,
            world_from_phantom: default_placement(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spherical_cap_truth_matches_closed_forms() {
        let p = Phantom::new(presets::spherical_cap(false));
        let t = p.truth();
        let (a, h) = (15.0f64, 5.0f64);
        let pi = std::f64::consts::PI;
        assert!((t.outline_area_mm2 - pi * a * a).abs() < 1e-6 * pi * a * a);
        assert!((t.perimeter_mm - 2.0 * pi * a).abs() < 1e-6);
        let vol = pi * h * (3.0 * a * a + h * h) / 6.0;
        assert!((t.volume_mm3 - vol).abs() / vol < 1e-4, "{} vs {vol}", t.volume_mm3);
        let cap_area = pi * (a * a + h * h);
        assert!((t.bed_area_mm2 - cap_area).abs() / cap_area < 1e-3, "{}", t.bed_area_mm2);
        assert!((t.max_depth_mm - h).abs() < 1e-6);
        assert!((t.length_mm - 2.0 * a).abs() < 0.01 && (t.width_mm - 2.0 * a).abs() < 0.01);
    }

    #[test]
    fn ellipsoid_truth_matches_closed_forms() {
        let p = Phantom::new(presets::ellipsoid(false));
        let t = p.truth();
        let (a, b) = (20.0f64, 12.0f64);
        let pi = std::f64::consts::PI;
        assert!((t.outline_area_mm2 - pi * a * b).abs() < 1e-3);
        let h = ((a - b) / (a + b)).powi(2);
        let ramanujan = pi * (a + b) * (1.0 + 3.0 * h / (10.0 + (4.0 - 3.0 * h).sqrt()));
        assert!((t.perimeter_mm - ramanujan).abs() < 1e-3);
        assert!((t.length_mm - 2.0 * a).abs() < 0.01 && (t.width_mm - 2.0 * b).abs() < 0.01);
    }

    #[test]
    fn limb_volume_is_smaller_than_flat_volume_by_the_curvature_term() {
        let flat = Phantom::new(presets::spherical_cap(false));
        let limb = Phantom::new(presets::spherical_cap(true));
        assert!(limb.truth().volume_mm3 < flat.truth().volume_mm3);
        assert!(limb.truth().volume_mm3 > 0.9 * flat.truth().volume_mm3);
        // Developed outline area is the same: the cylinder unrolls isometrically.
        assert!((limb.truth().outline_area_mm2 - flat.truth().outline_area_mm2).abs() < 1e-6);
    }

    #[test]
    fn clean_render_puts_the_cap_bottom_at_the_right_depth() {
        let spec = presets::spherical_cap(false);
        let p = Phantom::new(spec.clone());
        let target = p.truth().target_world;
        let n = p.truth().normal_world;
        let eye = target + n * 0.25;
        let pose = Pose::look_at(eye, target, n.any_perpendicular());
        let k = Intrinsics::iphone_256x192();
        let d = p.render_clean(&k, &pose);
        // The principal ray is (127.5, 95.5): average the 4 central pixels.
        let w = k.width as usize;
        let c: f32 = [95 * w + 127, 95 * w + 128, 96 * w + 127, 96 * w + 128].iter().map(|&i| d[i]).sum::<f32>() / 4.0;
        assert!((f64::from(c) - 0.255).abs() < 2e-5, "{c}");
        // Far from the wound the skin is at 0.25 m along the optical axis direction.
        assert!(d.iter().filter(|v| **v > 0.0).count() > 40_000);
    }

    #[test]
    fn scans_are_deterministic_and_trajectories_differ_by_seed() {
        let p = Phantom::new(presets::irregular(true));
        let mut cfg = ScanConfig::iphone(3);
        cfg.frames = 2;
        let a = p.scan(&cfg);
        let b = p.scan(&cfg);
        assert_eq!(a.frames, b.frames);
        cfg.seed = 4;
        let c = p.scan(&cfg);
        assert_ne!(a.true_poses[0], c.true_poses[0]);
    }

    #[test]
    fn noise_grows_quadratically_with_distance() {
        let n = NoiseModel::iphone();
        assert!((n.sigma(0.25, 2) - 0.001).abs() < 1e-12);
        assert!((n.sigma(0.5, 2) - 0.004).abs() < 1e-12);
        assert!(n.sigma(0.25, 0) > n.sigma(0.25, 1));
    }
}
