//! Bounded work per request (`docs/security.md`, "Bounded work"): inputs that size work are
//! refused before any work, quickly, without memory growth, and nothing is stored; the
//! per-request allocation peak is measured (`coherency_request_alloc_peak_bytes`), including
//! work a request waits on in a thread of its own.

use std::time::{Duration, Instant};

use coherency::auth::Role;
use coherency_protocol::client::{ClientConfig, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{eventually, spawn_app, TestApp, User};
use crate::measurements::wire_frame;
use crate::scan_stream::patient_with_scan;

/// The outline of the finding: a care-team clinician's request that used to allocate
/// until the kernel killed the server.
const HOSTILE: &str = r#"{"keyframe_seq":30,"polygon":[[1e308,1e308],[-1e308,1e308],[0,-1e308]]}"#;
/// Finite but huge: 111 s of CPU before a 400, before.
const HUGE: &str = r#"{"keyframe_seq":30,"polygon":[[1e6,1e6],[-1e6,1e6],[0,-1e6]]}"#;
/// Refusals must answer within this (the old code took minutes or never answered).
const FAST: Duration = Duration::from_millis(100);
/// The test process may grow by at most this while the hostile request is sent 50 times.
const RSS_GROWTH_BOUND_BYTES: u64 = 32 << 20;
/// Each refused request's allocation peak stays under this histogram bucket (1 MiB).
const REFUSED_PEAK_BUCKET: &str = "1048576";

/// A finished phantom scan with its frames stored, and the frame a clinician would draw on.
struct Scanned {
    scan: ScanId,
    keyframe_seq: u64,
    outline: Vec<[f64; 2]>,
}

async fn finished_scan(app: &TestApp) -> Scanned {
    let (patient, scan) = patient_with_scan(app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let rendered = phantom.scan(&ScanConfig::iphone(1));
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), patient.token.clone(), scan))
            .await
            .unwrap();
    for (i, f) in rendered.frames.iter().enumerate() {
        client.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
    }
    client.finish().await.unwrap();
    let path = format!("/v1/scans/{scan}/measurements");
    eventually(Duration::from_secs(120), "the scan to finish", || async {
        let v: Value = app.get_auth(&path, &patient.token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed");
        (v["status"] == "complete").then_some(())
    })
    .await;
    let k = rendered.frames.len() / 2;
    let outline = phantom.outline_in_image(&rendered.frames[k].intrinsics, &rendered.true_poses[k], 64);
    Scanned { scan, keyframe_seq: k as u64 + 1, outline }
}

async fn post_raw(app: &TestApp, path: &str, token: &str, body: &str) -> (u16, Value, Duration) {
    let t = Instant::now();
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let v = res.json().await.unwrap_or(Value::Null);
    (status, v, t.elapsed())
}

fn assert_invalid(status: u16, v: &Value, field: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_field", "{v}");
    assert_eq!(v["error"]["field"], field, "{v}");
}

/// The process's resident set, from `/proc/self/status` (the server runs in this process).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

