//! Wounds over HTTP (issue #24): a patient's wounds (`/v1/patients/{id}/wounds`), one wound
//! with `ETag` / `If-Match` as the patient record has them (`/v1/wounds/{id}`), its assessments
//! — every completed measurement of its scans — with the baseline and exclusion marks
//! (`/v1/wounds/{id}/assessments`), and its healing trajectory (`/v1/wounds/{id}/trajectory`,
//! `crate::services::healing`). Access is the patient record's (`state.access.patient`: the
//! patient, their care team or a live break-glass grant, admins; anyone else 404, audited);
//! reads need `patients:read`, writes `wounds:write` (clinicians and admins). Every read and
//! write is audited.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use coherency_protocol::ids::PatientId;
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Principal, Require};
use crate::error::ApiError;
use crate::http::input::{Day, EntityTag, Int, Line, Patch, SnomedCode, Text};
use crate::http::patients::{etag, if_match, path_id};
use crate::services::healing::{self, Assessment, AssessmentRole, HealingMetrics, Settings};
use crate::services::wound_report::{self, PatientLine, ReportAssessment};
use crate::services::wounds::{
    check_stage, invalid, Aetiology, BodyMapPoint, Laterality, StatusChange, Wound, WoundError, WoundStatus,
};
use crate::state::AppState;
use crate::store::measurements::{tissue_of, ValuePm};
use crate::store::wounds as store;
use crate::store::wounds::WoundFields;
use coherency_actors::reconstruction::TissueFigures;

// ---------------------------------------------------------------------------------------------
// Bodies and their validation

/// `POST /v1/patients/{id}/wounds` body (and a scan's inline `wound`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWound {
    /// SNOMED CT body-structure concept id (`116315002` heel structure).
    pub site_code: Option<SnomedCode>,
    /// The site in words (`Left heel`).
    pub site_display: Line<1, 200>,
    /// Default `unspecified`.
    pub laterality: Option<Laterality>,
    pub body_map: Option<BodyMapPoint>,
    pub aetiology: Aetiology,
    /// `YYYY-MM-DD`, not after today.
    pub onset_date: Option<Day>,
    /// Only where the aetiology defines stages: pressure `1`–`4`, `unstageable`,
    /// `deep_tissue`; diabetic_foot (Wagner) `0`–`5`; burn `superficial`,
    /// `superficial_partial`, `deep_partial`, `full_thickness`.
    #[schema(pattern = "^[a-z0-9_]{1,32}$", max_length = 32)]
    pub stage: Option<String>,
    /// Default `open`.
    pub status: Option<WoundStatus>,
    /// When the status took effect, `YYYY-MM-DD`, not after today (default today).
    pub status_date: Option<Day>,
}

/// `PATCH /v1/wounds/{id}` body: a merge patch (absent keeps, `null` clears; `site_display`,
/// `aetiology`, `status` and `status_date` cannot be cleared). A new `status` is added to the
/// history with `status_date` (default today); `status_date` alone corrects the current one's.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WoundPatch {
    #[schema(value_type = Option<SnomedCode>)]
    pub site_code: Patch<SnomedCode>,
    #[schema(value_type = Line<1, 200>)]
    pub site_display: Patch<Line<1, 200>>,
    #[schema(value_type = Option<Laterality>)]
    pub laterality: Patch<Laterality>,
    #[schema(value_type = Option<BodyMapPoint>)]
    pub body_map: Patch<BodyMapPoint>,
    #[schema(value_type = Aetiology)]
    pub aetiology: Patch<Aetiology>,
    #[schema(value_type = Option<Day>)]
    pub onset_date: Patch<Day>,
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9_]{1,32}$", max_length = 32)]
    pub stage: Patch<String>,
    #[schema(value_type = WoundStatus)]
    pub status: Patch<WoundStatus>,
    #[schema(value_type = Day)]
    pub status_date: Patch<Day>,
}

