//! Capture links end to end: during a consult a scan is asked for, a link (QR code) for it is
//! made, the patient's phone redeems the link's code and streams the scan over the real
//! websocket to a measurement — and the phone's session reaches that scan's stream and
//! nothing else. Also: single use, expiry, a replay revoking what the code gave, who may make
//! a link and for which scans, the per-address limit, the page a browser shows, the app-link
//! files, and the code never reaching a log line or the audit trail.
//!
//! The helpers at the top are for other tests too (the browser harness: a page shows a link,
//! [`phone_opens_link`] plays the phone).

use std::time::Duration;

use coherency::auth::Role;
use coherency_protocol::client::{ClientConfig, ClientError, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{decode_server, encode_client, ClientMsg, Hello, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, NodeProcess, TestApp, User};
use crate::scan_stream::{consent, create_scan, patient_with_scan, scan_status, stream};

/// A capture session as the phone receives it.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub scan_id: ScanId,
    pub access_token: String,
    pub body: Value,
}

/// `POST /v1/scans/{scan}/capture-link` as `token`: the status and the answer.
pub async fn try_capture_link(app: &TestApp, token: &str, scan: ScanId) -> (u16, Value) {
    let res = app.post_auth(&format!("/v1/scans/{scan}/capture-link"), token, &json!({})).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A capture link for `scan`, asked for as `token`; panics unless one is made. Answers the
/// link's URL.
pub async fn capture_link(app: &TestApp, token: &str, scan: ScanId) -> String {
    let (status, body) = try_capture_link(app, token, scan).await;
    assert_eq!(status, 201, "capture link: {body}");
    body["url"].as_str().expect("url").to_string()
}

/// The code in a capture link's fragment (`…/capture#code=<code>`).
pub fn code_of(url: &str) -> &str {
    url.split_once("#code=").map(|(_, c)| c).unwrap_or_else(|| panic!("no code in {url}"))
}

/// `POST /v1/capture/redeem` with `code` and no bearer, at `base` (an app or a node).
pub async fn try_redeem_at(client: &reqwest::Client, base: &str, code: &str) -> (u16, Value) {
    let res = client.post(format!("{base}/v1/capture/redeem")).json(&json!({ "code": code })).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn try_redeem(app: &TestApp, code: &str) -> (u16, Value) {
    try_redeem_at(&app.client, &app.address, code).await
}

/// Redeems `code` as the phone does; panics unless it works.
pub async fn redeem(app: &TestApp, code: &str) -> Redeemed {
    let (status, body) = try_redeem(app, code).await;
    assert_eq!(status, 200, "redeem: {body}");
    Redeemed {
        scan_id: body["scan_id"].as_str().unwrap().parse().unwrap(),
        access_token: body["access_token"].as_str().unwrap().to_string(),
        body,
    }
}

/// The phone opening a capture link: redeems its code, streams a phantom wound scan into the
/// link's scan with the capture session and waits until the scan is complete. Answers the scan.
pub async fn phone_opens_link(app: &TestApp, url: &str) -> ScanId {
    let phone = redeem(app, code_of(url)).await;
    crate::dashboard_browser::stream_scan_with_token(app, &phone.access_token, phone.scan_id, Duration::ZERO).await;
    phone.scan_id
}

fn code_in(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// A well-formed code no server issued.
fn unknown_code() -> String {
    use base64::Engine;
    let raw: [u8; 32] = rand::random();
    format!("chc_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Opens the scan's stream with a socket ticket (as a browser would) and reads `welcome`.
async fn welcomed_with_ticket(app: &TestApp, ticket: &str, scan: ScanId) {
    let url = format!("ws://127.0.0.1:{}/v1/scans/{scan}/stream?ticket={ticket}", app.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("upgrade with the ticket");
    let hello = ClientMsg::Hello(Hello { version: 1, scan_id: scan, resume_from: None, agent: None });
    ws.send(Message::Binary(encode_client(&hello).into())).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(15), ws.next()).await.unwrap().unwrap().unwrap();
    let Message::Binary(b) = first else { panic!("expected welcome, got {first:?}") };
    assert!(matches!(decode_server(&b).unwrap(), ServerMsg::Welcome(_)), "welcome");
    let _ = ws.close(None).await;
}

/// The upgrade of `scan`'s stream with `token`: its refusal's status and code.
async fn stream_refused(app: &TestApp, token: &str, scan: ScanId) -> (u16, String) {
    match ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), token.to_string(), scan)).await {
        Err(ClientError::Rejected { status, body }) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (status, code_in(&v).to_string())
        }
        Ok(_) => panic!("the stream of {scan} opened"),
        Err(e) => panic!("the stream of {scan} failed otherwise: {e}"),
    }
}

#[actix_web::test]
async fn a_capture_link_opens_the_scan_on_the_phone_which_streams_it_to_a_measurement_and_reaches_nothing_else() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let pid = patient.patient_id.unwrap();

    // The link: the public base, the page, the code in the fragment only; shown once.
    let res = app.post_auth(&format!("/v1/scans/{scan}/capture-link"), &patient.token, &json!({})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let link: Value = res.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    let prefix = format!("{}/capture#code=chc_", app.config.public_url.trim_end_matches('/'));
    assert!(url.starts_with(&prefix), "{url}");
    assert!(!url.contains('?'), "no query string: {url}");
    let code = code_of(url).to_string();
    assert_eq!(code.len(), 47, "chc_ and 256 bits in base64url: {code}");
    let expires: chrono::DateTime<chrono::Utc> = link["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - app.clock.now();
    assert!(ttl > chrono::Duration::minutes(9) && ttl <= chrono::Duration::minutes(10), "{ttl}");
    // Only the code's SHA-256 is stored.
    let hash = hex::encode(Sha256::digest(code.as_bytes()));
    let stored: Vec<String> =
        sqlx::query_scalar!("SELECT code_hash FROM capture_codes").fetch_all(&app.pg).await.unwrap();
    assert_eq!(stored, [hash]);

    // The phone redeems it: a session for this scan only.
    let phone = redeem(&app, &code).await;
    assert_eq!(phone.scan_id, scan);
    let body = &phone.body;
    assert_eq!(body["token_type"], "Bearer");
    let session_end: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(session_end - app.clock.now() <= chrono::Duration::minutes(30), "{body}");
    assert!(body["stream_url"].as_str().unwrap().ends_with(&format!("/v1/scans/{scan}/stream")), "{body}");
    assert!(body["rtc_url"].as_str().unwrap().starts_with("ws://"), "{body}");
    let token = phone.access_token.clone();

    // It reads nothing: not the patient's record, their scans, this scan, or who they are.
    for path in [
        format!("/v1/patients/{pid}"),
        format!("/v1/patients/{pid}/scans"),
        format!("/v1/scans/{scan}"),
        format!("/v1/scans/{scan}/measurements"),
        "/v1/me".to_string(),
        format!("/fhir/Patient/{pid}"),
    ] {
        let res = app.get_auth(&path, &token).await;
        assert_eq!(res.status(), 403, "GET {path}");
        if !path.starts_with("/fhir/") {
            assert_eq!(code_in(&res.json().await.unwrap()), "forbidden", "GET {path}");
        }
    }
    let res = app.post_auth("/v1/scans", &token, &json!({"patient_id": pid, "body_site": "left heel"})).await;
    assert_eq!(res.status(), 403, "it creates no scan");
    let res = app.post_auth(&format!("/v1/scans/{scan}/capture-link"), &token, &json!({})).await;
    assert_eq!(res.status(), 403, "it makes no further link");
    // Nor does it stream another scan, even one of the same patient.
    let other = create_scan(&app, &patient, pid).await;
    assert_eq!(stream_refused(&app, &token, other).await, (403, "forbidden".to_string()));
    let denied: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'access.denied' AND details::jsonb->>'reason' = 'capture_scope'"#
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert!(denied >= 9, "each refusal audited ({denied})");

    // A socket ticket for it works, as in a browser.
    let res = app.post_auth("/v1/auth/ws-ticket", &token, &json!({})).await;
    assert_eq!(res.status(), 200);
    let ticket = res.json::<Value>().await.unwrap()["ticket"].as_str().unwrap().to_string();
    welcomed_with_ticket(&app, &ticket, scan).await;

    // The phone streams the scan to the end; the clinic sees it measured.
    crate::dashboard_browser::stream_scan_with_token(&app, &token, scan, Duration::ZERO).await;
    let list: Value =
        app.get_auth(&format!("/v1/scans/{scan}/measurements"), &patient.token).await.json().await.unwrap();
    assert_eq!(list["status"], "complete", "{list}");
    assert_eq!(list["outcome"]["state"], "measured", "{list}");
    assert_eq!(list["measurements"].as_array().map(Vec::len), Some(1), "{list}");

    // The scan is over, and so is the phone's session.
    assert_eq!(stream_refused(&app, &token, scan).await, (401, "token_revoked".to_string()));
    let res = app.post_auth("/v1/auth/ws-ticket", &token, &json!({})).await;
    assert_eq!(res.status(), 401);
    let reason: Option<String> =
        sqlx::query_scalar!("SELECT revoked_reason FROM sessions WHERE capture_scan_id = $1", scan.as_uuid())
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("capture_scan_over"));
    // The patient's own session is untouched.
    assert_eq!(app.get_auth("/v1/me", &patient.token).await.status(), 200);

    // The code worked once.
    let (status, again) = try_redeem(&app, &code).await;
    assert_eq!((status, code_in(&again)), (409, "capture_code_used"), "{again}");

    // Audited, attributed, and the code in no row.
    let rows = sqlx::query!(
        "SELECT action, outcome, actor_id, target_id, details FROM audit_log
          WHERE action LIKE 'scan.capture_link.%' ORDER BY id"
    )
    .fetch_all(&app.pg)
    .await
    .unwrap();
    let seen: Vec<(String, String)> = rows.iter().map(|r| (r.action.clone(), r.outcome.clone())).collect();
    assert_eq!(
        seen,
        [
            ("scan.capture_link.create".to_string(), "success".to_string()),
            ("scan.capture_link.redeem".to_string(), "success".to_string()),
            ("scan.capture_link.redeem".to_string(), "denied".to_string()),
        ]
    );
    for r in &rows[..2] {
        assert_eq!(r.actor_id, Some(patient.id), "{}", r.action);
        assert_eq!(r.target_id.as_deref(), Some(scan.to_string().as_str()), "{}", r.action);
    }
    let leaked: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE strpos(details, $1) > 0 OR strpos(details, $2) > 0"#,
        &code,
        &token,
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "no code or token in the audit trail");
}

