//! Classic pcap: the file header and the record framer.
//!
//! Owns: the six classic magic numbers (either byte order, micro- or
//! nanosecond stamps, the Kuznetzov "modified" variant), the file header's
//! snaplen and link type, and framing records of one byte order into
//! [`PacketRecord`]s.
//!
//! Must not: read from the file (the reader hands it bytes), or trust a
//! record length beyond the cap worked out from the header.

use pcap_parser::pcap::parse_pcap_header;

use super::error::{CaptureErrorKind, TruncatedPart};
use super::frame::{buffer_too_big, count_delivered, field, word, Stop};
use super::record::{PacketRecord, ReaderStats};
use super::{MAXIMUM_SNAPLEN, MAX_BLOCK_LEN};

/// Length of the classic pcap file header.
pub(super) const FILE_HEADER_LEN: usize = 24;

/// What a classic pcap file's header says about its records.
#[derive(Clone, Copy, Debug)]
pub(super) struct PcapFormat {
    /// Record stamps are seconds and nanoseconds (else microseconds).
    nanos: bool,
    /// Record header length: 16, or 24 in the "modified" format.
    hdr_len: usize,
    /// LINKTYPE_* of every record.
    pub(super) link_type: u32,
    /// Largest caplen accepted.
    cap: u32,
}

/// What a classic magic number says: (big-endian, nanoseconds, modified).
pub(super) type Magic = (bool, bool, bool);

/// The classic pcap variant of a file's first four bytes, if it is one.
pub(super) fn classic_magic(magic: [u8; 4]) -> Option<Magic> {
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => Some((false, false, false)),
        [0xa1, 0xb2, 0xc3, 0xd4] => Some((true, false, false)),
        [0x4d, 0x3c, 0xb2, 0xa1] => Some((false, true, false)),
        [0xa1, 0xb2, 0x3c, 0x4d] => Some((true, true, false)),
        [0x34, 0xcd, 0xb2, 0xa1] => Some((false, false, true)),
        [0xa1, 0xb2, 0xcd, 0x34] => Some((true, false, true)),
        _ => None,
    }
}

impl PcapFormat {
    /// The format of a classic pcap file from its whole header `head` and the
    /// variant its magic named. `supported(link_type)` says whether the caller
    /// decodes the link type. An error comes with the file offset it is at.
    pub(super) fn from_header(
        head: &[u8; FILE_HEADER_LEN],
        (be, nanos, modified): Magic,
        supported: fn(u32) -> bool,
    ) -> Result<PcapFormat, (u64, CaptureErrorKind)> {
        let (snaplen, network) = if be && modified {
            // pcap-parser does not know the byte-swapped Kuznetzov magic.
            (word::<true>(head, 16), word::<true>(head, 20))
        } else {
            match parse_pcap_header(head) {
                Ok((_, h)) => (h.snaplen, h.network.0 as u32),
                Err(_) => {
                    return Err((0, CaptureErrorKind::Malformed("invalid pcap header".into())))
                }
            }
        };
        // The upper 16 bits carry FCS-length flags (LT_LINKTYPE_EXT); the link type is
        // the low 16 bits, as in libpcap.
        let link_type = network & 0xffff;
        if !supported(link_type) {
            return Err((20, CaptureErrorKind::UnsupportedLinkType { link_type }));
        }
        // Written as a clamp: rustc 1.95.0 (LLVM 22.1) compiles the same
        // rule written as `if snaplen > MAXIMUM_SNAPLEN { snaplen.min(MAX) }
        // else { MAXIMUM_SNAPLEN }` at opt-level 3 into `snaplen.min(MAX)`,
        // which rejected every record longer than a small header snaplen
        // (or all of them, for a snaplen of 0) in release builds only.
        let cap = snaplen.clamp(MAXIMUM_SNAPLEN, MAX_BLOCK_LEN);
        Ok(PcapFormat {
            nanos,
            hdr_len: if modified { 24 } else { 16 },
            link_type,
            cap,
        })
    }
}

/// Frames classic pcap records of one byte order starting at `pos`.
// The loop runs once per packet of every classic capture, so it reads each
// header as one fixed-size array (no bounds check per field), works the
// stamp out without saturation (a u32 of seconds times 10^9 plus a u32 of
// fractions times 10^3 stays below 2^63), and counts what it delivered
// once at the end: counters in `stats` were loaded and stored around every
// push, which may call out to grow the list. Called once a block: kept out
// of line, as its callers' inlining otherwise changed with unrelated edits
// (inlined, it ran 7 instructions a packet more on small frames).
#[inline(never)]
pub(super) fn frame_pcap<const BE: bool>(
    fmt: &PcapFormat,
    block: &[u8],
    mut pos: usize,
    records: &mut Vec<PacketRecord>,
    stats: &mut ReaderStats,
) -> (usize, Stop) {
    let frac_mul: u64 = if fmt.nanos { 1 } else { 1_000 };
    let (hdr_len, cap, link_type) = (fmt.hdr_len, fmt.cap, fmt.link_type);
    let before = records.len();
    let stop = loop {
        let rest = block.get(pos..).unwrap_or_default();
        // Every header starts with the same 16 bytes; the modified format's
        // 8 more are not read.
        let Some(head) = rest.get(..hdr_len).and_then(<[u8]>::first_chunk::<16>) else {
            break Stop::Short {
                part: TruncatedPart::RecordHeader,
                needed: hdr_len as u64,
                available: rest.len() as u64,
                total: hdr_len,
            };
        };
        let field = |at: usize| field::<BE, 16>(head, at);
        let (sec, frac, caplen, origlen) = (field(0), field(4), field(8), field(12));
        if caplen > cap {
            break Stop::Fail(CaptureErrorKind::AbsurdLength {
                what: "record length",
                length: u64::from(caplen),
                limit: u64::from(cap),
            });
        }
        let total = hdr_len + caplen as usize;
        if rest.len() < total {
            break Stop::Short {
                part: TruncatedPart::RecordData,
                needed: u64::from(caplen),
                available: rest.len().saturating_sub(hdr_len) as u64,
                total,
            };
        }
        let Ok(data_start) = u32::try_from(pos + hdr_len) else {
            break Stop::Fail(buffer_too_big());
        };
        records.push(PacketRecord {
            ts_nanos: u64::from(sec) * 1_000_000_000 + u64::from(frac) * frac_mul,
            link_type,
            data_start,
            caplen,
            origlen,
            interface: 0,
        });
        pos += total;
    };
    count_delivered(stats, records.get(before..).unwrap_or_default());
    (pos, stop)
}
