//! Helpers shared by the integration tests: the fixtures, their labels,
//! and running the real binary.
#![allow(dead_code)]

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
