//! pcapng: sections, interfaces and the block framer.
//!
//! Owns: the pcapng block layout (Section Header, Interface Description,
//! Enhanced/obsolete/Simple Packet blocks; every other block is skipped and
//! counted), the byte order of each section, each interface's link type and
//! timestamp resolution and offset, and framing blocks into [`PacketRecord`]s.
//!
//! Must not: read from the file (the reader hands it bytes), or trust a block
//! length before it is checked against [`MAX_BLOCK_LEN`] and its trailer.

use pcap_parser::pcapng::{
    parse_block_be, parse_block_le, parse_sectionheaderblock, Block, OptionCode,
};

use std::sync::Arc;

use super::error::{CaptureErrorKind, TruncatedPart};
use super::frame::{buffer_too_big, count_delivered, field, word, word_dyn, Stop};
use super::record::{PacketRecord, ReaderStats};
use super::{MAX_BLOCK_LEN, MAX_INTERFACES};

/// The Section Header Block type, also the pcapng file magic.
pub(super) const SHB_TYPE: u32 = 0x0A0D_0D0A;
pub(super) const IDB_TYPE: u32 = 1;
pub(super) const PB_TYPE: u32 = 2;
pub(super) const SPB_TYPE: u32 = 3;
pub(super) const EPB_TYPE: u32 = 6;

/// How raw pcapng timestamp units become nanoseconds.
#[derive(Clone, Copy, Debug)]
enum TsScale {
    /// units are 10^-k s with k <= 9: multiply.
    Mul(u64),
    /// units are 10^-k s with k > 9: divide (0 = finer than 10^-28: always 0).
    Div(u64),
    /// units are 2^-k s.
    Shift(u32),
}

