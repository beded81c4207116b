//! Socket activation with the real `systemd-socket-activate`: the sockets it passes
//! (`LISTEN_FDS`/`LISTEN_PID`) are served instead of `--listen`, each announced by
//! its `listening` line.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;

use support::{Tcp, clean_command, parse_text, require_tool, spawn_line_reader, wait_child};

const ACTIVATE: &str = "systemd-socket-activate";

/// The server started through `systemd-socket-activate` (which execs it, so the
/// pid is the server's); killed on drop.
struct Activated {
    child: Child,
    stderr: Receiver<String>,
    stdout: Receiver<Vec<u8>>,
    seen: Vec<String>,
}

impl Activated {
    /// `wrappers` are whole `systemd-socket-activate …` prefixes, outermost first;
    /// each passes the descriptors of the ones before it through.
    fn start(wrappers: &[&[&str]], server_args: &[&str]) -> Activated {
        let mut cmd = clean_command(ACTIVATE);
        let mut args: Vec<String> = Vec::new();
        for (i, wrapper) in wrappers.iter().enumerate() {
            if i > 0 {
                args.push(ACTIVATE.into());
            }
            args.extend(wrapper.iter().map(|s| s.to_string()));
            args.push("--".into());
        }
        args.push(support::SERVER.into());
        args.extend(["-w", "2"].iter().map(|s| s.to_string()));
        args.extend(server_args.iter().map(|s| s.to_string()));
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn systemd-socket-activate");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdout = spawn_line_reader(child.stdout.take().unwrap());
        Activated {
            child,
            stderr,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line matching `pred`.
    fn wait_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return line.clone();
        }
        let until = support::deadline();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no stderr line {what}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn line(&self) -> String {
        let bytes = self
            .stdout
            .recv_timeout(support::WAIT)
            .expect("a stdout line in time");
        String::from_utf8(bytes)
            .unwrap()
            .trim_end_matches('\n')
            .to_string()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn passed_tcp_and_udp_sockets_are_served_instead_of_listen() {
    if !require_tool(ACTIVATE) {
        return;
    }
    let port = support::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let at = addr.to_string();
    // The outer passes a TCP listener, the inner adds a UDP socket; --listen names
    // another address, which must not be bound.
    let mut server = Activated::start(
        &[&["-l", &at], &["--datagram", "-l", &at]],
        &["-l", "127.0.0.1:1"],
    );
    // It starts the server on the first sign of a client, as systemd does; that
    // client waits in the backlog meanwhile.
    server.wait_stderr("the outer's socket", |l| l.contains("as 3."));
    let mut c = Tcp::connect(addr);
    c.send(b"over tcp\n");
    server.wait_stderr("listening tcp", |l| l == format!("listening tcp {at}"));
    server.wait_stderr("listening udp", |l| l == format!("listening udp {at}"));
    let line = parse_text(&server.line());
    assert_eq!(
        (line.proto.as_str(), line.msg.as_str()),
        ("tcp", "over tcp")
    );
    assert_eq!(line.peer, c.local().to_string());

    let socket = support::udp_from("127.0.0.1");
    socket.send_to(b"over udp", addr).unwrap();
    let line = parse_text(&server.line());
    assert_eq!(
        (line.proto.as_str(), line.msg.as_str()),
        ("udp", "over udp")
    );
    assert_eq!(line.peer, socket.local_addr().unwrap().to_string());

    // And it drains and exits as usual.
    c.send(b"last\n");
    assert_eq!(parse_text(&server.line()).msg, "last");
    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_child(&mut server.child, support::deadline()).expect("exit in time");
    assert!(status.success(), "exit {status}");
    server.wait_stderr("the summary", |l| l.starts_with("summary:"));
}

#[test]
fn sockets_meant_for_another_process_are_ignored() {
    // LISTEN_PID names someone else: --listen is bound as usual.
    let mut server = support::Server::start_with(support::Options {
        args: &[],
        env: &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
        ..Default::default()
    });
    let mut c = server.tcp();
    c.send(b"hi\n");
    assert_eq!(parse_text(&server.line()).msg, "hi");
    server.finish();
}

#[test]
fn a_passed_descriptor_that_is_not_a_socket_is_an_error() {
    // LISTEN_FDS names this very process (the shell replaces itself with the
    // server), but descriptor 3 is a plain file.
    let mut cmd = clean_command("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" -w 1 3</dev/null",
        support::SERVER,
    ]);
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_lines().last().copied(),
        Some(
            "error: cannot use the sockets passed by socket activation: descriptor 3 passed by LISTEN_FDS is not a socket (socket operation on non-socket)"
        ),
        "{out:?}"
    );
    let _ = std::io::stderr().flush();
}

#[test]
fn a_passed_unix_stream_socket_is_served_and_its_file_left_to_systemd() {
    if !require_tool(ACTIVATE) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockpool-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let at = path.to_str().unwrap().to_string();
    let mut server = Activated::start(&[&["-l", &at]], &[]);
    server.wait_stderr("the socket", |l| l.contains("as 3."));
    // The first client starts the server, which serves the passed socket.
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"over a passed unix socket\n").unwrap();
    server.wait_stderr("the listening line", |l| {
        l == format!("listening unix {at}")
    });
    let line = server.line();
    assert!(
        line.contains(" unix pid=") && line.ends_with(" over a passed unix socket"),
        "{line}"
    );
    drop(client);
    let _ = server.child.kill();
    let _ = server.child.wait();
    // The file is systemd's (here systemd-socket-activate's), not ours to remove.
    let _ = std::fs::remove_dir_all(&dir);
}
