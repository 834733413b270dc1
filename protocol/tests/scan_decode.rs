//! The decoder's refusals, each with its error code and close code, and the depth helpers.

// Test helpers may unwrap: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;

use coherency_protocol::limits::{MAX_FRAME_MESSAGE_BYTES, MAX_JPEG_BYTES, MAX_WIDTH};
use coherency_protocol::scan::{
    close, decode_client, encode_client, ClientMsg, Compression, ConfidencePlane, DecodeError, DepthFormat, DepthFrame,
    DepthPlane, SUPPORTED_VERSIONS,
};
use coherency_protocol::{Code, ErrorCode};
use serde::Serialize;
use serde_bytes::ByteBuf;

const IDENTITY: [f32; 16] = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];

fn frame(w: u32, h: u32) -> DepthFrame {
    let metres = vec![0.4f32; (w * h) as usize];
    DepthFrame {
        seq: 1,
        captured_at_us: 1,
        width: w,
        height: h,
        depth: DepthPlane::encode(DepthFormat::U16Millimetres, Compression::None, &metres),
        confidence: None,
        intrinsics: [w as f32, 0.0, w as f32 / 2.0, 0.0, w as f32, h as f32 / 2.0, 0.0, 0.0, 1.0],
        pose: IDENTITY,
        colour_jpeg: None,
        colour_intrinsics: None,
        colour_pose: None,
    }
}

fn decode_frame(f: DepthFrame) -> Result<ClientMsg, DecodeError> {
    decode_client(&encode_client(&ClientMsg::Frame(Box::new(f))))
}

fn refused_with(result: Result<ClientMsg, DecodeError>, code: Code) -> DecodeError {
    let err = result.expect_err("the decoder should refuse this");
    assert_eq!(err.code(), code, "{err}");
    err
}

/// A loosely typed MessagePack value, to write messages the way other encoders might.
#[derive(Serialize)]
#[serde(untagged)]
enum V {
    U(u64),
    F(f64),
    S(&'static str),
    B(ByteBuf),
    A(Vec<V>),
    M(BTreeMap<&'static str, V>),
}

fn raw(map: BTreeMap<&'static str, V>) -> Vec<u8> {
    rmp_serde::to_vec_named(&map).unwrap()
}

fn loose_frame() -> BTreeMap<&'static str, V> {
    let depth = BTreeMap::from([
        ("fmt", V::S("u16_1mm")),
        ("comp", V::S("none")),
        ("data", V::B(ByteBuf::from(vec![0x90, 0x01, 0x90, 0x01]))),
    ]);
    BTreeMap::from([
        ("t", V::S("frame")),
        ("seq", V::U(7)),
        ("ts", V::U(123)),
        ("w", V::U(2)),
        ("h", V::U(1)),
        ("depth", V::M(depth)),
        ("k", V::A(vec![V::F(2.0), V::U(0), V::F(1.0), V::U(0), V::F(2.0), V::F(0.5), V::U(0), V::U(0), V::U(1)])),
        ("pose", V::A(IDENTITY.iter().map(|&x| V::F(f64::from(x))).collect())),
    ])
}

#[test]
fn keys_in_any_order_and_float64_or_integer_numbers_are_accepted() {
    let Ok(ClientMsg::Frame(f)) = decode_client(&raw(loose_frame())) else { panic!() };
    assert_eq!((f.seq, f.width, f.height), (7, 2, 1));
    assert_eq!(f.depth_metres().unwrap(), vec![0.4, 0.4]);
}

#[test]
fn a_message_over_the_frame_cap_is_frame_too_large_with_close_1009() {
    let bytes = vec![0x80; MAX_FRAME_MESSAGE_BYTES + 1];
    let err = decode_client(&bytes).unwrap_err();
    assert_eq!(err.code(), Code::FrameTooLarge);
    assert_eq!(err.close_code(), close::TOO_BIG);
}

#[test]
fn dimensions_over_the_limit_are_frame_too_large() {
    let mut f = frame(4, 4);
    f.width = MAX_WIDTH + 1;
    refused_with(decode_frame(f), Code::FrameTooLarge);
}

#[test]
fn a_plane_whose_length_does_not_match_the_dimensions_is_an_invalid_frame() {
    let mut f = frame(4, 4);
    f.height = 3;
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert_eq!(err.seq(), Some(1));
    assert_eq!(err.close_code(), close::POLICY);
    assert_eq!(err.to_error_msg().seq, Some(1));
}

#[test]
fn a_zstd_bomb_declaring_its_size_is_refused_before_decompression() {
    let big = vec![0u8; 50 * 1024 * 1024];
    let bomb = zstd::bulk::compress(&big, 19).unwrap();
    let mut f = frame(4, 4);
    f.depth = DepthPlane::new(DepthFormat::U16Millimetres, Compression::Zstd, bomb);
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("declares"), "{err}");
}

