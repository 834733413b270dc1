//! A scan's chosen wound photos (`crate::services::photos`) in MongoDB: one document per
//! scan in [`PHOTOS_COLLECTION`], keyed by `scan_id`, holding which frames were chosen and
//! their scores, never image bytes (the photo is read back from the scan's stored frame).
//! Written once the choice is made for a finished scan; a rewrite replaces it whole.

use chrono::{DateTime, Utc};
use coherency_actors::store::StoreError;
use coherency_protocol::ids::ScanId;
use mongodb::bson::{doc, Document};
use serde::{Deserialize, Serialize};

use super::scans::mongo_error;

/// The MongoDB collection of photo choices.
pub const PHOTOS_COLLECTION: &str = "scan_photos";

/// One chosen frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPhoto {
    pub seq: u64,
    pub taken_at: DateTime<Utc>,
    pub width: u32,
    pub height: u32,
    pub sharpness: f64,
    pub exposure: f64,
}

/// A scan's photo choice: the photos in seq order, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoChoice {
    pub photos: Vec<StoredPhoto>,
    /// `no_colour_frames` or `no_usable_colour_frames` when `photos` is empty.
    pub reason: Option<String>,
    /// Colour frames scored to make the choice.
    pub scored: u64,
    pub chosen_at: DateTime<Utc>,
}

fn malformed() -> StoreError {
    StoreError::Permanent("mongo: malformed photo choice".into())
}

/// The stored choice for the scan, if one was made.
pub async fn get(db: &mongodb::Database, scan_id: ScanId) -> Result<Option<PhotoChoice>, StoreError> {
    let found = db
        .collection::<Document>(PHOTOS_COLLECTION)
        .find_one(doc! { "scan_id": scan_id.to_string() })
        .await
        .map_err(|e| mongo_error(&e))?;
    let Some(d) = found else { return Ok(None) };
    let choice = serde_json::from_str(d.get_str("choice").map_err(|_| malformed())?).map_err(|_| malformed())?;
    Ok(Some(choice))
}

/// Stores the scan's choice, replacing an earlier one.
pub async fn put(db: &mongodb::Database, scan_id: ScanId, choice: &PhotoChoice) -> Result<(), StoreError> {
    let body = serde_json::to_string(choice).map_err(|_| malformed())?;
    let cmd = doc! {
        "update": PHOTOS_COLLECTION,
        "updates": [{
            "q": { "scan_id": scan_id.to_string() },
            "u": { "scan_id": scan_id.to_string(), "choice": body },
            "upsert": true,
        }],
    };
    db.run_command(cmd).await.map_err(|e| mongo_error(&e))?;
    Ok(())
}
