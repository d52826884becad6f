//! JSON lines to standard output or a file.
//!
//! Owns: the open stream, its buffer (flushed whenever the queue runs dry,
//! so events reach disk promptly in live use and at once at the end),
//! reopening the file when asked (SIGHUP: after logrotate moved it), and
//! size-based rotation (`FILE` → `FILE.1` → … → `FILE.N`, the oldest
//! removed).
//!
//! Must not: lose a line it took from the queue without counting it. A
//! write error stops the output: the error is reported (exit status 2) and
//! every later line is counted as undeliverable. A reader of standard output
//! that goes away (`qmwatch replay … | head`) is not an error: the rest is
//! counted and the run ends normally.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::queue::{Pop, Queue};
use super::{Output, OutputCounters, Rotation};

/// How long the writer waits for lines before checking for SIGHUP.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Lines taken from the queue at once.
const BATCH: usize = 1024;

/// A stdout or file output.
pub(crate) struct Writer {
    /// `None` is standard output.
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    /// Bytes in the current file (for rotation).
    size: u64,
    /// Lines and bytes in the buffer: counted as written once flushed.
    unflushed: (u64, u64),
    rotation: Option<Rotation>,
    reopen: Option<Arc<AtomicBool>>,
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open output {}: {e}", p.display())))
}

fn buffered(w: Box<dyn Write + Send>) -> BufWriter<Box<dyn Write + Send>> {
    BufWriter::with_capacity(256 * 1024, w)
}