#[test]
fn a_zstd_bomb_hiding_its_size_stops_at_the_plane_size() {
    // A streaming encoder does not write the content size into the frame header.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    enc.include_contentsize(false).unwrap();
    let chunk = vec![0u8; 1024 * 1024];
    for _ in 0..50 {
        enc.write_all(&chunk).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let mut f = frame(4, 4);
    f.depth = DepthPlane::new(DepthFormat::U16Millimetres, Compression::Zstd, bomb);
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn zstd_that_decompresses_short_is_an_invalid_frame() {
    let mut f = frame(4, 4);
    f.depth =
        DepthPlane::new(DepthFormat::U16Millimetres, Compression::Zstd, zstd::bulk::compress(&[1u8; 31], 1).unwrap());
    refused_with(decode_frame(f), Code::InvalidFrame);
    let mut f = frame(4, 4);
    f.depth = DepthPlane::new(DepthFormat::U16Millimetres, Compression::Zstd, vec![1, 2, 3]);
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn nan_or_infinite_poses_and_intrinsics_are_invalid_frames() {
    for i in [0, 3, 15] {
        let mut f = frame(4, 4);
        f.pose[i] = f32::NAN;
        refused_with(decode_frame(f), Code::InvalidFrame);
    }
    let mut f = frame(4, 4);
    f.intrinsics[2] = f32::INFINITY;
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn a_column_major_pose_is_an_invalid_frame() {
    let mut f = frame(4, 4);
    // Translation written into the bottom row, as a column-major dump would.
    f.pose = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.1, 0.2, 0.3, 1.0];
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("row-major"), "{err}");
}

#[test]
fn a_scaled_or_mirrored_rotation_is_an_invalid_frame() {
    let mut f = frame(4, 4);
    f.pose[0] = 2.0;
    refused_with(decode_frame(f), Code::InvalidFrame);
    let mut f = frame(4, 4);
    f.pose[0] = -1.0;
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("reflection"), "{err}");
}

#[test]
fn non_positive_focal_lengths_and_unscaled_intrinsics_are_invalid_frames() {
    let mut f = frame(4, 4);
    f.intrinsics[0] = 0.0;
    refused_with(decode_frame(f), Code::InvalidFrame);
    let mut f = frame(4, 4);
    f.intrinsics[4] = -3.0;
    refused_with(decode_frame(f), Code::InvalidFrame);
    // Intrinsics of a 1920×1440 colour image sent with a 4×4 depth image.
    let mut f = frame(4, 4);
    f.intrinsics = [1500.0, 0.0, 960.0, 0.0, 1500.0, 720.0, 0.0, 0.0, 1.0];
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("scaled"), "{err}");
    // Transposed (column-major) intrinsics.
    let mut f = frame(4, 4);
    f.intrinsics = [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 2.0, 2.0, 1.0];
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn confidence_above_its_max_is_an_invalid_frame() {
    let mut f = frame(2, 2);
    f.confidence = Some(ConfidencePlane::encode(Compression::Zstd, 2, &[0, 1, 2, 3]));
    refused_with(decode_frame(f), Code::InvalidFrame);
    let mut f = frame(2, 2);
    f.confidence = Some(ConfidencePlane::encode(Compression::None, 0, &[0, 0, 0, 0]));
    refused_with(decode_frame(f), Code::InvalidFrame);
    let mut f = frame(2, 2);
    f.confidence = Some(ConfidencePlane::encode(Compression::None, 2, &[0, 1, 2]));
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn jpeg_must_look_like_jpeg_and_fit_its_limit() {
    let mut f = frame(2, 2);
    f.colour_jpeg = Some(vec![0x89, b'P', b'N', b'G'].into());
    refused_with(decode_frame(f), Code::InvalidFrame);
    let mut f = frame(2, 2);
    let mut big = vec![0xFF, 0xD8, 0xFF];
    big.resize(MAX_JPEG_BYTES + 1, 0);
    f.colour_jpeg = Some(big.into());
    refused_with(decode_frame(f), Code::FrameTooLarge);
}

/// The start of a JPEG of `w × h`: SOI, an APP0 JFIF segment, SOF0, EOI (enough for the
/// server to read its size; the image data does not matter to the decoder).
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0];
    j.extend([0xFF, 0xC0, 0, 17, 8]);
    j.extend(h.to_be_bytes());
    j.extend(w.to_be_bytes());
    j.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    j
}

fn with_colour(w: u32, h: u32, jw: u16, jh: u16) -> DepthFrame {
    let mut f = frame(w, h);
    f.colour_jpeg = Some(jpeg_header(jw, jh).into());
    f
}

