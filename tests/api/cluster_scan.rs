//! A scan's capture session across nodes (`docs/architecture.md`, Scale-out): the scan's
//! lease follows the phone. Real nodes — the test app and `coherency serve` child processes
//! sharing its services — real sockets, the protocol crate's client (raw sockets where the
//! test plays an old connection).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coherency::cluster::scan_key;
use coherency_actors::capture::{GetOrStart, GetSnapshot};
use coherency_protocol::client::{ClientConfig, ClientError, ClientEvent, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{ServerMsg, Welcome};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, spawn_app, spawn_app_with, NodeProcess, TcpProxy, TestApp};
use crate::scan_datachannel as dc;
use crate::scan_stream::{
    assert_quality_records, assert_stored_exactly, frame_bytes, patient_with_scan, scan_status, stream, until_close,
    welcomed,
};

async fn holder(app: &TestApp, scan: ScanId) -> Option<String> {
    app.state.cluster.leases.owner(&scan_key(scan.as_uuid())).await.expect("redis answers")
}

/// Waits until the in-process node's session of `scan` has received `seq`; answers its
/// durable seq then.
async fn received_here(app: &TestApp, scan: ScanId, seq: u64) -> u64 {
    let session = app.state.capture.send(GetOrStart { scan_id: scan }).await.unwrap().unwrap();
    eventually(Duration::from_secs(10), "the session received every frame", || async {
        let s = session.send(GetSnapshot).await.ok()?;
        (s.received_seq == seq).then_some(s.durable_seq)
    })
    .await
}

#[actix_web::test]
async fn a_phone_whose_node_is_killed_mid_scan_resumes_on_another_node_from_its_last_ack() {
    // Three nodes: this process, node A (killed) and node C (where the phone lands).
    let app = spawn_app().await;
    let mut node_a = NodeProcess::start(&app.config, &[]);
    let node_c = NodeProcess::start(&app.config, &[]);
    let (patient, scan) = patient_with_scan(&app).await;
    // A load balancer in front of the nodes: the phone keeps one address while the node
    // behind it changes.
    let lb = TcpProxy::start(format!("127.0.0.1:{}", node_a.port)).await;
    // Taking over from a dead node waits out its lease (at most 6 s) inside the upgrade,
    // within the client's default connect timeout.
    let cfg = ClientConfig::new(format!("http://127.0.0.1:{}", lb.port), patient.token.clone(), scan);
    let mut client = ScanStreamClient::connect_with(cfg).await.unwrap();
    let welcomes = collect_welcomes(client.take_events().unwrap());

    stream(&mut client, 1, 150).await;
    let node_a_name = holder(&app, scan).await.expect("node A holds the scan");
    assert_ne!(node_a_name, app.state.node);
    let acked_before_kill = client.last_ack();
    assert!(acked_before_kill > 0, "node A acked frames");

    node_a.child.kill().unwrap(); // SIGKILL: no drain, no release, frames in flight
    node_a.child.wait().unwrap();
    lb.route_to(format!("127.0.0.1:{}", node_c.port));

    stream(&mut client, 151, 300).await;
    let now_held_by = holder(&app, scan).await.expect("a node holds the scan");
    assert!(now_held_by != node_a_name && now_held_by != app.state.node, "node C took the scan: {now_held_by}");
    let reconnects = client.reconnects();
    let finished = client.finish().await.unwrap();
    assert_eq!((finished.frames, finished.last_seq), (300, 300));
    assert!(reconnects >= 1, "the phone reconnected");

    // Node C's session started from what was durable: from at least the phone's last ack,
    // and from no frame node A had not stored.
    let first = welcomes.lock().unwrap().first().cloned().expect("the phone was welcomed again");
    assert!(first.acked >= acked_before_kill && first.acked <= 150, "{first:?} after ack {acked_before_kill}");
    assert_eq!(first.next, first.acked + 1, "a fresh session expects the frame after the durable ones");
    assert_stored_exactly(&app, scan, 300).await;
    let metrics = app.client.get(node_c.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let by_c = 300 - first.acked;
    assert!(
        metrics.contains(&format!("coherency_capture_frames_durable_total {by_c}")),
        "node C stored only the frames node A had not ({by_c}): {metrics}"
    );
    eventually(Duration::from_secs(60), "scan complete", || async {
        (scan_status(&app, scan).await == "complete").then_some(())
    })
    .await;
}

fn collect_welcomes(mut events: tokio::sync::mpsc::Receiver<ClientEvent>) -> Arc<Mutex<Vec<Welcome>>> {
    let welcomes = Arc::new(Mutex::new(Vec::new()));
    let w = welcomes.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let ClientEvent::Reconnected(welcome) = ev {
                w.lock().unwrap().push(welcome);
            }
        }
    });
    welcomes
}

