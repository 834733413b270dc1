//! Scan stream protocol v1: the messages a phone and the server exchange while a wound scan
//! is captured, their MessagePack encoding, and the decoder that guards the server.
//!
//! Every message is one binary websocket message holding one MessagePack map. The map's
//! `"t"` entry names the message type; the other entries are the fields, under the short
//! keys given on each field below. `docs/protocol.md` is the normative description, with
//! byte-level examples that a test checks against [`encode_client`] and [`encode_server`].
//!
//! Client messages are parsed strictly (unknown keys are an error, so typos fail loudly);
//! server messages are parsed leniently by clients (unknown keys and unknown message types
//! are ignored), so the server can add fields without a version bump.

mod codec;
mod plane;
mod validate;

use serde::{Deserialize, Serialize};

use crate::error::Code;
use crate::ids::ScanId;

pub use codec::{decode_client, decode_server, encode_client, encode_client_into, encode_server};
pub use codec::{DecodeError, CLIENT_TYPES, SERVER_TYPES};
pub use plane::{
    quantise_metres, raw_depth_to_metres, Compression, ConfidencePlane, DepthFormat, DepthPlane, ZSTD_LEVEL,
};
pub use validate::{jpeg_dimensions, ROTATION_TOLERANCE, SKEW_TOLERANCE};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Every version a server built from this crate accepts in `hello`.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// The websocket path of a scan's stream, relative to the server's base URL.
pub fn stream_path(scan_id: ScanId) -> String {
    format!("/v1/scans/{scan_id}/stream")
}

// ---------------------------------------------------------------------------------------
// client → server
// ---------------------------------------------------------------------------------------

/// A message from the phone to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message on every connection: `{"t":"hello", …}`.
    Hello(Hello),
    /// One depth frame: `{"t":"frame", …}`.
    Frame(Box<DepthFrame>),
    /// The scan is complete: `{"t":"finish", …}`.
    Finish(Finish),
    /// Heartbeat request: `{"t":"ping","n":…}`.
    Ping(Heartbeat),
    /// Heartbeat answer: `{"t":"pong","n":…}`.
    Pong(Heartbeat),
}

/// Opens (or resumes) the stream for one scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// `"v"`: protocol version the client speaks; must be in [`SUPPORTED_VERSIONS`].
    #[serde(rename = "v")]
    pub version: u32,
    /// `"scan"`: the scan id as a UUID string; must equal the id in the URL.
    #[serde(rename = "scan", with = "scan_id_str")]
    pub scan_id: ScanId,
    /// `"resume"`: the highest `ack.up_to` this client has seen for this scan, when it is
    /// reconnecting. Absent (or nil) on the first connection.
    #[serde(rename = "resume", default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<u64>,
    /// `"agent"`: free-form client name and version for diagnostics (no PHI), at most
    /// [`crate::limits::MAX_AGENT_BYTES`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// One depth frame with its camera model and pose.
