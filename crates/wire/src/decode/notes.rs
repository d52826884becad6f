//! Notes of IP datagrams the defragmenter lost, waiting to flag a segment
//! of their flow ([`super::FRAG_NOTE_DROPPED`]).
//!
//! Owns: a table keyed by address pair (so that a segment costs one
//! look-up while notes wait, whatever their number), bounded in pairs and
//! in notes per pair, with a packet-time timeout; the count of lost
//! datagrams no segment was (yet) told about.
//!
//! Must not: grow past its caps (a note that does not fit is counted as
//! unreported), or look at anything but a segment's addresses and ports.

use std::collections::HashMap;

use super::{Addr, Segment};

/// Address pairs with waiting notes.
const MAX_PAIRS: usize = 256;
/// Notes (flows, plus one for the pair) per address pair.
const MAX_PER_PAIR: usize = 8;
/// A note that knows only the address pair flags this many segments of the
/// pair (they may belong to other connections of the same hosts).
pub(super) const PAIR_NOTE_SEGMENTS: u8 = 16;
/// A note no segment claimed within this much packet time is given up.
pub(super) const FRAG_NOTE_TIMEOUT_NS: u64 = 120_000_000_000;

/// A lost datagram (or several of one flow) waiting for a segment.
#[derive(Clone, Copy, Debug)]
pub(super) struct FragNote {
    pub src: Addr,
    pub dst: Addr,
    /// The datagram's (source, destination) ports, if its head arrived.
    pub ports: Option<(u16, u16)>,
    pub notes: u8,
    /// Datagrams lost since a segment was last flagged.
    datagrams: u64,
    /// Segments flagged so far (a pair note flags several).
    flagged: u8,
    /// Packet time of the last loss.
    at: u64,
}

impl FragNote {
    pub fn new(src: Addr, dst: Addr, ports: Option<(u16, u16)>, notes: u8, now: u64) -> Self {
        FragNote {
            src,
            dst,
            ports,
            notes,
            datagrams: 1,
            flagged: 0,
            at: now,
        }
    }

    /// Whether `seg` (either direction) is of this note's flow or pair.
    fn matches(&self, seg: &Segment) -> bool {
        let (fwd, rev) = match self.ports {
            Some((sp, dp)) => (
                seg.sport == sp && seg.dport == dp,
                seg.sport == dp && seg.dport == sp,
            ),
            None => (true, true),
        };
        (fwd && seg.src == self.src && seg.dst == self.dst)
            || (rev && seg.src == self.dst && seg.dst == self.src)
    }
}

fn pair(a: Addr, b: Addr) -> (Addr, Addr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[derive(Default)]
pub(super) struct FragNotes {
    /// std's randomly keyed hasher: addresses are attacker-chosen.
    by_pair: HashMap<(Addr, Addr), Vec<FragNote>>,
    /// Datagrams in notes that have flagged nothing yet.
    pending: u64,
    /// Datagrams whose note did not fit or timed out unclaimed.
    given_up: u64,
}

impl FragNotes {
    pub fn is_empty(&self) -> bool {
        self.by_pair.is_empty()
    }

    /// Lost datagrams no segment has been told about.
    pub fn unreported(&self) -> u64 {
        self.given_up + self.pending
    }

    /// Notes one more lost datagram; one note per flow (or pair) is kept.
    pub fn add(&mut self, note: FragNote) {
        let key = pair(note.src, note.dst);
        if !self.by_pair.contains_key(&key) && self.by_pair.len() >= MAX_PAIRS {
            self.given_up += 1;
            return;
        }
        let list = self.by_pair.entry(key).or_default();
        let same = |n: &&mut FragNote| (n.src, n.dst, n.ports) == (note.src, note.dst, note.ports);
        if let Some(n) = list.iter_mut().find(same) {
            if n.flagged > 0 {
                // The earlier losses were told; this one is not yet.
                n.datagrams = 0;
                n.flagged = 0;
            }
            n.notes |= note.notes;
            n.datagrams += 1;
            n.at = note.at;
            self.pending += 1;
        } else if list.len() < MAX_PER_PAIR {
            list.push(note);
            self.pending += 1;
        } else {
            self.given_up += 1;
        }
    }

    /// Flags `seg` with the notes of its flow and of its address pair,
    /// consuming a flow's note and counting a pair's.
    pub fn apply(&mut self, seg: &mut Segment) {
        let key = pair(seg.src, seg.dst);
        let Some(list) = self.by_pair.get_mut(&key) else {
            return;
        };
        let mut i = 0;
        while let Some(n) = list.get_mut(i) {
            if n.matches(seg) {
                seg.frag_notes |= n.notes;
                if n.flagged == 0 {
                    self.pending = self.pending.saturating_sub(n.datagrams);
                }
                n.flagged = n.flagged.saturating_add(1);
                if n.ports.is_some() || n.flagged >= PAIR_NOTE_SEGMENTS {
                    list.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        if list.is_empty() {
            self.by_pair.remove(&key);
        }
    }

    /// Gives up notes no segment claimed within the timeout.
    pub fn expire(&mut self, now: u64) {
        let (mut pending, mut given_up) = (0, 0);
        self.by_pair.retain(|_, list| {
            list.retain(|n| {
                let keep = now.saturating_sub(n.at) <= FRAG_NOTE_TIMEOUT_NS;
                if !keep && n.flagged == 0 {
                    pending += n.datagrams;
                    given_up += n.datagrams;
                }
                keep
            });
            !list.is_empty()
        });
        self.pending = self.pending.saturating_sub(pending);
        self.given_up += given_up;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(src: Addr, dst: Addr, sport: u16, dport: u16) -> Segment {
        Segment {
            src,
            dst,
            sport,
            dport,
            ..Segment::default()
        }
    }

    #[test]
    fn table_is_bounded_and_what_does_not_fit_is_counted() {
        let mut t = FragNotes::default();
        for p in 0..(MAX_PAIRS as u128 + 10) {
            t.add(FragNote::new(p, 1 << 100, Some((1, 2)), 2, 0));
        }
        assert_eq!(t.by_pair.len(), MAX_PAIRS);
        assert_eq!(t.unreported(), MAX_PAIRS as u64 + 10);
        assert_eq!(t.given_up, 10);
        // Per pair: one note per flow, at most MAX_PER_PAIR.
        let mut t = FragNotes::default();
        for port in 0..20u16 {
            t.add(FragNote::new(7, 9, Some((port, 209)), 2, 0));
            t.add(FragNote::new(7, 9, Some((port, 209)), 2, 0));
        }
        assert_eq!(t.by_pair.get(&(7, 9)).map(Vec::len), Some(MAX_PER_PAIR));
        assert_eq!(t.unreported(), 40);
        // Telling a flow: its datagrams are reported, its note goes.
        let mut s = seg(9, 7, 209, 3);
        t.apply(&mut s);
        assert_eq!(s.frag_notes, 2);
        assert_eq!(t.unreported(), 38);
        // The rest time out, counted.
        t.expire(FRAG_NOTE_TIMEOUT_NS + 1);
        assert!(t.is_empty());
        assert_eq!(t.unreported(), 38);
    }
}
