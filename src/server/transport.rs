//! What carries a connection's bytes under `handle_tcp`: a plain TCP socket today,
//! a Unix stream or TLS over either tomorrow. A transport reads and writes the
//! application's bytes and says what it needs from the socket; framing, modes and
//! output never learn which one carries them.
//!
//! An enum rather than a trait object: the read path pays one predictable branch
//! per read (a read carries thousands of messages), never a virtual call per
//! message, and each variant's calls inline.

use std::io::{self, Read, Write};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::message::Proto;

use super::tls::stream::TlsStream;

/// An accepted socket, as its worker adopts it.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// What the kernel holds unread for it (FIONREAD).
    pub fn pending_bytes(&self) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => crate::net::pending_bytes(stream),
            Stream::Unix(stream) => crate::net::pending_bytes(stream),
        }
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Stream::Tcp(stream) => registry.register(stream, token, interest),
            Stream::Unix(stream) => registry.register(stream, token, interest),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write_vectored(bufs),
            Stream::Unix(stream) => stream.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's byte carrier.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over TCP or a Unix stream (boxed: rustls's state is large, and plain
    /// connections should not pay for it).
    Tls(Box<TlsStream>),
    /// Bytes in memory: `handle_tcp` and the broker are unit-tested over it.
    #[cfg(test)]
    Memory(memory::Memory),
}

/// What a transport needs from its socket besides what the application asks for.
/// Plain sockets need nothing of their own; a TLS handshake wants both directions,
/// TLS records it has queued want writing, and a TLS stream wants reading again
/// without a new edge after a short read that did not empty the socket (its
/// receive filled the room the records left), or once it has seen its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    pub read: bool,
    pub write: bool,
}

impl Transport {
    /// The stream as it is, without TLS.
    pub fn plain(stream: Stream) -> Self {
        match stream {
            Stream::Tcp(stream) => Transport::Tcp(stream),
            Stream::Unix(stream) => Transport::Unix(stream),
        }
    }

    /// TLS over `stream` with `config`.
    pub fn tls(config: std::sync::Arc<rustls::ServerConfig>, stream: Stream) -> io::Result<Self> {
        TlsStream::new(config, stream).map(|tls| Transport::Tls(Box::new(tls)))
    }

    /// What its messages are printed as: TLS over a Unix socket stays `unix`.
    pub fn proto(&self) -> Proto {
        match self {
            Transport::Tcp(_) => Proto::Tcp,
            Transport::Unix(_) => Proto::Unix,
            Transport::Tls(tls) => match tls.socket_ref() {
                Stream::Tcp(_) => Proto::Tls,
                Stream::Unix(_) => Proto::Unix,
            },
            #[cfg(test)]
            Transport::Memory(_) => Proto::Tcp,
        }
    }

    /// Reads the application's bytes; `Ok(0)` is the end of the stream and
    /// `WouldBlock` means nothing is there for now.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => stream.read(buf),
            Transport::Unix(stream) => stream.read(buf),
            Transport::Tls(tls) => tls.read(buf),
            #[cfg(test)]
            Transport::Memory(memory) => memory.read(buf),
        }
    }

    /// Writes the application's bytes, as much as fits now.
    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => stream.write(buf),
            Transport::Unix(stream) => stream.write(buf),
            Transport::Tls(tls) => tls.write(buf),
            #[cfg(test)]
            Transport::Memory(memory) => memory.write(buf),
        }
    }

    /// What the transport itself still needs (see [`Wants`]).
    #[inline]
    pub fn wants(&self) -> Wants {
        match self {
            Transport::Tcp(_) | Transport::Unix(_) => Wants::default(),
            Transport::Tls(tls) => Wants {
                read: tls.is_handshaking() || tls.wants_read(),
                write: tls.wants_write(),
            },
            #[cfg(test)]
            Transport::Memory(_) => Wants::default(),
        }
    }

    /// Writes what the transport itself has queued (see [`Wants::write`]);
    /// `WouldBlock` when the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) | Transport::Unix(_) => Ok(()),
            Transport::Tls(tls) => tls.flush(),
            #[cfg(test)]
            Transport::Memory(_) => Ok(()),
        }
    }

    /// Whether a TLS handshake is still under way: the application's bytes wait
    /// in the outbox until it is done.
    #[inline]
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Tls(tls) => tls.is_handshaking(),
            _ => false,
        }
    }

    /// Once, after a TLS handshake with a client certificate: its subject.
    #[inline]
    pub fn take_client_subject(&mut self) -> Option<String> {
        match self {
            Transport::Tls(tls) => tls.take_client_subject(),
            _ => None,
        }
    }

    /// The socket itself, below any TLS: what a PROXY header is read from, since
    /// it comes before the handshake. `None` for streams that carry no header.
    pub fn raw_stream(&mut self) -> Option<&mut dyn Read> {
        match self {
            Transport::Tcp(stream) => Some(stream),
            Transport::Tls(tls) => Some(tls.socket()),
            _ => None,
        }
    }

    /// An event said the peer closed: TLS then reads on past short receives that
    /// held no plaintext, since no further edge will report the end.
    #[inline]
    pub fn set_hung_up(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.set_hung_up();
        }
    }

    /// Why a TLS handshake failed, if one did.
    pub fn tls_failure(&self) -> Option<&(super::tls::TlsFailure, String)> {
        match self {
            Transport::Tls(tls) => tls.failure(),
            _ => None,
        }
    }

    /// Watches the socket in both directions, edge-triggered, once for its life.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Transport::Tcp(stream) => registry.register(stream, token, interest),
            Transport::Unix(stream) => registry.register(stream, token, interest),
            Transport::Tls(tls) => tls.socket().register(registry, token),
            #[cfg(test)]
            Transport::Memory(_) => Ok(()),
        }
    }

    /// The application bytes that can be read without waiting: what a drain at
    /// shutdown still has to read.
    pub fn pending_bytes(&self) -> io::Result<usize> {
        match self {
            Transport::Tcp(stream) => crate::net::pending_bytes(stream),
            Transport::Unix(stream) => crate::net::pending_bytes(stream),
            Transport::Tls(tls) => tls.pending_bytes(),
            #[cfg(test)]
            Transport::Memory(memory) => Ok(memory.input.len()),
        }
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

    /// As a socket under TLS.
    impl io::Read for Memory {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Memory::read(self, buf)
        }
    }

    impl io::Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Memory::write(self, buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
