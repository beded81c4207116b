//! The PROXY protocol header parser: never panics; a header is never longer than
//! what was received nor than the protocol allows; and reading the same bytes in
//! any number of pieces gives the same answer, decided as soon as the header is
//! complete and never changed by what follows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockpool::net::proxy::{MAX_HEADER, Parsed, V2_SIGNATURE, parse};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a start: as given, or behind the v2 signature (which
    // the fuzzer would take long to find), or behind `PROXY `.
    let Some((&start, rest)) = data.split_first() else {
        return;
    };
    let input = match start % 3 {
        0 => rest.to_vec(),
        1 => [V2_SIGNATURE.as_slice(), rest].concat(),
        _ => [b"PROXY ".as_slice(), rest].concat(),
    };
    let whole = parse(&input);
    if let Parsed::Header { len, .. } | Parsed::Local { len } = whole {
        assert!(len <= input.len() && len <= MAX_HEADER);
    }
    let mut decided = None;
    for cut in 0..=input.len() {
        let got = parse(&input[..cut]);
        match decided {
            Some(answer) => assert_eq!(got, answer, "cut at {cut}"),
            None if got != Parsed::Incomplete => {
                if let Parsed::Header { len, .. } | Parsed::Local { len } = got {
                    assert_eq!(len, cut, "decided as soon as complete");
                }
                decided = Some(got);
            }
            None => {}
        }
    }
    assert_eq!(decided.unwrap_or(Parsed::Incomplete), whole);
});
