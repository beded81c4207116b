//! `--output nats://…`: against the real `nats-server -js`. Every message lands in
//! the stream exactly once with its headers, in order per connection; a NATS server
//! killed and restarted, or a cluster node killed, loses and repeats nothing; an
//! unreachable server at start-up is waited for; bad URLs and credentials are
//! refused in one line.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType};
use support::{Server, TempDir, clean_command, metric, require_tool, run, summary, wait_until};

/// A port free now (bound and released): for servers that must be restarted on
/// the same port, or that must know each other's ports in advance.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` on loopback, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl NatsServer {
    fn start(store: &std::path::Path) -> NatsServer {
        NatsServer::start_with(free_port(), store, &[])
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
        let mut handle = js.get_stream(stream).await.unwrap();
        let total = handle.info().await.unwrap().state.messages;
        let consumer = handle
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while (out.len() as u64) < total {
            let next = tokio::time::timeout(support::WAIT, messages.next()).await;
            let m = next.expect("the stream is read").unwrap().unwrap();
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
        free_port(),
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
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}/sockpool.messages");
    let mut server = sockpool(&url, &["--drain-timeout", "60"]);
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
