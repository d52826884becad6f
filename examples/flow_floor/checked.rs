//! The checked floor (`flow_floor FILE --checked`): the flow floor with the
//! checks that a sensor which must not be blinded makes on the common path
//! of every packet, built as cheaply as we know how, and nothing more.
//!
//! The reading side decodes each frame as such a sensor needs it: both
//! endpoints, sequence and acknowledgement numbers, flags, TTL or hop
//! limit, the timestamp option and the first payload bytes; and it sums
//! the TCP checksum where it can matter (a segment of up to 512 bytes that
//! carries bytes, opens a side or resets the flow). Each flow (two cache
//! lines) keeps the sequence number after each side's SYN, each side's
//! reference TTL and latest timestamp, the capture-loss books (the next
//! byte expected and the highest acknowledgement, a side each) and its
//! verdict from its first payload bytes. On a flow not set aside, a
//! segment with a bad checksum, a second SYN with another sequence number,
//! a TTL off its side's reference, a timestamp older than its side's
//! latest, or a RST far from the next expected byte is dropped (and
//! counted), as the endpoint would drop it; then the loss books are kept;
//! then the first payload bytes are sniffed: digits and a colon can open a
//! QMTP/QMQP netstring (a candidate, whose bytes are only counted),
//! anything else sets the flow aside. A flow set aside checks only for a
//! second copy of the bytes that set it aside, a new SYN, its loss books
//! and its end.
//!
//! Left out, of what qmwatch does: closed flows are dropped at once (as the
//! flow floor drops them), not kept for a second to take stray packets;
//! larger segments are not summed; nothing is reassembled or parsed; no
//! event is made; there is no detect thread. So this is a floor for a
//! sensor with these checks: less than qmwatch must do, measured on the
//! machine at hand.
//!
//! Must not: panic on any input (lengths are bounds-checked; the table has
//! the flow floor's cap), or be mistaken for a detector.

use super::{hash_of, ip_of, FlatSlot, FlowTable, Key, Rules, MAX_FLOWS, TCP_FIN, TCP_RST};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// A TTL or hop limit further than this from its side's reference is taken
/// for a packet that dies before the endpoint.
const TTL_SLACK: u8 = 4;
/// A RST further than this from the next byte expected is dropped.
const RST_WINDOW: u32 = 65_535;
/// First payload bytes kept for sniffing.
const HEAD: usize = 8;
/// The largest segment (TCP header and payload) whose checksum is summed:
/// qmwatch's capture thread sums those up to this size, and its flow
/// table sums larger ones unless they lie wholly in a message body that
/// its parser skips unread. A floor cannot know the bodies, so it leaves
/// every larger one unsummed: on traffic of large messages it does less
/// than qmwatch, as a floor must.
const SUM_MAX: usize = 512;

/// A TCP segment as decoded for the checks.
#[derive(Clone, Copy)]
pub(super) struct Segment {
    key: Key,
    hash: u64,
    ts: u64,
    seq: u32,
    ack: u32,
    /// The timestamp option's value, where `has_ts`.
    tsval: u32,
    /// Payload bytes.
    len: u16,
    flags: u8,
    ttl: u8,
    has_ts: bool,
    checksum_ok: bool,
    /// Sent by the key's higher endpoint.
    from_hi: bool,
    head: [u8; HEAD],
}

impl Segment {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The segment's side of the flow: 0 from the lower endpoint.
    fn side(&self) -> usize {
        usize::from(self.from_hi)
    }
}

/// Where a flow stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Verdict {
    /// A free slot.
    #[default]
    Free,
    /// No payload seen yet.
    Open,
    /// Its first payload bytes could be QMTP/QMQP.
    Candidate,
    /// Its first payload bytes were something else.
    SetAside,
}

/// A flow, in two cache lines: the first is what every packet reads, the
/// second the checks' references.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Flow {
    lo: u128,
    hi: u128,
    ports: u32,
    verdict: Verdict,
    /// FIN seen from side 0 (bit 0) and side 1 (bit 1).
    fins: u8,
    /// Bit d: side d's SYN was seen (`syn_next` holds).
    syn_seen: u8,
    /// Bit d: side d's latest timestamp is known (`ts_recent` holds).
    ts_known: u8,
    last_ns: u64,
    /// Reference TTL of each side: its SYN's, else its first packet's.
    ttl_ref: [u8; 2],
    /// Of a flow set aside: how many of `sample`'s bytes hold, from which
    /// side and at which sequence number they came.
    sample_len: u8,
    sample_side: u8,
    sample_seq: u32,
    syn_next: [u32; 2],
    ts_recent: [u32; 2],
    /// The next byte expected from each side, where `seq_known` has it.
    next_seq: [u32; 2],
    /// The highest acknowledgement each side sent, where `ack_known` has it.
    high_ack: [u32; 2],
    seq_known: u8,
    ack_known: u8,
    sample: [u8; HEAD],
}

