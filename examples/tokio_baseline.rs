//! The baseline for BENCHMARKS.md: the best server we know how to write with tokio for
//! the same job, not shipped in the product (tokio is a dev-dependency). Every ratio
//! in the matrix is against it, so it is meant to be hard to beat, while staying
//! plain tokio: tasks, `readable()`/`try_*` I/O, a bounded channel.
//!
//! Same work and same output as `sockpool-server -q`: line framing (`\n`, a `\r`
//! before it stripped, a final unterminated line delivered at end of stream, lines
//! over 65,536 bytes skipped), `!Disconnect` closes the connection, the spec's text
//! format byte for byte (through sockpool's own formatter, so the comparison
//! measures the I/O architecture, not the formatting code), echo, discard, UDP.
//!
//! How (BENCHMARKS.md says why each is the idiomatic choice):
//! - a multi-thread runtime with `-w` worker threads;
//! - one `SO_REUSEPORT` listener per worker, each with its own accept-loop task, so
//!   accepting is spread like the rest of the work; a task per connection
//!   (`tokio::spawn`), `TCP_NODELAY`;
//! - `readable().await` then `try_read` into a per-thread 64 KiB buffer: an idle
//!   connection holds no read buffer, only its unfinished line;
//! - each read is cut into lines and formatted into one batch with one timestamp
//!   and one formatted line start; lines with nothing to escape are copied whole;
//! - batches go through a bounded channel (256 batches: backpressure by `await`,
//!   which stops reading and lets TCP flow control reach the sender) to one writer
//!   thread with a 1 MiB `BufWriter` on stdout, which grows a pipe to 1 MiB; spent
//!   batches come back for reuse. Echo and discard never touch the writer;
//! - UDP: one `SO_REUSEPORT` socket per worker, each read by its own task with
//!   `recvmmsg` (32 datagrams per call) inside `UdpSocket::try_io`, one timestamp
//!   per call;
//! - TLS (`--tls-cert`, `--tls-key`): tokio-rustls on sockpool's rustls and its ring
//!   provider, no TLS 1.3 session tickets (as sockpool), a `TlsAcceptor` handshake
//!   (10 s timeout, sockpool's default) in the connection's task, then the same
//!   loop: wait for the socket to be readable, then one non-waiting read of
//!   plaintext into the worker thread's buffer, so an idle TLS connection holds no
//!   read buffer either.
//!
//! `tokio_baseline [-l ADDR] [-w WORKERS] [--mode print|echo|discard] [--recv-buffer BYTES]
//! [--tls-cert PEM --tls-key PEM]`;
//! prints `listening tcp ADDR` and `listening udp ADDR` on stderr; SIGTERM/SIGINT exit.

use std::cell::RefCell;
use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use socket2::{Domain, Socket, Type};
use sockpool::message::{Message, Peer, Proto};
use sockpool::output::text::{LineStart, escape, is_plain_lines};
use sockpool::output::{Clock, Format, pipe};
use tokio::io::{AsyncRead, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Print,
    Echo,
    Discard,
}

/// Bytes read at once, per worker thread.
const READ_BYTES: usize = 64 * 1024;
/// sockpool's default `--max-frame`: a longer line is skipped, not buffered.
const MAX_FRAME: usize = 65_536;
/// Batches queued for the writer before readers wait.
const CHANNEL_BATCHES: usize = 256;
/// The writer's buffer on stdout.
const WRITER_BYTES: usize = 1 << 20;
/// A batch is handed over at the end of a read, or once it is this big.
const BATCH_BYTES: usize = 64 * 1024;
/// Datagrams per `recvmmsg`.
const UDP_SLOTS: usize = 32;
/// `recvmmsg` calls per wake-up before the task goes back to the scheduler.
const UDP_CALLS_PER_TURN: usize = 8;
const DISCONNECT: &[u8] = b"!Disconnect";
/// sockpool's default `--tls-handshake-timeout`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// The read buffer of this worker thread: a task borrows it between
    /// `readable()` and the end of the read's processing, with no `await` in
    /// between, so tasks on one thread never hold it at once.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
}

