//! Property tests for scan stream v1: every message survives an encode/decode round trip,
//! and no byte string — random, truncated or a mutated valid message — makes a decoder
//! panic.

// Test helpers may unwrap: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{
    decode_client, decode_server, encode_client, encode_server, warning, Ack, ClientMsg, Compression, ConfidencePlane,
    DepthFormat, DepthFrame, DepthPlane, ErrorMsg, Finish, Finished, Heartbeat, Hello, Progress, ServerMsg, Welcome,
};
use coherency_protocol::Code;
use proptest::prelude::*;
use uuid::Uuid;

fn scan_id() -> impl Strategy<Value = ScanId> {
    any::<u128>().prop_map(|n| ScanId::from_uuid(Uuid::from_u128(n)))
}

fn format() -> impl Strategy<Value = DepthFormat> {
    prop_oneof![Just(DepthFormat::F32Metres), Just(DepthFormat::U16TenthMillimetres), Just(DepthFormat::U16Millimetres),]
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Zstd)]
}

/// A rotation from an axis and angle (Rodrigues), orthonormal to float precision.
fn rotation(axis: [f32; 3], angle: f32) -> [[f32; 3]; 3] {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let [x, y, z] = if n < 1e-3 { [0.0, 0.0, 1.0] } else { axis.map(|a| a / n) };
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

prop_compose! {
    fn valid_frame()(
        w in 1u32..=12,
        h in 1u32..=12,
        seq in 1u64..u64::MAX,
        ts in any::<u64>(),
        fmt in format(),
        comp in compression(),
        conf_comp in compression(),
        with_conf in any::<bool>(),
        conf_max in 1u8..=255,
        fx in 1.0f32..2000.0,
        fy in 1.0f32..2000.0,
        // Within the accepted tolerance (a larger skew is an invalid frame).
        skew_of_fx in -1e-3f32..1e-3,
        cxf in 0.0f32..=1.0,
        cyf in 0.0f32..=1.0,
        axis in prop::array::uniform3(-1.0f32..1.0),
        angle in -3.1f32..3.1,
        t in prop::array::uniform3(-10.0f32..10.0),
        jpeg in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        // With a jpeg: a colour camera of its own (`jk` against the JPEG's SOF size, and
        // `jpose` when the flag is set).
        colour in prop::option::of((1u16..=4000, 1u16..=3000, 0.0f32..=1.0, 0.0f32..=1.0, any::<bool>())),
        seed in any::<u64>(),
    ) -> DepthFrame {
        let n = (w * h) as usize;
        let metres: Vec<f32> = (0..n)
            .map(|i| {
                let r = seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407));
                if r % 7 == 0 { 0.0 } else { 0.1 + (r >> 40) as f32 / (1u64 << 24) as f32 * 4.0 }
            })
            .collect();
        let conf: Vec<u8> = (0..n)
            .map(|i| (((seed >> (i % 56)) & 0xff) as u16 % (u16::from(conf_max) + 1)) as u8)
            .collect();
        let r = rotation(axis, angle);
        DepthFrame {
            seq,
            captured_at_us: ts,
            width: w,
            height: h,
            depth: DepthPlane::encode(fmt, comp, &metres),
            confidence: with_conf.then(|| ConfidencePlane::encode(conf_comp, conf_max, &conf)),
            intrinsics: [fx, skew_of_fx * fx, cxf * w as f32, 0.0, fy, cyf * h as f32, 0.0, 0.0, 1.0],
            pose: [
                r[0][0], r[0][1], r[0][2], t[0],
                r[1][0], r[1][1], r[1][2], t[1],
                r[2][0], r[2][1], r[2][2], t[2],
                0.0, 0.0, 0.0, 1.0,
            ],
            colour_jpeg: jpeg.as_ref().map(|tail| {
                let mut j = vec![0xFF, 0xD8];
                if let Some((jw, jh, ..)) = colour {
                    // SOF0: length 17, precision 8, height, width, 3 components.
                    j.extend([0xFF, 0xC0, 0, 17, 8]);
                    j.extend(jh.to_be_bytes());
                    j.extend(jw.to_be_bytes());
                    j.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
                } else {
                    j.push(0xFF);
                }
                j.extend(tail);
                j.into()
            }),
            colour_intrinsics: jpeg.as_ref().and(colour).map(|(jw, jh, cxj, cyj, _)| {
                [fx * 4.0, 0.0, cxj * f32::from(jw), 0.0, fy * 4.0, cyj * f32::from(jh), 0.0, 0.0, 1.0]
            }),
            colour_pose: jpeg.as_ref().and(colour).filter(|c| c.4).map(|_| [
                r[0][0], r[0][1], r[0][2], t[0] + 0.01,
                r[1][0], r[1][1], r[1][2], t[1],
                r[2][0], r[2][1], r[2][2], t[2],
                0.0, 0.0, 0.0, 1.0,
            ]),
        }
    }
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (scan_id(), prop::option::of(any::<u64>()), prop::option::of("[a-zA-Z0-9 ./()-]{0,64}")).prop_map(
            |(scan_id, resume_from, agent)| ClientMsg::Hello(Hello { version: 1, scan_id, resume_from, agent })
        ),
        valid_frame().prop_map(|f| ClientMsg::Frame(Box::new(f))),
        any::<u64>().prop_map(|last_seq| ClientMsg::Finish(Finish { last_seq })),
        any::<u64>().prop_map(|n| ClientMsg::Ping(Heartbeat { n })),
        any::<u64>().prop_map(|n| ClientMsg::Pong(Heartbeat { n })),
    ]
}

