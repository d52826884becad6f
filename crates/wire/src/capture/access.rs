//! Reading a capture file or mapping it: which costs less on this machine.
//!
//! Reading copies every byte out of the page cache into a block; mapping
//! copies nothing, but the kernel maps each page and takes it back when its
//! window is done. Which of the two is cheaper depends on the machine (and
//! on how its kernel holds the file's pages): on one of the project's
//! machines (Intel, a virtual machine) a mapped replay of a capture of 1 KiB
//! packets took 0.74 of a read one's time, on another (AMD) 0.80-0.90,
//! while on the AMD one, on denser or smaller packets, mapping took
//! 0.96-1.12 of reading's time, by the hour.
//! (The AMD figure was 1.3-1.4, the other way, while the touch of each
//! mapped window was a vectorised loop: see `file::mapped::warm`.) So a
//! replay measures both on chunks spread over each large file and keeps
//! the cheaper ([`probe`], [`FileAccess::Auto`]). The probe times bytes,
//! not which thread will set the pace, so where the two ways are within
//! a tenth of each other in a replay it can keep the dearer one (on the
//! AMD machine it maps qmtp-heavy and small-flows).
//!
//! What is timed is what the capture thread, which sets the pace on large
//! packets, would pay: the copy of a read; the page faults of a mapped
//! chunk, while another thread gives the previous chunk's pages back (on
//! large packets a replay's worker, done with a window, gives its pages
//! back, and the kernel then interrupts every core running the process to
//! drop them from its TLB). Giving pages back is not timed itself: in a
//! replay the side with time to spare does it (the worker on large
//! packets, the reader while it waits on small ones: `capture::mapping`).
//!
//! Owns: the choice between reading and mapping a regular file, the
//! measurement behind it ([`AccessProbe`]), and the user's override.
//!
//! Must not: change what is read (both ways give the same records, byte
//! for byte: `file::mapped`'s contract), take more than a few milliseconds,
//! or keep pages or threads: the pages the probe maps are given back, the
//! buffer it reads into is one block, and its helper thread ends with it.

use std::time::Instant;

use crate::capture::file::mapped::warm;
use crate::capture::mapping::Mapping;

/// How a replay gets the bytes of a regular capture file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileAccess {
    /// Measure both on a large file and use the cheaper; read a small one.
    #[default]
    Auto,
    /// Always read (`--no-mmap`).
    Read,
    /// Always map (`--mmap`).
    Map,
}

/// Files smaller than this are read without a probe: on them the two ways
/// differ by a few milliseconds at most, about what the probe itself costs
/// (and the probe reads a tenth of such a file).
pub const PROBE_MIN_FILE: usize = 128 << 20;
/// Bytes each probe step reads or maps: one block of the read path.
pub const PROBE_CHUNK: usize = 1 << 20;
/// Steps of each way, in pairs spread over the file (which of a pair goes
/// first alternates), so that a drift in the machine's load, or in how
/// much of the file is cached, hits both alike. With four chunks of each
/// at the file's start, the ratio of a probe's first run on the Intel
/// machine spread over 0.61–0.93 (so a file was sometimes read where
/// mapping replays it in 0.75 of the time); with eight at the start,
/// 0.65–0.88; with eight pairs spread over the file, 0.62–0.85, every
/// run on the right side of the margin. The probe takes 3–5 ms.
pub const PROBE_STEPS: usize = 8;
/// Mapping is chosen only when it is at least this much cheaper (per
/// cent). A mapped replay can pay more than the probe sees: on the AMD
/// machine mapping and reading cost the same in a probe-like loop (within
/// ±8 %, one thread, pages given back in the same thread), yet a replay of
/// large packets took 1.4× as long mapped (that was before pages were
/// given back in runs, which took 3–8 % off a mapped replay on the Intel
/// machine, and while the replay touched each window's lines in the
/// vectorised loop's order, which alone cost it 1.3-1.4× there). On the
/// Intel machine a probe that timed giving pages back in its own thread gave mapping 0.81–1.01 of reading's cost, and mapped
/// qmtp-heavy in 1 of 12 replays, where a mapped replay takes 0.86 of a
/// read one's time; with the pages given back by a second thread while the
/// next chunk is mapped: 0.70–0.89, and mapped in 12 of 12 (mixed: 9 of 12,
/// then 12 of 12). So a near tie reads.
pub const MAP_MARGIN_PERCENT: u64 = 10;

