//! Per-scan colour calibration: diagonal (von Kries) gains in linear RGB.
//!
//! **Periwound** (the only source): the skin ring just outside the outline is assumed to have a
//! fixed reference colour ([`REFERENCE_SKIN_LINEAR`]). Its robust mean (luminance-trimmed:
//! the darkest and brightest [`TRIM`] of the ring's vertices are left out, which drops
//! shadows, highlights, hair and small erythematous patches) is mapped to the reference
//! channel by channel. This removes the illuminant's colour cast and the exposure together,
//! and also normalises the patient's skin tone: tissue is judged relative to the skin
//! around it. Limits: erythema or maceration over much of the ring biases the gains (a red
//! ring makes the bed look less red), and a very dark skin multiplies sensor noise.
//!
//! **Colour checker** (`checker.rs`): when a ColorChecker Classic is seen whole in a colour
//! view, its neutral patches give gains that map the camera's colours to true reflectance
//! colours. They calibrate the *displayed* colours (the mesh's `COLOR_0`) and measure the
//! skin's own tone ([`skin_tone`]); the classifier's inputs stay periwound-normalised, as it
//! was trained (`docs/measurement.md`, "Calibration").

use super::luminance;

/// The periwound reference colour, linear sRGB (a medium skin tone, sRGB ≈ 200 150 120).
pub const REFERENCE_SKIN_LINEAR: [f64; 3] = [0.578, 0.305, 0.188];
/// Share of the darkest and of the brightest ring samples left out of the periwound mean.
pub const TRIM: f64 = 0.2;
/// Periwound samples needed to calibrate.
pub const MIN_PERIWOUND_SAMPLES: usize = 20;
/// Below this linear luminance the periwound is too dark to calibrate from.
pub const MIN_PERIWOUND_LUMINANCE: f64 = 0.004;

/// Where the gains came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationSource {
    /// The skin ring around the outline mapped to the reference skin colour.
    Periwound,
    /// The neutral patches of a ColorChecker Classic card seen in a colour view mapped to
    /// their published colours.
    ColourChecker,
}

impl CalibrationSource {
    /// Stable lowercase name (`periwound`, `colour_checker`).
    pub fn as_str(self) -> &'static str {
        match self {
            CalibrationSource::Periwound => "periwound",
            CalibrationSource::ColourChecker => "colour_checker",
        }
    }
}

/// A per-scan colour calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Where the gains came from.
    pub source: CalibrationSource,
    /// Per-channel linear gains applied to every colour.
    pub gains: [f64; 3],
    /// Samples (vertices or patches) used.
    pub samples: usize,
}

impl Calibration {
    /// Applies the gains to a linear colour.
    pub fn apply(&self, rgb: [f32; 3]) -> [f32; 3] {
        [0, 1, 2].map(|c| rgb[c] * self.gains[c] as f32)
    }

    /// The camera colour (linear RGB) these gains map to [`REFERENCE_SKIN_LINEAR`]: for a
    /// periwound calibration, the ring's trimmed mean as the camera saw it.
    pub fn ring_colour(&self) -> [f64; 3] {
        [0, 1, 2].map(|c| REFERENCE_SKIN_LINEAR[c] / self.gains[c])
    }
}

/// The periwound skin's own colour (linear RGB, reflectance scale) under a card's
/// calibration: the ring's trimmed mean that `periwound`'s gains map to
/// [`REFERENCE_SKIN_LINEAR`], through `card`'s gains. `None` unless `periwound` is a periwound
/// calibration.
pub fn skin_tone(periwound: &Calibration, card: &Calibration) -> Option<[f64; 3]> {
    (periwound.source == CalibrationSource::Periwound && periwound.gains.iter().all(|g| *g > 0.0)).then(|| {
        let ring = periwound.ring_colour();
        [0, 1, 2].map(|c| ring[c] * card.gains[c])
    })
}

/// The luminance-trimmed mean of linear colours, and how many went into it.
pub(crate) fn trimmed_mean(samples: &[[f32; 3]]) -> Option<([f64; 3], usize)> {
    if samples.is_empty() {
        return None;
    }
    let mut order: Vec<(f32, usize)> = samples.iter().enumerate().map(|(i, c)| (luminance(*c), i)).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cut = (order.len() as f64 * TRIM) as usize;
    let kept = &order[cut..order.len() - cut];
    let kept = if kept.is_empty() { &order[..] } else { kept };
    let mut acc = [0.0f64; 3];
    for (_, i) in kept {
        for c in 0..3 {
            acc[c] += f64::from(samples[*i][c]);
        }
    }
    Some((acc.map(|a| a / kept.len() as f64), kept.len()))
}

/// Gains that map the periwound ring's colours to [`REFERENCE_SKIN_LINEAR`].
pub(crate) fn periwound_gains(ring: &[[f32; 3]]) -> Result<Calibration, super::TissueError> {
    if ring.len() < MIN_PERIWOUND_SAMPLES {
        return Err(super::TissueError::NoPeriwound);
    }
    let Some((mean, n)) = trimmed_mean(ring) else { return Err(super::TissueError::NoPeriwound) };
    let y = 0.2126 * mean[0] + 0.7152 * mean[1] + 0.0722 * mean[2];
    if y < MIN_PERIWOUND_LUMINANCE || mean.iter().any(|v| *v <= 1e-5) {
        return Err(super::TissueError::PeriwoundTooDark { luminance: y });
    }
    let gains = [0, 1, 2].map(|c| REFERENCE_SKIN_LINEAR[c] / mean[c]);
    Ok(Calibration { source: CalibrationSource::Periwound, gains, samples: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periwound_gains_map_the_ring_to_the_reference() {
        let ring: Vec<[f32; 3]> = (0..100).map(|i| [0.3 + 0.001 * i as f32, 0.2, 0.1]).collect();
        let cal = periwound_gains(&ring).expect("calibrates");
        let m = trimmed_mean(&ring).expect("mean").0;
        for c in 0..3 {
            assert!((m[c] * cal.gains[c] - REFERENCE_SKIN_LINEAR[c]).abs() < 1e-9);
        }
        assert_eq!(cal.samples, 60);
    }

    #[test]
    fn a_dark_or_missing_ring_is_refused() {
        assert_eq!(periwound_gains(&[]), Err(super::super::TissueError::NoPeriwound));
        let dark = vec![[0.001f32, 0.001, 0.001]; 50];
        assert_eq!(periwound_gains(&dark).map(|_| ()).map_err(|e| e.code()), Err("periwound_too_dark"));
    }
}
