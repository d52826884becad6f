//! Relay verdicts, probes and services against the labels, with the policy
//! the labels were made with; and the audit command's report and exit status.

use std::collections::BTreeMap;

use serde_json::Value;

mod common;
use common::*;

fn key(e: &Value) -> (String, String) {
    (
        endpoint(&e["source"]["ip"], &e["source"]["port"]),
        endpoint(&e["destination"]["ip"], &e["destination"]["port"]),
    )
}

/// The verdict the labels imply for a transaction, by the relay policy words of docs/protocols.md.
fn label_verdict(t: &Value) -> Option<&'static str> {
    if t["relay_attempt"] != true {
        return None;
    }
    let codes: Vec<Option<&str>> = t["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["local"] == false)
        .map(|r| r["reply"]["code"].as_str())
        .collect();
    Some(if codes.contains(&Some("K")) {
        "open_relay"
    } else if codes.contains(&Some("Z")) {
        "deferred"
    } else if codes.contains(&Some("D")) {
        "refused"
    } else {
        "unanswered"
    })
}

#[test]
fn relay_attempts_probes_and_services_match_the_labels() {
    for cap in captures() {
        let labels = labels(&cap);
        let name = cap.file_name().unwrap().to_string_lossy().to_string();
        let mut args: Vec<String> = vec!["replay".into(), "--quiet".into()];
        args.extend(policy_args(&labels));
        args.push(cap.to_str().unwrap().into());
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (events, stderr, code) = run_qmwatch(&argv, None);
        assert_eq!(code, 0, "{name}: {stderr}");

        // Relay alerts: exactly the labelled relay attempts, with their verdicts.
        let mut ours: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for e in events.iter().filter(|e| dataset(e) == "qmwatch.relay") {
            assert_eq!(e["event"]["kind"], "alert");
            assert!(e["rule"]["id"]
                .as_str()
                .unwrap()
                .starts_with("qmwatch-relay-"));
            assert_eq!(
                e["qmwatch"]["relay"]["policy"]["local_domains_defaulted"],
                false
            );
            // Foreign recipients only, each with its reply.
            for r in e["qmwatch"]["relay"]["foreign_recipients"]
                .as_array()
                .unwrap()
            {
                assert!(
                    !r["recipient"].as_str().unwrap().ends_with("@example.net"),
                    "{name}: {e}"
                );
            }
            ours.entry(key(e)).or_default().push(
                e["qmwatch"]["relay"]["verdict"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        let mut theirs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for s in labels["sessions"].as_array().unwrap() {
            for t in s["transactions"].as_array().into_iter().flatten() {
                if let Some(v) = label_verdict(t) {
                    theirs
                        .entry((
                            s["client"].as_str().unwrap().into(),
                            s["server"].as_str().unwrap().into(),
                        ))
                        .or_default()
                        .push(v.into());
                }
            }
        }
        assert_eq!(
            ours, theirs,
            "{name}: relay verdicts differ from the labels"
        );

        // Transaction events carry the same judgement.
        for e in events
            .iter()
            .filter(|e| dataset(e) == "qmwatch.transaction")
        {
            let k = key(e);
            let s = labels["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["client"] == k.0.as_str() && s["server"] == k.1.as_str())
                .unwrap();
            assert_eq!(
                e["qmwatch"]["transaction"]["client_trusted"], s["client_trusted"],
                "{name}"
            );
            let idx = e["qmwatch"]["transaction"]["index"].as_u64().unwrap() as usize - 1;
            let t = &s["transactions"][idx];
            assert_eq!(
                e["qmwatch"]["transaction"]["relay_attempt"], t["relay_attempt"],
                "{name} {k:?}"
            );
            assert_eq!(
                e["qmwatch"]["transaction"]["open_relay"], t["open_relay"],
                "{name} {k:?}"
            );
        }

        // Probes: every labelled probe session recognised, nothing else.
        let probes: Vec<(String, String)> = events
            .iter()
            .filter(|e| dataset(e) == "qmwatch.probe")
            .map(key)
            .collect();
        let labelled: Vec<(String, String)> = labels["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["scanner_probe"] == true)
            .map(|s| {
                (
                    s["client"].as_str().unwrap().into(),
                    s["server"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(probes, labelled, "{name}: probes");
        for e in events.iter().filter(|e| dataset(e) == "qmwatch.probe") {
            assert_eq!(e["qmwatch"]["probe"]["scanner"], "nessus");
            assert_eq!(e["qmwatch"]["probe"]["answers"][0]["code"], "K");
        }
        // A probe that got K from an untrusted client is an open relay that
        // says it came from a scanner (Nessus 38789).
        for s in labels["sessions"].as_array().unwrap() {
            if s["scanner_probe"] == true && s["open_relay"] == true {
                let relay = events
                    .iter()
                    .find(|e| {
                        dataset(e) == "qmwatch.relay" && key(e).0 == s["client"].as_str().unwrap()
                    })
                    .unwrap_or_else(|| panic!("{name}: no relay alert for the probe"));
                assert_eq!(relay["qmwatch"]["relay"]["verdict"], "open_relay");
                assert_eq!(relay["qmwatch"]["relay"]["scanner"], "nessus");
                assert_eq!(relay["event"]["severity"], 90);
            }
        }

        // No sanctioned servers configured: every service is unexpected.
        for e in events.iter().filter(|e| dataset(e) == "qmwatch.service") {
            assert_eq!(e["event"]["kind"], "alert");
            assert_eq!(e["qmwatch"]["service"]["sanctioned"], false);
        }
    }
}

#[test]
fn sanctioned_servers_become_inventory() {
    let cap = fixtures().join("qmtp-pipelined.pcap");
    let (events, _, code) = run_qmwatch(
        &[
            "replay",
            "--quiet",
            "--sanctioned",
            "127.0.0.1:209/qmtp",
            cap.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0);
    let svc: BTreeMap<u64, (String, bool)> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.service")
        .map(|e| {
            (
                e["destination"]["port"].as_u64().unwrap(),
                (
                    e["event"]["kind"].as_str().unwrap().to_string(),
                    e["qmwatch"]["service"]["sanctioned"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(svc[&209], ("event".to_string(), true));
    assert_eq!(svc[&8025], ("alert".to_string(), false));
}

#[test]
fn default_policy_trusts_loopback_so_fixtures_raise_no_relay() {
    // 127.66.0.0/16 is loopback: by default it is trusted, as scanners judge "external".
    let cap = fixtures().join("qmtp-open-relay-2209.pcap");
    let (events, _, _) = run_qmwatch(&["replay", "--quiet", cap.to_str().unwrap()], None);
    assert_eq!(
        events
            .iter()
            .filter(|e| dataset(e) == "qmwatch.relay")
            .count(),
        0
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| dataset(e) == "qmwatch.probe")
            .count(),
        1
    );
}

#[test]
fn alert_window_folds_the_open_relay_flood() {
    let cap = fixtures().join("qmtp-open-relay-2209.pcap");
    let l = labels(&cap);
    let mut args: Vec<String> = vec![
        "replay".into(),
        "--quiet".into(),
        "--alert-window".into(),
        "1h".into(),
    ];
    args.extend(policy_args(&l));
    args.push(cap.to_str().unwrap().into());
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (events, _, code) = run_qmwatch(&argv, None);
    assert_eq!(code, 0);
    let relays: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.relay")
        .collect();
    // 127.66.0.5 relayed in two sessions (three packages); .6 and .9 once each.
    assert_eq!(relays.len(), 3, "{relays:?}");
    let five = relays
        .iter()
        .find(|e| e["source"]["ip"] == "127.66.0.5")
        .unwrap();
    assert_eq!(five["qmwatch"]["aggregate"]["count"], 3);
    assert_ne!(
        five["qmwatch"]["aggregate"]["first"]["source"]["port"],
        five["qmwatch"]["aggregate"]["last"]["source"]["port"]
    );
    // Transactions stay complete either way.
    assert_eq!(
        events
            .iter()
            .filter(|e| dataset(e) == "qmwatch.transaction")
            .count(),
        6
    );
}

#[test]
fn policy_file_rcpthosts_and_bad_entries() {
    let dir = tempfile::tempdir().unwrap();
    let rcpt = dir.path().join("rcpthosts");
    std::fs::write(
        &rcpt,
        "# qmail control/rcpthosts\n\nexample.net\n.example.net\n",
    )
    .unwrap();
    let pol = dir.path().join("site.toml");
    std::fs::write(
        &pol,
        "trusted-net = [\"127.0.0.0/24\", \"::1/128\"]\nrcpthosts = \"rcpthosts\"\n",
    )
    .unwrap();
    let cap = fixtures().join("qmtp-closed-relay-209.pcap");
    let (events, stderr, code) = run_qmwatch(
        &[
            "replay",
            "--quiet",
            "--policy",
            pol.to_str().unwrap(),
            cap.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let verdicts: Vec<&str> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.relay")
        .map(|e| e["qmwatch"]["relay"]["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["refused", "refused", "refused"]);

    std::fs::write(&rcpt, "example.net\nexample .org\n").unwrap();
    let (events, stderr, code) = run_qmwatch(
        &[
            "replay",
            "--quiet",
            "--rcpthosts",
            rcpt.to_str().unwrap(),
            cap.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(events.is_empty(), "nothing starts with a half-read policy");
    assert!(
        stderr.contains("rcpthosts: line 2") && stderr.contains("example .org"),
        "{stderr}"
    );

    let (_, stderr, code) = run_qmwatch(
        &[
            "replay",
            "--quiet",
            "--trusted-net",
            "300.1.2.3/8",
            cap.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("300.1.2.3/8"), "{stderr}");
}

fn audit(args: &[&str]) -> (String, i32) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn audit_exit_statuses_and_report() {
    let open = fixtures().join("qmtp-open-relay-2209.pcap");
    let closed = fixtures().join("qmtp-closed-relay-209.pcap");
    let neg = fixtures().join("neg-smtp.pcap");
    let pol = [
        "--local-domain",
        "example.net",
        "--trusted-net",
        "127.0.0.0/24",
        "--trusted-net",
        "::1",
    ];

    // Dirty: an open relay and an unsanctioned service.
    let mut a: Vec<&str> = pol.to_vec();
    a.push(open.to_str().unwrap());
    let (report, code) = audit(&a);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("127.0.0.1:2209") && report.contains("NOT SANCTIONED"),
        "{report}"
    );
    assert!(
        report.contains("victim@example.com") && report.contains("Kok 1795238265 qp 15824"),
        "{report}"
    );
    assert!(report.contains("[nessus probe]"), "{report}");
    // Five transactions in four sessions (one session pipelines two packages).
    assert!(report.contains("open_relay 5"), "{report}");

    // Closed relay, sanctioned: clean.
    let mut a: Vec<&str> = pol.to_vec();
    a.extend(["--sanctioned", "127.0.0.1:209", closed.to_str().unwrap()]);
    let (report, code) = audit(&a);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("refused 3") && report.contains("CLEAN"),
        "{report}"
    );

    // Nothing QMTP/QMQP at all: clean.
    let (_, code) = audit(&[neg.to_str().unwrap()]);
    assert_eq!(code, 0);

    // Unreadable input: 2.
    let (_, code) = audit(&["/nonexistent.pcap"]);
    assert_eq!(code, 2);

    // JSON: the same report as one document.
    let mut a: Vec<&str> = pol.to_vec();
    a.extend(["--format", "json", open.to_str().unwrap()]);
    let (report, code) = audit(&a);
    assert_eq!(code, 1);
    let j: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(j["status"], "findings");
    assert_eq!(j["relay_attempts"]["open_relay"], 5);
    assert_eq!(j["servers"][0]["port"], 2209);
    assert_eq!(j["servers"][0]["sanctioned"], false);
    assert_eq!(j["open_relays"].as_array().unwrap().len(), 7);
    assert_eq!(j["open_relays"][0]["client"], "127.66.0.5:56459");
}
