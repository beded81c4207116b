//! Connection limits, access lists, the idle timeout, running out of descriptors,
//! fairness between clients of one worker, and socket options — each against the
//! real server on loopback (other 127.x addresses stand in for other hosts).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Options, Server, assert_closed, connect_from, summary_count, summary_section, udp_from,
};

/// Sends one line and reads back its echo (server in echo mode); an error when the
/// server closes the connection instead.
fn echo_roundtrip(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => break,
            _ => got.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn max_connections_refuses_past_the_limit_and_spares_the_connected() {
    let mut server = Server::start(&["-w", "2", "--mode", "echo", "--max-connections", "2"]);
    let mut c1 = server.tcp().stream;
    let mut c2 = server.tcp().stream;
    assert_eq!(echo_roundtrip(&mut c1, "one").unwrap(), "one");
    assert_eq!(echo_roundtrip(&mut c2, "two").unwrap(), "two");

    let mut c3 = server.tcp().stream;
    let _ = c3.write_all(b"three\n");
    assert_closed(&mut c3, Duration::from_secs(5));
    server.wait_stderr("refusal warning", |l| {
        l.contains("--max-connections 2 reached")
    });

    // The connected clients carry on.
    assert_eq!(echo_roundtrip(&mut c1, "one again").unwrap(), "one again");
    assert_eq!(echo_roundtrip(&mut c2, "two again").unwrap(), "two again");

    // A place frees up when a client leaves.
    drop(c1);
    server.wait_stderr("a close", |l| l.contains("connection closed"));
    let mut c4 = server.tcp().stream;
    assert_eq!(echo_roundtrip(&mut c4, "four").unwrap(), "four");

    let (status, summary) = server.stop(libc::SIGINT);
    assert!(status.success());
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "max_connections"),
        1
    );
    assert_eq!(summary_count(&summary, "connections"), 3);
    assert!(!summary.contains("three"));
}

#[test]
fn max_per_ip_counts_each_address_apart() {
    let mut server = Server::start(&["-w", "2", "--mode", "echo", "--max-per-ip", "1"]);
    let mut a1 = connect_from("127.0.0.1", server.tcp_addr());
    assert_eq!(echo_roundtrip(&mut a1, "a1").unwrap(), "a1");
    let mut a2 = connect_from("127.0.0.1", server.tcp_addr());
    assert_closed(&mut a2, Duration::from_secs(5));
    let mut b1 = connect_from("127.0.0.2", server.tcp_addr());
    assert_eq!(echo_roundtrip(&mut b1, "b1").unwrap(), "b1");
    assert_eq!(echo_roundtrip(&mut a1, "a1 again").unwrap(), "a1 again");
    let (_, summary) = server.stop(libc::SIGINT);
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "max_per_ip"),
        1
    );
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "max_connections"),
        0
    );
}

#[test]
fn idle_timeout_closes_silent_connections_and_spares_active_ones() {
    let server = Server::start(&["-w", "1", "--mode", "echo", "--idle-timeout", "1"]);
    let start = Instant::now();
    let mut silent = server.tcp().stream;
    let mut active = server.tcp().stream;
    // The active client talks every 100 ms for 2.5 timeouts.
    for i in 0..25 {
        let line = format!("tick {i}");
        assert_eq!(echo_roundtrip(&mut active, &line).unwrap(), line);
        thread::sleep(Duration::from_millis(100));
    }
    assert_closed(&mut silent, Duration::from_secs(10));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "closed before the timeout"
    );
    server.wait_stderr("the idle close", |l| l.contains("idle for 1s"));
    assert_eq!(
        echo_roundtrip(&mut active, "still here").unwrap(),
        "still here"
    );
    assert_eq!(
        server
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("idle for"))
            .count(),
        1
    );
}

#[test]
fn idle_timeout_zero_never_closes() {
    let server = Server::start(&["-w", "1", "--mode", "echo", "--idle-timeout", "0"]);
    let mut c = server.tcp().stream;
    assert_eq!(echo_roundtrip(&mut c, "a").unwrap(), "a");
    // Nothing may close it: a read must time out rather than see an end.
    c.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 8];
    let err = c.read(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    c.set_read_timeout(Some(support::WAIT)).unwrap();
    assert_eq!(echo_roundtrip(&mut c, "b").unwrap(), "b");
}

