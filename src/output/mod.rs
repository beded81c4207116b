//! The sink: one writer thread owns stdout. Workers format messages into batches on
//! their own threads and hand whole batches over a bounded queue, so output costs one
//! channel operation and (under load) one `write` per batch, not per message.
//!
//! Backpressure: when the queue is full, [`SinkHandle::try_send`] gives the batch
//! back and marks the handle as waiting; the writer calls the handle's wake-up as
//! soon as it has taken a batch off the queue. A worker never blocks on output
//! (except while draining at shutdown, with a deadline). The writer delivers to a
//! [`Destination`] (stdout, a file, NATS) and retries one that fails, so the same
//! backpressure holds TCP while a disk is full or a file's directory is gone.

pub mod clock;
pub mod dest;
pub mod file;
pub mod json;
pub mod nats;
pub mod pipe;
pub mod record;
pub mod text;
mod writer;

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::message::Message;

pub use clock::Clock;
pub use dest::Destination;

/// Where `--output` sends messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// `-` (and the default).
    #[default]
    Stdout,
    /// A file, appended to and reopened on SIGHUP.
    File(PathBuf),
    /// NATS JetStream.
    Nats(nats::NatsTarget),
}

impl Target {
    /// Opens the destination. A file that cannot be opened at start-up is an error
    /// (the path is most likely wrong); later failures are retried.
    /// NATS connects later, on the writer's thread ([`Destination::start`]).
    pub fn open(&self, stats: &Arc<OutputStats>) -> io::Result<Box<dyn Destination>> {
        Ok(match self {
            Target::Stdout => Box::new(dest::Stdout::open()?),
            Target::File(path) => Box::new(file::OutputFile::open(path)?),
            Target::Nats(target) => {
                Box::new(nats::NatsOutput::new(target.clone(), Arc::clone(stats)))
            }
        })
    }

    /// Whether SIGHUP has something to reopen.
    pub fn reopens(&self) -> bool {
        matches!(self, Target::File(_))
    }

    /// How the workers format messages for it: NATS takes records, one message
    /// each; the others take `format`.
    pub fn format(&self, format: Format) -> Format {
        match self {
            Target::Nats(_) => Format::Record,
            _ => format,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Stdout => f.write_str("stdout"),
            Target::File(path) => write!(f, "{}", path.display()),
            Target::Nats(target) => write!(f, "{target}"),
        }
    }
}

/// The output's own counters, read by the summary and the metrics.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Failed attempts to deliver output (each retry counts).
    pub errors: AtomicU64,
    /// The output is NATS: the summary and the metrics show the next two.
    pub nats: AtomicBool,
    /// Messages handed to NATS (each once, however often republished).
    pub nats_published: AtomicU64,
    /// Messages JetStream acknowledged.
    pub nats_acked: AtomicU64,
}

/// How `print` writes messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<timestamp> <proto> <peer> <message>`, the message escaped.
    Text,
    /// One JSON object per line.
    Json,
    /// Binary records, one per message, for destinations that publish messages one
    /// by one (NATS); chosen by the output, never by `--format`.
    #[value(skip)]
    Record,
}

impl Format {
    /// Appends `message` in this format.
    pub fn write(self, message: &Message<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
        match self {
            Format::Text => text::write_line(message, clock, out),
            Format::Json => json::write_line(message, clock, out),
            Format::Record => record::write(message, clock, out),
        }
    }
}

/// A batch is handed to the writer once it holds this many bytes (or at the end of
/// an event-loop turn, whichever comes first).
pub const BATCH_BYTES: usize = 64 * 1024;

/// Called by the writer when a waiting handle may send again (a worker's waker).
pub type Notify = Box<dyn Fn() + Send + Sync>;

struct Waiter {
    waiting: AtomicBool,
    notify: Notify,
}

/// The queue's bound is in bytes, not batches: a quiet worker hands over a small
/// batch every turn, and counting those like full ones would call the queue full
/// while it holds almost nothing (and drop UDP datagrams for it).
struct Budget {
    queued: AtomicUsize,
    limit: usize,
}

/// Most batches the channel holds, whatever their size; the byte budget binds first.
const MAX_BATCHES: usize = 4096;

/// The writer thread and the queue in front of it.
pub struct Sink {
    done: Receiver<()>,
    reopen: Sender<()>,
}

/// Asks the writer to reopen its destination (SIGHUP); cheap to clone and call from
/// the signal thread.
#[derive(Clone, Debug)]
pub struct Reopener(Sender<()>);

