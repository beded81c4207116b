//! Batched UDP receive: one `recvmmsg(2)` fills up to [`SLOTS`] datagrams, each with
//! its source address and the kernel's drop count (SO_RXQ_OVFL), into buffers that a
//! [`RecvBatch`] owns and reuses, so a flood costs one syscall per batch rather than
//! one per datagram, and no allocation.
//!
//! The headers are built here rather than with a wrapper such as nix's
//! `MultiHeaders`, which sets each header's name and control lengths once: the
//! kernel overwrites both with what it wrote, so after one datagram without a control
//! message (every datagram until the first kernel drop) that slot could never carry
//! the drop count again (nix-rust/nix#2813). Here the headers are built once, pointing
//! into the batch's own buffers, and only the lengths of the slots the kernel wrote
//! are restored after each call: a quiet socket that yields one datagram per wake-up
//! pays for one slot, not for the whole batch.

use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::ptr;

/// How many datagrams the server receives per call: 32 × 64 B datagrams make one
/// syscall per 2 KiB, past which the syscall's share of the cost no longer matters,
/// while a worker's buffers stay small (32 slots of at most 64 KiB, backed only where
/// datagrams were actually written).
pub const SLOTS: usize = 32;

/// Room for the control messages one datagram can carry here (only SO_RXQ_OVFL's
/// `u32`: `CMSG_SPACE(4)` is 16 to 24 bytes), aligned as a `cmsghdr` must be.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

const CONTROL_LEN: usize = 32;

// SAFETY: CMSG_SPACE is arithmetic on its argument; nothing is dereferenced.
const _: () =
    assert!(unsafe { libc::CMSG_SPACE(mem::size_of::<u32>() as u32) } as usize <= CONTROL_LEN);

/// What the kernel reported for one received slot.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    len: usize,
    source: Option<SocketAddr>,
    drops: Option<u32>,
}

/// One datagram of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The datagram, cut to the slot size when it was longer.
    pub bytes: &'a [u8],
    /// The datagram's real size, which the kernel reports even when it was cut
    /// (`MSG_TRUNC`): more than `bytes.len()` means the datagram did not fit.
    pub len: usize,
    pub source: SocketAddr,
    /// The kernel's cumulative count of datagrams this socket dropped for want of
    /// buffer room, present once it is non-zero.
    pub kernel_drops: Option<u32>,
}

/// Buffers for receiving a fixed number of datagrams per call, reused across calls
/// and sockets: everything is allocated once, and slot memory is zeroed lazily by
/// the OS, so pages a datagram never reached cost no memory.
pub struct RecvBatch {
    /// Slot `i` is `buf[i * slot_len..][..slot_len]`.
    buf: Vec<u8>,
    slot_len: usize,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    /// One per slot, over that slot of `buf`.
    iovecs: Vec<libc::iovec>,
    /// One per slot, pointing at its iovec, name and control buffer.
    headers: Vec<libc::mmsghdr>,
    received: Vec<Received>,
    /// How many slots the last call filled.
    filled: usize,
}

