//! The teaching project's `handle_tcp`, as `udp.rs` is its `handle_udp`: one
//! connection's turn. It reads what the transport has (within the budget), cuts
//! messages and hands each to the mode's actions (print, reply, relay); the worker
//! decides what happens to the connection from the `Turn` it returns. Nothing here
//! touches a socket directly, so it is unit-tested over an in-memory transport.

use std::io;
use std::ops::ControlFlow;
use std::time::{Instant, SystemTime};

use tracing::warn;

use crate::frame::{self, DISCONNECT, Decoder, Frame, FrameConfig};
use crate::message::{ConnId, Message, Peer, Proto};

use super::batch::Batch;
use super::broker;
use super::conn::{CloseReason, Conn, State};
use super::mode::{Actions, Relay};
use super::stats::{Counters, DropReason};

/// Bytes read from one connection per turn before the next one gets its go: 32
/// full reads, about 2 ms of copying. As big as this because data left unread
/// costs more than a longer turn: with 1 MiB turns, 50 streaming connections per
/// worker each waited ~10 ms between turns with a full receive queue; the kernel
/// then delays its ACKs (the window cannot open), the senders' tail loss probes
/// fire and resend data that had arrived. In P1d that was 8,600 spurious
/// retransmissions a run (the raw ceiling, which reads until empty: ~450), and
/// 4 ns more system time a message; with 8 MiB, ~1,500 (`TcpRetransSegs` in
/// /proc/net/snmp, which the matrix prints). tokio's cooperative budget comes to
/// about the same: 128 reads of 64 KiB.
pub const READ_BUDGET: usize = 8 * 1024 * 1024;
/// Echo: a connection whose replies pile up past this stops being read until they
/// drain below half of it, so a client that sends but never reads cannot grow the
/// server's memory.
pub const OUTBOX_PAUSE: usize = 1024 * 1024;

/// What one connection's turn ended with.
#[derive(Debug)]
pub enum Turn {
    /// Budget used up or output blocked: more to read next turn.
    More,
    /// The kernel has nothing more for now.
    Idle,
    /// Its outbox is full: reading resumes once it drains (see the worker's
    /// `on_writable`).
    Paused,
    Close(CloseReason),
}

/// The worker's parts that handling a message touches.
#[derive(Debug)]
pub struct Handler<'a> {
    pub batch: &'a mut Batch,
    pub counters: &'a Counters,
    pub actions: Actions,
    pub frame: &'a FrameConfig,
    /// What the connection relays this turn (broker, chat), for the broker.
    pub relay: &'a mut Vec<u8>,
    /// When the last poll returned: what a read stamps as the connection's last
    /// activity.
    pub now: Instant,
}

/// Reads what the connection has (within the budget), cuts messages and handles
/// them.
pub fn handle_tcp(conn: &mut Conn, buf: &mut [u8], h: &mut Handler<'_>) -> Turn {
    let mut budget = READ_BUDGET;
    loop {
        if h.batch.blocked() {
            return Turn::More;
        }
        if conn.pending() > OUTBOX_PAUSE {
            return Turn::Paused;
        }
        let draining = matches!(conn.state, State::Draining { .. });
        let want = match conn.state {
            State::Draining { left: 0 } => return finish(conn, h, CloseReason::Drained),
            State::Draining { left } => left.min(buf.len()),
            // Never queued once closing; nothing more is read from it.
            State::Closing(_) => return Turn::Idle,
            State::Reading if budget == 0 => return Turn::More,
            State::Reading => buf.len(),
        };
        let Some(space) = buf.get_mut(..want) else {
            return Turn::More;
        };
        let preread = conn.has_preread();
        let n = match conn.read(space) {
            Ok(0) => return finish(conn, h, CloseReason::Eof),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                conn.set_read_empty();
                if draining {
                    return finish(conn, h, CloseReason::Drained);
                }
                return Turn::Idle;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Turn::Close(CloseReason::Error(err)),
        };
        budget = budget.saturating_sub(n);
        conn.last_active = h.now;
        if let Some(subject) = conn.transport.take_client_subject() {
            conn.peer.set_tls_client(subject);
        }
        if let State::Draining { left } = &mut conn.state {
            *left = left.saturating_sub(n);
        }
        h.counters.received_bytes(conn.proto, n);
        // Messages of one read share its receive time, taken right after it; only
        // printing reads it, so the other modes skip the clock.
        let received_at = h.actions.print.then(SystemTime::now);
        let (decoder, source, messages, outbox) = parts(conn, received_at);
        let before = *messages;
        let input = buf.get(..n).unwrap_or_default();
        let flow = handle_read(decoder, input, &source, messages, outbox, h);
        h.counters.messages(source.proto, *messages - before);
        if flow.is_break() {
            return Turn::Close(CloseReason::Disconnect);
        }
        // A read that did not fill the buffer emptied the socket's receive queue, and
        // anything arriving later raises a new edge: the read that would only say
        // `WouldBlock` is skipped, one syscall in three on an echo round trip (tokio
        // does the same). Not after a hang-up, whose edge has already been seen, nor
        // while draining, where the reads are sized to what is left.
        // Nor when the bytes came from what followed a PROXY header, not the socket,
        // or when TLS still holds records it read. Nor before the socket is watched:
        // a new connection's next read may find its end of stream, and then it is
        // closed without ever entering the poll set.
        if n < want
            && conn.watched()
            && !conn.hung_up()
            && !draining
            && !preread
            && !conn.transport.wants().read
        {
            conn.set_read_empty();
            return Turn::Idle;
        }
    }
}