/// What the probe measured: the cheapest step of each way, in nanoseconds
/// per chunk (the least disturbed by a neighbour's load or a preemption).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessProbe {
    /// `pread` of a chunk into a block-sized buffer.
    pub read_ns: u64,
    /// Touching every cache line of a mapped chunk (the faults the framer
    /// would take) while another thread gives the previous mapped chunk's
    /// pages back (as a worker gives a window back in a replay).
    pub map_ns: u64,
    /// Bytes each step covered.
    pub chunk: usize,
}

impl AccessProbe {
    /// True when mapping costs at least [`MAP_MARGIN_PERCENT`] less.
    pub fn prefers_map(&self) -> bool {
        self.map_ns.saturating_mul(100)
            < self
                .read_ns
                .saturating_mul(100u64.saturating_sub(MAP_MARGIN_PERCENT))
    }

    /// The probe's figures in microseconds per MiB, for the summary.
    pub fn per_mib_us(&self) -> (f64, f64) {
        let mib = self.chunk as f64 / f64::from(1u32 << 20);
        let us = |ns: u64| ns as f64 / 1000.0 / mib.max(f64::MIN_POSITIVE);
        (us(self.read_ns), us(self.map_ns))
    }
}

/// Measures reading against mapping on `steps` pairs of chunks (`chunk`
/// bytes each, one read and one mapped in each pair, which goes first
/// alternating) spread evenly over `map`'s file. None when the file is
/// shorter than the pairs, or a read fails. The mapped chunks' pages are
/// given back: each by a helper thread while the next is mapped (by this
/// thread, untimed, if the helper cannot be started), the last at the end.
pub fn probe(map: &Mapping, chunk: usize, steps: usize) -> Option<AccessProbe> {
    let chunk = chunk.max(1);
    let pair = chunk.checked_mul(2)?;
    let need = pair.checked_mul(steps)?;
    if steps == 0 || map.len() < need {
        return None;
    }
    // Spread, not the first megabytes only: what each way costs differs
    // from one part of a file to another, with how the kernel holds its
    // pages (on the Intel machine, reading a capture's first 16 MiB took
    // 160-210 µs a MiB and giving their mapped pages back 24 µs; 200 MiB
    // in, 110-120 and 3).
    let spacing = map.len() / steps / chunk * chunk;
    // One block, touched first so that its page faults are not counted
    // against reading (the read path reuses its blocks).
    let mut buf = vec![1u8; chunk];
    let (mut read_ns, mut map_ns) = (u64::MAX, u64::MAX);
    let mut last_mapped = None;
    std::thread::scope(|s| -> Option<()> {
        let (give, given) = crossbeam_channel::bounded::<usize>(1);
        let (gone, gone_rx) = crossbeam_channel::bounded::<()>(1);
        // Stands in for a replay's worker, which gives a window's pages
        // back while the capture thread maps the next (see above). If it
        // cannot be started, its end of the channel is dropped with it and
        // every hand-over below fails: this thread gives the pages back.
        let _ = std::thread::Builder::new()
            .name("qmwatch-probe".into())
            .spawn_scoped(s, move || {
                for off in given {
                    map.release(off, chunk);
                    if gone.send(()).is_err() {
                        return;
                    }
                }
            });
        for p in 0..steps {
            for half in 0..2 {
                let off = p * spacing + half * chunk;
                let reads = (half == 0) == (p % 2 == 0);
                if reads {
                    let t = Instant::now();
                    read_chunk(map, &mut buf, off)?;
                    read_ns = read_ns.min(elapsed_ns(t));
                    continue;
                }
                let before = last_mapped.replace(off);
                let handed = before.is_some_and(|b| give.send(b).is_ok());
                let t = Instant::now();
                warm(map.bytes().get(off..off + chunk).unwrap_or_default(), chunk);
                map_ns = map_ns.min(elapsed_ns(t));
                // Not timed: the next step starts with nothing going back.
                match before {
                    Some(_) if handed => {
                        let _ = gone_rx.recv();
                    }
                    Some(b) => map.release(b, chunk),
                    None => {}
                }
            }
        }
        Some(())
    })?;
    if let Some(off) = last_mapped {
        map.release(off, chunk);
    }
    Some(AccessProbe {
        read_ns,
        map_ns,
        chunk,
    })
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Reads `buf.len()` bytes of the file at `off`. None if a read fails or
/// the file ends first (cut since it was mapped).
fn read_chunk(map: &Mapping, buf: &mut [u8], off: usize) -> Option<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match map.read_at(rest, (off + done) as u64) {
            Ok(0) | Err(_) => return None,
            Ok(n) => done += n,
        }
    }
    Some(())
}

