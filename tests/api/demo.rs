use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[actix_web::test]
async fn seed_demo_is_idempotent_and_its_logins_work() {
    let app = spawn_app().await;
    coherency::demo::seed(&app.state).await.unwrap();
    let logins = coherency::demo::seed(&app.state).await.unwrap();
    let users: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#).fetch_one(&app.pg).await.unwrap();
    assert_eq!(users, 3);
    let mut patient_token = None;
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
    }
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
        .bearer_auth(patient_token.expect("the patient logged in"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert!(v["slots"].as_array().unwrap().len() >= 5 * 8, "a week of weekday hours: {v}");
}
