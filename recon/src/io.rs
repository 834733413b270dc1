//! A plain frame-dump format, readable from Python with nothing but numpy, so the same
//! frames can be fused by this crate and by other libraries (see
//! `recon/bench/open3d_compare.py`).
//!
//! A dump is a directory with:
//! - `scan.json`: `{"format": "coherency-frames", "version": 1, "intrinsics": {fx, fy,
//!   cx, cy, width, height}, "depth_scale": 1.0, "frames": [{"depth": "depth_0000.npy",
//!   "confidence": "conf_0000.npy" | null, "pose": [16 numbers, row-major
//!   world-from-camera, OpenCV camera axes]}], "target": [x, y, z] | null,
//!   "truth": {...} | null}`;
//! - one `.npy` per depth map (`<f4`, shape `(height, width)`, metres) and per
//!   confidence map (`|u1`, same shape).

use std::path::Path;

use serde_json::{json, Value};

use crate::geometry::{DepthImage, Frame, Intrinsics, Pose, Vec3};
use crate::phantom::GroundTruth;
use crate::ReconError;

/// Encodes a 2-D array as a `.npy` (format 1.0). `descr` is the numpy dtype string.
pub fn encode_npy(descr: &str, shape: (usize, usize), data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}", shape.0, shape.1);
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A decoded `.npy`: dtype string, `(rows, columns)` and the raw little-endian data.
pub type Npy<'a> = (String, (usize, usize), &'a [u8]);

/// Decodes a 2-D `.npy`: returns the dtype string, the shape and the raw data.
pub fn decode_npy(bytes: &[u8]) -> Result<Npy<'_>, ReconError> {
    let bad = |m: &str| ReconError::Format(format!("npy: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unsupported version")),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("fortran order not supported"));
    }
    let descr =
        header.split("'descr':").nth(1).and_then(|s| s.split('\'').nth(1)).ok_or_else(|| bad("no descr"))?.to_string();
    let shape_txt = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape_txt
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("bad shape"))?;
    let shape = match dims.as_slice() {
        [h, w] => (*h, *w),
        _ => return Err(bad("expected a 2-D array")),
    };
    Ok((descr, shape, &bytes[start + hlen..]))
}

fn depth_npy(d: &DepthImage) -> Vec<u8> {
    let mut raw = Vec::with_capacity(d.depth.len() * 4);
    d.depth.iter().for_each(|v| raw.extend_from_slice(&v.to_le_bytes()));
    encode_npy("<f4", (d.height as usize, d.width as usize), &raw)
}

/// Writes frames (and optionally the wound target and ground truth) as a dump directory.
pub fn write_dump(
    dir: &Path,
    frames: &[Frame],
    target: Option<Vec3>,
    truth: Option<&GroundTruth>,
) -> Result<(), ReconError> {
    std::fs::create_dir_all(dir)?;
    let Some(first) = frames.first() else {
        return Err(ReconError::NotEnoughData("no frames to write".into()));
    };
    let k = first.intrinsics;
    let mut entries = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        f.validate()?;
        let name = format!("depth_{i:04}.npy");
        std::fs::write(dir.join(&name), depth_npy(&f.depth))?;
        let conf = match &f.depth.confidence {
            Some(c) => {
                let cname = format!("conf_{i:04}.npy");
                let shape = (f.depth.height as usize, f.depth.width as usize);
                std::fs::write(dir.join(&cname), encode_npy("|u1", shape, c))?;
                Value::String(cname)
            }
            None => Value::Null,
        };
        let m: Vec<f64> = f.pose.matrix().iter().flatten().copied().collect();
        entries.push(json!({"depth": name, "confidence": conf, "pose": m}));
    }
    let truth = truth.map(|t| {
        json!({
            "outline_area_mm2": t.outline_area_mm2, "bed_area_mm2": t.bed_area_mm2,
            "perimeter_mm": t.perimeter_mm, "length_mm": t.length_mm, "width_mm": t.width_mm,
            "max_depth_mm": t.max_depth_mm, "mean_depth_mm": t.mean_depth_mm,
            "volume_mm3": t.volume_mm3,
        })
    });
    let doc = json!({
        "format": "coherency-frames",
        "version": 1,
        "intrinsics": {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy, "width": k.width, "height": k.height},
        "depth_scale": 1.0,
        "frames": entries,
        "target": target.map(|t| vec![t.x, t.y, t.z]),
        "truth": truth,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| ReconError::Format(e.to_string()))?;
    std::fs::write(dir.join("scan.json"), text)?;
    Ok(())
}

/// A dump read back.
#[derive(Debug, Clone)]
pub struct Dump {
    /// The frames.
    pub frames: Vec<Frame>,
    /// Wound target, if recorded.
    pub target: Option<Vec3>,
}

