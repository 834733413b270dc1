//! Colour at finish: which of a scan's colour frames colour its mesh, each decoded and
//! reduced to a [`ColourView`] with its own camera (the frame convention of
//! `docs/protocol.md` §4.2, *Colour camera*), the mesh's vertex colours, and the tissue
//! composition inside a measurement's outline (`coherency_recon::colour`).
//!
//! Runs on the finish thread, never on the ack path, and is bounded: at most
//! [`MAX_SCORED`] colour frames are scored and at most [`MAX_VIEWS`] kept, one JPEG
//! decoded at a time, each kept image at most [`LONG_SIDE`] pixels on its long side
//! (12 × 640 × 480 × 3 B ≈ 11 MB, plus their depth frames). The choice uses the wound
//! photos' scoring (`coherency_report::photo`): sharp, well-exposed frames spread over the
//! scan; the same scores choose the scan's wound photos ([`PhotoPick`]), stored by the
//! finish. A ColorChecker Classic seen whole in the chosen views calibrates the displayed
//! colours and is reported (`colour_checker`); the tissue classifier keeps the periwound
//! calibration. `docs/measurement.md` ("Vertex colours and tissue composition", "Wound
//! photos", "Calibration") documents them.

use bytes::Bytes;
use coherency_protocol::scan::{decode_client, ClientMsg, DepthFrame};
use coherency_recon::colour::{
    card_calibration, colour_vertices, default_classifier, linear_to_srgb8, skin_tone, tissue_composition, Calibration,
    CalibrationSource, CardCalibration, ColourView, RgbImage, TissueComposition, TissueCorrection, VertexColours,
};
use coherency_recon::mesh::Mesh;
use coherency_recon::{Frame, Intrinsics, Pose, WoundMeasurements};
use coherency_report::photo;
use serde_json::{json, Value};

use super::ports::{
    CalibrationFigures, PhotoPick, PickedPhoto, RecordedCard, TissueFigures, TissueOutcome, TissueShareFigures,
};
use super::to_recon_frame;

/// Most colour frames that colour a mesh.
pub(crate) const MAX_VIEWS: usize = 12;
/// Most colour frames scored to choose them (spread evenly over the scan's colour frames).
pub(crate) const MAX_SCORED: usize = 24;
/// Long side of a colour image once reduced, pixels.
pub(crate) const LONG_SIDE: usize = 640;
/// The scan has no colour frame.
pub(crate) const NO_COLOUR_FRAMES: &str = "no_colour_frames";
/// The scan has colour frames, but none could be decoded and placed.
pub(crate) const NO_USABLE_COLOUR_FRAMES: &str = "no_usable_colour_frames";

/// One chosen colour frame, decoded and reduced, with its camera and depth frame.
struct OwnedView {
    seq: u64,
    image: RgbImage,
    intrinsics: Intrinsics,
    pose: Pose,
    depth: Option<Frame>,
}

/// A scan's chosen colour frames.
pub(crate) struct ColourFrames {
    views: Vec<OwnedView>,
    /// Frames of the scan that carry a JPEG.
    colour_frames: usize,
    /// Frames scored to choose.
    scored: usize,
    /// The scan's wound photos, chosen among the same scored frames (at the finish only).
    photos: Option<PhotoPick>,
}

/// What a choice of colour frames is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choosing {
    /// The finish: the mesh's colours and the scan's wound photos.
    ColoursAndPhotos,
    /// A remeasure or a correction: the mesh's colours only (the photos were chosen).
    Colours,
}

