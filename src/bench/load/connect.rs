//! Setting the connections up: TCP connects a window at a time (non-blocking,
//! completed when the socket turns writable), UDP sockets bound and connected at
//! once. Bounded by `--connect-timeout`; a connection that fails is counted and left
//! out, never fatal.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Token};

use crate::frame::Decoder;

use super::super::stream::{BenchStream, Target};
use super::conn::{Sock, State};
use super::{ErrorKind, Load};

/// Connections being set up at once per thread: more would overflow the server's
/// SYN and accept queues and turn into one-second SYN retransmits.
const CONNECT_WINDOW: usize = 256;

impl Load {
    pub(super) fn connect_all(&mut self) {
        let deadline = Instant::now() + self.config.connect_timeout;
        let mut pending: VecDeque<usize> = (0..self.conns.len()).collect();
        let mut connecting = 0usize;
        let mut events = Events::with_capacity(1024);
        loop {
            while connecting < CONNECT_WINDOW {
                let Some(i) = pending.pop_front() else { break };
                if self.start_connect(i) {
                    connecting += 1;
                }
            }
            if connecting == 0 && pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                self.fail_unconnected(ErrorKind::Timeout);
                return;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            if let Err(err) = self.poll.poll(&mut events, Some(wait))
                && err.kind() != io::ErrorKind::Interrupted
            {
                self.fail_unconnected(ErrorKind::Other);
                return;
            }
            for event in events.iter() {
                let i = event.token().0;
                let Some(conn) = self.conns.get_mut(i) else {
                    continue;
                };
                if conn.state != State::Connecting {
                    continue;
                }
                let Sock::Tcp(stream) = &mut conn.sock else {
                    continue;
                };
                let outcome = match stream.take_error() {
                    Ok(Some(err)) | Err(err) => Err(err),
                    Ok(None) => stream.connected(),
                };
                match outcome {
                    Ok(false) => {}
                    Ok(true) => {
                        stream.set_nodelay();
                        conn.state = State::Sending;
                        connecting -= 1;
                        self.tally.total.connected += 1;
                    }
                    Err(err) => {
                        connecting -= 1;
                        self.fail(i, ErrorKind::of(&err));
                    }
                }
            }
        }
    }

    fn fail_unconnected(&mut self, kind: ErrorKind) {
        for i in 0..self.conns.len() {
            if matches!(self.conns[i].state, State::Idle | State::Connecting) {
                self.fail(i, kind);
            }
        }
    }

    /// Starts connecting `i`; true if a TCP connect is now in progress.
    fn start_connect(&mut self, i: usize) -> bool {
        let udp = self.config.udp;
        let echo = self.config.echo;
        let frame = self.config.frame;
        let target = self.target.clone();
        let tls = self.config.tls.clone();
        let registry = self.poll.registry();
        let Some(conn) = self.conns.get_mut(i) else {
            return false;
        };
        let attempt = if let (true, Target::Ip(target)) = (udp, &target) {
            let target = *target;
            let local: SocketAddr = match target {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            UdpSocket::bind(local).and_then(|mut socket| {
                socket.connect(target)?;
                registry.register(
                    &mut socket,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(Sock::Udp(socket))
            })
        } else {
            BenchStream::connect(&target, tls.as_ref()).and_then(|mut stream| {
                registry.register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(Sock::Tcp(stream))
            })
        };
        match attempt {
            Ok(sock) => {
                let tcp = matches!(sock, Sock::Tcp(_));
                conn.sock = sock;
                if echo && tcp {
                    conn.decoder = Some(Decoder::new(&frame));
                }
                if tcp {
                    conn.state = State::Connecting;
                    true
                } else {
                    conn.state = State::Sending;
                    self.tally.total.connected += 1;
                    false
                }
            }
            Err(err) => {
                self.fail(i, ErrorKind::of(&err));
                false
            }
        }
    }
}