#[test]
fn deny_wins_over_allow_for_tcp() {
    let mut server = Server::start(&[
        "-w",
        "2",
        "--mode",
        "echo",
        "--allow",
        "127.0.0.0/30",
        "--deny",
        "127.0.0.2",
    ]);
    let mut ok = connect_from("127.0.0.1", server.tcp_addr());
    assert_eq!(echo_roundtrip(&mut ok, "allowed").unwrap(), "allowed");
    let mut denied = connect_from("127.0.0.2", server.tcp_addr());
    let _ = denied.write_all(b"secret\n");
    assert_closed(&mut denied, Duration::from_secs(5));
    // Outside the allow list.
    let mut outside = connect_from("127.0.0.9", server.tcp_addr());
    assert_closed(&mut outside, Duration::from_secs(5));
    let mut ok2 = connect_from("127.0.0.3", server.tcp_addr());
    assert_eq!(echo_roundtrip(&mut ok2, "also").unwrap(), "also");
    let (_, summary) = server.stop(libc::SIGINT);
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "denied"),
        2
    );
    assert_eq!(summary_count(&summary, "connections"), 2);
    assert!(!summary.contains("secret"));
}

#[test]
fn denied_datagrams_are_dropped_and_counted() {
    let mut server = Server::start(&["-w", "1", "--deny", "127.0.0.2/32"]);
    let denied = udp_from("127.0.0.2");
    let allowed = udp_from("127.0.0.1");
    for _ in 0..3 {
        denied
            .send_to(b"from the denied", server.udp_addr())
            .unwrap();
    }
    allowed
        .send_to(b"from the allowed", server.udp_addr())
        .unwrap();
    // One worker, one socket: the denied datagrams were handled before this one.
    server.wait_stdout("the allowed datagram", |l| l.ends_with("from the allowed"));
    let (_, summary) = server.stop(libc::SIGINT);
    assert_eq!(
        summary_count(summary_section(&summary, "dropped"), "denied"),
        3
    );
    assert_eq!(summary_count(&summary, "udp"), 1);
    assert_eq!(server_lines_containing(&summary, "from the denied"), 0);
}

fn server_lines_containing(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_rules() {
    let mut server = Server::start(&[
        "-l",
        "[::]:0",
        "-w",
        "1",
        "--mode",
        "echo",
        "--deny",
        "127.0.0.2",
    ]);
    let port = server.tcp_addr().port();
    let v4: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut ok = connect_from("127.0.0.1", v4);
    assert_eq!(echo_roundtrip(&mut ok, "v4").unwrap(), "v4");
    let mut denied = connect_from("127.0.0.2", v4);
    assert_closed(&mut denied, Duration::from_secs(5));
    let (_, summary) = server.stop(libc::SIGINT);
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "denied"),
        1
    );
}

/// Opens clients one by one until `refused_in_a_row` in a row are turned away;
/// returns the accepted ones and how many were refused.
fn fill(server: &Server, max: usize, refused_in_a_row: usize) -> (Vec<TcpStream>, usize) {
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut streak = 0;
    for i in 0..max {
        let mut c = server.tcp().stream;
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match echo_roundtrip(&mut c, &format!("hold {i}")) {
            Ok(_) => {
                accepted.push(c);
                streak = 0;
            }
            Err(_) => {
                refused += 1;
                streak += 1;
                if streak == refused_in_a_row {
                    break;
                }
            }
        }
    }
    (accepted, refused)
}

#[test]
fn out_of_descriptors_refuses_promptly_without_spinning_and_recovers() {
    out_of_descriptors("1");
}

#[test]
fn out_of_descriptors_with_workers_sharing_the_listener() {
    // Two workers watch one listener (level-triggered, EPOLLEXCLUSIVE): each has
    // its own spare, and neither may spin on a listener it cannot accept from.
    out_of_descriptors("2");
}

