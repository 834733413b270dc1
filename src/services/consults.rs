//! Consults as the other layers need them: which consults a caller may see and in which part
//! (host, patient, invited participant), and whether a patient may check in yet. HTTP
//! handlers and the signalling socket share it; the live state stays in the consult's `Room`.

use chrono::{DateTime, Utc};
use coherency_protocol::consult::ParticipantRole;
use coherency_protocol::ids::{ConsultId, PatientId};
use coherency_protocol::{Code, ErrorCode};
use sqlx::PgPool;

use super::identity::{Principal, Role};
use crate::consults::{Consult, CHECK_IN_OPENS_BEFORE};
use crate::error::{DomainError, StorageError};

/// Why a consult was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsultError {
    /// Not there, or the caller has no part in it.
    #[error("not found")]
    NotFound,
    #[error("check-in opens 15 minutes before the appointment")]
    CheckInTooEarly,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for ConsultError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl ErrorCode for ConsultError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound => Code::NotFound,
            Self::CheckInTooEarly => Code::CheckInTooEarly,
            Self::Storage(e) => e.code(),
        }
    }
}

impl DomainError for ConsultError {}

/// A consult the caller may see, and their part in it.
#[derive(Debug, Clone)]
pub struct VisibleConsult {
    pub consult: Consult,
    pub role: ParticipantRole,
}

/// The consults service.
#[derive(Clone)]
pub struct Consults {
    pg: PgPool,
}

impl Consults {
    pub fn new(pg: PgPool) -> Self {
        Self { pg }
    }

    /// Whether `who` hosts `c`: its clinician, or an admin (who may act as host).
    pub fn is_host(who: &Principal, c: &Consult) -> bool {
        who.user_id.as_uuid() == c.clinician_id || who.role == Role::Admin
    }

    /// The consult if the caller has any part in it (host, its patient, a participant); else
    /// [`ConsultError::NotFound`], as for a consult that does not exist.
    pub async fn visible(&self, who: &Principal, id: ConsultId) -> Result<VisibleConsult, ConsultError> {
        let consult = crate::consults::load(&self.pg, id.as_uuid()).await?.ok_or(ConsultError::NotFound)?;
        if Self::is_host(who, &consult) {
            return Ok(VisibleConsult { consult, role: ParticipantRole::Host });
        }
        if who.role == Role::Patient
            && who.patient_id.is_some()
            && who.patient_id == consult.patient_id.map(PatientId::from_uuid)
        {
            return Ok(VisibleConsult { consult, role: ParticipantRole::Patient });
        }
        let role: Option<String> = sqlx::query_scalar!(
            "SELECT role FROM consult_participants WHERE consult_id = $1 AND user_id = $2",
            id.as_uuid(),
            who.user_id.as_uuid(),
        )
        .fetch_optional(&self.pg)
        .await?;
        match role.and_then(|r| ParticipantRole::parse(&r)) {
            Some(role) => Ok(VisibleConsult { consult, role }),
            None => Err(ConsultError::NotFound),
        }
    }

    /// A patient checks in from 15 minutes before the appointment (ad hoc consults: any time).
    pub fn check_in_open(c: &Consult, now: DateTime<Utc>) -> Result<(), ConsultError> {
        match c.scheduled_start {
            Some(start) if now < start - CHECK_IN_OPENS_BEFORE => Err(ConsultError::CheckInTooEarly),
            _ => Ok(()),
        }
    }
}