impl Reopener {
    /// Requests a reopen; requests made before the writer gets to it count once.
    pub fn reopen(&self) {
        let _ = self.0.try_send(());
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

/// One worker's end of the sink.
pub struct SinkHandle {
    queue: Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    waiter: Arc<Waiter>,
    budget: Arc<Budget>,
    /// Wakes a writer whose destination has work of its own (NATS).
    wake: Option<dest::WriterWake>,
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle").finish_non_exhaustive()
    }
}

impl Sink {
    /// Starts the writer over `out` (see [`Sink::start_to`]); a failed write is
    /// retried each second.
    pub fn start<W, E>(
        out: W,
        capacity: usize,
        notifiers: Vec<Notify>,
        on_error: E,
    ) -> io::Result<(Sink, Vec<SinkHandle>)>
    where
        W: Write + Send + 'static,
        E: FnOnce(io::Error) + Send + 'static,
    {
        Sink::start_to(
            Box::new(dest::Plain(out)),
            capacity,
            notifiers,
            Arc::default(),
            on_error,
        )
    }

    /// Starts the writer over `dest`, with room for `capacity` bytes of queued
    /// output, and one handle per notifier. The writer ends once every handle is
    /// dropped. A destination that fails is retried each second (counted in
    /// `stats`); only a failure that can never heal (the reader of stdout went away)
    /// calls `on_error` and stops the writer, and later batches are discarded.
    pub fn start_to<E>(
        dest: Box<dyn Destination>,
        capacity: usize,
        notifiers: Vec<Notify>,
        stats: Arc<OutputStats>,
        on_error: E,
    ) -> io::Result<(Sink, Vec<SinkHandle>)>
    where
        E: FnOnce(io::Error) + Send + 'static,
    {
        let (queue, batches) = crossbeam_channel::bounded::<Vec<u8>>(MAX_BATCHES);
        let (recycle, spare) = crossbeam_channel::bounded::<Vec<u8>>(64 + notifiers.len());
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            limit: capacity.max(1),
        });
        let waiters: Vec<Arc<Waiter>> = notifiers
            .into_iter()
            .map(|notify| {
                Arc::new(Waiter {
                    waiting: AtomicBool::new(false),
                    notify,
                })
            })
            .collect();
        let handles = waiters
            .iter()
            .map(|waiter| SinkHandle {
                queue: queue.clone(),
                spare: spare.clone(),
                waiter: Arc::clone(waiter),
                budget: Arc::clone(&budget),
                wake: None,
            })
            .collect::<Vec<_>>();
        drop(queue);
        let (finished, done) = crossbeam_channel::bounded(1);
        let (reopen, reopen_rx) = crossbeam_channel::bounded(1);
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let wake = dest.waker();
        let handles = handles
            .into_iter()
            .map(|handle: SinkHandle| SinkHandle {
                wake: wake.clone(),
                ..handle
            })
            .collect();
        let mut dest = dest;
        thread::Builder::new()
            .name("sockpool-sink".into())
            .spawn(move || {
                // The destination starts on this thread: a client library's runtime
                // must live where it is driven.
                if let Err(err) = dest.start() {
                    let _ = started_tx.send(Err(err));
                    return;
                }
                let _ = started_tx.send(Ok(()));
                let writer = writer::Writer::new(dest, reopen_rx, stats);
                if let Err(err) = writer.run(&batches, &recycle, &waiters, &budget) {
                    on_error(err);
                }
                let _ = finished.send(());
            })?;
        started
            .recv()
            .map_err(|_| io::Error::other("the output thread ended at start-up"))??;
        Ok((Sink { done, reopen }, handles))
    }

    /// What SIGHUP calls to reopen the destination.
    pub fn reopener(&self) -> Reopener {
        Reopener(self.reopen.clone())
    }

    /// Waits until every handle is gone and all output is written and flushed, or
    /// `deadline` passes (then returns false).
    pub fn finish_until(self, deadline: Instant) -> bool {
        self.done.recv_deadline(deadline).is_ok()
    }
}

