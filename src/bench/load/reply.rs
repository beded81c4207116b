//! Reading: replies are cut (TCP with the connection's decoder, UDP one per
//! datagram), parsed back into (connection, sequence number), checked against what
//! was sent, and timed. End of stream after `!Disconnect` is the orderly end; before
//! it, an error.

use std::io::{self, Read};
use std::ops::ControlFlow;
use std::time::Duration;

use crate::frame::Frame;

use super::super::payload;
use super::conn::{Sock, State};
use super::echo;
use super::sequence::Arrival;
use super::{ErrorKind, Load};

impl Load {
    pub(super) fn read(&mut self, i: usize, el: Duration) {
        if self.config.udp {
            self.read_udp(i, el);
        } else {
            self.read_tcp(i, el);
        }
    }

    fn read_tcp(&mut self, i: usize, el: Duration) {
        let mut replies = std::mem::take(&mut self.replies);
        replies.clear();
        let mut eof = false;
        let mut failed = None;
        {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            if !matches!(
                conn.state,
                State::Sending | State::Draining | State::Closing
            ) {
                self.replies = replies;
                return;
            }
            let Sock::Tcp(stream) = &mut conn.sock else {
                self.replies = replies;
                return;
            };
            loop {
                match stream.read(&mut self.rbuf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        if let Some(decoder) = &mut conn.decoder {
                            let input = self.rbuf.get(..n).unwrap_or_default();
                            let _ = decoder.decode(input, |f| {
                                if let Frame::Message(m) = f
                                    && let Some(reply) = payload::parse(m)
                                {
                                    replies.push(reply);
                                }
                                ControlFlow::Continue(())
                            });
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        failed = Some(ErrorKind::of(&err));
                        break;
                    }
                }
            }
        }
        for &(id, seq) in &replies {
            self.on_reply(i, id, seq, el);
        }
        self.replies = replies;
        if let Some(kind) = failed {
            self.fail(i, kind);
        } else if eof {
            if self.conns.get(i).is_some_and(|c| c.state == State::Closing) {
                self.tally.last_close = Some(el);
                self.done(i);
            } else {
                self.fail(i, ErrorKind::Closed);
            }
        } else {
            self.advance_state(i, el);
        }
    }

    fn read_udp(&mut self, i: usize, el: Duration) {
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            let Sock::Udp(socket) = &conn.sock else {
                return;
            };
            match socket.recv(&mut self.rbuf) {
                Ok(n) => {
                    if let Some((id, seq)) = self.rbuf.get(..n).and_then(payload::parse) {
                        self.on_reply(i, id, seq, el);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // ICMP port unreachable and the like: counted, never fatal.
                    self.tally.error(ErrorKind::of(&err));
                    // A pending ICMP error is reported once, then reading goes on;
                    // anything else stops this turn. Nobody is listening: in a
                    // closed loop the awaited reply will not come, so move on.
                    if err.kind() != io::ErrorKind::ConnectionRefused {
                        break;
                    }
                    if let Some(conn) = self.conns.get_mut(i)
                        && conn.inflight.give_up()
                    {
                        self.queue(i);
                    }
                }
            }
        }
        self.advance_state(i, el);
    }

    fn on_reply(&mut self, i: usize, id: u32, seq: u64, el: Duration) {
        let udp = self.config.udp;
        let schedule = self.pacer.schedule();
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if id != conn.id || seq >= conn.span.next_seq {
            return; // not an answer to anything this connection sent
        }
        let measured = conn.span.is_measured(seq);
        if udp {
            match conn.sequences.arrive(seq) {
                Arrival::Duplicate => {
                    if measured {
                        self.tally.total.duplicated += 1;
                    }
                    return;
                }
                Arrival::First { late } => {
                    if measured && late {
                        self.tally.total.reordered += 1;
                    }
                }
            }
        }
        conn.counted.replies += 1;
        let sent_at = conn.inflight.answered(seq);
        if measured {
            conn.counted.measured_received += 1;
            let latency = echo::latency(schedule, conn.id, seq, sent_at, el);
            self.tally.received(latency);
        } else {
            self.tally.total.warmup_received += 1;
        }
        if sent_at.is_some() {
            self.queue(i);
        }
    }
}
