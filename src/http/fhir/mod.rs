//! FHIR R4 (4.0.1) read and search over patient records, as `application/fhir+json`:
//! `Patient` (read, search by `name`, `birthdate`, `identifier`, `_count`), the patient's
//! `AllergyIntolerance`, `MedicationStatement`, `Condition`, `Coverage`, `RelatedPerson` and
//! `CareTeam`, the patient's wounds as `Condition`s (`wounds`), wound photos as `Media`
//! (`media`), and `Patient/{id}/$everything` (the right-of-access export). The same access
//! rules and audit rows as `/v1/patients`; errors are `OperationOutcome` resources.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use coherency_protocol::ids::PatientId;
use coherency_protocol::Code;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, Authenticated, Permission, Principal};
use crate::error::ApiError;
use crate::http::input::{invalid, Cursor, FhirBirthdate, Mrn, MrnIdentifier, NameQuery, PageSize, PatientRef};
use crate::http::patients::entries::{self, Kind, Stored};
use crate::http::patients::{self, Patient, Scope, SearchParams};
use crate::state::AppState;

pub mod media;
pub mod metadata;
pub mod wounds;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Plumbing

fn issue_code(code: Code) -> &'static str {
    match code.http_status() {
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 => "not-supported",
        409 => "conflict",
        412 | 428 => "conflict",
        413 => "too-costly",
        429 => "throttled",
        500..=599 => "exception",
        _ => "invalid",
    }
}

