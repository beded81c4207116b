//! Syslog over TLS (RFC 5425) from a real sender: rsyslog's omfwd with the gtls
//! stream driver (package rsyslog-gnutls), verifying the server's certificate by
//! name, forwarding octet-counted messages to `--tls-cert … --framing octet`.
//! The certificates are made here (rcgen).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use support::{Server, deadline, require_tool};

/// rsyslogd in the foreground, killed (by its pid) on drop.
struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn octet_counted_messages_from_rsyslog_over_tls_arrive() {
    if !require_tool("rsyslogd") {
        return;
    }
    let gtls = [
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
        "/usr/lib/rsyslog/lmnsd_gtls.so",
    ];
    if !gtls.iter().any(|p| std::path::Path::new(p).exists()) {
        assert!(
            std::env::var("SOCKPOOL_REQUIRE_PEERS").as_deref() != Ok("1"),
            "rsyslog-gnutls not installed, and SOCKPOOL_REQUIRE_PEERS=1"
        );
        eprintln!("skipped: rsyslog-gnutls not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockpool-rsyslog-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "syslog test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let server = Server::start(&[
        "--framing",
        "octet",
        "--format",
        "json",
        "--tcp-only",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let input = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}" DefaultNetstreamDriverCAFile="{ca}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{input}")
*.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted"
           StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
           StreamDriverPermittedPeers="localhost")
"#,
            dir = dir.display(),
            ca = ca_path.display(),
            port = server.tcp_addr().port(),
        ),
    )
    .unwrap();
    let _rsyslog = Rsyslog(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
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
        let _ = sender.send(b"<13>Nov 27 01:50:00 host probe: ready?");
        if server
            .try_line(Instant::now() + Duration::from_millis(200))
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "nothing arrived from rsyslogd over TLS"
        );
    }
    let long = "L".repeat(3000);
    let bodies = ["first", "with spaces 12 and digits", long.as_str(), "last"];
    for (i, body) in bodies.iter().enumerate() {
        let datagram = format!("<13>Nov 27 01:50:00 host app: msg{i} {body}");
        sender.send(datagram.as_bytes()).unwrap();
    }
    let mut got = Vec::new();
    while !got.iter().any(|m: &String| m.contains("msg3 last")) {
        let line = support::parse_json(&server.line());
        assert_eq!(line.proto, "tls");
        let msg = String::from_utf8(line.bytes).unwrap();
        if !msg.contains("probe") {
            got.push(msg);
        }
    }
    assert_eq!(got.len(), bodies.len(), "{got:#?}");
    for (i, (msg, body)) in got.iter().zip(bodies).enumerate() {
        assert!(msg.starts_with("<13>"), "{msg}");
        assert!(msg.ends_with(&format!("msg{i} {body}")), "{msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
