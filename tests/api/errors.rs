use serde_json::Value;

use crate::helpers::spawn_app;

fn assert_envelope(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"]["request_id"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[actix_web::test]
async fn an_unknown_path_is_404_with_the_error_envelope() {
    let app = spawn_app().await;
    let res = app.get("/no/such/thing").await;
    assert_eq!(res.status(), 404);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_envelope(&body, "not_found");
    assert_eq!(body["error"]["request_id"], id);
}

#[actix_web::test]
async fn a_wrong_method_is_405_with_the_error_envelope() {
    let app = spawn_app().await;
    let res = app.client.delete(app.url("/livez")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_envelope(&res.json().await.unwrap(), "method_not_allowed");
}

#[actix_web::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let big = format!("{{\"email\":\"{}\"}}", "a".repeat(1024 * 1024 + 10));
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_envelope(&res.json().await.unwrap(), "payload_too_large");
}

#[actix_web::test]
async fn a_non_json_content_type_is_415() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_envelope(&res.json().await.unwrap(), "unsupported_media_type");
}

#[actix_web::test]
async fn malformed_json_is_400_malformed_json() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_envelope(&res.json().await.unwrap(), "malformed_json");
}

#[actix_web::test]
async fn an_unknown_field_is_400_naming_the_field() {
    let app = spawn_app().await;
    let res = app
        .post_json("/v1/auth/login", &serde_json::json!({"email": "a@b.co", "password": "x", "is_admin": true}))
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_envelope(&body, "unknown_field");
    assert_eq!(body["error"]["field"], "is_admin");
}

#[actix_web::test]
async fn a_bad_value_is_400_naming_the_field() {
    let app = spawn_app().await;
    let res = app
        .post_json(
            "/v1/auth/register",
            &serde_json::json!({"email": "x@example.test", "password": "long enough passphrase", "given_name": "A", "family_name": "B", "birth_date": "2001-02-30"}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["field"], "birth_date", "{body}");
}
