//! The OpenAPI document, generated from the handlers' annotations and completed by
//! [`Contract`]: the statuses that middleware and extractors answer for every route (401/403
//! for secured routes, 400/413/415 for JSON bodies, 404 for path ids, 429 from the rate
//! limiter, 500/503), each error with its body schema — the JSON envelope, or a FHIR
//! `OperationOutcome` under `/fhir/`. `tests/api/contract.rs` fuzzes the server against it.

use serde_json::json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response;
use utoipa::openapi::{Content, RefOr, Schema};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Coherency API", description = "Telehealth and LiDAR wound-scan server. Every error body is `{\"error\":{\"code\",\"message\",\"request_id\",\"field\"?}}` (`ErrorResponse`), except under `/fhir/`, where errors are FHIR `OperationOutcome` resources (`application/fhir+json`)."),
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
        crate::http::fhir::metadata::metadata,
        crate::http::fhir::read_patient,
        crate::http::fhir::search_patients,
        crate::http::fhir::everything,
        crate::http::fhir::allergies,
        crate::http::fhir::medications,
        crate::http::fhir::conditions,
        crate::http::fhir::wounds::read_wound_condition,
        crate::http::fhir::coverages,
        crate::http::fhir::related_persons,
        crate::http::fhir::care_teams,
        crate::http::fhir::media::read_media,
        crate::http::fhir::media::search_media,
        crate::http::scans::create,
        crate::http::scans::get,
        crate::http::scans::keyframe_png,
        crate::http::photos::list,
        crate::http::photos::photo,
        crate::http::photos::wound_gallery,
        crate::http::scans::list_for_patient,
        crate::ws::scan::stream,
        crate::ws::scan_rtc::signal,
        crate::http::capture::create_link,
        crate::http::capture::redeem,
        crate::http::wounds::list,
        crate::http::wounds::create,
        crate::http::wounds::read,
        crate::http::wounds::update,
        crate::http::wounds::assessments,
        crate::http::wounds::mark,
        crate::http::wounds::trajectory,
        crate::http::wounds::report,
        crate::http::measurements::list,
        crate::http::measurements::remeasure,
        crate::http::measurements::preview,
        crate::http::measurements::corrections::create,
        crate::http::measurements::corrections::list,
        crate::http::measurements::corrections::export,
        crate::http::measurements::fhir::mesh,
        crate::http::measurements::fhir::read_observation,
        crate::http::measurements::fhir::search_observations,
        crate::http::measurements::fhir::read_mesh_document,
        crate::http::consults::create,
        crate::http::consults::get,
        crate::http::consults::for_appointment,
        crate::http::consults::check_in,
        crate::http::consults::queue,
        crate::http::consults::admit,
        crate::http::consults::deny,
        crate::http::consults::remove,
        crate::http::consults::message,
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
    modifiers(&Security, &Contract),
    tags(
        (name = "operations", description = "Probes and metrics"),
        (name = "auth", description = "Accounts, sessions, MFA, socket tickets"),
        (name = "admin", description = "Administration"),
        (name = "patients", description = "Patient records"),
        (name = "scans", description = "Wound scans and their stream"),
        (name = "wounds", description = "Wounds as records: site, aetiology, stage, status; assessments and healing trajectory"),
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

/// Error statuses every operation of a kind can answer, whatever its handler does: they come
/// from the middleware stack (`startup.rs`: rate limiter, envelope), the extractors
/// (`auth::Require`, `http::Json`, path and query parsing) and the stores.
struct Contract;

/// Where the error body schemas live.
const ERROR_REF: &str = "#/components/schemas/ErrorResponse";
const OUTCOME_REF: &str = "#/components/schemas/OperationOutcome";
const BUNDLE_REF: &str = "#/components/schemas/FhirBundle";
pub const FHIR_JSON: &str = "application/fhir+json";

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let fhir = path.starts_with("/fhir/");
            let limited = !crate::http::ratelimit::EXEMPT.contains(&path.as_str());
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                complete(path, op, fhir, limited);
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in [("OperationOutcome", operation_outcome_schema()), ("FhirBundle", bundle_schema())] {
            components.schemas.insert(name.into(), schema);
        }
        // The error code is one of the catalogue's, so a generated client can match on it.
        if let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail") {
            if let Some(RefOr::T(Schema::Object(code))) = detail.properties.get_mut("code") {
                code.enum_values = Some(coherency_protocol::Code::ALL.iter().map(|c| json!(c.as_str())).collect());
            }
        }
        // A merge-patch field that may be left out but not cleared (`#[serde(default)]` on the
        // struct) gets `default: null` from the derive, a value its own schema refuses.
        for component in components.schemas.values_mut() {
            let RefOr::T(Schema::Object(o)) = component else { continue };
            for property in o.properties.values_mut() {
                if let RefOr::T(Schema::OneOf(one)) = property {
                    let nullable = one.items.iter().any(|i| serde_json::to_value(i).is_ok_and(|v| v["type"] == "null"));
                    if !nullable && one.default == Some(serde_json::Value::Null) {
                        one.default = None;
                    }
                }
            }
        }
        // (utoipa's object schema has no `anyOf`: the rule joins it as an `allOf`.)
        for (name, rule) in CROSS_FIELD_RULES {
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get(*name) {
                let base = serde_json::to_value(o).unwrap_or_else(|e| unreachable!("a schema serialises: {e}"));
                components.schemas.insert((*name).to_string(), schema(json!({"allOf": [base, {"anyOf": rule()}]})));
            }
        }
    }
}

