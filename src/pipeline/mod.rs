//! Pipeline: the threads of a replay and the bounded channels between them.
//!
//! ```text
//! capture+decode ──Batch──▶ worker 0..N (flows, reassembly, protocol)
//!                                  │ Vec<Record>
//!                                  ▼
//!                         detect ──Arc<Line>──▶ one bounded queue and
//!                                               thread per output (sink)
//! ```
//!
//! Owns: starting and joining the threads, the capture loop (read a block,
//! decode its frames, hand each worker the segments of its flows), and
//! collecting every stage's counters for the summary. Replay is lossless:
//! when a worker falls behind, the capture loop waits (bounded channels).
//!
//! Must not: hold anything unbounded, or exit before every worker finished
//! its flows and every output drained its queue: on end of input or on a
//! stop signal, every pending event is written (or, for a collector that
//! stays down, counted as dropped).

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use hdrhistogram::Histogram;

use crate::capture::file::{CaptureReader, PacketRecord, ReaderStats};
use crate::capture::{Batch, Block, BufferPool};
use crate::decode::{supported_link_type, DecodeStats, Decoded, Decoder, Segment};
use crate::detect::policy::Policy;
use crate::detect::{DetectStats, Detector};
use crate::event::Observer;
use crate::flow::{FlowConfig, FlowStats, FlowTable};
use crate::protocol::Record;
use crate::sink::{Fanout, Output, OutputConfig, OutputStats, SinkStats, Sinks};

/// Everything a replay needs to know.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Capture files, read in order; `-` is standard input.
    pub files: Vec<String>,
    pub workers: usize,
    pub output: Output,
    pub progress: bool,
    pub flow: FlowConfig,
    pub block_size: usize,
    /// Site policy that judges services and relaying.
    pub policy: Arc<Policy>,
    /// Fold repeated relay alerts into one per window (packet-time ns).
    pub alert_window_ns: Option<u64>,
}

/// Where a replay's events go, and the `observer.*` fields they carry.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Every output, each with its own queue and thread.
    pub outputs: Vec<OutputConfig>,
    pub observer: Observer,
}

impl Delivery {
    /// One output with the replay defaults, observed by this host.
    pub fn single(output: Output) -> Delivery {
        Delivery {
            outputs: vec![OutputConfig::for_replay(output)],
            observer: Observer::from_system(),
        }
    }
}

/// What a worker reports when it is done.
pub struct WorkerReport {
    pub flows: FlowStats,
    pub segments: u64,
    /// Nanoseconds per packet, averaged over each batch.
    pub ns_per_packet: Histogram<u64>,
}

enum WorkerMsg {
    Records(Vec<Record>),
    Done(Box<WorkerReport>),
}

/// Counters of a whole replay, for the summary.
pub struct ReplayReport {
    pub decode: DecodeStats,
    pub reader: ReaderStats,
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
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits; creation cannot fail with these bounds.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // Histogram::new(1) only fails for sigfig > 5.
    Histogram::new(1).unwrap_or_else(|_| std::process::abort())
}

fn worker(cfg: FlowConfig, rx: Receiver<Batch>, tx: Sender<WorkerMsg>) {
    let mut table = FlowTable::new(cfg);
    let mut out: Vec<Record> = Vec::new();
    let mut hist = new_histogram();
    let mut segments = 0u64;
    for batch in rx.iter() {
        let t0 = Instant::now();
        for seg in &batch.segments {
            table.segment_checked(
                seg,
                batch.block.payload(seg),
                Some(batch.block.tcp_segment(seg)),
                &mut out,
            );
        }
        table.expire(batch.now, &mut out);
        let n = batch.segments.len() as u64;
        segments += n;
        if let Some(ns) = (t0.elapsed().as_nanos() as u64).checked_div(n) {
            let _ = hist.record(ns.max(1));
        }
        drop(batch);
        if !out.is_empty()
            && tx
                .send(WorkerMsg::Records(std::mem::take(&mut out)))
                .is_err()
        {
            return;
        }
    }
    table.finish_all(&mut out);
    if !out.is_empty() {
        let _ = tx.send(WorkerMsg::Records(out));
    }
    let _ = tx.send(WorkerMsg::Done(Box::new(WorkerReport {
        flows: table.stats.clone(),
        segments,
        ns_per_packet: hist,
    })));
}

