//! The scan stream over a WebRTC data channel (`GET /v1/scans/{id}/rtc`): real server, real
//! services, an in-process webrtc-rs peer on loopback (the protocol crate's client with
//! `Transport::DataChannel`, and its raw `DataChannelConn` where the client would refuse to
//! misbehave). The checks are the websocket tests' own.

use std::time::Duration;

use coherency_protocol::client::{ClientConfig, ClientError, ScanStreamClient, Transport};
use coherency_protocol::client_rtc::{DataChannelConn, DcIncoming};
use coherency_protocol::datachannel::{self as dcp};
use coherency_protocol::ids::ScanId;
use coherency_protocol::limits;
use coherency_protocol::scan::{
    decode_server, encode_client, ClientMsg, Compression, DepthFormat, DepthPlane, Hello, ServerMsg,
};
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app_with, TestApp, User};
use crate::scan_stream::{
    frame, patient_with_scan, six_hundred_frames_durable_and_complete, stream, twenty_cuts_lose_nothing, H, W,
};

async fn rtc_app() -> TestApp {
    spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        c
    })
    .await
}

fn dc_config(app: &TestApp, user: &User, scan: ScanId) -> ClientConfig {
    dc_config_at(&app.address, user, scan)
}

/// A data-channel client of the node at `base`, gathering loopback candidates only.
pub fn dc_config_at(base: &str, user: &User, scan: ScanId) -> ClientConfig {
    let mut c = ClientConfig::new(base, user.token.clone(), scan);
    c.transport = Transport::DataChannel;
    c.rtc_loopback_only = true;
    c
}

#[actix_web::test]
async fn six_hundred_frames_over_a_data_channel_are_durable_byte_exact_and_the_scan_completes() {
    let app = rtc_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    six_hundred_frames_durable_and_complete(&app, scan, dc_config(&app, &patient, scan)).await;
}

#[actix_web::test]
async fn twenty_cuts_over_data_channels_resume_with_nothing_lost_and_nothing_duplicated() {
    let app = rtc_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    twenty_cuts_lose_nothing(&app, scan, dc_config(&app, &patient, scan)).await;
}

// ---------------------------------------------------------------------------------------
// the channel's framing and the protocol's errors, on a raw channel
// ---------------------------------------------------------------------------------------

fn hello(scan: ScanId) -> Vec<u8> {
    encode_client(&ClientMsg::Hello(Hello { version: 1, scan_id: scan, resume_from: None, agent: None }))
}

async fn welcomed(app: &TestApp, user: &User, scan: ScanId) -> DataChannelConn {
    welcomed_with(&dc_config(app, user, scan), scan).await
}

/// A raw data channel opened with `cfg`, past its `hello` and `welcome`.
pub async fn welcomed_with(cfg: &ClientConfig, scan: ScanId) -> DataChannelConn {
    let mut dc = DataChannelConn::open(cfg).await.expect("data channel opens");
    dc.send_message(&hello(scan)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), dc.recv()).await.expect("welcome in time");
    let Some(DcIncoming::Message(b)) = first else { panic!("expected welcome, got {first:?}") };
    assert!(matches!(decode_server(&b).unwrap(), ServerMsg::Welcome(_)));
    dc
}

/// Reads until the close: every server message, then the close code.
pub async fn until_close(dc: &mut DataChannelConn) -> (Vec<ServerMsg>, Option<u16>) {
    let mut msgs = Vec::new();
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = dc.recv().await {
            match m {
                DcIncoming::Message(b) => msgs.push(decode_server(&b).expect("server message decodes")),
                DcIncoming::Closed(code, _) => return Some(code),
                DcIncoming::Broken(e) => panic!("the server broke the framing: {e}"),
            }
        }
        None
    })
    .await
    .expect("the server closes in time");
    (msgs, code)
}

fn error_code(msgs: &[ServerMsg]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        ServerMsg::Error(e) => Some(e.code.clone()),
        _ => None,
    })
}

