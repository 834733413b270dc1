//! Wound measurements of a scan: `GET /v1/scans/{id}/measurements` (the automatic
//! measurement written when reconstruction finishes, and every clinician re-measurement)
//! and `POST /v1/scans/{id}/measurements` (re-measure with a clinician-drawn outline on a
//! keyframe, from the stored frames: no re-streaming). `POST /v1/scans/{id}/measurements/preview`
//! answers what that outline measures without storing it, so a clinician sees the values
//! and their ± before confirming (posting the same outline to the first route); both go
//! through one handler path and one actor path (`RemeasureMode`). Object access is the
//! scan's (`crate::services::scans`): a scan the caller may not see answers 404. Audited.
//!
//! Every answer carries the scan's reconstruction [`ScanOutcome`]: `pending` until the finish
//! step is done, `measured`, `needs_outline` (the surface and its mesh exist but the
//! automatic measurement failed: the reason, as a stable code, and the keyframe a clinician
//! should draw the outline on) or `failed`. `GET /v1/scans/{id}` carries the same.

pub mod corrections;
pub mod fhir;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use coherency_actors::reconstruction::{
    check_outline, NewMeasurement, RemeasureError, RemeasureMode, RemeasureRequest, Remeasured, TissueFigures,
    WorkBudget,
};
use coherency_protocol::ids::ScanId;
use coherency_protocol::limits::{MAX_HEIGHT, MAX_WIDTH};
use coherency_protocol::{Code, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::measurements::{list as list_measurements, MeasurementRecord, MeshKeys, ValuePm};
use crate::store::reconstruction::outcome as stored_outcome;
use crate::store::scans::ScanRecord;

/// Most vertices a drawn outline may have.
pub const MAX_POLYGON_POINTS: usize = coherency_actors::reconstruction::MAX_OUTLINE_POINTS;

/// `GET /v1/scans/{id}/measurements` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeasurementList {
    pub scan_id: Uuid,
    /// The scan's status: measurements appear once it is `complete` (none if `failed`).
    pub status: String,
    /// What the scan's reconstruction came to.
    pub outcome: ScanOutcome,
    /// Oldest first: the automatic measurement, then clinician re-measurements.
    pub measurements: Vec<MeasurementRecord>,
}

/// Where a scan's reconstruction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeState {
    /// Not reconstructed yet (created, streaming or processing).
    Pending,
    /// The wound was measured automatically.
    Measured,
    /// The surface was reconstructed (its mesh is served) but the automatic measurement
    /// failed: a clinician should draw the outline (`POST /v1/scans/{id}/measurements`).
    NeedsOutline,
    /// The scan could not be reconstructed (or was cancelled): no mesh, no measurement.
    Failed,
}

/// Why the automatic measurement failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutcomeReason {
    /// Stable: `no_depression` (no depression deeper than the threshold near the target),
    /// `wound_exceeds_scan_region` (the depression reaches the edge of the search area),
    /// `rim_not_seen` (no closed outline around the wound), `not_enough_surface` (too little
    /// fused surface near the target), `measurement_failed` (anything else).
    pub code: String,
    /// In words (no patient data).
    pub message: String,
}

/// The frame suggested for drawing the outline: the accepted frame that faces the wound
/// most squarely with the wound well inside it. Its camera is the phone's, as streamed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuggestedKeyframe {
    /// Its seq: the `keyframe_seq` of the polygon re-measure.
    pub seq: u64,
    /// Depth image width, pixels (the polygon's `u` range is `0..=width − 1`).
    pub width: u32,
    /// Depth image height, pixels.
    pub height: u32,
    /// Row-major 3×3 intrinsics `[fx, s, cx, 0, fy, cy, 0, 0, 1]`, depth-image pixels.
    #[schema(min_items = 9, max_items = 9)]
    pub k: Vec<f64>,
    /// Row-major 4×4 world-from-camera pose, metres (OpenCV axes: x right, y down, z forward),
    /// in the mesh's world frame.
    #[schema(min_items = 16, max_items = 16)]
    pub pose: Vec<f64>,
}

/// What a scan's reconstruction came to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScanOutcome {
    pub state: OutcomeState,
    /// `needs_outline` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<OutcomeReason>,
    /// The frame to draw an outline on (`needs_outline`) or to adjust the automatic one on
    /// (`measured`, scans reconstructed since 2026-12-07), when a camera saw the wound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_keyframe: Option<SuggestedKeyframe>,
    /// Whether the mesh is served (`GET /v1/scans/{id}/mesh`, `DocumentReference/{id}`).
    pub mesh: bool,
}

