//! The transport, over real sockets: what the server answers before any route runs (a head
//! that does not parse, is too large or too slow; a body that stops; one connection too many)
//! carries the error envelope, slow clients are cut off within their timeouts while others are
//! served, and the socket routes accept browser pages from `public_url` and `allowed_origins`
//! only.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp};

/// Longest any single exchange below may take.
const BOUND: Duration = Duration::from_secs(10);

/// One HTTP response read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts the JSON error envelope with `code`, its request id repeated in `X-Request-Id`.
    fn assert_envelope(&self, status: u16, code: &str, what: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{what}: {self:?}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
        let id = body["error"]["request_id"].as_str().unwrap_or_else(|| panic!("{what}: no request id in {body}"));
        assert_eq!(self.header("x-request-id"), Some(id), "{what}");
    }
}

/// Splits what a connection received into responses (every answer here has a length).
fn answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let body_end = (end + 4 + len).min(bytes.len());
        out.push(Answer { status, headers, body: bytes[end + 4..body_end].to_vec() });
        bytes = &bytes[body_end..];
    }
    out
}

/// Reads until the server closes the connection (or `BOUND` passes: then `closed` is false).
async fn read_to_close(s: &mut (impl AsyncRead + Unpin)) -> (Vec<Answer>, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (answers(&got), closed)
}

/// Reads exactly one response (with its body) and leaves the connection open.
async fn read_one(s: &mut TcpStream) -> Answer {
    let mut got = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let a = answers(&got);
                let len: usize =
                    a.first().and_then(|a| a.header("content-length")).and_then(|v| v.parse().ok()).unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response in time");
    answers(&got).into_iter().next().expect("a response")
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect")
}

/// Sends `bytes` on a fresh connection and reads everything until the server closes it.
async fn exchange(app: &TestApp, bytes: &[u8]) -> (Vec<Answer>, bool) {
    let mut s = connect(app).await;
    s.write_all(bytes).await.expect("write");
    read_to_close(&mut s).await
}

async fn still_ready(app: &TestApp) {
    assert_eq!(app.get("/readyz").await.status(), 200, "the server still serves");
}

