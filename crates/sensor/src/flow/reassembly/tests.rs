use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// One delivery, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Data(u64, Vec<u8>),
    Gap(u64, u64),
    Skip(u64, u64),
}

/// Collects deliveries and checks that they are contiguous.
#[derive(Default)]
struct Sink {
    log: Vec<Got>,
    bytes: Vec<u8>,
    gaps: Vec<(u64, u64)>,
    end: u64,
}

impl Sink {
    fn take(&mut self, d: Delivery<'_>) {
        match d {
            Delivery::Data { offset, bytes } => {
                assert_eq!(offset, self.end, "data not contiguous");
                assert!(!bytes.is_empty(), "empty data delivery");
                self.end += bytes.len() as u64;
                self.bytes.extend_from_slice(bytes);
                self.log.push(Got::Data(offset, bytes.to_vec()));
            }
            Delivery::Gap { offset, len } => {
                assert_eq!(offset, self.end, "gap not contiguous");
                assert!(len > 0, "empty gap");
                self.end += len;
                self.gaps.push((offset, len));
                self.log.push(Got::Gap(offset, len));
            }
            Delivery::Skip { offset, len } => {
                assert_eq!(offset, self.end, "skip not contiguous");
                assert!(len > 0, "empty skip");
                self.end += len;
                self.log.push(Got::Skip(offset, len));
            }
        }
    }

    /// Every delivered data byte is the original byte at its offset.
    fn assert_matches(&self, truth: &[u8]) {
        for g in &self.log {
            if let Got::Data(o, b) = g {
                let o = *o as usize;
                assert_eq!(Some(&b[..]), truth.get(o..o + b.len()), "data at {o}");
            }
        }
    }
}

/// A stream with its config, budget, events and sink. Offsets map to
/// sequence numbers `isn + 1 + offset`.
struct H {
    s: Stream,
    cfg: ReassemblyConfig,
    budget: Budget,
    ev: StreamEvents,
    out: Sink,
    isn: u32,
}

impl H {
    fn new(cfg: ReassemblyConfig, budget_cap: usize, isn: u32) -> Self {
        H {
            s: Stream::default(),
            cfg,
            budget: Budget::new(budget_cap),
            ev: StreamEvents::default(),
            out: Sink::default(),
            isn,
        }
    }
    fn with_syn(cfg: ReassemblyConfig, isn: u32) -> Self {
        let mut h = H::new(cfg, usize::MAX, isn);
        assert!(!h.raw(isn, true, false, b"", 0));
        h
    }
    fn seq(&self, off: u64) -> u32 {
        self.isn.wrapping_add(1).wrapping_add(off as u32)
    }
    fn raw(&mut self, seq: u32, syn: bool, fin: bool, payload: &[u8], missing: u32) -> bool {
        let (cfg, budget, ev, out) = (&self.cfg, &mut self.budget, &mut self.ev, &mut self.out);
        let mut deliver = |d: Delivery<'_>| out.take(d);
        let s = &mut self.s;
        let seg = StreamSegment {
            seq,
            syn,
            fin,
            payload,
            missing,
        };
        s.segment(seg, cfg, budget, ev, &mut deliver)
    }
    fn at(&mut self, off: u64, payload: &[u8]) -> bool {
        self.raw(self.seq(off), false, false, payload, 0)
    }
    fn fin_at(&mut self, off: u64, payload: &[u8]) -> bool {
        self.raw(self.seq(off), false, true, payload, 0)
    }
    fn ack(&mut self, off: u64) {
        let ack = self.seq(off);
        let mut deliver = |d: Delivery<'_>| self.out.take(d);
        (self.s).peer_acked(ack, &self.cfg, &mut self.budget, &mut self.ev, &mut deliver);
    }
    fn flush(&mut self) {
        let mut deliver = |d: Delivery<'_>| self.out.take(d);
        (self.s).flush(&self.cfg, &mut self.budget, &mut self.ev, &mut deliver);
    }
    /// Caps hold, and nothing deliverable is left held.
    fn check_invariants(&self) {
        assert!(self.s.held_bytes() <= self.cfg.max_held_bytes);
        assert!(self.s.held.len() <= self.cfg.max_held_pieces);
        assert!(self.budget.held <= self.budget.cap);
        assert_eq!(self.budget.held, self.s.held_bytes());
        let sum: usize = self.s.held.iter().map(Held::cost).sum();
        assert_eq!(sum, self.s.held_bytes());
        // Held pieces are sorted, disjoint, and all after the next offset
        // (a piece at the next offset would be deliverable).
        let mut prev_end = self.s.next_offset() + 1;
        for h in &self.s.held {
            assert!(h.len > 0);
            assert!(h.skipped() || h.data.len() as u64 == h.len);
            assert!(
                h.offset >= prev_end,
                "held piece at {} (next {})",
                h.offset,
                self.s.next_offset()
            );
            prev_end = h.end();
        }
        assert_eq!(self.out.end, self.s.next_offset());
    }
}

fn dat(offset: u64, bytes: &[u8]) -> Got {
    Got::Data(offset, bytes.to_vec())
}

/// The default config, changed by `f`.
fn conf(f: impl FnOnce(&mut ReassemblyConfig)) -> ReassemblyConfig {
    let mut c = ReassemblyConfig::default();
    f(&mut c);
    c
}

fn roomy() -> ReassemblyConfig {
    ReassemblyConfig {
        max_held_bytes: 1 << 20,
        max_held_pieces: 1 << 20,
        ..ReassemblyConfig::default()
    }
}

/// Fisher-Yates with a SplitMix64 generator.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        v.swap(i, ((z ^ (z >> 31)) % (i as u64 + 1)) as usize);
    }
}

/// Bytes `start..end` of the stream.
type Span = (usize, usize);
/// A span, and whether its segment carries the FIN.
type Item = (usize, usize, bool);

