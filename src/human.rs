//! Values as a person reads them in diagnostics: durations as `65µs`, `1.2s`,
//! `3m05s` rather than `6.475600093835965e-5` (log fields are read by people first;
//! a tool that wants numbers has the metrics).

use std::fmt;
use std::time::Duration;

/// A duration shown with two or three significant digits and its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let micros = d.as_micros();
        if micros < 1_000 {
            write!(f, "{micros}µs")
        } else if micros < 10_000 {
            write!(f, "{:.1}ms", d.as_secs_f64() * 1e3)
        } else if micros < 1_000_000 {
            write!(f, "{}ms", d.as_millis())
        } else if micros < 60_000_000 && d.subsec_millis() == 0 {
            // A setting (`--idle-timeout 5`) reads as it was written.
            write!(f, "{}s", d.as_secs())
        } else if micros < 60_000_000 {
            write!(f, "{:.1}s", d.as_secs_f64())
        } else if d.as_secs() < 3_600 {
            write!(f, "{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
        } else {
            let s = d.as_secs();
            write!(f, "{}h{:02}m{:02}s", s / 3_600, s / 60 % 60, s % 60)
        }
    }
}

/// Shorthand for `HumanDuration(d)`, for log fields: `secs = %human::duration(d)`.
pub fn duration(d: Duration) -> HumanDuration {
    HumanDuration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        let show = |d: Duration| duration(d).to_string();
        assert_eq!(show(Duration::from_nanos(64_756)), "64µs");
        assert_eq!(show(Duration::from_micros(0)), "0µs");
        assert_eq!(show(Duration::from_micros(2_345)), "2.3ms");
        assert_eq!(show(Duration::from_micros(123_456)), "123ms");
        assert_eq!(show(Duration::from_millis(1_234)), "1.2s");
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_secs(185)), "3m05s");
        assert_eq!(show(Duration::from_secs(7_322)), "2h02m02s");
    }
}