impl Writer {
    /// Opens standard output or a file (appending; created if missing).
    pub fn open(
        output: &Output,
        rotation: Option<Rotation>,
        reopen: Option<Arc<AtomicBool>>,
    ) -> io::Result<Writer> {
        let (path, out, size): (Option<PathBuf>, Box<dyn Write + Send>, u64) = match output {
            Output::File(p) => {
                let f = open_append(p)?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Some(p.clone()), Box::new(f), size)
            }
            _ => (None, Box::new(io::stdout()), 0),
        };
        Ok(Writer {
            path,
            out: buffered(out),
            size,
            unflushed: (0, 0),
            rotation,
            reopen,
        })
    }

    fn name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "stdout".into(),
        }
    }

    /// Writes lines until the queue is closed and empty. Returns the error
    /// that stopped it, if any.
    pub fn run(mut self, queue: &Queue, counters: &OutputCounters) -> Option<String> {
        loop {
            self.reopen_if_asked(counters);
            let lines = match queue.pop(BATCH, IDLE_WAIT) {
                Pop::Lines(v) => {
                    // A SIGHUP that came while waiting for these lines:
                    // they belong in the new file.
                    self.reopen_if_asked(counters);
                    v
                }
                Pop::Idle => {
                    if let Err(e) = self.flush(counters) {
                        return self.fail(e, queue, counters, 0);
                    }
                    continue;
                }
                Pop::Closed => break,
            };
            let n = lines.len();
            for (i, line) in lines.iter().enumerate() {
                if let Err(e) = self.write_line(&line.json, counters) {
                    return self.fail(e, queue, counters, (n - i) as u64);
                }
            }
            if queue.is_empty() {
                if let Err(e) = self.flush(counters) {
                    return self.fail(e, queue, counters, 0);
                }
            }
        }
        match self.flush(counters) {
            Ok(()) => None,
            Err(e) => self.fail(e, queue, counters, 0),
        }
    }

    fn write_line(&mut self, json: &str, counters: &OutputCounters) -> io::Result<()> {
        let len = json.len() as u64 + 1;
        if let Some(r) = self.rotation {
            if self.path.is_some() && self.size > 0 && self.size.saturating_add(len) > r.max_bytes {
                self.rotate(r, counters);
            }
        }
        self.out.write_all(json.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        self.unflushed.0 += 1;
        self.unflushed.1 += len;
        Ok(())
    }

    fn flush(&mut self, counters: &OutputCounters) -> io::Result<()> {
        if self.unflushed.0 > 0 {
            self.out.flush()?;
            let (n, b) = std::mem::take(&mut self.unflushed);
            counters.written.fetch_add(n, Ordering::Relaxed);
            counters.bytes.fetch_add(b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stops the output: the lines in hand and in the queue, and all later
    /// ones, are counted as undeliverable.
    fn fail(
        &mut self,
        e: io::Error,
        queue: &Queue,
        counters: &OutputCounters,
        in_hand: u64,
    ) -> Option<String> {
        // The lines still in the buffer are lost with the ones in hand.
        let (buffered, _) = std::mem::take(&mut self.unflushed);
        counters
            .dropped_undeliverable
            .fetch_add(in_hand + buffered, Ordering::Relaxed);
        queue.abandon();
        if self.path.is_none() && e.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away: not an error of ours.
            return None;
        }
        Some(format!("output {}: {e}", self.name()))
    }

    fn reopen_if_asked(&mut self, counters: &OutputCounters) {
        if self
            .reopen
            .as_ref()
            .is_some_and(|f| f.swap(false, Ordering::Relaxed))
        {
            self.reopen_file(counters);
        }
    }

    /// Reopens the file at its path (it may have been moved away).
    fn reopen_file(&mut self, counters: &OutputCounters) {
        let Some(p) = self.path.clone() else {
            return;
        };
        if let Err(e) = self.flush(counters) {
            eprintln!(
                "qmwatch: output {}: flush before reopening: {e}",
                p.display()
            );
        }
        match open_append(&p) {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.out = buffered(Box::new(f));
                counters.reopens.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("qmwatch: {e}; still writing to the old file"),
        }
    }

    /// `FILE.N-1` → `FILE.N`, …, `FILE` → `FILE.1`, then a new `FILE`. A
    /// failed rename is reported and writing goes on in the current file.
    fn rotate(&mut self, r: Rotation, counters: &OutputCounters) {
        let Some(p) = self.path.clone() else {
            return;
        };
        if let Err(e) = self.flush(counters) {
            eprintln!(
                "qmwatch: output {}: flush before rotating: {e}",
                p.display()
            );
            return;
        }
        let numbered = |i: usize| {
            let mut s = p.clone().into_os_string();
            s.push(format!(".{i}"));
            PathBuf::from(s)
        };
        let keep = r.keep.max(1);
        let _ = std::fs::remove_file(numbered(keep));
        for i in (1..keep).rev() {
            let from = numbered(i);
            if from.exists() {
                let _ = std::fs::rename(&from, numbered(i + 1));
            }
        }
        if let Err(e) = std::fs::rename(&p, numbered(1)) {
            eprintln!(
                "qmwatch: output {}: cannot rotate: {e}; still writing to it",
                p.display()
            );
            return;
        }
        match open_append(&p) {
            Ok(f) => {
                self.out = buffered(Box::new(f));
                self.size = 0;
                counters.rotations.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("qmwatch: {e}; still writing to the rotated file"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Line, Overflow};
    use super::*;

    fn run_lines(w: Writer, lines: &[String]) -> (Option<String>, Arc<OutputCounters>) {
        let c = Arc::new(OutputCounters::default());
        let q = Queue::new(1000, 1 << 20, Overflow::Block, Arc::clone(&c));
        for l in lines {
            q.push(Arc::new(Line::from_json(l.clone())));
        }
        q.close();
        let e = w.run(&q, &c);
        (e, c)
    }

    #[test]
    fn appends_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.json");
        std::fs::write(&p, "old\n").unwrap();
        let w = Writer::open(&Output::File(p.clone()), None, None).unwrap();
        let (e, c) = run_lines(w, &["{\"a\":1}".into(), "{\"b\":2}".into()]);
        assert!(e.is_none());
        assert_eq!(c.written.load(Ordering::Relaxed), 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "old\n{\"a\":1}\n{\"b\":2}\n"
        );
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ev.json");
        let rot = Rotation {
            max_bytes: 25,
            keep: 2,
        };
        let w = Writer::open(&Output::File(p.clone()), Some(rot), None).unwrap();
        // Ten lines of 10 bytes (with the newline): two per file.
        let lines: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i:03}}}")).collect();
        assert_eq!(lines[0].len() + 1, 10);
        let (e, c) = run_lines(w, &lines);
        assert!(e.is_none());
        assert_eq!(c.written.load(Ordering::Relaxed), 10);
        assert_eq!(c.rotations.load(Ordering::Relaxed), 4);
        let read = |s: &str| std::fs::read_to_string(dir.path().join(s)).unwrap();
        assert_eq!(read("ev.json"), format!("{}\n{}\n", lines[8], lines[9]));
        assert_eq!(read("ev.json.1"), format!("{}\n{}\n", lines[6], lines[7]));
        assert_eq!(read("ev.json.2"), format!("{}\n{}\n", lines[4], lines[5]));
        assert!(!dir.path().join("ev.json.3").exists());
    }

    #[test]
    fn reopens_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ev.json");
        let flag = Arc::new(AtomicBool::new(false));
        let mut w = Writer::open(&Output::File(p.clone()), None, Some(Arc::clone(&flag))).unwrap();
        let c = OutputCounters::default();
        w.write_line("{\"before\":1}", &c).unwrap();
        w.flush(&c).unwrap();
        // logrotate moves the file away, then sends SIGHUP.
        std::fs::rename(&p, dir.path().join("ev.json.old")).unwrap();
        flag.store(true, Ordering::Relaxed);
        let (e, c) = run_lines(w, &["{\"after\":1}".into()]);
        assert!(e.is_none());
        assert_eq!(c.reopens.load(Ordering::Relaxed), 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"after\":1}\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ev.json.old")).unwrap(),
            "{\"before\":1}\n"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_write_error_stops_the_output_and_counts_the_rest() {
        // /dev/full: every write fails with ENOSPC.
        let w = Writer::open(&Output::File("/dev/full".into()), None, None).unwrap();
        let lines: Vec<String> = (0..3).map(|i| format!("{{\"n\":{i}}}")).collect();
        let (e, c) = run_lines(w, &lines);
        assert!(e.unwrap().contains("/dev/full"));
        assert_eq!(c.dropped_undeliverable.load(Ordering::Relaxed), 3);
        assert_eq!(c.written.load(Ordering::Relaxed), 0);
    }
}