#[actix_web::test]
async fn a_capture_code_works_once_for_ten_minutes_only_the_newest_works_and_a_replay_revokes_its_session() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;

    // Expired and unknown codes are answered alike.
    let expired = code_of(&capture_link(&app, &patient.token, scan).await).to_string();
    app.clock.advance(Duration::from_secs(10 * 60 + 1));
    let (s1, b1) = try_redeem(&app, &expired).await;
    let (s2, b2) = try_redeem(&app, &unknown_code()).await;
    assert_eq!((s1, code_in(&b1)), (401, "invalid_capture_code"), "{b1}");
    assert_eq!((s1, &b1["error"]["message"]), (s2, &b2["error"]["message"]), "{b1} vs {b2}");
    assert_eq!(code_in(&b2), "invalid_capture_code");
    // A code of another shape is no code: refused before any lookup.
    let (status, body) = try_redeem(&app, "chc_short").await;
    assert_eq!((status, code_in(&body), body["error"]["field"].as_str()), (400, "invalid_field", Some("code")));

    // A newer link ends the older one.
    let older = code_of(&capture_link(&app, &patient.token, scan).await).to_string();
    let newer = code_of(&capture_link(&app, &patient.token, scan).await).to_string();
    assert_eq!(code_in(&try_redeem(&app, &older).await.1), "invalid_capture_code");
    let phone = redeem(&app, &newer).await;
    assert_eq!(app.post_auth("/v1/auth/ws-ticket", &phone.access_token, &json!({})).await.status(), 200);

    // Presented again, the code is refused and what it gave is revoked: one of its two holders
    // is not the patient's phone.
    let (status, body) = try_redeem(&app, &newer).await;
    assert_eq!((status, code_in(&body)), (409, "capture_code_used"), "{body}");
    let res = app.post_auth("/v1/auth/ws-ticket", &phone.access_token, &json!({})).await;
    assert_eq!(res.status(), 401);
    assert_eq!(code_in(&res.json().await.unwrap()), "token_revoked");
    assert_eq!(stream_refused(&app, &phone.access_token, scan).await.0, 401);
    // A new link starts over.
    let again = redeem(&app, code_of(&capture_link(&app, &patient.token, scan).await)).await;
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), again.access_token, scan)).await.unwrap();
    stream(&mut client, 1, 3).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 3);
}