/// The `OperationOutcome` for an error code, message and field (also used by the envelope
/// middleware for errors answered before a FHIR handler runs: rate limit, body size, 405).
pub fn outcome_json(code: Code, message: &str, field: Option<&str>) -> Value {
    let mut issue = json!({
        "severity": "error",
        "code": issue_code(code),
        "details": {"coding": [{"system": "urn:coherency:error", "code": code.as_str()}], "text": message},
        "diagnostics": message,
    });
    if let Some(f) = field {
        issue["expression"] = json!([f]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

/// An `OperationOutcome` for an error, with the error's status; the envelope middleware
/// leaves it as it is.
pub fn outcome(e: &ApiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = HttpResponse::build(status);
    if let Some(secs) = e.retry_after {
        b.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    let mut resp = b.content_type(FHIR_JSON).body(outcome_json(e.code, &e.message, e.field.as_deref()).to_string());
    crate::error::mark_rendered(&mut resp);
    resp
}

pub(crate) fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok().content_type(FHIR_JSON).body(body.to_string())
}

/// Wraps a handler body: any error becomes an `OperationOutcome`.
pub(crate) fn respond(r: Result<HttpResponse, ApiError>) -> HttpResponse {
    r.unwrap_or_else(|e| outcome(&e))
}

/// Authenticates and checks `perm` (the same checks as `Require<P>`), after which errors are
/// still answered as FHIR.
pub(crate) async fn principal(req: &HttpRequest, state: &AppState, perm: Permission) -> Result<Principal, ApiError> {
    let Authenticated(p) = Authenticated::from_request(req, &mut actix_web::dev::Payload::None).await?;
    auth::authorize(state, req, &p, perm).await?;
    Ok(p)
}

pub(crate) fn base(req: &HttpRequest) -> String {
    let c = req.connection_info();
    format!("{}://{}/fhir", c.scheme(), c.host())
}

pub(crate) fn reference(kind: &str, id: impl std::fmt::Display) -> Value {
    json!({"reference": format!("{kind}/{id}")})
}

fn meta(version: i64, updated: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"versionId": version.to_string(), "lastUpdated": updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
}

fn text_concept(t: &str) -> Value {
    json!({"text": t})
}

fn coded(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

/// Drops `null` members so the output never carries empty elements (FHIR forbids them).
pub(crate) fn prune(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k, prune(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Resources

/// The identifier system of MRNs in an organisation.
pub fn mrn_system(org: &str) -> String {
    format!("urn:coherency:{org}:mrn")
}

/// A `Patient` resource.
pub fn patient_resource(p: &Patient) -> Value {
    let mut given = vec![json!(p.given_name)];
    if let Some(m) = &p.middle_name {
        given.push(json!(m));
    }
    let mut telecom = vec![];
    if let Some(ph) = &p.phone {
        telecom.push(json!({"system": "phone", "value": ph, "use": "mobile"}));
    }
    if let Some(e) = &p.email {
        telecom.push(json!({"system": "email", "value": e}));
    }
    let identifier: Vec<Value> = p
        .mrn
        .iter()
        .map(|m| {
            json!({"use": "usual", "type": coded("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
                   "system": mrn_system(&p.organization_id), "value": m})
        })
        .collect();
    let address: Vec<Value> = p
        .address
        .iter()
        .map(|a| {
            json!({"use": "home", "line": a.lines, "city": a.city, "state": a.region, "postalCode": a.postal_code, "country": a.country})
        })
        .collect();
    let communication: Vec<Value> = p
        .preferred_language
        .iter()
        .map(|l| json!({"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": l}], "text": l}, "preferred": true}))
        .collect();
    let extension: Vec<Value> = p
        .gender_identity
        .iter()
        .map(|g| {
            json!({"url": "http://hl7.org/fhir/StructureDefinition/patient-genderIdentity", "valueCodeableConcept": {"text": g}})
        })
        .collect();
    prune(json!({
        "resourceType": "Patient",
        "id": p.id.to_string(),
        "meta": meta(p.version, p.updated_at),
        "extension": extension,
        "identifier": identifier,
        "active": p.active,
        "name": [{"use": "official", "family": p.family_name, "given": given,
                  "prefix": p.prefix.iter().collect::<Vec<_>>(), "suffix": p.suffix.iter().collect::<Vec<_>>()}],
        "telecom": telecom,
        "gender": p.sex.as_str(),
        "birthDate": p.birth_date.to_string(),
        "address": address,
        "communication": communication,
    }))
}

fn parse_entry<T: serde::de::DeserializeOwned>(e: &Stored) -> Result<T, ApiError> {
    serde_json::from_value(e.data.clone()).map_err(ApiError::internal)
}

/// The FHIR resource for a stored entry (consents have none here).
pub fn entry_resource(kind: Kind, e: &Stored) -> Result<Option<(&'static str, Value)>, ApiError> {
    let subject = reference("Patient", e.patient_id);
    let m = meta(e.version, e.updated_at);
    let id = e.id.to_string();
    let out = match kind {
        Kind::Allergy => {
            let a: entries::Allergy = parse_entry(e)?;
            let status = serde_json::to_value(a.status).unwrap_or_default();
            let reaction: Vec<Value> = a
                .reaction
                .iter()
                .map(|r| json!({"manifestation": [text_concept(r)], "severity": a.severity.map(|s| serde_json::to_value(s).unwrap_or_default())}))
                .collect();
            (
                "AllergyIntolerance",
                json!({
                    "resourceType": "AllergyIntolerance", "id": id, "meta": m,
                    "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", status.as_str().unwrap_or("active")),
                    "code": text_concept(&a.substance),
                    "patient": subject,
                    "onsetDateTime": a.onset_date.map(|d| d.to_string()),
                    "recordedDate": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "reaction": reaction,
                }),
            )
        }
        Kind::Medication => {
            let md: entries::Medication = parse_entry(e)?;
            let period = (md.start_date.is_some() || md.end_date.is_some()).then(
                || json!({"start": md.start_date.map(|d| d.to_string()), "end": md.end_date.map(|d| d.to_string())}),
            );
            (
                "MedicationStatement",
                json!({
                    "resourceType": "MedicationStatement", "id": id, "meta": m,
                    "status": md.status.as_str(),
                    "medicationCodeableConcept": text_concept(&md.name),
                    "subject": subject,
                    "effectivePeriod": period,
                    "dateAsserted": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "dosage": md.dosage.iter().map(|d| json!({"text": d})).collect::<Vec<_>>(),
                }),
            )
        }
        Kind::Condition => {
            let c: entries::Condition = parse_entry(e)?;
            let status = serde_json::to_value(c.clinical_status).unwrap_or_default();
            let coding: Vec<Value> =
                c.snomed_code.iter().map(|s| json!({"system": "http://snomed.info/sct", "code": s})).collect();
            (
                "Condition",
                json!({
                    "resourceType": "Condition", "id": id, "meta": m,
                    "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical", status.as_str().unwrap_or("active")),
                    "code": {"coding": coding, "text": c.description},
                    "subject": subject,
                    "onsetDateTime": c.onset_date.map(|d| d.to_string()),
                    "recordedDate": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }),
            )
        }
        Kind::Coverage => {
            let c: entries::Coverage = parse_entry(e)?;
            let status = serde_json::to_value(c.status).unwrap_or_default();
            let period = (c.start_date.is_some() || c.end_date.is_some()).then(
                || json!({"start": c.start_date.map(|d| d.to_string()), "end": c.end_date.map(|d| d.to_string())}),
            );
            let mut class = vec![];
            if let Some(g) = &c.group_number {
                class.push(
                    json!({"type": coded("http://terminology.hl7.org/CodeSystem/coverage-class", "group"), "value": g}),
                );
            }
            if let Some(pl) = &c.plan_name {
                class.push(json!({"type": coded("http://terminology.hl7.org/CodeSystem/coverage-class", "plan"), "value": pl, "name": pl}));
            }
            (
                "Coverage",
                json!({
                    "resourceType": "Coverage", "id": id, "meta": m,
                    "status": status,
                    "subscriberId": c.member_id,
                    "beneficiary": subject,
                    "period": period,
                    "payor": [{"display": c.payer}],
                    "class": class,
                }),
            )
        }
        Kind::Contact => {
            let c: entries::Contact = parse_entry(e)?;
            let rel = serde_json::to_value(c.relationship).unwrap_or_default();
            let mut relationship = vec![json!({"text": rel})];
            if c.emergency {
                relationship.push(json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "C", "display": "Emergency Contact"}]}));
            }
            let mut telecom = vec![];
            if let Some(p) = &c.phone {
                telecom.push(json!({"system": "phone", "value": p}));
            }
            if let Some(em) = &c.email {
                telecom.push(json!({"system": "email", "value": em}));
            }
            (
                "RelatedPerson",
                json!({
                    "resourceType": "RelatedPerson", "id": id, "meta": m,
                    "active": true,
                    "patient": subject,
                    "relationship": relationship,
                    "name": [{"text": c.name}],
                    "telecom": telecom,
                }),
            )
        }
        Kind::Consent => return Ok(None),
    };
    Ok(Some((out.0, prune(out.1))))
}