/// A 1920×1440 colour camera's intrinsics (ARKit's `capturedImage`).
const JK: [f32; 9] = [1500.0, 0.0, 960.0, 0.0, 1500.0, 720.0, 0.0, 0.0, 1.0];

#[test]
fn a_colour_camera_is_the_depth_camera_scaled_to_the_jpeg_unless_jk_and_jpose_say_otherwise() {
    let f = with_colour(256, 192, 1920, 1440);
    assert_eq!(coherency_protocol::scan::jpeg_dimensions(f.colour_jpeg.as_ref().unwrap()), Some((1920, 1440)));
    let ClientMsg::Frame(f) = decode_frame(f).unwrap() else { panic!("a frame") };
    let cam = f.colour_camera().expect("a colour camera");
    assert_eq!((cam.width, cam.height), (1920, 1440));
    // k of the 256×192 depth image is [256, 0, 128, 0, 256, 96, 0, 0, 1]; ×7.5 both ways.
    assert_eq!(cam.intrinsics, [1920.0, 0.0, 960.0, 0.0, 1920.0, 720.0, 0.0, 0.0, 1.0]);
    assert_eq!(cam.pose, IDENTITY);

    let mut f = with_colour(256, 192, 1920, 1440);
    let mut jpose = IDENTITY;
    jpose[3] = 0.012;
    f.colour_intrinsics = Some(JK);
    f.colour_pose = Some(jpose);
    let ClientMsg::Frame(f) = decode_frame(f).unwrap() else { panic!("a frame") };
    let cam = f.colour_camera().expect("a colour camera");
    assert_eq!((cam.intrinsics, cam.pose), (JK, jpose));
    // No jpeg, no colour camera.
    assert_eq!(frame(4, 4).colour_camera(), None);
}

#[test]
fn jk_or_jpose_without_a_jpeg_is_an_invalid_frame() {
    let mut f = frame(4, 4);
    f.colour_intrinsics = Some(JK);
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("only allowed with a jpeg"), "{err}");
    let mut f = frame(4, 4);
    f.colour_pose = Some(IDENTITY);
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn jk_is_checked_like_k_against_the_jpegs_own_size() {
    // In pixels of the depth image (256×192), not of the 1920×1440 JPEG: accepted, since its
    // principal point lies inside the JPEG too; in pixels of a larger image: refused.
    let mut f = with_colour(256, 192, 640, 480);
    f.colour_intrinsics = Some(JK);
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    let text = err.to_string();
    assert!(text.contains("jk") && text.contains("640×480") && text.contains("JPEG"), "{text}");
    for bad in [
        [f32::NAN, 0.0, 960.0, 0.0, 1500.0, 720.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 960.0, 0.0, 1500.0, 720.0, 0.0, 0.0, 1.0],
        [1500.0, 30.0, 960.0, 0.0, 1500.0, 720.0, 0.0, 0.0, 1.0],
        [1500.0, 0.0, 0.0, 0.0, 1500.0, 0.0, 960.0, 720.0, 1.0],
    ] {
        let mut f = with_colour(256, 192, 1920, 1440);
        f.colour_intrinsics = Some(bad);
        let err = refused_with(decode_frame(f), Code::InvalidFrame);
        assert!(err.to_string().contains("jk"), "{err}");
    }
}

#[test]
fn jk_with_a_jpeg_whose_size_cannot_be_read_is_an_invalid_frame() {
    let mut f = frame(4, 4);
    f.colour_jpeg = Some(vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xD9].into());
    f.colour_intrinsics = Some(JK);
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("SOF"), "{err}");
    // Without jk the same jpeg is accepted (the server only needs its size for jk).
    let mut f = frame(4, 4);
    f.colour_jpeg = Some(vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xD9].into());
    decode_frame(f).unwrap();
}

#[test]
fn a_jpose_is_checked_like_a_pose() {
    let mut f = with_colour(4, 4, 64, 48);
    let mut m = IDENTITY;
    m[12] = 0.1;
    f.colour_pose = Some(m);
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("jpose") && err.to_string().contains("row-major"), "{err}");
    let mut f = with_colour(4, 4, 64, 48);
    let mut m = IDENTITY;
    m[0] = -1.0;
    f.colour_pose = Some(m);
    let err = refused_with(decode_frame(f), Code::InvalidFrame);
    assert!(err.to_string().contains("jpose") && err.to_string().contains("reflection"), "{err}");
    let mut f = with_colour(4, 4, 64, 48);
    let mut m = IDENTITY;
    m[5] = f32::INFINITY;
    f.colour_pose = Some(m);
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn seq_zero_is_an_invalid_frame() {
    let mut f = frame(2, 2);
    f.seq = 0;
    refused_with(decode_frame(f), Code::InvalidFrame);
}

