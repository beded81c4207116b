//! The client as people use it at a terminal: a real pseudo-terminal (expectrl)
//! drives `sockpool-client` against the real server. Each step waits for what the
//! screen shows (with a deadline), never for a fixed time.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;

use expectrl::process::unix::WaitStatus;
use expectrl::{Eof, Expect, Regex, Session};

/// A local helper (tests/support belongs to the foundation tests): the real server
/// on loopback, with its stdout and stderr lines read by threads into channels.
#[allow(dead_code)]
mod local {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Output, Stdio};
    use std::thread;
    use std::time::{Duration, Instant};

    use crossbeam_channel::{Receiver, RecvTimeoutError};

    pub const DEADLINE: Duration = Duration::from_secs(30);

    #[derive(Debug)]
    pub struct Server {
        child: Child,
        pub addr: String,
        pub stdout: Receiver<String>,
        stderr: Receiver<String>,
    }

    fn lines<R: std::io::Read + Send + 'static>(r: R) -> Receiver<String> {
        let (tx, rx) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    impl Server {
        pub fn start(args: &[&str]) -> Server {
            let mut child = Command::new(env!("CARGO_BIN_EXE_sockpool-server"))
                .args(["-l", "127.0.0.1:0", "-w", "2"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start sockpool-server");
            let stdout = lines(child.stdout.take().unwrap());
            let stderr = lines(child.stderr.take().unwrap());
            let mut server = Server {
                child,
                addr: String::new(),
                stdout,
                stderr,
            };
            let line = server.stderr_line(|l| l.starts_with("listening "));
            server.addr = line.rsplit(' ').next().unwrap().to_string();
            server
        }

        /// The next stderr line that `want` accepts, within the deadline.
        pub fn stderr_line(&self, want: impl Fn(&str) -> bool) -> String {
            let deadline = Instant::now() + DEADLINE;
            loop {
                match self.stderr.recv_deadline(deadline) {
                    Ok(line) if want(&line) => return line,
                    Ok(_) => {}
                    Err(e) => panic!("server stderr: no expected line: {e}"),
                }
            }
        }

        /// The next stdout line, within the deadline.
        pub fn stdout_line(&self) -> String {
            match self.stdout.recv_timeout(DEADLINE) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("server stdout: nothing within deadline"),
                Err(e) => panic!("server stdout: {e}"),
            }
        }

        pub fn pid(&self) -> i32 {
            self.child.id() as i32
        }

        /// SIGTERM, then the summary line.
        pub fn summary(&mut self) -> String {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            self.stderr_line(|l| l.starts_with("summary:"))
        }

        pub fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// The number after `word ` in a summary line: `tcp 5000`.
    pub fn count(summary: &str, word: &str) -> u64 {
        let at = summary.find(&format!("{word} ")).expect(word) + word.len() + 1;
        summary[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    /// Runs `sockpool-client ARGS` to its end, within the deadline.
    pub fn client(args: &[&str]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockpool-client"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockpool-client");
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sockpool-client {args:?} did not finish within {DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let collect = |rx: Receiver<String>| {
            let mut s = String::new();
            // The pipes close with the process; the reader threads then end.
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
                s.push_str(&line);
                s.push('\n');
            }
            s.into_bytes()
        };
        Output {
            status,
            stdout: collect(out),
            stderr: collect(err),
        }
    }
}

use local::{DEADLINE, Server, client};

type Pty = expectrl::session::OsSession;

/// `sockpool-client -s ADDR` on a pseudo-terminal, at its first prompt.
fn interactive(addr: &str) -> Pty {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockpool-client"));
    cmd.args(["-s", addr]).env("TERM", "xterm");
    let mut pty = Session::spawn(cmd).expect("spawn on a pty");
    pty.set_expect_timeout(Some(DEADLINE));
    pty.expect("> ").expect("a prompt");
    pty
}

/// Waits for the prompt drawn after an Enter: by then the editor reads keys again
/// (keys typed between two prompts would meet the terminal's own line editing,
/// where Ctrl-D is swallowed).
fn next_prompt(pty: &mut Pty) {
    pty.expect(Regex(r"\r\n(?:\x1b\[[?0-9;]*[A-Za-z]|\r)*> "))
        .expect("the next prompt");
}

fn exit_code(pty: &Pty) -> i32 {
    match pty.get_process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("client did not exit normally: {other:?}"),
    }
}

/// A plain TCP peer of the broker, reading lines with a deadline.
struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    fn connect(addr: &str) -> Peer {
        let writer = TcpStream::connect(addr).unwrap();
        writer.set_read_timeout(Some(DEADLINE)).unwrap();
        Peer {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a line within the deadline");
        line.trim_end().to_string()
    }
}

/// A broker, a peer and the interactive client, both known to be relayed to.
fn broker_pair() -> (Server, Peer, Pty) {
    let server = Server::start(&["--mode", "broker"]);
    let mut peer = Peer::connect(&server.addr);
    let mut pty = interactive(&server.addr);
    // Both connections are with their workers (so relayed to) once logged.
    for _ in 0..2 {
        server.stderr_line(|l| l.contains("connection opened"));
    }
    peer.send("sync");
    pty.expect("sync")
        .expect("the peer's message on the terminal");
    (server, peer, pty)
}

#[test]
fn lines_typed_are_sent_and_history_recalls_them() {
    let (_server, mut peer, mut pty) = broker_pair();
    pty.send("first\r").unwrap();
    assert_eq!(peer.line(), "first");
    next_prompt(&mut pty);
    pty.send("second\r").unwrap();
    assert_eq!(peer.line(), "second");
    next_prompt(&mut pty);
    // Up twice recalls "first"; Left, a character and Enter edit it.
    pty.send("\x1b[A\x1b[A\x1b[DX\r").unwrap();
    assert_eq!(peer.line(), "firsXt");
    next_prompt(&mut pty);
    // Ctrl-D ends the session cleanly: !Disconnect, then exit 0.
    pty.send("\x04").unwrap();
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 0);
}

