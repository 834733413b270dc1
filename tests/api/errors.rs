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
