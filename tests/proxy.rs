//! `--proxy-protocol`: behind a real HAProxy (`send-proxy`, `send-proxy-v2`) every
//! printed peer is the client's own address; hand-sent headers check what HAProxy
//! does not send: garbage, LOCAL, the client checks, `--proxy-from`, the timeout.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Server, assert_closed, clean_command, connect_from, parse_text, require_tool, summary,
    summary_count, summary_section,
};

/// HAProxy in the foreground with tests/fixtures/haproxy.cfg; killed on drop.
struct Haproxy {
    child: Child,
    v1: SocketAddr,
    v2: SocketAddr,
    _config: support::TempFile,
}

impl Haproxy {
    fn start(sockpool: SocketAddr) -> Haproxy {
        let template = include_str!("fixtures/haproxy.cfg");
        let (p1, p2) = (support::free_port(), support::free_port());
        let config = template
            .replace("@V1_PORT@", &p1.to_string())
            .replace("@V2_PORT@", &p2.to_string())
            .replace("@SOCKPOOL@", &sockpool.to_string());
        let file = support::TempFile::new("haproxy.cfg", config.as_bytes());
        let mut cmd = clean_command("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&file.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn haproxy");
        let proxy = Haproxy {
            child,
            v1: ([127, 0, 0, 1], p1).into(),
            v2: ([127, 0, 0, 1], p2).into(),
            _config: file,
        };
        // Ready once both frontends take connections.
        let until = support::deadline();
        for addr in [proxy.v1, proxy.v2] {
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < until, "haproxy did not listen on {addr}");
                thread::sleep(Duration::from_millis(20));
            }
        }
        proxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn behind_haproxy_each_peer_is_the_clients_address() {
    if !require_tool("haproxy") {
        return;
    }
    let mut server = Server::start(&[
        "--tcp-only",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1",
    ]);
    let haproxy = Haproxy::start(server.tcp_addr());
    let mut expected = Vec::new();
    for (version, frontend) in [("v1", haproxy.v1), ("v2", haproxy.v2)] {
        for host in 2..=5 {
            let source = format!("127.0.0.{host}");
            let mut c = connect_from(&source, frontend);
            let local = c.local_addr().unwrap();
            let msg = format!("{version} from {local}");
            c.write_all(format!("{msg}\nsecond {msg}\n").as_bytes())
                .unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            expected.push((local.to_string(), msg.clone()));
            expected.push((local.to_string(), format!("second {msg}")));
        }
    }
    let mut lines = server.lines(expected.len());
    drop(haproxy);
    lines.extend(server.finish().0);
    let mut got: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let t = parse_text(l);
            assert_eq!(t.proto, "tcp", "{l}");
            (t.peer, t.msg)
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

/// A server with `--proxy-protocol` and `args`, fed raw bytes by the test.
fn proxied(args: &[&str]) -> Server {
    let mut all = vec!["--tcp-only", "--proxy-protocol"];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn send(server: &Server, source: &str, bytes: &[u8]) -> TcpStream {
    let mut c = connect_from(source, server.tcp_addr());
    c.write_all(bytes).unwrap();
    c
}

fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

#[test]
fn headers_sent_by_hand() {
    let mut server = proxied(&[]);
    // v1 split over two writes, then data: the header is never printed.
    let mut c = send(&server, "127.0.0.1", b"PROXY TCP4 203.0.113.7 10.0.0.1 4");
    c.write_all(b"0000 8080\r\nfirst\n").unwrap();
    let line = parse_text(&server.line());
    assert_eq!(
        (line.peer.as_str(), line.msg.as_str()),
        ("203.0.113.7:40000", "first")
    );
    // v2 LOCAL: the proxy's own address.
    let mut local = send(&server, "127.0.0.6", &v2_local());
    local.write_all(b"health\n").unwrap();
    let line = parse_text(&server.line());
    assert_eq!(line.peer, local.local_addr().unwrap().to_string());
    assert_eq!(line.msg, "health");
    // Bytes that cannot begin a header: closed at once, nothing printed.
    let mut bad = send(&server, "127.0.0.1", b"hello\n");
    assert_closed(&mut bad, support::WAIT);
    let mut bad = send(&server, "127.0.0.1", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
    assert_closed(&mut bad, support::WAIT);
    let (out, err) = server.finish();
    assert!(out.is_empty(), "{out:?}");
    let s = summary(&err);
    assert_eq!(
        summary_count(summary_section(s, "refused"), "proxy_header"),
        2,
        "{s}"
    );
}

#[test]
fn client_checks_use_the_headers_address() {
    let mut server = proxied(&["--deny", "198.51.100.0/24", "--max-per-ip", "1"]);
    // Denied by the client's address, though the proxy itself is allowed.
    let mut denied = send(
        &server,
        "127.0.0.1",
        b"PROXY TCP4 198.51.100.9 10.0.0.1 1000 80\r\nno\n",
    );
    assert_closed(&mut denied, support::WAIT);
    // --max-per-ip counts the client: one proxy may carry many clients, but a
    // second connection of the same client is refused.
    let mut a = send(
        &server,
        "127.0.0.1",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1000 80\r\na\n",
    );
    let mut b = send(
        &server,
        "127.0.0.1",
        b"PROXY TCP4 192.0.2.2 10.0.0.1 1000 80\r\nb\n",
    );
    let mut lines: Vec<String> = server.lines(2).iter().map(|l| parse_text(l).msg).collect();
    lines.sort();
    assert_eq!(lines, ["a", "b"]);
    let mut again = send(
        &server,
        "127.0.0.1",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1001 80\r\nagain\n",
    );
    assert_closed(&mut again, support::WAIT);
    a.write_all(b"still here\n").unwrap();
    assert_eq!(parse_text(&server.line()).msg, "still here");
    b.write_all(b"bye\n").unwrap();
    assert_eq!(parse_text(&server.line()).msg, "bye");
    let (out, err) = server.finish();
    assert!(out.is_empty(), "{out:?}");
    let refused = summary_section(summary(&err), "refused").to_string();
    assert_eq!(summary_count(&refused, "denied"), 1, "{refused}");
    assert_eq!(summary_count(&refused, "max_per_ip"), 1, "{refused}");
    assert_eq!(summary_count(&refused, "proxy_header"), 0, "{refused}");
}

#[test]
fn only_proxies_named_by_proxy_from_may_connect() {
    let mut server = proxied(&["--proxy-from", "127.0.0.2/32,127.0.0.3"]);
    let mut c = send(
        &server,
        "127.0.0.2",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1000 80\r\nok\n",
    );
    assert_eq!(parse_text(&server.line()).peer, "192.0.2.1:1000");
    let mut stranger = send(
        &server,
        "127.0.0.1",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1001 80\r\nno\n",
    );
    assert_closed(&mut stranger, support::WAIT);
    c.write_all(b"more\n").unwrap();
    assert_eq!(parse_text(&server.line()).msg, "more");
    let (out, err) = server.finish();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        summary_count(summary_section(summary(&err), "refused"), "denied"),
        1
    );
}

#[test]
fn proxy_from_needs_proxy_protocol() {
    let mut cmd = clean_command(support::SERVER);
    cmd.args(["--proxy-from", "127.0.0.1"]);
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(2), "{out:?}");
}

#[test]
fn a_header_that_never_completes_is_closed_after_10_seconds() {
    let mut server = proxied(&[]);
    let mut slow = send(&server, "127.0.0.1", b"PROXY TCP4 192.0.2.1");
    // The server closes it on its own (HEADER_TIMEOUT, 10 s); the wait allows 20.
    assert_closed(&mut slow, support::WAIT);
    let (out, err) = server.finish();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        summary_count(summary_section(summary(&err), "refused"), "proxy_header"),
        1
    );
}

#[test]
fn a_partial_header_does_not_hold_up_the_drain() {
    let mut server = proxied(&["--drain-timeout", "30"]);
    let _partial = send(&server, "127.0.0.1", b"PROXY TCP4 192.0.2.1");
    let mut whole = send(
        &server,
        "127.0.0.1",
        b"PROXY TCP4 192.0.2.2 10.0.0.1 1 2\r\nin\n",
    );
    assert_eq!(parse_text(&server.line()).msg, "in");
    whole.write_all(b"last\n").unwrap();
    assert_eq!(parse_text(&server.line()).msg, "last");
    // The partial header is closed by the drain (after the second of grace for
    // connections that have delivered nothing), not left to the drain timeout.
    let (out, err) = server.finish();
    assert!(out.is_empty(), "{out:?}");
    assert!(!err.iter().any(|l| l.contains("drain timeout")), "{err:?}");
}