fn main() -> io::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().map_err(io::Error::other)?;
    let mut workers = 2;
    let mut mode = Mode::Print;
    let mut recv_buffer: Option<usize> = None;
    let (mut tls_cert, mut tls_key): (Option<PathBuf>, Option<PathBuf>) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "-l" | "--listen" => listen = value.parse().map_err(io::Error::other)?,
            "-w" | "--workers" => workers = value.parse().map_err(io::Error::other)?,
            "--recv-buffer" => recv_buffer = Some(value.parse().map_err(io::Error::other)?),
            "--tls-cert" => tls_cert = Some(value.into()),
            "--tls-key" => tls_key = Some(value.into()),
            "--mode" => {
                mode = match value.as_str() {
                    "print" => Mode::Print,
                    "echo" => Mode::Echo,
                    "discard" => Mode::Discard,
                    other => return Err(io::Error::other(format!("unknown mode {other}"))),
                }
            }
            other => return Err(io::Error::other(format!("unknown flag {other}"))),
        }
    }
    let workers = usize::max(workers, 1);
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(Arc::new(tls_config(&cert, &key)?))),
        (None, None) => None,
        _ => return Err(io::Error::other("--tls-cert and --tls-key go together")),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(listen, workers, mode, recv_buffer, tls))
}

/// sockpool's server configuration: the ring provider, TLS 1.2 and 1.3, no client
/// authentication, and no TLS 1.3 session tickets, so both do the same work per
/// handshake.
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> io::Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io::Error::other(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| io::Error::other(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// What every task shares: the mode and the way to the writer.
struct Shared {
    mode: Mode,
    tx: mpsc::Sender<Vec<u8>>,
    /// Spent batches, back from the writer, so a batch is not a fresh allocation.
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    next_conn: AtomicU64,
    tls: Option<TlsAcceptor>,
}

impl Shared {
    fn batch(&self) -> Vec<u8> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(2 * BATCH_BYTES))
    }
}

async fn serve(
    listen: SocketAddr,
    workers: usize,
    mode: Mode,
    recv_buffer: Option<usize>,
    tls: Option<TlsAcceptor>,
) -> io::Result<()> {
    // The first listener picks the port (when 0); the others share it.
    let first = reuseport(listen, Type::STREAM)?;
    let local = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(reuseport(local, Type::STREAM)?);
    }
    eprintln!("listening tcp {local}");
    let mut udp = Vec::new();
    for _ in 0..workers {
        let socket = reuseport(local, Type::DGRAM)?;
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        udp.push(UdpSocket::from_std(socket.into())?);
    }
    eprintln!("listening udp {}", udp[0].local_addr()?);

    let (tx, rx) = mpsc::channel::<Vec<u8>>(CHANNEL_BATCHES);
    let (spare_tx, spare) = crossbeam_channel::bounded(CHANNEL_BATCHES);
    std::thread::spawn(move || write_stdout(rx, spare_tx));
    let shared = Arc::new(Shared {
        mode,
        tx,
        spare,
        next_conn: AtomicU64::new(0),
        tls,
    });
    for listener in listeners {
        let listener = TcpListener::from_std(listener.into())?;
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
    }
    for socket in udp {
        tokio::spawn(serve_udp(socket, Arc::clone(&shared)));
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    std::process::exit(0)
}