impl TsScale {
    fn from_tsresol(tsresol: u8) -> TsScale {
        let exp = u32::from(tsresol & 0x7f);
        if tsresol & 0x80 != 0 {
            TsScale::Shift(exp)
        } else if exp <= 9 {
            TsScale::Mul(10u64.pow(9u32.saturating_sub(exp)))
        } else {
            TsScale::Div(10u64.checked_pow(exp.saturating_sub(9)).unwrap_or(0))
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: u32,
    supported: bool,
    scale: TsScale,
    /// `if_tsoffset` in nanoseconds (i128: `i64::MAX` seconds must not wrap).
    offset_nanos: i128,
}

impl Interface {
    // Inlined: called for every packet block.
    #[inline(always)]
    fn nanos(&self, raw: u64) -> u64 {
        let base = match self.scale {
            TsScale::Mul(m) => raw.saturating_mul(m),
            TsScale::Div(d) => raw.checked_div(d).unwrap_or(0),
            TsScale::Shift(s) => {
                let wide = u128::from(raw).saturating_mul(1_000_000_000);
                u64::try_from(wide.checked_shr(s).unwrap_or(0)).unwrap_or(u64::MAX)
            }
        };
        if self.offset_nanos == 0 {
            return base;
        }
        let shifted = i128::from(base).saturating_add(self.offset_nanos);
        u64::try_from(shifted.max(0)).unwrap_or(u64::MAX)
    }
}

/// The framing state of a pcapng file: the current section's byte order and
/// interfaces, and the last timestamp delivered (for Simple Packet Blocks).
#[derive(Clone, Debug)]
pub(super) struct NgState {
    pub(super) big_endian: bool,
    /// Shared, so that a copy of the state (the mapped reader keeps one per
    /// window, to frame it again if the file is cut meanwhile) costs no
    /// copy of up to `MAX_INTERFACES` entries; an interface added after a
    /// copy copies the list once.
    interfaces: Arc<Vec<Interface>>,
    last_ts: u64,
}

pub(super) fn check_block_len(len: u32) -> Result<(), CaptureErrorKind> {
    if len > MAX_BLOCK_LEN {
        Err(CaptureErrorKind::AbsurdLength {
            what: "block length",
            length: u64::from(len),
            limit: u64::from(MAX_BLOCK_LEN),
        })
    } else if len < 12 {
        Err(CaptureErrorKind::Malformed(format!(
            "block length {len} is less than 12"
        )))
    } else if len % 4 != 0 {
        Err(CaptureErrorKind::Malformed(format!(
            "block length {len} is not a multiple of 4"
        )))
    } else {
        Ok(())
    }
}

/// Byte order of a Section Header Block from its byte-order magic (bytes 8..12).
pub(super) fn shb_big_endian(head: &[u8]) -> Result<bool, CaptureErrorKind> {
    match head.get(8..12) {
        Some([0x1a, 0x2b, 0x3c, 0x4d]) => Ok(true),
        Some([0x4d, 0x3c, 0x2b, 0x1a]) => Ok(false),
        Some(&[a, b, c, d]) => Err(CaptureErrorKind::Malformed(format!(
            "section header block has bad byte-order magic 0x{:08x}",
            u32::from_be_bytes([a, b, c, d])
        ))),
        _ => Err(CaptureErrorKind::Malformed(
            "section header block too short".into(),
        )),
    }
}

/// Checks the length fields of a whole Section Header Block (`blk`) and returns its
/// byte order.
pub(super) fn check_shb(blk: &[u8]) -> Result<bool, CaptureErrorKind> {
    let be = shb_big_endian(blk)?;
    let len = word_dyn(be, blk, 4);
    check_block_len(len)?;
    if len < 28 {
        return Err(CaptureErrorKind::Malformed(format!(
            "section header block length {len} is less than 28"
        )));
    }
    let trailer = word_dyn(be, blk, (len as usize).saturating_sub(4));
    if trailer != len || blk.len() != len as usize {
        return Err(CaptureErrorKind::Malformed(format!(
            "block trailing length {trailer} differs from leading length {len}"
        )));
    }
    match parse_sectionheaderblock(blk) {
        Ok((_, shb)) => {
            if shb.major_version != 1 {
                return Err(CaptureErrorKind::Malformed(format!(
                    "unsupported pcapng version {}.{}",
                    shb.major_version, shb.minor_version
                )));
            }
            Ok(shb.big_endian())
        }
        Err(_) => Err(CaptureErrorKind::Malformed(
            "invalid section header block".into(),
        )),
    }
}

impl NgState {
    /// The state at the start of a section of the given byte order.
    pub(super) fn new(big_endian: bool) -> NgState {
        NgState {
            big_endian,
            interfaces: Arc::default(),
            last_ts: 0,
        }
    }

    fn add_interface<const BE: bool>(
        &mut self,
        blk: &[u8],
        supported: fn(u32) -> bool,
    ) -> Result<(), CaptureErrorKind> {
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(CaptureErrorKind::Malformed(format!(
                "more than {MAX_INTERFACES} interfaces in one section"
            )));
        }
        let parsed = if BE {
            parse_block_be(blk)
        } else {
            parse_block_le(blk)
        };
        let idb = match parsed {
            Ok((_, Block::InterfaceDescription(idb))) => idb,
            _ => {
                return Err(CaptureErrorKind::Malformed(
                    "invalid interface description block".into(),
                ))
            }
        };
        let link_type = u32::try_from(idb.linktype.0).unwrap_or(u32::MAX);
        // pcap-parser 0.17 reads if_tsoffset little-endian even in big-endian sections
        // and its ts_resolution() rejects every power-of-2 resolution, so both are
        // decoded here from the raw fields.
        let mut offset_secs: i64 = 0;
        for opt in &idb.options {
            if opt.code == OptionCode::IfTsoffset {
                if let Some(&[a, b, c, d, e, f, g, h]) = opt.value().get(..8) {
                    let bytes = [a, b, c, d, e, f, g, h];
                    offset_secs = if BE {
                        i64::from_be_bytes(bytes)
                    } else {
                        i64::from_le_bytes(bytes)
                    };
                }
            }
        }
        Arc::make_mut(&mut self.interfaces).push(Interface {
            link_type,
            supported: supported(link_type),
            scale: TsScale::from_tsresol(idb.if_tsresol),
            offset_nanos: i128::from(offset_secs).saturating_mul(1_000_000_000),
        });
        Ok(())
    }

    /// Frames pcapng blocks of the current section's byte order (`BE`, which
    /// must be `self.big_endian`) starting at `pos`, until the bytes run out, a
    /// block is bad, or a Section Header Block switches the byte order
    /// ([`Stop::Switch`]: the caller goes on at the returned position with the
    /// other `BE`).
    pub(super) fn frame<const BE: bool>(
        &mut self,
        block: &[u8],
        mut pos: usize,
        supported: fn(u32) -> bool,
        records: &mut Vec<PacketRecord>,
        stats: &mut ReaderStats,
    ) -> (usize, Stop) {
        let before = records.len();
        let stop = loop {
            let rest = block.get(pos..).unwrap_or_default();
            match self.take_block::<BE>(rest, pos, supported, records, stats) {
                Ok(len) => pos += len,
                Err(stop) => break stop,
            }
            if self.big_endian != BE {
                break Stop::Switch;
            }
        };
        count_delivered(stats, records.get(before..).unwrap_or_default());
        (pos, stop)
    }

    /// Takes the one block at the start of `rest` (offset `pos` of the block
    /// buffer): checks its lengths, then delivers its packet, describes its
    /// interface, starts a section, or counts it as skipped. Returns its
    /// length, or why framing stops before it.
    #[inline(always)]
    fn take_block<const BE: bool>(
        &mut self,
        rest: &[u8],
        pos: usize,
        supported: fn(u32) -> bool,
        records: &mut Vec<PacketRecord>,
        stats: &mut ReaderStats,
    ) -> Result<usize, Stop> {
        let Some(head) = rest.first_chunk::<12>() else {
            return Err(Stop::Short {
                part: TruncatedPart::BlockHeader,
                needed: 12,
                available: rest.len() as u64,
                total: 12,
            });
        };
        let btype = field::<BE, 12>(head, 0);
        if btype == SHB_TYPE {
            // Its byte order is its own, not necessarily `BE`.
            return self.start_section(rest, head);
        }
        let len = field::<BE, 12>(head, 4);
        check_block_len(len).map_err(Stop::Fail)?;
        let Some(blk) = rest.get(..len as usize) else {
            return Err(short_block(len, rest.len()));
        };
        let trailer = word::<BE>(blk, blk.len().saturating_sub(4));
        if trailer != len {
            return Err(Stop::Fail(CaptureErrorKind::Malformed(format!(
                "block trailing length {trailer} differs from leading length {len}"
            ))));
        }
        // Nearly every block is an Enhanced Packet Block: tested first (a
        // match went through a jump table).
        if btype == EPB_TYPE {
            self.packet::<BE>(btype, blk, len, pos, records, stats)?;
            return Ok(blk.len());
        }
        match btype {
            PB_TYPE => self.packet::<BE>(btype, blk, len, pos, records, stats)?,
            SPB_TYPE => self.simple_packet::<BE>(blk, len, pos, records, stats)?,
            IDB_TYPE => self
                .add_interface::<BE>(blk, supported)
                .map_err(Stop::Fail)?,
            _ => stats.skipped_unknown_blocks += 1,
        }
        Ok(blk.len())
    }

    /// A Section Header Block at the start of `rest` (`head` its first 12
    /// bytes): checks it, takes its byte order and forgets the interfaces of
    /// the section before. Returns its length.
    fn start_section(&mut self, rest: &[u8], head: &[u8; 12]) -> Result<usize, Stop> {
        let be = shb_big_endian(head).map_err(Stop::Fail)?;
        let len = word_dyn(be, head, 4);
        check_block_len(len).map_err(Stop::Fail)?;
        let Some(blk) = rest.get(..len as usize) else {
            return Err(short_block(len, rest.len()));
        };
        self.big_endian = check_shb(blk).map_err(Stop::Fail)?;
        self.interfaces = Arc::default();
        Ok(blk.len())
    }

    /// An Enhanced (`EPB_TYPE`) or obsolete (`PB_TYPE`) Packet Block `blk` of
    /// length `len` at buffer offset `pos`: delivers its packet, or counts it
    /// as skipped if its interface is unknown or of an unsupported link type.
    #[inline(always)]
    fn packet<const BE: bool>(
        &mut self,
        btype: u32,
        blk: &[u8],
        len: u32,
        pos: usize,
        records: &mut Vec<PacketRecord>,
        stats: &mut ReaderStats,
    ) -> Result<(), Stop> {
        // type, len, interface, ts_high, ts_low, caplen, origlen, data.., len
        // (the fields read from one fixed-size view: no check per field).
        let Some(h) = blk.first_chunk::<28>().filter(|_| blk.len() >= 32) else {
            return Err(Stop::Fail(CaptureErrorKind::Malformed(format!(
                "packet block length {len} is less than 32"
            ))));
        };
        let field = |at: usize| field::<BE, 28>(h, at);
        // The obsolete Packet Block has a 16-bit interface id and drop count.
        let interface = match (btype, BE) {
            (EPB_TYPE, _) => field(8),
            (_, true) => field(8) >> 16,
            (_, false) => field(8) & 0xffff,
        };
        let raw_ts = (u64::from(field(12)) << 32) | u64::from(field(16));
        let (caplen, origlen) = (field(20), field(24));
        let room = len.saturating_sub(32);
        if caplen > room {
            return Err(Stop::Fail(CaptureErrorKind::AbsurdLength {
                what: "packet block captured length",
                length: u64::from(caplen),
                limit: u64::from(room),
            }));
        }
        match self.interfaces.get(interface as usize) {
            None => stats.skipped_bad_interface += 1,
            Some(ifc) if !ifc.supported => stats.skipped_unsupported_link += 1,
            Some(ifc) => {
                let Ok(data_start) = u32::try_from(pos + 28) else {
                    return Err(Stop::Fail(buffer_too_big()));
                };
                let ts_nanos = ifc.nanos(raw_ts);
                self.last_ts = ts_nanos;
                records.push(PacketRecord {
                    ts_nanos,
                    link_type: ifc.link_type,
                    data_start,
                    caplen,
                    origlen,
                    interface,
                });
            }
        }
        Ok(())
    }

    /// A Simple Packet Block `blk` of length `len` at buffer offset `pos`:
    /// delivers its packet on interface 0 with the last timestamp delivered
    /// (it has none of its own), or counts it as skipped.
    fn simple_packet<const BE: bool>(
        &mut self,
        blk: &[u8],
        len: u32,
        pos: usize,
        records: &mut Vec<PacketRecord>,
        stats: &mut ReaderStats,
    ) -> Result<(), Stop> {
        // type, len, origlen, data.., len
        if blk.len() < 16 {
            return Err(Stop::Fail(CaptureErrorKind::Malformed(format!(
                "simple packet block length {len} is less than 16"
            ))));
        }
        let origlen = word::<BE>(blk, 8);
        let caplen = origlen.min(len.saturating_sub(16));
        match self.interfaces.first() {
            None => stats.skipped_bad_interface += 1,
            Some(ifc) if !ifc.supported => stats.skipped_unsupported_link += 1,
            Some(ifc) => {
                let Ok(data_start) = u32::try_from(pos + 12) else {
                    return Err(Stop::Fail(buffer_too_big()));
                };
                records.push(PacketRecord {
                    ts_nanos: self.last_ts,
                    link_type: ifc.link_type,
                    data_start,
                    caplen,
                    origlen,
                    interface: 0,
                });
            }
        }
        Ok(())
    }
}

/// The block at hand says it has `len` bytes; `available` are there.
fn short_block(len: u32, available: usize) -> Stop {
    Stop::Short {
        part: TruncatedPart::Block,
        needed: u64::from(len),
        available: available as u64,
        total: len as usize,
    }
}