/// Turns records into events, serializes each once and hands the line to
/// every output's queue (which waits or drops as its output is configured).
fn detect_loop(
    mut det: Detector,
    rx: Receiver<WorkerMsg>,
    mut fanout: Fanout,
) -> (DetectStats, Vec<WorkerReport>, SinkStats) {
    let mut reports = Vec::new();
    let mut events = Vec::new();
    for msg in rx.iter() {
        match msg {
            WorkerMsg::Records(recs) => {
                for r in recs {
                    det.record(r, &mut events);
                }
                fanout.send_events(&mut events);
            }
            WorkerMsg::Done(r) => reports.push(*r),
        }
    }
    det.finish(&mut events);
    fanout.send_events(&mut events);
    fanout.close();
    (det.stats, reports, fanout.stats)
}

/// Runs a replay to the end of its files (or until `stop` is set), writing
/// to `cfg.output` with the replay defaults.
pub fn replay(cfg: ReplayConfig, stop: Arc<AtomicBool>) -> Result<ReplayReport, String> {
    let delivery = Delivery::single(cfg.output.clone());
    replay_to(cfg, delivery, stop)
}

/// Runs a replay writing to every output of `delivery` (`cfg.output` is
/// not used).
pub fn replay_to(
    cfg: ReplayConfig,
    delivery: Delivery,
    stop: Arc<AtomicBool>,
) -> Result<ReplayReport, String> {
    let started = Instant::now();
    let (sinks, fanout) = Sinks::start(delivery.outputs)?;
    let workers = cfg.workers.clamp(1, 64);
    let (rec_tx, rec_rx) = bounded::<WorkerMsg>(256);
    let detect_thread = thread::Builder::new()
        .name("qmwatch-detect".into())
        .spawn({
            let det = Detector::new(Arc::clone(&cfg.policy), cfg.alert_window_ns)
                .with_observer(delivery.observer);
            move || detect_loop(det, rec_rx, fanout)
        })
        .map_err(|e| format!("cannot start detect thread: {e}"))?;
    let mut batch_txs = Vec::new();
    let mut worker_threads = Vec::new();
    for w in 0..workers {
        let (tx, rx) = bounded::<Batch>(8);
        let rtx = rec_tx.clone();
        let mut fcfg = cfg.flow;
        fcfg.max_flows = (fcfg.max_flows / workers).max(1);
        fcfg.held_bytes_cap = (fcfg.held_bytes_cap / workers).max(1);
        fcfg.session_memory = (fcfg.session_memory / workers).max(1);
        let h = thread::Builder::new()
            .name(format!("qmwatch-worker-{w}"))
            .spawn(move || worker(fcfg, rx, rtx))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        batch_txs.push(tx);
        worker_threads.push(h);
    }
    drop(rec_tx);

    let total: u64 = cfg
        .files
        .iter()
        .filter(|f| f.as_str() != "-")
        .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
        .sum();
    let bar = if cfg.progress {
        let b = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bar:40} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style);
        }
        Some(b)
    } else {
        None
    };

    let mut decoder = Decoder::default();
    let mut reader_stats = ReaderStats::default();
    let mut errors = Vec::new();
    let mut capture_bytes = 0u64;
    let pool = BufferPool::new(workers * 8 + 8);
    let mut records: Vec<PacketRecord> = Vec::new();
    let mut per_worker: Vec<Vec<Segment>> = (0..workers).map(|_| Vec::new()).collect();
    let mut interrupted = false;
    let mut done_before = 0u64;
    'files: for name in &cfg.files {
        let input: Box<dyn Read> = if name == "-" {
            Box::new(std::io::stdin())
        } else {
            match std::fs::File::open(name) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    errors.push(format!("{name}: cannot open: {e}"));
                    continue;
                }
            }
        };
        let mut reader = match CaptureReader::new(name.clone(), input, supported_link_type) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        reader.set_block_size(cfg.block_size);
        loop {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break 'files;
            }
            let mut buf = pool.get(cfg.block_size);
            records.clear();
            let step = reader.next_block(&mut buf, &mut records);
            let mut extra = Vec::new();
            let mut now = 0u64;
            for r in &records {
                now = now.max(r.ts_nanos);
                let start = r.data_start as usize;
                let frame = buf
                    .get(start..start.saturating_add(r.caplen as usize))
                    .unwrap_or_default();
                let seg =
                    match decoder.decode(r.ts_nanos, r.link_type, frame, r.data_start, r.origlen) {
                        Decoded::Segment(s) => s,
                        Decoded::Reassembled(mut s, bytes) => {
                            s.payload_start = s.payload_start.saturating_add(extra.len() as u32);
                            extra.extend_from_slice(&bytes);
                            s
                        }
                        Decoded::Skip(_) => continue,
                    };
                let w = if workers == 1 {
                    0
                } else {
                    (seg.flow_hash() % workers as u64) as usize
                };
                if let Some(v) = per_worker.get_mut(w) {
                    v.push(seg);
                }
            }
            decoder.expire(now);
            let mut block = Block::new(buf, Some(pool.returner()));
            block.extra = extra;
            let block = Arc::new(block);
            for (w, tx) in batch_txs.iter().enumerate() {
                let segments = per_worker
                    .get_mut(w)
                    .map(std::mem::take)
                    .unwrap_or_default();
                let batch = Batch {
                    block: Arc::clone(&block),
                    segments,
                    now,
                };
                if tx.send(batch).is_err() {
                    errors.push("a worker stopped unexpectedly".into());
                    break 'files;
                }
            }
            drop(block);
            let pos = done_before + reader.bytes_consumed();
            if let Some(b) = &bar {
                b.set_position(pos);
            }
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            }
        }
        capture_bytes += reader.bytes_consumed();
        done_before += reader.bytes_consumed();
        merge_reader(&mut reader_stats, reader.stats());
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    drop(batch_txs);
    let mut flows = FlowStats::default();
    for h in worker_threads {
        if h.join().is_err() {
            errors.push("a worker thread panicked".into());
        }
    }
    let joined = detect_thread.join();
    // The outputs drain whatever the detect thread queued (its queues were
    // closed when it ended, even by a panic).
    let outputs = sinks.finish();
    let (detect, reports, sink) = joined.map_err(|_| "the detect thread panicked".to_string())?;
    for o in &outputs {
        if let Some(e) = &o.error {
            errors.push(e.clone());
        }
    }
    let mut hist = new_histogram();
    for r in &reports {
        flows.merge(&r.flows);
        let _ = hist.add(&r.ns_per_packet);
    }
    Ok(ReplayReport {
        decode: decoder.stats.clone(),
        reader: reader_stats,
        flows,
        detect,
        sink,
        outputs,
        ns_per_packet: hist,
        wall: started.elapsed(),
        errors,
        interrupted,
        workers,
        capture_bytes,
    })
}

