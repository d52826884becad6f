//! The live source: capture threads taking packets off libpcap's ring
//! (feature `live`).
//!
//! ```text
//! one handle:  capture thread ──decode, hash──▶ worker 0..N queues (try_send)
//! --fanout:    kernel PACKET_FANOUT_HASH ─▶ handle i ─▶ capture thread i ─▶ worker i queue
//! ```
//!
//! Owns: the capture loop — wait for packets (`poll`, at most the
//! packet-buffer timeout), copy what is ready into a 1 MiB block, hand the
//! block to the [`Splitter`] when it is full or the ring is empty (so a
//! partial block never waits longer than the timeout), and publish the
//! packet counters and libpcap's kernel and interface drops about once a
//! second. With `--fanout` there is one such thread per handle, each feeding
//! its own worker (the kernel already hashed the flows). On the stop signal
//! it still takes what the kernel had captured (at most one more timeout),
//! then returns; the workers then finish every open session.
//!
//! Must not: block on a worker (a full queue drops the batch, counted as
//! queue drops), or stop for anything but the stop flag or a capture error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{CaptureCounters, Feed, Mode, Source, SourceReport, Splitter, WorkerQueue};
use qmwatch_wire::capture::file::PacketRecord;
use qmwatch_wire::capture::live::Handle;
use qmwatch_wire::capture::{Block, BufferPool};

/// A block is handed over once it holds this many bytes.
const BLOCK_BYTES: usize = 1 << 20;
/// Packets taken per libpcap call (bounds how far a block can overshoot).
const PER_READ: usize = 64;
/// After the stop signal, how much longer than the packet-buffer timeout
/// the capture goes on taking what the kernel holds.
const DRAIN_SLACK: Duration = Duration::from_millis(50);
/// How often libpcap's drop counters are read.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// Open capture handles: one, or one per worker (`--fanout`).
pub struct LiveSource {
    handles: Vec<Handle>,
    /// The packet-buffer timeout: the longest wait for packets, and the
    /// longest a partial block is held.
    flush: Duration,
}

impl LiveSource {
    /// `handles`: one (hashed to the workers in the capture thread) or as
    /// many as workers (a fanout group, one per worker).
    pub fn new(handles: Vec<Handle>, flush: Duration) -> LiveSource {
        LiveSource {
            handles,
            flush: flush.max(Duration::from_millis(1)),
        }
    }
}

impl Source for LiveSource {
    fn mode(&self) -> Mode {
        if self.handles.len() > 1 {
            Mode::LiveFanout
        } else {
            Mode::Live
        }
    }

    fn lossless(&self) -> bool {
        false
    }

    fn live(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, feed: Feed) -> SourceReport {
        let Feed {
            queues,
            counters,
            stop,
        } = feed;
        let flush = self.flush;
        let mut handles = self.handles;
        if handles.len() == 1 || handles.len() != queues.len() {
            let mut report = SourceReport::default();
            if let Some(h) = handles.first_mut() {
                capture_loop(h, &queues, &counters, &stop, true, flush, &mut report);
            }
            if handles.len() > 1 {
                report
                    .errors
                    .push("fanout handles do not match the workers".into());
            }
            return report;
        }
        // One capture thread per fanout handle, each feeding its worker.
        let mut reports: Vec<SourceReport> = Vec::new();
        thread::scope(|scope| {
            let mut running = Vec::new();
            for (i, (h, q)) in handles.iter_mut().zip(queues.iter()).enumerate() {
                let (counters, stop) = (&counters, &stop);
                let spawned = thread::Builder::new()
                    .name(format!("qmwatch-capture-{i}"))
                    .spawn_scoped(scope, move || {
                        let mut r = SourceReport::default();
                        let one = std::slice::from_ref(q);
                        // Interface drops are per interface: count them once.
                        capture_loop(h, one, counters, stop, i == 0, flush, &mut r);
                        r
                    });
                match spawned {
                    Ok(t) => running.push(t),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        let mut r = SourceReport::default();
                        r.errors.push(format!("cannot start capture thread: {e}"));
                        reports.push(r);
                    }
                }
            }
            for t in running {
                match t.join() {
                    Ok(r) => reports.push(r),
                    Err(_) => {
                        let mut r = SourceReport::default();
                        r.errors.push("a capture thread panicked".into());
                        reports.push(r);
                    }
                }
            }
        });
        let mut all = SourceReport::default();
        for r in reports {
            all.decode.merge(&r.decode);
            all.errors.extend(r.errors);
        }
        all
    }
}

