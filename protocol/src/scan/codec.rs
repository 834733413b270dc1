//! Encoding and guarded decoding of scan stream messages.
//!
//! Decoding runs in stages so that untrusted bytes never drive an allocation larger than
//! the message itself: (1) the length is checked against the message cap; (2) a
//! non-allocating pass walks the MessagePack structure, checking every declared length
//! against the bytes actually present, the nesting depth and the number of values, and
//! refusing extension types and trailing bytes; (3) serde builds the typed message (byte
//! fields are copied once, never larger than the message); (4) frames are checked —
//! dimensions, camera model, pose — and only then are planes decompressed, into buffers of
//! exactly `w × h × bytes per sample`.

use serde::Deserialize;

use super::validate::check_frame;
use super::{ClientMsg, ErrorMsg, ServerMsg, SUPPORTED_VERSIONS};
use crate::error::{Code, ErrorCode};
use crate::limits::{
    MAX_AGENT_BYTES, MAX_CONTROL_MESSAGE_BYTES, MAX_FRAME_MESSAGE_BYTES, MAX_NESTING, MAX_SERVER_MESSAGE_BYTES,
    MAX_VALUES,
};

/// The `"t"` values of client messages in v1.
pub const CLIENT_TYPES: &[&str] = &["hello", "frame", "finish", "ping", "pong"];
/// The `"t"` values of server messages in v1.
pub const SERVER_TYPES: &[&str] =
    &["welcome", "ack", "progress", "slow", "resume", "finished", "error", "ping", "pong"];

/// Why a message was refused. Each maps to a [`Code`] (and so to an `error` message and a
/// close code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// A size or dimension limit was exceeded (`frame_too_large`, close 1009).
    #[error("{what} {size} exceeds the limit of {max}")]
    TooLarge {
        /// The frame, when the limit is a frame's.
        seq: Option<u64>,
        /// What was too large, e.g. `"message bytes"`, `"width"`.
        what: &'static str,
        /// The size found.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not a well-formed v1 message (`malformed_message`).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A well-formed map whose `"t"` names no known message (`malformed_message`). Clients
    /// ignore such server messages.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// A `hello` with a version this side does not speak (`unsupported_version`).
    #[error("protocol version {got} is not supported")]
    UnsupportedVersion {
        /// The version the peer asked for.
        got: u64,
    },
    /// A well-formed frame whose content is wrong (`invalid_frame`).
    #[error("frame {seq}: {reason}")]
    InvalidFrame {
        /// The frame's seq.
        seq: u64,
        /// What is wrong, for developers.
        reason: String,
    },
}

impl ErrorCode for DecodeError {
    fn code(&self) -> Code {
        match self {
            DecodeError::TooLarge { .. } => Code::FrameTooLarge,
            DecodeError::Malformed(_) | DecodeError::UnknownType(_) => Code::MalformedMessage,
            DecodeError::UnsupportedVersion { .. } => Code::UnsupportedVersion,
            DecodeError::InvalidFrame { .. } => Code::InvalidFrame,
        }
    }
}

