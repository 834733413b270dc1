//! Statistics: HDR latency histograms, error counts by code, and the run report (table and
//! JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track: longer values are clamped to it (and counted).
pub const MAX_TRACKABLE: Duration = Duration::from_secs(120);

/// Latencies in microseconds, 3 significant figures (0.1 % resolution), 1 µs – 120 s.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
    clamped: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
        #[allow(clippy::unwrap_used)]
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE.as_micros() as u64, 3).unwrap();
        Self { hist, clamped: 0 }
    }

    /// Records one latency (sub-microsecond values count as 1 µs, values past
    /// [`MAX_TRACKABLE`] as `MAX_TRACKABLE`).
    pub fn record(&mut self, d: Duration) {
        let max = MAX_TRACKABLE.as_micros() as u64;
        let us = (d.as_micros() as u64).max(1);
        if us > max {
            self.clamped += 1;
        }
        self.hist.saturating_record(us.min(max));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so `add` cannot fail; fall back to value-by-value.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.clamped += other.clamped;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Count, mean, p50/p90/p99/p99.9 and max, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.hist.is_empty();
        let ms = |us: u64| if empty { 0.0 } else { round3(us as f64 / 1000.0) };
        LatencySummary {
            count: self.count(),
            mean_ms: if empty { 0.0 } else { round3(self.hist.mean() / 1000.0) },
            p50_ms: ms(self.hist.value_at_percentile(50.0)),
            p90_ms: ms(self.hist.value_at_percentile(90.0)),
            p99_ms: ms(self.hist.value_at_percentile(99.0)),
            p999_ms: ms(self.hist.value_at_percentile(99.9)),
            max_ms: ms(self.hist.max()),
            clamped: self.clamped,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What the report says about one latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest value, ms.
    pub max_ms: f64,
    /// Values past the histogram's range, recorded as its maximum.
    pub clamped: u64,
}

/// Errors by code (`unavailable`, `http_503`, `timeout`, …), sorted by code.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    /// Counts one error with this code.
    pub fn add(&mut self, code: impl Into<String>) {
        *self.0.entry(code.into()).or_default() += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// One SLO as checked at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloOutcome {
    /// As given: `ack_p99_ms=50`.
    pub slo: String,
    /// The measured value.
    pub actual: f64,
    /// Whether it was met.
    pub met: bool,
}

/// The result of a run, printed as a table and written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `scan`, `dashboard`, …
    pub scenario: String,
    /// Target base URLs, used round-robin.
    pub targets: Vec<String>,
    /// Ramp-up, seconds.
    pub ramp_up_s: f64,
    /// Wall time of the measured part of the run.
    pub elapsed_s: f64,
    /// The scan scenario's figures (flattened into the JSON).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanFigures>,
    /// The other scenarios' latencies by name (`delivery`, `change_call`, …); `--slo
    /// NAME_p99_ms=…` checks them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub latencies: BTreeMap<String, LatencySummary>,
    /// The other scenarios' counts and rates by name (`sockets`, `changes`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, f64>,
    /// Errors by code (setup and run).
    pub errors: Errors,
    /// Every SLO given and whether it held.
    pub slo: Vec<SloOutcome>,
}

/// What a `scan` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScanFigures {
    /// Concurrent streams (phones).
    pub scans: usize,
    /// Frames per second each phone offers.
    pub fps: f64,
    /// `u16zstd`, `u16`, `f32`, `f32zstd`.
    pub encoding: String,
    /// `ws`.
    pub transport: String,
    /// Mean size of one encoded `frame` message, bytes (the colour JPEG's share included).
    pub frame_message_bytes: u64,
    /// One frame in this many carried the colour JPEG, the first included (0: none).
    pub colour_every: u64,
    /// That JPEG's size, bytes (0: none).
    pub colour_jpeg_bytes: u64,
    /// Frames handed to the socket.
    pub frames_sent: u64,
    /// Frames acknowledged as durable.
    pub frames_acked: u64,
    /// `frames_acked / elapsed_s`.
    pub throughput_fps: f64,
    /// `scans × fps`: what the phones would send if never held back.
    pub offered_fps: f64,
    /// Payload throughput, MB/s (10^6 bytes) of acked frame messages.
    pub throughput_mb_s: f64,
    /// Frame→durable-ack latency, from the frame's first transmission.
    pub ack_latency: LatencySummary,
    /// With colour (`colour_every` > 0): `ack_latency` of the frames that carried the JPEG,
    /// and of the others. Latencies are matched to frames by order (the client reports them
    /// in seq order), which holds while no frame is skipped: trust the split when
    /// `reconnects` is 0.
    pub ack_latency_colour: Option<LatencySummary>,
    pub ack_latency_depth_only: Option<LatencySummary>,
    /// Time `send_frame` waited for window space or a `resume` (backpressure).
    pub send_wait: LatencySummary,
    /// Streams that ended `finished`.
    pub scans_completed: u64,
    /// Streams that ended in an error.
    pub scans_failed: u64,
    /// Reconnections the clients made.
    pub reconnects: u64,
    /// Acks by second of the run in which their frame was sent: where in the run the slow
    /// ones were.
    pub ack_timeline: Vec<AckSecond>,
}

/// Seconds of a run the ack timeline covers (later frames count only in the totals).
pub const MAX_TIMELINE_SECONDS: usize = 3600;

