// qmwatch Suricata plugin. SPDX-License-Identifier: GPL-2.0-only
//
//! qmwatch's QMTP/QMQP parsers as a Suricata 8 app-layer plugin.
//!
//! Owns: the FFI between Suricata and `qmwatch-suricata-core` — plugin
//! registration of the `qmtp` and `qmqp` protocols ([`plugin`]), protocol
//! detection, the per-flow state and transactions Suricata drives
//! ([`parser`]), the EVE logger ([`log`]) and the rule keywords
//! ([`detect`]).
//!
//! Must not: parse, decide or lay out anything itself (the core crate and
//! `qmwatch-proto` do, and are tested without Suricata), or let a panic
//! cross into C: every `extern "C"` function body runs inside [`guard`].

pub mod detect;
pub mod log;
pub mod parser;
pub mod plugin;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning a panic into `default`: unwinding into Suricata's C
/// frames would abort the sensor. The core is written not to panic (its
/// no-panic test); this is the belt to those braces.
pub(crate) fn guard<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}
