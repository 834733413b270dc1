//! A demo scan made in process, for `coherency seed-demo`: a phantom wound rendered with
//! colour frames (a red granulating bed with a yellow slough patch on skin), encoded as a
//! phone would send it, and reconstructed by the finish step's own code ([`super::finish`])
//! — mesh, automatic measurement, vertex colours, tissue composition — so the demo clinic
//! shows a coloured mesh and its tissue without a phone streaming.

use bytes::Bytes;
use coherency_protocol::scan::{encode_client, ClientMsg};
use coherency_recon::measure::point_in_polygon;
use coherency_recon::phantom::{presets, Phantom, ScanConfig};
use coherency_recon::Frame;
use coherency_report::jpeg_encode::encode_rgb;

use super::ports::{TissueOutcome, WoundFigures};

/// The colour image is the depth camera's at this many times its size (the frame convention's
/// default: no `jk`, no `jpose`).
const COLOUR_SCALE: u32 = 2;
/// A colour frame every this many frames (about one per 0.2 s at 30 fps).
const COLOUR_EVERY: usize = 6;
const GRANULATION: [u8; 3] = [172, 38, 44];
const SLOUGH: [u8; 3] = [214, 190, 96];
const SKIN: [u8; 3] = [206, 158, 128];

/// A demo scan's stored results.
pub struct DemoScan {
    /// The mesh as PLY.
    pub ply: Vec<u8>,
    /// The mesh as GLB, with `COLOR_0`.
    pub glb: Vec<u8>,
    /// The automatic measurement, if the wound was found.
    pub figures: Option<WoundFigures>,
    /// Its tissue composition (or why there is none).
    pub tissue: TissueOutcome,
}

/// Frame `f`'s colour JPEG: the bed inside the phantom's outline, slough over a third of it
/// (the sector facing the image's right), skin outside, with a little texture.
fn colour_jpeg(phantom: &Phantom, f: &Frame) -> Option<Vec<u8>> {
    let (w, h) = (f.intrinsics.width * COLOUR_SCALE, f.intrinsics.height * COLOUR_SCALE);
    let k = f.intrinsics.scaled(w, h);
    let outline = phantom.outline_in_image(&k, &f.pose, 96);
    let n = outline.len().max(1) as f64;
    let centre = outline.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for v in 0..h {
        for u in 0..w {
            let (x, y) = (f64::from(u), f64::from(v));
            let base = if !point_in_polygon([x, y], &outline) {
                SKIN
            } else if x - centre[0] > 0.35 * (y - centre[1]).abs() + 4.0 {
                SLOUGH
            } else {
                GRANULATION
            };
            let noise = ((u.wrapping_mul(7919) ^ v.wrapping_mul(104_729)) % 15) as i32 - 7;
            rgb.extend(base.map(|c| (i32::from(c) + noise).clamp(0, 255) as u8));
        }
    }
    encode_rgb(&rgb, u16::try_from(w).ok()?, u16::try_from(h).ok()?, 2)
}

/// Renders and reconstructs the demo scan (a few seconds of CPU).
pub fn demo_scan() -> Result<DemoScan, String> {
    let phantom = Phantom::new(presets::spherical_cap(false));
    let rendered = phantom.scan(&ScanConfig::iphone(11));
    let mut raw = Vec::with_capacity(rendered.frames.len());
    let mut frames = Vec::with_capacity(rendered.frames.len());
    for (i, f) in rendered.frames.iter().enumerate() {
        let seq = i as u64 + 1;
        let mut wire = super::to_wire_frame(seq, 1_764_000_000_000_000 + seq * 33_333, f);
        if i % COLOUR_EVERY == 0 {
            wire.colour_jpeg = colour_jpeg(&phantom, f).map(Bytes::from);
        }
        raw.push((seq, Bytes::from(encode_client(&ClientMsg::Frame(Box::new(wire))))));
        frames.push((seq, f.clone()));
    }
    super::finish::reconstruct_in_process(&frames, &raw)
}