impl WoundPatch {
    /// The fields this patch touches (for the audit row: names, never values).
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("site_code", self.site_code.is_set()),
            ("site_display", self.site_display.is_set()),
            ("laterality", self.laterality.is_set()),
            ("body_map", self.body_map.is_set()),
            ("aetiology", self.aetiology.is_set()),
            ("onset_date", self.onset_date.is_set()),
            ("stage", self.stage.is_set()),
            ("status", self.status.is_set()),
            ("status_date", self.status_date.is_set()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f)
        .collect()
    }
}

fn not_future(d: Day, today: NaiveDate, field: &'static str) -> Result<NaiveDate, WoundError> {
    if d.get() > today {
        return Err(invalid(field, format!("`{field}` must not be after today")));
    }
    Ok(d.get())
}

fn check_body_map(p: &BodyMapPoint) -> Result<(), WoundError> {
    if !(0.0..=1.0).contains(&p.x) {
        return Err(invalid("body_map.x", "`body_map.x` must be between 0 and 1"));
    }
    if !(0.0..=1.0).contains(&p.y) {
        return Err(invalid("body_map.y", "`body_map.y` must be between 0 and 1"));
    }
    Ok(())
}

impl NewWound {
    /// The validated columns of the new wound, its first status recorded by `by` at `now`.
    pub fn validate(self, by: Uuid, now: DateTime<Utc>) -> Result<WoundFields, WoundError> {
        let today = now.date_naive();
        check_stage(self.aetiology, self.stage.as_deref())?;
        if let Some(p) = &self.body_map {
            check_body_map(p)?;
        }
        let onset_date = self.onset_date.map(|d| not_future(d, today, "onset_date")).transpose()?;
        let status = self.status.unwrap_or_default();
        let status_date = self.status_date.map(|d| not_future(d, today, "status_date")).transpose()?.unwrap_or(today);
        let history = vec![StatusChange { status, date: status_date, recorded_by: by, recorded_at: now }];
        Ok(WoundFields {
            site_code: self.site_code.map(SnomedCode::into_inner),
            site_display: self.site_display.into_inner(),
            laterality: self.laterality.unwrap_or_default().as_str().into(),
            body_map: self.body_map.map(|p| (p.x, p.y)),
            aetiology: self.aetiology.as_str().into(),
            onset_date,
            stage: self.stage,
            status: status.as_str().into(),
            status_date,
            status_history: serde_json::to_value(history).unwrap_or_default(),
        })
    }
}

/// The wound's columns after `patch`, validated as a whole (a new aetiology must suit the
/// stage it keeps).
pub fn apply(current: &Wound, patch: WoundPatch, by: Uuid, now: DateTime<Utc>) -> Result<WoundFields, WoundError> {
    fn required<T>(v: Patch<T>, field: &'static str) -> Result<Option<T>, WoundError> {
        v.required(|| invalid(field, format!("`{field}` cannot be cleared")))
    }
    let today = now.date_naive();
    let mut f = current.fields();
    let mut aetiology = current.aetiology;
    patch.site_code.apply(&mut f.site_code, |c| Some(c.into_inner()));
    if let Some(d) = required(patch.site_display, "site_display")? {
        f.site_display = d.into_inner();
    }
    match patch.laterality {
        Patch::Absent => {}
        Patch::Null => f.laterality = Laterality::Unspecified.as_str().into(),
        Patch::Value(l) => f.laterality = l.as_str().into(),
    }
    patch.body_map.try_apply(&mut f.body_map, |p| -> Result<_, WoundError> {
        check_body_map(&p)?;
        Ok(Some((p.x, p.y)))
    })?;
    if let Some(a) = required(patch.aetiology, "aetiology")? {
        aetiology = a;
        f.aetiology = a.as_str().into();
    }
    patch.onset_date.try_apply(&mut f.onset_date, |d| not_future(d, today, "onset_date").map(Some))?;
    patch.stage.apply(&mut f.stage, Some);
    check_stage(aetiology, f.stage.as_deref())?;
    let status_date =
        required(patch.status_date, "status_date")?.map(|d| not_future(d, today, "status_date")).transpose()?;
    let mut history = current.status_history.clone();
    match required(patch.status, "status")? {
        Some(s) if s != current.status => {
            let date = status_date.unwrap_or(today);
            if date < current.status_date {
                return Err(invalid("status_date", "`status_date` must not be before the current status's date"));
            }
            history.push(StatusChange { status: s, date, recorded_by: by, recorded_at: now });
            f.status = s.as_str().into();
            f.status_date = date;
        }
        _ => {
            if let Some(date) = status_date {
                if let Some(last) = history.last_mut() {
                    last.date = date;
                    last.recorded_by = by;
                    last.recorded_at = now;
                }
                f.status_date = date;
            }
        }
    }
    f.status_history = serde_json::to_value(history).unwrap_or_default();
    Ok(f)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A patient's wounds.
#[derive(Debug, Serialize, ToSchema)]
pub struct WoundList {
    /// Oldest first.
    pub wounds: Vec<Wound>,
}

/// Query of `GET /v1/patients/{id}/wounds`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many (default 100), oldest first.
    #[param(inline)]
    pub limit: Option<Int<1, 200>>,
}

