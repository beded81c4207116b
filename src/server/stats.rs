//! Counters for the summary and the metrics (one set of counters, one set of
//! names, so the two always agree). Each thread owns one cache-line
//! aligned block and is its only writer, so counting costs a plain load and store,
//! never a locked instruction or a shared cache line; readers sum the blocks.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::Proto;
use crate::net::filter::Refusal;
use crate::output::OutputStats;

use super::tls::TlsFailure;

/// Why a message was not handled. The names are the words the summary prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Longer than `--max-frame`.
    Oversize,
    /// A UDP datagram that arrived while the output queue was full.
    QueueFull,
    /// Longer than `--max-frame` and cut to it (`--oversize truncate`): delivered,
    /// but not whole.
    Truncated,
    /// The stream ended inside a length- or octet-framed message.
    Incomplete,
    /// A UDP echo reply that the socket had no room for.
    ReplyDropped,
    /// A UDP datagram from an address that `--allow`/`--deny` turn away.
    Denied,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Oversize,
        DropReason::QueueFull,
        DropReason::Truncated,
        DropReason::Incomplete,
        DropReason::ReplyDropped,
        DropReason::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::QueueFull => "queue_full",
            DropReason::Truncated => "truncated",
            DropReason::Incomplete => "incomplete",
            DropReason::ReplyDropped => "reply_dropped",
            DropReason::Denied => "denied",
        }
    }
}

/// One thread's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    connections_accepted: AtomicU64,
    connections_closed: AtomicU64,
    messages: [AtomicU64; Proto::ALL.len()],
    bytes: [AtomicU64; Proto::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Connections accepted and closed at once, by reason.
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Connections this worker took on (its open count is this less
    /// `connections_closed`).
    connections_adopted: AtomicU64,
    /// Worker: datagrams the kernel dropped on this worker's UDP sockets.
    udp_kernel_drops: AtomicU64,
    /// Worker: TLS handshakes that failed, by reason.
    tls_failures: [AtomicU64; TlsFailure::ALL.len()],
}

/// Adds `n` to a counter that only the calling thread writes.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

fn proto_index(proto: Proto) -> usize {
    proto as usize
}

impl Counters {
    pub fn accepted(&self) {
        bump(&self.connections_accepted, 1);
    }

    pub fn closed(&self) {
        bump(&self.connections_closed, 1);
    }

    pub fn received_bytes(&self, proto: Proto, n: usize) {
        bump(&self.bytes[proto_index(proto)], n as u64);
    }

    pub fn message(&self, proto: Proto) {
        bump(&self.messages[proto_index(proto)], 1);
    }

    pub fn messages(&self, proto: Proto, n: u64) {
        if n > 0 {
            bump(&self.messages[proto_index(proto)], n);
        }
    }

    pub fn dropped(&self, reason: DropReason) {
        bump(&self.dropped[reason as usize], 1);
    }

    pub fn refused(&self, reason: Refusal) {
        bump(&self.refused[reason as usize], 1);
    }

    pub fn adopted(&self) {
        bump(&self.connections_adopted, 1);
    }

    /// Takes back an [`adopted`](Counters::adopted) for a connection that was
    /// counted as handed over to this worker but could not be.
    pub fn not_adopted(&self) {
        self.connections_adopted.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn tls_failed(&self, reason: TlsFailure) {
        bump(&self.tls_failures[reason as usize], 1);
    }

    pub fn udp_kernel_drops(&self, n: u64) {
        bump(&self.udp_kernel_drops, n);
    }

    /// Connections this worker serves now.
    pub fn open(&self) -> u64 {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        get(&self.connections_adopted).saturating_sub(get(&self.connections_closed))
    }
}

/// All threads' counters.
#[derive(Debug)]
pub struct Stats {
    /// One block per worker (each accepts, serves and closes its connections).
    pub workers: Box<[Counters]>,
    /// The sink's writer's counters.
    pub output: Arc<OutputStats>,
}

/// A point-in-time sum of every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub messages: [u64; Proto::ALL.len()],
    pub bytes: [u64; Proto::ALL.len()],
    pub dropped: [u64; DropReason::ALL.len()],
    pub refused: [u64; Refusal::ALL.len()],
    pub udp_kernel_drops: u64,
    /// Failed attempts to write the output (each retry counts).
    pub output_errors: u64,
    pub tls_failures: [u64; TlsFailure::ALL.len()],
    /// With NATS output: what was published and acknowledged.
    pub nats: Option<NatsTotals>,
}

/// NATS publishing, for the summary and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatsTotals {
    pub published: u64,
    pub acknowledged: u64,
}

impl NatsTotals {
    /// Published and not (yet) acknowledged: `sockpool_nats_pending`.
    pub fn unacknowledged(&self) -> u64 {
        self.published.saturating_sub(self.acknowledged)
    }
}

