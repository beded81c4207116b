//! The teaching project's `handle_udp`: each worker reads its own SO_REUSEPORT
//! socket. A datagram is one message. UDP never blocks: a datagram that cannot be
//! queued for output is dropped and counted, and so is one from an address that
//! `--allow`/`--deny` turn away. Datagrams the kernel itself dropped (socket buffer
//! full) are learnt from the SO_RXQ_OVFL count that comes with the next datagram.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use mio::net::UdpSocket;
use tracing::warn;

use crate::frame::{DISCONNECT, FrameConfig};
use crate::message::{Message, Peer, Proto};
use crate::net::filter::Filter;

use super::batch::Batch;
use super::mode::Actions;
use super::stats::{Counters, DropReason};

/// Datagrams read from one socket per turn before TCP connections get theirs.
const UDP_BUDGET: usize = 256;

/// One UDP socket on its worker.
#[derive(Debug)]
pub struct UdpReader {
    socket: UdpSocket,
    /// Edge-triggered like TCP: set by an event, cleared at `WouldBlock`.
    pub readable: bool,
    /// The last source seen, formatted: a sender usually sends many datagrams.
    last_peer: Option<(SocketAddr, Peer)>,
    filter: Arc<Filter>,
    /// The last source address checked against the filter, and the verdict.
    last_verdict: Option<(IpAddr, bool)>,
    /// Control-message buffer for the kernel's drop count.
    cmsg: Vec<u8>,
    /// The kernel's cumulative drop count last seen on this socket.
    kernel_drops: u32,
}

impl UdpReader {
    pub fn new(socket: UdpSocket, filter: Arc<Filter>) -> Self {
        UdpReader {
            socket,
            readable: true,
            last_peer: None,
            filter,
            last_verdict: None,
            cmsg: crate::net::drop_count_buffer(),
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
        if self
            .last_peer
            .as_ref()
            .is_some_and(|(last, _)| *last != addr)
        {
            self.last_peer = None;
        }
        &self
            .last_peer
            .get_or_insert_with(|| (addr, Peer::new(addr)))
            .1
    }

    /// Reads up to a budget of datagrams (all of them while draining).
    pub fn handle_udp(
        &mut self,
        buf: &mut [u8],
        frame: &FrameConfig,
        batch: &mut Batch,
        counters: &Counters,
        actions: Actions,
        draining: bool,
    ) {
        // One byte past the limit, so a longer datagram shows as oversize.
        let limit = (frame.max_frame + 1).min(buf.len());
        let mut count = 0;
        while draining || count < UDP_BUDGET {
            count += 1;
            let received = crate::net::recvfrom_counting_drops(
                &self.socket,
                &mut buf[..limit],
                &mut self.cmsg,
            );
            let (n, addr) = match received {
                Ok((n, addr, drops)) => {
                    if let Some(total) = drops {
                        // Cumulative per socket; wrapping, like the kernel's counter.
                        counters.udp_kernel_drops(u64::from(total.wrapping_sub(self.kernel_drops)));
                        self.kernel_drops = total;
                    }
                    (n, addr)
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // ICMP errors surface here (e.g. after an echo to a closed port);
                    // they concern one peer, never the socket.
                    tracing::debug!("udp receive error: {}", crate::net::describe(&err));
                    continue;
                }
            };
            if !self.permits(addr.ip()) {
                counters.dropped(DropReason::Denied);
                continue;
            }
            counters.received_bytes(Proto::Udp, n);
            let bytes = &buf[..n];
            if n > frame.max_frame {
                counters.dropped(DropReason::Oversize);
                let peer = self.peer(addr);
                warn!(peer = %peer, "datagram from {peer} is longer than --max-frame {}; dropped", frame.max_frame);
                continue;
            }
            if bytes == DISCONNECT {
                super::worker::udp_session_ended(self.peer(addr));
                continue;
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
            if !actions.print {
                counters.message(Proto::Udp);
                continue;
            }
            if batch.blocked() {
                counters.dropped(DropReason::QueueFull);
                continue;
            }
            counters.message(Proto::Udp);
            let received_at = SystemTime::now();
            let peer = self.peer(addr);
            batch.print(&Message {
                proto: Proto::Udp,
                peer,
                conn: None,
                received_at,
                bytes,
            });
        }
    }
}
