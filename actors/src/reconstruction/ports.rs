//! What the reconstruction actor needs from storage: a [`FrameReader`] to read a scan's
//! stored frames back, and a [`ReconstructionSink`] to store what it made (mesh, wound
//! measurements, the reconstruction document). The server implements both over its stores
//! (`src/store/reconstruction.rs`); [`crate::testing`] has in-memory ones.
//!
//! The types here are the actor's own, so the server needs nothing of `coherency-recon`.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use coherency_protocol::ids::ScanId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreError;

/// Where one stored `frame` message is: a slice of a chunk object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLocation {
    /// The frame's seq.
    pub seq: u64,
    /// The chunk object holding it.
    pub chunk_key: String,
    /// Byte offset of its message inside the chunk.
    pub offset: u64,
    /// Length of its message.
    pub length: u64,
}

/// Reads a scan's stored frames back (the frame index and the blob store).
#[async_trait]
pub trait FrameReader: Send + Sync + 'static {
    /// Where the scan's stored frames are, in seq order (empty: none stored).
    async fn locate(&self, scan_id: ScanId) -> Result<Vec<FrameLocation>, StoreError>;

    /// A whole chunk object.
    async fn read_chunk(&self, key: &str) -> Result<Bytes, StoreError>;

    /// The seqs that have a per-frame quality record.
    async fn quality_seqs(&self, scan_id: ScanId) -> Result<Vec<u64>, StoreError>;
}

/// A mesh file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshFormat {
    /// Stanford PLY.
    Ply,
    /// Binary glTF.
    Glb,
}

impl MeshFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            MeshFormat::Ply => "ply",
            MeshFormat::Glb => "glb",
        }
    }
}

/// A stored mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMesh {
    /// Its blob key.
    pub key: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where a scan's mesh is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshKeys {
    /// Blob key of the PLY mesh.
    pub ply_key: String,
    /// Its SHA-256 (hex).
    pub ply_sha256: String,
    /// Blob key of the binary glTF mesh.
    pub glb_key: String,
    /// Its SHA-256 (hex).
    pub glb_sha256: String,
}

/// A value and its uncertainty: the true value lies in `value ± uncertainty`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValuePm {
    pub value: f64,
    pub uncertainty: f64,
}

/// How a wound's outline was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureMethod {
    /// Segmented automatically at finish (one per scan, replaced on a re-run).
    Auto,
    /// Drawn by a clinician on a keyframe.
    Polygon,
}

impl MeasureMethod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MeasureMethod::Auto => "auto",
            MeasureMethod::Polygon => "polygon",
        }
    }
}

/// One wound's figures (mm, mm², mm³).
#[derive(Debug, Clone, PartialEq)]
pub struct WoundFigures {
    pub outline_area_mm2: ValuePm,
    pub bed_area_mm2: ValuePm,
    pub perimeter_mm: ValuePm,
    pub length_mm: ValuePm,
    pub width_mm: ValuePm,
    pub max_depth_mm: ValuePm,
    pub mean_depth_mm: ValuePm,
    pub volume_mm3: ValuePm,
    /// `quadratic` or `quartic`.
    pub skin_model: &'static str,
    pub skin_residual_mm: f64,
    pub missing_fraction: f64,
}

/// A measurement to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMeasurement {
    pub scan_id: ScanId,
    pub method: MeasureMethod,
    /// Polygon only: the keyframe the outline was drawn on.
    pub keyframe_seq: Option<u64>,
    /// Polygon only: the outline in the keyframe's image coordinates.
    pub polygon: Option<Vec<[f64; 2]>>,
    pub figures: WoundFigures,
    pub mesh: Option<MeshKeys>,
    /// Who drew the outline (polygon only).
    pub created_by: Option<Uuid>,
    /// The wound bed's tissue composition inside this measurement's outline, or why there
    /// is none.
    pub tissue: TissueOutcome,
}

/// A measurement's tissue composition, or the stable code of why it has none.
#[derive(Debug, Clone, PartialEq)]
pub enum TissueOutcome {
    /// Computed from the scan's colour frames.
    Composition(TissueFigures),
    /// Not computed: `no_colour_frames` (the scan has none), `no_usable_colour_frames` (none
    /// decodes), or the analysis's own code (`no_colour`, `too_little_colour`,
    /// `no_periwound`, `periwound_too_dark`, `no_wound_surface`).
    Unavailable(String),
}

