//! Wound measurements in PostgreSQL (`scan_measurements`): the automatic one written when
//! a scan's reconstruction finishes (one per scan, replaced on a re-run) and every
//! clinician re-measurement, with the mesh each refers to. The SQL the reconstruction
//! sink (`super::reconstruction`) and the measurement API share.

use chrono::{DateTime, Utc};
use coherency_actors::reconstruction::{MeasureMethod, NewMeasurement, TissueFigures, TissueOutcome};
use coherency_actors::store::StoreError;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::scans::pg_error;

/// Where a scan's mesh is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeshKeys {
    /// Blob key of the PLY mesh.
    pub ply_key: String,
    /// Its SHA-256 (hex).
    pub ply_sha256: String,
    /// Blob key of the binary glTF mesh.
    pub glb_key: String,
    /// Its SHA-256 (hex).
    pub glb_sha256: String,
}

/// Inserts a measurement row (the automatic one of a scan replaced, so that a re-run of the
/// finish step converges); returns the row's id.
pub async fn insert(pg: &PgPool, n: &NewMeasurement, at: DateTime<Utc>) -> Result<Uuid, StoreError> {
    let m = &n.figures;
    let mesh = n.mesh.as_ref();
    let polygon = n.polygon.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default());
    let tissue = n.tissue.composition().map(|t| serde_json::to_value(t).unwrap_or_default());
    let tissue_reason = n.tissue.reason();
    // The two statements share their columns and arguments; each is written out in full so
    // the build checks it (`sqlx::query_scalar!` takes a literal).
    macro_rules! insert_returning_id {
        ($sql:literal) => {
            sqlx::query_scalar!(
                $sql,
                Uuid::now_v7(),
                n.scan_id.as_uuid(),
                n.method.as_str(),
                n.keyframe_seq.map(to_i64),
                polygon,
                m.outline_area_mm2.value,
                m.outline_area_mm2.uncertainty,
                m.bed_area_mm2.value,
                m.bed_area_mm2.uncertainty,
                m.perimeter_mm.value,
                m.perimeter_mm.uncertainty,
                m.length_mm.value,
                m.length_mm.uncertainty,
                m.width_mm.value,
                m.width_mm.uncertainty,
                m.max_depth_mm.value,
                m.max_depth_mm.uncertainty,
                m.mean_depth_mm.value,
                m.mean_depth_mm.uncertainty,
                m.volume_mm3.value,
                m.volume_mm3.uncertainty,
                m.skin_model,
                m.skin_residual_mm,
                m.missing_fraction,
                mesh.map(|k| k.ply_key.as_str()),
                mesh.map(|k| k.ply_sha256.as_str()),
                mesh.map(|k| k.glb_key.as_str()),
                mesh.map(|k| k.glb_sha256.as_str()),
                n.created_by,
                at,
                tissue,
                tissue_reason,
            )
            .fetch_one(pg)
            .await
        };
    }
    let id = match n.method {
        MeasureMethod::Polygon => insert_returning_id!(
            "INSERT INTO scan_measurements (id, scan_id, method, keyframe_seq, polygon,
                outline_area_mm2, outline_area_mm2_pm, bed_area_mm2, bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm,
                length_mm, length_mm_pm, width_mm, width_mm_pm, max_depth_mm, max_depth_mm_pm,
                mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
                skin_model, skin_residual_mm, missing_fraction,
                mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_by, created_at,
                tissue, tissue_reason, tissue_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                     $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $30)
             RETURNING id"
        ),
        // The automatic measurement replaces the scan's earlier one.
        MeasureMethod::Auto => insert_returning_id!(
            "INSERT INTO scan_measurements (id, scan_id, method, keyframe_seq, polygon,
                outline_area_mm2, outline_area_mm2_pm, bed_area_mm2, bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm,
                length_mm, length_mm_pm, width_mm, width_mm_pm, max_depth_mm, max_depth_mm_pm,
                mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
                skin_model, skin_residual_mm, missing_fraction,
                mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_by, created_at,
                tissue, tissue_reason, tissue_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                     $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $30)
             ON CONFLICT (scan_id) WHERE method = 'auto' DO UPDATE SET
                outline_area_mm2 = EXCLUDED.outline_area_mm2, outline_area_mm2_pm = EXCLUDED.outline_area_mm2_pm,
                bed_area_mm2 = EXCLUDED.bed_area_mm2, bed_area_mm2_pm = EXCLUDED.bed_area_mm2_pm,
                perimeter_mm = EXCLUDED.perimeter_mm, perimeter_mm_pm = EXCLUDED.perimeter_mm_pm,
                length_mm = EXCLUDED.length_mm, length_mm_pm = EXCLUDED.length_mm_pm,
                width_mm = EXCLUDED.width_mm, width_mm_pm = EXCLUDED.width_mm_pm,
                max_depth_mm = EXCLUDED.max_depth_mm, max_depth_mm_pm = EXCLUDED.max_depth_mm_pm,
                mean_depth_mm = EXCLUDED.mean_depth_mm, mean_depth_mm_pm = EXCLUDED.mean_depth_mm_pm,
                volume_mm3 = EXCLUDED.volume_mm3, volume_mm3_pm = EXCLUDED.volume_mm3_pm,
                skin_model = EXCLUDED.skin_model, skin_residual_mm = EXCLUDED.skin_residual_mm,
                missing_fraction = EXCLUDED.missing_fraction,
                mesh_ply_key = EXCLUDED.mesh_ply_key, mesh_ply_sha256 = EXCLUDED.mesh_ply_sha256,
                mesh_glb_key = EXCLUDED.mesh_glb_key, mesh_glb_sha256 = EXCLUDED.mesh_glb_sha256,
                created_at = EXCLUDED.created_at,
                tissue = EXCLUDED.tissue, tissue_reason = EXCLUDED.tissue_reason, tissue_at = EXCLUDED.tissue_at
             RETURNING id"
        ),
    };
    id.map_err(|e| pg_error(&e))
}

