//! Accounts and sessions: registration, login (with TOTP when enrolled), refresh, logout,
//! `/v1/me`, MFA enrolment, and single-use socket tickets.

use actix_web::{web, HttpRequest, HttpResponse};
use coherency_protocol::ids::{PatientId, SessionId, UserId};
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, limits, password, sessions, totp, Authenticated, Principal, Role};
use crate::error::ApiError;
use crate::http::input::{invalid, Day, Email, EmailAddress, Line, NewPassword, Password, PersonName};
use crate::services::identity::IdentityError;
use crate::state::AppState;

pub const MAX_EMAIL: usize = EmailAddress::MAX;

/// Trims, checks the shape ([`EmailAddress`]: one `@`, a dot in the domain, no spaces) and
/// lower-cases: for addresses that did not arrive as an `EmailAddress` (the CLI).
pub fn normalise_email(raw: &str, field: &str) -> Result<String, ApiError> {
    EmailAddress::new(raw.trim()).map(|e| e.normalise().into_inner()).map_err(|why| invalid(field, why))
}

fn email_subject(email: &str) -> String {
    hex::encode(&Sha256::digest(email.as_bytes())[..16])
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: Email,
    pub password: NewPassword,
    pub given_name: PersonName,
    pub family_name: PersonName,
    /// `YYYY-MM-DD`, 1900 to today.
    pub birth_date: Day,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub user_id: Uuid,
    pub patient_id: Uuid,
}

