//! One load thread: a `mio::Poll` over its share of the connections (connection `c`
//! belongs to thread `c % threads`), non-blocking sockets, no thread per connection.
//!
//! In: a [`Plan`] and, once every thread has connected, the start instant. Out:
//! [`Event`]s to the main thread (connected, one per `--interval`, done) and the
//! running totals in [`Progress`] for the progress bar.
//!
//! A connection sends while it is `Sending`, as much as [`pacing`] allows. Then it
//! drains (waits for outstanding replies, at most `--timeout`), sends
//! `!Disconnect`, and waits for the server to close, so the server has handled
//! every message before the run ends. No error is fatal: each is counted by kind
//! and ends that connection only.
//!
//! The parts: [`connect`] sets the connections up, [`send`] writes, [`reply`] reads
//! and times replies ([`echo`], and for UDP [`sequence`]); this file holds the loop,
//! timeouts and endings.

mod conn;
mod connect;
mod counts;
mod echo;
mod pacing;
mod ready;
mod reply;
mod send;
mod sequence;
mod tally;
mod timer;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token};

use super::histogram::Latency;
use super::pace::Schedule;
use super::stream::Target;
use super::{Config, Stop};

use self::conn::{Conn, Sock, State};
use self::pacing::Pacer;
use self::ready::ReadyList;
use self::tally::Tally;
use self::timer::Timer;

pub use self::counts::{Counts, ErrorKind, Progress};

/// How often timeouts are checked.
const SCAN_EVERY: Duration = Duration::from_millis(50);

/// The token of the pacing timer (connections use their index).
const TIMER: Token = Token(usize::MAX);

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
        connected: load.tally.total.connected,
    });
    if let Ok(t0) = start.recv() {
        load.run(t0);
        // The last, partial interval (the run rarely ends on a boundary).
        if load.config.interval.is_some() && load.tally.has_unreported() {
            load.tally.send_interval();
        }
    }
    let result = load.finish();
    let _ = events.send(Event::Done { thread, result });
}

struct Load {
    config: Arc<Config>,
    target: Target,
    poll: Poll,
    timer: Option<Timer>,
    conns: Vec<Conn>,
    ready: ReadyList,
    pacer: Pacer,
    tally: Tally,
    /// Read buffer, shared by the connections.
    rbuf: Vec<u8>,
    /// Replies cut from one read (kept for its capacity).
    replies: Vec<(u32, u64)>,
    t0: Instant,
    /// Closed loop with a duration: sending has ended.
    ended: bool,
    /// Connections not yet done.
    live: usize,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("connections", &self.conns.len())
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
        let schedule = Schedule::new(config.rate, config.connections);
        Ok(Load {
            ready: ReadyList::new(conns.len()),
            pacer: Pacer::new(schedule, config.echo, config.size, plan.ids.clone()),
            tally: Tally::new(plan.thread, progress, events),
            target: plan.target,
            timer: Timer::new(&poll, TIMER).ok(),
            poll,
            live: conns.len(),
            conns,
            rbuf: vec![0; 64 * 1024],
            replies: Vec::new(),
            t0: Instant::now(),
            ended: false,
            config,
        })
    }

    fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    // ---- the run ----------------------------------------------------------------

    fn run(&mut self, t0: Instant) {
        self.t0 = t0;
        let warmup = self.config.warmup;
        let end = self.end();
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            let (first_measured, cap) = self.pacer.bounds(conn.id, warmup, end);
            conn.span.first_measured = first_measured;
            conn.span.cap = cap;
            if conn.state == State::Sending {
                self.queue(i);
            }
        }
        self.pacer
            .start(self.conns.iter().map(|c| c.span.limit()).collect());
        let mut events = Events::with_capacity(1024);
        let interval = self.config.interval;
        let mut next_interval = interval;
        let mut next_scan = Duration::ZERO;
        loop {
            let el = self.elapsed();
            let next_due = self.release_due(el);
            if !self.pacer.is_open() && !self.ended && end.is_some_and(|end| el >= end) {
                self.ended = true;
                for i in 0..self.conns.len() {
                    if self.conns[i].state == State::Sending {
                        self.queue(i);
                    }
                }
            }
            let rounds = self.ready.len();
            for _ in 0..rounds {
                let Some(i) = self.ready.pop() else {
                    break;
                };
                self.service(i, el);
            }
            if let (Some(every), Some(at)) = (interval, next_interval)
                && el >= at
            {
                self.tally.send_interval();
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
            if let Some(end) = end.filter(|_| !self.ended && !self.pacer.is_open()) {
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
        if self.conns.get(i).is_some_and(|c| c.state != State::Done) {
            self.ready.push(i);
        }
    }

    /// Open loop: marks every message scheduled before `el` due and queues its
    /// connection; returns when the next one is.
    fn release_due(&mut self, el: Duration) -> Option<Duration> {
        let (conns, ready) = (&mut self.conns, &mut self.ready);
        self.pacer.advance(el, |j, due| {
            if let Some(conn) = conns.get_mut(j)
                && conn.state == State::Sending
            {
                conn.span.due = due;
                ready.push(j);
            }
        })
    }

    /// Whether connection `conn` has sent everything it is to send.
    fn sending_over(&self, conn: &Conn) -> bool {
        pacing::sending_over(conn.position(), self.ended)
    }

    /// How many new messages connection `conn` may encode now.
    fn wanted(&self, conn: &Conn) -> u64 {
        self.pacer.wanted(conn.position(), self.ended)
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
        if conn.state == State::Sending && conn.out.is_flushed() && self.sending_over(conn) {
            let conn = &mut self.conns[i];
            conn.state = State::Draining;
            conn.deadline = el.saturating_add(timeout);
        }
        let conn = &self.conns[i];
        if conn.state == State::Draining && (!echo || conn.counted.replies >= conn.counted.written)
        {
            self.start_close(i, el);
        }
    }

    // ---- timeouts, endings ------------------------------------------------------

    fn scan(&mut self, el: Duration) {
        let udp = self.config.udp;
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            if conn.state == State::Sending && conn.inflight.expired(el) {
                // Move on: a lost datagram shows as loss, a TCP reply as a timeout.
                conn.inflight.give_up();
                if !udp {
                    self.tally.error(ErrorKind::Timeout);
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
                        self.tally.error(ErrorKind::Timeout);
                    }
                    self.start_close(i, el);
                }
                State::Closing => self.fail(i, ErrorKind::Timeout),
                _ => {}
            }
        }
    }

    fn fail(&mut self, i: usize, kind: ErrorKind) {
        self.tally.error(kind);
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
        conn.out.buf = Vec::new();
        conn.sequences.release();
        self.live -= 1;
    }

    fn finish(mut self) -> ThreadResult {
        for i in 0..self.conns.len() {
            self.done(i);
        }
        if self.config.udp && self.config.echo {
            for conn in &self.conns {
                self.tally.total.lost +=
                    sequence::lost(conn.counted.measured_sent, conn.counted.measured_received);
            }
        }
        self.tally.finish()
    }
}
