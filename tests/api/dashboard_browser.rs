//! The dashboard pages in headless Chromium (Playwright, `web/tests/dashboard.board.mjs`),
//! against a real server: a patient checking in through the API on the clinician's board
//! within 1 s and moving to "in consult" when admitted, live scan progress then
//! measurements on the board, the 3D viewer drawing the mesh, one history point per
//! completed scan, a board that loses its socket ending like one that did not, and a
//! clinician never seeing another's patients.
//!
//! This test drives the scenario from Rust (accounts, bookings, streaming phantom scans
//! with `coherency_protocol::client`) and the browser side runs in Node; they talk over the
//! script's stdin/stdout. Needs `scripts/browser-setup` (Chromium, `web/node_modules`, the
//! bundle), which `scripts/test` runs first.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use coherency::auth::Role;
use coherency_protocol::client::{ClientConfig, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{eventually, spawn_app_with, TestApp, User};
use crate::measurements::wire_frame;
use crate::scan_stream::{consent, create_scan};

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// The `web/` folder (its Playwright and bundle checked) and an app serving it from its
/// `public_url`, the port chosen first: sockets accept no other browser origin.
async fn web_app() -> (PathBuf, TestApp) {
    let web = web_dir();
    assert!(
        web.join("node_modules/playwright-core").is_dir() && web.join("dashboard/dist/app.js").is_file(),
        "run scripts/browser-setup first (Chromium, web/node_modules, the dashboard bundle)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = web.display().to_string();
    let app = spawn_app_with(move |mut c| {
        c.http_addr = format!("127.0.0.1:{port}");
        c.public_url = format!("http://127.0.0.1:{port}");
        c.web_dir = dir;
        c
    })
    .await;
    (web, app)
}

/// Streams a phantom wound scan of `patient`, `pace` between frames, and waits for it to
/// complete.
pub async fn stream_scan(app: &TestApp, who: &User, scan: ScanId, pace: Duration) {
    stream_scan_with_token(app, &who.token, scan, pace).await;
}

/// [`stream_scan`] with any bearer token that may stream the scan (a user's, or a capture
/// link's session: `crate::capture_link`).
pub async fn stream_scan_with_token(app: &TestApp, token: &str, scan: ScanId, pace: Duration) {
    let phantom = Phantom::new(presets::spherical_cap(false));
    let rendered = phantom.scan(&ScanConfig::iphone(1));
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), token.to_string(), scan)).await.unwrap();
    for (i, f) in rendered.frames.iter().enumerate() {
        client.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    client.finish().await.unwrap();
    let pg = app.pg.clone();
    eventually(Duration::from_secs(180), "the scan to complete", || {
        let pg = pg.clone();
        async move {
            let s: String = sqlx::query_scalar!("SELECT status FROM scans WHERE id = $1", scan.as_uuid())
                .fetch_one(&pg)
                .await
                .ok()?;
            assert_ne!(s, "failed");
            (s == "complete").then_some(())
        }
    })
    .await;
}

/// A fresh TOTP step for `u` (codes are single-use per step), moving the app clock.
pub(crate) fn next_code(app: &TestApp, u: &User) -> String {
    app.clock.advance(Duration::from_secs(31));
    coherency::auth::totp::code_at(u.totp_secret.as_deref().unwrap(), app.clock.now()).unwrap()
}

async fn token(app: &TestApp, u: &User) -> String {
    let code = next_code(app, u);
    let res =
        app.post_json("/v1/auth/login", &json!({"email": u.email, "password": u.password, "totp_code": code})).await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

pub(crate) async fn add_to_care_team(app: &TestApp, patient: Uuid, clinician: Uuid) {
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, role, added_at) VALUES ($1, $2, 'primary', now())",
        patient,
        clinician,
    )
    .execute(&app.pg)
    .await
    .unwrap();
}

/// The next line from the browser script starting with `what`.
pub(crate) async fn expect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(240), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for the browser: {what}"))
            .unwrap_or_else(|| panic!("the browser script ended before {what}"));
        if line.starts_with(what) {
            return line;
        }
    }
}

