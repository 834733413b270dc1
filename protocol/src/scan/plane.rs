//! Image planes inside a depth frame: their sample formats, optional zstd compression, and
//! conversion of depth samples to metres. Samples are little-endian, row-major, top row
//! first, with no padding between rows.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::codec::DecodeError;
use super::DepthFrame;

/// zstd level used by [`DepthPlane::encode`] and [`ConfidencePlane::encode`]: fast enough
/// for a phone at 60 Hz, and any level decodes the same.
pub const ZSTD_LEVEL: i32 = 1;

/// How depth samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DepthFormat {
    /// `"f32_m"`: IEEE-754 float32, metres. 0, negative, NaN or infinite = no depth.
    #[serde(rename = "f32_m")]
    F32Metres,
    /// `"u16_0.1mm"`: unsigned 16-bit, units of 0.1 mm (range 0.1 mm – 6.5535 m).
    /// 0 = no depth.
    #[serde(rename = "u16_0.1mm")]
    U16TenthMillimetres,
    /// `"u16_1mm"`: unsigned 16-bit, millimetres (range 1 mm – 65.535 m). 0 = no depth.
    #[serde(rename = "u16_1mm")]
    U16Millimetres,
}

impl DepthFormat {
    /// Bytes per sample: 4 or 2.
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            DepthFormat::F32Metres => 4,
            DepthFormat::U16TenthMillimetres | DepthFormat::U16Millimetres => 2,
        }
    }

    /// Metres per unit of a u16 sample; `None` for float32.
    pub const fn metres_per_unit(self) -> Option<f32> {
        match self {
            DepthFormat::F32Metres => None,
            DepthFormat::U16TenthMillimetres => Some(0.0001),
            DepthFormat::U16Millimetres => Some(0.001),
        }
    }

    /// u16 units per metre (10,000 or 1,000); `None` for float32. Converting with a
    /// division by this gives the float32 nearest to the exact value.
    pub const fn units_per_metre(self) -> Option<f32> {
        match self {
            DepthFormat::F32Metres => None,
            DepthFormat::U16TenthMillimetres => Some(10_000.0),
            DepthFormat::U16Millimetres => Some(1_000.0),
        }
    }

    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            DepthFormat::F32Metres => "f32_m",
            DepthFormat::U16TenthMillimetres => "u16_0.1mm",
            DepthFormat::U16Millimetres => "u16_1mm",
        }
    }
}

/// How a plane's bytes are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// `"none"`: the samples as they are.
    None,
    /// `"zstd"`: one or more concatenated zstd frames (RFC 8878) that decompress to exactly
    /// the plane's samples.
    Zstd,
}

impl Compression {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }
}

/// The plane's samples once decompressed. Filled by the decoder after it has checked the
/// plane, so consumers never decompress twice; ignored by equality and serialisation.
#[derive(Clone, Default)]
pub(crate) struct RawCache(pub(crate) Option<Bytes>);

impl PartialEq for RawCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for RawCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "cached" } else { "-" })
    }
}

/// The depth plane of a frame: `{"fmt":…, "comp":…, "data":bin}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthPlane {
    #[serde(rename = "fmt")]
    format: DepthFormat,
    #[serde(rename = "comp")]
    compression: Compression,
    #[serde(with = "super::bin")]
    data: Bytes,
    #[serde(skip)]
    pub(crate) raw: RawCache,
}

impl DepthPlane {
    /// A plane from already-encoded bytes (samples in `format`, packed per `compression`).
    /// Nothing is checked here; the decoder checks everything.
    pub fn new(format: DepthFormat, compression: Compression, data: impl Into<Bytes>) -> Self {
        Self { format, compression, data: data.into(), raw: RawCache::default() }
    }

    /// Encodes depth given in metres into `format` (see [`quantise_metres`]), compressing
    /// with zstd at [`ZSTD_LEVEL`] when asked.
    pub fn encode(format: DepthFormat, compression: Compression, metres: &[f32]) -> Self {
        let raw = Bytes::from(quantise_metres(format, metres));
        let data = compress(compression, &raw);
        Self { format, compression, data, raw: RawCache(Some(raw)) }
    }

    /// The sample format.
    pub fn format(&self) -> DepthFormat {
        self.format
    }

    /// The packing.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The bytes as sent on the wire (compressed if `compression` says so).
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

/// The optional confidence plane: `{"comp":…, "max":…, "data":bin}`, one u8 per pixel,
/// `0..=max`, higher is more confident (ARKit sends its levels 0, 1, 2 with `max` 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfidencePlane {
    #[serde(rename = "comp")]
    compression: Compression,
    max: u8,
    #[serde(with = "super::bin")]
    data: Bytes,
    #[serde(skip)]
    pub(crate) raw: RawCache,
}

impl ConfidencePlane {
    /// A plane from already-encoded bytes. Nothing is checked here.
    pub fn new(compression: Compression, max: u8, data: impl Into<Bytes>) -> Self {
        Self { compression, max, data: data.into(), raw: RawCache::default() }
    }

    /// Packs confidence values, compressing with zstd when asked.
    pub fn encode(compression: Compression, max: u8, values: &[u8]) -> Self {
        let raw = Bytes::copy_from_slice(values);
        let data = compress(compression, &raw);
        Self { compression, max, data, raw: RawCache(Some(raw)) }
    }

