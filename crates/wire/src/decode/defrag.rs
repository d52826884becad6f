//! Bounded IPv4/IPv6 fragment reassembly with a "first data wins" policy.
//!
//! This module owns one job: holding IP fragments until their datagram is
//! whole, within fixed caps (datagrams at once, fragments per datagram,
//! memory per datagram, memory in total), on packet time (the capture
//! timestamps the caller passes in, never the wall clock). A complete
//! datagram is handed back as one contiguous payload, borrowed until the next
//! call. Datagrams dropped incomplete (timeout, eviction, a cap) are reported
//! through [`Defragmenter::take_lost`], so that the flow they belonged to can
//! be told.
//!
//! It must not:
//! - parse IP headers: the caller extracts the key, the byte offset, the
//!   More-Fragments flag and the fragment's payload;
//! - allocate by a claimed length: memory grows only by pages that received
//!   bytes, and each page is charged (with its bookkeeping) against
//!   [`DefragConfig::max_datagram_memory`] and
//!   [`DefragConfig::max_total_memory`] before it is allocated;
//! - let a later fragment overwrite bytes already held: overlapping bytes are
//!   compared instead, and agreeing vs differing overlaps are counted
//!   (differing overlaps are the IDS-evasion trick of Ptacek & Newsham, 1998);
//! - do work quadratic in the number of fragments: a datagram is a map of
//!   1 KiB pages, each with a bitmap of which 8-byte units arrived (every
//!   offset and every non-final length is a multiple of 8), so a fragment
//!   costs O(its length / 8 + log pages) whatever the order;
//! - panic on any input.
//!
//! Policies chosen here:
//! - Eviction at [`DefragConfig::max_datagrams`], and when the memory in
//!   total would pass its cap: the datagram whose first fragment arrived
//!   earliest (by packet time, ties by arrival order) is dropped, in
//!   O(log n), as Linux does.
//! - A fragment that would take its datagram past
//!   [`DefragConfig::max_datagram_memory`] or
//!   [`DefragConfig::max_fragments_per_datagram`] drops the whole datagram:
//!   it can no longer complete, so holding the rest would only cost memory.
//! - Timeout: a datagram is dropped once its age since its *first* fragment
//!   exceeds [`DefragConfig::timeout_nanos`] (as RFC 8200 and Linux do), so
//!   a slow trickle of fragments cannot keep it alive forever. Time need not
//!   be monotonic: a timestamp that goes backwards simply expires nothing.
//! - A [`DropReason::Malformed`] or [`DropReason::TooLarge`] fragment (one
//!   an endpoint drops too) is dropped and counted, and the datagram it
//!   belongs to is *kept* unchanged: the first final fragment fixes the end
//!   just as the first bytes fix the data, so a spoofed fragment cannot
//!   destroy a datagram in progress.
//! - The fragment count cap counts fragments that added bytes; a fragment
//!   wholly inside bytes already held (a duplicate) stores nothing and is
//!   not counted against it (only compared and counted as an overlap).
//! - Overlap counters count fragments, not bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

/// Identifies the datagram a fragment belongs to (RFC 791 / RFC 8200).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub id: u32,
}

/// Bytes of datagram payload per page.
const PAGE: usize = 1024;
/// 8-byte units per page, and the 64-bit words of its coverage bitmap.
const UNITS: usize = PAGE / 8;
const WORDS: usize = UNITS / 64;

/// A page of a datagram's payload and which of its 8-byte units arrived.
struct Page {
    data: [u8; PAGE],
    covered: [u64; WORDS],
}

impl Page {
    fn has(&self, unit: usize) -> bool {
        self.covered
            .get(unit / 64)
            .is_some_and(|w| w & (1 << (unit % 64)) != 0)
    }
}

/// Memory charged for one page: its allocation and its place in the page
/// map (a B-tree entry, rounded up).
pub(crate) const PAGE_COST: usize = std::mem::size_of::<Page>() + 64;
/// Memory charged for one datagram besides its pages: its state, its
/// entries in the key map and in the age order (rounded up).
pub(crate) const DATAGRAM_COST: usize = std::mem::size_of::<Datagram>() + 128;

/// Lost-datagram reports held until [`Defragmenter::take_lost`] (the caller
/// drains them after every call); past it they are counted, not kept.
const MAX_LOST: usize = 64;

