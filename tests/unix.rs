//! Unix sockets: `-l unix:PATH` (stream) and `-l unixgram:PATH` (datagram) against
//! std sockets, socat (`UNIX-CONNECT:`, `UNIX-SENDTO:`), the client and the bench;
//! the peer's credentials, the socket file's life (mode, stale file replaced, live
//! one refused, other files untouched, removed at exit) and `--max-connections`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;

use support::{Client, Server, clean_command, parse_json, parse_text, run, summary_count};

/// A directory of its own for one test's socket files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sockpool-unix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listen_arg(scheme: &str, path: &Path) -> String {
    format!("{scheme}:{}", path.display())
}

/// Starts a server on loopback TCP (which `Server` waits for) and `unix`, and
/// waits for each Unix socket's `listening` line.
fn start(unix: &[String], args: &[&str]) -> Server {
    let mut all: Vec<&str> = vec!["-l", "127.0.0.1:0"];
    for addr in unix {
        all.extend(["-l", addr.as_str()]);
    }
    all.extend_from_slice(args);
    let server = Server::start(&all);
    for addr in unix {
        let (scheme, path) = addr.split_once(':').unwrap();
        let line = format!("listening {scheme} {path}");
        server.wait_stderr(&line, |l| l == line);
    }
    server
}

fn me() -> String {
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    format!("pid={},uid={uid}", std::process::id())
}

#[test]
fn a_unix_stream_carries_messages_with_the_peers_credentials() {
    let dir = Dir::new("stream");
    let sock = dir.path("s.sock");
    let server = start(&[listen_arg("unix", &sock)], &["--format", "json"]);
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream.write_all(b"hello\nworld\n").unwrap();
    let lines = server.lines(2);
    for (line, msg) in lines.iter().zip(["hello", "world"]) {
        let json = parse_json(line);
        assert_eq!(json.proto, "unix", "{line}");
        assert_eq!(json.peer, me(), "{line}");
        assert!(json.conn.is_some(), "{line}");
        assert_eq!(json.bytes, msg.as_bytes(), "{line}");
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660, "--unix-mode's default");
}

#[test]
fn echo_over_a_unix_stream_and_a_unix_datagram_socket() {
    let dir = Dir::new("echo");
    let (sock, gram) = (dir.path("s.sock"), dir.path("g.sock"));
    let server = start(
        &[listen_arg("unix", &sock), listen_arg("unixgram", &gram)],
        &["--mode", "echo", "--unix-mode", "0600"],
    );
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"ping\n").unwrap();
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping\n");

    let client = UnixDatagram::bind(dir.path("c.sock")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.send_to(b"dgram\n", &gram).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"dgram",
        "the trailing newline is not part of the message"
    );
    let lines = server.lines(2);
    let unixgram = lines
        .iter()
        .map(|l| parse_text(l))
        .find(|l| l.proto == "unixgram")
        .unwrap();
    assert_eq!(unixgram.peer, me());
    assert_eq!(unixgram.msg, "dgram");
    for path in [&sock, &gram] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

#[test]
fn an_oversize_unix_datagram_is_dropped_and_warned_about_as_udp_words_it() {
    let dir = Dir::new("oversize");
    let gram = dir.path("g.sock");
    let server = start(&[listen_arg("unixgram", &gram)], &["--max-frame", "8"]);
    let client = UnixDatagram::unbound().unwrap();
    client.send_to(b"0123456789abcdef", &gram).unwrap();
    client.send_to(b"short\n", &gram).unwrap();
    let want = format!(
        "datagram of 16 bytes from {} is longer than --max-frame; dropped",
        me()
    );
    server.wait_stderr(&want, |l| l.contains(&want));
    let lines = server.lines(1);
    assert_eq!(parse_text(&lines[0]).msg, "short");
}

#[test]
fn socat_unix_connect_and_unix_sendto() {
    if !support::require_tool("socat") {
        return;
    }
    let dir = Dir::new("socat");
    let (sock, gram) = (dir.path("s.sock"), dir.path("g.sock"));
    let mut server = start(
        &[listen_arg("unix", &sock), listen_arg("unixgram", &gram)],
        &[],
    );
    let mut cmd = clean_command("socat");
    cmd.args(["-", &format!("UNIX-CONNECT:{}", sock.display())]);
    let out = run(cmd, b"over a stream\n");
    assert_eq!(out.code(), Some(0), "{out:?}");
    let mut cmd = clean_command("socat");
    cmd.args(["-", &format!("UNIX-SENDTO:{}", gram.display())]);
    let out = run(cmd, b"as a datagram\n");
    assert_eq!(out.code(), Some(0), "{out:?}");
    let mut got: Vec<(String, String)> = server
        .lines(2)
        .iter()
        .map(|l| parse_text(l))
        .map(|l| (l.proto, l.msg))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("unix".to_string(), "over a stream".to_string()),
            ("unixgram".to_string(), "as a datagram".to_string())
        ]
    );
    let (_, stderr) = server.finish();
    let summary = support::summary(&stderr);
    assert_eq!(summary_count(summary, "unix"), 1, "{summary}");
    assert_eq!(summary_count(summary, "unixgram"), 1, "{summary}");
    assert!(
        !sock.exists() && !gram.exists(),
        "socket files removed at exit"
    );
}

