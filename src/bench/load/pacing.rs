//! Pacing: which messages each connection may send now. In an open loop (`--rate`)
//! a cursor walks the [`Schedule`] once, in time order over all of one thread's
//! connections, so each message costs O(1) whatever the number of connections; in a
//! closed loop a connection sends a batch as fast as the socket takes it, or with
//! `--echo` one message at a time as replies come back. No sockets or clocks here:
//! times are offsets from the start, given by the caller.

use std::time::Duration;

use crate::bench::pace::Schedule;

/// Largest run of messages encoded into one write.
pub(super) const BATCH_BYTES: usize = 64 * 1024;

/// Where one connection stands, as far as pacing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    /// The next sequence number to send.
    pub next_seq: u64,
    /// How many sequence numbers it sends in all (`u64::MAX`: not known yet).
    pub limit: u64,
    /// Open loop: the sequence numbers below this are due.
    pub due: u64,
    /// Closed loop with `--echo`: a message is awaiting its reply.
    pub awaiting_reply: bool,
}

/// One load thread's pacing: the schedule, and in an open loop the cursor over it.
#[derive(Debug)]
pub(super) struct Pacer {
    schedule: Schedule,
    echo: bool,
    /// Most messages per write.
    per_batch: u64,
    /// The id of each connection, by index.
    ids: Vec<u32>,
    /// How many sequence numbers each connection sends, by index (open loop).
    limits: Vec<u64>,
    /// The next scheduled message, as (round, index): round `r` is every
    /// connection's message `r`.
    cursor: (u64, usize),
    /// The most sequence numbers any connection sends: the cursor's last round.
    rounds: u64,
    finished: bool,
}

impl Pacer {
    /// `ids`: the thread's connections; `size`: bytes per message.
    pub(super) fn new(schedule: Schedule, echo: bool, size: usize, ids: Vec<u32>) -> Self {
        Pacer {
            schedule,
            echo,
            per_batch: (BATCH_BYTES / size.max(1)).max(1) as u64,
            ids,
            limits: Vec::new(),
            cursor: (0, 0),
            rounds: 0,
            finished: false,
        }
    }

    pub(super) fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub(super) fn is_open(&self) -> bool {
        self.schedule.is_open()
    }

    /// Connection `id`'s first measured sequence number and its cap (the sequence
    /// numbers scheduled before `end`), for a run that measures from `warmup`. In a
    /// closed loop the first measured number is only known without a warmup (else
    /// it is the first sent once the warmup is over), and there is no cap.
    pub(super) fn bounds(
        &self,
        id: u32,
        warmup: Duration,
        end: Option<Duration>,
    ) -> (Option<u64>, u64) {
        let id = u64::from(id);
        match self.schedule {
            Schedule::Open { .. } => {
                let cap = end
                    .and_then(|end| self.schedule.due_before(id, end))
                    .unwrap_or(u64::MAX);
                (self.schedule.due_before(id, warmup), cap)
            }
            Schedule::Closed if warmup.is_zero() => (Some(0), u64::MAX),
            Schedule::Closed => (None, u64::MAX),
        }
    }

    /// Starts the cursor, given how many sequence numbers each connection sends.
    pub(super) fn start(&mut self, limits: Vec<u64>) {
        self.rounds = limits.iter().copied().max().unwrap_or(0);
        self.limits = limits;
        self.cursor = (0, 0);
        self.finished = false;
    }

    /// Open loop: calls `due(index, n)` for each message scheduled before `now`
    /// (connection `index` may now send its sequence numbers below `n`), in time
    /// order; returns when the next message is due, or `None` when none is left
    /// (or in a closed loop).
    pub(super) fn advance(
        &mut self,
        now: Duration,
        mut due: impl FnMut(usize, u64),
    ) -> Option<Duration> {
        if !self.schedule.is_open() || self.finished || self.ids.is_empty() {
            return None;
        }
        loop {
            let (round, j) = self.cursor;
            if round >= self.rounds {
                self.finished = true;
                return None;
            }
            let Some(&id) = self.ids.get(j) else {
                self.finished = true;
                return None;
            };
            let at = self
                .schedule
                .scheduled(u64::from(id), round)
                .unwrap_or(Duration::ZERO);
            if at >= now {
                return Some(at);
            }
            if round < self.limits.get(j).copied().unwrap_or(0) {
                due(j, round + 1);
            }
            self.cursor = if j + 1 == self.ids.len() {
                (round + 1, 0)
            } else {
                (round, j + 1)
            };
        }
    }

    /// How many new messages a connection at `at` may encode now; `ended`: a closed
    /// loop's duration is over.
    pub(super) fn wanted(&self, at: Position, ended: bool) -> u64 {
        if sending_over(at, ended) {
            return 0;
        }
        let room = at.limit - at.next_seq;
        let n = match self.schedule {
            Schedule::Open { .. } => at.due.saturating_sub(at.next_seq),
            Schedule::Closed if self.echo => u64::from(!at.awaiting_reply),
            Schedule::Closed => self.per_batch,
        };
        n.min(room).min(self.per_batch)
    }
}

