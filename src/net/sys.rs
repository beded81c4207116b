//! The one place where the socket layer calls libc itself, as mio keeps its
//! `syscall!` in `src/sys/unix/mod.rs`: every call here turns `-1` into the
//! `errno` error through [`syscall!`], and each `unsafe` says why it is sound.
//! Everything socket2 wraps safely goes through socket2 instead.
//!
//! Calls that live here: `setsockopt(SO_RXQ_OVFL)` (socket2 has no wrapper),
//! `ioctl(FIONREAD)`, `getrlimit`/`setrlimit(RLIMIT_NOFILE)`, `recvmmsg`,
//! `epoll_ctl` for a listener shared with `EPOLLEXCLUSIVE` (mio has no such
//! interest), and for Unix sockets `getsockopt(SO_PEERCRED)` and `recvmsg` with
//! SCM_CREDENTIALS.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Runs a libc call and turns its `-1` into [`io::Error::last_os_error`].
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)? ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: each caller states why the arguments of its call are valid.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Sets an `int` socket option.
pub fn setsockopt_int<S: AsFd>(
    socket: &S,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option value is one c_int in a live local, and `len` is its size;
    // the descriptor is borrowed from `socket` for the call.
    syscall!(setsockopt(
        socket.as_fd().as_raw_fd(),
        level,
        name,
        std::ptr::from_ref(&value).cast(),
        len,
    ))
    .map(drop)
}

/// The bytes the kernel holds unread for a socket (`FIONREAD`).
pub fn unread_bytes<S: AsRawFd>(socket: &S) -> io::Result<usize> {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live
    // local; the descriptor is owned by `socket` for the duration of the call.
    syscall!(ioctl(
        socket.as_raw_fd(),
        libc::FIONREAD,
        std::ptr::from_mut(&mut pending),
    ))?;
    Ok(usize::try_from(pending).unwrap_or(0))
}

/// The soft and hard RLIMIT_NOFILE.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through the pointer, which points to a
    // live local.
    syscall!(getrlimit(
        libc::RLIMIT_NOFILE,
        std::ptr::from_mut(&mut limit)
    ))?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft RLIMIT_NOFILE (the hard one stays).
pub fn set_nofile_soft(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the rlimit the pointer points to, a live local.
    syscall!(setrlimit(libc::RLIMIT_NOFILE, std::ptr::from_ref(&limit))).map(drop)
}

/// One non-blocking `recvmmsg` into `headers`, with `flags` besides `MSG_DONTWAIT`;
/// returns how many messages the kernel filled (at most `headers.len()`).
///
/// # Safety
///
/// Every header must point at an iovec, name and control buffer that are live,
/// writable and as long as the header says, and that nothing else touches during
/// the call.
pub unsafe fn recvmmsg<S: AsFd>(
    socket: &S,
    headers: &mut [libc::mmsghdr],
    flags: libc::c_int,
) -> io::Result<usize> {
    let want = libc::c_uint::try_from(headers.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the caller vouches for the buffers each header points at; `want` is
    // at most the number of headers; MSG_DONTWAIT makes the call return at once,
    // so no timeout (null) is needed.
    let n = syscall!(recvmmsg(
        socket.as_fd().as_raw_fd(),
        headers.as_mut_ptr(),
        want,
        libc::MSG_DONTWAIT | flags,
        std::ptr::null_mut(),
    ))?;
    // Anything but -1 is a count no larger than `want`.
    Ok(usize::try_from(n).unwrap_or(0).min(headers.len()))
}

/// Adds `fd` to the epoll instance `epoll` (a `mio::Poll`'s descriptor) for
/// reading, level-triggered (mio registers edge-triggered only), and with
/// `exclusive`, `EPOLLEXCLUSIVE`: when several epoll instances watch the same
/// listener, a new connection wakes one of those waiting, not all. The event
/// carries `token` as mio's own registrations do, so mio reports it as that
/// `Token`.
pub fn epoll_add_level<E: AsRawFd, S: AsRawFd>(
    epoll: &E,
    fd: &S,
    token: usize,
    exclusive: bool,
) -> io::Result<()> {
    let flags = if exclusive {
        libc::EPOLLIN | libc::EPOLLEXCLUSIVE
    } else {
        libc::EPOLLIN
    };
    let mut event = libc::epoll_event {
        events: flags as u32,
        u64: token as u64,
    };
    // SAFETY: epoll_ctl reads one epoll_event through the pointer, a live local;
    // both descriptors are borrowed for the call.
    syscall!(epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        fd.as_raw_fd(),
        std::ptr::from_mut(&mut event),
    ))
    .map(drop)
}

/// Removes `fd` from the epoll instance `epoll` (what [`epoll_add_level`] added).
pub fn epoll_delete<E: AsRawFd, S: AsRawFd>(epoll: &E, fd: &S) -> io::Result<()> {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since Linux
    // 2.6.9); both descriptors are borrowed for the call.
    syscall!(epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_DEL,
        fd.as_raw_fd(),
        std::ptr::null_mut(),
    ))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_come_from_errno() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = setsockopt_int(&socket, libc::SOL_SOCKET, -1, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOPROTOOPT));
        setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).unwrap();
        assert_eq!(unread_bytes(&socket).unwrap(), 0);
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft <= hard);
    }
}

/// The pid and uid of a Unix stream's peer (SO_PEERCRED).
pub fn peer_credentials<S: AsFd>(socket: &S) -> io::Result<(i32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes (one ucred) through the pointer,
    // which points to a live local of that size; `len` is a live local too.
    syscall!(getsockopt(
        socket.as_fd().as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        std::ptr::from_mut(&mut cred).cast(),
        std::ptr::from_mut(&mut len),
    ))?;
    Ok((cred.pid, cred.uid))
}

/// Room for one SCM_CREDENTIALS control message, as `u64`s so that it is aligned
/// for a `cmsghdr`.
pub fn credentials_space() -> Vec<u64> {
    // SAFETY: CMSG_SPACE only computes a size.
    let bytes = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32) } as usize;
    vec![0; bytes.div_ceil(8)]
}

/// What one `recvmsg` on a Unix datagram socket gave.
#[derive(Debug)]
pub struct Received {
    /// The datagram's full size (more than the buffer when `truncated`).
    pub size: usize,
    pub truncated: bool,
    /// The sender's pid and uid (SCM_CREDENTIALS), when they came.
    pub credentials: Option<(i32, u32)>,
}

/// Receives one datagram without waiting, with the sender's credentials (the
/// socket has SO_PASSCRED) and address; `cmsg` is from [`credentials_space`].
pub fn recv_with_credentials<S: AsRawFd>(
    socket: &S,
    buf: &mut [u8],
    cmsg: &mut [u64],
) -> io::Result<(Received, socket2::SockAddr)> {
    let fd = socket.as_raw_fd();
    // SAFETY: `try_init` hands a zeroed address storage and its length; the
    // msghdr below points at it, at `buf` and at `cmsg`, all live for the call,
    // with their true sizes, and recvmsg writes within them. The control messages
    // are walked with the CMSG_* macros over the msghdr recvmsg filled, and one is
    // read as a ucred only when its type and length say it is one.
    unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(cmsg);
            let n = syscall!(recvmsg(
                fd,
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC
            ))?;
            *len = msg.msg_namelen;
            let mut credentials = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET
                    && (*c).cmsg_type == libc::SCM_CREDENTIALS
                    && (*c).cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as usize
                {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    credentials = Some((cred.pid, cred.uid));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            Ok(Received {
                size: usize::try_from(n).unwrap_or(0),
                truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
                credentials,
            })
        })
    }
}
