//! Accounts, sessions, lockout, MFA and revocation, against the real services.

use std::time::Duration;

use coherency::auth::Role;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, NodeProcess, PASSWORD};

#[actix_web::test]
async fn the_stored_password_hash_is_argon2id_with_the_agreed_parameters() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let hash: String =
        sqlx::query_scalar!("SELECT password_hash FROM users WHERE id = $1", p.id).fetch_one(&app.pg).await.unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
}

#[actix_web::test]
async fn registering_a_taken_email_is_409_and_common_passwords_are_refused() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let res = app
        .post_json("/v1/auth/register", &json!({"email": p.email.to_uppercase(), "password": PASSWORD, "given_name": "A", "family_name": "B", "birth_date": "1990-01-01"}))
        .await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "email_taken");
    let res = app
        .post_json("/v1/auth/register", &json!({"email": "new@example.test", "password": "iloveyou1", "given_name": "A", "family_name": "B", "birth_date": "1990-01-01"}))
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "weak_password");
    assert_eq!(body["error"]["field"], "password");
}

#[actix_web::test]
async fn five_failed_logins_lock_the_account_until_the_window_passes() {
    let app = spawn_app().await;
    let p = app.patient().await;
    for _ in 0..5 {
        assert_eq!(app.login(&p.email, "wrong password here").await.status(), 401);
    }
    let res = app.login(&p.email, PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "account_locked");
    app.clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_eq!(app.login(&p.email, PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..4 {
        let t = std::time::Instant::now();
        let a = app.login(&format!("nobody{i}@example.test"), "some password 123").await;
        unknown.push(t.elapsed());
        let (sa, mut ba): (u16, Value) = (a.status().as_u16(), a.json().await.unwrap());
        let t = std::time::Instant::now();
        let b = app.login(&p.email, &format!("wrong password {i}")).await;
        wrong.push(t.elapsed());
        let (sb, mut bb): (u16, Value) = (b.status().as_u16(), b.json().await.unwrap());
        ba["error"]["request_id"] = Value::Null;
        bb["error"]["request_id"] = Value::Null;
        assert_eq!(sa, sb);
        assert_eq!(ba, bb);
    }
    // The fastest of each: the work the server does is the floor, and a loaded machine
    // (tests run side by side) only ever adds to it, unevenly between the two kinds.
    let fastest = |v: &[std::time::Duration]| v.iter().min().map_or(0.0, std::time::Duration::as_secs_f64);
    let (mu, mw) = (fastest(&unknown), fastest(&wrong));
    assert!(mu / mw > 0.5 && mu / mw < 2.0, "fastest unknown {mu:.3}s vs wrong {mw:.3}s");
}

#[actix_web::test]
async fn email_taken_answers_are_rate_limited_per_ip() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let body = json!({"email": p.email, "password": PASSWORD, "given_name": "A", "family_name": "B", "birth_date": "1990-01-01"});
    for _ in 0..5 {
        assert_eq!(app.post_json("/v1/auth/register", &body).await.status(), 409);
    }
    let res = app.post_json("/v1/auth/register", &body).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

#[actix_web::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let res = app.post_json("/v1/auth/refresh", &json!({"refresh_token": p.refresh})).await;
    assert_eq!(res.status(), 200);
    let next: Value = res.json().await.unwrap();
    let (access2, refresh2) = (next["access_token"].as_str().unwrap(), next["refresh_token"].as_str().unwrap());
    assert_ne!(refresh2, p.refresh);
    assert_eq!(app.get_auth("/v1/me", access2).await.status(), 200);
    assert_eq!(app.get_auth("/v1/me", &p.token).await.status(), 401, "the old access token stops working");
    let res = app.post_json("/v1/auth/refresh", &json!({"refresh_token": p.refresh})).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "token_revoked");
    assert_eq!(app.get_auth("/v1/me", access2).await.status(), 401, "reuse revoked the whole family");
    assert_eq!(app.post_json("/v1/auth/refresh", &json!({"refresh_token": refresh2})).await.status(), 401);
}