#[actix_rt::test]
async fn the_dashboard_pages_show_live_scans_meshes_history_and_only_the_viewers_patients() {
    let (web, app) = web_app().await;
    let alice = app.staff(Role::Clinician, true).await;
    let bob = app.staff(Role::Clinician, true).await;
    let ada = app.patient().await; // Alice's patient
    let bea = app.patient().await; // Bob's patient
    let (ada_id, bea_id) = (ada.patient_id.unwrap(), bea.patient_id.unwrap());
    add_to_care_team(&app, ada_id, alice.id).await;
    add_to_care_team(&app, bea_id, bob.id).await;
    consent(&app, &ada).await;
    consent(&app, &bea).await;
    // Bob's patient is scanning too: it must never reach Alice's board, nor Ada's Bob's.
    let bea_scan = create_scan(&app, &bea, bea_id).await;

    // One scan of Ada's completed before the boards open.
    let first = create_scan(&app, &ada, ada_id).await;
    stream_scan(&app, &ada, first, Duration::ZERO).await;

    let alice_token = token(&app, &alice).await;
    // An ad hoc consult of Alice's with Ada; Ada checks in from the browser script.
    let res = app.post_auth("/v1/consults", &alice_token, &json!({"patient_id": ada_id})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let consult = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let bob_token = token(&app, &bob).await;
    // Last: a code is refused once a later step has been used.
    let alice_code = next_code(&app, &alice);
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let params = json!({
        "base": app.address,
        "artifacts": artifacts,
        "alice": {"email": alice.email, "password": alice.password, "code": alice_code, "token": alice_token},
        "bob": {"token": bob_token},
        "ada": ada_id, "bea": bea_id, "first_scan": first, "bea_scan": bea_scan,
        "consult": consult, "ada_token": ada.token,
    });
    let mut child = Command::new("node")
        .arg(web.join("tests/dashboard.board.mjs"))
        .env("DASHBOARD_TEST", params.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("browser: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    expect(&mut rx, "READY").await;
    // The live scan: paced so the board sees it streaming.
    let second = create_scan(&app, &ada, ada_id).await;
    writeln!(stdin, "SCAN {second}").unwrap();
    stream_scan(&app, &ada, second, Duration::from_millis(40)).await;
    writeln!(stdin, "COMPLETE {second}").unwrap();
    expect(&mut rx, "DONE").await;
    let status = child.wait().unwrap();
    assert!(status.success(), "the browser checks failed (see the output above)");
    assert!(artifacts.join("dashboard-viewer.png").is_file());
}

/// The vertex positions of a binary little-endian PLY as the server writes it
/// (`coherency_recon::mesh`: x, y, z, nx, ny, nz as f32).
fn ply_vertices(ply: &[u8]) -> Vec<[f64; 3]> {
    let end = ply.windows(11).position(|w| w == b"end_header\n").expect("a PLY header") + 11;
    let header = std::str::from_utf8(&ply[..end]).unwrap();
    let n: usize = header
        .lines()
        .find_map(|l| l.strip_prefix("element vertex "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a vertex count");
    let f = |at: usize| f64::from(f32::from_le_bytes(ply[at..at + 4].try_into().unwrap()));
    (0..n).map(|i| end + i * 24).map(|at| [f(at), f(at + 4), f(at + 8)]).collect()
}

/// The pixels of a `width × height` frame that the mesh's vertices project to (row-major,
/// `1` hit, `0` not) and their centroid.
fn silhouette(
    vertices: &[[f64; 3]],
    k: &coherency_recon::Intrinsics,
    pose: &coherency_recon::Pose,
) -> (String, [f64; 2]) {
    let (w, h) = (k.width as usize, k.height as usize);
    let mut hit = vec![false; w * h];
    for v in vertices {
        let p = pose.inverse_transform(coherency_recon::Vec3::new(v[0], v[1], v[2]));
        if let Some((u, v)) = k.project(p) {
            let (x, y) = (u.round(), v.round());
            if x >= 0.0 && y >= 0.0 && (x as usize) < w && (y as usize) < h {
                hit[y as usize * w + x as usize] = true;
            }
        }
    }
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (i, _) in hit.iter().enumerate().filter(|(_, h)| **h) {
        n += 1.0;
        sx += (i % w) as f64;
        sy += (i / w) as f64;
    }
    (hit.iter().map(|&h| if h { '1' } else { '0' }).collect(), [sx / n, sy / n])
}

/// Runs `web/tests/<script>` in Node with `params` as JSON in the environment variable `var`,
/// for at most `limit`; the script prints its checks and `DONE` when every one held.
async fn run_page_script(web: &std::path::Path, script: &str, var: &str, params: Value, limit: Duration) {
    let (script, var) = (web.join("tests").join(script), var.to_owned());
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(script).env(var, params.to_string()).stderr(Stdio::inherit()).output()
    });
    let out = tokio::time::timeout(limit, run).await.expect("the browser script ends").unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success() && stdout.lines().any(|l| l == "DONE"), "the browser checks failed (see above)");
}

/// A scan whose automatic measurement fails (a cap 10 µm deep): the scan page says why, the
/// outline tool draws the mesh from the suggested keyframe's camera, and a clinician's clicks
/// at the true outline's pixels (`web/tests/dashboard.outline.mjs`) become a polygon
/// measurement whose vertices are those pixels and whose area is the wound's.
#[actix_rt::test]
async fn a_clinician_draws_the_outline_of_a_scan_the_automatic_measurement_failed_on() {
    let (web, app) = web_app().await;
    let (alice, ada, scan) = crate::colour::clinician_and_scan(&app).await;
    let phantom = crate::measurements::flat_wound();
    let truth = *phantom.truth();
    let rendered = phantom.scan(&ScanConfig::iphone(1));
    let list = crate::measurements::stream_until_complete(&app, &ada, scan, &rendered).await;
    let outcome = &list["outcome"];
    assert_eq!(outcome["state"], "needs_outline", "{list}");
    let seq = outcome["suggested_keyframe"]["seq"].as_u64().expect("a suggested keyframe") as usize;
    // The frame as sent: the viewer renders the mesh with this camera.
    let frame = &rendered.frames[seq - 1];
    let outline = phantom.outline_in_image(&frame.intrinsics, &frame.pose, 24);
    assert_eq!(outline.len(), 24);
    let centre = outline.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0] / 24.0, a[1] + p[1] / 24.0]);
    let ply = app.get_auth(&format!("/v1/scans/{scan}/mesh?format=ply"), &alice.token).await.bytes().await.unwrap();
    let (mask, mesh_centre) = silhouette(&ply_vertices(&ply), &frame.intrinsics, &frame.pose);

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let params = json!({
        "base": app.address, "artifacts": artifacts, "token": alice.token, "scan": scan,
        "reason_code": outcome["reason"]["code"],
        "keyframe": outcome["suggested_keyframe"], "outline": outline,
        "centre": centre, "mesh_centre": mesh_centre, "mask": mask,
    });
    run_page_script(&web, "dashboard.outline.mjs", "OUTLINE_TEST", params, Duration::from_secs(300)).await;

    let v: Value = app.get_auth(&format!("/v1/scans/{scan}/measurements"), &alice.token).await.json().await.unwrap();
    let ms = v["measurements"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "{v}");
    let m = &ms[0];
    assert_eq!((m["method"].as_str(), m["keyframe_seq"].as_u64()), (Some("polygon"), Some(seq as u64)));
    let drawn: Vec<[f64; 2]> = serde_json::from_value(m["polygon"].clone()).unwrap();
    assert_eq!(drawn.len(), outline.len());
    for (d, t) in drawn.iter().zip(&outline) {
        assert!((d[0] - t[0]).hypot(d[1] - t[1]) <= 0.5, "a click at {t:?} became {d:?}");
    }
    let area = m["outline_area_mm2"]["value"].as_f64().unwrap();
    assert!((area / truth.outline_area_mm2 - 1.0).abs() <= 0.03, "area {area} vs {}", truth.outline_area_mm2);
    assert!(artifacts.join("dashboard-outline-keyframe.png").is_file());
}