/// `POST /v1/auth/register`: a patient creates their account and patient record.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest, responses(
    (status = 201, body = Registered), (status = 400, description = "invalid_field / weak_password"),
    (status = 409, description = "email_taken"), (status = 429, description = "rate_limited")))]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let now = state.clock.now();
    let ip = auth::client_ip(&req, &state).unwrap_or_default();
    if let Some(wait) = limits::check_and_hit(
        &state.stores.redis,
        &limits::per_minute(limits::REGISTER_PER_IP, state.config.register_per_address_per_min),
        &ip,
        now,
    )
    .await?
    {
        return Err(ApiError::new(Code::RateLimited, "too many registrations; try later").with_retry_after(wait));
    }
    if let Some(wait) = limits::blocked(&state.stores.redis, &limits::EMAIL_TAKEN_PER_IP, &ip, now).await? {
        return Err(ApiError::new(Code::RateLimited, "too many attempts; try later").with_retry_after(wait));
    }
    let email = body.email.normalise().into_inner();
    let (given, family) = (body.given_name.into_inner(), body.family_name.into_inner());
    let today = now.date_naive();
    let birth_date = crate::http::patients::birth_date(body.birth_date, today, "birth_date")?;
    password::validate(body.password.expose(), "password")?;
    let hash = state.identity.hasher().hash(body.password.into_inner()).await?;
    let mut tx = state.stores.pg.begin().await?;
    let user_id =
        match state.identity.insert_user(&mut tx, &email, &format!("{given} {family}"), Role::Patient, &hash).await {
            Ok(id) => id.as_uuid(),
            Err(e @ IdentityError::EmailTaken) => {
                tx.rollback().await?;
                limits::hit(&state.stores.redis, &limits::EMAIL_TAKEN_PER_IP, &ip, now).await?;
                auth::audit(
                    &state,
                    &req,
                    None,
                    AuditEvent::new("account.register", "failure")
                        .details(serde_json::json!({"reason": "email_taken"})),
                )
                .await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
    let patient_id = Uuid::now_v7();
    // The sign-in email is also the record's contact email until the patient changes it.
    sqlx::query!(
        "INSERT INTO patients (id, user_id, given_name, family_name, birth_date, email, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$7)",
        patient_id,
        user_id,
        &given,
        &family,
        birth_date,
        &email,
        now,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let who = Principal {
        user_id: UserId::from_uuid(user_id),
        role: Role::Patient,
        session_id: SessionId::nil(),
        mfa_enrolled: false,
        mfa_verified: false,
        patient_id: Some(PatientId::from_uuid(patient_id)),
        capture_scan: None,
    };
    auth::audit(&state, &req, Some(&who), AuditEvent::new("account.register", "success").target("patient", patient_id))
        .await?;
    Ok(HttpResponse::Created().json(Registered { user_id, patient_id }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email. Any line is taken: an address of another shape is no account's,
    /// answered like a wrong password (401), so login tells nothing about the rules.
    pub email: Line<1, 254>,
    pub password: Password,
    /// Required once TOTP is enrolled (or `recovery_code`).
    pub totp_code: Option<Line<0, 16>>,
    pub recovery_code: Option<Line<0, 32>>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    #[serde(flatten)]
    pub tokens: sessions::TokenPair,
    pub user: Me,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(Code::InvalidCredentials, "email or password is incorrect")
}

/// `POST /v1/auth/login`
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = LoginResponse),
    (status = 401, description = "invalid_credentials; mfa_code_required (MFA is enrolled: send `totp_code` or `recovery_code`); invalid_totp"),
    (status = 429, description = "rate_limited or account_locked, with Retry-After")))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let now = state.clock.now();
    let ip = auth::client_ip(&req, &state).unwrap_or_default();
    if let Some(wait) = limits::check_and_hit(
        &state.stores.redis,
        &limits::per_minute(limits::LOGIN_PER_IP, state.config.login_per_address_per_min),
        &ip,
        now,
    )
    .await?
    {
        return Err(
            ApiError::new(Code::RateLimited, "too many login attempts from this address").with_retry_after(wait)
        );
    }
    let email = body.email.to_lowercase();
    let subject = email_subject(&email);
    if let Some(wait) = limits::blocked(&state.stores.redis, &limits::LOGIN_FAILURES_PER_ACCOUNT, &subject, now).await?
    {
        auth::audit(
            &state,
            &req,
            None,
            AuditEvent::new("auth.login", "denied").details(serde_json::json!({"reason": "locked"})),
        )
        .await?;
        return Err(
            ApiError::new(Code::AccountLocked, "too many failed attempts; try again later").with_retry_after(wait)
        );
    }
    let row = sqlx::query!(
        r#"SELECT id, password_hash, role, disabled_at IS NOT NULL AS "disabled!", totp_enabled, totp_secret FROM users WHERE email = $1"#,
        &email,
    )
    .fetch_optional(&state.stores.pg)
    .await?;
    let ok = state
        .identity
        .hasher()
        .verify(body.password.into_inner(), row.as_ref().map(|r| r.password_hash.clone()))
        .await?;
    let Some(row) = row.filter(|_| ok) else {
        limits::hit(&state.stores.redis, &limits::LOGIN_FAILURES_PER_ACCOUNT, &subject, now).await?;
        auth::audit(
            &state,
            &req,
            None,
            AuditEvent::new("auth.login", "failure").details(serde_json::json!({"reason": "invalid_credentials"})),
        )
        .await?;
        return Err(invalid_credentials());
    };
    let user_id = UserId::from_uuid(row.id);
    let role = Role::parse(row.role.as_str()).ok_or_else(|| ApiError::internal("bad role"))?;
    let who = Principal {
        user_id,
        role,
        session_id: SessionId::nil(),
        mfa_enrolled: row.totp_enabled,
        mfa_verified: false,
        patient_id: None,
        capture_scan: None,
    };
    if row.disabled {
        auth::audit(
            &state,
            &req,
            Some(&who),
            AuditEvent::new("auth.login", "denied").details(serde_json::json!({"reason": "disabled"})),
        )
        .await?;
        return Err(invalid_credentials());
    }
    let mut mfa_verified = false;
    if who.mfa_enrolled {
        let secret = decrypt_totp(&state, row.totp_secret)?;
        let verdict = if let Some(code) = body.totp_code.as_deref() {
            use_totp(&state, user_id, &secret, code).await?
        } else if let Some(code) = body.recovery_code.as_deref() {
            use_recovery_code(&state, user_id, code).await?
        } else {
            return Err(ApiError::new(
                Code::MfaCodeRequired,
                "enter the code from your authenticator app (totp_code) or a recovery code",
            ));
        };
        if !verdict {
            limits::hit(&state.stores.redis, &limits::LOGIN_FAILURES_PER_ACCOUNT, &subject, now).await?;
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("auth.login", "failure").details(serde_json::json!({"reason": "invalid_totp"})),
            )
            .await?;
            return Err(ApiError::new(Code::InvalidTotp, "that code is not valid (or was already used)"));
        }
        mfa_verified = true;
    }
    limits::clear(&state.stores.redis, &limits::LOGIN_FAILURES_PER_ACCOUNT, &subject).await?;
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_string);
    let tokens = state.identity.create(user_id, mfa_verified, Some(ip), ua).await?;
    let who = Principal { session_id: tokens.session_id, mfa_verified, ..who };
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("auth.login", "success").target("session", tokens.session_id),
    )
    .await?;
    let user = me_of(&state, user_id).await?;
    Ok(HttpResponse::Ok().json(LoginResponse { tokens, user }))
}

