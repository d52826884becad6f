//! qmwatch: a passive sensor for QMTP/QMQP mail services and relay attempts.
//!
//! Data flows one way through one module per stage:
//!
//! ```text
//! capture ─▶ decode ─▶ flow (+ reassembly) ─▶ protocol ─▶ detect ─▶ event ─▶ sink
//! ```
//!
//! [`pipeline`] runs the stages on threads joined by bounded channels.
//! [`check`] is the active side: it connects to servers itself, and hands
//! its findings to the same `event` builders.
#![deny(unsafe_code)]

pub mod audit;
pub mod capture;
pub mod check;
pub mod decode;
pub mod detect;
pub mod event;
pub mod exit;
pub mod flow;
pub mod pipeline;
#[cfg(feature = "live")]
pub mod privileges;
pub mod protocol;
pub mod sink;
pub mod synth;
