//! Findings put back in capture order, for a replay.
//!
//! Each worker sees only its own flows, and the detect thread would take
//! their findings in the order the workers happen to finish their batches:
//! with two workers, which session of a server came first ("first seen",
//! the session a `qmwatch.service` event cites) could change from one
//! replay of a capture to the next. Here every finding carries its
//! [`Place`] in the capture (the block's number, the frame's offset in the
//! block), and a finding is handed on only once every worker has finished
//! that block, the earliest place first. One replay of a capture then gives
//! the same events, in the same order, however the threads ran.
//!
//! Findings made together, not by one frame (flows timed out after a block,
//! or ended at the end of input), come after the block's frames, in the
//! order of their endpoints: the order must not depend on which worker
//! held which flow (the flows' worker is chosen by a hash seeded at random
//! each run), nor on how many workers there are (a replay with one worker
//! goes through here too). One flow's findings keep the order it made them
//! in.
//!
//! Owns: the findings held back, per worker, and how far each worker has
//! got. Must not: hold more than [`MAX_HELD`] findings (past that, the
//! earliest is handed on at once, out of order if it must, and counted),
//! nor hold anything back in live capture (made with `ordered` false),
//! where waiting for a quiet worker would delay every alert (live workers
//! see no common blocks either).

use std::collections::VecDeque;
use std::net::SocketAddr;

use qmwatch_proto::Record;

/// Findings held back at most, over all workers. A worker runs at most a
/// queue of blocks ahead of the slowest (the capture thread waits for a
/// full queue), so this is reached only by a capture made to yield many
/// findings per packet.
pub(crate) const MAX_HELD: usize = 65_536;

/// Offset of findings that no frame made: after every frame of the block.
pub(crate) const AFTER_FRAMES: u64 = u64::MAX;

/// Block number of the findings made at the end of input.
pub(crate) const END_OF_INPUT: u64 = u64::MAX;

/// Where in the capture a finding was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    /// The block ([`Batch::seq`](qmwatch_wire::capture::Batch)).
    pub block: u64,
    /// The frame's offset in the block, or [`AFTER_FRAMES`].
    pub offset: u64,
}

/// What one worker sent for one block: its findings, and where each run of
/// them was made.
pub(crate) struct Made {
    /// The block these findings came with; the worker is done with it.
    /// `None`: not merged (live capture), handed on as they come.
    pub block: Option<u64>,
    pub records: Vec<Record>,
    /// `(end, offset)`: the findings up to index `end` (from the previous
    /// mark's end) were made by the frame at `offset`. Findings after the
    /// last mark were made after the block's frames ([`AFTER_FRAMES`]).
    pub marks: Vec<(u32, u32)>,
}

struct Worker {
    held: VecDeque<(Place, Record)>,
    /// Every block up to this one is done (`None`: none yet).
    passed: Option<u64>,
    done: bool,
}

/// See the module documentation. Made with `ordered` false (live
/// capture), it hands every finding on as it comes.
pub(crate) struct Merge {
    ordered: bool,
    workers: Vec<Worker>,
    held: usize,
    /// Findings handed on before their turn because [`MAX_HELD`] was reached.
    pub released_early: u64,
}

impl Merge {
    pub fn new(workers: usize, ordered: bool) -> Merge {
        Merge {
            ordered,
            workers: (0..workers.max(1))
                .map(|_| Worker {
                    held: VecDeque::new(),
                    passed: None,
                    done: false,
                })
                .collect(),
            held: 0,
            released_early: 0,
        }
    }

    /// Takes what worker `w` made for a block (see [`Merge::take`]).
    fn push(&mut self, w: usize, made: Made, block: u64) {
        let Some(worker) = self.workers.get_mut(w) else {
            return;
        };
        let mut marks = made.marks.iter().peekable();
        for (i, r) in made.records.into_iter().enumerate() {
            while marks.next_if(|&&(end, _)| end as usize <= i).is_some() {}
            let offset = marks.peek().map_or(AFTER_FRAMES, |&&(_, at)| u64::from(at));
            let place = Place { block, offset };
            worker.held.push_back((place, r));
            self.held += 1;
        }
        worker.passed = Some(worker.passed.map_or(block, |p| p.max(block)));
    }

