//! The scan stream over a WebRTC data channel (`docs/protocol.md`, "WebRTC data channel
//! transport"): the fragment framing both ends use on the channel, the flow-control
//! thresholds, and the JSON messages of the scan's signalling socket
//! (`GET /v1/scans/{id}/rtc`).
//!
//! Why fragments: Chromium offers `max-message-size` 262144 but a webrtc-rs 0.17 answer
//! advertises none, so Chromium caps its sends at 65,536 bytes, and webrtc-rs 0.17's default
//! read loop fails on messages over 65,535 bytes. Every v1 message therefore travels as one
//! or more data-channel messages of at most [`MAX_DC_MESSAGE_BYTES`], each starting with a
//! one-byte fragment type:
//!
//! | first byte | name | rest |
//! |---|---|---|
//! | `0x01` | `START` | total length of the v1 message (u32, big-endian), then its first bytes |
//! | `0x02` | `CONT` | the next bytes of the message being assembled |
//! | `0x03` | `CLOSE` | close code (u16, big-endian), then a UTF-8 reason (at most 123 bytes) |
//!
//! A message is complete when the bytes received equal the declared total. The declared total
//! is checked against [`crate::limits::MAX_FRAME_MESSAGE_BYTES`] before anything is
//! allocated. This module depends on nothing but the standard library, so it is also what
//! the server uses.

use serde::{Deserialize, Serialize};

use crate::consult::{IceCandidate, IceServer};
use crate::error::Code;
use crate::ids::ScanId;
use crate::limits;

/// The label of the scan stream's data channel (reliable, ordered, not pre-negotiated).
pub const LABEL: &str = "scan";
/// Largest data-channel message either side sends or accepts, fragment header included:
/// one byte under 64 KiB, the largest size every peer of ours can both send and read.
pub const MAX_DC_MESSAGE_BYTES: usize = 65_535;
/// Fragment type: the first (or only) fragment of a message.
pub const START: u8 = 0x01;
/// Fragment type: a continuation of the message being assembled.
pub const CONT: u8 = 0x02;
/// Fragment type: the sender is closing the stream, with a close code (`docs/protocol.md` §10.2).
pub const CLOSE: u8 = 0x03;
/// Bytes of a `START` header (type + u32 total).
pub const START_HEADER_BYTES: usize = 5;
/// Longest reason in a `CLOSE` fragment, in bytes (as for a websocket close frame).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;
/// A sender stops writing new messages while its channel's `bufferedAmount` is above this.
pub const BUFFERED_HIGH: usize = 1024 * 1024;
/// … and starts again once it has fallen to this (`bufferedAmountLowThreshold`).
pub const BUFFERED_LOW: usize = 256 * 1024;
/// The server drops a connection whose own send buffer exceeds this (the phone does not read).
pub const SERVER_MAX_BUFFERED: usize = 4 * 1024 * 1024;
/// The path of a scan's signalling socket.
pub fn signal_path(scan_id: ScanId) -> String {
    format!("/v1/scans/{scan_id}/rtc")
}

/// Splits one v1 message into data-channel messages (each at most [`MAX_DC_MESSAGE_BYTES`]).
pub fn fragment(message: &[u8]) -> Vec<Vec<u8>> {
    let first = message.len().min(MAX_DC_MESSAGE_BYTES - START_HEADER_BYTES);
    let mut out = Vec::with_capacity(1 + (message.len() - first).div_ceil(MAX_DC_MESSAGE_BYTES - 1));
    let mut head = Vec::with_capacity(START_HEADER_BYTES + first);
    head.push(START);
    head.extend_from_slice(&(message.len() as u32).to_be_bytes());
    head.extend_from_slice(&message[..first]);
    out.push(head);
    for chunk in message[first..].chunks(MAX_DC_MESSAGE_BYTES - 1) {
        let mut c = Vec::with_capacity(1 + chunk.len());
        c.push(CONT);
        c.extend_from_slice(chunk);
        out.push(c);
    }
    out
}

/// A `CLOSE` fragment (the reason is cut to [`MAX_CLOSE_REASON_BYTES`] on a char boundary).
pub fn close_message(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(3 + end);
    out.push(CLOSE);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

/// What a complete data-channel message gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// A whole v1 message.
    Message(Vec<u8>),
    /// The other side closed the stream with this code and reason.
    Close(u16, String),
}

