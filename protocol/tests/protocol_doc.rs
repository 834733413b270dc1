//! Keeps `docs/protocol.md` honest: every worked example in it is regenerated from the
//! encoder and compared byte for byte, and its tables of limits, error codes and close
//! codes are checked against the code.
//!
//! After an intentional protocol change, rewrite the examples with
//! `COHERENCY_BLESS_DOC=1 cargo test -p coherency-protocol --test protocol_doc`.

// Test helpers may unwrap: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;

use coherency_protocol::ids::ScanId;
use coherency_protocol::limits;
use coherency_protocol::scan::{
    close, close_code, decode_client, decode_server, encode_client, encode_server, warning, Ack, ClientMsg,
    Compression, ConfidencePlane, DepthFormat, DepthFrame, DepthPlane, ErrorMsg, Finish, Finished, Heartbeat, Hello,
    Progress, ServerMsg, Welcome, STREAM_ERROR_CODES,
};
use coherency_protocol::Code;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");

fn scan_id() -> ScanId {
    "0190f3c2-7a4e-7b6d-9c1a-2f3e4d5c6b7a".parse().unwrap()
}

/// zstd of the float32 samples [0.5, 0.75] (little-endian), made once with level 1 and kept
/// as is, so the example does not change with the zstd library.
const ZSTD_F32_SAMPLES: [u8; 17] =
    [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x08, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x3f];

fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let client = |m: ClientMsg| encode_client(&m);
    let server = |m: ServerMsg| encode_server(&m);
    let frame_u16 = DepthFrame {
        seq: 42,
        captured_at_us: 1_717_000_000_123_456,
        width: 2,
        height: 2,
        depth: DepthPlane::new(
            DepthFormat::U16Millimetres,
            Compression::None,
            [412u16, 415, 0, 420].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        ),
        confidence: Some(ConfidencePlane::new(Compression::None, 2, vec![2u8, 2, 0, 1])),
        intrinsics: [2.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0],
        pose: [0.0, -1.0, 0.0, 0.25, 1.0, 0.0, 0.0, -0.5, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        colour_jpeg: None,
        colour_intrinsics: None,
        colour_pose: None,
    };
    let frame_f32 = DepthFrame {
        seq: 43,
        captured_at_us: 1_717_000_000_156_789,
        width: 2,
        height: 1,
        depth: DepthPlane::new(DepthFormat::F32Metres, Compression::Zstd, ZSTD_F32_SAMPLES.to_vec()),
        confidence: None,
        intrinsics: [2.0, 0.0, 1.0, 0.0, 2.0, 0.5, 0.0, 0.0, 1.0],
        pose: [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        colour_jpeg: Some(vec![0xff, 0xd8, 0xff, 0xe0, 0xff, 0xd9].into()),
        colour_intrinsics: None,
        colour_pose: None,
    };
    let mut unsupported = ErrorMsg::new(Code::UnsupportedVersion, "protocol version 2 is not supported");
    unsupported.supported_versions = Some(vec![1]);
    let mut invalid = ErrorMsg::new(Code::InvalidFrame, "frame 42: pose contains NaN or infinity");
    invalid.seq = Some(42);
    vec![
        (
            "hello",
            client(ClientMsg::Hello(Hello {
                version: 1,
                scan_id: scan_id(),
                resume_from: None,
                agent: Some("Scan/2.3 iOS".into()),
            })),
        ),
        (
            "hello-resume",
            client(ClientMsg::Hello(Hello { version: 1, scan_id: scan_id(), resume_from: Some(41), agent: None })),
        ),
        ("frame-u16", client(ClientMsg::Frame(Box::new(frame_u16)))),
        ("frame-f32-zstd", client(ClientMsg::Frame(Box::new(frame_f32)))),
        ("finish", client(ClientMsg::Finish(Finish { last_seq: 600 }))),
        ("ping", client(ClientMsg::Ping(Heartbeat { n: 7 }))),
        ("pong", client(ClientMsg::Pong(Heartbeat { n: 7 }))),
        (
            "welcome",
            server(ServerMsg::Welcome(Welcome { version: 1, scan_id: scan_id(), acked: 0, next: 1, window: 64 })),
        ),
        (
            "welcome-resume",
            server(ServerMsg::Welcome(Welcome { version: 1, scan_id: scan_id(), acked: 40, next: 42, window: 64 })),
        ),
        ("ack", server(ServerMsg::Ack(Ack { up_to: 42 }))),
        (
            "progress",
            server(ServerMsg::Progress(Progress {
                frames_received: 120,
                frames_fused: 118,
                coverage: 0.5,
                quality: 0.75,
                valid_fraction: 0.875,
                distance_m: Some(0.625),
                pose_jump_m: Some(0.0078125),
                warnings: vec![warning::TOO_FAR.into()],
            })),
        ),
        ("slow", server(ServerMsg::Slow)),
        ("resume", server(ServerMsg::Resume)),
        ("finished", server(ServerMsg::Finished(Finished { frames: 600, last_seq: 600, status: "processing".into() }))),
        ("error-version", server(ServerMsg::Error(unsupported))),
        ("error-frame", server(ServerMsg::Error(invalid))),
        ("server-ping", server(ServerMsg::Ping(Heartbeat { n: 9 }))),
    ]
}

// --- an annotated MessagePack dump ---------------------------------------------------

struct Dump<'a> {
    buf: &'a [u8],
    pos: usize,
    out: String,
}

