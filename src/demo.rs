//! `coherency seed-demo`: a small demo clinic (an admin, a clinician with TOTP enrolled, and
//! a patient on the clinician's care team). Idempotent: accounts are created once; each run
//! sets fresh random passwords and prints them, so no credential lives in the repository.

use rand::Rng;
use uuid::Uuid;

use crate::auth::{totp, Role};
use crate::state::AppState;

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
    Ok(out)
}
