//! A ColorChecker Classic card (24 patches, 4 rows × 6 columns on a black surround) found in
//! a colour view, and the calibration it gives.
//!
//! Detection, pure image processing on one [`RgbImage`]:
//!
//! 1. **Candidate patches.** The image's grey level (mean of the sRGB channels) is smoothed
//!    3×3; a pixel is *flat* when its central-difference gradient is below [`FLAT_STEP`].
//!    Connected flat regions of a patch's size whose second moments fit a square seen at up to
//!    ~60° (the moments of a parallelogram: area² = 144·det Σ, elongation ≤ [`MAX_ELONGATION`])
//!    are candidates; their centroids are the patches' centres. The black surround separates
//!    the patches, so no colour model is needed here.
//! 2. **Lattice.** From each candidate, its nearest candidate and the next one at an angle
//!    start a lattice (cell `(0,0)`, `(1,0)`, `(0,1)`); the lattice grows cell by cell to
//!    neighbouring candidates that land within [`CELL_TOLERANCE`] of an integer cell of the
//!    current fit (affine from three cells, a homography from five), refitting after each pass.
//!    A lattice of at least [`MIN_FOUND`] cells spanning at most 6 × 4 is kept.
//! 3. **Labelling.** Every placement of the 6 × 4 chart over the found block in each of the
//!    four in-plane orientations is tried; mirrored placements (the card seen from behind or
//!    a mirrored image) are never tried. Each of the 24 patches must lie wholly in the image,
//!    and its inner square (± [`SAMPLE_HALF`] of the pitch around the centre) is sampled on a
//!    7 × 7 grid, luminance-trimmed mean in linear RGB.
//! 4. **Acceptance.** The grey row must fall monotonically from white to black; per-channel
//!    gains from the neutral row and a planar light falloff over the card are fitted to the
//!    published colours ([`CheckerDetection::gains`]); the placement is accepted when the
//!    patches' median CIEDE2000 to the published colours is at most [`MAX_MEDIAN_DE`] and
//!    the worst but two at most [`MAX_TAIL_DE`]. The best accepted placement wins.
//!
//! A card partly out of the frame, a grid of other colours or a mirrored card is not
//! detected. Limits (glare, shadow, camera response, other cards): `docs/measurement.md`,
//! "Calibration".

use std::sync::OnceLock;

use super::calibrate::{trimmed_mean, Calibration, CalibrationSource};
use super::{linear_to_lab, ColourView, RgbImage};

/// Published CIELAB (D50, 2°) of the 24 patches of the ColorChecker Classic made after
/// November 2014 (X-Rite's reference data for the new formulation, M0, i1Pro 2 — the values
/// X-Rite/Calibrite publish for the Classic and the Passport, also shipped by colour-science as
/// `ColorChecker24 - After November 2014`). Chart order: row by row from the top left, with
/// the card upright (dark skin top left, the neutral row at the bottom, white bottom left).
pub const CHECKER_LAB_D50: [[f64; 3]; 24] = [
    [37.54, 14.37, 14.92],   // dark skin
    [64.66, 19.27, 17.50],   // light skin
    [49.32, -3.82, -22.54],  // blue sky
    [43.46, -12.74, 22.72],  // foliage
    [54.94, 9.61, -24.79],   // blue flower
    [70.48, -32.26, -0.37],  // bluish green
    [62.73, 35.83, 56.50],   // orange
    [39.43, 10.75, -45.17],  // purplish blue
    [50.57, 48.64, 16.67],   // moderate red
    [30.10, 22.54, -20.87],  // purple
    [71.77, -24.13, 58.19],  // yellow green
    [71.51, 18.24, 67.37],   // orange yellow
    [28.37, 15.42, -49.80],  // blue
    [54.38, -39.72, 32.27],  // green
    [42.43, 51.05, 28.62],   // red
    [81.80, 2.67, 80.41],    // yellow
    [50.63, 51.28, -14.12],  // magenta
    [49.57, -29.71, -28.32], // cyan
    [95.19, -1.03, 2.93],    // white 9.5
    [81.29, -0.57, 0.44],    // neutral 8
    [66.89, -0.75, -0.06],   // neutral 6.5
    [50.76, -0.13, 0.14],    // neutral 5
    [35.63, -0.46, -0.48],   // neutral 3.5
    [20.64, 0.07, -0.46],    // black 2
];

/// Columns of the chart.
pub const CHECKER_COLUMNS: usize = 6;
/// Rows of the chart.
pub const CHECKER_ROWS: usize = 4;
/// The neutral row (white 9.5 to black 2), chart indices.
pub const NEUTRAL_PATCHES: std::ops::Range<usize> = 18..24;

/// Largest smoothed grey-level step (sRGB units, 0..255) inside a flat region.
pub const FLAT_STEP: f32 = 3.0;
/// Fewest pixels of a candidate patch region (a 6 px patch loses about 2 px to each edge).
pub const MIN_REGION_PX: usize = 5;
/// Most elongated candidate region (square root of its moments' eigenvalue ratio).
pub const MAX_ELONGATION: f64 = 3.0;
/// Largest distance of a candidate from its lattice cell, in cells.
pub const CELL_TOLERANCE: f64 = 0.25;
/// Fewest patches found as regions for a lattice to be tried (the rest are predicted).
pub const MIN_FOUND: usize = 12;
/// Half-side of a patch's sampled inner square, in pitches (the patches are about 0.8
/// pitch wide).
pub const SAMPLE_HALF: f64 = 0.22;
/// Half-side of a patch, in pitches, that must lie inside the image.
pub const PATCH_HALF: f64 = 0.4;
/// Acceptance: the patches' median CIEDE2000 to the published colours after the fit.
pub const MAX_MEDIAN_DE: f64 = 6.0;
/// Acceptance: the third-worst patch's CIEDE2000.
pub const MAX_TAIL_DE: f64 = 15.0;
/// Acceptance: largest light falloff across the card (brightest corner / darkest corner).
pub const MAX_FALLOFF: f64 = 2.0;
/// A linear value at or above this is taken as clipped.
pub const CLIPPED: f64 = 0.9;
/// Neutral patches darker than this (linear luminance) drown in noise and are not fitted.
pub const NOISE_FLOOR: f64 = 0.004;

