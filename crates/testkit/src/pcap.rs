//! The one capture writer of the tests, benchmarks and generator: classic
//! pcap ([`PcapWriter`], streaming, either byte order, micro- or nanosecond
//! timestamps, the "modified" record format) and pcapng ([`Pcapng`], built
//! block by block in memory, either byte order, any options).
//!
//! Written from the file formats' definitions (libpcap's `pcap-savefile(5)`,
//! the pcapng draft), never from qmwatch's reader: a test must not share a
//! misreading with the code it tests.

use std::io::{self, Write};

pub const LINKTYPE_ETHERNET: u32 = 1;

/// Classic pcap magic numbers (as written in the file's byte order).
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Alexey Kuznetzov's "modified" pcap: 8 more bytes per record header.
pub const MAGIC_MODIFIED: u32 = 0xa1b2_cd34;

/// pcapng block types.
pub const SHB_TYPE: u32 = 0x0a0d_0d0a;
pub const IDB_TYPE: u32 = 1;
pub const PB_TYPE: u32 = 2;
pub const SPB_TYPE: u32 = 3;
pub const EPB_TYPE: u32 = 6;

/// The header of a classic pcap file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcapFormat {
    pub big_endian: bool,
    /// Nanosecond timestamps (else microseconds).
    pub nanos: bool,
    /// The "modified" format (ifindex, protocol, packet type per record);
    /// its timestamps are microseconds.
    pub modified: bool,
    pub link_type: u32,
    pub snaplen: u32,
}

impl PcapFormat {
    /// Little-endian, microseconds, Ethernet, snap length 262,144: what
    /// tcpdump writes, and what the generator writes.
    pub const MICROS: PcapFormat = PcapFormat {
        big_endian: false,
        nanos: false,
        modified: false,
        link_type: LINKTYPE_ETHERNET,
        snaplen: 262_144,
    };
    /// The same with nanosecond timestamps.
    pub const NANOS: PcapFormat = PcapFormat {
        nanos: true,
        ..PcapFormat::MICROS
    };

    fn magic(&self) -> u32 {
        match (self.modified, self.nanos) {
            (true, _) => MAGIC_MODIFIED,
            (false, true) => MAGIC_NANOS,
            (false, false) => MAGIC_MICROS,
        }
    }
}

/// Byte-order-aware appending to a buffer.
#[derive(Clone, Debug, Default)]
pub struct Bytes {
    pub big_endian: bool,
    pub out: Vec<u8>,
}

impl Bytes {
    pub fn new(big_endian: bool) -> Bytes {
        Bytes {
            big_endian,
            out: Vec::new(),
        }
    }
    pub fn u16(&mut self, v: u16) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    pub fn u32(&mut self, v: u32) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    pub fn u64(&mut self, v: u64) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    /// Zero bytes up to a multiple of 4.
    pub fn pad4(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

/// Streams classic pcap records to a writer; counts what it wrote.
pub struct PcapWriter<W: Write> {
    out: W,
    format: PcapFormat,
    pub packets: u64,
    /// Bytes of the file, headers included (so, after a record, the offset
    /// where it ends).
    pub file_bytes: u64,
    /// Bytes on the wire (the records' original lengths).
    pub wire_bytes: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: u64,
}

impl<W: Write> PcapWriter<W> {
    /// [`PcapFormat::MICROS`]. `out` should be buffered.
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_format(out, PcapFormat::MICROS)
    }

    /// Writes the file header.
    pub fn with_format(mut out: W, format: PcapFormat) -> io::Result<Self> {
        let mut h = Bytes::new(format.big_endian);
        h.u32(format.magic());
        h.u16(2);
        h.u16(4);
        h.u32(0); // thiszone
        h.u32(0); // sigfigs
        h.u32(format.snaplen);
        h.u32(format.link_type);
        out.write_all(&h.out)?;
        Ok(PcapWriter {
            out,
            format,
            packets: 0,
            file_bytes: 24,
            wire_bytes: 0,
            first_ts_ns: None,
            last_ts_ns: 0,
        })
    }

    /// One record: `data` as captured, `orig_len` on the wire; `ts_ns` is
    /// nanoseconds since the Unix epoch, written at the file's precision.
    pub fn record(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let sec = (ts_ns / 1_000_000_000) as u32;
        let ns = (ts_ns % 1_000_000_000) as u32;
        let frac = if self.format.nanos && !self.format.modified {
            ns
        } else {
            ns / 1_000
        };
        self.record_raw(sec, frac, data, orig_len)?;
        self.first_ts_ns.get_or_insert(ts_ns);
        self.last_ts_ns = ts_ns;
        Ok(())
    }

    /// One record with its timestamp fields as they are written (a
    /// fraction out of range included, for readers' tests).
    pub fn record_raw(
        &mut self,
        sec: u32,
        frac: u32,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let mut h = Bytes::new(self.format.big_endian);
        h.u32(sec);
        h.u32(frac);
        h.u32(data.len() as u32);
        h.u32(orig_len);
        if self.format.modified {
            h.u32(7); // ifindex
            h.u16(0x0800); // protocol
            h.bytes(&[0, 0]); // packet type, padding
        }
        self.out.write_all(&h.out)?;
        self.out.write_all(data)?;
        self.packets += 1;
        self.file_bytes += (h.out.len() + data.len()) as u64;
        self.wire_bytes += u64::from(orig_len);
        Ok(())
    }

    /// Flushes and hands the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A pcapng option: code and value (padded when written).
pub type Opt<'a> = (u16, &'a [u8]);

/// pcapng built block by block in memory. Each block's byte order is that
/// of the latest section header ([`Pcapng::shb`]). Options, when a block
/// has any, are followed by `opt_endofopt`.
#[derive(Clone, Debug, Default)]
pub struct Pcapng {
    w: Bytes,
    /// Offset where each block starts.
    pub block_starts: Vec<usize>,
    /// Offset where each block ends.
    pub block_ends: Vec<usize>,
    /// Offset where each packet block (EPB, PB, SPB) ends.
    pub packet_ends: Vec<usize>,
}

impl Pcapng {
    /// Nothing written yet.
    pub fn empty() -> Pcapng {
        Pcapng::default()
    }

