//! The scan ingest path's per-frame allocations, shared by the `ingest_system` and
//! `ingest_counting` benches: the same code under the system allocator and under the
//! server's counting allocator (`src/alloc.rs`), so one `cargo bench` run gives before and
//! after.

use std::hint::black_box;

use coherency_protocol::scan::{
    decode_client, encode_client, ClientMsg, Compression, ConfidencePlane, DepthFormat, DepthFrame, DepthPlane,
};
use criterion::Criterion;

/// A phone's frame as the server receives it: 256×192 depth as u16 0.1 mm + zstd, a zstd
/// confidence plane, a smooth surface about 25 cm away.
pub fn phone_frame() -> Vec<u8> {
    let (w, h) = (256u32, 192u32);
    let metres: Vec<f32> = (0..w * h)
        .map(|i| {
            let (x, y) = (f64::from(i % w) - 128.0, f64::from(i / w) - 96.0);
            (0.25 + 1e-6 * (x * x + y * y) + 0.0005 * (x * 0.3).sin()) as f32
        })
        .collect();
    let confidence = vec![2u8; (w * h) as usize];
    let frame = DepthFrame {
        seq: 1,
        captured_at_us: 1_764_000_000_000_000,
        width: w,
        height: h,
        depth: DepthPlane::encode(DepthFormat::U16TenthMillimetres, Compression::Zstd, &metres),
        confidence: Some(ConfidencePlane::encode(Compression::Zstd, 2, &confidence)),
        intrinsics: [210.0, 0.0, 127.5, 0.0, 210.0, 95.5, 0.0, 0.0, 1.0],
        pose: [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        colour_jpeg: None,
        colour_intrinsics: None,
        colour_pose: None,
    };
    encode_client(&ClientMsg::Frame(Box::new(frame)))
}

/// What the ingest path allocates for one frame: the guarded decode (planes decompressed
/// into exact buffers) and the metric depth the reconstruction takes.
pub fn ingest(bytes: &[u8]) -> usize {
    match decode_client(bytes) {
        Ok(ClientMsg::Frame(f)) => {
            let depth = f.depth_metres().map_or(0, |d| d.len());
            let conf = f.confidence_raw().ok().flatten().map_or(0, |c| c.len());
            depth + conf
        }
        _ => 0,
    }
}

/// Times [`ingest`] under `label` (the allocator's name), with `around` wrapping each call
/// (e.g. entering a request's account).
pub fn bench_ingest(c: &mut Criterion, label: &str, around: impl Fn(&dyn Fn() -> usize) -> usize) {
    let bytes = phone_frame();
    assert!(ingest(&bytes) > 0, "the frame decodes");
    c.bench_function(&format!("ingest_frame/{label}"), |b| b.iter(|| around(&|| ingest(black_box(&bytes)))));
}
