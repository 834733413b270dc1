//! Healing metrics of one wound, from its assessments: pure arithmetic, no storage, no clock
//! (`docs/measurement.md`, "Healing metrics", holds the formulas and their references).
//!
//! Which assessments count: per scan one — the newest clinician outline not excluded, else the
//! automatic measurement if not excluded — and none taken before the baseline (the one a
//! clinician marked, else the first that counts). Every `±` here has the coverage of the
//! measurements' own (`docs/measurement.md`, "Uncertainty model": a calibrated factor
//! [`COVERAGE_K`] times the standard uncertainty): inputs are divided by it, combined as
//! independent errors, and the results multiplied back.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::measurements::ValuePm;

/// The coverage factor of every measurement `±` (`K_AREA`, `K_DEPTH`, `K_VOLUME` in
/// `recon/src/measure/uncertainty.rs`): standard uncertainty = `±` / 3.
pub const COVERAGE_K: f64 = 3.0;
/// Default of the `healing_on_track_reduction_pct` setting: a wound whose area has shrunk by
/// less than this at four weeks is unlikely to heal by twelve (Sheehan et al., Diabetes Care
/// 2003;26:1879–82: 40 % is where they cut; Coerper et al. 2009 found 40–50 % alike).
pub const DEFAULT_ON_TRACK_REDUCTION_PCT: f64 = crate::config::DEFAULT_HEALING_ON_TRACK_REDUCTION_PCT;
/// The day the four-week reduction is read at.
pub const VERDICT_DAY: f64 = 28.0;
/// An assessment this many days either side of [`VERDICT_DAY`] stands for it.
pub const VERDICT_WINDOW_DAYS: f64 = 7.0;
/// Smallest standard uncertainty a point is weighted with (a `±` of 0 would weigh infinitely).
const MIN_SIGMA: f64 = 1e-6;

/// One assessment as the metrics read it.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub id: Uuid,
    pub scan_id: Uuid,
    /// A clinician-drawn outline (else the automatic measurement).
    pub clinician: bool,
    /// When the scan was taken.
    pub taken_at: DateTime<Utc>,
    /// When the measurement was made.
    pub measured_at: DateTime<Utc>,
    /// Outline area, mm².
    pub area: ValuePm,
    /// Volume, mm³.
    pub volume: ValuePm,
    /// Maximum depth, mm.
    pub depth: ValuePm,
    pub excluded: bool,
}

/// The clinical settings the metrics use.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The four-week area reduction (%) at or above which a wound is on track.
    pub on_track_reduction_pct: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { on_track_reduction_pct: DEFAULT_ON_TRACK_REDUCTION_PCT }
    }
}

/// How an assessment enters the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssessmentRole {
    /// The baseline: day 0 of every figure.
    Baseline,
    /// Counted.
    Used,
    /// Excluded by a clinician (with a reason).
    Excluded,
    /// Another measurement of the same scan counts instead (a clinician outline supersedes the
    /// automatic one; the newest outline the older).
    Superseded,
    /// Taken before the baseline.
    BeforeBaseline,
}

/// One assessment's figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PointMetrics {
    pub id: Uuid,
    pub role: AssessmentRole,
    /// Days from the baseline's scan to this one's (negative before it); absent without a baseline.
    pub days_since_baseline: Option<f64>,
    /// `(A₀ − A) / A₀ × 100`, counted points only.
    pub area_reduction_from_baseline_pct: Option<ValuePm>,
    /// `(A_prev − A) / A_prev × 100` against the previous counted point.
    pub area_reduction_from_previous_pct: Option<ValuePm>,
}

/// A weighted least-squares line through a quantity over time.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct LinearFit {
    /// Change per week (mm²/week for area; negative: shrinking).
    pub slope_per_week: ValuePm,
    /// The fitted value at the baseline.
    pub at_baseline: ValuePm,
    /// Points fitted.
    pub points: usize,
}

/// A least-squares line through `ln(area)`: the wound's relative rate.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct LogLinearFit {
    /// `(e^b − 1) × 100`, % per week (negative: shrinking).
    pub rate_pct_per_week: ValuePm,
    /// Points fitted (areas above zero).
    pub points: usize,
}

