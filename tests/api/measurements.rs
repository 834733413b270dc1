//! Finish-time reconstruction end to end: a phantom wound scan streamed through the real
//! websocket path, fused and measured when it finishes, measurements read back through
//! `GET /v1/scans/{id}/measurements`, then re-measured with a clinician-drawn outline
//! through `POST /v1/scans/{id}/measurements`. Accuracy levels are those
//! `recon/tests/accuracy.rs` asserts (automatic outline: area 3.5 %, length/width 1.25 mm;
//! polygon: area 2 %, length/width 1 mm; both: max depth 0.5 mm, volume 5 %, every ±
//! containing the truth).

use std::time::Duration;

use coherency::auth::Role;
use coherency_protocol::client::{ClientConfig, ScanStreamClient};
use coherency_protocol::scan::DepthFrame;
use coherency_recon::phantom::{presets, GroundTruth, Phantom, ScanConfig};
use coherency_recon::Frame;
use serde_json::{json, Value};

use coherency_protocol::ids::ScanId;

use crate::helpers::{eventually, spawn_app, TestApp, User};
use crate::scan_stream::patient_with_scan;

/// A phantom frame as the phone sends it: uint16 0.1 mm depth + zstd, confidence 0..=2,
/// row-major intrinsics and world-from-camera pose.
pub fn wire_frame(seq: u64, f: &Frame) -> DepthFrame {
    coherency_actors::reconstruction::to_wire_frame(seq, 1_764_000_000_000_000 + seq * 16_667, f)
}

fn value(m: &Value, name: &str) -> (f64, f64) {
    let v = &m[name];
    (v["value"].as_f64().unwrap_or_else(|| panic!("{name} in {m}")), v["uncertainty"].as_f64().unwrap())
}

/// Checks the measurement against the truth: `area_tol` relative, `lw_tol` mm for length
/// and width, 0.5 mm max depth, 5 % volume, every interval containing the truth.
fn check(m: &Value, t: &GroundTruth, area_tol: f64, lw_tol: f64, label: &str) {
    let (area, _) = value(m, "outline_area_mm2");
    assert!((area / t.outline_area_mm2 - 1.0).abs() <= area_tol, "{label}: area {area} vs {}", t.outline_area_mm2);
    let (vol, _) = value(m, "volume_mm3");
    assert!((vol / t.volume_mm3 - 1.0).abs() <= 0.05, "{label}: volume {vol} vs {}", t.volume_mm3);
    let (len, _) = value(m, "length_mm");
    assert!((len - t.length_mm).abs() <= lw_tol, "{label}: length {len} vs {}", t.length_mm);
    let (wid, _) = value(m, "width_mm");
    assert!((wid - t.width_mm).abs() <= lw_tol, "{label}: width {wid} vs {}", t.width_mm);
    let (depth, _) = value(m, "max_depth_mm");
    assert!((depth - t.max_depth_mm).abs() <= 0.5, "{label}: max depth {depth} vs {}", t.max_depth_mm);
    for (name, truth) in [
        ("outline_area_mm2", t.outline_area_mm2),
        ("bed_area_mm2", t.bed_area_mm2),
        ("perimeter_mm", t.perimeter_mm),
        ("length_mm", t.length_mm),
        ("width_mm", t.width_mm),
        ("max_depth_mm", t.max_depth_mm),
        ("mean_depth_mm", t.mean_depth_mm),
        ("volume_mm3", t.volume_mm3),
    ] {
        let (v, pm) = value(m, name);
        assert!((v - truth).abs() <= pm, "{label}: {name} {v} ± {pm} does not contain the true {truth}");
    }
}

