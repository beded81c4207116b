//! One load thread: a `mio::Poll` over its share of the connections (connection `c`
//! belongs to thread `c % threads`), non-blocking sockets, no thread per connection.
//!
//! In: a [`Plan`] and, once every thread has connected, the start instant. Out:
//! [`Event`]s to the main thread (connected, one per `--interval`, done) and the
//! running totals in [`Progress`] for the progress bar.
//!
//! A connection sends while it is `Sending`: in an open loop the messages due by the
//! schedule ([`Schedule`]; a cursor walks the schedule once, so each message costs
//! O(1) whatever the number of connections); in a closed loop as fast as the socket
//! takes them, or, with `--echo`, one at a time as replies come back. Then it drains
//! (waits for outstanding replies, at most `--timeout`), sends `!Disconnect`, and
//! waits for the server to close, so the server has handled every message before the
//! run ends. No error is fatal: each is counted by kind and ends that connection
//! only.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::frame::{self, DISCONNECT, Decoder, Frame};

use super::histogram::Latency;
use super::pace::{self, Schedule};
use super::payload;
use super::stream::{BenchStream, Target};
use super::{Config, Stop};

/// Connections being set up at once per thread: more would overflow the server's
/// SYN and accept queues and turn into one-second SYN retransmits.
const CONNECT_WINDOW: usize = 256;
/// Bytes one connection may write per turn before the others get theirs.
const WRITE_BUDGET: usize = 256 * 1024;
/// Largest run of messages encoded into one write.
const BATCH_BYTES: usize = 64 * 1024;
/// Datagrams one UDP connection may send per turn.
const UDP_BUDGET: u64 = 64;
/// How often timeouts are checked.
const SCAN_EVERY: Duration = Duration::from_millis(50);

/// The token of the pacing timer (connections use their index).
const TIMER: Token = Token(usize::MAX);

/// A timerfd in the poller: `epoll_wait` timeouts are whole milliseconds, too coarse
/// to pace thousands of messages a second (every message would leave up to 1 ms
/// late, and be charged for it). A timerfd wakes the loop to the microsecond.
#[derive(Debug)]
struct Timer {
    fd: OwnedFd,
}

impl Timer {
    fn new(poll: &Poll) -> io::Result<Timer> {
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
            .register(&mut SourceFd(&fd.as_raw_fd()), TIMER, Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Fires once, `after` from now (at least 1 µs: zero would disarm it).
    fn arm(&self, after: Duration) {
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
    fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer of 8 bytes.
        unsafe {
            libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8);
        }
    }
}

/// Why a connection failed or a reply did not come. The names are the words the
/// report prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused (TCP connect, or ICMP port unreachable for UDP).
    Refused,
    /// Reset by the peer, or a broken pipe.
    Reset,
    /// A connect, reply or close that did not happen within its timeout.
    Timeout,
    /// The server closed the connection before the run was over.
    Closed,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Other => "other",
        }
    }

    fn of(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            _ => ErrorKind::Other,
        }
    }
}

/// Counters of one thread (or, summed, of the run). Only messages after the warmup
/// count, except `warmup_sent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connected: u64,
    pub sent: u64,
    pub warmup_sent: u64,
    pub bytes_sent: u64,
    pub received: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.connected += o.connected;
        self.sent += o.sent;
        self.warmup_sent += o.warmup_sent;
        self.bytes_sent += o.bytes_sent;
        self.received += o.received;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.duplicated += o.duplicated;
    }

    /// What happened since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = *self;
        d.connected -= earlier.connected.min(d.connected);
        d.sent -= earlier.sent.min(d.sent);
        d.warmup_sent -= earlier.warmup_sent.min(d.warmup_sent);
        d.bytes_sent -= earlier.bytes_sent.min(d.bytes_sent);
        d.received -= earlier.received.min(d.received);
        for (a, b) in d.errors.iter_mut().zip(earlier.errors) {
            *a -= b.min(*a);
        }
        d.lost -= earlier.lost.min(d.lost);
        d.reordered -= earlier.reordered.min(d.reordered);
        d.duplicated -= earlier.duplicated.min(d.duplicated);
        d
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    fn error(&mut self, kind: ErrorKind) {
        if let Some(slot) = self.errors.get_mut(kind as usize) {
            *slot += 1;
        }
    }
}

