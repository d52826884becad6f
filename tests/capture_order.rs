//! One capture, one answer: a replay writes the same events, byte for byte
//! and in the same order, whatever `--workers` says and however the
//! threads happened to run. Each worker sees only its own flows (chosen by
//! a hash seeded at random each run), so without putting their findings
//! back in capture order, which session a `qmwatch.service` event cites,
//! how relay alerts fold, and the order of events changed from one replay
//! to the next. Each case is replayed several times per worker count: a
//! race shows up as a difference.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::pcapio::{
    connections, cut_fragments, fragment_frames, frame, parse, read_capture, tcp_bytes, write_pcap,
    Pkt,
};
use common::{captures, labels, policy_args, summary_count};

/// Replays of each worker count after the one-worker replay.
const REPEATS: usize = 4;

/// `qmwatch replay --workers W ARGS FILES`: its standard output and error.
fn replay(workers: usize, args: &[String], files: &[PathBuf]) -> (Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        // Every worker runs, whatever the machine's CPUs.
        .args([
            "replay",
            "--oversubscribe",
            "--workers",
            &workers.to_string(),
        ])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{files:?}: {stderr}");
    (out.stdout, stderr)
}

/// Replays `files` with one worker, then `REPEATS` times each with two
/// and three: every output must be the first one. Returns the one-worker
/// events and summary.
fn same_events_with_any_workers(
    name: &str,
    args: &[String],
    files: &[PathBuf],
) -> (Vec<u8>, String) {
    let (first, summary) = replay(1, args, files);
    for workers in [2, 3] {
        for round in 0..REPEATS {
            let (out, stderr) = replay(workers, args, files);
            if out != first {
                let a = String::from_utf8_lossy(&first);
                let b = String::from_utf8_lossy(&out);
                let diff = a
                    .lines()
                    .zip(b.lines())
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.lines().count().min(b.lines().count()));
                panic!(
                    "{name}: {workers} workers, round {round}: events differ from one worker's \
                     from line {} ({} against {} lines)\none worker:  {}\n{workers} workers: {}\n{stderr}",
                    diff + 1,
                    a.lines().count(),
                    b.lines().count(),
                    a.lines().nth(diff).unwrap_or("(none)"),
                    b.lines().nth(diff).unwrap_or("(none)"),
                );
            }
            assert_eq!(
                summary_count(&stderr, "findings_out_of_capture_order"),
                0,
                "{name}: {stderr}"
            );
        }
    }
    (first, summary)
}

#[test]
fn every_fixture_gives_the_same_events_with_any_number_of_workers() {
    for cap in captures() {
        let name = cap.file_name().unwrap().to_string_lossy().into_owned();
        let args = policy_args(&labels(&cap));
        same_events_with_any_workers(&name, &args, &[cap]);
    }
}

#[test]
fn all_fixtures_in_one_run_give_the_same_events_with_any_number_of_workers() {
    let (events, _) = same_events_with_any_workers("all fixtures", &[], &captures());
    assert!(
        events.len() > 10_000,
        "too few events to tell an order apart"
    );
}

/// Every TCP data segment of `cap` sent as IP fragments of 64 bytes: the
/// workers' findings then come from datagrams reassembled in the capture
/// thread, whose place in the capture is the frame that completed them.
fn fragmented(cap: &Path, dir: &Path) -> PathBuf {
    let mut id = 0x5000u32;
    let mut out = Vec::new();
    for f in read_capture(cap) {
        match parse(&f) {
            Pkt::Tcp(t) if !t.payload.is_empty() => {
                id += 1;
                out.extend(fragment_frames(&t, &cut_fragments(&tcp_bytes(&t), 64), id));
            }
            Pkt::Tcp(t) => out.push(frame(&t)),
            Pkt::Other(fr) => out.push(fr),
        }
    }
    let name = cap.file_stem().unwrap().to_string_lossy();
    let path = dir.join(format!("{name}-fragmented.pcap"));
    write_pcap(&path, &out);
    path
}

#[test]
fn fragmented_fixtures_give_the_same_events_with_any_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = captures()
        .iter()
        .map(|c| fragmented(c, dir.path()))
        .collect();
    let (events, summary) = same_events_with_any_workers("fragmented fixtures", &[], &files);
    assert!(!events.is_empty());
    assert!(
        summary_count(&summary, "ip_fragment_held") > 100,
        "the data did not come in fragments: {summary}"
    );
}

/// `--decode-in` moves the decoding of frames between the capture thread
/// and the workers (the default follows the queues; the fixed choices are
/// for measurements): the events must not move with it. Every fixture, in
/// one run and in one with its data sent as IP fragments (which are always
/// decoded in the capture thread, where the fragments are put together),
/// at one and two workers.
#[test]
fn whichever_thread_decodes_the_events_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let plain = captures();
    let fragments: Vec<PathBuf> = plain.iter().map(|c| fragmented(c, dir.path())).collect();
    for (name, files) in [("fixtures", &plain), ("fragmented fixtures", &fragments)] {
        let (want, _) = replay(1, &[], files);
        assert!(!want.is_empty(), "{name}: no events");
        for workers in [1, 2] {
            for split in ["auto", "capture", "worker"] {
                let args = ["--decode-in".to_string(), split.to_string()];
                let (got, stderr) = replay(workers, &args, files);
                assert!(
                    got == want,
                    "{name}: {workers} workers, --decode-in {split}: the events differ\n{stderr}"
                );
            }
        }
    }
}

