//! The scan stream socket end to end: real server, real services, real sockets, the
//! protocol crate's Rust client (and raw websockets where the client would refuse to
//! misbehave).

use std::collections::HashSet;
use std::time::Duration;

use coherency::config::ServiceUrl;
use coherency_actors::store::QualityRecord;
use coherency_protocol::client::{ClientConfig, ClientError, ClientEvent, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_protocol::limits;
use coherency_protocol::scan::{
    decode_server, encode_client, warning, ClientMsg, Compression, DepthFormat, DepthFrame, DepthPlane, Hello,
    ServerMsg,
};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{base_config, eventually, host_port, spawn_app, spawn_app_with, TcpProxy, TestApp, User};

pub const W: u32 = 256;
pub const H: u32 = 192;

/// A deterministic 256×192 frame (uint16 0.1 mm, zstd): a tilted plane about 30 cm away,
/// the camera drifting slowly along x.
pub fn frame(seq: u64) -> DepthFrame {
    let mut metres = Vec::with_capacity((W * H) as usize);
    for y in 0..H {
        for x in 0..W {
            let hole = (x + y + seq as u32).is_multiple_of(97);
            metres.push(if hole { 0.0 } else { 0.3 + 0.0002 * x as f32 + 0.0001 * y as f32 });
        }
    }
    let tx = 0.0005 * seq as f32;
    DepthFrame {
        seq,
        captured_at_us: captured_at_us(seq),
        width: W,
        height: H,
        depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &metres),
        confidence: None,
        intrinsics: [200.0, 0.0, 128.0, 0.0, 200.0, 96.0, 0.0, 0.0, 1.0],
        pose: [1.0, 0.0, 0.0, tx, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        colour_jpeg: None,
        colour_intrinsics: None,
        colour_pose: None,
    }
}

/// Frame `seq`'s capture time: 30 fps from a fixed instant.
pub fn captured_at_us(seq: u64) -> u64 {
    1_764_000_000_000_000 + seq * 33_333
}

/// The exact bytes the client sends for frame `seq`.
pub fn frame_bytes(seq: u64) -> Vec<u8> {
    encode_client(&ClientMsg::Frame(Box::new(frame(seq))))
}

/// Records the patient's scan-capture consent.
pub async fn consent(app: &TestApp, patient: &User) {
    let pid = patient.patient_id.expect("patient id");
    let res = app
        .post_auth(
            &format!("/v1/patients/{pid}/consents"),
            &patient.token,
            &json!({"scope": "scan_capture", "status": "granted", "terms_version": "1"}),
        )
        .await;
    assert!(res.status().is_success(), "consent: {}", res.text().await.unwrap_or_default());
}

/// A patient with consent on file and a new scan of theirs.
pub async fn patient_with_scan(app: &TestApp) -> (User, ScanId) {
    let patient = app.patient().await;
    consent(app, &patient).await;
    let scan = create_scan(app, &patient, patient.patient_id.unwrap()).await;
    (patient, scan)
}

pub async fn create_scan(app: &TestApp, who: &User, patient_id: Uuid) -> ScanId {
    let res =
        app.post_auth("/v1/scans", &who.token, &json!({"patient_id": patient_id, "body_site": "left heel"})).await;
    assert_eq!(res.status(), 201, "create scan: {}", res.text().await.unwrap_or_default());
    let v: Value = res.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

pub fn config(app: &TestApp, user: &User, scan: ScanId) -> ClientConfig {
    ClientConfig::new(app.address.clone(), user.token.clone(), scan)
}

/// The scan's reconstruction document in MongoDB (panics when there is none).
pub async fn reconstruction_doc(app: &TestApp, scan: ScanId) -> mongodb::bson::Document {
    app.state
        .stores
        .mongo
        .collection::<mongodb::bson::Document>("reconstructions")
        .find_one(mongodb::bson::doc! {"scan_id": scan.to_string()})
        .await
        .unwrap()
        .expect("reconstruction document")
}

pub async fn scan_status(app: &TestApp, scan: ScanId) -> String {
    sqlx::query_scalar!("SELECT status FROM scans WHERE id = $1", scan.as_uuid()).fetch_one(&app.pg).await.unwrap()
}

/// Every frame `1..=n` is indexed exactly once, and its bytes in the blob store are exactly
/// what the client sent (hash checked against the index, the chunk and a recomputation).
pub async fn assert_stored_exactly(app: &TestApp, scan: ScanId, n: u64) {
    let rows = sqlx::query!(
        r#"SELECT f.seq, f.chunk_key, f."offset", f.length, f.sha256, c.sha256 AS chunk_sha, c.size
           FROM scan_frames f JOIN scan_chunks c ON c.key = f.chunk_key WHERE f.scan_id = $1 ORDER BY f.seq"#,
        scan.as_uuid(),
    )
    .fetch_all(&app.pg)
    .await
    .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=n as i64).collect::<Vec<_>>(), "every frame indexed once, in order");
    let mut chunks = std::collections::HashMap::new();
    for r in &rows {
        let key = &r.chunk_key;
        if !chunks.contains_key(key) {
            let bytes = app.state.stores.blobs.get(key).await.expect("chunk in the blob store");
            assert_eq!(bytes.len() as i64, r.size, "chunk size");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), r.chunk_sha, "chunk hash");
            chunks.insert(key.clone(), bytes);
        }
        let chunk = &chunks[key];
        let (off, len) = (r.offset as usize, r.length as usize);
        let stored = &chunk[off..off + len];
        let seq = r.seq as u64;
        assert_eq!(hex::encode(Sha256::digest(stored)), r.sha256, "frame {seq} hash");
        assert!(stored == frame_bytes(seq).as_slice(), "frame {seq} is byte-exact");
    }
    let acked: i64 = sqlx::query_scalar!("SELECT acked_seq FROM scans WHERE id = $1", scan.as_uuid())
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(acked, n as i64);
}