const _: () = assert!(std::mem::size_of::<Flow>() == 128);

impl FlatSlot for Flow {
    fn key(&self) -> Key {
        Key {
            lo: self.lo,
            hi: self.hi,
            ports: self.ports,
        }
    }

    fn used(&self) -> bool {
        self.verdict != Verdict::Free
    }

    fn free(&mut self) {
        self.verdict = Verdict::Free;
    }

    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// What a run counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    tcp: u64,
    flows: u64,
    peak: usize,
    over_cap: u64,
    /// Segments without a flow that could not start one (no SYN nor
    /// payload, or a RST).
    without_flow: u64,
    bad_checksum: u64,
    /// A second SYN from a side, with another sequence number.
    other_syn: u64,
    ttl_off: u64,
    /// A timestamp older than its side's latest.
    old_timestamp: u64,
    rst_off: u64,
    candidates: u64,
    set_aside: u64,
    /// A second copy of the bytes that set a flow aside, with other content.
    other_copy: u64,
    /// Bytes the capture skipped, and bytes acknowledged.
    gap_bytes: u64,
    acked_bytes: u64,
    candidate_bytes: u64,
}

/// The checked floor's flow table.
pub(super) type Table = FlowTable<Flow, Counts>;

// Inlined by hand, as the floor's (see its `impl Rules for Table`).
impl Rules for Table {
    type Segment = Segment;

    fn small() -> Self {
        Self::with_bits(1)
    }

    #[inline(always)]
    fn decode(ts: u64, link: u32, frame: &[u8]) -> Option<Segment> {
        ip_of(link, frame).and_then(|ip| decode(ts, ip))
    }

    #[inline(always)]
    fn prefetch(&self, s: &Segment) {
        self.flat.prefetch_home(s.hash);
    }

    #[inline(always)]
    fn one(&mut self, s: &Segment) {
        self.segment(s);
    }

    fn report(&self, packets: u64) -> String {
        format!(
            "flow_floor --checked: packets {packets}, {:?}, open at the end {}",
            self.counts, self.flat.len
        )
    }
}

impl Table {
    /// One segment through the checks; the flow goes when both sides'
    /// FINs or a RST have been taken.
    #[inline(always)]
    fn segment(&mut self, s: &Segment) {
        self.counts.tcp += 1;
        let (i, found) = self.flat.find(&s.key, s.hash);
        let at = if found { Some(i) } else { self.start(i, s) };
        if let Some(i) = at {
            let c = &mut self.counts;
            let ends = self.flat.slots.get_mut(i).is_some_and(|f| {
                f.last_ns = f.last_ns.max(s.ts);
                if f.verdict == Verdict::SetAside {
                    set_aside_segment(f, s, c)
                } else {
                    open_segment(f, s, c)
                }
            });
            if ends {
                self.flat.remove_at(i);
            }
        }
        if self.clock.due(s.ts, self.counts.tcp) {
            self.flat.drop_idle(s.ts);
        }
    }

    /// A flow for `s`, in empty slot `i`, if `s` may start one: a SYN or a
    /// segment with payload (a flow picked up midstream), not a RST.
    fn start(&mut self, i: usize, s: &Segment) -> Option<usize> {
        if (!s.has(TCP_SYN) && s.len == 0) || s.has(TCP_RST) {
            self.counts.without_flow += 1;
            return None;
        }
        if self.flat.len >= MAX_FLOWS {
            self.counts.over_cap += 1;
            return None;
        }
        let flow = Flow {
            lo: s.key.lo,
            hi: s.key.hi,
            ports: s.key.ports,
            verdict: Verdict::Open,
            last_ns: s.ts,
            ..Flow::default()
        };
        let i = self.flat.insert_at(i, flow, s.hash);
        self.counts.flows += 1;
        self.counts.peak = self.counts.peak.max(self.flat.len);
        Some(i)
    }
}

