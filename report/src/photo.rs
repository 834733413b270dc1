//! Wound photos from a scan's colour frames: how good one frame is as a photo ([`score`]),
//! which frames of a scan to keep ([`select`]), and the JPEG as served, with its metadata
//! removed ([`strip_metadata`]). Bytes in, numbers and bytes out: the server reads the
//! frames and stores the choice. The method is documented in `docs/measurement.md`
//! ("Wound photos").

use std::io::Cursor;

use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// At most this many photos per scan.
pub const MAX_PHOTOS: usize = 4;
/// The luma is scored on a copy whose long side is at most this many pixels (box-averaged),
/// so a 12-megapixel frame and a 640 × 480 one are judged at a similar scale and the cost is
/// bounded.
pub const SCORE_LONG_SIDE: usize = 320;
/// Largest width or height decoded (the phone's colour camera is well below it).
pub const MAX_DECODE_SIDE: usize = 8192;
/// A luma at or below this (or at or above `255 - CLIP`) counts as clipped.
const CLIP: u8 = 4;
/// Frames whose exposure score is below this are only chosen when no frame reaches it.
pub const MIN_EXPOSURE: f64 = 0.35;

/// Exif tag 0x0112, Orientation.
const ORIENTATION_TAG: u16 = 0x0112;

/// The Exif orientation (2…8) an APP1 body carries, if any other than 1 (upright) and well
/// formed: IFD0's Orientation entry, type SHORT, count 1.
fn exif_orientation(body: &[u8]) -> Option<u16> {
    let tiff = body.strip_prefix(b"Exif\0\0")?;
    let big = match tiff.get(..4)? {
        b"MM\0\x2a" => true,
        b"II\x2a\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries.min(512))
        .find_map(|e| {
            let at = ifd + 2 + 12 * e;
            (u16_at(at)? == ORIENTATION_TAG && u16_at(at + 2)? == 3 && u32_at(at + 4)? == 1)
                .then(|| u16_at(at + 8))
                .flatten()
        })
        .filter(|o| (2..=8).contains(o))
}

/// An APP1 segment whose Exif holds only the orientation: a big-endian TIFF header and an
/// IFD0 of one entry.
fn orientation_only(orientation: u16) -> Vec<u8> {
    let mut seg = vec![0xFF, 0xE1, 0, 34];
    seg.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01");
    seg.extend_from_slice(&ORIENTATION_TAG.to_be_bytes());
    seg.extend_from_slice(&[0, 3, 0, 0, 0, 1]);
    seg.extend_from_slice(&orientation.to_be_bytes());
    seg.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    debug_assert_eq!(seg.len(), 36);
    seg
}

/// Why a JPEG could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhotoError {
    /// The bytes are not a JPEG this code can walk or decode (names what, never the data).
    #[error("malformed JPEG: {0}")]
    Malformed(String),
}

fn malformed(what: &str) -> PhotoError {
    PhotoError::Malformed(what.to_owned())
}

/// How good one colour frame is as a photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoScore {
    /// Pixel size of the JPEG.
    pub width: u32,
    pub height: u32,
    /// Variance of the 4-neighbour Laplacian of the luma, on the copy at most
    /// [`SCORE_LONG_SIDE`] pixels long (grey levels²): higher is sharper; a blurred frame
    /// scores a fraction of a sharp one of the same scene.
    pub sharpness: f64,
    /// 0..=1: 1 when the mean luma is mid-grey and no pixel is clipped; falls linearly with
    /// the mean's distance from 128 and with the share of clipped (near-black or
    /// near-white) pixels.
    pub exposure: f64,
}

/// Decodes a JPEG's luma: (width, height, pixels).
pub fn decode_luma(jpeg: &[u8]) -> Result<(usize, usize, Vec<u8>), PhotoError> {
    let options = DecoderOptions::default()
        .set_max_width(MAX_DECODE_SIDE)
        .set_max_height(MAX_DECODE_SIDE)
        .jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = JpegDecoder::new_with_options(Cursor::new(jpeg), options);
    let pixels = decoder.decode().map_err(|e| PhotoError::Malformed(e.to_string().to_ascii_lowercase()))?;
    let (w, h) = decoder.dimensions().ok_or_else(|| malformed("no frame header"))?;
    if w == 0 || h == 0 || pixels.len() < w * h {
        return Err(malformed("image smaller than its header says"));
    }
    Ok((w, h, pixels))
}

