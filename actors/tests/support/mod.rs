//! Test support: in-memory stores wired into a registry, generated frames encoded exactly as
//! a phone would send them, and a `Phone` that plays both the phone and its socket pump
//! against a capture session.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use coherency_actors::capture::{
    attach, AttachOutcome, CaptureConfig, CaptureDeps, CaptureError, CaptureRegistry, CaptureSession, ConnId, Detach,
    Finish, Frame, LiveSessions, Outbound,
};
use coherency_actors::metrics::SessionMetrics;
use coherency_actors::retry::RetryPolicy;
use coherency_actors::store::StoreKind;
use coherency_actors::testing::{MemFrameStore, MemQualitySink, MemScanIndex};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{
    decode_client, encode_client, ClientMsg, Compression, DepthFormat, DepthFrame, DepthPlane, ErrorMsg, Finished,
    ServerMsg,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A config with short retry budgets so that outages resolve quickly in tests.
pub fn test_config() -> CaptureConfig {
    CaptureConfig {
        quality_retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            give_up_after: None,
        },
        durable_retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            give_up_after: Some(Duration::from_secs(30)),
        },
        ..CaptureConfig::default()
    }
}

pub struct Harness {
    pub frames: Arc<MemFrameStore>,
    pub index: Arc<MemScanIndex>,
    pub quality: Arc<MemQualitySink>,
    pub registry: Addr<CaptureRegistry>,
    pub scan_id: ScanId,
    /// The registry's running sessions.
    pub live: LiveSessions,
}

/// Counts what the sessions report through [`SessionMetrics`].
#[derive(Debug, Default)]
pub struct CountingMetrics {
    pub sessions: AtomicI64,
    pub durable_frames: AtomicU64,
    pub max_backlog: AtomicUsize,
    pub retries: AtomicU64,
    pub slowed: AtomicU64,
}