/// The scan's quality records as a reader finds them in Mongo (through the real server
/// address, not the test's proxy), in seq order; empty while Mongo cannot be read.
pub async fn quality_records(app: &TestApp, scan: ScanId) -> Vec<QualityRecord> {
    let client = mongodb::Client::with_uri_str(base_config().mongo_url.expose()).await.unwrap();
    let db = client.database(&app.config.mongo_database);
    coherency::store::scans::quality_records(&db, scan).await.unwrap_or_default()
}

/// Every frame `1..=n` has exactly one quality record in Mongo, and it describes that
/// frame (the test frames are 256×192 with a few holes, about 30 cm away).
pub async fn assert_quality_records(app: &TestApp, scan: ScanId, n: u64, within: Duration) {
    let records = eventually(within, "every quality record in mongo", || async {
        let records = quality_records(app, scan).await;
        (records.len() as u64 == n).then_some(records)
    })
    .await;
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "one record per frame");
    for r in &records {
        assert_eq!((r.scan_id, r.width, r.height), (scan, W, H), "frame {}", r.seq);
        assert_eq!(r.captured_at_us, captured_at_us(r.seq), "frame {}", r.seq);
        assert!(r.valid_fraction > 0.95, "frame {}: valid fraction {}", r.seq, r.valid_fraction);
        let median = r.median_depth_m.unwrap_or_default();
        assert!((0.3..0.4).contains(&median), "frame {}: median depth {median}", r.seq);
    }
}

pub async fn stream(client: &mut ScanStreamClient, from: u64, to: u64) {
    for seq in from..=to {
        let got = client.send_frame(frame(seq)).await.unwrap_or_else(|e| panic!("frame {seq}: {e}"));
        assert_eq!(got, seq);
    }
}

/// Streams frames 1..=600 with `cfg` (either transport) and checks what the phone and the
/// clinic would see: every frame acked in order, stored byte-exact and indexed, the scan
/// complete, every quality record in Mongo, progress sent, the durable counter at 600.
/// Answers the metrics text for further checks.
pub async fn six_hundred_frames_durable_and_complete(app: &TestApp, scan: ScanId, cfg: ClientConfig) -> String {
    let mut client = ScanStreamClient::connect_with(cfg).await.unwrap();
    let mut events = client.take_events().unwrap();
    stream(&mut client, 1, 600).await;
    let finished = client.finish().await.unwrap();
    assert_eq!((finished.frames, finished.last_seq), (600, 600));
    assert_stored_exactly(app, scan, 600).await;
    eventually(Duration::from_secs(60), "scan complete", || async {
        (scan_status(app, scan).await == "complete").then_some(())
    })
    .await;
    assert_quality_records(app, scan, 600, Duration::from_secs(30)).await;
    let mut progress = 0;
    while let Ok(ev) = events.try_recv() {
        if let ClientEvent::Progress(p) = ev {
            assert!(p.frames_received <= 600);
            progress += 1;
        }
    }
    assert!(progress > 0, "progress was sent");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("coherency_capture_frames_durable_total 600"), "{metrics}");
    metrics
}