/// A card found in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerDetection {
    /// Measured linear RGB of each patch (camera values, uncalibrated), chart order.
    pub patches_linear: [[f64; 3]; 24],
    /// Each patch's centre in the image (column, row; pixel centres at integers), chart order.
    pub centres: [[f64; 2]; 24],
    /// Patches found as regions; the others were placed by the lattice.
    pub found: usize,
    /// Per-channel linear gains that map the camera's colours to the published ones at the
    /// card's centre: least squares over the neutral patches that are neither clipped nor
    /// below [`NOISE_FLOOR`], with the card's light falloff divided out.
    pub gains: [f64; 3],
    /// Neutral patches the gains were fitted to.
    pub neutrals_used: usize,
    /// Median CIEDE2000 of the 24 patches to the published colours after gains and falloff.
    pub median_delta_e: f64,
    /// Largest CIEDE2000 of a patch.
    pub max_delta_e: f64,
}

impl CheckerDetection {
    /// The calibration this card gives: its gains, [`CalibrationSource::ColourChecker`].
    pub fn calibration(&self) -> Calibration {
        Calibration { source: CalibrationSource::ColourChecker, gains: self.gains, samples: self.neutrals_used }
    }
}

/// The card's calibration for a scan, from every colour view it was detected in.
#[derive(Debug, Clone, PartialEq)]
pub struct CardCalibration {
    /// The calibration (the best detection's gains).
    pub calibration: Calibration,
    /// Index of the view whose detection fitted best.
    pub view: usize,
    /// Views the card was detected in (all of them agreeing, [`MAX_CAST_DISAGREEMENT`]).
    pub views_detected: usize,
    /// The best detection's median CIEDE2000 after the fit.
    pub median_delta_e: f64,
}

/// Largest difference of the colour cast (`ln(gR/gG)`, `ln(gB/gG)`) between two views'
/// detections for the card to be used: beyond it the light or the phone's white balance
/// changed during the scan, or a detection is wrong, and no card calibration is given.
pub const MAX_CAST_DISAGREEMENT: f64 = 0.1;

/// The published patch colours in linear sRGB (D65; Bradford-adapted from
/// [`CHECKER_LAB_D50`], clamped to 0..1: cyan's red is just outside sRGB).
pub fn checker_reference_linear() -> &'static [[f64; 3]; 24] {
    static REF: OnceLock<[[f64; 3]; 24]> = OnceLock::new();
    REF.get_or_init(|| CHECKER_LAB_D50.map(lab_d50_to_linear_srgb))
}

fn lab_d50_to_linear_srgb(lab: [f64; 3]) -> [f64; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let (fx, fz) = (fy + lab[1] / 500.0, fy - lab[2] / 200.0);
    let inv = |t: f64| if t > 6.0 / 29.0 { t * t * t } else { 3.0 * (6.0f64 / 29.0).powi(2) * (t - 4.0 / 29.0) };
    let d50 = [0.964_22 * inv(fx), inv(fy), 0.825_21 * inv(fz)];
    const BRADFORD_D50_TO_D65: [[f64; 3]; 3] = [
        [0.955_576_6, -0.023_039_3, 0.063_163_6],
        [-0.028_289_5, 1.009_941_6, 0.021_007_7],
        [0.012_298_2, -0.020_483_0, 1.329_909_8],
    ];
    const XYZ_TO_SRGB: [[f64; 3]; 3] = [
        [3.240_454_2, -1.537_138_5, -0.498_531_4],
        [-0.969_266_0, 1.876_010_8, 0.041_556_0],
        [0.055_643_4, -0.204_025_9, 1.057_225_2],
    ];
    let d65 = mat_vec(&BRADFORD_D50_TO_D65, d50);
    mat_vec(&XYZ_TO_SRGB, d65).map(|v| v.clamp(0.0, 1.0))
}

