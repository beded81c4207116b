//! The text escaper: whatever the bytes, the output is valid UTF-8 without a single
//! control character (so one message is one safe terminal line), and it is
//! unambiguous: unescaping it gives back exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockpool::output::text::escape;

/// The inverse of `escape`: `\\`, `\t`, `\r`, `\xNN`, and every other character as
/// it is. `None` for an escape `escape` never writes.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            't' => out.push(b'\t'),
            'r' => out.push(b'\r'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                let is_lower_hex = hex.len() == 2
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !is_lower_hex {
                    return None;
                }
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let mut out = b"prefix ".to_vec();
    escape(data, &mut out);
    let text = std::str::from_utf8(&out).expect("escaped output is UTF-8");
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
    let escaped = text.strip_prefix("prefix ").expect("appended, prefix kept");
    assert_eq!(
        unescape(escaped).as_deref(),
        Some(data),
        "unescaping {escaped:?}"
    );
});
