//! The bounded queue in front of each output.
//!
//! Owns: the lines accepted for one output and not yet handed to its
//! thread, capped in lines and in bytes, and what happens when it is full
//! ([`Overflow`]): wait (lossless, for replays into files) or drop the oldest
//! queued line and count it (live capture, and network collectors in a
//! replay, so that a dead collector cannot stall the sensor or hang a
//! replay).
//!
//! Must not: grow past its caps, lose a line without counting it, or keep a
//! producer waiting once its consumer is gone.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Line, OutputCounters};

/// What a full queue does with a new line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The producer waits for room: nothing is lost, the pipeline slows
    /// down to the output's pace (replay into stdout and files).
    Block,
    /// The oldest queued line is dropped and counted: the producer never
    /// waits (live capture; network collectors during a replay).
    DropOldest,
}

struct State {
    items: VecDeque<Arc<Line>>,
    bytes: usize,
    /// The producer is done: no more lines will come.
    closed: bool,
    /// The consumer is gone: lines are counted as undeliverable.
    abandoned: bool,
    /// The consumer waits for lines / producers wait for room: only then
    /// is the other side woken (a wake-up is a system call; a replay
    /// queues thousands of lines a second).
    consumer_waiting: bool,
    producers_waiting: usize,
}

/// A bounded multi-line queue between the detect thread and one output.
pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    max_items: usize,
    max_bytes: usize,
    overflow: Overflow,
    counters: Arc<OutputCounters>,
}

/// What [`Queue::pop`] found.
pub enum Pop {
    /// Up to the asked number of lines, oldest first.
    Lines(Vec<Arc<Line>>),
    /// Nothing arrived within the wait.
    Idle,
    /// The producer is done and everything was taken.
    Closed,
}

