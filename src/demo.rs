//! `coherency seed-demo`: a small demo clinic (an admin, a clinician with TOTP enrolled, a
//! patient with a login on the clinician's care team, and the demo patient records
//! `DEMO-0001`… of `crate::http::patients::seed_patients`) where every patient has two wounds
//! with weeks of dated assessments — one healing on track, one stalled — so the trajectory
//! shows both verdicts at once. Idempotent: accounts, patients and wounds are created once;
//! each run sets fresh random passwords and prints them, so no credential lives in the
//! repository.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use uuid::Uuid;

use crate::auth::{totp, Role};
use crate::services::wounds::{Aetiology, Laterality, StatusChange, WoundStatus};
use crate::state::AppState;
use crate::store::wounds::{self, WoundFields};

/// One printed demo login.
pub struct DemoLogin {
    pub role: Role,
    pub email: String,
    pub password: String,
    /// Base32 TOTP secret for staff (add it to an authenticator app).
    pub totp_secret: Option<String>,
}

fn password() -> String {
    const WORDS: &[&str] = &[
        "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper", "kelp", "lumen",
    ];
    let mut rng = rand::thread_rng();
    let words: Vec<&str> = (0..3).map(|_| WORDS[rng.gen_range(0..WORDS.len())]).collect();
    format!("{}-{}", words.join("-"), rng.gen_range(100..1000))
}

async fn upsert_user(state: &AppState, email: &str, name: &str, role: Role) -> anyhow::Result<(Uuid, String)> {
    let pw = password();
    let hash = state.identity.hasher().hash(pw.clone()).await.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let now = state.clock.now();
    let id: Uuid = sqlx::query_scalar!(
        "INSERT INTO users (id, email, display_name, role, password_hash, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$6)
         ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, disabled_at = NULL, updated_at = EXCLUDED.updated_at
         RETURNING id",
        Uuid::now_v7(),
        email,
        name,
        role.as_str(),
        hash,
        now
    )
    .fetch_one(&state.stores.pg)
    .await?;
    Ok((id, pw))
}

async fn enrol_totp(state: &AppState, user_id: Uuid) -> anyhow::Result<String> {
    let row = sqlx::query!("SELECT totp_secret, totp_enabled FROM users WHERE id = $1", user_id)
        .fetch_one(&state.stores.pg)
        .await?;
    if row.totp_enabled {
        if let Some(s) = row.totp_secret {
            if let Ok(secret) = state.field_key.decrypt(&s) {
                return Ok(secret);
            }
        }
    }
    let secret = totp::new_secret();
    sqlx::query!(
        "UPDATE users SET totp_secret = $2, totp_enabled = true, totp_last_step = 0 WHERE id = $1",
        user_id,
        state.field_key.encrypt(&secret)
    )
    .execute(&state.stores.pg)
    .await?;
    Ok(secret)
}

