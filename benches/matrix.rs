//! The benchmark matrix of BENCHMARKS.md: sockpool beside a tokio baseline (and, for
//! TCP ingest, a raw reader that only counts newlines), each scenario run several
//! times with the contenders alternating, reporting medians and ratios.
//!
//! `cargo build --release --bins --examples && cargo bench --bench matrix [-- P1 P4 …]`
//! Environment: `MATRIX_RUNS` (default 3); `MATRIX_SOCKPOOL=PATH` runs another build
//! of the server in sockpool's place (an A/B of a change against the same baselines),
//! `MATRIX_TOKIO=PATH` another build of the baseline;
//! `MATRIX_QUICK=1` shrinks every count and duration (a smoke run that proves the
//! rows work, in a minute or two; its numbers mean nothing).
//!
//! P4 writes its latency distributions as `.hgrm` files (HdrHistogram's text format)
//! under `target/matrix/` and, when `python3` is there, plots them with
//! `scripts/hgrm_plot.py` into `target/matrix/P4.svg`.
//!
//! The load comes from this process, on loopback; every loop is bounded in count and
//! time. Servers run with `-w 2` and `-q`, stdout into a pipe read by a thread here
//! that counts lines.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use sockpool::bench::histogram::Latency;

const TCP_CONNS: usize = 100;
const P1_PER_CONN: usize = 60_000;
/// Times each connection sends its payload: a run lasts about 3 s, long enough that
/// starting 100 sender threads is not part of the figure and a burst of other work
/// on the shared machine is averaged out (runs of 1 s varied 1.0–1.8× between the
/// same two servers).
const P1_REPEAT: usize = 6;
const P1D_REPEAT: usize = 30;
const MSG: usize = 64;
const IDLE_CONNS: usize = 19_000;
const WAIT: Duration = Duration::from_secs(120);
/// T1/T1p: lines per TLS connection in one payload, and payloads sent.
const TLS_PER_CONN: usize = 100_000;
const TLS_REPEAT: usize = 60;
const TLS_PRINT_REPEAT: usize = 24;
/// T3: idle TLS connections.
const TLS_IDLE_CONNS: usize = 3_000;
/// P3c: the most loss a rate may show and still count as carried (0.01%).
const CAPACITY_LOSS: f64 = 0.0001;
/// P3c: each rate is probed this many times and passes on the median loss.
const PROBE_REPEATS: usize = 3;

/// `MATRIX_QUICK=1`: every count and duration shrunk for a smoke run.
fn quick() -> bool {
    static QUICK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *QUICK.get_or_init(|| std::env::var("MATRIX_QUICK").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// `full` seconds, or a fraction of a second in a quick run.
fn secs(full: f64) -> f64 {
    if quick() { full.min(0.5) } else { full }
}

/// `full`, or `small` in a quick run.
fn size(full: usize, small: usize) -> usize {
    if quick() { small } else { full }
}

/// Where P4's `.hgrm` files and plot go.
fn matrix_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/matrix");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sockpool,
    Tokio,
    Raw,
    /// `raw_ceiling --print`: cuts lines and writes sockpool's bytes per message.
    PrintCeiling,
    /// P6's baseline: `examples/nats_publisher`, not a server.
    Publisher,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sockpool => "sockpool",
            Kind::Tokio => "tokio",
            Kind::Raw => "raw ceiling",
            Kind::PrintCeiling => "print ceiling",
            Kind::Publisher => "nats publisher",
        }
    }

    /// A ceiling listens on TCP only.
    fn has_udp(self) -> bool {
        matches!(self, Kind::Sockpool | Kind::Tokio)
    }

    fn command(self, mode: &str, extra: &[&str]) -> Command {
        let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release");
        let (path, args): (PathBuf, Vec<&str>) = match self {
            // `MATRIX_SOCKPOOL=PATH` runs another build of the server (an A/B of a
            // change, each side against the same baselines).
            Kind::Sockpool => (
                std::env::var_os("MATRIX_SOCKPOOL")
                    .map_or_else(|| release.join("sockpool-server"), PathBuf::from),
                // `-w` in `extra` replaces the default.
                if extra.contains(&"-w") {
                    vec!["-l", "127.0.0.1:0", "-q", "--mode", mode]
                } else {
                    vec!["-l", "127.0.0.1:0", "-w", "2", "-q", "--mode", mode]
                },
            ),
            // `MATRIX_TOKIO=PATH`: likewise for the baseline.
            Kind::Tokio => (
                std::env::var_os("MATRIX_TOKIO")
                    .map_or_else(|| release.join("examples/tokio_baseline"), PathBuf::from),
                vec!["-l", "127.0.0.1:0", "-w", "2", "--mode", mode],
            ),
            Kind::Raw => (
                release.join("examples/raw_ceiling"),
                vec!["-l", "127.0.0.1:0", "-w", "2"],
            ),
            Kind::PrintCeiling => (
                release.join("examples/raw_ceiling"),
                vec!["-l", "127.0.0.1:0", "-w", "2", "--print"],
            ),
            Kind::Publisher => (release.join("examples/nats_publisher"), vec![]),
        };
        assert!(
            path.exists(),
            "{} is missing: run `cargo build --release --bins --examples` first",
            path.display()
        );
        let mut cmd = Command::new(path);
        cmd.args(args).args(extra);
        cmd
    }
}

/// Counts the lines a server writes to stdout and notes when a target is reached.
struct Counter {
    lines: AtomicU64,
    target: AtomicU64,
    reached: Mutex<Option<Instant>>,
    keep: Option<Mutex<Vec<u8>>>,
}

struct Running {
    child: Child,
    pid: u32,
    tcp: SocketAddr,
    udp: Option<SocketAddr>,
    counter: Arc<Counter>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(kind: Kind, mode: &str, keep: bool) -> Running {
        Running::start_with(kind, mode, keep, &[])
    }