///
/// The camera frame follows the computer-vision convention: x right, y down, z forward
/// (out of the lens). Depth is the z coordinate of the surface point (distance along the
/// optical axis), not the ray length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthFrame {
    /// `"seq"`: sequence number. The first frame of a scan is 1; each next frame is the
    /// previous plus one, across reconnections.
    pub seq: u64,
    /// `"ts"`: capture time in microseconds on the phone's clock (Unix epoch recommended),
    /// non-decreasing within a scan.
    #[serde(rename = "ts")]
    pub captured_at_us: u64,
    /// `"w"`: depth image width in pixels, 1..=[`crate::limits::MAX_WIDTH`].
    #[serde(rename = "w")]
    pub width: u32,
    /// `"h"`: depth image height in pixels, 1..=[`crate::limits::MAX_HEIGHT`].
    #[serde(rename = "h")]
    pub height: u32,
    /// `"depth"`: the depth plane, row-major, top row first, `w × h` samples.
    pub depth: DepthPlane,
    /// `"conf"`: optional per-pixel confidence, same size and order as the depth plane.
    #[serde(rename = "conf", default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<ConfidencePlane>,
    /// `"k"`: pinhole intrinsics in pixels of the depth image, row-major 3×3:
    /// `[fx, s, cx, 0, fy, cy, 0, 0, 1]`.
    #[serde(rename = "k")]
    pub intrinsics: [f32; 9],
    /// `"pose"`: world-from-camera rigid transform, row-major 4×4:
    /// `[r00, r01, r02, tx, r10, r11, r12, ty, r20, r21, r22, tz, 0, 0, 0, 1]`, metres.
    /// A camera-frame point `p` maps to the world as `R·p + t`.
    pub pose: [f32; 16],
    /// `"jpeg"`: optional colour image (baseline or progressive JPEG), at most
    /// [`crate::limits::MAX_JPEG_BYTES`].
    #[serde(rename = "jpeg", default, skip_serializing_if = "Option::is_none", with = "opt_bin")]
    pub colour_jpeg: Option<bytes::Bytes>,
    /// `"jk"`: optional pinhole intrinsics of the colour image, in pixels of the JPEG (its
    /// own width and height, from its SOF header), row-major like `"k"`. Only with `"jpeg"`.
    /// Absent: the colour image comes from the depth camera (ARKit's `capturedImage` and
    /// `sceneDepth`), so its intrinsics are `"k"` scaled by the JPEG's size over the depth
    /// image's ([`DepthFrame::colour_camera`]).
    #[serde(rename = "jk", default, skip_serializing_if = "Option::is_none")]
    pub colour_intrinsics: Option<[f32; 9]>,
    /// `"jpose"`: optional world-from-colour-camera transform, row-major 4×4 like `"pose"`.
    /// Only with `"jpeg"`. Absent: the colour camera sits where the depth camera does
    /// (`"pose"`).
    #[serde(rename = "jpose", default, skip_serializing_if = "Option::is_none")]
    pub colour_pose: Option<[f32; 16]>,
}

/// The camera a frame's colour image was taken with, after the frame convention
/// (`docs/protocol.md` §4.2, *Colour camera*): the JPEG's own size, its intrinsics (`"jk"`,
/// else `"k"` scaled to the JPEG) and its world-from-camera pose (`"jpose"`, else `"pose"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourCamera {
    /// Width of the JPEG in pixels (its SOF header).
    pub width: u32,
    /// Height of the JPEG in pixels.
    pub height: u32,
    /// Row-major `[fx, s, cx, 0, fy, cy, 0, 0, 1]` in pixels of the JPEG.
    pub intrinsics: [f32; 9],
    /// World-from-colour-camera, row-major 4×4, metres.
    pub pose: [f32; 16],
}

/// Ends the scan: no frame will follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    /// `"last"`: the seq of the last frame of the scan (0 if none was sent).
    #[serde(rename = "last")]
    pub last_seq: u64,
}

/// A heartbeat (`ping`) or its answer (`pong`), in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `"n"`: an opaque number chosen by the pinger and echoed in the pong.
    pub n: u64,
}

// ---------------------------------------------------------------------------------------
// server → client
// ---------------------------------------------------------------------------------------

/// A message from the server to the phone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `hello`: where to (re)start.
    Welcome(Welcome),
    /// Cumulative durable acknowledgement.
    Ack(Ack),
    /// Live capture feedback, at least 5 Hz while frames arrive.
    Progress(Progress),
    /// Stop sending new frames until `resume`.
    Slow,
    /// Frames may flow again.
    Resume,
    /// The scan's stream is complete; the server closes with 1000 next.
    Finished(Finished),
    /// The stream failed; the server closes the socket next.
    Error(ErrorMsg),
    /// Heartbeat request.
    Ping(Heartbeat),
    /// Heartbeat answer.
    Pong(Heartbeat),
}

/// The server's answer to `hello`. Authoritative over the client's `resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// `"v"`: the protocol version in use for this connection.
    #[serde(rename = "v")]
    pub version: u32,
    /// `"scan"`: the scan id.
    #[serde(rename = "scan", with = "scan_id_str")]
    pub scan_id: ScanId,
    /// `"acked"`: every frame with `seq <= acked` is durable (0: none).
    pub acked: u64,
    /// `"next"`: the seq the server expects next (`next > acked`). Frames between `acked`
    /// and `next` are received but not yet durable: the client must not resend them, but
    /// must keep them until they are acked.
    pub next: u64,
    /// `"window"`: most unacked frames the client may have sent at any time.
    pub window: u32,
}

