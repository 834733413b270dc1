//! The object-access matrix, generated from the route table: every operation that names an
//! object in its path (or a patient in its query) is called, with the ids of one patient's
//! objects, by callers who hold the route's permission but have no right to those objects —
//! another patient, and a clinician who is not on the patient's care team. Each must be
//! refused (403 or 404; a search answers nothing), and no row of the patient's data may change.

use coherency::auth::Role;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::contract::{enrol_mfa, objects, Ids};
use crate::dashboard::clinician_with_calendar;
use crate::helpers::{spawn_app_with, TestApp, User};

/// Routes a caller without a right to the patient may legitimately call with these ids, and
/// why; every other operation with a path id is in the matrix.
const LEGITIMATE: &[(&str, &str, &str)] = &[
    ("get", "/v1/clinicians/{id}/schedule", "a clinician's working hours are public to signed-in users (booking)"),
    ("get", "/v1/clinicians/{id}/appointment-types", "a clinician's appointment types are public to signed-in users"),
    ("get", "/fhir/Schedule/{id}", "a clinician's schedule is public to signed-in users (booking)"),
    (
        "post",
        "/v1/patients/{id}/emergency-access",
        "break-glass: any clinician may, with a reason; audited and reviewed",
    ),
];

/// Socket routes: their refusals before the upgrade are checked by the socket tests
/// (`consults.rs`, `scan_stream.rs`, `scan_datachannel.rs`), with a real handshake.
const SOCKETS: &[&str] = &["/v1/scans/{id}/stream", "/v1/scans/{id}/rtc", "/v1/consults/{id}/signal"];

/// A digest of every row that holds the patient's data or its bookings and consults.
async fn digest(pg: &PgPool) -> Vec<(&'static str, Option<String>)> {
    // One statement per table, each checked at build time (`+` joins literals in the macro).
    macro_rules! digests {
        ($($t:literal),* $(,)?) => {
            vec![$((
                $t,
                sqlx::query_scalar!("SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM " + $t + " r")
                    .fetch_one(pg)
                    .await
                    .unwrap(),
            )),*]
        };
    }
    digests![
        "patients",
        "patient_entries",
        "care_team",
        "appointments",
        "waitlist",
        "consults",
        "consult_participants",
        "scans",
        "scan_measurements",
        "wounds",
        "wound_assessment_exclusions",
        "tissue_corrections",
        "schedules",
        "schedule_rules",
        "appointment_types",
        "users",
    ]
}

/// The id the owner's objects give to one path parameter of `path`.
fn fill(path: &str, ids: &Ids, owner_user: &str) -> String {
    let list = ["allergies", "medications", "conditions", "coverages", "contacts", "consents"]
        .into_iter()
        .find(|l| path.contains(&format!("/{l}/")));
    let id = |v: &[String]| v.first().cloned().unwrap_or_else(|| panic!("no object for {path}"));
    let main = if path.starts_with("/v1/patients/") || path.starts_with("/fhir/Patient/") {
        id(&ids.patients)
    } else if path.starts_with("/v1/scans/") || path.starts_with("/fhir/DocumentReference/") {
        id(&ids.scans)
    } else if path.starts_with("/fhir/Observation/") {
        // A measurement's id; the scan of the fixture has none yet, so any id is unseen.
        id(&ids.scans)
    } else if path.starts_with("/fhir/Media/") {
        // A photo is `<scan id>-<frame seq>`: the owner's scan, its first frame.
        format!("{}-1", id(&ids.scans))
    } else if path.starts_with("/v1/wounds/") || path.starts_with("/fhir/Condition/") {
        id(&ids.wounds)
    } else if path.starts_with("/v1/consults/") {
        id(&ids.consults)
    } else if path.starts_with("/v1/appointments/") || path.starts_with("/fhir/Appointment/") {
        id(&ids.appointments)
    } else if path.starts_with("/v1/waitlist/") {
        id(&ids.waitlist)
    } else if path.starts_with("/v1/clinicians/") || path.starts_with("/fhir/Schedule/") {
        id(&ids.clinicians)
    } else if path.starts_with("/v1/admin/users/") {
        owner_user.to_string()
    } else {
        panic!("{path}: the matrix does not know which object this route names; add it")
    };
    let mut out = path.replace("{id}", &main);
    if let Some(l) = list {
        let entry = ids.entries.iter().find(|(k, _)| *k == l).map(|(_, v)| v.clone()).expect("entry");
        out = out.replace("{entry_id}", &entry);
    }
    // A wound's assessment: the fixture's wound has none, and the wound is refused first.
    out = out.replace("{assessment_id}", &id(&ids.scans));
    // A scan's measurement: the fixture's scan has none, and the scan is refused first.
    out = out.replace("{measurement_id}", &id(&ids.scans));
    out = out.replace("{pid}", &id(&ids.participants)).replace("{clinician_id}", &id(&ids.clinicians));
    // A scan's first frame: the scan is refused before any frame is looked up.
    out = out.replace("{seq}", "1");
    assert!(!out.contains('{'), "{path}: unfilled parameter in {out}");
    out
}

