//! Wound photos from a scan's colour frames (`GET /v1/scans/{id}/photos`, the wound's
//! gallery, FHIR `Media`): which frames are the scan's photos, chosen once and stored
//! (`crate::store::photos`), and a photo's bytes with their metadata removed. Scoring and
//! stripping are `coherency_report::photo`'s; this service decides when they run and bounds
//! the work. Callers check access first (the scan's patient, as for reading the scan).
//!
//! When: the scan's finish chooses them among the colour frames it scores for the mesh's
//! colours and stores the choice (`coherency_actors::reconstruction::pick_photos`). A scan
//! finished before finishes chose (or whose stored choice is gone) gets its choice on the
//! first request for its photos, here, then stored, so later requests read one small
//! document: frames are read one chunk object at a time and at most [`MAX_SCORED`] colour
//! frames are scored, one JPEG in memory at a time, on the blocking pool,
//! [`SCORING_AT_ONCE`] scans at once. `docs/measurement.md`, "Wound photos".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coherency_actors::reconstruction::pick_photos;
use coherency_actors::store::StoreError;
use coherency_protocol::ids::ScanId;
use coherency_protocol::{Code, ErrorCode};
use coherency_report::photo::{self, Candidate};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::store::blob::BlobStore;
use crate::store::photos::PhotoChoice;
use crate::store::scans::{self as scan_store, ScanRecord};

/// At most this many colour frames are scored per scan: the scan is cut into this many
/// runs of frames in seq order and the first colour frame of each run is scored (a scan's
/// neighbouring frames are near-identical at 30–60 frames a second).
pub const MAX_SCORED: usize = 60;
/// Scans whose photos are being chosen at once on a node.
pub const SCORING_AT_ONCE: usize = 1;
/// How long a request waits for its turn to choose before it is told to retry.
pub const WAIT: Duration = Duration::from_secs(20);

/// A wound's gallery looks at its newest this many scans.
pub const MAX_GALLERY_SCANS: usize = 20;
/// The patient scans a wound's gallery searches for the wound's (newest first).
const GALLERY_PATIENT_SCANS: i64 = 200;

/// Why there are no photos yet (the reasons a choice stores are the finish's,
/// `coherency_actors::reconstruction::PhotoPick`).
pub const SCAN_NOT_FINISHED: &str = "scan_not_finished";

/// Why photos could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// No such photo of this scan.
    #[error("not found")]
    NotFound,
    /// Every permit is taken: photos are being chosen for other scans.
    #[error("photos are being chosen for other scans; retry shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored colour frame the server chose no longer decodes (names the stage only).
    #[error("the photo could not be prepared: {0}")]
    Image(String),
}

impl ErrorCode for PhotoError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound => Code::NotFound,
            Self::Busy => Code::Unavailable,
            Self::Store(e) => e.code(),
            Self::Image(_) => Code::Internal,
        }
    }
}

impl DomainError for PhotoError {
    fn retry_after(&self) -> Option<u64> {
        matches!(self, Self::Busy).then_some(1)
    }
}

/// The photos service.
#[derive(Clone)]
pub struct Photos {
    pg: PgPool,
    blobs: BlobStore,
    mongo: mongodb::Database,
    clock: Clock,
    permits: Arc<Semaphore>,
}

/// A served photo: JPEG bytes without metadata.
pub struct PhotoBytes {
    pub jpeg: Vec<u8>,
}

impl Photos {
    pub fn new(pg: PgPool, blobs: BlobStore, mongo: mongodb::Database, clock: Clock) -> Self {
        Self { pg, blobs, mongo, clock, permits: Arc::new(Semaphore::new(SCORING_AT_ONCE)) }
    }

