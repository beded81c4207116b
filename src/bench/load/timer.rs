//! A timerfd in the poller: `epoll_wait` timeouts are whole milliseconds, too coarse
//! to pace thousands of messages a second (every message would leave up to 1 ms
//! late, and be charged for it). A timerfd wakes the loop to the microsecond.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

/// A one-shot monotonic timer registered in a `mio::Poll`.
#[derive(Debug)]
pub(super) struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// Registers the timer in `poll` under `token`.
    pub(super) fn new(poll: &Poll, token: Token) -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Fires once, `after` from now (at least 1 µs: zero would disarm it).
    pub(super) fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: the descriptor is a live timerfd; `spec` is a live local that the
        // call only reads; the old value is not asked for (null).
        unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    /// Consumes an expiry, so the next one is a new edge.
    pub(super) fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer of 8 bytes.
        unsafe {
            libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8);
        }
    }
}
