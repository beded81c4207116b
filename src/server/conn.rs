//! One TCP connection's state on its worker: the socket, the decoder holding at most
//! one partial message, and whether the kernel has more for us.

use std::time::Instant;

use mio::net::TcpStream;

use crate::frame::Decoder;
use crate::message::{ConnId, Peer};

/// A connection owned by one worker.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub stream: TcpStream,
    pub peer: Peer,
    pub decoder: Decoder,
    /// Readiness is edge-triggered: set by an event, cleared only when a read
    /// returns `WouldBlock`. While it is set the connection sits in the worker's
    /// ready list, so a budget-limited or paused read is resumed later without a
    /// new event (and without re-registering the socket).
    pub readable: bool,
    /// In the worker's ready list.
    pub queued: bool,
    /// While draining at shutdown: the bytes still to read (what the kernel held
    /// when the drain began), after which the connection is closed.
    pub drain_left: Option<usize>,
    pub messages: u64,
    pub opened: Instant,
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
    /// A read failed (reset, timeout …).
    Error(std::io::Error),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("closed by peer"),
            CloseReason::Disconnect => f.write_str("!Disconnect"),
            CloseReason::Drained => f.write_str("shutdown"),
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
            queued: false,
            drain_left: None,
            messages: 0,
            opened: Instant::now(),
        }
    }
}
