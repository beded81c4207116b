//! One TCP connection's state on its worker: the socket, the decoder holding at most
//! one partial message, the outbox of replies not yet written, and what the kernel
//! last told us about readiness.

use std::io;
use std::time::Instant;

use crate::frame::Decoder;
use crate::message::{ConnId, Peer, Proto};

use super::proxied::AwaitingHeader;
use super::transport::Transport;

/// An outbox buffer larger than this is freed once it has been written out, so an
/// idle connection holds no buffer.
const KEEP_OUTBOX: usize = 64 * 1024;

/// A connection owned by one worker.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub transport: Transport,
    pub peer: Peer,
    /// What its messages are printed as (`tcp`, `unix`, `tls`).
    pub proto: Proto,
    pub decoder: Decoder,
    /// Where the connection is in its life; the only scheduling state besides the
    /// kernel's readiness below and the worker's ready list.
    pub state: State,
    /// Readiness is edge-triggered: set by an event, cleared when a read returns
    /// `WouldBlock` or comes back short (see `handle_tcp`). While it is set the
    /// connection is in the worker's ready list or paused for its outbox, so a
    /// budget-limited or paused read resumes later without a new event (and
    /// without re-registering the socket).
    readable: bool,
    /// The same for writing: cleared when a write returns `WouldBlock`.
    writable: bool,
    /// The kernel reported the peer's close (or an error): reading goes on until it
    /// shows, even after a short read, since no further edge will come.
    hung_up: bool,
    /// Registered with the worker's poll. A new connection is read first and
    /// registered only if its first turn leaves it open: a client that connects,
    /// sends and closes before its turn (churn) is served with no `epoll_ctl`, no
    /// wake-up for its FIN and no removal from the poll set at close. Registering
    /// after a read loses no edge, since `EPOLL_CTL_ADD` reports what is ready.
    watched: bool,
    /// Replies and relayed messages not yet written; `outbox[sent..]` is pending.
    /// Append only; [`Conn::write_outbox`] writes it.
    pub outbox: Vec<u8>,
    sent: usize,
    pub messages: u64,
    pub opened: Instant,
    /// The last time a byte was read from or written to the peer (`--idle-timeout`).
    pub last_active: Instant,
    /// `--proxy-protocol`: the PROXY header has not arrived yet (`server::proxied`);
    /// until it has, `peer` is the proxy and only `--max-connections` counts it.
    pub header: Option<Box<AwaitingHeader>>,
    /// Bytes read with the PROXY header that followed it: the first data, read
    /// before the transport's.
    preread: Vec<u8>,
}

/// Where a connection is in its life. Whether it is paused is not a state of its
/// own: it follows from the outbox (see `handle_tcp` and the worker's
/// `on_writable`), as interest follows from state.
#[derive(Debug)]
pub enum State {
    /// Read whenever the kernel has data and the outbox has room.
    Reading,
    /// Shutdown: `left` is what the kernel still held of what it held when the
    /// drain began; the connection closes once that is read.
    Draining { left: usize },
    /// Reading has ended (end of stream, `!Disconnect`, shutdown); the connection
    /// closes, for this reason, once its outbox is written.
    Closing(CloseReason),
}

/// Why a connection ended.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer closed its side.
    Eof,
    /// The peer sent `!Disconnect`.
    Disconnect,
    /// Shutdown: everything pending was read.
    Drained,
    /// Refused after it was accepted (`--proxy-protocol`: its header, or the
    /// checks on the client it names).
    Refused(String),
    /// It did not read what was relayed to it.
    SlowReceiver(usize),
    /// Nothing was read from it or written to it for `--idle-timeout`.
    Idle(std::time::Duration),
    /// A TLS handshake was not finished within `--tls-handshake-timeout`.
    HandshakeTimeout(std::time::Duration),
    /// A read or write failed (reset, timeout …).
    Error(io::Error),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("closed by peer"),
            CloseReason::Disconnect => f.write_str("!Disconnect"),
            CloseReason::Drained => f.write_str("shutdown"),
            CloseReason::Refused(why) => write!(f, "refused: {why}"),
            CloseReason::SlowReceiver(pending) => {
                write!(f, "cut off: not reading ({pending} bytes waiting)")
            }
            CloseReason::Idle(timeout) => {
                write!(f, "idle for {}", crate::human::duration(*timeout))
            }
            CloseReason::HandshakeTimeout(timeout) => write!(
                f,
                "TLS handshake not finished within {}",
                crate::human::duration(*timeout)
            ),
            CloseReason::Error(err) => f.write_str(&crate::net::describe(err)),
        }
    }
}