#[actix_web::test]
async fn six_hundred_frames_are_durable_byte_exact_indexed_and_the_scan_completes() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let metrics = six_hundred_frames_durable_and_complete(&app, scan, config(&app, &patient, scan)).await;
    assert!(metrics.contains("coherency_capture_durable_lag_seconds_count"));
    assert!(metrics.contains(r#"coherency_queue_depth{queue="capture_durable_frames"}"#));
}

/// 400 frames with 20 random cuts of the connection in `cfg`'s transport: the client
/// resumes after each, and every frame is stored exactly once with its quality record.
pub async fn twenty_cuts_lose_nothing(app: &TestApp, scan: ScanId, cfg: ClientConfig) {
    let n = 400u64;
    let mut cuts: HashSet<u64> = HashSet::new();
    let mut rng = rand::thread_rng();
    while cuts.len() < 20 {
        cuts.insert(rng.gen_range(2..n));
    }
    let mut client = ScanStreamClient::connect_with(cfg).await.unwrap();
    for seq in 1..=n {
        client.send_frame(frame(seq)).await.unwrap_or_else(|e| panic!("frame {seq}: {e}"));
        if cuts.contains(&seq) {
            client.cut_connection();
        }
    }
    let reconnects_before_finish = client.reconnects();
    let finished = client.finish().await.unwrap();
    assert_eq!(finished.last_seq, n);
    assert!(reconnects_before_finish >= 10, "the client resumed after the cuts ({reconnects_before_finish})");
    assert_stored_exactly(app, scan, n).await;
    assert_quality_records(app, scan, n, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(60), "scan complete", || async {
        (scan_status(app, scan).await == "complete").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn twenty_random_cuts_with_resume_lose_nothing_and_duplicate_nothing() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    twenty_cuts_lose_nothing(&app, scan, config(&app, &patient, scan)).await;
}

#[actix_web::test]
async fn postgres_unreachable_pauses_acks_slows_the_phone_and_then_completes_with_nothing_lost() {
    let proxy = TcpProxy::start(host_port(&base_config().database_url)).await;
    let app = spawn_app_with(|mut c| {
        c.database_url = ServiceUrl::new(&proxy.rewrite(&c.database_url));
        c
    })
    .await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    let mut events = client.take_events().unwrap();
    stream(&mut client, 1, 100).await;
    eventually(Duration::from_secs(10), "first acks", || async { (client.last_ack() >= 90).then_some(()) }).await;

    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    let acked_at_cut = client.last_ack();
    // Keep capturing at ~60 fps; the phone must be told to slow down and acks must stop.
    let mut seq = 101;
    let mut slowed = false;
    while cut_at.elapsed() < Duration::from_secs(10) {
        if !client.is_slowed() && (seq - 1 - client.last_ack()) < 64 {
            client.send_frame(frame(seq)).await.unwrap();
            seq += 1;
        }
        while let Ok(ev) = events.try_recv() {
            slowed |= ev == ClientEvent::Slow;
        }
        tokio::time::sleep(Duration::from_millis(16)).await;
    }
    let acked_during = client.last_ack();
    assert!(slowed || client.is_slowed(), "the phone was told to slow down");
    // At most the chunk being committed when the cut happened may still have been acked.
    assert!(acked_during <= acked_at_cut + 16, "acks paused: {acked_at_cut} -> {acked_during}");
    assert!(seq - 1 > acked_during, "frames are waiting");

    proxy.restore();
    let last = seq - 1 + 50;
    stream(&mut client, seq, last).await;
    let finished = client.finish().await.unwrap();
    assert_eq!(finished.last_seq, last);
    assert_stored_exactly(&app, scan, last).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains(r#"coherency_capture_store_retries_total{store="index"} 0"#), "retries counted");
}

#[actix_web::test]
async fn mongo_unreachable_does_not_hold_up_acks_and_every_quality_record_arrives_later() {
    let proxy = TcpProxy::start(host_port(&base_config().mongo_url)).await;
    let app = spawn_app_with(|mut c| {
        let url = proxy.rewrite(&c.mongo_url)
            + if c.mongo_url.expose().contains('?') { "" } else { "?directConnection=true" };
        c.mongo_url = ServiceUrl::new(&url);
        c
    })
    .await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 60).await;

    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    let acked_at_cut = client.last_ack();
    let mut seq = 61;
    while cut_at.elapsed() < Duration::from_secs(10) {
        client.send_frame(frame(seq)).await.unwrap();
        seq += 1;
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    let sent = seq - 1;
    eventually(Duration::from_secs(5), "acks during the mongo outage", || async {
        (client.last_ack() >= sent).then_some(())
    })
    .await;
    assert!(client.last_ack() > acked_at_cut + 200, "acks continued");
    assert!(!client.is_slowed());

    proxy.restore();
    let finished = client.finish().await.unwrap();
    assert_eq!(finished.last_seq, sent);
    assert_stored_exactly(&app, scan, sent).await;
    assert_quality_records(&app, scan, sent, Duration::from_secs(90)).await;
}

#[actix_web::test]
async fn quality_records_are_kept_once_per_frame_whatever_the_batches_repeats_and_rewrites() {
    use coherency_actors::store::QualitySink;
    let app = spawn_app().await;
    let scan = ScanId::new();
    let sink = coherency::store::scans::MongoQualitySink::new(app.state.stores.mongo.clone());
    let record = |seq: u64, valid_fraction: f32| QualityRecord {
        scan_id: scan,
        seq,
        captured_at_us: captured_at_us(seq),
        width: W,
        height: H,
        valid_fraction,
        median_depth_m: Some(0.3),
        pose_jump_mm: (seq > 1).then_some(1.5),
        pose_jump_deg: None,
        accepted: true,
        warnings: if seq == 7 { vec!["too_close".into()] } else { vec![] },
    };
    let batch = |seqs: std::ops::RangeInclusive<u64>, v: f32| seqs.map(|s| record(s, v)).collect::<Vec<_>>();
    // A partial bucket; then a write that overlaps it with newer values and crosses into the
    // next bucket (a resumed session re-judging frames); then that write again (a retry).
    sink.write_quality(&batch(1..=10, 0.5)).await.unwrap();
    sink.write_quality(&batch(5..=40, 0.9)).await.unwrap();
    sink.write_quality(&batch(5..=40, 0.9)).await.unwrap();

    let got = quality_records(&app, scan).await;
    let mut want = batch(1..=4, 0.5);
    want.extend(batch(5..=40, 0.9));
    assert_eq!(got, want, "every record once, the latest write of each seq");
    let buckets = app
        .state
        .stores
        .mongo
        .collection::<mongodb::bson::Document>(coherency::store::scans::QUALITY_COLLECTION)
        .count_documents(mongodb::bson::doc! {"scan_id": scan.to_string()})
        .await
        .unwrap();
    assert_eq!(buckets, 2, "seqs 1..=32 and 33..=40: two documents");
}

// ---------------------------------------------------------------------------------------
// protocol errors, on raw sockets
// ---------------------------------------------------------------------------------------

pub type Raw = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_connect(app: &TestApp, token: &str, scan: ScanId) -> Raw {
    let url = format!("ws://127.0.0.1:{}/v1/scans/{scan}/stream", app.port);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    ws
}

fn hello(scan: ScanId, version: u32) -> Message {
    Message::Binary(
        encode_client(&ClientMsg::Hello(Hello { version, scan_id: scan, resume_from: None, agent: None })).into(),
    )
}

/// Reads until the close: every server message, then the close code.
pub async fn until_close(ws: &mut Raw) -> (Vec<ServerMsg>, Option<u16>) {
    let mut msgs = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Binary(b)) => msgs.push(decode_server(&b).expect("server message decodes")),
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closes in time");
    (msgs, res)
}

pub fn error_code(msgs: &[ServerMsg]) -> Option<(String, Option<u64>, Option<Vec<u32>>)> {
    msgs.iter().find_map(|m| match m {
        ServerMsg::Error(e) => Some((e.code.clone(), e.seq, e.supported_versions.clone())),
        _ => None,
    })
}

pub async fn welcomed(app: &TestApp, user: &User, scan: ScanId) -> Raw {
    let mut ws = raw_connect(app, &user.token, scan).await;
    ws.send(hello(scan, 1)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    let Message::Binary(b) = first else { panic!("expected welcome, got {first:?}") };
    assert!(matches!(decode_server(&b).unwrap(), ServerMsg::Welcome(_)));
    ws
}

#[actix_web::test]
async fn an_oversize_message_gets_frame_too_large_and_close_1009_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let ws = welcomed(&app, &patient, scan).await;
    let (mut tx, mut rx) = ws.split();
    let big = vec![0x80u8; limits::MAX_FRAME_MESSAGE_BYTES + 1];
    // Send from another task: the server may stop reading before the message is through.
    let sender = tokio::spawn(async move {
        let _ = tx.send(Message::Binary(big.into())).await;
        tx
    });
    let mut msgs = Vec::new();
    let mut code = None;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) => msgs.push(decode_server(&b).unwrap()),
                Message::Close(f) => {
                    code = f.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    sender.abort();
    assert_eq!(error_code(&msgs).map(|e| e.0).as_deref(), Some("frame_too_large"), "{msgs:?}");
    assert_eq!(code, Some(1009));
    // Unharmed: the same scan streams on a new connection.
    assert_eq!(app.get("/livez").await.status(), 200);
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 5).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 5);
}

#[actix_web::test]
async fn malformed_messagepack_wrong_dimensions_and_nan_poses_get_error_frames_with_codes() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;

    let mut ws = welcomed(&app, &patient, scan).await;
    ws.send(Message::Binary(vec![0xc1, 0x00, 0x01].into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap().0, "malformed_message");
    assert_eq!(code, Some(1008));

    let mut ws = welcomed(&app, &patient, scan).await;
    let mut f = frame(1);
    f.width = 128; // the plane still holds 256×192 samples
    ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap(), ("invalid_frame".into(), Some(1), None));
    assert_eq!(code, Some(1008));

    let mut ws = welcomed(&app, &patient, scan).await;
    let mut f = frame(1);
    f.width = limits::MAX_WIDTH + 1;
    ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap().0, "frame_too_large");
    assert_eq!(code, Some(1009));

    let mut ws = welcomed(&app, &patient, scan).await;
    let mut f = frame(1);
    f.pose[3] = f32::NAN;
    ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap(), ("invalid_frame".into(), Some(1), None));
    assert_eq!(code, Some(1008));

    let mut ws = welcomed(&app, &patient, scan).await;
    ws.send(Message::Text("hello".into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap().0, "malformed_message");
    assert_eq!(code, Some(1008));

    // A gap is refused with its own code.
    let mut ws = welcomed(&app, &patient, scan).await;
    ws.send(Message::Binary(frame_bytes(5).into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap().0, "sequence_gap");
    assert_eq!(code, Some(1008));

    // None of it was stored, and the scan still streams.
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 3).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 3);
    assert_stored_exactly(&app, scan, 3).await;
}

