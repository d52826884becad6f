//! Capture rewriting for the hostile-traffic tests: read classic pcap and
//! pcapng (any link type qmwatch reads, converted to Ethernet), parse
//! Ethernet (+ VLAN tags) / IPv4 / IPv6 / TCP, and rebuild frames with
//! correct lengths and checksums, whole or as IP fragments; write classic
//! pcap (streaming) and pcapng.
//!
//! Independent of qmwatch's own reader and decoder on purpose: a bug there
//! must not be hidden by the same bug in the test's view of the capture.
#![allow(dead_code)]

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;

pub use qmwatch_testkit::pcap::{self, Pcapng};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
#[allow(dead_code)] // not every test that includes this module uses it
pub const TCP_URG: u8 = 0x20;

/// One captured frame (Ethernet after [`read_capture`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ts_ns: u64,
    pub data: Vec<u8>,
    /// Length on the wire (>= `data.len()`; larger when snaplen-cut).
    pub orig_len: u32,
}

impl Frame {
    pub fn new(ts_ns: u64, data: Vec<u8>) -> Frame {
        let orig_len = data.len() as u32;
        Frame {
            ts_ns,
            data,
            orig_len,
        }
    }
}

fn u16le(b: &[u8], at: usize, be: bool) -> u16 {
    let v = [b[at], b[at + 1]];
    if be {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

fn u32le(b: &[u8], at: usize, be: bool) -> u32 {
    let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

/// Reads a classic pcap or pcapng file; every frame is converted to
/// Ethernet (see [`to_ethernet`]). Panics on anything malformed: the inputs
/// are the project's own fixtures.
pub fn read_capture(path: &Path) -> Vec<Frame> {
    let d = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let magic = u32le(&d, 0, false);
    let mut out = Vec::new();
    if magic == 0x0a0d_0d0a {
        let mut off = 0;
        let mut be = false;
        // (link type, ns per timestamp tick)
        let mut ifaces: Vec<(u32, u64)> = Vec::new();
        while off + 12 <= d.len() {
            let btype = u32le(&d, off, be);
            if btype == 0x0a0d_0d0a {
                be = u32le(&d, off + 8, false) != 0x1a2b_3c4d;
                ifaces.clear();
            }
            let blen = u32le(&d, off + 4, be) as usize;
            assert!(blen >= 12 && off + blen <= d.len(), "{path:?}: bad block");
            let body = &d[off + 8..off + blen - 4];
            match btype {
                1 => {
                    let lt = u32::from(u16le(body, 0, be));
                    // Options from offset 8: if_tsresol is code 9.
                    let mut tick_ns = 1000u64;
                    let mut o = 8;
                    while o + 4 <= body.len() {
                        let code = u16le(body, o, be);
                        let len = u16le(body, o + 2, be) as usize;
                        if code == 0 {
                            break;
                        }
                        if code == 9 && len >= 1 {
                            let r = body[o + 4];
                            if r & 0x80 == 0 {
                                let exp = u32::from(r);
                                assert!(exp <= 9, "{path:?}: sub-ns if_tsresol");
                                tick_ns = 10u64.pow(9 - exp);
                            } else {
                                panic!("{path:?}: binary if_tsresol not supported");
                            }
                        }
                        o += 4 + len.div_ceil(4) * 4;
                    }
                    ifaces.push((lt, tick_ns));
                }
                6 => {
                    let iface = u32le(body, 0, be) as usize;
                    let ts = (u64::from(u32le(body, 4, be)) << 32) | u64::from(u32le(body, 8, be));
                    let cap = u32le(body, 12, be) as usize;
                    let orig = u32le(body, 16, be);
                    let (lt, tick) = ifaces[iface];
                    let data = &body[20..20 + cap];
                    if let Some(eth) = to_ethernet(lt, data) {
                        let extra = eth.len() as i64 - data.len() as i64;
                        out.push(Frame {
                            ts_ns: ts * tick,
                            orig_len: (i64::from(orig) + extra) as u32,
                            data: eth,
                        });
                    }
                }
                3 => {
                    let orig = u32le(body, 0, be);
                    let (lt, _) = ifaces[0];
                    let data = &body[4..(4 + orig as usize).min(body.len())];
                    if let Some(eth) = to_ethernet(lt, data) {
                        out.push(Frame::new(0, eth));
                    }
                }
                _ => {}
            }
            off += blen;
        }
        return out;
    }
    let (be, nanos) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => panic!("{path:?}: not a capture (magic {m:#x})"),
    };
    let lt = u32le(&d, 20, be) & 0x0fff_ffff;
    let mut off = 24;
    while off + 16 <= d.len() {
        let s = u64::from(u32le(&d, off, be));
        let frac = u64::from(u32le(&d, off + 4, be));
        let cap = u32le(&d, off + 8, be) as usize;
        let orig = u32le(&d, off + 12, be);
        let data = &d[off + 16..off + 16 + cap];
        let ts_ns = s * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        if let Some(eth) = to_ethernet(lt, data) {
            let extra = eth.len() as i64 - data.len() as i64;
            out.push(Frame {
                ts_ns,
                orig_len: (i64::from(orig) + extra) as u32,
                data: eth,
            });
        }
        off += 16 + cap;
    }
    out
}

/// An IP packet wrapped in an Ethernet header (zero MACs).
pub fn ethernet(ip: &[u8]) -> Vec<u8> {
    let et: u16 = if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    };
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// A frame of link type `lt` as Ethernet; `None` for frames without IP.
pub fn to_ethernet(lt: u32, data: &[u8]) -> Option<Vec<u8>> {
    let ip = match lt {
        1 => return Some(data.to_vec()),
        // Linux cooked v1: protocol at 14.
        113 => data.get(16..)?,
        // Linux cooked v2: protocol at 0, header 20 bytes.
        276 => data.get(20..)?,
        101 | 228 | 229 | 12 | 14 => data,
        0 | 108 => data.get(4..)?,
        _ => panic!("link type {lt} not supported by the test reader"),
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) | Some(6) => Some(ethernet(ip)),
        _ => None,
    }
}

/// A TCP segment, with what is needed to rebuild its IP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub ts_ns: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    pub ip_id: u16,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// Build it with a wrong TCP checksum.
    pub bad_checksum: bool,
    /// Leave the TCP checksum 0 (not computed: fast, and what an offloaded
    /// capture looks like).
    pub no_checksum: bool,
}

