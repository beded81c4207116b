//! The teaching project's `handle_udp`: each worker reads its own SO_REUSEPORT
//! socket. A datagram is one message. UDP never blocks: a datagram that cannot be
//! queued for output is dropped and counted.

use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use mio::net::UdpSocket;
use tracing::warn;

use crate::frame::{DISCONNECT, FrameConfig};
use crate::message::{Message, Peer, Proto};

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
}

impl UdpReader {
    pub fn new(socket: UdpSocket) -> Self {
        UdpReader {
            socket,
            readable: true,
            last_peer: None,
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
            let (n, addr) = match crate::net::recvfrom(&self.socket, &mut buf[..limit]) {
                Ok(got) => got,
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
