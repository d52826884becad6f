//! Per-direction TCP stream reassembly.
//!
//! Owns: turning one direction's segments, in whatever order, duplication and
//! overlap the capture holds them, into the ordered byte stream the endpoint
//! received, delivered as [`Delivery::Data`] (borrowed from the packet when it
//! is in order) and [`Delivery::Gap`] (bytes that will never be seen).
//!
//! Policy (documented in docs/architecture.md):
//! - **First data wins.** Bytes already delivered, or already held out of
//!   order, are never replaced by a later segment. Where a later segment
//!   covers the same bytes with *different* content, that is counted as a
//!   conflicting overlap (an insertion/evasion attempt); equal content is a
//!   plain retransmission. Already delivered bytes are compared against a
//!   small window of recent bytes ([`ReassemblyConfig::recent_window`]).
//!   Inside a message body the parser skips, the window keeps only the
//!   first and last [`BODY_SAMPLE`] bytes of each delivered run: copying
//!   every body byte into the window read all of a large message, which
//!   nothing else reads, and was the largest cost of a stream of large
//!   messages (a worker's first read of a payload line is a cache miss;
//!   the worker prefetches a segment's first and last lines ahead). A
//!   retransmission there is compared at the samples it covers (unverified
//!   if it covers none): a copy with other bytes that starts or ends where
//!   the first did, as chaff does, is caught; a body's bytes change no
//!   finding.
//! - Sequence numbers wrap; offsets are 64-bit from the first byte seen.
//! - Out-of-order bytes are held up to a per-stream and a per-worker cap,
//!   both in bytes: each held piece is charged its bytes plus
//!   [`PIECE_COST`], so tiny segments cost what they really take. When a cap
//!   would be passed, the hole before the held data is declared a gap and
//!   everything held is delivered.
//! - Bytes the parser has said it will skip ([`Stream::set_skip`]: the rest
//!   of a message body) are not stored when they arrive out of order: only
//!   the range they cover is kept, and it is handed over as
//!   [`Delivery::Skip`]. A large message in tiny segments in any order costs
//!   a few bytes per hole, not its size.
//! - A hole is also declared a gap when the receiver acknowledges past it (the
//!   bytes were received but the sensor lost them) and at the end of the flow.
//!
//! Must not: allocate by anything but bytes actually held (never by a sequence
//! distance), hold more than its caps, or know about protocols.

use std::collections::VecDeque;

/// Limits of one stream.
#[derive(Clone, Copy, Debug)]
pub struct ReassemblyConfig {
    /// Out-of-order bytes held per stream.
    pub max_held_bytes: usize,
    /// Out-of-order pieces held per stream: a backstop only, memory is
    /// bounded by `max_held_bytes` (each piece is charged [`PIECE_COST`]).
    pub max_held_pieces: usize,
    /// Recently delivered bytes kept to check retransmissions (0: off).
    pub recent_window: usize,
    /// Segments further than this ahead of the stream are ignored.
    pub max_ahead: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_held_bytes: 256 * 1024,
            max_held_pieces: 65_536,
            recent_window: 2048,
            max_ahead: 64 * 1024 * 1024,
        }
    }
}

/// Bytes of a skipped body remembered at the start and at the end of
/// each delivered run (see the module docs).
pub const BODY_SAMPLE: u64 = 16;
/// A delivered body run shorter than this is remembered whole: it spans
/// few cache lines, and sampling would save nothing.
const BODY_SPARSE_MIN: u64 = 256;

/// What holding one out-of-order piece costs besides its bytes (its entry
/// and allocation), charged against the caps.
pub const PIECE_COST: usize = 48;
/// A reset stream keeps its list of out-of-order pieces only up to this
/// room ([`Stream::reset`]).
const KEPT_PIECES: usize = 32;

/// Out-of-order bytes held by all streams of one worker.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub held: usize,
    pub cap: usize,
    pub peak: usize,
}

impl Budget {
    pub fn new(cap: usize) -> Self {
        Budget {
            held: 0,
            cap,
            peak: 0,
        }
    }
    fn take(&mut self, n: usize) -> bool {
        match self.held.checked_add(n) {
            Some(t) if t <= self.cap => {
                self.held = t;
                self.peak = self.peak.max(t);
                true
            }
            _ => false,
        }
    }
    fn give(&mut self, n: usize) {
        self.held = self.held.saturating_sub(n);
    }
}

