//! Who is asking and what they may do: roles, the permission table, opaque session tokens,
//! and the extractors every protected route takes — a route cannot run without the
//! permission its extractor names. A capture session is further confined to its scan's
//! stream ([`confine`]), on every route and socket alike.

pub mod limits;
pub mod totp;

pub use crate::services::identity::{
    new_token, password, perm, sessions, sockets, token_hash, Perm, Permission, Principal, Role,
};

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use coherency_protocol::ids::SessionId;
use coherency_protocol::Code;
use tracing_actix_web::RequestId;

use crate::audit::AuditEvent;
use crate::error::ApiError;
use crate::services::Caller;
use crate::state::AppState;

/// The caller of this request as the services see it: the principal and where the request
/// came from, for the audit rows they write.
pub fn caller_of(req: &HttpRequest, state: &AppState, who: &Principal) -> Caller {
    let (ip, request_id) = request_meta(req, state);
    Caller { who: who.clone(), ip, request_id }
}

/// The principal of a live session, for sockets that re-check theirs while open; `active`
/// (a consult or scan socket whose client is at work) also keeps the session from idling.
pub async fn session_principal(state: &AppState, session: SessionId, active: bool) -> Result<Principal, ApiError> {
    if active {
        Ok(state.identity.keep_alive(session).await?)
    } else {
        Ok(state.identity.principal_for_session(session).await?)
    }
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
        ev.actor_id = Some(p.user_id.as_uuid());
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

/// Resolves the bearer token of `req` to its principal, refusing a capture session outside
/// the routes it may reach.
async fn caller(req: &HttpRequest) -> Result<(web::Data<AppState>, Principal), ApiError> {
    let state = req.app_data::<web::Data<AppState>>().cloned().ok_or_else(|| ApiError::internal("no state"))?;
    let token = bearer(req).ok_or_else(ApiError::unauthenticated)?.to_string();
    let p = state.identity.authenticate(&token).await?;
    confine(&state, req, &p).await?;
    Ok((state, p))
}

/// The routes a capture session (`Principal::capture_scan`) reaches: its scan's stream and
/// RTC signalling (the `{id}` must be that scan), a socket ticket for them, and ending
/// itself. Every other route and socket answers it `403 forbidden`, audited as
/// `access.denied` with reason `capture_scope`. A session that is not a capture session
/// passes untouched. Called wherever a principal is resolved: [`Authenticated`],
/// [`Require`] and the socket upgrades (`crate::ws::authenticate`).
pub async fn confine(state: &AppState, req: &HttpRequest, p: &Principal) -> Result<(), ApiError> {
    let Some(scan) = p.capture_scan else { return Ok(()) };
    let route = req.match_pattern();
    let allowed = match route.as_deref() {
        Some("/v1/auth/ws-ticket" | "/v1/auth/logout") => true,
        Some("/v1/scans/{id}/stream" | "/v1/scans/{id}/rtc") => {
            req.match_info().get("id").and_then(|id| id.parse::<uuid::Uuid>().ok()) == Some(scan.as_uuid())
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let ev = AuditEvent::new("access.denied", "denied")
        .details(serde_json::json!({ "route": route, "reason": "capture_scope", "scan_id": scan }));
    audit(state, req, Some(p), ev).await?;
    Err(ApiError::new(Code::Forbidden, "a capture link's session may only stream its own scan"))
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
