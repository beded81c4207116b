//! The modes of the spec, end to end: echo (TCP and UDP), discard, broker, chat.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Server, summary};

/// Waits until the server has logged `n` opened connections, so relays reach them.
fn wait_opened(server: &Server, n: usize) {
    server.wait_stderr_count(n, |l| l.contains("connection opened"));
}

#[test]
fn echo_returns_each_tcp_message_exactly_and_prints_it() {
    let server = Server::start(&["--mode", "echo"]);
    let mut c = server.tcp();
    c.send(b"hello\r\n\xff\x00 binary\nlast");
    c.shutdown_write();
    // Echo replies in the same framing; the final unterminated message comes back framed.
    let mut echoed = Vec::new();
    c.stream.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"hello\n\xff\x00 binary\nlast\n");
    let printed = server.lines(3);
    assert!(printed[0].ends_with(" hello"), "{printed:?}");
    assert!(printed[1].ends_with(" \\xff\\x00 binary"), "{printed:?}");
}

#[test]
fn echo_with_quiet_does_not_print() {
    let mut server = Server::start(&["--mode", "echo", "-q"]);
    let mut c = server.tcp();
    c.send(b"quiet\n");
    assert_eq!(c.line(), "quiet");
    let (stdout, stderr) = server.finish();
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(summary(&stderr).contains("messages 1 (tcp 1"), "{stderr:?}");
}

#[test]
fn echo_returns_udp_datagrams_to_their_source() {
    let server = Server::start(&["--mode", "echo"]);
    let udp = server.udp();
    for msg in [&b"one"[..], b"two\nlines", b"\x00\xff"] {
        udp.send(msg).unwrap();
        let mut buf = [0u8; 64];
        let n = udp.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg);
    }
}

#[test]
fn a_never_reading_echo_client_keeps_server_memory_bounded() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let c = server.tcp();
    c.stream.set_nonblocking(true).unwrap();
    let line = [b'e'; 1023]
        .iter()
        .copied()
        .chain([b'\n'])
        .collect::<Vec<u8>>();
    let chunk: Vec<u8> = line.repeat(64);
    let mut sent = 0usize;
    let stop = Instant::now() + Duration::from_secs(30);
    // Write until the server stops reading: a write stays blocked for a whole second.
    loop {
        // Always go on from where the last (maybe partial) write stopped, so the
        // stream is whole lines and at most one unfinished line at the end.
        match (&c.stream).write(&chunk[sent % chunk.len()..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let until = Instant::now() + Duration::from_secs(1);
                if !support::poll_fd(c.stream.as_raw_fd(), libc::POLLOUT, until) {
                    break;
                }
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            Instant::now() < stop,
            "the server kept reading: {sent} bytes sent"
        );
        assert!(
            sent < 512 << 20,
            "the server kept reading: {sent} bytes sent"
        );
    }
    let (rss, _) = server.memory();
    assert!(
        rss < 64 << 20,
        "server RSS {rss} bytes after {sent} bytes unread"
    );
    // Reading the replies lets the server go on: every whole line comes back (an
    // unfinished last line is not a message yet).
    let whole = sent / line.len() * line.len();
    c.stream.set_nonblocking(false).unwrap();
    let mut reader = c.stream.try_clone().unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < whole {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} of {whole} bytes");
        got += n;
    }
    assert_eq!(got, whole);
}

#[test]
fn discard_counts_and_prints_nothing() {
    let mut server = Server::start(&["--mode", "discard"]);
    let mut c = server.tcp();
    c.stream.set_nodelay(true).unwrap();
    // Lines of many lengths, `\r\n` and empty ones, one oversize (--max-frame 65536),
    // written in odd-sized pieces so reads end anywhere: discard counts each read
    // without handing out its lines, and must still count exactly.
    let mut stream = Vec::new();
    for i in 0..3000 {
        stream.extend_from_slice(&b"x".repeat(i % 200));
        stream.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    stream.extend_from_slice(&[b'y'; 70_000]);
    stream.extend_from_slice(b"\n");
    for piece in stream.chunks(997) {
        c.send(piece);
    }
    // `!Disconnect` split across reads; what follows it is never counted.
    c.send(b"!Disc");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"onnect\r\nnot counted\n");
    c.expect_eof();
    server.udp().send(b"dgram").unwrap();
    // The datagram is counted before the summary: wait until it was read.
    let (stdout, stderr) = server.finish();
    assert!(stdout.is_empty());
    let s = summary(&stderr);
    assert!(s.contains("(tcp 3000, "), "{s}");
    assert!(s.contains("oversize 1,"), "{s}");
}