#[actix_web::test]
async fn sessions_expire_after_15_idle_minutes() {
    let app = spawn_app().await;
    let p = app.patient().await;
    app.clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(app.get_auth("/v1/me", &p.token).await.status(), 200);
    app.clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(app.get_auth("/v1/me", &p.token).await.status(), 200, "activity keeps the session alive");
    app.clock.advance(Duration::from_secs(15 * 60 + 1));
    let res = app.get_auth("/v1/me", &p.token).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "token_expired");
}

#[actix_web::test]
async fn sessions_end_after_12_hours_however_active() {
    let app = spawn_app().await;
    let p = app.patient().await;
    for _ in 0..49 {
        app.clock.advance(Duration::from_secs(14 * 60 + 50));
        let res = app.get_auth("/v1/me", &p.token).await;
        if res.status() == 401 {
            assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "token_expired");
            let elapsed: i64 = sqlx::query_scalar!(
                r#"SELECT extract(epoch FROM revoked_at - created_at)::bigint AS "s!" FROM sessions WHERE user_id = $1"#,
                p.id,
            )
            .fetch_one(&app.pg)
            .await
            .unwrap();
            assert!((12 * 3600..12 * 3600 + 900).contains(&elapsed), "ended after {elapsed}s");
            return;
        }
        assert_eq!(res.status(), 200);
    }
    panic!("session outlived 12 hours");
}

#[actix_web::test]
async fn a_totp_code_works_once_and_a_recovery_code_works_once() {
    let app = spawn_app().await;
    let c = app.staff(Role::Clinician, false).await;
    let res = app.post_auth("/v1/me/mfa/totp", &c.token, &json!({})).await;
    let enrol: Value = res.json().await.unwrap();
    assert!(enrol["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    let secret = enrol["secret"].as_str().unwrap();
    let code = coherency::auth::totp::code_at(secret, app.clock.now()).unwrap();
    let res = app.post_auth("/v1/me/mfa/totp/confirm", &c.token, &json!({"code": code})).await;
    assert_eq!(res.status(), 200);
    let codes: Vec<String> =
        serde_json::from_value(res.json::<Value>().await.unwrap()["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    let stored: Vec<String> = sqlx::query_scalar!("SELECT code_hash FROM recovery_codes WHERE user_id = $1", c.id)
        .fetch_all(&app.pg)
        .await
        .unwrap();
    assert_eq!(stored.len(), 10);
    assert!(stored.iter().all(|h| !codes.iter().any(|c| h.contains(&c.replace('-', "")))), "codes are stored hashed");

    // Without a code, login asks for one (401, as docs/security.md says); the enrolment code
    // cannot be replayed.
    let res = app.login(&c.email, PASSWORD).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "mfa_code_required");
    let res =
        app.post_json("/v1/auth/login", &json!({"email": c.email, "password": PASSWORD, "totp_code": code})).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "invalid_totp");
    app.clock.advance(Duration::from_secs(60));
    let fresh = coherency::auth::totp::code_at(secret, app.clock.now()).unwrap();
    let ok =
        app.post_json("/v1/auth/login", &json!({"email": c.email, "password": PASSWORD, "totp_code": fresh})).await;
    assert_eq!(ok.status(), 200);
    let replay =
        app.post_json("/v1/auth/login", &json!({"email": c.email, "password": PASSWORD, "totp_code": fresh})).await;
    assert_eq!(replay.status(), 401, "the same code twice");

    let res = app
        .post_json("/v1/auth/login", &json!({"email": c.email, "password": PASSWORD, "recovery_code": codes[3]}))
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .post_json("/v1/auth/login", &json!({"email": c.email, "password": PASSWORD, "recovery_code": codes[3]}))
        .await;
    assert_eq!(res.status(), 401, "a recovery code works once");
}

#[actix_web::test]
async fn clinicians_cannot_reach_patient_data_before_enrolling_mfa() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let c = app.staff(Role::Clinician, false).await;
    let res = app
        .post_auth(
            &format!("/v1/patients/{}/emergency-access", p.patient_id.unwrap()),
            &c.token,
            &json!({"reason": "unconscious in ED, needs history"}),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "mfa_required");
    let c = app.staff(Role::Clinician, true).await;
    let res = app
        .post_auth(
            &format!("/v1/patients/{}/emergency-access", p.patient_id.unwrap()),
            &c.token,
            &json!({"reason": "unconscious in ED, needs history"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let grant: Value = res.json().await.unwrap();
    let a = app.staff(Role::Admin, true).await;
    let list: Value = app.get_auth("/v1/admin/emergency-access", &a.token).await.json().await.unwrap();
    assert!(list.as_array().unwrap().iter().any(|g| g["id"] == grant["id"]), "admins see the grant");
}

async fn open_socket(
    port: u16,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/v1/ws").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("socket opens");
    ws
}

/// Waits for the socket to be closed by the server; returns the close code.
async fn closed_within(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    limit: Duration,
) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return Some(1006),
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(f.code.into()),
            Ok(Some(Ok(Message::Close(None)))) => return Some(1005),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) => return Some(1006),
        }
    }
}