#[actix_web::test]
async fn an_unknown_protocol_version_is_refused_with_the_supported_versions() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut ws = raw_connect(&app, &patient.token, scan).await;
    ws.send(hello(scan, 2)).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).unwrap(), ("unsupported_version".into(), None, Some(vec![1])));
    assert_eq!(code, Some(1008));
}

#[actix_web::test]
async fn a_second_streamer_takes_over_and_the_first_is_closed_with_4001() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut first = welcomed(&app, &patient, scan).await;
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    let (msgs, code) = until_close(&mut first).await;
    assert_eq!(error_code(&msgs).unwrap().0, "superseded");
    assert_eq!(code, Some(4001));
    stream(&mut client, 1, 3).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 3);
}

// ---------------------------------------------------------------------------------------
// who may open a stream
// ---------------------------------------------------------------------------------------

fn rejected_status(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Rejected { status, body } => (status, body),
        other => panic!("expected a refused upgrade, got {other}"),
    }
}

#[actix_web::test]
async fn a_patient_cannot_stream_to_another_patients_scan() {
    let app = spawn_app().await;
    let (_owner, scan) = patient_with_scan(&app).await;
    let other = app.patient().await;
    let err = ScanStreamClient::connect_with(config(&app, &other, scan)).await.err().expect("refused");
    let (status, body) = rejected_status(err);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"));
    let denied: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action = 'scan.stream' AND outcome = 'denied' AND actor_id = $1"#,
        other.id,
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(denied, 1, "the denial is audited");
}

