//! Capture loss the kernel cannot see.
//!
//! A SPAN port drops frames inside the switch; neither libpcap nor the
//! kernel counts them. As Zeek's capture-loss does, qmwatch estimates that
//! loss from TCP itself: a receiver only acknowledges bytes it got, so bytes
//! acknowledged that the sensor never saw were lost on the way to the
//! sensor. The estimate is gap bytes over acknowledged bytes.
//!
//! Owns: per direction of every flow (QMTP or not), the end of the highest
//! byte seen, one open hole below it, and the highest acknowledgement sent,
//! 36 bytes in the flow entry; no payload is looked at and nothing is
//! allocated. The end of the highest byte seen and the highest
//! acknowledgement also tell the flow table whether a RST is one its
//! receiver would take.
//!
//! Must not: allocate, look at payload, or trust a jump: a sequence number
//! or acknowledgement more than [`MAX_STEP`] ahead is not counted (a forged
//! or corrupt segment cannot inflate the estimate by more than that), and a
//! direction whose peer was never seen (a one-way capture) counts nothing.
//!
//! Limits (it is an estimate): one hole per direction is tracked, so a
//! second hole opened before the first is filled or acknowledged is not
//! counted (an under-estimate at high loss); an ACK captured before the data
//! it acknowledges (reordering between the two directions of a SPAN
//! session) is counted as loss.

use qmwatch_wire::decode::Segment;

/// Largest sequence or acknowledgement step taken as genuine (64 MiB).
pub(crate) const MAX_STEP: i64 = 64 << 20;

const SEEN: u8 = 1;
const ACKED: u8 = 4;
const HOLE: u8 = 16;

/// Signed distance `a - b` in sequence space.
fn diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// Per-direction sequence bookkeeping of one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LossTrack {
    /// Sequence number after the highest byte seen (SYN and FIN count one).
    seen_end: [u32; 2],
    /// The open hole `[start, end)` below `seen_end`, when `HOLE << d` is set.
    hole_start: [u32; 2],
    hole_end: [u32; 2],
    /// Highest acknowledgement direction `d` sent (for the other's bytes).
    acked: [u32; 2],
    /// `SEEN << d`, `ACKED << d`, `HOLE << d`.
    flags: u8,
}

impl LossTrack {
    /// Notes one segment sent by direction `dir` (0 or 1); returns the bytes
    /// it newly acknowledged and how many of them the capture never saw.
    // Inlined into the flow table's per-packet path, its one hot caller:
    // out of line, the call (saving registers, a pair returned) was a
    // quarter of its cost, 15 of a worker's 530 instructions a packet on
    // a capture of small flows.
    #[inline(always)]
    pub(crate) fn observe(&mut self, dir: usize, seg: &Segment) -> (u64, u64) {
        if seg.rst() {
            return (0, 0);
        }
        let d = dir & 1;
        let len = seg
            .payload_len
            .saturating_add(seg.missing)
            .saturating_add(u32::from(seg.syn()))
            .saturating_add(u32::from(seg.fin()));
        if len > 0 {
            self.data(d, seg.seq, len);
        }
        if seg.ack_flag() {
            self.ack(d, seg.ack)
        } else {
            (0, 0)
        }
    }

    /// The sequence number after the highest byte direction `dir` was seen
    /// to send (its SYN and FIN count one), if it was seen to send any: what
    /// the flow table judges a RST of a flow without a session by.
    pub(crate) fn next_seq(&self, dir: usize) -> Option<u32> {
        self.known(SEEN, dir, &self.seen_end)
    }

    /// The highest acknowledgement direction `dir` sent, if it sent any.
    pub(crate) fn acked_by(&self, dir: usize) -> Option<u32> {
        self.known(ACKED, dir, &self.acked)
    }

    /// Direction `dir`'s value in `per_dir`, if its `flag` is set.
    fn known(&self, flag: u8, dir: usize, per_dir: &[u32; 2]) -> Option<u32> {
        let d = dir & 1;
        self.has(flag, d).then(|| per_dir.get(d).copied()).flatten()
    }

    fn has(&self, flag: u8, d: usize) -> bool {
        self.flags & (flag << d) != 0
    }

    #[inline(always)]
    fn data(&mut self, d: usize, seq: u32, len: u32) {
        let end = seq.wrapping_add(len);
        if !self.has(SEEN, d) {
            self.seen_end[d] = end;
            self.flags |= SEEN << d;
            return;
        }
        let ahead = diff(end, self.seen_end[d]);
        if ahead > MAX_STEP {
            return;
        }
        if ahead > 0 {
            if diff(seq, self.seen_end[d]) > 0 && !self.has(HOLE, d) {
                self.hole_start[d] = self.seen_end[d];
                self.hole_end[d] = seq;
                self.flags |= HOLE << d;
            }
            self.seen_end[d] = end;
        }
        if self.has(HOLE, d) {
            let (hs, he) = (self.hole_start[d], self.hole_end[d]);
            if diff(seq, he) < 0 && diff(end, hs) > 0 {
                if diff(seq, hs) <= 0 {
                    if diff(end, he) >= 0 {
                        self.flags &= !(HOLE << d);
                    } else {
                        self.hole_start[d] = end;
                    }
                } else {
                    // Covers the end or the middle: the lower part stays open.
                    self.hole_end[d] = seq;
                }
            }
        }
    }

