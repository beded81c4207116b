//! `--output nats://…`: against the real `nats-server -js`. Every message lands in
//! the stream exactly once with its headers, in order per connection; a NATS server
//! killed and restarted, or a cluster node killed, loses and repeats nothing; an
//! unreachable server at start-up is waited for; bad URLs and credentials are
//! refused in one line.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::StorageType};
use support::{
    Server, TempDir, clean_command, metric, require_tool, run, summary, summary_count, wait_until,
};

/// A `nats-server -js` on loopback, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl NatsServer {
    fn start(store: &std::path::Path) -> NatsServer {
        NatsServer::start_with(support::free_port(), store, &[])
    }

    fn start_with(port: u16, store: &std::path::Path, extra: &[String]) -> NatsServer {
        let mut args: Vec<String> = vec![
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-sd".into(),
            store.display().to_string(),
        ];
        args.extend_from_slice(extra);
        let mut server = NatsServer {
            child: None,
            port,
            args,
        };
        server.spawn();
        server
    }

    /// Starts the process and waits (within the deadline) for `Server is ready`.
    fn spawn(&mut self) {
        let mut child = Command::new("nats-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("Server is ready") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(support::WAIT)
            .unwrap_or_else(|_| panic!("nats-server {:?} did not get ready", self.args));
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tokio runtime for the test's own NATS client (reading the stream back).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One stored message.
#[derive(Debug, Clone)]
struct Stored {
    headers: HashMap<String, String>,
    payload: Vec<u8>,
}

/// Every message of `stream`, in stream order (read by an ordered consumer).
fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    use futures_util::StreamExt;
    runtime().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client);
        // A cluster that just lost a node may take a while to answer API requests
        // (a new meta leader): retry, within a deadline.
        let until = Instant::now() + Duration::from_secs(60);
        let (total, mut messages) = loop {
            let attempt = async {
                let mut handle = js.get_stream(stream).await.map_err(|e| e.to_string())?;
                let total = handle
                    .info()
                    .await
                    .map_err(|e| e.to_string())?
                    .state
                    .messages;
                let consumer = handle
                    .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let messages = consumer.messages().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((total, messages))
            };
            match attempt.await {
                Ok(found) => break found,
                Err(err) => {
                    assert!(Instant::now() < until, "cannot read stream {stream}: {err}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(120);
        while (out.len() as u64) < total {
            assert!(Instant::now() < until, "reading {stream} took too long");
            let next = tokio::time::timeout(support::WAIT, messages.next()).await;
            let m = match next.expect("the stream is read") {
                Some(Ok(m)) => m,
                // The ordered consumer recreates itself after a hiccup and goes on.
                Some(Err(err)) => {
                    eprintln!("reading {stream}: {err}");
                    continue;
                }
                None => panic!("the stream of {stream} ended after {}", out.len()),
            };
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| (k.to_string(), v.first().unwrap().to_string()))
                .collect();
            out.push(Stored {
                headers,
                payload: m.payload.to_vec(),
            });
        }
        out
    })
}

/// The names of the streams on the server.
fn stream_names(url: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    runtime().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client);
        js.stream_names().try_collect().await.unwrap()
    })
}

/// The payload of message `seq` of connection `conn`: unescaped bytes a text line
/// would escape (tab, backslash, a control byte, invalid UTF-8), so it shows that
/// NATS gets them as they came.
fn payload(conn: usize, seq: usize) -> Vec<u8> {
    let mut p = format!("c{conn} {seq} ").into_bytes();
    p.extend_from_slice(b"tab\there \\ ctl\x01 \xc3\xa9 bad\xff end");
    p
}

/// Parses `c<conn> <seq> …` back.
fn ids(payload: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(payload);
    let mut words = text.split(' ');
    let parsed = (|| {
        let conn = words.next()?.strip_prefix('c')?.parse().ok()?;
        let seq = words.next()?.parse().ok()?;
        Some((conn, seq))
    })();
    parsed.unwrap_or_else(|| panic!("not a test payload: {text:?}"))
}

/// Sends `per_conn` messages on each of `conns` connections, then `!Disconnect`;
/// returns each connection's local address.
fn send_all(addr: SocketAddr, conns: usize, per_conn: usize) -> Vec<SocketAddr> {
    let senders: Vec<_> = (0..conns)
        .map(|c| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let mut chunk = Vec::new();
                for seq in 0..per_conn {
                    chunk.extend_from_slice(&payload(c, seq));
                    chunk.push(b'\n');
                }
                chunk.extend_from_slice(b"!Disconnect\n");
                stream.write_all(&chunk).unwrap();
                let local = stream.local_addr().unwrap();
                // Wait for the server to close: everything was read.
                let mut buf = [0u8; 16];
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let _ = std::io::Read::read(&mut stream, &mut buf);
                local
            })
        })
        .collect();
    senders.into_iter().map(|s| s.join().unwrap()).collect()
}