#[actix_web::test]
async fn request_heads_the_parser_refuses_are_answered_in_the_error_envelope_and_the_connection_closed() {
    let app = spawn_app().await;
    let huge = format!("GET /livez HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(app.config.max_header_bytes));
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a DEL byte in the bearer token",
            b"GET /v1/me HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer cha_\x7f\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a NUL byte in a header value",
            b"GET /livez HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        ("spaces in the request target", b"GET /a b c HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400, "bad_request"),
        ("an unknown protocol version", b"GET / HTTP/7.1\r\nHost: a\r\n\r\n".to_vec(), 400, "bad_request"),
        ("a method with a separator", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400, "bad_request"),
        ("a header line without a colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n".to_vec(), 400, "bad_request"),
        ("HTTP/1.1 without Host", b"GET /livez HTTP/1.1\r\n\r\n".to_vec(), 400, "bad_request"),
        (
            "Content-Length and Transfer-Encoding together",
            b"POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            "a Content-Length that is no number",
            b"POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        ("headers over max_header_bytes", huge.into_bytes(), 431, "headers_too_large"),
        (
            "more header lines than the parser holds",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let (got, closed) = exchange(&app, &bytes).await;
        assert_eq!(got.len(), 1, "{what}: exactly one answer, got {got:?}");
        got[0].assert_envelope(status, code, what);
        assert_eq!(got[0].header("connection"), Some("close"), "{what}");
        assert!(closed, "{what}: the connection is closed after the answer");
    }
    still_ready(&app).await;
}

#[actix_web::test]
async fn requests_before_a_malformed_head_on_the_same_connection_are_answered_first() {
    let app = spawn_app().await;
    let pipelined = b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\nGET /livez HTTP/1.1\r\nHost: a\r\n\r\nGET /livez HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n";
    let (got, closed) = exchange(&app, pipelined).await;
    assert_eq!(got.iter().map(|a| a.status).collect::<Vec<_>>(), [200, 200, 400], "{got:?}");
    got[2].assert_envelope(400, "bad_request", "the third, malformed request");
    assert!(closed);
}

#[actix_web::test]
async fn header_values_with_bytes_above_0x7f_get_a_4xx_envelope_never_a_500() {
    // obs-text (0x80-0xFF) passes the HTTP parser; every header the code reads must cope.
    let app = spawn_app_with(|mut c| {
        c.trust_forwarded_for = true;
        c
    })
    .await;
    let patient = app.patient().await;
    let obs = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.extend_from_slice(b"\xe9\xff");
        reqwest::header::HeaderValue::from_bytes(&v).expect("obs-text is a valid header value")
    };
    let login = json!({"email": "nobody@example.org", "password": "not-the-password-123"});
    let me = || app.client.get(app.url("/v1/me")).bearer_auth(&patient.token);
    let appointment =
        json!({"clinician_id": uuid::Uuid::new_v4(), "type_id": uuid::Uuid::new_v4(), "start": "2030-01-07T10:00:00Z"});
    let patch_me = app.client.patch(app.url(&format!("/v1/patients/{}", patient.patient_id.unwrap())));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        (
            "Authorization",
            app.client.get(app.url("/v1/me")).header("authorization", obs("Bearer cha_")),
            401,
            Some("unauthenticated"),
        ),
        (
            "Authorization scheme",
            app.client.get(app.url("/v1/me")).header("authorization", obs("Bearer")),
            401,
            Some("unauthenticated"),
        ),
        ("Origin off the socket routes", me().header("origin", obs("http://a")), 200, None),
        (
            "X-Forwarded-For",
            app.client.post(app.url("/v1/auth/login")).json(&login).header("x-forwarded-for", obs("1.2.3.4")),
            401,
            Some("invalid_credentials"),
        ),
        (
            "User-Agent",
            app.client.post(app.url("/v1/auth/login")).json(&login).header("user-agent", obs("phone")),
            401,
            Some("invalid_credentials"),
        ),
        (
            "Content-Type",
            app.client
                .post(app.url("/v1/auth/login"))
                .body(login.to_string())
                .header("content-type", obs("application/json")),
            415,
            Some("unsupported_media_type"),
        ),
        (
            "If-Match",
            patch_me.bearer_auth(&patient.token).json(&json!({})).header("if-match", obs("\"1")),
            412,
            Some("precondition_failed"),
        ),
        (
            "Idempotency-Key",
            app.client
                .post(app.url("/v1/appointments"))
                .bearer_auth(&patient.token)
                .json(&appointment)
                .header("idempotency-key", obs("k")),
            400,
            Some("invalid_field"),
        ),
        ("Accept-Encoding", me().header("accept-encoding", obs("gzip")), 200, None),
        ("Cookie", me().header("cookie", obs("a=")), 200, None),
        ("Host", me().header("host", obs("a")), 200, None),
    ];
    for (what, req, status, code) in cases {
        let res = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(res.status().as_u16(), status, "{what}");
        let body: Value = res.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        if let Some(code) = code {
            assert_eq!(body["error"]["code"], code, "{what}: {body}");
            assert!(body["error"]["request_id"].is_string(), "{what}: {body}");
        }
    }
    // On a socket route the origin is read before anything else (raw: websocket clients will
    // not send such a header).
    let mut upgrade = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {}\r\nOrigin: http://",
        patient.token
    )
    .into_bytes();
    upgrade.extend_from_slice(b"\xe9\r\n\r\n");
    let mut s = connect(&app).await;
    s.write_all(&upgrade).await.unwrap();
    read_one(&mut s).await.assert_envelope(403, "origin_not_allowed", "an Origin with obs-text");
    still_ready(&app).await;
}

/// An app with short client timeouts, for the slow-client tests.
async fn impatient_app() -> TestApp {
    spawn_app_with(|mut c| {
        c.client_header_timeout_ms = 600;
        c.client_body_timeout_ms = 600;
        c.client_body_min_rate = 1000;
        c.client_disconnect_timeout_ms = 300;
        c
    })
    .await
}

/// Asserts that `s` is answered `408 request_timeout` (after `before`, if any) and closed
/// between `at_least` and `BOUND` after `since`.
async fn assert_timed_out(
    s: &mut (impl AsyncRead + Unpin),
    since: Instant,
    at_least: Duration,
    before: &[u16],
    what: &str,
) {
    let (got, closed) = read_to_close(s).await;
    let took = since.elapsed();
    assert!(closed, "{what}: still open after {took:?}");
    assert!(took >= at_least, "{what}: answered after {took:?}, before its timeout");
    assert_eq!(got.len(), before.len() + 1, "{what}: {got:?}");
    for (a, status) in got.iter().zip(before) {
        assert_eq!(a.status, *status, "{what}");
    }
    got.last().unwrap().assert_envelope(408, "request_timeout", what);
}

