//! Tests of the SIGBUS guard: a truncated mapping reads zeros and says so; a
//! fault elsewhere still ends the process.

use super::*;
use std::io::Write;

/// An unlinked file of `len` bytes of 0x5a (it lives while open).
fn file_of(len: usize) -> File {
    file_with(&vec![0x5a; len])
}

/// An unlinked file holding `bytes` (it lives while open; each has its own
/// name while it is made, so tests running at once do not share one).
pub(crate) fn file_with(bytes: &[u8]) -> File {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("qmwatch-mapping-{}-{n}.bin", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(bytes).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

#[test]
fn a_page_cut_off_reads_zeros_and_is_flagged() {
    let page = PAGE.load(Ordering::Relaxed).max(4096);
    let f = file_of(4 * page);
    let keep = f.try_clone().unwrap();
    let map = Mapping::new(f).map_err(|e| e.1).unwrap();
    assert_eq!(map.bytes()[3 * page], 0x5a);
    assert_eq!(map.fault_offset(), None);
    assert_eq!(map.visible_len(), 4 * page);
    keep.set_len(page as u64 + 7).unwrap();
    // fstat sees the new size at once.
    assert_eq!(map.visible_len(), page + 7);
    // Past the new end (and the page holding it): SIGBUS, handled: zeros.
    let b = std::hint::black_box(map.bytes())[3 * page + 5];
    assert_eq!(b, 0);
    assert_eq!(map.fault_offset(), Some(3 * page));
    // The file grows again: the zero page still bounds what is visible.
    keep.set_len(4 * page as u64).unwrap();
    assert_eq!(map.visible_len(), 3 * page);
    // The page with the new end is still the file's.
    assert_eq!(map.bytes()[page + 6], 0x5a);
    // A window of the lost range is released without harm.
    let map = Arc::new(map);
    drop(Window::new(
        Arc::clone(&map),
        2 * page,
        2 * page,
        true,
        None,
    ));
    assert_eq!(std::hint::black_box(map.bytes())[3 * page + 1], 0);
}

#[test]
fn a_dropped_mapping_frees_its_slot() {
    let map = Mapping::new(file_of(12_345)).map_err(|e| e.1).unwrap();
    let slot = map.slot;
    assert_eq!(TABLE[slot].len.load(Ordering::Acquire), 12_345);
    drop(map);
    // Free (or already taken by another test's mapping, of another size).
    assert_ne!(TABLE[slot].len.load(Ordering::Acquire), 12_345);
}

const CHILD: &str = "QMWATCH_FOREIGN_SIGBUS_CHILD";

/// A SIGBUS outside every registered mapping is not swallowed: the process
/// dies of it, as without the guard. Run in a child process (this binary,
/// this test only), which must die of SIGBUS.
#[test]
fn a_fault_outside_our_mappings_still_kills() {
    if std::env::var_os(CHILD).is_some() {
        // The guard is installed (and one mapping registered) ...
        let _ours = Mapping::new(file_of(100)).map_err(|e| e.1).unwrap();
        // ... but this mapping is not ours.
        let f = file_of(3 * 4096);
        // SAFETY: a read-only mapping of a file this test owns.
        let foreign = unsafe { Mmap::map(&f) }.unwrap();
        f.set_len(0).unwrap();
        let b = std::hint::black_box(&foreign[..])[2 * 4096];
        // Not reached: the read above must kill the process.
        println!("survived, read {b}");
        std::process::exit(0);
    }
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "capture::mapping::tests::a_fault_outside_our_mappings_still_kills",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "child: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Reads the first and last byte of every 4 KiB of `b` (every page it
/// spans, as framing does).
fn touch(b: &[u8]) -> u64 {
    b.chunks(4096)
        .map(|c| u64::from(c[0]) + u64::from(c[c.len() - 1]))
        .sum()
}

/// The pages of `map` mapped in this process now, in KiB (`Rss` of its
/// entry in /proc/self/smaps).
pub(crate) fn resident_kib(map: &Mapping) -> u64 {
    let start = format!("{:x}-", map.bytes().as_ptr() as usize);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
    assert!(lines.next().is_some(), "mapping not in smaps");
    lines
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Windows framed one after another, each carrying part of the last one's
/// bytes (a partial record), and dropped by a worker while the reader never
/// waits: once each is done, at most the runs a worker lets wait for the
/// reader and the window in use stay mapped, however long the file, and
/// pages a window faults in again behind the last run are given back with
/// the next.
#[test]
fn finished_windows_give_their_pages_back_in_runs() {
    let len = 6 * RELEASE_RUN + 12345;
    let map = Arc::new(Mapping::new(file_of(len)).map_err(|e| e.1).unwrap());
    let mut start = 0;
    let mut peak = 0;
    while start < len {
        let n = ((1 << 20) + 4096).min(len - start);
        let w = Window::new(Arc::clone(&map), start, n, true, None);
        // Touch every page, as framing does.
        assert!(touch(w.bytes()) > 0);
        let end = start + w.bytes().len();
        drop(w);
        peak = peak.max(resident_kib(&map));
        // The next window starts 3000 bytes before this one ended.
        start = end.saturating_sub(3000).max(start + 1);
        if end == len {
            break;
        }
    }
    let bound =
        (WORKER_RELEASE_RUNS * RELEASE_RUN + (1 << 20) + 2 * FAULT_AROUND + 8192) as u64 / 1024;
    assert!(peak <= bound, "peak {peak} KiB mapped, bound {bound} KiB");
    // Not trivially: without giving pages back the whole file stays mapped.
    assert!(peak >= (RELEASE_RUN / 1024) as u64, "peak {peak} KiB");
}

/// Whether the page of `map` at `offset` is mapped in this process now
/// (/proc/self/pagemap, bit 63).
pub(crate) fn page_mapped(map: &Mapping, offset: usize) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let page = PAGE.load(Ordering::Relaxed);
    let addr = map.bytes().as_ptr() as usize + offset;
    let mut f = File::open("/proc/self/pagemap").unwrap();
    f.seek(SeekFrom::Start((addr / page * 8) as u64)).unwrap();
    let mut e = [0u8; 8];
    f.read_exact(&mut e).unwrap();
    u64::from_le_bytes(e) >> 63 == 1
}

/// A window that starts before the pages already given back (its first
/// record was carried over a run's end) maps some of them again; they are
/// given back with the next run, not left mapped for the rest of the file.
/// (On the project's Intel machine, Linux 6.18 on ext4, giving back the
/// pages from 64 KiB before a run unmapped the carried pages behind them
/// too, so there this holds even without looking a run back; a kernel
/// that unmaps exactly the range asked needs that look.) Here the reader
/// gives the pages back after each window, as it does when it waits.
#[test]
fn pages_mapped_again_behind_the_last_run_are_given_back() {
    let len = 4 * RELEASE_RUN;
    let map = Arc::new(Mapping::new(file_of(len)).map_err(|e| e.1).unwrap());
    // Each window ends 1000 bytes past a run's end; the next starts 300,000
    // bytes before it (a large record carried over: more than the kernel's
    // fault-around reaches back).
    let carry = 300_000;
    let mut start = 0;
    for run in 1..=3 {
        let end = run * RELEASE_RUN + 1000;
        let w = Window::new(Arc::clone(&map), start, end - start, true, None);
        assert!(touch(w.bytes()) > 0);
        drop(w);
        map.release_done();
        start = run * RELEASE_RUN - carry;
        if run == 1 {
            // The first run is given back, the pages the carry is on too.
            assert!(!page_mapped(&map, RELEASE_RUN - carry));
            assert!(!page_mapped(&map, 0));
        }
    }
    // The second window mapped the carry's pages of the first run again;
    // the third window's end gave them back.
    for off in (RELEASE_RUN - carry..RELEASE_RUN).step_by(4096) {
        assert!(!page_mapped(&map, off), "page at {off} still mapped");
    }
    assert!(!page_mapped(&map, 2 * RELEASE_RUN - carry));
    // The last window's pages past its run stay until the next run's end.
    assert!(page_mapped(&map, 3 * RELEASE_RUN));
}

/// The worker that drops a window leaves finished runs to the reader until
/// [`WORKER_RELEASE_RUNS`] of them wait (the reader, not waiting, is then
/// the slower side), and then gives them all back itself.
#[test]
fn a_worker_gives_pages_back_once_enough_runs_wait() {
    let len = 4 * RELEASE_RUN;
    let map = Arc::new(Mapping::new(file_of(len)).map_err(|e| e.1).unwrap());
    let mut start = 0;
    for run in 1..=WORKER_RELEASE_RUNS {
        // The first run's pages stay mapped while fewer runs wait.
        assert!(run == 1 || page_mapped(&map, 4096));
        let end = run * RELEASE_RUN + 1000;
        let w = Window::new(Arc::clone(&map), start, end - start, true, None);
        assert!(touch(w.bytes()) > 0);
        drop(w);
        start = end;
    }
    for off in (0..WORKER_RELEASE_RUNS * RELEASE_RUN).step_by(64 << 10) {
        assert!(!page_mapped(&map, off), "page at {off} still mapped");
    }
    // The pages past the last whole run stay.
    assert!(page_mapped(&map, WORKER_RELEASE_RUNS * RELEASE_RUN));
}