/// The patient's `CareTeam` (one per patient, id = the patient's id).
pub fn care_team_resource(patient_id: Uuid, team: &[entries::CareTeamMember]) -> Value {
    let participant: Vec<Value> = team
        .iter()
        .map(|m| {
            json!({"role": [{"text": m.role}],
                   "member": {"reference": format!("Practitioner/{}", m.clinician_id), "display": m.display_name},
                   "period": {"start": m.added_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}})
        })
        .collect();
    prune(json!({
        "resourceType": "CareTeam",
        "id": patient_id.to_string(),
        "status": "active",
        "name": "Care team",
        "subject": reference("Patient", patient_id),
        "participant": participant,
    }))
}

pub(crate) fn bundle(base: &str, resources: Vec<(&str, Value)>, total: usize, links: Vec<(&str, String)>) -> Value {
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|(kind, r)| {
            let id = r["id"].as_str().unwrap_or_default().to_string();
            json!({"fullUrl": format!("{base}/{kind}/{id}"), "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    prune(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links.into_iter().map(|(rel, url)| json!({"relation": rel, "url": url})).collect::<Vec<_>>(),
        "entry": entry,
    }))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /fhir/Patient/{id}`
#[utoipa::path(get, path = "/fhir/Patient/{id}", tag = "fhir", security(("bearer" = ["patients:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "Patient (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_patient(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::PatientsRead).await?;
            let id = patients::path_id(&req, "id")?;
            state
                .access
                .patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(id), "fhir.patient.read")
                .await?;
            let p = patients::load(&state, id).await?.ok_or_else(ApiError::not_found)?;
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.patient.read", "success").target("patient", id),
            )
            .await?;
            let mut resp = ok(patient_resource(&p));
            resp.headers_mut().insert(
                header::ETAG,
                header::HeaderValue::from_str(&format!("W/\"{}\"", p.version)).map_err(ApiError::internal)?,
            );
            Ok::<_, ApiError>(resp)
        }
        .await,
    )
}

/// Query of `GET /fhir/Patient`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PatientSearch {
    /// Name words; accent- and typo-tolerant.
    #[param(inline)]
    pub name: Option<NameQuery>,
    /// `YYYY-MM-DD` (or `eqYYYY-MM-DD`).
    #[param(inline)]
    pub birthdate: Option<FhirBirthdate>,
    /// `system|value` or `value` (an MRN).
    #[param(inline)]
    pub identifier: Option<MrnIdentifier>,
    /// Page size (default 20).
    #[serde(rename = "_count")]
    #[param(inline)]
    pub count: Option<PageSize>,
    /// Continuation from a `next` link.
    #[serde(rename = "_cursor")]
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

/// `GET /fhir/Patient`: a `searchset` Bundle with `total` and a `next` link.
#[utoipa::path(get, path = "/fhir/Patient", tag = "fhir", security(("bearer" = ["patients:search"])), params(PatientSearch),
    responses((status = 200, description = "Bundle searchset (application/fhir+json)"), (status = 400, description = "OperationOutcome naming the parameter")))]
pub async fn search_patients(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::PatientsSearch).await?;
            let q: PatientSearch = patients::parse_query(&req)?;
            let mrn = q.identifier.map(|i| Mrn::new(i.mrn()).map_err(|why| invalid("identifier", why))).transpose()?;
            let birth_date = q.birthdate.map(|b| b.date());
            let params = patients::search_params(
                &state,
                patients::SearchQuery {
                    name: q.name,
                    birth_date,
                    mrn,
                    limit: q.count,
                    cursor: q.cursor,
                    include_inactive: None,
                },
            )
            .map_err(|mut e| {
                e.field = e.field.map(|f| match f.as_str() {
                    "birth_date" => "birthdate".into(),
                    "mrn" => "identifier".into(),
                    "limit" => "_count".into(),
                    "cursor" => "_cursor".into(),
                    _ => f,
                });
                e
            })?;
            let scope = Scope::of(&who, state.clock.now());
            let (items, next) = patients::search(&state.stores.pg, &params, &scope).await?;
            let total =
                patients::count(&state.stores.pg, &SearchParams { after: None, ..params.clone() }, &scope).await?;
            let mut resources = vec![];
            for s in &items {
                if let Some(p) = patients::load(&state, s.id).await? {
                    resources.push(("Patient", patient_resource(&p)));
                }
            }
            let ids: Vec<Uuid> = items.iter().map(|p| p.id).collect();
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.patient.search", "success").details(json!({"ids": ids})),
            )
            .await?;
            let b = base(&req);
            let self_url = format!("{b}/Patient?{}", req.query_string());
            let mut links = vec![("self", self_url)];
            if let Some(pos) = next {
                let mut qs: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
                    .into_owned()
                    .filter(|(k, _)| k != "_cursor")
                    .collect();
                qs.push(("_cursor".into(), patients::encode_cursor(&state, &pos)));
                let enc = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(qs).finish();
                links.push(("next", format!("{b}/Patient?{enc}")));
            }
            Ok::<_, ApiError>(ok(bundle(&b, resources, total as usize, links)))
        }
        .await,
    )
}

/// Query of the per-patient resource searches.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ByPatient {
    /// The patient's id (or `Patient/{id}`).
    #[param(inline)]
    pub patient: PatientRef,
}

async fn by_patient(
    state: &AppState,
    req: &HttpRequest,
    kind: Option<Kind>,
    name: &str,
) -> Result<HttpResponse, ApiError> {
    let who = principal(req, state, Permission::PatientsRead).await?;
    let q: ByPatient = patients::parse_query(req)?;
    let pid = q.patient.id();
    let action = format!("fhir.{}.search", name.to_lowercase());
    state.access.patient(&auth::caller_of(req, state, &who), PatientId::from_uuid(pid), &action).await?;
    let mut resources = vec![];
    match kind {
        Some(k) => {
            for e in entries::list_of(&state.stores.pg, pid, k).await? {
                if let Some(r) = entry_resource(k, &e)? {
                    resources.push(r);
                }
            }
            if k == Kind::Condition {
                resources.extend(wounds::of_patient(state, pid).await?);
            }
        }
        None => {
            let team = entries::care_team_of(&state.stores.pg, pid).await?;
            resources.push(("CareTeam", care_team_resource(pid, &team)));
        }
    }
    let ids: Vec<String> = resources.iter().map(|(_, r)| r["id"].as_str().unwrap_or_default().to_string()).collect();
    auth::audit(
        state,
        req,
        Some(&who),
        AuditEvent::new(&action, "success").target("patient", pid).details(json!({"ids": ids})),
    )
    .await?;
    let b = base(req);
    let n = resources.len();
    Ok(ok(bundle(&b, resources, n, vec![("self", format!("{b}/{name}?{}", req.query_string()))])))
}

macro_rules! by_patient_route {
    ($fn:ident, $kind:expr, $name:literal, $path:tt) => {
        #[doc = concat!("`GET ", $path, "?patient={id}`: a searchset Bundle of the patient's ", $name, " resources.")]
        #[utoipa::path(get, path = $path, tag = "fhir", security(("bearer" = ["patients:read"])), params(ByPatient),
            responses((status = 200, description = "Bundle searchset (application/fhir+json)"), (status = 400), (status = 404)))]
        pub async fn $fn(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
            respond(by_patient(&state, &req, $kind, $name).await)
        }
    };
}

by_patient_route!(allergies, Some(Kind::Allergy), "AllergyIntolerance", "/fhir/AllergyIntolerance");
by_patient_route!(medications, Some(Kind::Medication), "MedicationStatement", "/fhir/MedicationStatement");
by_patient_route!(conditions, Some(Kind::Condition), "Condition", "/fhir/Condition");
by_patient_route!(coverages, Some(Kind::Coverage), "Coverage", "/fhir/Coverage");
by_patient_route!(related_persons, Some(Kind::Contact), "RelatedPerson", "/fhir/RelatedPerson");
by_patient_route!(care_teams, None, "CareTeam", "/fhir/CareTeam");

/// `GET /fhir/Patient/{id}/$everything`: the whole record as one Bundle (right of access);
/// audited as an export.
#[utoipa::path(get, path = "/fhir/Patient/{id}/$everything", tag = "fhir", security(("bearer" = ["patients:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "Bundle searchset with every resource (application/fhir+json)"), (status = 404)))]
pub async fn everything(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::PatientsRead).await?;
            let id = patients::path_id(&req, "id")?;
            state
                .access
                .patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(id), "patient.export")
                .await?;
            let p = patients::load(&state, id).await?.ok_or_else(ApiError::not_found)?;
            let mut resources = vec![("Patient", patient_resource(&p))];
            for k in [Kind::Allergy, Kind::Medication, Kind::Condition, Kind::Coverage, Kind::Contact] {
                for e in entries::list_of(&state.stores.pg, id, k).await? {
                    if let Some(r) = entry_resource(k, &e)? {
                        resources.push(r);
                    }
                }
            }
            resources.extend(wounds::of_patient(&state, id).await?);
            let team = entries::care_team_of(&state.stores.pg, id).await?;
            resources.push(("CareTeam", care_team_resource(id, &team)));
            let b = base(&req);
            resources.extend(crate::http::measurements::fhir::of_patient(&state, &b, id).await?);
            resources.extend(media::of_patient(&state, &b, id, usize::MAX).await?);
            let ids: Vec<String> =
                resources.iter().map(|(k, r)| format!("{k}/{}", r["id"].as_str().unwrap_or_default())).collect();
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("patient.export", "success")
                    .target("patient", id)
                    .details(json!({"format": "fhir", "resources": ids})),
            )
            .await?;
            let n = resources.len();
            Ok::<_, ApiError>(ok(bundle(&b, resources, n, vec![("self", format!("{b}/Patient/{id}/$everything"))])))
        }
        .await,
    )
}

/// Registers the FHIR routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/fhir/metadata").route(web::get().to(metadata::metadata)))
        .service(resource("/fhir/Patient").route(web::get().to(search_patients)))
        .service(resource("/fhir/Patient/{id}/$everything").route(web::get().to(everything)))
        .service(resource("/fhir/Patient/{id}").route(web::get().to(read_patient)))
        .service(resource("/fhir/AllergyIntolerance").route(web::get().to(allergies)))
        .service(resource("/fhir/MedicationStatement").route(web::get().to(medications)))
        .service(resource("/fhir/Condition").route(web::get().to(conditions)))
        .service(resource("/fhir/Condition/{id}").route(web::get().to(wounds::read_wound_condition)))
        .service(resource("/fhir/Coverage").route(web::get().to(coverages)))
        .service(resource("/fhir/RelatedPerson").route(web::get().to(related_persons)))
        .service(resource("/fhir/CareTeam").route(web::get().to(care_teams)))
        .service(resource("/fhir/Media").route(web::get().to(media::search_media)))
        .service(resource("/fhir/Media/{id}").route(web::get().to(media::read_media)));
}
