//! What carries a connection's bytes under `handle_tcp`: a plain TCP socket today,
//! a Unix stream or TLS over either tomorrow. A transport reads and writes the
//! application's bytes and says what it needs from the socket; framing, modes and
//! output never learn which one carries them.
//!
//! An enum rather than a trait object: the read path pays one predictable branch
//! per read (a read carries thousands of messages), never a virtual call per
//! message, and each variant's calls inline.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// A connection's byte carrier.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    /// Bytes in memory: `handle_tcp` and the broker are unit-tested over it.
    #[cfg(test)]
    Memory(memory::Memory),
}

/// What a transport needs from its socket besides what the application asks for.
/// Plain sockets need nothing of their own; a TLS handshake wants both directions,
/// and TLS records it has queued want writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    pub read: bool,
    pub write: bool,
}

impl Transport {
    /// Reads the application's bytes; `Ok(0)` is the end of the stream and
    /// `WouldBlock` means nothing is there for now.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => stream.read(buf),
            #[cfg(test)]
            Transport::Memory(memory) => memory.read(buf),
        }
    }

    /// Writes the application's bytes, as much as fits now.
    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => stream.write(buf),
            #[cfg(test)]
            Transport::Memory(memory) => memory.write(buf),
        }
    }

    /// What the transport itself still needs (see [`Wants`]).
    #[inline]
    pub fn wants(&self) -> Wants {
        match self {
            Transport::Tcp(_) => Wants::default(),
            #[cfg(test)]
            Transport::Memory(_) => Wants::default(),
        }
    }

    /// Writes what the transport itself has queued (see [`Wants::write`]);
    /// `WouldBlock` when the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            #[cfg(test)]
            Transport::Memory(_) => Ok(()),
        }
    }

    /// Watches the socket in both directions, edge-triggered, once for its life.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Transport::Tcp(stream) => registry.register(stream, token, interest),
            #[cfg(test)]
            Transport::Memory(_) => Ok(()),
        }
    }

    /// The application bytes that can be read without waiting: what a drain at
    /// shutdown still has to read.
    pub fn pending_bytes(&self) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => crate::net::pending_bytes(stream),
            #[cfg(test)]
            Transport::Memory(memory) => Ok(memory.input.len()),
        }
    }
}

/// Lets what reads before the application's bytes (a PROXY header, which comes
/// before any TLS) take them from the transport like from any reader.
impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Transport::read(self, buf)
    }
}

#[cfg(test)]
pub mod memory {
    //! A transport over byte buffers, for tests of the read path without sockets.

    use std::collections::VecDeque;
    use std::io;

    /// A peer's bytes to read and what was written to it. `input` is handed out
    /// at most `chunk` bytes per read (what one read from a socket would return);
    /// `room` is what writes may still take before they would block.
    #[derive(Debug)]
    pub struct Memory {
        pub input: VecDeque<u8>,
        /// The peer has closed: once `input` is read, reads return 0.
        pub eof: bool,
        pub chunk: usize,
        pub output: Vec<u8>,
        pub room: usize,
        /// How many reads were made, `WouldBlock`s included.
        pub reads: usize,
    }

    impl Memory {
        pub fn new(input: &[u8]) -> Self {
            Memory {
                input: input.iter().copied().collect(),
                eof: false,
                chunk: usize::MAX,
                output: Vec::new(),
                room: usize::MAX,
                reads: 0,
            }
        }

        pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.input.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.chunk).min(self.input.len());
            for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }

        pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.output.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
    }
}
