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
//! With `--print` it is the *print ceiling*: it also cuts each read into lines and,
//! for every line, writes to stdout as many bytes as sockpool's text format would
//! (`<27-byte timestamp> tcp <peer> ` then the line), from a line start made once
//! per connection at accept: the same bytes into the same pipe, with no per-message
//! formatting, no clock, no escaping and no hand-off to another thread (each
//! thread writes its batch itself, one read's worth at a time, under a lock). It
//! bounds what a server that prints can reach, where the raw ceiling bounds one
//! that only reads.
//!
//! `raw_ceiling [-l ADDR] [-w THREADS] [--print]`; prints `listening tcp ADDR` on stderr.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Socket, Type};

const LISTENER: Token = Token(usize::MAX - 1);

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().map_err(io::Error::other)?;
    let mut threads = 2;
    let mut print = false;
    while let Some(arg) = args.next() {
        if arg == "--print" {
            print = true;
            continue;
        }
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
    let stdout = print.then(|| {
        // As sockpool does: a 1 MiB pipe buffer lets the writer and reader overlap.
        sockpool::output::pipe::grow(&io::stdout());
        // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps this
        // File from closing it. Writes go around std's line-buffered Stdout.
        Arc::new(Mutex::new(ManuallyDrop::new(unsafe {
            File::from_raw_fd(1)
        })))
    });
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let stdout = stdout.clone();
            std::thread::spawn(move || serve(l, stdout))
        })
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

type Stdout = Arc<Mutex<ManuallyDrop<File>>>;

/// One connection; with `--print`, its text line start and unfinished line.
struct Conn {
    stream: TcpStream,
    start: Vec<u8>,
    pending: Vec<u8>,
}

/// sockpool's `<timestamp> tcp <peer> `, with a fixed timestamp of the right width.
fn line_start(peer: SocketAddr) -> Vec<u8> {
    format!("2026-01-01T00:00:00.000000Z tcp {peer} ").into_bytes()
}

/// Appends, for every complete line of `data` (after `conn`'s unfinished one),
/// its line start and the line; keeps the unfinished end.
fn print_lines(conn: &mut Conn, data: &[u8], out: &mut Vec<u8>) {
    let mut data = data;
    if !conn.pending.is_empty() {
        let Some(nl) = memchr::memchr(b'\n', data) else {
            conn.pending.extend_from_slice(data);
            return;
        };
        out.extend_from_slice(&conn.start);
        out.extend_from_slice(&conn.pending);
        out.extend_from_slice(&data[..=nl]);
        conn.pending.clear();
        data = &data[nl + 1..];
    }
    let mut rest = data;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        out.extend_from_slice(&conn.start);
        out.extend_from_slice(&rest[..=nl]);
        rest = &rest[nl + 1..];
    }
    conn.pending.extend_from_slice(rest);
}

fn serve(listener: std::net::TcpListener, stdout: Option<Stdout>) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut out: Vec<u8> = Vec::new();
    let mut lines = 0u64;
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, peer)) = listener.accept() {
                    let entry = conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE,
                    )?;
                    let start = if stdout.is_some() {
                        line_start(peer)
                    } else {
                        Vec::new()
                    };
                    entry.insert(Conn {
                        stream,
                        start,
                        pending: Vec::new(),
                    });
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            // Read until the socket is empty; close at end of stream or on error.
            let closed = loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => match &stdout {
                        None => lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64,
                        Some(stdout) => {
                            print_lines(conn, &buf[..n], &mut out);
                            write_out(stdout, &mut out)?;
                        }
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if closed {
                let conn = conns.remove(key);
                // The final line without its newline, as sockpool delivers it.
                if let Some(stdout) = &stdout
                    && !conn.pending.is_empty()
                {
                    out.extend_from_slice(&conn.start);
                    out.extend_from_slice(&conn.pending);
                    out.push(b'\n');
                    write_out(stdout, &mut out)?;
                }
            }
        }
        std::hint::black_box(lines);
    }
}

fn write_out(stdout: &Stdout, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        let mut file = stdout.lock().map_err(|_| io::Error::other("poisoned"))?;
        file.write_all(out)?;
        out.clear();
    }
    Ok(())
}