/// Seeds the demo clinic and returns the logins to print.
pub async fn seed(state: &AppState) -> anyhow::Result<Vec<DemoLogin>> {
    let mut out = Vec::new();
    let (admin, pw) = upsert_user(state, "admin@demo.coherency.test", "Demo Administrator", Role::Admin).await?;
    let secret = enrol_totp(state, admin).await?;
    out.push(DemoLogin {
        role: Role::Admin,
        email: "admin@demo.coherency.test".into(),
        password: pw,
        totp_secret: Some(secret),
    });
    let (clin, pw) = upsert_user(state, "clinician@demo.coherency.test", "Dr. Demo Clinician", Role::Clinician).await?;
    let secret = enrol_totp(state, clin).await?;
    out.push(DemoLogin {
        role: Role::Clinician,
        email: "clinician@demo.coherency.test".into(),
        password: pw,
        totp_secret: Some(secret),
    });
    let (pat_user, pw) = upsert_user(state, "patient@demo.coherency.test", "Demo Patient", Role::Patient).await?;
    let now = state.clock.now();
    let patient_id: Uuid = sqlx::query_scalar!(
        "INSERT INTO patients (id, user_id, given_name, family_name, birth_date, created_at, updated_at) VALUES ($1,$2,'Demo','Patient','1970-05-04',$3,$3)
         ON CONFLICT (user_id) DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id",
        Uuid::now_v7(),
        pat_user,
        now
    )
    .fetch_one(&state.stores.pg)
    .await?;
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, added_at) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
        patient_id,
        clin,
        now
    )
    .execute(&state.stores.pg)
    .await?;
    out.push(DemoLogin {
        role: Role::Patient,
        email: "patient@demo.coherency.test".into(),
        password: pw,
        totp_secret: None,
    });
    crate::booking::seed_schedules(&state.stores.pg, state.clock.now()).await?;
    grant_scan_consent(state, patient_id, pat_user).await?;
    seed_wounds(state, patient_id, clin).await?;
    crate::http::patients::seed_patients(state).await?;
    let records: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM patients WHERE organization_id = $1 AND mrn LIKE 'DEMO-%' ORDER BY mrn",
        crate::http::patients::DEFAULT_ORG
    )
    .fetch_all(&state.stores.pg)
    .await?;
    for (i, record) in records.into_iter().enumerate() {
        grant_scan_consent(state, record, clin).await?;
        seed_wounds_as(state, record, clin, Variant::of(i + 1)).await?;
    }
    Ok(out)
}

/// One demo wound and its assessment history.
struct DemoWound {
    site_code: &'static str,
    site_display: &'static str,
    laterality: Laterality,
    body_map: (f64, f64),
    aetiology: Aetiology,
    stage: &'static str,
    /// (days after the baseline, outline area mm²), the baseline first.
    areas: &'static [(i64, f64)],
}

/// A left-heel diabetic foot ulcer that shrinks by about 55 % in four weeks (on track at the
/// default 40 % threshold), and a sacral pressure injury that stays within a few percent
/// (stalled: not on track).
const DEMO_WOUNDS: &[DemoWound] = &[
    DemoWound {
        site_code: "116315002",
        site_display: "Left heel",
        laterality: Laterality::Left,
        body_map: (0.44, 0.97),
        aetiology: Aetiology::DiabeticFoot,
        stage: "2",
        areas: &[(0, 612.0), (7, 520.0), (14, 431.0), (21, 346.0), (28, 274.0), (35, 218.0), (42, 171.0), (49, 133.0)],
    },
    DemoWound {
        site_code: "54735007",
        site_display: "Sacrum",
        laterality: Laterality::Midline,
        body_map: (0.5, 0.52),
        aetiology: Aetiology::Pressure,
        stage: "3",
        areas: &[(0, 486.0), (7, 479.0), (14, 482.0), (21, 468.0), (28, 471.0), (35, 459.0), (42, 463.0)],
    },
];

/// How one demo patient's wounds differ from the first's, so the records do not look copied:
/// sizes, the side of the heel ulcer, and how long ago the last scan was. The verdicts stay
/// (a scale changes no percentage; the wobble is a few percent).
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// Every area times this.
    scale: f64,
    /// The heel ulcer is on the right heel.
    right: bool,
    /// Days from the last assessment to now.
    days_ago: i64,
    /// Seed of a ± 2 % wobble per assessment (0: none).
    wobble: u32,
    /// The first wound's newest scan gets a coloured mesh and a tissue composition.
    coloured: bool,
}

impl Variant {
    const FIRST: Variant = Variant { scale: 1.0, right: false, days_ago: 2, wobble: 0, coloured: true };

    /// The `n`th demo patient's (`0`: the first, as `DEMO_WOUNDS` has it).
    fn of(n: usize) -> Variant {
        if n == 0 {
            return Self::FIRST;
        }
        Variant {
            scale: [0.7, 1.25, 0.85, 1.4, 0.6, 1.1][n % 6],
            right: n % 2 == 1,
            days_ago: 1 + (n as i64 * 5) % 7,
            wobble: n as u32,
            coloured: false,
        }
    }

