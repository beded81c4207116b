//! `sockpool-client bench` against the real server on loopback: exact counts, an
//! honest rate, UDP loss against a blackhole, the JSON report's shape, and errors
//! that are reported, not fatal. Every run is bounded (messages or seconds) and
//! every wait has a deadline.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::{TcpListener, UdpSocket};

use serde_json::Value;

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

use local::{Server, client, count};

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn final_report(stdout: &[u8]) -> Value {
    let lines = json_lines(stdout);
    let last = lines.last().expect("a final report").clone();
    assert_eq!(last["report"], "final");
    last
}

const FIELDS: [&str; 11] = [
    "mode",
    "connections",
    "duration",
    "sent",
    "received",
    "errors",
    "msgs_per_sec",
    "mb_per_sec",
    "latency",
    "udp",
    "warmup",
];

#[test]
fn the_server_counts_exactly_the_messages_sent() {
    let mut server = Server::start(&["--mode", "discard"]);
    let out = client(&[
        "bench",
        "-s",
        &server.addr,
        "--messages",
        "5000",
        "--connections",
        "10",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = final_report(&out.stdout);
    assert_eq!(report["sent"], 5000);
    assert_eq!(report["connected"], 10);
    assert_eq!(report["mode"], "closed loop");
    assert_eq!(report["errors"]["refused"], 0);
    let summary = server.summary();
    assert_eq!(count(&summary, "tcp"), 5000, "{summary}");
    assert_eq!(count(&summary, "connections"), 10, "{summary}");
}

#[test]
fn a_rate_limited_run_keeps_its_rate_and_measures_latency() {
    let mut server = Server::start(&["--mode", "echo", "-q"]);
    let out = client(&[
        "bench",
        "-s",
        &server.addr,
        "--rate",
        "2000",
        "--duration",
        "3",
        "--connections",
        "10",
        "--echo",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = final_report(&out.stdout);
    for field in FIELDS {
        assert!(r.get(field).is_some(), "no {field} in {r}");
    }
    assert_eq!(r["mode"], "open loop");
    let rate = r["msgs_per_sec"].as_f64().unwrap();
    assert!((rate - 2000.0).abs() <= 100.0, "rate {rate}");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent.abs_diff(6000) <= 300, "sent {sent}");
    assert_eq!(r["received"], sent);
    let latency = &r["latency"];
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(latency[p].as_u64().is_some(), "no latency {p} in {r}");
    }
    assert!(latency["p50"].as_u64() <= latency["max"].as_u64());
    assert!(r["udp"].is_null());
    let summary = server.summary();
    assert_eq!(count(&summary, "tcp"), sent, "{summary}");
}

#[test]
fn udp_echo_reports_delivery_and_intervals() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let out = client(&[
        "bench",
        "-s",
        &server.addr,
        "-u",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--connections",
        "4",
        "--echo",
        "--interval",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    let intervals: Vec<&Value> = lines.iter().filter(|l| l["report"] == "interval").collect();
    assert!(intervals.len() >= 2, "{lines:?}");
    assert!(intervals.iter().all(|l| l["sent"].as_u64().is_some()));
    let r = final_report(&out.stdout);
    for field in FIELDS {
        assert!(!r[field].is_null(), "{field} is null in {r}");
    }
    assert_eq!(r["sent"], 2000);
    // Loopback with a server keeping up: everything comes back once, in order
    // per connection.
    let udp = &r["udp"];
    assert_eq!(
        udp["lost"].as_u64().unwrap() + r["received"].as_u64().unwrap(),
        2000,
        "{r}"
    );
    assert_eq!(udp["duplicated"], 0);
}

#[test]
fn udp_against_a_blackhole_is_total_loss() {
    // A bound socket that nobody reads: datagrams vanish without an ICMP error.
    let blackhole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = blackhole.local_addr().unwrap().to_string();
    let out = client(&[
        "bench",
        "-s",
        &addr,
        "-u",
        "--rate",
        "1000",
        "--messages",
        "500",
        "--connections",
        "2",
        "--echo",
        "--timeout",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = final_report(&out.stdout);
    assert_eq!(r["sent"], 500);
    assert_eq!(r["received"], 0);
    assert_eq!(r["udp"]["lost"], 500);
    assert!(r["latency"].is_null(), "{r}");
    drop(blackhole);
}

#[test]
fn refused_connections_are_counted_and_the_run_ends_with_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string(); // closed again at the end of this statement
    let out = client(&[
        "bench",
        "-s",
        &port,
        "--messages",
        "100",
        "--connections",
        "3",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let r = final_report(&out.stdout);
    assert_eq!(r["errors"]["refused"], 3);
    assert_eq!(r["sent"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("error: no connection to {port} could be made (refused 3)")
    );
}

#[test]
fn the_text_report_says_what_was_measured() {
    let server = Server::start(&["--mode", "discard"]);
    let out = client(&[
        "bench",
        "-s",
        &server.addr,
        "--messages",
        "200",
        "--connections",
        "2",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("closed loop"), "{text}");
    assert!(
        text.contains("latency:  not measured (no --echo)"),
        "{text}"
    );
    assert!(text.contains("sent:     200 messages"), "{text}");
    assert!(text.contains("errors:   none"), "{text}");
    // stderr is not a terminal: no progress bar, nothing at all.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn bad_usage_exits_2() {
    let out = client(&["bench", "--size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    let out = client(&["bench", "--duration", "1", "--messages", "1"]);
    assert_eq!(out.status.code(), Some(2));
}