/// A colour frame decoded to 8-bit sRGB and box-averaged down by an integer factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallRgb {
    /// Size after the reduction.
    pub width: usize,
    pub height: usize,
    /// The JPEG's own size.
    pub full_width: usize,
    pub full_height: usize,
    /// Each output pixel averages `factor × factor` pixels of the JPEG (1: full size); a
    /// pinhole camera of the JPEG maps to this image by `f' = f / factor`,
    /// `c' = (c + 0.5) / factor − 0.5` (pixel centres at integers).
    pub factor: usize,
    /// `width · height · 3` bytes, R G B, rows top first.
    pub data: Vec<u8>,
}

/// Decodes a JPEG to sRGB with its long side at most `long_side` pixels: the smallest
/// integer box factor that fits (averaging in the sRGB bytes, as a camera's own downscaler
/// does). The full-size RGB exists only during the call.
pub fn decode_rgb_at_most(jpeg: &[u8], long_side: usize) -> Result<SmallRgb, PhotoError> {
    let options = DecoderOptions::default()
        .set_max_width(MAX_DECODE_SIDE)
        .set_max_height(MAX_DECODE_SIDE)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(Cursor::new(jpeg), options);
    let px = decoder.decode().map_err(|e| PhotoError::Malformed(e.to_string().to_ascii_lowercase()))?;
    let (w, h) = decoder.dimensions().ok_or_else(|| malformed("no frame header"))?;
    if w == 0 || h == 0 || px.len() < w * h * 3 {
        return Err(malformed("image smaller than its header says"));
    }
    let f = w.max(h).div_ceil(long_side.max(1)).max(1);
    let (dw, dh) = (w / f, h / f);
    if f == 1 || dw == 0 || dh == 0 {
        let mut data = px;
        data.truncate(w * h * 3);
        return Ok(SmallRgb { width: w, height: h, full_width: w, full_height: h, factor: 1, data });
    }
    let mut data = vec![0u8; dw * dh * 3];
    let area = (f * f) as u32;
    for y in 0..dh {
        for x in 0..dw {
            let mut s = [0u32; 3];
            for yy in y * f..(y + 1) * f {
                for xx in x * f..(x + 1) * f {
                    let i = (yy * w + xx) * 3;
                    s[0] += u32::from(px[i]);
                    s[1] += u32::from(px[i + 1]);
                    s[2] += u32::from(px[i + 2]);
                }
            }
            let o = (y * dw + x) * 3;
            for c in 0..3 {
                data[o + c] = ((s[c] + area / 2) / area) as u8;
            }
        }
    }
    Ok(SmallRgb { width: dw, height: dh, full_width: w, full_height: h, factor: f, data })
}

/// Box-averages the luma down so its long side is at most [`SCORE_LONG_SIDE`].
fn downscale(w: usize, h: usize, px: &[u8]) -> (usize, usize, Vec<f64>) {
    let f = w.max(h).div_ceil(SCORE_LONG_SIDE).max(1);
    let (dw, dh) = (w / f, h / f);
    if dw == 0 || dh == 0 {
        return (w, h, px.iter().map(|&v| f64::from(v)).collect());
    }
    let mut out = vec![0f64; dw * dh];
    let area = (f * f) as f64;
    for y in 0..dh {
        for x in 0..dw {
            let mut s = 0u32;
            for yy in y * f..(y + 1) * f {
                for xx in x * f..(x + 1) * f {
                    s += u32::from(px[yy * w + xx]);
                }
            }
            out[y * dw + x] = f64::from(s) / area;
        }
    }
    (dw, dh, out)
}

