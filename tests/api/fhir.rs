//! FHIR R4: every resource and Bundle the server emits passes the outside validator
//! (`fhir.resources` 6.4.0, strict R4, via `tests/fhir_validate.py`); search Bundles carry
//! `total` and a working `next` link; errors are `OperationOutcome`s.

use std::io::Write;
use std::process::{Command, Stdio};

use coherency::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, User};
use crate::patients::{cast, create_patient, send};

/// Runs the strict R4 validator over `resources`; panics with its report on any failure.
pub fn validate(resources: &[Value]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.local/venv-fhir/bin/python");
    assert!(std::path::Path::new(&python).exists(), "run scripts/fhir-venv first (creates {python})");
    let mut child = Command::new(&python)
        .arg(format!("{root}/tests/fhir_validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the FHIR validator");
    child.stdin.take().unwrap().write_all(serde_json::to_string(resources).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fhir.resources rejected an emitted resource:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn fhir_get(app: &TestApp, user: Option<&User>, path: &str) -> (u16, Value) {
    let mut req = app.client.get(app.url(path));
    if let Some(u) = user {
        req = req.bearer_auth(&u.token);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(ct.starts_with("application/fhir+json"), "{path}: content type {ct}");
    (status, res.json().await.unwrap())
}

async fn full_patient(app: &TestApp, clin: &User) -> String {
    let p = create_patient(
        app,
        &clin.token,
        json!({"given_name": "Zoë", "middle_name": "Maria", "family_name": "Ångström", "prefix": "Dr", "birth_date": "1972-03-04",
               "sex": "female", "gender_identity": "woman", "preferred_language": "sv", "phone": "+46 70 123 45 67",
               "email": "zoe@example.test", "mrn": "FHIR-1", "national_id": "19720304-1234", "notes": "prefers video",
               "address": {"lines": ["Storgatan 1"], "city": "Uppsala", "postal_code": "75310", "country": "SE"}}),
    )
    .await;
    let id = p["id"].as_str().unwrap().to_string();
    for (kind, body) in [
        (
            "allergies",
            json!({"substance": "Penicillin", "reaction": "Hives", "severity": "moderate", "onset_date": "2010-06-01"}),
        ),
        ("allergies", json!({"substance": "Latex", "status": "resolved"})),
        ("medications", json!({"name": "Metformin", "dosage": "500 mg twice daily", "start_date": "2024-02-01"})),
        ("medications", json!({"name": "Ibuprofen", "status": "on-hold"})),
        (
            "conditions",
            json!({"description": "Venous leg ulcer", "snomed_code": "402863005", "onset_date": "2024-02-01"}),
        ),
        ("conditions", json!({"description": "Hypertension", "clinical_status": "remission"})),
        (
            "coverages",
            json!({"payer": "Acme Health", "member_id": "M-1", "group_number": "G-2", "plan_name": "Gold", "start_date": "2024-01-01"}),
        ),
        ("coverages", json!({"payer": "Old Insurer", "member_id": "M-0", "status": "cancelled"})),
        (
            "contacts",
            json!({"name": "Sam Ångström", "relationship": "partner", "emergency": true, "phone": "+46701234568"}),
        ),
        ("contacts", json!({"name": "Kim", "relationship": "friend", "email": "kim@example.test"})),
        ("consents", json!({"scope": "scan_capture", "status": "granted", "terms_version": "2026-01"})),
    ] {
        let (s, v, _) =
            send(app, Method::POST, &format!("/v1/patients/{id}/{kind}"), Some(&clin.token), Some(&body), None).await;
        assert_eq!(s, 201, "{kind}: {v}");
    }
    id
}

#[actix_web::test]
async fn every_emitted_resource_and_bundle_passes_the_r4_validator() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let id = full_patient(&app, &clin).await;
    let mut emitted = vec![];
    let (s, p) = fhir_get(&app, Some(&clin), &format!("/fhir/Patient/{id}")).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["resourceType"], "Patient");
    assert_eq!(p["gender"], "female");
    assert_eq!(p["birthDate"], "1972-03-04");
    assert_eq!(p["name"][0]["given"], json!(["Zoë", "Maria"]));
    assert!(p.to_string().find("19720304-1234").is_none(), "national id stays out of FHIR output");
    emitted.push(p);
    for (kind, n) in [
        ("AllergyIntolerance", 2),
        ("MedicationStatement", 2),
        ("Condition", 2),
        ("Coverage", 2),
        ("RelatedPerson", 2),
        ("CareTeam", 1),
    ] {
        let (s, b) = fhir_get(&app, Some(&clin), &format!("/fhir/{kind}?patient={id}")).await;
        assert_eq!(s, 200, "{kind}: {b}");
        assert_eq!((b["type"].as_str(), b["total"].as_u64()), (Some("searchset"), Some(n)), "{kind}: {b}");
        for e in b["entry"].as_array().unwrap() {
            assert_eq!(e["resource"]["resourceType"], kind);
        }
        emitted.push(b);
    }
    let (s, everything) = fhir_get(&app, Some(&clin), &format!("/fhir/Patient/{id}/$everything")).await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 12, "{kinds:?}");
    assert_eq!(kinds[0], "Patient");
    assert!(kinds.contains(&"CareTeam") && kinds.contains(&"Coverage") && kinds.contains(&"RelatedPerson"));
    emitted.push(everything);
    let (s, search) =
        fhir_get(&app, Some(&clin), "/fhir/Patient?name=angstrom&birthdate=1972-03-04&identifier=FHIR-1").await;
    assert_eq!(s, 200);
    assert_eq!(search["total"], 1, "{search}");
    emitted.push(search);
    // Errors are OperationOutcomes, validated too.
    let other = app.patient().await;
    for (user, path, status) in [
        (Some(&other), format!("/fhir/Patient/{id}"), 404),
        (None, format!("/fhir/Patient/{id}"), 401),
        (Some(&other), "/fhir/Patient?name=x".to_string(), 403),
        (Some(&clin), "/fhir/Patient?birthdate=1972-02-31".to_string(), 400),
        (Some(&clin), "/fhir/Patient?_count=0".to_string(), 400),
        (Some(&clin), "/fhir/Patient?gender=female".to_string(), 400),
        (Some(&clin), "/fhir/Condition".to_string(), 400),
    ] {
        let (s, o) = fhir_get(&app, user, &path).await;
        assert_eq!(s, status, "{path}: {o}");
        assert_eq!(o["resourceType"], "OperationOutcome", "{path}: {o}");
        if s == 400 {
            assert!(o["issue"][0]["expression"][0].is_string(), "names the parameter: {o}");
        }
        emitted.push(o);
    }
    validate(&emitted);
}

#[actix_web::test]
async fn patient_search_bundles_page_with_total_and_next_links() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    for i in 0..7 {
        create_patient(
            &app,
            &admin.token,
            json!({"given_name": format!("N{i}"), "family_name": "Bundleton", "birth_date": "1990-01-01"}),
        )
        .await;
    }
    let mut path = "/fhir/Patient?name=bundleton&_count=3".to_string();
    let mut seen = vec![];
    let mut bundles = vec![];
    for _ in 0..5 {
        let (s, b) = fhir_get(&app, Some(&admin), &path).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["total"], 7);
        for e in b["entry"].as_array().unwrap() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
            assert!(e["fullUrl"].as_str().unwrap().ends_with(e["resource"]["id"].as_str().unwrap()));
        }
        let next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        bundles.push(b);
        match next {
            Some(url) => path = url.split_once("/fhir/").map(|(_, rest)| format!("/fhir/{rest}")).unwrap(),
            None => break,
        }
    }
    assert_eq!(bundles.len(), 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (7, 7));
    validate(&bundles);
    // The searches are audited with the ids they returned.
    let rows: Vec<String> =
        sqlx::query_scalar!("SELECT details FROM audit_log WHERE action = 'fhir.patient.search' ORDER BY id")
            .fetch_all(&app.pg)
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    let logged: usize =
        rows.iter().map(|d| serde_json::from_str::<Value>(d).unwrap()["ids"].as_array().unwrap().len()).sum();
    assert_eq!(logged, 7);
}

