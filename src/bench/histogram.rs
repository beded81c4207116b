//! Latency percentiles: an HdrHistogram of microseconds (3 significant digits, up
//! to an hour), which merges across threads and intervals without losing the tail.
//! [`Latency::write_hgrm`] writes the whole distribution in HdrHistogram's text
//! format, the `.hgrm` that wrk2 prints and HdrHistogram's plotter reads.

use std::io::{self, Write};
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

/// Percentile steps per halving of the distance to 100% in a `.hgrm` (what wrk2
/// and HdrHistogram's `outputPercentileDistribution` use).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Microseconds per unit written to a `.hgrm`: values are in milliseconds, the
/// unit wrk2 writes and HdrHistogram's plotter labels its axis with.
const MICROS_PER_MS: f64 = 1000.0;

impl Latency {
    /// Writes the percentile distribution as HdrHistogram's Java
    /// `outputPercentileDistribution` does (milliseconds, 3 decimals): a header,
    /// one line per percentile step (`Value Percentile TotalCount
    /// 1/(1-Percentile)`, the last, at 100%, without the last column), and the
    /// `#[Mean …]`, `#[Max …]`, `#[Buckets …]` footer. An empty histogram is the
    /// header and a footer of zeros.
    pub fn write_hgrm(&self, out: &mut impl Write) -> io::Result<()> {
        let h = &self.hist;
        let digits = usize::from(h.sigfig());
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / MICROS_PER_MS;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.digits$} {q:2.12} {total:10}")?;
            }
        }
        let mean = h.mean() / MICROS_PER_MS;
        let stdev = h.stdev() / MICROS_PER_MS;
        let max = h.max() as f64 / MICROS_PER_MS;
        // What Java calls subBucketCount: 2 × 10^digits rounded up to a power of two.
        let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
        writeln!(
            out,
            "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
        )?;
        writeln!(
            out,
            "#[Max     = {max:12.digits$}, Total count    = {:12}]",
            h.len()
        )?;
        writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
            h.buckets()
        )
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

    #[test]
    fn hgrm_is_hdrhistograms_percentile_distribution() {
        let mut l = Latency::new();
        for us in [100u64, 200, 300, 400, 1000] {
            l.record(Duration::from_micros(us));
        }
        let mut out = Vec::new();
        l.write_hgrm(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // Steps of 10% up to 50%, 5% up to 75%, 2.5% … (5 ticks per half distance),
        // until the last value, then 100%.
        let expected = concat!(
            "       Value     Percentile TotalCount 1/(1-Percentile)\n",
            "\n",
            "       0.100 0.000000000000          1           1.00\n",
            "       0.100 0.100000000000          1           1.11\n",
            "       0.100 0.200000000000          1           1.25\n",
            "       0.200 0.300000000000          2           1.43\n",
            "       0.200 0.400000000000          2           1.67\n",
            "       0.300 0.500000000000          3           2.00\n",
            "       0.300 0.550000000000          3           2.22\n",
            "       0.400 0.600000000000          4           2.50\n",
            "       0.400 0.650000000000          4           2.86\n",
            "       0.400 0.700000000000          4           3.33\n",
            "       0.400 0.750000000000          4           4.00\n",
            "       0.400 0.775000000000          4           4.44\n",
            "       1.000 0.800000000000          5           5.00\n",
            "       1.000 1.000000000000          5\n",
            "#[Mean    =        0.400, StdDeviation   =        0.316]\n",
            "#[Max     =        1.000, Total count    =            5]\n",
            "#[Buckets =           22, SubBuckets     =         2048]\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn an_empty_hgrm_is_a_header_and_zeros() {
        let mut out = Vec::new();
        Latency::new().write_hgrm(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean    =        0.000,"), "{text}");
        assert!(text.contains("Total count    =            0]"), "{text}");
    }
}
