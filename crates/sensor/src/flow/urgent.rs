//! TCP urgent data, taken out of a stream as its receiver reads it.
//!
//! A segment with URG set and its urgent pointer inside its payload carries
//! one urgent byte: the one before the byte the pointer points at, as
//! stacks read it (RFC 6093). A socket that did not ask for urgent data
//! inline (the default everywhere) gets that byte out of band: the program
//! reading the stream never sees it, though the sequence space counts it.
//! QMTP and QMQP never send urgent data, so a client that does is hiding a
//! byte from a sensor that keeps it in the stream: `X12:…` with an urgent
//! `X` reads as a QMTP package to the server and as another protocol to
//! such a sensor.
//!
//! Owns: per direction of a parsed flow, the sequence numbers of the
//! urgent bytes taken out (at most [`MAX_URGENT`]); the mapping of sequence
//! numbers onto the stream without them, and where a segment's payload is
//! cut around them (its pieces stay borrowed from the packet).
//!
//! Must not: allocate, or decide whether a byte may still be taken out:
//! the flow table takes one out only while nothing of the stream past it
//! was delivered or held.

/// Urgent bytes taken out per direction; past that they stay in the
/// stream (and the flow is reported for its urgent data either way).
pub(crate) const MAX_URGENT: usize = 8;

/// The urgent bytes taken out of one direction's stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Urgent {
    seqs: [u32; MAX_URGENT],
    len: u8,
}

impl Urgent {
    fn taken(&self) -> &[u32] {
        self.seqs.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// `seq` on the stream without the urgent bytes before it (sequence
    /// numbers compare within 2 GiB, as TCP's do).
    #[inline]
    pub(crate) fn map(&self, seq: u32) -> u32 {
        if self.len == 0 {
            return seq;
        }
        let before = self
            .taken()
            .iter()
            .filter(|&&u| (seq.wrapping_sub(u) as i32) > 0)
            .count();
        seq.wrapping_sub(before as u32)
    }

    /// Takes the byte at `seq` out of the stream: true if it is out (now or
    /// before), false when [`MAX_URGENT`] are out already.
    pub(crate) fn take_out(&mut self, seq: u32) -> bool {
        if self.taken().contains(&seq) {
            return true;
        }
        let Some(slot) = self.seqs.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = seq;
        self.len += 1;
        true
    }

    /// How many urgent bytes lie in `[seq, seq + len)`.
    pub(crate) fn count_in(&self, seq: u32, len: u32) -> u32 {
        self.taken()
            .iter()
            .filter(|&&u| u.wrapping_sub(seq) < len)
            .count() as u32
    }

    /// The pieces of a payload of `len` bytes starting at `seq` that stay
    /// in the stream, in order, as (from, to) index ranges: the payload
    /// cut at each urgent byte inside it. Empty pieces are left out, except
    /// that there is always one piece (an empty one at the payload's end
    /// when nothing stays), to carry the segment's SYN or FIN.
    pub(crate) fn pieces(&self, seq: u32, len: usize) -> Pieces {
        let mut cuts = [0usize; MAX_URGENT];
        let mut n = 0;
        for &u in self.taken() {
            // An urgent byte before `seq` wraps to far past `len`.
            let k = u.wrapping_sub(seq) as usize;
            if k < len {
                if let Some(c) = cuts.get_mut(n) {
                    *c = k;
                    n += 1;
                }
            }
        }
        let cuts = cuts.get_mut(..n).unwrap_or_default();
        cuts.sort_unstable();
        let mut out = Pieces {
            ranges: [(0, 0); MAX_URGENT + 1],
            len: 0,
        };
        let mut from = 0;
        for &k in cuts.iter().chain(std::iter::once(&len)) {
            if k > from || (k == len && out.len == 0) {
                out.push(from, k);
            }
            from = k + 1;
        }
        out
    }
}

/// What [`Urgent::pieces`] returns: at most [`MAX_URGENT`] + 1 ranges.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pieces {
    ranges: [(usize, usize); MAX_URGENT + 1],
    len: usize,
}

impl Pieces {
    fn push(&mut self, from: usize, to: usize) {
        if let Some(r) = self.ranges.get_mut(self.len) {
            *r = (from, to);
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[(usize, usize)] {
        self.ranges.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_urgent_byte_changes_nothing() {
        let u = Urgent::default();
        assert_eq!(u.map(1000), 1000);
        assert_eq!(u.pieces(1000, 10).as_slice(), [(0, 10)]);
        assert_eq!(u.pieces(1000, 0).as_slice(), [(0, 0)]);
    }

    #[test]
    fn bytes_after_an_urgent_byte_move_down_by_one() {
        let mut u = Urgent::default();
        assert!(u.take_out(1003));
        assert!(u.take_out(1003), "the same byte twice is taken out once");
        assert_eq!((u.map(1003), u.map(1004), u.map(1002)), (1003, 1003, 1002));
        assert_eq!(u.pieces(1000, 10).as_slice(), [(0, 3), (4, 10)]);
        assert_eq!(u.pieces(1003, 5).as_slice(), [(1, 5)]);
        assert_eq!(u.pieces(1004, 5).as_slice(), [(0, 5)]);
        // The urgent byte alone: nothing of it stays but an empty piece.
        assert_eq!(u.pieces(1003, 1).as_slice(), [(1, 1)]);
    }

    #[test]
    fn sequence_numbers_wrap_and_the_cap_holds() {
        let mut u = Urgent::default();
        assert!(u.take_out(u32::MAX));
        assert_eq!(u.map(2), 1);
        assert_eq!(u.pieces(u32::MAX - 1, 4).as_slice(), [(0, 1), (2, 4)]);
        for s in 0..MAX_URGENT as u32 - 1 {
            assert!(u.take_out(100 + 10 * s));
        }
        assert!(!u.take_out(5000), "past the cap the byte stays in");
        assert_eq!(u.map(5001), 5001 - MAX_URGENT as u32);
    }

    proptest! {
        /// Any payload with any urgent bytes inside: the pieces are what
        /// stays, in order, and each piece's mapped start follows on from
        /// the previous piece's end, so the stream has no hole.
        #[test]
        fn pieces_are_the_bytes_that_stay_and_meet_end_to_end(
            seq in any::<u32>(),
            len in 0usize..64,
            urgent in proptest::collection::btree_set(0usize..64, 0..MAX_URGENT),
        ) {
            let mut u = Urgent::default();
            for &k in &urgent {
                prop_assert!(u.take_out(seq.wrapping_add(k as u32)));
            }
            let kept: Vec<usize> = (0..len).filter(|k| !urgent.contains(k)).collect();
            let pieces = u.pieces(seq, len);
            let got: Vec<usize> = pieces.as_slice().iter().flat_map(|&(a, b)| a..b).collect();
            prop_assert_eq!(&got, &kept);
            let mut at = u.map(seq);
            for &(a, b) in pieces.as_slice() {
                if a == b {
                    continue;
                }
                prop_assert_eq!(u.map(seq.wrapping_add(a as u32)), at);
                at = u.map(seq.wrapping_add(a as u32)).wrapping_add((b - a) as u32);
            }
        }
    }
}