/// Replaces a measurement's tissue composition (or its reason) with a recomputed one, e.g.
/// after a clinician corrected a region's class: the measurement's figures stay. Answers
/// whether the measurement exists.
pub async fn replace_tissue(
    db: impl sqlx::PgExecutor<'_>,
    measurement_id: Uuid,
    tissue: &TissueOutcome,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let body = tissue.composition().map(|t| serde_json::to_value(t).unwrap_or_default());
    let done = sqlx::query!(
        "UPDATE scan_measurements SET tissue = $2, tissue_reason = $3, tissue_at = $4 WHERE id = $1",
        measurement_id,
        body,
        tissue.reason(),
        at,
    )
    .execute(db)
    .await
    .map_err(|e| pg_error(&e))?;
    Ok(done.rows_affected() == 1)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A value and its uncertainty: the true value lies in `value ± uncertainty`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ValuePm {
    pub value: f64,
    pub uncertainty: f64,
}

/// One set of wound measurements of a scan (mm, mm², mm³).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeasurementRecord {
    pub id: Uuid,
    pub scan_id: Uuid,
    /// `auto` (segmented at finish) or `polygon` (clinician-drawn outline).
    pub method: String,
    /// Polygon only: the keyframe the outline was drawn on.
    pub keyframe_seq: Option<i64>,
    /// Polygon only: the outline in the keyframe's image coordinates.
    #[schema(value_type = Option<Vec<Vec<f64>>>)]
    pub polygon: Option<serde_json::Value>,
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
    pub mesh: Option<MeshKeys>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The wound bed's tissue composition inside this outline; `null` when there is none,
    /// and then `tissue_unavailable` says why.
    pub tissue: Option<TissueFigures>,
    /// Why `tissue` is `null`: `no_colour_frames`, `no_usable_colour_frames`, `no_colour`,
    /// `too_little_colour`, `no_periwound`, `periwound_too_dark`, `no_wound_surface`, or
    /// `not_analysed` (measured before tissue was analysed); absent when there is a composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tissue_unavailable: Option<String>,
}

/// `tissue` and `tissue_unavailable` of a row: a composition that no longer parses counts as
/// not analysed rather than failing the whole list.
pub(crate) fn tissue_of(
    body: Option<serde_json::Value>,
    reason: Option<String>,
) -> (Option<TissueFigures>, Option<String>) {
    match body.map(serde_json::from_value::<TissueFigures>) {
        Some(Ok(t)) => (Some(t), None),
        Some(Err(_)) => (None, Some("not_analysed".to_owned())),
        None => (None, Some(reason.unwrap_or_else(|| "not_analysed".to_owned()))),
    }
}

/// The scan's measurements, oldest first.
pub async fn list(pg: &PgPool, scan_id: Uuid) -> Result<Vec<MeasurementRecord>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT id, scan_id, method, keyframe_seq, polygon,
                outline_area_mm2, outline_area_mm2_pm, bed_area_mm2, bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm,
                length_mm, length_mm_pm, width_mm, width_mm_pm, max_depth_mm, max_depth_mm_pm,
                mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
                skin_model, skin_residual_mm, missing_fraction,
                mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_by, created_at,
                tissue, tissue_reason
           FROM scan_measurements WHERE scan_id = $1 ORDER BY created_at, id",
        scan_id,
    )
    .fetch_all(pg)
    .await?;
    let pm = |value, uncertainty| ValuePm { value, uncertainty };
    Ok(rows
        .into_iter()
        .map(|r| {
            let (tissue, tissue_unavailable) = tissue_of(r.tissue, r.tissue_reason);
            MeasurementRecord {
                id: r.id,
                scan_id: r.scan_id,
                method: r.method,
                keyframe_seq: r.keyframe_seq,
                polygon: r.polygon,
                outline_area_mm2: pm(r.outline_area_mm2, r.outline_area_mm2_pm),
                bed_area_mm2: pm(r.bed_area_mm2, r.bed_area_mm2_pm),
                perimeter_mm: pm(r.perimeter_mm, r.perimeter_mm_pm),
                length_mm: pm(r.length_mm, r.length_mm_pm),
                width_mm: pm(r.width_mm, r.width_mm_pm),
                max_depth_mm: pm(r.max_depth_mm, r.max_depth_mm_pm),
                mean_depth_mm: pm(r.mean_depth_mm, r.mean_depth_mm_pm),
                volume_mm3: pm(r.volume_mm3, r.volume_mm3_pm),
                skin_model: r.skin_model,
                skin_residual_mm: r.skin_residual_mm,
                missing_fraction: r.missing_fraction,
                mesh: r.mesh_ply_key.map(|ply_key| MeshKeys {
                    ply_key,
                    ply_sha256: r.mesh_ply_sha256.unwrap_or_default(),
                    glb_key: r.mesh_glb_key.unwrap_or_default(),
                    glb_sha256: r.mesh_glb_sha256.unwrap_or_default(),
                }),
                created_by: r.created_by,
                created_at: r.created_at,
                tissue,
                tissue_unavailable,
            }
        })
        .collect())
}