/// Segments (start, end, fin) of a cut stream, plus duplicates and
/// overlapping extras carrying the same bytes, shuffled.
fn arrivals(
    len: usize,
    cuts: &[Index],
    dups: &[Index],
    extras: &[(Index, usize)],
    seed: u64,
) -> (Vec<Span>, Vec<Item>) {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points.dedup();
    let segs: Vec<Span> = points.windows(2).map(|w| (w[0], w[1])).collect();
    let mut items = segs.clone();
    if !segs.is_empty() {
        items.extend(dups.iter().map(|d| segs[d.index(segs.len())]));
    }
    if len > 0 {
        for (i, l) in extras {
            let a = i.index(len);
            items.push((a, (a + l).min(len)));
        }
    }
    let mut items: Vec<Item> = items.into_iter().map(|(a, b)| (a, b, b == len)).collect();
    if len == 0 {
        items.push((0, 0, true));
    }
    shuffle(&mut items, seed);
    (segs, items)
}

/// Feeds `items` (and first `first` without a SYN), flushes, and checks the
/// stream came out whole with exactly one FIN completion.
fn reassemble(data: &[u8], isn: u32, window: usize, first: Option<Span>, items: &[Item]) {
    let cfg = ReassemblyConfig {
        recent_window: window,
        ..roomy()
    };
    let mut h = match first {
        None => H::with_syn(cfg, isn),
        Some(_) => H::new(cfg, usize::MAX, isn),
    };
    let mut finished_at = Vec::new();
    for &(a, b, fin) in first
        .map(|(a, b)| (a, b, b == data.len()))
        .iter()
        .chain(items)
    {
        let seq = h.seq(a as u64);
        if h.raw(seq, false, fin, &data[a..b], 0) {
            finished_at.push(h.out.end);
        }
        h.check_invariants();
    }
    assert_eq!(finished_at, vec![data.len() as u64], "FIN completion");
    h.flush();
    assert_eq!(h.out.bytes, data);
    assert!(h.out.gaps.is_empty(), "gaps: {:?}", h.out.gaps);
    assert_eq!(h.ev.overlaps_conflicting, 0);
    assert_eq!((h.ev.gaps, h.ev.cap_gaps, h.ev.out_of_window), (0, 0, 0));
    assert_eq!(h.budget.held, 0);
    assert_eq!(h.s.held_bytes(), 0);
    assert!(h.s.finished());
}

fn isn_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 4096)..=u32::MAX, 0u32..16]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Against a model of the policy: every byte delivered is the one the
    /// first segment to carry its offset had, and a conflict is counted
    /// exactly when a later segment carried a different byte somewhere.
    #[test]
    fn first_arrival_wins_against_a_model(
        data in prop::collection::vec(any::<u8>(), 1..1500),
        isn in isn_strategy(),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
        extras in prop::collection::vec((any::<Index>(), 1usize..400, 0u8..3), 1..10),
        seed in any::<u64>(),
    ) {
        let len = data.len();
        let (segs, _) = arrivals(len, &cuts, &[], &[], 0);
        // (start, end, xor): xor 0 carries the original bytes.
        let mut items: Vec<(usize, usize, u8)> = segs.iter().map(|&(a, b)| (a, b, 0)).collect();
        for (i, l, v) in &extras {
            let a = i.index(len);
            items.push((a, (a + l).min(len), *v));
        }
        shuffle(&mut items, seed);
        let mut model: Vec<Option<u8>> = vec![None; len];
        let mut conflict = false;
        for &(a, b, v) in &items {
            for (o, m) in model.iter_mut().enumerate().take(b).skip(a) {
                let byte = data[o] ^ v;
                match m {
                    None => *m = Some(byte),
                    Some(x) => conflict |= *x != byte,
                }
            }
        }
        let want: Vec<u8> = model.into_iter().map(|b| b.unwrap()).collect();
        // The recent window covers the whole stream: every overlap is checked.
        let mut h = H::with_syn(roomy(), isn);
        for &(a, b, v) in &items {
            let bytes: Vec<u8> = data[a..b].iter().map(|x| x ^ v).collect();
            h.at(a as u64, &bytes);
            h.check_invariants();
        }
        h.flush();
        prop_assert_eq!(&h.out.bytes, &want);
        prop_assert!(h.out.gaps.is_empty());
        prop_assert_eq!(h.ev.overlaps_conflicting > 0, conflict);
        prop_assert_eq!(h.ev.overlaps_unverified, 0);
    }

    #[test]
    fn any_arrival_order_reassembles_exactly(
        data in prop::collection::vec(any::<u8>(), 0..4000),
        isn in isn_strategy(),
        cuts in prop::collection::vec(any::<Index>(), 0..48),
        dups in prop::collection::vec(any::<Index>(), 0..12),
        extras in prop::collection::vec((any::<Index>(), 1usize..600), 0..12),
        seed in any::<u64>(),
        window in prop_oneof![Just(0usize), 1usize..64, Just(2048usize)],
    ) {
        let (segs, items) = arrivals(data.len(), &cuts, &dups, &extras, seed);
        // With a SYN first.
        reassemble(&data, isn, window, None, &items);
        // Picked up mid-stream at the stream's first segment.
        if let Some(&first) = segs.first() {
            reassemble(&data, isn, window, Some(first), &items);
        }
    }

    /// A retransmission of in-order bytes is checked against the recent
    /// window: one changed byte inside it is a conflict, bytes before it are
    /// unverified.
    #[test]
    fn retransmission_checked_against_window(
        data in prop::collection::vec(any::<u8>(), 1..3000),
        isn in isn_strategy(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        w in 1usize..300,
        range in (any::<Index>(), any::<Index>()),
        flip in prop::option::of(any::<Index>()),
    ) {
        let len = data.len();
        let cfg = ReassemblyConfig { recent_window: w, ..roomy() };
        let mut h = H::with_syn(cfg, isn);
        let (segs, _) = arrivals(len, &cuts, &[], &[], 0);
        for (a, b) in segs {
            h.at(a as u64, &data[a..b]);
        }
        prop_assert_eq!(h.ev, StreamEvents::default());
        let (x, y) = (range.0.index(len), range.1.index(len));
        let (a, b) = (x.min(y), x.max(y) + 1);
        let mut copy = data[a..b].to_vec();
        let flipped = flip.map(|f| a + f.index(b - a));
        if let Some(p) = flipped {
            copy[p - a] ^= 0x5a;
        }
        let log_len = h.out.log.len();
        prop_assert!(!h.at(a as u64, &copy));
        prop_assert_eq!(h.out.log.len(), log_len);
        let window_from = len.saturating_sub(w);
        let compared_from = a.max(window_from);
        let mut want = StreamEvents {
            overlaps_unverified: u64::from(a < window_from),
            ..StreamEvents::default()
        };
        if compared_from < b {
            match flipped {
                Some(p) if p >= compared_from => want.overlaps_conflicting = 1,
                _ => want.overlaps_consistent = 1,
            }
        }
        prop_assert_eq!(h.ev, want);
    }

    /// Random out-of-order segments and acks under small caps: the caps hold
    /// after every call, delivered data is the original, and after the flush
    /// every byte up to the furthest segment is data or gap.
    #[test]
    fn caps_are_never_exceeded(
        data in prop::collection::vec(any::<u8>(), 1..3000),
        isn in isn_strategy(),
        ops in prop::collection::vec((any::<Index>(), 1usize..200, 0u8..8), 1..80),
        max_held_bytes in 1usize..400,
        max_held_pieces in 1usize..6,
        budget_cap in 0usize..400,
    ) {
        let len = data.len();
        let cfg = ReassemblyConfig { max_held_bytes, max_held_pieces, ..ReassemblyConfig::default() };
        let mut h = H::new(cfg, budget_cap, isn);
        assert!(!h.raw(isn, true, false, b"", 0));
        let mut furthest = 0;
        for (i, l, kind) in ops {
            let a = i.index(len);
            let b = (a + l).min(len);
            if kind == 0 {
                h.ack(b as u64);
            } else {
                h.at(a as u64, &data[a..b]);
                furthest = furthest.max(b as u64);
            }
            h.check_invariants();
        }
        h.flush();
        h.check_invariants();
        h.out.assert_matches(&data);
        prop_assert_eq!(h.out.end, furthest);
        prop_assert_eq!(h.budget.held, 0);
        prop_assert_eq!(h.ev.gap_bytes, h.out.gaps.iter().map(|g| g.1).sum::<u64>());
    }
}

