//! Broker and chat: what a connection relays goes to every other connection on
//! this worker at once and, once per event-loop pass, to the other workers as one
//! `Job::Broadcast`. A receiver that stops reading is cut off once it has too much
//! relayed to it unread, so it never stalls the sender or anyone else. Chat also
//! prefixes each message with its sender and announces joins and leaves. No socket
//! is named here: connections are written through their transports, so this is
//! tested over in-memory ones.

use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use crate::frame::{self, FrameConfig};
use crate::message::Peer;
use crate::output::text::escape;

use super::conn::{CloseReason, Conn};
use super::inbox::{Job, Mailbox};
use super::mode::Mode;

/// A receiver with this much relayed to it unread is cut off (or four frames,
/// when `--max-frame` is larger).
pub const OUTBOX_CUTOFF: usize = 8 * 1024 * 1024;

/// Connections to close once the current fan-out is done: closing one while
/// iterating over all of them is not possible, and a close may announce a leave.
pub type Doomed = Vec<(usize, CloseReason)>;

/// One worker's relaying.
#[derive(Debug)]
pub struct Broker {
    /// This worker's index in `mailboxes`.
    index: usize,
    /// Every worker's mailbox (this one's included).
    mailboxes: Arc<[Mailbox]>,
    frame: FrameConfig,
    announces: bool,
    /// What the connection being served relays this turn, framed.
    pub relay: Vec<u8>,
    /// What this worker's connections relayed this pass, for the other workers.
    relay_out: Vec<u8>,
}

impl Broker {
    pub fn new(index: usize, mailboxes: Arc<[Mailbox]>, frame: FrameConfig, mode: Mode) -> Self {
        Broker {
            index,
            mailboxes,
            frame,
            announces: mode.announces(),
            relay: Vec::new(),
            relay_out: Vec::new(),
        }
    }

    /// After connection `key`'s turn: what it relayed goes to everyone else here,
    /// and is kept for the other workers.
    pub fn relay_turn(
        &mut self,
        conns: &mut Slab<Conn>,
        key: usize,
        now: Instant,
        doomed: &mut Doomed,
    ) {
        if self.relay.is_empty() {
            return;
        }
        self.fan_out(conns, Some(key), &self.relay, now, doomed);
        self.relay_out.extend_from_slice(&self.relay);
        self.relay.clear();
    }

    /// Appends `framed` to every connection's outbox but `except`'s and writes it;
    /// a receiver that has stopped reading is cut off rather than stalling anyone.
    pub fn fan_out(
        &self,
        conns: &mut Slab<Conn>,
        except: Option<usize>,
        framed: &[u8],
        now: Instant,
        doomed: &mut Doomed,
    ) {
        let cutoff = OUTBOX_CUTOFF.max(4 * self.frame.max_frame);
        for (key, conn) in conns.iter_mut() {
            if Some(key) == except || conn.closing() {
                continue;
            }
            conn.outbox.extend_from_slice(framed);
            if let Err(err) = conn.write_outbox(now) {
                doomed.push((key, CloseReason::Error(err)));
            } else if conn.pending() > cutoff {
                doomed.push((key, CloseReason::SlowReceiver(conn.pending())));
            }
        }
    }

    /// Chat: `<announce> PEER joined|left` to everyone but `except`, here and on
    /// the other workers. Nothing in the other modes.
    pub fn announce(
        &mut self,
        conns: &mut Slab<Conn>,
        peer: &Peer,
        what: &str,
        except: Option<usize>,
        now: Instant,
        doomed: &mut Doomed,
    ) {
        if !self.announces {
            return;
        }
        let mut framed = Vec::new();
        announcement(peer, what, &self.frame, &mut framed);
        self.fan_out(conns, except, &framed, now, doomed);
        self.relay_out.extend_from_slice(&framed);
    }

    /// Hands what this worker's connections relayed this pass to every other
    /// worker: one shared buffer, one job and one wake-up each.
    pub fn send_relayed(&mut self) {
        if self.relay_out.is_empty() {
            return;
        }
        if self.mailboxes.len() > 1 {
            let bytes: Arc<[u8]> = Arc::from(self.relay_out.as_slice());
            for (index, mailbox) in self.mailboxes.iter().enumerate() {
                if index != self.index {
                    mailbox.post(Job::Broadcast(Arc::clone(&bytes)));
                    mailbox.wake();
                }
            }
        }
        self.relay_out.clear();
    }
}

/// Chat: appends `<peer> message`, escaped as text output is, framed.
pub fn chat_line(peer: &Peer, bytes: &[u8], frame: &FrameConfig, relay: &mut Vec<u8>) {
    let mut line = Vec::with_capacity(bytes.len() + 32);
    line.push(b'<');
    line.extend_from_slice(peer.as_str().as_bytes());
    line.extend_from_slice(b"> ");
    escape(bytes, &mut line);
    frame::encode(frame, &line, relay);
}

