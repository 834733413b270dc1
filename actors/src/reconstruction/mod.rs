//! Reconstruction: one [`Reconstruction`] actor per scan owns the scan's volume from its
//! first frame to its stored measurement.
//!
//! - [`live`]: the actor; while the phone streams it fuses the frames the capture session
//!   pushes ([`LiveScan`]), with a bounded mailbox that skips frames rather than hold up
//!   acks; it publishes progress for the session's progress tick.
//! - [`finish`]: at finish the actor meshes and measures (fusing the stored frames when
//!   live fusion did not see them all) and stores the results; [`Reconstructor`] is the
//!   capture sessions' finish hook, takes over scans a stopped node left `processing`, and
//!   re-measures a scan with a clinician's outline.
//! - [`pool`]: the CPU arbiters the actors run on ([`ReconstructionPool`]).
//! - [`ports`]: what the actor needs from storage ([`FrameReader`], [`ReconstructionSink`]),
//!   implemented by the server's store adapters and by [`crate::testing`].
//!
//! The fusion policy itself (gate, region of interest, integration, target, mesh, measure)
//! is `coherency_recon::fusion`, used the same way live and at finish.
//!
//! **Latency.** Each frame's time from [`LiveScan::push`] to the end of its fusion is
//! recorded in a bounded histogram ([`FuseLag`], read with [`LiveScan::fuse_lag`]);
//! `cargo run --release -p coherency-actors --example fusion_latency` drives the actors with
//! several scans at a fixed frame rate and reports its percentiles.

mod colour;
pub mod corrections;
pub mod demo;
pub mod finish;
pub mod keyframe;
pub mod lag;
pub mod live;
pub mod pool;
pub mod ports;

use coherency_protocol::scan::DepthFrame;
use coherency_recon::{DepthImage, Frame, Intrinsics, Pose, ReconError};

pub use colour::pick_photos;
pub use corrections::{CorrectedRegion, CorrectionRegion, MeasuredOutline, RetissueRequest, Retissued};
pub use finish::{
    check_outline, Reconstructor, RemeasureError, RemeasureMode, RemeasureRequest, Remeasured, WorkBudget,
    FINISH_QUIET, MAX_OUTLINE_POINTS,
};
pub use lag::FuseLag;
pub use live::{LiveProgress, LiveResult, LiveScan, Reconstruction, BATCH, QUEUE_CAP};
pub use pool::ReconstructionPool;
pub use ports::{CalibrationFigures, TissueFigures, TissueOutcome, TissueShareFigures};
pub use ports::{
    FailureReason, FrameLocation, FrameReader, MeasureMethod, MeshFormat, MeshKeys, NewMeasurement, NewReconstruction,
    PhotoPick, PickedPhoto, ReconOutcome, ReconstructionDoc, ReconstructionSink, RecordedCard, StoredMesh,
    SuggestedKeyframe, ValuePm, WoundFigures,
};

/// Default niceness of the reconstruction threads: live fusion is a preview, acks are the
/// promise, so under load the scheduler prefers the ack path (weight 110 against 1024 at
/// nice 0).
pub const DEFAULT_WORKER_NICE: i32 = 10;

/// A reconstruction frame as a phone sends it (the inverse of [`to_recon_frame`]): depth as
/// uint16 0.1 mm + zstd, confidence 0..=2 + zstd, row-major intrinsics and world-from-camera
/// pose, no colour. For phantom scans (the demo, tests).
pub fn to_wire_frame(seq: u64, captured_at_us: u64, f: &Frame) -> DepthFrame {
    use coherency_protocol::scan::{Compression, ConfidencePlane, DepthFormat, DepthPlane};
    DepthFrame {
        seq,
        captured_at_us,
        width: f.depth.width,
        height: f.depth.height,
        depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &f.depth.depth),
        confidence: f.depth.confidence.as_deref().map(|c| ConfidencePlane::encode(Compression::Zstd, 2, c)),
        intrinsics: f.intrinsics.to_row_major_f32(),
        pose: f.pose.to_row_major_f32(),
        colour_jpeg: None,
        colour_intrinsics: None,
        colour_pose: None,
    }
}

/// Converts a decoded protocol frame to a reconstruction frame: depth in f32 metres,
/// intrinsics from the row-major `k` (skew ignored), the row-major world-from-camera pose
/// (OpenCV axes), confidence rescaled from `0..=max` to ARKit's `0..=2`.
pub fn to_recon_frame(f: &DepthFrame) -> Result<Frame, ReconError> {
    let depth = f.depth_metres().map_err(|e| ReconError::Format(e.to_string()))?;
    let confidence = match f.confidence_raw().map_err(|e| ReconError::Format(e.to_string()))? {
        Some(raw) => {
            let max = f.confidence.as_ref().map_or(2, |c| c.max()).max(1) as u32;
            Some(raw.iter().map(|&c| ((u32::from(c) * 2 + max / 2) / max).min(2) as u8).collect())
        }
        None => None,
    };
    let k = &f.intrinsics;
    let intrinsics = Intrinsics {
        fx: f64::from(k[0]),
        fy: f64::from(k[4]),
        cx: f64::from(k[2]),
        cy: f64::from(k[5]),
        width: f.width,
        height: f.height,
    };
    let pose = wire_pose(f)?;
    let frame = Frame { depth: DepthImage::new(f.width, f.height, depth, confidence)?, intrinsics, pose };
    frame.validate()?;
    Ok(frame)
}

/// The frame's world-from-camera pose from its row-major matrix (OpenCV axes), without
/// decoding the depth.
pub fn wire_pose(f: &DepthFrame) -> Result<Pose, ReconError> {
    let p = f.pose.map(f64::from);
    Pose::from_matrix([
        [p[0], p[1], p[2], p[3]],
        [p[4], p[5], p[6], p[7]],
        [p[8], p[9], p[10], p[11]],
        [p[12], p[13], p[14], p[15]],
    ])
}

/// Lowers the calling thread's priority to `nice` (Linux; elsewhere a no-op). For threads
/// that only do reconstruction work (a thread cannot raise itself back without privileges).
pub fn lower_priority_to(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: on Linux, PRIO_PROCESS with who = 0 sets the nice value of the calling
        // thread only; the call reads and writes no memory of ours.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if r != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "reconstruction thread keeps normal priority");
        }
    }
}

#[cfg(test)]
mod tests;