/// `s` on flow `f`, not set aside; true if the flow ends with it.
fn open_segment(f: &mut Flow, s: &Segment, c: &mut Counts) -> bool {
    if !s.checksum_ok {
        c.bad_checksum += 1;
        return false;
    }
    if !references_accept(f, s, c) {
        return false;
    }
    keep_books(f, s, c);
    if s.len > 0 {
        sniff(f, s, c);
    }
    ends(f, s)
}

/// Whether `s` agrees with its side's SYN, TTL and timestamp, and a RST
/// with the next byte expected; takes its references where it sets them.
fn references_accept(f: &mut Flow, s: &Segment, c: &mut Counts) -> bool {
    let d = s.side();
    let bit = 1u8 << d;
    let (Some(syn_next), Some(ttl_ref)) = (f.syn_next.get_mut(d), f.ttl_ref.get_mut(d)) else {
        return false;
    };
    if s.has(TCP_SYN) {
        if f.syn_seen & bit != 0 && *syn_next != s.seq.wrapping_add(1) {
            c.other_syn += 1;
            return false;
        }
        *syn_next = s.seq.wrapping_add(1);
        f.syn_seen |= bit;
        *ttl_ref = s.ttl;
    } else if *ttl_ref == 0 {
        *ttl_ref = s.ttl;
    } else if ttl_ref.abs_diff(s.ttl) > TTL_SLACK {
        c.ttl_off += 1;
        return false;
    }
    if s.has_ts {
        let Some(recent) = f.ts_recent.get_mut(d) else {
            return false;
        };
        if f.ts_known & bit != 0 && before(s.tsval, *recent) && !s.has(TCP_SYN) {
            c.old_timestamp += 1;
            return false;
        }
        *recent = s.tsval;
        f.ts_known |= bit;
    }
    let next = f.next_seq.get(d).copied().unwrap_or(0);
    let off = s.seq.wrapping_sub(next).wrapping_add(RST_WINDOW) > 2 * RST_WINDOW;
    if s.has(TCP_RST) && f.seq_known & bit != 0 && off {
        c.rst_off += 1;
        return false;
    }
    true
}

/// `s` on flow `f`, set aside by its first payload bytes: a second copy of
/// those bytes, a new SYN, the loss books and the end.
fn set_aside_segment(f: &mut Flow, s: &Segment, c: &mut Counts) -> bool {
    let d = s.side();
    if s.len > 0
        && f.sample_len > 0
        && usize::from(f.sample_side) == d
        && s.seq.wrapping_sub(f.sample_seq) < u32::from(f.sample_len)
        && s.head != f.sample
    {
        c.other_copy += 1;
    }
    let syn_next = f.syn_next.get(d).copied().unwrap_or(0);
    if s.has(TCP_SYN) && f.syn_seen & (1 << d) != 0 && syn_next != s.seq.wrapping_add(1) {
        c.other_syn += 1;
        return false;
    }
    keep_books(f, s, c);
    ends(f, s)
}

/// The capture-loss books: bytes skipped before `s` (a gap the capture
/// lost), and bytes newly acknowledged.
fn keep_books(f: &mut Flow, s: &Segment, c: &mut Counts) {
    let d = s.side();
    let bit = 1u8 << d;
    let len = u32::from(s.len) + u32::from(s.has(TCP_SYN)) + u32::from(s.has(TCP_FIN));
    let end = s.seq.wrapping_add(len);
    if let Some(next) = f.next_seq.get_mut(d) {
        if f.seq_known & bit == 0 {
            *next = end;
            f.seq_known |= bit;
        } else {
            if before(*next, s.seq) && s.seq.wrapping_sub(*next) < 1 << 30 {
                c.gap_bytes += u64::from(s.seq.wrapping_sub(*next));
            }
            if before(*next, end) {
                *next = end;
            }
        }
    }
    if let Some(high) = f.high_ack.get_mut(d).filter(|_| s.has(TCP_ACK)) {
        if f.ack_known & bit == 0 {
            *high = s.ack;
            f.ack_known |= bit;
        } else if before(*high, s.ack) {
            c.acked_bytes += u64::from(s.ack.wrapping_sub(*high));
            *high = s.ack;
        }
    }
}

