//! How anything outside a worker reaches it: a `Job` in its inbox plus one wake-up
//! of its event loop (memcached's `notify_worker`). The other workers and shutdown
//! post here; none of them sees the worker's internals. (Each worker accepts its
//! own connections; one that serves more than another hands new ones over.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Connections being handed over to this worker that it has not taken yet.
    handoffs: AtomicUsize,
    /// The worker takes no more hand-offs: it has drained and is about to exit.
    closed: AtomicBool,
}

impl Mailbox {
    pub fn new(inbox: Sender<Job>, waker: Arc<Waker>) -> Self {
        Mailbox {
            inbox,
            waker,
            handoffs: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Hands a connection over to this worker and wakes it, unless it takes no
    /// more (then the connection comes back, to be served by the caller).
    ///
    /// Counting the hand-off before looking at `closed`, while the worker sets
    /// `closed` before looking at the count ([`Mailbox::close_handoffs`]), both
    /// sequentially consistent, means one of them always sees the other: either the
    /// connection comes back here, or the worker waits for it. None is dropped
    /// unread by a worker that exits as it arrives.
    pub fn hand_over(&self, accepted: Accepted) -> Result<(), Accepted> {
        self.handoffs.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.handoffs.fetch_sub(1, Ordering::SeqCst);
            return Err(accepted);
        }
        match self.inbox.send(Job::Adopt(accepted)) {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(err) => {
                self.handoffs.fetch_sub(1, Ordering::SeqCst);
                match err.into_inner() {
                    Job::Adopt(accepted) => Err(accepted),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The worker took a handed-over connection out of its inbox.
    pub fn took_handoff(&self) {
        self.handoffs.fetch_sub(1, Ordering::SeqCst);
    }

    /// The worker takes no more hand-offs; whether none is on its way (if one
    /// is, it arrives in the inbox and the worker must serve it before exiting).
    pub fn close_handoffs(&self) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        self.handoffs.load(Ordering::SeqCst) == 0
    }

    /// Queues `job` without waking the worker (see [`Mailbox::wake`]), so a burst
    /// of jobs costs one wake-up.
    pub fn post(&self, job: Job) {
        let _ = self.inbox.send(job);
    }

    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Peer;
    use crate::server::transport::Stream;

    fn connection() -> (Accepted, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = Peer::new(client.local_addr().unwrap());
        let stream = Stream::Tcp(mio::net::TcpStream::from_std(client));
        (
            Accepted {
                stream,
                peer,
                id: 1,
            },
            listener,
        )
    }

    #[test]
    fn a_worker_waits_for_a_hand_off_on_its_way_and_refuses_any_after_closing() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Mailbox::new(tx, waker);
        let (first, _keep) = connection();
        assert!(mailbox.hand_over(first).is_ok());
        // Not taken yet: the worker may not exit.
        assert!(!mailbox.close_handoffs());
        assert!(matches!(rx.try_recv(), Ok(Job::Adopt(_))));
        mailbox.took_handoff();
        assert!(mailbox.close_handoffs());
        // Closed: the connection comes back to the worker that accepted it.
        let (second, _keep) = connection();
        assert!(mailbox.hand_over(second).is_err());
        assert!(rx.try_recv().is_err());
        assert!(mailbox.close_handoffs());
    }
}