/// The acks of the frames sent in one second of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AckSecond {
    /// Frames acknowledged.
    pub acked: u64,
    /// Of which later than 50 ms after they were sent.
    pub over_50ms: u64,
    /// The slowest, ms.
    pub max_ms: f64,
}

impl AckSecond {
    /// Counts one ack `latency` after its frame was sent.
    pub fn add(&mut self, latency: Duration) {
        self.acked += 1;
        self.over_50ms += u64::from(latency > Duration::from_millis(50));
        self.max_ms = self.max_ms.max(round3(latency.as_secs_f64() * 1000.0));
    }

    /// Adds another phone's counts for the same second.
    pub fn merge(&mut self, other: &AckSecond) {
        self.acked += other.acked;
        self.over_50ms += other.over_50ms;
        self.max_ms = self.max_ms.max(other.max_ms);
    }
}

impl Report {
    /// The report of a scenario measured by named latencies and counts.
    pub fn named(
        scenario: &str,
        targets: &[String],
        ramp_up_s: f64,
        elapsed_s: f64,
        latencies: BTreeMap<String, LatencySummary>,
        counts: BTreeMap<String, f64>,
        errors: Errors,
    ) -> Self {
        Report {
            scenario: scenario.into(),
            targets: targets.to_vec(),
            ramp_up_s,
            elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
            scan: None,
            latencies,
            counts,
            errors,
            slo: Vec::new(),
        }
    }

    /// Whether every SLO held.
    pub fn slo_met(&self) -> bool {
        self.slo.iter().all(|s| s.met)
    }

    /// A fixed-width table for the terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<26} {v}");
        };
        let _ = writeln!(s, "loadtest {} — {}", self.scenario, self.targets.join(", "));
        row(&mut s, "elapsed", format!("{:.2} s (ramp-up {:.1} s)", self.elapsed_s, self.ramp_up_s));
        let lat = |s: &mut String, name: &str, l: &LatencySummary| {
            row(
                s,
                name,
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2} ms  (n={})",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, l.count
                ),
            );
        };
        if let Some(f) = &self.scan {
            row(
                &mut s,
                "scans × fps",
                format!("{} × {} ({}, {}, {} B/frame)", f.scans, f.fps, f.encoding, f.transport, f.frame_message_bytes),
            );
            if f.colour_every > 0 {
                row(&mut s, "colour", format!("a {} B JPEG on every {}th frame", f.colour_jpeg_bytes, f.colour_every));
            }
            row(&mut s, "frames sent / acked", format!("{} / {}", f.frames_sent, f.frames_acked));
            row(
                &mut s,
                "throughput",
                format!(
                    "{:.1} frames/s of {:.1} offered ({:.2} MB/s)",
                    f.throughput_fps, f.offered_fps, f.throughput_mb_s
                ),
            );
            lat(&mut s, "frame→ack latency", &f.ack_latency);
            if let (Some(c), Some(d)) = (&f.ack_latency_colour, &f.ack_latency_depth_only) {
                lat(&mut s, "  frames with colour", c);
                lat(&mut s, "  frames without", d);
            }
            lat(&mut s, "send wait (backpressure)", &f.send_wait);
            row(
                &mut s,
                "scans completed / failed",
                format!("{} / {} ({} reconnects)", f.scans_completed, f.scans_failed, f.reconnects),
            );
        }
        for (name, v) in &self.counts {
            row(&mut s, name, if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") });
        }
        for (name, l) in &self.latencies {
            lat(&mut s, &format!("{name} latency"), l);
        }
        if self.errors.0.is_empty() {
            row(&mut s, "errors", "none".into());
        } else {
            let list: Vec<String> = self.errors.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row(&mut s, "errors", list.join("  "));
        }
        for o in &self.slo {
            row(
                &mut s,
                "SLO",
                format!("{:<20} actual {:<10.3} {}", o.slo, o.actual, if o.met { "met" } else { "MISSED" }),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut l = Latencies::new();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        // 3 significant figures: within 0.2 % of the exact value (HDR reports the top of a bucket).
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.001;
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p90_ms, 900.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.p999_ms, 999.0), "{s:?}");
        assert!(close(s.max_ms, 1000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let s = Latencies::new().summary();
        assert_eq!(s.count, 0);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms, s.mean_ms), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn tail_is_seen_by_high_percentiles_only() {
        let mut l = Latencies::new();
        for _ in 0..990 {
            l.record(Duration::from_millis(2));
        }
        for _ in 0..10 {
            l.record(Duration::from_millis(200));
        }
        let s = l.summary();
        assert!((s.p50_ms - 2.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 2.0).abs() < 0.01, "{s:?}");
        assert!((s.p999_ms - 200.0).abs() < 0.3, "{s:?}");
    }

    #[test]
    fn merge_adds_counts_and_out_of_range_values_are_clamped() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::from_micros(0));
        b.record(Duration::from_secs(1000));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.clamped, 1);
        assert!((s.max_ms - 120_000.0).abs() < 120.0, "{s:?}");
    }

    #[test]
    fn errors_count_by_code() {
        let mut e = Errors::default();
        e.add("timeout");
        e.add("http_503");
        e.add("timeout");
        let mut f = Errors::default();
        f.add("http_503");
        e.merge(&f);
        assert_eq!(e.total(), 4);
        assert_eq!(e.0["timeout"], 2);
        assert_eq!(e.0["http_503"], 2);
        assert_eq!(serde_json::to_string(&e).unwrap_or_default(), r#"{"http_503":2,"timeout":2}"#);
    }
}