impl SessionMetrics for CountingMetrics {
    fn sessions(&self, delta: i64) {
        self.sessions.fetch_add(delta, Ordering::SeqCst);
    }
    fn durable_backlog(&self, _scan_id: ScanId, frames: usize, _bytes: usize) {
        self.max_backlog.fetch_max(frames, Ordering::SeqCst);
    }
    fn durable(&self, frames: u64, _lag: Duration) {
        self.durable_frames.fetch_add(frames, Ordering::SeqCst);
    }
    fn store_retry(&self, _store: StoreKind) {
        self.retries.fetch_add(1, Ordering::SeqCst);
    }
    fn flow(&self, _scan_id: ScanId, slowed: bool) {
        if slowed {
            self.slowed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Harness {
    pub fn new(config: CaptureConfig) -> Self {
        Self::with_metrics(config, Arc::new(CountingMetrics::default())).0
    }

    pub fn with_metrics(config: CaptureConfig, metrics: Arc<CountingMetrics>) -> (Self, Arc<CountingMetrics>) {
        let frames = Arc::new(MemFrameStore::default());
        let index = Arc::new(MemScanIndex::default());
        let quality = Arc::new(MemQualitySink::default());
        let scan_id = ScanId::new();
        index.create_scan(scan_id);
        let deps = CaptureDeps::new(frames.clone(), index.clone(), quality.clone())
            .with_config(config)
            .with_metrics(metrics.clone());
        let live = LiveSessions::default();
        let registry = CaptureRegistry::new(deps).with_live(live.clone()).start();
        (Self { frames, index, quality, registry, scan_id, live }, metrics)
    }

    /// Every frame `1..=n` is indexed exactly once and its stored bytes are the bytes sent.
    pub fn assert_stored_exactly(&self, sent: &[SentFrame]) {
        let rows = self.index.frames(self.scan_id);
        assert_eq!(rows.len(), sent.len(), "indexed frames");
        assert_eq!(self.index.row_inserts(), sent.len() as u64, "rows inserted once each");
        assert!(self.index.violations().is_empty(), "{:?}", self.index.violations());
        for ((key, row), f) in rows.iter().zip(sent) {
            assert_eq!(row.seq, f.frame.seq);
            let chunk = self.frames.get(key).unwrap_or_else(|| panic!("chunk {key} missing"));
            let bytes = &chunk[row.offset as usize..(row.offset + row.length) as usize];
            assert_eq!(bytes, &f.raw[..], "frame {} bytes", row.seq);
            let sha: [u8; 32] = Sha256::digest(bytes).into();
            assert_eq!(sha, row.sha256, "frame {} hash", row.seq);
            assert_eq!(row.captured_at_us, f.frame.captured_at_us);
        }
    }

    pub async fn session(&self) -> Addr<CaptureSession> {
        self.registry
            .send(coherency_actors::capture::GetOrStart { scan_id: self.scan_id })
            .await
            .expect("registry alive")
            .expect("session")
    }
}

/// A frame as the pump hands it to the session: decoded, plus the bytes as received.
#[derive(Clone)]
pub struct SentFrame {
    pub frame: Box<DepthFrame>,
    pub raw: Bytes,
}

/// `n` frames of `w × h` (u16 0.1 mm, zstd), the camera sliding 1 mm per frame, encoded
/// and decoded exactly as on the wire.
pub fn make_frames(n: u64, w: u32, h: u32) -> Vec<SentFrame> {
    (1..=n)
        .map(|seq| {
            let metres: Vec<f32> =
                (0..h)
                    .flat_map(|y| (0..w).map(move |x| (x, y)))
                    .map(|(x, y)| {
                        if (x + y + seq as u32).is_multiple_of(11) {
                            0.0
                        } else {
                            0.28 + 0.0001 * ((x * y) % 50) as f32
                        }
                    })
                    .collect();
            let mut pose = [1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.];
            pose[3] = seq as f32 * 0.001;
            let frame = DepthFrame {
                seq,
                captured_at_us: 1_717_000_000_000_000 + seq * 33_333,
                width: w,
                height: h,
                depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &metres),
                confidence: None,
                intrinsics: [200., 0., w as f32 / 2., 0., 200., h as f32 / 2., 0., 0., 1.],
                pose,
                colour_jpeg: None,
                colour_intrinsics: None,
                colour_pose: None,
            };
            let raw = Bytes::from(encode_client(&ClientMsg::Frame(Box::new(frame))));
            let ClientMsg::Frame(frame) = decode_client(&raw).expect("valid frame") else { panic!("not a frame") };
            SentFrame { frame, raw }
        })
        .collect()
}

/// Waits until `cond` holds, polling; panics after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How a stream run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The caller's condition held.
    Until,
    /// The session closed the connection with this code.
    Closed(u16),
    /// The outbox ended without a close (connection dropped by the session).
    Dropped,
}

/// One connection from the phone to the session (the pump's view).
pub struct Conn {
    pub id: ConnId,
    pub session: Addr<CaptureSession>,
    pub rx: mpsc::Receiver<Outbound>,
    pub slowed: bool,
    pub saw_slow: bool,
    pub saw_resume: bool,
    pub errors: Vec<ErrorMsg>,
    pub finished: Option<Finished>,
    pub closed: Option<u16>,
    pub acks: Vec<u64>,
    pub progress_at: Vec<Instant>,
}

impl Conn {
    /// Simulates the socket going away: the pump detaches and drops its outbox.
    pub fn cut(self) {
        self.session.do_send(Detach { conn_id: self.id });
    }
}

/// A phone that keeps every frame until acked and follows the protocol's client rules.
pub struct Phone {
    pub scan_id: ScanId,
    pub frames: Arc<Vec<SentFrame>>,
    pub acked: u64,
    pub next: u64,
    pub highest_sent: u64,
    pub window: u64,
    /// Pace between frames (None: as fast as allowed).
    pub pace: Option<Duration>,
    /// Checked on every ack: the index must already cover it.
    pub index: Option<Arc<MemScanIndex>>,
    pub all_errors: Vec<ErrorMsg>,
}

impl Phone {
    pub fn new(scan_id: ScanId, frames: Vec<SentFrame>) -> Self {
        Self {
            scan_id,
            frames: Arc::new(frames),
            acked: 0,
            next: 1,
            highest_sent: 0,
            window: 64,
            pace: None,
            index: None,
            all_errors: Vec::new(),
        }
    }

    pub fn total(&self) -> u64 {
        self.frames.len() as u64
    }

    /// `hello` (with `resume` after the first connection) and `welcome`.
    pub async fn connect(&mut self, registry: &Addr<CaptureRegistry>) -> Result<Conn, CaptureError> {
        let (tx, mut rx) = mpsc::channel(256);
        let id = ConnId::next();
        let resume = (self.highest_sent > 0).then_some(self.acked);
        let (session, outcome) = attach(registry, self.scan_id, id, resume, tx).await?;
        let first = tokio::time::timeout(WAIT, rx.recv()).await.expect("welcome in time");
        match outcome {
            AttachOutcome::Streaming(w) => {
                assert_eq!(first, Some(Outbound::Msg(ServerMsg::Welcome(w.clone()))));
                assert!(w.acked >= self.acked, "welcome.acked {} below our ack {}", w.acked, self.acked);
                assert!(w.next <= self.highest_sent + 1, "welcome.next {} beyond what we sent", w.next);
                assert!(w.next > w.acked);
                self.acked = w.acked;
                self.next = w.next;
                self.window = u64::from(w.window);
            }
            AttachOutcome::Finished(f) => {
                assert_eq!(first, Some(Outbound::Msg(ServerMsg::Finished(f))));
            }
        }
        Ok(Conn {
            id,
            session,
            rx,
            slowed: false,
            saw_slow: false,
            saw_resume: false,
            errors: Vec::new(),
            finished: None,
            closed: None,
            acks: Vec::new(),
            progress_at: Vec::new(),
        })
    }

