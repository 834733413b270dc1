//! Consults across nodes: the room runs on the node holding its lease; a participant whose
//! socket lands on another node is relayed over the node bus, and media goes straight to the
//! room's node. When that node dies, the room starts again where the participants reconnect.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::consults::{connect_at, send, setup, until, until_event, WsStream};
use crate::helpers::{eventually, spawn_app_with, NodeProcess, TestApp};
use crate::sfu::{count_frames, join_media_at, peer, publish_video, write_frames};

async fn loopback_app() -> TestApp {
    spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        c
    })
    .await
}

fn loopback_node(app: &TestApp) -> NodeProcess {
    NodeProcess::start(&app.config, &[("COHERENCY_WEBRTC_LOOPBACK_ONLY", "true")])
}

async fn events_at(app: &TestApp, port: u16, consult: uuid::Uuid, token: &str) -> Vec<Value> {
    let url = format!("http://127.0.0.1:{port}/v1/consults/{consult}/events");
    let res = app.client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn assert_gapless(evs: &[Value]) {
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64 + 1, "{evs:?}");
    }
}

/// The close code of `ws` within `wait` (frames before it are skipped).
async fn close_code(ws: &mut WsStream, wait: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(None) | Ok(Some(Err(_))) => return Some(1006),
            Ok(Some(Ok(Message::Close(f)))) => return Some(f.map(|f| f.code.into()).unwrap_or(1005)),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[actix_web::test]
async fn a_consult_spread_over_three_nodes_works_with_its_video() {
    let app = loopback_app().await;
    let node_b = loopback_node(&app);
    let node_c = loopback_node(&app);
    let s = setup(&app).await;

    // The clinician joins on this node first, so the room (and its SFU) runs here.
    let host_pc = peer().await;
    let (track, _sender) = publish_video(&host_pc).await;
    let _ = join_media_at(&app, app.port, app.port, s.consult, &s.clin, host_pc.clone(), None, None).await;

    // The patient's socket lands on node B and is relayed; the clinician admits through
    // node C's API (a relayed host action).
    let pat_pc = peer().await;
    let (_, marked) = count_frames(&pat_pc).await;
    let _ =
        join_media_at(&app, node_b.port, node_c.port, s.consult, &s.patient, pat_pc.clone(), Some(&s.clin), None).await;
    let writer = write_frames(track);
    eventually(Duration::from_secs(20), "the clinician's video at the patient on the other node", || async {
        (marked.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    writer.abort();

    // The host ends the consult through node C's API.
    let url = format!("http://127.0.0.1:{}/v1/consults/{}/end", node_c.port, s.consult);
    let res = app.client.post(url).bearer_auth(&s.clin.token).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // Every node tells the same story: one sequence, no gaps, in order.
    let here = events_at(&app, app.port, s.consult, &s.clin.token).await;
    for port in [node_b.port, node_c.port] {
        assert_eq!(here, events_at(&app, port, s.consult, &s.clin.token).await);
    }
    assert_gapless(&here);
    let kinds: Vec<&str> = here.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["checked_in", "admitted", "joined", "track_published", "ended"] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let _ = host_pc.close().await;
    let _ = pat_pc.close().await;
}

#[actix_web::test]
async fn when_the_rooms_node_dies_the_room_starts_again_where_the_participants_reconnect() {
    let app = loopback_app().await;
    let node_b = loopback_node(&app);
    let s = setup(&app).await;

    // The clinician opens the room on node B; the patient is relayed through this node.
    let mut host = connect_at(node_b.port, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect_at(app.port, s.consult, &s.patient).await.unwrap();
    let w = until(&mut pat, "welcome").await;
    let pid = w["participant_id"].as_str().unwrap().to_string();
    let url = format!("http://127.0.0.1:{}/v1/consults/{}/participants/{pid}/admit", app.port, s.consult);
    let res = app.client.post(url).bearer_auth(&s.clin.token).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    until_event(&mut pat, "joined").await;
    send(&mut pat, json!({"type": "chat", "text": "before"})).await;
    until(&mut host, "chat").await;

    // Node B dies without a word. The relayed socket is told to reconnect once B's lease
    // has expired (6 s) and the relay has noticed (2 s).
    let mut node_b = node_b;
    node_b.child.kill().unwrap();
    let _ = node_b.child.wait();
    assert_eq!(close_code(&mut pat, Duration::from_secs(15)).await, Some(1001));

    // Both reconnect to this node: the room starts here from Postgres; the patient is
    // still admitted (no second trip through the waiting room) and chat works.
    let mut pat = connect_at(app.port, s.consult, &s.patient).await.unwrap();
    let w = until(&mut pat, "welcome").await;
    assert_eq!(w["participant_id"], pid);
    assert_eq!(w["state"], "admitted", "{w}");
    let mut host = connect_at(app.port, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    send(&mut pat, json!({"type": "chat", "text": "after"})).await;
    let c = until(&mut host, "chat").await;
    assert_eq!(c["text"], "after");
    let evs = events_at(&app, app.port, s.consult, &s.clin.token).await;
    assert_gapless(&evs);
}

#[actix_web::test]
async fn when_a_relaying_node_dies_the_room_lets_its_participant_go_after_the_grace_period() {
    let app = spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        c.consult_reconnect_grace_secs = 1;
        c
    })
    .await;
    let node_b = loopback_node(&app);
    let s = setup(&app).await;

    // The room runs here; the patient's socket lands on node B and is relayed.
    let mut host = connect_at(app.port, s.consult, &s.clin).await.unwrap();
    until(&mut host, "welcome").await;
    let mut pat = connect_at(node_b.port, s.consult, &s.patient).await.unwrap();
    let w = until(&mut pat, "welcome").await;
    let pid = w["participant_id"].as_str().unwrap().to_string();
    let url = format!("http://127.0.0.1:{}/v1/consults/{}/participants/{pid}/admit", app.port, s.consult);
    let res = app.client.post(url).bearer_auth(&s.clin.token).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // The host's own `joined` may come first.
    while until_event(&mut host, "joined").await["participant_id"] != pid.as_str() {}

    // Node B dies: nobody hears the relayed socket's close. The room notices that node B no
    // longer listens on the bus (checked every 2 s), holds the seat for the 1 s grace
    // period, then records that the patient left.
    let mut node_b = node_b;
    node_b.child.kill().unwrap();
    let _ = node_b.child.wait();
    let left = tokio::time::timeout(Duration::from_secs(15), until_event(&mut host, "left"))
        .await
        .expect("the patient left within 15 s of their node dying");
    assert_eq!(left["participant_id"], pid);
}
