//! Tests of the SIGBUS guard: a truncated mapping reads zeros and says so; a
//! fault elsewhere still ends the process.

use super::*;
use std::io::Write;

/// An unlinked file of `len` bytes of 0x5a (it lives while open).
fn file_of(len: usize) -> File {
    let path =
        std::env::temp_dir().join(format!("qmwatch-mapping-{}-{len}.bin", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&vec![0x5a; len]).unwrap();
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
