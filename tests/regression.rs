//! One test per fixed bug, named after its issue.

mod support;

use support::{Server, summary};

/// Foundation: a SIGTERM sent as soon as the `listening` lines appeared killed the
/// server with the default action (status 143, no summary), because the signal
/// handlers were installed only after binding. They are now installed first.
#[test]
fn foundation_sigterm_right_after_listening_drains() {
    for _ in 0..10 {
        let mut server = Server::start(&[]);
        // finish() sends SIGTERM at once and requires exit status 0.
        let (stdout, stderr) = server.finish();
        assert!(stdout.is_empty());
        summary(&stderr);
    }
}

/// Limits (issue 4 review): UDP sockets are bound with SO_REUSEPORT, so a port held
/// by another process that also set SO_REUSEPORT was silently shared with it, each
/// getting part of the datagrams. Binding now fails as for any port in use.
#[test]
fn limits_udp_port_held_with_reuseport_is_not_shared() {
    let taken = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    taken.set_reuse_port(true).unwrap();
    taken
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let addr = taken.local_addr().unwrap().as_socket().unwrap();
    let mut cmd = support::clean_command(support::SERVER);
    cmd.args(["--udp-only", "-l", &addr.to_string()]);
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_lines(),
        [format!(
            "error: cannot listen on {addr}: address already in use"
        )]
    );
}

/// Issue 13 (1): a UDP datagram kept its trailing newline, so the README's own
/// `echo 'from socat' | socat - UDP:…` printed `from socat\x0a`. With `line`
/// framing one trailing delimiter (and a `\r` before a `\n`) is removed, as rsyslog
/// and Vector do; other framings keep the datagram whole.
#[test]
fn issue13_udp_line_framing_strips_one_trailing_delimiter() {
    let server = Server::start(&[]);
    let socket = server.udp();
    for datagram in [
        &b"from socat\n"[..],
        b"crlf\r\n",
        b"two\n\n",
        b"none",
        b"\n",
    ] {
        socket.send(datagram).unwrap();
    }
    let msgs: Vec<String> = server
        .lines(5)
        .iter()
        .map(|l| support::parse_text(l).msg)
        .collect();
    assert_eq!(msgs, ["from socat", "crlf", "two\\x0a", "none", ""]);

    let server = Server::start(&["--delimiter", "\\0"]);
    server.udp().send(b"nul\0").unwrap();
    assert_eq!(support::parse_text(&server.line()).msg, "nul");

    let server = Server::start(&["--framing", "raw"]);
    server.udp().send(b"raw\n").unwrap();
    assert_eq!(support::parse_text(&server.line()).msg, "raw\\x0a");
}

/// Issue 13 (8): a dropped oversize UDP datagram counted only the bytes read (a
/// 300-byte datagram with `--max-frame 100` added 101); the kernel reports its real
/// size (`MSG_TRUNC`), and that is what is counted.
#[test]
fn issue13_oversize_datagram_counts_its_real_size() {
    let mut server = Server::start(&["--max-frame", "100"]);
    let socket = server.udp();
    socket.send(&[b'x'; 300]).unwrap();
    socket.send(b"ok").unwrap();
    assert_eq!(support::parse_text(&server.line()).msg, "ok");
    let warning = server.wait_stderr("oversize warning", |l| l.contains("longer than"));
    assert!(warning.contains("datagram of 300 bytes"), "{warning}");
    let (_, stderr) = server.finish();
    let s = summary(&stderr);
    assert!(s.contains("(tcp 0, udp 302)"), "{s}");
    assert_eq!(support::summary_count(s, "oversize"), 1, "{s}");
}

/// Issue 13 (7): JSON output left DEL and the C1 controls raw (U+009B is a
/// terminal's CSI), so `tail -f out.json` could be driven by a peer. They are
/// escaped as `\u007f` / `\u009b`, as `text` already escaped them.
#[test]
fn issue13_json_escapes_del_and_c1_controls() {
    let server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    c.send("csi \u{9b}2J del \u{7f} nbsp \u{a0}\n".as_bytes());
    let line = server.line();
    assert!(
        line.contains("\"msg\":\"csi \\u009b2J del \\u007f nbsp \u{a0}\""),
        "{line}"
    );
    assert!(!line.chars().any(char::is_control), "{line:?}");
}
