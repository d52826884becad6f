//! Flow table and TCP reassembly.
//!
//! Owns: the bidirectional flows of one worker (keyed by the 5-tuple, both
//! directions in one entry), who is client and server (from the SYN), idle
//! timeouts on packet time, the cap on tracked flows (closed flows evicted
//! first, then about the least recently active), and feeding each
//! direction's [`reassembly::Stream`] into the flow's protocol [`Session`].
//!
//! A flow costs its table entry (well under 256 bytes) until its first
//! payload; if those bytes are not QMTP/QMQP-like the flow is *rejected* and
//! stays that cheap, never buffered or parsed again. Only candidate flows get
//! the boxed reassembly and session state.
//!
//! A flow that ends (both FINs, or an RST) gives its entry back at once and
//! lingers for a second as a [`Lingering`] record (key, last packet time,
//! SYN numbers, loss bookkeeping) that absorbs stray packets; a new SYN on
//! its four-tuple opens a new flow instead.
//!
//! A flow whose end the capture lost does not end when a new connection
//! takes its four-tuple: when the server answers the new SYN, a rejected
//! flow is closed, and an open one gets a *twin* (the new connection's
//! flow, outside the index) that each later packet is routed to or not by
//! its sequence number.
//!
//! Every flow, rejected ones included, also feeds the capture-loss estimate
//! ([`LossTrack`]: a few sequence numbers per direction in the entry, no
//! payload work), which counts acknowledged bytes the capture never saw.
//!
//! Must not: decode headers (it takes [`Segment`]s), apply site policy, or
//! block: everything it reports goes into the caller's `Vec<Record>`.

mod index;
pub mod loss;
pub(crate) mod prefetch;
pub mod reassembly;
mod urgent;

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use index::FlowIndex;
use loss::LossTrack;
use qmwatch_proto::admission::{self, Admission, FirstPayload};
use qmwatch_proto::session::{Session, Status};
use qmwatch_proto::{Anomaly, AnomalyKind, Endpoints, Protocol, Record};
use qmwatch_wire::capture::Block;
use qmwatch_wire::decode::{Addr, Segment, TCP_SYN, TCP_URG};
use reassembly::{Budget, Delivery, ReassemblyConfig, Stream, StreamEvents, StreamSegment};
use urgent::Urgent;

/// Whether TCP checksums are verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Per direction: verified if its first checksummed packet is valid,
    /// ignored if it is not (offloaded checksums in captures taken on a
    /// sending host or on loopback).
    #[default]
    Auto,
    /// Always verified: bad segments are dropped.
    Verify,
    /// Never verified.
    Ignore,
}

const CSUM_UNKNOWN: u8 = 0;
const CSUM_VALID: u8 = 1;
/// Offloaded, the field holding the pseudo-header sum: any other wrong
/// value is a corrupted segment.
const CSUM_OFFLOADED: u8 = 2;
/// Offloaded in some other form (the field left zero or stale): nothing to
/// tell a corrupted segment by, so none is checked.
const CSUM_OFFLOADED_OTHER: u8 = 3;
const BAD_CSUM: AnomalyKind = AnomalyKind::TcpBadChecksum;
const FRAG_CONFLICT: AnomalyKind = AnomalyKind::IpFragmentOverlapConflict;
const FRAG_CONFLICT_DETAIL: &str =
    "IP fragments overlapped with different bytes; the first were kept";
const BAD_CSUM_DETAIL: &str =
    "a segment with a bad TCP checksum (which the endpoint drops) was ignored";

// Anomalies raised at most once per flow (bits of `Flow::early` and
// `Candidate::reported`); the fragment bits are `Segment::frag_notes`'.
const NOTE_FRAG_CONFLICT: u8 = qmwatch_wire::decode::FRAG_NOTE_CONFLICT;
const NOTE_FRAG_DROPPED: u8 = qmwatch_wire::decode::FRAG_NOTE_DROPPED;
const NOTE_FRAG_TINY: u8 = qmwatch_wire::decode::FRAG_NOTE_TINY;
const NOTE_TTL: u8 = 8;
const NOTE_FLAGS: u8 = 16;
const NOTE_PAWS: u8 = 32;
const NOTE_RST_WINDOW: u8 = 64;
const NOTE_URGENT: u8 = 128;
const RST_WINDOW_DETAIL: &str = "a RST whose sequence number is outside the stream was ignored";
/// (bit, kind, detail) of the anomalies raised once per flow: the wire
/// crate's fragment notes and the flow table's own, mapped to their kinds.
const NOTES: [(u8, AnomalyKind, &str); 7] = [
    (
        NOTE_FRAG_DROPPED,
        AnomalyKind::IpFragmentsDropped,
        "IP fragments of this flow were dropped (defragmentation cap, eviction or timeout): its bytes were not seen",
    ),
    (
        NOTE_FRAG_TINY,
        AnomalyKind::IpTinyFragments,
        "a segment was reassembled from IP fragments shorter than any real link needs (an evasion signature); its bytes were used",
    ),
    (
        NOTE_TTL,
        AnomalyKind::TcpTtlInsertion,
        "a segment with a lower TTL/hop limit than its direction's (which may expire before the receiver) was ignored",
    ),
    (
        NOTE_FLAGS,
        AnomalyKind::TcpChaffFlags,
        "a segment the endpoint drops (data without ACK, or a SYN inside an established flow) was ignored",
    ),
    (
        NOTE_PAWS,
        AnomalyKind::TcpPawsFailed,
        "a segment whose TCP timestamp is older than its direction's (PAWS, RFC 7323), which the endpoint drops, was ignored",
    ),
    (
        NOTE_RST_WINDOW,
        AnomalyKind::TcpRstOutOfWindow,
        RST_WINDOW_DETAIL,
    ),
    (
        NOTE_URGENT,
        AnomalyKind::TcpUrgentData,
        "a segment carried TCP urgent data, which QMTP/QMQP never send; its urgent byte was taken out of the stream, as the server reads it, where the sensor could",
    ),
];

/// Limits and timeouts of one worker's flow table.
#[derive(Clone, Copy, Debug)]
pub struct FlowConfig {
    pub max_flows: usize,
    /// A flow with no packet for this long (packet time) is finished.
    pub idle_timeout_ns: u64,
    /// A closed flow's entry lingers this long to absorb stray packets.
    pub closed_linger_ns: u64,
    pub reassembly: ReassemblyConfig,
    /// Out-of-order bytes held by all flows of the worker.
    pub held_bytes_cap: usize,
    /// Copied protocol state (addresses, reply texts) of all sessions.
    pub session_memory: usize,
    pub checksums: ChecksumMode,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 1_000_000,
            idle_timeout_ns: 600 * 1_000_000_000,
            closed_linger_ns: 1_000_000_000,
            reassembly: ReassemblyConfig::default(),
            held_bytes_cap: 64 * 1024 * 1024,
            session_memory: 256 * 1024 * 1024,
            checksums: ChecksumMode::Auto,
        }
    }
}

/// Counters of the flow stage.
#[derive(Clone, Debug, Default)]
pub struct FlowStats {
    pub flows_created: u64,
    pub flows_rejected: u64,
    pub flows_candidate: u64,
    pub flows_evicted_cap: u64,
    pub flows_timed_out: u64,
    pub flows_closed: u64,
    pub packets_without_flow: u64,
    pub flows_peak: u64,
    pub reassembly: StreamEvents,
    pub held_bytes_peak: u64,
    pub replies_to_unseen_requests: u64,
    pub anomalies_dropped_unconfirmed: u64,
    pub requests_dropped_unconfirmed: u64,
    pub bad_checksum_dropped: u64,
    pub directions_checksum_offloaded: u64,
    /// Segments ignored as insertion chaff: TTL below the direction's,
    /// flags an endpoint drops, TCP timestamp failing PAWS.
    pub ttl_insertion_dropped: u64,
    pub chaff_flags_dropped: u64,
    pub paws_dropped: u64,
    /// RSTs of flows without a session ignored as outside the sender's
    /// stream (an endpoint drops them).
    pub rst_out_of_window_dropped: u64,
    pub sessions_dropped_memcap: u64,
    /// Confirmed servers past [`MAX_KNOWN_SERVERS`], not remembered.
    pub known_servers_not_remembered: u64,
    pub session_bytes_peak: u64,
    /// Capture-loss estimate: bytes acknowledged by a receiver (all TCP
    /// flows with an entry, both directions).
    pub loss_acked_bytes: u64,
    /// Of those, bytes the capture never saw (see [`loss`]).
    pub loss_gap_bytes: u64,
    /// Flows judged by their first bytes that later got another copy of
    /// them, with other content that looks like QMTP/QMQP (reported).
    pub first_bytes_conflicts: u64,
    /// New connections (a SYN with another initial sequence number) on the
    /// four-tuple of a flow that had closed and was lingering: tracked as
    /// new flows, not absorbed by the old entry.
    pub flows_reopened: u64,
}

impl FlowStats {
    /// Adds another worker's statistics. Counts add up exactly; the
    /// `*_peak` fields become the sum of the workers' peaks, which were
    /// taken at different moments: an upper bound of the run's peak, not
    /// the peak itself.
    pub fn merge(&mut self, o: &FlowStats) {
        self.flows_created += o.flows_created;
        self.flows_rejected += o.flows_rejected;
        self.first_bytes_conflicts += o.first_bytes_conflicts;
        self.flows_reopened += o.flows_reopened;
        self.flows_candidate += o.flows_candidate;
        self.flows_evicted_cap += o.flows_evicted_cap;
        self.flows_timed_out += o.flows_timed_out;
        self.flows_closed += o.flows_closed;
        self.packets_without_flow += o.packets_without_flow;
        self.flows_peak += o.flows_peak;
        merge_events(&mut self.reassembly, &o.reassembly);
        self.held_bytes_peak += o.held_bytes_peak;
        self.replies_to_unseen_requests += o.replies_to_unseen_requests;
        self.anomalies_dropped_unconfirmed += o.anomalies_dropped_unconfirmed;
        self.requests_dropped_unconfirmed += o.requests_dropped_unconfirmed;
        self.bad_checksum_dropped += o.bad_checksum_dropped;
        self.directions_checksum_offloaded += o.directions_checksum_offloaded;
        self.ttl_insertion_dropped += o.ttl_insertion_dropped;
        self.chaff_flags_dropped += o.chaff_flags_dropped;
        self.paws_dropped += o.paws_dropped;
        self.rst_out_of_window_dropped += o.rst_out_of_window_dropped;
        self.sessions_dropped_memcap += o.sessions_dropped_memcap;
        self.known_servers_not_remembered += o.known_servers_not_remembered;
        self.session_bytes_peak += o.session_bytes_peak;
        self.loss_acked_bytes += o.loss_acked_bytes;
        self.loss_gap_bytes += o.loss_gap_bytes;
    }

    /// Estimated capture loss in percent (gap bytes over acknowledged
    /// bytes), `None` before anything was acknowledged.
    pub fn capture_loss_percent(&self) -> Option<f64> {
        loss::percent(self.loss_gap_bytes, self.loss_acked_bytes)
    }
}

/// The random seed of every flow tag in this process: tags are not
/// predictable from outside, so nobody can choose addresses that all land
/// in one index bucket.
static TAG_SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x716d_7761_7463_6800u64)
});

/// The tag of `seg`'s flow in the flow tables (the same for both
/// directions). The capture thread computes it once per segment, to pick
/// the worker and to spare the worker the work.
// Always inlined into the capture thread's loop: left to the compiler, the
// choice flipped with unrelated edits (16 instructions a packet).
#[inline(always)]
pub fn flow_tag(seg: &Segment) -> u32 {
    tag_of(seg.src, seg.sport, seg.dst, seg.dport)
}

