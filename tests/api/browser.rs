//! Real browsers on the consult page: runs `web/tests/consult.mjs` (Playwright driving the
//! system Chromium) against a server started here. Ignored by a plain `cargo test` because
//! it needs Chromium and `web/node_modules` (`scripts/browser-setup`); `scripts/test-browser` installs them and
//! runs it with `--run-ignored only`.

use std::time::Duration;

use coherency_protocol::ids::ScanId;

use crate::consults::setup;
use crate::helpers::{eventually, spawn_app_with, TestApp};

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

#[actix_web::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn two_browsers_consult_the_patient_waits_is_admitted_sees_video_chats_is_scanned_and_hangs_up_in_order() {
    let app = page_app().await;
    let s = setup(&app).await;
    let consult = s.consult.to_string();
    let name_of = |id| {
        let pg = app.pg.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT display_name FROM users WHERE id = $1")
                .bind(id)
                .fetch_one(&pg)
                .await
                .unwrap()
        }
    };
    let (patient_name, clinician_name) = (name_of(s.patient.id).await, name_of(s.clin.id).await);
    let stranger = app.patient().await;
    let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/test-artifacts");
    std::fs::create_dir_all(artifacts).unwrap();
    let env = [
        ("ARTIFACTS", artifacts),
        ("STRANGER_TOKEN", &stranger.token),
        ("CONSULT", consult.as_str()),
        ("PATIENT_TOKEN", &s.patient.token),
        ("CLINICIAN_TOKEN", &s.clin.token),
        ("PATIENT_EMAIL", &s.patient.email),
        ("PATIENT_PASSWORD", &s.patient.password),
        ("PATIENT_NAME", &patient_name),
        ("CLINICIAN_NAME", &clinician_name),
    ];
    // The patient's phone: once the clinician asks for a scan in the consult, a phantom scan is
    // streamed into it with the patient's own token.
    crate::scan_stream::consent(&app, &s.patient).await;
    // Something for the clinician's summary beside the video.
    let res = app
        .post_auth(
            &format!("/v1/patients/{}/allergies", s.patient.patient_id.unwrap()),
            &s.clin.token,
            &serde_json::json!({"substance": "penicillin", "severity": "severe", "reaction": "hives"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let phone = async {
        let scan = eventually(Duration::from_secs(120), "the clinician to ask for a scan", || {
            let pg = app.pg.clone();
            async move {
                sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM scans WHERE consult_id = $1")
                    .bind(s.consult)
                    .fetch_optional(&pg)
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await;
        crate::dashboard_browser::stream_scan(&app, &s.patient, ScanId::from_uuid(scan), Duration::ZERO).await;
    };
    tokio::join!(run_page_script(&app, "consult.mjs", &env), phone);
    let evs: Vec<serde_json::Value> =
        app.get_auth(&format!("/v1/consults/{}/events", s.consult), &s.clin.token).await.json().await.unwrap();
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64 + 1);
    }
    assert_eq!(evs.last().unwrap()["kind"], "ended");
}
