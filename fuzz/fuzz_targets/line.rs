//! The line decoder: any split gives the same frames, memory stays bounded.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sockpool::frame::Framing;

fuzz_target!(|data: &[u8]| {
    let _ = common::check_stream(Framing::Line, data);
});