#[test]
fn a_reply_arriving_while_typing_does_not_mangle_the_line() {
    let (_server, mut peer, mut pty) = broker_pair();
    pty.send("half-typed").unwrap();
    pty.expect("half-typed").unwrap();
    peer.send("from the peer");
    // The reply is printed on its own line, then the prompt and the half-typed
    // line are drawn again below it.
    pty.expect(Regex("from the peer\r?\n(.|\r|\n)*> half-typed"))
        .expect("the line redrawn under the reply");
    pty.send(" and finished\r").unwrap();
    assert_eq!(peer.line(), "half-typed and finished");
    next_prompt(&mut pty);
    pty.send("\x04").unwrap();
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 0);
}

#[test]
fn ctrl_d_sends_disconnect_and_the_server_counts_the_messages() {
    let mut server = Server::start(&["--mode", "print"]);
    let mut pty = interactive(&server.addr);
    pty.send("one\r").unwrap();
    assert!(server.stdout_line().ends_with(" one"));
    next_prompt(&mut pty);
    pty.send("\x04").unwrap();
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 0);
    // The server closed the connection on !Disconnect: nothing is left open.
    let summary = server.summary();
    assert!(
        summary.contains("connections 1 (open 0), messages 1 "),
        "{summary}"
    );
}

#[test]
fn ctrl_c_exits_at_once() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let mut pty = interactive(&server.addr);
    pty.send("typed but not sent").unwrap();
    pty.send("\x03").unwrap();
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 130);
}

#[test]
fn a_lost_connection_is_one_line_and_exit_1() {
    let (mut server, _peer, mut pty) = broker_pair();
    server.kill();
    let line = pty
        .expect(Regex("error: connection to [0-9.:]+ broken: [a-z ]+"))
        .expect("one error line");
    let text = String::from_utf8_lossy(line.as_bytes()).to_string();
    assert!(
        text.ends_with("closed by the server") || text.ends_with("connection reset by peer"),
        "{text}"
    );
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 1);
}

#[test]
fn message_arguments_still_work_next_to_the_bench_subcommand() {
    let server = Server::start(&["--mode", "print"]);
    let out = client(&["-s", &server.addr, "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stdout_line().ends_with(" hello"));
    // "bench" after `--` is a message, not the subcommand.
    let out = client(&["-s", &server.addr, "--", "bench"]);
    assert!(out.status.success());
    assert!(server.stdout_line().ends_with(" bench"));
}
