//! A clinician's corrections of a measurement's tissue classes (issue #26):
//! `POST /v1/scans/{id}/measurements/{measurement_id}/tissue-corrections` names the class of a
//! region drawn on a keyframe, recomputes the measurement's tissue composition with every
//! correction of it applied (`coherency_actors::reconstruction::corrections`) and stores both;
//! `GET` on the same path lists them; `GET /v1/admin/tissue-corrections.ndjson` exports every
//! correction with the classifier's view of the surface inside it, the labelled data a
//! training run reads (`recon/train/`). Access is the scan's; everything is audited.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use coherency_actors::reconstruction::corrections::{TissueClass, TissueSample, MAX_CORRECTIONS};
use coherency_actors::reconstruction::{
    check_outline, CorrectionRegion, MeasuredOutline, RetissueRequest, TissueFigures, TissueOutcome,
};
use coherency_protocol::ids::ScanId;
use coherency_protocol::limits::{MAX_HEIGHT, MAX_WIDTH};
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{polygon_schema, RequestBudget};
use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require};
use crate::error::ApiError;
use crate::http::patients::path_id;
use crate::state::AppState;
use crate::store::measurements::{list as list_measurements, replace_tissue};

/// Most corrections the export answers at once (`?after=` pages on).
pub const EXPORT_PAGE: i64 = 500;

/// A tissue class as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TissueClassName {
    Granulation,
    Slough,
    Eschar,
    Epithelial,
    Other,
}

impl TissueClassName {
    fn class(self) -> TissueClass {
        match self {
            Self::Granulation => TissueClass::Granulation,
            Self::Slough => TissueClass::Slough,
            Self::Eschar => TissueClass::Eschar,
            Self::Epithelial => TissueClass::Epithelial,
            Self::Other => TissueClass::Other,
        }
    }
}

/// `POST /v1/scans/{id}/measurements/{measurement_id}/tissue-corrections` body: a region drawn
/// on a keyframe and the class its wound surface is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRequest {
    /// The frame the region was drawn on (its `seq`).
    pub keyframe_seq: crate::http::input::NonNegative,
    /// The region, `[[u, v], ...]` in that frame's depth-image pixels (the same rules as an
    /// outline's).
    #[schema(schema_with = polygon_schema)]
    pub polygon: Vec<[f64; 2]>,
    /// The class every part of the wound surface inside the region takes.
    pub class: TissueClassName,
}

/// A stored correction.
#[derive(Debug, Serialize, ToSchema)]
pub struct Correction {
    pub id: Uuid,
    pub measurement_id: Uuid,
    pub keyframe_seq: i64,
    #[schema(value_type = Vec<Vec<f64>>)]
    pub polygon: Value,
    pub class: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
}

/// `POST …/tissue-corrections` answer: the correction, and the measurement's tissue with
/// every correction applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct Corrected {
    pub correction: Correction,
    /// The recomputed composition; `null` with `tissue_unavailable` when there is none.
    pub tissue: Option<TissueFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tissue_unavailable: Option<String>,
}

/// `GET …/tissue-corrections` answer, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrectionList {
    pub measurement_id: Uuid,
    pub corrections: Vec<Correction>,
}

struct Row {
    id: Uuid,
    measurement_id: Uuid,
    keyframe_seq: i64,
    polygon: Value,
    class: String,
    created_by: Uuid,
    created_at: DateTime<Utc>,
}

impl From<Row> for Correction {
    fn from(r: Row) -> Self {
        Correction {
            id: r.id,
            measurement_id: r.measurement_id,
            keyframe_seq: r.keyframe_seq,
            polygon: r.polygon,
            class: r.class,
            created_by: r.created_by,
            created_at: r.created_at,
        }
    }
}

async fn corrections_of(state: &AppState, measurement: Uuid) -> Result<Vec<Row>, ApiError> {
    Ok(sqlx::query_as!(
        Row,
        "SELECT id, measurement_id, keyframe_seq, polygon, class, created_by, created_at
           FROM tissue_corrections WHERE measurement_id = $1 ORDER BY created_at, id",
        measurement
    )
    .fetch_all(&state.stores.pg)
    .await?)
}

/// The scan (visible to the caller) and its measurement named by the path.
async fn target(
    state: &AppState,
    req: &HttpRequest,
    who: &auth::Principal,
    action: &str,
) -> Result<(crate::store::scans::ScanRecord, crate::store::measurements::MeasurementRecord), ApiError> {
    let scan_id = path_id(req, "id")?;
    let measurement_id = path_id(req, "measurement_id")?;
    let caller = auth::caller_of(req, state, who);
    let scan = state.scans.visible(&caller, ScanId::from_uuid(scan_id), action).await?;
    let m = list_measurements(&state.stores.pg, scan.id)
        .await?
        .into_iter()
        .find(|m| m.id == measurement_id)
        .ok_or_else(ApiError::not_found)?;
    Ok((scan, m))
}

