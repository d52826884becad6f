//! Runs the real `qmwatch` binary over every capture in `fixtures/` and
//! compares its events with the ground-truth `.labels.json` beside it.

use std::collections::BTreeSet;
use std::path::Path;

mod common;
use common::*;

use serde_json::Value;

fn check_capture(cap: &Path, extra_args: &[&str]) {
    let labels: Value =
        serde_json::from_str(&std::fs::read_to_string(labels_path(cap)).unwrap()).unwrap();
    let mut args = vec!["replay", "--quiet"];
    args.extend_from_slice(extra_args);
    let path = cap.to_str().unwrap();
    args.push(path);
    let (events, stderr, code) = run_qmwatch(&args, None);
    let name = cap.file_name().unwrap().to_string_lossy();
    assert_eq!(code, 0, "{name}: exit {code}, stderr {stderr}");

    // Transactions: same sessions, senders, recipients and replies, in order.
    let ours = our_transactions(&events);
    let theirs = label_transactions(&labels);
    assert_eq!(ours, theirs, "{name}: transactions differ from the labels");

    // Every event names the protocol its session speaks, per the labels.
    for e in &events {
        let key = (
            endpoint(&e["source"]["ip"], &e["source"]["port"]),
            endpoint(&e["destination"]["ip"], &e["destination"]["port"]),
        );
        let s = labels["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["client"] == key.0.as_str() && s["server"] == key.1.as_str());
        let s = s.unwrap_or_else(|| panic!("{name}: event for a session not in the labels: {e}"));
        assert_eq!(e["network"]["protocol"], s["protocol"], "{name}: {e}");
        assert_eq!(e["network"]["transport"], "tcp");
        assert!(e["network"]["community_id"]
            .as_str()
            .unwrap()
            .starts_with("1:"));
        assert!(e["@timestamp"].as_str().unwrap().ends_with('Z'));
    }

    // Services: every required one reported, nothing outside the labels.
    let reported: BTreeSet<(String, u64, String)> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.service")
        .map(|e| {
            (
                e["destination"]["ip"].as_str().unwrap().to_string(),
                e["destination"]["port"].as_u64().unwrap(),
                e["network"]["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let services = labels["services"].as_array().unwrap();
    for s in services {
        let key = (
            s["ip"].as_str().unwrap().to_string(),
            s["port"].as_u64().unwrap(),
            s["protocol"].as_str().unwrap().to_string(),
        );
        if s["detect"] == "required" {
            assert!(
                reported.contains(&key),
                "{name}: service {key:?} not reported; got {reported:?}"
            );
        }
    }
    for r in &reported {
        assert!(
            services.iter().any(|s| s["ip"] == r.0.as_str()
                && s["port"] == r.1
                && s["protocol"] == r.2.as_str()),
            "{name}: reported a service the labels do not have: {r:?}"
        );
    }
    // Once per server and protocol.
    let n_service_events = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.service")
        .count();
    assert_eq!(
        n_service_events,
        reported.len(),
        "{name}: duplicate service events"
    );

    // These captures are clean: no anomaly.
    let anomalies: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.anomaly")
        .collect();
    assert!(
        anomalies.is_empty(),
        "{name}: unexpected anomalies {anomalies:?}"
    );

    if services.is_empty() {
        assert!(
            events.is_empty(),
            "{name}: negative capture produced events: {events:?}"
        );
    }
}

#[test]
fn every_fixture_matches_its_labels() {
    for cap in captures() {
        check_capture(&cap, &[]);
    }
}

#[test]
fn every_fixture_matches_its_labels_with_two_workers() {
    for cap in captures() {
        check_capture(&cap, &["--oversubscribe", "--workers", "2"]);
    }
}

#[test]
fn all_fixtures_in_one_run_and_from_stdin_agree() {
    let caps = captures();
    let paths: Vec<&str> = caps.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["replay", "--quiet"];
    args.extend(paths.iter());
    let (all, _, code) = run_qmwatch(&args, None);
    assert_eq!(code, 0);
    let mut expected = 0;
    for cap in &caps {
        let (one, _, _) = run_qmwatch(&["replay", "--quiet", cap.to_str().unwrap()], None);
        let (piped, _, code) = run_qmwatch(&["replay", "--quiet", "-"], Some(cap));
        assert_eq!(code, 0);
        assert_eq!(one, piped, "{cap:?}: stdin replay differs");
        expected += one
            .iter()
            .filter(|e| dataset(e) == "qmwatch.transaction")
            .count();
    }
    // Transactions add up; a server seen in two files is reported once per run.
    let tx = all
        .iter()
        .filter(|e| dataset(e) == "qmwatch.transaction")
        .count();
    assert_eq!(tx, expected);
    let services: BTreeSet<String> = all
        .iter()
        .filter(|e| dataset(e) == "qmwatch.service")
        .map(|e| {
            format!(
                "{}|{}|{}",
                e["destination"]["ip"], e["destination"]["port"], e["network"]["protocol"]
            )
        })
        .collect();
    assert_eq!(
        services.len(),
        all.iter()
            .filter(|e| dataset(e) == "qmwatch.service")
            .count()
    );
    assert_eq!(services.len(), 6);
}

#[test]
fn summary_reports_counts() {
    let cap = fixtures().join("qmtp-pipelined.pcap");
    let (_, stderr, code) = run_qmwatch(&["replay", cap.to_str().unwrap()], None);
    assert_eq!(code, 0);
    assert!(stderr.contains("packets 66"), "{stderr}");
    assert!(stderr.contains("qmwatch.transaction 12"), "{stderr}");
    assert!(stderr.contains("qmtp 4"), "{stderr}");
    assert!(stderr.contains("Gbit/s"), "{stderr}");
    assert!(stderr.contains("p99"), "{stderr}");
}

#[test]
fn conflicting_retransmission_keeps_findings_and_is_reported() {
    // Derived from qmtp-open-relay-2209.pcap by fixtures/derived/make_variants.py.
    let cap = fixtures().join("derived/retransmit-conflict.pcap");
    let labels: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("qmtp-open-relay-2209.labels.json")).unwrap(),
    )
    .unwrap();
    let (events, stderr, code) = run_qmwatch(&["replay", "--quiet", cap.to_str().unwrap()], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(our_transactions(&events), label_transactions(&labels));
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.anomaly")
        .map(|e| e["qmwatch"]["anomaly"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["tcp_overlap_conflict"]);
}

#[test]
fn checksums_valid_offloaded_and_inserted() {
    // Derived from qmtp-open-relay-2209.pcap by fixtures/derived/make_variants.py.
    let labels: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("qmtp-open-relay-2209.labels.json")).unwrap(),
    )
    .unwrap();
    let valid = fixtures().join("derived/valid-checksums.pcap");
    let inserted = fixtures().join("derived/badsum-insertion.pcap");
    for mode in ["auto", "verify"] {
        let (events, _, code) = run_qmwatch(
            &[
                "replay",
                "--quiet",
                "--checksums",
                mode,
                valid.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(code, 0);
        assert_eq!(
            our_transactions(&events),
            label_transactions(&labels),
            "{mode}"
        );
        assert!(anomaly_kinds(&events).is_empty());
    }
    // The endpoint drops the bad-checksum segment; so does qmwatch.
    let (events, stderr, code) = run_qmwatch(
        &["replay", "--checksums", "auto", inserted.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(our_transactions(&events), label_transactions(&labels));
    assert_eq!(anomaly_kinds(&events), ["tcp_bad_checksum"]);
    assert!(stderr.contains("tcp_bad_checksum_dropped 1"), "{stderr}");
    // Told to ignore checksums, it keeps the inserted bytes (first wins) and
    // says the real segment disagreed.
    let (events, _, _) = run_qmwatch(
        &[
            "replay",
            "--quiet",
            "--checksums",
            "ignore",
            inserted.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(our_transactions(&events), label_transactions(&labels));
    assert_eq!(anomaly_kinds(&events), ["tcp_overlap_conflict"]);
    // Offloaded (all invalid) checksums, as in every real fixture: auto accepts them;
    // verify would drop everything.
    let orig = fixtures().join("qmtp-open-relay-2209.pcap");
    let (events, _, _) = run_qmwatch(
        &[
            "replay",
            "--quiet",
            "--checksums",
            "verify",
            orig.to_str().unwrap(),
        ],
        None,
    );
    assert!(events.is_empty());
}
