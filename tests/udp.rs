//! UDP: one datagram is one message, delivered exactly; `!Disconnect` is not
//! printed; IPv6 loopback for TCP and UDP.

mod support;

use std::io::Write;

use support::{Server, parse_json, summary};

#[test]
fn datagrams_arrive_exact() {
    let server = Server::start(&["--format", "json"]);
    let socket = server.udp();
    let local = socket.local_addr().unwrap().to_string();
    let datagrams: Vec<&[u8]> = vec![
        b"hello udp",
        "ünïcødé ✓".as_bytes(),
        b"bad \xff utf8",
        b"nul \x00 and esc \x1b",
        b"  spaces kept  ",
    ];
    for d in &datagrams {
        socket.send(d).unwrap();
    }
    let lines = server.lines(datagrams.len());
    for (line, want) in lines.iter().zip(&datagrams) {
        let j = parse_json(line);
        assert_eq!(j.proto, "udp");
        assert_eq!(j.peer, local);
        assert_eq!(j.conn, None, "UDP messages have no conn id: {line}");
        assert_eq!(&j.bytes, want);
        assert_eq!(j.b64, std::str::from_utf8(want).is_err());
    }
}

#[test]
fn a_datagram_is_one_message_with_its_newlines() {
    let server = Server::start(&["--format", "json"]);
    let socket = server.udp();
    socket.send(b"line one\nline two\r\nline three\n").unwrap();
    socket.send(b"second datagram").unwrap();
    let lines = server.lines(2);
    assert_eq!(
        parse_json(&lines[0]).bytes,
        b"line one\nline two\r\nline three\n"
    );
    assert_eq!(parse_json(&lines[1]).bytes, b"second datagram");
}

#[test]
fn disconnect_datagram_is_not_printed() {
    let mut server = Server::start(&["--format", "json"]);
    let socket = server.udp();
    socket.send(b"before").unwrap();
    socket.send(b"!Disconnect").unwrap();
    socket.send(b"after").unwrap();
    assert_eq!(parse_json(&server.line()).bytes, b"before");
    assert_eq!(parse_json(&server.line()).bytes, b"after");
    let (rest, stderr) = server.finish();
    assert!(rest.is_empty(), "extra output: {rest:?}");
    let s = summary(&stderr);
    assert!(s.contains("messages 2 (tcp 0, udp 2)"), "{s}");
}

#[test]
fn ipv6_loopback_serves_tcp_and_udp() {
    if !support::ipv6_available() {
        let _ = writeln!(std::io::stderr(), "skipped: ::1 is not available");
        return;
    }
    let server = Server::start(&["-l", "[::1]:0", "--format", "json"]);
    assert!(server.tcp_addr().is_ipv6() && server.udp_addr().is_ipv6());
    let mut c = server.tcp();
    c.send(b"over tcp6\n");
    let j = parse_json(&server.line());
    assert_eq!(
        (j.proto.as_str(), j.bytes.as_slice()),
        ("tcp", &b"over tcp6"[..])
    );
    assert_eq!(j.peer, c.local().to_string());
    assert!(j.peer.starts_with("[::1]:"), "{}", j.peer);

    let socket = server.udp();
    socket.send(b"over udp6").unwrap();
    let j = parse_json(&server.line());
    assert_eq!(
        (j.proto.as_str(), j.bytes.as_slice()),
        ("udp", &b"over udp6"[..])
    );
    assert_eq!(j.peer, socket.local_addr().unwrap().to_string());
}