impl ColourFrames {
    /// Chooses and decodes the colour frames among a scan's stored `frame` messages (in seq
    /// order), and the wound photos when `choosing` says so; `between` runs between frames
    /// (the finish thread's step aside).
    pub(crate) fn choose(raw: &[(u64, Bytes)], choosing: Choosing, between: &mut dyn FnMut()) -> Self {
        let frame_of = |msg: &Bytes| match decode_client(msg) {
            Ok(ClientMsg::Frame(f)) => Some(f),
            _ => None,
        };
        let with_colour: Vec<usize> = raw
            .iter()
            .enumerate()
            .filter(|(_, (_, msg))| frame_of(msg).is_some_and(|f| f.colour_jpeg.is_some()))
            .map(|(i, _)| i)
            .collect();
        let n = with_colour.len();
        let mut candidates = Vec::new();
        // Scored frames a photo can be served from (their markers walk), with capture times.
        let mut servable = Vec::new();
        let mut last_pick = None;
        for run in 0..MAX_SCORED.min(n) {
            let at = with_colour[run * n / MAX_SCORED.min(n)];
            if last_pick == Some(at) {
                continue;
            }
            last_pick = Some(at);
            between();
            let Some(f) = frame_of(&raw[at].1) else { continue };
            let Some(jpeg) = f.colour_jpeg.as_ref() else { continue };
            if let Ok(score) = photo::score(jpeg) {
                let candidate = photo::Candidate { seq: raw[at].0, score };
                if choosing == Choosing::ColoursAndPhotos && photo::strip_metadata(jpeg).is_ok() {
                    servable.push((candidate, f.captured_at_us));
                }
                candidates.push((at, candidate));
            }
        }
        let scored = candidates.len();
        let photos = (choosing == Choosing::ColoursAndPhotos).then(|| pick_photos(&servable, n, scored));
        let only: Vec<photo::Candidate> = candidates.iter().map(|(_, c)| *c).collect();
        let gap = match (only.first(), only.last()) {
            (Some(a), Some(b)) => photo::min_seq_gap_for(a.seq, b.seq, MAX_VIEWS),
            _ => 1,
        };
        let mut views = Vec::new();
        for chosen in photo::select_up_to(&only, gap, MAX_VIEWS) {
            between();
            let Some(&(at, _)) = candidates.iter().find(|(_, c)| c.seq == chosen.seq) else { continue };
            match frame_of(&raw[at].1).and_then(|f| view_of(&f)) {
                Some(v) => views.push(v),
                None => tracing::warn!(seq = chosen.seq, "colour frame not usable for the mesh's colours"),
            }
        }
        ColourFrames { views, colour_frames: n, scored, photos }
    }

    /// The scan's wound photos (`None` unless chosen with [`Choosing::ColoursAndPhotos`]).
    pub(crate) fn photos(&self) -> Option<&PhotoPick> {
        self.photos.as_ref()
    }

    /// Why nothing can be coloured, when nothing can.
    pub(crate) fn unavailable(&self) -> Option<&'static str> {
        match (self.colour_frames, self.views.is_empty()) {
            (0, _) => Some(NO_COLOUR_FRAMES),
            (_, true) => Some(NO_USABLE_COLOUR_FRAMES),
            _ => None,
        }
    }

    fn views(&self) -> Vec<ColourView<'_>> {
        self.views
            .iter()
            .map(|v| ColourView { image: &v.image, intrinsics: v.intrinsics, pose: v.pose, depth: v.depth.as_ref() })
            .collect()
    }

    /// Colours `mesh` from the chosen views (`None` when there are none).
    pub(crate) fn colour(&self, mesh: &Mesh) -> Option<VertexColours> {
        if self.views.is_empty() || mesh.positions.is_empty() {
            return None;
        }
        Some(colour_vertices(mesh, &self.views()))
    }

    /// The calibration of a ColorChecker card seen whole in the chosen views, if one is
    /// (`coherency_recon::colour::card_calibration`: views that disagree give none).
    pub(crate) fn card(&self) -> Option<CardCalibration> {
        card_calibration(&self.views())
    }

    /// The card calibration a remeasure or a correction reports: the finish's record, or,
    /// for a scan finished before cards were recorded, a detection in these views.
    pub(crate) fn recorded_card(&self, recorded: RecordedCard) -> Option<Calibration> {
        match recorded {
            RecordedCard::Seen { gains, samples } => {
                Some(Calibration { source: CalibrationSource::ColourChecker, gains, samples })
            }
            RecordedCard::Absent => None,
            RecordedCard::NotRecorded => self.card().map(|c| c.calibration),
        }
    }

    /// What the reconstruction document records of the choice.
    pub(crate) fn doc(&self) -> Value {
        json!({
            "colour_frames": self.colour_frames,
            "scored": self.scored,
            "views": self.views.iter().map(|v| json!({
                "seq": i64::try_from(v.seq).unwrap_or(i64::MAX),
                "width": v.image.width,
                "height": v.image.height,
            })).collect::<Vec<_>>(),
            "max_views": MAX_VIEWS,
            "long_side_px": LONG_SIDE,
        })
    }
}

/// The wound photos among the scored frames a photo can be served from (`servable`, in seq
/// order, with their capture times; `coherency_report::photo::select_photos`), or why there
/// are none: the finish's choice, and the server's for a scan finished before finishes chose.
pub fn pick_photos(servable: &[(photo::Candidate, u64)], colour_frames: usize, scored: usize) -> PhotoPick {
    let only: Vec<photo::Candidate> = servable.iter().map(|(c, _)| *c).collect();
    let photos: Vec<PickedPhoto> = photo::select_photos(&only)
        .into_iter()
        .map(|c| PickedPhoto {
            seq: c.seq,
            captured_at_us: servable.iter().find(|(s, _)| s.seq == c.seq).map_or(0, |(_, t)| *t),
            width: c.score.width,
            height: c.score.height,
            sharpness: c.score.sharpness,
            exposure: c.score.exposure,
        })
        .collect();
    let reason = match (colour_frames, photos.is_empty()) {
        (0, _) => Some(NO_COLOUR_FRAMES),
        (_, true) => Some(NO_USABLE_COLOUR_FRAMES),
        _ => None,
    };
    PhotoPick { photos, reason, scored: scored as u64 }
}

