//! A reference point for `benches/compare.sh`: what reading a capture file
//! and keeping a table of its TCP flows costs on this machine, with none of
//! qmwatch's work on top.
//!
//! It reads the file as qmwatch does (1 MiB `read`s into one buffer),
//! frames pcap (classic or "modified") or pcapng records, reads Ethernet
//! (up to two VLAN tags) or raw-IP frames down to the TCP ports and flags,
//! and looks every segment's connection up in a flow table (both
//! directions one key): a new key is inserted, a RST or the second
//! direction's FIN removes it, and flows idle for a minute of capture time
//! are dropped (looked for at most once a second of capture time and once
//! per 4096 segments). The table is built as a tuned sensor's would be
//! (open addressing in one flat array, each slot prefetched a few segments
//! before its look-up), so that it is a floor, not a straw man. Nothing
//! else: no checksums, fragments, IP options' checks, sequence numbers,
//! reassembly, protocol sniffing or events. `cat FILE` is the floor for
//! reading the bytes; this is a floor for a flow-tracking sensor, so that
//! qmwatch's CPU per packet can be read against both on any machine.
//!
//! Usage: `cargo run --release --example flow_floor -- FILE [--split |
//! --halves] [--checked]` (prints its counts on standard error; exit 2 on
//! a file it cannot read). With `--split` the table is kept on a second
//! thread, each block's segments handed over in one batch, as a sensor with
//! a capture thread and one flow worker would: what two cores can do at the
//! least cost. With `--halves` two threads share nothing: each reads and
//! frames the whole file and keeps half of the connections, as a sensor
//! whose workers each read the capture would (each frame is framed twice,
//! the price of handing nothing over). With `--checked` each packet also
//! passes the checks that a sensor which must not be blinded makes on its
//! common path (checksums, SYNs, TTLs, timestamps, RSTs, the capture-loss
//! books, first-bytes sniffing: see the `checked` module), still without
//! what qmwatch does beyond them: a floor for such a sensor.
//!
//! Must not: panic on any file (every length is bounds-checked, a record
//! larger than `MAX_RECORD` is an error, the table has a cap) or be mistaken
//! for a detector.

use std::io::Read;

#[path = "flow_floor/checked.rs"]
mod checked;

/// Bytes asked of `read` at a time (qmwatch's block size).
const BLOCK: usize = 1 << 20;
/// A record (header included) longer than this ends the file with an error.
const MAX_RECORD: usize = 1 << 24;
/// Flows kept at most; more are counted and not inserted.
const MAX_FLOWS: usize = 1 << 20;
/// A flow idle for this long (capture time) is dropped.
const IDLE_NS: u64 = 60_000_000_000;
/// How often (capture time) idle flows are looked for.
const SWEEP_NS: u64 = 1_000_000_000;
/// Segments at least between two sweeps (a file whose time stamps jump a
/// second every packet must not sweep the table every packet).
const SWEEP_EVERY: u64 = 4096;

/// pcapng's section header block type, and its byte-order magic as a
/// big-endian section writes it.
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM_BIG: &[u8] = &[0x1a, 0x2b, 0x3c, 0x4d];

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;

/// A connection, the same for both directions: the lower endpoint first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    lo: u128,
    hi: u128,
    ports: u32,
}

/// What a [`Flat`] table needs of its slots.
trait FlatSlot: Copy + Default {
    fn key(&self) -> Key;
    fn used(&self) -> bool;
    /// Marks the slot free.
    fn free(&mut self);
    /// Capture time of the connection's latest segment.
    fn last_ns(&self) -> u64;

    fn holds(&self, k: &Key) -> bool {
        self.used() && self.key() == *k
    }
}

/// A slot of the table: a connection and its state, 48 bytes (laid out
/// flat: a `Key` inside would be padded to 48 bytes on its own).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    lo: u128,
    hi: u128,
    ports: u32,
    /// FIN seen from the lower (bit 0) and the higher (bit 1) endpoint.
    fins: u8,
    used: bool,
    last_ns: u64,
}

impl FlatSlot for Slot {
    fn key(&self) -> Key {
        Key {
            lo: self.lo,
            hi: self.hi,
            ports: self.ports,
        }
    }

    fn used(&self) -> bool {
        self.used
    }

    fn free(&mut self) {
        self.used = false;
    }

    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// A segment waiting for its look-up.
#[derive(Clone, Copy)]
struct Pending {
    key: Key,
    hash: u64,
    ts: u64,
    flags: u8,
    from_hi: bool,
}

/// What a run counted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    tcp: u64,
    /// Keys inserted: a segment after both FINs (the last ACK) inserts
    /// its connection again, as the floor keeps no closing state.
    flows: u64,
    peak: usize,
    over_cap: u64,
}

/// Slots at the start (64 Ki, 3 MiB); the table doubles past 3/4 full.
const FIRST_BITS: u32 = 16;
/// Segments between a slot's prefetch and its look-up.
const AHEAD: usize = 16;

/// Connections in one flat array, as a tuned sensor would keep them: open
/// addressing with linear probing and backward-shift deletion (no
/// tombstones), at most 3/4 full. (A general-purpose hash map, `std`'s
/// with `FxHash`, took half as long again on small flows, most of it
/// waiting for its table.)
struct Flat<S> {
    slots: Vec<S>,
    len: usize,
    bits: u32,
}

impl<S: FlatSlot> Flat<S> {
    /// A table of `2^bits` slots to start with.
    fn with_bits(bits: u32) -> Self {
        Flat {
            slots: vec![S::default(); 1 << bits],
            len: 0,
            bits,
        }
    }

    fn home(&self, hash: u64) -> usize {
        (hash >> (64 - self.bits)) as usize
    }

    fn next(&self, i: usize) -> usize {
        (i + 1) & (self.slots.len() - 1)
    }

    /// Asks for both lines a slot may span where the look-up of `hash`
    /// starts, so that it has come when the look-up runs.
    fn prefetch_home(&self, hash: u64) {
        let slot = self.slots.as_ptr().wrapping_add(self.home(hash));
        prefetch(slot);
        prefetch(slot.cast::<u8>().wrapping_add(std::mem::size_of::<S>() - 1));
    }

