//! Patient records: access matrix (IDOR), optimistic concurrency, field-level write rules,
//! search (accents, typos, birth date, MRN, keyset pagination), audit rows, encryption at
//! rest (a sentinel absent from `pg_dump` and the logs), input validation, consents.

use std::collections::HashSet;
use std::time::Duration;

use coherency::auth::Role;
use coherency_protocol::ids::{PatientId, SessionId, UserId};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, NodeProcess, TestApp, User};

/// One request with an optional token, body and `If-Match`.
pub async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(m) = if_match {
        req = req.header("If-Match", m);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), etag)
}

pub async fn create_patient(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, v, _) = send(app, Method::POST, "/v1/patients", Some(token), Some(&body), None).await;
    assert_eq!(status, 201, "create patient: {v}");
    v
}

async fn etag_of(app: &TestApp, admin: &User, id: &str) -> String {
    let (s, _, etag) = send(app, Method::GET, &format!("/v1/patients/{id}"), Some(&admin.token), None, None).await;
    assert_eq!(s, 200);
    etag.unwrap()
}

/// The cast of the access matrix around patient A's record.
pub struct Cast {
    pub a: User,
    pub b: User,
    pub assigned: User,
    pub unassigned: User,
    pub emergency: User,
    pub admin: User,
}

pub async fn cast(app: &TestApp) -> Cast {
    let a = app.patient().await;
    let b = app.patient().await;
    let assigned = app.staff(Role::Clinician, true).await;
    let unassigned = app.staff(Role::Clinician, true).await;
    let emergency = app.staff(Role::Clinician, true).await;
    let admin = app.staff(Role::Admin, true).await;
    let pa = a.patient_id.unwrap();
    let (s, v, _) = send(
        app,
        Method::POST,
        &format!("/v1/patients/{pa}/care-team"),
        Some(&admin.token),
        Some(&json!({"clinician_id": assigned.id, "role": "primary"})),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = send(
        app,
        Method::POST,
        &format!("/v1/patients/{pa}/emergency-access"),
        Some(&emergency.token),
        Some(&json!({"reason": "unconscious in the emergency department"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    Cast { a, b, assigned, unassigned, emergency, admin }
}

/// method, path, body, whether it needs `If-Match`, the status expected for each caller.
type Case = (Method, String, Option<Value>, bool, [u16; 7]);

#[actix_web::test]
async fn every_patient_route_answers_each_caller_as_the_access_rules_say() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let pa = c.a.patient_id.unwrap().to_string();
    // A staff-owned allergy and a contact to address item routes.
    let (s, allergy, _) = send(
        &app,
        Method::POST,
        &format!("/v1/patients/{pa}/allergies"),
        Some(&c.admin.token),
        Some(&json!({"substance": "latex"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{allergy}");
    let allergy_id = allergy["id"].as_str().unwrap().to_string();

    // caller order: A, B, assigned, unassigned, emergency, admin, anonymous
    let callers: Vec<(&str, Option<&User>)> = vec![
        ("patient A", Some(&c.a)),
        ("patient B", Some(&c.b)),
        ("assigned clinician", Some(&c.assigned)),
        ("unassigned clinician", Some(&c.unassigned)),
        ("emergency clinician", Some(&c.emergency)),
        ("admin", Some(&c.admin)),
        ("anonymous", None),
    ];
    let read = [200, 404, 200, 404, 200, 200, 401];
    let staff_write = [403, 404, 201, 404, 201, 201, 401];
    let patient_write = [201, 404, 201, 404, 201, 201, 401];
    let staff_only_patch = [403, 404, 200, 404, 200, 200, 401];
    let admin_only = [403, 403, 403, 403, 403, 200, 401];
    let search = [403, 403, 200, 200, 200, 200, 401];
    let mut cases: Vec<Case> = vec![
        (Method::GET, format!("/v1/patients/{pa}"), None, false, read),
        (
            Method::PATCH,
            format!("/v1/patients/{pa}"),
            Some(json!({"phone": "+44 20 7946 0000"})),
            true,
            [200, 404, 200, 404, 200, 200, 401],
        ),
        (Method::PATCH, format!("/v1/patients/{pa}"), Some(json!({"mrn": "MRN-A"})), true, staff_only_patch),
        (Method::GET, format!("/v1/patients/{pa}/care-team"), None, false, read),
        (
            Method::POST,
            format!("/v1/patients/{pa}/contacts"),
            Some(json!({"name": "Sam", "relationship": "partner", "phone": "+447700900123"})),
            false,
            patient_write,
        ),
        (
            Method::POST,
            format!("/v1/patients/{pa}/coverages"),
            Some(json!({"payer": "Acme", "member_id": "M1"})),
            false,
            patient_write,
        ),
        (
            Method::POST,
            format!("/v1/patients/{pa}/consents"),
            Some(json!({"scope": "telehealth", "status": "granted", "terms_version": "1"})),
            false,
            patient_write,
        ),
        (
            Method::POST,
            format!("/v1/patients/{pa}/allergies"),
            Some(json!({"substance": "peanut"})),
            false,
            staff_write,
        ),
        (Method::POST, format!("/v1/patients/{pa}/medications"), Some(json!({"name": "aspirin"})), false, staff_write),
        (
            Method::POST,
            format!("/v1/patients/{pa}/conditions"),
            Some(json!({"description": "ulcer"})),
            false,
            staff_write,
        ),
        (
            Method::PATCH,
            format!("/v1/patients/{pa}/allergies/{allergy_id}"),
            Some(json!({"reaction": "rash"})),
            true,
            staff_only_patch,
        ),
        (Method::GET, "/v1/patients".into(), None, false, search),
        (Method::GET, format!("/fhir/Patient/{pa}"), None, false, read),
        (Method::GET, format!("/fhir/Patient/{pa}/$everything"), None, false, read),
        (Method::GET, format!("/fhir/AllergyIntolerance?patient={pa}"), None, false, read),
        (Method::GET, format!("/fhir/CareTeam?patient={pa}"), None, false, read),
    ];
    for kind in ["allergies", "medications", "conditions", "coverages", "contacts", "consents"] {
        cases.push((Method::GET, format!("/v1/patients/{pa}/{kind}"), None, false, read));
    }
    cases.push((Method::POST, format!("/v1/patients/{pa}/deactivate"), Some(json!({})), false, admin_only));
    let mut failures = vec![];
    for (method, path, body, needs_etag, expected) in &cases {
        for ((who, user), want) in callers.iter().zip(expected.iter()) {
            let etag = if *needs_etag {
                Some(if path.contains("/allergies/") {
                    let (_, list, _) = send(
                        &app,
                        Method::GET,
                        &format!("/v1/patients/{pa}/allergies"),
                        Some(&c.admin.token),
                        None,
                        None,
                    )
                    .await;
                    let v = list.as_array().unwrap().iter().find(|e| e["id"] == allergy_id.as_str()).unwrap()
                        ["version"]
                        .clone();
                    format!("\"{v}\"")
                } else {
                    etag_of(&app, &c.admin, &pa).await
                })
            } else {
                None
            };
            let (status, resp, _) =
                send(&app, method.clone(), path, user.map(|u| u.token.as_str()), body.as_ref(), etag.as_deref()).await;
            if status != *want {
                failures.push(format!("{who} {method} {path}: want {want}, got {status} {resp}"));
            }
        }
    }
    assert!(failures.is_empty(), "access matrix mismatches:\n{}", failures.join("\n"));
}

#[actix_web::test]
async fn emergency_access_ends_when_it_expires() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let pa = c.a.patient_id.unwrap();
    let (s, _, _) = send(&app, Method::GET, &format!("/v1/patients/{pa}"), Some(&c.emergency.token), None, None).await;
    assert_eq!(s, 200);
    let clinician = coherency::auth::Principal {
        user_id: UserId::from_uuid(c.emergency.id),
        role: Role::Clinician,
        session_id: SessionId::nil(),
        mfa_enrolled: true,
        mfa_verified: true,
        patient_id: None,
        capture_scan: None,
    };
    let patient = PatientId::from_uuid(pa);
    assert!(app.state.access.can_see_patient(&clinician, patient).await.unwrap());
    app.clock.advance(Duration::from_secs(61 * 60));
    let grant_over = app.state.access.can_see_patient(&clinician, patient).await.unwrap();
    assert!(!grant_over, "break-glass access lasts 60 minutes");
}

#[actix_web::test]
async fn a_stale_etag_is_refused_with_412_and_a_missing_one_with_428() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let p = create_patient(
        &app,
        &clin.token,
        json!({"given_name": "Grace", "family_name": "Hopper", "birth_date": "1906-12-09"}),
    )
    .await;
    let id = p["id"].as_str().unwrap();
    let path = format!("/v1/patients/{id}");
    let (s, v, _) =
        send(&app, Method::PATCH, &path, Some(&clin.token), Some(&json!({"phone": "+15555550100"})), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (428, Some("precondition_required")));
    let (_, _, etag1) = send(&app, Method::GET, &path, Some(&clin.token), None, None).await;
    let etag1 = etag1.unwrap();
    let (s, v, etag2) =
        send(&app, Method::PATCH, &path, Some(&clin.token), Some(&json!({"phone": "+15555550100"})), Some(&etag1))
            .await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(etag2.as_deref(), Some(etag1.as_str()), "a write changes the ETag");
    assert_eq!(v["phone"], "+15555550100");
    let (s, v, _) =
        send(&app, Method::PATCH, &path, Some(&clin.token), Some(&json!({"phone": "+15555550199"})), Some(&etag1))
            .await;
    assert_eq!((s, v["error"]["code"].as_str()), (412, Some("precondition_failed")), "{v}");
    let (_, now, _) = send(&app, Method::GET, &path, Some(&clin.token), None, None).await;
    assert_eq!(now["phone"], "+15555550100", "the stale write changed nothing");
    // `null` clears an optional field.
    let (s, v, _) =
        send(&app, Method::PATCH, &path, Some(&clin.token), Some(&json!({"phone": null})), etag2.as_deref()).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["phone"].is_null());
}

#[actix_web::test]
async fn a_patient_who_registered_with_an_email_sees_it_on_their_record() {
    let app = spawn_app().await;
    let a = app.patient().await;
    let (s, v, _) =
        send(&app, Method::GET, &format!("/v1/patients/{}", a.patient_id.unwrap()), Some(&a.token), None, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["email"], json!(a.email), "{v}");
}

#[actix_web::test]
async fn a_patient_may_edit_contact_details_but_not_clinical_identity_fields() {
    let app = spawn_app().await;
    let a = app.patient().await;
    let path = format!("/v1/patients/{}", a.patient_id.unwrap());
    for field in ["mrn", "birth_date", "given_name", "notes", "national_id", "sex"] {
        let body = match field {
            "birth_date" => json!({field: "1990-01-01"}),
            "sex" => json!({field: "male"}),
            _ => json!({field: "X1"}),
        };
        let (_, _, etag) = send(&app, Method::GET, &path, Some(&a.token), None, None).await;
        let (s, v, _) = send(&app, Method::PATCH, &path, Some(&a.token), Some(&body), etag.as_deref()).await;
        assert_eq!(s, 403, "{field}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (_, _, etag) = send(&app, Method::GET, &path, Some(&a.token), None, None).await;
    let body = json!({"phone": "+447700900001", "preferred_language": "pt-BR", "gender_identity": "non-binary",
        "address": {"lines": ["1 High St"], "city": "Leeds", "country": "gb"}});
    let (s, v, _) = send(&app, Method::PATCH, &path, Some(&a.token), Some(&body), etag.as_deref()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["address"]["country"], "GB");
    assert_eq!(v["preferred_language"], "pt-BR");
}

#[actix_web::test]
async fn bad_input_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    let ok = json!({"given_name": "Ok", "family_name": "Person", "birth_date": "1980-01-01"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("birth_date", json!("2023-02-30")), "birth_date", "invalid_field"),
        (with("birth_date", json!("2999-01-01")), "birth_date", "invalid_field"),
        (with("birth_date", json!("1800-01-01")), "birth_date", "invalid_field"),
        (with("given_name", json!("x".repeat(101))), "given_name", "invalid_field"),
        (with("given_name", json!("   ")), "given_name", "invalid_field"),
        (with("notes", json!("n".repeat(4001))), "notes", "invalid_field"),
        (with("favourite_colour", json!("blue")), "favourite_colour", "unknown_field"),
        (with("sex", json!("robot")), "sex", "invalid_field"),
        (with("phone", json!("call me")), "phone", "invalid_field"),
        (with("email", json!("not-an-email")), "email", "invalid_field"),
        (with("preferred_language", json!("english please")), "preferred_language", "invalid_field"),
        (with("mrn", json!("has spaces")), "mrn", "invalid_field"),
        (with("address", json!({"lines": ["a"], "planet": "Mars"})), "address.planet", "unknown_field"),
        (with("address", json!({"country": "GBR"})), "address.country", "invalid_field"),
    ];
    for (body, field, code) in cases {
        let (s, v, _) = send(&app, Method::POST, "/v1/patients", Some(&admin.token), Some(&body), None).await;
        assert_eq!(s, 400, "{field}: {v}");
        assert_eq!(v["error"]["code"], code, "{field}: {v}");
        assert!(
            v["error"]["field"].as_str().unwrap_or_default().ends_with(field.rsplit('.').next().unwrap()),
            "{field}: {v}"
        );
    }
    let p = create_patient(&app, &admin.token, ok.clone()).await;
    let id = p["id"].as_str().unwrap();
    for (path, body, field) in [
        (format!("/v1/patients/{id}/allergies"), json!({"substance": "x", "severity": "deadly"}), "severity"),
        (format!("/v1/patients/{id}/allergies"), json!({"substance": "x", "onset_date": "2020-13-01"}), "onset_date"),
        (
            format!("/v1/patients/{id}/medications"),
            json!({"name": "x", "start_date": "2024-02-01", "end_date": "2024-01-01"}),
            "end_date",
        ),
        (format!("/v1/patients/{id}/contacts"), json!({"name": "x", "relationship": "partner"}), "phone"),
        (
            format!("/v1/patients/{id}/consents"),
            json!({"scope": "scan_capture", "status": "granted", "terms_version": "1", "extra": 1}),
            "extra",
        ),
        (format!("/v1/patients/{id}/care-team"), json!({"clinician_id": Uuid::new_v4()}), "clinician_id"),
    ] {
        let (s, v, _) = send(&app, Method::POST, &path, Some(&admin.token), Some(&body), None).await;
        assert_eq!(s, 400, "{path} {field}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    for (qs, field) in [
        ("birth_date=1990-02-31", "birth_date"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("cursor=garbage", "cursor"),
        ("shoe_size=9", "shoe_size"),
    ] {
        let (s, v, _) = send(&app, Method::GET, &format!("/v1/patients?{qs}"), Some(&admin.token), None, None).await;
        assert_eq!(s, 400, "{qs}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    // Duplicate MRN within the organisation → 409 naming `mrn`.
    create_patient(&app, &admin.token, with("mrn", json!("MRN-1"))).await;
    let (s, v, _) =
        send(&app, Method::POST, "/v1/patients", Some(&admin.token), Some(&with("mrn", json!("MRN-1"))), None).await;
    assert_eq!((s, v["error"]["field"].as_str()), (409, Some("mrn")), "{v}");
    // Methods a resource does not offer → 405.
    let (s, _, _) = send(&app, Method::DELETE, &format!("/v1/patients/{id}"), Some(&admin.token), None, None).await;
    assert_eq!(s, 405);
}

async fn search(app: &TestApp, token: &str, qs: &str) -> Value {
    let (s, v, _) = send(app, Method::GET, &format!("/v1/patients?{qs}"), Some(token), None, None).await;
    assert_eq!(s, 200, "{qs}: {v}");
    v
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["given_name"].as_str().unwrap(), p["family_name"].as_str().unwrap()))
        .collect()
}

#[actix_web::test]
async fn search_tolerates_accents_and_typos_and_filters_by_birth_date_and_mrn() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    for (g, f, d, m) in [
        ("Zoë", "Ångström", "1972-03-04", "Z-1"),
        ("José", "Müller", "1958-07-21", "J-1"),
        ("Joseph", "Miller", "1960-01-01", "J-2"),
        ("Amara", "Okafor", "1990-01-30", "A-1"),
    ] {
        create_patient(&app, &admin.token, json!({"given_name": g, "family_name": f, "birth_date": d, "mrn": m})).await;
    }
    assert_eq!(names(&search(&app, &admin.token, "name=angstrom").await), ["Zoë Ångström"]);
    assert_eq!(names(&search(&app, &admin.token, "name=ZOE").await), ["Zoë Ångström"]);
    assert_eq!(names(&search(&app, &admin.token, "name=Angstrem").await), ["Zoë Ångström"], "one-letter typo");
    assert_eq!(
        names(&search(&app, &admin.token, "name=Millar").await),
        ["Joseph Miller"],
        "one-letter typo, six letters"
    );
    assert_eq!(names(&search(&app, &admin.token, "name=okxyzr").await), Vec::<String>::new(), "not everything matches");
    assert_eq!(names(&search(&app, &admin.token, "name=Okafir").await), ["Amara Okafor"], "one-letter typo");
    assert_eq!(names(&search(&app, &admin.token, "name=jose%20muller").await), ["José Müller"]);
    assert_eq!(
        names(&search(&app, &admin.token, "name=m%C3%BCller%20jos%C3%A9").await),
        ["José Müller"],
        "word order, accents in the query"
    );
    assert_eq!(names(&search(&app, &admin.token, "name=amara%20okafor").await), ["Amara Okafor"]);
    assert_eq!(names(&search(&app, &admin.token, "birth_date=1960-01-01").await), ["Joseph Miller"]);
    assert_eq!(names(&search(&app, &admin.token, "mrn=J-1").await), ["José Müller"]);
    assert_eq!(names(&search(&app, &admin.token, "name=nobody").await), Vec::<String>::new());
    // A clinician sees only their patients.
    let clin = app.staff(Role::Clinician, true).await;
    assert_eq!(names(&search(&app, &clin.token, "name=angstrom").await), Vec::<String>::new());
    create_patient(
        &app,
        &clin.token,
        json!({"given_name": "Zoe", "family_name": "Angstrom", "birth_date": "2000-01-01"}),
    )
    .await;
    assert_eq!(names(&search(&app, &clin.token, "name=angstrom").await), ["Zoe Angstrom"]);
    // Deactivated records leave searches unless asked for.
    let (s, page, _) = send(&app, Method::GET, "/v1/patients?mrn=A-1", Some(&admin.token), None, None).await;
    assert_eq!(s, 200);
    let id = page["items"][0]["id"].as_str().unwrap();
    let (s, _, _) =
        send(&app, Method::POST, &format!("/v1/patients/{id}/deactivate"), Some(&admin.token), None, None).await;
    assert_eq!(s, 200);
    assert!(names(&search(&app, &admin.token, "mrn=A-1").await).is_empty());
    assert_eq!(names(&search(&app, &admin.token, "mrn=A-1&include_inactive=true").await), ["Amara Okafor"]);
}

#[actix_web::test]
async fn pagination_is_complete_and_stable_while_records_are_added() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    let mut expected = HashSet::new();
    for i in 0..23 {
        let p = create_patient(
            &app,
            &admin.token,
            json!({"given_name": format!("Given{i:02}"), "family_name": "Pagewalker", "birth_date": "1970-01-01"}),
        )
        .await;
        expected.insert(p["id"].as_str().unwrap().to_string());
    }
    let mut seen: Vec<String> = vec![];
    let mut seen_names: Vec<String> = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let qs = match &cursor {
            Some(c) => format!("name=pagewalker&limit=5&cursor={c}"),
            None => "name=pagewalker&limit=5".to_string(),
        };
        let page = search(&app, &admin.token, &qs).await;
        for p in page["items"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_string());
            seen_names.push(p["given_name"].as_str().unwrap().to_string());
        }
        pages += 1;
        if pages == 2 {
            // A record that sorts before the cursor must not shift later pages.
            create_patient(
                &app,
                &admin.token,
                json!({"given_name": "Aaron", "family_name": "Pagewalker", "birth_date": "1970-01-01"}),
            )
            .await;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 5);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no record twice");
    assert_eq!(unique, expected, "every record once");
    let mut sorted = seen_names.clone();
    sorted.sort();
    assert_eq!(seen_names, sorted, "ordered by name");
}

#[actix_web::test]
async fn every_phi_request_leaves_one_audit_row_and_searches_record_the_ids_returned() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    let p = create_patient(
        &app,
        &admin.token,
        json!({"given_name": "Audre", "family_name": "Lorde", "birth_date": "1934-02-18"}),
    )
    .await;
    let id = p["id"].as_str().unwrap().to_string();
    let count = |action: &'static str| {
        let pg = app.pg.clone();
        let id = id.clone();
        async move {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = $1 AND target_id = $2"#,
                action,
                id
            )
            .fetch_one(&pg)
            .await
            .unwrap()
        }
    };
    assert_eq!(count("patient.create").await, 1);
    for n in 1..=3 {
        send(&app, Method::GET, &format!("/v1/patients/{id}"), Some(&admin.token), None, None).await;
        assert_eq!(count("patient.read").await, n);
    }
    let (_, _, etag) = send(&app, Method::GET, &format!("/v1/patients/{id}"), Some(&admin.token), None, None).await;
    send(
        &app,
        Method::PATCH,
        &format!("/v1/patients/{id}"),
        Some(&admin.token),
        Some(&json!({"notes": "secret words"})),
        etag.as_deref(),
    )
    .await;
    assert_eq!(count("patient.update").await, 1);
    let fields: String = sqlx::query_scalar!("SELECT details FROM audit_log WHERE action = 'patient.update'")
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert!(fields.contains("notes") && !fields.contains("secret words"), "names the field, never the value: {fields}");
    send(&app, Method::GET, &format!("/fhir/Patient/{id}/$everything"), Some(&admin.token), None, None).await;
    assert_eq!(count("patient.export").await, 1);
    // A search records exactly the ids it returned.
    create_patient(
        &app,
        &admin.token,
        json!({"given_name": "Audrey", "family_name": "Hepburn", "birth_date": "1929-05-04"}),
    )
    .await;
    let page = search(&app, &admin.token, "name=audre&limit=1").await;
    let returned: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(returned.len(), 1);
    let details: Vec<String> =
        sqlx::query_scalar!("SELECT details FROM audit_log WHERE action = 'patient.search' ORDER BY id")
            .fetch_all(&app.pg)
            .await
            .unwrap();
    assert_eq!(details.len(), 1, "one row per search");
    let d: Value = serde_json::from_str(&details[0]).unwrap();
    assert_eq!(d["ids"], json!(returned));
    // An access refused is audited too.
    let other = app.patient().await;
    send(&app, Method::GET, &format!("/v1/patients/{id}"), Some(&other.token), None, None).await;
    let denied: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'patient.read' AND outcome = 'denied' AND target_id = $1"#,
        &id
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(denied, 1);
}

#[actix_web::test]
async fn national_id_and_notes_are_encrypted_at_rest_and_never_logged() {
    let app = spawn_app().await;
    let node = NodeProcess::start(&app.config, &[("COHERENCY_LOG_LEVEL", "debug")]);
    let admin = app.staff(Role::Admin, true).await;
    let nid = format!("SENT{}", Uuid::new_v4().simple().to_string()[..12].to_uppercase());
    let note = format!("sentinel-note-{}", Uuid::new_v4().simple());
    let url = |p: &str| node.url(p);
    let res = app
        .client
        .post(url("/v1/patients"))
        .bearer_auth(&admin.token)
        .json(&json!({"given_name": "Enc", "family_name": "Rypted", "birth_date": "1980-01-01", "national_id": nid, "notes": note}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let p: Value = res.json().await.unwrap();
    let id = p["id"].as_str().unwrap();
    let got: Value = app
        .client
        .get(url(&format!("/v1/patients/{id}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["national_id"], nid.as_str());
    assert_eq!(got["notes"], note.as_str());
    // A rejected write that carries the sentinel is not logged either.
    let res = app
        .client
        .post(url("/v1/patients"))
        .bearer_auth(&admin.token)
        .json(&json!({"given_name": "Enc", "family_name": "Rypted", "birth_date": "1980-02-30", "national_id": nid, "notes": note}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let stored = sqlx::query!(
        r#"SELECT national_id_enc AS "national_id_enc!", notes_enc AS "notes_enc!" FROM patients WHERE id = $1"#,
        Uuid::parse_str(id).unwrap()
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    let stored = (stored.national_id_enc, stored.notes_enc);
    assert!(stored.0.starts_with("v1:test:") && stored.1.starts_with("v1:test:"), "envelope with key id: {stored:?}");
    let out = std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(app.config.database_url.expose())
        .output()
        .expect("pg_dump runs");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("Rypted"), "the dump holds the record");
    assert!(!dump.contains(&nid), "national id in clear in the dump");
    assert!(!dump.contains(&note), "notes in clear in the dump");
    let logs = node.log.lock().unwrap().join("\n");
    assert!(logs.contains("/v1/patients"), "the node logged the requests");
    assert!(!logs.contains(&nid) && !logs.contains(&note), "a sentinel reached the logs");
}

#[actix_web::test]
async fn scan_consent_follows_the_newest_decision() {
    let app = spawn_app().await;
    let a = app.patient().await;
    let pid = a.patient_id.unwrap();
    let has = || coherency::services::access::has_scan_consent(&app.pg, PatientId::from_uuid(pid));
    assert!(!has().await.unwrap());
    let path = format!("/v1/patients/{pid}/consents");
    let (s, v, _) = send(
        &app,
        Method::POST,
        &path,
        Some(&a.token),
        Some(&json!({"scope": "telehealth", "status": "granted", "terms_version": "2026-01"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(!has().await.unwrap(), "telehealth consent is not scan consent");
    let (s, v, _) = send(
        &app,
        Method::POST,
        &path,
        Some(&a.token),
        Some(&json!({"scope": "scan_capture", "status": "granted", "terms_version": "2026-01"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["date"].is_string(), "the date defaults to today: {v}");
    assert_eq!(
        (&v["terms_version"], &v["version"]),
        (&json!("2026-01"), &json!(1)),
        "the consent text's version and the record's row version are both readable: {v}"
    );
    assert!(has().await.unwrap());
    let (s, _, _) = send(
        &app,
        Method::POST,
        &path,
        Some(&a.token),
        Some(&json!({"scope": "scan_capture", "status": "withdrawn", "terms_version": "2026-01"})),
        None,
    )
    .await;
    assert_eq!(s, 201);
    assert!(!has().await.unwrap(), "withdrawn");
    let (s, list, _) = send(&app, Method::GET, &path, Some(&a.token), None, None).await;
    assert_eq!((s, list.as_array().unwrap().len()), (200, 3));
}

#[actix_web::test]
async fn entries_update_with_if_match_and_delete() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let p = create_patient(
        &app,
        &clin.token,
        json!({"given_name": "Ent", "family_name": "Ries", "birth_date": "1980-01-01"}),
    )
    .await;
    let id = p["id"].as_str().unwrap();
    let (s, m, etag) = send(
        &app,
        Method::POST,
        &format!("/v1/patients/{id}/medications"),
        Some(&clin.token),
        Some(&json!({"name": "Metformin", "dosage": "500 mg"})),
        None,
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(m["status"], "active");
    let item = format!("/v1/patients/{id}/medications/{}", m["id"].as_str().unwrap());
    let (s, _, _) =
        send(&app, Method::PATCH, &item, Some(&clin.token), Some(&json!({"status": "stopped"})), None).await;
    assert_eq!(s, 428);
    let (s, v, _) = send(
        &app,
        Method::PATCH,
        &item,
        Some(&clin.token),
        Some(&json!({"status": "stopped", "dosage": null})),
        etag.as_deref(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["dosage"].is_null(), v["name"].as_str()),
        (Some("stopped"), true, Some("Metformin"))
    );
    let (s, _, _) =
        send(&app, Method::PATCH, &item, Some(&clin.token), Some(&json!({"status": "active"})), etag.as_deref()).await;
    assert_eq!(s, 412);
    let (s, v, _) =
        send(&app, Method::PATCH, &item, Some(&clin.token), Some(&json!({"colour": "red"})), Some("\"2\"")).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("colour")));
    // `null` on a field the entry does not have would vanish in the merge: still refused, and
    // the entry keeps its version.
    for patch in [json!({"colour": null}), json!({"": null})] {
        let (s, v, _) = send(&app, Method::PATCH, &item, Some(&clin.token), Some(&patch), Some("\"2\"")).await;
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some("unknown_field")), "{patch}: {v}");
    }
    let (_, v, _) =
        send(&app, Method::GET, &format!("/v1/patients/{id}/medications"), Some(&clin.token), None, None).await;
    assert_eq!(v[0]["version"], 2, "{v}");
    let (s, _, _) = send(&app, Method::DELETE, &item, Some(&clin.token), None, None).await;
    assert_eq!(s, 204);
    let (s, _, _) = send(&app, Method::DELETE, &item, Some(&clin.token), None, None).await;
    assert_eq!(s, 404);
}

#[actix_web::test]
async fn seed_demo_patients_have_full_profiles_and_are_idempotent() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let n = coherency::http::patients::seed_patients(&app.state).await.unwrap();
    assert!(n >= 5);
    assert_eq!(coherency::http::patients::seed_patients(&app.state).await.unwrap(), 0);
    let page = search(&app, &clin.token, "name=lovelace").await;
    let id = page["items"][0]["id"].as_str().unwrap();
    let (s, p, _) = send(&app, Method::GET, &format!("/v1/patients/{id}"), Some(&clin.token), None, None).await;
    assert_eq!(s, 200);
    assert!(p["national_id"].is_string() && p["notes"].is_string() && p["address"].is_object() && p["mrn"].is_string());
    for kind in ["allergies", "medications", "conditions", "coverages", "contacts", "consents"] {
        let (_, list, _) =
            send(&app, Method::GET, &format!("/v1/patients/{id}/{kind}"), Some(&clin.token), None, None).await;
        assert!(!list.as_array().unwrap().is_empty(), "{kind}");
    }
    assert!(coherency::services::access::has_scan_consent(&app.pg, id.parse().unwrap()).await.unwrap());
}

#[actix_web::test]
async fn the_migration_backfills_registered_patients_emails_and_renames_old_consents_version() {
    let app = spawn_app().await;
    let a = app.patient().await;
    let pid = a.patient_id.unwrap();
    // A record and a consent as they were stored before the fix.
    sqlx::query!("UPDATE patients SET email = NULL WHERE id = $1", pid).execute(&app.pg).await.unwrap();
    sqlx::query!(
        "INSERT INTO patient_entries (id, patient_id, kind, data, created_at, updated_at)
         VALUES ($1, $2, 'consent', '{\"scope\":\"scan_capture\",\"status\":\"granted\",\"version\":\"2025-07\",\"date\":\"2025-07-01\"}', now(), now())",
        Uuid::now_v7(),
        pid
    )
    .execute(&app.pg)
    .await
    .unwrap();
    let before: i64 =
        sqlx::query_scalar!("SELECT version FROM patients WHERE id = $1", pid).fetch_one(&app.pg).await.unwrap();
    sqlx::raw_sql(include_str!("../../migrations/20261215120000_patient_email_consent_terms_version.sql"))
        .execute(&app.pg)
        .await
        .unwrap();

    let path = format!("/v1/patients/{pid}");
    let (s, v, _) = send(&app, Method::GET, &path, Some(&a.token), None, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["email"], json!(a.email));
    assert_eq!(v["version"], json!(before + 1), "an ETag read before the backfill no longer matches");
    let (s, list, _) = send(&app, Method::GET, &format!("{path}/consents"), Some(&a.token), None, None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!((&list[0]["terms_version"], &list[0]["version"]), (&json!("2025-07"), &json!(1)), "{list}");
    assert!(
        coherency::services::access::has_scan_consent(&app.pg, PatientId::from_uuid(pid)).await.unwrap(),
        "the decision itself is unchanged"
    );
}