/// A multiply-fold mix of each endpoint with the process's random seed,
/// the two combined by addition: the same whichever endpoint comes first,
/// so no ordering of the endpoints is needed. The port is mixed in only
/// after the address is (not xor-ed into it), so that structured traffic —
/// addresses and ports counting up together, as in a SYN flood — cannot
/// cancel out into equal tags.
#[inline]
pub(crate) fn tag_of(a: Addr, a_port: u16, b: Addr, b_port: u16) -> u32 {
    let seed = *TAG_SEED;
    let fold = |x: u64, y: u64| {
        let m = u128::from(x).wrapping_mul(u128::from(y));
        (m as u64) ^ ((m >> 64) as u64)
    };
    let endpoint = |addr: Addr, port: u16| {
        let h = fold(
            addr as u64 ^ seed,
            (addr >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15,
        );
        fold(
            h ^ 0x2d35_8dcc_aa6c_78a5,
            u64::from(port) ^ seed.rotate_left(32) ^ 0xa076_1d64_78bd_642f,
        )
    };
    let sum = endpoint(a, a_port).wrapping_add(endpoint(b, b_port));
    let h = fold(sum ^ 0xe703_7ed1_a0b4_28db, seed ^ 0x8ebc_6af0_9c88_c6e3);
    (h >> 32) as u32 ^ h as u32
}

/// The worker (of `workers`) that owns the flow with `tag`: from the tag's
/// high bits, as the index uses its low bits.
pub(crate) fn worker_of(tag: u32, workers: usize) -> usize {
    ((u64::from(tag) * workers as u64) >> 32) as usize
}

/// `seg`'s flow tag: the one the capture thread computed, else from `key`.
fn seg_tag(seg: &Segment, key: &FlowKey) -> u32 {
    if seg.flow_tag != 0 {
        seg.flow_tag
    } else {
        key.tag()
    }
}

/// Both directions of a connection map to the same key. Packed to 36
/// bytes (the addresses' 16-byte alignment would make it 48), so that the
/// entry's first cache line also holds the fields every packet needs.
#[derive(Clone, Copy, Debug, Eq)]
#[repr(C, packed(4))]
struct FlowKey {
    lo: Addr,
    hi: Addr,
    lo_port: u16,
    hi_port: u16,
}

impl PartialEq for FlowKey {
    /// One test over all the parts, without branches: compared part by
    /// part, the look-up of every packet ran short of registers.
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        let ports = |k: &FlowKey| u32::from(k.lo_port) << 16 | u32::from(k.hi_port);
        (self.lo ^ o.lo) | (self.hi ^ o.hi) | u128::from(ports(self) ^ ports(o)) == 0
    }
}

impl FlowKey {
    /// The key's 32-bit tag in the index (see [`tag_of`]).
    fn tag(&self) -> u32 {
        tag_of(self.lo, self.lo_port, self.hi, self.hi_port)
    }

    /// The key, and the segment's direction: 0 from `lo`, 1 from `hi`.
    fn of(s: &Segment) -> (FlowKey, usize) {
        if (s.src, s.sport) <= (s.dst, s.dport) {
            (
                FlowKey {
                    lo: s.src,
                    hi: s.dst,
                    lo_port: s.sport,
                    hi_port: s.dport,
                },
                0,
            )
        } else {
            (
                FlowKey {
                    lo: s.dst,
                    hi: s.src,
                    lo_port: s.dport,
                    hi_port: s.sport,
                },
                1,
            )
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No payload judged yet, or a QMTP/QMQP candidate.
    Open,
    /// Not QMTP/QMQP: only the entry remains until the connection ends.
    Rejected,
    /// Finished: its entry is free (what lingers is a [`Lingering`]).
    Closed,
}

/// Index positions with this bit are [`Lingering`] entries, not the slab's
/// (slab positions stay far below it: a slab of 2^31 entries would take
/// 384 GiB, and `--max-flows` is at most 100 million).
const LINGERING: u32 = 1 << 31;

/// What remains of a closed flow while it lingers to absorb stray packets:
/// its key, its last packet's time, the sequence numbers after its SYNs (a
/// retransmission of the old SYN is a stray, another SYN a new connection)
/// and its loss bookkeeping. Kept apart from the slab, at half an
/// entry's size, so that the slab holds the flows still open: on traffic
/// of many short connections most tracked flows are lingering, and mixed
/// with the open ones they spread every packet's look-up over far more
/// memory (and pages) than the open flows need.
#[derive(Clone, Copy, Debug)]
struct Lingering {
    key: FlowKey,
    tag: u32,
    syn_next: [u32; 2],
    last_seen: u64,
    loss: LossTrack,
    /// A new connection on the same four-tuple took its key: out of the
    /// index, it waits in the closed queue only to be freed.
    replaced: bool,
}

// Half an entry: what lets the slab shed a closed flow's 192 bytes.
const _: () = assert!(std::mem::size_of::<Lingering>() <= 96);

const NIL: u32 = u32::MAX;
/// [`Flow::twin_role`] of the older flow of a pair, the one indexed.
const TWIN_INDEXED: u8 = 1;
/// [`Flow::twin_role`] of the newer flow of a pair, not indexed.
const TWIN_NEW: u8 = 2;
/// [`Flow::twin_role`] of the newer flow of a pair, left when the older
/// one ended and lingers (outside the index: `twin` names the
/// [`Lingering`] entry).
const TWIN_LEFT_NEW: u8 = 3;
/// [`Flow::twin_role`] of the older flow of a pair, left when the newer
/// one ended and lingers (as for [`TWIN_LEFT_NEW`]).
const TWIN_LEFT_OLD: u8 = 4;
/// Ended candidates' state kept for new ones, at most. A candidate is a
/// kilobyte, and its two rings of recent bytes two more: allocated and
/// freed for each of many short connections, they were a large request
/// to glibc's malloc each, and every large request tidies its lists of
/// small free chunks. A few dozen serve a worker's churn.
const SPARE_CANDIDATES: usize = 32;
/// Confirmed servers a worker remembers (so that later flows to them are
/// parsed whatever their first bytes): a cap, as servers come from traffic.
pub(crate) const MAX_KNOWN_SERVERS: usize = 65_536;
/// How many closed entries ahead `expire` prefetches.
const CLOSED_PREFETCH_AHEAD: usize = 8;

/// A closed flow waiting out its linger, in the order flows closed.
#[derive(Clone, Copy, Debug)]
struct ClosedEntry {
    /// Its place in `FlowTable::lingering`.
    flow: u32,
    tag: u32,
    /// Packet time of its last packet when queued.
    at: u64,
}

/// State of a flow that may be QMTP/QMQP.
struct Candidate {
    streams: [Stream; 2],
    session: Session,
    /// The session's stored bytes as last counted in `FlowTable::session_bytes`.
    accounted: usize,
    /// `NOTE_*` anomalies already raised on this flow.
    reported: u8,
    /// Per direction, the urgent bytes taken out of its stream: every
    /// sequence number handed to a stream goes through them. Boxed, and
    /// only once a segment carried urgent data: QMTP/QMQP never send any.
    urgent: Option<Box<[Urgent; 2]>>,
}

impl Candidate {
    /// Raises the fragment notes `seg` carries: a conflicting overlap each
    /// time, dropped and tiny fragments once per flow.
    fn raise_fragment_notes(&mut self, seg: &Segment, out: &mut Vec<Record>) {
        let ts = seg.ts;
        if seg.frag_notes & NOTE_FRAG_CONFLICT != 0 {
            self.session
                .anomaly(FRAG_CONFLICT, FRAG_CONFLICT_DETAIL.into(), ts, out);
        }
        if seg.frag_notes & !self.reported & (NOTE_FRAG_DROPPED | NOTE_FRAG_TINY) != 0 {
            let new = seg.frag_notes & !self.reported;
            self.reported |= raise_notes(&mut self.session, new, ts, out);
        }
    }

    /// `seq` of direction `dir` as its stream numbers it: without the
    /// urgent bytes taken out before it.
    #[inline]
    fn stream_seq(&self, dir: usize, seq: u32) -> u32 {
        match &self.urgent {
            None => seq,
            Some(u) => u.get(dir).map_or(seq, |u| u.map(seq)),
        }
    }

    /// Segment `seg` of direction `dir` points at an urgent byte `k` bytes
    /// past its first data byte (in it or in a later segment): taken out
    /// of the stream, as the server reads it, unless
    /// the stream already delivered or holds bytes past it (too late to
    /// renumber them) or the direction's cap is reached. The flow is
    /// reported once for its urgent data either way.
    #[cold]
    #[inline(never)]
    fn take_out_urgent(&mut self, dir: usize, seg: &Segment, k: u32, out: &mut Vec<Record>) {
        let byte = seg.seq.wrapping_add(u32::from(seg.syn())).wrapping_add(k);
        let seq = self.stream_seq(dir, byte);
        // Only while nothing at or past the byte was delivered or held:
        // those bytes would have to be renumbered. Bytes held before it
        // keep their offsets.
        let in_time = self
            .streams
            .get(dir)
            .is_some_and(|st| match st.offset_of(seq) {
                Some(o) => {
                    o >= i128::from(st.next_offset())
                        && st.held_end().is_none_or(|end| o >= i128::from(end))
                }
                None => st.holds_nothing(),
            });
        if in_time {
            let urgent = self.urgent.get_or_insert_with(Box::default);
            if let Some(u) = urgent.get_mut(dir) {
                u.take_out(byte);
            }
        }
        if self.reported & NOTE_URGENT == 0 {
            self.reported |= raise_notes(&mut self.session, NOTE_URGENT, seg.ts, out);
        }
    }

    /// Reassembles one segment of direction `dir` and hands what comes out
    /// in order to the session: first the peer's holes that the segment's
    /// ACK proves were received, then the segment's own bytes (those in a
    /// body the parser skips are not stored). Reports a conflicting
    /// overlap, and tells the session when the direction ended. Returns
    /// the session's status and what reassembly saw.
    // Always inlined into `feed_candidate`, its one caller (the compiler's
    // choice flipped with unrelated edits: 2-4 % of a worker's
    // instructions on dense QMTP).
    #[inline(always)]
    fn reassemble(
        &mut self,
        dir: usize,
        seg: &Segment,
        payload: &[u8],
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        out: &mut Vec<Record>,
    ) -> (Status, StreamEvents) {
        let Candidate {
            streams: [s0, s1],
            session,
            urgent,
            ..
        } = self;
        let (mine, peer) = if dir == 0 { (s0, s1) } else { (s1, s0) };
        let (my_urgent, ack) = urgent_view(urgent.as_deref(), dir, seg.ack);
        let mut ev = StreamEvents::default();
        let mut status = Status::Continue;
        let ts = seg.ts;
        if seg.ack_flag() {
            let peer_dir = 1 - dir;
            let mut deliver_peer =
                |d: Delivery<'_>| hand_over(session, &mut status, peer_dir, d, ts, None, out);
            peer.peer_acked(ack, cfg, budget, &mut ev, &mut deliver_peer);
        }
        let peer_ack = if seg.ack_flag() {
            peer.acked_offset(ack)
        } else {
            None
        };
        let (skip_from, skip_to) = session
            .skippable(dir)
            .filter(|&(from, _)| from >= mine.next_offset())
            .unwrap_or((0, 0));
        mine.set_skip(skip_from, skip_to);
        // In-order bytes inside that range are body bytes the parser would
        // only move past: handed over as skipped (their samples are still
        // remembered for retransmissions), which costs the session a
        // count instead of a parse.
        let mut deliver = |d: Delivery<'_>| {
            let d = match d {
                Delivery::Data { offset, bytes }
                    if skip_from <= offset && offset + bytes.len() as u64 <= skip_to =>
                {
                    Delivery::Skip {
                        offset,
                        len: bytes.len() as u64,
                    }
                }
                d => d,
            };
            hand_over(session, &mut status, dir, d, ts, peer_ack, out)
        };
        let conflicts_before = ev.overlaps_conflicting;
        let ended = feed_stream(
            mine,
            my_urgent,
            seg,
            payload,
            cfg,
            budget,
            &mut ev,
            &mut deliver,
        );
        if ev.overlaps_conflicting > conflicts_before {
            session.anomaly(
                AnomalyKind::TcpOverlapConflict,
                "a retransmitted or overlapping segment carried different bytes; the first were kept".into(),
                ts,
                out,
            );
        }
        if ended && status == Status::Continue {
            session.end_of_direction(dir, ts, out);
        }
        (status, ev)
    }

    /// Whether a RST of direction `dir` is one its receiver takes (then it
    /// ends the flow): at the next byte of the sender's stream, or as
    /// [`rst_fits_seen`] judges it from `loss`. Any other is a forgery or
    /// an evasion attempt: it is reported and ignored.
    fn rst_fits(
        &mut self,
        dir: usize,
        seg: &Segment,
        loss: &LossTrack,
        out: &mut Vec<Record>,
    ) -> bool {
        let seq = self.stream_seq(dir, seg.seq);
        let at_next = self.streams.get(dir).is_some_and(|st| {
            let next = i128::from(st.next_offset());
            st.offset_of(seq)
                .is_some_and(|o| o == next || o == next - 1)
        });
        let fits = at_next || rst_fits_seen(loss, dir, seg.seq);
        if !fits {
            self.session.anomaly(
                AnomalyKind::TcpRstOutOfWindow,
                RST_WINDOW_DETAIL.into(),
                seg.ts,
                out,
            );
        }
        fits
    }
}

/// A flow's entry. Laid out by hand in three cache lines (aligned to one):
/// the first two hold what a packet of an established or rejected flow
/// reads and writes (`prefetch_entry` asks for those two), the third what
/// only a flow's creation, its first payload, its end and the expiry walk
/// touch. The compiler's own order spread the per-packet fields over all
/// three, and unaligned (the allocator aligns to 16) an entry spanned four
/// whenever the slab did not start on a line.
#[repr(C, align(64))]
struct Flow {
    // First line: the key, and what every packet looks at.
    key: FlowKey,
    /// The sample below also serves a flow rejected by its first bytes:
    /// the direction (`sample_dir`) and sequence number (`sample_seq`) they
    /// came in, so that a second copy of them with other content, which
    /// could have been what the endpoint took, is noticed (once).
    sample_seq: u32,
    /// Every entry in use is in the open list; `Closed` marks a free one
    /// (what lingers of a closed flow is in `FlowTable::lingering`).
    state: State,
    v4: bool,
    /// Checksum state of each direction (CSUM_*).
    csum: [u8; 2],
    /// Bit d: direction d sent its FIN.
    fin: u8,
    syn_seen: u8,
    /// Reference TTL / hop limit of each direction (its SYN's, else its
    /// first packet's; 0: none yet).
    ttl_ref: [u8; 2],
    /// Direction that sent the SYN (the client), if seen.
    client_dir: Option<u8>,
    ts_known: u8,
    /// First bytes of a client that did not speak QMTP/QMQP, kept while the
    /// server's first bytes are awaited (0: none).
    client_sample_len: u8,
    sample_dir: u8,
    /// `NOTE_*` anomalies seen before the flow had a session.
    early: u8,
    /// Bad-checksum segments dropped before the flow had a session.
    bad_csum_early: u8,
    /// 0, or this flow's side of a twin pair: [`TWIN_INDEXED`] for the
    /// connection whose end the capture lost (the index names it),
    /// [`TWIN_NEW`] for the new connection on its four-tuple (in the slab
    /// and the open list only); [`TWIN_LEFT_NEW`] or [`TWIN_LEFT_OLD`] once
    /// the other ended. In the first line, as every packet of the
    /// pair must be routed; `twin` is read only then.
    twin_role: u8,
    last_seen: u64,
    // Second line.
    /// Sequence and acknowledgement bookkeeping for the capture-loss estimate.
    loss: LossTrack,
    /// Sequence number after the SYN of each direction (0 if none seen).
    syn_next: [u32; 2],
    /// TS.Recent of each direction (RFC 7323), valid where `ts_known` has
    /// the direction's bit.
    ts_recent: [u32; 2],
    /// Its tag in the index.
    tag: u32,
    candidate: Option<Box<Candidate>>,
    // Third line: not touched by a packet of an established flow.
    /// Packet time at which the entry took its place in the open list (at
    /// most `last_seen`): the list is in this order, not in `last_seen`
    /// order, because activity does not move an entry.
    queued: u64,
    prev: u32,
    next: u32,
    client_sample: [u8; 16],
    client_sample_ts: u64,
    /// Of a rejected flow, a SYN (without ACK) with another sequence
    /// number than its direction's SYN had, dropped as the endpoint drops
    /// it while the connection lives: its sequence number, and its
    /// direction plus one (0: none). Should the peer answer it with a
    /// SYN-ACK, the old connection is gone at the endpoints (its end was
    /// not seen) and this is a new one on the four-tuple.
    new_syn: u32,
    new_syn_dir: u8,
    /// The other flow of a twin pair (see `twin_role`), or `NIL`.
    twin: u32,
    /// Where each direction's numbers stood when the pair formed: what
    /// packets are routed by ([`TwinAnchor`]).
    twin_anchor: TwinAnchor,
}

/// A twin flow's reference points, fixed when the pair forms, so that
/// where a packet goes depends on nothing a packet can change (a copy of
/// a segment goes where the segment went). Per direction: the number
/// before its first byte (its SYN's, or the first byte its stream took
/// less one), counted forward from; else the highest byte seen then,
/// counted either way; else nothing.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct TwinAnchor {
    at: [u32; 2],
    /// Bit d: direction d's is known; bit 2 + d: counted either way.
    kind: u8,
}