fn reuseport(addr: SocketAddr, kind: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if kind == Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// The writer thread: owns stdout, writes batches through a 1 MiB buffer, flushes
/// when the queue runs dry, and gives spent batches back.
fn write_stdout(mut rx: mpsc::Receiver<Vec<u8>>, spare: crossbeam_channel::Sender<Vec<u8>>) {
    let stdout = io::stdout();
    pipe::grow(&stdout);
    let mut out = BufWriter::with_capacity(WRITER_BYTES, stdout.lock());
    while let Some(mut batch) = rx.blocking_recv() {
        loop {
            if out.write_all(&batch).is_err() {
                std::process::exit(1);
            }
            batch.clear();
            let _ = spare.try_send(batch);
            match rx.try_recv() {
                Ok(next) => batch = next,
                Err(_) => break,
            }
        }
        if out.flush().is_err() {
            std::process::exit(1);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                match shared.tls.clone() {
                    None => tokio::spawn(serve_tcp(stream, peer, shared)),
                    Some(acceptor) => tokio::spawn(async move {
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        if let Ok(Ok(stream)) = handshake.await {
                            let conn = TlsConn { stream };
                            serve_tcp(conn, peer, shared).await;
                        }
                    }),
                };
            }
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// One line, as the cutter hands it out.
struct Line<'a> {
    /// Without its `\n`, a `\r` before it stripped.
    text: &'a [u8],
    /// As received, `\n` included, when nothing in it needs escaping: already the
    /// message part of its text line.
    plain: Option<&'a [u8]>,
}

/// Cuts a TCP stream into lines across reads, holding only an unfinished line.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
    /// Inside a line longer than [`MAX_FRAME`]: skip to its end.
    skipping: bool,
}

impl Lines {
    /// Hands out every complete line in `data` (after the unfinished one from the
    /// last read); `Break` at `!Disconnect`, which is not handed out. In discard
    /// mode reads without a `!` are not cut at all; only print asks whether a read
    /// is plain.
    fn feed(
        &mut self,
        mut data: &[u8],
        mode: Mode,
        on_line: &mut impl FnMut(Line<'_>),
    ) -> ControlFlow<()> {
        if !self.pending.is_empty() || self.skipping {
            let Some(nl) = memchr::memchr(b'\n', data) else {
                self.keep(data);
                return ControlFlow::Continue(());
            };
            if self.skipping {
                self.skipping = false;
            } else {
                self.pending.extend_from_slice(&data[..nl]);
                let pending = std::mem::take(&mut self.pending);
                let flow = deliver(strip_cr(&pending), None, on_line);
                self.pending = pending;
                self.pending.clear();
                flow?;
            }
            data = &data[nl + 1..];
        }
        let end = memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
        let (lines, tail) = data.split_at(end);
        if mode != Mode::Discard || memchr::memchr(b'!', lines).is_some() {
            let plain = mode == Mode::Print && is_plain_lines(lines);
            let mut rest = lines;
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let (raw, after) = rest.split_at(nl + 1);
                rest = after;
                deliver(strip_cr(&raw[..nl]), plain.then_some(raw), on_line)?;
            }
        }
        self.keep(tail);
        ControlFlow::Continue(())
    }

    /// Keeps the start of an unfinished line, or skips it once it is too long (one
    /// byte more may be the `\r` of a `\r\n`, which does not count).
    fn keep(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.pending.len() + part.len() > MAX_FRAME + 1 {
            self.pending = Vec::new();
            self.skipping = true;
        } else {
            self.pending.extend_from_slice(part);
        }
    }

    /// At end of stream: the final line without its `\n`, as it is (`Break` if it
    /// is `!Disconnect`).
    fn finish(&mut self, on_line: &mut impl FnMut(Line<'_>)) -> ControlFlow<()> {
        if self.skipping || self.pending.is_empty() {
            return ControlFlow::Continue(());
        }
        let flow = deliver(&self.pending, None, on_line);
        self.pending.clear();
        flow
    }
}

fn deliver(
    text: &[u8],
    plain: Option<&[u8]>,
    on_line: &mut impl FnMut(Line<'_>),
) -> ControlFlow<()> {
    if text == DISCONNECT {
        return ControlFlow::Break(());
    }
    if text.len() <= MAX_FRAME {
        on_line(Line { text, plain });
    }
    ControlFlow::Continue(())
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends the text line of `line` (from connection `template`) to `batch`.
fn print_line(
    line: &Line<'_>,
    template: &Message<'_>,
    start: &mut LineStart,
    clock: &mut Clock,
    batch: &mut Vec<u8>,
) {
    batch.extend_from_slice(start.start(template, clock));
    match line.plain {
        Some(raw) => batch.extend_from_slice(raw),
        None => {
            escape(line.text, batch);
            batch.push(b'\n');
        }
    }
}

/// A connection's byte stream, plain or TLS: waits for data and hands one read,
/// made into the worker thread's buffer, to `f` (an empty read is the end of the
/// stream). The buffer is borrowed only while `f` runs, never across an `await`.
trait Conn {
    async fn read_with<R>(&mut self, f: impl FnMut(io::Result<&[u8]>) -> R) -> R;
    async fn reply(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl Conn for TcpStream {
    async fn read_with<R>(&mut self, mut f: impl FnMut(io::Result<&[u8]>) -> R) -> R {
        if let Err(e) = self.readable().await {
            return f(Err(e));
        }
        READ_BUF.with_borrow_mut(|buf| match self.try_read(buf) {
            Ok(n) => f(Ok(&buf[..n])),
            Err(e) => f(Err(e)),
        })
    }

    async fn reply(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await
    }
}

/// A TLS connection. tokio-rustls has no `try_read`, so the read is its
/// `poll_read` inside `poll_fn`: each poll decrypts into the worker's buffer and,
/// when there is plaintext, processes it within that same poll; `Pending` (the
/// socket ran dry, or tokio's cooperative budget is spent) waits with the task's
/// own waker. This is `readable()` + `try_read` for TLS: no read buffer held across
/// an `await`, as on the plain path.
struct TlsConn {
    stream: TlsStream<TcpStream>,
}

impl Conn for TlsConn {
    async fn read_with<R>(&mut self, mut f: impl FnMut(io::Result<&[u8]>) -> R) -> R {
        let stream = &mut self.stream;
        std::future::poll_fn(|cx| {
            READ_BUF.with_borrow_mut(|buf| {
                let mut read = ReadBuf::new(buf);
                match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(())) => Poll::Ready(f(Ok(read.filled()))),
                    Poll::Ready(Err(e)) => Poll::Ready(f(Err(e))),
                }
            })
        })
        .await
    }

    async fn reply(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}

/// What one read came to.
enum Step {
    More,
    Closed,
    Disconnect,
}

async fn serve_tcp(mut stream: impl Conn, addr: SocketAddr, shared: Arc<Shared>) {
    let peer = Peer::new(addr);
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mode = shared.mode;
    let mut lines = Lines::default();
    let mut start = LineStart::default();
    let mut clock = Clock::default();
    let mut batch = Vec::new();
    let mut replies = Vec::new();
    loop {
        let step = stream
            .read_with(|read| {
                let data = match read {
                    Ok([]) => return Step::Closed,
                    Ok(data) => data,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::More,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::More,
                    Err(_) => return Step::Closed,
                };
                // One clock reading per read, and only when it is printed.
                let received_at = if mode == Mode::Print {
                    SystemTime::now()
                } else {
                    SystemTime::UNIX_EPOCH
                };
                let template = Message {
                    proto: Proto::Tcp,
                    peer: &peer,
                    conn: Some(conn),
                    received_at,
                    bytes: &[],
                };
                let mut on_line = |line: Line<'_>| match mode {
                    Mode::Print => {
                        // Taken when there is something to print: an idle connection
                        // holds no batch.
                        if batch.capacity() == 0 {
                            batch = shared.batch();
                        }
                        print_line(&line, &template, &mut start, &mut clock, &mut batch)
                    }
                    Mode::Echo => {
                        replies.extend_from_slice(line.text);
                        replies.push(b'\n');
                    }
                    Mode::Discard => {}
                };
                match lines.feed(data, mode, &mut on_line) {
                    ControlFlow::Continue(()) => Step::More,
                    ControlFlow::Break(()) => Step::Disconnect,
                }
            })
            .await;
        if let Step::Closed = step {
            // The final unterminated line, if any.
            let template = Message {
                proto: Proto::Tcp,
                peer: &peer,
                conn: Some(conn),
                received_at: SystemTime::now(),
                bytes: &[],
            };
            let _ = lines.finish(&mut |line| match mode {
                Mode::Print => print_line(&line, &template, &mut start, &mut clock, &mut batch),
                Mode::Echo => {
                    replies.extend_from_slice(line.text);
                    replies.push(b'\n');
                }
                Mode::Discard => {}
            });
        }
        if !replies.is_empty() {
            if stream.reply(&replies).await.is_err() {
                break;
            }
            replies.clear();
        }
        // Hand over what this read produced.
        if !batch.is_empty() {
            let full = std::mem::take(&mut batch);
            if shared.tx.send(full).await.is_err() {
                break;
            }
        }
        if !matches!(step, Step::More) {
            break;
        }
    }
    // Dropping the stream closes it: after `!Disconnect` or end of stream, the
    // sender waiting for EOF knows everything was handled.
}

/// Buffers and addresses for one `recvmmsg` of up to [`UDP_SLOTS`] datagrams. The
/// headers point into the buffers; neither is resized after `new`.
struct RecvSlots {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into `bufs`, `iovs` and
// `addrs`, heap memory this value owns and never shares; moving it to another
// thread moves that ownership with it.
unsafe impl Send for RecvSlots {}

/// The largest UDP payload fits in 64 KiB.
const SLOT_BYTES: usize = 64 * 1024;

impl RecvSlots {
    fn new() -> Self {
        let mut bufs = vec![0u8; UDP_SLOTS * SLOT_BYTES];
        // SAFETY: all zeros is a valid sockaddr_storage and mmsghdr.
        let mut addrs: Vec<libc::sockaddr_storage> = (0..UDP_SLOTS)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_exact_mut(SLOT_BYTES)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SLOT_BYTES,
            })
            .collect();
        let hdrs = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: all zeros is a valid mmsghdr; the pointers set below stay
                // valid as long as `bufs`, `iovs` and `addrs` (never resized) live.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        RecvSlots {
            bufs,
            addrs,
            iovs,
            hdrs,
        }
    }

    /// One `recvmmsg` on `fd`, without waiting; how many datagrams came.
    fn recv(&mut self, fd: std::os::fd::RawFd) -> io::Result<usize> {
        debug_assert_eq!(self.iovs.len(), self.hdrs.len());
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_len = 0;
        }
        // SAFETY: `hdrs` holds UDP_SLOTS headers whose name and iovec pointers point
        // into live buffers of the sizes given; the timeout pointer is null.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                UDP_SLOTS as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last `recv`, and where it came from.
    fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let len = (self.hdrs[i].msg_len as usize).min(SLOT_BYTES);
        let bytes = &self.bufs[i * SLOT_BYTES..i * SLOT_BYTES + len];
        (bytes, socket_addr(&self.addrs[i]))
    }
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET), which fits
            // in and is aligned like sockaddr_storage.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6 (family AF_INET6).
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

/// How many senders' formatted addresses a UDP socket keeps.
const UDP_PEERS: usize = 1024;

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut slots = RecvSlots::new();
    let mut clock = Clock::default();
    // Senders' addresses are formatted once each, and many senders interleave:
    // the text of up to UDP_PEERS recent ones is kept (sockpool keeps as many),
    // and a full map starts over, so sprayed sources cannot grow it.
    let mut peers: std::collections::HashMap<std::net::SocketAddr, Peer> =
        std::collections::HashMap::new();
    let mut batch = shared.batch();
    let fd = socket.as_raw_fd();
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        for _ in 0..UDP_CALLS_PER_TURN {
            let n = match socket.try_io(Interest::READABLE, || slots.recv(fd)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: readiness is cleared; or an ICMP error
            };
            let received_at = SystemTime::now();
            for i in 0..n {
                let (bytes, Some(from)) = slots.datagram(i) else {
                    continue;
                };
                // A datagram is one message, as it came: sockpool does not (yet)
                // strip a trailing delimiter from datagrams, so neither does this.
                if bytes == DISCONNECT || bytes.len() > MAX_FRAME {
                    continue;
                }
                match shared.mode {
                    Mode::Print => {
                        if peers.len() >= UDP_PEERS && !peers.contains_key(&from) {
                            peers.clear();
                        }
                        let peer = peers.entry(from).or_insert_with(|| Peer::new(from));
                        let message = Message {
                            proto: Proto::Udp,
                            peer,
                            conn: None,
                            received_at,
                            bytes,
                        };
                        Format::Text.write(&message, &mut clock, &mut batch);
                    }
                    // Straight back; a full socket buffer drops the reply.
                    Mode::Echo => {
                        let _ = socket.try_send_to(bytes, from);
                    }
                    Mode::Discard => {}
                }
            }
            if batch.len() >= BATCH_BYTES {
                break;
            }
        }
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, shared.batch());
            // Waiting for the writer leaves datagrams in the socket buffer meanwhile
            // (the kernel drops them when it is full), the usual tokio way.
            if shared.tx.send(full).await.is_err() {
                return;
            }
        }
    }
}