/// Scores one colour frame (decodes it; a frame that does not decode is an error).
pub fn score(jpeg: &[u8]) -> Result<PhotoScore, PhotoError> {
    let (w, h, px) = decode_luma(jpeg)?;
    let (dw, dh, small) = downscale(w, h, &px);
    let mut sum = 0f64;
    let mut sum2 = 0f64;
    let mut n = 0f64;
    for y in 1..dh.saturating_sub(1) {
        for x in 1..dw.saturating_sub(1) {
            let i = y * dw + x;
            let lap = small[i - 1] + small[i + 1] + small[i - dw] + small[i + dw] - 4.0 * small[i];
            sum += lap;
            sum2 += lap * lap;
            n += 1.0;
        }
    }
    let sharpness = if n > 0.0 { (sum2 / n - (sum / n).powi(2)).max(0.0) } else { 0.0 };
    let total = px.len().min(w * h) as f64;
    let mean = px[..w * h].iter().map(|&v| f64::from(v)).sum::<f64>() / total;
    let clipped = px[..w * h].iter().filter(|&&v| v <= CLIP || v >= 255 - CLIP).count() as f64 / total;
    let exposure = ((1.0 - (mean - 128.0).abs() / 128.0) * (1.0 - clipped)).clamp(0.0, 1.0);
    Ok(PhotoScore {
        width: u32::try_from(w).unwrap_or(u32::MAX),
        height: u32::try_from(h).unwrap_or(u32::MAX),
        sharpness,
        exposure,
    })
}

/// One scored colour frame of a scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub seq: u64,
    pub score: PhotoScore,
}

/// The smallest seq distance between two chosen photos for a scan whose colour frames span
/// `first..=last`: an eighth of the span (so the [`MAX_PHOTOS`] photos come from different
/// moments of the sweep), at least 1.
pub fn min_seq_gap(first: u64, last: u64) -> u64 {
    min_seq_gap_for(first, last, MAX_PHOTOS)
}

/// A scan's photos among `candidates` (in seq order): [`select`] with the [`min_seq_gap`] of
/// their own span.
pub fn select_photos(candidates: &[Candidate]) -> Vec<Candidate> {
    let gap = match (candidates.first(), candidates.last()) {
        (Some(a), Some(b)) => min_seq_gap(a.seq, b.seq),
        _ => 1,
    };
    select(candidates, gap)
}

/// [`min_seq_gap`] for choosing up to `count` frames: the span over `2 · count`, at least 1.
pub fn min_seq_gap_for(first: u64, last: u64, count: usize) -> u64 {
    (last.saturating_sub(first) / (2 * count.max(1) as u64)).max(1)
}

/// Chooses up to [`MAX_PHOTOS`] frames: each frame's quality is its sharpness relative to
/// the sharpest candidate times its exposure; frames with exposure below [`MIN_EXPOSURE`]
/// come after every frame that reaches it; frames are taken best first, skipping one closer
/// than `min_gap` seqs to a frame already taken. Returns the chosen candidates in seq order.
/// Ties go to the earlier seq, so the choice is deterministic.
pub fn select(candidates: &[Candidate], min_gap: u64) -> Vec<Candidate> {
    select_up_to(candidates, min_gap, MAX_PHOTOS)
}

/// [`select`] choosing up to `max` frames (the colour views of a scan's mesh take more
/// than its photos).
pub fn select_up_to(candidates: &[Candidate], min_gap: u64, max: usize) -> Vec<Candidate> {
    let top = candidates.iter().map(|c| c.score.sharpness).fold(0.0, f64::max);
    let quality = |c: &Candidate| {
        let sharp = if top > 0.0 { c.score.sharpness / top } else { 0.0 };
        let usable = c.score.exposure >= MIN_EXPOSURE;
        (usable, sharp * c.score.exposure)
    };
    let mut ranked: Vec<&Candidate> = candidates.iter().collect();
    ranked.sort_by(|a, b| {
        let (qa, qb) = (quality(a), quality(b));
        qb.0.cmp(&qa.0).then(qb.1.total_cmp(&qa.1)).then(a.seq.cmp(&b.seq))
    });
    let mut chosen: Vec<Candidate> = Vec::with_capacity(max);
    for c in ranked {
        if chosen.len() == max {
            break;
        }
        if chosen.iter().all(|p| p.seq.abs_diff(c.seq) >= min_gap) {
            chosen.push(*c);
        }
    }
    chosen.sort_by_key(|c| c.seq);
    chosen
}

