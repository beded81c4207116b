//! Echo timing: the one message a closed-loop `--echo` connection has in flight,
//! and what a reply's latency is charged from (the scheduled send time in an open
//! loop, the actual write in a closed one; see [`pace`](super::super::pace)).

use std::time::Duration;

use crate::bench::pace::{self, Schedule};

/// The message awaiting its reply, in a closed loop with `--echo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct InFlight {
    /// Its sequence number, when it was written, and until when it is awaited.
    awaiting: Option<(u64, Duration, Duration)>,
}

impl InFlight {
    /// `seq` was written at `at`; its reply is awaited for `timeout`.
    pub(super) fn sent(&mut self, seq: u64, at: Duration, timeout: Duration) {
        self.awaiting = Some((seq, at, at.saturating_add(timeout)));
    }

    pub(super) fn is_awaiting(&self) -> bool {
        self.awaiting.is_some()
    }

    /// A reply to `seq` came: when it was sent, if it was the one awaited (which is
    /// then no longer awaited).
    pub(super) fn answered(&mut self, seq: u64) -> Option<Duration> {
        match self.awaiting {
            Some((s, at, _)) if s == seq => {
                self.awaiting = None;
                Some(at)
            }
            _ => None,
        }
    }

    /// Whether the awaited reply is overdue at `now`.
    pub(super) fn expired(&self, now: Duration) -> bool {
        self.awaiting.is_some_and(|(_, _, until)| now >= until)
    }

    /// Stops waiting (the reply is overdue or cannot come); true if one was awaited.
    pub(super) fn give_up(&mut self) -> bool {
        self.awaiting.take().is_some()
    }
}

/// The latency of the reply to message `seq` of connection `conn` that arrived at
/// `now`: from its scheduled time in an open loop, else from `sent_at` (the awaited
/// message's write); `None` when neither is known (a late reply in a closed loop).
pub(super) fn latency(
    schedule: Schedule,
    conn: u32,
    seq: u64,
    sent_at: Option<Duration>,
    now: Duration,
) -> Option<Duration> {
    let from = schedule.scheduled(u64::from(conn), seq).or(sent_at)?;
    Some(pace::latency(from, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_closed_loop_reply_is_timed_from_its_write() {
        let mut f = InFlight::default();
        assert!(!f.is_awaiting());
        f.sent(7, 10 * MS, 5 * MS);
        assert!(f.is_awaiting());
        // A reply to another message does not end the wait.
        assert_eq!(f.answered(6), None);
        assert!(f.is_awaiting());
        let sent_at = f.answered(7);
        assert_eq!(sent_at, Some(10 * MS));
        assert!(!f.is_awaiting());
        assert_eq!(
            latency(Schedule::Closed, 0, 7, sent_at, 13 * MS),
            Some(3 * MS)
        );
        // Once answered, a duplicate has nothing to be timed from.
        assert_eq!(f.answered(7), None);
        assert_eq!(latency(Schedule::Closed, 0, 7, None, 13 * MS), None);
    }

    #[test]
    fn an_open_loop_reply_is_timed_from_its_schedule() {
        // 1000/s over 2 connections: connection 1's message 3 is due at 7 ms.
        let s = Schedule::new(1000, 2);
        assert_eq!(latency(s, 1, 3, None, 9 * MS), Some(2 * MS));
        // Even when it was written late, the schedule is what counts.
        assert_eq!(latency(s, 1, 3, Some(8 * MS), 9 * MS), Some(2 * MS));
        // A reply before the schedule (clock granularity) counts as zero.
        assert_eq!(latency(s, 1, 3, None, 6 * MS), Some(Duration::ZERO));
    }

    #[test]
    fn an_unanswered_message_expires_after_its_timeout() {
        let mut f = InFlight::default();
        assert!(!f.expired(Duration::MAX));
        f.sent(0, 10 * MS, 5 * MS);
        assert!(!f.expired(14 * MS));
        assert!(f.expired(15 * MS));
        assert!(f.give_up());
        assert!(!f.give_up());
        assert!(!f.expired(20 * MS));
    }
}