#[actix_web::test]
async fn the_event_socket_answers_ping_and_refuses_other_text_without_closing() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    async fn next(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame in time");
            if let Message::Text(t) = frame.unwrap().unwrap() {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }
    let app = spawn_app().await;
    let p = app.patient().await;
    let mut ws = open_socket(app.port, &p.token).await;
    assert_eq!(next(&mut ws).await["type"], "welcome");
    for (text, answer, code) in [
        ("ping\u{0}", "error", Some("invalid_field")),
        ("\u{202E}gnip", "error", Some("invalid_field")),
        ("pong", "error", Some("malformed_message")),
        ("ping\n", "pong", None),
    ] {
        ws.send(Message::text(text)).await.unwrap();
        let v = next(&mut ws).await;
        assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some(answer), code), "{text:?}: {v}");
    }
}

/// Opens `/v1/ws` by hand on a plain TCP connection that will never answer anything (a
/// websocket library would answer pings by itself); returns it with the bytes read past the
/// handshake.
async fn unanswering_socket(port: u16, token: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("handshake").unwrap();
        assert!(n > 0, "closed during the handshake");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got[..end]));
    (s, got.split_off(end))
}

/// Reads server frames (unmasked) until a close frame and answers its code; `None` when
/// none came within `limit`, 1006 when the connection ended without one.
async fn close_code_of(s: &mut tokio::net::TcpStream, pending: &mut Vec<u8>, limit: Duration) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // One whole frame at the front of `pending`?
        if pending.len() >= 2 {
            let (op, short) = (pending[0] & 0x0f, usize::from(pending[1] & 0x7f));
            let (len, at) = match short {
                126 if pending.len() >= 4 => (usize::from(u16::from_be_bytes([pending[2], pending[3]])), 4),
                127 if pending.len() >= 10 => {
                    (usize::try_from(u64::from_be_bytes(pending[2..10].try_into().unwrap())).unwrap(), 10)
                }
                126 | 127 => (usize::MAX, 0),
                n => (n, 2),
            };
            if len != usize::MAX && pending.len() >= at + len {
                if op == 0x8 {
                    let payload = &pending[at..at + len];
                    return Some(if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 });
                }
                pending.drain(..at + len);
                continue;
            }
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(1006),
            Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// A client that vanished without closing (a phone out of coverage, a laptop lid shut) is let go