/// The JPEG with only what decoding needs: SOI, APP0 `JFIF`, APP2 `ICC_PROFILE`, APP14
/// `Adobe`, DQT, SOFn, DHT, DAC, DRI, DNL, each SOS with its entropy-coded data, EOI.
/// Everything else goes: APP1 (Exif with its GPS tags, XMP), every other APPn, COM, and
/// anything after EOI — except an Exif orientation other than "upright", which a viewer
/// needs to show the photo the right way up: it is kept as a new Exif segment holding that
/// one tag and nothing else. Lossless: the kept bytes are copied unchanged, so the picture
/// decodes to the same pixels.
pub fn strip_metadata(jpeg: &[u8]) -> Result<Vec<u8>, PhotoError> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(malformed("no start-of-image marker"));
    }
    let mut out = Vec::with_capacity(jpeg.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    let mut i = 2;
    let mut seen_sos = false;
    loop {
        if jpeg.get(i) != Some(&0xFF) {
            return Err(malformed("expected a marker"));
        }
        while jpeg.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *jpeg.get(i).ok_or_else(|| malformed("truncated before end-of-image"))?;
        i += 1;
        match marker {
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                if !seen_sos {
                    return Err(malformed("no image data"));
                }
                return Ok(out);
            }
            0x00 | 0xD8 => return Err(malformed("unexpected marker")),
            0x01 | 0xD0..=0xD7 => out.extend_from_slice(&[0xFF, marker]),
            _ => {
                let len = jpeg
                    .get(i..i + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or_else(|| malformed("truncated segment length"))?;
                if len < 2 {
                    return Err(malformed("segment length below 2"));
                }
                let body = jpeg.get(i + 2..i + len).ok_or_else(|| malformed("segment runs past the end"))?;
                let keep = match marker {
                    0xE0 => body.starts_with(b"JFIF\0"),
                    0xE2 => body.starts_with(b"ICC_PROFILE\0"),
                    0xEE => body.starts_with(b"Adobe"),
                    0xC0..=0xCF | 0xDA | 0xDB | 0xDC | 0xDD => true,
                    _ => false,
                };
                if keep {
                    out.extend_from_slice(&[0xFF, marker]);
                    out.extend_from_slice(&jpeg[i..i + len]);
                } else if let Some(o) = (marker == 0xE1).then(|| exif_orientation(body)).flatten() {
                    out.extend_from_slice(&orientation_only(o));
                }
                i += len;
                if marker == 0xDA {
                    seen_sos = true;
                    let start = i;
                    // Entropy-coded data runs to the next marker that is neither a stuffed
                    // zero nor a restart marker.
                    loop {
                        let at = jpeg.get(i..i + 2).ok_or_else(|| malformed("truncated image data"))?;
                        if is_marker(at) {
                            break;
                        }
                        i += 1;
                    }
                    out.extend_from_slice(&jpeg[start..i]);
                }
            }
        }
    }
}

/// Inside entropy-coded data: `FF` then a byte that is neither a stuffed zero nor a restart
/// marker starts the next marker (an `FF FF` is fill before it).
fn is_marker(at: &[u8]) -> bool {
    at[0] == 0xFF && at[1] != 0x00 && !(0xD0..=0xD7).contains(&at[1])
}