impl TwinAnchor {
    fn of(f: &Flow) -> TwinAnchor {
        let mut a = TwinAnchor::default();
        for d in 0..2 {
            let first = match f.syn_next.get(d) {
                Some(&next) if f.syn_seen & (1 << d) != 0 => Some(next),
                _ => f
                    .candidate
                    .as_ref()
                    .and_then(|c| c.streams.get(d))
                    .and_then(Stream::first_seq),
            };
            let (at, kind) = match (first, f.loss.next_seq(d)) {
                (Some(first), _) => (first.wrapping_sub(1), 1 << d),
                (None, Some(seen)) => (seen, (1 << d) | (4 << d)),
                (None, None) => continue,
            };
            if let Some(slot) = a.at.get_mut(d) {
                *slot = at;
            }
            a.kind |= kind;
        }
        a
    }

    /// How far `value` lies from direction `d`'s reference.
    fn distance(&self, d: usize, value: u32) -> u32 {
        let at = self.at.get(d).copied().unwrap_or(0);
        if self.kind & (1 << d) == 0 {
            u32::MAX
        } else if self.kind & (4 << d) != 0 {
            (value.wrapping_sub(at) as i32).unsigned_abs()
        } else {
            value.wrapping_sub(at)
        }
    }

    /// Where `seg` from direction `dir` lies: its sequence number, then
    /// (to tell apart twins whose numbers there are the same) its
    /// acknowledgement in the other direction.
    fn key(&self, dir: usize, seg: &Segment) -> (u32, u32) {
        let ack = if seg.ack_flag() {
            self.distance(1 - (dir & 1), seg.ack)
        } else {
            0
        };
        (self.distance(dir, seg.seq), ack)
    }
}

/// Of a twin that ended (kept by its [`Lingering`] entry's position): the
/// flow `left` of its pair, and the ended flow's anchor.
#[derive(Clone, Copy, Debug)]
struct EndedTwin {
    left: u32,
    anchor: TwinAnchor,
}

// The layout above, held: two lines of per-packet fields (what
// `prefetch_entry` asks for), the rest after them, three lines in all.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(Flow, last_seen) + 8 <= 64);
    assert!(offset_of!(Flow, twin_role) < 64);
    assert!(offset_of!(Flow, loss) >= 64);
    assert!(offset_of!(Flow, candidate) + 8 <= 128);
    assert!(offset_of!(Flow, queued) >= 128);
    assert!(size_of::<Flow>() == 192);
};

impl Flow {
    /// Whether SYN `seg` from direction `dir` is not this connection's:
    /// one with another sequence number than the direction's SYN had, one
    /// on a flow picked up midstream (as `FlowTable::chaff_accepts` judges
    /// them), or the SYN-ACK to the new SYN this flow dropped.
    #[cold]
    #[inline(never)]
    fn foreign_syn(&self, dir: usize, seg: &Segment) -> bool {
        self.syn_of_another(dir, seg) || self.answers_new_syn(dir, seg)
    }

    /// Whether SYN `seg` from direction `dir` is another connection's (or
    /// chaff): its sequence number is not the one the direction's SYN had,
    /// or the flow was picked up midstream and is parsed.
    #[inline]
    fn syn_of_another(&self, dir: usize, seg: &Segment) -> bool {
        let isn = self.syn_next.get(dir).map(|n| n.wrapping_sub(1));
        let other_isn = self.syn_seen & (1 << dir) != 0 && isn != Some(seg.seq);
        let midstream = self.syn_seen == 0 && self.candidate.is_some();
        other_isn || midstream
    }

    /// Whether `seg`, from direction `dir`, is the peer's SYN-ACK to the
    /// new SYN this flow dropped (see `new_syn`).
    #[inline]
    fn answers_new_syn(&self, dir: usize, seg: &Segment) -> bool {
        seg.ack_flag()
            && self.new_syn_dir == 2 - dir as u8
            && seg.ack == self.new_syn.wrapping_add(1)
    }

    /// Keeps the first bytes of direction `dir` a judgement rests on (at
    /// most the sample's 16), once: the client's while the server's answer
    /// is awaited, or those of a flow rejected by them.
    fn keep_sample(&mut self, dir: usize, seg: &Segment, payload: &[u8]) {
        if self.client_sample_len > 0 {
            return;
        }
        let n = payload.len().min(self.client_sample.len());
        if let (Some(dst), Some(src)) = (self.client_sample.get_mut(..n), payload.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.client_sample_len = n as u8;
        self.client_sample_ts = seg.ts;
        self.sample_dir = dir as u8;
        self.sample_seq = seg.seq;
    }
}

/// Where a segment's bytes are, for [`FlowTable::segment_checked`]: looked
/// up only on the paths that read them. Most packets of small flows belong
/// to flows already set aside and read none; finding a segment's header and
/// payload in its block was 7 % of a worker's instructions there.
pub(crate) trait SegmentBytes {
    /// The TCP segment (header and payload, as captured), if its checksum
    /// can be checked, and the payload.
    fn get(&self, seg: &Segment) -> (Option<&[u8]>, &[u8]);
}

/// A segment's bytes given as they are.
pub(crate) struct Given<'a> {
    pub tcp: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl SegmentBytes for Given<'_> {
    #[inline]
    fn get(&self, _: &Segment) -> (Option<&[u8]>, &[u8]) {
        (self.tcp, self.payload)
    }
}

/// A segment's bytes in the block it was decoded from.
impl SegmentBytes for &Block {
    #[inline]
    fn get(&self, seg: &Segment) -> (Option<&[u8]>, &[u8]) {
        let (tcp, payload) = self.tcp_and_payload(seg);
        (Some(tcp), payload)
    }
}

/// The flow table of one worker.
pub struct FlowTable {
    cfg: FlowConfig,
    index: FlowIndex,
    slab: Vec<Flow>,
    free: Vec<u32>,
    /// The open list (see `expire`), linked through the entries.
    head: u32,
    tail: u32,
    /// Closed flows lingering, oldest first: a queue rather than a list so
    /// that `expire` can prefetch the entries it is about to remove.
    closed: VecDeque<ClosedEntry>,
    /// Closed flows, each in the closed queue once (see [`Lingering`]).
    lingering: Vec<Lingering>,
    lingering_free: Vec<u32>,
    /// Lingering entries replaced by a new connection (in the closed queue,
    /// not in the index): they count toward the flow cap.
    replaced: usize,
    /// Twin pairs now: each has one flow outside the index, which counts
    /// toward the flow cap.
    twins: usize,
    /// Lingering entries of twins that ended, by lingering position, with
    /// the flow left of each pair. Keyed, not searched: a host that forges
    /// SYN-ACKs can make as many pairs as the flow cap allows.
    twin_lingering: FxHashMap<u32, EndedTwin>,
    budget: Budget,
    /// Copied protocol state held by all sessions (see `session_memory`).
    session_bytes: usize,
    /// Servers this worker confirmed, so that other protocols sent to them
    /// are reported.
    known_servers: FxHashMap<(Addr, u16), Protocol>,
    /// Bit p: some known server listens on port p (most flows are ruled
    /// out by this alone, without hashing).
    known_ports: Vec<u64>,
    /// Candidates' state that ended, kept for new candidates (at most
    /// [`SPARE_CANDIDATES`]). Boxed: the boxes are what is kept, moved to
    /// and from the flows without a new allocation.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Candidate>>,
    pub stats: FlowStats,
}

