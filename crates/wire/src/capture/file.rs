//! Capture-file reader: frames classic pcap and pcapng files into packet records.
//!
//! This module owns the capture *file*: recognising the format (classic pcap in either
//! byte order with micro- or nanosecond timestamps, the Kuznetzov "modified" pcap
//! variant, and pcapng with any number of sections and interfaces), framing the file
//! into whole packet records inside large caller-owned block buffers, converting every
//! timestamp to nanoseconds since the Unix epoch, attaching each packet's link type
//! (per interface in pcapng), counting what it skips, and reporting file-level errors
//! as `FILE: byte OFFSET: reason`.
//!
//! It must not decode packets (that is the decoder's job: a record is only a byte range),
//! must never allocate or reserve memory by a length read from the file (buffers grow
//! only with bytes actually read, and every length is capped first), and must never
//! panic on any input: the file may be shaped by an attacker. The per-packet path is a
//! handful of bounds checks and integer reads, with no per-packet allocation or copy.
//!
//! Conventions: classic pcap `thiszone` is ignored (as libpcap does; stamps are UTC) and its
//! link type is the low 16 bits of the header field (the upper bits are FCS flags); a
//! pcapng Simple Packet Block has no timestamp and gets the last timestamp delivered
//! (0 before any); an error found after some records of a block is reported by the next
//! `next_block` call, so the records before it are always delivered first.
#![deny(unsafe_code)]

use std::fmt;
use std::io::{self, Read};

use pcap_parser::pcap::parse_pcap_header;
use pcap_parser::pcapng::{
    parse_block_be, parse_block_le, parse_sectionheaderblock, Block, OptionCode,
};

/// libpcap's MAXIMUM_SNAPLEN: classic pcap records up to this size are always accepted.
pub const MAXIMUM_SNAPLEN: u32 = 262_144;
/// Hard cap on a pcapng block, and on a classic pcap record even if the header's
/// snaplen is larger.
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
/// Default block buffer size used by [`CaptureReader::next_block`].
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
/// Smallest block size accepted by [`CaptureReader::set_block_size`].
pub const MIN_BLOCK_SIZE: usize = 64;
/// Largest block size accepted by [`CaptureReader::set_block_size`] (offsets stay `u32`).
pub const MAX_BLOCK_SIZE: usize = 1 << 30;
/// Interfaces allowed in one pcapng section before the file is declared malformed.
pub const MAX_INTERFACES: usize = 1 << 16;

/// Largest single read used when a buffer must grow beyond the block size.
const GROW_CHUNK: usize = 1 << 20;

const SHB_TYPE: u32 = 0x0A0D_0D0A;
const IDB_TYPE: u32 = 1;
const PB_TYPE: u32 = 2;
const SPB_TYPE: u32 = 3;
const EPB_TYPE: u32 = 6;

/// One packet inside a block buffer: the bytes are `block[data_start .. data_start + caplen]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// Packet time, nanoseconds since the Unix epoch (UTC).
    pub ts_nanos: u64,
    /// LINKTYPE_* value of the packet's interface.
    pub link_type: u32,
    /// Offset of the packet bytes inside the block buffer.
    pub data_start: u32,
    /// Captured bytes.
    pub caplen: u32,
    /// Length on the wire (>= caplen normally; kept as read).
    pub origlen: u32,
    /// pcapng interface id; 0 for classic pcap.
    pub interface: u32,
}

/// Which part of the file was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncatedPart {
    /// The pcap file header or the first pcapng Section Header Block.
    FileHeader,
    /// A classic pcap record header.
    RecordHeader,
    /// The packet bytes of a classic pcap record.
    RecordData,
    /// The fixed start (type, length) of a pcapng block.
    BlockHeader,
    /// The body of a pcapng block.
    Block,
}

/// What is wrong with a capture file.
#[derive(Debug)]
pub enum CaptureErrorKind {
    /// The underlying reader failed.
    Io(io::Error),
    /// The file has no bytes at all.
    Empty,
    /// The first four bytes (read big-endian) are no known capture magic.
    NotACapture { magic: u32 },
    /// The file ends inside a header, record or block.
    Truncated {
        part: TruncatedPart,
        /// Bytes the header/record/block says it has (for headers: bytes needed).
        needed: u64,
        /// Bytes the file actually still holds for it.
        available: u64,
    },
    /// A length field is beyond any sane limit.
    AbsurdLength {
        what: &'static str,
        length: u64,
        limit: u64,
    },
    /// A classic pcap whose link type the caller cannot decode.
    UnsupportedLinkType { link_type: u32 },
    /// Any other structural problem; a short reason.
    Malformed(String),
}

/// A file-level error: file name, byte offset of the offending header/record/block.
#[derive(Debug)]
pub struct CaptureError {
    pub file: String,
    pub offset: u64,
    pub kind: CaptureErrorKind,
}

impl fmt::Display for CaptureErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureErrorKind::Io(e) => write!(f, "read error: {e}"),
            CaptureErrorKind::Empty => {
                write!(f, "empty file (0 bytes); expected a pcap or pcapng capture")
            }
            CaptureErrorKind::NotACapture { magic } => write!(
                f,
                "not a capture file (magic 0x{magic:08x}; expected pcap or pcapng)"
            ),
            CaptureErrorKind::Truncated {
                part,
                needed,
                available,
            } => match part {
                TruncatedPart::FileHeader => write!(
                    f,
                    "truncated file header: need {needed} bytes, file ends after {available}"
                ),
                TruncatedPart::RecordHeader => write!(
                    f,
                    "truncated record header: need {needed} bytes, file ends after {available}"
                ),
                TruncatedPart::RecordData => write!(
                    f,
                    "truncated record: header says {needed} bytes, file ends after {available}"
                ),
                TruncatedPart::BlockHeader => write!(
                    f,
                    "truncated block header: need {needed} bytes, file ends after {available}"
                ),
                TruncatedPart::Block => write!(
                    f,
                    "truncated block: header says {needed} bytes, file ends after {available}"
                ),
            },
            CaptureErrorKind::AbsurdLength {
                what,
                length,
                limit,
            } => write!(f, "absurd {what} {length} (limit {limit})"),
            CaptureErrorKind::UnsupportedLinkType { link_type } => {
                match link_type_name(*link_type) {
                    Some(name) => write!(f, "unsupported link type {link_type} ({name})"),
                    None => write!(f, "unsupported link type {link_type}"),
                }
            }
            CaptureErrorKind::Malformed(reason) => f.write_str(reason),
        }
    }
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: byte {}: {}", self.file, self.offset, self.kind)
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            CaptureErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Name of a LINKTYPE_* value, for messages (only common ones; `None` otherwise).
pub fn link_type_name(link_type: u32) -> Option<&'static str> {
    Some(match link_type {
        0 => "NULL",
        1 => "EN10MB",
        6 => "IEEE802_5",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        12 | 14 | 101 => "RAW",
        50 => "PPP_HDLC",
        51 => "PPP_ETHER",
        100 => "ATM_RFC1483",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        107 => "FRELAY",
        108 => "LOOP",
        113 => "LINUX_SLL",
        119 => "IEEE802_11_PRISM",
        127 => "IEEE802_11_RADIOTAP",
        147..=162 => "USER",
        163 => "IEEE802_11_AVS",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        192 => "PPI",
        195 => "IEEE802_15_4_WITHFCS",
        201 => "BLUETOOTH_HCI_H4_WITH_PHDR",
        220 => "USB_LINUX_MMAPPED",
        227 => "CAN_SOCKETCAN",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        249 => "USBPCAP",
        251 => "BLUETOOTH_LE_LL",
        252 => "WIRESHARK_UPPER_PDU",
        253 => "NETLINK",
        276 => "LINUX_SLL2",
        _ => return None,
    })
}

/// Counters for things skipped without failing the file.
#[derive(Default, Debug, Clone)]
pub struct ReaderStats {
    /// Packet records delivered.
    pub records: u64,
    /// Bytes read from the underlying reader (file headers included).
    pub bytes_read: u64,
    /// pcapng packets on an interface whose link type is unsupported.
    pub skipped_unsupported_link: u64,
    /// pcapng blocks of unknown/uninteresting type (ISB, NRB, DSB, custom, ...).
    pub skipped_unknown_blocks: u64,
    /// pcapng packets naming an interface id never described in their section.
    pub skipped_bad_interface: u64,
    /// Delivered packets with caplen 0.
    pub zero_length_packets: u64,
    /// Delivered packets with caplen < origlen (snaplen cut).
    pub truncated_packets: u64,
}

