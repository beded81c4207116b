//! Shared helpers for the integration tests: they run the real binaries on loopback.
//!
//! [`Server`] starts `sockpool-server` with `-l 127.0.0.1:0 -w 2` (plus the test's
//! flags), learns its ports from the `listening tcp|udp ADDR` lines, reads stdout and
//! stderr on threads of their own (an unread pipe would stall the server) and kills
//! the child when dropped. Every wait has a deadline, so a bug fails a test instead of
//! hanging it; nothing here sleeps to synchronise.

// Test helpers panic on failure by design: a panic here fails the calling test.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub const SERVER: &str = env!("CARGO_BIN_EXE_sockpool-server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_sockpool-client");

/// `WAIT` from now.
pub fn deadline() -> Instant {
    Instant::now() + WAIT
}

/// A command whose environment holds no `SOCKPOOL_*` or `RUST_LOG` from the caller's,
/// so the binaries see only what a test sets.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("SOCKPOOL_") || name == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Lines of stderr collected by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    eof: bool,
}

type Shared = Arc<(Mutex<Lines>, Condvar)>;

/// How to start a server.
#[derive(Default)]
pub struct Options<'a> {
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Leave stdout to the test ([`Server::take_stdout`]) instead of a reader thread.
    pub raw_stdout: bool,
    /// RLIMIT_NOFILE (soft and hard) for the server, set between fork and exec; `None`:
    /// this process's limit.
    pub nofile: Option<u64>,
}

/// A running `sockpool-server`.
pub struct Server {
    child: Option<Child>,
    pub pid: i32,
    /// The TCP address, when TCP is served.
    pub tcp_addr: Option<SocketAddr>,
    /// The UDP address, when UDP is served.
    pub udp_addr: Option<SocketAddr>,
    /// The metrics endpoint, when started with `--metrics`.
    pub metrics_addr: Option<SocketAddr>,
    stderr: Shared,
    stdout: Option<Receiver<Vec<u8>>>,
    raw_stdout: Option<ChildStdout>,
}

