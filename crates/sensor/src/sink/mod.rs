//! Sink: the output stage. Events leave qmwatch here.
//!
//! ```text
//! detect ──Arc<Line>──▶ Fanout ──▶ queue ─▶ thread: stdout
//!                              ├─▶ queue ─▶ thread: file (append, SIGHUP reopen, rotation)
//!                              └─▶ queue ─▶ thread: syslog (UDP, TCP, unix datagram)
//! ```
//!
//! Owns: the outputs (`--output`, repeatable), one thread and one bounded
//! [`queue`] per output, what a full queue does ([`Overflow`]), the file
//! writer ([`file`]: JSON lines, appended, reopened on SIGHUP, rotated by
//! size), the syslog sender ([`syslog`]: RFC 5424, reconnect with backoff,
//! one stderr line per outage), and the per-output counters
//! ([`OutputCounters`], readable while running).
//!
//! Must not: build, filter or re-serialize events — each event is
//! serialized once by the detect thread into a [`Line`] that all outputs
//! share; block packet processing in live mode (live outputs drop the oldest
//! queued line and count it); lose a line silently: every line handed to an
//! output is written, or counted as dropped with the reason. At end of input
//! every queue is drained (a network collector that stays down is given
//! `--syslog-drain-timeout`, then what is left is counted as undeliverable).

pub mod file;
pub mod queue;
pub mod syslog;

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::event::Event;

pub use queue::{Overflow, Queue};

/// Lines a queue holds by default (per output).
pub const DEFAULT_QUEUE_EVENTS: usize = 100_000;
/// Bytes of lines a queue holds at most (per output).
pub(crate) const DEFAULT_QUEUE_BYTES: usize = 128 * 1024 * 1024;

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
    Syslog(syslog::Target),
    /// Nowhere (audit reads the inventory, not the events).
    Discard,
}

impl Output {
    /// `-` is standard output; `syslog+udp://HOST:PORT`,
    /// `syslog+tcp://HOST:PORT` and `syslog+unix:///PATH` are syslog
    /// collectors; anything else is a file path (write `./syslog+x` for a
    /// file whose name starts with `syslog+`).
    pub fn parse(s: &str) -> Result<Output, String> {
        if s == "-" {
            Ok(Output::Stdout)
        } else if s.starts_with("syslog+") {
            syslog::Target::parse(s).map(Output::Syslog)
        } else if s.is_empty() {
            Err("empty output name".into())
        } else {
            Ok(Output::File(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Stdout => write!(f, "stdout"),
            Output::File(p) => write!(f, "{}", p.display()),
            Output::Syslog(t) => write!(f, "{t}"),
            Output::Discard => write!(f, "discard"),
        }
    }
}

/// One serialized event, shared by every output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The event as one JSON line (ASCII, no newline).
    pub json: String,
    /// `event.dataset` (the syslog MSGID): an event's is a constant, so it
    /// is borrowed, not copied for every line.
    pub dataset: Cow<'static, str>,
    /// `@timestamp` (the syslog TIMESTAMP).
    pub timestamp: String,
    /// RFC 5424 severity derived from the event ([`syslog::severity_of`]).
    pub severity: u8,
}

/// A line's buffer is kept for a later one once every output is done with
/// it (see [`crate::event::give_back`]).
impl Drop for Line {
    fn drop(&mut self) {
        crate::event::give_back(std::mem::take(&mut self.json));
    }
}

impl Line {
    /// Serializes an event; `None` only if serialization fails.
    pub(crate) fn from_event(e: &Event) -> Option<Line> {
        let json = e.to_json_line()?;
        Some(Line {
            severity: syslog::severity_of(e.kind(), e.severity(), e.dataset()),
            dataset: Cow::Borrowed(e.dataset()),
            timestamp: e.timestamp().to_string(),
            json,
        })
    }

    /// A line from JSON text (tests, tools): the metadata is read from it.
    pub fn from_json(json: String) -> Line {
        let v: Map<String, Value> = serde_json::from_str(&json).unwrap_or_default();
        Line::with_meta(json, &v)
    }