fn finite() -> impl Strategy<Value = f32> {
    -1.0e6f32..1.0e6
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let welcome = (scan_id(), any::<u64>(), 1u64..1000, 1u32..=256).prop_map(|(scan_id, acked, gap, window)| {
        ServerMsg::Welcome(Welcome { version: 1, scan_id, acked, next: acked.saturating_add(gap), window })
    });
    let progress = (
        any::<u64>(),
        any::<u64>(),
        (0.0f32..=1.0, 0.0f32..=1.0, 0.0f32..=1.0),
        prop::option::of(finite()),
        prop::option::of(finite()),
        prop::collection::vec(
            prop_oneof![prop::sample::select(warning::ALL).prop_map(str::to_owned), "[a-z_]{1,20}"],
            0..5,
        ),
    )
        .prop_map(
            |(
                frames_received,
                frames_fused,
                (coverage, quality, valid_fraction),
                distance_m,
                pose_jump_m,
                warnings,
            )| {
                ServerMsg::Progress(Progress {
                    frames_received,
                    frames_fused,
                    coverage,
                    quality,
                    valid_fraction,
                    distance_m,
                    pose_jump_m,
                    warnings,
                })
            },
        );
    let error = (
        prop::sample::select(Code::ALL),
        ".{0,100}",
        prop::option::of(any::<u64>()),
        prop::option::of(prop::collection::vec(any::<u32>(), 0..4)),
    )
        .prop_map(|(code, message, seq, supported_versions)| {
            let mut e = ErrorMsg::new(code, message);
            e.seq = seq;
            e.supported_versions = supported_versions;
            ServerMsg::Error(e)
        });
    prop_oneof![
        welcome,
        any::<u64>().prop_map(|up_to| ServerMsg::Ack(Ack { up_to })),
        progress,
        Just(ServerMsg::Slow),
        Just(ServerMsg::Resume),
        (any::<u64>(), any::<u64>(), "[a-z]{1,12}")
            .prop_map(|(frames, last_seq, status)| { ServerMsg::Finished(Finished { frames, last_seq, status }) }),
        error,
        any::<u64>().prop_map(|n| ServerMsg::Ping(Heartbeat { n })),
        any::<u64>().prop_map(|n| ServerMsg::Pong(Heartbeat { n })),
    ]
}

/// Flips, inserts, deletes or overwrites bytes of a valid message.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(kind, at, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] ^= 1 << (value % 8),
            1 => bytes.insert(at, value),
            2 => {
                bytes.remove(at);
            }
            _ => bytes[at] = value,
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_client_message_round_trips(msg in client_msg()) {
        let bytes = encode_client(&msg);
        let back = decode_client(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &msg);
        if let (ClientMsg::Frame(a), ClientMsg::Frame(b)) = (&msg, &back) {
            prop_assert_eq!(a.depth_metres().unwrap(), b.depth_metres().unwrap());
            prop_assert_eq!(a.confidence_raw().unwrap(), b.confidence_raw().unwrap());
        }
        // Encoding is deterministic.
        prop_assert_eq!(encode_client(&back), bytes);
    }

    #[test]
    fn every_server_message_round_trips(msg in server_msg()) {
        let bytes = encode_server(&msg);
        let back = decode_server(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic_a_decoder(
        msg in client_msg(),
        reply in server_msg(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        let _ = decode_client(&mutate(encode_client(&msg), &edits));
        let _ = decode_server(&mutate(encode_server(&reply), &edits));
    }

    #[test]
    fn every_prefix_of_a_frame_is_refused_without_panicking(msg in valid_frame()) {
        let bytes = encode_client(&ClientMsg::Frame(Box::new(msg)));
        for cut in 0..bytes.len() {
            prop_assert!(decode_client(&bytes[..cut]).is_err());
        }
    }
}