impl DecodeError {
    /// The frame the error is about, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            DecodeError::TooLarge { seq, .. } => *seq,
            DecodeError::InvalidFrame { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The websocket close code the server uses after this error.
    pub fn close_code(&self) -> u16 {
        super::close_code(self.code())
    }

    /// The `error` message the server sends for this error.
    pub fn to_error_msg(&self) -> ErrorMsg {
        let mut msg = ErrorMsg::new(self.code(), self.to_string());
        msg.seq = self.seq();
        if let DecodeError::UnsupportedVersion { .. } = self {
            msg.supported_versions = Some(SUPPORTED_VERSIONS.to_vec());
        }
        msg
    }
}

/// Encodes a client message (MessagePack map, keys in declaration order).
pub fn encode_client(msg: &ClientMsg) -> Vec<u8> {
    let mut out = Vec::new();
    encode_client_into(msg, &mut out);
    out
}

/// Encodes a client message, appending to `out` (lets a sender reuse one buffer).
pub fn encode_client_into(msg: &ClientMsg, out: &mut Vec<u8>) {
    // Serialising these types into memory cannot fail: every map has string keys and a
    // known length.
    rmp_serde::encode::write_named(out, msg).expect("in-memory MessagePack encoding");
}

/// Encodes a server message.
pub fn encode_server(msg: &ServerMsg) -> Vec<u8> {
    rmp_serde::to_vec_named(msg).expect("in-memory MessagePack encoding")
}

/// Decodes and checks one client message (one binary websocket message).
///
/// Never panics and never allocates more than the message's own size plus, for a frame,
/// its exact decompressed planes (at most [`crate::limits::MAX_DEPTH_PLANE_BYTES`] +
/// [`crate::limits::MAX_CONFIDENCE_PLANE_BYTES`]). The returned frame carries its
/// decompressed planes, so [`super::DepthFrame::depth_metres`] does not decompress again.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMsg, DecodeError> {
    if bytes.len() > MAX_FRAME_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            seq: None,
            what: "message bytes",
            size: bytes.len() as u64,
            max: MAX_FRAME_MESSAGE_BYTES as u64,
        });
    }
    skim(bytes)?;
    let msg: ClientMsg = match rmp_serde::from_slice(bytes) {
        Ok(msg) => msg,
        Err(e) => return Err(explain(bytes, e, CLIENT_TYPES)),
    };
    match msg {
        ClientMsg::Frame(mut frame) => {
            let (depth, confidence) = check_frame(&frame)?;
            frame.depth.raw.0 = Some(depth);
            if let (Some(plane), Some(raw)) = (frame.confidence.as_mut(), confidence) {
                plane.raw.0 = Some(raw);
            }
            Ok(ClientMsg::Frame(frame))
        }
        other => {
            if bytes.len() > MAX_CONTROL_MESSAGE_BYTES {
                return Err(DecodeError::TooLarge {
                    seq: None,
                    what: "control message bytes",
                    size: bytes.len() as u64,
                    max: MAX_CONTROL_MESSAGE_BYTES as u64,
                });
            }
            if let ClientMsg::Hello(hello) = &other {
                if !SUPPORTED_VERSIONS.contains(&hello.version) {
                    return Err(DecodeError::UnsupportedVersion { got: hello.version.into() });
                }
                if hello.agent.as_ref().is_some_and(|a| a.len() > MAX_AGENT_BYTES) {
                    return Err(DecodeError::Malformed(format!("hello.agent is longer than {MAX_AGENT_BYTES} bytes")));
                }
            }
            Ok(other)
        }
    }
}

/// Decodes one server message (client side). Lenient: unknown keys are ignored, and an
/// unknown `"t"` gives [`DecodeError::UnknownType`], which clients should skip.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMsg, DecodeError> {
    if bytes.len() > MAX_SERVER_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            seq: None,
            what: "message bytes",
            size: bytes.len() as u64,
            max: MAX_SERVER_MESSAGE_BYTES as u64,
        });
    }
    skim(bytes)?;
    rmp_serde::from_slice(bytes).map_err(|e| explain(bytes, e, SERVER_TYPES))
}

/// Turns a serde failure into the most useful error: an unsupported version or an unknown
/// type beats a generic "malformed" (a v2 `hello` may not parse as v1 at all).
fn explain(bytes: &[u8], err: rmp_serde::decode::Error, known: &[&str]) -> DecodeError {
    #[derive(Deserialize)]
    struct Probe {
        t: Option<String>,
        v: Option<u64>,
    }
    if let Ok(probe) = rmp_serde::from_slice::<Probe>(bytes) {
        match probe.t.as_deref() {
            None => return DecodeError::Malformed("missing message type `t`".into()),
            Some(t) if !known.contains(&t) => {
                let mut t = t.to_owned();
                super::truncate_utf8(&mut t, 64);
                return DecodeError::UnknownType(t);
            }
            Some("hello") => {
                if let Some(v) = probe.v {
                    if !SUPPORTED_VERSIONS.iter().any(|&s| u64::from(s) == v) {
                        return DecodeError::UnsupportedVersion { got: v };
                    }
                }
            }
            Some(_) => {}
        }
    }
    let mut text = err.to_string();
    super::truncate_utf8(&mut text, 256);
    DecodeError::Malformed(text)
}

fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(what.to_owned())
}

/// One MessagePack value header: how many bytes the header and any inline payload take,
/// and how many child values follow (for arrays and maps).
struct Header {
    len: usize,
    children: u64,
}