    /// The slot holding `key`, or the empty slot where it would go. Ends:
    /// the table is never more than 3/4 full.
    fn find(&self, key: &Key, hash: u64) -> (usize, bool) {
        let mut i = self.home(hash);
        loop {
            match self.slots.get(i) {
                Some(s) if s.holds(key) => return (i, true),
                Some(s) if s.used() => i = self.next(i),
                _ => return (i, false),
            }
        }
    }

    /// Puts `s` in empty slot `i` (where [`Flat::find`] left it); returns
    /// where it is now, as the table may have grown.
    fn insert_at(&mut self, i: usize, s: S, hash: u64) -> usize {
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = s;
            self.len += 1;
        }
        if self.len * 4 <= self.slots.len() * 3 {
            return i;
        }
        self.grow();
        self.find(&s.key(), hash).0
    }

    /// Empties slot `hole` and moves later slots of its run back, so that
    /// every key stays reachable from its home without tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        if let Some(s) = self.slots.get_mut(hole) {
            s.free();
        }
        self.len -= 1;
        let mut j = hole;
        loop {
            j = self.next(j);
            let Some(&s) = self.slots.get(j).filter(|s| s.used()) else {
                return;
            };
            let home = self.home(hash_of(&s.key()));
            // `s` may fill the hole unless its home lies after the hole,
            // up to `j` (cyclically).
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                if let Some(o) = self.slots.get_mut(j) {
                    o.free();
                }
                hole = j;
            }
        }
    }

    /// Places a connection not in the table (growing moves them with this).
    fn put(&mut self, s: S) {
        let key = s.key();
        let (i, _) = self.find(&key, hash_of(&key));
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = s;
            self.len += 1;
        }
    }

    /// Twice the slots, every connection placed again.
    fn grow(&mut self) {
        self.bits += 1;
        let old = std::mem::replace(&mut self.slots, vec![S::default(); 1 << self.bits]);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.used()) {
            self.put(s);
        }
    }

    /// Drops the connections idle for `IDLE_NS` at `now`, in place (a slot
    /// that a removal refills is looked at again).
    fn drop_idle(&mut self, now: u64) {
        let mut i = 0;
        while let Some(s) = self.slots.get(i) {
            if s.used() && now.saturating_sub(s.last_ns()) >= IDLE_NS {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
    }
}

/// When idle flows are looked for: at most once a second of capture time
/// and once per `SWEEP_EVERY` segments, whatever the time stamps do.
#[derive(Debug, Default)]
struct SweepClock {
    next: u64,
    /// Segments handled at the last sweep.
    at: u64,
    sweeps: u64,
}

impl SweepClock {
    /// Whether a sweep is due at `ts` after `handled` segments (and if so,
    /// it counts as done).
    fn due(&mut self, ts: u64, handled: u64) -> bool {
        if ts < self.next || handled < self.at + SWEEP_EVERY {
            return false;
        }
        self.at = handled;
        self.sweeps += 1;
        self.next = ts.saturating_add(SWEEP_NS);
        true
    }
}

/// A flow table's rules, as the reading loop drives them: the floor's
/// table, or the checked one (`--checked`).
trait Rules: Default + Send {
    /// A segment as decoded for this table's look-ups.
    type Segment: Send;
    /// A table for the reading thread of `--split`, which keeps no flows.
    fn small() -> Self;
    /// The TCP segment of a frame of link type `link`, if it has one.
    fn decode(ts: u64, link: u32, frame: &[u8]) -> Option<Self::Segment>;
    /// Asks for the slot where the look-up of `s` starts.
    fn prefetch(&self, s: &Self::Segment);
    /// One segment through the table's rules.
    fn one(&mut self, s: &Self::Segment);
    /// What the run counted, one line, with the `packets` read in all.
    fn report(&self, packets: u64) -> String;

    /// Looks up `segs` in order, prefetching the slot of the segment
    /// `AHEAD` places on while each one is looked up. (Once a block: kept
    /// out of line so that the per-packet parts inlined into it stay there.)
    #[inline(never)]
    fn look_up(&mut self, segs: &[Self::Segment]) {
        for (j, s) in segs.iter().enumerate() {
            if let Some(a) = segs.get(j + AHEAD) {
                self.prefetch(a);
            }
            self.one(s);
        }
    }
}

/// A table, and what the reading loop keeps for it: the frames read, and
/// the segments of a read buffer, queued until the buffer's frames are all
/// read ([`Tracker::flush`]).
struct Tracker<R: Rules> {
    table: R,
    pending: Vec<R::Segment>,
    packets: u64,
}

impl<R: Rules> Tracker<R> {
    fn new(table: R) -> Self {
        Tracker {
            table,
            pending: Vec::new(),
            packets: 0,
        }
    }

    /// One frame of link type `link`: its TCP segment, if it has one,
    /// decoded and queued.
    fn frame(&mut self, ts: u64, link: u32, frame: &[u8]) {
        self.packets += 1;
        if let Some(s) = R::decode(ts, link, frame) {
            self.pending.push(s);
        }
    }

    /// Looks up every queued segment, in order.
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        self.table.look_up(&pending);
        pending.clear();
        self.pending = pending;
    }
}

/// A flow table: a [`Flat`] table of slots `S`, when to sweep it, and what
/// its rules counted (`C`).
struct FlowTable<S, C> {
    flat: Flat<S>,
    clock: SweepClock,
    counts: C,
}

impl<S: FlatSlot, C: Default> FlowTable<S, C> {
    /// A table of `2^bits` slots to start with.
    fn with_bits(bits: u32) -> Self {
        FlowTable {
            flat: Flat::with_bits(bits),
            clock: SweepClock::default(),
            counts: C::default(),
        }
    }

    /// Connections in the table.
    fn len(&self) -> usize {
        self.flat.len
    }
}

impl<S: FlatSlot, C: Default> Default for FlowTable<S, C> {
    fn default() -> Self {
        Self::with_bits(FIRST_BITS)
    }
}

