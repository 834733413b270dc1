//! FHIR R4 views of wound measurements: `Observation` (LOINC 72287-6 wound size panel, one
//! per `scan_measurements` row; read and search by `patient` and `date`) and the scan's mesh
//! as a `DocumentReference` (id = the scan's id) that each `Observation` is `derivedFrom`;
//! its attachments point at `GET /v1/scans/{id}/mesh`, which serves the mesh itself. The
//! same object-level access rules and audit rows as `/v1/scans/{id}/measurements`; errors
//! are `OperationOutcome`s. A measurement of a wound's scan names the wound's `Condition` in
//! `focus` and carries its body site. Mapping decisions are in `docs/fhir.md`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Datelike, Months, NaiveDate, SecondsFormat, Utc};
use coherency_protocol::ids::{PatientId, ScanId};
use coherency_protocol::Code;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Permission, Principal, Require};
use crate::error::ApiError;
use crate::http::fhir::wounds::body_site;
use crate::http::fhir::{base, bundle, ok, principal, prune, reference, respond};
use crate::http::input::{invalid, ConditionRef, FhirDateParam, Line, PatientRef};
use crate::http::patients::path_id;
use crate::services::wounds::Laterality;
use crate::state::AppState;
use crate::store::measurements::{list as list_measurements, MeasurementRecord, MeshKeys, ValuePm};

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
/// Extension on each component: the interval that contains the true value (see
/// `docs/fhir.md`, *Observation*).
pub const INTERVAL_EXTENSION: &str = "urn:coherency:fhir:StructureDefinition:measurement-interval";
/// Extension on a mesh attachment: its SHA-256 (hex). `Attachment.hash` is SHA-1 in R4.
pub const SHA256_EXTENSION: &str = "urn:coherency:fhir:StructureDefinition:sha256";
/// Most `date` parameters a search accepts (a range is two).
const MAX_DATE_PARAMS: usize = 2;

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A measurement row with what its `Observation` needs from the scan.
struct Observed {
    rec: MeasurementRecord,
    patient_id: Uuid,
    /// When the capture ended (the stream finished), else when the scan was created.
    effective: DateTime<Utc>,
    wound: Option<WoundSite>,
}

/// The wound a measured scan belongs to, as its `Observation` names it.
#[derive(Clone)]
struct WoundSite {
    id: Uuid,
    site_code: Option<String>,
    site_display: String,
    laterality: Laterality,
}

/// One panel component: LOINC code, text, the value converted from mm-based units.
fn component(code: &str, text: &str, v: ValuePm, scale: f64, unit: &str) -> Value {
    let q = |x: f64| json!({"value": round(x * scale), "unit": unit, "system": UCUM, "code": unit});
    json!({
        "extension": [{"url": INTERVAL_EXTENSION, "valueRange": {
            "low": q((v.value - v.uncertainty).max(0.0)), "high": q(v.value + v.uncertainty)}}],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": text},
        "valueQuantity": q(v.value),
    })
}

