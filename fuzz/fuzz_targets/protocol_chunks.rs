//! cargo-fuzz target `protocol_chunks`: see `harness::protocol_chunks` for the input format and
//! the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::protocol_chunks(data));
