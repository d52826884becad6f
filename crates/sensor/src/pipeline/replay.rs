//! The replay source: capture files read in blocks, in this thread.
//!
//! Owns: opening each file in turn (`-` is standard input), choosing how
//! it is read (a regular, non-empty file is mapped and framed where it is,
//! without copying; standard input, pipes, devices, and a file that cannot
//! be mapped are read into pooled buffers), reporting how far they are read
//! ([`Progress`]), and handing every block to the [`Splitter`]. Lossless:
//! when a worker falls behind, reading waits.
//!
//! Must not: draw progress itself (the binary does), stop at a bad file
//! (the error is recorded and the next file read), or read on after the
//! stop flag is set.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Defer, Feed, FileAccessReport, Mode, Source, SourceReport, Splitter};
use qmwatch_wire::capture::access::{choose, FileAccess};
use qmwatch_wire::capture::file::{
    CaptureError, CaptureReader, MappedReader, PacketRecord, ReaderStats,
};
use qmwatch_wire::capture::mapping::Mapping;
use qmwatch_wire::capture::{Block, BufferPool};
use qmwatch_wire::decode::supported_link_type;

/// Told how far a replay has read its files, in the replay's thread: what a
/// progress bar needs.
pub trait Progress {
    /// Before the first read: the size of all the files together (standard
    /// input, and a file whose size is unknown, count 0).
    fn start(&mut self, total_bytes: u64);
    /// After each block: the capture bytes read so far, over all the files.
    fn advance(&mut self, bytes_done: u64);
    /// At the end of the replay, also when it was stopped or failed.
    fn finish(&mut self);
}

/// Capture files, read in order as one capture.
pub struct FileSource {
    /// Capture files; `-` is standard input.
    pub files: Vec<String>,
    /// Bytes read per block.
    pub block_size: usize,
    /// Read regular files or map them and frame them where they are. No
    /// copy, but the kernel maps every page and takes it back: which costs
    /// less depends on the machine, so by default a large file is probed
    /// and the cheaper way kept ([`FileAccess::Auto`]).
    pub access: FileAccess,
    /// When frames are left to the workers to decode.
    pub defer: Defer,
    /// Told how far the files are read.
    pub progress: Option<Box<dyn Progress>>,
}

impl Source for FileSource {
    fn mode(&self) -> Mode {
        Mode::Replay
    }

    fn lossless(&self) -> bool {
        true
    }

    fn live(&self) -> bool {
        false
    }

    fn run(mut self: Box<Self>, feed: Feed) -> SourceReport {
        let workers = feed.queues.len().max(1);
        let mut splitter = Splitter::new(workers, true, Arc::clone(&feed.counters));
        splitter.set_defer(self.defer);
        let total: u64 = self
            .files
            .iter()
            .filter(|f| f.as_str() != "-")
            .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
            .sum();
        if let Some(p) = self.progress.as_mut() {
            p.start(total);
        }

        let mut report = SourceReport::default();
        let pool = BufferPool::new(workers * 8 + 8);
        let mut records: Vec<PacketRecord> = Vec::new();
        let mut done_before = 0u64;
        'files: for name in &self.files {
            let mut reader = match open(name, self.access, &mut report.file_access) {
                Ok(r) => r,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            reader.set_block_size(self.block_size);
            if let Input::Mapped(m) = &mut reader {
                // Half as many mapped windows alive as the read path pools
                // buffers: enough to keep the workers fed, and the file pages
                // resident stay a few MiB.
                m.set_windows_alive(workers * 4 + 4);
            }
            loop {
                if feed.stop.load(Ordering::Relaxed) {
                    report.interrupted = true;
                    break 'files;
                }
                records.clear();
                let (block, step) = reader.next_block(&pool, self.block_size, &mut records);
                if splitter.dispatch(block, &records, &feed.queues).is_err() {
                    report.errors.push("a worker stopped unexpectedly".into());
                    break 'files;
                }
                let pos = done_before + reader.bytes_consumed();
                if let Some(p) = self.progress.as_mut() {
                    p.advance(pos);
                }
                match step {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        report.errors.push(e.to_string());
                        break;
                    }
                }
            }
            report.capture_bytes += reader.bytes_consumed();
            done_before += reader.bytes_consumed();
            merge_reader(&mut report.reader, reader.stats());
        }
        if let Some(p) = self.progress.as_mut() {
            p.finish();
        }
        report.decode = splitter.decode_stats().clone();
        report
    }
}

/// A capture file being read: mapped, or read into buffers.
enum Input {
    Read(CaptureReader<Box<dyn Read>>),
    Mapped(MappedReader),
}

impl Input {
    /// The next block and its records ([`CaptureReader::next_block`]).
    fn next_block(
        &mut self,
        pool: &BufferPool,
        block_size: usize,
        records: &mut Vec<PacketRecord>,
    ) -> (Block, Result<bool, CaptureError>) {
        match self {
            Input::Read(r) => {
                let mut buf = pool.get(block_size);
                let step = r.next_block(&mut buf, records);
                (Block::new(buf, Some(pool.returner())), step)
            }
            Input::Mapped(m) => {
                let (window, step) = m.next_window(records);
                (Block::mapped(window), step)
            }
        }
    }

    fn set_block_size(&mut self, n: usize) {
        match self {
            Input::Read(r) => r.set_block_size(n),
            Input::Mapped(m) => m.set_block_size(n),
        }
    }

    fn bytes_consumed(&self) -> u64 {
        match self {
            Input::Read(r) => r.bytes_consumed(),
            Input::Mapped(m) => m.bytes_consumed(),
        }
    }

    fn stats(&self) -> &ReaderStats {
        match self {
            Input::Read(r) => r.stats(),
            Input::Mapped(m) => m.stats(),
        }
    }
}

/// Opens capture file `name` (`-`: standard input) and reads its header.
/// A regular, non-empty file is mapped when `access` says so (with
/// [`FileAccess::Auto`], when the probe finds mapping cheaper); anything
/// else, or a file whose mapping fails, is read. `report` counts the files
/// each way and keeps the last probe.
fn open(name: &str, access: FileAccess, report: &mut FileAccessReport) -> Result<Input, String> {
    let input: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(name) {
            Ok(f) => {
                let meta = f.metadata().ok();
                // A directory opens on Linux and fails at the first read:
                // say what it is, as tcpdump does.
                if meta.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(format!("{name}: Is a directory"));
                }
                let mappable = meta.is_some_and(|m| m.is_file() && m.len() > 0);
                if access != FileAccess::Read && mappable {
                    match Mapping::new(f) {
                        Ok(map) => {
                            let (mapped, probe) = choose(access, &map);
                            report.probe = probe.or(report.probe);
                            match map.try_clone_file() {
                                // Read after all: the mapping is dropped
                                // (unmapped) before the first read.
                                Ok(f) if !mapped => Box::new(f),
                                _ => {
                                    report.mapped += 1;
                                    return MappedReader::new(
                                        name,
                                        Arc::new(map),
                                        supported_link_type,
                                    )
                                    .map(Input::Mapped)
                                    .map_err(|e| e.to_string());
                                }
                            }
                        }
                        Err((f, _)) => Box::new(f),
                    }
                } else {
                    Box::new(f)
                }
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    };
    report.read += 1;
    CaptureReader::new(name, input, supported_link_type)
        .map(Input::Read)
        .map_err(|e| e.to_string())
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
