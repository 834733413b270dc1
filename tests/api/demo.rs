use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[actix_web::test]
async fn seed_demo_is_idempotent_and_its_logins_work() {
    let app = spawn_app().await;
    coherency::demo::seed(&app.state).await.unwrap();
    let logins = coherency::demo::seed(&app.state).await.unwrap();
    let users: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#).fetch_one(&app.pg).await.unwrap();
    assert_eq!(users, 3);
    let wounds: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM wounds"#).fetch_one(&app.pg).await.unwrap();
    let scans: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM scans"#).fetch_one(&app.pg).await.unwrap();
    // The patient with a login and the six demo records: two wounds each, with 8 and 7
    // assessments, seeded once.
    assert_eq!((wounds, scans), (14, 105), "two demo wounds per patient, seeded once");
    let mut patient_token = None;
    let mut clinician_token = None;
    for l in logins {
        let mut body = json!({"email": l.email, "password": l.password});
        if let Some(secret) = &l.totp_secret {
            body["totp_code"] = json!(coherency::auth::totp::code_at(secret, app.clock.now()).unwrap());
        }
        let res = app.post_json("/v1/auth/login", &body).await;
        assert_eq!(res.status(), 200, "{}", l.email);
        let v: Value = res.json().await.unwrap();
        if l.role == coherency::auth::Role::Patient {
            patient_token = v["access_token"].as_str().map(str::to_string);
        }
        if l.role == coherency::auth::Role::Clinician {
            clinician_token = v["access_token"].as_str().map(str::to_string);
        }
    }
    // Every demo patient has scan consent on file, once: the clinician can ask for a scan at once.
    let consents: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM patient_entries WHERE kind = 'consent' AND data->>'scope' = 'scan_capture'"#
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(consents, 7, "one scan consent per demo patient, seeded once");
    let demo_patient: uuid::Uuid =
        sqlx::query_scalar!("SELECT id FROM patients WHERE given_name = 'Demo' AND family_name = 'Patient'")
            .fetch_one(&app.pg)
            .await
            .unwrap();
    let res = app
        .post_auth(
            "/v1/scans",
            clinician_token.as_deref().expect("the clinician logged in"),
            &json!({"patient_id": demo_patient, "body_site": "left heel"}),
        )
        .await;
    assert_eq!(res.status(), 201, "a scan of the demo patient: {}", res.text().await.unwrap_or_default());
    // The demo patient can book the demo clinician: weekday hours and two appointment types,
    // seeded once however often seed-demo runs.
    let row = sqlx::query!(
        r#"SELECT clinician_id, min(id::text)::uuid AS "ty!", count(*) AS "types!" FROM appointment_types GROUP BY clinician_id"#,
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    let (clinician, ty, types) = (row.clinician_id, row.ty, row.types);
    assert_eq!(types, 2);
    let now = app.clock.now();
    let q = [
        ("clinician", clinician.to_string()),
        ("type", ty.to_string()),
        ("from", (now + chrono::Duration::days(1)).to_rfc3339()),
        ("to", (now + chrono::Duration::days(8)).to_rfc3339()),
    ];
    let res = app
        .client
        .get(app.url("/v1/slots"))
        .query(&q)
        .bearer_auth(patient_token.as_deref().expect("the patient logged in"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert!(v["slots"].as_array().unwrap().len() >= 5 * 8, "a week of weekday hours: {v}");
}

/// Each wound's (site, four-week verdict, projection state), sorted by site.
async fn wound_verdicts(
    app: &crate::helpers::TestApp,
    token: &str,
    patient: uuid::Uuid,
) -> Vec<(String, String, String)> {
    let get = |path: String| {
        let req = app.client.get(app.url(&path)).bearer_auth(token);
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            res.json::<Value>().await.unwrap()
        }
    };
    let list = get(format!("/v1/patients/{patient}/wounds")).await;
    let wounds = list["wounds"].as_array().unwrap();
    assert_eq!(wounds.len(), 2, "{list}");
    let mut verdicts = vec![];
    for w in wounds {
        let t = get(format!("/v1/wounds/{}/trajectory", w["id"].as_str().unwrap())).await;
        let n = t["points"].as_array().unwrap().len();
        assert!((6..=10).contains(&n), "6–10 assessments: {n}");
        let first = t["points"][0]["taken_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let last = t["points"][n - 1]["taken_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert!((last - first).num_days() >= 28, "several weeks of assessments");
        let verdict = t["metrics"]["four_week"]["verdict"].as_str().unwrap().to_string();
        let projection = t["metrics"]["projection"]["state"].as_str().unwrap().to_string();
        verdicts.push((w["site_display"].as_str().unwrap().to_string(), verdict, projection));
    }
    verdicts.sort();
    verdicts
}

#[actix_web::test]
async fn the_demo_patient_has_a_wound_on_track_and_a_stalled_one() {
    let app = spawn_app().await;
    coherency::demo::seed(&app.state).await.unwrap();
    let logins = coherency::demo::seed(&app.state).await.unwrap();
    let l = logins.iter().find(|l| l.role == coherency::auth::Role::Patient).unwrap();
    let res = app.post_json("/v1/auth/login", &json!({"email": l.email, "password": l.password})).await;
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let pid: uuid::Uuid = sqlx::query_scalar!(
        "SELECT p.id FROM patients p JOIN users u ON u.id = p.user_id WHERE u.email = 'patient@demo.coherency.test'"
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    let verdicts = wound_verdicts(&app, &token, pid).await;
    assert_eq!(verdicts[0].0, "Left heel");
    assert_eq!(verdicts[0].1, "on_track", "{verdicts:?}");
    assert_eq!(verdicts[0].2, "closing", "{verdicts:?}");
    assert_eq!(verdicts[1].0, "Sacrum");
    assert_eq!(verdicts[1].1, "not_on_track", "{verdicts:?}");

    // The demo clinician sees the same two kinds of wound on every demo patient record.
    let c = logins.iter().find(|l| l.role == coherency::auth::Role::Clinician).unwrap();
    let code = coherency::auth::totp::code_at(c.totp_secret.as_deref().unwrap(), app.clock.now()).unwrap();
    let res =
        app.post_json("/v1/auth/login", &json!({"email": c.email, "password": c.password, "totp_code": code})).await;
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let records: Vec<uuid::Uuid> = sqlx::query_scalar!("SELECT id FROM patients WHERE mrn LIKE 'DEMO-%' ORDER BY mrn")
        .fetch_all(&app.pg)
        .await
        .unwrap();
    assert_eq!(records.len(), 6);
    for record in records {
        let v = wound_verdicts(&app, &token, record).await;
        assert!(v[0].0.ends_with(" heel") && v[0].1 == "on_track" && v[0].2 == "closing", "{v:?}");
        assert_eq!((v[1].0.as_str(), v[1].1.as_str()), ("Sacrum", "not_on_track"), "{v:?}");
    }
}

/// Issue #26: the demo patient's newest heel scan shows colour: its GLB has `COLOR_0` and its
/// automatic measurement a tissue composition led by granulation; the other scans are rows
/// without a mesh and say `not_analysed`.
#[actix_web::test]
async fn the_demo_patients_newest_heel_scan_carries_colour_and_tissue() {
    let app = spawn_app().await;
    let logins = coherency::demo::seed(&app.state).await.unwrap();
    let l = logins.iter().find(|l| l.role == coherency::auth::Role::Patient).unwrap();
    let res = app.post_json("/v1/auth/login", &json!({"email": l.email, "password": l.password})).await;
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let scans: Vec<uuid::Uuid> = sqlx::query_scalar!(
        "SELECT s.id FROM scans s JOIN patients p ON p.id = s.patient_id JOIN users u ON u.id = p.user_id
          WHERE u.email = 'patient@demo.coherency.test' AND s.body_site = 'Left heel' ORDER BY s.created_at DESC"
    )
    .fetch_all(&app.pg)
    .await
    .unwrap();
    let newest: Value =
        app.get_auth(&format!("/v1/scans/{}/measurements", scans[0]), &token).await.json().await.unwrap();
    let tissue = &newest["measurements"][0]["tissue"];
    assert_eq!(tissue["shares"][0]["class"], "granulation", "{newest}");
    let shares = tissue["shares"].as_array().unwrap();
    assert!(shares.iter().all(|s| s["percent"].as_f64() <= shares[0]["percent"].as_f64()), "{tissue}");
    let glb = app.get_auth(&format!("/v1/scans/{}/mesh?format=glb", scans[0]), &token).await.bytes().await.unwrap();
    let (json, _) = crate::colour::glb_chunks(&glb);
    assert!(json["meshes"][0]["primitives"][0]["attributes"].get("COLOR_0").is_some(), "{json}");
    let older: Value =
        app.get_auth(&format!("/v1/scans/{}/measurements", scans[1]), &token).await.json().await.unwrap();
    assert!(older["measurements"][0]["tissue"].is_null(), "{older}");
    assert_eq!(older["measurements"][0]["tissue_unavailable"], "not_analysed", "{older}");
}
