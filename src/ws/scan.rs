//! `GET /v1/scans/{id}/stream`: the scan stream socket (protocol v1, `docs/protocol.md`).
//!
//! Before the upgrade: Origin, credentials, the `scans:create` permission (with MFA for
//! staff), and object access (the scan's patient themself, a clinician caring for them, an
//! admin) — refusals are ordinary JSON errors. Then this node takes the scan's lease
//! (`crate::cluster::scans`; 503 `unavailable` while another node will not let go). After
//! the upgrade, this task is a pump: it decodes each message (size checked first), forwards
//! frames and `finish` to the scan's `CaptureSession` and writes back whatever the session
//! puts in the connection's outbox; every second it also checks that the scan's lease is
//! still this node's.
//! Backpressure: while a frame's reply is pending (the session holds it back when its
//! backlog is high) the socket is not read, so TCP pushes back on the phone; nothing here
//! buffers without bound. Also here: the Prometheus side of the capture metrics.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, MailboxError};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use coherency_actors::capture::{Detach, Finish, Frame, LiveSessions, Outbound};
use coherency_actors::metrics::SessionMetrics;
use coherency_actors::reconstruction::ReconstructionPool;
use coherency_actors::store::StoreKind;
use coherency_actors::{CaptureConfig, CaptureDeps, CaptureError, CaptureRegistry};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{
    close, decode_client, encode_server, ClientMsg, DecodeError, ErrorMsg, Heartbeat, ServerMsg,
};
use coherency_protocol::{limits, Code};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::pump::{CLIENT_TIMEOUT, HEARTBEAT, HELLO_TIMEOUT};
use crate::audit::AuditEvent;
use crate::auth::{self, Permission, Principal};
use crate::clock::Clock;
use crate::cluster::scans::{self, Standing};
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::scans::{BlobFrameStore, MongoQualitySink, PgScanIndex};
use crate::store::Stores;

/// How long after sending an error the pump waits for the session's close before closing
/// by itself.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often the heartbeat timer ticks: the stream pings only after [`HEARTBEAT`] without
/// sending, so it checks each second rather than pinging on a fixed beat.
const TICK: Duration = Duration::from_secs(1);

type Pending = Pin<Box<dyn Future<Output = Result<Result<(), CaptureError>, MailboxError>>>>;

/// Opens a scan's stream.
#[utoipa::path(get, path = "/v1/scans/{id}/stream", tag = "scans", security(("bearer" = ["scans:create"])),
    params(("id" = Uuid, Path, description = "scan id"),
           ("ticket" = Option<String>, Query, description = "single-use ticket from POST /v1/auth/ws-ticket (browsers)")),
    responses((status = 101, description = "websocket; see docs/protocol.md"),
              (status = 401, description = "unauthenticated, token_expired, token_revoked"),
              (status = 403, description = "forbidden, origin_not_allowed, consent_required, mfa_required"),
              (status = 404, description = "not_found: no such scan visible to the caller"),
              (status = 409, description = "scan_not_streamable: failed or cancelled"),
              (status = 503, description = "unavailable: draining, or another server still holds the scan")))]
#[tracing::instrument(skip_all, fields(scan_id = tracing::field::Empty))]
pub async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (who, scan_id) = authorize_stream(&state, &req, &path).await?;
    let (response, session, messages) =
        actix_ws::handle(&req, body).map_err(|_| ApiError::new(Code::BadRequest, "expected a websocket upgrade"))?;
    scans::acquire(&state.cluster, scan_id).await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("scan.stream", "success").target("scan", scan_id.as_uuid()))
        .await?;
    // A single websocket frame is refused by its header; a fragmented message by its sum.
    let messages = messages
        .max_frame_size(limits::MAX_FRAME_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(limits::MAX_FRAME_MESSAGE_BYTES);
    let wire = WsWire { session, messages };
    actix_web::rt::spawn(run_pump(state.into_inner(), who, scan_id, wire));
    Ok(response)
}