fn read_be(buf: &[u8], at: usize, n: usize) -> Result<u64, DecodeError> {
    let end = at.checked_add(n).ok_or_else(|| malformed("length overflow"))?;
    let bytes = buf.get(at..end).ok_or_else(|| malformed("message ends inside a value"))?;
    Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

fn header(buf: &[u8], pos: usize) -> Result<Header, DecodeError> {
    let marker = *buf.get(pos).ok_or_else(|| malformed("message ends before a value"))?;
    let scalar = |len: usize| Ok(Header { len, children: 0 });
    // A payload of `n` bytes after a length field of `width` bytes.
    let sized = |width: usize| -> Result<Header, DecodeError> {
        let n = read_be(buf, pos + 1, width)?;
        let n = usize::try_from(n).map_err(|_| malformed("length overflow"))?;
        Ok(Header { len: 1 + width + n, children: 0 })
    };
    let container = |width: usize, per_entry: u64| -> Result<Header, DecodeError> {
        let n = read_be(buf, pos + 1, width)?;
        Ok(Header { len: 1 + width, children: n * per_entry })
    };
    match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => scalar(1),
        0x80..=0x8f => Ok(Header { len: 1, children: u64::from(marker & 0x0f) * 2 }),
        0x90..=0x9f => Ok(Header { len: 1, children: u64::from(marker & 0x0f) }),
        0xa0..=0xbf => scalar(1 + usize::from(marker & 0x1f)),
        0xc4 | 0xd9 => sized(1),
        0xc5 | 0xda => sized(2),
        0xc6 | 0xdb => sized(4),
        0xca => scalar(5),
        0xcb => scalar(9),
        0xcc | 0xd0 => scalar(2),
        0xcd | 0xd1 => scalar(3),
        0xce | 0xd2 => scalar(5),
        0xcf | 0xd3 => scalar(9),
        0xdc => container(2, 1),
        0xdd => container(4, 1),
        0xde => container(2, 2),
        0xdf => container(4, 2),
        0xc1 => Err(malformed("byte 0xc1 is never used in MessagePack")),
        // 0xc7..=0xc9 and 0xd4..=0xd8
        _ => Err(malformed("MessagePack extension types are not used by this protocol")),
    }
}

/// Walks the MessagePack structure without allocating, so that serde only ever sees a
/// message whose declared lengths are all backed by real bytes.
fn skim(buf: &[u8]) -> Result<(), DecodeError> {
    if !matches!(buf.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Err(malformed("a message must be one MessagePack map"));
    }
    // Remaining child values of each open container, innermost last.
    let mut open = [0u64; MAX_NESTING];
    let mut depth = 0usize;
    let mut pos = 0usize;
    let mut values = 0usize;
    loop {
        values += 1;
        if values > MAX_VALUES {
            return Err(malformed("too many values in one message"));
        }
        let h = header(buf, pos)?;
        pos = pos
            .checked_add(h.len)
            .filter(|&p| p <= buf.len())
            .ok_or_else(|| malformed("a declared length runs past the end of the message"))?;
        if h.children > 0 {
            // Every child takes at least one byte.
            if h.children > (buf.len() - pos) as u64 {
                return Err(malformed("a declared length runs past the end of the message"));
            }
            if depth == MAX_NESTING {
                return Err(malformed("values nested too deeply"));
            }
            open[depth] = h.children;
            depth += 1;
        } else {
            // A finished value: close every container it completes.
            while depth > 0 {
                open[depth - 1] -= 1;
                if open[depth - 1] > 0 {
                    break;
                }
                depth -= 1;
            }
        }
        if depth == 0 {
            break;
        }
    }
    if pos != buf.len() {
        return Err(malformed("trailing bytes after the message"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skimmer_accepts_nested_maps_and_empty_containers() {
        // {"a": [1, {}], "b": []}
        let bytes = [0x82, 0xa1, b'a', 0x92, 0x01, 0x80, 0xa1, b'b', 0x90];
        skim(&bytes).unwrap();
    }

    #[test]
    fn the_skimmer_counts_an_empty_container_as_a_finished_value() {
        // {"a": {}} then a trailing byte
        assert!(skim(&[0x81, 0xa1, b'a', 0x80, 0x01]).is_err());
        skim(&[0x81, 0xa1, b'a', 0x80]).unwrap();
        skim(&[0x80]).unwrap();
    }

    #[test]
    fn the_skimmer_refuses_lengths_that_the_bytes_do_not_back() {
        // map32 declaring 2^32-1 entries
        assert!(skim(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        // bin32 declaring 4 GiB
        assert!(skim(&[0x81, 0xa1, b'd', 0xc6, 0xff, 0xff, 0xff, 0xff]).is_err());
        // str8 cut short
        assert!(skim(&[0x81, 0xa1, b'd', 0xd9, 0x05, b'x']).is_err());
    }

    #[test]
    fn the_skimmer_limits_nesting() {
        let mut bytes = vec![0x81, 0xa1, b'a'];
        bytes.extend(std::iter::repeat_n(0x91, MAX_NESTING));
        bytes.push(0x01);
        assert!(skim(&bytes).is_err());
    }

    #[test]
    fn the_skimmer_refuses_extension_types() {
        assert!(skim(&[0x81, 0xa1, b'a', 0xd4, 0x01, 0x02]).is_err());
    }
}