impl Conn {
    pub fn new(id: ConnId, transport: Transport, peer: Peer, decoder: Decoder) -> Self {
        let now = Instant::now();
        Conn {
            id,
            proto: transport.proto(),
            transport,
            peer,
            decoder,
            state: State::Reading,
            readable: true,
            writable: true,
            hung_up: false,
            watched: false,
            outbox: Vec::new(),
            sent: 0,
            messages: 0,
            opened: now,
            last_active: now,
            header: None,
            preread: Vec::new(),
        }
    }

    /// Reads what came after the PROXY header first, then the transport.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.preread.is_empty() {
            return self.transport.read(buf);
        }
        let n = buf.len().min(self.preread.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(self.preread.get(..n).unwrap_or_default());
        self.preread.drain(..n);
        Ok(n)
    }

    /// The PROXY header is complete: `rest` followed it. Under TLS it is the start
    /// of the handshake, handed to rustls; otherwise it is read first.
    pub fn header_done(&mut self, rest: Vec<u8>) -> io::Result<()> {
        self.header = None;
        if let Transport::Tls(tls) = &mut self.transport {
            return tls.feed(&rest);
        }
        self.preread = rest;
        Ok(())
    }

    /// Whether bytes that followed the PROXY header are still to be read: a read of
    /// them says nothing about the socket's queue.
    pub fn has_preread(&self) -> bool {
        !self.preread.is_empty()
    }

    /// What a drain at shutdown still has to read.
    pub fn pending_input(&self) -> usize {
        self.transport.pending_bytes().unwrap_or(0) + self.preread.len()
    }

    /// Whether the peer has sent nothing yet: no message, nothing buffered, nothing
    /// waiting in the kernel.
    pub fn fresh(&self) -> bool {
        self.messages == 0 && self.decoder.buffered() == 0 && self.pending_input() == 0
    }

    /// Whether the kernel may hold unread data for us.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// An event said the socket has data (or, `hung_up`, that the peer closed).
    pub fn set_readable(&mut self, hung_up: bool) {
        self.readable = true;
        if hung_up {
            self.hung_up = true;
            self.transport.set_hung_up();
        }
    }

    /// A read found the socket empty (or, being short, emptied it).
    pub fn set_read_empty(&mut self) {
        self.readable = false;
    }

    /// Whether the peer's close was reported, so no further edge will come.
    pub fn hung_up(&self) -> bool {
        self.hung_up
    }

    /// Whether the socket is in the poll set, so its readiness raises events.
    pub fn watched(&self) -> bool {
        self.watched
    }

    /// Puts the socket in the poll set under `token`, once.
    pub fn watch(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        if !self.watched {
            self.transport.register(registry, token)?;
            self.watched = true;
        }
        Ok(())
    }

    /// An event said the socket has room again.
    pub fn set_writable(&mut self) {
        self.writable = true;
    }

    /// Whether reading has ended and the connection only waits to be closed.
    pub fn closing(&self) -> bool {
        matches!(self.state, State::Closing(_))
    }

    /// Shutdown: from now on read only what the kernel holds at this moment.
    pub fn start_drain(&mut self) {
        if !self.closing() {
            let left = self.pending_input();
            self.state = State::Draining { left };
            self.readable = true;
        }
    }

    /// Why a closing connection closes (`Eof` for any other).
    pub fn take_close_reason(&mut self) -> CloseReason {
        match std::mem::replace(&mut self.state, State::Reading) {
            State::Closing(reason) => reason,
            _ => CloseReason::Eof,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.outbox.len() - self.sent
    }

    /// Whether anything is still to be written: the outbox, or what the transport
    /// itself holds (TLS records). A closing connection waits for neither.
    pub fn unsent(&self) -> bool {
        self.pending() > 0 || self.transport.wants().write
    }

    /// Writes what the outbox holds until it is empty or the socket is full. Never
    /// blocks: a full socket waits for the next WRITABLE edge. `now` (the event
    /// loop's time) becomes the last activity when something was written.
    pub fn write_outbox(&mut self, now: Instant) -> io::Result<()> {
        let before = self.sent;
        // Replies and relayed messages wait for a TLS handshake to finish.
        while self.writable && self.sent < self.outbox.len() && !self.transport.is_handshaking() {
            match self
                .transport
                .write(self.outbox.get(self.sent..).unwrap_or_default())
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if self.writable && self.transport.wants().write {
            match self.transport.flush() {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(err) => return Err(err),
            }
        }
        if self.sent != before {
            // The peer is reading: not idle.
            self.last_active = now;
        }
        if self.sent == self.outbox.len() {
            self.sent = 0;
            if self.outbox.capacity() > KEEP_OUTBOX {
                self.outbox = Vec::new();
            } else {
                self.outbox.clear();
            }
        } else if self.sent > KEEP_OUTBOX && self.sent * 2 > self.outbox.len() {
            // Reclaim the written half rather than letting the buffer creep.
            self.outbox.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}