    fn with_meta(json: String, m: &Map<String, Value>) -> Line {
        let ev = m.get("event");
        let get = |k: &str| ev.and_then(|e| e.get(k));
        let dataset = get("dataset").and_then(Value::as_str).unwrap_or("");
        let kind = get("kind").and_then(Value::as_str).unwrap_or("");
        let sev = get("severity").and_then(Value::as_u64);
        Line {
            severity: syslog::severity_of(kind, sev, dataset),
            dataset: Cow::Owned(dataset.to_string()),
            timestamp: m
                .get("@timestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            json,
        }
    }
}

/// Size-based rotation of a file output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` newest … `FILE.N` oldest).
    pub keep: usize,
}

/// One output and how it behaves.
#[derive(Clone, Debug)]
pub struct OutputConfig {
    pub output: Output,
    /// What a full queue does. See [`OutputConfig::for_replay`] and
    /// [`OutputConfig::for_live`].
    pub overflow: Overflow,
    /// Queue cap in lines.
    pub queue_events: usize,
    /// Queue cap in bytes.
    pub queue_bytes: usize,
    /// Files only: rotate by size.
    pub rotation: Option<Rotation>,
    /// Files only: set (by a SIGHUP handler) to reopen the file.
    pub reopen: Option<Arc<AtomicBool>>,
    /// Syslog only.
    pub syslog: syslog::Options,
}

impl OutputConfig {
    /// A replay may wait for its outputs, except for a network collector:
    /// stdout and files block (lossless); syslog drops the oldest queued
    /// line when its queue is full, so a dead collector cannot hang a
    /// replay forever.
    pub fn for_replay(output: Output) -> OutputConfig {
        let overflow = match output {
            Output::Syslog(_) => Overflow::DropOldest,
            _ => Overflow::Block,
        };
        OutputConfig::with_overflow(output, overflow)
    }

    /// Live capture never waits for an output: every output drops the
    /// oldest queued line when its queue is full.
    pub fn for_live(output: Output) -> OutputConfig {
        OutputConfig::with_overflow(output, Overflow::DropOldest)
    }

    fn with_overflow(output: Output, overflow: Overflow) -> OutputConfig {
        OutputConfig {
            output,
            overflow,
            queue_events: DEFAULT_QUEUE_EVENTS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            rotation: None,
            reopen: None,
            syslog: syslog::Options::default(),
        }
    }
}

/// Live counters of one output; [`Sinks::counters`] hands them out so they
/// can be read while the run goes on (periodic statistics).
#[derive(Debug, Default)]
pub struct OutputCounters {
    /// Lines accepted into the queue.
    pub queued: AtomicU64,
    /// Lines written (file, stdout) or sent (syslog).
    pub written: AtomicU64,
    /// Bytes written or sent, framing included.
    pub bytes: AtomicU64,
    /// Lines dropped because the queue was full (oldest first).
    pub dropped_queue_full: AtomicU64,
    /// Lines that could not be delivered: too large for a datagram, the
    /// output failed, or the collector was still down at the end of the run.
    pub dropped_undeliverable: AtomicU64,
    /// Times the collector (or file) became unreachable.
    pub outages: AtomicU64,
    /// Of the dropped lines, those the outage lines on stderr counted: the
    /// sum of their figures, added as each line is written, so the summary
    /// and the lines agree by construction.
    pub dropped_in_outages: AtomicU64,
    /// Successful connections to a collector.
    pub connects: AtomicU64,
    /// Most lines queued at once.
    pub queue_peak: AtomicU64,
    /// Files rotated.
    pub rotations: AtomicU64,
    /// Files reopened (SIGHUP).
    pub reopens: AtomicU64,
}

impl OutputCounters {
    pub(crate) fn snapshot(&self, output: &str) -> OutputStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OutputStats {
            output: output.to_string(),
            written: g(&self.written),
            bytes: g(&self.bytes),
            dropped_queue_full: g(&self.dropped_queue_full),
            dropped_undeliverable: g(&self.dropped_undeliverable),
            outages: g(&self.outages),
            dropped_in_outages: g(&self.dropped_in_outages),
            connects: g(&self.connects),
            queue_peak: g(&self.queue_peak),
            rotations: g(&self.rotations),
            reopens: g(&self.reopens),
            error: None,
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
            + self.dropped_undeliverable.load(Ordering::Relaxed)
    }
}

/// What one output did, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputStats {
    /// The output as given (`events.json`, `syslog+tcp://…`, `stdout`).
    pub output: String,
    pub written: u64,
    pub bytes: u64,
    pub dropped_queue_full: u64,
    pub dropped_undeliverable: u64,
    pub outages: u64,
    /// The sum of the outage lines' drop counts (part of `dropped()`).
    pub dropped_in_outages: u64,
    pub connects: u64,
    pub queue_peak: u64,
    pub rotations: u64,
    pub reopens: u64,
    /// The error that stopped the output, if one did.
    pub error: Option<String>,
}

