//! `--idle-timeout`: one worker's timers. A min-heap keyed by deadline holds one
//! entry per connection, pushed when the connection is adopted. Activity does not
//! touch the heap (a read or write only stamps `Conn::last_active`); when an entry
//! comes due the worker re-checks the connection and either closes it or pushes a
//! new entry at its real deadline (lazy re-check). So a busy connection costs one
//! heap operation per timeout period, nothing is scanned per tick, and the event
//! loop sleeps exactly until the nearest deadline.
//!
//! Entries of connections that closed stay until they come due (the heap cannot
//! remove from the middle); [`IdleTimers::needs_compaction`] tells the worker when
//! they outnumber the live ones, and it rebuilds the heap from its connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::message::ConnId;

/// One pending check: when, and which connection (slab key plus id, since a key is
/// reused once its connection closes).
type Entry = Reverse<(Instant, usize, ConnId)>;

#[derive(Debug)]
pub struct IdleTimers {
    pub timeout: Duration,
    heap: BinaryHeap<Entry>,
}

impl IdleTimers {
    pub fn new(timeout: Duration) -> Self {
        IdleTimers {
            timeout,
            heap: BinaryHeap::new(),
        }
    }

    /// Checks connection `key`/`id` once it has been silent for the timeout since
    /// `last_active`.
    pub fn schedule(&mut self, key: usize, id: ConnId, last_active: Instant) {
        self.heap
            .push(Reverse((last_active + self.timeout, key, id)));
    }

    /// The earliest check; the event loop sleeps no longer than until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next check due at `now`, taken off the heap.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, key, id))| (key, id))
            }
            _ => None,
        }
    }

    /// Whether stale entries outnumber the `live` connections enough to rebuild.
    pub fn needs_compaction(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + 1024
    }

    /// Replaces every entry with one per live connection.
    pub fn rebuild(&mut self, live: impl Iterator<Item = (usize, ConnId, Instant)>) {
        let timeout = self.timeout;
        self.heap = live
            .map(|(key, id, last)| Reverse((last + timeout, key, id)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(Duration::from_secs(10));
        timers.schedule(1, 11, t0 + Duration::from_secs(5));
        timers.schedule(2, 12, t0);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(9)), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(10)), Some((2, 12)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(10)), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(20)), Some((1, 11)));
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn rebuild_drops_stale_entries() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(Duration::from_secs(1));
        for i in 0..3000 {
            timers.schedule(i, i as u64, t0);
        }
        assert!(timers.needs_compaction(10));
        timers.rebuild((0..10).map(|i| (i, i as u64, t0)));
        assert!(!timers.needs_compaction(10));
        assert_eq!(timers.heap.len(), 10);
    }
}
