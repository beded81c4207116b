//! TCP: line framing end to end, byte-exact delivery, order per connection,
//! `!Disconnect`, end of stream, many concurrent connections, resets and
//! half-closes, and oversize lines.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::{Server, Tcp, parse_json, parse_text, summary};

/// Collects the message bytes of `n` json lines.
fn json_messages(server: &Server, n: usize) -> Vec<Vec<u8>> {
    server
        .lines(n)
        .iter()
        .map(|l| parse_json(l).bytes)
        .collect()
}

#[test]
fn messages_arrive_byte_exact() {
    let server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    let messages: Vec<&[u8]> = vec![
        b"hello",
        b"with spaces  and\ttabs",
        "ünïcødé ✓ 日本".as_bytes(),
        b"quotes \" and \\ backslash",
        b"",
        b"bad \xff\xfe utf8",
        b"ctrl \x00\x01\x1b[0m",
    ];
    let mut wire = Vec::new();
    for m in &messages {
        wire.extend_from_slice(m);
        wire.push(b'\n');
    }
    c.send(&wire);
    let got = json_messages(&server, messages.len());
    assert_eq!(got, messages);
}

#[test]
fn a_message_written_one_byte_at_a_time() {
    let server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    c.stream.set_nodelay(true).unwrap();
    for b in b"one byte at a time\n" {
        c.send(&[*b]);
        c.stream.flush().unwrap();
    }
    c.send(b"next\n");
    assert_eq!(
        json_messages(&server, 2),
        vec![b"one byte at a time".to_vec(), b"next".to_vec()]
    );
}

#[test]
fn many_messages_in_one_write_arrive_in_order() {
    let server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    let wire: String = (0..500).map(|i| format!("message {i}\n")).collect();
    c.send(wire.as_bytes());
    let got = json_messages(&server, 500);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, format!("message {i}").as_bytes());
    }
}

#[test]
fn final_message_without_newline_is_delivered_at_eof() {
    let mut server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    c.send(b"first\nlast without newline");
    c.shutdown_write();
    c.expect_eof();
    let (stdout, _) = server.finish();
    let got: Vec<Vec<u8>> = stdout.iter().map(|l| parse_json(l).bytes).collect();
    assert_eq!(
        got,
        vec![b"first".to_vec(), b"last without newline".to_vec()]
    );
}

#[test]
fn disconnect_closes_the_connection_and_is_not_printed() {
    let mut server = Server::start(&[]);
    let mut c = server.tcp();
    c.send(b"before\n!Disconnect\n");
    c.expect_eof();
    // A message that merely contains the word is an ordinary message.
    let mut d = server.tcp();
    d.send(b"!Disconnect now\n !Disconnect\n!disconnect\n");
    d.shutdown_write();
    d.expect_eof();
    let (stdout, stderr) = server.finish();
    let msgs: Vec<String> = stdout.iter().map(|l| parse_text(l).msg).collect();
    let mut sorted = msgs.clone();
    sorted.sort();
    let mut want = vec!["before", "!Disconnect now", " !Disconnect", "!disconnect"];
    want.sort_unstable();
    assert_eq!(sorted, want, "stdout: {stdout:?}");
    assert!(
        summary(&stderr).contains("messages 4 (tcp 4, udp 0)"),
        "{}",
        summary(&stderr)
    );
}

#[test]
fn crlf_is_stripped_and_a_lone_cr_kept() {
    let server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    c.send(b"windows\r\nmid\rdle\r\n\r\nunix\n");
    assert_eq!(
        json_messages(&server, 4),
        vec![
            b"windows".to_vec(),
            b"mid\rdle".to_vec(),
            b"".to_vec(),
            b"unix".to_vec()
        ]
    );
}