#[test]
fn a_stale_socket_file_is_replaced_a_live_one_refused_and_other_files_kept() {
    let dir = Dir::new("files");
    let sock = dir.path("s.sock");
    // A server that was killed leaves its file behind: nobody listens there.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let server = start(&[listen_arg("unix", &sock)], &[]);
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream.write_all(b"served\n").unwrap();
    assert!(server.line().ends_with(" served"));

    // The live one is someone else's: a second server must not take it.
    let mut cmd = clean_command(support::SERVER);
    cmd.args(["-l", &listen_arg("unix", &sock)]);
    let out = run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_lines().last().copied(),
        Some(
            format!(
                "error: cannot listen on unix:{}: address already in use",
                sock.display()
            )
            .as_str()
        )
    );

    // A path that is not a socket is never removed.
    let file = dir.path("data.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let mut cmd = clean_command(support::SERVER);
    cmd.args(["-l", &listen_arg("unixgram", &file)]);
    let out = run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr_lines().iter().any(|l| l.starts_with(&format!(
            "error: cannot listen on unixgram:{}",
            file.display()
        ))),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn max_connections_counts_unix_streams() {
    let dir = Dir::new("limit");
    let sock = dir.path("s.sock");
    let server = start(&[listen_arg("unix", &sock)], &["--max-connections", "1"]);
    let mut first = UnixStream::connect(&sock).unwrap();
    server.wait_stderr("connection opened", |l| l.contains("connection opened"));
    let mut second = UnixStream::connect(&sock).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(second.read(&mut buf).unwrap(), 0, "refused: closed at once");
    server.wait_stderr("refused", |l| l.contains("--max-connections 1 reached"));
    first.write_all(b"still served\n").unwrap();
    assert!(server.line().ends_with(" still served"));
}

#[test]
fn the_client_and_the_bench_speak_unix_sockets() {
    let dir = Dir::new("client");
    let (sock, gram) = (dir.path("s.sock"), dir.path("g.sock"));
    let mut server = start(
        &[listen_arg("unix", &sock), listen_arg("unixgram", &gram)],
        &[],
    );
    let unix = listen_arg("unix", &sock);
    let out = Client::run(&["-s", &unix, "one", "two"], b"");
    assert_eq!(out.code(), Some(0), "{out:?}");
    let unixgram = listen_arg("unixgram", &gram);
    let out = Client::run(&["-s", &unixgram, "three"], b"");
    assert_eq!(out.code(), Some(0), "{out:?}");
    let mut got: Vec<String> = server
        .lines(3)
        .iter()
        .map(|l| {
            let l = parse_text(l);
            format!("{} {}", l.proto, l.msg)
        })
        .collect();
    got.sort();
    assert_eq!(got, ["unix one", "unix two", "unixgram three"]);

    let out = Client::run(
        &[
            "bench",
            "-s",
            &unix,
            "--connections",
            "2",
            "--messages",
            "1000",
        ],
        b"",
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    let (_, stderr) = server.finish();
    let summary = support::summary(&stderr);
    assert_eq!(summary_count(summary, "unix"), 1002, "{summary}");
}

#[test]
fn an_exit_on_a_broken_output_still_removes_the_socket_files() {
    let dir = Dir::new("broken-output");
    let (stream, datagram) = (dir.path("s.sock"), dir.path("g.sock"));
    let (stream_arg, datagram_arg) = (
        listen_arg("unix", &stream),
        listen_arg("unixgram", &datagram),
    );
    let mut server = Server::start_with(support::Options {
        args: &["-l", "127.0.0.1:0", "-l", &stream_arg, "-l", &datagram_arg],
        raw_stdout: true,
        ..support::Options::default()
    });
    let line = format!("listening unixgram {}", datagram.display());
    server.wait_stderr(&line, |l| l == line);
    // `sockpool-server -l unix:… | head -1`: the reader of stdout goes away, and
    // the next message cannot be written (exit 1, "cannot write output").
    drop(server.take_stdout());
    let mut client = UnixStream::connect(&stream).unwrap();
    client.write_all(b"into a closed pipe\n").unwrap();
    drop(client);
    let status = server.wait_exit(support::deadline());
    assert_eq!(status.code(), Some(1), "{status}");
    // SPEC: "Socket files the server created are removed at exit".
    assert!(!stream.exists(), "{} left behind", stream.display());
    assert!(!datagram.exists(), "{} left behind", datagram.display());
}
