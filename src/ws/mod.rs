//! Socket pumps. A socket task decodes, forwards to the owning actor and writes back; it
//! holds no domain state. Shared here: authentication of the upgrade request.

pub mod consult;
pub mod dashboard;
pub mod events;
pub mod scan;
pub mod scan_rtc;

use actix_web::{web, HttpRequest};
use coherency_protocol::Code;
use serde::Deserialize;

use crate::auth::{sessions, Principal};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

/// Whether `origin` names the host the request was sent to (a page served by this server:
/// a cross-site page cannot make the browser send another site's origin).
fn same_origin(req: &HttpRequest, origin: &str) -> bool {
    let Some(host) = req.headers().get("host").and_then(|h| h.to_str().ok()) else { return false };
    origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")).is_some_and(|rest| rest == host)
}

/// Authenticates a socket upgrade: a browser's `Origin` must be allowed (or be this
/// server's own); credentials come
/// from a single-use `?ticket=` or an `Authorization: Bearer` header (native clients).
pub async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(origin) = req.headers().get("origin") {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !state.config.origins().iter().any(|o| o == origin) && !same_origin(req, origin) {
            return Err(ApiError::new(Code::OriginNotAllowed, "this origin may not open sockets"));
        }
    }
    let q = web::Query::<TicketQuery>::from_query(req.query_string()).map_err(|_| ApiError::unauthenticated())?;
    if let Some(ticket) = q.ticket.as_deref() {
        return sessions::redeem_ticket(state, ticket).await;
    }
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .ok_or_else(ApiError::unauthenticated)?;
    sessions::authenticate(state, &token).await
}
