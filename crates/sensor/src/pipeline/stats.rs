//! Statistics for a sensor that runs for months: the `qmwatch.stats` metric
//! event, and the `capture_loss` anomaly when the sensor goes blind.
//!
//! Owns: the schedule (every `--stats-interval` and once at the end),
//! gathering the counters, the per-interval histograms (processing time per
//! batch; detection latency, from the capture of the packet that produced a
//! finding to the moment its event is handed to the outputs), the memory in
//! use (VmRSS), and judging the capture-loss estimate against its
//! [`LossThreshold`]. It lives in the detect thread.
//!
//! Nothing here takes a lock or slows the hot path: capture threads publish
//! relaxed atomics ([`super::CaptureCounters`]); when statistics are due the
//! detect thread bumps one atomic epoch, and each worker, between two
//! batches (or within 100 ms when idle), sends a [`WorkerSnapshot`] of its
//! counters and its histogram over the channel it sends records on.
//!
//! Must not: wait for a worker (one that has not answered within
//! [`GRACE`] is reported from its last snapshot), or keep anything that
//! grows with the run (histograms are reset every interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use super::{new_histogram, wall_ns, CaptureCounters, CaptureTotals, Mode};
use crate::detect::Detector;
use crate::event::{self, CaptureLoss, Event, RunId};
use crate::flow::{loss, FlowStats};
use crate::sink::OutputCounters;

/// How long the detect thread waits for every worker's snapshot.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// When the capture-loss estimate raises a `capture_loss` anomaly: more
/// than `percent` of the TCP bytes acknowledged in one statistics interval
/// were never seen, over at least `min_acked_bytes` acknowledged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossThreshold {
    pub percent: f64,
    pub min_acked_bytes: u64,
}

impl Default for LossThreshold {
    fn default() -> Self {
        LossThreshold {
            percent: 5.0,
            min_acked_bytes: 1 << 20,
        }
    }
}

impl LossThreshold {
    /// The anomaly to raise for an interval, if any.
    pub fn judge(&self, gap: u64, acked: u64, interval_seconds: f64) -> Option<CaptureLoss> {
        let percent = loss::percent(gap, acked)?;
        (acked >= self.min_acked_bytes && percent > self.percent).then_some(CaptureLoss {
            percent,
            acked_bytes: acked,
            gap_bytes: gap,
            threshold_percent: self.percent,
            interval_seconds,
        })
    }
}

/// One worker's counters at a statistics request.
pub struct WorkerSnapshot {
    pub worker: usize,
    /// Its flow counters since the start (capture-loss totals included).
    pub flows: FlowStats,
    /// Flows in its table now.
    pub tracked: u64,
    /// Out-of-order bytes held for reassembly now.
    pub held_bytes: u64,
    /// Copied session state held now.
    pub session_bytes: u64,
    pub segments: u64,
    pub batches: u64,
    /// Processing time of each batch (ns) since its previous snapshot.
    pub batch_ns: Histogram<u64>,
}

/// The counters kept of a snapshot (its histogram is merged on arrival).
#[derive(Default)]
struct Kept {
    flows: FlowStats,
    tracked: u64,
    held_bytes: u64,
    session_bytes: u64,
    segments: u64,
    batches: u64,
}

/// What the statistics of a run need to know.
pub(crate) struct StatsSetup {
    pub interval: Duration,
    pub epoch: Arc<AtomicU64>,
    pub capture: Arc<CaptureCounters>,
    pub outputs: Vec<(String, Arc<OutputCounters>)>,
    pub run: RunId,
    pub workers: usize,
    pub mode: Mode,
    pub measure_latency: bool,
    pub threshold: LossThreshold,
}

/// The statistics state of the detect thread.
pub(crate) struct StatsRun {
    s: StatsSetup,
    epoch_no: u64,
    next_due: Instant,
    /// A request is out since then.
    pending: Option<Instant>,
    /// The last epoch each worker answered (`u64::MAX`: done).
    reported: Vec<u64>,
    latest: Vec<Kept>,
    batch_ns: Histogram<u64>,
    latency_us: Histogram<u64>,
    seq: u64,
    started: Instant,
    last_emit: Instant,
    prev_capture: CaptureTotals,
    prev_loss: (u64, u64),
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| new_histogram())
}

/// Resident memory of this process (VmRSS), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb.saturating_mul(1024))
}

