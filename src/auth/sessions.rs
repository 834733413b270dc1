//! Sessions: opaque access tokens (idle 15 min, absolute 12 h) and single-use, rotating
//! refresh tokens. A refresh token presented twice revokes its whole family (the session).
//! Revocation is a database fact checked on every request, and is announced on the Redis
//! bus so every node closes the affected sockets.

use chrono::{DateTime, Duration, Utc};
use coherency_protocol::Code;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{new_token, token_hash, Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;

pub const IDLE_TIMEOUT: Duration = Duration::minutes(15);
pub const ABSOLUTE_LIFETIME: Duration = Duration::hours(12);
/// `last_seen_at` is refreshed at most this often per session.
const TOUCH_EVERY: Duration = Duration::seconds(5);
/// Socket tickets live this long and work once.
pub const TICKET_TTL_SECS: u64 = 30;

/// What login and refresh hand out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout_secs: i64,
    pub session_expires_at: DateTime<Utc>,
    pub session_id: Uuid,
}

fn secret(state: &AppState) -> &[u8] {
    state.token_secret.expose_secret().as_bytes()
}

/// Starts a session for `user_id`.
pub async fn create(
    state: &AppState,
    user_id: Uuid,
    mfa_verified: bool,
    ip: Option<String>,
    user_agent: Option<String>,
) -> Result<TokenPair, ApiError> {
    let now = state.clock.now();
    let id = Uuid::now_v7();
    let access = new_token("cha_");
    let refresh = new_token("chr_");
    let expires = now + ABSOLUTE_LIFETIME;
    let mut tx = state.stores.pg.begin().await?;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at, absolute_expires_at, mfa_verified, ip, user_agent)
         VALUES ($1,$2,$3,$4,$4,$5,$6,$7,$8)",
    )
    .bind(id)
    .bind(user_id)
    .bind(token_hash(secret(state), &access))
    .bind(now)
    .bind(expires)
    .bind(mfa_verified)
    .bind(ip)
    .bind(user_agent.map(|u| u.chars().take(200).collect::<String>()))
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1,$2,$3)")
        .bind(token_hash(secret(state), &refresh))
        .bind(id)
        .bind(now)
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

/// The columns a principal is built from; `{where}` selects the session.
const PRINCIPAL_SELECT: &str =
    "SELECT s.id, s.user_id, s.last_seen_at, s.absolute_expires_at, s.revoked_at, s.mfa_verified,
        u.role, u.disabled_at, u.totp_enabled, p.id AS patient_id
 FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN patients p ON p.user_id = u.id";

/// Why a session row no longer authenticates anyone.
enum Dead {
    Revoked,
    Disabled,
    /// `idle` or `absolute`.
    Expired(&'static str),
}

/// The one liveness rule (revocation, disabled account, both timeouts) and the principal
/// of a live session row.
fn live_principal(row: &sqlx::postgres::PgRow, now: DateTime<Utc>) -> Result<Result<Principal, Dead>, ApiError> {
    if row.get::<Option<DateTime<Utc>>, _>("revoked_at").is_some() {
        return Ok(Err(Dead::Revoked));
    }
    if row.get::<Option<DateTime<Utc>>, _>("disabled_at").is_some() {
        return Ok(Err(Dead::Disabled));
    }
    let last_seen: DateTime<Utc> = row.get("last_seen_at");
    let absolute: DateTime<Utc> = row.get("absolute_expires_at");
    if now >= absolute {
        return Ok(Err(Dead::Expired("absolute")));
    }
    if now - last_seen >= IDLE_TIMEOUT {
        return Ok(Err(Dead::Expired("idle")));
    }
    let role = Role::parse(row.get::<String, _>("role").as_str()).ok_or_else(|| ApiError::internal("unknown role"))?;
    Ok(Ok(Principal {
        user_id: row.get("user_id"),
        role,
        session_id: row.get("id"),
        mfa_enrolled: row.get("totp_enabled"),
        mfa_verified: row.get("mfa_verified"),
        patient_id: row.get("patient_id"),
    }))
}

/// Resolves an access token to its principal, enforcing revocation, disabled accounts and
/// both timeouts.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if token.len() > 100 {
        return Err(ApiError::unauthenticated());
    }
    let now = state.clock.now();
    let row = sqlx::query(&format!("{PRINCIPAL_SELECT} WHERE s.access_hash = $1"))
        .bind(token_hash(secret(state), token))
        .fetch_optional(&state.stores.pg)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    let principal = match live_principal(&row, now)? {
        Ok(p) => p,
        Err(Dead::Revoked) => return Err(ApiError::new(Code::TokenRevoked, "this session has ended; log in again")),
        Err(Dead::Disabled) => return Err(ApiError::new(Code::AccountDisabled, "this account is disabled")),
        Err(Dead::Expired(reason)) => {
            end(state, row.get("id"), reason).await?;
            return Err(ApiError::new(Code::TokenExpired, "this session has expired; log in again"));
        }
    };
    let last_seen: DateTime<Utc> = row.get("last_seen_at");
    if now - last_seen >= TOUCH_EVERY {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(principal.session_id)
            .bind(now)
            .execute(&state.stores.pg)
            .await?;
    }
    Ok(principal)
}

