//! Packet records and reader counters, shared by the file and live paths.
//!
//! Owns: [`PacketRecord`] (a packet as a byte range of a block, with its time
//! and link type) and [`ReaderStats`] (what was delivered and what skipped).
//!
//! Must not: hold packet bytes or decode them: a record is only a range.

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
