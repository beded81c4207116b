//! The socket layer: every socket call and socket option lives here, as small safe
//! functions over socket2 that return errors naming the action and the address.
//! These keep the teaching project's names: `stream_socket`, `datagram_socket`,
//! `bind`, `listen`, `accept`, `connect`, `send_message`, `sendto`, `recvfrom`.
//! The server reads UDP in batches through [`mmsg::RecvBatch`] (`recvmmsg`). The few
//! calls socket2 does not wrap go through [`sys`], the one place for raw syscalls.

pub mod activation;
pub mod fdlimit;
pub mod filter;
pub mod listen;
pub mod mmsg;
pub mod proxy;
pub mod sys;
pub mod unix;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// A socket call that failed, with what was being done and to which address.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {}", describe(.source))]
    Listen { addr: String, source: io::Error },
    #[error("cannot connect to {addr}: {}", describe(.source))]
    Connect { addr: String, source: io::Error },
    #[error("cannot resolve {addr}: {}", describe(.source))]
    Resolve { addr: String, source: io::Error },
}

pub use crate::error::describe;

/// A TCP socket for `addr`'s family. Like every socket made here it is close-on-exec
/// (socket2 passes `SOCK_CLOEXEC`).
pub fn stream_socket(addr: &SocketAddr) -> io::Result<Socket> {
    Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
}

/// A UDP socket for `addr`'s family.
pub fn datagram_socket(addr: &SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))
}

/// Binds `socket` to `addr`. `[::]` is made dual-stack explicitly (IPv4 clients too),
/// whatever the system's `bindv6only` default.
pub fn bind(socket: &Socket, addr: &SocketAddr) -> io::Result<()> {
    if let SocketAddr::V6(v6) = addr {
        socket.set_only_v6(!v6.ip().is_unspecified())?;
    }
    socket.bind(&(*addr).into())
}

/// Starts listening with room for `backlog` connections waiting to be accepted.
pub fn listen(socket: &Socket, backlog: i32) -> io::Result<()> {
    socket.listen(backlog)
}

/// Accepts one connection from a non-blocking listener: the new socket is
/// non-blocking and close-on-exec (`accept4`), with Nagle off for echo replies.
pub fn accept(listener: &mio::net::TcpListener) -> io::Result<(mio::net::TcpStream, SocketAddr)> {
    // TCP_NODELAY comes from the listener (see [`set_listener_nodelay`]).
    listener.accept()
}

/// Sets TCP_NODELAY on a listener: Linux copies it to every connection accepted
/// from it, which saves a `setsockopt` per connection. Replies are written whole
/// per turn; Nagle would only delay them.
pub fn set_listener_nodelay(listener: &socket2::Socket) -> io::Result<()> {
    listener.set_tcp_nodelay(true)
}

/// Connects to `addr` (a name is resolved; each address is tried in turn) within
/// `timeout`.
pub fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, NetError> {
    let mut last = None;
    for target in resolve(addr)? {
        let attempt = stream_socket(&target).and_then(|socket| {
            socket.connect_timeout(&target.into(), timeout)?;
            socket.set_tcp_nodelay(true)?;
            Ok(TcpStream::from(socket))
        });
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(NetError::Connect {
        addr: addr.to_string(),
        source: last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found")),
    })
}

/// A UDP socket connected to `addr`, so replies from anyone else are ignored.
pub fn connect_datagram(addr: &str) -> Result<UdpSocket, NetError> {
    let mut last = None;
    for target in resolve(addr)? {
        let local: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(target)
        } else {
            "[::]:0".parse().unwrap_or(target)
        };
        let attempt = datagram_socket(&target).and_then(|socket| {
            socket.bind(&local.into())?;
            socket.connect(&target.into())?;
            Ok(UdpSocket::from(socket))
        });
        match attempt {
            Ok(socket) => return Ok(socket),
            Err(err) => last = Some(err),
        }
    }
    Err(NetError::Connect {
        addr: addr.to_string(),
        source: last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found")),
    })
}

/// Resolves `host:port` (or an IP literal) to its addresses.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, NetError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|source| NetError::Resolve {
            addr: addr.to_string(),
            source,
        })
}

/// Writes one already-framed message whole.
pub fn send_message<W: Write>(stream: &mut W, framed: &[u8]) -> io::Result<()> {
    stream.write_all(framed)
}

/// Sends one datagram to `peer`; `WouldBlock` means the socket buffer is full.
pub fn sendto(
    socket: &mio::net::UdpSocket,
    datagram: &[u8],
    peer: SocketAddr,
) -> io::Result<usize> {
    socket.send_to(datagram, peer)
}

/// Receives one datagram into `buf`: its length and source. A datagram longer than
/// `buf` is cut to it (the caller sizes `buf` one past the largest message it accepts,
/// so a cut datagram is seen as oversize).
pub fn recvfrom(socket: &mio::net::UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    socket.recv_from(buf)
}

/// Asks the kernel to attach its drop count to received datagrams (SO_RXQ_OVFL);
/// [`mmsg::RecvBatch`] reports it with each datagram.
pub fn enable_drop_count<S: std::os::fd::AsFd>(socket: &S) -> io::Result<()> {
    sys::setsockopt_int(socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// Sets SO_RCVBUF (`--recv-buffer`). The kernel doubles the value for its own
/// bookkeeping and caps it at `net.core.rmem_max`.
pub fn set_recv_buffer<S: std::os::fd::AsFd>(socket: &S, bytes: usize) -> io::Result<()> {
    socket2::SockRef::from(socket).set_recv_buffer_size(bytes)
}

/// Turns on TCP keepalive (`--keepalive`): probes start after `idle` of silence and
/// repeat at the same interval, so a peer that vanished is noticed.
pub fn set_keepalive<S: std::os::fd::AsFd>(socket: &S, idle: Duration) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle);
    socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

/// How many bytes the kernel holds unread for `stream` (FIONREAD): what a drain
/// at shutdown still has to read.
pub fn pending_bytes<S: std::os::fd::AsRawFd>(stream: &S) -> io::Result<usize> {
    sys::unread_bytes(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_lowercase_clause() {
        let err = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(describe(&err), "address already in use");
        let e = NetError::Listen {
            addr: "127.0.0.1:8080".into(),
            source: err,
        };
        assert_eq!(
            e.to_string(),
            "cannot listen on 127.0.0.1:8080: address already in use"
        );
    }
}