impl TissueOutcome {
    /// The composition, if there is one.
    pub fn composition(&self) -> Option<&TissueFigures> {
        match self {
            TissueOutcome::Composition(t) => Some(t),
            TissueOutcome::Unavailable(_) => None,
        }
    }

    /// Why there is none, if there is none.
    pub fn reason(&self) -> Option<&str> {
        match self {
            TissueOutcome::Composition(_) => None,
            TissueOutcome::Unavailable(code) => Some(code),
        }
    }
}

/// Tissue composition of a wound bed, as stored with its measurement (`docs/measurement.md`,
/// "Tissue composition"): this JSON shape is the API's `tissue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TissueFigures {
    /// One entry per class, in the fixed order granulation, slough, eschar, epithelial, other.
    pub shares: Vec<TissueShareFigures>,
    /// The wound surface classified, mm² (true 3D area on the mesh).
    pub wound_area_mm2: f64,
    /// Share of that surface seen in colour, 0..=1.
    pub coloured_fraction: f64,
    /// How the colours were normalised before classifying.
    pub calibration: CalibrationFigures,
    /// The classifier's name and version.
    pub classifier: String,
}

/// One tissue class's share of the wound bed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TissueShareFigures {
    /// `granulation`, `slough`, `eschar`, `epithelial` or `other`.
    pub class: String,
    /// Area of the class on the wound surface, mm².
    pub area_mm2: f64,
    /// Share of the classified wound surface, percent (the shares add up to 100).
    pub percent: f64,
    /// Uncertainty of `percent`, ± percentage points.
    pub percent_pm: f64,
}

/// A scan's colour calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CalibrationFigures {
    /// `periwound` (the skin around the outline mapped to a reference skin colour) or
    /// `colour_checker` (a ColorChecker Classic seen whole in a colour frame).
    pub source: String,
    /// Per-channel linear gains (R, G, B) applied to the displayed colours (the GLB's
    /// `COLOR_0`); with `periwound` also to the classifier's inputs.
    pub gains: [f64; 3],
    /// Samples the gains came from (periwound vertices, or the card's neutral patches).
    pub samples: usize,
    /// With `colour_checker`: the periwound gains the classifier's inputs were normalised
    /// with (the classifier always sees periwound-normalised colours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periwound_gains: Option<[f64; 3]>,
    /// With `colour_checker`: the periwound skin's own tone, sRGB, under the card's light.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skin_srgb: Option<[u8; 3]>,
}

/// The frame a clinician is asked to draw the outline on when the automatic measurement
/// failed: its seq, image size and camera exactly as the phone sent them, so a viewer can
/// render the mesh from that camera and map its canvas pixels linearly to the frame's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuggestedKeyframe {
    /// The frame's seq (the `keyframe_seq` of a polygon re-measure).
    pub seq: u64,
    /// Depth image width, pixels.
    pub width: u32,
    /// Depth image height, pixels.
    pub height: u32,
    /// Row-major 3×3 intrinsics `[fx, s, cx, 0, fy, cy, 0, 0, 1]` (depth-image pixels).
    pub k: [f64; 9],
    /// Row-major 4×4 world-from-camera pose (OpenCV axes: x right, y down, z forward).
    pub pose: [f64; 16],
}

/// Why the automatic measurement of a scan failed, as a stable code and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReason {
    /// `no_depression`, `wound_exceeds_scan_region`, `rim_not_seen`, `not_enough_surface` or
    /// `measurement_failed`.
    pub code: &'static str,
    /// The reconstruction's own words (no patient data).
    pub message: String,
}

/// What a scan's reconstruction came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ReconOutcome {
    /// The automatic measurement succeeded (its row is the scan's `auto` measurement);
    /// `keyframe` is the frame a clinician would draw or adjust an outline on.
    Measured { keyframe: Option<Box<SuggestedKeyframe>> },
    /// The surface was built but the automatic measurement failed: a clinician should draw
    /// the outline, on `keyframe` if one could be suggested.
    NeedsOutline { reason: FailureReason, keyframe: Option<Box<SuggestedKeyframe>> },
}

impl ReconOutcome {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReconOutcome::Measured { .. } => "measured",
            ReconOutcome::NeedsOutline { .. } => "needs_outline",
        }
    }
}

/// A scan's reconstruction outcome and its mesh, to store (one per scan, replaced when the
/// finish runs again).
#[derive(Debug, Clone, PartialEq)]
pub struct NewReconstruction {
    pub scan_id: ScanId,
    pub outcome: ReconOutcome,
    pub mesh: MeshKeys,
}