/// Caps and timeout. A cap of 0 for `max_datagrams` or
/// `max_fragments_per_datagram` is treated as 1.
#[derive(Clone, Copy, Debug)]
pub struct DefragConfig {
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// Fragments that added bytes to one datagram. 8,192 is a 64 KiB
    /// datagram in 8-byte fragments, which endpoints accept.
    pub max_fragments_per_datagram: usize,
    /// Largest reassembled payload accepted: a fragment ending beyond it is
    /// dropped as [`DropReason::TooLarge`].
    pub max_datagram_bytes: usize,
    /// Memory one datagram may be charged ([`PAGE_COST`] per page touched,
    /// plus [`DATAGRAM_COST`]).
    pub max_datagram_memory: usize,
    /// Memory charged to all datagrams together.
    pub max_total_memory: usize,
    /// Packet-time age (since the first fragment) after which an incomplete
    /// datagram is dropped.
    pub timeout_nanos: u64,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            max_datagrams: 1024,
            max_fragments_per_datagram: 8192,
            max_datagram_bytes: 65535,
            // A full 64 KiB datagram (64 pages) fits with room to spare.
            max_datagram_memory: 128 * 1024,
            max_total_memory: 4 * 1024 * 1024,
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
    /// Oldest incomplete datagrams evicted to keep within `max_total_memory`.
    pub evicted_memory_cap: u64,
    /// Fragments refused because `max_total_memory` would be exceeded even
    /// with every older datagram evicted (their datagram was dropped).
    pub dropped_total_bytes_cap: u64,
    /// Fragments refused because their datagram would pass
    /// `max_datagram_memory` (their datagram was dropped).
    pub dropped_datagram_memory: u64,
    /// Fragments whose end lies beyond `max_datagram_bytes` (or beyond any
    /// representable offset).
    pub dropped_too_large: u64,
    /// Fragments refused because their datagram already had
    /// `max_fragments_per_datagram` fragments (their datagram was dropped).
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
    /// Lost-datagram reports not kept because the caller had not taken the
    /// earlier ones.
    pub lost_reports_dropped: u64,
}

/// What [`Defragmenter::push`] did with a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DefragOutcome<'a> {
    /// Fragment stored; the datagram is not complete yet.
    Held,
    /// The datagram is complete: its reassembled payload (the bytes after the
    /// IP header(s), i.e. starting with the transport header). Borrowed from
    /// the defragmenter; valid until the next call.
    /// `conflicting_overlap` says whether any overlap in this datagram had
    /// differing bytes; `smallest_fragment` is the length of its shortest
    /// non-final fragment (`usize::MAX` if it had none).
    Complete {
        payload: &'a [u8],
        conflicting_overlap: bool,
        smallest_fragment: usize,
    },
    /// The fragment was not stored (reason counted in stats).
    Dropped(DropReason),
}

/// Why a fragment was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    TooLarge,
    TooManyFragments,
    DatagramMemory,
    TotalBytesCap,
    Malformed,
}

/// A datagram dropped incomplete (timeout, eviction, a cap), or a first
/// fragment refused by a cap: its traffic will never be seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost {
    pub key: FragmentKey,
    /// The first four payload bytes (the TCP ports), if they had arrived.
    pub head: Option<[u8; 4]>,
    /// Length of its shortest non-final fragment (`usize::MAX` if none).
    pub smallest_fragment: usize,
}

/// Order key: (packet time of the first fragment, arrival sequence number).
type OrderKey = (u64, u64);

struct Datagram {
    order: OrderKey,
    /// Page index → page; only pages that received bytes exist.
    pages: BTreeMap<usize, Box<Page>>,
    /// 8-byte units covered (the final fragment's last one may be partial).
    units: usize,
    /// Payload bytes stored.
    bytes: usize,
    /// Memory charged: [`DATAGRAM_COST`] plus [`PAGE_COST`] per page.
    memory: usize,
    /// Highest end offset stored so far (0 if nothing stored).
    max_end: usize,
    /// Payload length, once a final fragment has been accepted.
    end: Option<usize>,
    /// Fragments that added bytes.
    fragments: usize,
    /// Whether any overlap had differing bytes.
    conflicting: bool,
    /// Shortest non-final fragment accepted.
    smallest: usize,
}

/// What storing a fragment would do, found without changing anything.
#[derive(Default)]
struct Scan {
    new_units: usize,
    new_bytes: usize,
    new_pages: usize,
    overlapped: bool,
    conflicting: bool,
}

impl Datagram {
    fn new(order: OrderKey) -> Self {
        Datagram {
            order,
            pages: BTreeMap::new(),
            units: 0,
            bytes: 0,
            memory: DATAGRAM_COST,
            max_end: 0,
            end: None,
            fragments: 0,
            conflicting: false,
            smallest: usize::MAX,
        }
    }

