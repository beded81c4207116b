//! Every framing end to end: the server cuts what real senders frame, echo returns
//! exactly what was sent in the same framing, and the client speaks each framing.

mod support;

use std::io::Read;

use support::{Client, Server};

/// Frames `msg` as a sender would for `framing`.
fn framed(framing: &str, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match framing {
        "line" => {
            out.extend_from_slice(msg);
            out.push(b'\n');
        }
        "length" => {
            out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
            out.extend_from_slice(msg);
        }
        "octet" => {
            out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            out.extend_from_slice(msg);
        }
        other => panic!("no framing {other}"),
    }
    out
}

#[test]
fn echo_returns_exactly_what_was_sent_in_each_framing() {
    let messages: [&[u8]; 4] = [
        b"plain",
        b"",
        b"\x00\xff binary \r",
        b"with space and digits 12 ",
    ];
    for framing in ["line", "length", "octet"] {
        let server = Server::start(&["--mode", "echo", "-q", "--framing", framing]);
        let mut c = server.tcp();
        let mut sent = Vec::new();
        for m in messages {
            // Line framing cannot carry an empty message followed by more (it is one),
            // nor a trailing `\r` (stripped): send what the framing can represent.
            if framing == "line" && m.ends_with(b"\r") {
                continue;
            }
            sent.extend_from_slice(&framed(framing, m));
        }
        // One byte at a time, so every message straddles reads.
        for byte in &sent {
            c.send(std::slice::from_ref(byte));
        }
        c.shutdown_write();
        let mut echoed = Vec::new();
        c.stream.read_to_end(&mut echoed).unwrap();
        assert_eq!(echoed, sent, "framing {framing}");
    }
}

#[test]
fn raw_framing_makes_each_chunk_one_message() {
    let server = Server::start(&["--framing", "raw", "--format", "json"]);
    let mut c = server.tcp();
    c.send(b"no newline needed\nand this line too");
    let line = support::parse_json(&server.line());
    assert_eq!(line.bytes, b"no newline needed\nand this line too");
}

#[test]
fn oversize_truncate_delivers_the_first_max_frame_bytes() {
    for framing in ["line", "length", "octet"] {
        let server = Server::start(&[
            "--framing",
            framing,
            "--max-frame",
            "8",
            "--oversize",
            "truncate",
            "--format",
            "json",
        ]);
        let mut c = server.tcp();
        c.send(&framed(framing, b"0123456789abcdef"));
        c.send(&framed(framing, b"next"));
        let first = support::parse_json(&server.line());
        assert_eq!(first.bytes, b"01234567", "framing {framing}");
        assert_eq!(support::parse_json(&server.line()).bytes, b"next");
        let warning = server.wait_stderr("a truncation warning", |l| l.contains("truncated"));
        assert!(warning.contains("16 bytes"), "{warning}");
    }
}

#[test]
fn the_client_speaks_each_framing_and_prints_replies() {
    for framing in ["line", "length", "octet"] {
        let server = Server::start(&["--mode", "echo", "--framing", framing]);
        let addr = server.tcp_addr().to_string();
        let out = Client::run(
            &[
                "-s",
                &addr,
                "--framing",
                framing,
                "one",
                "two words",
                "\x1b[1m",
            ],
            b"",
        );
        assert_eq!(out.code(), Some(0), "{out:?}");
        // Replies are printed one per line, escaped like the server's text output.
        assert_eq!(
            out.stdout, "one\ntwo words\n\\x1b[1m\n",
            "framing {framing}"
        );
        let printed = server.lines(3);
        assert!(printed[1].ends_with(" two words"), "{printed:?}");
    }
}

#[test]
fn the_client_waits_for_udp_replies() {
    let server = Server::start(&["--mode", "echo"]);
    let addr = server.udp_addr().to_string();
    let out = Client::run(&["-u", "-s", &addr, "--wait", "2", "ping"], b"");
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "ping\n");
}

#[test]
fn the_client_prints_replies_while_still_reading_stdin() {
    use std::io::Write;
    use std::process::Stdio;
    let server = Server::start(&["--mode", "echo"]);
    let mut child = support::clean_command(support::CLIENT)
        .args(["-s", &server.tcp_addr().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let replies = support::spawn_line_reader(child.stdout.take().unwrap());
    // Each reply must come back before the next line is even written.
    for word in ["first", "second", "third"] {
        writeln!(stdin, "{word}").unwrap();
        let reply = replies
            .recv_timeout(support::WAIT)
            .expect("a reply while stdin is open");
        assert_eq!(reply, format!("{word}\n").into_bytes());
    }
    drop(stdin);
    let status = support::wait_child(&mut child, support::deadline()).expect("client exits");
    assert!(status.success());
}