fn with_etag(mut b: actix_web::HttpResponseBuilder, w: &Wound) -> HttpResponse {
    b.insert_header((header::ETAG, etag(w.version))).json(w)
}

/// The wound `id` if the caller may see its patient (the refusal audited as `action`); a
/// wound that does not exist answers the same 404.
pub(crate) async fn visible(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    action: &str,
) -> Result<Wound, ApiError> {
    let id = path_id(req, "id")?;
    let row = store::get(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
    state.access.patient(&auth::caller_of(req, state, who), PatientId::from_uuid(row.patient_id), action).await?;
    Ok(Wound::from_row(row))
}

/// `GET /v1/patients/{id}/wounds`
#[utoipa::path(get, path = "/v1/patients/{id}/wounds", tag = "wounds", security(("bearer" = ["patients:read"])),
    params(("id" = Uuid, Path), ListQuery),
    responses((status = 200, body = WoundList), (status = 404, description = "no such patient, or not yours to see")))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let patient = path_id(&req, "id")?;
    state.access.patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(patient), "wound.list").await?;
    let q: ListQuery = crate::http::input::query(&req)?;
    let rows = store::list_for_patient(&state.stores.pg, patient, q.limit.map_or(100, |l| l.get())).await?;
    let wounds: Vec<Wound> = rows.into_iter().map(Wound::from_row).collect();
    let ids: Vec<Uuid> = wounds.iter().map(|w| w.id).collect();
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.list", "success").target("patient", patient).details(serde_json::json!({"ids": ids})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(WoundList { wounds }))
}

/// `POST /v1/patients/{id}/wounds`
#[utoipa::path(post, path = "/v1/patients/{id}/wounds", tag = "wounds", security(("bearer" = ["wounds:write"])),
    params(("id" = Uuid, Path)), request_body = NewWound,
    responses((status = 201, body = Wound, description = "created; `ETag` and `Location` headers"),
              (status = 400, description = "invalid_field naming the field (`stage` the aetiology does not define, a date after today), unknown_field, malformed_json"),
              (status = 404, description = "no such patient, or not yours to see")))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::WoundsWrite>,
    body: crate::http::Json<NewWound>,
) -> Result<HttpResponse, ApiError> {
    let patient = path_id(&req, "id")?;
    state.access.patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(patient), "wound.create").await?;
    let now = state.clock.now();
    let fields = body.parse()?.validate(who.user_id.as_uuid(), now)?;
    let id = Uuid::now_v7();
    store::insert(&state.stores.pg, id, patient, &fields, who.user_id.as_uuid(), now).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.create", "success")
            .target("wound", id)
            .details(serde_json::json!({"patient_id": patient})),
    )
    .await?;
    let wound = Wound::from_row(store::get(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?);
    let mut res = HttpResponse::Created();
    res.insert_header((header::LOCATION, format!("/v1/wounds/{id}")));
    Ok(with_etag(res, &wound))
}

/// `GET /v1/wounds/{id}`
#[utoipa::path(get, path = "/v1/wounds/{id}", tag = "wounds", security(("bearer" = ["patients:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Wound, description = "`ETag` header"), (status = 404, description = "no such wound, or not yours to see")))]
#[tracing::instrument(skip_all)]
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let wound = visible(&state, &req, &who, "wound.read").await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.read", "success")
            .target("wound", wound.id)
            .details(serde_json::json!({"patient_id": wound.patient_id})),
    )
    .await?;
    Ok(with_etag(HttpResponse::Ok(), &wound))
}

