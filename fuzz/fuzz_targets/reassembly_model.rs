//! cargo-fuzz target `reassembly_model`: see `harness::reassembly_model` for the input format and
//! the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::reassembly_model(data));