/// Reads a dump directory written by [`write_dump`] (or by any tool following the format).
pub fn read_dump(dir: &Path) -> Result<Dump, ReconError> {
    let fmt = |m: &str| ReconError::Format(m.to_string());
    let doc: Value = serde_json::from_slice(&std::fs::read(dir.join("scan.json"))?)
        .map_err(|e| ReconError::Format(e.to_string()))?;
    if doc["format"] != "coherency-frames" {
        return Err(fmt("not a coherency-frames dump"));
    }
    let ki = &doc["intrinsics"];
    let num = |v: &Value| v.as_f64().ok_or_else(|| fmt("expected a number"));
    let k = Intrinsics {
        fx: num(&ki["fx"])?,
        fy: num(&ki["fy"])?,
        cx: num(&ki["cx"])?,
        cy: num(&ki["cy"])?,
        width: num(&ki["width"])? as u32,
        height: num(&ki["height"])? as u32,
    };
    k.validate()?;
    let scale = doc["depth_scale"].as_f64().unwrap_or(1.0) as f32;
    let mut frames = Vec::new();
    for e in doc["frames"].as_array().ok_or_else(|| fmt("no frames"))? {
        let name = e["depth"].as_str().ok_or_else(|| fmt("frame without depth"))?;
        let bytes = std::fs::read(dir.join(name))?;
        let (descr, shape, raw) = decode_npy(&bytes)?;
        if descr != "<f4" || shape != (k.height as usize, k.width as usize) {
            return Err(fmt("depth must be <f4 of shape (height, width)"));
        }
        let depth: Vec<f32> =
            raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * scale).collect();
        let confidence = match e["confidence"].as_str() {
            Some(cn) => {
                let cb = std::fs::read(dir.join(cn))?;
                let (cd, cs, craw) = decode_npy(&cb)?;
                if cd != "|u1" || cs != shape {
                    return Err(fmt("confidence must be |u1 of the depth's shape"));
                }
                Some(craw.to_vec())
            }
            None => None,
        };
        let pm: Vec<f64> =
            e["pose"].as_array().ok_or_else(|| fmt("frame without pose"))?.iter().map(num).collect::<Result<_, _>>()?;
        if pm.len() != 16 {
            return Err(fmt("pose must have 16 numbers"));
        }
        let mut m = [[0.0; 4]; 4];
        for (i, v) in pm.iter().enumerate() {
            m[i / 4][i % 4] = *v;
        }
        frames.push(Frame {
            depth: DepthImage::new(k.width, k.height, depth, confidence)?,
            intrinsics: k,
            pose: Pose::from_matrix(m)?,
        });
    }
    let target = doc["target"].as_array().and_then(|a| {
        let v: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
        (v.len() == 3).then(|| Vec3::new(v[0], v[1], v[2]))
    });
    Ok(Dump { frames, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_is_64_byte_aligned() {
        let data: Vec<u8> = (0..24u8).collect();
        let enc = encode_npy("|u1", (4, 6), &data);
        let hlen = usize::from(u16::from_le_bytes([enc[8], enc[9]]));
        assert_eq!((10 + hlen) % 64, 0);
        let (d, s, raw) = decode_npy(&enc).unwrap();
        assert_eq!((d.as_str(), s, raw), ("|u1", (4, 6), &data[..]));
        assert!(decode_npy(b"not numpy").is_err());
    }

    #[test]
    fn dumps_round_trip_frames_exactly() {
        let k = Intrinsics::iphone_256x192();
        let mut pose = Pose::from_axis_angle(Vec3::new(1.0, 2.0, 3.0), 0.4);
        pose.translation = [0.1, 0.2, 0.3];
        let depth: Vec<f32> = (0..k.pixel_count()).map(|i| i as f32 * 1e-5).collect();
        let conf: Vec<u8> = (0..k.pixel_count()).map(|i| (i % 3) as u8).collect();
        let f = Frame { depth: DepthImage::new(k.width, k.height, depth, Some(conf)).unwrap(), intrinsics: k, pose };
        let dir = std::env::temp_dir().join(format!("coherency-recon-io-{}", std::process::id()));
        write_dump(&dir, std::slice::from_ref(&f), Some(Vec3::new(1.0, 2.0, 3.0)), None).unwrap();
        let back = read_dump(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back.frames.len(), 1);
        assert_eq!(back.frames[0].depth, f.depth);
        assert_eq!(back.target, Some(Vec3::new(1.0, 2.0, 3.0)));
        let (dt, dr) = back.frames[0].pose.difference(&f.pose);
        assert!(dt < 1e-12 && dr < 1e-6);
    }
}
