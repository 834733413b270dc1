//! The scan stream client against a small in-test websocket server that speaks v1: it acks
//! frames, drops duplicates, refuses gaps, and can cut connections, go mute, hold acks or
//! slow the client down on request.

// Test helpers may unwrap: a panic is a test failure.
#![allow(clippy::unwrap_used)]
// tungstenite fixes the handshake callback's error type.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coherency_protocol::client::{ClientConfig, ClientError, ClientEvent, ScanStreamClient};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{
    decode_client, encode_server, Ack, ClientMsg, Compression, DepthFormat, DepthFrame, DepthPlane, ErrorMsg, Finished,
    ServerMsg, Welcome, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
use coherency_protocol::Code;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "good-token";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Scan {
    /// seq → encoded frame message, each stored once.
    frames: BTreeMap<u64, Vec<u8>>,
    durable: u64,
    duplicates: u64,
    finished: Option<Finished>,
}

#[derive(Default)]
struct Behaviour {
    /// Drop the connection (no close frame, no ack) on receiving these seqs, once each.
    cut_at: BTreeSet<u64>,
    /// Send `slow` on receiving this seq.
    slow_at: Option<u64>,
    /// Do not ack frames until released.
    hold_acks: bool,
    /// Answer hello with this error instead of welcome.
    refuse_with: Option<ErrorMsg>,
    /// Read but never write on the first connection after welcome.
    mute_first: bool,
    /// On receiving this seq, act as if another streamer took over: `superseded`, 4001.
    supersede_at: Option<u64>,
    window: u32,
}

