//! Service-level objectives given on the command line (`--slo ack_p99_ms=50`), checked
//! against the report at the end of a run. Besides the scan scenario's fixed names, any
//! named latency of a report is constrained as `NAME_p50_ms`, `NAME_p90_ms`, `NAME_p99_ms`,
//! `NAME_p999_ms` or `NAME_max_ms` (e.g. `delivery_p99_ms=100`; the consult scenario's
//! signalling round trip is `signalling_p99_ms`), and the consult scenario's packet loss and
//! room count have names of their own (`loss_pct`, `room_loss_pct`, `min_rooms`,
//! `min_send_ratio`).

use std::fmt;
use std::str::FromStr;

use crate::stats::{LatencySummary, Report, SloOutcome};

/// A percentile of a named latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pct {
    P50,
    P90,
    P99,
    P999,
    Max,
}

impl Pct {
    const ALL: [(&'static str, Pct); 5] =
        [("p50", Pct::P50), ("p90", Pct::P90), ("p99", Pct::P99), ("p999", Pct::P999), ("max", Pct::Max)];

    fn name(self) -> &'static str {
        Pct::ALL.iter().find(|(_, p)| *p == self).map_or("?", |(n, _)| n)
    }

    fn of(self, l: &LatencySummary) -> f64 {
        match self {
            Pct::P50 => l.p50_ms,
            Pct::P90 => l.p90_ms,
            Pct::P99 => l.p99_ms,
            Pct::P999 => l.p999_ms,
            Pct::Max => l.max_ms,
        }
    }
}

/// What an SLO constrains, and in which direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// `ack_p50_ms`: frame→ack median at most this.
    AckP50Ms,
    /// `ack_p90_ms`.
    AckP90Ms,
    /// `ack_p99_ms`.
    AckP99Ms,
    /// `ack_p999_ms`.
    AckP999Ms,
    /// `ack_max_ms`.
    AckMaxMs,
    /// `min_fps`: throughput (acked frames/s) at least this.
    MinFps,
    /// `min_fps_ratio`: throughput at least this fraction of the offered rate (0–1).
    MinFpsRatio,
    /// `max_errors`: at most this many errors of any code.
    MaxErrors,
    /// `loss_pct`: media packets lost, all rooms together, at most this percentage.
    LossPct,
    /// `room_loss_pct`: the worst room's loss at most this percentage.
    RoomLossPct,
    /// `min_rooms`: at least this many rooms set up with media both ways.
    MinRooms,
    /// `min_send_ratio`: the consult senders sent at least this fraction of what they
    /// offered (0–1), i.e. the harness kept up.
    MinSendRatio,
    /// `NAME_pXX_ms`: a percentile of the report's latency `NAME` at most this.
    Latency { name: String, pct: Pct },
}