impl Server {
    /// Starts the server with `-l 127.0.0.1:0 -w 2` and `args` (a `-l`/`--listen` or
    /// `-w`/`--workers` in `args` replaces the default).
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(Options {
            args,
            ..Options::default()
        })
    }

    pub fn start_with(opts: Options<'_>) -> Server {
        let has = |names: &[&str]| {
            opts.args.iter().any(|a| {
                names
                    .iter()
                    .any(|n| a == n || a.starts_with(&format!("{n}=")))
            })
        };
        let mut cmd = clean_command(SERVER);
        if !has(&["-l", "--listen"]) {
            cmd.args(["-l", "127.0.0.1:0"]);
        }
        let env_workers = opts.env.iter().any(|(k, _)| *k == "SOCKPOOL_WORKERS");
        if !has(&["-w", "--workers"]) && !env_workers {
            cmd.args(["-w", "2"]);
        }
        cmd.args(opts.args)
            .envs(opts.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = opts.nofile {
            // SAFETY: the hook runs in the child between fork and exec and calls only
            // setrlimit (async-signal-safe) on an rlimit on its own stack.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn sockpool-server");
        let pid = i32::try_from(child.id()).expect("pid fits in i32");

        let stderr: Shared = Arc::default();
        let pipe = child.stderr.take().expect("stderr is piped");
        let shared = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).unwrap_or(0);
                let (lock, cvar) = &*shared;
                let mut state = lock.lock().unwrap();
                if n == 0 {
                    state.eof = true;
                    cvar.notify_all();
                    return;
                }
                let line = String::from_utf8_lossy(&buf);
                state
                    .lines
                    .push(line.trim_end_matches(['\n', '\r']).to_string());
                cvar.notify_all();
            }
        });

        let out = child.stdout.take().expect("stdout is piped");
        let (stdout, raw_stdout) = if opts.raw_stdout {
            (None, Some(out))
        } else {
            (Some(spawn_line_reader(out)), None)
        };

        let mut server = Server {
            child: Some(child),
            pid,
            tcp_addr: None,
            udp_addr: None,
            metrics_addr: None,
            stderr,
            stdout,
            raw_stdout,
        };
        let env_on = |name: &str| {
            opts.env.iter().any(|(k, v)| {
                *k == name && matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            })
        };
        let serves = |flag: &str, var: &str| !opts.args.contains(&flag) && !env_on(var);
        let want_tcp = serves("--udp-only", "SOCKPOOL_UDP_ONLY");
        let want_udp = serves("--tcp-only", "SOCKPOOL_TCP_ONLY");
        let want_metrics = has(&["--metrics"]);
        let until = deadline();
        let parse = |line: &str, what: &str| -> Option<SocketAddr> {
            line.strip_prefix(&format!("listening {what} "))
                .map(|addr| addr.parse().expect("listening line holds an address"))
        };
        let lines = server.wait_stderr_until(until, |lines| {
            let seen = |what: &str| {
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("listening {what} ")))
            };
            (seen("tcp") || !want_tcp)
                && (seen("udp") || !want_udp)
                && (seen("metrics") || !want_metrics)
        });
        for line in &lines {
            if let Some(addr) = parse(line, "tcp") {
                server.tcp_addr.get_or_insert(addr);
            }
            if let Some(addr) = parse(line, "udp") {
                server.udp_addr.get_or_insert(addr);
            }
            if let Some(addr) = parse(line, "metrics") {
                server.metrics_addr.get_or_insert(addr);
            }
        }
        server
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr.expect("the server listens on TCP")
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr.expect("the server listens on UDP")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr.expect("the server serves --metrics")
    }

    /// A TCP connection to the server, with read and write deadlines.
    pub fn tcp(&self) -> Tcp {
        Tcp::connect(self.tcp_addr())
    }

    /// A UDP socket connected to the server, with a read deadline.
    pub fn udp(&self) -> UdpSocket {
        let addr = self.udp_addr();
        let socket = udp_from(if addr.is_ipv4() { "127.0.0.1" } else { "::1" });
        socket.connect(addr).expect("connect the UDP socket");
        socket
    }

    /// The server's stdout, for a test that reads it itself (`raw_stdout`).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.raw_stdout
            .take()
            .expect("started with raw_stdout, taken once")
    }

    /// The next stdout line, as text (the server's output is always UTF-8).
    pub fn line(&self) -> String {
        self.lines(1).pop().unwrap()
    }

    /// The next `n` stdout lines, within [`WAIT`].
    pub fn lines(&self, n: usize) -> Vec<String> {
        self.lines_until(n, deadline())
    }

    /// The next stdout line if one comes before `until`.
    pub fn try_line(&self, until: Instant) -> Option<String> {
        let rx = self.stdout.as_ref().expect("stdout is read by the helper");
        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
            .ok()
            .map(utf8)
    }

    pub fn lines_until(&self, n: usize, until: Instant) -> Vec<String> {
        let rx = self.stdout.as_ref().expect("stdout is read by the helper");
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => out.push(utf8(line)),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for stdout line {} of {n}; got {:?}\nstderr:\n{}",
                    out.len() + 1,
                    tail(&out),
                    self.stderr_lines().join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "stdout ended after {} of {n} lines; got {:?}\nstderr:\n{}",
                    out.len(),
                    tail(&out),
                    self.stderr_lines().join("\n")
                ),
            }
        }
        out
    }

    /// Every stdout line until the server closes stdout (it has exited).
    pub fn rest_of_stdout(&self) -> Vec<String> {
        let rx = self.stdout.as_ref().expect("stdout is read by the helper");
        let until = deadline();
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => out.push(utf8(line)),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("stdout did not end; got {:?}", tail(&out))
                }
            }
        }
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.0.lock().unwrap().lines.clone()
    }

    /// Waits (within [`WAIT`]) for a stderr line matching `pred` and returns it.
    pub fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let lines = self.wait_stderr_until(deadline(), |lines| lines.iter().any(|l| pred(l)));
        match lines.into_iter().find(|l| pred(l)) {
            Some(line) => line,
            None => panic!("no stderr line {what}"),
        }
    }

    /// Waits (within [`WAIT`]) until `n` stderr lines match `pred`; returns them.
    pub fn wait_stderr_count(&self, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.wait_stderr_until(deadline(), |lines| {
            lines.iter().filter(|l| pred(l)).count() >= n
        });
        lines.into_iter().filter(|l| pred(l)).collect()
    }

    /// Reads stdout lines (within [`WAIT`]) until one matches `pred` and returns it; the
    /// lines before it are consumed.
    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = deadline();
        loop {
            match self.try_line(until) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "no stdout line {what}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                ),
            }
        }
    }

    /// Waits until `done(lines)` holds, then returns a copy of the lines.
    fn wait_stderr_until(&self, until: Instant, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let (lock, cvar) = &*self.stderr;
        let mut state = lock.lock().unwrap();
        loop {
            if done(&state.lines) {
                return state.lines.clone();
            }
            if state.eof {
                panic!(
                    "stderr ended before the expected line; stderr:\n{}",
                    state.lines.join("\n")
                );
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for stderr; stderr:\n{}",
                    state.lines.join("\n")
                );
            }
            state = cvar.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Every stderr line, once the server has closed stderr (exited).
    pub fn all_stderr(&self) -> Vec<String> {
        let (lock, cvar) = &*self.stderr;
        let until = deadline();
        let mut state = lock.lock().unwrap();
        while !state.eof {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "stderr did not end");
            state = cvar.wait_timeout(state, left).unwrap().0;
        }
        state.lines.clone()
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of a child we have not reaped yet (the Child is
        // still held), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits until the server exits or `until` passes (then panics).
    pub fn wait_exit(&mut self, until: Instant) -> ExitStatus {
        let child = self.child.as_mut().expect("the child is running");
        wait_child(child, until).unwrap_or_else(|| {
            panic!(
                "server did not exit in time; stderr:\n{}",
                self.stderr_lines().join("\n")
            )
        })
    }

    /// SIGTERM, then expects exit status 0 within [`WAIT`]; returns the whole rest of
    /// stdout and the whole of stderr.
    pub fn finish(&mut self) -> (Vec<String>, Vec<String>) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(deadline());
        let stderr = self.all_stderr();
        assert!(
            status.success(),
            "server exit: {status}; stderr:\n{}",
            stderr.join("\n")
        );
        let stdout = if self.stdout.is_some() {
            self.rest_of_stdout()
        } else {
            Vec::new()
        };
        (stdout, stderr)
    }

    /// Sends `sig` (SIGINT or SIGTERM), waits (within [`WAIT`]) for the exit and returns
    /// its status and the summary line. Unlike [`Server::finish`] it does not check the
    /// status.
    pub fn stop(&mut self, sig: i32) -> (ExitStatus, String) {
        self.signal(sig);
        let status = self.wait_exit(deadline());
        let stderr = self.all_stderr();
        (status, summary(&stderr).to_string())
    }

    /// SIGTERM, then waits (within [`WAIT`]) for the summary line and returns it.
    /// Unlike [`Server::finish`] it neither waits for the exit nor checks its status.
    pub fn sigterm_summary(&self) -> String {
        self.signal(libc::SIGTERM);
        self.wait_stderr("summary:", |l| l.starts_with("summary:"))
    }

    /// The server's resident memory now and at its peak (VmRSS, VmHWM), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in /proc/PID/status"));
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("a number of kB");
            kb * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The server's CPU time so far (user + system), in clock ticks (1/100 s), from
    /// /proc/PID/stat.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .expect("read /proc/PID/stat");
        // Fields after the command name (which may hold spaces) start at ") ".
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn utf8(line: Vec<u8>) -> String {
    match String::from_utf8(line) {
        Ok(mut s) => {
            if s.ends_with('\n') {
                s.pop();
            }
            s
        }
        Err(err) => panic!("server output is not UTF-8: {:?}", err.as_bytes()),
    }
}

fn tail(lines: &[String]) -> &[String] {
    &lines[lines.len().saturating_sub(20)..]
}

/// Reads `pipe` line by line (each with its `\n`, if it had one) into a channel.
pub fn spawn_line_reader<R: Read + Send + 'static>(pipe: R) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::with_capacity(256 * 1024, pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Waits for `child` to exit until `until`; `None` if it has not.
pub fn wait_child(child: &mut Child, until: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        // Polling for exit (not synchronising on time): child exit has no event
        // we can wait on with a deadline from std alone.
        thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback port free now for both TCP and UDP (bound, then released): for a
/// server that must be restarted on the same port, that must know its peers'
/// ports in advance, or that `systemd-socket-activate` binds.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A plain TCP connection to `addr` from the local address `source` (any 127.x
/// stands in for another host on loopback), with read and write deadlines. For a
/// test that reads raw bytes or expects refusals; [`Tcp`] is the line-oriented client.
pub fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().expect("an IP address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind the client's source address");
    socket
        .connect_timeout(&addr.into(), WAIT)
        .expect("connect to the server");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// A UDP socket bound to `source` (an IP address, any port), with a read deadline.
pub fn udp_from(source: &str) -> UdpSocket {
    let socket = UdpSocket::bind((source, 0)).expect("bind a UDP socket");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Waits until every thread of `pid` is stopped (state `T` in /proc): after
/// `SIGSTOP`, whatever is sent to the server queues in its sockets.
pub fn wait_stopped(pid: i32) {
    let deadline = deadline();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.get(stat.rfind(')')? + 2..)?;
                    rest.chars().next()
                })
                == Some('T')
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Expects the server to close `stream` (EOF or reset) before sending anything, within
/// `within`. Unlike [`Tcp::expect_eof`] a reset counts: a refused client may get one.
pub fn assert_closed(stream: &mut TcpStream, within: Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected a close, got {n} bytes"),
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("expected a close within {within:?}, got {err}"),
    }
}

/// A plain HTTP/1.1 GET of `path` from `addr` (the `--metrics` endpoint) without
/// curl: the whole response, head and body.
pub fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to metrics");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// A TCP client connection with read and write deadlines.
pub struct Tcp {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Tcp {
    pub fn connect(addr: SocketAddr) -> Tcp {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the server");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Tcp { stream, reader }
    }

    /// This end's address: the peer the server prints.
    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Half-closes: the server sees end of stream.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Aborts the connection: SO_LINGER 0, then close, so the server gets a reset.
    pub fn reset(self) {
        let socket = socket2::SockRef::from(&self.stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        // Both descriptors of the socket must close for the reset to be sent.
        drop(self.reader);
        drop(self.stream);
    }

    /// The next line from the server, without its `\n`.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a line");
        assert!(n > 0, "the server closed the connection");
        line.pop();
        line
    }

    /// Expects the server to close the connection (EOF) within the read deadline.
    pub fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("expected EOF, got {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(err) => panic!("expected EOF, got {err}"),
        }
    }
}

/// The output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// Runs `cmd` with `stdin` as its input, collecting its output; it must exit within
/// [`WAIT`] (it is killed and the test fails otherwise).
pub fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {cmd:?}: {err}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        // A command that exits without reading all of it is not an error here.
        let _ = input.write_all(&stdin);
    });
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let Some(status) = wait_child(&mut child, deadline()) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {WAIT:?}");
    };
    writer.join().unwrap();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `sockpool-client` with `args`, fed `stdin`.
