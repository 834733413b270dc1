//! The trajectory chart of the wound report: area over days since the baseline, with the
//! measurement `±` as a band, the four-week threshold, and the projected closure. The axis
//! arithmetic (ticks whose labels never overlap) is separate from the drawing so it can be
//! tested on its own.

use super::doc::{Align, Canvas, Style, Weight, INK, MUTED, RULE};

/// A numeric axis: its range and the values that carry a tick and a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<f64>,
}

/// `lo..hi` widened to steps of 1, 2 or 5 × 10ⁿ, with at most `max_ticks` ticks.
pub fn nice_axis(lo: f64, hi: f64, max_ticks: usize) -> Axis {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let raw = (hi - lo) / max_ticks.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| (hi - lo) / s <= max_ticks as f64).unwrap_or(10.0 * mag);
    axis_with_step(lo, hi, step)
}

fn axis_with_step(lo: f64, hi: f64, step: f64) -> Axis {
    let min = (lo / step).floor() * step;
    let max = (hi / step).ceil() * step;
    let n = ((max - min) / step).round() as usize;
    Axis { min, max, ticks: (0..=n).map(|i| min + i as f64 * step).collect() }
}

/// Day steps a clinician reads easily: days, weeks, fortnights, four-week blocks, quarters.
const DAY_STEPS: [f64; 9] = [1.0, 2.0, 7.0, 14.0, 28.0, 56.0, 84.0, 182.0, 364.0];

/// The day axis over `lo..hi` drawn `width` wide: the smallest step from [`DAY_STEPS`] whose
/// labels (`label_width` each, the widest) keep `gap` apart.
pub fn day_axis(lo: f64, hi: f64, width: f64, label_width: f64, gap: f64) -> Axis {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 7.0) };
    for step in DAY_STEPS {
        let a = axis_with_step(lo, hi, step);
        let spacing = width / ((a.max - a.min) / step);
        if spacing >= label_width + gap {
            return a;
        }
    }
    let step = (hi - lo) / ((width / (label_width + gap)).floor().max(1.0));
    let step = (step / 364.0).ceil() * 364.0;
    axis_with_step(lo, hi, step)
}

/// A point of the chart.
#[derive(Debug, Clone)]
pub struct ChartPoint {
    pub day: f64,
    pub value: f64,
    pub pm: f64,
    /// Counted in the metrics (else drawn hollow, grey).
    pub counted: bool,
}

/// What the chart shows.
#[derive(Debug, Clone, Default)]
pub struct ChartData {
    pub points: Vec<ChartPoint>,
    /// The area the four-week threshold asks for (baseline × (1 − threshold)), and its label.
    pub threshold: Option<(f64, String)>,
    /// The day the four-week verdict is read at.
    pub verdict_day: f64,
    /// The fitted trend: area at the baseline and change per day.
    pub trend: Option<(f64, f64)>,
    /// Projected closure: day, and its earliest and latest (latest absent: no later bound).
    pub closure: Option<(f64, f64, Option<f64>)>,
}

/// Where the chart's parts landed on the page (for tests: nothing overlaps).
#[derive(Debug, Clone, Default)]
pub struct ChartLayout {
    /// `(left, right)` of each x tick label.
    pub x_labels: Vec<(f32, f32)>,
    /// `(top, bottom)` of each y tick label.
    pub y_labels: Vec<(f32, f32)>,
    pub x_axis: Option<Axis>,
    pub y_axis: Option<Axis>,
}

const LABEL: f32 = 7.5;
const BLUE: (u8, u8, u8) = (11, 92, 173);
const BAND: (u8, u8, u8) = (120, 160, 210);
const AMBER: (u8, u8, u8) = (196, 120, 0);
const GREY: (u8, u8, u8) = (150, 150, 150);