    /// Compares `data` at `start` (a multiple of 8) with what is held.
    /// Cost: one step per 8-byte unit, one map look-up per page.
    fn scan(&self, start: usize, data: &[u8]) -> Scan {
        let mut s = Scan::default();
        let end = start.saturating_add(data.len());
        let mut at = start;
        while at < end {
            let index = at / PAGE;
            let page_end = index.saturating_add(1).saturating_mul(PAGE).min(end);
            match self.pages.get(&index) {
                None => {
                    s.new_pages += 1;
                    s.new_units += (page_end - at).div_ceil(8);
                    s.new_bytes += page_end - at;
                }
                Some(page) => {
                    while at < page_end {
                        let to = (at + 8 - at % 8).min(page_end);
                        if page.has((at % PAGE) / 8) {
                            s.overlapped = true;
                            let held = page.data.get(at % PAGE..(at % PAGE) + (to - at));
                            let incoming = data.get(at - start..to - start);
                            if held != incoming {
                                s.conflicting = true;
                            }
                        } else {
                            s.new_units += 1;
                            s.new_bytes += to - at;
                        }
                        at = to;
                    }
                }
            }
            at = page_end;
        }
        s
    }

    /// Stores the bytes of `data` at `start` that are not held yet. The
    /// caller has charged the pages [`Datagram::scan`] said are needed.
    fn store(&mut self, start: usize, data: &[u8], scan: &Scan) {
        let end = start.saturating_add(data.len());
        let mut at = start;
        while at < end {
            let index = at / PAGE;
            let page_end = index.saturating_add(1).saturating_mul(PAGE).min(end);
            let page = self.pages.entry(index).or_insert_with(|| {
                Box::new(Page {
                    data: [0; PAGE],
                    covered: [0; WORDS],
                })
            });
            while at < page_end {
                let to = (at + 8 - at % 8).min(page_end);
                let unit = (at % PAGE) / 8;
                if !page.has(unit) {
                    if let (Some(dst), Some(src)) = (
                        page.data.get_mut(at % PAGE..(at % PAGE) + (to - at)),
                        data.get(at - start..to - start),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    if let Some(w) = page.covered.get_mut(unit / 64) {
                        *w |= 1 << (unit % 64);
                    }
                }
                at = to;
            }
        }
        self.units += scan.new_units;
        self.bytes += scan.new_bytes;
        self.memory += scan.new_pages * PAGE_COST;
        self.max_end = self.max_end.max(end);
    }

    /// All of `[0, end)` is covered: units never lie beyond the end once it
    /// is known, so counting them suffices.
    fn is_complete(&self) -> bool {
        self.end.is_some_and(|e| self.units == e.div_ceil(8))
    }

    /// The first four payload bytes, if they arrived.
    fn head(&self) -> Option<[u8; 4]> {
        let page = self.pages.get(&0)?;
        if !page.has(0) || self.end.is_some_and(|e| e < 4) {
            return None;
        }
        let h = page.data.get(..4)?;
        Some([*h.first()?, *h.get(1)?, *h.get(2)?, *h.get(3)?])
    }
}

/// Reassembles IP fragments within the caps of a [`DefragConfig`].
pub(crate) struct Defragmenter {
    cfg: DefragConfig,
    /// std's randomly keyed hasher: keys are attacker-chosen.
    datagrams: HashMap<FragmentKey, Datagram>,
    /// Datagrams by age, oldest first: drives timeout and eviction.
    order: BTreeMap<OrderKey, FragmentKey>,
    next_seq: u64,
    held_bytes: usize,
    held_memory: usize,
    /// Reassembled payload of the last completed datagram.
    out: Vec<u8>,
    lost: VecDeque<Lost>,
    stats: DefragStats,
}

impl std::fmt::Debug for Defragmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defragmenter")
            .field("cfg", &self.cfg)
            .field("datagrams", &self.datagrams.len())
            .field("held_bytes", &self.held_bytes)
            .field("held_memory", &self.held_memory)
            .field("stats", &self.stats)
            .finish()
    }
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
            held_memory: 0,
            out: Vec::new(),
            lost: VecDeque::new(),
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
    // Long: the steps of taking a fragment (caps, end, overlaps, eviction) in the order Linux applies them.
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
                    smallest_fragment: usize::MAX,
                };
            }
            // Room for a new datagram: the oldest goes when the count is full.
            while self.datagrams.len() >= self.cfg.max_datagrams {
                let Some((&order, &oldest)) = self.order.first_key_value() else {
                    break;
                };
                self.remove(order, oldest, true);
                self.stats.evicted_datagram_cap = self.stats.evicted_datagram_cap.saturating_add(1);
            }
            let order = (now_nanos, self.next_seq);
            self.next_seq = self.next_seq.wrapping_add(1);
            self.datagrams.insert(key, Datagram::new(order));
            self.order.insert(order, key);
            self.held_memory = self.held_memory.saturating_add(DATAGRAM_COST);
        }

        let cfg = self.cfg;
        let Some(dg) = self.datagrams.get_mut(&key) else {
            return DefragOutcome::Held; // unreachable: inserted above
        };

        // The first final fragment fixes the end; later ones must agree.
        let malformed = match dg.end {
            Some(known) => end > known || (!more && end != known),
            None => !more && dg.max_end > end,
        };
        if malformed {
            // Never a new datagram: with no end and nothing held, any
            // fragment fits.
            return self.drop_fragment(DropReason::Malformed);
        }

        let scan = dg.scan(start, data);
        if scan.overlapped {
            // Recorded even if a cap refuses the new bytes below: the
            // conflict was observed on the wire either way.
            if scan.conflicting {
                dg.conflicting = true;
                self.stats.overlaps_conflicting = self.stats.overlaps_conflicting.saturating_add(1);
            } else {
                self.stats.overlaps_consistent = self.stats.overlaps_consistent.saturating_add(1);
            }
        }
        if more {
            dg.smallest = dg.smallest.min(data.len());
        }
        let order = dg.order;
        if scan.new_units > 0 && dg.fragments >= cfg.max_fragments_per_datagram {
            self.remove(order, key, true);
            return self.drop_fragment(DropReason::TooManyFragments);
        }
        let need = scan.new_pages.saturating_mul(PAGE_COST);
        if dg.memory.saturating_add(need) > cfg.max_datagram_memory {
            self.remove(order, key, true);
            return self.drop_fragment(DropReason::DatagramMemory);
        }
        // Over the total: older datagrams go first, as in Linux; if this
        // one is the oldest left, it is the one dropped.
        while self.held_memory.saturating_add(need) > cfg.max_total_memory {
            match self.order.first_key_value() {
                Some((&o, &k)) if k != key => {
                    self.remove(o, k, true);
                    self.stats.evicted_memory_cap = self.stats.evicted_memory_cap.saturating_add(1);
                }
                _ => {
                    self.remove(order, key, true);
                    return self.drop_fragment(DropReason::TotalBytesCap);
                }
            }
        }
        let Some(dg) = self.datagrams.get_mut(&key) else {
            return DefragOutcome::Held; // unreachable: only others were evicted
        };
        if scan.new_units > 0 {
            dg.store(start, data, &scan);
            dg.fragments = dg.fragments.saturating_add(1);
        }
        if !more {
            dg.end = Some(end);
        }
        self.held_bytes = self.held_bytes.saturating_add(scan.new_bytes);
        self.held_memory = self.held_memory.saturating_add(need);

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
            self.remove((created, seq), key, true);
            self.stats.timed_out = self.stats.timed_out.saturating_add(1);
        }
    }

    /// The oldest report of a datagram lost incomplete, if any. The caller
    /// should take them after every call; at most 64 wait.
    pub(crate) fn take_lost(&mut self) -> Option<Lost> {
        self.lost.pop_front()
    }

    #[must_use]
    pub fn stats(&self) -> &DefragStats {
        &self.stats
    }

    /// Payload bytes currently stored, summed over datagrams.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Memory currently charged (pages and per-datagram state); never more
    /// than `max_total_memory`.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn held_memory(&self) -> usize {
        self.held_memory
    }

    /// Incomplete datagrams currently held; never more than `max_datagrams`.
    #[must_use]
    pub(crate) fn held_datagrams(&self) -> usize {
        self.datagrams.len()
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

    /// Removes a complete datagram and returns its assembled payload.
    fn finish(&mut self, key: FragmentKey) -> DefragOutcome<'_> {
        let Some(dg) = self.datagrams.remove(&key) else {
            return DefragOutcome::Held; // unreachable: caller holds it
        };
        self.order.remove(&dg.order);
        self.held_bytes = self.held_bytes.saturating_sub(dg.bytes);
        self.held_memory = self.held_memory.saturating_sub(dg.memory);
        let end = dg.end.unwrap_or(0);
        self.out.clear();
        self.out.reserve(end);
        for (&index, page) in &dg.pages {
            let base = index.saturating_mul(PAGE);
            debug_assert_eq!(base, self.out.len(), "pages must tile the payload");
            let n = end.saturating_sub(base).min(PAGE);
            self.out
                .extend_from_slice(page.data.get(..n).unwrap_or_default());
        }
        self.stats.datagrams_completed = self.stats.datagrams_completed.saturating_add(1);
        DefragOutcome::Complete {
            payload: &self.out,
            conflicting_overlap: dg.conflicting,
            smallest_fragment: dg.smallest,
        }
    }

    /// Removes an incomplete datagram; `report`: it is lost (timeout,
    /// eviction, cap), so the caller will be told.
    fn remove(&mut self, order: OrderKey, key: FragmentKey, report: bool) {
        self.order.remove(&order);
        if let Some(dg) = self.datagrams.remove(&key) {
            self.held_bytes = self.held_bytes.saturating_sub(dg.bytes);
            self.held_memory = self.held_memory.saturating_sub(dg.memory);
            if report {
                if self.lost.len() >= MAX_LOST {
                    self.stats.lost_reports_dropped =
                        self.stats.lost_reports_dropped.saturating_add(1);
                } else {
                    self.lost.push_back(Lost {
                        key,
                        head: dg.head(),
                        smallest_fragment: dg.smallest,
                    });
                }
            }
        }
    }

    fn drop_fragment(&mut self, reason: DropReason) -> DefragOutcome<'static> {
        let s = &mut self.stats;
        let counter = match reason {
            DropReason::TooLarge => &mut s.dropped_too_large,
            DropReason::TooManyFragments => &mut s.dropped_too_many_fragments,
            DropReason::DatagramMemory => &mut s.dropped_datagram_memory,
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

    /// The test kit's seedable generator.
    use qmwatch_testkit::rng::Rng;

    fn payload(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.next_u64() as u8).collect()
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
                ..
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

    /// A final fragment seen twice (a retransmission) ends the datagram
    /// where the first copy did: it is no malformed datagram, and the
    /// datagram completes with the first fragment.
    #[test]
    fn a_repeated_final_fragment_is_not_malformed() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(16, 5);
        assert_eq!(d.push(0, key(9), 8, false, &p[8..]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(9), 8, false, &p[8..]), DefragOutcome::Held);
        let (got, conflicting) = feed_all(&mut d, key(9), &[frag(0, true, &p[..8])]);
        assert_eq!(got, p);
        assert!(!conflicting);
        assert_eq!(d.stats().datagrams_completed, 1);
        // A fragment with `more` set that ends exactly at the known end (it
        // overlaps the final one) fits too.
        let p = payload(24, 8);
        assert_eq!(d.push(0, key(10), 16, false, &p[16..]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(10), 8, true, &p[8..]), DefragOutcome::Held);
        let (got, conflicting) = feed_all(&mut d, key(10), &[frag(0, true, &p[..8])]);
        assert_eq!(got, p);
        assert!(!conflicting);
        assert_eq!(d.stats().malformed, 0);
    }

    /// The first four bytes of a datagram whose first fragment arrived (the
    /// ports of the TCP header, to attribute a loss to its flow); none
    /// before it arrives.
    #[test]
    fn the_head_is_the_first_fragments_first_four_bytes() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(24, 6);
        assert_eq!(d.push(0, key(3), 16, false, &p[16..]), DefragOutcome::Held);
        let dg = d.datagrams.get(&key(3)).map(Datagram::head);
        assert_eq!(dg, Some(None));
        assert_eq!(d.push(0, key(3), 0, true, &p[..8]), DefragOutcome::Held);
        let head = d.datagrams.get(&key(3)).and_then(Datagram::head);
        assert_eq!(head, Some([p[0], p[1], p[2], p[3]]));
        assert!(format!("{d:?}").contains("Defragmenter"));
    }

    /// What the caps charge is at least what is allocated: a page and a
    /// datagram each cost more than their own size (the rest is their map
    /// entries).
    #[test]
    fn charges_cover_the_allocations() {
        assert!(PAGE_COST > std::mem::size_of::<Page>());
        assert!(DATAGRAM_COST > std::mem::size_of::<Datagram>());
    }

    #[test]
    fn unfragmented_piece_completes_immediately() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(100, 1);
        match d.push(0, key(1), 0, false, &p) {
            DefragOutcome::Complete {
                payload,
                conflicting_overlap,
                ..
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
            let p = payload(1 + rng.index(9000), round);
            let mut frags = split(&p, 8 * (20 + rng.index(180)));
            rng.shuffle(&mut frags);
            let (got, _) = feed_all(&mut d, key(round as u32), &frags);
            assert_eq!(got, p);
            assert_eq!(d.held_bytes(), 0);
        }
    }

    #[test]
    fn too_many_fragments_drops_the_datagram_and_reports_it() {
        let mut d = Defragmenter::new(DefragConfig {
            max_fragments_per_datagram: 64,
            ..DefragConfig::default()
        });
        let p = payload(65 * 8, 6);
        let frags = split(&p, 8);
        for f in &frags[..64] {
            assert_eq!(
                d.push(0, key(1), f.offset, f.more, &f.data),
                DefragOutcome::Held
            );
        }
        // A duplicate adds nothing and is not counted against the cap.
        let f = &frags[3];
        assert_eq!(
            d.push(0, key(1), f.offset, f.more, &f.data),
            DefragOutcome::Held
        );
        assert_eq!(d.take_lost(), None);
        let f = &frags[64];
        assert_eq!(
            d.push(0, key(1), f.offset, f.more, &f.data),
            DefragOutcome::Dropped(DropReason::TooManyFragments)
        );
        assert_eq!(d.stats().dropped_too_many_fragments, 1);
        // It could never complete: it is dropped whole, and reported with
        // its first four bytes (the ports).
        assert_eq!(
            (d.held_bytes(), d.held_memory(), d.held_datagrams()),
            (0, 0, 0)
        );
        let lost = d.take_lost().expect("reported");
        assert_eq!(lost.key, key(1));
        assert_eq!(lost.head, Some([p[0], p[1], p[2], p[3]]));
        assert_eq!(lost.smallest_fragment, 8);
        assert_eq!(d.take_lost(), None);
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
                ..
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
                ..
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
                ..
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
    fn total_memory_cap_evicts_oldest_then_refuses() {
        // Room for two datagrams of one page each.
        let cap = 2 * (DATAGRAM_COST + PAGE_COST);
        let mut d = Defragmenter::new(DefragConfig {
            max_total_memory: cap,
            ..DefragConfig::default()
        });
        assert_eq!(d.push(0, key(1), 0, true, &[1; 64]), DefragOutcome::Held);
        assert_eq!(d.held_memory(), DATAGRAM_COST + PAGE_COST);
        // More bytes in the same page cost nothing more.
        assert_eq!(d.push(0, key(1), 64, true, &[1; 64]), DefragOutcome::Held);
        assert_eq!(d.held_memory(), DATAGRAM_COST + PAGE_COST);
        assert_eq!(d.push(1, key(2), 0, true, &[2; 64]), DefragOutcome::Held);
        assert_eq!(d.held_memory(), cap);
        // A third datagram evicts the oldest (key 1), which is reported.
        assert_eq!(d.push(2, key(3), 8, true, &[3; 8]), DefragOutcome::Held);
        assert_eq!(d.stats().evicted_memory_cap, 1);
        assert_eq!(
            d.take_lost().map(|l| (l.key, l.head)),
            Some((key(1), Some([1; 4])))
        );
        assert_eq!(d.held_memory(), cap);
        assert_eq!(d.held_bytes(), 72);
        // Key 3 (now the youngest) wants a second page: key 2 goes.
        assert_eq!(d.push(3, key(3), 2048, true, &[3; 8]), DefragOutcome::Held);
        assert_eq!(d.take_lost().map(|l| l.key), Some(key(2)));
        assert_eq!(d.held_datagrams(), 1);
        // A third page cannot fit even alone: key 3 itself is dropped.
        assert_eq!(
            d.push(4, key(3), 4096, true, &[3; 8]),
            DefragOutcome::Dropped(DropReason::TotalBytesCap)
        );
        assert_eq!(d.stats().dropped_total_bytes_cap, 1);
        let lost = d.take_lost().expect("reported");
        assert_eq!((lost.key, lost.head), (key(3), None));
        assert_eq!(
            (d.held_memory(), d.held_bytes(), d.held_datagrams()),
            (0, 0, 0)
        );
    }

    #[test]
    fn datagram_memory_cap_drops_the_datagram() {
        let mut d = Defragmenter::new(DefragConfig {
            max_datagram_memory: DATAGRAM_COST + 2 * PAGE_COST,
            ..DefragConfig::default()
        });
        // Eight-byte fragments scattered one per page: each costs a page.
        assert_eq!(d.push(0, key(1), 0, true, &[1; 8]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(1), 4096, true, &[1; 8]), DefragOutcome::Held);
        assert_eq!(
            d.push(0, key(1), 8192, true, &[1; 8]),
            DefragOutcome::Dropped(DropReason::DatagramMemory)
        );
        assert_eq!(d.stats().dropped_datagram_memory, 1);
        assert_eq!(d.take_lost().map(|l| l.key), Some(key(1)));
        assert_eq!((d.held_memory(), d.held_datagrams()), (0, 0));
    }
    #[test]
    fn random_fragments_never_exceed_caps() {
        let cfg = DefragConfig {
            max_datagrams: 40,
            max_fragments_per_datagram: 16,
            max_datagram_bytes: 65535,
            max_datagram_memory: DATAGRAM_COST + 6 * PAGE_COST,
            max_total_memory: 40 * (DATAGRAM_COST + 2 * PAGE_COST),
            timeout_nanos: 2 * SEC,
        };
        let mut d = Defragmenter::new(cfg);
        let mut rng = Rng::new(0xdead_beef);
        let mut now = 0u64;
        let mut completed = 0u64;
        for i in 0..20_000 {
            now += rng.index(1_000_000) as u64;
            if rng.index(500) == 0 {
                // A lull: whatever is held times out.
                now += 3 * SEC;
            }
            let k = if rng.index(2) == 0 {
                key(rng.index(100) as u32)
            } else {
                key6(rng.index(100) as u32)
            };
            let offset = match rng.index(10) {
                0 => u32::MAX - rng.index(64) as u32,
                1 => 0,
                _ => (rng.index(2048) * 8) as u32,
            };
            let len = match rng.index(10) {
                0 => rng.index(4000),
                _ => 8 * rng.index(200),
            };
            let more = rng.index(3) != 0;
            let data = payload(len, i);
            match d.push(now, k, offset, more, &data) {
                DefragOutcome::Complete { payload, .. } => {
                    completed += 1;
                    assert!(payload.len() <= cfg.max_datagram_bytes);
                }
                DefragOutcome::Held | DefragOutcome::Dropped(_) => {}
            }
            assert!(
                d.held_memory() <= cfg.max_total_memory,
                "push {i}: {}",
                d.held_memory()
            );
            assert!(d.held_bytes() <= d.held_memory());
            while d.take_lost().is_some() {}
            assert!(d.held_datagrams() <= cfg.max_datagrams);
            if rng.index(100) == 0 {
                d.expire(now);
                assert!(d.held_memory() <= cfg.max_total_memory);
            }
        }
        let s = d.stats();
        assert_eq!(s.fragments, 20_000);
        assert_eq!(s.datagrams_completed, completed);
        assert!(completed > 0);
        // The loop really exercised the caps and drop paths.
        assert!(s.evicted_memory_cap > 0, "{s:?}");
        assert!(
            s.dropped_too_many_fragments + s.dropped_datagram_memory > 0,
            "{s:?}"
        );
        assert!(s.evicted_datagram_cap > 0, "{s:?}");
        assert!(s.dropped_too_large > 0, "{s:?}");
        assert!(s.malformed > 0, "{s:?}");
        assert!(s.timed_out > 0, "{s:?}");
        d.expire(u64::MAX);
        assert_eq!(d.held_bytes(), 0);
        assert_eq!(d.held_memory(), 0);
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
                ..
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
        assert_eq!(d.held_datagrams(), 0);
        assert_eq!(d.push(0, key(2), 0, true, &[0; 8]), DefragOutcome::Held);
        assert_eq!(d.push(0, key(3), 0, true, &[0; 8]), DefragOutcome::Held);
        assert_eq!(d.held_datagrams(), 1);
        assert_eq!(d.stats().evicted_datagram_cap, 1);
    }

    /// A 64 KiB datagram in 8,192 eight-byte fragments (fragroute
    /// `ip_frag 8`), in order, reversed and shuffled, IPv4 and IPv6: whole,
    /// with the memory charged as pages, and the smallest fragment told.
    #[test]
    fn sixty_four_kib_in_eight_byte_fragments_any_order() {
        let p = payload(65535, 77);
        let frags = split(&p, 8);
        assert_eq!(frags.len(), 8192);
        for (name, k) in [("v4", key(1)), ("v6", key6(1))] {
            for order in ["in order", "reversed", "shuffled"] {
                let mut d = Defragmenter::new(DefragConfig::default());
                let mut f = frags.clone();
                match order {
                    "reversed" => f.reverse(),
                    "shuffled" => Rng::new(9).shuffle(&mut f),
                    _ => {}
                }
                let (init, last) = f.split_at(f.len() - 1);
                let mut peak = 0;
                for x in init {
                    assert_eq!(d.push(0, k, x.offset, x.more, &x.data), DefragOutcome::Held);
                    peak = peak.max(d.held_memory());
                }
                assert_eq!(peak, DATAGRAM_COST + 64 * PAGE_COST, "{name} {order}");
                assert!(peak <= DefragConfig::default().max_datagram_memory);
                let x = &last[0];
                match d.push(0, k, x.offset, x.more, &x.data) {
                    DefragOutcome::Complete {
                        payload,
                        conflicting_overlap,
                        smallest_fragment,
                    } => {
                        assert!(payload == &p[..], "{name} {order}");
                        assert!(!conflicting_overlap);
                        assert_eq!(smallest_fragment, 8);
                    }
                    other => panic!("{name} {order}: {other:?}"),
                }
                assert_eq!(
                    (d.held_memory(), d.held_bytes(), d.held_datagrams()),
                    (0, 0, 0)
                );
                assert_eq!(d.take_lost(), None);
            }
        }
    }

    /// Four such datagrams in flight at once, interleaved, each with every
    /// fragment duplicated: duplicates are not counted against the
    /// fragment cap, and the work stays linear (this runs in well under a
    /// second even unoptimised).
    #[test]
    fn interleaved_tiny_fragments_with_duplicates() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let ps: Vec<Vec<u8>> = (0..4).map(|i| payload(65535 - i * 100, i as u64)).collect();
        let lists: Vec<Vec<Frag>> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut f = split(p, 8);
                let dup = f.clone();
                f.extend(dup);
                Rng::new(i as u64 + 1).shuffle(&mut f);
                f
            })
            .collect();
        let started = std::time::Instant::now();
        let mut done = 0;
        for step in 0..lists.iter().map(Vec::len).max().unwrap_or(0) {
            for (i, l) in lists.iter().enumerate() {
                let Some(x) = l.get(step) else { continue };
                if let DefragOutcome::Complete { payload, .. } =
                    d.push(0, key(10 + i as u32), x.offset, x.more, &x.data)
                {
                    assert!(payload == &ps[i][..]);
                    done += 1;
                }
            }
        }
        // Each completed once; later duplicates start datagrams that wait.
        assert!(done >= 4, "{done}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert!(d.stats().overlaps_consistent > 0);
        assert_eq!(d.stats().dropped_too_many_fragments, 0);
    }

    #[test]
    fn tiny_fragment_conflict_keeps_first_bytes() {
        let mut d = Defragmenter::new(DefragConfig::default());
        let p = payload(4096, 3);
        let mut f = split(&p, 8);
        f.reverse();
        // A forged copy of fragment 100 arrives before the real one.
        let forged = frag(800, true, &[0xee; 8]);
        assert_eq!(
            d.push(0, key(1), forged.offset, true, &forged.data),
            DefragOutcome::Held
        );
        let mut result = None;
        for x in &f {
            if let DefragOutcome::Complete {
                payload,
                conflicting_overlap,
                ..
            } = d.push(0, key(1), x.offset, x.more, &x.data)
            {
                result = Some((payload.to_vec(), conflicting_overlap));
            }
        }
        let (got, conflict) = result.expect("completes");
        assert!(conflict);
        assert_eq!(&got[800..808], &[0xee; 8]);
        assert_eq!(&got[..800], &p[..800]);
        assert_eq!(&got[808..], &p[808..]);
        assert_eq!(d.stats().overlaps_conflicting, 1);
    }

    #[test]
    fn timeout_and_eviction_report_lost_datagrams() {
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 2,
            ..DefragConfig::default()
        });
        // Reversed: the head (ports) never arrived.
        assert_eq!(d.push(0, key(1), 16, false, &[1; 8]), DefragOutcome::Held);
        assert_eq!(
            d.push(0, key6(2), 0, true, &[9, 8, 7, 6, 5, 4, 3, 2]),
            DefragOutcome::Held
        );
        // A third datagram evicts key 1.
        assert_eq!(d.push(1, key(3), 0, true, &[3; 16]), DefragOutcome::Held);
        let lost = d.take_lost().expect("evicted");
        assert_eq!(
            (lost.key, lost.head, lost.smallest_fragment),
            (key(1), None, usize::MAX)
        );
        assert_eq!(d.take_lost(), None);
        d.expire(31 * SEC);
        let a = d.take_lost().expect("timed out");
        let b = d.take_lost().expect("timed out");
        assert_eq!(
            (a.key, a.head, a.smallest_fragment),
            (key6(2), Some([9, 8, 7, 6]), 8)
        );
        assert_eq!(
            (b.key, b.head, b.smallest_fragment),
            (key(3), Some([3; 4]), 16)
        );
        assert_eq!(d.take_lost(), None);
        assert_eq!(d.held_memory(), 0);
    }

    #[test]
    fn lost_reports_are_bounded() {
        let mut d = Defragmenter::new(DefragConfig::default());
        for id in 0..100 {
            assert_eq!(d.push(0, key(id), 0, true, &[0; 8]), DefragOutcome::Held);
        }
        d.expire(u64::MAX);
        let mut n = 0;
        while d.take_lost().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_LOST);
        assert_eq!(d.stats().lost_reports_dropped, 100 - MAX_LOST as u64);
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
                    DefragOutcome::Complete { payload, conflicting_overlap, .. } => {
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
