//! The wound report (`GET /v1/wounds/{id}/report.pdf`): what it says — the patient and wound
//! named, the healing verdict and projection in words, the figures, the chart's series, one
//! table row per assessment — composed here from the record and the metrics; where it goes on
//! the page is `coherency_report`'s. Typesetting is CPU work: [`Reports`] runs it on the
//! blocking pool, a bounded number at once, and tells a caller who waits longer than [`WAIT`]
//! to retry. `docs/api.md`, "The wound report".

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use coherency_protocol::{Code, ErrorCode};
use coherency_report::{ChartData, ChartPoint, LatestMesh, Rendered, Row, Tone, Verdict, WoundReport};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::healing::{AssessmentRole, HealingMetrics, HealingVerdict, ProjectionState, VERDICT_DAY};
use super::wounds::{Aetiology, Laterality, Wound, WoundStatus};
use crate::error::DomainError;
use crate::store::measurements::ValuePm;

/// How long a report waits for a typesetting permit before the caller is told to retry.
pub const WAIT: Duration = Duration::from_secs(5);

/// Who the report is about, as the patient record names them.
#[derive(Debug, Clone, Default)]
pub struct PatientLine {
    pub name: String,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<String>,
    pub mrn: Option<String>,
}

/// One assessment as the report lists it.
#[derive(Debug, Clone)]
pub struct ReportAssessment {
    pub taken_at: DateTime<Utc>,
    /// A clinician's outline (else automatic).
    pub clinician: bool,
    pub area_mm2: ValuePm,
    pub volume_mm3: ValuePm,
    pub max_depth_mm: ValuePm,
    pub role: AssessmentRole,
    pub days_since_baseline: Option<f64>,
    pub area_reduction_from_baseline_pct: Option<ValuePm>,
    /// Why a clinician excluded it.
    pub exclusion: Option<String>,
    /// The wound bed's tissue shares inside the outline (class, percent ± points), in the
    /// classes' fixed order; empty without a composition.
    pub tissue: Vec<(String, ValuePm)>,
}

/// Why a report was not produced.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    /// Every permit is taken: reports are being typeset for others.
    #[error("reports are being generated for others; retry shortly")]
    Busy,
    /// Typesetting failed (names the stage, never the data).
    #[error("the report could not be typeset: {0}")]
    Render(String),
}

impl ErrorCode for ReportError {
    fn code(&self) -> Code {
        match self {
            Self::Busy => Code::Unavailable,
            Self::Render(_) => Code::Internal,
        }
    }
}

impl DomainError for ReportError {
    fn retry_after(&self) -> Option<u64> {
        matches!(self, Self::Busy).then_some(1)
    }
}

/// Typesets reports off the async workers, at most `n` at once.
#[derive(Clone)]
pub struct Reports {
    permits: Arc<Semaphore>,
}

impl Reports {
    /// `n` reports at once (at least one).
    pub fn new(n: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(n.max(1))) }
    }

    /// The report as PDF bytes.
    pub async fn render(&self, report: WoundReport) -> Result<Rendered, ReportError> {
        let permit = tokio::time::timeout(WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ReportError::Busy)?
            .map_err(|_| ReportError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            coherency_report::render(&report)
        })
        .await
        .map_err(|_| ReportError::Render("worker stopped".into()))?
        .map_err(|e| ReportError::Render(e.to_string()))
    }
}

/// The report's file name: no patient data in it.
pub fn file_name(wound: Uuid) -> String {
    format!("wound-report-{}.pdf", &wound.simple().to_string()[..8])
}

fn pm(v: &ValuePm, digits: usize) -> String {
    format!("{:.*} ± {:.*}", digits, v.value, digits, v.uncertainty)
}

fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn aetiology(a: Aetiology) -> &'static str {
    match a {
        Aetiology::Pressure => "Pressure injury",
        Aetiology::DiabeticFoot => "Diabetic foot ulcer",
        Aetiology::Venous => "Venous leg ulcer",
        Aetiology::Arterial => "Arterial ulcer",
        Aetiology::Surgical => "Surgical wound",
        Aetiology::Trauma => "Traumatic wound",
        Aetiology::Burn => "Burn",
        Aetiology::Other => "Other wound",
    }
}

fn status(s: WoundStatus) -> &'static str {
    match s {
        WoundStatus::Open => "open",
        WoundStatus::Healing => "healing",
        WoundStatus::Healed => "healed",
        WoundStatus::Amputated => "amputated",
        WoundStatus::ClosedOther => "closed (other)",
    }
}

fn role(r: AssessmentRole) -> &'static str {
    match r {
        AssessmentRole::Baseline => "baseline",
        AssessmentRole::Used => "counted",
        AssessmentRole::Excluded => "excluded",
        AssessmentRole::Superseded => "superseded",
        AssessmentRole::BeforeBaseline => "before baseline",
    }
}

