//! Wound scans over HTTP: create a scan (then stream it on `GET /v1/scans/{id}/stream`,
//! `crate::ws::scan`), read one, list a patient's, through `crate::services::scans`. Object
//! access follows the patient record (`crate::services::access`): the patient themself, a
//! clinician on their care team (or with a live break-glass grant), an admin. A scan the caller may not see answers 404,
//! as if it did not exist. Creating and streaming need the patient's scan-capture consent.
//! Every read and write is audited.

use actix_web::{web, HttpRequest, HttpResponse};
use coherency_protocol::ids::{ConsultId, PatientId, ScanId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require};
use crate::error::ApiError;
use crate::http::input::{Int, Line};
use crate::services::identity::Permission;
use crate::services::scans::ScanWound;
use crate::state::AppState;
use crate::store::scans::ScanRecord;
use coherency_protocol::Code;

/// `POST /v1/scans` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScan {
    /// The patient being scanned.
    pub patient_id: Uuid,
    /// Where the wound is, e.g. `left heel` or a SNOMED CT body-structure code.
    pub body_site: Line<1, 100>,
    /// The consult the scan is taken in, if any.
    #[serde(default)]
    pub consult_id: Option<Uuid>,
    /// The patient's wound the scan is of (else 409 `wound_of_another_patient`, field
    /// `wound_id`). With neither `wound_id` nor `wound`, the scan joins the patient's wound
    /// whose `site_display` reads `body_site`, or a new wound (aetiology `other`) is made from it.
    #[serde(default)]
    pub wound_id: Option<Uuid>,
    /// A new wound to create with the scan (not with `wound_id`; needs `wounds:write`).
    #[serde(default)]
    pub wound: Option<crate::http::wounds::NewWound>,
}

/// A scan list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanList {
    pub scans: Vec<ScanRecord>,
}

/// Query of `GET /v1/patients/{id}/scans`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many (default 50), newest first.
    #[param(inline)]
    pub limit: Option<Int<1, 200>>,
}

/// `POST /v1/scans`: creates a scan in `created`; the phone then streams it. With a
/// `consult_id`, the scan is asked for inside that consult: the room records
/// `scan_requested` and the patient's app is sent `scan_request` (`docs/consults.md`).
#[utoipa::path(post, path = "/v1/scans", tag = "scans", security(("bearer" = ["scans:create"])), request_body = CreateScan,
    responses((status = 201, body = ScanRecord), (status = 400, description = "invalid_field, unknown_field, malformed_json; invalid_field `wound` with both `wound_id` and `wound`, or a new wound breaking a rule (`stage`, dates)"),
              (status = 403, description = "consent_required, mfa_required; forbidden (field `wound`) creating a wound without `wounds:write`"),
              (status = 404, description = "not_found: no such patient visible to the caller, or no such consult"),
              (status = 409, description = "conflict: the consult is with another patient; consult_ended; wound_of_another_patient (field `wound_id`): no wound of this patient has that id")))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansCreate>,
    body: crate::http::Json<CreateScan>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let wound = match (body.wound_id, body.wound) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(Code::InvalidField, "wound", "name `wound_id` or a new `wound`, not both"))
        }
        (Some(id), None) => ScanWound::Existing(id),
        (None, Some(w)) => {
            if !who.has(Permission::WoundsWrite) {
                return Err(ApiError::field(Code::Forbidden, "wound", "creating a wound needs `wounds:write`"));
            }
            ScanWound::New(Box::new(w.validate(who.user_id.as_uuid(), state.clock.now())?))
        }
        (None, None) => ScanWound::BySite,
    };
    let (scan, consult) = state
        .scans
        .create(
            &auth::caller_of(&req, &state, &who),
            PatientId::from_uuid(body.patient_id),
            body.body_site.into_inner(),
            wound,
            body.consult_id.map(ConsultId::from_uuid),
            who.user_id,
        )
        .await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.create", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"patient_id": scan.patient_id})),
    )
    .await?;
    crate::dashboard::scan_created(&state, &scan).await;
    if let Some(c) = consult {
        state.consult_rooms.scan_requested(&c, scan.id, who.user_id.as_uuid()).await;
    }
    Ok(HttpResponse::Created().insert_header(("Location", format!("/v1/scans/{}", scan.id))).json(scan))
}