/// An `anyOf` list of alternatives a body must match one of.
type Rule = fn() -> serde_json::Value;

/// Rules across a body's fields that JSON Schema can state (as `anyOf`) but the derive
/// attributes cannot, each added to its component. The handlers check the same rules; the
/// ones no schema can state (an end after its start, a date not after today) are in
/// `docs/api.md`, "Contract".
const CROSS_FIELD_RULES: &[(&str, Rule)] = &[
    // `patients::entries::Contact`: a phone, an email or both.
    ("Contact", || {
        json!([
            {"type": "object", "required": ["phone"], "properties": {"phone": {"type": "string"}}},
            {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}},
        ])
    }),
    // `booking::ScheduleException`: `off` alone closes the day; hours come as a pair.
    ("ScheduleException", || {
        json!([
            {"type": "object", "properties": {
                "kind": {"type": "string", "enum": ["off"]}, "start": {"type": "null"}, "end": {"type": "null"}}},
            {"type": "object", "required": ["start", "end"],
             "properties": {"start": {"type": "string"}, "end": {"type": "string"}}},
        ])
    }),
];

/// Adds the statuses `op` can answer beyond its annotation, and an error body schema to
/// every error response that has none.
fn complete(path: &str, op: &mut Operation, fhir: bool, limited: bool) {
    if let Some(body) = op.request_body.as_mut() {
        optional_body_is_absent_not_null(body);
    }
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let params = op.parameters.as_deref().unwrap_or_default();
    let path_ids = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let json_body = op.request_body.as_ref().is_some_and(|b| b.content.keys().any(|ct| ct == "application/json"));
    let body = op.request_body.is_some();
    let mut generic: Vec<(u16, &str)> = vec![(
        400,
        "`bad_request`, `malformed_json`, `unknown_field` or `invalid_field` (naming the `field`): the request, \
         its parameters or its body did not parse or failed validation",
    )];
    if secured {
        generic.push((401, "`unauthenticated`, `token_expired` or `token_revoked`: no valid bearer token"));
        generic.push((
            403,
            "`forbidden`: the caller's role lacks the permission (the operation's security scope), or may not \
             do this to this object; `mfa_required`: staff whose session has no verified MFA",
        ));
    }
    if path_ids {
        generic.push((404, "`not_found`: no such object, or one the caller may not see"));
    }
    if body {
        generic.push((413, "`payload_too_large`: the body is larger than `max_body_bytes`"));
    }
    if json_body {
        generic.push((415, "`unsupported_media_type`: the body is not `Content-Type: application/json`"));
    }
    if limited {
        generic.push((429, "`rate_limited`: the caller's request budget is spent; see `Retry-After`"));
    }
    generic.push((500, "`internal`: the server failed; the message reveals nothing"));
    generic.push((503, "`unavailable`: a backing service is not answering, or the node is draining"));
    for (status, description) in generic {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| RefOr::T(Response::new(description)));
    }
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        let code: u16 = status.parse().unwrap_or(0);
        if code >= 400 {
            error_body(response, code, fhir);
        } else if fhir && (200..300).contains(&code) && response.content.is_empty() {
            response.content.insert(FHIR_JSON.into(), Content::new(Some(fhir_success_schema(path))));
        }
    }
}

/// An optional body (`request_body = Option<T>`) is one that may be left out (`required`
/// unset), not one that may be the JSON `null`, which the handlers refuse as not a `T`:
/// `oneOf: [null, T]` becomes `T`.
fn optional_body_is_absent_not_null(body: &mut utoipa::openapi::request_body::RequestBody) {
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else { continue };
        let not_null: Vec<RefOr<Schema>> = one_of
            .items
            .iter()
            .filter(|s| serde_json::to_value(s).is_ok_and(|v| v != json!({"type": "null"})))
            .cloned()
            .collect();
        if let [only] = not_null.as_slice() {
            content.schema = Some(only.clone());
        }
    }
}