/// The `q` quantile of `h` in microseconds (`per_us` units of `h` to a
/// microsecond); `None` (null) for an empty histogram.
fn quantile_us(h: &Histogram<u64>, q: f64, per_us: u64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) / per_us.max(1))
}

/// The maximum of `h` in microseconds, as [`quantile_us`].
fn max_us(h: &Histogram<u64>, per_us: u64) -> Option<u64> {
    (!h.is_empty()).then(|| h.max() / per_us.max(1))
}

/// The `qmwatch.stats` object of one statistics event (docs/events.md),
/// serialized as it is: the field order is the output's order, and `None`
/// is written as null.
#[derive(Serialize)]
struct StatsBody {
    #[serde(rename = "final")]
    last: bool,
    sequence: u64,
    mode: &'static str,
    workers: usize,
    interval_seconds: f64,
    uptime_seconds: f64,
    /// Totals since the start.
    capture: CaptureTotals,
    /// Since the previous statistics.
    interval: IntervalCounts,
    flows: FlowCounts,
    capture_loss: LossFigures,
    events: BTreeMap<&'static str, u64>,
    outputs: Vec<OutputCounts>,
    processing: Processing,
    /// Live capture only.
    latency: Option<Latency>,
    memory: Memory,
}

/// Capture counters of one interval.
#[derive(Serialize)]
struct IntervalCounts {
    packets: u64,
    bytes: u64,
    kernel_drops: u64,
    interface_drops: u64,
    queue_drops: u64,
}

/// The flow tables of all the workers together, now.
#[derive(Serialize)]
struct FlowCounts {
    tracked: u64,
    created: u64,
    candidates: u64,
    timed_out: u64,
    evicted_at_cap: u64,
    segments: u64,
    reassembly_bytes_held: u64,
    session_bytes_held: u64,
}

/// The capture-loss estimate, over the interval and in total, and the
/// threshold it is judged against.
#[derive(Serialize)]
struct LossFigures {
    percent: Option<f64>,
    acked_bytes: u64,
    gap_bytes: u64,
    total_percent: Option<f64>,
    total_acked_bytes: u64,
    total_gap_bytes: u64,
    threshold_percent: f64,
    min_acked_bytes: u64,
}

/// What one output has done since the start.
#[derive(Serialize)]
struct OutputCounts {
    name: String,
    written: u64,
    dropped_queue_full: u64,
    dropped_undeliverable: u64,
}

/// Worker time per batch over the interval.
#[derive(Serialize)]
struct Processing {
    batches: u64,
    total_batches: u64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    max_us: Option<u64>,
}

/// Detection latency over the interval.
#[derive(Serialize)]
struct Latency {
    events: u64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    max_us: Option<u64>,
}

#[derive(Serialize)]
struct Memory {
    rss_bytes: Option<u64>,
}

/// The workers' latest snapshots added up (peaks: see
/// `RunReport::flows`), with what was measured when statistics were due.
struct Reading {
    now: Instant,
    /// Seconds since the previous statistics.
    secs: f64,
    flows: FlowStats,
    tracked: u64,
    held_bytes: u64,
    session_bytes: u64,
    segments: u64,
    batches: u64,
    capture: CaptureTotals,
    /// Acknowledged and unseen TCP bytes in the interval.
    acked: u64,
    gap: u64,
    rss: Option<u64>,
}

impl StatsRun {
    pub fn new(s: StatsSetup) -> StatsRun {
        let now = Instant::now();
        let workers = s.workers.max(1);
        StatsRun {
            next_due: now + s.interval,
            epoch_no: 0,
            pending: None,
            reported: vec![0; workers],
            latest: (0..workers).map(|_| Kept::default()).collect(),
            batch_ns: new_histogram(),
            latency_us: latency_histogram(),
            seq: 1,
            started: now,
            last_emit: now,
            prev_capture: CaptureTotals::default(),
            prev_loss: (0, 0),
            s,
        }
    }

    /// When the detect thread must look at the statistics again.
    pub fn deadline(&self) -> Instant {
        match self.pending {
            Some(since) => since + GRACE,
            None => self.next_due,
        }
    }

    /// `events` events were written for records whose latest packet was
    /// captured at `trigger_ns` (wall clock; 0: not caused by a packet).
    pub(crate) fn note_events(&mut self, events: u64, trigger_ns: u64) {
        if !self.s.measure_latency || events == 0 || trigger_ns == 0 {
            return;
        }
        let us = (wall_ns().saturating_sub(trigger_ns) / 1000).max(1);
        let _ = self.latency_us.record_n(us, events);
    }

