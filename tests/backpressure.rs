//! Backpressure: when stdout is not read, the server stops reading TCP and flow
//! control stalls the senders; nothing is lost or reordered once output resumes.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Options, Server, parse_text, poll_fd, summary};

const SENDERS: usize = 4;
/// 4 × 12,500 × 1,000 bytes = 50 MB.
const MESSAGES: usize = 12_500;
const SIZE: usize = 1000;

/// Message `seq` of sender `i`: `s<i> <seq> ppp…`, `SIZE - 1` bytes (plus `\n`).
fn message(i: usize, seq: usize) -> String {
    let head = format!("s{i} {seq:08} ");
    format!("{head}{}", "p".repeat(SIZE - 1 - head.len()))
}

#[derive(Default)]
struct SenderState {
    /// Waiting for the socket to become writable after `WouldBlock`.
    waiting: AtomicBool,
    finished: AtomicBool,
    written: AtomicU64,
}

/// Sends every message on a non-blocking socket; when the kernel refuses more it
/// marks itself waiting and polls for room (within a deadline).
fn send_all(mut stream: TcpStream, i: usize, state: &SenderState, until: Instant) {
    stream.set_nonblocking(true).expect("non-blocking");
    let fd = stream.as_raw_fd();
    let mut chunk = Vec::with_capacity(64 * SIZE);
    for first in (0..MESSAGES).step_by(64) {
        chunk.clear();
        for seq in first..(first + 64).min(MESSAGES) {
            chunk.extend_from_slice(message(i, seq).as_bytes());
            chunk.push(b'\n');
        }
        let mut off = 0;
        while off < chunk.len() {
            match stream.write(&chunk[off..]) {
                Ok(n) => {
                    off += n;
                    state.written.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    state.waiting.store(true, Ordering::SeqCst);
                    let ready = poll_fd(fd, libc::POLLOUT, until);
                    state.waiting.store(false, Ordering::SeqCst);
                    assert!(ready, "sender {i} blocked past its deadline");
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => panic!("sender {i}: {err}"),
            }
        }
    }
    state.finished.store(true, Ordering::SeqCst);
    stream.set_nonblocking(false).expect("blocking");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
}

#[test]
fn slow_output_stalls_senders_and_loses_nothing() {
    let started = Instant::now();
    let until = started + Duration::from_secs(90);
    let mut server = Server::start_with(Options {
        raw_stdout: true,
        ..Options::default()
    });
    let mut stdout = server.take_stdout();
    let out_fd = stdout.as_raw_fd();
    let states: Vec<Arc<SenderState>> = (0..SENDERS).map(|_| Arc::default()).collect();
    let senders: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(i, state)| {
            let stream = TcpStream::connect_timeout(&server.tcp_addr(), support::WAIT).unwrap();
            let state = Arc::clone(state);
            thread::spawn(move || send_all(stream, i, &state, until))
        })
        .collect();

    // Phase 1: stdout is not read. Wait until the pipe is full and every sender is
    // held back by TCP flow control.
    let stall_deadline = Instant::now() + support::WAIT;
    loop {
        let (pending, size) = support::pipe_fill(out_fd);
        let held = states
            .iter()
            .all(|s| s.waiting.load(Ordering::SeqCst) || s.finished.load(Ordering::SeqCst));
        if support::pipe_is_full(pending, size) && held {
            break;
        }
        assert!(
            Instant::now() < stall_deadline,
            "senders never stalled: pipe {pending} of {size}"
        );
        // Polling a state that has no event to wait on; bounded by the deadline.
        thread::sleep(Duration::from_millis(10));
    }
    let written: Vec<u64> = states
        .iter()
        .map(|s| s.written.load(Ordering::SeqCst))
        .collect();
    let stalled = states
        .iter()
        .filter(|s| !s.finished.load(Ordering::SeqCst))
        .count();
    assert!(
        stalled > 0,
        "every sender finished while stdout was unread: the server buffered {written:?} bytes"
    );
    let (_, peak) = server.memory();
    assert!(
        peak < 48 * 1024 * 1024,
        "server peak RSS {} MB while output stalled",
        peak >> 20
    );

    // Phase 2: read everything, checking each sender's sequence.
    let total = SENDERS * MESSAGES;
    let mut next = [0usize; SENDERS];
    let mut count = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut pending: Vec<u8> = Vec::new();
    while count < total {
        assert!(
            poll_fd(out_fd, libc::POLLIN, until),
            "output stopped after {count} of {total} lines"
        );
        let n = stdout.read(&mut buf).expect("read stdout");
        assert!(n > 0, "stdout ended after {count} of {total} lines");
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = memchr(&pending[start..]) {
            let line = std::str::from_utf8(&pending[start..start + end]).expect("UTF-8");
            let msg = parse_text(line).msg;
            let i: usize = msg[1..msg.find(' ').unwrap()].parse().unwrap();
            assert_eq!(msg, message(i, next[i]), "sender {i}");
            next[i] += 1;
            count += 1;
            start += end + 1;
        }
        pending.drain(..start);
    }
    assert_eq!(next, [MESSAGES; SENDERS]);
    for sender in senders {
        sender.join().expect("sender");
    }
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(support::deadline());
    assert!(status.success(), "exit {status}");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert!(
        pending.is_empty() && rest.is_empty(),
        "extra output: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let stderr = server.all_stderr();
    let s = summary(&stderr);
    assert!(
        s.contains(&format!("messages {total} (tcp {total}, udp 0)")),
        "{s}"
    );
    assert!(s.contains("dropped 0 ("), "{s}");
    let _ = writeln!(
        io::stderr(),
        "backpressure: stalled with {written:?} bytes sent; done in {:?}",
        started.elapsed()
    );
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}