/// Issue #24, the wound page: a clinician opens a patient with the demo's two wounds, picks
/// the stalled one on the body map, and reads its healing chart (`web/tests/dashboard.wound.mjs`):
/// the verdict "not on track", the four-week threshold line, the projection, the ± band, tick
/// labels that do not overlap, and only this wound's assessments — the other wound's never
/// appear in its chart.
#[actix_rt::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn browser_wound_page_shows_the_stalled_wounds_chart_threshold_and_projection() {
    let (web, app) = web_app().await;
    let alice = app.staff(Role::Clinician, true).await;
    let ada = app.patient().await;
    let ada_id = ada.patient_id.unwrap();
    add_to_care_team(&app, ada_id, alice.id).await;
    coherency::demo::seed_wounds(&app.state, ada_id, alice.id).await.unwrap();

    // What the API says of each wound: the page must show the same.
    let list: Value = app.get_auth(&format!("/v1/patients/{ada_id}/wounds"), &alice.token).await.json().await.unwrap();
    let mut wounds = vec![];
    for w in list["wounds"].as_array().unwrap() {
        let id = w["id"].as_str().unwrap().to_string();
        let t: Value = app.get_auth(&format!("/v1/wounds/{id}/trajectory"), &alice.token).await.json().await.unwrap();
        let scans: Vec<&str> = t["points"].as_array().unwrap().iter().map(|p| p["scan_id"].as_str().unwrap()).collect();
        wounds.push(json!({
            "id": id, "site": w["site_display"], "points": scans.len(), "scans": scans,
            "verdict": t["metrics"]["four_week"]["verdict"], "projection": t["metrics"]["projection"]["state"],
        }));
    }
    assert_eq!(wounds.len(), 2, "{list}");
    let stalled = wounds.iter().find(|w| w["site"] == "Sacrum").unwrap().clone();
    let other = wounds.iter().find(|w| w["site"] != "Sacrum").unwrap().clone();
    assert_eq!(stalled["verdict"], "not_on_track", "{stalled}");
    // All but the first of the stalled wound's scans had colour: a granulation series.
    let t: Value = app
        .get_auth(&format!("/v1/wounds/{}/trajectory", stalled["id"].as_str().unwrap()), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    let measured: Vec<Uuid> =
        t["points"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().parse().unwrap()).collect();
    for (i, m) in measured.iter().enumerate().skip(1) {
        let g = 30.0 + 5.0 * i as f64;
        let shares: Vec<Value> =
            [("granulation", g), ("slough", 90.0 - g), ("eschar", 5.0), ("epithelial", 3.0), ("other", 2.0)]
                .iter()
                .map(|(c, p)| json!({"class": c, "area_mm2": p * 4.0, "percent": p, "percent_pm": 4.0}))
                .collect();
        let tissue = json!({"shares": shares, "wound_area_mm2": 400.0, "coloured_fraction": 0.95,
            "calibration": {"source": "periwound", "gains": [1.0, 1.0, 1.0], "samples": 500}, "classifier": "test@1"});
        sqlx::query("UPDATE scan_measurements SET tissue = $2, tissue_reason = NULL WHERE id = $1")
            .bind(m)
            .bind(tissue)
            .execute(&app.pg)
            .await
            .unwrap();
    }

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let params = json!({
        "base": app.address, "artifacts": artifacts, "token": alice.token, "patient": ada_id,
        "patient_name": "Ada Lovelace", "stalled": stalled, "other": other, "granulation_points": measured.len() - 1,
    });
    run_page_script(&web, "dashboard.wound.mjs", "WOUND_TEST", params, Duration::from_secs(180)).await;
    assert!(artifacts.join("dashboard-wound.png").is_file());
}

