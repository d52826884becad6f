//! Decode: link layer, IPv4/IPv6 and TCP headers of one captured frame.
//!
//! Owns: finding the TCP segment inside a frame (Ethernet with any stack of
//! 802.1Q/802.1ad tags, Linux cooked SLL and SLL2, raw IP, BSD null/loopback),
//! IP fragment reassembly (bounded, in [`defrag`]), and producing a compact
//! [`Segment`] descriptor whose payload is a byte range of the frame's buffer,
//! so no payload is copied (except a reassembled fragmented datagram, which
//! has no single place in the capture); and, for small segments, their TCP
//! checksum, summed while the frame is in the decoding core's cache
//! ([`Segment::csum`]).
//!
//! Must not: keep per-flow state, interpret TCP payload (its bytes are read
//! only to be summed), or panic on any frame (every malformed frame is a
//! counted [`Skip`]).

pub mod defrag;
mod notes;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use etherparse::{IpNumber, Ipv6ExtensionSlice, LaxIpSlice, TcpSlice};

use self::defrag::{DefragConfig, DefragOutcome, Defragmenter, FragmentKey};
use self::notes::{FragNote, FragNotes};
#[cfg(test)]
use self::notes::{FRAG_NOTE_TIMEOUT_NS, PAIR_NOTE_SEGMENTS};

pub(crate) const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub(crate) const LINKTYPE_RAW_BSD12: u32 = 12;
pub(crate) const LINKTYPE_RAW_BSD14: u32 = 14;
pub(crate) const LINKTYPE_RAW: u32 = 101;
pub(crate) const LINKTYPE_LOOP: u32 = 108;
pub(crate) const LINKTYPE_LINUX_SLL: u32 = 113;
pub(crate) const LINKTYPE_IPV4: u32 = 228;
pub(crate) const LINKTYPE_IPV6: u32 = 229;
pub(crate) const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Link types the decoder understands.
pub fn supported_link_type(lt: u32) -> bool {
    matches!(
        lt,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_RAW_BSD12
            | LINKTYPE_RAW_BSD14
            | LINKTYPE_RAW
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    )
}

/// Most VLAN tags followed before the frame counts as malformed.
const MAX_VLAN_TAGS: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// [`Segment::frag_notes`]: reassembled from IP fragments whose overlapping
/// bytes differed (the first were kept).
pub const FRAG_NOTE_CONFLICT: u8 = 1;
/// Fragments of a datagram of this flow (or, when its first fragment never
/// arrived, of this address pair) were dropped by a cap, an eviction or the
/// timeout: its bytes were never seen.
pub const FRAG_NOTE_DROPPED: u8 = 2;
/// Reassembled from non-final fragments shorter than [`TINY_FRAGMENT_V4`] /
/// [`TINY_FRAGMENT_V6`] bytes, which no real network produces: an evasion
/// signature (Snort's frag3 reports it).
pub const FRAG_NOTE_TINY: u8 = 4;
/// IPv4's minimum MTU is 68 bytes (RFC 791): with a 20-byte header, every
/// link carries 48 bytes of fragment, so a shorter non-final fragment was
/// cut on purpose.
pub(crate) const TINY_FRAGMENT_V4: usize = 48;
/// IPv6 links carry 1280 bytes (RFC 8200) and only the source fragments, so
/// non-final fragments are about 1232 bytes; 1024 leaves room for extension
/// headers.
pub(crate) const TINY_FRAGMENT_V6: usize = 1024;

/// An IP address stored as 128 bits (IPv4 mapped), cheap to hash and compare.
pub type Addr = u128;

pub fn addr_from_ip(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn ip_from_addr(a: Addr, v4: bool) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    if v4 {
        if let Some(v) = v6.to_ipv4_mapped() {
            return IpAddr::V4(v);
        }
    }
    IpAddr::V6(v6)
}

/// One TCP segment, described by value. Its payload is
/// `buffer[payload_start .. payload_start + payload_len]` of the block it
/// came from (or of the batch's side buffer when `reassembled`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub ts: u64,
    pub src: Addr,
    pub dst: Addr,
    pub v4: bool,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Came from reassembled IP fragments (payload is in the side buffer).
    pub reassembled: bool,
    pub payload_start: u32,
    pub payload_len: u32,
    /// TCP payload bytes on the wire but cut by the snap length.
    pub missing: u32,
    /// Length of the TCP header, which precedes the payload in the buffer.
    pub tcp_header_len: u8,
    /// What IP defragmentation noticed about this segment's flow
    /// (`FRAG_NOTE_*` bits): fragments of it that overlapped with different
    /// bytes, were dropped, or were tiny.
    pub frag_notes: u8,
    /// IPv4 TTL or IPv6 hop limit; 0 when unknown (reassembled datagrams).
    pub ttl: u8,
    /// A TSval given by a caller that has no header bytes to read it from
    /// (`FlowTable::segment`); decode leaves it unset, see
    /// [`Segment::tsval_in`].
    pub has_tsval: bool,
    pub tsval: u32,
    /// The flow's tag in the flow tables (`flow::flow_tag`), set by the
    /// capture thread; 0 means not computed.
    pub flow_tag: u32,
    /// The checksum as decoding found it (`CSUM_*` bits; 0: not summed):
    /// see [`Segment::presum`].
    pub csum: u8,
}