/// The cutter does sockpool's framing: for any input and any split of it into
/// reads, the same messages as sockpool's own line decoder, up to `!Disconnect`.
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sockpool::frame::{Decoder, FrameConfig};

    /// What the cutter hands out, reads as given, then end of stream.
    fn cut(reads: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut on_line = |l: Line<'_>| {
            if let Some(raw) = l.plain {
                assert_eq!(
                    raw.strip_suffix(b"\n"),
                    Some(l.text),
                    "plain is the text and its newline"
                );
            }
            out.push(l.text.to_vec());
        };
        for read in reads {
            if lines.feed(read, Mode::Print, &mut on_line).is_break() {
                return (out, true);
            }
        }
        let end = lines.finish(&mut on_line);
        (out, end.is_break())
    }

    /// sockpool's messages for the same bytes, up to `!Disconnect`.
    fn sockpool(input: &[u8]) -> (Vec<Vec<u8>>, bool) {
        let mut d = Decoder::new(&FrameConfig::default());
        let mut out = Vec::new();
        let mut disconnected = false;
        let mut on_frame = |f: sockpool::frame::Frame<'_>| {
            if let sockpool::frame::Frame::Message(m) = f {
                if m == DISCONNECT {
                    disconnected = true;
                    return ControlFlow::Break(());
                }
                out.push(m.to_vec());
            }
            ControlFlow::Continue(())
        };
        if d.decode(input, &mut on_frame).is_continue() {
            let _ = d.finish(&mut on_frame);
        }
        (out, disconnected)
    }

    #[test]
    fn disconnect_ends_the_stream_even_split_or_last() {
        assert_eq!(cut(&[b"!Disconnect"]), (vec![], true));
        assert_eq!(
            cut(&[b"a\n!Discon", b"nect\r\nb\n"]),
            (vec![b"a".to_vec()], true)
        );
        assert_eq!(
            cut(&[b"x!Disconnect\n"]),
            (vec![b"x!Disconnect".to_vec()], false)
        );
    }

    #[test]
    fn long_lines_are_skipped_like_sockpool_does() {
        let mut input = vec![b'a'; MAX_FRAME];
        input.extend_from_slice(b"\r\n");
        input.extend(vec![b'b'; MAX_FRAME + 1]);
        input.extend_from_slice(b"\nok\n");
        input.extend(vec![b'c'; MAX_FRAME + 1]);
        for cut_at in [
            1,
            MAX_FRAME,
            MAX_FRAME + 1,
            MAX_FRAME + 2,
            2 * MAX_FRAME + 3,
        ] {
            let (a, b) = input.split_at(cut_at);
            assert_eq!(cut(&[a, b]), sockpool(&input), "cut at {cut_at}");
        }
        assert_eq!(cut(&[&input]).0.len(), 2);
    }

    proptest! {
        #[test]
        fn any_split_gives_sockpools_messages(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"!Disconnect".to_vec()),
                    Just(b"\n".to_vec()),
                    Just(b"\r".to_vec()),
                    Just(b"\r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..12,
            ),
            splits in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let input: Vec<u8> = parts.concat();
            let mut cuts: Vec<usize> = splits.iter().map(|s| s % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut reads = Vec::new();
            let mut from = 0;
            for c in cuts {
                reads.push(&input[from..c]);
                from = c;
            }
            reads.push(&input[from..]);
            prop_assert_eq!(cut(&reads), sockpool(&input));
        }
    }
}