/// The summed peaks (bytes) of the allocation-peak histogram for one route.
async fn alloc_peak_sum(app: &TestApp, method: &str, route: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let labels = format!("method=\"{method}\",route=\"{route}\"");
    text.lines()
        .find(|l| l.starts_with("coherency_request_alloc_peak_bytes_sum") && l.contains(&labels))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// `(count, count in the bucket le)` of the allocation-peak histogram for one route.
async fn alloc_peaks(app: &TestApp, method: &str, route: &str, le: &str) -> (u64, u64) {
    let text = app.get("/metrics").await.text().await.unwrap();
    let labels = format!("method=\"{method}\",route=\"{route}\"");
    let find = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains(&labels))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
    };
    let bucket = text
        .lines()
        .find(|l| {
            l.starts_with("coherency_request_alloc_peak_bytes_bucket")
                && l.contains(&labels)
                && l.contains(&format!("le=\"{le}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64);
    (find("coherency_request_alloc_peak_bytes_count"), bucket)
}

#[actix_web::test]
async fn hostile_polygons_are_refused_at_once_and_memory_stays_bounded() {
    let app = spawn_app().await;
    let s = finished_scan(&app).await;
    let clinician = app.staff(Role::Admin, true).await;
    let path = format!("/v1/scans/{}/measurements", s.scan);
    let route = "/v1/scans/{id}/measurements";

    for body in [HOSTILE, HUGE] {
        let (status, v, took) = post_raw(&app, &path, &clinician.token, body).await;
        assert_invalid(status, &v, "polygon");
        assert!(took < FAST, "refused in {took:?}");
    }
    // Inside the largest frame (640×480) but outside this 256×192 keyframe: refused once
    // the keyframe alone is read, before the scan is fused.
    let outside = json!({"keyframe_seq": s.keyframe_seq, "polygon": [[300.0, 10.0], [310.0, 10.0], [305.0, 20.0]]});
    let (status, v, took) = post_raw(&app, &path, &clinician.token, &outside.to_string()).await;
    assert_invalid(status, &v, "polygon");
    assert!(v["error"]["message"].as_str().unwrap().contains("256x192"), "{v}");
    assert!(took < Duration::from_secs(2), "refused in {took:?}");
    // Too many points, no area, a non-number.
    let many: Vec<[f64; 2]> = (0..2001).map(|i| [f64::from(i % 200), f64::from(i / 200)]).collect();
    for polygon in [json!(many), json!([[1, 1], [50, 50], [100, 100]]), json!([[1, 1], [5, 1]])] {
        let body = json!({"keyframe_seq": s.keyframe_seq, "polygon": polygon}).to_string();
        let (status, v, _) = post_raw(&app, &path, &clinician.token, &body).await;
        assert_invalid(status, &v, "polygon");
    }

    let before = rss_bytes();
    let (count_before, _) = alloc_peaks(&app, "POST", route, REFUSED_PEAK_BUCKET).await;
    let (_, small_before) = alloc_peaks(&app, "POST", route, REFUSED_PEAK_BUCKET).await;
    for i in 0..50 {
        let (status, v, took) = post_raw(&app, &path, &clinician.token, HOSTILE).await;
        assert_invalid(status, &v, "polygon");
        assert!(took < FAST, "request {i} refused in {took:?}");
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < RSS_GROWTH_BOUND_BYTES, "the process grew by {grown} bytes over 50 hostile requests");
    let (count, small) = alloc_peaks(&app, "POST", route, REFUSED_PEAK_BUCKET).await;
    assert_eq!(count - count_before, 50, "every request's peak is recorded");
    assert_eq!(small - small_before, 50, "every refused request allocated under 1 MiB at its peak");

    // Nothing was stored by the refusals; a polygon inside the keyframe still measures,
    // and its peak (the fusion runs on a thread of its own) is counted against it.
    let list: Value = app.get_auth(&path, &clinician.token).await.json().await.unwrap();
    assert_eq!(list["measurements"].as_array().unwrap().len(), 1, "{list}");
    let body = json!({"keyframe_seq": s.keyframe_seq, "polygon": s.outline}).to_string();
    let sum_before = alloc_peak_sum(&app, "POST", route).await;
    let (status, v, _) = post_raw(&app, &path, &clinician.token, &body).await;
    assert_eq!(status, 201, "{v}");
    let peak = alloc_peak_sum(&app, "POST", route).await - sum_before;
    // The scan's decoded frames alone are several MiB; without the account carried into
    // the fusion thread the request would show only its own few hundred KiB.
    assert!(peak > 4.0 * 1024.0 * 1024.0, "the re-measurement peaked at {peak} bytes");
    let (total, under_1_mib) = alloc_peaks(&app, "POST", route, REFUSED_PEAK_BUCKET).await;
    assert_eq!(total, count + 1);
    assert_eq!(under_1_mib, small, "the re-fusion's allocations count against the request");
    let (_, under_budget) = alloc_peaks(&app, "POST", route, "268435456").await;
    assert_eq!(under_budget, total, "a re-measurement of a phantom scan peaks under 256 MiB");
}

// ---------------------------------------------------------------------------------------------
// Schedules and slot windows

async fn put_schedule(app: &TestApp, clin: &User, body: &Value) -> (u16, Value) {
    let res = app
        .client
        .put(app.url(&format!("/v1/clinicians/{}/schedule", clin.id)))
        .bearer_auth(&clin.token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn weekdays(start: &str, end: &str) -> Vec<Value> {
    (1..=5).map(|d| json!({"weekday": d, "start": start, "end": end})).collect()
}

async fn stored_rules(app: &TestApp, clin: Uuid) -> (i64, i64) {
    let rules = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM schedule_rules WHERE clinician_id = $1"#, clin)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    let exceptions =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM schedule_exceptions WHERE clinician_id = $1"#, clin)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    (rules, exceptions)
}

#[actix_web::test]
async fn schedules_that_size_work_without_bound_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let normal = json!({"time_zone": "Europe/London", "weekly": weekdays("09:00", "17:00"),
                        "exceptions": [{"date": "2027-01-04", "kind": "off"}]});
    let (status, v) = put_schedule(&app, &clin, &normal).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stored_rules(&app, clin.id).await, (5, 1));

    let ten_thousand: Vec<Value> =
        (0..10_000).map(|i| json!({"weekday": 1 + i % 7, "start": "09:00", "end": "10:00"})).collect();
    let mut overlapping = weekdays("09:00", "17:00");
    overlapping.push(json!({"weekday": 3, "start": "16:00", "end": "18:00"}));
    let many_exceptions: Vec<Value> = (0..1101).map(|_| json!({"date": "2027-01-04", "kind": "off"})).collect();
    for (body, field) in [
        (json!({"time_zone": "UTC", "weekly": ten_thousand}), "weekly"),
        (json!({"time_zone": "UTC", "weekly": overlapping}), "weekly[5]"),
        (
            json!({"time_zone": "UTC", "weekly": [], "exceptions": [{"date": "0000-01-01", "kind": "off"}]}),
            "exceptions[0].date",
        ),
        (
            json!({"time_zone": "UTC", "weekly": [], "exceptions": [{"date": "2030-01-01", "kind": "off"}]}),
            "exceptions[0].date",
        ),
        (json!({"time_zone": "UTC", "weekly": [], "exceptions": many_exceptions}), "exceptions"),
        (json!({"time_zone": "UTC", "weekly": [], "horizon_days": 731}), "horizon_days"),
    ] {
        let t = Instant::now();
        let (status, v) = put_schedule(&app, &clin, &body).await;
        assert_invalid(status, &v, field);
        assert!(t.elapsed() < Duration::from_secs(2), "{field} refused in {:?}", t.elapsed());
    }
    assert_eq!(stored_rules(&app, clin.id).await, (5, 1), "the refused schedules changed nothing");
    let v: Value =
        app.get_auth(&format!("/v1/clinicians/{}/schedule", clin.id), &clin.token).await.json().await.unwrap();
    assert_eq!(v["time_zone"], "Europe/London", "{v}");

    // Windows that touch are one stretch of hours, not an overlap.
    let mut touching = weekdays("09:00", "12:00");
    touching.extend(weekdays("12:00", "17:00"));
    let (status, v) = put_schedule(&app, &clin, &json!({"time_zone": "UTC", "weekly": touching})).await;
    assert_eq!(status, 200, "{v}");
}

#[actix_web::test]
async fn slot_and_waitlist_windows_are_bounded() {
    let app = spawn_app().await;
    let clin = app.staff(Role::Clinician, true).await;
    let (status, v) =
        put_schedule(&app, &clin, &json!({"time_zone": "UTC", "weekly": weekdays("09:00", "17:00")})).await;
    assert_eq!(status, 200, "{v}");
    let res = app
        .post_auth(
            &format!("/v1/clinicians/{}/appointment-types", clin.id),
            &clin.token,
            &json!({"name": "Review", "duration_minutes": 30, "modality": "telehealth"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let ty: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let patient = app.patient().await;
    let now = app.clock.now();
    let day = |d: i64| (now + chrono::Duration::days(d)).to_rfc3339();

    let slots = |from: String, to: String| {
        let q = [("clinician", clin.id.to_string()), ("type", ty.to_string()), ("from", from), ("to", to)];
        app.client.get(app.url("/v1/slots")).query(&q).bearer_auth(&patient.token).send()
    };
    let res = slots(day(1), day(8)).await.unwrap();
    assert_eq!(res.status(), 200, "a week of slots");
    for (from, to, field) in [
        (day(1), day(33), "to"),
        ("0000-01-01T00:00:00Z".to_string(), "0000-01-08T00:00:00Z".to_string(), "from"),
        (day(-400), day(-395), "from"),
        (day(760), day(765), "to"),
        (day(5), day(4), "to"),
    ] {
        let res = slots(from, to).await.unwrap();
        let status = res.status().as_u16();
        assert_invalid(status, &res.json().await.unwrap(), field);
    }

    // FHIR Slot search: one day, within the calendar range.
    for (start, ok) in
        [((now + chrono::Duration::days(3)).date_naive().to_string(), true), ("9999-12-31".into(), false)]
    {
        let q = [("schedule", format!("Schedule/{}", clin.id)), ("service-type", ty.to_string()), ("start", start)];
        let res = app.client.get(app.url("/fhir/Slot")).query(&q).bearer_auth(&patient.token).send().await.unwrap();
        assert_eq!(res.status().is_success(), ok, "{}", res.text().await.unwrap());
    }

    // The waitlist: at most the longest horizon, within the calendar range; nothing stored.
    for (from, to, field) in [(day(1), day(1000), "to"), (day(-500), day(1), "from")] {
        let body = json!({"clinician_id": clin.id, "type_id": ty, "from": from, "to": to});
        let res = app.post_auth("/v1/waitlist", &patient.token, &body).await;
        let status = res.status().as_u16();
        assert_invalid(status, &res.json().await.unwrap(), field);
    }
    let waiting: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM waitlist"#).fetch_one(&app.pg).await.unwrap();
    assert_eq!(waiting, 0);

    // Appointment listing: `to` before `from` is refused.
    let q = [("clinician", clin.id.to_string()), ("from", day(5)), ("to", day(4))];
    let res = app.client.get(app.url("/v1/appointments")).query(&q).bearer_auth(&clin.token).send().await.unwrap();
    let status = res.status().as_u16();
    assert_invalid(status, &res.json().await.unwrap(), "to");
}

#[actix_web::test]
async fn the_openapi_document_names_the_work_bounds() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    let polygon = &schemas["PolygonRequest"]["properties"]["polygon"];
    assert_eq!((polygon["minItems"].as_u64(), polygon["maxItems"].as_u64()), (Some(3), Some(2000)), "{polygon}");
    let point = &polygon["items"];
    assert_eq!(point["prefixItems"][0]["maximum"].as_f64(), Some(639.0), "{point}");
    assert_eq!(point["prefixItems"][1]["maximum"].as_f64(), Some(479.0), "{point}");
    assert_eq!(point["prefixItems"][0]["minimum"].as_f64(), Some(0.0), "{point}");
    let schedule = &schemas["ScheduleBody"]["properties"];
    assert_eq!(schedule["weekly"]["maxItems"].as_u64(), Some(coherency::booking::MAX_WEEKLY_WINDOWS as u64));
    assert_eq!(schedule["exceptions"]["maxItems"].as_u64(), Some(coherency::booking::MAX_EXCEPTIONS as u64));
    // An optional bound is stated in the non-null branch of its `oneOf`.
    let maximum =
        |s: &Value| s["maximum"].as_f64().or_else(|| s["oneOf"].as_array()?.iter().find_map(|b| b["maximum"].as_f64()));
    assert_eq!(maximum(&schedule["horizon_days"]), Some(730.0), "{schedule}");
    assert_eq!(maximum(&schemas["WeeklyWindow"]["properties"]["weekday"]), Some(7.0));
    assert_eq!(coherency::http::measurements::MAX_POLYGON_POINTS, 2000);
}