struct TestServer {
    addr: SocketAddr,
    scan: Arc<Mutex<Scan>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Wakes every connection to re-check `behaviour` (resume, release acks).
    kick: Arc<Notify>,
    resume: Arc<AtomicBool>,
    connections: Arc<AtomicU32>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scan = Arc::new(Mutex::new(Scan::default()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            window: if behaviour.window == 0 { 64 } else { behaviour.window },
            ..behaviour
        }));
        let kick = Arc::new(Notify::new());
        let resume = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU32::new(0));
        let accept_task = {
            let (scan, behaviour, kick, resume, connections) =
                (scan.clone(), behaviour.clone(), kick.clone(), resume.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let n = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::spawn(serve(tcp, n, scan.clone(), behaviour.clone(), kick.clone(), resume.clone()));
                }
            })
        };
        Self { addr, scan, behaviour, kick, resume, connections, accept_task }
    }

    fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn config(&self, scan_id: ScanId) -> ClientConfig {
        let mut c = ClientConfig::new(self.base_url(), TOKEN, scan_id);
        c.initial_backoff = Duration::from_millis(10);
        c.max_backoff = Duration::from_millis(100);
        c.finish_timeout = WAIT;
        c.send_timeout = WAIT;
        c
    }

    fn stored_seqs(&self) -> Vec<u64> {
        self.scan.lock().unwrap().frames.keys().copied().collect()
    }

    fn release(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
        self.kick.notify_waiters();
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    conn_no: u32,
    scan: Arc<Mutex<Scan>>,
    behaviour: Arc<Mutex<Behaviour>>,
    kick: Arc<Notify>,
    resume: Arc<AtomicBool>,
) {
    let check_auth = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let ok = req.headers().get("authorization").is_some_and(|v| v == format!("Bearer {TOKEN}").as_str());
        if ok && req.uri().path().starts_with("/v1/scans/") && req.uri().path().ends_with("/stream") {
            Ok(resp)
        } else {
            let mut err =
                ErrorResponse::new(Some(r#"{"error":{"code":"unauthenticated","message":"bad token"}}"#.into()));
            *err.status_mut() = StatusCode::UNAUTHORIZED;
            Err(err)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check_auth).await else {
        return;
    };
    let send = |m: ServerMsg| Message::Binary(encode_server(&m).into());

    // hello
    let Some(Ok(Message::Binary(first))) = ws.next().await else {
        return;
    };
    let Ok(ClientMsg::Hello(hello)) = decode_client(&first) else {
        return;
    };
    let refuse = behaviour.lock().unwrap().refuse_with.clone();
    if let Some(err) = refuse {
        let code = err.close_code();
        let _ = ws.send(send(ServerMsg::Error(err))).await;
        let _ = ws.close(Some(CloseFrame { code: code.into(), reason: "refused".into() })).await;
        return;
    }
    let finished = scan.lock().unwrap().finished.clone();
    if let Some(f) = finished {
        let _ = ws.send(send(ServerMsg::Finished(f))).await;
        let _ = ws.close(None).await;
        return;
    }
    let (acked, next, window) = {
        let s = scan.lock().unwrap();
        let highest = s.frames.keys().next_back().copied().unwrap_or(0);
        (s.durable, highest + 1, behaviour.lock().unwrap().window)
    };
    let welcome = Welcome { version: PROTOCOL_VERSION, scan_id: hello.scan_id, acked, next, window };
    ws.send(send(ServerMsg::Welcome(welcome))).await.unwrap();
    let mute = conn_no == 1 && behaviour.lock().unwrap().mute_first;
    // Frames received but not acked on an earlier connection become durable now.
    if next - 1 > acked && !behaviour.lock().unwrap().hold_acks {
        scan.lock().unwrap().durable = next - 1;
        ws.send(send(ServerMsg::Ack(Ack { up_to: next - 1 }))).await.unwrap();
    }

    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Binary(bytes) = msg else { continue };
                let decoded = match decode_client(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ws.send(send(ServerMsg::Error(e.to_error_msg()))).await;
                        return;
                    }
                };
                if mute {
                    continue;
                }
                match decoded {
                    ClientMsg::Frame(frame) => {
                        let seq = frame.seq;
                        let (cut, slow, hold, supersede) = {
                            let mut b = behaviour.lock().unwrap();
                            (b.cut_at.remove(&seq), b.slow_at == Some(seq), b.hold_acks, b.supersede_at == Some(seq))
                        };
                        if supersede {
                            let err = ErrorMsg::new(Code::Superseded, "another connection took over");
                            let code = err.close_code();
                            let _ = ws.send(send(ServerMsg::Error(err))).await;
                            let _ = ws.close(Some(CloseFrame { code: code.into(), reason: "superseded".into() })).await;
                            return;
                        }
                        let gap = {
                            let mut s = scan.lock().unwrap();
                            let highest = s.frames.keys().next_back().copied().unwrap_or(0);
                            if seq <= highest {
                                s.duplicates += 1;
                                continue;
                            }
                            if seq == highest + 1 {
                                s.frames.insert(seq, bytes.to_vec());
                                None
                            } else {
                                Some(highest + 1)
                            }
                        };
                        if let Some(expected) = gap {
                            let err = ErrorMsg::new(Code::SequenceGap, format!("expected {expected}"));
                            let _ = ws.send(send(ServerMsg::Error(err))).await;
                            return;
                        }
                        if cut {
                            // An abrupt drop: the frame was received but never acked.
                            return;
                        }
                        if !hold {
                            scan.lock().unwrap().durable = seq;
                            ws.send(send(ServerMsg::Ack(Ack { up_to: seq }))).await.unwrap();
                        }
                        if slow {
                            ws.send(send(ServerMsg::Slow)).await.unwrap();
                        }
                    }
                    ClientMsg::Finish(f) => {
                        let done = {
                            let mut s = scan.lock().unwrap();
                            let highest = s.frames.keys().next_back().copied().unwrap_or(0);
                            if f.last_seq != highest {
                                None
                            } else {
                                s.durable = highest;
                                let done = Finished {
                                    frames: s.frames.len() as u64,
                                    last_seq: highest,
                                    status: "processing".into(),
                                };
                                s.finished = Some(done.clone());
                                Some(done)
                            }
                        };
                        let Some(done) = done else {
                            let err = ErrorMsg::new(Code::SequenceGap, "finish before the last frame");
                            let _ = ws.send(send(ServerMsg::Error(err))).await;
                            return;
                        };
                        ws.send(send(ServerMsg::Ack(Ack { up_to: done.last_seq }))).await.unwrap();
                        ws.send(send(ServerMsg::Finished(done))).await.unwrap();
                        let _ = ws.close(None).await;
                        while let Some(Ok(_)) = ws.next().await {}
                        return;
                    }
                    ClientMsg::Ping(p) => ws.send(send(ServerMsg::Pong(p))).await.unwrap(),
                    ClientMsg::Pong(_) | ClientMsg::Hello(_) => {}
                }
            }
            _ = kick.notified() => {
                if resume.swap(false, Ordering::SeqCst) {
                    ws.send(send(ServerMsg::Resume)).await.unwrap();
                }
                if !behaviour.lock().unwrap().hold_acks && !mute {
                    let up_to = {
                        let mut s = scan.lock().unwrap();
                        s.durable = s.frames.keys().next_back().copied().unwrap_or(0);
                        s.durable
                    };
                    ws.send(send(ServerMsg::Ack(Ack { up_to }))).await.unwrap();
                }
            }
        }
    }
}