fn polygon_of(v: &Value) -> Vec<[f64; 2]> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// `POST /v1/scans/{id}/measurements/{measurement_id}/tissue-corrections`
#[utoipa::path(post, path = "/v1/scans/{id}/measurements/{measurement_id}/tissue-corrections", tag = "scans",
    security(("bearer" = ["scans:measure"])), params(("id" = Uuid, Path), ("measurement_id" = Uuid, Path)),
    request_body = CorrectionRequest,
    responses((status = 201, body = Corrected),
              (status = 400, description = "invalid_field (polygon, keyframe_seq, class), unknown_field, malformed_json"),
              (status = 403, description = "forbidden, mfa_required"),
              (status = 404, description = "not_found: no such scan or measurement visible to the caller"),
              (status = 409, description = "conflict: the measurement has no tissue composition to correct, already has the most corrections, or another correction of it was made meanwhile"),
              (status = 413, description = "payload_too_large: re-fusing the scan would exceed the per-request allocation budget")))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansMeasure>,
    body: crate::http::Json<CorrectionRequest>,
) -> Result<HttpResponse, ApiError> {
    let (scan, m) = target(&state, &req, &who, "scan.tissue.correct").await?;
    let body = body.parse()?;
    check_outline(&body.polygon, MAX_WIDTH, MAX_HEIGHT)?;
    if m.tissue.is_none() {
        let why = m.tissue_unavailable.as_deref().unwrap_or("not_analysed");
        return Err(ApiError::new(Code::Conflict, format!("the measurement has no tissue composition ({why})")));
    }
    let earlier = corrections_of(&state, m.id).await?;
    if earlier.len() >= MAX_CORRECTIONS {
        return Err(ApiError::new(Code::Conflict, "the measurement already has the most corrections"));
    }
    let region = |seq: i64, polygon: Vec<[f64; 2]>, class: TissueClass| CorrectionRegion {
        keyframe_seq: seq.unsigned_abs(),
        polygon,
        class,
    };
    let mut regions: Vec<CorrectionRegion> = earlier
        .iter()
        .filter_map(|r| Some(region(r.keyframe_seq, polygon_of(&r.polygon), TissueClass::parse(&r.class)?)))
        .collect();
    regions.push(region(body.keyframe_seq.get(), body.polygon.clone(), body.class.class()));
    let outline = match (m.method.as_str(), m.keyframe_seq, &m.polygon) {
        ("polygon", Some(seq), Some(p)) => {
            MeasuredOutline::Polygon { keyframe_seq: seq.unsigned_abs(), polygon: polygon_of(p) }
        }
        _ => MeasuredOutline::Auto,
    };
    let request = RetissueRequest {
        scan_id: ScanId::from_uuid(scan.id),
        outline,
        corrections: regions,
        budget: Some(Arc::new(RequestBudget(crate::alloc::current()))),
    };
    let done = coherency_actors::capture::retissue(&state.capture, request).await?;
    let mine = done.regions.last().ok_or_else(|| ApiError::internal("no region answered"))?;
    let classifier = done.tissue.composition().map(|t| t.classifier.clone());
    let samples: Vec<Value> = mine.samples.iter().map(sample_json).collect();
    let now = state.clock.now();
    let id = Uuid::now_v7();
    // One measurement's corrections are stored one at a time, and its composition must be the
    // one of every stored correction: a correction made meanwhile sends this one back.
    let mut tx = state.stores.pg.begin().await?;
    sqlx::query_scalar!("SELECT id FROM scan_measurements WHERE id = $1 FOR UPDATE", m.id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let now_stored =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM tissue_corrections WHERE measurement_id = $1"#, m.id)
            .fetch_one(&mut *tx)
            .await?;
    if usize::try_from(now_stored).ok() != Some(earlier.len()) {
        return Err(ApiError::new(Code::Conflict, "another correction of this measurement was made meanwhile; retry"));
    }
    sqlx::query!(
        "INSERT INTO tissue_corrections (id, measurement_id, scan_id, keyframe_seq, polygon, class, region_world,
                                         samples, classifier, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        id,
        m.id,
        scan.id,
        body.keyframe_seq.get(),
        json!(body.polygon),
        body.class.class().as_str(),
        json!(mine.outline_world),
        Value::Array(samples),
        classifier,
        who.user_id.as_uuid(),
        now,
    )
    .execute(&mut *tx)
    .await?;
    replace_tissue(&mut *tx, m.id, &done.tissue, now).await.map_err(ApiError::internal)?;
    tx.commit().await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.tissue.correct", "success").target("scan", scan.id).details(json!({
            "measurement_id": m.id, "correction_id": id, "class": body.class.class().as_str(),
            "keyframe_seq": body.keyframe_seq.get(),
        })),
    )
    .await?;
    let correction = Correction {
        id,
        measurement_id: m.id,
        keyframe_seq: body.keyframe_seq.get(),
        polygon: json!(body.polygon),
        class: body.class.class().as_str().to_owned(),
        created_by: who.user_id.as_uuid(),
        created_at: now,
    };
    let (tissue, tissue_unavailable) = match done.tissue {
        TissueOutcome::Composition(t) => (Some(t), None),
        TissueOutcome::Unavailable(why) => (None, Some(why)),
    };
    Ok(HttpResponse::Created().json(Corrected { correction, tissue, tissue_unavailable }))
}