/// The four-week verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealingVerdict {
    OnTrack,
    NotOnTrack,
    /// No assessment reaches day 21 after the baseline yet.
    TooEarly,
}

/// The four-week area reduction and what it says.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct FourWeek {
    pub verdict: HealingVerdict,
    /// The area reduction at day 28 (the assessment nearest it within 21–35 days, else
    /// interpolated between the two around it).
    pub reduction_pct: Option<ValuePm>,
    /// The day it was read at (28 when interpolated).
    pub day: Option<f64>,
    /// The setting it was judged against (`healing_on_track_reduction_pct`).
    pub threshold_pct: f64,
}

/// Whether the trend closes the wound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// The linear area trend reaches zero: `date`, `earliest`, `latest`.
    Closing,
    /// The trend is flat or the wound is growing.
    NotClosing,
    /// Fewer than two counted assessments (or all on one day).
    InsufficientData,
}

/// The projected closure date from the linear area fit.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Projection {
    pub state: ProjectionState,
    /// Where the fitted line reaches zero area.
    #[schema(value_type = Option<String>, format = Date)]
    pub date: Option<NaiveDate>,
    /// With the fastest slope and the smallest current area within the `±`.
    #[schema(value_type = Option<String>, format = Date)]
    pub earliest: Option<NaiveDate>,
    /// With the slowest slope and the largest current area within the `±`; absent when the
    /// slowest slope is flat (no later bound).
    #[schema(value_type = Option<String>, format = Date)]
    pub latest: Option<NaiveDate>,
}

/// A trend of volume or depth.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Trend {
    pub fit: Option<LinearFit>,
    /// Latest against baseline, `(b − x)/b × 100`.
    pub reduction_from_baseline_pct: Option<ValuePm>,
}

/// Everything computed for a wound.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealingMetrics {
    /// The baseline assessment (absent without counted assessments).
    pub baseline_id: Option<Uuid>,
    pub baseline_at: Option<DateTime<Utc>>,
    /// Assessments counted (baseline included).
    pub points_used: usize,
    /// Latest counted against baseline.
    pub area_reduction_from_baseline_pct: Option<ValuePm>,
    /// Latest counted against the one before.
    pub area_reduction_from_previous_pct: Option<ValuePm>,
    pub area_linear: Option<LinearFit>,
    pub area_log_linear: Option<LogLinearFit>,
    pub four_week: FourWeek,
    pub projection: Projection,
    pub volume: Trend,
    pub depth: Trend,
}

