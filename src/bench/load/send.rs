//! Writing: TCP messages are encoded a batch at a time into the connection's
//! outbox and written until the socket would block or the turn's budget is spent;
//! UDP messages go one datagram each. A message counts as sent once the kernel has
//! all of it.

use std::io::{self, Write};
use std::time::Duration;

use crate::frame::{self, DISCONNECT};

use super::super::payload;
use super::conn::{Sock, State};
use super::{ErrorKind, Load};

/// Bytes one connection may write per turn before the others get theirs.
const WRITE_BUDGET: usize = 256 * 1024;
/// Datagrams one UDP connection may send per turn.
const UDP_BUDGET: u64 = 64;

impl Load {
    pub(super) fn pump_tcp(&mut self, i: usize, el: Duration) {
        let mut budget = WRITE_BUDGET;
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            if !conn.writable {
                return;
            }
            if !conn.out.is_flushed() {
                let Sock::Tcp(stream) = &mut conn.sock else {
                    return;
                };
                match stream.write(conn.out.pending()) {
                    Ok(n) => {
                        conn.out.off += n;
                        budget = budget.saturating_sub(n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        conn.writable = false;
                        return;
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        self.fail(i, ErrorKind::of(&err));
                        return;
                    }
                }
                if !conn.out.is_flushed() {
                    continue;
                }
                self.batch_written(i, el);
                continue;
            }
            let conn = &self.conns[i];
            if conn.state == State::Closing {
                if !conn.shut {
                    if let Sock::Tcp(stream) = &mut self.conns[i].sock {
                        let _ = stream.shutdown_write();
                    }
                    self.conns[i].shut = true;
                }
                return;
            }
            if conn.state != State::Sending {
                return;
            }
            if budget == 0 {
                self.queue(i);
                return;
            }
            let n = self.wanted(conn);
            if n == 0 {
                return;
            }
            self.encode(i, n, el);
        }
    }

    /// Encodes `n` messages of connection `i` into its outbox.
    fn encode(&mut self, i: usize, n: u64, el: Duration) {
        let (size, delimiter, frame) = (
            self.config.size,
            self.config.frame.delimiter,
            self.config.frame,
        );
        let closed_echo = self.config.echo && !self.pacer.is_open();
        let timeout = self.config.timeout;
        let warmup = self.config.warmup;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.span.first_measured.is_none() && el >= warmup {
            conn.span.first_measured = Some(conn.span.next_seq);
        }
        let start = conn.span.next_seq;
        conn.out.reset(start);
        let mut message = Vec::with_capacity(size);
        for seq in start..start + n {
            message.clear();
            payload::write(conn.id, seq, size, delimiter, &mut message);
            frame::encode(&frame, &message, &mut conn.out.buf);
        }
        conn.span.next_seq = start + n;
        conn.out.batch = (start, start + n);
        if closed_echo {
            conn.inflight.sent(start, el, timeout);
        }
    }

    /// The whole outbox of `i` is in the kernel: its messages are sent.
    fn batch_written(&mut self, i: usize, el: Duration) {
        let size = self.config.size as u64;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        let (start, end) = conn.out.batch;
        conn.out.reset(end);
        if end <= start {
            return; // the !Disconnect
        }
        let measured = conn.span.measured_in(start, end);
        conn.counted.written = end;
        conn.counted.measured_sent += measured;
        self.tally
            .sent(measured, (end - start) - measured, size, el);
    }

    pub(super) fn pump_udp(&mut self, i: usize, el: Duration) {
        let size = self.config.size;
        let delimiter = self.config.frame.delimiter;
        let closed_echo = self.config.echo && !self.pacer.is_open();
        let timeout = self.config.timeout;
        let warmup = self.config.warmup;
        let mut message = Vec::with_capacity(size);
        let mut sent = 0;
        while sent < UDP_BUDGET {
            let Some(conn) = self.conns.get(i) else {
                return;
            };
            if conn.state != State::Sending || !conn.writable {
                return;
            }
            let n = self.wanted(conn);
            if n == 0 {
                return;
            }
            let conn = &mut self.conns[i];
            if conn.span.first_measured.is_none() && el >= warmup {
                conn.span.first_measured = Some(conn.span.next_seq);
            }
            let seq = conn.span.next_seq;
            message.clear();
            payload::write(conn.id, seq, size, delimiter, &mut message);
            let Sock::Udp(socket) = &conn.sock else {
                return;
            };
            match socket.send(&message) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // An ICMP error from an earlier datagram (nobody listening):
                    // counted, and this message is skipped, not sent.
                    conn.span.next_seq += 1;
                    self.tally.error(ErrorKind::of(&err));
                    sent += 1;
                    continue;
                }
            }
            conn.span.next_seq = seq + 1;
            conn.counted.written = seq + 1;
            if closed_echo {
                conn.inflight.sent(seq, el, timeout);
            }
            if conn.span.is_measured(seq) {
                conn.counted.measured_sent += 1;
                self.tally.sent(1, 0, size as u64, el);
            } else {
                self.tally.sent(0, 1, size as u64, el);
            }
            sent += 1;
        }
        self.queue(i);
    }

    pub(super) fn start_close(&mut self, i: usize, el: Duration) {
        let timeout = self.config.timeout;
        let frame = self.config.frame;
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        match &conn.sock {
            Sock::Udp(socket) => {
                let _ = socket.send(DISCONNECT);
                self.done(i);
            }
            Sock::Tcp(_) => {
                conn.state = State::Closing;
                conn.deadline = el.saturating_add(timeout);
                let end = conn.out.batch.1;
                conn.out.reset(end);
                frame::encode(&frame, DISCONNECT, &mut conn.out.buf);
                self.pump_tcp(i, el);
            }
            Sock::None => self.done(i),
        }
    }
}
