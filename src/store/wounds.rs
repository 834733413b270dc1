//! Wounds in PostgreSQL (`wounds`, `wound_assessment_exclusions`, `scans.wound_id`): the
//! wound record with its version, its status history, the baseline mark, the exclusions, and
//! the assessment rows (every measurement of the wound's scans) the healing metrics read.
//! The SQL of the wound API and of the scan service's wound checks.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A `wounds` row as stored.
#[derive(Debug, Clone)]
pub struct WoundRow {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub site_code: Option<String>,
    pub site_display: String,
    pub laterality: String,
    pub body_map_x: Option<f64>,
    pub body_map_y: Option<f64>,
    pub aetiology: String,
    pub onset_date: Option<NaiveDate>,
    pub stage: Option<String>,
    pub status: String,
    pub status_date: NaiveDate,
    pub status_history: serde_json::Value,
    pub baseline_measurement_id: Option<Uuid>,
    pub recorded_by: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The writable columns of a wound (validated by the caller).
#[derive(Debug, Clone)]
pub struct WoundFields {
    pub site_code: Option<String>,
    pub site_display: String,
    pub laterality: String,
    pub body_map: Option<(f64, f64)>,
    pub aetiology: String,
    pub onset_date: Option<NaiveDate>,
    pub stage: Option<String>,
    pub status: String,
    pub status_date: NaiveDate,
    pub status_history: serde_json::Value,
}

/// Inserts a wound at version 1.
pub async fn insert<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
    patient_id: Uuid,
    f: &WoundFields,
    recorded_by: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO wounds (id, patient_id, site_code, site_display, laterality, body_map_x, body_map_y, aetiology,
             onset_date, stage, status, status_date, status_history, recorded_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
        id,
        patient_id,
        f.site_code.as_deref(),
        &f.site_display,
        &f.laterality,
        f.body_map.map(|p| p.0),
        f.body_map.map(|p| p.1),
        &f.aetiology,
        f.onset_date,
        f.stage.as_deref(),
        &f.status,
        f.status_date,
        &f.status_history,
        recorded_by,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The wound.
pub async fn get<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<WoundRow>, sqlx::Error> {
    sqlx::query_as!(
        WoundRow,
        "SELECT id, patient_id, site_code, site_display, laterality, body_map_x, body_map_y, aetiology, onset_date,
                stage, status, status_date, status_history, baseline_measurement_id, recorded_by, version,
                created_at, updated_at
           FROM wounds WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}

/// The wound, locked for the rest of the transaction.
pub async fn get_for_update<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<WoundRow>, sqlx::Error> {
    sqlx::query_as!(
        WoundRow,
        "SELECT id, patient_id, site_code, site_display, laterality, body_map_x, body_map_y, aetiology, onset_date,
                stage, status, status_date, status_history, baseline_measurement_id, recorded_by, version,
                created_at, updated_at
           FROM wounds WHERE id = $1 FOR UPDATE",
        id,
    )
    .fetch_optional(db)
    .await
}

/// The patient's wounds, oldest first, at most `limit`.
pub async fn list_for_patient(pg: &PgPool, patient_id: Uuid, limit: i64) -> Result<Vec<WoundRow>, sqlx::Error> {
    sqlx::query_as!(
        WoundRow,
        "SELECT id, patient_id, site_code, site_display, laterality, body_map_x, body_map_y, aetiology, onset_date,
                stage, status, status_date, status_history, baseline_measurement_id, recorded_by, version,
                created_at, updated_at
           FROM wounds WHERE patient_id = $1 ORDER BY created_at, id LIMIT $2",
        patient_id,
        limit,
    )
    .fetch_all(pg)
    .await
}

/// Writes every writable column and moves the version on.
pub async fn update<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
    f: &WoundFields,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE wounds SET site_code = $2, site_display = $3, laterality = $4, body_map_x = $5, body_map_y = $6,
             aetiology = $7, onset_date = $8, stage = $9, status = $10, status_date = $11, status_history = $12,
             version = version + 1, updated_at = $13
         WHERE id = $1",
        id,
        f.site_code.as_deref(),
        &f.site_display,
        &f.laterality,
        f.body_map.map(|p| p.0),
        f.body_map.map(|p| p.1),
        &f.aetiology,
        f.onset_date,
        f.stage.as_deref(),
        &f.status,
        f.status_date,
        &f.status_history,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The patient a wound belongs to.
pub async fn patient_of(pg: &PgPool, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("SELECT patient_id FROM wounds WHERE id = $1", id).fetch_optional(pg).await
}

/// One assessment of a wound as stored: a measurement of one of its scans, with the scan's
/// capture time and the clinician's marks.
#[derive(Debug, Clone)]
pub struct AssessmentRow {
    pub measurement_id: Uuid,
    pub scan_id: Uuid,
    pub method: String,
    /// When the scan was taken (the wound's state at that time).
    pub taken_at: DateTime<Utc>,
    /// When the measurement was made (a clinician outline may come later).
    pub measured_at: DateTime<Utc>,
    pub area_mm2: f64,
    pub area_mm2_pm: f64,
    pub volume_mm3: f64,
    pub volume_mm3_pm: f64,
    pub max_depth_mm: f64,
    pub max_depth_mm_pm: f64,
    pub excluded_reason: Option<String>,
    pub excluded_by: Option<Uuid>,
    pub excluded_at: Option<DateTime<Utc>>,
    /// The stored tissue composition and why there is none (`scan_measurements`).
    pub tissue: Option<serde_json::Value>,
    pub tissue_reason: Option<String>,
}

/// Every measurement of the wound's scans, in time order (scan time, then measurement time).
pub async fn assessments(pg: &PgPool, wound_id: Uuid) -> Result<Vec<AssessmentRow>, sqlx::Error> {
    sqlx::query_as!(
        AssessmentRow,
        r#"SELECT m.id AS measurement_id, m.scan_id, m.method, s.created_at AS taken_at, m.created_at AS measured_at,
                  m.outline_area_mm2 AS area_mm2, m.outline_area_mm2_pm AS area_mm2_pm,
                  m.volume_mm3, m.volume_mm3_pm, m.max_depth_mm, m.max_depth_mm_pm,
                  x.reason AS "excluded_reason?", x.excluded_by AS "excluded_by?", x.excluded_at AS "excluded_at?",
                  m.tissue, m.tissue_reason
             FROM scans s
             JOIN scan_measurements m ON m.scan_id = s.id
             LEFT JOIN wound_assessment_exclusions x ON x.measurement_id = m.id
            WHERE s.wound_id = $1
            ORDER BY s.created_at, m.created_at, m.id"#,
        wound_id,
    )
    .fetch_all(pg)
    .await
}

/// Whether the measurement is one of the wound's assessments.
pub async fn has_assessment<'e>(
    db: impl PgExecutor<'e>,
    wound_id: Uuid,
    measurement_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM scan_measurements m JOIN scans s ON s.id = m.scan_id
                           WHERE m.id = $2 AND s.wound_id = $1) AS "exists!""#,
        wound_id,
        measurement_id,
    )
    .fetch_one(db)
    .await
}

