//! A real syslog sender: rsyslog's omfwd forwarding over TCP with RFC 6587 octet
//! counting (`TCP_Framing="octet-counted"`) to a server with `--framing octet`.

mod support;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, TempFile, deadline, require_tool};

/// rsyslogd in the foreground, killed (by its pid) on drop.
struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn octet_counted_messages_from_rsyslog_arrive() {
    if !require_tool("rsyslogd") {
        return;
    }
    let server = Server::start(&["--framing", "octet", "--format", "json", "--tcp-only"]);
    let tcp = server.tcp_addr();
    let input = free_udp_port();
    let dir = std::env::temp_dir().join(format!("sockpool-rsyslog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = TempFile::new(
        "rsyslog.conf",
        format!(
            r#"global(workDirectory="{dir}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{input}")
*.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted")
"#,
            dir = dir.display(),
            port = tcp.port(),
        )
        .as_bytes(),
    );
    let pidfile = dir.join("rsyslogd.pid");
    let _rsyslog = Rsyslog(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf.path)
            .arg("-i")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd"),
    );
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.connect(("127.0.0.1", input)).unwrap();
    // rsyslogd prints nothing when it is ready: probe until a message comes through.
    let until = deadline();
    loop {
        // Refused (ICMP) until rsyslogd has bound its port.
        let _ = sender.send(b"<13>Nov 27 01:50:00 host probe: ready?");
        if server
            .try_line(Instant::now() + Duration::from_millis(200))
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < until, "nothing arrived from rsyslogd");
    }
    let long = "L".repeat(3000);
    let bodies = [
        "first",
        "with spaces 12 and digits",
        "second\nline",
        long.as_str(),
        "last",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let datagram = format!("<13>Nov 27 01:50:00 host app: msg{i} {body}");
        sender.send(datagram.as_bytes()).unwrap();
    }
    // Probes may still be arriving; collect until the last message.
    let mut got = Vec::new();
    while !got.iter().any(|m: &String| m.contains("msg4 last")) {
        let line = support::parse_json(&server.line());
        let msg = String::from_utf8(line.bytes).unwrap();
        if !msg.contains("probe") {
            got.push(msg);
        }
    }
    assert_eq!(got.len(), bodies.len(), "{got:#?}");
    for (i, (msg, body)) in got.iter().zip(bodies).enumerate() {
        // rsyslog's forward format, "<13>TIMESTAMP host app: msgN BODY", exactly as
        // counted: nothing added, nothing cut. rsyslog escapes the newline as #012.
        let body = body.replace('\n', "#012");
        assert!(msg.starts_with("<13>"), "{msg}");
        assert!(msg.ends_with(&format!("msg{i} {body}")), "{msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
