//! The command line on bad input: clear one-line errors, exit status 2,
//! and every event found before an error still written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn qmwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(args)
        .output()
        .unwrap()
}

fn lines(o: &Output) -> usize {
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[test]
fn not_a_capture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, b"this is not a capture file at all").unwrap();
    let o = qmwatch(&["replay", "--quiet", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("notes.txt") && err.contains("byte 0"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    // As tcpdump says it, and without a summary of nothing (quiet or not).
    for quiet in [true, false] {
        let mut args = vec!["replay", "/nonexistent/capture.pcap"];
        if quiet {
            args.push("--quiet");
        }
        let o = qmwatch(&args);
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "qmwatch: /nonexistent/capture.pcap: No such file or directory\n"
        );
    }
}

#[test]
fn truncated_capture_keeps_earlier_events_and_fails() {
    let full = std::fs::read(fixture("qmtp-pipelined.pcap")).unwrap();
    let whole = qmwatch(&[
        "replay",
        "--quiet",
        fixture("qmtp-pipelined.pcap").to_str().unwrap(),
    ]);
    assert_eq!(whole.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.pcap");
    // Cut in the middle of the last record.
    std::fs::write(&p, &full[..full.len() - 30]).unwrap();
    let o = qmwatch(&["replay", "--quiet", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cut.pcap") && err.contains("truncated"),
        "{err}"
    );
    // Everything but what the lost packets would have completed is still there.
    assert!(
        lines(&o) >= lines(&whole) - 1,
        "{} vs {}",
        lines(&o),
        lines(&whole)
    );
    assert!(lines(&o) > 0);
}

#[test]
fn absurd_record_length_is_an_error_not_an_allocation() {
    let mut f = std::fs::read(fixture("qmtp-pipelined.pcap")).unwrap();
    // First record's caplen (bytes 24+8..24+12) claims 4 GiB.
    f[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("absurd.pcap");
    std::fs::write(&p, &f).unwrap();
    let o = qmwatch(&["replay", "--quiet", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("absurd.pcap") && err.contains("byte 24"),
        "{err}"
    );
}

#[test]
fn unsupported_link_type_names_it() {
    let mut f = std::fs::read(fixture("qmtp-pipelined.pcap")).unwrap();
    f[20..24].copy_from_slice(&105u32.to_le_bytes()); // IEEE 802.11
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wifi.pcap");
    std::fs::write(&p, &f).unwrap();
    let o = qmwatch(&["replay", "--quiet", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("105"), "{err}");
}

#[test]
fn a_bad_file_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pcap");
    std::fs::write(&bad, b"\x00\x01\x02").unwrap();
    let good = fixture("qmtp-open-relay-2209.pcap");
    let alone = qmwatch(&["replay", "--quiet", good.to_str().unwrap()]);
    let o = qmwatch(&[
        "replay",
        "--quiet",
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(lines(&o), lines(&alone));
}

#[test]
fn bad_flags_are_rejected() {
    for args in [
        &["replay", "--workers", "0", "x.pcap"][..],
        &["replay"],
        // Map and never map at once.
        &["replay", "--mmap", "--no-mmap", "x.pcap"],
    ] {
        let o = qmwatch(args);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("qmwatch: ") && err.lines().count() == 1,
            "{err}"
        );
    }
}

#[test]
fn output_file_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.json");
    let cap = fixture("qmtp-open-relay-2209.pcap");
    for _ in 0..2 {
        let o = qmwatch(&[
            "replay",
            "--quiet",
            "--output",
            out.to_str().unwrap(),
            cap.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(lines(&o), 0);
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let n = text.lines().count();
    assert!(n > 0 && n % 2 == 0);
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
}

#[cfg(not(feature = "live"))]
#[test]
fn live_in_a_build_without_it_says_how_to_get_it() {
    let o = qmwatch(&["live", "-i", "eth0"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--features live"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
