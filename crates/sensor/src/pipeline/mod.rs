//! Pipeline: the threads of a run and the bounded channels between them.
//!
//! ```text
//! source: capture + decode + hash ──Batch──▶ worker 0..N (flows, reassembly, protocol)
//!   (replay: one thread reading files;            │ WorkerMsg: records, stats snapshots
//!    live: one capture thread, or one             ▼
//!    per worker with --fanout)            detect (+ stats) ──Arc<Line>──▶ one bounded
//!                                                                         queue and thread
//!                                                                         per output (sink)
//! ```
//!
//! With one worker, a block's frames go to the worker undecoded whenever it
//! waits for input, and it decodes them itself ([`Splitter`]): the two
//! threads share the work, whichever of them is the slower on a machine.
//!
//! Owns: starting and joining the threads ([`run`], and [`replay`] for
//! capture files); the [`Source`] trait a capture loop implements (capture
//! files in [`FileSource`], a live interface in `live::LiveSource`); the decode-and-hash step every source
//! shares ([`Splitter`]); the worker queues ([`WorkerQueue`]: a replay waits
//! for a worker that falls behind, lossless; live capture never waits — a
//! full queue drops the batch and counts its packets); the workers; the
//! detect thread with the periodic `qmwatch.stats` event ([`stats`]) and,
//! in a replay, the workers' findings put back in capture order
//! ([`merge`]); and the counters of a run ([`RunReport`]).
//!
//! Must not: draw anything on a terminal or word the summary (the binary
//! does, from [`Progress`] reports and the [`RunReport`]), hold anything
//! unbounded, block a live capture thread, or exit
//! before every worker finished its flows and every output drained its
//! queue: on end of input or on a stop signal, every pending event is
//! written (or, for a collector that stays down, counted as dropped).

mod idle;
mod merge;
mod replay;
pub mod stats;

#[cfg(feature = "live")]
pub mod live;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use hdrhistogram::Histogram;

use crate::detect::policy::Policy;
use crate::detect::{DetectStats, Detector};
use crate::event::{Observer, RunId};
use crate::flow::prefetch::prefetch;
use crate::flow::{flow_tag, tag_of, worker_of, FlowConfig, FlowStats, FlowTable};
use crate::sink::{Fanout, Output, OutputConfig, OutputStats, SinkStats, Sinks};
use qmwatch_proto::Record;
pub use qmwatch_wire::capture::access::{AccessProbe, FileAccess};
use qmwatch_wire::capture::file::{PacketRecord, ReaderStats};
use qmwatch_wire::capture::{Batch, BatchLists, Block, DECODED_HERE};
use qmwatch_wire::decode::{DecodeStats, Decoded, Decoder, Segment};

pub use replay::{FileSource, Progress};
pub use stats::LossThreshold;
use stats::{StatsRun, WorkerSnapshot};

/// Everything a replay needs to know, apart from where its events go.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Capture files, read in order; `-` is standard input.
    pub files: Vec<String>,
    pub workers: usize,
    pub flow: FlowConfig,
    pub block_size: usize,
    /// Read regular capture files into blocks, or map them and frame them
    /// where they are (`--mmap`, `--no-mmap`; by default the cheaper here).
    pub access: FileAccess,
    /// Site policy that judges services and relaying.
    pub policy: Arc<Policy>,
    /// Fold repeated relay alerts into one per window (packet-time ns).
    pub alert_window_ns: Option<u64>,
    /// Which thread decodes (`--decode-in`; the default follows the queues).
    pub defer: Defer,
}

impl ReplayConfig {
    /// The engine part of the configuration.
    pub fn engine(&self) -> Engine {
        Engine {
            workers: self.workers,
            flow: self.flow,
            policy: Arc::clone(&self.policy),
            alert_window_ns: self.alert_window_ns,
        }
    }
}

/// Where a run's events go, and the `observer.*` fields they carry.
#[derive(Clone, Debug)]
pub struct Destinations {
    /// Every output, each with its own queue and thread.
    pub outputs: Vec<OutputConfig>,
    pub observer: Observer,
}

impl Destinations {
    /// One output with the replay defaults, observed by this host.
    pub fn single(output: Output) -> Destinations {
        Destinations {
            outputs: vec![OutputConfig::for_replay(output)],
            observer: Observer::from_system(),
        }
    }
}

/// The workers, their flow tables and the detection settings of a run.
#[derive(Clone, Debug)]
pub struct Engine {
    /// Worker threads (1–64); each owns the flows that hash to it.
    pub workers: usize,
    /// Limits of the whole run (split evenly over the workers).
    pub flow: FlowConfig,
    pub policy: Arc<Policy>,
    pub alert_window_ns: Option<u64>,
}

/// Batches a worker queue holds by default.
pub(crate) const DEFAULT_QUEUE_BATCHES: usize = 8;

