//! Output formats: text escaping and line shape, json exactness, `msg_b64`, `conn`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Server, parse_json, parse_text};

/// Control bytes, invalid UTF-8 and backslashes, as sent and as `text` must show them.
const CASES: &[(&[u8], &str)] = &[
    (b"invalid \xff utf8", "invalid \\xff utf8"),
    (b"nul \x00 byte", "nul \\x00 byte"),
    (b"ansi \x1b[31mred\x1b[0m", "ansi \\x1b[31mred\\x1b[0m"),
    (b"back\\slash", "back\\\\slash"),
    (b"tab\there", "tab\\there"),
    (b"cr\rinside", "cr\\rinside"),
    (b"bell \x07 del \x7f", "bell \\x07 del \\x7f"),
    ("printable ünïcødé ✓".as_bytes(), "printable ünïcødé ✓"),
];

fn wire() -> Vec<u8> {
    let mut wire = Vec::new();
    for (bytes, _) in CASES {
        wire.extend_from_slice(bytes);
        wire.push(b'\n');
    }
    wire
}

#[test]
fn text_escapes_control_bytes_and_invalid_utf8() {
    let server = Server::start(&[]);
    let mut c = server.tcp();
    c.send(&wire());
    let lines = server.lines(CASES.len());
    for (line, (_, want)) in lines.iter().zip(CASES) {
        assert_eq!(parse_text(line).msg, *want, "line {line:?}");
        assert!(
            !line.chars().any(char::is_control),
            "raw control in {line:?}"
        );
    }
}

#[test]
fn text_escapes_udp_datagrams_too() {
    let server = Server::start(&[]);
    let socket = server.udp();
    for (bytes, _) in CASES {
        socket.send(bytes).unwrap();
    }
    let lines = server.lines(CASES.len());
    for (line, (_, want)) in lines.iter().zip(CASES) {
        let t = parse_text(line);
        assert_eq!(t.proto, "udp");
        assert_eq!(t.msg, *want, "line {line:?}");
    }
}

#[test]
fn json_is_exact_with_msg_b64_only_for_invalid_utf8() {
    let server = Server::start(&["--format", "json"]);
    let mut c = server.tcp();
    c.send(&wire());
    let lines = server.lines(CASES.len());
    for (line, (bytes, _)) in lines.iter().zip(CASES) {
        let j = parse_json(line);
        assert_eq!(j.bytes, *bytes, "line {line}");
        let invalid = std::str::from_utf8(bytes).is_err();
        assert_eq!(j.b64, invalid, "msg_b64 iff invalid UTF-8: {line}");
        // JSON forbids raw C0 controls in strings (DEL is allowed and kept).
        assert!(!line.chars().any(|c| c < ' '), "raw control in {line:?}");
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS.ffffffZ` (RFC 3339, UTC, exactly six fraction digits)
/// into microseconds since the epoch; panics on any other shape.
fn parse_ts(ts: &str) -> i64 {
    let b = ts.as_bytes();
    assert_eq!(b.len(), 27, "timestamp length: {ts:?}");
    for (i, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        assert_eq!(b[i], sep, "byte {i} of {ts:?}");
    }
    let num = |from: usize, to: usize| -> i64 {
        let s = &ts[from..to];
        assert!(s.bytes().all(|c| c.is_ascii_digit()), "digits in {ts:?}");
        s.parse().expect("digits parse")
    };
    let (y, mo, d) = (num(0, 4), num(5, 7), num(8, 10));
    let (h, mi, s) = (num(11, 13), num(14, 16), num(17, 19));
    let micros = num(20, 26);
    assert!((1..=12).contains(&mo) && (1..=31).contains(&d), "{ts:?}");
    assert!(h < 24 && mi < 60 && s < 61, "{ts:?}");
    ((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + micros
}

fn now_micros() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_micros()).expect("micros fit in i64")
}

#[test]
fn timestamp_parser_knows_the_calendar() {
    assert_eq!(parse_ts("1970-01-01T00:00:00.000000Z"), 0);
    assert_eq!(
        parse_ts("2026-11-18T11:06:40.000042Z"),
        1_795_000_000_000_042
    );
    assert_eq!(parse_ts("2000-03-01T00:00:00.500000Z"), 951_868_800_500_000);
}

#[test]
fn text_line_shape() {
    let server = Server::start(&[]);
    let mut c = server.tcp();
    let socket = server.udp();
    let slack = i64::try_from(Duration::from_secs(2).as_micros()).unwrap();
    let before = now_micros();
    c.send(b"hello world with  spaces\n");
    let tcp_line = server.line();
    socket.send(b"over udp").unwrap();
    let udp_line = server.line();
    let after = now_micros();

    let t = parse_text(&tcp_line);
    let ts = parse_ts(&t.ts);
    assert!(
        before - slack <= ts && ts <= after + slack,
        "timestamp {} is not now",
        t.ts
    );
    assert_eq!(t.proto, "tcp");
    assert_eq!(t.peer, c.local().to_string());
    assert!(t.peer.starts_with("127.0.0.1:"));
    assert_eq!(t.msg, "hello world with  spaces");
    assert_eq!(
        tcp_line,
        format!("{} tcp {} hello world with  spaces", t.ts, c.local())
    );

    let u = parse_text(&udp_line);
    parse_ts(&u.ts);
    assert_eq!(
        udp_line,
        format!("{} udp {} over udp", u.ts, socket.local_addr().unwrap())
    );
}

#[test]
fn json_conn_ids_identify_connections_and_are_absent_for_udp() {
    let server = Server::start(&["--format", "json"]);
    let mut a = server.tcp();
    a.send(b"a1\na2\n");
    let a_lines = server.lines(2);
    let mut b = server.tcp();
    b.send(b"b1\n");
    let b_line = server.line();
    let socket = server.udp();
    socket.send(b"u1").unwrap();
    let u_line = server.line();

    let a1 = parse_json(&a_lines[0]);
    let a2 = parse_json(&a_lines[1]);
    let b1 = parse_json(&b_line);
    let u1 = parse_json(&u_line);
    assert!(a1.conn.is_some(), "{}", a_lines[0]);
    assert_eq!(a1.conn, a2.conn);
    assert!(b1.conn.is_some());
    assert_ne!(a1.conn, b1.conn);
    assert_eq!(a1.peer, a.local().to_string());
    assert_eq!(b1.peer, b.local().to_string());
    assert_eq!(u1.conn, None, "{u_line}");
    assert!(!u_line.contains("\"conn\""), "{u_line}");
    for j in [&a1, &b1, &u1] {
        parse_ts(&j.ts);
    }
    // The documented key order.
    assert!(
        a_lines[0].starts_with("{\"ts\":\"")
            && a_lines[0].contains("\",\"proto\":\"tcp\",\"peer\":\""),
        "{}",
        a_lines[0]
    );
}