// SAFETY: the raw pointers in `iovecs` and `headers` point only into the heap
// buffers of this same batch, which never reallocate and move with it; nothing
// outside the batch holds them, and they are used only through `&mut self` (the
// call) or `&self` (reading what it wrote), so the batch can move between threads.
unsafe impl Send for RecvBatch {}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots())
            .field("slot_len", &self.slot_len)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Room for `slots` datagrams of up to `slot_len` bytes each.
    pub fn new(slots: usize, slot_len: usize) -> Self {
        let slot_len = slot_len.max(1);
        // SAFETY: sockaddr_storage is a C struct of integers, valid when all zero.
        let name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut batch = RecvBatch {
            buf: vec![0; slots * slot_len],
            slot_len,
            names: vec![name; slots],
            controls: vec![Control([0; CONTROL_LEN]); slots],
            iovecs: Vec::with_capacity(slots),
            headers: Vec::with_capacity(slots),
            received: vec![Received::default(); slots],
            filled: 0,
        };
        // Pointers from `as_mut_ptr`, which creates no reference to the buffers, so
        // later reads of them through `&self` leave these pointers valid.
        let buf = batch.buf.as_mut_ptr();
        let names = batch.names.as_mut_ptr();
        let controls = batch.controls.as_mut_ptr();
        for i in 0..slots {
            batch.iovecs.push(libc::iovec {
                // `wrapping_add` stays within `buf`: slot i starts at i * slot_len.
                iov_base: buf.wrapping_add(i * slot_len).cast(),
                iov_len: slot_len,
            });
        }
        let iovecs = batch.iovecs.as_mut_ptr();
        for i in 0..slots {
            // SAFETY: mmsghdr is a C struct of integers and raw pointers, valid when
            // all zero (null pointers, zero lengths).
            let mut header: libc::mmsghdr = unsafe { mem::zeroed() };
            let hdr = &mut header.msg_hdr;
            hdr.msg_iov = iovecs.wrapping_add(i);
            hdr.msg_iovlen = 1;
            hdr.msg_name = names.wrapping_add(i).cast();
            hdr.msg_control = controls.wrapping_add(i).cast();
            batch.headers.push(header);
        }
        batch.restore_lengths(slots);
        batch
    }

    /// How many datagrams one call can receive.
    pub fn slots(&self) -> usize {
        self.headers.len()
    }

    /// Sets the first `n` headers' name and control lengths back to their buffers'
    /// sizes: they are in-out, and the kernel replaces them with what it wrote.
    fn restore_lengths(&mut self, n: usize) {
        for header in self.headers.iter_mut().take(n) {
            header.msg_hdr.msg_namelen =
                mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_controllen = CONTROL_LEN as _;
        }
    }

    /// Receives up to `max` datagrams (at most [`slots`](Self::slots)) with one
    /// non-blocking `recvmmsg`; returns how many. `WouldBlock` means there were none;
    /// fewer than asked means the receive queue was empty at that moment. Read them
    /// with [`datagrams`](Self::datagrams), valid until the next call.
    pub fn recv<S: AsFd>(&mut self, socket: &S, max: usize) -> io::Result<usize> {
        self.filled = 0;
        let want = max.min(self.slots());
        if want == 0 {
            return Ok(0);
        }
        let headers = self.headers.get_mut(..want).unwrap_or_default();
        // SAFETY: the first `want` headers each point at their own iovec (over a
        // distinct slot of `buf`), name and control buffer, all owned by `self`, with
        // their true lengths (set in `new`, restored after every call); nothing else
        // touches them during the call. MSG_TRUNC makes each `msg_len` the
        // datagram's real size, even when it was cut to its slot.
        let result = unsafe { super::sys::recvmmsg(socket, headers, libc::MSG_TRUNC) };
        let (count, err) = match result {
            Ok(n) => (n, None),
            Err(err) => (0, Some(err)),
        };
        for ((header, name), received) in self
            .headers
            .iter()
            .zip(&self.names)
            .zip(self.received.iter_mut())
            .take(count)
        {
            *received = Received {
                len: header.msg_len as usize,
                source: socket_addr(name, header.msg_hdr.msg_namelen),
                drops: drop_count(&header.msg_hdr),
            };
        }
        // The kernel writes back only the messages it received (and at most began
        // the one it stopped at).
        self.restore_lengths((count + 1).min(want));
        if let Some(err) = err {
            return Err(err);
        }
        self.filled = count;
        Ok(count)
    }

    /// The datagrams the last [`recv`](Self::recv) filled, in the order received.
    /// One without an internet source address (never seen on a UDP socket) is
    /// skipped.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.received
            .iter()
            .zip(self.buf.chunks_exact(self.slot_len))
            .take(self.filled)
            .filter_map(|(r, slot)| {
                Some(Datagram {
                    bytes: slot.get(..r.len).unwrap_or(slot),
                    len: r.len,
                    source: r.source?,
                    kernel_drops: r.drops,
                })
            })
    }
}