impl Dump<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn be(&mut self, n: usize) -> u64 {
        self.take(n).iter().fold(0, |a, &b| (a << 8) | u64::from(b))
    }

    fn line(&mut self, start: usize, depth: usize, note: String) {
        let bytes = &self.buf[start..self.pos];
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        for (i, chunk) in hex.chunks(16).enumerate() {
            let text = chunk.join(" ");
            if i == 0 {
                let _ = writeln!(self.out, "{text:<48}  {}{note}", "  ".repeat(depth));
            } else {
                let _ = writeln!(self.out, "{text}");
            }
        }
    }

    fn value(&mut self, depth: usize) {
        let start = self.pos;
        let m = self.take(1)[0];
        let (note, children) = match m {
            0x00..=0x7f => (format!("{m}"), None),
            0x80..=0x8f => (format!("map, {} entries", m & 0x0f), Some(2 * u64::from(m & 0x0f))),
            0x90..=0x9f => (format!("array, {} items", m & 0x0f), Some(u64::from(m & 0x0f))),
            0xa0..=0xbf => {
                let s = String::from_utf8(self.take(usize::from(m & 0x1f)).to_vec()).unwrap();
                (format!("\"{s}\""), None)
            }
            0xc0 => ("nil".into(), None),
            0xc2 => ("false".into(), None),
            0xc3 => ("true".into(), None),
            0xc4..=0xc6 => {
                let w = [1, 2, 4][usize::from(m - 0xc4)];
                let n = self.be(w) as usize;
                self.take(n);
                (format!("bin{}, {n} bytes", w * 8), None)
            }
            0xca => (format!("{} (float32)", f32::from_bits(self.be(4) as u32)), None),
            0xcb => (format!("{} (float64)", f64::from_bits(self.be(8))), None),
            0xcc..=0xcf => {
                let w = 1usize << (m - 0xcc);
                (format!("{} (uint{})", self.be(w), w * 8), None)
            }
            0xd9 => {
                let n = self.be(1) as usize;
                let s = String::from_utf8(self.take(n).to_vec()).unwrap();
                (format!("\"{s}\" (str8, {n} bytes)"), None)
            }
            0xdc => {
                let n = self.be(2);
                (format!("array16, {n} items"), Some(n))
            }
            0xde => {
                let n = self.be(2);
                (format!("map16, {n} entries"), Some(2 * n))
            }
            other => panic!("the examples do not use marker {other:#04x}"),
        };
        self.line(start, depth, note);
        for _ in 0..children.unwrap_or(0) {
            self.value(depth + 1);
        }
    }
}

