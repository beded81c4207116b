//! `--proxy-protocol`: a connection's state before its PROXY header has arrived,
//! and what happens when it does. Until then nothing it sends reaches framing: the
//! bytes go to [`AwaitingHeader`], which asks `net::proxy` (sans-IO) what they come
//! to. A complete header makes its client the connection's peer, and only then are
//! `--allow`/`--deny` and `--max-per-ip` applied, to that client (the acceptor
//! checked only `--proxy-from` and `--max-connections`); the bytes after the header
//! are the connection's first data. Bytes that cannot begin a header, an end of
//! stream before one, or no complete header within [`HEADER_TIMEOUT`] close the
//! connection, counted as refused `proxy_header`, with nothing printed.
//!
//! Kept apart from the read path so that the worker only asks three things: is the
//! header still awaited, what did this read come to, which connections timed out.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::ConnId;
use crate::net::filter::{ConnLimits, Filter, Refusal};
use crate::net::proxy::{self, MAX_HEADER, Parsed};

/// How long a connection may take to send its whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Warnings about refused connections are written at most this often per worker.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The bytes of a header received so far (at most [`MAX_HEADER`]).
#[derive(Debug, Default)]
pub struct AwaitingHeader {
    buf: Vec<u8>,
}

/// What reading a connection that awaits its header came to.
#[derive(Debug)]
pub enum Step {
    /// The header is not complete yet and the socket has nothing more.
    Wait,
    /// The header is complete and the client admitted: serve the connection as
    /// from `client` (`None`: keep the proxy's address); `rest` is the data that
    /// followed the header.
    Ready {
        client: Option<SocketAddr>,
        rest: Vec<u8>,
    },
    /// Close the connection, counted as refused for `reason`.
    Refuse { reason: Refusal, why: String },
}

impl AwaitingHeader {
    /// Reads what the socket has until the header is decided or the socket is
    /// empty. `proxy` is the connection's own peer (the proxy), used for a header
    /// that names no client.
    pub fn read(
        &mut self,
        stream: &mut impl Read,
        proxy: SocketAddr,
        gate: &Gate,
        limits: &ConnLimits,
    ) -> Step {
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) => return refuse("closed before a complete PROXY header"),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return refuse(&format!(
                        "{} before a complete PROXY header",
                        crate::net::describe(&err)
                    ));
                }
            };
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            let (client, len) = match proxy::parse(&self.buf) {
                Parsed::Incomplete if self.buf.len() < MAX_HEADER => continue,
                Parsed::Incomplete => return refuse("PROXY header too long"),
                Parsed::Invalid(why) => return refuse(why),
                Parsed::Header { src, len, .. } => (Some(src), len),
                Parsed::Local { len } => (None, len),
            };
            if let Err(refusal) = gate.admit(client.unwrap_or(proxy), client.is_some(), limits) {
                return refusal;
            }
            let rest = self.buf.split_off(len.min(self.buf.len()));
            return Step::Ready { client, rest };
        }
    }
}

fn refuse(why: &str) -> Step {
    Step::Refuse {
        reason: Refusal::ProxyHeader,
        why: why.to_string(),
    }
}

/// A worker's view of `--proxy-protocol`: the client checks and the header
/// deadlines of its connections.
#[derive(Debug)]
pub struct Gate {
    filter: Arc<Filter>,
    /// (deadline, slab key, id) in the order connections arrived: with one
    /// timeout for all, that is deadline order, so a queue does what a heap would.
    deadlines: VecDeque<(Instant, usize, ConnId)>,
    last_warning: Option<Instant>,
    held_back: u64,
}

impl Gate {
    pub fn new(filter: Arc<Filter>) -> Self {
        Gate {
            filter,
            deadlines: VecDeque::new(),
            last_warning: None,
            held_back: 0,
        }
    }

    /// A connection adopted now awaits its header until [`HEADER_TIMEOUT`] from
    /// `now`.
    pub fn schedule(&mut self, key: usize, id: ConnId, now: Instant) {
        self.deadlines.push_back((now + HEADER_TIMEOUT, key, id));
    }