/// Running totals the main thread reads for the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
}

/// What one thread is to do.
#[derive(Debug)]
pub struct Plan {
    pub thread: usize,
    /// Its connections' ids, ascending.
    pub ids: Vec<u32>,
    /// Messages each connection sends after the warmup (`u64::MAX`: until the
    /// duration is over).
    pub quotas: Vec<u64>,
    pub target: Target,
    pub config: Arc<Config>,
}

/// What a thread tells the main thread.
#[derive(Debug)]
pub enum Event {
    /// Every connection is set up or has failed.
    Connected { connected: u64 },
    /// The counts and latencies of interval `index` (1-based) of this thread.
    Interval {
        thread: usize,
        index: u64,
        counts: Counts,
        latency: Latency,
    },
    /// The thread is over.
    Done { thread: usize, result: ThreadResult },
}

/// A thread's totals.
#[derive(Debug)]
pub struct ThreadResult {
    pub counts: Counts,
    pub latency: Latency,
    /// When the last measured message was written, from the start.
    pub last_send: Option<Duration>,
    /// When the server last closed a connection after its `!Disconnect`: by then
    /// it had handled every message of that connection.
    pub last_close: Option<Duration>,
}

#[derive(Debug)]
enum Sock {
    Tcp(BenchStream),
    Udp(UdpSocket),
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connecting,
    Sending,
    /// Everything is sent; waiting for the outstanding replies.
    Draining,
    /// `!Disconnect` is queued or sent; waiting for the server to close.
    Closing,
    Done,
}

#[derive(Debug)]
struct Conn {
    id: u32,
    sock: Sock,
    state: State,
    /// Measured messages to send.
    quota: u64,
    /// Open loop with a duration: messages scheduled before the end.
    cap: u64,
    /// The next sequence number to encode.
    next_seq: u64,
    /// Open loop: sequence numbers below this are due.
    due: u64,
    /// The first sequence number sent after the warmup.
    first_measured: Option<u64>,
    wbuf: Vec<u8>,
    woff: usize,
    /// Sequence numbers `[start, end)` whose bytes are in `wbuf`.
    batch: (u64, u64),
    /// Messages wholly handed to the kernel.
    written: u64,
    writable: bool,
    queued: bool,
    shut: bool,
    decoder: Option<Decoder>,
    /// Closed loop with `--echo`: the message awaiting its reply, when it was
    /// written, and until when it is awaited.
    inflight: Option<(u64, Duration, Duration)>,
    /// Distinct replies.
    replies: u64,
    measured_sent: u64,
    measured_received: u64,
    /// UDP: which sequence numbers have been answered (a bit each).
    seen: Vec<u64>,
    max_seen: Option<u64>,
    /// Draining or closing: until when.
    deadline: Duration,
}

impl Conn {
    fn new(id: u32, quota: u64) -> Self {
        Conn {
            id,
            sock: Sock::None,
            state: State::Idle,
            quota,
            cap: u64::MAX,
            next_seq: 0,
            due: 0,
            first_measured: None,
            wbuf: Vec::new(),
            woff: 0,
            batch: (0, 0),
            written: 0,
            writable: true,
            queued: false,
            shut: false,
            decoder: None,
            inflight: None,
            replies: 0,
            measured_sent: 0,
            measured_received: 0,
            seen: Vec::new(),
            max_seen: None,
            deadline: Duration::MAX,
        }
    }

    /// How many sequence numbers this connection sends in all (`u64::MAX`: not
    /// known yet).
    fn limit(&self) -> u64 {
        let by_quota = match self.first_measured {
            Some(first) => first.saturating_add(self.quota),
            None => u64::MAX,
        };
        by_quota.min(self.cap)
    }

    fn is_measured(&self, seq: u64) -> bool {
        self.first_measured.is_some_and(|first| seq >= first)
    }

    /// UDP: marks `seq` answered; false if it already was.
    fn mark_seen(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        match self.seen.get_mut(word) {
            Some(w) if *w & (1 << bit) == 0 => {
                *w |= 1 << bit;
                true
            }
            _ => false,
        }
    }
}