fn site(w: &Wound) -> String {
    let side = match w.laterality {
        Laterality::Unspecified => String::new(),
        l => format!(" ({})", l.as_str()),
    };
    let code = w.site_code.as_ref().map(|c| format!(", SNOMED CT {c}")).unwrap_or_default();
    format!("{}{side}{code}", w.site_display)
}

/// The four-week verdict in words.
pub fn verdict(m: &HealingMetrics) -> Verdict {
    let fw = &m.four_week;
    let t = fw.threshold_pct;
    let (tone, text) = match (fw.verdict, fw.reduction_pct, fw.day) {
        (HealingVerdict::OnTrack, Some(r), Some(d)) => (
            Tone::Good,
            format!("On track: the area fell by {} % by day {d:.0} (at least {t:.0} % is expected at four weeks).", pm(&r, 1)),
        ),
        (HealingVerdict::NotOnTrack, Some(r), Some(d)) => (
            Tone::Bad,
            format!("Not on track: the area fell by {} % by day {d:.0}, less than the {t:.0} % expected at four weeks.", pm(&r, 1)),
        ),
        (HealingVerdict::OnTrack, ..) => (Tone::Good, "On track.".into()),
        (HealingVerdict::NotOnTrack, ..) => (Tone::Bad, "Not on track.".into()),
        (HealingVerdict::TooEarly, ..) => (
            Tone::Neutral,
            format!("Too early to judge: no assessment from day 21 after the baseline yet (the verdict reads the area reduction at four weeks against {t:.0} %)."),
        ),
    };
    Verdict { tone, text }
}

/// Further out than this, a projected closure reads as "not within a year".
const FAR_DAYS: i64 = 365;

/// The projected closure in words, as of `today`.
pub fn projection(m: &HealingMetrics, today: NaiveDate) -> String {
    let p = &m.projection;
    match (p.state, p.date, p.earliest, p.latest) {
        (ProjectionState::Closing, Some(d), ..) if (d - today).num_days() > FAR_DAYS => format!(
            "Not closing within a year at the current rate: the linear area trend reaches zero on {}.",
            day(d)
        ),
        (ProjectionState::Closing, Some(d), Some(e), Some(l)) => {
            format!("Projected closure {} (between {} and {}), from the linear area trend.", day(d), day(e), day(l))
        }
        (ProjectionState::Closing, Some(d), Some(e), None) => format!(
            "Projected closure {} ({} at the earliest; within its ± the trend may be flat, so there is no latest date).",
            day(d),
            day(e)
        ),
        (ProjectionState::Closing, ..) => "Closing, by the linear area trend.".into(),
        (ProjectionState::NotClosing, ..) => "Not closing: the area trend is flat or growing.".into(),
        (ProjectionState::InsufficientData, ..) => "No projection yet: fewer than two assessments count.".into(),
    }
}

fn figures(m: &HealingMetrics, today: NaiveDate) -> Vec<String> {
    let mut out = vec![projection(m, today)];
    if let Some(v) = m.area_reduction_from_baseline_pct {
        out.push(format!("Area reduction from the baseline: {} % (latest assessment).", pm(&v, 1)));
    }
    if let Some(v) = m.area_reduction_from_previous_pct {
        out.push(format!("From the previous assessment: {} %.", pm(&v, 1)));
    }
    match (m.area_linear, m.area_log_linear) {
        (Some(l), Some(g)) => out.push(format!(
            "Area rate: {} mm²/week (linear), {} %/week (log-linear), over {} assessments.",
            pm(&l.slope_per_week, 1),
            pm(&g.rate_pct_per_week, 1),
            l.points
        )),
        (Some(l), None) => out.push(format!("Area rate: {} mm²/week (linear).", pm(&l.slope_per_week, 1))),
        _ => {}
    }
    for (name, t) in [("Volume", &m.volume), ("Maximum depth", &m.depth)] {
        if let Some(v) = t.reduction_from_baseline_pct {
            out.push(format!("{name} reduction from the baseline: {} %.", pm(&v, 1)));
        }
    }
    out
}

fn chart(points: &[ReportAssessment], m: &HealingMetrics) -> ChartData {
    let counted = |r: AssessmentRole| matches!(r, AssessmentRole::Baseline | AssessmentRole::Used);
    let t = m.four_week.threshold_pct;
    let base_day = m.baseline_at.map(|b| b.date_naive());
    let since = |d: NaiveDate| base_day.map(|b| (d - b).num_days() as f64);
    ChartData {
        points: points
            .iter()
            .filter(|a| a.role != AssessmentRole::Superseded)
            .filter_map(|a| {
                Some(ChartPoint {
                    day: a.days_since_baseline?,
                    value: a.area_mm2.value,
                    pm: a.area_mm2.uncertainty,
                    counted: counted(a.role),
                })
            })
            .collect(),
        threshold: points
            .iter()
            .find(|a| a.role == AssessmentRole::Baseline)
            .map(|a| (a.area_mm2.value * (1.0 - t / 100.0), format!("−{t:.0} % at four weeks"))),
        verdict_day: VERDICT_DAY,
        trend: m.area_linear.map(|f| (f.at_baseline.value, f.slope_per_week.value / 7.0)),
        closure: match (m.projection.state, m.projection.date, m.projection.earliest) {
            (ProjectionState::Closing, Some(d), Some(e)) => {
                since(d).zip(since(e)).map(|(d, e)| (d, e, m.projection.latest.and_then(since)))
            }
            _ => None,
        },
    }
}

