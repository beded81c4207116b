//! One worker: a mio event loop over its listeners, every connection it accepted
//! and its own UDP sockets. Each pass it takes its jobs (see `inbox`), accepts what
//! its listeners hold (see `acceptor`), gives every ready connection
//! one turn of `handle_tcp` (see `tcp`), reads its UDP sockets (see `udp`), hands
//! what its clients relayed to the others (see `broker`), flushes its output batch
//! and closes idle connections. A connection that used up its read budget waits in
//! the ready list for the next pass, so one flooding peer cannot starve the others
//! on the same worker.
//!
//! Sockets are registered once, for both directions, edge-triggered: pausing a
//! connection (output full, outbox full) is a matter of not reading it, not a
//! re-registration, and the kernel sends no further events for data we have not
//! read.
//!
//! `--idle-timeout` is a heap of deadlines re-checked lazily (see `idle`); the poll
//! sleeps until the nearest one. A connection's close releases its place in the
//! shared `--max-connections`/`--max-per-ip` counts.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::frame::{Decoder, FrameConfig};
use crate::message::{ConnId, Peer};
use crate::net::filter::{ConnLimits, Filter, Refusal};
use crate::net::mmsg::RecvBatch;

use super::acceptor::{AcceptShared, Accepted, Acceptor, Watch};
use super::batch::Batch;
use super::broker::{Broker, Doomed};
use super::conn::{CloseReason, Conn, State};
use super::idle::IdleTimers;
use super::inbox::{Job, Mailbox, WAKER};
use super::mode::{Actions, Mode};
use super::proxied::{Gate, Step};
use super::ready::ReadyList;
use super::stats::{Counters, Stats};
use super::tcp::{Handler, OUTBOX_PAUSE, Turn, handle_tcp};
use super::tls::{self, TlsFailure, TlsServer};
use super::transport::{Stream, Transport};
use super::udp::UdpReader;
use super::unixgram::UnixgramReader;

/// UDP socket `i` is registered as `UDP_BASE - i`.
const UDP_BASE: usize = usize::MAX - 2;

/// Listener `i` is registered as `LISTEN_BASE + i`: far above any slab key, far
/// below the UDP tokens.
const LISTEN_BASE: usize = usize::MAX / 2;

/// The read buffer shared by all of a worker's connections: one per worker, so it
/// can be big. A streaming sender's reads then carry thousands of messages each,
/// which is what keeps ingest within reach of a reader that only counts lines.
const READ_BUF: usize = 256 * 1024;

/// At shutdown, how long a connection that has sent nothing yet may still send
/// (at most half the drain timeout). A client that connected just before the signal
/// (from the listen backlog, say) and writes right after the handshake would
/// otherwise find its connection closed with its message in flight, and be reset.
const FRESH_GRACE: Duration = Duration::from_secs(1);

/// What a worker needs to run.
#[derive(Debug)]
pub struct WorkerSetup {
    pub index: usize,
    pub poll: Poll,
    pub inbox: Receiver<Job>,
    /// The listeners this worker accepts from.
    pub listeners: Vec<Watch>,
    pub accept: Arc<AcceptShared>,
    /// Every worker's mailbox (this one's included), for relaying.
    pub mailboxes: Arc<[Mailbox]>,
    pub udp: Vec<std::net::UdpSocket>,
    /// Unix datagram sockets this worker alone reads.
    pub unixgram: Vec<std::os::unix::net::UnixDatagram>,
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
    /// TLS for every connection handed over; `None`: plain.
    pub tls: Option<Arc<TlsServer>>,
}

/// A worker's datagram sockets and what reading them needs.
#[derive(Debug)]
struct UdpSockets {
    readers: Vec<UdpReader>,
    /// Registered after `readers`, as `UDP_BASE - readers.len() - j`.
    unixgram: Vec<UnixgramReader>,
    /// The receive buffers, a batch of datagrams per syscall.
    datagrams: RecvBatch,
    actions: Actions,
}

