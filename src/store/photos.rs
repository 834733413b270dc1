//! A scan's chosen wound photos (`crate::services::photos`) in MongoDB: one document per
//! scan in [`PHOTOS_COLLECTION`], keyed by `scan_id`, holding which frames were chosen and
//! their scores, never image bytes (the photo is read back from the scan's stored frame).
//! Written by the scan's finish (or, for a scan finished before finishes chose, on the first
//! request for its photos); a rewrite replaces it whole.

use chrono::{DateTime, TimeDelta, Utc};
use coherency_actors::reconstruction::PhotoPick;
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

/// A frame's capture time is its photo's time when it lies within this of the scan's
/// lifetime (created .. finished); else the scan's creation time is (a phone clock far off).
pub const CLOCK_SLACK: TimeDelta = TimeDelta::hours(1);

impl PhotoChoice {
    /// The choice as stored: `pick`'s photos dated within the scan's lifetime
    /// (`created`..`ended`, see [`taken_at`]), scores to three decimals.
    pub fn of_pick(pick: &PhotoPick, created: DateTime<Utc>, ended: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let photos = pick
            .photos
            .iter()
            .map(|p| StoredPhoto {
                seq: p.seq,
                taken_at: taken_at(created, ended, p.captured_at_us),
                width: p.width,
                height: p.height,
                sharpness: round3(p.sharpness),
                exposure: round3(p.exposure),
            })
            .collect();
        PhotoChoice { photos, reason: pick.reason.map(str::to_owned), scored: pick.scored, chosen_at: now }
    }
}

/// The frame's capture time if it falls within the scan's lifetime (`created`..`ended`,
/// give or take [`CLOCK_SLACK`]), else the scan's creation time.
pub fn taken_at(created: DateTime<Utc>, ended: DateTime<Utc>, captured_at_us: u64) -> DateTime<Utc> {
    i64::try_from(captured_at_us)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .filter(|t| *t >= created - CLOCK_SLACK && *t <= ended + CLOCK_SLACK)
        .unwrap_or(created)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn us(s: &str) -> u64 {
        u64::try_from(t(s).timestamp_micros()).unwrap()
    }

    #[test]
    fn a_frame_time_within_the_scans_lifetime_is_the_photos_and_a_far_one_is_not() {
        let (created, ended) = (t("2026-12-07T10:00:00Z"), t("2026-12-07T10:02:00Z"));
        assert_eq!(taken_at(created, ended, us("2026-12-07T10:01:30Z")), t("2026-12-07T10:01:30Z"));
        assert_eq!(taken_at(created, ended, us("2026-12-07T09:30:00Z")), t("2026-12-07T09:30:00Z"), "within the slack");
        for far in
            [0, 16_667, us("2025-11-24T00:00:00Z"), us("2026-12-07T03:02:01Z"), us("2026-12-07T11:02:01Z"), u64::MAX]
        {
            assert_eq!(taken_at(created, ended, far), created, "{far}");
        }
    }
}