/// How a run behaves, apart from its input and its engine.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// A `qmwatch.stats` event every interval and one at the end; `None`:
    /// none at all (a replay's default, so its output is unchanged).
    pub stats_interval: Option<Duration>,
    /// Batches each worker's queue holds (a batch is one block's segments
    /// for that worker).
    pub queue_batches: usize,
    /// When the capture-loss estimate raises a `capture_loss` anomaly
    /// (evaluated at each statistics interval).
    pub capture_loss: LossThreshold,
    /// Live capture: no packet for this long raises `capture_silent`, and
    /// packets again `capture_resumed` (`None`: never).
    pub idle_alarm: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            stats_interval: None,
            queue_batches: DEFAULT_QUEUE_BATCHES,
            capture_loss: LossThreshold::default(),
            idle_alarm: None,
        }
    }
}

/// Counters the capture side publishes while it runs: relaxed atomics, one
/// update per block, read by the statistics.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Frames taken off the ring or read from the file.
    pub packets: AtomicU64,
    /// Their length on the wire.
    pub bytes: AtomicU64,
    /// Dropped by the kernel: its ring was full (libpcap `ps_drop`).
    pub kernel_drops: AtomicU64,
    /// Dropped by the interface or its driver (libpcap `ps_ifdrop`).
    pub interface_drops: AtomicU64,
    /// TCP segments (and frames left to a worker to decode) dropped
    /// because a worker's queue was full (live only).
    pub queue_drops: AtomicU64,
    /// Batches those segments were in.
    pub queue_dropped_batches: AtomicU64,
    /// Wall clock (ns) when the latest block with packets was handed over
    /// (0: none yet); the idle alarm watches it.
    pub last_packet_ns: AtomicU64,
}

/// A copy of [`CaptureCounters`] (serialized as the statistics' `capture`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureTotals {
    pub packets: u64,
    pub bytes: u64,
    pub kernel_drops: u64,
    pub interface_drops: u64,
    pub queue_drops: u64,
    pub queue_dropped_batches: u64,
}

impl CaptureCounters {
    pub(crate) fn totals(&self) -> CaptureTotals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CaptureTotals {
            packets: g(&self.packets),
            bytes: g(&self.bytes),
            kernel_drops: g(&self.kernel_drops),
            interface_drops: g(&self.interface_drops),
            queue_drops: g(&self.queue_drops),
            queue_dropped_batches: g(&self.queue_dropped_batches),
        }
    }
}

/// A worker is gone (it panicked): the source must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerGone;

/// One worker's input queue, as a source sees it.
#[derive(Clone)]
pub struct WorkerQueue {
    tx: Sender<Batch>,
    lossless: bool,
    counters: Arc<CaptureCounters>,
}

impl WorkerQueue {
    /// Hands a batch to the worker. Lossless (replay): waits while the
    /// queue is full. Otherwise (live): never waits — a full queue drops the
    /// batch and counts its segments as queue drops.
    pub fn send(&self, batch: Batch) -> Result<(), WorkerGone> {
        if self.lossless {
            return self.tx.send(batch).map_err(|_| WorkerGone);
        }
        match self.tx.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(b)) => {
                // Frames left undecoded count as what they would have been
                // (a source leaves them only to a worker whose queue was
                // empty, so this is for a source that shares a queue).
                let undecoded = b.frames.iter().filter(|r| r.caplen != DECODED_HERE);
                let lost = b.segments.len() + undecoded.count();
                if lost > 0 {
                    let c = &self.counters;
                    c.queue_drops.fetch_add(lost as u64, Ordering::Relaxed);
                    c.queue_dropped_batches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(WorkerGone),
        }
    }
}

/// What a source is given: one queue per worker, the counters it
/// publishes, and the stop flag (SIGINT/SIGTERM).
pub struct Feed {
    pub queues: Vec<WorkerQueue>,
    pub counters: Arc<CaptureCounters>,
    pub stop: Arc<AtomicBool>,
}

/// What kind of source a run reads: the summary's title and the
/// `qmwatch.stats` events' `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Capture files.
    Replay,
    /// One live capture handle, hashed to the workers.
    Live,
    /// A live fanout group, one capture handle per worker.
    LiveFanout,
}

impl Mode {
    /// The name written in the summary and the statistics events.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replay => "replay",
            Mode::Live => "live",
            Mode::LiveFanout => "live_fanout",
        }
    }
}

/// What a source reports at its end.
#[derive(Clone, Debug, Default)]
pub struct SourceReport {
    pub decode: DecodeStats,
    pub reader: ReaderStats,
    pub errors: Vec<String>,
    /// Stopped by a signal before the end of its input.
    pub interrupted: bool,
    /// Capture file bytes read (replay).
    pub capture_bytes: u64,
    /// How the capture files were read (replay).
    pub file_access: FileAccessReport,
}

/// How a replay's capture files were read: how many were mapped, how many
/// read (standard input included), and what the last probe measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileAccessReport {
    pub mapped: u64,
    pub read: u64,
    pub probe: Option<AccessProbe>,
}

/// Where packets come from: a capture loop that reads blocks, runs them
/// through a [`Splitter`] and hands the batches to the worker queues.
pub trait Source {
    /// What kind of source it is.
    fn mode(&self) -> Mode;
    /// True: a full worker queue makes the source wait (replay). False: the
    /// batch is dropped and counted (live capture never blocks the ring).
    fn lossless(&self) -> bool;
    /// Live capture: packet time is the clock, so idle workers expire flows
    /// by the wall clock and detection latency is measured.
    fn live(&self) -> bool;
    /// Reads until the input ends or `feed.stop` is set. Dropping the
    /// queues (at return) tells the workers the input ended.
    fn run(self: Box<Self>, feed: Feed) -> SourceReport;
}