/// Gives an error response its body schema and, for 429, its `Retry-After` header.
fn error_body(response: &mut Response, status: u16, fhir: bool) {
    if response.description.is_empty() {
        response.description = format!("error ({status})");
    }
    if response.content.is_empty() {
        let (ct, schema) = if fhir { (FHIR_JSON, OUTCOME_REF) } else { ("application/json", ERROR_REF) };
        response.content.insert(ct.into(), Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::new(schema)))));
    }
    if status == 429 {
        response.headers.entry("Retry-After".into()).or_insert_with(|| {
            utoipa::openapi::header::HeaderBuilder::new()
                .schema(schema(json!({"type": "integer", "minimum": 1})))
                .description(Some("seconds to wait before trying again"))
                .build()
        });
    }
}

/// The success body of a FHIR route: a `Bundle` for searches and `$everything`, otherwise
/// the resource named by the path's first segment (an `Appointment` for `$book`, the
/// `CapabilityStatement` for `metadata`).
fn fhir_success_schema(path: &str) -> RefOr<Schema> {
    let segments: Vec<&str> = path.trim_start_matches("/fhir/").split('/').collect();
    let kind = match segments.as_slice() {
        ["metadata"] => "CapabilityStatement",
        [kind, "{id}"] | [kind, "$book"] => kind,
        _ => return RefOr::Ref(utoipa::openapi::Ref::new(BUNDLE_REF)),
    };
    schema(json!({
        "type": "object",
        "description": format!("a FHIR R4 `{kind}` resource"),
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": [kind]}, "id": {"type": "string"}}
    }))
}

fn operation_outcome_schema() -> RefOr<Schema> {
    schema(json!({
        "type": "object",
        "description": "A FHIR R4 `OperationOutcome`: `issue[0].details.coding[0].code` is the catalogue's error code \
                        (system `urn:coherency:error`), `issue[0].code` the FHIR issue type.",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
            "issue": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "details": {"type": "object", "properties": {
                        "coding": {"type": "array", "items": {"type": "object", "properties": {
                            "system": {"type": "string"}, "code": {"type": "string"}}}},
                        "text": {"type": "string"}}},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}}
                }
            }}
        }
    }))
}

fn bundle_schema() -> RefOr<Schema> {
    schema(json!({
        "type": "object",
        "description": "A FHIR R4 `Bundle` of type `searchset` with `total` and paging `link`s.",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"type": "string", "enum": ["Bundle"]},
            "type": {"type": "string", "enum": ["searchset"]},
            "total": {"type": "integer", "minimum": 0},
            "link": {"type": "array", "items": {"type": "object", "required": ["relation", "url"], "properties": {
                "relation": {"type": "string"}, "url": {"type": "string"}}}},
            "entry": {"type": "array", "items": {"type": "object", "properties": {
                "fullUrl": {"type": "string"},
                "resource": {"type": "object", "required": ["resourceType"],
                             "properties": {"resourceType": {"type": "string"}}},
                "search": {"type": "object"}}}}
        }
    }))
}