fn frame(i: u64) -> DepthFrame {
    let (w, h) = (16u32, 12u32);
    let metres: Vec<f32> = (0..w * h).map(|p| 0.3 + (p as f32 + i as f32) * 1e-4).collect();
    DepthFrame {
        seq: 0,
        captured_at_us: 1_700_000_000_000_000 + i * 33_333,
        width: w,
        height: h,
        depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &metres),
        confidence: None,
        intrinsics: [12.0, 0.0, 8.0, 0.0, 12.0, 6.0, 0.0, 0.0, 1.0],
        pose: [1.0, 0.0, 0.0, 0.01 * i as f32, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        colour_jpeg: None,
        colour_intrinsics: None,
        colour_pose: None,
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_every_frame_once(server: &TestServer, n: u64) {
    assert_eq!(server.stored_seqs(), (1..=n).collect::<Vec<_>>());
    // Each stored frame decodes to the seq it is stored under.
    for (seq, bytes) in &server.scan.lock().unwrap().frames {
        let Ok(ClientMsg::Frame(f)) = decode_client(bytes) else { panic!("stored frame {seq}") };
        assert_eq!(f.seq, *seq);
    }
}

#[tokio::test]
async fn streaming_frames_gets_each_acked_and_finishes() {
    let server = TestServer::start(Behaviour::default()).await;
    let scan = ScanId::new();
    let mut client = ScanStreamClient::connect_with(server.config(scan)).await.unwrap();
    assert_eq!(client.next_seq(), 1);
    for i in 1..=50 {
        assert_eq!(client.send_frame(frame(i)).await.unwrap(), i);
    }
    eventually("all acks", || client.last_ack() == 50).await;
    assert_eq!(client.take_ack_latencies().len(), 50);
    let done = client.finish().await.unwrap();
    assert_eq!((done.frames, done.last_seq, done.status.as_str()), (50, 50, "processing"));
    assert_every_frame_once(&server, 50);
    assert_eq!(server.scan.lock().unwrap().duplicates, 0);
}

#[tokio::test]
async fn cutting_the_connection_resumes_without_loss_or_duplicates() {
    let server = TestServer::start(Behaviour::default()).await;
    let mut client = ScanStreamClient::connect_with(server.config(ScanId::new())).await.unwrap();
    for i in 1..=120 {
        client.send_frame(frame(i)).await.unwrap();
        if i % 25 == 0 {
            client.cut_connection();
        }
    }
    let done = client.finish().await.unwrap();
    assert_eq!(done.frames, 120);
    assert_every_frame_once(&server, 120);
    assert!(server.connections.load(Ordering::SeqCst) >= 5);
}

#[tokio::test]
async fn a_server_side_drop_before_the_ack_resumes_from_the_welcome() {
    let behaviour = Behaviour { cut_at: [10, 33, 61].into(), ..Behaviour::default() };
    let server = TestServer::start(behaviour).await;
    let mut client = ScanStreamClient::connect_with(server.config(ScanId::new())).await.unwrap();
    for i in 1..=80 {
        client.send_frame(frame(i)).await.unwrap();
    }
    eventually("all acks", || client.last_ack() == 80).await;
    assert_eq!(client.reconnects(), 3);
    client.finish().await.unwrap();
    assert_every_frame_once(&server, 80);
}

#[tokio::test]
async fn the_client_stops_at_the_window_until_acks_arrive() {
    let behaviour = Behaviour { hold_acks: true, window: 8, ..Behaviour::default() };
    let server = TestServer::start(behaviour).await;
    let mut client = ScanStreamClient::connect_with(server.config(ScanId::new())).await.unwrap();
    for i in 1..=8 {
        client.send_frame(frame(i)).await.unwrap();
    }
    let blocked = tokio::time::timeout(Duration::from_millis(300), client.send_frame(frame(9))).await;
    assert!(blocked.is_err(), "the ninth frame must wait for window space");
    server.release(|b| b.hold_acks = false);
    tokio::time::timeout(WAIT, client.send_frame(frame(9))).await.unwrap().unwrap();
    client.finish().await.unwrap();
    assert_every_frame_once(&server, 9);
}

#[tokio::test]
async fn slow_pauses_new_frames_until_resume() {
    let behaviour = Behaviour { slow_at: Some(5), ..Behaviour::default() };
    let server = TestServer::start(behaviour).await;
    let mut client = ScanStreamClient::connect_with(server.config(ScanId::new())).await.unwrap();
    let mut events = client.take_events().unwrap();
    let sender = tokio::spawn(async move {
        // A camera at 200 Hz, so that `slow` lands mid-stream.
        let mut camera = tokio::time::interval(Duration::from_millis(5));
        for i in 1..=30 {
            camera.tick().await;
            client.send_frame(frame(i)).await.unwrap();
        }
        client
    });
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if e == ClientEvent::Slow {
                break;
            }
        }
    })
    .await
    .unwrap();
    // Frames already on the wire when `slow` arrived may still land; then nothing more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let paused_at = server.stored_seqs().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.stored_seqs().len(), paused_at, "frames were sent while slowed");
    assert!(paused_at < 30);

    server.resume.store(true, Ordering::SeqCst);
    server.kick.notify_waiters();
    let client = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    client.finish().await.unwrap();
    assert_every_frame_once(&server, 30);
}