/// The decode-and-hash step: decodes every frame of a block, hashes each
/// TCP segment's flow symmetrically (both directions to the same worker),
/// and hands each worker the segments of its flows, sharing the block.
///
/// The work can also be shared the other way: when the workers are
/// waiting for input (their queues are empty, so this thread is the slower
/// one), a block's frames go to them undecoded, each to the worker of its
/// flow (the endpoints read from the headers alone; with one worker not
/// even that), to be decoded there; when they are behind, this thread
/// decodes as usual. Either way a worker sees the same segments in the same
/// order: only frames that touch no reassembly state are handed over
/// ([`Decoder::may_defer`], [`Decoder::deferred_endpoints`]), and the
/// others keep their place in the list. So the threads balance themselves
/// on any machine, whichever of reading and flow tracking costs more there.
pub(crate) struct Splitter {
    decoder: Decoder,
    per_worker: Vec<Vec<Segment>>,
    /// The frames of a block left to each worker to decode.
    frames: Vec<Vec<PacketRecord>>,
    /// When frames are left to the workers (tests and `--decode-in` fix it
    /// either way).
    defer: Defer,
    send_empty: bool,
    /// The number of the next block ([`Batch::seq`]).
    next_seq: u64,
    counters: Arc<CaptureCounters>,
    /// Lists that workers are done with (bounded: about one per worker is
    /// enough to spare the capture thread fresh lists; each may hold a
    /// megabyte or more of segments).
    recycled: Receiver<BatchLists>,
    recycle: Sender<BatchLists>,
}

impl Splitter {
    /// `send_empty`: every worker gets a batch for every block, even with no
    /// segment of its own, so that its packet-time clock advances (replay);
    /// live workers follow the wall clock instead.
    pub fn new(workers: usize, send_empty: bool, counters: Arc<CaptureCounters>) -> Splitter {
        let (recycle, recycled) = crossbeam_channel::bounded(workers.max(1) + 1);
        Splitter {
            decoder: Decoder::default(),
            per_worker: (0..workers.max(1)).map(|_| Vec::new()).collect(),
            frames: (0..workers.max(1)).map(|_| Vec::new()).collect(),
            defer: Defer::WhenWorkerWaits,
            send_empty,
            next_seq: 0,
            counters,
            recycled,
            recycle,
        }
    }

    /// Decodes the frames `records` of `block` and hands each queue its
    /// batch. The block's bytes are given back (an owned buffer to its pool,
    /// a mapped window's pages to the kernel) when the last worker is done.
    pub fn dispatch(
        &mut self,
        mut block: Block,
        records: &[PacketRecord],
        queues: &[WorkerQueue],
    ) -> Result<(), WorkerGone> {
        let buf = block.data();
        let workers = queues.len().min(self.per_worker.len()).max(1);
        let defer = self.defers(queues);
        self.make_room(records.len(), defer);
        let mut extra = Vec::new();
        let mut extra_frames = Vec::new();
        let mut now = 0u64;
        let mut wire = 0u64;
        for r in records {
            now = now.max(r.ts_nanos);
            wire += u64::from(r.origlen.max(r.caplen));
            let start = r.data_start as usize;
            let frame = buf
                .get(start..start.saturating_add(r.caplen as usize))
                .unwrap_or_default();
            if defer && self.leave_to_worker(r, frame, workers) {
                continue;
            }
            // The segment is tagged where decode left it and copied once,
            // into its worker's list (moved out first, it was copied twice).
            let mut d =
                self.decoder
                    .decode(r.ts_nanos, r.link_type, frame, r.data_start, r.origlen);
            let seg = match &mut d {
                Decoded::Segment(s) => s,
                Decoded::Reassembled(s, bytes) => {
                    s.payload_start = s.payload_start.saturating_add(extra.len() as u32);
                    extra_frames.push((s.payload_start, r.data_start));
                    extra.extend_from_slice(bytes);
                    s
                }
                Decoded::Skip(_) => continue,
            };
            seg.flow_tag = flow_tag(seg);
            let w = worker_of(seg.flow_tag, workers);
            if defer {
                // Decoded here (a fragment, say): the mark keeps its place
                // among the frames its worker decodes.
                if let Some(v) = self.frames.get_mut(w) {
                    v.push(PacketRecord {
                        caplen: DECODED_HERE,
                        ..*r
                    });
                }
            }
            if let Some(v) = self.per_worker.get_mut(w) {
                v.push(*seg);
            }
        }
        self.decoder.expire(now);
        self.counters
            .packets
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.counters.bytes.fetch_add(wire, Ordering::Relaxed);
        if !records.is_empty() {
            self.counters
                .last_packet_ns
                .fetch_max(wall_ns(), Ordering::Relaxed);
        }
        block.extra = extra;
        block.extra_frames = extra_frames;
        self.hand_over(Arc::new(block), now, queues)
    }