impl FlowTable {
    pub fn new(cfg: FlowConfig) -> Self {
        FlowTable {
            cfg,
            index: FlowIndex::new(),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            closed: VecDeque::new(),
            lingering: Vec::new(),
            lingering_free: Vec::new(),
            replaced: 0,
            twins: 0,
            twin_lingering: FxHashMap::default(),
            budget: Budget::new(cfg.held_bytes_cap),
            session_bytes: 0,
            known_servers: FxHashMap::default(),
            known_ports: vec![0; 1024],
            spare: Vec::new(),
            stats: FlowStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len() + self.twins
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Out-of-order bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.budget.held
    }

    /// Copied protocol state (addresses, reply texts) held by all sessions now.
    pub fn session_bytes(&self) -> usize {
        self.session_bytes
    }

    /// The position of the flow with `key`, whose tag is `tag`: in the
    /// slab, or with [`LINGERING`] set, among the lingering entries.
    fn lookup(&self, key: &FlowKey, tag: u32) -> Option<u32> {
        let (slab, lingering) = (&self.slab, &self.lingering);
        self.index.find(tag, |i| {
            if i & LINGERING == 0 {
                slab.get(i as usize).is_some_and(|f| f.key == *key)
            } else {
                lingering
                    .get((i & !LINGERING) as usize)
                    .is_some_and(|l| l.key == *key)
            }
        })
    }

    fn flow(&mut self, i: u32) -> Option<&mut Flow> {
        self.slab.get_mut(i as usize)
    }

    /// Takes an entry (not closed) out of the open list.
    fn unlink(&mut self, i: u32) {
        let Some(f) = self.slab.get(i as usize) else {
            return;
        };
        let (prev, next) = (f.prev, f.next);
        match self.flow(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.flow(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    /// Appends an entry to the open list.
    fn push_tail(&mut self, i: u32) {
        let tail = self.tail;
        if let Some(f) = self.flow(i) {
            f.prev = tail;
            f.next = NIL;
        }
        match self.flow(tail) {
            Some(t) => t.next = i,
            None => self.head = i,
        }
        self.tail = i;
    }

    /// The connection ended: the entry lingers in the closed queue to
    /// absorb stray packets, then goes.
    fn close(&mut self, i: u32, ts: u64) {
        let Some(f) = self.slab.get_mut(i as usize) else {
            return;
        };
        if f.state == State::Closed {
            return;
        }
        f.state = State::Closed;
        let candidate = f.candidate.take();
        let rest = Lingering {
            key: f.key,
            tag: f.tag,
            syn_next: f.syn_next,
            last_seen: f.last_seen,
            loss: f.loss,
            replaced: false,
        };
        let role = f.twin_role;
        if let Some(c) = candidate {
            self.release(c);
        }
        // Its links are still those of the open list.
        self.unlink(i);
        if role == TWIN_INDEXED || role == TWIN_NEW {
            return self.close_twin(i, rest, ts);
        }
        if role >= TWIN_LEFT_NEW {
            self.forget_lingering_twin(i);
        }
        let l = take_place(&mut self.lingering, &mut self.lingering_free, rest);
        // The entry is free at once; its index slot now names what lingers.
        self.index.repoint(rest.tag, i, l | LINGERING);
        self.closed_to_queue(i, l, rest.tag, ts);
    }

    /// Entry `i` closed at `ts` is free; what lingers of it, `l`, waits in
    /// the closed queue.
    #[inline(always)]
    fn closed_to_queue(&mut self, i: u32, l: u32, tag: u32, ts: u64) {
        self.free.push(i);
        self.closed.push_back(ClosedEntry {
            flow: l,
            tag,
            at: ts,
        });
        self.stats.flows_closed += 1;
    }

    /// Frees lingering entry `l` (and its index slot, unless replaced).
    fn remove_lingering(&mut self, l: u32) {
        let Some(e) = self.lingering.get(l as usize) else {
            return;
        };
        if e.replaced {
            self.replaced = self.replaced.saturating_sub(1);
            if !self.twin_lingering.is_empty() {
                self.lingering_twin_gone(l);
            }
        } else {
            self.index.remove(e.tag, l | LINGERING);
        }
        self.lingering_free.push(l);
    }

    /// Dissolves the twin pair of flow `i`, which is going: when `i` is
    /// the indexed one, its index slot passes to the other.
    #[cold]
    #[inline(never)]
    fn untwin(&mut self, i: u32) {
        let Some(f) = self.slab.get_mut(i as usize) else {
            return;
        };
        let (role, other, tag) = (f.twin_role, f.twin, f.tag);
        (f.twin_role, f.twin) = (0, NIL);
        if let Some(o) = self.slab.get_mut(other as usize) {
            (o.twin_role, o.twin) = (0, NIL);
        }
        if role == TWIN_INDEXED {
            self.index.repoint(tag, i, other);
        }
        self.twins = self.twins.saturating_sub(1);
    }

    /// Flow `i` of a twin pair ended (its entry already out of the open
    /// list): what is left of it lingers outside the index, as a replaced
    /// entry does, and the other flow, which keeps (or takes) the index
    /// slot, routes to it the strays of its connection
    /// ([`FlowTable::route_twin`]) until it goes.
    #[cold]
    #[inline(never)]
    fn close_twin(&mut self, i: u32, rest: Lingering, ts: u64) {
        let Some(f) = self.slab.get_mut(i as usize) else {
            return;
        };
        let (role, other, anchor) = (f.twin_role, f.twin, f.twin_anchor);
        (f.twin_role, f.twin) = (0, NIL);
        let l = take_place(
            &mut self.lingering,
            &mut self.lingering_free,
            Lingering {
                replaced: true,
                ..rest
            },
        );
        if role == TWIN_INDEXED {
            self.index.repoint(rest.tag, i, other);
        }
        if let Some(o) = self.slab.get_mut(other as usize) {
            let left = if role == TWIN_INDEXED {
                TWIN_LEFT_NEW
            } else {
                TWIN_LEFT_OLD
            };
            (o.twin_role, o.twin) = (left, l);
        }
        self.twin_lingering.insert(
            l,
            EndedTwin {
                left: other,
                anchor,
            },
        );
        self.twins = self.twins.saturating_sub(1);
        self.replaced += 1;
        self.closed_to_queue(i, l, rest.tag, ts);
    }

    /// Survivor `s` is going: its twin's lingering entry, if any, waits out
    /// its turn on its own.
    #[cold]
    #[inline(never)]
    fn forget_lingering_twin(&mut self, s: u32) {
        if let Some(f) = self.slab.get_mut(s as usize) {
            self.twin_lingering.remove(&f.twin);
            (f.twin_role, f.twin) = (0, NIL);
        }
    }

    /// Lingering entry `l` is going: if it was a twin's, its survivor is a
    /// plain flow again.
    #[cold]
    #[inline(never)]
    fn lingering_twin_gone(&mut self, l: u32) {
        let Some(e) = self.twin_lingering.remove(&l) else {
            return;
        };
        if let Some(f) = self.slab.get_mut(e.left as usize) {
            (f.twin_role, f.twin) = (0, NIL);
        }
    }

    /// Frees a candidate's reassembly and session memory from the budgets.
    fn release(&mut self, mut c: Box<Candidate>) {
        c.streams[0].reset(&mut self.budget);
        c.streams[1].reset(&mut self.budget);
        self.session_bytes = self.session_bytes.saturating_sub(c.accounted);
        keep_spare(&mut self.spare, c);
    }

    /// Frees open entry `i` (a closed one was freed when it closed).
    fn remove(&mut self, i: u32) {
        if self
            .slab
            .get(i as usize)
            .is_none_or(|f| f.state == State::Closed)
        {
            return;
        }
        self.unlink(i);
        if let Some(f) = self.slab.get_mut(i as usize) {
            let c = f.candidate.take();
            f.state = State::Closed;
            let tag = f.tag;
            let role = f.twin_role;
            if role == TWIN_INDEXED || role == TWIN_NEW {
                self.untwin(i);
            } else {
                self.index.remove(tag, i);
                if role >= TWIN_LEFT_NEW {
                    self.forget_lingering_twin(i);
                }
            }
            self.free.push(i);
            if let Some(c) = c {
                self.release(c);
            }
        }
    }

    /// A packet of lingering flow `l`: a stray (absorbed: false), or the
    /// SYN (without ACK) of a new connection on its four-tuple, other than
    /// a retransmission of the old SYN (true: the entry leaves the index,
    /// so that the new connection gets an entry of its own). An endpoint
    /// takes such a SYN at once after an RST, and over TIME_WAIT when its
    /// sequence number is higher; the lingering entry must not swallow it,
    /// nor the package it may carry.
    #[inline(never)]
    fn lingering_packet(&mut self, l: u32, dir: usize, seg: &Segment) -> bool {
        let Some(e) = self.lingering.get_mut(l as usize) else {
            return false;
        };
        let reopens = seg.syn()
            && !seg.ack_flag()
            && !seg.rst()
            && e.syn_next
                .get(dir)
                .is_none_or(|&n| n != seg.seq.wrapping_add(1));
        if reopens {
            e.replaced = true;
            let tag = e.tag;
            self.index.remove(tag, l | LINGERING);
            self.replaced += 1;
            self.stats.flows_reopened += 1;
            return true;
        }
        self.absorb(l, dir, seg);
        false
    }

    /// A stray packet of lingering flow `l`, taken in its books only.
    fn absorb(&mut self, l: u32, dir: usize, seg: &Segment) {
        let Some(e) = self.lingering.get_mut(l as usize) else {
            return;
        };
        e.last_seen = e.last_seen.max(seg.ts);
        let (acked, gap) = e.loss.observe(dir, seg);
        self.stats.loss_acked_bytes += acked;
        self.stats.loss_gap_bytes += gap;
    }

    // Always inlined into the per-packet path, its one hot caller: out of
    // line (the compiler's choice flipped with unrelated edits) the entry
    // cost about 100 instructions more a new flow.
    #[inline(always)]
    fn create(&mut self, key: FlowKey, tag: u32, v4: bool, ts: u64, out: &mut Vec<Record>) -> u32 {
        self.make_room(ts, out);
        let i = self.new_entry(key, v4, tag, ts);
        self.index.insert(tag, i);
        self.stats.flows_peak = self.stats.flows_peak.max(self.len() as u64);
        i
    }

    /// Frees an entry when the table is at its flow cap.
    #[inline(always)]
    fn make_room(&mut self, ts: u64, out: &mut Vec<Record>) {
        // Replaced lingering records still wait in the closed queue, and
        // twins are outside the index: they count.
        let flows = self.index.len() + self.replaced + self.twins;
        if flows >= self.cfg.max_flows.max(1) {
            // Oldest closed entry first, else the least recently active flow.
            match self.closed.pop_front() {
                Some(c) => {
                    self.stats.flows_evicted_cap += 1;
                    self.remove_lingering(c.flow);
                }
                None => {
                    let victim = self.least_recent_open();
                    if victim != NIL {
                        self.stats.flows_evicted_cap += 1;
                        self.finish_flow(victim, ts, out);
                        self.remove(victim);
                    }
                }
            }
        }
    }

    /// A new open entry (in the slab and the open list, not the index).
    #[inline(always)]
    fn new_entry(&mut self, key: FlowKey, v4: bool, tag: u32, ts: u64) -> u32 {
        let flow = Flow {
            key,
            v4,
            prev: NIL,
            next: NIL,
            last_seen: ts,
            queued: ts,
            state: State::Open,
            tag,
            client_dir: None,
            fin: 0,
            syn_next: [0; 2],
            syn_seen: 0,
            csum: [CSUM_UNKNOWN; 2],
            bad_csum_early: 0,
            early: 0,
            ttl_ref: [0; 2],
            ts_recent: [0; 2],
            ts_known: 0,
            client_sample_len: 0,
            client_sample: [0; 16],
            client_sample_ts: 0,
            new_syn: 0,
            new_syn_dir: 0,
            twin: NIL,
            twin_anchor: TwinAnchor::default(),
            twin_role: 0,
            sample_dir: 0,
            sample_seq: 0,
            loss: LossTrack::default(),
            candidate: None,
        };
        let i = take_place(&mut self.slab, &mut self.free, flow);
        self.push_tail(i);
        self.stats.flows_created += 1;
        i
    }

    /// First prefetch stage, for a segment far ahead of the one being
    /// processed: the index bucket where its flow's look-up starts.
    #[inline]
    pub(crate) fn prefetch_bucket(&self, seg: &Segment) {
        // Only with the capture thread's tag: computing one here would cost
        // more than the hint saves.
        if seg.flow_tag != 0 {
            prefetch::prefetch(self.index.bucket_ptr(seg.flow_tag));
        }
    }

    /// Second prefetch stage, for a segment a few places ahead: its flow's
    /// entry (found by tag alone, a hint) and, if its checksum may be
    /// verified, its header, the start of its payload and the payload's
    /// last line in `block` (only then looked up).
    /// Never changes the table.
    #[inline]
    pub(crate) fn prefetch_entry(&self, seg: &Segment, block: &Block) {
        if seg.flow_tag == 0 {
            return;
        }
        if let Some(i) = self.index.probe_tag(seg.flow_tag) {
            if i & LINGERING != 0 {
                let l = (i & !LINGERING) as usize;
                prefetch::prefetch(self.lingering.as_ptr().wrapping_add(l).cast::<u8>());
                return;
            }
            let p = self.slab.as_ptr().wrapping_add(i as usize).cast::<u8>();
            // The two lines a packet touches (see `Flow`), and the third,
            // with the list links, for a segment that may end the flow.
            prefetch::prefetch(p);
            prefetch::prefetch(p.wrapping_add(64));
            if seg.fin() || seg.rst() {
                prefetch::prefetch(p.wrapping_add(128));
            }
        }
        if seg.checksum_matters() {
            let tcp = block.tcp_segment(seg);
            prefetch::prefetch(tcp.as_ptr());
            if tcp.len() > 64 {
                prefetch::prefetch(tcp.as_ptr().wrapping_add(64));
            }
            // A body's last bytes, which reassembly remembers (see
            // `reassembly::BODY_SAMPLE`).
            if tcp.len() > 128 {
                prefetch::prefetch(tcp.as_ptr().wrapping_add(tcp.len() - 1));
            }
        }
    }

    /// Processes one segment whose payload bytes are `payload` (checksum
    /// not verifiable: treated as correct).
    pub fn segment(&mut self, seg: &Segment, payload: &[u8], out: &mut Vec<Record>) {
        self.segment_checked(seg, Given { tcp: None, payload }, out);
    }

    /// Processes one segment whose TCP segment (header and payload, as
    /// captured) is `tcp` and whose payload is `payload`: its checksum is
    /// judged per [`ChecksumMode`] and its urgent pointer read, as for a
    /// segment decoded from a capture. What the fuzz target drives.
    pub fn segment_with_header(
        &mut self,
        seg: &Segment,
        tcp: &[u8],
        payload: &[u8],
        out: &mut Vec<Record>,
    ) {
        let given = Given {
            tcp: Some(tcp),
            payload,
        };
        self.segment_checked(seg, given, out);
    }

    /// Processes one segment whose bytes are in `bytes`; its TCP segment
    /// (header and payload, as captured), where given, lets the table
    /// verify the checksum per [`ChecksumMode`].
    // Always inlined into the worker's loop, its one hot caller: left to
    // the compiler, the choice flipped with unrelated edits, and the call
    // cost 2–3 % of the instructions of a capture of small flows.
    #[inline(always)]
    pub(crate) fn segment_checked(
        &mut self,
        seg: &Segment,
        bytes: impl SegmentBytes,
        out: &mut Vec<Record>,
    ) {
        let (key, dir) = FlowKey::of(seg);
        let tag = seg_tag(seg, &key);
        let found = match self.lookup(&key, tag) {
            Some(i) if i & LINGERING != 0 => {
                if !self.lingering_packet(i & !LINGERING, dir, seg) {
                    return;
                }
                None
            }
            found => found,
        };
        let i = match found {
            // One of a twin pair, or what is left of one: the index names
            // the older flow, or the one left. (Pairs are rare: the
            // table's counts spare every other packet the test.)
            Some(i)
                if self.twins + self.twin_lingering.len() != 0
                    && self.slab.get(i as usize).is_some_and(|f| f.twin_role != 0) =>
            {
                match self.route_twin(i, dir, seg) {
                    Some(i) => i,
                    None => return,
                }
            }
            Some(i) => i,
            None => {
                if !seg.syn() && bytes.get(seg).1.is_empty() {
                    self.stats.packets_without_flow += 1;
                    return;
                }
                if seg.rst() {
                    self.stats.packets_without_flow += 1;
                    return;
                }
                self.create(key, tag, seg.v4, seg.ts, out)
            }
        };
        self.segment_of(i, dir, seg, bytes, out)
    }

    /// [`FlowTable::segment_checked`] once the segment's flow, entry `i`,
    /// is known; `dir` is the segment's direction in it.
    #[inline(always)]
    fn segment_of(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        bytes: impl SegmentBytes,
        out: &mut Vec<Record>,
    ) {
        let Some(flow) = self.flow(i) else {
            return;
        };
        // (A flow still parsed looks at its checksum first, below.)
        if seg.syn() && flow.state == State::Rejected && flow.answers_new_syn(dir, seg) {
            return self.new_connection_confirmed(i, seg, bytes, out);
        }
        flow.last_seen = flow.last_seen.max(seg.ts);
        let state = flow.state;
        // Another connection's SYN (a new one on the four-tuple, or
        // chaff) leaves the flow's sequence bookkeeping as it was: twin
        // flows are told apart by it.
        if !(seg.syn() && state == State::Open && flow.foreign_syn(dir, seg)) {
            let (acked, gap) = flow.loss.observe(dir, seg);
            self.stats.loss_acked_bytes += acked;
            self.stats.loss_gap_bytes += gap;
        }
        match state {
            State::Closed => {}
            // An open flow is not moved in its list on every packet (that
            // would touch two other random entries per packet): `last_seen`
            // is enough, and `expire` re-queues flows that were active.
            State::Rejected => self.rejected_segment(i, dir, seg, bytes, out),
            State::Open => {
                let (tcp, payload) = bytes.get(seg);
                let mut verified = true;
                if let Some(tcp) = tcp {
                    if self.only_skipped_body(i, dir, seg, payload.len()) {
                        verified = false;
                    } else if !self.checksum_accepts(i, dir, seg, tcp, out) {
                        return;
                    }
                }
                // A SYN-ACK to the new SYN this flow dropped: a new
                // connection, once its checksum shows the endpoint took it.
                if seg.syn()
                    && self
                        .slab
                        .get(i as usize)
                        .is_some_and(|f| f.answers_new_syn(dir, seg))
                {
                    return self.new_connection_confirmed(i, seg, bytes, out);
                }
                if !self.chaff_accepts(i, dir, seg, payload.len(), tcp, verified, out) {
                    return;
                }
                self.open_segment(i, dir, seg, payload, urgent_of(seg, tcp), out);
            }
        }
    }

    /// A segment of a flow set aside as not QMTP/QMQP: only what ends the
    /// flow, and a second copy of the bytes that set it aside, matter.
    #[inline(always)]
    fn rejected_segment(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        bytes: impl SegmentBytes,
        out: &mut Vec<Record>,
    ) {
        // Only a segment at the start of the sampled direction can hold a
        // second copy of a rejected flow's first bytes. Most segments here
        // carry no data: test that first. The segment's bytes are not
        // looked up unless they are needed.
        let again = seg.payload_len > 0
            && self.slab.get(i as usize).is_some_and(|f| {
                f.client_sample_len > 0
                    && usize::from(f.sample_dir) == dir
                    && seg.seq.wrapping_sub(f.sample_seq) < u32::from(f.client_sample_len)
            });
        if again {
            let payload = bytes.get(seg).1;
            if !payload.is_empty() {
                self.first_bytes_again(i, dir, seg, payload, out);
            }
        }
        if seg.syn() && !self.syn_of_rejected(i, dir, seg) {
            return;
        }
        self.track_teardown(i, dir, seg)
    }

    /// Whether `seg` can go unchecksummed: in a direction whose checksums
    /// are known to be real (`Auto`), a data segment with only ACK/PSH that
    /// starts at the next expected byte and lies wholly in a message body
    /// the parser skips unread, while neither direction holds out-of-order
    /// data. Such a segment, even if its checksum is bad (chaff the
    /// endpoint drops), changes no finding: its bytes are not parsed (a
    /// body's bytes are a body's whatever they hold), its ACK can declare
    /// no gap (nothing is held), it hands over no held data, and
    /// `chaff_accepts` takes no TTL or timestamp reference from it. Chaff
    /// there is still reported: the real segment, a retransmission, is
    /// summed and conflicts with it (`tcp_overlap_conflict`). On captures
    /// of large messages the sum over every body byte is a third of a
    /// worker's time.
    // Always inlined into the per-packet path of open flows, its one caller
    // (the compiler's choice flipped with unrelated edits).
    #[inline(always)]
    fn only_skipped_body(&self, i: u32, dir: usize, seg: &Segment, len: usize) -> bool {
        if self.cfg.checksums != ChecksumMode::Auto
            || len == 0
            || seg.missing > 0
            || !seg.ack_flag()
            || seg.syn()
            || seg.fin()
            || seg.rst()
            // Urgent data renumbers the stream: summed, so chaff can't.
            || seg.flags & TCP_URG != 0
        {
            return false;
        }
        let Some(flow) = self.slab.get(i as usize) else {
            return false;
        };
        let Some(c) = flow.candidate.as_ref() else {
            return false;
        };
        if flow.csum.get(dir) != Some(&CSUM_VALID) {
            return false;
        }
        let (Some(mine), Some(peer)) = (c.streams.get(dir), c.streams.get(1 - dir)) else {
            return false;
        };
        if !mine.holds_nothing() || !peer.holds_nothing() {
            return false;
        }
        let Some((from, to)) = c.session.skippable(dir) else {
            return false;
        };
        // New bytes only, in order: a retransmission is summed, so that
        // chaff after the real bytes is named for what it is.
        let next = mine.next_offset();
        from == next
            && mine.offset_of(c.stream_seq(dir, seg.seq)) == Some(i128::from(next))
            && next.saturating_add(len as u64) <= to
    }

    /// Decides whether an endpoint would accept `seg` by its checksum. In
    /// `Auto` mode each direction is judged by its first checksummed packet:
    /// a valid one means checksums are real there, so a later invalid
    /// segment (which the endpoint would drop) is dropped and reported; an
    /// invalid first one means the capture has offloaded checksums for that
    /// direction. If it held the pseudo-header sum (what Linux leaves for
    /// the NIC), later segments must hold it too, or be valid: any other
    /// value is corrupted, dropped and reported. Otherwise (zero, stale)
    /// the direction is not checked again.
    #[inline(always)]
    fn checksum_accepts(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        tcp: &[u8],
        out: &mut Vec<Record>,
    ) -> bool {
        let mode = self.cfg.checksums;
        if mode == ChecksumMode::Ignore || !seg.checksum_matters() {
            return true;
        }
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return true;
        };
        let state = flow.csum.get(dir).copied().unwrap_or(CSUM_UNKNOWN);
        if mode == ChecksumMode::Auto && state == CSUM_OFFLOADED_OTHER {
            return true;
        }
        // A checksum left to the NIC holds the pseudo-header sum (Linux,
        // and the BSDs): cheap to recognise, so it is tried first where
        // checksums are offloaded, and only after a failed sum elsewhere.
        let auto = mode == ChecksumMode::Auto;
        if auto && state == CSUM_OFFLOADED && seg.checksum_offloaded(tcp) {
            return true;
        }
        let ok = seg.checksum_ok(tcp);
        let offloaded = !ok && auto && state == CSUM_UNKNOWN && seg.checksum_offloaded(tcp);
        let slot = flow.csum.get_mut(dir);
        match (ok, state, mode) {
            (true, _, _) => {
                if state == CSUM_UNKNOWN {
                    if let Some(s) = slot {
                        *s = CSUM_VALID;
                    }
                }
                true
            }
            (false, CSUM_UNKNOWN, ChecksumMode::Auto) => {
                if let Some(s) = slot {
                    *s = if offloaded {
                        CSUM_OFFLOADED
                    } else {
                        CSUM_OFFLOADED_OTHER
                    };
                }
                self.stats.directions_checksum_offloaded += 1;
                true
            }
            (false, _, _) => {
                self.stats.bad_checksum_dropped += 1;
                match flow.candidate.as_mut() {
                    Some(c) => c
                        .session
                        .anomaly(BAD_CSUM, BAD_CSUM_DETAIL.into(), seg.ts, out),
                    None => flow.bad_csum_early = flow.bad_csum_early.saturating_add(1),
                }
                false
            }
        }
    }

    /// A flow judged by its first bytes (rejected, or waiting for the
    /// server's answer to a client that did not speak QMTP/QMQP) got
    /// another copy of those bytes with other content. Which copy the
    /// endpoint took is unknown (an overlap or chaff evasion: garbage
    /// first, the real request after). If the other copy looks like
    /// QMTP/QMQP, the flow is reported with `tcp_overlap_conflict`
    /// straight away — it will never be a confirmed session — and the
    /// sample is dropped so that this is said once.
    #[cold]
    #[inline(never)]
    fn first_bytes_again(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        payload: &[u8],
        out: &mut Vec<Record>,
    ) {
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return;
        };
        if usize::from(flow.sample_dir) != dir || flow.client_sample_len == 0 {
            return;
        }
        let n = usize::from(flow.client_sample_len);
        let at = seg.seq.wrapping_sub(flow.sample_seq) as usize;
        if at >= n {
            return;
        }
        // The sample with this segment's bytes laid over it.
        let mut other = flow.client_sample;
        let take = payload.len().min(n - at);
        let (Some(dst), Some(src)) = (other.get_mut(at..at + take), payload.get(..take)) else {
            return;
        };
        if dst == src {
            return;
        }
        dst.copy_from_slice(src);
        // Only bytes that are recognisably QMTP/QMQP (not merely undecided
        // in a short sample) make this worth saying.
        if !admission::looks_like_qm(other.get(..n).unwrap_or_default()) {
            return;
        }
        flow.client_sample_len = 0;
        let [a, b] = Self::addrs(flow);
        let client_is_a = match flow.client_dir {
            Some(c) => c == 0,
            None => dir == 0,
        };
        let (client, server) = if client_is_a { (a, b) } else { (b, a) };
        self.stats.first_bytes_conflicts += 1;
        out.push(Record::Anomaly(Box::new(Anomaly {
            endpoints: Endpoints { client, server },
            protocol: None,
            kind: AnomalyKind::TcpOverlapConflict,
            detail: "the first bytes of a direction came twice with different content; \
                     the flow was judged by the first copy (not QMTP/QMQP), \
                     the other looks like QMTP/QMQP"
                .into(),
            ts: seg.ts,
        })));
    }

    /// Decides whether an endpoint would take `seg` (of an open flow) by
    /// what fragroute-style insertion chaff gets wrong, given that its
    /// checksum is right:
    /// - a TTL / hop limit below its direction's reference (its SYN's, else
    ///   its first packet's): it may expire before the receiver;
    /// - data without ACK (only a SYN may carry that), or a SYN inside an
    ///   established flow (another ISN than the direction's SYN had, or any
    ///   SYN in a flow picked up mid-stream that already has a session);
    /// - a TCP timestamp older than TS.Recent (PAWS, RFC 7323 §5), where
    ///   TS.Recent follows only segments at or before the next expected
    ///   byte (§4.3), so a segment the network reordered is not dropped.
    ///
    /// Such a segment is ignored and reported, once per flow and kind.
    /// Only segments that carry data, FIN or RST are judged.
    // Long: one check per sign of chaff, in the order an endpoint drops such a segment.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn chaff_accepts(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        payload_len: usize,
        tcp: Option<&[u8]>,
        verified: bool,
        out: &mut Vec<Record>,
    ) -> bool {
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return true;
        };
        let judged = payload_len > 0 || seg.missing > 0 || seg.fin() || seg.rst();
        if !judged && !seg.syn() {
            // A bare ACK (most packets): it only gives a direction its first
            // TTL; TS.Recent follows the data segments, which is enough.
            if let Some(r) = flow.ttl_ref.get_mut(dir) {
                if *r == 0 {
                    *r = seg.ttl;
                }
            }
            if seg.frag_notes != 0 && flow.candidate.is_none() {
                flow.early |= seg.frag_notes;
            }
            return true;
        }
        let bit = 1u8 << dir;
        let first_syn = seg.syn() && flow.syn_seen & bit == 0;
        let mut chaff = 0;
        let ttl_ref = flow.ttl_ref.get(dir).copied().unwrap_or(0);
        // A segment whose checksum was not looked at sets no reference: it
        // may be chaff, and a reference taken from chaff would drop the
        // real segments after it.
        let sets_ttl = verified && seg.ttl != 0 && (ttl_ref == 0 || first_syn);
        if seg.ttl != 0 && !sets_ttl && seg.ttl < ttl_ref && judged {
            chaff = NOTE_TTL;
        }
        let data = payload_len > 0 || seg.missing > 0;
        if chaff == 0 && seg.syn() {
            if flow.syn_of_another(dir, seg) {
                chaff = NOTE_FLAGS;
                // A new connection's, if the peer answers it (see
                // `new_connection_confirmed`).
                if !seg.ack_flag() && !seg.rst() && flow.twin_role == 0 {
                    flow.new_syn = seg.seq;
                    flow.new_syn_dir = dir as u8 + 1;
                }
            }
        } else if chaff == 0 && data && !seg.ack_flag() && !seg.rst() {
            chaff = NOTE_FLAGS;
        }
        // The timestamp is read from the header only here, where it counts.
        let tsval = if chaff == 0 { seg.tsval_in(tcp) } else { None };
        if let Some(tsval) = tsval {
            let known = flow.ts_known & bit != 0;
            let recent = flow.ts_recent.get(dir).copied().unwrap_or(0);
            let older = (tsval.wrapping_sub(recent) as i32) < 0;
            if known && older && data && !seg.rst() {
                chaff = NOTE_PAWS;
            } else if !older || !known {
                let in_order = if seg.syn() {
                    first_syn
                } else {
                    match flow.candidate.as_ref() {
                        Some(c) => c.streams.get(dir).is_some_and(|st| {
                            st.offset_of(c.stream_seq(dir, seg.seq))
                                .is_some_and(|o| o <= i128::from(st.next_offset()))
                        }),
                        None => {
                            flow.syn_seen & bit != 0 && flow.syn_next.get(dir) == Some(&seg.seq)
                        }
                    }
                };
                if in_order && verified {
                    if let Some(r) = flow.ts_recent.get_mut(dir) {
                        *r = tsval;
                    }
                    flow.ts_known |= bit;
                }
            }
        }
        if chaff == 0 {
            if sets_ttl {
                if let Some(r) = flow.ttl_ref.get_mut(dir) {
                    *r = seg.ttl;
                }
            }
            if seg.frag_notes != 0 && flow.candidate.is_none() {
                flow.early |= seg.frag_notes;
            }
            return true;
        }
        match chaff {
            NOTE_TTL => self.stats.ttl_insertion_dropped += 1,
            NOTE_FLAGS => self.stats.chaff_flags_dropped += 1,
            _ => self.stats.paws_dropped += 1,
        }
        match flow.candidate.as_mut() {
            Some(c) => {
                let new = (chaff | seg.frag_notes) & !c.reported;
                c.reported |= raise_notes(&mut c.session, new, seg.ts, out);
            }
            None => flow.early |= chaff | seg.frag_notes,
        }
        false
    }