#[actix_web::test]
async fn a_phone_moving_to_another_node_closes_its_old_socket_with_4001_and_loses_nothing() {
    // Node A holds partial chunks back (a long flush window), so only the handover makes
    // the last frames it received durable.
    let app = spawn_app_with(|mut c| {
        c.scan_flush_window_ms = 60_000;
        c
    })
    .await;
    let node_b = NodeProcess::start(&app.config, &[]);
    let (patient, scan) = patient_with_scan(&app).await;
    let mut old = welcomed(&app, &patient, scan).await;
    for seq in 1..=20 {
        old.send(Message::Binary(frame_bytes(seq).into())).await.unwrap();
    }
    let durable_on_a = received_here(&app, scan, 20).await;
    assert!(durable_on_a < 20, "frames wait for the flush window ({durable_on_a} durable)");

    let cfg = ClientConfig::new(format!("http://127.0.0.1:{}", node_b.port), patient.token.clone(), scan);
    let mut client = ScanStreamClient::connect_with(cfg).await.unwrap();
    assert_eq!(client.last_ack(), 20, "node A made every frame it had received durable before letting go");
    assert_eq!(client.next_seq(), 21);
    let (msgs, code) = until_close(&mut old).await;
    assert!(msgs.iter().any(|m| matches!(m, ServerMsg::Error(e) if e.code == "superseded")), "{msgs:?}");
    assert_eq!(code, Some(4001));
    eventually(Duration::from_secs(5), "node A no longer runs the scan", || async {
        (!app.state.cluster.capture_live.contains(scan)).then_some(())
    })
    .await;
    let b = holder(&app, scan).await.expect("node B holds the scan");
    assert_ne!(b, app.state.node);

    stream(&mut client, 21, 200).await;
    let finished = client.finish().await.unwrap();
    assert_eq!(finished.last_seq, 200);
    assert_stored_exactly(&app, scan, 200).await;
    assert_quality_records(&app, scan, 200, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(60), "scan complete", || async {
        (scan_status(&app, scan).await == "complete").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_phone_on_a_data_channel_moving_to_another_node_is_superseded_there_and_loses_nothing() {
    let app = spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        c.scan_flush_window_ms = 60_000;
        c
    })
    .await;
    let node_b = NodeProcess::start(&app.config, &[("COHERENCY_WEBRTC_LOOPBACK_ONLY", "true")]);
    let (patient, scan) = patient_with_scan(&app).await;
    let mut old = dc::welcomed_with(&dc::dc_config_at(&app.address, &patient, scan), scan).await;
    for seq in 1..=12 {
        old.send_message(&frame_bytes(seq)).await.unwrap();
    }
    received_here(&app, scan, 12).await;

    let b_url = format!("http://127.0.0.1:{}", node_b.port);
    let mut client = ScanStreamClient::connect_with(dc::dc_config_at(&b_url, &patient, scan)).await.unwrap();
    assert_eq!(client.last_ack(), 12, "node A made every frame it had received durable before letting go");
    let (msgs, code) = dc::until_close(&mut old).await;
    assert!(msgs.iter().any(|m| matches!(m, ServerMsg::Error(e) if e.code == "superseded")), "{msgs:?}");
    assert_eq!(code, Some(4001));

    stream(&mut client, 13, 100).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 100);
    assert_stored_exactly(&app, scan, 100).await;
}

