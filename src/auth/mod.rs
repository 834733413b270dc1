//! Who is asking and what they may do: roles, the permission table, opaque session tokens,
//! and the extractors every protected route takes — a route cannot run without the
//! permission its extractor names.

pub mod limits;
pub mod password;
pub mod sessions;
pub mod sockets;
pub mod totp;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use coherency_protocol::Code;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tracing_actix_web::RequestId;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::error::ApiError;
use crate::state::AppState;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Clinician,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Patient, Role::Clinician, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(Role::Patient),
            "clinician" => Some(Role::Clinician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Clinicians and admins must enrol TOTP, and verify it in the session, before any route
    /// but the enrolment ones.
    pub fn requires_mfa(self) -> bool {
        !matches!(self, Role::Patient)
    }
}

macro_rules! permissions {
    ($( $name:ident = $text:literal, phi = $phi:literal, roles = [$($role:ident),*]; )*) => {
        /// Everything a route can require. The role table below is the whole policy;
        /// object-level rules (whose record) are checked by the resource on top.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Permission { $($name),* }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$name),*];

            /// The scope string used in the OpenAPI document.
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$name => $text),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Permission::$name),)* _ => None }
            }

            /// Whether the route exposes protected health information.
            pub fn is_phi(self) -> bool {
                match self { $(Permission::$name => $phi),* }
            }

            /// The roles granted this permission.
            pub fn roles(self) -> &'static [Role] {
                match self { $(Permission::$name => &[$(Role::$role),*]),* }
            }
        }

        /// Zero-sized markers naming a permission in a handler's signature.
        pub mod perm {
            $(
                #[doc = concat!("Requires `", $text, "`.")]
                pub struct $name;
                impl super::Perm for $name {
                    const P: super::Permission = super::Permission::$name;
                }
            )*
        }
    };
}

permissions! {
    SelfService = "self", phi = false, roles = [Patient, Clinician, Admin];
    PatientsRead = "patients:read", phi = true, roles = [Patient, Clinician, Admin];
    PatientsWrite = "patients:write", phi = true, roles = [Patient, Clinician, Admin];
    PatientsCreate = "patients:create", phi = true, roles = [Clinician, Admin];
    PatientsSearch = "patients:search", phi = true, roles = [Clinician, Admin];
    PatientsDeactivate = "patients:deactivate", phi = true, roles = [Admin];
    EmergencyAccess = "emergency-access", phi = true, roles = [Clinician];
    UsersManage = "users:manage", phi = false, roles = [Admin];
    AuditRead = "audit:read", phi = true, roles = [Admin];
    ScansCreate = "scans:create", phi = true, roles = [Patient, Clinician, Admin];
    ScansRead = "scans:read", phi = true, roles = [Patient, Clinician, Admin];
    ScansMeasure = "scans:measure", phi = true, roles = [Clinician, Admin];
    ScheduleManage = "schedule:manage", phi = false, roles = [Clinician, Admin];
    BookingsRead = "bookings:read", phi = true, roles = [Patient, Clinician, Admin];
    BookingsWrite = "bookings:write", phi = true, roles = [Patient, Clinician, Admin];
    ConsultsJoin = "consults:join", phi = true, roles = [Patient, Clinician, Admin];
    ConsultsHost = "consults:host", phi = true, roles = [Clinician, Admin];
    DashboardView = "dashboard:view", phi = true, roles = [Patient, Clinician, Admin];
}

/// Implemented by the markers in [`perm`].
pub trait Perm {
    const P: Permission;
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
    pub mfa_enrolled: bool,
    pub mfa_verified: bool,
    /// The caller's own patient record, for patients.
    pub patient_id: Option<Uuid>,
}