impl Queue {
    pub fn new(
        max_items: usize,
        max_bytes: usize,
        overflow: Overflow,
        counters: Arc<OutputCounters>,
    ) -> Queue {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
                abandoned: false,
                consumer_waiting: false,
                producers_waiting: 0,
            }),
            changed: Condvar::new(),
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            overflow,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every change is a single push or pop): keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fits(&self, st: &State, size: usize) -> bool {
        st.items.is_empty()
            || (st.items.len() < self.max_items && st.bytes.saturating_add(size) <= self.max_bytes)
    }

    /// Queues a line, waiting for room or dropping the oldest as configured.
    pub fn push(&self, line: Arc<Line>) {
        self.push_all(std::slice::from_ref(&line));
    }

    /// Queues lines in order (one lock and at most one wake-up for all of
    /// them when there is room), waiting for room or dropping the oldest as
    /// configured.
    pub(crate) fn push_all(&self, lines: &[Arc<Line>]) {
        let mut st = self.lock();
        for line in lines {
            let size = line.json.len();
            if self.overflow == Overflow::Block {
                while !st.abandoned && !self.fits(&st, size) {
                    // The consumer must hear of what is queued before this
                    // producer sleeps, or both would wait.
                    if st.consumer_waiting {
                        self.changed.notify_all();
                    }
                    st.producers_waiting += 1;
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.producers_waiting -= 1;
                }
            }
            if st.abandoned {
                self.counters
                    .dropped_undeliverable
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            while !self.fits(&st, size) {
                match st.items.pop_front() {
                    Some(old) => {
                        st.bytes = st.bytes.saturating_sub(old.json.len());
                        self.counters
                            .dropped_queue_full
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
            st.bytes = st.bytes.saturating_add(size);
            st.items.push_back(Arc::clone(line));
            self.counters.queued.fetch_add(1, Ordering::Relaxed);
            self.counters
                .queue_peak
                .fetch_max(st.items.len() as u64, Ordering::Relaxed);
        }
        let wake = st.consumer_waiting;
        drop(st);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Takes up to `max` lines, waiting at most `wait` for the first.
    pub fn pop(&self, max: usize, wait: Duration) -> Pop {
        let mut st = self.lock();
        if st.items.is_empty() && !st.closed {
            st.consumer_waiting = true;
            st = self
                .changed
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            st.consumer_waiting = false;
        }
        if st.items.is_empty() {
            return if st.closed { Pop::Closed } else { Pop::Idle };
        }
        let n = max.max(1).min(st.items.len());
        let taken: Vec<Arc<Line>> = st.items.drain(..n).collect();
        let freed: usize = taken.iter().map(|l| l.json.len()).sum();
        st.bytes = st.bytes.saturating_sub(freed);
        let wake = st.producers_waiting > 0;
        drop(st);
        if wake {
            self.changed.notify_all();
        }
        Pop::Lines(taken)
    }

    /// The producer is done.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The consumer gives up: what is queued, and whatever comes later, is
    /// counted as undeliverable. Returns how many were queued.
    pub(crate) fn abandon(&self) -> u64 {
        let mut st = self.lock();
        st.abandoned = true;
        let n = st.items.len() as u64;
        st.items.clear();
        st.bytes = 0;
        drop(st);
        self.counters
            .dropped_undeliverable
            .fetch_add(n, Ordering::Relaxed);
        self.changed.notify_all();
        n
    }

    /// The cap in lines.
    pub(crate) fn max_items(&self) -> usize {
        self.max_items
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Arc<Line> {
        Arc::new(Line::from_json(s.to_string()))
    }

    fn take(q: &Queue) -> Vec<String> {
        match q.pop(100, Duration::from_millis(1)) {
            Pop::Lines(v) => v.iter().map(|l| l.json.clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let c = Arc::new(OutputCounters::default());
        let q = Queue::new(3, 1 << 20, Overflow::DropOldest, Arc::clone(&c));
        for i in 0..5 {
            q.push(line(&format!("{{\"n\":{i}}}")));
        }
        assert_eq!(take(&q), vec!["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]);
        assert_eq!(c.dropped_queue_full.load(Ordering::Relaxed), 2);
        assert_eq!(c.queue_peak.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn byte_cap_drops_too_but_a_single_line_always_fits() {
        let c = Arc::new(OutputCounters::default());
        let q = Queue::new(100, 10, Overflow::DropOldest, Arc::clone(&c));
        q.push(line("123456"));
        q.push(line("abcdef"));
        assert_eq!(c.dropped_queue_full.load(Ordering::Relaxed), 1);
        q.push(line("a line longer than the byte cap"));
        assert_eq!(take(&q), vec!["a line longer than the byte cap"]);
    }

    #[test]
    fn block_waits_for_room_and_loses_nothing() {
        let c = Arc::new(OutputCounters::default());
        let q = Arc::new(Queue::new(2, 1 << 20, Overflow::Block, Arc::clone(&c)));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..50 {
                    q.push(line(&i.to_string()));
                }
                q.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match q.pop(1, Duration::from_millis(50)) {
                Pop::Lines(v) => got.extend(v.iter().map(|l| l.json.clone())),
                Pop::Idle => {}
                Pop::Closed => break,
            }
        }
        producer.join().unwrap();
        assert_eq!(got.len(), 50);
        assert_eq!(got.last().map(String::as_str), Some("49"));
        assert_eq!(c.dropped_queue_full.load(Ordering::Relaxed), 0);
        assert!(c.queue_peak.load(Ordering::Relaxed) <= 2);
    }

    #[test]
    fn lines_pushed_together_arrive_in_order_through_a_small_queue() {
        let c = Arc::new(OutputCounters::default());
        let q = Arc::new(Queue::new(3, 1 << 20, Overflow::Block, Arc::clone(&c)));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for batch in 0..20 {
                    let lines: Vec<Arc<Line>> =
                        (0..7).map(|i| line(&(batch * 7 + i).to_string())).collect();
                    q.push_all(&lines);
                }
                q.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match q.pop(2, Duration::from_millis(50)) {
                Pop::Lines(v) => got.extend(v.iter().map(|l| l.json.clone())),
                Pop::Idle => {}
                Pop::Closed => break,
            }
        }
        producer.join().unwrap();
        let want: Vec<String> = (0..140).map(|i: i32| i.to_string()).collect();
        assert_eq!(got, want);
        assert!(c.queue_peak.load(Ordering::Relaxed) <= 3);
    }

    #[test]
    fn abandoned_queue_releases_a_blocked_producer() {
        let c = Arc::new(OutputCounters::default());
        let q = Arc::new(Queue::new(1, 1 << 20, Overflow::Block, Arc::clone(&c)));
        q.push(line("a"));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.push(line("b")))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q.abandon(), 1);
        producer.join().unwrap();
        assert_eq!(c.dropped_undeliverable.load(Ordering::Relaxed), 2);
    }
}