    /// A little-endian section header without options.
    pub fn new() -> Pcapng {
        let mut p = Pcapng::empty();
        p.shb(false, &[]);
        p
    }

    /// Whether the current section is big-endian.
    pub fn big_endian(&self) -> bool {
        self.w.big_endian
    }

    /// A block of any type; `body` (in the section's byte order, which
    /// [`Bytes`] helps write) is padded to 4 bytes.
    pub fn block_with(&mut self, btype: u32, body: impl FnOnce(&mut Bytes)) -> &mut Self {
        let mut b = Bytes::new(self.w.big_endian);
        body(&mut b);
        b.pad4();
        let total = 12 + b.out.len() as u32;
        self.block_starts.push(self.w.out.len());
        self.w.u32(btype);
        self.w.u32(total);
        self.w.bytes(&b.out);
        self.w.u32(total);
        self.block_ends.push(self.w.out.len());
        self
    }

    /// A block of any type with `body` as it is (padded to 4 bytes).
    pub fn block(&mut self, btype: u32, body: &[u8]) -> &mut Self {
        self.block_with(btype, |b| b.bytes(body))
    }

    /// Options, then `opt_endofopt`; nothing when there are none.
    pub fn options(b: &mut Bytes, opts: &[Opt]) {
        if opts.is_empty() {
            return;
        }
        for (code, value) in opts.iter().chain(std::iter::once(&(0u16, &[][..]))) {
            b.u16(*code);
            b.u16(value.len() as u16);
            b.bytes(value);
            b.pad4();
        }
    }

    /// A section header (version 1.0, length unknown) that switches the
    /// byte order of what follows.
    pub fn shb(&mut self, big_endian: bool, opts: &[Opt]) -> &mut Self {
        self.w.big_endian = big_endian;
        self.block_with(SHB_TYPE, |b| {
            b.u32(0x1a2b_3c4d);
            b.u16(1);
            b.u16(0);
            b.u64(u64::MAX);
            Pcapng::options(b, opts);
        })
    }

    /// An interface description.
    pub fn idb(&mut self, link: u16, snaplen: u32, opts: &[Opt]) -> &mut Self {
        self.block_with(IDB_TYPE, |b| {
            b.u16(link);
            b.u16(0);
            b.u32(snaplen);
            Pcapng::options(b, opts);
        })
    }

    /// An enhanced packet block; `ts` in the interface's resolution.
    pub fn epb(
        &mut self,
        iface: u32,
        ts: u64,
        data: &[u8],
        orig_len: u32,
        opts: &[Opt],
    ) -> &mut Self {
        self.block_with(EPB_TYPE, |b| {
            b.u32(iface);
            b.u32((ts >> 32) as u32);
            b.u32(ts as u32);
            b.u32(data.len() as u32);
            b.u32(orig_len);
            b.bytes(data);
            b.pad4();
            Pcapng::options(b, opts);
        });
        self.packet_ends.push(self.w.out.len());
        self
    }

