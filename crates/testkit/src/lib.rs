//! Test helpers shared by qmwatch's tests, benchmarks and generator: one
//! seedable RNG ([`rng::Rng`]) and one capture writer ([`pcap`]: classic
//! pcap and pcapng).
//!
//! Owns: writing test captures byte by byte, deterministic randomness.
//! Must not: use qmwatch's own reader or decoder (a bug there must not be
//! hidden by the same bug in the tests' view of a capture); be a
//! dependency of product code (only of tests, benches and the generator).
#![deny(unsafe_code)]

pub mod pcap;
pub mod rng;
