//! The octet decoder: any split gives the same frames, memory stays bounded.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sockpool::frame::Framing;

fuzz_target!(|data: &[u8]| {
    if let Some((config, frames)) = common::check_stream(Framing::Octet, data) {
        common::check_round_trip(&config, &frames);
    }
});
