//! Mapped capture files: the mapping, its windows, and the SIGBUS guard.
//!
//! Owns: every `unsafe` of reading a capture file through `mmap`. A
//! [`Mapping`] is a read-only shared mapping of a whole regular file
//! (`memmap2`), registered in a small fixed table so that a process-wide
//! SIGBUS handler knows its address range; a [`Window`] is a range of a
//! mapping shared by the workers (through the `Arc` of a
//! [`Block`](super::Block)), whose pages are given back (`MADV_DONTNEED`),
//! in runs of 2 MiB, once the last worker has dropped it, so that resident
//! memory stays bounded by the windows in flight and two runs, not the file
//! size (the reader lets only a few windows be alive at once: each holds a
//! permit it gives back when dropped). Giving pages back costs the thread
//! that does it, so the side with time to spare does it: the reader when
//! it has to wait for a permit ([`Mapping::release_done`]), else the worker
//! that drops a window once two runs wait ([`WORKER_RELEASE_RUNS`]).
//!
//! Why a SIGBUS handler: when another process truncates a mapped file,
//! reading a page past the new end raises SIGBUS, which would kill the
//! sensor. The handler ([`on_sigbus`]), installed once with `sigaction`
//! (`SA_SIGINFO`), looks the faulting address (`si_addr`) up in the table;
//! if it lies in a registered mapping, it maps an anonymous zero page over
//! the faulting page (`mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
//! PROT_READ)`), records the lowest faulted offset in the mapping's slot and
//! returns: the access is retried and reads zeros. The reader
//! (`file::mapped`) then looks at [`Mapping::visible_len`] (the smallest of
//! the mapped length, the file's size now and the first faulted offset) and
//! reports the file as truncated, as the read path would. A fault outside
//! every registered mapping is not ours: the handler puts the previous
//! action back (Rust's own stack-overflow handler, or the default) and
//! returns, so that the fault repeats and ends the process as it would have
//! without us; a SIGBUS sent by `kill` (no faulting instruction to repeat)
//! is raised again.
//!
//! Invariants, and why each `unsafe` block is sound:
//! - A slot's `len` is non-zero only while its [`Mapping`] is alive: set
//!   (Release) after `start`, and cleared in `Drop` before `memmap2` unmaps.
//!   The handler reads `len` (Acquire) then `start`, so it never patches an
//!   address outside a live mapping of ours. A slot being reused while a
//!   fault is handled could pair a new start with an old length; no fault
//!   can be in a mapping that is being dropped (nothing refers to it), so
//!   this needs a fault in a mapping that does not exist any more.
//! - The handler allocates nothing and takes no lock: it reads atomics,
//!   calls `mmap`, `sigaction` and `raise` (system calls; `mmap` is not in
//!   POSIX's async-signal-safe list but is a plain system call on Linux,
//!   which is the target), and stores atomics.
//! - Replacing a page of our mapping with a zero page (`MAP_FIXED`) changes
//!   no memory anyone else owns: the range is inside the mapping, read-only,
//!   and `munmap` of the whole mapping (memmap2's drop) removes it too.
//! - The bytes of a mapping are handed out as `&[u8]`. They can change under
//!   us if another process writes the file (or, through the handler, become
//!   zeros): the framers and decoders read them with bounds checks only and
//!   assume nothing across two reads, exactly as for attacker-shaped input;
//!   the reader re-frames a window whose end was lost while it was framed.
//! - `MADV_DONTNEED` on a read-only file mapping only drops page-table
//!   entries: a later access faults the same file bytes back in (or zeros,
//!   past a truncation), so giving back a window that shares a page with a
//!   window still in use is harmless (each run given back takes the run
//!   before it, and 64 KiB more, again: pages that a window carrying a
//!   partial record, or the kernel's fault-around, mapped again behind it).
//!
//! Must not: be used for anything but read-only mappings of regular files,
//! swallow a fault it does not own, or let a mapping outlive its slot.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Sender;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};

/// Mappings alive at once; one more falls back to reading.
const SLOTS: usize = 64;
/// How far behind a faulting page the kernel maps pages already in the page
/// cache (`fault_around_bytes`, 64 KiB by default).
pub(crate) const FAULT_AROUND: usize = 64 << 10;
/// No fault recorded.
const NO_FAULT: usize = usize::MAX;
/// Pages are given back in runs of this many bytes of the file, not window
/// by window: each `MADV_DONTNEED` flushes the TLB of every CPU the
/// process runs on, an interrupt to the other core that, in a virtual
/// machine, costs microseconds (on the Intel machine, in a mapped replay
/// of 1 MiB windows, 6 % of all samples were the worker sending it and
/// waiting; giving pages back 4 MiB at a time made the replay 3–8 %
/// faster, resident memory +1 MiB). A worker gives back two runs, 4 MiB,
/// a call ([`WORKER_RELEASE_RUNS`]); the reader, waiting anyway, one run
/// or more.
pub(crate) const RELEASE_RUN: usize = 2 << 20;
/// Runs done and not yet given back at which the worker dropping a window
/// gives them back itself. Below that they wait for the reader, which gives
/// back whatever is done whenever it has to wait for a window to be dropped
/// (the worker is then the slower side, and the reader's time is free). When
/// the reader is the slower side it never waits, and the workers, which then
/// have time, give the pages back: two runs a call, so that the resident
/// pages and the calls are what one run of 4 MiB gave. (On the AMD EPYC
/// machine, where either side may be the slower, giving back always on the
/// worker cost 1.10 of reading's wall time on small packets; always on the
/// reader, 1.08 on large ones, against 0.90 on the worker. With this rule
/// the worker's share of the unmapping on small packets fell from 2.6 % to
/// 1.0 % of all samples; the wall time moved less than that machine's
/// noise, a few per cent at most.)
pub(crate) const WORKER_RELEASE_RUNS: usize = 2;
// At one, a worker would give back every run before the reader could.
const _: () = assert!(WORKER_RELEASE_RUNS >= 2);