    /// FIN/RST bookkeeping for flows that are not parsed: inlined, as most
    /// packets of such flows pass through here and carry neither.
    #[inline(always)]
    fn track_teardown(&mut self, i: u32, dir: usize, seg: &Segment) {
        if seg.rst() {
            return self.rst_unparsed(i, dir, seg);
        }
        let Some(f) = self.flow(i) else {
            return;
        };
        if seg.fin() {
            f.fin |= 1 << dir;
        }
        if f.fin == 3 {
            self.close(i, seg.ts);
        }
    }

    /// A SYN of a rejected flow; false if the endpoint drops the segment.
    /// A direction's first one, come after the flow was rejected (its
    /// first copy lost, or both ends opening at once), is what lingers of
    /// the flow must know: its next retransmission would otherwise be
    /// taken for a new connection on the four-tuple. One with another
    /// sequence number than the direction's SYN had is dropped, as an
    /// endpoint drops it (RFC 5961 answers it with an ACK): a FIN or RST
    /// it carries must not end the flow, or its next copy would find the
    /// flow closed and open a new one.
    #[cold]
    #[inline(never)]
    fn syn_of_rejected(&mut self, i: u32, dir: usize, seg: &Segment) -> bool {
        let Some(f) = self.flow(i) else {
            return true;
        };
        let bit = 1 << dir;
        let next = seg.seq.wrapping_add(1);
        if f.syn_seen & bit == 0 {
            f.syn_seen |= bit;
            if let Some(s) = f.syn_next.get_mut(dir) {
                *s = next;
            }
            return true;
        }
        if f.syn_next.get(dir) == Some(&next) {
            return true;
        }
        if !seg.ack_flag() {
            f.new_syn = seg.seq;
            f.new_syn_dir = dir as u8 + 1;
        }
        false
    }

