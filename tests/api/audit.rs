//! The audit trail is append-only in the database, hash-chained, and `coherency audit verify`
//! names the first broken link.

use std::process::Command;

use serde_json::json;

use crate::helpers::spawn_app;

fn verify(app: &crate::helpers::TestApp) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coherency"))
        .args(["audit", "verify"])
        .env("COHERENCY_DATABASE_URL", app.config.database_url.expose())
        .env("COHERENCY_LOG_LEVEL", "error")
        .output()
        .unwrap()
}

#[actix_web::test]
async fn audit_verify_detects_a_row_edited_directly_in_the_database() {
    let app = spawn_app().await;
    let p = app.patient().await;
    for _ in 0..3 {
        app.login(&p.email, "wrong password!!").await;
    }
    let out = verify(&app);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    let err = sqlx::query("UPDATE audit_log SET outcome = 'success' WHERE id = 2").execute(&app.pg).await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(sqlx::query("DELETE FROM audit_log WHERE id = 2").execute(&app.pg).await.is_err());

    // Someone with superuser rights goes around the trigger.
    let mut tx = app.pg.begin().await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update").execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE audit_log SET outcome = 'success' WHERE id = 3").execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let out = verify(&app);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("row 3"), "{err}");
}

#[actix_web::test]
async fn auth_events_are_audited_without_secrets() {
    let app = spawn_app().await;
    let p = app.patient().await;
    app.login(&p.email, "not the password").await;
    app.post_auth("/v1/auth/logout", &p.token, &json!({})).await;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT action, outcome, details FROM audit_log ORDER BY id").fetch_all(&app.pg).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for want in ["account.register", "auth.login", "auth.logout"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    assert!(rows.iter().any(|r| r.0 == "auth.login" && r.1 == "failure"));
    for r in &rows {
        assert!(!r.2.contains(&p.email) && !r.2.contains("not the password"), "audit details leak: {}", r.2);
    }
    let ip: Option<String> = sqlx::query_scalar("SELECT ip FROM audit_log WHERE action = 'auth.login' LIMIT 1")
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
}
