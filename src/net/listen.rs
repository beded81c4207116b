//! Binds every `--listen` address for TCP and UDP and announces each socket with the
//! line tests and scripts wait for: `listening tcp ADDR` / `listening udp ADDR`.
//!
//! UDP gets one socket per worker on the same address (SO_REUSEPORT): the kernel
//! spreads datagrams across workers by source, so one peer's datagrams stay on one
//! worker and in order, with no lock or hand-off between reading and handling.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use super::activation::Activated;
use super::{NetError, bind, datagram_socket, listen, stream_socket};

/// What to bind.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub addrs: Vec<SocketAddr>,
    pub tcp: bool,
    pub udp: bool,
    pub backlog: i32,
    /// UDP sockets per address (one per worker).
    pub udp_sockets: usize,
    /// `--recv-buffer`: SO_RCVBUF for the UDP sockets and the TCP listeners (accepted
    /// connections inherit it); `None` leaves the OS default.
    pub recv_buffer: Option<usize>,
    /// `--reuse-port`: bind with SO_REUSEPORT so other processes may share the
    /// address; without it a taken port is an error.
    pub reuse_port: bool,
}

/// The bound sockets, non-blocking and close-on-exec.
#[derive(Debug, Default)]
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    /// `udp[i]` holds the sockets for address `i`, one per worker.
    pub udp: Vec<Vec<UdpSocket>>,
}

impl Listeners {
    /// The sockets passed by socket activation, as listeners, each announced by its
    /// `listening …` line. A passed UDP socket is one socket, so one worker reads
    /// it. Returns the Unix sockets, announced too, for `net::unix` to make ready.
    pub fn from_activated(
        sockets: Vec<Activated>,
        mut announce: impl FnMut(&str),
    ) -> (Listeners, Vec<Activated>) {
        let mut out = Listeners::default();
        let mut rest = Vec::new();
        for socket in sockets {
            let line = socket.announcement();
            match socket {
                Activated::Tcp(listener) => {
                    announce(&line);
                    out.tcp.push(listener);
                }
                Activated::Udp(socket) => {
                    announce(&line);
                    out.udp.push(vec![socket]);
                }
                unix @ Activated::Unix { .. } => {
                    announce(&line);
                    rest.push(unix);
                }
            }
        }
        (out, rest)
    }
}

/// Binds everything or fails with the first address that could not be bound.
/// `announce` receives each `listening …` line as it becomes true.
pub fn bind_all(
    config: &ListenConfig,
    mut announce: impl FnMut(&str),
) -> Result<Listeners, NetError> {
    let mut out = Listeners::default();
    for addr in &config.addrs {
        let mut udp_addr = *addr;
        if config.tcp {
            let listener = tcp_listener(addr, config).map_err(|source| NetError::Listen {
                addr: addr.to_string(),
                source,
            })?;
            let local = listener.local_addr().map_err(|source| NetError::Listen {
                addr: addr.to_string(),
                source,
            })?;
            announce(&format!("listening tcp {local}"));
            // Port 0: serve UDP on the port TCP was given, when it is free for UDP too.
            if addr.port() == 0 {
                udp_addr.set_port(local.port());
            }
            out.tcp.push(listener);
        }
        if config.udp {
            let sockets = udp_sockets(&udp_addr, config)
                .or_else(|err| {
                    if udp_addr != *addr {
                        udp_sockets(addr, config)
                    } else {
                        Err(err)
                    }
                })
                .map_err(|source| NetError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
            if let Some(first) = sockets.first() {
                let local = first.local_addr().map_err(|source| NetError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
                announce(&format!("listening udp {local}"));
            }
            out.udp.push(sockets);
        }
    }
    Ok(out)
}

/// Whether Linux hands the connections queued on a closing listener to another
/// listener of its SO_REUSEPORT group (`net.ipv4.tcp_migrate_req`, Linux 5.14+)
/// rather than resetting them; `None` when the setting cannot be read.
pub fn migrates_queued_connections() -> Option<bool> {
    let value = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").ok()?;
    Some(value.trim() != "0")
}

fn tcp_listener(addr: &SocketAddr, config: &ListenConfig) -> std::io::Result<TcpListener> {
    let socket = stream_socket(addr)?;
    if let Some(bytes) = config.recv_buffer {
        // Set before listen(), so the window scale offered to clients allows it.
        super::set_recv_buffer(&socket, bytes)?;
    }
    // Restarting the server must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if config.reuse_port {
        // The kernel spreads new connections over every listener in the group.
        socket.set_reuse_port(true)?;
    }
    super::set_listener_nodelay(&socket)?;
    bind(&socket, addr)?;
    listen(&socket, config.backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn udp_sockets(addr: &SocketAddr, config: &ListenConfig) -> std::io::Result<Vec<UdpSocket>> {
    let count = config.udp_sockets;
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(count);
    // SO_REUSEPORT would let us join a group that another process of this user
    // already holds on the port, and share its datagrams without a word. Unless
    // sharing was asked for (`--reuse-port`), a plain bind first fails with
    // "address already in use" if anyone holds the port.
    let mut target = if config.reuse_port {
        *addr
    } else {
        let probe = datagram_socket(addr)?;
        bind(&probe, addr)?;
        probe.local_addr()?.as_socket().unwrap_or(*addr)
    };
    for _ in 0..count.max(1) {
        let socket = datagram_socket(&target)?;
        socket.set_reuse_port(true)?;
        if let Some(bytes) = config.recv_buffer {
            super::set_recv_buffer(&socket, bytes)?;
        }
        // Datagrams the kernel drops for want of room are counted and reported; a
        // kernel without SO_RXQ_OVFL only loses that report.
        let _ = super::enable_drop_count(&socket);
        bind(&socket, &target)?;
        socket.set_nonblocking(true)?;
        let socket: UdpSocket = socket.into();
        // The first socket fixes the port that the others share.
        target = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}