    /// Room for a whole block of `n` frames in each list, so that no list
    /// grows (and copies itself) midway; capacity never written costs no
    /// memory. A list is empty here: replaced, not grown (`realloc` copies
    /// it all).
    fn make_room(&mut self, n: usize, defer: bool) {
        let frames = self.frames.iter_mut().filter(|_| defer);
        for v in &mut self.per_worker {
            if v.capacity() < n && v.is_empty() {
                *v = Vec::with_capacity(n);
            }
        }
        for v in frames {
            if v.capacity() < n && v.is_empty() {
                *v = Vec::with_capacity(n);
            }
        }
    }

    /// Leaves frame `r` (bytes `frame`) to its flow's worker to decode,
    /// if another decoder would decode it the same; false: decode it here.
    #[inline]
    fn leave_to_worker(&mut self, r: &PacketRecord, frame: &[u8], workers: usize) -> bool {
        let to = if workers == 1 {
            self.decoder.may_defer(r.link_type, frame).then_some(0)
        } else {
            self.decoder
                .deferred_endpoints(r.link_type, frame)
                .map(|(a, ap, b, bp)| worker_of(tag_of(a, ap, b, bp), workers))
        };
        match to.and_then(|w| self.frames.get_mut(w)) {
            Some(v) => {
                v.push(*r);
                true
            }
            None => false,
        }
    }

    /// Whether the frames of the next block go to the workers undecoded:
    /// only while every worker waits for input.
    fn defers(&self, queues: &[WorkerQueue]) -> bool {
        match self.defer {
            Defer::WhenWorkerWaits => queues.iter().all(|q| q.tx.is_empty()),
            Defer::Always => true,
            Defer::Never => false,
        }
    }

    /// Hands each queue its worker's segments of `block` (and, when
    /// `send_empty`, an empty batch to a worker with none, for its clock).
    fn hand_over(
        &mut self,
        block: Arc<Block>,
        now: u64,
        queues: &[WorkerQueue],
    ) -> Result<(), WorkerGone> {
        let seq = self.next_seq;
        self.next_seq += 1;
        for (w, q) in queues.iter().enumerate() {
            // Hand the batch over and start the next with a list a worker
            // gave back (or one with the same room), so that a block's
            // segments are not regrown, nor fresh pages touched, every time.
            let Some(v) = self.per_worker.get_mut(w) else {
                continue;
            };
            let Some(f) = self.frames.get_mut(w) else {
                continue;
            };
            if v.is_empty() && f.is_empty() && !self.send_empty {
                continue;
            }
            let next = self.recycled.try_recv().unwrap_or_else(|_| BatchLists {
                segments: Vec::with_capacity(v.len()),
                frames: Vec::with_capacity(f.len()),
            });
            let segments = std::mem::replace(v, next.segments);
            let frames = if f.is_empty() {
                // Kept for the next block that leaves frames.
                if f.capacity() < next.frames.capacity() {
                    *f = next.frames;
                }
                Vec::new()
            } else {
                std::mem::replace(f, next.frames)
            };
            q.send(Batch {
                block: Arc::clone(&block),
                segments,
                frames,
                now,
                seq,
                recycle: Some(self.recycle.clone()),
            })?;
        }
        Ok(())
    }

    /// The decoder's counters.
    pub(crate) fn decode_stats(&self) -> &DecodeStats {
        &self.decoder.stats
    }

    /// When frames are left to the workers (the default follows the queues).
    pub(crate) fn set_defer(&mut self, defer: Defer) {
        self.defer = defer;
    }
}

/// When the capture thread leaves a block's frames to the workers to
/// decode. Either way the workers see the same segments in the same order;
/// only the thread that decodes changes. The two fixed choices are for
/// measurements (`replay --decode-in`), so that an instruction count does
/// not depend on how the threads happened to take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Defer {
    /// When every worker's queue is empty: they are waiting for input.
    #[default]
    WhenWorkerWaits,
    /// Every block (the frames that may be decoded elsewhere).
    Always,
    /// Never: the capture thread decodes every frame.
    Never,
}

/// What a worker reports when it is done.
pub struct WorkerReport {
    pub flows: FlowStats,
    /// What it decoded itself (frames the capture thread left to it).
    pub decode: DecodeStats,
    pub segments: u64,
    /// Nanoseconds per packet, averaged over each batch.
    pub ns_per_packet: Histogram<u64>,
    /// Its last statistics (the final `qmwatch.stats`).
    pub last: WorkerSnapshot,
}

enum WorkerMsg {
    /// Records of one batch; `trigger_ns` is the capture time of the latest
    /// packet that produced one (0: none, e.g. a timeout).
    Records {
        worker: usize,
        trigger_ns: u64,
        /// The records, and when findings are put back in capture order (a
        /// replay; then sent for every batch, even with no record) the
        /// block they came with and where each run of them was made.
        made: merge::Made,
    },
    /// Answer to a statistics request (`epoch`).
    Snapshot {
        epoch: u64,
        snap: Box<WorkerSnapshot>,
    },
    Done(Box<WorkerReport>),
}