/// [`Segment::csum`]: decoding summed the segment's checksum.
pub const CSUM_SUMMED: u8 = 1;
/// [`Segment::csum`]: the sum was right.
pub const CSUM_SUM_OK: u8 = 2;
/// [`Segment::csum`]: the field held what an offloading sender leaves
/// (see [`Segment::checksum_offloaded`]).
pub const CSUM_FIELD_PSEUDO: u8 = 4;

/// The largest TCP segment (header and payload, bytes) that decoding sums:
/// handshakes, replies, short requests. Larger ones are left to the flow
/// table, which skips the sum where it cannot change a finding.
pub const PRESUM_MAX: usize = 512;

impl Segment {
    pub fn syn(&self) -> bool {
        self.flags & TCP_SYN != 0
    }
    pub fn ack_flag(&self) -> bool {
        self.flags & TCP_ACK != 0
    }
    pub fn fin(&self) -> bool {
        self.flags & TCP_FIN != 0
    }
    pub fn rst(&self) -> bool {
        self.flags & TCP_RST != 0
    }
    pub fn src_socket(&self) -> SocketAddr {
        SocketAddr::new(ip_from_addr(self.src, self.v4), self.sport)
    }
    pub fn dst_socket(&self) -> SocketAddr {
        SocketAddr::new(ip_from_addr(self.dst, self.v4), self.dport)
    }
    /// Whether the checksum matters: a segment that carries bytes, opens a
    /// direction or ends the flow (a bare ACK or FIN is not worth summing),
    /// and is whole.
    pub fn checksum_matters(&self) -> bool {
        (self.payload_len > 0 || self.syn() || self.rst()) && self.missing == 0 && !self.reassembled
    }

    /// The TSval of the segment's TCP timestamp option, if it has one, from
    /// its header bytes `tcp` (header and payload, as captured), or the one
    /// given in `tsval`. Read on demand, by the flow layer for the segments
    /// of open flows it judges, rather than by decode for every segment;
    /// segments without captured data, SYN, FIN or RST have none to judge.
    #[inline]
    pub fn tsval_in(&self, tcp: Option<&[u8]>) -> Option<u32> {
        if self.has_tsval {
            return Some(self.tsval);
        }
        if self.payload_len == 0 && self.flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
            return None;
        }
        tcp_tsval(tcp?, usize::from(self.tcp_header_len))
    }

    /// Where the byte an endpoint takes out of the stream as TCP urgent
    /// data lies (read out of band unless the socket asks otherwise), from
    /// the header bytes `tcp` (header and payload, as captured): its
    /// distance from the segment's first data byte, in this segment or a
    /// later one. It is the byte before the one the urgent pointer points
    /// at, as stacks read it (RFC 6093). `None` without URG or a pointer.
    pub fn urgent_at(&self, tcp: &[u8]) -> Option<u32> {
        if self.flags & TCP_URG == 0 {
            return None;
        }
        let Some(&[a, b]) = tcp.get(18..20) else {
            return None;
        };
        u32::from(u16::from_be_bytes([a, b])).checked_sub(1)
    }

    /// True when the TCP checksum over `tcp` (header and payload, as
    /// captured) is correct. Only meaningful when nothing was cut. A
    /// segment that decoding summed ([`Segment::presum`]) answers from
    /// that sum, taken over the same bytes.
    pub fn checksum_ok(&self, tcp: &[u8]) -> bool {
        if self.csum & CSUM_SUMMED != 0 {
            return self.csum & CSUM_SUM_OK != 0;
        }
        sum_ok(tcp, self.pseudo_sum(tcp.len()))
    }

    /// Sums the checksum now if it matters ([`Segment::checksum_matters`])
    /// and the segment is small ([`PRESUM_MAX`]): see [`presum`]. `tcp`
    /// is its header and payload, as captured.
    #[inline]
    pub(crate) fn presum(&mut self, tcp: &[u8]) {
        if tcp.len() <= PRESUM_MAX && self.checksum_matters() {
            self.csum = presum(self.v4, self.src, self.dst, tcp);
        }
    }

    /// The folded sum of the TCP pseudo-header (addresses, protocol 6, TCP
    /// length), as a big-endian value. An IPv6 address is summed as two
    /// 64-bit halves of two 32-bit words each, an IPv4 one as its 32-bit
    /// word: 2^16 and 2^32 are 1 modulo 0xffff, so these fold to the sum of
    /// the 16-bit words.
    fn pseudo_sum(&self, tcp_len: usize) -> u16 {
        pseudo_sum(self.v4, self.src, self.dst, tcp_len)
    }

    /// True when the checksum field holds what a sender that offloads
    /// checksums leaves for its NIC: the pseudo-header sum (Linux, the
    /// BSDs), or its complement. Such a segment was captured on its way
    /// out, before the NIC filled the field; any other wrong value is a
    /// corrupted or forged segment, which the receiver drops.
    pub fn checksum_offloaded(&self, tcp: &[u8]) -> bool {
        if self.csum & CSUM_SUMMED != 0 {
            return self.csum & CSUM_FIELD_PSEUDO != 0;
        }
        field_is_pseudo(tcp, self.pseudo_sum(tcp.len()))
    }
}

