//! Demo patients with full profiles for `coherency seed-demo` (idempotent: keyed by MRN).

use chrono::NaiveDate;
use uuid::Uuid;

use super::entries::{
    self, Allergy, AllergyStatus, Condition, ConditionStatus, Consent, ConsentScope, ConsentStatus, Contact, Coverage,
    CoverageStatus, Medication, MedicationStatus, Relationship, Severity,
};
use super::{Address, DEFAULT_ORG};
use crate::http::input::{Day, Line, PhoneNumber, SnomedCode, TermsVersion};
use crate::state::AppState;

/// Demo text held to the same bounds as text from a request.
fn line<const MIN: usize, const MAX: usize>(s: impl Into<String>) -> anyhow::Result<Line<MIN, MAX>> {
    Line::new(s).map_err(|why| anyhow::anyhow!("demo text {why}"))
}

fn date(y: i32, m: u32, d: u32) -> anyhow::Result<Day> {
    let day = NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| anyhow::anyhow!("demo date {y}-{m}-{d}"))?;
    Day::try_from(day).map_err(anyhow::Error::msg)
}

struct Demo {
    mrn: &'static str,
    given: &'static str,
    family: &'static str,
    birth: (i32, u32, u32),
    sex: &'static str,
    lang: &'static str,
    city: &'static str,
    country: &'static str,
}

const DEMO: &[Demo] = &[
    Demo {
        mrn: "DEMO-0001",
        given: "Ada",
        family: "Lovelace",
        birth: (1985, 12, 10),
        sex: "female",
        lang: "en-GB",
        city: "London",
        country: "GB",
    },
    Demo {
        mrn: "DEMO-0002",
        given: "Zoë",
        family: "Ångström",
        birth: (1972, 3, 4),
        sex: "female",
        lang: "sv",
        city: "Uppsala",
        country: "SE",
    },
    Demo {
        mrn: "DEMO-0003",
        given: "José",
        family: "Müller",
        birth: (1958, 7, 21),
        sex: "male",
        lang: "es",
        city: "Madrid",
        country: "ES",
    },
    Demo {
        mrn: "DEMO-0004",
        given: "Amara",
        family: "Okafor",
        birth: (1990, 1, 30),
        sex: "female",
        lang: "en",
        city: "Lagos",
        country: "NG",
    },
    Demo {
        mrn: "DEMO-0005",
        given: "Hiroshi",
        family: "Tanaka",
        birth: (1949, 11, 2),
        sex: "male",
        lang: "ja",
        city: "Osaka",
        country: "JP",
    },
    Demo {
        mrn: "DEMO-0006",
        given: "Noor",
        family: "Haddad",
        birth: (2001, 5, 17),
        sex: "other",
        lang: "ar",
        city: "Amman",
        country: "JO",
    },
];

