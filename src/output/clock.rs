//! RFC 3339 UTC timestamps with microseconds. The date and time of day are formatted
//! once per second; each new time only adds its microseconds, and messages cut from
//! one read (which share its receive time) copy the same 27 bytes.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-26T22:47:07.123456Z`
const LEN: usize = 27;

/// A per-thread cache of the formatted current second and the last time written.
#[derive(Debug, Default)]
pub struct Clock {
    second: Option<u64>,
    last: Option<SystemTime>,
    /// The whole timestamp for `last`; its first 20 bytes (`2026-11-26T22:47:07.`)
    /// are those of `second`.
    text: [u8; LEN],
}

impl Clock {
    /// Appends `2026-11-26T22:47:07.123456Z` for `t`.
    pub fn write(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        if self.last != Some(t) {
            self.format(t);
        }
        out.extend_from_slice(&self.text);
    }

    fn format(&mut self, t: SystemTime) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let formatted = humantime::format_rfc3339_seconds(t).to_string();
            // `YYYY-MM-DDTHH:MM:SSZ`: keep the first 19 bytes, then the dot.
            if let Some(head) = formatted.as_bytes().get(..19) {
                self.text[..19].copy_from_slice(head);
                self.text[19] = b'.';
                self.second = Some(second);
            }
        }
        let mut n = since.subsec_micros();
        for d in self.text[20..26].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.text[26] = b'Z';
        self.last = Some(t);
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
