//! SIGTERM drains: readiness turns 503 and an in-flight request still completes.

use std::time::Duration;

use crate::helpers::{spawn_app, NodeProcess};

#[actix_web::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let app = spawn_app().await;
    let node = NodeProcess::start(&app.config, &[("COHERENCY_DRAIN_DELAY_MS", "1500")]);
    // A registration whose body trickles in over ~2 s: in flight when the signal lands.
    let body = serde_json::json!({
        "email": "slow@example.test", "password": "a long enough passphrase", "given_name": "Slow",
        "family_name": "Sender", "birth_date": "1970-01-01"
    })
    .to_string()
    .into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(16).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c
    });
    let client = reqwest::Client::new();
    let req = client
        .post(node.url("/v1/auth/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let pending = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(400)).await;
    node.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = client.get(node.url("/readyz")).send().await.map(|r| r.status().as_u16());
    assert_eq!(ready.ok(), Some(503), "readiness turns 503 while draining");
    let res = pending.await.unwrap().expect("the in-flight request completes");
    assert_eq!(res.status(), 201);
    let mut node = node;
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = node.child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.is_some_and(|s| s.success()), "the node exits cleanly: {status:?}");
}

use futures_util::StreamExt;