#[actix_web::test]
async fn no_socket_without_credentials_or_from_a_foreign_origin() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut anon = config(&app, &patient, scan);
    anon.token = "cha_not-a-token".into();
    let (status, body) = rejected_status(ScanStreamClient::connect_with(anon).await.err().expect("refused"));
    assert_eq!(status, 401, "{body}");

    // No Authorization header at all.
    let url = format!("ws://127.0.0.1:{}/v1/scans/{scan}/stream", app.port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }

    let mut foreign = config(&app, &patient, scan);
    foreign.origin = Some("https://evil.example".into());
    let (status, body) = rejected_status(ScanStreamClient::connect_with(foreign).await.err().expect("refused"));
    assert_eq!(status, 403);
    assert!(body.contains("origin_not_allowed"), "{body}");
}

/// Streams frames `from..` to `client` at `fps` for `secs` seconds.
async fn stream_for(client: &mut ScanStreamClient, from: u64, fps: u64, secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / fps));
    for seq in from..from + fps * secs {
        tick.tick().await;
        client.send_frame(frame(seq)).await.unwrap_or_else(|e| panic!("frame {seq}: {e}"));
    }
}

/// A scan that finishes while another phone is streaming to the same node is reconstructed
/// once that phone has stopped (the streaming phone's acks come first), and a node that
/// never goes quiet still gets to it within `scan_finish_defer_max_ms`.
#[actix_web::test]
async fn a_finished_scan_is_processed_once_other_phones_stop_streaming_or_the_bound_passes() {
    let app = spawn_app_with(|mut c| {
        c.scan_finish_defer_max_ms = 6_000;
        c
    })
    .await;
    let (pa, a) = patient_with_scan(&app).await;
    let (pb, b) = patient_with_scan(&app).await;
    let mut phone_b = ScanStreamClient::connect_with(config(&app, &pb, b)).await.unwrap();
    let mut phone_a = ScanStreamClient::connect_with(config(&app, &pa, a)).await.unwrap();
    stream(&mut phone_a, 1, 20).await;
    // B is streaming before A finishes and for 4 s: A waits, still processing. (Had B
    // started only once A's finish was acked, a slow flush of A's frames could leave the
    // node quiet for the 1 s the finish looks for before B's first frame.)
    let streaming = tokio::spawn(async move {
        stream_for(&mut phone_b, 1, 20, 4).await;
        phone_b
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    phone_a.finish().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!streaming.is_finished(), "B still streams");
    assert_eq!(scan_status(&app, a).await, "processing", "A waited while B streamed");
    let phone_b = streaming.await.unwrap();
    // B pauses (its phone still connected): A is processed.
    eventually(Duration::from_secs(30), "A complete once B paused", || async {
        (scan_status(&app, a).await == "complete").then_some(())
    })
    .await;
    // B finishes while C streams without pause for longer than the bound: B completes
    // within it, while C is still streaming.
    let (pc, c) = patient_with_scan(&app).await;
    let mut phone_c = ScanStreamClient::connect_with(config(&app, &pc, c)).await.unwrap();
    stream(&mut phone_c, 1, 5).await;
    let streaming = tokio::spawn(async move {
        stream_for(&mut phone_c, 6, 20, 12).await;
        phone_c
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished_b = std::time::Instant::now();
    phone_b.finish().await.unwrap();
    eventually(Duration::from_secs(30), "B complete while C streams", || async {
        (scan_status(&app, b).await == "complete").then_some(())
    })
    .await;
    let waited = finished_b.elapsed();
    assert!(!streaming.is_finished(), "C was still streaming when B completed ({waited:?})");
    assert!(waited >= Duration::from_secs(5), "B waited for the bound while C streamed ({waited:?})");
    let phone_c = streaming.await.unwrap();
    phone_c.finish().await.unwrap();
}

/// Quality records lost before a scan finished (a node stopped with records still queued;
/// here they are deleted from MongoDB) are rebuilt from the stored frames at finish, equal
/// to what capture wrote.
#[actix_web::test]
async fn quality_records_lost_before_finish_are_rebuilt_from_the_stored_frames() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 100).await;
    assert_quality_records(&app, scan, 100, Duration::from_secs(30)).await;
    let written = quality_records(&app, scan).await;
    app.state
        .stores
        .mongo
        .collection::<mongodb::bson::Document>(coherency::store::scans::QUALITY_COLLECTION)
        .delete_many(mongodb::bson::doc! {"scan_id": scan.to_string()})
        .await
        .unwrap();
    assert!(quality_records(&app, scan).await.is_empty(), "the records are gone");
    assert_eq!(client.finish().await.unwrap().last_seq, 100);
    eventually(Duration::from_secs(60), "scan complete", || async {
        (scan_status(&app, scan).await == "complete").then_some(())
    })
    .await;
    assert_quality_records(&app, scan, 100, Duration::from_secs(10)).await;
    assert_eq!(quality_records(&app, scan).await, written, "rebuilt as capture wrote them");
    let doc = reconstruction_doc(&app, scan).await;
    assert_eq!(doc.get_document("inputs").unwrap().get_i64("quality_rebuilt").unwrap(), 100);
}

// ---------------------------------------------------------------------------------------
// capture quality and the settled corners of the spec (docs/capture-quality.md)
// ---------------------------------------------------------------------------------------

/// A heel-sized body part (an ellipsoid of 45 × 35 × 40 mm semi-axes around the world
/// origin) on a floor 0.9 m below the camera, seen from 0.25 m along an arc of ±30° over its
/// top, in `n` frames of 256×192 (`u16_0.1mm`, zstd). The heel fills about a tenth of each
/// frame; the floor is the rest.
fn heel_on_the_floor(n: u64) -> Vec<DepthFrame> {
    use coherency_recon::{Intrinsics, Pose, Vec3};
    let k = Intrinsics::iphone_256x192();
    let semi = Vec3::new(0.045, 0.035, 0.04);
    let floor_z = semi.z + 0.25 - 0.9;
    let hit = |o: Vec3, d: Vec3| -> f32 {
        let (os, ds) =
            (Vec3::new(o.x / semi.x, o.y / semi.y, o.z / semi.z), Vec3::new(d.x / semi.x, d.y / semi.y, d.z / semi.z));
        let (a, b, c) = (ds.dot(ds), 2.0 * os.dot(ds), os.dot(os) - 1.0);
        let disc = b * b - 4.0 * a * c;
        let heel = (disc >= 0.0).then(|| (-b - disc.sqrt()) / (2.0 * a)).filter(|t| *t > 0.0);
        let floor = ((floor_z - o.z) / d.z).max(0.0);
        heel.map_or(floor, |t| t.min(floor)) as f32
    };
    (1..=n)
        .map(|seq| {
            let tilt = (-30.0 + 60.0 * (seq - 1) as f64 / (n - 1).max(1) as f64).to_radians();
            let top = Vec3::new(0.0, 0.0, semi.z);
            let eye = top + Vec3::new(0.25 * tilt.sin(), 0.0, 0.25 * tilt.cos());
            let pose = Pose::look_at(eye, top, Vec3::new(0.0, 1.0, 0.0));
            let metres: Vec<f32> = (0..k.height)
                .flat_map(|j| (0..k.width).map(move |i| (i, j)))
                .map(|(i, j)| hit(eye, pose.rotate(k.ray(f64::from(i), f64::from(j)))))
                .collect();
            DepthFrame {
                seq,
                captured_at_us: captured_at_us(seq),
                width: k.width,
                height: k.height,
                depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &metres),
                confidence: None,
                intrinsics: k.to_row_major_f32(),
                pose: pose.to_row_major_f32(),
                colour_jpeg: None,
                colour_intrinsics: None,
                colour_pose: None,
            }
        })
        .collect()
}