    fn keep(&mut self, snap: &WorkerSnapshot) {
        let _ = self.batch_ns.add(&snap.batch_ns);
        if let Some(k) = self.latest.get_mut(snap.worker) {
            *k = Kept {
                flows: snap.flows.clone(),
                tracked: snap.tracked,
                held_bytes: snap.held_bytes,
                session_bytes: snap.session_bytes,
                segments: snap.segments,
                batches: snap.batches,
            };
        }
    }

    /// A worker answered the request `epoch`.
    pub(crate) fn snapshot(&mut self, epoch: u64, snap: WorkerSnapshot) {
        self.keep(&snap);
        if let Some(r) = self.reported.get_mut(snap.worker) {
            *r = (*r).max(epoch);
        }
    }

    /// A worker ended; `last` is its final snapshot.
    pub(crate) fn worker_done(&mut self, last: &WorkerSnapshot) {
        self.keep(last);
        if let Some(r) = self.reported.get_mut(last.worker) {
            *r = u64::MAX;
        }
    }

    fn all_reported(&self) -> bool {
        self.reported.iter().all(|e| *e >= self.epoch_no)
    }

    /// Asks the workers for snapshots when statistics are due, and writes
    /// them once every worker answered (or [`GRACE`] passed).
    pub fn tick(&mut self, det: &mut Detector, out: &mut Vec<Event>) {
        let now = Instant::now();
        match self.pending {
            None if now >= self.next_due => {
                self.epoch_no += 1;
                self.s.epoch.store(self.epoch_no, Ordering::Relaxed);
                self.pending = Some(now);
                if self.all_reported() {
                    self.emit_due(det, out);
                }
            }
            Some(since) if self.all_reported() || now >= since + GRACE => {
                self.emit_due(det, out);
            }
            _ => {}
        }
    }

    fn emit_due(&mut self, det: &mut Detector, out: &mut Vec<Event>) {
        self.emit(det, out, false);
        self.pending = None;
        let now = Instant::now();
        self.next_due += self.s.interval;
        if self.next_due <= now {
            self.next_due = now + self.s.interval;
        }
    }

    /// The end of the run: every worker is done; the final statistics.
    pub fn finish(&mut self, det: &mut Detector, out: &mut Vec<Event>) {
        self.emit(det, out, true);
    }

    /// Writes one `qmwatch.stats` event (`last`: the final one), and a
    /// `capture_loss` anomaly if the interval's loss is over the threshold;
    /// then starts the next interval.
    fn emit(&mut self, det: &mut Detector, out: &mut Vec<Event>, last: bool) {
        let ts = wall_ns();
        let r = self.read();
        let body = self.body(&r, det, last);
        let stats = serde_json::to_value(&body).unwrap_or(Value::Null);
        let m = event::stats(ts, &self.s.run, self.seq, self.message(&r, last), stats);
        det.emit_sensor(event::DATASET_STATS, m, out);
        if let Some(l) = self.s.threshold.judge(r.gap, r.acked, r.secs) {
            let m = event::capture_loss(ts, &self.s.run, self.seq, &l);
            det.emit_sensor(event::DATASET_ANOMALY, m, out);
        }
        self.batch_ns.reset();
        self.latency_us.reset();
        self.prev_capture = r.capture;
        self.prev_loss = (r.flows.loss_acked_bytes, r.flows.loss_gap_bytes);
        self.seq += 1;
        self.last_emit = r.now;
    }

    /// Adds up the workers' latest snapshots and reads the capture
    /// counters and the memory in use.
    fn read(&self) -> Reading {
        let now = Instant::now();
        let mut r = Reading {
            now,
            secs: now.duration_since(self.last_emit).as_secs_f64(),
            flows: FlowStats::default(),
            tracked: 0,
            held_bytes: 0,
            session_bytes: 0,
            segments: 0,
            batches: 0,
            capture: self.s.capture.totals(),
            acked: 0,
            gap: 0,
            rss: None,
        };
        for k in &self.latest {
            r.flows.merge(&k.flows);
            r.tracked += k.tracked;
            r.held_bytes += k.held_bytes;
            r.session_bytes += k.session_bytes;
            r.segments += k.segments;
            r.batches += k.batches;
        }
        r.acked = r.flows.loss_acked_bytes.saturating_sub(self.prev_loss.0);
        r.gap = r.flows.loss_gap_bytes.saturating_sub(self.prev_loss.1);
        r.rss = rss_bytes();
        r
    }