/// Counters of a whole run (replay or live), for the summary and the audit
/// report.
pub struct RunReport {
    pub mode: Mode,
    pub decode: DecodeStats,
    pub reader: ReaderStats,
    /// Packets, bytes and every kind of capture drop.
    pub capture: CaptureTotals,
    /// Every worker's flow counters added up ([`FlowStats::merge`]): the
    /// counts are the run's, but each `*_peak` is the sum of the workers'
    /// peaks, reached at different moments: an upper bound of the run's
    /// peak, not the peak itself.
    pub flows: FlowStats,
    pub detect: DetectStats,
    /// Lines handed to the outputs (each event once).
    pub sink: SinkStats,
    /// What each output did: written, dropped (by reason), outages.
    pub outputs: Vec<OutputStats>,
    pub ns_per_packet: Histogram<u64>,
    pub wall: Duration,
    pub errors: Vec<String>,
    pub interrupted: bool,
    pub workers: usize,
    pub capture_bytes: u64,
    pub file_access: FileAccessReport,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits; creation cannot fail with these bounds.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // Histogram::new(1) only fails for sigfig > 5.
    Histogram::new(1).unwrap_or_else(|_| std::process::abort())
}

/// Nanoseconds since the Unix epoch, by the wall clock.
pub(crate) fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How often an idle worker looks at the clock and at statistics requests.
const WORKER_TICK: Duration = Duration::from_millis(100);

struct WorkerCtl {
    id: usize,
    /// Expire flows by the wall clock when no batch comes.
    live: bool,
    /// Send every batch's records with their places in the capture, even
    /// none, so that the detect thread can merge the workers' findings in
    /// capture order ([`merge`]): a replay.
    ordered: bool,
    /// Statistics requests: a new value asks for a snapshot.
    epoch: Option<Arc<AtomicU64>>,
}

fn snapshot(
    worker: usize,
    table: &FlowTable,
    segments: u64,
    batches: u64,
    batch_ns: Histogram<u64>,
) -> WorkerSnapshot {
    WorkerSnapshot {
        worker,
        flows: table.stats.clone(),
        tracked: table.len() as u64,
        held_bytes: table.held_bytes() as u64,
        session_bytes: table.session_bytes() as u64,
        segments,
        batches,
        batch_ns,
    }
}

/// How many segments ahead a worker prefetches flow entries (and, twice as
/// far, index buckets): enough to cover a memory access with the work of
/// the segments in between.
const PREFETCH_AHEAD: usize = 8;