/// The clinician's calendar in Chromium (`web/tests/dashboard.calendar.mjs`): a booked
/// appointment and a hold on Alice's calendar, each at its day and time with the patient named
/// and its state in words (the hold with when it lapses), free slots around them and none over
/// them, the day view, and nothing of Alice's on Bob's calendar.
#[actix_rt::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn browser_calendar_shows_bookings_holds_and_free_slots_where_they_fall() {
    let (web, app) = web_app().await;
    let (alice, ty) = crate::dashboard::clinician_with_calendar(&app).await;
    let (bob, _) = crate::dashboard::clinician_with_calendar(&app).await;
    let ada = app.patient().await;
    let bea = app.patient().await;
    add_to_care_team(&app, ada.patient_id.unwrap(), alice.id).await;
    add_to_care_team(&app, bea.patient_id.unwrap(), alice.id).await;
    let booked = crate::dashboard::book(&app, &ada, &alice, ty, 10).await;
    // Bea holds 11:00 the same day (not confirmed).
    let day = (app.clock.now() + chrono::Duration::days(2)).date_naive();
    let res = app
        .post_auth(
            "/v1/appointments",
            &bea.token,
            &json!({"clinician_id": alice.id, "type_id": ty, "start": format!("{day}T11:00:00Z")}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let held: Value = res.json().await.unwrap();
    assert_eq!(held["status"], "held");

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let params = json!({
        "base": app.address, "artifacts": artifacts, "alice": {"token": alice.token, "id": alice.id},
        "bob": {"token": bob.token, "id": bob.id}, "day": day.to_string(),
        "booked": booked, "held": held["id"], "booked_name": "Ada Lovelace",
    });
    run_page_script(&web, "dashboard.calendar.mjs", "CALENDAR_TEST", params, Duration::from_secs(180)).await;
}

/// Staff without two-step sign-in are taken to set it up on the dashboard
/// (`web/tests/dashboard.enrol.mjs`): a QR code, the key beside it, a wrong code refused in
/// words, the right one confirms, recovery codes once, then the live board.
#[actix_rt::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn browser_staff_without_two_step_sign_in_set_it_up_and_reach_the_board() {
    let (web, app) = web_app().await;
    let newcomer = app.staff(Role::Clinician, false).await;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let params =
        json!({"base": app.address, "email": newcomer.email, "password": newcomer.password, "artifacts": artifacts});
    run_page_script(&web, "dashboard.enrol.mjs", "ENROL_TEST", params, Duration::from_secs(180)).await;
    let enrolled: bool = sqlx::query_scalar("SELECT totp_enabled FROM users WHERE id = $1")
        .bind(newcomer.id)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert!(enrolled, "the account has two-step sign-in now");
}

