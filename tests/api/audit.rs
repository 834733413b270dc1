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

    let err = sqlx::query!("UPDATE audit_log SET outcome = 'success' WHERE id = 2").execute(&app.pg).await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(sqlx::query!("DELETE FROM audit_log WHERE id = 2").execute(&app.pg).await.is_err());

    // Someone with superuser rights goes around the trigger.
    let mut tx = app.pg.begin().await.unwrap();
    sqlx::query!("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update").execute(&mut *tx).await.unwrap();
    sqlx::query!("UPDATE audit_log SET outcome = 'success' WHERE id = 3").execute(&mut *tx).await.unwrap();
    sqlx::query!("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update").execute(&mut *tx).await.unwrap();
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
    let rows =
        sqlx::query!("SELECT action, outcome, details FROM audit_log ORDER BY id").fetch_all(&app.pg).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    for want in ["account.register", "auth.login", "auth.logout"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    assert!(rows.iter().any(|r| r.action == "auth.login" && r.outcome == "failure"));
    for r in &rows {
        assert!(
            !r.details.contains(&p.email) && !r.details.contains("not the password"),
            "audit details leak: {}",
            r.details
        );
    }
    let ip: Option<String> = sqlx::query_scalar!("SELECT ip FROM audit_log WHERE action = 'auth.login' LIMIT 1")
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
}

/// Appends from many requests at once, on two nodes, are merged into shared transactions
/// (group commit) yet every request still gets its own row, in one unbroken chain.
#[actix_web::test]
async fn concurrent_audited_requests_on_two_nodes_keep_one_intact_chain() {
    let app = crate::helpers::spawn_app_with(|mut c| {
        c.api_rate_per_sec = 100_000;
        c.api_rate_burst = 100_000;
        c
    })
    .await;
    let p = app.patient().await;
    let pid = p.patient_id.unwrap();
    let unlimited = [("COHERENCY_API_RATE_PER_SEC", "100000"), ("COHERENCY_API_RATE_BURST", "100000")];
    let other = crate::helpers::NodeProcess::start(&app.config, &unlimited);
    let bases = [app.url(""), other.url("")];
    let before: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'patient.read'"#)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    const N: usize = 160;
    let mut calls = Vec::new();
    for i in 0..N {
        let (client, url, token) = (app.client.clone(), format!("{}/v1/patients/{pid}", bases[i % 2]), p.token.clone());
        calls.push(tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.unwrap().status() }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    // Every answered read is on the record by the time it was answered.
    let rows = sqlx::query!("SELECT id, request_id FROM audit_log WHERE action = 'patient.read' ORDER BY id")
        .fetch_all(&app.pg)
        .await
        .unwrap();
    assert_eq!(rows.len() as i64 - before, N as i64);
    let distinct: std::collections::HashSet<_> = rows.iter().filter_map(|r| r.request_id.clone()).collect();
    assert_eq!(distinct.len(), rows.len(), "one row per request");
    let out = verify(&app);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    // Some appends shared a transaction (rows of one transaction share its xmin).
    let shared: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM (SELECT xmin::text FROM audit_log GROUP BY xmin::text HAVING count(*) > 1) t"#,
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert!(shared > 0, "no two appends shared a transaction");
}
