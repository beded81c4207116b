//! The teaching project's `ThreadPool`: a fixed number of `Worker` threads, each with
//! an inbox and a waker. Handing a worker something is memcached's `notify_worker`:
//! put a `Job` in its inbox, then wake its event loop once.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Waker};

use crate::frame::FrameConfig;
use crate::net::filter::{ConnLimits, Filter};
use crate::output::{Destination, Format, Notify, Sink};

use super::acceptor::{AcceptShared, Listener};
use super::batch::Batch;
use super::inbox::{Job, Mailbox, WAKER};
use super::mode::Mode;
use super::stats::Stats;
use super::tls::TlsServer;
use super::worker::{Worker, WorkerSetup};

/// What the pool is built from.
#[derive(Debug)]
pub struct PoolConfig {
    pub workers: usize,
    /// The stream listeners, which every worker watches and accepts from.
    pub listeners: Vec<Listener>,
    /// Admission, connection ids and warnings, shared by every worker's accepting.
    pub accept: Arc<AcceptShared>,
    /// Per listen address, one UDP socket per worker.
    pub udp: Vec<Vec<UdpSocket>>,
    /// Unix datagram sockets: socket `j` is read by worker `j % workers`.
    pub unixgram: Vec<std::os::unix::net::UnixDatagram>,
    pub frame: FrameConfig,
    pub mode: Mode,
    pub format: Format,
    /// Where the sink's writer delivers (stdout, a file, …).
    pub output: Box<dyn Destination>,
    pub quiet: bool,
    pub stats: Arc<Stats>,
    /// Bytes the output queue holds before workers stop reading TCP.
    pub sink_capacity: usize,
    /// Open-connection counts, released by the workers as connections close.
    pub limits: Arc<ConnLimits>,
    /// `--allow`/`--deny`, applied by the workers to UDP datagrams.
    pub filter: Arc<Filter>,
    /// `--idle-timeout`; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `--proxy-protocol`: connections start with a PROXY header.
    pub proxy_protocol: bool,
    /// TLS for TCP and Unix stream connections.
    pub tls: Option<Arc<TlsServer>>,
    /// Runs before an output that cannot be written at all ends the process (what
    /// must not outlive it: its socket files).
    pub before_exit: BeforeExit,
}

/// What runs before the process ends by its own hand, skipping every drop.
pub struct BeforeExit(pub Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for BeforeExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeExit")
    }
}

/// The running workers.
#[derive(Debug)]
pub struct ThreadPool {
    workers: Arc<[Mailbox]>,
    done: Receiver<usize>,
}

impl ThreadPool {
    /// Starts the sink (writing to `config.output`) and the workers.
    pub fn new(mut config: PoolConfig) -> io::Result<(ThreadPool, Sink)> {
        let size = config.workers.max(1);
        let mut polls = Vec::with_capacity(size);
        let mut wakers = Vec::with_capacity(size);
        for _ in 0..size {
            let poll = Poll::new()?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
            polls.push(poll);
        }
        let notifiers = wakers
            .iter()
            .map(|waker| {
                let waker = Arc::clone(waker);
                Box::new(move || {
                    let _ = waker.wake();
                }) as Notify
            })
            .collect();
        let output = std::mem::replace(
            &mut config.output,
            Box::new(crate::output::dest::Plain(io::sink())),
        );
        let BeforeExit(before_exit) =
            std::mem::replace(&mut config.before_exit, BeforeExit(Box::new(|| {})));
        let (sink, sink_handles) = Sink::start_to(
            output,
            config.sink_capacity,
            notifiers,
            Arc::clone(&config.stats.output),
            |err| {
                eprintln!(
                    "error: cannot write output: {}",
                    crate::error::describe(&err)
                );
                before_exit();
                std::process::exit(1);
            },
        )?;
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut inboxes = Vec::with_capacity(size);
        let mut mailboxes = Vec::with_capacity(size);
        for waker in wakers {
            let (inbox, rx) = crossbeam_channel::unbounded();
            inboxes.push(rx);
            mailboxes.push(Mailbox::new(inbox, waker));
        }
        let mailboxes: Arc<[Mailbox]> = mailboxes.into();
        let mut listeners_of =
            super::acceptor::share_out(std::mem::take(&mut config.listeners), size);
        let mut unixgram_of: Vec<Vec<_>> = (0..size).map(|_| Vec::new()).collect();
        for (j, socket) in config.unixgram.drain(..).enumerate() {
            if let Some(sockets) = unixgram_of.get_mut(j % size) {
                sockets.push(socket);
            }
        }
        for (index, ((poll, inbox), sink_handle)) in
            polls.into_iter().zip(inboxes).zip(sink_handles).enumerate()
        {
            let udp = config
                .udp
                .iter_mut()
                .filter_map(|sockets| (!sockets.is_empty()).then(|| sockets.remove(0)))
                .collect();
            let unixgram = unixgram_of
                .get_mut(index)
                .map(std::mem::take)
                .unwrap_or_default();
            let listeners = listeners_of
                .get_mut(index)
                .map(std::mem::take)
                .unwrap_or_default();
            let worker = Worker::new(WorkerSetup {
                index,
                poll,
                inbox,
                listeners,
                accept: Arc::clone(&config.accept),
                mailboxes: Arc::clone(&mailboxes),
                udp,
                unixgram,
                batch: Batch::new(sink_handle, config.format),
                stats: Arc::clone(&config.stats),
                frame: config.frame,
                mode: config.mode,
                quiet: config.quiet,
                done: done_tx.clone(),
                limits: Arc::clone(&config.limits),
                filter: Arc::clone(&config.filter),
                idle_timeout: config.idle_timeout,
                proxy_protocol: config.proxy_protocol,
                tls: config.tls.clone(),
            })?;
            thread::Builder::new()
                .name(format!("sockpool-worker-{index}"))
                .spawn(move || worker.run())?;
        }
        Ok((
            ThreadPool {
                workers: mailboxes,
                done,
            },
            sink,
        ))
    }

    pub fn size(&self) -> usize {
        self.workers.len()
    }

    /// Queues `job` for worker `index` without waking it (see [`ThreadPool::wake`]).
    pub fn push(&self, index: usize, job: Job) {
        if let Some(worker) = self.workers.get(index) {
            worker.post(job);
        }
    }

    pub fn wake(&self, index: usize) {
        if let Some(worker) = self.workers.get(index) {
            worker.wake();
        }
    }

    /// Tells every worker to drain and waits until all have finished or `deadline`
    /// passes; returns how many finished.
    pub fn drain(&self, deadline: Instant) -> usize {
        for index in 0..self.workers.len() {
            self.push(index, Job::Drain { deadline });
            self.wake(index);
        }
        let mut finished = 0;
        while finished < self.workers.len() && self.done.recv_deadline(deadline).is_ok() {
            finished += 1;
        }
        finished
    }
}
