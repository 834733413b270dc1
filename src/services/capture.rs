//! Capture links: during a consult the clinician (or the patient) asks for a link that opens
//! a requested scan on the patient's phone. The link carries a single-use capture code (256
//! random bits, stored only as its SHA-256, [`CODE_TTL`]), bound to the scan and to the
//! scan's patient's account. Redeeming it starts a capture session
//! (`super::identity::sessions`): a session of that patient confined to streaming that one
//! scan. `docs/security.md`, "Capture links", has the reasoning; `docs/protocol.md`, "Capture
//! links", the phone's side.
//!
//! Refusals are this service's errors; the success and refusal audit rows are written by the
//! HTTP edge, which knows the request (only a refused *access* to the scan is audited here,
//! by `super::scans`).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use coherency_protocol::ids::{ScanId, SessionId, UserId};
use coherency_protocol::{Code, ErrorCode};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::identity::sessions::CaptureSession;
use super::identity::{Identity, IdentityError};
use super::scans::{ScanError, Scans};
use super::Caller;
use crate::clock::Clock;
use crate::error::{DomainError, StorageError};
use crate::store::capture_codes::{self, NewCode};

/// How long a capture code can be redeemed.
pub const CODE_TTL: Duration = Duration::minutes(10);
/// The readable prefix of every capture code (secret scanners and people can tell it apart
/// from an access token).
pub const CODE_PREFIX: &str = "chc_";

/// Why a capture link was not made or not redeemed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Not visible to the caller (404, audited), or no consent on file.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The scan no longer waits for frames and is not streaming.
    #[error("the scan is no longer waiting for frames or streaming")]
    NotCapturable,
    /// The scan's patient has no account (a record made by staff), or it is disabled.
    #[error("the scan's patient has no active account to capture with")]
    NoAccount,
    /// Unknown or expired: answered alike.
    #[error("this capture link is not valid or has expired; ask for a new one")]
    InvalidCode,
    /// Redeemed before; the session it gave has been revoked.
    #[error("this capture link was already used; ask for a new one")]
    CodeUsed { scan_id: ScanId },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for CaptureError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl ErrorCode for CaptureError {
    fn code(&self) -> Code {
        match self {
            Self::Scan(e) => e.code(),
            Self::NotCapturable => Code::ScanNotStreamable,
            Self::NoAccount => Code::Conflict,
            Self::InvalidCode => Code::InvalidCaptureCode,
            Self::CodeUsed { .. } => Code::CaptureCodeUsed,
            Self::Identity(e) => e.code(),
            Self::Storage(e) => e.code(),
        }
    }
}

impl DomainError for CaptureError {}

/// A capture link's code as made: shown once, never stored.
pub struct NewLink {
    pub scan_id: ScanId,
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

/// A redeemed code: the capture session, for the user and scan it is bound to.
pub struct Redeemed {
    pub scan_id: ScanId,
    pub user_id: UserId,
    pub session: CaptureSession,
}

/// The hash a code is stored and looked up as (hex SHA-256 of the whole code). Unkeyed: the
/// code's 256 random bits are what make it unguessable, not the hash.
pub fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

/// A new code: [`CODE_PREFIX`] and 32 random bytes, unpadded base64url (47 characters).
fn new_code() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("{CODE_PREFIX}{}", B64URL.encode(raw))
}

/// Whether a scan in this status can still take a phone: it waits for frames or streams.
pub fn capturable(status: &str) -> bool {
    matches!(status, "created" | "streaming")
}

/// The capture-link service.
#[derive(Clone)]
pub struct CaptureLinks {
    pg: PgPool,
    clock: Clock,
    scans: Scans,
    identity: Arc<Identity>,
}

impl CaptureLinks {
    pub fn new(pg: PgPool, clock: Clock, scans: Scans, identity: Arc<Identity>) -> Self {
        Self { pg, clock, scans, identity }
    }

    /// Makes a code for `scan`, which the caller may see (the refusal audited as
    /// `scan.capture_link.create`), whose patient's scan consent is on file, which still
    /// waits for frames or streams and whose patient has an active account. The scan's
    /// earlier unused codes stop working: only the newest link opens it.
    pub async fn create(&self, caller: &Caller, scan: ScanId) -> Result<NewLink, CaptureError> {
        let record = self.scans.for_capture_link(caller, scan).await?;
        if !capturable(&record.status) {
            return Err(CaptureError::NotCapturable);
        }
        let now = self.clock.now();
        let mut tx = self.pg.begin().await?;
        let (user_id, disabled) =
            capture_codes::patient_user(&mut tx, scan.as_uuid()).await?.ok_or(CaptureError::NoAccount)?;
        if disabled {
            return Err(CaptureError::NoAccount);
        }
        let code = new_code();
        let expires_at = now + CODE_TTL;
        capture_codes::insert(
            &mut tx,
            &NewCode {
                code_hash: &code_hash(&code),
                scan_id: scan.as_uuid(),
                user_id,
                created_by: caller.who.user_id.as_uuid(),
                at: now,
                expires_at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(NewLink { scan_id: scan, code, expires_at })
    }

    /// Redeems `code` once: a capture session for the code's user and scan. A code presented
    /// again is refused and the session it gave is revoked (one of the two holders is not the
    /// patient's phone; the patient asks for a new link). An unknown and an expired code are
    /// refused alike.
    pub async fn redeem(
        &self,
        code: &str,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<Redeemed, CaptureError> {
        let hash = code_hash(code);
        let now = self.clock.now();
        let mut tx = self.pg.begin().await?;
        let row = capture_codes::lock(&mut tx, &hash).await?.ok_or(CaptureError::InvalidCode)?;
        let scan_id = ScanId::from_uuid(row.scan_id);
        if row.used_at.is_some() {
            tx.rollback().await?;
            if let Some(session) = row.session_id {
                self.identity.end(SessionId::from_uuid(session), "capture_code_replayed").await?;
            }
            return Err(CaptureError::CodeUsed { scan_id });
        }
        if now >= row.expires_at {
            return Err(CaptureError::InvalidCode);
        }
        if !capturable(&row.scan_status) {
            return Err(CaptureError::NotCapturable);
        }
        if row.user_disabled {
            return Err(IdentityError::AccountDisabled.into());
        }
        let user_id = UserId::from_uuid(row.user_id);
        let session = self.identity.create_capture(&mut tx, user_id, scan_id, ip, user_agent).await?;
        capture_codes::mark_used(&mut tx, &hash, now, session.session_id.as_uuid()).await?;
        tx.commit().await?;
        Ok(Redeemed { scan_id, user_id, session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_256_random_bits_in_base64url_after_their_prefix() {
        let a = new_code();
        let b = new_code();
        assert_ne!(a, b);
        let body = a.strip_prefix(CODE_PREFIX).unwrap();
        assert_eq!(B64URL.decode(body).unwrap().len(), 32);
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_eq!(code_hash(&a).len(), 64);
        assert_ne!(code_hash(&a), code_hash(&b));
    }
}
