//! Every event qmwatch writes, over every fixture and the policies that make
//! each kind of event appear, is valid against `docs/events.schema.json`;
//! the schema is strict enough to catch a wrong type or a missing field; and
//! alert ids are stable across runs and worker counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// fixtures/*.pcap*, fixtures/derived/*.pcap, each with the labels that
/// hold its policy (a derived capture uses its source's).
fn captures() -> Vec<(PathBuf, PathBuf)> {
    let mut v = Vec::new();
    for dir in ["fixtures", "fixtures/derived"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            if !(n.ends_with(".pcap") || n.ends_with(".pcapng")) {
                continue;
            }
            let stem = n.trim_end_matches(".pcapng").trim_end_matches(".pcap");
            let own = p.with_file_name(format!("{stem}.labels.json"));
            let labels = if own.exists() {
                own
            } else {
                // fixtures/derived/make_variants.py derives from this one.
                root().join("fixtures/qmtp-open-relay-2209.labels.json")
            };
            v.push((p, labels));
        }
    }
    v.sort();
    assert!(v.len() >= 9, "fixtures missing: {v:?}");
    v
}

fn labels(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn policy_args(l: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for d in l["policy"]["local_domains"].as_array().unwrap() {
        v.push("--local-domain".into());
        v.push(d.as_str().unwrap().into());
    }
    for n in l["policy"]["trusted_client_networks"].as_array().unwrap() {
        v.push("--trusted-net".into());
        v.push(n.as_str().unwrap().into());
    }
    v
}

fn sanctioned_args(l: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for s in l["services"].as_array().unwrap() {
        let ip = s["ip"].as_str().unwrap();
        let ep = if ip.contains(':') {
            format!("[{ip}]:{}", s["port"])
        } else {
            format!("{ip}:{}", s["port"])
        };
        v.push("--sanctioned".into());
        v.push(format!("{ep}/{}", s["protocol"].as_str().unwrap()));
    }
    v
}

/// Runs `qmwatch replay --quiet ARGS CAPTURE`; the events as parsed JSON.
fn replay(cap: &Path, args: &[String]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .arg("replay")
        .arg("--quiet")
        .args(args)
        .arg(cap)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {}",
        cap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect()
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/events.schema.json")).unwrap(),
    )
    .unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("the schema itself is invalid: {e}"))
}

fn errors(v: &jsonschema::Validator, e: &Value) -> Vec<String> {
    v.iter_errors(e)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect()
}

#[test]
fn every_event_of_every_fixture_matches_the_schema() {
    let v = validator();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut total = 0;
    for (cap, lab) in captures() {
        let l = labels(&lab);
        let policy = policy_args(&l);
        let mut windowed = policy.clone();
        windowed.extend(["--alert-window".to_string(), "1h".to_string()]);
        let mut sanctioned = policy.clone();
        sanctioned.extend(sanctioned_args(&l));
        // No local domain: relay verdicts rest on the default policy.
        let defaulted = vec!["--trusted-net".to_string(), "192.0.2.0/24".to_string()];
        for args in [policy, windowed, Vec::new(), defaulted, sanctioned] {
            for e in replay(&cap, &args) {
                let errs = errors(&v, &e);
                assert!(
                    errs.is_empty(),
                    "{} {args:?}: invalid event:\n{}\n{e:#}",
                    cap.display(),
                    errs.join("\n")
                );
                total += 1;
                let ev = &e["event"];
                seen.insert(format!(
                    "{} {} {}",
                    ev["dataset"].as_str().unwrap(),
                    ev["kind"].as_str().unwrap(),
                    ev["action"].as_str().unwrap()
                ));
                if e["qmwatch"]["aggregate"]["count"].as_u64() > Some(1) {
                    seen.insert("aggregate".into());
                }
                if e["qmwatch"]["relay"]["policy"]["local_domains_defaulted"] == true {
                    seen.insert("relay under the default policy".into());
                }
            }
        }
    }
    // Every kind of event was checked, not only some.
    for want in [
        "qmwatch.service alert service_detected",
        "qmwatch.service event service_detected",
        "qmwatch.transaction event qmtp_package",
        "qmwatch.transaction event qmqp_message",
        "qmwatch.relay alert open_relay",
        "qmwatch.relay alert refused",
        "qmwatch.probe alert scanner_probe",
        "qmwatch.anomaly event tcp_overlap_conflict",
        "aggregate",
        "relay under the default policy",
    ] {
        assert!(seen.contains(want), "never saw {want}; saw {seen:?}");
    }
    assert!(total > 100, "{total}");
}