/// The metrics of `points` (any order), and each point's figures in time order.
pub fn compute(
    points: &[Assessment],
    baseline: Option<Uuid>,
    settings: Settings,
) -> (Vec<PointMetrics>, HealingMetrics) {
    let mut order: Vec<&Assessment> = points.iter().collect();
    order.sort_by(|a, b| a.taken_at.cmp(&b.taken_at).then(a.measured_at.cmp(&b.measured_at)).then(a.id.cmp(&b.id)));
    let roles = roles(&order, baseline);
    let base = order.iter().zip(&roles).find(|(_, r)| **r == AssessmentRole::Baseline).map(|(p, _)| *p);
    let used: Vec<&Assessment> = order
        .iter()
        .zip(&roles)
        .filter(|(_, r)| matches!(r, AssessmentRole::Baseline | AssessmentRole::Used))
        .map(|(p, _)| *p)
        .collect();
    let days = |p: &Assessment| base.map(|b| (p.taken_at - b.taken_at).num_milliseconds() as f64 / 86_400_000.0);

    let mut per_point = Vec::with_capacity(order.len());
    let mut previous: Option<&Assessment> = None;
    for (p, role) in order.iter().zip(&roles) {
        let counted = matches!(role, AssessmentRole::Baseline | AssessmentRole::Used);
        let from_base = if counted { base.and_then(|b| reduction(b.area, p.area)) } else { None };
        let from_prev = if counted { previous.and_then(|q| reduction(q.area, p.area)) } else { None };
        if counted {
            previous = Some(p);
        }
        per_point.push(PointMetrics {
            id: p.id,
            role: *role,
            days_since_baseline: days(p),
            area_reduction_from_baseline_pct: from_base,
            area_reduction_from_previous_pct: from_prev,
        });
    }

    let weeks: Vec<f64> = used.iter().map(|p| days(p).unwrap_or(0.0) / 7.0).collect();
    let area_linear = fit_of(&weeks, used.iter().map(|p| p.area));
    let area_log_linear = log_fit(&weeks, &used);
    let latest = used.last().copied();
    let area_reduction_from_baseline_pct = match (base, latest) {
        (Some(b), Some(l)) if used.len() >= 2 => reduction(b.area, l.area),
        _ => None,
    };
    let area_reduction_from_previous_pct = match used.as_slice() {
        [.., prev, last] => reduction(prev.area, last.area),
        _ => None,
    };
    let four_week = four_week(&used, &weeks, settings);
    let projection = match (base, raw_fit(&weeks, used.iter().map(|p| p.area))) {
        (Some(b), Some(f)) => project(&f, *weeks.last().unwrap_or(&0.0), b.taken_at),
        _ => Projection { state: ProjectionState::InsufficientData, date: None, earliest: None, latest: None },
    };
    let trend = |get: fn(&Assessment) -> ValuePm| Trend {
        fit: fit_of(&weeks, used.iter().map(|p| get(p))),
        reduction_from_baseline_pct: match (base, latest) {
            (Some(b), Some(l)) if used.len() >= 2 => reduction(get(b), get(l)),
            _ => None,
        },
    };
    let metrics = HealingMetrics {
        baseline_id: base.map(|b| b.id),
        baseline_at: base.map(|b| b.taken_at),
        points_used: used.len(),
        area_reduction_from_baseline_pct,
        area_reduction_from_previous_pct,
        area_linear,
        area_log_linear,
        four_week,
        projection,
        volume: trend(|p| p.volume),
        depth: trend(|p| p.depth),
    };
    (per_point, metrics)
}

/// Each point's role, `order` sorted by time.
fn roles(order: &[&Assessment], baseline: Option<Uuid>) -> Vec<AssessmentRole> {
    let marked = baseline.and_then(|id| order.iter().find(|p| p.id == id && !p.excluded)).map(|p| p.id);
    // Per scan, the measurement that counts: the marked baseline, else the newest clinician
    // outline not excluded, else the automatic one not excluded.
    let mut chosen: std::collections::HashMap<Uuid, &Assessment> = std::collections::HashMap::new();
    for p in order.iter().filter(|p| !p.excluded) {
        let better = match chosen.get(&p.scan_id) {
            None => true,
            Some(q) if Some(q.id) == marked => false,
            Some(_) if Some(p.id) == marked => true,
            Some(q) => (p.clinician, p.measured_at) >= (q.clinician, q.measured_at),
        };
        if better {
            chosen.insert(p.scan_id, p);
        }
    }
    let counts = |p: &Assessment| chosen.get(&p.scan_id).is_some_and(|q| q.id == p.id);
    let base =
        marked.and_then(|id| order.iter().find(|p| p.id == id)).or_else(|| order.iter().find(|p| counts(p))).copied();
    order
        .iter()
        .map(|p| {
            if p.excluded {
                AssessmentRole::Excluded
            } else if !counts(p) {
                AssessmentRole::Superseded
            } else if base.is_some_and(|b| b.id == p.id) {
                AssessmentRole::Baseline
            } else if base.is_some_and(|b| p.taken_at < b.taken_at) {
                AssessmentRole::BeforeBaseline
            } else {
                AssessmentRole::Used
            }
        })
        .collect()
}

/// `(from − to) / from × 100` with its `±` (independent errors in quadrature; the coverage
/// factor cancels). `None` when `from` is not above zero.
pub fn reduction(from: ValuePm, to: ValuePm) -> Option<ValuePm> {
    if from.value <= 0.0 || !from.value.is_finite() || !to.value.is_finite() {
        return None;
    }
    let value = (from.value - to.value) / from.value * 100.0;
    let d_to = to.uncertainty / from.value * 100.0;
    let d_from = to.value * from.uncertainty / (from.value * from.value) * 100.0;
    Some(ValuePm { value, uncertainty: d_to.hypot(d_from) })
}