#[actix_web::test]
async fn a_streamed_phantom_scan_is_measured_at_finish_and_can_be_remeasured_with_a_polygon() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let truth = *phantom.truth();
    let rendered = phantom.scan(&ScanConfig::iphone(1));

    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), patient.token.clone(), scan))
            .await
            .unwrap();
    for (i, f) in rendered.frames.iter().enumerate() {
        let seq = i as u64 + 1;
        let got = client.send_frame(wire_frame(seq, f)).await.unwrap_or_else(|e| panic!("frame {seq}: {e}"));
        assert_eq!(got, seq);
    }
    let n = rendered.frames.len() as u64;
    assert_eq!(client.finish().await.unwrap().last_seq, n);

    let path = format!("/v1/scans/{scan}/measurements");
    let list: Value = eventually(Duration::from_secs(120), "automatic measurements", || async {
        let res = app.get_auth(&path, &patient.token).await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed");
        (v["status"] == "complete").then_some(v)
    })
    .await;
    let ms = list["measurements"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "{list}");
    let auto = &ms[0];
    assert_eq!(auto["method"], "auto");
    check(auto, &truth, 0.035, 1.25, "auto");
    // A measured scan still names the frame a clinician adjusts the outline on.
    assert_eq!(list["outcome"]["state"], "measured", "{list}");
    let kf = &list["outcome"]["suggested_keyframe"];
    assert!(kf["seq"].as_u64().is_some_and(|s| (1..=n).contains(&s)), "a keyframe for the measured scan: {list}");
    // That frame as a picture to draw on: the frame's size, depth shaded as relief.
    let seq = kf["seq"].as_u64().unwrap();
    let res = app.get_auth(&format!("/v1/scans/{scan}/keyframes/{seq}"), &patient.token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    let bytes = res.bytes().await.unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec())).read_info().unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut px).unwrap();
    assert_eq!(
        (info.width, info.height),
        (kf["width"].as_u64().unwrap() as u32, kf["height"].as_u64().unwrap() as u32)
    );
    let lit = px.iter().filter(|p| **p > 0).count();
    assert!(lit * 10 > px.len() * 8, "most of the frame has depth: {lit} of {}", px.len());
    let (lo, hi) = (px.iter().filter(|p| **p > 0).min().unwrap(), px.iter().max().unwrap());
    assert!(hi - lo > 30, "relief, not a flat grey: {lo}..{hi}");
    for (path, want) in
        [(format!("/v1/scans/{scan}/keyframes/{}", n + 1), 404), (format!("/v1/scans/{scan}/keyframes/first"), 400)]
    {
        assert_eq!(app.get_auth(&path, &patient.token).await.status(), want, "{path}");
    }
    let stranger = app.patient().await;
    assert_eq!(app.get_auth(&format!("/v1/scans/{scan}/keyframes/{seq}"), &stranger.token).await.status(), 404);

    // The mesh is in the blob store under the recorded hashes.
    for fmt in ["ply", "glb"] {
        let key = auto["mesh"][format!("{fmt}_key")].as_str().unwrap();
        let bytes = app.state.stores.blobs.get(key).await.expect("mesh in the blob store");
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), auto["mesh"][format!("{fmt}_sha256")], "{fmt} hash");
    }
    // The reconstruction document is in MongoDB.
    let doc = crate::scan_stream::reconstruction_doc(&app, scan).await;
    assert_eq!(doc.get_str("status").unwrap(), "complete");
    assert!(doc.get_document("timings_ms").unwrap().contains_key("fuse"));

    // A patient may read but not re-measure.
    let k = rendered.frames.len() / 2;
    let outline = phantom.outline_in_image(&rendered.frames[k].intrinsics, &rendered.true_poses[k], 64);
    let body = json!({"keyframe_seq": k as u64 + 1, "polygon": outline});
    let res = app.post_auth(&path, &patient.token, &body).await;
    assert_eq!(res.status(), 403);

    let admin = app.staff(Role::Admin, true).await;
    let res = app.post_auth(&path, &admin.token, &body).await;
    assert_eq!(res.status(), 201, "remeasure: {}", res.text().await.unwrap_or_default());
    let poly: Value = res.json().await.unwrap();
    assert_eq!(poly["method"], "polygon");
    assert_eq!(poly["keyframe_seq"], k as u64 + 1);
    check(&poly, &truth, 0.02, 1.0, "polygon");

    let res = app.post_auth(&path, &admin.token, &json!({"keyframe_seq": 9999, "polygon": outline})).await;
    assert_eq!(res.status(), 400);

    let res = app.get_auth(&path, &admin.token).await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["measurements"].as_array().unwrap().len(), 2);

    fhir_views_of_the_scan(&app, &patient, scan, &truth, auto, &poly).await;
}

/// The figures of a measurement as a clinician reads them (no id, author or time).
const FIGURES: [&str; 14] = [
    "method",
    "keyframe_seq",
    "polygon",
    "outline_area_mm2",
    "bed_area_mm2",
    "perimeter_mm",
    "length_mm",
    "width_mm",
    "max_depth_mm",
    "mean_depth_mm",
    "volume_mm3",
    "skin_model",
    "skin_residual_mm",
    "missing_fraction",
];