/// A data-channel message that breaks the framing. Fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// A data-channel message over [`MAX_DC_MESSAGE_BYTES`], or a declared total over the
    /// message cap.
    #[error("{0}")]
    TooLarge(String),
    /// Anything else: empty, unknown type, text, out of order, overshooting its total.
    #[error("{0}")]
    Malformed(&'static str),
}

impl FragmentError {
    /// The protocol code for the `error` that ends the connection.
    pub fn code(&self) -> Code {
        match self {
            FragmentError::TooLarge(_) => Code::FrameTooLarge,
            FragmentError::Malformed(_) => Code::MalformedMessage,
        }
    }
}

/// Reassembles v1 messages from data-channel messages, in arrival order (the channel is
/// reliable and ordered).
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    partial: Option<(usize, Vec<u8>)>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(limits::MAX_FRAME_MESSAGE_BYTES)
    }
}

impl Reassembler {
    /// A reassembler refusing messages over `max_message` bytes (the server uses
    /// `MAX_FRAME_MESSAGE_BYTES`; a client `MAX_SERVER_MESSAGE_BYTES`).
    pub fn new(max_message: usize) -> Self {
        Self { max_message, partial: None }
    }

    /// Whether a message is partly assembled.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes one data-channel message. `Ok(None)`: a fragment of a message still incomplete.
    pub fn push(&mut self, dc_message: &[u8]) -> Result<Option<Assembled>, FragmentError> {
        if dc_message.len() > MAX_DC_MESSAGE_BYTES {
            return Err(FragmentError::TooLarge(format!(
                "a data channel message of {} bytes exceeds the limit of {MAX_DC_MESSAGE_BYTES}; fragment it",
                dc_message.len()
            )));
        }
        let Some((&kind, rest)) = dc_message.split_first() else {
            return Err(FragmentError::Malformed("an empty data channel message"));
        };
        match kind {
            START => {
                if self.partial.is_some() {
                    return Err(FragmentError::Malformed("START before the previous message was complete"));
                }
                let Some((len, payload)) = rest.split_first_chunk::<4>() else {
                    return Err(FragmentError::Malformed("START shorter than its header"));
                };
                let total = u32::from_be_bytes(*len) as usize;
                if total == 0 {
                    return Err(FragmentError::Malformed("START declares an empty message"));
                }
                if total > self.max_message {
                    return Err(FragmentError::TooLarge(format!(
                        "a message of {total} bytes exceeds the limit of {} bytes",
                        self.max_message
                    )));
                }
                if payload.len() > total {
                    return Err(FragmentError::Malformed("START carries more than its declared total"));
                }
                if payload.len() == total {
                    return Ok(Some(Assembled::Message(payload.to_vec())));
                }
                let mut buf = Vec::with_capacity(total);
                buf.extend_from_slice(payload);
                self.partial = Some((total, buf));
                Ok(None)
            }
            CONT => {
                let Some((total, buf)) = self.partial.as_mut() else {
                    return Err(FragmentError::Malformed("CONT without a START"));
                };
                if rest.is_empty() {
                    return Err(FragmentError::Malformed("an empty CONT"));
                }
                if buf.len() + rest.len() > *total {
                    return Err(FragmentError::Malformed("fragments exceed the declared total"));
                }
                buf.extend_from_slice(rest);
                if buf.len() == *total {
                    let (_, done) = self.partial.take().unwrap_or_default();
                    return Ok(Some(Assembled::Message(done)));
                }
                Ok(None)
            }
            CLOSE => {
                let Some((code, reason)) = rest.split_first_chunk::<2>() else {
                    return Err(FragmentError::Malformed("CLOSE shorter than its header"));
                };
                Ok(Some(Assembled::Close(u16::from_be_bytes(*code), String::from_utf8_lossy(reason).into_owned())))
            }
            _ => Err(FragmentError::Malformed("unknown fragment type")),
        }
    }
}

// --- signalling socket (`GET /v1/scans/{id}/rtc`, JSON text) ----------------------------

/// What the phone sends on the scan's signalling socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SignalIn {
    /// The phone's SDP offer, with its `scan` data channel. At most one per socket.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// A trickled candidate of the phone.
    Ice {
        /// As the browser's `RTCIceCandidateInit`.
        candidate: IceCandidate,
    },
    /// Keepalive; answered with `pong`.
    Ping,
}