/// Issue #26, the viewer: a clinician opens a scan whose GLB carries vertex colours (a red bed
/// on darker skin, `crate::colour`); the canvas shows the scan's colours by default, reddish
/// where the wound is, and the labelled toggle switches to the height-coded view and back,
/// changing the canvas's colours (`web/tests/dashboard.colour.mjs`). Then the clinician draws a
/// tissue correction over the bed in the page and names it slough: the correction is stored
/// with the 12 clicked corners, audited, and the measurement's shares now lead with slough.
#[actix_rt::test]
async fn browser_viewer_shows_the_scan_colours_by_default_and_toggles_to_the_height_view() {
    let (web, app) = web_app().await;
    let (alice, ada, scan) = crate::colour::clinician_and_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let list = crate::colour::stream_colour_scan_of(&app, &ada.token, scan, &phantom, 6, [150, 100, 75]).await;
    assert!(list["measurements"][0]["tissue"].is_object(), "{list}");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let params = json!({ "base": app.address, "artifacts": artifacts, "token": alice.token, "scan": scan });
    run_page_script(&web, "dashboard.colour.mjs", "COLOUR_TEST", params, Duration::from_secs(300)).await;
    assert!(artifacts.join("dashboard-colour.png").is_file() && artifacts.join("dashboard-height.png").is_file());
    // The correction drawn in the browser is stored, audited and applied to the measurement.
    let list: Value = app.get_auth(&format!("/v1/scans/{scan}/measurements"), &alice.token).await.json().await.unwrap();
    let m = list["measurements"][0].clone();
    let id = m["id"].as_str().unwrap();
    let v: Value = app
        .get_auth(&format!("/v1/scans/{scan}/measurements/{id}/tissue-corrections"), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    let corrections = v["corrections"].as_array().unwrap();
    assert_eq!(corrections.len(), 1, "{v}");
    assert_eq!(
        (corrections[0]["class"].as_str(), corrections[0]["polygon"].as_array().map(Vec::len)),
        (Some("slough"), Some(12))
    );
    let slough = m["tissue"]["shares"].as_array().unwrap().iter().find(|s| s["class"] == "slough").unwrap().clone();
    assert!(slough["percent"].as_f64().unwrap() >= 50.0, "{m}");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'scan.tissue.correct'")
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(audited, 1);
}