/// A flow's first payload bytes: digits up to a colon can open a netstring
/// (a candidate); anything else sets the flow aside, its bytes kept.
fn sniff(f: &mut Flow, s: &Segment, c: &mut Counts) {
    if f.verdict == Verdict::Open {
        let n = usize::from(s.len).min(HEAD);
        let head = s.head.get(..n).unwrap_or_default();
        let digits = head.iter().take_while(|b| b.is_ascii_digit()).count();
        let netstring = digits > 0 && head.get(digits).is_none_or(|&b| b == b':');
        if netstring {
            f.verdict = Verdict::Candidate;
            c.candidates += 1;
        } else {
            f.verdict = Verdict::SetAside;
            f.sample = s.head;
            f.sample_len = n as u8;
            f.sample_side = s.side() as u8;
            f.sample_seq = s.seq;
            c.set_aside += 1;
        }
    }
    if f.verdict == Verdict::Candidate {
        c.candidate_bytes += u64::from(s.len);
    }
}

/// Whether the flow ends with `s`: a RST, or both sides' FINs.
fn ends(f: &mut Flow, s: &Segment) -> bool {
    if s.has(TCP_FIN) {
        f.fins |= 1 << s.side();
    }
    s.has(TCP_RST) || f.fins == 3
}

/// Whether sequence number `a` comes before `b` (modulo 2^32).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The TCP segment in IP packet `ip` (IPv4 not fragmented, IPv6 without
/// extension headers, nothing cut by the snap length), decoded for the
/// checks, its checksum summed where it can matter.
fn decode(ts: u64, ip: &[u8]) -> Option<Segment> {
    let (src, dst, ttl, tcp, pseudo) = match ip.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            if h[9] != 6 || ihl < 20 || fragment {
                return None;
            }
            let tcp = ip.get(ihl..total)?;
            let addr = |a: &[u8]| {
                let w: [u8; 4] = a.try_into().unwrap_or_default();
                u128::from(u32::from_be_bytes(w)) | 0xffff_0000_0000
            };
            let pseudo = ones_sum(&h[12..20]) + be_word(6) + be_word(tcp.len());
            (addr(&h[12..16]), addr(&h[16..20]), h[8], tcp, pseudo)
        }
        6 => {
            let h: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
            if h[6] != 6 {
                return None;
            }
            let tcp = ip.get(40..40 + usize::from(u16::from_be_bytes([h[4], h[5]])))?;
            let addr = |a: &[u8]| u128::from_be_bytes(a.try_into().unwrap_or_default());
            let pseudo = ones_sum(&h[8..40]) + be_word(6) + be_word(tcp.len());
            (addr(&h[8..24]), addr(&h[24..40]), h[7], tcp, pseudo)
        }
        _ => return None,
    };
    let t: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let hdr = usize::from(t[12] >> 4) * 4;
    if hdr < 20 {
        return None;
    }
    let payload = tcp.get(hdr..)?;
    // Summed where it can matter, as qmwatch sums it (a segment that
    // carries bytes, opens a side or resets the flow), up to `SUM_MAX`.
    let summed = (!payload.is_empty() || t[13] & (TCP_SYN | TCP_RST) != 0) && tcp.len() <= SUM_MAX;
    let tsval = tcp.get(20..hdr).and_then(timestamp_option);
    let mut head = [0u8; HEAD];
    let n = payload.len().min(HEAD);
    if let (Some(to), Some(from)) = (head.get_mut(..n), payload.get(..n)) {
        to.copy_from_slice(from);
    }
    let sport = u16::from_be_bytes([t[0], t[1]]);
    let dport = u16::from_be_bytes([t[2], t[3]]);
    let from_hi = (src, sport) > (dst, dport);
    let key = if from_hi {
        Key {
            lo: dst,
            hi: src,
            ports: u32::from(dport) << 16 | u32::from(sport),
        }
    } else {
        Key {
            lo: src,
            hi: dst,
            ports: u32::from(sport) << 16 | u32::from(dport),
        }
    };
    Some(Segment {
        hash: hash_of(&key),
        key,
        ts,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        tsval: tsval.unwrap_or(0),
        len: u16::try_from(payload.len()).unwrap_or(u16::MAX),
        flags: t[13],
        ttl,
        has_ts: tsval.is_some(),
        checksum_ok: !summed || checksum_accepts(tcp, pseudo),
        from_hi,
        head,
    })
}

/// Whether the checksum of `tcp` (header and payload) is right, given its
/// pseudo header's sum, or holds what a sender that leaves the sum to its
/// network card writes there (the pseudo header's sum, or its complement):
/// a segment captured on its way out, as qmwatch takes it.
fn checksum_accepts(tcp: &[u8], pseudo: u64) -> bool {
    if fold(ones_sum(tcp) + pseudo) == 0xffff {
        return true;
    }
    let p = fold(pseudo);
    let field = tcp
        .get(16..18)
        .and_then(|f| f.try_into().ok())
        .map_or(0, u16::from_ne_bytes);
    field == p || field == !p
}

