//! SIGTERM / SIGINT: a graceful drain that loses nothing already written, exit 0, the
//! summary on stderr; a second signal exits at once.

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use support::{Options, Server, Tcp, TempDir, parse_text, summary};

/// Lines each client writes in its burst right before the signal.
const BURST: usize = 1000;
const CLIENTS: usize = 20;

#[test]
fn sigterm_delivers_everything_written_before_it() {
    let mut server = Server::start(&[]);
    let mut clients: Vec<Tcp> = (0..CLIENTS).map(|_| server.tcp()).collect();
    // Each client's first line: once all are printed, every connection is accepted
    // and being served.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("c{i} 0\n").as_bytes());
    }
    let mut lines = server.lines(CLIENTS);
    // Then a burst on every connection, left unread by the time the signal comes
    // as far as we can arrange it: written whole, connections left open mid-stream.
    // Each burst fits in the receive window, so a completed write means the bytes
    // are in the server's kernel buffer.
    let mut written = [1usize; CLIENTS];
    for (i, c) in clients.iter_mut().enumerate() {
        let burst: String = (1..=BURST).map(|n| format!("c{i} {n}\n")).collect();
        c.send(burst.as_bytes());
        written[i] += BURST;
    }
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(support::deadline());
    let stderr = server.all_stderr();
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}",
        stderr.join("\n")
    );
    lines.extend(server.rest_of_stdout());

    let mut next = [0usize; CLIENTS];
    for line in &lines {
        let msg = parse_text(line).msg;
        let (client, seq) = msg.split_once(' ').expect("cI N");
        let i: usize = client[1..].parse().unwrap();
        assert_eq!(seq.parse::<usize>().unwrap(), next[i], "line {line}");
        next[i] += 1;
    }
    assert_eq!(next, written, "messages printed per client");
    let total = CLIENTS * (BURST + 1);
    let s = summary(&stderr);
    assert!(
        s.contains(&format!("messages {total} (tcp {total}, udp 0)")),
        "{s}"
    );
    assert!(s.contains("dropped 0 ("), "{s}");
    // The server closed every connection after reading everything.
    for c in &mut clients {
        c.expect_eof();
    }
}

#[test]
fn sigint_drains_too() {
    let mut server = Server::start(&[]);
    let mut c = server.tcp();
    let socket = server.udp();
    c.send(b"over tcp\n");
    socket.send(b"over udp").unwrap();
    let first = server.lines(2);
    c.send(b"after the first lines\n");
    server.signal(libc::SIGINT);
    let status = server.wait_exit(support::deadline());
    assert!(status.success(), "exit {status}");
    let mut msgs: Vec<String> = first
        .iter()
        .chain(&server.rest_of_stdout())
        .map(|l| parse_text(l).msg)
        .collect();
    msgs.sort();
    assert_eq!(msgs, ["after the first lines", "over tcp", "over udp"]);
    let stderr = server.all_stderr();
    let s = summary(&stderr);
    assert!(s.contains("messages 3 (tcp 2, udp 1)"), "{s}");
}

#[test]
fn idle_server_stops_at_once_with_a_summary() {
    let mut server = Server::start(&[]);
    let started = Instant::now();
    let (stdout, stderr) = server.finish();
    assert!(stdout.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        stderr.iter().filter(|l| l.starts_with("summary:")).count(),
        1,
        "{stderr:?}"
    );
    let s = summary(&stderr);
    assert!(
        s.starts_with("summary: connections 0 (open 0), messages 0 (tcp 0, udp 0)"),
        "{s}"
    );
}

#[test]
fn a_second_signal_exits_at_once_and_still_removes_its_socket_files() {
    let dir = TempDir::new("second-signal");
    let (stream, datagram) = (dir.join("s.sock"), dir.join("g.sock"));
    let stream_arg = format!("unix:{}", stream.display());
    let datagram_arg = format!("unixgram:{}", datagram.display());
    let mut server = Server::start_with(Options {
        args: &[
            "--drain-timeout",
            "60",
            "-l",
            "127.0.0.1:0",
            "-l",
            &stream_arg,
            "-l",
            &datagram_arg,
        ],
        raw_stdout: true,
        ..Options::default()
    });
    let announced = format!("listening unixgram {}", datagram.display());
    server.wait_stderr(&announced, |l| l == announced);
    // Nobody reads stdout: once the pipe is full the drain cannot finish before its
    // 60 s deadline, so only the second signal can end the process quickly.
    let stdout = server.take_stdout();
    let mut c = server.tcp();
    let writer = thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(999));
        let chunk = line.repeat(64);
        // 8 MB: far more output than the pipe and the server's queue hold. The
        // writes stall once the server stops reading; they end when it exits.
        for _ in 0..128 {
            if c.stream.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
    });
    let until = support::deadline();
    loop {
        let (pending, size) = support::pipe_fill(stdout.as_raw_fd());
        if support::pipe_is_full(pending, size) {
            break;
        }
        assert!(
            Instant::now() < until,
            "stdout pipe never filled ({pending} of {size})"
        );
        // Polling a state that has no event to wait on; bounded by the deadline.
        thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGTERM);
    server.wait_stderr("announcing the drain", |l| l.contains("draining"));
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Instant::now() + Duration::from_secs(10));
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?}",
        sent.elapsed()
    );
    assert!(status.code().is_some(), "exited by its own hand: {status}");
    // SPEC: "Socket files the server created are removed at exit", this exit too.
    assert!(!stream.exists(), "{} left behind", stream.display());
    assert!(!datagram.exists(), "{} left behind", datagram.display());
    writer.join().unwrap();
    drop(stdout);
}
