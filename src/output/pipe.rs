//! When stdout is a pipe (`sockpool-server | consumer`), its kernel buffer is 64 KiB
//! by default: every batch fills it, and the writer and the reader take turns
//! sleeping. A larger buffer lets both run at once. Best effort: any failure leaves
//! the pipe as it was.

use std::os::fd::AsRawFd;

/// The buffer asked for; Linux lets an unprivileged process go up to
/// /proc/sys/fs/pipe-max-size (1 MiB by default).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Grows the buffer of `out` if it is a pipe; returns the size it now has.
pub fn grow<F: AsRawFd>(out: &F) -> Option<usize> {
    let fd = out.as_raw_fd();
    // SAFETY: fstat writes one stat struct we own; fcntl F_GETPIPE_SZ/F_SETPIPE_SZ
    // take and return plain integers. `fd` is borrowed from `out` for the call.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return None;
        }
        if libc::fcntl(fd, libc::F_GETPIPE_SZ) < PIPE_BYTES {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES);
        }
        usize::try_from(libc::fcntl(fd, libc::F_GETPIPE_SZ)).ok()
    }
}