/// The colour frame of `f` as a view: its JPEG decoded and reduced, its camera (the frame
/// convention) scaled to the reduced image, and its depth frame; `None` when it does not
/// decode or its size disagrees with its header.
fn view_of(f: &DepthFrame) -> Option<OwnedView> {
    let cam = f.colour_camera()?;
    let jpeg = f.colour_jpeg.as_ref()?;
    let small = photo::decode_rgb_at_most(jpeg, LONG_SIDE).ok()?;
    if (small.full_width, small.full_height) != (cam.width as usize, cam.height as usize) {
        return None;
    }
    let s = small.factor as f64;
    let k = cam.intrinsics.map(f64::from);
    let intrinsics = Intrinsics {
        fx: k[0] / s,
        fy: k[4] / s,
        cx: (k[2] + 0.5) / s - 0.5,
        cy: (k[5] + 0.5) / s - 0.5,
        width: u32::try_from(small.width).ok()?,
        height: u32::try_from(small.height).ok()?,
    };
    intrinsics.validate().ok()?;
    let p = cam.pose.map(f64::from);
    let pose = Pose::from_matrix([
        [p[0], p[1], p[2], p[3]],
        [p[4], p[5], p[6], p[7]],
        [p[8], p[9], p[10], p[11]],
        [p[12], p[13], p[14], p[15]],
    ])
    .ok()?;
    let image = RgbImage { width: small.width, height: small.height, data: small.data };
    Some(OwnedView { seq: f.seq, image, intrinsics, pose, depth: to_recon_frame(f).ok() })
}

/// The tissue composition inside `wound`'s outline on the coloured mesh, with the
/// clinician's `corrections` (none at finish), or the stable code of why there is none.
pub(crate) fn tissue(
    mesh: &Mesh,
    coloured: Option<&VertexColours>,
    unavailable: Option<&'static str>,
    wound: &WoundMeasurements,
    corrections: &[TissueCorrection],
) -> Result<TissueComposition, String> {
    let Some(c) = coloured else {
        return Err(unavailable.unwrap_or(NO_COLOUR_FRAMES).to_owned());
    };
    tissue_composition(mesh, c, wound, default_classifier(), corrections).map_err(|e| e.code().to_owned())
}

/// The composition as stored with its measurement; with a `card` calibration, it is the
/// one reported (the displayed colours' source), with the periwound gains the classifier
/// used and the skin's own tone beside it.
pub(crate) fn outcome(tissue: &Result<TissueComposition, String>, card: Option<&Calibration>) -> TissueOutcome {
    match tissue {
        Ok(t) => TissueOutcome::Composition(TissueFigures {
            shares: t
                .shares
                .iter()
                .map(|s| TissueShareFigures {
                    class: s.class.as_str().to_owned(),
                    area_mm2: round(s.area_mm2, 2),
                    percent: round(s.percent, 1),
                    percent_pm: round(s.percent_pm, 1),
                })
                .collect(),
            wound_area_mm2: round(t.wound_area_mm2, 2),
            coloured_fraction: round(t.coloured_fraction, 3),
            calibration: match card {
                Some(card) => CalibrationFigures {
                    source: card.source.as_str().to_owned(),
                    gains: card.gains.map(|g| round(g, 4)),
                    samples: card.samples,
                    periwound_gains: Some(t.calibration.gains.map(|g| round(g, 4))),
                    skin_srgb: skin_tone(&t.calibration, card).map(|s| s.map(|v| linear_to_srgb8(v as f32))),
                },
                None => CalibrationFigures {
                    source: t.calibration.source.as_str().to_owned(),
                    gains: t.calibration.gains.map(|g| round(g, 4)),
                    samples: t.calibration.samples,
                    periwound_gains: None,
                    skin_srgb: None,
                },
            },
            classifier: t.classifier.clone(),
        }),
        Err(code) => TissueOutcome::Unavailable(code.clone()),
    }
}

/// The mesh's GLB with its vertex colours, calibrated with the card's gains when a card was
/// seen, else with the composition's (periwound) gains when there is one, or without colour
/// when nothing coloured it.
pub(crate) fn coloured_glb(
    mesh: &Mesh,
    coloured: Option<&VertexColours>,
    tissue: Option<&Result<TissueComposition, String>>,
    card: Option<&Calibration>,
) -> Option<Vec<u8>> {
    let c = coloured?;
    let calibration = card.or_else(|| tissue.and_then(|t| t.as_ref().ok()).map(|t| &t.calibration));
    Some(mesh.to_glb_coloured(Some(&c.to_srgb8(calibration))))
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}