#[test]
fn the_schema_rejects_a_wrong_type_or_a_missing_field() {
    let v = validator();
    let (cap, lab) = captures()
        .into_iter()
        .find(|(c, _)| c.ends_with("qmtp-open-relay-2209.pcap"))
        .unwrap();
    let events = replay(&cap, &policy_args(&labels(&lab)));
    let relay = events
        .iter()
        .find(|e| e["event"]["dataset"] == "qmwatch.relay")
        .unwrap()
        .clone();
    let tx = events
        .iter()
        .find(|e| e["event"]["dataset"] == "qmwatch.transaction")
        .unwrap()
        .clone();
    assert!(errors(&v, &relay).is_empty());
    assert!(errors(&v, &tx).is_empty());
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: Vec<Mutation> = vec![
        ("port as a string", |e| e["source"]["port"] = "25".into()),
        ("port out of range", |e| {
            e["destination"]["port"] = 70000.into()
        }),
        ("no event.id", |e| {
            e["event"].as_object_mut().unwrap().remove("id");
        }),
        ("no @timestamp", |e| {
            e.as_object_mut().unwrap().remove("@timestamp");
        }),
        ("no observer.hostname", |e| {
            e["observer"].as_object_mut().unwrap().remove("hostname");
        }),
        ("category not in ECS", |e| {
            e["event"]["category"] = serde_json::json!(["email", "mail"])
        }),
        ("type not in ECS", |e| {
            e["event"]["type"] = serde_json::json!(["allowed", "relay"])
        }),
        ("severity as a string", |e| {
            e["event"]["severity"] = "90".into()
        }),
        ("alert without a rule", |e| {
            e.as_object_mut().unwrap().remove("rule");
        }),
        ("verdict disagrees with the action", |e| {
            e["qmwatch"]["relay"]["verdict"] = "refused".into()
        }),
        ("unknown top-level field", |e| e["mail"] = "x".into()),
        ("unknown qmwatch field", |e| {
            e["qmwatch"]["relay"]["extra"] = 1.into()
        }),
        ("bad IP", |e| e["source"]["ip"] = "300.1.2.3".into()),
        ("bad timestamp", |e| {
            e["@timestamp"] = "2026-11-21 05:17:46".into()
        }),
        ("recipients not a list", |e| {
            e["email"]["to"]["address"] = "a@example.com".into()
        }),
        ("an unknown observer.type", |e| {
            e["observer"]["type"] = "scanner".into()
        }),
        (
            "a relay alert no active check wrote, as active_check",
            |e| e["observer"]["type"] = "active_check".into(),
        ),
        ("the check's dataset from the sensor", |e| {
            e["event"]["dataset"] = "qmwatch.check".into()
        }),
    ];
    for (what, m) in mutations {
        let mut e = relay.clone();
        m(&mut e);
        assert!(!errors(&v, &e).is_empty(), "accepted: {what}");
    }
    let mut e = tx.clone();
    e["qmwatch"]["transaction"]["codes"]
        .as_object_mut()
        .unwrap()
        .remove("K");
    assert!(!errors(&v, &e).is_empty(), "accepted: codes without K");
    let mut e = tx;
    e["qmwatch"]["replies"][0]["code"] = "X".into();
    assert!(!errors(&v, &e).is_empty(), "accepted: reply code X");
}

fn ids(events: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn event_ids_are_stable_across_runs_and_worker_counts() {
    for (cap, lab) in captures() {
        let policy = policy_args(&labels(&lab));
        let one = replay(&cap, &policy);
        let again = replay(&cap, &policy);
        let mut two_workers = policy.clone();
        two_workers.extend(["--oversubscribe", "--workers", "2"].map(String::from));
        let two = replay(&cap, &two_workers);
        let name = cap.display();
        assert_eq!(ids(&one), ids(&again), "{name}: two runs");
        assert_eq!(ids(&one), ids(&two), "{name}: 1 vs 2 workers");
        // One id per finding: no two events share one.
        let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
        for id in ids(&one) {
            *by_id.entry(id).or_default() += 1;
        }
        assert!(
            by_id.values().all(|n| *n == 1),
            "{name}: duplicate ids {by_id:?}"
        );
        // Aggregated alerts are stable too.
        let mut windowed = policy.clone();
        windowed.extend(["--alert-window".to_string(), "1h".to_string()]);
        assert_eq!(
            ids(&replay(&cap, &windowed)),
            ids(&replay(&cap, &windowed)),
            "{name}: windowed"
        );
    }
}

/// The anomaly kinds of insertion and fragmentation evasions are allowed
/// (the events themselves are made by tests/evasion.rs and the unit tests;
/// here one real anomaly event is renamed to each).
#[test]
fn the_schema_allows_every_evasion_anomaly_kind() {
    let v = validator();
    let cap = root().join("fixtures/derived/retransmit-conflict.pcap");
    let events = replay(&cap, &[]);
    let a = events
        .iter()
        .find(|e| e["event"]["dataset"] == "qmwatch.anomaly")
        .expect("an anomaly")
        .clone();
    for kind in [
        "ip_fragments_dropped",
        "ip_tiny_fragments",
        "tcp_ttl_insertion",
        "tcp_chaff_flags",
        "tcp_paws_failed",
        "tcp_bad_checksum",
        "ip_fragment_overlap_conflict",
    ] {
        let mut e = a.clone();
        e["event"]["action"] = kind.into();
        e["qmwatch"]["anomaly"]["kind"] = kind.into();
        let errs = errors(&v, &e);
        assert!(errs.is_empty(), "{kind}: {}", errs.join("\n"));
    }
}
