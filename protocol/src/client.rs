//! A Rust scan stream client with resume built in, used by the server's tests and by
//! `loadtest`. It speaks over the websocket, or (feature `rtc`) over a WebRTC data channel
//! (`crate::client_rtc`), chosen by [`ClientConfig::transport`]; everything above the
//! transport — seqs, window, acks, resume — is the same code.
//!
//! [`ScanStreamClient`] is a handle; a background task owns the socket. The handle assigns
//! sequence numbers, holds at most `window` unacked frames (waiting while the server says
//! `slow`), and the task keeps every unacked frame so that, when the connection drops, it
//! reconnects with backoff, says `hello` with the last ack, and re-sends what the server
//! does not have. Reconnection is bounded in attempts and in time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{Code, ErrorCode};
use crate::ids::ScanId;
use crate::limits;
use crate::scan::{
    self, ClientMsg, DecodeError, DepthFrame, ErrorMsg, Finish, Finished, Heartbeat, Hello, Progress, ServerMsg,
    Welcome, PROTOCOL_VERSION,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What carries the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// `GET /v1/scans/{id}/stream`, one binary websocket message per v1 message.
    #[default]
    WebSocket,
    /// A WebRTC data channel signalled over `GET /v1/scans/{id}/rtc` (needs the `rtc` feature).
    DataChannel,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ws" | "websocket" => Ok(Transport::WebSocket),
            "datachannel" | "dc" => Ok(Transport::DataChannel),
            other => Err(format!("unknown transport {other:?}: ws or datachannel")),
        }
    }
}

/// How to reach and talk to the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server base URL: `ws://host:port` (or `http://…`, which is turned into `ws://…`).
    pub base_url: String,
    /// Bearer token sent as `Authorization: Bearer …` on every (re)connection.
    pub token: String,
    /// The scan to stream to.
    pub scan_id: ScanId,
    /// `Origin` header to send, if any (browsers always send one; native apps need not).
    pub origin: Option<String>,
    /// `hello.agent`.
    pub agent: Option<String>,
    /// `hello.resume` on the first connection (an app restarting an interrupted scan).
    pub resume_from: Option<u64>,
    /// Most unacked frames this client holds; the effective window is the smaller of this
    /// and the server's `welcome.window`.
    pub window: u32,
    /// What carries the stream.
    pub transport: Transport,
    /// Data channel only: gather loopback candidates only (tests and single-machine runs).
    pub rtc_loopback_only: bool,
    /// Limit for one TCP + websocket handshake (+ data channel setup) + `hello`/`welcome` exchange.
    /// The upgrade itself may take up to 10 s while the scan moves from a server that died
    /// (`docs/protocol.md` §2.6).
    pub connect_timeout: Duration,
    /// Consecutive failed reconnection attempts before giving up.
    pub max_reconnect_attempts: u32,
    /// Longest a single outage may last before giving up.
    pub reconnect_deadline: Duration,
    /// First reconnection backoff; doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest reconnection backoff.
    pub max_backoff: Duration,
    /// Send a `ping` after this long without sending anything.
    pub heartbeat_interval: Duration,
    /// Treat the connection as dead after this long without receiving anything.
    pub heartbeat_timeout: Duration,
    /// Longest [`ScanStreamClient::send_frame`] waits for window space.
    pub send_timeout: Duration,
    /// Longest [`ScanStreamClient::finish`] waits for `finished`.
    pub finish_timeout: Duration,
}

impl ClientConfig {
    /// Defaults from [`crate::limits`] for everything but the target.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>, scan_id: ScanId) -> Self {
        Self {
            base_url: base_url.into(),
            token: token.into(),
            scan_id,
            origin: None,
            agent: Some(concat!("coherency-protocol/", env!("CARGO_PKG_VERSION")).to_owned()),
            resume_from: None,
            transport: Transport::WebSocket,
            rtc_loopback_only: false,
            window: limits::DEFAULT_WINDOW,
            connect_timeout: Duration::from_secs(15),
            max_reconnect_attempts: 20,
            reconnect_deadline: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            heartbeat_interval: limits::HEARTBEAT_INTERVAL,
            heartbeat_timeout: limits::HEARTBEAT_TIMEOUT,
            send_timeout: Duration::from_secs(60),
            finish_timeout: Duration::from_secs(60),
        }
    }

    /// The full websocket URL of the scan's stream.
    pub fn stream_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            base.to_owned()
        };
        format!("{base}{}", scan::stream_path(self.scan_id))
    }
}

