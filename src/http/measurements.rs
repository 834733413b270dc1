//! Wound measurements of a scan: `GET /v1/scans/{id}/measurements` (the automatic
//! measurement written when reconstruction finishes, and every clinician re-measurement)
//! and `POST /v1/scans/{id}/measurements` (re-measure with a clinician-drawn outline on a
//! keyframe, from the stored frames: no re-streaming). Object access is the scan's
//! (`crate::http::scans`): a scan the caller may not see answers 404. Audited.

pub mod fhir;

use actix_web::{web, HttpRequest, HttpResponse};
use coherency_protocol::ids::ScanId;
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require};
use crate::error::ApiError;
use crate::recon_hook::{list_measurements, MeasurementRecord, ReconstructionHook, RemeasureError};
use crate::state::AppState;

/// Most vertices a drawn outline may have.
pub const MAX_POLYGON_POINTS: usize = 2000;

/// `GET /v1/scans/{id}/measurements` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeasurementList {
    pub scan_id: Uuid,
    /// The scan's status: measurements appear once it is `complete` (none if `failed`).
    pub status: String,
    /// Oldest first: the automatic measurement, then clinician re-measurements.
    pub measurements: Vec<MeasurementRecord>,
}

/// `POST /v1/scans/{id}/measurements` body: an outline drawn on a keyframe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolygonRequest {
    /// The frame the outline was drawn on (its `seq`).
    pub keyframe_seq: u64,
    /// The outline in that frame's image coordinates, `[[u, v], ...]` in pixels of the
    /// depth image (pixel centres at integer coordinates), 3 to 2000 points.
    pub polygon: Vec<[f64; 2]>,
}

/// `GET /v1/scans/{id}/measurements`
#[utoipa::path(get, path = "/v1/scans/{id}/measurements", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = MeasurementList), (status = 404, description = "not_found: no such scan visible to the caller")))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scan = crate::http::scans::visible_scan(&state, &req, &who, id.into_inner(), "scan.measurements.read").await?;
    let measurements = list_measurements(&state.stores.pg, scan.id).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.measurements.read", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"count": measurements.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(MeasurementList { scan_id: scan.id, status: scan.status, measurements }))
}

/// `POST /v1/scans/{id}/measurements`: re-measures a finished scan with a clinician-drawn
/// outline (`scans:measure`: clinicians and admins).
#[utoipa::path(post, path = "/v1/scans/{id}/measurements", tag = "scans", security(("bearer" = ["scans:measure"])),
    params(("id" = Uuid, Path)), request_body = PolygonRequest,
    responses((status = 201, body = MeasurementRecord),
              (status = 400, description = "invalid_field (polygon, keyframe_seq), unknown_field, malformed_json"),
              (status = 403, description = "forbidden, mfa_required"),
              (status = 404, description = "not_found: no such scan visible to the caller"),
              (status = 409, description = "conflict: the scan has not finished streaming")))]
#[tracing::instrument(skip_all)]
pub async fn remeasure(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansMeasure>,
    id: web::Path<Uuid>,
    body: crate::http::Json<PolygonRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let scan = crate::http::scans::visible_scan(&state, &req, &who, id.into_inner(), "scan.measurements.read").await?;
    let n = body.polygon.len();
    if !(3..=MAX_POLYGON_POINTS).contains(&n) || body.polygon.iter().flatten().any(|v| !v.is_finite()) {
        return Err(ApiError::field(
            Code::InvalidField,
            "polygon",
            format!("polygon must have 3-{MAX_POLYGON_POINTS} finite [u, v] points"),
        ));
    }
    if !matches!(scan.status.as_str(), "processing" | "complete" | "failed") {
        return Err(ApiError::new(Code::Conflict, "the scan has not finished streaming"));
    }
    let hook = ReconstructionHook::new(&state.stores, state.clock.clone());
    let rec = hook
        .remeasure_polygon(ScanId::from_uuid(scan.id), body.keyframe_seq, body.polygon, who.user_id)
        .await
        .map_err(|e| match e {
            RemeasureError::NoKeyframe => ApiError::field(Code::InvalidField, "keyframe_seq", "no frame with that seq"),
            RemeasureError::NoFrames => ApiError::new(Code::Conflict, "the scan has no frames"),
            RemeasureError::Recon(e) => ApiError::field(Code::InvalidField, "polygon", e.to_string()),
            RemeasureError::Store(e) => ApiError::internal(e),
        })?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.measurements.create", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"measurement_id": rec.id, "keyframe_seq": body.keyframe_seq})),
    )
    .await?;
    Ok(HttpResponse::Created().json(rec))
}