/// Checks that `stored` holds exactly messages 0..sent[c] of each connection c, once
/// each, in order per connection.
fn assert_exactly_once_in_order(stored: &[Stored], sent: &[usize]) {
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); sent.len()];
    for m in stored {
        let (conn, seq) = ids(&m.payload);
        assert_eq!(m.payload, payload(conn, seq), "payload exact");
        seen[conn].push(seq);
    }
    for (conn, seqs) in seen.iter().enumerate() {
        let expected: Vec<usize> = (0..sent[conn]).collect();
        if *seqs != expected {
            let set: HashSet<&usize> = seqs.iter().collect();
            panic!(
                "connection {conn}: {} stored, {} distinct, {} sent; first out of place at {:?}",
                seqs.len(),
                set.len(),
                sent[conn],
                seqs.iter().zip(&expected).position(|(a, b)| a != b)
            );
        }
    }
}

/// Like [`assert_exactly_once_in_order`], for a run with faults: every message
/// exactly once; the order may differ where messages were published again.
fn assert_exactly_once(stored: &[Stored], sent: &[usize]) {
    let mut count: HashMap<(usize, usize), usize> = HashMap::new();
    for m in stored {
        let (conn, seq) = ids(&m.payload);
        assert_eq!(m.payload, payload(conn, seq), "payload exact");
        *count.entry((conn, seq)).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} duplicated, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    for (conn, n) in sent.iter().enumerate() {
        let missing: Vec<usize> = (0..*n)
            .filter(|s| !count.contains_key(&(conn, *s)))
            .collect();
        assert!(
            missing.is_empty(),
            "connection {conn}: {} of {n} missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    assert_eq!(stored.len(), sent.iter().sum::<usize>());
}

/// Like [`wait_until`], with room for a reconnect, acknowledgement timeouts and a
/// cluster election on a loaded machine.
fn wait_long(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then waits (up to 90 s: the drain republishes what a fault left
/// unacknowledged) for exit status 0; returns stderr.
fn drain(server: &mut Server) -> Vec<String> {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Instant::now() + Duration::from_secs(90));
    let stderr = server.all_stderr();
    assert!(status.success(), "{status}; stderr:\n{}", stderr.join("\n"));
    stderr
}

fn sockpool(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--output", url, "--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn every_message_lands_once_with_its_headers_in_order() {
    if !require_tool("nats-server") {
        return;
    }
    let store = TempDir::new("nats-store");
    let nats = NatsServer::start(&store.path);
    let url = format!("{}/sockpool.messages", nats.url());
    let mut server = sockpool(&url, &[]);
    server.wait_stderr("the stream", |l| l.contains("created stream SOCKPOOL"));
    const CONNS: usize = 8;
    const PER_CONN: usize = 500;
    let locals = send_all(server.tcp_addr(), CONNS, PER_CONN);
    // A datagram that finds the output queue full is dropped (UDP never waits):
    // send it once the TCP messages are through.
    wait_until("the TCP messages are acknowledged", || {
        metric(server.metrics_addr(), "sockpool_nats_acked_total") == (CONNS * PER_CONN) as u64
    });
    let udp = server.udp();
    udp.send(b"a datagram").unwrap();
    let udp_local = udp.local_addr().unwrap();
    wait_until("every message is acknowledged", || {
        metric(server.metrics_addr(), "sockpool_nats_acked_total") == (CONNS * PER_CONN + 1) as u64
    });
    assert_eq!(metric(server.metrics_addr(), "sockpool_nats_pending"), 0);
    let (stdout, stderr) = server.finish();
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
    let s = summary(&stderr);
    let total = (CONNS * PER_CONN + 1) as u64;
    assert!(
        s.contains(&format!(
            "nats published {total} (acknowledged {total}, unacknowledged 0)"
        )),
        "{s}"
    );

    let stored = read_stream(&nats.url(), "SOCKPOOL");
    let (datagrams, tcp): (Vec<Stored>, Vec<Stored>) = stored
        .into_iter()
        .partition(|m| m.headers.get("Sockpool-Proto").map(String::as_str) == Some("udp"));
    assert_exactly_once_in_order(&tcp, &[PER_CONN; CONNS]);
    assert_eq!(datagrams.len(), 1);
    assert_eq!(datagrams[0].payload, b"a datagram");
    assert_eq!(datagrams[0].headers["Sockpool-Peer"], udp_local.to_string());
    assert!(!datagrams[0].headers.contains_key("Sockpool-Conn"));

    let mut ids = HashSet::new();
    let mut conn_of_peer: HashMap<String, String> = HashMap::new();
    for m in tcp.iter().chain(&datagrams) {
        let h = &m.headers;
        let ts = &h["Sockpool-Ts"];
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        assert!(ids.insert(h["Nats-Msg-Id"].clone()), "ids are unique");
    }
    for m in &tcp {
        let (conn, _) = ids_of(m);
        let peer = &m.headers["Sockpool-Peer"];
        assert_eq!(*peer, locals[conn].to_string(), "the peer is the sender");
        assert_eq!(m.headers["Sockpool-Proto"], "tcp");
        let id = m.headers["Sockpool-Conn"].clone();
        assert_eq!(conn_of_peer.entry(peer.clone()).or_insert(id.clone()), &id);
    }
    let distinct: HashSet<&String> = conn_of_peer.values().collect();
    assert_eq!(distinct.len(), CONNS, "one connection id per connection");
}

fn ids_of(m: &Stored) -> (usize, usize) {
    ids(&m.payload)
}

#[test]
fn a_stream_that_captures_the_subject_is_used_and_two_instances_share_it() {
    if !require_tool("nats-server") {
        return;
    }
    let store = TempDir::new("nats-store");
    let nats = NatsServer::start(&store.path);
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: "EVENTS".into(),
                subjects: vec!["events.>".into()],
                storage: StorageType::Memory,
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let url = format!("{}/events.sockpool", nats.url());
    let mut a = sockpool(&url, &[]);
    let mut b = sockpool(&url, &[]);
    a.wait_stderr("the stream", |l| l.contains("to stream EVENTS"));
    let (ta, tb) = (a.tcp_addr(), b.tcp_addr());
    let one = thread::spawn(move || send_all(ta, 2, 300));
    let two = thread::spawn(move || send_all(tb, 2, 300));
    one.join().unwrap();
    two.join().unwrap();
    a.finish();
    b.finish();
    assert_eq!(stream_names(&nats.url()), ["EVENTS"]);
    let stored = read_stream(&nats.url(), "EVENTS");
    // Both instances number their messages from 1: only their process ids keep
    // JetStream from taking one's message for the other's duplicate.
    assert_eq!(stored.len(), 4 * 300);
    let ids: HashSet<&String> = stored.iter().map(|m| &m.headers["Nats-Msg-Id"]).collect();
    assert_eq!(ids.len(), 4 * 300);
}

#[test]
fn two_instances_on_one_port_with_reuse_port_publish_everything_once() {
    if !require_tool("nats-server") {
        return;
    }
    let store = TempDir::new("nats-store");
    let nats = NatsServer::start(&store.path);
    let url = format!("{}/sockpool.messages", nats.url());
    let mut first = sockpool(&url, &["--reuse-port"]);
    let listen = first.tcp_addr().to_string();
    let mut second = sockpool(&url, &["--reuse-port", "-l", &listen]);
    // 100 connections: the kernel hashes each to one of the two processes (the
    // chance that all land on one is 2^-99).
    const CONNS: usize = 100;
    send_all(first.tcp_addr(), CONNS, 20);
    let (_, err1) = first.finish();
    let (_, err2) = second.finish();
    let published = |stderr: &[String]| summary_count(summary(stderr), "nats published");
    let (one, two) = (published(&err1), published(&err2));
    assert!(one > 0 && two > 0, "both publish: {one} and {two}");
    assert_eq!(one + two, (CONNS * 20) as u64);
    assert_exactly_once_in_order(&read_stream(&nats.url(), "SOCKPOOL"), &[20; CONNS]);
}

#[test]
fn bad_urls_are_usage_errors_and_bad_credentials_one_line() {
    for bad in [
        "nats://127.0.0.1:4222",
        "nats://127.0.0.1:4222/a.*",
        "nats://127.0.0.1:http/s",
    ] {
        let mut cmd = clean_command(support::SERVER);
        cmd.args(["-l", "127.0.0.1:0", "--output", bad]);
        let out = run(cmd, b"");
        assert_eq!(out.code(), Some(2), "{bad}: {out:?}");
        assert!(
            out.stderr.contains("is not a NATS output"),
            "{}",
            out.stderr
        );
    }
    if !require_tool("nats-server") {
        return;
    }
    let store = TempDir::new("nats-store");
    let nats = NatsServer::start_with(
        support::free_port(),
        &store.path,
        &[
            "--user".into(),
            "sockpool".into(),
            "--pass".into(),
            "right".into(),
        ],
    );
    let url = format!(
        "nats://sockpool:wrong@127.0.0.1:{}/sockpool.messages",
        nats.port
    );
    let mut cmd = clean_command(support::SERVER);
    cmd.args(["-l", "127.0.0.1:0", "-q", "--output", &url]);
    let out = run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    let last = out.stderr.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "error: cannot open output nats://sockpool:***@127.0.0.1:{}/sockpool.messages: authorization violation",
            nats.port
        )
    );
    assert!(!out.stderr.contains("wrong"), "{}", out.stderr);

    // A stream that would lose the guarantee is refused, in one line.
    let plain = NatsServer::start(&store.path.join("plain"));
    runtime().block_on(async {
        let client = async_nats::connect(plain.url()).await.unwrap();
        jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: "NOACK".into(),
                subjects: vec!["noack.>".into()],
                no_ack: true,
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let mut cmd = clean_command(support::SERVER);
    cmd.args(["-l", "127.0.0.1:0", "-q", "--output"])
        .arg(format!("{}/noack.sockpool", plain.url()));
    let out = run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.lines().last().unwrap(),
        format!(
            "error: cannot open output {}/noack.sockpool: stream NOACK captures noack.sockpool but does not acknowledge publishes (no_ack): messages could be lost unseen",
            plain.url()
        )
    );

    // The right password publishes.
    let url = format!(
        "nats://sockpool:right@127.0.0.1:{}/sockpool.messages",
        nats.port
    );
    let mut server = sockpool(&url, &[]);
    send_all(server.tcp_addr(), 1, 10);
    server.finish();
}

#[test]
fn an_unreachable_server_at_start_is_waited_for() {
    if !require_tool("nats-server") {
        return;
    }
    let port = support::free_port();
    let url = format!("nats://127.0.0.1:{port}/sockpool.messages");
    let mut server = sockpool(&url, &["--drain-timeout", "80"]);
    server.wait_stderr("a warning", |l| l.contains("cannot be reached"));
    let addr = server.tcp_addr();
    let senders = thread::spawn(move || send_all(addr, 2, 200));
    let store = TempDir::new("nats-store");
    let nats = NatsServer::start_with(port, &store.path, &[]);
    senders.join().unwrap();
    wait_until("every message is acknowledged", || {
        metric(server.metrics_addr(), "sockpool_nats_acked_total") == 400
    });
    server.finish();
    assert_exactly_once_in_order(&read_stream(&nats.url(), "SOCKPOOL"), &[200, 200]);
}

#[test]
fn unacknowledged_messages_at_the_drain_timeout_exit_1() {
    if !require_tool("nats-server") {
        return;
    }
    let store = TempDir::new("nats-store");
    let nats = NatsServer::start(&store.path);
    let url = format!("{}/sockpool.messages", nats.url());
    let mut server = sockpool(&url, &["--drain-timeout", "2"]);
    server.wait_stderr("the stream", |l| l.contains("created stream SOCKPOOL"));
    // A NATS server that takes messages and never answers.
    let pid = nats.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    send_all(server.tcp_addr(), 1, 100);
    wait_until("the messages are published", || {
        metric(server.metrics_addr(), "sockpool_nats_pending") == 100
    });
    let (status, summary_line) = server.stop(libc::SIGTERM);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(status.code(), Some(1), "{summary_line}");
    assert!(
        summary_line.ends_with("nats published 100 (acknowledged 0, unacknowledged 100)"),
        "{summary_line}"
    );
    let stderr = server.all_stderr();
    assert_eq!(
        stderr.last().unwrap(),
        "error: 100 messages not acknowledged by NATS within the drain timeout (2s)"
    );
}

/// Most messages one steady sender sends: the kernel buffers several megabytes
/// per connection, so a flood must be bounded for the drain to be quick.
const PER_SENDER_CAP: usize = 15_000;

/// Senders that go on until told to stop (or a cap, or 120 s), as fast as the
/// server takes their lines, so that the window of publishes in flight is full when
/// a fault strikes; each returns how many it sent.
fn steady_senders(
    addr: SocketAddr,
    conns: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<usize>> {
    (0..conns)
        .map(|c| {
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(90)))
                    .unwrap();
                let until = Instant::now() + Duration::from_secs(120);
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) && seq < PER_SENDER_CAP && Instant::now() < until
                {
                    let mut chunk = Vec::new();
                    for _ in 0..50 {
                        chunk.extend_from_slice(&payload(c, seq));
                        chunk.push(b'\n');
                        seq += 1;
                    }
                    stream.write_all(&chunk).unwrap();
                }
                stream.write_all(b"!Disconnect\n").unwrap();
                // Wait for the server to close: it has read everything. (A drain
                // started earlier would cut off what is still in flight.)
                stream
                    .set_read_timeout(Some(Duration::from_secs(90)))
                    .unwrap();
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 16]);
                seq
            })
        })
        .collect()
}

