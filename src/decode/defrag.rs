//! Bounded IPv4/IPv6 fragment reassembly with a "first data wins" policy.
//!
//! This module owns one job: holding IP fragments until their datagram is
//! whole, within fixed caps (datagrams at once, fragments per datagram,
//! bytes per datagram, bytes held in total), on packet time (the capture
//! timestamps the caller passes in, never the wall clock). A complete
//! datagram is handed back as one contiguous payload, borrowed until the next
//! call.
//!
//! It must not:
//! - parse IP headers: the caller extracts the key, the byte offset, the
//!   More-Fragments flag and the fragment's payload;
//! - allocate by a claimed length: memory grows only with fragment bytes
//!   actually received and stored, and those are counted against
//!   [`DefragConfig::max_total_bytes`] at all times;
//! - let a later fragment overwrite bytes already held: overlapping bytes are
//!   compared instead, and agreeing vs differing overlaps are counted
//!   (differing overlaps are the IDS-evasion trick of Ptacek & Newsham, 1998);
//! - panic on any input.
//!
//! Policies chosen here:
//! - Eviction at [`DefragConfig::max_datagrams`]: the datagram whose first
//!   fragment arrived earliest (by packet time, ties by arrival order) is
//!   dropped, in O(log n).
//! - Timeout: a datagram is dropped once its age since its *first* fragment
//!   exceeds [`DefragConfig::timeout_nanos`] (as RFC 8200 and Linux do), so
//!   a slow trickle of fragments cannot keep it alive forever. Time need not
//!   be monotonic: a timestamp that goes backwards simply expires nothing.
//! - A [`DropReason::Malformed`] fragment is dropped and counted, and the
//!   datagram it belongs to is *kept* unchanged: the first final fragment
//!   fixes the end just as the first bytes fix the data, so a spoofed
//!   fragment cannot destroy a datagram in progress.
//! - A fragment refused by a cap leaves its datagram unchanged too (an
//!   overlap it showed is still counted and flagged: it was seen on the wire).
//! - Overlap counters count fragments, not bytes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Identifies the datagram a fragment belongs to (RFC 791 / RFC 8200).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub id: u32,
}

/// Caps and timeout. A cap of 0 for `max_datagrams` or
/// `max_fragments_per_datagram` is treated as 1.
#[derive(Clone, Copy, Debug)]
pub struct DefragConfig {
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// Fragments accepted into one datagram (duplicates included).
    pub max_fragments_per_datagram: usize,
    /// Largest reassembled payload accepted: a fragment ending beyond it is
    /// dropped as [`DropReason::TooLarge`].
    pub max_datagram_bytes: usize,
    /// All fragment bytes held, summed over datagrams.
    pub max_total_bytes: usize,
    /// Packet-time age (since the first fragment) after which an incomplete
    /// datagram is dropped.
    pub timeout_nanos: u64,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            max_datagrams: 1024,
            max_fragments_per_datagram: 64,
            max_datagram_bytes: 65535,
            max_total_bytes: 4 * 1024 * 1024,
            timeout_nanos: 30_000_000_000,
        }
    }
}

/// Counters; they only ever grow.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct DefragStats {
    /// Calls to [`Defragmenter::push`], whatever their outcome.
    pub fragments: u64,
    /// Datagrams returned as [`DefragOutcome::Complete`], unfragmented
    /// pieces included.
    pub datagrams_completed: u64,
    /// Incomplete datagrams dropped by timeout.
    pub timed_out: u64,
    /// Oldest incomplete datagrams evicted because `max_datagrams` was reached.
    pub evicted_datagram_cap: u64,
    /// Fragments refused because `max_total_bytes` would be exceeded.
    pub dropped_total_bytes_cap: u64,
    /// Fragments whose end lies beyond `max_datagram_bytes` (or beyond any
    /// representable offset).
    pub dropped_too_large: u64,
    /// Fragments refused because their datagram already had
    /// `max_fragments_per_datagram` fragments.
    pub dropped_too_many_fragments: u64,
    /// Fragments that overlapped bytes already held, all overlapping bytes
    /// equal (harmless retransmission). Counted per fragment, not per byte.
    pub overlaps_consistent: u64,
    /// Fragments that overlapped bytes already held with at least one byte
    /// differing: an evasion attempt. The held bytes were kept. Counted per
    /// fragment, not per byte.
    pub overlaps_conflicting: u64,
    /// Fragments dropped as inconsistent: offset not a multiple of 8,
    /// non-final fragment empty or not a multiple of 8 long, a second final
    /// fragment with a different end, data beyond a known end, or a final
    /// fragment ending before data already held.
    pub malformed: u64,
}

/// What [`Defragmenter::push`] did with a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefragOutcome<'a> {
    /// Fragment stored; the datagram is not complete yet.
    Held,
    /// The datagram is complete: its reassembled payload (the bytes after the
    /// IP header(s), i.e. starting with the transport header). Borrowed from
    /// the defragmenter; valid until the next call.
    /// `conflicting_overlap` says whether any overlap in this datagram had
    /// differing bytes.
    Complete {
        payload: &'a [u8],
        conflicting_overlap: bool,
    },
    /// The fragment was not stored (reason counted in stats).
    Dropped(DropReason),
}

/// Why a fragment was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    TooLarge,
    TooManyFragments,
    TotalBytesCap,
    Malformed,
}