    /// Flow `i`'s peer answered the new SYN it had dropped (see
    /// `Flow::new_syn`) with `seg`, a SYN-ACK: the endpoints took a new
    /// connection on the four-tuple, so the old one ended unseen (its FIN
    /// or RST lost, or never sent: a host that restarted). A live
    /// connection answers a SYN with an ACK (RFC 5961), not a SYN-ACK; but
    /// one endpoint can forge the other's SYN-ACK towards itself, where the
    /// sensor sees it and no endpoint takes it.
    /// - A rejected flow is closed, the new SYN taken as the lingering
    ///   entry takes one (a flow of its own), then `seg`: its connection is
    ///   not parsed, so nothing is lost if the SYN-ACK was forged.
    /// - A flow still parsed (or still to be judged) is kept, and the new
    ///   connection gets a twin flow beside it ([`FlowTable::open_twin`]):
    ///   ending the old flow on a forged SYN-ACK would hide the rest of a
    ///   live session.
    #[cold]
    #[inline(never)]
    fn new_connection_confirmed<B: SegmentBytes>(
        &mut self,
        i: u32,
        seg: &Segment,
        bytes: B,
        out: &mut Vec<Record>,
    ) {
        let Some(f) = self.slab.get_mut(i as usize) else {
            return;
        };
        let (key, state, from_lo) = (f.key, f.state, f.new_syn_dir == 1);
        let syn = Segment {
            seq: f.new_syn,
            ..new_syn_of(&key, from_lo, seg)
        };
        f.new_syn_dir = 0;
        let given = Given {
            tcp: None,
            payload: &[],
        };
        if state == State::Open {
            return self.open_twin(i, (&syn, from_lo), seg, bytes, out);
        }
        self.close(i, seg.ts);
        self.segment_checked(&syn, given, out);
        self.segment_checked(seg, bytes, out);
    }

    /// Gives the new connection answered by `seg` (the SYN-ACK to `syn`,
    /// sent from the `lo` end of the key when `from_lo`) a flow of its own
    /// beside open flow `i`, the old connection on its four-tuple: the two
    /// are twins, and each later packet goes to the one whose sequence
    /// numbers it is nearer ([`FlowTable::route_twin`]). Until the old
    /// flow goes (its end seen after all, its idle timeout, or the cap),
    /// the new one is not in the index; then it takes the old one's slot.
    #[cold]
    #[inline(never)]
    fn open_twin<B: SegmentBytes>(
        &mut self,
        i: u32,
        (syn, from_lo): (&Segment, bool),
        seg: &Segment,
        bytes: B,
        out: &mut Vec<Record>,
    ) {
        let given = Given {
            tcp: None,
            payload: &[],
        };
        self.make_room(seg.ts, out);
        let Some(f) = self.slab.get(i as usize).filter(|f| f.state == State::Open) else {
            // Making room evicted the old flow: the new connection gets an
            // entry as any other does.
            self.segment_checked(syn, given, out);
            return self.segment_checked(seg, bytes, out);
        };
        let (key, tag, v4, anchor) = (f.key, f.tag, f.v4, TwinAnchor::of(f));
        let t = self.new_entry(key, v4, tag, seg.ts);
        if let Some(f) = self.slab.get_mut(i as usize) {
            (f.twin_role, f.twin, f.twin_anchor) = (TWIN_INDEXED, t, anchor);
        }
        if let Some(n) = self.slab.get_mut(t as usize) {
            (n.twin_role, n.twin) = (TWIN_NEW, i);
        }
        self.twins += 1;
        self.stats.flows_reopened += 1;
        self.stats.flows_peak = self.stats.flows_peak.max(self.len() as u64);
        self.segment_of(t, usize::from(!from_lo), syn, given, out);
        let (_, dir) = FlowKey::of(seg);
        self.segment_of(t, dir, seg, bytes, out);
        // Its anchor: its two SYNs, as the pair formed.
        if let Some(n) = self.slab.get_mut(t as usize) {
            n.twin_anchor = TwinAnchor::of(n);
        }
    }

    /// Which of twin flows `i` (the indexed one) and its twin a segment
    /// from direction `dir` belongs to, by each flow's [`TwinAnchor`]: the
    /// one whose numbers its sequence number lies just after (or nearer,
    /// for a flow that never showed a direction's first byte); on a tie,
    /// by where its acknowledgement lies; on a tie of both, the older
    /// flow. `None`: the segment went to what lingers of a twin that
    /// ended.
    /// - A connection's segments lie just after its own SYN. A new
    ///   connection on a four-tuple starts above the old one's last byte
    ///   (or the server would not take it over TIME_WAIT); else both
    ///   numbers are random and far apart.
    /// - The anchors are fixed when the pair forms: routing by what the
    ///   flows saw since (the highest byte seen follows chaff; a stream's
    ///   first byte is set by the segment being routed) sent copies of one
    ///   segment to different flows.
    /// - A forged segment can only reach one of the two flows, as it could
    ///   reach one alone.
    #[cold]
    #[inline(never)]
    fn route_twin(&mut self, i: u32, dir: usize, seg: &Segment) -> Option<u32> {
        let Some(f) = self.slab.get(i as usize) else {
            return Some(i);
        };
        let here = f.twin_anchor.key(dir, seg);
        if f.twin_role >= TWIN_LEFT_NEW {
            // Anything nearer the ended twin's numbers is its stray,
            // absorbed by what lingers of it.
            let l = f.twin;
            let Some(e) = self.twin_lingering.get(&l) else {
                return Some(i);
            };
            let ended = e.anchor.key(dir, seg);
            // Ties go to the older connection, as while both were open.
            if ended < here || (ended == here && f.twin_role == TWIN_LEFT_NEW) {
                self.absorb(l, dir, seg);
                return None;
            }
            return Some(i);
        }
        let Some(n) = self.slab.get(f.twin as usize) else {
            return Some(i);
        };
        // A tie goes to the older flow: a forged SYN-ACK can give the new
        // one the same numbers, and must not draw the live session's
        // packets away.
        Some(if n.twin_anchor.key(dir, seg) < here {
            f.twin
        } else {
            i
        })
    }

