//! How anything outside a worker reaches it: a `Job` in its inbox plus one wake-up
//! of its event loop (memcached's `notify_worker`). The other workers and shutdown
//! post here; none of them sees the worker's internals. (Each worker accepts its
//! own connections; one that serves more than another hands new ones over.)

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::{Token, Waker};

use super::acceptor::Accepted;

/// The one list of reasons a worker wakes up besides socket readiness.
#[derive(Debug)]
pub enum Job {
    /// Framed bytes relayed by another worker's client (broker, chat): written to
    /// every connection here.
    Broadcast(Arc<[u8]>),
    /// Shutdown: read what is pending, deliver it, close everything, exit.
    Drain { deadline: Instant },
    /// A connection accepted by a worker that serves more than this one, already
    /// counted as this worker's.
    Adopt(Accepted),
}

/// The token of the waker the sink, other workers and shutdown use
/// (mio reserves `usize::MAX` for itself).
pub const WAKER: Token = Token(usize::MAX - 1);

/// How to reach one worker: its inbox and the waker of its event loop.
#[derive(Debug)]
pub struct Mailbox {
    inbox: Sender<Job>,
    waker: Arc<Waker>,
}

impl Mailbox {
    pub fn new(inbox: Sender<Job>, waker: Arc<Waker>) -> Self {
        Mailbox { inbox, waker }
    }

    /// Queues `job` without waking the worker (see [`Mailbox::wake`]), so a burst
    /// of jobs costs one wake-up.
    pub fn post(&self, job: Job) {
        let _ = self.inbox.send(job);
    }

    /// Queues `job` unless the worker is gone; then `job` comes back.
    pub fn try_post(&self, job: Job) -> Result<(), Job> {
        self.inbox.send(job).map_err(|err| err.into_inner())
    }

    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}