/// See [`Segment::pseudo_sum`].
#[inline]
fn pseudo_sum(v4: bool, src: Addr, dst: Addr, tcp_len: usize) -> u16 {
    let words = |a: u128| -> u64 {
        if v4 {
            u64::from(a as u32)
        } else {
            let (lo, hi) = (a as u64, (a >> 64) as u64);
            (lo & 0xffff_ffff) + (lo >> 32) + (hi & 0xffff_ffff) + (hi >> 32)
        }
    };
    fold16(words(src) + words(dst) + 6 + tcp_len as u64)
}

/// Whether the checksum over `tcp` is right, given the pseudo-header sum
/// `pseudo`.
#[inline]
fn sum_ok(tcp: &[u8], pseudo: u16) -> bool {
    // The pseudo-header (addresses, protocol 6, TCP length) is summed as
    // big-endian 16-bit words; the segment in native order, eight bytes at
    // a time. RFC 1071: a sum of byte-swapped words is the byte-swapped
    // sum, so the two meet after swapping the first.
    fold16(u64::from(u16::from_be(pseudo)) + ones_sum(tcp)) == 0xffff
}

/// [`Segment::csum`] for the segment of `tcp` (its header and payload, as
/// captured) between `src` and `dst`: its checksum summed by the capture
/// thread's decoder, while those bytes are in that core's cache. The flow
/// table's worker, on another core, then neither sums nor reads them for
/// it. The capture thread decodes while the workers are the slower side
/// (see the pipeline's `Splitter`), so the sum moves to the side that has
/// time, at the price of sums the flow table would not have asked for
/// (segments of flows it has already set aside); a worker's own decoder
/// does not sum ahead ([`Decoder::set_presum`]).
#[inline(never)]
fn presum(v4: bool, src: Addr, dst: Addr, tcp: &[u8]) -> u8 {
    let pseudo = pseudo_sum(v4, src, dst, tcp.len());
    let mut csum = CSUM_SUMMED;
    if sum_ok(tcp, pseudo) {
        csum |= CSUM_SUM_OK;
    }
    if field_is_pseudo(tcp, pseudo) {
        csum |= CSUM_FIELD_PSEUDO;
    }
    csum
}

/// [`Segment::csum`] for the fast path's segment `tcp` (header of `hdr`
/// bytes and payload, nothing cut) with TCP `flags` between the addresses
/// of IP version 4 or 6 `(v4, src, dst)`: with `on` ([`Decoder::set_presum`]),
/// [`presum`] when its checksum matters (data, SYN, RST:
/// [`Segment::checksum_matters`]) and it is small ([`PRESUM_MAX`]);
/// otherwise 0 (not summed).
#[inline(always)]
fn presum_fast(
    on: bool,
    (v4, src, dst): (bool, Addr, Addr),
    tcp: &[u8],
    hdr: usize,
    flags: u8,
) -> u8 {
    // A worker's decoder (off) decides nothing here.
    if !on {
        return 0;
    }
    let matters = tcp.len() > hdr || flags & (TCP_SYN | TCP_RST) != 0;
    if matters && tcp.len() <= PRESUM_MAX {
        presum(v4, src, dst, tcp)
    } else {
        0
    }
}

/// Whether the checksum field of `tcp` holds `pseudo` or its complement.
#[inline]
fn field_is_pseudo(tcp: &[u8], pseudo: u16) -> bool {
    let Some(&[a, b]) = tcp.get(16..18) else {
        return false;
    };
    let field = u16::from_be_bytes([a, b]);
    field == pseudo || field == !pseudo
}

/// Why a frame produced no segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    UnsupportedLinkType,
    Truncated,
    NotIp,
    BadIp,
    NotTcp,
    BadTcp,
    FragmentHeld,
    FragmentDropped,
}

impl Skip {
    pub const ALL: [Skip; 8] = [
        Skip::UnsupportedLinkType,
        Skip::Truncated,
        Skip::NotIp,
        Skip::BadIp,
        Skip::NotTcp,
        Skip::BadTcp,
        Skip::FragmentHeld,
        Skip::FragmentDropped,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Skip::UnsupportedLinkType => "unsupported_link_type",
            Skip::Truncated => "truncated_frame",
            Skip::NotIp => "not_ip",
            Skip::BadIp => "bad_ip_header",
            Skip::NotTcp => "not_tcp",
            Skip::BadTcp => "bad_tcp_header",
            Skip::FragmentHeld => "ip_fragment_held",
            Skip::FragmentDropped => "ip_fragment_dropped",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of the decode stage.
#[derive(Clone, Debug, Default)]
pub struct DecodeStats {
    pub frames: u64,
    pub bytes: u64,
    pub tcp_segments: u64,
    pub skipped: [u64; 8],
    pub fragments_conflicting: u64,
    /// Datagrams reassembled from tiny fragments ([`FRAG_NOTE_TINY`]).
    pub fragments_tiny: u64,
    /// TCP datagrams dropped incomplete by a defragmentation cap, an
    /// eviction or the timeout.
    pub fragment_datagrams_lost: u64,
    /// Of those, the ones no segment of their flow could be told about
    /// (the note table was full, the note timed out, or the input ended
    /// first; datagrams still incomplete at the end are counted too).
    pub fragment_losses_unreported: u64,
}

impl DecodeStats {
    pub fn skipped(&self, s: Skip) -> u64 {
        self.skipped.get(s.index()).copied().unwrap_or(0)
    }
    pub fn merge(&mut self, o: &DecodeStats) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.tcp_segments += o.tcp_segments;
        for (a, b) in self.skipped.iter_mut().zip(o.skipped.iter()) {
            *a += b;
        }
        self.fragments_conflicting += o.fragments_conflicting;
        self.fragments_tiny += o.fragments_tiny;
        self.fragment_datagrams_lost += o.fragment_datagrams_lost;
        self.fragment_losses_unreported += o.fragment_losses_unreported;
    }
}

/// Result of decoding one frame.
#[derive(Debug)]
pub enum Decoded {
    Segment(Segment),
    /// A reassembled datagram's TCP segment; payload bytes to be appended to
    /// the side buffer by the caller (`payload_start` is relative to it).
    Reassembled(Segment, Vec<u8>),
    Skip(Skip),
}

/// The decoder: stateless but for IP fragment reassembly, the notes of
/// datagrams it lost, and counters.
pub struct Decoder {
    defrag: Defragmenter,
    /// Empty almost always, so the per-segment cost is one test.
    notes: FragNotes,
    pub stats: DecodeStats,
    /// See [`Decoder::set_presum`].
    presum: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DefragConfig::default())
    }
}

