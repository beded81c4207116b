//! UDP: one datagram is one message, delivered exactly (one at a time and in bursts
//! read many per `recvmmsg`); `!Disconnect` is not printed; IPv6 loopback for TCP
//! and UDP.

mod support;

use std::io::Write;

use support::{Server, group_by, parse_json, summary, summary_count, udp_from};

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

/// Newlines inside a datagram stay; only its one trailing delimiter goes.
#[test]
fn a_datagram_is_one_message_with_its_newlines() {
    let server = Server::start(&["--format", "json"]);
    let socket = server.udp();
    socket.send(b"line one\nline two\r\nline three\n").unwrap();
    socket.send(b"second datagram").unwrap();
    let lines = server.lines(2);
    assert_eq!(
        parse_json(&lines[0]).bytes,
        b"line one\nline two\r\nline three"
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

/// A burst of many `recvmmsg` batches (32 datagrams each), queued while the server
/// is stopped so that it reads them back to back, from four sources, with sizes up
/// to exactly `--max-frame`, one datagram a byte past it and a `!Disconnect` in the
/// middle: every other datagram is printed once, in order per source, and the
/// summary counts them all.
#[test]
fn a_burst_of_many_batches_is_delivered_exactly() {
    const TOTAL: usize = 400; // ~330 KiB of kernel buffer: under the default rmem_max
    const MAX_FRAME: usize = 1000;
    let mut server = Server::start(&[
        "--format",
        "json",
        "--max-frame",
        "1000",
        "--recv-buffer",
        "4194304",
    ]);
    let sources: Vec<_> = (1..=4).map(|i| udp_from(&format!("127.0.0.{i}"))).collect();
    // SAFETY: a signal to the child this test spawned.
    unsafe { libc::kill(server.pid, libc::SIGSTOP) };
    support::wait_stopped(server.pid);

    let mut printed_by_source = vec![Vec::new(); sources.len()];
    let mut bytes = 0;
    for i in 0..TOTAL {
        let s = i % sources.len();
        let datagram = match i {
            101 => vec![b'm'; MAX_FRAME], // the longest accepted
            202 => vec![b'o'; MAX_FRAME + 1],
            303 => b"!Disconnect".to_vec(),
            _ => {
                let mut d = format!("{s}:{i:03}:").into_bytes();
                d.resize(d.len() + i * 37 % 190, b'a' + (i % 26) as u8);
                d
            }
        };
        sources[s].send_to(&datagram, server.udp_addr()).unwrap();
        bytes += datagram.len();
        if i != 202 && i != 303 {
            printed_by_source[s].push(datagram);
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(server.pid, libc::SIGCONT) };

    let expected = TOTAL - 2;
    let lines = server.lines(expected);
    let (rest, stderr) = server.finish();
    assert!(rest.is_empty(), "extra output: {rest:?}");
    let printed = group_by(lines.iter().map(|l| {
        let j = parse_json(l);
        (j.peer, j.bytes)
    }));
    for (source, want) in sources.iter().zip(&printed_by_source) {
        let peer = source.local_addr().unwrap().to_string();
        let got = printed.get(&peer).map_or(&[][..], Vec::as_slice);
        assert_eq!(got.len(), want.len(), "datagrams printed from {peer}");
        for (k, (got, want)) in got.iter().zip(want).enumerate() {
            assert_eq!(got, want, "datagram {k} from {peer}");
        }
    }
    let s = summary(&stderr);
    assert!(
        s.contains(&format!("messages {expected} (tcp 0, udp {expected})")),
        "{s}"
    );
    assert!(s.contains(&format!("(tcp 0, udp {bytes})")), "bytes: {s}");
    assert!(s.contains("dropped 1 (oversize 1, queue_full 0"), "{s}");
    assert_eq!(summary_count(s, "udp_kernel_drops"), 0, "{s}");
    let warned = stderr
        .iter()
        .filter(|l| l.contains("longer than --max-frame"))
        .count();
    assert_eq!(warned, 1, "{}", stderr.join("\n"));
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