#[tokio::test]
async fn a_silent_server_is_detected_by_the_heartbeat_and_the_stream_resumes() {
    let behaviour = Behaviour { mute_first: true, ..Behaviour::default() };
    let server = TestServer::start(behaviour).await;
    let mut config = server.config(ScanId::new());
    config.heartbeat_interval = Duration::from_millis(50);
    config.heartbeat_timeout = Duration::from_millis(300);
    let mut client = ScanStreamClient::connect_with(config).await.unwrap();
    for i in 1..=5 {
        client.send_frame(frame(i)).await.unwrap();
    }
    eventually("a reconnection", || client.reconnects() >= 1).await;
    eventually("all acks", || client.last_ack() == 5).await;
    client.finish().await.unwrap();
    assert_every_frame_once(&server, 5);
}

#[tokio::test]
async fn a_bad_token_is_refused_at_the_upgrade() {
    let server = TestServer::start(Behaviour::default()).await;
    let mut config = server.config(ScanId::new());
    config.token = "wrong".into();
    let err = ScanStreamClient::connect_with(config).await.err().unwrap();
    assert!(matches!(err, ClientError::Rejected { status: 401, .. }), "{err:?}");
}

#[tokio::test]
async fn an_unsupported_version_answer_reaches_the_caller_with_the_supported_list() {
    let mut refusal = ErrorMsg::new(Code::UnsupportedVersion, "protocol version 1 is not supported");
    refusal.supported_versions = Some(vec![2]);
    let behaviour = Behaviour { refuse_with: Some(refusal), ..Behaviour::default() };
    let server = TestServer::start(behaviour).await;
    let err = ScanStreamClient::connect_with(server.config(ScanId::new())).await.err().unwrap();
    let ClientError::Server(e) = err else { panic!("{err:?}") };
    assert_eq!(e.code(), Some(Code::UnsupportedVersion));
    assert_eq!(e.supported_versions, Some(vec![2]));
    assert_ne!(SUPPORTED_VERSIONS, [2]);
}