/// The timestamp option's value in TCP options `o`: where a sender puts
/// it (after two NOPs) at one look, else by walking the options.
fn timestamp_option(o: &[u8]) -> Option<u32> {
    if let Some(&[1, 1, 8, 10, a, b, c, d]) = o.first_chunk::<8>() {
        return Some(u32::from_be_bytes([a, b, c, d]));
    }
    let mut o = o;
    while let Some(&kind) = o.first() {
        match kind {
            0 => return None,
            1 => o = o.get(1..)?,
            8 => return o.get(2..6)?.try_into().ok().map(u32::from_be_bytes),
            _ => o = o.get(usize::from(*o.get(1)?).max(2)..)?,
        }
    }
    None
}

/// A big-endian 16-bit word of the pseudo header, as [`ones_sum`] adds
/// words (in the machine's order).
fn be_word(v: usize) -> u64 {
    u64::from(u16::from_ne_bytes((v as u16).to_be_bytes()))
}

/// The one's-complement sum of `b` as 16-bit words in the machine's order
/// (the last padded with zero), not folded: eight bytes a turn with the
/// carries counted apart (2^16, 2^32 and 2^64 are all 1 modulo 0xffff).
fn ones_sum(b: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut carries = 0u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let (s, o) = acc.overflowing_add(u64::from_ne_bytes(w.try_into().unwrap_or_default()));
        acc = s;
        carries += u64::from(o);
    }
    let mut sum = (acc & 0xffff_ffff) + (acc >> 32) + carries;
    let mut rest = words.remainder();
    while let [a, b, more @ ..] = rest {
        sum += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = more;
    }
    if let [a] = rest {
        sum += u64::from(u16::from_ne_bytes([*a, 0]));
    }
    sum
}

