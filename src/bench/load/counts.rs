//! What a load thread counts: messages sent and answered, errors by kind, UDP loss,
//! reordering and duplicates. Plain numbers that add up across threads and
//! subtract into intervals; the names are the words the report prints.

use std::io;
use std::sync::atomic::AtomicU64;

/// Why a connection failed or a reply did not come. The names are the words the
/// report prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused (TCP connect, or ICMP port unreachable for UDP).
    Refused,
    /// Reset by the peer, or a broken pipe.
    Reset,
    /// A connect, reply or close that did not happen within its timeout.
    Timeout,
    /// The server closed the connection before the run was over.
    Closed,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Other => "other",
        }
    }

    pub(super) fn of(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            _ => ErrorKind::Other,
        }
    }
}

/// Counters of one thread (or, summed, of the run). Only messages after the warmup
/// count, except `warmup_sent` and `warmup_received` (which only the interval
/// lines show).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connected: u64,
    pub sent: u64,
    pub warmup_sent: u64,
    pub bytes_sent: u64,
    pub received: u64,
    pub warmup_received: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.connected += o.connected;
        self.sent += o.sent;
        self.warmup_sent += o.warmup_sent;
        self.bytes_sent += o.bytes_sent;
        self.received += o.received;
        self.warmup_received += o.warmup_received;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.duplicated += o.duplicated;
    }

    /// What happened since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = *self;
        d.connected -= earlier.connected.min(d.connected);
        d.sent -= earlier.sent.min(d.sent);
        d.warmup_sent -= earlier.warmup_sent.min(d.warmup_sent);
        d.bytes_sent -= earlier.bytes_sent.min(d.bytes_sent);
        d.received -= earlier.received.min(d.received);
        d.warmup_received -= earlier.warmup_received.min(d.warmup_received);
        for (a, b) in d.errors.iter_mut().zip(earlier.errors) {
            *a -= b.min(*a);
        }
        d.lost -= earlier.lost.min(d.lost);
        d.reordered -= earlier.reordered.min(d.reordered);
        d.duplicated -= earlier.duplicated.min(d.duplicated);
        d
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub(super) fn error(&mut self, kind: ErrorKind) {
        if let Some(slot) = self.errors.get_mut(kind as usize) {
            *slot += 1;
        }
    }
}

/// Running totals the main thread reads for the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_is_the_difference_of_two_snapshots() {
        let mut total = Counts {
            sent: 10,
            ..Counts::default()
        };
        total.error(ErrorKind::Reset);
        let mark = total;
        total.sent += 5;
        total.received += 3;
        total.error(ErrorKind::Reset);
        total.error(ErrorKind::Timeout);
        let d = total.since(&mark);
        assert_eq!((d.sent, d.received, d.errors_total()), (5, 3, 2));
        assert_eq!(d.errors[ErrorKind::Reset as usize], 1);
        let mut sum = mark;
        sum.add(&d);
        assert_eq!(sum, total);
    }
}
