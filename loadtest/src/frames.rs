//! A small ring of pre-rendered, pre-encoded phantom frames, so that sending a frame during
//! the run costs a clone of a few `Bytes` handles and the MessagePack framing, not a render
//! or a compression; and the colour image (`--colour-every`), one phone-sized JPEG made once
//! at start-up and attached, as a shared `Bytes`, to every Nth frame sent.

use bytes::Bytes;
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

/// Mean size of the `frame` messages sent when every `every`-th one carries `jpeg` (0: none).
pub fn mean_message_bytes_with_colour(ring: &[DepthFrame], jpeg: Option<&Bytes>, every: u64) -> u64 {
    let base = mean_message_bytes(ring);
    let (Some(jpeg), Some(first)) = (jpeg, ring.first()) else { return base };
    if every == 0 {
        return base;
    }
    let size = |f: DepthFrame| encode_client(&ClientMsg::Frame(Box::new(f))).len() as u64;
    let extra = size(with_colour(first.clone(), jpeg)) - size(first.clone());
    base + extra / every
}

/// `frame` with the colour image attached the way the app attaches ARKit's `capturedImage`:
/// `"jpeg"` only, no `"jk"` or `"jpose"` (the frame convention's default: the colour image is
/// the depth camera's, at the JPEG's size).
pub fn with_colour(mut frame: DepthFrame, jpeg: &Bytes) -> DepthFrame {
    frame.colour_jpeg = Some(jpeg.clone());
    frame
}

/// ARKit's `capturedImage` on current iPhones: 1920×1440, 4:3 like the 256×192 depth map.
pub const COLOUR_SIZE: (u16, u16) = (1920, 1440);

/// The most bytes the colour JPEG may take: about what a phone's JPEG of a 1920×1440 close-up
/// weighs at the usual quality (0.7–0.8 in `UIImage.jpegData`, some 250–450 kB), and below
/// the protocol's [`MAX_JPEG_BYTES`](coherency_protocol::limits::MAX_JPEG_BYTES). The
/// quantiser step is raised until the picture fits.
pub const COLOUR_BUDGET_BYTES: usize = 400_000;

/// Quantiser steps tried, finest first (the project's encoder has one flat step).
const COLOUR_Q_STEPS: [u8; 14] = [2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32, 48];

/// The colour image the phones send.
#[derive(Debug, Clone)]
pub struct ColourImage {
    /// Baseline JPEG, 4:4:4.
    pub jpeg: Bytes,
    pub width: u16,
    pub height: u16,
    /// The quantiser step it was encoded with.
    pub q: u8,
}

/// Paints a close-up of a wound on skin ([`wound_on_skin_rgb`]) and encodes it with the
/// finest quantiser step whose JPEG fits `budget` bytes (and the protocol's limit); `None`
/// when none does. Deterministic for a seed. About a second of CPU at 1920×1440.
pub fn colour_jpeg(width: u16, height: u16, budget: usize, seed: u64) -> Option<ColourImage> {
    let budget = budget.min(coherency_protocol::limits::MAX_JPEG_BYTES);
    let rgb = wound_on_skin_rgb(width, height, seed);
    COLOUR_Q_STEPS.iter().find_map(|&q| {
        let jpeg = coherency_report::jpeg_encode::encode_rgb(&rgb, width, height, q)?;
        (jpeg.len() <= budget).then(|| ColourImage { jpeg: Bytes::from(jpeg), width, height, q })
    })
}

const SKIN: [f32; 3] = [206.0, 158.0, 128.0];
const ERYTHEMA: [f32; 3] = [198.0, 104.0, 96.0];
const EPITHELIUM: [f32; 3] = [222.0, 156.0, 152.0];
const GRANULATION: [f32; 3] = [172.0, 38.0, 44.0];
const SLOUGH: [f32; 3] = [214.0, 190.0, 96.0];
const ESCHAR: [f32; 3] = [58.0, 40.0, 34.0];

