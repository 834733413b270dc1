//! Administration: staff accounts, session revocation, disabling users, emergency-access
//! review, and break-glass access for clinicians.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use coherency_protocol::ids::UserId;
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require, Role};
use crate::error::ApiError;
use crate::http::input::{Email, NewPassword, PersonName, Text};
use crate::services::identity::NewStaff;
use crate::state::AppState;

/// `POST /v1/admin/users` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateUser)]
pub struct CreateUserBody {
    pub email: Email,
    pub password: NewPassword,
    pub display_name: PersonName,
    pub role: StaffRole,
}

/// A staff account's role (patients register themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    Clinician,
    Admin,
}

impl From<StaffRole> for Role {
    fn from(r: StaffRole) -> Self {
        match r {
            StaffRole::Clinician => Role::Clinician,
            StaffRole::Admin => Role::Admin,
        }
    }
}

impl From<CreateUserBody> for NewStaff {
    fn from(b: CreateUserBody) -> Self {
        Self {
            email: b.email.normalise().into_inner(),
            password: b.password.into_inner(),
            display_name: b.display_name.into_inner(),
            role: b.role.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Created {
    pub id: Uuid,
}

/// `POST /v1/admin/users`
#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", security(("bearer" = ["users:manage"])), request_body = CreateUserBody,
    responses((status = 201, body = Created), (status = 409, description = "email_taken")))]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::UsersManage>,
    body: crate::http::Json<CreateUserBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let role = Role::from(body.role);
    let id = state.identity.create_staff(body.into()).await?.as_uuid();
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("user.create", "success")
            .target("user", id)
            .details(serde_json::json!({"role": role.as_str()})),
    )
    .await?;
    Ok(HttpResponse::Created().json(Created { id }))
}

async fn user_exists(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    sqlx::query_scalar!(r#"SELECT 1 AS "found!" FROM users WHERE id = $1"#, id)
        .fetch_optional(&state.stores.pg)
        .await?
        .map(|_| ())
        .ok_or_else(ApiError::not_found)
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub sessions_revoked: u64,
}

/// `POST /v1/admin/users/{id}/revoke-sessions`: ends every session of the user on every node.
#[utoipa::path(post, path = "/v1/admin/users/{id}/revoke-sessions", tag = "admin", security(("bearer" = ["users:manage"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Revoked), (status = 404)))]
pub async fn revoke_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::UsersManage>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    user_exists(&state, id).await?;
    let n = state.identity.end_all(UserId::from_uuid(id), "admin-revoke").await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("user.revoke_sessions", "success").target("user", id))
        .await?;
    Ok(HttpResponse::Ok().json(Revoked { sessions_revoked: n }))
}

/// `POST /v1/admin/users/{id}/disable`: the user can no longer log in; sessions end.
#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "admin", security(("bearer" = ["users:manage"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Revoked), (status = 404)))]
pub async fn disable_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::UsersManage>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if id == who.user_id.as_uuid() {
        return Err(ApiError::new(Code::Conflict, "you cannot disable your own account"));
    }
    user_exists(&state, id).await?;
    let now = state.clock.now();
    sqlx::query!("UPDATE users SET disabled_at = $2, updated_at = $2 WHERE id = $1 AND disabled_at IS NULL", id, now)
        .execute(&state.stores.pg)
        .await?;
    let n = state.identity.end_all(UserId::from_uuid(id), "disabled").await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("user.disable", "success").target("user", id)).await?;
    Ok(HttpResponse::Ok().json(Revoked { sessions_revoked: n }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRequest {
    /// Why the clinician needs this record now (10–500 characters); audited.
    pub reason: Text<10, 500>,
}

#[derive(Serialize, ToSchema)]
pub struct EmergencyGrant {
    pub id: Uuid,
    pub clinician_id: Uuid,
    pub patient_id: Uuid,
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// How long break-glass access lasts.
pub const EMERGENCY_MINUTES: i64 = 60;

/// `POST /v1/patients/{id}/emergency-access`: break-glass access to a patient outside the
/// clinician's care team, for 60 minutes, with a stated reason.
#[utoipa::path(post, path = "/v1/patients/{id}/emergency-access", tag = "patients", security(("bearer" = ["emergency-access"])),
    params(("id" = Uuid, Path)), request_body = EmergencyRequest, responses((status = 201, body = EmergencyGrant), (status = 404)))]
pub async fn emergency_access(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::EmergencyAccess>,
    id: web::Path<Uuid>,
    body: crate::http::Json<EmergencyRequest>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = id.into_inner();
    let reason = body.parse()?.reason.into_inner();
    sqlx::query_scalar!(r#"SELECT 1 AS "found!" FROM patients WHERE id = $1"#, patient_id)
        .fetch_optional(&state.stores.pg)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let now = state.clock.now();
    let grant = EmergencyGrant {
        id: Uuid::now_v7(),
        clinician_id: who.user_id.as_uuid(),
        patient_id,
        reason,
        granted_at: now,
        expires_at: now + Duration::minutes(EMERGENCY_MINUTES),
    };
    sqlx::query!(
        "INSERT INTO emergency_access (id, clinician_id, patient_id, reason, granted_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6)",
        grant.id,
        grant.clinician_id,
        grant.patient_id,
        &grant.reason,
        grant.granted_at,
        grant.expires_at,
    )
    .execute(&state.stores.pg)
    .await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("emergency_access.grant", "success")
            .target("patient", patient_id)
            .details(serde_json::json!({"grant_id": grant.id})),
    )
    .await?;
    Ok(HttpResponse::Created().json(grant))
}

/// `GET /v1/admin/emergency-access`: every break-glass grant, newest first.
#[utoipa::path(get, path = "/v1/admin/emergency-access", tag = "admin", security(("bearer" = ["audit:read"])), responses((status = 200, body = Vec<EmergencyGrant>)))]
pub async fn list_emergency_access(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::AuditRead>,
) -> Result<HttpResponse, ApiError> {
    let out: Vec<EmergencyGrant> = sqlx::query_as!(
        EmergencyGrant,
        "SELECT id, clinician_id, patient_id, reason, granted_at, expires_at FROM emergency_access ORDER BY granted_at DESC LIMIT 1000"
    )
    .fetch_all(&state.stores.pg)
    .await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("emergency_access.list", "success").details(serde_json::json!({"count": out.len()})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(out))
}
