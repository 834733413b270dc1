//! Named limits shared by the server and its clients. The server enforces them; clients
//! use them to stay inside. Each is documented in `docs/protocol.md`, and changing one is a
//! protocol change.

use std::time::Duration;

// --- scan stream: frame geometry -------------------------------------------------------

/// Largest depth image width in pixels.
pub const MAX_WIDTH: u32 = 640;
/// Largest depth image height in pixels.
pub const MAX_HEIGHT: u32 = 480;
/// Largest number of depth pixels in one frame.
pub const MAX_PIXELS: usize = (MAX_WIDTH as usize) * (MAX_HEIGHT as usize);
/// Largest decompressed depth plane: `MAX_PIXELS` float32 samples.
pub const MAX_DEPTH_PLANE_BYTES: usize = MAX_PIXELS * 4;
/// Largest decompressed confidence plane: `MAX_PIXELS` u8 samples.
pub const MAX_CONFIDENCE_PLANE_BYTES: usize = MAX_PIXELS;
/// Largest JPEG colour image carried in a frame.
pub const MAX_JPEG_BYTES: usize = 512 * 1024;

// --- scan stream: message sizes --------------------------------------------------------

/// Largest encoded client→server message (a whole `frame` message, planes included). Chosen
/// so that any frame inside the geometry limits fits even uncompressed: 640×480 float32 depth
/// (1,228,800 B) + confidence (307,200 B) + the largest JPEG (524,288 B) + headers.
/// A larger message is refused with `frame_too_large` and websocket close 1009.
pub const MAX_FRAME_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Largest encoded client→server message that is not a `frame` (`hello`, `finish`, `ping`…).
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 4 * 1024;
/// Largest encoded server→client message. Clients may refuse anything larger.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 64 * 1024;
/// Deepest MessagePack nesting accepted (top-level map = 1). v1 needs 2.
pub const MAX_NESTING: usize = 4;
/// Most MessagePack values (scalars and containers, all levels) in one message. A v1
/// frame has fewer than 70.
pub const MAX_VALUES: usize = 512;
/// Longest `agent` string in `hello`, in bytes.
pub const MAX_AGENT_BYTES: usize = 256;
/// Longest `message` in an `error`, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Most warnings in one `progress`.
pub const MAX_WARNINGS: usize = 16;

// --- scan stream: flow control and timing ----------------------------------------------

/// Unacked frames a client may have in flight unless the server's `welcome` says otherwise.
pub const DEFAULT_WINDOW: u32 = 64;
/// Largest window a server will grant.
pub const MAX_WINDOW: u32 = 256;
/// A side sends a `ping` when it has sent nothing for this long. Every other socket (data
/// channel signalling, consult signalling, the dashboard, the event socket) is pinged by
/// the server at this interval too.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A side that has received nothing (no message, no ping, no pong) for this long treats the
/// connection as dead: the server closes it with 1001, the client reconnects and resumes.
/// The same on every socket, so a client has one rule: answer pings, and reconnect after
/// this long without hearing from the server.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);
/// The server closes a socket that has not sent `hello` within this time of the upgrade
/// (the scan stream and the dashboard).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// While frames arrive, the server sends `progress` at least this often (≥ 5 Hz).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

// --- other sockets and bodies ----------------------------------------------------------

/// Default limit for a JSON request body.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;
/// Default limit for one message on a JSON/text socket (dashboard, room signalling).
pub const MAX_TEXT_MESSAGE_BYTES: usize = 64 * 1024;

// The frame cap must hold every frame that passes the geometry limits.
const _: () =
    assert!(MAX_DEPTH_PLANE_BYTES + MAX_CONFIDENCE_PLANE_BYTES + MAX_JPEG_BYTES + 1024 <= MAX_FRAME_MESSAGE_BYTES);
const _: () = assert!(DEFAULT_WINDOW <= MAX_WINDOW);
