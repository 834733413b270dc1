//! Issue #26 on the server: a scan's colour frames colour its mesh (the GLB's `COLOR_0`) and
//! give its measurements a tissue composition; a scan without colour says why; a colour
//! camera of its own (`jk`, `jpose`) is checked like the depth camera.

use std::time::Duration;

use coherency_protocol::client::{ClientConfig, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{encode_client, ClientMsg, DepthFrame, ServerMsg};
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_recon::Frame;
use coherency_report::jpeg_encode::encode_rgb;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, spawn_app, TestApp, User};
use crate::measurements::wire_frame;
use crate::scan_stream::{error_code, frame, patient_with_scan, until_close, welcomed};

/// The colour image is the depth image's camera at this many times its size (ARKit's
/// `capturedImage` is 7.5 × `sceneDepth`; 2 keeps the test small).
const COLOUR_SCALE: u32 = 2;
/// sRGB of the wound bed (red granulation) and of the skin around it.
pub const BED_SRGB: [u8; 3] = [168, 42, 48];
pub const SKIN_SRGB: [u8; 3] = [214, 168, 140];

fn inside(poly: &[[f64; 2]], u: f64, v: f64) -> bool {
    let mut c = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > v) != (b[1] > v) && u < (b[0] - a[0]) * (v - a[1]) / (b[1] - a[1]) + a[0] {
            c = !c;
        }
        j = i;
    }
    c
}

/// Frame `f`'s colour image as the phone's colour camera would take it under the frame
/// convention (the depth camera, scaled): the wound bed inside the phantom's outline `bed`,
/// the skin around it `skin`, both with a little texture.
pub fn colour_jpeg_of(phantom: &Phantom, f: &Frame, bed: [u8; 3], skin: [u8; 3]) -> Vec<u8> {
    let (w, h) = (f.intrinsics.width * COLOUR_SCALE, f.intrinsics.height * COLOUR_SCALE);
    let k = f.intrinsics.scaled(w, h);
    let outline = phantom.outline_in_image(&k, &f.pose, 96);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for v in 0..h {
        for u in 0..w {
            let base = if inside(&outline, f64::from(u), f64::from(v)) { bed } else { skin };
            let n = ((u.wrapping_mul(7919) ^ v.wrapping_mul(104_729)) % 13) as i32 - 6;
            rgb.extend(base.map(|c| (i32::from(c) + n).clamp(0, 255) as u8));
        }
    }
    encode_rgb(&rgb, u16::try_from(w).unwrap(), u16::try_from(h).unwrap(), 2).expect("encodes")
}

/// Streams the phantom's scan, a colour frame every `colour_every` frames (0: none), and
/// waits for the scan to complete; answers its measurement list.
pub async fn stream_colour_scan(
    app: &TestApp,
    who: &User,
    scan: ScanId,
    phantom: &Phantom,
    colour_every: usize,
) -> Value {
    stream_colour_scan_of(app, &who.token, scan, phantom, colour_every, SKIN_SRGB).await
}

/// [`stream_colour_scan`] with `token` and the skin's colour given.
pub async fn stream_colour_scan_of(
    app: &TestApp,
    token: &str,
    scan: ScanId,
    phantom: &Phantom,
    colour_every: usize,
    skin: [u8; 3],
) -> Value {
    let rendered = phantom.scan(&ScanConfig::iphone(3));
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), token.to_owned(), scan)).await.unwrap();
    for (i, f) in rendered.frames.iter().enumerate() {
        let mut frame = wire_frame(i as u64 + 1, f);
        if colour_every > 0 && i % colour_every == 0 {
            frame.colour_jpeg = Some(colour_jpeg_of(phantom, f, BED_SRGB, skin).into());
        }
        client.send_frame(frame).await.unwrap();
    }
    client.finish().await.unwrap();
    let path = format!("/v1/scans/{scan}/measurements");
    eventually(Duration::from_secs(180), "the scan to complete", || async {
        let v: Value = app.get_auth(&path, token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed: {v}");
        (v["status"] == "complete").then_some(v)
    })
    .await
}

/// A clinician on the care team of a consenting patient with a new scan: (clinician,
/// patient, scan).
pub async fn clinician_and_scan(app: &TestApp) -> (User, User, ScanId) {
    let alice = app.staff(coherency::auth::Role::Clinician, true).await;
    let ada = app.patient().await;
    let ada_id = ada.patient_id.unwrap();
    crate::dashboard_browser::add_to_care_team(app, ada_id, alice.id).await;
    crate::scan_stream::consent(app, &ada).await;
    let scan = crate::scan_stream::create_scan(app, &ada, ada_id).await;
    (alice, ada, scan)
}

