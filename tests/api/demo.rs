use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn seed_demo_is_idempotent_and_its_logins_work() {
    let app = spawn_app().await;
    coherency::demo::seed(&app.state).await.unwrap();
    let logins = coherency::demo::seed(&app.state).await.unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pg).await.unwrap();
    assert_eq!(users, 3);
    for l in logins {
        let mut body = json!({"email": l.email, "password": l.password});
        if let Some(secret) = &l.totp_secret {
            body["totp_code"] = json!(coherency::auth::totp::code_at(secret, app.clock.now()).unwrap());
        }
        let res = app.post_json("/v1/auth/login", &body).await;
        assert_eq!(res.status(), 200, "{}: {}", l.email, res.text().await.unwrap());
    }
}
