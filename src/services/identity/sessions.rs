//! Sessions: opaque access tokens (idle 15 min, absolute 12 h) and single-use, rotating
//! refresh tokens. A refresh token presented twice revokes its whole family (the session).
//! Revocation is a database fact checked on every request, and is announced on the Redis
//! bus so every node closes the affected sockets.
//!
//! A capture session (a redeemed capture link, `crate::services::capture`) is a session of
//! the scan's patient confined to one scan: no refresh token, at most
//! [`CAPTURE_SESSION_LIFETIME`], and dead once its scan is over (complete, failed or
//! cancelled) — the same rule, read from the same row, as every other session's liveness.

use chrono::{DateTime, Duration, Utc};
use coherency_protocol::ids::{PatientId, ScanId, SessionId, UserId};
use redis::AsyncCommands;
use serde::Serialize;
use uuid::Uuid;

use super::sockets::{announce, Revocation};
use super::{new_token, Identity, IdentityError, Principal, Role};

pub const IDLE_TIMEOUT: Duration = Duration::minutes(15);
pub const ABSOLUTE_LIFETIME: Duration = Duration::hours(12);
/// `last_seen_at` is refreshed at most this often per session.
const TOUCH_EVERY: Duration = Duration::seconds(5);
/// Socket tickets live this long and work once.
pub const TICKET_TTL_SECS: u64 = 30;
/// A capture session's absolute lifetime (its idle limit is every session's).
pub const CAPTURE_SESSION_LIFETIME: Duration = Duration::minutes(30);

/// Why a capture session stopped working once its scan was over.
const SCAN_OVER: &str = "this capture link's scan is over; the link's session has ended";

/// A capture session as it was started: the access token is shown once.
pub struct CaptureSession {
    pub session_id: SessionId,
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
}

/// What login and refresh hand out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout_secs: i64,
    pub session_expires_at: DateTime<Utc>,
    #[schema(value_type = Uuid)]
    pub session_id: SessionId,
}

/// The columns a principal is built from (a session, its user and the user's patient record).
struct PrincipalRow {
    id: Uuid,
    user_id: Uuid,
    last_seen_at: DateTime<Utc>,
    absolute_expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    mfa_verified: bool,
    role: String,
    disabled_at: Option<DateTime<Utc>>,
    totp_enabled: bool,
    patient_id: Option<Uuid>,
    /// A capture session's scan, and that scan's status.
    capture_scan_id: Option<Uuid>,
    capture_scan_status: Option<String>,
}

/// Why a session row no longer authenticates anyone.
enum Dead {
    Revoked,
    Disabled,
    /// `idle` or `absolute`.
    Expired(&'static str),
    /// A capture session whose scan is over.
    ScanOver,
}

/// Whether a capture session's scan still lets it in: while the scan waits for frames or
/// streams, and while it is processing — so a phone that lost the connection after `finish`
/// can still reconnect and read `finished` (`docs/protocol.md` §6.6) — but not once the scan
/// is complete, failed or cancelled.
fn capture_scan_open(status: Option<&str>) -> bool {
    matches!(status, Some("created" | "streaming" | "processing"))
}

/// The one liveness rule (revocation, disabled account, both timeouts) and the principal
/// of a live session row.
fn live_principal(row: &PrincipalRow, now: DateTime<Utc>) -> Result<Result<Principal, Dead>, IdentityError> {
    if row.revoked_at.is_some() {
        return Ok(Err(Dead::Revoked));
    }
    if row.disabled_at.is_some() {
        return Ok(Err(Dead::Disabled));
    }
    let last_seen = row.last_seen_at;
    let absolute = row.absolute_expires_at;
    if now >= absolute {
        return Ok(Err(Dead::Expired("absolute")));
    }
    if now - last_seen >= IDLE_TIMEOUT {
        return Ok(Err(Dead::Expired("idle")));
    }
    if row.capture_scan_id.is_some() && !capture_scan_open(row.capture_scan_status.as_deref()) {
        return Ok(Err(Dead::ScanOver));
    }
    let role = Role::parse(row.role.as_str()).ok_or_else(|| IdentityError::internal("unknown role"))?;
    Ok(Ok(Principal {
        user_id: UserId::from_uuid(row.user_id),
        role,
        session_id: SessionId::from_uuid(row.id),
        mfa_enrolled: row.totp_enabled,
        mfa_verified: row.mfa_verified,
        patient_id: row.patient_id.map(PatientId::from_uuid),
        capture_scan: row.capture_scan_id.map(ScanId::from_uuid),
    }))
}

impl Identity {
    /// Starts a session for `user_id`.
    pub async fn create(
        &self,
        user_id: UserId,
        mfa_verified: bool,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<TokenPair, IdentityError> {
        let now = self.clock.now();
        let id = SessionId::new();
        let access = new_token("cha_");
        let refresh = new_token("chr_");
        let expires = now + ABSOLUTE_LIFETIME;
        let mut tx = self.pg.begin().await?;
        sqlx::query!(
            "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at, absolute_expires_at, mfa_verified, ip, user_agent)
             VALUES ($1,$2,$3,$4,$4,$5,$6,$7,$8)",
            id.as_uuid(),
            user_id.as_uuid(),
            self.token_hash(&access),
            now,
            expires,
            mfa_verified,
            ip,
            user_agent.map(|u| u.chars().take(200).collect::<String>()),
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1,$2,$3)",
            self.token_hash(&refresh),
            id.as_uuid(),
            now,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer",
            idle_timeout_secs: IDLE_TIMEOUT.num_seconds(),
            session_expires_at: expires,
            session_id: id,
        })
    }