/// 1,000 connections open at once, 10 messages each, interleaved: every message
/// arrives exactly once, in order per connection, attributed to its peer.
#[test]
fn a_thousand_concurrent_connections() {
    const CONNS: usize = 1000;
    const MSGS: usize = 10;
    let limit = support::raise_fd_limit();
    assert!(limit >= 2 * CONNS as u64 + 64, "open-file limit {limit}");
    let started = Instant::now();
    let mut server = Server::start(&[]);
    let addr = server.tcp_addr();
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, support::WAIT).expect("connect");
            s.set_write_timeout(Some(support::WAIT)).unwrap();
            s.set_read_timeout(Some(support::WAIT)).unwrap();
            s
        })
        .collect();
    let peers: HashMap<String, usize> = conns
        .iter()
        .enumerate()
        .map(|(i, s)| (s.local_addr().unwrap().to_string(), i))
        .collect();
    for round in 0..MSGS {
        for (i, s) in conns.iter_mut().enumerate() {
            s.write_all(format!("conn {i} msg {round}\n").as_bytes())
                .expect("write");
        }
    }
    for s in &conns {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let lines = server.lines_until(CONNS * MSGS, Instant::now() + Duration::from_secs(60));
    let mut next = vec![0usize; CONNS];
    for line in &lines {
        let t = parse_text(line);
        assert_eq!(t.proto, "tcp");
        let i = *peers
            .get(&t.peer)
            .unwrap_or_else(|| panic!("unknown peer in {line}"));
        assert_eq!(t.msg, format!("conn {i} msg {}", next[i]), "line {line}");
        next[i] += 1;
    }
    assert!(next.iter().all(|&n| n == MSGS));
    // Every connection is closed by the server after its EOF.
    for s in &mut conns {
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).expect("read EOF"), 0);
    }
    drop(conns);
    let (rest, stderr) = server.finish();
    assert!(rest.is_empty(), "extra output: {rest:?}");
    let s = summary(&stderr);
    assert!(
        s.contains("connections 1000 (open 0), messages 10000 (tcp 10000, udp 0)"),
        "{s}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn reset_and_half_closed_connections_do_not_disturb_others() {
    let mut server = Server::start(&["--format", "json"]);
    // Enough ordinary connections to sit on both workers.
    let mut normal: Vec<Tcp> = (0..4).map(|_| server.tcp()).collect();
    for (i, c) in normal.iter_mut().enumerate() {
        c.send(format!("normal {i} a\n").as_bytes());
    }
    let mut reset_conn = server.tcp();
    let reset_peer = reset_conn.local().to_string();
    reset_conn.send(b"reset first\nreset partial");
    let mut half = server.tcp();
    half.send(b"half 1\nhalf 2\n");
    half.shutdown_write();
    // Wait for the server to see both ordinary messages and both oddities.
    let first = server.lines(4 + 1 + 2);
    reset_conn.reset();
    server.wait_stderr("closing the reset connection", |l| {
        l.contains("connection closed") && support::log_field(l, "peer") == Some(&reset_peer)
    });
    // The half-closed connection's messages arrived; the server closes its side too.
    half.expect_eof();
    for (i, c) in normal.iter_mut().enumerate() {
        c.send(format!("normal {i} b\n").as_bytes());
    }
    let second = server.lines(4);
    for c in &normal {
        c.shutdown_write();
    }
    for c in &mut normal {
        c.expect_eof();
    }
    let (rest, _) = server.finish();
    let all: Vec<_> = first
        .iter()
        .chain(&second)
        .chain(&rest)
        .map(|l| parse_json(l))
        .collect();
    let by_peer = support::group_by(
        all.iter()
            .map(|j| (j.peer.clone(), String::from_utf8(j.bytes.clone()).unwrap())),
    );
    for (i, c) in normal.iter().enumerate() {
        assert_eq!(
            by_peer[&c.local().to_string()],
            vec![format!("normal {i} a"), format!("normal {i} b")]
        );
    }
    assert_eq!(by_peer[&half.local().to_string()], vec!["half 1", "half 2"]);
    // The reset connection's complete message was delivered before the reset (what
    // becomes of its unterminated tail on a reset is not specified).
    let from_reset = &by_peer[&reset_peer];
    assert!(
        from_reset == &["reset first"] || from_reset == &["reset first", "reset partial"],
        "{from_reset:?}"
    );
    assert_eq!(all.len(), 8 + 2 + from_reset.len());
}

