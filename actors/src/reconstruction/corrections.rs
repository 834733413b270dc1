//! A clinician's tissue corrections: regions drawn on keyframes of a measured scan, each
//! naming the class its wound surface really is. [`Reconstructor::retissue`] computes the
//! measurement's tissue composition again with every correction applied, on the same path
//! as the finish (the stored frames fused again, the same colour frames, the same
//! classifier), and answers each region on the skin with the classifier's view of the
//! surface inside it: the labelled samples a training run reads back
//! (`docs/measurement.md`, *Tissue composition*).
//!
//! A region's pixels become world points through its keyframe's own depth (the surface the
//! clinician saw there); a pixel without depth falls on the skin tangent plane of the
//! wound. The composition projects regions on that plane, as it does the wound outline.

use std::collections::BTreeSet;
use std::sync::Arc;

use coherency_protocol::ids::ScanId;
use coherency_recon::colour::{wound_samples, TissueCorrection};
pub use coherency_recon::colour::{TissueClass, TissueSample};
use coherency_recon::measure::point_in_polygon;
use coherency_recon::mesh::Mesh;
use coherency_recon::{Frame, ScanFusion, Vec3, WoundMeasurements};

use super::colour::{self, Choosing, ColourFrames};
use super::finish::{
    check_outline, decode_frames, on_cpu, step_aside_if_streaming, Reconstructor, RemeasureError, WorkBudget,
};
use super::ports::TissueOutcome;

/// Most samples kept per region (evenly spread over the region's vertices).
pub const MAX_SAMPLES: usize = 256;
/// Most corrections one measurement takes.
pub const MAX_CORRECTIONS: usize = 32;

/// Which outline the measurement was made with.
#[derive(Debug, Clone, PartialEq)]
pub enum MeasuredOutline {
    /// The automatic segmentation (run again: it is deterministic on the same frames).
    Auto,
    /// A clinician's outline on a keyframe (`[u, v]` pixels).
    Polygon { keyframe_seq: u64, polygon: Vec<[f64; 2]> },
}

/// One correction as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrectionRegion {
    /// The frame it was drawn on.
    pub keyframe_seq: u64,
    /// The region, `[u, v]` pixels of that frame.
    pub polygon: Vec<[f64; 2]>,
    /// The class its wound surface is.
    pub class: TissueClass,
}

/// A re-analysis of a measurement's tissue with corrections.
pub struct RetissueRequest {
    pub scan_id: ScanId,
    pub outline: MeasuredOutline,
    /// Every correction of the measurement, oldest first (a later one wins where they overlap).
    pub corrections: Vec<CorrectionRegion>,
    /// The request's allocation budget, if it has one.
    pub budget: Option<Arc<dyn WorkBudget>>,
}

/// A region on the skin and what the classifier saw inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrectedRegion {
    /// The region's outline in world coordinates (metres).
    pub outline_world: Vec<[f64; 3]>,
    /// Up to [`MAX_SAMPLES`] calibrated surface samples of the coloured wound vertices inside.
    pub samples: Vec<TissueSample>,
}

/// The composition with the corrections applied, and each correction's region (in request
/// order).
#[derive(Debug, Clone, PartialEq)]
pub struct Retissued {
    pub tissue: TissueOutcome,
    pub regions: Vec<CorrectedRegion>,
}

