//! File descriptors: the open-files limit (RLIMIT_NOFILE), the default
//! `--max-connections` derived from it, and the spare descriptor that lets the
//! workers turn clients away promptly when descriptors run out.

use std::fs::File;
use std::io;

/// Descriptors kept back for the server's own use beyond those open at start-up:
/// metrics connections, the spare descriptor, the one a refused connection holds
/// for a moment, and slack for the libraries.
pub const RESERVE: u64 = 32;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit.
/// When raising fails (a container may forbid it), the soft limit stays and is
/// returned.
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = super::sys::nofile_limit()?;
    if soft < hard && super::sys::set_nofile_soft(hard, hard).is_ok() {
        return Ok(hard);
    }
    Ok(soft)
}

/// How many descriptors this process has open (Linux `/proc/self/fd`); `None` where
/// that cannot be read.
pub fn open_descriptors() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle itself is one of the entries.
    Some((entries.count() as u64).saturating_sub(1))
}

/// The default `--max-connections`: the open-files limit less what is open now and
/// a reserve, at least 1.
pub fn default_max_connections(nofile: u64, open_now: u64) -> usize {
    let free = nofile.saturating_sub(open_now).saturating_sub(RESERVE);
    usize::try_from(free.max(1)).unwrap_or(usize::MAX)
}

/// One descriptor held in reserve (libev's and nginx's trick): when `accept` fails
/// with EMFILE, the worker closes it, accepts one pending client and closes that
/// at once, then takes the descriptor back. The client gets a prompt close instead
/// of hanging in the backlog, and the listener's readiness is consumed, so nothing
/// spins.
#[derive(Debug)]
pub struct SpareFd(Option<File>);

impl SpareFd {
    /// Opens `/dev/null` (close-on-exec, as std opens every file) as the spare.
    pub fn new() -> Self {
        SpareFd(File::open("/dev/null").ok())
    }

    /// Whether the spare is held.
    pub fn held(&self) -> bool {
        self.0.is_some()
    }

    /// Frees the descriptor so the next `accept` can have it.
    pub fn release(&mut self) {
        self.0 = None;
    }

    /// Takes a descriptor back; false while none is free.
    pub fn reclaim(&mut self) -> bool {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
        self.0.is_some()
    }
}

impl Default for SpareFd {
    fn default() -> Self {
        SpareFd::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_a_reserve() {
        assert_eq!(default_max_connections(1024, 20), 1024 - 20 - 32);
        assert_eq!(default_max_connections(40, 20), 1);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let raised = raise_nofile().unwrap();
        assert!(raised >= 3);
        assert!(open_descriptors().unwrap() >= 3);
    }

    #[test]
    fn spare_is_released_and_reclaimed() {
        let mut spare = SpareFd::new();
        assert!(spare.held());
        spare.release();
        assert!(!spare.held());
        assert!(spare.reclaim());
    }
}
