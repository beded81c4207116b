//! The accept loop: waits for readiness on the TCP listeners, accepts until
//! `WouldBlock`, applies `--allow`/`--deny`, `--max-connections` and `--max-per-ip`,
//! and hands each admitted connection to the next worker (round robin). A refused
//! connection is accepted and closed at once, before any read, counted by reason,
//! and warned about at most once a second per reason.
//!
//! Accept errors never end the loop. When descriptors run out (EMFILE/ENFILE) the
//! acceptor frees its spare descriptor, accepts one pending client with it and closes
//! that at once (libev's and nginx's trick), then takes the spare back; so clients
//! past the limit get a prompt close instead of hanging in the backlog, and the
//! listener's readiness is consumed, so nothing spins. When even the spare cannot be
//! had back, it pauses accepting briefly (memcached's `accept_new_conns(false)`)
//! rather than retrying in a loop; either way, accepting resumes as soon as
//! descriptors free up.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use crate::message::{ConnId, Peer};
use crate::net::fdlimit::SpareFd;
use crate::net::filter::{ConnLimits, Filter, Refusal};

use super::inbox::Job;
use super::pool::ThreadPool;
use super::stats::Counters;
use super::transport::Stream;

/// Wakes the acceptor to stop.
pub const STOP: Token = Token(usize::MAX - 1);
/// How long to wait before accepting again when out of descriptors.
const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// Warnings of one kind are written at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Who is admitted and how connections are set up.
#[derive(Debug)]
pub struct AcceptPolicy {
    pub filter: Filter,
    pub limits: Arc<ConnLimits>,
    /// `--keepalive`: TCP keepalive on accepted connections.
    pub keepalive: Option<Duration>,
    /// `--proxy-protocol`: the proxies that may connect (`--proxy-from`). The
    /// client's own checks wait for its header (`server::proxied`).
    pub proxy_from: Option<Filter>,
}

/// A warning written at most once per [`WARN_EVERY`], with how many were held back.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// Whether to write the warning now; if so, also how many were held back since.
    fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// A listening socket: TCP, or a Unix stream socket.
#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// The teaching project's `accept`: one connection, and its address when it
    /// has one (a Unix stream's peer has none).
    fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(listener) => {
                crate::net::accept(listener).map(|(stream, addr)| (Stream::Tcp(stream), Some(addr)))
            }
            // mio accepts with accept4(SOCK_NONBLOCK | SOCK_CLOEXEC).
            Listener::Unix(listener) => listener
                .accept()
                .map(|(stream, _)| (Stream::Unix(stream), None)),
        }
    }
}

/// How a connection's peer is shown: its address, or a Unix peer's credentials.
fn peer_of(stream: &Stream, addr: Option<SocketAddr>) -> Peer {
    match (addr, stream) {
        (Some(addr), _) => Peer::new(addr),
        (None, Stream::Unix(stream)) => Peer::local(&crate::net::unix::peer_credentials(stream)),
        (None, Stream::Tcp(_)) => Peer::local("-"),
    }
}

/// The listeners and their poll.
#[derive(Debug)]
pub struct Acceptor {
    poll: Poll,
    listeners: Vec<Listener>,
    policy: AcceptPolicy,
    next_id: ConnId,
    next_worker: usize,
    /// Out of descriptors and no spare: accept again at this time.
    retry_at: Option<Instant>,
    spare: SpareFd,
    out_of_fds: RateLimited,
    refusals: [RateLimited; Refusal::ALL.len()],
}