    /// A RST of a flow that is not parsed. One elsewhere than where its
    /// receiver takes it ([`rst_fits_seen`]) is ignored, as by the
    /// endpoint (RFC 5961), and noted for the session the flow may still
    /// get: a forged one must not end a flow whose first payload is still
    /// to come.
    #[cold]
    #[inline(never)]
    fn rst_unparsed(&mut self, i: u32, dir: usize, seg: &Segment) {
        let Some(f) = self.flow(i) else {
            return;
        };
        if !rst_fits_seen(&f.loss, dir, seg.seq) {
            f.early |= NOTE_RST_WINDOW;
            self.stats.rst_out_of_window_dropped += 1;
            return;
        }
        self.close(i, seg.ts);
    }

    fn addrs(flow: &Flow) -> [SocketAddr; 2] {
        let k = flow.key;
        [
            SocketAddr::new(qmwatch_wire::decode::ip_from_addr(k.lo, flow.v4), k.lo_port),
            SocketAddr::new(qmwatch_wire::decode::ip_from_addr(k.hi, flow.v4), k.hi_port),
        ]
    }

    fn reject(&mut self, i: u32) {
        if let Some(f) = self.slab.get_mut(i as usize) {
            let c = f.candidate.take();
            f.state = State::Rejected;
            self.stats.flows_rejected += 1;
            if let Some(c) = c {
                self.release(c);
            }
        }
    }

    /// A segment of an open flow that passed the checksum and chaff checks:
    /// SYN bookkeeping, then, for a flow without a session, the admission
    /// of its first payload; then the candidate's reassembly and session.
    #[inline(always)]
    fn open_segment(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        payload: &[u8],
        urgent: Option<u32>,
        out: &mut Vec<Record>,
    ) {
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return;
        };
        if seg.syn() {
            if flow.client_dir.is_none() {
                flow.client_dir = Some(if seg.ack_flag() {
                    1 - dir as u8
                } else {
                    dir as u8
                });
            }
            flow.syn_seen |= 1 << dir;
            if let Some(s) = flow.syn_next.get_mut(dir) {
                *s = seg.seq.wrapping_add(1);
            }
        }
        if flow.candidate.is_none() {
            if payload.is_empty() && seg.missing == 0 {
                return self.track_teardown(i, dir, seg);
            }
            if !self.admit_first_payload(i, dir, seg, payload, urgent, out) {
                // A FIN or RST on the bytes that judged the flow ends it as a
                // bare one would: short exchanges often close that way (an
                // answer sent with its FIN), and the entry would otherwise
                // wait out the idle timeout.
                return self.track_teardown(i, dir, seg);
            }
        }
        self.feed_candidate(i, dir, seg, payload, urgent, out);
    }

    /// The first payload of flow `i` without a session: the protocol layer
    /// judges it (admission), without allocating. True: the flow is now a
    /// candidate, to be fed these bytes; false: rejected, or waiting for the
    /// server's answer (its sample kept either way).
    #[inline]
    fn admit_first_payload(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        payload: &[u8],
        urgent: Option<u32>,
        out: &mut Vec<Record>,
    ) -> bool {
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return false;
        };
        // Whether it is the stream's first byte is the flow table's to say:
        // mid-stream flows (no SYN seen) get the session's resync attempts
        // instead, their first bytes may be mid-message.
        let at_start = flow.syn_seen != 0
            && (flow.syn_seen & (1 << dir) == 0
                || flow.syn_next.get(dir).copied() == Some(seg.seq));
        let k = flow.key;
        let port_known = |p: u16| {
            self.known_ports
                .get(usize::from(p >> 6))
                .is_some_and(|w| w & (1 << (p & 63)) != 0)
        };
        let known_as = |a: Addr, p: u16| {
            if port_known(p) {
                self.known_servers.get(&(a, p)).copied()
            } else {
                None
            }
        };
        let known_protocol = known_as(k.lo, k.lo_port).or_else(|| known_as(k.hi, k.hi_port));
        let from_client = flow.client_dir == Some(dir as u8);
        if flow.client_sample_len > 0 && from_client {
            // Waiting for the server's answer to a non-QMTP/QMQP client.
            self.first_bytes_again(i, dir, seg, payload, out);
            return false;
        }
        let mut buf = [0u8; 64];
        if urgent.is_some() {
            flow.early |= NOTE_URGENT;
        }
        let bytes = without_urgent(payload, urgent, &mut buf);
        let first = FirstPayload {
            bytes,
            ports: [k.lo_port, k.hi_port],
            at_stream_start: at_start,
            from_client,
            known_server: known_protocol.is_some(),
        };
        match admission::probe(&first) {
            Admission::Candidate => {}
            // Either way the judgement rests on these bytes: keep them
            // (see `first_bytes_again`). Waiting for the server costs no
            // allocation either.
            Admission::AwaitServer => {
                flow.keep_sample(dir, seg, payload);
                return false;
            }
            Admission::Reject => {
                flow.keep_sample(dir, seg, payload);
                self.reject(i);
                return false;
            }
        }
        self.start_candidate(i, seg, known_protocol, out);
        true
    }

    /// Gives a flow that may be QMTP/QMQP its reassembly and session state.
    /// Out of line (rare next to the segments that pass through the open
    /// path), so that its frame and registers do not weigh on them.
    #[cold]
    #[inline(never)]
    fn start_candidate(
        &mut self,
        i: u32,
        seg: &Segment,
        known_protocol: Option<Protocol>,
        out: &mut Vec<Record>,
    ) {
        {
            let Some(flow) = self.slab.get_mut(i as usize) else {
                return;
            };
            let addrs = Self::addrs(flow);
            let midstream = flow.syn_seen == 0;
            let mut session = Session::new(addrs, flow.client_dir.map(usize::from), midstream);
            if let Some(p) = known_protocol {
                session.set_known_server_protocol(p);
            }
            if flow.bad_csum_early > 0 {
                session.anomaly(BAD_CSUM, BAD_CSUM_DETAIL.into(), seg.ts, out);
            }
            // This segment's own notes are raised when it is fed below.
            if flow.early & !seg.frag_notes & NOTE_FRAG_CONFLICT != 0 {
                session.anomaly(FRAG_CONFLICT, FRAG_CONFLICT_DETAIL.into(), seg.ts, out);
            }
            let reported = raise_notes(&mut session, flow.early, seg.ts, out);
            if flow.client_sample_len > 0 {
                let n = usize::from(flow.client_sample_len);
                let sample = flow.client_sample.get(..n).unwrap_or_default();
                session.client_spoke_other(sample, flow.client_sample_ts);
            }
            // Streams of an ended candidate are reset when it ends.
            let mut c = match self.spare.pop() {
                Some(mut c) => {
                    c.session = session;
                    c.accounted = 0;
                    c.reported = reported;
                    c.urgent = None;
                    c
                }
                None => Box::new(Candidate {
                    streams: [Stream::default(), Stream::default()],
                    session,
                    accounted: 0,
                    reported,
                    urgent: None,
                }),
            };
            for (d, st) in c.streams.iter_mut().enumerate() {
                if flow.syn_seen & (1 << d) != 0 {
                    if let Some(&n) = flow.syn_next.get(d) {
                        st.syn(n.wrapping_sub(1));
                    }
                }
            }
            flow.candidate = Some(c);
            self.stats.flows_candidate += 1;
        }
    }

    /// A segment of a candidate flow: its fragment notes, reassembly and
    /// the session ([`Candidate::reassemble`]), FIN and RST bookkeeping,
    /// the worker's memory accounting, then what the session or the caps
    /// decided for the flow ([`FlowTable::settle_candidate`]).
    // Always inlined into the per-packet path, its one caller: out of line
    // (the compiler's choice flipped with unrelated edits) a worker ran 2 %
    // more instructions on dense QMTP.
    #[inline(always)]
    fn feed_candidate(
        &mut self,
        i: u32,
        dir: usize,
        seg: &Segment,
        payload: &[u8],
        urgent: Option<u32>,
        out: &mut Vec<Record>,
    ) {
        let cfg = self.cfg.reassembly;
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return;
        };
        let Some(cand) = flow.candidate.as_mut() else {
            return;
        };
        let first_new = out.len();
        cand.raise_fragment_notes(seg, out);
        if let Some(k) = urgent {
            cand.take_out_urgent(dir, seg, k, out);
        }
        let (status, ev) = cand.reassemble(dir, seg, payload, &cfg, &mut self.budget, out);
        // Rejected on bytes that include this direction's first ones (its
        // stream starts with this segment): keep them, as admission keeps
        // the bytes it rejects a flow on, so that another copy of them
        // with other content is noticed (`first_bytes_again`). Chaff with a
        // right checksum ahead of a server's first reply would otherwise
        // end the flow without a word.
        let keep = status == Status::Reject
            && !payload.is_empty()
            && cand
                .streams
                .get(dir)
                .and_then(|s| s.offset_of(cand.stream_seq(dir, seg.seq)))
                == Some(0);
        if seg.fin() {
            flow.fin |= 1 << dir;
        }
        let rst_ok = seg.rst() && cand.rst_fits(dir, seg, &flow.loss, out);
        // Both directions sent their FIN.
        let both_done = flow.fin == 3;
        let now = cand.session.stored_bytes();
        let before = std::mem::replace(&mut cand.accounted, now);
        if keep {
            flow.keep_sample(dir, seg, payload);
        }
        self.account(before, now, &ev);
        self.note_services(out.get(first_new..).unwrap_or_default());
        self.settle_candidate(i, status, rst_ok || both_done, seg.ts, out);
    }

    /// Keeps the worker's count of session memory (a session went from
    /// `before` to `now` stored bytes) and its peaks current, and counts
    /// a segment's reassembly events.
    fn account(&mut self, before: usize, now: usize, ev: &StreamEvents) {
        self.session_bytes = self
            .session_bytes
            .saturating_sub(before)
            .saturating_add(now);
        self.stats.session_bytes_peak =
            self.stats.session_bytes_peak.max(self.session_bytes as u64);
        merge_events(&mut self.stats.reassembly, ev);
        self.stats.held_bytes_peak = self.stats.held_bytes_peak.max(self.budget.peak as u64);
    }

    /// Acts on what feeding a segment to candidate `i` decided: a flow the
    /// session rejected keeps only its cheap entry (its evasion signs are
    /// reported); one over the worker's session memory cap is reported as
    /// far as it got and no longer followed; one that `ended` (a RST that
    /// fits, or FIN both ways) is finished and closed, whichever of the
    /// other two happened on the same segment: left open, a flow reset on
    /// the bytes that rejected it waited out the idle timeout, and swallowed
    /// what came on its four-tuple after.
    // Always inlined into `feed_candidate`, its one caller, for the same
    // reason as `Candidate::reassemble`.
    #[inline(always)]
    fn settle_candidate(
        &mut self,
        i: u32,
        status: Status,
        ended: bool,
        ts: u64,
        out: &mut Vec<Record>,
    ) {
        let dropped = if status == Status::Reject {
            if let Some(c) = self
                .slab
                .get_mut(i as usize)
                .and_then(|f| f.candidate.as_mut())
            {
                for a in c.session.take_evasion_signs() {
                    out.push(Record::Anomaly(Box::new(a)));
                }
            }
            true
        } else if self.session_bytes > self.cfg.session_memory {
            if let Some(c) = self
                .slab
                .get_mut(i as usize)
                .and_then(|f| f.candidate.as_mut())
            {
                c.session.anomaly(
                    AnomalyKind::SessionMemoryCap,
                    format!(
                        "session state cap of {} bytes reached; session no longer followed",
                        self.cfg.session_memory
                    ),
                    ts,
                    out,
                );
            }
            self.stats.sessions_dropped_memcap += 1;
            self.finish_flow(i, ts, out);
            true
        } else {
            false
        };
        if dropped {
            self.reject(i);
        } else if ended {
            self.finish_flow(i, ts, out);
        }
        if ended {
            self.close(i, ts);
        }
    }

    /// Remembers the servers of the services among `new`, the records one
    /// flow just produced (each looked at once: a service is confirmed once
    /// per session, and anomalies held until then follow it).
    fn note_services(&mut self, new: &[Record]) {
        for r in new {
            if let Record::Service {
                endpoints,
                protocol,
                ..
            } = r
            {
                let ip = qmwatch_wire::decode::addr_from_ip(endpoints.server.ip());
                let port = endpoints.server.port();
                if self.known_servers.len() >= MAX_KNOWN_SERVERS {
                    if !self.known_servers.contains_key(&(ip, port)) {
                        self.stats.known_servers_not_remembered += 1;
                    }
                    continue;
                }
                // The first protocol confirmed stays the server's.
                self.known_servers.entry((ip, port)).or_insert(*protocol);
                if let Some(w) = self.known_ports.get_mut(usize::from(port >> 6)) {
                    *w |= 1 << (port & 63);
                }
            }
        }
    }

    /// Reports everything a flow still holds (end of flow, timeout, eviction).
    fn finish_flow(&mut self, i: u32, ts: u64, out: &mut Vec<Record>) {
        let cfg = self.cfg.reassembly;
        let budget = &mut self.budget;
        let Some(flow) = self.slab.get_mut(i as usize) else {
            return;
        };
        let Some(mut cand) = flow.candidate.take() else {
            return;
        };
        let first_new = out.len();
        let Candidate {
            streams,
            session,
            accounted,
            ..
        } = &mut *cand;
        let mut ev = StreamEvents::default();
        for (dir, st) in streams.iter_mut().enumerate() {
            let mut status = Status::Continue;
            let mut deliver =
                |d: Delivery<'_>| hand_over(session, &mut status, dir, d, ts, None, out);
            st.flush(&cfg, budget, &mut ev, &mut deliver);
            st.reset(budget);
        }
        session.finish(ts, out);
        self.session_bytes = self.session_bytes.saturating_sub(*accounted);
        let c = session.counters;
        self.stats.replies_to_unseen_requests += c.replies_to_unseen_requests;
        self.stats.anomalies_dropped_unconfirmed += c.anomalies_dropped_unconfirmed;
        self.stats.requests_dropped_unconfirmed += c.requests_dropped_unconfirmed;
        merge_events(&mut self.stats.reassembly, &ev);
        self.note_services(out.get(first_new..).unwrap_or_default());
        keep_spare(&mut self.spare, cand);
    }

    /// Finishes flows idle past their timeout at packet time `now`.
    pub fn expire(&mut self, now: u64, out: &mut Vec<Record>) {
        let linger = self.cfg.closed_linger_ns;
        while let Some(&c) = self.closed.front() {
            if c.at.saturating_add(linger) >= now {
                break;
            }
            if let Some(a) = self.closed.get(CLOSED_PREFETCH_AHEAD) {
                let l = self.lingering.as_ptr().wrapping_add(a.flow as usize);
                prefetch::prefetch(l.cast::<u8>());
                prefetch::prefetch(self.index.bucket_ptr(a.tag));
            }
            self.closed.pop_front();
            match self.lingering.get(c.flow as usize) {
                // Packets came after it closed: it lingers from the last
                // (a replaced entry gets none).
                Some(e) if !e.replaced && e.last_seen.saturating_add(linger) >= now => {
                    let at = e.last_seen;
                    self.closed.push_back(ClosedEntry { at, ..c });
                }
                Some(_) => self.remove_lingering(c.flow),
                None => {}
            }
        }
        // The open list is in `queued` order: once its head was queued
        // within the timeout, no entry can have been idle that long. An
        // entry active since it was queued goes to the tail (at most once
        // per timeout), so this stays cheap per packet.
        let idle = self.cfg.idle_timeout_ns;
        loop {
            let h = self.head;
            let Some(f) = self.slab.get_mut(h as usize) else {
                break;
            };
            if f.queued.saturating_add(idle) >= now {
                break;
            }
            if f.last_seen.saturating_add(idle) < now {
                self.stats.flows_timed_out += 1;
                self.finish_flow(h, now, out);
                self.remove(h);
            } else {
                f.queued = f.last_seen;
                self.requeue(h);
            }
        }
    }

    /// Moves an open entry to the tail of the open list.
    fn requeue(&mut self, i: u32) {
        self.unlink(i);
        self.push_tail(i);
    }

    /// The open flow to evict when the table is full: the head of the open
    /// list, after re-queueing a few heads that were active since they were
    /// queued (a bounded search: the result approximates the least recently
    /// active flow).
    fn least_recent_open(&mut self) -> u32 {
        for _ in 0..8 {
            let h = self.head;
            match self.slab.get_mut(h as usize) {
                Some(f) if f.last_seen > f.queued && self.tail != h => {
                    f.queued = f.last_seen;
                    self.requeue(h);
                }
                _ => break,
            }
        }
        self.head
    }

    /// End of input: every open flow is finished and reported.
    pub fn finish_all(&mut self, out: &mut Vec<Record>) {
        let mut order = Vec::new();
        let mut i = self.head;
        while let Some(f) = self.slab.get(i as usize) {
            // Only a flow with a session has anything to report.
            if f.candidate.is_some() {
                order.push((i, f.last_seen));
            }
            i = f.next;
        }
        // Least recently active first (the list is in queued order).
        order.sort_by_key(|&(_, ts)| ts);
        for (i, ts) in order {
            self.finish_flow(i, ts, out);
        }
        // Nothing is looked up after the end of input, so the entries go all
        // at once (`finish_flow` gave each candidate back). Removed one by
        // one, each shifted its run of index slots and the index shrank in
        // steps as it emptied: half of a worker's instructions on a capture
        // that ends with many flows open, as a scan's unanswered SYNs leave.
        self.index = FlowIndex::new();
        self.slab.clear();
        self.free.clear();
        (self.head, self.tail) = (NIL, NIL);
        self.closed.clear();
        self.lingering.clear();
        self.lingering_free.clear();
        self.replaced = 0;
        self.twins = 0;
        self.twin_lingering.clear();
    }
}