/// The floor's flow table.
type Table = FlowTable<Slot, Counts>;

// The per-packet parts (here, `segment` and `tcp_of`) are inlined by
// hand: with `Half` as a second caller the compiler moved some out of line
// and the floor's one-thread count rose from 345 to 359 instructions a
// packet. A floor must not carry its own overheads.
impl Rules for Table {
    type Segment = Pending;

    fn small() -> Self {
        Self::with_bits(1)
    }

    #[inline(always)]
    fn decode(ts: u64, link: u32, frame: &[u8]) -> Option<Pending> {
        let (src, dst, flags) = ip_of(link, frame).and_then(tcp_of)?;
        Some(pending(ts, src, dst, flags))
    }

    #[inline(always)]
    fn prefetch(&self, p: &Pending) {
        self.flat.prefetch_home(p.hash);
    }

    #[inline(always)]
    fn one(&mut self, p: &Pending) {
        self.segment(p);
    }

    fn report(&self, packets: u64) -> String {
        let c = &self.counts;
        format!(
            "flow_floor: packets {packets} tcp segments {} flow entries made {} (peak {}, over the cap {}, open at the end {})",
            c.tcp,
            c.flows,
            c.peak,
            c.over_cap,
            self.len()
        )
    }
}

/// A multiply-fold hash of a key (the high bits pick the slot).
fn hash_of(k: &Key) -> u64 {
    let a = (k.lo as u64) ^ ((k.lo >> 64) as u64).rotate_left(23) ^ 0x9e37_79b9_7f4a_7c15;
    let b = (k.hi as u64) ^ ((k.hi >> 64) as u64).rotate_left(41) ^ u64::from(k.ports) << 17;
    let m = u128::from(a).wrapping_mul(u128::from(b ^ 0x2d35_8dcc_aa6c_78a5));
    (m as u64) ^ ((m >> 64) as u64)
}

/// Hints the CPU to fetch the line holding `p`.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, always present on x86_64) reads nothing in
    // the language's sense, cannot fault on any address and changes no
    // memory.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Table {
    /// One segment through the table's rules: insert, refresh, remove on
    /// RST or the second FIN, sweep when due.
    #[inline(always)]
    fn segment(&mut self, p: &Pending) {
        self.counts.tcp += 1;
        let (i, found) = self.flat.find(&p.key, p.hash);
        let fin = if p.flags & TCP_FIN != 0 {
            1 << u8::from(p.from_hi)
        } else {
            0
        };
        if p.flags & TCP_RST != 0 {
            if found {
                self.flat.remove_at(i);
            }
        } else if found {
            let mut done = false;
            if let Some(f) = self.flat.slots.get_mut(i) {
                f.last_ns = f.last_ns.max(p.ts);
                f.fins |= fin;
                done = f.fins == 3;
            }
            if done {
                self.flat.remove_at(i);
            }
        } else if self.flat.len < MAX_FLOWS {
            let slot = Slot {
                lo: p.key.lo,
                hi: p.key.hi,
                ports: p.key.ports,
                fins: fin,
                used: true,
                last_ns: p.ts,
            };
            self.flat.insert_at(i, slot, p.hash);
            self.counts.flows += 1;
            self.counts.peak = self.counts.peak.max(self.flat.len);
        } else {
            self.counts.over_cap += 1;
        }
        if self.clock.due(p.ts, self.counts.tcp) {
            self.flat.drop_idle(p.ts);
        }
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// One TCP segment from `src` to `dst` with `flags`, as the table looks
/// it up.
fn pending(ts: u64, src: Endpoint, dst: Endpoint, flags: u8) -> Pending {
    let (key, from_hi) = if src <= dst {
        (key(src, dst), false)
    } else {
        (key(dst, src), true)
    };
    Pending {
        key,
        hash: hash_of(&key),
        ts,
        flags,
        from_hi,
    }
}

fn key(lo: Endpoint, hi: Endpoint) -> Key {
    Key {
        lo: u128::from_be_bytes(lo.0),
        hi: u128::from_be_bytes(hi.0),
        ports: u32::from(lo.1) << 16 | u32::from(hi.1),
    }
}

/// The IP packet of a frame of link type `link`, if it has one.
fn ip_of(link: u32, frame: &[u8]) -> Option<&[u8]> {
    match link {
        LINKTYPE_ETHERNET => ethernet_payload(frame),
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Some(frame),
        _ => None,
    }
}

/// The IP packet of an Ethernet frame (after up to two VLAN tags).
fn ethernet_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    for _ in 0..3 {
        let ty = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ty {
            0x0800 | 0x86dd => return frame.get(at + 2..),
            0x8100 | 0x88a8 => at += 4,
            _ => return None,
        }
    }
    None
}

/// An address (16 bytes, IPv4 in the last four) and a port.
type Endpoint = ([u8; 16], u16);

/// Endpoints and flags of the TCP segment in IP packet `ip` (IPv4 not
/// fragmented past its first piece, IPv6 without extension headers).
#[inline(always)]
fn tcp_of(ip: &[u8]) -> Option<(Endpoint, Endpoint, u8)> {
    let (src, dst, tcp) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if *ip.get(9)? != 6
                || ihl < 20
                || u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0
            {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.get_mut(12..)?.copy_from_slice(ip.get(12..16)?);
            d.get_mut(12..)?.copy_from_slice(ip.get(16..20)?);
            (s, d, ip.get(ihl..)?)
        }
        6 => {
            if *ip.get(6)? != 6 {
                return None;
            }
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (s, d, ip.get(40..)?)
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]);
    let dport = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    Some(((src, sport), (dst, dport), *tcp.get(13)?))
}