/// A scan with its reconstruction outcome (`GET /v1/scans/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanView {
    #[serde(flatten)]
    pub scan: ScanRecord,
    /// What its reconstruction came to (`pending` until it is done; see
    /// `GET /v1/scans/{id}/measurements`).
    pub outcome: crate::http::measurements::ScanOutcome,
}

/// `GET /v1/scans/{id}`
#[utoipa::path(get, path = "/v1/scans/{id}", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ScanView), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth::caller_of(&req, &state, &who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(id.into_inner()), "scan.read").await?;
    let outcome = crate::http::measurements::outcome_of(&state, &scan).await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("scan.read", "success").target("scan", scan.id)).await?;
    Ok(HttpResponse::Ok().json(ScanView { scan, outcome }))
}

/// `GET /v1/patients/{id}/scans`: the patient's scans, newest first.
#[utoipa::path(get, path = "/v1/patients/{id}/scans", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path), ListQuery), responses((status = 200, body = ScanList), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn list_for_patient(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = id.into_inner();
    let query: ListQuery = crate::http::input::query(&req)?;
    let limit = query.limit.map_or(50, |l| l.get());
    let caller = auth::caller_of(&req, &state, &who);
    let list = state.scans.list_for_patient(&caller, PatientId::from_uuid(patient_id), limit).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.list", "success")
            .target("patient", patient_id)
            .details(serde_json::json!({"count": list.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(ScanList { scans: list }))
}

/// A frame number from a path (`…/keyframes/{seq}`, `…/photos/{seq}`): 0 or more, else
/// 400 `invalid_field` naming `seq`.
pub(crate) fn frame_seq(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<i64>().ok().and_then(|v| u64::try_from(v).ok()).ok_or_else(|| {
        ApiError::field(coherency_protocol::Code::InvalidField, "seq", "seq is a frame number (0 or more)")
    })
}

/// `GET /v1/scans/{id}/keyframes/{seq}`: frame `seq` of the scan as the phone's depth
/// camera saw it, shaded as relief (`coherency_report::depth`), at the frame's own resolution:
/// a pixel of the picture is a pixel of the frame, as the outline re-measure's keyframe
/// coordinates are.
#[utoipa::path(get, path = "/v1/scans/{id}/keyframes/{seq}", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path), ("seq" = inline(crate::http::input::NonNegative), Path, description = "the frame's seq (e.g. the outcome's `suggested_keyframe.seq`)")),
    responses((status = 200, description = "greyscale PNG, the frame's width and height", content((Vec<u8> = "image/png"))),
              (status = 400, description = "invalid_field (seq)"),
              (status = 404, description = "no such scan visible to the caller, or no such frame stored")))]
#[tracing::instrument(skip_all)]
pub async fn keyframe_png(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, seq) = path.into_inner();
    let seq = frame_seq(&seq)?;
    let caller = auth::caller_of(&req, &state, &who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(id), "scan.keyframe.read").await?;
    let frame = crate::store::scans::read_frame(&state.stores.pg, &state.stores.blobs, ScanId::from_uuid(scan.id), seq)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let depth = frame.depth_metres().map_err(ApiError::internal)?;
    let k = &frame.intrinsics;
    let pinhole = coherency_report::depth::Pinhole {
        fx: f64::from(k[0]),
        fy: f64::from(k[4]),
        cx: f64::from(k[2]),
        cy: f64::from(k[5]),
    };
    let png =
        coherency_report::depth::depth_png(&depth, frame.width, frame.height, pinhole).map_err(ApiError::internal)?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.keyframe.read", "success")
            .target("scan", scan.id)
            .details(serde_json::json!({"seq": seq})),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "private, no-store"))
        .body(png))
}
