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
//!
//! `cargo run --release --example soak -- --tls`: the server speaks TLS (a
//! certificate made at start, rcgen), the good clients are TLS clients, every
//! abuser above is then a cleartext client on the TLS port, and two more join
//! them: clients that finish the handshake and fall silent, and clients that
//! send garbage inside TLS.

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

/// Anything a good client can talk over: plain TCP or TLS over it.
trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

/// `--tls`: the certificate files (removed on drop) and the clients' config.
struct Tls {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<rustls::ClientConfig>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_tls() -> Result<Tls, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let dir = std::env::temp_dir().join(format!("sockpool-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| err(&e))?;
    let ca_key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).map_err(|e| err(&e))?;
    let key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|p| p.signed_by(&key, &ca, &ca_key))
        .map_err(|e| err(&e))?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).map_err(|e| err(&e))?;
    std::fs::write(&key_path, key.serialize_pem()).map_err(|e| err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).map_err(|e| err(&e))?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Tls {
        dir,
        cert: cert_path,
        key: key_path,
        client: Arc::new(client),
    })
}

/// A connection from `source`, with the TLS handshake done when `tls` is given.
fn open(
    source: &str,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Box<dyn Link>> {
    let mut sock = connect_from(source, addr)?;
    let Some(config) = tls else {
        return Ok(Box::new(sock));
    };
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(Box::new(rustls::StreamOwned::new(conn, sock)))
}

#[derive(Default)]
struct Abuse {
    tls_silent: AtomicU64,
    tls_garbage: AtomicU64,
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
    let tls = if std::env::args().any(|a| a == "--tls") {
        match make_tls() {
            Ok(tls) => Some(tls),
            Err(err) => {
                eprintln!("error: cannot make a test certificate: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let tls_args: Vec<String> = tls
        .as_ref()
        .map(|t| {
            vec![
                "--tls-cert".into(),
                t.cert.display().to_string(),
                "--tls-key".into(),
                t.key.display().to_string(),
                "--tls-handshake-timeout".into(),
                "3".into(),
            ]
        })
        .unwrap_or_default();
    let client_tls = tls.as_ref().map(|t| Arc::clone(&t.client));
    let mut child = match Command::new(server_binary())
        .args(&tls_args)
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
        let client_tls = client_tls.clone();
        good.push(thread::spawn(move || -> Result<(), String> {
            let mut s = open("127.0.0.1", addr, client_tls.as_ref()).map_err(|e| e.to_string())?;
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
            s.flush().map_err(|e| e.to_string())?;
            // The server closes after handling everything before !Disconnect (the
            // socket's read timeout, 5 s, bounds the wait).
            let mut rest = Vec::new();
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
    // TLS abusers: a handshake, then silence (the idle timeout ends them), and a
    // handshake, then garbage inside TLS.
    if let Some(config) = &client_tls {
        for i in 0..2 {
            let abuse = Arc::clone(&abuse);
            let config = Arc::clone(config);
            abusers.push(thread::spawn(move || {
                let mut state = 0x2545_f491_4f6c_dd1du64 + i;
                for _ in 0..100 {
                    if Instant::now() > end {
                        break;
                    }
                    let Ok(mut s) = open("127.0.0.14", addr, Some(&config)) else {
                        continue;
                    };
                    if i == 0 {
                        abuse.tls_silent.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(400));
                    } else {
                        let bytes: Vec<u8> =
                            (0..4096).map(|_| xorshift(&mut state) as u8).collect();
                        if s.write_all(&bytes).and_then(|()| s.flush()).is_ok() {
                            abuse.tls_garbage.fetch_add(1, Ordering::Relaxed);
                        }
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }));
        }
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
         abusers: slowloris {} conns, resets {}, oversize frames {}, garbage conns {}, flood conns {} (max-connections {MAX_CONNECTIONS}), denied {}, udp flood {} datagrams{}; \
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
        if tls.is_some() {
            format!(
                " (all of them cleartext on the TLS port), TLS silent after the handshake {}, TLS garbage conns {}",
                get(&a.tls_silent),
                get(&a.tls_garbage)
            )
        } else {
            String::new()
        },
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
