//! A small ring of pre-rendered, pre-encoded phantom frames, so that sending a frame during
//! the run costs a clone of a few `Bytes` handles and the MessagePack framing, not a render
//! or a compression.

use clap::ValueEnum;
use coherency_protocol::scan::{
    encode_client, ClientMsg, Compression, ConfidencePlane, DepthFormat, DepthFrame, DepthPlane,
};
use coherency_recon::phantom::{presets, Phantom, ScanConfig};

/// How depth is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// uint16 in 0.1 mm + zstd (what the app sends).
    #[value(name = "u16zstd")]
    U16Zstd,
    /// uint16 in 0.1 mm, uncompressed.
    #[value(name = "u16")]
    U16,
    /// float32 metres, uncompressed (the raw ARKit buffer).
    #[value(name = "f32")]
    F32,
    /// float32 metres + zstd.
    #[value(name = "f32zstd")]
    F32Zstd,
}

impl Encoding {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::U16Zstd => "u16zstd",
            Encoding::U16 => "u16",
            Encoding::F32 => "f32",
            Encoding::F32Zstd => "f32zstd",
        }
    }

    fn plane(self) -> (DepthFormat, Compression) {
        match self {
            Encoding::U16Zstd => (DepthFormat::U16TenthMillimetres, Compression::Zstd),
            Encoding::U16 => (DepthFormat::U16TenthMillimetres, Compression::None),
            Encoding::F32 => (DepthFormat::F32Metres, Compression::None),
            Encoding::F32Zstd => (DepthFormat::F32Metres, Compression::Zstd),
        }
    }

    fn compression(self) -> Compression {
        self.plane().1
    }
}

/// Renders `n` frames (256×192, iPhone noise) of a hand-held pass over an irregular wound
/// on flat skin (depth everywhere: the larger, worst case for compression) and encodes them. `seq` and `ts` are filled in at send time.
pub fn ring(n: usize, encoding: Encoding, confidence: bool, seed: u64) -> Vec<DepthFrame> {
    let phantom = Phantom::new(presets::irregular(false));
    let config = ScanConfig { frames: n.max(1), ..ScanConfig::iphone(seed) };
    let scan = phantom.scan(&config);
    let (format, compression) = encoding.plane();
    scan.frames
        .iter()
        .map(|f| DepthFrame {
            seq: 0,
            captured_at_us: 0,
            width: f.depth.width,
            height: f.depth.height,
            depth: DepthPlane::encode(format, compression, &f.depth.depth),
            confidence: if confidence {
                f.depth.confidence.as_deref().map(|c| ConfidencePlane::encode(encoding.compression(), 2, c))
            } else {
                None
            },
            intrinsics: f.intrinsics.to_row_major_f32(),
            pose: f.pose.to_row_major_f32(),
            colour_jpeg: None,
            colour_intrinsics: None,
            colour_pose: None,
        })
        .collect()
}

/// Mean size of the ring's `frame` messages, bytes.
pub fn mean_message_bytes(ring: &[DepthFrame]) -> u64 {
    if ring.is_empty() {
        return 0;
    }
    let total: usize = ring.iter().map(|f| encode_client(&ClientMsg::Frame(Box::new(f.clone()))).len()).sum();
    (total / ring.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use coherency_protocol::scan::decode_client;

    #[test]
    fn ring_frames_decode_and_validate() {
        for enc in [Encoding::U16Zstd, Encoding::F32] {
            let r = ring(3, enc, true, 7);
            assert_eq!(r.len(), 3);
            for (i, f) in r.iter().enumerate() {
                let mut f = f.clone();
                f.seq = i as u64 + 1;
                f.captured_at_us = 1_000 + i as u64;
                let bytes = encode_client(&ClientMsg::Frame(Box::new(f)));
                match decode_client(&bytes) {
                    Ok(ClientMsg::Frame(d)) => {
                        assert_eq!((d.width, d.height), (256, 192));
                        let m = d.depth_metres().unwrap_or_else(|e| panic!("{enc:?}: {e}"));
                        let valid = m.iter().filter(|v| **v > 0.0).count();
                        assert!(valid > m.len() / 2, "{enc:?}: mostly valid depth: {valid} of {}", m.len());
                    }
                    other => panic!("{enc:?}: {other:?}"),
                }
            }
        }
        let small = mean_message_bytes(&ring(2, Encoding::U16Zstd, false, 1));
        let raw = mean_message_bytes(&ring(2, Encoding::F32, false, 1));
        assert!(raw > 196_608 && small < raw / 2, "{small} vs {raw}");
    }
}
