//! Capture links over HTTP (`crate::services::capture`): `POST /v1/scans/{id}/capture-link`
//! makes a link (`<public_url>/capture#code=…`, shown to the patient as a QR code) that opens
//! the scan on the patient's phone; `POST /v1/capture/redeem` turns its code, once, into a
//! capture session that streams that scan and nothing else. The code travels in the URL's
//! fragment (never sent by a browser, never in a query string) and in the redeem body; it is
//! never logged or audited. Both answers are `Cache-Control: no-store`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use coherency_protocol::ids::ScanId;
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, limits, perm, Require};
use crate::error::ApiError;
use crate::http::input::CaptureCode;
use crate::services::capture::CaptureError;
use crate::state::AppState;

/// A capture link (`POST /v1/scans/{id}/capture-link`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureLink {
    /// `<public_url>/capture#code=<code>`: open it on the phone (the Coherency app claims
    /// `/capture` links). The code is in the fragment, which browsers never send.
    pub url: String,
    /// The code can be redeemed until then (10 minutes), once.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/scans/{id}/capture-link`: a single-use link that opens the scan on its
/// patient's phone. The scan's patient, or staff who may see the scan; the scan must still
/// wait for frames or stream. A new link ends the scan's earlier unused ones.
#[utoipa::path(post, path = "/v1/scans/{id}/capture-link", tag = "scans", security(("bearer" = ["scans:create"])),
    params(("id" = Uuid, Path, description = "scan id")),
    responses((status = 201, body = CaptureLink, description = "the link; shown once (`Cache-Control: no-store`)"),
              (status = 403, description = "consent_required: the patient's scan-capture consent is not on file; mfa_required"),
              (status = 404, description = "not_found: no such scan visible to the caller"),
              (status = 409, description = "scan_not_streamable: the scan no longer waits for frames or streams (processing, complete, failed, cancelled); conflict: the scan's patient has no active account to capture with")))]
#[tracing::instrument(skip_all, fields(scan_id = tracing::field::Empty))]
pub async fn create_link(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScansCreate>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scan = ScanId::from_uuid(id.into_inner());
    tracing::Span::current().record("scan_id", tracing::field::display(scan));
    let link = state.capture_links.create(&auth::caller_of(&req, &state, &who), scan).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("scan.capture_link.create", "success")
            .target("scan", scan.as_uuid())
            .details(serde_json::json!({ "expires_at": link.expires_at })),
    )
    .await?;
    let url = format!("{}/capture#code={}", state.config.public_base(), link.code);
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CaptureLink { url, expires_at: link.expires_at }))
}

/// `POST /v1/capture/redeem` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The `code` from the link's fragment (`…/capture#code=<code>`).
    pub code: CaptureCode,
}

/// What a phone needs to stream the link's scan (`POST /v1/capture/redeem`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureSessionView {
    /// The scan to stream (`hello.scan`).
    pub scan_id: Uuid,
    /// A bearer token for this scan's stream (`GET /v1/scans/{id}/stream`, or `/rtc`) and for
    /// `POST /v1/auth/ws-ticket`; every other route answers it `403 forbidden`. No refresh
    /// token: a lost session needs a new link.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// The session ends then (30 minutes), after 15 minutes without streaming, or once the
    /// scan is complete, failed or cancelled — whichever comes first.
    pub expires_at: DateTime<Utc>,
    /// `ws(s)://…/v1/scans/{id}/stream` under `public_url`.
    pub stream_url: String,
    /// `ws(s)://…/v1/scans/{id}/rtc` under `public_url` (the WebRTC data-channel transport).
    pub rtc_url: String,
}

/// `ws(s)://` + `public_url`'s authority and path, for sockets.
fn socket_base(public_base: &str) -> String {
    if let Some(rest) = public_base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_base.to_string()
    }
}

/// `POST /v1/capture/redeem`: turns a capture link's code, once, into a capture session for
/// the link's scan. No bearer: the code is the credential. Rate limited per client address
/// (`capture_redeem_per_address_per_min`). Audited as `scan.capture_link.redeem` (never the
/// code).
#[utoipa::path(post, path = "/v1/capture/redeem", tag = "auth", request_body = RedeemRequest,
    responses((status = 200, body = CaptureSessionView, description = "the capture session (`Cache-Control: no-store`)"),
              (status = 401, description = "invalid_capture_code: no such code, or it expired (answered alike)"),
              (status = 403, description = "account_disabled: the patient's account is disabled"),
              (status = 409, description = "capture_code_used: the code was redeemed before (the session it gave is revoked now); scan_not_streamable: the scan no longer waits for frames or streams"),
              (status = 429, description = "rate_limited: too many redemptions from this address")))]
#[tracing::instrument(skip_all, fields(scan_id = tracing::field::Empty))]
pub async fn redeem(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::Json<RedeemRequest>,
) -> Result<HttpResponse, ApiError> {
    let ip = auth::client_ip(&req, &state).unwrap_or_default();
    if let Some(wait) = limits::check_and_hit(
        &state.stores.redis,
        &limits::per_minute(limits::CAPTURE_REDEEM_PER_IP, state.config.capture_redeem_per_address_per_min),
        &ip,
        state.clock.now(),
    )
    .await?
    {
        return Err(
            ApiError::new(Code::RateLimited, "too many capture links tried from this address").with_retry_after(wait)
        );
    }
    let body = body.parse()?;
    let ua = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let redeemed = match state.capture_links.redeem(body.code.as_str(), Some(ip), ua).await {
        Ok(r) => r,
        Err(e) => {
            let ev = match &e {
                CaptureError::InvalidCode => Some(
                    AuditEvent::new("scan.capture_link.redeem", "denied")
                        .details(serde_json::json!({ "reason": "invalid_capture_code" })),
                ),
                CaptureError::CodeUsed { scan_id } => Some(
                    AuditEvent::new("scan.capture_link.redeem", "denied")
                        .target("scan", scan_id.as_uuid())
                        .details(serde_json::json!({ "reason": "capture_code_used", "session": "revoked" })),
                ),
                CaptureError::NotCapturable => Some(
                    AuditEvent::new("scan.capture_link.redeem", "denied")
                        .details(serde_json::json!({ "reason": "scan_not_streamable" })),
                ),
                _ => None,
            };
            if let Some(ev) = ev {
                auth::audit(&state, &req, None, ev).await?;
            }
            return Err(e.into());
        }
    };
    tracing::Span::current().record("scan_id", tracing::field::display(redeemed.scan_id));
    let mut ev = AuditEvent::new("scan.capture_link.redeem", "success")
        .target("scan", redeemed.scan_id.as_uuid())
        .details(serde_json::json!({ "session_id": redeemed.session.session_id }));
    ev.actor_id = Some(redeemed.user_id.as_uuid());
    ev.actor_role = Some(auth::Role::Patient.as_str().into());
    auth::audit(&state, &req, None, ev).await?;
    let sockets = socket_base(state.config.public_base());
    let scan = redeemed.scan_id;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(CaptureSessionView {
        scan_id: scan.as_uuid(),
        access_token: redeemed.session.access_token,
        token_type: "Bearer",
        expires_at: redeemed.session.expires_at,
        stream_url: format!("{sockets}/v1/scans/{scan}/stream"),
        rtc_url: format!("{sockets}/v1/scans/{scan}/rtc"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_keep_the_public_urls_host_and_path_and_secure_scheme() {
        assert_eq!(socket_base("https://clinic.example/coherency"), "wss://clinic.example/coherency");
        assert_eq!(socket_base("http://127.0.0.1:8080"), "ws://127.0.0.1:8080");
    }
}
