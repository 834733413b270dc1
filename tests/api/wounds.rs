//! Wounds as records (issue #24): the record with `ETag` / `If-Match`, access as the patient
//! record's, the audit trail, scans that name (or create) their wound, assessments with their
//! baseline and exclusion marks, and the trajectory — never mixing two wounds of one patient.

use chrono::{Duration, Utc};
use coherency::auth::Role;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp, User};

/// A clinician, and a patient with a login on their care team with scan consent on file.
pub(crate) async fn clinician_and_patient(app: &TestApp) -> (User, User, Uuid) {
    let admin = app.staff(Role::Admin, true).await;
    let clin = app.staff(Role::Clinician, true).await;
    let patient = app.patient().await;
    let pid = patient.patient_id.unwrap();
    let res =
        app.post_auth(&format!("/v1/patients/{pid}/care-team"), &admin.token, &json!({"clinician_id": clin.id})).await;
    assert!(res.status().is_success(), "care team: {}", res.text().await.unwrap_or_default());
    crate::scan_stream::consent(app, &patient).await;
    (clin, patient, pid)
}

pub(crate) async fn new_wound(app: &TestApp, clin: &User, pid: Uuid, body: Value) -> Value {
    let res = app.post_auth(&format!("/v1/patients/{pid}/wounds"), &clin.token, &body).await;
    assert_eq!(res.status(), 201, "create wound: {}", res.text().await.unwrap_or_default());
    res.json().await.unwrap()
}

pub(crate) fn heel() -> Value {
    json!({"site_code": "116315002", "site_display": "Heel", "laterality": "left", "aetiology": "diabetic_foot",
           "stage": "2", "body_map": {"x": 0.4, "y": 0.97}, "onset_date": "2026-01-02"})
}

fn sacrum() -> Value {
    json!({"site_code": "54735007", "site_display": "Sacrum", "aetiology": "pressure", "stage": "3"})
}

async fn patch(app: &TestApp, token: &str, path: &str, if_match: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = app.client.patch(app.url(path)).bearer_auth(token).json(body);
    if let Some(tag) = if_match {
        req = req.header("If-Match", tag);
    }
    req.send().await.unwrap()
}

/// A scan of the wound taken `days_ago`, with an automatic measurement of `area ± pm` mm².
pub(crate) async fn measured_scan(
    app: &TestApp,
    clin: &User,
    pid: Uuid,
    wound: &str,
    days_ago: i64,
    area: f64,
    pm: f64,
) -> (Uuid, Uuid) {
    let res = app
        .post_auth("/v1/scans", &clin.token, &json!({"patient_id": pid, "body_site": "heel", "wound_id": wound}))
        .await;
    assert_eq!(res.status(), 201, "scan: {}", res.text().await.unwrap_or_default());
    let scan: Value = res.json().await.unwrap();
    assert_eq!(scan["wound_id"], wound);
    let scan_id: Uuid = scan["id"].as_str().unwrap().parse().unwrap();
    let taken = Utc::now() - Duration::days(days_ago);
    sqlx::query("UPDATE scans SET status = 'complete', created_at = $2 WHERE id = $1")
        .bind(scan_id)
        .bind(taken)
        .execute(&app.pg)
        .await
        .unwrap();
    let m = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO scan_measurements (id, scan_id, method, outline_area_mm2, outline_area_mm2_pm, bed_area_mm2,
            bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm, length_mm, length_mm_pm, width_mm, width_mm_pm,
            max_depth_mm, max_depth_mm_pm, mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
            skin_model, skin_residual_mm, missing_fraction, created_at)
         VALUES ($1, $2, 'auto', $3, $4, $3, $4, 94, 2, 30, 1, 30, 1, 5, 0.3, 2, 0.2, $5, $6, 'quadratic', 0.1, 0.01, $7)",
    )
    .bind(m)
    .bind(scan_id)
    .bind(area)
    .bind(pm)
    .bind(area * 2.0)
    .bind(pm * 2.0)
    .bind(taken + Duration::minutes(3))
    .execute(&app.pg)
    .await
    .unwrap();
    (scan_id, m)
}

