//! The client as people use it at a terminal: a real pseudo-terminal (expectrl)
//! drives `sockpool-client` against the real server. Each step waits for what the
//! screen shows (with a deadline), never for a fixed time.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;

use expectrl::process::unix::WaitStatus;
use expectrl::{Eof, Expect, Regex, Session};

mod support;

use support::{CLIENT, Client, Server, Tcp, WAIT, clean_command};

type Pty = expectrl::session::OsSession;

/// `sockpool-client -s ADDR` on a pseudo-terminal, at its first prompt.
fn interactive(addr: SocketAddr) -> Pty {
    let mut cmd = clean_command(CLIENT);
    cmd.args(["-s", &addr.to_string()]).env("TERM", "xterm");
    let mut pty = Session::spawn(cmd).expect("spawn on a pty");
    pty.set_expect_timeout(Some(WAIT));
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

/// A broker, a peer and the interactive client, both known to be relayed to.
fn broker_pair() -> (Server, Tcp, Pty) {
    let server = Server::start(&["--mode", "broker"]);
    let mut peer = server.tcp();
    let mut pty = interactive(server.tcp_addr());
    // Both connections are with their workers (so relayed to) once logged.
    server.wait_stderr_count(2, |l| l.contains("connection opened"));
    peer.send(b"sync\n");
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
    peer.send(b"from the peer\n");
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
    let server = Server::start(&["--mode", "print"]);
    let mut pty = interactive(server.tcp_addr());
    pty.send("one\r").unwrap();
    assert!(server.line().ends_with(" one"));
    next_prompt(&mut pty);
    pty.send("\x04").unwrap();
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 0);
    // The server closed the connection on !Disconnect: nothing is left open.
    let summary = server.sigterm_summary();
    assert!(
        summary.contains("connections 1 (open 0), messages 1 "),
        "{summary}"
    );
}

#[test]
fn ctrl_c_exits_at_once() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let mut pty = interactive(server.tcp_addr());
    pty.send("typed but not sent").unwrap();
    pty.send("\x03").unwrap();
    pty.expect(Eof).unwrap();
    assert_eq!(exit_code(&pty), 130);
}

#[test]
fn a_lost_connection_is_one_line_and_exit_1() {
    let (server, _peer, mut pty) = broker_pair();
    // Dropping the server kills it (SIGKILL) and reaps it.
    drop(server);
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
    let addr = server.tcp_addr().to_string();
    let out = Client::run(&["-s", &addr, "hello"], b"");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(server.line().ends_with(" hello"));
    // "bench" after `--` is a message, not the subcommand.
    let out = Client::run(&["-s", &addr, "--", "bench"], b"");
    assert!(out.status.success());
    assert!(server.line().ends_with(" bench"));
}
