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

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::{new_histogram, wall_ns, CaptureCounters, CaptureTotals, Mode};
use crate::detect::Detector;
use crate::event::{self, CaptureLoss, Event, RunId};
use crate::flow::{loss, FlowStats};
use crate::sink::OutputCounters;

/// How long the detect thread waits for every worker's snapshot.
pub const GRACE: Duration = Duration::from_secs(1);

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

fn quantile_us(h: &Histogram<u64>, q: f64, per_us: u64) -> Value {
    if h.is_empty() {
        Value::Null
    } else {
        json!(h.value_at_quantile(q) / per_us.max(1))
    }
}

fn max_us(h: &Histogram<u64>, per_us: u64) -> Value {
    if h.is_empty() {
        Value::Null
    } else {
        json!(h.max() / per_us.max(1))
    }
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
    pub fn note_events(&mut self, events: u64, trigger_ns: u64) {
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
    pub fn snapshot(&mut self, epoch: u64, snap: WorkerSnapshot) {
        self.keep(&snap);
        if let Some(r) = self.reported.get_mut(snap.worker) {
            *r = (*r).max(epoch);
        }
    }

    /// A worker ended; `last` is its final snapshot.
    pub fn worker_done(&mut self, last: &WorkerSnapshot) {
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

    fn emit(&mut self, det: &mut Detector, out: &mut Vec<Event>, last: bool) {
        let now = Instant::now();
        let ts = wall_ns();
        let secs = now.duration_since(self.last_emit).as_secs_f64();
        let mut flows = FlowStats::default();
        let (mut tracked, mut held, mut session, mut segments, mut batches) = (0, 0, 0, 0, 0);
        for k in &self.latest {
            flows.merge(&k.flows);
            tracked += k.tracked;
            held += k.held_bytes;
            session += k.session_bytes;
            segments += k.segments;
            batches += k.batches;
        }
        let cap = self.s.capture.totals();
        let p = self.prev_capture;
        let acked = flows.loss_acked_bytes.saturating_sub(self.prev_loss.0);
        let gap = flows.loss_gap_bytes.saturating_sub(self.prev_loss.1);
        let rss = rss_bytes();
        let t = self.s.threshold;
        let outputs: Vec<Value> = self
            .s
            .outputs
            .iter()
            .map(|(name, c)| {
                let o = c.snapshot(name);
                json!({
                    "name": o.output,
                    "written": o.written,
                    "dropped_queue_full": o.dropped_queue_full,
                    "dropped_undeliverable": o.dropped_undeliverable,
                })
            })
            .collect();
        let events: Map<String, Value> = det
            .stats
            .events_by_dataset
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let h = &self.batch_ns;
        let l = &self.latency_us;
        let latency = if self.s.measure_latency {
            json!({
                "events": l.len(),
                "p50_us": quantile_us(l, 0.5, 1),
                "p99_us": quantile_us(l, 0.99, 1),
                "max_us": max_us(l, 1),
            })
        } else {
            Value::Null
        };
        let pct = |x: Option<f64>| x.map_or(Value::Null, |v| json!(v));
        let stats = json!({
            "final": last,
            "sequence": self.seq,
            "mode": self.s.mode.as_str(),
            "workers": self.s.workers,
            "interval_seconds": secs,
            "uptime_seconds": now.duration_since(self.started).as_secs_f64(),
            "capture": {
                "packets": cap.packets,
                "bytes": cap.bytes,
                "kernel_drops": cap.kernel_drops,
                "interface_drops": cap.interface_drops,
                "queue_drops": cap.queue_drops,
                "queue_dropped_batches": cap.queue_dropped_batches,
            },
            "interval": {
                "packets": cap.packets.saturating_sub(p.packets),
                "bytes": cap.bytes.saturating_sub(p.bytes),
                "kernel_drops": cap.kernel_drops.saturating_sub(p.kernel_drops),
                "interface_drops": cap.interface_drops.saturating_sub(p.interface_drops),
                "queue_drops": cap.queue_drops.saturating_sub(p.queue_drops),
            },
            "flows": {
                "tracked": tracked,
                "created": flows.flows_created,
                "candidates": flows.flows_candidate,
                "timed_out": flows.flows_timed_out,
                "evicted_at_cap": flows.flows_evicted_cap,
                "segments": segments,
                "reassembly_bytes_held": held,
                "session_bytes_held": session,
            },
            "capture_loss": {
                "percent": pct(loss::percent(gap, acked)),
                "acked_bytes": acked,
                "gap_bytes": gap,
                "total_percent": pct(flows.capture_loss_percent()),
                "total_acked_bytes": flows.loss_acked_bytes,
                "total_gap_bytes": flows.loss_gap_bytes,
                "threshold_percent": t.percent,
                "min_acked_bytes": t.min_acked_bytes,
            },
            "events": events,
            "outputs": outputs,
            "processing": {
                "batches": h.len(),
                "total_batches": batches,
                "p50_us": quantile_us(h, 0.5, 1000),
                "p99_us": quantile_us(h, 0.99, 1000),
                "max_us": max_us(h, 1000),
            },
            "latency": latency,
            "memory": {"rss_bytes": rss},
        });
        let drops = cap.kernel_drops + cap.interface_drops + cap.queue_drops;
        let message = format!(
            "qmwatch {}stats: {} packets ({} in the last {:.0} s), {} dropped (kernel {}, interface {}, queue {}), capture loss {}, {} flows tracked, {} MiB in use",
            if last { "final " } else { "" },
            cap.packets,
            cap.packets.saturating_sub(p.packets),
            secs,
            drops,
            cap.kernel_drops,
            cap.interface_drops,
            cap.queue_drops,
            loss::percent(gap, acked).map_or("n/a".to_string(), |v| format!("{v:.2} %")),
            tracked,
            rss.map_or("?".to_string(), |b| (b >> 20).to_string()),
        );
        let m = event::stats(ts, &self.s.run, self.seq, message, stats);
        det.emit_sensor(event::DATASET_STATS, m, out);
        if let Some(l) = t.judge(gap, acked, secs) {
            let m = event::capture_loss(ts, &self.s.run, self.seq, &l);
            det.emit_sensor(event::DATASET_ANOMALY, m, out);
        }
        self.batch_ns.reset();
        self.latency_us.reset();
        self.prev_capture = cap;
        self.prev_loss = (flows.loss_acked_bytes, flows.loss_gap_bytes);
        self.seq += 1;
        self.last_emit = now;
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