/// A clinician sees what an outline measures, with every ±, before anything is stored; posting
/// the same outline stores exactly what was shown. Refusals match the stored route's.
#[actix_web::test]
async fn a_drawn_outline_is_previewed_with_its_uncertainties_unstored_then_confirmed_as_shown() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let clinician = app.staff(Role::Clinician, true).await;
    sqlx::query("INSERT INTO care_team (patient_id, clinician_id, added_at) VALUES ($1, $2, now())")
        .bind(patient.patient_id.unwrap())
        .bind(clinician.id)
        .execute(&app.pg)
        .await
        .unwrap();
    let phantom = Phantom::new(presets::spherical_cap(false));
    let truth = *phantom.truth();
    let rendered = phantom.scan(&ScanConfig::iphone(1));
    let k = rendered.frames.len() / 2;
    let outline = phantom.outline_in_image(&rendered.frames[k].intrinsics, &rendered.true_poses[k], 64);
    let body = json!({"keyframe_seq": k as u64 + 1, "polygon": outline});
    let preview = format!("/v1/scans/{scan}/measurements/preview");
    let path = format!("/v1/scans/{scan}/measurements");

    // While the phone is still streaming there is nothing to measure yet.
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), patient.token.clone(), scan))
            .await
            .unwrap();
    for (i, f) in rendered.frames.iter().enumerate().take(10) {
        client.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
    }
    let res = app.post_auth(&preview, &clinician.token, &body).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "conflict");
    for (i, f) in rendered.frames.iter().enumerate().skip(10) {
        client.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
    }
    client.finish().await.unwrap();
    let before: Value = eventually(Duration::from_secs(120), "the scan to complete", || async {
        let v: Value = app.get_auth(&path, &clinician.token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed: {v}");
        (v["status"] == "complete").then_some(v)
    })
    .await;
    assert_eq!(before["measurements"].as_array().unwrap().len(), 1, "{before}");

    // The preview: the values, each with its ±, as a stored measurement would hold them.
    let res = app.post_auth(&preview, &clinician.token, &body).await;
    assert_eq!(res.status(), 200, "preview: {}", res.text().await.unwrap_or_default());
    let shown: Value = res.json().await.unwrap();
    assert_eq!(
        (&shown["stored"], &shown["method"], &shown["scan_id"]),
        (&json!(false), &json!("polygon"), &json!(scan))
    );
    assert_eq!(shown["keyframe_seq"], k as u64 + 1);
    assert!(shown.get("id").is_none() && shown.get("created_at").is_none(), "a preview has no id: {shown}");
    check(&shown, &truth, 0.02, 1.0, "preview");
    for name in &FIGURES[3..11] {
        assert!(value(&shown, name).1 > 0.0, "{name} has its ± in {shown}");
    }
    assert_eq!(shown["mesh"], before["measurements"][0]["mesh"], "it refers to the scan's mesh");
    // Nothing was stored; the preview was audited.
    let after: Value = app.get_auth(&path, &clinician.token).await.json().await.unwrap();
    assert_eq!(after["measurements"], before["measurements"], "a preview changes no measurement");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'scan.measurements.preview' AND target_id = $1",
    )
    .bind(scan.to_string())
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The stored route's refusals: a bad outline names `polygon`, a patient may not measure.
    for polygon in [json!([[1, 1], [5, 1]]), json!([[300.0, 10.0], [310.0, 10.0], [305.0, 20.0]])] {
        let res =
            app.post_auth(&preview, &clinician.token, &json!({"keyframe_seq": k as u64 + 1, "polygon": polygon})).await;
        assert_eq!(res.status(), 400);
        let e: Value = res.json().await.unwrap();
        assert_eq!((&e["error"]["code"], &e["error"]["field"]), (&json!("invalid_field"), &json!("polygon")), "{e}");
    }
    assert_eq!(app.post_auth(&preview, &patient.token, &body).await.status(), 403);
    let stranger = app.staff(Role::Clinician, true).await;
    assert_eq!(app.post_auth(&preview, &stranger.token, &body).await.status(), 404);

    // Confirming posts the same outline: what is stored is what was shown.
    let res = app.post_auth(&path, &clinician.token, &body).await;
    assert_eq!(res.status(), 201, "confirm: {}", res.text().await.unwrap_or_default());
    let stored: Value = res.json().await.unwrap();
    for name in FIGURES {
        assert_eq!(stored[name], shown[name], "{name}: stored {stored} previewed {shown}");
    }
    let list: Value = app.get_auth(&path, &clinician.token).await.json().await.unwrap();
    assert_eq!(list["measurements"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["measurements"][1]["id"], stored["id"]);
}

async fn fhir_get(app: &TestApp, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = app.client.get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(ct.starts_with("application/fhir+json"), "{path}: content type {ct}");
    (status, res.json().await.unwrap())
}

