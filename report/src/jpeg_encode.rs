//! A minimal baseline JPEG encoder for pictures the project makes itself: colour frames of
//! phantom scans (tests, demo scans) and the synthetic images of the photo tests. Sequential
//! DCT, 8-bit, one scan, 4:4:4 (no chroma subsampling), a flat quantiser and simple
//! canonical Huffman tables (every DC symbol 4 bits, every AC symbol 8 bits) written into the
//! file, so any decoder reads it. Small pictures only (it favours being short over being
//! fast or compact); not for photos of patients, which come from the phone.

use std::f32::consts::PI;

/// Encodes 8-bit RGB pixels (row-major, top row first, `width × height × 3` bytes).
/// `q` is the quantiser step for every coefficient (1..=255; 2 keeps fine detail).
///
/// # Panics
/// Never: a buffer of the wrong size or a zero dimension gives `None`.
pub fn encode_rgb(rgb: &[u8], width: u16, height: u16, q: u8) -> Option<Vec<u8>> {
    let n = usize::from(width) * usize::from(height);
    if n == 0 || rgb.len() != n * 3 || q == 0 {
        return None;
    }
    let mut planes = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let (r, g, b) = (f32::from(px[0]), f32::from(px[1]), f32::from(px[2]));
        planes[0][i] = 0.299 * r + 0.587 * g + 0.114 * b;
        planes[1][i] = -0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0;
        planes[2][i] = 0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0;
    }
    Some(encode_planes(&planes, width, height, q))
}

/// Encodes 8-bit greyscale pixels (row-major, `width × height` bytes) as a one-component JPEG.
pub fn encode_luma(luma: &[u8], width: u16, height: u16, q: u8) -> Option<Vec<u8>> {
    let n = usize::from(width) * usize::from(height);
    if n == 0 || luma.len() != n || q == 0 {
        return None;
    }
    let plane: Vec<f32> = luma.iter().map(|&v| f32::from(v)).collect();
    Some(encode_planes(&[plane], width, height, q))
}

/// The natural-order index of each zig-zag position.
fn zigzag() -> [usize; 64] {
    let mut out = [0usize; 64];
    let mut i = 0;
    for s in 0..15usize {
        let range: Vec<usize> = (0..=s).filter(|&r| r < 8 && s - r < 8).collect();
        // Even diagonals run bottom-left to top-right (row falling), odd ones the other way.
        let rows: Vec<usize> = if s % 2 == 0 { range.into_iter().rev().collect() } else { range };
        for r in rows {
            out[i] = r * 8 + (s - r);
            i += 1;
        }
    }
    out
}

/// One canonical Huffman table: `bits[l]` codes of length `l + 1`, then the symbols.
struct Table {
    bits: [u8; 16],
    symbols: Vec<u8>,
    /// (code, length) per symbol value.
    codes: Vec<Option<(u16, u8)>>,
}

impl Table {
    fn new(length: u8, symbols: Vec<u8>) -> Self {
        let mut bits = [0u8; 16];
        bits[usize::from(length) - 1] = u8::try_from(symbols.len()).unwrap_or(u8::MAX);
        let mut codes = vec![None; 256];
        for (code, &s) in symbols.iter().enumerate() {
            codes[usize::from(s)] = Some((u16::try_from(code).unwrap_or(0), length));
        }
        Self { bits, symbols, codes }
    }

    fn dc() -> Self {
        Self::new(4, (0..12).collect())
    }

    fn ac() -> Self {
        let mut symbols = vec![0x00, 0xF0];
        for run in 0..16u8 {
            for size in 1..=10u8 {
                symbols.push((run << 4) | size);
            }
        }
        Self::new(8, symbols)
    }
}

struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u8,
}