fn mat_vec(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

/// CIEDE2000 colour difference of two CIELAB colours (Sharma, Wu & Dalal 2005).
pub fn delta_e2000(a: [f64; 3], b: [f64; 3]) -> f64 {
    use std::f64::consts::PI;
    let (l1, a1, b1) = (a[0], a[1], a[2]);
    let (l2, a2, b2) = (b[0], b[1], b[2]);
    let c_bar = (a1.hypot(b1) + a2.hypot(b2)) / 2.0;
    let g = 0.5 * (1.0 - (c_bar.powi(7) / (c_bar.powi(7) + 25f64.powi(7))).sqrt());
    let (a1p, a2p) = ((1.0 + g) * a1, (1.0 + g) * a2);
    let (c1p, c2p) = (a1p.hypot(b1), a2p.hypot(b2));
    let hue = |b: f64, a: f64| if b == 0.0 && a == 0.0 { 0.0 } else { b.atan2(a).rem_euclid(2.0 * PI) };
    let (h1p, h2p) = (hue(b1, a1p), hue(b2, a2p));
    let dl = l2 - l1;
    let dc = c2p - c1p;
    let dh = if c1p * c2p == 0.0 {
        0.0
    } else {
        let d = h2p - h1p;
        if d > PI {
            d - 2.0 * PI
        } else if d < -PI {
            d + 2.0 * PI
        } else {
            d
        }
    };
    let dhh = 2.0 * (c1p * c2p).sqrt() * (dh / 2.0).sin();
    let l_bar = (l1 + l2) / 2.0;
    let cp_bar = (c1p + c2p) / 2.0;
    let hp_bar = if c1p * c2p == 0.0 {
        h1p + h2p
    } else if (h1p - h2p).abs() <= PI {
        (h1p + h2p) / 2.0
    } else if h1p + h2p < 2.0 * PI {
        (h1p + h2p + 2.0 * PI) / 2.0
    } else {
        (h1p + h2p - 2.0 * PI) / 2.0
    };
    let t =
        1.0 - 0.17 * (hp_bar - PI / 6.0).cos() + 0.24 * (2.0 * hp_bar).cos() + 0.32 * (3.0 * hp_bar + PI / 30.0).cos()
            - 0.20 * (4.0 * hp_bar - 63f64.to_radians()).cos();
    let d_theta = 30f64.to_radians() * (-((hp_bar.to_degrees() - 275.0) / 25.0).powi(2)).exp();
    let rc = 2.0 * (cp_bar.powi(7) / (cp_bar.powi(7) + 25f64.powi(7))).sqrt();
    let sl = 1.0 + 0.015 * (l_bar - 50.0).powi(2) / (20.0 + (l_bar - 50.0).powi(2)).sqrt();
    let sc = 1.0 + 0.045 * cp_bar;
    let sh = 1.0 + 0.015 * cp_bar * t;
    let rt = -(2.0 * d_theta).sin() * rc;
    ((dl / sl).powi(2) + (dc / sc).powi(2) + (dhh / sh).powi(2) + rt * (dc / sc) * (dhh / sh)).sqrt()
}

/// CIELAB (D65) of a linear colour, in f64.
pub(crate) fn lab(rgb: [f64; 3]) -> [f64; 3] {
    linear_to_lab(rgb.map(|v| v as f32)).map(f64::from)
}

/// Finds a ColorChecker Classic in `image`; `None` when there is none wholly in view (or
/// none that fits the published colours).
pub fn detect_checker(image: &RgbImage) -> Option<CheckerDetection> {
    if !image.is_valid() || image.width < 16 || image.height < 16 {
        return None;
    }
    let candidates = candidate_patches(image);
    let mut tried = vec![false; candidates.len()];
    let mut best: Option<CheckerDetection> = None;
    for seed in 0..candidates.len() {
        if tried[seed] {
            continue;
        }
        let Some(lattice) = grow_lattice(&candidates, seed) else { continue };
        if let Some(d) = label_and_fit(image, &lattice) {
            // A card's patches need not seed lattices again.
            for &(_, k) in &lattice.cells {
                tried[k] = true;
            }
            if best.as_ref().is_none_or(|b| d.median_delta_e < b.median_delta_e) {
                best = Some(d);
            }
        }
    }
    best
}

/// The card calibration of a scan: the card detected in its views, the best-fitting
/// detection's gains. `None` when no view shows a whole card, or when the views that do
/// disagree on the colour cast by more than [`MAX_CAST_DISAGREEMENT`] (then the periwound
/// calibration stands alone).
pub fn card_calibration(views: &[ColourView<'_>]) -> Option<CardCalibration> {
    let detections: Vec<(usize, CheckerDetection)> =
        views.iter().enumerate().filter_map(|(i, v)| detect_checker(v.image).map(|d| (i, d))).collect();
    let (view, best) = detections.iter().min_by(|a, b| a.1.median_delta_e.total_cmp(&b.1.median_delta_e))?;
    let cast = |g: [f64; 3]| [(g[0] / g[1]).ln(), (g[2] / g[1]).ln()];
    let c0 = cast(best.gains);
    let agree = detections.iter().all(|(_, d)| {
        let c = cast(d.gains);
        (c[0] - c0[0]).abs() <= MAX_CAST_DISAGREEMENT && (c[1] - c0[1]).abs() <= MAX_CAST_DISAGREEMENT
    });
    agree.then(|| CardCalibration {
        calibration: best.calibration(),
        view: *view,
        views_detected: detections.len(),
        median_delta_e: best.median_delta_e,
    })
}

/// A candidate patch: the centroid of a flat region.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    x: f64,
    y: f64,
    /// Square root of the region's area, pixels.
    size: f64,
}

/// Flat, square-ish regions of a patch's size.
fn candidate_patches(image: &RgbImage) -> Vec<Candidate> {
    let (w, h) = (image.width, image.height);
    let grey: Vec<f32> =
        image.data.chunks_exact(3).map(|p| (f32::from(p[0]) + f32::from(p[1]) + f32::from(p[2])) / 3.0).collect();
    let mut tmp = vec![0.0f32; w * h];
    for j in 0..h {
        for i in 0..w {
            let (a, b) = (i.saturating_sub(1), (i + 1).min(w - 1));
            tmp[j * w + i] = (grey[j * w + a] + grey[j * w + i] + grey[j * w + b]) / 3.0;
        }
    }
    let mut smooth = vec![0.0f32; w * h];
    for j in 0..h {
        let (a, b) = (j.saturating_sub(1), (j + 1).min(h - 1));
        for i in 0..w {
            smooth[j * w + i] = (tmp[a * w + i] + tmp[j * w + i] + tmp[b * w + i]) / 3.0;
        }
    }
    let mut flat = vec![false; w * h];
    for j in 1..h - 1 {
        for i in 1..w - 1 {
            let k = j * w + i;
            let gx = (smooth[k + 1] - smooth[k - 1]).abs();
            let gy = (smooth[k + w] - smooth[k - w]).abs();
            flat[k] = (gx + gy) / 2.0 < FLAT_STEP;
        }
    }
    let max_area = w * h / 30;
    let mut label = vec![false; w * h];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for start in 0..w * h {
        if !flat[start] || label[start] {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
        while let Some(k) = stack.pop() {
            let (x, y) = ((k % w) as f64, (k / w) as f64);
            n += 1;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
            for nb in [k - 1, k + 1, k - w, k + w] {
                if flat[nb] && !label[nb] {
                    label[nb] = true;
                    stack.push(nb);
                }
            }
        }
        if n < MIN_REGION_PX || n > max_area {
            continue;
        }
        let nf = n as f64;
        let (mx, my) = (sx / nf, sy / nf);
        // Pixels are unit squares: their own spread (1/12) belongs to the region's.
        let (cxx, cyy, cxy) = (sxx / nf - mx * mx + 1.0 / 12.0, syy / nf - my * my + 1.0 / 12.0, sxy / nf - mx * my);
        let det = cxx * cyy - cxy * cxy;
        if det <= 0.0 {
            continue;
        }
        let squareness = nf / (12.0 * det.sqrt());
        let half_tr = (cxx + cyy) / 2.0;
        let disc = (half_tr * half_tr - det).max(0.0).sqrt();
        let elongation = ((half_tr + disc) / (half_tr - disc).max(1e-9)).sqrt();
        if (0.6..=1.25).contains(&squareness) && elongation <= MAX_ELONGATION {
            out.push(Candidate { x: mx, y: my, size: nf.sqrt() });
        }
    }
    out
}

/// A projective map from lattice cells `(i, j)` to image points.
#[derive(Debug, Clone, Copy)]
struct Homography([[f64; 3]; 3]);

impl Homography {
    fn map(&self, u: f64, v: f64) -> Option<[f64; 2]> {
        let m = &self.0;
        let z = m[2][0] * u + m[2][1] * v + m[2][2];
        (z.abs() > 1e-12)
            .then(|| [(m[0][0] * u + m[0][1] * v + m[0][2]) / z, (m[1][0] * u + m[1][1] * v + m[1][2]) / z])
    }

    fn inverse(&self) -> Option<Homography> {
        let m = &self.0;
        let c = |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
        let adj = [
            [c(1, 2, 1, 2), -c(0, 2, 1, 2), c(0, 1, 1, 2)],
            [-c(1, 2, 0, 2), c(0, 2, 0, 2), -c(0, 1, 0, 2)],
            [c(1, 2, 0, 1), -c(0, 2, 0, 1), c(0, 1, 0, 1)],
        ];
        let det = m[0][0] * adj[0][0] + m[0][1] * adj[1][0] + m[0][2] * adj[2][0];
        (det.abs() > 1e-12).then(|| Homography(adj.map(|r| r.map(|v| v / det))))
    }

    /// Least-squares fit to `(cell, image point)` pairs: affine below five pairs or when
    /// the cells lie on one line of the lattice, projective otherwise.
    fn fit(pairs: &[([f64; 2], [f64; 2])]) -> Option<Homography> {
        let n = pairs.len() as f64;
        if pairs.len() < 3 {
            return None;
        }
        // Normalise both sides (centroid, mean distance √2) for conditioning.
        let norm = |pts: &mut dyn Iterator<Item = [f64; 2]>| {
            let pts: Vec<[f64; 2]> = pts.collect();
            let (mx, my) = (pts.iter().map(|p| p[0]).sum::<f64>() / n, pts.iter().map(|p| p[1]).sum::<f64>() / n);
            let d = pts.iter().map(|p| (p[0] - mx).hypot(p[1] - my)).sum::<f64>() / n;
            let s = if d > 1e-12 { std::f64::consts::SQRT_2 / d } else { 1.0 };
            (mx, my, s)
        };
        let (ux, uy, us) = norm(&mut pairs.iter().map(|p| p.0));
        let (xx, xy, xs) = norm(&mut pairs.iter().map(|p| p.1));
        let distinct = |k: usize| pairs.iter().any(|p| (p.0[k] - pairs[0].0[k]).abs() > 0.5);
        let projective = pairs.len() >= 5 && distinct(0) && distinct(1);
        let unknowns = if projective { 8 } else { 6 };
        let mut ata = [[0.0f64; 8]; 8];
        let mut atb = [0.0f64; 8];
        for (cell, pt) in pairs {
            let (u, v) = ((cell[0] - ux) * us, (cell[1] - uy) * us);
            let (x, y) = ((pt[0] - xx) * xs, (pt[1] - xy) * xs);
            let rows =
                [([u, v, 1.0, 0.0, 0.0, 0.0, -u * x, -v * x], x), ([0.0, 0.0, 0.0, u, v, 1.0, -u * y, -v * y], y)];
            for (row, rhs) in rows {
                for a in 0..unknowns {
                    atb[a] += row[a] * rhs;
                    for b in 0..unknowns {
                        ata[a][b] += row[a] * row[b];
                    }
                }
            }
        }
        let h = solve(&mut ata, &mut atb, unknowns)?;
        let (h6, h7) = if projective { (h[6], h[7]) } else { (0.0, 0.0) };
        let hn = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h6, h7, 1.0]];
        // H = T_img⁻¹ · Hn · T_cell.
        let t_cell = [[us, 0.0, -us * ux], [0.0, us, -us * uy], [0.0, 0.0, 1.0]];
        let t_img_inv = [[1.0 / xs, 0.0, xx], [0.0, 1.0 / xs, xy], [0.0, 0.0, 1.0]];
        Some(Homography(mat_mul(&t_img_inv, &mat_mul(&hn, &t_cell))))
    }
}