/// `PATCH /v1/wounds/{id}`: a merge patch guarded by `If-Match`.
#[utoipa::path(patch, path = "/v1/wounds/{id}", tag = "wounds", security(("bearer" = ["wounds:write"])),
    params(("id" = Uuid, Path), ("If-Match" = inline(EntityTag), Header, description = "the ETag last read")),
    request_body = WoundPatch,
    responses((status = 200, body = Wound, description = "`ETag` header"),
              (status = 400, description = "invalid_field naming the field (a stage the aetiology does not define, a date after today, a field that cannot be cleared)"),
              (status = 404, description = "no such wound, or not yours to see"),
              (status = 412, description = "precondition_failed: stale ETag"),
              (status = 428, description = "precondition_required: no If-Match")))]
#[tracing::instrument(skip_all)]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::WoundsWrite>,
    body: crate::http::Json<WoundPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = visible(&state, &req, &who, "wound.update").await?.id;
    let expected = if_match(&req)?;
    let patch = body.parse()?;
    let fields_touched = patch.fields();
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let current = Wound::from_row(store::get_for_update(&mut *tx, id).await?.ok_or_else(ApiError::not_found)?);
    if current.version != expected {
        return Err(ApiError::new(Code::PreconditionFailed, "the wound changed since you read it; read it again"));
    }
    let fields = apply(&current, patch, who.user_id.as_uuid(), now)?;
    store::update(&mut *tx, id, &fields, now).await?;
    tx.commit().await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.update", "success")
            .target("wound", id)
            .details(serde_json::json!({"patient_id": current.patient_id, "fields": fields_touched})),
    )
    .await?;
    let wound = Wound::from_row(store::get(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?);
    Ok(with_etag(HttpResponse::Ok(), &wound))
}

/// Why an assessment does not count.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Exclusion {
    pub reason: String,
    pub excluded_by: Uuid,
    pub excluded_at: DateTime<Utc>,
}

/// One assessment of a wound: a completed measurement of one of its scans, with the healing
/// figures at that point.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssessmentView {
    /// The measurement's id (`GET /v1/scans/{scan_id}/measurements`).
    pub id: Uuid,
    pub scan_id: Uuid,
    /// `auto` or `polygon` (a clinician's outline).
    pub method: String,
    /// When the scan was taken.
    pub taken_at: DateTime<Utc>,
    /// When the measurement was made.
    pub measured_at: DateTime<Utc>,
    /// Outline area (the clinical wound area).
    pub area_mm2: ValuePm,
    pub volume_mm3: ValuePm,
    pub max_depth_mm: ValuePm,
    /// How it enters the healing metrics.
    pub role: AssessmentRole,
    /// Present when a clinician excluded it.
    pub exclusion: Option<Exclusion>,
    pub days_since_baseline: Option<f64>,
    pub area_reduction_from_baseline_pct: Option<ValuePm>,
    pub area_reduction_from_previous_pct: Option<ValuePm>,
    /// The wound bed's tissue composition inside this outline (`docs/measurement.md`,
    /// *Tissue composition*); `null` when there is none, and then `tissue_unavailable` says why.
    pub tissue: Option<TissueFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tissue_unavailable: Option<String>,
    /// The granulation share of the wound bed, percent ± points (from `tissue`): the series
    /// a chart of the bed's healing follows.
    pub granulation_pct: Option<ValuePm>,
}

/// The share of `class` in a tissue composition, percent ± points.
pub fn tissue_share(t: &TissueFigures, class: &str) -> Option<ValuePm> {
    let s = t.shares.iter().find(|s| s.class == class)?;
    Some(ValuePm { value: s.percent, uncertainty: s.percent_pm })
}

/// `GET /v1/wounds/{id}/assessments` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssessmentList {
    pub wound_id: Uuid,
    /// In time order (scan time, then measurement time).
    pub assessments: Vec<AssessmentView>,
}

