//! Tissue composition on the mesh.
//!
//! 1. The wound surface and the periwound ring (`region.rs`).
//! 2. Calibration from the periwound ring (`calibrate.rs`).
//! 3. Each seen wound vertex becomes a [`TissueSample`] (calibrated colour, its CIELAB,
//!    robust statistics of its two-ring neighbourhood, the periwound's uncalibrated colour)
//!    and gets the classifier's probabilities, then averaged over its one-ring
//!    (area-weighted), which removes isolated single-vertex labels; the class is the most
//!    probable.
//! 4. Unseen wound vertices take the class of the nearest seen one along the mesh
//!    (breadth-first); a wound patch no seen vertex reaches keeps no class and its area is
//!    shared out in proportion.
//! 5. Corrections: a vertex inside a correction's outline takes its class.
//! 6. Areas are sums of vertex areas (a third of each wound triangle's 3D area).
//!
//! Uncertainty of a share `p` (percent): `±` is [`PM_FLOOR`] points plus
//! `PM_SOFT · 100 · Σ aᵢ·(1 − max probᵢ) / A` (the area-weighted ambiguity of the
//! samples, which is largest at class boundaries) scaled by `√(p/100)` plus the unseen
//! area in points; the constants were set on the training phantoms (`docs/measurement.md`).

use std::collections::VecDeque;

use super::calibrate::{periwound_gains, Calibration};
use super::region::{components, periwound_ring, wound_region, TangentFrame, WoundRegion};
use super::{
    linear_to_lab, log_chroma, TissueClass, TissueClassifier, TissueComposition, TissueCorrection, TissueError,
    TissueSample, TissueShare, VertexColours,
};
use crate::measure::WoundMeasurements;
use crate::mesh::Mesh;

/// Least share of the wound surface that must be seen in colour.
pub const MIN_COLOURED_FRACTION: f64 = 0.5;
/// Floor of every share's `±`, percentage points.
pub const PM_FLOOR: f64 = 2.0;
/// Weight of the samples' ambiguity in the `±`.
pub const PM_SOFT: f64 = 1.0;

/// Tissue composition and the per-vertex classes it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueAnalysis {
    /// The composition.
    pub composition: TissueComposition,
    /// Per mesh vertex (same order as `Mesh::positions`): its class on the wound surface,
    /// `None` off the wound (or on a wound patch no seen vertex reaches).
    pub vertex_classes: Vec<Option<TissueClass>>,
}

/// Classifies the wound surface inside `wound.outline_world` on the mesh: triangles whose
/// projection on the skin tangent plane lies inside the outline and that belong to the
/// wound (not some unrelated surface behind); areas are true 3D triangle areas.
/// Calibrates from the periwound skin ring,
/// classifies each vertex, applies corrections (a vertex inside a correction's outline
/// takes its class), and reports shares.
pub fn tissue_composition(
    mesh: &Mesh,
    colours: &VertexColours,
    wound: &WoundMeasurements,
    classifier: &dyn TissueClassifier,
    corrections: &[TissueCorrection],
) -> Result<TissueComposition, TissueError> {
    tissue_analysis(mesh, colours, wound, classifier, corrections).map(|a| a.composition)
}

