//! Real browsers on the consult page: runs `web/tests/consult.mjs` (Playwright driving the
//! system Chromium) against a server started here. Ignored by a plain `cargo test` because
//! it needs Chromium and `web/node_modules` (`scripts/browser-setup`); `scripts/test-browser` installs them and
//! runs it with `--run-ignored only`.

use std::time::Duration;

use crate::consults::setup;
use crate::helpers::spawn_app_with;

/// The whole browser scenario may take this long.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

#[actix_web::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn two_browsers_consult_the_patient_waits_is_admitted_sees_video_chats_and_hangs_up_in_order() {
    // The page must be same-origin with public_url (sockets check Origin), so the port is
    // chosen before the server binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = spawn_app_with(move |mut c| {
        c.http_addr = format!("127.0.0.1:{port}");
        c.public_url = format!("http://127.0.0.1:{port}");
        c.webrtc_loopback_only = true;
        c.web_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web").into();
        c
    })
    .await;
    let s = setup(&app).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/web/tests/consult.mjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .env("BASE", &app.address)
        .env("CONSULT", s.consult.to_string())
        .env("PATIENT_TOKEN", &s.patient.token)
        .env("CLINICIAN_TOKEN", &s.clin.token)
        .kill_on_drop(true);
    let out =
        tokio::time::timeout(BROWSER_TIMEOUT, cmd.output()).await.expect("browser test finishes").expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "browser scenario failed:\n{stdout}\n{stderr}");
    let evs: Vec<serde_json::Value> =
        app.get_auth(&format!("/v1/consults/{}/events", s.consult), &s.clin.token).await.json().await.unwrap();
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64 + 1);
    }
    assert_eq!(evs.last().unwrap()["kind"], "ended");
}
