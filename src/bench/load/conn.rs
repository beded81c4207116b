//! One connection of a load thread: its socket, its state, where it stands in its
//! sequence numbers, the bytes it has yet to write, and what it awaits.

use std::time::Duration;

use mio::net::UdpSocket;

use crate::frame::Decoder;

use super::super::stream::BenchStream;
use super::echo::InFlight;
use super::pacing::Position;
use super::sequence::Sequences;

#[derive(Debug)]
pub(super) enum Sock {
    Tcp(BenchStream),
    Udp(UdpSocket),
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Idle,
    Connecting,
    Sending,
    /// Everything is sent; waiting for the outstanding replies.
    Draining,
    /// `!Disconnect` is queued or sent; waiting for the server to close.
    Closing,
    Done,
}

/// Which sequence numbers a connection sends, which of them are measured, and
/// how far it has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    /// Measured messages to send.
    pub quota: u64,
    /// Open loop with a duration: messages scheduled before the end.
    pub cap: u64,
    /// The first sequence number sent after the warmup.
    pub first_measured: Option<u64>,
    /// The next sequence number to encode.
    pub next_seq: u64,
    /// Open loop: sequence numbers below this are due.
    pub due: u64,
}

impl Span {
    /// How many sequence numbers this connection sends in all (`u64::MAX`: not
    /// known yet).
    pub(super) fn limit(&self) -> u64 {
        let by_quota = match self.first_measured {
            Some(first) => first.saturating_add(self.quota),
            None => u64::MAX,
        };
        by_quota.min(self.cap)
    }

    pub(super) fn is_measured(&self, seq: u64) -> bool {
        self.first_measured.is_some_and(|first| seq >= first)
    }

    /// How many of the sequence numbers `[start, end)` are measured.
    pub(super) fn measured_in(&self, start: u64, end: u64) -> u64 {
        match self.first_measured {
            Some(first) => end - start.max(first).min(end),
            None => 0,
        }
    }
}

/// What became of a connection's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counted {
    /// Messages wholly handed to the kernel.
    pub written: u64,
    /// Distinct replies.
    pub replies: u64,
    pub measured_sent: u64,
    pub measured_received: u64,
}

/// Encoded bytes not yet handed to the kernel, and the messages they hold.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pub off: usize,
    /// Sequence numbers `[start, end)` whose bytes are in `buf`.
    pub batch: (u64, u64),
}

impl Outbox {
    pub(super) fn is_flushed(&self) -> bool {
        self.off >= self.buf.len()
    }

    pub(super) fn pending(&self) -> &[u8] {
        self.buf.get(self.off..).unwrap_or_default()
    }

    /// Empties the buffer; the next batch starts at `next`.
    pub(super) fn reset(&mut self, next: u64) {
        self.buf.clear();
        self.off = 0;
        self.batch = (next, next);
    }
}

#[derive(Debug)]
pub(super) struct Conn {
    pub id: u32,
    pub sock: Sock,
    pub state: State,
    pub span: Span,
    pub out: Outbox,
    pub counted: Counted,
    pub writable: bool,
    /// TCP: the write side is shut after `!Disconnect`.
    pub shut: bool,
    /// TCP with `--echo`: cuts the replies.
    pub decoder: Option<Decoder>,
    pub inflight: InFlight,
    /// UDP: which sequence numbers have been answered.
    pub sequences: Sequences,
    /// Draining or closing: until when.
    pub deadline: Duration,
}

impl Conn {
    pub(super) fn new(id: u32, quota: u64) -> Self {
        Conn {
            id,
            sock: Sock::None,
            state: State::Idle,
            span: Span {
                quota,
                cap: u64::MAX,
                first_measured: None,
                next_seq: 0,
                due: 0,
            },
            out: Outbox::default(),
            counted: Counted::default(),
            writable: true,
            shut: false,
            decoder: None,
            inflight: InFlight::default(),
            sequences: Sequences::default(),
            deadline: Duration::MAX,
        }
    }

    /// Where it stands, for [`Pacer::wanted`](super::pacing::Pacer::wanted).
    pub(super) fn position(&self) -> Position {
        Position {
            next_seq: self.span.next_seq,
            limit: self.span.limit(),
            due: self.span.due,
            awaiting_reply: self.inflight.is_awaiting(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_quota_after_the_warmup_or_the_cap() {
        let mut s = Span {
            quota: 10,
            cap: u64::MAX,
            first_measured: None,
            next_seq: 0,
            due: 0,
        };
        assert_eq!(s.limit(), u64::MAX);
        assert!(!s.is_measured(0));
        assert_eq!(s.measured_in(0, 5), 0);
        s.first_measured = Some(3);
        assert_eq!(s.limit(), 13);
        assert!(!s.is_measured(2) && s.is_measured(3));
        assert_eq!(s.measured_in(0, 5), 2);
        assert_eq!(s.measured_in(5, 8), 3);
        s.cap = 7;
        assert_eq!(s.limit(), 7);
        s.quota = u64::MAX;
        s.cap = u64::MAX;
        assert_eq!(s.limit(), u64::MAX);
    }
}
