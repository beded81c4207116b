//! The sink's writer thread: takes batches off the queue and delivers them to the
//! destination, retrying each second while the destination fails. While it retries it
//! takes nothing more off the queue, so the queue fills and the workers stop reading
//! TCP: a failing disk or an unreachable NATS slows the senders instead of losing
//! their messages. A batch is retried from the first byte not yet delivered, so a
//! partial write followed by a failure neither loses nor repeats anything.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use super::dest::Destination;
use super::{BATCH_BYTES, Budget, OutputStats, Waiter};

/// Pause between two attempts at a failing destination, and between checks that a
/// file is still where it was.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A failure that goes on is warned about again this often (every attempt is
/// counted in `sockpool_output_errors_total`).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Most batches the writer takes off the queue for one `writev`.
const BATCHES_PER_WRITE: usize = 16;

/// What the writer does next.
enum Next {
    Batch(Vec<u8>),
    Reopen,
    Idle,
    Closed,
}

pub(super) struct Writer {
    pub dest: Box<dyn Destination>,
    /// SIGHUP's requests to reopen the destination.
    pub reopen: Receiver<()>,
    pub stats: Arc<OutputStats>,
    failure: Option<Failure>,
    last_check: Instant,
}

/// The destination has been failing since `since`.
struct Failure {
    since: Instant,
    attempts: u64,
    warned: Instant,
    error: String,
}

impl Writer {
    pub fn new(
        dest: Box<dyn Destination>,
        reopen: Receiver<()>,
        stats: Arc<OutputStats>,
    ) -> Writer {
        Writer {
            dest,
            reopen,
            stats,
            failure: None,
            last_check: Instant::now(),
        }
    }

    /// Delivers batches until every sender is gone, then finishes the destination.
    /// Returns an error only for a failure not worth retrying (the reader of a pipe
    /// went away).
    pub fn run(
        mut self,
        batches: &Receiver<Vec<u8>>,
        recycle: &Sender<Vec<u8>>,
        waiters: &[Arc<Waiter>],
        budget: &Budget,
    ) -> io::Result<()> {
        let reopen = self.reopen.clone();
        let has_work_of_its_own = self.dest.waker().is_some();
        let mut taken: Vec<Vec<u8>> = Vec::with_capacity(BATCHES_PER_WRITE);
        loop {
            let next = if has_work_of_its_own {
                // The destination runs its own work while the queue is empty; a
                // queued batch wakes it.
                match batches.try_recv() {
                    Ok(batch) => Next::Batch(batch),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => Next::Closed,
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        if reopen.try_recv().is_ok() {
                            Next::Reopen
                        } else {
                            self.dest.idle(RETRY_EVERY);
                            Next::Idle
                        }
                    }
                }
            } else {
                crossbeam_channel::select! {
                    recv(batches) -> first => first.map_or(Next::Closed, Next::Batch),
                    recv(reopen) -> _ => Next::Reopen,
                    default(RETRY_EVERY) => Next::Idle,
                }
            };
            match next {
                Next::Closed => break,
                Next::Reopen => self.reopen_now(),
                Next::Idle => {}
                Next::Batch(first) => {
                    // Whatever else is queued goes out in the same `writev`: under load
                    // the reader of stdout is woken once per megabyte, not per batch.
                    taken.push(first);
                    while taken.len() < BATCHES_PER_WRITE {
                        match batches.try_recv() {
                            Ok(batch) => taken.push(batch),
                            Err(_) => break,
                        }
                    }
                    self.write_all(&taken)?;
                    let written: usize = taken.iter().map(Vec::len).sum();
                    budget.queued.fetch_sub(written, Ordering::SeqCst);
                    // There is room in the queue again: let every waiting worker retry.
                    // (After the room was made, so a worker that saw the queue full
                    // cannot miss it.)
                    for waiter in waiters {
                        if waiter.waiting.swap(false, Ordering::SeqCst) {
                            (waiter.notify)();
                        }
                    }
                    for mut batch in taken.drain(..) {
                        batch.clear();
                        if batch.capacity() <= 4 * BATCH_BYTES {
                            let _ = recycle.try_send(batch);
                        }
                    }
                    if batches.is_empty() {
                        self.retry(|dest| dest.flush())?;
                    }
                }
            }
            if self.last_check.elapsed() >= RETRY_EVERY {
                self.dest.check();
                self.last_check = Instant::now();
            }
        }
        self.retry(|dest| dest.finish())
    }

    fn write_all(&mut self, batches: &[Vec<u8>]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = batches.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            let n = self.retry(|dest| dest.write(rest))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    /// Runs `op` until it succeeds, once a second, warning and counting each failure;
    /// a SIGHUP that comes meanwhile reopens at once.
    fn retry<T>(
        &mut self,
        mut op: impl FnMut(&mut dyn Destination) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            match op(&mut *self.dest) {
                Ok(value) => {
                    self.recovered();
                    return Ok(value);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // Nobody reads the pipe any more, or the destination can never take
                // the output: nothing will ever be delivered.
                Err(err) if super::dest::is_fatal(&err) => return Err(err),
                Err(err) => {
                    self.failed(&err);
                    if self.reopen.recv_timeout(RETRY_EVERY).is_ok() {
                        self.reopen_now();
                    }
                    self.dest.check();
                    self.last_check = Instant::now();
                }
            }
        }
    }

    fn reopen_now(&mut self) {
        if let Err(err) = self.dest.reopen() {
            warn!(
                "cannot reopen output {}: {}",
                self.dest.name(),
                crate::error::describe(&err)
            );
        }
    }

    fn failed(&mut self, err: &io::Error) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let error = crate::error::describe(err);
        let now = Instant::now();
        match &mut self.failure {
            None => {
                warn!(
                    "cannot write output to {}: {error}; TCP reading is paused, retrying each second",
                    self.dest.name()
                );
                self.failure = Some(Failure {
                    since: now,
                    attempts: 1,
                    warned: now,
                    error,
                });
            }
            Some(failure) => {
                failure.attempts += 1;
                if failure.error != error || now - failure.warned >= WARN_EVERY {
                    warn!(
                        "still cannot write output to {}: {error} ({} attempts in {} s)",
                        self.dest.name(),
                        failure.attempts,
                        (now - failure.since).as_secs()
                    );
                    failure.warned = now;
                    failure.error = error;
                }
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(failure) = self.failure.take() {
            warn!(
                "output {} written again after {} failed attempts in {} s",
                self.dest.name(),
                failure.attempts,
                failure.since.elapsed().as_secs()
            );
        }
    }
}
