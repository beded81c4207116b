//! `sockpool-client bench` against the real server on loopback: exact counts, an
//! honest rate, UDP loss against a blackhole, the JSON report's shape, and errors
//! that are reported, not fatal. Every run is bounded (messages or seconds) and
//! every wait has a deadline.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::{TcpListener, UdpSocket};

use serde_json::Value;

mod support;

use support::{Client, Output, Server, TempFile, require_tool, summary_count};

/// Runs `sockpool-client bench ARGS` to its end, with empty stdin.
fn bench(args: &[&str]) -> Output {
    Client::run(&[&["bench"], args].concat(), b"")
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn final_report(stdout: &str) -> Value {
    let lines = json_lines(stdout);
    let last = lines.last().expect("a final report").clone();
    assert_eq!(last["report"], "final");
    last
}

const FIELDS: [&str; 11] = [
    "mode",
    "connections",
    "duration",
    "sent",
    "received",
    "errors",
    "msgs_per_sec",
    "mb_per_sec",
    "latency",
    "udp",
    "warmup",
];

#[test]
fn the_server_counts_exactly_the_messages_sent() {
    let server = Server::start(&["--mode", "discard"]);
    let addr = server.tcp_addr().to_string();
    let out = bench(&[
        "-s",
        &addr,
        "--messages",
        "5000",
        "--connections",
        "10",
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let report = final_report(&out.stdout);
    assert_eq!(report["sent"], 5000);
    assert_eq!(report["connected"], 10);
    assert_eq!(report["mode"], "closed loop");
    assert_eq!(report["errors"]["refused"], 0);
    let summary = server.sigterm_summary();
    assert_eq!(summary_count(&summary, "tcp"), 5000, "{summary}");
    assert_eq!(summary_count(&summary, "connections"), 10, "{summary}");
}

#[test]
fn a_rate_limited_run_keeps_its_rate_and_measures_latency() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let addr = server.tcp_addr().to_string();
    let out = bench(&[
        "-s",
        &addr,
        "--rate",
        "2000",
        "--duration",
        "3",
        "--connections",
        "10",
        "--echo",
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let r = final_report(&out.stdout);
    for field in FIELDS {
        assert!(r.get(field).is_some(), "no {field} in {r}");
    }
    assert_eq!(r["mode"], "open loop");
    let rate = r["msgs_per_sec"].as_f64().unwrap();
    assert!((rate - 2000.0).abs() <= 100.0, "rate {rate}");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent.abs_diff(6000) <= 300, "sent {sent}");
    assert_eq!(r["received"], sent);
    let latency = &r["latency"];
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(latency[p].as_u64().is_some(), "no latency {p} in {r}");
    }
    assert!(latency["p50"].as_u64() <= latency["max"].as_u64());
    assert!(r["udp"].is_null());
    let summary = server.sigterm_summary();
    assert_eq!(summary_count(&summary, "tcp"), sent, "{summary}");
}

/// `--hgrm` writes HdrHistogram's percentile distribution: the header, rows of
/// `Value Percentile TotalCount 1/(1-Percentile)` rising to 100% and to every
/// reply, and the `#[Mean …]` footer, as wrk2 prints it and HdrHistogram's
/// plotter reads it.
#[test]
fn hgrm_writes_the_latency_distribution_in_hdrhistograms_format() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let addr = server.tcp_addr().to_string();
    let file = TempFile::new("latency.hgrm", b"stale");
    let path = file.path.to_str().unwrap();
    let out = bench(&[
        "-s",
        &addr,
        "--rate",
        "1000",
        "--messages",
        "500",
        "--connections",
        "5",
        "--echo",
        "--json",
        "--hgrm",
        path,
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let r = final_report(&out.stdout);
    let received = r["received"].as_u64().unwrap();
    assert_eq!(received, 500);
    let text = std::fs::read_to_string(&file.path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "       Value     Percentile TotalCount 1/(1-Percentile)"
    );
    assert_eq!(lines[1], "");
    let rows: Vec<Vec<f64>> = lines[2..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() > 5, "{text}");
    let (last, body) = rows.split_last().unwrap();
    for pair in rows.windows(2) {
        assert!(pair[0][0] <= pair[1][0], "values rise: {text}");
        assert!(pair[0][1] <= pair[1][1], "percentiles rise: {text}");
        assert!(pair[0][2] <= pair[1][2], "counts rise: {text}");
    }
    for row in body {
        assert_eq!(row.len(), 4, "{text}");
        let inverse = 1.0 / (1.0 - row[1]);
        assert!((row[3] - inverse).abs() <= 0.01, "{row:?}");
    }
    assert_eq!(last.len(), 3, "{text}");
    assert_eq!((last[1], last[2]), (1.0, received as f64));
    // The latencies are in milliseconds: the report's max (µs) is the last value.
    let max_ms = r["latency"]["max"].as_f64().unwrap() / 1000.0;
    assert!((last[0] - max_ms).abs() <= max_ms / 500.0 + 0.001, "{text}");
    let footer = &lines[2 + rows.len()..];
    assert_eq!(footer.len(), 3, "{text}");
    assert!(footer[0].starts_with("#[Mean    = ") && footer[0].contains(", StdDeviation   = "));
    assert!(
        footer[1].starts_with("#[Max     = ")
            && footer[1].ends_with(&format!(", Total count    = {received:>12}]"))
    );
    assert!(
        footer[2].starts_with("#[Buckets = ")
            && footer[2].ends_with(", SubBuckets     =         2048]")
    );
}

/// `scripts/hgrm_plot.py` (standard library only) draws each `.hgrm` as one line of
/// an SVG, named by its label, with the x axis in percentiles.
#[test]
fn the_plot_script_draws_each_hgrm_as_a_line() {
    if !require_tool("python3") {
        return;
    }
    let hgrm = concat!(
        "       Value     Percentile TotalCount 1/(1-Percentile)\n",
        "\n",
        "       0.100 0.000000000000          1           1.00\n",
        "       0.300 0.500000000000          3           2.00\n",
        "       0.400 0.990000000000          4         100.00\n",
        "       1.000 1.000000000000          5\n",
        "#[Mean    =        0.400, StdDeviation   =        0.316]\n",
        "#[Max     =        1.000, Total count    =            5]\n",
        "#[Buckets =           22, SubBuckets     =         2048]\n",
    );
    let file = TempFile::new("plot.hgrm", hgrm.as_bytes());
    let svg = TempFile::new("plot.svg", b"");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hgrm_plot.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("sockpool={}", file.path.display()))
        .arg(format!("tokio={}", file.path.display()))
        .arg("-o")
        .arg(&svg.path)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&svg.path).unwrap();
    assert!(
        text.starts_with("<svg ") && text.trim_end().ends_with("</svg>"),
        "{text}"
    );
    assert_eq!(text.matches("<polyline ").count(), 2, "{text}");
    for label in [">sockpool<", ">tokio<", ">99%<", ">latency (ms)<"] {
        assert!(text.contains(label), "no {label} in {text}");
    }
    // A missing file, or one that is not an .hgrm, is one error line and exit 1.
    let out = std::process::Command::new("python3")
        .args([script, "/nonexistent.hgrm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cannot read /nonexistent.hgrm: no such file or directory\n"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&svg.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with(": no percentile table\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hgrm_that_cannot_be_written_is_one_error_line() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let addr = server.tcp_addr().to_string();
    let out = bench(&[
        "-s",
        &addr,
        "--messages",
        "10",
        "--echo",
        "--hgrm",
        "/nonexistent-dir/latency.hgrm",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: cannot write the latency distribution to /nonexistent-dir/latency.hgrm: no such file or directory"
    );
}

#[test]
fn interval_lines_count_the_warmups_replies_with_its_sends() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let addr = server.tcp_addr().to_string();
    let out = bench(&[
        "-s",
        &addr,
        "--rate",
        "400",
        "--warmup",
        "1",
        "--duration",
        "1",
        "--connections",
        "4",
        "--echo",
        "--interval",
        "0.5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines = json_lines(&out.stdout);
    let intervals: Vec<&Value> = lines.iter().filter(|l| l["report"] == "interval").collect();
    assert!(
        intervals.iter().any(|l| l["warmup"] == true),
        "{intervals:?}"
    );
    // The lines show the load as applied, warmup included: every message sent is
    // echoed over TCP, so what they received adds up to what they sent.
    let total = |field: &str| -> u64 { intervals.iter().map(|l| l[field].as_u64().unwrap()).sum() };
    assert_eq!(total("received"), total("sent"), "{intervals:?}");
    // The report leaves the warmup out.
    let r = final_report(&out.stdout);
    assert_eq!(r["sent"], 400, "{r}");
    assert_eq!(r["received"], 400, "{r}");
}

#[test]
fn udp_echo_reports_delivery_and_intervals() {
    let server = Server::start(&["--mode", "echo", "-q"]);
    let addr = server.udp_addr().to_string();
    let out = bench(&[
        "-s",
        &addr,
        "-u",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--connections",
        "4",
        "--echo",
        "--interval",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines = json_lines(&out.stdout);
    let intervals: Vec<&Value> = lines.iter().filter(|l| l["report"] == "interval").collect();
    assert!(intervals.len() >= 2, "{lines:?}");
    assert!(intervals.iter().all(|l| l["sent"].as_u64().is_some()));
    let r = final_report(&out.stdout);
    for field in FIELDS {
        assert!(!r[field].is_null(), "{field} is null in {r}");
    }
    assert_eq!(r["sent"], 2000);
    // Loopback with a server keeping up: everything comes back once, in order
    // per connection.
    let udp = &r["udp"];
    assert_eq!(
        udp["lost"].as_u64().unwrap() + r["received"].as_u64().unwrap(),
        2000,
        "{r}"
    );
    assert_eq!(udp["duplicated"], 0);
}

#[test]
fn udp_against_a_blackhole_is_total_loss() {
    // A bound socket that nobody reads: datagrams vanish without an ICMP error.
    let blackhole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = blackhole.local_addr().unwrap().to_string();
    let out = bench(&[
        "-s",
        &addr,
        "-u",
        "--rate",
        "1000",
        "--messages",
        "500",
        "--connections",
        "2",
        "--echo",
        "--timeout",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let r = final_report(&out.stdout);
    assert_eq!(r["sent"], 500);
    assert_eq!(r["received"], 0);
    assert_eq!(r["udp"]["lost"], 500);
    assert!(r["latency"].is_null(), "{r}");
    drop(blackhole);
}

#[test]
fn refused_connections_are_counted_and_the_run_ends_with_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string(); // closed again at the end of this statement
    let out = bench(&[
        "-s",
        &port,
        "--messages",
        "100",
        "--connections",
        "3",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let r = final_report(&out.stdout);
    assert_eq!(r["errors"]["refused"], 3);
    assert_eq!(r["sent"], 0);
    assert_eq!(
        out.stderr.trim_end(),
        format!("error: no connection to {port} could be made (refused 3)")
    );
}

#[test]
fn the_text_report_says_what_was_measured() {
    let server = Server::start(&["--mode", "discard"]);
    let addr = server.tcp_addr().to_string();
    let out = bench(&["-s", &addr, "--messages", "200", "--connections", "2"]);
    assert!(out.status.success());
    let text = &out.stdout;
    assert!(text.contains("closed loop"), "{text}");
    assert!(
        text.contains("latency:  not measured (no --echo)"),
        "{text}"
    );
    assert!(text.contains("sent:     200 messages"), "{text}");
    assert!(text.contains("errors:   none"), "{text}");
    // stderr is not a terminal: no progress bar, nothing at all.
    assert_eq!(out.stderr, "");
}

#[test]
fn bad_usage_exits_2() {
    let out = bench(&["--size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bench(&["--duration", "1", "--messages", "1"]);
    assert_eq!(out.status.code(), Some(2));
}
