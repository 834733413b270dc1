//! Wounds as records (issue #24): the vocabulary (aetiology, laterality, status, the stages an
//! aetiology defines), the record as answered, its errors, and the checks the scan service
//! makes when a scan names or creates a wound (the request bodies and their validation are the
//! HTTP boundary's, `crate::http::wounds`).
//! Access is the patient record's (`super::access`); the HTTP resource is `crate::http::wounds`,
//! the healing arithmetic [`super::healing`].

use chrono::{DateTime, NaiveDate, Utc};
use coherency_protocol::ids::PatientId;
use coherency_protocol::{Code, ErrorCode};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{DomainError, StorageError};
use crate::store::wounds::{self, WoundFields, WoundRow};

/// What caused the wound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aetiology {
    Pressure,
    DiabeticFoot,
    Venous,
    Arterial,
    Surgical,
    Trauma,
    Burn,
    Other,
}

impl Aetiology {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pressure => "pressure",
            Self::DiabeticFoot => "diabetic_foot",
            Self::Venous => "venous",
            Self::Arterial => "arterial",
            Self::Surgical => "surgical",
            Self::Trauma => "trauma",
            Self::Burn => "burn",
            Self::Other => "other",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pressure" => Self::Pressure,
            "diabetic_foot" => Self::DiabeticFoot,
            "venous" => Self::Venous,
            "arterial" => Self::Arterial,
            "surgical" => Self::Surgical,
            "trauma" => Self::Trauma,
            "burn" => Self::Burn,
            _ => Self::Other,
        }
    }

    /// The stages or categories this aetiology defines (empty: none, `stage` must be absent):
    /// pressure injuries by NPIAP stage (2016), diabetic foot ulcers by Wagner grade, burns by
    /// depth.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            Self::Pressure => &["1", "2", "3", "4", "unstageable", "deep_tissue"],
            Self::DiabeticFoot => &["0", "1", "2", "3", "4", "5"],
            Self::Burn => &["superficial", "superficial_partial", "deep_partial", "full_thickness"],
            _ => &[],
        }
    }
}

/// Which side of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Laterality {
    Left,
    Right,
    Bilateral,
    Midline,
    #[default]
    Unspecified,
}

impl Laterality {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Right => "right",
            Self::Bilateral => "bilateral",
            Self::Midline => "midline",
            Self::Unspecified => "unspecified",
        }
    }

    /// The stored value (anything unknown reads as unspecified).
    pub fn parse(s: &str) -> Self {
        match s {
            "left" => Self::Left,
            "right" => Self::Right,
            "bilateral" => Self::Bilateral,
            "midline" => Self::Midline,
            _ => Self::Unspecified,
        }
    }
}

/// Where the wound stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WoundStatus {
    #[default]
    Open,
    Healing,
    Healed,
    Amputated,
    ClosedOther,
}

impl WoundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Healing => "healing",
            Self::Healed => "healed",
            Self::Amputated => "amputated",
            Self::ClosedOther => "closed_other",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "healing" => Self::Healing,
            "healed" => Self::Healed,
            "amputated" => Self::Amputated,
            "closed_other" => Self::ClosedOther,
            _ => Self::Open,
        }
    }
}

/// A point on the dashboard's body map: `x` left to right, `y` head to feet, both in 0..1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyMapPoint {
    #[schema(minimum = 0, maximum = 1)]
    pub x: f64,
    #[schema(minimum = 0, maximum = 1)]
    pub y: f64,
}

/// One status the wound has had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub status: WoundStatus,
    /// The date it took effect.
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub recorded_by: Uuid,
    pub recorded_at: DateTime<Utc>,
}