/// The reconstruction document of a scan: inputs, parameters, target, quality, mesh,
/// measurements, timings, outcome (see `docs/measurement.md`). One per scan, replaced on a
/// re-run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconstructionDoc {
    /// When the finish step started.
    pub started_at: DateTime<Utc>,
    /// Every other field.
    pub body: serde_json::Map<String, serde_json::Value>,
}

/// A scan's wound photos as its finish chose them from the colour frames it scored (the
/// sharpest, best-exposed, spread over the scan; `coherency_report::photo`), or why there
/// are none. Only frames whose JPEG can also be served (its markers walk) are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoPick {
    /// In seq order.
    pub photos: Vec<PickedPhoto>,
    /// `no_colour_frames` or `no_usable_colour_frames` when `photos` is empty.
    pub reason: Option<&'static str>,
    /// Colour frames scored to choose.
    pub scored: u64,
}

/// One chosen photo: its frame and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PickedPhoto {
    pub seq: u64,
    /// The frame's capture time as the phone stamped it (µs since the epoch).
    pub captured_at_us: u64,
    pub width: u32,
    pub height: u32,
    pub sharpness: f64,
    pub exposure: f64,
}

/// What a scan's finish recorded of a ColorChecker card in its colour views
/// (`colour.card` of the reconstruction document), read back so that a remeasure or a
/// correction reports the finish's calibration without detecting the card again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordedCard {
    /// No document, or one written before cards were recorded: detect again.
    NotRecorded,
    /// The finish saw no card.
    Absent,
    /// The card's gains (linear, per channel) and the neutral patches they came from.
    Seen { gains: [f64; 3], samples: usize },
}

impl RecordedCard {
    /// Reads `colour.card` of a reconstruction document's body; anything malformed counts
    /// as not recorded (the card is then detected again).
    pub fn of_document(body: &serde_json::Map<String, serde_json::Value>) -> Self {
        let Some(card) = body.get("colour").and_then(|c| c.get("card")) else { return RecordedCard::NotRecorded };
        if card.is_null() {
            return RecordedCard::Absent;
        }
        let gains: Option<Vec<f64>> = card
            .get("gains")
            .and_then(|g| g.as_array())
            .map(|g| g.iter().filter_map(serde_json::Value::as_f64).filter(|v| v.is_finite() && *v > 0.0).collect());
        let samples = card.get("samples").and_then(serde_json::Value::as_u64).unwrap_or(0);
        match gains.as_deref() {
            Some(&[r, g, b]) => RecordedCard::Seen { gains: [r, g, b], samples: usize::try_from(samples).unwrap_or(0) },
            _ => RecordedCard::NotRecorded,
        }
    }
}

/// Where a reconstruction's results go.
#[async_trait]
pub trait ReconstructionSink: Send + Sync + 'static {
    /// The time to stamp results with (the server's clock).
    fn now(&self) -> DateTime<Utc>;

    /// Stores a mesh file of the scan durably (`scans/{id}/mesh.{ext}`; written again on a
    /// re-run).
    async fn put_mesh(&self, scan_id: ScanId, format: MeshFormat, bytes: Bytes) -> Result<StoredMesh, StoreError>;

    /// Stores a measurement and answers its id. The automatic measurement of a scan is
    /// replaced, never duplicated, when written again.
    async fn write_measurement(&self, m: &NewMeasurement) -> Result<Uuid, StoreError>;

    /// Stores the scan's reconstruction outcome and mesh, replacing an earlier one; a
    /// `needs_outline` outcome removes an automatic measurement an earlier run stored.
    async fn write_reconstruction(&self, r: &NewReconstruction) -> Result<(), StoreError>;

    /// The scan's mesh as its reconstruction stored it (measured or not), if any.
    async fn reconstruction_mesh(&self, scan_id: ScanId) -> Result<Option<MeshKeys>, StoreError>;

    /// Stores the scan's photo choice, replacing an earlier one.
    async fn write_photos(&self, scan_id: ScanId, pick: &PhotoPick) -> Result<(), StoreError>;

    /// Upserts the scan's reconstruction document.
    async fn write_document(&self, scan_id: ScanId, doc: ReconstructionDoc) -> Result<(), StoreError>;

    /// What the scan's reconstruction document records of a colour checker.
    async fn recorded_card(&self, scan_id: ScanId) -> Result<RecordedCard, StoreError>;
}