/// Runs one load thread to the end; always ends with [`Event::Done`].
pub fn run(plan: Plan, progress: Arc<Progress>, events: Sender<Event>, start: Receiver<Instant>) {
    let thread = plan.thread;
    let mut load = match Load::new(plan, progress, events.clone()) {
        Ok(load) => load,
        Err((conns, _err)) => {
            // No poller: every connection fails; the run goes on without them.
            let mut counts = Counts::default();
            counts.errors[ErrorKind::Other as usize] = conns;
            let _ = events.send(Event::Connected { connected: 0 });
            let _ = events.send(Event::Done {
                thread,
                result: ThreadResult {
                    counts,
                    latency: Latency::new(),
                    last_send: None,
                    last_close: None,
                },
            });
            return;
        }
    };
    load.connect_all();
    let _ = events.send(Event::Connected {
        connected: load.total.connected,
    });
    if let Ok(t0) = start.recv() {
        load.run(t0);
        // The last, partial interval (the run rarely ends on a boundary).
        let unreported = load.total.since(&load.interval_mark);
        if load.config.interval.is_some() && unreported != Counts::default() {
            load.send_interval();
        }
    }
    let result = load.finish();
    let _ = events.send(Event::Done { thread, result });
}

struct Load {
    thread: usize,
    config: Arc<Config>,
    schedule: Schedule,
    target: Target,
    poll: Poll,
    timer: Option<Timer>,
    conns: Vec<Conn>,
    progress: Arc<Progress>,
    events: Sender<Event>,
    total: Counts,
    latency: Latency,
    interval_mark: Counts,
    interval_latency: Latency,
    interval_index: u64,
    ready: VecDeque<usize>,
    rbuf: Vec<u8>,
    replies: Vec<(u32, u64)>,
    t0: Instant,
    last_send: Option<Duration>,
    last_close: Option<Duration>,
    /// Open loop: the next scheduled message, as (round, index into `conns`).
    cursor: (u64, usize),
    cursor_done: bool,
    /// Open loop: the most sequence numbers any connection sends.
    max_limit: u64,
    /// Closed loop with a duration: sending has ended.
    ended: bool,
    live: usize,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("thread", &self.thread)
            .finish()
    }
}

impl Load {
    fn new(
        plan: Plan,
        progress: Arc<Progress>,
        events: Sender<Event>,
    ) -> Result<Self, (u64, io::Error)> {
        let poll = Poll::new().map_err(|e| (plan.ids.len() as u64, e))?;
        let config = plan.config;
        let conns: Vec<Conn> = plan
            .ids
            .iter()
            .zip(plan.quotas.iter().chain(std::iter::repeat(&u64::MAX)))
            .map(|(&id, &quota)| Conn::new(id, quota))
            .collect();
        let live = conns.len();
        Ok(Load {
            thread: plan.thread,
            schedule: Schedule::new(config.rate, config.connections),
            target: plan.target,
            timer: Timer::new(&poll).ok(),
            poll,
            conns,
            progress,
            events,
            total: Counts::default(),
            latency: Latency::new(),
            interval_mark: Counts::default(),
            interval_latency: Latency::new(),
            interval_index: 0,
            ready: VecDeque::new(),
            rbuf: vec![0; 64 * 1024],
            replies: Vec::new(),
            t0: Instant::now(),
            last_send: None,
            last_close: None,
            cursor: (0, 0),
            cursor_done: false,
            max_limit: 0,
            ended: false,
            live,
            config,
        })
    }

    fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    // ---- setting up -------------------------------------------------------------