struct Slot {
    busy: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    /// Offset (from `start`) of the lowest page the handler replaced.
    fault: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    busy: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    fault: AtomicUsize::new(NO_FAULT),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The SIGBUS action before ours; put back for a fault that is not ours.
static PREV: OnceLock<libc::sigaction> = OnceLock::new();
/// Whether the handler is installed (`Err`: it could not be).
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// The SIGBUS handler: see the module documentation.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO; null is
    // checked anyway.
    let (code, addr) = match unsafe { info.as_ref() } {
        // SAFETY: si_addr is the union member SIGBUS fills.
        Some(i) => (i.si_code, unsafe { i.si_addr() } as usize),
        None => (0, 0),
    };
    // si_code > 0: raised by the kernel for a faulting access.
    if code > 0 {
        for slot in &TABLE {
            let len = slot.len.load(Ordering::Acquire);
            if len == 0 {
                continue;
            }
            let start = slot.start.load(Ordering::Relaxed);
            if addr < start || addr - start >= len {
                continue;
            }
            let page_size = PAGE.load(Ordering::Relaxed);
            let page = addr & !(page_size - 1);
            // SAFETY: `page` is a page of a live registered read-only
            // mapping of ours (module invariants); replacing it by zeros
            // touches nothing else.
            let p = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    page_size,
                    libc::PROT_READ,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                slot.fault
                    .fetch_min(page.saturating_sub(start), Ordering::AcqRel);
                return;
            }
            break;
        }
    }
    // Not ours: the previous action (or the default) takes over.
    match PREV.get() {
        // SAFETY: `prev` is the action sigaction gave us at install.
        Some(prev) => unsafe {
            libc::sigaction(sig, prev, std::ptr::null_mut());
        },
        // SAFETY: restoring the default action of a valid signal.
        None => unsafe {
            libc::signal(sig, libc::SIG_DFL);
        },
    }
    if code <= 0 {
        // Sent, not raised by an access: nothing would repeat it.
        // SAFETY: raise is async-signal-safe; the signal is blocked until
        // we return, then delivered to the restored action.
        unsafe {
            libc::raise(sig);
        }
    }
}

/// Installs the SIGBUS handler once; false if it could not be.
fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(p) = usize::try_from(page) {
            if p.is_power_of_two() {
                PAGE.store(p, Ordering::Relaxed);
            }
        }
        // SAFETY: zeroed sigaction is a valid "no handler" value, filled in
        // below; sigaction is given valid pointers.
        unsafe {
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut prev) != 0 {
                return false;
            }
            let _ = PREV.set(prev);
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) == 0
        }
    })
}

/// A read-only mapping of a whole regular file, guarded against truncation.
pub struct Mapping {
    map: Mmap,
    file: File,
    slot: usize,
    /// Where the pages given back by finished windows end (a multiple of
    /// [`RELEASE_RUN`]; it only grows).
    released: AtomicUsize,
    /// Where the finished windows end, rounded down to a multiple of
    /// [`RELEASE_RUN`] (it only grows): the pages before it may be given
    /// back.
    done: AtomicUsize,
}

impl Mapping {
    /// Maps `file` (a regular, non-empty file) and registers the mapping.
    /// On failure (mapping refused, handler not installable, table full) the
    /// file comes back with the reason, to be read instead.
    pub fn new(file: File) -> Result<Mapping, (File, io::Error)> {
        if !install() {
            return Err((file, io::Error::other("cannot install a SIGBUS handler")));
        }
        // SAFETY: the mapping is read-only and private to this value; a
        // truncation by another process is what the SIGBUS guard is for, a
        // write by another process changes bytes the readers only
        // bounds-check (module invariants).
        let map = match unsafe { MmapOptions::new().map(&file) } {
            Ok(m) => m,
            Err(e) => return Err((file, e)),
        };
        if map.is_empty() {
            return Err((file, io::Error::other("empty file")));
        }
        let Some(slot) = TABLE.iter().position(|s| {
            s.busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return Err((file, io::Error::other("too many mapped files")));
        };
        if let Some(s) = TABLE.get(slot) {
            s.fault.store(NO_FAULT, Ordering::Relaxed);
            s.start.store(map.as_ptr() as usize, Ordering::Relaxed);
            s.len.store(map.len(), Ordering::Release);
        }
        Ok(Mapping {
            map,
            file,
            slot,
            released: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        })
    }

    /// The mapped bytes (see the module invariants).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The mapped length (the file's size when it was mapped).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: an empty file is not mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many leading bytes are still the file's: the mapped length, cut
    /// to the file's size now (`fstat`) and to the first page a truncation
    /// made fault. A failed `fstat` counts as no change.
    pub fn visible_len(&self) -> usize {
        let mut n = self.map.len();
        if let Ok(m) = self.file.metadata() {
            n = n.min(usize::try_from(m.len()).unwrap_or(usize::MAX));
        }
        n.min(self.fault_offset().unwrap_or(usize::MAX))
    }

    /// Reads file bytes at `offset` into `buf`, as `pread` (the file, not
    /// the mapping: what the read path would get).
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.file.read_at(buf, offset)
    }

