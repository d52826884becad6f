//! End to end: `pipeline::replay` over captures written by `qmwatch_synth`
//! (one group per profile: mixed, qmtp-heavy, small-flows), with 1 and 2
//! workers (the file read or mapped as the probe chooses), then with 1
//! worker always reading the file and always mapping it: the two ways to
//! the bytes cost differently from one machine to another, and a slip in
//! either shows here even where the probe would not pick it. Before
//! measuring, each capture is replayed once each way and its detection
//! counts are checked against the generator's ground truth; the wire rate
//! (Gbit/s, packets/s) of those runs is printed.
//!
//! The captures are generated into a temporary directory at a modest size so
//! that the whole bench takes well under two minutes; for larger files use
//! `qmwatch-gen` and `benches/compare.sh`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qmwatch_sensor::detect::policy::{Policy, PolicyBuilder};
use qmwatch_sensor::flow::FlowConfig;
use qmwatch_sensor::pipeline::{
    replay, Destinations, FileAccess, ReplayConfig, RunOptions, RunReport,
};
use qmwatch_sensor::sink::Output;
use qmwatch_synth::{self as synth, Config, Profile, Target, Truth};

/// Capture size per profile.
fn size(p: Profile) -> u64 {
    match p {
        Profile::Mixed => 256 << 20,
        Profile::QmtpHeavy => 128 << 20,
        Profile::SmallFlows => 48 << 20,
    }
}

/// The policy the truth was judged with.
fn policy(t: &Truth) -> Policy {
    let mut b = PolicyBuilder::new();
    for d in &t.policy.local_domains {
        b.local_domain(d, "truth").expect("local domain");
    }
    for n in &t.policy.trusted_client_networks {
        b.trusted_net(n, "truth").expect("trusted net");
    }
    b.note_source("synth truth");
    b.build()
}

/// The ways each capture is replayed: (name, workers, file access).
const HOW: [(&str, usize, FileAccess); 4] = [
    ("workers", 1, FileAccess::Auto),
    ("workers", 2, FileAccess::Auto),
    ("read", 1, FileAccess::Read),
    ("mapped", 1, FileAccess::Map),
];

fn run(
    capture: &Path,
    events: &Path,
    (workers, access): (usize, FileAccess),
    policy: &Arc<Policy>,
) -> RunReport {
    let cfg = ReplayConfig {
        files: vec![capture.to_string_lossy().into_owned()],
        workers,
        flow: FlowConfig::default(),
        block_size: 1 << 20,
        access,
        policy: Arc::clone(policy),
        alert_window_ns: None,
        defer: Default::default(),
    };
    let report = replay(
        cfg,
        Destinations::single(Output::File(events.to_path_buf())),
        RunOptions::default(),
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .expect("replay");
    assert!(
        report.errors.is_empty(),
        "replay errors: {:?}",
        report.errors
    );
    report
}

/// The detection counts must equal the ground truth.
fn check(name: &str, r: &RunReport, t: &Truth) {
    let q = &t.qm;
    let d = &r.detect;
    assert_eq!(r.decode.frames, t.capture.packets, "{name}: packets");
    assert_eq!(r.flows.flows_created, t.capture.tcp_flows, "{name}: flows");
    assert_eq!(d.transactions, q.transactions_total, "{name}: transactions");
    assert_eq!(d.services, q.services.len() as u64, "{name}: services");
    let sessions = |p: &str| d.sessions_by_protocol.get(p).copied().unwrap_or(0);
    assert_eq!(
        sessions("qmtp"),
        q.confirmed_sessions.qmtp,
        "{name}: QMTP sessions"
    );
    assert_eq!(
        sessions("qmqp"),
        q.confirmed_sessions.qmqp,
        "{name}: QMQP sessions"
    );
    let inv = &d.inventory;
    let verdict = |v: &str| inv.relay_attempts.get(v).copied().unwrap_or(0);
    let r = &q.relay_attempts;
    assert_eq!(verdict("open_relay"), r.open_relay, "{name}: open relays");
    assert_eq!(verdict("refused"), r.refused, "{name}: refused relays");
    assert_eq!(verdict("deferred"), r.deferred, "{name}: deferred relays");
    assert_eq!(verdict("unanswered"), r.unanswered, "{name}: unanswered");
    assert_eq!(
        inv.open_relays_total, q.accepted_relay_recipients,
        "{name}: accepted relays"
    );
    assert!(
        d.anomalies_by_kind.is_empty(),
        "{name}: {:?}",
        d.anomalies_by_kind
    );
}

struct Prepared {
    _dir: tempfile::TempDir,
    capture: PathBuf,
    events: PathBuf,
    file_bytes: u64,
    policy: Arc<Policy>,
}

fn prepare(profile: Profile) -> Prepared {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join(format!("{}.pcap", profile.name()));
    let events = dir.path().join("events.jsonl");
    let cfg = Config {
        profile,
        seed: 1,
        target: Target::Bytes(size(profile)),
    };
    let file = std::fs::File::create(&capture).expect("create capture");
    let truth = synth::generate(&cfg, file).expect("generate");
    let policy = Arc::new(policy(&truth));
    let c = &truth.capture;
    eprintln!(
        "{}: {} packets, {} bytes, {} TCP + {} UDP flows, {} QMTP/QMQP transactions, {} relay attempts",
        profile.name(),
        c.packets,
        c.file_bytes,
        c.tcp_flows,
        c.udp_flows,
        truth.qm.transactions_total,
        truth.qm.relay_attempts_total
    );
    // Once each way, before measuring: check and print wire rates.
    for (workers, access) in HOW.map(|(_, w, a)| (w, a)) {
        let r = run(&capture, &events, (workers, access), &policy);
        let secs = r.wall.as_secs_f64();
        eprintln!(
            "  replay {workers} worker(s), {access:?}: {:.3} s, {:.3} Gbit/s, {:.0} packets/s; flows {} (candidates {}, rejected {})",
            secs,
            r.decode.bytes as f64 * 8.0 / secs / 1e9,
            r.decode.frames as f64 / secs,
            r.flows.flows_created,
            r.flows.flows_candidate,
            r.flows.flows_rejected,
        );
        check(
            &format!("{} {workers} worker(s), {access:?}", profile.name()),
            &r,
            &truth,
        );
    }
    Prepared {
        _dir: dir,
        capture,
        events,
        file_bytes: c.file_bytes,
        policy,
    }
}

fn bench_profile(c: &mut Criterion, profile: Profile) {
    let p = prepare(profile);
    let mut group = c.benchmark_group(format!("replay/{}", profile.name()));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes(p.file_bytes));
    for (name, workers, access) in HOW {
        group.bench_function(BenchmarkId::new(name, workers), |b| {
            b.iter(|| {
                let r = run(&p.capture, &p.events, (workers, access), &p.policy);
                black_box(r.decode.frames)
            })
        });
    }
    group.finish();
}

fn mixed(c: &mut Criterion) {
    bench_profile(c, Profile::Mixed);
}

fn qmtp_heavy(c: &mut Criterion) {
    bench_profile(c, Profile::QmtpHeavy);
}

fn small_flows(c: &mut Criterion) {
    bench_profile(c, Profile::SmallFlows);
}

criterion_group!(benches, mixed, qmtp_heavy, small_flows);
criterion_main!(benches);
