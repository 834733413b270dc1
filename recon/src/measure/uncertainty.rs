//! The `±` of every measurement, by error propagation, then one calibrated coverage
//! factor per quantity.
//!
//! Sources, each a standard deviation from the scan's own evidence:
//! - **Rim position**, per outline sector: the Fisher information of that sector's rim
//!   fit (inflated for correlated profile samples), independent between sectors, so the
//!   area's variance is `Σ(ℓᵢσᵢ)²` — not the scatter times the perimeter, which treats
//!   every sector as moving together and is √N_sectors too wide. A common-mode part
//!   (model bias, a tenth of a voxel of surface position) moves every sector together.
//! - **Scale** (polygon only): a keyframe's depth error scales the whole outline.
//!   A rigid shift of the outline (pose jitter) changes neither area, volume (`∮ n dl =
//!   0`), length nor width to first order.
//! - **Skin** under the wound: the skin fit's residual over the parameters it spends,
//!   inflated by `N/N_eff` (fused-surface noise is correlated over about 1.5 mm, three
//!   cells), plus half the disagreement of the two skin models.
//! - **Fused surface** at the deepest point, from the fusion weight.
//! - **Spill**: a quarter of the spill correction (`volume.rs`) as its own uncertainty.
//!
//! The coverage factors `K_*` were chosen so that every interval of the phantom suite
//! contains the truth (`cargo run -p coherency-recon --example calibration`, table in
//! `docs/measurement.md`); `MeasureConfig::coverage_factor` scales them (3 = as
//! calibrated).

/// What is known about the outline's position.
#[derive(Debug, Clone, Default)]
pub(super) struct Boundary {
    /// Outline length of each sector, metres.
    pub sector_len_m: Vec<f64>,
    /// Independent standard deviation of each sector's position, metres.
    pub sector_sd_m: Vec<f64>,
    /// Standard deviation of a shift common to the whole outline, metres.
    pub common_sd_m: f64,
    /// Relative standard deviation of the outline's scale.
    pub scale_sd: f64,
    /// Rigid-shift standard deviation, metres: moves the whole outline, which changes
    /// neither area, volume, length nor width to first order; kept for the record.
    #[allow(dead_code)]
    pub rigid_sd_m: f64,
    /// Depth of the wall at the rim (bed-corner depth, length-weighted mean), metres.
    pub rim_depth_m: f64,
    /// Wall surface the fused scan may not show (steep walls smeared by the views'
    /// tilt), m²: the bed area may be short by up to this much.
    pub hidden_wall_m2: f64,
}

/// Figures the intervals are built around (SI units).
#[derive(Debug, Clone, Copy)]
pub(super) struct Figures {
    pub area: f64,
    pub perimeter: f64,
    pub volume: f64,
    pub spill: f64,
    pub length: f64,
    pub width: f64,
    /// Skin prediction standard deviation, averaged over the wound, metres.
    pub sigma_skin: f64,
    /// Fused-surface standard deviation per cell at the deepest point, metres.
    pub sigma_h: f64,
    /// Voxel size, metres.
    pub voxel: f64,
    /// Fraction of the wound without a fused surface.
    pub missing_fraction: f64,
    /// Depth the blur may have taken off the deepest point (metres): `tr(H)/2·σ²` of the
    /// fitted vertex, up to twice that for a V-shaped bottom.
    pub bottom_fill: f64,
    /// RMS distance of the outline to a heavily smoothed copy, metres: the longest chord
    /// picks the outline's extremes, so its roughness biases length and width upward.
    pub roughness: f64,
}

/// Half-widths (SI units).
#[derive(Debug, Clone, Copy)]
pub(super) struct HalfWidths {
    pub area: f64,
    pub bed_area: f64,
    pub perimeter: f64,
    pub length: f64,
    pub width: f64,
    pub max_depth: f64,
    pub mean_depth: f64,
    pub volume: f64,
}

/// Coverage factors, per quantity, as calibrated on the phantom suite.
const K_AREA: f64 = 3.0;
const K_LENGTH: f64 = 3.6;
const K_DEPTH: f64 = 3.0;
const K_VOLUME: f64 = 3.0;

/// Propagates the sources into half-widths; `coverage` scales the calibrated factors
/// (`MeasureConfig::coverage_factor / 3`).
pub(super) fn half_widths(b: &Boundary, f: &Figures, coverage: f64) -> HalfWidths {
    let floor = 0.1 * f.voxel;
    // Rim: independent sectors, plus the common shift (its floor: a tenth of a voxel).
    let ind: f64 = b.sector_len_m.iter().zip(&b.sector_sd_m).map(|(l, s)| (l * s).powi(2)).sum::<f64>().sqrt();
    let common = (b.common_sd_m.powi(2) + floor.powi(2)).sqrt();
    let n = b.sector_sd_m.len().max(1) as f64;
    let end_sd = (b.sector_sd_m.iter().map(|s| s * s).sum::<f64>() / n).sqrt();
    // Evidence widens: cells without a surface inside the wound.
    let missing = 1.0 + 4.0 * f.missing_fraction;

    let sd_area = (ind.powi(2) + (f.perimeter * common).powi(2) + (2.0 * f.area * b.scale_sd).powi(2)).sqrt() * missing;
    let sd_len = |l: f64| {
        (2.0 * end_sd.powi(2) + (2.0 * common).powi(2) + (l * b.scale_sd).powi(2) + (2.0 * f.roughness).powi(2)).sqrt()
            * missing
    };
    let sd_depth =
        (f.sigma_skin.powi(2) + (0.5 * f.sigma_h).powi(2) + floor.powi(2) + (2.0 * f.bottom_fill / K_DEPTH).powi(2))
            .sqrt()
            * missing;
    let sd_vol = ((f.area * f.sigma_skin).powi(2)
        + (b.rim_depth_m * ind).powi(2)
        + (b.rim_depth_m * f.perimeter * common).powi(2)
        + (0.25 * f.spill).powi(2)
        + (3.0 * f.volume * b.scale_sd).powi(2))
    .sqrt()
        * missing;
    let c = coverage / 3.0;
    let area = K_AREA * c * sd_area;
    let volume = K_VOLUME * c * sd_vol;
    let mean_depth = f.volume / f.area.max(1e-12);
    HalfWidths {
        area,
        bed_area: 1.2 * area + 0.01 * f.area + b.hidden_wall_m2,
        perimeter: K_LENGTH * c * (std::f64::consts::TAU * common + f.perimeter * b.scale_sd) + 0.03 * f.perimeter,
        length: K_LENGTH * c * sd_len(f.length),
        width: K_LENGTH * c * sd_len(f.width),
        max_depth: K_DEPTH * c * sd_depth,
        mean_depth: mean_depth * (volume / f.volume.max(1e-15) + area / f.area.max(1e-12)),
        volume,
    }
}