/// Four significant decimals of the FHIR unit: 0.1 µm in cm, 0.01 mm² in cm², 0.1 mm³ in mL.
fn round(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The `Observation` for one measurement row.
fn observation_resource(o: &Observed) -> Value {
    let m = &o.rec;
    let (method, performer) = match m.method.as_str() {
        "polygon" => (
            "Clinician-drawn outline on a keyframe of a LiDAR scan, measured on the fused 3D surface",
            m.created_by.map(|u| reference("Practitioner", u)),
        ),
        _ => ("Automatic segmentation of a LiDAR scan's fused 3D surface (Coherency)", None),
    };
    let note = format!(
        "Each component's extension {INTERVAL_EXTENSION} (valueRange) is the interval value ± uncertainty that \
         contains the true value (coverage factor 3 plus systematic bounds). Depth is the maximum depth below \
         the fitted skin surface; area is the wound outline's area on the skin surface. Outline: {}.",
        m.method
    );
    prune(json!({
        "resourceType": "Observation",
        "id": m.id.to_string(),
        "meta": {"lastUpdated": instant(m.created_at)},
        "identifier": [{"system": "urn:coherency:scan-measurement", "value": m.id.to_string()}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "exam", "display": "Exam"}]}],
        "code": {"coding": [{"system": LOINC, "code": "72287-6"}], "text": "Wound size panel"},
        "subject": reference("Patient", o.patient_id),
        "effectiveDateTime": instant(o.effective),
        "issued": instant(m.created_at),
        "performer": performer.into_iter().collect::<Vec<_>>(),
        "focus": o.wound.as_ref().map(|w| vec![reference("Condition", w.id)]),
        "bodySite": o.wound.as_ref().map(|w| body_site(w.site_code.as_deref(), &w.site_display, w.laterality, None)),
        "note": [{"text": note}],
        "method": {"text": method},
        "derivedFrom": m.mesh.as_ref().map(|_| vec![reference("DocumentReference", m.scan_id)]),
        "hasMember": tissue_members(m),
        "component": [
            component("39126-8", "Length of wound", m.length_mm, 0.1, "cm"),
            component("39125-0", "Width of wound", m.width_mm, 0.1, "cm"),
            component("39127-6", "Depth of wound (maximum)", m.max_depth_mm, 0.1, "cm"),
            component("89260-4", "Area of wound", m.outline_area_mm2, 0.01, "cm2"),
            component("94083-3", "Volume of wound", m.volume_mm3, 0.001, "mL"),
        ],
    }))
}

/// The `DocumentReference` for a scan's mesh.
fn mesh_resource(b: &str, scan_id: Uuid, patient_id: Uuid, effective: DateTime<Utc>, mesh: &MeshKeys) -> Value {
    let attachment = |fmt: &str, ct: &str, sha: &str| {
        json!({"attachment": {
            "extension": [{"url": SHA256_EXTENSION, "valueString": sha}],
            "contentType": ct,
            "url": format!("{}/v1/scans/{scan_id}/mesh?format={fmt}", b.trim_end_matches("/fhir")),
            "title": format!("mesh.{fmt}"),
        }})
    };
    prune(json!({
        "resourceType": "DocumentReference",
        "id": scan_id.to_string(),
        "identifier": [{"system": "urn:coherency:scan", "value": scan_id.to_string()}],
        "status": "current",
        "type": {"text": "Wound 3D surface mesh (LiDAR scan reconstruction)"},
        "subject": reference("Patient", patient_id),
        "date": instant(effective),
        "description": "Triangle mesh of the fused wound region, metres, world frame of the scan",
        "content": [
            attachment("glb", "model/gltf-binary", &mesh.glb_sha256),
            attachment("ply", "application/octet-stream", &mesh.ply_sha256),
        ],
    }))
}

// ---------------------------------------------------------------------------------------------
// Queries

/// A measurement with its scan's patient and effective time (when the capture ended, else
/// when the scan was created).
struct ObservedRow {
    id: Uuid,
    scan_id: Uuid,
    patient_id: Uuid,
    effective: DateTime<Utc>,
    wound_id: Option<Uuid>,
    site_code: Option<String>,
    site_display: Option<String>,
    laterality: Option<String>,
}

/// Loads the rows with their full records.
async fn observed(state: &AppState, rows: Vec<ObservedRow>) -> Result<Vec<Observed>, ApiError> {
    let mut out = Vec::with_capacity(rows.len());
    let mut cache: Vec<(Uuid, Vec<MeasurementRecord>)> = Vec::new();
    for r in rows {
        let (id, scan_id) = (r.id, r.scan_id);
        if !cache.iter().any(|(s, _)| *s == scan_id) {
            cache.push((scan_id, list_measurements(&state.stores.pg, scan_id).await?));
        }
        let rec = cache.iter().find(|(s, _)| *s == scan_id).and_then(|(_, l)| l.iter().find(|m| m.id == id));
        if let Some(rec) = rec {
            let wound = r.wound_id.map(|id| WoundSite {
                id,
                site_code: r.site_code.clone(),
                site_display: r.site_display.clone().unwrap_or_default(),
                laterality: r.laterality.as_deref().map_or(Laterality::Unspecified, Laterality::parse),
            });
            out.push(Observed { rec: rec.clone(), patient_id: r.patient_id, effective: r.effective, wound });
        }
    }
    Ok(out)
}

