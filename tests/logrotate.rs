//! The shipped logrotate configuration (contrib/logrotate/sockpool), run by the real
//! `logrotate` five times against a server under load: every message is in exactly
//! one of the files, in order per connection.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Server, TempDir, parse_text, require_tool, wait_until};

const SENDERS: usize = 4;
/// Most messages a sender sends, whatever happens.
const MAX_PER_SENDER: usize = 400_000;

/// Sends numbered lines, a few at a time, until `stop` (or the cap, or 120 s);
/// returns how many.
fn sender(addr: SocketAddr, conn: usize, stop: Arc<AtomicBool>) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) && seq < MAX_PER_SENDER && Instant::now() < until {
        let mut chunk = String::new();
        for _ in 0..20 {
            chunk.push_str(&format!("c{conn} {seq} rotation test line\n"));
            seq += 1;
        }
        stream.write_all(chunk.as_bytes()).unwrap();
        // Pacing, not synchronisation: a steady stream rather than a flood.
        thread::sleep(Duration::from_millis(1));
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    seq
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// A rotated file's text, decompressed when it is `.gz`.
fn contents(path: &Path) -> String {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
        assert!(out.status.success(), "gzip -dc {}", path.display());
        String::from_utf8(out.stdout).unwrap()
    } else {
        String::from_utf8(std::fs::read(path).unwrap()).unwrap()
    }
}

#[test]
fn five_rotations_under_load_lose_and_repeat_nothing() {
    if !require_tool("logrotate") || !require_tool("gzip") {
        return;
    }
    let dir = TempDir::new("logrotate");
    let log = dir.join("messages.log");
    let log_str = log.to_str().unwrap();
    let mut server = Server::start(&["--output", log_str]);

    // The shipped configuration, pointed at this test's file and server.
    let shipped = include_str!("../contrib/logrotate/sockpool");
    let reload = "systemctl reload sockpool.service >/dev/null 2>&1 || true";
    assert!(shipped.contains("/var/log/sockpool/*.log {") && shipped.contains(reload));
    let config = shipped
        .replace("/var/log/sockpool/*.log", log_str)
        .replace(reload, &format!("kill -HUP {}", server.pid));
    let config_path = dir.join("logrotate.conf");
    std::fs::write(&config_path, config).unwrap();
    let state = dir.join("logrotate.state");

    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.tcp_addr();
    let senders: Vec<_> = (0..SENDERS)
        .map(|conn| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || sender(addr, conn, stop))
        })
        .collect();

    for rotation in 1..=5 {
        // `notifempty`: rotate only once the new file has something in it.
        wait_until("the log has lines to rotate", || lines_in(&log) > 5000);
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "logrotate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        server.wait_stderr_count(rotation, |l| l.contains("reopened"));
    }
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<usize> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let (stdout, _) = server.finish();
    assert!(stdout.is_empty());
    eprintln!("sent {sent:?} messages across 5 rotations");

    // Oldest first: .5.gz … .2.gz (delaycompress), .1, then the current file.
    let mut files: Vec<_> = (2..=5)
        .rev()
        .map(|n| dir.join(&format!("messages.log.{n}.gz")))
        .collect();
    files.push(dir.join("messages.log.1"));
    files.push(log.clone());
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); SENDERS];
    for file in &files {
        assert!(file.exists(), "{} was not made", file.display());
        for line in contents(file).lines() {
            let msg = parse_text(line).msg;
            let mut words = msg.split(' ');
            let conn: usize = words.next().unwrap()[1..].parse().unwrap();
            let seq: usize = words.next().unwrap().parse().unwrap();
            seen[conn].push(seq);
        }
    }
    for (conn, seqs) in seen.iter().enumerate() {
        let expected: Vec<usize> = (0..sent[conn]).collect();
        assert!(
            *seqs == expected,
            "connection {conn}: {} messages in the files, {} sent; first out of place at {:?}",
            seqs.len(),
            sent[conn],
            seqs.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
}