/// The scan's reconstruction outcome, from its status and its stored outcome row.
pub async fn outcome_of(state: &AppState, scan: &ScanRecord) -> Result<ScanOutcome, ApiError> {
    let pending = || ScanOutcome { state: OutcomeState::Pending, reason: None, suggested_keyframe: None, mesh: false };
    let failed = || ScanOutcome { state: OutcomeState::Failed, reason: None, suggested_keyframe: None, mesh: false };
    match scan.status.as_str() {
        "complete" => {}
        "failed" | "cancelled" => return Ok(failed()),
        _ => return Ok(pending()),
    }
    let Some(row) = stored_outcome(&state.stores.pg, scan.id).await.map_err(ApiError::internal)? else {
        // Complete before outcomes were stored, with no automatic measurement (the
        // backfill made a row for every scan that had one): the reason was only in the
        // reconstruction document.
        return Ok(ScanOutcome {
            state: OutcomeState::NeedsOutline,
            reason: Some(OutcomeReason {
                code: "measurement_failed".into(),
                message: "the automatic measurement failed (reconstructed before outcomes were recorded)".into(),
            }),
            suggested_keyframe: None,
            mesh: false,
        });
    };
    let suggested_keyframe = row.suggested_keyframe.map(|k| SuggestedKeyframe {
        seq: k.seq,
        width: k.width,
        height: k.height,
        k: k.k.to_vec(),
        pose: k.pose.to_vec(),
    });
    if row.outcome == "measured" {
        return Ok(ScanOutcome { state: OutcomeState::Measured, reason: None, suggested_keyframe, mesh: true });
    }
    Ok(ScanOutcome {
        state: OutcomeState::NeedsOutline,
        reason: row.reason.map(|(code, message)| OutcomeReason { code, message }),
        suggested_keyframe,
        mesh: true,
    })
}

/// `POST /v1/scans/{id}/measurements` body: an outline drawn on a keyframe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolygonRequest {
    /// The frame the outline was drawn on (its `seq`).
    pub keyframe_seq: crate::http::input::NonNegative,
    /// The outline in that frame's image coordinates, `[[u, v], ...]` in pixels of the
    /// depth image (pixel centres at integer coordinates), 3 to 2000 points, each inside
    /// the keyframe (`0 ≤ u ≤ width − 1`, `0 ≤ v ≤ height − 1`; the schema states the
    /// largest frame's bounds), at most 8,960 px long and enclosing at least one pixel.
    #[schema(schema_with = polygon_schema)]
    pub polygon: Vec<[f64; 2]>,
}

/// The `polygon` schema: 3..=2000 `[u, v]` pairs, each coordinate within the largest
/// depth frame (`protocol::limits::MAX_WIDTH × MAX_HEIGHT`).
pub(crate) fn polygon_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Type};
    let coordinate = |max: u32, what: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0.0))
            .maximum(Some(f64::from(max - 1)))
            .description(Some(what.to_string()))
            .build()
    };
    let point = ArrayBuilder::new()
        .prefix_items([
            coordinate(MAX_WIDTH, "u, pixels: at most the keyframe's width − 1"),
            coordinate(MAX_HEIGHT, "v, pixels: at most the keyframe's height − 1"),
        ])
        .items(ArrayItems::False)
        .min_items(Some(2))
        .max_items(Some(2));
    ArrayBuilder::new()
        .items(point)
        .min_items(Some(3))
        .max_items(Some(MAX_POLYGON_POINTS))
        .description(Some(
            "The outline, [[u, v], ...] in the keyframe's depth-image pixels: 3 to 2000 points inside \
             the keyframe, at most 8960 px long, enclosing at least one pixel."
                .to_string(),
        ))
        .build()
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
    let caller = auth::caller_of(&req, &state, &who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(id.into_inner()), "scan.measurements.read").await?;
    let measurements = list_measurements(&state.stores.pg, scan.id).await?;
    let outcome = outcome_of(&state, &scan).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.measurements.read", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"count": measurements.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(MeasurementList { scan_id: scan.id, status: scan.status, outcome, measurements }))
}