/// The GLB's JSON chunk and binary chunk.
pub fn glb_chunks(glb: &[u8]) -> (Value, Vec<u8>) {
    assert_eq!(&glb[0..4], b"glTF");
    let jlen = u32::from_le_bytes(glb[12..16].try_into().unwrap()) as usize;
    let json: Value = serde_json::from_slice(&glb[20..20 + jlen]).unwrap();
    let bin = if glb.len() > 28 + jlen { glb[28 + jlen..].to_vec() } else { Vec::new() };
    (json, bin)
}

/// Per vertex: position and, when the GLB has `COLOR_0`, its linear RGB.
fn glb_vertices(glb: &[u8]) -> (Vec<[f32; 3]>, Option<Vec<[f64; 3]>>) {
    let (json, bin) = glb_chunks(glb);
    let attrs = &json["meshes"][0]["primitives"][0]["attributes"];
    let view_of = |accessor: u64| {
        let a = &json["accessors"][accessor as usize];
        let v = &json["bufferViews"][a["bufferView"].as_u64().unwrap() as usize];
        let off = v["byteOffset"].as_u64().unwrap_or(0) as usize;
        (a.clone(), off, a["count"].as_u64().unwrap() as usize)
    };
    let (_, off, n) = view_of(attrs["POSITION"].as_u64().unwrap());
    let f32_at = |i: usize| f32::from_le_bytes(bin[i..i + 4].try_into().unwrap());
    let positions = (0..n).map(|i| [0, 1, 2].map(|c| f32_at(off + i * 12 + c * 4))).collect();
    let colours = attrs["COLOR_0"].as_u64().map(|acc| {
        let (a, off, n) = view_of(acc);
        assert_eq!((a["componentType"].as_u64(), a["normalized"].as_bool()), (Some(5123), Some(true)));
        let u16_at = |i: usize| f64::from(u16::from_le_bytes(bin[i..i + 2].try_into().unwrap())) / 65535.0;
        (0..n).map(|i| [0, 1, 2].map(|c| u16_at(off + i * 8 + c * 2))).collect()
    });
    (positions, colours)
}

fn srgb_to_linear(c: u8) -> f64 {
    let c = f64::from(c) / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// A colour phantom scan streamed end to end: its automatic measurement carries a tissue
/// composition whose largest class is granulation (the red bed), with five shares adding up
/// to 100 % and a periwound calibration; its GLB carries `COLOR_0`, red in the wound and
/// skin-toned around it.
#[actix_web::test]
async fn a_colour_scan_gets_tissue_shares_on_its_measurement_and_a_glb_with_vertex_colours() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let list = stream_colour_scan(&app, &patient, scan, &phantom, 6).await;
    let m = &list["measurements"][0];
    assert_eq!(m["method"], "auto", "{list}");
    let tissue = &m["tissue"];
    assert!(tissue.is_object(), "a tissue composition: {m}");
    assert!(m.get("tissue_unavailable").is_none(), "{m}");
    let shares = tissue["shares"].as_array().unwrap();
    let classes: Vec<&str> = shares.iter().map(|s| s["class"].as_str().unwrap()).collect();
    assert_eq!(classes, ["granulation", "slough", "eschar", "epithelial", "other"], "{tissue}");
    let total: f64 = shares.iter().map(|s| s["percent"].as_f64().unwrap()).sum();
    assert!((total - 100.0).abs() < 0.5, "shares add up to {total}: {tissue}");
    let granulation = shares[0]["percent"].as_f64().unwrap();
    assert!(shares.iter().all(|s| s["percent"].as_f64().unwrap() <= granulation), "granulation leads: {tissue}");
    assert!(shares.iter().all(|s| s["percent_pm"].as_f64().unwrap() > 0.0), "{tissue}");
    let area = tissue["wound_area_mm2"].as_f64().unwrap();
    let outline = m["outline_area_mm2"]["value"].as_f64().unwrap();
    assert!(area > 0.5 * outline && area < 2.0 * outline, "bed {area} mm² vs outline {outline} mm²");
    assert!(tissue["coloured_fraction"].as_f64().unwrap() > 0.5, "{tissue}");
    assert_eq!(tissue["calibration"]["source"], "periwound", "{tissue}");
    assert_eq!(tissue["calibration"]["gains"].as_array().unwrap().len(), 3);
    assert!(tissue["classifier"].as_str().is_some_and(|c| !c.is_empty()));

    let glb = app.get_auth(&format!("/v1/scans/{scan}/mesh?format=glb"), &patient.token).await.bytes().await.unwrap();
    let (positions, colours) = glb_vertices(&glb);
    let colours = colours.expect("the GLB has COLOR_0");
    assert_eq!(colours.len(), positions.len());
    // Vertices near the wound's centre are red; those far out on the skin skin-toned.
    let truth = phantom.truth();
    let centre = truth.target_world;
    let r = (truth.outline_area_mm2 / std::f64::consts::PI).sqrt() / 1000.0;
    let (mut bed, mut skin) = ((0usize, 0usize), (0usize, 0usize));
    for (p, c) in positions.iter().zip(&colours) {
        let d = ((f64::from(p[0]) - centre.x).powi(2)
            + (f64::from(p[1]) - centre.y).powi(2)
            + (f64::from(p[2]) - centre.z).powi(2))
        .sqrt();
        let reddish = c[0] > 2.0 * c[1];
        if d < 0.5 * r {
            bed = (bed.0 + 1, bed.1 + usize::from(reddish));
        } else if d > 1.5 * r && d < 2.5 * r {
            skin = (skin.0 + 1, skin.1 + usize::from(!reddish && c[1] > 0.25 * srgb_to_linear(SKIN_SRGB[1])));
        }
    }
    assert!(bed.0 > 20 && bed.1 * 10 >= bed.0 * 9, "the bed's vertices are red: {bed:?}");
    assert!(skin.0 > 20 && skin.1 * 10 >= skin.0 * 9, "the skin's vertices are skin-toned: {skin:?}");
}