async fn call(app: &TestApp, method: &str, url: &str, who: &User) -> (u16, Value) {
    let url = app.url(url);
    let req = match method {
        "get" => app.client.get(url),
        "delete" => app.client.delete(url).header("If-Match", "\"1\""),
        "post" => app.client.post(url).json(&json!({})),
        "put" => app.client.put(url).json(&json!({})),
        "patch" => app.client.patch(url).header("If-Match", "\"1\"").json(&json!({})),
        other => panic!("method {other}"),
    };
    let res = req.bearer_auth(&who.token).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Whether a successful search answered nothing.
fn empty_result(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) if o.get("resourceType") == Some(&json!("Bundle")) => {
            o.get("entry").and_then(Value::as_array).is_none_or(Vec::is_empty)
        }
        Value::Object(o) => o.values().filter_map(Value::as_array).all(Vec::is_empty),
        _ => false,
    }
}

#[actix_web::test]
async fn no_caller_reaches_another_patients_objects_through_any_route() {
    let app = spawn_app_with(|mut c| {
        c.api_rate_per_sec = 100_000;
        c.api_rate_burst = 100_000;
        c
    })
    .await;
    let admin = app.staff(Role::Admin, true).await;
    let (clin, ty) = clinician_with_calendar(&app).await;
    let owner = app.patient().await;
    enrol_mfa(&app, &owner).await;
    let ids = objects(&app, &admin, &clin, ty, &owner).await;
    let intruders = [
        ("another patient", app.patient().await),
        ("a clinician off the care team", { app.staff(Role::Clinician, true).await }),
    ];
    enrol_mfa(&app, &intruders[0].1).await;
    let owner_pid = ids.patients[0].clone();

    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let before = digest(&app.pg).await;
    let mut checked = 0;
    let mut leaks = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["security"].as_array().is_none_or(Vec::is_empty) {
                continue;
            }
            let by_path = path.contains('{');
            let patient_query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["in"] == "query" && (p["name"] == "patient" || p["name"] == "patient_id"))
                .and_then(|p| p["name"].as_str());
            if SOCKETS.contains(&path.as_str())
                || LEGITIMATE.iter().any(|(m, p, _)| m == method && p == path)
                || !(by_path || (method == "get" && patient_query.is_some()))
            {
                continue;
            }
            let url = if by_path {
                fill(path, &ids, &owner.id.to_string())
            } else {
                format!("{path}?{}={owner_pid}", patient_query.unwrap_or("patient"))
            };
            for (who, user) in &intruders {
                let (status, body) = call(&app, method, &url, user).await;
                checked += 1;
                let refused = matches!(status, 403 | 404) || (status == 200 && !by_path && empty_result(&body));
                if !refused {
                    leaks.push(format!("{who}: {} {url} -> {status} {body}", method.to_uppercase()));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "callers reached another patient's objects:\n{}", leaks.join("\n"));
    assert!(checked >= 80, "the matrix covers the routes ({checked} calls)");
    assert_eq!(digest(&app.pg).await, before, "a refused call changed the patient's data");
    // The owner still reaches them: the ids were real.
    let own = app.get_auth(&format!("/v1/patients/{owner_pid}"), &owner.token).await;
    assert_eq!(own.status(), 200);
}