/// A wound as the API answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Wound {
    pub id: Uuid,
    pub patient_id: Uuid,
    /// SNOMED CT body-structure concept id (absent for a wound made from a scan's free-text site).
    pub site_code: Option<String>,
    /// The site in words (`Left heel`).
    pub site_display: String,
    pub laterality: Laterality,
    pub body_map: Option<BodyMapPoint>,
    pub aetiology: Aetiology,
    #[schema(value_type = Option<String>, format = Date)]
    pub onset_date: Option<NaiveDate>,
    /// Stage or category as the aetiology defines it (`docs/api.md`, "Wounds").
    pub stage: Option<String>,
    pub status: WoundStatus,
    /// When the current status took effect.
    #[schema(value_type = String, format = Date)]
    pub status_date: NaiveDate,
    /// Every status, oldest first.
    pub status_history: Vec<StatusChange>,
    /// The assessment marked as the baseline of the healing metrics (absent: the first counted).
    pub baseline_assessment_id: Option<Uuid>,
    /// Who recorded the wound.
    pub recorded_by: Uuid,
    /// The concurrency version; the `ETag` is this number in quotes.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Wound {
    pub fn from_row(r: WoundRow) -> Self {
        Self {
            id: r.id,
            patient_id: r.patient_id,
            site_code: r.site_code,
            site_display: r.site_display,
            laterality: Laterality::parse(&r.laterality),
            body_map: r.body_map_x.zip(r.body_map_y).map(|(x, y)| BodyMapPoint { x, y }),
            aetiology: Aetiology::parse(&r.aetiology),
            onset_date: r.onset_date,
            stage: r.stage,
            status: WoundStatus::parse(&r.status),
            status_date: r.status_date,
            status_history: serde_json::from_value(r.status_history).unwrap_or_default(),
            baseline_assessment_id: r.baseline_measurement_id,
            recorded_by: r.recorded_by,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    /// The wound's writable columns, for a patch to start from.
    pub fn fields(&self) -> WoundFields {
        WoundFields {
            site_code: self.site_code.clone(),
            site_display: self.site_display.clone(),
            laterality: self.laterality.as_str().into(),
            body_map: self.body_map.map(|p| (p.x, p.y)),
            aetiology: self.aetiology.as_str().into(),
            onset_date: self.onset_date,
            stage: self.stage.clone(),
            status: self.status.as_str().into(),
            status_date: self.status_date,
            status_history: serde_json::to_value(&self.status_history).unwrap_or_default(),
        }
    }
}

/// Why a wound request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WoundError {
    /// Not there, or not the caller's to see.
    #[error("not found")]
    NotFound,
    /// A field breaks a rule the schema cannot state (a date after today, a stage the
    /// aetiology does not define, a field that cannot be cleared).
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// A scan named a wound that is not one of the scan's patient's.
    #[error("`wound_id` is not a wound of this patient")]
    OfAnotherPatient,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for WoundError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl ErrorCode for WoundError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound => Code::NotFound,
            Self::Invalid { .. } => Code::InvalidField,
            Self::OfAnotherPatient => Code::WoundOfAnotherPatient,
            Self::Storage(e) => e.code(),
        }
    }
}

impl DomainError for WoundError {
    fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(*field),
            Self::OfAnotherPatient => Some("wound_id"),
            _ => None,
        }
    }
}

/// A refusal naming `field`.
pub fn invalid(field: &'static str, message: impl Into<String>) -> WoundError {
    WoundError::Invalid { field, message: message.into() }
}

/// The stage rule: a stage the aetiology defines, or none where it defines none.
pub fn check_stage(aetiology: Aetiology, stage: Option<&str>) -> Result<(), WoundError> {
    let Some(stage) = stage else { return Ok(()) };
    let allowed = aetiology.stages();
    if allowed.is_empty() {
        return Err(invalid("stage", format!("a {} wound has no stage; leave `stage` out", aetiology.as_str())));
    }
    if !allowed.contains(&stage) {
        return Err(invalid(
            "stage",
            format!("a {} wound's stage is one of: {}", aetiology.as_str(), allowed.join(", ")),
        ));
    }
    Ok(())
}

/// The patient's wound `id`, for a scan of `patient`: a wound of another patient, or none,
/// answers [`WoundError::OfAnotherPatient`] alike (no existence oracle).
pub async fn of_patient(pg: &PgPool, id: Uuid, patient: PatientId) -> Result<(), WoundError> {
    match wounds::patient_of(pg, id).await? {
        Some(p) if p == patient.as_uuid() => Ok(()),
        _ => Err(WoundError::OfAnotherPatient),
    }
}

/// A new wound of `patient` made with a scan's body site when the scan names none.
pub fn from_body_site(site: &str, by: Uuid, now: DateTime<Utc>) -> WoundFields {
    let today = now.date_naive();
    let history = vec![StatusChange { status: WoundStatus::Open, date: today, recorded_by: by, recorded_at: now }];
    WoundFields {
        site_code: None,
        site_display: site.chars().take(200).collect(),
        laterality: Laterality::Unspecified.as_str().into(),
        body_map: None,
        aetiology: Aetiology::Other.as_str().into(),
        onset_date: None,
        stage: None,
        status: WoundStatus::Open.as_str().into(),
        status_date: today,
        status_history: serde_json::to_value(history).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_those_the_aetiology_defines() {
        assert!(check_stage(Aetiology::Pressure, Some("deep_tissue")).is_ok());
        assert!(check_stage(Aetiology::Pressure, Some("5")).is_err());
        assert!(check_stage(Aetiology::DiabeticFoot, Some("5")).is_ok());
        assert!(check_stage(Aetiology::Venous, Some("1")).is_err());
        assert!(check_stage(Aetiology::Venous, None).is_ok());
        assert!(check_stage(Aetiology::Burn, Some("full_thickness")).is_ok());
    }
}
