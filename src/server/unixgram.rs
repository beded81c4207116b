//! A Unix datagram socket (`unixgram:PATH`) on its worker. It follows UDP's rules:
//! a datagram is one message, reading never blocks, a datagram that cannot be
//! queued for output is dropped and counted, echo replies go back to the sender
//! when its socket has an address. The peer is the sender's credentials, which
//! the kernel attaches to every datagram (SO_PASSCRED). One worker owns each such
//! socket (there is no SO_REUSEPORT for Unix sockets), so a sender's datagrams
//! stay in order.

use std::io;
use std::time::SystemTime;

use mio::net::UnixDatagram;
use tracing::{debug, warn};

use crate::frame::{DISCONNECT, FrameConfig, Framing};
use crate::message::{Message, Peer, Proto};
use crate::net::unix::{self, UnixDatagramIn};

use super::batch::Batch;
use super::mode::Actions;
use super::stats::{Counters, DropReason};

/// Datagrams read per turn before the connections get theirs (as for UDP).
const BUDGET: usize = 256;

/// One Unix datagram socket on its worker.
#[derive(Debug)]
pub struct UnixgramReader {
    socket: UnixDatagram,
    /// Edge-triggered: set by an event, cleared at `WouldBlock`.
    pub readable: bool,
    /// Space for the credentials of each datagram, reused.
    cmsg: Vec<u64>,
    /// The last sender's credentials, formatted: a sender usually sends many.
    last_peer: Option<(Option<(i32, u32)>, Peer)>,
}

impl UnixgramReader {
    pub fn new(socket: UnixDatagram) -> Self {
        UnixgramReader {
            socket,
            readable: true,
            cmsg: unix::credentials_space(),
            last_peer: None,
        }
    }

    pub fn socket(&mut self) -> &mut UnixDatagram {
        &mut self.socket
    }

    fn peer(&mut self, credentials: Option<(i32, u32)>) -> &Peer {
        if self
            .last_peer
            .as_ref()
            .is_some_and(|(last, _)| *last != credentials)
        {
            self.last_peer = None;
        }
        &self
            .last_peer
            .get_or_insert_with(|| {
                let text = credentials.map_or_else(
                    || "-".to_string(),
                    |(pid, uid)| unix::credentials_text(pid, uid),
                );
                (credentials, Peer::local(&text))
            })
            .1
    }

    /// Reads up to a budget of datagrams (all of them while draining) into `buf`
    /// (the worker's read buffer), one per syscall, until the socket is empty.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_unixgram(
        &mut self,
        buf: &mut [u8],
        frame: &FrameConfig,
        batch: &mut Batch,
        counters: &Counters,
        actions: Actions,
        draining: bool,
    ) {
        // One byte past --max-frame, so a longer datagram shows as oversize.
        let room = frame.max_frame.saturating_add(1).min(buf.len());
        let Some(buf) = buf.get_mut(..room) else {
            return;
        };
        let mut count = 0;
        while draining || count < BUDGET {
            let datagram = match unix::recv_with_credentials(&self.socket, buf, &mut self.cmsg) {
                Ok(datagram) => datagram,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    debug!("unixgram receive error: {}", crate::net::describe(&err));
                    count += 1;
                    continue;
                }
            };
            count += 1;
            let bytes = buf.get(..datagram.len).unwrap_or_default();
            self.deliver(bytes, &datagram, frame, batch, counters, actions);
        }
    }

    fn deliver(
        &mut self,
        bytes: &[u8],
        datagram: &UnixDatagramIn,
        frame: &FrameConfig,
        batch: &mut Batch,
        counters: &Counters,
        actions: Actions,
    ) {
        counters.received_bytes(Proto::Unixgram, datagram.size);
        let bytes = strip_delimiter(bytes, frame);
        if datagram.truncated || bytes.len() > frame.max_frame {
            counters.dropped(DropReason::Oversize);
            let size = datagram.size;
            let peer = self.peer(datagram.credentials);
            warn!(peer = %peer, size, "datagram of {size} bytes from {peer} is longer than --max-frame; dropped");
            return;
        }
        if bytes == DISCONNECT {
            debug!(peer = %self.peer(datagram.credentials), "unixgram session ended (!Disconnect)");
            return;
        }
        if actions.reply
            && let Some(to) = &datagram.sender
        {
            // Never waits: a full receiver drops the reply.
            if let Err(err) = unix::send_to(&self.socket, bytes, to) {
                debug!("unixgram reply: {}", crate::net::describe(&err));
                counters.dropped(DropReason::ReplyDropped);
            }
        }
        if !actions.print {
            counters.message(Proto::Unixgram);
            return;
        }
        if batch.blocked() {
            counters.dropped(DropReason::QueueFull);
            return;
        }
        counters.message(Proto::Unixgram);
        let received_at = SystemTime::now();
        let peer = self.peer(datagram.credentials);
        batch.print(&Message {
            proto: Proto::Unixgram,
            peer,
            conn: None,
            received_at,
            bytes,
        });
    }
}

/// With line framing one trailing delimiter (and a `\r` before a `\n`) is not part
/// of a datagram's message, as rsyslog and Vector take it.
fn strip_delimiter<'a>(bytes: &'a [u8], frame: &FrameConfig) -> &'a [u8] {
    if frame.framing != Framing::Line {
        return bytes;
    }
    match bytes.strip_suffix(&[frame.delimiter]) {
        Some(rest) if frame.delimiter == b'\n' => rest.strip_suffix(b"\r").unwrap_or(rest),
        Some(rest) => rest,
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_delimiter_is_stripped_with_line_framing_only() {
        let line = FrameConfig::default();
        assert_eq!(strip_delimiter(b"hi\n", &line), b"hi");
        assert_eq!(strip_delimiter(b"hi\r\n", &line), b"hi");
        assert_eq!(strip_delimiter(b"hi\n\n", &line), b"hi\n");
        assert_eq!(strip_delimiter(b"hi", &line), b"hi");
        let raw = FrameConfig {
            framing: Framing::Raw,
            ..line
        };
        assert_eq!(strip_delimiter(b"hi\n", &raw), b"hi\n");
    }
}
