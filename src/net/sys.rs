//! The one place where the socket layer calls libc itself, as mio keeps its
//! `syscall!` in `src/sys/unix/mod.rs`: every call here turns `-1` into the
//! `errno` error through [`syscall!`], and each `unsafe` says why it is sound.
//! Everything socket2 wraps safely goes through socket2 instead.
//!
//! Calls that live here: `setsockopt(SO_RXQ_OVFL)` (socket2 has no wrapper),
//! `ioctl(FIONREAD)`, `getrlimit`/`setrlimit(RLIMIT_NOFILE)` and `recvmmsg`.

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