impl Metric {
    /// Every metric with its name, for parsing and help.
    pub const ALL: &'static [(&'static str, Metric)] = &[
        ("ack_p50_ms", Metric::AckP50Ms),
        ("ack_p90_ms", Metric::AckP90Ms),
        ("ack_p99_ms", Metric::AckP99Ms),
        ("ack_p999_ms", Metric::AckP999Ms),
        ("ack_max_ms", Metric::AckMaxMs),
        ("min_fps", Metric::MinFps),
        ("min_fps_ratio", Metric::MinFpsRatio),
        ("max_errors", Metric::MaxErrors),
        ("loss_pct", Metric::LossPct),
        ("room_loss_pct", Metric::RoomLossPct),
        ("min_rooms", Metric::MinRooms),
        ("min_send_ratio", Metric::MinSendRatio),
    ];

    /// The command-line name.
    pub fn name(&self) -> String {
        match self {
            Metric::Latency { name, pct } => format!("{name}_{}_ms", pct.name()),
            m => Metric::ALL.iter().find(|(_, x)| x == m).map_or("?", |(n, _)| n).to_string(),
        }
    }

    /// True when the value must not exceed the limit; false when it must reach it.
    pub fn is_upper_bound(&self) -> bool {
        !matches!(self, Metric::MinFps | Metric::MinFpsRatio | Metric::MinRooms | Metric::MinSendRatio)
    }

    /// `NAME_pXX_ms` for a named latency.
    fn latency(key: &str) -> Option<Metric> {
        let stem = key.strip_suffix("_ms")?;
        Pct::ALL.iter().find_map(|(p, pct)| {
            let name = stem.strip_suffix(p)?.strip_suffix('_')?;
            let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            ok.then(|| Metric::Latency { name: name.to_string(), pct: *pct })
        })
    }

    /// The measured value in a report (NaN, so never met, when the report lacks it).
    pub fn value(&self, r: &Report) -> f64 {
        let scan = |f: fn(&crate::stats::ScanFigures) -> f64| r.scan.as_ref().map_or(f64::NAN, f);
        match self {
            Metric::AckP50Ms => scan(|f| f.ack_latency.p50_ms),
            Metric::AckP90Ms => scan(|f| f.ack_latency.p90_ms),
            Metric::AckP99Ms => scan(|f| f.ack_latency.p99_ms),
            Metric::AckP999Ms => scan(|f| f.ack_latency.p999_ms),
            Metric::AckMaxMs => scan(|f| f.ack_latency.max_ms),
            Metric::MinFps => scan(|f| f.throughput_fps),
            Metric::MinFpsRatio => scan(|f| if f.offered_fps > 0.0 { f.throughput_fps / f.offered_fps } else { 0.0 }),
            Metric::MaxErrors => r.errors.total() as f64,
            Metric::LossPct => consult_count(r, "loss_pct"),
            Metric::RoomLossPct => consult_count(r, "worst_room_loss_pct"),
            Metric::MinRooms => consult_count(r, "rooms_established"),
            Metric::MinSendRatio => consult_count(r, "send_ratio"),
            Metric::Latency { name, pct } => r.latencies.get(name).map_or(f64::NAN, |l| pct.of(l)),
        }
    }
}

/// A count of the consult scenario, alone or as the `consult` part of `mixed` (NaN when
/// the report has none).
fn consult_count(r: &Report, name: &str) -> f64 {
    r.counts.get(name).or_else(|| r.counts.get(&format!("consult_{name}"))).copied().unwrap_or(f64::NAN)
}

/// One objective: a metric and its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// What is constrained.
    pub metric: Metric,
    /// The limit (inclusive).
    pub limit: f64,
}

/// Why an `--slo` argument did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloParseError(String);

impl fmt::Display for SloParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SloParseError {}

impl FromStr for Slo {
    type Err = SloParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let known = || Metric::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| SloParseError(format!("expected NAME=VALUE, e.g. ack_p99_ms=50; got {s:?}")))?;
        let key = key.trim();
        let metric = Metric::ALL
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, m)| m.clone())
            .or_else(|| Metric::latency(key))
            .ok_or_else(|| {
                SloParseError(format!("unknown SLO {key:?}; known: {}, or NAME_p99_ms (p50/p90/p99/p999/max)", known()))
            })?;
        let limit: f64 =
            value.trim().parse().map_err(|_| SloParseError(format!("SLO {key}: {value:?} is not a number")))?;
        if !limit.is_finite() || limit < 0.0 {
            return Err(SloParseError(format!("SLO {key}: the limit must be a finite number ≥ 0")));
        }
        if matches!(metric, Metric::LossPct | Metric::RoomLossPct) && limit > 100.0 {
            return Err(SloParseError(format!("SLO {key}: a percentage is between 0 and 100")));
        }
        if matches!(metric, Metric::MinFpsRatio | Metric::MinSendRatio) && limit > 1.0 {
            return Err(SloParseError(format!("SLO {key}: a ratio is between 0 and 1")));
        }
        Ok(Slo { metric, limit })
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.metric.name(), self.limit)
    }
}

impl Slo {
    /// Whether `actual` meets this objective.
    pub fn met_by(&self, actual: f64) -> bool {
        if actual.is_nan() {
            return false;
        }
        if self.metric.is_upper_bound() {
            actual <= self.limit
        } else {
            actual >= self.limit
        }
    }