async fn audit_actions(app: &TestApp, wound: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, outcome FROM audit_log WHERE target_type = 'wound' AND target_id = $1 ORDER BY id")
        .bind(wound)
        .fetch_all(&app.pg)
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_wound_is_created_read_and_updated_under_its_etag() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let res = app.post_auth(&format!("/v1/patients/{pid}/wounds"), &clin.token, &heel()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let w: Value = res.json().await.unwrap();
    let id = w["id"].as_str().unwrap().to_string();
    assert_eq!(
        (w["aetiology"].as_str(), w["stage"].as_str(), w["status"].as_str()),
        (Some("diabetic_foot"), Some("2"), Some("open"))
    );
    assert_eq!(w["laterality"], "left");
    assert_eq!(w["body_map"], json!({"x": 0.4, "y": 0.97}));
    assert_eq!(w["recorded_by"], clin.id.to_string());
    assert_eq!(w["status_history"].as_array().map(Vec::len), Some(1));

    let res = app.get_auth(&format!("/v1/wounds/{id}"), &clin.token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let path = format!("/v1/wounds/{id}");
    let change = json!({"status": "healing", "status_date": Utc::now().date_naive().to_string()});
    let res = patch(&app, &clin.token, &path, None, &change).await;
    assert_eq!(res.status(), 428);
    let res = patch(&app, &clin.token, &path, Some("\"7\""), &change).await;
    assert_eq!(res.status(), 412);
    let res = patch(&app, &clin.token, &path, Some("\"1\""), &change).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let w: Value = res.json().await.unwrap();
    assert_eq!(w["status"], "healing");
    let history: Vec<&str> =
        w["status_history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["open", "healing"]);
    // The same ETag a second time is stale: the first write won.
    let res = patch(&app, &clin.token, &path, Some("\"1\""), &json!({"laterality": "right"})).await;
    assert_eq!(res.status(), 412);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "precondition_failed");

    let list: Value = app.get_auth(&format!("/v1/patients/{pid}/wounds"), &clin.token).await.json().await.unwrap();
    assert_eq!(list["wounds"].as_array().map(Vec::len), Some(1));
}

#[actix_web::test]
async fn wound_fields_are_validated_with_the_field_named() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let url = format!("/v1/patients/{pid}/wounds");
    let tomorrow = (Utc::now() + Duration::days(2)).date_naive().to_string();
    for (body, field) in [
        (json!({"site_display": "Calf", "aetiology": "venous", "stage": "2"}), "stage"),
        (json!({"site_display": "Sacrum", "aetiology": "pressure", "stage": "5"}), "stage"),
        (json!({"site_display": "Calf", "aetiology": "venous", "onset_date": tomorrow}), "onset_date"),
        (json!({"site_display": "Calf", "aetiology": "venous", "body_map": {"x": 1.5, "y": 0.2}}), "body_map.x"),
        (json!({"site_display": "Calf", "aetiology": "bite"}), "aetiology"),
        (json!({"site_display": "Calf", "aetiology": "venous", "site_code": "12"}), "site_code"),
        (json!({"site_display": "Calf", "aetiology": "venous", "colour": "red"}), "colour"),
    ] {
        let res = app.post_auth(&url, &clin.token, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let w = new_wound(&app, &clin, pid, sacrum()).await;
    // A new aetiology must suit the stage the wound keeps.
    let res = patch(
        &app,
        &clin.token,
        &format!("/v1/wounds/{}", w["id"].as_str().unwrap()),
        Some("\"1\""),
        &json!({"aetiology": "venous"}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["field"], "stage");
    let res = patch(
        &app,
        &clin.token,
        &format!("/v1/wounds/{}", w["id"].as_str().unwrap()),
        Some("\"1\""),
        &json!({"aetiology": "venous", "stage": null}),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn a_clinician_outside_the_care_team_reaches_no_wound_and_the_refusal_is_audited() {
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    let w = new_wound(&app, &clin, pid, heel()).await;
    let id = w["id"].as_str().unwrap();
    let outsider = app.staff(Role::Clinician, true).await;
    for path in [
        format!("/v1/wounds/{id}"),
        format!("/v1/wounds/{id}/assessments"),
        format!("/v1/wounds/{id}/trajectory"),
        format!("/v1/patients/{pid}/wounds"),
    ] {
        assert_eq!(app.get_auth(&path, &outsider.token).await.status(), 404, "{path}");
    }
    let res =
        patch(&app, &outsider.token, &format!("/v1/wounds/{id}"), Some("\"1\""), &json!({"status": "healed"})).await;
    assert_eq!(res.status(), 404);
    let res = app.post_auth(&format!("/v1/patients/{pid}/wounds"), &outsider.token, &sacrum()).await;
    assert_eq!(res.status(), 404);
    let denied: Vec<(String,)> = sqlx::query_as(
        "SELECT action FROM audit_log WHERE outcome = 'denied' AND actor_id = $1 AND target_id = $2 ORDER BY id",
    )
    .bind(outsider.id)
    .bind(pid.to_string())
    .fetch_all(&app.pg)
    .await
    .unwrap();
    let denied: Vec<&str> = denied.iter().map(|r| r.0.as_str()).collect();
    for action in ["wound.read", "wound.update", "wound.list", "wound.create", "wound.trajectory.read"] {
        assert!(denied.contains(&action), "{action} refusal audited: {denied:?}");
    }
    let unchanged: Value = app.get_auth(&format!("/v1/wounds/{id}"), &clin.token).await.json().await.unwrap();
    assert_eq!(unchanged["status"], "open");
    // The patient reads their own wound but may not write it.
    assert_eq!(app.get_auth(&format!("/v1/wounds/{id}"), &patient.token).await.status(), 200);
    let res =
        patch(&app, &patient.token, &format!("/v1/wounds/{id}"), Some("\"1\""), &json!({"status": "healed"})).await;
    assert_eq!(res.status(), 403);
}

#[actix_web::test]
async fn wound_reads_and_writes_leave_audit_rows() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let w = new_wound(&app, &clin, pid, heel()).await;
    let id = w["id"].as_str().unwrap().to_string();
    let (_, m) = measured_scan(&app, &clin, pid, &id, 3, 500.0, 20.0).await;
    app.get_auth(&format!("/v1/wounds/{id}"), &clin.token).await;
    patch(&app, &clin.token, &format!("/v1/wounds/{id}"), Some("\"1\""), &json!({"stage": "3"})).await;
    app.get_auth(&format!("/v1/wounds/{id}/assessments"), &clin.token).await;
    let res = patch(
        &app,
        &clin.token,
        &format!("/v1/wounds/{id}/assessments/{m}"),
        None,
        &json!({"excluded": true, "reason": "blurred"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    app.get_auth(&format!("/v1/wounds/{id}/trajectory"), &clin.token).await;
    let rows = audit_actions(&app, &id).await;
    for action in [
        "wound.create",
        "wound.read",
        "wound.update",
        "wound.assessments.read",
        "wound.assessment.exclude",
        "wound.trajectory.read",
    ] {
        assert!(rows.contains(&(action.to_string(), "success".to_string())), "{action} in {rows:?}");
    }
    let (details,): (String,) =
        sqlx::query_as("SELECT details FROM audit_log WHERE action = 'wound.update' AND target_id = $1")
            .bind(&id)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    let details: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["fields"], json!(["stage"]), "names, never values");
}

#[actix_web::test]
async fn two_wounds_of_one_patient_never_mix_in_assessments_or_trajectory() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let heel = new_wound(&app, &clin, pid, heel()).await;
    let sacrum = new_wound(&app, &clin, pid, sacrum()).await;
    let (h, s) = (heel["id"].as_str().unwrap().to_string(), sacrum["id"].as_str().unwrap().to_string());
    // The heel halves in four weeks; the sacrum stalls.
    let mut heel_ids = Vec::new();
    for (days_ago, area) in [(28, 1000.0), (21, 870.0), (14, 760.0), (7, 620.0), (0, 500.0)] {
        heel_ids.push(measured_scan(&app, &clin, pid, &h, days_ago, area, 25.0).await.1);
    }
    let mut sacrum_ids = Vec::new();
    for (days_ago, area) in [(29, 800.0), (15, 790.0), (1, 770.0)] {
        sacrum_ids.push(measured_scan(&app, &clin, pid, &s, days_ago, area, 20.0).await.1);
    }
    let ids_of = |v: &Value, key: &str| -> Vec<Uuid> {
        v[key].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().parse().unwrap()).collect()
    };
    let a: Value = app.get_auth(&format!("/v1/wounds/{h}/assessments"), &clin.token).await.json().await.unwrap();
    assert_eq!(ids_of(&a, "assessments"), heel_ids, "the heel's, in time order");
    let a: Value = app.get_auth(&format!("/v1/wounds/{s}/assessments"), &clin.token).await.json().await.unwrap();
    assert_eq!(ids_of(&a, "assessments"), sacrum_ids);
    let th: Value = app.get_auth(&format!("/v1/wounds/{h}/trajectory"), &clin.token).await.json().await.unwrap();
    let ts: Value = app.get_auth(&format!("/v1/wounds/{s}/trajectory"), &clin.token).await.json().await.unwrap();
    assert_eq!(ids_of(&th, "points"), heel_ids);
    assert_eq!(ids_of(&ts, "points"), sacrum_ids);
    assert_eq!(th["metrics"]["points_used"], 5);
    assert_eq!(th["metrics"]["four_week"]["verdict"], "on_track", "{}", th["metrics"]);
    assert!((th["metrics"]["four_week"]["reduction_pct"]["value"].as_f64().unwrap() - 50.0).abs() < 1e-6);
    assert_eq!(th["metrics"]["projection"]["state"], "closing");
    assert_eq!(ts["metrics"]["four_week"]["verdict"], "not_on_track", "{}", ts["metrics"]);
    assert_eq!(ts["metrics"]["four_week"]["threshold_pct"], 40.0);
    // A scan of one wound is not listed with the patient's other wound's scans either.
    let list: Value = app.get_auth(&format!("/v1/patients/{pid}/scans"), &clin.token).await.json().await.unwrap();
    let of_heel = list["scans"].as_array().unwrap().iter().filter(|x| x["wound_id"] == h.as_str()).count();
    assert_eq!(of_heel, 5);
}

#[actix_web::test]
async fn baseline_and_exclusion_marks_are_kept_and_move_the_metrics() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let w = new_wound(&app, &clin, pid, heel()).await;
    let id = w["id"].as_str().unwrap().to_string();
    let (_, first) = measured_scan(&app, &clin, pid, &id, 42, 1000.0, 20.0).await;
    let (_, bad) = measured_scan(&app, &clin, pid, &id, 35, 4000.0, 20.0).await;
    let (_, second) = measured_scan(&app, &clin, pid, &id, 28, 1200.0, 20.0).await;
    let (_, _last) = measured_scan(&app, &clin, pid, &id, 0, 600.0, 20.0).await;
    let mark = |m: Uuid, body: Value| {
        let (app, token, id) = (&app, clin.token.clone(), id.clone());
        async move { patch(app, &token, &format!("/v1/wounds/{id}/assessments/{m}"), None, &body).await }
    };
    let res = mark(bad, json!({"excluded": true})).await;
    assert_eq!(res.status(), 400, "an exclusion needs its reason");
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["field"], "reason");
    let res = mark(bad, json!({"excluded": true, "reason": "the phone saw the dressing"})).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["role"], "excluded");
    assert_eq!(v["exclusion"]["reason"], "the phone saw the dressing");
    assert_eq!(v["exclusion"]["excluded_by"], clin.id.to_string());
    assert_eq!(mark(bad, json!({"baseline": true})).await.status(), 409, "an excluded assessment is no baseline");

    let t: Value = app.get_auth(&format!("/v1/wounds/{id}/trajectory"), &clin.token).await.json().await.unwrap();
    assert_eq!(t["metrics"]["baseline_id"], first.to_string());
    assert_eq!(t["metrics"]["points_used"], 3, "the excluded scan is kept but does not count");
    assert_eq!(t["points"].as_array().map(Vec::len), Some(4));

    let res = mark(second, json!({"baseline": true})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["role"], "baseline");
    let wound: Value = app.get_auth(&format!("/v1/wounds/{id}"), &clin.token).await.json().await.unwrap();
    assert_eq!(wound["baseline_assessment_id"], second.to_string());
    assert_eq!(wound["version"], 2, "the baseline moves the wound's version on");
    let t: Value = app.get_auth(&format!("/v1/wounds/{id}/trajectory"), &clin.token).await.json().await.unwrap();
    assert_eq!(t["metrics"]["baseline_id"], second.to_string());
    assert_eq!(t["points"][0]["role"], "before_baseline");
    // 1200 → 600 in four weeks: 50 %.
    assert!(
        (t["metrics"]["four_week"]["reduction_pct"]["value"].as_f64().unwrap() - 50.0).abs() < 1e-6,
        "{}",
        t["metrics"]
    );

    // Lifted exclusions count again; the rows were kept.
    assert_eq!(mark(bad, json!({"excluded": false})).await.status(), 200);
    let rows = audit_actions(&app, &id).await;
    for action in ["wound.assessment.exclude", "wound.assessment.baseline", "wound.assessment.include"] {
        assert!(rows.iter().any(|(a, o)| a == action && o == "success"), "{action} audited: {rows:?}");
    }
    // An assessment of another wound is not this wound's.
    let other = new_wound(&app, &clin, pid, sacrum()).await;
    let (_, foreign) = measured_scan(&app, &clin, pid, other["id"].as_str().unwrap(), 1, 300.0, 10.0).await;
    assert_eq!(mark(foreign, json!({"baseline": true})).await.status(), 404);
}

#[actix_web::test]
async fn a_scan_names_its_patients_wound_or_creates_one() {
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    let (clin2, other, other_pid) = clinician_and_patient(&app).await;
    let theirs = new_wound(&app, &clin2, other_pid, heel()).await;
    let _ = other;
    // Another patient's wound, or no wound at all: the same refusal (no existence oracle).
    for wound_id in [theirs["id"].as_str().unwrap().to_string(), Uuid::now_v7().to_string()] {
        let res = app
            .post_auth("/v1/scans", &clin.token, &json!({"patient_id": pid, "body_site": "heel", "wound_id": wound_id}))
            .await;
        assert_eq!(res.status(), 409);
        let e: Value = res.json().await.unwrap();
        assert_eq!(
            (e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (Some("wound_of_another_patient"), Some("wound_id"))
        );
    }
    // A new wound with the scan.
    let res = app
        .post_auth("/v1/scans", &clin.token, &json!({"patient_id": pid, "body_site": "sacrum", "wound": sacrum()}))
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let scan: Value = res.json().await.unwrap();
    let made: Value = app
        .get_auth(&format!("/v1/wounds/{}", scan["wound_id"].as_str().unwrap()), &clin.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (made["aetiology"].as_str(), made["patient_id"].as_str()),
        (Some("pressure"), Some(pid.to_string().as_str()))
    );
    // Both at once is refused; a patient may not create a wound.
    let res = app
        .post_auth(
            "/v1/scans",
            &clin.token,
            &json!({"patient_id": pid, "body_site": "x", "wound": sacrum(), "wound_id": made["id"]}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .post_auth("/v1/scans", &patient.token, &json!({"patient_id": pid, "body_site": "x", "wound": sacrum()}))
        .await;
    assert_eq!(res.status(), 403);
    // Without either, as before wounds: the wound whose site reads the body site, else a new one.
    let a: Value = app
        .post_auth("/v1/scans", &patient.token, &json!({"patient_id": pid, "body_site": "left shin"}))
        .await
        .json()
        .await
        .unwrap();
    let b: Value = app
        .post_auth("/v1/scans", &patient.token, &json!({"patient_id": pid, "body_site": "left shin"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(a["wound_id"].is_string());
    assert_eq!(a["wound_id"], b["wound_id"]);
    assert_eq!(a["body_site"], "left shin", "the free-text site stays");
    let list: Value = app.get_auth(&format!("/v1/patients/{pid}/wounds"), &clin.token).await.json().await.unwrap();
    assert_eq!(list["wounds"].as_array().map(Vec::len), Some(2), "{list}");
}

/// The migration that gives scans their wound moves the scans made before it into one wound
/// per (patient, body site).
#[actix_web::test]
async fn the_scan_wound_migration_groups_older_scans_by_patient_and_site() {
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    for site in ["left heel", "left heel", "sacrum"] {
        let res = app.post_auth("/v1/scans", &patient.token, &json!({"patient_id": pid, "body_site": site})).await;
        assert_eq!(res.status(), 201);
    }
    let migration = coherency::store::pg::MIGRATOR
        .iter()
        .find(|m| m.description.contains("scan wounds"))
        .expect("the migration")
        .version;
    sqlx::query("ALTER TABLE scans DROP COLUMN wound_id").execute(&app.pg).await.unwrap();
    sqlx::query("DELETE FROM wounds").execute(&app.pg).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1").bind(migration).execute(&app.pg).await.unwrap();
    coherency::store::pg::MIGRATOR.run(&app.pg).await.expect("the migration applies to existing rows");
    let rows: Vec<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT body_site, wound_id FROM scans ORDER BY body_site").fetch_all(&app.pg).await.unwrap();
    assert!(rows.iter().all(|r| r.1.is_some()));
    assert_eq!(rows[0].1, rows[1].1, "both heel scans in one wound");
    assert_ne!(rows[0].1, rows[2].1);
    let list: Value = app.get_auth(&format!("/v1/patients/{pid}/wounds"), &clin.token).await.json().await.unwrap();
    let sites: Vec<&str> =
        list["wounds"].as_array().unwrap().iter().map(|w| w["site_display"].as_str().unwrap()).collect();
    assert_eq!(sites.len(), 2);
    assert!(sites.contains(&"left heel") && sites.contains(&"sacrum"));
    assert!(list["wounds"].as_array().unwrap().iter().all(|w| w["aetiology"] == "other" && w["status"] == "open"));
}

#[actix_web::test]
async fn a_status_change_is_dated_and_kept_in_the_history() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let today = Utc::now().date_naive();
    let mut body = heel();
    body["status_date"] = json!((today - Duration::days(10)).to_string());
    let w = new_wound(&app, &clin, pid, body).await;
    let path = format!("/v1/wounds/{}", w["id"].as_str().unwrap());
    for (change, field) in [
        (json!({"status": "healed", "status_date": (today - Duration::days(11)).to_string()}), "status_date"),
        (json!({"status": "healed", "status_date": (today + Duration::days(2)).to_string()}), "status_date"),
        (json!({"status": null}), "status"),
        (json!({"aetiology": null}), "aetiology"),
    ] {
        let res = patch(&app, &clin.token, &path, Some("\"1\""), &change).await;
        assert_eq!(res.status(), 400, "{change}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["field"], field, "{change}");
    }
    // `status_date` alone corrects the current status's date; a weak ETag matches too.
    let corrected = (today - Duration::days(9)).to_string();
    let res = patch(&app, &clin.token, &path, Some("W/\"1\""), &json!({"status_date": corrected})).await;
    assert_eq!(res.status(), 200);
    let w: Value = res.json().await.unwrap();
    assert_eq!(w["status_date"], corrected.as_str());
    assert_eq!(w["status_history"][0]["date"], corrected.as_str());
    let res = patch(&app, &clin.token, &path, Some("\"2\""), &json!({"status": "healed"})).await;
    let w: Value = res.json().await.unwrap();
    assert_eq!(w["status"], "healed");
    assert_eq!(w["status_date"], today.to_string().as_str(), "a new status is dated today by default");
    let history: Vec<(&str, &str)> = w["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["status"].as_str().unwrap(), h["date"].as_str().unwrap()))
        .collect();
    assert_eq!(history, [("open", corrected.as_str()), ("healed", today.to_string().as_str())]);
}