/// What the stream hands to the protocol layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    Data {
        offset: u64,
        bytes: &'a [u8],
    },
    Gap {
        offset: u64,
        len: u64,
    },
    /// Bytes that arrived, inside a range the parser said it skips
    /// ([`Stream::set_skip`]); their content was not kept.
    Skip {
        offset: u64,
        len: u64,
    },
}

/// Things worth counting or reporting that reassembly saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamEvents {
    pub overlaps_consistent: u64,
    pub overlaps_conflicting: u64,
    /// Overlap with bytes older than the recent window, or only with body
    /// bytes that were not sampled: could not be checked.
    pub overlaps_unverified: u64,
    pub out_of_window: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Gaps declared because a cap was reached.
    pub cap_gaps: u64,
}

/// One TCP segment as a stream's reassembly needs it.
#[derive(Clone, Copy, Debug)]
pub struct StreamSegment<'a> {
    /// The segment's sequence number (its SYN's, when it carries one).
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    /// The payload as captured.
    pub payload: &'a [u8],
    /// Payload bytes that were on the wire but not captured (snap length).
    pub missing: u32,
}

impl<'a> StreamSegment<'a> {
    /// A segment of data alone (no SYN or FIN), captured whole.
    pub fn data(seq: u32, payload: &'a [u8]) -> Self {
        StreamSegment {
            seq,
            syn: false,
            fin: false,
            payload,
            missing: 0,
        }
    }
}

/// An out-of-order piece: its bytes, or only its extent when it lies in a
/// range the parser skips (`data` empty).
#[derive(Clone, Debug)]
struct Held {
    offset: u64,
    len: u64,
    data: Vec<u8>,
}

impl Held {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
    fn skipped(&self) -> bool {
        self.data.is_empty()
    }
    /// What the piece is charged against the caps.
    fn cost(&self) -> usize {
        self.data.len() + PIECE_COST
    }
}

/// One direction of a TCP connection.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    started: bool,
    /// Sequence number of stream offset 0.
    base: u32,
    /// Next offset to deliver.
    next: u64,
    held: VecDeque<Held>,
    /// What `held` is charged (bytes plus [`PIECE_COST`] per piece).
    held_bytes: usize,
    /// Offsets `[skip.0, skip.1)` lie in a message body the parser skips.
    skip: (u64, u64),
    fin: Option<u64>,
    /// Ring of the last delivered bytes: byte at offset `o` sits at
    /// `o % ring`. It grows as bytes are written (the window is not
    /// zero-filled up front, as most streams never fill it): a position at
    /// or past its length was never written and reads as zero.
    recent: Vec<u8>,
    /// The ring's size: the configured window once a byte was remembered,
    /// 0 before (nothing to check a retransmission against).
    ring: usize,
    /// Offsets before this are not in `recent` (gap or before the start).
    recent_from: u64,
    /// Bit p (of word p / 64): ring position p holds the byte last
    /// delivered at an offset that maps there. Clear where it was never
    /// written and where a body was remembered only by its samples.
    remembered: Vec<u64>,
}

impl Stream {
    pub fn started(&self) -> bool {
        self.started
    }

