//! Latency percentiles: an HdrHistogram of microseconds (3 significant digits, up
//! to an hour), which merges across threads and intervals without losing the tail.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Recorded latencies.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// The percentiles the report prints, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

const HIGHEST_MICROS: u64 = 3_600_000_000;

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
    // 3 significant digits): no input can make this fail.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Latency { hist }
    }

    /// Records one latency (longer than an hour counts as an hour).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(micros.min(HIGHEST_MICROS));
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn clear(&mut self) {
        self.hist.reset();
    }

    /// `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.hist.is_empty() {
            return None;
        }
        let at = |q: f64| self.hist.value_at_quantile(q);
        Some(Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: self.hist.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        let mut l = Latency::new();
        assert_eq!(l.percentiles(), None);
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let mut other = Latency::new();
        other.record(Duration::from_secs(2));
        l.add(&other);
        let p = l.percentiles().unwrap();
        // 1001 samples: the 50th percentile is the 501st.
        assert_eq!(p.p50, 501);
        assert_eq!(p.p90, 901);
        assert_eq!(p.p99, 991);
        assert_eq!(p.p999, 1000);
        // 3 significant digits: 2 s is within 0.1 %.
        assert!(p.max.abs_diff(2_000_000) <= 2_000, "{}", p.max);
        assert_eq!(l.count(), 1001);
    }
}
