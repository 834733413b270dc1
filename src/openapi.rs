//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Coherency API", description = "Telehealth and LiDAR wound-scan server. Every error body is `{\"error\":{\"code\",\"message\",\"request_id\"}}`."),
    paths(
        crate::http::health::livez,
        crate::http::health::readyz,
        crate::metrics::metrics,
    ),
    components(schemas(crate::http::health::Status, ErrorResponse, ErrorDetailSchema)),
    tags((name = "operations", description = "Probes and metrics"))
)]
pub struct ApiDoc;

/// The error envelope every failing request answers with (documentation mirror of
/// `coherency_protocol::ErrorBody`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorResponse {
    pub error: ErrorDetailSchema,
}

/// One error: a stable `code` from the catalogue, a human message, the request id and,
/// for validation errors, the field.
#[derive(utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
#[allow(dead_code)]
pub struct ErrorDetailSchema {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    pub field: Option<String>,
}
