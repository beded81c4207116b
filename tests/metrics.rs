//! `--metrics`: the Prometheus page counts what was sent, agrees with the summary,
//! and the responder shrugs off malformed and slow clients.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Server, WAIT, assert_closed, connect_from, require_tool, scrape, summary_count,
    summary_section, udp_from,
};

/// `name{labels}` → value, from an exposition page.
fn samples(page: &str) -> HashMap<String, u64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The page through curl, or `None` when curl is missing (and not required).
fn curl(addr: SocketAddr) -> Option<String> {
    if !require_tool("curl") {
        return None;
    }
    let out = Command::new("curl")
        .args(["-sS", "-f", "--max-time", "10"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Scrapes until `name` reaches `value` (the counters are updated by other threads).
fn wait_for_sample(addr: SocketAddr, name: &str, value: u64) {
    let deadline = support::deadline();
    loop {
        let page = scrape(addr, "/metrics");
        if samples(&page).get(name) == Some(&value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {value}:\n{page}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_what_was_sent_and_agree_with_the_summary() {
    let mut server = Server::start(&[
        "-w",
        "2",
        "--metrics",
        "127.0.0.1:0",
        "--max-frame",
        "16",
        "--deny",
        "127.0.0.2",
        "--max-connections",
        "50",
    ]);
    let metrics = server.metrics_addr();

    // TCP: three messages, one oversize, from a connection that then leaves.
    let mut c1 = server.tcp().stream;
    let oversize = format!("{}\n", "x".repeat(20));
    c1.write_all(b"a\nbb\nccc\n").unwrap();
    c1.write_all(oversize.as_bytes()).unwrap();
    drop(c1);
    server.wait_stderr("the first close", |l| l.contains("connection closed"));
    // One that stays.
    let mut c2 = server.tcp().stream;
    c2.write_all(b"hold\n").unwrap();
    // One denied.
    let mut denied = connect_from("127.0.0.2", server.tcp_addr());
    assert_closed(&mut denied, Duration::from_secs(5));
    // UDP: two accepted, one denied.
    let udp = udp_from("127.0.0.1");
    udp.send_to(b"u1", server.udp_addr()).unwrap();
    udp.send_to(b"u22", server.udp_addr()).unwrap();
    udp_from("127.0.0.2")
        .send_to(b"no", server.udp_addr())
        .unwrap();
    server.lines(6);
    wait_for_sample(
        metrics,
        "sockpool_messages_dropped_total{reason=\"denied\"}",
        1,
    );

    let Some(page) = curl(metrics) else {
        return;
    };
    let s = samples(&page);
    let get = |name: &str| {
        *s.get(name)
            .unwrap_or_else(|| panic!("{name} missing:\n{page}"))
    };
    assert_eq!(get("sockpool_connections_accepted_total"), 2);
    assert_eq!(get("sockpool_connections_open"), 1);
    assert_eq!(
        get("sockpool_connections_refused_total{reason=\"denied\"}"),
        1
    );
    assert_eq!(
        get("sockpool_connections_refused_total{reason=\"max_connections\"}"),
        0
    );
    assert_eq!(get("sockpool_messages_received_total{proto=\"tcp\"}"), 4);
    assert_eq!(get("sockpool_messages_received_total{proto=\"udp\"}"), 2);
    assert_eq!(
        get("sockpool_bytes_received_total{proto=\"tcp\"}"),
        (9 + oversize.len() + 5) as u64
    );
    assert_eq!(get("sockpool_bytes_received_total{proto=\"udp\"}"), 5);
    assert_eq!(
        get("sockpool_messages_dropped_total{reason=\"oversize\"}"),
        1
    );
    assert_eq!(get("sockpool_messages_dropped_total{reason=\"denied\"}"), 1);
    assert_eq!(
        get("sockpool_messages_dropped_total{reason=\"queue_full\"}"),
        0
    );
    assert_eq!(get("sockpool_udp_kernel_drops_total"), 0);
    assert_eq!(
        get("sockpool_worker_connections{worker=\"0\"}")
            + get("sockpool_worker_connections{worker=\"1\"}"),
        1
    );
    assert_eq!(get("sockpool_max_connections"), 50);
    for family in [
        "sockpool_connections_open gauge",
        "sockpool_connections_accepted_total counter",
        "sockpool_connections_refused_total counter",
        "sockpool_messages_received_total counter",
        "sockpool_bytes_received_total counter",
        "sockpool_messages_dropped_total counter",
        "sockpool_udp_kernel_drops_total counter",
        "sockpool_worker_connections gauge",
        "sockpool_max_connections gauge",
    ] {
        assert!(page.contains(&format!("# TYPE {family}\n")), "{family}");
        let name = family.split(' ').next().unwrap();
        assert!(page.contains(&format!("# HELP {name} ")), "{name}");
    }

    // The summary reads the same counters under the same names.
    drop(c2);
    let (status, summary) = server.stop(libc::SIGINT);
    assert!(status.success());
    assert_eq!(
        summary_count(summary_section(&summary, "dropped"), "oversize"),
        1
    );
    assert_eq!(
        summary_count(summary_section(&summary, "dropped"), "denied"),
        1
    );
    assert_eq!(
        summary_count(summary_section(&summary, "refused"), "denied"),
        1
    );
    assert_eq!(summary_count(&summary, "tcp"), 4);
    assert_eq!(summary_count(&summary, "udp"), 2);
    assert_eq!(summary_count(&summary, "udp_kernel_drops"), 0);
}

/// Sends `request` raw and returns the status line of the answer.
fn status_of(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The responder may answer (and close) before the whole request is written.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn malformed_and_slow_metrics_clients_get_answers_not_a_stuck_server() {
    let server = Server::start(&["-w", "1", "--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();

    // A client that sends half a request and waits must not block anyone.
    let mut slow = TcpStream::connect(metrics).unwrap();
    slow.write_all(b"GET /met").unwrap();

    for bad in [
        &b"garbage\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
    ] {
        assert_eq!(
            status_of(metrics, bad),
            "HTTP/1.1 400 Bad Request",
            "{bad:?}"
        );
    }
    assert_eq!(
        status_of(metrics, b"GET /nope HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        status_of(metrics, b"POST /metrics HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    assert_eq!(
        status_of(metrics, &huge),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        status_of(metrics, b"GET /metrics HTTP/1.0\r\n\r\n"),
        "HTTP/1.1 200 OK"
    );
    if let Some(page) = curl(metrics) {
        assert!(page.contains("sockpool_max_connections "));
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg(format!("http://{metrics}/other"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    }

    // The slow client is still waiting, and the message server never noticed.
    let mut c = server.tcp().stream;
    c.write_all(b"still serving\n").unwrap();
    server.wait_stdout("a message", |l| l.ends_with("still serving"));
    drop(slow);
}

/// The connections a worker serves, from `sockpool_worker_connections`.
fn worker_connections(page: &str, worker: usize) -> u64 {
    samples(page)
        .get(&format!(
            "sockpool_worker_connections{{worker=\"{worker}\"}}"
        ))
        .copied()
        .unwrap_or(0)
}

#[test]
fn both_workers_get_a_share_of_the_connections() {
    // Every worker accepts from one listener with EPOLLEXCLUSIVE, which wakes the
    // first idle waiter: without the worker that serves more stepping back, one
    // worker took 86 of 100 connections.
    const N: u64 = 100;
    let server = Server::start(&["-w", "2", "--tcp-only", "--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    let mut clients = Vec::new();
    for i in 1..=N {
        let mut c = TcpStream::connect(server.tcp_addr()).unwrap();
        c.write_all(b"hello\n").unwrap();
        clients.push(c);
        // One at a time, each adopted before the next: both workers are idle
        // when a connection arrives, the case that piles up on one.
        let deadline = support::deadline();
        loop {
            let page = scrape(metrics, "/metrics");
            if worker_connections(&page, 0) + worker_connections(&page, 1) == i {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "connection {i} not adopted:\n{page}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
    let page = scrape(metrics, "/metrics");
    let (a, b) = (worker_connections(&page, 0), worker_connections(&page, 1));
    assert_eq!(a + b, N);
    // About half each; a quarter leaves room for a slow scheduler.
    assert!(a >= N / 4 && b >= N / 4, "worker 0: {a}, worker 1: {b}");
}

#[test]
fn bursts_of_connections_stay_balanced_after_others_closed() {
    // Rounds of 100 connections at once, all closed between rounds: an idle
    // worker is woken first, a busy one still sees the listener ready, and without
    // handing connections to the lighter worker one took 87 of 100 by the third
    // round.
    const N: u64 = 100;
    let server = Server::start(&["-w", "2", "--tcp-only", "--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    let wait_for = |total: u64| {
        let deadline = support::deadline();
        loop {
            let page = scrape(metrics, "/metrics");
            let (a, b) = (worker_connections(&page, 0), worker_connections(&page, 1));
            if a + b == total {
                return (a, b);
            }
            assert!(Instant::now() < deadline, "{a} + {b} never came to {total}");
            thread::sleep(Duration::from_millis(5));
        }
    };
    for round in 1..=5 {
        let clients: Vec<TcpStream> = (0..N)
            .map(|_| {
                let mut c = TcpStream::connect(server.tcp_addr()).unwrap();
                c.write_all(b"hello\n").unwrap();
                c
            })
            .collect();
        let (a, b) = wait_for(N);
        assert!(
            a >= N / 4 && b >= N / 4,
            "round {round}: worker 0: {a}, worker 1: {b}"
        );
        drop(clients);
        wait_for(0);
    }
}