fn decrypt_totp(state: &AppState, stored: Option<String>) -> Result<String, ApiError> {
    let stored = stored.ok_or_else(|| ApiError::internal("TOTP enabled without a secret"))?;
    state.field_key.decrypt(&stored).map_err(ApiError::internal)
}

/// Accepts a TOTP code once: its step must be newer than the last one used.
async fn use_totp(state: &AppState, user: UserId, secret: &str, code: &str) -> Result<bool, ApiError> {
    let Some(step) = totp::matching_step(secret, code.trim(), state.clock.now()) else { return Ok(false) };
    let n = sqlx::query!(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2",
        user.as_uuid(),
        step
    )
    .execute(&state.stores.pg)
    .await?
    .rows_affected();
    Ok(n == 1)
}

async fn use_recovery_code(state: &AppState, user: UserId, code: &str) -> Result<bool, ApiError> {
    let hash = state.identity.token_hash(&totp::normalise_recovery(code));
    let n = sqlx::query!(
        "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        user.as_uuid(),
        hash,
        state.clock.now(),
    )
    .execute(&state.stores.pg)
    .await?
    .rows_affected();
    Ok(n == 1)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: Line<1, 100>,
}

/// `POST /v1/auth/refresh`: single-use rotation; reuse revokes the session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, body = sessions::TokenPair), (status = 401, description = "token_revoked / token_expired / unauthenticated")))]
pub async fn refresh(
    state: web::Data<AppState>,
    body: crate::http::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    Ok(HttpResponse::Ok().json(state.identity.refresh(&body.refresh_token).await?))
}

/// `POST /v1/auth/logout`: ends this session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = ["self"])), responses((status = 204)))]
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    state.identity.end(who.0.session_id, "logout").await?;
    auth::audit(
        &state,
        &req,
        Some(&who.0),
        AuditEvent::new("auth.logout", "success").target("session", who.0.session_id),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/auth/logout-all`: ends every session of the caller, on every node.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = ["self"])), responses((status = 204)))]
pub async fn logout_all(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    state.identity.end_all(who.0.user_id, "logout-all").await?;
    auth::audit(
        &state,
        &req,
        Some(&who.0),
        AuditEvent::new("auth.logout_all", "success").target("user", who.0.user_id),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's account.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub mfa_enrolled: bool,
    pub patient_id: Option<Uuid>,
}

pub async fn me_of(state: &AppState, user: UserId) -> Result<Me, ApiError> {
    let r = sqlx::query!(
        r#"SELECT u.id, u.email, u.display_name, u.role, u.totp_enabled, p.id AS "patient_id?"
           FROM users u LEFT JOIN patients p ON p.user_id = u.id WHERE u.id = $1"#,
        user.as_uuid(),
    )
    .fetch_one(&state.stores.pg)
    .await?;
    Ok(Me {
        id: r.id,
        email: r.email,
        display_name: r.display_name,
        role: Role::parse(r.role.as_str()).unwrap_or(Role::Patient),
        mfa_enrolled: r.totp_enabled,
        patient_id: r.patient_id,
    })
}

/// `GET /v1/me`
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = ["self"])), responses((status = 200, body = Me)))]
pub async fn me(state: web::Data<AppState>, who: Authenticated) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(me_of(&state, who.0.user_id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…` for a QR code.
    pub otpauth_uri: String,
}

/// `POST /v1/me/mfa/totp`: starts (or restarts) enrolment. Not allowed once enrolled.
#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "auth", security(("bearer" = ["self"])),
    responses((status = 200, body = TotpEnrolment), (status = 409, description = "conflict: TOTP is already enrolled")))]