impl Reconstructor {
    /// Analyses the tissue of a measurement of `req.scan_id` again with `req.corrections`.
    /// Refuses a keyframe the scan does not have ([`RemeasureError::NoKeyframe`]) and a
    /// region outside its image ([`RemeasureError::Outline`]) before fusing anything.
    pub async fn retissue(&self, req: RetissueRequest) -> Result<Retissued, RemeasureError> {
        if req.corrections.len() > MAX_CORRECTIONS {
            return Err(RemeasureError::Outline(format!("at most {MAX_CORRECTIONS} corrections per measurement")));
        }
        let first = req.corrections.first().ok_or_else(|| RemeasureError::Outline("no correction".into()))?;
        let (index, key) = self.read_keyframe(req.scan_id, first.keyframe_seq).await?;
        if req.corrections.iter().any(|c| !index.iter().any(|r| r.seq == c.keyframe_seq)) {
            return Err(RemeasureError::NoKeyframe);
        }
        let raw = self.read_within_budget(&index, key.intrinsics.pixel_count(), req.budget.as_ref()).await?;
        let inner = self.inner();
        let card = self.recorded_card(req.scan_id).await?;
        let (scan_id, nice) = (req.scan_id, inner.pool.nice());
        let (outline, corrections) = (req.outline, req.corrections);
        on_cpu(inner.pool.cpu(), req.budget.clone(), nice, move || {
            let mut step = || step_aside_if_streaming(nice);
            let frames =
                decode_frames(scan_id, raw.clone(), &BTreeSet::new(), &mut step).map_err(RemeasureError::Store)?.frames;
            let frame_of = |seq: u64| frames.iter().find(|(s, _)| *s == seq).map(|(_, f)| f);
            for c in &corrections {
                let key = frame_of(c.keyframe_seq).ok_or(RemeasureError::NoKeyframe)?;
                check_outline(&c.polygon, key.intrinsics.width, key.intrinsics.height)?;
            }
            let fused = ScanFusion::fuse_all(&frames, &mut step).map_err(|e| RemeasureError::Outline(e.to_string()))?;
            let wound = match &outline {
                MeasuredOutline::Auto => {
                    fused.mesh_and_measure(&mut step).measured.map_err(|e| RemeasureError::Outline(e.to_string()))?
                }
                MeasuredOutline::Polygon { keyframe_seq, polygon } => {
                    let key = frame_of(*keyframe_seq).ok_or(RemeasureError::NoKeyframe)?;
                    fused
                        .measure_polygon(polygon, &key.intrinsics, &key.pose)
                        .map_err(|e| RemeasureError::Outline(e.to_string()))?
                }
            };
            let applied: Vec<TissueCorrection> = corrections
                .iter()
                .map(|c| TissueCorrection {
                    outline_world: frame_of(c.keyframe_seq)
                        .map(|k| region_world(&c.polygon, k, &wound))
                        .unwrap_or_default(),
                    class: c.class,
                })
                .collect();
            drop(frames);
            let colour = ColourFrames::choose(&raw, Choosing::Colours, &mut step);
            drop(raw);
            let mesh = fused.mesh();
            drop(fused);
            let coloured = colour.colour(&mesh);
            let tissue = colour::tissue(&mesh, coloured.as_ref(), colour.unavailable(), &wound, &applied);
            let samples = coloured
                .as_ref()
                .and_then(|c| wound_samples(&mesh, c, &wound).ok())
                .map(|(_, s)| s)
                .unwrap_or_default();
            let regions = applied
                .iter()
                .map(|a| CorrectedRegion {
                    outline_world: a.outline_world.iter().map(|p| p.to_array()).collect(),
                    samples: samples_inside(&mesh, &samples, &wound, &a.outline_world),
                })
                .collect();
            Ok::<_, RemeasureError>(Retissued {
                tissue: colour::outcome(&tissue, colour.recorded_card(card).as_ref()),
                regions,
            })
        })
        .await
        .map_err(RemeasureError::Store)?
    }
}

/// The region's pixels as world points: through the keyframe's depth where it has some,
/// else where the pixel's ray meets the wound's skin tangent plane (a pixel whose ray does
/// not reach the plane is left out).
pub fn region_world(polygon: &[[f64; 2]], key: &Frame, wound: &WoundMeasurements) -> Vec<Vec3> {
    let (k, pose) = (&key.intrinsics, &key.pose);
    let (c, n) = (wound.centre_world, wound.normal_world);
    polygon
        .iter()
        .filter_map(|&[u, v]| {
            let ray = k.ray(u, v);
            let (i, j) = (u.round(), v.round());
            let depth = (i >= 0.0 && j >= 0.0).then(|| key.depth.get(i as u32, j as u32)).flatten();
            if let Some(d) = depth {
                return Some(pose.transform(ray * f64::from(d)));
            }
            let (o, dir) = (pose.position(), pose.rotate(ray));
            let along = dir.dot(n);
            let t = (c - o).dot(n) / along;
            (along.abs() > 1e-9 && t > 0.0).then(|| o + dir * t)
        })
        .collect()
}

/// The samples of the vertices whose projection on the wound's skin tangent plane falls
/// inside `outline`, at most [`MAX_SAMPLES`], evenly spread.
fn samples_inside(
    mesh: &Mesh,
    samples: &[(u32, TissueSample)],
    wound: &WoundMeasurements,
    outline: &[Vec3],
) -> Vec<TissueSample> {
    if outline.len() < 3 {
        return vec![];
    }
    let n = wound.normal_world.normalized();
    let e1 = n.any_perpendicular().normalized();
    let e2 = n.cross(e1);
    let flat = |p: Vec3| {
        let d = p - wound.centre_world;
        [d.dot(e1), d.dot(e2)]
    };
    let poly: Vec<[f64; 2]> = outline.iter().map(|p| flat(*p)).collect();
    let inside: Vec<&TissueSample> = samples
        .iter()
        .filter(|(i, _)| {
            let p = mesh.positions[*i as usize];
            point_in_polygon(flat(Vec3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]))), &poly)
        })
        .map(|(_, s)| s)
        .collect();
    let stride = inside.len().div_ceil(MAX_SAMPLES).max(1);
    inside.into_iter().step_by(stride).cloned().collect()
}