/// Every frame with `seq <= up_to` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// `"up_to"`: highest durable seq; never decreases on a connection.
    pub up_to: u64,
}

/// Live feedback for the person holding the phone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// `"received"`: frames received in this scan (all connections, duplicates excluded).
    #[serde(rename = "received")]
    pub frames_received: u64,
    /// `"fused"`: frames integrated into the reconstruction.
    #[serde(rename = "fused")]
    pub frames_fused: u64,
    /// `"coverage"`: estimated fraction of the wound region observed, 0..=1.
    pub coverage: f32,
    /// `"quality"`: overall capture quality of recent frames, 0..=1 (1 = ideal).
    pub quality: f32,
    /// `"valid"`: fraction of pixels with valid depth in the latest frame, 0..=1.
    #[serde(rename = "valid")]
    pub valid_fraction: f32,
    /// `"distance_m"`: median depth of the latest frame in metres; absent if no valid depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f32>,
    /// `"jump_m"`: camera translation between the two latest frames in metres; absent for
    /// the first frame.
    #[serde(rename = "jump_m", default, skip_serializing_if = "Option::is_none")]
    pub pose_jump_m: Option<f32>,
    /// `"warnings"`: active capture warnings, strings from [`warning`]; clients ignore
    /// strings they do not know.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The end of a scan's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// `"frames"`: number of distinct frames stored for the scan.
    pub frames: u64,
    /// `"last"`: seq of the last frame (equal to the `finish` message's `last`).
    #[serde(rename = "last")]
    pub last_seq: u64,
    /// `"status"`: the scan's status after the stream, normally `"processing"`.
    pub status: String,
}

/// A fatal stream error. The server closes the socket right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// `"code"`: a stable error code string (see [`crate::Code`]).
    pub code: String,
    /// `"message"`: human-readable detail for developers; never shown to patients as is.
    pub message: String,
    /// `"seq"`: the frame the error is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `"supported"`: with `unsupported_version`, the versions the server accepts.
    #[serde(rename = "supported", default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<u32>>,
}

impl ErrorMsg {
    /// An error message for `code`; the message is truncated to
    /// [`crate::limits::MAX_ERROR_MESSAGE_BYTES`].
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, crate::limits::MAX_ERROR_MESSAGE_BYTES);
        Self { code: code.as_str().to_owned(), message, seq: None, supported_versions: None }
    }

    /// The catalogue entry, if this client knows the code.
    pub fn code(&self) -> Option<Code> {
        code_from_str(&self.code)
    }

    /// The websocket close code that accompanies this error.
    pub fn close_code(&self) -> u16 {
        self.code().map_or(close::POLICY, close_code)
    }
}

/// Every code a scan stream `error` message (or the refused upgrade before it) can carry.
pub const STREAM_ERROR_CODES: &[Code] = &[
    Code::UnsupportedVersion,
    Code::FrameTooLarge,
    Code::MalformedMessage,
    Code::InvalidFrame,
    Code::SequenceGap,
    Code::Superseded,
    Code::ScanNotStreamable,
    Code::ConsentRequired,
    Code::Unauthenticated,
    Code::TokenExpired,
    Code::TokenRevoked,
    Code::Forbidden,
    Code::OriginNotAllowed,
    Code::NotFound,
    Code::RateLimited,
    Code::Unavailable,
    Code::Internal,
];

/// Looks a code string up in the catalogue.
pub fn code_from_str(s: &str) -> Option<Code> {
    Code::ALL.iter().copied().find(|c| c.as_str() == s)
}

pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Capture warnings carried in [`Progress::warnings`].
pub mod warning {
    /// Median distance below the useful range (closer than about 0.15 m).
    pub const TOO_CLOSE: &str = "too_close";
    /// Median distance beyond the useful range (farther than about 0.6 m).
    pub const TOO_FAR: &str = "too_far";
    /// The camera moved too far between frames.
    pub const MOVING_TOO_FAST: &str = "moving_too_fast";
    /// Too few pixels carry valid depth.
    pub const LOW_VALID_DEPTH: &str = "low_valid_depth";
    /// Frames arrive slower than the reconstruction needs.
    pub const LOW_FRAME_RATE: &str = "low_frame_rate";
    /// The pose jumped implausibly: the phone's tracking was probably lost.
    pub const TRACKING_LOST: &str = "tracking_lost";

    /// No wound (no depression below the skin) near where the phone points.
    pub const WOUND_NOT_FOUND: &str = "wound_not_found";
    /// The wound found lies more than 15 mm from where the phone points, or runs past the
    /// largest area searched.
    pub const WOUND_OFF_CENTRE: &str = "wound_off_centre";
    /// The wound's rim has not been seen all round yet.
    pub const RIM_NOT_SEEN: &str = "rim_not_seen";

    /// Every warning this version defines.
    pub const ALL: &[&str] = &[
        TOO_CLOSE,
        TOO_FAR,
        MOVING_TOO_FAST,
        LOW_VALID_DEPTH,
        LOW_FRAME_RATE,
        TRACKING_LOST,
        WOUND_NOT_FOUND,
        WOUND_OFF_CENTRE,
        RIM_NOT_SEEN,
    ];
}

/// Websocket close codes used by the scan stream.
pub mod close {
    /// The stream finished (sent after `finished`).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down or draining, or the heartbeat timed out: reconnect and
    /// resume.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol (malformed message, invalid frame, sequence gap,
    /// unsupported version): do not retry unchanged.
    pub const POLICY: u16 = 1008;
    /// A message exceeded a size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed: reconnect with backoff and resume.
    pub const INTERNAL: u16 = 1011;
    /// Overloaded or a dependency is down: reconnect with backoff and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Another connection took over this scan's stream.
    pub const SUPERSEDED: u16 = 4001;
    /// The credentials expired or were revoked: authenticate again before reconnecting.
    pub const UNAUTHENTICATED: u16 = 4002;
    /// The caller may not stream to this scan.
    pub const FORBIDDEN: u16 = 4003;
    /// The scan cannot take frames (finished, failed or deleted).
    pub const NOT_STREAMABLE: u16 = 4009;
}

/// The close code that follows an `error` with `code`.
pub fn close_code(code: Code) -> u16 {
    match code {
        Code::FrameTooLarge | Code::PayloadTooLarge => close::TOO_BIG,
        Code::Superseded => close::SUPERSEDED,
        Code::Unauthenticated | Code::TokenExpired | Code::TokenRevoked | Code::InvalidCredentials => {
            close::UNAUTHENTICATED
        }
        Code::Forbidden
        | Code::OriginNotAllowed
        | Code::ConsentRequired
        | Code::MfaRequired
        | Code::AccountDisabled
        | Code::AccountLocked => close::FORBIDDEN,
        Code::ScanNotStreamable | Code::NotFound => close::NOT_STREAMABLE,
        Code::Unavailable | Code::RateLimited => close::TRY_AGAIN_LATER,
        Code::Internal => close::INTERNAL,
        _ => close::POLICY,
    }
}

/// Whether a client should reconnect and resume after the socket closed with `code`
/// (1006 is what a client sees when the connection dropped without a close frame).
pub fn close_is_retryable(code: u16) -> bool {
    matches!(code, 1001 | 1005 | 1006 | 1011 | 1012 | 1013 | 1014)
}

/// Serialises a [`ScanId`] as its UUID string in MessagePack (rather than 16 raw bytes),
/// and reads it back from a string only.
mod scan_id_str {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::ids::ScanId;

    pub fn serialize<S: Serializer>(id: &ScanId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ScanId, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScanId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a UUID string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<ScanId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// MessagePack `bin` only (not arrays of numbers, not strings) for byte fields.
pub(crate) mod bin {
    use bytes::Bytes;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("MessagePack bin")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

mod opt_bin {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::bin")] Bytes);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}