/// The component of a wound size panel with LOINC `code`: (value, low, high, unit).
fn component(obs: &Value, code: &str) -> (f64, f64, f64, String) {
    let c = obs["component"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"]["coding"][0]["code"] == code)
        .unwrap_or_else(|| panic!("component {code} in {obs}"));
    let range = &c["extension"][0]["valueRange"];
    assert_eq!(c["extension"][0]["url"], coherency::http::measurements::fhir::INTERVAL_EXTENSION);
    let unit = c["valueQuantity"]["code"].as_str().unwrap().to_string();
    assert_eq!(c["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert_eq!(range["low"]["code"], unit.as_str());
    (
        c["valueQuantity"]["value"].as_f64().unwrap(),
        range["low"]["value"].as_f64().unwrap(),
        range["high"]["value"].as_f64().unwrap(),
        unit,
    )
}

/// Both measurements as FHIR `Observation`s (read and searched by patient and date), the
/// mesh as a `DocumentReference` and its bytes; every resource accepted by `fhir.resources`
/// (strict R4); other patients and clinicians off the care team see nothing.
async fn fhir_views_of_the_scan(
    app: &TestApp,
    patient: &User,
    scan: ScanId,
    truth: &GroundTruth,
    auto: &Value,
    poly: &Value,
) {
    let pid = patient.patient_id.unwrap();
    let tok = Some(patient.token.as_str());
    let (s, b) = fhir_get(app, tok, &format!("/fhir/Observation?patient={pid}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total"], 2, "{b}");
    let mut emitted = vec![b.clone()];
    let today = app.clock.now().date_naive();
    for (q, n) in [
        (format!("date={today}"), 2),
        (format!("date=ge{today}&date=lt{}", today.succ_opt().unwrap()), 2),
        (format!("date=lt{today}"), 0),
        ("date=gt2100".to_string(), 0),
        ("code=http://loinc.org|72287-6".to_string(), 2),
    ] {
        let (s, b) = fhir_get(app, tok, &format!("/fhir/Observation?patient=Patient/{pid}&{q}")).await;
        assert_eq!((s, b["total"].as_u64()), (200, Some(n)), "{q}: {b}");
    }
    for (m, label) in [(auto, "auto"), (poly, "polygon")] {
        let (s, obs) = fhir_get(app, tok, &format!("/fhir/Observation/{}", m["id"].as_str().unwrap())).await;
        assert_eq!(s, 200, "{obs}");
        assert_eq!(obs["code"]["coding"][0]["code"], "72287-6");
        assert_eq!(obs["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
        assert_eq!(obs["derivedFrom"][0]["reference"], format!("DocumentReference/{scan}"));
        assert!(obs["effectiveDateTime"].as_str().unwrap().starts_with(&today.to_string()), "{obs}");
        for (code, name, scale, unit, true_value) in [
            ("39126-8", "length_mm", 0.1, "cm", truth.length_mm),
            ("39125-0", "width_mm", 0.1, "cm", truth.width_mm),
            ("39127-6", "max_depth_mm", 0.1, "cm", truth.max_depth_mm),
            ("89260-4", "outline_area_mm2", 0.01, "cm2", truth.outline_area_mm2),
            ("94083-3", "volume_mm3", 0.001, "mL", truth.volume_mm3),
        ] {
            let (v, lo, hi, u) = component(&obs, code);
            let (api, _) = value(m, name);
            assert_eq!(u, unit, "{label} {code}");
            assert!((v - api * scale).abs() <= 1e-4, "{label} {code}: {v} vs {api} × {scale}");
            let t = true_value * scale;
            assert!(lo - 1e-4 <= t && t <= hi + 1e-4, "{label} {code}: true {t} outside [{lo}, {hi}]");
        }
        emitted.push(obs);
    }
    let (s, doc) = fhir_get(app, tok, &format!("/fhir/DocumentReference/{scan}")).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["subject"]["reference"], format!("Patient/{pid}"));
    for content in doc["content"].as_array().unwrap() {
        let url = content["attachment"]["url"].as_str().unwrap();
        let path = url.split_once("/v1/").map(|(_, rest)| format!("/v1/{rest}")).unwrap();
        let res = app.get_auth(&path, &patient.token).await;
        assert_eq!(res.status(), 200, "{path}");
        let sha = res.headers()["x-content-sha256"].to_str().unwrap().to_string();
        let bytes = res.bytes().await.unwrap();
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha, "{path}");
        assert_eq!(content["attachment"]["extension"][0]["valueString"], sha.as_str());
    }
    // The patient's export holds the same Observations and DocumentReference.
    let (s, everything) = fhir_get(app, tok, &format!("/fhir/Patient/{pid}/$everything")).await;
    assert_eq!(s, 200, "{everything}");
    let exported = |kind: &str| -> Vec<Value> {
        let entries = everything["entry"].as_array().unwrap().iter().map(|e| &e["resource"]);
        entries.filter(|r| r["resourceType"] == kind).cloned().collect()
    };
    assert_eq!(exported("DocumentReference"), vec![doc.clone()], "{everything}");
    let observations = exported("Observation");
    assert_eq!(observations.len(), 2, "{everything}");
    for o in &emitted[1..] {
        assert!(observations.contains(o), "{o} not exported: {everything}");
    }
    emitted.push(doc);
    emitted.push(everything);
    crate::fhir::validate(&emitted);

    // The same access rules as the patient's record: 404 for other patients and for
    // clinicians off the care team, 401 without a token, 400 for a bad parameter.
    let stranger = app.patient().await;
    let outsider = app.staff(Role::Clinician, true).await;
    let obs_id = auto["id"].as_str().unwrap();
    for (token, path, status) in [
        (Some(stranger.token.as_str()), format!("/fhir/Observation/{obs_id}"), 404),
        (Some(outsider.token.as_str()), format!("/fhir/Observation?patient={pid}"), 404),
        (Some(stranger.token.as_str()), format!("/fhir/DocumentReference/{scan}"), 404),
        (None, format!("/fhir/Observation/{obs_id}"), 401),
        (tok, format!("/fhir/Observation?patient={pid}&date=yesterday"), 400),
        (tok, "/fhir/Observation".to_string(), 400),
    ] {
        let (s, o) = fhir_get(app, token, &path).await;
        assert_eq!(s, status, "{path}: {o}");
        assert_eq!(o["resourceType"], "OperationOutcome");
    }
    let res = app.get_auth(&format!("/v1/scans/{scan}/mesh?format=ply"), &stranger.token).await;
    assert_eq!(res.status(), 404);
    let reads: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM audit_log WHERE action LIKE 'fhir.observation.%'"#)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert!(reads >= 9, "observation reads are audited ({reads})");
}

/// A phone streaming at 30 fps sees live fusion: `progress` at ≥ 5 Hz whose fused-frame
/// count and wound coverage rise while it streams, and the finish step uses the live volume
/// (the reconstruction document says `fusion: live`) and still measures within the bars.
#[actix_web::test]
async fn progress_reports_rising_fused_frames_and_coverage_at_5_hz_while_streaming() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let truth = *phantom.truth();
    let rendered = phantom.scan(&ScanConfig::iphone(2));

    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), patient.token.clone(), scan))
            .await
            .unwrap();
    let mut events = client.take_events().unwrap();
    let collector = tokio::spawn(async move {
        let mut seen = vec![];
        while let Some(e) = events.recv().await {
            if let coherency_protocol::client::ClientEvent::Progress(p) = e {
                seen.push((std::time::Instant::now(), p));
            }
        }
        seen
    });
    // The phone's frame clock: one frame every 33 ms, as a 30 fps capture would send them.
    let mut clock = tokio::time::interval(Duration::from_millis(33));
    let started = std::time::Instant::now();
    for (i, f) in rendered.frames.iter().enumerate() {
        clock.tick().await;
        client.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
    }
    let streamed = started.elapsed();
    let n = rendered.frames.len() as u64;
    assert_eq!(client.finish().await.unwrap().last_seq, n);
    let seen = tokio::time::timeout(Duration::from_secs(10), collector).await.expect("event stream ends").unwrap();

    let during: Vec<_> = seen.iter().filter(|(t, _)| t.duration_since(started) <= streamed).collect();
    let rate = during.len() as f64 / streamed.as_secs_f64();
    assert!(rate >= 5.0, "{} progress messages in {streamed:?} ({rate:.1} Hz)", during.len());
    let mut worst_gap = Duration::ZERO;
    for w in during.windows(2) {
        worst_gap = worst_gap.max(w[1].0 - w[0].0);
        assert!(w[1].1.frames_fused >= w[0].1.frames_fused, "fused count never goes down");
    }
    let (first, last) = (&during[0].1, &during.last().unwrap().1);
    let mut distinct: Vec<u64> = during.iter().map(|(_, p)| p.frames_fused).collect();
    distinct.dedup();
    assert!(distinct.len() >= 5, "the fused count rises step by step while streaming: {distinct:?}");
    assert!(last.frames_fused > first.frames_fused, "fused rises while streaming: {first:?} → {last:?}");
    let peak = during.iter().map(|(_, p)| p.coverage).fold(0.0f32, f32::max);
    assert!(peak > 0.5 && peak > first.coverage, "coverage rises: first {} peak {peak}", first.coverage);
    eprintln!(
        "progress: {rate:.1} Hz, worst gap {worst_gap:?}, fused {} → {}, coverage {} → {peak}",
        first.frames_fused, last.frames_fused, first.coverage
    );

    let path = format!("/v1/scans/{scan}/measurements");
    let list: Value = eventually(Duration::from_secs(120), "automatic measurements", || async {
        let v: Value = app.get_auth(&path, &patient.token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed");
        (v["status"] == "complete").then_some(v)
    })
    .await;
    check(&list["measurements"][0], &truth, 0.035, 1.25, "auto (live fusion)");
    let doc = crate::scan_stream::reconstruction_doc(&app, scan).await;
    // The finish step took the live volume, unless the (shared, loaded) machine made live
    // fusion skip frames, in which case it fused the stored frames (never a partial volume).
    let quality = doc.get_document("quality").unwrap();
    let skipped = quality.get_i64("live_skipped_load").unwrap();
    let mode = quality.get_str("fusion").unwrap();
    assert_eq!(mode, if skipped == 0 { "live" } else { "at_finish" }, "{doc}");
    eprintln!("finish used the {mode} volume ({skipped} frames skipped live)");
}