#[actix_web::test]
async fn slow_request_heads_are_answered_408_within_the_timeout_while_other_clients_are_served() {
    let app = impatient_app().await;
    let t0 = Instant::now();
    // Connects and says nothing.
    let mut silent = connect(&app).await;
    // Sends half a request line.
    let mut dawdler = connect(&app).await;
    dawdler.write_all(b"GET /livez HTTP/1.1\r\nHo").await.unwrap();
    // A first request in full, then a second head that stops half-way: the parser itself times
    // only a connection's first head.
    let mut second = connect(&app).await;
    second.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    assert_eq!(read_one(&mut second).await.status, 200);
    let t1 = Instant::now();
    second.write_all(b"GET /livez HTTP/1.1\r\nHost").await.unwrap();

    // Meanwhile everyone else is served at once.
    for _ in 0..5 {
        let started = Instant::now();
        still_ready(&app).await;
        assert!(started.elapsed() < Duration::from_millis(600), "a prompt client waited {:?}", started.elapsed());
    }

    let at_least = Duration::from_millis(550);
    assert_timed_out(&mut silent, t0, at_least, &[], "a connection that sends nothing").await;
    assert_timed_out(&mut dawdler, t0, at_least, &[], "half a request line").await;
    assert_timed_out(&mut second, t1, at_least, &[], "a slow second head").await;
    still_ready(&app).await;
}