#[test]
fn held_piece_keeps_first_bytes_against_later_copy() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 1000);
    h.at(10, b"abcde");
    h.at(10, b"zzzzz");
    assert_eq!(h.ev.overlaps_conflicting, 1);
    h.at(10, b"abcde");
    assert_eq!(h.ev.overlaps_consistent, 1);
    assert!(h.out.log.is_empty());
    h.at(0, b"0123456789");
    assert_eq!(h.out.bytes, b"0123456789abcde");
    assert_eq!(h.ev.overlaps_conflicting, 1);
}

#[test]
fn held_piece_wins_over_in_order_segment_covering_it() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 7);
    h.at(5, b"FGHIJ");
    h.at(0, b"abcdefghijklm");
    assert_eq!(h.out.bytes, b"abcdeFGHIJklm");
    assert_eq!(h.ev.overlaps_conflicting, 1);
    assert_eq!(h.ev.overlaps_consistent, 0);
    assert_eq!(h.s.held_bytes(), 0);
}

#[test]
fn delivered_bytes_retransmitted() {
    let mut h = H::with_syn(ReassemblyConfig::default(), u32::MAX - 3);
    h.at(0, b"hello world");
    h.at(0, b"hello");
    assert_eq!(h.ev.overlaps_consistent, 1);
    assert_eq!(h.ev.overlaps_conflicting, 0);
    h.at(6, b"WORLD");
    assert_eq!(h.ev.overlaps_conflicting, 1);
    // Overlapping the front: compared, then the new part delivered.
    h.at(9, b"LD!!");
    assert_eq!(h.ev.overlaps_conflicting, 2);
    h.at(11, b"!!");
    h.at(12, b"!.");
    assert_eq!(h.ev.overlaps_consistent, 3);
    assert_eq!(h.ev.overlaps_conflicting, 2);
    assert_eq!(h.out.bytes, b"hello world!!.");
    assert_eq!(h.ev.overlaps_unverified, 0);
}

#[test]
fn retransmission_without_recent_window_is_unverified() {
    let cfg = conf(|c| c.recent_window = 0);
    let mut h = H::with_syn(cfg, 0);
    h.at(0, b"hello world");
    h.at(0, b"HELLO");
    h.at(0, b"hello");
    assert_eq!(h.ev.overlaps_unverified, 2);
    assert_eq!(
        (h.ev.overlaps_conflicting, h.ev.overlaps_consistent),
        (0, 0)
    );
    assert_eq!(h.out.bytes, b"hello world");
}

#[test]
fn snaplen_missing_bytes_become_a_gap() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 100);
    h.raw(h.seq(0), false, false, b"abc", 5);
    h.at(8, b"xyz");
    assert_eq!(
        h.out.log,
        vec![dat(0, b"abc"), Got::Gap(3, 5), dat(8, b"xyz")]
    );
    assert_eq!((h.ev.gaps, h.ev.gap_bytes), (1, 5));
    assert_eq!(h.s.next_offset(), 11);
}

#[test]
fn stream_cap_declares_gap_and_delivers_held() {
    let cfg = conf(|c| c.max_held_bytes = PIECE_COST + 10);
    let mut h = H::with_syn(cfg, 5);
    h.at(20, b"ABCDEFGH");
    assert_eq!(h.s.held_bytes(), PIECE_COST + 8);
    h.at(40, b"vwxyz");
    assert_eq!(h.ev.cap_gaps, 1);
    assert_eq!(
        h.out.log,
        vec![
            Got::Gap(0, 20),
            dat(20, b"ABCDEFGH"),
            Got::Gap(28, 12),
            dat(40, b"vwxyz"),
        ]
    );
    assert_eq!((h.s.held_bytes(), h.budget.held), (0, 0));
    h.check_invariants();
}