    /// Takes what worker `w` made for a block, and hands on to `out` every
    /// finding whose turn has come.
    pub fn take(&mut self, w: usize, made: Made, out: &mut impl FnMut(Record)) {
        match made.block {
            Some(block) if self.ordered => {
                self.push(w, made, block);
                self.release(out);
            }
            _ => made.records.into_iter().for_each(out),
        }
    }

    /// Worker `w` has ended: it sends nothing more. Hands on to `out` every
    /// finding whose turn has come.
    pub fn worker_done(&mut self, w: usize, out: &mut impl FnMut(Record)) {
        if let Some(worker) = self.workers.get_mut(w) {
            worker.done = true;
        }
        self.release(out);
    }

    /// Hands every finding whose turn has come to `out`, in capture order
    /// (see the module documentation).
    pub fn release(&mut self, out: &mut impl FnMut(Record)) {
        while let Some(place) = self.earliest() {
            if self.ready(place) {
                self.release_place(place, out);
            } else if self.held > MAX_HELD {
                // Over the cap: the earliest finding goes now, whatever
                // may still come before it.
                if let Some(r) = self.pop_earliest() {
                    self.released_early += 1;
                    out(r);
                }
            } else {
                return;
            }
        }
    }

    /// Hands on everything held, in place order, whatever the workers'
    /// progress: for the end of a run in which a worker did not end (it
    /// panicked), so that nothing already found is lost.
    pub fn release_all(&mut self, out: &mut impl FnMut(Record)) {
        while let Some(place) = self.earliest() {
            self.release_place(place, out);
        }
    }

    /// Findings held back now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// The earliest place held.
    fn earliest(&self) -> Option<Place> {
        self.workers
            .iter()
            .filter_map(|w| w.held.front().map(|(p, _)| *p))
            .min()
    }

    /// The earliest finding held (of the first worker holding that place).
    fn pop_earliest(&mut self) -> Option<Record> {
        let place = self.earliest()?;
        let w = self
            .workers
            .iter_mut()
            .find(|w| w.held.front().is_some_and(|(p, _)| *p == place))?;
        let (_, r) = w.held.pop_front()?;
        self.held = self.held.saturating_sub(1);
        Some(r)
    }

    /// Whether every worker still running is done with `place`'s block, so
    /// that nothing earlier can come.
    fn ready(&self, place: Place) -> bool {
        self.workers
            .iter()
            .all(|w| w.done || w.passed.is_some_and(|p| p >= place.block))
    }

    /// Hands on the findings made at `place`: one frame's from its one
    /// worker as they are; findings made after the frames from every
    /// worker, ordered by their endpoints (stable: one flow's keep theirs).
    fn release_place(&mut self, place: Place, out: &mut impl FnMut(Record)) {
        let mut group = Vec::new();
        for w in &mut self.workers {
            while w.held.front().is_some_and(|(p, _)| *p == place) {
                let Some((_, r)) = w.held.pop_front() else {
                    break;
                };
                self.held = self.held.saturating_sub(1);
                if place.offset == AFTER_FRAMES {
                    group.push(r);
                } else {
                    out(r);
                }
            }
        }
        group.sort_by_key(flow_of);
        group.into_iter().for_each(out);
    }
}

