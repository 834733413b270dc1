//! Smoke runs of the `loadtest` consult and mixed scenarios against a test app (the SFU on
//! loopback only), and of `consult` against two nodes: short, so the suite stays quick, but
//! every part really runs.

use crate::dashboard::{clinician_with_calendar, run_loadtest, run_loadtest_on};
use crate::helpers::{spawn_app_with, NodeProcess, TestApp};
use crate::metrics::counter;
use coherency::auth::Role;

async fn app() -> TestApp {
    spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        // The mixed run's booking storm and setup calls share one address.
        c.api_rate_per_sec = 10_000;
        c.api_rate_burst = 10_000;
        c
    })
    .await
}

async fn consult_statuses(app: &TestApp, clinician: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar!("SELECT status FROM consults WHERE clinician_id = $1", clinician)
        .fetch_all(&app.pg)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn the_loadtest_consult_scenario_sends_video_both_ways_through_the_sfu() {
    let app = app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let admin = app.staff(Role::Admin, true).await;
    let args = ["consult", "--rooms", "2", "--video-kbps", "200", "--duration", "3s"];
    let slo = ["--slo", "min_rooms=2", "--slo", "signalling_p99_ms=5000"];
    let env = [("LOADTEST_STAFF_TOKEN", clin.token.as_str()), ("LOADTEST_ADMIN_TOKEN", admin.token.as_str())];
    let report = run_loadtest(&app, &[&args[..], &slo[..]].concat(), &env).await;
    let c = &report["counts"];
    assert_eq!(c["rooms_established"], 2.0, "{report}");
    let (sent, received) = (c["packets_sent"].as_f64().unwrap(), c["packets_received"].as_f64().unwrap());
    // 200 kbit/s at 30 fps is one packet a frame: ~90 a participant in 3 s, four senders.
    assert!(sent >= 200.0, "{report}");
    assert!(received > 0.0 && received <= sent, "{report}");
    assert!(c["loss_pct"].as_f64().unwrap() < 50.0, "most packets arrive, even on a busy machine: {report}");
    let l = &report["latencies"];
    assert!(l["signalling"]["count"].as_f64().unwrap() >= 8.0, "pings were answered: {report}");
    assert_eq!(l["setup"]["count"], 2.0);
    assert!(l["media"]["count"].as_f64().unwrap() > 0.0);
    assert!(l["offer_answer"]["count"].as_f64().unwrap() >= 4.0, "both offers of both rooms: {report}");
    // The consults were real: opened by the clinician, both admitted, then ended.
    assert_eq!(consult_statuses(&app, clin.id).await, vec!["ended".to_string(); 2]);
}

#[actix_rt::test]
async fn the_loadtest_mixed_scenario_runs_every_part_at_once() {
    let app = app().await;
    let (clin, _) = clinician_with_calendar(&app).await;
    let admin = app.staff(Role::Admin, true).await;
    let args = [
        "mixed",
        "--scans",
        "1",
        "--fps",
        "10",
        "--rooms",
        "1",
        "--video-kbps",
        "200",
        "--boards",
        "5",
        "--rate",
        "4",
        "--bookers",
        "4",
        "--slots",
        "2",
        "--duration",
        "3s",
    ];
    let env = [("LOADTEST_STAFF_TOKEN", clin.token.as_str()), ("LOADTEST_ADMIN_TOKEN", admin.token.as_str())];
    let report = run_loadtest(&app, &[&args[..], &["--slo", "min_rooms=1"]].concat(), &env).await;
    assert_eq!(report["scenario"], "mixed");
    let errors = report["errors"].as_object().unwrap();
    assert!(!errors.keys().any(|k| k.ends_with("_failed")), "every part ran: {report}");
    assert!(report["frames_acked"].as_f64().unwrap() > 0.0, "scan: {report}");
    let c = &report["counts"];
    assert_eq!(c["consult_rooms_established"], 1.0, "{report}");
    assert_eq!(c["dashboard_sockets"], 5.0, "{report}");
    assert!(c["dashboard_changes"].as_f64().unwrap() >= 4.0, "{report}");
    assert!(c["booking_attempts"].as_f64().unwrap() >= 4.0, "{report}");
    assert_eq!(c["booking_double_bookings"], 0.0);
    let l = &report["latencies"];
    for name in ["consult_signalling", "dashboard_delivery", "booking_attempt"] {
        assert!(l[name]["count"].as_f64().unwrap_or(0.0) > 0.0, "{name}: {report}");
    }
    assert!(report["ack_latency"]["count"].as_f64().unwrap() > 0.0, "{report}");
}

#[actix_rt::test]
async fn the_loadtest_consult_scenario_spans_two_nodes_with_every_room_set_up() {
    let app = app().await;
    let node_b = NodeProcess::start(
        &app.config,
        &[
            ("COHERENCY_WEBRTC_LOOPBACK_ONLY", "true"),
            ("COHERENCY_API_RATE_PER_SEC", "10000"),
            ("COHERENCY_API_RATE_BURST", "10000"),
        ],
    );
    let clin = app.staff(Role::Clinician, true).await;
    let admin = app.staff(Role::Admin, true).await;
    let b = node_b.url("");
    let args = ["consult", "--rooms", "2", "--video-kbps", "200", "--duration", "2s"];
    let slo = ["--slo", "min_rooms=2", "--slo", "max_errors=0"];
    let env = [("LOADTEST_STAFF_TOKEN", clin.token.as_str()), ("LOADTEST_ADMIN_TOKEN", admin.token.as_str())];
    let report = run_loadtest_on(&[&app.address, &b], &[&args[..], &slo[..]].concat(), &env).await;
    assert_eq!(report["targets"], serde_json::json!([app.address, b]), "{report}");
    assert_eq!(report["counts"]["rooms_established"], 2.0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["counts"]["packets_received"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["latencies"]["signalling"]["count"].as_f64().unwrap() > 0.0, "{report}");
    // Each room's patient was on one node and its clinician on the other: each node took one
    // check-in, one admission and two signalling sockets (one room's patient, the other's host).
    for (name, metrics) in [
        ("this node", app.get("/metrics").await.text().await.unwrap()),
        ("node B", app.client.get(node_b.url("/metrics")).send().await.unwrap().text().await.unwrap()),
    ] {
        assert_eq!(counter(&metrics, "/v1/consults/{id}/check-in", "200"), 1, "{name}");
        assert_eq!(counter(&metrics, "/v1/consults/{id}/participants/{pid}/admit", "200"), 1, "{name}");
        assert_eq!(counter(&metrics, "/v1/consults/{id}/signal", "101"), 2, "{name}");
    }
    assert_eq!(consult_statuses(&app, clin.id).await, vec!["ended".to_string(); 2]);
}
