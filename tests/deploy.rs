//! Deployment: several processes on one address (`--reuse-port`), a taken port
//! without it, the listen backlog at shutdown, and restarts that lose nothing.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Server, clean_command, parse_text, run, udp_from};

/// Every message of `lines` (text output), counted.
fn tally(lines: &[String]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in lines {
        *seen.entry(parse_text(line).msg).or_insert(0) += 1;
    }
    seen
}

/// Sends `msg` on a fresh connection, half-closes and reads until the server
/// closes: an error here (refused, reset) is what a restart must never cause.
fn short_connection(addr: SocketAddr, msg: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, support::WAIT)?;
    stream.set_read_timeout(Some(support::WAIT))?;
    stream.write_all(format!("{msg}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    Ok(())
}

#[test]
fn two_processes_share_one_address_with_reuse_port() {
    let mut first = Server::start(&["--reuse-port"]);
    let addr = first.tcp_addr();
    assert_eq!(first.udp_addr(), addr, "port 0 gives UDP the TCP port");
    let listen = addr.to_string();
    let mut second = Server::start(&["--reuse-port", "-l", &listen]);
    assert_eq!(second.tcp_addr(), addr);
    assert_eq!(second.udp_addr(), addr);

    // Many connections and many source ports: the kernel hashes each to one of the
    // two processes (the chance that 200 all land on one is 2^-199).
    const N: usize = 200;
    for i in 0..N {
        short_connection(addr, &format!("tcp {i}")).unwrap();
    }
    for i in 0..N {
        let socket = udp_from("127.0.0.1");
        socket.send_to(format!("udp {i}").as_bytes(), addr).unwrap();
    }
    let (out1, _) = first.finish();
    let (out2, _) = second.finish();
    let (seen1, seen2) = (tally(&out1), tally(&out2));
    for proto in ["tcp", "udp"] {
        for i in 0..N {
            let msg = format!("{proto} {i}");
            let times = seen1.get(&msg).unwrap_or(&0) + seen2.get(&msg).unwrap_or(&0);
            assert_eq!(times, 1, "{msg} printed {times} times");
        }
        let by =
            |seen: &HashMap<String, usize>| seen.keys().filter(|m| m.starts_with(proto)).count();
        assert!(
            by(&seen1) > 0 && by(&seen2) > 0,
            "{proto}: both processes serve ({} and {})",
            by(&seen1),
            by(&seen2)
        );
    }
}

/// A second server on a taken address, in the foreground: its exit and stderr.
fn second_server(args: &[&str]) -> support::Output {
    let mut cmd = clean_command(support::SERVER);
    cmd.args(["-w", "2"]).args(args);
    run(cmd, b"")
}

#[test]
fn a_taken_port_is_an_error_without_reuse_port() {
    for proto in ["--tcp-only", "--udp-only"] {
        let first = Server::start(&[proto]);
        let addr = first.tcp_addr.or(first.udp_addr).unwrap().to_string();
        let out = second_server(&[proto, "-l", &addr]);
        assert_eq!(out.code(), Some(1), "{proto}: {out:?}");
        assert_eq!(
            out.stderr_lines().last().copied(),
            Some(format!("error: cannot listen on {addr}: address already in use").as_str()),
            "{proto}: {out:?}"
        );
    }
    // Sharing takes both sides asking for it.
    let first = Server::start(&["--tcp-only"]);
    let addr = first.tcp_addr().to_string();
    let out = second_server(&["--tcp-only", "--reuse-port", "-l", &addr]);
    assert_eq!(out.code(), Some(1), "{out:?}");
}

#[test]
fn connections_waiting_in_the_backlog_at_sigterm_are_served() {
    // Stopped, the server accepts nothing: the kernel completes each handshake and
    // queues connection and data. The signal then meets a full backlog.
    const N: usize = 50;
    let mut server = Server::start(&["--tcp-only"]);
    let addr = server.tcp_addr();
    server.signal(libc::SIGSTOP);
    support::wait_stopped(server.pid);
    let mut clients: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut c = support::connect_from("127.0.0.1", addr);
            c.write_all(format!("queued {i}\n").as_bytes()).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            c
        })
        .collect();
    server.signal(libc::SIGTERM);
    server.signal(libc::SIGCONT);
    let status = server.wait_exit(support::deadline());
    assert!(status.success(), "exit {status}");
    let out = server.rest_of_stdout();
    let seen = tally(&out);
    for i in 0..N {
        assert_eq!(seen.get(&format!("queued {i}")), Some(&1), "queued {i}");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let read = c.read_to_end(&mut rest);
        assert!(read.is_ok(), "client {i} was not closed cleanly: {read:?}");
    }
}

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// `net.ipv4.tcp_migrate_req` set to 1 for the test (what docs/deploy.md asks of a
/// host that restarts with `--reuse-port`), and put back as it was on drop.
struct MigrateReq {
    before: String,
}

