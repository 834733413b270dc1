//! FHIR R4 view of a wound record (issue #24): the wound as a `Condition` (id = the wound's
//! id) with its body site (SNOMED CT, laterality as a qualifier), aetiology, stage, onset and
//! the clinical status its wound status maps to. It is read at `GET /fhir/Condition/{id}` and
//! found by `GET /fhir/Condition?patient=` and `$everything` next to the patient record's
//! conditions; each wound size panel `Observation` names it in `focus`
//! (`crate::http::measurements::fhir`). Access and audit are the wound API's. The mapping is in
//! `docs/fhir.md` ("Condition (wound)").

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::SecondsFormat;
use coherency_protocol::ids::PatientId;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ok, principal, prune, reference, respond};
use crate::audit::AuditEvent;
use crate::auth::{self, Permission};
use crate::error::ApiError;
use crate::http::patients::path_id;
use crate::services::wounds::{Aetiology, Laterality, Wound, WoundStatus};
use crate::state::AppState;
use crate::store::wounds as store;

const SNOMED: &str = "http://snomed.info/sct";
/// Extension on `Condition.bodySite`: the side of the body (SNOMED CT laterality qualifier).
/// R4 has no element for it; R5's `BodyStructure.includedStructure.laterality` is the model.
pub const LATERALITY_EXTENSION: &str = "urn:coherency:fhir:StructureDefinition:body-site-laterality";
/// Extension on `Condition.bodySite`: the dashboard's body-map point (`x`, `y` in 0..1).
pub const BODY_MAP_EXTENSION: &str = "urn:coherency:fhir:StructureDefinition:body-map-point";

/// `Condition.code` for an aetiology: a SNOMED CT disorder where one names the wound type,
/// else `416462003 Wound`, with the aetiology in the text.
fn wound_code(a: Aetiology) -> Value {
    let (code, display, text) = match a {
        Aetiology::Pressure => ("399912005", "Pressure ulcer", "Pressure injury"),
        Aetiology::DiabeticFoot => ("280137006", "Diabetic foot ulcer", "Diabetic foot ulcer"),
        Aetiology::Burn => ("125666000", "Burn", "Burn"),
        Aetiology::Venous => ("416462003", "Wound", "Venous ulcer"),
        Aetiology::Arterial => ("416462003", "Wound", "Arterial ulcer"),
        Aetiology::Surgical => ("416462003", "Wound", "Surgical wound"),
        Aetiology::Trauma => ("416462003", "Wound", "Traumatic wound"),
        Aetiology::Other => ("416462003", "Wound", "Wound"),
    };
    json!({"coding": [{"system": SNOMED, "code": code, "display": display}], "text": text})
}

/// The laterality qualifier (none when unspecified).
fn laterality(l: Laterality) -> Option<Value> {
    let (code, display) = match l {
        Laterality::Left => (Some("7771000"), "Left"),
        Laterality::Right => (Some("24028007"), "Right"),
        Laterality::Bilateral => (Some("51440002"), "Right and left"),
        Laterality::Midline => (None, "Midline"),
        Laterality::Unspecified => return None,
    };
    let coding: Vec<Value> = code.iter().map(|c| json!({"system": SNOMED, "code": c, "display": display})).collect();
    Some(json!({"url": LATERALITY_EXTENSION, "valueCodeableConcept": {"coding": coding, "text": display}}))
}

/// `Condition.bodySite[0]` of a wound (also the wound size panel's `Observation.bodySite`).
pub fn body_site(site_code: Option<&str>, site_display: &str, lat: Laterality, map: Option<(f64, f64)>) -> Value {
    let mut extension: Vec<Value> = laterality(lat).into_iter().collect();
    if let Some((x, y)) = map {
        extension.push(json!({"url": BODY_MAP_EXTENSION, "extension": [
            {"url": "x", "valueDecimal": x}, {"url": "y", "valueDecimal": y}]}));
    }
    let coding: Vec<Value> = site_code.iter().map(|c| json!({"system": SNOMED, "code": c})).collect();
    prune(json!({"extension": extension, "coding": coding, "text": site_display}))
}

/// `Condition.clinicalStatus` of a wound status: open and healing wounds are `active`, a
/// healed one `resolved`, an amputated or otherwise closed one `inactive`.
fn clinical_status(s: WoundStatus) -> &'static str {
    match s {
        WoundStatus::Open | WoundStatus::Healing => "active",
        WoundStatus::Healed => "resolved",
        WoundStatus::Amputated | WoundStatus::ClosedOther => "inactive",
    }
}

/// The `Condition` for a wound.
pub fn condition_resource(w: &Wound) -> Value {
    let closed = !matches!(w.status, WoundStatus::Open | WoundStatus::Healing);
    let stage = w.stage.as_ref().map(|s| {
        let kind = match w.aetiology {
            Aetiology::Pressure => "NPIAP stage",
            Aetiology::DiabeticFoot => "Wagner grade",
            Aetiology::Burn => "Burn depth",
            _ => "Stage",
        };
        vec![json!({"summary": {"text": format!("{kind} {}", s.replace('_', " "))}, "type": {"text": kind}})]
    });
    prune(json!({
        "resourceType": "Condition",
        "id": w.id.to_string(),
        "meta": {"versionId": w.version.to_string(),
                 "lastUpdated": w.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true)},
        "identifier": [{"system": "urn:coherency:wound", "value": w.id.to_string()}],
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": clinical_status(w.status)}],
                           "text": w.status.as_str()},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "problem-list-item", "display": "Problem List Item"}]}],
        "code": wound_code(w.aetiology),
        "bodySite": [body_site(w.site_code.as_deref(), &w.site_display, w.laterality, w.body_map.map(|p| (p.x, p.y)))],
        "subject": reference("Patient", w.patient_id),
        "onsetDateTime": w.onset_date.map(|d| d.to_string()),
        "abatementDateTime": closed.then(|| w.status_date.to_string()),
        "recordedDate": w.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "recorder": reference("Practitioner", w.recorded_by),
        "stage": stage,
    }))
}

/// The patient's wounds as `Condition`s, oldest first.
pub async fn of_patient(state: &AppState, patient: Uuid) -> Result<Vec<(&'static str, Value)>, ApiError> {
    const MAX_WOUNDS: i64 = 200;
    let rows = store::list_for_patient(&state.stores.pg, patient, MAX_WOUNDS).await?;
    Ok(rows.into_iter().map(|r| ("Condition", condition_resource(&Wound::from_row(r)))).collect())
}

/// `GET /fhir/Condition/{id}`: a wound (id = the wound's id).
#[utoipa::path(get, path = "/fhir/Condition/{id}", tag = "fhir", security(("bearer" = ["patients:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "Condition (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_wound_condition(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::PatientsRead).await?;
            let id = path_id(&req, "id")?;
            let row = store::get(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
            state
                .access
                .patient(
                    &auth::caller_of(&req, &state, &who),
                    PatientId::from_uuid(row.patient_id),
                    "fhir.condition.read",
                )
                .await?;
            let w = Wound::from_row(row);
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.condition.read", "success")
                    .target("patient", w.patient_id)
                    .details(json!({"wound": w.id})),
            )
            .await?;
            Ok::<_, ApiError>(ok(condition_resource(&w)))
        }
        .await,
    )
}