#[test]
fn piece_cap_declares_gap() {
    let cfg = conf(|c| c.max_held_pieces = 2);
    let mut h = H::with_syn(cfg, 5);
    h.at(10, b"a");
    h.at(20, b"b");
    assert!(h.out.log.is_empty());
    h.at(30, b"c");
    assert_eq!(h.ev.cap_gaps, 1);
    assert_eq!(h.out.gaps, vec![(0, 10), (11, 9), (21, 9)]);
    assert_eq!(h.out.bytes, b"abc");
    assert_eq!(h.s.held_bytes(), 0);
}

#[test]
fn worker_budget_is_shared_by_streams() {
    let mut a = H::new(ReassemblyConfig::default(), PIECE_COST + 10, 0);
    let mut b = H::new(ReassemblyConfig::default(), PIECE_COST + 10, 0);
    a.raw(0, true, false, b"", 0);
    b.raw(0, true, false, b"", 0);
    a.at(10, b"12345678");
    let cost = PIECE_COST + 8;
    assert_eq!((a.budget.held, a.s.held_bytes()), (cost, cost));
    // The worker's budget passes from stream to stream.
    b.budget = a.budget;
    b.at(10, b"xyz");
    assert_eq!(b.ev.cap_gaps, 1);
    assert_eq!(b.out.log, vec![Got::Gap(0, 10), dat(10, b"xyz")]);
    assert!(a.out.log.is_empty());
    assert_eq!(
        (b.budget.held, a.s.held_bytes(), b.s.held_bytes()),
        (cost, cost, 0)
    );
    assert_eq!(b.budget.peak, cost);
    a.budget = b.budget;
    a.s.reset(&mut a.budget);
    assert_eq!(a.budget.held, 0);
}

#[test]
fn cap_reached_by_segment_overlapping_held_data_leaves_nothing_stuck() {
    let cfg = conf(|c| c.max_held_bytes = PIECE_COST + 12);
    let data: Vec<u8> = (0u8..40).collect();
    let mut h = H::with_syn(cfg, 99);
    h.at(10, &data[10..20]);
    // Its head does not fit next to the held piece: cap reached.
    h.at(5, &data[5..30]);
    assert_eq!(h.ev.cap_gaps, 1);
    h.check_invariants();
    assert_eq!(h.s.next_offset(), 30);
    h.out.assert_matches(&data);
    assert!(h.fin_at(30, b""));
}

#[test]
fn peer_ack_past_hole_declares_it() {
    let mut h = H::with_syn(ReassemblyConfig::default(), u32::MAX);
    h.at(0, b"abc");
    h.at(10, b"klm");
    h.at(20, b"uv");
    // Acks that do not pass the hole change nothing.
    h.ack(3);
    h.ack(8);
    assert_eq!(h.out.log, vec![dat(0, b"abc")]);
    assert_eq!(h.s.held_bytes(), 2 * PIECE_COST + 5);
    // Acknowledging the whole hole proves it was received.
    h.ack(10);
    assert_eq!(h.out.log[1..], [Got::Gap(3, 7), dat(10, b"klm")]);
    assert_eq!(h.s.held_bytes(), PIECE_COST + 2);
    h.ack(19);
    assert_eq!(h.out.log.len(), 3);
    h.ack(22);
    assert_eq!(h.out.log[3..], [Got::Gap(13, 7), dat(20, b"uv")]);
    assert_eq!((h.s.held_bytes(), h.budget.held, h.ev.gaps), (0, 0, 2));
}

#[test]
fn fin_completes_once() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 3);
    assert!(!h.at(0, b"abc"));
    assert!(h.fin_at(3, b"de"));
    assert!(h.s.finished());
    assert!(!h.fin_at(3, b"de"));
    assert!(!h.fin_at(5, b""));
    assert!(!h.at(0, b"abcde"));

    // FIN before the missing data: completion comes with the data.
    let mut h = H::with_syn(ReassemblyConfig::default(), u32::MAX - 1);
    assert!(!h.fin_at(5, b""));
    assert!(!h.at(3, b"de"));
    assert!(!h.s.finished());
    assert!(h.at(0, b"abc"));
    assert!(!h.fin_at(5, b""));
    assert_eq!(h.out.bytes, b"abcde");
}

#[test]
fn far_ahead_segments_are_ignored() {
    let cfg = conf(|c| c.max_ahead = 100);
    let mut h = H::with_syn(cfg, 50);
    h.at(101, b"x");
    assert_eq!((h.ev.out_of_window, h.s.held_bytes()), (1, 0));
    h.at(100, b"y");
    assert_eq!((h.ev.out_of_window, h.s.held_bytes()), (1, PIECE_COST + 1));
    // Entirely before the stream start.
    h.raw(h.seq(0).wrapping_sub(10), false, false, b"old", 0);
    assert_eq!(h.ev.out_of_window, 2);
    assert!(h.out.log.is_empty());
}

#[test]
fn huge_distances_never_allocate() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 0x8000_0000);
    h.at(1 << 30, &[7; 1000]);
    assert_eq!(h.ev.out_of_window, 1);
    assert_eq!((h.s.held_bytes(), h.budget.held), (0, 0));
    // Within max_ahead: only the bytes are held, the distance is a gap.
    h.at(60 << 20, b"tail");
    assert_eq!(
        (h.s.held_bytes(), h.budget.held),
        (PIECE_COST + 4, PIECE_COST + 4)
    );
    h.flush();
    assert_eq!(
        h.out.log,
        vec![Got::Gap(0, 60 << 20), dat(60 << 20, b"tail")]
    );
    // Bytes cut by the snap length: a gap, however many.
    h.raw(h.seq((60 << 20) + 4), false, false, b"z", u32::MAX);
    assert_eq!(h.s.next_offset(), (60 << 20) + 5 + u64::from(u32::MAX));
    assert_eq!(h.s.ring, h.cfg.recent_window);
    assert!(h.s.recent.len() <= h.cfg.recent_window);
}