/// Everything checked before a scan's stream opens, whatever its transport: Origin,
/// credentials, `scans:create` (MFA for staff), the scan exists and is visible to the caller,
/// scan consent, the scan is not failed or cancelled, the node is not draining.
pub(crate) async fn authorize_stream(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
) -> Result<(Principal, ScanId), ApiError> {
    let who = super::authenticate(req, state).await?;
    auth::authorize(state, req, &who, Permission::ScansCreate).await?;
    let scan_uuid: Uuid = path.parse().map_err(|_| ApiError::not_found())?;
    tracing::Span::current().record("scan_id", tracing::field::display(scan_uuid));
    let scan_id = ScanId::from_uuid(scan_uuid);
    state.scans.streamable(&auth::caller_of(req, state, &who), scan_id).await?;
    if state.lifecycle.is_draining() {
        return Err(ApiError::unavailable("the server is draining; reconnect"));
    }
    Ok((who, scan_id))
}

/// What one read from a transport gave the pump.
pub(crate) enum WireIn {
    /// One whole binary protocol message.
    Binary(bytes::Bytes),
    /// A text message (not part of the protocol).
    Text,
    /// A transport-level control message (websocket ping/pong): a sign of life only.
    Control,
    /// The peer closed, or the transport is gone.
    Closed,
    /// The transport's framing was broken: the code and detail for the `error`.
    Broken(Code, String),
}

/// A transport the scan stream pump drives: the websocket, or a WebRTC data channel
/// (`super::scan_rtc`). Both carry the same v1 messages; only framing and closing differ.
pub(crate) trait Wire {
    /// Label for the open-connections gauge.
    const KIND: &'static str;
    /// The next message. Must be cancel-safe (it is raced in a `select!`).
    fn recv(&mut self) -> impl Future<Output = WireIn>;
    /// Sends one encoded server message; `false` when the transport is gone.
    fn send(&mut self, message: Vec<u8>) -> impl Future<Output = bool>;
    /// Closes the transport with a close code.
    fn close(self, code: u16, reason: &'static str) -> impl Future<Output = ()>;
}

/// The websocket transport.
struct WsWire {
    session: Session,
    messages: actix_ws::AggregatedMessageStream,
}

impl Wire for WsWire {
    const KIND: &'static str = "scan";

    async fn recv(&mut self) -> WireIn {
        match self.messages.recv().await {
            None | Some(Ok(AggregatedMessage::Close(_))) => WireIn::Closed,
            Some(Ok(AggregatedMessage::Binary(raw))) => WireIn::Binary(raw),
            Some(Ok(AggregatedMessage::Text(_))) => WireIn::Text,
            Some(Ok(AggregatedMessage::Ping(b))) => {
                if self.session.pong(&b).await.is_err() {
                    return WireIn::Closed;
                }
                WireIn::Control
            }
            Some(Ok(AggregatedMessage::Pong(_))) => WireIn::Control,
            Some(Err(e)) => protocol_error(&e),
        }
    }

    async fn send(&mut self, message: Vec<u8>) -> bool {
        self.session.binary(message).await.is_ok()
    }

    async fn close(self, code: u16, reason: &'static str) {
        let reason = CloseReason { code: CloseCode::from(code), description: Some(reason.into()) };
        let _ = self.session.close(Some(reason)).await;
    }
}

/// Runs one connection of a scan's stream over `wire` until it ends; returns the close code
/// it ended with.
pub(crate) async fn run_pump<W: Wire>(state: Arc<AppState>, who: Principal, scan_id: ScanId, wire: W) -> u16 {
    Pump::new(state, who, scan_id, wire).run().await
}

/// How a connection ends: an optional `error` for the phone, then the close code.
struct End {
    error: Option<ErrorMsg>,
    code: u16,
    reason: &'static str,
}

impl End {
    fn close(code: u16, reason: &'static str) -> Self {
        Self { error: None, code, reason }
    }
    fn error(msg: ErrorMsg, reason: &'static str) -> Self {
        let code = msg.close_code();
        Self { error: Some(msg), code, reason }
    }
    fn decode(e: &DecodeError) -> Self {
        Self::error(e.to_error_msg(), "protocol error")
    }
    fn protocol(code: Code, message: &str) -> Self {
        Self::error(ErrorMsg::new(code, message), "protocol error")
    }
    /// The scan now streams through another node (its lease moved there).
    fn superseded() -> Self {
        Self::error(CaptureError::Superseded.to_error_msg(), "superseded")
    }
}

struct Pump<W> {
    state: Arc<AppState>,
    who: Principal,
    scan_id: ScanId,
    wire: W,
    conn_id: coherency_actors::capture::ConnId,
    last_heard: Instant,
    last_sent: Instant,
    ping_n: u64,
}

impl<W: Wire> Pump<W> {
    fn new(state: Arc<AppState>, who: Principal, scan_id: ScanId, wire: W) -> Self {
        let now = Instant::now();
        Self {
            state,
            who,
            scan_id,
            wire,
            conn_id: coherency_actors::capture::ConnId::next(),
            last_heard: now,
            last_sent: now,
            ping_n: 0,
        }
    }