/// Where and when the bytes being decoded came from.
#[derive(Debug)]
struct Source<'a> {
    proto: Proto,
    peer: &'a Peer,
    id: ConnId,
    /// Taken when the mode prints, and only then.
    received_at: Option<SystemTime>,
}

/// A connection taken apart for decoding: its decoder, where its bytes came from,
/// and what its messages update (its count, its outbox).
fn parts(
    conn: &mut Conn,
    received_at: Option<SystemTime>,
) -> (&mut Decoder, Source<'_>, &mut u64, &mut Vec<u8>) {
    let Conn {
        decoder,
        peer,
        proto,
        id,
        messages,
        outbox,
        ..
    } = conn;
    let source = Source {
        proto: *proto,
        peer,
        id: *id,
        received_at,
    };
    (decoder, source, messages, outbox)
}

/// Cuts one read into messages and handles them, the cheapest way the mode allows.
/// `decode` with a callback per frame is the general way and the single source of
/// truth; the two shortcuts are proven equal to it by property tests and a fuzz
/// target, and fall back to it for whatever they cannot vouch for (a line that may
/// be oversize or `!Disconnect`, framings other than line).
fn handle_read(
    decoder: &mut Decoder,
    input: &[u8],
    src: &Source<'_>,
    messages: &mut u64,
    outbox: &mut Vec<u8>,
    h: &mut Handler<'_>,
) -> ControlFlow<()> {
    if h.actions.counts_only() {
        // Discard needs only how many messages a read held: `skim` counts them in
        // vectorised passes.
        if let Some(count) = decoder.skim(input) {
            *messages += count;
            return ControlFlow::Continue(());
        }
    } else if h.actions.prints_only()
        && let Some(received_at) = src.received_at
    {
        // Print needs each message's bytes but nothing else per message: the plain
        // lines that end a read come back as one run, which the batch formats in one
        // loop (no callback, `Frame` or checks per line).
        let run = decoder.decode_run(input, |frame| on_frame(frame, src, messages, outbox, h))?;
        if let Some(run) = run {
            let template = Message {
                proto: src.proto,
                peer: src.peer,
                conn: Some(src.id),
                received_at,
                bytes: &[],
            };
            *messages += h.batch.print_run(&template, run);
        }
        return ControlFlow::Continue(());
    }
    decoder.decode(input, |frame| on_frame(frame, src, messages, outbox, h))
}

/// End of stream: the final message without its terminator is still delivered.
fn finish(conn: &mut Conn, h: &mut Handler<'_>, reason: CloseReason) -> Turn {
    if matches!(reason, CloseReason::Drained) && conn.decoder.buffered() > 0 {
        // The drain read what the kernel held when it began; the rest of this
        // message may still have been on its way. Printing the part as a message
        // would alter it: it is dropped and counted instead.
        let len = conn.decoder.buffered();
        h.counters.dropped(DropReason::Incomplete);
        warn!(conn = conn.id, peer = %conn.peer, size = len, "shutdown cut the stream from {} inside a message ({len} bytes); dropped", conn.peer);
        return Turn::Close(reason);
    }
    let (decoder, source, messages, outbox) = parts(conn, h.actions.print.then(SystemTime::now));
    let before = *messages;
    let flow = decoder.finish(|frame| on_frame(frame, &source, messages, outbox, h));
    h.counters.messages(source.proto, *messages - before);
    if flow.is_break() {
        return Turn::Close(CloseReason::Disconnect);
    }
    Turn::Close(reason)
}

fn on_frame(
    frame: Frame<'_>,
    src: &Source<'_>,
    messages: &mut u64,
    outbox: &mut Vec<u8>,
    h: &mut Handler<'_>,
) -> ControlFlow<()> {
    match frame {
        Frame::Message(bytes) if bytes == DISCONNECT => return ControlFlow::Break(()),
        Frame::Message(bytes) => deliver(bytes, src, messages, outbox, h),
        other => irregular(other, src, messages, outbox, h),
    }
    ControlFlow::Continue(())
}