/// [`tissue_composition`] with, per mesh vertex, its class on the wound surface (`None` off
/// the wound): for a tissue map or a GLB coloured by class (e.g. with
/// [`TissueClass::display_srgb`]).
pub fn tissue_analysis(
    mesh: &Mesh,
    colours: &VertexColours,
    wound: &WoundMeasurements,
    classifier: &dyn TissueClassifier,
    corrections: &[TissueCorrection],
) -> Result<TissueAnalysis, TissueError> {
    let n = mesh.positions.len();
    let seen = |i: usize| colours.weight.get(i).is_some_and(|w| *w > 0.0);
    let Samples { frame, region, calibration, adjacency, wound_vertices, seen_area, coloured_fraction, samples } =
        wound_samples_inner(mesh, colours, wound)?;
    let mut probs = vec![[0.0f32; 5]; n];
    for (i, sample) in &samples {
        probs[*i as usize] = classifier.classify(sample);
    }

    // One-ring smoothing of the probabilities, then the most probable class.
    let mut class: Vec<Option<TissueClass>> = vec![None; n];
    let mut ambiguity = 0.0;
    for &i in &wound_vertices {
        if !seen(i) {
            continue;
        }
        let mut acc = probs[i].map(|p| p * region.vertex_area[i] as f32);
        let mut w = region.vertex_area[i] as f32;
        for &a in &adjacency[i] {
            if seen(a as usize) {
                let wa = region.vertex_area[a as usize] as f32;
                for k in 0..5 {
                    acc[k] += wa * probs[a as usize][k];
                }
                w += wa;
            }
        }
        let p = acc.map(|v| v / w.max(1e-20));
        let (best, pmax) = (0..5).map(|k| (k, p[k])).fold((0, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
        class[i] = Some(TissueClass::ALL[best]);
        ambiguity += region.vertex_area[i] * f64::from(1.0 - pmax);
    }
    ambiguity /= seen_area;

    // Unseen wound vertices: nearest seen class along the mesh.
    let mut queue: VecDeque<u32> = wound_vertices.iter().filter(|&&i| class[i].is_some()).map(|&i| i as u32).collect();
    while let Some(v) = queue.pop_front() {
        let c = class[v as usize];
        for &a in &adjacency[v as usize] {
            if class[a as usize].is_none() {
                class[a as usize] = c;
                queue.push_back(a);
            }
        }
    }

    // Corrections.
    for corr in corrections {
        let poly = frame.polygon(&corr.outline_world);
        if !poly.is_usable() {
            continue;
        }
        for &i in &wound_vertices {
            if poly.contains(frame.project(super::region::pos(mesh, i as u32))) {
                class[i] = Some(corr.class);
            }
        }
    }

    let mut area = [0.0f64; 5];
    for &i in &wound_vertices {
        if let Some(c) = class[i] {
            area[c.index()] += region.vertex_area[i];
        }
    }
    let classified: f64 = area.iter().sum();
    let scale = if classified > 0.0 { region.area_m2 / classified } else { 0.0 };
    let unseen_pts = (1.0 - coloured_fraction) * 100.0;
    let shares = TissueClass::ALL
        .iter()
        .map(|&c| {
            let frac = area[c.index()] * scale / region.area_m2;
            let percent = frac * 100.0;
            let percent_pm = PM_FLOOR + PM_SOFT * 100.0 * ambiguity * frac.sqrt() + unseen_pts;
            TissueShare { class: c, area_mm2: area[c.index()] * scale * 1e6, percent, percent_pm }
        })
        .collect();
    let vertex_classes = (0..n).map(|i| if region.vertex_area[i] > 0.0 { class[i] } else { None }).collect();
    Ok(TissueAnalysis {
        composition: TissueComposition {
            shares,
            wound_area_mm2: region.area_m2 * 1e6,
            coloured_fraction,
            calibration,
            classifier: classifier.name().to_string(),
        },
        vertex_classes,
    })
}

/// Mean and standard deviation of `values` over the vertices `hood` (`m` of them).
fn mean_sd(hood: &[u32], values: &[[f32; 3]], m: f32) -> ([f32; 3], [f32; 3]) {
    let mut mean = [0.0f32; 3];
    for &v in hood {
        for (acc, x) in mean.iter_mut().zip(values[v as usize]) {
            *acc += x / m;
        }
    }
    let mut var = [0.0f32; 3];
    for &v in hood {
        for c in 0..3 {
            var[c] += (values[v as usize][c] - mean[c]).powi(2) / m;
        }
    }
    (mean, var.map(f32::sqrt))
}

/// Per channel, the median of `values` over the vertices `hood` and the median absolute
/// deviation from it (×1.4826); `scratch` is reused between calls.
fn median_mad(hood: &[u32], values: &[[f32; 3]], scratch: &mut Vec<f32>) -> ([f32; 3], [f32; 3]) {
    let mut median = [0.0f32; 3];
    let mut mad = [0.0f32; 3];
    for c in 0..3 {
        scratch.clear();
        scratch.extend(hood.iter().map(|&v| values[v as usize][c]));
        let mid = scratch.len() / 2;
        let m = *scratch.select_nth_unstable_by(mid, f32::total_cmp).1;
        for x in scratch.iter_mut() {
            *x = (*x - m).abs();
        }
        mad[c] = 1.4826 * *scratch.select_nth_unstable_by(mid, f32::total_cmp).1;
        median[c] = m;
    }
    (median, mad)
}

/// What the classifier is given: every seen wound vertex's [`TissueSample`] (vertex
/// index, sample), after calibration. Used by the training-data dump
/// (`recon/examples/tissue_samples.rs`) and by [`tissue_analysis`].
pub fn wound_samples(
    mesh: &Mesh,
    colours: &VertexColours,
    wound: &WoundMeasurements,
) -> Result<(Calibration, Vec<(u32, TissueSample)>), TissueError> {
    wound_samples_inner(mesh, colours, wound).map(|s| (s.calibration, s.samples))
}

struct Samples {
    frame: TangentFrame,
    region: WoundRegion,
    calibration: Calibration,
    adjacency: Vec<Vec<u32>>,
    wound_vertices: Vec<usize>,
    seen_area: f64,
    coloured_fraction: f64,
    samples: Vec<(u32, TissueSample)>,
}

fn wound_samples_inner(
    mesh: &Mesh,
    colours: &VertexColours,
    wound: &WoundMeasurements,
) -> Result<Samples, TissueError> {
    let n = mesh.positions.len();
    let seen = |i: usize| colours.weight.get(i).is_some_and(|w| *w > 0.0);
    let frame = TangentFrame::new(wound.centre_world, wound.normal_world);
    let polygon = frame.polygon(&wound.outline_world);
    if !polygon.is_usable() || colours.linear_rgb.len() != n || colours.weight.len() != n {
        return Err(TissueError::NoWoundSurface);
    }
    let labels = components(mesh);
    let region = wound_region(mesh, &frame, &polygon, &labels).ok_or(TissueError::NoWoundSurface)?;
    if region.area_m2 <= 0.0 {
        return Err(TissueError::NoWoundSurface);
    }
    let wound_vertices: Vec<usize> = (0..n).filter(|&i| region.vertex_area[i] > 0.0).collect();
    let seen_area: f64 = wound_vertices.iter().filter(|&&i| seen(i)).map(|&i| region.vertex_area[i]).sum();
    let coloured_fraction = seen_area / region.area_m2;
    if seen_area <= 0.0 {
        return Err(TissueError::NoColour);
    }
    if coloured_fraction < MIN_COLOURED_FRACTION {
        return Err(TissueError::TooLittleColour { coloured_fraction });
    }

    // Calibration: the periwound is needed in any case (it sets the classifier's scale).
    let ring = periwound_ring(mesh, &frame, &polygon, &labels, region.component);
    let ring_colours: Vec<[f32; 3]> =
        ring.iter().filter(|&&i| seen(i as usize)).map(|&i| colours.linear_rgb[i as usize]).collect();
    let calibration = periwound_gains(&ring_colours)?;
    let periwound_log = log_chroma(calibration.ring_colour().map(|v| v as f32));

    // Adjacency among wound vertices.
    let mut adjacency: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &t in &region.triangles {
        let tri = &mesh.indices[3 * t..3 * t + 3];
        for a in 0..3 {
            for b in 0..3 {
                if a != b && !adjacency[tri[a] as usize].contains(&tri[b]) {
                    adjacency[tri[a] as usize].push(tri[b]);
                }
            }
        }
    }

    // Samples: calibrated colour and its Lab, then neighbourhood statistics.
    let mut lab = vec![[0.0f32; 3]; n];
    let mut logc = vec![[0.0f32; 3]; n];
    let mut rgb = vec![[0.0f32; 3]; n];
    for &i in &wound_vertices {
        if seen(i) {
            rgb[i] = calibration.apply(colours.linear_rgb[i]);
            lab[i] = linear_to_lab(rgb[i]);
            logc[i] = log_chroma(rgb[i]);
        }
    }
    let mut stamp = vec![u32::MAX; n];
    let mut samples = Vec::new();
    let mut hood: Vec<u32> = Vec::new();
    let mut scratch: Vec<f32> = Vec::new();
    for &i in &wound_vertices {
        if !seen(i) {
            continue;
        }
        hood.clear();
        stamp[i] = i as u32;
        hood.push(i as u32);
        for &a in &adjacency[i] {
            for &b in std::iter::once(&a).chain(adjacency[a as usize].iter()) {
                if stamp[b as usize] != i as u32 && seen(b as usize) {
                    stamp[b as usize] = i as u32;
                    hood.push(b);
                }
            }
        }
        let m = hood.len() as f32;
        let (mean, sd) = mean_sd(&hood, &lab, m);
        let (median, _) = median_mad(&hood, &lab, &mut scratch);
        let (_, log_mad) = median_mad(&hood, &logc, &mut scratch);
        let sample = TissueSample {
            rgb: rgb[i],
            lab: lab[i],
            neighbourhood_mean: mean,
            neighbourhood_std: sd,
            neighbourhood_median: median,
            neighbourhood_log_mad: log_mad,
            periwound_log,
        };
        samples.push((i as u32, sample));
    }
    Ok(Samples { frame, region, calibration, adjacency, wound_vertices, seen_area, coloured_fraction, samples })
}