/// A stored run of bytes at `start` in the datagram payload.
#[derive(Debug)]
struct Run {
    start: usize,
    data: Vec<u8>,
}

/// Order key: (packet time of the first fragment, arrival sequence number).
type OrderKey = (u64, u64);

#[derive(Debug)]
struct Datagram {
    order: OrderKey,
    /// Sorted by `start`, pairwise disjoint, all within `[0, max_end)`.
    runs: Vec<Run>,
    /// Sum of the runs' lengths: the bytes this datagram holds.
    bytes: usize,
    /// Highest end offset stored so far (0 if nothing stored).
    max_end: usize,
    /// Payload length, once a final fragment has been accepted.
    end: Option<usize>,
    /// Fragments accepted into this datagram.
    fragments: usize,
    /// Whether any overlap had differing bytes.
    conflicting: bool,
}

/// The part `[from, to)` (absolute offsets) of `bytes`, which sits at `base`;
/// `None` if that is not inside `bytes`.
fn slice_at(bytes: &[u8], base: usize, from: usize, to: usize) -> Option<&[u8]> {
    bytes.get(from.checked_sub(base)?..to.checked_sub(base)?)
}

/// How a fragment relates to the bytes a datagram already holds.
struct Overlay {
    /// Parts of the fragment not yet held, as absolute `[start, end)` ranges,
    /// ascending.
    new_ranges: Vec<(usize, usize)>,
    new_bytes: usize,
    overlapped: bool,
    conflicting: bool,
}

impl Datagram {
    /// Compares `data` at `start` with the held runs, without changing anything.
    fn overlay(&self, start: usize, data: &[u8]) -> Overlay {
        let end = start.saturating_add(data.len());
        let mut ov = Overlay {
            new_ranges: Vec::new(),
            new_bytes: 0,
            overlapped: false,
            conflicting: false,
        };
        let mut cursor = start;
        for run in &self.runs {
            if cursor >= end {
                break;
            }
            let run_end = run.start.saturating_add(run.data.len());
            if run_end <= cursor {
                continue;
            }
            if run.start >= end {
                break;
            }
            if run.start > cursor {
                ov.new_ranges.push((cursor, run.start));
                ov.new_bytes = ov
                    .new_bytes
                    .saturating_add(run.start.saturating_sub(cursor));
                cursor = run.start;
            }
            // Here run.start <= cursor < min(run_end, end).
            let overlap_end = run_end.min(end);
            let held = slice_at(&run.data, run.start, cursor, overlap_end);
            let incoming = slice_at(data, start, cursor, overlap_end);
            ov.overlapped = true;
            if held != incoming {
                ov.conflicting = true;
            }
            cursor = overlap_end;
        }
        if cursor < end {
            ov.new_ranges.push((cursor, end));
            ov.new_bytes = ov.new_bytes.saturating_add(end.saturating_sub(cursor));
        }
        ov
    }

    /// Stores the parts of `data` (at `start`) listed in `ranges`, which must
    /// come from [`Datagram::overlay`] on the current runs. Returns the number
    /// of bytes stored.
    fn store(&mut self, start: usize, data: &[u8], ranges: &[(usize, usize)]) -> usize {
        let mut stored = 0usize;
        for &(from, to) in ranges {
            let Some(piece) = slice_at(data, start, from, to) else {
                continue;
            };
            let at = self.runs.partition_point(|r| r.start < from);
            self.runs.insert(
                at,
                Run {
                    start: from,
                    data: piece.to_vec(),
                },
            );
            self.bytes = self.bytes.saturating_add(piece.len());
            stored = stored.saturating_add(piece.len());
            self.max_end = self.max_end.max(to);
        }
        stored
    }

    /// All of `[0, end)` is covered. Runs are disjoint and lie within
    /// `[0, end)` once the end is known, so counting bytes suffices.
    fn is_complete(&self) -> bool {
        self.end == Some(self.bytes)
    }
}

/// Reassembles IP fragments within the caps of a [`DefragConfig`].
#[derive(Debug)]
pub struct Defragmenter {
    cfg: DefragConfig,
    /// std's randomly keyed hasher: keys are attacker-chosen.
    datagrams: HashMap<FragmentKey, Datagram>,
    /// Datagrams by age, oldest first: drives timeout and eviction.
    order: BTreeMap<OrderKey, FragmentKey>,
    next_seq: u64,
    held_bytes: usize,
    /// Reassembled payload of the last completed datagram.
    out: Vec<u8>,
    stats: DefragStats,
}

impl Defragmenter {
    #[must_use]
    pub fn new(cfg: DefragConfig) -> Self {
        let cfg = DefragConfig {
            max_datagrams: cfg.max_datagrams.max(1),
            max_fragments_per_datagram: cfg.max_fragments_per_datagram.max(1),
            ..cfg
        };
        Defragmenter {
            cfg,
            datagrams: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            held_bytes: 0,
            out: Vec::new(),
            stats: DefragStats::default(),
        }
    }