impl Stats {
    pub fn new(workers: usize) -> Self {
        Stats {
            workers: (0..workers).map(|_| Counters::default()).collect(),
            output: Arc::default(),
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in self.workers.iter() {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            t.connections_accepted += get(&c.connections_accepted);
            t.connections_closed += get(&c.connections_closed);
            for (sum, m) in t.messages.iter_mut().zip(&c.messages) {
                *sum += get(m);
            }
            for (sum, b) in t.bytes.iter_mut().zip(&c.bytes) {
                *sum += get(b);
            }
            for (sum, d) in t.dropped.iter_mut().zip(&c.dropped) {
                *sum += get(d);
            }
            for (sum, r) in t.refused.iter_mut().zip(&c.refused) {
                *sum += get(r);
            }
            t.udp_kernel_drops += get(&c.udp_kernel_drops);
            for (sum, r) in t.tls_failures.iter_mut().zip(&c.tls_failures) {
                *sum += get(r);
            }
        }
        t.output_errors = self.output.errors.load(Ordering::Relaxed);
        if self.output.nats.load(Ordering::Relaxed) {
            // Acknowledgements first: read after, `published` is never behind them.
            let acknowledged = self.output.nats_acked.load(Ordering::SeqCst);
            let published = self.output.nats_published.load(Ordering::SeqCst);
            t.nats = Some(NatsTotals {
                published,
                acknowledged,
            });
        }
        t
    }
}

impl Totals {
    /// `tcp N, udp N`, then each other transport that carried anything, so a
    /// server that serves only TCP and UDP writes the summary it always did.
    fn by_proto(&self, f: &mut fmt::Formatter<'_>, counts: &[u64]) -> fmt::Result {
        for (i, (proto, count)) in Proto::ALL.iter().zip(counts).enumerate() {
            if i < 2 || self.messages[i] + self.bytes[i] > 0 {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{} {count}", proto.as_str())?;
            }
        }
        Ok(())
    }

    pub fn messages_total(&self) -> u64 {
        self.messages.iter().sum()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    pub fn dropped_by(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason as usize).copied().unwrap_or(0)
    }

    pub fn tls_failures_by(&self, reason: TlsFailure) -> u64 {
        self.tls_failures.get(reason as usize).copied().unwrap_or(0)
    }

    pub fn refused_by(&self, reason: Refusal) -> u64 {
        self.refused.get(reason as usize).copied().unwrap_or(0)
    }
}

/// The summary line written at exit:
/// `summary: connections 20 (open 0), messages 12345 (tcp 12000, udp 345), bytes … ,
/// dropped 3 (oversize 3, queue_full 0, …), refused 2 (max_connections 2, …),
/// udp_kernel_drops 0, output_errors 0`: the reasons are the metrics' label values.
impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary: connections {} (open {}), messages {} (",
            self.connections_accepted,
            self.connections_accepted
                .saturating_sub(self.connections_closed),
            self.messages_total(),
        )?;
        self.by_proto(f, &self.messages)?;
        write!(f, "), bytes {} (", self.bytes.iter().sum::<u64>())?;
        self.by_proto(f, &self.bytes)?;
        write!(f, "), dropped {} (", self.dropped_total())?;
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {}", reason.as_str(), self.dropped_by(*reason))?;
        }
        write!(f, "), refused {} (", self.refused_total())?;
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {}", reason.as_str(), self.refused_by(*reason))?;
        }
        write!(
            f,
            "), udp_kernel_drops {}, output_errors {}",
            self.udp_kernel_drops, self.output_errors
        )?;
        // Only when there were any: a server without TLS writes what it always did.
        let failures: u64 = self.tls_failures.iter().sum();
        if failures > 0 {
            write!(f, ", tls_handshake_failures {failures} (")?;
            for (i, reason) in TlsFailure::ALL.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(
                    f,
                    "{sep}{} {}",
                    reason.as_str(),
                    self.tls_failures_by(*reason)
                )?;
            }
            write!(f, ")")?;
        }
        if let Some(nats) = &self.nats {
            write!(
                f,
                ", nats published {} (acknowledged {}, unacknowledged {})",
                nats.published,
                nats.acknowledged,
                nats.unacknowledged()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_output_adds_published_and_acknowledged() {
        let stats = Stats::new(1);
        assert_eq!(stats.totals().nats, None);
        stats.output.nats.store(true, Ordering::Relaxed);
        stats.output.nats_published.fetch_add(10, Ordering::Relaxed);
        stats.output.nats_acked.fetch_add(7, Ordering::Relaxed);
        let totals = stats.totals();
        assert!(
            totals
                .to_string()
                .ends_with("output_errors 0, nats published 10 (acknowledged 7, unacknowledged 3)")
        );
    }

    #[test]
    fn summary_sums_every_thread() {
        let stats = Stats::new(2);
        stats.workers[0].accepted();
        stats.workers[0].accepted();
        stats.workers[0].closed();
        stats.workers[0].message(Proto::Tcp);
        stats.workers[1].message(Proto::Udp);
        stats.workers[1].received_bytes(Proto::Udp, 5);
        stats.workers[1].dropped(DropReason::QueueFull);
        stats.workers[1].dropped(DropReason::Denied);
        stats.workers[0].refused(Refusal::MaxPerIp);
        stats.workers[0].udp_kernel_drops(7);
        stats.output.errors.fetch_add(3, Ordering::Relaxed);
        assert_eq!(
            stats.totals().to_string(),
            "summary: connections 2 (open 1), messages 2 (tcp 1, udp 1), bytes 5 (tcp 0, udp 5), dropped 2 (oversize 0, queue_full 1, truncated 0, incomplete 0, reply_dropped 0, denied 1), refused 1 (max_connections 0, max_per_ip 1, denied 0, no_descriptors 0, proxy_header 0), udp_kernel_drops 7, output_errors 3"
        );
    }
}
