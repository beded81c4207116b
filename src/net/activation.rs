//! Socket activation: the sockets systemd (or `systemd-socket-activate`) passes as
//! descriptors 3, 4, … with `LISTEN_FDS`/`LISTEN_PID` (sd_listen_fds(3)), told
//! apart by their type and family (`SO_TYPE`, `SO_DOMAIN`, `SO_ACCEPTCONN`) rather
//! than trusted to match `--listen`. Each is made non-blocking and close-on-exec.
//!
//! In: the environment. Out: [`Activated`] sockets, one kind each, which the server
//! serves instead of binding `--listen`; `None` when the variables do not name this
//! process (they were meant for a parent, or are absent).

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// One passed socket, by what it is.
#[derive(Debug)]
pub enum Activated {
    /// A listening TCP socket.
    Tcp(TcpListener),
    /// A bound UDP socket.
    Udp(UdpSocket),
    /// A Unix socket (stream or datagram), left as it came: served once Unix
    /// listeners are (the server says so until then).
    Unix { fd: RawFd, socket: Socket },
}

/// Why the passed sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("LISTEN_FDS={0:?} is not a number of descriptors")]
    Count(String),
    #[error("descriptor {fd} passed by LISTEN_FDS is {what}")]
    Unusable { fd: RawFd, what: String },
}

/// The sockets passed to this process, or `None` when `LISTEN_PID`/`LISTEN_FDS` do
/// not name it. Takes ownership of descriptors 3 … 3+n-1: call once.
pub fn listen_fds() -> Result<Option<Vec<Activated>>, ActivationError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| ActivationError::Count(count.clone()))?;
    let mut sockets = Vec::with_capacity(n as usize);
    for fd in FIRST_FD..FIRST_FD + n {
        sockets.push(take(fd)?);
    }
    Ok(Some(sockets))
}

/// Takes descriptor `fd` and tells what kind of socket it is.
fn take(fd: RawFd) -> Result<Activated, ActivationError> {
    let unusable = |what: String| ActivationError::Unusable { fd, what };
    // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open; it touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(unusable("not open".into()));
    }
    // SAFETY: `fd` is open (checked above) and, by the sd_listen_fds protocol that
    // LISTEN_PID confirmed is meant for this process, ours alone: nothing else in
    // the process opened or owns it, and `listen_fds` takes each descriptor once.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let describe = |err: io::Error| unusable(format!("not a socket ({})", super::describe(&err)));
    let kind = socket.r#type().map_err(describe)?;
    let domain = socket.domain().map_err(describe)?;
    socket
        .set_cloexec(true)
        .and_then(|()| socket.set_nonblocking(true))
        .map_err(|err| unusable(format!("unusable ({})", super::describe(&err))))?;
    if domain == Domain::UNIX {
        return Ok(Activated::Unix { fd, socket });
    }
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(unusable("neither an IP nor a Unix socket".into()));
    }
    if kind == Type::STREAM {
        if !socket.is_listener().unwrap_or(false) {
            return Err(unusable("a TCP socket that is not listening".into()));
        }
        super::set_listener_nodelay(&socket)
            .map_err(|err| unusable(format!("unusable ({})", super::describe(&err))))?;
        Ok(Activated::Tcp(socket.into()))
    } else if kind == Type::DGRAM {
        // The kernel's drop count, as for the sockets the server binds itself.
        let _ = super::enable_drop_count(&socket);
        Ok(Activated::Udp(socket.into()))
    } else {
        Err(unusable("neither a stream nor a datagram socket".into()))
    }
}

impl Activated {
    /// The `listening …` line for this socket.
    pub fn announcement(&self) -> String {
        let addr = |local: io::Result<SocketAddr>| {
            local.map_or_else(|_| "?".to_string(), |a| a.to_string())
        };
        match self {
            Activated::Tcp(l) => format!("listening tcp {}", addr(l.local_addr())),
            Activated::Udp(s) => format!("listening udp {}", addr(s.local_addr())),
            Activated::Unix { socket, .. } => {
                let stream = socket.r#type().is_ok_and(|t| t == Type::STREAM);
                let path = socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_else(|| "?".into());
                let proto = if stream { "unix" } else { "unixgram" };
                format!("listening {proto} {path}")
            }
        }
    }
}