impl Principal {
    pub fn has(&self, p: Permission) -> bool {
        p.roles().contains(&self.role)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// A new random token with a readable prefix (`cha_` access, `chr_` refresh, `cht_` ticket).
pub fn new_token(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("{prefix}{}", B64URL.encode(raw))
}

/// The keyed hash stored in place of a token.
pub fn token_hash(secret: &[u8], token: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Facts about the request for the audit trail.
pub fn request_meta(req: &HttpRequest, state: &AppState) -> (Option<String>, Option<String>) {
    let ip = client_ip(req, state);
    let rid = req.extensions().get::<RequestId>().map(|r| r.to_string());
    (ip, rid)
}

/// The client's address: the peer, or the first `X-Forwarded-For` hop when configured to
/// trust the proxy in front.
pub fn client_ip(req: &HttpRequest, state: &AppState) -> Option<String> {
    if state.config.trust_forwarded_for {
        if let Some(v) = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            if let Some(first) = v.split(',').next() {
                return Some(first.trim().to_string());
            }
        }
    }
    req.peer_addr().map(|a| a.ip().to_string())
}

/// Records an audit event for this request, attributing it to `who` if known. Failures to
/// write are errors: an unaudited PHI access must not be answered.
pub async fn audit(
    state: &AppState,
    req: &HttpRequest,
    who: Option<&Principal>,
    mut ev: AuditEvent,
) -> Result<(), ApiError> {
    let (ip, rid) = request_meta(req, state);
    ev.ip = ip;
    ev.request_id = rid;
    if let Some(p) = who {
        ev.actor_id = Some(p.user_id);
        ev.actor_role = Some(p.role.as_str().into());
    }
    state.audit.append(state.clock.now(), ev).await?;
    Ok(())
}

/// The bearer token of a request, if it carries a well-formed one. A header that is not
/// visible ASCII (obs-text bytes 0x80–0xFF pass the HTTP parser) or names another scheme is no
/// token: the caller is unauthenticated (401), never an error of ours.
pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Resolves the bearer token of `req` to its principal.
async fn caller(req: &HttpRequest) -> Result<(web::Data<AppState>, Principal), ApiError> {
    let state = req.app_data::<web::Data<AppState>>().cloned().ok_or_else(|| ApiError::internal("no state"))?;
    let token = bearer(req).ok_or_else(ApiError::unauthenticated)?.to_string();
    let p = sessions::authenticate(&state, &token).await?;
    Ok((state, p))
}

/// Any authenticated caller, with no permission and no MFA check: only for the routes a staff
/// member needs before MFA is enrolled and verified — `GET /v1/me`, `POST /v1/me/mfa/totp`,
/// `POST /v1/me/mfa/totp/confirm`, `POST /v1/auth/logout`, `POST /v1/auth/logout-all`. Every
/// other route takes [`Require`], whose check includes MFA.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(Authenticated(caller(&req).await?.1)) })
    }
}

/// An authenticated caller holding permission `P`. Denials are audited.
pub struct Require<P: Perm>(pub Principal, PhantomData<P>);

impl<P: Perm> std::ops::Deref for Require<P> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<P: Perm + 'static> FromRequest for Require<P> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (state, p) = caller(&req).await?;
            authorize(&state, &req, &p, P::P).await?;
            Ok(Require(p, PhantomData))
        })
    }
}

/// MFA and role checks for `perm`; a denial is audited and answered 403. Staff (clinicians
/// and admins) reach no route before their session is MFA-verified — whatever the route, so
/// an unenrolled admin cannot create admins, disable users or revoke sessions either. The only
/// routes a staff session reaches before that take [`Authenticated`] instead (see there).
pub async fn authorize(state: &AppState, req: &HttpRequest, p: &Principal, perm: Permission) -> Result<(), ApiError> {
    if p.role.requires_mfa() && !(p.mfa_enrolled && p.mfa_verified) {
        let ev = AuditEvent::new("access.denied", "denied").details(
            serde_json::json!({ "permission": perm.as_str(), "route": req.match_pattern(), "reason": "mfa_required" }),
        );
        audit(state, req, Some(p), ev).await?;
        return Err(ApiError::new(
            Code::MfaRequired,
            "staff must enrol multi-factor authentication (POST /v1/me/mfa/totp) and sign in with it first",
        ));
    }
    if !p.has(perm) {
        let ev = AuditEvent::new("access.denied", "denied")
            .details(serde_json::json!({ "permission": perm.as_str(), "route": req.match_pattern() }));
        audit(state, req, Some(p), ev).await?;
        return Err(ApiError::forbidden());
    }
    Ok(())
}