/// A heel or a finger fills little of the frame and the floor behind it sets the frame's
/// median depth: the gate judges the wound region instead, so the scan is fused and completes
/// (it failed with "no frame passed the quality gate" when the whole frame was judged).
#[actix_web::test]
async fn a_small_body_part_with_the_floor_behind_it_is_fused_and_the_scan_completes() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let frames = heel_on_the_floor(40);
    for f in &frames {
        let m = f.depth_metres().unwrap();
        let mut valid: Vec<f32> = m.into_iter().filter(|d| *d > 0.0).collect();
        let mid = valid.len() / 2;
        let whole_median = *valid.select_nth_unstable_by(mid, f32::total_cmp).1;
        assert!(whole_median > 0.5, "frame {}: the floor sets the whole frame's median ({whole_median} m)", f.seq);
    }
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    let mut events = client.take_events().unwrap();
    for f in frames {
        client.send_frame(f).await.unwrap();
    }
    assert_eq!(client.finish().await.unwrap().last_seq, 40);
    let status = eventually(Duration::from_secs(60), "scan processed", || async {
        let s = scan_status(&app, scan).await;
        (s != "processing" && s != "streaming").then_some(s)
    })
    .await;
    assert_eq!(status, "complete");
    let doc = reconstruction_doc(&app, scan).await;
    let quality = doc.get_document("quality").unwrap();
    let fused = quality.get_i64("frames_fused").unwrap();
    assert!(fused >= 35, "the heel's frames are fused: {fused} of 40; rejected {:?}", quality.get("frames_rejected"));
    // The phone was told the distance to the heel, not to the floor.
    let mut distances = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let ClientEvent::Progress(p) = ev {
            assert!(!p.warnings.iter().any(|w| w == "too_far"), "{p:?}");
            distances.extend(p.distance_m);
        }
    }
    assert!(!distances.is_empty() && distances.iter().all(|d| (0.2..0.3).contains(d)), "{distances:?}");
}

