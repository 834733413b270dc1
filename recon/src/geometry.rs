//! Camera and frame types shared by every stage: pinhole intrinsics, rigid poses,
//! depth images with optional ARKit confidence, and a small 3-vector.
//!
//! Conventions (fixed here, used everywhere in the crate):
//! - units are metres unless a name says otherwise (`_mm`, `_mm2`, `_mm3`, `_deg`);
//! - camera frames follow the OpenCV convention: x right, y down, z forward (the
//!   direction the camera looks). ARKit's camera (x right, y up, z backward) converts
//!   with [`Pose::from_arkit_camera_to_world`];
//! - a pixel `(i, j)` (column, row) has its centre at image coordinates `(i, j)`, so
//!   the ray through it is `((i - cx) / fx, (j - cy) / fy, 1)` in the camera frame;
//! - a [`Pose`] maps camera coordinates to world coordinates (world-from-camera).

use crate::ReconError;

/// A 3-vector of `f64`, the working type for geometry outside the hot loops.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec3 {
    /// x component.
    pub x: f64,
    /// y component.
    pub y: f64,
    /// z component.
    pub z: f64,
}

impl Vec3 {
    /// The zero vector.
    pub const ZERO: Vec3 = Vec3 { x: 0.0, y: 0.0, z: 0.0 };

    /// Builds a vector from its components.
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Vec3 { x, y, z }
    }

    /// Dot product.
    pub fn dot(self, o: Vec3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    /// Cross product.
    pub fn cross(self, o: Vec3) -> Vec3 {
        Vec3::new(self.y * o.z - self.z * o.y, self.z * o.x - self.x * o.z, self.x * o.y - self.y * o.x)
    }

    /// Euclidean length.
    pub fn norm(self) -> f64 {
        self.dot(self).sqrt()
    }

    /// Unit vector in the same direction (the zero vector stays zero).
    pub fn normalized(self) -> Vec3 {
        let n = self.norm();
        if n > 0.0 {
            self * (1.0 / n)
        } else {
            self
        }
    }

    /// Components as an array.
    pub fn to_array(self) -> [f64; 3] {
        [self.x, self.y, self.z]
    }

    /// Builds a vector from an array.
    pub fn from_array(a: [f64; 3]) -> Self {
        Vec3::new(a[0], a[1], a[2])
    }

    /// Any unit vector perpendicular to `self` (which must be non-zero).
    pub fn any_perpendicular(self) -> Vec3 {
        let a = if self.x.abs() < 0.9 { Vec3::new(1.0, 0.0, 0.0) } else { Vec3::new(0.0, 1.0, 0.0) };
        self.cross(a).normalized()
    }
}

