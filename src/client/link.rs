//! What the client talks over: a TCP or Unix stream, a UDP or Unix datagram
//! socket. The session reads and writes through these and never learns which one
//! it has. `-s unix:PATH` and `-s unixgram:PATH` pick the Unix ones; the scheme
//! decides, whatever `-u` says.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixDatagram, UnixStream};
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use super::tls::{TlsLink, TlsOptions, client_config, server_name};
use crate::net::unix::{UnixKind, UnixPath};
use crate::net::{self, NetError};

/// A connected stream.
#[derive(Debug)]
pub enum Link {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over one of the others.
    Tls(TlsLink),
}

impl Link {
    /// Connects to `server`: `unix:PATH`, or a TCP address (within `timeout`).
    pub fn connect(server: &str, timeout: std::time::Duration) -> Result<Link, NetError> {
        match UnixPath::parse(server) {
            Some(Ok(UnixPath {
                kind: UnixKind::Stream,
                path,
            })) => UnixStream::connect(&path)
                .map(Link::Unix)
                .map_err(|source| connect_error(server, source)),
            Some(Ok(_)) => Err(connect_error(
                server,
                io::Error::other("a datagram socket: use it without a stream"),
            )),
            Some(Err(why)) => Err(connect_error(server, io::Error::other(why))),
            None => net::connect(server, timeout).map(Link::Tcp),
        }
    }

    /// Connects as [`Link::connect`] does, then, with `tls`, does the handshake.
    pub fn open(
        server: &str,
        timeout: Duration,
        tls: Option<&TlsOptions>,
    ) -> Result<Link, NetError> {
        let Some(options) = tls else {
            return Link::connect(server, timeout);
        };
        // The files first: one that does not load is the error, not the connection.
        let fail = |why: String| connect_error(server, io::Error::other(why));
        let config = client_config(options).map_err(fail)?;
        let name = server_name(options, server).map_err(fail)?;
        let link = Link::connect(server, timeout)?;
        TlsLink::handshake(config, name, link, timeout)
            .map(Link::Tls)
            .map_err(|source| connect_error(server, source))
    }

    pub fn try_clone(&self) -> io::Result<Link> {
        match self {
            Link::Tcp(s) => s.try_clone().map(Link::Tcp),
            Link::Unix(s) => s.try_clone().map(Link::Unix),
            Link::Tls(s) => s.try_clone().map(Link::Tls),
        }
    }

    /// Ends our side of the stream: the server sees end of stream.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Link::Tcp(s) => s.shutdown(Shutdown::Write),
            Link::Unix(s) => s.shutdown(Shutdown::Write),
            Link::Tls(s) => s.shutdown_write(),
        }
    }

    /// Read and write timeouts (the handshake's), or none.
    pub fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Link::Tcp(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
            Link::Unix(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
            Link::Tls(_) => Ok(()),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.read(buf),
            Link::Unix(s) => s.read(buf),
            Link::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.write(buf),
            Link::Unix(s) => s.write(buf),
            Link::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Tcp(s) => s.flush(),
            Link::Unix(s) => s.flush(),
            Link::Tls(s) => s.flush(),
        }
    }
}

/// A connected datagram socket.
#[derive(Debug)]
pub enum DatagramLink {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DatagramLink {
    /// Whether `server` names a Unix datagram socket (`unixgram:PATH`).
    pub fn is_unixgram(server: &str) -> bool {
        matches!(
            UnixPath::parse(server),
            Some(Ok(UnixPath {
                kind: UnixKind::Datagram,
                ..
            }))
        )
    }

    /// Connects to `server`: `unixgram:PATH`, or a UDP address. A Unix datagram
    /// socket is bound to an abstract address of its own, so echo replies can
    /// come back to it.
    pub fn connect(server: &str) -> Result<DatagramLink, NetError> {
        match UnixPath::parse(server) {
            Some(Ok(UnixPath {
                kind: UnixKind::Datagram,
                path,
            })) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!("sockpool-client-{}-{nanos}", std::process::id());
                UnixSocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|local| UnixDatagram::bind_addr(&local))
                    .and_then(|socket| socket.connect(&path).map(|()| socket))
                    .map(DatagramLink::Unix)
                    .map_err(|source| connect_error(server, source))
            }
            Some(Ok(_)) => Err(connect_error(
                server,
                io::Error::other("a stream socket: use it without -u"),
            )),
            Some(Err(why)) => Err(connect_error(server, io::Error::other(why))),
            None => net::connect_datagram(server).map(DatagramLink::Udp),
        }
    }

    pub fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            DatagramLink::Udp(s) => s.send(bytes),
            DatagramLink::Unix(s) => s.send(bytes),
        }
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramLink::Udp(s) => s.recv(buf),
            DatagramLink::Unix(s) => s.recv(buf),
        }
    }
}

fn connect_error(server: &str, source: io::Error) -> NetError {
    NetError::Connect {
        addr: server.to_string(),
        source,
    }
}
