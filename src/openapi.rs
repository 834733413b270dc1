//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Coherency API", description = "Telehealth and LiDAR wound-scan server. Every error body is `{\"error\":{\"code\",\"message\",\"request_id\"}}`."),
    paths(
        crate::http::health::livez,
        crate::http::health::readyz,
        crate::metrics::metrics,
        crate::http::auth::register,
        crate::http::auth::login,
        crate::http::auth::refresh,
        crate::http::auth::logout,
        crate::http::auth::logout_all,
        crate::http::auth::ws_ticket,
        crate::http::auth::me,
        crate::http::auth::totp_enrol,
        crate::http::auth::totp_confirm,
        crate::ws::events::socket,
        crate::http::admin::create_user,
        crate::http::admin::revoke_sessions,
        crate::http::admin::disable_user,
        crate::http::admin::list_emergency_access,
        crate::http::admin::emergency_access,
    ),
    components(schemas(crate::http::health::Status, ErrorResponse, ErrorDetailSchema)),
    modifiers(&Security),
    tags(
        (name = "operations", description = "Probes and metrics"),
        (name = "auth", description = "Accounts, sessions, MFA, socket tickets"),
        (name = "admin", description = "Administration"),
        (name = "patients", description = "Patient records"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer scheme. Each operation's `security` lists, as its scope, the one
/// permission the route requires (see `auth::Permission`).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Opaque access token from POST /v1/auth/login"))
                    .build(),
            ),
        );
    }
}

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
