//! `--metrics ADDR`: Prometheus text exposition on HTTP `GET /metrics`, served by a
//! small HTTP/1.1 responder on a thread of its own. It only reads the counters the
//! summary reads, so the two always agree, and it never blocks the server.
//!
//! The responder is a non-blocking event loop: each client has a bounded request
//! buffer ([`MAX_REQUEST`]) and a deadline ([`CLIENT_DEADLINE`]), at most
//! [`MAX_CLIENTS`] are served at once (more are closed at once), and every answer
//! ends with `Connection: close`. What a request gets is decided in [`http`]
//! (httparse, sans-IO); this file keeps the page and the sockets.
//!
//! The page is written here rather than with `prometheus-client`: the counters are
//! the workers' plain atomics, read at scrape time, and that crate would want its
//! own metric types (or a collector re-encoding ours on every scrape) for a fixed
//! list of families that a dozen lines print.

pub mod http;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, warn};

use crate::message::Proto;
use crate::net::filter::{ConnLimits, Refusal};
use crate::net::{NetError, bind, listen, stream_socket};

use super::stats::{DropReason, Stats};
use super::tls::TlsFailure;

pub use self::http::MAX_REQUEST;
use self::http::{judge, response};

/// A client that has not sent its request and read the answer by then is closed.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Clients served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 32;

const LISTENER: Token = Token(usize::MAX - 1);

/// Binds `addr` and serves metrics on a new thread; returns the bound address (the
/// real port when 0 was asked).
pub fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    limits: Arc<ConnLimits>,
) -> Result<SocketAddr, NetError> {
    let failed = |source| NetError::Listen {
        addr: addr.to_string(),
        source,
    };
    let socket = stream_socket(&addr).map_err(failed)?;
    socket.set_reuse_address(true).map_err(failed)?;
    bind(&socket, &addr).map_err(failed)?;
    listen(&socket, 64).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    let listener = TcpListener::from_std(socket.into());
    let local = listener.local_addr().map_err(failed)?;
    let poll = Poll::new().map_err(failed)?;
    let responder = Responder {
        poll,
        listener,
        clients: Slab::new(),
        stats,
        limits,
        retry_at: None,
    };
    std::thread::Builder::new()
        .name("sockpool-metrics".into())
        .spawn(move || responder.run())
        .map_err(failed)?;
    Ok(local)
}

/// The metrics page: every spec name with its `# HELP` and `# TYPE` lines.
pub fn render(stats: &Stats, limits: &ConnLimits) -> String {
    let t = stats.totals();
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let labelled = |label: &str, values: Vec<(&str, u64)>| {
        values
            .into_iter()
            .map(|(v, n)| (format!("{{{label}=\"{v}\"}}"), n))
            .collect::<Vec<_>>()
    };
    family(
        "sockpool_connections_open",
        "gauge",
        "TCP connections open now.",
        &one(limits.open() as u64),
    );
    family(
        "sockpool_connections_accepted_total",
        "counter",
        "TCP connections accepted and served.",
        &one(t.connections_accepted),
    );
    family(
        "sockpool_connections_refused_total",
        "counter",
        "TCP connections accepted and closed at once, by reason.",
        &labelled(
            "reason",
            Refusal::ALL
                .iter()
                .map(|r| (r.as_str(), t.refused_by(*r)))
                .collect(),
        ),
    );
    family(
        "sockpool_messages_received_total",
        "counter",
        "Messages received and handled, by protocol.",
        &labelled(
            "proto",
            Proto::ALL
                .iter()
                .map(|p| (p.as_str(), t.messages[*p as usize]))
                .collect(),
        ),
    );
    family(
        "sockpool_bytes_received_total",
        "counter",
        "Bytes received, by protocol.",
        &labelled(
            "proto",
            Proto::ALL
                .iter()
                .map(|p| (p.as_str(), t.bytes[*p as usize]))
                .collect(),
        ),
    );
    family(
        "sockpool_messages_dropped_total",
        "counter",
        "Messages not handled (or not whole), by reason.",
        &labelled(
            "reason",
            DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), t.dropped_by(*r)))
                .collect(),
        ),
    );
    family(
        "sockpool_udp_kernel_drops_total",
        "counter",
        "UDP datagrams the kernel dropped for want of socket buffer room (SO_RXQ_OVFL).",
        &one(t.udp_kernel_drops),
    );
    family(
        "sockpool_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed, by reason.",
        &labelled(
            "reason",
            TlsFailure::ALL
                .iter()
                .map(|r| (r.as_str(), t.tls_failures_by(*r)))
                .collect(),
        ),
    );
    let per_worker: Vec<(String, u64)> = stats
        .workers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{{worker=\"{i}\"}}"), c.open()))
        .collect();
    family(
        "sockpool_worker_connections",
        "gauge",
        "TCP connections each worker serves now.",
        &per_worker,
    );
    family(
        "sockpool_max_connections",
        "gauge",
        "The --max-connections limit.",
        &one(limits.max_connections as u64),
    );
    family(
        "sockpool_output_errors_total",
        "counter",
        "Failed attempts to write the output (each retry counts).",
        &one(t.output_errors),
    );
    if let Some(nats) = t.nats {
        family(
            "sockpool_nats_published_total",
            "counter",
            "Messages published to NATS JetStream (each once, however often republished).",
            &one(nats.published),
        );
        family(
            "sockpool_nats_acked_total",
            "counter",
            "Messages JetStream acknowledged.",
            &one(nats.acknowledged),
        );
        family(
            "sockpool_nats_pending",
            "gauge",
            "Messages published and not yet acknowledged.",
            &one(nats.unacknowledged()),
        );
    }
    out
}

struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    /// The answer, once decided; `sent` bytes of it are written.
    reply: Option<Vec<u8>>,
    sent: usize,
    deadline: Instant,
}

struct Responder {
    poll: Poll,
    listener: TcpListener,
    clients: Slab<Client>,
    stats: Arc<Stats>,
    limits: Arc<ConnLimits>,
    /// Out of descriptors: accept again at this time.
    retry_at: Option<Instant>,
}

impl Responder {
    fn run(mut self) {
        if let Err(err) =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            warn!("metrics stopped: {}", crate::net::describe(&err));
            return;
        }
        let mut events = Events::with_capacity(64);
        loop {
            let next = self
                .clients
                .iter()
                .map(|(_, c)| c.deadline)
                .chain(self.retry_at)
                .min();
            let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!("metrics stopped: {}", crate::net::describe(&err));
                return;
            }
            let retry = self.retry_at.is_some_and(|at| Instant::now() >= at);
            if retry {
                self.retry_at = None;
            }
            let mut accept = retry;
            for event in events.iter() {
                match event.token() {
                    LISTENER => accept = true,
                    Token(key) => self.serve(key),
                }
            }
            if accept {
                self.accept();
            }
            let now = Instant::now();
            let late: Vec<usize> = self
                .clients
                .iter()
                .filter(|(_, c)| c.deadline <= now)
                .map(|(k, _)| k)
                .collect();
            for key in late {
                self.close(key);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        debug!(peer = %peer, "metrics: too many clients; closed");
                        continue;
                    }
                    let entry = self.clients.vacant_entry();
                    let key = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Client {
                        stream,
                        request: Vec::new(),
                        reply: None,
                        sent: 0,
                        deadline: Instant::now() + CLIENT_DEADLINE,
                    });
                    // Data may have come before registration.
                    self.serve(key);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: try again shortly rather than spin.
                    self.retry_at = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
                Err(err) => debug!("metrics accept: {}", crate::net::describe(&err)),
            }
        }
    }

    /// Reads what the client sent, answers once the head is complete, writes.
    fn serve(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut done = false;
        if client.reply.is_none() {
            let mut chunk = [0u8; 2048];
            loop {
                match client.stream.read(&mut chunk) {
                    Ok(0) => {
                        // Closed before a whole request: nothing to answer.
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        let room = MAX_REQUEST + 1 - client.request.len().min(MAX_REQUEST + 1);
                        client
                            .request
                            .extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
                        if judge(&client.request).is_some() {
                            break;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                let (stats, limits) = (&self.stats, &self.limits);
                client.reply =
                    judge(&client.request).map(|answer| response(answer, || render(stats, limits)));
            }
        }
        if let Some(reply) = &client.reply {
            loop {
                let Some(rest) = reply.get(client.sent..).filter(|r| !r.is_empty()) else {
                    done = true;
                    break;
                };
                match client.stream.write(rest) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => client.sent += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
        }
        if done {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut client) = self.clients.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut client.stream);
            // Unread request bytes would turn the close into a reset that can
            // destroy the answer in flight: say we are done writing first.
            let _ = client.stream.shutdown(std::net::Shutdown::Write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type() {
        let stats = Stats::new(2);
        stats.workers[0].accepted();
        stats.workers[0].refused(Refusal::Denied);
        stats.workers[1].adopted();
        stats.workers[0].dropped(DropReason::Denied);
        let limits = ConnLimits::new(100, None);
        let page = render(&stats, &limits);
        for name in [
            "sockpool_connections_open",
            "sockpool_connections_accepted_total",
            "sockpool_connections_refused_total",
            "sockpool_messages_received_total",
            "sockpool_bytes_received_total",
            "sockpool_messages_dropped_total",
            "sockpool_udp_kernel_drops_total",
            "sockpool_tls_handshake_failures_total",
            "sockpool_worker_connections",
            "sockpool_max_connections",
            "sockpool_output_errors_total",
        ] {
            assert!(page.contains(&format!("# HELP {name} ")), "{name}");
            assert!(page.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(page.contains("sockpool_connections_accepted_total 1\n"));
        assert!(page.contains("sockpool_connections_refused_total{reason=\"denied\"} 1\n"));
        assert!(page.contains("sockpool_messages_dropped_total{reason=\"denied\"} 1\n"));
        assert!(page.contains("sockpool_worker_connections{worker=\"1\"} 1\n"));
        assert!(page.contains("sockpool_worker_connections{worker=\"0\"} 0\n"));
        assert!(page.contains("sockpool_max_connections 100\n"));
    }
}