/// A `date` search parameter as a condition on the effective time: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateBound {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Parses a FHIR `date` parameter: prefix `eq` (default), `ge`, `gt`, `le`, `lt`; value
/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD` (UTC days) or an RFC 3339 date-time (to the second).
/// The value is a range `[lo, hi)`; `eq` matches inside it, `ge` from `lo`, `gt` from `hi`,
/// `le` before `hi`, `lt` before `lo`.
pub fn parse_date(raw: &str) -> Option<DateBound> {
    let (prefix, v) = match raw.get(..2) {
        Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &raw[2..]),
        _ => ("eq", raw),
    };
    let day = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
    let (lo, hi) = if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        let t = t.with_timezone(&Utc);
        (t, t + chrono::Duration::seconds(1))
    } else if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        (day(d), day(d.succ_opt()?))
    } else if v.len() == 7 {
        let d = NaiveDate::parse_from_str(&format!("{v}-01"), "%Y-%m-%d").ok()?;
        (day(d), day(d.checked_add_months(Months::new(1))?))
    } else if v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit()) {
        let d = NaiveDate::from_ymd_opt(v.parse().ok()?, 1, 1)?;
        (day(d), day(NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)?))
    } else {
        return None;
    };
    Some(match prefix {
        "ge" => DateBound { from: Some(lo), to: None },
        "gt" => DateBound { from: Some(hi), to: None },
        "le" => DateBound { from: None, to: Some(hi) },
        "lt" => DateBound { from: None, to: Some(lo) },
        _ => DateBound { from: Some(lo), to: Some(hi) },
    })
}

/// Query of `GET /fhir/Observation` (documentation; the handler parses the query string
/// itself because `date` may repeat).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservationSearch {
    /// The patient's id (or `Patient/{id}`).
    #[param(inline)]
    pub patient: PatientRef,
    /// Effective time: `[eq|ge|gt|le|lt]` + `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or an RFC 3339
    /// date-time; up to two (a range).
    #[param(inline)]
    pub date: Option<FhirDateParam>,
    /// `72287-6` (wound size panels) or `72371-8` (wound bed appearances), bare or as
    /// `http://loinc.org|…`; comma-separated values are alternatives; any other finds nothing.
    #[param(inline)]
    pub code: Option<ObservationCode>,
    /// The wound: `Condition/{id}` or the id (its measurements only).
    #[param(inline)]
    pub focus: Option<ConditionRef>,
}