impl SinkHandle {
    /// An empty buffer to format the next batch into, reused when one is free.
    pub fn buffer(&self) -> Vec<u8> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES + 1024))
    }

    /// Queues `batch`, or gives it back when the queue is full; the handle's notifier
    /// is then called once there is room. A writer that has stopped (its output
    /// failed) takes nothing more: the batch is discarded, as the process is ending.
    pub fn try_send(&self, batch: Vec<u8>) -> Result<(), Vec<u8>> {
        let batch = match self.enqueue(batch) {
            Ok(()) => return Ok(()),
            Err(batch) => batch,
        };
        // Announce the wait before the second try, so a writer that makes room in
        // between cannot miss us.
        self.waiter.waiting.store(true, Ordering::SeqCst);
        match self.enqueue(batch) {
            Ok(()) => {
                self.waiter.waiting.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(batch) => Err(batch),
        }
    }

    /// Queues `batch` if the byte budget has room for it. An empty queue always
    /// takes a batch, however large, so no batch can be refused for ever.
    fn enqueue(&self, batch: Vec<u8>) -> Result<(), Vec<u8>> {
        let len = batch.len();
        let queued = self.budget.queued.load(Ordering::SeqCst);
        if queued > 0 && queued + len > self.budget.limit {
            return Err(batch);
        }
        self.budget.queued.fetch_add(len, Ordering::SeqCst);
        match self.queue.try_send(batch) {
            Ok(()) => {
                self.wake_writer();
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Ok(()),
            Err(TrySendError::Full(batch)) => {
                self.budget.queued.fetch_sub(len, Ordering::SeqCst);
                Err(batch)
            }
        }
    }

    fn wake_writer(&self) {
        if let Some(wake) = &self.wake {
            wake();
        }
    }

    /// Queues `batch`, waiting for room until `deadline` (used only while draining).
    /// Returns false if the deadline passed first.
    pub fn send_until(&self, batch: Vec<u8>, deadline: Instant) -> bool {
        let len = batch.len();
        self.budget.queued.fetch_add(len, Ordering::SeqCst);
        match self.queue.send_deadline(batch, deadline) {
            Ok(()) => {
                self.wake_writer();
                true
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                self.budget.queued.fetch_sub(len, Ordering::SeqCst);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    /// Takes at most 7 bytes per call, as a pipe may, and fails (disk full) on the
    /// calls listed in `fail_on`.
    #[derive(Debug)]
    struct Flaky {
        written: Arc<Mutex<Vec<u8>>>,
        calls: usize,
        fail_on: Vec<usize>,
    }

    impl Destination for Flaky {
        fn write(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.fail_on.contains(&self.calls) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            let n = first.len().min(7);
            self.written.lock().unwrap().extend_from_slice(&first[..n]);
            Ok(n)
        }
        fn name(&self) -> String {
            "flaky".into()
        }
    }

    #[test]
    fn partial_writes_and_failures_lose_and_repeat_nothing() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(OutputStats::default());
        let (sink, mut handles) = Sink::start_to(
            Box::new(Flaky {
                written: Arc::clone(&written),
                calls: 0,
                fail_on: vec![2, 5],
            }),
            1 << 20,
            vec![Box::new(|| {})],
            Arc::clone(&stats),
            |err| panic!("{err}"),
        )
        .unwrap();
        let handle = handles.pop().unwrap();
        for batch in ["", "first line\n", "", "second\nthird\n", ""] {
            handle.try_send(batch.as_bytes().to_vec()).unwrap();
        }
        drop(handle);
        assert!(sink.finish_until(Instant::now() + std::time::Duration::from_secs(30)));
        assert_eq!(&*written.lock().unwrap(), b"first line\nsecond\nthird\n");
        assert_eq!(stats.errors.load(Ordering::SeqCst), 2);
    }

    /// A writer that blocks until the test lets it go, to fill the queue.
    #[derive(Debug)]
    struct Gate {
        open: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.open.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn full_queue_gives_the_batch_back_and_notifies_when_there_is_room() {
        let open = Arc::new(Mutex::new(()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let gate = open.lock().unwrap();
        let (sink, mut handles) = Sink::start(
            Gate {
                open: Arc::clone(&open),
                written: Arc::clone(&written),
            },
            1,
            vec![Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            })],
            |err| panic!("{err}"),
        )
        .unwrap();
        let handle = handles.pop().unwrap();
        // One batch is taken by the (blocked) writer, one fills the queue.
        let mut sent = 0;
        let rejected = loop {
            match handle.try_send(format!("{sent}\n").into_bytes()) {
                Ok(()) => sent += 1,
                Err(batch) => break batch,
            }
            assert!(sent < 10, "the queue never filled");
        };
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        drop(gate);
        while woken.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        assert!(handle.try_send(rejected).is_ok(), "room after the wake-up");
        drop(handle);
        assert!(sink.finish_until(Instant::now() + std::time::Duration::from_secs(10)));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..=sent).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
    }
}
