//! Errors a capture session returns to its pump. Each maps to a protocol [`Code`], so the
//! pump can answer any of them uniformly.

use actix::MailboxError;
use coherency_protocol::scan::{close_code, ErrorMsg};
use coherency_protocol::{Code, ErrorCode};

/// Why a capture message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// A frame skipped ahead, or `finish.last` is not the highest seq received.
    #[error("expected seq {expected}, got {got}")]
    SequenceGap {
        /// The seq the session expected (for `finish`: the highest received).
        expected: u64,
        /// The seq that arrived.
        got: u64,
    },
    /// Another connection took over the scan, or this connection is no longer attached.
    #[error("another connection is streaming this scan")]
    Superseded,
    /// The scan cannot take frames: failed, cancelled, or a frame after `finish`.
    #[error("the scan cannot take frames: {0}")]
    NotStreamable(&'static str),
    /// A store is unreachable and the retry budget ran out; resume later.
    #[error("storage unavailable")]
    Unavailable,
    /// A store refused for good; details are in the server log, not here.
    #[error("internal error")]
    Internal,
    /// The session (or the registry) has stopped; get the session again and re-attach.
    #[error("capture session stopped")]
    Stopped,
    /// The registry is draining and starts no new sessions.
    #[error("the node is draining")]
    Draining,
}

impl ErrorCode for CaptureError {
    fn code(&self) -> Code {
        match self {
            CaptureError::SequenceGap { .. } => Code::SequenceGap,
            CaptureError::Superseded => Code::Superseded,
            CaptureError::NotStreamable(_) => Code::ScanNotStreamable,
            CaptureError::Unavailable | CaptureError::Stopped | CaptureError::Draining => Code::Unavailable,
            CaptureError::Internal => Code::Internal,
        }
    }
}

impl CaptureError {
    /// The `error` message for the phone.
    pub fn to_error_msg(&self) -> ErrorMsg {
        ErrorMsg::new(self.code(), self.to_string())
    }

    /// The websocket close code that follows the error.
    pub fn close_code(&self) -> u16 {
        close_code(self.code())
    }
}

impl From<MailboxError> for CaptureError {
    fn from(_: MailboxError) -> Self {
        CaptureError::Stopped
    }
}