#[test]
fn acked_offset_across_wraparound() {
    let mut s = Stream::default();
    assert_eq!(s.acked_offset(5), None);
    s.syn(u32::MAX - 2);
    assert_eq!(s.acked_offset(u32::MAX - 1), Some(0));
    assert_eq!(s.acked_offset(u32::MAX), Some(1));
    assert_eq!(s.acked_offset(0), Some(2));
    assert_eq!(s.acked_offset(10), Some(12));
    assert_eq!(s.acked_offset(u32::MAX - 5), None);
    // Offsets past 4 GiB (a huge snap-length gap) stay 64-bit.
    let mut h = H::with_syn(ReassemblyConfig::default(), u32::MAX - 2);
    h.raw(h.seq(0), false, false, b"a", u32::MAX);
    let next = 1u64 << 32;
    assert_eq!(h.s.next_offset(), next);
    assert_eq!(h.s.acked_offset(h.seq(next)), Some(next));
    assert_eq!(h.s.acked_offset(h.seq(next + 5)), Some(next + 5));
    assert_eq!(h.s.acked_offset(h.seq(next - 3)), Some(next - 3));
    h.at(next, b"bc");
    assert_eq!(h.out.log.last(), Some(&dat(next, b"bc")));
}

#[test]
fn midstream_retransmission_reaching_before_first_byte() {
    let data = b"abcdefghijklmnopqrst";
    // Picked up at byte 10 (offset 0), then a copy of bytes 0..20 arrives.
    let mut h = H::new(ReassemblyConfig::default(), usize::MAX, 999);
    h.raw(1010, false, false, &data[10..15], 0);
    h.raw(1000, false, false, &data[..], 0);
    assert_eq!(h.out.log, vec![dat(0, b"klmno"), dat(5, b"pqrst")]);
    assert_eq!(h.ev.overlaps_consistent, 1);
    assert_eq!(h.ev.overlaps_conflicting, 0);
}

/// Tiny segments in random order: caps are in bytes (each piece charged
/// its cost), so a few kilobytes in one-byte segments lose nothing.
#[test]
fn one_byte_segments_in_random_order_lose_nothing() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut order: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut order, 11);
    let mut h = H::with_syn(ReassemblyConfig::default(), 77);
    for &i in &order {
        h.at(i as u64, &data[i..=i]);
        h.check_invariants();
    }
    assert_eq!((h.ev.cap_gaps, h.ev.gaps), (0, 0));
    assert_eq!(h.out.bytes, data);
}

/// Inside the range the parser skips, out-of-order bytes keep only their
/// extent: a 256 KiB body in 64-byte segments in random order stays under
/// a 64 KiB cap (its bytes alone would not fit), loses nothing and is
/// handed over as skipped.
#[test]
fn skipped_body_in_random_tiny_segments_costs_only_its_holes() {
    let body = 256u64 << 10;
    let cfg = conf(|c| c.max_held_bytes = 64 * 1024);
    let mut h = H::with_syn(cfg, 1234);
    h.at(0, b"header");
    h.s.set_skip(6, 6 + body);
    let mut offs: Vec<u64> = (0..body / 64).map(|k| 6 + k * 64).collect();
    shuffle(&mut offs, 5);
    let piece = [0x5au8; 64];
    let mut peak = 0;
    for &o in &offs {
        h.at(o, &piece);
        peak = peak.max(h.s.held_bytes());
        h.check_invariants();
    }
    h.at(6 + body, b"tail");
    assert_eq!((h.ev.cap_gaps, h.ev.gaps), (0, 0));
    assert!(peak < 64 * 1024, "peak {peak}");
    let skipped: u64 = h
        .out
        .log
        .iter()
        .map(|g| if let Got::Skip(_, n) = g { *n } else { 0 })
        .sum();
    // What arrived in order was handed over as data; the rest was skipped.
    assert_eq!(skipped + h.out.bytes.len() as u64, 6 + body + 4);
    assert!(skipped > body / 2, "skipped {skipped}");
    assert_eq!(&h.out.bytes[..6], b"header");
    assert!(h.out.bytes.ends_with(b"tail"));
    assert_eq!(h.s.next_offset(), 6 + body + 4);
}

/// Bytes past the skipped range are still kept whole, even from a segment
/// that straddles its end.
#[test]
fn bytes_after_the_skipped_range_are_kept() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 9);
    h.at(0, b"ab");
    h.s.set_skip(2, 10);
    h.at(6, b"ghijKLMN");
    h.at(2, b"cdef");
    assert_eq!(
        h.out.log,
        vec![
            dat(0, b"ab"),
            dat(2, b"cdef"),
            Got::Skip(6, 4),
            dat(10, b"KLMN")
        ]
    );
    h.check_invariants();
}

/// A stream starts at its SYN, or at the first segment of a flow picked up
/// mid-stream; pieces held out of order are counted until delivered.
#[test]
fn started_and_held_pieces_report_the_stream_state() {
    let mut s = Stream::default();
    assert!(!s.started());
    s.syn(7);
    assert!(s.started());
    let mut h = H::new(ReassemblyConfig::default(), usize::MAX, 99);
    assert!(!h.s.started());
    h.raw(5000, false, false, b"x", 0);
    assert!(h.s.started());

    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    assert_eq!(h.s.held_pieces(), 0);
    h.at(4, b"ef");
    h.at(8, b"ij");
    assert_eq!(h.s.held_pieces(), 2);
    h.at(0, b"abcd");
    assert_eq!(h.s.held_pieces(), 1);
    h.at(6, b"gh");
    assert_eq!(h.s.held_pieces(), 0);
    assert_eq!(h.out.bytes, b"abcdefghij");
}