/// Why the client stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection or websocket handshake failed.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The server refused the websocket upgrade with an HTTP status.
    #[error("upgrade refused with HTTP {status}: {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The response body (the JSON error body, normally).
        body: String,
    },
    /// The server sent a fatal `error`.
    #[error("server error {}: {}", .0.code, .0.message)]
    Server(ErrorMsg),
    /// The server closed the socket with a code that forbids resuming.
    #[error("closed by the server with code {code}: {reason}")]
    Closed {
        /// The websocket close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The connection could not be re-established in time.
    #[error("gave up reconnecting after {attempts} attempts: {last_error}")]
    ReconnectsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last_error: String,
    },
    /// A wait exceeded its configured limit.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server broke the protocol.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The scan's stream had already finished; this is its result.
    #[error("the scan's stream has already finished ({} frames)", .0.frames)]
    AlreadyFinished(Finished),
    /// The client's background task has stopped.
    #[error("the stream task has stopped")]
    Stopped,
}

impl ErrorCode for ClientError {
    fn code(&self) -> Code {
        match self {
            ClientError::Server(e) => e.code().unwrap_or(Code::Internal),
            ClientError::Rejected { status: 401, .. } => Code::Unauthenticated,
            ClientError::Rejected { status: 403, .. } => Code::Forbidden,
            ClientError::Closed { code, .. } if *code == scan::close::SUPERSEDED => Code::Superseded,
            ClientError::Protocol(_) => Code::MalformedMessage,
            _ => Code::Unavailable,
        }
    }
}

/// Something the stream reports besides acks.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A `progress` from the server.
    Progress(Progress),
    /// The durable ack advanced to this seq.
    Acked(u64),
    /// The server asked to slow down.
    Slow,
    /// The server allowed frames again.
    Resume,
    /// The connection dropped; a reconnection attempt is starting.
    Reconnecting {
        /// 1 for the first attempt of this outage.
        attempt: u32,
        /// Why the previous connection ended.
        reason: String,
    },
    /// A new connection was welcomed.
    Reconnected(Welcome),
}

#[derive(Debug, Clone, Default)]
struct Status {
    acked: u64,
    window: u32,
    slowed: bool,
    finished: Option<Finished>,
    failed: Option<ClientError>,
}

#[derive(Default)]
struct Shared {
    reconnects: AtomicU32,
    latencies: Mutex<Vec<Duration>>,
}

enum Cmd {
    Frame { seq: u64, bytes: Bytes },
    Finish { last_seq: u64 },
    Cut,
}

/// A scan stream in progress. See the module docs. Dropping it closes the socket with 1001
/// (the scan stays resumable).
pub struct ScanStreamClient {
    scan_id: ScanId,
    cmd: mpsc::UnboundedSender<Cmd>,
    status: watch::Receiver<Status>,
    events: Option<mpsc::Receiver<ClientEvent>>,
    shared: Arc<Shared>,
    next_seq: u64,
    send_timeout: Duration,
    finish_timeout: Duration,
    task: Option<JoinHandle<()>>,
}

impl ScanStreamClient {
    /// Connects to `{base_url}/v1/scans/{scan_id}/stream` with default settings and waits
    /// for `welcome`.
    pub async fn connect(base_url: &str, token: &str, scan_id: ScanId) -> Result<Self, ClientError> {
        Self::connect_with(ClientConfig::new(base_url, token, scan_id)).await
    }