impl Decoder {
    pub fn new(cfg: DefragConfig) -> Self {
        Decoder {
            defrag: Defragmenter::new(cfg),
            notes: FragNotes::default(),
            stats: DecodeStats::default(),
            presum: true,
        }
    }

    /// Whether this decoder sums small segments' checksums
    /// ([`Segment::presum`]; on by default). Off for a decoder in the
    /// thread that also runs the flow table: there the sum is taken when
    /// the table asks, for the segments it asks about, and only those.
    pub fn set_presum(&mut self, on: bool) {
        self.presum = on;
    }

    /// Turns the defragmenter's lost-datagram reports into notes for the
    /// next segments of their flows.
    fn collect_lost(&mut self, now: u64) {
        while let Some(lost) = self.defrag.take_lost() {
            self.stats.fragment_datagrams_lost += 1;
            let v4 = lost.key.src.is_ipv4();
            let tiny = if v4 {
                TINY_FRAGMENT_V4
            } else {
                TINY_FRAGMENT_V6
            };
            let mut notes = FRAG_NOTE_DROPPED;
            if lost.smallest_fragment < tiny {
                notes |= FRAG_NOTE_TINY;
            }
            let ports = lost.head.map(|h| {
                (
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                )
            });
            self.notes.add(FragNote::new(
                addr_from_ip(lost.key.src),
                addr_from_ip(lost.key.dst),
                ports,
                notes,
                now,
            ));
        }
        self.update_unreported();
    }

    /// Flags `seg` with the notes of its flow (and of its address pair),
    /// consuming a flow's note and counting a pair's.
    #[inline(never)]
    fn apply_notes(&mut self, seg: &mut Segment) {
        self.notes.apply(seg);
        self.update_unreported();
    }

    /// Notes given up, pending, and datagrams still incomplete: what no
    /// flow has been told (yet); at end of input, what none will be.
    fn update_unreported(&mut self) {
        self.stats.fragment_losses_unreported =
            self.notes.unreported() + self.defrag.held_datagrams() as u64;
    }

    pub fn defrag_stats(&self) -> &defrag::DefragStats {
        self.defrag.stats()
    }

    fn skip(&mut self, s: Skip) -> Decoded {
        if let Some(c) = self.stats.skipped.get_mut(s.index()) {
            *c += 1;
        }
        Decoded::Skip(s)
    }

    /// True when another decoder (a worker's, fresh) would decode `frame`
    /// exactly as this one would, so the frame may be handed over
    /// undecoded: no notes of lost datagrams wait here (they flag the
    /// segments decoded after them), and the frame is no IP fragment, nor
    /// an IPv6 packet whose extension headers might hold one, so it never
    /// reaches the reassembly state. Anything unusual says no and is
    /// decoded here. Reads the link header and two bytes of IP.
    #[inline]
    pub fn may_defer(&self, link_type: u32, frame: &[u8]) -> bool {
        self.deferrable_ip(link_type, frame).is_some()
    }

