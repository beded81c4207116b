//! Accepting, done by each worker for itself: a worker watches its listeners in
//! its own event loop, accepts what is ready (up to [`ACCEPT_BUDGET`] a pass),
//! applies `--allow`/`--deny`, `--max-connections` and `--max-per-ip`, and serves
//! what it admitted itself. While the workers are even no connection is handed
//! over: one that arrives with its first line is accepted, read and answered in one
//! pass of one thread. A refused connection is accepted and closed at once, before any read,
//! counted by reason, and warned about at most once a second per reason for the
//! whole server.
//!
//! Every worker watches every listener, level-triggered and with
//! `EPOLLEXCLUSIVE`, so a new connection wakes one waiting worker, not all of
//! them; a worker that serves more connections than another moves itself to the
//! back of the listener's queue of waiters, so the next one goes elsewhere, and
//! hands what it accepts meanwhile to the lightest worker
//! ([`Acceptor::lighter_worker`]). A
//! listener stays one socket with one queue: `--reuse-port`, a taken port, socket
//! activation and Unix sockets mean what they meant with one accepting thread.
//!
//! Accept errors never end the loop. When descriptors run out (EMFILE/ENFILE) the
//! worker frees its spare descriptor, accepts one pending client with it and closes
//! that at once (libev's and nginx's trick), then takes the spare back; so clients
//! past the limit get a prompt close instead of hanging in the backlog, and the
//! listener's readiness is consumed, so nothing spins. When even the spare cannot be
//! had back, it stops watching its listeners briefly (memcached's
//! `accept_new_conns(false)`) rather than retrying in a loop; either way, accepting
//! resumes as soon as descriptors free up.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::{TcpListener, UnixListener};
use tracing::{debug, warn};

use crate::message::{ConnId, Peer};
use crate::net::fdlimit::SpareFd;
use crate::net::filter::{ConnLimits, Filter, Refusal};

use super::stats::Counters;
use super::transport::Stream;

/// How long to stop accepting when out of descriptors, spare included.
const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// Warnings of one kind are written at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Connections accepted from one listener in one pass of the loop. The listener
/// is level-triggered, so what is left is reported by the next poll (or taken by
/// another worker) and no `accept` that would only say `WouldBlock` is made: under
/// churn (P5) that was 0.65 of a syscall per connection, against 0.3 of an extra
/// `epoll_wait` for the passes a burst now takes.
pub const ACCEPT_BUDGET: usize = 1;

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

/// What every worker's accepting shares: the policy, the connection ids (unique
/// across workers, in the order of accepting) and the rate of warnings.
#[derive(Debug)]
pub struct AcceptShared {
    policy: AcceptPolicy,
    next_id: AtomicU64,
    /// Taken only when a connection is refused or descriptors run out.
    warnings: Mutex<Warnings>,
}

impl AcceptShared {
    pub fn new(policy: AcceptPolicy) -> Self {
        AcceptShared {
            policy,
            next_id: AtomicU64::new(1),
            warnings: Mutex::default(),
        }
    }

