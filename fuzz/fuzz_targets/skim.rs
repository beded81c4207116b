//! Line framing's skim (the count-only path of discard mode) and decode_run (the
//! run of plain lines print mode formats in one loop) agree with decode.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sockpool::frame::Framing;

fuzz_target!(|data: &[u8]| {
    if let Some(case) = common::case(Framing::Line, data) {
        common::check_skim(&case);
        common::check_run(&case);
    }
});