fn out_of_descriptors(workers: &str) {
    // 64 descriptors and a --max-connections far above them: accept() itself runs
    // out.
    let mut server = Server::start_with(Options {
        args: &["-w", workers, "--mode", "echo", "--max-connections", "1000"],
        nofile: Some(64),
        ..Options::default()
    });
    let (mut accepted, refused) = fill(&server, 100, 3);
    assert!(refused >= 3, "never ran out of descriptors");
    assert!(
        (20..64).contains(&accepted.len()),
        "accepted {}",
        accepted.len()
    );
    server.wait_stderr("the out-of-descriptors warning", |l| {
        l.contains("cannot accept connections: too many open files")
    });

    // Saturated: new clients are closed at once (not left in the backlog) and the
    // server stays idle meanwhile.
    let before = server.cpu_ticks();
    let window = Instant::now();
    for _ in 0..20 {
        let mut c = server.tcp().stream;
        assert_closed(&mut c, Duration::from_secs(2));
        thread::sleep(Duration::from_millis(100));
    }
    let ticks = server.cpu_ticks() - before;
    let secs = window.elapsed().as_secs_f64();
    // Clock ticks are 1/100 s: 10 % of one core at most.
    assert!(
        (ticks as f64) <= secs * 10.0,
        "server used {ticks} ticks of CPU in {secs:.1}s while saturated"
    );
    let warnings = server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("cannot accept connections"))
        .count();
    assert!(warnings <= 5, "{warnings} warnings: not rate-limited");

    // Descriptors free up: new clients are served again.
    for c in accepted.drain(..5) {
        drop(c);
    }
    server.wait_stderr_count(5, |l| l.contains("connection closed: closed by peer"));
    let mut fresh = server.tcp().stream;
    assert_eq!(echo_roundtrip(&mut fresh, "served").unwrap(), "served");
    let (_, summary) = server.stop(libc::SIGINT);
    assert!(summary_count(summary_section(&summary, "refused"), "no_descriptors") >= 23);
}

#[test]
fn default_max_connections_keeps_within_the_descriptor_limit() {
    let mut server = Server::start_with(Options {
        args: &["-w", "1", "--mode", "echo"],
        nofile: Some(64),
        ..Options::default()
    });
    let line = server.wait_stderr("the max connections line", |l| {
        l.contains("max connections ")
    });
    let max: usize = line
        .split("max connections ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(line.contains("open-files limit 64"), "{line}");
    assert!((1..64).contains(&max), "{line}");
    let (accepted, refused) = fill(&server, 100, 3);
    assert_eq!(accepted.len(), max);
    assert_eq!(refused, 3);
    let (_, summary) = server.stop(libc::SIGINT);
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "max_connections"),
        3
    );
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "no_descriptors"),
        0
    );
}