    /// True when no out-of-order piece is held.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.held.is_empty()
    }

    /// The end of the farthest piece held out of order, if any is.
    pub(crate) fn held_end(&self) -> Option<u64> {
        self.held.iter().map(Held::end).max()
    }

    /// Next stream offset the endpoint expects.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// True once every byte up to the FIN was delivered.
    pub fn finished(&self) -> bool {
        matches!(self.fin, Some(f) if self.next >= f)
    }

    /// What the held pieces are charged: their bytes plus [`PIECE_COST`]
    /// each.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Pieces held out of order.
    pub fn held_pieces(&self) -> usize {
        self.held.len()
    }

    /// The parser will skip stream offsets `[from, to)` (the rest of a
    /// message body) without looking at them: out-of-order bytes there need
    /// not be stored.
    pub(crate) fn set_skip(&mut self, from: u64, to: u64) {
        self.skip = (from, to);
    }

    /// The sequence number of the stream's first byte, once it started.
    pub(crate) fn first_seq(&self) -> Option<u32> {
        self.started.then_some(self.base)
    }

    /// Starts the stream at a SYN: data begins at `seq + 1`.
    pub fn syn(&mut self, seq: u32) {
        if !self.started {
            self.started = true;
            self.base = seq.wrapping_add(1);
            self.next = 0;
        }
    }

    /// Stream offset of sequence number `seq`, if it is plausibly near the
    /// stream (within 2 GiB either way); `None` before the stream started.
    pub(crate) fn offset_of(&self, seq: u32) -> Option<i128> {
        if !self.started {
            return None;
        }
        let next_seq = self.base.wrapping_add(self.next as u32);
        let rel = seq.wrapping_sub(next_seq) as i32;
        Some(i128::from(self.next) + i128::from(rel))
    }

    /// Stream offset acknowledged by the peer's `ack`, for reply matching.
    pub(crate) fn acked_offset(&self, ack: u32) -> Option<u64> {
        self.offset_of(ack).and_then(|o| u64::try_from(o).ok())
    }

    /// Feeds one segment. Returns true when this call completed the stream
    /// (FIN reached).
    pub fn segment<F: FnMut(Delivery<'_>)>(
        &mut self,
        seg: StreamSegment<'_>,
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) -> bool {
        let StreamSegment {
            seq,
            syn,
            fin,
            payload,
            missing,
        } = seg;
        let was_finished = self.finished();
        if syn {
            self.syn(seq);
        }
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if !self.started {
            // Picked up mid-stream: the first byte seen is offset 0.
            self.started = true;
            self.base = data_seq;
            self.next = 0;
            self.recent_from = 0;
        }
        let Some(start) = self.offset_of(data_seq) else {
            return false;
        };
        let len = payload.len() as u64 + u64::from(missing);
        let end = start + i128::from(len);
        let next = i128::from(self.next);
        if start > next + i128::from(cfg.max_ahead) || end < 0 {
            ev.out_of_window += 1;
            return false;
        }
        if fin {
            if let Ok(f) = u64::try_from(end) {
                if self.fin.is_none() {
                    self.fin = Some(f);
                }
            }
        }
        if len > 0 {
            if end <= next {
                // Entirely old: a retransmission of delivered bytes.
                self.check_delivered(start, payload, ev);
            } else if start > next {
                let start = start as u64;
                self.hold(start, payload, cfg, budget, ev, deliver);
            } else {
                // In order, perhaps overlapping delivered bytes at its front
                // (picked up mid-stream, even bytes before offset 0: cut).
                // Starting at the next byte (nearly always), it overlaps
                // nothing delivered.
                if start < next {
                    self.check_delivered(start, payload, ev);
                }
                let before = u64::try_from(-start).unwrap_or(0);
                let cut = usize::try_from(before).map_or(payload.len(), |c| c.min(payload.len()));
                let missing =
                    missing.saturating_sub(u32::try_from(before - cut as u64).unwrap_or(u32::MAX));
                let start = start.max(0) as u64;
                let skip = self.next - start;
                self.deliver_from(
                    start,
                    skip,
                    payload.get(cut..).unwrap_or_default(),
                    missing,
                    cfg,
                    budget,
                    ev,
                    deliver,
                );
            }
        }
        !was_finished && self.finished()
    }

    /// Compares the part of `payload` (starting at `start`) that lies before
    /// `self.next` with the recent window.
    fn check_delivered(&self, start: i128, payload: &[u8], ev: &mut StreamEvents) {
        let next = i128::from(self.next);
        let from = start.max(0).max(i128::from(self.recent_from));
        let w = self.ring as i128;
        let window_from = (next - w).max(i128::from(self.recent_from));
        let upto = next.min(start + payload.len() as i128);
        if upto <= start.max(0) {
            return;
        }
        if from < window_from || w == 0 {
            ev.overlaps_unverified += 1;
            if from >= upto {
                return;
            }
        }
        let from = from.max(window_from);
        if from >= upto {
            return;
        }
        let mut differs = false;
        let mut compared = 0usize;
        let mut o = from;
        'runs: while o < upto {
            let ring_i = (o % w) as usize;
            let pay_i = (o - start) as usize;
            // The longest run that does not wrap the ring, compared where
            // the ring remembers its bytes.
            let run = ((upto - o) as usize).min(self.ring - ring_i);
            let mut p = ring_i;
            while p < ring_i + run {
                let held = bit(&self.remembered, p);
                let q = next_change(&self.remembered, p, ring_i + run, held);
                if held {
                    let b = payload.get(pay_i + (p - ring_i)..pay_i + (q - ring_i));
                    if !b.is_some_and(|b| ring_matches(&self.recent, p, b)) {
                        differs = true;
                        break 'runs;
                    }
                    compared += q - p;
                }
                p = q;
            }
            o += run as i128;
        }
        if differs {
            ev.overlaps_conflicting += 1;
        } else if compared > 0 {
            ev.overlaps_consistent += 1;
        } else {
            ev.overlaps_unverified += 1;
        }
    }

    /// Keeps delivered `bytes` (at stream `offset`) in the ring: whole,
    /// but for the part in the body the parser skips, which only leaves its
    /// samples (see the module docs).
    fn remember(&mut self, offset: u64, bytes: &[u8], cfg: &ReassemblyConfig) {
        if cfg.recent_window == 0 || bytes.is_empty() {
            return;
        }
        if self.ring != cfg.recent_window {
            // In the buffers of an earlier stream where there are some
            // ([`Stream::reset`]).
            self.ring = cfg.recent_window;
            self.recent.clear();
            self.recent.reserve_exact(self.ring);
            self.remembered.clear();
            self.remembered.resize(self.ring.div_ceil(64), 0);
        }
        // Only the last `ring` bytes can stay in the ring.
        let w = self.ring;
        let (offset, bytes) = if bytes.len() > w {
            let cut = bytes.len() - w;
            (offset + cut as u64, bytes.get(cut..).unwrap_or_default())
        } else {
            (offset, bytes)
        };
        let end = offset + bytes.len() as u64;
        let (body_from, body_to) = (offset.max(self.skip.0), end.min(self.skip.1));
        if body_to < body_from.saturating_add(BODY_SPARSE_MIN) {
            self.remember_whole(offset, bytes);
            return;
        }
        let part = |from: u64, to: u64| {
            bytes
                .get((from - offset) as usize..(to - offset) as usize)
                .unwrap_or_default()
        };
        // `body_to - body_from` is at least BODY_SPARSE_MIN, more than
        // two samples.
        let head_to = body_from + BODY_SAMPLE;
        let tail_from = body_to - BODY_SAMPLE;
        self.remember_whole(offset, part(offset, body_from));
        // The body's middle is forgotten, its first and last bytes kept.
        self.mark(head_to, tail_from, false);
        self.remember_sample(body_from, part(body_from, head_to));
        self.remember_sample(tail_from, part(tail_from, body_to));
        self.remember_whole(body_to, part(body_to, end));
    }

    /// [`Stream::remember_whole`] for a body's sample of [`BODY_SAMPLE`]
    /// bytes: where the ring was written there before and the sample does
    /// not wrap (on a stream of large messages, nearly always), one copy
    /// of a known size, without the general case's loop.
    #[inline]
    fn remember_sample(&mut self, offset: u64, bytes: &[u8]) {
        const N: usize = BODY_SAMPLE as usize;
        let Ok(src) = <&[u8; N]>::try_from(bytes) else {
            return self.remember_whole(offset, bytes);
        };
        if self.ring == 0 {
            return;
        }
        let i = ring_index(offset, self.ring);
        match self
            .recent
            .get_mut(i..)
            .and_then(|r| r.first_chunk_mut::<N>())
        {
            Some(dst) => {
                *dst = *src;
                set_sample_bits(&mut self.remembered, i);
            }
            None => self.remember_whole(offset, bytes),
        }
    }

    /// Copies `bytes` (at most the ring's size, at stream `offset`) into
    /// the ring and marks their positions remembered.
    fn remember_whole(&mut self, offset: u64, bytes: &[u8]) {
        let w = self.ring;
        if w == 0 || bytes.is_empty() {
            return;
        }
        let mut i = ring_index(offset, w);
        let mut rest = bytes;
        while !rest.is_empty() {
            let run = rest.len().min(w - i);
            let (head, tail) = rest.split_at(run);
            if self.recent.len() < i + run {
                // Positions never written before: zero, as they read.
                self.recent.resize(i + run, 0);
            }
            if let Some(dst) = self.recent.get_mut(i..i + run) {
                dst.copy_from_slice(head);
            }
            set_bits(&mut self.remembered, i, i + run, true);
            rest = tail;
            i = 0;
        }
    }

    /// Marks the ring positions of offsets `[from, to)` (at most the ring's
    /// size apart) remembered or not.
    fn mark(&mut self, from: u64, to: u64, on: bool) {
        let w = self.ring;
        if w == 0 || to <= from {
            return;
        }
        let n = ((to - from) as usize).min(w);
        let i = ring_index(from, w);
        let first = n.min(w - i);
        set_bits(&mut self.remembered, i, i + first, on);
        set_bits(&mut self.remembered, 0, n - first, on);
    }

    fn emit_data<F: FnMut(Delivery<'_>)>(
        &mut self,
        offset: u64,
        bytes: &[u8],
        cfg: &ReassemblyConfig,
        deliver: &mut F,
    ) {
        if bytes.is_empty() {
            return;
        }
        self.remember(offset, bytes, cfg);
        self.next = offset + bytes.len() as u64;
        deliver(Delivery::Data { offset, bytes });
    }

    fn emit_gap<F: FnMut(Delivery<'_>)>(
        &mut self,
        upto: u64,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) {
        if upto <= self.next {
            return;
        }
        let len = upto - self.next;
        ev.gaps += 1;
        ev.gap_bytes += len;
        deliver(Delivery::Gap {
            offset: self.next,
            len,
        });
        self.next = upto;
        self.recent_from = upto;
    }

    /// Delivers `payload` (at `start`, first `skip` bytes already delivered)
    /// interleaved with held pieces, first data winning, then drains held
    /// pieces that became contiguous.
    #[allow(clippy::too_many_arguments)]
    fn deliver_from<F: FnMut(Delivery<'_>)>(
        &mut self,
        start: u64,
        skip: u64,
        payload: &[u8],
        missing: u32,
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) {
        let captured_end = start + payload.len() as u64;
        let end = captured_end + u64::from(missing);
        let mut cursor = start + skip;
        while cursor < end {
            // A held piece at the cursor wins over the new bytes.
            if let Some(first) = self.held.front() {
                if first.offset <= cursor {
                    let Some(piece) = self.pop_held(budget) else {
                        break;
                    };
                    let pend = piece.end();
                    if pend > cursor {
                        if piece.skipped() {
                            self.emit_skip(pend, deliver);
                        } else {
                            let from = (cursor - piece.offset) as usize;
                            let fresh = piece.data.get(from..).unwrap_or_default();
                            compare_overlap(cursor, fresh, start, payload, ev);
                            self.emit_data(cursor, fresh, cfg, deliver);
                        }
                        cursor = pend;
                    }
                    continue;
                }
            }
            let limit = self.held.front().map_or(end, |h| h.offset.min(end));
            if cursor < captured_end {
                let upto = limit.min(captured_end);
                let a = (cursor - start) as usize;
                let b = (upto - start) as usize;
                let bytes = payload.get(a..b).unwrap_or_default();
                self.emit_data(cursor, bytes, cfg, deliver);
                cursor = upto;
            } else {
                // Bytes that were on the wire but not captured.
                self.emit_gap(limit, ev, deliver);
                cursor = limit;
            }
        }
        self.drain_contiguous(cfg, budget, deliver);
    }

    fn drain_contiguous<F: FnMut(Delivery<'_>)>(
        &mut self,
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        deliver: &mut F,
    ) {
        while let Some(first) = self.held.front() {
            if first.offset > self.next {
                break;
            }
            let Some(piece) = self.pop_held(budget) else {
                break;
            };
            if piece.end() > self.next {
                if piece.skipped() {
                    self.emit_skip(piece.end(), deliver);
                } else {
                    let from = (self.next - piece.offset) as usize;
                    let at = self.next;
                    self.emit_data(at, piece.data.get(from..).unwrap_or_default(), cfg, deliver);
                }
            }
        }
    }

    /// Takes the first held piece off, giving back what it was charged.
    fn pop_held(&mut self, budget: &mut Budget) -> Option<Held> {
        let piece = self.held.pop_front()?;
        self.held_bytes = self.held_bytes.saturating_sub(piece.cost());
        budget.give(piece.cost());
        Some(piece)
    }

    /// Hands over `[next, upto)` as skipped: it arrived, inside a body the
    /// parser skips, and was not kept.
    fn emit_skip<F: FnMut(Delivery<'_>)>(&mut self, upto: u64, deliver: &mut F) {
        if upto <= self.next {
            return;
        }
        deliver(Delivery::Skip {
            offset: self.next,
            len: upto - self.next,
        });
        self.next = upto;
        self.recent_from = upto;
    }

    /// Stores the parts of an out-of-order segment not already held.
    // Long: one pass over the held pieces: overlaps with each neighbour, the skipped range, and the caps.
    #[allow(clippy::too_many_arguments)]
    fn hold<F: FnMut(Delivery<'_>)>(
        &mut self,
        start: u64,
        payload: &[u8],
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) {
        if payload.is_empty() {
            return;
        }
        let end = start + payload.len() as u64;
        // Pieces of [start, end) not covered by held data.
        let mut fresh: Vec<(u64, u64)> = Vec::new();
        let mut cursor = start;
        // Pieces ending at or before `start` cannot overlap: start the scan
        // past them (held pieces are sorted and disjoint).
        let first = self.held.partition_point(|h| h.end() <= start);
        for h in self.held.range(first..) {
            if h.end() <= cursor {
                continue;
            }
            if h.offset >= end {
                break;
            }
            if h.offset > cursor {
                fresh.push((cursor, h.offset.min(end)));
            }
            // Overlap with the held piece: compare.
            let o_from = cursor.max(h.offset);
            let o_to = end.min(h.end());
            // A skipped piece kept no bytes to compare with.
            if o_to > o_from && !h.skipped() {
                let a = h
                    .data
                    .get((o_from - h.offset) as usize..(o_to - h.offset) as usize);
                let b = payload.get((o_from - start) as usize..(o_to - start) as usize);
                if a == b {
                    ev.overlaps_consistent += 1;
                } else {
                    ev.overlaps_conflicting += 1;
                }
            }
            cursor = cursor.max(h.end());
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            fresh.push((cursor, end));
        }
        // Cut the fresh pieces at the edges of the skipped range, so each
        // lies wholly inside it or wholly outside.
        let (skip_from, skip_to) = self.skip;
        if skip_to > skip_from {
            let mut cut = Vec::with_capacity(fresh.len() + 2);
            for (a, b) in fresh {
                let mut a = a;
                for edge in [skip_from, skip_to] {
                    if a < edge && edge < b {
                        cut.push((a, edge));
                        a = edge;
                    }
                }
                cut.push((a, b));
            }
            fresh = cut;
        }
        let mut capped = false;
        for (a, b) in fresh {
            // A cap reached for an earlier piece may have delivered past it.
            if b <= self.next {
                continue;
            }
            // Inside the range the parser skips, only the extent is kept.
            let (skip_from, skip_to) = self.skip;
            let skipped = a >= skip_from && b <= skip_to;
            let n = if skipped { 0 } else { (b - a) as usize } + PIECE_COST;
            let fits_stream =
                self.held_bytes + n <= cfg.max_held_bytes && self.held.len() < cfg.max_held_pieces;
            if !capped && skipped && self.extend_skipped(a, b, budget) {
                continue;
            }
            if capped || !fits_stream || !budget.take(n) {
                // Give up on the holes: deliver what is held and the rest of
                // this segment in offset order, declaring gaps between. Held
                // data after this piece is flushed only once the segment is
                // done: flushing it now would declare this piece's bytes,
                // which are in hand, a gap.
                if !capped {
                    ev.cap_gaps += 1;
                    capped = true;
                }
                // Held pieces before this one end at or before `a`.
                while self.held.front().is_some_and(|h| h.offset < a) {
                    let to = self.held.front().map_or(a, |h| h.offset);
                    self.emit_gap(to, ev, deliver);
                    self.drain_contiguous(cfg, budget, deliver);
                }
                if b <= self.next {
                    continue;
                }
                if a > self.next {
                    self.emit_gap(a, ev, deliver);
                }
                let a = a.max(self.next);
                let bytes = payload.get((a - start) as usize..(b - start) as usize);
                self.emit_data(a, bytes.unwrap_or_default(), cfg, deliver);
                continue;
            }
            let data = if skipped {
                Vec::new()
            } else {
                payload
                    .get((a - start) as usize..(b - start) as usize)
                    .unwrap_or_default()
                    .to_vec()
            };
            let pos = self.held.partition_point(|h| h.offset < a);
            self.held.insert(
                pos,
                Held {
                    offset: a,
                    len: b - a,
                    data,
                },
            );
            self.held_bytes += n;
        }
        if capped {
            self.flush(cfg, budget, ev, deliver);
        }
        // A cap reached above may have brought the stream up to a piece held
        // after it.
        self.drain_contiguous(cfg, budget, deliver);
    }

    /// The peer acknowledged up to `ack`: holes before it will never be
    /// filled by the sender, so if data is held beyond them, declare them.
    // The test inlined (most segments of most streams find nothing held),
    // the rest out of line.
    #[inline]
    pub fn peer_acked<F: FnMut(Delivery<'_>)>(
        &mut self,
        ack: u32,
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) {
        if !self.held.is_empty() {
            self.declare_acked_holes(ack, cfg, budget, ev, deliver);
        }
    }

    /// [`Stream::peer_acked`] when pieces are held.
    fn declare_acked_holes<F: FnMut(Delivery<'_>)>(
        &mut self,
        ack: u32,
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) {
        let Some(acked) = self.acked_offset(ack) else {
            return;
        };
        while let Some(first) = self.held.front() {
            if first.offset > acked || first.offset <= self.next {
                break;
            }
            let to = first.offset;
            self.emit_gap(to, ev, deliver);
            self.drain_contiguous(cfg, budget, deliver);
        }
    }

    /// Delivers everything held, declaring the holes between as gaps (end
    /// of the flow, or a cap reached).
    pub fn flush<F: FnMut(Delivery<'_>)>(
        &mut self,
        cfg: &ReassemblyConfig,
        budget: &mut Budget,
        ev: &mut StreamEvents,
        deliver: &mut F,
    ) {
        while let Some(first) = self.held.front() {
            let to = first.offset;
            self.emit_gap(to, ev, deliver);
            self.drain_contiguous(cfg, budget, deliver);
        }
    }

    /// Grows a skipped piece that `[a, b)` touches at either end, so that a
    /// body in tiny segments in any order stays a few pieces. False when no
    /// skipped piece borders it.
    fn extend_skipped(&mut self, a: u64, b: u64, budget: &mut Budget) -> bool {
        let pos = self.held.partition_point(|h| h.offset < a);
        if let Some(prev) = pos.checked_sub(1).and_then(|p| self.held.get_mut(p)) {
            if prev.skipped() && prev.end() == a {
                prev.len += b - a;
                // It may now touch the next piece too: merge them.
                let end = prev.end();
                if self
                    .held
                    .get(pos)
                    .is_some_and(|n| n.skipped() && n.offset == end)
                {
                    if let Some(n) = self.held.remove(pos) {
                        self.held_bytes = self.held_bytes.saturating_sub(PIECE_COST);
                        budget.give(PIECE_COST);
                        if let Some(prev) = self.held.get_mut(pos - 1) {
                            prev.len += n.len;
                        }
                    }
                }
                return true;
            }
        }
        if let Some(next) = self.held.get_mut(pos) {
            if next.skipped() && next.offset == b {
                next.offset = a;
                next.len += b - a;
                return true;
            }
        }
        false
    }

    /// Back to a new stream's state, held bytes given back undelivered
    /// (the flow ended, was rejected or evicted), but its buffers kept
    /// (emptied) for the stream that takes its place: the ring is a large
    /// allocation, and a capture of many short connections makes and
    /// frees two for every candidate flow.
    pub fn reset(&mut self, budget: &mut Budget) {
        budget.give(self.held_bytes);
        let mut held = std::mem::take(&mut self.held);
        let mut recent = std::mem::take(&mut self.recent);
        let mut remembered = std::mem::take(&mut self.remembered);
        if held.capacity() > KEPT_PIECES {
            // Grown by many pieces (up to thousands under the caps): not
            // worth keeping idle.
            held = VecDeque::new();
        }
        held.clear();
        recent.clear();
        remembered.clear();
        *self = Stream {
            held,
            recent,
            remembered,
            ..Stream::default()
        };
    }
}

