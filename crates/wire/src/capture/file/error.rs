//! Capture-file errors: what is wrong with a file, and where.
//!
//! Owns: the error types of the capture-file reader ([`CaptureError`],
//! [`CaptureErrorKind`], [`TruncatedPart`]), their `FILE: byte OFFSET: reason`
//! wording, and the LINKTYPE names used in those messages.
//!
//! Must not: read or frame anything; a message names what the file says, never
//! guesses beyond it.

use std::fmt;
use std::io;

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
    /// The whole file, cut by someone else while it was read (mapped) to
    /// before bytes already read: `needed` is what was read, `available`
    /// the new size.
    WhileRead,
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
                TruncatedPart::WhileRead => write!(
                    f,
                    "truncated while being read: {needed} bytes already read, \
                     file now ends after {available}"
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