#[actix_web::test]
async fn fhir_follows_the_same_access_rules() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let pa = c.a.patient_id.unwrap();
    for (who, want) in
        [(&c.a, 200), (&c.b, 404), (&c.assigned, 200), (&c.unassigned, 404), (&c.emergency, 200), (&c.admin, 200)]
    {
        let (s, body) = fhir_get(&app, Some(who), &format!("/fhir/Patient/{pa}/$everything")).await;
        assert_eq!(s, want, "{body}");
        let (s, body) = fhir_get(&app, Some(who), &format!("/fhir/Coverage?patient=Patient/{pa}")).await;
        assert_eq!(s, want, "{body}");
    }
}

#[actix_web::test]
async fn the_capability_statement_lists_exactly_what_the_fhir_api_serves_and_passes_the_r4_validator() {
    let app = spawn_app().await;
    let (s, cs) = fhir_get(&app, None, "/fhir/metadata").await;
    assert_eq!(s, 200, "public, like any FHIR server's statement: {cs}");
    validate(std::slice::from_ref(&cs));
    assert_eq!((cs["fhirVersion"].as_str(), cs["kind"].as_str()), (Some("4.0.1"), Some("instance")));
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    let types: Vec<&str> = resources.iter().map(|r| r["type"].as_str().unwrap()).collect();
    let mut want = vec![
        "AllergyIntolerance",
        "Appointment",
        "CareTeam",
        "Condition",
        "Coverage",
        "DocumentReference",
        "Media",
        "MedicationStatement",
        "Observation",
        "Patient",
        "RelatedPerson",
        "Schedule",
        "Slot",
    ];
    want.sort_unstable();
    assert_eq!(types, want);
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let codes: Vec<&str> =
        patient["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["read", "search-type"]);
    let params: Vec<&str> =
        patient["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["name", "birthdate", "identifier"]);
    assert_eq!(patient["operation"][0]["name"], "everything");

    // Every interaction listed is served: an authenticated call reaches the FHIR handler (a
    // Bundle, resource or OperationOutcome from it, never the router's 404), and one that is
    // not listed is not.
    let clin = app.staff(Role::Clinician, true).await;
    for r in resources {
        let kind = r["type"].as_str().unwrap();
        for i in r["interaction"].as_array().unwrap() {
            let path = match i["code"].as_str().unwrap() {
                "read" => format!("/fhir/{kind}/{}", uuid::Uuid::new_v4()),
                "search-type" => format!("/fhir/{kind}"),
                other => panic!("{kind}: unexpected interaction {other}"),
            };
            let (status, body) = fhir_get(&app, Some(&clin), &path).await;
            let routed = status != 404 || body["issue"][0]["details"]["text"] != coherency::http::NO_ROUTE;
            assert!(routed && body["resourceType"].is_string(), "{path}: {status} {body}");
        }
    }
    let (status, body) = fhir_get(&app, Some(&clin), "/fhir/Encounter").await;
    assert_eq!(status, 404, "a resource the statement does not list is not served");
    assert_eq!(body["issue"][0]["details"]["text"], coherency::http::NO_ROUTE);
}

#[actix_web::test]
async fn wounds_are_conditions_and_their_measurements_observations_focused_on_them() {
    use crate::wounds::{clinician_and_patient, heel, measured_scan, new_wound};
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    let h = new_wound(&app, &clin, pid, heel()).await;
    let s = new_wound(
        &app,
        &clin,
        pid,
        json!({"site_display": "Sacrum", "aetiology": "pressure", "stage": "3", "status": "healed", "status_date": "2026-01-05"}),
    )
    .await;
    let (hid, sid) = (h["id"].as_str().unwrap().to_string(), s["id"].as_str().unwrap().to_string());
    let (_, hm) = measured_scan(&app, &clin, pid, &hid, 14, 400.0, 12.0).await;
    let (_, sm) = measured_scan(&app, &clin, pid, &sid, 7, 100.0, 5.0).await;
    let mut emitted = vec![];

    let (st, c) = fhir_get(&app, Some(&clin), &format!("/fhir/Condition/{hid}")).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["resourceType"], "Condition");
    assert_eq!(c["id"], hid.as_str());
    assert_eq!(c["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(c["recorder"]["reference"], format!("Practitioner/{}", clin.id));
    assert_eq!(c["clinicalStatus"]["coding"][0]["code"], "active");
    assert_eq!(c["verificationStatus"]["coding"][0]["code"], "confirmed");
    assert_eq!(c["category"][0]["coding"][0]["code"], "problem-list-item");
    assert_eq!(c["code"]["coding"][0]["code"], "280137006", "diabetic foot ulcer: {c}");
    assert_eq!(c["onsetDateTime"], "2026-01-02");
    let site = &c["bodySite"][0];
    assert_eq!(
        (site["coding"][0]["system"].as_str(), site["coding"][0]["code"].as_str()),
        (Some("http://snomed.info/sct"), Some("116315002"))
    );
    assert_eq!(site["text"], "Heel");
    let lat = site["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == coherency::http::fhir::wounds::LATERALITY_EXTENSION)
        .unwrap();
    assert_eq!(lat["valueCodeableConcept"]["coding"][0]["code"], "7771000", "left: {c}");
    assert_eq!(c["stage"][0]["summary"]["text"], "Wagner grade 2");
    assert!(c.get("abatementDateTime").is_none());
    emitted.push(c);
    let (st, c) = fhir_get(&app, Some(&clin), &format!("/fhir/Condition/{sid}")).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["clinicalStatus"]["coding"][0]["code"], "resolved");
    assert_eq!(c["abatementDateTime"], "2026-01-05");
    assert_eq!(c["code"]["coding"][0]["code"], "399912005");
    assert!(c["bodySite"][0].get("extension").is_none(), "no laterality when unspecified: {c}");
    emitted.push(c);

    // The patient's Condition search and $everything hold both wounds.
    let (st, b) = fhir_get(&app, Some(&clin), &format!("/fhir/Condition?patient={pid}")).await;
    assert_eq!((st, b["total"].as_u64()), (200, Some(2)), "{b}");
    emitted.push(b);
    let (st, e) = fhir_get(&app, Some(&patient), &format!("/fhir/Patient/{pid}/$everything")).await;
    assert_eq!(st, 200, "{e}");
    let ids: Vec<&str> = e["entry"].as_array().unwrap().iter().map(|x| x["resource"]["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&hid.as_str()) && ids.contains(&sid.as_str()), "{ids:?}");
    emitted.push(e);

    // Each wound size panel points at its own wound, never the other.
    let (st, b) = fhir_get(&app, Some(&clin), &format!("/fhir/Observation?patient={pid}")).await;
    assert_eq!((st, b["total"].as_u64()), (200, Some(2)), "{b}");
    for entry in b["entry"].as_array().unwrap() {
        let o = &entry["resource"];
        let want = if o["id"] == hm.to_string() { &hid } else { &sid };
        assert_eq!(o["focus"], json!([{"reference": format!("Condition/{want}")}]), "{o}");
    }
    emitted.push(b);
    for (focus, want) in [(format!("Condition/{hid}"), hm), (sid.clone(), sm)] {
        let (st, b) = fhir_get(&app, Some(&clin), &format!("/fhir/Observation?patient={pid}&focus={focus}")).await;
        assert_eq!((st, b["total"].as_u64()), (200, Some(1)), "{focus}: {b}");
        assert_eq!(b["entry"][0]["resource"]["id"], want.to_string());
        emitted.push(b);
    }
    let (st, o) = fhir_get(&app, Some(&clin), &format!("/fhir/Observation?patient={pid}&focus=Patient/{pid}")).await;
    assert_eq!((st, o["issue"][0]["expression"][0].as_str()), (400, Some("focus")), "{o}");
    emitted.push(o);
    let (st, o) = fhir_get(&app, Some(&clin), &format!("/fhir/Observation/{sm}")).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["focus"][0]["reference"], format!("Condition/{sid}"));
    assert_eq!(o["bodySite"]["text"], "Sacrum");
    emitted.push(o);
    let (st, o) = fhir_get(&app, Some(&clin), &format!("/fhir/Observation/{hm}")).await;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["bodySite"]["coding"][0]["code"], "116315002");
    emitted.push(o);

    // Access as for the patient record: another patient and a clinician outside the care team
    // get a 404 OperationOutcome, audited as a refusal.
    let other = app.patient().await;
    let outsider = app.staff(Role::Clinician, true).await;
    for who in [&other, &outsider] {
        let (st, o) = fhir_get(&app, Some(who), &format!("/fhir/Condition/{hid}")).await;
        assert_eq!((st, o["resourceType"].as_str()), (404, Some("OperationOutcome")), "{o}");
        emitted.push(o);
    }
    let (st, o) = fhir_get(&app, Some(&clin), &format!("/fhir/Condition/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(st, 404, "{o}");
    let (st, _) = fhir_get(&app, None, &format!("/fhir/Condition/{hid}")).await;
    assert_eq!(st, 401);
    validate(&emitted);
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT outcome, details FROM audit_log WHERE action = 'fhir.condition.read' ORDER BY id")
            .fetch_all(&app.pg)
            .await
            .unwrap();
    let outcomes: Vec<&str> = rows.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "success").count(), 2, "{rows:?}");
    assert!(outcomes.iter().filter(|o| **o != "success").count() >= 2, "refusals audited: {rows:?}");
    assert!(rows.iter().all(|(_, d)| !d.contains("Heel")), "no site text in audit details");
}