fn annotate(bytes: &[u8]) -> String {
    let mut d = Dump { buf: bytes, pos: 0, out: String::new() };
    d.value(0);
    assert_eq!(d.pos, bytes.len());
    let _ = writeln!(d.out, "({} bytes)", bytes.len());
    d.out
}

/// Replaces (bless) or checks the fenced block after each `<!-- example: NAME -->`.
fn sync_examples(doc: &str, bless: bool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut rest = doc;
    let examples = examples();
    let mut seen = Vec::new();
    while let Some(at) = rest.find("<!-- example: ") {
        let (before, tail) = rest.split_at(at);
        out.push_str(before);
        let end_marker = tail.find("-->").unwrap() + 3;
        let name = tail["<!-- example: ".len()..end_marker - 3].trim().to_owned();
        out.push_str(&tail[..end_marker]);
        let after = &tail[end_marker..];
        let open = after.find("```text\n").expect("a ```text block after the example marker");
        let body_start = open + "```text\n".len();
        let close = after[body_start..].find("```").unwrap() + body_start;
        let current = &after[body_start..close];
        let Some((_, bytes)) = examples.iter().find(|(n, _)| *n == name) else {
            problems.push(format!("the doc has an example `{name}` that the test does not know"));
            out.push_str(&after[..close]);
            rest = &after[close..];
            continue;
        };
        seen.push(name.clone());
        let want = annotate(bytes);
        if current != want {
            problems.push(format!("example `{name}` differs from the encoder:\n{want}"));
        }
        out.push_str(&after[..body_start]);
        out.push_str(if bless { &want } else { current });
        rest = &after[close..];
    }
    out.push_str(rest);
    for (name, _) in &examples {
        if !seen.iter().any(|s| s == name) {
            problems.push(format!("example `{name}` is missing from the doc"));
        }
    }
    (out, problems)
}