/// `GET /v1/wounds/{id}/trajectory` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trajectory {
    pub wound_id: Uuid,
    /// Every assessment in time order, with its role and figures.
    pub points: Vec<AssessmentView>,
    pub metrics: HealingMetrics,
}

/// The wound's assessments with their figures, and the metrics.
async fn assess(state: &AppState, wound: &Wound) -> Result<(Vec<AssessmentView>, HealingMetrics), ApiError> {
    let rows = store::assessments(&state.stores.pg, wound.id).await?;
    let points: Vec<Assessment> = rows
        .iter()
        .map(|r| Assessment {
            id: r.measurement_id,
            scan_id: r.scan_id,
            clinician: r.method == "polygon",
            taken_at: r.taken_at,
            measured_at: r.measured_at,
            area: ValuePm { value: r.area_mm2, uncertainty: r.area_mm2_pm },
            volume: ValuePm { value: r.volume_mm3, uncertainty: r.volume_mm3_pm },
            depth: ValuePm { value: r.max_depth_mm, uncertainty: r.max_depth_mm_pm },
            excluded: r.excluded_reason.is_some(),
        })
        .collect();
    let settings = Settings { on_track_reduction_pct: state.config.healing_on_track_reduction_pct };
    let (per_point, metrics) = healing::compute(&points, wound.baseline_assessment_id, settings);
    let by_id: std::collections::HashMap<Uuid, &store::AssessmentRow> =
        rows.iter().map(|r| (r.measurement_id, r)).collect();
    let views = per_point
        .into_iter()
        .filter_map(|m| {
            let r = *by_id.get(&m.id)?;
            let (tissue, tissue_unavailable) = tissue_of(r.tissue.clone(), r.tissue_reason.clone());
            Some(AssessmentView {
                id: r.measurement_id,
                scan_id: r.scan_id,
                method: r.method.clone(),
                taken_at: r.taken_at,
                measured_at: r.measured_at,
                area_mm2: ValuePm { value: r.area_mm2, uncertainty: r.area_mm2_pm },
                volume_mm3: ValuePm { value: r.volume_mm3, uncertainty: r.volume_mm3_pm },
                max_depth_mm: ValuePm { value: r.max_depth_mm, uncertainty: r.max_depth_mm_pm },
                role: m.role,
                exclusion: match (&r.excluded_reason, r.excluded_by, r.excluded_at) {
                    (Some(reason), Some(by), Some(at)) => {
                        Some(Exclusion { reason: reason.clone(), excluded_by: by, excluded_at: at })
                    }
                    _ => None,
                },
                days_since_baseline: m.days_since_baseline,
                area_reduction_from_baseline_pct: m.area_reduction_from_baseline_pct,
                area_reduction_from_previous_pct: m.area_reduction_from_previous_pct,
                granulation_pct: tissue.as_ref().and_then(|t| tissue_share(t, "granulation")),
                tissue,
                tissue_unavailable,
            })
        })
        .collect();
    Ok((views, metrics))
}

