//! Wound photos over HTTP (`crate::services::photos`): a scan's chosen colour frames
//! (`GET /v1/scans/{id}/photos`), one of them as JPEG without metadata
//! (`GET /v1/scans/{id}/photos/{seq}`), and a wound's dated gallery
//! (`GET /v1/wounds/{id}/photos`). Access is the scan's (or the wound's) patient, as for
//! reading the scan; another patient's scan answers 404. Every read is audited
//! (`scan.photos.read`, `scan.photo.read`, `wound.photos.read`); no photo byte is ever in a
//! URL or a log line.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use coherency_protocol::ids::ScanId;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require};
use crate::error::ApiError;
use crate::services::photos::MAX_GALLERY_SCANS;
use crate::state::AppState;
use crate::store::photos::{PhotoChoice, StoredPhoto};

/// One photo of a scan.
#[derive(Debug, Serialize, ToSchema)]
pub struct Photo {
    /// The colour frame's seq; the photo is `GET /v1/scans/{id}/photos/{seq}`.
    pub seq: u64,
    /// When the frame was captured (the phone's clock when it lies within the scan's
    /// lifetime, give or take an hour; else the scan's creation time).
    pub taken_at: DateTime<Utc>,
    pub width: u32,
    pub height: u32,
    /// Variance of the luma's Laplacian at ≤ 320 px (grey levels²): higher is sharper.
    pub sharpness: f64,
    /// 0..=1: mean luma near mid-grey and few clipped pixels.
    pub exposure: f64,
}

impl From<&StoredPhoto> for Photo {
    fn from(p: &StoredPhoto) -> Self {
        Self {
            seq: p.seq,
            taken_at: p.taken_at,
            width: p.width,
            height: p.height,
            sharpness: p.sharpness,
            exposure: p.exposure,
        }
    }
}

/// `GET /v1/scans/{id}/photos`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanPhotos {
    pub scan_id: Uuid,
    /// Up to 4, in seq order.
    pub photos: Vec<Photo>,
    /// Why `photos` is empty: `no_colour_frames` (the phone sent no colour image),
    /// `no_usable_colour_frames` (none decoded), `scan_not_finished` (asked again once the
    /// scan has finished, the photos are chosen then); `null` when there are photos.
    pub reason: Option<String>,
}

fn scan_photos(scan_id: Uuid, c: &PhotoChoice) -> ScanPhotos {
    ScanPhotos { scan_id, photos: c.photos.iter().map(Photo::from).collect(), reason: c.reason.clone() }
}

/// `GET /v1/scans/{id}/photos`: the scan's wound photos (chosen on the first request once
/// the scan has finished: the sharpest, best-exposed colour frames spread over the sweep;
/// `docs/measurement.md`, "Wound photos").
#[utoipa::path(get, path = "/v1/scans/{id}/photos", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ScanPhotos),
              (status = 404, description = "no such scan visible to the caller"),
              (status = 503, description = "unavailable: photos are being chosen for other scans (`Retry-After`)")))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth::caller_of(&req, &state, &who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(id.into_inner()), "scan.photos.read").await?;
    let choice = state.photos.choice(&scan).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.photos.read", "success").target("scan", scan.id).details(serde_json::json!({
            "patient_id": scan.patient_id,
            "count": choice.photos.len(),
        })),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .json(scan_photos(scan.id, &choice)))
}

/// `GET /v1/scans/{id}/photos/{seq}`: one photo, JPEG with its metadata (Exif, GPS, XMP,
/// comments) removed, pixels as the phone encoded them.
#[utoipa::path(get, path = "/v1/scans/{id}/photos/{seq}", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path), ("seq" = inline(crate::http::input::NonNegative), Path, description = "a photo's `seq` from `GET /v1/scans/{id}/photos`")),
    responses((status = 200, description = "the photo (`Content-Disposition: inline`, `Cache-Control: private, no-store`)", content((Vec<u8> = "image/jpeg"))),
              (status = 400, description = "invalid_field (seq)"),
              (status = 404, description = "no such scan visible to the caller, or no such photo of it"),
              (status = 503, description = "unavailable: photos are being chosen for other scans (`Retry-After`)")))]
#[tracing::instrument(skip_all)]
pub async fn photo(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, seq) = path.into_inner();
    let seq = crate::http::scans::frame_seq(&seq)?;
    let caller = auth::caller_of(&req, &state, &who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(id), "scan.photo.read").await?;
    let photo = state.photos.bytes(&scan, seq).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.photo.read", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"patient_id": scan.patient_id, "seq": seq})),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::CONTENT_DISPOSITION, format!("inline; filename=\"scan-photo-{seq}.jpg\"")))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .body(photo.jpeg))
}

/// One photo of a wound's gallery.
#[derive(Debug, Serialize, ToSchema)]
pub struct GalleryPhoto {
    pub scan_id: Uuid,
    /// The scan's creation time (the visit the photo belongs to).
    pub scan_date: DateTime<Utc>,
    #[serde(flatten)]
    pub photo: Photo,
}

/// `GET /v1/wounds/{id}/photos`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WoundPhotos {
    pub wound_id: Uuid,
    /// Newest first.
    pub photos: Vec<GalleryPhoto>,
    /// The wound's scans looked at (its newest, at most 20).
    pub scans: usize,
}

/// `GET /v1/wounds/{id}/photos`: the photos of the wound's scans, newest first, each with its
/// scan and date: a dated gallery of the wound.
#[utoipa::path(get, path = "/v1/wounds/{id}/photos", tag = "wounds", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = WoundPhotos),
              (status = 404, description = "no such wound, or not yours to see"),
              (status = 503, description = "unavailable: photos are being chosen for other scans (`Retry-After`)")))]
#[tracing::instrument(skip_all)]
pub async fn wound_gallery(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
) -> Result<HttpResponse, ApiError> {
    let wound = crate::http::wounds::visible(&state, &req, &who, "wound.photos.read").await?;
    let scans = state.photos.wound_scans(wound.patient_id, wound.id, MAX_GALLERY_SCANS).await?;
    let mut photos = Vec::new();
    for scan in &scans {
        let choice = state.photos.choice(scan).await?;
        photos.extend(choice.photos.iter().map(|p| GalleryPhoto {
            scan_id: scan.id,
            scan_date: scan.created_at,
            photo: Photo::from(p),
        }));
    }
    photos.sort_by(|a, b| {
        (b.scan_date, b.photo.taken_at, b.photo.seq).cmp(&(a.scan_date, a.photo.taken_at, a.photo.seq))
    });
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.photos.read", "success")
            .target("wound", wound.id)
            .details(serde_json::json!({"patient_id": wound.patient_id, "count": photos.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "private, no-store")).json(WoundPhotos {
        wound_id: wound.id,
        photos,
        scans: scans.len(),
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/v1/scans/{id}/photos").route(web::get().to(list)))
        .service(resource("/v1/scans/{id}/photos/{seq}").route(web::get().to(photo)))
        .service(resource("/v1/wounds/{id}/photos").route(web::get().to(wound_gallery)));
}