fn row(a: &ReportAssessment) -> Row {
    let counted = matches!(a.role, AssessmentRole::Baseline | AssessmentRole::Used);
    Row {
        cells: [
            day(a.taken_at.date_naive()),
            a.days_since_baseline.map(|d| format!("{d:.0}")).unwrap_or_else(|| "–".into()),
            if a.clinician { "outline".into() } else { "automatic".into() },
            pm(&a.area_mm2, 1),
            pm(&a.volume_mm3, 0),
            pm(&a.max_depth_mm, 2),
            // As a change: a wound that shrank reads negative.
            a.area_reduction_from_baseline_pct
                .map(|v| format!("{:+.1} ± {:.1}", 0.0 - v.value, v.uncertainty))
                .unwrap_or_else(|| "–".into()),
            role(a.role).into(),
        ],
        note: note(a),
        muted: !counted,
    }
}

/// Printed under an assessment's row: its wound bed's tissue shares, and why it is excluded.
fn note(a: &ReportAssessment) -> Option<String> {
    let bed = (!a.tissue.is_empty()).then(|| {
        let shares: Vec<String> =
            a.tissue.iter().map(|(class, v)| format!("{class} {:.0} ± {:.0} %", v.value, v.uncertainty)).collect();
        format!("Wound bed: {}.", shares.join(", "))
    });
    let excluded = a.exclusion.as_ref().map(|why| format!("Excluded: {why}"));
    let lines: Vec<String> = bed.into_iter().chain(excluded).collect();
    (!lines.is_empty()).then(|| lines.join(" "))
}

/// The granulation share of the wound bed at the first and the latest counted assessments
/// that have a tissue composition.
fn granulation_figure(assessments: &[ReportAssessment]) -> Option<String> {
    let counted = |a: &&ReportAssessment| matches!(a.role, AssessmentRole::Baseline | AssessmentRole::Used);
    let share = |a: &ReportAssessment| a.tissue.iter().find(|(c, _)| c == "granulation").map(|(_, v)| *v);
    let with: Vec<(&ReportAssessment, ValuePm)> =
        assessments.iter().filter(counted).filter_map(|a| Some((a, share(a)?))).collect();
    let (first, last) = (with.first()?, with.last()?);
    let at = |a: &ReportAssessment| day(a.taken_at.date_naive());
    Some(if with.len() == 1 {
        format!("Granulation: {} % of the wound bed ({}).", pm(&first.1, 0), at(first.0))
    } else {
        format!(
            "Granulation: {} % of the wound bed on {}, {} % on {}.",
            pm(&first.1, 0),
            at(first.0),
            pm(&last.1, 0),
            at(last.0)
        )
    })
}

/// What the report of `wound` says, generated at `now`.
pub fn compose(
    now: DateTime<Utc>,
    patient: &PatientLine,
    wound: &Wound,
    assessments: &[ReportAssessment],
    metrics: &HealingMetrics,
    mesh: Option<(Vec<u8>, DateTime<Utc>)>,
) -> WoundReport {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    WoundReport {
        generated: now.format("%Y-%m-%d %H:%M UTC").to_string(),
        patient: vec![
            ("Name".into(), patient.name.clone()),
            ("Born".into(), or_dash(patient.birth_date.map(day))),
            ("Sex".into(), or_dash(patient.sex.clone())),
            ("Record no.".into(), or_dash(patient.mrn.clone())),
        ],
        wound: vec![
            ("Site".into(), site(wound)),
            ("Type".into(), aetiology(wound.aetiology).into()),
            ("Stage".into(), or_dash(wound.stage.clone())),
            ("Onset".into(), or_dash(wound.onset_date.map(day))),
            ("Status".into(), format!("{} since {}", status(wound.status), day(wound.status_date))),
            ("Wound id".into(), wound.id.to_string()),
        ],
        verdict: verdict(metrics),
        figures: figures(metrics, now.date_naive()).into_iter().chain(granulation_figure(assessments)).collect(),
        chart: chart(assessments, metrics),
        rows: assessments.iter().map(row).collect(),
        mesh: mesh.map(|(glb, taken)| LatestMesh { glb, taken: day(taken.date_naive()) }),
    }
}