/// Reads packets from `h` until `stop` (or an error), handing blocks to
/// `queues`. When a capture thread fails, `stop` is set so that the others
/// end too and the run finishes every session.
// Long: one loop holds the block, flush and drain-after-stop rules that tests/live.rs checks together.
fn capture_loop(
    h: &mut Handle,
    queues: &[WorkerQueue],
    counters: &Arc<CaptureCounters>,
    stop: &AtomicBool,
    count_ifdrops: bool,
    flush: Duration,
    report: &mut SourceReport,
) {
    let pool = BufferPool::new(queues.len() * 8 + 8);
    let mut splitter = Splitter::new(queues.len(), false, Arc::clone(counters));
    let mut records: Vec<PacketRecord> = Vec::with_capacity(4096);
    let mut buf = empty_buffer(&pool);
    let mut block_started = Instant::now();
    let mut drops_read = Instant::now();
    let mut failed = None;
    let mut hand_over = |buf: &mut Vec<u8>, records: &mut Vec<PacketRecord>| -> bool {
        if records.is_empty() {
            return true;
        }
        let full = std::mem::replace(buf, empty_buffer(&pool));
        let ok = splitter
            .dispatch(Block::new(full, Some(pool.returner())), records, queues)
            .is_ok();
        records.clear();
        ok
    };
    // After the stop signal, what the kernel had already captured is still
    // taken (its last block is handed over within one timeout), for at most
    // one more timeout and a bit: a flood cannot keep the sensor up.
    let mut drain_until: Option<Instant> = None;
    'capture: loop {
        let wait = match drain_until {
            None if stop.load(Ordering::Relaxed) => {
                let until = Instant::now() + flush + DRAIN_SLACK;
                drain_until = Some(until);
                flush + DRAIN_SLACK
            }
            None => flush,
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => break,
            },
        };
        match h.wait(wait) {
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        // Take everything that is ready, a block at a time.
        loop {
            if records.is_empty() {
                block_started = Instant::now();
            }
            let n = match h.read(&mut buf, &mut records, PER_READ) {
                Ok(n) => n,
                Err(e) => {
                    failed = Some(e);
                    break 'capture;
                }
            };
            if (buf.len() >= BLOCK_BYTES || block_started.elapsed() >= flush)
                && !hand_over(&mut buf, &mut records)
            {
                failed = Some("a worker stopped unexpectedly".into());
                break 'capture;
            }
            if n < PER_READ {
                break;
            }
            let stopping = match drain_until {
                None => stop.load(Ordering::Relaxed),
                Some(until) => Instant::now() >= until,
            };
            if stopping {
                break;
            }
        }
        // The ring is empty for now: a partial block goes at once.
        if !hand_over(&mut buf, &mut records) {
            failed = Some("a worker stopped unexpectedly".into());
            break;
        }
        if drops_read.elapsed() >= DROPS_EVERY {
            drops_read = Instant::now();
            publish_drops(h, counters, count_ifdrops);
        }
    }
    if !hand_over(&mut buf, &mut records) && failed.is_none() {
        failed = Some("a worker stopped unexpectedly".into());
    }
    publish_drops(h, counters, count_ifdrops);
    if let Some(e) = failed {
        report.errors.push(e);
        stop.store(true, Ordering::Relaxed);
    }
    report.decode = splitter.decode_stats().clone();
}

/// A buffer from the pool, emptied (pooled buffers keep their length).
fn empty_buffer(pool: &BufferPool) -> Vec<u8> {
    let mut b = pool.get(BLOCK_BYTES + (PER_READ << 10));
    b.clear();
    b
}

fn publish_drops(h: &mut Handle, counters: &CaptureCounters, count_ifdrops: bool) {
    if let Ok(d) = h.drops() {
        counters.kernel_drops.fetch_add(d.kernel, Ordering::Relaxed);
        if count_ifdrops {
            counters
                .interface_drops
                .fetch_add(d.interface, Ordering::Relaxed);
        }
    }
}