pub struct Client;

impl Client {
    pub fn run(args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = clean_command(CLIENT);
        cmd.args(args);
        run(cmd, stdin)
    }

    /// Sends `args` to `server` and expects exit 0.
    pub fn send(server: SocketAddr, args: &[&str]) -> Output {
        let addr = server.to_string();
        let mut all = vec!["-s", addr.as_str()];
        all.extend_from_slice(args);
        let out = Client::run(&all, b"");
        assert_eq!(out.code(), Some(0), "client failed: {out:?}");
        out
    }
}

/// Whether `tool` is on PATH. When it is not: prints `skipped: TOOL not installed`
/// (uncaptured) and returns false, or fails the test under `SOCKPOOL_REQUIRE_PEERS=1`.
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool))));
    if found {
        return true;
    }
    if std::env::var("SOCKPOOL_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{tool} not installed, and SOCKPOOL_REQUIRE_PEERS=1");
    }
    let _ = writeln!(io::stderr(), "skipped: {tool} not installed");
    false
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Raises this process's open-file soft limit to its hard limit; returns the new soft
/// limit (the server's own helper).
pub fn raise_fd_limit() -> u64 {
    sockpool::net::fdlimit::raise_nofile().expect("read the open-files limit")
}

/// A file in the temporary directory removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "sockpool-test-{}-{name}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One parsed `text` line: `<timestamp> <proto> <peer> <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLine {
    pub ts: String,
    pub proto: String,
    pub peer: String,
    pub msg: String,
}