pub async fn totp_enrol(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let me = me_of(&state, who.0.user_id).await?;
    if me.mfa_enrolled {
        return Err(ApiError::new(Code::Conflict, "TOTP is already enrolled"));
    }
    let secret = totp::new_secret();
    sqlx::query!(
        "UPDATE users SET totp_secret = $2, updated_at = $3 WHERE id = $1",
        who.0.user_id.as_uuid(),
        state.field_key.encrypt(&secret),
        state.clock.now(),
    )
    .execute(&state.stores.pg)
    .await?;
    let issuer = "Coherency";
    let otpauth_uri = totp::uri(&secret, &me.email, issuer).ok_or_else(|| ApiError::internal("otpauth uri"))?;
    auth::audit(
        &state,
        &req,
        Some(&who.0),
        AuditEvent::new("mfa.enrol_start", "success").target("user", who.0.user_id),
    )
    .await?;
    Ok(HttpResponse::Ok().json(TotpEnrolment { secret, otpauth_uri }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: Line<1, 16>,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Shown once; each works once.
    pub recovery_codes: Vec<String>,
}

/// `POST /v1/me/mfa/totp/confirm`: proves the authenticator works; enables TOTP, marks this
/// session verified and returns ten recovery codes.
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", tag = "auth", security(("bearer" = ["self"])), request_body = TotpConfirm,
    responses((status = 200, body = RecoveryCodes), (status = 401, description = "invalid_totp: the code is wrong"),
    (status = 409, description = "conflict: TOTP is already enrolled, or enrolment was not started"),
    (status = 429, description = "rate_limited: too many wrong codes")))]
pub async fn totp_confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Authenticated,
    body: crate::http::Json<TotpConfirm>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let now = state.clock.now();
    let subject = who.0.user_id.to_string();
    if let Some(wait) = limits::blocked(&state.stores.redis, &limits::TOTP_FAILURES, &subject, now).await? {
        return Err(ApiError::new(Code::RateLimited, "too many wrong codes").with_retry_after(wait));
    }
    let row = sqlx::query!("SELECT totp_secret, totp_enabled FROM users WHERE id = $1", who.0.user_id.as_uuid())
        .fetch_one(&state.stores.pg)
        .await?;
    if row.totp_enabled {
        return Err(ApiError::new(Code::Conflict, "TOTP is already enrolled"));
    }
    let Some(stored) = row.totp_secret else {
        return Err(ApiError::new(Code::Conflict, "start enrolment first (POST /v1/me/mfa/totp)"));
    };
    let secret = state.field_key.decrypt(&stored).map_err(ApiError::internal)?;
    if !use_totp(&state, who.0.user_id, &secret, &body.code).await? {
        limits::hit(&state.stores.redis, &limits::TOTP_FAILURES, &subject, now).await?;
        return Err(ApiError::field(Code::InvalidTotp, "code", "that code is not valid"));
    }
    let codes = totp::new_recovery_codes();
    let mut tx = state.stores.pg.begin().await?;
    sqlx::query!("UPDATE users SET totp_enabled = true, updated_at = $2 WHERE id = $1", who.0.user_id.as_uuid(), now)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", who.0.user_id.as_uuid()).execute(&mut *tx).await?;
    for c in &codes {
        sqlx::query!(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            who.0.user_id.as_uuid(),
            state.identity.token_hash(&totp::normalise_recovery(c)),
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!("UPDATE sessions SET mfa_verified = true WHERE id = $1", who.0.session_id.as_uuid())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    auth::audit(&state, &req, Some(&who.0), AuditEvent::new("mfa.enrolled", "success").target("user", who.0.user_id))
        .await?;
    Ok(HttpResponse::Ok().json(RecoveryCodes { recovery_codes: codes }))
}

#[derive(Serialize, ToSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` when opening a socket; valid 30 s, once.
    pub ticket: String,
    pub expires_in_secs: u64,
}

/// `POST /v1/auth/ws-ticket`: a single-use ticket for opening a socket from a browser.
#[utoipa::path(post, path = "/v1/auth/ws-ticket", tag = "auth", security(("bearer" = ["self"])), responses((status = 200, body = Ticket)))]
pub async fn ws_ticket(
    state: web::Data<AppState>,
    who: auth::Require<auth::perm::SelfService>,
) -> Result<HttpResponse, ApiError> {
    let ticket = state.identity.issue_ticket(who.session_id).await?;
    Ok(HttpResponse::Ok().json(Ticket { ticket, expires_in_secs: sessions::TICKET_TTL_SECS }))
}