    /// Starts a capture session for `user_id` confined to `scan`, in `tx` (the caller marks the
    /// capture code used in the same transaction): an access token and no refresh token,
    /// ending [`CAPTURE_SESSION_LIFETIME`] from now. Never MFA-verified: it acts for a patient.
    pub async fn create_capture(
        &self,
        tx: &mut sqlx::PgConnection,
        user_id: UserId,
        scan: ScanId,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<CaptureSession, IdentityError> {
        let now = self.clock.now();
        let id = SessionId::new();
        let access = new_token("cha_");
        let expires = now + CAPTURE_SESSION_LIFETIME;
        sqlx::query!(
            "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at, absolute_expires_at, mfa_verified,
                                   ip, user_agent, capture_scan_id)
             VALUES ($1,$2,$3,$4,$4,$5,false,$6,$7,$8)",
            id.as_uuid(),
            user_id.as_uuid(),
            self.token_hash(&access),
            now,
            expires,
            ip,
            user_agent.map(|u| u.chars().take(200).collect::<String>()),
            scan.as_uuid(),
        )
        .execute(&mut *tx)
        .await?;
        Ok(CaptureSession { session_id: id, access_token: access, expires_at: expires })
    }

    /// Resolves an access token to its principal, enforcing revocation, disabled accounts and
    /// both timeouts.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, IdentityError> {
        if token.len() > 100 {
            return Err(IdentityError::Unauthenticated("authentication required"));
        }
        let now = self.clock.now();
        let row = sqlx::query_as!(
            PrincipalRow,
            r#"SELECT s.id, s.user_id, s.last_seen_at, s.absolute_expires_at, s.revoked_at, s.mfa_verified,
                      u.role, u.disabled_at, u.totp_enabled, p.id AS "patient_id?",
                      s.capture_scan_id, cs.status AS "capture_scan_status?"
               FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN patients p ON p.user_id = u.id
                    LEFT JOIN scans cs ON cs.id = s.capture_scan_id
               WHERE s.access_hash = $1"#,
            self.token_hash(token),
        )
        .fetch_optional(&self.pg)
        .await?
        .ok_or_else(|| IdentityError::Unauthenticated("authentication required"))?;
        let principal = match live_principal(&row, now)? {
            Ok(p) => p,
            Err(Dead::Revoked) => return Err(IdentityError::TokenRevoked("this session has ended; log in again")),
            Err(Dead::Disabled) => return Err(IdentityError::AccountDisabled),
            Err(Dead::Expired(reason)) => {
                self.end(SessionId::from_uuid(row.id), reason).await?;
                return Err(IdentityError::TokenExpired("this session has expired; log in again"));
            }
            Err(Dead::ScanOver) => {
                self.end(SessionId::from_uuid(row.id), "capture_scan_over").await?;
                return Err(IdentityError::TokenRevoked(SCAN_OVER));
            }
        };
        if now - row.last_seen_at >= TOUCH_EVERY {
            self.touch(principal.session_id, now).await?;
        }
        Ok(principal)
    }

    /// Rotates a refresh token. A used token revokes its family.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, IdentityError> {
        let now = self.clock.now();
        let hash = self.token_hash(refresh_token);
        let mut tx = self.pg.begin().await?;
        let row = sqlx::query!(
            "SELECT r.session_id, r.used_at, s.revoked_at, s.last_seen_at, s.absolute_expires_at, s.user_id, u.disabled_at
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
             WHERE r.token_hash = $1 FOR UPDATE OF r, s",
            &hash,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| IdentityError::Unauthenticated("unknown refresh token"))?;
        let session = SessionId::from_uuid(row.session_id);
        let user_id: Uuid = row.user_id;
        if row.used_at.is_some() {
            tx.rollback().await?;
            self.end(session, "refresh-reuse").await?;
            crate::audit::record(
                &self.pg,
                now,
                &crate::audit::AuditEvent::new("session.refresh_reuse", "denied")
                    .target("session", session)
                    .details(serde_json::json!({ "user_id": user_id })),
            )
            .await?;
            return Err(IdentityError::TokenRevoked("refresh token reused; the session has been revoked"));
        }
        if row.revoked_at.is_some() {
            return Err(IdentityError::TokenRevoked("this session has ended; log in again"));
        }
        if row.disabled_at.is_some() {
            return Err(IdentityError::AccountDisabled);
        }
        let last_seen = row.last_seen_at;
        let absolute = row.absolute_expires_at;
        if now >= absolute || now - last_seen >= IDLE_TIMEOUT {
            tx.rollback().await?;
            self.end(session, "expired").await?;
            return Err(IdentityError::TokenExpired("this session has expired; log in again"));
        }
        let access = new_token("cha_");
        let next = new_token("chr_");
        sqlx::query!("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1", &hash, now)
            .execute(&mut *tx)
            .await?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1,$2,$3)",
            self.token_hash(&next),
            session.as_uuid(),
            now,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE sessions SET access_hash = $2, last_seen_at = $3 WHERE id = $1",
            session.as_uuid(),
            self.token_hash(&access),
            now,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: next,
            token_type: "Bearer",
            idle_timeout_secs: IDLE_TIMEOUT.num_seconds(),
            session_expires_at: absolute,
            session_id: session,
        })
    }

    /// Ends one session and tells every node.
    pub async fn end(&self, session: SessionId, reason: &str) -> Result<(), IdentityError> {
        let session_id = session.as_uuid();
        sqlx::query!(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
            session_id,
            self.clock.now(),
            reason,
        )
        .execute(&self.pg)
        .await?;
        announce(&self.sockets, &self.redis, Revocation::Session(session)).await;
        Ok(())
    }

    /// Ends every session of a user and tells every node.
    pub async fn end_all(&self, user: UserId, reason: &str) -> Result<u64, IdentityError> {
        let user_id = user.as_uuid();
        let n = sqlx::query!(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
            self.clock.now(),
            reason,
        )
        .execute(&self.pg)
        .await?
        .rows_affected();
        announce(&self.sockets, &self.redis, Revocation::User(user)).await;
        Ok(n)
    }

    /// Issues a single-use socket ticket for this session.
    pub async fn issue_ticket(&self, session: SessionId) -> Result<String, IdentityError> {
        let ticket = new_token("cht_");
        let mut c = self.redis.conn.clone();
        let key = self.redis.key(&format!("ticket:{}", self.token_hash(&ticket)));
        let _: () = c.set_ex(key, session.to_string(), TICKET_TTL_SECS).await?;
        Ok(ticket)
    }

    /// Redeems a ticket (once) and resolves the session behind it.
    pub async fn redeem_ticket(&self, ticket: &str) -> Result<Principal, IdentityError> {
        if ticket.len() > 100 {
            return Err(IdentityError::Unauthenticated("authentication required"));
        }
        let mut c = self.redis.conn.clone();
        let key = self.redis.key(&format!("ticket:{}", self.token_hash(ticket)));
        let stored: Option<String> = redis::cmd("GETDEL").arg(&key).query_async(&mut c).await?;
        let session: SessionId = stored
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| IdentityError::Unauthenticated("invalid or used ticket"))?;
        self.principal_for_session(session).await
    }

    /// The re-check of a socket whose user is active on it (in a consult's call, streaming a
    /// scan): the principal of the live session, which this also keeps from going idle, as a
    /// request would. A session already idle or past its absolute limit is not revived.
    pub async fn keep_alive(&self, session: SessionId) -> Result<Principal, IdentityError> {
        let principal = self.principal_for_session(session).await?;
        self.touch(session, self.clock.now()).await?;
        Ok(principal)
    }

    /// Marks the session seen at `now`, unless it was within [`TOUCH_EVERY`] (one write per
    /// session per interval, however many requests and sockets use it).
    async fn touch(&self, session: SessionId, now: DateTime<Utc>) -> Result<(), IdentityError> {
        sqlx::query!(
            "UPDATE sessions SET last_seen_at = $2
             WHERE id = $1 AND revoked_at IS NULL AND last_seen_at <= $3",
            session.as_uuid(),
            now,
            now - TOUCH_EVERY,
        )
        .execute(&self.pg)
        .await?;
        Ok(())
    }

    /// The principal of a live session (tickets and socket re-checks).
    pub async fn principal_for_session(&self, session: SessionId) -> Result<Principal, IdentityError> {
        let row = sqlx::query_as!(
            PrincipalRow,
            r#"SELECT s.id, s.user_id, s.last_seen_at, s.absolute_expires_at, s.revoked_at, s.mfa_verified,
                      u.role, u.disabled_at, u.totp_enabled, p.id AS "patient_id?",
                      s.capture_scan_id, cs.status AS "capture_scan_status?"
               FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN patients p ON p.user_id = u.id
                    LEFT JOIN scans cs ON cs.id = s.capture_scan_id
               WHERE s.id = $1"#,
            session.as_uuid(),
        )
        .fetch_optional(&self.pg)
        .await?
        .ok_or_else(|| IdentityError::Unauthenticated("authentication required"))?;
        match live_principal(&row, self.clock.now())? {
            Ok(p) => Ok(p),
            Err(Dead::Revoked | Dead::Disabled) => Err(IdentityError::TokenRevoked("this session has ended")),
            Err(Dead::Expired(_)) => Err(IdentityError::TokenExpired("this session has expired")),
            Err(Dead::ScanOver) => Err(IdentityError::TokenRevoked(SCAN_OVER)),
        }
    }
}