/// The half (0 or 1) of the connections that a frame belongs to, the
/// same for both directions: a hash of its addresses and ports, read off
/// the headers with no checks beyond the bounds (what every thread of
/// `--halves` pays for every frame). A frame that is not IP is half 0's.
#[inline(always)]
fn half_of(link: u32, frame: &[u8]) -> u64 {
    let Some(ip) = ip_of(link, frame) else {
        return 0;
    };
    let word = |at: usize| {
        ip.get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    // Xor makes the two directions alike: the ports' word and its halves
    // swapped hold both ports whichever way the segment goes.
    let first = ip.first().copied().unwrap_or_default();
    let mix = match first >> 4 {
        4 => {
            let ports = word(usize::from(first & 0x0f) * 4);
            word(12) ^ word(16) ^ ports ^ ports.rotate_left(16)
        }
        6 => {
            let ports = word(40);
            (8..40)
                .step_by(4)
                .fold(ports ^ ports.rotate_left(16), |x, at| x ^ word(at))
        }
        _ => 0,
    };
    u64::from(mix).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 63
}

/// The rules of table `R` for half `H` (0 or 1) of the connections, as
/// each thread of `--halves` keeps them: the other half's frames are read
/// as far as [`half_of`] and passed over.
#[derive(Default)]
struct Half<R, const H: u64>(R);

impl<R: Rules, const H: u64> Rules for Half<R, H> {
    type Segment = R::Segment;

    fn small() -> Self {
        Half(R::small())
    }

    fn decode(ts: u64, link: u32, frame: &[u8]) -> Option<R::Segment> {
        if half_of(link, frame) != H {
            return None;
        }
        R::decode(ts, link, frame)
    }

    fn prefetch(&self, s: &R::Segment) {
        self.0.prefetch(s);
    }

    fn one(&mut self, s: &R::Segment) {
        self.0.one(s);
    }

    fn report(&self, packets: u64) -> String {
        format!("half {H}: {}", self.0.report(packets))
    }
}

/// The two trackers of [`replay_halves`].
type Halves<R> = (Tracker<Half<R, 0>>, Tracker<Half<R, 1>>);

/// [`replay`] on two threads that share nothing: each reads one of
/// `inputs` (the same bytes) whole and keeps its half of the connections.
/// The first error, if any, and both trackers.
fn replay_halves<R: Rules, I: Read + Send>(inputs: [I; 2]) -> (Result<(), String>, Halves<R>) {
    let [a, b] = inputs;
    std::thread::scope(|s| {
        let other = s.spawn(move || {
            let mut t = Tracker::new(Half::<R, 1>::default());
            (replay(b, &mut t), t)
        });
        let mut ta = Tracker::new(Half::<R, 0>::default());
        let ra = replay(a, &mut ta);
        let (rb, tb) = other.join().unwrap_or_else(|_| {
            let r = Err("the second thread panicked".to_string());
            (r, Tracker::new(Half::default()))
        });
        (ra.and(rb), (ta, tb))
    })
}

/// Reads capture file bytes from `input`, block by block, and feeds every
/// record to `table`.
fn replay<R: Rules>(input: impl Read, t: &mut Tracker<R>) -> Result<(), String> {
    replay_with(input, t, Tracker::flush)
}

/// Batches of segments in flight between the threads of [`replay_split`].
const SPLIT_BATCHES: usize = 8;

/// [`replay`] on two threads: this one reads, frames and decodes, a second
/// keeps the table; each block's segments go over as one vector. That is
/// the least a sensor of this shape (a capture thread and a flow worker)
/// pays for the hand-over, so that what two cores can do for a flow table
/// can be read beside what one does.
fn replay_split<R: Rules>(input: impl Read, t: &mut Tracker<R>) -> Result<(), String> {
    let (to_table, batches) = std::sync::mpsc::sync_channel::<Vec<R::Segment>>(SPLIT_BATCHES);
    let (to_reader, spares) = std::sync::mpsc::channel::<Vec<R::Segment>>();
    let (read, packets, kept) = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let mut table = R::default();
            for mut batch in batches {
                table.look_up(&batch);
                batch.clear();
                // The reader may be gone (an error): the vector is dropped.
                let _ = to_reader.send(batch);
            }
            table
        });
        // Frames and decodes only: its segments are sent, not looked up, so
        // it needs next to no slots of its own.
        let mut reader = Tracker::new(R::small());
        let read = replay_with(input, &mut reader, |r| {
            let spare = spares.try_recv().unwrap_or_default();
            let full = std::mem::replace(&mut r.pending, spare);
            // The table thread ends only when this sender is dropped.
            let _ = to_table.send(full);
        });
        drop(to_table);
        (read, reader.packets, worker.join())
    });
    t.table = kept.map_err(|_| "the table thread panicked".to_string())?;
    t.packets = packets;
    read
}

/// [`replay`], with `block_done` called once a block's records are all
/// fed to `table`, before the block is refilled.
fn replay_with<R: Rules>(
    mut input: impl Read,
    table: &mut Tracker<R>,
    mut block_done: impl FnMut(&mut Tracker<R>),
) -> Result<(), String> {
    let mut buf = vec![0u8; BLOCK];
    // Enough for the file header (a pipe may give less at a time).
    let mut have = 0;
    while have < 24 {
        let n = read_some(&mut input, &mut buf, have)?;
        if n == have {
            break;
        }
        have = n;
    }
    let mut format = Format::detect(buf.get(..have).unwrap_or_default())?;
    let mut pos = format.header_len();
    loop {
        let data = buf.get(..have).unwrap_or_default();
        // Frame every whole record in the buffer.
        loop {
            match format.record(data.get(pos..).unwrap_or_default())? {
                Record::Frame {
                    len,
                    ts,
                    link,
                    frame,
                } => {
                    table.frame(ts, link, frame);
                    pos += len;
                }
                Record::Other { len } => pos += len,
                Record::Partial { need } => {
                    if need > MAX_RECORD {
                        return Err(format!("a record of {need} bytes: not a capture file?"));
                    }
                    if need > buf.len() {
                        buf.resize(need.next_power_of_two(), 0);
                    }
                    break;
                }
            }
        }
        // The buffer's segments are looked up before it is refilled.
        block_done(table);
        // Keep the partial record, read more after it.
        buf.copy_within(pos..have, 0);
        let kept = have - pos;
        pos = 0;
        let n = read_some(&mut input, &mut buf, kept)?;
        if n == kept {
            return if kept == 0 {
                Ok(())
            } else {
                Err(format!("truncated: {kept} bytes of a last record"))
            };
        }
        have = n;
    }
}