/// A `code` search value: any one line up to 256 characters.
pub type ObservationCode = Line<0, 256>;

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /fhir/Observation/{id}`: one wound size panel (id = the measurement's id) or one
/// wound bed appearance (id = `{measurement id}-{class}`).
#[utoipa::path(get, path = "/fhir/Observation/{id}", tag = "fhir", security(("bearer" = ["scans:read"])),
    params(("id" = String, Path, max_length = 48,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(-(granulation|slough|eschar|epithelial))?$",
        description = "`{measurement id}` or `{measurement id}-{granulation|slough|eschar|epithelial}`")),
    responses((status = 200, description = "Observation (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_observation(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::ScansRead).await?;
            // `{measurement id}` (the panel) or `{measurement id}-{class}` (a tissue share).
            let raw = req.match_info().get("id").unwrap_or_default();
            let (id, class) = match raw.get(36..) {
                Some(rest) if rest.starts_with('-') => {
                    (raw[..36].parse::<Uuid>().map_err(|_| ApiError::not_found())?, Some(&rest[1..]))
                }
                _ => (path_id(&req, "id")?, None),
            };
            let rows = sqlx::query_as!(
                ObservedRow,
                r#"SELECT m.id, m.scan_id, s.patient_id, COALESCE(s.finished_at, s.created_at) AS "effective!",
                          w.id AS "wound_id?", w.site_code AS "site_code?", w.site_display AS "site_display?",
                          w.laterality AS "laterality?"
                     FROM scan_measurements m JOIN scans s ON s.id = m.scan_id
                     LEFT JOIN wounds w ON w.id = s.wound_id
                    WHERE m.id = $1"#,
                id
            )
            .fetch_all(&state.stores.pg)
            .await?;
            let o = observed(&state, rows).await?.pop().ok_or_else(ApiError::not_found)?;
            state
                .access
                .patient(
                    &auth::caller_of(&req, &state, &who),
                    PatientId::from_uuid(o.patient_id),
                    "fhir.observation.read",
                )
                .await?;
            let resource = match class {
                None => observation_resource(&o),
                Some(class) => {
                    let want = tissue_id(o.rec.id, class);
                    tissue_resources(&o)
                        .into_iter()
                        .find(|r| r["id"] == want.as_str())
                        .ok_or_else(ApiError::not_found)?
                }
            };
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.observation.read", "success")
                    .target("patient", o.patient_id)
                    .details(json!({"observation": raw, "scan": o.rec.scan_id})),
            )
            .await?;
            Ok::<_, ApiError>(ok(resource))
        }
        .await,
    )
}

/// `GET /fhir/Observation?patient=&date=`: the patient's wound size panels, each followed by
/// its wound bed appearances, newest scan first.
#[utoipa::path(get, path = "/fhir/Observation", tag = "fhir", security(("bearer" = ["scans:read"])), params(ObservationSearch),
    responses((status = 200, description = "Bundle searchset (application/fhir+json)"), (status = 400, description = "OperationOutcome naming the parameter"), (status = 404)))]
pub async fn search_observations(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(search(&state, &req).await)
}

async fn search(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = principal(req, state, Permission::ScansRead).await?;
    let mut patient = None;
    let mut dates = vec![];
    // Which kinds the `code` parameters allow: comma-separated values are alternatives, a
    // repeated parameter must hold as well.
    let mut kinds = PANEL | TISSUE;
    let mut focus = None;
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "patient" | "subject" if patient.is_none() => {
                patient = Some(PatientRef::new(v.as_ref()).map_err(|why| invalid(&k, why))?.id())
            }
            "date" if dates.len() < MAX_DATE_PARAMS => {
                let bad = |why| invalid("date", why);
                let v = FhirDateParam::new(v.as_ref()).map_err(bad)?;
                dates.push(parse_date(&v).ok_or_else(|| bad(FhirDateParam::RULE))?)
            }
            "focus" if focus.is_none() => {
                focus = Some(ConditionRef::new(v.as_ref()).map_err(|why| invalid("focus", why))?.id())
            }
            "code" => {
                ObservationCode::new(v.as_ref()).map_err(|why| invalid("code", why))?;
                kinds &= v.split(',').map(code_kind).fold(0, |a, k| a | k);
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
    state
        .access
        .patient(&auth::caller_of(req, state, &who), PatientId::from_uuid(pid), "fhir.observation.search")
        .await?;
    // Every bound must hold: the latest lower bound and the earliest upper one.
    let from = dates.iter().filter_map(|d| d.from).max();
    let to = dates.iter().filter_map(|d| d.to).min();
    let rows = if kinds == 0 { vec![] } else { patient_rows(state, pid, from, to, focus).await? };
    let found = observed(state, rows).await?;
    let resources = observation_resources(&found, kinds);
    let ids: Vec<&str> = resources.iter().filter_map(|(_, r)| r["id"].as_str()).collect();
    auth::audit(
        state,
        req,
        Some(&who),
        AuditEvent::new("fhir.observation.search", "success").target("patient", pid).details(json!({"ids": ids})),
    )
    .await?;
    let b = base(req);
    let n = resources.len();
    Ok(ok(bundle(&b, resources, n, vec![("self", format!("{b}/Observation?{}", req.query_string()))])))
}

/// `code` search kinds: the wound size panel, the wound bed appearances.
const PANEL: u8 = 1;
const TISSUE: u8 = 2;

/// The kind a `code` search value names (0: none served).
fn code_kind(code: &str) -> u8 {
    match code.strip_prefix("http://loinc.org|").unwrap_or(code) {
        "72287-6" => PANEL,
        BED_APPEARANCE => TISSUE,
        _ => 0,
    }
}

/// Each measurement's panel and then its wound bed appearances, as `kinds` allows.
fn observation_resources(found: &[Observed], kinds: u8) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for o in found {
        if kinds & PANEL != 0 {
            out.push(("Observation", observation_resource(o)));
        }
        if kinds & TISSUE != 0 {
            out.extend(tissue_resources(o).into_iter().map(|r| ("Observation", r)));
        }
    }
    out
}

/// The patient's measurements, effective in `[from, to)` and of wound `focus` when given,
/// newest first.
async fn patient_rows(
    state: &AppState,
    pid: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    focus: Option<Uuid>,
) -> Result<Vec<ObservedRow>, ApiError> {
    Ok(sqlx::query_as!(
        ObservedRow,
        r#"SELECT m.id, m.scan_id, s.patient_id, COALESCE(s.finished_at, s.created_at) AS "effective!",
                      w.id AS "wound_id?", w.site_code AS "site_code?", w.site_display AS "site_display?",
                      w.laterality AS "laterality?"
                 FROM scan_measurements m JOIN scans s ON s.id = m.scan_id
                 LEFT JOIN wounds w ON w.id = s.wound_id
                WHERE s.patient_id = $1
                  AND ($2::timestamptz IS NULL OR COALESCE(s.finished_at, s.created_at) >= $2)
                  AND ($3::timestamptz IS NULL OR COALESCE(s.finished_at, s.created_at) < $3)
                  AND ($4::uuid IS NULL OR s.wound_id = $4)
                ORDER BY COALESCE(s.finished_at, s.created_at) DESC, m.created_at, m.id"#,
        pid,
        from,
        to,
        focus
    )
    .fetch_all(&state.stores.pg)
    .await?)
}

/// Every measurement `Observation` of the patient and every mesh `DocumentReference` of
/// their scans, for `$everything` (the caller has checked access and audits the export).
pub async fn of_patient(state: &AppState, b: &str, pid: Uuid) -> Result<Vec<(&'static str, Value)>, ApiError> {
    let found = observed(state, patient_rows(state, pid, None, None, None).await?).await?;
    let mut out = observation_resources(&found, PANEL | TISSUE);
    for scan in crate::store::scans::list_for_patient(&state.stores.pg, pid, i64::MAX).await? {
        let keys =
            crate::store::reconstruction::mesh_keys(&state.stores.pg, scan.id).await.map_err(ApiError::internal)?;
        if let Some(mesh) = keys {
            let effective = scan.finished_at.unwrap_or(scan.created_at);
            out.push(("DocumentReference", mesh_resource(b, scan.id, scan.patient_id, effective, &mesh)));
        }
    }
    Ok(out)
}

/// `GET /fhir/DocumentReference/{id}`: the mesh of scan `id` (once reconstructed).
#[utoipa::path(get, path = "/fhir/DocumentReference/{id}", tag = "fhir", security(("bearer" = ["scans:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "DocumentReference (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_mesh_document(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = principal(&req, &state, Permission::ScansRead).await?;
            let (scan, mesh) = scan_mesh(&state, &req, &who, "fhir.documentreference.read").await?;
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.documentreference.read", "success").target("scan", scan.id),
            )
            .await?;
            let effective = scan.finished_at.unwrap_or(scan.created_at);
            Ok::<_, ApiError>(ok(mesh_resource(&base(&req), scan.id, scan.patient_id, effective, &mesh)))
        }
        .await,
    )
}

/// The visible scan named by the `id` path segment and its mesh keys (404 when either is
/// missing or the caller may not see the scan).
async fn scan_mesh(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    action: &str,
) -> Result<(crate::store::scans::ScanRecord, MeshKeys), ApiError> {
    let id = path_id(req, "id")?;
    let scan = state.scans.visible(&auth::caller_of(req, state, who), ScanId::from_uuid(id), action).await?;
    let mesh = crate::store::reconstruction::mesh_keys(&state.stores.pg, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    Ok((scan, mesh))
}

/// LOINC "Appearance of Wound base": the HL7 Skin and Wound Assessment IG's
/// `WoundBedAppearance` profile (`http://hl7.org/fhir/us/lower-extremity-skin-wound-assessment/
/// StructureDefinition/WoundBedAppearance`) fixes `Observation.code` to it, the tissue as
/// `valueCodeableConcept` from its `woundBedAppearanceVS`, and the share of the wound bed as
/// a component with LOINC [`BED_AREA_SHARE`] in `%`.
pub const BED_APPEARANCE: &str = "72371-8";
/// LOINC "Area of identified wound bed appearance/Area of wound bed of Wound base".
pub const BED_AREA_SHARE: &str = "72370-0";