    /// `offset` is the fragment's byte offset in the datagram payload (IPv4
    /// fragment offset × 8, IPv6 likewise), `more` is the More-Fragments flag,
    /// `data` the fragment's payload bytes.
    ///
    /// A piece with `offset == 0` and `more == false` completes at once when
    /// no datagram with its key is in progress; otherwise it is a (final)
    /// fragment of that datagram.
    ///
    /// Also expires datagrams older than the timeout relative to `now_nanos`
    /// (cheaply: only the oldest datagrams are looked at).
    pub fn push(
        &mut self,
        now_nanos: u64,
        key: FragmentKey,
        offset: u32,
        more: bool,
        data: &[u8],
    ) -> DefragOutcome<'_> {
        self.stats.fragments = self.stats.fragments.saturating_add(1);
        self.expire(now_nanos);

        let (start, end) = match self.check_fragment(offset, more, data) {
            Ok(range) => range,
            Err(reason) => return self.drop_fragment(reason),
        };

        if !self.datagrams.contains_key(&key) {
            if start == 0 && !more {
                // Not actually fragmented (e.g. an IPv6 atomic fragment).
                self.out.clear();
                self.out.extend_from_slice(data);
                self.stats.datagrams_completed = self.stats.datagrams_completed.saturating_add(1);
                return DefragOutcome::Complete {
                    payload: &self.out,
                    conflicting_overlap: false,
                };
            }
            return self.start_datagram(now_nanos, key, start, end, more, data);
        }

        let cfg = self.cfg;
        let stats = &mut self.stats;
        let Some(dg) = self.datagrams.get_mut(&key) else {
            return DefragOutcome::Held; // unreachable: checked above
        };

        // The first final fragment fixes the end; later ones must agree.
        let malformed = match dg.end {
            Some(known) => end > known || (!more && end != known),
            None => !more && dg.max_end > end,
        };
        if malformed {
            return self.drop_fragment(DropReason::Malformed);
        }
        if dg.fragments >= cfg.max_fragments_per_datagram {
            return self.drop_fragment(DropReason::TooManyFragments);
        }

        let ov = dg.overlay(start, data);
        if ov.overlapped {
            // Recorded even if a cap refuses the new bytes below: the
            // conflict was observed on the wire either way.
            if ov.conflicting {
                dg.conflicting = true;
                stats.overlaps_conflicting = stats.overlaps_conflicting.saturating_add(1);
            } else {
                stats.overlaps_consistent = stats.overlaps_consistent.saturating_add(1);
            }
        }
        if ov.new_bytes > cfg.max_total_bytes.saturating_sub(self.held_bytes) {
            return self.drop_fragment(DropReason::TotalBytesCap);
        }

        let stored = dg.store(start, data, &ov.new_ranges);
        dg.fragments = dg.fragments.saturating_add(1);
        if !more {
            dg.end = Some(end);
        }
        self.held_bytes = self.held_bytes.saturating_add(stored);

