//! cargo-fuzz target `capture_reader`: see `harness::capture_reader` for the input format and
//! the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::capture_reader(data));