/// Whether a connection at `at` has sent everything it is to send.
pub(super) fn sending_over(at: Position, ended: bool) -> bool {
    at.next_seq >= at.limit || ended
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(next_seq: u64, limit: u64, due: u64, awaiting_reply: bool) -> Position {
        Position {
            next_seq,
            limit,
            due,
            awaiting_reply,
        }
    }

    /// Runs the cursor to `now`; the (index, due) calls it made, and its answer.
    fn walk(p: &mut Pacer, now: Duration) -> (Vec<(usize, u64)>, Option<Duration>) {
        let mut calls = Vec::new();
        let next = p.advance(now, |j, n| calls.push((j, n)));
        (calls, next)
    }

    #[test]
    fn the_cursor_releases_messages_in_schedule_order() {
        // 1000/s over 4 connections in all; this thread has connections 1 and 3:
        // connection 1 at 1, 5, 9 ms …, connection 3 at 3, 7, 11 ms …
        let mut p = Pacer::new(Schedule::new(1000, 4), false, 64, vec![1, 3]);
        p.start(vec![10, 10]);
        assert_eq!(walk(&mut p, Duration::ZERO), (vec![], Some(MS)));
        assert_eq!(walk(&mut p, MS), (vec![], Some(MS)));
        assert_eq!(walk(&mut p, 2 * MS), (vec![(0, 1)], Some(3 * MS)));
        assert_eq!(
            walk(&mut p, 8 * MS),
            (vec![(1, 1), (0, 2), (1, 2)], Some(9 * MS))
        );
        // Nothing new at the same instant.
        assert_eq!(walk(&mut p, 8 * MS), (vec![], Some(9 * MS)));
    }

    #[test]
    fn the_cursor_stops_at_each_connections_limit_and_then_for_good() {
        let mut p = Pacer::new(Schedule::new(1000, 2), false, 64, vec![0, 1]);
        // Connection 0 sends 1 message, connection 1 sends 3.
        p.start(vec![1, 3]);
        let (calls, next) = walk(&mut p, Duration::from_secs(1));
        assert_eq!(calls, vec![(0, 1), (1, 1), (1, 2), (1, 3)]);
        assert_eq!(next, None);
        assert_eq!(walk(&mut p, Duration::from_secs(2)), (vec![], None));
    }

    #[test]
    fn a_closed_loop_has_no_cursor() {
        let mut p = Pacer::new(Schedule::Closed, false, 64, vec![0]);
        p.start(vec![u64::MAX]);
        assert_eq!(walk(&mut p, Duration::from_secs(1)), (vec![], None));
    }

    #[test]
    fn bounds_follow_the_warmup_and_the_end() {
        let open = Pacer::new(Schedule::new(1000, 2), false, 64, vec![0, 1]);
        // 1 s of warmup: 500 messages each; 3 s in all: 1500 each.
        assert_eq!(
            open.bounds(1, Duration::from_secs(1), Some(Duration::from_secs(3))),
            (Some(500), 1500)
        );
        assert_eq!(open.bounds(0, Duration::ZERO, None), (Some(0), u64::MAX));
        let closed = Pacer::new(Schedule::Closed, false, 64, vec![0]);
        assert_eq!(closed.bounds(0, Duration::ZERO, None), (Some(0), u64::MAX));
        assert_eq!(
            closed.bounds(0, MS, Some(Duration::from_secs(1))),
            (None, u64::MAX)
        );
    }

    #[test]
    fn open_loop_sends_what_is_due_in_batches() {
        let p = Pacer::new(Schedule::new(1000, 1), false, 64, vec![0]);
        assert_eq!(p.wanted(at(3, 100, 10, false), false), 7);
        // Due beyond a batch: one batch at a time (64 KiB of 64-byte messages).
        assert_eq!(p.wanted(at(0, u64::MAX, 5000, false), false), 1024);
        // Never past the limit.
        assert_eq!(p.wanted(at(3, 5, 10, false), false), 2);
        assert_eq!(p.wanted(at(5, 5, 10, false), false), 0);
        assert_eq!(p.wanted(at(10, 100, 10, false), false), 0);
    }

    #[test]
    fn closed_loop_sends_batches_or_one_echo_at_a_time() {
        let batches = Pacer::new(Schedule::Closed, false, 1000, vec![0]);
        assert_eq!(batches.wanted(at(0, u64::MAX, 0, false), false), 65);
        assert_eq!(batches.wanted(at(0, 10, 0, false), false), 10);
        assert_eq!(batches.wanted(at(0, u64::MAX, 0, false), true), 0);
        let echo = Pacer::new(Schedule::Closed, true, 64, vec![0]);
        assert_eq!(echo.wanted(at(4, u64::MAX, 0, false), false), 1);
        assert_eq!(echo.wanted(at(4, u64::MAX, 0, true), false), 0);
        // A huge message still goes one at a time.
        let big = Pacer::new(Schedule::Closed, false, 1 << 20, vec![0]);
        assert_eq!(big.wanted(at(0, u64::MAX, 0, false), false), 1);
        assert!(sending_over(at(4, 4, 0, false), false));
        assert!(!sending_over(at(3, 4, 0, false), false));
    }
}
