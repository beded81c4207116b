//! The teaching project's `handle_udp`: each worker reads its own SO_REUSEPORT
//! socket, up to 32 datagrams per `recvmmsg` (one syscall per batch, one clock
//! reading per batch). A datagram is one message. UDP never blocks: a datagram that
//! cannot be queued for output is dropped and counted, and so is one from an address
//! that `--allow`/`--deny` turn away. Datagrams the kernel itself dropped (socket
//! buffer full) are learnt from the SO_RXQ_OVFL count that comes with the next
//! datagram. With `line` framing a datagram's one trailing delimiter is not part
//! of its message (`echo hi | nc -u` is `hi`); an echo sends the datagram back whole.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use mio::net::UdpSocket;
use tracing::warn;

use crate::frame::{DISCONNECT, FrameConfig};
use crate::message::{Message, Peer, Proto};
use crate::net::filter::Filter;
use crate::net::mmsg::{self, RecvBatch};

use super::batch::Batch;
use super::mode::Actions;
use super::stats::{Counters, DropReason};

/// Datagrams read from one socket per turn before TCP connections get theirs.
const UDP_BUDGET: usize = 256;

/// The largest slot a datagram needs: no UDP payload reaches 64 KiB.
const MAX_DATAGRAM: usize = 64 * 1024;

/// How many sources' formatted addresses a UDP socket keeps (see [`Peers`]).
const PEER_CACHE: usize = 1024;

/// The receive buffers for a worker's UDP sockets (shared by them, like the TCP read
/// buffer; none when it has no UDP socket). A slot holds `--max-frame` plus a
/// trailing `\r\n` (removed with `line` framing); a longer datagram is cut to it, and
/// the kernel still reports its real size.
pub fn datagram_batch(frame: &FrameConfig, sockets: usize) -> RecvBatch {
    let slots = if sockets == 0 { 0 } else { mmsg::SLOTS };
    RecvBatch::new(slots, frame.max_frame.saturating_add(2).min(MAX_DATAGRAM))
}

/// One UDP socket on its worker.
#[derive(Debug)]
pub struct UdpReader {
    socket: UdpSocket,
    /// Edge-triggered like TCP: set by an event, cleared at `WouldBlock`.
    pub readable: bool,
    /// The sources seen lately, formatted.
    peers: Peers,
    filter: Arc<Filter>,
    /// The last source address checked against the filter, and the verdict.
    last_verdict: Option<(IpAddr, bool)>,
    /// The kernel's cumulative drop count last seen on this socket.
    kernel_drops: u32,
}

/// The formatted sources of recent datagrams. Formatting an address (and
/// allocating its text) for every datagram is a good part of what printing one
/// costs once senders interleave, as many syslog hosts (or one sender's several
/// sockets) do, and remembering only the last source then saves nothing. Bounded:
/// a full cache starts over, so a spray of (spoofed) sources cannot grow it.
#[derive(Debug, Default)]
struct Peers {
    formatted: HashMap<SocketAddr, Peer>,
}

impl Peers {
    fn get(&mut self, addr: SocketAddr) -> &Peer {
        if self.formatted.len() >= PEER_CACHE && !self.formatted.contains_key(&addr) {
            self.formatted.clear();
        }
        self.formatted
            .entry(addr)
            .or_insert_with(|| Peer::new(addr))
    }
}

impl UdpReader {
    pub fn new(socket: UdpSocket, filter: Arc<Filter>) -> Self {
        UdpReader {
            socket,
            readable: true,
            peers: Peers::default(),
            filter,
            last_verdict: None,
            kernel_drops: 0,
        }
    }

    /// Whether `--allow`/`--deny` admit datagrams from `ip` (the last verdict is
    /// remembered: a sender usually sends many).
    fn permits(&mut self, ip: IpAddr) -> bool {
        if self.filter.is_open() {
            return true;
        }
        match self.last_verdict {
            Some((last, verdict)) if last == ip => verdict,
            _ => {
                let verdict = self.filter.permits(ip);
                self.last_verdict = Some((ip, verdict));
                verdict
            }
        }
    }

    fn peer(&mut self, addr: SocketAddr) -> &Peer {
        self.peers.get(addr)
    }