/// Position of stream `offset` in a ring of `w` bytes (w > 0): a mask for
/// the usual power-of-two window, a division otherwise. Two or three of
/// these per body segment were a division each.
fn ring_index(offset: u64, w: usize) -> usize {
    let w = w as u64;
    if w.is_power_of_two() {
        (offset & (w - 1)) as usize
    } else {
        (offset % w) as usize
    }
}

/// Bit `p` of `words` (false past their end).
fn bit(words: &[u64], p: usize) -> bool {
    words.get(p / 64).is_some_and(|w| w >> (p % 64) & 1 == 1)
}

/// The first position in `[p, end)` whose bit is not `value`, else `end`.
fn next_change(words: &[u64], mut p: usize, end: usize, value: bool) -> usize {
    while p < end {
        let word = words.get(p / 64).copied().unwrap_or(0);
        // Bits that differ from `value`, from position p on.
        let differ = (if value { !word } else { word }) >> (p % 64);
        if differ != 0 {
            return (p + differ.trailing_zeros() as usize).min(end);
        }
        p = (p / 64 + 1) * 64;
    }
    end
}

/// Sets (`on`) or clears bits `[from, to)` of `words`; bits past their end
/// are ignored. Whole words in between are filled at once: a body's
/// segment clears some 23 of them.
fn set_bits(words: &mut [u64], from: usize, to: usize, on: bool) {
    let to = to.min(words.len().saturating_mul(64));
    if from >= to {
        return;
    }
    let (first, last) = (from / 64, (to - 1) / 64);
    let head = u64::MAX << (from % 64);
    let tail = u64::MAX >> (63 - (to - 1) % 64);
    let apply = |w: &mut u64, mask: u64| {
        if on {
            *w |= mask;
        } else {
            *w &= !mask;
        }
    };
    let Some(span) = words.get_mut(first..=last) else {
        return;
    };
    match span {
        [only] => apply(only, head & tail),
        [a, middle @ .., z] => {
            apply(a, head);
            middle.fill(if on { u64::MAX } else { 0 });
            apply(z, tail);
        }
        [] => {}
    }
}