/// Collects a client's `progress` messages until its event stream ends.
fn collect_progress(client: &mut ScanStreamClient) -> tokio::task::JoinHandle<Vec<coherency_protocol::scan::Progress>> {
    let mut events = client.take_events().unwrap();
    tokio::spawn(async move {
        let mut seen = vec![];
        while let Some(e) = events.recv().await {
            if let coherency_protocol::client::ClientEvent::Progress(p) = e {
                seen.push(p);
            }
        }
        seen
    })
}

/// With `scan_live_fusion_max_scans = 1`, the first of two concurrent scans gets the live
/// preview (coverage in `progress`) and the second does not (coverage 0); both are
/// measured, the second from its stored frames at finish, and both measure the wound right.
#[actix_web::test]
async fn a_node_fuses_live_only_up_to_its_cap_and_measures_the_other_scans_at_finish() {
    let app = crate::helpers::spawn_app_with(|mut c| {
        c.scan_live_fusion_max_scans = 1;
        c
    })
    .await;
    let (pa, a) = patient_with_scan(&app).await;
    let (pb, b) = patient_with_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let truth = *phantom.truth();
    let rendered = phantom.scan(&ScanConfig::iphone(2));
    let connect = |p: &User, s: ScanId| ClientConfig::new(app.address.clone(), p.token.clone(), s);
    let mut phone_a = ScanStreamClient::connect_with(connect(&pa, a)).await.unwrap();
    let mut phone_b = ScanStreamClient::connect_with(connect(&pb, b)).await.unwrap();
    let (progress_a, progress_b) = (collect_progress(&mut phone_a), collect_progress(&mut phone_b));
    // A starts first and takes the node's one live place.
    phone_a.send_frame(wire_frame(1, &rendered.frames[0])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut clock = tokio::time::interval(Duration::from_millis(33));
    let n = rendered.frames.len() as u64;
    for (i, f) in rendered.frames.iter().enumerate() {
        clock.tick().await;
        if i > 0 {
            phone_a.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
        }
        phone_b.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
    }
    assert_eq!(phone_a.finish().await.unwrap().last_seq, n);
    assert_eq!(phone_b.finish().await.unwrap().last_seq, n);
    let peak = |seen: &[coherency_protocol::scan::Progress]| seen.iter().map(|p| p.coverage).fold(0.0f32, f32::max);
    let seen_a = tokio::time::timeout(Duration::from_secs(10), progress_a).await.unwrap().unwrap();
    let seen_b = tokio::time::timeout(Duration::from_secs(10), progress_b).await.unwrap().unwrap();
    assert!(peak(&seen_a) > 0.5, "A had the live preview: coverage peaked at {}", peak(&seen_a));
    assert!(!seen_b.is_empty() && peak(&seen_b) == 0.0, "B streamed without it: coverage peaked at {}", peak(&seen_b));

    for (who, scan, route) in [(&pa, a, "live"), (&pb, b, "at_finish")] {
        let path = format!("/v1/scans/{scan}/measurements");
        let list: Value = eventually(Duration::from_secs(120), "automatic measurements", || async {
            let v: Value = app.get_auth(&path, &who.token).await.json().await.unwrap();
            assert_ne!(v["status"], "failed", "reconstruction failed");
            (v["status"] == "complete").then_some(v)
        })
        .await;
        check(&list["measurements"][0], &truth, 0.035, 1.25, route);
        let doc = crate::scan_stream::reconstruction_doc(&app, scan).await;
        let quality = doc.get_document("quality").unwrap();
        // A live volume that fell behind (frames skipped on its full mailbox: the machine was
        // busy) is fused again from the stored frames, by design; it says so, and only then
        // may the scan with the live place be measured at finish.
        let skipped = quality.get_i64("live_skipped_load").unwrap_or(0);
        let expected = if route == "live" && skipped > 0 { "at_finish" } else { route };
        assert_eq!(quality.get_str("fusion").unwrap(), expected, "{quality}");
    }
}

/// A phantom whose "wound" is a cap 10 µm deep: nothing an automatic segmentation can find,
/// while the skin and the true outline are those of the usual spherical-cap phantom.
pub fn flat_wound() -> Phantom {
    let mut spec = presets::spherical_cap(false);
    spec.cavity = coherency_recon::phantom::CavityShape::SphericalCap { radius: 0.015, depth: 1e-5 };
    Phantom::new(spec)
}

/// Streams `rendered` as scan `scan` of `who` and waits until the scan is complete; answers
/// its measurement list.
pub async fn stream_until_complete(
    app: &TestApp,
    who: &User,
    scan: ScanId,
    rendered: &coherency_recon::phantom::PhantomScan,
) -> Value {
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), who.token.clone(), scan)).await.unwrap();
    for (i, f) in rendered.frames.iter().enumerate() {
        client.send_frame(wire_frame(i as u64 + 1, f)).await.unwrap();
    }
    client.finish().await.unwrap();
    let path = format!("/v1/scans/{scan}/measurements");
    eventually(Duration::from_secs(120), "the scan to complete", || async {
        let v: Value = app.get_auth(&path, &who.token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed: {v}");
        (v["status"] == "complete").then_some(v)
    })
    .await
}

