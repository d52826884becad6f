//! A server's activity over time, for the audit report: transactions and
//! relay attempts by verdict, counted in time buckets.
//!
//! Owns: bounded counting whatever the span — at most [`MAX_BUCKETS`]
//! buckets whose width grows along a ladder of round widths (1 s, 2 s,
//! 10 s … 1 day, then doubling days) as the span grows, each width a
//! multiple of the one before so that buckets merge exactly.
//!
//! Must not: grow with the traffic, or assume packet times arrive in order
//! (several workers hand records over in their own order).

use std::collections::VecDeque;

/// Buckets kept per server.
pub(crate) const MAX_BUCKETS: usize = 48;

/// What is counted: transactions, then relay attempts by verdict.
pub const SERIES: [&str; 5] = [
    "transactions",
    "open_relay",
    "refused",
    "deferred",
    "unanswered",
];

const SECOND: u64 = 1_000_000_000;
/// Bucket widths in seconds; past the last, the width doubles.
const LADDER: [u64; 13] = [
    1, 2, 10, 20, 60, 120, 600, 1200, 3600, 7200, 21_600, 43_200, 86_400,
];

/// Counts per bucket of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    width_ns: u64,
    /// Index of the first bucket (its start is `first * width_ns`).
    first: u64,
    buckets: VecDeque<[u32; SERIES.len()]>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            width_ns: SECOND,
            first: 0,
            buckets: VecDeque::new(),
        }
    }
}

impl Timeline {
    /// Counts one `series` (an index into [`SERIES`]) at packet time `ts`.
    pub fn add(&mut self, ts: u64, series: usize) {
        if series >= SERIES.len() {
            return;
        }
        if self.buckets.is_empty() {
            self.first = ts / self.width_ns;
            self.buckets.push_back([0; SERIES.len()]);
        }
        loop {
            let idx = ts / self.width_ns;
            let last = self.first + self.buckets.len() as u64 - 1;
            let span = last.max(idx) - self.first.min(idx) + 1;
            if span <= MAX_BUCKETS as u64 {
                break;
            }
            self.coarsen();
        }
        let idx = ts / self.width_ns;
        while idx < self.first {
            self.buckets.push_front([0; SERIES.len()]);
            self.first -= 1;
        }
        while idx >= self.first + self.buckets.len() as u64 {
            self.buckets.push_back([0; SERIES.len()]);
        }
        if let Some(b) = self.buckets.get_mut((idx - self.first) as usize) {
            b[series] = b[series].saturating_add(1);
        }
    }

    /// The next wider bucket: every old bucket falls into exactly one new one.
    fn coarsen(&mut self) {
        let secs = self.width_ns / SECOND;
        let next = match LADDER.iter().position(|w| *w == secs) {
            Some(i) if i + 1 < LADDER.len() => LADDER[i + 1],
            _ => secs.saturating_mul(2),
        };
        let factor = (next / secs.max(1)).max(2);
        let width = self.width_ns.saturating_mul(factor);
        let mut merged: VecDeque<[u32; SERIES.len()]> = VecDeque::new();
        let start = self.first / factor;
        for (i, b) in self.buckets.iter().enumerate() {
            let j = ((self.first + i as u64) / factor - start) as usize;
            while merged.len() <= j {
                merged.push_back([0; SERIES.len()]);
            }
            if let Some(m) = merged.get_mut(j) {
                for (m, v) in m.iter_mut().zip(b) {
                    *m = m.saturating_add(*v);
                }
            }
        }
        self.width_ns = width;
        self.first = start;
        self.buckets = merged;
    }

    /// Bucket width in nanoseconds.
    pub fn width_ns(&self) -> u64 {
        self.width_ns
    }

    /// Each bucket's start (packet time, ns) and counts, in time order.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, &[u32; SERIES.len()])> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .map(move |(i, b)| ((self.first + i as u64).saturating_mul(self.width_ns), b))
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(t: &Timeline, series: usize) -> u64 {
        t.buckets().map(|(_, b)| u64::from(b[series])).sum()
    }

    #[test]
    fn a_long_span_stays_bounded_and_keeps_every_count() {
        let mut t = Timeline::default();
        let base = 1_700_000_000 * SECOND;
        // Three days, out of order, one transaction every 97 s.
        for i in (0..2700u64).rev() {
            t.add(base + i * 97 * SECOND, 0);
            if i % 10 == 0 {
                t.add(base + i * 97 * SECOND, 1);
            }
        }
        assert!(t.buckets().count() <= MAX_BUCKETS);
        assert_eq!(total(&t, 0), 2700);
        assert_eq!(total(&t, 1), 270);
        assert_eq!(t.width_ns() % SECOND, 0);
        let (first, _) = t.buckets().next().unwrap();
        assert!(first <= base);
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut t = Timeline::default();
        t.add(u64::MAX, 0);
        t.add(0, 4);
        t.add(u64::MAX / 2, 2);
        t.add(0, 99);
        assert!(t.buckets().count() <= MAX_BUCKETS);
        assert_eq!(total(&t, 0) + total(&t, 2) + total(&t, 4), 3);
    }
}