/// Sets the [`BODY_SAMPLE`] bits from `from` (in one word or across two):
/// [`set_bits`] for a sample, without its general case's steps.
#[inline]
fn set_sample_bits(words: &mut [u64], from: usize) {
    const ONES: u64 = (1 << BODY_SAMPLE) - 1;
    let (w, b) = (from / 64, from % 64);
    if let Some(x) = words.get_mut(w) {
        *x |= ONES << b;
    }
    if b + BODY_SAMPLE as usize > 64 {
        if let Some(x) = words.get_mut(w + 1) {
            *x |= ONES >> (64 - b);
        }
    }
}

/// Whether the ring `recent` holds `b` from position `at`, a position at or
/// past its length (never written) reading as zero.
fn ring_matches(recent: &[u8], at: usize, b: &[u8]) -> bool {
    let have = recent.get(at..).unwrap_or_default();
    let k = have.len().min(b.len());
    let (b_written, b_unwritten) = b.split_at(k);
    have.get(..k) == Some(b_written) && b_unwritten.iter().all(|&x| x == 0)
}

/// Counts whether held bytes `fresh` at `at` agree with the new segment.
fn compare_overlap(at: u64, fresh: &[u8], start: u64, payload: &[u8], ev: &mut StreamEvents) {
    let pend = start + payload.len() as u64;
    if at >= pend {
        return;
    }
    let n = ((pend - at) as usize).min(fresh.len());
    let a = fresh.get(..n);
    let b = payload.get((at - start) as usize..(at - start) as usize + n);
    if a == b {
        ev.overlaps_consistent += 1;
    } else {
        ev.overlaps_conflicting += 1;
    }
}

#[cfg(test)]
mod tests;
