//! The reconstruction actor's storage ports over the node's stores: [`StoreFrameReader`]
//! reads a scan's frames back through the frame index ([`PgScanIndex`]) and the blob store,
//! and its quality records from MongoDB; [`StoreReconstructionSink`] writes meshes to the
//! blob store (`scans/{id}/mesh.ply|glb`), measurements to PostgreSQL
//! (`scan_measurements`, see [`super::measurements`]) and one reconstruction document per
//! scan to MongoDB ([`RECONSTRUCTIONS`]), and each scan's reconstruction outcome and mesh to
//! PostgreSQL (`scan_reconstructions`: `measured` or `needs_outline` with its reason and
//! suggested keyframe; [`upsert_outcome`], [`outcome`], [`mesh_keys`]). [`reconstructor`]
//! puts them together for a node.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use coherency_actors::reconstruction::{
    FrameLocation, FrameReader, MeshFormat, MeshKeys, NewMeasurement, NewReconstruction, PhotoPick, ReconOutcome,
    ReconstructionDoc, ReconstructionPool, ReconstructionSink, Reconstructor, RecordedCard, StoredMesh,
    SuggestedKeyframe,
};
use coherency_actors::store::{QualitySink, ScanIndex, StoreError};
use coherency_protocol::ids::ScanId;
use mongodb::bson::doc;
use sqlx::PgPool;
use uuid::Uuid;

use super::blob::BlobStore;
use super::photos::PhotoChoice;
use super::scans::{blob_error, mongo_error, pg_error, PgScanIndex};
use crate::clock::Clock;

/// The MongoDB collection holding one reconstruction document per scan.
pub const RECONSTRUCTIONS: &str = "reconstructions";

/// Reads a scan's stored frames and quality records.
pub struct StoreFrameReader {
    index: Arc<PgScanIndex>,
    blobs: BlobStore,
    mongo: mongodb::Database,
}

impl StoreFrameReader {
    pub fn new(index: Arc<PgScanIndex>, blobs: BlobStore, mongo: mongodb::Database) -> Self {
        Self { index, blobs, mongo }
    }
}

#[async_trait]
impl FrameReader for StoreFrameReader {
    async fn locate(&self, scan_id: ScanId) -> Result<Vec<FrameLocation>, StoreError> {
        self.index.locate_frames(scan_id).await
    }

    async fn read_chunk(&self, key: &str) -> Result<Bytes, StoreError> {
        self.blobs.get(key).await.map_err(|e| blob_error(&e))
    }

    async fn quality_seqs(&self, scan_id: ScanId) -> Result<Vec<u64>, StoreError> {
        Ok(super::scans::quality_records(&self.mongo, scan_id).await?.iter().map(|r| r.seq).collect())
    }
}

/// Stores reconstructions' results.
pub struct StoreReconstructionSink {
    blobs: BlobStore,
    pg: PgPool,
    mongo: mongodb::Database,
    clock: Clock,
}

impl StoreReconstructionSink {
    pub fn new(blobs: BlobStore, pg: PgPool, mongo: mongodb::Database, clock: Clock) -> Self {
        Self { blobs, pg, mongo, clock }
    }
}

