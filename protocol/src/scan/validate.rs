//! Frame checks: geometry, camera model, pose and bounded plane decompression. Cheap checks
//! run first; decompression runs last and never writes more than the plane's exact size.

use std::cell::RefCell;

use bytes::Bytes;

use super::codec::DecodeError;
use super::plane::Compression;
use super::DepthFrame;
use crate::limits::{MAX_HEIGHT, MAX_JPEG_BYTES, MAX_WIDTH};

/// Largest deviation of a pose's rotation block from orthonormal (`|R·Rᵀ − I|`, any entry)
/// that is still accepted. Rotations from ARKit/ARCore are orthonormal to ~1e-6; a scaled
/// or sheared matrix is far outside this.
pub const ROTATION_TOLERANCE: f32 = 1e-2;

/// Largest accepted skew `s` of the intrinsics, as a fraction of `fx`. Fusion casts
/// separable rays (x from `u`, y from `v`), so skew cannot be honoured: `s` MUST be 0, and
/// a value this small (float noise from a scaled or converted matrix: 1e-3·fx moves a pixel
/// at the image edge by well under a tenth of a pixel on a 256-wide image) is accepted and
/// ignored; anything larger is an `invalid_frame` rather than a silently wrong geometry.
pub const SKEW_TOLERANCE: f32 = 1e-3;

fn invalid(seq: u64, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidFrame { seq, reason: reason.into() }
}

/// Checks a frame and returns its decompressed depth and confidence planes.
pub(crate) fn check_frame(f: &DepthFrame) -> Result<(Bytes, Option<Bytes>), DecodeError> {
    let seq = f.seq;
    if seq == 0 {
        return Err(invalid(seq, "seq starts at 1"));
    }
    if f.width == 0 || f.height == 0 {
        return Err(invalid(seq, "width and height must be at least 1"));
    }
    if f.width > MAX_WIDTH {
        return Err(DecodeError::TooLarge {
            seq: Some(seq),
            what: "width",
            size: f.width.into(),
            max: MAX_WIDTH.into(),
        });
    }
    if f.height > MAX_HEIGHT {
        return Err(DecodeError::TooLarge {
            seq: Some(seq),
            what: "height",
            size: f.height.into(),
            max: MAX_HEIGHT.into(),
        });
    }
    if let Some(jpeg) = &f.colour_jpeg {
        if jpeg.len() > MAX_JPEG_BYTES {
            return Err(DecodeError::TooLarge {
                seq: Some(seq),
                what: "jpeg bytes",
                size: jpeg.len() as u64,
                max: MAX_JPEG_BYTES as u64,
            });
        }
        if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Err(invalid(seq, "jpeg does not start with a JPEG SOI marker (FF D8 FF)"));
        }
    }
    check_intrinsics(seq, &f.intrinsics, f.width, f.height, &DEPTH_K)?;
    check_pose(seq, &f.pose, "pose")?;
    check_colour_camera(f)?;

    let pixels = f.pixel_count();
    let depth =
        unpack(seq, "depth", f.depth.compression(), f.depth.data(), pixels * f.depth.format().bytes_per_sample())?;
    let confidence = match &f.confidence {
        None => None,
        Some(c) => {
            if c.max() == 0 {
                return Err(invalid(seq, "confidence max must be at least 1"));
            }
            let raw = unpack(seq, "confidence", c.compression(), c.data(), pixels)?;
            if let Some(i) = raw.iter().position(|&v| v > c.max()) {
                return Err(invalid(seq, format!("confidence pixel {i} is {}, above max {}", raw[i], c.max())));
            }
            Some(raw)
        }
    };
    Ok((depth, confidence))
}

/// How the intrinsics of one image are named in refusals.
struct IntrinsicsOf {
    /// The key and what it is, leading each message (`"intrinsics"`, `"jk (colour intrinsics)"`).
    key: &'static str,
    /// The image they must be in pixels of.
    image: &'static str,
}