/// Whether to map a regular file of `len` bytes already mapped as `map`,
/// and the measurement if one was taken.
pub fn choose(access: FileAccess, map: &Mapping) -> (bool, Option<AccessProbe>) {
    match access {
        FileAccess::Read => (false, None),
        FileAccess::Map => (true, None),
        FileAccess::Auto if map.len() < PROBE_MIN_FILE => (false, None),
        FileAccess::Auto => match probe(map, PROBE_CHUNK, PROBE_STEPS) {
            Some(p) => (p.prefers_map(), Some(p)),
            None => (false, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::mapping::tests::{file_with, resident_kib};
    use crate::capture::mapping::FAULT_AROUND;

    fn probe_of(read_ns: u64, map_ns: u64) -> AccessProbe {
        AccessProbe {
            read_ns,
            map_ns,
            chunk: 1 << 20,
        }
    }

    /// Mapping must be clearly cheaper: equal, or a few per cent, reads.
    #[test]
    fn mapping_is_chosen_only_when_clearly_cheaper() {
        assert!(probe_of(1000, 700).prefers_map());
        assert!(probe_of(1000, 899).prefers_map());
        assert!(!probe_of(1000, 900).prefers_map());
        assert!(!probe_of(1000, 950).prefers_map());
        assert!(!probe_of(1000, 1000).prefers_map());
        assert!(!probe_of(1000, 1400).prefers_map());
        // Saturating, not wrapping, at the extremes.
        assert!(!probe_of(u64::MAX, u64::MAX).prefers_map());
        assert!(probe_of(u64::MAX, 1).prefers_map());
        assert_eq!(probe_of(2000, 1000).per_mib_us(), (2.0, 1.0));
    }

    /// A mapped, unlinked file of `len` bytes (byte `i` is `i % 251`), and
    /// a second handle to it, to cut it.
    fn mapped_file(len: usize) -> (std::fs::File, Mapping) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let f = file_with(&bytes);
        let keep = f.try_clone().unwrap();
        let map = Mapping::new(f).map_err(|(_, e)| e).unwrap();
        (keep, map)
    }

    #[test]
    fn the_probe_times_both_ways_and_leaves_the_bytes_as_they_were() {
        let (_f, map) = mapped_file(64 << 10);
        let p = probe(&map, 4096, 4).unwrap();
        assert!(p.read_ns > 0 && p.map_ns > 0 && p.read_ns < u64::MAX);
        assert_eq!(p.chunk, 4096);
        // Pages given back fault in again with the file's bytes.
        let b = map.bytes();
        assert!(b.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
    }

    /// Every mapped chunk's pages go back (by the helper thread, the last
    /// at the end): at most the pages fault-around mapped past a chunk's
    /// end stay, not the chunks. (Chunks of 2 MiB, on 2 MiB boundaries: a
    /// kernel that keeps a file in large folios maps a whole folio, up to
    /// 2 MiB, at the first fault, and unmaps it whole.)
    #[test]
    fn the_probe_gives_back_every_chunk_it_mapped() {
        let chunk = 2 << 20;
        let (_f, map) = mapped_file(4 * 2 * chunk);
        assert_eq!(resident_kib(&map), 0);
        assert!(probe(&map, chunk, 4).is_some());
        let left = resident_kib(&map);
        let bound = (4 * FAULT_AROUND / 1024) as u64;
        assert!(left <= bound, "{left} KiB still mapped, bound {bound} KiB");
    }

    #[test]
    fn a_file_too_short_for_the_probe_is_not_probed() {
        let (_f, map) = mapped_file(8 * 4096 - 1);
        assert_eq!(probe(&map, 4096, 4), None);
        assert_eq!(probe(&map, 4096, 0), None);
        assert_eq!(probe(&map, usize::MAX, 4), None);
        assert!(probe(&map, 4096, 3).is_some());
        // Below the automatic choice's size: read, and nothing measured.
        assert_eq!(choose(FileAccess::Auto, &map), (false, None));
        assert_eq!(choose(FileAccess::Map, &map), (true, None));
        assert_eq!(choose(FileAccess::Read, &map), (false, None));
    }

    /// A file cut after it was mapped: the probe's read comes up short and
    /// nothing is measured (the mapped side's fault is the SIGBUS guard's).
    #[test]
    fn a_file_cut_before_the_probe_gives_no_measurement() {
        let (f, map) = mapped_file(64 << 10);
        f.set_len(4096).unwrap();
        assert_eq!(probe(&map, 4096, 4), None);
    }
}