impl Bits {
    fn put(&mut self, value: u16, len: u8) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | u32::from((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                let byte = (self.acc & 0xFF) as u8;
                self.out.push(byte);
                if byte == 0xFF {
                    self.out.push(0);
                }
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

fn category(v: i32) -> u8 {
    (32 - v.unsigned_abs().leading_zeros()) as u8
}

fn magnitude_bits(v: i32, cat: u8) -> u16 {
    let v = if v < 0 { v + (1 << cat) - 1 } else { v };
    (v & 0xFFFF) as u16
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&u16::try_from(body.len() + 2).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(body);
}

fn encode_planes(planes: &[Vec<f32>], width: u16, height: u16, q: u8) -> Vec<u8> {
    let (w, h) = (usize::from(width), usize::from(height));
    let nc = planes.len();
    let (dc, ac) = (Table::dc(), Table::ac());
    let zz = zigzag();
    let cos: Vec<f32> = (0..64).map(|i| (((2 * (i % 8) + 1) * (i / 8)) as f32 * PI / 16.0).cos()).collect();
    let c = |u: usize| if u == 0 { std::f32::consts::FRAC_1_SQRT_2 } else { 1.0 };

    let mut out = vec![0xFF, 0xD8];
    segment(&mut out, 0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[q; 64]);
    segment(&mut out, 0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&height.to_be_bytes());
    sof.extend_from_slice(&width.to_be_bytes());
    sof.push(nc as u8);
    for i in 0..nc {
        sof.extend_from_slice(&[i as u8 + 1, 0x11, 0]);
    }
    segment(&mut out, 0xC0, &sof);
    for (class, t) in [(0x00u8, &dc), (0x10, &ac)] {
        let mut dht = vec![class];
        dht.extend_from_slice(&t.bits);
        dht.extend_from_slice(&t.symbols);
        segment(&mut out, 0xC4, &dht);
    }
    let mut sos = vec![nc as u8];
    for i in 0..nc {
        sos.extend_from_slice(&[i as u8 + 1, 0x00]);
    }
    sos.extend_from_slice(&[0, 63, 0]);
    segment(&mut out, 0xDA, &sos);

    let mut bits = Bits { out: Vec::new(), acc: 0, n: 0 };
    let emit = |bits: &mut Bits, t: &Table, symbol: u8| {
        if let Some((code, len)) = t.codes[usize::from(symbol)] {
            bits.put(code, len);
        }
    };
    let mut pred = vec![0i32; nc];
    let mut block = [0f32; 64];
    for by in (0..h).step_by(8) {
        for bx in (0..w).step_by(8) {
            for (ci, plane) in planes.iter().enumerate() {
                for (i, b) in block.iter_mut().enumerate() {
                    let (x, y) = ((bx + i % 8).min(w - 1), (by + i / 8).min(h - 1));
                    *b = plane[y * w + x] - 128.0;
                }
                // Separable DCT: columns (vertical frequency v), then rows (u).
                let mut cols = [0f32; 64];
                for v in 0..8 {
                    for x in 0..8 {
                        cols[v * 8 + x] = (0..8).map(|y| block[y * 8 + x] * cos[v * 8 + y]).sum();
                    }
                }
                let mut coef = [0i32; 64];
                for (k, &nat) in zz.iter().enumerate() {
                    let (v, u) = (nat / 8, nat % 8);
                    let s: f32 = (0..8).map(|x| cols[v * 8 + x] * cos[u * 8 + x]).sum();
                    let f = 0.25 * c(u) * c(v) * s;
                    coef[k] = (f / f32::from(q)).round() as i32;
                }
                let diff = (coef[0] - pred[ci]).clamp(-2047, 2047);
                pred[ci] += diff;
                let cat = category(diff);
                emit(&mut bits, &dc, cat);
                bits.put(magnitude_bits(diff, cat), cat);
                let mut run = 0u8;
                for &v in &coef[1..] {
                    let v = v.clamp(-1023, 1023);
                    if v == 0 {
                        run += 1;
                        continue;
                    }
                    while run > 15 {
                        emit(&mut bits, &ac, 0xF0);
                        run -= 16;
                    }
                    let cat = category(v);
                    emit(&mut bits, &ac, (run << 4) | cat);
                    bits.put(magnitude_bits(v, cat), cat);
                    run = 0;
                }
                if run > 0 {
                    emit(&mut bits, &ac, 0x00);
                }
            }
        }
    }
    out.extend(bits.finish());
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_is_a_permutation_starting_like_the_standard() {
        let z = zigzag();
        assert_eq!(&z[..10], &[0, 1, 8, 16, 9, 2, 3, 10, 17, 24]);
        assert_eq!(z[63], 63);
        let mut seen = z.to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..64).collect::<Vec<_>>());
    }
}