/// `POST /v1/scans/{id}/measurements`: re-measures a finished scan with a clinician-drawn
/// outline and stores the measurement (`scans:measure`: clinicians and admins).
#[utoipa::path(post, path = "/v1/scans/{id}/measurements", tag = "scans", security(("bearer" = ["scans:measure"])),
    params(("id" = Uuid, Path)), request_body = PolygonRequest,
    responses((status = 201, body = MeasurementRecord),
              (status = 400, description = "invalid_field (polygon, keyframe_seq), unknown_field, malformed_json"),
              (status = 403, description = "forbidden, mfa_required"),
              (status = 404, description = "not_found: no such scan visible to the caller"),
              (status = 409, description = "conflict: the scan has not finished streaming"),
              (status = 413, description = "payload_too_large: re-fusing the scan would exceed the per-request allocation budget")))]
#[tracing::instrument(skip_all)]
pub async fn remeasure(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansMeasure>,
    id: web::Path<Uuid>,
    body: crate::http::Json<PolygonRequest>,
) -> Result<HttpResponse, ApiError> {
    let (scan, body, done) = measure_outline(&state, &req, &who, id.into_inner(), body, RemeasureMode::Store).await?;
    let id = done.id.ok_or_else(|| ApiError::internal("the measurement was not stored"))?;
    let rec = list_measurements(&state.stores.pg, scan.id)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::internal("the new measurement was not found"))?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.measurements.create", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"measurement_id": rec.id, "keyframe_seq": body.keyframe_seq.get()})),
    )
    .await?;
    Ok(HttpResponse::Created().json(rec))
}

/// `POST /v1/scans/{id}/measurements/preview` answer: what the outline measures, computed
/// exactly as `POST /v1/scans/{id}/measurements` computes what it stores, with the same
/// fields as a stored [`MeasurementRecord`] but no `id`, `created_by` or `created_at`:
/// **nothing is stored**. Posting the same body to `POST /v1/scans/{id}/measurements`
/// stores a measurement with these values.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeasurementPreview {
    pub scan_id: Uuid,
    /// Always `false`: a preview is not stored (confirm with `POST /v1/scans/{id}/measurements`).
    pub stored: bool,
    /// Always `polygon`.
    pub method: String,
    /// The keyframe the outline was drawn on.
    pub keyframe_seq: i64,
    /// The outline in the keyframe's image coordinates, as posted.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub polygon: Vec<[f64; 2]>,
    /// Area enclosed by the outline on the skin surface (the clinical wound area).
    pub outline_area_mm2: ValuePm,
    pub bed_area_mm2: ValuePm,
    pub perimeter_mm: ValuePm,
    pub length_mm: ValuePm,
    pub width_mm: ValuePm,
    pub max_depth_mm: ValuePm,
    pub mean_depth_mm: ValuePm,
    pub volume_mm3: ValuePm,
    /// `quadratic` or `quartic`.
    pub skin_model: String,
    pub skin_residual_mm: f64,
    pub missing_fraction: f64,
    /// The scan's mesh the measurement refers to.
    pub mesh: Option<MeshKeys>,
    /// The wound bed's tissue composition inside this outline; `null` when there is none,
    /// and then `tissue_unavailable` says why (as on a stored measurement).
    pub tissue: Option<TissueFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tissue_unavailable: Option<String>,
}

impl MeasurementPreview {
    fn of(m: NewMeasurement) -> Self {
        let f = m.figures;
        let pm = |v: coherency_actors::reconstruction::ValuePm| ValuePm { value: v.value, uncertainty: v.uncertainty };
        Self {
            scan_id: m.scan_id.as_uuid(),
            stored: false,
            method: m.method.as_str().to_string(),
            keyframe_seq: m.keyframe_seq.map_or(0, |k| i64::try_from(k).unwrap_or(i64::MAX)),
            polygon: m.polygon.unwrap_or_default(),
            outline_area_mm2: pm(f.outline_area_mm2),
            bed_area_mm2: pm(f.bed_area_mm2),
            perimeter_mm: pm(f.perimeter_mm),
            length_mm: pm(f.length_mm),
            width_mm: pm(f.width_mm),
            max_depth_mm: pm(f.max_depth_mm),
            mean_depth_mm: pm(f.mean_depth_mm),
            volume_mm3: pm(f.volume_mm3),
            skin_model: f.skin_model.to_string(),
            skin_residual_mm: f.skin_residual_mm,
            missing_fraction: f.missing_fraction,
            mesh: m.mesh.map(|k| MeshKeys {
                ply_key: k.ply_key,
                ply_sha256: k.ply_sha256,
                glb_key: k.glb_key,
                glb_sha256: k.glb_sha256,
            }),
            tissue_unavailable: m.tissue.reason().map(str::to_owned),
            tissue: m.tissue.composition().cloned(),
        }
    }
}