/// A segment without payload (a pure ACK, here one whose sequence number
/// is ahead of a hole) holds nothing and delivers nothing.
#[test]
fn empty_segments_ahead_of_a_hole_hold_nothing() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    h.at(10, b"");
    assert_eq!(
        (h.s.held_pieces(), h.s.held_bytes(), h.budget.held),
        (0, 0, 0)
    );
    h.at(0, b"abc");
    h.at(3, b"");
    assert_eq!(h.out.log, vec![dat(0, b"abc")]);
    assert_eq!((h.s.held_pieces(), h.s.next_offset()), (0, 3));
}

/// Picked up mid-stream, a segment that starts before the first byte seen
/// and whose tail was cut by the snap length: its uncaptured bytes past
/// what was delivered are a gap of exactly their length.
#[test]
fn snaplen_cut_segment_from_before_the_first_byte() {
    let mut h = H::new(ReassemblyConfig::default(), usize::MAX, 0);
    // Offset 0 is sequence number 1020.
    h.raw(1020, false, false, b"0123456789", 0);
    // Sequence 1000..1035: 5 bytes captured, 30 more on the wire.
    h.raw(1000, false, false, b"abcde", 30);
    assert_eq!(h.out.log, vec![dat(0, b"0123456789"), Got::Gap(10, 5)]);
    assert_eq!(h.s.next_offset(), 15);
}

/// Out-of-order pieces that touch without overlapping are neither
/// retransmissions nor conflicts.
#[test]
fn adjacent_held_pieces_are_no_overlap() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    h.at(20, b"uvwx");
    h.at(10, b"klmnopqrst");
    h.at(24, b"yz");
    assert_eq!(h.s.held_pieces(), 3);
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (0, 0)
    );
    h.at(0, b"abcdefghij");
    assert_eq!(h.out.bytes, b"abcdefghijklmnopqrstuvwxyz");
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (0, 0)
    );
}

/// Inside a range the parser skips, held pieces keep only their extent: a
/// later copy overlapping one has nothing to be compared with, so it is
/// counted neither as a retransmission nor as a conflict.
#[test]
fn overlaps_with_skipped_pieces_are_not_compared() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    h.s.set_skip(10, 100);
    h.at(20, b"abcd");
    h.at(18, b"xyzwvu");
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (0, 0)
    );
    // The two extents are held as one.
    assert_eq!(h.s.held_bytes(), PIECE_COST);
}

/// A segment whose end meets a held piece exactly, with another held
/// piece further on, holds just its own new bytes: no empty piece is
/// created, at the end of the segment or at the edge of a skipped range.
#[test]
fn no_empty_pieces_at_segment_ends_or_skip_edges() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    h.at(20, b"uvwx");
    h.at(30, b"EFGH");
    h.at(18, b"stuv");
    assert_eq!(h.s.held_pieces(), 3);
    assert_eq!(h.s.held_bytes(), 3 * PIECE_COST + 2 + 4 + 4);
    h.check_invariants();

    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    h.s.set_skip(20, 100);
    h.at(10, b"klmnopqrst");
    assert_eq!(h.s.held_pieces(), 1);
    assert_eq!(h.s.held_bytes(), PIECE_COST + 10);
    h.check_invariants();
    // Starting exactly where the skipped range ends.
    h.at(100, b"0123456789");
    assert_eq!(h.s.held_pieces(), 2);
    assert_eq!(h.s.held_bytes(), 2 * PIECE_COST + 20);
    h.check_invariants();
}

/// An in-order segment that runs into a held piece is compared with it
/// over exactly their common bytes: a difference in the last common byte
/// is a conflict, and the held bytes win.
#[test]
fn in_order_segment_into_a_held_piece_compares_every_common_byte() {
    let mut h = H::with_syn(ReassemblyConfig::default(), 0);
    h.at(8, b"iZklmn");
    h.at(0, b"abcdefghij");
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (0, 1)
    );
    assert_eq!(h.out.bytes, b"abcdefghiZklmn");
}

/// The recent window grows with the bytes written, not to its whole size
/// at the first byte; a position past what was written reads as zero, as
/// it did when the window was zero-filled up front.
#[test]
fn recent_window_grows_as_written() {
    assert!(ring_matches(&[], 0, &[]));
    assert!(ring_matches(&[], 0, &[0, 0]));
    assert!(!ring_matches(&[], 0, &[0, 1]));
    assert!(ring_matches(&[1, 2], 1, &[2, 0, 0]));
    assert!(!ring_matches(&[1, 2], 1, &[2, 0, 1]));
    assert!(!ring_matches(&[1, 2], 0, &[1, 3]));
    assert!(ring_matches(&[1, 2], 5, &[0]));

    let cfg = conf(|c| c.recent_window = 16);
    let mut h = H::with_syn(cfg, 1000);
    h.at(0, b"abcd");
    assert_eq!((h.s.ring, h.s.recent.len()), (16, 4));
    // Four bytes on the wire but not captured: a gap, then more bytes,
    // written past positions never written (zero).
    h.raw(h.seq(4), false, false, b"", 4);
    h.at(8, b"wxyz");
    assert_eq!(h.s.recent.len(), 12);
    assert_eq!(h.ev.gaps, 1);
    // Retransmissions inside the window: the same bytes agree, other
    // bytes conflict.
    h.at(8, b"wxyz");
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (1, 0)
    );
    h.at(9, b"xQ");
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (1, 1)
    );
    // Wrapping the ring: it never grows past the window.
    h.at(12, &[7; 40]);
    assert_eq!(h.s.recent.len(), 16);
    h.at(40, &[7; 12]);
    assert_eq!(
        (h.ev.overlaps_consistent, h.ev.overlaps_conflicting),
        (2, 1)
    );
    // A reset stream starts again from nothing.
    let mut budget = Budget::new(usize::MAX);
    h.s.reset(&mut budget);
    assert_eq!((h.s.ring, h.s.recent.len()), (0, 0));
}