/// A finding's flow, the same whichever side is the client.
fn flow_of(r: &Record) -> (SocketAddr, SocketAddr) {
    let e = match r {
        Record::Service { endpoints, .. } => endpoints,
        Record::Transaction(t) => &t.endpoints,
        Record::Anomaly(a) => &a.endpoints,
    };
    if e.client <= e.server {
        (e.client, e.server)
    } else {
        (e.server, e.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmwatch_proto::{Endpoints, Evidence, Protocol};

    /// A finding of flow `n` at time `ts` (the time tells findings apart).
    fn rec(n: u16, ts: u64) -> Record {
        Record::Service {
            endpoints: Endpoints {
                client: SocketAddr::from(([192, 0, 2, 1], 40_000 + n)),
                server: SocketAddr::from(([198, 51, 100, 1], 209)),
            },
            protocol: Protocol::Qmtp,
            evidence: Evidence::RequestAndReply,
            ts,
        }
    }

    fn ts(r: &Record) -> u64 {
        match r {
            Record::Service { ts, .. } => *ts,
            _ => 0,
        }
    }

    fn flow(r: &Record) -> u16 {
        flow_of(r).0.port() - 40_000
    }

    fn made(block: u64, records: Vec<Record>, marks: &[(u32, u32)]) -> Made {
        Made {
            block: Some(block),
            records,
            marks: marks.to_vec(),
        }
    }

    /// Takes `made` without handing anything on (`drain` does).
    fn put(m: &mut Merge, w: usize, made: Made) {
        let block = made.block.expect("a block");
        m.push(w, made, block);
    }

    fn drain(m: &mut Merge) -> Vec<Record> {
        let mut v = Vec::new();
        m.release(&mut |r| v.push(r));
        v
    }

    #[test]
    fn later_block_waits_for_every_worker() {
        let mut m = Merge::new(2, true);
        put(&mut m, 1, made(3, vec![rec(1, 30)], &[(1, 100)]));
        assert!(drain(&mut m).is_empty(), "worker 0 has not done block 3");
        put(&mut m, 0, made(2, vec![rec(2, 20)], &[(1, 500)]));
        let out: Vec<u64> = drain(&mut m).iter().map(ts).collect();
        assert_eq!(out, [20], "block 2 is done by both; block 3 is not");
        put(&mut m, 0, made(3, vec![rec(3, 31)], &[(1, 50)]));
        let out: Vec<u64> = drain(&mut m).iter().map(ts).collect();
        assert_eq!(out, [31, 30], "frame at offset 50 before frame at 100");
        assert_eq!(m.held(), 0);
        assert_eq!(m.released_early, 0);
    }

    #[test]
    fn unmerged_findings_are_handed_on_as_they_come() {
        let mut m = Merge::new(2, false);
        let mut out = Vec::new();
        let made = made(7, vec![rec(1, 5), rec(2, 3)], &[(1, 900)]);
        m.take(1, made, &mut |r| out.push(ts(&r)));
        assert_eq!(out, [5, 3], "live: no waiting for worker 0");
        let mut m = Merge::new(2, true);
        let made = Made {
            block: None,
            records: vec![rec(1, 4)],
            marks: Vec::new(),
        };
        m.take(0, made, &mut |r| out.push(ts(&r)));
        assert_eq!(out, [5, 3, 4], "a message of no block is not held");
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn marks_place_each_run_of_findings() {
        let mut m = Merge::new(1, true);
        put(
            &mut m,
            0,
            made(
                0,
                vec![rec(1, 1), rec(1, 2), rec(2, 3), rec(3, 4)],
                &[(2, 10), (3, 40)],
            ),
        );
        let mut places = Vec::new();
        for w in &m.workers {
            places.extend(w.held.iter().map(|(p, _)| p.offset));
        }
        assert_eq!(places, [10, 10, 40, AFTER_FRAMES]);
    }

    /// Whatever the split of flows over workers and the order in which the
    /// workers' blocks arrive, the findings come out the same.
    #[test]
    fn order_does_not_depend_on_workers_or_timing() {
        // Block b, frame f of flow (f % 5) makes a finding; after each
        // block, flows b % 5 and (b + 2) % 5 time out.
        let mut expected: Option<Vec<(u16, u64)>> = None;
        for workers in 1..=4usize {
            for assignment in 0..4u16 {
                for interleave in 0..3usize {
                    let owner = |flow: u16| usize::from((flow + assignment) % 5) % workers;
                    let mut per_worker: Vec<Vec<Made>> = (0..workers).map(|_| Vec::new()).collect();
                    for block in 0..6u64 {
                        for (w, list) in per_worker.iter_mut().enumerate() {
                            let mut made = made(block, Vec::new(), &[]);
                            for f in 0..8u32 {
                                let flow = (f % 5) as u16;
                                if owner(flow) == w {
                                    made.records.push(rec(flow, block * 100 + u64::from(f)));
                                    made.marks.push((made.records.len() as u32, f * 64));
                                }
                            }
                            for flow in [(block % 5) as u16, ((block + 2) % 5) as u16] {
                                if owner(flow) == w {
                                    made.records.push(rec(flow, block * 100 + 99));
                                }
                            }
                            list.push(made);
                        }
                    }
                    let mut m = Merge::new(workers, true);
                    let mut out = Vec::new();
                    let mut queues: Vec<VecDeque<Made>> =
                        per_worker.into_iter().map(VecDeque::from).collect();
                    let mut turn = interleave;
                    while queues.iter().any(|q| !q.is_empty()) {
                        // Each turn one worker sends its next block, in an
                        // order that favours a different worker per case.
                        turn = (turn * 7 + 3) % 11;
                        let w = turn % workers;
                        if let Some(made) = queues.get_mut(w).and_then(VecDeque::pop_front) {
                            put(&mut m, w, made);
                            m.release(&mut |r| out.push(r));
                        }
                    }
                    for w in 0..workers {
                        m.worker_done(w, &mut |r| out.push(r));
                    }
                    let got: Vec<(u16, u64)> = out.iter().map(|r| (flow(r), ts(r))).collect();
                    assert_eq!(got.len(), 6 * 10);
                    // In capture order: block by block, frames by offset.
                    let times: Vec<u64> = got.iter().map(|g| g.1).collect();
                    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
                    match &expected {
                        None => expected = Some(got),
                        Some(e) => assert_eq!(
                            &got, e,
                            "workers {workers} assignment {assignment} interleave {interleave}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn findings_of_one_flow_keep_their_order_after_the_frames() {
        let mut m = Merge::new(2, true);
        put(
            &mut m,
            0,
            made(0, vec![rec(4, 9), rec(4, 1), rec(2, 5)], &[]),
        );
        put(&mut m, 1, made(0, vec![rec(3, 7)], &[]));
        let got: Vec<(u16, u64)> = drain(&mut m).iter().map(|r| (flow(r), ts(r))).collect();
        assert_eq!(got, [(2, 5), (3, 7), (4, 9), (4, 1)]);
    }

    #[test]
    fn end_of_input_comes_last_and_a_silent_worker_holds_nothing_forever() {
        let mut m = Merge::new(2, true);
        put(&mut m, 0, made(0, vec![rec(2, 1)], &[(1, 0)]));
        put(&mut m, 0, made(END_OF_INPUT, vec![rec(1, 2)], &[]));
        assert!(drain(&mut m).is_empty(), "worker 1 may still send block 0");
        m.worker_done(0, &mut |_| panic!("worker 1 may still send block 0"));
        put(&mut m, 1, made(0, vec![rec(3, 0)], &[(1, 7)]));
        let out: Vec<u64> = drain(&mut m).iter().map(ts).collect();
        assert_eq!(out, [1, 0], "offset 0, then 7; worker 1 may still end");
        // Worker 1 never says it is done (it panicked): the end of the run
        // hands on what is held.
        let mut out = Vec::new();
        m.release_all(&mut |r| out.push(r));
        assert_eq!(out.iter().map(ts).collect::<Vec<_>>(), [2]);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn held_findings_are_capped_and_counted() {
        let mut m = Merge::new(2, true);
        let n = MAX_HELD + 10;
        put(
            &mut m,
            0,
            made(5, (0..n).map(|i| rec(1, i as u64)).collect(), &[]),
        );
        let out = drain(&mut m);
        assert_eq!(m.held(), MAX_HELD);
        assert_eq!(m.released_early, 10);
        let out: Vec<u64> = out.iter().map(ts).collect();
        assert_eq!(out, (0..10).collect::<Vec<u64>>(), "earliest first");
        // Once worker 1 is done with block 5, the rest follow in turn.
        put(&mut m, 1, made(5, Vec::new(), &[]));
        assert_eq!(drain(&mut m).len(), MAX_HELD);
        assert_eq!(m.released_early, 10);
    }
}