/// `POST /v1/scans/{id}/measurements/preview`: what a clinician-drawn outline measures,
/// computed as the stored re-measurement is but not stored, for the clinician to check the
/// values and their ± before confirming (`scans:measure`). Same checks, errors and work
/// bounds as `POST /v1/scans/{id}/measurements`.
#[utoipa::path(post, path = "/v1/scans/{id}/measurements/preview", tag = "scans", security(("bearer" = ["scans:measure"])),
    params(("id" = Uuid, Path)), request_body = PolygonRequest,
    responses((status = 200, body = MeasurementPreview),
              (status = 400, description = "invalid_field (polygon, keyframe_seq), unknown_field, malformed_json"),
              (status = 403, description = "forbidden, mfa_required"),
              (status = 404, description = "not_found: no such scan visible to the caller"),
              (status = 409, description = "conflict: the scan has not finished streaming"),
              (status = 413, description = "payload_too_large: re-fusing the scan would exceed the per-request allocation budget")))]
#[tracing::instrument(skip_all)]
pub async fn preview(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansMeasure>,
    id: web::Path<Uuid>,
    body: crate::http::Json<PolygonRequest>,
) -> Result<HttpResponse, ApiError> {
    let (scan, body, done) = measure_outline(&state, &req, &who, id.into_inner(), body, RemeasureMode::Preview).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.measurements.preview", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"keyframe_seq": body.keyframe_seq.get()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(MeasurementPreview::of(done.measurement)))
}

/// The one path of a re-measurement, stored or previewed: access, the body's checks, the
/// scan's state, then the actor (which re-fuses within the request's allocation budget).
async fn measure_outline(
    state: &AppState,
    req: &HttpRequest,
    who: &auth::Principal,
    scan_id: Uuid,
    body: crate::http::Json<PolygonRequest>,
    mode: RemeasureMode,
) -> Result<(ScanRecord, PolygonRequest, Remeasured), ApiError> {
    // Access first (a caller who may not see the scan learns nothing from the body's
    // checks); then the static bound (the largest frame) before any frame is read; the
    // keyframe's own size is checked once it is read, before the other frames are read or fused.
    let caller = auth::caller_of(req, state, who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(scan_id), "scan.measurements.read").await?;
    let body = body.parse()?;
    check_outline(&body.polygon, MAX_WIDTH, MAX_HEIGHT)?;
    if !matches!(scan.status.as_str(), "processing" | "complete" | "failed") {
        return Err(ApiError::new(Code::Conflict, "the scan has not finished streaming"));
    }
    let request = RemeasureRequest {
        scan_id: ScanId::from_uuid(scan.id),
        keyframe_seq: body.keyframe_seq.get().unsigned_abs(),
        polygon: body.polygon.clone(),
        created_by: who.user_id.as_uuid(),
        budget: Some(Arc::new(RequestBudget(crate::alloc::current()))),
        mode,
    };
    let done = coherency_actors::capture::remeasure(&state.capture, request).await?;
    Ok((scan, body, done))
}

/// A re-measurement's error as the API answers it: the field at fault named for a 400, a
/// 500 that says nothing of the store.
impl From<RemeasureError> for ApiError {
    fn from(e: RemeasureError) -> Self {
        match &e {
            RemeasureError::NoKeyframe => ApiError::field(e.code(), "keyframe_seq", e.to_string()),
            RemeasureError::Outline(_) => ApiError::field(e.code(), "polygon", e.to_string()),
            RemeasureError::NoFrames | RemeasureError::TooLarge(_) => ApiError::new(e.code(), e.to_string()),
            RemeasureError::Unavailable => ApiError::new(e.code(), e.to_string()),
            RemeasureError::Store(s) => ApiError::internal(s),
        }
    }
}

/// The request's allocation account, carried to the thread that re-fuses the scan, and its
/// budget.
pub(crate) struct RequestBudget(pub(crate) Option<Arc<crate::alloc::Account>>);

impl WorkBudget for RequestBudget {
    fn enter(&self) -> Box<dyn std::any::Any> {
        Box::new(self.0.as_ref().map(crate::alloc::enter))
    }

    fn check(&self, what: &'static str, bytes: usize) -> Result<(), String> {
        crate::alloc::check(what, bytes).map_err(|e| e.to_string())
    }
}
