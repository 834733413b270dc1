//! [`FuseLag`]: a bounded histogram of live fusion latencies (frame push → fused), kept per
//! scan and merged by benchmarks.

use std::time::Duration;

/// Push → fused latencies: a log histogram with 16 buckets per power of two of
/// microseconds (values within about 6 %), fixed size whatever the number of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseLag {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

/// Sub-buckets per power of two in [`FuseLag`].
const LAG_SUB: u64 = 16;
/// Buckets of [`FuseLag`]: up to 2⁴⁰ µs, far beyond any real lag.
const LAG_BUCKETS: usize = (LAG_SUB as usize) * 37;

impl Default for FuseLag {
    fn default() -> Self {
        FuseLag { buckets: vec![0; LAG_BUCKETS], count: 0, max_us: 0 }
    }
}

impl FuseLag {
    fn bucket(us: u64) -> usize {
        if us < LAG_SUB {
            return us as usize;
        }
        let octave = u64::from(63 - us.leading_zeros()); // ≥ 4
        let sub = (us >> (octave - 4)) & (LAG_SUB - 1);
        (((octave - 3) * LAG_SUB + sub) as usize).min(LAG_BUCKETS - 1)
    }

    /// The largest value, µs, that falls in bucket `i`.
    fn upper_us(i: usize) -> u64 {
        let i = i as u64;
        if i < LAG_SUB {
            return i;
        }
        let (octave, sub) = (i / LAG_SUB + 3, i % LAG_SUB);
        ((LAG_SUB + sub + 1) << (octave - 4)) - 1
    }

    /// Adds one latency.
    pub fn record(&mut self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &FuseLag) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0..=1), rounded up to its bucket's upper edge (never above the
    /// maximum); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(Self::upper_us(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_histogram_brackets_its_quantiles_within_its_resolution() {
        let mut h = FuseLag::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, exact) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0)] {
            let got = h.quantile(q).as_micros() as f64;
            assert!(got >= exact && got <= exact * 1.07, "q{q}: {got} vs {exact}");
        }
        let mut m = FuseLag::default();
        m.record(Duration::from_secs(3));
        m.merge(&h);
        assert_eq!((m.count(), m.max()), (10_001, Duration::from_secs(3)));
        for us in [0, 1, 15, 16, 17, 31, 32, 1_000, 123_456, u64::MAX / 2] {
            assert!(FuseLag::upper_us(FuseLag::bucket(us)) >= us.min(FuseLag::upper_us(LAG_BUCKETS - 1)), "{us}");
        }
    }
}