/// Marks the baseline (or clears it with `None`) and moves the wound's version on.
pub async fn set_baseline<'e>(
    db: impl PgExecutor<'e>,
    wound_id: Uuid,
    measurement_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE wounds SET baseline_measurement_id = $2, version = version + 1, updated_at = $3 WHERE id = $1",
        wound_id,
        measurement_id,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Excludes an assessment (a new reason replaces the old one).
pub async fn exclude<'e>(
    db: impl PgExecutor<'e>,
    wound_id: Uuid,
    measurement_id: Uuid,
    reason: &str,
    by: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO wound_assessment_exclusions (measurement_id, wound_id, reason, excluded_by, excluded_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (measurement_id) DO UPDATE SET reason = EXCLUDED.reason, excluded_by = EXCLUDED.excluded_by,
             excluded_at = EXCLUDED.excluded_at",
        measurement_id,
        wound_id,
        reason,
        by,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Lifts an exclusion (the audit trail keeps it).
pub async fn include<'e>(db: impl PgExecutor<'e>, measurement_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM wound_assessment_exclusions WHERE measurement_id = $1", measurement_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The patient's oldest wound whose site reads `site` (how a scan without a wound finds its
/// wound, as the migration grouped older scans).
pub async fn find_by_site(pg: &PgPool, patient_id: Uuid, site: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM wounds WHERE patient_id = $1 AND site_display = $2 ORDER BY created_at, id LIMIT 1",
        patient_id,
        site,
    )
    .fetch_optional(pg)
    .await
}
