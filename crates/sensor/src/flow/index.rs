//! The flow table's index: key hash → slab position.
//!
//! Owns: an open-addressing table of 8-byte slots (32 bits of the key's
//! hash, the tag, and the flow's slab position), linear probing, at most
//! half full, with backward-shift deletion (no tombstones to pile up under
//! churn). A slot's home bucket comes from its tag, so the table grows
//! without reading the slab. Hundreds of thousands of short flows do not
//! fit in cache; the table is laid out so that a worker can prefetch a
//! packet's bucket ([`FlowIndex::bucket_ptr`]), then its candidate entry
//! ([`FlowIndex::probe_tag`]), well before it needs them.
//!
//! Must not: compare keys (the caller checks a candidate against the slab)
//! or hold anything but slots; its size follows the number of flows.

/// An empty slot.
const EMPTY: u64 = 0;
const MIN_BUCKETS: usize = 16;

/// See the module documentation.
pub(crate) struct FlowIndex {
    /// `tag << 32 | (position + 1)`; 0 when empty.
    slots: Vec<u64>,
    len: usize,
}

impl Default for FlowIndex {
    fn default() -> Self {
        Self::new()
    }
}

fn pack(tag: u32, pos: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(pos.wrapping_add(1))
}

fn tag_of(slot: u64) -> u32 {
    (slot >> 32) as u32
}

fn pos_of(slot: u64) -> u32 {
    (slot as u32).wrapping_sub(1)
}

impl FlowIndex {
    pub fn new() -> Self {
        FlowIndex {
            slots: empty_slots(MIN_BUCKETS),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// Where the probe for `tag` starts: prefetch it early.
    pub(crate) fn bucket_ptr(&self, tag: u32) -> *const u64 {
        self.slots.as_ptr().wrapping_add(self.home(tag))
    }

    /// The first position whose slot carries `tag` (a likely match, for
    /// prefetching; the key is not checked).
    pub(crate) fn probe_tag(&self, tag: u32) -> Option<u32> {
        self.find(tag, |_| true)
    }

    /// The position whose slot carries `tag` and for which `is_key` holds.
    #[inline(always)]
    pub fn find(&self, tag: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let s = *self.slots.get(i)?;
            if s == EMPTY {
                return None;
            }
            if tag_of(s) == tag && is_key(pos_of(s)) {
                return Some(pos_of(s));
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `pos` under `tag` (the caller knows the key is not present).
    pub fn insert(&mut self, tag: u32, pos: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(pack(tag, pos));
        self.len += 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.mask();
        let mut i = self.home(tag_of(slot));
        // At most half full: an empty slot is always found.
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(i) {
                Some(s) if *s == EMPTY => {
                    *s = slot;
                    return;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        self.resize(self.slots.len() * 2);
    }

    fn resize(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.slots, empty_slots(buckets));
        for s in old.into_iter().filter(|&s| s != EMPTY) {
            self.place(s);
        }
    }

    /// Where the slot of `pos` (filed under `tag`) is, if anywhere.
    fn slot_of(&self, tag: u32, pos: u32) -> Option<usize> {
        let mask = self.mask();
        let want = pack(tag, pos);
        let mut i = self.home(tag);
        loop {
            match self.slots.get(i) {
                Some(&s) if s == want => return Some(i),
                Some(&s) if s != EMPTY => i = (i + 1) & mask,
                _ => return None,
            }
        }
    }

    /// Points the slot of (`tag`, `from`) at `to` instead: the entry moved.
    /// False if there is no such slot.
    pub fn repoint(&mut self, tag: u32, from: u32, to: u32) -> bool {
        let Some(s) = self.slot_of(tag, from).and_then(|i| self.slots.get_mut(i)) else {
            return false;
        };
        *s = pack(tag, to);
        true
    }

    /// Removes the slot of `pos` (filed under `tag`); false if absent.
    pub fn remove(&mut self, tag: u32, pos: u32) -> bool {
        let mask = self.mask();
        let Some(i) = self.slot_of(tag, pos) else {
            return false;
        };
        // Backward shift: pull later slots of the run into the hole when
        // their home is not between the hole and them (cyclically).
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots.get(j).copied().unwrap_or(EMPTY);
            if s == EMPTY {
                break;
            }
            let home = self.home(tag_of(s));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
        // Shrink after a flood has gone, so that memory follows the flows.
        if self.slots.len() > MIN_BUCKETS && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2);
        }
        true
    }
}

/// `buckets` empty slots, written now. Zeroed memory fresh from the
/// system (what `vec![0; n]` asks for) is mapped to the shared zero page at
/// the first read of a probe and copied at the first write: a second page
/// fault per page, and each one flushes the TLB of every core the process
/// runs on.
fn empty_slots(buckets: usize) -> Vec<u64> {
    let mut slots = Vec::with_capacity(buckets);
    // Seen by the optimizer as used, so that allocation and fill are not
    // merged back into a zeroed allocation.
    std::hint::black_box(slots.as_mut_ptr());
    slots.resize(buckets, EMPTY);
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn finds_what_was_inserted_and_not_what_was_removed() {
        let mut ix = FlowIndex::new();
        for p in 0..1000u32 {
            // Few distinct tags: long runs that wrap around the table.
            ix.insert(p % 7, p);
        }
        assert_eq!(ix.len(), 1000);
        for p in (0..1000u32).step_by(2) {
            assert!(ix.remove(p % 7, p));
        }
        assert!(!ix.remove(0, 0));
        for p in 0..1000u32 {
            assert_eq!(ix.find(p % 7, |q| q == p), (p % 2 == 1).then_some(p));
        }
    }

    proptest! {
        /// Any sequence of inserts and removes leaves the index agreeing
        /// with a map, whatever the tags (collisions, clustering, wrap).
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..64, 0u32..48), 1..600)) {
            let mut ix = FlowIndex::new();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (add, tag_bits, pos) in ops {
                // Tags spread over the whole word but with shared low bits.
                let tag = tag_bits.wrapping_mul(0x0101_0101) ^ (tag_bits << 28);
                if add && !model.contains_key(&pos) {
                    ix.insert(tag, pos);
                    model.insert(pos, tag);
                } else if let Some(t) = model.remove(&pos) {
                    prop_assert!(ix.remove(t, pos));
                }
                prop_assert_eq!(ix.len(), model.len());
            }
            for (&pos, &tag) in &model {
                prop_assert_eq!(ix.find(tag, |q| q == pos), Some(pos));
            }
            for pos in 0..48u32 {
                if !model.contains_key(&pos) {
                    for tag_bits in 0..64u32 {
                        let tag = tag_bits.wrapping_mul(0x0101_0101) ^ (tag_bits << 28);
                        prop_assert_eq!(ix.find(tag, |q| q == pos), None);
                    }
                }
            }
        }
    }
}
