//! One worker: a mio event loop over every connection handed to it and its own UDP
//! sockets. It reads until the socket is empty (a short read or `WouldBlock`) within
//! a per-turn budget, cuts messages and handles them; a connection that used up its
//! budget waits in the ready list for the next turn, so one flooding peer cannot
//! starve the others on the same worker.
//!
//! Sockets are registered once, for both directions, edge-triggered: pausing a
//! connection (output full, outbox full) is a flag, not a re-registration, and the
//! kernel sends no further events for data we have not read.
//!
//! `--idle-timeout` is a heap of deadlines re-checked lazily (see `idle`); the poll
//! sleeps until the nearest one. A connection's close releases its place in the
//! acceptor's `--max-connections`/`--max-per-ip` counts.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::frame::{self, DISCONNECT, Decoder, Frame, FrameConfig};
use crate::message::{ConnId, Message, Peer, Proto};
use crate::net::filter::{ConnLimits, Filter, Refusal};
use crate::net::mmsg::RecvBatch;
use crate::output::text::escape;

use super::batch::Batch;
use super::conn::{CloseReason, Conn};
use super::idle::IdleTimers;
use super::mode::{Actions, Mode, Relay};
use super::pool::Mailbox;
use super::proxied::{Gate, Step};
use super::stats::{Counters, DropReason, Stats};
use super::udp::UdpReader;

/// The one list of reasons a worker wakes up besides socket readiness.
#[derive(Debug)]
pub enum Job {
    /// A connection the acceptor took: from now on this worker serves it.
    Accept {
        stream: TcpStream,
        peer: SocketAddr,
        id: ConnId,
    },
    /// Framed bytes relayed by another worker's client (broker, chat): written to
    /// every connection here.
    Broadcast(Arc<[u8]>),
    /// Shutdown: read what is pending, deliver it, close everything, exit.
    Drain { deadline: Instant },
}

/// The token of the waker the acceptor, the sink, other workers and shutdown use
/// (mio reserves `usize::MAX` for itself).
pub const WAKER: Token = Token(usize::MAX - 1);
/// UDP socket `i` is registered as `UDP_BASE - i`.
const UDP_BASE: usize = usize::MAX - 2;

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
const READ_BUDGET: usize = 8 * 1024 * 1024;
/// The read buffer shared by all of a worker's connections: one per worker, so it
/// can be big. A streaming sender's reads then carry thousands of messages each,
/// which is what keeps ingest within reach of a reader that only counts lines.
const READ_BUF: usize = 256 * 1024;
/// Echo: a connection whose replies pile up past this stops being read until they
/// drain below half of it, so a client that sends but never reads cannot grow the
/// server's memory.
const OUTBOX_PAUSE: usize = 1024 * 1024;
/// At shutdown, how long a connection that has sent nothing yet may still send
/// (at most half the drain timeout). A client that connected just before the signal
/// (from the listen backlog, say) and writes right after the handshake would
/// otherwise find its connection closed with its message in flight, and be reset.
const FRESH_GRACE: Duration = Duration::from_secs(1);
/// Broker and chat: a receiver with this much relayed to it unread is cut off.
const OUTBOX_CUTOFF: usize = 8 * 1024 * 1024;

/// What a worker needs to run.
#[derive(Debug)]
pub struct WorkerSetup {
    pub index: usize,
    pub poll: Poll,
    pub inbox: Receiver<Job>,
    /// Every worker's mailbox (this one's included), for relaying.
    pub mailboxes: Arc<[Mailbox]>,
    pub udp: Vec<std::net::UdpSocket>,
    pub batch: Batch,
    pub stats: Arc<Stats>,
    pub frame: FrameConfig,
    pub mode: Mode,
    pub quiet: bool,
    /// Told once the worker has finished draining.
    pub done: Sender<usize>,
    /// Released as connections close.
    pub limits: Arc<ConnLimits>,
    /// `--allow`/`--deny` for UDP datagrams.
    pub filter: Arc<Filter>,
    /// `--idle-timeout`; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `--proxy-protocol`: connections start with a PROXY header.
    pub proxy_protocol: bool,
}

