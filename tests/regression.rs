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

/// Issue 13 (2): `SOCKPOOL_TCP_ONLY=1` was exit 2 ("possible values: true, false"),
/// and `SOCKPOOL_QUIET=1` changed nothing. On/off variables take 1/0, true/false,
/// yes/no, on/off; `SOCKPOOL_QUIET`/`SOCKPOOL_VERBOSE` take a count.
#[test]
fn issue13_boolean_and_count_variables() {
    for (value, udp) in [
        ("1", false),
        ("yes", false),
        ("on", false),
        ("0", true),
        ("off", true),
    ] {
        let server = Server::start_with(support::Options {
            env: &[("SOCKPOOL_TCP_ONLY", value)],
            ..Default::default()
        });
        assert!(server.tcp_addr.is_some(), "{value}");
        // "serving" follows every `listening` line.
        let lines = server.wait_stderr_count(1, |l| {
            l.contains("serving") || l.starts_with("listening udp")
        });
        let udp_line = lines.iter().any(|l| l.starts_with("listening udp"));
        assert_eq!(udp_line, udp, "SOCKPOOL_TCP_ONLY={value}");
    }
    let mut server = Server::start_with(support::Options {
        env: &[("SOCKPOOL_QUIET", "1")],
        ..Default::default()
    });
    let (_, stderr) = server.finish();
    assert!(
        !stderr.iter().any(|l| l.contains("INFO")),
        "SOCKPOOL_QUIET=1 still logs at info: {stderr:?}"
    );
    let mut cmd = support::clean_command(support::SERVER);
    cmd.env("SOCKPOOL_QUIET", "7");
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(2), "{out:?}");
}

/// Issue 13 (3): `-l localhost:0` was exit 2; a host name stands for its addresses,
/// and the `listening` lines show them numerically. The client's `-s` too.
#[test]
fn issue13_host_names_resolve() {
    let server = Server::start(&["-l", "localhost:0"]);
    let addr = server.tcp_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    let port = addr.port().to_string();
    let target = format!("localhost:{port}");
    let out = support::Client::run(&["-s", &target, "by name"], b"");
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(support::parse_text(&server.line()).msg, "by name");
}

/// Issue 13 (4): client usage errors. A MESSAGE holding the delimiter was silently
/// sent as two; `-s` without a port was exit 1 "cannot resolve"; `--file` that
/// cannot be read connected first; an oversize UDP message was "connection broken".
#[test]
fn issue13_client_usage_errors() {
    let out = support::Client::run(&["-s", "127.0.0.1:9", "multi\nline"], b"");
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--framing length"), "{out:?}");

    let out = support::Client::run(&["-s", "127.0.0.1", "hi"], b"");
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("has no port"), "{out:?}");

    // Nothing listens on port 9: the file is reported, not the connection.
    let out = support::Client::run(&["-s", "127.0.0.1:9", "--file", "/nonexistent/x"], b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_lines(),
        ["error: cannot read /nonexistent/x: no such file or directory"]
    );

    let big = "x".repeat(70_000);
    let out = support::Client::run(&["-u", "-s", "127.0.0.1:9", &big], b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    let err = out.stderr_lines().join("\n");
    assert!(
        err.contains("70000 bytes is larger than a UDP datagram"),
        "{err}"
    );
    assert!(!err.contains("connection"), "{err}");

    // With length framing the same message is one message.
    let server = Server::start(&["--framing", "length", "--format", "json"]);
    let out = support::Client::send(server.tcp_addr(), &["--framing", "length", "multi\nline"]);
    assert_eq!(out.code(), Some(0));
    assert_eq!(support::parse_json(&server.line()).bytes, b"multi\nline");
}

/// Issue 13 (5): any usage error printed `Usage: sockpool-server --listen <ADDR>
/// --format <FORMAT>`, as if both were required.
#[test]
fn issue13_server_usage_line_names_no_required_flag() {
    for args in [
        &["--no-such-flag"][..],
        &["--tcp-only", "--udp-only"],
        &["-q", "-v"],
    ] {
        let mut cmd = support::clean_command(support::SERVER);
        cmd.args(args);
        let out = support::run(cmd, b"");
        assert_eq!(out.code(), Some(2));
        assert!(
            out.stderr_lines()
                .contains(&"Usage: sockpool-server [OPTIONS]"),
            "{args:?}: {out:?}"
        );
    }
}

/// Issue 13 (6): the start-up log said `mode=Print`; values are spelled as the flag
/// takes them.
#[test]
fn issue13_log_spells_the_mode_as_the_flag_does() {
    let server = Server::start(&["--mode", "echo"]);
    let line = server.wait_stderr("serving", |l| l.contains("serving"));
    assert!(line.contains("mode=echo"), "{line}");
}

/// Issue 13 (6): a closed connection's log line said `secs=6.475600093835965e-5`;
/// durations read as a person writes them.
#[test]
fn issue13_log_durations_are_human() {
    let server = Server::start(&[]);
    let mut c = server.tcp();
    c.send(b"hi\n!Disconnect\n");
    let line = server.wait_stderr("the close", |l| l.contains("connection closed"));
    let open_for = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("open_for="))
        .unwrap_or_else(|| panic!("no open_for field: {line}"));
    assert!(
        ["µs", "ms", "s"]
            .iter()
            .any(|unit| open_for.ends_with(unit))
            && !open_for.contains('e'),
        "{line}"
    );
}