/// The markers of a JPEG up to EOI, in order (for checks and tests): each marker byte after
/// `FF`, and the first bytes of its segment body.
pub fn markers(jpeg: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, PhotoError> {
    let mut out = Vec::new();
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(malformed("no start-of-image marker"));
    }
    out.push((0xD8, Vec::new()));
    let mut i = 2;
    while i < jpeg.len() {
        if jpeg[i] != 0xFF {
            return Err(malformed("expected a marker"));
        }
        while jpeg.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *jpeg.get(i).ok_or_else(|| malformed("truncated"))?;
        i += 1;
        if marker == 0xD9 {
            out.push((marker, Vec::new()));
            return Ok(out);
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            out.push((marker, Vec::new()));
            continue;
        }
        let len = jpeg
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| malformed("truncated segment length"))?;
        let body = jpeg.get(i + 2..i + len.max(2)).ok_or_else(|| malformed("segment runs past the end"))?;
        out.push((marker, body.iter().take(16).copied().collect()));
        i += len.max(2);
        if marker == 0xDA {
            while let Some(at) = jpeg.get(i..i + 2) {
                if is_marker(at) {
                    break;
                }
                i += 1;
            }
        }
    }
    Err(malformed("truncated before end-of-image"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg_encode::{encode_luma, encode_rgb};

    const W: u16 = 96;
    const H: u16 = 64;

    /// A textured scene: fine stripes and blobs, values around mid-grey.
    fn scene(gain: f64, offset: f64) -> Vec<u8> {
        let mut px = Vec::with_capacity(usize::from(W) * usize::from(H));
        for y in 0..usize::from(H) {
            for x in 0..usize::from(W) {
                let stripes = if (x / 2 + y / 3) % 2 == 0 { 50.0 } else { -50.0 };
                let blob = 30.0 * ((x as f64 * 0.3).sin() * (y as f64 * 0.2).cos());
                px.push((offset + gain * (stripes + blob)).clamp(0.0, 255.0) as u8);
            }
        }
        px
    }

    fn blur(px: &[u8], radius: usize) -> Vec<u8> {
        let (w, h) = (usize::from(W), usize::from(H));
        let mut out = vec![0u8; px.len()];
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0u32, 0u32);
                for yy in y.saturating_sub(radius)..(y + radius + 1).min(h) {
                    for xx in x.saturating_sub(radius)..(x + radius + 1).min(w) {
                        s += u32::from(px[yy * w + xx]);
                        n += 1;
                    }
                }
                out[y * w + x] = (s / n) as u8;
            }
        }
        out
    }

    fn jpeg(px: &[u8]) -> Vec<u8> {
        encode_luma(px, W, H, 2).expect("encodes")
    }

    fn colour_jpeg() -> Vec<u8> {
        let luma = scene(1.0, 128.0);
        let rgb: Vec<u8> = luma.iter().flat_map(|&v| [v, v / 2 + 40, 255 - v]).collect();
        encode_rgb(&rgb, W, H, 2).expect("encodes")
    }

    /// An APP1 Exif segment with a GPS IFD pointer and a latitude, as a phone writes one.
    fn exif_segment() -> Vec<u8> {
        let mut body = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
        // IFD0: one entry, GPSInfo (0x8825) → offset 26.
        body.extend_from_slice(&[0, 1, 0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0]);
        // GPS IFD: GPSLatitudeRef 'N'.
        body.extend_from_slice(&[0, 1, 0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(b"GPS 51.5007N 0.1246W");
        let mut seg = vec![0xFF, 0xE1];
        seg.extend_from_slice(&u16::try_from(body.len() + 2).expect("small").to_be_bytes());
        seg.extend(body);
        seg
    }

    fn with_metadata(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        out.extend(exif_segment());
        out.extend_from_slice(&[0xFF, 0xE1, 0, 12]);
        out.extend_from_slice(b"http://x\0\0");
        out.extend_from_slice(&[0xFF, 0xFE, 0, 9]);
        out.extend_from_slice(b"comment");
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn a_blurred_frame_scores_far_less_sharp_than_the_same_scene_in_focus() {
        let sharp = score(&jpeg(&scene(1.0, 128.0))).expect("scores");
        let blurred = score(&jpeg(&blur(&scene(1.0, 128.0), 2))).expect("scores");
        assert_eq!((sharp.width, sharp.height), (u32::from(W), u32::from(H)));
        assert!(blurred.sharpness * 5.0 < sharp.sharpness, "{blurred:?} vs {sharp:?}");
    }

    #[test]
    fn a_dark_frame_scores_worse_exposure_than_a_well_exposed_one() {
        let good = score(&jpeg(&scene(1.0, 128.0))).expect("scores");
        let dark = score(&jpeg(&scene(0.3, 18.0))).expect("scores");
        let blown = score(&jpeg(&scene(1.0, 250.0))).expect("scores");
        assert!(good.exposure > 0.8, "{good:?}");
        assert!(dark.exposure < MIN_EXPOSURE, "{dark:?}");
        assert!(blown.exposure < MIN_EXPOSURE, "{blown:?}");
    }

    #[test]
    fn selection_prefers_sharp_well_exposed_frames_spread_over_the_scan() {
        let sharp = score(&jpeg(&scene(1.0, 128.0))).expect("scores");
        let blurred = score(&jpeg(&blur(&scene(1.0, 128.0), 2))).expect("scores");
        let dark = score(&jpeg(&scene(0.3, 18.0))).expect("scores");
        let mut candidates = Vec::new();
        for seq in 1..=40u64 {
            let s = match seq % 4 {
                0 => sharp,
                1 => blurred,
                2 => dark,
                _ => PhotoScore { sharpness: sharp.sharpness * 0.9, ..sharp },
            };
            candidates.push(Candidate { seq, score: s });
        }
        let gap = min_seq_gap(1, 40);
        assert_eq!(gap, 4);
        let chosen = select(&candidates, gap);
        assert_eq!(chosen.len(), MAX_PHOTOS);
        for c in &chosen {
            assert!(c.seq % 4 == 0 || c.seq % 4 == 3, "chose a blurred or dark frame: {c:?}");
        }
        for pair in chosen.windows(2) {
            assert!(pair[1].seq - pair[0].seq >= gap, "{chosen:?}");
        }
    }

    #[test]
    fn a_colour_frame_decodes_to_rgb_reduced_by_an_integer_factor() {
        let full = decode_rgb_at_most(&colour_jpeg(), 1000).expect("decodes");
        assert_eq!((full.width, full.height, full.factor), (usize::from(W), usize::from(H), 1));
        assert_eq!(full.data.len(), full.width * full.height * 3);
        let small = decode_rgb_at_most(&colour_jpeg(), 40).expect("decodes");
        // 96 × 64 with a long side of at most 40: factor 3, 32 × 21.
        assert_eq!((small.width, small.height, small.factor, small.full_width), (32, 21, 3, 96));
        assert_eq!(small.data.len(), 32 * 21 * 3);
        let mean = |d: &[u8], c: usize| d.chunks_exact(3).map(|p| f64::from(p[c])).sum::<f64>() / (d.len() / 3) as f64;
        for c in 0..3 {
            assert!((mean(&small.data, c) - mean(&full.data[..96 * 63 * 3], c)).abs() < 4.0, "channel {c}");
        }
        assert!(decode_rgb_at_most(b"not a jpeg", 640).is_err());
    }

    #[test]
    fn selecting_up_to_more_frames_keeps_the_rules() {
        let sharp = score(&jpeg(&scene(1.0, 128.0))).expect("scores");
        let c: Vec<Candidate> = (1..=60).map(|seq| Candidate { seq, score: sharp }).collect();
        let gap = min_seq_gap_for(1, 60, 12);
        assert_eq!(gap, 2);
        let chosen = select_up_to(&c, gap, 12);
        assert_eq!(chosen.len(), 12);
        assert!(chosen.windows(2).all(|p| p[1].seq - p[0].seq >= gap));
        assert_eq!(select(&c, min_seq_gap(1, 60)).len(), MAX_PHOTOS);
    }

    #[test]
    fn only_dark_frames_still_give_photos_and_none_gives_none() {
        let dark = score(&jpeg(&scene(0.3, 18.0))).expect("scores");
        let c: Vec<Candidate> = (1..=3).map(|seq| Candidate { seq, score: dark }).collect();
        assert_eq!(select(&c, 1).len(), 3);
        assert!(select(&[], 1).is_empty());
    }

    #[test]
    fn stripping_removes_exif_xmp_and_comments_and_keeps_the_pixels() {
        let plain = colour_jpeg();
        let tagged = with_metadata(&plain);
        let found = markers(&tagged).expect("walks");
        assert!(found.iter().any(|(m, _)| *m == 0xE1));
        assert!(found.iter().any(|(m, _)| *m == 0xFE));

        let stripped = strip_metadata(&tagged).expect("strips");
        let kept: Vec<u8> = markers(&stripped).expect("walks").into_iter().map(|(m, _)| m).collect();
        assert!(!kept.iter().any(|&m| m == 0xE1 || m == 0xFE || (0xE3..=0xED).contains(&m)), "{kept:x?}");
        assert!(kept.contains(&0xE0) && kept.contains(&0xDA) && kept.ends_with(&[0xD9]));
        assert!(!stripped.windows(4).any(|w| w == b"Exif" || w == b"GPS "));
        assert_eq!(stripped, plain, "the encoder's own segments all survive");
        assert_eq!(decode_luma(&stripped).expect("decodes"), decode_luma(&tagged).expect("decodes"));
        let rgb = |b: &[u8]| JpegDecoder::new(Cursor::new(b)).decode().expect("decodes");
        assert_eq!(rgb(&stripped), rgb(&tagged));
    }

    /// An APP1 Exif segment (little-endian, as iPhones write) with a make, the orientation
    /// and a GPS pointer in IFD0.
    fn exif_with_orientation(orientation: u16) -> Vec<u8> {
        let mut body = b"Exif\0\0II\x2a\0\x08\0\0\0".to_vec();
        body.extend_from_slice(&[3, 0]);
        body.extend_from_slice(&[0x0F, 0x01, 2, 0, 6, 0, 0, 0, 50, 0, 0, 0]); // Make → offset 50
        body.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&orientation.to_le_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 56, 0, 0, 0]); // GPSInfo → 56
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.extend_from_slice(b"Apple\0");
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut seg = vec![0xFF, 0xE1];
        seg.extend_from_slice(&u16::try_from(body.len() + 2).expect("small").to_be_bytes());
        seg.extend(body);
        seg
    }

    #[test]
    fn a_rotated_photo_keeps_its_orientation_and_nothing_else_of_its_exif() {
        let plain = colour_jpeg();
        for (orientation, kept) in [(6u16, true), (8, true), (3, true), (1, false), (9, false)] {
            let mut tagged = plain[..2].to_vec();
            tagged.extend(exif_with_orientation(orientation));
            tagged.extend_from_slice(&plain[2..]);
            assert_eq!(exif_orientation(&tagged[6..]), kept.then_some(orientation));
            let stripped = strip_metadata(&tagged).expect("strips");
            assert!(!stripped.windows(5).any(|w| w == b"Apple"), "{orientation}");
            assert_eq!(decode_luma(&stripped).expect("decodes"), decode_luma(&plain).expect("decodes"));
            let app1: Vec<(u8, Vec<u8>)> =
                markers(&stripped).expect("walks").into_iter().filter(|(m, _)| *m == 0xE1).collect();
            if kept {
                assert_eq!(app1.len(), 1, "{orientation}");
                let at = stripped.windows(6).position(|w| w == b"Exif\0\0").expect("an Exif segment");
                assert_eq!(exif_orientation(&stripped[at..]), Some(orientation));
                assert_eq!(u16::from_be_bytes([stripped[at - 2], stripped[at - 1]]), 34);
            } else {
                assert!(app1.is_empty(), "{orientation}: {app1:?}");
                assert_eq!(stripped, plain);
            }
        }
    }

    #[test]
    fn malformed_jpegs_are_errors_not_panics() {
        let good = colour_jpeg();
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0xFF],
            vec![0xFF, 0xD8],
            vec![0xFF, 0xD8, 0xFF],
            vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF],
            vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x01],
            vec![0xFF, 0xD8, 0x12, 0x34],
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            good[..good.len() / 2].to_vec(),
            b"not a jpeg at all".to_vec(),
        ];
        for c in &cases {
            assert!(strip_metadata(c).is_err(), "{c:x?}");
            let _ = score(c);
        }
        for c in &cases[..8] {
            assert!(score(c).is_err(), "{c:x?}");
        }
        // Every prefix of a good file: never a panic.
        for n in 0..good.len() {
            let _ = strip_metadata(&good[..n]);
            let _ = markers(&good[..n]);
        }
    }
}