/// A scan without colour frames: no `COLOR_0`, `tissue: null` and the reason.
#[actix_web::test]
async fn a_scan_without_colour_frames_has_no_tissue_and_says_why() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let list = stream_colour_scan(&app, &patient, scan, &phantom, 0).await;
    let m = &list["measurements"][0];
    assert!(m["tissue"].is_null(), "{m}");
    assert_eq!(m["tissue_unavailable"], "no_colour_frames", "{m}");
    let glb = app.get_auth(&format!("/v1/scans/{scan}/mesh?format=glb"), &patient.token).await.bytes().await.unwrap();
    let (json, _) = glb_chunks(&glb);
    assert!(json["meshes"][0]["primitives"][0]["attributes"].get("COLOR_0").is_none(), "{json}");
    assert!(json["meshes"][0]["primitives"][0]["attributes"].get("POSITION").is_some(), "{json}");
}

/// The start of a `w × h` JPEG (SOI, SOF0, EOI): enough for the server to read its size.
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
    j.extend(h.to_be_bytes());
    j.extend(w.to_be_bytes());
    j.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    j
}

/// Sends `f` as the scan's first frame and answers the refusal's code, seq, message and close.
async fn refusal(app: &TestApp, who: &User, scan: ScanId, f: DepthFrame) -> (String, Option<u64>, String, Option<u16>) {
    let mut ws = welcomed(app, who, scan).await;
    ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    let (msgs, close) = until_close(&mut ws).await;
    let (code, seq, _) = error_code(&msgs).unwrap_or_else(|| panic!("an error: {msgs:?}"));
    let message = msgs
        .iter()
        .find_map(|m| match m {
            ServerMsg::Error(e) => Some(e.message.clone()),
            _ => None,
        })
        .unwrap_or_default();
    (code, seq, message, close)
}