    /// The IP packet of `frame` when [`may_defer`](Self::may_defer) allows it.
    #[inline]
    fn deferrable_ip<'a>(&self, link_type: u32, frame: &'a [u8]) -> Option<&'a [u8]> {
        if !self.notes.is_empty() {
            return None;
        }
        let ip = link_payload(link_type, frame).ok()?;
        let whole = match ip.first().map(|b| b >> 4) {
            // More-fragments flag and offset clear.
            Some(4) => ip
                .get(6..8)
                .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff == 0),
            // TCP straight after the fixed header.
            Some(6) => ip.get(6) == Some(&6),
            _ => false,
        };
        whole.then_some(ip)
    }

    /// For a frame [`may_defer`](Self::may_defer) allows that holds TCP
    /// with its ports captured: the endpoints `(src, sport, dst, dport)`
    /// its segment will have, read from the headers alone, so that the
    /// capture thread can pick its flow's worker without decoding it.
    /// `None`: decode it here. (A frame whose headers turn out bad gives
    /// endpoints that no segment will have: its decoder skips it, wherever
    /// it goes.)
    #[inline]
    pub fn deferred_endpoints(
        &self,
        link_type: u32,
        frame: &[u8],
    ) -> Option<(Addr, u16, Addr, u16)> {
        let ip = self.deferrable_ip(link_type, frame)?;
        let first = *ip.first()?;
        let (src, dst, tcp_at) = match first >> 4 {
            4 => {
                let h: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
                if h[9] != 6 {
                    return None;
                }
                let v4 = |a: [u8; 4]| u128::from(u32::from_be_bytes(a)) | 0xffff_0000_0000;
                let ihl = usize::from(first & 0x0f) * 4;
                (
                    v4([h[12], h[13], h[14], h[15]]),
                    v4([h[16], h[17], h[18], h[19]]),
                    ihl,
                )
            }
            6 => {
                let h: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
                let a: [u8; 16] = h.get(8..24)?.try_into().ok()?;
                let b: [u8; 16] = h.get(24..40)?.try_into().ok()?;
                (u128::from_be_bytes(a), u128::from_be_bytes(b), 40)
            }
            _ => return None,
        };
        let p: &[u8; 4] = ip.get(tcp_at..tcp_at.checked_add(4)?)?.try_into().ok()?;
        let sport = u16::from_be_bytes([p[0], p[1]]);
        let dport = u16::from_be_bytes([p[2], p[3]]);
        Some((src, sport, dst, dport))
    }

    /// Decodes `frame` (captured bytes; `wire_len` on the wire). `frame_start`
    /// is the frame's offset in its buffer, so that the segment's payload can
    /// be located there.
    // Inlined into the capture thread's loop, its one caller on the hot
    // path: out of line, its segment was returned through memory and its
    // fast path laid out apart from the loop (25 instructions a packet
    // more on small flows, callgrind).
    #[inline(always)]
    pub fn decode(
        &mut self,
        ts: u64,
        link_type: u32,
        frame: &[u8],
        frame_start: u32,
        wire_len: u32,
    ) -> Decoded {
        if self.notes.is_empty() {
            self.decode_frame(ts, link_type, frame, frame_start, wire_len)
        } else {
            self.decode_noted(ts, link_type, frame, frame_start, wire_len)
        }
    }

    /// As [`Decoder::decode`], but a segment of the usual kind (plain IPv4
    /// or IPv6 over TCP, no notes waiting) is put at the end of `segs`
    /// rather than returned: `None` then. Anything else is returned as
    /// `decode` returns it. Pushed where it is made, the segment is written
    /// once; returned, it is copied on its way to the list (7 % of a
    /// worker's instructions on small flows, callgrind).
    #[inline]
    pub fn decode_into(
        &mut self,
        ts: u64,
        link_type: u32,
        frame: &[u8],
        frame_start: u32,
        wire_len: u32,
        segs: &mut Vec<Segment>,
    ) -> Option<Decoded> {
        if !self.notes.is_empty() {
            return Some(self.decode_noted(ts, link_type, frame, frame_start, wire_len));
        }
        let ip = match self.frame_ip(link_type, frame, wire_len) {
            Ok(ip) => ip,
            Err(d) => return Some(d),
        };
        // As in `decode_frame`; kept apart so that the segment is made in
        // its place (through a shared helper it was copied again).
        if let Some(seg) = fast_tcp(ts, frame, ip, frame_start, self.presum) {
            self.stats.tcp_segments += 1;
            segs.push(seg);
            return None;
        }
        Some(self.decode_ip(ts, frame, ip, frame_start, wire_len))
    }

    /// [`Decoder::decode`] while notes of lost datagrams wait: the rare
    /// case, kept out of line so that the usual one returns its segment
    /// without a copy.
    #[inline(never)]
    fn decode_noted(
        &mut self,
        ts: u64,
        link_type: u32,
        frame: &[u8],
        frame_start: u32,
        wire_len: u32,
    ) -> Decoded {
        let mut d = self.decode_frame(ts, link_type, frame, frame_start, wire_len);
        if let Decoded::Segment(seg) | Decoded::Reassembled(seg, _) = &mut d {
            self.apply_notes(seg);
        }
        d
    }

    #[inline(always)]
    fn decode_frame(
        &mut self,
        ts: u64,
        link_type: u32,
        frame: &[u8],
        frame_start: u32,
        wire_len: u32,
    ) -> Decoded {
        let ip = match self.frame_ip(link_type, frame, wire_len) {
            Ok(ip) => ip,
            Err(d) => return d,
        };
        // Most packets are plain IPv4/IPv6 over TCP: read them by hand;
        // anything else (options, extension headers, fragments, truncation,
        // other protocols) takes the general path below.
        if let Some(seg) = fast_tcp(ts, frame, ip, frame_start, self.presum) {
            self.stats.tcp_segments += 1;
            return Decoded::Segment(seg);
        }
        self.decode_ip(ts, frame, ip, frame_start, wire_len)
    }

    /// Counts `frame` and finds its IP packet; `Err`: what `decode`
    /// returns for a frame without one.
    #[inline(always)]
    fn frame_ip<'a>(
        &mut self,
        link_type: u32,
        frame: &'a [u8],
        wire_len: u32,
    ) -> Result<&'a [u8], Decoded> {
        self.stats.frames += 1;
        self.stats.bytes += u64::from(wire_len.max(frame.len() as u32));
        link_payload(link_type, frame).map_err(|s| self.skip(s))
    }

    /// The general path: any IP packet, with etherparse. Kept out of line
    /// so that the fast path stays small.
    #[inline(never)]
    // Long: the general path, IPv4 and IPv6 and their fragments, kept out of line and whole beside the fast path.
    fn decode_ip(
        &mut self,
        ts: u64,
        frame: &[u8],
        ip: &[u8],
        frame_start: u32,
        wire_len: u32,
    ) -> Decoded {
        let cut = wire_len.saturating_sub(frame.len() as u32);
        let (ipslice, _) = match LaxIpSlice::from_slice(ip) {
            Ok(v) => v,
            // An IP header cut short is a truncated frame, as a cut TCP header is.
            Err(etherparse::err::ip::LaxHeaderSliceError::Len(_)) => {
                return self.skip(Skip::Truncated)
            }
            Err(_) => return self.skip(Skip::BadIp),
        };
        let (src, dst, v4, ttl) = match &ipslice {
            LaxIpSlice::Ipv4(s) => (
                IpAddr::V4(s.header().source_addr()),
                IpAddr::V4(s.header().destination_addr()),
                true,
                s.header().ttl(),
            ),
            LaxIpSlice::Ipv6(s) => (
                IpAddr::V6(s.header().source_addr()),
                IpAddr::V6(s.header().destination_addr()),
                false,
                s.header().hop_limit(),
            ),
        };
        let payload = ipslice.payload();
        if payload.ip_number != IpNumber::TCP {
            return self.skip(Skip::NotTcp);
        }
        if payload.fragmented {
            let (id, offset, more) = match &ipslice {
                LaxIpSlice::Ipv4(s) => {
                    let h = s.header();
                    (
                        u32::from(h.identification()),
                        u32::from(h.fragments_offset().byte_offset()),
                        h.more_fragments(),
                    )
                }
                LaxIpSlice::Ipv6(s) => {
                    let frag = s.extensions().clone().into_iter().find_map(|e| match e {
                        Ipv6ExtensionSlice::Fragment(f) => Some(f),
                        _ => None,
                    });
                    match frag {
                        Some(f) => (
                            f.identification(),
                            u32::from(f.fragment_offset().byte_offset()),
                            f.more_fragments(),
                        ),
                        None => return self.skip(Skip::BadIp),
                    }
                }
            };
            if payload.incomplete {
                // A fragment cut by the snap length cannot be reassembled.
                return self.skip(Skip::FragmentDropped);
            }
            let key = FragmentKey {
                src,
                dst,
                protocol: 6,
                id,
            };
            let d = match self.defrag.push(ts, key, offset, more, payload.payload) {
                DefragOutcome::Held => self.skip(Skip::FragmentHeld),
                DefragOutcome::Dropped(_) => self.skip(Skip::FragmentDropped),
                DefragOutcome::Complete {
                    payload: whole,
                    conflicting_overlap,
                    smallest_fragment,
                } => {
                    let mut notes = 0;
                    if conflicting_overlap {
                        self.stats.fragments_conflicting += 1;
                        notes |= FRAG_NOTE_CONFLICT;
                    }
                    let tiny = if v4 {
                        TINY_FRAGMENT_V4
                    } else {
                        TINY_FRAGMENT_V6
                    };
                    if smallest_fragment < tiny {
                        self.stats.fragments_tiny += 1;
                        notes |= FRAG_NOTE_TINY;
                    }
                    let owned = whole.to_vec();
                    match tcp_segment(ts, src, dst, v4, &owned, 0, 0) {
                        Some(seg) => {
                            self.stats.tcp_segments += 1;
                            let mut seg = seg;
                            seg.reassembled = true;
                            seg.frag_notes = notes;
                            // The fragments' TTLs may differ: unknown.
                            seg.ttl = 0;
                            Decoded::Reassembled(seg, owned)
                        }
                        None => self.skip(Skip::BadTcp),
                    }
                }
            };
            self.collect_lost(ts);
            return d;
        }
        // Bytes of the IP payload lost to the snap length.
        let missing = if payload.incomplete {
            let declared = match &ipslice {
                LaxIpSlice::Ipv4(s) => {
                    let h = s.header();
                    u32::from(h.total_len()).saturating_sub(u32::from(h.ihl()) * 4)
                }
                LaxIpSlice::Ipv6(s) => u32::from(s.header().payload_length())
                    .saturating_sub(s.extensions().slice().len() as u32),
            };
            let shortfall = declared.saturating_sub(payload.payload.len() as u32);
            if shortfall > cut {
                // The IP length claims bytes that were never on the wire:
                // the receiver drops such a packet, and it must not move
                // the stream ahead by a fake gap.
                return self.skip(Skip::BadIp);
            }
            shortfall
        } else {
            0
        };
        let base = offset_in(frame, payload.payload).map(|o| frame_start.saturating_add(o));
        let Some(base) = base else {
            return self.skip(Skip::BadIp);
        };
        match tcp_segment(ts, src, dst, v4, payload.payload, base, missing) {
            Some(mut seg) => {
                self.stats.tcp_segments += 1;
                seg.ttl = ttl;
                if self.presum {
                    seg.presum(payload.payload);
                }
                Decoded::Segment(seg)
            }
            None => self.skip(if payload.incomplete {
                Skip::Truncated
            } else {
                Skip::BadTcp
            }),
        }
    }

    /// Drops fragments older than the timeout, and notes of lost
    /// datagrams that no segment claimed in time.
    pub fn expire(&mut self, now: u64) {
        self.defrag.expire(now);
        self.collect_lost(now);
        if !self.notes.is_empty() {
            self.notes.expire(now);
        }
        self.update_unreported();
    }
}