/// Draws the area chart in the box `(x, y, w, h)` (axes and labels inside it).
pub fn draw(c: &mut Canvas, data: &ChartData, x: f32, y: f32, w: f32, h: f32) -> ChartLayout {
    let mut layout = ChartLayout::default();
    if data.points.is_empty() {
        c.text(x + w / 2.0, y + h / 2.0, Style(9.0, Weight::Regular, MUTED), Align::Centre, "No assessments yet.");
        return layout;
    }
    let last_day = data.points.iter().map(|p| p.day).fold(f64::MIN, f64::max);
    let first_day = data.points.iter().map(|p| p.day).fold(f64::MAX, f64::min).min(0.0);
    // Far enough right for the verdict day and the projection, not beyond half a year past the last assessment.
    let mut right = last_day.max(data.verdict_day);
    if let Some((d, e, l)) = data.closure {
        right = right.max(l.unwrap_or(d).max(e).max(d)).min(last_day + 182.0);
    } else if data.trend.is_some() {
        right = right.max(last_day + 14.0);
    }
    let top = data.points.iter().map(|p| p.value + p.pm).fold(0.0, f64::max).max(1.0) * 1.08;
    let fonts = c.fonts;
    let yaxis = nice_axis(0.0, top, 6);
    let ylabel = |v: f64| format!("{v:.0}");
    let ylab_w = yaxis.ticks.iter().map(|t| fonts.width(&ylabel(*t), LABEL, Weight::Regular)).fold(0.0, f32::max);
    let (px0, px1) = (x + ylab_w + 26.0, x + w - 8.0);
    let (py0, py1) = (y + 14.0, y + h - 30.0);
    let xlab_w = {
        let probe = nice_axis(first_day, right, 20);
        probe.ticks.iter().map(|t| fonts.width(&format!("{t:.0}"), LABEL, Weight::Regular)).fold(0.0, f32::max)
    };
    let xaxis = day_axis(first_day, right, f64::from(px1 - px0), f64::from(xlab_w), 10.0);
    let sx = |d: f64| px0 + ((d - xaxis.min) / (xaxis.max - xaxis.min)) as f32 * (px1 - px0);
    let sy = |v: f64| py1 - ((v - yaxis.min) / (yaxis.max - yaxis.min)) as f32 * (py1 - py0);

    // Grid, axes, ticks.
    for t in &yaxis.ticks {
        let ty = sy(*t);
        c.polyline(&[(px0, ty), (px1, ty)], 0.3, RULE, None);
        let l = ylabel(*t);
        c.text(px0 - 4.0, ty + LABEL * 0.35, Style(LABEL, Weight::Regular, MUTED), Align::Right, &l);
        layout.y_labels.push((ty - LABEL * 0.7, ty + LABEL * 0.35));
    }
    for t in &xaxis.ticks {
        let tx = sx(*t);
        c.polyline(&[(tx, py1), (tx, py1 + 3.0)], 0.5, MUTED, None);
        let l = format!("{t:.0}");
        let lw = fonts.width(&l, LABEL, Weight::Regular);
        c.text(tx, py1 + 12.0, Style(LABEL, Weight::Regular, MUTED), Align::Centre, &l);
        layout.x_labels.push((tx - lw / 2.0, tx + lw / 2.0));
    }
    c.polyline(&[(px0, py0), (px0, py1), (px1, py1)], 0.7, INK, None);
    c.text((px0 + px1) / 2.0, py1 + 24.0, Style(LABEL, Weight::Regular, INK), Align::Centre, "days since baseline");
    c.text(x, y + 6.0, Style(LABEL, Weight::Regular, INK), Align::Left, "area (mm²)");

    // The ± band and the line through the counted points.
    let counted: Vec<&ChartPoint> = data.points.iter().filter(|p| p.counted).collect();
    if counted.len() >= 2 {
        let mut band: Vec<(f32, f32)> = counted.iter().map(|p| (sx(p.day), sy(p.value + p.pm))).collect();
        band.extend(counted.iter().rev().map(|p| (sx(p.day), sy((p.value - p.pm).max(0.0)))));
        c.polygon(&band, BAND, 0.35);
        let line: Vec<(f32, f32)> = counted.iter().map(|p| (sx(p.day), sy(p.value))).collect();
        c.polyline(&line, 1.2, BLUE, None);
    }
    for p in &data.points {
        let (mx, my) = (sx(p.day), sy(p.value));
        if p.counted {
            c.polyline(&[(mx, sy(p.value + p.pm)), (mx, sy((p.value - p.pm).max(0.0)))], 0.6, BLUE, None);
            c.marker(mx, my, 2.6, BLUE, false);
        } else {
            c.marker(mx, my, 2.6, GREY, true);
        }
    }

    // The four-week threshold: the area the setting asks for by the verdict day.
    let vx = sx(data.verdict_day);
    c.polyline(&[(vx, py0), (vx, py1)], 0.5, MUTED, Some(&[1.0, 2.0]));
    if let Some((area, label)) = &data.threshold {
        let ty = sy(*area);
        c.polyline(&[(px0, ty), (px1, ty)], 0.9, AMBER, Some(&[4.0, 3.0]));
        c.text(px1 - 2.0, ty - 3.0, Style(LABEL, Weight::Regular, AMBER), Align::Right, label);
    }

    // The projection: the fitted trend from the last assessment on, to zero when it closes.
    if let Some((a0, per_day)) = data.trend {
        let from = last_day;
        let to = match data.closure {
            Some((d, _, _)) => d.min(xaxis.max),
            None => xaxis.max,
        };
        let at = |d: f64| (a0 + per_day * d).clamp(0.0, yaxis.max);
        if to > from {
            c.polyline(&[(sx(from), sy(at(from))), (sx(to), sy(at(to)))], 1.0, BLUE, Some(&[3.0, 2.0]));
        }
        if let Some((d, e, l)) = data.closure {
            let ex = sx(e.max(xaxis.min).min(xaxis.max));
            let lx = sx(l.unwrap_or(xaxis.max).min(xaxis.max));
            c.polyline(&[(ex, py1 - 4.0), (ex, py1), (lx, py1), (lx, py1 - 4.0)], 1.6, BLUE, None);
            if d <= xaxis.max {
                c.marker(sx(d), py1, 3.0, BLUE, true);
            }
        }
    }
    layout.x_axis = Some(xaxis);
    layout.y_axis = Some(yaxis);
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_axes_step_by_one_two_or_five_and_cover_the_data() {
        let a = nice_axis(0.0, 537.0, 6);
        assert_eq!(a.min, 0.0);
        assert!(a.max >= 537.0 && a.max <= 600.0, "{a:?}");
        assert!(a.ticks.len() <= 7, "{a:?}");
        let step = a.ticks[1] - a.ticks[0];
        assert!([100.0, 200.0].contains(&step), "{a:?}");
        let small = nice_axis(0.0, 3.2, 6);
        assert_eq!(small.ticks[1] - small.ticks[0], 1.0);
    }

    #[test]
    fn day_labels_never_crowd_however_long_the_history() {
        for (days, width) in
            [(10.0, 400.0), (42.0, 400.0), (120.0, 400.0), (365.0, 300.0), (1500.0, 200.0), (42.0, 60.0)]
        {
            let label = 14.0;
            let a = day_axis(0.0, days, width, label, 10.0);
            assert!(a.max >= days && a.min <= 0.0, "{days}: {a:?}");
            let step = a.ticks[1] - a.ticks[0];
            let spacing = width / ((a.max - a.min) / step);
            assert!(spacing >= label + 10.0 || a.ticks.len() <= 2, "{days} days over {width}: {a:?}");
        }
        // Six weeks on a page-wide chart read in weeks.
        let weeks = day_axis(0.0, 42.0, 400.0, 12.0, 10.0);
        assert_eq!(weeks.ticks[1] - weeks.ticks[0], 7.0, "{weeks:?}");
    }
}