    /// Connects with explicit settings and waits for `welcome`.
    pub async fn connect_with(config: ClientConfig) -> Result<Self, ClientError> {
        let (socket, welcome) = match open(&config, config.resume_from).await? {
            Opened::Welcome(socket, welcome) => (*socket, welcome),
            Opened::Finished(f) => return Err(ClientError::AlreadyFinished(f)),
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel(1024);
        let window = welcome.window.min(config.window).max(1);
        let (status_tx, status_rx) = watch::channel(Status { acked: welcome.acked, window, ..Status::default() });
        let shared = Arc::new(Shared::default());
        let next_seq = welcome.next;
        let driver = Driver {
            scan_id: config.scan_id,
            config,
            cmd: cmd_rx,
            status: status_tx,
            events: events_tx,
            shared: shared.clone(),
            pending: VecDeque::new(),
            acked: welcome.acked,
            highest: welcome.next - 1,
            slowed: false,
            finish: None,
            finish_sent: false,
            ping_n: 0,
        };
        Ok(Self {
            scan_id: driver.scan_id,
            send_timeout: driver.config.send_timeout,
            finish_timeout: driver.config.finish_timeout,
            cmd: cmd_tx,
            status: status_rx,
            events: Some(events_rx),
            shared,
            next_seq,
            task: Some(tokio::spawn(driver.run(socket))),
        })
    }

    /// The scan this client streams to.
    pub fn scan_id(&self) -> ScanId {
        self.scan_id
    }

    /// The seq the next [`ScanStreamClient::send_frame`] will assign.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest seq the server has acknowledged as durable.
    pub fn last_ack(&self) -> u64 {
        self.status.borrow().acked
    }

    /// Connections re-established after a drop so far.
    pub fn reconnects(&self) -> u32 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the server currently has the client slowed down.
    pub fn is_slowed(&self) -> bool {
        self.status.borrow().slowed
    }

    /// The event stream (progress, acks, flow control, reconnections). Can be taken once.
    /// Events are dropped, not queued without bound, when the receiver lags by 1024.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<ClientEvent>> {
        self.events.take()
    }