    async fn send(&mut self, msg: &ServerMsg) -> bool {
        self.last_sent = Instant::now();
        self.wire.send(encode_server(msg)).await
    }

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id, conn = self.conn_id.0, transport = W::KIND))]
    async fn run(mut self) -> u16 {
        let gauge = self.state.metrics.websockets_open.with_label_values(&[W::KIND]);
        gauge.inc();
        let mut guard = self.state.sockets.register(self.who.user_id, self.who.session_id);
        let mut shutdown = self.state.lifecycle.subscribe();
        let (outbox, mut inbox) = mpsc::channel(CaptureConfig::default().outbox_capacity.max(1));
        let mut session_addr = None;
        let end = self.pump(&mut guard.closed, &mut shutdown, outbox, &mut inbox, &mut session_addr).await;
        if let Some(addr) = &session_addr {
            addr.do_send(Detach { conn_id: self.conn_id });
        }
        // Whatever the session queued before the end is still the phone's to see (acks).
        if end.error.is_some() {
            while let Ok(Outbound::Msg(m)) = inbox.try_recv() {
                if !self.send(&m).await {
                    break;
                }
            }
        }
        if let Some(err) = &end.error {
            tracing::debug!(code = %err.code, close = end.code, "closing the scan stream with an error");
            let _ = self.send(&ServerMsg::Error(err.clone())).await;
        }
        self.wire.close(end.code, end.reason).await;
        gauge.dec();
        drop(guard);
        end.code
    }

    /// Reads one transport message: a decoded protocol message with its raw bytes, a
    /// control message handled here, or the end of the connection.
    fn read(&mut self, m: WireIn) -> Result<Incoming, End> {
        self.last_heard = Instant::now();
        match m {
            WireIn::Closed => Ok(Incoming::Closed),
            WireIn::Binary(raw) => match decode_client(&raw) {
                Ok(msg) => Ok(Incoming::Msg(msg, raw)),
                Err(e) => Err(End::decode(&e)),
            },
            WireIn::Text => {
                Err(End::protocol(Code::MalformedMessage, "text messages are not part of the protocol; send binary"))
            }
            WireIn::Control => Ok(Incoming::Control),
            WireIn::Broken(code, message) => Err(End::protocol(code, &message)),
        }
    }

    /// The connection's life; returns how it ends.
    async fn pump(
        &mut self,
        revoked: &mut tokio::sync::watch::Receiver<Option<u16>>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        outbox: mpsc::Sender<Outbound>,
        inbox: &mut mpsc::Receiver<Outbound>,
        session_addr: &mut Option<Addr<coherency_actors::CaptureSession>>,
    ) -> End {
        // 1. `hello`, within HELLO_TIMEOUT.
        let hello_deadline = Instant::now() + HELLO_TIMEOUT;
        let hello = loop {
            tokio::select! {
                m = tokio::time::timeout_at(hello_deadline, self.wire.recv()) => {
                    let Ok(m) = m else {
                        return End::protocol(Code::MalformedMessage, "no hello within the hello timeout");
                    };
                    match self.read(m) {
                        Err(end) => return end,
                        Ok(Incoming::Closed) => return End::close(close::NORMAL, "closed by the client"),
                        Ok(Incoming::Control) => {}
                        Ok(Incoming::Msg(ClientMsg::Hello(h), _)) => break h,
                        Ok(Incoming::Msg(..)) => {
                            return End::protocol(Code::MalformedMessage, "the first message must be hello")
                        }
                    }
                }
                _ = shutdown.changed() => return End::close(close::GOING_AWAY, "server going away"),
                _ = revoked.changed() => return End::protocol(Code::TokenRevoked, "the session has ended"),
            }
        };
        if hello.scan_id != self.scan_id {
            return End::protocol(Code::MalformedMessage, "hello.scan does not match the scan in the URL");
        }
        // The lease was taken before the upgrade; a newer connection elsewhere may have
        // moved the scan since.
        if let Standing::Lost = scans::standing(&self.state.cluster, self.scan_id).await {
            return End::superseded();
        }
        let registry = self.state.capture.clone();
        match coherency_actors::attach(&registry, self.scan_id, self.conn_id, hello.resume_from, outbox).await {
            Ok((addr, _)) => *session_addr = Some(addr),
            Err(CaptureError::Stopped | CaptureError::Draining) => {
                return End::error(CaptureError::Draining.to_error_msg(), "unavailable")
            }
            // The session has queued its answer (error + close) on the outbox.
            Err(_) => {}
        }

        // 2. The stream.
        let mut pending: Option<Pending> = None;
        let mut closing_since: Option<Instant> = if session_addr.is_none() { Some(Instant::now()) } else { None };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval(Duration::from_secs(self.state.config.socket_recheck_secs));
        recheck.tick().await;
        // Frames since the last session re-check: a phone streaming keeps its session from
        // idling, as requests would.
        let mut streamed = false;
        loop {
            let reading = pending.is_none() && closing_since.is_none();
            tokio::select! {
                out = inbox.recv() => match out {
                    Some(Outbound::Msg(m)) => {
                        if !self.send(&m).await {
                            return End::close(close::GOING_AWAY, "socket closed");
                        }
                    }
                    Some(Outbound::Close(code)) => return End::close(code, "closed by the session"),
                    None => {
                        return End::error(ErrorMsg::new(Code::Unavailable, "the stream fell behind; resume"), "outbox closed")
                    }
                },
                res = async { pending.as_mut().expect("guarded by the branch condition").await }, if pending.is_some() => {
                    pending = None;
                    self.last_heard = Instant::now();
                    match res {
                        Ok(Ok(())) => {}
                        Err(_) | Ok(Err(CaptureError::Stopped | CaptureError::Draining)) => {
                            return End::error(CaptureError::Stopped.to_error_msg(), "unavailable");
                        }
                        // The session has queued the error and the close: drain the outbox.
                        Ok(Err(_)) => closing_since = Some(Instant::now()),
                    }
                }
                m = self.wire.recv(), if reading => {
                    let msg = match self.read(m) {
                        Err(end) => return end,
                        Ok(Incoming::Closed) => return End::close(close::NORMAL, "closed by the client"),
                        Ok(Incoming::Control) => continue,
                        Ok(Incoming::Msg(msg, raw)) => (msg, raw),
                    };
                    let Some(addr) = session_addr.as_ref() else { continue };
                    match msg {
                        (ClientMsg::Frame(frame), raw) => {
                            streamed = true;
                            pending = Some(Box::pin(addr.send(Frame { conn_id: self.conn_id, frame, raw })));
                        }
                        (ClientMsg::Finish(f), _) => {
                            pending = Some(Box::pin(addr.send(Finish { conn_id: self.conn_id, last: f.last_seq })));
                        }
                        (ClientMsg::Ping(h), _) => {
                            if !self.send(&ServerMsg::Pong(h)).await {
                                return End::close(close::GOING_AWAY, "socket closed");
                            }
                        }
                        (ClientMsg::Pong(_), _) => {}
                        (ClientMsg::Hello(_), _) => {
                            return End::protocol(Code::MalformedMessage, "hello was already received")
                        }
                    }
                }
                _ = tick.tick() => {
                    if closing_since.is_some_and(|t| t.elapsed() > CLOSE_GRACE) {
                        return End::close(close::POLICY, "closed");
                    }
                    // A pending reply means the session is pushing back: the phone is alive
                    // as far as this side can tell.
                    if pending.is_some() {
                        self.last_heard = Instant::now();
                    }
                    if self.last_heard.elapsed() > CLIENT_TIMEOUT {
                        return End::close(close::GOING_AWAY, "heartbeat timeout");
                    }
                    if session_addr.is_some() {
                        if let Standing::Lost = scans::standing(&self.state.cluster, self.scan_id).await {
                            return End::superseded();
                        }
                    }
                    if self.last_sent.elapsed() >= HEARTBEAT {
                        self.ping_n += 1;
                        let n = self.ping_n;
                        if !self.send(&ServerMsg::Ping(Heartbeat { n })).await {
                            return End::close(close::GOING_AWAY, "socket closed");
                        }
                    }
                }
                _ = recheck.tick() => {
                    let active = std::mem::take(&mut streamed);
                    if let Err(e) = crate::auth::session_principal(&self.state, self.who.session_id, active).await {
                        if matches!(e.code, Code::TokenRevoked | Code::TokenExpired | Code::Unauthenticated) {
                            return End::protocol(e.code, "the session has ended");
                        }
                    }
                }
                _ = shutdown.changed() => return End::close(close::GOING_AWAY, "server going away"),
                _ = revoked.changed() => return End::protocol(Code::TokenRevoked, "the session has ended"),
            }
        }
    }
}