/// A 10 MB line with `--max-frame 65536` is skipped as it streams past: a warning
/// names the peer and the size, memory stays bounded, the next message arrives.
#[test]
fn an_oversize_line_is_dropped_with_bounded_memory() {
    const BIG: usize = 10 * 1024 * 1024;
    let mut server = Server::start(&["--max-frame", "65536"]);
    let (rss_before, _) = server.memory();
    let mut c = server.tcp();
    let peer = c.local().to_string();
    c.send(b"before\n");
    assert_eq!(parse_text(&server.line()).msg, "before");
    let mut big = vec![b'x'; BIG];
    big.push(b'\n');
    // The server reads while we write, so this completes (within the write deadline).
    for chunk in big.chunks(256 * 1024) {
        c.send(chunk);
    }
    c.send(b"after\n");
    assert_eq!(parse_text(&server.line()).msg, "after");
    let (_, peak) = server.memory();
    assert!(
        peak < 64 * 1024 * 1024,
        "server peak RSS {} MB (before {} MB)",
        peak >> 20,
        rss_before >> 20
    );
    let warning = server.wait_stderr("warning about the oversize line", |l| {
        l.contains("WARN") && l.contains(&BIG.to_string())
    });
    assert!(
        warning.contains(&peer),
        "warning does not name {peer}: {warning}"
    );
    c.shutdown_write();
    c.expect_eof();
    let (rest, stderr) = server.finish();
    assert!(rest.is_empty(), "extra output: {rest:?}");
    let s = summary(&stderr);
    assert!(s.contains("dropped 1 (oversize 1"), "{s}");
}

#[test]
fn several_listen_addresses_at_once() {
    let server = Server::start(&["-l", "127.0.0.1:0", "-l", "127.0.0.2:0", "--format", "json"]);
    let lines = server.wait_stderr_count(4, |l| l.starts_with("listening "));
    let addrs = |proto: &str| -> Vec<std::net::SocketAddr> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("listening {proto} ")))
            .map(|a| a.parse().unwrap())
            .collect()
    };
    let (tcp, udp) = (addrs("tcp"), addrs("udp"));
    assert_eq!(
        tcp.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
        ["127.0.0.1", "127.0.0.2"]
    );
    assert_eq!(udp.len(), 2);
    for (i, addr) in tcp.iter().enumerate() {
        let mut c = support::Tcp::connect(*addr);
        c.send(format!("tcp {i}\n").as_bytes());
    }
    for (i, addr) in udp.iter().enumerate() {
        let s = std::net::UdpSocket::bind((addr.ip(), 0)).unwrap();
        s.send_to(format!("udp {i}").as_bytes(), addr).unwrap();
    }
    let mut got: Vec<String> = server
        .lines(4)
        .iter()
        .map(|l| String::from_utf8(support::parse_json(l).bytes).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["tcp 0", "tcp 1", "udp 0", "udp 1"]);
}

/// A short read ends a connection's turn without the read that would only say
/// `WouldBlock`. The end of stream must still be seen when it arrives with the data
/// (one event for both) or before the worker has even registered the socket.
#[test]
fn end_of_stream_arriving_with_the_data_is_seen() {
    const CONNS: usize = 200;
    let mut server = Server::start(&["-w", "2"]);
    let mut conns: Vec<Tcp> = (0..CONNS)
        .map(|i| {
            let mut c = server.tcp();
            c.send(format!("only message {i}\n").as_bytes());
            c.shutdown_write();
            c
        })
        .collect();
    for c in &mut conns {
        c.expect_eof();
    }
    // And in echo mode, where a reply is written after each short read.
    let mut echo = Server::start(&["--mode", "echo", "-q"]);
    for i in 0..50 {
        let mut c = echo.tcp();
        let line = format!("echo {i}\n");
        c.send(line.as_bytes());
        c.shutdown_write();
        assert_eq!(c.line(), format!("echo {i}"));
        c.expect_eof();
    }
    drop(conns);
    let (lines, stderr) = server.finish();
    assert_eq!(lines.len(), CONNS, "{lines:?}");
    assert!(
        summary(&stderr).contains(&format!("messages {CONNS} (tcp {CONNS}, udp 0)")),
        "{}",
        summary(&stderr)
    );
    let _ = echo.finish();
}