fn bson_time(t: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

#[async_trait]
impl ReconstructionSink for StoreReconstructionSink {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn put_mesh(&self, scan_id: ScanId, format: MeshFormat, bytes: Bytes) -> Result<StoredMesh, StoreError> {
        let key = format!("scans/{scan_id}/mesh.{}", format.extension());
        let s = self.blobs.put_durable(&key, bytes).await.map_err(|e| blob_error(&e))?;
        Ok(StoredMesh { key: s.key, sha256: s.sha256, size: s.size })
    }

    async fn write_measurement(&self, m: &NewMeasurement) -> Result<Uuid, StoreError> {
        super::measurements::insert(&self.pg, m, self.clock.now()).await
    }

    async fn write_reconstruction(&self, r: &NewReconstruction) -> Result<(), StoreError> {
        upsert_outcome(&self.pg, r, self.clock.now()).await
    }

    async fn reconstruction_mesh(&self, scan_id: ScanId) -> Result<Option<MeshKeys>, StoreError> {
        Ok(mesh_keys(&self.pg, scan_id.as_uuid()).await?.map(|k| MeshKeys {
            ply_key: k.ply_key,
            ply_sha256: k.ply_sha256,
            glb_key: k.glb_key,
            glb_sha256: k.glb_sha256,
        }))
    }

    async fn write_photos(&self, scan_id: ScanId, pick: &PhotoPick) -> Result<(), StoreError> {
        let Some(scan) = super::scans::get(&self.pg, scan_id.as_uuid()).await.map_err(|e| pg_error(&e))? else {
            // Nothing to show them on: a scan's row precedes its frames.
            tracing::warn!(%scan_id, "photos of a scan without a row not stored");
            return Ok(());
        };
        let now = self.clock.now();
        let choice = PhotoChoice::of_pick(pick, scan.created_at, scan.finished_at.unwrap_or(now), now);
        super::photos::put(&self.mongo, scan_id, &choice).await
    }

    async fn write_document(&self, scan_id: ScanId, d: ReconstructionDoc) -> Result<(), StoreError> {
        let mut doc = mongodb::bson::to_document(&d.body)
            .map_err(|_| StoreError::Permanent("mongo: reconstruction document not representable".into()))?;
        doc.insert("started_at", bson_time(d.started_at));
        doc.insert("updated_at", bson_time(self.clock.now()));
        let cmd = doc! {
            "update": RECONSTRUCTIONS,
            "updates": [{ "q": { "scan_id": scan_id.to_string() }, "u": doc, "upsert": true }],
        };
        self.mongo.run_command(cmd).await.map_err(|e| mongo_error(&e))?;
        Ok(())
    }

    async fn recorded_card(&self, scan_id: ScanId) -> Result<RecordedCard, StoreError> {
        let found = self
            .mongo
            .collection::<mongodb::bson::Document>(RECONSTRUCTIONS)
            .find_one(doc! { "scan_id": scan_id.to_string() })
            .projection(doc! { "colour.card": 1 })
            .await
            .map_err(|e| mongo_error(&e))?;
        let Some(d) = found else { return Ok(RecordedCard::NotRecorded) };
        Ok(match mongodb::bson::Bson::Document(d).into_relaxed_extjson() {
            serde_json::Value::Object(body) => RecordedCard::of_document(&body),
            _ => RecordedCard::NotRecorded,
        })
    }
}

/// Stores a scan's reconstruction outcome and mesh, replacing an earlier one (a re-run of
/// the finish converges on one row). A `needs_outline` outcome removes an automatic
/// measurement an earlier run stored, in the same transaction, so the outcome and the
/// measurements never disagree.
pub async fn upsert_outcome(pg: &PgPool, r: &NewReconstruction, at: DateTime<Utc>) -> Result<(), StoreError> {
    let (reason_code, reason, keyframe) = match &r.outcome {
        ReconOutcome::Measured { keyframe } => {
            (None, None, keyframe.as_ref().map(|k| serde_json::to_value(k).unwrap_or_default()))
        }
        ReconOutcome::NeedsOutline { reason, keyframe } => (
            Some(reason.code),
            Some(reason.message.as_str()),
            keyframe.as_ref().map(|k| serde_json::to_value(k).unwrap_or_default()),
        ),
    };
    let m = &r.mesh;
    let mut tx = pg.begin().await.map_err(|e| pg_error(&e))?;
    if matches!(r.outcome, ReconOutcome::NeedsOutline { .. }) {
        sqlx::query!("DELETE FROM scan_measurements WHERE scan_id = $1 AND method = 'auto'", r.scan_id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_error(&e))?;
    }
    sqlx::query!(
        "INSERT INTO scan_reconstructions (scan_id, outcome, reason_code, reason, suggested_keyframe,
                mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (scan_id) DO UPDATE SET
            outcome = EXCLUDED.outcome, reason_code = EXCLUDED.reason_code, reason = EXCLUDED.reason,
            suggested_keyframe = EXCLUDED.suggested_keyframe,
            mesh_ply_key = EXCLUDED.mesh_ply_key, mesh_ply_sha256 = EXCLUDED.mesh_ply_sha256,
            mesh_glb_key = EXCLUDED.mesh_glb_key, mesh_glb_sha256 = EXCLUDED.mesh_glb_sha256,
            created_at = EXCLUDED.created_at",
        r.scan_id.as_uuid(),
        r.outcome.as_str(),
        reason_code,
        reason,
        keyframe,
        m.ply_key,
        m.ply_sha256,
        m.glb_key,
        m.glb_sha256,
        at,
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| pg_error(&e))?;
    tx.commit().await.map_err(|e| pg_error(&e))
}

/// A scan's stored reconstruction outcome.
#[derive(Debug, Clone)]
pub struct StoredOutcome {
    /// `measured` or `needs_outline`.
    pub outcome: String,
    /// `needs_outline` only: the stable reason code and its words.
    pub reason: Option<(String, String)>,
    /// `needs_outline` only: the frame to draw the outline on (when one could be chosen).
    pub suggested_keyframe: Option<SuggestedKeyframe>,
    pub mesh: super::measurements::MeshKeys,
}

/// The scan's reconstruction outcome, if its reconstruction stored one.
pub async fn outcome(pg: &PgPool, scan_id: Uuid) -> Result<Option<StoredOutcome>, StoreError> {
    let row = sqlx::query!(
        "SELECT outcome, reason_code, reason, suggested_keyframe,
                mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256
           FROM scan_reconstructions WHERE scan_id = $1",
        scan_id,
    )
    .fetch_optional(pg)
    .await
    .map_err(|e| pg_error(&e))?;
    Ok(row.map(|r| StoredOutcome {
        outcome: r.outcome,
        reason: r.reason_code.zip(r.reason),
        // A keyframe that no longer parses (never written so) is left out rather than failing the read.
        suggested_keyframe: r.suggested_keyframe.and_then(|v| serde_json::from_value(v).ok()),
        mesh: super::measurements::MeshKeys {
            ply_key: r.mesh_ply_key,
            ply_sha256: r.mesh_ply_sha256,
            glb_key: r.mesh_glb_key,
            glb_sha256: r.mesh_glb_sha256,
        },
    }))
}

/// The scan's mesh as its reconstruction stored it, measured or not.
pub async fn mesh_keys(pg: &PgPool, scan_id: Uuid) -> Result<Option<super::measurements::MeshKeys>, StoreError> {
    let row = sqlx::query!(
        "SELECT mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256
           FROM scan_reconstructions WHERE scan_id = $1",
        scan_id,
    )
    .fetch_optional(pg)
    .await
    .map_err(|e| pg_error(&e))?;
    Ok(row.map(|r| super::measurements::MeshKeys {
        ply_key: r.mesh_ply_key,
        ply_sha256: r.mesh_ply_sha256,
        glb_key: r.mesh_glb_key,
        glb_sha256: r.mesh_glb_sha256,
    }))
}

/// The node's reconstructions over its stores: actors on `pool`, frames read through
/// `index`, finishes deferred up to `defer_max` while phones stream here, processing scans
/// kept fresh against `stale`.
pub fn reconstructor(
    stores: &super::Stores,
    clock: &Clock,
    index: Arc<PgScanIndex>,
    quality: Arc<dyn QualitySink>,
    pool: ReconstructionPool,
    defer_max: Duration,
    stale: Duration,
) -> Reconstructor {
    let reader = Arc::new(StoreFrameReader::new(index.clone(), stores.blobs.clone(), stores.mongo.clone()));
    let sink = Arc::new(StoreReconstructionSink::new(
        stores.blobs.clone(),
        stores.pg.clone(),
        stores.mongo.clone(),
        clock.clone(),
    ));
    let index: Arc<dyn ScanIndex> = index;
    Reconstructor::new(pool, reader, sink, quality, index).with_finish_defer(defer_max).with_stale_after(stale)
}
