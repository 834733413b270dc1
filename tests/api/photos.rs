//! Wound photos (issue #26): a phantom scan streamed with a colour JPEG on every frame —
//! some in focus and well exposed, some blurred, some dark, each carrying an Exif segment
//! with GPS tags and a comment as a phone's might — answers its best frames at
//! `GET /v1/scans/{id}/photos`, serves each as JPEG with no Exif or comment left and the
//! same pixels, in the wound's gallery and as FHIR `Media` (validated, strict R4); a scan
//! without colour says why it has none; another patient sees nothing; every read audited.

use std::time::Duration;

use coherency_protocol::client::{ClientConfig, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_report::jpeg_encode::encode_rgb;
use coherency_report::photo::{decode_luma, markers};
use serde_json::Value;

use crate::helpers::{eventually, spawn_app, TestApp, User};
use crate::measurements::wire_frame;
use crate::scan_stream::patient_with_scan;

const W: u16 = 160;
const H: u16 = 120;

/// What a frame's colour image is like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Look {
    Sharp,
    Blurred,
    Dark,
}

/// Every third frame is in focus and well exposed; the others are blurred or dark.
fn look(seq: u64) -> Look {
    match seq % 3 {
        0 => Look::Sharp,
        1 => Look::Blurred,
        _ => Look::Dark,
    }
}

/// A wound-like picture: pink skin with fine texture, a red bed with yellow flecks; `seq`
/// shifts it a little as a moving phone would.
fn picture(seq: u64, look: Look) -> Vec<u8> {
    let (w, h) = (usize::from(W), usize::from(H));
    let shift = (seq % 7) as usize;
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - 80.0 - shift as f64, y as f64 - 60.0);
            let bed = dx * dx / 45.0_f64.powi(2) + dy * dy / 30.0_f64.powi(2) < 1.0;
            let grain: f64 = if ((x + shift) / 2 + y / 2).is_multiple_of(2) { 28.0 } else { -28.0 };
            let fleck = if bed && (x * 7 + y * 13) % 23 < 3 { 60.0 } else { 0.0 };
            let (r, g, b) = if bed { (170.0, 60.0 + fleck, 55.0) } else { (200.0, 150.0, 135.0) };
            let px = &mut rgb[(y * w + x) * 3..][..3];
            for (c, v) in px.iter_mut().zip([r, g, b]) {
                *c = (v + grain).clamp(0.0, 255.0) as u8;
            }
        }
    }
    match look {
        Look::Sharp => rgb,
        Look::Blurred => blur(&rgb, 3),
        Look::Dark => rgb.iter().map(|&v| v / 8).collect(),
    }
}

fn blur(rgb: &[u8], r: usize) -> Vec<u8> {
    let (w, h) = (usize::from(W), usize::from(H));
    let mut out = vec![0u8; rgb.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let (mut s, mut n) = (0u32, 0u32);
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                        s += u32::from(rgb[(yy * w + xx) * 3 + c]);
                        n += 1;
                    }
                }
                out[(y * w + x) * 3 + c] = (s / n) as u8;
            }
        }
    }
    out
}

