//! The "raw ceiling" for BENCHMARKS.md: a TCP reader that only reads and counts
//! newlines, with no framing, formatting or output: the least work a server can do
//! per byte. Two threads (like the servers' `-w 2`), each with its own
//! `SO_REUSEPORT` listener and epoll loop, read 256 KiB at a time until the socket
//! is empty. An earlier version used a thread per connection, and with 100
//! connections on 2 cores its context switches made it slower than the servers it
//! was meant to bound. It closes each connection at end of stream, so a sender that
//! half-closes and waits for EOF knows everything it sent was read. It runs until
//! killed.
//!
//! `raw_ceiling [-l ADDR] [-w THREADS]`; prints `listening tcp ADDR` on stderr.

use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Socket, Type};

const LISTENER: Token = Token(usize::MAX - 1);

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().map_err(io::Error::other)?;
    let mut threads = 2;
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "-l" | "--listen" => listen = value.parse().map_err(io::Error::other)?,
            "-w" | "--workers" => threads = value.parse().map_err(io::Error::other)?,
            other => return Err(io::Error::other(format!("unknown flag {other}"))),
        }
    }
    // The first listener picks the port (when 0); the others share it.
    let first = reuseport_listener(listen)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport_listener(addr)?);
    }
    eprintln!("listening tcp {addr}");
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || serve(l)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<TcpStream> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = 0u64;
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let entry = conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE,
                    )?;
                    entry.insert(stream);
                }
                continue;
            }
            let key = event.token().0;
            let Some(stream) = conns.get_mut(key) else {
                continue;
            };
            // Read until the socket is empty; close at end of stream or on error.
            let closed = loop {
                match stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if closed {
                conns.remove(key);
            }
        }
        std::hint::black_box(lines);
    }
}