/// Truncated, oversize and incomplete frames: counted and warned about. Kept out of
/// line, so the per-message path stays small enough to inline.
#[cold]
#[inline(never)]
fn irregular(
    frame: Frame<'_>,
    src: &Source<'_>,
    messages: &mut u64,
    outbox: &mut Vec<u8>,
    h: &mut Handler<'_>,
) {
    let (peer, id) = (src.peer, src.id);
    match frame {
        Frame::Message(bytes) => deliver(bytes, src, messages, outbox, h),
        Frame::Truncated { message, len } => {
            h.counters.dropped(DropReason::Truncated);
            warn!(conn = id, peer = %peer, size = len, "message of {len} bytes from {peer} is longer than --max-frame; truncated");
            deliver(message, src, messages, outbox, h);
        }
        Frame::Oversize { len } => {
            h.counters.dropped(DropReason::Oversize);
            warn!(conn = id, peer = %peer, size = len, "message of {len} bytes from {peer} is longer than --max-frame; dropped");
        }
        Frame::Incomplete { len } => {
            h.counters.dropped(DropReason::Incomplete);
            warn!(conn = id, peer = %peer, size = len, "stream from {peer} ended inside a message ({len} bytes); dropped");
        }
    }
}

/// Applies the mode's actions to one message.
#[inline(always)]
fn deliver(
    bytes: &[u8],
    src: &Source<'_>,
    messages: &mut u64,
    outbox: &mut Vec<u8>,
    h: &mut Handler<'_>,
) {
    // Counted into the connection; the worker's counter is updated once per read.
    *messages += 1;
    if let Some(received_at) = src.received_at {
        h.batch.print(&Message {
            proto: src.proto,
            peer: src.peer,
            conn: Some(src.id),
            received_at,
            bytes,
        });
    }
    if h.actions.reply {
        frame::encode(h.frame, bytes, outbox);
    }
    match h.actions.relay {
        Relay::None => {}
        Relay::Framed => frame::encode(h.frame, bytes, h.relay),
        Relay::Chat => broker::chat_line(src.peer, bytes, h.frame, h.relay),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::Decoder;
    use crate::output::{Format, Sink};
    use crate::server::mode::Mode;
    use crate::server::transport::Transport;
    use crate::server::transport::memory::Memory;

    use crate::server::batch::tests::Shared;

    /// A connection over `memory`, and everything a turn needs, in `mode`.
    struct Rig {
        conn: Conn,
        batch: Batch,
        sink: Sink,
        out: Shared,
        counters: Counters,
        frame: FrameConfig,
        actions: Actions,
        relay: Vec<u8>,
        buf: Vec<u8>,
    }

    impl Rig {
        fn new(mode: Mode, memory: Memory) -> Rig {
            let out = Shared::default();
            let (sink, mut handles) =
                Sink::start(out.clone(), 1 << 30, vec![Box::new(|| {})], |err| {
                    panic!("{err}")
                })
                .unwrap();
            let frame = FrameConfig::default();
            let peer = Peer::new(([127, 0, 0, 1], 4000).into());
            let mut conn = Conn::new(7, Transport::Memory(memory), peer, Decoder::new(&frame));
            // Served as after its first turn: in the poll set (a no-op for memory).
            let poll = mio::Poll::new().unwrap();
            conn.watch(poll.registry(), mio::Token(0)).unwrap();
            Rig {
                conn,
                batch: Batch::new(handles.pop().unwrap(), Format::Text),
                sink,
                out,
                counters: Counters::default(),
                frame,
                actions: mode.actions(false),
                relay: Vec::new(),
                buf: vec![0; 256 * 1024],
            }
        }

        fn turn(&mut self) -> Turn {
            let mut h = Handler {
                batch: &mut self.batch,
                counters: &self.counters,
                actions: self.actions,
                frame: &self.frame,
                relay: &mut self.relay,
                now: Instant::now(),
            };
            handle_tcp(&mut self.conn, &mut self.buf, &mut h)
        }

        fn memory(&mut self) -> &mut Memory {
            match &mut self.conn.transport {
                Transport::Memory(memory) => memory,
                _ => unreachable!("tests use memory transports"),
            }
        }

        /// The messages printed, without their timestamp, proto and peer.
        fn printed(mut self) -> Vec<String> {
            self.batch.flush();
            drop(self.batch);
            assert!(
                self.sink
                    .finish_until(Instant::now() + Duration::from_secs(10))
            );
            let text = String::from_utf8(self.out.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
                .collect()
        }
    }

    #[test]
    fn a_short_read_ends_the_turn_without_a_read_that_would_block() {
        let mut rig = Rig::new(Mode::Echo, Memory::new(b"one\ntwo\n"));
        assert!(matches!(rig.turn(), Turn::Idle));
        assert_eq!(rig.memory().reads, 1);
        assert!(!rig.conn.readable());
        assert_eq!(rig.conn.messages, 2);
        rig.conn.write_outbox(Instant::now()).unwrap();
        assert_eq!(rig.memory().output, b"one\ntwo\n");
        assert_eq!(rig.printed(), ["one", "two"]);
    }

    #[test]
    fn a_new_connection_reads_on_after_a_short_read_to_find_its_end() {
        let mut memory = Memory::new(b"hello\n");
        memory.eof = true;
        let mut rig = Rig::new(Mode::Discard, memory);
        rig.conn = Conn::new(
            8,
            std::mem::replace(&mut rig.conn.transport, Transport::Memory(Memory::new(b""))),
            Peer::new(([127, 0, 0, 1], 4001).into()),
            Decoder::new(&rig.frame),
        );
        assert!(!rig.conn.watched());
        // Churn: connect, one line, close. Its end is found in the same turn, so it
        // is closed without ever being registered.
        assert!(matches!(rig.turn(), Turn::Close(CloseReason::Eof)));
        assert_eq!(rig.memory().reads, 2);
        assert_eq!(rig.conn.messages, 1);
    }

    #[test]
    fn messages_split_across_reads_come_out_whole() {
        let mut memory = Memory::new(b"hello\nworld\nlast");
        memory.chunk = 3;
        memory.eof = true;
        let mut rig = Rig::new(Mode::Print, memory);
        rig.conn.set_readable(true);
        assert!(matches!(rig.turn(), Turn::Close(CloseReason::Eof)));
        assert_eq!(rig.conn.messages, 3);
        assert_eq!(rig.printed(), ["hello", "world", "last"]);
    }

    #[test]
    fn disconnect_closes_after_what_came_before_it() {
        let mut rig = Rig::new(Mode::Echo, Memory::new(b"a\n!Disconnect\nb\n"));
        assert!(matches!(rig.turn(), Turn::Close(CloseReason::Disconnect)));
        rig.conn.write_outbox(Instant::now()).unwrap();
        assert_eq!(rig.memory().output, b"a\n");
    }

    #[test]
    fn a_flood_gets_one_budget_per_turn() {
        let flood = b"0123456789abcde\n".repeat(READ_BUDGET / 16 + 1024);
        let mut rig = Rig::new(Mode::Discard, Memory::new(&flood));
        assert!(matches!(rig.turn(), Turn::More));
        assert_eq!(rig.conn.messages, (READ_BUDGET / 16) as u64);
        assert!(matches!(rig.turn(), Turn::Idle));
        assert_eq!(rig.conn.messages, (READ_BUDGET / 16 + 1024) as u64);
    }

    #[test]
    fn echo_pauses_a_peer_that_does_not_read_its_replies() {
        let mut rig = Rig::new(
            Mode::Echo,
            Memory::new(&b"0123456789abcde\n".repeat(OUTBOX_PAUSE / 8)),
        );
        rig.memory().room = 0;
        assert!(matches!(rig.turn(), Turn::Paused));
        assert!(rig.conn.pending() > OUTBOX_PAUSE);
        assert!(rig.conn.pending() < OUTBOX_PAUSE + rig.buf.len() + 16);
        assert!(
            rig.conn.readable(),
            "still has data: resumes without a new edge"
        );
    }

    /// `ab\ncd\nef\n` to read, of which the kernel held `left` bytes when the
    /// drain began; what arrives after that is not waited for.
    fn draining(left: usize) -> Rig {
        let mut rig = Rig::new(Mode::Print, Memory::new(b"ab\ncd\nef\n"));
        rig.conn.start_drain();
        let State::Draining { left: held } = &mut rig.conn.state else {
            panic!("draining")
        };
        *held = left;
        rig
    }

    #[test]
    fn a_drain_reads_what_was_pending_then_closes() {
        let mut rig = draining(6);
        assert!(matches!(rig.turn(), Turn::Close(CloseReason::Drained)));
        assert_eq!(rig.printed(), ["ab", "cd"]);
    }

    #[test]
    fn a_drain_that_ends_inside_a_message_drops_the_part() {
        // `ab\ncd\ne`: the `e` is not a message.
        let mut rig = draining(7);
        assert!(matches!(rig.turn(), Turn::Close(CloseReason::Drained)));
        assert_eq!(rig.printed(), ["ab", "cd"]);
    }

    #[test]
    fn a_peer_that_hung_up_is_read_to_its_end_in_one_turn() {
        let mut memory = Memory::new(b"a\nb\n");
        memory.chunk = 2;
        memory.eof = true;
        let mut rig = Rig::new(Mode::Broker, memory);
        rig.conn.set_readable(true);
        assert!(matches!(rig.turn(), Turn::Close(CloseReason::Eof)));
        assert_eq!(rig.relay, b"a\nb\n");
    }
}