impl OutputStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_undeliverable
    }
}

/// Lines and bytes handed to the outputs (each counted once, however many
/// outputs there are).
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkStats {
    pub lines: u64,
    pub bytes: u64,
    /// Events that could not be serialized (none expected).
    pub unserializable: u64,
}

/// The detect thread's handle: hands each line to every output's queue.
/// Dropping it closes the queues (so a panicking producer cannot leave an
/// output waiting forever).
pub struct Fanout {
    queues: Vec<Arc<Queue>>,
    pub stats: SinkStats,
}

impl Fanout {
    /// Serializes events (once each) and queues them on every output.
    pub fn send_events(&mut self, events: &mut Vec<Event>) {
        let mut lines = Vec::with_capacity(events.len());
        for e in events.drain(..) {
            match Line::from_event(&e) {
                Some(l) => lines.push(Arc::new(l)),
                None => self.stats.unserializable += 1,
            }
        }
        self.send_all(&lines);
    }

    /// Queues lines on every output, all at once.
    pub(crate) fn send_all(&mut self, lines: &[Arc<Line>]) {
        if lines.is_empty() {
            return;
        }
        for l in lines {
            self.stats.lines += 1;
            self.stats.bytes += l.json.len() as u64 + 1;
        }
        for q in &self.queues {
            q.push_all(lines);
        }
    }

    pub fn send(&mut self, line: Arc<Line>) {
        self.stats.lines += 1;
        self.stats.bytes += line.json.len() as u64 + 1;
        for q in &self.queues {
            q.push(Arc::clone(&line));
        }
    }

    /// No more lines: outputs drain their queues and stop.
    pub fn close(&self) {
        for q in &self.queues {
            q.close();
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.close();
    }
}

struct Running {
    name: String,
    counters: Arc<OutputCounters>,
    queue: Arc<Queue>,
    thread: JoinHandle<Option<String>>,
}

/// The running outputs.
pub struct Sinks {
    outputs: Vec<Running>,
}

/// Abandons the queue if the output thread ends in any way (a panic too),
/// so the producer never waits on a consumer that is gone.
struct AbandonOnExit(Arc<Queue>);

impl Drop for AbandonOnExit {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl Sinks {
    /// Opens every output (a file that cannot be opened is an error here,
    /// before anything runs; a collector that is down is not: it is an
    /// outage) and starts one thread per output.
    pub fn start(configs: Vec<OutputConfig>) -> Result<(Sinks, Fanout), String> {
        let mut prepared = Vec::new();
        for cfg in configs {
            let job = match &cfg.output {
                Output::Discard => continue,
                Output::Stdout | Output::File(_) => {
                    let w = file::Writer::open(&cfg.output, cfg.rotation, cfg.reopen.clone())
                        .map_err(|e| e.to_string())?;
                    Job::File(Box::new(w))
                }
                Output::Syslog(t) => Job::Syslog(t.clone()),
            };
            prepared.push((cfg, job));
        }
        let mut outputs = Vec::new();
        let mut queues = Vec::new();
        for (cfg, job) in prepared {
            let name = cfg.output.to_string();
            let counters = Arc::new(OutputCounters::default());
            let queue = Arc::new(Queue::new(
                cfg.queue_events,
                cfg.queue_bytes,
                cfg.overflow,
                Arc::clone(&counters),
            ));
            let (q, c, n) = (Arc::clone(&queue), Arc::clone(&counters), name.clone());
            let opts = cfg.syslog.clone();
            let thread = thread::Builder::new()
                .name(format!("qmwatch-out-{}", outputs.len()))
                .spawn(move || {
                    let _guard = AbandonOnExit(Arc::clone(&q));
                    match job {
                        Job::File(w) => w.run(&q, &c),
                        Job::Syslog(t) => syslog::run(&t, &opts, &q, &c, &n),
                    }
                })
                .map_err(|e| format!("cannot start output thread: {e}"))?;
            queues.push(Arc::clone(&queue));
            outputs.push(Running {
                name,
                counters,
                queue,
                thread,
            });
        }
        Ok((
            Sinks { outputs },
            Fanout {
                queues,
                stats: SinkStats::default(),
            },
        ))
    }

