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
use coherency_protocol::scan::{Compression, ConfidencePlane, DepthFormat, DepthFrame, DepthPlane};
use coherency_recon::phantom::{presets, GroundTruth, Phantom, ScanConfig};
use coherency_recon::Frame;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app};
use crate::scan_stream::patient_with_scan;

/// A phantom frame as the phone sends it: uint16 0.1 mm depth + zstd, confidence 0..=2,
/// row-major intrinsics and world-from-camera pose.
fn wire_frame(seq: u64, f: &Frame) -> DepthFrame {
    let k = &f.intrinsics;
    let m = f.pose.matrix();
    let mut pose = [0f32; 16];
    for (r, row) in m.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            pose[r * 4 + c] = *v as f32;
        }
    }
    DepthFrame {
        seq,
        captured_at_us: 1_764_000_000_000_000 + seq * 16_667,
        width: f.depth.width,
        height: f.depth.height,
        depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &f.depth.depth),
        confidence: f.depth.confidence.as_deref().map(|c| ConfidencePlane::encode(Compression::Zstd, 2, c)),
        intrinsics: [k.fx as f32, 0.0, k.cx as f32, 0.0, k.fy as f32, k.cy as f32, 0.0, 0.0, 1.0],
        pose,
        colour_jpeg: None,
    }
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

    // The mesh is in the blob store under the recorded hashes.
    for fmt in ["ply", "glb"] {
        let key = auto["mesh"][format!("{fmt}_key")].as_str().unwrap();
        let bytes = app.state.stores.blobs.get(key).await.expect("mesh in the blob store");
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), auto["mesh"][format!("{fmt}_sha256")], "{fmt} hash");
    }
    // The reconstruction document is in MongoDB.
    let doc = app
        .state
        .stores
        .mongo
        .collection::<mongodb::bson::Document>("reconstructions")
        .find_one(mongodb::bson::doc! {"scan_id": scan.to_string()})
        .await
        .unwrap()
        .expect("reconstruction document");
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
}
