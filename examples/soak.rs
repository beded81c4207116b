//! Soak: the release server against good clients and abusive ones at once, bounded
//! in time (about a minute) and in counts. Run with
//! `cargo run --release --example soak`.
//!
//! Good clients (from 127.0.0.1) each send a fixed number of numbered messages over
//! one connection; meanwhile abusers send slowloris bytes, reset connections in the
//! middle of a message, send oversize frames and garbage, flood connections past
//! `--max-connections`, come from a denied address, and flood UDP. At the end the
//! server's JSON output must hold every good message exactly once. Prints one
//! report line (and the server's summary) and exits 1 on any loss or duplicate.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

const GOOD_CLIENTS: usize = 8;
const GOOD_MESSAGES: usize = 6000;
/// Good clients pace themselves to last about this long.
const GOOD_SPAN: Duration = Duration::from_secs(40);
/// Abusers stop after this long (or their own counts).
const ABUSE_SPAN: Duration = Duration::from_secs(45);
const MAX_CONNECTIONS: usize = 120;
const HARD_DEADLINE: Duration = Duration::from_secs(120);

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/soak → target/release/sockpool-server
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let server = dir.join("sockpool-server");
    if !server.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "sockpool-server"])
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("error: cannot build sockpool-server");
            std::process::exit(1);
        }
    }
    server
}

fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let ip: IpAddr = source.parse().map_err(std::io::Error::other)?;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// A tiny xorshift for garbage bytes (no need for a crate).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[derive(Default)]
struct Abuse {
    slowloris: AtomicU64,
    resets: AtomicU64,
    oversize: AtomicU64,
    garbage: AtomicU64,
    flood_conns: AtomicU64,
    denied: AtomicU64,
    udp: AtomicU64,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let max_conns = MAX_CONNECTIONS.to_string();
    let mut child = match Command::new(server_binary())
        .args([
            "-l",
            "127.0.0.1:0",
            "-w",
            "2",
            "--format",
            "json",
            "--max-frame",
            "1024",
            "--max-connections",
            &max_conns,
            "--max-per-ip",
            "40",
            "--idle-timeout",
            "5",
            "--deny",
            "127.0.0.66",
            "--drain-timeout",
            "10",
            "-q",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("error: cannot start sockpool-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return ExitCode::FAILURE;
    };
    let pid = child.id();
    let server = Guard(child);

    // stderr: the listening lines, the summary, the warning count.
    let (err_tx, err_rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let mut addr: Option<SocketAddr> = None;
    let mut udp_ready = false;
    while addr.is_none() || !udp_ready {
        match err_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("listening tcp ") {
                    addr = a.parse().ok();
                }
                udp_ready |= line.starts_with("listening udp ");
            }
            Err(_) => {
                eprintln!("error: the server did not start");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(addr) = addr else {
        return ExitCode::FAILURE;
    };

    // stdout: count every good message by id; note the first of each client.
    let (first_tx, first_rx) = mpsc::channel::<usize>();
    let reader = thread::spawn(move || {
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut other = 0u64;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            let msg = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(String::from));
            match msg {
                Some(m) if m.starts_with("good-") => {
                    if m.ends_with("-0")
                        && let Some(c) = m.split('-').nth(1).and_then(|c| c.parse().ok())
                    {
                        let _ = first_tx.send(c);
                    }
                    *seen.entry(m).or_insert(0) += 1;
                }
                _ => other += 1,
            }
            line.clear();
        }
        (seen, other)
    });

    // Good clients: connect, send message 0, wait until the server has printed it
    // (so it was admitted before the abusers arrive), then the rest.
    let go = Arc::new(AtomicBool::new(false));
    let mut good = Vec::new();
    for c in 0..GOOD_CLIENTS {
        let go = Arc::clone(&go);
        good.push(thread::spawn(move || -> Result<(), String> {
            let mut s = connect_from("127.0.0.1", addr).map_err(|e| e.to_string())?;
            s.write_all(format!("good-{c}-0\n").as_bytes())
                .map_err(|e| e.to_string())?;
            while !go.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(10));
            }
            let per_batch = 50;
            let batches = GOOD_MESSAGES.div_ceil(per_batch);
            let pause = GOOD_SPAN / batches as u32;
            let mut seq = 1;
            while seq < GOOD_MESSAGES {
                let mut buf = String::new();
                for _ in 0..per_batch {
                    if seq < GOOD_MESSAGES {
                        buf.push_str(&format!("good-{c}-{seq}\n"));
                        seq += 1;
                    }
                }
                s.write_all(buf.as_bytes())
                    .map_err(|e| format!("good client {c}: {e}"))?;
                thread::sleep(pause);
            }
            s.write_all(b"!Disconnect\n").map_err(|e| e.to_string())?;
            // The server closes after handling everything before !Disconnect.
            let mut rest = Vec::new();
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let _ = s.read_to_end(&mut rest);
            Ok(())
        }));
    }
    let mut admitted = 0;
    while admitted < GOOD_CLIENTS {
        if first_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            eprintln!("error: good clients were not all admitted");
            return ExitCode::FAILURE;
        }
        admitted += 1;
    }
    go.store(true, Ordering::Release);

    // Abusers.
    let abuse = Arc::new(Abuse::default());
    let end = Instant::now() + ABUSE_SPAN;
    let mut abusers = Vec::new();
    // Slowloris: ten connections, a byte every 300 ms, never a whole line.
    for i in 0..10 {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            let Ok(mut s) = connect_from("127.0.0.10", addr) else {
                return;
            };
            abuse.slowloris.fetch_add(1, Ordering::Relaxed);
            for _ in 0..200 {
                if Instant::now() > end || s.write_all(&[b'a' + i as u8]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(300));
            }
        }));
    }
    // Resets in the middle of a message.
    {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            for _ in 0..500 {
                if Instant::now() > end {
                    break;
                }
                if let Ok(mut s) = connect_from("127.0.0.11", addr) {
                    let _ = s.write_all(b"half a messa");
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    abuse.resets.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(40));
            }
        }));
    }
    // Oversize frames.
    {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            let big = format!("{}\n", "O".repeat(64 * 1024));
            for _ in 0..200 {
                if Instant::now() > end {
                    break;
                }
                if let Ok(mut s) = connect_from("127.0.0.12", addr) {
                    for _ in 0..5 {
                        if s.write_all(big.as_bytes()).is_ok() {
                            abuse.oversize.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // Garbage bytes.
    {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..300 {
                if Instant::now() > end {
                    break;
                }
                if let Ok(mut s) = connect_from("127.0.0.13", addr) {
                    let bytes: Vec<u8> = (0..4096).map(|_| xorshift(&mut state) as u8).collect();
                    if s.write_all(&bytes).is_ok() {
                        abuse.garbage.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    // Connection flood past --max-connections, from 127.0.1.1–10 (under
    // --max-per-ip each): hold them a moment (idle ones are cut at 5 s), again.
    {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            for _round in 0..8 {
                if Instant::now() > end {
                    break;
                }
                let mut held = Vec::new();
                for k in 0..200 {
                    let source = format!("127.0.1.{}", 1 + k % 10);
                    if let Ok(s) = connect_from(&source, addr) {
                        held.push(s);
                        abuse.flood_conns.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_secs(3));
                drop(held);
                thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    // A denied address, over TCP and UDP.
    {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            let udp = UdpSocket::bind("127.0.0.66:0").ok();
            for _ in 0..100 {
                if Instant::now() > end {
                    break;
                }
                if let Ok(mut s) = connect_from("127.0.0.66", addr) {
                    let _ = s.write_all(b"let me in\n");
                    abuse.denied.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(u) = &udp {
                    let _ = u.send_to(b"let me in", addr);
                    abuse.denied.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // UDP flood: as fast as it goes, bounded in count and time.
    {
        let abuse = Arc::clone(&abuse);
        abusers.push(thread::spawn(move || {
            let Ok(u) = UdpSocket::bind("127.0.0.20:0") else {
                return;
            };
            let payload = [b'u'; 200];
            for i in 0..300_000u32 {
                if i % 1024 == 0 && Instant::now() > end {
                    break;
                }
                if u.send_to(&payload, addr).is_ok() {
                    abuse.udp.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let mut errors = Vec::new();
    for g in good {
        match g.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => errors.push(err),
            Err(_) => errors.push("a good client panicked".into()),
        }
    }
    for a in abusers {
        let _ = a.join();
    }
    if started.elapsed() > HARD_DEADLINE {
        errors.push("the soak overran its deadline".into());
    }

    let rss = peak_rss_kib(pid);
    // SAFETY: a signal to the child we spawned and still hold.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let mut summary = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = err_rx.recv_timeout(Duration::from_millis(200))
            && line.starts_with("summary: ")
        {
            summary = line;
            break;
        }
    }
    drop(server);
    let (seen, other) = reader.join().unwrap_or_default();

    let expected = GOOD_CLIENTS * GOOD_MESSAGES;
    let mut lost = 0;
    let mut dups = 0;
    for c in 0..GOOD_CLIENTS {
        for seq in 0..GOOD_MESSAGES {
            match seen.get(&format!("good-{c}-{seq}")) {
                None => lost += 1,
                Some(&1) => {}
                Some(&n) => dups += n as usize - 1,
            }
        }
    }
    let a = &abuse;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "soak: {:.1}s; good: {GOOD_CLIENTS} clients, {expected} messages sent, {} delivered, lost {lost}, duplicated {dups}; \
         abusers: slowloris {} conns, resets {}, oversize frames {}, garbage conns {}, flood conns {} (max-connections {MAX_CONNECTIONS}), denied {}, udp flood {} datagrams; \
         other messages printed {other}; server peak RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        seen.len(),
        get(&a.slowloris),
        get(&a.resets),
        get(&a.oversize),
        get(&a.garbage),
        get(&a.flood_conns),
        get(&a.denied),
        get(&a.udp),
        rss as f64 / 1024.0,
    );
    println!("{summary}");
    for err in &errors {
        println!("error: {err}");
    }
    if lost == 0 && dups == 0 && errors.is_empty() && !summary.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