fn mat_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

/// Solves the first `n` equations of `a x = b` (Gaussian elimination, partial pivoting).
fn solve(a: &mut [[f64; 8]; 8], b: &mut [f64; 8], n: usize) -> Option<[f64; 8]> {
    for col in 0..n {
        let pivot = (col..n).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for r in col + 1..n {
            let f = a[r][col] / pivot_row[col];
            for (x, p) in a[r][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 8];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// Candidates on one lattice: `((i, j), candidate index)` and the fitted map.
struct Lattice {
    cells: Vec<((i32, i32), usize)>,
    map: Homography,
}

impl Lattice {
    fn span(cells: &[((i32, i32), usize)]) -> (i32, i32, i32, i32) {
        let (mut i0, mut i1, mut j0, mut j1) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
        for ((i, j), _) in cells {
            (i0, i1, j0, j1) = (i0.min(*i), i1.max(*i), j0.min(*j), j1.max(*j));
        }
        (i0, i1, j0, j1)
    }
}

/// Grows a lattice of candidates from `seed`; `None` when it stays smaller than
/// [`MIN_FOUND`] or outgrows a 6 × 4 chart.
fn grow_lattice(cands: &[Candidate], seed: usize) -> Option<Lattice> {
    let s = cands[seed];
    let similar = |c: &Candidate| (0.4..=2.5).contains(&(c.size / s.size));
    let mut near: Vec<(f64, usize)> = cands
        .iter()
        .enumerate()
        .filter(|(k, c)| *k != seed && similar(c))
        .map(|(k, c)| ((c.x - s.x).hypot(c.y - s.y), k))
        .filter(|(d, _)| *d >= s.size && *d <= 4.0 * s.size)
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    let &(du, first) = near.first()?;
    let u = [cands[first].x - s.x, cands[first].y - s.y];
    let &(_, second) = near.iter().skip(1).find(|(dv, k)| {
        let v = [cands[*k].x - s.x, cands[*k].y - s.y];
        let cos = (u[0] * v[0] + u[1] * v[1]) / (du * dv);
        cos.abs() < 0.77 && (0.5..=2.0).contains(&(dv / du))
    })?;
    let mut cells = vec![((0, 0), seed), ((1, 0), first), ((0, 1), second)];
    let pairs = |cells: &[((i32, i32), usize)]| -> Vec<([f64; 2], [f64; 2])> {
        cells.iter().map(|((i, j), k)| ([f64::from(*i), f64::from(*j)], [cands[*k].x, cands[*k].y])).collect()
    };
    let mut map = Homography::fit(&pairs(&cells))?;
    for _ in 0..16 {
        let inv = map.inverse()?;
        let mut proposals: Vec<((i32, i32), usize, f64)> = Vec::new();
        for (k, c) in cands.iter().enumerate() {
            if !similar(c) || cells.iter().any(|(_, m)| *m == k) {
                continue;
            }
            let Some([fi, fj]) = inv.map(c.x, c.y) else { continue };
            let (ri, rj) = (fi.round(), fj.round());
            let off = (fi - ri).hypot(fj - rj);
            if off > CELL_TOLERANCE || ri.abs() > 12.0 || rj.abs() > 12.0 {
                continue;
            }
            let cell = (ri as i32, rj as i32);
            let taken = cells.iter().any(|(c, _)| *c == cell);
            let adjacent = cells.iter().any(|((i, j), _)| (i - cell.0).abs() <= 1 && (j - cell.1).abs() <= 1);
            if taken || !adjacent {
                continue;
            }
            match proposals.iter_mut().find(|p| p.0 == cell) {
                Some(p) if p.2 <= off => {}
                Some(p) => *p = (cell, k, off),
                None => proposals.push((cell, k, off)),
            }
        }
        let before = cells.len();
        for (cell, k, _) in proposals {
            let mut next = cells.clone();
            next.push((cell, k));
            let (i0, i1, j0, j1) = Lattice::span(&next);
            let (a, b) = (i1 - i0 + 1, j1 - j0 + 1);
            if a.max(b) as usize <= CHECKER_COLUMNS && a.min(b) as usize <= CHECKER_ROWS {
                cells = next;
            }
        }
        if cells.len() == before {
            break;
        }
        map = Homography::fit(&pairs(&cells))?;
    }
    (cells.len() >= MIN_FOUND).then_some(Lattice { cells, map })
}

/// Tries every unmirrored placement of the chart over the lattice's block; the best one
/// that passes the acceptance tests.
fn label_and_fit(image: &RgbImage, lattice: &Lattice) -> Option<CheckerDetection> {
    let (i0, i1, j0, j1) = Lattice::span(&lattice.cells);
    let (span_i, span_j) = (i1 - i0 + 1, j1 - j0 + 1);
    let (cols, rows) = (CHECKER_COLUMNS as i32, CHECKER_ROWS as i32);
    let mut best: Option<CheckerDetection> = None;
    // Chart (col, row) → lattice cell: columns along i or along j, each axis either way.
    for transpose in [false, true] {
        let (along_i, along_j) = if transpose { (rows, cols) } else { (cols, rows) };
        if span_i > along_i || span_j > along_j {
            continue;
        }
        for (si, sj) in [(1, 1), (1, -1), (-1, 1), (-1, -1)] {
            for oi in 0..=(along_i - span_i) {
                for oj in 0..=(along_j - span_j) {
                    // Cells i0 - oi .. i0 - oi + along_i - 1 cover the chart's axis.
                    let base_i = i0 - oi;
                    let base_j = j0 - oj;
                    let cell_of = |col: f64, row: f64| -> [f64; 2] {
                        let (a, b) = if transpose { (row, col) } else { (col, row) };
                        let (a_n, b_n) = (f64::from(along_i - 1), f64::from(along_j - 1));
                        let ci = if si > 0 { a } else { a_n - a };
                        let cj = if sj > 0 { b } else { b_n - b };
                        [f64::from(base_i) + ci, f64::from(base_j) + cj]
                    };
                    if let Some(d) = place(image, lattice, &cell_of) {
                        if best.as_ref().is_none_or(|b| d.median_delta_e < b.median_delta_e) {
                            best = Some(d);
                        }
                    }
                }
            }
        }
    }
    best
}

/// Samples and fits one placement of the chart (`cell_of(col, row)` its lattice cell).
fn place(image: &RgbImage, lattice: &Lattice, cell_of: &dyn Fn(f64, f64) -> [f64; 2]) -> Option<CheckerDetection> {
    let map = &lattice.map;
    let at = |col: f64, row: f64| {
        let c = cell_of(col, row);
        map.map(c[0], c[1])
    };
    // Unmirrored: the chart's column axis turns clockwise (image y down) into its row axis.
    let (c, r, o) = (at(3.0, 1.5)?, at(2.5, 2.0)?, at(2.5, 1.5)?);
    let cross = (c[0] - o[0]) * (r[1] - o[1]) - (c[1] - o[1]) * (r[0] - o[0]);
    if cross <= 0.0 {
        return None;
    }
    let (w, h) = (image.width as f64, image.height as f64);
    let inside = |p: [f64; 2]| p[0] >= 0.0 && p[1] >= 0.0 && p[0] <= w - 1.0 && p[1] <= h - 1.0;
    let mut patches = [[0.0f64; 3]; 24];
    let mut centres = [[0.0f64; 2]; 24];
    let mut samples = Vec::with_capacity(49);
    for k in 0..24 {
        let (col, row) = ((k % CHECKER_COLUMNS) as f64, (k / CHECKER_COLUMNS) as f64);
        for (dc, dr) in [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)] {
            if !inside(at(col + dc * PATCH_HALF, row + dr * PATCH_HALF)?) {
                return None;
            }
        }
        centres[k] = at(col, row)?;
        samples.clear();
        for a in 0..7 {
            for b in 0..7 {
                let (dc, dr) = ((a as f64 / 3.0 - 1.0) * SAMPLE_HALF, (b as f64 / 3.0 - 1.0) * SAMPLE_HALF);
                let p = at(col + dc, row + dr)?;
                samples.push(image.sample_linear(p[0], p[1])?);
            }
        }
        patches[k] = trimmed_mean(&samples)?.0;
    }
    let y = |c: [f64; 3]| 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    let clipped = |c: [f64; 3]| c.iter().any(|v| *v >= CLIPPED);
    for k in NEUTRAL_PATCHES.start..NEUTRAL_PATCHES.end - 1 {
        let (a, b) = (patches[k], patches[k + 1]);
        if y(a) <= y(b) && !(clipped(a) && clipped(b)) {
            return None;
        }
    }
    let fit = fit_card(&patches)?;
    let mut de = fit.delta_e.clone();
    de.sort_by(|a, b| a.total_cmp(b));
    let (median, tail, max) = (de[de.len() / 2], de[de.len().saturating_sub(3)], de[de.len() - 1]);
    (median <= MAX_MEDIAN_DE && tail <= MAX_TAIL_DE).then_some(CheckerDetection {
        patches_linear: patches,
        centres,
        found: lattice.cells.len(),
        gains: fit.gains,
        neutrals_used: fit.neutrals_used,
        median_delta_e: median,
        max_delta_e: max,
    })
}

/// Gains and light falloff of a card, and each usable patch's CIEDE2000 after them.
struct CardFit {
    gains: [f64; 3],
    neutrals_used: usize,
    delta_e: Vec<f64>,
}

/// Fits per-channel gains (least squares over the usable neutral patches) and a planar
/// falloff `exp(β · (col − 2.5, row − 1.5))` of the light over the card (least squares on
/// the patches' log luminance ratios), alternately, three rounds.
fn fit_card(measured: &[[f64; 3]; 24]) -> Option<CardFit> {
    let reference = checker_reference_linear();
    let y = |c: [f64; 3]| 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    let usable = |c: [f64; 3]| c.iter().all(|v| *v < CLIPPED) && y(c) >= NOISE_FLOOR;
    let pos = |k: usize| ((k % CHECKER_COLUMNS) as f64 - 2.5, (k / CHECKER_COLUMNS) as f64 - 1.5);
    let neutrals: Vec<usize> = NEUTRAL_PATCHES.filter(|&k| usable(measured[k])).collect();
    if neutrals.len() < 3 {
        return None;
    }
    let mut beta = [0.0f64; 2];
    let mut gains = [1.0f64; 3];
    let shade = |beta: [f64; 2], k: usize| {
        let (x, r) = pos(k);
        (beta[0] * x + beta[1] * r).exp()
    };
    for _ in 0..3 {
        for (c, g) in gains.iter_mut().enumerate() {
            let (mut num, mut den) = (0.0, 0.0);
            for &k in &neutrals {
                let m = measured[k][c] / shade(beta, k);
                num += m * reference[k][c];
                den += m * m;
            }
            if den <= 0.0 {
                return None;
            }
            *g = num / den;
        }
        // Residual falloff: ln(Y(g·m) / Y(ref)) = δ + β'·pos, least squares.
        let mut ata = [[0.0f64; 8]; 8];
        let mut atb = [0.0f64; 8];
        for k in (0..24).filter(|&k| usable(measured[k]) && y(reference[k]) > 0.01) {
            let m = [0, 1, 2].map(|c| measured[k][c] * gains[c] / shade(beta, k));
            let rho = (y(m).max(1e-6) / y(reference[k])).ln();
            let (x, r) = pos(k);
            let row = [1.0, x, r];
            for a in 0..3 {
                atb[a] += row[a] * rho;
                for b in 0..3 {
                    ata[a][b] += row[a] * row[b];
                }
            }
        }
        let step = solve(&mut ata, &mut atb, 3)?;
        beta = [beta[0] + step[1], beta[1] + step[2]];
    }
    let falloff = (beta[0].abs() * 5.0 + beta[1].abs() * 3.0).exp();
    if falloff > MAX_FALLOFF {
        return None;
    }
    let delta_e = (0..24)
        .filter(|&k| measured[k].iter().all(|v| *v < CLIPPED))
        .map(|k| {
            let m = [0, 1, 2].map(|c| measured[k][c] * gains[c] / shade(beta, k));
            delta_e2000(lab(m), lab(reference[k]))
        })
        .collect::<Vec<_>>();
    (delta_e.len() >= 12).then_some(CardFit { gains, neutrals_used: neutrals.len(), delta_e })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::colour::{linear_to_srgb8, srgb_to_linear};
    use crate::phantom::gaussian;

    /// A synthetic photo of a card: where it is, how it is lit, what it shows.
    #[derive(Clone)]
    struct Scene {
        /// Card centre in the image, pixels.
        centre: [f64; 2],
        /// In-plane rotation, degrees.
        rotation_deg: f64,
        /// Tilt out of the image plane, degrees, about the axis at `tilt_axis_deg`.
        tilt_deg: f64,
        tilt_axis_deg: f64,
        /// Patch pitch when facing the camera, pixels.
        pitch_px: f64,
        /// Linear RGB cast and exposure.
        cast: [f64; 3],
        ev: f64,
        /// Patch colours (linear, chart order).
        patches: [[f64; 3]; 24],
        /// Mirror the card (as seen from behind).
        mirrored: bool,
        seed: u64,
    }

    const W: usize = 480;
    const H: usize = 360;
    const FOCAL: f64 = 500.0;

    impl Scene {
        fn card(rotation_deg: f64, pitch_px: f64) -> Scene {
            Scene {
                centre: [240.0, 180.0],
                rotation_deg,
                tilt_deg: 0.0,
                tilt_axis_deg: 0.0,
                pitch_px,
                cast: [1.0; 3],
                ev: 0.0,
                patches: *checker_reference_linear(),
                mirrored: false,
                seed: 7,
            }
        }

        /// Rotation of the card plane: tilt about an in-plane axis, then the in-plane turn.
        fn rotation(&self) -> [[f64; 3]; 3] {
            let (a, t, r) =
                (self.tilt_axis_deg.to_radians(), self.tilt_deg.to_radians(), self.rotation_deg.to_radians());
            let axis = [a.cos(), a.sin(), 0.0];
            // Rodrigues about `axis` by t, then about z by r.
            let (s, c) = t.sin_cos();
            let k = |i: usize, j: usize| {
                let cross = [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]];
                let id = if i == j { 1.0 } else { 0.0 };
                id * c + s * cross[i][j] + (1.0 - c) * axis[i] * axis[j]
            };
            let tilt: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| k(i, j)));
            let (sr, cr) = r.sin_cos();
            let turn = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
            mat_mul(&turn, &tilt)
        }

        /// Card coordinates (pitches, x right, y down from the card centre) → pixel.
        fn project(&self, x: f64, y: f64) -> [f64; 2] {
            let r = self.rotation();
            let p = [x * self.pitch_px, y * self.pitch_px, 0.0];
            let q = mat_vec(&r, p);
            let z = FOCAL + q[2];
            [self.centre[0] + FOCAL * q[0] / z, self.centre[1] + FOCAL * q[1] / z]
        }

        /// Pixel → card coordinates (pitches).
        fn unproject(&self, u: f64, v: f64) -> Option<[f64; 2]> {
            let r = self.rotation();
            let n = [r[0][2], r[1][2], r[2][2]];
            let d = [(u - self.centre[0]) / FOCAL, (v - self.centre[1]) / FOCAL, 1.0];
            let nd = n[0] * d[0] + n[1] * d[1] + n[2] * d[2];
            if nd.abs() < 1e-9 {
                return None;
            }
            let t = n[2] * FOCAL / nd;
            let p = [t * d[0], t * d[1], t * d[2] - FOCAL];
            // Rᵀ p.
            let x = r[0][0] * p[0] + r[1][0] * p[1] + r[2][0] * p[2];
            let y = r[0][1] * p[0] + r[1][1] * p[1] + r[2][1] * p[2];
            Some([x / self.pitch_px, y / self.pitch_px])
        }

        /// True patch centres, chart order.
        fn centres(&self) -> Vec<[f64; 2]> {
            (0..24)
                .map(|k| {
                    let (c, r) = ((k % 6) as f64 - 2.5, (k / 6) as f64 - 1.5);
                    self.project(if self.mirrored { -c } else { c }, r)
                })
                .collect()
        }

        /// Reflectance seen at a pixel: the card, or a mottled skin-like background.
        fn albedo(&self, u: f64, v: f64) -> [f64; 3] {
            if let Some([mut x, y]) = self.unproject(u, v) {
                if self.mirrored {
                    x = -x;
                }
                if x.abs() <= 3.4 && y.abs() <= 2.4 {
                    let (col, row) = ((x + 2.5).round(), (y + 1.5).round());
                    let inside = (0.0..6.0).contains(&col) && (0.0..4.0).contains(&row);
                    if inside && (x - (col - 2.5)).abs() <= 0.4 && (y - (row - 1.5)).abs() <= 0.4 {
                        return self.patches[row as usize * 6 + col as usize];
                    }
                    return [0.012; 3];
                }
            }
            let m = 1.0 + 0.08 * ((u / 23.0).sin() * (v / 31.0).cos()) + 0.05 * ((u * 0.9).sin() * (v * 1.1).sin());
            [0.45 * m, 0.25 * m, 0.16 * m]
        }

        /// The sRGB image: 3 × 3 supersampled, a left-to-right light falloff, the cast,
        /// the exposure and the phantoms' sensor noise (shot + read).
        fn render(&self) -> RgbImage {
            let mut rng = StdRng::seed_from_u64(self.seed);
            let mut img = RgbImage::new(W, H);
            let k = 0.5 * 2f64.powf(self.ev);
            for j in 0..H {
                for i in 0..W {
                    let mut acc = [0.0; 3];
                    for a in 0..3 {
                        for b in 0..3 {
                            let (u, v) = (i as f64 + (a as f64 - 1.0) / 3.0, j as f64 + (b as f64 - 1.0) / 3.0);
                            for (sum, al) in acc.iter_mut().zip(self.albedo(u, v)) {
                                *sum += al / 9.0;
                            }
                        }
                    }
                    let light = 0.85 + 0.3 * i as f64 / W as f64;
                    let px = &mut img.data[(j * W + i) * 3..(j * W + i) * 3 + 3];
                    for ((out, sum), cast) in px.iter_mut().zip(acc).zip(self.cast) {
                        let v = sum * light * k * cast;
                        let sd = (0.0003 * v + 0.0015f64.powi(2)).sqrt();
                        *out = linear_to_srgb8((v + sd * gaussian(&mut rng)) as f32);
                    }
                }
            }
            img
        }
    }

    /// Detects the card and checks every patch centre (within 1.5 px of the truth, which also
    /// checks the orientation) and that the gains undo the cast to within 4 %.
    fn assert_found(scene: &Scene, what: &str) -> CheckerDetection {
        let det = detect_checker(&scene.render()).unwrap_or_else(|| panic!("{what}: no card found"));
        for (k, (got, want)) in det.centres.iter().zip(scene.centres()).enumerate() {
            let off = (got[0] - want[0]).hypot(got[1] - want[1]);
            assert!(off < 1.5, "{what}: patch {k} at {got:?}, truly at {want:?}");
        }
        let g = det.gains;
        let cast = [g[0] * scene.cast[0] / (g[1] * scene.cast[1]), g[2] * scene.cast[2] / (g[1] * scene.cast[1])];
        assert!((cast[0] - 1.0).abs() < 0.04 && (cast[1] - 1.0).abs() < 0.04, "{what}: cast left {cast:?}");
        assert!(det.median_delta_e <= MAX_MEDIAN_DE, "{what}: {}", det.median_delta_e);
        det
    }

    #[test]
    fn reference_colours_are_the_published_ones() {
        // CIELAB is relative to its white: the linear sRGB references back in CIELAB (D65)
        // are the published D50 values up to the adaptation (Bradford is not Lab's own
        // white scaling: up to ~4.2 on the saturated blues), exactly so on the neutrals; cyan is clipped
        // to sRGB.
        for (k, published) in CHECKER_LAB_D50.iter().enumerate() {
            let de = delta_e2000(lab(checker_reference_linear()[k]), *published);
            let bar = match k {
                17 => 6.0,
                18..=23 => 0.5,
                _ => 5.0,
            };
            assert!(de < bar, "patch {k}: ΔE00 {de:.2}");
        }
        // X-Rite's sRGB of dark skin and of black 2.
        let srgb = |k: usize| checker_reference_linear()[k].map(|v| linear_to_srgb8(v as f32));
        for (k, want) in [(0, [115, 82, 68]), (23, [52, 52, 52])] {
            let got = srgb(k);
            assert!((0..3).all(|c| (i32::from(got[c]) - want[c]).abs() <= 3), "patch {k}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn delta_e2000_matches_sharmas_test_data() {
        let cases = [
            ([50.0, 2.6772, -79.7751], [50.0, 0.0, -82.7485], 2.0425),
            ([50.0, 2.5, 0.0], [73.0, 25.0, -18.0], 27.1492),
            ([60.2574, -34.0099, 36.2677], [60.4626, -34.1751, 39.4387], 1.2644),
        ];
        for (a, b, want) in cases {
            assert!((delta_e2000(a, b) - want).abs() < 1e-3, "{a:?} {b:?}: {}", delta_e2000(a, b));
        }
    }

    #[test]
    fn a_card_is_found_at_any_rotation() {
        for deg in [0.0, 90.0, 180.0, 270.0, 17.0, 133.0, 251.0, 318.0] {
            assert_found(&Scene::card(deg, 22.0), &format!("{deg}°"));
        }
    }

    #[test]
    fn a_tilted_card_is_found() {
        for (tilt, axis, turn) in [(30.0, 0.0, 10.0), (45.0, 90.0, 200.0), (45.0, 30.0, 75.0), (40.0, 120.0, 300.0)] {
            let scene = Scene { tilt_deg: tilt, tilt_axis_deg: axis, ..Scene::card(turn, 24.0) };
            assert_found(&scene, &format!("tilt {tilt}° about {axis}°, turned {turn}°"));
        }
    }

    #[test]
    fn a_card_is_found_from_full_size_down_to_six_pixel_patches() {
        // Patches are 0.8 pitch: 8 px pitch is 6.4 px patches.
        for pitch in [8.0, 11.0, 16.0, 22.0, 30.0] {
            assert_found(&Scene::card(23.0, pitch), &format!("pitch {pitch} px"));
        }
    }

    #[test]
    fn casts_and_exposures_are_measured() {
        for (name, cast) in [("neutral", [1.0, 1.0, 1.0]), ("warm", [1.0, 0.68, 0.36]), ("cold", [0.7, 0.83, 1.0])] {
            for ev in [-1.5, 0.0, 1.5] {
                let scene = Scene { cast, ev, seed: 11, ..Scene::card(64.0, 18.0) };
                let det = assert_found(&scene, &format!("{name} {ev:+} EV"));
                // At the card's centre the light is 1.0 (0.85 + 0.3 · ½): the green gain
                // undoes the exposure.
                let want = 1.0 / (0.5 * 2f64.powf(ev) * cast[1]);
                assert!(
                    (det.gains[1] / want - 1.0).abs() < 0.06,
                    "{name} {ev:+}: green gain {} vs {want}",
                    det.gains[1]
                );
            }
        }
    }

    #[test]
    fn no_card_no_detection() {
        let scene = Scene { centre: [5000.0, 5000.0], ..Scene::card(0.0, 20.0) };
        assert_eq!(detect_checker(&scene.render()), None);
    }

    #[test]
    fn a_card_partly_out_of_frame_is_not_detected() {
        // A column, a row or a corner cut by the border.
        for centre in [[W as f64 - 40.0, 180.0], [240.0, 25.0], [30.0, 20.0], [W as f64 - 70.0, H as f64 - 30.0]] {
            let scene = Scene { centre, ..Scene::card(0.0, 22.0) };
            assert_eq!(detect_checker(&scene.render()), None, "centre {centre:?}");
        }
    }

    #[test]
    fn a_grid_of_other_colours_is_not_a_checker() {
        for seed in 0..6u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut patches = [[0.0; 3]; 24];
            for p in &mut patches {
                *p = [0, 1, 2].map(|_| f64::from(srgb_to_linear(rng.gen_range(0.1f32..0.95))));
            }
            if seed % 2 == 0 {
                // Keep the real neutral row: only the colours betray it.
                patches[18..24].copy_from_slice(&checker_reference_linear()[18..24]);
            }
            let scene = Scene { patches, ..Scene::card(12.0, 22.0) };
            assert_eq!(detect_checker(&scene.render()), None, "seed {seed}");
        }
    }

    #[test]
    fn a_mirrored_card_is_not_detected() {
        for deg in [0.0, 90.0, 180.0, 37.0] {
            let scene = Scene { mirrored: true, ..Scene::card(deg, 22.0) };
            assert_eq!(detect_checker(&scene.render()), None, "{deg}°");
        }
    }
}