#[test]
fn the_worked_examples_in_the_doc_are_what_the_encoder_writes() {
    let doc = std::fs::read_to_string(DOC).expect("docs/protocol.md");
    let bless = std::env::var_os("COHERENCY_BLESS_DOC").is_some();
    let (new_doc, problems) = sync_examples(&doc, bless);
    if bless {
        std::fs::write(DOC, new_doc).unwrap();
        return;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_worked_examples_decode() {
    for (name, bytes) in examples() {
        let ok = if name.starts_with("hello") || name.starts_with("frame") || ["finish", "ping", "pong"].contains(&name)
        {
            decode_client(&bytes).map(|_| ()).map_err(|e| e.to_string())
        } else {
            decode_server(&bytes).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(ok.is_ok(), "{name}: {ok:?}");
    }
    let Ok(ClientMsg::Frame(f)) = decode_client(&examples()[3].1) else { panic!() };
    assert_eq!(f.depth_metres().unwrap(), vec![0.5, 0.75]);
    let Ok(ClientMsg::Frame(f)) = decode_client(&examples()[2].1) else { panic!() };
    assert_eq!(f.depth_metres().unwrap(), vec![0.412, 0.415, 0.0, 0.42]);
}

fn table_row_with<'a>(doc: &'a str, first_cell: &str) -> Option<&'a str> {
    doc.lines().find(|l| l.starts_with(&format!("| {first_cell} ")))
}

#[test]
fn the_doc_lists_every_limit_with_its_value() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let secs = |d: std::time::Duration| format!("{} ms", d.as_millis());
    let limits = [
        ("`MAX_WIDTH`", limits::MAX_WIDTH.to_string()),
        ("`MAX_HEIGHT`", limits::MAX_HEIGHT.to_string()),
        ("`MAX_DEPTH_PLANE_BYTES`", limits::MAX_DEPTH_PLANE_BYTES.to_string()),
        ("`MAX_CONFIDENCE_PLANE_BYTES`", limits::MAX_CONFIDENCE_PLANE_BYTES.to_string()),
        ("`MAX_JPEG_BYTES`", limits::MAX_JPEG_BYTES.to_string()),
        ("`MAX_FRAME_MESSAGE_BYTES`", limits::MAX_FRAME_MESSAGE_BYTES.to_string()),
        ("`MAX_CONTROL_MESSAGE_BYTES`", limits::MAX_CONTROL_MESSAGE_BYTES.to_string()),
        ("`MAX_SERVER_MESSAGE_BYTES`", limits::MAX_SERVER_MESSAGE_BYTES.to_string()),
        ("`MAX_NESTING`", limits::MAX_NESTING.to_string()),
        ("`MAX_VALUES`", limits::MAX_VALUES.to_string()),
        ("`MAX_AGENT_BYTES`", limits::MAX_AGENT_BYTES.to_string()),
        ("`MAX_ERROR_MESSAGE_BYTES`", limits::MAX_ERROR_MESSAGE_BYTES.to_string()),
        ("`MAX_WARNINGS`", limits::MAX_WARNINGS.to_string()),
        ("`DEFAULT_WINDOW`", limits::DEFAULT_WINDOW.to_string()),
        ("`MAX_WINDOW`", limits::MAX_WINDOW.to_string()),
        ("`HEARTBEAT_INTERVAL`", secs(limits::HEARTBEAT_INTERVAL)),
        ("`HEARTBEAT_TIMEOUT`", secs(limits::HEARTBEAT_TIMEOUT)),
        ("`HELLO_TIMEOUT`", secs(limits::HELLO_TIMEOUT)),
        ("`PROGRESS_INTERVAL`", secs(limits::PROGRESS_INTERVAL)),
        ("`ROTATION_TOLERANCE`", coherency_protocol::scan::ROTATION_TOLERANCE.to_string()),
    ];
    for (name, value) in limits {
        let row = table_row_with(&doc, name).unwrap_or_else(|| panic!("no limits row for {name}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let digits: String = cells[2].chars().filter(|c| !matches!(c, ',' | ' ')).collect();
        let want: String = value.chars().filter(|c| *c != ' ').collect();
        assert_eq!(digits, want, "limits row for {name}: {row}");
    }
}

#[test]
fn the_doc_lists_every_stream_error_code_with_its_close_code() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    for code in STREAM_ERROR_CODES {
        let name = format!("`{}`", code.as_str());
        let row = table_row_with(&doc, &name).unwrap_or_else(|| panic!("no error row for {name}"));
        assert!(
            row.contains(&format!("| {} |", close_code(*code))),
            "error row for {name} should name close code {}: {row}",
            close_code(*code)
        );
        assert!(
            row.contains(&format!("| {} |", code.http_status())),
            "error row for {name} should name HTTP status {}: {row}",
            code.http_status()
        );
    }
    for c in [
        close::NORMAL,
        close::GOING_AWAY,
        close::POLICY,
        close::TOO_BIG,
        close::INTERNAL,
        close::TRY_AGAIN_LATER,
        close::SUPERSEDED,
        close::UNAUTHENTICATED,
        close::FORBIDDEN,
        close::NOT_STREAMABLE,
    ] {
        assert!(table_row_with(&doc, &c.to_string()).is_some(), "no close code row for {c}");
    }
    for w in warning::ALL {
        assert!(table_row_with(&doc, &format!("`{w}`")).is_some(), "no warning row for {w}");
    }
}

#[test]
fn the_kept_zstd_sample_still_decodes() {
    let raw = zstd::bulk::decompress(&ZSTD_F32_SAMPLES, 8).unwrap();
    let want: Vec<u8> = [0.5f32, 0.75].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(raw, want);
}
