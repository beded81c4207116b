//! One test per fixed bug, named after its issue.

mod support;

use support::{Server, summary};

/// Foundation: a SIGTERM sent as soon as the `listening` lines appeared killed the
/// server with the default action (status 143, no summary), because the signal
/// handlers were installed only after binding. They are now installed first.
#[test]
fn foundation_sigterm_right_after_listening_drains() {
    for _ in 0..10 {
        let mut server = Server::start(&[]);
        // finish() sends SIGTERM at once and requires exit status 0.
        let (stdout, stderr) = server.finish();
        assert!(stdout.is_empty());
        summary(&stderr);
    }
}

/// Limits (issue 4 review): UDP sockets are bound with SO_REUSEPORT, so a port held
/// by another process that also set SO_REUSEPORT was silently shared with it, each
/// getting part of the datagrams. Binding now fails as for any port in use.
#[test]
fn limits_udp_port_held_with_reuseport_is_not_shared() {
    let taken = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    taken.set_reuse_port(true).unwrap();
    taken
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let addr = taken.local_addr().unwrap().as_socket().unwrap();
    let mut cmd = support::clean_command(support::SERVER);
    cmd.args(["--udp-only", "-l", &addr.to_string()]);
    let out = support::run(cmd, b"");
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_lines(),
        [format!(
            "error: cannot listen on {addr}: address already in use"
        )]
    );
}