/// The IG value set's SNOMED CT concept for a tissue class (`other` has none and is not
/// exported as an `Observation`).
fn tissue_concept(class: &str) -> Option<(&'static str, &'static str)> {
    Some(match class {
        "granulation" => ("225541009", "Granulation of tissue"),
        "slough" => ("449746002", "Wound slough"),
        "eschar" => ("421306004", "Necrotic eschar"),
        "epithelial" => ("449743005", "Wound epithelialization"),
        _ => return None,
    })
}

/// References to the measurement's wound bed appearance `Observation`s.
fn tissue_members(m: &MeasurementRecord) -> Vec<Value> {
    let shares = m.tissue.as_ref().map(|t| t.shares.as_slice()).unwrap_or_default();
    shares
        .iter()
        .filter(|s| tissue_concept(&s.class).is_some())
        .map(|s| json!({"reference": format!("Observation/{}", tissue_id(m.id, &s.class))}))
        .collect()
}

/// The `Observation` id of a measurement's tissue class: `{measurement id}-{class}`.
fn tissue_id(measurement: Uuid, class: &str) -> String {
    format!("{measurement}-{class}")
}

/// The wound bed appearance `Observation`s of one measurement (one per tissue class the IG
/// codes, `other` left out), from its tissue composition; none without one.
fn tissue_resources(o: &Observed) -> Vec<Value> {
    let m = &o.rec;
    let Some(tissue) = &m.tissue else { return vec![] };
    let classifier = &tissue.classifier;
    let pct = |x: f64| json!({"value": (x * 10.0).round() / 10.0, "unit": "%", "system": UCUM, "code": "%"});
    tissue
        .shares
        .iter()
        .filter_map(|s| {
            let (code, display) = tissue_concept(&s.class)?;
            Some(prune(json!({
                "resourceType": "Observation",
                "id": tissue_id(m.id, &s.class),
                "meta": {"lastUpdated": instant(m.created_at)},
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "exam", "display": "Exam"}]}],
                "code": {"coding": [{"system": LOINC, "code": BED_APPEARANCE, "display": "Appearance of Wound base"}],
                         "text": "Wound bed appearance"},
                "subject": reference("Patient", o.patient_id),
                "effectiveDateTime": instant(o.effective),
                "issued": instant(m.created_at),
                "focus": o.wound.as_ref().map(|w| vec![reference("Condition", w.id)]),
                "bodySite": o.wound.as_ref().map(|w| body_site(w.site_code.as_deref(), &w.site_display, w.laterality, None)),
                "method": {"text": format!("Colour classification of the wound surface on the fused 3D mesh of a LiDAR scan \
                                            ({classifier}), inside the {} outline", if m.method == "polygon" { "clinician's" } else { "automatic" })},
                "derivedFrom": [reference("Observation", m.id)],
                "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                "component": [{
                    "extension": [{"url": INTERVAL_EXTENSION, "valueRange": {
                        "low": pct((s.percent - s.percent_pm).max(0.0)), "high": pct((s.percent + s.percent_pm).min(100.0))}}],
                    "code": {"coding": [{"system": LOINC, "code": BED_AREA_SHARE,
                                         "display": "Area of identified wound bed appearance/Area of wound bed of Wound base"}]},
                    "valueQuantity": pct(s.percent),
                }],
            })))
        })
        .collect()
}

