//! A small harness for the limits and metrics tests: starts the real server on
//! loopback, reads its ports from the `listening` lines, collects stdout and stderr
//! lines on threads so a test waits for events (with deadlines, never sleeps), and
//! kills the child on drop.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Lines read from one of the child's pipes, and whether the pipe has closed.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

#[derive(Clone, Default)]
pub struct Stream(Arc<(Mutex<Lines>, Condvar)>);

impl Stream {
    fn spawn(pipe: impl Read + Send + 'static) -> Stream {
        let stream = Stream::default();
        let shared = stream.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        let (lock, cvar) = &*shared.0;
                        lock.lock().unwrap().lines.push(line);
                        cvar.notify_all();
                    }
                }
            }
            let (lock, cvar) = &*shared.0;
            lock.lock().unwrap().closed = true;
            cvar.notify_all();
        });
        stream
    }

    /// Waits until some line satisfies `pred`; returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.0;
        let mut guard = lock.lock().unwrap();
        loop {
            if let Some(line) = guard.lines.iter().find(|l| pred(l)) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline || guard.closed {
                let lines = guard.lines.join("\n");
                drop(guard);
                panic!("timed out waiting for {what}; lines so far:\n{lines}");
            }
            guard = cvar.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits until at least `n` lines satisfy `pred`.
    pub fn wait_count(&self, what: &str, n: usize, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.0;
        let mut guard = lock.lock().unwrap();
        loop {
            let count = guard.lines.iter().filter(|l| pred(l)).count();
            if count >= n {
                return;
            }
            let now = Instant::now();
            if now >= deadline || guard.closed {
                let lines = guard.lines.join("\n");
                drop(guard);
                panic!("timed out waiting for {n} x {what} (have {count}); lines so far:\n{lines}");
            }
            guard = cvar.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    pub fn all(&self) -> Vec<String> {
        self.0.0.lock().unwrap().lines.clone()
    }
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub stdout: Stream,
    pub stderr: Stream,
}

/// Options for starting the server.
#[derive(Default)]
pub struct Opts {
    /// RLIMIT_NOFILE (soft and hard) for the child.
    pub nofile: Option<u64>,
    /// Listen address instead of 127.0.0.1:0.
    pub listen: Option<&'static str>,
}

impl Server {
    /// `sockpool-server -l 127.0.0.1:0 ARGS` (add `-w N` in ARGS).
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(args, Opts::default())
    }

    pub fn start_with(args: &[&str], opts: Opts) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockpool-server"));
        cmd.args(["-l", opts.listen.unwrap_or("127.0.0.1:0")])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = opts.nofile {
            // SAFETY: setrlimit is async-signal-safe and touches no memory of the
            // parent; the rlimit lives on this closure's stack.
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
        let stdout = Stream::spawn(child.stdout.take().unwrap());
        let stderr = Stream::spawn(child.stderr.take().unwrap());
        // Both sockets must be bound before a test sends to them.
        let tcp = stderr.wait_for("listening tcp", |l| l.starts_with("listening tcp "));
        if !args.contains(&"--tcp-only") {
            stderr.wait_for("listening udp", |l| l.starts_with("listening udp "));
        }
        let addr: SocketAddr = tcp.rsplit(' ').next().unwrap().parse().unwrap();
        let metrics = args.contains(&"--metrics").then(|| {
            let line =
                stderr.wait_for("listening metrics", |l| l.starts_with("listening metrics "));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        });
        Server {
            child,
            addr,
            metrics,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A TCP connection from 127.0.0.1.
    pub fn tcp(&self) -> TcpStream {
        connect_from("127.0.0.1", self.addr)
    }

    /// SIGINT, then waits for the exit and the summary line.
    pub fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not exit on SIGINT");
            thread::sleep(Duration::from_millis(20));
        };
        let summary = self
            .stderr
            .wait_for("summary", |l| l.starts_with("summary: "));
        (status, summary)
    }

    /// The server's CPU time (user + system) in clock ticks, from /proc/PID/stat.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces) start at ") ".
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `addr` from the local address `source` (any 127.x works on
/// loopback), with read and write deadlines.
pub fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().unwrap();
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
        .connect_timeout(&addr.into(), DEADLINE)
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// A UDP socket bound to `source`.
pub fn udp_from(source: &str) -> UdpSocket {
    let socket = UdpSocket::bind((source, 0)).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

/// Whether the server closed `stream` (EOF or reset) before anything arrived; fails
/// the test if neither happens within `within`.
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

/// Sends one line and reads back its echo (server in echo mode).
pub fn echo_roundtrip(stream: &mut TcpStream, line: &str) -> io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => break,
            _ => got.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Parses `name N` out of the summary line (`messages 3`, `denied 1`, …): the
/// first occurrence after `after`.
pub fn summary_number(summary: &str, after: &str, name: &str) -> u64 {
    let start = summary.find(after).unwrap_or(0);
    let rest = &summary[start..];
    let at = rest
        .find(&format!("{name} "))
        .unwrap_or_else(|| panic!("{name} not in {summary}"));
    rest[at + name.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether a tool is installed; prints `skipped: TOOL not installed` and returns
/// false when not, unless SOCKPOOL_REQUIRE_PEERS=1, which fails the test instead.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("SOCKPOOL_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{tool} is required (SOCKPOOL_REQUIRE_PEERS=1) but not installed");
        }
        let _ = writeln!(io::stderr(), "skipped: {tool} not installed");
    }
    found
}

/// A plain HTTP/1.1 GET of `path` (without curl): the whole response, head and body.
pub fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}
