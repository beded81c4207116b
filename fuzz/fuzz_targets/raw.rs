//! The raw decoder: each non-empty read is exactly one frame, nothing is held.
#![no_main]

mod common;

use common::Owned;
use libfuzzer_sys::fuzz_target;
use sockpool::frame::{Framing, Oversize};

fuzz_target!(|data: &[u8]| {
    let Some(case) = common::case(Framing::Raw, data) else {
        return;
    };
    let chunks = common::split(case.stream, &case.cuts);
    let max = case.config.max_frame;
    let expected: Vec<Owned> = chunks
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| match (c.len() > max, case.config.oversize) {
            (false, _) => Owned::Message(c.to_vec()),
            (true, Oversize::Drop) => Owned::Oversize(c.len() as u64),
            (true, Oversize::Truncate) => Owned::Truncated(c[..max].to_vec(), c.len() as u64),
        })
        .collect();
    assert_eq!(common::decode(&case.config, &chunks), expected);
});