    /// Runs `f` on the warnings' state (a poisoned lock still counts).
    fn warnings<T>(&self, f: impl FnOnce(&mut Warnings) -> T) -> T {
        f(&mut self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[derive(Debug, Default)]
struct Warnings {
    out_of_fds: RateLimited,
    refusals: [RateLimited; Refusal::ALL.len()],
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
pub enum Listener {
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

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// How a worker watches one listener.
#[derive(Debug)]
pub enum Watch {
    /// Its own: the only worker.
    Own(Listener),
    /// Shared with the other workers: watched with `EPOLLEXCLUSIVE`.
    Shared(Arc<Listener>),
}

impl Watch {
    fn listener(&self) -> &Listener {
        match self {
            Watch::Own(l) => l,
            Watch::Shared(l) => l,
        }
    }
}

/// What each of `workers` watches: every listener, shared (or, with one worker,
/// its own).
pub fn share_out(listeners: Vec<Listener>, workers: usize) -> Vec<Vec<Watch>> {
    let mut out: Vec<Vec<Watch>> = (0..workers).map(|_| Vec::new()).collect();
    for listener in listeners {
        if workers == 1 {
            if let Some(watches) = out.first_mut() {
                watches.push(Watch::Own(listener));
            }
            continue;
        }
        let listener = Arc::new(listener);
        for watches in &mut out {
            watches.push(Watch::Shared(Arc::clone(&listener)));
        }
    }
    out
}

/// One listener in a worker's loop, watched level-triggered: an event comes on
/// every poll while connections are queued, so a pass accepts one and leaves
/// the rest for the next (or for another worker) without asking until
/// `WouldBlock`.
#[derive(Debug)]
struct Watched {
    watch: Watch,
    /// The last poll reported connections queued.
    ready: bool,
    /// In the worker's poll set (a listener leaves it while accepting is paused:
    /// level-triggered, it would wake the loop again and again).
    registered: bool,
}

/// A connection admitted by this worker.
#[derive(Debug)]
pub struct Accepted {
    pub stream: Stream,
    pub peer: Peer,
    pub id: ConnId,
}

/// A worker's accepting: its listeners, its spare descriptor.
#[derive(Debug)]
pub struct Acceptor {
    listeners: Vec<Watched>,
    /// Listener `i` is `Token(base + i)`.
    base: usize,
    shared: Arc<AcceptShared>,
    /// Out of descriptors and no spare: accept again at this time.
    retry_at: Option<Instant>,
    spare: SpareFd,
}

impl Acceptor {
    /// Registers `watches` in `poll`, listener `i` as `Token(base + i)`.
    pub fn new(
        watches: Vec<Watch>,
        shared: Arc<AcceptShared>,
        poll: &mio::Poll,
        base: usize,
    ) -> io::Result<Self> {
        let mut listeners = Vec::with_capacity(watches.len());
        for (i, watch) in watches.into_iter().enumerate() {
            register(&watch, poll, base + i)?;
            listeners.push(Watched {
                watch,
                ready: false,
                registered: true,
            });
        }
        Ok(Acceptor {
            listeners,
            base,
            shared,
            retry_at: None,
            spare: SpareFd::new(),
        })
    }

    /// Whether `token` is one of the listeners; if so, marks it ready.
    pub fn on_event(&mut self, token: Token) -> bool {
        let Some(i) = token.0.checked_sub(self.base) else {
            return false;
        };
        match self.listeners.get_mut(i) {
            Some(watched) => {
                watched.ready = true;
                true
            }
            None => false,
        }
    }

    /// Whether a listener was reported ready and not yet accepted from.
    pub fn pending(&self) -> bool {
        self.retry_at.is_none() && self.listeners.iter().any(|w| w.ready)
    }

    /// When accepting resumes after running out of descriptors.
    pub fn next_wake(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Accepts from every ready listener, up to [`ACCEPT_BUDGET`] each, into
    /// `accepted`. `workers` are every worker's counters, this one's at `index`:
    /// they tell whether this worker serves more than its share.
    pub fn accept_ready(
        &mut self,
        poll: &mio::Poll,
        now: Instant,
        workers: &[Counters],
        index: usize,
        accepted: &mut Vec<Accepted>,
    ) {
        let Some(counters) = workers.get(index) else {
            return;
        };
        if self.retry_at.is_some_and(|at| now >= at) {
            self.resume(poll);
        }
        if self.retry_at.is_some() {
            return;
        }
        for i in 0..self.listeners.len() {
            if let Some(watched) = self.listeners.get_mut(i)
                && std::mem::take(&mut watched.ready)
            {
                let before = accepted.len();
                self.accept_from(i, Some(ACCEPT_BUDGET), poll, counters, accepted);
                if accepted.len() > before
                    && Self::lighter_worker(workers, index, accepted.len()).is_some()
                {
                    self.requeue_last(i, poll);
                }
            }
        }
    }

    /// At shutdown: accepts what the kernel queued on every listener (connections
    /// whose handshake completed before the signal) and stops listening, so the
    /// worker drains them with the rest. See docs/deploy.md for what may still
    /// arrive between this pass and the close.
    pub fn accept_backlog_and_close(
        &mut self,
        poll: &mio::Poll,
        counters: &Counters,
        accepted: &mut Vec<Accepted>,
    ) {
        self.retry_at = None;
        for i in 0..self.listeners.len() {
            self.accept_from(i, None, poll, counters, accepted);
        }
        for watched in self.listeners.drain(..) {
            // A shared listener stays open while other workers hold it: out of this
            // poll set, it no longer wakes this worker. An own listener closes here;
            // with tcp_migrate_req its queue goes to another listener of the group.
            if watched.registered {
                let _ = crate::net::sys::epoll_delete(poll, watched.watch.listener());
            }
        }
    }

    /// Accepts from listener `i` until `WouldBlock` or `budget` connections.
    fn accept_from(
        &mut self,
        i: usize,
        budget: Option<usize>,
        poll: &mio::Poll,
        counters: &Counters,
        accepted: &mut Vec<Accepted>,
    ) {
        let mut taken = 0;
        loop {
            if budget.is_some_and(|b| taken >= b) {
                // Level-triggered: the next poll reports what is left.
                return;
            }
            let Some(watched) = self.listeners.get(i) else {
                return;
            };
            match watched.watch.listener().accept() {
                Ok((stream, addr)) => {
                    taken += 1;
                    if let Err(reason) = self.admit(addr) {
                        self.refuse(reason, &peer_of(&stream, addr), counters);
                        // Dropping the stream closes it unread.
                        drop(stream);
                        continue;
                    }
                    if let Some(idle) = self.shared.policy.keepalive
                        && let Stream::Tcp(tcp) = &stream
                        && let Err(err) = crate::net::set_keepalive(tcp, idle)
                    {
                        debug!("cannot set keepalive: {}", crate::net::describe(&err));
                    }
                    let peer = peer_of(&stream, addr);
                    counters.accepted();
                    let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                    accepted.push(Accepted { stream, peer, id });
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_transient(&err) => {
                    debug!("accept: {}", crate::net::describe(&err));
                }
                Err(err) => {
                    let now = Instant::now();
                    if let Some(suppressed) = self.shared.warnings(|w| w.out_of_fds.check(now)) {
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
                            self.pause(poll, now + EMFILE_PAUSE);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The worker serving the fewest connections, when this one (`index`, with
    /// `pending` accepted but not yet counted) serves at least two more than it:
    /// where a connection this worker just accepted goes, and whether it should step
    /// back in the listener's queue. One more is as even as an odd count gets, and
    /// short connections one after another need no spreading. An exclusive wake-up
    /// picks a waiting worker, but a busy one still finds the level-triggered
    /// listener ready on its next poll, so bursts pile up on it (81 of 100 in one
    /// round); handing over only then costs nothing while the workers are even.
    pub fn lighter_worker(workers: &[Counters], index: usize, pending: usize) -> Option<usize> {
        let mine = workers.get(index)?.open().saturating_add(pending as u64);
        let (lightest, open) = workers
            .iter()
            .map(Counters::open)
            .enumerate()
            .filter(|&(j, _)| j != index)
            .min_by_key(|&(_, open)| open)?;
        (open.saturating_add(2) <= mine).then_some(lightest)
    }

    /// After accepting from a shared listener while serving more than another
    /// worker: re-registers it, which puts this worker at the back of the
    /// listener's wait queue. `EPOLLEXCLUSIVE` wakes the first waiting worker in
    /// that queue, which would otherwise be the same idle one every time (86 of
    /// 100 connections went to one of two workers). Two syscalls, only when the
    /// workers are uneven.
    fn requeue_last(&mut self, i: usize, poll: &mio::Poll) {
        let token = self.base + i;
        let Some(watched) = self.listeners.get_mut(i) else {
            return;
        };
        if !matches!(watched.watch, Watch::Shared(_)) || !watched.registered {
            return;
        }
        let listener = watched.watch.listener();
        if crate::net::sys::epoll_delete(poll, listener).is_err() {
            return;
        }
        if let Err(err) = register(&watched.watch, poll, token) {
            // Tried again when the pause for lack of descriptors ends.
            debug!("watch a listener again: {}", crate::net::describe(&err));
            watched.registered = false;
            self.retry_at = Some(Instant::now() + EMFILE_PAUSE);
        }
    }

    /// Stops accepting until `until`: the listeners leave the poll set, where,
    /// level-triggered, they would wake the loop again and again.
    fn pause(&mut self, poll: &mio::Poll, until: Instant) {
        self.retry_at = Some(until);
        for watched in &mut self.listeners {
            watched.ready = false;
            if watched.registered
                && crate::net::sys::epoll_delete(poll, watched.watch.listener()).is_ok()
            {
                watched.registered = false;
            }
        }
    }

    /// The pause is over: the listeners are watched again, and report what queued.
    fn resume(&mut self, poll: &mio::Poll) {
        self.retry_at = None;
        for (i, watched) in self.listeners.iter_mut().enumerate() {
            if !watched.registered {
                match register(&watched.watch, poll, self.base + i) {
                    Ok(()) => watched.registered = true,
                    Err(err) => debug!("watch a listener again: {}", crate::net::describe(&err)),
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
        let accepted = self.listeners.get(i).map(|w| w.watch.listener().accept());
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
        let policy = &self.shared.policy;
        let Some(addr) = addr else {
            return policy.limits.admit_unnamed();
        };
        if let Some(proxies) = &policy.proxy_from {
            if !proxies.permits(addr.ip()) {
                return Err(Refusal::Denied);
            }
            return policy.limits.admit_unnamed();
        }
        if !policy.filter.permits(addr.ip()) {
            return Err(Refusal::Denied);
        }
        policy.limits.admit(addr.ip())
    }

    fn refuse(&self, reason: Refusal, peer: &Peer, counters: &Counters) {
        counters.refused(reason);
        let now = Instant::now();
        let Some(suppressed) = self.shared.warnings(|w| {
            w.refusals
                .get_mut(reason as usize)
                .and_then(|limit| limit.check(now))
        }) else {
            return;
        };
        let policy = &self.shared.policy;
        let why = match reason {
            Refusal::MaxConnections => {
                format!(
                    "--max-connections {} reached",
                    policy.limits.max_connections
                )
            }
            Refusal::MaxPerIp => format!(
                "--max-per-ip {} reached for {}",
                policy.limits.max_per_ip.unwrap_or(0),
                peer.addr().map(|a| a.ip().to_string()).unwrap_or_default()
            ),
            Refusal::Denied if policy.proxy_from.is_some() => {
                "not a proxy named by --proxy-from".to_string()
            }
            Refusal::Denied => "denied by --allow/--deny".to_string(),
            Refusal::ProxyHeader => "no valid PROXY protocol header".to_string(),
            Refusal::NoDescriptors => "out of file descriptors".to_string(),
        };
        warn!(peer = %peer, reason = reason.as_str(), "connection from {peer} refused: {why}{}", held_back(suppressed));
    }
}

/// Puts a listener in `poll`'s set, level-triggered; a shared one with
/// `EPOLLEXCLUSIVE` (see the module's note).
fn register(watch: &Watch, poll: &mio::Poll, token: usize) -> io::Result<()> {
    let shared = matches!(watch, Watch::Shared(_));
    crate::net::sys::epoll_add_level(poll, watch.listener(), token, shared)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(open: &[u64]) -> Vec<Counters> {
        open.iter()
            .map(|&n| {
                let c = Counters::default();
                (0..n).for_each(|_| c.adopted());
                c
            })
            .collect()
    }

    #[test]
    fn a_connection_goes_to_the_lightest_worker_only_when_two_behind() {
        // Even, or one apart (as even as an odd count gets): kept.
        assert_eq!(Acceptor::lighter_worker(&workers(&[5, 5]), 0, 0), None);
        assert_eq!(Acceptor::lighter_worker(&workers(&[6, 5]), 0, 0), None);
        // Two more than the lightest: handed to it, whichever that is.
        assert_eq!(Acceptor::lighter_worker(&workers(&[7, 5]), 0, 0), Some(1));
        assert_eq!(
            Acceptor::lighter_worker(&workers(&[3, 9, 7]), 1, 0),
            Some(0)
        );
        // The lightest never hands over.
        assert_eq!(Acceptor::lighter_worker(&workers(&[3, 9, 7]), 0, 0), None);
        // One worker, or an index past the end: nobody to hand to.
        assert_eq!(Acceptor::lighter_worker(&workers(&[4]), 0, 0), None);
        assert_eq!(Acceptor::lighter_worker(&workers(&[1, 9]), 2, 0), None);
    }
}
