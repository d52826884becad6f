//! The engine-independent half of qmwatch's Suricata 8 app-layer plugin.
//!
//! Owns: what the plugin ([`crates/qmwatch-suricata`], GPL-2.0-only, built
//! apart) does with the bytes Suricata hands it, minus the FFI — deciding
//! from a direction's first bytes whether a flow is QMTP or QMQP
//! ([`probe`]), driving one [`qmwatch_proto::session::Session`] per flow
//! from Suricata's reassembled stream (both directions, any chunking, gaps)
//! and turning its records into app-layer transactions ([`flow`], [`tx`]),
//! the rule-keyword buffers of a transaction ([`tx::Tx`]'s buffer methods),
//! the EVE record's layout ([`eve`]) and the app-layer event numbering of
//! [`qmwatch_proto::AnomalyKind`] ([`events`]).
//!
//! Must not: link or name anything of Suricata (this crate keeps the
//! project's licence and builds and tests at the root without it), parse
//! QMTP/QMQP itself (that is `qmwatch-proto`'s, used as is), apply site
//! policy (trusted networks, local domains: rules do that in Suricata), or
//! panic on any input: every entry point is called from C, and the plugin's
//! `catch_unwind` is a last resort, not the plan (`tests/no_panic.rs`).
#![deny(unsafe_code)]

pub mod eve;
pub mod events;
pub mod flow;
pub mod probe;
pub mod tx;

pub use flow::FlowState;
pub use probe::{probe, ProbeResult};
pub use qmwatch_proto::Protocol;
pub use tx::Tx;