#[actix_web::test]
async fn a_body_that_stops_arriving_is_answered_408_and_closed_while_others_are_served() {
    let app = impatient_app().await;
    let head =
        "POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    // The finding: Content-Length 100, one byte sent.
    let t0 = Instant::now();
    let mut stalled = connect(&app).await;
    stalled.write_all(format!("{head}{{").as_bytes()).await.unwrap();
    // A trickle: a byte every 200 ms never earns enough time (1 ms per byte at 1000 B/s).
    let (mut trickle, mut w) = connect(&app).await.into_split();
    w.write_all(head.as_bytes()).await.unwrap();
    let trickler = tokio::spawn(async move {
        for _ in 0..50 {
            if w.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    for _ in 0..5 {
        let started = Instant::now();
        still_ready(&app).await;
        assert!(started.elapsed() < Duration::from_millis(600), "a prompt client waited {:?}", started.elapsed());
    }
    let at_least = Duration::from_millis(550);
    assert_timed_out(&mut stalled, t0, at_least, &[], "one byte of a hundred").await;
    assert_timed_out(&mut trickle, t0, at_least, &[], "a trickling body").await;
    trickler.abort();

    // A body sent in two halves, each well within the allowance, is served as usual.
    let body = json!({"email": "nobody@example.org", "password": "not-the-password-123"}).to_string();
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    let mut fine = connect(&app).await;
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    fine.write_all(head.as_bytes()).await.unwrap();
    fine.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    fine.write_all(b).await.unwrap();
    read_one(&mut fine).await.assert_envelope(401, "invalid_credentials", "a body in two prompt halves");
    still_ready(&app).await;
}

#[actix_web::test]
async fn one_address_holds_at_most_its_share_of_connections_and_a_closed_one_frees_its_place() {
    let app = spawn_app_with(|mut c| {
        c.connections_per_address = 3;
        c.client_header_timeout_ms = 60_000;
        c.keep_alive_secs = 60;
        c
    })
    .await;
    // Three clients from this address each make a request and then start the next one slowly,
    // holding their connections. The first answer proves the server counted the connection:
    // its workers take connections up in their own order, so a connection opened later can be
    // counted earlier (and a cap then refuses the earlier one, correctly, but not as the test
    // meant).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&app).await;
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        assert_eq!(read_one(&mut s).await.status, 200, "a connection under the cap is served");
        s.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // ...so one more is refused at once, in the envelope, and closed.
    let started = Instant::now();
    let (got, closed) = exchange(&app, b"GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let took = started.elapsed();
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].assert_envelope(429, "too_many_connections", "the fourth connection");
    assert_eq!(got[0].header("retry-after"), Some("1"));
    assert!(closed && took < Duration::from_secs(3), "refused at once: {took:?}");

    // One slow client finishes its request: its connection stays (keep-alive) and still counts.
    held[0].write_all(b"Host: a\r\n\r\n").await.unwrap();
    assert_eq!(read_one(&mut held[0]).await.status, 200);
    // Another goes away: its place is free again.
    drop(held.pop());
    eventually(BOUND, "a place freed by a closed connection", || async {
        let (got, _) = exchange(&app, b"GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        (got.first().map(|a| a.status) == Some(200)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn an_idle_keep_alive_connection_is_closed_after_keep_alive_secs() {
    let app = spawn_app_with(|mut c| {
        c.keep_alive_secs = 1;
        c
    })
    .await;
    let mut s = connect(&app).await;
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    assert_eq!(read_one(&mut s).await.status, 200);
    let idle = Instant::now();
    let (got, closed) = read_to_close(&mut s).await;
    assert!(got.is_empty(), "an idle close is silent: {got:?}");
    assert!(closed && idle.elapsed() >= Duration::from_millis(900), "closed after {:?}", idle.elapsed());
}

#[actix_web::test]
async fn a_client_still_sending_an_oversized_head_receives_the_431() {
    let app = spawn_app_with(|mut c| {
        c.max_header_bytes = 2048;
        c
    })
    .await;
    let (mut s, mut writer) = connect(&app).await.into_split();
    let pump = tokio::spawn(async move {
        let _ = writer.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\nX-Big: ").await;
        for _ in 0..25 {
            if writer.write_all(&[b'a'; 4096]).await.is_err() {
                break;
            }
        }
    });
    let (got, closed) = read_to_close(&mut s).await;
    pump.abort();
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].assert_envelope(431, "headers_too_large", "a 100 KB header");
    assert!(closed);
}

/// The socket routes, with what each needs to open: path and a user allowed there.
async fn socket_routes(app: &TestApp) -> Vec<(String, crate::helpers::User)> {
    let s = crate::consults::setup(app).await;
    let (streamer, scan) = crate::scan_stream::patient_with_scan(app).await;
    let (rtc_user, rtc_scan) = crate::scan_stream::patient_with_scan(app).await;
    vec![
        ("/v1/ws".to_string(), s.patient.clone()),
        ("/v1/dashboard/ws".to_string(), s.clin.clone()),
        (format!("/v1/consults/{}/signal", s.consult), s.patient.clone()),
        (format!("/v1/scans/{scan}/stream"), streamer),
        (format!("/v1/scans/{rtc_scan}/rtc"), rtc_user),
    ]
}

/// Opens `path` with a fresh ticket (or the bearer token) and `headers`; the status of the
/// answer and its error code, if any.
async fn open_socket(
    app: &TestApp,
    path: &str,
    who: &crate::helpers::User,
    ticket: bool,
    headers: &[(&str, &str)],
) -> (u16, Option<String>) {
    let mut url = format!("ws://127.0.0.1:{}{path}", app.port);
    if ticket {
        let t: Value = app.post_auth("/v1/auth/ws-ticket", &who.token, &json!({})).await.json().await.unwrap();
        url.push_str(&format!("?ticket={}", t["ticket"].as_str().unwrap()));
    }
    let mut req = url.into_client_request().unwrap();
    if !ticket {
        req.headers_mut().insert("authorization", format!("Bearer {}", who.token).parse().unwrap());
    }
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(req)).await.expect("answered in time") {
        Ok((mut ws, res)) => {
            let _ = ws.close(None).await;
            (res.status().as_u16(), None)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap_or(Value::Null);
            (r.status().as_u16(), body["error"]["code"].as_str().map(str::to_string))
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

#[actix_web::test]
async fn every_socket_route_admits_browsers_from_public_url_and_allowed_origins_only() {
    let app = spawn_app_with(|mut c| {
        c.public_url = "https://coherency.example.org".into();
        c.allowed_origins = "https://clinic.example, http://localhost:8080/".into();
        c
    })
    .await;
    let own_host = format!("http://127.0.0.1:{}", app.port);
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("a foreign site", vec![("origin", "https://evil.example")]),
        ("the request's own Host (which the client picks)", vec![("origin", own_host.as_str())]),
        ("a spoofed Host and a matching Origin", vec![("host", "evil.example"), ("origin", "http://evil.example")]),
        ("an allowed host with the wrong scheme", vec![("origin", "http://clinic.example")]),
        ("an allowed host on another port", vec![("origin", "https://clinic.example:8443")]),
        ("an opaque origin", vec![("origin", "null")]),
    ];
    let admitted: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("public_url", vec![("origin", "https://coherency.example.org")]),
        ("an allowed origin", vec![("origin", "https://clinic.example")]),
        ("an allowed origin listed with a slash", vec![("origin", "http://localhost:8080")]),
        ("no Origin: a native app", vec![]),
    ];
    for (path, who) in socket_routes(&app).await {
        for (what, headers) in &refused {
            let (status, code) = open_socket(&app, &path, &who, true, headers).await;
            assert_eq!((status, code.as_deref()), (403, Some("origin_not_allowed")), "{path}, {what}");
        }
        for (what, headers) in &admitted {
            let (status, code) = open_socket(&app, &path, &who, true, headers).await;
            assert_eq!(status, 101, "{path}, {what} with a ticket: {code:?}");
        }
        let (status, code) = open_socket(&app, &path, &who, false, &[]).await;
        assert_eq!(status, 101, "{path}, a native app's bearer token: {code:?}");
    }
}