/// `sockpool_bytes_received_total{proto="tcp"}` from the metrics page.
fn tcp_bytes(server: &Server) -> u64 {
    let page = support::scrape(server.metrics_addr(), "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix("sockpool_bytes_received_total{proto=\"tcp\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_flooding_client_does_not_starve_a_slow_one_on_the_same_worker() {
    // Discard mode has no natural pause (no output, no replies): only the per-turn
    // read budget lets the worker look at anyone but the flood. Two-byte messages
    // make the worker slower than the sender, so the flood never runs dry.
    let server = Server::start(&["-w", "1", "--mode", "discard", "--metrics", "127.0.0.1:0"]);
    let mut flood = server.tcp().stream;
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = Arc::clone(&stop);
    let flood_writer = thread::spawn(move || {
        let chunk = b"f\n".repeat(32 * 1024);
        let end = Instant::now() + Duration::from_secs(30);
        // Bounded in time and in bytes (4 GiB).
        for _ in 0..65536 {
            if writer_stop.load(Ordering::Relaxed) || Instant::now() > end {
                break;
            }
            if flood.write_all(&chunk).is_err() {
                break;
            }
        }
    });

    // Wait until the flood is flowing through the server.
    let deadline = support::deadline();
    while tcp_bytes(&server) < 1 << 20 {
        assert!(Instant::now() < deadline, "the flood never got going");
        thread::sleep(Duration::from_millis(20));
    }

    // Each round trip: connect (the worker must adopt it), send a message and
    // !Disconnect, and wait for the server to close.
    let before = tcp_bytes(&server);
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sent = Instant::now();
        let mut slow = server.tcp().stream;
        slow.write_all(format!("slow {i}\n!Disconnect\n").as_bytes())
            .unwrap();
        assert_closed(&mut slow, Duration::from_secs(10));
        worst = worst.max(sent.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    let during = tcp_bytes(&server) - before;
    stop.store(true, Ordering::Relaxed);
    flood_writer.join().unwrap();

    assert!(
        during > 1 << 20,
        "the flood was not running alongside ({during} bytes)"
    );
    assert!(
        worst < Duration::from_secs(5),
        "the slow client waited {worst:?} for one round trip"
    );
    server.wait_stderr_count(20, |l| l.contains("connection closed: !Disconnect"));
}

/// The `tr` (timer) field of the kernel's line for the server side of `client`.
fn server_side_timer(server_port: u16, client: &TcpStream) -> String {
    let client_port = client.local_addr().unwrap().port();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{server_port:04X}");
    let remote = format!(":{client_port:04X}");
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[1].ends_with(&local) && fields[2].ends_with(&remote) {
            return fields[5].split(':').next().unwrap().to_string();
        }
    }
    panic!("no server-side socket for port {client_port} in /proc/net/tcp");
}

#[test]
fn keepalive_is_armed_on_accepted_connections() {
    let with = Server::start(&["-w", "1", "--mode", "echo", "--keepalive", "7"]);
    let mut c = with.tcp().stream;
    assert_eq!(echo_roundtrip(&mut c, "k").unwrap(), "k");
    // Timer 2 is the keepalive timer.
    assert_eq!(server_side_timer(with.tcp_addr().port(), &c), "02");

    let without = Server::start(&["-w", "1", "--mode", "echo"]);
    let mut d = without.tcp().stream;
    assert_eq!(echo_roundtrip(&mut d, "k").unwrap(), "k");
    assert_eq!(server_side_timer(without.tcp_addr().port(), &d), "00");
}

#[test]
fn kernel_drops_under_a_small_recv_buffer_are_counted() {
    let mut server = Server::start(&["-w", "1", "--recv-buffer", "4096"]);
    let sender = udp_from("127.0.0.1");
    sender.send_to(b"first", server.udp_addr()).unwrap();
    server.wait_stdout("the first datagram", |l| l.ends_with(" first"));

    // Stopped, the server cannot read: the kernel keeps what fits in the buffer
    // and drops the rest.
    // SAFETY: signals to the child we spawned.
    unsafe { libc::kill(server.pid, libc::SIGSTOP) };
    support::wait_stopped(server.pid);
    let payload = [b'd'; 200];
    for _ in 0..300 {
        sender.send_to(&payload, server.udp_addr()).unwrap();
    }
    unsafe { libc::kill(server.pid, libc::SIGCONT) };

    // A marker that gets through carries the kernel's drop count for everything
    // before it; retry until one does (the buffer may still be full at first).
    let mut stdout = Vec::new();
    let mut markers = 0;
    loop {
        markers += 1;
        assert!(markers <= 100, "no marker got through");
        let marker = format!("marker {markers}");
        sender
            .send_to(marker.as_bytes(), server.udp_addr())
            .unwrap();
        let seen = wait_briefly(&server, &mut stdout, &marker);
        if seen {
            break;
        }
    }
    let kept = stdout
        .iter()
        .filter(|l| l.ends_with(&"d".repeat(200)))
        .count();
    let (_, summary) = server.stop(libc::SIGINT);
    let udp = summary_count(&summary, "udp");
    let drops = summary_count(summary_section(&summary, "refused"), "udp_kernel_drops");
    assert!(drops > 0, "{summary}");
    assert!(
        kept < 60,
        "the 4 KiB buffer kept {kept} datagrams: not applied"
    );
    assert_eq!(udp + drops, 1 + 300 + markers, "{summary}");
}

/// Whether `marker` shows on stdout within 300 ms; the lines read go to `stdout`.
fn wait_briefly(server: &Server, stdout: &mut Vec<String>, marker: &str) -> bool {
    let end = Instant::now() + Duration::from_millis(300);
    while let Some(line) = server.try_line(end) {
        let seen = line.ends_with(marker);
        stdout.push(line);
        if seen {
            return true;
        }
    }
    false
}
