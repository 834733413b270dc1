//! Wound measurements in PostgreSQL (`scan_measurements`): the automatic one written when
//! a scan's reconstruction finishes (one per scan, replaced on a re-run) and every
//! clinician re-measurement, with the mesh each refers to. The SQL the reconstruction
//! sink (`super::reconstruction`) and the measurement API share.

use chrono::{DateTime, Utc};
use coherency_actors::reconstruction::{MeasureMethod, NewMeasurement};
use coherency_actors::store::StoreError;
use serde::Serialize;
use sqlx::{PgPool, Row};
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

/// Inserts a polygon measurement.
const INSERT_POLYGON: &str = "INSERT INTO scan_measurements (id, scan_id, method, keyframe_seq, polygon,
        outline_area_mm2, outline_area_mm2_pm, bed_area_mm2, bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm,
        length_mm, length_mm_pm, width_mm, width_mm_pm, max_depth_mm, max_depth_mm_pm,
        mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
        skin_model, skin_residual_mm, missing_fraction,
        mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_by, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
             $22, $23, $24, $25, $26, $27, $28, $29, $30)
     RETURNING id";

/// Inserts the automatic measurement, replacing the scan's earlier one (a re-run of the
/// finish step converges).
const UPSERT_AUTO: &str = "INSERT INTO scan_measurements (id, scan_id, method, keyframe_seq, polygon,
        outline_area_mm2, outline_area_mm2_pm, bed_area_mm2, bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm,
        length_mm, length_mm_pm, width_mm, width_mm_pm, max_depth_mm, max_depth_mm_pm,
        mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
        skin_model, skin_residual_mm, missing_fraction,
        mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_by, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
             $22, $23, $24, $25, $26, $27, $28, $29, $30)
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
        created_at = EXCLUDED.created_at
     RETURNING id";

/// Inserts a measurement row (the automatic one of a scan replaced, see [`UPSERT_AUTO`]);
/// returns the row's id.
pub async fn insert(pg: &PgPool, n: &NewMeasurement, at: DateTime<Utc>) -> Result<Uuid, StoreError> {
    let sql = match n.method {
        MeasureMethod::Auto => UPSERT_AUTO,
        MeasureMethod::Polygon => INSERT_POLYGON,
    };
    let m = &n.figures;
    let mesh = n.mesh.as_ref();
    let polygon = n.polygon.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default());
    let mut q = sqlx::query_scalar::<_, Uuid>(sql)
        .bind(Uuid::now_v7())
        .bind(n.scan_id.as_uuid())
        .bind(n.method.as_str())
        .bind(n.keyframe_seq.map(to_i64))
        .bind(polygon);
    for x in [
        m.outline_area_mm2,
        m.bed_area_mm2,
        m.perimeter_mm,
        m.length_mm,
        m.width_mm,
        m.max_depth_mm,
        m.mean_depth_mm,
        m.volume_mm3,
    ] {
        q = q.bind(x.value).bind(x.uncertainty);
    }
    q.bind(m.skin_model)
        .bind(m.skin_residual_mm)
        .bind(m.missing_fraction)
        .bind(mesh.map(|k| k.ply_key.clone()))
        .bind(mesh.map(|k| k.ply_sha256.clone()))
        .bind(mesh.map(|k| k.glb_key.clone()))
        .bind(mesh.map(|k| k.glb_sha256.clone()))
        .bind(n.created_by)
        .bind(at)
        .fetch_one(pg)
        .await
        .map_err(|e| pg_error(&e))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The mesh of the scan's automatic measurement, if it has one.
pub async fn auto_mesh_keys(pg: &PgPool, scan_id: Uuid) -> Result<Option<MeshKeys>, StoreError> {
    let row = sqlx::query(
        "SELECT mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256 FROM scan_measurements
         WHERE scan_id = $1 AND method = 'auto' AND mesh_ply_key IS NOT NULL",
    )
    .bind(scan_id)
    .fetch_optional(pg)
    .await
    .map_err(|e| pg_error(&e))?;
    Ok(row.map(|r| MeshKeys {
        ply_key: r.get("mesh_ply_key"),
        ply_sha256: r.get("mesh_ply_sha256"),
        glb_key: r.get("mesh_glb_key"),
        glb_sha256: r.get("mesh_glb_sha256"),
    }))
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
}

/// The scan's measurements, oldest first.
pub async fn list(pg: &PgPool, scan_id: Uuid) -> Result<Vec<MeasurementRecord>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM scan_measurements WHERE scan_id = $1 ORDER BY created_at, id")
        .bind(scan_id)
        .fetch_all(pg)
        .await?;
    let pm = |r: &sqlx::postgres::PgRow, c: &str| ValuePm {
        value: r.get(c),
        uncertainty: r.get(format!("{c}_pm").as_str()),
    };
    Ok(rows
        .iter()
        .map(|r| {
            let ply_key: Option<String> = r.get("mesh_ply_key");
            MeasurementRecord {
                id: r.get("id"),
                scan_id: r.get("scan_id"),
                method: r.get("method"),
                keyframe_seq: r.get("keyframe_seq"),
                polygon: r.get("polygon"),
                outline_area_mm2: pm(r, "outline_area_mm2"),
                bed_area_mm2: pm(r, "bed_area_mm2"),
                perimeter_mm: pm(r, "perimeter_mm"),
                length_mm: pm(r, "length_mm"),
                width_mm: pm(r, "width_mm"),
                max_depth_mm: pm(r, "max_depth_mm"),
                mean_depth_mm: pm(r, "mean_depth_mm"),
                volume_mm3: pm(r, "volume_mm3"),
                skin_model: r.get("skin_model"),
                skin_residual_mm: r.get("skin_residual_mm"),
                missing_fraction: r.get("missing_fraction"),
                mesh: ply_key.map(|ply_key| MeshKeys {
                    ply_key,
                    ply_sha256: r.get::<Option<String>, _>("mesh_ply_sha256").unwrap_or_default(),
                    glb_key: r.get::<Option<String>, _>("mesh_glb_key").unwrap_or_default(),
                    glb_sha256: r.get::<Option<String>, _>("mesh_glb_sha256").unwrap_or_default(),
                }),
                created_by: r.get("created_by"),
                created_at: r.get("created_at"),
            }
        })
        .collect())
}
