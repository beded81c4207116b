//! What a bench connection streams over: TCP, or a Unix stream socket
//! (`-s unix:PATH`). Both are non-blocking mio sockets, watched by the load
//! thread's poll; the load code never learns which one it has.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// Where the bench connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    /// A Unix stream socket's path.
    Unix(PathBuf),
}

/// A connection's socket.
#[derive(Debug)]
pub enum BenchStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl BenchStream {
    /// Starts connecting without waiting.
    pub fn connect(target: &Target) -> io::Result<BenchStream> {
        match target {
            Target::Ip(addr) => TcpStream::connect(*addr).map(BenchStream::Tcp),
            Target::Unix(path) => UnixStream::connect(path).map(BenchStream::Unix),
        }
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            BenchStream::Tcp(s) => s.take_error(),
            BenchStream::Unix(s) => s.take_error(),
        }
    }

    /// Whether the connect has completed (an error if it failed).
    pub fn connected(&self) -> io::Result<bool> {
        let peer = match self {
            BenchStream::Tcp(s) => s.peer_addr().map(drop),
            BenchStream::Unix(s) => s.peer_addr().map(drop),
        };
        match peer {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Nagle off, on TCP.
    pub fn set_nodelay(&self) {
        if let BenchStream::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.shutdown(Shutdown::Write),
            BenchStream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for BenchStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BenchStream::Tcp(s) => s.read(buf),
            BenchStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for BenchStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BenchStream::Tcp(s) => s.write(buf),
            BenchStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for BenchStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.register(registry, token, interest),
            BenchStream::Unix(s) => s.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.reregister(registry, token, interest),
            BenchStream::Unix(s) => s.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            BenchStream::Tcp(s) => s.deregister(registry),
            BenchStream::Unix(s) => s.deregister(registry),
        }
    }
}