/// Events of one retransmission of `copy` at `off` into `h`.
fn retransmit(h: &mut H, off: u64, copy: &[u8]) -> StreamEvents {
    let before = h.ev;
    h.at(off, copy);
    StreamEvents {
        overlaps_consistent: h.ev.overlaps_consistent - before.overlaps_consistent,
        overlaps_conflicting: h.ev.overlaps_conflicting - before.overlaps_conflicting,
        overlaps_unverified: h.ev.overlaps_unverified - before.overlaps_unverified,
        ..StreamEvents::default()
    }
}

const CONSISTENT: StreamEvents = StreamEvents {
    overlaps_consistent: 1,
    overlaps_conflicting: 0,
    overlaps_unverified: 0,
    out_of_window: 0,
    gaps: 0,
    gap_bytes: 0,
    cap_gaps: 0,
};
const CONFLICTING: StreamEvents = StreamEvents {
    overlaps_conflicting: 1,
    overlaps_consistent: 0,
    ..CONSISTENT
};
const UNVERIFIED: StreamEvents = StreamEvents {
    overlaps_unverified: 1,
    overlaps_consistent: 0,
    ..CONSISTENT
};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn body_bytes_are_remembered_by_their_first_and_last_bytes() {
    let data = pattern(1460);
    let mut h = H::with_syn(ReassemblyConfig::default(), 77);
    // Ten bytes of envelope, then a body the parser skips.
    h.s.set_skip(10, 10 + 100_000);
    h.at(0, &data);
    assert_eq!(h.out.bytes, data);
    // Not read: everything but the samples is unremembered.
    let bits: u32 = h.s.remembered.iter().map(|w| w.count_ones()).sum();
    assert_eq!(bits, 10 + 2 * BODY_SAMPLE as u32);

    let changed = |at: usize| {
        let mut c = data.clone();
        c[at] ^= 0x5a;
        c
    };
    assert_eq!(retransmit(&mut h, 0, &data), CONSISTENT);
    // Chaff that starts or ends where the real segment does is caught.
    for at in [10, 25, 1444, 1459] {
        assert_eq!(
            retransmit(&mut h, 10, &changed(at)[10..]),
            CONFLICTING,
            "at {at}"
        );
    }
    // The envelope is compared byte for byte.
    assert_eq!(retransmit(&mut h, 0, &changed(3)[..20]), CONFLICTING);
    // The middle of the body is not compared.
    assert_eq!(retransmit(&mut h, 10, &changed(700)[10..]), CONSISTENT);
    assert_eq!(retransmit(&mut h, 500, &changed(550)[500..600]), UNVERIFIED);
    assert_eq!(h.out.bytes, data, "first data wins");
}

#[test]
fn a_short_body_run_is_remembered_whole() {
    let data = pattern(200);
    let mut h = H::with_syn(ReassemblyConfig::default(), 5);
    h.s.set_skip(0, 10_000);
    h.at(0, &data);
    let mut c = data.clone();
    c[100] ^= 1;
    assert_eq!(retransmit(&mut h, 0, &c), CONFLICTING);
}

#[test]
fn a_sampled_body_forgets_what_the_ring_held_before() {
    // The ring's positions first hold exact bytes, then a body's: a later
    // copy of the body's middle must not be compared with the old bytes
    // that sat at the same positions.
    let w = 2048usize;
    let data = pattern(2 * w);
    let mut h = H::with_syn(conf(|c| c.recent_window = w), 9);
    h.at(0, &data[..w]);
    h.s.set_skip(w as u64, 1 << 20);
    h.at(w as u64, &data[w..]);
    assert_eq!(
        retransmit(&mut h, 3000, &data[3000..3100]),
        UNVERIFIED,
        "middle of the body: no sample"
    );
    assert_eq!(retransmit(&mut h, w as u64, &data[w..w + 16]), CONSISTENT);
}

#[test]
fn the_lap_before_a_sampled_body_stays_comparable() {
    // A whole lap of exact bytes, then a body that passes part of the ring
    // without being remembered: the exact bytes it has not reached are
    // still in the window and still compared, though the body's samples
    // now share their bitmap words.
    let w = 512usize;
    let data = pattern(w + 300);
    let mut h = H::with_syn(conf(|c| c.recent_window = w), 3);
    h.at(0, &data[..w]);
    h.s.set_skip(w as u64, 1 << 20);
    h.at(w as u64, &data[w..]);
    // The window is [300, 812): 300..512 is the exact lap, unreached.
    assert_eq!(retransmit(&mut h, 300, &data[300..512]), CONSISTENT);
    let mut c = data[300..512].to_vec();
    c[5] ^= 1;
    assert_eq!(retransmit(&mut h, 300, &c), CONFLICTING);
    // The body's middle is not compared; its samples are.
    assert_eq!(
        retransmit(&mut h, w as u64 + 100, &data[w + 100..w + 200]),
        UNVERIFIED
    );
    let mut c = data[w..w + 16].to_vec();
    c[15] ^= 1;
    assert_eq!(retransmit(&mut h, w as u64, &c), CONFLICTING);
    let mut c = data[w + 284..w + 300].to_vec();
    c[0] ^= 1;
    assert_eq!(retransmit(&mut h, w as u64 + 284, &c), CONFLICTING);
}

#[test]
fn bytes_after_a_body_are_remembered_whole() {
    let data = pattern(1400);
    let mut h = H::with_syn(ReassemblyConfig::default(), 1);
    h.s.set_skip(0, 1000);
    h.at(0, &data);
    let mut c = data[1000..].to_vec();
    c[200] ^= 0xff;
    assert_eq!(retransmit(&mut h, 1000, &c), CONFLICTING);
    assert_eq!(retransmit(&mut h, 1000, &data[1000..]), CONSISTENT);
}