impl Acceptor {
    /// Registers the listeners; the waker stops [`Acceptor::run`].
    pub fn new(
        listeners: Vec<std::net::TcpListener>,
        unix: Vec<std::os::unix::net::UnixListener>,
        policy: AcceptPolicy,
    ) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
        let mut registered = Vec::with_capacity(listeners.len() + unix.len());
        for listener in listeners {
            registered.push(Listener::Tcp(TcpListener::from_std(listener)));
        }
        for listener in unix {
            registered.push(Listener::Unix(UnixListener::from_std(listener)));
        }
        for (i, listener) in registered.iter_mut().enumerate() {
            let registry = poll.registry();
            match listener {
                Listener::Tcp(l) => registry.register(l, Token(i), Interest::READABLE)?,
                Listener::Unix(l) => registry.register(l, Token(i), Interest::READABLE)?,
            }
        }
        Ok((
            Acceptor {
                poll,
                listeners: registered,
                policy,
                next_id: 1,
                next_worker: 0,
                retry_at: None,
                spare: SpareFd::new(),
                out_of_fds: RateLimited::default(),
                refusals: Default::default(),
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
                self.accept_backlog(pool, counters, &mut woken);
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

    /// At shutdown: accepts what the kernel queued on every listener (connections
    /// whose handshake completed before the signal) and hands it to the workers
    /// ahead of their drain job, so closing the listeners right after resets
    /// nothing that was waiting. See docs/deploy.md for what may still arrive
    /// between this pass and the close.
    fn accept_backlog(&mut self, pool: &ThreadPool, counters: &Counters, woken: &mut [bool]) {
        for i in 0..self.listeners.len() {
            self.accept_all(i, pool, counters, woken);
        }
        for (index, flag) in woken.iter_mut().enumerate() {
            if std::mem::take(flag) {
                pool.wake(index);
            }
        }
    }

    /// The teaching project's `accept`, until the listener has no more.
    fn accept_all(&mut self, i: usize, pool: &ThreadPool, counters: &Counters, woken: &mut [bool]) {
        loop {
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    if let Err(reason) = self.admit(addr) {
                        self.refuse(reason, &peer_of(&stream, addr), counters);
                        // Dropping the stream closes it unread.
                        drop(stream);
                        continue;
                    }
                    if let Some(idle) = self.policy.keepalive
                        && let Stream::Tcp(tcp) = &stream
                        && let Err(err) = crate::net::set_keepalive(tcp, idle)
                    {
                        debug!("cannot set keepalive: {}", crate::net::describe(&err));
                    }
                    let peer = peer_of(&stream, addr);
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
                    let now = Instant::now();
                    if let Some(suppressed) = self.out_of_fds.check(now) {
                        warn!(
                            "cannot accept connections: {}; closing new ones until descriptors free up{}",
                            crate::net::describe(&err),
                            held_back(suppressed)
                        );
                    }
                    match self.refuse_with_spare(i, counters) {
                        Spare::Refused => {}
                        Spare::Empty => return,
                        Spare::Unavailable => {
                            // No descriptor even for the spare: wait rather than spin.
                            self.retry_at = Some(now + EMFILE_PAUSE);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Out of descriptors: frees the spare, accepts one pending client with it and
    /// closes it at once, then takes the spare back.
    fn refuse_with_spare(&mut self, i: usize, counters: &Counters) -> Spare {
        if !self.spare.held() && !self.spare.reclaim() {
            return Spare::Unavailable;
        }
        self.spare.release();
        let accepted = self.listeners.get(i).map(Listener::accept);
        let outcome = match accepted {
            Some(Ok((stream, addr))) => {
                self.refuse(Refusal::NoDescriptors, &peer_of(&stream, addr), counters);
                drop(stream);
                Spare::Refused
            }
            // Linux reports EMFILE before looking at the queue: it may be empty.
            Some(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => Spare::Empty,
            Some(Err(err)) if is_transient(&err) => Spare::Refused,
            Some(Err(err)) => {
                debug!("accept with the spare: {}", crate::net::describe(&err));
                Spare::Unavailable
            }
            None => Spare::Empty,
        };
        if self.spare.reclaim() {
            outcome
        } else {
            Spare::Unavailable
        }
    }

    /// Checks the access lists and the limits; on success the connection is counted
    /// as open until its worker releases it.
    /// A connection with no address (a Unix stream) meets `--max-connections` only;
    /// with `--proxy-protocol` a TCP one meets `--proxy-from` here and its client's
    /// checks once the header names it (`server::proxied`).
    fn admit(&self, addr: Option<SocketAddr>) -> Result<(), Refusal> {
        let Some(addr) = addr else {
            return self.policy.limits.admit_unnamed();
        };
        if let Some(proxies) = &self.policy.proxy_from {
            if !proxies.permits(addr.ip()) {
                return Err(Refusal::Denied);
            }
            return self.policy.limits.admit_unnamed();
        }
        if !self.policy.filter.permits(addr.ip()) {
            return Err(Refusal::Denied);
        }
        self.policy.limits.admit(addr.ip())
    }

    fn refuse(&mut self, reason: Refusal, peer: &Peer, counters: &Counters) {
        counters.refused(reason);
        let Some(limit) = self.refusals.get_mut(reason as usize) else {
            return;
        };
        if let Some(suppressed) = limit.check(Instant::now()) {
            let why = match reason {
                Refusal::MaxConnections => format!(
                    "--max-connections {} reached",
                    self.policy.limits.max_connections
                ),
                Refusal::MaxPerIp => format!(
                    "--max-per-ip {} reached for {}",
                    self.policy.limits.max_per_ip.unwrap_or(0),
                    peer.addr().map(|a| a.ip().to_string()).unwrap_or_default()
                ),
                Refusal::Denied if self.policy.proxy_from.is_some() => {
                    "not a proxy named by --proxy-from".to_string()
                }
                Refusal::Denied => "denied by --allow/--deny".to_string(),
                Refusal::ProxyHeader => "no valid PROXY protocol header".to_string(),
                Refusal::NoDescriptors => "out of file descriptors".to_string(),
            };
            warn!(peer = %peer, reason = reason.as_str(), "connection from {peer} refused: {why}{}", held_back(suppressed));
        }
    }
}

/// What accepting with the spare descriptor came to.
enum Spare {
    /// One pending client was accepted and closed; there may be more.
    Refused,
    /// Nobody was waiting.
    Empty,
    /// No descriptor could be had, not even the spare.
    Unavailable,
}

/// ` (N more since the last warning)` when warnings were held back.
fn held_back(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more since the last warning)")
    }
}

/// Errors that concern only the one connection being accepted.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM | libc::ECONNRESET)
    )
}