#[test]
fn a_killed_and_restarted_nats_server_loses_and_repeats_nothing() {
    if !require_tool("nats-server") {
        return;
    }
    let store = TempDir::new("nats-store");
    let mut nats = NatsServer::start(&store.path);
    let url = format!("{}/sockpool.messages", nats.url());
    let mut server = sockpool(&url, &["--drain-timeout", "80"]);
    let stop = Arc::new(AtomicBool::new(false));
    let senders = steady_senders(server.tcp_addr(), 4, &stop);
    let acked = || metric(server.metrics_addr(), "sockpool_nats_acked_total");
    let t0 = Instant::now();
    wait_until("some messages are acknowledged", || acked() > 5000);
    eprintln!("{:?} killing", t0.elapsed());
    nats.kill();
    let at_kill = acked();
    // The scenario: NATS is away for 2 s.
    thread::sleep(Duration::from_secs(2));
    nats.spawn();
    eprintln!("{:?} restarted", t0.elapsed());
    wait_long("publishing has resumed", || acked() > at_kill + 5000);
    eprintln!("{:?} resumed", t0.elapsed());
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<usize> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    eprintln!("{:?} senders done: {sent:?}", t0.elapsed());
    let stderr = drain(&mut server);
    eprintln!("{:?} server done: {}", t0.elapsed(), summary(&stderr));
    let s = summary(&stderr);
    assert!(summary_count(s, "unacknowledged") == 0, "{s}");
    assert_exactly_once(&read_stream(&nats.url(), "SOCKPOOL"), &sent);
}