impl std::ops::Add for Vec3 {
    type Output = Vec3;
    fn add(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl std::ops::Sub for Vec3 {
    type Output = Vec3;
    fn sub(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl std::ops::Mul<f64> for Vec3 {
    type Output = Vec3;
    fn mul(self, s: f64) -> Vec3 {
        Vec3::new(self.x * s, self.y * s, self.z * s)
    }
}

impl std::ops::Neg for Vec3 {
    type Output = Vec3;
    fn neg(self) -> Vec3 {
        Vec3::new(-self.x, -self.y, -self.z)
    }
}

/// Pinhole intrinsics of a depth image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    /// Focal length along x, pixels.
    pub fx: f64,
    /// Focal length along y, pixels.
    pub fy: f64,
    /// Principal point x, pixels.
    pub cx: f64,
    /// Principal point y, pixels.
    pub cy: f64,
    /// Image width, pixels.
    pub width: u32,
    /// Image height, pixels.
    pub height: u32,
}

impl Intrinsics {
    /// iPhone LiDAR-like intrinsics for a 256×192 depth map (about 62° horizontal FOV).
    pub fn iphone_256x192() -> Self {
        Intrinsics { fx: 212.0, fy: 212.0, cx: 127.5, cy: 95.5, width: 256, height: 192 }
    }

    /// The 3×3 camera matrix, row-major, in single precision (the wire format's `intrinsics`).
    pub fn to_row_major_f32(&self) -> [f32; 9] {
        [self.fx as f32, 0.0, self.cx as f32, 0.0, self.fy as f32, self.cy as f32, 0.0, 0.0, 1.0]
    }

    /// Checks the values are usable (positive focal lengths, non-empty image).
    pub fn validate(&self) -> Result<(), ReconError> {
        let finite = [self.fx, self.fy, self.cx, self.cy].iter().all(|v| v.is_finite());
        if !finite || self.fx <= 0.0 || self.fy <= 0.0 || self.width == 0 || self.height == 0 {
            return Err(ReconError::InvalidIntrinsics);
        }
        Ok(())
    }

    /// Scales intrinsics to another resolution (e.g. from the RGB camera's to the depth map's).
    pub fn scaled(&self, width: u32, height: u32) -> Self {
        let sx = f64::from(width) / f64::from(self.width);
        let sy = f64::from(height) / f64::from(self.height);
        Intrinsics {
            fx: self.fx * sx,
            fy: self.fy * sy,
            cx: (self.cx + 0.5) * sx - 0.5,
            cy: (self.cy + 0.5) * sy - 0.5,
            width,
            height,
        }
    }

    /// Projects a camera-frame point to image coordinates; `None` behind the camera.
    pub fn project(&self, p: Vec3) -> Option<(f64, f64)> {
        if p.z <= 1e-9 {
            return None;
        }
        Some((self.fx * p.x / p.z + self.cx, self.fy * p.y / p.z + self.cy))
    }

    /// Camera-frame ray direction (z = 1) through image coordinates `(u, v)`.
    pub fn ray(&self, u: f64, v: f64) -> Vec3 {
        Vec3::new((u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0)
    }

    /// Number of pixels.
    pub fn pixel_count(&self) -> usize {
        self.width as usize * self.height as usize
    }
}

/// A rigid transform mapping camera coordinates to world coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// Rotation, row-major; its columns are the camera axes expressed in the world.
    pub rotation: [[f64; 3]; 3],
    /// Camera centre in world coordinates, metres.
    pub translation: [f64; 3],
}

impl Default for Pose {
    fn default() -> Self {
        Pose::IDENTITY
    }
}

impl Pose {
    /// The identity transform.
    pub const IDENTITY: Pose =
        Pose { rotation: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], translation: [0.0, 0.0, 0.0] };

    /// Builds a pose from a row-major 4×4 world-from-camera matrix, checking that the
    /// upper-left block is a rotation (orthonormal, determinant +1, to 1e-4).
    pub fn from_matrix(m: [[f64; 4]; 4]) -> Result<Self, ReconError> {
        let rotation = [[m[0][0], m[0][1], m[0][2]], [m[1][0], m[1][1], m[1][2]], [m[2][0], m[2][1], m[2][2]]];
        let pose = Pose { rotation, translation: [m[0][3], m[1][3], m[2][3]] };
        pose.validate()?;
        Ok(pose)
    }

    /// Same as [`Pose::from_matrix`] for a column-major array of 16 (ARKit's `simd_float4x4` layout).
    pub fn from_column_major(m: [f64; 16]) -> Result<Self, ReconError> {
        let mut r = [[0.0; 4]; 4];
        for (c, col) in m.chunks_exact(4).enumerate() {
            for (row, v) in col.iter().enumerate() {
                r[row][c] = *v;
            }
        }
        Pose::from_matrix(r)
    }

    /// Converts an ARKit camera transform (camera x right, y up, z backward) into a
    /// pose in this crate's convention (x right, y down, z forward).
    pub fn from_arkit_camera_to_world(m: [[f64; 4]; 4]) -> Result<Self, ReconError> {
        let mut p = Pose::from_matrix(m)?;
        for row in p.rotation.iter_mut() {
            row[1] = -row[1];
            row[2] = -row[2];
        }
        Ok(p)
    }

    /// Checks the rotation is orthonormal with determinant +1 and values are finite.
    pub fn validate(&self) -> Result<(), ReconError> {
        let r = &self.rotation;
        let finite = r.iter().flatten().all(|v| v.is_finite()) && self.translation.iter().all(|v| v.is_finite());
        if !finite {
            return Err(ReconError::InvalidPose("non-finite value".into()));
        }
        for i in 0..3 {
            for j in 0..3 {
                let d: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                if (d - want).abs() > 1e-4 {
                    return Err(ReconError::InvalidPose("rotation is not orthonormal".into()));
                }
            }
        }
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
        if (det - 1.0).abs() > 1e-3 {
            return Err(ReconError::InvalidPose("rotation has determinant != 1".into()));
        }
        Ok(())
    }

    /// Row-major 4×4 matrix.
    pub fn matrix(&self) -> [[f64; 4]; 4] {
        let r = &self.rotation;
        let t = &self.translation;
        [
            [r[0][0], r[0][1], r[0][2], t[0]],
            [r[1][0], r[1][1], r[1][2], t[1]],
            [r[2][0], r[2][1], r[2][2], t[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// [`Pose::matrix`] flattened row by row in single precision (the wire format's `pose`).
    pub fn to_row_major_f32(&self) -> [f32; 16] {
        let m = self.matrix();
        std::array::from_fn(|i| m[i / 4][i % 4] as f32)
    }

    /// A camera at `eye` looking at `target`; `up` is the world direction that should
    /// appear upwards in the image.
    pub fn look_at(eye: Vec3, target: Vec3, up: Vec3) -> Self {
        let f = (target - eye).normalized();
        let mut r = f.cross(up).normalized();
        if r.norm() < 0.5 {
            r = f.any_perpendicular();
        }
        let d = f.cross(r);
        Pose { rotation: [[r.x, d.x, f.x], [r.y, d.y, f.y], [r.z, d.z, f.z]], translation: eye.to_array() }
    }

    /// Rotation by `angle` radians about unit `axis` (Rodrigues), with zero translation.
    pub fn from_axis_angle(axis: Vec3, angle: f64) -> Self {
        let a = axis.normalized();
        let (s, c) = angle.sin_cos();
        let t = 1.0 - c;
        Pose {
            rotation: [
                [t * a.x * a.x + c, t * a.x * a.y - s * a.z, t * a.x * a.z + s * a.y],
                [t * a.x * a.y + s * a.z, t * a.y * a.y + c, t * a.y * a.z - s * a.x],
                [t * a.x * a.z - s * a.y, t * a.y * a.z + s * a.x, t * a.z * a.z + c],
            ],
            translation: [0.0; 3],
        }
    }

    /// Camera centre in world coordinates.
    pub fn position(&self) -> Vec3 {
        Vec3::from_array(self.translation)
    }

    /// Rotates a direction from camera to world.
    pub fn rotate(&self, v: Vec3) -> Vec3 {
        let r = &self.rotation;
        Vec3::new(
            r[0][0] * v.x + r[0][1] * v.y + r[0][2] * v.z,
            r[1][0] * v.x + r[1][1] * v.y + r[1][2] * v.z,
            r[2][0] * v.x + r[2][1] * v.y + r[2][2] * v.z,
        )
    }

    /// Rotates a direction from world to camera.
    pub fn rotate_inverse(&self, v: Vec3) -> Vec3 {
        let r = &self.rotation;
        Vec3::new(
            r[0][0] * v.x + r[1][0] * v.y + r[2][0] * v.z,
            r[0][1] * v.x + r[1][1] * v.y + r[2][1] * v.z,
            r[0][2] * v.x + r[1][2] * v.y + r[2][2] * v.z,
        )
    }

    /// Maps a camera-frame point to the world.
    pub fn transform(&self, p: Vec3) -> Vec3 {
        self.rotate(p) + self.position()
    }

    /// Maps a world point to the camera frame.
    pub fn inverse_transform(&self, p: Vec3) -> Vec3 {
        self.rotate_inverse(p - self.position())
    }

    /// The inverse transform (camera-from-world).
    pub fn inverse(&self) -> Pose {
        let r = &self.rotation;
        let rt = [[r[0][0], r[1][0], r[2][0]], [r[0][1], r[1][1], r[2][1]], [r[0][2], r[1][2], r[2][2]]];
        let mut p = Pose { rotation: rt, translation: [0.0; 3] };
        let t = -p.rotate(self.position());
        p.translation = t.to_array();
        p
    }

    /// Composition `self ∘ other` (apply `other` first).
    pub fn compose(&self, other: &Pose) -> Pose {
        let mut rot = [[0.0; 3]; 3];
        for (i, row) in rot.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| self.rotation[i][k] * other.rotation[k][j]).sum();
            }
        }
        Pose { rotation: rot, translation: self.transform(other.position()).to_array() }
    }

    /// Translation distance (metres) and rotation angle (degrees) between two poses.
    pub fn difference(&self, other: &Pose) -> (f64, f64) {
        let dt = (self.position() - other.position()).norm();
        let rel = self.inverse().compose(other);
        let r = &rel.rotation;
        let c = ((r[0][0] + r[1][1] + r[2][2] - 1.0) / 2.0).clamp(-1.0, 1.0);
        (dt, c.acos().to_degrees())
    }

    /// Direction the camera looks along (its +z axis) in world coordinates.
    pub fn forward(&self) -> Vec3 {
        self.rotate(Vec3::new(0.0, 0.0, 1.0))
    }
}

/// A depth map in metres, row-major, with an optional per-pixel ARKit confidence
/// (0 = low, 1 = medium, 2 = high). Zero, negative or NaN depth means "no measurement".
#[derive(Debug, Clone, PartialEq)]
pub struct DepthImage {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Depth along the camera z axis, metres, `width * height` values.
    pub depth: Vec<f32>,
    /// Optional confidence levels 0..=2, `width * height` values.
    pub confidence: Option<Vec<u8>>,
}

impl DepthImage {
    /// Builds a depth image, checking the buffer sizes.
    pub fn new(width: u32, height: u32, depth: Vec<f32>, confidence: Option<Vec<u8>>) -> Result<Self, ReconError> {
        let n = width as usize * height as usize;
        if depth.len() != n {
            return Err(ReconError::DimensionMismatch { what: "depth", expected: n, got: depth.len() });
        }
        if let Some(c) = &confidence {
            if c.len() != n {
                return Err(ReconError::DimensionMismatch { what: "confidence", expected: n, got: c.len() });
            }
        }
        Ok(DepthImage { width, height, depth, confidence })
    }

    /// Whether a depth value counts as a measurement.
    #[inline]
    pub fn is_valid_depth(d: f32) -> bool {
        d.is_finite() && d > 0.0
    }

    /// Depth at pixel `(i, j)` if it is a measurement.
    pub fn get(&self, i: u32, j: u32) -> Option<f32> {
        if i >= self.width || j >= self.height {
            return None;
        }
        let d = self.depth[(j * self.width + i) as usize];
        DepthImage::is_valid_depth(d).then_some(d)
    }
}

/// One captured frame: depth, the intrinsics of that depth map and the camera pose.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The depth map (and confidence).
    pub depth: DepthImage,
    /// Intrinsics matching `depth`'s resolution.
    pub intrinsics: Intrinsics,
    /// World-from-camera pose.
    pub pose: Pose,
}

impl Frame {
    /// Checks that intrinsics, pose and image agree.
    pub fn validate(&self) -> Result<(), ReconError> {
        self.intrinsics.validate()?;
        self.pose.validate()?;
        if self.intrinsics.width != self.depth.width || self.intrinsics.height != self.depth.height {
            return Err(ReconError::DimensionMismatch {
                what: "intrinsics vs depth image",
                expected: self.intrinsics.pixel_count(),
                got: self.depth.depth.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Vec3, b: Vec3) -> bool {
        (a - b).norm() < 1e-9
    }

    #[test]
    fn look_at_points_the_camera_z_axis_at_the_target() {
        let eye = Vec3::new(0.1, -0.2, 0.3);
        let target = Vec3::new(0.0, 0.0, 0.0);
        let p = Pose::look_at(eye, target, Vec3::new(0.0, 0.0, 1.0));
        p.validate().unwrap();
        let c = p.inverse_transform(target);
        assert!(c.x.abs() < 1e-12 && c.y.abs() < 1e-12 && c.z > 0.0);
    }

    #[test]
    fn inverse_and_compose_round_trip() {
        let mut p = Pose::from_axis_angle(Vec3::new(0.3, 1.0, -0.2), 0.7);
        p.translation = [0.1, 0.2, -0.3];
        let q = p.compose(&p.inverse());
        let x = Vec3::new(0.5, -0.25, 2.0);
        assert!(close(q.transform(x), x));
        assert!(close(p.inverse_transform(p.transform(x)), x));
        let (dt, dr) = p.difference(&p);
        assert!(dt < 1e-12 && dr < 1e-5);
    }

    #[test]
    fn difference_reports_rotation_angle_in_degrees() {
        let a = Pose::IDENTITY;
        let b = Pose::from_axis_angle(Vec3::new(0.0, 0.0, 1.0), 10f64.to_radians());
        let (_, dr) = a.difference(&b);
        assert!((dr - 10.0).abs() < 1e-9);
    }

    #[test]
    fn from_matrix_rejects_a_scaled_rotation() {
        let mut m = Pose::IDENTITY.matrix();
        m[0][0] = 2.0;
        assert!(Pose::from_matrix(m).is_err());
    }

    #[test]
    fn arkit_conversion_flips_y_and_z_axes() {
        let p = Pose::from_arkit_camera_to_world(Pose::IDENTITY.matrix()).unwrap();
        assert!(close(p.forward(), Vec3::new(0.0, 0.0, -1.0)));
    }

    #[test]
    fn project_inverts_ray() {
        let k = Intrinsics::iphone_256x192();
        let r = k.ray(10.0, 150.0) * 0.3;
        let (u, v) = k.project(r).unwrap();
        assert!((u - 10.0).abs() < 1e-9 && (v - 150.0).abs() < 1e-9);
    }

    #[test]
    fn depth_image_rejects_wrong_buffer_size() {
        assert!(DepthImage::new(4, 4, vec![0.0; 15], None).is_err());
        assert!(DepthImage::new(4, 4, vec![0.0; 16], Some(vec![0; 3])).is_err());
        assert!(DepthImage::new(4, 4, vec![0.0; 16], Some(vec![0; 16])).is_ok());
    }
}
