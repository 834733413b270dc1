//! Consults: the waiting room is enforced by the server, events are ordered, reconnects keep
//! the seat, webhooks arrive signed, once and in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coherency::auth::Role;
use coherency_protocol::ids::ScanId;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{eventually, spawn_app, spawn_app_with, NodeProcess, TestApp, User};

pub type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Ws = WsStream;

/// A bounded wait for one frame.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A clinician caring for a patient, and an ad hoc consult between them.
pub struct Setup {
    pub clin: User,
    pub patient: User,
    pub consult: Uuid,
}

pub async fn setup(app: &TestApp) -> Setup {
    let clin = app.staff(Role::Clinician, true).await;
    let patient = app.patient().await;
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, added_at) VALUES ($1, $2, now())",
        patient.patient_id.unwrap(),
        clin.id
    )
    .execute(&app.pg)
    .await
    .unwrap();
    let res = app.post_auth("/v1/consults", &clin.token, &json!({"patient_id": patient.patient_id})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let consult = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    Setup { clin, patient, consult }
}

pub async fn connect(app: &TestApp, consult: Uuid, who: &User) -> Result<Ws, u16> {
    connect_at(app.port, consult, who).await
}

/// [`connect`] to the node listening on `port`.
pub async fn connect_at(port: u16, consult: Uuid, who: &User) -> Result<Ws, u16> {
    let mut req = format!("ws://127.0.0.1:{port}/v1/consults/{consult}/signal").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", who.token).parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next JSON frame, or None on close / timeout.
pub async fn next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Frames until one of `ty` arrives (panics on close or timeout).
pub async fn until(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let f = next(ws, FRAME_WAIT).await.unwrap_or_else(|| panic!("closed or timed out waiting for {ty}"));
        if f["type"] == ty {
            return f;
        }
    }
}

/// Frames until an `event` of `kind`.
pub async fn until_event(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = until(ws, "event").await;
        if f["event"]["kind"] == kind {
            return f["event"].clone();
        }
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn events(app: &TestApp, consult: Uuid, who: &User) -> Vec<Value> {
    let res = app.get_auth(&format!("/v1/consults/{consult}/events"), &who.token).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

fn assert_gapless(evs: &[Value]) {
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64 + 1, "{evs:?}");
    }
}

#[actix_web::test]
async fn a_patient_waits_until_admitted_then_chats_and_the_events_are_ordered() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let mut host = connect(&app, s.consult, &s.clin).await.unwrap();
    let w = until(&mut host, "welcome").await;
    assert_eq!(w["role"], "host");
    assert_eq!(w["state"], "admitted");

    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let w = until(&mut pat, "welcome").await;
    assert_eq!(w["state"], "waiting");
    let pid = w["participant_id"].as_str().unwrap().to_string();
    assert_eq!(until(&mut pat, "waiting").await["position"], 1);

    // Waiting: chat and offers are refused, and nothing from the room arrives.
    send(&mut pat, json!({"type": "chat", "text": "hello?"})).await;
    let e = until(&mut pat, "error").await;
    assert_eq!(e["code"], "not_admitted");
    send(&mut host, json!({"type": "chat", "text": "private note"})).await;
    until(&mut host, "chat").await;
    if let Some(f) = next(&mut pat, Duration::from_millis(500)).await {
        assert_ne!(f["type"], "chat", "a waiting patient saw chat: {f}");
        assert_ne!(f["type"], "event", "a waiting patient saw events: {f}");
    }

    // The host's queue shows them; admitting seats them.
    let q: Vec<Value> =
        app.get_auth(&format!("/v1/consults/{}/queue", s.consult), &s.clin.token).await.json().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["id"], pid.as_str());
    let wr: Vec<Value> = app.get_auth("/v1/waiting-room", &s.clin.token).await.json().await.unwrap();
    assert_eq!(wr.len(), 1);
    let res =
        app.post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    until(&mut pat, "admitted").await;
    until_event(&mut pat, "joined").await;

    send(&mut pat, json!({"type": "chat", "text": "hello doctor"})).await;
    let c = until(&mut host, "chat").await;
    assert_eq!(c["text"], "hello doctor");
    assert_eq!(c["role"], "patient");

    send(&mut pat, json!({"type": "leave"})).await;
    until_event(&mut host, "left").await;
    let res = app.post_auth(&format!("/v1/consults/{}/end", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(until(&mut host, "ended").await["reason"], "host_ended");

    let evs = events(&app, s.consult, &s.clin).await;
    assert_gapless(&evs);
    assert_eq!(
        kinds(&evs),
        ["opened", "joined", "checked_in", "admitted", "joined", "left", "left", "ended"],
        "{evs:#?}"
    );
    // Chat is in the room's activity stream.
    let n = app
        .state
        .stores
        .mongo
        .collection::<mongodb::bson::Document>("consult_activity")
        .count_documents(mongodb::bson::doc! {"consult_id": s.consult.to_string()})
        .await
        .unwrap();
    assert_eq!(n, 2);
    // Every decision is audited.
    let audited: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action IN ('consult.admit', 'consult.end') AND target_id = $1"#,
        s.consult.to_string()
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}

#[actix_web::test]
async fn a_patient_cannot_join_another_patients_consult() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let other = app.patient().await;
    assert_eq!(connect(&app, s.consult, &other).await.err(), Some(404));
    let res = app.post_auth(&format!("/v1/consults/{}/check-in", s.consult), &other.token, &json!({})).await;
    assert_eq!(res.status(), 404);
    let res = app.get_auth(&format!("/v1/consults/{}/events", s.consult), &other.token).await;
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn a_patient_cannot_skip_the_waiting_room_or_admit_themself() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let res = app.post_auth(&format!("/v1/consults/{}/check-in", s.consult), &s.patient.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["state"], "waiting");
    assert_eq!(body["position"], 1);
    let pid = body["participant_id"].as_str().unwrap();
    let res = app
        .post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.patient.token, &json!({}))
        .await;
    assert_eq!(res.status(), 403);
    let res = app.get_auth(&format!("/v1/consults/{}/events", s.consult), &s.patient.token).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "not_admitted");
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    assert_eq!(until(&mut pat, "welcome").await["state"], "waiting");
    send(&mut pat, json!({"type": "offer", "sdp": "v=0"})).await;
    assert_eq!(until(&mut pat, "error").await["code"], "not_admitted");
}