impl Tcp {
    pub fn v6(&self) -> bool {
        self.src.is_ipv6()
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    /// Sequence space taken: payload plus SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.has(TCP_SYN)) + u32::from(self.has(TCP_FIN))
    }
    pub fn src_ep(&self) -> (IpAddr, u16) {
        (self.src, self.sport)
    }
    pub fn dst_ep(&self) -> (IpAddr, u16) {
        (self.dst, self.dport)
    }
    /// Only an ACK (perhaps with PSH), no payload.
    pub fn pure_ack(&self) -> bool {
        self.payload.is_empty() && self.flags & !(TCP_ACK | TCP_PSH) == 0
    }
    /// The sub-segment carrying `payload[from..to]`: FIN only on the piece
    /// that ends the payload, PSH likewise; SYN never (callers split data
    /// segments only).
    pub fn piece(&self, from: usize, to: usize) -> Tcp {
        let mut t = self.clone();
        t.seq = self.seq.wrapping_add(from as u32);
        t.payload = self.payload[from..to].to_vec();
        if to < self.payload.len() {
            t.flags &= !(TCP_FIN | TCP_PSH);
        }
        t
    }
    /// Splits the payload at `cuts` (sorted offsets strictly inside it).
    pub fn split_at(&self, cuts: &[usize]) -> Vec<Tcp> {
        let mut v = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&self.payload.len())) {
            if c > from {
                v.push(self.piece(from, c));
                from = c;
            }
        }
        if v.is_empty() {
            v.push(self.clone());
        }
        v
    }
}

/// What a frame is to the rewriter.
#[derive(Clone, Debug)]
pub enum Pkt {
    Tcp(Tcp),
    /// Anything else, written back as it was.
    Other(Frame),
}

/// Parses Ethernet (+ any 802.1Q/802.1ad tags) / IPv4 or IPv6 / TCP.
/// Fragments, other transports and malformed frames come back as `Other`.
pub fn parse(f: &Frame) -> Pkt {
    parse_tcp(f).map_or_else(|| Pkt::Other(f.clone()), Pkt::Tcp)
}