/// What one read from the socket gave.
enum Incoming {
    Msg(ClientMsg, bytes::Bytes),
    Control,
    Closed,
}

/// A websocket-level failure: oversize (a frame's header, or a fragmented message's sum)
/// is `frame_too_large` with close 1009; anything else breaks the protocol.
fn protocol_error(e: &ProtocolError) -> WireIn {
    let oversize = match e {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => io.to_string().contains("maximum continuation size"),
        _ => false,
    };
    if oversize {
        WireIn::Broken(
            Code::FrameTooLarge,
            format!("a message exceeds the limit of {} bytes", limits::MAX_FRAME_MESSAGE_BYTES),
        )
    } else {
        WireIn::Broken(Code::MalformedMessage, "websocket protocol error".into())
    }
}

// ---------------------------------------------------------------------------------------
// the registry and its metrics
// ---------------------------------------------------------------------------------------

/// The capture tunables this node runs with.
pub fn capture_config(config: &Config) -> CaptureConfig {
    CaptureConfig {
        flush_window: Duration::from_millis(config.scan_flush_window_ms),
        live_fusion: config.scan_live_fusion,
        live_fusion_max_scans: match config.scan_live_fusion_max_scans {
            0 => 4 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        },
        ..CaptureConfig::default()
    }
}

