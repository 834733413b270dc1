//! Bad input at the boundary (issue #21): control characters, bidirectional overrides, loose
//! JSON, out-of-range numbers and over-long strings and lists are each refused with a 4xx in
//! the error envelope naming the field, nothing is stored, and the server stays ready. Real
//! names in any script and multi-line notes still pass.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use coherency::auth::Role;

use crate::helpers::{spawn_app, TestApp, User};

/// A day far enough ahead that booking notice never bites.
const DAY: &str = "2027-01-05";

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    Admin,
    /// The clinician who hosts the consult and owns the calendar.
    Host,
    /// A clinician outside the patient's care team (asks for emergency access).
    Outsider,
    Patient,
}

enum Body {
    Json(Value),
    Raw(String),
}

/// One bad request and exactly how it must be refused.
struct Row {
    what: &'static str,
    who: Who,
    method: Method,
    path: String,
    body: Option<Body>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn row(what: &'static str, who: Who, method: Method, path: impl Into<String>, body: Option<Body>) -> Row {
    Row { what, who, method, path: path.into(), body, status: 400, code: "invalid_field", field: None }
}

impl Row {
    fn field(mut self, f: &'static str) -> Self {
        self.field = Some(f);
        self
    }
    fn code(mut self, c: &'static str) -> Self {
        self.code = c;
        self
    }
}

fn json_body(v: Value) -> Option<Body> {
    Some(Body::Json(v))
}

/// What the database holds that any of the rows could have changed.
async fn snapshot(pg: &PgPool) -> Vec<(&'static str, i64)> {
    macro_rules! counts {
        ($(($name:literal, $sql:literal)),* $(,)?) => {
            vec![$(($name, sqlx::query_scalar!($sql).fetch_one(pg).await.unwrap())),*]
        };
    }
    counts![
        ("users", r#"SELECT count(*) AS "n!" FROM users"#),
        ("patients", r#"SELECT count(*) AS "n!" FROM patients"#),
        ("patient versions", r#"SELECT COALESCE(sum(version), 0)::bigint AS "n!" FROM patients"#),
        ("entries", r#"SELECT count(*) AS "n!" FROM patient_entries"#),
        ("care team", r#"SELECT count(*) AS "n!" FROM care_team"#),
        ("emergency access", r#"SELECT count(*) AS "n!" FROM emergency_access"#),
        ("appointment types", r#"SELECT count(*) AS "n!" FROM appointment_types"#),
        ("appointments", r#"SELECT count(*) AS "n!" FROM appointments"#),
        ("cancelled", r#"SELECT count(*) AS "n!" FROM appointments WHERE status = 'cancelled'"#),
        ("waitlist", r#"SELECT count(*) AS "n!" FROM waitlist"#),
        ("ended consults", r#"SELECT count(*) AS "n!" FROM consults WHERE status = 'ended'"#),
        ("consult events", r#"SELECT count(*) AS "n!" FROM consult_events"#),
        ("scans", r#"SELECT count(*) AS "n!" FROM scans"#),
        ("audit rows", r#"SELECT count(*) AS "n!" FROM audit_log"#),
    ]
}

struct Fixture {
    admin: User,
    host: User,
    outsider: User,
    patient: User,
    patient_id: Uuid,
    appointment: String,
    consult: String,
}

impl Fixture {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::Admin => Some(&self.admin.token),
            Who::Host => Some(&self.host.token),
            Who::Outsider => Some(&self.outsider.token),
            Who::Patient => Some(&self.patient.token),
        }
    }
}

/// A patient on a clinician's care team, a booked appointment and an open consult.
async fn fixture(app: &TestApp) -> Fixture {
    let admin = app.staff(Role::Admin, true).await;
    let host = app.staff(Role::Clinician, true).await;
    let outsider = app.staff(Role::Clinician, true).await;
    let patient = app.patient().await;
    let patient_id = patient.patient_id.unwrap();
    let res = app
        .post_auth(&format!("/v1/patients/{patient_id}/care-team"), &admin.token, &json!({"clinician_id": host.id}))
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let weekly: Vec<Value> = (1..=7).map(|d| json!({"weekday": d, "start": "09:00", "end": "17:00"})).collect();
    let res = app
        .client
        .put(app.url(&format!("/v1/clinicians/{}/schedule", host.id)))
        .bearer_auth(&host.token)
        .json(&json!({"time_zone": "Europe/London", "horizon_days": 730, "weekly": weekly}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = app
        .post_auth(
            &format!("/v1/clinicians/{}/appointment-types", host.id),
            &host.token,
            &json!({"name": "Wound review", "duration_minutes": 30, "modality": "telehealth"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let ty = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let res = app
        .post_auth(
            "/v1/appointments",
            &patient.token,
            &json!({"clinician_id": host.id, "type_id": ty, "start": format!("{DAY}T10:00:00Z"), "confirm": true}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let appointment = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let res = app.post_auth("/v1/consults", &host.token, &json!({"patient_id": patient_id})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let consult = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    Fixture { admin, host, outsider, patient, patient_id, appointment, consult }
}

fn patient_with(key: &str, v: Value) -> Value {
    let mut b = json!({"given_name": "Ok", "family_name": "Person", "birth_date": "1980-01-01"});
    b[key] = v;
    b
}

/// The table: what is sent, by whom, and the field the refusal must name. Every row is a
/// `400 invalid_field` unless it says otherwise.
#[rustfmt::skip]
fn rows(f: &Fixture) -> Vec<Row> {
    use Method as M;
    use Who::*;
    let pid = f.patient_id;
    let (appt, consult, host) = (&f.appointment, &f.consult, f.host.id);
    let long = |n: usize| "x".repeat(n);
    let raw = |s: String| Some(Body::Raw(s));
    let cancel = format!("/v1/appointments/{appt}/cancel");
    let end = format!("/v1/consults/{consult}/end");
    let events = format!("/v1/consults/{consult}/events");
    let types = format!("/v1/clinicians/{host}/appointment-types");
    let allergies = format!("/v1/patients/{pid}/allergies");
    vec![
        // Control characters, refused at deserialisation (finding 2).
        row("NUL in an anonymous login's email", Anonymous, M::POST, "/v1/auth/login",
            json_body(json!({"email": "a\u{0}@b.co", "password": "whatever-password"}))).field("email"),
        row("NUL in an appointment's cancel reason", Patient, M::POST, &cancel,
            json_body(json!({"reason": "cannot \u{0} come"}))).field("reason"),
        row("NUL in an emergency-access reason", Outsider, M::POST, format!("/v1/patients/{pid}/emergency-access"),
            json_body(json!({"reason": "patient collapsed \u{0} in clinic"}))).field("reason"),
        row("NUL in a consult's end reason", Host, M::POST, &end, json_body(json!({"reason": "done\u{0}"})))
            .field("reason"),
        row("a C0 control in a registering patient's name", Anonymous, M::POST, "/v1/auth/register",
            json_body(json!({"email": "c0@example.test", "password": "long enough passphrase", "given_name": "Ann\u{7}",
                             "family_name": "Bell", "birth_date": "1990-01-01"}))).field("given_name"),
        row("an escape sequence in a family name", Admin, M::POST, "/v1/patients",
            json_body(patient_with("family_name", json!("Smith\u{1b}[31m")))).field("family_name"),
        row("a C1 control in a middle name", Admin, M::POST, "/v1/patients",
            json_body(patient_with("middle_name", json!("Jo\u{85}")))).field("middle_name"),
        row("DEL in the notes", Admin, M::POST, "/v1/patients", json_body(patient_with("notes", json!("fine\u{7f}"))))
            .field("notes"),
        row("a newline in a name", Admin, M::POST, "/v1/patients",
            json_body(patient_with("given_name", json!("Ann\nMarie")))).field("given_name"),
        row("a tab in an email", Admin, M::POST, "/v1/patients", json_body(patient_with("email", json!("a\t@b.co"))))
            .field("email"),
        row("a right-to-left override in a name", Admin, M::POST, "/v1/patients",
            json_body(patient_with("family_name", json!("\u{202e}nosnhoJ")))).field("family_name"),
        row("a bidirectional isolate in a staff display name", Admin, M::POST, "/v1/admin/users",
            json_body(json!({"email": "iso@clinic.test", "password": "long enough passphrase",
                             "display_name": "Dr \u{2066}Who\u{2069}", "role": "clinician"}))).field("display_name"),
        row("a bidirectional override in free text", Admin, M::POST, &allergies,
            json_body(json!({"substance": "latex \u{202d}x"}))).field("substance"),
        row("NUL in the second address line", Admin, M::POST, "/v1/patients",
            json_body(patient_with("address", json!({"lines": ["1 High St", "Flat\u{0}2"]})))).field("address.lines[1]"),
        row("a control character in a key", Admin, M::POST, "/v1/patients",
            raw(r#"{"given_name":"A","family_name":"B","birth_date":"1980-01-01","x\u0000":1}"#.into())),
        row("NUL in a patient-search query", Admin, M::GET, "/v1/patients?name=%00", None).field("name"),
        row("a carriage return in a query", Admin, M::GET, "/v1/patients?name=Ann%0D", None).field("name"),
        row("NUL in a FHIR search", Admin, M::GET, "/fhir/Patient?name=%00", None).field("name"),
        row("NUL in a path", Admin, M::GET, "/v1/patients/%00", None).field("path"),
        row("NUL in a FHIR path", Admin, M::GET, "/fhir/Patient/%00", None).field("path"),
        row("a query string over its bound", Admin, M::GET, format!("/v1/patients?name={}", long(5000)), None)
            .field("query"),
        // Loose parsing (finding 3).
        row("two JSON documents back to back", Admin, M::POST, "/v1/patients",
            raw(format!("{0}{0}", patient_with("sex", json!("female"))))).code("malformed_json"),
        row("a duplicate key", Admin, M::POST, "/v1/patients",
            raw(r#"{"given_name":"A","given_name":"B","family_name":"C","birth_date":"1980-01-01"}"#.into()))
            .field("given_name"),
        row("a duplicate key in a FHIR $book body", Patient, M::POST, "/fhir/Appointment/$book",
            raw(r#"{"resourceType":"Appointment","status":"booked","status":"proposed"}"#.into())).field("status"),
        row("nesting deeper than the bound", Admin, M::POST, "/v1/patients",
            raw(format!("{{\"notes\":{}1{}}}", "[".repeat(40), "]".repeat(40)))),
        row("an array where the body is an object", Admin, M::POST, "/v1/consults", raw("[null, null]".into())),
        row("a negative events cursor", Host, M::GET, format!("{events}?after=-1"), None).field("after"),
        row("a non-numeric events cursor", Host, M::GET, format!("{events}?after=abc"), None).field("after"),
        row("a huge events cursor", Host, M::GET, format!("{events}?after=99999999999999999999"), None).field("after"),
        // Bounds on every input (finding 1).
        row("an over-long name", Admin, M::POST, "/v1/patients", json_body(patient_with("given_name", json!(long(101)))))
            .field("given_name"),
        row("over-long notes", Admin, M::POST, "/v1/patients", json_body(patient_with("notes", json!(long(4001)))))
            .field("notes"),
        row("an over-long email at login", Anonymous, M::POST, "/v1/auth/login",
            json_body(json!({"email": format!("{}@b.co", long(300)), "password": "x"}))).field("email"),
        row("an over-long password at login", Anonymous, M::POST, "/v1/auth/login",
            json_body(json!({"email": "a@b.co", "password": long(2000)}))).field("password"),
        row("an over-long cancel reason", Patient, M::POST, &cancel, json_body(json!({"reason": long(501)})))
            .field("reason"),
        row("an over-long consult end reason", Host, M::POST, &end, json_body(json!({"reason": long(101)})))
            .field("reason"),
        row("an over-long body site", Patient, M::POST, "/v1/scans",
            json_body(json!({"patient_id": pid, "body_site": long(101)}))).field("body_site"),
        row("an over-long allergy", Admin, M::POST, &allergies, json_body(json!({"substance": long(201)})))
            .field("substance"),
        row("an over-long list", Admin, M::POST, "/v1/patients",
            json_body(patient_with("address", json!({"lines": ["a", "b", "c", "d"]})))).field("address.lines"),
        row("an out-of-range page size", Admin, M::GET, "/v1/patients?limit=101", None).field("limit"),
        row("a negative page size", Admin, M::GET, "/v1/patients?limit=-5", None).field("limit"),
        row("an out-of-range FHIR _count", Admin, M::GET, "/fhir/Patient?_count=1000", None).field("_count"),
        row("an out-of-range scan list", Patient, M::GET, format!("/v1/patients/{pid}/scans?limit=0"), None)
            .field("limit"),
        row("an out-of-range duration", Host, M::POST, &types,
            json_body(json!({"name": "Long", "duration_minutes": 100000, "modality": "telehealth"})))
            .field("duration_minutes"),
        row("a negative buffer", Host, M::POST, &types,
            json_body(json!({"name": "Neg", "duration_minutes": 30, "buffer_before_minutes": -5, "modality": "telehealth"})))
            .field("buffer_before_minutes"),
        row("a FHIR day outside the calendar", Patient, M::GET,
            format!("/fhir/Appointment?patient=Patient/{pid}&date=%2B262143-12-31"), None).field("date"),
        row("an appointment before year 1900", Patient, M::POST, "/v1/appointments",
            json_body(json!({"clinician_id": host, "type_id": Uuid::new_v4(), "start": "-0001-01-01T10:00:00Z"})))
            .field("start"),
        row("an appointment search from year 1", Patient, M::GET, "/v1/appointments?from=0001-01-01T00:00:00Z", None)
            .field("from"),
        row("a waitlist window over its bound", Patient, M::POST, "/v1/waitlist",
            json_body(json!({"clinician_id": host, "type_id": Uuid::new_v4(),
                             "from": "2027-01-01T00:00:00Z", "to": "2029-01-01T00:00:00Z"}))).field("to"),
    ]
}

async fn send(app: &TestApp, f: &Fixture, r: &Row) -> (u16, Value) {
    let mut req = app.client.request(r.method.clone(), app.url(&r.path));
    if let Some(t) = f.token(r.who) {
        req = req.bearer_auth(t);
    }
    req = match &r.body {
        Some(Body::Json(v)) => req.json(v),
        Some(Body::Raw(s)) => req.header("content-type", "application/json").body(s.clone()),
        None => req,
    };
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The refusal's code and field, from the error envelope or a FHIR `OperationOutcome`.
fn refusal(path: &str, body: &Value) -> (String, Option<String>) {
    if path.starts_with("/fhir/") {
        assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
        let issue = &body["issue"][0];
        let code = issue["details"]["coding"][0]["code"].as_str().unwrap_or_default().to_string();
        (code, issue["expression"][0].as_str().map(str::to_string))
    } else {
        let e = &body["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert!(e["request_id"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        (e["code"].as_str().unwrap_or_default().to_string(), e["field"].as_str().map(str::to_string))
    }
}

#[actix_web::test]
async fn every_bad_input_is_refused_naming_its_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    for r in rows(&f) {
        let before = snapshot(&app.pg).await;
        let (status, body) = send(&app, &f, &r).await;
        assert_eq!(status, r.status, "{}: {body}", r.what);
        let (code, field) = refusal(&r.path, &body);
        assert_eq!(code, r.code, "{}: {body}", r.what);
        if let Some(want) = r.field {
            assert_eq!(field.as_deref(), Some(want), "{}: {body}", r.what);
        }
        assert_eq!(snapshot(&app.pg).await, before, "{} stored something", r.what);
    }
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200, "the server is still ready after the whole table");
}

#[actix_web::test]
async fn names_in_any_script_and_multi_line_text_are_accepted() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let notes = "Line one.\nLine two,\r\n\tindented.";
    for (given, family) in [("Zoë", "Ñúñez"), ("محمد", "عبد الله"), ("שרה", "כהן"), ("Siân", "O'Brien-Łukasz")]
    {
        let body = json!({"given_name": given, "family_name": family, "birth_date": "1980-01-01", "notes": notes,
                          "address": {"lines": ["1 Rue de l'Église", "Bâtiment B"], "city": "Zürich"}});
        let res = app.post_auth("/v1/patients", &f.admin.token, &body).await;
        assert_eq!(res.status(), 201, "{given} {family}: {}", res.text().await.unwrap());
        let p: Value = res.json().await.unwrap();
        let read: Value = app
            .get_auth(&format!("/v1/patients/{}", p["id"].as_str().unwrap()), &f.admin.token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!((read["given_name"].as_str(), read["family_name"].as_str()), (Some(given), Some(family)));
        assert_eq!(read["notes"], notes, "newlines and tabs in notes survive");
        assert_eq!(read["address"]["lines"][0], "1 Rue de l'Église");
    }
    let res = app.get_auth("/v1/patients?name=Zo%C3%AB", &f.admin.token).await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"][0]["family_name"], "Ñúñez", "{page}");
    let reason = "Found unconscious in the waiting area;\nneeds allergy history now.";
    let res = app
        .post_auth(
            &format!("/v1/patients/{}/emergency-access", f.patient_id),
            &f.outsider.token,
            &json!({"reason": reason}),
        )
        .await;
    assert_eq!(res.status(), 201, "a multi-line reason is accepted: {}", res.text().await.unwrap());
    let res = app.get_auth(&format!("/v1/consults/{}/events?after=0", f.consult), &f.host.token).await;
    assert_eq!(res.status(), 200);
}

/// Resolves a `$ref` in the OpenAPI document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or(&Value::Null),
        None => v,
    }
}

/// A property's schema, through `$ref` and a nullable `oneOf`.
fn property<'a>(doc: &'a Value, schema: &str, prop: &str) -> &'a Value {
    let p = &doc["components"]["schemas"][schema]["properties"][prop];
    let p = p["oneOf"].as_array().and_then(|a| a.iter().find(|s| s["type"] != "null")).unwrap_or(p);
    resolve(doc, p)
}

fn parameter<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
    let p = &params.iter().find(|p| p["name"] == name).unwrap()["schema"];
    let p = p["oneOf"].as_array().and_then(|a| a.iter().find(|s| s["type"] != "null")).unwrap_or(p);
    resolve(doc, p)
}

#[actix_web::test]
async fn the_openapi_document_names_the_bounds() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let given = property(&doc, "CreatePatient", "given_name");
    assert_eq!((given["minLength"].as_u64(), given["maxLength"].as_u64()), (Some(1), Some(100)), "{given}");
    assert!(given["pattern"].as_str().is_some_and(|p| p.contains("\\u202A")), "{given}");
    assert_eq!(property(&doc, "CreatePatient", "notes")["maxLength"], 4000);
    assert_eq!(property(&doc, "CreateUser", "display_name")["maxLength"], 100);
    assert_eq!(property(&doc, "AddressInput", "lines")["maxItems"], 3);
    assert_eq!(property(&doc, "CancelBody", "reason")["maxLength"], 500);
    assert_eq!(property(&doc, "LoginRequest", "password")["maxLength"], 1024);
    let duration = property(&doc, "TypeBody", "duration_minutes");
    assert_eq!((duration["minimum"].as_f64(), duration["maximum"].as_f64()), (Some(5.0), Some(480.0)), "{duration}");
    let limit = parameter(&doc, "/v1/patients", "limit");
    assert_eq!((limit["minimum"].as_f64(), limit["maximum"].as_f64()), (Some(1.0), Some(100.0)), "{limit}");
    assert_eq!(parameter(&doc, "/v1/consults/{id}/events", "after")["minimum"].as_f64(), Some(0.0));
    assert_eq!(parameter(&doc, "/fhir/Patient", "_count")["maximum"].as_f64(), Some(100.0));
}

/// The backstop behind the boundary: were a value PostgreSQL refuses ever to get past it, the
/// answer would be a 400, not a 500. (The boundary refuses these before any query, so the
/// database's own refusals are produced here directly.)
#[actix_web::test]
async fn a_value_postgresql_refuses_is_a_client_error_and_a_server_fault_is_not() {
    use coherency::error::ApiError;
    use coherency_protocol::Code;
    let app = spawn_app().await;
    let refused = [
        ("NUL in text", sqlx::query!(r#"SELECT $1::text AS "v""#, "a\0b").fetch_one(&app.pg).await.unwrap_err()),
        (
            "NUL in jsonb",
            sqlx::query!(r#"SELECT $1::jsonb AS "v""#, json!({"reason": "a\u{0}b"}))
                .fetch_one(&app.pg)
                .await
                .unwrap_err(),
        ),
        (
            "a number out of range",
            sqlx::query!(r#"SELECT $1::text::int4 AS "v""#, "99999999999").fetch_one(&app.pg).await.unwrap_err(),
        ),
    ];
    for (what, e) in refused {
        let api = ApiError::from(e);
        assert_eq!((api.code, api.code.http_status()), (Code::BadRequest, 400), "{what}: {}", api.message);
    }
    // Runtime SQL on purpose: a statement naming a table that does not exist cannot be
    // checked at build time, and is the server fault this test needs.
    let fault = sqlx::query("SELECT * FROM no_such_table").execute(&app.pg).await.unwrap_err();
    assert_eq!(ApiError::from(fault).code, Code::Internal);
}
