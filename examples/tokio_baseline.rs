//! The baseline for BENCHMARKS.md: the server a good tokio programmer would write for
//! the same job, not shipped in the product (tokio is a dev-dependency).
//!
//! Same work as `sockpool-server`: line framing (`\n`, `\r` stripped), the spec's text
//! format (through sockpool's own formatter, so the comparison measures the I/O
//! architecture, not the formatting code) written to stdout in batches by one writer
//! thread behind a bounded channel (backpressure by `await`), echo, discard, and UDP.
//!
//! `tokio_baseline [-l ADDR] [-w WORKERS] [--mode print|echo|discard] [--recv-buffer BYTES]`; prints
//! `listening tcp ADDR` and `listening udp ADDR` on stderr; SIGTERM/SIGINT exit.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use sockpool::message::{Message, Peer, Proto};
use sockpool::output::{Clock, Format};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Print,
    Echo,
    Discard,
}

const BATCH: usize = 64 * 1024;

fn main() -> std::io::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().map_err(std::io::Error::other)?;
    let mut workers = 2;
    let mut mode = Mode::Print;
    let mut recv_buffer: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "-l" | "--listen" => listen = value.parse().map_err(std::io::Error::other)?,
            "-w" | "--workers" => workers = value.parse().map_err(std::io::Error::other)?,
            "--recv-buffer" => recv_buffer = Some(value.parse().map_err(std::io::Error::other)?),
            "--mode" => {
                mode = match value.as_str() {
                    "print" => Mode::Print,
                    "echo" => Mode::Echo,
                    "discard" => Mode::Discard,
                    other => return Err(std::io::Error::other(format!("unknown mode {other}"))),
                }
            }
            other => return Err(std::io::Error::other(format!("unknown flag {other}"))),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(listen, mode, recv_buffer))
}

async fn serve(listen: SocketAddr, mode: Mode, recv_buffer: Option<usize>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    eprintln!("listening tcp {local}");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        None,
    )?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    let udp = UdpSocket::from_std(socket.into())?;
    eprintln!("listening udp {}", udp.local_addr()?);

    // One writer thread owns stdout; tasks send it whole batches.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        while let Some(batch) = rx.blocking_recv() {
            if out.write_all(&batch).is_err() {
                std::process::exit(1);
            }
        }
    });

    tokio::spawn(serve_udp(Arc::new(udp), tx.clone(), mode));
    use tokio::signal::unix::{SignalKind, signal};
    // Made once: a fresh ctrl_c() future per accept would register anew each time.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_tcp(stream, peer, tx.clone(), mode));
                }
            }
            _ = term.recv() => std::process::exit(0),
            _ = int.recv() => std::process::exit(0),
        }
    }
}

async fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>, mode: Mode) {
    let peer = Peer::new(peer);
    let mut clock = Clock::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut replies = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let received_at = SystemTime::now();
        let mut data = &buf[..n];
        while let Some(end) = memchr::memchr(b'\n', data) {
            let line: &[u8] = if pending.is_empty() {
                &data[..end]
            } else {
                pending.extend_from_slice(&data[..end]);
                &pending
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match mode {
                Mode::Print => Format::Text.write(
                    &Message {
                        proto: Proto::Tcp,
                        peer: &peer,
                        conn: Some(0),
                        received_at,
                        bytes: line,
                    },
                    &mut clock,
                    &mut batch,
                ),
                Mode::Echo => {
                    replies.extend_from_slice(line);
                    replies.push(b'\n');
                }
                Mode::Discard => {}
            }
            pending.clear();
            data = &data[end + 1..];
        }
        pending.extend_from_slice(data);
        if !replies.is_empty() {
            if stream.write_all(&replies).await.is_err() {
                break;
            }
            replies.clear();
        }
        // Hand over what this read produced, as sockpool does at the end of a turn.
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(full).await.is_err() {
                break;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, tx: mpsc::Sender<Vec<u8>>, mode: Mode) {
    let mut clock = Clock::default();
    let mut buf = vec![0u8; 65536];
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        // Read everything that is there, then hand the batch over.
        loop {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => match mode {
                    Mode::Print => Format::Text.write(
                        &Message {
                            proto: Proto::Udp,
                            peer: &Peer::new(from),
                            conn: None,
                            received_at: SystemTime::now(),
                            bytes: &buf[..n],
                        },
                        &mut clock,
                        &mut batch,
                    ),
                    Mode::Echo => {
                        let _ = socket.try_send_to(&buf[..n], from);
                    }
                    Mode::Discard => {}
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
            if batch.len() >= BATCH {
                break;
            }
        }
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            // UDP must not wait for output: a full channel drops the batch.
            let _ = tx.try_send(full);
        }
    }
}
