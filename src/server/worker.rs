//! One worker: a mio event loop over every connection handed to it and its own UDP
//! sockets. It reads until `WouldBlock` within a per-turn budget, cuts messages and
//! handles them; a connection that used up its budget waits in the ready list for the
//! next turn, so one flooding peer cannot starve the others on the same worker.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::frame::{DISCONNECT, Decoder, Frame, FrameConfig};
use crate::message::{ConnId, Message, Peer, Proto};

use super::batch::Batch;
use super::conn::{CloseReason, Conn};
use super::mode::Mode;
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
    /// Shutdown: read what is pending, deliver it, close everything, exit.
    Drain { deadline: Instant },
}

/// The token of the waker the acceptor, the sink and shutdown use (mio reserves
/// `usize::MAX` for itself).
pub const WAKER: Token = Token(usize::MAX - 1);
/// UDP socket `i` is registered as `UDP_BASE - i`.
const UDP_BASE: usize = usize::MAX - 2;

/// Bytes read from one connection per turn before the next one gets its go.
const READ_BUDGET: usize = 256 * 1024;
/// The read buffer shared by all of a worker's connections.
const READ_BUF: usize = 64 * 1024;

/// What a worker needs to run.
#[derive(Debug)]
pub struct WorkerSetup {
    pub index: usize,
    pub poll: Poll,
    pub inbox: Receiver<Job>,
    pub udp: Vec<std::net::UdpSocket>,
    pub batch: Batch,
    pub stats: Arc<Stats>,
    pub frame: FrameConfig,
    pub mode: Mode,
    /// Told once the worker has finished draining.
    pub done: Sender<usize>,
}

/// The teaching project's `Worker`, now an event loop rather than one connection.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    poll: Poll,
    inbox: Receiver<Job>,
    conns: Slab<Conn>,
    /// Connections that may have more to read, in the order they get their turn.
    ready: VecDeque<usize>,
    udp: Vec<UdpReader>,
    batch: Batch,
    stats: Arc<Stats>,
    frame: FrameConfig,
    mode: Mode,
    buf: Box<[u8]>,
    draining: bool,
    done: Sender<usize>,
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
            udp.push(UdpReader::new(socket));
        }
        Ok(Worker {
            index: setup.index,
            poll: setup.poll,
            inbox: setup.inbox,
            conns: Slab::new(),
            ready: VecDeque::new(),
            udp,
            batch: setup.batch,
            stats: setup.stats,
            frame: setup.frame,
            mode: setup.mode,
            buf: vec![0; READ_BUF.max(setup.frame.max_frame + 1)].into_boxed_slice(),
            draining: false,
            done: setup.done,
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
            let timeout = more.then_some(std::time::Duration::ZERO);
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
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    Token(t) if t > UDP_BASE - self.udp.len() => {
                        if let Some(reader) = self.udp.get_mut(UDP_BASE - t) {
                            reader.readable = true;
                        }
                    }
                    Token(key) => self.mark_ready(key),
                }
            }
            if woken {
                self.handle_inbox();
            }
            // The sink may have woken us because it has room again.
            self.batch.flush();
            self.serve_tcp();
            self.serve_udp();
            self.batch.flush();
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

    fn mark_ready(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.readable = true;
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(key);
            }
        }
    }

    fn handle_inbox(&mut self) {
        while let Ok(job) = self.inbox.try_recv() {
            match job {
                Job::Accept { stream, peer, id } => self.adopt(stream, peer, id),
                Job::Drain { deadline } => self.start_drain(deadline),
            }
        }
    }

    fn adopt(&mut self, mut stream: TcpStream, peer: SocketAddr, id: ConnId) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(err) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            warn!(conn = id, peer = %peer, "cannot watch connection: {}", crate::net::describe(&err));
            self.counters().closed();
            return;
        }
        let peer = Peer::new(peer);
        info!(conn = id, peer = %peer, worker = self.index, "connection opened");
        let mut conn = Conn::new(id, stream, peer, Decoder::new(&self.frame));
        // Data may have arrived before registration: look without waiting for an edge.
        conn.queued = true;
        entry.insert(conn);
        self.ready.push_back(key);
    }

    fn start_drain(&mut self, deadline: Instant) {
        self.draining = true;
        self.batch.drain_until(deadline);
        for (key, conn) in self.conns.iter_mut() {
            conn.drain_left = Some(crate::net::pending_bytes(&conn.stream).unwrap_or(0));
            conn.readable = true;
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(key);
            }
        }
        for reader in &mut self.udp {
            reader.readable = true;
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
            let counters = &self.stats.workers[self.index];
            match handle_tcp(conn, &mut self.buf, &mut self.batch, counters, self.mode) {
                Turn::More => {
                    conn.queued = true;
                    self.ready.push_back(key);
                }
                Turn::Idle => {}
                Turn::Close(reason) => self.close(key, reason),
            }
        }
    }

    fn serve_udp(&mut self) {
        let counters = &self.stats.workers[self.index];
        for reader in &mut self.udp {
            if reader.readable {
                reader.handle_udp(
                    &mut self.buf,
                    &self.frame,
                    &mut self.batch,
                    counters,
                    self.mode,
                    self.draining,
                );
            }
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        if let Some(conn) = self.conns.try_remove(key) {
            // Dropping the stream closes it, which also removes it from the poll set.
            info!(
                conn = conn.id,
                peer = %conn.peer,
                messages = conn.messages,
                secs = conn.opened.elapsed().as_secs_f32(),
                "connection closed: {reason}"
            );
            self.counters().closed();
        }
    }
}