    fn start_with(kind: Kind, mode: &str, keep: bool, extra: &[&str]) -> Running {
        let mut cmd = kind.command(mode, extra);
        // The sockpool flag may not exist in every version: drop it if rejected.
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let counter = Arc::new(Counter {
            lines: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Mutex::new(None),
            keep: keep.then(|| Mutex::new(Vec::new())),
        });
        let mut out = child.stdout.take().unwrap();
        let c = Arc::clone(&counter);
        thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let lines = memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                if let Some(keep) = &c.keep {
                    keep.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let now = c.lines.fetch_add(lines, Ordering::SeqCst) + lines;
                if now >= c.target.load(Ordering::SeqCst) {
                    c.reached.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        });
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let (mut tcp, mut udp) = (None, None);
        let mut line = String::new();
        while tcp.is_none() || (udp.is_none() && kind.has_udp()) {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("{} exited before listening", kind.name());
            }
            if let Some(a) = line.trim().strip_prefix("listening tcp ") {
                tcp = a.parse().ok();
            }
            if let Some(a) = line.trim().strip_prefix("listening udp ") {
                udp = a.parse().ok();
            }
        }
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = err.read_to_end(&mut sink);
        });
        Running {
            child,
            pid,
            tcp: tcp.unwrap(),
            udp,
            counter,
        }
    }

    fn expect_lines(&self, n: u64) {
        self.counter.target.store(n, Ordering::SeqCst);
        if self.counter.lines.load(Ordering::SeqCst) >= n {
            self.counter
                .reached
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
        }
    }

    /// Waits until the target line count was reached; when it was.
    fn wait_lines(&self) -> Instant {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(at) = *self.counter.reached.lock().unwrap() {
                return at;
            }
            assert!(
                Instant::now() < until,
                "output stalled at {} lines",
                self.counter.lines.load(Ordering::SeqCst)
            );
            thread::sleep(Duration::from_micros(500));
        }
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// The server's user and system CPU time so far, in seconds: where a
    /// throughput difference comes from.
    fn cpu(&self) -> (f64, f64) {
        process_cpu(self.pid)
    }

    /// Context switches of all the server's threads so far (voluntary: it waited
    /// for something; involuntary: it was preempted).
    fn switches(&self) -> (u64, u64) {
        let (mut voluntary, mut preempted) = (0, 0);
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).unwrap() {
            let status =
                std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
            for line in status.lines() {
                let value = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                };
                if line.starts_with("voluntary_ctxt_switches") {
                    voluntary += value().unwrap_or(0);
                } else if line.starts_with("nonvoluntary_ctxt_switches") {
                    preempted += value().unwrap_or(0);
                }
            }
        }
        (voluntary, preempted)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// A 64-byte line: connection, sequence number, padding.
fn message(conn: usize, seq: usize) -> Vec<u8> {
    let mut m = format!("c{conn:05} {seq:010} ").into_bytes();
    m.resize(MSG - 1, b'x');
    m.push(b'\n');
    m
}

/// Rewrites the 10-digit sequence number of a [`message`] in place.
fn set_sequence(message: &mut [u8], seq: u64) {
    let mut n = seq;
    for digit in message[7..17].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn payloads(per_conn: usize) -> Vec<Arc<Vec<u8>>> {
    (0..TCP_CONNS)
        .map(|c| Arc::new((0..per_conn).flat_map(|s| message(c, s)).collect()))
        .collect()
}

fn connect(addr: SocketAddr, source: Option<[u8; 4]>) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(ip) = source {
        let _ = socket.set_reuse_address(true);
        socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    }
    socket.connect(&addr.into()).unwrap();
    socket.set_tcp_nodelay(true).unwrap();
    socket.into()
}

/// The kernel's TCP counters (`/proc/net/snmp`, `/proc/net/netstat`) by name
/// (`Tcp:RetransSegs`, `TcpExt:TCPLossProbes`): system-wide, so a difference over a
/// run counts that run's senders and server together.
fn tcp_counters() -> HashMap<String, u64> {
    let mut counters = HashMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // Each group is a line of names and a line of values, both led by `Group:`.
        for pair in lines.chunks_exact(2) {
            let mut names = pair[0].split_whitespace();
            let group = names.next().unwrap_or_default();
            for (name, value) in names.zip(pair[1].split_whitespace().skip(1)) {
                if let Ok(value) = value.parse() {
                    counters.insert(format!("{group}{name}"), value);
                }
            }
        }
    }
    counters
}

/// User and system CPU seconds that process `pid` (all its threads) has used so far.
fn process_cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces): utime and stime
    // are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |i: usize| fields[i].parse::<f64>().unwrap() / per_second;
    (ticks(11), ticks(12))
}

