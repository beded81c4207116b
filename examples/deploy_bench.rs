//! The deployment measurements of docs/deploy.md, A against B in alternating runs:
//!
//! - `churn`: connection churn (connect, one line, half-close, wait for EOF; 4
//!   client threads, discard mode, `-w 2`), without and with `--proxy-protocol`
//!   (the client then sends a v1 header first, as HAProxy's `send-proxy` would).
//! - `reuse`: one process with `-w 2` against two processes with `-w 1` and
//!   `--reuse-port` on one address: streaming ingest (`sockpool-client bench`, 16
//!   connections, 64-byte messages, discard) and churn.
//!
//! Runs the release binaries: `cargo build --release`, then
//! `cargo run --release --example deploy_bench -- churn|reuse [RUNS] [SECS]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

fn release(bin: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/release")
        .join(bin)
}

/// A running server; killed on drop.
struct Running {
    child: Child,
    tcp: SocketAddr,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(release("sockpool-server"))
            .args(["-q", "--mode", "discard", "--tcp-only"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run target/release/sockpool-server (cargo build --release)");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let tcp = loop {
            let line = lines.next().expect("a listening line").expect("stderr");
            if let Some(addr) = line.strip_prefix("listening tcp ") {
                break addr.parse().expect("an address");
            }
        };
        // Keep reading stderr so the server never blocks on it.
        thread::spawn(move || for _ in lines {});
        Running { child, tcp }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback source no earlier connection used (TIME_WAIT would run out of ports).
fn fresh_source() -> [u8; 4] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 7919;
    [
        127,
        3 + (n / 62_500 % 250) as u8,
        (n / 250 % 250) as u8,
        (n % 250 + 1) as u8,
    ]
}

/// Connections per second over `secs`, 4 client threads.
fn churn(addr: SocketAddr, proxy: bool, secs: f64) -> f64 {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                let mut rest = [0u8; 16];
                while Instant::now() < end {
                    let ip = fresh_source();
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    let _ = socket.set_reuse_address(true);
                    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
                    socket.connect(&addr.into()).unwrap();
                    let mut s: TcpStream = socket.into();
                    let mut out = Vec::with_capacity(64);
                    if proxy {
                        let local = s.local_addr().unwrap();
                        write!(
                            out,
                            "PROXY TCP4 {} {} {} {}\r\n",
                            local.ip(),
                            addr.ip(),
                            local.port(),
                            addr.port()
                        )
                        .unwrap();
                    }
                    out.extend_from_slice(b"hello\n");
                    s.write_all(&out).unwrap();
                    s.shutdown(Shutdown::Write).unwrap();
                    while s.read(&mut rest).map(|n| n > 0).unwrap_or(false) {}
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Messages per second that `sockpool-client bench` got in over `secs`.
fn ingest(addr: SocketAddr, secs: f64) -> f64 {
    let out = Command::new(release("sockpool-client"))
        .args(["bench", "-s", &addr.to_string(), "--connections", "16"])
        .args([
            "--size",
            "64",
            "--duration",
            &secs.to_string(),
            "--warmup",
            "1",
        ])
        .arg("--json")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run target/release/sockpool-client");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last).expect("a JSON report");
    report["msgs_per_sec"].as_f64().unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(what: &str, a: &str, b: &str, runs: &[(f64, f64)]) {
    let (xs, ys): (Vec<f64>, Vec<f64>) = runs.iter().copied().unzip();
    let ratios: Vec<f64> = runs.iter().map(|(x, y)| y / x).collect();
    println!(
        "{what}: {a} median {:.0}, {b} median {:.0}; B/A per pair {:?}, median {:.3}",
        median(xs.clone()),
        median(ys.clone()),
        ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>(),
        median(ratios.clone())
    );
    println!("  {a} runs: {xs:.0?}");
    println!("  {b} runs: {ys:.0?}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("churn", String::as_str);
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    match which {
        "churn" => {
            let mut pairs = Vec::new();
            for _ in 0..runs {
                let plain = Running::start(&["-l", "127.0.0.1:0", "-w", "2"]);
                let a = churn(plain.tcp, false, secs);
                drop(plain);
                let proxied = Running::start(&["-l", "127.0.0.1:0", "-w", "2", "--proxy-protocol"]);
                let b = churn(proxied.tcp, true, secs);
                drop(proxied);
                eprintln!("churn conns/s: plain {a:.0}, --proxy-protocol {b:.0}");
                pairs.push((a, b));
            }
            report(
                "churn (conns/s)",
                "plain (A)",
                "--proxy-protocol (B)",
                &pairs,
            );
        }
        "reuse" => {
            let mut ingest_pairs = Vec::new();
            let mut churn_pairs = Vec::new();
            for _ in 0..runs {
                let one = Running::start(&["-l", "127.0.0.1:0", "-w", "2"]);
                let a = ingest(one.tcp, secs);
                let ca = churn(one.tcp, false, secs);
                drop(one);
                let first = Running::start(&["-l", "127.0.0.1:0", "-w", "1", "--reuse-port"]);
                let at = first.tcp.to_string();
                let second = Running::start(&["-l", &at, "-w", "1", "--reuse-port"]);
                let b = ingest(first.tcp, secs);
                let cb = churn(first.tcp, false, secs);
                drop((first, second));
                eprintln!(
                    "ingest msgs/s: one -w 2 {a:.0}, two -w 1 {b:.0}; churn conns/s: {ca:.0}, {cb:.0}"
                );
                ingest_pairs.push((a, b));
                churn_pairs.push((ca, cb));
            }
            report(
                "ingest (msgs/s)",
                "one process -w 2 (A)",
                "two --reuse-port -w 1 (B)",
                &ingest_pairs,
            );
            report(
                "churn (conns/s)",
                "one process -w 2 (A)",
                "two --reuse-port -w 1 (B)",
                &churn_pairs,
            );
        }
        other => {
            eprintln!("usage: deploy_bench churn|reuse [RUNS] [SECS]; got {other}");
            std::process::exit(2);
        }
    }
}