    /// Frame→ack latencies (from the first transmission of each frame to the ack that
    /// covered it) recorded since the last call.
    pub fn take_ack_latencies(&self) -> Vec<Duration> {
        match self.shared.latencies.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Sends a frame, assigning it the next seq (the frame's own `seq` is overwritten), and
    /// returns that seq. Waits while the window is full or the server has said `slow`.
    pub async fn send_frame(&mut self, mut frame: DepthFrame) -> Result<u64, ClientError> {
        let deadline = Instant::now() + self.send_timeout;
        loop {
            {
                let st = self.status.borrow_and_update();
                if let Some(err) = &st.failed {
                    return Err(err.clone());
                }
                if st.finished.is_some() {
                    return Err(ClientError::Protocol("the stream has finished".into()));
                }
                let in_flight = self.next_seq.saturating_sub(st.acked + 1);
                if !st.slowed && in_flight < u64::from(st.window) {
                    break;
                }
            }
            match tokio::time::timeout_at(deadline, self.status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(self.stopped_error()),
                Err(_) => return Err(ClientError::Timeout("window space")),
            }
        }
        let seq = self.next_seq;
        frame.seq = seq;
        let bytes = Bytes::from(scan::encode_client(&ClientMsg::Frame(Box::new(frame))));
        self.cmd.send(Cmd::Frame { seq, bytes }).map_err(|_| self.stopped_error())?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Sends `finish` once every frame is sent and waits for `finished` (all frames
    /// durable), resuming across drops as needed.
    pub async fn finish(mut self) -> Result<Finished, ClientError> {
        let last_seq = self.next_seq - 1;
        self.cmd.send(Cmd::Finish { last_seq }).map_err(|_| self.stopped_error())?;
        let waited = tokio::time::timeout(self.finish_timeout, async {
            loop {
                {
                    let st = self.status.borrow_and_update();
                    if let Some(f) = &st.finished {
                        return Ok(f.clone());
                    }
                    if let Some(err) = &st.failed {
                        return Err(err.clone());
                    }
                }
                if self.status.changed().await.is_err() {
                    return Err(self.stopped_error());
                }
            }
        })
        .await;
        let result = waited.unwrap_or(Err(ClientError::Timeout("finished")));
        if let Some(task) = self.task.take() {
            if result.is_ok() {
                // The task is closing the socket politely; give it a moment.
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            } else {
                task.abort();
            }
        }
        result
    }

    /// Test hook: drops the current connection abruptly (no close frame), as a phone losing
    /// signal would. The client then reconnects and resumes by itself.
    pub fn cut_connection(&self) {
        let _ = self.cmd.send(Cmd::Cut);
    }

    fn stopped_error(&self) -> ClientError {
        self.status.borrow().failed.clone().unwrap_or(ClientError::Stopped)
    }
}

enum Opened {
    Welcome(Box<Conn>, Welcome),
    Finished(Finished),
}

/// Whether a failure to (re)connect is worth retrying.
fn retryable(err: &ClientError) -> bool {
    match err {
        ClientError::Connect(_) | ClientError::Timeout(_) => true,
        ClientError::Rejected { status, .. } => matches!(status, 429 | 500..=599),
        ClientError::Server(e) => matches!(e.code(), Some(Code::Unavailable | Code::Internal | Code::RateLimited)),
        ClientError::Closed { code, .. } => scan::close_is_retryable(*code),
        _ => false,
    }
}

/// One connection of the stream, whatever carries it.
pub(crate) enum Conn {
    Ws(Box<Socket>),
    #[cfg(feature = "rtc")]
    Dc(Box<crate::client_rtc::DataChannelConn>),
}

/// What one read from a connection gave.
enum ConnIn {
    Message(Bytes),
    Closed(u16, String),
    Other,
}

impl Conn {
    /// Queues one v1 message (data channel: waits while its buffer is above the high mark).
    async fn feed(&mut self, msg: Bytes) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => ws.feed(Message::Binary(msg)).await.map_err(|e| e.to_string()),
            #[cfg(feature = "rtc")]
            Conn::Dc(dc) => dc.send_message(&msg).await,
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => ws.flush().await.map_err(|e| e.to_string()),
            #[cfg(feature = "rtc")]
            Conn::Dc(_) => Ok(()),
        }
    }

    async fn send(&mut self, msg: Bytes) -> Result<(), String> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// The next message; `None` when the connection is gone. Cancel-safe.
    async fn next(&mut self) -> Option<Result<ConnIn, String>> {
        match self {
            Conn::Ws(ws) => ws.next().await.map(|m| match m {
                Err(e) => Err(e.to_string()),
                Ok(Message::Binary(b)) => Ok(ConnIn::Message(b)),
                Ok(Message::Close(frame)) => Ok(frame
                    .map(|f| ConnIn::Closed(u16::from(f.code), f.reason.to_string()))
                    .unwrap_or(ConnIn::Closed(1005, String::new()))),
                // Websocket pings are answered by tungstenite itself.
                Ok(_) => Ok(ConnIn::Other),
            }),
            #[cfg(feature = "rtc")]
            Conn::Dc(dc) => dc.recv().await.map(|m| match m {
                crate::client_rtc::DcIncoming::Message(b) => Ok(ConnIn::Message(b)),
                crate::client_rtc::DcIncoming::Closed(code, reason) => Ok(ConnIn::Closed(code, reason)),
                crate::client_rtc::DcIncoming::Broken(e) => Err(e),
            }),
        }
    }

    /// Closes politely with `code` (and, after `finished`, waits briefly for the server's end).
    async fn close(&mut self, code: Option<u16>, reason: &str, drain: bool) {
        match self {
            Conn::Ws(ws) => {
                let frame = code
                    .map(|c| tungstenite::protocol::CloseFrame { code: c.into(), reason: reason.to_owned().into() });
                let _ = WebSocketStream::close(ws.as_mut(), frame).await;
                if drain {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
            #[cfg(feature = "rtc")]
            Conn::Dc(dc) => dc.close(code.unwrap_or(scan::close::NORMAL), reason).await,
        }
    }
}

/// A websocket upgrade request for `url` with the config's bearer token and `Origin`.
pub(crate) fn authorized_request(
    url: String,
    config: &ClientConfig,
) -> Result<tungstenite::handshake::client::Request, ClientError> {
    let mut request = url.into_client_request().map_err(|e| ClientError::Connect(e.to_string()))?;
    let headers = request.headers_mut();
    let auth = HeaderValue::from_str(&format!("Bearer {}", config.token))
        .map_err(|_| ClientError::Connect("token is not a valid header value".into()))?;
    headers.insert("authorization", auth);
    if let Some(origin) = &config.origin {
        let origin = HeaderValue::from_str(origin)
            .map_err(|_| ClientError::Connect("origin is not a valid header value".into()))?;
        headers.insert("origin", origin);
    }
    Ok(request)
}

/// A failed upgrade: the server's refusal (status and body), or why nothing answered.
pub(crate) fn handshake_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(resp) => ClientError::Rejected {
            status: resp.status().as_u16(),
            body: resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        },
        other => ClientError::Connect(other.to_string()),
    }
}

/// Opens the transport the config names (no protocol message yet).
async fn connect(config: &ClientConfig) -> Result<Conn, ClientError> {
    match config.transport {
        Transport::WebSocket => {
            let request = authorized_request(config.stream_url(), config)?;
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(limits::MAX_SERVER_MESSAGE_BYTES))
                .max_frame_size(Some(limits::MAX_SERVER_MESSAGE_BYTES));
            let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true)
                .await
                .map_err(handshake_error)?;
            Ok(Conn::Ws(Box::new(socket)))
        }
        #[cfg(feature = "rtc")]
        Transport::DataChannel => Ok(Conn::Dc(Box::new(crate::client_rtc::DataChannelConn::open(config).await?))),
        #[cfg(not(feature = "rtc"))]
        Transport::DataChannel => Err(ClientError::Connect("built without the rtc feature".into())),
    }
}

