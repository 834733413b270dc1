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

#[actix_web::test]
async fn a_caller_over_its_request_rate_gets_429_and_others_do_not() {
    let app = crate::helpers::spawn_app_with(|mut c| {
        c.api_rate_per_sec = 1;
        c.api_rate_burst = 5;
        c
    })
    .await;
    let p = app.patient().await; // registration and login spent the address's first two
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.get_auth("/v1/me", &p.token).await.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[200; 5], "the burst is served: {statuses:?}");
    assert_eq!(statuses[7], 429, "{statuses:?}");
    let res = app.get_auth("/v1/me", &p.token).await;
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_envelope(&res.json().await.unwrap(), "rate_limited");
    // Another signed-in caller has its own bucket, and probes are never limited.
    let other = app.staff(coherency::auth::Role::Clinician, false).await;
    assert_eq!(app.get_auth("/v1/me", &other.token).await.status(), 200);
    for _ in 0..20 {
        assert_eq!(app.get("/livez").await.status(), 200);
    }
}
