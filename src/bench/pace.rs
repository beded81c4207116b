//! When each message is due, and what its latency is charged from: the pure part of
//! the load generator, with no sockets or clocks (times are offsets from the start).
//!
//! With a rate, message number `g` of the whole run is scheduled at `g / rate`, and
//! the messages are dealt round-robin to the connections, so connection `c` sends its
//! `k`-th message at `(k * connections + c) / rate`. A reply's latency counts from
//! that scheduled time, not from when the message was actually written: when the
//! server (or the network, or this process) stalls, the messages that queued up
//! behind the stall are charged the time they waited, as wrk2 does. Measuring from
//! the actual send time instead would hide the stall ("coordinated omission").

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// How sends are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Each connection sends as soon as it can (with `--echo`, when the previous
    /// reply came back): a closed loop; latency counts from the actual send.
    Closed,
    /// `rate` messages per second in total, spread evenly over `connections`: an
    /// open loop; latency counts from the scheduled send time.
    Open { rate: u64, connections: u64 },
}

impl Schedule {
    /// `rate` 0 is a closed loop.
    pub fn new(rate: u64, connections: usize) -> Self {
        if rate == 0 {
            Schedule::Closed
        } else {
            Schedule::Open {
                rate,
                connections: (connections as u64).max(1),
            }
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Schedule::Open { .. })
    }

    /// When message `seq` of connection `conn` is due (open loop only).
    pub fn scheduled(&self, conn: u64, seq: u64) -> Option<Duration> {
        match *self {
            Schedule::Closed => None,
            Schedule::Open { rate, connections } => {
                let g = u128::from(seq) * u128::from(connections) + u128::from(conn);
                let nanos = g * NANOS_PER_SEC / u128::from(rate);
                Some(duration_from_nanos(nanos))
            }
        }
    }

    /// How many messages of connection `conn` are scheduled strictly before `t`
    /// (open loop only): the sequence numbers below this are due at `t`.
    pub fn due_before(&self, conn: u64, t: Duration) -> Option<u64> {
        match *self {
            Schedule::Closed => None,
            Schedule::Open { rate, connections } => {
                // scheduled(g) = floor(g * 1e9 / rate) < t  ⟺  g * 1e9 < t * rate.
                let budget = t.as_nanos() * u128::from(rate);
                if budget == 0 {
                    return Some(0);
                }
                let last = (budget - 1) / NANOS_PER_SEC; // the largest global index due
                let conn = u128::from(conn);
                if last < conn {
                    return Some(0);
                }
                let count = (last - conn) / u128::from(connections) + 1;
                Some(u64::try_from(count).unwrap_or(u64::MAX))
            }
        }
    }

    /// What the latency of message `seq` is measured from: its scheduled time in an
    /// open loop, whatever delayed the write; `sent_at` (the actual write) in a
    /// closed loop, where the next message is not due until the reply is back.
    pub fn charge_from(&self, conn: u64, seq: u64, sent_at: Duration) -> Duration {
        self.scheduled(conn, seq).unwrap_or(sent_at)
    }
}

/// The latency of a reply that arrived at `replied_at`, charged from `charged_from`.
pub fn latency(charged_from: Duration, replied_at: Duration) -> Duration {
    replied_at.saturating_sub(charged_from)
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 1e9, so it fits.
    let sub = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn messages_are_dealt_round_robin_at_the_total_rate() {
        let s = Schedule::new(1000, 4);
        // Global message g is due at g ms: connection 1's messages are 1, 5, 9 …
        assert_eq!(s.scheduled(1, 0), Some(MS));
        assert_eq!(s.scheduled(1, 2), Some(9 * MS));
        assert_eq!(s.due_before(1, MS), Some(0));
        assert_eq!(s.due_before(1, MS + Duration::from_nanos(1)), Some(1));
        assert_eq!(s.due_before(0, Duration::ZERO), Some(0));
        // In one second, 1000 messages: 250 per connection.
        let total: u64 = (0..4)
            .map(|c| s.due_before(c, Duration::from_secs(1)).unwrap())
            .sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn due_before_agrees_with_scheduled() {
        for (rate, conns) in [(1, 1), (3, 7), (2000, 10), (999_983, 3), (7, 10_000)] {
            let s = Schedule::new(rate, conns);
            for conn in [0, (conns as u64 - 1) / 2, conns as u64 - 1] {
                for seq in [0, 1, 2, 17, 1000] {
                    let at = s.scheduled(conn, seq).unwrap();
                    assert_eq!(
                        s.due_before(conn, at),
                        Some(seq),
                        "{rate} {conns} {conn} {seq}"
                    );
                    let just_after = at + Duration::from_nanos(1);
                    assert_eq!(s.due_before(conn, just_after), Some(seq + 1));
                }
            }
        }
    }

    #[test]
    fn a_closed_loop_has_no_schedule() {
        let s = Schedule::new(0, 10);
        assert_eq!(s, Schedule::Closed);
        assert_eq!(s.due_before(0, Duration::from_secs(1)), None);
        assert_eq!(s.charge_from(0, 5, 7 * MS), 7 * MS);
    }

    /// The server stalls for 100 ms, and the sender, blocked behind it (its socket
    /// buffer full), writes the messages scheduled during the stall only once it
    /// ends. Each reply is charged from its scheduled time, so the stall shows in
    /// the latencies; measured from the actual writes it would all but vanish.
    #[test]
    fn a_stalled_reply_is_charged_from_its_scheduled_time() {
        let s = Schedule::new(1000, 1); // one message per ms
        let stall_from = 10 * MS;
        let stall_until = 110 * MS;
        let mut charged = Vec::new();
        let mut from_send = Vec::new();
        for seq in 0..200u64 {
            let due = s.scheduled(0, seq).unwrap();
            // Written when due, or when the stall ends if it was due during it.
            let sent_at = if due >= stall_from && due < stall_until {
                stall_until
            } else {
                due
            };
            let replied_at = sent_at + MS / 10;
            charged.push(latency(s.charge_from(0, seq, sent_at), replied_at));
            from_send.push(latency(sent_at, replied_at));
        }
        // The first message caught by the stall waited the whole 100 ms.
        assert_eq!(charged[10], 100 * MS + MS / 10);
        assert_eq!(charged[60], 50 * MS + MS / 10);
        assert_eq!(charged[150], MS / 10);
        // Every message caught in the first half of the stall waited 50 ms or more.
        assert_eq!(charged.iter().filter(|l| **l >= 50 * MS).count(), 51);
        // Timed from the write, every message looks fast.
        assert!(from_send.iter().all(|l| *l == MS / 10));
    }
}