/// The mesh route's answer: status, its `x-content-sha256` and the SHA-256 of its body.
async fn mesh_digest(app: &TestApp, token: &str, scan: ScanId, format: &str) -> (u16, String, String) {
    let res = app.get_auth(&format!("/v1/scans/{scan}/mesh?format={format}"), token).await;
    let status = res.status().as_u16();
    let header = res.headers().get("x-content-sha256").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = res.bytes().await.unwrap();
    use sha2::Digest;
    (status, header, hex::encode(sha2::Sha256::digest(&bytes)))
}

#[actix_web::test]
async fn a_scan_the_automatic_measurement_fails_on_says_why_serves_its_mesh_and_takes_a_drawn_outline() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let path = format!("/v1/scans/{scan}/measurements");

    // Before reconstruction: pending, and no mesh (404).
    let before: Value = app.get_auth(&path, &patient.token).await.json().await.unwrap();
    assert_eq!(before["outcome"], json!({"state": "pending", "mesh": false}), "{before}");
    assert_eq!(mesh_digest(&app, &patient.token, scan, "glb").await.0, 404);
    let (s, _) = fhir_get(&app, Some(&patient.token), &format!("/fhir/DocumentReference/{scan}")).await;
    assert_eq!(s, 404);

    let phantom = flat_wound();
    let truth = *phantom.truth();
    let rendered = phantom.scan(&ScanConfig::iphone(1));
    let list = stream_until_complete(&app, &patient, scan, &rendered).await;
    assert_eq!(list["measurements"], json!([]), "no automatic measurement: {list}");
    let outcome = &list["outcome"];
    assert_eq!(outcome["state"], "needs_outline", "{list}");
    assert_eq!(outcome["mesh"], true);
    assert_eq!(outcome["reason"]["code"], "no_depression", "{outcome}");
    assert!(outcome["reason"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{outcome}");
    let key = &outcome["suggested_keyframe"];
    let seq = key["seq"].as_u64().expect("a suggested keyframe");
    assert!((1..=rendered.frames.len() as u64).contains(&seq), "{key}");
    let sent = &rendered.frames[seq as usize - 1];
    assert_eq!((key["width"].as_u64(), key["height"].as_u64()), (Some(256), Some(192)));
    let k: Vec<f64> = serde_json::from_value(key["k"].clone()).unwrap();
    let pose: Vec<f64> = serde_json::from_value(key["pose"].clone()).unwrap();
    // As sent (f32 on the wire; JSON numbers to within float parsing).
    let same =
        |a: &[f64], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - f64::from(*y)).abs() <= 1e-7);
    assert!(same(&k, &sent.intrinsics.to_row_major_f32()), "the camera as sent: {k:?}");
    assert!(same(&pose, &sent.pose.to_row_major_f32()), "the pose as sent: {pose:?}");
    // The whole true outline is inside the suggested frame.
    let outline = phantom.outline_in_image(&sent.intrinsics, &rendered.true_poses[seq as usize - 1], 64);
    assert_eq!(outline.len(), 64);
    assert!(outline.iter().all(|[u, v]| (0.0..=255.0).contains(u) && (0.0..=191.0).contains(v)), "{outline:?}");

    // The scan says the same; the mesh is served in both formats with its SHA-256, and as a
    // DocumentReference.
    let got: Value = app.get_auth(&format!("/v1/scans/{scan}"), &patient.token).await.json().await.unwrap();
    assert_eq!((got["status"].as_str(), got["outcome"]["state"].as_str()), (Some("complete"), Some("needs_outline")));
    for fmt in ["glb", "ply"] {
        let (status, header, digest) = mesh_digest(&app, &patient.token, scan, fmt).await;
        assert_eq!((status, header.len()), (200, 64), "{fmt}");
        assert_eq!(header, digest, "{fmt}: the body has the announced SHA-256");
    }
    let (s, doc) = fhir_get(&app, Some(&patient.token), &format!("/fhir/DocumentReference/{scan}")).await;
    assert_eq!(s, 200, "{doc}");
    let doc_sha: Vec<&str> = doc["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attachment"]["extension"][0]["valueString"].as_str().unwrap())
        .collect();
    assert_eq!(doc_sha.len(), 2);
    let glb_digest = mesh_digest(&app, &patient.token, scan, "glb").await.2;
    assert!(doc_sha.contains(&glb_digest.as_str()), "{doc}");

    // A clinician draws the true outline on the suggested frame: it is measured, and its
    // Observation is derived from the scan's mesh.
    let admin = app.staff(Role::Admin, true).await;
    let res = app.post_auth(&path, &admin.token, &json!({"keyframe_seq": seq, "polygon": outline})).await;
    assert_eq!(res.status(), 201, "remeasure: {}", res.text().await.unwrap_or_default());
    let poly: Value = res.json().await.unwrap();
    assert_eq!(poly["method"], "polygon");
    assert_eq!(poly["mesh"]["glb_sha256"], glb_digest.as_str(), "the outline refers to the scan's mesh");
    let (area, pm) = value(&poly, "outline_area_mm2");
    assert!((area / truth.outline_area_mm2 - 1.0).abs() <= 0.03, "area {area} vs {}", truth.outline_area_mm2);
    assert!((area - truth.outline_area_mm2).abs() <= pm, "area {area} ± {pm} vs {}", truth.outline_area_mm2);
    let (s, obs) =
        fhir_get(&app, Some(&patient.token), &format!("/fhir/Observation/{}", poly["id"].as_str().unwrap())).await;
    assert_eq!(s, 200, "{obs}");
    assert_eq!(obs["derivedFrom"][0]["reference"], format!("DocumentReference/{scan}"), "{obs}");
    crate::fhir::validate(&[obs, doc]);

    let after: Value = app.get_auth(&path, &patient.token).await.json().await.unwrap();
    assert_eq!(after["outcome"]["state"], "needs_outline", "the automatic measurement still failed");
    assert_eq!(after["measurements"].as_array().map(Vec::len), Some(1));
}

