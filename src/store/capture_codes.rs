//! Capture codes in PostgreSQL (`capture_codes`): stored as their SHA-256 only, bound to a
//! scan and to the user they act for, single use. The rules (who may make one, how long it
//! lives, what redeeming it gives) are `crate::services::capture`'s.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Codes that ended (expired or superseded) longer ago than this are deleted when a new one
/// is made: long past any replay of a code whose session (30 min at most) could still live.
const KEEP_ENDED: Duration = Duration::days(1);

/// A new code.
pub struct NewCode<'a> {
    pub code_hash: &'a str,
    pub scan_id: Uuid,
    pub user_id: Uuid,
    pub created_by: Uuid,
    pub at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Stores `code` as the scan's one live code: unused codes of the scan end now (only the
/// newest link works), and codes long ended are removed.
pub async fn insert(tx: &mut PgConnection, code: &NewCode<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE capture_codes SET expires_at = $2 WHERE scan_id = $1 AND used_at IS NULL AND expires_at > $2",
        code.scan_id,
        code.at,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM capture_codes WHERE expires_at < $1", code.at - KEEP_ENDED).execute(&mut *tx).await?;
    sqlx::query!(
        "INSERT INTO capture_codes (code_hash, scan_id, user_id, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        code.code_hash,
        code.scan_id,
        code.user_id,
        code.created_by,
        code.at,
        code.expires_at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stored code, as redeeming reads it.
pub struct CodeRow {
    pub scan_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub session_id: Option<Uuid>,
    /// The scan's status now.
    pub scan_status: String,
    /// Whether the user the code acts for is disabled.
    pub user_disabled: bool,
}

/// The code with this hash, locked until `tx` ends (two redeems of one code serialise here).
pub async fn lock(tx: &mut PgConnection, code_hash: &str) -> Result<Option<CodeRow>, sqlx::Error> {
    sqlx::query_as!(
        CodeRow,
        r#"SELECT c.scan_id, c.user_id, c.expires_at, c.used_at, c.session_id, s.status AS scan_status,
                  u.disabled_at IS NOT NULL AS "user_disabled!"
             FROM capture_codes c JOIN scans s ON s.id = c.scan_id JOIN users u ON u.id = c.user_id
            WHERE c.code_hash = $1
              FOR UPDATE OF c"#,
        code_hash,
    )
    .fetch_optional(&mut *tx)
    .await
}

/// Marks the code redeemed for `session_id`.
pub async fn mark_used(
    tx: &mut PgConnection,
    code_hash: &str,
    at: DateTime<Utc>,
    session_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE capture_codes SET used_at = $2, session_id = $3 WHERE code_hash = $1",
        code_hash,
        at,
        session_id
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The user account of a scan's patient, if the patient has one, and whether it is disabled.
pub async fn patient_user(tx: &mut PgConnection, scan_id: Uuid) -> Result<Option<(Uuid, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT u.id AS "user_id?", u.disabled_at IS NOT NULL AS "disabled?"
             FROM scans s JOIN patients p ON p.id = s.patient_id LEFT JOIN users u ON u.id = p.user_id
            WHERE s.id = $1"#,
        scan_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.and_then(|r| Some((r.user_id?, r.disabled.unwrap_or(false)))))
}