impl MigrateReq {
    /// `None` (after saying why) when the setting cannot be turned on here.
    fn on() -> Option<MigrateReq> {
        let before = std::fs::read_to_string(MIGRATE_REQ).unwrap_or_default();
        if before.trim() == "1" {
            return Some(MigrateReq { before });
        }
        match std::fs::write(MIGRATE_REQ, "1") {
            Ok(()) => Some(MigrateReq { before }),
            Err(err) => {
                let msg = format!("skipped: cannot set {MIGRATE_REQ} to 1 ({err})");
                assert!(
                    std::env::var("SOCKPOOL_REQUIRE_PEERS").as_deref() != Ok("1"),
                    "{msg}, and SOCKPOOL_REQUIRE_PEERS=1"
                );
                let _ = writeln!(std::io::stderr(), "{msg}");
                None
            }
        }
    }
}

impl Drop for MigrateReq {
    fn drop(&mut self) {
        if !self.before.trim().is_empty() && self.before.trim() != "1" {
            let _ = std::fs::write(MIGRATE_REQ, self.before.trim());
        }
    }
}

/// Restarts under a steady stream of short connections: each time a new process
/// joins the address and the old one is sent SIGTERM. No connection may be refused
/// or reset, and every message comes out exactly once across all the outputs.
#[test]
fn restarts_with_reuse_port_lose_nothing() {
    const RESTARTS: usize = 20;
    let Some(_migrate) = MigrateReq::on() else {
        return;
    };
    let mut current = Server::start(&["--tcp-only", "--reuse-port"]);
    let addr = current.tcp_addr();
    let listen = addr.to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            // Bounded in count and time whatever happens to the servers.
            let until = Instant::now() + Duration::from_secs(240);
            let mut sent = 0usize;
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) && sent < 200_000 && Instant::now() < until {
                match short_connection(addr, &format!("m {sent}")) {
                    Ok(()) => {}
                    Err(err) => failures.push(format!("m {sent}: {err} ({:?})", err.kind())),
                }
                sent += 1;
            }
            (sent, failures)
        })
    };

    let mut outputs = Vec::new();
    for _ in 0..RESTARTS {
        let next = Server::start(&["--tcp-only", "--reuse-port", "-l", &listen]);
        let (out, _) = current.finish();
        outputs.extend(out);
        current = next;
    }
    stop.store(true, Ordering::SeqCst);
    let (sent, failures) = loader.join().unwrap();
    let (out, _) = current.finish();
    outputs.extend(out);

    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    let seen = tally(&outputs);
    for i in 0..sent {
        let msg = format!("m {i}");
        assert_eq!(seen.get(&msg), Some(&1), "{msg}");
    }
    assert_eq!(seen.len(), sent);
}

/// The report: a client connects, sends a line, and the server is signalled
/// at once. Whether the acceptor got to the connection first or not, the line is
/// printed and the connection closed cleanly.
#[test]
fn a_line_sent_right_before_sigterm_is_not_lost() {
    const ROUNDS: usize = 8;
    const CLIENTS: usize = 20;
    for round in 0..ROUNDS {
        let mut server = Server::start(&["--tcp-only"]);
        let addr = server.tcp_addr();
        let mut clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|i| {
                let mut c = support::connect_from("127.0.0.1", addr);
                c.write_all(format!("r{round} c{i}\n").as_bytes()).unwrap();
                c
            })
            .collect();
        server.signal(libc::SIGTERM);
        for c in &clients {
            // A reset connection fails here or in the read below.
            let _ = c.shutdown(Shutdown::Write);
        }
        let status = server.wait_exit(support::deadline());
        assert!(status.success(), "exit {status}");
        let seen = tally(&server.rest_of_stdout());
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(
                seen.get(&format!("r{round} c{i}")),
                Some(&1),
                "r{round} c{i}"
            );
            let mut rest = Vec::new();
            let read = c.read_to_end(&mut rest);
            assert!(read.is_ok(), "r{round} c{i}: {read:?}");
        }
    }
}
