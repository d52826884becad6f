//! qmwatch-sensor: flows, reassembly, detection, events, outputs, pipeline.
//!
//! ```text
//! (qmwatch-wire) ─▶ flow (+ reassembly) ─▶ (qmwatch-proto) ─▶ detect ─findings─▶ event ─▶ sink
//! ```
//!
//! `detect` produces typed [`finding`]s (severity, rule and verdict decided
//! there); `event` only maps them to ECS JSON and never imports `detect`.
//!
//! [`pipeline`] runs the stages on threads joined by bounded channels.
//! Must not: parse command lines or know the binary (`qmwatch`); depend on
//! the generator or test kits.
#![deny(unsafe_code)]

pub mod detect;
pub mod event;
pub mod finding;
pub mod flow;
pub mod pipeline;
pub mod sink;
