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
        crate::ws::dashboard::socket,
        crate::http::admin::create_user,
        crate::http::admin::revoke_sessions,
        crate::http::admin::disable_user,
        crate::http::admin::list_emergency_access,
        crate::http::admin::emergency_access,
        crate::http::patients::create,
        crate::http::patients::list,
        crate::http::patients::read,
        crate::http::patients::update,
        crate::http::patients::deactivate,
        crate::http::patients::entries::list_allergies,
        crate::http::patients::entries::create_allergy,
        crate::http::patients::entries::update_allergy,
        crate::http::patients::entries::delete_allergy,
        crate::http::patients::entries::list_medications,
        crate::http::patients::entries::create_medication,
        crate::http::patients::entries::update_medication,
        crate::http::patients::entries::delete_medication,
        crate::http::patients::entries::list_conditions,
        crate::http::patients::entries::create_condition,
        crate::http::patients::entries::update_condition,
        crate::http::patients::entries::delete_condition,
        crate::http::patients::entries::list_coverages,
        crate::http::patients::entries::create_coverage,
        crate::http::patients::entries::update_coverage,
        crate::http::patients::entries::delete_coverage,
        crate::http::patients::entries::list_contacts,
        crate::http::patients::entries::create_contact,
        crate::http::patients::entries::update_contact,
        crate::http::patients::entries::delete_contact,
        crate::http::patients::entries::list_consents,
        crate::http::patients::entries::create_consent,
        crate::http::patients::entries::update_consent,
        crate::http::patients::entries::delete_consent,
        crate::http::patients::entries::care_team,
        crate::http::patients::entries::add_care_team,
        crate::http::patients::entries::remove_care_team,
        crate::http::fhir::read_patient,
        crate::http::fhir::search_patients,
        crate::http::fhir::everything,
        crate::http::fhir::allergies,
        crate::http::fhir::medications,
        crate::http::fhir::conditions,
        crate::http::fhir::coverages,
        crate::http::fhir::related_persons,
        crate::http::fhir::care_teams,
        crate::http::scans::create,
        crate::http::scans::get,
        crate::http::scans::list_for_patient,
        crate::ws::scan::stream,
        crate::ws::scan_rtc::signal,
        crate::http::measurements::list,
        crate::http::measurements::remeasure,
        crate::http::measurements::fhir::mesh,
        crate::http::measurements::fhir::read_observation,
        crate::http::measurements::fhir::search_observations,
        crate::http::measurements::fhir::read_mesh_document,
        crate::http::consults::create,
        crate::http::consults::get,
        crate::http::consults::check_in,
        crate::http::consults::queue,
        crate::http::consults::admit,
        crate::http::consults::deny,
        crate::http::consults::remove,
        crate::http::consults::invite,
        crate::http::consults::end,
        crate::http::consults::events,
        crate::http::consults::waiting_room,
        crate::ws::consult::signal,
        crate::http::booking::put_schedule,
        crate::http::booking::get_schedule,
        crate::http::booking::create_type,
        crate::http::booking::slots,
        crate::http::booking::create,
        crate::http::booking::list,
        crate::http::booking::get,
        crate::http::booking::confirm,
        crate::http::booking::cancel,
        crate::http::booking::reschedule,
        crate::http::booking::no_show,
        crate::http::booking::join_waitlist,
        crate::http::booking::get_waitlist,
        crate::http::booking::fhir::read_schedule,
        crate::http::booking::fhir::search_slots,
        crate::http::booking::fhir::book,
        crate::http::booking::fhir::read_appointment,
        crate::http::booking::fhir::search_appointments,
    ),
    components(schemas(crate::http::health::Status, ErrorResponse, ErrorDetailSchema)),
    modifiers(&Security),
    tags(
        (name = "operations", description = "Probes and metrics"),
        (name = "auth", description = "Accounts, sessions, MFA, socket tickets"),
        (name = "admin", description = "Administration"),
        (name = "patients", description = "Patient records"),
        (name = "scans", description = "Wound scans and their stream"),
        (name = "dashboard", description = "Live board socket and wound viewer data"),
        (name = "booking", description = "Schedules, slots, appointments, waitlist"),
        (name = "consults", description = "Video consults: waiting room, admission, events, signalling"),
        (name = "fhir", description = "FHIR R4 (application/fhir+json); errors are OperationOutcome resources"),
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