/// An APP1 Exif segment with a GPS IFD (latitude 51°30'N) as a phone writes one.
fn exif_with_gps() -> Vec<u8> {
    let mut body = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    body.extend_from_slice(&[0, 1, 0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0]);
    body.extend_from_slice(&[0, 1, 0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(b"GPSLatitude 51 30 N; GPSLongitude 0 7 W");
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&u16::try_from(body.len() + 2).unwrap().to_be_bytes());
    seg.extend(body);
    seg
}

/// The frame's colour JPEG as the phone would send it: Exif with GPS and a comment after SOI.
fn colour_jpeg(seq: u64) -> Vec<u8> {
    let plain = encode_rgb(&picture(seq, look(seq)), W, H, 3).unwrap();
    let mut out = plain[..2].to_vec();
    out.extend(exif_with_gps());
    out.extend_from_slice(&[0xFF, 0xFE, 0, 16]);
    out.extend_from_slice(b"iPhone 15 Pro");
    out.push(0);
    out.extend_from_slice(&plain[2..]);
    out
}

/// Streams the phantom's frames (with colour when `colour`) and finishes the scan.
async fn stream(app: &TestApp, who: &User, scan: ScanId, frames: usize, colour: bool) {
    let rendered = Phantom::new(presets::spherical_cap(false)).scan(&ScanConfig::iphone(7));
    let mut client =
        ScanStreamClient::connect_with(ClientConfig::new(app.address.clone(), who.token.clone(), scan)).await.unwrap();
    for (i, f) in rendered.frames.iter().take(frames).enumerate() {
        let seq = i as u64 + 1;
        let mut frame = wire_frame(seq, f);
        if colour {
            frame.colour_jpeg = Some(colour_jpeg(seq).into());
        }
        assert_eq!(client.send_frame(frame).await.unwrap_or_else(|e| panic!("frame {seq}: {e}")), seq);
    }
    client.finish().await.unwrap();
}

/// The scan's photo list once the scan has finished.
async fn photos_when_finished(app: &TestApp, who: &User, scan: ScanId) -> Value {
    let path = format!("/v1/scans/{scan}/photos");
    eventually(Duration::from_secs(60), "the scan's photos", || async {
        let res = app.get_auth(&path, &who.token).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "private, no-store");
        let v: Value = res.json().await.unwrap();
        (v["reason"] != "scan_not_finished").then_some(v)
    })
    .await
}