    /// When the next header deadline falls.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _, _)| *at)
    }

    /// The connections whose deadline has passed by `now` and that `awaiting`
    /// says still await their header (the caller checks the id too: the slot may
    /// hold another connection by now). Entries at the front whose connection no
    /// longer awaits are dropped on the way, so the queue holds only what is younger
    /// than the oldest connection still waiting, not ten seconds of churn.
    pub fn due(
        &mut self,
        now: Instant,
        awaiting: impl Fn(usize, ConnId) -> bool,
    ) -> Vec<(usize, ConnId)> {
        let mut out = Vec::new();
        while let Some(&(at, key, id)) = self.deadlines.front() {
            if !awaiting(key, id) {
                self.deadlines.pop_front();
                continue;
            }
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            out.push((key, id));
        }
        out
    }

    /// `--allow`/`--deny` (for a named client) and `--max-per-ip` for `ip`.
    fn admit(&self, addr: SocketAddr, named: bool, limits: &ConnLimits) -> Result<(), Step> {
        if named && !self.filter.permits(addr.ip()) {
            return Err(Step::Refuse {
                reason: Refusal::Denied,
                why: format!("client {addr} denied by --allow/--deny"),
            });
        }
        limits
            .admit_client(addr.ip())
            .map_err(|reason| Step::Refuse {
                reason,
                why: format!(
                    "--max-per-ip {} reached for {}",
                    limits.max_per_ip.unwrap_or(0),
                    addr.ip().to_canonical()
                ),
            })
    }

    /// Whether to write a warning now, and how many were held back since the last.
    pub fn warn_now(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            self.last_warning = Some(now);
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that hands out its bytes in the given reads, then `WouldBlock`.
    struct Reads(VecDeque<Vec<u8>>);

    impl Read for Reads {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                Some(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn proxy() -> SocketAddr {
        "127.0.0.9:4000".parse().unwrap()
    }

    #[test]
    fn header_split_over_reads_then_data() {
        let gate = Gate::new(Arc::new(Filter::default()));
        let limits = ConnLimits::new(10, Some(1));
        assert_eq!(limits.admit_unnamed(), Ok(()));
        let mut state = AwaitingHeader::default();
        let mut socket = Reads(VecDeque::from([b"PROXY TCP4 10.1.1.1 ".to_vec()]));
        assert!(matches!(
            state.read(&mut socket, proxy(), &gate, &limits),
            Step::Wait
        ));
        let mut socket = Reads(VecDeque::from([b"10.0.0.2 5000 80\r\nhi\n".to_vec()]));
        match state.read(&mut socket, proxy(), &gate, &limits) {
            Step::Ready { client, rest } => {
                assert_eq!(client, Some("10.1.1.1:5000".parse().unwrap()));
                assert_eq!(rest, b"hi\n");
            }
            other => panic!("{other:?}"),
        }
        // The client is now counted: a second one from it is past --max-per-ip.
        let mut again = AwaitingHeader::default();
        let mut socket = Reads(VecDeque::from([
            b"PROXY TCP4 10.1.1.1 10.0.0.2 5001 80\r\n".to_vec(),
        ]));
        assert!(matches!(
            again.read(&mut socket, proxy(), &gate, &limits),
            Step::Refuse {
                reason: Refusal::MaxPerIp,
                ..
            }
        ));
    }

    #[test]
    fn garbage_end_of_stream_and_denied_clients_are_refused() {
        let filter = Filter::new(vec![], vec!["10.6.6.0/24".parse().unwrap()]);
        let gate = Gate::new(Arc::new(filter));
        let limits = ConnLimits::new(10, None);
        for (input, want) in [
            (vec![b"hello\n".to_vec()], Refusal::ProxyHeader),
            (
                vec![b"PROXY TCP4".to_vec(), Vec::new()],
                Refusal::ProxyHeader,
            ),
            (
                vec![b"PROXY TCP4 10.6.6.6 10.0.0.2 5000 80\r\n".to_vec()],
                Refusal::Denied,
            ),
        ] {
            let mut socket = Reads(input.into());
            match AwaitingHeader::default().read(&mut socket, proxy(), &gate, &limits) {
                Step::Refuse { reason, .. } => assert_eq!(reason, want),
                other => panic!("{other:?}"),
            }
        }
        // LOCAL keeps the proxy's address, which the lists do not judge.
        let mut socket = Reads(VecDeque::from([b"PROXY UNKNOWN\r\n".to_vec()]));
        assert!(matches!(
            AwaitingHeader::default().read(&mut socket, proxy(), &gate, &limits),
            Step::Ready { client: None, .. }
        ));
    }

    #[test]
    fn deadlines_come_due_in_order() {
        let mut gate = Gate::new(Arc::new(Filter::default()));
        let t0 = Instant::now();
        gate.schedule(1, 11, t0);
        gate.schedule(2, 12, t0 + Duration::from_secs(1));
        assert_eq!(gate.next_deadline(), Some(t0 + HEADER_TIMEOUT));
        let all = |_: usize, _: ConnId| true;
        assert_eq!(gate.due(t0, all), vec![]);
        assert_eq!(gate.due(t0 + HEADER_TIMEOUT, all), vec![(1, 11)]);
        assert_eq!(gate.due(t0 + HEADER_TIMEOUT * 2, all), vec![(2, 12)]);
        assert_eq!(gate.next_deadline(), None);
        // Connections that got their header leave the queue long before their
        // deadline, as soon as they reach its front.
        gate.schedule(3, 13, t0);
        gate.schedule(4, 14, t0);
        gate.schedule(5, 15, t0);
        assert_eq!(gate.due(t0, |key, _| key == 4), vec![]);
        assert_eq!(gate.next_deadline(), Some(t0 + HEADER_TIMEOUT));
        assert_eq!(
            gate.due(t0 + HEADER_TIMEOUT, |key, _| key == 4),
            vec![(4, 14)]
        );
        assert_eq!(gate.next_deadline(), None);
    }
}