#[actix_web::test]
async fn a_draining_node_makes_its_scans_durable_before_it_lets_go_of_their_leases() {
    // Partial chunks wait for a long flush window: only the drain makes them durable.
    let app = spawn_app_with(|mut c| {
        c.scan_flush_window_ms = 60_000;
        c
    })
    .await;
    let (patient, scan) = patient_with_scan(&app).await;
    let mut client = ScanStreamClient::connect_with(crate::scan_stream::config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 20).await;
    let durable = received_here(&app, scan, 20).await;
    assert!(durable < 20, "frames wait for the flush window ({durable} durable)");
    assert_eq!(holder(&app, scan).await.as_deref(), Some(app.state.node.as_str()));

    tokio::time::timeout(Duration::from_secs(30), app.shutdown.drain()).await.expect("the drain ends");
    // Released, not left to expire (a lease outlives its renewals by seconds).
    assert_eq!(holder(&app, scan).await, None, "the node let go of the scan");
    let acked: i64 = sqlx::query_scalar!("SELECT acked_seq FROM scans WHERE id = $1", scan.as_uuid())
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(acked, 20, "every frame received was made durable before the lease went");
    eventually(Duration::from_secs(5), "no session left after the drain", || async {
        app.state.cluster.capture_live.is_empty().then_some(())
    })
    .await;
    drop(client);
}

#[actix_web::test]
async fn an_upgrade_is_refused_with_503_while_another_node_keeps_the_scan() {
    let app = spawn_app().await;
    let (patient, scan) = patient_with_scan(&app).await;
    // A node that renews the lease but does not listen on the bus (stalled, or partitioned
    // from it) never lets go.
    let mut redis = app.state.stores.redis.conn.clone();
    let key = app.state.stores.redis.key(&scan_key(scan.as_uuid()));
    let _: () =
        redis::cmd("SET").arg(&key).arg("node-stalled").arg("PX").arg(60_000).query_async(&mut redis).await.unwrap();

    let mut cfg = ClientConfig::new(app.address.clone(), patient.token.clone(), scan);
    cfg.connect_timeout = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    let err = ScanStreamClient::connect_with(cfg).await.err().expect("refused");
    let waited = started.elapsed();
    let ClientError::Rejected { status, body } = err else { panic!("expected a refused upgrade, got {err}") };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"unavailable\""), "{body}");
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(15), "waited {waited:?}");

    // Once the lease is gone the scan streams here.
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
    let mut client = ScanStreamClient::connect_with(crate::scan_stream::config(&app, &patient, scan)).await.unwrap();
    stream(&mut client, 1, 3).await;
    assert_eq!(client.finish().await.unwrap().last_seq, 3);
}

#[actix_web::test]
async fn a_scan_left_processing_by_a_killed_node_is_reconstructed_by_a_surviving_one() {
    // This process survives and looks for stale scans every second. Node A holds a finished
    // scan's reconstruction back while another phone streams to it, and is killed then.
    let app = spawn_app_with(|mut c| {
        c.scan_processing_stale_secs = 4;
        c.scan_finish_defer_max_ms = 2_000;
        c
    })
    .await;
    let mut node_a = NodeProcess::start(
        &app.config,
        &[("COHERENCY_SCAN_FINISH_DEFER_MAX_MS", "600000"), ("COHERENCY_SCAN_PROCESSING_STALE_SECS", "0")],
    );
    let a_url = format!("http://127.0.0.1:{}", node_a.port);
    let (p1, s1) = patient_with_scan(&app).await;
    let (p2, s2) = patient_with_scan(&app).await;
    let mut other =
        ScanStreamClient::connect_with(ClientConfig::new(a_url.clone(), p2.token.clone(), s2)).await.unwrap();
    let streaming = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for seq in 1..=1200 {
            tick.tick().await;
            if other.send_frame(crate::scan_stream::frame(seq)).await.is_err() {
                break;
            }
        }
    });
    let mut phone = ScanStreamClient::connect_with(ClientConfig::new(a_url, p1.token.clone(), s1)).await.unwrap();
    stream(&mut phone, 1, 40).await;
    assert_eq!(phone.finish().await.unwrap().last_seq, 40);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(scan_status(&app, s1).await, "processing", "node A waits while the other phone streams");

    node_a.child.kill().unwrap(); // SIGKILL while the scan waits to be reconstructed
    node_a.child.wait().unwrap();
    streaming.abort();
    eventually(Duration::from_secs(60), "the scan completed on the surviving node", || async {
        (scan_status(&app, s1).await == "complete").then_some(())
    })
    .await;
    let doc = crate::scan_stream::reconstruction_doc(&app, s1).await;
    assert_eq!(doc.get_str("status").unwrap(), "complete");
    assert_eq!(doc.get_document("inputs").unwrap().get_i64("frames_stored").unwrap(), 40);
}