/// Whether a registry also takes over scans whose node stopped while processing them: a
/// serving node does; a command that only works on the data (`create-admin`) must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    Run,
    Off,
}

/// Starts the node's capture registry over the real stores, its sessions spread over one
/// arbiter per core, publishing its running sessions through `live`.
pub fn start_registry(
    config: &Config,
    stores: &Stores,
    clock: &Clock,
    metrics: &Metrics,
    live: LiveSessions,
    recovery: Recovery,
) -> Addr<CaptureRegistry> {
    let events = crate::dashboard::ScanEvents::new(stores.redis.clone(), stores.pg.clone(), clock.clone());
    let index = Arc::new(PgScanIndex::new(stores.pg.clone(), clock.clone()).with_events(events.clone()));
    let quality = Arc::new(MongoQualitySink::new(stores.mongo.clone()));
    let stale = Duration::from_secs(config.scan_processing_stale_secs);
    let recon = crate::store::reconstruction::reconstructor(
        stores,
        clock,
        index.clone(),
        quality.clone(),
        ReconstructionPool::new(0, config.fusion_nice),
        Duration::from_millis(config.scan_finish_defer_max_ms),
        stale,
    );
    if recovery == Recovery::Run {
        recon.spawn_recovery(stale, CaptureConfig::default().quality_retry);
    }
    let deps = CaptureDeps::new(Arc::new(BlobFrameStore::new(stores.blobs.clone())), index, quality)
        .with_metrics(Arc::new(CaptureMetrics::new(metrics)))
        .with_observer(Arc::new(events))
        .with_reconstructor(recon)
        .with_config(capture_config(config));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let arbiters = (0..cores).map(|_| actix::Arbiter::new().handle()).collect();
    CaptureRegistry::new(deps).with_arbiters(arbiters).with_live(live).start()
}

/// Capture metrics in Prometheus: node-wide totals of the per-session figures the actors
/// report (never labelled by scan: unbounded cardinality).
pub struct CaptureMetrics {
    sessions: IntGauge,
    durable_frames: IntGauge,
    durable_bytes: IntGauge,
    quality_queue: IntGauge,
    slowed: IntGauge,
    durable_total: IntCounter,
    durable_lag: Histogram,
    retries: IntCounterVec,
    quality_dropped: IntCounter,
    per_scan: Mutex<HashMap<ScanId, PerScan>>,
}

