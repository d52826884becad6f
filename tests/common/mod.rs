//! Helpers shared by the integration tests: the fixtures, their labels,
//! and running the real binary.
#![allow(dead_code)]

pub mod pcapio;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            (n.ends_with(".pcap") || n.ends_with(".pcapng")) && labels_path(p).exists()
        })
        .collect();
    v.sort();
    assert!(v.len() >= 7, "fixtures missing: {v:?}");
    v
}

pub fn labels_path(cap: &Path) -> PathBuf {
    let n = cap.file_name().unwrap().to_string_lossy();
    let stem = n.trim_end_matches(".pcapng").trim_end_matches(".pcap");
    cap.with_file_name(format!("{stem}.labels.json"))
}

pub fn run_qmwatch(args: &[&str], stdin: Option<&Path>) -> (Vec<Value>, String, i32) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qmwatch"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(p) = stdin {
        cmd.stdin(std::fs::File::open(p).unwrap());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"))
        })
        .collect();
    (
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

pub fn dataset(e: &Value) -> &str {
    e["event"]["dataset"].as_str().unwrap_or("")
}

pub fn endpoint(ip: &Value, port: &Value) -> String {
    let ip = ip.as_str().unwrap();
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The labels of a capture.
pub fn labels(cap: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(labels_path(cap)).unwrap()).unwrap()
}

/// The policy flags written in a capture's labels.
pub fn policy_args(labels: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for d in labels["policy"]["local_domains"].as_array().unwrap() {
        v.push("--local-domain".to_string());
        v.push(d.as_str().unwrap().to_string());
    }
    for n in labels["policy"]["trusted_client_networks"]
        .as_array()
        .unwrap()
    {
        v.push("--trusted-net".to_string());
        v.push(n.as_str().unwrap().to_string());
    }
    v
}

/// (client, server) -> transactions as (sender, [(rcpt, code, text)]) in order.
pub type Txns = BTreeMap<(String, String), Vec<(Value, Vec<(String, Value, Value)>)>>;

/// The transactions qmwatch reported, by session, in index order.
pub fn our_transactions(events: &[Value]) -> Txns {
    let mut m: Txns = BTreeMap::new();
    let mut tx: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.transaction")
        .collect();
    tx.sort_by_key(|e| e["qmwatch"]["transaction"]["index"].as_u64());
    for e in tx {
        let key = (
            endpoint(&e["source"]["ip"], &e["source"]["port"]),
            endpoint(&e["destination"]["ip"], &e["destination"]["port"]),
        );
        let sender = e["email"]["from"]["address"].clone();
        let replies = e["qmwatch"]["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["recipient"].as_str().unwrap().to_string(),
                    r["code"].clone(),
                    r["text"].clone(),
                )
            })
            .collect();
        m.entry(key).or_default().push((sender, replies));
    }
    m
}

/// The transactions of a capture's labels, by session, in order.
pub fn label_transactions(labels: &Value) -> Txns {
    let mut m: Txns = BTreeMap::new();
    for s in labels["sessions"].as_array().unwrap() {
        if s["protocol"] == "none" {
            continue;
        }
        let key = (
            s["client"].as_str().unwrap().to_string(),
            s["server"].as_str().unwrap().to_string(),
        );
        for t in s["transactions"].as_array().unwrap() {
            let replies = t["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let (code, text) = if r["reply"].is_null() {
                        (Value::Null, Value::Null)
                    } else {
                        (r["reply"]["code"].clone(), r["reply"]["text"].clone())
                    };
                    (r["address"].as_str().unwrap().to_string(), code, text)
                })
                .collect();
            m.entry(key.clone())
                .or_default()
                .push((t["sender"].clone(), replies));
        }
    }
    m
}

/// A readable account of how two sets of transactions differ (empty when
/// they do not).
pub fn txn_diff(ours: &Txns, expected: &Txns) -> String {
    let mut s = String::new();
    let keys: std::collections::BTreeSet<_> = ours.keys().chain(expected.keys()).collect();
    for k in keys {
        let (a, b) = (ours.get(k), expected.get(k));
        if a != b {
            s.push_str(&format!(
                "session {} -> {}:\n  got      {}\n  expected {}\n",
                k.0,
                k.1,
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            ));
        }
    }
    s
}

/// Anomaly kinds, in output order.
pub fn anomaly_kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.anomaly")
        .map(|e| e["qmwatch"]["anomaly"]["kind"].as_str().unwrap_or(""))
        .collect()
}

/// The (client, server) of an event.
pub fn session_key(e: &Value) -> (String, String) {
    (
        endpoint(&e["source"]["ip"], &e["source"]["port"]),
        endpoint(&e["destination"]["ip"], &e["destination"]["port"]),
    )
}

/// The transaction events, by session and index.
pub fn transaction_events(events: &[Value]) -> Vec<&Value> {
    let mut v: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.transaction")
        .collect();
    v.sort_by_key(|e| {
        (
            session_key(e),
            e["qmwatch"]["transaction"]["index"].as_u64(),
        )
    });
    v
}

/// The value `NAME N` in the summary (summed over occurrences; 0 when
/// absent).
pub fn summary_count(stderr: &str, name: &str) -> u64 {
    let mut total = 0;
    let mut from = 0;
    while let Some(at) = stderr[from..].find(name) {
        let start = from + at;
        let end = start + name.len();
        from = end;
        let before_ok = stderr[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let rest = &stderr[end..];
        if before_ok && rest.starts_with(' ') {
            let digits: String = rest[1..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<u64>() {
                total += n;
            }
        }
    }
    total
}