fn hello_with(scan: ScanId, resume_from: Option<u64>) -> Message {
    Message::Binary(
        encode_client(&ClientMsg::Hello(Hello { version: 1, scan_id: scan, resume_from, agent: None })).into(),
    )
}

async fn next_msg(ws: &mut Raw) -> ServerMsg {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message in time");
        if let Some(Ok(Message::Binary(b))) = m {
            return decode_server(&b).expect("server message decodes");
        }
        assert!(matches!(m, Some(Ok(_))), "the socket ended: {m:?}");
    }
}

async fn welcome_for(app: &TestApp, user: &User, scan: ScanId, resume_from: Option<u64>) -> (Raw, ServerMsg) {
    let mut ws = raw_connect(app, &user.token, scan).await;
    ws.send(hello_with(scan, resume_from)).await.unwrap();
    let welcome = next_msg(&mut ws).await;
    (ws, welcome)
}

/// `hello.resume` 0 and absent mean the same, before any frame and after some: the resume
/// position is advisory and `welcome` says where the stream continues.
#[actix_web::test]
async fn a_resume_position_of_0_is_the_same_as_none() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let (ws, zero) = welcome_for(&app, &patient, scan, Some(0)).await;
    drop(ws);
    let (ws, absent) = welcome_for(&app, &patient, scan, None).await;
    drop(ws);
    assert_eq!(zero, absent);
    let ServerMsg::Welcome(w) = &zero else { panic!("expected welcome, got {zero:?}") };
    assert_eq!((w.acked, w.next), (0, 1));
    let mut client = ScanStreamClient::connect_with(config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 3).await;
    eventually(Duration::from_secs(10), "three frames durable", || async {
        let acked: i64 = sqlx::query_scalar!("SELECT acked_seq FROM scans WHERE id = $1", scan.as_uuid())
            .fetch_one(&app.pg)
            .await
            .unwrap();
        (acked == 3).then_some(())
    })
    .await;
    let (ws, zero) = welcome_for(&app, &patient, scan, Some(0)).await;
    drop(ws);
    let (mut ws, absent) = welcome_for(&app, &patient, scan, None).await;
    assert_eq!(zero, absent);
    let ServerMsg::Welcome(w) = &zero else { panic!("expected welcome, got {zero:?}") };
    assert_eq!((w.acked, w.next), (3, 4));
    // The stream goes on from there.
    ws.send(Message::Binary(frame_bytes(4).into())).await.unwrap();
    ws.send(Message::Binary(
        encode_client(&ClientMsg::Finish(coherency_protocol::scan::Finish { last_seq: 4 })).into(),
    ))
    .await
    .unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert!(matches!(msgs.last(), Some(ServerMsg::Finished(f)) if f.last_seq == 4), "{msgs:?}");
    assert_eq!(code, Some(1000));
}

/// Streams frames 1–30 (the drifting plane of [`frame`]) as a new scan, `pace` apart, and
/// finishes it: the scan, every server message, the close code.
async fn stream_plane_and_finish(app: &TestApp, pace: Duration) -> (ScanId, Vec<ServerMsg>, Option<u16>) {
    let (patient, scan) = patient_with_scan(app).await;
    let mut ws = welcomed(app, &patient, scan).await;
    for seq in 1..=30 {
        ws.send(Message::Binary(frame_bytes(seq).into())).await.unwrap();
        tokio::time::sleep(pace).await;
    }
    ws.send(Message::Binary(
        encode_client(&ClientMsg::Finish(coherency_protocol::scan::Finish { last_seq: 30 })).into(),
    ))
    .await
    .unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    (scan, msgs, code)
}