/// The migration that adds `scan_reconstructions` gives every scan measured before it its
/// `measured` outcome and mesh; a complete scan with no automatic row answers `needs_outline`
/// without a mesh (its reason was only in MongoDB).
#[actix_web::test]
async fn the_outcome_migration_backfills_measured_scans_from_their_automatic_rows() {
    let app = spawn_app().await;
    let (patient, measured) = patient_with_scan(&app).await;
    let unmeasured = crate::scan_stream::create_scan(&app, &patient, patient.patient_id.unwrap()).await;
    let (ply, glb) = ("a".repeat(64), "b".repeat(64));
    sqlx::query(
        "INSERT INTO scan_measurements (id, scan_id, method, outline_area_mm2, outline_area_mm2_pm, bed_area_mm2,
            bed_area_mm2_pm, perimeter_mm, perimeter_mm_pm, length_mm, length_mm_pm, width_mm, width_mm_pm,
            max_depth_mm, max_depth_mm_pm, mean_depth_mm, mean_depth_mm_pm, volume_mm3, volume_mm3_pm,
            skin_model, skin_residual_mm, missing_fraction, mesh_ply_key, mesh_ply_sha256, mesh_glb_key,
            mesh_glb_sha256, created_at)
         VALUES ($1, $2, 'auto', 700, 10, 800, 10, 94, 2, 30, 1, 30, 1, 5, 0.3, 2, 0.2, 1800, 90,
                 'quadratic', 0.1, 0.01, $3, $4, $5, $6, now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(measured.as_uuid())
    .bind(format!("scans/{measured}/mesh.ply"))
    .bind(&ply)
    .bind(format!("scans/{measured}/mesh.glb"))
    .bind(&glb)
    .execute(&app.pg)
    .await
    .unwrap();
    sqlx::query("UPDATE scans SET status = 'complete' WHERE id = ANY($1)")
        .bind(vec![measured.as_uuid(), unmeasured.as_uuid()])
        .execute(&app.pg)
        .await
        .unwrap();
    // Back to the schema before the migration, with these rows in it; then migrate.
    let migration = coherency::store::pg::MIGRATOR
        .iter()
        .find(|m| m.description.contains("scan reconstructions"))
        .expect("the migration")
        .version;
    sqlx::query("DROP TABLE scan_reconstructions").execute(&app.pg).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1").bind(migration).execute(&app.pg).await.unwrap();
    coherency::store::pg::MIGRATOR.run(&app.pg).await.expect("the migration applies to existing rows");

    let rows: Vec<(uuid::Uuid, String, String, String)> =
        sqlx::query_as("SELECT scan_id, outcome, mesh_ply_sha256, mesh_glb_sha256 FROM scan_reconstructions")
            .fetch_all(&app.pg)
            .await
            .unwrap();
    assert_eq!(rows, vec![(measured.as_uuid(), "measured".to_string(), ply, glb)]);
    let v: Value =
        app.get_auth(&format!("/v1/scans/{measured}/measurements"), &patient.token).await.json().await.unwrap();
    assert_eq!(v["outcome"], json!({"state": "measured", "mesh": true}), "{v}");
    let v: Value =
        app.get_auth(&format!("/v1/scans/{unmeasured}/measurements"), &patient.token).await.json().await.unwrap();
    assert_eq!(v["outcome"]["state"], "needs_outline", "{v}");
    assert_eq!(
        (v["outcome"]["mesh"].as_bool(), v["outcome"]["reason"]["code"].as_str()),
        (Some(false), Some("measurement_failed"))
    );
}