/// The one's-complement sum of `b` as native-order 16-bit words (the last
/// one padded with zero), for the TCP checksum: not folded, at most about
/// 2^33, and zero only when every byte is.
///
/// Sixteen bytes a turn, as two 64-bit words added with their carries
/// counted apart (end-around carry, added back at the end): 2^16, 2^32 and
/// 2^64 are all 1 modulo 0xffff, so any grouping of the native-order words
/// folds to the same sum.
#[inline]
fn ones_sum(b: &[u8]) -> u64 {
    let word = |c: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_ne_bytes(w)
    };
    let mut acc = 0u64;
    let mut carries = 0u64;
    let mut add = |v: u64| {
        let (s, o) = acc.overflowing_add(v);
        acc = s;
        carries += u64::from(o);
    };
    let mut pairs = b.chunks_exact(16);
    for c in &mut pairs {
        let (x, y) = c.split_at(8);
        add(word(x));
        add(word(y));
    }
    let mut rest = pairs.remainder();
    if let Some((x, more)) = rest.split_first_chunk::<8>() {
        add(u64::from_ne_bytes(*x));
        rest = more;
    }
    let (acc, o) = acc.overflowing_add(carries);
    let acc = acc + u64::from(o);
    let mut sum = (acc & 0xffff_ffff) + (acc >> 32);
    // Up to seven bytes left: a word of four, one of two, a last byte (its
    // 16-bit word padded with zero). Each starts at an even offset, so all
    // add up in the same native order.
    if let [a, b, c, d, more @ ..] = rest {
        sum += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = more;
    }
    if let [a, b, more @ ..] = rest {
        sum += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = more;
    }
    if let [a] = rest {
        sum += u64::from(u16::from_ne_bytes([*a, 0]));
    }
    sum
}