/// The source the kernel wrote into `name` (`len` bytes of it), if IPv4 or IPv6.
fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is larger than and aligned for every socket
            // address type, and sockaddr_in is plain integers (any bytes are valid);
            // the family says the kernel wrote one here.
            let a = unsafe { &*ptr::from_ref(name).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*ptr::from_ref(name).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The SO_RXQ_OVFL count among a received message's control messages.
fn drop_count(hdr: &libc::msghdr) -> Option<u32> {
    if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        // The control buffer was too small: what is there cannot be walked safely.
        return None;
    }
    let mut drops = None;
    // SAFETY: msg_control and msg_controllen describe a control buffer of the batch
    // that the kernel has just filled and measured; CMSG_FIRSTHDR and CMSG_NXTHDR
    // return null rather than step past msg_controllen, and the data of an
    // SO_RXQ_OVFL message is one u32 (read unaligned, as cmsg(3) advises).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                drops = Some(ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>()));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        (server, client)
    }

    #[test]
    fn empty_socket_would_block() {
        let (server, _) = pair();
        let mut batch = RecvBatch::new(4, 16);
        let err = batch.recv(&server, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.datagrams().count(), 0);
    }

    #[test]
    fn fills_up_to_max_then_the_rest_cut_to_the_slot() {
        let (server, client) = pair();
        let to = server.local_addr().unwrap();
        let from = client.local_addr().unwrap();
        for d in [&b"one"[..], b"", b"three", b"longer than eight"] {
            client.send_to(d, to).unwrap();
        }
        let mut batch = RecvBatch::new(8, 8);
        assert_eq!(batch.recv(&server, 2).unwrap(), 2);
        let got: Vec<_> = batch
            .datagrams()
            .map(|d| (d.bytes.to_vec(), d.source))
            .collect();
        assert_eq!(got, vec![(b"one".to_vec(), from), (Vec::new(), from)]);
        // Fewer than asked: the queue is empty.
        assert_eq!(batch.recv(&server, 8).unwrap(), 2);
        let got: Vec<_> = batch
            .datagrams()
            .map(|d| (d.bytes.to_vec(), d.len))
            .collect();
        assert_eq!(
            got,
            vec![(b"three".to_vec(), 5), (b"longer t".to_vec(), 17)],
            "a cut datagram still reports its real size"
        );
        assert!(batch.datagrams().all(|d| d.kernel_drops.is_none()));
    }

    #[test]
    fn drop_count_arrives_in_every_slot_after_reuse() {
        let (server, client) = pair();
        super::super::enable_drop_count(&server).unwrap();
        let to = server.local_addr().unwrap();
        let mut batch = RecvBatch::new(2, 64);
        // First a datagram with no drop count, so the kernel shrinks that slot's
        // control length to zero: the next call must still see the count.
        client.send_to(b"first", to).unwrap();
        assert_eq!(batch.recv(&server, 2).unwrap(), 1);
        assert_eq!(batch.datagrams().next().unwrap().kernel_drops, None);
        // Overflow a minimal receive buffer so the kernel drops some.
        super::super::set_recv_buffer(&server, 1).unwrap();
        for _ in 0..200 {
            client.send_to(&[0; 64], to).unwrap();
        }
        // Datagrams queued before the first drop carry no count: drain them, then
        // the next one, received again in slot 0, carries it.
        while batch.recv(&server, 2).is_ok_and(|n| n > 0) {}
        client.send_to(b"after", to).unwrap();
        assert_eq!(batch.recv(&server, 2).unwrap(), 1);
        let seen = batch.datagrams().next().unwrap().kernel_drops;
        assert!(seen.is_some_and(|n| n > 0), "no drop count: {seen:?}");
    }
}
