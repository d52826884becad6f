//! cargo-fuzz target `decode_frame`: see `harness::decode_frame` for the input format and
//! the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::decode_frame(data));