/// What the server sends on the scan's signalling socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalOut {
    /// Always first: the ICE servers to configure the peer connection with.
    Welcome {
        /// As the browser's `RTCIceServer` list.
        ice_servers: Vec<IceServer>,
    },
    /// The server's answer to the offer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A trickled candidate of the server.
    Ice {
        /// As the browser's `RTCIceCandidateInit`.
        candidate: IceCandidate,
    },
    /// The last message was refused; fatal ones are followed by a close.
    Error {
        /// A stable code (`docs/protocol.md` §10).
        code: String,
        /// Detail for developers.
        message: String,
    },
    /// Answer to `ping`.
    Pong,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) {
        let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let parts = fragment(&msg);
        assert!(parts.iter().all(|p| p.len() <= MAX_DC_MESSAGE_BYTES));
        let mut r = Reassembler::default();
        let mut got = None;
        for (i, p) in parts.iter().enumerate() {
            let out = r.push(p).unwrap();
            if i + 1 < parts.len() {
                assert!(out.is_none());
            } else {
                got = out;
            }
        }
        assert_eq!(got, Some(Assembled::Message(msg)));
        assert!(!r.in_progress());
    }

    #[test]
    fn messages_of_every_size_class_survive_fragmentation() {
        for len in [1, 11, 65_530, 65_531, 65_535, 131_064, 131_065, 196_700, limits::MAX_FRAME_MESSAGE_BYTES] {
            roundtrip(len);
        }
    }

    #[test]
    fn the_documented_examples_hold() {
        // ping {n: 7}: one START.
        let ping = [0x82, 0xa1, 0x74, 0xa4, 0x70, 0x69, 0x6e, 0x67, 0xa1, 0x6e, 0x07];
        let parts = fragment(&ping);
        assert_eq!(parts.len(), 1);
        assert_eq!(&parts[0][..5], &[0x01, 0x00, 0x00, 0x00, 0x0b]);
        // 100,000 bytes: START with 65,530, CONT with 34,470.
        let parts = fragment(&vec![0u8; 100_000]);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [65_535, 34_471]);
        assert_eq!(&parts[0][..5], &[0x01, 0x00, 0x01, 0x86, 0xa0]);
        assert_eq!(parts[1][0], 0x02);
        assert_eq!(close_message(4001, "superseded"), b"\x03\x0f\xa1superseded");
    }

    #[test]
    fn broken_framing_is_refused_with_codes() {
        let mut r = Reassembler::default();
        assert_eq!(r.push(&[]).unwrap_err().code(), Code::MalformedMessage);
        assert_eq!(r.push(&[0x07, 1]).unwrap_err().code(), Code::MalformedMessage);
        assert_eq!(r.push(&[CONT, 1]).unwrap_err().code(), Code::MalformedMessage);
        assert_eq!(r.push(&[START, 0, 0]).unwrap_err().code(), Code::MalformedMessage);
        assert_eq!(r.push(&[START, 0, 0, 0, 0]).unwrap_err().code(), Code::MalformedMessage);
        assert_eq!(r.push(&[START, 0, 0, 0, 1, 1, 2]).unwrap_err().code(), Code::MalformedMessage);
        let too_big = (limits::MAX_FRAME_MESSAGE_BYTES as u32 + 1).to_be_bytes();
        assert_eq!(
            r.push(&[START, too_big[0], too_big[1], too_big[2], too_big[3]]).unwrap_err().code(),
            Code::FrameTooLarge
        );
        assert_eq!(r.push(&vec![CONT; MAX_DC_MESSAGE_BYTES + 1]).unwrap_err().code(), Code::FrameTooLarge);
        let mut r = Reassembler::default();
        assert_eq!(r.push(&[START, 0, 0, 0, 3, 1]).unwrap(), None);
        assert_eq!(r.push(&[START, 0, 0, 0, 1, 1]).unwrap_err().code(), Code::MalformedMessage);
        let mut r = Reassembler::default();
        assert_eq!(r.push(&[START, 0, 0, 0, 3, 1]).unwrap(), None);
        assert_eq!(r.push(&[CONT, 1, 2, 3]).unwrap_err().code(), Code::MalformedMessage);
        let mut r = Reassembler::default();
        assert_eq!(r.push(&[CLOSE, 0x03, 0xe8, b'o', b'k']).unwrap(), Some(Assembled::Close(1000, "ok".into())));
    }
}