    #[inline(always)]
    fn ack(&mut self, d: usize, a: u32) -> (u64, u64) {
        if !self.has(ACKED, d) {
            self.acked[d] = a;
            self.flags |= ACKED << d;
            return (0, 0);
        }
        let old = self.acked[d];
        let adv = diff(a, old);
        if adv <= 0 {
            return (0, 0);
        }
        self.acked[d] = a;
        let p = 1 - d;
        if adv > MAX_STEP || !self.has(SEEN, p) {
            return (0, 0);
        }
        let mut gap = 0i64;
        if self.has(HOLE, p) {
            let (hs, he) = (self.hole_start[p], self.hole_end[p]);
            if diff(a, hs) > 0 {
                let from = if diff(old, hs) > 0 { old } else { hs };
                let to = if diff(a, he) < 0 { a } else { he };
                gap += diff(to, from).max(0);
                if diff(a, he) >= 0 {
                    self.flags &= !(HOLE << p);
                } else {
                    self.hole_start[p] = a;
                }
            }
        }
        let end = self.seen_end[p];
        if diff(a, end) > 0 {
            let from = if diff(old, end) > 0 { old } else { end };
            gap += diff(a, from).max(0);
            // Counted once: bytes arriving late are not a new hole.
            self.seen_end[p] = a;
        }
        (adv as u64, gap.min(adv) as u64)
    }
}

/// Gap bytes over acknowledged bytes, in percent.
pub fn percent(gap: u64, acked: u64) -> Option<f64> {
    (acked > 0).then(|| gap as f64 * 100.0 / acked as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmwatch_wire::decode::{TCP_ACK, TCP_RST, TCP_SYN};

    fn seg(seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment {
            src: 1,
            dst: 2,
            v4: true,
            sport: 1,
            dport: 2,
            seq,
            ack,
            flags,
            payload_len: len,
            tcp_header_len: 20,
            ..Segment::default()
        }
    }

    /// Client (0) sends `chunks` of 1000 bytes from sequence 1001, `seen`
    /// says which the sensor captured; the server (1) acks after each.
    fn transfer(seen: &[bool]) -> (u64, u64) {
        let mut t = LossTrack::default();
        let mut total = (0, 0);
        let mut add = |r: (u64, u64)| {
            total.0 += r.0;
            total.1 += r.1;
        };
        add(t.observe(0, &seg(1000, 0, TCP_SYN, 0)));
        add(t.observe(1, &seg(5000, 1001, TCP_SYN | TCP_ACK, 0)));
        add(t.observe(0, &seg(1001, 5001, TCP_ACK, 0)));
        for (i, s) in seen.iter().enumerate() {
            let seq = 1001 + 1000 * i as u32;
            if *s {
                add(t.observe(0, &seg(seq, 5001, TCP_ACK, 1000)));
            }
            if i % 2 == 1 {
                add(t.observe(1, &seg(5001, seq + 1000, TCP_ACK, 0)));
            }
        }
        total
    }

    #[test]
    fn nothing_lost_nothing_counted() {
        assert_eq!(transfer(&[true; 10]), (10_000, 0));
    }

    #[test]
    fn a_missed_segment_at_the_tail_or_in_the_middle_is_counted() {
        // Segment 3 (tail of an ack window) and segment 4 (start of one).
        let mut seen = [true; 10];
        seen[3] = false;
        seen[4] = false;
        assert_eq!(transfer(&seen), (10_000, 2000));
        let mut seen = [true; 10];
        seen[6] = false;
        assert_eq!(transfer(&seen), (10_000, 1000));
    }

    #[test]
    fn a_late_segment_fills_its_hole() {
        let mut t = LossTrack::default();
        t.observe(0, &seg(100, 0, 0, 100));
        t.observe(1, &seg(9000, 100, TCP_ACK, 0));
        t.observe(0, &seg(300, 0, 0, 100)); // 200..300 not seen yet
        t.observe(0, &seg(200, 0, 0, 100)); // now it is
        assert_eq!(t.observe(1, &seg(9000, 400, TCP_ACK, 0)), (300, 0));
    }

    #[test]
    fn one_way_capture_and_absurd_jumps_count_nothing() {
        let mut t = LossTrack::default();
        t.observe(1, &seg(9000, 100, TCP_ACK, 0));
        assert_eq!(t.observe(1, &seg(9000, 5000, TCP_ACK, 0)), (0, 0));
        t.observe(0, &seg(5000, 0, 0, 10));
        assert_eq!(t.observe(1, &seg(9000, 5010, TCP_ACK, 0)), (10, 0));
        // A forged ACK a gigabyte ahead.
        assert_eq!(
            t.observe(1, &seg(9000, 5010 + (1 << 30), TCP_ACK, 0)),
            (0, 0)
        );
        // A RST is not looked at.
        assert_eq!(t.observe(1, &seg(9000, 1, TCP_RST | TCP_ACK, 0)), (0, 0));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = LossTrack::default();
        t.observe(0, &seg(u32::MAX - 499, 0, 0, 500));
        t.observe(1, &seg(7, u32::MAX - 499, TCP_ACK, 0));
        // 0..500 lost, 500..1000 seen, acked to 1000.
        t.observe(0, &seg(500, 0, 0, 500));
        assert_eq!(t.observe(1, &seg(7, 1000, TCP_ACK, 0)), (1500, 500));
    }

    #[test]
    fn percent_of_nothing_is_none() {
        assert_eq!(percent(0, 0), None);
        assert_eq!(percent(5, 100), Some(5.0));
    }
}
