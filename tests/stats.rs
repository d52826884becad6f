//! The `qmwatch.stats` event and the capture-loss estimate, through a
//! replay (the live tests in tests/live.rs need root): a replay writes no
//! statistics unless `--stats-interval` is given; the estimate sees segments
//! a capture lost that the receiver acknowledged, raises one `capture_loss`
//! anomaly over its threshold and says so in the summary; every such event
//! meets docs/events.schema.json, which refuses a flow on them.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use common::pcapio::*;
use common::*;
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn errors(v: &jsonschema::Validator, e: &Value) -> Vec<String> {
    v.iter_errors(e)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect()
}

fn assert_valid(v: &jsonschema::Validator, events: &[Value]) {
    for e in events {
        let errs = errors(v, e);
        assert!(
            errs.is_empty(),
            "invalid event:\n{}\n{e:#}",
            errs.join("\n")
        );
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_replay_writes_stats_only_when_asked() {
    let cap = fixtures().join("qmtp-open-relay-2209.pcap");
    let path = cap.to_str().unwrap();
    let (plain, _, code) = run_qmwatch(&["replay", "--quiet", path], None);
    assert_eq!(code, 0);
    assert!(plain.iter().all(|e| dataset(e) != "qmwatch.stats"));
    let (with, _, code) = run_qmwatch(&["replay", "--quiet", "--stats-interval", "1h", path], None);
    assert_eq!(code, 0);
    // The findings are the same; one final stats event comes last.
    let (stats, findings): (Vec<Value>, Vec<Value>) = with
        .into_iter()
        .partition(|e| dataset(e) == "qmwatch.stats");
    assert_eq!(ids(&findings), ids(&plain));
    assert_eq!(stats.len(), 1, "{stats:?}");
    let s = &stats[0]["qmwatch"]["stats"];
    assert_eq!(s["final"], true);
    assert_eq!(s["mode"], "replay");
    assert_eq!(s["sequence"], 1);
    assert_eq!(s["capture"]["packets"], 54);
    assert_eq!(s["capture"]["queue_drops"], 0);
    assert_eq!(s["flows"]["created"], 5);
    assert_eq!(s["flows"]["tracked"], 0, "every flow finished at the end");
    assert_eq!(s["events"]["qmwatch.transaction"], 6);
    assert_eq!(s["latency"], Value::Null, "no latency in a replay");
    assert!(s["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats[0]["event"]["kind"], "metric");
    assert!(stats[0].get("source").is_none());
    let v = validator();
    assert_valid(&v, &stats);
    assert_valid(&v, &findings);
}

const CLIENT: [u8; 4] = [198, 51, 100, 7];
const SERVER: [u8; 4] = [192, 0, 2, 80];
const T0: u64 = 1_795_000_000_000_000_000;

/// One TCP transfer of `segments` × 1000 bytes from client to server, the
/// server acknowledging every second segment; the capture lost every
/// `lose_every`-th segment (0: none), which the server still acknowledges.
fn transfer(dir: &Path, name: &str, segments: u32, lose_every: u32) -> PathBuf {
    let path = dir.join(name);
    let f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = PcapWriter::new(f).unwrap();
    let c = IpAddr::V4(Ipv4Addr::from(CLIENT));
    let s = IpAddr::V4(Ipv4Addr::from(SERVER));
    let mut ts = T0;
    let mut pkt = |from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]| {
        let (src, dst, sport, dport) = if from_client {
            (c, s, 40000, 8080)
        } else {
            (s, c, 8080, 40000)
        };
        ts += 10_000;
        Tcp {
            ts_ns: ts,
            src,
            dst,
            ttl: 64,
            ip_id: 0,
            sport,
            dport,
            seq,
            ack,
            flags,
            window: 65535,
            options: Vec::new(),
            payload: payload.to_vec(),
            bad_checksum: false,
            no_checksum: false,
        }
    };
    let (ci, si) = (1000u32, 5000u32);
    w.tcp(&pkt(true, ci, 0, TCP_SYN, b"")).unwrap();
    w.tcp(&pkt(false, si, ci + 1, TCP_SYN | TCP_ACK, b""))
        .unwrap();
    w.tcp(&pkt(true, ci + 1, si + 1, TCP_ACK, b"")).unwrap();
    let data = [b'x'; 1000];
    for i in 0..segments {
        let seq = ci + 1 + 1000 * i;
        let t = pkt(true, seq, si + 1, TCP_ACK | TCP_PSH, &data);
        if lose_every == 0 || i % lose_every != lose_every - 1 {
            w.tcp(&t).unwrap();
        }
        if i % 2 == 1 {
            w.tcp(&pkt(false, si + 1, seq + 1000, TCP_ACK, b""))
                .unwrap();
        }
    }
    let end = ci + 1 + 1000 * segments;
    w.tcp(&pkt(true, end, si + 1, TCP_FIN | TCP_ACK, b""))
        .unwrap();
    w.tcp(&pkt(false, si + 1, end + 1, TCP_FIN | TCP_ACK, b""))
        .unwrap();
    w.tcp(&pkt(true, end + 1, si + 2, TCP_ACK, b"")).unwrap();
    drop(w);
    path
}

fn replay_with_stats(cap: &Path) -> (Vec<Value>, String) {
    let (events, stderr, code) = run_qmwatch(
        &["replay", "--stats-interval", "1h", cap.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    (events, stderr)
}

/// The final `qmwatch.stats` event.
fn final_stats(events: &[Value]) -> &Value {
    events
        .iter()
        .rfind(|e| dataset(e) == "qmwatch.stats" && e["qmwatch"]["stats"]["final"] == true)
        .expect("a final stats event")
}

fn loss_events(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"]["action"] == "capture_loss")
        .collect()
}

#[test]
fn capture_loss_is_estimated_and_raised_over_its_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let v = validator();

    // 3 MB acknowledged, one segment in 7 never captured (428 of 3000).
    let lossy = transfer(dir.path(), "lossy.pcap", 3000, 7);
    let (events, stderr) = replay_with_stats(&lossy);
    assert_valid(&v, &events);
    let l = &final_stats(&events)["qmwatch"]["stats"]["capture_loss"];
    let pct = l["percent"].as_f64().unwrap();
    assert!((14.0..14.6).contains(&pct), "{l}");
    // The data, and each FIN.
    assert_eq!(l["acked_bytes"], 3_000_002);
    assert_eq!(l["gap_bytes"], 428_000);
    let raised = loss_events(&events);
    assert_eq!(raised.len(), 1, "one anomaly per interval");
    let q = &raised[0]["qmwatch"];
    assert_eq!(q["anomaly"]["kind"], "capture_loss");
    assert_eq!(q["capture_loss"]["threshold_percent"], 5.0);
    assert!(raised[0].get("source").is_none());
    assert!(
        stderr.contains("capture loss estimate: 14.27 % (unseen 428000 of 3000002 acknowledged"),
        "{stderr}"
    );

    // Nothing lost: 0 %, no anomaly.
    let clean = transfer(dir.path(), "clean.pcap", 3000, 0);
    let (events, stderr) = replay_with_stats(&clean);
    let l = &final_stats(&events)["qmwatch"]["stats"]["capture_loss"];
    assert_eq!(l["percent"], 0.0);
    assert!(loss_events(&events).is_empty());
    assert!(stderr.contains("capture loss estimate: 0.00 %"), "{stderr}");

    // The same loss over too few bytes to judge (500 KB < 1 MiB): reported
    // in the stats, no anomaly.
    let small = transfer(dir.path(), "small.pcap", 500, 7);
    let (events, _) = replay_with_stats(&small);
    let l = &final_stats(&events)["qmwatch"]["stats"]["capture_loss"];
    assert!(l["percent"].as_f64().unwrap() > 13.0, "{l}");
    assert!(loss_events(&events).is_empty());

    // Without --stats-interval a replay's events are unchanged: no
    // anomaly, but the summary still has the estimate.
    let (events, stderr, _) = run_qmwatch(&["replay", lossy.to_str().unwrap()], None);
    assert!(events.is_empty(), "{events:?}");
    assert!(
        stderr.contains("capture loss estimate: 14.27 %"),
        "{stderr}"
    );
}

#[test]
fn the_schema_refuses_a_flow_or_a_missing_counter_on_sensor_events() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = replay_with_stats(&transfer(dir.path(), "lossy.pcap", 3000, 7));
    let stats = final_stats(&events).clone();
    let lossy = loss_events(&events)[0].clone();
    assert!(errors(&v, &stats).is_empty());
    assert!(errors(&v, &lossy).is_empty());
    type Mutation = (&'static str, fn(&mut Value));
    let on_stats: Vec<Mutation> = vec![
        ("a source", |e| {
            e["source"] = serde_json::json!({"ip": "192.0.2.1", "port": 1})
        }),
        ("no capture counters", |e| {
            e["qmwatch"]["stats"]
                .as_object_mut()
                .unwrap()
                .remove("capture");
        }),
        ("negative drops", |e| {
            e["qmwatch"]["stats"]["capture"]["kernel_drops"] = (-1).into()
        }),
        ("kind event", |e| e["event"]["kind"] = "event".into()),
        ("unknown mode", |e| {
            e["qmwatch"]["stats"]["mode"] = "x".into()
        }),
        ("percent over 100", |e| {
            e["qmwatch"]["stats"]["capture_loss"]["percent"] = 120.0.into()
        }),
    ];
    for (what, m) in on_stats {
        let mut e = stats.clone();
        m(&mut e);
        assert!(!errors(&v, &e).is_empty(), "stats accepted: {what}");
    }
    let on_loss: Vec<Mutation> = vec![
        ("a network", |e| {
            e["network"] = serde_json::json!({"transport": "tcp"})
        }),
        ("no figures", |e| {
            e["qmwatch"].as_object_mut().unwrap().remove("capture_loss");
        }),
        ("another kind", |e| {
            e["qmwatch"]["anomaly"]["kind"] = "tcp_gap".into()
        }),
    ];
    for (what, m) in on_loss {
        let mut e = lossy.clone();
        m(&mut e);
        assert!(!errors(&v, &e).is_empty(), "capture_loss accepted: {what}");
    }
    // A flow anomaly may not carry capture-loss figures.
    let mut e = lossy.clone();
    e["event"]["action"] = "tcp_gap".into();
    assert!(!errors(&v, &e).is_empty());
}
