//! `coherency-recon`: pure, synchronous reconstruction math for LiDAR wound scans.
//!
//! The crate owns everything between "a stream of depth frames with poses" and "a
//! mesh plus wound measurements": no I/O beyond byte buffers, no async, no threads.
//! The `Reconstruction` actor drives it frame by frame:
//!
//! 1. [`quality::FrameStats::compute`] / [`quality::QualityGate`] decide whether a frame
//!    is usable and worth fusing (frame selection);
//! 2. [`tsdf::TsdfVolume::integrate`] fuses it (sparse 8³ bricks, ~1 mm voxels);
//!    [`tsdf::TsdfVolume::coverage`] reports live progress;
//! 3. [`mesh::MeshExtractor`] turns changed bricks into a mesh (PLY / GLB export);
//! 4. [`measure::measure_auto`] or [`measure::measure_polygon`] segment the wound and
//!    return measurements with honest uncertainties.
//!
//! 5. [`colour`] colours the mesh from the colour frames, calibrates, and reports the
//!    wound bed's tissue composition on the mesh.
//!
//! [`phantom`] renders synthetic scans of wounds with known ground truth, used by the
//! tests, the benches and the load tester. [`io`] reads and writes the simple frame
//! dump format used to compare against other fusion libraries.

pub mod colour;
pub mod fusion;
pub mod geometry;
pub mod io;
mod linalg;
mod mc_tables;
pub mod measure;
pub mod mesh;
pub mod phantom;
pub mod quality;
pub mod tsdf;

pub use fusion::{FusedScan, Guidance, Measured, Offer, ScanFusion};
pub use geometry::{DepthImage, Frame, Intrinsics, Pose, Vec3};
pub use measure::{
    locate, measure_auto, measure_auto_with_views, measure_polygon, Located, MeasureConfig, Measurement,
    WoundMeasurements,
};
pub use mesh::{Mesh, MeshExtractor};
pub use quality::{FrameStats, GateRun, QualityGate, QualityIssue};
pub use tsdf::{Coverage, TsdfConfig, TsdfVolume};

/// Everything that can go wrong in reconstruction. Callers map these to the
/// protocol's error codes; messages carry no patient data.
#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    /// Intrinsics with non-positive focal lengths, non-finite values or an empty image.
    #[error("invalid camera intrinsics")]
    InvalidIntrinsics,
    /// A pose that is not a finite rigid transform.
    #[error("invalid pose: {0}")]
    InvalidPose(String),
    /// A buffer whose length does not match the image size.
    #[error("{what}: expected {expected} values, got {got}")]
    DimensionMismatch {
        /// Which buffer.
        what: &'static str,
        /// Expected number of values.
        expected: usize,
        /// Actual number of values.
        got: usize,
    },
    /// A configuration value out of its allowed range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Fusing more would exceed the per-scan memory budget.
    #[error("memory budget exceeded: {used} of {budget} bytes in use")]
    MemoryBudgetExceeded {
        /// Bytes in use.
        used: usize,
        /// The budget.
        budget: usize,
    },
    /// Not enough reconstructed surface to do what was asked.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// No wound could be segmented at the requested place.
    #[error("segmentation failed: {0}")]
    SegmentationFailed(String),
    /// The automatic segmentation found no wound it could measure, and why (the scan
    /// needs a clinician's outline).
    #[error("segmentation failed: {0}")]
    WoundNotFound(measure::WoundNotFound),
    /// A clinician-drawn outline refused before any work: outside its keyframe's image,
    /// too many points, too long, enclosing no area, or larger than a wound can be
    /// (see [`measure::check_outline`]).
    #[error("invalid outline: {0}")]
    InvalidOutline(String),
    /// A malformed input file or buffer.
    #[error("format error: {0}")]
    Format(String),
    /// An I/O error while reading or writing frame dumps.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ReconError {
    /// A stable, machine-readable code for why reconstruction or measurement failed, for
    /// the API's `outcome.reason.code` (the message may change, the code does not):
    ///
    /// - `no_depression`: no depression significantly below the skin near the target;
    /// - `wound_exceeds_scan_region`: the depression (or the skin ring its measurement
    ///   needs) reaches the edge of the largest search area the scan region allows;
    /// - `rim_not_seen`: a depression was found but no closed outline around it;
    /// - `not_enough_surface`: too little fused surface (at the target, or around the wound);
    /// - `measurement_failed`: anything else (bad input, configuration, I/O).
    pub fn code(&self) -> &'static str {
        match self {
            ReconError::WoundNotFound(why) => why.code(),
            ReconError::NotEnoughData(_) => "not_enough_surface",
            _ => "measurement_failed",
        }
    }
}
