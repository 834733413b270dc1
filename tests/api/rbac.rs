//! The role × route matrix, generated from the OpenAPI document (every route lists the one
//! permission it requires as its bearer scope) and the permission table in code.

use std::time::Duration;

use coherency::auth::{Permission, Role};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, User, PASSWORD};

/// Routes whose call ends the caller's session; the test signs in again after them.
const ENDS_SESSION: &[&str] = &["/v1/auth/logout", "/v1/auth/logout-all"];

async fn relogin(app: &TestApp, u: &User) -> User {
    let mut body = json!({"email": u.email, "password": PASSWORD});
    if let Some(secret) = &u.totp_secret {
        app.clock.advance(Duration::from_secs(31));
        body["totp_code"] = json!(coherency::auth::totp::code_at(secret, app.clock.now()).unwrap());
    }
    let res = app.post_json("/v1/auth/login", &body).await;
    assert_eq!(res.status(), 200, "re-login: {}", res.text().await.unwrap_or_default());
    let v: Value = res.json().await.unwrap();
    User {
        token: v["access_token"].as_str().unwrap().into(),
        refresh: v["refresh_token"].as_str().unwrap().into(),
        ..u.clone()
    }
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = app.url(&path.replace("{id}", &uuid::Uuid::new_v4().to_string()));
    let mut req = match method {
        "get" => app.client.get(url),
        "post" => app.client.post(url).json(&json!({})),
        "put" => app.client.put(url).json(&json!({})),
        "patch" => app.client.patch(url).json(&json!({})),
        "delete" => app.client.delete(url),
        other => panic!("method {other}"),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn every_route_allows_exactly_the_roles_its_permission_names() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut users = [
        (Role::Patient, app.patient().await),
        (Role::Clinician, app.staff(Role::Clinician, true).await),
        (Role::Admin, app.staff(Role::Admin, true).await),
    ];
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let scopes: Vec<String> = op["security"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s["bearer"].as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if !path.starts_with("/v1/") {
                continue;
            }
            let public = ["/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh", "/v1/capture/redeem"]
                .contains(&path.as_str());
            if public {
                assert!(scopes.is_empty(), "{path} is public but lists a scope");
                continue;
            }
            assert_eq!(scopes.len(), 1, "{method} {path} must name exactly one permission");
            let perm =
                Permission::parse(&scopes[0]).unwrap_or_else(|| panic!("{path}: unknown permission {}", scopes[0]));
            let (anon, body) = call(&app, method, path, None).await;
            assert_eq!(anon, 401, "anonymous {method} {path}: {body}");
            for (role, user) in users.iter_mut() {
                let (status, body) = call(&app, method, path, Some(&user.token)).await;
                let allowed = perm.roles().contains(role);
                if allowed {
                    assert!(
                        !(status == 403 && body["error"]["code"] == "forbidden"),
                        "{role:?} should reach {method} {path}: {status} {body}"
                    );
                    assert_ne!(status, 401, "{role:?} {method} {path}: {body}");
                } else {
                    assert_eq!(status, 403, "{role:?} must not reach {method} {path}: {body}");
                    assert_eq!(body["error"]["code"], "forbidden");
                }
                if ENDS_SESSION.contains(&path.as_str()) {
                    *user = relogin(&app, user).await;
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} cells checked");
    let denied: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'access.denied'"#)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert!(denied > 0, "denials are audited");
}

#[test]
fn every_permission_is_granted_to_some_role_and_admins_hold_all_but_break_glass() {
    for p in Permission::ALL {
        assert!(!p.roles().is_empty(), "{p:?}");
        if *p != Permission::EmergencyAccess {
            assert!(p.roles().contains(&Role::Admin), "{p:?}");
        }
    }
}

/// The routes a staff member reaches before MFA is enrolled and verified in the session: who
/// am I, enrol, confirm, and ending one's own sessions.
const MFA_ENROLMENT: &[(&str, &str)] = &[
    ("get", "/v1/me"),
    ("post", "/v1/me/mfa/totp"),
    ("post", "/v1/me/mfa/totp/confirm"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/logout-all"),
];

/// The catalogue code of an error answer: the envelope's, or a FHIR `OperationOutcome`'s.
fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str().or_else(|| body["issue"][0]["details"]["coding"][0]["code"].as_str())
}

#[actix_web::test]
async fn staff_without_verified_mfa_reach_nothing_but_the_enrolment_routes() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut users = [
        (Role::Clinician, app.staff(Role::Clinician, false).await),
        (Role::Admin, app.staff(Role::Admin, false).await),
    ];
    let mut gated = 0;
    let mut exempt_seen = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["security"].as_array().is_none_or(|s| s.is_empty()) {
                continue; // public: login, register, refresh, health, the spec itself
            }
            let exempt = MFA_ENROLMENT.contains(&(method.as_str(), path.as_str()));
            for (role, user) in users.iter_mut() {
                let (status, body) = call(&app, method, path, Some(&user.token)).await;
                let code = error_code(&body);
                if exempt {
                    assert!(
                        !(status == 403 && code == Some("mfa_required")),
                        "{role:?} must reach {method} {path} to enrol: {status} {body}"
                    );
                    exempt_seen.push((method.clone(), path.clone()));
                } else {
                    assert_eq!(
                        (status, code),
                        (403, Some("mfa_required")),
                        "unenrolled {role:?} reached {method} {path}: {body}"
                    );
                    gated += 1;
                }
                if ENDS_SESSION.contains(&path.as_str()) {
                    *user = relogin(&app, user).await;
                }
            }
        }
    }
    for route in MFA_ENROLMENT {
        assert!(
            exempt_seen.iter().any(|(m, p)| (m.as_str(), p.as_str()) == *route),
            "{route:?} is not in the OpenAPI document"
        );
    }
    assert!(gated >= 100, "only {gated} staff cells checked");
    for path in ["/v1/ws", "/v1/dashboard/ws", "/v1/auth/ws-ticket"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented, so the walk above checked it");
    }
    // Every refusal is on the audit trail with its reason.
    let denied: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'access.denied' AND details::jsonb->>'reason' = 'mfa_required'"#,
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(denied, gated as i64, "each refusal audited");

    // Enrolled and verified, the same staff reach their routes.
    let admin = app.staff(Role::Admin, true).await;
    let res = app
        .post_auth(
            "/v1/admin/users",
            &admin.token,
            &json!({"email": "new-admin@clinic.test", "password": PASSWORD, "display_name": "New", "role": "admin"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

#[actix_web::test]
async fn an_admin_without_mfa_cannot_create_admins_disable_users_or_revoke_sessions() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, false).await;
    let victim = app.staff(Role::Clinician, true).await;
    let create = json!({"email": "sneaky@clinic.test", "password": PASSWORD, "display_name": "S", "role": "admin"});
    for (path, body) in [
        ("/v1/admin/users".to_string(), create),
        (format!("/v1/admin/users/{}/disable", victim.id), json!({})),
        (format!("/v1/admin/users/{}/revoke-sessions", victim.id), json!({})),
    ] {
        let res = app.post_auth(&path, &admin.token, &body).await;
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "mfa_required", "{path}");
    }
    let made: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users WHERE email = 'sneaky@clinic.test'"#)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(made, 0, "no admin created");
    assert_eq!(app.get_auth("/v1/me", &victim.token).await.status(), 200, "the victim's session lives on");
}
