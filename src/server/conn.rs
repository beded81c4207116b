//! One TCP connection's state on its worker: the socket, the decoder holding at most
//! one partial message, the outbox of replies not yet written, and what the kernel
//! last told us about readiness.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use crate::frame::Decoder;
use crate::message::{ConnId, Peer};

use super::proxied::AwaitingHeader;

/// An outbox buffer larger than this is freed once it has been written out, so an
/// idle connection holds no buffer.
const KEEP_OUTBOX: usize = 64 * 1024;

/// A connection owned by one worker.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub stream: TcpStream,
    pub peer: Peer,
    pub decoder: Decoder,
    /// Readiness is edge-triggered: set by an event, cleared when a read returns
    /// `WouldBlock` or comes back short (see `handle_tcp`). While it is set the
    /// connection sits in the worker's ready list, so a budget-limited or paused read
    /// resumes later without a new event (and without re-registering the socket).
    pub readable: bool,
    /// The same for writing: cleared when a write returns `WouldBlock`.
    pub writable: bool,
    /// The kernel reported the peer's close (or an error): reading goes on until it
    /// shows, even after a short read, since no further edge will come.
    pub hung_up: bool,
    /// In the worker's ready list.
    pub queued: bool,
    /// Replies and relayed messages not yet written; `outbox[sent..]` is pending.
    /// Append only; [`Conn::write_outbox`] writes it.
    pub outbox: Vec<u8>,
    sent: usize,
    /// While draining at shutdown: the bytes still to read (what the kernel held
    /// when the drain began), after which the connection is closed.
    pub drain_left: Option<usize>,
    pub messages: u64,
    pub opened: Instant,
    /// The last time a byte was read from or written to the peer (`--idle-timeout`).
    pub last_active: Instant,
    /// Reading has ended (end of stream, `!Disconnect`, shutdown); the connection
    /// closes once its outbox is written.
    pub finishing: Option<CloseReason>,
    /// `--proxy-protocol`: the PROXY header has not arrived yet (`server::proxied`);
    /// until it has, `peer` is the proxy and only `--max-connections` counts it.
    pub header: Option<Box<AwaitingHeader>>,
    /// Bytes read with the PROXY header that followed it: the first data, read
    /// before the socket's.
    pub preread: Vec<u8>,
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
            CloseReason::Idle(timeout) => write!(f, "idle for {}s", timeout.as_secs_f64()),
            CloseReason::Error(err) => f.write_str(&crate::net::describe(err)),
        }
    }
}

impl Conn {
    pub fn new(id: ConnId, stream: TcpStream, peer: Peer, decoder: Decoder) -> Self {
        Conn {
            id,
            stream,
            peer,
            decoder,
            readable: true,
            writable: true,
            hung_up: false,
            queued: false,
            outbox: Vec::new(),
            sent: 0,
            drain_left: None,
            messages: 0,
            opened: Instant::now(),
            last_active: Instant::now(),
            finishing: None,
            header: None,
            preread: Vec::new(),
        }
    }

    /// Reads what came after the PROXY header first, then the socket.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.preread.is_empty() {
            return self.stream.read(buf);
        }
        let n = buf.len().min(self.preread.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(self.preread.get(..n).unwrap_or_default());
        self.preread.drain(..n);
        Ok(n)
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.outbox.len() - self.sent
    }

    /// Writes what the outbox holds until it is empty or the socket is full. Never
    /// blocks: a full socket waits for the next WRITABLE edge. `now` (the event
    /// loop's time) becomes the last activity when something was written.
    pub fn write_outbox(&mut self, now: Instant) -> io::Result<()> {
        let before = self.sent;
        while self.writable && self.sent < self.outbox.len() {
            match self
                .stream
                .write(self.outbox.get(self.sent..).unwrap_or_default())
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
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