fn parse_tcp(f: &Frame) -> Option<Tcp> {
    let d = &f.data;
    let mut off = 12;
    let mut et = u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]);
    while et == 0x8100 || et == 0x88a8 {
        off += 4;
        et = u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]);
    }
    let ip = d.get(off + 2..)?;
    let (src, dst, ttl, ip_id, l4) = match et {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 15) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if *ip.get(9)? != 6 || frag & 0x3fff != 0 {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let t: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(t),
                ip[8],
                u16::from_be_bytes([ip[4], ip[5]]),
                ip.get(ihl..total.min(ip.len()))?,
            )
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if *ip.get(6)? != 6 {
                return None;
            }
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let t: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(t),
                ip[7],
                0,
                ip.get(40..(40 + plen).min(ip.len()))?,
            )
        }
        _ => return None,
    };
    let doff = usize::from(l4.get(12)? >> 4) * 4;
    if doff < 20 || l4.len() < doff {
        return None;
    }
    Some(Tcp {
        ts_ns: f.ts_ns,
        src,
        dst,
        ttl,
        ip_id,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
        ack: u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
        flags: l4[13],
        window: u16::from_be_bytes([l4[14], l4[15]]),
        options: l4[20..doff].to_vec(),
        payload: l4[doff..].to_vec(),
        bad_checksum: false,
        no_checksum: false,
    })
}

fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks_exact(2);
    for c in &mut it {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = it.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The TCP header and payload with a correct checksum (or a wrong one when
/// `bad_checksum`).
pub fn tcp_bytes(t: &Tcp) -> Vec<u8> {
    assert!(t.options.len() % 4 == 0 && t.options.len() <= 40);
    let mut b = Vec::with_capacity(20 + t.options.len() + t.payload.len());
    b.extend_from_slice(&t.sport.to_be_bytes());
    b.extend_from_slice(&t.dport.to_be_bytes());
    b.extend_from_slice(&t.seq.to_be_bytes());
    b.extend_from_slice(&t.ack.to_be_bytes());
    b.push((((20 + t.options.len()) / 4) as u8) << 4);
    b.push(t.flags);
    b.extend_from_slice(&t.window.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&t.options);
    b.extend_from_slice(&t.payload);
    if t.no_checksum {
        return b;
    }
    let mut s = sum16(0, &ip_bytes(t.src));
    s = sum16(s, &ip_bytes(t.dst));
    s += 6 + b.len() as u32;
    let mut c = fold(sum16(s, &b));
    if t.bad_checksum {
        c = c.wrapping_add(0x1234);
    }
    b[16..18].copy_from_slice(&c.to_be_bytes());
    b
}

fn ipv4_header(t: &Tcp, id: u16, frag_field: u16, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag_field.to_be_bytes());
    h.extend_from_slice(&[t.ttl, 6, 0, 0]);
    h.extend_from_slice(&ip_bytes(t.src));
    h.extend_from_slice(&ip_bytes(t.dst));
    let c = fold(sum16(0, &h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn ipv6_header(t: &Tcp, next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.push(next);
    h.push(t.ttl);
    h.extend_from_slice(&ip_bytes(t.src));
    h.extend_from_slice(&ip_bytes(t.dst));
    h
}

/// The whole IP packet of `t` (don't-fragment set on IPv4).
pub fn ip_packet(t: &Tcp) -> Vec<u8> {
    let l4 = tcp_bytes(t);
    let mut p = if t.v6() {
        ipv6_header(t, 6, l4.len())
    } else {
        ipv4_header(t, t.ip_id, 0x4000, l4.len())
    };
    p.extend_from_slice(&l4);
    p
}

/// `t` as one Ethernet frame.
pub fn frame(t: &Tcp) -> Frame {
    Frame::new(t.ts_ns, ethernet(&ip_packet(t)))
}

/// One IP fragment: `data` sits at byte `offset` (a multiple of 8) of the
/// fragmented payload (the TCP header and payload); `more` is the MF/M flag.
#[derive(Clone, Debug)]
pub struct Frag {
    pub offset: usize,
    pub data: Vec<u8>,
    pub more: bool,
}

/// Cuts `l4` into fragments of `size` bytes (a multiple of 8; the last one
/// shorter), in order.
pub fn cut_fragments(l4: &[u8], size: usize) -> Vec<Frag> {
    assert!(size % 8 == 0 && size > 0);
    let mut v = Vec::new();
    let mut o = 0;
    while o < l4.len() {
        let e = (o + size).min(l4.len());
        v.push(Frag {
            offset: o,
            data: l4[o..e].to_vec(),
            more: e < l4.len(),
        });
        o = e;
    }
    v
}

/// The frames carrying `frags` of `t`'s datagram: IPv4 fragments (MF and
/// offset in the header), or IPv6 with a Fragment extension header; `id` is
/// the datagram's identification.
pub fn fragment_frames(t: &Tcp, frags: &[Frag], id: u32) -> Vec<Frame> {
    frags
        .iter()
        .map(|f| {
            assert!(f.offset % 8 == 0);
            let off8 = (f.offset / 8) as u16;
            let ip = if t.v6() {
                let mut p = ipv6_header(t, 44, 8 + f.data.len());
                p.push(6);
                p.push(0);
                p.extend_from_slice(&((off8 << 3) | u16::from(f.more)).to_be_bytes());
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&f.data);
                p
            } else {
                let field = off8 | if f.more { 0x2000 } else { 0 };
                let mut p = ipv4_header(t, id as u16, field, f.data.len());
                p.extend_from_slice(&f.data);
                p
            };
            Frame::new(t.ts_ns, ethernet(&ip))
        })
        .collect()
}

/// Writes classic pcap records as they come (nanosecond timestamps,
/// little-endian, Ethernet unless told otherwise), through the test kit's
/// writer.
pub struct PcapWriter<W: Write> {
    w: pcap::PcapWriter<W>,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(w: W) -> io::Result<Self> {
        Self::with_link_type(w, LINKTYPE_ETHERNET, 262_144)
    }
    pub fn with_link_type(w: W, lt: u32, snaplen: u32) -> io::Result<Self> {
        let format = pcap::PcapFormat {
            link_type: lt,
            snaplen,
            ..pcap::PcapFormat::NANOS
        };
        Ok(PcapWriter {
            w: pcap::PcapWriter::with_format(w, format)?,
        })
    }
    /// One record: `data` as captured, `orig_len` on the wire.
    pub fn record(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        self.w.record(ts_ns, data, orig_len)
    }
    pub fn frame(&mut self, f: &Frame) -> io::Result<()> {
        self.record(f.ts_ns, &f.data, f.orig_len)
    }
    pub fn tcp(&mut self, t: &Tcp) -> io::Result<()> {
        self.frame(&frame(t))
    }
    pub fn into_inner(self) -> W {
        self.w.finish().expect("flushing a test capture")
    }
}

/// A whole classic pcap file in memory.
pub fn pcap_bytes(frames: &[Frame]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for f in frames {
        w.frame(f).unwrap();
    }
    w.into_inner()
}

pub fn write_pcap(path: &Path, frames: &[Frame]) {
    std::fs::write(path, pcap_bytes(frames)).unwrap();
}

/// pcapng, little-endian, built block by block (the test kit's builder);
/// interfaces have nanosecond timestamps.
pub trait PcapngExt {
    /// An interface with nanosecond timestamps (`if_tsresol` 9).
    fn idb_ns(&mut self, lt: u16) -> &mut Self;
    /// An enhanced packet block without options.
    fn packet(&mut self, iface: u32, ts_ns: u64, data: &[u8], orig_len: u32) -> &mut Self;
}

impl PcapngExt for Pcapng {
    fn idb_ns(&mut self, lt: u16) -> &mut Self {
        self.idb(lt, 262_144, &[(9, &[9])])
    }
    fn packet(&mut self, iface: u32, ts_ns: u64, data: &[u8], orig_len: u32) -> &mut Self {
        self.epb(iface, ts_ns, data, orig_len, &[])
    }
}

/// The test kit's seedable generator.
#[allow(unused_imports)] // not every test that includes this module uses it
pub use qmwatch_testkit::rng::Rng;

/// One TCP connection of a capture.
#[derive(Clone, Debug)]
pub struct Conn {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    /// Indices of its packets in the capture, in capture order.
    pub pkts: Vec<usize>,
    /// Sequence number of stream offset 0, per direction (0: client to
    /// server, 1: server to client).
    pub base: [u32; 2],
    /// The reassembled byte stream of each direction (first copy wins).
    pub streams: [Vec<u8>; 2],
}

impl Conn {
    /// Direction of `t`: 0 client to server, 1 server to client.
    pub fn dir(&self, t: &Tcp) -> usize {
        usize::from(t.src_ep() != self.client)
    }
    /// Stream offset of `t`'s first payload byte.
    pub fn offset(&self, t: &Tcp) -> usize {
        let d = self.dir(t);
        let seq = if t.has(TCP_SYN) {
            t.seq.wrapping_add(1)
        } else {
            t.seq
        };
        seq.wrapping_sub(self.base[d]) as usize
    }
    /// `ip:port` as in the labels.
    pub fn label_name(ep: (IpAddr, u16)) -> String {
        match ep.0 {
            IpAddr::V4(a) => format!("{a}:{}", ep.1),
            IpAddr::V6(a) => format!("[{a}]:{}", ep.1),
        }
    }
}

/// The TCP connections of `pkts` (one per 4-tuple), with their streams.
/// The client is the SYN sender (else the first sender).
pub fn connections(pkts: &[Pkt]) -> (Vec<Conn>, Vec<Option<usize>>) {
    type Key = ((IpAddr, u16), (IpAddr, u16));
    let mut index: std::collections::HashMap<Key, usize> = Default::default();
    let mut conns: Vec<Conn> = Vec::new();
    let mut conn_of = vec![None; pkts.len()];
    for (i, p) in pkts.iter().enumerate() {
        let Pkt::Tcp(t) = p else { continue };
        let (a, b) = (t.src_ep(), t.dst_ep());
        let key = if a <= b { (a, b) } else { (b, a) };
        let c = *index.entry(key).or_insert_with(|| {
            let (client, server) = if t.has(TCP_SYN) && t.has(TCP_ACK) {
                (b, a)
            } else {
                (a, b)
            };
            conns.push(Conn {
                client,
                server,
                pkts: Vec::new(),
                base: [0; 2],
                streams: [Vec::new(), Vec::new()],
            });
            conns.len() - 1
        });
        conns[c].pkts.push(i);
        conn_of[i] = Some(c);
    }
    for c in &mut conns {
        // Bases: from the SYNs, else the first data segment of the direction.
        let mut base: [Option<u32>; 2] = [None, None];
        for &i in &c.pkts {
            let Pkt::Tcp(t) = &pkts[i] else { continue };
            let d = c.dir(t);
            if t.has(TCP_SYN) {
                base[d] = Some(t.seq.wrapping_add(1));
            }
        }
        for &i in &c.pkts {
            let Pkt::Tcp(t) = &pkts[i] else { continue };
            let d = c.dir(t);
            if base[d].is_none() && !t.payload.is_empty() {
                base[d] = Some(t.seq);
            }
        }
        c.base = [base[0].unwrap_or(0), base[1].unwrap_or(0)];
        let mut have: [Vec<bool>; 2] = [Vec::new(), Vec::new()];
        for &i in &c.pkts {
            let Pkt::Tcp(t) = &pkts[i] else { continue };
            if t.payload.is_empty() {
                continue;
            }
            let d = c.dir(t);
            let o = c.offset(t);
            let end = o + t.payload.len();
            assert!(end < 1 << 30, "fixture stream out of order by a lot");
            if c.streams[d].len() < end {
                c.streams[d].resize(end, 0);
                have[d].resize(end, false);
            }
            for (k, &b) in t.payload.iter().enumerate() {
                if !have[d][o + k] {
                    have[d][o + k] = true;
                    c.streams[d][o + k] = b;
                }
            }
        }
        assert!(
            have.iter().all(|h| h.iter().all(|&x| x)),
            "fixture connection with a hole"
        );
    }
    (conns, conn_of)
}

/// A netstring at `pos` of `b`: (content start, content end, next position).
pub fn netstring(b: &[u8], pos: usize) -> Option<(usize, usize, usize)> {
    let colon = pos + b.get(pos..)?.iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(b.get(pos..colon)?).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    (b.get(end) == Some(&b',')).then_some((start, end, end + 1))
}

/// One request in a client stream: its byte range and its message body's.
#[derive(Clone, Debug)]
pub struct RequestSpan {
    pub start: usize,
    pub end: usize,
    pub body: std::ops::Range<usize>,
}

/// The requests of a client stream: QMTP packages one after another, or
/// the single QMQP request.
pub fn requests(stream: &[u8], qmqp: bool) -> Vec<RequestSpan> {
    let mut v = Vec::new();
    if qmqp {
        if let Some((s, _e, next)) = netstring(stream, 0) {
            let (ms, me, _) = netstring(stream, s).expect("QMQP message netstring");
            v.push(RequestSpan {
                start: 0,
                end: next,
                body: ms..me,
            });
        }
        return v;
    }
    let mut pos = 0;
    while pos < stream.len() {
        let (ms, me, n1) = netstring(stream, pos).expect("QMTP message netstring");
        let (_, _, n2) = netstring(stream, n1).expect("QMTP sender netstring");
        let (_, _, n3) = netstring(stream, n2).expect("QMTP recipient list");
        v.push(RequestSpan {
            start: pos,
            end: n3,
            body: ms + 1..me,
        });
        pos = n3;
    }
    v
}