    /// Reads up to a budget of datagrams (all of them while draining), a batch per
    /// syscall, until the socket is empty.
    pub fn handle_udp(
        &mut self,
        datagrams: &mut RecvBatch,
        frame: &FrameConfig,
        batch: &mut Batch,
        counters: &Counters,
        actions: Actions,
        draining: bool,
    ) {
        let mut count = 0;
        while draining || count < UDP_BUDGET {
            let want = if draining {
                datagrams.slots()
            } else {
                (UDP_BUDGET - count).min(datagrams.slots())
            };
            let received = match datagrams.recv(&self.socket, want) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(err) => {
                    // ICMP errors would surface here (e.g. after an echo to a closed
                    // port, where the socket reports them); they concern one peer,
                    // never the socket. Each error counts against the budget.
                    if err.kind() != io::ErrorKind::Interrupted {
                        tracing::debug!("udp receive error: {}", crate::net::describe(&err));
                    }
                    count += 1;
                    continue;
                }
            };
            count += received;
            // Messages of one read share its receive time, taken right after it.
            let received_at = actions.print.then(SystemTime::now);
            for datagram in datagrams.datagrams() {
                self.deliver(datagram, received_at, frame, batch, counters, actions);
            }
            // A short batch emptied the receive queue, and a datagram arriving later
            // raises a new edge: skip the call that would only say `WouldBlock`, as a
            // short TCP read does. (An error ending a batch early could leave
            // datagrams queued, but an unconnected UDP socket without IP_RECVERR is
            // not told of ICMP errors, and a later datagram would wake it anyway.)
            if received == 0 || received < want {
                self.readable = false;
                return;
            }
        }
    }

    /// Handles one received datagram: filter, size, `!Disconnect`, echo, output.
    fn deliver(
        &mut self,
        datagram: mmsg::Datagram<'_>,
        received_at: Option<SystemTime>,
        frame: &FrameConfig,
        batch: &mut Batch,
        counters: &Counters,
        actions: Actions,
    ) {
        let mmsg::Datagram {
            bytes,
            len,
            source: addr,
            kernel_drops,
        } = datagram;
        if let Some(total) = kernel_drops {
            // Cumulative per socket; wrapping, like the kernel's counter.
            counters.udp_kernel_drops(u64::from(total.wrapping_sub(self.kernel_drops)));
            self.kernel_drops = total;
        }
        if !self.permits(addr.ip()) {
            counters.dropped(DropReason::Denied);
            return;
        }
        counters.received_bytes(Proto::Udp, len);
        let message = crate::frame::datagram_message(frame, bytes);
        if len > bytes.len() || message.len() > frame.max_frame {
            counters.dropped(DropReason::Oversize);
            let peer = self.peer(addr);
            warn!(peer = %peer, size = len, "datagram of {len} bytes from {peer} is longer than --max-frame; dropped");
            return;
        }
        if message == DISCONNECT {
            tracing::debug!(peer = %self.peer(addr), "udp session ended (!Disconnect)");
            return;
        }
        if actions.reply {
            // Echo: straight back to the source; a full socket buffer drops the
            // reply rather than waiting.
            match crate::net::sendto(&self.socket, bytes, addr) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    counters.dropped(DropReason::ReplyDropped);
                }
                Err(err) => {
                    tracing::debug!("udp reply to {addr}: {}", crate::net::describe(&err));
                    counters.dropped(DropReason::ReplyDropped);
                }
            }
        }
        // No receive time means the mode does not print.
        let Some(received_at) = received_at else {
            counters.message(Proto::Udp);
            return;
        };
        if batch.blocked() {
            counters.dropped(DropReason::QueueFull);
            return;
        }
        counters.message(Proto::Udp);
        let peer = self.peer(addr);
        batch.print(&Message {
            proto: Proto::Udp,
            peer,
            conn: None,
            received_at,
            bytes: message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{PEER_CACHE, Peers};
    use std::net::SocketAddr;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn interleaved_sources_each_keep_their_text() {
        let mut peers = Peers::default();
        for round in 0..3 {
            for port in [1000, 2000, 1000, 3000] {
                assert_eq!(
                    peers.get(addr(port)).as_str(),
                    format!("127.0.0.1:{port}"),
                    "round {round}"
                );
            }
        }
        assert_eq!(peers.formatted.len(), 3);
    }

    #[test]
    fn the_cache_stays_bounded_by_starting_over() {
        let mut peers = Peers::default();
        for port in 0..(3 * PEER_CACHE as u16) {
            assert_eq!(peers.get(addr(port)).as_str(), format!("127.0.0.1:{port}"));
            assert!(peers.formatted.len() <= PEER_CACHE);
        }
        // A source seen again once full is still served from the cache.
        let last = addr(3 * PEER_CACHE as u16 - 1);
        let before = peers.formatted.len();
        assert_eq!(peers.get(last).as_str(), last.to_string());
        assert_eq!(peers.formatted.len(), before);
    }
}