#[actix_web::test]
async fn a_denied_patient_gets_nothing_and_cannot_come_back() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let mut host = connect(&app, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();
    let res =
        app.post_auth(&format!("/v1/consults/{}/participants/{pid}/deny", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    // Only `denied`, then the close.
    let mut seen = Vec::new();
    while let Some(f) = next(&mut pat, FRAME_WAIT).await {
        seen.push(f["type"].as_str().unwrap().to_string());
    }
    assert!(seen.iter().all(|t| t == "waiting" || t == "denied"), "{seen:?}");
    assert!(seen.contains(&"denied".to_string()));
    send(&mut host, json!({"type": "chat", "text": "after deny"})).await;
    until(&mut host, "chat").await;
    assert_eq!(connect(&app, s.consult, &s.patient).await.err(), Some(403));
    let res = app.post_auth(&format!("/v1/consults/{}/check-in", s.consult), &s.patient.token, &json!({})).await;
    assert_eq!(res.status(), 403);
    let res = app.get_auth(&format!("/v1/consults/{}/events", s.consult), &s.patient.token).await;
    assert_eq!(res.status(), 403);
    let audited: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'consult.deny' AND target_id = $1"#,
        s.consult.to_string()
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[actix_web::test]
async fn a_reconnect_within_grace_keeps_the_seat_and_after_it_the_participant_has_left() {
    let app = spawn_app_with(|mut c| {
        c.consult_reconnect_grace_secs = 2;
        c
    })
    .await;
    let s = setup(&app).await;
    let mut host = connect(&app, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();
    app.post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.clin.token, &json!({})).await;
    until_event(&mut pat, "joined").await;

    // Drop the connection without a leave, come back at once.
    drop(pat);
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let w = until(&mut pat, "welcome").await;
    assert_eq!(w["state"], "admitted");
    assert_eq!(w["resumed"], true);
    assert_eq!(w["participant_id"], pid.as_str());
    send(&mut pat, json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(until(&mut host, "chat").await["text"], "still here");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let evs = events(&app, s.consult, &s.clin).await;
    assert!(!kinds(&evs).contains(&"left".to_string()), "{evs:#?}");

    // Gone past the grace period: left, and a new connection waits again.
    drop(pat);
    let left = until_event(&mut host, "left").await;
    assert_eq!(left["participant_id"], pid.as_str());
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    assert_eq!(until(&mut pat, "welcome").await["state"], "waiting");
    let evs = events(&app, s.consult, &s.clin).await;
    assert_gapless(&evs);
    assert_eq!(kinds(&evs), ["opened", "joined", "checked_in", "admitted", "joined", "left", "checked_in"]);
}

#[actix_web::test]
async fn a_patient_who_leaves_the_waiting_room_left_before_joining() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    until(&mut pat, "welcome").await;
    send(&mut pat, json!({"type": "leave"})).await;
    eventually(Duration::from_secs(10), "left_before_joined", || async {
        let evs = events(&app, s.consult, &s.clin).await;
        kinds(&evs).contains(&"left_before_joined".to_string()).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn check_in_opens_fifteen_minutes_before_the_appointment() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let patient = app.patient().await;
    let start = app.clock.now() + chrono::Duration::minutes(20);
    let c = app.state.consult_rooms.create(None, clin.id, patient.patient_id, Some(start), clin.id).await.unwrap();
    let res = app.post_auth(&format!("/v1/consults/{}/check-in", c.id), &patient.token, &json!({})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "check_in_too_early");
    app.clock.advance(Duration::from_secs(6 * 60));
    let res = app.post_auth(&format!("/v1/consults/{}/check-in", c.id), &patient.token, &json!({})).await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn an_invited_interpreter_is_admitted_on_connecting_and_can_be_removed() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let interp = app.staff(Role::Clinician, true).await;
    let res = app
        .post_auth(
            &format!("/v1/consults/{}/invite", s.consult),
            &s.clin.token,
            &json!({"user_id": interp.id, "role": "interpreter"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let pid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut ws = connect(&app, s.consult, &interp).await.unwrap();
    let w = until(&mut ws, "welcome").await;
    assert_eq!(w["role"], "interpreter");
    until(&mut ws, "admitted").await;
    let res = app
        .post_auth(&format!("/v1/consults/{}/participants/{pid}/remove", s.consult), &s.clin.token, &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    until(&mut ws, "removed").await;
    assert_eq!(connect(&app, s.consult, &interp).await.err(), Some(403));
    let audited: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action IN ('consult.invite', 'consult.remove') AND target_id = $1"#,
        s.consult.to_string()
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}

/// A local webhook receiver: refuses the first attempt of every third delivery (to force
/// retries), records what it accepted.
struct Receiver {
    port: u16,
    accepted: Arc<Mutex<Vec<(String, Value)>>>,
    attempts: Arc<Mutex<u32>>,
    bad_signatures: Arc<Mutex<u32>>,
}

async fn receiver(secret: &'static str) -> Receiver {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let accepted: Arc<Mutex<Vec<(String, Value)>>> = Default::default();
    let attempts: Arc<Mutex<u32>> = Default::default();
    let bad: Arc<Mutex<u32>> = Default::default();
    let seen_keys: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    let (a, t, b) = (accepted.clone(), attempts.clone(), bad.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let (a, t, b, seen) = (a.clone(), t.clone(), b.clone(), seen_keys.clone());
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let (a, t, b, seen) = (a.clone(), t.clone(), b.clone(), seen.clone());
                async move {
                    let n = {
                        let mut t = t.lock().unwrap();
                        *t += 1;
                        *t
                    };
                    let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let ts: i64 = h("x-coherency-timestamp").parse().unwrap_or(0);
                    let expected = coherency::consults::sign(secret.as_bytes(), ts, &body);
                    if h("x-coherency-signature") != expected {
                        *b.lock().unwrap() += 1;
                        return HttpResponse::Unauthorized().finish();
                    }
                    if n % 3 == 0 {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    let key = h("idempotency-key");
                    if seen.lock().unwrap().insert(key.clone()) {
                        a.lock().unwrap().push((key, serde_json::from_slice(&body).unwrap()));
                    }
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    Receiver { port, accepted, attempts, bad_signatures: bad }
}

#[actix_web::test]
async fn a_webhook_receiver_sees_every_event_once_in_order_with_a_valid_signature() {
    const SECRET: &str = "webhook-secret-for-tests-0123456789";
    let rx = receiver(SECRET).await;
    let port = rx.port;
    let app = spawn_app_with(move |mut c| {
        c.webhook_url = format!("http://127.0.0.1:{port}/hook");
        c.webhook_secret = Some(secrecy::SecretString::from(SECRET.to_string()));
        c
    })
    .await;
    let s = setup(&app).await;
    let mut host = connect(&app, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();
    app.post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.clin.token, &json!({})).await;
    until_event(&mut pat, "joined").await;
    send(&mut pat, json!({"type": "leave"})).await;
    until_event(&mut host, "left").await;
    app.post_auth(&format!("/v1/consults/{}/end", s.consult), &s.clin.token, &json!({})).await;
    let stored = events(&app, s.consult, &s.clin).await;
    let got = eventually(Duration::from_secs(30), "every event delivered", || async {
        let a = rx.accepted.lock().unwrap().clone();
        (a.len() >= stored.len()).then_some(a)
    })
    .await;
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    assert!(*rx.attempts.lock().unwrap() > got.len() as u32, "some deliveries were retried");
    let bodies: Vec<Value> = got.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, stored, "delivered once each, in order");
    for (key, b) in &got {
        assert_eq!(key, &format!("{}:{}", s.consult, b["seq"]));
    }
}

/// Admits the setup's patient: both are then connected and joined.
async fn in_consult(app: &TestApp, s: &Setup) -> (Ws, Ws) {
    let mut host = connect(app, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect(app, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();
    let res =
        app.post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    until(&mut pat, "admitted").await;
    until_event(&mut host, "joined").await;
    (host, pat)
}

#[actix_web::test]
async fn chat_holding_a_control_or_bidi_character_is_refused_stored_nowhere_and_the_socket_stays_usable() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let (mut host, mut pat) = in_consult(&app, &s).await;
    let stored = || async {
        app.state
            .stores
            .mongo
            .collection::<mongodb::bson::Document>("consult_activity")
            .find(mongodb::bson::doc! {"consult_id": s.consult.to_string()})
            .await
            .unwrap()
            .map(|d| d.unwrap().get_document("object").unwrap().get_str("content").unwrap().to_string())
            .collect::<Vec<String>>()
            .await
    };
    for (frame, says) in [
        (json!({"type": "chat", "text": "a\u{0}b"}), "`text`: must not contain control characters (U+0000)"),
        (json!({"type": "chat", "text": "see invoice_\u{202E}fdp.exe"}), "`text`: must not contain bidirectional"),
        (json!({"type": "chat", "text": "\u{1B}[2Jcleared"}), "`text`: must not contain control characters (U+001B)"),
        (json!({"type": "chat", "text": "x".repeat(2001)}), "chat text must be 1 to 2000 characters"),
    ] {
        send(&mut pat, frame.clone()).await;
        let e = until(&mut pat, "error").await;
        assert_eq!(e["code"], "invalid_field", "{e}");
        assert!(e["message"].as_str().unwrap().starts_with(says), "{frame}: {e}");
    }
    // The same socket goes on working: the next message is delivered, and it is the first chat
    // the host sees.
    send(&mut pat, json!({"type": "chat", "text": "hello doctor\nsecond line"})).await;
    assert_eq!(until(&mut host, "chat").await["text"], "hello doctor\nsecond line");
    send(&mut pat, json!({"type": "ping"})).await;
    until(&mut pat, "pong").await;
    assert_eq!(stored().await, ["hello doctor\nsecond line"]);
}

#[actix_web::test]
async fn a_scan_requested_in_a_consult_reaches_the_patients_app_and_is_measured_in_the_room() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    crate::scan_stream::consent(&app, &s.patient).await;
    let (mut host, mut pat) = in_consult(&app, &s).await;

    // The clinician asks for a scan inside the consult.
    let body = json!({"patient_id": s.patient.patient_id, "consult_id": s.consult, "body_site": "left heel"});
    let res = app.post_auth("/v1/scans", &s.clin.token, &body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let scan: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let ask = until(&mut pat, "scan_request").await;
    assert_eq!(ask["scan_id"], scan.to_string(), "the patient's app is asked to scan");
    let ev = until_event(&mut host, "scan_requested").await;
    assert_eq!(
        (ev["data"]["scan_id"].as_str(), ev["by"].as_str()),
        (Some(&*scan.to_string()), Some(&*s.clin.id.to_string()))
    );

    // The patient's app streams it; the room hears it start, then its measurement.
    let stream = crate::dashboard_browser::stream_scan(&app, &s.patient, ScanId::from_uuid(scan), Duration::ZERO);
    let watch = async {
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("scan_finished") {
            let f = until(&mut host, "event").await;
            let e = &f["event"];
            if e["data"]["scan_id"] == scan.to_string() {
                seen.push(e["kind"].as_str().unwrap().to_string());
                if e["kind"] == "scan_finished" {
                    assert_eq!(e["data"]["status"], "complete", "{e}");
                }
            }
        }
        seen
    };
    let ((), seen) = tokio::join!(stream, watch);
    assert_eq!(seen.first().map(String::as_str), Some("scan_progress"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("scan_finished"), "{seen:?}");
    // Everyone admitted gets the measurements live (not in the log).
    let shared = until(&mut host, "scan_result").await;
    assert_eq!(shared["scan_id"], scan.to_string());
    assert!(shared["measurements"][0]["outline_area_mm2"]["value"].as_f64().unwrap() > 0.0, "{shared}");
    until_event(&mut pat, "scan_finished").await;
    let shared = until(&mut pat, "scan_result").await;
    assert_eq!(shared["scan_id"], scan.to_string());
    let audited: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'consult.scan_result.shared' AND target_id = $1"#,
        s.consult.to_string()
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 1, "sharing the measurements is audited");
    let res = app.get_auth(&format!("/v1/scans/{scan}/measurements"), &s.clin.token).await;
    assert_eq!(res.status(), 200);
    let m: Value = res.json().await.unwrap();
    assert!(m["measurements"][0]["outline_area_mm2"]["value"].as_f64().unwrap() > 0.0, "{m}");

    // The log has it all, in order, without gaps; the events carry ids and statuses only.
    let evs = events(&app, s.consult, &s.clin).await;
    assert_gapless(&evs);
    let k = kinds(&evs);
    let first = k.iter().position(|x| x == "scan_requested").unwrap();
    let last = k.iter().position(|x| x == "scan_finished").unwrap();
    assert!(first < last, "{k:?}");
    for e in evs.iter().filter(|e| e["kind"].as_str().unwrap().starts_with("scan_")) {
        let keys: Vec<&String> = e["data"].as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| ["scan_id", "status"].contains(&k.as_str())), "{e}");
    }
}

/// The `scan_live` frames of `scan` on `ws` until its `scan_result` (panics on close or a
/// long silence: reconstruction takes a while, but not this long).
async fn live_until_result(ws: &mut Ws, scan: Uuid) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let f = next(ws, Duration::from_secs(120)).await.expect("closed or silent before scan_result");
        match f["type"].as_str() {
            Some("scan_live") if f["scan_id"] == scan.to_string() => seen.push(f),
            Some("scan_result") if f["scan_id"] == scan.to_string() => return seen,
            _ => {}
        }
    }
}

/// What a participant is shown of a scan's live figures: well-formed, never going back.
fn assert_live_figures(who: &str, lives: &[Value]) {
    assert!(lives.iter().any(|f| f["frames"].as_u64() > Some(0)), "{who}: no figures with frames: {lives:?}");
    let mut last = (0, 0);
    for f in lives {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, ["coverage", "frames", "fused", "scan_id", "status", "type", "warnings"], "{who}: {f}");
        let status = match f["status"].as_str() {
            Some("streaming") => 0,
            Some("processing") => 1,
            other => panic!("{who}: status {other:?} in {f}"),
        };
        let frames = f["frames"].as_u64().unwrap();
        assert!((status, frames) >= last, "{who}: went back from {last:?} to {f}");
        last = (status, frames);
        assert!(f["fused"].is_null() || f["fused"].as_u64().is_some_and(|n| n <= 60), "{who}: {f}");
        assert!(f["coverage"].is_null() || f["coverage"].as_f64().is_some_and(|c| (0.0..=1.0).contains(&c)), "{f}");
        assert!(f["warnings"].as_array().unwrap().iter().all(Value::is_string), "{who}: {f}");
    }
    assert!(
        lives.iter().any(|f| f["fused"].as_u64().is_some() && f["coverage"].as_f64().is_some()),
        "{who}: the capture session's figures arrive: {lives:?}"
    );
}

/// A scan taken in a consult is watched live by everyone admitted: `scan_live` with the frames,
/// the fused count, coverage and the capture guidance, never going back, the final figures
/// last and then the result. A participant still waiting sees none of it, and none of it is
/// in the event log.
#[actix_web::test]
async fn the_people_in_a_consult_see_a_scan_live_as_the_phone_streams_it_but_not_while_waiting_nor_in_the_log() {
    use coherency_protocol::client::{ClientConfig, ScanStreamClient};
    use coherency_recon::phantom::{presets, Phantom, ScanConfig};
    let app = spawn_app().await;
    let s = setup(&app).await;
    crate::scan_stream::consent(&app, &s.patient).await;
    let mut host = connect(&app, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();
    until(&mut pat, "waiting").await;

    let body = json!({"patient_id": s.patient.patient_id, "consult_id": s.consult, "body_site": "left heel"});
    let res = app.post_auth("/v1/scans", &s.clin.token, &body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let scan: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();

    // The phone sends the first half of the scan at a hand-held pace while the patient waits.
    // The skin it scans has no wound to find (a cap 10 µm deep): the guidance says so.
    let mut skin = presets::spherical_cap(false);
    skin.cavity = coherency_recon::phantom::CavityShape::SphericalCap { radius: 0.015, depth: 1e-5 };
    let rendered = Phantom::new(skin).scan(&ScanConfig::iphone(1));
    let config = ClientConfig::new(app.address.clone(), s.patient.token.clone(), ScanId::from_uuid(scan));
    let mut phone = ScanStreamClient::connect_with(config).await.unwrap();
    let mut told = phone.take_events().unwrap();
    let phone_saw = tokio::spawn(async move {
        let mut last = None;
        while let Some(e) = told.recv().await {
            if let coherency_protocol::client::ClientEvent::Progress(p) = e {
                last = Some(p);
            }
        }
        last
    });
    let half = rendered.frames.len() / 2;
    for (i, f) in rendered.frames.iter().enumerate().take(half) {
        phone.send_frame(crate::measurements::wire_frame(i as u64 + 1, f)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // The host sees it live...
    let mut host_lives = Vec::new();
    while host_lives.last().is_none_or(|f: &Value| f["frames"].as_u64() == Some(0)) {
        let f = until(&mut host, "scan_live").await;
        assert_eq!(f["scan_id"], scan.to_string());
        assert_eq!(f["status"], "streaming", "{f}");
        host_lives.push(f);
    }
    // ...the waiting patient does not (everything it was sent before its admission).
    let res =
        app.post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    loop {
        let f = next(&mut pat, FRAME_WAIT).await.expect("admitted");
        assert_ne!(f["type"], "scan_live", "a waiting participant saw live figures: {f}");
        if f["type"] == "admitted" {
            break;
        }
    }

    // Admitted, the patient sees the rest; both see the figures before the measurements.
    for (i, f) in rendered.frames.iter().enumerate().skip(half) {
        phone.send_frame(crate::measurements::wire_frame(i as u64 + 1, f)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    phone.finish().await.unwrap();
    host_lives.extend(live_until_result(&mut host, scan).await);
    let pat_lives = live_until_result(&mut pat, scan).await;
    assert_live_figures("host", &host_lives);
    assert_live_figures("patient", &pat_lives);
    // The last figures are the final ones: the phone's final `progress` (after every queued
    // frame was fused, with the final probe's guidance), and the skin has no wound to find.
    let fin = tokio::time::timeout(FRAME_WAIT, phone_saw).await.unwrap().unwrap().expect("a final progress");
    assert!(fin.warnings.iter().any(|w| w == "wound_not_found"), "{fin:?}");
    for lives in [&host_lives, &pat_lives] {
        let last = lives.last().unwrap();
        let (frames, fused) = (rendered.frames.len(), fin.frames_fused);
        assert_eq!(
            (&last["status"], &last["frames"], &last["fused"], &last["warnings"]),
            (&json!("processing"), &json!(frames), &json!(fused), &json!(fin.warnings)),
            "the phone's final figures {fin:?}, the room's {lives:?}"
        );
    }
    assert!(host_lives.len() > pat_lives.len(), "the host saw the first half too");
    // Nothing follows the measurements.
    while let Some(f) = next(&mut host, Duration::from_millis(500)).await {
        assert_ne!(f["type"], "scan_live", "live figures after the result: {f}");
    }

    // The log and its webhook rows hold the scan's statuses, never its live figures.
    let evs = events(&app, s.consult, &s.clin).await;
    assert_gapless(&evs);
    let k = kinds(&evs);
    assert!(k.contains(&"scan_progress".to_string()) && k.contains(&"scan_finished".to_string()), "{k:?}");
    assert!(!k.iter().any(|x| x == "scan_live"), "{k:?}");
    let stored: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM consult_events WHERE consult_id = $1 AND (kind = 'scan_live' OR body::text LIKE '%"frames"%')"#,
    )
    .bind(s.consult)
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(stored, 0, "no live figures in the stored events");
}

#[actix_web::test]
async fn a_scan_cannot_name_another_patients_or_an_ended_consult() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let other = app.patient().await;
    crate::scan_stream::consent(&app, &other).await;
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, added_at) VALUES ($1, $2, now())",
        other.patient_id.unwrap(),
        s.clin.id
    )
    .execute(&app.pg)
    .await
    .unwrap();
    let body = json!({"patient_id": other.patient_id, "consult_id": s.consult, "body_site": "left heel"});
    let res = app.post_auth("/v1/scans", &s.clin.token, &body).await;
    assert_eq!(res.status(), 409, "{}", res.text().await.unwrap());
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "conflict");
    let body = json!({"patient_id": other.patient_id, "consult_id": Uuid::now_v7(), "body_site": "left heel"});
    assert_eq!(app.post_auth("/v1/scans", &s.clin.token, &body).await.status(), 404);

    crate::scan_stream::consent(&app, &s.patient).await;
    let res = app.post_auth(&format!("/v1/consults/{}/end", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    let body = json!({"patient_id": s.patient.patient_id, "consult_id": s.consult, "body_site": "left heel"});
    let res = app.post_auth("/v1/scans", &s.clin.token, &body).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "consult_ended");
}

/// A video call can outlast the session's idle timeout without one request from the page (the
/// media flows elsewhere): while a participant's consult socket is heard from, its session
/// re-checks keep the session alive. A session used for nothing still goes idle.
#[actix_web::test]
async fn a_call_longer_than_the_idle_timeout_keeps_the_session_of_a_participant_still_in_it() {
    let app = spawn_app_with(|mut c| {
        c.socket_recheck_secs = 1;
        c
    })
    .await;
    let s = setup(&app).await;
    let unused = app.staff(Role::Clinician, true).await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    until(&mut pat, "welcome").await;
    // Twenty minutes in steps of five: the client is heard in each, then re-checked.
    for _ in 0..4 {
        app.clock.advance(Duration::from_secs(5 * 60));
        send(&mut pat, json!({"type": "ping"})).await;
        until(&mut pat, "pong").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert_eq!(app.get_auth("/v1/me", &s.patient.token).await.status(), 200, "the participant is still signed in");
    let res = app.get_auth("/v1/me", &unused.token).await;
    assert_eq!(res.status(), 401, "a session used for nothing for 20 minutes has gone idle");
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "token_expired");
    // The call itself is still up.
    send(&mut pat, json!({"type": "ping"})).await;
    until(&mut pat, "pong").await;
}

#[actix_web::test]
async fn an_appointments_consult_opens_for_its_clinician_at_once_and_for_its_patient_from_fifteen_minutes_before() {
    let app = spawn_app().await;
    let (clin, ty) = crate::dashboard::clinician_with_calendar(&app).await;
    let patient = app.patient().await;
    let appointment = crate::dashboard::book(&app, &patient, &clin, ty, 10).await;
    let path = format!("/v1/appointments/{appointment}/consult");

    // The patient, two days early: not yet, by name.
    let res = app.post_auth(&path, &patient.token, &json!({})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "check_in_too_early");
    // Nobody else's appointment: as if it did not exist.
    let stranger = app.patient().await;
    assert_eq!(app.post_auth(&path, &stranger.token, &json!({})).await.status(), 404);
    let other_clinician = app.staff(Role::Clinician, true).await;
    assert_eq!(app.post_auth(&path, &other_clinician.token, &json!({})).await.status(), 404);

    // Fourteen minutes before the start the patient opens it, and sees who it is with.
    let start = (app.clock.now() + chrono::Duration::days(2)).date_naive().and_hms_opt(10, 0, 0).unwrap().and_utc();
    let until = (start - chrono::Duration::minutes(14) - app.clock.now()).to_std().unwrap();
    app.clock.advance(until);
    // Two days on, both sign in again (their sessions of two days ago have expired).
    let (patient, clin) = (relogin(&app, patient).await, relogin(&app, clin).await);
    let res = app.post_auth(&path, &patient.token, &json!({})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let opened: Value = res.json().await.unwrap();
    assert_eq!(opened["appointment_id"], appointment.to_string());
    assert_eq!(opened["clinician_name"], "Dr Test");
    // The clinician's "Start consult" finds the same consult; so does the patient again.
    let res = app.post_auth(&path, &clin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], opened["id"]);
    let res = app.post_auth(&path, &patient.token, &json!({})).await;
    assert_eq!(res.status(), 200);

    // The clinician may open a later appointment's consult at any time; a cancelled one has none.
    let later = crate::dashboard::book(&app, &patient, &clin, ty, 15).await;
    let res = app.post_auth(&format!("/v1/appointments/{later}/consult"), &clin.token, &json!({})).await;
    assert_eq!(res.status(), 201);
    let cancelled = crate::dashboard::book(&app, &patient, &clin, ty, 16).await;
    let res =
        app.post_auth(&format!("/v1/appointments/{cancelled}/cancel"), &patient.token, &json!({"reason": "ill"})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let res = app.post_auth(&format!("/v1/appointments/{cancelled}/consult"), &clin.token, &json!({})).await;
    assert_eq!(res.status(), 409);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'consult.create' AND outcome = 'success'")
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(audited, 2);
}

/// `u` signed in again at the app's (moved) clock, with an authenticator code when enrolled.
async fn relogin(app: &TestApp, mut u: User) -> User {
    let mut body = json!({"email": u.email, "password": u.password});
    if let Some(secret) = &u.totp_secret {
        body["totp_code"] = json!(coherency::auth::totp::code_at(secret, app.clock.now()).unwrap());
    }
    let res = app.post_json("/v1/auth/login", &body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    u.token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    u
}

/// `POST …/participants/{pid}/message` as `who`.
async fn message(app: &TestApp, consult: Uuid, pid: &str, who: &User, body: Value) -> reqwest::Response {
    app.post_auth(&format!("/v1/consults/{consult}/participants/{pid}/message"), &who.token, &body).await
}

/// Frames on `ws` until `last` (a type), failing on a `chat` carrying `text` before it.
async fn no_chat_before(ws: &mut Ws, text: &str, last: &str, who: &str) {
    loop {
        let f = next(ws, FRAME_WAIT).await.unwrap_or_else(|| panic!("{who}: closed or timed out waiting for {last}"));
        assert!(!(f["type"] == "chat" && f["text"] == text), "{who} received the private message: {f}");
        if f["type"] == last {
            return;
        }
    }
}

/// A user given a place in the consult's waiting room as a checked-in companion of the
/// patient (the row the room keeps for someone who checked in and left: they check in again
/// by connecting). No route makes one yet; the room treats them as any waiting participant.
async fn companion(app: &TestApp, consult: Uuid) -> User {
    let u = app.patient().await;
    sqlx::query(
        "INSERT INTO consult_participants (id, consult_id, user_id, role, state, updated_at)
         VALUES ($1, $2, $3, 'family', 'left', now())",
    )
    .bind(Uuid::now_v7())
    .bind(consult)
    .bind(u.id)
    .execute(&app.pg)
    .await
    .unwrap();
    u
}

/// The stored chat documents of `consult` carrying `text`.
async fn stored_with(app: &TestApp, consult: Uuid, text: &str) -> Vec<mongodb::bson::Document> {
    app.state
        .stores
        .mongo
        .collection::<mongodb::bson::Document>("consult_activity")
        .find(mongodb::bson::doc! {"consult_id": consult.to_string(), "object.content": text})
        .await
        .unwrap()
        .map(|d| d.unwrap())
        .collect()
        .await
}

#[actix_web::test]
async fn the_clinician_messages_a_waiting_patient_who_alone_receives_it_and_an_admitted_participant_privately_too() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let fam = companion(&app, s.consult).await;
    let interp = app.staff(Role::Clinician, true).await;
    let res = app
        .post_auth(
            &format!("/v1/consults/{}/invite", s.consult),
            &s.clin.token,
            &json!({"user_id": interp.id, "role": "interpreter"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let interp_pid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // A patient of the same clinician waiting in another consult (the same waiting room).
    let other = app.patient().await;
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, added_at) VALUES ($1, $2, now())",
        other.patient_id.unwrap(),
        s.clin.id
    )
    .execute(&app.pg)
    .await
    .unwrap();
    let res = app.post_auth("/v1/consults", &s.clin.token, &json!({"patient_id": other.patient_id})).await;
    let other_consult: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();

    let mut host = connect(&app, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut int = connect(&app, s.consult, &interp).await.unwrap();
    until(&mut int, "admitted").await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let w = until(&mut pat, "welcome").await;
    assert_eq!(w["state"], "waiting");
    let pid = w["participant_id"].as_str().unwrap().to_string();
    let mut fam_ws = connect(&app, s.consult, &fam).await.unwrap();
    assert_eq!(until(&mut fam_ws, "welcome").await["state"], "waiting");
    let mut oth = connect(&app, other_consult, &other).await.unwrap();
    let other_pid = until(&mut oth, "welcome").await["participant_id"].as_str().unwrap().to_string();
    let wr: Vec<Value> = app.get_auth("/v1/waiting-room", &s.clin.token).await.json().await.unwrap();
    assert_eq!(wr.len(), 3, "the board lists three waiting: {wr:?}");

    // The waiting patient reads it at once, from the clinician, marked private.
    let text = "Running 5 minutes late, sorry";
    let res = message(&app, s.consult, &pid, &s.clin, json!({"text": format!("  {text}\n")})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let sent: Value = res.json().await.unwrap();
    assert_eq!(
        (&sent["participant_id"], &sent["user_id"], &sent["state"], &sent["from"], &sent["text"], &sent["delivered"]),
        (&json!(pid), &json!(s.patient.id), &json!("waiting"), &json!(s.clin.id), &json!(text), &json!(true))
    );
    let got = until(&mut pat, "chat").await;
    assert_eq!(
        (&got["from"], &got["role"], &got["text"], &got["to"]),
        (&json!(s.clin.id), &json!("host"), &json!(text), &json!(pid)),
        "{got}"
    );
    assert!(got["at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().is_ok(), "{got}");
    // Still waiting: they can read it, not answer in the room.
    send(&mut pat, json!({"type": "chat", "text": "ok"})).await;
    assert_eq!(until(&mut pat, "error").await["code"], "not_admitted");

    // Nobody else has it. The room sends in order, so a frame each of them gets after the
    // message (a pong, or the host's next chat line) proves nothing came before it.
    send(&mut fam_ws, json!({"type": "ping"})).await;
    no_chat_before(&mut fam_ws, text, "pong", "the other waiting participant").await;
    send(&mut oth, json!({"type": "ping"})).await;
    no_chat_before(&mut oth, text, "pong", "the patient waiting in another consult").await;
    send(&mut host, json!({"type": "chat", "text": "marker one"})).await;
    no_chat_before(&mut int, text, "chat", "the admitted interpreter").await;
    no_chat_before(&mut host, text, "chat", "the host's own socket").await;
    // A participant of another consult is not this consult's: 404, as for none.
    assert_eq!(message(&app, s.consult, &other_pid, &s.clin, json!({"text": "hello"})).await.status(), 404);
    assert_eq!(
        message(&app, s.consult, &Uuid::now_v7().to_string(), &s.clin, json!({"text": "x"})).await.status(),
        404
    );

    // An admitted participant gets one privately too; the patient (still waiting) does not.
    let private = "Please stay on after the patient leaves";
    let res = message(&app, s.consult, &interp_pid, &s.clin, json!({"text": private})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "admitted");
    let got = until(&mut int, "chat").await;
    assert_eq!((&got["text"], &got["to"], &got["from"]), (&json!(private), &json!(interp_pid), &json!(s.clin.id)));
    send(&mut pat, json!({"type": "ping"})).await;
    no_chat_before(&mut pat, private, "pong", "the waiting patient").await;
    send(&mut host, json!({"type": "chat", "text": "marker two"})).await;
    no_chat_before(&mut host, private, "chat", "the host's own socket").await;

    // Kept with its recipient; audited without its text.
    let docs = stored_with(&app, s.consult, text).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    let to = docs[0].get_array("to").unwrap()[0].as_document().unwrap().clone();
    assert_eq!(to.get_str("participant_id").unwrap(), pid);
    assert_eq!(to.get_str("id").unwrap(), s.patient.id.to_string());
    assert_eq!(to.get_str("state").unwrap(), "waiting");
    assert_eq!(docs[0].get_document("actor").unwrap().get_str("id").unwrap(), s.clin.id.to_string());
    assert_eq!(stored_with(&app, s.consult, private).await.len(), 1);
    let audited: Vec<Value> = sqlx::query_scalar::<_, String>(
        "SELECT details FROM audit_log WHERE action = 'consult.message' AND outcome = 'success'
           AND target_id = $1 ORDER BY id",
    )
    .bind(s.consult.to_string())
    .fetch_all(&app.pg)
    .await
    .unwrap()
    .iter()
    .map(|d| serde_json::from_str(d).unwrap())
    .collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0]["participant_id"], json!(pid));
    assert_eq!(audited[1]["participant_id"], json!(interp_pid));
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log a WHERE a::text LIKE '%Running 5 minutes%' OR a::text LIKE '%stay on after%'",
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "a message's text reached the audit trail");
}

#[actix_web::test]
async fn a_message_needs_good_text_the_consults_host_and_someone_still_there() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();

    // The text: 1 to 500 characters of the text rule, and nothing else in the body.
    for (body, code) in [
        (json!({"text": ""}), "invalid_field"),
        (json!({"text": " \n\t "}), "invalid_field"),
        (json!({"text": "x".repeat(501)}), "invalid_field"),
        (json!({"text": "late\u{0}"}), "invalid_field"),
        (json!({"text": "see \u{1B}[2J"}), "invalid_field"),
        (json!({"text": "invoice_\u{202E}fdp.exe"}), "invalid_field"),
        (json!({"text": 5}), "invalid_field"),
        (json!({"text": "hello", "urgent": true}), "unknown_field"),
    ] {
        let res = message(&app, s.consult, &pid, &s.clin, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        if code == "invalid_field" {
            assert_eq!(e["error"]["field"], "text", "{body}: {e}");
        }
    }
    let longest = "y".repeat(500);
    assert_eq!(message(&app, s.consult, &pid, &s.clin, json!({"text": longest})).await.status(), 201);
    assert_eq!(until(&mut pat, "chat").await["text"], longest);

    // Another clinician does not learn the consult exists; the patient cannot message.
    let other = app.staff(Role::Clinician, true).await;
    assert_eq!(message(&app, s.consult, &pid, &other, json!({"text": "hi"})).await.status(), 404);
    assert_eq!(message(&app, s.consult, &pid, &s.patient, json!({"text": "hi"})).await.status(), 403);

    // Gone from the waiting room: refused by name; back again: allowed.
    send(&mut pat, json!({"type": "leave"})).await;
    eventually(Duration::from_secs(10), "the patient has left", || async {
        kinds(&events(&app, s.consult, &s.clin).await).contains(&"left_before_joined".to_string()).then_some(())
    })
    .await;
    let res = message(&app, s.consult, &pid, &s.clin, json!({"text": "are you there?"})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "participant_not_present");
    let mut pat = connect(&app, s.consult, &s.patient).await.unwrap();
    assert_eq!(until(&mut pat, "welcome").await["state"], "waiting");
    assert_eq!(message(&app, s.consult, &pid, &s.clin, json!({"text": "Welcome back"})).await.status(), 201);
    assert_eq!(until(&mut pat, "chat").await["text"], "Welcome back");

    // Denied: refused by name, and nothing reaches them.
    let res =
        app.post_auth(&format!("/v1/consults/{}/participants/{pid}/deny", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    let res = message(&app, s.consult, &pid, &s.clin, json!({"text": "Sorry"})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "participant_not_present");
    assert!(stored_with(&app, s.consult, "Sorry").await.is_empty(), "a refused message was kept");

    // Ended: the consult's own code.
    let res = app.post_auth(&format!("/v1/consults/{}/end", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    let res = message(&app, s.consult, &pid, &s.clin, json!({"text": "Goodbye"})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "consult_ended");
    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'consult.message' AND outcome = 'failure' AND target_id = $1",
    )
    .bind(s.consult.to_string())
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert!(failures >= 2, "refusals are audited ({failures})");
}

/// The room runs on one node, the clinician's request lands on another (the bus request admit
/// takes); the text is in neither node's log, at debug level.
#[actix_web::test]
async fn a_message_through_another_node_reaches_the_waiting_patient_and_no_log_line() {
    let app = spawn_app().await;
    let debug = [("COHERENCY_LOG_LEVEL", "debug")];
    let (room_node, api_node) = (NodeProcess::start(&app.config, &debug), NodeProcess::start(&app.config, &debug));
    let s = setup(&app).await;
    let mut pat = crate::consults::connect_at(room_node.port, s.consult, &s.patient).await.unwrap();
    let pid = until(&mut pat, "welcome").await["participant_id"].as_str().unwrap().to_string();
    let text = format!("Please find a quiet room {}", Uuid::new_v4().simple());
    let res = app
        .client
        .post(api_node.url(&format!("/v1/consults/{}/participants/{pid}/message", s.consult)))
        .bearer_auth(&s.clin.token)
        .json(&json!({"text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(res.json::<Value>().await.unwrap()["delivered"], true);
    let got = until(&mut pat, "chat").await;
    assert_eq!((&got["text"], &got["from"], &got["to"]), (&json!(text), &json!(s.clin.id), &json!(pid)));
    // A refusal through the other node keeps its code.
    let res = app
        .client
        .post(api_node.url(&format!("/v1/consults/{}/participants/{}/message", s.consult, Uuid::now_v7())))
        .bearer_auth(&s.clin.token)
        .json(&json!({"text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(api_node.log.lock().unwrap().iter().any(|l| l.contains("/message")), "requests are logged by route");
    for (name, node) in [("room node", &room_node), ("api node", &api_node)] {
        let logs = node.log.lock().unwrap().join("\n");
        assert!(!logs.contains(&text), "{name}: a message's text reached the logs");
        assert!(!logs.contains("quiet room"), "{name}: a message's text reached the logs");
    }
}