/// The fixtures one after another, 100 s apart, without their FIN and RST
/// segments and without each connection's last reply segment: with
/// `--flow-timeout 1`, every flow of a fixture is still open, its last
/// package or message unanswered, when the next fixture starts, and they
/// all time out together, after one block. Their findings then come from
/// no one frame: they must come out in the same order whatever the flows'
/// workers.
#[test]
fn flows_timed_out_together_give_the_same_events_with_any_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (k, cap) in captures().iter().enumerate() {
        let frames = read_capture(cap);
        let pkts: Vec<Pkt> = frames.iter().map(parse).collect();
        let (conns, conn_of) = connections(&pkts);
        let last_reply: Vec<usize> = conns
            .iter()
            .filter_map(|c| {
                c.pkts.iter().copied().rev().find(
                    |&i| matches!(&pkts[i], Pkt::Tcp(t) if c.dir(t) == 1 && !t.payload.is_empty()),
                )
            })
            .collect();
        let start = frames.iter().map(|f| f.ts_ns).min().unwrap_or(0);
        let base = 1_700_000_000_000_000_000 + k as u64 * 100_000_000_000;
        for (i, mut f) in frames.into_iter().enumerate() {
            let closes = matches!(&pkts[i], Pkt::Tcp(t) if t.flags & 0x05 != 0);
            if closes || (conn_of[i].is_some() && last_reply.contains(&i)) {
                continue;
            }
            f.ts_ns = base + (f.ts_ns - start);
            out.push(f);
        }
    }
    let path = dir.path().join("never-closed.pcap");
    write_pcap(&path, &out);
    let args = ["--flow-timeout".to_string(), "1".to_string()];
    let (events, summary) = same_events_with_any_workers("flows never closed", &args, &[path]);
    assert!(!events.is_empty());
    assert!(
        summary_count(&summary, "timed out") >= 30,
        "the flows did not time out: {summary}"
    );
}

#[test]
fn a_generated_capture_gives_the_same_events_with_any_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("mixed.pcap");
    let cfg = qmwatch_synth::Config {
        profile: "mixed".parse().unwrap(),
        seed: 21,
        target: qmwatch_synth::Target::Bytes(qmwatch_synth::parse_size("6M").unwrap()),
    };
    let truth = qmwatch_synth::generate(&cfg, std::fs::File::create(&pcap).unwrap())
        .unwrap()
        .to_json();
    // The truth names its policy as the fixtures' labels do.
    let t: serde_json::Value = serde_json::from_str(&truth.to_string()).unwrap();
    let (events, _) = same_events_with_any_workers("generated mixed", &policy_args(&t), &[pcap]);
    assert!(!events.is_empty());
}

/// On a machine with fewer CPUs than the workers asked for and the capture
/// thread, the workers beyond run only with `--oversubscribe` (they would
/// only take turns with the capture thread, slower than fewer): the run
/// says how many it runs and why, and its events are one worker's. The
/// replay is held to one CPU with `taskset`, so that the test means the
/// same on any machine.
#[test]
fn workers_beyond_the_cpus_run_only_when_asked() {
    let caps = captures();
    let cap = caps
        .iter()
        .find(|c| c.to_string_lossy().contains("qmtp-open-relay-2209"))
        .expect("the open relay fixture");
    let on_one_cpu = |extra: &[&str]| {
        let out = Command::new("taskset")
            .args(["--cpu-list", "0", env!("CARGO_BIN_EXE_qmwatch"), "replay"])
            .args(extra)
            .arg(cap)
            .output()
            .expect("taskset (util-linux) runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        (out.stdout, stderr)
    };
    let (one, _) = on_one_cpu(&["--workers", "1"]);
    let (capped, note) = on_one_cpu(&["--workers", "3"]);
    assert!(!one.is_empty(), "the fixture has findings");
    assert_eq!(
        capped, one,
        "three workers asked on one CPU: one worker's events"
    );
    assert!(
        note.contains("running 1 worker of the 3 asked: 1 CPU here")
            && note.contains("--oversubscribe"),
        "{note}"
    );
    assert_eq!(summary_count(&note, "workers"), 1, "{note}");
    let (all, summary) = on_one_cpu(&["--workers", "3", "--oversubscribe"]);
    assert_eq!(all, one, "three workers, oversubscribed: the same events");
    assert!(!summary.contains("worker of the"), "{summary}");
    assert_eq!(summary_count(&summary, "workers"), 3, "{summary}");
    let (_, quiet) = on_one_cpu(&["--workers", "3", "--quiet"]);
    assert!(quiet.is_empty(), "--quiet: {quiet}");
}
