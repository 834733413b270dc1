//! `GET /fhir/metadata`: the server's FHIR R4 `CapabilityStatement`, derived from the OpenAPI
//! document's `/fhir/` routes — a resource is listed with `read` when `GET /fhir/{type}/{id}`
//! exists, with `search-type` and its search parameters (the route's query parameters) when
//! `GET /fhir/{type}` exists, and with the `$operations` routed under it — so it lists exactly
//! what the FHIR API serves, and a new route appears in it without an edit here.

use std::sync::OnceLock;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// FHIR search parameter types of the query parameters the FHIR routes take. A parameter
/// missing here fails the unit test below, so a new one gets a type.
const PARAM_TYPES: &[(&str, &str)] = &[
    ("name", "string"),
    ("birthdate", "date"),
    ("identifier", "token"),
    ("patient", "reference"),
    ("practitioner", "reference"),
    ("schedule", "reference"),
    ("service-type", "token"),
    ("start", "date"),
    ("date", "date"),
    ("code", "token"),
    ("focus", "reference"),
];

/// The canonical definitions of the operations served.
const OPERATIONS: &[(&str, &str)] = &[
    ("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),
    // No R4 core definition exists for booking; the Argonaut scheduling `$book` is followed
    // (docs/booking.md) and named by this server's own canonical URL.
    ("book", "urn:coherency:OperationDefinition/Appointment-book"),
];

/// One FHIR resource type and what the API serves of it.
#[derive(Default)]
struct Served {
    read: bool,
    search: Vec<(String, String)>,
    searchable: bool,
    operations: Vec<String>,
}

/// `rest[0].resource` of the statement, from the OpenAPI paths.
fn resources(doc: &Value) -> Vec<Value> {
    let mut by_type: std::collections::BTreeMap<String, Served> = Default::default();
    let Some(paths) = doc["paths"].as_object() else { return vec![] };
    for (path, item) in paths {
        let Some(rest) = path.strip_prefix("/fhir/") else { continue };
        let segments: Vec<&str> = rest.split('/').collect();
        let Some(kind) = segments.first().filter(|k| k.chars().next().is_some_and(|c| c.is_ascii_uppercase())) else {
            continue;
        };
        let served = by_type.entry(kind.to_string()).or_default();
        match segments.as_slice() {
            [_] if item["get"].is_object() => {
                served.searchable = true;
                for p in item["get"]["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    if p["in"] == "query" && !name.starts_with('_') {
                        let doc = p["description"].as_str().unwrap_or_default().to_string();
                        served.search.push((name.to_string(), doc));
                    }
                }
            }
            [_, "{id}"] if item["get"].is_object() => served.read = true,
            [_, op] | [_, "{id}", op] if op.starts_with('$') => served.operations.push(op[1..].to_string()),
            _ => {}
        }
    }
    by_type
        .into_iter()
        .map(|(kind, s)| {
            let mut interaction = vec![];
            if s.read {
                interaction.push(json!({"code": "read"}));
            }
            if s.searchable {
                interaction.push(json!({"code": "search-type"}));
            }
            let search_param: Vec<Value> = s
                .search
                .iter()
                .map(|(name, doc)| {
                    let ty = PARAM_TYPES.iter().find(|(n, _)| n == name).map_or("string", |(_, t)| *t);
                    crate::http::fhir::prune(json!({"name": name, "type": ty, "documentation": doc}))
                })
                .collect();
            let operation: Vec<Value> = s
                .operations
                .iter()
                .map(|op| {
                    let def = OPERATIONS.iter().find(|(n, _)| n == op).map_or("", |(_, d)| *d);
                    json!({"name": op, "definition": def})
                })
                .collect();
            crate::http::fhir::prune(json!({
                "type": kind,
                "interaction": interaction,
                "searchParam": search_param,
                "operation": operation,
            }))
        })
        .collect()
}

fn served_resources() -> &'static [Value] {
    static RESOURCES: OnceLock<Vec<Value>> = OnceLock::new();
    RESOURCES.get_or_init(|| {
        use utoipa::OpenApi;
        resources(&serde_json::to_value(crate::http::openapi::ApiDoc::openapi()).unwrap_or_default())
    })
}

/// The statement for the server at `base` (`…/fhir`).
pub fn capability_statement(base: &str, date: chrono::NaiveDate) -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.to_string(),
        "publisher": "Coherency",
        "kind": "instance",
        "software": {"name": "Coherency", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Coherency FHIR R4 API", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read and search over patient records, bookings and wound measurements. Every interaction \
                              but this statement needs `Authorization: Bearer` (POST /v1/auth/login) and the permission \
                              the OpenAPI document names; see docs/fhir.md.",
            "security": {"description": "Opaque bearer access tokens from POST /v1/auth/login; staff need verified MFA."},
            "resource": served_resources(),
        }],
    })
}

/// `GET /fhir/metadata`: public, like the rest of a FHIR server's conformance statement.
#[utoipa::path(get, path = "/fhir/metadata", tag = "fhir",
    responses((status = 200, description = "CapabilityStatement (application/fhir+json)")))]
pub async fn metadata(state: actix_web::web::Data<crate::state::AppState>, req: HttpRequest) -> HttpResponse {
    crate::http::fhir::ok(capability_statement(&crate::http::fhir::base(&req), state.clock.now().date_naive()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fhir_search_parameter_has_a_type_and_every_operation_a_definition() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::http::openapi::ApiDoc::openapi()).unwrap();
        let rs = resources(&doc);
        assert!(rs.iter().any(|r| r["type"] == "Patient"), "{rs:?}");
        for r in &rs {
            for p in r["searchParam"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                assert!(
                    PARAM_TYPES.iter().any(|(n, _)| *n == name),
                    "{}: search parameter `{name}` has no type",
                    r["type"]
                );
            }
            for o in r["operation"].as_array().into_iter().flatten() {
                assert!(o["definition"].as_str().is_some_and(|d| !d.is_empty()), "{}: {o}", r["type"]);
            }
        }
    }
}