async fn audited(app: &TestApp, action: &str, target: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1 AND target_id = $2 AND outcome = 'success'")
        .bind(action)
        .bind(target)
        .fetch_one(&app.pg)
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_scan_with_colour_frames_serves_its_sharpest_well_exposed_frames_without_exif_or_location() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let frames = 30;
    stream(&app, &patient, scan, frames, true).await;
    // The finish chooses the photos (among the frames it scores for the mesh's colours) and
    // stores the choice: it is there before anybody asks for the photos.
    let path = format!("/v1/scans/{scan}/measurements");
    eventually(Duration::from_secs(120), "the finish", || async {
        let v: Value = app.get_auth(&path, &patient.token).await.json().await.unwrap();
        assert_ne!(v["status"], "failed", "reconstruction failed");
        (v["status"] == "complete").then_some(())
    })
    .await;
    let stored = coherency::store::photos::get(&app.state.stores.mongo, scan).await.unwrap();
    let stored = stored.expect("the finish stored the photo choice");
    assert!(!stored.photos.is_empty() && stored.reason.is_none(), "{stored:?}");
    let list = photos_when_finished(&app, &patient, scan).await;
    let listed: Vec<u64> = list["photos"].as_array().unwrap().iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    assert_eq!(listed, stored.photos.iter().map(|p| p.seq).collect::<Vec<_>>(), "served as the finish chose");

    assert_eq!(list["scan_id"], scan.to_string());
    assert!(list["reason"].is_null(), "{list}");
    let photos = list["photos"].as_array().unwrap();
    assert!((2..=4).contains(&photos.len()), "{list}");
    let mut last = 0;
    for p in photos {
        let seq = p["seq"].as_u64().unwrap();
        assert_eq!(look(seq), Look::Sharp, "frame {seq} is blurred or dark, yet chosen: {list}");
        assert!(seq > last && seq <= frames as u64, "{list}");
        last = seq;
        assert_eq!((p["width"].as_u64(), p["height"].as_u64()), (Some(u64::from(W)), Some(u64::from(H))));
        assert!(p["sharpness"].as_f64().unwrap() > 0.0 && p["exposure"].as_f64().unwrap() > 0.35, "{p}");
        assert!(p["taken_at"].as_str().is_some_and(|t| t.len() >= 20), "{p}");
    }
    // Spread over the sweep, not neighbours.
    for pair in photos.windows(2) {
        assert!(pair[1]["seq"].as_u64().unwrap() - pair[0]["seq"].as_u64().unwrap() >= 3, "{list}");
    }

    // Each photo: JPEG, inline, not cached, no Exif/GPS/comment, the phone's pixels.
    for p in photos {
        let seq = p["seq"].as_u64().unwrap();
        let res = app.get_auth(&format!("/v1/scans/{scan}/photos/{seq}"), &patient.token).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/jpeg");
        assert_eq!(res.headers()["content-disposition"], format!("inline; filename=\"scan-photo-{seq}.jpg\""));
        assert_eq!(res.headers()["cache-control"], "private, no-store");
        let served = res.bytes().await.unwrap().to_vec();
        let kinds: Vec<u8> = markers(&served).unwrap().into_iter().map(|(m, _)| m).collect();
        assert!(!kinds.contains(&0xE1) && !kinds.contains(&0xFE), "metadata left: {kinds:x?}");
        assert!(kinds.contains(&0xDA) && kinds.ends_with(&[0xD9]), "{kinds:x?}");
        for needle in [&b"Exif"[..], &b"GPS"[..], &b"iPhone"[..]] {
            assert!(!served.windows(needle.len()).any(|w| w == needle), "{:?} in the served photo", needle);
        }
        let sent = colour_jpeg(seq);
        assert!(markers(&sent).unwrap().iter().any(|(m, _)| *m == 0xE1), "the phone's JPEG carried Exif");
        assert_eq!(decode_luma(&served).unwrap(), decode_luma(&sent).unwrap(), "pixels changed");
    }
    assert!(audited(&app, "scan.photos.read", &scan.to_string()).await >= 1);
    assert_eq!(audited(&app, "scan.photo.read", &scan.to_string()).await, photos.len() as i64);

    // A chosen list is stable; a frame that is not a photo, or no frame, is 404; a bad seq 400.
    let again: Value = app.get_auth(&format!("/v1/scans/{scan}/photos"), &patient.token).await.json().await.unwrap();
    assert_eq!(again, list);
    let not_chosen = (1..=frames as u64).find(|s| look(*s) == Look::Blurred).unwrap();
    for (path, want) in [
        (format!("/v1/scans/{scan}/photos/{not_chosen}"), 404),
        (format!("/v1/scans/{scan}/photos/{}", frames + 1), 404),
        (format!("/v1/scans/{scan}/photos/first"), 400),
        (format!("/v1/scans/{scan}/photos/-1"), 400),
    ] {
        let res = app.get_auth(&path, &patient.token).await;
        assert_eq!(res.status(), want, "{path}");
        if want == 404 {
            let e: Value = res.json().await.unwrap();
            assert_eq!(e["error"]["code"], "not_found", "{e}");
        }
    }

    // The wound's dated gallery: the same photos with their scan, newest first.
    let s: Value = app.get_auth(&format!("/v1/scans/{scan}"), &patient.token).await.json().await.unwrap();
    let wound = s["wound_id"].as_str().unwrap().to_string();
    let res = app.get_auth(&format!("/v1/wounds/{wound}/photos"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let gallery: Value = res.json().await.unwrap();
    let g = gallery["photos"].as_array().unwrap();
    assert_eq!(g.len(), photos.len(), "{gallery}");
    assert!(g.iter().all(|p| p["scan_id"] == scan.to_string() && p["scan_date"].is_string()), "{gallery}");
    assert_eq!(audited(&app, "wound.photos.read", &wound).await, 1);

    // FHIR: one Media per photo, pointing at the photo endpoint, for the wound's Condition.
    let pid = patient.patient_id.unwrap();
    let res = app.get_auth(&format!("/fhir/Media?subject=Patient/{pid}"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let bundle: Value = res.json().await.unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), photos.len(), "{bundle}");
    let media = &entries[0]["resource"];
    assert_eq!(media["resourceType"], "Media");
    assert_eq!(media["partOf"][0]["reference"], format!("Condition/{wound}"));
    let url = media["content"]["url"].as_str().unwrap();
    assert!(url.contains(&format!("/v1/scans/{scan}/photos/")), "{url}");
    assert!(media["content"]["data"].is_null());
    let id = media["id"].as_str().unwrap().to_string();
    let res = app.get_auth(&format!("/fhir/Media/{id}"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let read: Value = res.json().await.unwrap();
    assert_eq!(&read, media);

    // The patient's export holds the same Media (and the measurements, if any).
    let res = app.get_auth(&format!("/fhir/Patient/{pid}/$everything"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let everything: Value = res.json().await.unwrap();
    let exported = |kind: &str| -> Vec<Value> {
        everything["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == kind)
            .cloned()
            .collect()
    };
    let media_ids: Vec<Value> = exported("Media").iter().map(|r| r["id"].clone()).collect();
    let served_ids: Vec<Value> = entries.iter().map(|e| e["resource"]["id"].clone()).collect();
    assert_eq!(media_ids, served_ids, "{everything}");
    let measured: Value =
        app.get_auth(&format!("/v1/scans/{scan}/measurements"), &patient.token).await.json().await.unwrap();
    // Each measurement's Observation, then one per coded tissue class of its composition
    // (whether the synthetic pictures give one depends on the mesh; `other` is not coded).
    let expected: Vec<String> = measured["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            let id = m["id"].as_str().unwrap().to_owned();
            let classes: Vec<String> = m["tissue"]["shares"]
                .as_array()
                .map(|s| s.iter().map(|s| s["class"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            std::iter::once(id.clone())
                .chain(classes.into_iter().filter(|c| c != "other").map(move |c| format!("{id}-{c}")))
        })
        .collect();
    let observation_ids: Vec<String> =
        exported("Observation").iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(observation_ids, expected, "{everything}");
    crate::fhir::validate(&[bundle, read, everything]);

    // Another patient sees none of it, and it is not served to them.
    let other = app.patient_named("Grace", "Hopper").await;
    for path in [
        format!("/v1/scans/{scan}/photos"),
        format!("/v1/scans/{scan}/photos/{}", photos[0]["seq"]),
        format!("/v1/wounds/{wound}/photos"),
        format!("/fhir/Media/{id}"),
    ] {
        let res = app.get_auth(&path, &other.token).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_ne!(res.headers().get("content-type").map(|v| v.to_str().unwrap()), Some("image/jpeg"));
    }

    // A scan finished before finishes chose its photos (no stored choice): the first request
    // chooses them from the stored frames, by the same rule, and stores the choice.
    let mongo = &app.state.stores.mongo;
    mongo
        .collection::<mongodb::bson::Document>(coherency::store::photos::PHOTOS_COLLECTION)
        .delete_many(mongodb::bson::doc! { "scan_id": scan.to_string() })
        .await
        .unwrap();
    assert!(coherency::store::photos::get(mongo, scan).await.unwrap().is_none());
    let chosen: Value = app.get_auth(&format!("/v1/scans/{scan}/photos"), &patient.token).await.json().await.unwrap();
    let chosen = chosen["photos"].as_array().unwrap();
    assert!((2..=4).contains(&chosen.len()), "{chosen:?}");
    assert!(chosen.iter().all(|p| look(p["seq"].as_u64().unwrap()) == Look::Sharp), "{chosen:?}");
    assert!(coherency::store::photos::get(mongo, scan).await.unwrap().is_some(), "the choice is stored");
}

#[actix_web::test]
async fn a_scan_without_colour_frames_has_no_photos_and_says_why() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    stream(&app, &patient, scan, 4, false).await;
    let list = photos_when_finished(&app, &patient, scan).await;
    assert_eq!(list["photos"], Value::Array(vec![]), "{list}");
    assert_eq!(list["reason"], "no_colour_frames", "{list}");
    let res = app.get_auth(&format!("/v1/scans/{scan}/photos/1"), &patient.token).await;
    assert_eq!(res.status(), 404);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["code"], "not_found", "{e}");
}
