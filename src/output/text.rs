//! The `text` format: `<timestamp> <proto> <peer> <message>`, one line per message,
//! with the message escaped so the line is unambiguous and safe for a terminal.

use std::time::SystemTime;

use crate::message::{ConnId, Message};

use super::clock::Clock;

/// Appends `bytes` escaped as the spec says: `\` → `\\`, tab → `\t`, CR → `\r`, every
/// other control character (C0 including LF, DEL, and the C1 range, which terminals
/// also act on) and every byte that is not valid UTF-8 → `\xNN` per byte; printable
/// UTF-8 is kept. An escaped message never contains a newline, so a line is a message.
pub fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    // Fast path: printable ASCII without a backslash is copied as it is.
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, c) in valid.char_indices() {
            let replacement: &[u8] = match c {
                '\\' => b"\\\\",
                '\t' => b"\\t",
                '\r' => b"\\r",
                c if c.is_control() => b"",
                _ => continue,
            };
            out.extend_from_slice(&valid.as_bytes()[start..i]);
            if replacement.is_empty() {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    push_hex(b, out);
                }
            } else {
                out.extend_from_slice(replacement);
            }
            start = i + c.len_utf8();
        }
        out.extend_from_slice(&valid.as_bytes()[start..]);
        for &b in chunk.invalid() {
            push_hex(b, out);
        }
    }
}

/// Whether every byte is printable ASCII other than `\`: nothing to escape. Checked
/// 32 bytes at a time, with no early exit inside a block and the tail covered by one
/// more (overlapping) block: loops the compiler turns into a few vector
/// instructions. A byte-by-byte `all()` cost ~7 instructions per byte, most of the
/// time spent formatting a message.
fn is_plain(bytes: &[u8]) -> bool {
    all_blocks_plain::<false>(bytes)
}

/// Whether `lines` (`\n`-terminated lines, as received) hold nothing to escape but
/// their newlines: then each line as received, newline included, is its own text,
/// and a run of them is printed by copying (see `Batch::print_run`).
pub fn is_plain_lines(lines: &[u8]) -> bool {
    all_blocks_plain::<true>(lines)
}

/// [`is_plain`], with `\n` allowed when `NEWLINES` is set.
#[inline]
fn all_blocks_plain<const NEWLINES: bool>(bytes: &[u8]) -> bool {
    fn block_is_plain<const NEWLINES: bool>(block: &[u8]) -> bool {
        let mut bad = 0u8;
        for &b in block {
            let control = b < 0x20 && !(NEWLINES && b == b'\n');
            bad |= u8::from(control) | u8::from(b >= 0x7f) | u8::from(b == b'\\');
        }
        bad == 0
    }
    if bytes.len() < 32 {
        return block_is_plain::<NEWLINES>(bytes);
    }
    bytes.chunks_exact(32).all(block_is_plain::<NEWLINES>)
        && bytes
            .rchunks_exact(32)
            .next()
            .is_none_or(block_is_plain::<NEWLINES>)
}

fn push_hex(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]);
}

/// The start of a text line, `<timestamp> <proto> <peer> `, kept from the last TCP
/// message. The messages cut from one read share their connection and receive time,
/// so a worker copies one formatted prefix per message instead of assembling four
/// fields (and asking the clock) each time. UDP datagrams, each from its own read
/// and possibly its own peer, are formatted whole.
#[derive(Debug, Default)]
pub struct LineStart {
    /// The connection (ids are never reused) and receive time `text` was made for.
    key: Option<(ConnId, SystemTime)>,
    text: Vec<u8>,
}

impl LineStart {
    /// Appends the same line as [`write_line`].
    #[inline]
    pub fn write_line(&mut self, message: &Message<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
        if message.conn.is_none() {
            return write_line(message, clock, out);
        }
        let start = self.start(message, clock);
        // One capacity check for the usual case of a message with nothing to escape.
        out.reserve(start.len() + message.bytes.len() + 1);
        out.extend_from_slice(start);
        escape(message.bytes, out);
        out.push(b'\n');
    }