/// Splits a `text` line into its four fields (the message may contain spaces).
pub fn parse_text(line: &str) -> TextLine {
    let mut parts = line.splitn(4, ' ');
    let mut next = || {
        parts
            .next()
            .unwrap_or_else(|| panic!("not a text line: {line:?}"))
            .to_string()
    };
    TextLine {
        ts: next(),
        proto: next(),
        peer: next(),
        msg: next(),
    }
}

/// One parsed `json` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonLine {
    pub ts: String,
    pub proto: String,
    pub peer: String,
    pub conn: Option<u64>,
    /// The message's exact bytes, from `msg` or `msg_b64`.
    pub bytes: Vec<u8>,
    /// Whether it came as `msg_b64`.
    pub b64: bool,
}

/// Parses a `json` line and checks its shape (exactly one of `msg` / `msg_b64`).
pub fn parse_json(line: &str) -> JsonLine {
    use base64::Engine as _;
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let s = |k: &str| {
        obj.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no string {k:?} in {line}"))
            .to_string()
    };
    let (bytes, b64) = match (obj.get("msg"), obj.get("msg_b64")) {
        (Some(m), None) => (
            m.as_str().expect("msg is a string").as_bytes().to_vec(),
            false,
        ),
        (None, Some(b)) => (
            base64::engine::general_purpose::STANDARD
                .decode(b.as_str().expect("msg_b64 is a string"))
                .expect("msg_b64 is standard base64"),
            true,
        ),
        _ => panic!("exactly one of msg / msg_b64 expected: {line}"),
    };
    JsonLine {
        ts: s("ts"),
        proto: s("proto"),
        peer: s("peer"),
        conn: obj.get("conn").map(|c| {
            c.as_u64()
                .unwrap_or_else(|| panic!("conn is a number: {line}"))
        }),
        bytes,
        b64,
    }
}

