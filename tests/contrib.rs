//! The shipped systemd units (contrib/systemd) are what `systemd-analyze verify`
//! accepts without a warning, and say what the deployment docs promise.

mod support;

use std::process::Command;

use support::{SERVER, TempDir, require_tool};

const SERVICE: &str = include_str!("../contrib/systemd/sockpool.service");
const SOCKET: &str = include_str!("../contrib/systemd/sockpool.socket");

#[test]
fn the_units_say_what_the_docs_promise() {
    for line in [
        "ListenStream=127.0.0.1:8080",
        "ListenDatagram=127.0.0.1:8080",
        "Service=sockpool.service",
    ] {
        assert!(SOCKET.lines().any(|l| l == line), "sockpool.socket: {line}");
    }
    for line in [
        "User=sockpool",
        "Environment=SOCKPOOL_OUTPUT=/var/log/sockpool/messages.log",
        "EnvironmentFile=-/etc/default/sockpool",
        "ExecStart=/usr/bin/sockpool-server",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LogsDirectory=sockpool",
        "Requires=sockpool.socket",
    ] {
        assert!(
            SERVICE.lines().any(|l| l == line),
            "sockpool.service: {line}"
        );
    }
    // The settings file comes after the unit's own default, so it wins.
    let env = SERVICE.find("Environment=SOCKPOOL_OUTPUT").unwrap();
    let file = SERVICE.find("EnvironmentFile=").unwrap();
    assert!(env < file);
}

#[test]
fn systemd_analyze_verifies_the_units_without_a_warning() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = TempDir::new("units");
    // The binary as built here stands in for /usr/bin/sockpool-server, which
    // `verify` checks exists.
    std::fs::write(
        dir.join("sockpool.service"),
        SERVICE.replace("/usr/bin/sockpool-server", SERVER),
    )
    .unwrap();
    std::fs::write(dir.join("sockpool.socket"), SOCKET).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("sockpool.socket"))
        .arg(dir.join("sockpool.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