/// `GET /v1/scans/{id}/measurements/{measurement_id}/tissue-corrections`
#[utoipa::path(get, path = "/v1/scans/{id}/measurements/{measurement_id}/tissue-corrections", tag = "scans",
    security(("bearer" = ["scans:read"])), params(("id" = Uuid, Path), ("measurement_id" = Uuid, Path)),
    responses((status = 200, body = CorrectionList), (status = 404, description = "not_found: no such scan or measurement visible to the caller")))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansRead>,
) -> Result<HttpResponse, ApiError> {
    let (scan, m) = target(&state, &req, &who, "scan.tissue.corrections.read").await?;
    let corrections: Vec<Correction> = corrections_of(&state, m.id).await?.into_iter().map(Correction::from).collect();
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.tissue.corrections.read", "success")
            .target("scan", scan.id)
            .details(json!({"measurement_id": m.id, "count": corrections.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(CorrectionList { measurement_id: m.id, corrections }))
}

fn sample_json(s: &TissueSample) -> Value {
    json!({"rgb": s.rgb, "lab": s.lab, "neighbourhood_mean": s.neighbourhood_mean, "neighbourhood_std": s.neighbourhood_std,
           "neighbourhood_median": s.neighbourhood_median, "neighbourhood_log_mad": s.neighbourhood_log_mad,
           "periwound_log": s.periwound_log})
}

/// Query of the export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Corrections made after the one with this id (the last line of the previous page).
    pub after: Option<Uuid>,
}

/// `GET /v1/admin/tissue-corrections.ndjson`: every correction, oldest first, one JSON object
/// per line — the labelled training data of the tissue classifier (`docs/measurement.md`,
/// *Tissue composition*). Ids only, no patient data. Pages of [`EXPORT_PAGE`]: `?after=`
/// the last line's `correction_id` gets the next.
#[utoipa::path(get, path = "/v1/admin/tissue-corrections.ndjson", tag = "admin", security(("bearer" = ["audit:read"])),
    params(ExportQuery),
    responses((status = 200, description = "application/x-ndjson: one correction per line", content_type = "application/x-ndjson"),
              (status = 400, description = "invalid_field (after), unknown_field"), (status = 403, description = "forbidden, mfa_required")))]
#[tracing::instrument(skip_all)]
pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::AuditRead>,
) -> Result<HttpResponse, ApiError> {
    let q: ExportQuery = crate::http::patients::parse_query(&req)?;
    let rows = sqlx::query!(
        r#"SELECT c.id, c.measurement_id, c.scan_id, c.class, c.region_world, c.samples, c.classifier, c.created_at
             FROM tissue_corrections c
            WHERE $1::uuid IS NULL
               OR (c.created_at, c.id) > (SELECT created_at, id FROM tissue_corrections WHERE id = $1)
            ORDER BY c.created_at, c.id LIMIT $2"#,
        q.after,
        EXPORT_PAGE,
    )
    .fetch_all(&state.stores.pg)
    .await?;
    let mut body = String::new();
    for r in &rows {
        let line = json!({
            "correction_id": r.id, "measurement_id": r.measurement_id, "scan_id": r.scan_id, "class": r.class,
            "classifier": r.classifier, "created_at": r.created_at, "region_world": r.region_world, "samples": r.samples,
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("tissue.corrections.export", "success").details(json!({"count": rows.len(), "after": q.after})),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"tissue-corrections.ndjson\""))
        .body(body))
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(
        resource("/v1/scans/{id}/measurements/{measurement_id}/tissue-corrections")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(resource("/v1/admin/tissue-corrections.ndjson").route(web::get().to(export)));
}