#[derive(Default)]
struct PerScan {
    frames: usize,
    bytes: usize,
    quality: usize,
    slowed: bool,
}

impl CaptureMetrics {
    /// Registers the capture metrics with the node's registry; the queue depths go into
    /// the shared `coherency_queue_depth` gauge.
    pub fn new(metrics: &Metrics) -> Self {
        let q = |name: &str| metrics.queue_depth.with_label_values(&[name]);
        let me = Self {
            sessions: IntGauge::new("capture_sessions", "Capture sessions running on this node")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            durable_frames: q("capture_durable_frames"),
            durable_bytes: q("capture_durable_bytes"),
            quality_queue: q("capture_quality_records"),
            slowed: IntGauge::new("capture_sessions_slowed", "Capture sessions whose phone is told to slow down")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            durable_total: IntCounter::new("capture_frames_durable_total", "Frames made durable (blob + index)")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            durable_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "capture_durable_lag_seconds",
                    "Frame receipt to durable commit (worst frame of each chunk): the writer lag",
                )
                .buckets(vec![0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )
            .unwrap_or_else(|_| unreachable!("static metric definition")),
            retries: IntCounterVec::new(
                Opts::new("capture_store_retries_total", "Transient store failures retried by the capture writers"),
                &["store"],
            )
            .unwrap_or_else(|_| unreachable!("static metric definition")),
            quality_dropped: IntCounter::new(
                "capture_quality_dropped_total",
                "Quality records dropped (queue full or retries exhausted); rebuilt from raw frames",
            )
            .unwrap_or_else(|_| unreachable!("static metric definition")),
            per_scan: Mutex::new(HashMap::new()),
        };
        for c in [
            Box::new(me.sessions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(me.slowed.clone()),
            Box::new(me.durable_total.clone()),
            Box::new(me.durable_lag.clone()),
            Box::new(me.retries.clone()),
            Box::new(me.quality_dropped.clone()),
        ] {
            let _ = metrics.registry.register(c);
        }
        for store in [StoreKind::Blob, StoreKind::Index, StoreKind::Quality] {
            me.retries.with_label_values(&[store.as_str()]);
        }
        me
    }

    fn update(&self, scan_id: ScanId, f: impl FnOnce(&mut PerScan)) {
        let Ok(mut map) = self.per_scan.lock() else { return };
        let entry = map.entry(scan_id).or_default();
        f(entry);
        if entry.frames == 0 && entry.bytes == 0 && entry.quality == 0 && !entry.slowed {
            map.remove(&scan_id);
        }
        let (mut frames, mut bytes, mut quality, mut slowed) = (0usize, 0usize, 0usize, 0i64);
        for s in map.values() {
            frames += s.frames;
            bytes += s.bytes;
            quality += s.quality;
            slowed += i64::from(s.slowed);
        }
        self.durable_frames.set(frames as i64);
        self.durable_bytes.set(bytes as i64);
        self.quality_queue.set(quality as i64);
        self.slowed.set(slowed);
    }
}

impl SessionMetrics for CaptureMetrics {
    fn sessions(&self, delta: i64) {
        self.sessions.add(delta);
    }

    fn durable_backlog(&self, scan_id: ScanId, frames: usize, bytes: usize) {
        self.update(scan_id, |s| {
            s.frames = frames;
            s.bytes = bytes;
            if frames == 0 && bytes == 0 {
                // A session that stopped reports an empty backlog; it is no longer slowed.
                s.slowed = false;
            }
        });
    }

    fn quality_queue(&self, scan_id: ScanId, records: usize) {
        self.update(scan_id, |s| s.quality = records);
    }

    fn durable(&self, frames: u64, lag: Duration) {
        self.durable_total.inc_by(frames);
        self.durable_lag.observe(lag.as_secs_f64());
    }

    fn store_retry(&self, store: StoreKind) {
        self.retries.with_label_values(&[store.as_str()]).inc();
    }

    fn flow(&self, scan_id: ScanId, slowed: bool) {
        self.update(scan_id, |s| s.slowed = slowed);
    }

    fn quality_dropped(&self, _scan_id: ScanId, records: u64) {
        self.quality_dropped.inc_by(records);
    }
}