proptest! {
    /// The remembered-bits helpers against a model of one bool per bit.
    #[test]
    fn bit_ranges_match_a_model(
        words in 1usize..6,
        ops in prop::collection::vec((0usize..400, 0usize..400, any::<bool>()), 0..20),
        probe in (0usize..400, 0usize..400, any::<bool>()),
    ) {
        let mut bits = vec![0u64; words];
        let mut model = vec![false; words * 64];
        for (a, b, on) in ops {
            let (a, b) = (a.min(b), a.max(b));
            set_bits(&mut bits, a, b, on);
            for m in model.iter_mut().take(b).skip(a) {
                *m = on;
            }
        }
        for (p, &m) in model.iter().enumerate() {
            prop_assert_eq!(bit(&bits, p), m);
        }
        prop_assert!(!bit(&bits, words * 64));
        let (p, end, value) = probe;
        let (p, end) = (p.min(end), p.max(end));
        let want = (p..end)
            .find(|&q| model.get(q).copied().unwrap_or(false) != value)
            .unwrap_or(end);
        prop_assert_eq!(next_change(&bits, p, end, value), want);
    }

    /// With a skipped body anywhere, any segmentation, and a retransmission
    /// anywhere: a faithful copy never conflicts, and a copy with one byte
    /// changed outside the body, inside the window, always does.
    #[test]
    fn retransmissions_around_a_skipped_body(
        len in 300usize..5000,
        isn in isn_strategy(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        body in (any::<Index>(), any::<Index>()),
        range in (any::<Index>(), any::<Index>()),
        flip in any::<Index>(),
    ) {
        let data = pattern(len);
        let mut h = H::with_syn(roomy(), isn);
        let (x, y) = (body.0.index(len), body.1.index(len));
        let (body_from, body_to) = (x.min(y), x.max(y));
        let (segs, _) = arrivals(len, &cuts, &[], &[], 0);
        for (a, b) in segs {
            h.s.set_skip(body_from as u64, body_to as u64);
            h.at(a as u64, &data[a..b]);
        }
        prop_assert_eq!(h.out.bytes.as_slice(), data.as_slice());
        let (x, y) = (range.0.index(len), range.1.index(len));
        let (a, b) = (x.min(y), x.max(y) + 1);
        let faithful = retransmit(&mut h, a as u64, &data[a..b]);
        prop_assert_eq!(faithful.overlaps_conflicting, 0);
        let p = a + flip.index(b - a);
        let mut copy = data[a..b].to_vec();
        copy[p - a] ^= 0x5a;
        let changed = retransmit(&mut h, a as u64, &copy);
        let window_from = len.saturating_sub(h.cfg.recent_window);
        if p >= window_from && !(body_from..body_to).contains(&p) {
            prop_assert_eq!(changed.overlaps_conflicting, 1);
        }
        prop_assert_eq!(h.out.bytes.as_slice(), data.as_slice());
    }
}

proptest! {
    /// A sample's bits set by the short path, as the general one sets them.
    #[test]
    fn sample_bits_are_set_bits(
        before in prop::collection::vec(any::<u64>(), 1..5),
        from in 0usize..320,
    ) {
        let mut short = before.clone();
        let mut general = before;
        set_sample_bits(&mut short, from);
        set_bits(&mut general, from, from + BODY_SAMPLE as usize, true);
        prop_assert_eq!(short, general);
    }
}

proptest! {
    #[test]
    fn ring_index_is_the_remainder(o in any::<u64>(), w in prop_oneof![1usize..5000, Just(2048), Just(1 << 20)]) {
        prop_assert_eq!(ring_index(o, w) as u64, o % w as u64);
    }
}

/// A reset stream is a new one but for its buffers' room: held bytes given
/// back, nothing remembered, not started. In a second life it delivers,
/// and finds overlaps, as a new stream does.
#[test]
fn a_reset_stream_serves_as_a_new_one() {
    let data: Vec<u8> = (0u8..200).collect();
    let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    let life = |h: &mut H, bytes: &[u8]| {
        assert!(!h.at(0, &bytes[..60]));
        assert!(!h.at(120, &bytes[120..]));
        assert!(!h.at(10, &other[10..30]));
        assert!(!h.at(60, &bytes[60..120]));
        h.flush();
    };
    let mut used = H::with_syn(ReassemblyConfig::default(), 99);
    assert!(!used.at(0, &other[..80]));
    assert!(!used.at(150, &other[150..]));
    assert!(used.s.held_bytes() > 0);
    used.s.reset(&mut used.budget);
    assert_eq!(used.budget.held, 0);
    assert_eq!(format!("{:?}", used.s), format!("{:?}", Stream::default()));

    used.ev = StreamEvents::default();
    used.out = Sink::default();
    used.isn = 5000;
    assert!(!used.raw(5000, true, false, b"", 0));
    life(&mut used, &data);
    let mut fresh = H::with_syn(ReassemblyConfig::default(), 5000);
    life(&mut fresh, &data);
    assert_eq!(used.out.log, fresh.out.log);
    assert_eq!(used.ev, fresh.ev);
    assert_eq!(fresh.ev.overlaps_conflicting, 1);
}

/// A reset keeps a short list of held pieces for the next stream, not one
/// that many pieces grew (it would sit idle among the kept candidates).
#[test]
fn a_reset_keeps_only_a_short_list_of_pieces() {
    for (pieces, kept) in [(4, true), (KEPT_PIECES + 1, false)] {
        let mut h = H::with_syn(ReassemblyConfig::default(), 7);
        for i in 0..pieces {
            assert!(!h.at(10 + 2 * i as u64, b"x"));
        }
        assert_eq!(h.s.held.len(), pieces);
        h.s.reset(&mut h.budget);
        assert_eq!(h.budget.held, 0);
        assert!(h.s.held.is_empty());
        assert_eq!(h.s.held.capacity() > 0, kept, "{pieces} pieces");
        assert!(h.s.held.capacity() <= KEPT_PIECES);
    }
}