/// A one's-complement sum folded to 16 bits: the sum modulo 0xffff as a
/// number in 1..=0xffff, or 0 for 0. Four steps, without a loop: each
/// keeps the value modulo 0xffff and keeps it nonzero, and the last leaves
/// at most 0xffff (after 32 + 32, at most 2^33; then at most 0x2_fffe;
/// then at most 0x1_0001; then at most 0xffff).
#[inline]
fn fold16(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// IPv4 without fragmentation, or IPv6 whose next header is TCP, carrying a
/// whole TCP segment: read directly. `None` sends the packet down the
/// general path, which gives the same result for these packets (a test
/// checks it on every fixture frame).
#[inline(always)]
fn fast_tcp(ts: u64, frame: &[u8], ip: &[u8], frame_start: u32, presum: bool) -> Option<Segment> {
    // Fixed-size views of the headers: one bounds check each, then fields
    // at constant offsets.
    let be16 = |b: [u8; 2]| u16::from_be_bytes(b);
    let first = *ip.first()?;
    let (src, dst, v4, ttl, tcp_at, tcp_end) = match first >> 4 {
        4 => {
            let h: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16([h[2], h[3]]));
            // Not fragmented (MF clear, offset 0), protocol TCP, lengths sane.
            if ihl < 20
                || total < ihl
                || total > ip.len()
                || be16([h[6], h[7]]) & 0x3fff != 0
                || h[9] != 6
            {
                return None;
            }
            let src =
                u128::from(u32::from_be_bytes([h[12], h[13], h[14], h[15]])) | 0xffff_0000_0000;
            let dst =
                u128::from(u32::from_be_bytes([h[16], h[17], h[18], h[19]])) | 0xffff_0000_0000;
            (src, dst, true, h[8], ihl, total)
        }
        6 => {
            let h: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
            let plen = usize::from(be16([h[4], h[5]]));
            if h[6] != 6 || plen == 0 || 40 + plen > ip.len() {
                return None;
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[8..24]);
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[24..40]);
            (
                u128::from_be_bytes(a),
                u128::from_be_bytes(b),
                false,
                h[7],
                40,
                40 + plen,
            )
        }
        _ => return None,
    };
    let tcp = ip.get(tcp_at..tcp_end)?;
    let t: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let hdr = usize::from(t[12] >> 4) * 4;
    if hdr < 20 || hdr > tcp.len() {
        return None;
    }
    let flags = t[13] & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG);
    let base = offset_in(frame, tcp)?;
    let csum = presum_fast(presum, (v4, src, dst), tcp, hdr, flags);
    Some(Segment {
        ts,
        src,
        dst,
        v4,
        sport: be16([t[0], t[1]]),
        dport: be16([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags,
        reassembled: false,
        payload_start: frame_start.saturating_add(base).saturating_add(hdr as u32),
        payload_len: (tcp.len() - hdr) as u32,
        missing: 0,
        tcp_header_len: hdr as u8,
        frag_notes: 0,
        ttl,
        has_tsval: false,
        tsval: 0,
        flow_tag: 0,
        csum,
    })
}

/// The TSval of the TCP timestamp option (RFC 7323), if the header of
/// `hdr` bytes at the start of `tcp` has one. Linux puts it at a fixed
/// place (after two NOPs; in a SYN after MSS and SACK-permitted), so that
/// is tried first; otherwise the options (at most 40 bytes) are walked.
#[inline(always)]
fn tcp_tsval(tcp: &[u8], hdr: usize) -> Option<u32> {
    // The option takes 10 bytes: a header without 12 bytes of options
    // (they come in 4-byte words) has none.
    if hdr < 32 {
        return None;
    }
    let o: &[u8; 12] = tcp.get(20..32)?.try_into().ok()?;
    if o[..4] == [1, 1, 8, 10] {
        return Some(u32::from_be_bytes([o[4], o[5], o[6], o[7]]));
    }
    // A Linux SYN: MSS, SACK-permitted, then the timestamp (TSecr included).
    if hdr >= 36 && o[..2] == [2, 4] && o[4..8] == [4, 2, 8, 10] {
        return Some(u32::from_be_bytes([o[8], o[9], o[10], o[11]]));
    }
    tcp_tsval_walk(tcp.get(20..hdr)?)
}

/// The TSval among TCP options laid out otherwise.
#[inline(never)]
fn tcp_tsval_walk(opts: &[u8]) -> Option<u32> {
    let mut rest = opts;
    loop {
        match rest {
            [] | [0, ..] => return None,
            [1, more @ ..] => rest = more,
            [8, 10, a, b, c, d, _, _, _, _, ..] => {
                return Some(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            [_, len, ..] if *len >= 2 => rest = rest.get(usize::from(*len)..)?,
            _ => return None,
        }
    }
}

/// Offset of `inner` inside `outer`, both slices of the same buffer.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<u32> {
    let o = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    if o + inner.len() > outer.len() {
        return None;
    }
    u32::try_from(o).ok()
}

/// Builds the segment from a TCP header + payload at `base` in the buffer.
fn tcp_segment(
    ts: u64,
    src: IpAddr,
    dst: IpAddr,
    v4: bool,
    tcp_bytes: &[u8],
    base: u32,
    missing: u32,
) -> Option<Segment> {
    let tcp = TcpSlice::from_slice(tcp_bytes).ok()?;
    let hdr = tcp.header_slice().len() as u32;
    let payload = tcp.payload();
    let mut flags = 0u8;
    if tcp.fin() {
        flags |= TCP_FIN;
    }
    if tcp.syn() {
        flags |= TCP_SYN;
    }
    if tcp.rst() {
        flags |= TCP_RST;
    }
    if tcp.ack() {
        flags |= TCP_ACK;
    }
    if tcp.urg() {
        flags |= TCP_URG;
    }
    Some(Segment {
        ts,
        src: addr_from_ip(src),
        dst: addr_from_ip(dst),
        v4,
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags,
        reassembled: false,
        tcp_header_len: u8::try_from(hdr).unwrap_or(u8::MAX),
        frag_notes: 0,
        ttl: 0,
        has_tsval: false,
        tsval: 0,
        payload_start: base.saturating_add(hdr),
        payload_len: payload.len() as u32,
        missing,
        flow_tag: 0,
        csum: 0,
    })
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Returns the IP packet inside a frame of the given link type.
#[inline]
pub(crate) fn link_payload(link_type: u32, frame: &[u8]) -> Result<&[u8], Skip> {
    // Untagged Ethernet carrying IPv4/IPv6, nearly every frame: one look
    // instead of the general match below (same result).
    if link_type == LINKTYPE_ETHERNET {
        if let Some((&[.., 0x08, 0x00] | &[.., 0x86, 0xdd], ip)) = frame.split_first_chunk::<14>() {
            return Ok(ip);
        }
    }
    link_payload_general(link_type, frame)
}

fn link_payload_general(link_type: u32, frame: &[u8]) -> Result<&[u8], Skip> {
    match link_type {
        LINKTYPE_ETHERNET => {
            let et = be16(frame, 12).ok_or(Skip::Truncated)?;
            ether_payload(et, frame.get(14..).ok_or(Skip::Truncated)?)
        }
        LINKTYPE_LINUX_SLL => {
            let et = be16(frame, 14).ok_or(Skip::Truncated)?;
            ether_payload(et, frame.get(16..).ok_or(Skip::Truncated)?)
        }
        LINKTYPE_LINUX_SLL2 => {
            let et = be16(frame, 0).ok_or(Skip::Truncated)?;
            ether_payload(et, frame.get(20..).ok_or(Skip::Truncated)?)
        }
        LINKTYPE_NULL | LINKTYPE_LOOP => by_version(frame.get(4..).ok_or(Skip::Truncated)?),
        LINKTYPE_RAW | LINKTYPE_RAW_BSD12 | LINKTYPE_RAW_BSD14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            by_version(frame)
        }
        _ => Err(Skip::UnsupportedLinkType),
    }
}

fn by_version(ip: &[u8]) -> Result<&[u8], Skip> {
    match ip.first().map(|b| b >> 4) {
        Some(4) | Some(6) => Ok(ip),
        Some(_) => Err(Skip::NotIp),
        None => Err(Skip::Truncated),
    }
}

/// Follows VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, old QinQ 0x9100).
fn ether_payload(mut ether_type: u16, mut rest: &[u8]) -> Result<&[u8], Skip> {
    for _ in 0..=MAX_VLAN_TAGS {
        match ether_type {
            0x0800 | 0x86dd => return Ok(rest),
            0x8100 | 0x88a8 | 0x9100 => {
                ether_type = be16(rest, 2).ok_or(Skip::Truncated)?;
                rest = rest.get(4..).ok_or(Skip::Truncated)?;
            }
            _ => return Err(Skip::NotIp),
        }
    }
    Err(Skip::NotIp)
}

#[cfg(test)]
mod tests;
