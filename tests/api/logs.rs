//! No PHI in logs: query strings (names, birth dates in searches) never reach a log line.

use coherency::auth::Role;
use serde_json::json;

use crate::helpers::{spawn_app, NodeProcess};

#[actix_web::test]
async fn a_searched_name_and_birth_date_never_reach_the_logs() {
    let app = spawn_app().await;
    let node = NodeProcess::start(&app.config, &[("COHERENCY_LOG_LEVEL", "debug")]);
    let admin = app.staff(Role::Admin, true).await;
    let name = format!("Zq{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let res = app
        .client
        .post(node.url("/v1/patients"))
        .bearer_auth(&admin.token)
        .json(&json!({"given_name": "Log", "family_name": name, "birth_date": "1961-07-13"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for q in [format!("name={name}"), "birth_date=1961-07-13".to_string(), format!("name={name}&limit=notanumber")] {
        let res =
            app.client.get(node.url(&format!("/v1/patients?{q}"))).bearer_auth(&admin.token).send().await.unwrap();
        assert!(res.status().is_success() || res.status() == 400, "{q}: {}", res.status());
    }
    let res =
        app.client.get(node.url(&format!("/fhir/Patient?name={name}"))).bearer_auth(&admin.token).send().await.unwrap();
    assert!(res.status().is_success());
    let logs = node.log.lock().unwrap().join("\n");
    assert!(logs.contains("/v1/patients"), "requests were logged by route");
    assert!(!logs.contains(&name), "a searched name reached the logs");
    assert!(!logs.contains("1961-07-13"), "a birth date reached the logs");
}
