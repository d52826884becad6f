//! Tests of the capture-file reader: every format variant, truncation at every byte,
//! caps, errors and their offsets, and random mutations that must never panic.

use super::*;
use std::io::Cursor;

use super::pcapng::{EPB_TYPE, IDB_TYPE};

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
    fn pb_with_drops(
        &mut self,
        iface: u16,
        drops: u16,
        ts: u64,
        data: &[u8],
        origlen: u32,
    ) -> &mut Self {
        self.0.pb_with_drops(iface, drops, ts, data, origlen);
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

/// Reads `bytes` whole; the mapped reader must give the same on them ([`same_as_mapped`]).
fn read_all(bytes: &[u8], block_size: usize) -> Result<Outcome, CaptureError> {
    same_as_mapped(bytes, block_size, supported);
    read_with(Cursor::new(bytes.to_vec()), block_size, supported)
}

/// A file holding `bytes`, already unlinked (it lives while open).
pub(super) fn temp_file(bytes: &[u8]) -> std::fs::File {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "qmwatch-wire-{}-{}.pcap",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

/// The mapped reader over `bytes` in a file, and the read path over the same bytes, give
/// the same thing call for call: header error, records (`data_start` included) and
/// their bytes, block length, result (kind, offset, message), counters and progress.
fn same_as_mapped(bytes: &[u8], block_size: usize, sup: fn(u32) -> bool) {
    use crate::capture::mapping::Mapping;
    use std::sync::Arc;
    if bytes.is_empty() {
        return; // an empty file is never mapped (the read path says it is empty)
    }
    let map = Arc::new(Mapping::new(temp_file(bytes)).map_err(|e| e.1).unwrap());
    let read = CaptureReader::new("test.pcap", Cursor::new(bytes.to_vec()), sup);
    let mapped = MappedReader::new("test.pcap", map, sup);
    let (mut rd, mut md) = match (read, mapped) {
        (Ok(r), Ok(m)) => (r, m),
        (Err(a), Err(b)) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert_eq!(a.to_string(), b.to_string());
            return;
        }
        (a, b) => panic!("read path {:?}, mapped {:?}", a.map(|_| ()), b.map(|_| ())),
    };
    rd.set_block_size(block_size);
    md.set_block_size(block_size);
    assert_eq!(rd.pcap_link_type(), md.pcap_link_type());
    assert_eq!(rd.is_pcapng(), md.is_pcapng());
    let (mut block, mut r1, mut r2) = (Vec::new(), Vec::new(), Vec::new());
    for call in 0.. {
        assert!(call < 1_000_000, "next_window does not terminate");
        r1.clear();
        r2.clear();
        let s1 = rd.next_block(&mut block, &mut r1);
        let (window, s2) = md.next_window(&mut r2);
        assert_eq!(format!("{s1:?}"), format!("{s2:?}"), "call {call}");
        if let (Err(a), Err(b)) = (&s1, &s2) {
            assert_eq!(a.to_string(), b.to_string());
        }
        assert_eq!(r1, r2, "call {call}");
        if s1.is_ok() {
            assert_eq!(block.len(), window.bytes().len(), "call {call}");
        }
        for r in &r1 {
            let at = r.data_start as usize..r.data_start as usize + r.caplen as usize;
            assert_eq!(block.get(at.clone()), window.bytes().get(at), "call {call}");
        }
        assert_eq!(format!("{:?}", rd.stats()), format!("{:?}", md.stats()));
        assert_eq!(rd.bytes_consumed(), md.bytes_consumed());
        if !matches!(s1, Ok(true)) {
            // And after the end, both stay ended.
            r1.clear();
            r2.clear();
            let s1 = rd.next_block(&mut block, &mut r1);
            let (_, s2) = md.next_window(&mut r2);
            assert_eq!(format!("{s1:?}"), format!("{s2:?}"));
            assert!(r1.is_empty() && r2.is_empty());
            break;
        }
    }
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

/// The largest stamps a classic record can hold (every bit of both fields
/// set, fractions out of range as a crafted file may have them) give their
/// exact sum, in either resolution: nothing wraps or saturates.
#[test]
fn largest_classic_stamps_are_exact() {
    for be in [false, true] {
        for nanos in [false, true] {
            let data = pattern(3, 20);
            let file = pcap_file(be, nanos, 1, &[(u32::MAX, u32::MAX, &data, 20)]);
            let out = read_all(&file, DEFAULT_BLOCK_SIZE).unwrap();
            assert!(out.err.is_none(), "{:?}", out.err);
            let frac_ns = u64::from(u32::MAX) * if nanos { 1 } else { 1000 };
            assert_eq!(
                out.recs[0].0.ts_nanos,
                u64::from(u32::MAX) * 1_000_000_000 + frac_ns,
                "big-endian {be}, nanoseconds {nanos}"
            );
            assert_eq!(out.stats.records, 1);
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
        assert_eq!(out.recs[0].0.link_type, 1);
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

/// An obsolete packet block's interface id is its first 16 bits, in the
/// section's byte order; the drop count after it is not part of it.
#[test]
fn obsolete_packet_block_interface_is_its_first_half_word() {
    for be in [false, true] {
        let mut ng = Ng::new();
        ng.shb(be)
            .idb(1, Some(9), None)
            .idb(113, Some(9), None)
            .pb_with_drops(1, 7, 5, &pattern(1, 20), 20)
            .pb_with_drops(0, 0x0101, 6, &pattern(2, 20), 20);
        let out = read_all(&ng.bytes(), DEFAULT_BLOCK_SIZE).unwrap();
        assert!(out.err.is_none(), "{:?}", out.err);
        let got: Vec<(u32, u32, u64)> = out
            .recs
            .iter()
            .map(|(r, _)| (r.interface, r.link_type, r.ts_nanos))
            .collect();
        assert_eq!(got, vec![(1, 113, 5), (0, 1, 6)], "big-endian {be}");
        assert_eq!(out.stats.skipped_bad_interface, 0);
    }
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
    // Records of several MiB (offloaded segments captured before the NIC
    // cut them) are read up to the hard cap of 16 MiB.
    let jumbo = pattern(6, 2 << 20);
    let (file, _) = pcap_file_ends(false, false, false, 1, 4 << 20, &[(1, 0, &jumbo, 2 << 20)]);
    let out = read_all(&file, 64).unwrap();
    assert!(out.err.is_none(), "{:?}", out.err);
    assert_eq!(out.recs[0].1, jumbo);
    // A huge snaplen does not lift the hard cap.
    let mut file = pcap_file_ends(false, false, false, 1, u32::MAX, &[(1, 0, &[], 0)]).0;
    file[24 + 8..24 + 12].copy_from_slice(&(MAX_BLOCK_LEN + 1).to_le_bytes());
    let err = read_all(&file, 64).unwrap().err.unwrap();
    assert!(matches!(
        err.kind,
        CaptureErrorKind::AbsurdLength { limit, .. } if limit == 16 << 20
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
        same_as_mapped(&file, block_size, sup);
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

/// Link types are named as tcpdump.org's LINKTYPE registry and libpcap's
/// `pcap_datalink_val_to_name` name them, so an error about a capture of
/// an unsupported link type says which one it is.
#[test]
fn link_types_are_named_as_the_registry_names_them() {
    let registry: &[(u32, &str)] = &[
        (0, "NULL"),
        (1, "EN10MB"),
        (6, "IEEE802_5"),
        (8, "SLIP"),
        (9, "PPP"),
        (10, "FDDI"),
        (12, "RAW"),
        (14, "RAW"),
        (101, "RAW"),
        (50, "PPP_HDLC"),
        (51, "PPP_ETHER"),
        (100, "ATM_RFC1483"),
        (104, "C_HDLC"),
        (105, "IEEE802_11"),
        (107, "FRELAY"),
        (108, "LOOP"),
        (113, "LINUX_SLL"),
        (119, "IEEE802_11_PRISM"),
        (127, "IEEE802_11_RADIOTAP"),
        (147, "USER"),
        (162, "USER"),
        (163, "IEEE802_11_AVS"),
        (187, "BLUETOOTH_HCI_H4"),
        (189, "USB_LINUX"),
        (192, "PPI"),
        (195, "IEEE802_15_4_WITHFCS"),
        (201, "BLUETOOTH_HCI_H4_WITH_PHDR"),
        (220, "USB_LINUX_MMAPPED"),
        (227, "CAN_SOCKETCAN"),
        (228, "IPV4"),
        (229, "IPV6"),
        (239, "NFLOG"),
        (249, "USBPCAP"),
        (251, "BLUETOOTH_LE_LL"),
        (252, "WIRESHARK_UPPER_PDU"),
        (253, "NETLINK"),
        (276, "LINUX_SLL2"),
    ];
    for &(n, name) in registry {
        assert_eq!(link_type_name(n), Some(name), "link type {n}");
    }
    for n in [2, 146, 163 + 1000, 275, 277, u32::MAX] {
        assert_eq!(link_type_name(n), None, "link type {n}");
    }
}

/// The error reading `file` stops at, whether it came at the start or
/// after some records.
fn error_of(file: &[u8]) -> CaptureError {
    match read_all(file, 64) {
        Err(e) => e,
        Ok(out) => out.err.expect("an error"),
    }
}

/// A section header without options is 28 bytes, the least a section
/// header can be: it is read (here, then an interface and a packet).
/// Shorter, or with a trailing length that differs, it is a clear error.
#[test]
fn section_header_lengths_at_their_edges() {
    let mut ng = Pcapng::empty();
    ng.shb(false, &[])
        .idb(1, 262_144, &[])
        .epb(0, 1, &pattern(3, 20), 20, &[]);
    let file = ng.bytes().to_vec();
    assert_eq!(u32::from_le_bytes(file[4..8].try_into().unwrap()), 28);
    let out = read_all(&file, 64).unwrap();
    assert!(out.err.is_none(), "{:?}", out.err);
    assert_eq!(out.recs.len(), 1);

    // 24 bytes, leading and trailing length agreeing.
    let mut short = file[..28].to_vec();
    short.drain(16..20);
    short[4..8].copy_from_slice(&24u32.to_le_bytes());
    short[20..24].copy_from_slice(&24u32.to_le_bytes());
    let err = error_of(&short);
    assert!(err.to_string().contains("less than 28"), "{err}");

    // 28 bytes whose trailing length says 32.
    let mut bad = file.clone();
    bad[24..28].copy_from_slice(&32u32.to_le_bytes());
    let err = error_of(&bad);
    assert!(err.to_string().contains("trailing length 32"), "{err}");
}

/// A pcapng block of exactly 16 MiB, the hard cap, is read; one of 16 MiB
/// and 4 bytes is an absurd length.
#[test]
fn a_pcapng_block_of_exactly_the_cap_is_read() {
    let data = pattern(7, (16 << 20) - 32);
    let mut ng = Pcapng::empty();
    ng.shb(false, &[])
        .idb(1, 0, &[])
        .epb(0, 1, &data, data.len() as u32, &[]);
    let file = ng.bytes().to_vec();
    let epb_at = 28 + 20;
    assert_eq!(
        u32::from_le_bytes(file[epb_at + 4..epb_at + 8].try_into().unwrap()),
        16 << 20
    );
    let out = read_all(&file, 1 << 20).unwrap();
    assert!(out.err.is_none(), "{:?}", out.err);
    assert_eq!(out.recs.len(), 1);
    assert_eq!(out.recs[0].1.len(), data.len());

    let data = pattern(7, (16 << 20) - 28);
    let mut ng = Pcapng::empty();
    ng.shb(false, &[])
        .idb(1, 0, &[])
        .epb(0, 1, &data, data.len() as u32, &[]);
    let err = read_all(ng.bytes(), 1 << 20).unwrap().err.unwrap();
    assert!(
        matches!(err.kind, CaptureErrorKind::AbsurdLength { .. }),
        "{err}"
    );
}

/// The smallest packet blocks (no packet bytes: an enhanced packet block
/// of 32 bytes, a simple packet block of 16) are records with no data; a
/// simple packet block of 12 bytes is too short; a simple packet on an
/// interface of an unsupported link type is skipped and counted.
#[test]
fn smallest_packet_blocks_and_simple_packets_on_unsupported_links() {
    let mut ng = Pcapng::empty();
    ng.shb(false, &[])
        .idb(1, 0, &[])
        .epb(0, 1, &[], 0, &[])
        .spb(0, &[]);
    let file = ng.bytes().to_vec();
    let out = read_all(&file, 64).unwrap();
    assert!(out.err.is_none(), "{:?}", out.err);
    assert_eq!(out.recs.len(), 2);
    assert!(out.recs.iter().all(|(_, d)| d.is_empty()));

    let mut ng = Pcapng::empty();
    ng.shb(false, &[]).idb(1, 0, &[]).block(3, &[]);
    let err = error_of(ng.bytes());
    assert!(
        err.to_string()
            .contains("simple packet block length 12 is less than 16"),
        "{err}"
    );

    let mut ng = Pcapng::empty();
    ng.shb(false, &[])
        .idb(147, 0, &[])
        .spb(4, b"abcd")
        .spb(4, b"efgh");
    let out = read_all(ng.bytes(), 64).unwrap();
    assert!(out.err.is_none(), "{:?}", out.err);
    assert!(out.recs.is_empty());
    assert_eq!(out.stats.skipped_unsupported_link, 2);
    assert_eq!(out.stats.skipped_bad_interface, 0);
}

/// A record that does not fit the rest of a block starts the next block:
/// blocks stay within the block size when every record fits one, and every
/// record arrives once, in order.
#[test]
fn records_that_do_not_fit_start_the_next_block() {
    let data = pattern(2, 1000);
    let input: Vec<Rec> = (0..20).map(|i| (i, 0, &data[..], 1000)).collect();
    let (file, _) = pcap_file_ends(false, false, false, 1, 1500, &input);
    let mut rd = CaptureReader::new("c", Cursor::new(file), supported).unwrap();
    rd.set_block_size(1 << 12);
    let (mut block, mut recs, mut seen, mut blocks) = (Vec::new(), Vec::new(), Vec::new(), 0);
    loop {
        recs.clear();
        let more = rd.next_block(&mut block, &mut recs).unwrap();
        assert!(block.len() <= 1 << 12, "block of {} bytes", block.len());
        seen.extend(
            recs.iter()
                .map(|r: &PacketRecord| r.ts_nanos / 1_000_000_000),
        );
        blocks += 1;
        if !more {
            break;
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    assert!(blocks >= 5, "{blocks} blocks");
}

/// What the reader says of its input's format.
#[test]
fn the_reader_names_its_format_and_link_type() {
    let (file, _) = pcap_file_ends(true, true, false, 113, 1500, &[]);
    let rd = CaptureReader::new("c", Cursor::new(file), everything).unwrap();
    assert_eq!(rd.pcap_link_type(), Some(113));
    assert!(!rd.is_pcapng());
    let mut ng = Pcapng::empty();
    ng.shb(false, &[]).idb(1, 0, &[]);
    let rd = CaptureReader::new("c", Cursor::new(ng.bytes().to_vec()), supported).unwrap();
    assert_eq!(rd.pcap_link_type(), None);
    assert!(rd.is_pcapng());
}

/// Reads the rest of a mapped file: records (with their bytes) and the error, if any.
fn drain_mapped(md: &mut MappedReader, out: &mut Outcome) {
    let mut recs = Vec::new();
    for _ in 0..100_000 {
        recs.clear();
        let (w, step) = md.next_window(&mut recs);
        for r in &recs {
            let at = r.data_start as usize..r.data_start as usize + r.caplen as usize;
            out.recs
                .push((*r, w.bytes().get(at).expect("in its window").to_vec()));
        }
        match step {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                out.err = Some(e);
                break;
            }
        }
    }
    out.stats = md.stats().clone();
    out.consumed = md.bytes_consumed();
}

/// A pcap of 200 records of 100 bytes, its record ends, and a mapped reader of it
/// (4 KiB windows) with a handle to cut the file.
fn mapped_sample() -> (Vec<u8>, Vec<usize>, MappedReader, std::fs::File) {
    use crate::capture::mapping::Mapping;
    let data = pattern(9, 100);
    let input: Vec<Rec> = (0..200).map(|i| (i, 0, &data[..], 100)).collect();
    let (file, ends) = pcap_file_ends(false, false, false, 1, 65535, &input);
    let f = temp_file(&file);
    let cut = f.try_clone().unwrap();
    let map = std::sync::Arc::new(Mapping::new(f).map_err(|e| e.1).unwrap());
    let mut md = MappedReader::new("test.pcap", map, supported).unwrap();
    md.set_block_size(4096);
    (file, ends, md, cut)
}

fn empty_outcome() -> Outcome {
    Outcome {
        recs: Vec::new(),
        stats: ReaderStats::default(),
        err: None,
        consumed: 0,
    }
}

/// Cut by someone else between two windows (inside a record, or at a record's end):
/// the same records, counters and end (Truncated error, or clean) as the read path
/// gives for the shortened file.
#[test]
fn a_mapped_file_cut_between_windows_ends_as_the_shorter_file() {
    for at_boundary in [false, true] {
        let (file, ends, mut md, cut) = mapped_sample();
        let mut out = empty_outcome();
        let mut recs = Vec::new();
        let (w, step) = md.next_window(&mut recs);
        assert!(step.unwrap());
        for r in &recs {
            let at = r.data_start as usize..r.data_start as usize + r.caplen as usize;
            out.recs.push((*r, w.bytes()[at].to_vec()));
        }
        let len = if at_boundary {
            ends[100]
        } else {
            ends[100] + 7
        };
        cut.set_len(len as u64).unwrap();
        drain_mapped(&mut md, &mut out);
        let want = read_with(Cursor::new(file[..len].to_vec()), 4096, supported).unwrap();
        assert_eq!(out.essence(), want.essence());
        assert_eq!(format!("{:?}", out.err), format!("{:?}", want.err));
        assert_eq!(format!("{:?}", out.stats), format!("{:?}", want.stats));
        assert_eq!(out.consumed, want.consumed);
        if at_boundary {
            assert!(out.err.is_none());
        } else {
            let e = out.err.unwrap().to_string();
            assert_eq!(
                e,
                format!(
                    "test.pcap: byte {}: truncated record header: need 16 bytes, file ends after 7",
                    ends[100]
                )
            );
        }
    }
}

/// Cut while a window is being framed (and its bytes past the new end read as zeros,
/// through the SIGBUS guard): the window is framed again up to the new end, so the
/// records past it are dropped and the error is the shortened file's.
#[test]
fn a_mapped_file_cut_while_a_window_is_framed_is_framed_again() {
    let (file, ends, mut md, cut) = mapped_sample();
    let len = ends[20] + 30; // inside the first 4 KiB window
    let map = std::sync::Arc::clone(md.mapping());
    let mut armed = true;
    md.after_frame = Some(Box::new(move || {
        if armed && map.visible_len() > 4096 + 4096 {
            // After the first window: cut, and touch a page past the new end.
            armed = false;
            cut.set_len(len as u64).unwrap();
            let b = std::hint::black_box(map.bytes())[3 * 4096 + 1];
            assert_eq!(b, 0);
            assert!(map.fault_offset().is_some());
        }
    }));
    let mut out = empty_outcome();
    drain_mapped(&mut md, &mut out);
    let want = read_with(Cursor::new(file[..len].to_vec()), 4096, supported).unwrap();
    assert_eq!(out.essence(), want.essence());
    assert_eq!(format!("{:?}", out.err), format!("{:?}", want.err));
    assert_eq!(format!("{:?}", out.stats), format!("{:?}", want.stats));
    assert!(matches!(
        out.err.unwrap().kind,
        CaptureErrorKind::Truncated {
            part: TruncatedPart::RecordData,
            needed: 100,
            available: 14
        }
    ));
}

/// Cut to before what was already delivered (and touched there, through the SIGBUS
/// guard): no crash, and a Truncated error that says so.
#[test]
fn a_mapped_file_cut_before_what_was_read_is_a_truncated_error() {
    let (_file, _ends, mut md, cut) = mapped_sample();
    let mut recs = Vec::new();
    for _ in 0..3 {
        assert!(md.next_window(&mut recs).1.unwrap());
    }
    let consumed = md.bytes_consumed();
    let (w, _) = md.next_window(&mut recs);
    cut.set_len(1000).unwrap();
    // A worker still reading a window past the new end: zeros, no crash.
    assert!(std::hint::black_box(w.bytes())
        .iter()
        .skip(100)
        .all(|&b| b == 0));
    assert!(md.mapping().fault_offset().is_some());
    recs.clear();
    let (_, step) = md.next_window(&mut recs);
    assert!(recs.is_empty());
    let e = step.unwrap_err();
    assert!(consumed > 1000);
    assert_eq!(
        e.to_string(),
        format!(
            "test.pcap: byte 1000: truncated while being read: {} bytes already read, \
             file now ends after 1000",
            md.bytes_consumed()
        )
    );
    assert!(matches!(md.next_window(&mut recs).1, Ok(false)));
}

/// A buffer fresh from the pool (capacity only, filled by reading into it,
/// never zero-filled), one reused with its length (overwritten in place),
/// and one longer or shorter with stale bytes all frame the same records
/// and the same bytes, also through interrupted and short reads.
#[test]
fn fresh_reused_and_stale_buffers_frame_the_same() {
    let pkts: Vec<Vec<u8>> = (0..40)
        .map(|i| pattern(i as u8, 30 + (i * 7) % 90))
        .collect();
    let recs: Vec<Rec> = pkts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32, 0, p.as_slice(), p.len() as u32))
        .collect();
    let file = pcap_file(false, false, 1, &recs);
    let read = |mode: u8, flaky: bool| {
        let r: Box<dyn Read> = if flaky {
            Box::new(Flaky {
                inner: Cursor::new(file.clone()),
                n: 0,
            })
        } else {
            Box::new(Cursor::new(file.clone()))
        };
        let mut rd = CaptureReader::new("t.pcap", r, supported).unwrap();
        rd.set_block_size(256);
        let mut got = Vec::new();
        let mut block = Vec::new();
        loop {
            match mode {
                // Fresh every time, as the pool hands out new buffers.
                0 => block = Vec::with_capacity(256),
                // Longer than a block, full of stale bytes.
                1 => block = vec![0xee; 1000],
                // Shorter than a block, stale.
                2 => block = vec![0xdd; 100],
                // Reused as it was left.
                _ => {}
            }
            let mut recs = Vec::new();
            let more = rd.next_block(&mut block, &mut recs).unwrap();
            for r in &recs {
                let s = r.data_start as usize;
                got.push((r.ts_nanos, block[s..s + r.caplen as usize].to_vec()));
            }
            if !more {
                break;
            }
        }
        (got, rd.stats().bytes_read, rd.bytes_consumed())
    };
    let want = read(3, false);
    assert_eq!(want.0.len(), 40);
    for (i, p) in pkts.iter().enumerate() {
        assert_eq!(&want.0[i].1, p);
    }
    for mode in 0..4 {
        for flaky in [false, true] {
            assert_eq!(read(mode, flaky), want, "mode {mode} flaky {flaky}");
        }
    }
}

/// A read error on a fresh buffer is reported at the bytes read before it,
/// as on a reused one.
#[test]
fn read_error_on_a_fresh_buffer_counts_the_bytes_before_it() {
    let a = pattern(1, 40);
    let file = pcap_file(false, false, 1, &[(1, 0, &a, 40), (2, 0, &a, 40)]);
    for fresh in [false, true] {
        let r = Broken {
            data: Cursor::new(file.clone()),
            left: 24 + 56 + 10,
        };
        let mut rd = CaptureReader::new("t.pcap", r, supported).unwrap();
        let mut block = if fresh {
            Vec::with_capacity(DEFAULT_BLOCK_SIZE)
        } else {
            vec![0; DEFAULT_BLOCK_SIZE]
        };
        let mut recs = Vec::new();
        let err = rd.next_block(&mut block, &mut recs).unwrap_err();
        assert!(recs.is_empty());
        assert_eq!(err.offset, 24 + 56 + 10, "fresh {fresh}");
        assert!(matches!(err.kind, CaptureErrorKind::Io(_)));
        assert!(!rd.next_block(&mut block, &mut recs).unwrap());
    }
}

/// A reader that has to wait for a window to be dropped (the workers are the slower
/// side) gives back the pages of the windows already finished, before any worker
/// would: with one run finished, the worker leaves them to it.
#[test]
fn a_waiting_reader_gives_back_the_pages_of_finished_windows() {
    use crate::capture::mapping::tests::page_mapped;
    use crate::capture::mapping::{Mapping, RELEASE_RUN};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    // Three runs of records of 1,016 bytes (a 16-byte header and 1,000 of data).
    let data = pattern(3, 1000);
    let n = 3 * RELEASE_RUN / 1016;
    let input: Vec<Rec> = (0..n as u32).map(|i| (i, 0, &data[..], 1000)).collect();
    let (file, _) = pcap_file_ends(false, false, false, 1, 65535, &input);
    let map = Arc::new(Mapping::new(temp_file(&file)).map_err(|e| e.1).unwrap());
    let mut md = MappedReader::new("test.pcap", Arc::clone(&map), supported).unwrap();
    md.set_block_size(256 << 10);
    md.set_windows_alive(1);
    let mut recs = Vec::new();
    // Each window dropped before the next is asked for: the reader never waits.
    loop {
        recs.clear();
        let (w, step) = md.next_window(&mut recs);
        assert!(step.unwrap());
        let end = w.start() + w.bytes().len();
        drop(w);
        if end >= RELEASE_RUN {
            break;
        }
    }
    // One run finished: left for the reader.
    assert!(page_mapped(&map, 0));
    let (held, step) = md.next_window(&mut recs);
    assert!(step.unwrap());
    let released = std::thread::scope(|s| {
        // The reader waits for `held`, the only window allowed alive.
        let reader = s.spawn(|| {
            let mut more = Vec::new();
            md.next_window(&mut more).1.is_ok()
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while page_mapped(&map, 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Given back while `held` is alive: by the waiting reader.
        let released = !page_mapped(&map, 0);
        drop(held);
        assert!(reader.join().unwrap());
        released
    });
    assert!(released, "the waiting reader did not give the pages back");
}