    fn connect_all(&mut self) {
        let deadline = Instant::now() + self.config.connect_timeout;
        let mut pending: VecDeque<usize> = (0..self.conns.len()).collect();
        let mut connecting = 0usize;
        let mut events = Events::with_capacity(1024);
        loop {
            while connecting < CONNECT_WINDOW {
                let Some(i) = pending.pop_front() else { break };
                if self.start_connect(i) {
                    connecting += 1;
                }
            }
            if connecting == 0 && pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                for i in 0..self.conns.len() {
                    if matches!(self.conns[i].state, State::Idle | State::Connecting) {
                        self.fail(i, ErrorKind::Timeout);
                    }
                }
                return;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            if let Err(err) = self.poll.poll(&mut events, Some(wait))
                && err.kind() != io::ErrorKind::Interrupted
            {
                for i in 0..self.conns.len() {
                    if matches!(self.conns[i].state, State::Idle | State::Connecting) {
                        self.fail(i, ErrorKind::Other);
                    }
                }
                return;
            }
            for event in events.iter() {
                let i = event.token().0;
                let Some(conn) = self.conns.get_mut(i) else {
                    continue;
                };
                if conn.state != State::Connecting {
                    continue;
                }
                let Sock::Tcp(stream) = &mut conn.sock else {
                    continue;
                };
                let outcome = match stream.take_error() {
                    Ok(Some(err)) | Err(err) => Err(err),
                    Ok(None) => stream.connected(),
                };
                match outcome {
                    Ok(false) => {}
                    Ok(true) => {
                        stream.set_nodelay();
                        conn.state = State::Sending;
                        connecting -= 1;
                        self.total.connected += 1;
                    }
                    Err(err) => {
                        connecting -= 1;
                        self.fail(i, ErrorKind::of(&err));
                    }
                }
            }
        }
    }