/// Groups messages by a key, keeping their order.
pub fn group_by<K: std::hash::Hash + Eq, V>(
    items: impl IntoIterator<Item = (K, V)>,
) -> HashMap<K, Vec<V>> {
    let mut map: HashMap<K, Vec<V>> = HashMap::new();
    for (k, v) in items {
        map.entry(k).or_default().push(v);
    }
    map
}

/// The value of `key=VALUE` in a log line, if present.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// The summary line from a server's stderr.
pub fn summary(stderr: &[String]) -> &str {
    stderr
        .iter()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary line in stderr:\n{}", stderr.join("\n")))
}

/// The summary line from its first `section` on (`dropped`, `refused`), for
/// [`summary_count`] to read a reason there: `denied` is both a drop and a refusal.
pub fn summary_section<'a>(summary: &'a str, section: &str) -> &'a str {
    let at = summary
        .find(section)
        .unwrap_or_else(|| panic!("no {section:?} in the summary: {summary}"));
    &summary[at..]
}

/// The number after the first `word ` in a summary line: 5000 for `tcp` in
/// `messages 5000 (tcp 5000, udp 0)`.
pub fn summary_count(summary: &str, word: &str) -> u64 {
    let at = summary
        .find(&format!("{word} "))
        .unwrap_or_else(|| panic!("no {word:?} in the summary: {summary}"))
        + word.len()
        + 1;
    let digits: String = summary[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in the summary: {summary}"))
}

/// Waits (poll(2)) until `fd` is ready for `events` or `until` passes; true if ready.
pub fn poll_fd(fd: i32, events: i16, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one pollfd we own, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            panic!("poll: {}", io::Error::last_os_error());
        }
    }
}

/// Whether an IPv6 loopback address can be bound here.
pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok() && UdpSocket::bind("[::1]:0").is_ok()
}

/// Bytes waiting in a pipe, and its capacity.
pub fn pipe_fill(fd: i32) -> (usize, usize) {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to a live local; F_GETPIPE_SZ takes no pointer.
    let (rc, size) = unsafe {
        (
            libc::ioctl(fd, libc::FIONREAD, &mut pending),
            libc::fcntl(fd, libc::F_GETPIPE_SZ),
        )
    };
    assert!(rc == 0 && size > 0, "{}", io::Error::last_os_error());
    (pending as usize, size as usize)
}

/// Whether a pipe holding `pending` of `size` bytes has no room for another output
/// batch (64 KiB). The kernel fills a pipe page by page, so a few KiB may stay unused
/// in a pipe that is full for every purpose.
pub fn pipe_is_full(pending: usize, size: usize) -> bool {
    pending + 64 * 1024 > size
}

/// A fresh directory in the temporary directory (mode 0755, as logrotate wants its
/// files' directories), removed with its contents on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!(
            "sockpool-test-{}-{name}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The value of an unlabelled sample `name` on the metrics page at `addr`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let page = scrape(addr, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// Waits (within [`WAIT`]) until `cond` holds, checking every 10 ms: for state that
/// has no event to wait on, such as a file's contents. Panics with `what` otherwise.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = deadline();
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}
