//! The accept loop: waits for readiness on the TCP listeners, accepts until
//! `WouldBlock`, and hands each connection to the next worker (round robin).
//!
//! Accept errors never end the loop. When descriptors run out (EMFILE/ENFILE) the
//! pending connections cannot be taken, and with edge-triggered readiness no new
//! event would come for them: the loop retries after a short pause instead of
//! spinning (memcached's `accept_new_conns(false)`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use crate::message::ConnId;

use super::pool::ThreadPool;
use super::stats::Counters;
use super::worker::Job;

/// Wakes the acceptor to stop.
pub const STOP: Token = Token(usize::MAX - 1);
/// How long to wait before accepting again when out of descriptors.
const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// The listeners and their poll.
#[derive(Debug)]
pub struct Acceptor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    next_id: ConnId,
    next_worker: usize,
    /// Out of descriptors: accept again at this time.
    retry_at: Option<Instant>,
    last_warning: Option<Instant>,
}

impl Acceptor {
    /// Registers the listeners; the waker stops [`Acceptor::run`].
    pub fn new(listeners: Vec<std::net::TcpListener>) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
        let mut registered = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut listener = TcpListener::from_std(listener);
            poll.registry()
                .register(&mut listener, Token(i), Interest::READABLE)?;
            registered.push(listener);
        }
        Ok((
            Acceptor {
                poll,
                listeners: registered,
                next_id: 1,
                next_worker: 0,
                retry_at: None,
                last_warning: None,
            },
            waker,
        ))
    }

    /// Accepts until `stop` is set (and the waker woken). The listeners close when
    /// the acceptor is dropped.
    pub fn run(
        &mut self,
        pool: &ThreadPool,
        counters: &Counters,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut woken = vec![false; pool.size()];
        loop {
            let timeout = self
                .retry_at
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let retry = self.retry_at.is_some_and(|at| Instant::now() >= at);
            if retry {
                self.retry_at = None;
            }
            for i in 0..self.listeners.len() {
                let ready = retry || events.iter().any(|e| e.token() == Token(i));
                if ready {
                    self.accept_all(i, pool, counters, &mut woken);
                }
            }
            for (index, flag) in woken.iter_mut().enumerate() {
                if std::mem::take(flag) {
                    pool.wake(index);
                }
            }
        }
    }

    /// The teaching project's `accept`, until the listener has no more.
    fn accept_all(&mut self, i: usize, pool: &ThreadPool, counters: &Counters, woken: &mut [bool]) {
        let Some(listener) = self.listeners.get(i) else {
            return;
        };
        loop {
            match crate::net::accept(listener) {
                Ok((stream, peer)) => {
                    counters.accepted();
                    let id = self.next_id;
                    self.next_id += 1;
                    let worker = self.next_worker;
                    self.next_worker = (worker + 1) % pool.size();
                    pool.push(worker, Job::Accept { stream, peer, id });
                    if let Some(flag) = woken.get_mut(worker) {
                        *flag = true;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_transient(&err) => {
                    debug!("accept: {}", crate::net::describe(&err));
                }
                Err(err) => {
                    // Out of descriptors or memory: pause, then try again.
                    let now = Instant::now();
                    if self
                        .last_warning
                        .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
                    {
                        warn!(
                            "cannot accept connections: {}; retrying",
                            crate::net::describe(&err)
                        );
                        self.last_warning = Some(now);
                    }
                    self.retry_at = Some(now + EMFILE_PAUSE);
                    return;
                }
            }
        }
    }
}

/// Errors that concern only the one connection being accepted.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM | libc::ECONNRESET)
    )
}