/// One connection: transport, `hello`, and the first answer.
async fn open(config: &ClientConfig, resume_from: Option<u64>) -> Result<Opened, ClientError> {
    tokio::time::timeout(config.connect_timeout, async {
        let mut socket = connect(config).await?;
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            scan_id: config.scan_id,
            resume_from,
            agent: config.agent.clone(),
        });
        socket.send(scan::encode_client(&hello).into()).await.map_err(ClientError::Connect)?;
        loop {
            match socket.next().await {
                None => return Err(ClientError::Connect("closed before welcome".into())),
                Some(Err(e)) => return Err(ClientError::Connect(e)),
                Some(Ok(ConnIn::Message(b))) => match scan::decode_server(&b) {
                    Ok(ServerMsg::Welcome(w)) => {
                        if w.scan_id != config.scan_id || w.next <= w.acked {
                            return Err(ClientError::Protocol(format!("bad welcome {w:?}")));
                        }
                        return Ok(Opened::Welcome(Box::new(socket), w));
                    }
                    Ok(ServerMsg::Finished(f)) => {
                        socket.close(None, "", false).await;
                        return Ok(Opened::Finished(f));
                    }
                    Ok(ServerMsg::Error(e)) => return Err(ClientError::Server(e)),
                    Ok(ServerMsg::Ping(p)) => {
                        let msg = scan::encode_client(&ClientMsg::Pong(p));
                        socket.send(msg.into()).await.map_err(ClientError::Connect)?;
                    }
                    Ok(_) | Err(DecodeError::UnknownType(_)) => {}
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                },
                Some(Ok(ConnIn::Closed(code, reason))) => return Err(ClientError::Closed { code, reason }),
                Some(Ok(ConnIn::Other)) => {}
            }
        }
    })
    .await
    .unwrap_or(Err(ClientError::Timeout("welcome")))
}

struct PendingFrame {
    seq: u64,
    bytes: Bytes,
    first_sent: Option<Instant>,
    sent_on_this_connection: bool,
}

/// Why a connection ended.
enum Ended {
    Finished(Finished),
    Fatal(ClientError),
    Dropped(String),
    HandleGone,
}

struct Driver {
    config: ClientConfig,
    scan_id: ScanId,
    cmd: mpsc::UnboundedReceiver<Cmd>,
    status: watch::Sender<Status>,
    events: mpsc::Sender<ClientEvent>,
    shared: Arc<Shared>,
    /// Frames not yet acked, in seq order.
    pending: VecDeque<PendingFrame>,
    acked: u64,
    /// The highest seq known to exist: sent by this client, or reported by a `welcome`.
    highest: u64,
    slowed: bool,
    finish: Option<u64>,
    finish_sent: bool,
    ping_n: u64,
}