        if dg.is_complete() {
            self.finish(key)
        } else {
            DefragOutcome::Held
        }
    }

    /// Drops datagrams whose first fragment is older than the timeout
    /// relative to `now_nanos` (call on packet time progress). Costs
    /// O(log n) per datagram dropped plus one look at the oldest.
    pub fn expire(&mut self, now_nanos: u64) {
        while let Some((&(created, seq), &key)) = self.order.first_key_value() {
            if now_nanos.saturating_sub(created) <= self.cfg.timeout_nanos {
                break;
            }
            self.remove((created, seq), key);
            self.stats.timed_out = self.stats.timed_out.saturating_add(1);
        }
    }

    #[must_use]
    pub fn stats(&self) -> &DefragStats {
        &self.stats
    }

    /// Fragment bytes currently stored, summed over datagrams; never more
    /// than `max_total_bytes`.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Incomplete datagrams currently held; never more than `max_datagrams`.
    #[must_use]
    pub fn held_datagrams(&self) -> usize {
        self.datagrams.len()
    }

    /// The configuration in force (after caps of 0 were raised to 1).
    #[must_use]
    pub fn config(&self) -> &DefragConfig {
        &self.cfg
    }

    /// Checks a fragment on its own; returns its `[start, end)` in the payload.
    fn check_fragment(
        &self,
        offset: u32,
        more: bool,
        data: &[u8],
    ) -> Result<(usize, usize), DropReason> {
        let start = usize::try_from(offset).map_err(|_| DropReason::TooLarge)?;
        let end = start.checked_add(data.len()).ok_or(DropReason::TooLarge)?;
        if end > self.cfg.max_datagram_bytes {
            return Err(DropReason::TooLarge);
        }
        if start % 8 != 0 || (more && (data.is_empty() || data.len() % 8 != 0)) {
            return Err(DropReason::Malformed);
        }
        Ok((start, end))
    }

    fn start_datagram(
        &mut self,
        now_nanos: u64,
        key: FragmentKey,
        start: usize,
        end: usize,
        more: bool,
        data: &[u8],
    ) -> DefragOutcome<'_> {
        if data.len() > self.cfg.max_total_bytes.saturating_sub(self.held_bytes) {
            return self.drop_fragment(DropReason::TotalBytesCap);
        }
        while self.datagrams.len() >= self.cfg.max_datagrams {
            let Some((&order, &oldest)) = self.order.first_key_value() else {
                break;
            };
            self.remove(order, oldest);
            self.stats.evicted_datagram_cap = self.stats.evicted_datagram_cap.saturating_add(1);
        }
        let order = (now_nanos, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        let runs = if data.is_empty() {
            Vec::new()
        } else {
            vec![Run {
                start,
                data: data.to_vec(),
            }]
        };
        self.datagrams.insert(
            key,
            Datagram {
                order,
                runs,
                bytes: data.len(),
                max_end: end,
                end: if more { None } else { Some(end) },
                fragments: 1,
                conflicting: false,
            },
        );
        self.order.insert(order, key);
        self.held_bytes = self.held_bytes.saturating_add(data.len());
        // A new datagram is complete at once only if it starts at 0 and is
        // final, which `push` answers before getting here.
        DefragOutcome::Held
    }

    /// Removes a complete datagram and returns its assembled payload.
    fn finish(&mut self, key: FragmentKey) -> DefragOutcome<'_> {
        let Some(dg) = self.datagrams.remove(&key) else {
            return DefragOutcome::Held; // unreachable: caller holds it
        };
        self.order.remove(&dg.order);
        self.held_bytes = self.held_bytes.saturating_sub(dg.bytes);
        self.out.clear();
        self.out.reserve(dg.bytes);
        for run in &dg.runs {
            debug_assert_eq!(run.start, self.out.len(), "runs must tile the payload");
            self.out.extend_from_slice(&run.data);
        }
        self.stats.datagrams_completed = self.stats.datagrams_completed.saturating_add(1);
        DefragOutcome::Complete {
            payload: &self.out,
            conflicting_overlap: dg.conflicting,
        }
    }

    /// Removes an incomplete datagram (timeout or eviction).
    fn remove(&mut self, order: OrderKey, key: FragmentKey) {
        self.order.remove(&order);
        if let Some(dg) = self.datagrams.remove(&key) {
            self.held_bytes = self.held_bytes.saturating_sub(dg.bytes);
        }
    }

    fn drop_fragment(&mut self, reason: DropReason) -> DefragOutcome<'static> {
        let s = &mut self.stats;
        let counter = match reason {
            DropReason::TooLarge => &mut s.dropped_too_large,
            DropReason::TooManyFragments => &mut s.dropped_too_many_fragments,
            DropReason::TotalBytesCap => &mut s.dropped_total_bytes_cap,
            DropReason::Malformed => &mut s.malformed,
        };
        *counter = counter.saturating_add(1);
        DefragOutcome::Dropped(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: u64 = 1_000_000_000;

    fn key(id: u32) -> FragmentKey {
        FragmentKey {
            src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            protocol: 6,
            id,
        }
    }

    fn key6(id: u32) -> FragmentKey {
        FragmentKey {
            src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            protocol: 17,
            id,
        }
    }

    /// Deterministic pseudo-random generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                let j = self.below(i + 1);
                v.swap(i, j);
            }
        }
    }

    fn payload(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.next() as u8).collect()
    }

    #[derive(Clone, Debug)]
    struct Frag {
        offset: u32,
        more: bool,
        data: Vec<u8>,
    }

    /// Cuts `p` into fragments of `size` bytes (a multiple of 8).
    fn split(p: &[u8], size: usize) -> Vec<Frag> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < p.len() {
            let end = (off + size).min(p.len());
            out.push(Frag {
                offset: off as u32,
                more: end < p.len(),
                data: p[off..end].to_vec(),
            });
            off = end;
        }
        out
    }

    /// Feeds fragments; every one but the last must be `Held`, the last
    /// must complete. Returns (payload, conflicting_overlap).
    fn feed_all(d: &mut Defragmenter, k: FragmentKey, frags: &[Frag]) -> (Vec<u8>, bool) {
        let (last, init) = frags.split_last().expect("at least one fragment");
        for f in init {
            let r = d.push(0, k, f.offset, f.more, &f.data);
            assert_eq!(r, DefragOutcome::Held, "fragment at {} not held", f.offset);
        }
        match d.push(0, k, last.offset, last.more, &last.data) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
            } => (payload.to_vec(), conflicting_overlap),
            other => panic!("last fragment did not complete: {other:?}"),
        }
    }

    fn frag(offset: u32, more: bool, data: &[u8]) -> Frag {
        Frag {
            offset,
            more,
            data: data.to_vec(),
        }
    }

    #[test]
    fn unfragmented_piece_completes_immediately() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(100, 1);
        match d.push(0, key(1), 0, false, &p) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
            } => {
                assert_eq!(payload, &p[..]);
                assert!(!conflicting_overlap);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.held_datagrams(), 0);
        assert_eq!(d.stats().datagrams_completed, 1);
    }

    #[test]
    fn in_order_reassembles_exactly() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(3001, 2);
        let frags = split(&p, 1480);
        assert_eq!(frags.len(), 3);
        let (got, conflict) = feed_all(&mut d, key(1), &frags);
        assert_eq!(got, p);
        assert!(!conflict);
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.held_datagrams(), 0);
        assert_eq!(d.stats().datagrams_completed, 1);
        assert_eq!(d.stats().fragments, 3);
    }

    #[test]
    fn reverse_order_reassembles_exactly() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(5000, 3);
        let mut frags = split(&p, 512);
        frags.reverse();
        let (got, _) = feed_all(&mut d, key(1), &frags);
        assert_eq!(got, p);
        assert_eq!(d.held_bytes(), 0);
    }

    #[test]
    fn shuffled_reassembles_exactly() {
        let mut rng = Rng::new(4);
        for round in 0..50 {
            let mut d = Defragmenter::new(DefragConfig::default());
            let p = payload(1 + rng.below(9000), round);
            let mut frags = split(&p, 8 * (20 + rng.below(180)));
            rng.shuffle(&mut frags);
            let (got, _) = feed_all(&mut d, key(round as u32), &frags);
            assert_eq!(got, p);
            assert_eq!(d.held_bytes(), 0);
        }
    }

    #[test]
    fn tiny_eight_byte_fragments_up_to_the_fragment_cap() {
        let mut d = Defragmenter::new(DefragConfig::default());
        // 64 fragments: exactly the default cap.
        let p = payload(64 * 8, 5);
        let mut frags = split(&p, 8);
        assert_eq!(frags.len(), 64);
        Rng::new(5).shuffle(&mut frags);
        let (got, _) = feed_all(&mut d, key(1), &frags);
        assert_eq!(got, p);
    }

    #[test]
    fn too_many_fragments_dropped() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(65 * 8, 6);
        let frags = split(&p, 8);
        for f in &frags[..64] {
            assert_eq!(
                d.push(0, key(1), f.offset, f.more, &f.data),
                DefragOutcome::Held
            );
        }
        let f = &frags[64];
        assert_eq!(
            d.push(0, key(1), f.offset, f.more, &f.data),
            DefragOutcome::Dropped(DropReason::TooManyFragments)
        );
        assert_eq!(d.stats().dropped_too_many_fragments, 1);
        assert_eq!(d.held_bytes(), 64 * 8);
    }

    #[test]
    fn consistent_overlaps_counted_and_result_exact() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(40, 7);
        let frags = [
            frag(0, true, &p[0..16]),
            frag(8, true, &p[8..24]),    // overlaps [8,16)
            frag(0, true, &p[0..16]),    // exact duplicate
            frag(16, false, &p[16..40]), // overlaps [16,24)
        ];
        let (got, conflict) = feed_all(&mut d, key(1), &frags);
        assert_eq!(got, p);
        assert!(!conflict);
        assert_eq!(d.stats().overlaps_consistent, 3);
        assert_eq!(d.stats().overlaps_conflicting, 0);
    }

    #[test]
    fn conflicting_overlap_keeps_first_bytes() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let first = [0xAAu8; 16];
        let second = [0xBBu8; 16];
        assert_eq!(d.push(0, key(1), 0, true, &first), DefragOutcome::Held);
        // [8,24): [8,16) conflicts and is ignored, [16,24) is new and used.
        assert_eq!(d.push(0, key(1), 8, true, &second), DefragOutcome::Held);
        assert_eq!(d.stats().overlaps_conflicting, 1);
        assert_eq!(d.held_bytes(), 24);
        match d.push(0, key(1), 24, false, &[0xCC; 8]) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
            } => {
                let mut want = vec![0xAA; 16];
                want.extend_from_slice(&[0xBB; 8]);
                want.extend_from_slice(&[0xCC; 8]);
                assert_eq!(payload, &want[..]);
                assert!(conflicting_overlap);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.stats().overlaps_consistent, 0);
    }

    #[test]
    fn later_fragment_covering_earlier_one_does_not_overwrite() {
        // Ptacek & Newsham: a later fragment that fully covers an earlier one.
        let mut d = Defragmenter::new(DefragConfig::default());
        let evil = *b"EVILEVIL";
        assert_eq!(d.push(0, key(1), 8, true, &evil), DefragOutcome::Held);
        let benign = payload(32, 8);
        match d.push(0, key(1), 0, false, &benign) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
            } => {
                assert_eq!(&payload[..8], &benign[..8]);
                assert_eq!(&payload[8..16], &evil);
                assert_eq!(&payload[16..], &benign[16..]);
                assert!(conflicting_overlap);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.stats().overlaps_conflicting, 1);
        assert_eq!(d.held_bytes(), 0);
    }

    #[test]
    fn conflict_flag_is_per_datagram() {
        let mut d = Defragmenter::new(DefragConfig::default());
        assert_eq!(d.push(0, key(1), 0, true, &[1; 8]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(1), 0, true, &[2; 8]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(2), 0, true, &[1; 8]), DefragOutcome::Held);
        match d.push(0, key(2), 8, false, &[3; 8]) {
            DefragOutcome::Complete {
                conflicting_overlap,
                ..
            } => assert!(!conflicting_overlap),
            other => panic!("{other:?}"),
        }
        match d.push(0, key(1), 8, false, &[3; 8]) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
            } => {
                assert!(conflicting_overlap);
                assert_eq!(&payload[..8], &[1; 8]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timeout_drops_incomplete_datagram() {
        let timeout = 30 * SEC;
        let mut d = Defragmenter::new(DefragConfig::default());
        assert_eq!(d.push(SEC, key(1), 0, true, &[0; 16]), DefragOutcome::Held);
        // Exactly `timeout` old: not older than the timeout yet.
        d.expire(SEC + timeout);
        assert_eq!(d.held_datagrams(), 1);
        assert_eq!(d.stats().timed_out, 0);
        d.expire(SEC + timeout + 1);
        assert_eq!(d.held_datagrams(), 0);
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.stats().timed_out, 1);
        // The late rest of it starts a new datagram, which cannot complete.
        assert_eq!(
            d.push(SEC + timeout + 2, key(1), 16, false, &[0; 8]),
            DefragOutcome::Held
        );
        assert_eq!(d.held_datagrams(), 1);
    }

    #[test]
    fn push_expires_old_datagrams_and_age_counts_from_first_fragment() {
        let mut d = Defragmenter::new(DefragConfig {
            timeout_nanos: 10 * SEC,
            ..DefragConfig::default()
        });
        assert_eq!(d.push(0, key(1), 0, true, &[0; 8]), DefragOutcome::Held);
        assert_eq!(
            d.push(5 * SEC, key(2), 0, true, &[0; 8]),
            DefragOutcome::Held
        );
        // Trickling more fragments into key 1 does not keep it alive.
        assert_eq!(
            d.push(9 * SEC, key(1), 8, true, &[0; 8]),
            DefragOutcome::Held
        );
        assert_eq!(
            d.push(11 * SEC, key(3), 0, true, &[0; 8]),
            DefragOutcome::Held
        );
        assert_eq!(d.stats().timed_out, 1);
        assert_eq!(d.held_datagrams(), 2);
        assert_eq!(d.held_bytes(), 16);
        // Time going backwards expires nothing and does not panic.
        d.expire(0);
        assert_eq!(d.held_datagrams(), 2);
        assert_eq!(d.push(1, key(4), 0, true, &[0; 8]), DefragOutcome::Held);
        d.expire(16 * SEC);
        assert_eq!(d.stats().timed_out, 3, "key 2 and key 4 expired");
        assert_eq!(d.held_datagrams(), 1);
        d.expire(u64::MAX);
        assert_eq!(d.held_datagrams(), 0);
        assert_eq!(d.held_bytes(), 0);
    }

    #[test]
    fn datagram_cap_evicts_oldest() {
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 3,
            ..DefragConfig::default()
        });
        for id in 1..=3 {
            assert_eq!(
                d.push(u64::from(id), key(id), 0, true, &[id as u8; 8]),
                DefragOutcome::Held
            );
        }
        assert_eq!(d.held_datagrams(), 3);
        assert_eq!(d.push(4, key(4), 0, true, &[4; 8]), DefragOutcome::Held);
        assert_eq!(d.held_datagrams(), 3);
        assert_eq!(d.stats().evicted_datagram_cap, 1);
        assert_eq!(d.held_bytes(), 24);
        // Key 1 was evicted: its final fragment starts a new datagram
        // (evicting key 2, now the oldest) instead of completing.
        assert_eq!(d.push(5, key(1), 8, false, &[1; 8]), DefragOutcome::Held);
        assert_eq!(d.stats().evicted_datagram_cap, 2);
        // Keys 3 and 4 survive and complete.
        for id in [3u32, 4] {
            match d.push(6, key(id), 8, false, &[9; 8]) {
                DefragOutcome::Complete { payload, .. } => {
                    assert_eq!(&payload[..8], &[id as u8; 8]);
                }
                other => panic!("key {id}: {other:?}"),
            }
        }
        // Key 2 was evicted.
        assert_eq!(d.push(7, key(2), 8, false, &[9; 8]), DefragOutcome::Held);
        assert_eq!(d.held_datagrams(), 2);
    }

    #[test]
    fn total_bytes_cap_refuses_and_counts() {
        let mut d = Defragmenter::new(DefragConfig {
            max_total_bytes: 100,
            ..DefragConfig::default()
        });
        assert_eq!(d.push(0, key(1), 0, true, &[1; 64]), DefragOutcome::Held);
        assert_eq!(
            d.push(0, key(2), 0, true, &[2; 64]),
            DefragOutcome::Dropped(DropReason::TotalBytesCap)
        );
        assert_eq!(
            d.push(0, key(1), 64, true, &[1; 40]),
            DefragOutcome::Dropped(DropReason::TotalBytesCap)
        );
        assert_eq!(d.stats().dropped_total_bytes_cap, 2);
        assert_eq!(d.held_bytes(), 64);
        assert_eq!(d.held_datagrams(), 1);
        // A duplicate adds no bytes and is still accepted.
        assert_eq!(d.push(0, key(1), 0, true, &[1; 64]), DefragOutcome::Held);
        // Exactly filling the cap is allowed.
        assert_eq!(d.push(0, key(1), 64, true, &[1; 32]), DefragOutcome::Held);
        assert_eq!(d.held_bytes(), 96);
        match d.push(0, key(1), 96, false, &[1; 4]) {
            DefragOutcome::Complete { payload, .. } => assert_eq!(payload, &[1; 100][..]),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.held_bytes(), 0);
    }

    #[test]
    fn random_fragments_never_exceed_caps() {
        let cfg = DefragConfig {
            max_datagrams: 40,
            max_fragments_per_datagram: 16,
            max_datagram_bytes: 65535,
            max_total_bytes: 20_000,
            timeout_nanos: 2 * SEC,
        };
        let mut d = Defragmenter::new(cfg);
        let mut rng = Rng::new(0xdead_beef);
        let mut now = 0u64;
        let mut completed = 0u64;
        for i in 0..20_000 {
            now += rng.below(1_000_000) as u64;
            let k = if rng.below(2) == 0 {
                key(rng.below(100) as u32)
            } else {
                key6(rng.below(100) as u32)
            };
            let offset = match rng.below(10) {
                0 => u32::MAX - rng.below(64) as u32,
                1 => 0,
                _ => (rng.below(2048) * 8) as u32,
            };
            let len = match rng.below(10) {
                0 => rng.below(4000),
                _ => 8 * rng.below(200),
            };
            let more = rng.below(3) != 0;
            let data = payload(len, i);
            match d.push(now, k, offset, more, &data) {
                DefragOutcome::Complete { payload, .. } => {
                    completed += 1;
                    assert!(payload.len() <= cfg.max_datagram_bytes);
                }
                DefragOutcome::Held | DefragOutcome::Dropped(_) => {}
            }
            assert!(
                d.held_bytes() <= cfg.max_total_bytes,
                "push {i}: {}",
                d.held_bytes()
            );
            assert!(d.held_datagrams() <= cfg.max_datagrams);
            if rng.below(100) == 0 {
                d.expire(now);
                assert!(d.held_bytes() <= cfg.max_total_bytes);
            }
        }
        let s = d.stats();
        assert_eq!(s.fragments, 20_000);
        assert_eq!(s.datagrams_completed, completed);
        assert!(completed > 0);
        // The loop really exercised the caps and drop paths.
        assert!(s.dropped_total_bytes_cap > 0, "{s:?}");
        assert!(s.evicted_datagram_cap > 0, "{s:?}");
        assert!(s.dropped_too_large > 0, "{s:?}");
        assert!(s.malformed > 0, "{s:?}");
        assert!(s.timed_out > 0, "{s:?}");
        d.expire(u64::MAX);
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.held_datagrams(), 0);
    }

    #[test]
    fn offset_near_u32_max_does_not_panic() {
        let mut d = Defragmenter::new(DefragConfig::default());
        for offset in [u32::MAX, u32::MAX - 7, u32::MAX - 8, 0xFFFF_FFF8] {
            for more in [true, false] {
                for len in [0usize, 1, 8, 16, 100] {
                    let r = d.push(0, key(1), offset, more, &vec![0; len]);
                    assert_eq!(r, DefragOutcome::Dropped(DropReason::TooLarge));
                }
            }
        }
        assert_eq!(d.held_bytes(), 0);
        // With the per-datagram cap lifted, such a fragment is stored as just
        // its own bytes, never as a buffer up to its offset.
        let mut d = Defragmenter::new(DefragConfig {
            max_datagram_bytes: usize::MAX,
            ..DefragConfig::default()
        });
        assert_eq!(
            d.push(0, key(1), 0xFFFF_FFF8, true, &[7; 16]),
            DefragOutcome::Held
        );
        assert_eq!(
            d.push(0, key(1), 0xFFFF_FFF0, false, &[7; 16]),
            DefragOutcome::Dropped(DropReason::Malformed)
        );
        assert_eq!(
            d.push(0, key(1), u32::MAX, false, &[7; 16]),
            DefragOutcome::Dropped(DropReason::Malformed)
        );
        assert_eq!(d.held_bytes(), 16);
    }

    #[test]
    fn fragment_beyond_65535_is_too_large() {
        let mut d = Defragmenter::new(DefragConfig::default());
        assert_eq!(
            d.push(0, key(1), 65528, false, &[0; 16]),
            DefragOutcome::Dropped(DropReason::TooLarge)
        );
        assert_eq!(
            d.push(0, key(1), 65536, true, &[0; 8]),
            DefragOutcome::Dropped(DropReason::TooLarge)
        );
        assert_eq!(
            d.push(0, key(1), 0, false, &vec![0; 65536]),
            DefragOutcome::Dropped(DropReason::TooLarge)
        );
        assert_eq!(d.stats().dropped_too_large, 3);
        assert_eq!(d.held_bytes(), 0);
        // Ending exactly at 65535 is fine.
        assert_eq!(
            d.push(0, key(1), 65520, false, &[0; 15]),
            DefragOutcome::Held
        );
        assert_eq!(d.held_bytes(), 15);
    }

    #[test]
    fn interleaved_keys_do_not_mix() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let keys = [key(1), key(2), key6(1), key6(2)];
        let payloads: Vec<Vec<u8>> = (0..4)
            .map(|i| payload(2000 + 8 * i, 100 + i as u64))
            .collect();
        let frag_lists: Vec<Vec<Frag>> = payloads.iter().map(|p| split(p, 256)).collect();
        let mut done = [false; 4];
        for step in 0..frag_lists[0].len() {
            for (i, frags) in frag_lists.iter().enumerate() {
                let f = &frags[step];
                match d.push(0, keys[i], f.offset, f.more, &f.data) {
                    DefragOutcome::Held => {}
                    DefragOutcome::Complete { payload, .. } => {
                        assert_eq!(payload, &payloads[i][..], "key {i}");
                        done[i] = true;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(done, [true; 4]);
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(
            d.stats().overlaps_consistent + d.stats().overlaps_conflicting,
            0
        );
    }

    #[test]
    fn malformed_fragments_are_dropped_and_datagram_kept() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let k = key(1);
        let bad = DefragOutcome::Dropped(DropReason::Malformed);
        // Non-final fragment not a multiple of 8 long, or empty.
        assert_eq!(d.push(0, k, 0, true, &[0; 12]), bad);
        assert_eq!(d.push(0, k, 0, true, &[]), bad);
        // Offset not a multiple of 8.
        assert_eq!(d.push(0, k, 4, false, &[0; 8]), bad);
        assert_eq!(d.held_datagrams(), 0);

        assert_eq!(d.push(0, k, 16, true, &[3; 8]), DefragOutcome::Held);
        // Final fragment ending before data already held.
        assert_eq!(d.push(0, k, 8, false, &[2; 4]), bad);
        // The first accepted final fragment fixes the end at 30.
        assert_eq!(d.push(0, k, 24, false, &[4; 6]), DefragOutcome::Held);
        // A second final fragment with a different end, later or earlier.
        assert_eq!(d.push(0, k, 24, false, &[4; 8]), bad);
        assert_eq!(d.push(0, k, 16, false, &[3; 8]), bad);
        // Data beyond the known end.
        assert_eq!(d.push(0, k, 32, true, &[5; 8]), bad);
        assert_eq!(d.stats().malformed, 7);
        assert_eq!(d.held_datagrams(), 1);
        assert_eq!(d.held_bytes(), 14);
        // The datagram was kept and completes with the first end.
        assert_eq!(d.push(0, k, 8, true, &[2; 8]), DefragOutcome::Held);
        match d.push(0, k, 0, true, &[1; 8]) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
            } => {
                let mut want = vec![1; 8];
                want.extend_from_slice(&[2; 8]);
                want.extend_from_slice(&[3; 8]);
                want.extend_from_slice(&[4; 6]);
                assert_eq!(payload, &want[..]);
                assert!(!conflicting_overlap);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeated_final_fragment_with_same_end_is_fine() {
        let mut d = Defragmenter::new(DefragConfig::default());
        assert_eq!(d.push(0, key(1), 8, false, &[2; 8]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(1), 8, false, &[2; 8]), DefragOutcome::Held);
        // Zero-length final fragment agreeing on the end.
        assert_eq!(d.push(0, key(1), 16, false, &[]), DefragOutcome::Held);
        match d.push(0, key(1), 0, true, &[1; 8]) {
            DefragOutcome::Complete { payload, .. } => {
                let mut want = vec![1; 8];
                want.extend_from_slice(&[2; 8]);
                assert_eq!(payload, &want[..]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.stats().malformed, 0);
        assert_eq!(d.stats().overlaps_consistent, 1);
    }

    #[test]
    fn zero_caps_are_raised_to_one() {
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 0,
            max_fragments_per_datagram: 0,
            ..DefragConfig::default()
        });
        assert_eq!(d.push(0, key(1), 0, true, &[0; 8]), DefragOutcome::Held);
        assert_eq!(
            d.push(0, key(1), 8, false, &[0; 8]),
            DefragOutcome::Dropped(DropReason::TooManyFragments)
        );
        assert_eq!(d.push(0, key(2), 0, true, &[0; 8]), DefragOutcome::Held);
        assert_eq!(d.held_datagrams(), 1);
        assert_eq!(d.stats().evicted_datagram_cap, 1);
    }

    /// Splits `p` at the given cut points (in units of 8 bytes).
    fn split_at_units(p: &[u8], units: &[usize]) -> Vec<Frag> {
        let mut out = Vec::new();
        let mut off = 0;
        let mut i = 0;
        while off < p.len() {
            let size = 8 * units
                .get(i % units.len().max(1))
                .copied()
                .unwrap_or(1)
                .max(1);
            i += 1;
            let end = (off + size).min(p.len());
            out.push(Frag {
                offset: off as u32,
                more: end < p.len(),
                data: p[off..end].to_vec(),
            });
            off = end;
        }
        out
    }

    proptest! {
        #[test]
        fn random_split_duplicate_shuffle_reassembles(
            p in proptest::collection::vec(any::<u8>(), 1..6000),
            units_a in proptest::collection::vec(1usize..64, 1..20),
            units_b in proptest::collection::vec(1usize..64, 1..20),
            dup_mask in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let mut d = Defragmenter::new(DefragConfig {
                max_fragments_per_datagram: 10_000,
                ..DefragConfig::default()
            });
            let a = split_at_units(&p, &units_a);
            // Extra copies with other boundaries: overlapping but consistent.
            let b = split_at_units(&p, &units_b);
            let mut frags = a.clone();
            for (i, f) in a.iter().chain(b.iter()).enumerate() {
                if (dup_mask >> (i % 64)) & 1 == 1 {
                    frags.push(f.clone());
                }
            }
            Rng::new(seed).shuffle(&mut frags);
            let mut result = None;
            for f in &frags {
                match d.push(0, key(9), f.offset, f.more, &f.data) {
                    DefragOutcome::Held => prop_assert!(result.is_none()),
                    DefragOutcome::Complete { payload, conflicting_overlap } => {
                        prop_assert!(result.is_none(), "completed twice");
                        prop_assert!(!conflicting_overlap);
                        result = Some(payload.to_vec());
                        // Later duplicates would start a new datagram.
                        break;
                    }
                    DefragOutcome::Dropped(r) => prop_assert!(false, "dropped: {:?}", r),
                }
            }
            prop_assert_eq!(result.as_deref(), Some(&p[..]));
            prop_assert_eq!(d.stats().overlaps_conflicting, 0);
            prop_assert_eq!(d.held_bytes(), 0);
            prop_assert_eq!(d.held_datagrams(), 0);
        }
    }
}