/// Reads a little- or big-endian u32 at `at`; 0 if out of range (callers check lengths first).
#[inline(always)]
fn word<const BE: bool>(b: &[u8], at: usize) -> u32 {
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
fn half<const BE: bool>(b: &[u8], at: usize) -> u16 {
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
fn word_dyn(be: bool, b: &[u8], at: usize) -> u32 {
    if be {
        word::<true>(b, at)
    } else {
        word::<false>(b, at)
    }
}

/// Why framing stopped.
enum Stop {
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

#[derive(Clone, Copy, Debug)]
struct PcapFormat {
    nanos: bool,
    hdr_len: usize,
    link_type: u32,
    cap: u32,
}

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
    #[inline]
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

#[derive(Debug)]
struct NgState {
    big_endian: bool,
    interfaces: Vec<Interface>,
    last_ts: u64,
}

enum Format {
    Pcap(PcapFormat, bool),
    PcapNg(NgState),
}

fn check_block_len(len: u32) -> Result<(), CaptureErrorKind> {
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
fn shb_big_endian(head: &[u8]) -> Result<bool, CaptureErrorKind> {
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
fn check_shb(blk: &[u8]) -> Result<bool, CaptureErrorKind> {
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
        self.interfaces.push(Interface {
            link_type,
            supported: supported(link_type),
            scale: TsScale::from_tsresol(idb.if_tsresol),
            offset_nanos: i128::from(offset_secs).saturating_mul(1_000_000_000),
        });
        Ok(())
    }

    /// Frames pcapng blocks of the current section's byte order starting at `pos`.
    fn frame<const BE: bool>(
        &mut self,
        block: &[u8],
        mut pos: usize,
        supported: fn(u32) -> bool,
        records: &mut Vec<PacketRecord>,
        stats: &mut ReaderStats,
    ) -> (usize, Stop) {
        loop {
            let rest = block.get(pos..).unwrap_or_default();
            let Some(head) = rest.first_chunk::<12>() else {
                return (
                    pos,
                    Stop::Short {
                        part: TruncatedPart::BlockHeader,
                        needed: 12,
                        available: rest.len() as u64,
                        total: 12,
                    },
                );
            };
            let btype = word::<BE>(head, 0);
            if btype == SHB_TYPE {
                let be = match shb_big_endian(head) {
                    Ok(be) => be,
                    Err(e) => return (pos, Stop::Fail(e)),
                };
                let len = word_dyn(be, head, 4);
                if let Err(e) = check_block_len(len) {
                    return (pos, Stop::Fail(e));
                }
                let Some(blk) = rest.get(..len as usize) else {
                    return (pos, short_block(len, rest.len()));
                };
                match check_shb(blk) {
                    Ok(be) => self.big_endian = be,
                    Err(e) => return (pos, Stop::Fail(e)),
                }
                self.interfaces.clear();
                pos += blk.len();
                if self.big_endian != BE {
                    return (pos, Stop::Switch);
                }
                continue;
            }
            let len = word::<BE>(head, 4);
            if let Err(e) = check_block_len(len) {
                return (pos, Stop::Fail(e));
            }
            let Some(blk) = rest.get(..len as usize) else {
                return (pos, short_block(len, rest.len()));
            };
            let trailer = word::<BE>(blk, blk.len().saturating_sub(4));
            if trailer != len {
                return (
                    pos,
                    Stop::Fail(CaptureErrorKind::Malformed(format!(
                        "block trailing length {trailer} differs from leading length {len}"
                    ))),
                );
            }
            match btype {
                EPB_TYPE | PB_TYPE => {
                    // type, len, interface, ts_high, ts_low, caplen, origlen, data.., len
                    if blk.len() < 32 {
                        return (
                            pos,
                            Stop::Fail(CaptureErrorKind::Malformed(format!(
                                "packet block length {len} is less than 32"
                            ))),
                        );
                    }
                    let interface = if btype == EPB_TYPE {
                        word::<BE>(blk, 8)
                    } else {
                        u32::from(half::<BE>(blk, 8))
                    };
                    let raw_ts =
                        (u64::from(word::<BE>(blk, 12)) << 32) | u64::from(word::<BE>(blk, 16));
                    let caplen = word::<BE>(blk, 20);
                    let origlen = word::<BE>(blk, 24);
                    let room = len.saturating_sub(32);
                    if caplen > room {
                        return (
                            pos,
                            Stop::Fail(CaptureErrorKind::AbsurdLength {
                                what: "packet block captured length",
                                length: u64::from(caplen),
                                limit: u64::from(room),
                            }),
                        );
                    }
                    match self.interfaces.get(interface as usize) {
                        None => stats.skipped_bad_interface += 1,
                        Some(ifc) if !ifc.supported => stats.skipped_unsupported_link += 1,
                        Some(ifc) => {
                            let Ok(data_start) = u32::try_from(pos + 28) else {
                                return (pos, Stop::Fail(buffer_too_big()));
                            };
                            let ts_nanos = ifc.nanos(raw_ts);
                            self.last_ts = ts_nanos;
                            push(
                                records,
                                stats,
                                PacketRecord {
                                    ts_nanos,
                                    link_type: ifc.link_type,
                                    data_start,
                                    caplen,
                                    origlen,
                                    interface,
                                },
                            );
                        }
                    }
                }
                SPB_TYPE => {
                    // type, len, origlen, data.., len
                    if blk.len() < 16 {
                        return (
                            pos,
                            Stop::Fail(CaptureErrorKind::Malformed(format!(
                                "simple packet block length {len} is less than 16"
                            ))),
                        );
                    }
                    let origlen = word::<BE>(blk, 8);
                    let caplen = origlen.min(len.saturating_sub(16));
                    match self.interfaces.first() {
                        None => stats.skipped_bad_interface += 1,
                        Some(ifc) if !ifc.supported => stats.skipped_unsupported_link += 1,
                        Some(ifc) => {
                            let Ok(data_start) = u32::try_from(pos + 12) else {
                                return (pos, Stop::Fail(buffer_too_big()));
                            };
                            push(
                                records,
                                stats,
                                PacketRecord {
                                    ts_nanos: self.last_ts,
                                    link_type: ifc.link_type,
                                    data_start,
                                    caplen,
                                    origlen,
                                    interface: 0,
                                },
                            );
                        }
                    }
                }
                IDB_TYPE => {
                    if let Err(e) = self.add_interface::<BE>(blk, supported) {
                        return (pos, Stop::Fail(e));
                    }
                }
                _ => stats.skipped_unknown_blocks += 1,
            }
            pos += blk.len();
        }
    }
}

fn short_block(len: u32, available: usize) -> Stop {
    Stop::Short {
        part: TruncatedPart::Block,
        needed: u64::from(len),
        available: available as u64,
        total: len as usize,
    }
}

fn buffer_too_big() -> CaptureErrorKind {
    CaptureErrorKind::Malformed("block buffer offset exceeds u32".into())
}

#[inline(always)]
fn push(records: &mut Vec<PacketRecord>, stats: &mut ReaderStats, rec: PacketRecord) {
    stats.records += 1;
    stats.zero_length_packets += u64::from(rec.caplen == 0);
    stats.truncated_packets += u64::from(rec.caplen < rec.origlen);
    records.push(rec);
}

/// Frames classic pcap records of one byte order starting at `pos`.
fn frame_pcap<const BE: bool>(
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

/// Reads until `buf` is full, EOF or an error, retrying interrupted reads. Returns the
/// bytes read (also when an error follows them) and the error, if any.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while let Some(dst) = buf.get_mut(filled..) {
        if dst.is_empty() {
            break;
        }
        match reader.read(dst) {
            Ok(0) => break,
            Ok(n) => filled += n.min(dst.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

/// Block-oriented, zero-copy reader of classic pcap and pcapng capture files.
pub struct CaptureReader<R: Read> {
    file: String,
    reader: R,
    supported: fn(u32) -> bool,
    format: Format,
    /// Partial record left at the end of the previous block.
    carry: Vec<u8>,
    block_size: usize,
    /// The underlying reader returned 0.
    eof: bool,
    /// File offset of the end of the last whole record/block consumed.
    consumed: u64,
    /// Error found after records of the same block; returned by the next call.
    pending: Option<CaptureError>,
    /// No more calls will produce records (clean end or error returned).
    done: bool,
    stats: ReaderStats,
}

impl<R: Read> CaptureReader<R> {
    /// Reads and checks the file header (classic pcap: magic a1b2c3d4 / a1b23c4d, both byte
    /// orders, micro- or nanosecond timestamps, and the a1b2cd34 "modified" format;
    /// pcapng: Section Header Block, either byte order).
    /// `supported(link_type)` says which link types the caller can decode: a classic pcap
    /// whose link type is unsupported fails HERE with UnsupportedLinkType; in pcapng only that
    /// interface's packets are counted in skipped_unsupported_link and skipped.
    pub fn new(
        file: impl Into<String>,
        reader: R,
        supported: fn(u32) -> bool,
    ) -> Result<Self, CaptureError> {
        let mut me = CaptureReader {
            file: file.into(),
            reader,
            supported,
            format: Format::PcapNg(NgState {
                big_endian: false,
                interfaces: Vec::new(),
                last_ts: 0,
            }),
            carry: Vec::new(),
            block_size: DEFAULT_BLOCK_SIZE,
            eof: false,
            consumed: 0,
            pending: None,
            done: false,
            stats: ReaderStats::default(),
        };
        me.read_file_header()?;
        Ok(me)
    }

    fn error(&self, offset: u64, kind: CaptureErrorKind) -> CaptureError {
        CaptureError {
            file: self.file.clone(),
            offset,
            kind,
        }
    }

    /// Reads into `buf[from..to]` until full or EOF; returns the new fill level.
    fn read_into(&mut self, buf: &mut [u8], from: usize, to: usize) -> Result<usize, CaptureError> {
        let Some(dst) = buf.get_mut(from..to) else {
            return Ok(from);
        };
        let want = dst.len();
        let (n, err) = read_full(&mut self.reader, dst);
        self.stats.bytes_read += n as u64;
        if let Some(e) = err {
            return Err(self.error(self.stats.bytes_read, CaptureErrorKind::Io(e)));
        }
        if n < want {
            self.eof = true;
        }
        Ok(from + n)
    }

    /// Grows `buf` by reading (never by a declared length) until it holds `want` bytes
    /// or EOF. Returns the new fill level.
    fn grow(
        &mut self,
        buf: &mut Vec<u8>,
        mut filled: usize,
        want: usize,
    ) -> Result<usize, CaptureError> {
        while filled < want && !self.eof {
            let end = want.min(filled.saturating_add(GROW_CHUNK));
            if buf.len() < end {
                buf.resize(end, 0);
            }
            filled = self.read_into(buf, filled, end)?;
        }
        Ok(filled)
    }

    fn read_file_header(&mut self) -> Result<(), CaptureError> {
        let mut head = [0u8; 24];
        let n = self.read_into(&mut head, 0, 4)?;
        if n == 0 {
            return Err(self.error(0, CaptureErrorKind::Empty));
        }
        let truncated = |needed: u64, available: usize| CaptureErrorKind::Truncated {
            part: TruncatedPart::FileHeader,
            needed,
            available: available as u64,
        };
        if n < 4 {
            return Err(self.error(0, truncated(4, n)));
        }
        let [m0, m1, m2, m3, ..] = head;
        let magic = [m0, m1, m2, m3];
        // (big-endian, nanoseconds, modified)
        let classic = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => Some((false, false, false)),
            [0xa1, 0xb2, 0xc3, 0xd4] => Some((true, false, false)),
            [0x4d, 0x3c, 0xb2, 0xa1] => Some((false, true, false)),
            [0xa1, 0xb2, 0x3c, 0x4d] => Some((true, true, false)),
            [0x34, 0xcd, 0xb2, 0xa1] => Some((false, false, true)),
            [0xa1, 0xb2, 0xcd, 0x34] => Some((true, false, true)),
            _ => None,
        };
        if let Some((be, nanos, modified)) = classic {
            let n = self.read_into(&mut head, 4, 24)?;
            if n < 24 {
                return Err(self.error(0, truncated(24, n)));
            }
            let (snaplen, network) = if be && modified {
                // pcap-parser does not know the byte-swapped Kuznetzov magic.
                (word::<true>(&head, 16), word::<true>(&head, 20))
            } else {
                match parse_pcap_header(&head) {
                    Ok((_, h)) => (h.snaplen, h.network.0 as u32),
                    Err(_) => {
                        return Err(self
                            .error(0, CaptureErrorKind::Malformed("invalid pcap header".into())))
                    }
                }
            };
            // The upper 16 bits carry FCS-length flags (LT_LINKTYPE_EXT); the link type is
            // the low 16 bits, as in libpcap.
            let link_type = network & 0xffff;
            if !(self.supported)(link_type) {
                return Err(self.error(20, CaptureErrorKind::UnsupportedLinkType { link_type }));
            }
            let cap = if snaplen > MAXIMUM_SNAPLEN {
                snaplen.min(MAX_BLOCK_LEN)
            } else {
                MAXIMUM_SNAPLEN
            };
            self.format = Format::Pcap(
                PcapFormat {
                    nanos,
                    hdr_len: if modified { 24 } else { 16 },
                    link_type,
                    cap,
                },
                be,
            );
            self.consumed = 24;
            return Ok(());
        }
        if magic != [0x0a, 0x0d, 0x0d, 0x0a] {
            return Err(self.error(
                0,
                CaptureErrorKind::NotACapture {
                    magic: u32::from_be_bytes(magic),
                },
            ));
        }
        let n = self.read_into(&mut head, 4, 12)?;
        if n < 12 {
            return Err(self.error(0, truncated(28, n)));
        }
        let be = shb_big_endian(&head).map_err(|k| self.error(0, k))?;
        let len = word_dyn(be, &head, 4);
        check_block_len(len).map_err(|k| self.error(0, k))?;
        let mut shb = head.get(..12).unwrap_or_default().to_vec();
        let got = self.grow(&mut shb, 12, len as usize)?;
        if got < len as usize {
            return Err(self.error(0, truncated(u64::from(len), got)));
        }
        shb.truncate(got);
        let be = check_shb(&shb).map_err(|k| self.error(0, k))?;
        self.format = Format::PcapNg(NgState {
            big_endian: be,
            interfaces: Vec::new(),
            last_ts: 0,
        });
        self.consumed = u64::from(len);
        Ok(())
    }

    /// Frames whole records in `block[pos..]` with the current format.
    fn frame(
        &mut self,
        block: &[u8],
        mut pos: usize,
        records: &mut Vec<PacketRecord>,
    ) -> (usize, Stop) {
        let stats = &mut self.stats;
        match &mut self.format {
            Format::Pcap(fmt, true) => frame_pcap::<true>(fmt, block, pos, records, stats),
            Format::Pcap(fmt, false) => frame_pcap::<false>(fmt, block, pos, records, stats),
            Format::PcapNg(ng) => loop {
                let (p, stop) = if ng.big_endian {
                    ng.frame::<true>(block, pos, self.supported, records, stats)
                } else {
                    ng.frame::<false>(block, pos, self.supported, records, stats)
                };
                pos = p;
                if !matches!(stop, Stop::Switch) {
                    return (pos, stop);
                }
            },
        }
    }

    /// Records an error at `offset`: returned now if this call produced no records,
    /// otherwise kept for the next call so the records before it are delivered first.
    fn fail(&mut self, err: CaptureError, produced: bool) -> Result<bool, CaptureError> {
        if produced {
            self.pending = Some(err);
            Ok(true)
        } else {
            self.done = true;
            Err(err)
        }
    }

    /// Fills `block` with as many WHOLE records as fit and appends one PacketRecord per packet
    /// to `records` (which the caller has cleared). Returns Ok(true) while there may be more,
    /// Ok(false) at a clean end of file (never together with new records; a call that
    /// produced records returns Ok(true), and the next call Ok(false)). Ok(true) may come
    /// with no records (e.g. a block of only non-packet pcapng blocks).
    ///
    /// `block` is a reusable buffer owned by the caller; its old content is replaced by the
    /// partial record left over from the previous call followed by fresh reads until it
    /// holds `block_size` bytes or EOF. Pass the same (uncleared) buffer every time to avoid
    /// zero-filling it; any buffer works. A record bigger than the block size (within the
    /// caps) makes the buffer grow, by bytes actually read. On return `block.len()` is the
    /// number of valid bytes.
    ///
    /// An error found after some records of a block is returned by the following call, so
    /// every record before the bad one is delivered. After an error, calls return Ok(false).
    pub fn next_block(
        &mut self,
        block: &mut Vec<u8>,
        records: &mut Vec<PacketRecord>,
    ) -> Result<bool, CaptureError> {
        if let Some(err) = self.pending.take() {
            self.done = true;
            return Err(err);
        }
        if self.done {
            block.clear();
            return Ok(false);
        }
        let first_record = records.len();
        let carry_len = self.carry.len();
        let target = self.block_size.max(carry_len);
        if block.len() != target {
            block.resize(target, 0);
        }
        if let Some(dst) = block.get_mut(..carry_len) {
            dst.copy_from_slice(&self.carry);
        }
        self.carry.clear();
        let base = self.consumed;
        let mut filled = carry_len;
        if !self.eof {
            filled = match self.read_into(block, filled, target) {
                Ok(f) => f,
                Err(e) => {
                    block.truncate(filled);
                    self.done = true;
                    return Err(e);
                }
            };
        }
        let mut pos = 0;
        loop {
            let (p, stop) = self.frame(block.get(..filled).unwrap_or_default(), pos, records);
            pos = p;
            let produced = records.len() > first_record;
            let at = base.saturating_add(pos as u64);
            self.consumed = at;
            match stop {
                Stop::Fail(kind) => {
                    block.truncate(filled);
                    let err = self.error(at, kind);
                    return self.fail(err, produced);
                }
                Stop::Switch => {
                    // Handled inside frame(); unreachable, but harmless: keep framing.
                    continue;
                }
                Stop::Short {
                    part,
                    needed,
                    available,
                    total,
                } => {
                    if pos >= filled {
                        block.truncate(filled);
                        if self.eof {
                            self.done = true;
                            return Ok(produced);
                        }
                        return Ok(true);
                    }
                    if self.eof {
                        block.truncate(filled);
                        let err = self.error(
                            at,
                            CaptureErrorKind::Truncated {
                                part,
                                needed,
                                available,
                            },
                        );
                        return self.fail(err, produced);
                    }
                    if pos > 0 {
                        self.carry
                            .extend_from_slice(block.get(pos..filled).unwrap_or_default());
                        block.truncate(filled);
                        return Ok(true);
                    }
                    // A single record larger than the block: grow (by reading) and retry.
                    let want = total.max(filled.saturating_add(1));
                    filled = match self.grow(block, filled, want) {
                        Ok(f) => f,
                        Err(e) => {
                            block.truncate(filled);
                            self.done = true;
                            return Err(e);
                        }
                    };
                }
            }
        }
    }

    /// Counters of delivered and skipped things so far.
    pub fn stats(&self) -> &ReaderStats {
        &self.stats
    }

    /// File offset of the end of the last whole record (or block) consumed, for progress.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Sets the block size used by later [`next_block`](Self::next_block) calls, clamped to
    /// `MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`. Default 1 MiB.
    pub fn set_block_size(&mut self, n: usize) {
        self.block_size = n.clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
    }

    /// The block size in use.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The file name given to [`new`](Self::new), used in error messages.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// Link type of a classic pcap file (`None` for pcapng, where it is per interface).
    pub fn pcap_link_type(&self) -> Option<u32> {
        match &self.format {
            Format::Pcap(fmt, _) => Some(fmt.link_type),
            Format::PcapNg(_) => None,
        }
    }

    /// True for pcapng input.
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::PcapNg(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// The link types the tests pretend to decode.
    fn supported(lt: u32) -> bool {
        matches!(lt, 0 | 1 | 12 | 14 | 101 | 108 | 113 | 228 | 229 | 276)
    }

    fn everything(_: u32) -> bool {
        true
    }

    /// Deterministic packet bytes.
    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    /// The test kit's byte-order-aware writer.
    use qmwatch_testkit::pcap::Bytes as W;
    use qmwatch_testkit::pcap::{PcapFormat, PcapWriter, Pcapng};

    /// One classic pcap record: (ts_sec, ts_frac, data, origlen).
    type Rec<'a> = (u32, u32, &'a [u8], u32);

    /// A classic pcap file (the test kit's writer); returns the bytes and
    /// the end offset of every record.
    fn pcap_file_ends(
        be: bool,
        nanos: bool,
        modified: bool,
        link: u32,
        snaplen: u32,
        pkts: &[Rec],
    ) -> (Vec<u8>, Vec<usize>) {
        let format = PcapFormat {
            big_endian: be,
            nanos,
            modified,
            link_type: link,
            snaplen,
        };
        let mut w = PcapWriter::with_format(Vec::new(), format).unwrap();
        let mut ends = Vec::new();
        for (sec, frac, data, orig) in pkts {
            w.record_raw(*sec, *frac, data, *orig).unwrap();
            ends.push(w.file_bytes as usize);
        }
        (w.finish().unwrap(), ends)
    }

    fn pcap_file(be: bool, nanos: bool, link: u32, pkts: &[Rec]) -> Vec<u8> {
        pcap_file_ends(be, nanos, false, link, 65535, pkts).0
    }

    /// The test kit's pcapng builder, with the options these tests write:
    /// `shb_userappl`, `if_name`, `opt_comment`.
    struct Ng(Pcapng);

    impl Ng {
        fn new() -> Ng {
            Ng(Pcapng::empty())
        }
        /// Block end offsets.
        fn ends(&self) -> &[usize] {
            &self.0.block_ends
        }
        /// End offsets of packet blocks.
        fn packet_ends(&self) -> &[usize] {
            &self.0.packet_ends
        }
        /// Bytes written so far.
        fn len(&self) -> usize {
            self.0.bytes().len()
        }
        fn shb(&mut self, be: bool) -> &mut Self {
            self.0.shb(be, &[(4, b"capfile test")]);
            self
        }
        fn idb(&mut self, link: u16, tsresol: Option<u8>, tsoffset: Option<i64>) -> &mut Self {
            let off = tsoffset.map(|o| {
                if self.0.big_endian() {
                    o.to_be_bytes()
                } else {
                    o.to_le_bytes()
                }
            });
            let res = tsresol.map(|r| [r]);
            let mut opts: Vec<(u16, &[u8])> = vec![(2, b"lo")];
            if let Some(r) = &res {
                opts.push((9, r));
            }
            if let Some(o) = &off {
                opts.push((14, o));
            }
            self.0.idb(link, 262_144, &opts);
            self
        }
        fn epb(&mut self, iface: u32, ts: u64, data: &[u8], origlen: u32) -> &mut Self {
            self.0.epb(iface, ts, data, origlen, &[(1, b"comment")]);
            self
        }
        fn pb(&mut self, iface: u16, ts: u64, data: &[u8], origlen: u32) -> &mut Self {
            self.0.pb(iface, ts, data, origlen);
            self
        }
        fn spb(&mut self, origlen: u32, data: &[u8]) -> &mut Self {
            self.0.spb(origlen, data);
            self
        }
        fn other(&mut self, btype: u32, body: &[u8]) -> &mut Self {
            self.0.block(btype, body);
            self
        }
        fn bytes(&self) -> Vec<u8> {
            self.0.bytes().to_vec()
        }
    }

    /// Returns at most one byte per read.
    struct Trickle<R>(R);
    impl<R: Read> Read for Trickle<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    /// Alternates `Interrupted` errors with short reads of 1..=7 bytes.
    struct Flaky<R> {
        inner: R,
        n: usize,
    }
    impl<R: Read> Read for Flaky<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.n += 1;
            if self.n % 2 == 0 {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
            }
            let n = buf.len().min(self.n % 7 + 1);
            self.inner.read(&mut buf[..n])
        }
    }

    /// Fails with an I/O error after `left` bytes.
    struct Broken {
        data: Cursor<Vec<u8>>,
        left: usize,
    }
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.left);
            let got = self.data.read(&mut buf[..n])?;
            self.left -= got;
            Ok(got)
        }
    }

    #[derive(Debug)]
    struct Outcome {
        /// Delivered records with a copy of their bytes.
        recs: Vec<(PacketRecord, Vec<u8>)>,
        stats: ReaderStats,
        err: Option<CaptureError>,
        consumed: u64,
    }

    impl Outcome {
        /// Records without `data_start` (which depends on the block layout).
        fn essence(&self) -> Vec<(u64, u32, u32, u32, u32, Vec<u8>)> {
            self.recs
                .iter()
                .map(|(r, d)| {
                    (
                        r.ts_nanos,
                        r.link_type,
                        r.caplen,
                        r.origlen,
                        r.interface,
                        d.clone(),
                    )
                })
                .collect()
        }
    }

    /// Reads a whole capture, checking the API contract on every call.
    fn read_with<R: Read>(
        r: R,
        block_size: usize,
        sup: fn(u32) -> bool,
    ) -> Result<Outcome, CaptureError> {
        let mut rd = CaptureReader::new("test.pcap", r, sup)?;
        rd.set_block_size(block_size);
        let mut block = Vec::new();
        let mut records = Vec::new();
        let mut out = Vec::new();
        let mut err = None;
        let mut last_consumed = rd.bytes_consumed();
        for _calls in 0.. {
            assert!(_calls < 1_000_000, "next_block does not terminate");
            records.clear();
            match rd.next_block(&mut block, &mut records) {
                Ok(more) => {
                    for r in &records {
                        let start = r.data_start as usize;
                        let data = block
                            .get(start..start + r.caplen as usize)
                            .expect("record data lies inside its block");
                        out.push((*r, data.to_vec()));
                    }
                    assert!(rd.bytes_consumed() >= last_consumed);
                    last_consumed = rd.bytes_consumed();
                    if !more {
                        assert!(records.is_empty(), "Ok(false) never carries records");
                        break;
                    }
                }
                Err(e) => {
                    assert!(records.is_empty(), "Err never carries records");
                    err = Some(e);
                    records.clear();
                    assert!(matches!(rd.next_block(&mut block, &mut records), Ok(false)));
                    assert!(records.is_empty());
                    break;
                }
            }
        }
        assert_eq!(rd.stats().records, out.len() as u64);
        Ok(Outcome {
            recs: out,
            stats: rd.stats().clone(),
            err,
            consumed: rd.bytes_consumed(),
        })
    }

    fn read_all(bytes: &[u8], block_size: usize) -> Result<Outcome, CaptureError> {
        read_with(Cursor::new(bytes.to_vec()), block_size, supported)
    }

    fn sample_records() -> Vec<(u32, u32, Vec<u8>, u32)> {
        vec![
            (1_700_000_000, 123_456, pattern(1, 60), 60),
            (1_700_000_001, 0, Vec::new(), 0),
            (1_700_000_002, 999_999, pattern(3, 150), 1514),
            (4_294_967_295, 1, pattern(4, 71), 71),
        ]
    }

    fn sample_pcap(be: bool, nanos: bool) -> (Vec<u8>, Vec<usize>) {
        let recs = sample_records();
        let pkts: Vec<Rec> = recs
            .iter()
            .map(|(s, f, d, o)| (*s, *f, &d[..], *o))
            .collect();
        pcap_file_ends(be, nanos, false, 1, 65535, &pkts)
    }

    /// A two-section pcapng (LE then BE) using only supported interfaces, every packet
    /// block type, options and an unknown block.
    fn sample_pcapng() -> Ng {
        let mut ng = Ng::new();
        ng.shb(false)
            .idb(1, Some(9), None)
            .epb(0, 1_700_000_000_000_000_001, &pattern(1, 61), 61)
            .epb(0, 1_700_000_000_000_000_002, &[], 0)
            .other(5, &[0; 20])
            .spb(100, &pattern(2, 33))
            .pb(0, 1_700_000_000_000_000_003, &pattern(3, 40), 1514)
            .shb(true)
            .idb(113, Some(0x8a), Some(-3))
            .epb(0, 2048, &pattern(4, 90), 90);
        ng
    }

    #[test]
    fn classic_pcap_byte_orders_and_precisions() {
        for be in [false, true] {
            for nanos in [false, true] {
                let (file, _) = sample_pcap(be, nanos);
                let expect_magic: [u8; 4] = match (be, nanos) {
                    (false, false) => [0xd4, 0xc3, 0xb2, 0xa1],
                    (false, true) => [0x4d, 0x3c, 0xb2, 0xa1],
                    (true, false) => [0xa1, 0xb2, 0xc3, 0xd4],
                    (true, true) => [0xa1, 0xb2, 0x3c, 0x4d],
                };
                assert_eq!(file[..4], expect_magic);
                let out = read_all(&file, DEFAULT_BLOCK_SIZE).unwrap();
                assert!(out.err.is_none(), "{:?}", out.err);
                let want = sample_records();
                assert_eq!(out.recs.len(), want.len());
                for ((rec, data), (sec, frac, wdata, orig)) in out.recs.iter().zip(&want) {
                    let frac_ns = if nanos {
                        u64::from(*frac)
                    } else {
                        u64::from(*frac) * 1000
                    };
                    assert_eq!(rec.ts_nanos, u64::from(*sec) * 1_000_000_000 + frac_ns);
                    assert_eq!(rec.link_type, 1);
                    assert_eq!(rec.interface, 0);
                    assert_eq!(rec.caplen as usize, wdata.len());
                    assert_eq!(rec.origlen, *orig);
                    assert_eq!(data, wdata);
                }
                let first_ts = if nanos {
                    1_700_000_000_000_123_456
                } else {
                    1_700_000_000_123_456_000
                };
                assert_eq!(out.recs[0].0.ts_nanos, first_ts);
                assert_eq!(
                    out.recs[3].0.ts_nanos,
                    4_294_967_295_000_000_000 + if nanos { 1 } else { 1000 }
                );
                assert_eq!(out.recs[0].0.data_start, 16);
                assert_eq!(out.stats.zero_length_packets, 1);
                assert_eq!(out.stats.truncated_packets, 1);
                assert_eq!(out.stats.bytes_read, file.len() as u64);
                assert_eq!(out.consumed, file.len() as u64);
            }
        }
    }

    #[test]
    fn modified_pcap_format_both_byte_orders() {
        for be in [false, true] {
            let data = pattern(9, 50);
            let (file, _) = pcap_file_ends(be, false, true, 1, 65535, &[(10, 20, &data, 50)]);
            let magic: [u8; 4] = if be {
                [0xa1, 0xb2, 0xcd, 0x34]
            } else {
                [0x34, 0xcd, 0xb2, 0xa1]
            };
            assert_eq!(file[..4], magic);
            let out = read_all(&file, 64).unwrap();
            assert!(out.err.is_none(), "{:?}", out.err);
            assert_eq!(out.recs.len(), 1);
            assert_eq!(out.recs[0].0.ts_nanos, 10_000_020_000);
            assert_eq!(out.recs[0].0.data_start, 24);
            assert_eq!(out.recs[0].1, data);
        }
    }

    #[test]
    fn classic_link_type_extension_bits_are_masked() {
        let data = pattern(1, 20);
        // LT_FCS_LENGTH_PRESENT | FCS length 4, link type EN10MB.
        let file = pcap_file(false, false, 0x4400_0001, &[(1, 2, &data, 20)]);
        let out = read_all(&file, 64).unwrap();
        assert_eq!(out.recs.len(), 1);
        assert_eq!(out.recs[0].0.link_type, 1);
    }

    #[test]
    fn pcapng_interfaces_with_resolutions_and_unsupported_link() {
        let mut ng = Ng::new();
        ng.shb(false)
            .idb(1, Some(9), None) // 0: EN10MB, ns
            .idb(113, Some(0x8a), None) // 1: LINUX_SLL, 2^-10 s
            .idb(105, None, None) // 2: IEEE802_11, unsupported
            .idb(276, None, None) // 3: LINUX_SLL2, default us
            .epb(0, 1_700_000_000_123_456_789, &pattern(1, 60), 60)
            .epb(1, 1_700_000_000 * 1024 + 512, &pattern(2, 61), 61)
            .epb(2, 5, &pattern(3, 62), 62)
            .epb(3, 1_700_000_000_123_456, &pattern(4, 63), 63)
            .epb(2, 6, &pattern(5, 64), 64)
            .epb(0, 7, &pattern(6, 65), 100);
        let file = ng.bytes();
        let out = read_all(&file, DEFAULT_BLOCK_SIZE).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        let got: Vec<(u64, u32, u32)> = out
            .recs
            .iter()
            .map(|(r, _)| (r.ts_nanos, r.link_type, r.interface))
            .collect();
        assert_eq!(
            got,
            vec![
                (1_700_000_000_123_456_789, 1, 0),
                (1_700_000_000_500_000_000, 113, 1),
                (1_700_000_000_123_456_000, 276, 3),
                (7, 1, 0),
            ]
        );
        let datas: Vec<Vec<u8>> = out.recs.iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(
            datas,
            vec![
                pattern(1, 60),
                pattern(2, 61),
                pattern(4, 63),
                pattern(6, 65)
            ]
        );
        assert_eq!(out.recs[3].0.origlen, 100);
        assert_eq!(out.stats.skipped_unsupported_link, 2);
        assert_eq!(out.stats.skipped_bad_interface, 0);
        assert_eq!(out.stats.truncated_packets, 1);
        assert_eq!(out.consumed, file.len() as u64);
    }

    #[test]
    fn pcapng_big_endian_section_then_little_endian_section() {
        let mut ng = Ng::new();
        ng.shb(true)
            .idb(101, Some(6), Some(100)) // 0: RAW, us, +100 s
            .idb(1, Some(9), None) // 1: EN10MB, ns
            .epb(1, 42, &pattern(1, 30), 30)
            .epb(0, 5_000_000, &pattern(2, 31), 31);
        let second_section = ng.len();
        ng.shb(false)
            .idb(228, Some(3), Some(-1)) // 0: IPV4, ms, -1 s
            .epb(0, 2_500, &pattern(3, 32), 32)
            .epb(1, 9, &pattern(4, 33), 33); // interface 1 no longer exists
        let file = ng.bytes();
        assert_eq!(file[8..12], [0x1a, 0x2b, 0x3c, 0x4d]);
        assert_eq!(
            file[second_section + 8..second_section + 12],
            [0x4d, 0x3c, 0x2b, 0x1a]
        );
        let out = read_all(&file, DEFAULT_BLOCK_SIZE).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        let got: Vec<(u64, u32, u32, Vec<u8>)> = out
            .recs
            .iter()
            .map(|(r, d)| (r.ts_nanos, r.link_type, r.interface, d.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (42, 1, 1, pattern(1, 30)),
                (105_000_000_000, 101, 0, pattern(2, 31)),
                (1_500_000_000, 228, 0, pattern(3, 32)),
            ]
        );
        assert_eq!(out.stats.skipped_bad_interface, 1);
    }

    #[test]
    fn pcapng_unknown_blocks_are_skipped_and_counted() {
        let mut ng = Ng::new();
        ng.shb(false)
            .other(4, &[0; 8]) // NRB before any interface
            .idb(1, None, None)
            .epb(0, 1, &pattern(1, 10), 10)
            .other(5, &[1; 20]) // ISB
            .other(0x0000_0bad, &[2; 7]) // custom
            .other(0x8000_0001, &[]) // local use
            .other(0x0000_000a, &[3; 12]) // DSB
            .epb(0, 2, &pattern(2, 11), 11);
        let out = read_all(&ng.bytes(), DEFAULT_BLOCK_SIZE).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        assert_eq!(out.recs.len(), 2);
        assert_eq!(out.recs[1].1, pattern(2, 11));
        assert_eq!(out.stats.skipped_unknown_blocks, 5);
    }

    #[test]
    fn pcapng_simple_and_obsolete_packet_blocks() {
        let mut ng = Ng::new();
        ng.shb(false)
            .spb(10, &pattern(0, 10)) // no interface yet: skipped
            .idb(1, Some(9), None)
            .spb(10, &pattern(1, 10)) // before any timestamp: 0
            .epb(0, 42, &pattern(2, 20), 20)
            .spb(100, &pattern(3, 60)) // cut: caplen 60, origlen 100
            .spb(10, &pattern(4, 10)) // data padded to 12: caplen 10
            .pb(0, 77, &pattern(5, 15), 15)
            .pb(3, 78, &pattern(6, 15), 15); // unknown interface
        let out = read_all(&ng.bytes(), DEFAULT_BLOCK_SIZE).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        let got: Vec<(u64, u32, u32, Vec<u8>)> = out
            .recs
            .iter()
            .map(|(r, d)| (r.ts_nanos, r.caplen, r.origlen, d.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, 10, pattern(1, 10)),
                (42, 20, 20, pattern(2, 20)),
                (42, 60, 100, pattern(3, 60)),
                (42, 10, 10, pattern(4, 10)),
                (77, 15, 15, pattern(5, 15)),
            ]
        );
        assert_eq!(out.stats.skipped_bad_interface, 2);
        assert_eq!(out.stats.truncated_packets, 1);
    }

    #[test]
    fn pcapng_timestamps_saturate_and_handle_extreme_resolutions() {
        let cases: [(Option<u8>, Option<i64>, u64, u64); 9] = [
            (Some(0), None, u64::MAX, u64::MAX), // seconds: saturates
            (Some(19), None, u64::MAX, u64::MAX / 10_000_000_000), // 10^-19
            (Some(100), None, u64::MAX, 0),      // 10^-100: below 1 ns
            (Some(0x80 | 127), None, u64::MAX, 0), // 2^-127
            (Some(0x80 | 30), None, 3 << 30, 3_000_000_000), // 2^-30
            (Some(0x80), None, 2, 2_000_000_000), // 2^0 = seconds
            (Some(9), Some(-5), 1_000_000_000, 0), // negative offset clamps at 0
            (Some(9), Some(i64::MAX), 1, u64::MAX), // huge offset saturates
            (Some(9), Some(i64::MIN), u64::MAX, 0),
        ];
        for (resol, offset, raw, want) in cases {
            let mut ng = Ng::new();
            ng.shb(false)
                .idb(1, resol, offset)
                .epb(0, raw, &[1, 2, 3], 3);
            let out = read_all(&ng.bytes(), DEFAULT_BLOCK_SIZE).unwrap();
            assert!(out.err.is_none(), "{:?}", out.err);
            assert_eq!(out.recs.len(), 1);
            assert_eq!(
                out.recs[0].0.ts_nanos, want,
                "resol {resol:?} offset {offset:?}"
            );
        }
    }

    #[test]
    fn records_straddling_blocks_match_one_big_block() {
        let big = pattern(7, 1000);
        let mid = pattern(8, 300);
        let files: Vec<Vec<u8>> = vec![
            sample_pcap(false, false).0,
            sample_pcap(true, true).0,
            pcap_file_ends(
                true,
                false,
                true,
                1,
                65535,
                &[(1, 2, &big, 1000), (3, 4, &mid, 300)],
            )
            .0,
            pcap_file(
                false,
                true,
                113,
                &[
                    (1, 1, &big, 1000),
                    (2, 2, &[], 0),
                    (3, 3, &mid, 300),
                    (4, 4, &big, 1000),
                ],
            ),
            sample_pcapng().bytes(),
            {
                let mut ng = Ng::new();
                ng.shb(true)
                    .idb(1, None, None)
                    .epb(0, 1, &big, 1000)
                    .other(5, &[0; 200])
                    .epb(0, 2, &mid, 300)
                    .shb(false)
                    .idb(276, Some(9), None)
                    .spb(1000, &big)
                    .epb(0, 3, &mid, 300);
                ng.bytes()
            },
        ];
        for (i, file) in files.iter().enumerate() {
            let reference = read_all(file, DEFAULT_BLOCK_SIZE).unwrap();
            assert!(reference.err.is_none(), "file {i}: {:?}", reference.err);
            assert!(!reference.recs.is_empty());
            let variants = [
                read_with(Trickle(Cursor::new(file.clone())), 64, supported).unwrap(),
                read_with(
                    Flaky {
                        inner: Cursor::new(file.clone()),
                        n: 0,
                    },
                    100,
                    supported,
                )
                .unwrap(),
                read_all(file, 64).unwrap(),
                read_all(file, 257).unwrap(),
            ];
            for v in variants {
                assert!(v.err.is_none(), "file {i}: {:?}", v.err);
                assert_eq!(v.essence(), reference.essence(), "file {i}");
                assert_eq!(v.stats.records, reference.stats.records);
                assert_eq!(
                    v.stats.skipped_unknown_blocks,
                    reference.stats.skipped_unknown_blocks
                );
                assert_eq!(v.stats.bytes_read, file.len() as u64);
                assert_eq!(v.consumed, file.len() as u64);
            }
        }
    }

    /// Cuts a valid file at every byte: never panics; records before the cut are all
    /// delivered; the end is clean exactly at record boundaries, otherwise Truncated at
    /// the start of the partial record.
    fn check_every_cut(file: &[u8], header_end: usize, ends: &[usize], packet_ends: &[usize]) {
        let full = read_all(file, DEFAULT_BLOCK_SIZE).unwrap();
        assert!(full.err.is_none());
        assert_eq!(full.recs.len(), packet_ends.len());
        for cut in 0..=file.len() {
            let part = &file[..cut];
            for trickle in [false, true] {
                let res = if trickle {
                    read_with(Trickle(Cursor::new(part.to_vec())), 64, supported)
                } else {
                    read_all(part, 64)
                };
                if cut < header_end {
                    let err = res.expect_err("header cut must fail in new()");
                    assert_eq!(err.offset, 0);
                    match (cut, &err.kind) {
                        (0, CaptureErrorKind::Empty) => {}
                        (
                            _,
                            CaptureErrorKind::Truncated {
                                part: TruncatedPart::FileHeader,
                                available,
                                ..
                            },
                        ) => assert_eq!(*available, cut as u64),
                        _ => panic!("cut {cut}: unexpected {err}"),
                    }
                    continue;
                }
                let out = res.unwrap();
                let whole = packet_ends.iter().filter(|&&e| e <= cut).count();
                assert_eq!(out.recs.len(), whole, "cut {cut}");
                assert_eq!(out.essence(), full.essence()[..whole].to_vec(), "cut {cut}");
                let last_end = ends
                    .iter()
                    .copied()
                    .filter(|&e| e <= cut)
                    .max()
                    .unwrap_or(header_end)
                    .max(header_end);
                if last_end == cut {
                    assert!(out.err.is_none(), "cut {cut}: {:?}", out.err);
                    assert_eq!(out.consumed, cut as u64);
                } else {
                    let err = out.err.expect("partial record must be an error");
                    assert!(
                        matches!(err.kind, CaptureErrorKind::Truncated { .. }),
                        "cut {cut}: {err}"
                    );
                    assert_eq!(err.offset, last_end as u64, "cut {cut}: {err}");
                }
            }
        }
    }

    #[test]
    fn truncation_at_every_byte_classic() {
        for (be, nanos) in [(false, false), (true, true)] {
            let (file, ends) = sample_pcap(be, nanos);
            check_every_cut(&file, 24, &ends, &ends);
        }
    }

    #[test]
    fn truncation_at_every_byte_pcapng() {
        let ng = sample_pcapng();
        let file = ng.bytes();
        check_every_cut(&file, ng.ends()[0], ng.ends(), ng.packet_ends());
    }

    #[test]
    fn truncated_record_message() {
        let data = pattern(1, 212);
        let mut file = pcap_file(false, false, 1, &[(1, 0, &data, 1514)]);
        file[24 + 8..24 + 12].copy_from_slice(&1514u32.to_le_bytes());
        let mut rd = CaptureReader::new("big.pcap", Cursor::new(file), supported).unwrap();
        let (mut block, mut recs) = (Vec::new(), Vec::new());
        let err = rd.next_block(&mut block, &mut recs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "big.pcap: byte 24: truncated record: header says 1514 bytes, file ends after 212"
        );
    }

    #[test]
    fn error_after_records_is_deferred_to_next_call() {
        let a = pattern(1, 40);
        let b = pattern(2, 40);
        let mut file = pcap_file(true, false, 1, &[(1, 0, &a, 40), (2, 0, &b, 40)]);
        file.extend_from_slice(&[0, 0, 0, 3, 0, 0]); // partial third header
        let mut rd = CaptureReader::new("t.pcap", Cursor::new(file), supported).unwrap();
        let (mut block, mut recs) = (Vec::new(), Vec::new());
        assert!(rd.next_block(&mut block, &mut recs).unwrap());
        assert_eq!(recs.len(), 2);
        assert_eq!(rd.bytes_consumed(), 24 + 2 * 56);
        recs.clear();
        let err = rd.next_block(&mut block, &mut recs).unwrap_err();
        assert!(recs.is_empty());
        assert_eq!(err.offset, 24 + 2 * 56);
        assert!(matches!(
            err.kind,
            CaptureErrorKind::Truncated {
                part: TruncatedPart::RecordHeader,
                needed: 16,
                available: 6
            }
        ));
        assert!(!rd.next_block(&mut block, &mut recs).unwrap());
        assert!(!rd.next_block(&mut block, &mut recs).unwrap());
    }

    #[test]
    fn absurd_caplen_is_rejected_without_allocating() {
        let good = pattern(1, 30);
        let mut file = pcap_file(false, false, 1, &[(1, 0, &good, 30), (2, 0, &good, 30)]);
        let second = 24 + 16 + 30;
        file[second + 8..second + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut rd = CaptureReader::new("t.pcap", Cursor::new(file), supported).unwrap();
        rd.set_block_size(64);
        let (mut block, mut recs) = (Vec::new(), Vec::new());
        let mut delivered = 0;
        let err = loop {
            recs.clear();
            match rd.next_block(&mut block, &mut recs) {
                Ok(true) => delivered += recs.len(),
                Ok(false) => panic!("absurd length accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(delivered, 1);
        assert!(block.capacity() < 4096, "capacity {}", block.capacity());
        assert_eq!(err.offset, second as u64);
        assert!(matches!(
            err.kind,
            CaptureErrorKind::AbsurdLength {
                length: 0xffff_ffff,
                limit: 262_144,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            format!("t.pcap: byte {second}: absurd record length 4294967295 (limit 262144)")
        );

        // pcapng: EPB caplen beyond its block, and a block length beyond the cap.
        let mut ng = Ng::new();
        ng.shb(false).idb(1, None, None);
        let epb_at = ng.len();
        ng.epb(0, 1, &good, 30);
        let mut file = ng.bytes();
        file[epb_at + 20..epb_at + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        let out = read_all(&file, 64).unwrap();
        let err = out.err.unwrap();
        assert_eq!(err.offset, epb_at as u64);
        assert!(matches!(
            err.kind,
            CaptureErrorKind::AbsurdLength {
                length: 0xffff_ffff,
                ..
            }
        ));

        let mut file = ng.bytes();
        file[epb_at + 4..epb_at + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let mut rd = CaptureReader::new("t.pcapng", Cursor::new(file), supported).unwrap();
        rd.set_block_size(64);
        let mut block = Vec::new();
        let mut err = None;
        for _ in 0..10 {
            recs.clear();
            if let Err(e) = rd.next_block(&mut block, &mut recs) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("huge block length must fail");
        assert!(block.capacity() < 4096, "capacity {}", block.capacity());
        assert_eq!(err.offset, epb_at as u64);
        assert!(matches!(
            err.kind,
            CaptureErrorKind::AbsurdLength {
                what: "block length",
                ..
            }
        ));
    }

    #[test]
    fn classic_snaplen_caps() {
        let big = pattern(5, 262_144);
        // Exactly MAXIMUM_SNAPLEN with a small header snaplen: accepted, buffer grows.
        let (file, _) = pcap_file_ends(false, false, false, 1, 1500, &[(1, 0, &big, 262_144)]);
        let out = read_all(&file, 64).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        assert_eq!(out.recs[0].1, big);
        // One more byte with snaplen 1500: absurd.
        let bigger = pattern(5, 262_145);
        let (file, _) = pcap_file_ends(false, false, false, 1, 1500, &[(1, 0, &bigger, 262_145)]);
        let err = read_all(&file, 64).unwrap().err.unwrap();
        assert!(matches!(err.kind, CaptureErrorKind::AbsurdLength { .. }));
        // ... but fine when the header's snaplen allows it.
        let (file, _) = pcap_file_ends(true, false, false, 1, 300_000, &[(1, 0, &bigger, 262_145)]);
        let out = read_all(&file, 64).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        assert_eq!(out.recs[0].1, bigger);
        // A huge snaplen does not lift the hard cap.
        let mut file = pcap_file_ends(false, false, false, 1, u32::MAX, &[(1, 0, &[], 0)]).0;
        file[24 + 8..24 + 12].copy_from_slice(&(MAX_BLOCK_LEN + 1).to_le_bytes());
        let err = read_all(&file, 64).unwrap().err.unwrap();
        assert!(matches!(
            err.kind,
            CaptureErrorKind::AbsurdLength { limit, .. } if limit == u64::from(MAX_BLOCK_LEN)
        ));
    }

    #[test]
    fn pcapng_bad_block_lengths_are_errors() {
        let mut ng = Ng::new();
        ng.shb(false).idb(1, None, None);
        let at = ng.len();
        ng.epb(0, 1, &pattern(1, 16), 16)
            .epb(0, 2, &pattern(2, 16), 16);
        let base = ng.bytes();
        let block_len = u32::from_le_bytes(base[at + 4..at + 8].try_into().unwrap());
        let cases: Vec<(usize, u32, &str)> = vec![
            (at + 4, 13, "not a multiple of 4"),
            (at + 4, 8, "less than 12"),
            (
                at + block_len as usize - 4,
                block_len + 4,
                "trailing length",
            ),
            (at + 4, 24, "less than 32"),
        ];
        for (field, value, msg) in cases {
            let mut file = base.clone();
            file[field..field + 4].copy_from_slice(&value.to_le_bytes());
            if msg == "less than 32" {
                // keep the block self-consistent: shrink it to 24 bytes
                file.truncate(at);
                file.extend_from_slice(&EPB_TYPE.to_le_bytes());
                file.extend_from_slice(&24u32.to_le_bytes());
                file.extend_from_slice(&[0; 12]);
                file.extend_from_slice(&24u32.to_le_bytes());
            }
            let out = read_all(&file, 64).unwrap();
            let err = out.err.expect(msg);
            assert_eq!(err.offset, at as u64, "{err}");
            assert!(err.to_string().contains(msg), "{err}");
            assert!(err
                .to_string()
                .starts_with(&format!("test.pcap: byte {at}: ")));
        }
    }

    #[test]
    fn later_section_with_bad_byte_order_magic_fails() {
        let mut ng = Ng::new();
        ng.shb(false).idb(1, None, None).epb(0, 1, &[1], 1);
        let at = ng.len();
        ng.shb(false);
        let mut file = ng.bytes();
        file[at + 8..at + 12].copy_from_slice(&[1, 2, 3, 4]);
        let out = read_all(&file, DEFAULT_BLOCK_SIZE).unwrap();
        assert_eq!(out.recs.len(), 1);
        let err = out.err.unwrap();
        assert_eq!(err.offset, at as u64);
        assert!(err.to_string().contains("byte-order magic"), "{err}");
    }

    #[test]
    fn wrong_magic_empty_and_short_files() {
        let elf =
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00\x01\x00\x00\x00";
        let err = CaptureReader::new("x.bin", Cursor::new(elf.to_vec()), supported)
            .err()
            .unwrap();
        assert!(matches!(
            err.kind,
            CaptureErrorKind::NotACapture { magic: 0x7f45_4c46 }
        ));
        assert_eq!(
            err.to_string(),
            "x.bin: byte 0: not a capture file (magic 0x7f454c46; expected pcap or pcapng)"
        );
        let err = CaptureReader::new("e.pcap", Cursor::new(Vec::new()), supported)
            .err()
            .unwrap();
        assert!(matches!(err.kind, CaptureErrorKind::Empty));
        assert!(err.to_string().starts_with("e.pcap: byte 0: empty file"));
        let (file, _) = sample_pcap(false, false);
        for len in [3, 10] {
            let err = CaptureReader::new("s.pcap", Cursor::new(file[..len].to_vec()), supported)
                .err()
                .unwrap();
            assert!(
                matches!(
                    err.kind,
                    CaptureErrorKind::Truncated { part: TruncatedPart::FileHeader, available, .. }
                        if available == len as u64
                ),
                "{err}"
            );
        }
        let ng = sample_pcapng().bytes();
        let err = CaptureReader::new("s.pcapng", Cursor::new(ng[..20].to_vec()), supported)
            .err()
            .unwrap();
        assert!(err.to_string().contains("truncated file header"), "{err}");
    }

    #[test]
    fn pcapng_version_two_is_rejected() {
        let mut file = sample_pcapng().bytes();
        file[12..14].copy_from_slice(&2u16.to_le_bytes());
        let err = CaptureReader::new("v.pcapng", Cursor::new(file), supported)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unsupported pcapng version 2.0"),
            "{err}"
        );
    }

    #[test]
    fn classic_unsupported_link_type_fails_in_new() {
        let file = pcap_file(false, false, 105, &[(1, 0, &[1, 2, 3], 3)]);
        let err = CaptureReader::new("a.pcap", Cursor::new(file), supported)
            .err()
            .unwrap();
        assert!(matches!(
            err.kind,
            CaptureErrorKind::UnsupportedLinkType { link_type: 105 }
        ));
        assert_eq!(
            err.to_string(),
            "a.pcap: byte 20: unsupported link type 105 (IEEE802_11)"
        );
        let file = pcap_file(true, true, 4242, &[]);
        let err = CaptureReader::new("b.pcap", Cursor::new(file), supported)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "b.pcap: byte 20: unsupported link type 4242"
        );
        // The same link type is fine when the caller supports it.
        let file = pcap_file(false, false, 105, &[(1, 0, &[1, 2, 3], 3)]);
        let out = read_with(Cursor::new(file), 64, everything).unwrap();
        assert_eq!(out.recs[0].0.link_type, 105);
    }

    #[test]
    fn header_only_files_are_clean_and_empty() {
        let mut ng = Ng::new();
        ng.shb(true);
        for file in [pcap_file(true, false, 1, &[]), ng.bytes()] {
            let mut rd = CaptureReader::new("h", Cursor::new(file.clone()), supported).unwrap();
            let (mut block, mut recs) = (Vec::new(), Vec::new());
            assert!(!rd.next_block(&mut block, &mut recs).unwrap());
            assert!(recs.is_empty());
            assert_eq!(rd.bytes_consumed(), file.len() as u64);
            assert!(!rd.next_block(&mut block, &mut recs).unwrap());
        }
    }

    #[test]
    fn zero_length_and_snaplen_cut_packets_are_delivered_and_counted() {
        let d = pattern(1, 20);
        let file = pcap_file(
            false,
            true,
            1,
            &[
                (1, 0, &[], 0),
                (2, 0, &d, 60),
                (3, 0, &[], 54),
                (4, 0, &d, 20),
            ],
        );
        let out = read_all(&file, 64).unwrap();
        assert_eq!(out.recs.len(), 4);
        assert_eq!(out.stats.zero_length_packets, 2);
        assert_eq!(out.stats.truncated_packets, 2);
        assert_eq!(out.recs[2].0.caplen, 0);
        assert_eq!(out.recs[2].0.origlen, 54);
    }

    #[test]
    fn too_many_interfaces_is_an_error() {
        let mut ng = Ng::new();
        ng.shb(false);
        let mut w = W::new(false);
        for _ in 0..=MAX_INTERFACES {
            w.u32(IDB_TYPE);
            w.u32(20);
            w.u16(1);
            w.u16(0);
            w.u32(0);
            w.u32(20);
        }
        let mut file = ng.bytes();
        let last = file.len() + MAX_INTERFACES * 20;
        file.extend_from_slice(&w.out);
        let out = read_all(&file, DEFAULT_BLOCK_SIZE).unwrap();
        let err = out.err.unwrap();
        assert_eq!(err.offset, last as u64);
        assert!(err.to_string().contains("interfaces"), "{err}");
    }

    #[test]
    fn io_errors_carry_the_offset() {
        let (file, _) = sample_pcap(false, false);
        let err = read_with(
            Broken {
                data: Cursor::new(file.clone()),
                left: 50,
            },
            64,
            supported,
        )
        .unwrap()
        .err
        .unwrap();
        assert!(matches!(err.kind, CaptureErrorKind::Io(_)));
        assert_eq!(err.offset, 50);
        assert_eq!(
            err.to_string(),
            "test.pcap: byte 50: read error: disk on fire"
        );
        assert!(std::error::Error::source(&err).is_some());
        let err = read_with(
            Broken {
                data: Cursor::new(file),
                left: 10,
            },
            64,
            supported,
        )
        .unwrap_err();
        assert!(matches!(err.kind, CaptureErrorKind::Io(_)));
    }

    #[test]
    fn block_size_is_clamped_and_block_reused() {
        let (file, _) = sample_pcap(false, false);
        let mut rd = CaptureReader::new("c", Cursor::new(file), supported).unwrap();
        rd.set_block_size(0);
        assert_eq!(rd.block_size(), MIN_BLOCK_SIZE);
        rd.set_block_size(usize::MAX);
        assert_eq!(rd.block_size(), MAX_BLOCK_SIZE);
        rd.set_block_size(1 << 12);
        let mut block = vec![0xee; 10]; // stale content is replaced
        let mut recs = Vec::new();
        assert!(rd.next_block(&mut block, &mut recs).unwrap());
        assert_eq!(recs.len(), 4);
        assert_eq!(rd.pcap_link_type(), Some(1));
        assert!(!rd.is_pcapng());
        assert_eq!(rd.file_name(), "c");
    }

    /// The test kit's seedable generator.
    use qmwatch_testkit::rng::Rng;

    #[test]
    fn random_mutations_never_panic() {
        let seeds: Vec<Vec<u8>> = vec![
            sample_pcap(false, false).0,
            sample_pcap(true, true).0,
            pcap_file_ends(false, false, true, 1, 65535, &[(1, 2, &pattern(1, 40), 40)]).0,
            sample_pcapng().bytes(),
            {
                let mut ng = Ng::new();
                ng.shb(true)
                    .idb(1, Some(0x8a), Some(7))
                    .idb(105, None, None)
                    .epb(1, 3, &pattern(2, 30), 30)
                    .epb(0, 4, &pattern(3, 30), 30)
                    .spb(30, &pattern(4, 30));
                ng.bytes()
            },
        ];
        let interesting: [u32; 16] = [
            0,
            1,
            2,
            3,
            6,
            12,
            13,
            28,
            32,
            0x7fff_ffff,
            0xffff_ffff,
            0xffff_fff0,
            MAX_BLOCK_LEN,
            MAX_BLOCK_LEN + 4,
            SHB_TYPE,
            0x1a2b_3c4d,
        ];
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut errors, mut clean) = (0, 0);
        for iter in 0..2000 {
            let mut file = seeds[iter % seeds.len()].clone();
            for _ in 0..1 + rng.index(4) {
                let at = rng.index(file.len());
                match rng.index(5) {
                    0 => file[at] = rng.next_u64() as u8,
                    1 => file[at] ^= 1 << rng.index(8),
                    2 => {
                        let v = interesting[rng.index(interesting.len())];
                        let b = if rng.index(2) == 0 {
                            v.to_le_bytes()
                        } else {
                            v.to_be_bytes()
                        };
                        let at = at & !3;
                        for (i, x) in b.iter().enumerate() {
                            if let Some(slot) = file.get_mut(at + i) {
                                *slot = *x;
                            }
                        }
                    }
                    3 => file.truncate(at),
                    _ => {
                        let len = rng.index(64);
                        let chunk: Vec<u8> = file[at..(at + len).min(file.len())].to_vec();
                        let to = rng.index(file.len());
                        file.splice(to..to, chunk);
                    }
                }
                if file.is_empty() {
                    break;
                }
            }
            let block_size = [64, 97, 4096, DEFAULT_BLOCK_SIZE][rng.index(4)];
            let sup: fn(u32) -> bool = if rng.index(4) == 0 {
                everything
            } else {
                supported
            };
            let res = if rng.index(3) == 0 {
                read_with(Trickle(Cursor::new(file.clone())), block_size, sup)
            } else {
                read_with(Cursor::new(file.clone()), block_size, sup)
            };
            match res {
                Ok(out) => {
                    assert!(out.stats.bytes_read <= file.len() as u64);
                    assert!(out.consumed <= file.len() as u64);
                    if let Some(e) = out.err {
                        assert!(!e.to_string().is_empty());
                        errors += 1;
                    } else {
                        assert_eq!(out.consumed, file.len() as u64);
                        clean += 1;
                    }
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    errors += 1;
                }
            }
        }
        // Both outcomes must actually be exercised.
        assert!(errors > 100 && clean > 100, "errors {errors} clean {clean}");
    }

    #[test]
    fn real_captures() {
        // The repository's own fixtures: present on every checkout, so this
        // never passes by skipping.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("pcap") | Some("pcapng")
                )
            })
            .collect();
        paths.sort();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "neg-smtp.pcap",
            "qmqp-postfix-authorized.pcap",
            "qmqp-postfix-concurrent.pcap",
            "qmtp-closed-relay-209.pcap",
            "qmtp-ipv6.pcapng",
            "qmtp-open-relay-2209.pcap",
            "qmtp-pipelined.pcap",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let out = read_with(
                std::fs::File::open(&path).unwrap(),
                DEFAULT_BLOCK_SIZE,
                supported,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(out.err.is_none(), "{}", out.err.unwrap());
            assert!(!out.recs.is_empty(), "{name}: no records");
            assert_eq!(out.consumed, bytes.len() as u64);
            let want_link = match name.as_str() {
                "neg-smtp.pcap" => Some(113),
                "qmqp-postfix-concurrent.pcap" => Some(276),
                "qmqp-postfix-authorized.pcap"
                | "qmtp-closed-relay-209.pcap"
                | "qmtp-open-relay-2209.pcap"
                | "qmtp-pipelined.pcap"
                | "qmtp-ipv6.pcapng" => Some(1),
                _ => None,
            };
            if let Some(lt) = want_link {
                assert!(out.recs.iter().all(|(r, _)| r.link_type == lt), "{name}");
            }
            // Plausible capture times (2020..2100) and non-decreasing order is not
            // guaranteed across interfaces, so only check the range.
            assert!(out
                .recs
                .iter()
                .all(|(r, _)| r.ts_nanos > 1_577_836_800_000_000_000
                    && r.ts_nanos < 4_102_444_800_000_000_000));
            let tiny = read_with(Trickle(Cursor::new(bytes)), 64, supported).unwrap();
            assert_eq!(tiny.essence(), out.essence(), "{name}");
            println!(
                "{name}: {} records, {} bytes, link types {:?}, stats {:?}",
                out.recs.len(),
                out.stats.bytes_read,
                out.recs
                    .iter()
                    .map(|(r, _)| r.link_type)
                    .collect::<std::collections::BTreeSet<_>>(),
                out.stats
            );
        }
    }
}
