//! RFC 3339 UTC timestamps with microseconds. The date and time of day are formatted
//! once per second; each message only adds its microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// A per-thread cache of the formatted current second.
#[derive(Debug, Default)]
pub struct Clock {
    second: Option<u64>,
    /// `2026-11-26T22:47:07.` for `second`.
    prefix: [u8; 20],
}

impl Clock {
    /// Appends `2026-11-26T22:47:07.123456Z` for `t`.
    pub fn write(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let formatted = humantime::format_rfc3339_seconds(t).to_string();
            // `YYYY-MM-DDTHH:MM:SSZ`: keep the first 19 bytes, then the dot.
            if let Some(head) = formatted.as_bytes().get(..19) {
                self.prefix[..19].copy_from_slice(head);
                self.prefix[19] = b'.';
                self.second = Some(second);
            }
        }
        out.extend_from_slice(&self.prefix);
        let micros = since.subsec_micros();
        let mut digits = [b'0'; 7];
        let mut n = micros;
        for d in digits[..6].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        digits[6] = b'Z';
        out.extend_from_slice(&digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_microseconds_and_reuses_the_second() {
        let mut clock = Clock::default();
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_042);
        let mut out = Vec::new();
        clock.write(t, &mut out);
        assert_eq!(out, b"2026-11-18T11:06:40.000042Z");
        out.clear();
        clock.write(t + Duration::from_micros(999_000), &mut out);
        assert_eq!(out, b"2026-11-18T11:06:40.999042Z");
        out.clear();
        clock.write(t + Duration::from_secs(1), &mut out);
        assert_eq!(out, b"2026-11-18T11:06:41.000042Z");
    }
}