/// A SYN (its sequence number left 0) of `key`'s connection from its `lo`
/// end when `from_lo`, else from its `hi` end, at the time of `seg`: the
/// new SYN a flow dropped and recorded, taken again.
fn new_syn_of(key: &FlowKey, from_lo: bool, seg: &Segment) -> Segment {
    let (src, sport, dst, dport) = if from_lo {
        (key.lo, key.lo_port, key.hi, key.hi_port)
    } else {
        (key.hi, key.hi_port, key.lo, key.lo_port)
    };
    Segment {
        ts: seg.ts,
        src,
        dst,
        v4: seg.v4,
        sport,
        dport,
        flags: TCP_SYN,
        flow_tag: seg.flow_tag,
        ..Segment::default()
    }
}

/// Whether a RST with sequence number `seq` from direction `dir` is one
/// its receiver takes, judged from what the sensor saw of the flow: at the
/// byte after the last the sender was seen to send (its SYN and FIN count
/// one) or at the last one its peer acknowledged, or one before either (as
/// some stacks send after their FIN). RFC 5961 receivers take a RST only at
/// the next byte they expect and answer any other with an ACK, so one
/// elsewhere, even within the window, must not end the flow: the sender
/// itself could forge it to hide the rest of the connection. A flow that
/// shows neither gives nothing to judge by: its RST is taken.
fn rst_fits_seen(loss: &LossTrack, dir: usize, seq: u32) -> bool {
    let known = [loss.next_seq(dir), loss.acked_by(1 - (dir & 1))];
    if known.iter().all(Option::is_none) {
        return true;
    }
    known
        .into_iter()
        .flatten()
        .any(|n| seq == n || seq == n.wrapping_sub(1))
}

/// Keeps ended candidate `c` (its streams reset) for a new candidate,
/// unless enough are kept. Its session's copied state is freed now.
#[allow(clippy::vec_box)] // See `FlowTable::spare`.
fn keep_spare(spare: &mut Vec<Box<Candidate>>, mut c: Box<Candidate>) {
    if spare.len() < SPARE_CANDIDATES {
        c.session = Session::new([SocketAddr::from(([0, 0, 0, 0], 0)); 2], None, false);
        spare.push(c);
    }
}

/// Puts `item` in a place of `v` that `free` lists, else at its end, and
/// returns its position.
#[inline]
fn take_place<T>(v: &mut Vec<T>, free: &mut Vec<u32>, item: T) -> u32 {
    if let Some(slot) = free.pop().and_then(|i| Some(i).zip(v.get_mut(i as usize))) {
        *slot.1 = item;
        return slot.0;
    }
    v.push(item);
    (v.len() - 1) as u32
}

/// Raises the once-per-flow anomalies of `notes` (`NOTE_*` bits); returns
/// the bits raised.
fn raise_notes(session: &mut Session, notes: u8, ts: u64, out: &mut Vec<Record>) -> u8 {
    let mut raised = 0;
    for (bit, kind, detail) in NOTES {
        if notes & bit != 0 {
            session.anomaly(kind, detail.into(), ts, out);
            raised |= bit;
        }
    }
    raised
}

/// `payload` as the server reads it, for judging a flow by its first
/// bytes: without the urgent byte `urgent` bytes in, if there is one
/// (its first 64 bytes then, copied to `buf`: enough to tell, and too few
/// to tell make a candidate).
fn without_urgent<'a>(payload: &'a [u8], urgent: Option<u32>, buf: &'a mut [u8; 64]) -> &'a [u8] {
    let Some(u) = urgent else {
        return payload;
    };
    let rest = payload
        .iter()
        .enumerate()
        .filter(|&(n, _)| n as u64 != u64::from(u));
    let mut n = 0;
    for (slot, (_, &b)) in buf.iter_mut().zip(rest) {
        *slot = b;
        n += 1;
    }
    buf.get(..n).unwrap_or_default()
}

/// Of a flow's urgent bytes (if any were taken out), direction `dir`'s,
/// and `ack` (sent by `dir`) as the other direction's stream counts it:
/// without the urgent bytes taken out of that stream.
#[inline(always)]
fn urgent_view(urgent: Option<&[Urgent; 2]>, dir: usize, ack: u32) -> (Option<&Urgent>, u32) {
    match urgent {
        None => (None, ack),
        Some(u) => (u.get(dir), u.get(1 - dir).map_or(ack, |p| p.map(ack))),
    }
}

/// Where `seg`'s urgent byte lies ([`Segment::urgent_at`]); its header
/// bytes `tcp` are read only for a segment with URG set.
#[inline(always)]
fn urgent_of(seg: &Segment, tcp: Option<&[u8]>) -> Option<u32> {
    if seg.flags & TCP_URG == 0 {
        return None;
    }
    tcp.and_then(|t| seg.urgent_at(t))
}

/// Feeds a segment of one direction to its stream `mine`: whole, or, when
/// the direction has urgent bytes taken out (`urgent`), without them, in
/// pieces that meet end to end on the stream (the SYN on the first, the
/// FIN and the uncaptured tail on the last). True when the stream ended.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn feed_stream<F: FnMut(Delivery<'_>)>(
    mine: &mut Stream,
    urgent: Option<&Urgent>,
    seg: &Segment,
    payload: &[u8],
    cfg: &ReassemblyConfig,
    budget: &mut Budget,
    ev: &mut StreamEvents,
    deliver: &mut F,
) -> bool {
    let Some(urgent) = urgent else {
        let whole = StreamSegment {
            seq: seg.seq,
            syn: seg.syn(),
            fin: seg.fin(),
            payload,
            missing: seg.missing,
        };
        return mine.segment(whole, cfg, budget, ev, deliver);
    };
    let data_seq = seg.seq.wrapping_add(u32::from(seg.syn()));
    let pieces = urgent.pieces(data_seq, payload.len());
    // Urgent bytes in the uncaptured tail are not in it either.
    let tail = data_seq.wrapping_add(payload.len() as u32);
    let missing = seg
        .missing
        .saturating_sub(urgent.count_in(tail, seg.missing));
    let last = pieces.as_slice().len().saturating_sub(1);
    let mut ended = false;
    for (n, &(from, to)) in pieces.as_slice().iter().enumerate() {
        let syn = n == 0 && seg.syn();
        let at = data_seq.wrapping_add(from as u32);
        let piece = StreamSegment {
            seq: urgent.map(if syn { seg.seq } else { at }),
            syn,
            fin: n == last && seg.fin(),
            payload: payload.get(from..to).unwrap_or_default(),
            missing: if n == last { missing } else { 0 },
        };
        ended |= mine.segment(piece, cfg, budget, ev, deliver);
    }
    ended
}

/// Hands one delivery of direction `dir` to the session, unless the session
/// already rejected the flow.
fn hand_over(
    session: &mut Session,
    status: &mut Status,
    dir: usize,
    d: Delivery<'_>,
    ts: u64,
    peer_ack: Option<u64>,
    out: &mut Vec<Record>,
) {
    if *status == Status::Reject {
        return;
    }
    *status = match d {
        Delivery::Data { offset, bytes } => session.data(dir, offset, bytes, ts, peer_ack, out),
        Delivery::Gap { len, .. } => session.gap(dir, len, ts, out),
        Delivery::Skip { len, .. } => session.skip(dir, len, ts, out),
    };
}

fn merge_events(a: &mut StreamEvents, b: &StreamEvents) {
    a.overlaps_consistent += b.overlaps_consistent;
    a.overlaps_conflicting += b.overlaps_conflicting;
    a.overlaps_unverified += b.overlaps_unverified;
    a.out_of_window += b.out_of_window;
    a.gaps += b.gaps;
    a.gap_bytes += b.gap_bytes;
    a.cap_gaps += b.cap_gaps;
}

#[cfg(test)]
mod tests;