/// A weighted least-squares line `y = a + b·t` with the parameters' variances.
#[derive(Debug, Clone, Copy)]
struct Fit {
    a: f64,
    b: f64,
    var_a: f64,
    var_b: f64,
    cov_ab: f64,
}

impl Fit {
    /// The fitted value at `t` and its variance.
    fn at(&self, t: f64) -> (f64, f64) {
        (self.a + self.b * t, (self.var_a + t * t * self.var_b + 2.0 * t * self.cov_ab).max(0.0))
    }
}

/// Weighted least squares of `(t, y ± pm)`, each weighted by `1/σ²` with `σ = pm / K`. When
/// the points scatter more than their `±` explain (reduced χ² above 1, from three points),
/// the variances are inflated by it (the Birge ratio): a fit is never surer than its scatter.
/// `None` with fewer than two points or all at one time.
fn wls(ts: &[f64], ys: &[f64], sigmas: &[f64]) -> Option<Fit> {
    let n = ts.len();
    if n < 2 || ys.len() != n || sigmas.len() != n {
        return None;
    }
    let w: Vec<f64> = sigmas.iter().map(|s| 1.0 / s.max(MIN_SIGMA).powi(2)).collect();
    let sw: f64 = w.iter().sum();
    let tm = w.iter().zip(ts).map(|(w, t)| w * t).sum::<f64>() / sw;
    let ym = w.iter().zip(ys).map(|(w, y)| w * y).sum::<f64>() / sw;
    let stt: f64 = w.iter().zip(ts).map(|(w, t)| w * (t - tm).powi(2)).sum();
    if stt <= 0.0 || !stt.is_finite() {
        return None;
    }
    let sty: f64 = w.iter().zip(ts).zip(ys).map(|((w, t), y)| w * (t - tm) * (y - ym)).sum();
    let b = sty / stt;
    let a = ym - b * tm;
    let chi2: f64 = w.iter().zip(ts).zip(ys).map(|((w, t), y)| w * (y - a - b * t).powi(2)).sum();
    let inflate = if n > 2 { (chi2 / (n - 2) as f64).max(1.0) } else { 1.0 };
    Some(Fit { a, b, var_a: (1.0 / sw + tm * tm / stt) * inflate, var_b: inflate / stt, cov_ab: -tm / stt * inflate })
}

fn raw_fit(weeks: &[f64], values: impl Iterator<Item = ValuePm>) -> Option<Fit> {
    let (ys, sigmas): (Vec<f64>, Vec<f64>) = values.map(|v| (v.value, v.uncertainty / COVERAGE_K)).unzip();
    wls(weeks, &ys, &sigmas)
}

fn fit_of(weeks: &[f64], values: impl Iterator<Item = ValuePm>) -> Option<LinearFit> {
    let f = raw_fit(weeks, values)?;
    Some(LinearFit {
        slope_per_week: ValuePm { value: f.b, uncertainty: COVERAGE_K * f.var_b.sqrt() },
        at_baseline: ValuePm { value: f.a, uncertainty: COVERAGE_K * f.var_a.sqrt() },
        points: weeks.len(),
    })
}

/// `ln(area)` against weeks, `σ_ln = σ_A / A`; areas of zero (closed) cannot enter.
fn log_fit(weeks: &[f64], used: &[&Assessment]) -> Option<LogLinearFit> {
    let mut ts = Vec::new();
    let mut ys = Vec::new();
    let mut sigmas = Vec::new();
    for (t, p) in weeks.iter().zip(used) {
        if p.area.value > 0.0 {
            ts.push(*t);
            ys.push(p.area.value.ln());
            sigmas.push(p.area.uncertainty / COVERAGE_K / p.area.value);
        }
    }
    let f = wls(&ts, &ys, &sigmas)?;
    let growth = f.b.exp();
    Some(LogLinearFit {
        rate_pct_per_week: ValuePm {
            value: (growth - 1.0) * 100.0,
            uncertainty: COVERAGE_K * growth * f.var_b.sqrt() * 100.0,
        },
        points: ts.len(),
    })
}

