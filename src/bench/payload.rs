//! The bench message: the connection id and the sequence number in fixed-width hex,
//! padded to `--size`, so an echo reply says which message it answers. Printable
//! ASCII only, so it passes through `line` framing and the server's text output.

/// Bytes taken by the connection id (8 hex digits) and the sequence number (16).
pub const HEADER: usize = 24;

/// The padding byte: never a hex digit, so a reply's header is unambiguous.
const PAD: u8 = b'.';

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the message for `conn`'s `seq`-th send, `size` bytes long (at least
/// [`HEADER`]); `avoid` (the framing delimiter) never appears in the padding.
pub fn write(conn: u32, seq: u64, size: usize, avoid: u8, out: &mut Vec<u8>) {
    for shift in (0..8).rev() {
        out.push(HEX[((conn >> (shift * 4)) & 0xf) as usize]);
    }
    for shift in (0..16).rev() {
        out.push(HEX[((seq >> (shift * 4)) & 0xf) as usize]);
    }
    let pad = if avoid == PAD { b'_' } else { PAD };
    out.resize(out.len() + size.saturating_sub(HEADER), pad);
}

/// The connection id and sequence number a message (or its echo) carries.
pub fn parse(message: &[u8]) -> Option<(u32, u64)> {
    let conn = hex(message.get(..8)?)?;
    let seq = hex(message.get(8..HEADER)?)?;
    Some((u32::try_from(conn).ok()?, seq))
}

fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        write(0xdead_beef, 0x0123_4567_89ab_cdef, 40, b'\n', &mut out);
        assert_eq!(out.len(), 40);
        assert_eq!(&out[..HEADER], b"deadbeef0123456789abcdef");
        assert!(out[HEADER..].iter().all(|&b| b == b'.'));
        assert_eq!(parse(&out), Some((0xdead_beef, 0x0123_4567_89ab_cdef)));
    }

    #[test]
    fn padding_avoids_the_delimiter_and_garbage_is_rejected() {
        let mut out = Vec::new();
        write(1, 2, 30, b'.', &mut out);
        assert!(!out.contains(&b'.'));
        assert_eq!(parse(&out), Some((1, 2)));
        assert_eq!(parse(b"short"), None);
        assert_eq!(parse(b"zzzzzzzz0000000000000000"), None);
    }
}
