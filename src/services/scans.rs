//! Wound scans as the other layers need them: a scan the caller may see, a new scan (with
//! the patient's scan-capture consent, and the consult it is taken in), a patient's scans,
//! and whether a scan may be streamed. The HTTP scan and measurement resources and the scan
//! socket share it. Access follows the patient record (`super::access`): a scan the caller
//! may not see answers as one that does not exist, and the refusal is audited there.
//! Success audits, dashboard events and the consult room's `scan_requested` stay with the
//! caller (they belong to the edges that hold the dashboard hub and the rooms).

use coherency_protocol::ids::{ConsultId, PatientId, ScanId, UserId};
use coherency_protocol::{Code, ErrorCode};
use sqlx::PgPool;
use uuid::Uuid;

use super::access::{Access, AccessError};
use super::wounds::{self, WoundError};
use super::Caller;
use crate::clock::Clock;
use crate::consults::Consult;
use crate::error::{DomainError, StorageError};
use crate::store::scans::{self, NewScan, ScanRecord};

/// Why a scan was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Not there, or not the caller's to see (also a new scan's consult that does not exist).
    #[error("not found")]
    NotFound,
    /// The caller may not see the patient, or their scan-capture consent is not on file.
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("the consult is with another patient")]
    ConsultOfAnotherPatient,
    #[error("the consult has ended")]
    ConsultEnded,
    #[error("the scan failed or was cancelled")]
    NotStreamable,
    /// The named wound is not the patient's, or the inline wound is invalid.
    #[error(transparent)]
    Wound(#[from] WoundError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for ScanError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl ErrorCode for ScanError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound => Code::NotFound,
            Self::Access(e) => e.code(),
            Self::ConsultOfAnotherPatient => Code::Conflict,
            Self::ConsultEnded => Code::ConsultEnded,
            Self::NotStreamable => Code::ScanNotStreamable,
            Self::Wound(e) => e.code(),
            Self::Storage(e) => e.code(),
        }
    }
}

impl DomainError for ScanError {
    fn field(&self) -> Option<&str> {
        match self {
            Self::Wound(e) => e.field(),
            _ => None,
        }
    }
}

/// The wound a new scan is of.
#[derive(Debug)]
pub enum ScanWound {
    /// The patient's wound whose site reads the scan's body site, or a new one made from it.
    BySite,
    /// An existing wound of the patient.
    Existing(Uuid),
    /// A new wound (validated), created with the scan.
    New(Box<crate::store::wounds::WoundFields>),
}

/// The scans service.
#[derive(Clone)]
pub struct Scans {
    pg: PgPool,
    clock: Clock,
    access: Access,
}

impl Scans {
    pub fn new(pg: PgPool, clock: Clock, access: Access) -> Self {
        Self { pg, clock, access }
    }

    /// The scan if the caller may see its patient; otherwise [`ScanError::NotFound`], as for a
    /// scan that does not exist (the refusal audited as `action`).
    pub async fn visible(&self, caller: &Caller, id: ScanId, action: &str) -> Result<ScanRecord, ScanError> {
        let scan = scans::get(&self.pg, id.as_uuid()).await?.ok_or(ScanError::NotFound)?;
        self.access.patient(caller, PatientId::from_uuid(scan.patient_id), action).await?;
        Ok(scan)
    }

    /// Creates a scan in `created` for a patient the caller may see (audited `scan.create`
    /// when refused) whose scan-capture consent is on file. A named consult must exist, be
    /// with this patient and not have ended; it is returned so the caller can ask its room
    /// for the scan.
    pub async fn create(
        &self,
        caller: &Caller,
        patient: PatientId,
        body_site: String,
        wound: ScanWound,
        consult: Option<ConsultId>,
        created_by: UserId,
    ) -> Result<(ScanRecord, Option<Consult>), ScanError> {
        let grant = self.access.patient(caller, patient, "scan.create").await?;
        self.access.require_scan_consent(grant).await?;
        let consult = match consult {
            Some(id) => Some(self.scan_consult(id, patient).await?),
            None => None,
        };
        let now = self.clock.now();
        let (wound_id, new_wound) = match wound {
            ScanWound::Existing(id) => {
                wounds::of_patient(&self.pg, id, patient).await?;
                (id, None)
            }
            ScanWound::New(w) => (Uuid::now_v7(), Some(*w)),
            ScanWound::BySite => {
                match crate::store::wounds::find_by_site(&self.pg, patient.as_uuid(), &body_site).await? {
                    Some(id) => (id, None),
                    None => (Uuid::now_v7(), Some(wounds::from_body_site(&body_site, created_by.as_uuid(), now))),
                }
            }
        };
        let new = NewScan {
            id: Uuid::now_v7(),
            patient_id: patient.as_uuid(),
            consult_id: consult.as_ref().map(|c| c.id),
            wound_id,
            new_wound,
            body_site,
            created_by: created_by.as_uuid(),
            at: now,
        };
        let scan = scans::insert(&self.pg, &new).await?;
        Ok((scan, consult))
    }

    /// The patient's scans, newest first, at most `limit` (the refusal audited as `scan.list`).
    pub async fn list_for_patient(
        &self,
        caller: &Caller,
        patient: PatientId,
        limit: i64,
    ) -> Result<Vec<ScanRecord>, ScanError> {
        self.access.patient(caller, patient, "scan.list").await?;
        Ok(scans::list_for_patient(&self.pg, patient.as_uuid(), limit).await?)
    }

    /// Whether the caller may stream the scan: it exists and they may see its patient (the
    /// refusal audited as `scan.stream`), the patient's scan-capture consent is on file, and
    /// the scan has not failed or been cancelled.
    pub async fn streamable(&self, caller: &Caller, id: ScanId) -> Result<(), ScanError> {
        let (patient, status) = scans::owner_and_status(&self.pg, id.as_uuid()).await?.ok_or(ScanError::NotFound)?;
        let grant = self.access.patient(caller, PatientId::from_uuid(patient), "scan.stream").await?;
        self.access.require_scan_consent(grant).await?;
        if matches!(status.as_str(), "failed" | "cancelled") {
            return Err(ScanError::NotStreamable);
        }
        Ok(())
    }

    /// The scan a capture link is asked for (`super::capture`), if the caller may see its
    /// patient (the refusal audited as `scan.capture_link.create`) and the patient's
    /// scan-capture consent is on file: the phone it opens will need both to stream.
    pub async fn for_capture_link(&self, caller: &Caller, id: ScanId) -> Result<ScanRecord, ScanError> {
        let scan = scans::get(&self.pg, id.as_uuid()).await?.ok_or(ScanError::NotFound)?;
        let grant =
            self.access.patient(caller, PatientId::from_uuid(scan.patient_id), "scan.capture_link.create").await?;
        self.access.require_scan_consent(grant).await?;
        Ok(scan)
    }

    /// The consult a new scan names: it must exist, be with the scan's patient and not have ended.
    async fn scan_consult(&self, id: ConsultId, patient: PatientId) -> Result<Consult, ScanError> {
        let c = crate::consults::load(&self.pg, id.as_uuid()).await?.ok_or(ScanError::NotFound)?;
        if c.patient_id != Some(patient.as_uuid()) {
            return Err(ScanError::ConsultOfAnotherPatient);
        }
        if c.status == "ended" {
            return Err(ScanError::ConsultEnded);
        }
        Ok(c)
    }
}