/// The area reduction at day 28 and its verdict.
fn four_week(used: &[&Assessment], weeks: &[f64], settings: Settings) -> FourWeek {
    let threshold_pct = settings.on_track_reduction_pct;
    let early = FourWeek { verdict: HealingVerdict::TooEarly, reduction_pct: None, day: None, threshold_pct };
    let (Some(base), true) = (used.first(), used.len() >= 2) else { return early };
    let days: Vec<f64> = weeks.iter().map(|w| w * 7.0).collect();
    let in_window =
        days.iter().enumerate().skip(1).filter(|(_, d)| (**d - VERDICT_DAY).abs() <= VERDICT_WINDOW_DAYS).min_by(
            |(_, x), (_, y)| (**x - VERDICT_DAY).abs().total_cmp(&(**y - VERDICT_DAY).abs()).then(y.total_cmp(x)),
        );
    let (area, day) = if let Some((i, d)) = in_window {
        (used[i].area, *d)
    } else {
        // Nothing near day 28: interpolate between the points around it, if it is passed.
        let Some(after) = days.iter().position(|d| *d > VERDICT_DAY) else { return early };
        let before = after - 1;
        let (t1, t2) = (days[before], days[after]);
        let lambda = (VERDICT_DAY - t1) / (t2 - t1);
        let (a1, a2) = (used[before].area, used[after].area);
        let value = a1.value + (a2.value - a1.value) * lambda;
        let uncertainty = ((1.0 - lambda) * a1.uncertainty).hypot(lambda * a2.uncertainty);
        (ValuePm { value, uncertainty }, VERDICT_DAY)
    };
    let Some(r) = reduction(base.area, area) else { return early };
    let verdict = if r.value >= threshold_pct { HealingVerdict::OnTrack } else { HealingVerdict::NotOnTrack };
    FourWeek { verdict, reduction_pct: Some(r), day: Some(day), threshold_pct }
}

/// Where the fitted area line reaches zero, and the bounds the `±` allow: the slope at
/// `b ∓ K·σ_b` from the fitted area at the last counted point at `A_L ∓ K·σ_A`.
fn project(f: &Fit, last_week: f64, baseline_at: DateTime<Utc>) -> Projection {
    let not_closing = Projection { state: ProjectionState::NotClosing, date: None, earliest: None, latest: None };
    if f.b >= 0.0 || !f.b.is_finite() {
        return not_closing;
    }
    let date = |weeks: f64| {
        let ms = (weeks * 7.0 * 86_400_000.0).clamp(-1e15, 1e15) as i64;
        (baseline_at + Duration::milliseconds(ms)).date_naive()
    };
    let (area_last, var_last) = f.at(last_week);
    let area_pm = COVERAGE_K * var_last.sqrt();
    let slope_pm = COVERAGE_K * f.var_b.sqrt();
    let close = |area: f64, slope: f64| last_week + area.max(0.0) / -slope;
    let central = close(area_last, f.b);
    let earliest = close(area_last - area_pm, f.b - slope_pm);
    let slow = f.b + slope_pm;
    let latest = (slow < 0.0).then(|| close(area_last + area_pm, slow));
    Projection {
        state: ProjectionState::Closing,
        date: Some(date(central)),
        earliest: Some(date(earliest)),
        latest: latest.map(date),
    }
}

