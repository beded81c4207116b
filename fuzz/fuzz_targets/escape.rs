//! The text escaper: whatever the bytes, the output is valid UTF-8 without a single
//! control character, so one message is one safe terminal line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockpool::output::text::escape;

fuzz_target!(|data: &[u8]| {
    let mut out = b"prefix ".to_vec();
    escape(data, &mut out);
    let text = std::str::from_utf8(&out).expect("escaped output is UTF-8");
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
    // Nothing is lost: only printable input is copied as it is, so the output is at
    // least as long as the input.
    assert!(out.len() >= data.len() + 7);
});