    /// The `qmwatch.stats` object of a reading.
    fn body(&self, r: &Reading, det: &Detector, last: bool) -> StatsBody {
        let (cap, p, f, t) = (r.capture, self.prev_capture, &r.flows, self.s.threshold);
        let (h, l) = (&self.batch_ns, &self.latency_us);
        StatsBody {
            last,
            sequence: self.seq,
            mode: self.s.mode.as_str(),
            workers: self.s.workers,
            interval_seconds: r.secs,
            uptime_seconds: r.now.duration_since(self.started).as_secs_f64(),
            capture: cap,
            interval: IntervalCounts {
                packets: cap.packets.saturating_sub(p.packets),
                bytes: cap.bytes.saturating_sub(p.bytes),
                kernel_drops: cap.kernel_drops.saturating_sub(p.kernel_drops),
                interface_drops: cap.interface_drops.saturating_sub(p.interface_drops),
                queue_drops: cap.queue_drops.saturating_sub(p.queue_drops),
            },
            flows: FlowCounts {
                tracked: r.tracked,
                created: f.flows_created,
                candidates: f.flows_candidate,
                timed_out: f.flows_timed_out,
                evicted_at_cap: f.flows_evicted_cap,
                segments: r.segments,
                reassembly_bytes_held: r.held_bytes,
                session_bytes_held: r.session_bytes,
            },
            capture_loss: LossFigures {
                percent: loss::percent(r.gap, r.acked),
                acked_bytes: r.acked,
                gap_bytes: r.gap,
                total_percent: f.capture_loss_percent(),
                total_acked_bytes: f.loss_acked_bytes,
                total_gap_bytes: f.loss_gap_bytes,
                threshold_percent: t.percent,
                min_acked_bytes: t.min_acked_bytes,
            },
            events: det.stats.events_by_dataset.clone(),
            outputs: self.outputs(),
            processing: Processing {
                batches: h.len(),
                total_batches: r.batches,
                p50_us: quantile_us(h, 0.5, 1000),
                p99_us: quantile_us(h, 0.99, 1000),
                max_us: max_us(h, 1000),
            },
            latency: self.s.measure_latency.then(|| Latency {
                events: l.len(),
                p50_us: quantile_us(l, 0.5, 1),
                p99_us: quantile_us(l, 0.99, 1),
                max_us: max_us(l, 1),
            }),
            memory: Memory { rss_bytes: r.rss },
        }
    }

    /// What each output has done so far.
    fn outputs(&self) -> Vec<OutputCounts> {
        self.s
            .outputs
            .iter()
            .map(|(name, c)| {
                let o = c.snapshot(name);
                OutputCounts {
                    name: o.output,
                    written: o.written,
                    dropped_queue_full: o.dropped_queue_full,
                    dropped_undeliverable: o.dropped_undeliverable,
                }
            })
            .collect()
    }

    /// The event's one-line `message`.
    fn message(&self, r: &Reading, last: bool) -> String {
        let cap = r.capture;
        let drops = cap.kernel_drops + cap.interface_drops + cap.queue_drops;
        format!(
            "qmwatch {}stats: {} packets ({} in the last {:.0} s), {} dropped (kernel {}, interface {}, queue {}), capture loss {}, {} flows tracked, {} MiB in use",
            if last { "final " } else { "" },
            cap.packets,
            cap.packets.saturating_sub(self.prev_capture.packets),
            r.secs,
            drops,
            cap.kernel_drops,
            cap.interface_drops,
            cap.queue_drops,
            loss::percent(r.gap, r.acked).map_or("n/a".to_string(), |v| format!("{v:.2} %")),
            r.tracked,
            r.rss.map_or("?".to_string(), |b| (b >> 20).to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_loss_needs_enough_bytes_and_more_than_the_threshold() {
        let t = LossThreshold::default();
        assert!(t.judge(0, 0, 60.0).is_none());
        // 10 % of 100 KiB: not enough acknowledged to judge.
        assert!(t.judge(10 << 10, 100 << 10, 60.0).is_none());
        // Exactly 5 % of 2 MiB: not more than the threshold.
        assert!(t.judge(104_857, 2 << 20, 60.0).is_none());
        let l = t.judge(200_000, 2 << 20, 60.0).unwrap();
        assert!(l.percent > 9.0 && l.percent < 10.0, "{l:?}");
        assert_eq!(l.acked_bytes, 2 << 20);
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().unwrap() > 1 << 20);
        }
    }
}