fn worker(cfg: FlowConfig, rx: Receiver<Batch>, tx: Sender<WorkerMsg>, ctl: WorkerCtl) {
    let mut table = FlowTable::new(cfg);
    let mut own = OwnDecoding::default();
    let mut out: Vec<Record> = Vec::new();
    let mut marks: Vec<(u32, u32)> = Vec::new();
    let mut hist = new_histogram();
    let mut batch_ns = new_histogram();
    let mut segments = 0u64;
    let mut batches = 0u64;
    let mut clock = 0u64;
    let mut seen_epoch = 0u64;
    let poll = ctl.live || ctl.epoch.is_some();
    loop {
        let Some(next) = next_batch(&rx, poll) else {
            break;
        };
        let mut trigger_ns = 0u64;
        let mut block = None;
        match next {
            Some(batch) => {
                let t0 = Instant::now();
                let segs = own.segments(&batch);
                trigger_ns = feed_batch(&mut table, &batch.block, segs, &mut out, &mut marks);
                block = ctl.ordered.then_some(batch.seq);
                clock = clock.max(batch.now);
                table.expire(clock, &mut out);
                let n = segs.len() as u64;
                let ns = t0.elapsed().as_nanos() as u64;
                segments += n;
                batches += 1;
                if let Some(per) = ns.checked_div(n) {
                    let _ = hist.record(per.max(1));
                }
                let _ = batch_ns.record(ns.max(1));
                drop(batch);
            }
            None if ctl.live => {
                // Nothing came: live packet time is the wall clock.
                clock = clock.max(wall_ns());
                table.expire(clock, &mut out);
            }
            None => {}
        }
        if let Some(msg) = records_msg(ctl.id, &mut out, &mut marks, trigger_ns, block) {
            if tx.send(msg).is_err() {
                return;
            }
        }
        if let Some(ep) = &ctl.epoch {
            let e = ep.load(Ordering::Relaxed);
            if e != seen_epoch {
                seen_epoch = e;
                let h = std::mem::replace(&mut batch_ns, new_histogram());
                let snap = Box::new(snapshot(ctl.id, &table, segments, batches, h));
                let msg = WorkerMsg::Snapshot { epoch: e, snap };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        }
    }
    table.finish_all(&mut out);
    let end = ctl.ordered.then_some(merge::END_OF_INPUT);
    if let Some(msg) = records_msg(ctl.id, &mut out, &mut marks, 0, end) {
        let _ = tx.send(msg);
    }
    let last = snapshot(ctl.id, &table, segments, batches, batch_ns);
    let _ = tx.send(WorkerMsg::Done(Box::new(WorkerReport {
        flows: table.stats.clone(),
        decode: own.decoder.stats,
        segments,
        ns_per_packet: hist,
        last,
    })));
}

/// The records a worker has made since its last message, with their marks,
/// as a message to the detect thread: `None` when there is nothing to say
/// (no record, and `block` is `None`: findings are not being merged).
fn records_msg(
    worker: usize,
    out: &mut Vec<Record>,
    marks: &mut Vec<(u32, u32)>,
    trigger_ns: u64,
    block: Option<u64>,
) -> Option<WorkerMsg> {
    if out.is_empty() && block.is_none() {
        return None;
    }
    // Unmerged (live), the marks are of no use: kept, emptied, for reuse.
    let marks = if block.is_some() {
        std::mem::take(marks)
    } else {
        marks.clear();
        Vec::new()
    };
    Some(WorkerMsg::Records {
        worker,
        trigger_ns,
        made: merge::Made {
            block,
            records: std::mem::take(out),
            marks,
        },
    })
}

/// The next batch for a worker: `Some(None)` when `poll` is set and none
/// came within [`WORKER_TICK`]; `None` when the source is done.
fn next_batch(rx: &Receiver<Batch>, poll: bool) -> Option<Option<Batch>> {
    if poll {
        match rx.recv_timeout(WORKER_TICK) {
            Ok(b) => Some(Some(b)),
            Err(RecvTimeoutError::Timeout) => Some(None),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    } else {
        rx.recv().ok().map(Some)
    }
}

/// A worker's decoder, for the frames the capture thread leaves it: no
/// fragment ever reaches it, so its reassembly state stays empty. It does
/// not sum checksums ahead (`Decoder::set_presum`): in the worker the flow
/// table sums those it needs, when it needs them.
struct OwnDecoding {
    decoder: Decoder,
    decoded: Vec<Segment>,
}

impl Default for OwnDecoding {
    fn default() -> Self {
        let mut decoder = Decoder::default();
        decoder.set_presum(false);
        OwnDecoding {
            decoder,
            decoded: Vec::new(),
        }
    }
}

impl OwnDecoding {
    /// The segments of `batch`, in capture order: those the capture thread
    /// decoded, or its frames decoded here.
    fn segments<'a>(&'a mut self, batch: &'a Batch) -> &'a [Segment] {
        if batch.frames.is_empty() {
            return &batch.segments;
        }
        decode_frames(&mut self.decoder, batch, &mut self.decoded);
        &self.decoded
    }
}

/// Decodes the frames the capture thread left in `batch` into `segs`, in
/// capture order, taking the segments it decoded itself at their marks.
fn decode_frames(decoder: &mut Decoder, batch: &Batch, segs: &mut Vec<Segment>) {
    segs.clear();
    let mut decoded_here = batch.segments.iter();
    let data = batch.block.data();
    for r in &batch.frames {
        if r.caplen == DECODED_HERE {
            segs.extend(decoded_here.next());
            continue;
        }
        let start = r.data_start as usize;
        let frame = data
            .get(start..start.saturating_add(r.caplen as usize))
            .unwrap_or_default();
        match decoder.decode_into(
            r.ts_nanos,
            r.link_type,
            frame,
            r.data_start,
            r.origlen,
            segs,
        ) {
            // Put at the end of `segs` by the decoder.
            None => {
                if let Some(seg) = segs.last_mut() {
                    seg.flow_tag = flow_tag(seg);
                }
            }
            Some(Decoded::Segment(mut seg)) => {
                seg.flow_tag = flow_tag(&seg);
                segs.push(seg);
            }
            // The frame held no TCP segment: counted by the decoder.
            Some(Decoded::Skip(_)) => {}
            // Never: only frames that are no fragment come here
            // (`Decoder::may_defer`), and a reassembled payload would have
            // no place in the shared block. Should one come, it is counted
            // as a frame the decoder saw, and dropped.
            Some(Decoded::Reassembled(..)) => {}
        }
    }
}

/// Runs segments of `block` through the flow table, prefetching the index
/// bucket and the entry of segments ahead. Returns the capture time of the
/// latest segment that produced a record (0: none). Each segment that
/// produced records adds `(out.len(), its frame's offset in the block)` to
/// `marks` ([`merge::Made::marks`]).
#[inline]
fn feed_batch(
    table: &mut FlowTable,
    block: &Block,
    segs: &[Segment],
    out: &mut Vec<Record>,
    marks: &mut Vec<(u32, u32)>,
) -> u64 {
    let mut trigger_ns = 0u64;
    for (j, seg) in segs.iter().enumerate() {
        // The segments themselves were written by the capture thread, on
        // another core: ask for them early too, both lines a segment may
        // span, so that reading the tags below does not wait for them.
        if let Some(farther) = segs.get(j + 4 * PREFETCH_AHEAD) {
            let p = (farther as *const Segment).cast::<u8>();
            prefetch(p);
            prefetch(p.wrapping_add(std::mem::size_of::<Segment>() - 1));
        }
        if let Some(far) = segs.get(j + 2 * PREFETCH_AHEAD) {
            table.prefetch_bucket(far);
        }
        if let Some(ahead) = segs.get(j + PREFETCH_AHEAD) {
            table.prefetch_entry(ahead, block);
        }
        let before = out.len();
        table.segment_checked(seg, block, out);
        if out.len() > before {
            trigger_ns = trigger_ns.max(seg.ts);
            let end = u32::try_from(out.len()).unwrap_or(u32::MAX);
            marks.push((end, block.capture_offset(seg)));
        }
    }
    trigger_ns
}

/// Turns records into events, serializes each once and hands the line to
/// every output's queue (which waits or drops as its output is
/// configured); writes the statistics when they are due.
fn detect_loop(
    mut det: Detector,
    rx: Receiver<WorkerMsg>,
    mut fanout: Fanout,
    mut stats: Option<StatsRun>,
    mut idle: Option<idle::IdleAlarm>,
    mut merge: merge::Merge,
) -> (DetectStats, Vec<WorkerReport>, SinkStats) {
    let mut reports = Vec::new();
    let mut events = Vec::new();
    loop {
        let deadline = match (
            stats.as_ref().map(StatsRun::deadline),
            idle.as_ref().map(idle::IdleAlarm::deadline),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(msg) = next_msg(&rx, deadline) else {
            break;
        };
        match msg {
            Some(WorkerMsg::Records {
                worker,
                trigger_ns,
                made,
            }) => {
                merge.take(worker, made, &mut |r| det.record(r, &mut events));
                let n = events.len() as u64;
                fanout.send_events(&mut events);
                if let Some(s) = stats.as_mut() {
                    s.note_events(n, trigger_ns);
                }
            }
            Some(WorkerMsg::Snapshot { epoch, snap }) => {
                if let Some(s) = stats.as_mut() {
                    s.snapshot(epoch, *snap);
                }
            }
            Some(WorkerMsg::Done(r)) => {
                if let Some(s) = stats.as_mut() {
                    s.worker_done(&r.last);
                }
                merge.worker_done(r.last.worker, &mut |r| det.record(r, &mut events));
                fanout.send_events(&mut events);
                reports.push(*r);
            }
            None => {}
        }
        if let Some(s) = stats.as_mut() {
            s.tick(&mut det, &mut events);
            fanout.send_events(&mut events);
        }
        if let Some(i) = idle.as_mut() {
            i.check(&mut det, &mut events);
            fanout.send_events(&mut events);
        }
    }
    // Every worker has ended (or panicked): nothing earlier can come.
    merge.release_all(&mut |r| det.record(r, &mut events));
    det.stats.findings_out_of_capture_order = merge.released_early;
    det.finish(&mut events);
    fanout.send_events(&mut events);
    if let Some(s) = stats.as_mut() {
        s.finish(&mut det, &mut events);
        fanout.send_events(&mut events);
    }
    fanout.close();
    (det.stats, reports, fanout.stats)
}

/// The detect thread's next message: `Some(None)` when `deadline` passed
/// first, `None` when every worker has gone.
fn next_msg(rx: &Receiver<WorkerMsg>, deadline: Option<Instant>) -> Option<Option<WorkerMsg>> {
    match deadline {
        Some(deadline) => match rx.recv_deadline(deadline) {
            Ok(m) => Some(Some(m)),
            Err(RecvTimeoutError::Timeout) => Some(None),
            Err(RecvTimeoutError::Disconnected) => None,
        },
        None => rx.recv().ok().map(Some),
    }
}

/// Replays capture files: runs the pipeline on a [`FileSource`] of
/// `cfg.files` until their end or until `stop` is set, writing to
/// `destinations`. `progress`, if any, is told how far the files are read
/// (the binary draws a bar from it).
pub fn replay(
    cfg: ReplayConfig,
    destinations: Destinations,
    opts: RunOptions,
    progress: Option<Box<dyn Progress>>,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, String> {
    let source = FileSource {
        files: cfg.files.clone(),
        block_size: cfg.block_size,
        access: cfg.access,
        defer: cfg.defer,
        progress,
    };
    run(cfg.engine(), destinations, opts, Box::new(source), stop)
}

/// Runs the pipeline on `source` until its input ends or `stop` is set:
/// starts the outputs, the detect thread and the workers, runs the source
/// in this thread, then waits until every worker finished its flows and
/// every output drained its queue.
pub fn run(
    engine: Engine,
    destinations: Destinations,
    opts: RunOptions,
    source: Box<dyn Source>,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, String> {
    let started = Instant::now();
    let mode = source.mode();
    let live = source.live();
    let lossless = source.lossless();
    let (sinks, fanout) = Sinks::start(destinations.outputs)?;
    let workers = engine.workers.clamp(1, 64);
    let counters = Arc::new(CaptureCounters::default());
    let epoch = opts.stats_interval.map(|_| Arc::new(AtomicU64::new(0)));
    let run_id = || RunId {
        hostname: destinations.observer.hostname.clone(),
        interface: destinations.observer.ingress_interface.clone(),
        started_ns: wall_ns(),
    };
    let stats_run = match (opts.stats_interval, &epoch) {
        (Some(interval), Some(ep)) => Some(StatsRun::new(stats::StatsSetup {
            interval,
            epoch: Arc::clone(ep),
            capture: Arc::clone(&counters),
            outputs: sinks.counters(),
            run: run_id(),
            workers,
            mode,
            measure_latency: live,
            threshold: opts.capture_loss,
        })),
        _ => None,
    };
    let idle = match opts.idle_alarm {
        Some(d) if live => Some(idle::IdleAlarm::new(d, Arc::clone(&counters), run_id())),
        _ => None,
    };
    let (rec_tx, rec_rx) = bounded::<WorkerMsg>(256);
    let ordered = merges_findings(lossless, live);
    let detect_thread = thread::Builder::new()
        .name("qmwatch-detect".into())
        .spawn({
            let det = Detector::new(Arc::clone(&engine.policy), engine.alert_window_ns)
                .with_observer(destinations.observer);
            let merge = merge::Merge::new(workers, ordered);
            move || detect_loop(det, rec_rx, fanout, stats_run, idle, merge)
        })
        .map_err(|e| format!("cannot start detect thread: {e}"))?;
    let mut queues = Vec::new();
    let mut worker_threads = Vec::new();
    for w in 0..workers {
        let ctl = WorkerCtl {
            id: w,
            live,
            ordered,
            epoch: epoch.clone(),
        };
        let fcfg = worker_share(engine.flow, workers);
        let (tx, h) = start_worker(fcfg, opts.queue_batches, ctl, rec_tx.clone())?;
        queues.push(WorkerQueue {
            tx,
            lossless,
            counters: Arc::clone(&counters),
        });
        worker_threads.push(h);
    }
    drop(rec_tx);
    let src = source.run(Feed {
        queues,
        counters: Arc::clone(&counters),
        stop,
    });
    let run = Running {
        detect: detect_thread,
        workers: worker_threads,
        sinks,
    };
    run.finish(src, &counters, mode, started)
}

/// Whether the workers' findings are put back in capture order
/// ([`merge`]): in a replay, so that one capture gives the same events
/// however the threads ran, and with one worker as with several (one
/// worker's findings are in capture order already, but those of flows
/// timed out together are ordered as the merge orders them). Live capture
/// hands them on as they come: waiting for a quiet worker would delay
/// alerts.
fn merges_findings(lossless: bool, live: bool) -> bool {
    lossless && !live
}

/// Starts a worker thread on `flow` limits with a queue of `capacity`
/// batches, sending its records on `rec_tx`; returns its queue and thread.
fn start_worker(
    flow: FlowConfig,
    capacity: usize,
    ctl: WorkerCtl,
    rec_tx: Sender<WorkerMsg>,
) -> Result<(Sender<Batch>, thread::JoinHandle<()>), String> {
    let (tx, rx) = bounded::<Batch>(capacity.max(1));
    let h = thread::Builder::new()
        .name(format!("qmwatch-worker-{}", ctl.id))
        .spawn(move || worker(flow, rx, rec_tx, ctl))
        .map_err(|e| format!("cannot start worker thread: {e}"))?;
    Ok((tx, h))
}

/// One worker's share of the run's limits: flows, held bytes and session
/// memory divided evenly (at least 1 each).
fn worker_share(flow: FlowConfig, workers: usize) -> FlowConfig {
    let mut fcfg = flow;
    fcfg.max_flows = (fcfg.max_flows / workers).max(1);
    fcfg.held_bytes_cap = (fcfg.held_bytes_cap / workers).max(1);
    fcfg.session_memory = (fcfg.session_memory / workers).max(1);
    fcfg
}

/// The threads of a run, once its source has ended.
struct Running {
    detect: thread::JoinHandle<(DetectStats, Vec<WorkerReport>, SinkStats)>,
    workers: Vec<thread::JoinHandle<()>>,
    sinks: Sinks,
}

impl Running {
    /// Waits for every worker to finish its flows, then for the detect
    /// thread, then for every output to drain its queue; the report of the
    /// run from the source's report `src` and the capture `counters`.
    fn finish(
        self,
        src: SourceReport,
        counters: &CaptureCounters,
        mode: Mode,
        started: Instant,
    ) -> Result<RunReport, String> {
        let workers = self.workers.len();
        let mut errors = src.errors;
        let mut flows = FlowStats::default();
        for h in self.workers {
            if h.join().is_err() {
                errors.push("a worker thread panicked".into());
            }
        }
        let joined = self.detect.join();
        // The outputs drain whatever the detect thread queued (its queues were
        // closed when it ended, even by a panic).
        let outputs = self.sinks.finish();
        let (detect, reports, sink) =
            joined.map_err(|_| "the detect thread panicked".to_string())?;
        for o in &outputs {
            if let Some(e) = &o.error {
                errors.push(e.clone());
            }
        }
        let mut decode = src.decode;
        let mut hist = new_histogram();
        for r in &reports {
            decode.merge(&r.decode);
            // Counts add up; peaks add up to an upper bound (see `RunReport::flows`).
            flows.merge(&r.flows);
            let _ = hist.add(&r.ns_per_packet);
        }
        Ok(RunReport {
            mode,
            decode,
            reader: src.reader,
            capture: counters.totals(),
            flows,
            detect,
            sink,
            outputs,
            ns_per_packet: hist,
            wall: started.elapsed(),
            errors,
            interrupted: src.interrupted,
            workers,
            capture_bytes: src.capture_bytes,
            file_access: src.file_access,
        })
    }
}

#[cfg(test)]
mod tests;