/// The teaching project's `Worker`, now an event loop rather than one connection.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    poll: Poll,
    inbox: Receiver<Job>,
    mailboxes: Arc<[Mailbox]>,
    conns: Slab<Conn>,
    /// Connections that may have more to read, in the order they get their turn.
    ready: VecDeque<usize>,
    udp: Vec<UdpReader>,
    batch: Batch,
    stats: Arc<Stats>,
    frame: FrameConfig,
    mode: Mode,
    actions: Actions,
    udp_actions: Actions,
    buf: Box<[u8]>,
    /// The receive buffers for `udp`, a batch of datagrams per syscall.
    datagrams: RecvBatch,
    /// What the connection being served relays this turn (broker, chat).
    relay: Vec<u8>,
    /// What this worker's clients relayed this turn, for the other workers.
    relay_out: Vec<u8>,
    /// Connections to close once the current fan-out is done.
    doomed: Vec<(usize, CloseReason)>,
    draining: bool,
    /// While draining: connections that had sent nothing when it began are read as
    /// usual until then (see [`FRESH_GRACE`]).
    grace: Option<Instant>,
    /// `--proxy-protocol`: connections awaiting their header.
    proxied: Option<Gate>,
    done: Sender<usize>,
    limits: Arc<ConnLimits>,
    idle: Option<IdleTimers>,
    /// When the last poll returned: the time every turn of this pass of the loop
    /// stamps as activity and checks idle deadlines against. One clock reading per
    /// pass instead of several per round trip (an echo round trip read the clock
    /// four times, 15% of the worker's user time under perf); idle timeouts are
    /// seconds, a pass milliseconds.
    now: Instant,
}

impl Worker {
    pub fn new(setup: WorkerSetup) -> io::Result<Self> {
        let mut udp = Vec::with_capacity(setup.udp.len());
        for (i, socket) in setup.udp.into_iter().enumerate() {
            let mut socket = UdpSocket::from_std(socket);
            setup
                .poll
                .registry()
                .register(&mut socket, Token(UDP_BASE - i), Interest::READABLE)?;
            udp.push(UdpReader::new(socket, Arc::clone(&setup.filter)));
        }
        let datagrams = super::udp::datagram_batch(&setup.frame, udp.len());
        Ok(Worker {
            index: setup.index,
            poll: setup.poll,
            inbox: setup.inbox,
            mailboxes: setup.mailboxes,
            conns: Slab::new(),
            ready: VecDeque::new(),
            udp,
            batch: setup.batch,
            stats: setup.stats,
            frame: setup.frame,
            mode: setup.mode,
            actions: setup.mode.actions(setup.quiet),
            udp_actions: setup.mode.udp_actions(setup.quiet),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            datagrams,
            relay: Vec::new(),
            relay_out: Vec::new(),
            doomed: Vec::new(),
            draining: false,
            grace: None,
            proxied: setup
                .proxy_protocol
                .then(|| Gate::new(Arc::clone(&setup.filter))),
            done: setup.done,
            limits: setup.limits,
            idle: setup.idle_timeout.map(IdleTimers::new),
            now: Instant::now(),
        })
    }

    fn counters(&self) -> &Counters {
        &self.stats.workers[self.index]
    }

