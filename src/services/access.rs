//! Object access: the caller's right to a patient's records, decided once here and shared by
//! the HTTP handlers and the sockets. A record the caller may not see answers exactly as one
//! that does not exist (404), and the refusal is audited.

use coherency_protocol::ids::PatientId;
use coherency_protocol::{Code, ErrorCode};
use sqlx::PgPool;

use super::identity::{Principal, Role};
use super::Caller;
use crate::audit::{AppendError, AuditEvent, AuditLog};
use crate::clock::Clock;
use crate::error::{DomainError, StorageError};

/// Why access was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not there, or not the caller's to see.
    #[error("not found")]
    NotFound,
    #[error("the patient's scan-capture consent is not on file")]
    ConsentRequired,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for AccessError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl From<AppendError> for AccessError {
    fn from(e: AppendError) -> Self {
        Self::Storage(e.into())
    }
}

impl ErrorCode for AccessError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound => Code::NotFound,
            Self::ConsentRequired => Code::ConsentRequired,
            Self::Storage(e) => e.code(),
        }
    }
}

impl DomainError for AccessError {}

/// Proof that the caller may see this patient's records; only [`Access::patient`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatientGrant(PatientId);

impl PatientGrant {
    pub fn patient_id(self) -> PatientId {
        self.0
    }
}

/// The access service.
#[derive(Clone)]
pub struct Access {
    pg: PgPool,
    clock: Clock,
    audit: AuditLog,
}

impl Access {
    pub fn new(pg: PgPool, clock: Clock, audit: AuditLog) -> Self {
        Self { pg, clock, audit }
    }

    /// Whether `who` may see the patient: a patient their own record, a clinician patients on
    /// their care team or under an unexpired emergency-access grant, an admin every record.
    /// `false` also when the record does not exist.
    pub async fn can_see_patient(&self, who: &Principal, patient: PatientId) -> Result<bool, AccessError> {
        let patient_id = patient.as_uuid();
        let ok = match who.role {
            // A patient's own record: the session's principal was read joined to it, and
            // patient rows are never deleted.
            Role::Patient => who.patient_id == Some(patient),
            Role::Admin => {
                sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM patients WHERE id = $1) AS "exists!""#, patient_id)
                    .fetch_one(&self.pg)
                    .await?
            }
            Role::Clinician => {
                sqlx::query_scalar!(
                    r#"SELECT (EXISTS (SELECT 1 FROM care_team WHERE patient_id = $1 AND clinician_id = $2)
                           OR EXISTS (SELECT 1 FROM emergency_access WHERE patient_id = $1 AND clinician_id = $2
                                      AND granted_at <= $3 AND expires_at > $3)) AS "visible!""#,
                    patient_id,
                    who.user_id.as_uuid(),
                    self.clock.now(),
                )
                .fetch_one(&self.pg)
                .await?
            }
        };
        Ok(ok)
    }

    /// The caller's grant to the patient, or [`AccessError::NotFound`] with the refusal
    /// audited under `action`.
    pub async fn patient(
        &self,
        caller: &Caller,
        patient: PatientId,
        action: &str,
    ) -> Result<PatientGrant, AccessError> {
        if self.can_see_patient(&caller.who, patient).await? {
            return Ok(PatientGrant(patient));
        }
        let ev = caller.attribute(AuditEvent::new(action, "denied").target("patient", patient.as_uuid()));
        self.audit.append(self.clock.now(), ev).await?;
        Err(AccessError::NotFound)
    }

    /// Scans of a patient need their scan-capture consent on file ([`has_scan_consent`]).
    pub async fn require_scan_consent(&self, grant: PatientGrant) -> Result<(), AccessError> {
        if has_scan_consent(&self.pg, grant.patient_id()).await.map_err(StorageError::from)? {
            Ok(())
        } else {
            Err(AccessError::ConsentRequired)
        }
    }
}

/// Whether the patient's newest scan-capture consent decision is a grant (the latest consent
/// entry for `scan_capture` says `granted`). The one place the rule is written: the scan API,
/// the scan socket and the patient record all ask here.
pub async fn has_scan_consent(pg: &PgPool, patient: PatientId) -> Result<bool, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar!(
        "SELECT data->>'status' FROM patient_entries
         WHERE patient_id = $1 AND kind = 'consent' AND data->>'scope' = 'scan_capture'
         ORDER BY data->>'date' DESC, created_at DESC, id DESC LIMIT 1",
        patient.as_uuid()
    )
    .fetch_optional(pg)
    .await?
    .flatten();
    Ok(status.as_deref() == Some("granted"))
}
