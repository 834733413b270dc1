//! FHIR R4 `Media`: each wound photo of a scan (`crate::services::photos`) as an image
//! `Media` whose `content.url` is the photo endpoint (`GET /v1/scans/{id}/photos/{seq}`, no
//! inline data), `partOf` the wound's `Condition`, `bodySite` the wound's site,
//! `createdDateTime` the photo's time. Id: `{scan id}-{seq}`. Read and search by
//! `patient`/`subject`; the same access rules and audit rows as the scan; errors are
//! `OperationOutcome`s. `docs/fhir.md`, *Media*.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::SecondsFormat;
use coherency_protocol::ids::{PatientId, ScanId};
use coherency_protocol::Code;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, Permission};
use crate::error::ApiError;
use crate::http::fhir::wounds::body_site;
use crate::http::fhir::{base, bundle, ok, principal, prune, reference, respond};
use crate::http::input::{invalid, PatientRef};
use crate::services::photos::MAX_GALLERY_SCANS;
use crate::services::wounds::Wound;
use crate::state::AppState;
use crate::store::photos::StoredPhoto;
use crate::store::scans::ScanRecord;

/// The `Media` for one photo of a scan.
fn media_resource(b: &str, scan: &ScanRecord, wound: Option<&Wound>, p: &StoredPhoto) -> Value {
    let server = b.trim_end_matches("/fhir");
    prune(json!({
        "resourceType": "Media",
        "id": format!("{}-{}", scan.id, p.seq),
        "identifier": [{"system": "urn:coherency:scan-photo", "value": format!("{}/{}", scan.id, p.seq)}],
        "status": "completed",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image", "display": "Image"}]},
        "subject": reference("Patient", scan.patient_id),
        "createdDateTime": p.taken_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        // R4 `Media` has no `reasonReference`; `partOf` (Reference(Any)) carries the link.
        "partOf": wound.map(|w| vec![reference("Condition", w.id)]),
        "bodySite": wound.map(|w| body_site(w.site_code.as_deref(), &w.site_display, w.laterality, w.body_map.map(|m| (m.x, m.y)))),
        "width": p.width,
        "height": p.height,
        "content": {
            "contentType": "image/jpeg",
            "url": format!("{server}/v1/scans/{}/photos/{}", scan.id, p.seq),
            "title": format!("scan-photo-{}.jpg", p.seq),
            "creation": p.taken_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        },
        "note": [{"text": format!("Wound photo from LiDAR scan {}: sharpness {}, exposure {}", scan.id, p.sharpness, p.exposure)}],
    }))
}

async fn wound_of(state: &AppState, scan: &ScanRecord) -> Result<Option<Wound>, ApiError> {
    let Some(id) = scan.wound_id else { return Ok(None) };
    Ok(crate::store::wounds::get(&state.stores.pg, id).await?.map(Wound::from_row))
}

/// Query of `GET /fhir/Media`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MediaSearch {
    /// The patient: `Patient/{id}` or the id. `subject` is accepted in its place (one of the
    /// two, once).
    #[param(inline)]
    pub patient: PatientRef,
}

/// `GET /fhir/Media/{id}`: one wound photo (id = `{scan id}-{seq}`).
#[utoipa::path(get, path = "/fhir/Media/{id}", tag = "fhir", security(("bearer" = ["scans:read"])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}-[0-9]{1,19}$", max_length = 56, description = "`{scan id}-{seq}`")),
    responses((status = 200, description = "Media (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_media(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::ScansRead).await?;
            let id = req.match_info().get("id").unwrap_or_default();
            // A UUID is 36 characters; the seq follows its dash.
            let (scan_id, seq) = id
                .get(..36)
                .and_then(|s| s.parse::<Uuid>().ok())
                .zip(id.get(37..).and_then(|s| s.parse::<u64>().ok()).filter(|_| id.as_bytes().get(36) == Some(&b'-')))
                .ok_or_else(ApiError::not_found)?;
            let caller = auth::caller_of(&req, &state, &who);
            let scan = state.scans.visible(&caller, ScanId::from_uuid(scan_id), "fhir.media.read").await?;
            let choice = state.photos.choice(&scan).await?;
            let photo = choice.photos.iter().find(|p| p.seq == seq).ok_or_else(ApiError::not_found)?;
            let wound = wound_of(&state, &scan).await?;
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.media.read", "success")
                    .target("scan", scan.id)
                    .details(json!({"patient_id": scan.patient_id, "seq": seq})),
            )
            .await?;
            Ok::<_, ApiError>(ok(media_resource(&base(&req), &scan, wound.as_ref(), photo)))
        }
        .await,
    )
}

/// `GET /fhir/Media?patient=`: the photos of the patient's scans (their newest 20), newest
/// scan first.
#[utoipa::path(get, path = "/fhir/Media", tag = "fhir", security(("bearer" = ["scans:read"])), params(MediaSearch),
    responses((status = 200, description = "Bundle searchset (application/fhir+json)"), (status = 400, description = "OperationOutcome naming the parameter"), (status = 404)))]
pub async fn search_media(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(search(&state, &req).await)
}

/// The photos of the patient's newest `max_scans` scans as `Media`, newest scan first (the
/// caller has checked access and audits).
pub async fn of_patient(
    state: &AppState,
    b: &str,
    pid: Uuid,
    max_scans: usize,
) -> Result<Vec<(&'static str, Value)>, ApiError> {
    let limit = i64::try_from(max_scans).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for scan in crate::store::scans::list_for_patient(&state.stores.pg, pid, limit).await? {
        let choice = state.photos.choice(&scan).await?;
        if choice.photos.is_empty() {
            continue;
        }
        let wound = wound_of(state, &scan).await?;
        out.extend(choice.photos.iter().map(|p| ("Media", media_resource(b, &scan, wound.as_ref(), p))));
    }
    Ok(out)
}

async fn search(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = principal(req, state, Permission::ScansRead).await?;
    let mut patient = None;
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "patient" | "subject" if patient.is_none() => {
                patient = Some(PatientRef::new(v.as_ref()).map_err(|why| invalid(&k, why))?.id())
            }
            other => {
                return Err(ApiError::field(
                    Code::InvalidField,
                    other,
                    format!("unsupported or repeated parameter `{other}`"),
                ))
            }
        }
    }
    let pid = patient.ok_or_else(|| ApiError::field(Code::InvalidField, "patient", "`patient` is required"))?;
    state.access.patient(&auth::caller_of(req, state, &who), PatientId::from_uuid(pid), "fhir.media.search").await?;
    let b = base(req);
    let resources = of_patient(state, &b, pid, MAX_GALLERY_SCANS).await?;
    let ids: Vec<&str> = resources.iter().filter_map(|(_, r)| r["id"].as_str()).collect();
    auth::audit(
        state,
        req,
        Some(&who),
        AuditEvent::new("fhir.media.search", "success").target("patient", pid).details(json!({"ids": ids})),
    )
    .await?;
    let n = resources.len();
    Ok(ok(bundle(&b, resources, n, vec![("self", format!("{b}/Media?{}", req.query_string()))])))
}