/// The last message before `finished` is one final `progress` with every frame received and
/// the final fused count, the one the reconstruction records.
#[actix_web::test]
async fn the_final_progress_comes_right_before_finished_with_the_final_figures() {
    let app = spawn_app().await;
    let (scan, msgs, code) = stream_plane_and_finish(&app, Duration::ZERO).await;
    assert_eq!(code, Some(1000));
    let n = msgs.len();
    assert!(n >= 3, "{msgs:?}");
    let ServerMsg::Finished(fin) = &msgs[n - 1] else { panic!("finished last: {msgs:?}") };
    assert_eq!(fin.last_seq, 30);
    let ServerMsg::Progress(last) = &msgs[n - 2] else { panic!("a progress right before finished: {msgs:?}") };
    assert!(matches!(msgs[n - 3], ServerMsg::Ack(a) if a.up_to == 30), "the last ack before it: {msgs:?}");
    assert_eq!(last.frames_received, 30);
    eventually(Duration::from_secs(60), "scan complete", || async {
        (scan_status(&app, scan).await == "complete").then_some(())
    })
    .await;
    let doc = reconstruction_doc(&app, scan).await;
    let quality = doc.get_document("quality").unwrap();
    let fused = quality.get_i64("frames_fused").unwrap() as u64;
    // The camera moves 0.5 mm a frame: frame selection keeps about every other one.
    assert!((10..30).contains(&fused), "{fused} fused of 30");
    if quality.get_str("fusion").unwrap() == "live" {
        assert_eq!(last.frames_fused, fused, "{last:?}");
        assert!(last.coverage > 0.0, "{last:?}");
    } else {
        // Live fusion skipped frames under load and the stored frames were fused at finish.
        assert!(last.frames_fused <= fused, "{last:?}");
    }
}

/// The phone is told when there is no wound where it points: the frames show a plane, and
/// the final progress (the live probe runs once more on the volume at the end) says
/// `wound_not_found`.
#[actix_web::test]
async fn a_scan_of_skin_without_a_wound_is_told_the_wound_is_not_found() {
    let app = spawn_app().await;
    // At 30 fps live fusion keeps up, so the probe also runs while frames arrive (its
    // answer stands even if the final settle runs out of time on a loaded machine).
    let (_, msgs, code) = stream_plane_and_finish(&app, Duration::from_millis(33)).await;
    assert_eq!(code, Some(1000));
    let n = msgs.len();
    let ServerMsg::Progress(last) = &msgs[n - 2] else { panic!("a progress right before finished: {msgs:?}") };
    // Coverage stays 0 only when the scan was not fused live at all (every live slot taken).
    if last.coverage > 0.0 {
        assert!(last.warnings.iter().any(|w| w == warning::WOUND_NOT_FOUND), "{last:?}");
    }
}

/// `ts` going backwards is not an error: the frames are stored and the scan finishes.
#[actix_web::test]
async fn capture_times_going_backwards_are_accepted() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut ws = welcomed(&app, &patient, scan).await;
    for seq in 1..=6u64 {
        let mut f = frame(seq);
        f.captured_at_us = captured_at_us(10 - seq);
        ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    }
    ws.send(Message::Binary(
        encode_client(&ClientMsg::Finish(coherency_protocol::scan::Finish { last_seq: 6 })).into(),
    ))
    .await
    .unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs), None, "{msgs:?}");
    assert!(matches!(msgs.last(), Some(ServerMsg::Finished(f)) if f.frames == 6), "{msgs:?}");
    assert_eq!(code, Some(1000));
    let stored: Vec<i64> = sqlx::query_scalar("SELECT captured_us FROM scan_frames WHERE scan_id = $1 ORDER BY seq")
        .bind(scan.as_uuid())
        .fetch_all(&app.pg)
        .await
        .unwrap();
    assert_eq!(stored, (1..=6).map(|s| captured_at_us(10 - s) as i64).collect::<Vec<_>>());
}

/// A skew within rounding of 0 is accepted and ignored; a real skew is an invalid frame.
#[actix_web::test]
async fn a_skewed_camera_is_an_invalid_frame_and_a_rounding_skew_is_ignored() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut ws = welcomed(&app, &patient, scan).await;
    let mut f = frame(1);
    f.intrinsics[1] = 0.001 * f.intrinsics[0];
    ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    // Frame 1 is durable (acked) before the skewed one goes: the refusal of frame 2 closes
    // the socket, and an ack still in flight would be cut off with it.
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                match decode_server(&b).expect("server message decodes") {
                    ServerMsg::Ack(a) if a.up_to >= 1 => return Ok(()),
                    ServerMsg::Error(e) => return Err(format!("{e:?}")),
                    _ => {}
                }
            }
        }
        Err("closed".to_string())
    })
    .await
    .expect("frame 1 is acked in time");
    assert_eq!(acked, Ok(()), "a skew within rounding is accepted and frame 1 stored");
    let mut f = frame(2);
    f.intrinsics[1] = 0.01 * f.intrinsics[0];
    ws.send(Message::Binary(encode_client(&ClientMsg::Frame(Box::new(f))).into())).await.unwrap();
    let (msgs, code) = until_close(&mut ws).await;
    assert_eq!(error_code(&msgs).map(|e| (e.0, e.1)), Some(("invalid_frame".into(), Some(2))), "{msgs:?}");
    assert_eq!(code, Some(1008));
}