    /// The scan's photos (chosen now if they never were and the scan is finished).
    pub async fn choice(&self, scan: &ScanRecord) -> Result<PhotoChoice, PhotoError> {
        let id = ScanId::from_uuid(scan.id);
        if let Some(c) = crate::store::photos::get(&self.mongo, id).await? {
            return Ok(c);
        }
        if matches!(scan.status.as_str(), "created" | "streaming") {
            return Ok(PhotoChoice {
                photos: Vec::new(),
                reason: Some(SCAN_NOT_FINISHED.into()),
                scored: 0,
                chosen_at: self.clock.now(),
            });
        }
        let permit = tokio::time::timeout(WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PhotoError::Busy)?
            .map_err(|_| PhotoError::Busy)?;
        // Another request may have chosen while this one waited.
        if let Some(c) = crate::store::photos::get(&self.mongo, id).await? {
            return Ok(c);
        }
        let choice = self.choose(scan).await?;
        drop(permit);
        crate::store::photos::put(&self.mongo, id, &choice).await?;
        Ok(choice)
    }

    /// Reads the scan's frames in seq order, one chunk at a time, and scores the first colour
    /// frame of each of [`MAX_SCORED`] runs.
    async fn choose(&self, scan: &ScanRecord) -> Result<PhotoChoice, PhotoError> {
        let id = ScanId::from_uuid(scan.id);
        let located = scan_store::locate_frames(&self.pg, id).await?;
        let runs = MAX_SCORED.min(located.len()).max(1);
        let mut chunk: Option<(String, Bytes)> = None;
        let mut servable = Vec::new();
        let mut colour_frames = 0usize;
        let mut last_run = None;
        for (i, loc) in located.iter().enumerate() {
            let run = i * runs / located.len();
            if last_run == Some(run) {
                continue;
            }
            let bytes = match &chunk {
                Some((k, b)) if *k == loc.chunk_key => b.clone(),
                _ => {
                    let b = self.blobs.get(&loc.chunk_key).await.map_err(|e| scan_store::blob_error(&e))?;
                    chunk = Some((loc.chunk_key.clone(), b.clone()));
                    b
                }
            };
            let frame = scan_store::frame_in_chunk(&bytes, loc.offset, loc.length)?;
            let Some(jpeg) = frame.colour_jpeg else { continue };
            colour_frames += 1;
            last_run = Some(run);
            // A frame is a candidate only if it can also be served (its markers walk).
            let scored =
                tokio::task::spawn_blocking(move || photo::strip_metadata(&jpeg).and_then(|_| photo::score(&jpeg)))
                    .await
                    .map_err(|_| PhotoError::Image("worker stopped".into()))?;
            // A colour frame that does not decode or walk is left out.
            if let Ok(score) = scored {
                servable.push((Candidate { seq: frame.seq, score }, frame.captured_at_us));
            }
        }
        let pick = pick_photos(&servable, colour_frames, servable.len());
        let ended = scan.finished_at.unwrap_or(scan.updated_at);
        Ok(PhotoChoice::of_pick(&pick, scan.created_at, ended, self.clock.now()))
    }

    /// The wound's newest `limit` scans (the caller has checked the wound is theirs to see).
    pub async fn wound_scans(
        &self,
        patient_id: uuid::Uuid,
        wound_id: uuid::Uuid,
        limit: usize,
    ) -> Result<Vec<ScanRecord>, PhotoError> {
        let scans = scan_store::list_for_patient(&self.pg, patient_id, GALLERY_PATIENT_SCANS)
            .await
            .map_err(|e| PhotoError::Store(scan_store::pg_error(&e)))?;
        Ok(scans.into_iter().filter(|s| s.wound_id == Some(wound_id)).take(limit).collect())
    }

    /// Photo `seq` of the scan as JPEG without metadata; [`PhotoError::NotFound`] unless
    /// `seq` is one of the scan's chosen photos.
    pub async fn bytes(&self, scan: &ScanRecord, seq: u64) -> Result<PhotoBytes, PhotoError> {
        let choice = self.choice(scan).await?;
        if !choice.photos.iter().any(|p| p.seq == seq) {
            return Err(PhotoError::NotFound);
        }
        let frame = scan_store::read_frame(&self.pg, &self.blobs, ScanId::from_uuid(scan.id), seq)
            .await?
            .ok_or(PhotoError::NotFound)?;
        let jpeg = frame.colour_jpeg.ok_or(PhotoError::NotFound)?;
        let jpeg = photo::strip_metadata(&jpeg).map_err(|e| PhotoError::Image(e.to_string()))?;
        Ok(PhotoBytes { jpeg })
    }
}