    /// A second handle to the mapped file (for reading it instead).
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Offset of the lowest page replaced by zeros after a fault, if any.
    pub fn fault_offset(&self) -> Option<usize> {
        let f = TABLE
            .get(self.slot)
            .map_or(NO_FAULT, |s| s.fault.load(Ordering::Acquire));
        (f != NO_FAULT).then_some(f)
    }

    /// A window ending at `end` is done: the pages before the last multiple
    /// of [`RELEASE_RUN`] at or below `end` may be given back. The caller
    /// (the worker that dropped the window) gives them back itself only
    /// when [`WORKER_RELEASE_RUNS`] runs wait: the reader did not, so it is
    /// the slower side.
    fn window_done(&self, end: usize) {
        let upto = end - end % RELEASE_RUN;
        self.done.fetch_max(upto, Ordering::AcqRel);
        let released = self.released.load(Ordering::Acquire);
        if upto >= released.saturating_add(WORKER_RELEASE_RUNS * RELEASE_RUN) {
            self.release_upto(upto);
        }
    }

    /// Gives back the pages of every finished window: called by the reader
    /// when it has to wait for a window to be dropped, its time being free
    /// then.
    pub(crate) fn release_done(&self) {
        self.release_upto(self.done.load(Ordering::Acquire));
    }

    /// Gives back the pages before `upto` (a multiple of [`RELEASE_RUN`])
    /// not yet given back, and the run before them again (cheap where
    /// nothing is mapped): the window after a run's end starts before it
    /// when it carries a partial record, and its faults map pages there
    /// again.
    fn release_upto(&self, upto: usize) {
        let from = self.released.fetch_max(upto, Ordering::AcqRel);
        if upto > from {
            let start = from.saturating_sub(RELEASE_RUN);
            self.release(start, upto - start);
        }
    }

    /// Gives back the pages of `start..start + len` (they fault back in if
    /// touched again).
    pub(crate) fn release(&self, start: usize, len: usize) {
        // Also the pages just before: faulting the first page of this window
        // mapped its neighbours (fault-around) again, after the previous
        // window had given them back; without this they would stay, a few
        // per window, and resident memory would grow with the file.
        let back = start.min(FAULT_AROUND);
        let (start, len) = (start - back, len + back);
        if start < self.map.len() && len > 0 {
            let len = len.min(self.map.len() - start);
            // SAFETY: MADV_DONTNEED on a read-only file mapping drops page
            // table entries only; the bytes fault back in from the file (or
            // the zero page) if read again, so no reference is invalidated.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, start, len)
            };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(s) = TABLE.get(self.slot) {
            s.len.store(0, Ordering::Release);
            s.busy.store(false, Ordering::Release);
        }
        // `map` is unmapped after this, when the field drops.
    }
}

/// A range of a mapping: the bytes of one block.
pub struct Window {
    map: Arc<Mapping>,
    start: usize,
    len: usize,
    /// Give the pages back when dropped.
    release: bool,
    /// Where the reader's permit for this window goes back when dropped.
    permit: Option<Sender<()>>,
}

impl Window {
    /// `len` bytes of `map` at `start` (clamped to the mapping);
    /// `release`: give the pages back when the window is dropped; `permit`:
    /// where to return the reader's permit then (it bounds the windows alive).
    pub fn new(
        map: Arc<Mapping>,
        start: usize,
        len: usize,
        release: bool,
        permit: Option<Sender<()>>,
    ) -> Window {
        Window {
            map,
            start,
            len,
            release,
            permit,
        }
    }

    /// The window's bytes (empty if out of the mapping).
    pub fn bytes(&self) -> &[u8] {
        self.map
            .bytes()
            .get(self.start..self.start.saturating_add(self.len))
            .unwrap_or_default()
    }

    /// Where the window starts in the file.
    pub fn start(&self) -> usize {
        self.start
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if self.release {
            self.map.window_done(self.start.saturating_add(self.len));
        }
        if let Some(p) = &self.permit {
            // Never full: one permit per window, and the reader holds the rest.
            let _ = p.try_send(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
