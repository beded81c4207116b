//! Command lines of both binaries: `--help`, exit codes 0/1/2, one-line errors,
//! `SOCKPOOL_*` variables, `-q`, and the client's message sources.

mod support;

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};

use support::{CLIENT, Client, Options, SERVER, Server, TempFile, clean_command, parse_text};

fn run_server(args: &[&str]) -> support::Output {
    let mut cmd = clean_command(SERVER);
    cmd.args(args);
    support::run(cmd, b"")
}

#[test]
fn server_help_documents_the_flags() {
    let out = run_server(&["--help"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    for flag in [
        "--listen",
        "--workers",
        "--format",
        "--max-frame",
        "--tcp-only",
        "--udp-only",
        "--drain-timeout",
        "--quiet",
        "SOCKPOOL_WORKERS",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn client_help_documents_the_flags() {
    let mut cmd = clean_command(CLIENT);
    cmd.arg("--help");
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(0), "{out:?}");
    for flag in [
        "--server",
        "--udp",
        "--file",
        "--connect-timeout",
        "MESSAGE",
        // SPEC: "`-s unix:PATH` / `-s unixgram:PATH` talk to Unix sockets".
        "unix:PATH",
        "unixgram:PATH",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["--bogus"][..],
        &["--workers", "0"],
        &["--format", "xml"],
        &["--listen", "not-an-address"],
        &["--max-frame", "0"],
        &["--tcp-only", "--udp-only"],
    ] {
        let out = run_server(args);
        assert_eq!(out.code(), Some(2), "server {args:?}: {out:?}");
        assert!(out.stderr.contains("error"), "server {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "server {args:?}: {out:?}");
    }
    for args in [
        &["--bogus"][..],
        &["--framing", "nope"],
        &["--file", "f", "msg"],
    ] {
        let out = Client::run(args, b"");
        assert_eq!(out.code(), Some(2), "client {args:?}: {out:?}");
        assert!(out.stderr.contains("error"), "client {args:?}: {out:?}");
    }
}

#[test]
fn bind_failure_exits_1_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_server(&["-l", &addr, "-w", "1"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr,
        format!("error: cannot listen on {addr}: address already in use\n")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn udp_bind_failure_exits_1_with_one_line() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_server(&["-l", &addr, "--udp-only", "-w", "1"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr,
        format!("error: cannot listen on {addr}: address already in use\n")
    );
}

#[test]
fn workers_from_the_environment() {
    let server = Server::start_with(Options {
        args: &["--metrics", "127.0.0.1:0"],
        env: &[("SOCKPOOL_WORKERS", "3")],
        ..Options::default()
    });
    server.wait_stderr("announcing 3 workers", |l| {
        l.contains("serving") && support::log_field(l, "workers") == Some("3")
    });
    // Each worker has its gauge, and only those three.
    let page = support::scrape(server.metrics_addr(), "/metrics");
    let workers: BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("sockpool_worker_connections{worker=\""))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(workers, BTreeSet::from(["0", "1", "2"]), "{page}");
}

#[test]
fn a_flag_beats_its_environment_variable() {
    let server = Server::start_with(Options {
        args: &["-w", "1"],
        env: &[("SOCKPOOL_WORKERS", "3"), ("SOCKPOOL_FORMAT", "json")],
        ..Options::default()
    });
    server.wait_stderr("announcing 1 worker", |l| {
        l.contains("serving") && support::log_field(l, "workers") == Some("1")
    });
}

#[test]
fn format_from_the_environment() {
    let server = Server::start_with(Options {
        env: &[("SOCKPOOL_FORMAT", "json")],
        ..Options::default()
    });
    let mut c = server.tcp();
    c.send(b"as json\n");
    let j = support::parse_json(&server.line());
    assert_eq!(j.bytes, b"as json");
    assert_eq!(j.proto, "tcp");
}

#[test]
fn client_exits_1_with_one_line_when_the_server_is_unreachable() {
    // A port that was free a moment ago and has no listener now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = Client::run(&["-s", &addr, "hello"], b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr,
        format!("error: cannot connect to {addr}: connection refused\n")
    );
}

#[test]
fn client_sends_arguments() {
    let mut server = Server::start(&[]);
    Client::send(
        server.tcp_addr(),
        &["first", "second with spaces", "", "ünï"],
    );
    let (stdout, stderr) = server.finish();
    let msgs: Vec<String> = stdout.iter().map(|l| parse_text(l).msg).collect();
    assert_eq!(msgs, ["first", "second with spaces", "", "ünï"]);
    let closed = stderr
        .iter()
        .find(|l| l.contains("connection closed"))
        .expect("a connection closed line");
    assert!(closed.contains("!Disconnect"), "{closed}");
}

#[test]
fn client_sends_standard_input_lines() {
    let mut server = Server::start(&[]);
    let addr = server.tcp_addr().to_string();
    let out = Client::run(&["-s", &addr], b"one\ntwo\r\n\nlast without newline");
    assert_eq!(out.code(), Some(0), "{out:?}");
    let (stdout, _) = server.finish();
    let msgs: Vec<String> = stdout.iter().map(|l| parse_text(l).msg).collect();
    assert_eq!(msgs, ["one", "two", "", "last without newline"]);
}

#[test]
fn client_sends_a_file() {
    let file = TempFile::new("lines", b"alpha\nbeta\ngamma\n");
    let mut server = Server::start(&[]);
    Client::send(server.tcp_addr(), &["--file", file.path.to_str().unwrap()]);
    let (stdout, _) = server.finish();
    let msgs: Vec<String> = stdout.iter().map(|l| parse_text(l).msg).collect();
    assert_eq!(msgs, ["alpha", "beta", "gamma"]);
}

#[test]
fn client_reports_a_missing_file() {
    let server = Server::start(&[]);
    let addr = server.tcp_addr().to_string();
    let out = Client::run(&["-s", &addr, "--file", "/nonexistent/sockpool-test"], b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr_lines().len(), 1, "{out:?}");
    assert!(out.stderr.starts_with("error: "), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/sockpool-test"), "{out:?}");
}

#[test]
fn client_sends_udp_datagrams() {
    let mut server = Server::start(&[]);
    Client::send(server.udp_addr(), &["-u", "datagram one", "datagram two"]);
    let lines = server.lines(2);
    let (rest, _) = server.finish();
    assert!(
        rest.is_empty(),
        "extra output (!Disconnect printed?): {rest:?}"
    );
    for (line, want) in lines.iter().zip(["datagram one", "datagram two"]) {
        let t = parse_text(line);
        assert_eq!((t.proto.as_str(), t.msg.as_str()), ("udp", want));
    }
}

#[test]
fn listening_lines_are_printed_even_with_quiet() {
    let mut server = Server::start(&["-q"]);
    let tcp = server.tcp_addr();
    let udp = server.udp_addr();
    let mut c = server.tcp();
    c.send(b"quietly\n");
    assert_eq!(parse_text(&server.line()).msg, "quietly");
    c.shutdown_write();
    c.expect_eof();
    let (_, stderr) = server.finish();
    // Exactly the two listening lines and the summary: no info-level logging.
    assert_eq!(stderr.len(), 3, "{stderr:?}");
    assert_eq!(stderr[0], format!("listening tcp {tcp}"));
    assert_eq!(stderr[1], format!("listening udp {udp}"));
    assert!(stderr[2].starts_with("summary: "), "{stderr:?}");
}

/// The long flags an option line of `--help` defines (`  -l, --listen <ADDR>`,
/// `      --tcp-only`), other than `--help` and `--version`.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            let l = l.split_once(", ").map_or(l, |(_, rest)| rest);
            let flag: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            flag.starts_with("--").then_some(flag)
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// README and `--help` stay in step: every long flag that either binary's `--help`
/// (the real one, so flags added later are covered) defines is in README.md.
#[test]
fn readme_names_every_flag_of_both_binaries() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let in_readme = |flag: &str| {
        readme.match_indices(flag).any(|(i, _)| {
            let next = readme[i + flag.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    for binary in [SERVER, CLIENT] {
        let mut cmd = clean_command(binary);
        cmd.arg("--help");
        let out = support::run(cmd, b"");
        assert_eq!(out.code(), Some(0), "{out:?}");
        let flags = help_flags(&out.stdout);
        assert!(
            flags.contains("--framing"),
            "no flags parsed from {binary} --help"
        );
        let missing: Vec<_> = flags.iter().filter(|f| !in_readme(f)).collect();
        assert!(
            missing.is_empty(),
            "{binary} --help flags not in README.md: {missing:?}"
        );
    }
}
