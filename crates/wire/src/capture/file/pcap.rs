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
use super::frame::{buffer_too_big, push, word, Stop};
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
pub(super) fn frame_pcap<const BE: bool>(
    fmt: &PcapFormat,
    block: &[u8],
    mut pos: usize,
    records: &mut Vec<PacketRecord>,
    stats: &mut ReaderStats,
) -> (usize, Stop) {
    let frac_mul: u64 = if fmt.nanos { 1 } else { 1_000 };
    let hdr_len = fmt.hdr_len;
    loop {
        let rest = block.get(pos..).unwrap_or_default();
        let Some(head) = rest.get(..hdr_len) else {
            return (
                pos,
                Stop::Short {
                    part: TruncatedPart::RecordHeader,
                    needed: hdr_len as u64,
                    available: rest.len() as u64,
                    total: hdr_len,
                },
            );
        };
        let sec = word::<BE>(head, 0);
        let frac = word::<BE>(head, 4);
        let caplen = word::<BE>(head, 8);
        let origlen = word::<BE>(head, 12);
        if caplen > fmt.cap {
            return (
                pos,
                Stop::Fail(CaptureErrorKind::AbsurdLength {
                    what: "record length",
                    length: u64::from(caplen),
                    limit: u64::from(fmt.cap),
                }),
            );
        }
        let total = hdr_len.saturating_add(caplen as usize);
        if rest.len() < total {
            return (
                pos,
                Stop::Short {
                    part: TruncatedPart::RecordData,
                    needed: u64::from(caplen),
                    available: rest.len().saturating_sub(hdr_len) as u64,
                    total,
                },
            );
        }
        let Ok(data_start) = u32::try_from(pos + hdr_len) else {
            return (pos, Stop::Fail(buffer_too_big()));
        };
        let ts_nanos = u64::from(sec)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(frac).saturating_mul(frac_mul));
        push(
            records,
            stats,
            PacketRecord {
                ts_nanos,
                link_type: fmt.link_type,
                data_start,
                caplen,
                origlen,
                interface: 0,
            },
        );
        pos += total;
    }
}