    /// `<timestamp> <proto> <peer> ` for a TCP `message`: formatted when its
    /// connection or receive time differs from the last one's, else kept.
    #[inline]
    pub fn start(&mut self, message: &Message<'_>, clock: &mut Clock) -> &[u8] {
        let key = message.conn.map(|conn| (conn, message.received_at));
        if key.is_none() || self.key != key {
            self.text.clear();
            write_start(message, clock, &mut self.text);
            self.key = key;
        }
        &self.text
    }
}

/// Appends one text line for `message`.
pub fn write_line(message: &Message<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
    write_start(message, clock, out);
    escape(message.bytes, out);
    out.push(b'\n');
}

/// `<timestamp> <proto> <peer> `
fn write_start(message: &Message<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
    clock.write(message.received_at, out);
    out.push(b' ');
    out.extend_from_slice(message.proto.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.peer.as_str().as_bytes());
    out.push(b' ');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn esc(b: &[u8]) -> String {
        let mut out = Vec::new();
        escape(b, &mut out);
        String::from_utf8(out).expect("escape output is UTF-8")
    }

    #[test]
    fn escaping_rules() {
        assert_eq!(esc(b"hello world"), "hello world");
        assert_eq!(esc(b"a\\b"), "a\\\\b");
        assert_eq!(esc(b"a\tb\rc\nd"), "a\\tb\\rc\\x0ad");
        assert_eq!(esc(b"nul\0"), "nul\\x00");
        assert_eq!(esc(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(esc(b"del\x7f"), "del\\x7f");
        assert_eq!(esc(b"bad\xff\xfe"), "bad\\xff\\xfe");
        assert_eq!(esc("héllo ✓".as_bytes()), "héllo ✓");
        assert_eq!(esc("csi\u{9b}".as_bytes()), "csi\\xc2\\x9b");
        assert_eq!(esc(b"\xe2\x9c"), "\\xe2\\x9c");
    }

    #[test]
    fn plain_check_finds_a_byte_to_escape_anywhere() {
        for len in [0, 1, 31, 32, 33, 64, 100] {
            let clean = vec![b'a'; len];
            assert!(is_plain(&clean));
            for at in 0..len {
                for bad in [0u8, b'\n', b'\\', 0x7f, 0x80, 0xff] {
                    let mut dirty = clean.clone();
                    dirty[at] = bad;
                    assert!(!is_plain(&dirty), "len {len}, {bad:#x} at {at}");
                }
            }
        }
    }

    proptest! {
        /// The kept line start never leaks into a line of another connection, peer,
        /// protocol or receive time: every line is what `write_line` makes alone. (A
        /// connection has one peer; datagrams come from any.)
        #[test]
        fn kept_line_start_writes_the_same_lines(
            messages in proptest::collection::vec(
                (0u64..3, 0u16..3, 0u64..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)),
                1..40,
            )
        ) {
            use crate::message::{Peer, Proto};
            use std::time::{Duration, UNIX_EPOCH};
            let peers: Vec<Peer> = (0..3u16)
                .map(|p| Peer::new(([127, 0, 0, 1], 4000 + p).into()))
                .collect();
            let (mut start, mut kept_clock, mut clock) =
                (LineStart::default(), Clock::default(), Clock::default());
            let (mut kept, mut fresh) = (Vec::new(), Vec::new());
            for (conn, peer, micros, udp, bytes) in &messages {
                let message = Message {
                    proto: if *udp { Proto::Udp } else { Proto::Tcp },
                    peer: &peers[if *udp { usize::from(*peer) } else { *conn as usize }],
                    conn: (!*udp).then_some(*conn),
                    received_at: UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_000 + micros),
                    bytes,
                };
                start.write_line(&message, &mut kept_clock, &mut kept);
                write_line(&message, &mut clock, &mut fresh);
            }
            prop_assert_eq!(String::from_utf8_lossy(&kept), String::from_utf8_lossy(&fresh));
        }

        #[test]
        fn escaped_output_is_printable_utf8_without_newlines(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = esc(&bytes);
            prop_assert!(!s.chars().any(char::is_control), "{s:?}");
        }

        #[test]
        fn escaping_is_reversible(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unescape(&esc(&bytes)), bytes);
        }
    }

    /// The inverse of `escape`, to show it loses nothing.
    fn unescape(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                match b[i + 1] {
                    b'\\' => out.push(b'\\'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'x' => {
                        let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 2;
                    }
                    other => panic!("bad escape {other}"),
                }
                i += 2;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }
}
