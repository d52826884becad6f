//! cargo-fuzz target `flow_table`: see `harness::flow_table` for the input format and the
//! checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::flow_table(data));
