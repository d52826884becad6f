//! Sink: writes events as JSON lines.
//!
//! Owns: the output stream (stdout or an appended file), buffering, and
//! flushing whenever its queue runs dry, so events reach disk promptly in
//! live use and at once at the end.
//!
//! Must not: build or filter events (it writes the lines it is given), or
//! lose a line it accepted: at the end of input every line is flushed.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
    /// Nowhere (audit reads the inventory, not the events).
    Discard,
}

impl Output {
    pub fn parse(s: &str) -> Output {
        if s == "-" {
            Output::Stdout
        } else {
            Output::File(PathBuf::from(s))
        }
    }

    /// Opens the output (appending to a file); fails with a readable error.
    pub fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        match self {
            Output::Stdout => Ok(Box::new(io::stdout())),
            Output::File(p) => open_append(p).map(|f| Box::new(f) as Box<dyn Write + Send>),
            Output::Discard => Ok(Box::new(io::sink())),
        }
    }
}

fn open_append(p: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open output {}: {e}", p.display())))
}

/// Lines written and bytes, for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkStats {
    pub lines: u64,
    pub bytes: u64,
}

/// Runs the sink loop until the channel closes. Each message is a batch of
/// complete lines (without the newline).
pub fn run(out: Box<dyn Write + Send>, rx: Receiver<Vec<String>>) -> io::Result<SinkStats> {
    let mut w = BufWriter::with_capacity(256 * 1024, out);
    let mut stats = SinkStats::default();
    for batch in rx.iter() {
        for line in batch {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
            stats.lines += 1;
            stats.bytes += line.len() as u64 + 1;
        }
        if rx.is_empty() {
            w.flush()?;
        }
    }
    w.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_flushes_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.json");
        std::fs::write(&p, "old\n").unwrap();
        let (tx, rx) = crossbeam_channel::bounded(4);
        tx.send(vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()])
            .unwrap();
        drop(tx);
        let s = run(Output::File(p.clone()).open().unwrap(), rx).unwrap();
        assert_eq!(s.lines, 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "old\n{\"a\":1}\n{\"b\":2}\n"
        );
    }

    #[test]
    fn unwritable_output_is_an_error() {
        let e = Output::File("/nonexistent-dir/x.json".into())
            .open()
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent-dir/x.json"));
    }
}