/// A one's-complement sum folded to 16 bits.
fn fold(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::super::{replay, replay_split, Format, Record, Tracker, LINKTYPE_ETHERNET};
    use super::*;
    use qmwatch_wire::decode::{Decoded, Decoder};

    /// Every frame of a capture file: time, link type, bytes.
    fn frames(file: &[u8]) -> Vec<(u64, u32, Vec<u8>)> {
        let mut format = Format::detect(file).expect("a capture file");
        let mut pos = format.header_len();
        let mut out = Vec::new();
        loop {
            match format.record(&file[pos..]).expect("a record") {
                Record::Frame {
                    len,
                    ts,
                    link,
                    frame,
                } => {
                    out.push((ts, link, frame.to_vec()));
                    pos += len;
                }
                Record::Other { len } => pos += len,
                Record::Partial { .. } => return out,
            }
        }
    }

    fn generated(profile: &str, size: &str) -> Vec<u8> {
        let cfg = qmwatch_synth::Config {
            profile: profile.parse().expect("a profile"),
            seed: 7,
            target: qmwatch_synth::Target::Bytes(qmwatch_synth::parse_size(size).expect("a size")),
        };
        let mut file = Vec::new();
        qmwatch_synth::generate(&cfg, &mut file).expect("generated");
        file
    }

    /// The fixtures and two generated captures, as (name, bytes).
    fn captures() -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir("fixtures")
            .expect("fixtures/")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read(&p).expect("readable"),
                )
            })
            .collect();
        for profile in ["small-flows", "mixed"] {
            out.push((profile.to_string(), generated(profile, "1M")));
        }
        out
    }

    /// The segment as qmwatch's decoder reads `frame`, and its TCP bytes,
    /// where it reads one whole.
    fn sensors(ts: u64, link: u32, frame: &[u8]) -> Option<(qmwatch_wire::decode::Segment, &[u8])> {
        match Decoder::default().decode(ts, link, frame, 0, frame.len() as u32) {
            Decoded::Segment(seg) if seg.missing == 0 => {
                let start = seg.payload_start as usize - usize::from(seg.tcp_header_len);
                let end = (seg.payload_start + seg.payload_len) as usize;
                Some((seg, &frame[start..end]))
            }
            _ => None,
        }
    }

    /// What this decoder reads of every frame agrees with qmwatch's decoder
    /// (the flow floor's link types: Ethernet and raw IP), the checksum's
    /// verdict too, on every fixture and on generated traffic, and again
    /// with the checksum field or a payload byte changed.
    #[test]
    fn decodes_as_the_sensor_decodes() {
        let mut compared = 0;
        let mut bad = 0;
        for (name, file) in captures() {
            for (n, (ts, link, frame)) in frames(&file).into_iter().enumerate() {
                let Some(ip) = ip_of(link, &frame) else {
                    continue;
                };
                let Some((seg, tcp)) = sensors(ts, link, &frame) else {
                    assert!(
                        decode(ts, ip).is_none(),
                        "{name} frame {n}: not a whole segment"
                    );
                    continue;
                };
                let s = decode(ts, ip).unwrap_or_else(|| panic!("{name} frame {n}: not decoded"));
                let at = format!("{name} frame {n}");
                assert_eq!((s.seq, s.ack, s.ttl), (seg.seq, seg.ack, seg.ttl), "{at}");
                assert_eq!(s.flags & 0x17, seg.flags & 0x17, "{at}");
                assert_eq!(u32::from(s.len), seg.payload_len, "{at}");
                let (src, dst) = if s.from_hi {
                    (s.key.hi, s.key.lo)
                } else {
                    (s.key.lo, s.key.hi)
                };
                assert_eq!((src, dst), (seg.src, seg.dst), "{at}");
                let ports = (seg.sport, seg.dport);
                let ours = ((s.key.ports >> 16) as u16, s.key.ports as u16);
                assert_eq!(
                    if s.from_hi { (ours.1, ours.0) } else { ours },
                    ports,
                    "{at}"
                );
                if seg.payload_len > 0 || seg.flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
                    assert_eq!(s.has_ts.then_some(s.tsval), seg.tsval_in(Some(tcp)), "{at}");
                }
                let payload = &frame[seg.payload_start as usize..][..seg.payload_len as usize];
                assert_eq!(
                    &s.head[..payload.len().min(HEAD)],
                    &payload[..payload.len().min(HEAD)]
                );
                // The verdict, as the frame came and with its checksum field
                // or its last payload byte changed.
                let checksum_at = seg.payload_start as usize - usize::from(seg.tcp_header_len) + 17;
                for change in [None, Some(checksum_at), Some(frame.len() - 1)] {
                    let mut f = frame.clone();
                    if let Some(at) = change {
                        f[at] ^= 0x5a;
                    }
                    let Some((seg, tcp)) = sensors(ts, link, &f) else {
                        continue;
                    };
                    let theirs = !seg.checksum_matters()
                        || tcp.len() > SUM_MAX
                        || seg.checksum_ok(tcp)
                        || seg.checksum_offloaded(tcp);
                    let ours = ip_of(link, &f)
                        .and_then(|ip| decode(ts, ip))
                        .expect("decoded");
                    assert_eq!(ours.checksum_ok, theirs, "{at}, changed at {change:?}");
                    bad += usize::from(!theirs);
                }
                compared += 1;
            }
        }
        assert!(compared > 10_000, "{compared} segments compared");
        assert!(bad > 10_000, "{bad} bad checksums compared");
    }

    /// What a test frame's checksum field holds.
    #[derive(Clone, Copy, PartialEq)]
    enum Field {
        Right,
        Wrong,
        /// What a sender that leaves the sum to its card writes: the
        /// pseudo header's sum, or its complement.
        Pseudo,
        PseudoComplement,
    }

    /// A frame from 192.0.2.1:`sport` to 192.0.2.2:628 (`back`: the other
    /// way).
    struct Seg<'a> {
        back: bool,
        flags: u8,
        seq: u32,
        ack: u32,
        ttl: u8,
        tsval: Option<u32>,
        payload: &'a [u8],
        field: Field,
        sport: u16,
    }

    impl Default for Seg<'_> {
        fn default() -> Self {
            Seg {
                back: false,
                flags: TCP_ACK,
                seq: 1000,
                ack: 5000,
                ttl: 64,
                tsval: None,
                payload: b"",
                field: Field::Right,
                sport: 40000,
            }
        }
    }

    impl Seg<'_> {
        fn frame(&self) -> Vec<u8> {
            let (mut a, mut b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
            let (mut pa, mut pb) = (self.sport, 628u16);
            if self.back {
                (a, b, pa, pb) = (b, a, pb, pa);
            }
            let mut tcp = Vec::new();
            tcp.extend_from_slice(&pa.to_be_bytes());
            tcp.extend_from_slice(&pb.to_be_bytes());
            tcp.extend_from_slice(&self.seq.to_be_bytes());
            tcp.extend_from_slice(&self.ack.to_be_bytes());
            let opts = if self.tsval.is_some() { 12 } else { 0 };
            tcp.extend_from_slice(&[(((20 + opts) / 4) << 4) as u8, self.flags, 0xff, 0xff]);
            tcp.extend_from_slice(&[0, 0, 0, 0]);
            if let Some(v) = self.tsval {
                tcp.extend_from_slice(&[1, 1, 8, 10]);
                tcp.extend_from_slice(&v.to_be_bytes());
                tcp.extend_from_slice(&[0, 0, 0, 0]);
            }
            tcp.extend_from_slice(self.payload);
            // RFC 1071, a big-endian word at a time.
            let sum = |bytes: &[u8]| {
                let mut sum: u32 = bytes
                    .chunks(2)
                    .map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0)))
                    .sum();
                while sum > 0xffff {
                    sum = (sum & 0xffff) + (sum >> 16);
                }
                sum as u16
            };
            let mut pseudo = vec![a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], 0, 6];
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            let mut whole = pseudo.clone();
            whole.extend_from_slice(&tcp);
            let check = match self.field {
                Field::Right => !sum(&whole),
                Field::Wrong => !sum(&whole) ^ 1,
                Field::Pseudo => sum(&pseudo),
                Field::PseudoComplement => !sum(&pseudo),
            };
            tcp[16..18].copy_from_slice(&check.to_be_bytes());
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&(20 + tcp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, self.ttl, 6, 0, 0]);
            f.extend_from_slice(&a);
            f.extend_from_slice(&b);
            f.extend_from_slice(&tcp);
            f
        }
    }

    fn run(segs: &[Seg<'_>]) -> Tracker<Table> {
        let mut t = Tracker::new(Table::default());
        for (i, s) in segs.iter().enumerate() {
            t.frame(i as u64 * 1000, LINKTYPE_ETHERNET, &s.frame());
        }
        t.flush();
        t
    }

    /// Each check drops what an endpoint would drop, and counts it; the
    /// loss books count a gap and what was acknowledged; first bytes that
    /// can open a netstring make a candidate, others set the flow aside;
    /// two FINs end the flow.
    #[test]
    fn the_checks_drop_what_an_endpoint_drops() {
        const SYN: u8 = TCP_SYN;
        const ACK: u8 = TCP_ACK;
        let ts = Some(100);
        let t = run(&[
            Seg {
                flags: SYN,
                seq: 999,
                ack: 0,
                tsval: ts,
                ..Seg::default()
            },
            Seg {
                back: true,
                flags: SYN | ACK,
                seq: 4999,
                ack: 1000,
                tsval: ts,
                ..Seg::default()
            },
            Seg {
                tsval: ts,
                ..Seg::default()
            },
            Seg {
                payload: b"12:abc",
                field: Field::Wrong,
                ..Seg::default()
            },
            Seg {
                payload: b"12:abc",
                ttl: 50,
                ..Seg::default()
            },
            Seg {
                payload: b"12:abc",
                tsval: Some(99),
                ..Seg::default()
            },
            Seg {
                flags: SYN,
                seq: 7,
                ack: 0,
                ..Seg::default()
            },
            Seg {
                flags: TCP_RST,
                seq: 900_000,
                ..Seg::default()
            },
            Seg {
                payload: b"12:abc",
                tsval: Some(101),
                field: Field::Pseudo,
                ..Seg::default()
            },
            // 100 bytes the capture lost, then the server acknowledges all.
            Seg {
                payload: b"x",
                seq: 1106,
                field: Field::PseudoComplement,
                ..Seg::default()
            },
            Seg {
                back: true,
                seq: 5000,
                ack: 1107,
                ..Seg::default()
            },
            Seg {
                flags: TCP_FIN | ACK,
                seq: 1107,
                ..Seg::default()
            },
            Seg {
                back: true,
                flags: TCP_FIN | ACK,
                seq: 5000,
                ack: 1108,
                ..Seg::default()
            },
            // Another connection set aside by its first bytes, then a copy
            // of them with other content.
            Seg {
                sport: 40001,
                payload: b"EHLO a",
                ..Seg::default()
            },
            Seg {
                sport: 40001,
                payload: b"12:abc",
                ..Seg::default()
            },
            Seg {
                sport: 40001,
                payload: b"EHLO b",
                seq: 1006,
                ..Seg::default()
            },
        ]);
        assert_eq!(t.packets, 16);
        let want = Counts {
            tcp: 16,
            flows: 2,
            peak: 1,
            bad_checksum: 1,
            other_syn: 1,
            ttl_off: 1,
            old_timestamp: 1,
            rst_off: 1,
            candidates: 1,
            set_aside: 1,
            other_copy: 1,
            gap_bytes: 100,
            // 107 up to the client's FIN, and the FIN.
            acked_bytes: 108,
            candidate_bytes: 7,
            ..Counts::default()
        };
        assert_eq!(t.table.counts, want);
        // The first connection ended with its FINs before the second
        // began; the second is open.
        assert_eq!(t.table.flat.len, 1);
    }

    /// Sharing nothing, the two halves together count what one thread
    /// counts (each connection's segments all in one half), on a capture
    /// of the small-flows profile and on one cut short.
    #[test]
    fn halves_count_what_one_thread_counts() {
        let file = generated("small-flows", "3M");
        for bytes in [&file[..], &file[..file.len() - 5]] {
            let mut one = Tracker::new(Table::default());
            let one_r = replay(bytes, &mut one);
            let (r, (a, b)) = super::super::replay_halves::<Table, _>([bytes, bytes]);
            assert_eq!(r, one_r);
            assert_eq!((a.packets, b.packets), (one.packets, one.packets));
            let (a, b) = (a.table.0, b.table.0);
            let (x, y) = (a.counts, b.counts);
            assert!(x.tcp > 0 && y.tcp > 0);
            let mut sum = Counts {
                peak: one.table.counts.peak,
                ..Counts::default()
            };
            let pairs = [
                (&mut sum.tcp, x.tcp, y.tcp),
                (&mut sum.flows, x.flows, y.flows),
                (&mut sum.over_cap, x.over_cap, y.over_cap),
                (&mut sum.without_flow, x.without_flow, y.without_flow),
                (&mut sum.bad_checksum, x.bad_checksum, y.bad_checksum),
                (&mut sum.other_syn, x.other_syn, y.other_syn),
                (&mut sum.ttl_off, x.ttl_off, y.ttl_off),
                (&mut sum.old_timestamp, x.old_timestamp, y.old_timestamp),
                (&mut sum.rst_off, x.rst_off, y.rst_off),
                (&mut sum.candidates, x.candidates, y.candidates),
                (&mut sum.set_aside, x.set_aside, y.set_aside),
                (&mut sum.other_copy, x.other_copy, y.other_copy),
                (&mut sum.gap_bytes, x.gap_bytes, y.gap_bytes),
                (&mut sum.acked_bytes, x.acked_bytes, y.acked_bytes),
                (
                    &mut sum.candidate_bytes,
                    x.candidate_bytes,
                    y.candidate_bytes,
                ),
            ];
            for (to, x, y) in pairs {
                *to = x + y;
            }
            assert_eq!(sum, one.table.counts);
            assert_eq!(a.flat.len + b.flat.len, one.table.flat.len);
        }
    }

    /// On two threads, the same counts as on one: a generated capture of
    /// several blocks, whole and cut short.
    #[test]
    fn split_counts_what_one_thread_counts() {
        let file = generated("small-flows", "3M");
        assert!(file.len() > 2 * super::super::BLOCK);
        for bytes in [&file[..], &file[..file.len() - 5]] {
            let mut one = Tracker::new(Table::default());
            let one_r = replay(bytes, &mut one);
            let mut two = Tracker::new(Table::default());
            let two_r = replay_split(bytes, &mut two);
            assert_eq!(two_r, one_r);
            assert_eq!(two.packets, one.packets);
            let (one, two) = (one.table, two.table);
            assert_eq!(two.counts, one.counts);
            assert_eq!(two.flat.len, one.flat.len);
            assert!(one.counts.candidates > 0 && one.counts.set_aside > 0);
            assert_eq!(one.counts.bad_checksum, 0);
        }
    }

    /// Cut and corrupted captures: errors or counts, never a panic.
    #[test]
    fn no_input_makes_it_panic() {
        let file = std::fs::read("fixtures/qmtp-open-relay-2209.pcap").expect("fixture");
        let mut x = 0x9e37_79b9_u32;
        for round in 0..2_000 {
            let mut bad = file.clone();
            for _ in 0..1 + round % 8 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = x as usize % bad.len();
                bad[at] = (x >> 8) as u8;
            }
            let cut = if round % 3 == 0 {
                x as usize % bad.len()
            } else {
                bad.len()
            };
            let _ = replay(&bad[..cut], &mut Tracker::new(Table::default()));
        }
    }
}
