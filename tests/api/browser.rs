//! Real browsers in the workspace's consult: runs `web/tests/visit.mjs` (Playwright driving the
//! system Chromium) against a server started here. Ignored by a plain `cargo test` because
//! it needs Chromium and `web/node_modules` (`scripts/browser-setup`); `scripts/test-browser` installs them and
//! runs it with `--run-ignored only`.

use std::time::Duration;

use coherency_protocol::ids::ScanId;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, User};

/// The whole browser scenario may take this long.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(200);

/// An app serving `web/` for a browser page: same-origin with `public_url` (sockets check
/// Origin), so the port is chosen before the server binds it; WebRTC on loopback only.
pub async fn page_app() -> TestApp {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    spawn_app_with(move |mut c| {
        c.http_addr = format!("127.0.0.1:{port}");
        c.public_url = format!("http://127.0.0.1:{port}");
        c.webrtc_loopback_only = true;
        c.web_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web").into();
        c
    })
    .await
}

/// Runs the Playwright script `web/tests/<script>` with `BASE` and `env`; fails unless it
/// succeeds within [`BROWSER_TIMEOUT`].
pub async fn run_page_script(app: &TestApp, script: &str, env: &[(&str, &str)]) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(format!("{}/web/tests/{script}", env!("CARGO_MANIFEST_DIR"))).env("BASE", &app.address).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out =
        tokio::time::timeout(BROWSER_TIMEOUT, cmd.output()).await.expect("browser test finishes").expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "browser scenario failed:\n{stdout}\n{stderr}");
}

/// The display name of user `id`.
async fn display_name(app: &TestApp, id: uuid::Uuid) -> String {
    sqlx::query_scalar::<_, String>("SELECT display_name FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pg)
        .await
        .unwrap()
}

/// Books `patient` with `clin` at the first 5-minute mark at least a minute ahead of the app's clock.
async fn book_soon(app: &TestApp, patient: &User, clin: &User, ty: uuid::Uuid) -> uuid::Uuid {
    let now = app.clock.now().timestamp();
    let start = ((now + 60 + 299) / 300) * 300;
    let start = chrono::DateTime::from_timestamp(start, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    crate::dashboard::book_at(app, patient, clin, ty, &start).await
}

/// A whole visit in two browsers (`web/tests/visit.mjs`): board → waiting room → admitted from
/// the board → video both ways → a scan requested, streamed by the phone from the patient's
/// capture link, followed live, measured, outlined and confirmed → the end; with a wrong
/// password, an expired session, a stranger's link and a denied patient on the way.
#[actix_web::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn a_whole_visit_runs_in_the_browser_from_the_board_to_the_end_of_the_consult() {
    let app = page_app().await;
    // Hours covering the whole day and a 5-minute type: whenever the test runs, a slot starts
    // within minutes (inside the patient's 15-minute window to join).
    let (clin, ty) = crate::dashboard::clinician_with_hours(&app, "00:00", "23:59", 5).await;
    let patient = app.patient().await;
    // Names of their own, so the board's rows are told apart by name as a clinician would.
    let other = app.patient_named("Bea", "Okafor").await;
    let stranger = app.patient_named("Cy", "Stranger").await;
    for p in [&patient, &other] {
        crate::dashboard_browser::add_to_care_team(&app, p.patient_id.unwrap(), clin.id).await;
    }
    crate::scan_stream::consent(&app, &patient).await;
    let res = app
        .post_auth(
            &format!("/v1/patients/{}/allergies", patient.patient_id.unwrap()),
            &clin.token,
            &json!({"substance": "penicillin", "severity": "severe", "reaction": "hives"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    // The second patient's own consult with this clinician, which they will be denied.
    let res = app.post_auth("/v1/consults", &clin.token, &json!({"patient_id": other.patient_id})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let consult2 = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // A fresh authenticator step for the clinician's sign-in in the page (moves the app clock
    // 31 s; the booking is made after, at the moved clock).
    let code = crate::dashboard_browser::next_code(&app, &clin);
    let appointment = book_soon(&app, &patient, &clin, ty).await;
    let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/test-artifacts");
    std::fs::create_dir_all(artifacts).unwrap();
    let params = json!({
        "base": app.address, "artifacts": artifacts, "appointment": appointment,
        "clinician": {"email": clin.email, "password": clin.password, "code": code, "name": display_name(&app, clin.id).await},
        "patient": {"email": patient.email, "password": patient.password, "name": display_name(&app, patient.id).await},
        "patient2": {"token": other.token, "name": display_name(&app, other.id).await},
        "consult2": consult2, "stranger": stranger.token,
    });
    let mut child = std::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/web/tests/visit.mjs"))
        .env("VISIT_TEST", params.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("node runs");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("browser: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The phone: the patient's capture link, redeemed for a session that streams that scan.
    let line = crate::dashboard_browser::expect(&mut rx, "CAPTURE ").await;
    let url = line.trim_start_matches("CAPTURE ").trim();
    let code = url.split_once("#code=").map(|(_, c)| c).expect("the link carries its code in the fragment");
    let res = app.post_json("/v1/capture/redeem", &json!({"code": code})).await;
    assert_eq!(res.status(), 200, "redeem: {}", res.text().await.unwrap_or_default());
    let phone: Value = res.json().await.unwrap();
    let scan = ScanId::from_uuid(phone["scan_id"].as_str().unwrap().parse().unwrap());
    crate::dashboard_browser::stream_scan_with_token(
        &app,
        phone["access_token"].as_str().unwrap(),
        scan,
        Duration::from_millis(40),
    )
    .await;
    crate::dashboard_browser::expect(&mut rx, "DONE").await;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the browser checks failed (see above)");
    // Server side: the consult's log is gapless and ends; the outline was previewed, then stored once.
    let consult: uuid::Uuid = sqlx::query_scalar("SELECT id FROM consults WHERE appointment_id = $1")
        .bind(appointment)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    let evs: Vec<Value> =
        app.get_auth(&format!("/v1/consults/{consult}/events"), &patient.token).await.json().await.unwrap();
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64 + 1);
    }
    assert_eq!(evs.last().unwrap()["kind"], "ended");
    let methods: Vec<String> =
        sqlx::query_scalar("SELECT method FROM scan_measurements WHERE scan_id = $1 ORDER BY created_at")
            .bind(scan.as_uuid())
            .fetch_all(&app.pg)
            .await
            .unwrap();
    assert_eq!(methods, ["auto", "polygon"], "the automatic measurement and the one confirmed outline");
    for action in ["scan.measurements.preview", "scan.measurements.create"] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1")
            .bind(action)
            .fetch_one(&app.pg)
            .await
            .unwrap();
        assert_eq!(n, 1, "{action} audited once");
    }
}
