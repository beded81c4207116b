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
            out.extend_from_slice(b",\"msg\":");
            // Writing into a Vec cannot fail, and a &str always serialises.
            let _ = serde_json::to_writer(&mut *out, text);
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
    fn binary_message_is_base64_and_udp_has_no_conn() {
        let v = line(b"\xff\x00ok", None, Proto::Udp);
        assert_eq!(v["msg_b64"], "/wBvaw==");
        assert!(v.get("msg").is_none());
        assert!(v.get("conn").is_none());
        assert_eq!(v["proto"], "udp");
    }
}