/// Fills `buf` from `from` on (one `read`, retried on interruption);
/// returns how many bytes `buf` now holds.
fn read_some(input: &mut impl Read, buf: &mut [u8], from: usize) -> Result<usize, String> {
    let free = buf.get_mut(from..).unwrap_or_default();
    loop {
        match input.read(free) {
            Ok(n) => return Ok(from + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

enum Record<'a> {
    Frame {
        len: usize,
        ts: u64,
        link: u32,
        frame: &'a [u8],
    },
    Other {
        len: usize,
    },
    Partial {
        need: usize,
    },
}

/// The file's format, as its first bytes say.
enum Format {
    Pcap {
        big: bool,
        ns_per_tick: u64,
        link: u32,
        /// 16 bytes, or 24 in the "modified" format (interface, protocol
        /// and packet type after the usual four fields).
        record_header: usize,
    },
    Pcapng {
        big: bool,
        /// Link type of each interface, in order of description.
        links: Vec<u32>,
    },
}

impl Format {
    fn detect(head: &[u8]) -> Result<Format, String> {
        let magic: [u8; 4] = head
            .get(..4)
            .and_then(|m| m.try_into().ok())
            .ok_or("too short for a capture file")?;
        let (big, ns, record_header) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, 1000, 16),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, 1000, 16),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, 1, 16),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, 1, 16),
            [0x34, 0xcd, 0xb2, 0xa1] => (false, 1000, 24),
            [0xa1, 0xb2, 0xcd, 0x34] => (true, 1000, 24),
            // The section header at the start sets the byte order.
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                return Ok(Format::Pcapng {
                    big: false,
                    links: Vec::new(),
                });
            }
            _ => return Err("not a pcap or pcapng file".into()),
        };
        let link = u32_at(head, 20, big).ok_or("too short for a pcap header")? & 0x0fff_ffff;
        Ok(Format::Pcap {
            big,
            ns_per_tick: ns,
            link,
            record_header,
        })
    }

    fn header_len(&self) -> usize {
        match self {
            Format::Pcap { .. } => 24,
            // The section header is a block like any other.
            Format::Pcapng { .. } => 0,
        }
    }

    /// The record at the start of `b`.
    fn record<'a>(&mut self, b: &'a [u8]) -> Result<Record<'a>, String> {
        match self {
            Format::Pcap {
                big,
                ns_per_tick,
                link,
                record_header,
            } => {
                let (Some(sec), Some(frac), Some(caplen)) =
                    (u32_at(b, 0, *big), u32_at(b, 4, *big), u32_at(b, 8, *big))
                else {
                    return Ok(Record::Partial {
                        need: *record_header,
                    });
                };
                let len = record_header.saturating_add(caplen as usize);
                let Some(frame) = b.get(*record_header..len) else {
                    return Ok(Record::Partial { need: len });
                };
                let ts = u64::from(sec) * 1_000_000_000 + u64::from(frac) * *ns_per_tick;
                Ok(Record::Frame {
                    len,
                    ts,
                    link: *link,
                    frame,
                })
            }
            Format::Pcapng { big, links } => {
                let Some(kind) = u32_at(b, 0, *big) else {
                    return Ok(Record::Partial { need: 12 });
                };
                // A section header (its type reads the same in either
                // order) sets the byte order of everything from its own
                // length on.
                if kind == PCAPNG_SHB {
                    let Some(bom) = b.get(8..12) else {
                        return Ok(Record::Partial { need: 12 });
                    };
                    *big = bom == PCAPNG_BOM_BIG;
                    links.clear();
                }
                let Some(total) = u32_at(b, 4, *big) else {
                    return Ok(Record::Partial { need: 12 });
                };
                let len = total as usize;
                if len < 12 || len % 4 != 0 {
                    return Err(format!("a pcapng block of {len} bytes"));
                }
                let Some(block) = b.get(..len) else {
                    return Ok(Record::Partial { need: len });
                };
                match kind {
                    // Interface description (time stamps taken as
                    // microseconds: the floor does not need them exact).
                    1 if links.len() < 1 << 16 => {
                        let link =
                            block
                                .get(8..10)
                                .and_then(|l| l.try_into().ok())
                                .map_or(0, |l| {
                                    u32::from(if *big {
                                        u16::from_be_bytes(l)
                                    } else {
                                        u16::from_le_bytes(l)
                                    })
                                });
                        links.push(link);
                    }
                    // Enhanced packet.
                    6 => {
                        let (Some(ifc), Some(hi), Some(lo), Some(caplen)) = (
                            u32_at(block, 8, *big),
                            u32_at(block, 12, *big),
                            u32_at(block, 16, *big),
                            u32_at(block, 20, *big),
                        ) else {
                            return Err("a short enhanced packet block".into());
                        };
                        let frame = block
                            .get(28..28usize.saturating_add(caplen as usize))
                            .ok_or("an enhanced packet block shorter than its packet")?;
                        let link = links.get(ifc as usize).copied().unwrap_or(0);
                        let ts = (u64::from(hi) << 32 | u64::from(lo)).saturating_mul(1000);
                        return Ok(Record::Frame {
                            len,
                            ts,
                            link,
                            frame,
                        });
                    }
                    _ => {}
                }
                Ok(Record::Other { len })
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    })
}

const USAGE: &str = "usage: flow_floor FILE [--split | --halves] [--checked]";

