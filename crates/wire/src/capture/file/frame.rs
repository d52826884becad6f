//! Framing primitives shared by the classic pcap and pcapng framers.
//!
//! Owns: bounds-checked integer reads in either byte order, [`Stop`] (why a
//! framer stopped), and the one place delivered records are counted.
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

/// Counts the records a framer delivered (`delivered`, the end of the
/// list it appended to): once per framing call rather than per record, so
/// that the counters are not loaded and stored around every push.
pub(super) fn count_delivered(stats: &mut ReaderStats, delivered: &[PacketRecord]) {
    let (zero, cut) = delivered.iter().fold((0u64, 0u64), |(zero, cut), r| {
        (
            zero + u64::from(r.caplen == 0),
            cut + u64::from(r.caplen < r.origlen),
        )
    });
    stats.records += delivered.len() as u64;
    stats.zero_length_packets += zero;
    stats.truncated_packets += cut;
}

/// The u32 at `at` of a fixed-size header, in either byte order: with the
/// header's size known, no bounds check is left (callers pass constant
/// offsets inside it).
#[inline(always)]
pub(super) fn field<const BE: bool, const N: usize>(h: &[u8; N], at: usize) -> u32 {
    let b: [u8; 4] = h
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_default();
    if BE {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}