/// Rotates a refresh token. A used token revokes its family.
pub async fn refresh(state: &AppState, refresh_token: &str) -> Result<TokenPair, ApiError> {
    let now = state.clock.now();
    let hash = token_hash(secret(state), refresh_token);
    let mut tx = state.stores.pg.begin().await?;
    let row = sqlx::query(
        "SELECT r.session_id, r.used_at, s.revoked_at, s.last_seen_at, s.absolute_expires_at, s.user_id, u.disabled_at
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
         WHERE r.token_hash = $1 FOR UPDATE OF r, s",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::new(Code::Unauthenticated, "unknown refresh token"))?;
    let session_id: Uuid = row.get("session_id");
    let user_id: Uuid = row.get("user_id");
    if row.get::<Option<DateTime<Utc>>, _>("used_at").is_some() {
        tx.rollback().await?;
        end(state, session_id, "refresh-reuse").await?;
        crate::audit::record(
            &state.stores.pg,
            now,
            &crate::audit::AuditEvent::new("session.refresh_reuse", "denied")
                .target("session", session_id)
                .details(serde_json::json!({ "user_id": user_id })),
        )
        .await?;
        return Err(ApiError::new(Code::TokenRevoked, "refresh token reused; the session has been revoked"));
    }
    if row.get::<Option<DateTime<Utc>>, _>("revoked_at").is_some() {
        return Err(ApiError::new(Code::TokenRevoked, "this session has ended; log in again"));
    }
    if row.get::<Option<DateTime<Utc>>, _>("disabled_at").is_some() {
        return Err(ApiError::new(Code::AccountDisabled, "this account is disabled"));
    }
    let last_seen: DateTime<Utc> = row.get("last_seen_at");
    let absolute: DateTime<Utc> = row.get("absolute_expires_at");
    if now >= absolute || now - last_seen >= IDLE_TIMEOUT {
        tx.rollback().await?;
        end(state, session_id, "expired").await?;
        return Err(ApiError::new(Code::TokenExpired, "this session has expired; log in again"));
    }
    let access = new_token("cha_");
    let next = new_token("chr_");
    sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
        .bind(&hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1,$2,$3)")
        .bind(token_hash(secret(state), &next))
        .bind(session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE sessions SET access_hash = $2, last_seen_at = $3 WHERE id = $1")
        .bind(session_id)
        .bind(token_hash(secret(state), &access))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(TokenPair {
        access_token: access,
        refresh_token: next,
        token_type: "Bearer",
        idle_timeout_secs: IDLE_TIMEOUT.num_seconds(),
        session_expires_at: absolute,
        session_id,
    })
}

/// Ends one session and tells every node.
pub async fn end(state: &AppState, session_id: Uuid, reason: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .bind(state.clock.now())
        .bind(reason)
        .execute(&state.stores.pg)
        .await?;
    super::sockets::announce(state, super::sockets::Revocation::Session(session_id)).await;
    Ok(())
}

/// Ends every session of a user and tells every node.
pub async fn end_all(state: &AppState, user_id: Uuid, reason: &str) -> Result<u64, ApiError> {
    let n = sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(state.clock.now())
    .bind(reason)
    .execute(&state.stores.pg)
    .await?
    .rows_affected();
    super::sockets::announce(state, super::sockets::Revocation::User(user_id)).await;
    Ok(n)
}

/// Issues a single-use socket ticket for this session.
pub async fn issue_ticket(state: &AppState, session_id: Uuid) -> Result<String, ApiError> {
    let ticket = new_token("cht_");
    let mut c = state.stores.redis.conn.clone();
    let key = state.stores.redis.key(&format!("ticket:{}", token_hash(secret(state), &ticket)));
    let _: () = c.set_ex(key, session_id.to_string(), TICKET_TTL_SECS).await?;
    Ok(ticket)
}

/// Redeems a ticket (once) and resolves the session behind it.
pub async fn redeem_ticket(state: &AppState, ticket: &str) -> Result<Principal, ApiError> {
    if ticket.len() > 100 {
        return Err(ApiError::unauthenticated());
    }
    let mut c = state.stores.redis.conn.clone();
    let key = state.stores.redis.key(&format!("ticket:{}", token_hash(secret(state), ticket)));
    let session: Option<String> = redis::cmd("GETDEL").arg(&key).query_async(&mut c).await?;
    let session_id: Uuid = session
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::new(Code::Unauthenticated, "invalid or used ticket"))?;
    principal_for_session(state, session_id).await
}

/// The principal of a live session (tickets and socket re-checks).
pub async fn principal_for_session(state: &AppState, session_id: Uuid) -> Result<Principal, ApiError> {
    let row = sqlx::query(&format!("{PRINCIPAL_SELECT} WHERE s.id = $1"))
        .bind(session_id)
        .fetch_optional(&state.stores.pg)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    match live_principal(&row, state.clock.now())? {
        Ok(p) => Ok(p),
        Err(Dead::Revoked | Dead::Disabled) => Err(ApiError::new(Code::TokenRevoked, "this session has ended")),
        Err(Dead::Expired(_)) => Err(ApiError::new(Code::TokenExpired, "this session has expired")),
    }
}
