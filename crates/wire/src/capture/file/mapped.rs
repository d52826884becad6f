//! Capture files framed where they are mapped, without copying.
//!
//! Owns: [`MappedReader`], the mapped twin of [`CaptureReader`]: it parses the
//! header through a `&[u8]` reader over the mapping, then frames the mapping in
//! windows with the same block loop, framers, counters and errors as the read path
//! (`Fill`): a window is what the read path's block would hold (the partial record
//! left over, then up to the block size; a record bigger than that grows the window,
//! within the same caps), so for any file both give the same records (offsets
//! relative to the window, as to the block), counters, errors and offsets.
//!
//! Truncation by someone else while mapped: before each window the file's size is
//! looked at again ([`Mapping::visible_len`]: its size now, and the first page a
//! SIGBUS replaced by zeros); a shorter file is framed only up to its new size, so its
//! end comes out as the read path would give it for the shortened file (a clean end
//! or a Truncated error). If the file shrinks while a window is framed, the window is
//! framed again, from the state before it, up to the new size. A file cut to before
//! bytes already delivered is a Truncated error (`WhileRead`). A file that grows
//! while mapped is read up to its size when it was mapped.
//!
//! Must not: use `unsafe` (that is `capture::mapping`), copy packet bytes, or
//! deliver a record whose bytes the file no longer holds when its window is framed.

use std::io;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{
    CaptureError, CaptureErrorKind, CaptureReader, Fill, Format, PacketRecord, ReaderStats,
    TruncatedPart,
};
use crate::capture::mapping::{Mapping, Window};

/// The visible bytes of a mapping, framed in windows starting at the reader's
/// `consumed` offset.
struct MapFill<'a> {
    /// The file's bytes that are still the file's.
    bytes: &'a [u8],
    /// Where the window starts.
    start: usize,
    /// Valid bytes of the window, when finished.
    filled: usize,
}

impl<R: io::Read> Fill<R> for MapFill<'_> {
    fn refill(&mut self, rd: &mut CaptureReader<R>) -> Result<usize, CaptureError> {
        self.start = usize::try_from(rd.consumed).unwrap_or(usize::MAX);
        // What the read path would carry over: read, not yet consumed.
        let carry =
            usize::try_from(rd.stats.bytes_read.saturating_sub(rd.consumed)).unwrap_or(usize::MAX);
        let target = rd.block_size.max(carry);
        Ok(rd.skip_into(self.bytes.len(), carry, target))
    }

    fn bytes(&self, filled: usize) -> &[u8] {
        self.bytes
            .get(self.start..self.start.saturating_add(filled))
            .unwrap_or_default()
    }

    fn grow(
        &mut self,
        rd: &mut CaptureReader<R>,
        filled: usize,
        want: usize,
    ) -> Result<usize, CaptureError> {
        Ok(rd.skip_into(self.bytes.len(), filled, want))
    }

    fn keep(&mut self, _rd: &mut CaptureReader<R>, _pos: usize, _filled: usize) {
        // The next window starts at `consumed`: the partial record is still there.
    }

    fn finish(&mut self, filled: usize) {
        self.filled = filled;
    }
}

/// Reads one byte of each cache line of the first `len` bytes of `bytes`, so that the
/// window's page faults are taken, and its lines fetched, in one pass of independent
/// loads, instead of one memory latency per record as the framer walks its chain of
/// record lengths (measured on a 1 GiB capture of 1 KiB packets: user time 0.21-0.24 s
/// warmed against 0.27-0.32 s framing cold pages).
///
/// The loads go one at a time, in ascending order. Left to itself the compiler
/// vectorised this loop into groups of 32 lines loaded highest address first; on the
/// AMD EPYC machine that order took 2.3× as long to touch a mapped MiB (119-133 against
/// 53-58 µs, a C loop of each order) and made a mapped replay of 1 KiB packets take
/// 1.3-1.4× a read one's time, where loads in order take 0.80-0.90 of it.
pub(crate) fn warm(bytes: &[u8], len: usize) {
    let mut x = 0u8;
    for b in bytes
        .get(..len.min(bytes.len()))
        .unwrap_or_default()
        .iter()
        .step_by(64)
    {
        // Opaque to the optimiser: keeps each load a load of its own, in order.
        x ^= std::hint::black_box(*b);
    }
    std::hint::black_box(x);
}

/// Windows alive at once unless set otherwise.
const DEFAULT_WINDOWS: usize = 8;

/// A pool of `n` (at least 1) permits.
fn permits(n: usize) -> (Sender<()>, Receiver<()>) {
    let n = n.max(1);
    let (tx, rx) = crossbeam_channel::bounded(n);
    for _ in 0..n {
        let _ = tx.try_send(());
    }
    (tx, rx)
}

/// The reader's state before a window, to frame it again.
struct Saved {
    format: Format,
    consumed: u64,
    eof: bool,
    done: bool,
    stats: ReaderStats,
}

/// Reader of a mapped capture file: [`CaptureReader`]'s records, counters and errors,
/// with each block a [`Window`] of the mapping instead of a buffer.
pub struct MappedReader {
    core: CaptureReader<io::Empty>,
    map: Arc<Mapping>,
    /// Permits for windows alive (taken by `next_window`, given back when a window
    /// is dropped): they bound the file pages resident at once.
    permits: (Sender<()>, Receiver<()>),
    /// Tests: runs after each window is framed (to cut the file then).
    #[cfg(test)]
    pub(super) after_frame: Option<Box<dyn FnMut() + Send>>,
}