#[test]
fn planes_sent_as_arrays_of_numbers_are_malformed() {
    let mut m = loose_frame();
    let depth = BTreeMap::from([
        ("fmt", V::S("u16_1mm")),
        ("comp", V::S("none")),
        ("data", V::A(vec![V::U(0x90), V::U(1), V::U(0x90), V::U(1)])),
    ]);
    m.insert("depth", V::M(depth));
    refused_with(decode_client(&raw(m)), Code::MalformedMessage);
}

#[test]
fn unknown_keys_missing_keys_and_unknown_formats_are_malformed() {
    let mut m = loose_frame();
    m.insert("extra", V::U(1));
    let err = refused_with(decode_client(&raw(m)), Code::MalformedMessage);
    assert!(err.to_string().contains("extra"), "{err}");

    let mut m = loose_frame();
    m.remove("pose");
    refused_with(decode_client(&raw(m)), Code::MalformedMessage);

    let mut m = loose_frame();
    let depth =
        BTreeMap::from([("fmt", V::S("u8_cm")), ("comp", V::S("none")), ("data", V::B(ByteBuf::from(vec![1, 2])))]);
    m.insert("depth", V::M(depth));
    refused_with(decode_client(&raw(m)), Code::MalformedMessage);
}

#[test]
fn a_hello_with_another_version_is_refused_with_the_supported_versions() {
    // A future hello may not even have v1's fields.
    let hello = BTreeMap::from([("t", V::S("hello")), ("v", V::U(2)), ("scan", V::U(9)), ("caps", V::A(vec![]))]);
    let err = refused_with(decode_client(&raw(hello)), Code::UnsupportedVersion);
    let msg = err.to_error_msg();
    assert_eq!(msg.code, "unsupported_version");
    assert_eq!(msg.supported_versions.as_deref(), Some(SUPPORTED_VERSIONS));
    assert_eq!(err.close_code(), close::POLICY);
}

#[test]
fn unknown_types_garbage_and_trailing_bytes_are_malformed() {
    refused_with(decode_client(&raw(BTreeMap::from([("t", V::S("selfie"))]))), Code::MalformedMessage);
    refused_with(decode_client(&raw(BTreeMap::from([("seq", V::U(1))]))), Code::MalformedMessage);
    refused_with(decode_client(b"{\"t\":\"hello\"}"), Code::MalformedMessage);
    refused_with(decode_client(&[]), Code::MalformedMessage);
    let mut bytes = encode_client(&ClientMsg::Frame(Box::new(frame(2, 2))));
    bytes.push(0xc0);
    refused_with(decode_client(&bytes), Code::MalformedMessage);
}

#[test]
fn a_long_control_message_is_refused() {
    let hello = BTreeMap::from([
        ("t", V::S("hello")),
        ("v", V::U(1)),
        ("scan", V::S("0190f3c2-7a4e-7b6d-9c1a-2f3e4d5c6b7a")),
        ("agent", V::S(Box::leak("x".repeat(300).into_boxed_str()))),
    ]);
    refused_with(decode_client(&raw(hello)), Code::MalformedMessage);
}

#[test]
fn depth_converts_to_metres_in_every_format() {
    let metres = [0.5f32, 0.0, 1.2345, f32::NAN, -1.0, 7.0];
    let tenth = DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::None, &metres);
    assert_eq!(
        tenth.data().as_ref(),
        [5000u16, 0, 12345, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
    );
    let mm = DepthPlane::encode(DepthFormat::U16Millimetres, Compression::Zstd, &metres);
    let f32m = DepthPlane::encode(DepthFormat::F32Metres, Compression::None, &metres);
    let as_metres = |plane: DepthPlane| {
        let mut f = frame(3, 2);
        f.depth = plane;
        let Ok(ClientMsg::Frame(f)) = decode_frame(f) else { panic!() };
        f.depth_metres().unwrap()
    };
    let close_to = |got: Vec<f32>, want: [f32; 6], tol: f32| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "{got:?} vs {want:?}");
        }
    };
    close_to(as_metres(tenth), [0.5, 0.0, 1.2345, 0.0, 0.0, 0.0], 1e-6);
    close_to(as_metres(mm), [0.5, 0.0, 1.2345, 0.0, 0.0, 7.0], 6e-4);
    close_to(as_metres(f32m), [0.5, 0.0, 1.2345, 0.0, 0.0, 7.0], 0.0);
}

#[test]
fn a_client_can_check_a_frame_before_sending_it() {
    frame(4, 4).validate().unwrap();
    let mut f = frame(4, 4);
    f.pose[5] = 0.5;
    assert_eq!(f.validate().unwrap_err().code(), Code::InvalidFrame);
}