#[test]
fn broker_relays_to_every_other_client_across_workers() {
    let server = Server::start(&["--mode", "broker", "-w", "2"]);
    // Three clients over two workers: a worker that serves two more than the other
    // lets it take the next, so relaying crosses workers.
    let mut a = server.tcp();
    let mut b = server.tcp();
    let mut c = server.tcp();
    wait_opened(&server, 3);
    a.send(b"from a\n");
    assert_eq!(b.line(), "from a");
    assert_eq!(c.line(), "from a");
    b.send(b"from b\n");
    assert_eq!(a.line(), "from b");
    assert_eq!(c.line(), "from b");
    // a got b's message and nothing else: its own was not sent back.
    a.stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        a.stream.read(&mut buf).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock)
    );
    // Both are printed; across connections the output order is not defined.
    let mut printed: Vec<String> = server
        .lines(2)
        .iter()
        .map(|l| support::parse_text(l).msg)
        .collect();
    printed.sort();
    assert_eq!(printed, ["from a", "from b"]);
}

#[test]
fn broker_cuts_off_a_receiver_that_does_not_read() {
    let server = Server::start(&["--mode", "broker", "-w", "2"]);
    let mut sender = server.tcp();
    let b = server.tcp();
    let c = server.tcp();
    let slow = server.tcp();
    wait_opened(&server, 4);
    let slow_port = slow.local().port();
    // b and c read everything on threads; `slow` never reads. The sender waits for
    // b and c to have read each megabyte before sending the next, so however
    // slowly a loaded machine schedules them they never hold more than a megabyte
    // unread, while `slow` falls 40 MiB behind: only it passes the cutoff.
    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let readers: Vec<_> = [b, c]
        .into_iter()
        .zip(progress.iter().cloned())
        .map(|(t, read)| {
            std::thread::spawn(move || {
                let mut s = t.stream;
                let mut total = 0usize;
                let mut buf = vec![0u8; 1 << 16];
                while total < 40 << 20 {
                    let n = s.read(&mut buf).expect("receiver read");
                    assert!(n > 0, "receiver closed after {total} bytes");
                    total += n;
                    read.store(total, Ordering::Release);
                }
                total
            })
        })
        .collect();
    let line: Vec<u8> = [b'm'; 1023].iter().copied().chain([b'\n']).collect();
    let chunk = line.repeat(1024);
    let deadline = support::deadline();
    for i in 1..=40 {
        sender.send(&chunk);
        while progress.iter().any(|p| p.load(Ordering::Acquire) < i << 20) {
            assert!(
                Instant::now() < deadline,
                "the reading receivers fell behind"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let warning = server.wait_stderr("cutting off the slow receiver", |l| {
        l.contains("cut off") && l.contains(&format!(":{slow_port}"))
    });
    assert!(warning.contains("WARN"), "{warning}");
    for r in readers {
        assert_eq!(r.join().unwrap(), 40 << 20);
    }
    drop(slow);
}

#[test]
fn chat_prefixes_senders_escapes_and_announces() {
    let server = Server::start(&["--mode", "chat"]);
    let mut alice = server.tcp();
    wait_opened(&server, 1);
    let mut bob = server.tcp();
    let bob_addr = bob.local();
    assert_eq!(alice.line(), format!("<announce> {bob_addr} joined"));
    bob.send(b"hi \x1b[2J there\n");
    assert_eq!(alice.line(), format!("<{bob_addr}> hi \\x1b[2J there"));
    drop(bob);
    assert_eq!(alice.line(), format!("<announce> {bob_addr} left"));
}
