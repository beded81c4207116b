//! The benchmark matrix of BENCHMARKS.md: sockpool beside a tokio baseline (and, for
//! TCP ingest, a raw reader that only counts newlines), each scenario run several
//! times with the contenders alternating, reporting medians and ratios.
//!
//! `cargo build --release --bins --examples && cargo bench --bench matrix [-- P1 P4 …]`
//! Environment: `MATRIX_RUNS` (default 3); `MATRIX_SOCKPOOL=PATH` runs another build
//! of the server in sockpool's place (an A/B of a change against the same baselines).
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

use hdrhistogram::Histogram;
use socket2::{Domain, Socket, Type};

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sockpool,
    Tokio,
    Raw,
    /// P6's baseline: `examples/nats_publisher`, not a server.
    Publisher,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sockpool => "sockpool",
            Kind::Tokio => "tokio",
            Kind::Raw => "raw ceiling",
            Kind::Publisher => "nats publisher",
        }
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
            Kind::Tokio => (
                release.join("examples/tokio_baseline"),
                vec!["-l", "127.0.0.1:0", "-w", "2", "--mode", mode],
            ),
            Kind::Raw => (
                release.join("examples/raw_ceiling"),
                vec!["-l", "127.0.0.1:0", "-w", "2"],
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
        while tcp.is_none() || (udp.is_none() && kind != Kind::Raw) {
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
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

/// P1 / P1d: every connection writes its payload `repeat` times, half-closes and
/// waits for EOF.
/// Returns messages per second, timed to the last line counted (`print`) or to the
/// last EOF (`discard`, raw ceiling).
fn ingest(kind: Kind, mode: &str, data: &[Arc<Vec<u8>>], repeat: usize, by_lines: bool) -> f64 {
    let server = Running::start(kind, mode, false);
    let tcp_before = tcp_counters();
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
    let (waits, preempted) = server.switches();
    let tcp_after = tcp_counters();
    let grew = |name: &str| {
        let count = |c: &HashMap<String, u64>| c.get(name).copied().unwrap_or(0);
        count(&tcp_after).saturating_sub(count(&tcp_before))
    };
    eprintln!(
        "    {}: server CPU {:.0} ns/msg user + {:.0} ns/msg sys; {:.0} waits and {:.0} preemptions per million msgs; {} segments retransmitted, {} loss probes",
        kind.name(),
        user * 1e9 / total as f64,
        sys * 1e9 / total as f64,
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
fn idle(kind: Kind) -> (u64, f64) {
    let server = Running::start(kind, "print", false);
    let base_fds = server.fds();
    let before = server.rss();
    let mut conns = Vec::with_capacity(IDLE_CONNS);
    for i in 0..IDLE_CONNS {
        let src = [127, 0, 1, 1 + (i % 200) as u8];
        conns.push(connect(server.tcp, Some(src)));
    }
    // Wait until the server holds every connection.
    let until = Instant::now() + WAIT;
    while server.fds() < base_fds + IDLE_CONNS {
        assert!(
            Instant::now() < until,
            "server took {} of {IDLE_CONNS}",
            server.fds() - base_fds
        );
        thread::sleep(Duration::from_millis(20));
    }
    server.expect_lines(IDLE_CONNS as u64);
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&message(i, 0)).unwrap();
    }
    server.wait_lines();
    let served = server.counter.lines.load(Ordering::SeqCst);
    let after = server.rss();
    drop(conns);
    (
        served,
        after.saturating_sub(before) as f64 / IDLE_CONNS as f64,
    )
}

/// P3: UDP datagrams from four senders, unpaced (`rate` None) or paced in total.
/// Returns (delivered per second, loss fraction).
fn udp(kind: Kind, rate: Option<u64>, secs: f64) -> (f64, f64) {
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
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(addr).unwrap();
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
    (last as f64 / elapsed, 1.0 - last as f64 / sent as f64)
}

/// P4: echo with one message in flight per connection. Closed loop (`rate` None)
/// returns messages per second; at a fixed total rate returns the p99 round trip in
/// µs, charged from each message's scheduled send time.
fn echo(kind: Kind, rate: Option<u64>, secs: f64) -> f64 {
    let server = Running::start(kind, "echo", false);
    let conns: Vec<TcpStream> = (0..TCP_CONNS).map(|_| connect(server.tcp, None)).collect();
    let barrier = Arc::new(Barrier::new(TCP_CONNS + 1));
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let b = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut hist = Histogram::<u64>::new(3).unwrap();
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
                        let _ = hist.record(next.elapsed().as_micros() as u64);
                        next += iv;
                    } else {
                        s.write_all(&msg).unwrap();
                        s.read_exact(&mut reply).unwrap();
                    }
                    done += 1;
                }
                (done, hist, start, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for t in threads {
        let (done, h, start, end) = t.join().unwrap();
        total += done;
        hist.add(h).unwrap();
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    let elapsed = last.unwrap().duration_since(first.unwrap()).as_secs_f64();
    if rate.is_none() {
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
    match rate {
        None => total as f64 / elapsed,
        Some(_) => hist.value_at_quantile(0.99) as f64,
    }
}

/// P4 at a fixed offered rate, driven by `sockpool-client bench` (paced on its own
/// event loops, so the generator's wake-ups do not swamp the servers'): the p99
/// round trip in µs, charged from each message's scheduled send time.
fn paced_echo_p99(kind: Kind, rate: u64, secs: f64) -> f64 {
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
            "1",
        ])
        .args(["--echo", "--json"])
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
    let t0 = Instant::now();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    n as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: one rlimit struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn main() {
    raise_fd_limit();
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

    if wanted("P1") || wanted("P1d") {
        let data = payloads(P1_PER_CONN);
        if wanted("P1") {
            eprintln!(
                "P1: TCP ingest, print, {TCP_CONNS} connections × {} × 64 B",
                P1_PER_CONN * P1_REPEAT
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
            let m = alternate(&all, &|k| {
                ingest(k, "print", &data, P1_REPEAT, k != Kind::Raw)
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
        }
        if wanted("P1d") {
            eprintln!(
                "P1d: TCP ingest, discard, {TCP_CONNS} connections × {} × 64 B",
                P1_PER_CONN * P1D_REPEAT
            );
            let m = alternate(&all, &|k| ingest(k, "discard", &data, P1D_REPEAT, false));
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
        eprintln!("P2: {IDLE_CONNS} idle connections, then a message on each");
        let served = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let (n, per) = idle(k);
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
        eprintln!("P3: UDP ingest, 4 unpaced senders, 3 s");
        let loss = Mutex::new(Vec::new());
        let m = alternate(&both, &|k| {
            let (rate, l) = udp(k, None, 3.0);
            loss.lock()
                .unwrap()
                .push(format!("{} {:.1}%", k.name(), 100.0 * l));
            rate
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
        eprintln!("P3 paced: 100,000 datagrams/s in total, 3 s");
        let m = alternate(&both, &|k| 100.0 * udp(k, Some(100_000), 3.0).1);
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
    if wanted("P4") {
        eprintln!("P4: echo, {TCP_CONNS} connections, one in flight, 3 s");
        let m = alternate(&both, &|k| echo(k, None, 3.0));
        row(
            "P4",
            "echo, closed loop (msgs/s)",
            "",
            m[0],
            m[1],
            String::new(),
            true,
        );
        let rate = 5_000;
        eprintln!("P4 at {rate} msgs/s: p99 round trip (µs)");
        let m = alternate(&both, &|k| paced_echo_p99(k, rate, 3.0));
        row(
            "P4r",
            &format!("echo at {rate}/s: p99 round trip (µs)"),
            "sockpool-client bench --rate --echo, from scheduled send time",
            m[0],
            m[1],
            String::new(),
            false,
        );
    }
    if wanted("P5") {
        eprintln!("P5: connection churn, 4 clients, 3 s");
        let m = alternate(&both, &|k| churn(k, 3.0));
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
    println!(
        "| # | scenario | sockpool | tokio | raw ceiling | sockpool vs tokio: ratio of medians (median of per-pair ratios) | notes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