fn merge_reader(a: &mut ReaderStats, b: &ReaderStats) {
    a.records += b.records;
    a.bytes_read += b.bytes_read;
    a.skipped_unsupported_link += b.skipped_unsupported_link;
    a.skipped_unknown_blocks += b.skipped_unknown_blocks;
    a.skipped_bad_interface += b.skipped_bad_interface;
    a.zero_length_packets += b.zero_length_packets;
    a.truncated_packets += b.truncated_packets;
}

impl ReplayReport {
    /// The end-of-replay summary, for stderr.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let secs = self.wall.as_secs_f64().max(1e-9);
        let d = &self.decode;
        let _ = writeln!(s, "qmwatch replay summary");
        let _ = writeln!(
            s,
            "  packets {}  bytes {}  tcp segments {}  workers {}",
            d.frames, d.bytes, d.tcp_segments, self.workers
        );
        let _ = writeln!(
            s,
            "  wall {:.3} s  {:.3} Gbit/s  {:.0} packets/s  (capture file bytes {})",
            secs,
            d.bytes as f64 * 8.0 / secs / 1e9,
            d.frames as f64 / secs,
            self.capture_bytes
        );
        let f = &self.flows;
        let _ = writeln!(
            s,
            "  flows {} (candidates {}, rejected as not QMTP/QMQP {}, closed {}, timed out {}, evicted at cap {}, peak tracked {})",
            f.flows_created, f.flows_candidate, f.flows_rejected, f.flows_closed, f.flows_timed_out, f.flows_evicted_cap, f.flows_peak
        );
        let sess: Vec<String> = self
            .detect
            .sessions_by_protocol
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  confirmed sessions: {}",
            if sess.is_empty() {
                "none".into()
            } else {
                sess.join(", ")
            }
        );
        let ev: Vec<String> = self
            .detect
            .events_by_dataset
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  events {}: {}",
            self.sink.lines,
            if ev.is_empty() {
                "none".into()
            } else {
                ev.join(", ")
            }
        );
        for o in &self.outputs {
            let _ = writeln!(
                s,
                "  output {}: written {}, dropped {} (queue full {}, undeliverable {}), outages {}, queue peak {}{}{}",
                o.output,
                o.written,
                o.dropped(),
                o.dropped_queue_full,
                o.dropped_undeliverable,
                o.outages,
                o.queue_peak,
                if o.rotations > 0 { format!(", rotations {}", o.rotations) } else { String::new() },
                if o.reopens > 0 { format!(", reopens {}", o.reopens) } else { String::new() },
            );
        }
        let mut skipped: Vec<String> = crate::decode::Skip::ALL
            .iter()
            .filter(|k| d.skipped(**k) > 0)
            .map(|k| format!("{} {}", k.name(), d.skipped(*k)))
            .collect();
        let r = &self.reader;
        for (name, n) in [
            (
                "unsupported_link_type_interface",
                r.skipped_unsupported_link,
            ),
            ("pcapng_unknown_block", r.skipped_unknown_blocks),
            ("pcapng_bad_interface", r.skipped_bad_interface),
            ("zero_length_packet", r.zero_length_packets),
            ("snaplen_truncated_packet", r.truncated_packets),
            ("packet_without_flow", f.packets_without_flow),
            ("tcp_bad_checksum_dropped", f.bad_checksum_dropped),
            ("sessions_dropped_memory_cap", f.sessions_dropped_memcap),
            (
                "directions_with_offloaded_checksums",
                f.directions_checksum_offloaded,
            ),
            ("ip_fragment_overlap_conflict", d.fragments_conflicting),
            ("tcp_overlap_consistent", f.reassembly.overlaps_consistent),
            ("tcp_overlap_conflicting", f.reassembly.overlaps_conflicting),
            ("tcp_overlap_unverified", f.reassembly.overlaps_unverified),
            ("tcp_out_of_window", f.reassembly.out_of_window),
            ("tcp_gaps", f.reassembly.gaps),
            ("tcp_gap_bytes", f.reassembly.gap_bytes),
            ("reassembly_cap_gaps", f.reassembly.cap_gaps),
            ("replies_to_unseen_requests", f.replies_to_unseen_requests),
            (
                "unconfirmed_anomalies_dropped",
                f.anomalies_dropped_unconfirmed,
            ),
            (
                "unconfirmed_partial_requests_dropped",
                f.requests_dropped_unconfirmed,
            ),
        ] {
            if n > 0 {
                skipped.push(format!("{name} {n}"));
            }
        }
        let _ = writeln!(
            s,
            "  skipped/dropped: {}",
            if skipped.is_empty() {
                "nothing".into()
            } else {
                skipped.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "  reassembly held bytes peak {}  session state bytes peak {}",
            f.held_bytes_peak, f.session_bytes_peak
        );
        let h = &self.ns_per_packet;
        if !h.is_empty() {
            let _ = writeln!(
                s,
                "  worker time per packet (ns, per-batch mean): p50 {} p99 {} max {} over {} batches",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
                h.len()
            );
        }
        if self.interrupted {
            let _ = writeln!(
                s,
                "  interrupted: input not read to the end; all pending events were written"
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}