    /// Each output's name and live counters.
    pub fn counters(&self) -> Vec<(String, Arc<OutputCounters>)> {
        self.outputs
            .iter()
            .map(|o| (o.name.clone(), Arc::clone(&o.counters)))
            .collect()
    }

    /// Closes the queues, waits for every output to drain, and reports.
    pub fn finish(self) -> Vec<OutputStats> {
        let mut out = Vec::new();
        for o in &self.outputs {
            o.queue.close();
        }
        for o in self.outputs {
            let error = match o.thread.join() {
                Ok(e) => e,
                Err(_) => Some("the output thread panicked".into()),
            };
            let mut s = o.counters.snapshot(&o.name);
            s.error = error;
            out.push(s);
        }
        out
    }
}

enum Job {
    File(Box<file::Writer>),
    Syslog(syslog::Target),
}

/// Capped exponential backoff for reconnecting.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first,
            first,
            max: max.max(first),
        }
    }
    /// The wait before the next attempt; doubles up to the cap.
    pub(crate) fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs() {
        assert_eq!(Output::parse("-").unwrap(), Output::Stdout);
        assert_eq!(
            Output::parse("ev.json").unwrap(),
            Output::File("ev.json".into())
        );
        assert!(matches!(
            Output::parse("syslog+tcp://127.0.0.1:514").unwrap(),
            Output::Syslog(_)
        ));
        assert!(Output::parse("syslog+ftp://x:1").is_err());
        assert!(Output::parse("").is_err());
    }

    #[test]
    fn line_metadata_comes_from_the_event() {
        let l = Line::from_json(
            r#"{"@timestamp":"2026-01-02T03:04:05.000006Z","event":{"kind":"alert","severity":90,"dataset":"qmwatch.relay"}}"#
                .into(),
        );
        assert_eq!(l.dataset, "qmwatch.relay");
        assert_eq!(l.timestamp, "2026-01-02T03:04:05.000006Z");
        assert_eq!(l.severity, 2);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let v: Vec<u128> = (0..5).map(|_| b.step().as_millis()).collect();
        assert_eq!(v, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
    }

    #[test]
    fn fanout_shares_one_line_between_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        let (sinks, mut fan) = Sinks::start(vec![
            OutputConfig::for_replay(Output::File(a.clone())),
            OutputConfig::for_replay(Output::File(b.clone())),
        ])
        .unwrap();
        let line = Arc::new(Line::from_json("{\"x\":1}".into()));
        fan.send(Arc::clone(&line));
        drop(fan);
        let stats = sinks.finish();
        assert_eq!(stats.len(), 2);
        assert!(stats.iter().all(|s| s.written == 1 && s.dropped() == 0));
        assert_eq!(std::fs::read_to_string(a).unwrap(), "{\"x\":1}\n");
        assert_eq!(std::fs::read_to_string(b).unwrap(), "{\"x\":1}\n");
        assert_eq!(Arc::strong_count(&line), 1);
    }

    #[test]
    fn unwritable_output_is_an_error_at_start() {
        let e = Sinks::start(vec![OutputConfig::for_replay(Output::File(
            "/nonexistent-dir/x.json".into(),
        ))])
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent-dir/x.json"), "{e}");
    }
}