/// A 64-bit mix of a lattice point and a seed, as a number in [0, 1).
fn lattice(x: i64, y: i64, seed: u64) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ seed.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^= h >> 33;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smooth value noise in [-1, 1], one lattice cell per unit.
fn noise(x: f32, y: f32, seed: u64) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(ix, iy, seed) + sx * (lattice(ix + 1, iy, seed) - lattice(ix, iy, seed));
    let b = lattice(ix, iy + 1, seed) + sx * (lattice(ix + 1, iy + 1, seed) - lattice(ix, iy + 1, seed));
    2.0 * (a + sy * (b - a)) - 1.0
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]), a[2] + t * (b[2] - a[2])]
}

/// A close-up photo of a wound on skin, 8-bit RGB row-major: mottled skin with pores and
/// sensor grain, a reddened periwound, an irregular bed of lumpy granulation with slough and a
/// little eschar, an epithelial rim, wet highlights, and light falling off from one side. Laid
/// out in image heights, so every size shows the same picture. Not a tissue phantom: it gives
/// the JPEG a photo's texture, hence a photo's size.
pub fn wound_on_skin_rgb(width: u16, height: u16, seed: u64) -> Vec<u8> {
    let (w, h) = (usize::from(width), usize::from(height));
    let scale = f32::from(height.max(1));
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (px, py) = ((x as f32 - w as f32 / 2.0) / scale, (y as f32 - h as f32 / 2.0) / scale);
            let r = (px * px + py * py).sqrt();
            let (cx, cy) = if r > 1e-6 { (px / r, py / r) } else { (1.0, 0.0) };
            // The bed's edge: 0.2 image heights, wobbling with the direction.
            let edge = 0.2 * (1.0 + 0.22 * noise(1.6 * cx + 5.0, 1.6 * cy + 5.0, seed ^ 1));
            let d = r / edge;
            let mottle = noise(4.0 * px, 4.0 * py, seed ^ 2);
            let pores = noise(70.0 * px, 70.0 * py, seed ^ 3);
            let grain = noise(260.0 * px, 260.0 * py, seed ^ 4);
            let mut c = mix(SKIN, [SKIN[0] + 10.0, SKIN[1] - 6.0, SKIN[2] - 4.0], 0.5 + 0.5 * mottle);
            c = c.map(|v| v + 6.0 * pores + 3.0 * grain);
            if d < 1.6 {
                // Periwound redness, strongest at the edge.
                c = mix(c, ERYTHEMA, 0.6 * (1.6 - d.max(1.0)) / 0.6);
            }
            if d < 1.0 {
                let lumps = noise(80.0 * px, 80.0 * py, seed ^ 5);
                let patch = noise(6.0 * px + 3.0, 6.0 * py, seed ^ 6);
                let crust = noise(9.0 * px, 9.0 * py + 7.0, seed ^ 7);
                let mut bed = GRANULATION.map(|v| v * (1.0 + 0.22 * lumps));
                bed = mix(bed, SLOUGH.map(|v| v * (1.0 + 0.08 * lumps)), (patch - 0.15) * 5.0);
                bed = mix(bed, ESCHAR, (crust - 0.45) * 6.0);
                bed = bed.map(|v| v + 4.0 * grain);
                // Epithelium creeping in from the edge.
                c = mix(bed, EPITHELIUM, (d - 0.88) * 8.0);
                if lumps > 0.72 {
                    let shine = (lumps - 0.72) * 3.5 * 150.0;
                    c = c.map(|v| v + shine);
                }
            }
            // Light from the upper left, falling off across the frame.
            let (lx, ly) = (px + 0.35, py + 0.3);
            let gain = 1.1 - 0.35 * (lx * lx + ly * ly);
            let sensor = 4.0 * (lattice(x as i64, y as i64, seed ^ 8) - 0.5);
            rgb.extend(c.map(|v| (v * gain + sensor).round().clamp(0.0, 255.0) as u8));
        }
    }
    rgb
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

    /// At a quarter of the phone's size, so the unoptimised test stays quick.
    fn small_colour() -> ColourImage {
        colour_jpeg(COLOUR_SIZE.0 / 4, COLOUR_SIZE.1 / 4, COLOUR_BUDGET_BYTES / 16, 3).expect("a quantiser step fits")
    }

    #[test]
    fn frames_with_colour_decode_validate_and_map_the_jpeg_onto_the_depth_camera() {
        let colour = small_colour();
        assert!(colour.jpeg.len() <= COLOUR_BUDGET_BYTES / 16, "{} B", colour.jpeg.len());
        for (i, f) in ring(2, Encoding::U16Zstd, true, 7).into_iter().enumerate() {
            let mut f = with_colour(f, &colour.jpeg);
            f.seq = i as u64 + 1;
            f.captured_at_us = 1_000 + i as u64;
            let bytes = encode_client(&ClientMsg::Frame(Box::new(f)));
            let Ok(ClientMsg::Frame(d)) = decode_client(&bytes) else { panic!("frame {i} does not decode") };
            d.validate().unwrap_or_else(|e| panic!("frame {i}: {e}"));
            assert_eq!(d.colour_jpeg.as_deref(), Some(&colour.jpeg[..]));
            let cam = d.colour_camera().expect("the JPEG's size is readable");
            assert_eq!((cam.width, cam.height), (u32::from(colour.width), u32::from(colour.height)));
            assert_eq!(cam.pose, d.pose, "no jpose: the depth camera's pose");
            let scale = f32::from(colour.width) / 256.0;
            assert!((cam.intrinsics[0] - d.intrinsics[0] * scale).abs() < 1e-3, "{:?}", cam.intrinsics);
        }
    }

    #[test]
    fn the_colour_image_decodes_as_a_wound_on_skin() {
        let colour = small_colour();
        let img = coherency_report::photo::decode_rgb_at_most(&colour.jpeg, usize::from(colour.width))
            .expect("the JPEG decodes");
        assert_eq!((img.width, img.height), (usize::from(colour.width), usize::from(colour.height)));
        let mean = |x0: usize, y0: usize, n: usize| {
            let mut s = [0f64; 3];
            for y in y0..y0 + n {
                for x in x0..x0 + n {
                    let p = &img.data[(y * img.width + x) * 3..][..3];
                    for c in 0..3 {
                        s[c] += f64::from(p[c]) / (n * n) as f64;
                    }
                }
            }
            s
        };
        let (w, h) = (img.width, img.height);
        let centre = mean(w / 2 - 8, h / 2 - 8, 16);
        let corner = mean(w - 40, h - 40, 16);
        let (granulation, slough, eschar) =
            (centre[0] > 1.6 * centre[1], centre[2] < 0.6 * centre[1], centre.iter().all(|&c| c < 90.0));
        assert!(granulation || slough || eschar, "the centre is wound bed, not skin: {centre:?}");
        assert!(corner[0] > corner[1] && corner[1] > corner[2], "skin tones at the corner: {corner:?}");
        assert!(corner[1] > 0.6 * corner[0], "the corner is not the bed: {corner:?}");
    }

    #[test]
    fn colour_raises_the_mean_message_by_its_share_of_a_jpeg() {
        let r = ring(2, Encoding::U16Zstd, false, 1);
        let colour = small_colour();
        let base = mean_message_bytes(&r);
        assert_eq!(mean_message_bytes_with_colour(&r, None, 30), base);
        assert_eq!(mean_message_bytes_with_colour(&r, Some(&colour.jpeg), 0), base);
        let every = mean_message_bytes_with_colour(&r, Some(&colour.jpeg), 1);
        let thirtieth = mean_message_bytes_with_colour(&r, Some(&colour.jpeg), 30);
        assert!(every >= base + colour.jpeg.len() as u64 && every < base + colour.jpeg.len() as u64 + 16);
        assert_eq!(thirtieth, base + (every - base) / 30);
    }
}
