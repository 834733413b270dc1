//! The reconstruction actor's storage ports over the node's stores: [`StoreFrameReader`]
//! reads a scan's frames back through the frame index ([`PgScanIndex`]) and the blob store,
//! and its quality records from MongoDB; [`StoreReconstructionSink`] writes meshes to the
//! blob store (`scans/{id}/mesh.ply|glb`), measurements to PostgreSQL
//! (`scan_measurements`, see [`super::measurements`]) and one reconstruction document per
//! scan to MongoDB ([`RECONSTRUCTIONS`]). [`reconstructor`] puts them together for a node.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use coherency_actors::reconstruction::{
    FrameLocation, FrameReader, MeshFormat, MeshKeys, NewMeasurement, ReconstructionDoc, ReconstructionPool,
    ReconstructionSink, Reconstructor, StoredMesh,
};
use coherency_actors::store::{QualitySink, ScanIndex, StoreError};
use coherency_protocol::ids::ScanId;
use mongodb::bson::doc;
use sqlx::PgPool;
use uuid::Uuid;

use super::blob::BlobStore;
use super::scans::{blob_error, mongo_error, PgScanIndex};
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

    async fn auto_mesh(&self, scan_id: ScanId) -> Result<Option<MeshKeys>, StoreError> {
        Ok(super::measurements::auto_mesh_keys(&self.pg, scan_id.as_uuid()).await?.map(|k| MeshKeys {
            ply_key: k.ply_key,
            ply_sha256: k.ply_sha256,
            glb_key: k.glb_key,
            glb_sha256: k.glb_sha256,
        }))
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
