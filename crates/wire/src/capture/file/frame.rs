//! Framing primitives shared by the classic pcap and pcapng framers.
//!
//! Owns: bounds-checked integer reads in either byte order, [`Stop`] (why a
//! framer stopped), and the one place a delivered record is counted.
//!
//! Must not: panic or read out of range: every read returns 0 past the end,
//! and callers check lengths first.

use super::error::{CaptureErrorKind, TruncatedPart};
use super::record::{PacketRecord, ReaderStats};

/// Reads a little- or big-endian u32 at `at`; 0 if out of range (callers check lengths first).
#[inline(always)]
pub(super) fn word<const BE: bool>(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.wrapping_add(4)) {
        Some(&[a, b1, c, d]) => {
            if BE {
                u32::from_be_bytes([a, b1, c, d])
            } else {
                u32::from_le_bytes([a, b1, c, d])
            }
        }
        _ => 0,
    }
}

#[inline(always)]
pub(super) fn half<const BE: bool>(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[a, b1]) => {
            if BE {
                u16::from_be_bytes([a, b1])
            } else {
                u16::from_le_bytes([a, b1])
            }
        }
        _ => 0,
    }
}

#[inline(always)]
pub(super) fn word_dyn(be: bool, b: &[u8], at: usize) -> u32 {
    if be {
        word::<true>(b, at)
    } else {
        word::<false>(b, at)
    }
}

/// Why framing stopped.
pub(super) enum Stop {
    /// Not enough bytes for the next header/record/block; `total` bytes from `pos` are
    /// needed to make progress. `part/needed/available` describe it if the file ends here.
    Short {
        part: TruncatedPart,
        needed: u64,
        available: u64,
        total: usize,
    },
    /// The record/block at `pos` is bad.
    Fail(CaptureErrorKind),
    /// A Section Header Block switched the byte order (pcapng only); continue at `pos`.
    Switch,
}

pub(super) fn buffer_too_big() -> CaptureErrorKind {
    CaptureErrorKind::Malformed("block buffer offset exceeds u32".into())
}

#[inline(always)]
pub(super) fn push(records: &mut Vec<PacketRecord>, stats: &mut ReaderStats, rec: PacketRecord) {
    stats.records += 1;
    stats.zero_length_packets += u64::from(rec.caplen == 0);
    stats.truncated_packets += u64::from(rec.caplen < rec.origlen);
    records.push(rec);
}