    /// The `k`th assessment's area.
    fn area(&self, k: usize, area: f64) -> f64 {
        let wobble = if self.wobble == 0 { 0.0 } else { 0.02 * (f64::from(self.wobble) * 1.7 + k as f64 * 2.3).sin() };
        (area * self.scale * (1.0 + wobble)).round()
    }
}

/// A scan-capture consent on file for `patient` (recorded by `by`), unless one is already
/// granted: a clinician can ask the demo patients for a scan at once.
async fn grant_scan_consent(state: &AppState, patient: Uuid, by: Uuid) -> anyhow::Result<()> {
    let pg = &state.stores.pg;
    if crate::services::access::has_scan_consent(pg, coherency_protocol::ids::PatientId::from_uuid(patient)).await? {
        return Ok(());
    }
    let now = state.clock.now();
    let data = serde_json::json!({
        "scope": "scan_capture", "status": "granted", "terms_version": "demo", "date": now.date_naive(),
    });
    sqlx::query!(
        "INSERT INTO patient_entries (id, patient_id, kind, data, created_by, created_at, updated_at)
         VALUES ($1, $2, 'consent', $3, $4, $5, $5)",
        Uuid::now_v7(),
        patient,
        data,
        by,
        now
    )
    .execute(pg)
    .await?;
    Ok(())
}

/// The demo wounds of `patient`, recorded by `clinician`, each with one completed scan and
/// automatic measurement per assessment day, the last one two days ago. A wound already
/// there (same site) is left as it is.
pub async fn seed_wounds(state: &AppState, patient: Uuid, clinician: Uuid) -> anyhow::Result<()> {
    seed_wounds_as(state, patient, clinician, Variant::FIRST).await
}

async fn seed_wounds_as(state: &AppState, patient: Uuid, clinician: Uuid, v: Variant) -> anyhow::Result<()> {
    let pg = &state.stores.pg;
    let now = state.clock.now();
    for (n, d) in DEMO_WOUNDS.iter().enumerate() {
        let (site_display, laterality, body_map) = match (v.right, d.laterality) {
            (true, Laterality::Left) => ("Right heel", Laterality::Right, (1.0 - d.body_map.0, d.body_map.1)),
            _ => (d.site_display, d.laterality, d.body_map),
        };
        if wounds::find_by_site(pg, patient, site_display).await?.is_some() {
            continue;
        }
        let last_day = d.areas.last().map_or(0, |(day, _)| *day);
        let baseline = now - Duration::days(last_day + v.days_ago);
        let onset = (baseline - Duration::days(10)).date_naive();
        let history = vec![StatusChange {
            status: WoundStatus::Open,
            date: baseline.date_naive(),
            recorded_by: clinician,
            recorded_at: baseline,
        }];
        let fields = WoundFields {
            site_code: Some(d.site_code.into()),
            site_display: site_display.into(),
            laterality: laterality.as_str().into(),
            body_map: Some(body_map),
            aetiology: d.aetiology.as_str().into(),
            onset_date: Some(onset),
            stage: Some(d.stage.into()),
            status: WoundStatus::Open.as_str().into(),
            status_date: baseline.date_naive(),
            status_history: serde_json::to_value(history)?,
        };
        let wound = Uuid::now_v7();
        let mut tx = pg.begin().await?;
        wounds::insert(&mut *tx, wound, patient, &fields, clinician, baseline).await?;
        let mut newest = None;
        for (k, (day, area)) in d.areas.iter().enumerate() {
            let taken = baseline + Duration::days(*day);
            newest =
                Some(demo_assessment(&mut tx, patient, wound, site_display, clinician, taken, v.area(k, *area)).await?);
        }
        tx.commit().await?;
        // The demo login's first wound: its newest scan gets a reconstructed, coloured mesh and
        // a tissue composition (the other demo records stay rows only: the seed stays fast).
        if v.coloured && n == 0 {
            if let Some(scan) = newest {
                colour_demo_scan(state, scan).await?;
            }
        }
    }
    Ok(())
}

