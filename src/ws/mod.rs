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

/// Authenticates a socket upgrade. A request carrying `Origin` (every browser sends one) must
/// come from `public_url` or one of `allowed_origins`, compared exactly (scheme, host, port);
/// anything else — including an origin that merely equals the request's own `Host`, which the
/// client chooses — is `403 origin_not_allowed` before any credential is looked at. A request
/// without `Origin` (a native app) is not a browser and is judged on its credentials alone:
/// a single-use `?ticket=` or an `Authorization: Bearer` header.
pub async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(origin) = req.headers().get("origin") {
        let allowed = origin.to_str().is_ok_and(|o| {
            let o = o.trim_end_matches('/');
            state.config.origins().iter().any(|a| a.eq_ignore_ascii_case(o))
        });
        if !allowed {
            return Err(ApiError::new(Code::OriginNotAllowed, "this origin may not open sockets"));
        }
    }
    let q = web::Query::<TicketQuery>::from_query(req.query_string()).map_err(|_| ApiError::unauthenticated())?;
    if let Some(ticket) = q.ticket.as_deref() {
        return sessions::redeem_ticket(state, ticket).await;
    }
    let token = crate::auth::bearer(req).ok_or_else(ApiError::unauthenticated)?;
    sessions::authenticate(state, token).await
}