/// Query of `GET /v1/scans/{id}/mesh`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MeshQuery {
    /// `glb` (binary glTF, default) or `ply`.
    #[param(inline)]
    pub format: Option<MeshFormat>,
}

/// A mesh file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshFormat {
    /// Binary glTF.
    Glb,
    /// Stanford PLY.
    Ply,
}

/// `GET /v1/scans/{id}/mesh`: the reconstructed mesh (binary glTF or PLY) with its SHA-256.
#[utoipa::path(get, path = "/v1/scans/{id}/mesh", tag = "scans", security(("bearer" = ["scans:read"])),
    params(("id" = Uuid, Path), MeshQuery),
    responses((status = 200, description = "the mesh: binary glTF (`format=glb`) or PLY (`format=ply`)",
                content((Vec<u8> = "model/gltf-binary"), (Vec<u8> = "application/octet-stream")),
                headers(("x-content-sha256" = String, description = "hex SHA-256 of the body"))),
              (status = 400, description = "invalid_field (format)"),
              (status = 404, description = "not_found: no such scan visible to the caller, or not reconstructed")))]
#[tracing::instrument(skip_all)]
pub async fn mesh(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
) -> Result<HttpResponse, ApiError> {
    let q: MeshQuery = crate::http::patients::parse_query(&req)?;
    let glb = q.format.unwrap_or(MeshFormat::Glb) == MeshFormat::Glb;
    let (scan, keys) = scan_mesh(&state, &req, &who, "scan.mesh.read").await?;
    let (key, sha, ct, name) = if glb {
        (&keys.glb_key, &keys.glb_sha256, "model/gltf-binary", "mesh.glb")
    } else {
        (&keys.ply_key, &keys.ply_sha256, "application/octet-stream", "mesh.ply")
    };
    let bytes = state.stores.blobs.get(key).await.map_err(ApiError::internal)?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.mesh.read", "success").target("scan", scan.id).details(json!({"format": name})),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type(ct)
        .insert_header(("x-content-sha256", sha.as_str()))
        .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .body(bytes))
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/fhir/Observation").route(web::get().to(search_observations)))
        .service(resource("/fhir/Observation/{id}").route(web::get().to(read_observation)))
        .service(resource("/fhir/DocumentReference/{id}").route(web::get().to(read_mesh_document)))
        .service(resource("/v1/scans/{id}/mesh").route(web::get().to(mesh)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn date_parameters_become_half_open_ranges() {
        let d = parse_date("2026-11-26").unwrap();
        assert_eq!(d, DateBound { from: Some(t("2026-11-26T00:00:00Z")), to: Some(t("2026-11-27T00:00:00Z")) });
        assert_eq!(parse_date("ge2026-11").unwrap().from, Some(t("2026-11-01T00:00:00Z")));
        assert_eq!(parse_date("lt2026").unwrap().to, Some(t("2026-01-01T00:00:00Z")));
        assert_eq!(parse_date("le2026-12").unwrap().to, Some(t("2027-01-01T00:00:00Z")));
        assert_eq!(parse_date("gt2026-11-26T10:00:00+01:00").unwrap().from, Some(t("2026-11-26T09:00:01Z")));
        for bad in ["", "2026-13-01", "ne2026", "yesterday", "26-11-2026"] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
    }
}