/// Creates the demo patients (skipping those already there), each with contact details,
/// an encrypted national id and note, an allergy, a medication, a condition, a coverage, an
/// emergency contact, both consents, and every active clinician on the care team. Returns
/// how many were created.
pub async fn seed_patients(state: &AppState) -> anyhow::Result<usize> {
    let pg = &state.stores.pg;
    let now = state.clock.now();
    let clinicians: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM users WHERE role = 'clinician' AND disabled_at IS NULL ORDER BY created_at"
    )
    .fetch_all(pg)
    .await?;
    let mut created = 0;
    for (i, d) in DEMO.iter().enumerate() {
        let exists: bool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM patients WHERE organization_id = $1 AND mrn = $2) AS "exists!""#,
            DEFAULT_ORG,
            d.mrn
        )
        .fetch_one(pg)
        .await?;
        if exists {
            continue;
        }
        let id = Uuid::now_v7();
        let birth =
            NaiveDate::from_ymd_opt(d.birth.0, d.birth.1, d.birth.2).ok_or_else(|| anyhow::anyhow!("bad date"))?;
        let address = Address {
            lines: vec![format!("{} Demo Street", 10 + i)],
            city: Some(d.city.into()),
            region: None,
            postal_code: Some(format!("D{:04}", 1000 + i)),
            country: Some(d.country.into()),
        };
        sqlx::query!(
            "INSERT INTO patients (id, given_name, family_name, birth_date, sex, preferred_language, phone, email, address,
                 mrn, national_id_enc, notes_enc, organization_id, created_at, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14)",
            id,
            d.given,
            d.family,
            birth,
            d.sex,
            d.lang,
            format!("+4420790{:05}", 10000 + i),
            format!("{}.{}@demo.example", i, d.mrn.to_lowercase()),
            serde_json::to_value(&address)?,
            d.mrn,
            state.field_key.encrypt(&format!("DEMO-NID-{:06}", 100000 + i)),
            state.field_key.encrypt("Demo record: chronic venous leg ulcer, weekly wound review by video."),
            DEFAULT_ORG,
            now
        )
        .execute(pg)
        .await?;
        for c in &clinicians {
            sqlx::query!(
                "INSERT INTO care_team (patient_id, clinician_id, role, added_at) VALUES ($1,$2,'clinician',$3)
                 ON CONFLICT DO NOTHING",
                id,
                c,
                now
            )
            .execute(pg)
            .await?;
        }
        let e = |err: crate::error::ApiError| anyhow::anyhow!("{}: {}", err.code, err.message);
        let since = date(2024, 2, 1)?;
        entries::insert(
            pg,
            id,
            &Allergy {
                substance: line("Penicillin")?,
                reaction: Some(line("Hives")?),
                severity: Some(Severity::Moderate),
                status: AllergyStatus::Active,
                onset_date: Some(date(2010, 6, 1)?),
            },
            None,
            now,
        )
        .await
        .map_err(e)?;
        entries::insert(
            pg,
            id,
            &Medication {
                name: line("Metformin")?,
                dosage: Some(line("500 mg twice daily")?),
                status: MedicationStatus::Active,
                start_date: Some(since),
                end_date: None,
            },
            None,
            now,
        )
        .await
        .map_err(e)?;
        entries::insert(
            pg,
            id,
            &Condition {
                description: line("Venous leg ulcer")?,
                snomed_code: Some(SnomedCode::new("402863005").map_err(anyhow::Error::msg)?),
                clinical_status: ConditionStatus::Active,
                onset_date: Some(since),
            },
            None,
            now,
        )
        .await
        .map_err(e)?;
        entries::insert(
            pg,
            id,
            &Coverage {
                payer: line("Demo Health Mutual")?,
                member_id: line(format!("MEM{:06}", 500 + i))?,
                group_number: Some(line("GRP-42")?),
                plan_name: Some(line("Standard")?),
                status: CoverageStatus::Active,
                start_date: Some(date(2024, 1, 1)?),
                end_date: None,
            },
            None,
            now,
        )
        .await
        .map_err(e)?;
        entries::insert(
            pg,
            id,
            &Contact {
                name: line(format!("Sam {}", d.family))?,
                relationship: Relationship::Partner,
                emergency: true,
                phone: Some(PhoneNumber::new(format!("+4420790{:05}", 20000 + i)).map_err(anyhow::Error::msg)?),
                email: None,
            },
            None,
            now,
        )
        .await
        .map_err(e)?;
        for scope in [ConsentScope::Telehealth, ConsentScope::ScanCapture] {
            entries::insert(
                pg,
                id,
                &Consent {
                    scope,
                    status: ConsentStatus::Granted,
                    terms_version: TermsVersion::new("2026-01").map_err(anyhow::Error::msg)?,
                    date: Some(Day::try_from(now.date_naive()).map_err(anyhow::Error::msg)?),
                },
                None,
                now,
            )
            .await
            .map_err(e)?;
        }
        created += 1;
    }
    Ok(created)
}