#[tokio::test]
async fn reconnection_gives_up_within_its_bounds_when_the_server_is_gone() {
    let server = TestServer::start(Behaviour::default()).await;
    let mut config = server.config(ScanId::new());
    config.max_reconnect_attempts = 3;
    config.reconnect_deadline = Duration::from_secs(5);
    let mut client = ScanStreamClient::connect_with(config).await.unwrap();
    client.send_frame(frame(1)).await.unwrap();
    eventually("the ack", || client.last_ack() == 1).await;
    server.accept_task.abort();
    // Wait until the listener is really gone, then cut.
    eventually("the listener to close", || {
        std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(50)).is_err()
    })
    .await;
    client.cut_connection();
    let started = std::time::Instant::now();
    let err = loop {
        match tokio::time::timeout(WAIT, client.send_frame(frame(2))).await.unwrap() {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, ClientError::ReconnectsExhausted { attempts: 3, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_restarted_app_continues_the_scan_from_its_last_ack() {
    let server = TestServer::start(Behaviour::default()).await;
    let scan = ScanId::new();
    let mut first = ScanStreamClient::connect_with(server.config(scan)).await.unwrap();
    for i in 1..=10 {
        first.send_frame(frame(i)).await.unwrap();
    }
    eventually("all acks", || first.last_ack() == 10).await;
    drop(first);

    let mut config = server.config(scan);
    config.resume_from = Some(10);
    let mut second = ScanStreamClient::connect_with(config).await.unwrap();
    assert_eq!((second.last_ack(), second.next_seq()), (10, 11));
    for i in 11..=15 {
        assert_eq!(second.send_frame(frame(i)).await.unwrap(), i);
    }
    let done = second.finish().await.unwrap();
    assert_eq!(done.frames, 15);
    assert_every_frame_once(&server, 15);
}

#[tokio::test]
async fn a_superseded_client_stops_instead_of_reconnecting() {
    let behaviour = Behaviour { supersede_at: Some(3), ..Behaviour::default() };
    let server = TestServer::start(behaviour).await;
    let mut client = ScanStreamClient::connect_with(server.config(ScanId::new())).await.unwrap();
    let err = loop {
        match client.send_frame(frame(client.next_seq())).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => break e,
        }
    };
    let ClientError::Server(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.code(), Some(Code::Superseded));
    assert_eq!(client.reconnects(), 0);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn finishing_a_scan_twice_reports_the_same_result() {
    let server = TestServer::start(Behaviour::default()).await;
    let scan = ScanId::new();
    let mut client = ScanStreamClient::connect_with(server.config(scan)).await.unwrap();
    client.send_frame(frame(1)).await.unwrap();
    let done = client.finish().await.unwrap();
    // A hello for a finished scan is answered with `finished`.
    let again = ScanStreamClient::connect_with(server.config(scan)).await.err().unwrap();
    let ClientError::AlreadyFinished(again) = again else { panic!("{again:?}") };
    assert_eq!(again, done);
    assert_eq!(done.last_seq, 1);
}