/// `GET /v1/wounds/{id}/assessments`
#[utoipa::path(get, path = "/v1/wounds/{id}/assessments", tag = "wounds", security(("bearer" = ["patients:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = AssessmentList), (status = 404, description = "no such wound, or not yours to see")))]
#[tracing::instrument(skip_all)]
pub async fn assessments(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let wound = visible(&state, &req, &who, "wound.assessments.read").await?;
    let (assessments, _) = assess(&state, &wound).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.assessments.read", "success")
            .target("wound", wound.id)
            .details(serde_json::json!({"patient_id": wound.patient_id, "count": assessments.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(AssessmentList { wound_id: wound.id, assessments }))
}

/// `GET /v1/wounds/{id}/trajectory`
#[utoipa::path(get, path = "/v1/wounds/{id}/trajectory", tag = "wounds", security(("bearer" = ["patients:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Trajectory), (status = 404, description = "no such wound, or not yours to see")))]
#[tracing::instrument(skip_all)]
pub async fn trajectory(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let wound = visible(&state, &req, &who, "wound.trajectory.read").await?;
    let (points, metrics) = assess(&state, &wound).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.trajectory.read", "success")
            .target("wound", wound.id)
            .details(serde_json::json!({"patient_id": wound.patient_id, "count": points.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(Trajectory { wound_id: wound.id, points, metrics }))
}

/// `PATCH /v1/wounds/{id}/assessments/{assessment_id}` body: one change per request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessmentMark {
    /// `true`: this assessment is the baseline (day 0 of the metrics); `false`: it no longer is
    /// (the first counted assessment is).
    pub baseline: Option<bool>,
    /// `true` (with `reason`): the assessment no longer counts; `false`: it counts again.
    pub excluded: Option<bool>,
    /// Why it is excluded (required with `excluded: true`).
    pub reason: Option<Text<1, 500>>,
}

/// `PATCH /v1/wounds/{id}/assessments/{assessment_id}`: marks an assessment as the baseline,
/// or excludes it with a reason (or lifts either). No `If-Match`: each mark is a single fact,
/// and the wound's version moves on with a baseline change.
#[utoipa::path(patch, path = "/v1/wounds/{id}/assessments/{assessment_id}", tag = "wounds", security(("bearer" = ["wounds:write"])),
    params(("id" = Uuid, Path), ("assessment_id" = Uuid, Path)), request_body = AssessmentMark,
    responses((status = 200, body = AssessmentView),
              (status = 400, description = "invalid_field: neither or both of `baseline` and `excluded`; `reason` missing with `excluded: true`"),
              (status = 404, description = "no such wound or assessment of it, or not yours to see"),
              (status = 409, description = "conflict: an excluded assessment cannot be the baseline")))]
#[tracing::instrument(skip_all)]
pub async fn mark(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::WoundsWrite>,
    body: crate::http::Json<AssessmentMark>,
) -> Result<HttpResponse, ApiError> {
    let wound = visible(&state, &req, &who, "wound.assessment.mark").await?;
    let assessment = path_id(&req, "assessment_id")?;
    let body = body.parse()?;
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let current = Wound::from_row(store::get_for_update(&mut *tx, wound.id).await?.ok_or_else(ApiError::not_found)?);
    if !store::has_assessment(&mut *tx, wound.id, assessment).await? {
        return Err(ApiError::not_found());
    }
    let excluded_now = store::assessments(&state.stores.pg, wound.id)
        .await?
        .iter()
        .any(|r| r.measurement_id == assessment && r.excluded_reason.is_some());
    let (action, details) = match (body.baseline, body.excluded) {
        (Some(b), None) => {
            if body.reason.is_some() {
                return Err(ApiError::field(Code::InvalidField, "reason", "`reason` goes with `excluded: true`"));
            }
            if b && excluded_now {
                return Err(ApiError::new(
                    Code::Conflict,
                    "an excluded assessment cannot be the baseline; include it first",
                ));
            }
            let target = if b {
                Some(assessment)
            } else if current.baseline_assessment_id == Some(assessment) {
                None
            } else {
                current.baseline_assessment_id
            };
            store::set_baseline(&mut *tx, wound.id, target, now).await?;
            ("wound.assessment.baseline", serde_json::json!({"assessment_id": assessment, "baseline": b}))
        }
        (None, Some(true)) => {
            let reason = body.reason.ok_or_else(|| {
                ApiError::field(Code::InvalidField, "reason", "say why the assessment is excluded (`reason`)")
            })?;
            store::exclude(&mut *tx, wound.id, assessment, reason.as_str(), who.user_id.as_uuid(), now).await?;
            if current.baseline_assessment_id == Some(assessment) {
                store::set_baseline(&mut *tx, wound.id, None, now).await?;
            }
            ("wound.assessment.exclude", serde_json::json!({"assessment_id": assessment}))
        }
        (None, Some(false)) => {
            if body.reason.is_some() {
                return Err(ApiError::field(Code::InvalidField, "reason", "`reason` goes with `excluded: true`"));
            }
            store::include(&mut *tx, assessment).await?;
            ("wound.assessment.include", serde_json::json!({"assessment_id": assessment}))
        }
        _ => {
            return Err(ApiError::field(Code::InvalidField, "baseline", "send one of `baseline` or `excluded`"));
        }
    };
    tx.commit().await?;
    let mut details = details;
    details["patient_id"] = serde_json::json!(current.patient_id);
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new(action, "success").target("wound", wound.id).details(details),
    )
    .await?;
    let wound = Wound::from_row(store::get(&state.stores.pg, wound.id).await?.ok_or_else(ApiError::not_found)?);
    let (views, _) = assess(&state, &wound).await?;
    let view = views.into_iter().find(|v| v.id == assessment).ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/wounds/{id}/report.pdf`
#[utoipa::path(get, path = "/v1/wounds/{id}/report.pdf", tag = "wounds", security(("bearer" = ["patients:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "the wound report (patient, wound, verdict and projection, chart, latest mesh, every assessment); audited as an export",
                content((Vec<u8> = "application/pdf"))),
              (status = 404, description = "no such wound, or not yours to see"),
              (status = 503, description = "unavailable: reports are being generated for others; `Retry-After`")))]
#[tracing::instrument(skip_all)]
pub async fn report(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let wound = visible(&state, &req, &who, "wound.report.export").await?;
    let (views, metrics) = assess(&state, &wound).await?;
    let patient = crate::http::patients::load(&state, wound.patient_id).await?.ok_or_else(ApiError::not_found)?;
    let name = [
        patient.prefix.as_deref(),
        Some(patient.given_name.as_str()),
        patient.middle_name.as_deref(),
        Some(patient.family_name.as_str()),
        patient.suffix.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| !p.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    // The mesh of the newest counted assessment's scan (else the newest of any) that has one.
    let mut newest: Vec<&AssessmentView> = views.iter().collect();
    newest.sort_by_key(|v| (matches!(v.role, AssessmentRole::Baseline | AssessmentRole::Used), v.taken_at));
    let mut mesh = None;
    for v in newest.iter().rev() {
        if let Some(keys) = crate::store::reconstruction::mesh_keys(&state.stores.pg, v.scan_id).await? {
            let glb = state.stores.blobs.get(&keys.glb_key).await.map_err(ApiError::internal)?;
            mesh = Some((glb.to_vec(), v.taken_at));
            break;
        }
    }
    let assessments: Vec<ReportAssessment> = views
        .iter()
        .map(|v| ReportAssessment {
            taken_at: v.taken_at,
            clinician: v.method == "polygon",
            area_mm2: v.area_mm2,
            volume_mm3: v.volume_mm3,
            max_depth_mm: v.max_depth_mm,
            role: v.role,
            days_since_baseline: v.days_since_baseline,
            area_reduction_from_baseline_pct: v.area_reduction_from_baseline_pct,
            exclusion: v.exclusion.as_ref().map(|e| e.reason.clone()),
            tissue: v
                .tissue
                .iter()
                .flat_map(|t| &t.shares)
                .map(|s| (s.class.clone(), ValuePm { value: s.percent, uncertainty: s.percent_pm }))
                .collect(),
        })
        .collect();
    let who_line = PatientLine {
        name,
        birth_date: Some(patient.birth_date),
        sex: Some(patient.sex.as_str().to_string()),
        mrn: patient.mrn.clone(),
    };
    let content = wound_report::compose(state.clock.now(), &who_line, &wound, &assessments, &metrics, mesh);
    let rendered = state.reports.render(content).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("wound.report.export", "success").target("wound", wound.id).details(serde_json::json!({
            "patient_id": wound.patient_id,
            "assessments": assessments.len(),
            "pages": rendered.pages,
            "bytes": rendered.pdf.len(),
        })),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/pdf")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", wound_report::file_name(wound.id)),
        ))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .body(rendered.pdf))
}

/// Registers the wound routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/v1/patients/{id}/wounds").route(web::get().to(list)).route(web::post().to(create)))
        .service(resource("/v1/wounds/{id}").route(web::get().to(read)).route(web::patch().to(update)))
        .service(resource("/v1/wounds/{id}/assessments").route(web::get().to(assessments)))
        .service(resource("/v1/wounds/{id}/assessments/{assessment_id}").route(web::patch().to(mark)))
        .service(resource("/v1/wounds/{id}/trajectory").route(web::get().to(trajectory)))
        .service(resource("/v1/wounds/{id}/report.pdf").route(web::get().to(report)));
}