impl UdpSockets {
    fn any_readable(&self) -> bool {
        self.readers.iter().any(|u| u.readable) || self.unixgram.iter().any(|u| u.readable)
    }

    fn count(&self) -> usize {
        self.readers.len() + self.unixgram.len()
    }

    /// Socket `i` (in token order) has data.
    fn set_readable(&mut self, i: usize) {
        if let Some(reader) = self.readers.get_mut(i) {
            reader.readable = true;
        } else if let Some(reader) = self.unixgram.get_mut(i - self.readers.len()) {
            reader.readable = true;
        }
    }

    fn set_all_readable(&mut self) {
        for reader in &mut self.readers {
            reader.readable = true;
        }
        for reader in &mut self.unixgram {
            reader.readable = true;
        }
    }
}

/// The teaching project's `Worker`, now an event loop rather than one connection.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    poll: Poll,
    inbox: Receiver<Job>,
    acceptor: Acceptor,
    /// Connections accepted in this pass, adopted right after (kept for its room).
    accepted: Vec<Accepted>,
    conns: Slab<Conn>,
    /// Connections that may have more to read, in the order they get their turn.
    ready: ReadyList,
    udp: UdpSockets,
    batch: Batch,
    stats: Arc<Stats>,
    frame: FrameConfig,
    actions: Actions,
    buf: Box<[u8]>,
    /// Every worker's inbox, this one's included: where a connection accepted while
    /// this worker serves more than another goes.
    mailboxes: Arc<[Mailbox]>,
    broker: Broker,
    /// Connections to close once the current fan-out is done.
    doomed: Doomed,
    draining: bool,
    /// While draining: connections that had sent nothing when it began are read as
    /// usual until then (see [`FRESH_GRACE`]).
    grace: Option<Instant>,
    /// `--proxy-protocol`: connections awaiting their header.
    proxied: Option<Gate>,
    done: Sender<usize>,
    limits: Arc<ConnLimits>,
    idle: Option<IdleTimers>,
    tls: Option<Arc<TlsServer>>,
    /// `--tls-handshake-timeout`: the same lazy heap as `idle`, checked against
    /// whether the handshake is still under way.
    handshakes: Option<IdleTimers>,
    /// When the last poll returned: the time every turn of this pass of the loop
    /// stamps as activity and checks idle deadlines against. One clock reading per
    /// pass instead of several per round trip (an echo round trip read the clock
    /// four times, 15% of the worker's user time under perf); idle timeouts are
    /// seconds, a pass milliseconds.
    now: Instant,
}

