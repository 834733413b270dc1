//! Scan capture: the [`CaptureRegistry`] (one per node), the [`CaptureSession`] actor (one
//! per scan) and the messages a socket pump exchanges with it. See [`messages`] for the
//! pump contract and [`writer`] for the durable and quality write paths.

pub mod activity;
mod config;
mod error;
pub mod messages;
mod registry;
mod session;
pub mod writer;

pub use config::CaptureConfig;
pub use error::CaptureError;
pub use messages::{
    Attach, AttachOutcome, ConnId, Detach, Finish, Frame, GetSnapshot, HandOver, HandOverReason, Outbound, Outbox,
    SessionPhase, SessionSnapshot, Shutdown,
};
pub use registry::{
    attach, remeasure, retissue, CaptureDeps, CaptureRegistry, Drain, GetOrStart, GetReconstructor, HandOverScan,
    HandOverScanFor, ListSessions, LiveSessions, SessionStopped, StopSession,
};
pub use session::CaptureSession;