    /// An obsolete packet block.
    pub fn pb(&mut self, iface: u16, ts: u64, data: &[u8], orig_len: u32) -> &mut Self {
        self.pb_with_drops(iface, 0, ts, data, orig_len)
    }

    /// An obsolete packet block whose drop count (the 16 bits after the
    /// interface id) is `drops`.
    pub fn pb_with_drops(
        &mut self,
        iface: u16,
        drops: u16,
        ts: u64,
        data: &[u8],
        orig_len: u32,
    ) -> &mut Self {
        self.block_with(PB_TYPE, |b| {
            b.u16(iface);
            b.u16(drops);
            b.u32((ts >> 32) as u32);
            b.u32(ts as u32);
            b.u32(data.len() as u32);
            b.u32(orig_len);
            b.bytes(data);
        });
        self.packet_ends.push(self.w.out.len());
        self
    }

    /// A simple packet block.
    pub fn spb(&mut self, orig_len: u32, data: &[u8]) -> &mut Self {
        self.block_with(SPB_TYPE, |b| {
            b.u32(orig_len);
            b.bytes(data);
        });
        self.packet_ends.push(self.w.out.len());
        self
    }

    /// The file so far.
    pub fn bytes(&self) -> &[u8] {
        &self.w.out
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.w.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_header_and_record_layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.record(1_500_000_123_456, &[1, 2, 3], 60).unwrap();
        assert_eq!((w.packets, w.file_bytes, w.wire_bytes), (1, 43, 60));
        let f = w.finish().unwrap();
        assert_eq!(&f[0..4], &MAGIC_MICROS.to_le_bytes());
        assert_eq!(&f[16..20], &262_144u32.to_le_bytes());
        assert_eq!(&f[20..24], &1u32.to_le_bytes());
        assert_eq!(&f[24..28], &1500u32.to_le_bytes());
        assert_eq!(&f[28..32], &123u32.to_le_bytes()); // microseconds
        assert_eq!(&f[32..36], &3u32.to_le_bytes());
        assert_eq!(&f[36..40], &60u32.to_le_bytes());
        assert_eq!(&f[40..], &[1, 2, 3]);

        let fmt = PcapFormat {
            big_endian: true,
            ..PcapFormat::NANOS
        };
        let mut w = PcapWriter::with_format(Vec::new(), fmt).unwrap();
        w.record(1_500_000_123_456, &[9], 1).unwrap();
        let f = w.finish().unwrap();
        assert_eq!(&f[0..4], &MAGIC_NANOS.to_be_bytes());
        assert_eq!(&f[28..32], &123_456u32.to_be_bytes());
    }

    #[test]
    fn modified_records_are_eight_bytes_longer() {
        let fmt = PcapFormat {
            modified: true,
            ..PcapFormat::MICROS
        };
        let mut w = PcapWriter::with_format(Vec::new(), fmt).unwrap();
        w.record_raw(1, 2, &[0; 5], 5).unwrap();
        assert_eq!(w.file_bytes, 24 + 24 + 5);
        let f = w.finish().unwrap();
        assert_eq!(&f[0..4], &MAGIC_MODIFIED.to_le_bytes());
    }

    #[test]
    fn pcapng_blocks_are_padded_and_framed() {
        let mut p = Pcapng::new();
        p.idb(1, 65535, &[(9, &[9])])
            .epb(0, 7, &[1, 2, 3, 4, 5], 5, &[]);
        let b = p.bytes().to_vec();
        assert_eq!(p.block_starts, vec![0, 28, 28 + 32]);
        assert_eq!(p.block_ends, vec![28, 60, 60 + 32 + 8]);
        assert_eq!(p.packet_ends, vec![100]);
        assert_eq!(&b[0..4], &SHB_TYPE.to_le_bytes());
        // The IDB: if_tsresol, then opt_endofopt.
        assert_eq!(&b[44..56], &[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        // Each block's length is written at both ends.
        for (s, e) in p.block_starts.iter().zip(&p.block_ends) {
            assert_eq!(b[s + 4..s + 8], b[e - 4..*e]);
            assert_eq!(
                u32::from_le_bytes(b[s + 4..s + 8].try_into().unwrap()) as usize,
                e - s
            );
        }
        let mut big = Pcapng::empty();
        big.shb(true, &[(4, b"x")]);
        assert!(big.big_endian());
        assert_eq!(&big.bytes()[8..12], &0x1a2b_3c4du32.to_be_bytes());
    }
}