/// A schema written as JSON (the static shapes above; a unit test parses each).
fn schema(v: serde_json::Value) -> RefOr<Schema> {
    serde_json::from_value(v).unwrap_or_else(|e| unreachable!("static schema does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    #[test]
    fn every_error_response_declares_its_body() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, r) in op["responses"].as_object().unwrap() {
                    if status.as_str() >= "400" {
                        let want = if path.starts_with("/fhir/") { FHIR_JSON } else { "application/json" };
                        assert!(r["content"][want]["schema"].is_object(), "{method} {path} {status}: {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn secured_operations_declare_401_and_403_and_bodies_declare_413() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let rs = &op["responses"];
                if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                    assert!(rs["401"].is_object() && rs["403"].is_object(), "{method} {path}");
                }
                if op["requestBody"].is_object() {
                    assert!(rs["413"].is_object(), "{method} {path}");
                }
                assert!(rs["500"].is_object() && rs["503"].is_object(), "{method} {path}");
            }
        }
    }

    #[test]
    fn an_optional_body_may_be_absent_but_not_null() {
        let doc = doc();
        let body = &doc["paths"]["/v1/consults/{id}/end"]["post"]["requestBody"];
        assert!(body["required"].is_null() || body["required"] == false, "{body}");
        assert_eq!(body["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/EndBody", "{body}");
    }

    #[test]
    fn every_path_parameter_is_named_by_its_path_and_no_other_parameter_is_nullable() {
        // A query struct derived without `parameter_in = Query` lands in the path, required,
        // where no client ever sends it (`limit` of `GET /v1/patients/{id}/scans` once did:
        // the fuzzer's out-of-range `limit` never reached the server).
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                for p in &params {
                    let name = p["name"].as_str().unwrap();
                    if p["in"] == "path" {
                        assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: path parameter `{name}`");
                    }
                    // A parameter is absent or a value: `null` cannot be sent in a URL or header.
                    let s = p["schema"].to_string();
                    assert!(!s.contains("\"null\""), "{method} {path}: parameter `{name}` may be null: {s}");
                }
                for seg in path.split('/').filter(|s| s.starts_with('{')) {
                    let name = seg.trim_matches(|c| c == '{' || c == '}');
                    assert!(
                        params.iter().any(|p| p["in"] == "path" && p["name"] == name),
                        "{method} {path}: `{name}` is not declared"
                    );
                }
            }
        }
    }

    /// What is wrong with `s` as the schema of a value a request carries, if anything: a string
    /// with no pattern, enum or (UUID) format lets a schema-following client send text the
    /// server refuses (a control character, a date before 1900, a code of the wrong shape); a
    /// number without bounds, a list without `maxItems`, an open object, work without limit.
    fn unconstrained(
        doc: &serde_json::Value,
        s: &serde_json::Value,
        at: &str,
        out: &mut Vec<String>,
        seen: &mut Vec<String>,
    ) {
        if let Some(r) = s["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            // Elements of a FHIR resource the server does not read: only the character rule.
            if !seen.iter().any(|n| n == name) && name != "FhirElement" {
                seen.push(name.to_string());
                unconstrained(doc, &doc["components"]["schemas"][name], &format!("{at}→{name}"), out, seen);
            }
            return;
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            for (i, sub) in s[key].as_array().into_iter().flatten().enumerate() {
                // An `allOf` member that is only an `anyOf` refines its siblings (a cross-field
                // rule): the values' own rules are in the sibling.
                let refinement =
                    key == "allOf" && sub.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("anyOf"));
                if !refinement {
                    unconstrained(doc, sub, &format!("{at}/{key}[{i}]"), out, seen);
                }
            }
        }
        let types: Vec<&str> = match &s["type"] {
            serde_json::Value::String(t) => vec![t.as_str()],
            serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
            _ => vec![],
        };
        let has = |k: &str| !s[k].is_null();
        for t in types {
            let ok = match t {
                "string" => has("pattern") || has("enum") || has("const") || s["format"] == "uuid",
                "integer" | "number" => (has("minimum") && has("maximum")) || has("enum"),
                "array" => has("maxItems"),
                "object" => s["additionalProperties"] == false || s["additionalProperties"].is_object(),
                _ => true,
            };
            if !ok {
                out.push(format!("{at}: {s}"));
            }
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                unconstrained(doc, v, &format!("{at}.{k}"), out, seen);
            }
        }
        for key in ["items", "additionalProperties", "propertyNames"] {
            if s[key].is_object() {
                unconstrained(doc, &s[key], &format!("{at}[{key}]"), out, seen);
            }
        }
        for (i, sub) in s["prefixItems"].as_array().into_iter().flatten().enumerate() {
            unconstrained(doc, sub, &format!("{at}[{i}]"), out, seen);
        }
    }

    #[test]
    fn every_value_a_request_carries_has_its_rule_in_the_schema() {
        let doc = doc();
        let mut out = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let at = format!("{method} {path}");
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    // A socket's ticket is checked as a credential (401), not a shape.
                    if name != "ticket" {
                        unconstrained(&doc, &p["schema"], &format!("{at} ?{name}"), &mut out, &mut vec![]);
                    }
                }
                for (ct, c) in op["requestBody"]["content"].as_object().into_iter().flatten() {
                    unconstrained(&doc, &c["schema"], &format!("{at} body {ct}"), &mut out, &mut vec![]);
                }
            }
        }
        assert!(out.is_empty(), "values a request may carry without a stated rule:\n{}", out.join("\n"));
    }

    #[test]
    fn every_reference_resolves() {
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                        out.push(r.to_string());
                    }
                    o.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = doc();
        let mut all = vec![];
        refs(&doc, &mut all);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "{r} does not resolve");
        }
    }

    #[test]
    fn the_static_schemas_parse() {
        let _ = (operation_outcome_schema(), bundle_schema(), fhir_success_schema("/fhir/Patient/{id}"));
    }
}