    /// Checks the objective against a report.
    pub fn check(&self, r: &Report) -> SloOutcome {
        let actual = self.metric.value(r);
        SloOutcome { slo: self.to_string(), actual, met: self.met_by(actual) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_names() {
        let s: Slo = "ack_p99_ms=50".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, Slo { metric: Metric::AckP99Ms, limit: 50.0 });
        let s: Slo = " min_fps = 900.5 ".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, Slo { metric: Metric::MinFps, limit: 900.5 });
        assert_eq!(s.to_string(), "min_fps=900.5");
        for (name, m) in Metric::ALL {
            let s: Slo = format!("{name}=0").parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&s.metric, m);
            assert_eq!(m.name(), *name);
        }
    }

    #[test]
    fn named_latencies_parse_and_read_from_the_report() {
        let s: Slo = "delivery_p99_ms=100".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.metric, Metric::Latency { name: "delivery".into(), pct: Pct::P99 });
        assert_eq!(s.to_string(), "delivery_p99_ms=100");
        let s: Slo = "change_call_max_ms=5".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.metric, Metric::Latency { name: "change_call".into(), pct: Pct::Max });
        let mut l = crate::stats::Latencies::new();
        l.record(std::time::Duration::from_millis(80));
        let mut r = Report {
            scenario: "dashboard".into(),
            targets: vec![],
            ramp_up_s: 0.0,
            elapsed_s: 1.0,
            scan: None,
            latencies: Default::default(),
            counts: Default::default(),
            errors: Default::default(),
            slo: vec![],
        };
        let slo: Slo = "delivery_p99_ms=100".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!slo.check(&r).met, "a latency the report lacks is missed");
        r.latencies.insert("delivery".into(), l.summary());
        assert!(slo.check(&r).met);
        let ack: Slo = "ack_p99_ms=50".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!ack.check(&r).met, "scan figures are missing from a dashboard report");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "ack_p99_ms",
            "ack_p99_ms=",
            "ack_p99=50",
            "ack_p99_ms=fast",
            "ack_p99_ms=-1",
            "ack_p99_ms=NaN",
            "ack_p99_ms=inf",
            "min_fps_ratio=1.5",
            "loss_pct=101",
            "min_send_ratio=2",
            "=5",
            "_p99_ms=5",
            "Delivery_p99_ms=5",
            "delivery_p98_ms=5",
        ] {
            assert!(bad.parse::<Slo>().is_err(), "{bad:?} should not parse");
        }
        let e = "p99=5".parse::<Slo>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("ack_p99_ms"), "the error lists the known names: {e}");
    }

    #[test]
    fn consult_loss_and_rooms_read_from_the_report() {
        let mut r = Report::named("consult", &[], 0.0, 1.0, Default::default(), Default::default(), Default::default());
        let loss: Slo = "loss_pct=1".parse().unwrap_or_else(|e| panic!("{e}"));
        let worst: Slo = "room_loss_pct=2.5".parse().unwrap_or_else(|e| panic!("{e}"));
        let rooms: Slo = "min_rooms=10".parse().unwrap_or_else(|e| panic!("{e}"));
        let rtt: Slo = "signalling_p99_ms=20".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rtt.metric, Metric::Latency { name: "signalling".into(), pct: Pct::P99 });
        for s in [&loss, &worst, &rooms, &rtt] {
            assert!(!s.check(&r).met, "{s} is missed when the report lacks it");
        }
        r.counts.insert("loss_pct".into(), 0.4);
        r.counts.insert("worst_room_loss_pct".into(), 3.0);
        r.counts.insert("rooms_established".into(), 10.0);
        let mut l = crate::stats::Latencies::new();
        l.record(std::time::Duration::from_millis(3));
        r.latencies.insert("signalling".into(), l.summary());
        assert!(loss.check(&r).met);
        assert!(!worst.check(&r).met, "3 % in the worst room is over 2.5");
        assert!(rooms.check(&r).met, "min_rooms is a lower bound, inclusive");
        r.counts.insert("rooms_established".into(), 9.0);
        assert!(!rooms.check(&r).met);
        assert!(rtt.check(&r).met);
    }

    #[test]
    fn direction_and_boundaries() {
        let upper = Slo { metric: Metric::AckP99Ms, limit: 50.0 };
        assert!(upper.met_by(49.9));
        assert!(upper.met_by(50.0));
        assert!(!upper.met_by(50.001));
        assert!(!upper.met_by(f64::NAN));
        let lower = Slo { metric: Metric::MinFps, limit: 960.0 };
        assert!(lower.met_by(960.0));
        assert!(lower.met_by(1000.0));
        assert!(!lower.met_by(959.0));
        let errs = Slo { metric: Metric::MaxErrors, limit: 0.0 };
        assert!(errs.met_by(0.0));
        assert!(!errs.met_by(1.0));
    }
}