/// Chat: appends `<announce> PEER joined` (or `left`), framed.
fn announcement(peer: &Peer, what: &str, frame: &FrameConfig, out: &mut Vec<u8>) {
    let line = format!("<announce> {peer} {what}");
    frame::encode(frame, line.as_bytes(), out);
}

#[cfg(test)]
mod tests {
    use mio::{Poll, Token, Waker};

    use super::*;
    use crate::frame::Decoder;
    use crate::server::transport::Transport;
    use crate::server::transport::memory::Memory;

    fn peer(port: u16) -> Peer {
        Peer::new(([127, 0, 0, 1], port).into())
    }

    fn conns(n: usize) -> Slab<Conn> {
        let frame = FrameConfig::default();
        let mut conns = Slab::new();
        for i in 0..n {
            let memory = Transport::Memory(Memory::new(b""));
            conns.insert(Conn::new(
                i as u64,
                memory,
                peer(4000 + i as u16),
                Decoder::new(&frame),
            ));
        }
        conns
    }

    fn written(conn: &Conn) -> &[u8] {
        match &conn.transport {
            Transport::Memory(memory) => &memory.output,
            _ => unreachable!("tests use memory transports"),
        }
    }

    #[test]
    fn chat_lines_name_the_sender_and_escape_control_bytes() {
        let mut relay = Vec::new();
        chat_line(
            &peer(4000),
            b"hi\x1b[2J",
            &FrameConfig::default(),
            &mut relay,
        );
        assert_eq!(relay, b"<127.0.0.1:4000> hi\\x1b[2J\n");
    }

    #[test]
    fn a_relay_reaches_everyone_but_its_sender_here_and_on_the_other_workers() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx0, rx0) = crossbeam_channel::unbounded();
        let (tx1, rx1) = crossbeam_channel::unbounded();
        let mailboxes: Arc<[Mailbox]> = vec![
            Mailbox::new(tx0, Arc::clone(&waker)),
            Mailbox::new(tx1, waker),
        ]
        .into();
        let mut broker = Broker::new(0, mailboxes, FrameConfig::default(), Mode::Broker);
        let mut conns = conns(3);
        let mut doomed = Doomed::new();
        broker.relay.extend_from_slice(b"hello\n");
        broker.relay_turn(&mut conns, 1, Instant::now(), &mut doomed);
        assert!(doomed.is_empty());
        assert_eq!(written(&conns[0]), b"hello\n");
        assert_eq!(written(&conns[1]), b"");
        assert_eq!(written(&conns[2]), b"hello\n");
        broker.send_relayed();
        assert!(rx0.try_recv().is_err(), "nothing to its own worker");
        match rx1.try_recv() {
            Ok(Job::Broadcast(bytes)) => assert_eq!(&bytes[..], b"hello\n"),
            other => panic!("expected a broadcast, got {other:?}"),
        }
        // Sent once: the next pass has nothing to send.
        broker.send_relayed();
        assert!(rx1.try_recv().is_err());
    }

    #[test]
    fn a_receiver_that_does_not_read_is_cut_off() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let broker = Broker::new(
            0,
            vec![Mailbox::new(tx, waker)].into(),
            FrameConfig::default(),
            Mode::Broker,
        );
        let mut conns = conns(2);
        if let Transport::Memory(memory) = &mut conns[1].transport {
            memory.room = 0;
        }
        let mut doomed = Doomed::new();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..8 {
            broker.fan_out(&mut conns, None, &chunk, Instant::now(), &mut doomed);
        }
        assert!(doomed.is_empty(), "at the bound, not past it");
        broker.fan_out(&mut conns, None, b"one more\n", Instant::now(), &mut doomed);
        assert_eq!(doomed.len(), 1);
        assert_eq!(doomed[0].0, 1);
        assert!(matches!(doomed[0].1, CloseReason::SlowReceiver(_)));
    }

    #[test]
    fn chat_announces_joins_and_leaves_and_broker_does_not() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let mailboxes: Arc<[Mailbox]> = vec![Mailbox::new(tx, waker)].into();
        let mut doomed = Doomed::new();
        let mut chat = Broker::new(
            0,
            Arc::clone(&mailboxes),
            FrameConfig::default(),
            Mode::Chat,
        );
        let mut conns = conns(2);
        chat.announce(
            &mut conns,
            &peer(5000),
            "joined",
            Some(1),
            Instant::now(),
            &mut doomed,
        );
        assert_eq!(written(&conns[0]), b"<announce> 127.0.0.1:5000 joined\n");
        assert_eq!(written(&conns[1]), b"");
        let mut broker = Broker::new(0, mailboxes, FrameConfig::default(), Mode::Broker);
        let mut conns = self::conns(1);
        broker.announce(
            &mut conns,
            &peer(5000),
            "left",
            None,
            Instant::now(),
            &mut doomed,
        );
        assert_eq!(written(&conns[0]), b"");
    }
}