/// The width of the projection interval in days (`None`: no later bound), for tests.
#[cfg(test)]
fn interval_days(p: &Projection) -> Option<i64> {
    Some((p.latest? - p.earliest?).num_days())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
    }

    fn pm(value: f64, uncertainty: f64) -> ValuePm {
        ValuePm { value, uncertainty }
    }

    /// An automatic assessment of its own scan on `day`, area `a ± da`.
    fn point(n: u128, day: i64, a: f64, da: f64) -> Assessment {
        Assessment {
            id: Uuid::from_u128(n),
            scan_id: Uuid::from_u128(1000 + n),
            clinician: false,
            taken_at: t0() + Duration::days(day),
            measured_at: t0() + Duration::days(day) + Duration::minutes(5),
            area: pm(a, da),
            volume: pm(a * 2.0, da * 2.0),
            depth: pm(4.0, 0.3),
            excluded: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn reduction_is_hand_computed_with_its_uncertainty() {
        // (1000 − 600)/1000 = 40 %; ± = 100·√((30/1000)² + (600·50/1000²)²) = 100·√(0.0009 + 0.0009).
        let r = reduction(pm(1000.0, 50.0), pm(600.0, 30.0)).unwrap();
        assert!(close(r.value, 40.0));
        assert!(close(r.uncertainty, 100.0 * (0.0018f64).sqrt()), "{}", r.uncertainty);
        // A closed wound: 100 %, its ± from the final area's alone.
        let r = reduction(pm(500.0, 20.0), pm(0.0, 5.0)).unwrap();
        assert!(close(r.value, 100.0) && close(r.uncertainty, 1.0));
        assert!(reduction(pm(0.0, 1.0), pm(0.0, 1.0)).is_none(), "no reduction from nothing");
    }

    #[test]
    fn a_wound_halving_in_four_weeks_is_on_track_and_closes_on_the_line() {
        // 1000, 875, 750, 625, 500 mm² weekly: slope −125 mm²/week, closes at week 8 (day 56).
        let pts: Vec<Assessment> =
            (0..5).map(|w| point(w as u128 + 1, w * 7, 1000.0 - 125.0 * w as f64, 30.0)).collect();
        let (per, m) = compute(&pts, None, Settings::default());
        assert_eq!(per[0].role, AssessmentRole::Baseline);
        assert_eq!(m.points_used, 5);
        let fit = m.area_linear.unwrap();
        assert!(close(fit.slope_per_week.value, -125.0), "{fit:?}");
        assert!(close(fit.at_baseline.value, 1000.0));
        // Equal weights, t = 0..4 weeks: Var(b) = σ²/Σ(t − 2)² = (30/3)²/10, no excess scatter.
        assert!(close(fit.slope_per_week.uncertainty, 3.0 * (100.0f64 / 10.0).sqrt()), "{fit:?}");
        assert_eq!(m.four_week.verdict, HealingVerdict::OnTrack);
        let r = m.four_week.reduction_pct.unwrap();
        assert!(close(r.value, 50.0) && m.four_week.day == Some(28.0));
        assert!(close(m.area_reduction_from_previous_pct.unwrap().value, 20.0), "625 → 500 is 20 %");
        assert_eq!(m.projection.state, ProjectionState::Closing);
        assert_eq!(m.projection.date, Some((t0() + Duration::days(56)).date_naive()));
        let (e, l) = (m.projection.earliest.unwrap(), m.projection.latest.unwrap());
        assert!(e < m.projection.date.unwrap() && m.projection.date.unwrap() < l, "{:?}", m.projection);
        // ln-linear: the rate per week is between the first week's −12.5 % and the last's −20 %.
        let lr = m.area_log_linear.unwrap().rate_pct_per_week.value;
        assert!((-20.0..=-12.5).contains(&lr), "{lr}");
        assert!(close(per[4].area_reduction_from_baseline_pct.unwrap().value, 50.0));
        assert!(m.volume.fit.unwrap().slope_per_week.value < 0.0);
        assert!(close(m.depth.fit.unwrap().slope_per_week.value, 0.0), "depth is flat");
    }

    #[test]
    fn a_wound_that_shrinks_by_a_fifth_in_four_weeks_is_not_on_track() {
        let pts = vec![point(1, 0, 1000.0, 20.0), point(2, 14, 900.0, 20.0), point(3, 27, 800.0, 20.0)];
        let (_, m) = compute(&pts, None, Settings::default());
        assert_eq!(m.four_week.verdict, HealingVerdict::NotOnTrack);
        assert!(close(m.four_week.reduction_pct.unwrap().value, 20.0));
        assert_eq!(m.four_week.day, Some(27.0));
        // The threshold is a setting.
        let (_, m) = compute(&pts, None, Settings { on_track_reduction_pct: 15.0 });
        assert_eq!(m.four_week.verdict, HealingVerdict::OnTrack);
        assert_eq!(m.four_week.threshold_pct, 15.0);
    }

    #[test]
    fn the_four_week_area_is_interpolated_across_a_gap() {
        // Day 14 at 800, day 42 at 400: day 28 is 600 (± from both, λ = ½), 40 %: on track.
        let pts = vec![point(1, 0, 1000.0, 10.0), point(2, 14, 800.0, 40.0), point(3, 42, 400.0, 40.0)];
        let (_, m) = compute(&pts, None, Settings::default());
        let r = m.four_week.reduction_pct.unwrap();
        assert!(close(r.value, 40.0), "{r:?}");
        assert_eq!(m.four_week.verdict, HealingVerdict::OnTrack);
        // A(28) = 600 ± √(20² + 20²); against 1000 ± 10.
        let a_pm = 20.0f64.hypot(20.0);
        assert!(close(r.uncertainty, 100.0 * (a_pm / 1000.0).hypot(600.0 * 10.0 / 1e6)), "{r:?}");
    }

    #[test]
    fn fewer_than_two_points_give_no_rate_no_projection_and_too_early() {
        let (per, m) = compute(&[], None, Settings::default());
        assert!(per.is_empty() && m.baseline_id.is_none());
        assert_eq!(m.projection.state, ProjectionState::InsufficientData);
        let (per, m) = compute(&[point(1, 0, 800.0, 20.0)], None, Settings::default());
        assert_eq!(per[0].role, AssessmentRole::Baseline);
        assert!(m.area_linear.is_none() && m.area_log_linear.is_none());
        assert!(m.area_reduction_from_baseline_pct.is_none() && m.area_reduction_from_previous_pct.is_none());
        assert_eq!(m.four_week.verdict, HealingVerdict::TooEarly);
        assert_eq!(m.projection.state, ProjectionState::InsufficientData);
        // Two points within three weeks: a rate, a projection, but too early for the verdict.
        let (_, m) = compute(&[point(1, 0, 800.0, 20.0), point(2, 7, 700.0, 20.0)], None, Settings::default());
        assert!(close(m.area_linear.unwrap().slope_per_week.value, -100.0));
        assert_eq!(m.four_week.verdict, HealingVerdict::TooEarly);
        assert_eq!(m.projection.date, Some((t0() + Duration::days(56)).date_naive()), "800 at −100/week");
    }

    #[test]
    fn a_worsening_wound_is_not_closing() {
        let pts = vec![point(1, 0, 500.0, 20.0), point(2, 14, 600.0, 20.0), point(3, 28, 700.0, 20.0)];
        let (_, m) = compute(&pts, None, Settings::default());
        assert_eq!(m.projection.state, ProjectionState::NotClosing);
        assert!(m.projection.date.is_none());
        assert!(close(m.area_linear.unwrap().slope_per_week.value, 50.0));
        assert!(close(m.area_reduction_from_baseline_pct.unwrap().value, -40.0));
        assert_eq!(m.four_week.verdict, HealingVerdict::NotOnTrack);
        assert!(m.area_log_linear.unwrap().rate_pct_per_week.value > 0.0);
    }

    #[test]
    fn an_excluded_scan_leaves_every_figure() {
        let mut bad = point(2, 7, 3000.0, 20.0);
        let good = vec![point(1, 0, 1000.0, 20.0), point(3, 14, 800.0, 20.0), point(4, 28, 600.0, 20.0)];
        let (_, want) = compute(&good, None, Settings::default());
        bad.excluded = true;
        let mut with_bad = good.clone();
        with_bad.insert(1, bad);
        let (per, got) = compute(&with_bad, None, Settings::default());
        assert_eq!(per[1].role, AssessmentRole::Excluded);
        assert!(per[1].area_reduction_from_baseline_pct.is_none());
        assert_eq!(got.points_used, 3);
        assert!(close(got.area_linear.unwrap().slope_per_week.value, want.area_linear.unwrap().slope_per_week.value));
        assert!(close(got.four_week.reduction_pct.unwrap().value, 40.0));
        assert_eq!(got.projection.date, want.projection.date);
        // The previous point of day 14 is day 0, not the excluded day 7.
        assert!(close(per[2].area_reduction_from_previous_pct.unwrap().value, 20.0));
    }

    #[test]
    fn a_new_baseline_restarts_the_clock() {
        // A wound that grew (1000 → 1200), then treatment changed and it shrank from 1200.
        let pts = vec![
            point(1, 0, 1000.0, 20.0),
            point(2, 14, 1200.0, 20.0),
            point(3, 28, 900.0, 20.0),
            point(4, 42, 600.0, 20.0),
        ];
        let (_, first) = compute(&pts, None, Settings::default());
        assert_eq!(first.baseline_id, Some(Uuid::from_u128(1)));
        assert!(close(first.four_week.reduction_pct.unwrap().value, 10.0));
        let (per, m) = compute(&pts, Some(Uuid::from_u128(2)), Settings::default());
        assert_eq!(per[0].role, AssessmentRole::BeforeBaseline);
        assert_eq!(per[1].role, AssessmentRole::Baseline);
        assert_eq!(per[0].days_since_baseline, Some(-14.0));
        assert_eq!(m.baseline_id, Some(Uuid::from_u128(2)));
        assert_eq!(m.points_used, 3);
        // Day 28 after the new baseline is the day-42 scan: (1200 − 600)/1200 = 50 %.
        assert!(close(m.four_week.reduction_pct.unwrap().value, 50.0));
        assert_eq!(m.four_week.verdict, HealingVerdict::OnTrack);
        assert!(close(m.area_linear.unwrap().slope_per_week.value, -150.0));
        // An excluded assessment cannot be the baseline: the first counted one is.
        let mut ex = pts.clone();
        ex[1].excluded = true;
        let (_, m) = compute(&ex, Some(Uuid::from_u128(2)), Settings::default());
        assert_eq!(m.baseline_id, Some(Uuid::from_u128(1)));
    }

    #[test]
    fn a_clinician_outline_supersedes_the_automatic_measurement_of_its_scan() {
        let auto = point(1, 0, 1000.0, 20.0);
        let mut outline = point(2, 0, 900.0, 10.0);
        outline.scan_id = auto.scan_id;
        outline.clinician = true;
        outline.measured_at = auto.measured_at + Duration::days(1);
        let later = point(3, 28, 450.0, 10.0);
        let (per, m) = compute(&[auto, outline, later], None, Settings::default());
        assert_eq!(per[0].role, AssessmentRole::Superseded);
        assert_eq!(per[1].role, AssessmentRole::Baseline);
        assert!(close(m.four_week.reduction_pct.unwrap().value, 50.0));
    }

    proptest! {
        /// The same wound measured less surely: the projection interval never narrows.
        #[test]
        fn the_projection_interval_widens_with_measurement_uncertainty(
            start in 300.0f64..3000.0,
            weekly in 0.02f64..0.2,
            wobble in proptest::collection::vec(-0.03f64..0.03, 4..8),
            base_pm in 0.005f64..0.05,
            factor in 1.05f64..4.0,
        ) {
            let make = |scale: f64| -> Vec<Assessment> {
                wobble.iter().enumerate().map(|(i, w)| {
                    let a = (start * (1.0 - weekly * i as f64) * (1.0 + w)).max(1.0);
                    point(i as u128 + 1, 7 * i as i64, a, a * base_pm * scale)
                }).collect()
            };
            let (_, sure) = compute(&make(1.0), None, Settings::default());
            let (_, unsure) = compute(&make(factor), None, Settings::default());
            prop_assert_eq!(sure.projection.state, unsure.projection.state);
            if sure.projection.state == ProjectionState::Closing {
                prop_assert!(unsure.projection.earliest <= sure.projection.earliest);
                match (interval_days(&sure.projection), interval_days(&unsure.projection)) {
                    (Some(a), Some(b)) => prop_assert!(b >= a, "{} then {}", a, b),
                    (None, Some(_)) => prop_assert!(false, "a bounded interval from less sure measurements"),
                    _ => {}
                }
            }
            let (s, u) = (sure.area_linear.unwrap(), unsure.area_linear.unwrap());
            prop_assert!(u.slope_per_week.uncertainty >= s.slope_per_week.uncertainty * (1.0 - 1e-9));
        }
    }
}