const DEPTH_K: IntrinsicsOf = IntrinsicsOf { key: "intrinsics", image: "depth image" };
const COLOUR_K: IntrinsicsOf = IntrinsicsOf { key: "jk (colour intrinsics)", image: "JPEG (its SOF header's size)" };

fn check_intrinsics(seq: u64, k: &[f32; 9], width: u32, height: u32, of: &IntrinsicsOf) -> Result<(), DecodeError> {
    let key = of.key;
    if k.iter().any(|v| !v.is_finite()) {
        return Err(invalid(seq, format!("{key} contain NaN or infinity")));
    }
    if k[3] != 0.0 || k[6] != 0.0 || k[7] != 0.0 || k[8] != 1.0 {
        return Err(invalid(seq, format!("{key} must be row-major [fx, s, cx, 0, fy, cy, 0, 0, 1]")));
    }
    if k[0] <= 0.0 || k[4] <= 0.0 {
        return Err(invalid(seq, format!("{key}: focal lengths fx and fy must be positive")));
    }
    if k[1].abs() > SKEW_TOLERANCE * k[0] {
        return Err(invalid(seq, format!("{key} skew s must be 0 (at most 1e-3·fx is accepted and ignored)")));
    }
    let (cx, cy) = (k[2], k[5]);
    if !(0.0..=width as f32).contains(&cx) || !(0.0..=height as f32).contains(&cy) {
        let image = of.image;
        return Err(invalid(
            seq,
            format!(
                "{key}: principal point lies outside the {image}, {width}×{height}: they must be \
                 scaled to that size"
            ),
        ));
    }
    Ok(())
}

/// `"jk"` and `"jpose"`: only with a `"jpeg"`; `"jk"` checked like `"k"` against the JPEG's
/// own size (read from its SOF header), `"jpose"` like `"pose"`.
fn check_colour_camera(f: &DepthFrame) -> Result<(), DecodeError> {
    let seq = f.seq;
    if f.colour_intrinsics.is_none() && f.colour_pose.is_none() {
        return Ok(());
    }
    let Some(jpeg) = &f.colour_jpeg else {
        return Err(invalid(seq, "jk and jpose describe the colour image: they are only allowed with a jpeg"));
    };
    if let Some(k) = &f.colour_intrinsics {
        let Some((w, h)) = jpeg_dimensions(jpeg) else {
            return Err(invalid(
                seq,
                "jk needs the JPEG's size, but the jpeg has no readable SOF header before its image data",
            ));
        };
        check_intrinsics(seq, k, w, h, &COLOUR_K)?;
    }
    if let Some(m) = &f.colour_pose {
        check_pose(seq, m, "jpose (colour pose)")?;
    }
    Ok(())
}

/// A JPEG's width and height from its frame header (SOF0…SOF15, not DHT/JPG/DAC), walking
/// the marker segments from SOI; `None` when the bytes end, break the segment structure,
/// reach the image data or end-of-image before a frame header, or declare a zero size.
/// Reads only segment headers: cost bounded by the number of segments, no decoding.
pub fn jpeg_dimensions(jpeg: &[u8]) -> Option<(u32, u32)> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2usize;
    loop {
        if *jpeg.get(i)? != 0xFF {
            return None;
        }
        while jpeg.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *jpeg.get(i)?;
        i += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 | 0xD9 | 0xDA | 0x00 => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*jpeg.get(i)?, *jpeg.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            // length (2), precision (1), height (2), width (2)
            let body = jpeg.get(i + 2..i + 7)?;
            let height = u32::from(u16::from_be_bytes([body[1], body[2]]));
            let width = u32::from(u16::from_be_bytes([body[3], body[4]]));
            return (width > 0 && height > 0).then_some((width, height));
        }
        i = i.checked_add(len)?;
    }
}