#[test]
fn a_three_node_cluster_loses_a_node_and_nothing_else() {
    if !require_tool("nats-server") {
        return;
    }
    let stores: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("nats-node{i}")))
        .collect();
    let ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    let cluster_ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    let routes = cluster_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<NatsServer> = (0..3)
        .map(|i| {
            NatsServer::start_with(
                ports[i],
                &stores[i].path,
                &[
                    "-n".into(),
                    format!("node{i}"),
                    "--cluster_name".into(),
                    "sockpool-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes".into(),
                    routes.clone(),
                ],
            )
        })
        .collect();
    // A stream of 3 replicas, once the cluster has elected its JetStream leader.
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let leader = runtime().block_on(async {
        let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
        let client = async_nats::connect(addrs).await.unwrap();
        let js = jetstream::new(client);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: "REPLICATED".into(),
                    subjects: vec!["replicated.>".into()],
                    storage: StorageType::File,
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(mut stream) => {
                    let info = stream.info().await.unwrap();
                    break info
                        .cluster
                        .as_ref()
                        .and_then(|c| c.leader.clone())
                        .unwrap();
                }
                Err(err) => {
                    assert!(Instant::now() < until, "no stream in the cluster: {err}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let url = format!(
        "{}/replicated.sockpool",
        urls.iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut server = sockpool(&url, &["--drain-timeout", "80"]);
    let stop = Arc::new(AtomicBool::new(false));
    let senders = steady_senders(server.tcp_addr(), 4, &stop);
    let acked = || metric(server.metrics_addr(), "sockpool_nats_acked_total");
    wait_until("some messages are acknowledged", || acked() > 5000);
    // Kill the stream's leader: the other two elect a new one.
    let victim: usize = leader.trim_start_matches("node").parse().unwrap();
    nodes[victim].kill();
    let at_kill = acked();
    wait_long("publishing goes on", || acked() > at_kill + 5000);
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<usize> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let stderr = drain(&mut server);
    assert!(summary_count(summary(&stderr), "unacknowledged") == 0);
    let alive = urls[(victim + 1) % 3].clone();
    assert_exactly_once(&read_stream(&alive, "REPLICATED"), &sent);
}