/// What one connection's turn ended with.
enum Turn {
    /// Budget used up or output blocked: more to read next turn.
    More,
    /// The kernel has nothing more for now.
    Idle,
    Close(CloseReason),
}

/// The teaching project's `handle_tcp`: reads what the connection has (within the
/// budget), cuts messages and handles them.
fn handle_tcp(
    conn: &mut Conn,
    buf: &mut [u8],
    batch: &mut Batch,
    counters: &Counters,
    mode: Mode,
) -> Turn {
    let mut budget = READ_BUDGET;
    loop {
        if batch.blocked() {
            return Turn::More;
        }
        let want = match conn.drain_left {
            Some(0) => return finish(conn, batch, counters, mode, CloseReason::Drained),
            Some(left) => left.min(buf.len()),
            None if budget == 0 => return Turn::More,
            None => buf.len(),
        };
        let n = match conn.stream.read(&mut buf[..want]) {
            Ok(0) => return finish(conn, batch, counters, mode, CloseReason::Eof),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                if conn.drain_left.is_some() {
                    return finish(conn, batch, counters, mode, CloseReason::Drained);
                }
                return Turn::Idle;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Turn::Close(CloseReason::Error(err)),
        };
        budget = budget.saturating_sub(n);
        if let Some(left) = conn.drain_left.as_mut() {
            *left -= n;
        }
        counters.received_bytes(Proto::Tcp, n);
        let received_at = SystemTime::now();
        let Conn {
            decoder,
            peer,
            id,
            messages,
            ..
        } = conn;
        let flow = decoder.decode(&buf[..n], |frame| {
            on_frame(
                frame,
                peer,
                *id,
                received_at,
                messages,
                batch,
                counters,
                mode,
            )
        });
        if flow.is_break() {
            return Turn::Close(CloseReason::Disconnect);
        }
    }
}

/// End of stream: the final message without its terminator is still delivered.
fn finish(
    conn: &mut Conn,
    batch: &mut Batch,
    counters: &Counters,
    mode: Mode,
    reason: CloseReason,
) -> Turn {
    let received_at = SystemTime::now();
    let Conn {
        decoder,
        peer,
        id,
        messages,
        ..
    } = conn;
    let flow = decoder.finish(|frame| {
        on_frame(
            frame,
            peer,
            *id,
            received_at,
            messages,
            batch,
            counters,
            mode,
        )
    });
    if flow.is_break() {
        return Turn::Close(CloseReason::Disconnect);
    }
    Turn::Close(reason)
}

#[allow(clippy::too_many_arguments)]
fn on_frame(
    frame: Frame<'_>,
    peer: &Peer,
    id: ConnId,
    received_at: SystemTime,
    messages: &mut u64,
    batch: &mut Batch,
    counters: &Counters,
    mode: Mode,
) -> ControlFlow<()> {
    match frame {
        Frame::Message(bytes) if bytes == DISCONNECT => ControlFlow::Break(()),
        Frame::Message(bytes) => {
            deliver(
                bytes,
                peer,
                id,
                received_at,
                messages,
                batch,
                counters,
                mode,
            );
            ControlFlow::Continue(())
        }
        Frame::Truncated { message, len } => {
            counters.dropped(DropReason::Truncated);
            warn!(conn = id, peer = %peer, size = len, "message of {len} bytes from {peer} is longer than --max-frame; truncated");
            deliver(
                message,
                peer,
                id,
                received_at,
                messages,
                batch,
                counters,
                mode,
            );
            ControlFlow::Continue(())
        }
        Frame::Oversize { len } => {
            counters.dropped(DropReason::Oversize);
            warn!(conn = id, peer = %peer, size = len, "message of {len} bytes from {peer} is longer than --max-frame; dropped");
            ControlFlow::Continue(())
        }
        Frame::Incomplete { len } => {
            counters.dropped(DropReason::Incomplete);
            warn!(conn = id, peer = %peer, size = len, "stream from {peer} ended inside a message ({len} bytes); dropped");
            ControlFlow::Continue(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn deliver(
    bytes: &[u8],
    peer: &Peer,
    id: ConnId,
    received_at: SystemTime,
    messages: &mut u64,
    batch: &mut Batch,
    counters: &Counters,
    mode: Mode,
) {
    *messages += 1;
    counters.message(Proto::Tcp);
    if mode.prints() {
        batch.print(&Message {
            proto: Proto::Tcp,
            peer,
            conn: Some(id),
            received_at,
            bytes,
        });
    }
}

/// Logged at debug level when a UDP peer ends its session.
pub(crate) fn udp_session_ended(peer: &Peer) {
    debug!(peer = %peer, "udp session ended (!Disconnect)");
}