/// `jk` and `jpose` over a real stream: accepted when right; `invalid_frame` naming the key
/// when sent without a JPEG, when `jk` is not in the JPEG's pixels, or when `jpose` is not a
/// rigid transform.
#[actix_web::test]
async fn a_colour_camera_of_its_own_is_checked_like_the_depth_camera() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut good = frame(1);
    good.colour_jpeg = Some(jpeg_header(640, 480).into());
    good.colour_intrinsics = Some([500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]);
    good.colour_pose = Some([1.0, 0.0, 0.0, 0.01, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), patient.token.clone(), scan))
            .await
            .unwrap();
    assert_eq!(client.send_frame(good).await.unwrap(), 1);
    drop(client);

    type Change = Box<dyn Fn(&mut DepthFrame)>;
    let cases: Vec<(&str, Change)> = vec![
        ("only allowed with a jpeg", Box::new(|f| f.colour_intrinsics = Some(f.intrinsics))),
        ("only allowed with a jpeg", Box::new(|f| f.colour_pose = Some(f.pose))),
        (
            "640×480",
            Box::new(|f| {
                f.colour_jpeg = Some(jpeg_header(640, 480).into());
                f.colour_intrinsics = Some([1500.0, 0.0, 960.0, 0.0, 1500.0, 720.0, 0.0, 0.0, 1.0]);
            }),
        ),
        (
            "jpose",
            Box::new(|f| {
                f.colour_jpeg = Some(jpeg_header(640, 480).into());
                f.colour_pose = Some([2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
            }),
        ),
    ];
    for (says, change) in cases {
        let (patient, scan) = patient_with_scan(&app).await;
        let mut f = frame(1);
        change(&mut f);
        let (code, seq, message, close) = refusal(&app, &patient, scan, f).await;
        assert_eq!((code.as_str(), seq, close), ("invalid_frame", Some(1), Some(1008)), "{message}");
        assert!(message.contains(says), "`{message}` says {says}");
    }
}

/// Runs the Khronos glTF validator (`web/tests/gltf_validate.mjs`) over `glb`; answers its
/// report. Needs `web/node_modules` (`scripts/browser-setup`, which `scripts/test` runs).
pub fn khronos_report(glb: &[u8]) -> Value {
    let web = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(web.join("node_modules/gltf-validator").is_dir(), "run scripts/browser-setup first (web/node_modules)");
    let path = std::env::temp_dir().join(format!("coherency-{}.glb", uuid::Uuid::now_v7()));
    std::fs::write(&path, glb).unwrap();
    let out = std::process::Command::new("node")
        .arg(web.join("tests/gltf_validate.mjs"))
        .arg(&path)
        .output()
        .expect("node runs");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("validator report: {e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

/// The GLB the server stores for a colour scan, with `COLOR_0`, passes the Khronos glTF
/// validator with no error (and the colourless one too).
#[actix_web::test]
async fn the_coloured_glb_passes_the_khronos_gltf_validator() {
    let app = spawn_app().await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    for every in [6, 0] {
        let (patient, scan) = patient_with_scan(&app).await;
        stream_colour_scan(&app, &patient, scan, &phantom, every).await;
        let glb =
            app.get_auth(&format!("/v1/scans/{scan}/mesh?format=glb"), &patient.token).await.bytes().await.unwrap();
        let (json, _) = glb_chunks(&glb);
        let coloured = json["meshes"][0]["primitives"][0]["attributes"].get("COLOR_0").is_some();
        assert_eq!(coloured, every > 0, "{json}");
        let report = khronos_report(&glb);
        assert_eq!(report["numErrors"], 0, "coloured {coloured}: {report}");
        assert!(report["info"]["totalVertexCount"].as_u64().unwrap() > 100, "{report}");
        println!("coloured {coloured}: {report}");
    }
}

/// A clinician's outline of a colour scan is analysed inside that outline: the preview
/// carries a tissue composition, and the stored measurement the same one.
#[actix_web::test]
async fn a_clinicians_outline_gets_the_tissue_inside_it_in_the_preview_and_when_stored() {
    let app = spawn_app().await;
    let (alice, ada, scan) = clinician_and_scan(&app).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let list = stream_colour_scan(&app, &ada, scan, &phantom, 6).await;
    let seq = list["outcome"]["suggested_keyframe"]["seq"].as_u64().expect("a suggested keyframe");
    let rendered = phantom.scan(&ScanConfig::iphone(3));
    let f = &rendered.frames[seq as usize - 1];
    let outline = phantom.outline_in_image(&f.intrinsics, &f.pose, 32);
    let body = serde_json::json!({ "keyframe_seq": seq, "polygon": outline });
    let res = app.post_auth(&format!("/v1/scans/{scan}/measurements/preview"), &alice.token, &body).await;
    assert_eq!(res.status(), 200);
    let preview: Value = res.json().await.unwrap();
    let tissue = &preview["tissue"];
    assert!(tissue.is_object(), "{preview}");
    let shares = tissue["shares"].as_array().unwrap();
    assert_eq!(shares[0]["class"], "granulation");
    assert!(
        shares.iter().all(|s| s["percent"].as_f64().unwrap() <= shares[0]["percent"].as_f64().unwrap()),
        "{tissue}"
    );
    let res = app.post_auth(&format!("/v1/scans/{scan}/measurements"), &alice.token, &body).await;
    assert_eq!(res.status(), 201);
    let stored: Value = res.json().await.unwrap();
    assert_eq!(stored["method"], "polygon");
    assert_eq!(&stored["tissue"], tissue, "the stored outline's tissue is the preview's");
}

/// A colour phantom of `coherency_recon::phantom::colour` (a known tissue map, textured,
/// lit) streamed end to end as a phone would send it — JPEG colour frames from the depth
/// camera at 2× its size, no `jk`/`jpose` — and outlined by a clinician on its middle frame:
/// the measurement's tissue shares come within 15 percentage points of the map's truth per
/// class, and the GLB carries `COLOR_0`. (The classifier's own accuracy is measured in
/// `recon/tests/tissue.rs`; this checks the server path keeps it.) A ColorChecker lies
/// beside the wound: the finish records its calibration in the reconstruction document,
/// and the clinician's outline reports the recorded one (not a second detection).
#[actix_web::test]
async fn a_colour_phantom_streamed_end_to_end_gets_tissue_shares_near_its_truth() {
    use coherency_recon::colour::TissueClass;
    use coherency_recon::phantom::colour::{CheckerCard, ColourPhantom, Lighting};
    use coherency_recon::phantom::tissue::evaluation_cases;
    use coherency_recon::phantom::TrajectoryOptions;

    let app = spawn_app().await;
    let (alice, ada, scan) = clinician_and_scan(&app).await;

    let case = evaluation_cases(1).into_iter().next().expect("a case");
    let phantom = ColourPhantom::new(case.spec.clone(), case.appearance.clone());
    let card = CheckerCard::beside(&phantom.wound, 0.8, 0.0);
    let phantom = phantom.with_card(card);
    let config = ScanConfig { frames: 40, ..ScanConfig::iphone(case.seed) };
    let scan_r = phantom.scan(&config, &TrajectoryOptions::default(), 4, 2.0);
    let images = scan_r.images(&Lighting::NEUTRAL, 7);
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), ada.token.clone(), scan)).await.unwrap();
    for (i, f) in scan_r.scan.frames.iter().enumerate() {
        let mut frame = wire_frame(i as u64 + 1, f);
        if let Some((_, img)) = images.iter().find(|(at, _)| *at == i) {
            let jpeg = encode_rgb(&img.data, u16::try_from(img.width).unwrap(), u16::try_from(img.height).unwrap(), 3)
                .expect("encodes");
            frame.colour_jpeg = Some(jpeg.into());
        }
        client.send_frame(frame).await.unwrap();
    }
    client.finish().await.unwrap();
    let path = format!("/v1/scans/{scan}/measurements");
    eventually(Duration::from_secs(180), "the scan to complete", || async {
        let v: Value = app.get_auth(&path, &ada.token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed: {v}");
        (v["status"] == "complete").then_some(v)
    })
    .await;

    // The finish's record of the card, replaced by other gains: the outline below must
    // report these, which it can only have read back from the document.
    let docs = app.state.stores.mongo.collection::<mongodb::bson::Document>("reconstructions");
    let filter = mongodb::bson::doc! { "scan_id": scan.to_string() };
    let recorded = docs.find_one(filter.clone()).await.unwrap().expect("a reconstruction document");
    let card = recorded.get_document("colour").and_then(|c| c.get_document("card")).expect("the card recorded");
    assert!(card.get_array("gains").is_ok_and(|g| g.len() == 3), "{card}");
    let set = mongodb::bson::doc! { "$set": { "colour.card.gains": [1.5, 1.25, 2.0] } };
    docs.update_one(filter, set).await.unwrap();

    let k = scan_r.scan.frames.len() / 2;
    let key = &scan_r.scan.frames[k];
    let outline = phantom.wound.outline_in_image(&key.intrinsics, &scan_r.scan.true_poses[k], 48);
    let body = serde_json::json!({ "keyframe_seq": k + 1, "polygon": outline });
    let res = app.post_auth(&path, &alice.token, &body).await;
    assert_eq!(res.status(), 201);
    let m: Value = res.json().await.unwrap();
    let tissue = &m["tissue"];
    assert!(tissue.is_object(), "{m}");
    let truth = phantom.tissue_truth();
    let mut report = Vec::new();
    for s in tissue["shares"].as_array().unwrap() {
        let class = TissueClass::parse(s["class"].as_str().unwrap()).expect("a class");
        let (got, want) = (s["percent"].as_f64().unwrap(), truth.percent(class));
        report.push(format!("{}: {got:.1} vs {want:.1}", class.as_str()));
        assert!((got - want).abs() <= 15.0, "{} {got} vs truth {want}: {tissue}", class.as_str());
    }
    println!("{} — {}", case.name, report.join(", "));
    let calibration = &tissue["calibration"];
    assert_eq!(calibration["source"], "colour_checker", "{calibration}");
    assert_eq!(calibration["gains"], serde_json::json!([1.5, 1.25, 2.0]), "{calibration}");
    let glb = app.get_auth(&format!("/v1/scans/{scan}/mesh?format=glb"), &ada.token).await.bytes().await.unwrap();
    let (json, _) = glb_chunks(&glb);
    assert!(json["meshes"][0]["primitives"][0]["attributes"].get("COLOR_0").is_some(), "{json}");
}