/// P1 / P1d: every connection writes its payload `repeat` times, half-closes and
/// waits for EOF.
/// Returns messages per second, timed to the last line counted (`print`) or to the
/// last EOF (`discard`, raw ceiling).
fn ingest(kind: Kind, mode: &str, data: &[Arc<Vec<u8>>], repeat: usize, by_lines: bool) -> f64 {
    let server = Running::start(kind, mode, false);
    let tcp_before = tcp_counters();
    let senders_before = process_cpu(std::process::id());
    let total = (data.len() * data[0].len() / MSG * repeat) as u64;
    server.expect_lines(total);
    let conns: Vec<TcpStream> = (0..data.len()).map(|_| connect(server.tcp, None)).collect();
    let barrier = Arc::new(Barrier::new(conns.len() + 1));
    let threads: Vec<_> = conns
        .into_iter()
        .zip(data)
        .map(|(mut s, payload)| {
            let (b, payload) = (Arc::clone(&barrier), Arc::clone(payload));
            thread::spawn(move || {
                b.wait();
                let start = Instant::now();
                for _ in 0..repeat {
                    s.write_all(&payload).unwrap();
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = [0u8; 64];
                while s.read(&mut rest).map(|n| n > 0).unwrap_or(false) {}
                (start, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    // Timed from the first sender's start: this thread may run after all of them.
    let times: Vec<(Instant, Instant)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let t0 = times.iter().map(|t| t.0).min().unwrap();
    let last_eof = times.iter().map(|t| t.1).max().unwrap();
    let end = if by_lines {
        server.wait_lines()
    } else {
        last_eof
    };
    let (user, sys) = server.cpu();
    let senders = process_cpu(std::process::id());
    let (waits, preempted) = server.switches();
    let tcp_after = tcp_counters();
    let grew = |name: &str| {
        let count = |c: &HashMap<String, u64>| c.get(name).copied().unwrap_or(0);
        count(&tcp_after).saturating_sub(count(&tcp_before))
    };
    // The senders are this process's threads (with, in print, the line counter on
    // the server's stdout): what the server's way of reading costs them (ACKs,
    // wake-ups) shows here.
    eprintln!(
        "    {}: server CPU {:.0} ns/msg user + {:.0} ns/msg sys; senders {:.0} + {:.0} ns/msg; {:.0} waits and {:.0} preemptions per million msgs; {} segments retransmitted, {} loss probes",
        kind.name(),
        user * 1e9 / total as f64,
        sys * 1e9 / total as f64,
        (senders.0 - senders_before.0) * 1e9 / total as f64,
        (senders.1 - senders_before.1) * 1e9 / total as f64,
        waits as f64 * 1e6 / total as f64,
        preempted as f64 * 1e6 / total as f64,
        grew("Tcp:RetransSegs"),
        grew("TcpExt:TCPLossProbes"),
    );
    total as f64 / end.duration_since(t0).as_secs_f64()
}

/// P6's load: connections × messages of 64 bytes (63 and a newline).
const NATS_CONNS: usize = 4;
const NATS_MESSAGES: usize = 200_000;
const NATS_SUBJECT: &str = "bench.sockpool";

/// A `nats-server -js` for P6, on a fresh store, killed on drop.
struct NatsServer {
    child: Child,
    url: String,
    store: PathBuf,
}

impl NatsServer {
    fn start() -> Option<NatsServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let store =
            std::env::temp_dir().join(format!("sockpool-matrix-nats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut err = BufReader::new(child.stderr.take()?);
        let mut line = String::new();
        while !line.contains("Server is ready") {
            line.clear();
            if err.read_line(&mut line).ok()? == 0 {
                return None;
            }
        }
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = err.read_to_end(&mut sink);
        });
        Some(NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            store,
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// P6: messages per second into JetStream, each acknowledged. Sockpool: from the
/// first byte its TCP clients send to its exit after SIGTERM (the drain waits for
/// every acknowledgement; exit 0 says none is missing). The publisher: its own
/// timing, first publish to last acknowledgement, of the same messages.
fn nats_ingest(kind: Kind, nats: &NatsServer, workers: &str) -> f64 {
    let total = NATS_MESSAGES as u64;
    if kind == Kind::Publisher {
        let out = kind
            .command("", &[])
            .args([
                &nats.url,
                NATS_SUBJECT,
                &total.to_string(),
                &(MSG - 1).to_string(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nats_publisher: {text}");
        // `published N in S s: R msgs/s`
        return text
            .rsplit(": ")
            .next()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("nats_publisher said {text:?}"));
    }
    let output = format!("{}/{NATS_SUBJECT}", nats.url);
    let mut server = Running::start_with(
        kind,
        "print",
        false,
        &["--output", &output, "--drain-timeout", "120", "-w", workers],
    );
    let per_conn = NATS_MESSAGES / NATS_CONNS;
    let data: Vec<Vec<u8>> = (0..NATS_CONNS)
        .map(|c| (0..per_conn).flat_map(|s| message(c, s)).collect())
        .collect();
    let t0 = Instant::now();
    let threads: Vec<_> = data
        .into_iter()
        .map(|payload| {
            let mut s = connect(server.tcp, None);
            thread::spawn(move || {
                s.write_all(&payload).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = [0u8; 64];
                while s.read(&mut rest).map(|n| n > 0).unwrap_or(false) {}
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Everything was read: the drain now waits for the last acknowledgements.
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(server.pid as i32, libc::SIGTERM) };
    let status = server.child.wait().unwrap();
    let elapsed = t0.elapsed();
    assert!(
        status.success(),
        "sockpool did not get every acknowledgement: {status}"
    );
    total as f64 / elapsed.as_secs_f64()
}

/// Checks that every message came out intact and in order per connection.
fn verify_print(kind: Kind) -> bool {
    let per_conn = 2_000;
    let server = Running::start(kind, "print", true);
    let total = (TCP_CONNS * per_conn) as u64;
    server.expect_lines(total);
    let data = payloads(per_conn);
    let threads: Vec<_> = data
        .iter()
        .map(|p| {
            let (addr, p) = (server.tcp, Arc::clone(p));
            thread::spawn(move || {
                let mut s = connect(addr, None);
                s.write_all(&p).unwrap();
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    server.wait_lines();
    let out = server
        .counter
        .keep
        .as_ref()
        .unwrap()
        .lock()
        .unwrap()
        .clone();
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let text = String::from_utf8_lossy(line);
        let msg = text.splitn(4, ' ').nth(3).unwrap_or_default();
        let mut parts = msg.split(' ');
        let (Some(conn), Some(seq)) = (parts.next(), parts.next()) else {
            return false;
        };
        let want = next.entry(conn.to_string()).or_insert(0);
        let conn_no: usize = conn[1..].parse().unwrap_or(usize::MAX);
        if seq.parse::<usize>().ok() != Some(*want)
            || msg.as_bytes() != &message(conn_no, *want)[..MSG - 1]
        {
            return false;
        }
        *want += 1;
    }
    next.len() == TCP_CONNS && next.values().all(|n| *n == per_conn)
}

/// P2: idle connections, then one message on each. Returns (served, RSS bytes per
/// connection once they are idle again).
fn idle(kind: Kind, idle_conns: usize) -> (u64, f64) {
    let server = Running::start(kind, "print", false);
    let base_fds = server.fds();
    let before = server.rss();
    let mut conns = Vec::with_capacity(idle_conns);
    for i in 0..idle_conns {
        let src = [127, 0, 1, 1 + (i % 200) as u8];
        conns.push(connect(server.tcp, Some(src)));
    }
    // Wait until the server holds every connection.
    let until = Instant::now() + WAIT;
    while server.fds() < base_fds + idle_conns {
        assert!(
            Instant::now() < until,
            "server took {} of {idle_conns}",
            server.fds() - base_fds
        );
        thread::sleep(Duration::from_millis(20));
    }
    server.expect_lines(idle_conns as u64);
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&message(i, 0)).unwrap();
    }
    server.wait_lines();
    let served = server.counter.lines.load(Ordering::SeqCst);
    let after = server.rss();
    drop(conns);
    (
        served,
        after.saturating_sub(before) as f64 / idle_conns as f64,
    )
}

/// What a UDP run came to.
struct UdpRun {
    delivered_per_sec: f64,
    loss: f64,
    sent_per_sec: f64,
}

/// Source ports each UDP sender spreads its datagrams over. Both servers give each
/// worker its own `SO_REUSEPORT` socket, and the kernel picks the socket by a hash
/// of the source address and port: with one port per sender, 4 flows split 2:2
/// only 3 times in 8 (4:0 once in 8), so a run measured which split it drew as
/// much as the server (one sockpool run: 435 k/s with one worker idle). With 32
/// flows both servers' workers get close to even shares in every run.
const UDP_FLOWS: usize = 8;

/// P3: UDP datagrams from four senders, unpaced (`rate` None) or paced in total.
fn udp(kind: Kind, rate: Option<u64>, secs: f64) -> UdpRun {
    // Both get the 4 MiB receive buffer anyone serving UDP at this rate would ask for
    // (the default, ~200 KiB, holds a few milliseconds of small datagrams).
    let server = Running::start_with(kind, "print", false, &["--recv-buffer", "4194304"]);
    let addr = server.udp.unwrap();
    let senders = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|t| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let sockets: Vec<UdpSocket> = (0..UDP_FLOWS)
                    .map(|_| {
                        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                        s.connect(addr).unwrap();
                        s
                    })
                    .collect();
                let mut sent = 0u64;
                let mut datagram = message(t, 0);
                set_sequence(&mut datagram, 1_234_567);
                assert_eq!(datagram, message(t, 1_234_567), "set_sequence");
                datagram.truncate(MSG - 1);
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rate) = rate {
                        let due =
                            (start.elapsed().as_secs_f64() * rate as f64 / senders as f64) as u64;
                        if sent >= due {
                            thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                    }
                    // The sequence number written in place: a sender that formats and
                    // allocates every datagram spends the cores the servers need.
                    set_sequence(&mut datagram, sent);
                    let s = &sockets[sent as usize % UDP_FLOWS];
                    if s.send(&datagram).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = t0.elapsed().as_secs_f64();
    // Let the server finish what it has queued: wait until the count stops moving.
    let mut last = u64::MAX;
    loop {
        let now = server.counter.lines.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
        thread::sleep(Duration::from_millis(300));
    }
    if rate.is_none() {
        let (user, sys) = server.cpu();
        let (waits, preempted) = server.switches();
        eprintln!(
            "    {}: server CPU {:.0} ns user + {:.0} ns sys per datagram delivered; {:.0} waits and {:.0} preemptions per thousand",
            kind.name(),
            user * 1e9 / last.max(1) as f64,
            sys * 1e9 / last.max(1) as f64,
            waits as f64 * 1e3 / last.max(1) as f64,
            preempted as f64 * 1e3 / last.max(1) as f64,
        );
    }
    UdpRun {
        delivered_per_sec: last as f64 / elapsed,
        loss: 1.0 - last as f64 / sent.max(1) as f64,
        sent_per_sec: sent as f64 / elapsed,
    }
}

/// P3c: whether `kind` carries `rate` datagrams/s with at most [`CAPACITY_LOSS`]:
/// the rate is probed [`PROBE_REPEATS`] times and passes on the median loss (one
/// unlucky probe on the shared machine does not decide it). Also returns the
/// losses, and whether the senders fell short of the rate (then no verdict on
/// the server can be drawn from it).
fn probe_rate(kind: Kind, rate: u64, secs: f64) -> (bool, Vec<f64>, bool) {
    let runs: Vec<UdpRun> = (0..PROBE_REPEATS)
        .map(|_| udp(kind, Some(rate), secs))
        .collect();
    let losses: Vec<f64> = runs.iter().map(|r| r.loss).collect();
    let short = median(runs.iter().map(|r| r.sent_per_sec).collect()) < 0.95 * rate as f64;
    let pass = median(losses.clone()) <= CAPACITY_LOSS;
    eprintln!(
        "    {} at {:.0} k/s: loss {}{}",
        kind.name(),
        rate as f64 / 1e3,
        losses
            .iter()
            .map(|l| format!("{:.4}%", 100.0 * l))
            .collect::<Vec<_>>()
            .join(", "),
        if short { " (senders fell short)" } else { "" }
    );
    (pass, losses, short)
}

/// P3c: the highest paced rate (datagrams/s, 64-byte datagrams, 4 senders) that
/// `kind` carries with loss ≤ 0.01%: doubling from `start` until a rate fails,
/// then bisecting until the bracket is within 10% (or `max_probes` rates were
/// tried). Returns the rate and a note: the losses at it and at the lowest
/// failing rate above it.
fn udp_capacity(kind: Kind, start: u64, secs: f64, max_probes: usize) -> (f64, String) {
    let mut pass: Option<(u64, Vec<f64>)> = None;
    let mut fail: Option<(u64, Vec<f64>)> = None;
    let mut rate = start;
    let mut probes = 0;
    let mut limited = false;
    while probes < max_probes {
        probes += 1;
        let (ok, losses, short) = probe_rate(kind, rate, secs);
        if ok && short {
            // The generator, not the server, is the limit: stop searching upward.
            limited = true;
            pass = Some((rate, losses));
            break;
        }
        if ok {
            pass = Some((rate, losses));
        } else {
            fail = Some((rate, losses));
        }
        rate = match (&pass, &fail) {
            (Some((lo, _)), None) => lo * 2,
            (None, Some((hi, _))) if *hi > 2_000 => hi / 2,
            (None, Some(_)) => break,
            (Some((lo, _)), Some((hi, _))) if (*hi as f64) / (*lo as f64) > 1.1 => {
                // The middle, rounded to a thousand.
                ((lo + hi) / 2).div_ceil(1000) * 1000
            }
            _ => break,
        };
    }
    let spread = |losses: &[f64]| {
        let lo = losses.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = losses.iter().copied().fold(0.0, f64::max);
        format!("{:.3}–{:.3}%", 100.0 * lo, 100.0 * hi)
    };
    let mut note = match &pass {
        Some((r, l)) => format!("{:.0}k ok ({})", *r as f64 / 1e3, spread(l)),
        None => "no rate passed".to_string(),
    };
    if let Some((r, l)) = &fail {
        note += &format!(", {:.0}k fails ({})", *r as f64 / 1e3, spread(l));
    }
    if limited {
        note += ", senders' limit";
    } else if fail.is_none() && pass.is_some() {
        note += ", none failed within the probes";
    }
    (pass.map_or(0.0, |(r, _)| r as f64), note)
}

/// P4: echo with one message in flight per connection. Closed loop (`rate` None)
/// returns messages per second; at a fixed total rate returns the p99 round trip in
/// µs, charged from each message's scheduled send time. Either way also the round
/// trips' distribution (closed loop: from each actual send).
fn echo(kind: Kind, rate: Option<u64>, secs: f64) -> (f64, Latency) {
    let server = Running::start(kind, "echo", false);
    let conns: Vec<TcpStream> = (0..TCP_CONNS).map(|_| connect(server.tcp, None)).collect();
    let barrier = Arc::new(Barrier::new(TCP_CONNS + 1));
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let b = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut hist = Latency::new();
                let msg = message(i, 0);
                let mut reply = [0u8; MSG];
                b.wait();
                let start = Instant::now();
                let end = start + Duration::from_secs_f64(secs);
                let mut done = 0u64;
                let interval = rate.map(|r| Duration::from_secs_f64(TCP_CONNS as f64 / r as f64));
                let mut next = start
                    + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / TCP_CONNS as f64));
                while Instant::now() < end {
                    if let Some(iv) = interval {
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        }
                        s.write_all(&msg).unwrap();
                        s.read_exact(&mut reply).unwrap();
                        hist.record(next.elapsed());
                        next += iv;
                    } else {
                        let sent = Instant::now();
                        s.write_all(&msg).unwrap();
                        s.read_exact(&mut reply).unwrap();
                        hist.record(sent.elapsed());
                    }
                    done += 1;
                }
                (done, hist, start, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    let mut total = 0;
    let mut hist = Latency::new();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    // Round trips per connection: how evenly the server served them.
    let mut served = Vec::with_capacity(TCP_CONNS);
    for t in threads {
        let (done, h, start, end) = t.join().unwrap();
        served.push(done);
        total += done;
        hist.add(&h);
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    let elapsed = last.unwrap().duration_since(first.unwrap()).as_secs_f64();
    if rate.is_none() {
        served.sort_unstable();
        let at = |q: f64| served[((served.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "    {}: round trips per connection: min {}, p10 {}, median {}, p90 {}, max {} (max/min {:.2})",
            kind.name(),
            at(0.0),
            at(0.1),
            at(0.5),
            at(0.9),
            at(1.0),
            at(1.0) as f64 / at(0.0).max(1) as f64
        );
        let (user, sys) = server.cpu();
        let (waits, preempted) = server.switches();
        let per_k = |n: u64| n as f64 * 1e3 / total as f64;
        eprintln!(
            "    {}: server CPU {:.2} µs user + {:.2} µs sys per round trip; {:.0} waits and {:.0} preemptions per thousand",
            kind.name(),
            user * 1e6 / total as f64,
            sys * 1e6 / total as f64,
            per_k(waits),
            per_k(preempted)
        );
    }
    let figure = match rate {
        None => total as f64 / elapsed,
        Some(_) => hist.percentiles().map_or(0.0, |p| p.p99 as f64),
    };
    (figure, hist)
}

/// Writes `latency` as a `.hgrm` file.
fn write_hgrm(path: &std::path::Path, latency: &Latency) {
    let mut out = Vec::new();
    latency.write_hgrm(&mut out).unwrap();
    std::fs::write(path, out).unwrap();
}

/// P4 at a fixed offered rate, driven by `sockpool-client bench` (paced on its own
/// event loops, so the generator's wake-ups do not swamp the servers'): the p99
/// round trip in µs, charged from each message's scheduled send time; the whole
/// distribution goes to `hgrm`.
fn paced_echo_p99(kind: Kind, rate: u64, secs: f64, hgrm: &std::path::Path) -> f64 {
    let server = Running::start(kind, "echo", false);
    let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/sockpool-client");
    let out = Command::new(bench)
        .args([
            "bench",
            "-s",
            &server.tcp.to_string(),
            "--connections",
            &TCP_CONNS.to_string(),
        ])
        .args([
            "--rate",
            &rate.to_string(),
            "--duration",
            &secs.to_string(),
            "--warmup",
            if quick() { "0.2" } else { "1" },
        ])
        .args(["--echo", "--json", "--hgrm"])
        .arg(hgrm)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last).unwrap();
    report["latency"]["p99"].as_f64().unwrap()
}

/// A loopback source address no earlier churn connection used: the client closes
/// first, so each of its ports sits in TIME_WAIT for a minute, and reusing a few
/// addresses would exhaust them across runs.
fn fresh_source() -> [u8; 4] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    [
        127,
        3 + (n / 62_500 % 250) as u8,
        (n / 250 % 250) as u8,
        (n % 250 + 1) as u8,
    ]
}

/// P5 / T2: waits for the churning client threads (each returns how many
/// connections it made), prints the server's CPU per connection and returns
/// connections per second.
fn connections_per_second(
    kind: Kind,
    server: &Running,
    threads: Vec<thread::JoinHandle<u64>>,
) -> f64 {
    let t0 = Instant::now();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let (user, sys) = server.cpu();
    eprintln!(
        "    {}: server CPU {:.1} µs/conn user + {:.1} µs/conn sys",
        kind.name(),
        user * 1e6 / n as f64,
        sys * 1e6 / n as f64,
    );
    rate
}

/// P5: connect, send one message, half-close, wait for EOF; connections per second.
fn churn(kind: Kind, secs: f64) -> f64 {
    let server = Running::start(kind, "discard", false);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.tcp;
            thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                let mut rest = [0u8; 16];
                while Instant::now() < end {
                    let mut s = connect(addr, Some(fresh_source()));
                    s.write_all(b"hello\n").unwrap();
                    s.shutdown(Shutdown::Write).unwrap();
                    while s.read(&mut rest).map(|n| n > 0).unwrap_or(false) {}
                    n += 1;
                }
                n
            })
        })
        .collect();
    connections_per_second(kind, &server, threads)
}

/// The TLS rows' certificates, made at run time (rcgen): a CA, and a certificate
/// for `localhost`/127.0.0.1 signed by it, which both servers present.
struct Pki {
    cert: PathBuf,
    key: PathBuf,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = matrix_dir().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "matrix CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
        let (cert, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            cert,
            key: key_path,
            client: Arc::new(client),
        }
    })
}

/// A server of `kind` serving TLS with the matrix's certificate.
fn start_tls(kind: Kind, mode: &str) -> Running {
    let pki = pki();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    Running::start_with(kind, mode, false, &["--tls-cert", cert, "--tls-key", key])
}

type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the handshake (the server's certificate verified).
fn tls_connect(addr: SocketAddr, source: Option<[u8; 4]>) -> TlsClient {
    let mut tcp = connect(addr, source);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(&pki().client), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// close_notify, half-close, then waits for the server to close (with or without
/// its own close_notify).
fn tls_finish(s: &mut TlsClient) {
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(Shutdown::Write).unwrap();
    let mut rest = [0u8; 64];
    while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
}

/// T1 / T1p: each connection writes its payload `repeat` times over TLS, then
/// closes as [`tls_finish`] does. Messages per second, timed to the last line
/// counted (`print`) or the last close (`discard`).
fn tls_ingest(kind: Kind, mode: &str, data: &[Arc<Vec<u8>>], repeat: usize) -> f64 {
    let server = start_tls(kind, mode);
    let senders_before = process_cpu(std::process::id());
    let total = (data.len() * data[0].len() / MSG * repeat) as u64;
    server.expect_lines(total);
    let conns: Vec<TlsClient> = (0..data.len())
        .map(|_| tls_connect(server.tcp, None))
        .collect();
    let barrier = Arc::new(Barrier::new(conns.len() + 1));
    let threads: Vec<_> = conns
        .into_iter()
        .zip(data)
        .map(|(mut s, payload)| {
            let (b, payload) = (Arc::clone(&barrier), Arc::clone(payload));
            thread::spawn(move || {
                b.wait();
                let start = Instant::now();
                for _ in 0..repeat {
                    s.write_all(&payload).unwrap();
                }
                tls_finish(&mut s);
                (start, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    let times: Vec<(Instant, Instant)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let t0 = times.iter().map(|t| t.0).min().unwrap();
    let end = if mode == "print" {
        server.wait_lines()
    } else {
        times.iter().map(|t| t.1).max().unwrap()
    };
    let (user, sys) = server.cpu();
    let senders = process_cpu(std::process::id());
    eprintln!(
        "    {}: server CPU {:.0} ns/msg user + {:.0} ns/msg sys; senders {:.0} + {:.0} ns/msg",
        kind.name(),
        user * 1e9 / total as f64,
        sys * 1e9 / total as f64,
        (senders.0 - senders_before.0) * 1e9 / total as f64,
        (senders.1 - senders_before.1) * 1e9 / total as f64,
    );
    total as f64 / end.duration_since(t0).as_secs_f64()
}

/// T2: as P5 over TLS: connect, full handshake (no resumption: a fresh client
/// session each time, and neither server issues tickets), one message,
/// close_notify, half-close, wait for the server to close. Handshakes per second.
fn tls_churn(kind: Kind, secs: f64) -> f64 {
    let server = start_tls(kind, "discard");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.tcp;
            thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                while Instant::now() < end {
                    let mut s = tls_connect(addr, Some(fresh_source()));
                    s.write_all(b"hello\n").unwrap();
                    tls_finish(&mut s);
                    n += 1;
                }
                n
            })
        })
        .collect();
    connections_per_second(kind, &server, threads)
}

/// T3: as P2 over TLS: `n` connections, each through its handshake, then one
/// message on each. Returns (served, RSS bytes per connection once idle again).
fn tls_idle(kind: Kind, n: usize) -> (u64, f64) {
    let server = start_tls(kind, "print");
    let base_fds = server.fds();
    let before = server.rss();
    let mut conns: Vec<TlsClient> = (0..n)
        .map(|i| tls_connect(server.tcp, Some([127, 0, 2, 1 + (i % 200) as u8])))
        .collect();
    let until = Instant::now() + WAIT;
    while server.fds() < base_fds + n {
        assert!(
            Instant::now() < until,
            "server took {} of {n}",
            server.fds() - base_fds
        );
        thread::sleep(Duration::from_millis(20));
    }
    server.expect_lines(n as u64);
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&message(i, 0)).unwrap();
        c.flush().unwrap();
    }
    server.wait_lines();
    let served = server.counter.lines.load(Ordering::SeqCst);
    let after = server.rss();
    drop(conns);
    (served, after.saturating_sub(before) as f64 / n as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let _ = sockpool::net::fdlimit::raise_nofile();
    let runs: usize = std::env::var("MATRIX_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |id: &str| filter.is_empty() || filter.iter().any(|f| f == id);
    let mut rows: Vec<String> = Vec::new();
    // Each run's sockpool and tokio figures, set by `alternate` for `row`.
    let pairs: RefCell<Vec<(f64, f64)>> = RefCell::new(Vec::new());
    let ratio = |s: f64, t: f64, higher_is_better: bool| {
        if s == t {
            1.0
        } else if higher_is_better {
            s / t
        } else {
            t / s
        }
    };
    let mut row = |id: &str,
                   what: &str,
                   notes: &str,
                   s: f64,
                   t: f64,
                   extra: String,
                   higher_is_better: bool| {
        let of_medians = ratio(s, t, higher_is_better);
        // The two runs of a pair ran next to each other, so their ratio does not
        // move with the machine's speed over the whole matrix, as the ratio of the
        // medians can: both are printed.
        let paired = median(
            pairs
                .borrow()
                .iter()
                .map(|&(s, t)| ratio(s, t, higher_is_better))
                .collect(),
        );
        let line = format!(
            "| {id} | {what} | {s:.0} | {t:.0} | {extra} | {of_medians:.2}× (pairs: {paired:.2}×) | {notes} |"
        );
        eprintln!("{line}");
        rows.push(line);
    };
    // Alternates the contenders, `runs` times each, and returns each one's median.
    let alternate = |kinds: &[Kind], f: &dyn Fn(Kind) -> f64| -> Vec<f64> {
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        for _ in 0..runs {
            for (i, k) in kinds.iter().enumerate() {
                let v = f(*k);
                eprintln!("  {:<12} {v:.1}", k.name());
                results[i].push(v);
            }
        }
        *pairs.borrow_mut() = results[0]
            .iter()
            .copied()
            .zip(results[1].iter().copied())
            .collect();
        results.into_iter().map(median).collect()
    };
    let both = [Kind::Sockpool, Kind::Tokio];
    let all = [Kind::Sockpool, Kind::Tokio, Kind::Raw];
    let with_ceilings = [Kind::Sockpool, Kind::Tokio, Kind::Raw, Kind::PrintCeiling];
    let per_conn = size(P1_PER_CONN, 1_000);
    let (p1_repeat, p1d_repeat) = (size(P1_REPEAT, 1), size(P1D_REPEAT, 2));

    if wanted("P1") || wanted("P1c") || wanted("P1d") {
        let data = payloads(per_conn);
        if wanted("P1") || wanted("P1c") {
            eprintln!(
                "P1: TCP ingest, print, {TCP_CONNS} connections × {} × 64 B",
                per_conn * p1_repeat
            );
            let ok: Vec<String> = both
                .iter()
                .map(|k| {
                    format!(
                        "{}: {}",
                        k.name(),
                        if verify_print(*k) {
                            "intact, in order"
                        } else {
                            "FAILED"
                        }
                    )
                })
                .collect();
            eprintln!("  verify: {}", ok.join("; "));
            let m = alternate(&with_ceilings, &|k| {
                ingest(k, "print", &data, p1_repeat, k != Kind::Raw)
            });
            row(
                "P1",
                "TCP ingest, print (msgs/s)",
                &format!(
                    "raw ceiling {:.0}; sockpool {:.0}% of it; {}",
                    m[2],
                    100.0 * m[0] / m[2],
                    ok.join(", ")
                ),
                m[0],
                m[1],
                format!("{:.0}", m[2]),
                true,
            );
            row(
                "P1c",
                "TCP ingest, print, against the print ceiling (msgs/s; the ceiling in the raw column)",
                &format!(
                    "print ceiling {:.0} (cuts lines, writes sockpool's bytes per message into the same pipe, no formatting); sockpool {:.0}% of it, tokio {:.0}%",
                    m[3],
                    100.0 * m[0] / m[3],
                    100.0 * m[1] / m[3]
                ),
                m[0],
                m[1],
                format!("{:.0}", m[3]),
                true,
            );
        }
        if wanted("P1d") {
            eprintln!(
                "P1d: TCP ingest, discard, {TCP_CONNS} connections × {} × 64 B",
                per_conn * p1d_repeat
            );
            let m = alternate(&all, &|k| ingest(k, "discard", &data, p1d_repeat, false));
            row(
                "P1d",
                "TCP ingest, discard (msgs/s)",
                &format!("sockpool {:.0}% of the raw ceiling", 100.0 * m[0] / m[2]),
                m[0],
                m[1],
                format!("{:.0}", m[2]),
                true,
            );
        }
    }
    if wanted("P2") {
        let idle_conns = size(IDLE_CONNS, 500);
        eprintln!("P2: {idle_conns} idle connections, then a message on each");
        let served = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let (n, per) = idle(k, idle_conns);
            served.lock().unwrap().push(format!("{} {n}", k.name()));
            per
        });
        row(
            "P2",
            "RSS per idle connection (bytes)",
            &format!("served: {}", served.lock().unwrap().join(", ")),
            m[0],
            m[1],
            String::new(),
            false,
        );
    }
    if wanted("P3") {
        eprintln!("P3: UDP ingest, 4 unpaced senders, {} s", secs(3.0));
        let loss = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let r = udp(k, None, secs(3.0));
            loss.lock()
                .unwrap()
                .push(format!("{} {:.1}%", k.name(), 100.0 * r.loss));
            r.delivered_per_sec
        });
        row(
            "P3",
            "UDP delivered, unpaced (datagrams/s)",
            &format!("loss: {}", loss.lock().unwrap().join(", ")),
            m[0],
            m[1],
            String::new(),
            true,
        );
        eprintln!("P3 paced: 100,000 datagrams/s in total, {} s", secs(3.0));
        let m = alternate(&both, &|k| 100.0 * udp(k, Some(100_000), secs(3.0)).loss);
        row(
            "P3p",
            "UDP paced 100k/s: loss (%)",
            "lower is better",
            m[0],
            m[1],
            String::new(),
            false,
        );
    }
    if wanted("P3c") {
        // A full search: ~6–10 rates × 3 probes × (2 s + ~1 s to settle) per server
        // and run.
        let (probe_secs, start, max_probes) = if quick() {
            (0.3, 50_000, 2)
        } else {
            (2.0, 25_000, 12)
        };
        eprintln!(
            "P3c: UDP capacity, highest paced rate with loss ≤ {}% (4 senders, 64 B, probes of {probe_secs} s, each rate {PROBE_REPEATS} times)",
            100.0 * CAPACITY_LOSS
        );
        let found = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let (rate, note) = udp_capacity(k, start, probe_secs, max_probes);
            found.lock().unwrap().push((k, rate, note));
            rate
        });
        let found = found.into_inner().unwrap();
        let spread = |kind: Kind| {
            let rates: Vec<f64> = found.iter().filter(|f| f.0 == kind).map(|f| f.1).collect();
            let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rates.iter().copied().fold(0.0, f64::max);
            let notes: Vec<&str> = found
                .iter()
                .filter(|f| f.0 == kind)
                .map(|f| f.2.as_str())
                .collect();
            format!(
                "{} {:.0}k–{:.0}k over the runs [{}]",
                kind.name(),
                lo / 1e3,
                hi / 1e3,
                notes.join("; ")
            )
        };
        row(
            "P3c",
            "UDP capacity: highest paced rate with loss ≤ 0.01% (datagrams/s)",
            &format!("{}; {}", spread(Kind::Sockpool), spread(Kind::Tokio)),
            m[0],
            m[1],
            String::new(),
            true,
        );
    }
    if wanted("P4") {
        let echo_secs = secs(3.0);
        let dir = matrix_dir();
        // Each run's distribution, by (scenario, server): the file of the median run
        // is what gets plotted.
        let runs_of: Mutex<Vec<(String, Kind, f64, PathBuf)>> = Mutex::new(Vec::new());
        let file_no = AtomicU64::new(0);
        let keep = |scenario: &str, kind: Kind, p99: f64, latency: Option<&Latency>| {
            let n = file_no.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{scenario}-{}-{n}.hgrm", kind.name()));
            if let Some(latency) = latency {
                write_hgrm(&path, latency);
            }
            runs_of
                .lock()
                .unwrap()
                .push((scenario.to_string(), kind, p99, path.clone()));
            path
        };
        eprintln!("P4: echo, {TCP_CONNS} connections, one in flight, {echo_secs} s");
        let p99s = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let (rate, latency) = echo(k, None, echo_secs);
            let p99 = latency.percentiles().map_or(0.0, |p| p.p99 as f64);
            keep("P4", k, p99, Some(&latency));
            p99s.lock().unwrap().push((k, p99));
            rate
        });
        let tokio_max = m[1];
        row(
            "P4",
            "echo, closed loop (msgs/s)",
            "",
            m[0],
            m[1],
            String::new(),
            true,
        );
        // The p99s of the same runs, paired in the same order.
        let p99s = p99s.into_inner().unwrap();
        let of =
            |kind: Kind| -> Vec<f64> { p99s.iter().filter(|p| p.0 == kind).map(|p| p.1).collect() };
        *pairs.borrow_mut() = of(Kind::Sockpool)
            .into_iter()
            .zip(of(Kind::Tokio))
            .collect();
        row(
            "P4t",
            "echo, closed loop: p99 round trip at saturation (µs)",
            "from each actual send (thread per connection client)",
            median(of(Kind::Sockpool)),
            median(of(Kind::Tokio)),
            String::new(),
            false,
        );
        for percent in [50u64, 80] {
            let rate = (tokio_max * percent as f64 / 100.0).round().max(100.0) as u64;
            let id = format!("P4r{percent}");
            eprintln!(
                "{id}: echo at {rate} msgs/s ({percent}% of tokio's closed-loop max): p99 (µs)"
            );
            let m = alternate(&both, &|k| {
                let path = keep(&id, k, 0.0, None);
                let p99 = paced_echo_p99(k, rate, echo_secs, &path);
                if let Some(last) = runs_of.lock().unwrap().last_mut() {
                    last.2 = p99;
                }
                p99
            });
            row(
                &id,
                &format!("echo at {percent}% of tokio's max ({rate}/s): p99 round trip (µs)"),
                "sockpool-client bench --rate --echo, from scheduled send time",
                m[0],
                m[1],
                String::new(),
                false,
            );
        }
        // The median run of each (scenario, server), copied to SCENARIO-SERVER.hgrm,
        // and plotted side by side.
        let runs_of = runs_of.into_inner().unwrap();
        let mut series = Vec::new();
        for scenario in ["P4", "P4r50", "P4r80"] {
            for kind in both {
                let mut mine: Vec<&(String, Kind, f64, PathBuf)> = runs_of
                    .iter()
                    .filter(|r| r.0 == scenario && r.1 == kind)
                    .collect();
                mine.sort_by(|a, b| a.2.total_cmp(&b.2));
                let Some(mid) = mine.get(mine.len() / 2) else {
                    continue;
                };
                let path = dir.join(format!("{scenario}-{}.hgrm", kind.name()));
                if std::fs::copy(&mid.3, &path).is_ok() {
                    series.push(format!("{scenario} {}={}", kind.name(), path.display()));
                }
            }
        }
        let svg = dir.join("P4.svg");
        let plotted = Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/hgrm_plot.py"))
            .args(&series)
            .args([
                "--log-y",
                "--title",
                "P4 echo: latency by percentile (median runs)",
                "-o",
            ])
            .arg(&svg)
            .status()
            .is_ok_and(|s| s.success());
        eprintln!(
            "P4 distributions: {}/P4*.hgrm{}",
            dir.display(),
            if plotted {
                format!(", plotted in {}", svg.display())
            } else {
                " (python3 not found: no plot)".to_string()
            }
        );
    }
    if wanted("P5") {
        eprintln!("P5: connection churn, 4 clients, {} s", secs(3.0));
        let m = alternate(&both, &|k| churn(k, secs(3.0)));
        row(
            "P5",
            "connection churn (conns/s)",
            "",
            m[0],
            m[1],
            String::new(),
            true,
        );
    }
    if wanted("P6") {
        match NatsServer::start() {
            None => eprintln!("P6: skipped: nats-server not installed"),
            Some(nats) => {
                let contenders = [Kind::Sockpool, Kind::Publisher];
                for workers in ["2", "1"] {
                    eprintln!(
                        "P6: into JetStream, acknowledged, {NATS_CONNS} connections × {} × 64 B, sockpool -w {workers}, against nats_publisher",
                        NATS_MESSAGES / NATS_CONNS
                    );
                    let m = alternate(&contenders, &|k| nats_ingest(k, &nats, workers));
                    row(
                        &format!("P6w{workers}"),
                        &format!("NATS JetStream, acked (msgs/s), sockpool -w {workers}"),
                        &format!(
                            "the tokio column is examples/nats_publisher (same messages and headers, {} in flight): sockpool {:.0}% of it",
                            sockpool::output::nats::MAX_IN_FLIGHT,
                            100.0 * m[0] / m[1]
                        ),
                        m[0],
                        m[1],
                        String::new(),
                        true,
                    );
                }
            }
        }
    }
    if wanted("T1") || wanted("T1p") {
        let conns = 10;
        let per_conn = size(TLS_PER_CONN, 2_000);
        let data: Vec<Arc<Vec<u8>>> = (0..conns)
            .map(|c| Arc::new((0..per_conn).flat_map(|s| message(c, s)).collect()))
            .collect();
        for (id, mode, repeat) in [
            ("T1", "discard", size(TLS_REPEAT, 1)),
            ("T1p", "print", size(TLS_PRINT_REPEAT, 1)),
        ] {
            if !wanted(id) {
                continue;
            }
            eprintln!(
                "{id}: TLS ingest, {mode}, {conns} connections × {} × 64 B",
                per_conn * repeat
            );
            let m = alternate(&both, &|k| tls_ingest(k, mode, &data, repeat));
            row(
                id,
                &format!("TLS ingest, {mode} (msgs/s)"),
                &format!("{conns} connections × {} lines", per_conn * repeat),
                m[0],
                m[1],
                String::new(),
                true,
            );
        }
    }
    if wanted("T2") {
        eprintln!("T2: TLS handshakes (churn), 4 clients, {} s", secs(3.0));
        let m = alternate(&both, &|k| tls_churn(k, secs(3.0)));
        row(
            "T2",
            "TLS churn: full handshakes per second",
            "ECDSA P-256 certificate, TLS 1.3, no resumption",
            m[0],
            m[1],
            String::new(),
            true,
        );
    }
    if wanted("T3") {
        let n = size(TLS_IDLE_CONNS, 200);
        eprintln!("T3: {n} idle TLS connections, then a message on each");
        let served = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let (got, per) = tls_idle(k, n);
            served.lock().unwrap().push(format!("{} {got}", k.name()));
            per
        });
        row(
            "T3",
            "RSS per idle TLS connection (bytes)",
            &format!("served: {}", served.lock().unwrap().join(", ")),
            m[0],
            m[1],
            String::new(),
            false,
        );
    }
    println!(
        "| # | scenario | sockpool | tokio | raw ceiling | sockpool vs tokio: ratio of medians (median of per-pair ratios) | notes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