/// once it has missed three heartbeats: closed with 1001 between `HEARTBEAT_TIMEOUT` and one
/// heartbeat later. One that answers the server's pings stays, however long it says nothing
/// else. The event socket runs the pump every JSON socket (consult, board) shares.
#[actix_web::test]
async fn a_socket_whose_client_falls_silent_is_closed_and_one_that_answers_pings_stays() {
    use coherency_protocol::limits::{HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT};
    let app = spawn_app().await;
    let p = app.patient().await;
    let opened = tokio::time::Instant::now();
    let mut answering = open_socket(app.port, &p.token).await;
    let (mut silent, mut read) = unanswering_socket(app.port, &p.token).await;
    // The answering client reads (tungstenite answers each ping with a pong); the silent one
    // reads nothing but what is already there: not closed before its time...
    let early = HEARTBEAT_TIMEOUT - Duration::from_secs(3);
    assert_eq!(closed_within(&mut answering, early).await, None, "a client answering pings is kept");
    assert_eq!(close_code_of(&mut silent, &mut read, Duration::from_millis(200)).await, None, "closed too early");
    // ...and closed by one heartbeat after the timeout, while the other is kept on.
    let gone_by = HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + Duration::from_millis(1500);
    let left = (opened + gone_by).saturating_duration_since(tokio::time::Instant::now());
    assert_eq!(closed_within(&mut answering, left).await, None, "a client answering pings is kept");
    assert_eq!(
        close_code_of(&mut silent, &mut read, Duration::from_secs(2)).await,
        Some(1001),
        "a silent client is closed as going away"
    );
}

#[actix_web::test]
async fn logging_out_everywhere_closes_sockets_on_every_node_of_three_within_5_seconds() {
    let app = spawn_app().await;
    let nodes = [NodeProcess::start(&app.config, &[]), NodeProcess::start(&app.config, &[])];
    let p = app.patient().await;
    let mut sockets = Vec::new();
    for port in [app.port, nodes[0].port, nodes[1].port] {
        let mut ws = open_socket(port, &p.token).await;
        let first = ws.next().await.unwrap().unwrap();
        assert!(first.to_text().unwrap().contains("welcome"));
        sockets.push(ws);
    }
    let started = std::time::Instant::now();
    assert_eq!(app.post_auth("/v1/auth/logout-all", &p.token, &json!({})).await.status(), 204);
    for (i, ws) in sockets.iter_mut().enumerate() {
        let code = closed_within(ws, Duration::from_secs(5)).await;
        assert_eq!(code, Some(4002), "node {i}: closed after {:?}", started.elapsed());
    }
    for n in &nodes {
        let res = app.client.get(n.url("/v1/me")).bearer_auth(&p.token).send().await.unwrap();
        assert_eq!(res.status(), 401, "every other node refuses the token too");
    }
}

#[actix_web::test]
async fn an_admin_disabling_a_user_closes_their_sockets_and_blocks_login() {
    let app = spawn_app().await;
    let node_b = NodeProcess::start(&app.config, &[]);
    let p = app.patient().await;
    let admin = app.staff(Role::Admin, true).await;
    let mut ws = open_socket(node_b.port, &p.token).await;
    let _ = ws.next().await;
    let res = app.post_auth(&format!("/v1/admin/users/{}/disable", p.id), &admin.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(closed_within(&mut ws, Duration::from_secs(5)).await, Some(4002));
    assert_eq!(app.login(&p.email, PASSWORD).await.status(), 401);
}

#[actix_web::test]
async fn socket_tickets_work_once_and_foreign_origins_are_refused() {
    let app = spawn_app().await;
    let p = app.patient().await;
    let t: Value = app.post_auth("/v1/auth/ws-ticket", &p.token, &json!({})).await.json().await.unwrap();
    let ticket = t["ticket"].as_str().unwrap();
    let url = format!("ws://127.0.0.1:{}/v1/ws?ticket={ticket}", app.port);
    assert!(tokio_tungstenite::connect_async(&url).await.is_ok());
    assert!(tokio_tungstenite::connect_async(&url).await.is_err(), "a ticket works once");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{}/v1/ws", app.port).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", p.token).parse().unwrap());
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err(), "foreign origin refused");
    assert!(
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", app.port)).await.is_err(),
        "no credentials refused"
    );
}