    fn on_msg(&mut self, conn: &mut Conn, msg: Outbound) -> Option<RunEnd> {
        match msg {
            Outbound::Msg(ServerMsg::Ack(a)) => {
                assert!(a.up_to >= self.acked, "ack went back from {} to {}", self.acked, a.up_to);
                assert!(a.up_to <= self.highest_sent, "ack {} for a frame never sent", a.up_to);
                if let Some(index) = &self.index {
                    let durable = index.state(self.scan_id).map_or(0, |s| s.acked_seq);
                    assert!(a.up_to <= durable, "ack {} before durable ({durable})", a.up_to);
                }
                self.acked = a.up_to;
                conn.acks.push(a.up_to);
            }
            Outbound::Msg(ServerMsg::Slow) => {
                conn.slowed = true;
                conn.saw_slow = true;
            }
            Outbound::Msg(ServerMsg::Resume) => {
                conn.slowed = false;
                conn.saw_resume = true;
            }
            Outbound::Msg(ServerMsg::Progress(_)) => conn.progress_at.push(Instant::now()),
            Outbound::Msg(ServerMsg::Finished(f)) => conn.finished = Some(f),
            Outbound::Msg(ServerMsg::Error(e)) => {
                conn.errors.push(e.clone());
                self.all_errors.push(e);
            }
            Outbound::Msg(other) => panic!("unexpected message {other:?}"),
            Outbound::Close(code) => {
                conn.closed = Some(code);
                return Some(RunEnd::Closed(code));
            }
        }
        None
    }

    /// Streams (and, with `finish`, finishes once every frame is sent) until `until` holds
    /// or the connection closes. Frames are sent within the window and never while slowed;
    /// the pump waits for each frame's reply before sending the next one.
    pub async fn run(&mut self, conn: &mut Conn, finish: bool, mut until: impl FnMut(&Phone, &Conn) -> bool) -> RunEnd {
        let fut = async {
            type Reply = Result<Result<(), CaptureError>, MailboxError>;
            let mut pending: Option<std::pin::Pin<Box<dyn Future<Output = Reply>>>> = None;
            let mut finish_sent = false;
            let mut last_send = Instant::now() - Duration::from_secs(1);
            loop {
                if until(self, conn) {
                    return RunEnd::Until;
                }
                let in_flight = self.next.saturating_sub(1).saturating_sub(self.acked);
                let can_send =
                    pending.is_none() && !conn.slowed && self.next <= self.total() && in_flight < self.window;
                let pace_wait = self.pace.map_or(Duration::ZERO, |p| p.saturating_sub(last_send.elapsed()));
                let want_finish = finish && !finish_sent && pending.is_none() && self.next > self.total();
                tokio::select! {
                    biased;
                    msg = conn.rx.recv() => match msg {
                        Some(m) => if let Some(end) = self.on_msg(conn, m) { return end },
                        None => return RunEnd::Dropped,
                    },
                    res = async { pending.as_mut().expect("pending").await }, if pending.is_some() => {
                        pending = None;
                        // On other errors the session has queued the error and the close on
                        // the outbox: keep reading them.
                        if res.map_err(CaptureError::from).and_then(|r| r) == Err(CaptureError::Stopped) {
                            return RunEnd::Dropped;
                        }
                    },
                    _ = tokio::time::sleep(pace_wait), if can_send => {
                        let f = self.frames[(self.next - 1) as usize].clone();
                        let seq = f.frame.seq;
                        let session = conn.session.clone();
                        let id = conn.id;
                        pending = Some(Box::pin(async move { session.send(Frame { conn_id: id, frame: f.frame, raw: f.raw }).await }));
                        self.highest_sent = self.highest_sent.max(seq);
                        self.next += 1;
                        last_send = Instant::now();
                    },
                    // `Addr::send` enqueues at once, so only build it inside the branch.
                    res = async { conn.session.send(Finish { conn_id: conn.id, last: self.total() }).await }, if want_finish => {
                        finish_sent = true;
                        if res.map_err(CaptureError::from).and_then(|r| r) == Err(CaptureError::Stopped) {
                            return RunEnd::Dropped;
                        }
                    },
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {},
                }
            }
        };
        tokio::time::timeout(WAIT, fut).await.expect("stream step finished in time")
    }

    /// Sends one frame directly (for protocol-violation tests).
    pub async fn send_raw(&self, conn: &Conn, seq: u64) -> Result<(), CaptureError> {
        let f = self.frames[(seq - 1) as usize].clone();
        conn.session.send(Frame { conn_id: conn.id, frame: f.frame, raw: f.raw }).await?
    }
}

/// Drains whatever the session has queued for a connection, up to its close.
pub async fn drain(conn: &mut Conn) -> Vec<Outbound> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, conn.rx.recv()).await {
        let close = matches!(m, Outbound::Close(_));
        out.push(m);
        if close {
            break;
        }
    }
    out
}

/// A small deterministic generator for random cut points.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
