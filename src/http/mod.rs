//! HTTP routes, one module per resource.

pub mod admin;
pub mod auth;
pub mod booking;
pub mod capture;
pub mod consults;
pub mod envelope;
pub mod fhir;
pub mod health;
pub mod input;
pub mod json;
pub mod measurements;
pub mod openapi;
pub mod pages;
pub mod patients;
pub mod photos;
pub mod ratelimit;
pub mod scans;
pub mod wounds;

pub use json::Json;

use actix_web::web;

use crate::error::ApiError;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/livez").route(web::get().to(health::livez)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/metrics").route(web::get().to(crate::metrics::metrics)))
        .service(resource("/v1/auth/register").route(web::post().to(auth::register)))
        .service(resource("/v1/auth/login").route(web::post().to(auth::login)))
        .service(resource("/v1/auth/refresh").route(web::post().to(auth::refresh)))
        .service(resource("/v1/auth/logout").route(web::post().to(auth::logout)))
        .service(resource("/v1/auth/logout-all").route(web::post().to(auth::logout_all)))
        .service(resource("/v1/auth/ws-ticket").route(web::post().to(auth::ws_ticket)))
        .service(resource("/v1/me").route(web::get().to(auth::me)))
        .service(resource("/v1/me/mfa/totp").route(web::post().to(auth::totp_enrol)))
        .service(resource("/v1/me/mfa/totp/confirm").route(web::post().to(auth::totp_confirm)))
        .service(resource("/consult").route(web::get().to(pages::consult_page)))
        .service(resource("/v1/ws").route(web::get().to(crate::ws::events::socket)))
        .service(resource("/v1/dashboard/ws").route(web::get().to(crate::ws::dashboard::socket)))
        .service(resource("/v1/admin/users").route(web::post().to(admin::create_user)))
        .service(resource("/v1/admin/users/{id}/revoke-sessions").route(web::post().to(admin::revoke_sessions)))
        .service(resource("/v1/admin/users/{id}/disable").route(web::post().to(admin::disable_user)))
        .service(resource("/v1/admin/emergency-access").route(web::get().to(admin::list_emergency_access)))
        .service(resource("/v1/patients/{id}/emergency-access").route(web::post().to(admin::emergency_access)))
        .service(resource("/v1/scans").route(web::post().to(scans::create)))
        .service(resource("/v1/scans/{id}").route(web::get().to(scans::get)))
        .service(resource("/v1/scans/{id}/keyframes/{seq}").route(web::get().to(scans::keyframe_png)))
        .service(resource("/v1/scans/{id}/stream").route(web::get().to(crate::ws::scan::stream)))
        .service(resource("/v1/scans/{id}/rtc").route(web::get().to(crate::ws::scan_rtc::signal)))
        .service(resource("/v1/scans/{id}/capture-link").route(web::post().to(capture::create_link)))
        .service(resource("/v1/capture/redeem").route(web::post().to(capture::redeem)))
        .service(resource("/capture").route(web::get().to(pages::capture_page)))
        .service(
            resource("/.well-known/apple-app-site-association").route(web::get().to(pages::apple_app_site_association)),
        )
        .service(resource("/.well-known/assetlinks.json").route(web::get().to(pages::assetlinks)))
        .service(
            resource("/v1/scans/{id}/measurements")
                .route(web::get().to(measurements::list))
                .route(web::post().to(measurements::remeasure)),
        )
        .service(resource("/v1/scans/{id}/measurements/preview").route(web::post().to(measurements::preview)))
        .service(resource("/").route(web::get().to(pages::to_dashboard)))
        .service(resource("/docs").route(web::get().to(pages::to_docs)))
        .service(resource("/favicon.ico").route(web::get().to(pages::favicon)))
        .service(resource("/web/dashboard").route(web::get().to(pages::to_dashboard)))
        .service(resource("/web/{tail:.*}").route(web::get().to(pages::file)))
        .service(resource("/v1/patients/{id}/scans").route(web::get().to(scans::list_for_patient)));
    cfg.configure(patients::configure).configure(fhir::configure).configure(measurements::fhir::configure);
    cfg.configure(measurements::corrections::configure);
    cfg.configure(booking::configure);
    cfg.configure(consults::configure);
    cfg.configure(wounds::configure);
    cfg.configure(photos::configure);
}

/// A resource that answers 405 (not the app-wide 404) to methods it has no route for.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::ResponseError;
    let mut res = ApiError::new(coherency_protocol::Code::MethodNotAllowed, "method not allowed for this resource")
        .error_response();
    // RFC 9110 §15.5.6: a 405 lists the methods the resource has.
    let allow = req.match_pattern().map_or_else(|| "GET".to_string(), |p| allowed_methods(&p));
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}

/// The methods the OpenAPI document lists for a route pattern (the routes outside it — the
/// pages under `/web/` and `/` — are all GET).
fn allowed_methods(pattern: &str) -> String {
    static BY_PATH: std::sync::OnceLock<std::collections::HashMap<String, String>> = std::sync::OnceLock::new();
    let by_path = BY_PATH.get_or_init(|| {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::http::openapi::ApiDoc::openapi()).unwrap_or_default();
        doc["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, item)| {
                        let methods: Vec<String> = item
                            .as_object()
                            .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                            .unwrap_or_default();
                        (path.clone(), methods.join(", "))
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    by_path.get(pattern).cloned().unwrap_or_else(|| "GET".into())
}

/// Answers paths no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(coherency_protocol::Code::NotFound, NO_ROUTE))
}

/// The message of a 404 for a path no route serves (an object that does not exist is
/// `not found`).
pub const NO_ROUTE: &str = "no route matches this path";