    /// Runs until drained.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let more = (!self.ready.is_empty() && !self.batch.blocked())
                || self.udp.iter().any(|u| u.readable);
            let timeout = if more {
                Some(Duration::ZERO)
            } else {
                self.idle
                    .as_ref()
                    .and_then(IdleTimers::next_deadline)
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            let wake_at = match (
                self.grace,
                self.proxied.as_ref().and_then(Gate::next_deadline),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = match (timeout, wake_at) {
                (t, None) => t,
                (t, Some(at)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    Some(t.map_or(left, |t| t.min(left)))
                }
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!(
                    worker = self.index,
                    "event loop failed: {}",
                    crate::net::describe(&err)
                );
                break;
            }
            self.now = Instant::now();
            if self.grace.is_some_and(|at| self.now >= at) {
                self.end_grace();
            }
            self.close_headerless();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    Token(t) if t > UDP_BASE - self.udp.len() => {
                        if let Some(reader) = self.udp.get_mut(UDP_BASE - t) {
                            reader.readable = true;
                        }
                    }
                    Token(key) => {
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                        let hung_up = event.is_read_closed() || event.is_error();
                        if event.is_readable() || hung_up {
                            self.mark_ready(key, hung_up);
                        }
                    }
                }
            }
            if woken {
                self.handle_inbox();
            }
            // The sink may have woken us because it has room again.
            self.batch.flush();
            self.serve_tcp();
            self.serve_udp();
            self.send_relayed();
            self.batch.flush();
            self.close_idle();
            if self.draining && self.conns.is_empty() && !self.udp.iter().any(|u| u.readable) {
                break;
            }
        }
        self.batch.flush();
        if self.batch.lost_at_deadline {
            warn!(
                worker = self.index,
                "drain timeout: output still queued was not written"
            );
        }
        let _ = self.done.send(self.index);
    }

    fn mark_ready(&mut self, key: usize, hung_up: bool) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.readable = true;
            conn.hung_up |= hung_up;
            if !conn.queued && conn.finishing.is_none() {
                conn.queued = true;
                self.ready.push_back(key);
            }
        }
    }

    /// The socket has room again: write what waits, resume reading a connection that
    /// was paused for its outbox, or finish closing one.
    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.writable = true;
        if let Err(err) = conn.write_outbox(self.now) {
            self.doomed.push((key, CloseReason::Error(err)));
        } else if conn.finishing.is_some() {
            if conn.pending() == 0 {
                let reason = conn.finishing.take().unwrap_or(CloseReason::Eof);
                self.doomed.push((key, reason));
            }
        } else if conn.readable && !conn.queued && conn.pending() <= OUTBOX_PAUSE / 2 {
            conn.queued = true;
            self.ready.push_back(key);
        }
        self.close_doomed();
    }

    fn handle_inbox(&mut self) {
        while let Ok(job) = self.inbox.try_recv() {
            match job {
                Job::Accept { stream, peer, id } => self.adopt(stream, peer, id),
                Job::Broadcast(bytes) => self.fan_out(None, &bytes),
                Job::Drain { deadline } => self.start_drain(deadline),
            }
        }
        self.close_doomed();
    }

    fn adopt(&mut self, mut stream: TcpStream, peer: SocketAddr, id: ConnId) {
        self.counters().adopted();
        let key = self.conns.vacant_entry().key();
        if let Err(err) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(conn = id, peer = %peer, "cannot watch connection: {}", crate::net::describe(&err));
            self.counters().closed();
            self.limits.release(peer.ip());
            return;
        }
        let peer = Peer::new(peer);
        info!(conn = id, peer = %peer, worker = self.index, "connection opened");
        let mut conn = Conn::new(id, stream, peer.clone(), Decoder::new(&self.frame));
        if let Some(gate) = self.proxied.as_mut() {
            conn.header = Some(Box::default());
            gate.schedule(key, id, self.now);
        }
        // Data may have arrived before registration: look without waiting for an edge.
        conn.queued = true;
        let opened = conn.opened;
        // Nothing was inserted or removed since `vacant_entry`, so this is `key`.
        let key = self.conns.insert(conn);
        self.ready.push_back(key);
        if let Some(idle) = self.idle.as_mut() {
            if idle.needs_compaction(self.conns.len()) {
                idle.rebuild(self.conns.iter().map(|(k, c)| (k, c.id, c.last_active)));
            } else {
                idle.schedule(key, id, opened);
            }
        }
        if self.mode.announces() {
            self.announce(&peer, "joined", Some(key));
        }
    }

    /// Chat: `<announce> PEER joined|left` to everyone but `except`.
    fn announce(&mut self, peer: &Peer, what: &str, except: Option<usize>) {
        let line = format!("<announce> {peer} {what}");
        let mut framed = Vec::with_capacity(line.len() + 8);
        frame::encode(&self.frame, line.as_bytes(), &mut framed);
        self.fan_out(except, &framed);
        self.relay_out.extend_from_slice(&framed);
    }

    fn start_drain(&mut self, deadline: Instant) {
        self.draining = true;
        self.batch.drain_until(deadline);
        let now = Instant::now();
        let grace = now + FRESH_GRACE.min(deadline.saturating_duration_since(now) / 2);
        for (key, conn) in self.conns.iter_mut() {
            let pending = crate::net::pending_bytes(&conn.stream).unwrap_or(0) + conn.preread.len();
            if pending == 0 && conn.messages == 0 && conn.decoder.buffered() == 0 {
                // Nothing sent yet: read as usual until the grace ends.
                self.grace = Some(grace);
            } else {
                conn.drain_left = Some(pending);
            }
            conn.readable = true;
            if !conn.queued && conn.finishing.is_none() {
                conn.queued = true;
                self.ready.push_back(key);
            }
        }
        for reader in &mut self.udp {
            reader.readable = true;
        }
    }

    /// The grace for connections that had sent nothing is over: like the others,
    /// they are read up to what the kernel holds now, then closed.
    fn end_grace(&mut self) {
        self.grace = None;
        for (key, conn) in self.conns.iter_mut() {
            if conn.header.is_some() {
                // Still no PROXY header: nothing of it can be delivered.
                self.doomed.push((key, CloseReason::Drained));
            } else if conn.drain_left.is_none() {
                conn.drain_left =
                    Some(crate::net::pending_bytes(&conn.stream).unwrap_or(0) + conn.preread.len());
                conn.readable = true;
                if !conn.queued && conn.finishing.is_none() {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
            }
        }
        self.close_doomed();
    }

    /// `--proxy-protocol`: closes the connections that have had no complete
    /// header within [`HEADER_TIMEOUT`](super::proxied::HEADER_TIMEOUT).
    fn close_headerless(&mut self) {
        let Some(gate) = self.proxied.as_mut() else {
            return;
        };
        for (key, id) in gate.due(self.now) {
            let Some(conn) = self
                .conns
                .get(key)
                .filter(|c| c.id == id && c.header.is_some())
            else {
                continue;
            };
            let why = "no complete PROXY header in time".to_string();
            self.stats.workers[self.index].refused(Refusal::ProxyHeader);
            if let Some(held_back) = gate.warn_now(self.now) {
                warn!(conn = id, peer = %conn.peer, "connection from {} refused: {why}{}", conn.peer, held_back_note(held_back));
            }
            self.doomed.push((key, CloseReason::Refused(why)));
        }
        self.close_doomed();
    }

    /// `--proxy-protocol`: reads what a connection awaiting its header has. Returns
    /// whether the connection is now to be read as usual.
    fn read_header(&mut self, key: usize) -> bool {
        let (Some(conn), Some(gate)) = (self.conns.get_mut(key), self.proxied.as_mut()) else {
            return true;
        };
        let Some(state) = conn.header.as_mut() else {
            return true;
        };
        match state.read(&mut conn.stream, conn.peer.addr(), gate, &self.limits) {
            Step::Wait => {
                conn.readable = false;
                false
            }
            Step::Ready { client, rest } => {
                conn.header = None;
                conn.preread = rest;
                if let Some(client) = client {
                    debug!(conn = conn.id, proxy = %conn.peer, client = %client, "PROXY header");
                    conn.peer = Peer::new(client);
                }
                true
            }
            Step::Refuse { reason, why } => {
                self.stats.workers[self.index].refused(reason);
                if let Some(held_back) = gate.warn_now(self.now) {
                    warn!(conn = conn.id, peer = %conn.peer, reason = reason.as_str(), "connection from {} refused: {why}{}", conn.peer, held_back_note(held_back));
                }
                self.doomed.push((key, CloseReason::Refused(why)));
                self.close_doomed();
                false
            }
        }
    }

    /// Gives each ready connection one turn.
    fn serve_tcp(&mut self) {
        for _ in 0..self.ready.len() {
            if self.batch.blocked() {
                return;
            }
            let Some(key) = self.ready.pop_front() else {
                return;
            };
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.queued = false;
            if conn.header.is_some() && !self.read_header(key) {
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let mut handler = Handler {
                batch: &mut self.batch,
                counters: &self.stats.workers[self.index],
                actions: self.actions,
                frame: &self.frame,
                relay: &mut self.relay,
                now: self.now,
            };
            let turn = handle_tcp(conn, &mut self.buf, &mut handler);
            let written = conn.write_outbox(self.now);
            match (turn, written) {
                (_, Err(err)) => self.doomed.push((key, CloseReason::Error(err))),
                (Turn::More, Ok(())) => {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
                // A paused connection whose outbox the socket took whole gets no
                // WRITABLE edge to resume it: it goes on next turn.
                (Turn::Paused, Ok(())) if conn.pending() == 0 => {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
                (Turn::Idle | Turn::Paused, Ok(())) => {}
                (Turn::Close(reason), Ok(())) => self.finish_conn(key, reason),
            }
            if !self.relay.is_empty() {
                let relay = std::mem::take(&mut self.relay);
                self.fan_out(Some(key), &relay);
                self.relay_out.extend_from_slice(&relay);
                self.relay = relay;
                self.relay.clear();
            }
            self.close_doomed();
        }
    }

    fn serve_udp(&mut self) {
        let counters = &self.stats.workers[self.index];
        for reader in &mut self.udp {
            if reader.readable {
                reader.handle_udp(
                    &mut self.datagrams,
                    &self.frame,
                    &mut self.batch,
                    counters,
                    self.udp_actions,
                    self.draining,
                );
            }
        }
    }

    /// Appends `framed` to every connection's outbox but `except`'s and writes it;
    /// a receiver that has stopped reading is cut off rather than stalling anyone.
    fn fan_out(&mut self, except: Option<usize>, framed: &[u8]) {
        for (key, conn) in self.conns.iter_mut() {
            if Some(key) == except || conn.finishing.is_some() {
                continue;
            }
            conn.outbox.extend_from_slice(framed);
            if let Err(err) = conn.write_outbox(self.now) {
                self.doomed.push((key, CloseReason::Error(err)));
            } else if conn.pending() > OUTBOX_CUTOFF.max(4 * self.frame.max_frame) {
                self.doomed
                    .push((key, CloseReason::SlowReceiver(conn.pending())));
            }
        }
    }

    /// Hands what this worker's clients relayed this turn to every other worker.
    fn send_relayed(&mut self) {
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

    /// Reading has ended: close now, or once the outbox (echo replies) is written.
    fn finish_conn(&mut self, key: usize, reason: CloseReason) {
        match self.conns.get_mut(key) {
            Some(conn) if conn.pending() > 0 && !matches!(reason, CloseReason::Error(_)) => {
                conn.finishing = Some(reason);
            }
            Some(_) => self.doomed.push((key, reason)),
            None => {}
        }
    }

    /// `--idle-timeout`: closes the connections whose checks are due and that have
    /// been silent for the whole timeout; the others get their next check.
    fn close_idle(&mut self) {
        let Some(idle) = self.idle.as_mut() else {
            return;
        };
        if self.draining {
            return;
        }
        let now = self.now;
        while let Some((key, id)) = idle.pop_due(now) {
            let Some(conn) = self.conns.get(key).filter(|c| c.id == id) else {
                // That connection closed; its slot may have a new one with its own entry.
                continue;
            };
            // Unread data waiting (reading is paused for output) is not silence.
            let last = if conn.readable { now } else { conn.last_active };
            if now.saturating_duration_since(last) >= idle.timeout {
                self.doomed.push((key, CloseReason::Idle(idle.timeout)));
            } else {
                idle.schedule(key, id, last);
            }
        }
        self.close_doomed();
    }

    fn close_doomed(&mut self) {
        while let Some((key, reason)) = self.doomed.pop() {
            self.close(key, reason);
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        // Free its place first: a client told of the close may connect again at once.
        if conn.header.is_some() {
            self.limits.release_unnamed();
        } else {
            self.limits.release(conn.peer.addr().ip());
        }
        if let CloseReason::SlowReceiver(_) = reason {
            warn!(conn = conn.id, peer = %conn.peer, "connection closed: {reason}");
        } else {
            info!(
                conn = conn.id,
                peer = %conn.peer,
                messages = conn.messages,
                secs = conn.opened.elapsed().as_secs_f32(),
                "connection closed: {reason}"
            );
        }
        self.counters().closed();
        if self.mode.announces() {
            self.announce(&conn.peer, "left", None);
        }
        // Dropping the stream closes it, which also removes it from the poll set.
    }
}

/// What one connection's turn ended with.
enum Turn {
    /// Budget used up or output blocked: more to read next turn.
    More,
    /// The kernel has nothing more for now.
    Idle,
    /// Its outbox is full: reading resumes once it drains (see `on_writable`).
    Paused,
    Close(CloseReason),
}

/// The worker's parts that handling a message touches.
struct Handler<'a> {
    batch: &'a mut Batch,
    counters: &'a Counters,
    actions: Actions,
    frame: &'a FrameConfig,
    relay: &'a mut Vec<u8>,
    /// When the last poll returned: what a read stamps as the connection's last
    /// activity.
    now: Instant,
}

/// The teaching project's `handle_tcp`: reads what the connection has (within the
/// budget), cuts messages and handles them.
fn handle_tcp(conn: &mut Conn, buf: &mut [u8], h: &mut Handler<'_>) -> Turn {
    let mut budget = READ_BUDGET;
    loop {
        if h.batch.blocked() {
            return Turn::More;
        }
        if conn.pending() > OUTBOX_PAUSE {
            return Turn::Paused;
        }
        let want = match conn.drain_left {
            Some(0) => return finish(conn, h, CloseReason::Drained),
            Some(left) => left.min(buf.len()),
            None if budget == 0 => return Turn::More,
            None => buf.len(),
        };
        let preread = !conn.preread.is_empty();
        let n = match conn.read(&mut buf[..want]) {
            Ok(0) => return finish(conn, h, CloseReason::Eof),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                if conn.drain_left.is_some() {
                    return finish(conn, h, CloseReason::Drained);
                }
                return Turn::Idle;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Turn::Close(CloseReason::Error(err)),
        };
        budget = budget.saturating_sub(n);
        conn.last_active = h.now;
        if let Some(left) = conn.drain_left.as_mut() {
            *left -= n;
        }
        h.counters.received_bytes(Proto::Tcp, n);
        // Messages of one read share its receive time, taken right after it; only
        // printing reads it, so the other modes skip the clock.
        let received_at = h.actions.print.then(SystemTime::now);
        let Conn {
            decoder,
            peer,
            id,
            messages,
            outbox,
            ..
        } = conn;
        let source = Source {
            peer,
            id: *id,
            received_at,
        };
        let before = *messages;
        let flow = handle_read(decoder, &buf[..n], &source, messages, outbox, h);
        h.counters.messages(Proto::Tcp, *messages - before);
        if flow.is_break() {
            return Turn::Close(CloseReason::Disconnect);
        }
        // A read that did not fill the buffer emptied the socket's receive queue, and
        // anything arriving later raises a new edge: the read that would only say
        // `WouldBlock` is skipped, one syscall in three on an echo round trip (tokio
        // does the same). Not after a hang-up, whose edge has already been seen, nor
        // while draining, where the reads are sized to what is left.
        if n < want && !conn.hung_up && conn.drain_left.is_none() && !preread {
            conn.readable = false;
            return Turn::Idle;
        }
    }
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
                proto: Proto::Tcp,
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
    let Conn {
        decoder,
        peer,
        id,
        messages,
        outbox,
        ..
    } = conn;
    let source = Source {
        peer,
        id: *id,
        received_at: h.actions.print.then(SystemTime::now),
    };
    let before = *messages;
    let flow = decoder.finish(|frame| on_frame(frame, &source, messages, outbox, h));
    h.counters.messages(Proto::Tcp, *messages - before);
    if flow.is_break() {
        return Turn::Close(CloseReason::Disconnect);
    }
    Turn::Close(reason)
}

/// Where and when the bytes being decoded came from.
struct Source<'a> {
    peer: &'a Peer,
    id: ConnId,
    /// Taken when the mode prints, and only then.
    received_at: Option<SystemTime>,
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
            proto: Proto::Tcp,
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
        Relay::Chat => {
            let mut line = Vec::with_capacity(bytes.len() + 32);
            line.push(b'<');
            line.extend_from_slice(src.peer.as_str().as_bytes());
            line.extend_from_slice(b"> ");
            escape(bytes, &mut line);
            frame::encode(h.frame, &line, h.relay);
        }
    }
}

/// Logged at debug level when a UDP peer ends its session.
pub(crate) fn udp_session_ended(peer: &Peer) {
    debug!(peer = %peer, "udp session ended (!Disconnect)");
}

/// ` (N more since the last warning)` when warnings were held back.
fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more since the last warning)")
    }
}
