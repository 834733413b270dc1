//! Messages between a socket pump and a capture session.
//!
//! The pump contract, in order:
//!
//! 1. decode `hello` (and check its version and scan id against the URL), then
//!    [`super::attach`] (or `GetOrStart` + [`Attach`]) with a fresh [`ConnId`] and the
//!    sending half of a bounded channel, the connection's *outbox*;
//! 2. forward every decoded `frame` as [`Frame`] and `finish` as [`Finish`], awaiting each
//!    reply before reading the next socket message — the reply to a frame is held back
//!    while the session is congested, which is how the pump stops reading the socket;
//!    answer `ping` itself;
//! 3. meanwhile, write every [`Outbound::Msg`] from the outbox to the socket in order, and on
//!    [`Outbound::Close`] close the socket with that code and exit; when the outbox yields
//!    `None` (the session dropped the connection, e.g. because the outbox was full), close
//!    with 1013;
//! 4. on exit, `do_send` [`Detach`].
//!
//! Everything the phone sees comes through the outbox, so it is ordered. An `Err` reply
//! tells the pump the connection is over: the session has already queued the `error` and
//! the close, except for [`CaptureError::Stopped`] and [`CaptureError::Draining`] (the
//! session is gone), which the pump answers itself with `error {unavailable}` and close
//! 1013. Frames from a connection that is no longer attached get
//! `Err(CaptureError::Superseded)` and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};

use actix::Message;
use bytes::Bytes;
use coherency_protocol::scan::{DepthFrame, Finished, ServerMsg, Welcome};
use tokio::sync::mpsc;

use super::error::CaptureError;
use crate::store::ScanState;

/// Identifies one socket connection to a session (unique per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// A new id, never handed out before by this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a session asks a pump to do with its socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Encode (`scan::encode_server`) and send this message.
    Msg(ServerMsg),
    /// Close the socket with this websocket close code, then exit the pump.
    Close(u16),
}

/// The sending half of a connection's outbox. Create it with
/// `tokio::sync::mpsc::channel(config.outbox_capacity)`.
pub type Outbox = mpsc::Sender<Outbound>;

/// Attaches a connection to the session after its `hello`. A second attach takes over: the
/// previous connection gets `error {superseded}` and close 4001.
#[derive(Debug, Message)]
#[rtype(result = "Result<AttachOutcome, CaptureError>")]
pub struct Attach {
    /// The connection.
    pub conn_id: ConnId,
    /// `hello.resume`: the highest ack the phone has seen (diagnostics only: the session's
    /// `welcome` is authoritative).
    pub resume_from: Option<u64>,
    /// Where the session sends this connection's messages.
    pub outbox: Outbox,
}

/// The session's answer to [`Attach`]; the same message is already queued on the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The stream continues: `welcome` was sent (followed by `slow` if the session is
    /// congested).
    Streaming(Welcome),
    /// The stream had already finished: `finished` and close 1000 were sent.
    Finished(Finished),
}

/// One decoded, validated `frame` message.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CaptureError>")]
pub struct Frame {
    /// The connection it arrived on.
    pub conn_id: ConnId,
    /// The frame as decoded by `scan::decode_client` (planes already checked).
    pub frame: Box<DepthFrame>,
    /// The frame's message bytes exactly as received: this is what is stored.
    pub raw: Bytes,
}

/// `finish {last}`: the phone has sent its last frame.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), CaptureError>")]
pub struct Finish {
    /// The connection.
    pub conn_id: ConnId,
    /// `finish.last`.
    pub last: u64,
}

/// The pump is gone (socket closed, heartbeat timeout, error). Always sent on exit.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Detach {
    /// The connection.
    pub conn_id: ConnId,
}

/// Asks a session for its current figures (status pages, tests).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "SessionSnapshot")]
pub struct GetSnapshot;

/// Ends a session now: its connection is closed with 1001 (the phone resumes, possibly on
/// another node) and frames that are not yet durable are dropped (the phone resends them).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Why a session hands its scan on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOverReason {
    /// The phone reconnected to another node, which asked for the scan: the connection
    /// here (if still attached) gets `error {superseded}` and close 4001, as in a takeover
    /// on one node.
    Takeover,
    /// The scan must leave this node (it is draining, or the scan's lease was lost or
    /// expired): the connection gets close 1001 and the phone resumes wherever it
    /// reconnects.
    Drain,
}

/// Ends a session gracefully so that another node can take the scan: the attached
/// connection is closed (see [`HandOverReason`]), no frame is taken any more, the frames
/// already received are made durable (within `CaptureConfig::handover_timeout`; what is
/// still not durable then is dropped and resent by the phone), then the session stops.
/// Answers the highest durable seq once it has stopped writing.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "u64")]
pub struct HandOver {
    /// Why.
    pub reason: HandOverReason,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionPhase {
    /// Not yet loaded from the index (no successful attach yet).
    Unloaded,
    /// Taking frames.
    Streaming,
    /// `finish` received; waiting for the last frames to become durable.
    Finishing {
        /// `finish.last`.
        last: u64,
    },
    /// The stream has finished.
    Finished,
    /// The scan cannot be streamed (failed or cancelled).
    Closed,
}

/// A session's current figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSnapshot {
    /// Lifecycle phase.
    pub phase: SessionPhase,
    /// The scan's status as last loaded or set.
    pub status: Option<ScanState>,
    /// Highest durable seq.
    pub durable_seq: u64,
    /// Highest received seq.
    pub received_seq: u64,
    /// Frames received but not durable.
    pub backlog_frames: usize,
    /// Bytes of those frames.
    pub backlog_bytes: usize,
    /// Whether the phone is told to slow down.
    pub slowed: bool,
    /// The attached connection.
    pub conn: Option<ConnId>,
    /// Quality records waiting for the sink.
    pub quality_queue: usize,
    /// Quality records dropped so far.
    pub quality_dropped: u64,
    /// Frames judged good enough to fuse.
    pub frames_fused: u64,
}
