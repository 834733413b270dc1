//! Liveness and readiness probes.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use coherency_protocol::Code;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

/// Process liveness only: never touches a dependency.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, body = Status)))]
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// Readiness: pings PostgreSQL, Redis, MongoDB and the blob store (each bounded by
/// `readiness_timeout_ms`); 503 naming the failed ones, or while draining.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Status),
    (status = 503, description = "`unavailable`, naming the services that failed or `draining`")
))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::new(Code::Unavailable, "draining"));
    }
    let failed = state.stores.readiness(Duration::from_millis(state.config.readiness_timeout_ms)).await;
    if failed.is_empty() {
        Ok(HttpResponse::Ok().json(Status { status: "ready" }))
    } else {
        Err(ApiError::new(Code::Unavailable, format!("not ready: {}", failed.join(", "))))
    }
}