    /// The packing.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The largest value a pixel may hold (full confidence).
    pub fn max(&self) -> u8 {
        self.max
    }

    /// The bytes as sent on the wire.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

fn compress(compression: Compression, raw: &Bytes) -> Bytes {
    match compression {
        Compression::None => raw.clone(),
        // Compressing into memory with a valid level cannot fail.
        Compression::Zstd => Bytes::from(zstd::bulk::compress(raw, ZSTD_LEVEL).expect("in-memory zstd compression")),
    }
}

/// Converts depth in metres to the bytes of `format`. For u16 formats values are rounded to
/// the nearest unit; values that are not finite, not positive, round to 0, or exceed the
/// format's range become 0 (no depth). For float32, invalid values become 0.0.
pub fn quantise_metres(format: DepthFormat, metres: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(metres.len() * format.bytes_per_sample());
    match format.units_per_metre() {
        None => {
            for &m in metres {
                let m = if m.is_finite() && m > 0.0 { m } else { 0.0 };
                out.extend_from_slice(&m.to_le_bytes());
            }
        }
        Some(per_metre) => {
            for &m in metres {
                let q = if m.is_finite() && m > 0.0 {
                    let q = (m * per_metre).round();
                    if q <= f32::from(u16::MAX) {
                        q as u16
                    } else {
                        0
                    }
                } else {
                    0
                };
                out.extend_from_slice(&q.to_le_bytes());
            }
        }
    }
    out
}

/// Converts decompressed depth bytes of `format` to metres into `out` (cleared first).
/// Missing depth is 0.0; a trailing partial sample is ignored.
pub fn raw_depth_to_metres(format: DepthFormat, raw: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match format.units_per_metre() {
        None => out.extend(raw.chunks_exact(4).map(|c| {
            let m = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if m.is_finite() && m > 0.0 {
                m
            } else {
                0.0
            }
        })),
        Some(per_metre) => {
            out.extend(raw.chunks_exact(2).map(|c| f32::from(u16::from_le_bytes([c[0], c[1]])) / per_metre))
        }
    }
}

impl DepthFrame {
    /// Number of pixels, `width × height`.
    pub fn pixel_count(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// The decompressed depth samples (in [`DepthPlane::format`]). Free after
    /// [`super::decode_client`], which has already decompressed and checked them.
    pub fn depth_raw(&self) -> Result<Bytes, DecodeError> {
        if let Some(raw) = &self.depth.raw.0 {
            return Ok(raw.clone());
        }
        let expected = self.pixel_count() * self.depth.format.bytes_per_sample();
        super::validate::unpack(self.seq, "depth", self.depth.compression, &self.depth.data, expected)
    }

    /// The depth plane in metres, 0.0 where there is no depth.
    pub fn depth_metres(&self) -> Result<Vec<f32>, DecodeError> {
        let mut out = Vec::with_capacity(self.pixel_count());
        self.depth_metres_into(&mut out)?;
        Ok(out)
    }

    /// Like [`DepthFrame::depth_metres`], reusing `out`'s allocation.
    pub fn depth_metres_into(&self, out: &mut Vec<f32>) -> Result<(), DecodeError> {
        let raw = self.depth_raw()?;
        raw_depth_to_metres(self.depth.format, &raw, out);
        Ok(())
    }

    /// The decompressed confidence values, if the frame has a confidence plane.
    pub fn confidence_raw(&self) -> Result<Option<Bytes>, DecodeError> {
        let Some(conf) = &self.confidence else {
            return Ok(None);
        };
        if let Some(raw) = &conf.raw.0 {
            return Ok(Some(raw.clone()));
        }
        super::validate::unpack(self.seq, "confidence", conf.compression, &conf.data, self.pixel_count()).map(Some)
    }

    /// The camera of the frame's colour image, after the frame convention: `None` without a
    /// `"jpeg"` or when its SOF header cannot be read. With neither `"jk"` nor `"jpose"`, the
    /// colour image is the depth camera's (ARKit delivers `capturedImage` and `sceneDepth`
    /// from one camera, depth registered to colour): `fx, s, cx` scale by
    /// `jpeg width / w` and `fy, cy` by `jpeg height / h`, and the pose is `"pose"`.
    pub fn colour_camera(&self) -> Option<super::ColourCamera> {
        let jpeg = self.colour_jpeg.as_ref()?;
        let (width, height) = super::validate::jpeg_dimensions(jpeg)?;
        let intrinsics = self.colour_intrinsics.unwrap_or_else(|| {
            let (sx, sy) = (width as f32 / self.width as f32, height as f32 / self.height as f32);
            let k = self.intrinsics;
            [k[0] * sx, k[1] * sx, k[2] * sx, 0.0, k[4] * sy, k[5] * sy, 0.0, 0.0, 1.0]
        });
        Some(super::ColourCamera { width, height, intrinsics, pose: self.colour_pose.unwrap_or(self.pose) })
    }

    /// Runs every check the server's decoder runs on a frame (a client can call this before
    /// sending).
    pub fn validate(&self) -> Result<(), DecodeError> {
        super::validate::check_frame(self).map(|_| ())
    }
}
