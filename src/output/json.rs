//! The `json` format: one object per line,
//! `{"ts":…,"proto":…,"peer":…,"conn":…,"msg":…}`; a message that is not valid UTF-8
//! carries `msg_b64` (standard base64) instead of `msg`, so it is exact either way.

use base64::Engine as _;

use crate::message::Message;

use super::clock::Clock;

/// Appends one JSON line for `message`.
pub fn write_line(message: &Message<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts\":\"");
    clock.write(message.received_at, out);
    out.extend_from_slice(b"\",\"proto\":\"");
    out.extend_from_slice(message.proto.as_str().as_bytes());
    // A socket address's printed form never needs JSON escaping.
    out.extend_from_slice(b"\",\"peer\":\"");
    out.extend_from_slice(message.peer.as_str().as_bytes());
    out.push(b'"');
    if let Some(conn) = message.conn {
        out.extend_from_slice(b",\"conn\":");
        out.extend_from_slice(itoa::Buffer::new().format(conn).as_bytes());
    }
    if let Some(subject) = message.peer.tls_client() {
        out.extend_from_slice(b",\"tls_client\":");
        let _ = serde_json::to_writer(&mut *out, subject);
    }
    match std::str::from_utf8(message.bytes) {
        Ok(text) => {
            out.extend_from_slice(b",\"msg\":\"");
            escape_str(text, out);
            out.push(b'"');
        }
        Err(_) => {
            out.extend_from_slice(b",\"msg_b64\":\"");
            // Encoded in place at the end of `out`: no allocation per message.
            let start = out.len();
            let len = base64::encoded_len(message.bytes.len(), true).unwrap_or(0);
            out.resize(start + len, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(message.bytes, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `text` as the inside of a JSON string. Beyond what JSON requires (`"`,
/// `\\` and the C0 controls), DEL and the C1 controls (U+0080 to U+009F, among them
/// U+009B, a terminal's CSI) are escaped as `\u007f`, `\u009b`: the string stays
/// the same to a JSON reader, but `tail -f out.json` in a terminal cannot be driven
/// by a peer. Runs that need no escape are copied whole.
pub fn escape_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        // In valid UTF-8, 0xC2 is always the lead byte of U+0080..U+00BF.
        let c1 = b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n));
        if !(b < 0x20 || b == b'"' || b == b'\\' || b == 0x7F || c1) {
            i += 1;
            continue;
        }
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        let (code, width) = if c1 {
            (bytes.get(i + 1).copied().unwrap_or(0), 2)
        } else {
            (b, 1)
        };
        match code {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(code >> 4)]);
                out.push(HEX[usize::from(code & 0xF)]);
            }
        }
        i += width;
        start = i;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Peer, Proto};
    use std::time::{Duration, UNIX_EPOCH};

    fn line(bytes: &[u8], conn: Option<u64>, proto: Proto) -> serde_json::Value {
        let peer = Peer::new("127.0.0.1:54321".parse().unwrap());
        let message = Message {
            proto,
            peer: &peer,
            conn,
            received_at: UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            bytes,
        };
        let mut out = Vec::new();
        write_line(&message, &mut Clock::default(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn utf8_message() {
        let v = line(b"hello \x1b\"\\", Some(17), Proto::Tcp);
        assert_eq!(v["msg"], "hello \u{1b}\"\\");
        assert_eq!(v["conn"], 17);
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["peer"], "127.0.0.1:54321");
        assert_eq!(v["ts"], "2026-11-18T11:06:40.123456Z");
        assert!(v.get("msg_b64").is_none());
    }

    #[test]
    fn del_and_c1_controls_are_escaped() {
        let mut out = Vec::new();
        escape_str(
            "a\u{7f}b\u{9b}[31m\u{80}\u{9f}\u{a0}é\u{1b}\"\\\n",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\u007fb\\u009b[31m\\u0080\\u009f\u{a0}é\\u001b\\\"\\\\\\n"
        );
        let v = line("csi \u{9b}2J del \u{7f}".as_bytes(), None, Proto::Udp);
        assert_eq!(v["msg"], "csi \u{9b}2J del \u{7f}");
    }

    proptest::proptest! {
        /// Any text comes back unchanged through a JSON reader, and what is written
        /// holds no control character of any range, raw.
        #[test]
        fn escaped_text_round_trips_and_holds_no_control(text in "\\PC*|[\u{0}-\u{a0}]*") {
            let mut out = b"\"".to_vec();
            escape_str(&text, &mut out);
            out.push(b'"');
            let written = String::from_utf8(out.clone()).unwrap();
            proptest::prop_assert!(!written.chars().any(char::is_control), "{written:?}");
            let back: String = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(back, text);
        }
    }

    #[test]
    fn binary_message_is_base64_and_udp_has_no_conn() {
        let v = line(b"\xff\x00ok", None, Proto::Udp);
        assert_eq!(v["msg_b64"], "/wBvaw==");
        assert!(v.get("msg").is_none());
        assert!(v.get("conn").is_none());
        assert_eq!(v["proto"], "udp");
    }
}