#[actix_web::test]
async fn malformed_and_oversize_channel_messages_get_error_codes_and_the_server_keeps_serving() {
    let app = rtc_app().await;
    let (patient, scan) = patient_with_scan(&app).await;

    // An unknown fragment type.
    let mut dc = welcomed(&app, &patient, scan).await;
    dc.send_raw(vec![0x07, 1, 2]).await.unwrap();
    let (msgs, code) = until_close(&mut dc).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("malformed_message"), "{msgs:?}");
    assert_eq!(code, Some(1008));

    // One data-channel message one byte over the limit (SCTP carries it; the spec forbids it).
    let mut dc = welcomed(&app, &patient, scan).await;
    let mut big = vec![0u8; dcp::MAX_DC_MESSAGE_BYTES + 1];
    big[0] = dcp::START;
    big[1..5].copy_from_slice(&(dcp::MAX_DC_MESSAGE_BYTES as u32 - 4).to_be_bytes());
    dc.send_raw(big).await.unwrap();
    let (msgs, code) = until_close(&mut dc).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("frame_too_large"), "{msgs:?}");
    assert_eq!(code, Some(1009));

    // A START declaring more than the frame cap: refused before anything is allocated.
    let mut dc = welcomed(&app, &patient, scan).await;
    let total = (limits::MAX_FRAME_MESSAGE_BYTES as u32 + 1).to_be_bytes();
    dc.send_raw(vec![dcp::START, total[0], total[1], total[2], total[3], 0x80]).await.unwrap();
    let (msgs, code) = until_close(&mut dc).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("frame_too_large"), "{msgs:?}");
    assert_eq!(code, Some(1009));

    // A CONT with no message started.
    let mut dc = welcomed(&app, &patient, scan).await;
    dc.send_raw(vec![dcp::CONT, 0x80]).await.unwrap();
    let (msgs, code) = until_close(&mut dc).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("malformed_message"), "{msgs:?}");
    assert_eq!(code, Some(1008));

    // Correct framing around bytes that are not MessagePack.
    let mut dc = welcomed(&app, &patient, scan).await;
    dc.send_message(&[0xc1, 0x00, 0x01]).await.unwrap();
    let (msgs, code) = until_close(&mut dc).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("malformed_message"), "{msgs:?}");
    assert_eq!(code, Some(1008));

    // A frame whose plane does not match its size: the protocol's own check, same code.
    let mut dc = welcomed(&app, &patient, scan).await;
    let mut f = frame(1);
    f.width = 128;
    dc.send_message(&encode_client(&ClientMsg::Frame(Box::new(f)))).await.unwrap();
    let (msgs, code) = until_close(&mut dc).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("invalid_frame"), "{msgs:?}");
    assert_eq!(code, Some(1008));

    // Unharmed: the same scan streams, including frames of several fragments (uncompressed
    // float32 depth, 196,608 bytes of samples: four fragments each), stored byte-exact.
    assert_eq!(app.get("/livez").await.status(), 200);
    let mut client = ScanStreamClient::connect_with(dc_config(&app, &patient, scan)).await.unwrap();
    let mut sent = Vec::new();
    for seq in 1..=5u64 {
        let mut f = frame(seq);
        let metres = vec![0.3f32; (W * H) as usize];
        f.depth = DepthPlane::encode(DepthFormat::F32Metres, Compression::None, &metres);
        let bytes = encode_client(&ClientMsg::Frame(Box::new(f.clone())));
        assert!(bytes.len() > 3 * dcp::MAX_DC_MESSAGE_BYTES);
        sent.push(bytes);
        client.send_frame(f).await.unwrap();
    }
    assert_eq!(client.finish().await.unwrap().last_seq, 5);
    let rows =
        sqlx::query!("SELECT seq, length, sha256 FROM scan_frames WHERE scan_id = $1 ORDER BY seq", scan.as_uuid())
            .fetch_all(&app.pg)
            .await
            .unwrap();
    assert_eq!(rows.len(), 5, "nothing of the refused messages was stored");
    for (r, bytes) in rows.iter().zip(&sent) {
        assert_eq!(r.length as usize, bytes.len());
        assert_eq!(r.sha256, hex::encode(Sha256::digest(bytes)));
    }
}

#[actix_web::test]
async fn a_second_data_channel_takes_over_and_the_first_is_closed_with_4001() {
    let app = rtc_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut first = welcomed(&app, &patient, scan).await;
    let mut client = ScanStreamClient::connect_with(dc_config(&app, &patient, scan)).await.unwrap();
    let (msgs, code) = until_close(&mut first).await;
    assert_eq!(error_code(&msgs).as_deref(), Some("superseded"));
    assert_eq!(code, Some(4001));
    stream(&mut client, 1, 3).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 3);
}

#[actix_web::test]
async fn the_signalling_socket_is_refused_like_the_stream() {
    let app = rtc_app().await;
    let (owner, scan) = patient_with_scan(&app).await;
    let other = app.patient().await;
    let rejected = |e: ClientError| match e {
        ClientError::Rejected { status, body } => (status, body),
        other => panic!("expected a refused upgrade, got {other}"),
    };
    let (status, body) = rejected(DataChannelConn::open(&dc_config(&app, &other, scan)).await.err().unwrap());
    assert_eq!(status, 404, "{body}");
    let mut anon = dc_config(&app, &owner, scan);
    anon.token = "cha_not-a-token".into();
    let (status, _) = rejected(DataChannelConn::open(&anon).await.err().unwrap());
    assert_eq!(status, 401);
    let mut foreign = dc_config(&app, &owner, scan);
    foreign.origin = Some("https://evil.example".into());
    let (status, body) = rejected(DataChannelConn::open(&foreign).await.err().unwrap());
    assert_eq!(status, 403);
    assert!(body.contains("origin_not_allowed"), "{body}");
}

#[actix_web::test]
#[ignore = "needs Chromium and playwright-core; run by scripts/test-browser"]
async fn a_browser_streams_a_phantom_scan_over_a_data_channel_and_it_is_measured() {
    let app = crate::browser::page_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let scan_id = scan.to_string();
    crate::browser::run_page_script(&app, "scan_datachannel.mjs", &[("SCAN", &scan_id), ("TOKEN", &patient.token)])
        .await;
    let n: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM scan_frames WHERE scan_id = $1"#, scan.as_uuid())
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(n, 90, "every frame the page sent is stored");
    let list: serde_json::Value =
        app.get_auth(&format!("/v1/scans/{scan}/measurements"), &patient.token).await.json().await.unwrap();
    assert_eq!(list["status"], "complete", "{list}");
    let auto = &list["measurements"][0];
    // The page's phantom: a spherical cap of 15 mm radius (706.9 mm²), 5 mm deep.
    let area = auto["outline_area_mm2"]["value"].as_f64().unwrap_or_else(|| panic!("{list}"));
    let depth = auto["max_depth_mm"]["value"].as_f64().unwrap();
    assert!((area / 706.86 - 1.0).abs() < 0.1, "area {area} mm²: {list}");
    assert!((depth - 5.0).abs() < 1.0, "max depth {depth} mm: {list}");
}