#[actix_web::test]
async fn who_may_make_a_capture_link_and_for_which_scans() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let pid = patient.patient_id.unwrap();

    // Another patient: no such scan for them.
    let stranger = app.patient().await;
    let (status, body) = try_capture_link(&app, &stranger.token, scan).await;
    assert_eq!((status, code_in(&body)), (404, "not_found"), "{body}");
    // A clinician off the care team neither; on it, yes — as in the consult.
    let clin = app.staff(Role::Clinician, true).await;
    assert_eq!(try_capture_link(&app, &clin.token, scan).await.0, 404);
    let admin = app.staff(Role::Admin, true).await;
    let res =
        app.post_auth(&format!("/v1/patients/{pid}/care-team"), &admin.token, &json!({"clinician_id": clin.id})).await;
    assert!(res.status().is_success(), "care team: {}", res.text().await.unwrap());
    let url = capture_link(&app, &clin.token, scan).await;
    let denied: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'scan.capture_link.create' AND outcome = 'denied'"#
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(denied, 2, "the stranger's and the outsider's attempts are audited");

    // The link made by the clinician acts for the patient.
    let phone = redeem(&app, code_of(&url)).await;
    let user: Uuid = sqlx::query_scalar!("SELECT user_id FROM sessions WHERE capture_scan_id = $1", scan.as_uuid())
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(user, patient.id);

    // A scan that finished takes no link, and a link made before it finished opens nothing.
    let pending = code_of(&capture_link(&app, &patient.token, scan).await).to_string();
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), phone.access_token, scan)).await.unwrap();
    stream(&mut client, 1, 3).await;
    client.finish().await.unwrap();
    assert_ne!(scan_status(&app, scan).await, "streaming");
    let (status, body) = try_capture_link(&app, &patient.token, scan).await;
    assert_eq!((status, code_in(&body)), (409, "scan_not_streamable"), "{body}");
    let (status, body) = try_redeem(&app, &pending).await;
    assert_eq!((status, code_in(&body)), (409, "scan_not_streamable"), "{body}");

    // A patient record without an account (made by staff) has no phone session to give.
    let res = app
        .post_auth(
            "/v1/patients",
            &admin.token,
            &json!({"given_name": "No", "family_name": "Account", "birth_date": "1950-01-02"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let record: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let res = app
        .post_auth(
            &format!("/v1/patients/{record}/consents"),
            &admin.token,
            &json!({"scope": "scan_capture", "status": "granted", "terms_version": "1"}),
        )
        .await;
    assert!(res.status().is_success(), "consent: {}", res.text().await.unwrap());
    let orphan = create_scan(&app, &admin, record).await;
    let (status, body) = try_capture_link(&app, &admin.token, orphan).await;
    assert_eq!((status, code_in(&body)), (409, "conflict"), "{body}");
}

#[actix_web::test]
async fn redeeming_is_limited_per_address() {
    let app = spawn_app_with(|mut c| {
        c.capture_redeem_per_address_per_min = 3;
        c
    })
    .await;
    for _ in 0..3 {
        assert_eq!(try_redeem(&app, &unknown_code()).await.0, 401);
    }
    let res = app.post_json("/v1/capture/redeem", &json!({ "code": unknown_code() })).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(code_in(&res.json().await.unwrap()), "rate_limited");
    // The limit is the address's, in time: a minute later it may try again.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(try_redeem(&app, &unknown_code()).await.0, 401);
}

#[actix_web::test]
async fn a_capture_code_and_its_session_never_reach_the_logs() {
    let app = spawn_app().await;
    let node = NodeProcess::start(&app.config, &[("COHERENCY_LOG_LEVEL", "debug")]);
    let (patient, scan) = patient_with_scan(&app).await;
    let res = app
        .client
        .post(node.url(&format!("/v1/scans/{scan}/capture-link")))
        .bearer_auth(&patient.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = res.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_string();
    let code = code_of(&url).to_string();
    let base = node.url("");
    let (status, body) = try_redeem_at(&app.client, &base, &code).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let me = |t: String| app.client.get(node.url("/v1/me")).bearer_auth(t).send();
    assert_eq!(me(token.clone()).await.unwrap().status(), 403, "confined");
    assert_eq!(try_redeem_at(&app.client, &base, &code).await.0, 409);
    assert_eq!(me(token.clone()).await.unwrap().status(), 401, "revoked by the replay");
    // The node writes its lines as it answers; the reader thread may lag a little. Both
    // redeems logged at debug level inside the handler's span (their queries): what they
    // logged is what the assertions below search.
    let logs = crate::helpers::eventually(Duration::from_secs(10), "the redeem requests in the log", || {
        let logs = node.log.lock().unwrap().join("\n");
        async move { (logs.matches(r#""span":{"name":"redeem"}"#).count() >= 2).then_some(logs) }
    })
    .await;
    assert!(logs.contains(r#""http.route":"/v1/scans/{id}/capture-link""#), "requests are logged by route");
    assert!(!logs.contains(&code), "the capture code reached the logs");
    assert!(!logs.contains(&code["chc_".len()..]), "the capture code's random part reached the logs");
    assert!(!logs.contains(&token), "the capture session's token reached the logs");
}

#[actix_web::test]
async fn a_browser_shows_the_capture_page_and_the_apps_claim_capture_links_once_configured() {
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/web");
    let app = spawn_app_with(|mut c| {
        c.web_dir = web.into();
        c
    })
    .await;
    let res = app.get("/capture").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let html = res.text().await.unwrap();
    assert!(html.contains("Open this link on your phone with the Coherency app installed"), "{html}");
    assert!(!html.contains("<script"), "the page runs nothing (it never reads the code)");
    for path in ["/.well-known/apple-app-site-association", "/.well-known/assetlinks.json"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 404, "{path} without app ids");
    }

    let fingerprint = ["a1"; 32].join(":");
    let fp = fingerprint.clone();
    let app = spawn_app_with(move |mut c| {
        c.ios_app_ids = "ABCDE12345.health.coherency.app".into();
        c.android_app_package = "health.coherency.app".into();
        c.android_cert_fingerprints = fp;
        c
    })
    .await;
    let res = app.get("/.well-known/apple-app-site-association").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let aasa: Value = res.json().await.unwrap();
    let details = &aasa["applinks"]["details"][0];
    assert_eq!(details["appIDs"], json!(["ABCDE12345.health.coherency.app"]), "{aasa}");
    assert_eq!(details["components"][0]["/"], "/capture", "{aasa}");
    let res = app.get("/.well-known/assetlinks.json").await;
    assert_eq!(res.status(), 200);
    let links: Value = res.json().await.unwrap();
    assert_eq!(links[0]["relation"], json!(["delegate_permission/common.handle_all_urls"]), "{links}");
    assert_eq!(links[0]["target"]["package_name"], "health.coherency.app");
    assert_eq!(links[0]["target"]["sha256_cert_fingerprints"], json!([fingerprint.to_uppercase()]));
}

/// The consult's case, through the helpers the browser harness uses: the clinician asks for a
/// scan in the consult and a link for it; the phone opens the link and streams; the scan
/// completes, measured, in that consult.
#[actix_web::test]
async fn in_a_consult_the_clinicians_link_is_opened_by_the_phone_and_the_scan_is_measured() {
    let app = spawn_app().await;
    let s = crate::consults::setup(&app).await;
    consent(&app, &s.patient).await;
    let res = app
        .post_auth(
            "/v1/scans",
            &s.clin.token,
            &json!({"patient_id": s.patient.patient_id, "body_site": "left heel", "consult_id": s.consult}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let scan: ScanId = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let url = capture_link(&app, &s.clin.token, scan).await;
    assert_eq!(phone_opens_link(&app, &url).await, scan);
    let list: Value =
        app.get_auth(&format!("/v1/scans/{scan}/measurements"), &s.clin.token).await.json().await.unwrap();
    assert_eq!((&list["status"], &list["outcome"]["state"]), (&json!("complete"), &json!("measured")), "{list}");
    let view: Value = app.get_auth(&format!("/v1/scans/{scan}"), &s.clin.token).await.json().await.unwrap();
    assert_eq!(view["consult_id"], json!(s.consult), "{view}");
}

/// A patient without consent gets no link: the phone could not stream.
#[actix_web::test]
async fn no_capture_link_without_the_patients_scan_consent() {
    let app = spawn_app().await;
    let patient: User = app.patient().await;
    consent(&app, &patient).await;
    let pid = patient.patient_id.unwrap();
    let scan = create_scan(&app, &patient, pid).await;
    let res = app
        .post_auth(
            &format!("/v1/patients/{pid}/consents"),
            &patient.token,
            &json!({"scope": "scan_capture", "status": "withdrawn", "terms_version": "1"}),
        )
        .await;
    assert!(res.status().is_success(), "withdraw: {}", res.text().await.unwrap());
    let (status, body) = try_capture_link(&app, &patient.token, scan).await;
    assert_eq!((status, code_in(&body)), (403, "consent_required"), "{body}");
}