fn check_pose(seq: u64, m: &[f32; 16], key: &str) -> Result<(), DecodeError> {
    if m.iter().any(|v| !v.is_finite()) {
        return Err(invalid(seq, format!("{key} contains NaN or infinity")));
    }
    if m[12] != 0.0 || m[13] != 0.0 || m[14] != 0.0 || m[15] != 1.0 {
        return Err(invalid(seq, format!("{key} must be row-major with bottom row [0, 0, 0, 1]")));
    }
    let r = |i: usize, j: usize| m[i * 4 + j];
    for i in 0..3 {
        for j in 0..3 {
            let dot: f32 = (0..3).map(|c| r(i, c) * r(j, c)).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            if (dot - want).abs() > ROTATION_TOLERANCE {
                return Err(invalid(seq, format!("{key} rotation is not orthonormal (scaled or sheared matrix)")));
            }
        }
    }
    let det = r(0, 0) * (r(1, 1) * r(2, 2) - r(1, 2) * r(2, 1)) - r(0, 1) * (r(1, 0) * r(2, 2) - r(1, 2) * r(2, 0))
        + r(0, 2) * (r(1, 0) * r(2, 1) - r(1, 1) * r(2, 0));
    if det <= 0.0 {
        return Err(invalid(seq, format!("{key} rotation is a reflection (determinant < 0)")));
    }
    Ok(())
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Returns exactly `expected` decompressed bytes or an error; never allocates more than
/// `expected` for the output.
pub(crate) fn unpack(
    seq: u64,
    what: &str,
    compression: Compression,
    data: &Bytes,
    expected: usize,
) -> Result<Bytes, DecodeError> {
    match compression {
        Compression::None => {
            if data.len() != expected {
                return Err(invalid(
                    seq,
                    format!("{what} plane is {} bytes, expected {expected} (w × h × bytes per sample)", data.len()),
                ));
            }
            Ok(data.clone())
        }
        Compression::Zstd => {
            match zstd::zstd_safe::get_frame_content_size(data) {
                Ok(Some(declared)) if declared > expected as u64 => {
                    return Err(invalid(
                        seq,
                        format!(
                            "{what} plane declares {declared} decompressed bytes, expected \
                             {expected}"
                        ),
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(invalid(seq, format!("{what} plane is not zstd data")));
                }
            }
            let mut out = Vec::with_capacity(expected);
            let result = DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                match slot.as_mut() {
                    Some(d) => d.decompress_to_buffer(data.as_ref(), &mut out),
                    None => Err(std::io::Error::other("no zstd decompressor")),
                }
            });
            match result {
                Ok(n) if n == expected => Ok(Bytes::from(out)),
                Ok(n) => Err(invalid(seq, format!("{what} plane decompresses to {n} bytes, expected {expected}"))),
                Err(e) => Err(invalid(seq, format!("{what} plane does not decompress to {expected} bytes: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(fx: f32, s: f32) -> [f32; 9] {
        [fx, s, 128.0, 0.0, fx, 96.0, 0.0, 0.0, 1.0]
    }

    #[test]
    fn skew_up_to_a_thousandth_of_fx_is_accepted_and_more_is_an_invalid_frame() {
        for (fx, s) in [(212.0, 0.0), (212.0, 0.212), (212.0, -0.212), (1500.0, 1.4)] {
            assert!(check_intrinsics(7, &k(fx, s), 256, 192, &DEPTH_K).is_ok(), "fx {fx}, s {s}");
        }
        for (fx, s) in [(212.0, 0.22), (212.0, -0.3), (212.0, 5.0), (1.0, 0.01)] {
            let err = check_intrinsics(7, &k(fx, s), 256, 192, &DEPTH_K).expect_err("refused");
            assert!(
                matches!(&err, DecodeError::InvalidFrame { seq: 7, reason } if reason.contains("skew")),
                "fx {fx}, s {s}: {err}"
            );
        }
    }
}
