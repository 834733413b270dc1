//! The scan API: create, read, list; object access as for patient records; consent.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp, User};
use crate::scan_stream::{consent, create_scan, patient_with_scan};
use coherency::auth::Role;

async fn on_care_team(app: &TestApp, clinician: &User, patient_id: Uuid) {
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, added_at) VALUES ($1, $2, now())",
        patient_id,
        clinician.id,
    )
    .execute(&app.pg)
    .await
    .unwrap();
}

#[actix_web::test]
async fn a_patient_creates_reads_and_lists_their_own_scans() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let pid = patient.patient_id.unwrap();
    let res = app.get_auth(&format!("/v1/scans/{scan}"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["status"], "created");
    assert_eq!(v["patient_id"], pid.to_string());
    assert_eq!(v["body_site"], "left heel");
    assert_eq!(v["acked_seq"], 0);
    assert_eq!(v["created_by"], patient.id.to_string());

    let second = create_scan(&app, &patient, pid).await;
    let res = app.get_auth(&format!("/v1/patients/{pid}/scans"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let ids: Vec<&str> = v["scans"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![second.to_string(), scan.to_string()], "newest first");

    let audited: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log
            WHERE action IN ('scan.create', 'scan.read', 'scan.list') AND actor_id = $1"#,
        patient.id,
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 4);
}

#[actix_web::test]
async fn another_patients_scans_are_not_found() {
    let app = spawn_app().await;
    let (owner, scan) = patient_with_scan(&app).await;
    let other = app.patient().await;
    consent(&app, &other).await;
    let res = app.get_auth(&format!("/v1/scans/{scan}"), &other.token).await;
    assert_eq!(res.status(), 404);
    let res = app.get_auth(&format!("/v1/patients/{}/scans", owner.patient_id.unwrap()), &other.token).await;
    assert_eq!(res.status(), 404);
    let res =
        app.post_auth("/v1/scans", &other.token, &json!({"patient_id": owner.patient_id, "body_site": "sacrum"})).await;
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn clinicians_reach_scans_of_their_patients_only() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let pid = patient.patient_id.unwrap();
    let clinician = app.staff(Role::Clinician, true).await;
    assert_eq!(app.get_auth(&format!("/v1/scans/{scan}"), &clinician.token).await.status(), 404);
    on_care_team(&app, &clinician, pid).await;
    assert_eq!(app.get_auth(&format!("/v1/scans/{scan}"), &clinician.token).await.status(), 200);
    let theirs = create_scan(&app, &clinician, pid).await;
    let v: Value = app.get_auth(&format!("/v1/scans/{theirs}"), &patient.token).await.json().await.unwrap();
    assert_eq!(v["created_by"], clinician.id.to_string());
    let admin = app.staff(Role::Admin, true).await;
    assert_eq!(app.get_auth(&format!("/v1/scans/{scan}"), &admin.token).await.status(), 200);
}

#[actix_web::test]
async fn a_scan_needs_consent_on_file() {
    let app = spawn_app().await;
    let patient = app.patient().await;
    let res = app
        .post_auth("/v1/scans", &patient.token, &json!({"patient_id": patient.patient_id, "body_site": "left heel"}))
        .await;
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "consent_required");
    consent(&app, &patient).await;
    create_scan(&app, &patient, patient.patient_id.unwrap()).await;
}

#[actix_web::test]
async fn scan_bodies_are_validated() {
    let app = spawn_app().await;
    let patient = app.patient().await;
    consent(&app, &patient).await;
    let pid = patient.patient_id.unwrap();
    for (body, code) in [
        (json!({"patient_id": pid, "body_site": ""}), "invalid_field"),
        (json!({"patient_id": pid, "body_site": "x".repeat(101)}), "invalid_field"),
        (json!({"patient_id": pid, "body_site": "heel", "colour": "red"}), "unknown_field"),
        (json!({"body_site": "heel"}), "invalid_field"),
        (json!({"patient_id": "nope", "body_site": "heel"}), "invalid_field"),
    ] {
        let res = app.post_auth("/v1/scans", &patient.token, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
}
