//! Real third-party clients: netcat (OpenBSD), socat and a Python socket script send
//! TCP and UDP messages that must arrive exactly. Each test prints
//! `skipped: TOOL not installed` and passes when its tool is missing, unless
//! `SOCKPOOL_REQUIRE_PEERS=1`.

mod support;

use std::process::Command;

use support::{Server, parse_json, require_tool, run};

/// Runs `program args` with `stdin`, expects exit 0, then expects exactly `want`
/// (proto, message) on the server's stdout and nothing more.
fn check(program: &str, args: &[&str], stdin: &[u8], want: &[(&str, &[u8])]) {
    let mut server = Server::start(&["--format", "json"]);
    let port = server.tcp_addr().port().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("PORT", &port)).collect();
    let mut cmd = Command::new(program);
    cmd.args(&args);
    let out = run(cmd, stdin);
    assert_eq!(out.code(), Some(0), "{program} {args:?}: {out:?}");
    let mut lines = server.lines(want.len());
    let (rest, _) = server.finish();
    lines.extend(rest);
    let got: Vec<(String, Vec<u8>)> = lines
        .iter()
        .map(|l| {
            let j = parse_json(l);
            (j.proto, j.bytes)
        })
        .collect();
    let want: Vec<(String, Vec<u8>)> = want
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_vec()))
        .collect();
    assert_eq!(got, want, "{program} {args:?}");
}

#[test]
fn nc_tcp_with_q() {
    if !require_tool("nc") {
        return;
    }
    check(
        "nc",
        &["-q", "1", "127.0.0.1", "PORT"],
        b"nc line one\nnc \xff two\r\n",
        &[("tcp", b"nc line one"), ("tcp", b"nc \xff two")],
    );
}

#[test]
fn nc_tcp_with_n() {
    if !require_tool("nc") {
        return;
    }
    check(
        "nc",
        &["-N", "127.0.0.1", "PORT"],
        b"shut down on EOF\nlast without newline",
        &[
            ("tcp", b"shut down on EOF"),
            ("tcp", b"last without newline"),
        ],
    );
}

#[test]
fn nc_udp() {
    if !require_tool("nc") {
        return;
    }
    check(
        "nc",
        &["-u", "-q", "1", "127.0.0.1", "PORT"],
        b"nc datagram",
        &[("udp", b"nc datagram")],
    );
}

#[test]
fn socat_tcp() {
    if !require_tool("socat") {
        return;
    }
    check(
        "socat",
        &["-u", "STDIN", "TCP:127.0.0.1:PORT"],
        "socat ✓\nsecond\n".as_bytes(),
        &[("tcp", "socat ✓".as_bytes()), ("tcp", b"second")],
    );
}

#[test]
fn socat_udp() {
    if !require_tool("socat") {
        return;
    }
    check(
        "socat",
        &["-u", "STDIN", "UDP:127.0.0.1:PORT"],
        b"socat datagram\nwith a newline",
        &[("udp", b"socat datagram\nwith a newline")],
    );
}

const PY_TCP: &str = "
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)
s.sendall(b'py one\\npy \\x00 two\\n!Disconnect\\nnot sent\\n')
assert s.recv(1) == b''  # the server closes after !Disconnect
s.close()
";

const PY_UDP: &str = "
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for d in (b'py datagram', b'!Disconnect', b'py \\xfe after'):
    u.sendto(d, ('127.0.0.1', int(sys.argv[1])))
";

#[test]
fn python_tcp() {
    if !require_tool("python3") {
        return;
    }
    check(
        "python3",
        &["-c", PY_TCP, "PORT"],
        b"",
        &[("tcp", b"py one"), ("tcp", b"py \x00 two")],
    );
}

#[test]
fn python_udp() {
    if !require_tool("python3") {
        return;
    }
    check(
        "python3",
        &["-c", PY_UDP, "PORT"],
        b"",
        &[("udp", b"py datagram"), ("udp", b"py \xfe after")],
    );
}

#[test]
fn require_tool_skips_visibly_or_fails_when_required() {
    let required = std::env::var("SOCKPOOL_REQUIRE_PEERS").as_deref() == Ok("1");
    let result = std::panic::catch_unwind(|| require_tool("sockpool-no-such-tool"));
    if required {
        assert!(
            result.is_err(),
            "a missing tool must fail under SOCKPOOL_REQUIRE_PEERS=1"
        );
    } else {
        assert_eq!(result.ok(), Some(false));
    }
}