/// Gives demo scan `scan` the coloured mesh and tissue composition of a colour phantom scan
/// reconstructed in process (`coherency_actors::reconstruction::demo`): the mesh is stored
/// as the scan's reconstruction, the tissue on its automatic measurement (whose figures stay
/// the demo history's).
async fn colour_demo_scan(state: &AppState, scan: Uuid) -> anyhow::Result<()> {
    use coherency_actors::reconstruction::{MeshFormat, MeshKeys, NewReconstruction, ReconOutcome, ReconstructionSink};
    let made = tokio::task::spawn_blocking(coherency_actors::reconstruction::demo::demo_scan)
        .await?
        .map_err(|e| anyhow::anyhow!("demo scan: {e}"))?;
    let stores = &state.stores;
    let sink = crate::store::reconstruction::StoreReconstructionSink::new(
        stores.blobs.clone(),
        stores.pg.clone(),
        stores.mongo.clone(),
        state.clock.clone(),
    );
    let id = coherency_protocol::ids::ScanId::from_uuid(scan);
    let ply = sink.put_mesh(id, MeshFormat::Ply, made.ply.into()).await?;
    let glb = sink.put_mesh(id, MeshFormat::Glb, made.glb.into()).await?;
    let mesh = MeshKeys { ply_key: ply.key, ply_sha256: ply.sha256, glb_key: glb.key, glb_sha256: glb.sha256 };
    sink.write_reconstruction(&NewReconstruction {
        scan_id: id,
        outcome: ReconOutcome::Measured { keyframe: None },
        mesh,
    })
    .await?;
    let measurements = crate::store::measurements::list(&stores.pg, scan).await?;
    if let Some(m) = measurements.iter().find(|m| m.method == "auto") {
        crate::store::measurements::replace_tissue(&stores.pg, m.id, &made.tissue, state.clock.now()).await?;
    }
    Ok(())
}

/// A completed scan of the wound taken at `taken` with its automatic measurement of `area` mm²
/// (the other figures in proportion, with `±` of the size the real pipeline reports); answers
/// the scan's id.
async fn demo_assessment(
    tx: &mut sqlx::PgConnection,
    patient: Uuid,
    wound: Uuid,
    site: &str,
    clinician: Uuid,
    taken: DateTime<Utc>,
    area: f64,
) -> anyhow::Result<Uuid> {
    let scan = Uuid::now_v7();
    let finished = taken + Duration::minutes(2);
    sqlx::query!(
        "INSERT INTO scans (id, patient_id, body_site, status, created_by, created_at, updated_at, finished_at, wound_id)
         VALUES ($1, $2, $3, 'complete', $4, $5, $6, $6, $7)",
        scan,
        patient,
        site,
        clinician,
        taken,
        finished,
        wound,
    )
    .execute(&mut *tx)
    .await?;
    let side = area.sqrt();
    let (length, width) = (side * 1.3, side * 0.98);
    let depth = 1.5 + area / 400.0;
    let volume = area * depth * 0.45;
    sqlx::query!(
        "INSERT INTO scan_measurements (id, scan_id, method, outline_area_mm2, outline_area_mm2_pm, bed_area_mm2,
            bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm, length_mm, length_mm_pm, width_mm, width_mm_pm,
            max_depth_mm, max_depth_mm_pm, mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
            skin_model, skin_residual_mm, missing_fraction, created_at)
         VALUES ($1, $2, 'auto', $3, $4, $5, $6, $7, $8, $9, 0.6, $10, 0.6, $11, 0.3, $12, 0.2, $13, $14,
                 'quadratic', 0.1, 0.01, $15)",
        Uuid::now_v7(),
        scan,
        area,
        area * 0.03 + 4.0,
        area * 1.12,
        area * 0.04 + 5.0,
        (length + width) * 1.6,
        1.5,
        length,
        width,
        depth,
        depth * 0.55,
        volume,
        volume * 0.08 + 10.0,
        finished + Duration::minutes(1),
    )
    .execute(&mut *tx)
    .await?;
    Ok(scan)
}
