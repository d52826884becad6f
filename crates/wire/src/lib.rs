//! qmwatch-wire: capture files and live interfaces, and frame decode.
//!
//! ```text
//! capture (blocks of records) ─▶ decode (link, IP, TCP → Segment; defrag)
//! ```
//!
//! Owns: reading pcap/pcapng in pooled blocks or mapped windows, libpcap
//! handles (feature `live`), link/IP/TCP decode into offset-based
//! [`decode::Segment`]s, IP defragmentation. Must not: know flows or mail, look at TCP payload.
#![deny(unsafe_code)]

pub mod capture;
pub mod decode;
