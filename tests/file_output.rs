//! `--output PATH`: appending, file modes, SIGHUP (reopen, and never a stop), and
//! output that cannot be written (a full disk, a removed directory): TCP reading
//! pauses, the writer retries each second, and nothing is lost once it can write.

mod support;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Client, Server, TempDir, metric, parse_text, poll_fd, summary, summary_count, wait_until,
};

/// Message `seq` of connection `conn`.
fn numbered(conn: usize, seq: usize) -> String {
    format!("c{conn} {seq:06} {}", "x".repeat(40))
}

/// Sends `per_conn` numbered lines on each of `conns` connections (a thread each),
/// then half-closes them; returns when all were written.
fn send_numbered(addr: SocketAddr, conns: usize, per_conn: usize) {
    let senders: Vec<_> = (0..conns)
        .map(|c| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let mut chunk = String::new();
                for seq in 0..per_conn {
                    chunk.push_str(&numbered(c, seq));
                    chunk.push('\n');
                    if chunk.len() > 16 * 1024 {
                        stream.write_all(chunk.as_bytes()).unwrap();
                        chunk.clear();
                    }
                }
                stream.write_all(chunk.as_bytes()).unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
}

/// Checks that `text` holds, besides lines not from [`numbered`], exactly lines
/// 0..per_conn of each connection, once each, in order.
fn assert_exactly_once(text: &str, conns: usize, per_conn: usize) {
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); conns];
    for line in text.lines() {
        let msg = parse_text(line).msg;
        let Some(rest) = msg.strip_prefix('c') else {
            continue;
        };
        let mut words = rest.split(' ');
        let conn: usize = words.next().unwrap().parse().unwrap();
        let seq: usize = words.next().unwrap().parse().unwrap();
        seen[conn].push(seq);
    }
    for (conn, seqs) in seen.iter().enumerate() {
        let expected: Vec<usize> = (0..per_conn).collect();
        if *seqs != expected {
            let dups = seqs.len() as i64 - per_conn as i64;
            panic!(
                "connection {conn}: {} lines (expected {per_conn}, difference {dups}); first out of place at {:?}",
                seqs.len(),
                seqs.iter().zip(&expected).position(|(a, b)| a != b)
            );
        }
    }
}

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap_or_default()).unwrap()
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// This process's umask (the server inherits it), from /proc.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

#[test]
fn output_file_is_appended_to_and_created_0640() {
    let dir = TempDir::new("append");
    let old = dir.join("old.log");
    std::fs::write(&old, "earlier line\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o604)).unwrap();
    let mut server = Server::start(&["--output", old.to_str().unwrap()]);
    Client::send(server.tcp_addr(), &["hello", "world"]);
    let (stdout, _) = server.finish();
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
    let text = read(&old);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "earlier line");
    assert_eq!(parse_text(lines[1]).msg, "hello");
    assert_eq!(parse_text(lines[2]).msg, "world");
    let mode = std::fs::metadata(&old).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o604, "an existing file keeps its mode");

    let new = dir.join("new.log");
    let env_path = new.to_str().unwrap().to_string();
    let mut server = Server::start_with(support::Options {
        env: &[("SOCKPOOL_OUTPUT", &env_path)],
        ..Default::default()
    });
    Client::send(server.tcp_addr(), &["via the environment"]);
    server.finish();
    assert_eq!(parse_text(read(&new).trim_end()).msg, "via the environment");
    let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640 & !umask(), "a new file is 0640 less the umask");
}

#[test]
fn dash_is_stdout_and_a_bad_path_is_one_line_at_start() {
    let mut server = Server::start(&["--output", "-"]);
    Client::send(server.tcp_addr(), &["to stdout"]);
    assert_eq!(parse_text(&server.line()).msg, "to stdout");
    server.finish();

    let out = support::run(
        {
            let mut cmd = support::clean_command(support::SERVER);
            cmd.args([
                "-l",
                "127.0.0.1:0",
                "--output",
                "/nonexistent-sockpool-dir/out.log",
            ]);
            cmd
        },
        b"",
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim_end(),
        "error: cannot open output /nonexistent-sockpool-dir/out.log: no such file or directory"
    );
}

#[test]
fn sighup_without_a_file_says_so_and_keeps_serving() {
    let mut server = Server::start(&[]);
    // One at a time: signals of one kind sent together may arrive as one.
    for n in 1..=3 {
        server.signal(libc::SIGHUP);
        server.wait_stderr_count(n, |l| l.contains("nothing to reopen"));
    }
    Client::send(server.tcp_addr(), &["still here"]);
    assert_eq!(parse_text(&server.line()).msg, "still here");
    let (_, stderr) = server.finish();
    assert!(stderr.iter().any(|l| l.starts_with("summary:")));
}