impl MappedReader {
    /// Reads and checks the file header of the mapped file, as [`CaptureReader::new`].
    pub fn new(
        file: impl Into<String>,
        map: Arc<Mapping>,
        supported: fn(u32) -> bool,
    ) -> Result<Self, CaptureError> {
        let file = file.into();
        let mut visible = map.visible_len();
        let mut head = CaptureReader::new(
            file.clone(),
            map.bytes().get(..visible).unwrap_or_default(),
            supported,
        );
        // Cut while the header was read: read it again from what is left.
        let now = map.visible_len();
        if now < visible {
            visible = now;
            head = CaptureReader::new(
                file,
                map.bytes().get(..visible).unwrap_or_default(),
                supported,
            );
        }
        Ok(MappedReader {
            core: head?.rehost(io::empty()),
            map,
            permits: permits(DEFAULT_WINDOWS),
            #[cfg(test)]
            after_frame: None,
        })
    }

    fn save(&self) -> Saved {
        Saved {
            format: self.core.format.clone(),
            consumed: self.core.consumed,
            eof: self.core.eof,
            done: self.core.done,
            stats: self.core.stats.clone(),
        }
    }

    fn restore(&mut self, s: &Saved) {
        self.core.format = s.format.clone();
        self.core.consumed = s.consumed;
        self.core.eof = s.eof;
        self.core.done = s.done;
        self.core.stats = s.stats.clone();
        self.core.pending = None;
    }

    fn window(&self, start: usize, len: usize, permit: bool) -> Window {
        let permit = permit.then(|| self.permits.0.clone());
        Window::new(Arc::clone(&self.map), start, len, len > 0, permit)
    }

    /// How many windows may be alive at once (at least 1; default 8): `next_window`
    /// waits until a worker drops one. Lossless back-pressure, as the read path's
    /// bounded queues; it bounds the file pages resident (windows in flight).
    pub fn set_windows_alive(&mut self, n: usize) {
        self.permits = permits(n);
    }

    /// The next window and its records, as [`CaptureReader::next_block`] gives a block
    /// and its records (same return values); `data_start` of each record is relative to
    /// the window. The window's pages are given back when it is dropped. Waits while
    /// as many windows as [`set_windows_alive`](Self::set_windows_alive) allows are
    /// alive: a caller that keeps them all would wait forever.
    pub fn next_window(
        &mut self,
        records: &mut Vec<PacketRecord>,
    ) -> (Window, Result<bool, CaptureError>) {
        let consumed = usize::try_from(self.core.consumed).unwrap_or(usize::MAX);
        if self.core.pending.is_some() || self.core.done {
            let mut fill = MapFill {
                bytes: &[],
                start: consumed,
                filled: 0,
            };
            let step = self.core.frame_block(&mut fill, records);
            return (self.window(consumed, 0, false), step);
        }
        // Wait for a window to be dropped if too many are alive, giving back the
        // pages of finished windows first: the workers are the slower side then,
        // and this thread's time is free. The reader holds the sender, so `recv`
        // cannot fail; if it did, going on is harmless.
        if self.permits.1.try_recv().is_err() {
            self.map.release_done();
            let _ = self.permits.1.recv();
        }
        let first = records.len();
        let saved = self.save();
        let mut visible = self.map.visible_len();
        loop {
            if visible < consumed {
                // Cut to before what was already delivered.
                self.core.done = true;
                let err = self.core.error(
                    visible as u64,
                    CaptureErrorKind::Truncated {
                        part: TruncatedPart::WhileRead,
                        needed: self.core.consumed,
                        available: visible as u64,
                    },
                );
                return (self.window(consumed, 0, true), Err(err));
            }
            if self.core.stats.bytes_read > visible as u64 {
                // The file now ends inside what was "read": as if the last read had
                // stopped there.
                self.core.stats.bytes_read = visible as u64;
                self.core.eof = true;
            }
            let bytes = self.map.bytes().get(..visible).unwrap_or_default();
            warm(
                bytes.get(consumed..).unwrap_or_default(),
                self.core.block_size,
            );
            let mut fill = MapFill {
                bytes,
                start: consumed,
                filled: 0,
            };
            let step = self.core.frame_block(&mut fill, records);
            let (start, filled) = (fill.start, fill.filled);
            #[cfg(test)]
            if let Some(f) = self.after_frame.as_mut() {
                f();
            }
            let now = self.map.visible_len();
            if now >= start.saturating_add(filled) {
                return (self.window(start, filled, true), step);
            }
            // Cut while this window was framed: frame it again up to the new end.
            records.truncate(first);
            self.restore(&saved);
            visible = now;
        }
    }

    /// Counters of delivered and skipped things so far.
    pub fn stats(&self) -> &ReaderStats {
        self.core.stats()
    }

    /// File offset of the end of the last whole record (or block) consumed.
    pub fn bytes_consumed(&self) -> u64 {
        self.core.bytes_consumed()
    }

    /// Sets the window size, as [`CaptureReader::set_block_size`].
    pub fn set_block_size(&mut self, n: usize) {
        self.core.set_block_size(n);
    }

    /// The file name, used in error messages.
    pub fn file_name(&self) -> &str {
        self.core.file_name()
    }

    /// Link type of a classic pcap file (`None` for pcapng).
    pub fn pcap_link_type(&self) -> Option<u32> {
        self.core.pcap_link_type()
    }

    /// True for pcapng input.
    pub fn is_pcapng(&self) -> bool {
        self.core.is_pcapng()
    }

    /// The mapping read.
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }
}