/// How the work is laid out on threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    One,
    /// `--split`: reading on one thread, the table on another.
    Split,
    /// `--halves`: two threads sharing nothing.
    Halves,
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let (mut layout, mut checked) = (Layout::One, false);
    for a in args {
        match a.to_str() {
            Some("--split") if layout == Layout::One => layout = Layout::Split,
            Some("--halves") if layout == Layout::One => layout = Layout::Halves,
            Some("--checked") if !checked => checked = true,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let result = if checked {
        run::<checked::Table>(&path, layout)
    } else {
        run::<Table>(&path, layout)
    };
    if let Err(e) = result {
        eprintln!("flow_floor: {}: {e}", path.to_string_lossy());
        std::process::exit(2);
    }
}

/// Replays the file at `path` through a new `R` laid out as `layout`
/// and prints what it counted (a line for each half with `--halves`),
/// whether or not the file was whole.
fn run<R: Rules>(path: &std::ffi::OsStr, layout: Layout) -> Result<(), String> {
    let open = || std::fs::File::open(path).map_err(|e| e.to_string());
    if layout == Layout::Halves {
        let (result, (a, b)) = replay_halves::<R, _>([open()?, open()?]);
        eprintln!("{}", a.table.report(a.packets));
        eprintln!("{}", b.table.report(b.packets));
        return result;
    }
    let mut table = Tracker::new(R::default());
    let result = open().and_then(|f| {
        if layout == Layout::Split {
            replay_split(f, &mut table)
        } else {
            replay(f, &mut table)
        }
    });
    eprintln!("{}", table.table.report(table.packets));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    use qmwatch_testkit::pcap::{PcapFormat, PcapWriter, Pcapng};

    /// A classic pcap (`format`) of Ethernet frames, one a second.
    fn pcap_as(format: PcapFormat, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut w = PcapWriter::with_format(Vec::new(), format).expect("header");
        for (i, f) in frames.iter().enumerate() {
            w.record(i as u64 * 1_000_000_000, f, f.len() as u32)
                .expect("record");
        }
        w.finish().expect("finish")
    }

    /// A little-endian microsecond pcap, as tcpdump writes.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        pcap_as(PcapFormat::MICROS, frames)
    }

    /// An Ethernet/IPv4/TCP frame from 192.0.2.`a`:`ap` to 192.0.2.`b`:`bp`.
    fn tcp(a: u8, ap: u16, b: u8, bp: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[192, 0, 2, a, 192, 0, 2, b]);
        f.extend_from_slice(&ap.to_be_bytes());
        f.extend_from_slice(&bp.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
        f
    }

    /// Frames read, and what the table counted.
    #[derive(Debug, PartialEq)]
    struct Ran {
        packets: u64,
        counts: Counts,
    }

    fn run(bytes: &[u8]) -> (Ran, usize, Result<(), String>) {
        let mut t = Tracker::new(Table::default());
        let r = replay(bytes, &mut t);
        let left = t.len();
        let ran = Ran {
            packets: t.packets,
            counts: t.table.counts,
        };
        (ran, left, r)
    }

    impl Tracker<Table> {
        /// Queues a segment from `src` to `dst` with `flags`.
        fn segment(&mut self, ts: u64, src: Endpoint, dst: Endpoint, flags: u8) {
            self.pending.push(pending(ts, src, dst, flags));
        }

        fn len(&self) -> usize {
            self.table.len()
        }
    }

    #[test]
    fn both_directions_are_one_flow_and_two_fins_or_a_rst_end_it() {
        let frames = [
            tcp(1, 40000, 2, 209, 0x02),
            tcp(2, 209, 1, 40000, 0x12),
            tcp(1, 40000, 2, 209, 0x11),
            tcp(2, 209, 1, 40000, 0x11),
            tcp(3, 40001, 2, 628, 0x02),
            tcp(2, 628, 3, 40001, 0x04),
            tcp(4, 40002, 2, 628, 0x02),
        ];
        let (c, left, r) = run(&pcap(&frames));
        assert_eq!(r, Ok(()));
        assert_eq!(
            (c.packets, c.counts.tcp, c.counts.flows, c.counts.peak, left),
            (7, 7, 3, 1, 1)
        );
    }

    #[test]
    fn idle_flows_are_swept_and_sweeps_are_bounded() {
        let mut t = Tracker::new(Table::default());
        let a = ([0u8; 16], 1);
        let b = ([1u8; 16], 2);
        t.segment(0, a, b, 0x02);
        // A second connection, one segment a second for 5000 seconds: the
        // first, idle, is swept; no more than one sweep per 4096 segments.
        for i in 0..5000u64 {
            t.segment((i + 1) * 1_000_000_000, a, ([2u8; 16], 3), 0x10);
        }
        t.flush();
        assert_eq!(t.len(), 1);
        assert_eq!(t.table.clock.sweeps, 1);
    }

    #[test]
    fn a_record_split_across_reads_is_framed_whole() {
        // One byte per read: every record arrives in pieces.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let file = pcap(&[tcp(1, 1, 2, 2, 0x02), tcp(2, 2, 1, 1, 0x12)]);
        let mut t = Tracker::new(Table::default());
        assert_eq!(replay(Trickle(&file), &mut t), Ok(()));
        assert_eq!((t.packets, t.table.counts.flows), (2, 1));
    }

    #[test]
    fn a_cut_file_is_an_error_after_the_whole_records() {
        let file = pcap(&[tcp(1, 1, 2, 2, 0x02), tcp(2, 2, 1, 1, 0x12)]);
        let (c, _, r) = run(&file[..file.len() - 3]);
        assert_eq!(c.packets, 1);
        assert!(r.is_err_and(|e| e.contains("truncated")));
    }

    #[test]
    fn pcapng_enhanced_packets_are_read_in_either_byte_order() {
        for big in [false, true] {
            let mut file = Pcapng::empty();
            file.shb(big, &[]).idb(1, 65535, &[]);
            for (i, f) in [tcp(1, 1, 2, 2, 0x02), tcp(2, 2, 1, 1, 0x04)]
                .iter()
                .enumerate()
            {
                file.epb(0, i as u64, f, f.len() as u32, &[]);
            }
            let (c, left, r) = run(file.bytes());
            assert_eq!(r, Ok(()), "big-endian {big}");
            assert_eq!(
                (c.packets, c.counts.tcp, c.counts.flows, left),
                (2, 2, 1, 0),
                "big-endian {big}"
            );
        }
    }

    #[test]
    fn a_pcapng_section_may_change_the_byte_order() {
        let mut file = Pcapng::empty();
        file.shb(false, &[]).idb(1, 65535, &[]);
        let syn = tcp(1, 1, 2, 2, 0x02);
        file.epb(0, 1, &syn, syn.len() as u32, &[]);
        file.shb(true, &[]).idb(1, 65535, &[]);
        let rst = tcp(2, 2, 1, 1, 0x04);
        file.epb(0, 2, &rst, rst.len() as u32, &[]);
        let (c, left, r) = run(file.bytes());
        assert_eq!(r, Ok(()));
        assert_eq!(
            (c.packets, c.counts.tcp, c.counts.flows, left),
            (2, 2, 1, 0)
        );
    }

    #[test]
    fn classic_pcap_in_either_byte_order_precision_and_record_layout() {
        let frames = [
            tcp(1, 1, 2, 2, 0x02),
            tcp(2, 2, 1, 1, 0x11),
            tcp(1, 1, 2, 2, 0x11),
        ];
        for big_endian in [false, true] {
            for (nanos, modified) in [(false, false), (true, false), (false, true)] {
                let format = PcapFormat {
                    big_endian,
                    nanos,
                    modified,
                    ..PcapFormat::MICROS
                };
                let (c, left, r) = run(&pcap_as(format, &frames));
                assert_eq!(r, Ok(()), "{format:?}");
                assert_eq!((c.packets, c.counts.flows, left), (3, 1, 0), "{format:?}");
            }
        }
    }

    #[test]
    fn no_input_makes_it_panic() {
        // Cut and corrupted versions of a small file: errors, never a panic.
        let file = pcap(&[tcp(1, 1, 2, 2, 0x02), tcp(2, 2, 1, 1, 0x12)]);
        for cut in 0..file.len() {
            let _ = run(&file[..cut]);
        }
        let mut x = 0x9e37_79b9_u32;
        for i in 0..file.len() {
            let mut bad = file.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bad[i] = x as u8;
            let _ = run(&bad);
        }
        assert!(run(b"not a capture").2.is_err());
        assert!(run(&[0xd4, 0xc3, 0xb2, 0xa1]).2.is_err());
    }

    #[test]
    fn a_huge_length_field_is_refused_not_allocated() {
        let mut file = pcap(&[tcp(1, 1, 2, 2, 0x02)]);
        // caplen of the first record: 4 GiB - 1.
        file[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(run(&file)
            .2
            .is_err_and(|e| e.contains("not a capture file")));
    }

    /// The table against a plain map with the same rules, over random
    /// segments of a few hundred connections, from a table of 16 slots
    /// (so that runs collide, wrap around the end, grow and shift back on
    /// removal), flushed after random stretches and swept now and then.
    #[test]
    fn the_table_keeps_what_a_plain_map_keeps() {
        use std::collections::HashMap;
        let mut x = 0x2545_f491_u32;
        let mut rand = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        let ep = |i: u32| {
            let mut a = [0u8; 16];
            a[12..].copy_from_slice(&(i / 7).to_be_bytes());
            (a, 1000 + (i % 7) as u16)
        };
        let mut t = Tracker::new(Table::with_bits(4));
        let mut model: HashMap<(Endpoint, Endpoint), (u64, u8)> = HashMap::new();
        let mut ts = 0u64;
        let (mut swept_at, mut next_sweep, mut sweeps) = (0u64, 0u64, 0u64);
        for step in 0..60_000u32 {
            ts += u64::from(rand(40)) * 100_000_000;
            let (a, b) = (ep(rand(600)), ep(rand(600)));
            let flags = match rand(10) {
                0 => TCP_RST,
                1 | 2 => TCP_FIN,
                _ => 0x10,
            };
            t.segment(ts, a, b, flags);
            // The model, with the table's rules.
            let (lo, hi, from_hi) = if a <= b { (a, b, 0) } else { (b, a, 1) };
            let fin = if flags & TCP_FIN != 0 {
                1u8 << from_hi
            } else {
                0
            };
            if flags & TCP_RST != 0 {
                model.remove(&(lo, hi));
            } else if let Some(f) = model.get_mut(&(lo, hi)) {
                f.0 = f.0.max(ts);
                f.1 |= fin;
                if f.1 == 3 {
                    model.remove(&(lo, hi));
                }
            } else {
                model.insert((lo, hi), (ts, fin));
            }
            // The sweep rule, kept apart from the table's own.
            let handled = u64::from(step) + 1;
            if ts >= next_sweep && handled >= swept_at + SWEEP_EVERY {
                model.retain(|_, f| ts.saturating_sub(f.0) < IDLE_NS);
                (swept_at, next_sweep) = (handled, ts + SWEEP_NS);
                sweeps += 1;
            }
            if rand(50) == 0 || step % 4096 == 4095 {
                t.flush();
                let mut keys: Vec<_> = t
                    .table
                    .flat
                    .slots
                    .iter()
                    .filter(|s| s.used)
                    .map(|s| (s.lo, s.hi, s.ports, s.last_ns, s.fins))
                    .collect();
                keys.sort_unstable();
                let mut want: Vec<_> = model
                    .iter()
                    .map(|((l, h), f)| {
                        let k = key(*l, *h);
                        (k.lo, k.hi, k.ports, f.0, f.1)
                    })
                    .collect();
                want.sort_unstable();
                assert_eq!(keys, want, "after segment {step}");
                assert_eq!(t.len(), want.len());
                // Every key is found from its home.
                for s in t.table.flat.slots.iter().filter(|s| s.used) {
                    assert!(t.table.flat.find(&s.key(), hash_of(&s.key())).1);
                }
            }
        }
        assert!(t.table.flat.bits > 4, "the table grew");
        assert!(sweeps > 3, "the model swept {sweeps} times");
        assert_eq!(t.table.clock.sweeps, sweeps);
    }

    /// A run that wraps past the last slot: removing from it moves the
    /// keys beyond the end back, and only those whose home allows it.
    #[test]
    fn removal_shifts_back_across_the_end() {
        let mut t = Tracker::new(Table::with_bits(4));
        let ep = |i: u32| {
            let mut a = [0u8; 16];
            a[12..].copy_from_slice(&i.to_be_bytes());
            (a, 1)
        };
        let server = ([0xffu8; 16], 2);
        // Connections whose home is the last slot, and one whose home is 0.
        let home = |i: u32| t.table.flat.home(hash_of(&key(ep(i), server)));
        let last: Vec<u32> = (0..).filter(|&i| home(i) == 15).take(3).collect();
        let first = (0..).find(|&i| home(i) == 0).unwrap_or(0);
        for &i in [last[0], last[1], first, last[2]].iter() {
            t.segment(1, ep(i), server, 0x10);
        }
        t.flush();
        assert_eq!(t.len(), 4);
        // Runs: slot 15, then 0, 1, 2 past the end.
        t.segment(2, ep(last[0]), server, TCP_RST);
        t.flush();
        assert_eq!(t.len(), 3);
        for &i in &[last[1], first, last[2]] {
            let k = key(ep(i), server);
            assert!(t.table.flat.find(&k, hash_of(&k)).1, "connection {i} lost");
        }
        // The one at home 0 never moves before its home, to 15.
        let at15 = t.table.flat.slots.get(15).filter(|s| s.used).map(Slot::key);
        assert_eq!(at15, Some(key(ep(last[1]), server)));

        // Homes 14, 15 and 0 in slots 14, 15 and 0: removing the first
        // leaves the other two where they are.
        let mut t = Tracker::new(Table::with_bits(4));
        let home = |i: u32| t.table.flat.home(hash_of(&key(ep(i), server)));
        let at = |h: usize| (0..).find(|&i| home(i) == h).unwrap_or(0);
        let (a, b, c) = (at(14), at(15), at(0));
        for i in [a, b, c] {
            t.segment(1, ep(i), server, 0x10);
        }
        t.segment(2, ep(a), server, TCP_RST);
        t.flush();
        let held = |n: usize| t.table.flat.slots.get(n).filter(|s| s.used).map(Slot::key);
        assert_eq!(held(14), None);
        assert_eq!(held(15), Some(key(ep(b), server)));
        assert_eq!(held(0), Some(key(ep(c), server)));
    }

    /// Sharing nothing, the two halves count what one thread counts, and
    /// each keeps some of the connections: for a file of several blocks,
    /// and for one cut short (the same error).
    #[test]
    fn halves_count_what_one_thread_counts() {
        let file = several_blocks();
        for bytes in [&file[..], &file[..file.len() - 5]] {
            let (one, one_left, one_r) = run(bytes);
            let (r, (a, b)) = replay_halves::<Table, _>([bytes, bytes]);
            assert_eq!(r, one_r);
            assert_eq!((a.packets, b.packets), (one.packets, one.packets));
            let (a, b) = (a.table.0, b.table.0);
            let (x, y) = (&a.counts, &b.counts);
            assert!(x.tcp > 0 && y.tcp > 0, "{x:?} {y:?}");
            assert_eq!(x.tcp + y.tcp, one.counts.tcp);
            assert_eq!(x.flows + y.flows, one.counts.flows);
            assert_eq!(a.len() + b.len(), one_left);
        }
    }

    /// Both directions of a connection, over IPv4 and IPv6, fall in the
    /// same half, and connections fall in both.
    #[test]
    fn a_connection_is_in_one_half_both_ways() {
        let mut seen = [0; 2];
        for i in 0..64u16 {
            let there = tcp(1, 1024 + i, 2, 628, 0x10);
            let back = tcp(2, 628, 1, 1024 + i, 0x10);
            let h = half_of(LINKTYPE_ETHERNET, &there);
            assert_eq!(h, half_of(LINKTYPE_ETHERNET, &back));
            let (v6, v6_back) = (tcp6(&there), tcp6(&back));
            assert_eq!(half_of(LINKTYPE_RAW, &v6), half_of(LINKTYPE_RAW, &v6_back));
            seen[h as usize] += 1;
        }
        assert!(seen[0] > 8 && seen[1] > 8, "{seen:?}");
    }

    /// The raw IPv6 packet carrying the TCP header of Ethernet/IPv4 frame
    /// `f`, between 2001:db8::`a` and 2001:db8::`b`.
    fn tcp6(f: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        for a in [f[29], f[33]] {
            p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            p.extend_from_slice(&[0; 11]);
            p.push(a);
        }
        p.extend_from_slice(&f[34..54]);
        p
    }

    /// On two threads, the same counts and the same end as on one: for a
    /// file of several blocks (a batch each), and for one cut short.
    #[test]
    fn split_counts_what_one_thread_counts() {
        let file = several_blocks();
        for bytes in [&file[..], &file[..file.len() - 5]] {
            let (one, one_left, one_r) = run(bytes);
            let mut t = Tracker::new(Table::default());
            let r = replay_split(bytes, &mut t);
            assert_eq!(r, one_r);
            let left = t.len();
            let two = Ran {
                packets: t.packets,
                counts: t.table.counts,
            };
            assert_eq!((two, left), (one, one_left));
        }
    }

    /// 60,000 frames (4.2 MB: five blocks), connections of SYN, data, FIN
    /// each way, some cut short by a RST.
    fn several_blocks() -> Vec<u8> {
        let frames: Vec<Vec<u8>> = (0..60_000u32)
            .map(|i| {
                let (c, port) = ((i / 5 % 200) as u8, 1024 + (i / 1000) as u16);
                match i % 5 {
                    0 => tcp(c, port, 250, 628, 0x02),
                    1 | 2 => tcp(c, port, 250, 628, 0x10),
                    3 if i % 7 == 0 => tcp(250, 628, c, port, 0x04),
                    3 => tcp(c, port, 250, 628, 0x11),
                    _ => tcp(250, 628, c, port, 0x11),
                }
            })
            .collect();
        let file = pcap(&frames);
        assert!(file.len() > 3 * BLOCK);
        file
    }
}