#[test]
fn sighup_reopens_a_rotated_file() {
    let dir = TempDir::new("hup");
    let path = dir.join("out.log");
    let mut server = Server::start(&["--output", path.to_str().unwrap()]);
    Client::send(server.tcp_addr(), &["first"]);
    wait_until("the first line is written", || lines_in(&path) == 1);
    std::fs::rename(&path, dir.join("out.log.1")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_stderr("reopened", |l| l.contains("reopened"));
    assert!(path.exists(), "SIGHUP created the file anew");
    Client::send(server.tcp_addr(), &["second"]);
    server.finish();
    assert_eq!(
        parse_text(read(&dir.join("out.log.1")).trim_end()).msg,
        "first"
    );
    assert_eq!(parse_text(read(&path).trim_end()).msg, "second");
}

/// Writes to `stream` until the server stops taking bytes for 2 s (returns the
/// bytes written) or `limit` bytes went through (returns `None`).
fn write_until_stalled(stream: &mut TcpStream, limit: usize) -> Option<usize> {
    stream.set_nonblocking(true).unwrap();
    let line = format!("{}\n", "s".repeat(999));
    let mut chunk = String::new();
    for _ in 0..64 {
        chunk.push_str(&line);
    }
    let (mut written, mut off) = (0, 0);
    while written < limit {
        match stream.write(&chunk.as_bytes()[off..]) {
            Ok(n) => {
                written += n;
                off = (off + n) % chunk.len();
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let until = Instant::now() + Duration::from_secs(2);
                if !poll_fd(stream.as_raw_fd(), libc::POLLOUT, until) {
                    return Some(written);
                }
            }
            Err(err) => panic!("write: {err}"),
        }
    }
    None
}

#[test]
fn a_full_disk_pauses_tcp_counts_errors_and_never_stops_the_server() {
    let mut server = Server::start(&[
        "--output",
        "/dev/full",
        "--metrics",
        "127.0.0.1:0",
        "--drain-timeout",
        "1",
    ]);
    let mut stream = TcpStream::connect(server.tcp_addr()).unwrap();
    let stalled = write_until_stalled(&mut stream, 256 << 20);
    assert!(
        stalled.is_some(),
        "the server kept reading 256 MB it cannot write"
    );
    server.wait_stderr("a warning", |l| {
        l.contains("cannot write output to /dev/full: no space left on device")
    });
    let errors = metric(server.metrics_addr(), "sockpool_output_errors_total");
    assert!(errors >= 1, "{errors}");
    // Still serving: SIGHUP reopens /dev/full, a new client is accepted.
    server.signal(libc::SIGHUP);
    server.wait_stderr("reopened", |l| l.contains("reopened"));
    let _another = TcpStream::connect(server.tcp_addr()).unwrap();
    wait_until("a retry is counted", || {
        metric(server.metrics_addr(), "sockpool_output_errors_total") > errors
    });
    let (status, summary_line) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(summary_count(&summary_line, "output_errors") > errors);
}

#[test]
fn a_removed_directory_holds_messages_until_it_is_back() {
    let dir = TempDir::new("gone");
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("out.log");
    let mut server = Server::start(&["--output", path.to_str().unwrap()]);
    Client::send(server.tcp_addr(), &["before"]);
    wait_until("the first line is written", || lines_in(&path) == 1);
    std::fs::remove_dir_all(&sub).unwrap();

    let addr = server.tcp_addr();
    let senders = thread::spawn(move || send_numbered(addr, 3, 2000));
    server.wait_stderr("a warning", |l| {
        l.contains("cannot write output to") && l.contains("no such file or directory")
    });
    std::fs::create_dir(&sub).unwrap();
    senders.join().unwrap();
    wait_until("every line is written", || lines_in(&path) == 3 * 2000);
    server.wait_stderr("the recovery", |l| l.contains("written again"));
    let (_, stderr) = server.finish();
    assert_exactly_once(&read(&path), 3, 2000);
    assert!(summary_count(summary(&stderr), "output_errors") >= 1);
}

/// A tmpfs of 1 MiB mounted for the test (needs root), unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = TempDir::new("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir.path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0.path).status();
    }
}

#[test]
fn a_full_tmpfs_holds_messages_until_space_is_freed() {
    let Some(fs) = Tmpfs::mount() else {
        let _ = writeln!(io::stderr(), "skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let filler = fs.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    while let Ok(n) = file.write(&block) {
        len += n as u64;
    }
    // Leave a little room, so the first writes go through in part before failing.
    file.set_len(len.saturating_sub(24 * 1024)).unwrap();
    let path = fs.0.join("out.log");
    let mut server = Server::start(&["--output", path.to_str().unwrap()]);
    let addr = server.tcp_addr();
    let senders = thread::spawn(move || send_numbered(addr, 4, 1000));
    server.wait_stderr("a warning", |l| l.contains("no space left on device"));
    drop(file);
    std::fs::remove_file(&filler).unwrap();
    senders.join().unwrap();
    wait_until("every line is written", || lines_in(&path) == 4 * 1000);
    let (_, stderr) = server.finish();
    assert_exactly_once(&read(&path), 4, 1000);
    assert!(summary_count(summary(&stderr), "output_errors") >= 1);
}
