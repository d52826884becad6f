//! A capture file cut by someone else while `qmwatch replay` has it mapped:
//! the same clear "truncated" error and exit status 2 as a file that was
//! short from the start, never a crash (SIGBUS).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `sig` (a `kill` signal name) to `pid`.
fn kill(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}: {st:?}");
}

/// The state letter of `pid` in /proc (`T`: stopped), or None once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Cut ahead of the reader (stopped as soon as the file is mapped) and
/// behind it (stopped after it has framed well past the cut, so that the
/// windows in flight and the one being framed lose their pages).
#[test]
fn a_capture_cut_while_mapped_is_truncated_not_a_crash() {
    for delay in [0, 150, 400].map(Duration::from_millis) {
        cut_while_mapped(delay);
    }
}

fn cut_while_mapped(delay: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.pcap");
    // A classic pcap header (Ethernet), then 2 GiB of zeros: each 16 zero
    // bytes are a record of caplen 0. Sparse: no disk, but seconds of replay.
    let mut f = std::fs::File::create(&path).unwrap();
    let mut head = Vec::new();
    head.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    head.extend_from_slice(&2u16.to_le_bytes());
    head.extend_from_slice(&4u16.to_le_bytes());
    head.extend_from_slice(&[0; 8]);
    head.extend_from_slice(&65535u32.to_le_bytes());
    head.extend_from_slice(&1u32.to_le_bytes());
    f.write_all(&head).unwrap();
    f.set_len(24 + (2u64 << 30)).unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args([
            "replay",
            "--mmap",
            "--quiet",
            "--workers",
            "1",
            "-o",
            "/dev/null",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the file is mapped.
    let maps = format!("/proc/{pid}/maps");
    let name = path.to_str().unwrap();
    let start = Instant::now();
    loop {
        let m = std::fs::read_to_string(&maps).unwrap_or_default();
        if m.contains(name) {
            break;
        }
        assert!(
            state(pid).is_some_and(|s| s != 'Z'),
            "qmwatch ended before its capture was mapped: {:?}",
            child.wait_with_output()
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the capture was never mapped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    kill("STOP", pid);
    // Stopped (not ended) before the cut, or the test would prove nothing.
    let stop = Instant::now();
    while state(pid) != Some('T') {
        assert!(
            state(pid).is_some_and(|s| s != 'Z'),
            "qmwatch ended before it could be stopped: the capture is too small"
        );
        assert!(stop.elapsed() < Duration::from_secs(10), "never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Cut inside a record (not at a record boundary).
    f.set_len((1 << 20) + 7).unwrap();
    kill("CONT", pid);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "killed by a signal: {err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sparse.pcap") && err.contains("truncated"),
        "{err}"
    );
}

/// Mapped or read, every fixture gives the same events and the same
/// summary (packets, bytes, flows, sessions, events, what was skipped).
#[test]
fn mapped_and_read_replays_agree() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().into_owned();
        if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
            continue;
        }
        seen += 1;
        let mut outputs = Vec::new();
        for (i, extra) in [&[][..], &["--mmap"][..], &["--no-mmap"][..]]
            .into_iter()
            .enumerate()
        {
            let events = dir.path().join(format!("{seen}-{i}.jsonl"));
            let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
                .args(["replay", "--workers", "1", "-o"])
                .arg(&events)
                .args(extra)
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: {out:?}");
            let summary: String = String::from_utf8_lossy(&out.stderr)
                .lines()
                // Timings and queue peaks differ from run to run.
                // and how the file was read is the point of the flag.
                .filter(|l| {
                    !l.contains("wall")
                        && !l.contains("queue peak")
                        && !l.contains("per packet")
                        && !l.contains("capture files:")
                })
                .collect();
            outputs.push((std::fs::read(&events).unwrap(), summary));
        }
        assert_eq!(outputs[0], outputs[1], "{name}");
        assert_eq!(outputs[0], outputs[2], "{name}");
    }
    assert!(seen >= 7, "fixtures found: {seen}");
}

/// Runs `qmwatch replay` with `extra` flags on `capture`; returns the events
/// and the summary's line on how the capture files were read.
fn replay_how(
    capture: &std::path::Path,
    extra: &[&str],
    events: &std::path::Path,
) -> (Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(["replay", "--workers", "1", "-o"])
        .arg(events)
        .args(extra)
        .arg(capture)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{extra:?}: {err}");
    let how = err
        .lines()
        .find(|l| l.contains("capture files:"))
        .unwrap_or_else(|| panic!("no line on how the file was read: {err}"))
        .trim()
        .to_string();
    (std::fs::read(events).unwrap(), how)
}

/// A file of 128 MiB or more is probed by default (reading against
/// mapping), and the summary says what was measured and chosen; the flags
/// override the probe; whichever way it is read, the events are the same.
/// A smaller file is read without a probe.
#[test]
fn a_large_file_is_probed_and_read_the_cheaper_way() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/qmtp-open-relay-2209.pcap"
    );
    let small = std::path::Path::new(fixture);
    let (_, how) = replay_how(small, &[], &dir.path().join("small.jsonl"));
    assert_eq!(how, "capture files: mapped 0, read 1");

    // The fixture (classic pcap, Ethernet, snap length 256 KiB), then
    // 128 MiB of frames of zeros, which are not IP: skipped, counted.
    let big = dir.path().join("big.pcap");
    let mut bytes = std::fs::read(fixture).unwrap();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let frame = 64 << 10;
    for i in 0..(128 << 20) / frame {
        bytes.extend_from_slice(&(2_000_000_000u32 + i as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(frame as u32).to_le_bytes());
        bytes.extend_from_slice(&(frame as u32).to_le_bytes());
        bytes.resize(bytes.len() + frame, 0);
    }
    std::fs::write(&big, &bytes).unwrap();

    let (auto_events, how) = replay_how(&big, &[], &dir.path().join("auto.jsonl"));
    let chosen = if how.starts_with("capture files: mapped 1, read 0 (probe: reading ") {
        "mapped"
    } else {
        assert!(
            how.starts_with("capture files: mapped 0, read 1 (probe: reading "),
            "{how}"
        );
        "read"
    };
    assert!(how.ends_with(&format!(" us/MiB: {chosen})")), "{how}");
    let (mapped, how) = replay_how(&big, &["--mmap"], &dir.path().join("map.jsonl"));
    assert_eq!(how, "capture files: mapped 1, read 0");
    let (read, how) = replay_how(&big, &["--no-mmap"], &dir.path().join("read.jsonl"));
    assert_eq!(how, "capture files: mapped 0, read 1");
    assert!(!read.is_empty());
    assert_eq!(auto_events, read);
    assert_eq!(mapped, read);
}