impl Driver {
    async fn run(mut self, first: Conn) {
        let mut socket = first;
        loop {
            let ended = self.pump(&mut socket).await;
            match ended {
                Ended::Finished(f) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None, "", true)).await;
                    self.status.send_modify(|s| {
                        s.acked = s.acked.max(f.last_seq);
                        s.finished = Some(f);
                    });
                    return;
                }
                Ended::Fatal(err) => {
                    socket.close(None, "", false).await;
                    self.fail(err);
                    return;
                }
                Ended::HandleGone => {
                    socket.close(Some(scan::close::GOING_AWAY), "client stopped", false).await;
                    return;
                }
                Ended::Dropped(reason) => {
                    drop(socket);
                    match self.reconnect(reason).await {
                        Ok(Some(next)) => socket = next,
                        Ok(None) => return,
                        Err(err) => {
                            self.fail(err);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn fail(&self, err: ClientError) {
        tracing::debug!(scan_id = %self.scan_id, error = %err, "scan stream failed");
        self.status.send_modify(|s| s.failed = Some(err));
    }

    fn event(&self, event: ClientEvent) {
        let _ = self.events.try_send(event);
    }

    /// Reconnects with backoff. `Ok(None)`: the scan turned out to be finished.
    async fn reconnect(&mut self, mut reason: String) -> Result<Option<Conn>, ClientError> {
        let started = Instant::now();
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > self.config.max_reconnect_attempts || started.elapsed() > self.config.reconnect_deadline {
                return Err(ClientError::ReconnectsExhausted { attempts: attempt - 1, last_error: reason });
            }
            tracing::debug!(scan_id = %self.scan_id, attempt, %reason, "reconnecting");
            self.event(ClientEvent::Reconnecting { attempt, reason: reason.clone() });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
            match open(&self.config, Some(self.acked)).await {
                Ok(Opened::Welcome(socket, welcome)) => {
                    self.apply_welcome(&welcome)?;
                    self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.event(ClientEvent::Reconnected(welcome));
                    return Ok(Some(*socket));
                }
                Ok(Opened::Finished(f)) => {
                    self.status.send_modify(|s| {
                        s.acked = s.acked.max(f.last_seq);
                        s.finished = Some(f);
                    });
                    return Ok(None);
                }
                Err(err) if retryable(&err) => reason = err.to_string(),
                Err(err) => return Err(err),
            }
        }
    }

    fn apply_welcome(&mut self, w: &Welcome) -> Result<(), ClientError> {
        if w.acked < self.acked {
            return Err(ClientError::Protocol(format!(
                "server acked {} before but now reports {}",
                self.acked, w.acked
            )));
        }
        if w.next > self.highest + 1 {
            return Err(ClientError::Protocol(format!(
                "server expects seq {} but the client has only sent up to {}",
                w.next, self.highest
            )));
        }
        self.ack(w.acked);
        self.slowed = false;
        self.finish_sent = false;
        for p in &mut self.pending {
            p.sent_on_this_connection = p.seq < w.next;
        }
        let window = w.window.min(self.config.window).max(1);
        self.status.send_modify(|s| {
            s.window = window;
            s.slowed = false;
        });
        Ok(())
    }

    fn ack(&mut self, up_to: u64) {
        if up_to <= self.acked {
            return;
        }
        let now = Instant::now();
        let mut latencies = Vec::new();
        while self.pending.front().is_some_and(|p| p.seq <= up_to) {
            if let Some(p) = self.pending.pop_front() {
                if let Some(t) = p.first_sent {
                    latencies.push(now - t);
                }
            }
        }
        if !latencies.is_empty() {
            if let Ok(mut l) = self.shared.latencies.lock() {
                l.extend(latencies);
            }
        }
        self.acked = up_to;
        self.status.send_modify(|s| s.acked = up_to);
        self.event(ClientEvent::Acked(up_to));
    }

    /// Sends every frame the server lacks on this connection (unless slowed), then
    /// `finish` if it was asked for and everything is out.
    async fn transmit(&mut self, socket: &mut Conn) -> Result<(), String> {
        if !self.slowed {
            let mut sent_any = false;
            for p in self.pending.iter_mut().filter(|p| !p.sent_on_this_connection) {
                socket.feed(p.bytes.clone()).await?;
                p.sent_on_this_connection = true;
                p.first_sent.get_or_insert_with(Instant::now);
                sent_any = true;
            }
            if sent_any {
                socket.flush().await?;
            }
        }
        let all_out = self.pending.iter().all(|p| p.sent_on_this_connection);
        if let (Some(last_seq), false, true) = (self.finish, self.finish_sent, all_out) {
            let msg = scan::encode_client(&ClientMsg::Finish(Finish { last_seq }));
            socket.send(msg.into()).await?;
            self.finish_sent = true;
        }
        Ok(())
    }

    async fn pump(&mut self, socket: &mut Conn) -> Ended {
        let mut last_rx = Instant::now();
        let mut last_tx = Instant::now();
        let tick_every = (self.config.heartbeat_interval / 4).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Err(e) = self.transmit(socket).await {
            return Ended::Dropped(e);
        }
        loop {
            tokio::select! {
                cmd = self.cmd.recv() => match cmd {
                    None => return Ended::HandleGone,
                    Some(Cmd::Frame { seq, bytes }) => {
                        self.highest = self.highest.max(seq);
                        self.pending.push_back(PendingFrame {
                            seq,
                            bytes,
                            first_sent: None,
                            sent_on_this_connection: false,
                        });
                        if let Err(e) = self.transmit(socket).await {
                            return Ended::Dropped(e);
                        }
                        last_tx = Instant::now();
                    }
                    Some(Cmd::Finish { last_seq }) => {
                        self.finish = Some(last_seq);
                        if let Err(e) = self.transmit(socket).await {
                            return Ended::Dropped(e);
                        }
                        last_tx = Instant::now();
                    }
                    Some(Cmd::Cut) => return Ended::Dropped("connection cut by the client".into()),
                },
                msg = socket.next() => {
                    last_rx = Instant::now();
                    match msg {
                        None => return Ended::Dropped("connection closed".into()),
                        Some(Err(e)) => return Ended::Dropped(e),
                        Some(Ok(ConnIn::Message(b))) => {
                            match self.on_server_message(socket, &b).await {
                                Ok(Some(ended)) => return ended,
                                Ok(None) => {}
                                Err(e) => return Ended::Dropped(e),
                            }
                        }
                        Some(Ok(ConnIn::Closed(code, reason))) => {
                            if scan::close_is_retryable(code) || code == scan::close::NORMAL {
                                return Ended::Dropped(format!("closed with {code}: {reason}"));
                            }
                            return Ended::Fatal(ClientError::Closed { code, reason });
                        }
                        Some(Ok(ConnIn::Other)) => {}
                    }
                }
                _ = tick.tick() => {
                    if last_rx.elapsed() > self.config.heartbeat_timeout {
                        return Ended::Dropped("heartbeat timeout".into());
                    }
                    if last_tx.elapsed() >= self.config.heartbeat_interval {
                        self.ping_n += 1;
                        let ping = scan::encode_client(&ClientMsg::Ping(Heartbeat { n: self.ping_n }));
                        if let Err(e) = socket.send(ping.into()).await {
                            return Ended::Dropped(e);
                        }
                        last_tx = Instant::now();
                    }
                }
            }
        }
    }

    async fn on_server_message(&mut self, socket: &mut Conn, bytes: &[u8]) -> Result<Option<Ended>, String> {
        let msg = match scan::decode_server(bytes) {
            Ok(msg) => msg,
            Err(DecodeError::UnknownType(_)) => return Ok(None),
            Err(e) => return Ok(Some(Ended::Fatal(ClientError::Protocol(e.to_string())))),
        };
        match msg {
            ServerMsg::Ack(a) => {
                if a.up_to > self.highest {
                    return Ok(Some(Ended::Fatal(ClientError::Protocol(format!(
                        "ack {} beyond the highest frame sent ({})",
                        a.up_to, self.highest
                    )))));
                }
                self.ack(a.up_to);
            }
            ServerMsg::Progress(p) => self.event(ClientEvent::Progress(p)),
            ServerMsg::Slow => {
                self.slowed = true;
                self.status.send_modify(|s| s.slowed = true);
                self.event(ClientEvent::Slow);
            }
            ServerMsg::Resume => {
                self.slowed = false;
                self.status.send_modify(|s| s.slowed = false);
                self.event(ClientEvent::Resume);
                self.transmit(socket).await?;
            }
            ServerMsg::Finished(f) => return Ok(Some(Ended::Finished(f))),
            ServerMsg::Error(e) => {
                let err = ClientError::Server(e);
                return Ok(Some(if retryable(&err) { Ended::Dropped(err.to_string()) } else { Ended::Fatal(err) }));
            }
            ServerMsg::Ping(p) => {
                let pong = scan::encode_client(&ClientMsg::Pong(p));
                socket.send(pong.into()).await?;
            }
            ServerMsg::Pong(_) | ServerMsg::Welcome(_) => {}
        }
        Ok(None)
    }
}