    /// Starts connecting `i`; true if a TCP connect is now in progress.
    fn start_connect(&mut self, i: usize) -> bool {
        let udp = self.config.udp;
        let echo = self.config.echo;
        let frame = self.config.frame;
        let target = self.target.clone();
        let tls = self.config.tls.clone();
        let registry = self.poll.registry();
        let Some(conn) = self.conns.get_mut(i) else {
            return false;
        };
        let attempt = if let (true, Target::Ip(target)) = (udp, &target) {
            let target = *target;
            let local: SocketAddr = match target {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            UdpSocket::bind(local).and_then(|mut socket| {
                socket.connect(target)?;
                registry.register(
                    &mut socket,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(Sock::Udp(socket))
            })
        } else {
            BenchStream::connect(&target, tls.as_ref()).and_then(|mut stream| {
                registry.register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(Sock::Tcp(stream))
            })
        };
        match attempt {
            Ok(sock) => {
                let tcp = matches!(sock, Sock::Tcp(_));
                conn.sock = sock;
                if echo && tcp {
                    conn.decoder = Some(Decoder::new(&frame));
                }
                if tcp {
                    conn.state = State::Connecting;
                    true
                } else {
                    conn.state = State::Sending;
                    self.total.connected += 1;
                    false
                }
            }
            Err(err) => {
                self.fail(i, ErrorKind::of(&err));
                false
            }
        }
    }

    // ---- the run ----------------------------------------------------------------

    fn run(&mut self, t0: Instant) {
        self.t0 = t0;
        let warmup = self.config.warmup;
        let end = self.end();
        for i in 0..self.conns.len() {
            let schedule = self.schedule;
            let conn = &mut self.conns[i];
            let id = u64::from(conn.id);
            match schedule {
                Schedule::Open { .. } => {
                    conn.first_measured = schedule.due_before(id, warmup);
                    if let Some(end) = end {
                        conn.cap = schedule.due_before(id, end).unwrap_or(u64::MAX);
                    }
                }
                Schedule::Closed if warmup.is_zero() => conn.first_measured = Some(0),
                Schedule::Closed => {}
            }
            if conn.state == State::Sending {
                self.queue(i);
            }
        }
        self.max_limit = self.conns.iter().map(Conn::limit).max().unwrap_or(0);
        let mut events = Events::with_capacity(1024);
        let interval = self.config.interval;
        let mut next_interval = interval;
        let mut next_scan = Duration::ZERO;
        loop {
            let el = self.elapsed();
            let next_due = self.advance_cursor(el);
            if !self.schedule.is_open() && !self.ended && end.is_some_and(|end| el >= end) {
                self.ended = true;
                for i in 0..self.conns.len() {
                    if self.conns[i].state == State::Sending {
                        self.queue(i);
                    }
                }
            }
            let rounds = self.ready.len();
            for _ in 0..rounds {
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                if let Some(conn) = self.conns.get_mut(i) {
                    conn.queued = false;
                }
                self.service(i, el);
            }
            if let (Some(every), Some(at)) = (interval, next_interval)
                && el >= at
            {
                self.send_interval();
                next_interval = Some(at + every);
            }
            if el >= next_scan {
                self.scan(el);
                next_scan = el + SCAN_EVERY;
            }
            if self.live == 0 {
                return;
            }
            let el = self.elapsed();
            let mut wake = next_scan;
            if let Some(at) = next_due {
                wake = wake.min(at);
            }
            if let Some(at) = next_interval {
                wake = wake.min(at);
            }
            if let Some(end) = end.filter(|_| !self.ended && !self.schedule.is_open()) {
                wake = wake.min(end);
            }
            let timeout = if self.ready.is_empty() {
                let wait = wake.saturating_sub(el);
                match &self.timer {
                    // The timer wakes the loop on time; the poll timeout is a backstop.
                    Some(timer) if !wait.is_zero() => {
                        timer.arm(wait);
                        wait + Duration::from_millis(1)
                    }
                    _ => wait,
                }
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                for i in 0..self.conns.len() {
                    if self.conns[i].state != State::Done {
                        self.fail(i, ErrorKind::Other);
                    }
                }
                return;
            }
            let el = self.elapsed();
            for event in events.iter() {
                if event.token() == TIMER {
                    if let Some(timer) = &self.timer {
                        timer.clear();
                    }
                    continue;
                }
                let i = event.token().0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(i, el);
                }
                if event.is_writable() || event.is_error() {
                    if let Some(conn) = self.conns.get_mut(i) {
                        conn.writable = true;
                    }
                    self.queue(i);
                }
            }
        }
    }

    /// When sending ends (from the start), with a duration.
    fn end(&self) -> Option<Duration> {
        match self.config.stop {
            Stop::Duration(d) => Some(self.config.warmup + d),
            Stop::Messages(_) => None,
        }
    }

    fn queue(&mut self, i: usize) {
        if let Some(conn) = self.conns.get_mut(i)
            && !conn.queued
            && conn.state != State::Done
        {
            conn.queued = true;
            self.ready.push_back(i);
        }
    }

    /// Open loop: marks every message scheduled before `el` due; returns when the
    /// next one is.
    fn advance_cursor(&mut self, el: Duration) -> Option<Duration> {
        if !self.schedule.is_open() || self.cursor_done || self.conns.is_empty() {
            return None;
        }
        loop {
            let (round, j) = self.cursor;
            if round >= self.max_limit {
                self.cursor_done = true;
                return None;
            }
            let Some(conn) = self.conns.get_mut(j) else {
                self.cursor_done = true;
                return None;
            };
            let at = self
                .schedule
                .scheduled(u64::from(conn.id), round)
                .unwrap_or(Duration::ZERO);
            if at >= el {
                return Some(at);
            }
            if round < conn.limit() && conn.state == State::Sending {
                conn.due = round + 1;
                self.queue(j);
            }
            self.cursor = if j + 1 == self.conns.len() {
                (round + 1, 0)
            } else {
                (round, j + 1)
            };
        }
    }

    /// Whether connection `i` has sent everything it is to send.
    fn sending_over(&self, conn: &Conn) -> bool {
        conn.next_seq >= conn.limit() || self.ended
    }

    /// How many new messages connection `i` may encode now.
    fn wanted(&self, conn: &Conn) -> u64 {
        if self.sending_over(conn) {
            return 0;
        }
        let room = conn.limit() - conn.next_seq;
        let per_batch = (BATCH_BYTES / self.config.size.max(1)).max(1) as u64;
        let n = match self.schedule {
            Schedule::Open { .. } => conn.due.saturating_sub(conn.next_seq),
            Schedule::Closed if self.config.echo => u64::from(conn.inflight.is_none()),
            Schedule::Closed => per_batch,
        };
        n.min(room).min(per_batch)
    }

    /// Writes what connection `i` has to write, and moves it along its states.
    fn service(&mut self, i: usize, el: Duration) {
        let Some(state) = self.conns.get(i).map(|c| c.state) else {
            return;
        };
        match state {
            State::Sending | State::Draining | State::Closing => {}
            _ => return,
        }
        if self.config.udp {
            self.pump_udp(i, el);
        } else {
            self.pump_tcp(i, el);
        }
        self.advance_state(i, el);
    }

    fn advance_state(&mut self, i: usize, el: Duration) {
        let timeout = self.config.timeout;
        let echo = self.config.echo;
        let Some(conn) = self.conns.get(i) else {
            return;
        };
        let flushed = conn.woff >= conn.wbuf.len();
        if conn.state == State::Sending && flushed && self.sending_over(conn) {
            let conn = &mut self.conns[i];
            conn.state = State::Draining;
            conn.deadline = el + timeout;
        }
        let conn = &self.conns[i];
        if conn.state == State::Draining && (!echo || conn.replies >= conn.written) {
            self.start_close(i, el);
        }
    }

    fn pump_tcp(&mut self, i: usize, el: Duration) {
        let mut budget = WRITE_BUDGET;
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            if !conn.writable {
                return;
            }
            if conn.woff < conn.wbuf.len() {
                let Sock::Tcp(stream) = &mut conn.sock else {
                    return;
                };
                let pending = conn.wbuf.get(conn.woff..).unwrap_or_default();
                match stream.write(pending) {
                    Ok(n) => {
                        conn.woff += n;
                        budget = budget.saturating_sub(n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        conn.writable = false;
                        return;
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        self.fail(i, ErrorKind::of(&err));
                        return;
                    }
                }
                if conn.woff < conn.wbuf.len() {
                    continue;
                }
                self.batch_written(i, el);
                continue;
            }
            let conn = &self.conns[i];
            if conn.state == State::Closing {
                if !conn.shut {
                    if let Sock::Tcp(stream) = &mut self.conns[i].sock {
                        let _ = stream.shutdown_write();
                    }
                    self.conns[i].shut = true;
                }
                return;
            }
            if conn.state != State::Sending {
                return;
            }
            if budget == 0 {
                self.queue(i);
                return;
            }
            let n = self.wanted(conn);
            if n == 0 {
                return;
            }
            self.encode(i, n, el);
        }
    }

    /// Encodes `n` messages of connection `i` into its write buffer.
    fn encode(&mut self, i: usize, n: u64, el: Duration) {
        let (size, delimiter, frame, echo, closed) = (
            self.config.size,
            self.config.frame.delimiter,
            self.config.frame,
            self.config.echo,
            !self.schedule.is_open(),
        );
        let timeout = self.config.timeout;
        let warmup = self.config.warmup;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.first_measured.is_none() && el >= warmup {
            conn.first_measured = Some(conn.next_seq);
        }
        conn.wbuf.clear();
        conn.woff = 0;
        let mut message = Vec::with_capacity(size);
        let start = conn.next_seq;
        for seq in start..start + n {
            message.clear();
            payload::write(conn.id, seq, size, delimiter, &mut message);
            frame::encode(&frame, &message, &mut conn.wbuf);
        }
        conn.next_seq = start + n;
        conn.batch = (start, start + n);
        if closed && echo {
            conn.inflight = Some((start, el, el + timeout));
        }
    }

    /// The whole write buffer of `i` is in the kernel: its messages are sent.
    fn batch_written(&mut self, i: usize, el: Duration) {
        let size = self.config.size as u64;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        let (start, end) = conn.batch;
        conn.batch = (end, end);
        conn.wbuf.clear();
        conn.woff = 0;
        if end <= start {
            return; // the !Disconnect
        }
        let measured = match conn.first_measured {
            Some(first) => end - start.max(first).min(end),
            None => 0,
        };
        conn.written = end;
        conn.measured_sent += measured;
        self.total.sent += measured;
        self.total.bytes_sent += measured * size;
        self.total.warmup_sent += (end - start) - measured;
        if measured > 0 {
            self.last_send = Some(el);
            self.progress.sent.fetch_add(measured, Ordering::Relaxed);
        }
    }

    fn pump_udp(&mut self, i: usize, el: Duration) {
        let size = self.config.size;
        let delimiter = self.config.frame.delimiter;
        let closed_echo = !self.schedule.is_open() && self.config.echo;
        let timeout = self.config.timeout;
        let warmup = self.config.warmup;
        let mut message = Vec::with_capacity(size);
        let mut sent = 0;
        while sent < UDP_BUDGET {
            let Some(conn) = self.conns.get(i) else {
                return;
            };
            if conn.state != State::Sending || !conn.writable {
                return;
            }
            let n = self.wanted(conn);
            if n == 0 {
                return;
            }
            let conn = &mut self.conns[i];
            if conn.first_measured.is_none() && el >= warmup {
                conn.first_measured = Some(conn.next_seq);
            }
            let seq = conn.next_seq;
            message.clear();
            payload::write(conn.id, seq, size, delimiter, &mut message);
            let Sock::Udp(socket) = &conn.sock else {
                return;
            };
            match socket.send(&message) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // An ICMP error from an earlier datagram (nobody listening):
                    // counted, and this message is skipped, not sent.
                    conn.next_seq += 1;
                    self.total.error(ErrorKind::of(&err));
                    self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                    continue;
                }
            }
            conn.next_seq = seq + 1;
            conn.written = seq + 1;
            if closed_echo {
                conn.inflight = Some((seq, el, el + timeout));
            }
            if conn.is_measured(seq) {
                conn.measured_sent += 1;
                self.total.sent += 1;
                self.total.bytes_sent += size as u64;
                self.last_send = Some(el);
                self.progress.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                self.total.warmup_sent += 1;
            }
            sent += 1;
        }
        self.queue(i);
    }

    fn start_close(&mut self, i: usize, el: Duration) {
        let timeout = self.config.timeout;
        let frame = self.config.frame;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        match &conn.sock {
            Sock::Udp(socket) => {
                let _ = socket.send(DISCONNECT);
                self.done(i);
            }
            Sock::Tcp(_) => {
                conn.state = State::Closing;
                conn.deadline = el + timeout;
                conn.wbuf.clear();
                conn.woff = 0;
                frame::encode(&frame, DISCONNECT, &mut conn.wbuf);
                let end = conn.batch.1;
                conn.batch = (end, end);
                self.pump_tcp(i, el);
            }
            Sock::None => self.done(i),
        }
    }

    // ---- replies ----------------------------------------------------------------

    fn read(&mut self, i: usize, el: Duration) {
        if self.config.udp {
            self.read_udp(i, el);
        } else {
            self.read_tcp(i, el);
        }
    }

    fn read_tcp(&mut self, i: usize, el: Duration) {
        let mut replies = std::mem::take(&mut self.replies);
        replies.clear();
        let mut eof = false;
        let mut failed = None;
        {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            if !matches!(
                conn.state,
                State::Sending | State::Draining | State::Closing
            ) {
                self.replies = replies;
                return;
            }
            let Sock::Tcp(stream) = &mut conn.sock else {
                self.replies = replies;
                return;
            };
            loop {
                match stream.read(&mut self.rbuf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        if let Some(decoder) = &mut conn.decoder {
                            let input = self.rbuf.get(..n).unwrap_or_default();
                            let _ = decoder.decode(input, |f| {
                                if let Frame::Message(m) = f
                                    && let Some(reply) = payload::parse(m)
                                {
                                    replies.push(reply);
                                }
                                ControlFlow::Continue(())
                            });
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        failed = Some(ErrorKind::of(&err));
                        break;
                    }
                }
            }
        }
        for &(id, seq) in &replies {
            self.on_reply(i, id, seq, el);
        }
        self.replies = replies;
        if let Some(kind) = failed {
            self.fail(i, kind);
        } else if eof {
            if self.conns.get(i).is_some_and(|c| c.state == State::Closing) {
                self.last_close = Some(el);
                self.done(i);
            } else {
                self.fail(i, ErrorKind::Closed);
            }
        } else {
            self.advance_state(i, el);
        }
    }

    fn read_udp(&mut self, i: usize, el: Duration) {
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            let Sock::Udp(socket) = &conn.sock else {
                return;
            };
            match socket.recv(&mut self.rbuf) {
                Ok(n) => {
                    if let Some((id, seq)) = self.rbuf.get(..n).and_then(payload::parse) {
                        self.on_reply(i, id, seq, el);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // ICMP port unreachable and the like: counted, never fatal.
                    self.total.error(ErrorKind::of(&err));
                    self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    // A pending ICMP error is reported once, then reading goes on;
                    // anything else stops this turn. Nobody is listening: in a
                    // closed loop the awaited reply will not come, so move on.
                    if err.kind() != io::ErrorKind::ConnectionRefused {
                        break;
                    }
                    if let Some(conn) = self.conns.get_mut(i)
                        && conn.inflight.take().is_some()
                    {
                        self.queue(i);
                    }
                }
            }
        }
        self.advance_state(i, el);
    }

    fn on_reply(&mut self, i: usize, id: u32, seq: u64, el: Duration) {
        let udp = self.config.udp;
        let schedule = self.schedule;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if id != conn.id || seq >= conn.next_seq {
            return; // not an answer to anything this connection sent
        }
        let measured = conn.is_measured(seq);
        if udp {
            if !conn.mark_seen(seq) {
                if measured {
                    self.total.duplicated += 1;
                }
                return;
            }
            if measured && conn.max_seen.is_some_and(|max| seq < max) {
                self.total.reordered += 1;
            }
            conn.max_seen = Some(conn.max_seen.map_or(seq, |max| max.max(seq)));
        }
        conn.replies += 1;
        let sent_at = match conn.inflight {
            Some((s, at, _)) if s == seq => {
                conn.inflight = None;
                Some(at)
            }
            _ => None,
        };
        if measured {
            conn.measured_received += 1;
            self.total.received += 1;
            self.progress.received.fetch_add(1, Ordering::Relaxed);
            let from = schedule.scheduled(u64::from(conn.id), seq).or(sent_at);
            if let Some(from) = from {
                let l = pace::latency(from, el);
                self.latency.record(l);
                self.interval_latency.record(l);
            }
        }
        if sent_at.is_some() {
            self.queue(i);
        }
    }

    // ---- timeouts, endings ------------------------------------------------------

    fn scan(&mut self, el: Duration) {
        let udp = self.config.udp;
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            if let Some((_, _, until)) = conn.inflight
                && el >= until
                && conn.state == State::Sending
            {
                // Move on: a lost datagram shows as loss, a TCP reply as a timeout.
                conn.inflight = None;
                if !udp {
                    self.total.error(ErrorKind::Timeout);
                    self.progress.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.queue(i);
                continue;
            }
            let conn = &self.conns[i];
            if el < conn.deadline {
                continue;
            }
            match conn.state {
                State::Draining => {
                    if !udp {
                        self.total.error(ErrorKind::Timeout);
                        self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    self.start_close(i, el);
                }
                State::Closing => self.fail(i, ErrorKind::Timeout),
                _ => {}
            }
        }
    }

    fn send_interval(&mut self) {
        self.interval_index += 1;
        let counts = self.total.since(&self.interval_mark);
        self.interval_mark = self.total;
        let latency = self.interval_latency.clone();
        self.interval_latency.clear();
        let _ = self.events.send(Event::Interval {
            thread: self.thread,
            index: self.interval_index,
            counts,
            latency,
        });
    }

    fn fail(&mut self, i: usize, kind: ErrorKind) {
        self.total.error(kind);
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.done(i);
    }

    fn done(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.state == State::Done {
            return;
        }
        conn.state = State::Done;
        match &mut conn.sock {
            Sock::Tcp(s) => {
                let _ = self.poll.registry().deregister(s);
            }
            Sock::Udp(s) => {
                let _ = self.poll.registry().deregister(s);
            }
            Sock::None => {}
        }
        conn.sock = Sock::None;
        conn.wbuf = Vec::new();
        conn.seen.shrink_to_fit();
        self.live -= 1;
    }

    fn finish(mut self) -> ThreadResult {
        for i in 0..self.conns.len() {
            self.done(i);
        }
        if self.config.udp && self.config.echo {
            for conn in &self.conns {
                self.total.lost += conn.measured_sent.saturating_sub(conn.measured_received);
            }
        }
        ThreadResult {
            counts: self.total,
            latency: self.latency,
            last_send: self.last_send,
            last_close: self.last_close,
        }
    }
}