impl Worker {
    pub fn new(setup: WorkerSetup) -> io::Result<Self> {
        let mut readers = Vec::with_capacity(setup.udp.len());
        for (i, socket) in setup.udp.into_iter().enumerate() {
            let mut socket = UdpSocket::from_std(socket);
            setup
                .poll
                .registry()
                .register(&mut socket, Token(UDP_BASE - i), Interest::READABLE)?;
            readers.push(UdpReader::new(socket, Arc::clone(&setup.filter)));
        }
        let mut unixgram = Vec::with_capacity(setup.unixgram.len());
        for (j, socket) in setup.unixgram.into_iter().enumerate() {
            let mut reader = UnixgramReader::new(UnixDatagram::from_std(socket));
            let token = Token(UDP_BASE - readers.len() - j);
            setup
                .poll
                .registry()
                .register(reader.socket(), token, Interest::READABLE)?;
            unixgram.push(reader);
        }
        let datagrams = super::udp::datagram_batch(&setup.frame, readers.len());
        let acceptor = Acceptor::new(setup.listeners, setup.accept, &setup.poll, LISTEN_BASE)?;
        Ok(Worker {
            index: setup.index,
            poll: setup.poll,
            inbox: setup.inbox,
            acceptor,
            accepted: Vec::new(),
            conns: Slab::new(),
            ready: ReadyList::default(),
            udp: UdpSockets {
                readers,
                unixgram,
                datagrams,
                actions: setup.mode.udp_actions(setup.quiet),
            },
            batch: setup.batch,
            stats: setup.stats,
            frame: setup.frame,
            actions: setup.mode.actions(setup.quiet),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            mailboxes: Arc::clone(&setup.mailboxes),
            broker: Broker::new(setup.index, setup.mailboxes, setup.frame, setup.mode),
            doomed: Doomed::new(),
            draining: false,
            grace: None,
            proxied: setup
                .proxy_protocol
                .then(|| Gate::new(Arc::clone(&setup.filter))),
            done: setup.done,
            limits: setup.limits,
            idle: setup.idle_timeout.map(IdleTimers::new),
            handshakes: setup
                .tls
                .as_ref()
                .map(|tls| IdleTimers::new(tls.handshake_timeout())),
            tls: setup.tls,
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
                || self.udp.any_readable()
                || self.acceptor.pending();
            let timeout = if more {
                Some(Duration::ZERO)
            } else {
                let idle = self.idle.as_ref().and_then(IdleTimers::next_deadline);
                let handshake = self.handshakes.as_ref().and_then(IdleTimers::next_deadline);
                idle.into_iter()
                    .chain(handshake)
                    .min()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            let timeout = match self.next_wake() {
                None => timeout,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    Some(timeout.map_or(left, |t| t.min(left)))
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
                    Token(t) if t > UDP_BASE - self.udp.count() => {
                        self.udp.set_readable(UDP_BASE - t);
                    }
                    token if self.acceptor.on_event(token) => {}
                    Token(key) => {
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                        let hung_up = event.is_read_closed() || event.is_error();
                        if event.is_readable() || hung_up {
                            self.on_readable(key, hung_up);
                        }
                    }
                }
            }
            if woken {
                self.handle_inbox();
            }
            self.accept();
            // The sink may have woken us because it has room again.
            self.batch.flush();
            self.serve_tcp();
            self.serve_udp();
            self.broker.send_relayed();
            self.batch.flush();
            self.close_idle();
            self.close_unfinished_handshakes();
            if self.draining && self.conns.is_empty() && !self.udp.any_readable() && self.may_exit()
            {
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

    /// Drained: takes no more connections from other workers, and says whether
    /// none is on its way or waiting in the inbox (one that is gets served first).
    fn may_exit(&self) -> bool {
        let none_coming = self
            .mailboxes
            .get(self.index)
            .is_none_or(Mailbox::close_handoffs);
        none_coming && self.inbox.is_empty()
    }

    fn on_readable(&mut self, key: usize, hung_up: bool) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.set_readable(hung_up);
            if !conn.closing() {
                self.ready.push(key);
            }
        }
    }

    /// The socket has room again: write what waits, resume reading a connection that
    /// was paused for its outbox, or finish closing one.
    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.set_writable();
        if let Err(err) = conn.write_outbox(self.now) {
            self.doomed.push((key, CloseReason::Error(err)));
        } else if conn.closing() {
            if !conn.unsent() {
                let reason = conn.take_close_reason();
                self.doomed.push((key, reason));
            }
        } else if conn.readable() && conn.pending() <= OUTBOX_PAUSE / 2 {
            self.ready.push(key);
        }
        self.close_doomed();
    }

    fn handle_inbox(&mut self) {
        while let Ok(job) = self.inbox.try_recv() {
            match job {
                Job::Broadcast(bytes) => {
                    self.broker
                        .fan_out(&mut self.conns, None, &bytes, self.now, &mut self.doomed);
                }
                Job::Drain { deadline } => self.start_drain(deadline),
                Job::Adopt(Accepted { stream, peer, id }) => {
                    if let Some(mailbox) = self.mailboxes.get(self.index) {
                        mailbox.took_handoff();
                    }
                    if let Some(key) = self.take_in(stream, peer, id)
                        && self.draining
                        && let Some(conn) = self.conns.get_mut(key)
                    {
                        // Handed over as this worker began to drain: read what the
                        // kernel holds for it, then close, as after the grace.
                        conn.start_drain();
                    }
                }
            }
        }
        self.close_doomed();
    }

    /// Accepts what the ready listeners hold and adopts it: a connection that came
    /// with its first message is read in this same pass.
    fn accept(&mut self) {
        if !self.acceptor.pending() && self.acceptor.next_wake().is_none() {
            return;
        }
        let mut accepted = std::mem::take(&mut self.accepted);
        self.acceptor.accept_ready(
            &self.poll,
            self.now,
            &self.stats.workers,
            self.index,
            &mut accepted,
        );
        for connection in accepted.drain(..) {
            let Some(target) = Acceptor::lighter_worker(&self.stats.workers, self.index, 0) else {
                let Accepted { stream, peer, id } = connection;
                self.adopt(stream, peer, id);
                continue;
            };
            let (Some(counters), Some(mailbox)) =
                (self.stats.workers.get(target), self.mailboxes.get(target))
            else {
                let Accepted { stream, peer, id } = connection;
                self.adopt(stream, peer, id);
                continue;
            };
            // Counted as the target's at once, so the next decision sees it.
            counters.adopted();
            // The target takes no more (it is draining to exit): serve it here.
            if let Err(Accepted { stream, peer, id }) = mailbox.hand_over(connection) {
                counters.not_adopted();
                self.adopt(stream, peer, id);
            }
        }
        self.accepted = accepted;
    }

    fn adopt(&mut self, stream: Stream, peer: Peer, id: ConnId) {
        self.counters().adopted();
        self.take_in(stream, peer, id);
    }

    /// Registers a connection counted as this worker's and gives it its first turn;
    /// its slab key, unless it could not be watched (then it is closed).
    fn take_in(&mut self, stream: Stream, peer: Peer, id: ConnId) -> Option<usize> {
        let key = self.conns.vacant_entry().key();
        let transport = match &self.tls {
            Some(tls) => Transport::tls(tls.config(), stream),
            None => Ok(Transport::plain(stream)),
        };
        let transport = match transport {
            Ok(transport) => transport,
            Err(err) => {
                warn!(conn = id, peer = %peer, "cannot serve connection: {}", crate::net::describe(&err));
                self.counters().closed();
                self.limits.release_peer(peer.addr().map(|a| a.ip()));
                return None;
            }
        };
        info!(conn = id, peer = %peer, worker = self.index, "connection opened");
        let mut conn = Conn::new(id, transport, peer.clone(), Decoder::new(&self.frame));
        // PROXY headers come from TCP proxies; a Unix stream has none.
        if let (Some(gate), Some(_)) = (self.proxied.as_mut(), peer.addr()) {
            conn.header = Some(Box::default());
            gate.schedule(key, id, self.now);
        }
        let opened = conn.opened;
        // Nothing was inserted or removed since `vacant_entry`, so this is `key`.
        let key = self.conns.insert(conn);
        // Read at once, in this pass; it is watched after that turn (`Conn::watch`).
        self.ready.push(key);
        if let Some(idle) = self.idle.as_mut() {
            if idle.needs_compaction(self.conns.len()) {
                idle.rebuild(self.conns.iter().map(|(k, c)| (k, c.id, c.last_active)));
            } else {
                idle.schedule(key, id, opened);
            }
        }
        if let Some(handshakes) = self.handshakes.as_mut() {
            if handshakes.needs_compaction(self.conns.len()) {
                handshakes.rebuild(
                    self.conns
                        .iter()
                        .filter(|(_, c)| c.transport.is_handshaking())
                        .map(|(k, c)| (k, c.id, c.opened)),
                );
            } else {
                handshakes.schedule(key, id, opened);
            }
        }
        self.broker.announce(
            &mut self.conns,
            &peer,
            "joined",
            Some(key),
            self.now,
            &mut self.doomed,
        );
        Some(key)
    }

    fn start_drain(&mut self, deadline: Instant) {
        // What the kernel queued before the signal is served and drained like the
        // rest; then the listeners close.
        let mut accepted = std::mem::take(&mut self.accepted);
        let counters = &self.stats.workers[self.index];
        self.acceptor
            .accept_backlog_and_close(&self.poll, counters, &mut accepted);
        for Accepted { stream, peer, id } in accepted.drain(..) {
            self.adopt(stream, peer, id);
        }
        self.accepted = accepted;
        self.draining = true;
        self.batch.drain_until(deadline);
        let now = Instant::now();
        let grace = now + FRESH_GRACE.min(deadline.saturating_duration_since(now) / 2);
        for (key, conn) in self.conns.iter_mut() {
            if conn.closing() {
                continue;
            }
            if conn.fresh() {
                // Nothing sent yet: read as usual until the grace ends.
                self.grace = Some(grace);
            } else {
                conn.start_drain();
            }
            self.ready.push(key);
        }
        self.udp.set_all_readable();
    }

    /// The earliest moment the loop must wake besides idle deadlines: the end of
    /// the drain's grace, or a PROXY header's deadline.
    fn next_wake(&self) -> Option<Instant> {
        let header = self.proxied.as_ref().and_then(Gate::next_deadline);
        [self.grace, header, self.acceptor.next_wake()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The grace for connections that had sent nothing is over: like the others,
    /// they are read up to what the kernel holds now, then closed.
    fn end_grace(&mut self) {
        self.grace = None;
        for (key, conn) in self.conns.iter_mut() {
            if conn.header.is_some() {
                // Still no PROXY header: nothing of it can be delivered.
                self.doomed.push((key, CloseReason::Drained));
            } else if matches!(conn.state, State::Reading) {
                conn.start_drain();
                self.ready.push(key);
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
        let conns = &self.conns;
        let awaiting = |key: usize, id: ConnId| {
            conns
                .get(key)
                .is_some_and(|c| c.id == id && c.header.is_some())
        };
        for (key, id) in gate.due(self.now, awaiting) {
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
        let (Some(proxy), Some(mut stream)) = (conn.peer.addr(), conn.transport.raw_stream())
        else {
            return true;
        };
        match state.read(&mut stream, proxy, gate, &self.limits) {
            Step::Wait if matches!(conn.state, State::Draining { .. }) => {
                // Draining: what the kernel held did not complete the header, and
                // nothing after it counts.
                self.doomed.push((key, CloseReason::Drained));
                self.close_doomed();
                false
            }
            Step::Wait => {
                conn.set_read_empty();
                false
            }
            Step::Ready { client, rest } => {
                if let Err(err) = conn.header_done(rest) {
                    self.doomed.push((key, CloseReason::Error(err)));
                    self.close_doomed();
                    return false;
                }
                if let Some(client) = client {
                    tracing::debug!(conn = conn.id, proxy = %conn.peer, client = %client, "PROXY header");
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
            let Some(key) = self.ready.pop() else {
                return;
            };
            if self.conns.get(key).is_some_and(|c| c.header.is_some()) && !self.read_header(key) {
                self.watch(key);
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
                relay: &mut self.broker.relay,
                now: self.now,
            };
            let turn = handle_tcp(conn, &mut self.buf, &mut handler);
            let written = conn.write_outbox(self.now);
            match (turn, written) {
                (_, Err(err)) => self.doomed.push((key, CloseReason::Error(err))),
                (Turn::More, Ok(())) => self.ready.push(key),
                // A paused connection whose outbox the socket took whole gets no
                // WRITABLE edge to resume it: it goes on next turn.
                (Turn::Paused, Ok(())) if conn.pending() == 0 => self.ready.push(key),
                (Turn::Idle | Turn::Paused, Ok(())) => {}
                (Turn::Close(reason), Ok(())) => self.finish_conn(key, reason),
            }
            self.broker
                .relay_turn(&mut self.conns, key, self.now, &mut self.doomed);
            self.close_doomed();
            self.watch(key);
        }
    }

    /// A connection that is still open after its first turn enters the poll set.
    fn watch(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Err(err) = conn.watch(self.poll.registry(), Token(key)) {
            warn!(conn = conn.id, peer = %conn.peer, "cannot watch connection: {}", crate::net::describe(&err));
            self.doomed.push((key, CloseReason::Error(err)));
            self.close_doomed();
        }
    }

    fn serve_udp(&mut self) {
        let counters = &self.stats.workers[self.index];
        let UdpSockets {
            readers,
            unixgram,
            datagrams,
            actions,
        } = &mut self.udp;
        for reader in readers {
            if reader.readable {
                reader.handle_udp(
                    datagrams,
                    &self.frame,
                    &mut self.batch,
                    counters,
                    *actions,
                    self.draining,
                );
            }
        }
        for reader in unixgram {
            if reader.readable {
                reader.handle_unixgram(
                    &mut self.buf,
                    &self.frame,
                    &mut self.batch,
                    counters,
                    *actions,
                    self.draining,
                );
            }
        }
    }

    /// Reading has ended: close now, or once the outbox (echo replies) is written.
    fn finish_conn(&mut self, key: usize, reason: CloseReason) {
        match self.conns.get_mut(key) {
            Some(conn) if conn.unsent() && !matches!(reason, CloseReason::Error(_)) => {
                conn.state = State::Closing(reason);
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
            let last = if conn.readable() {
                now
            } else {
                conn.last_active
            };
            if now.saturating_duration_since(last) >= idle.timeout {
                self.doomed.push((key, CloseReason::Idle(idle.timeout)));
            } else {
                idle.schedule(key, id, last);
            }
        }
        self.close_doomed();
    }

    /// `--tls-handshake-timeout`: closes the connections whose handshake is due and
    /// still under way.
    fn close_unfinished_handshakes(&mut self) {
        let Some(handshakes) = self.handshakes.as_mut() else {
            return;
        };
        if self.draining {
            return;
        }
        while let Some((key, id)) = handshakes.pop_due(self.now) {
            if let Some(conn) = self.conns.get(key).filter(|c| c.id == id)
                && conn.transport.is_handshaking()
            {
                self.doomed
                    .push((key, CloseReason::HandshakeTimeout(handshakes.timeout)));
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
            self.limits.release_peer(conn.peer.addr().map(|a| a.ip()));
        }
        let failed = match &reason {
            CloseReason::HandshakeTimeout(_) => Some((TlsFailure::Timeout, reason.to_string())),
            _ => conn.transport.tls_failure().cloned(),
        };
        if let Some((failure, detail)) = failed {
            self.counters().tls_failed(failure);
            tls::warn_failure(&conn.peer, failure, &detail);
            debug!(conn = conn.id, peer = %conn.peer, "connection closed: {reason}");
        } else if let CloseReason::SlowReceiver(_) = reason {
            warn!(conn = conn.id, peer = %conn.peer, "connection closed: {reason}");
        } else {
            info!(
                conn = conn.id,
                peer = %conn.peer,
                messages = conn.messages,
                open_for = %crate::human::duration(conn.opened.elapsed()),
                "connection closed: {reason}"
            );
        }
        self.counters().closed();
        self.broker.announce(
            &mut self.conns,
            &conn.peer,
            "left",
            None,
            self.now,
            &mut self.doomed,
        );
        // Dropping the transport closes the socket, which also removes it from the
        // poll set.
    }
}

/// ` (N more since the last warning)` when warnings were held back.
fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more since the last warning)")
    }
}
