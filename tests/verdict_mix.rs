//! A generated capture with what the real fixtures lack: `Z` replies, a
//! package answered `K` and `Z`, IPv6 outside loopback (2001:db8::/32), one
//! client whose attempts through one server change verdict inside an alert
//! window, and nanosecond timestamps. Checked against values worked out by
//! hand (verdicts, packet times) or by the Community ID reference
//! implementation (Python `communityid` 1.5).

mod common;

use std::net::IpAddr;

use common::pcapio::*;
use common::*;
use serde_json::Value;

/// 2026-11-18T11:06:40Z plus half a millisecond: read as microseconds, the
/// fraction would be half a second.
const T0: u64 = 1_795_000_000_000_500_000;
const SEC: u64 = 1_000_000_000;

/// One TCP connection being written.
struct Conv {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    cseq: u32,
    sseq: u32,
    ts: u64,
    frames: Vec<Frame>,
}

impl Conv {
    fn new(client: &str, cport: u16, server: &str, sport: u16, ts: u64) -> Conv {
        Conv {
            client: (client.parse().unwrap(), cport),
            server: (server.parse().unwrap(), sport),
            cseq: 0x1000_0000,
            sseq: 0x7000_0000,
            ts,
            frames: Vec::new(),
        }
    }
    fn emit(&mut self, from_client: bool, flags: u8, payload: &[u8]) {
        let ((src, sport), (dst, dport)) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        let t = Tcp {
            ts_ns: self.ts,
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
            // Correct checksums: over IPv6 they are summed with the whole
            // 2001:db8:: addresses, so a decoder that gets the pseudo-header
            // wrong drops every segment.
            bad_checksum: false,
            no_checksum: false,
        };
        let n = t.seq_len();
        self.frames.push(frame(&t));
        if from_client {
            self.cseq = self.cseq.wrapping_add(n);
        } else {
            self.sseq = self.sseq.wrapping_add(n);
        }
        self.ts += 10_000;
    }
    /// A whole session: one QMTP package to `rcpts`, answered `replies`.
    fn session(mut self, rcpts: &[&str], replies: &[&str]) -> Vec<Frame> {
        self.emit(true, TCP_SYN, &[]);
        self.emit(false, TCP_SYN | TCP_ACK, &[]);
        self.emit(true, TCP_ACK, &[]);
        let rcpts: Vec<&[u8]> = rcpts.iter().map(|r| r.as_bytes()).collect();
        let pkg = package(b"Subject: test\n\nhello\n", b"sender@example.org", &rcpts);
        self.emit(true, TCP_ACK | TCP_PSH, &pkg);
        let answer: Vec<u8> = replies.iter().flat_map(|r| ns(r.as_bytes())).collect();
        self.emit(false, TCP_ACK | TCP_PSH, &answer);
        self.emit(true, TCP_FIN | TCP_ACK, &[]);
        self.emit(false, TCP_FIN | TCP_ACK, &[]);
        self.emit(true, TCP_ACK, &[]);
        self.frames
    }
}

fn ns(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

fn package(body: &[u8], sender: &[u8], rcpts: &[&[u8]]) -> Vec<u8> {
    let mut m = vec![b'\n'];
    m.extend_from_slice(body);
    let mut v = ns(&m);
    v.extend(ns(sender));
    let list: Vec<u8> = rcpts.iter().flat_map(|r| ns(r)).collect();
    v.extend(ns(&list));
    v
}

const S4: &str = "198.51.100.25";
const S6: &str = "2001:db8::25";

/// The capture: client A (192.0.2.7) through S4 refused, then accepted,
/// then deferred, 10 s apart; client B (192.0.2.8) through S4 one package
/// answered K and Z; client C (2001:db8::7) through [S6]:209 deferred.
fn capture() -> Vec<u8> {
    let mut frames = Vec::new();
    let d = "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";
    frames.extend(Conv::new("192.0.2.7", 40001, S4, 209, T0).session(&["a@example.com"], &[d]));
    frames.extend(
        Conv::new("192.0.2.7", 40002, S4, 209, T0 + 10 * SEC)
            .session(&["b@example.com"], &["Kok 1795000010 qp 1"]),
    );
    frames.extend(
        Conv::new("192.0.2.7", 40003, S4, 209, T0 + 20 * SEC)
            .session(&["c@example.com"], &["Zqueue full, try later"]),
    );
    frames.extend(
        Conv::new("192.0.2.8", 40010, S4, 209, T0 + 30 * SEC).session(
            &["d@example.com", "e@example.org", "joe@example.net"],
            &[
                "Kok 1795000030 qp 2",
                "Ztemporary failure",
                "Kok 1795000030 qp 2",
            ],
        ),
    );
    frames.extend(
        Conv::new("2001:db8::7", 50001, S6, 209, T0 + 40 * SEC)
            .session(&["f@example.com"], &["Zdisk full"]),
    );
    pcap_bytes(&frames)
}

/// The events, and the summary from stderr.
fn run(extra: &[&str]) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict-mix.pcap");
    std::fs::write(&path, capture()).unwrap();
    let mut args = vec![
        "replay",
        "--local-domain",
        "example.net",
        "--trusted-net",
        "203.0.113.0/24",
    ];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let (events, stderr, code) = run_qmwatch(&args, None);
    assert_eq!(code, 0, "{stderr}");
    (events, stderr)
}

fn relays(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.relay")
        .collect()
}

fn from<'a>(events: &'a [&'a Value], ip: &str) -> Vec<&'a Value> {
    events
        .iter()
        .copied()
        .filter(|e| e["source"]["ip"] == ip)
        .collect()
}

#[test]
fn each_attempt_gets_its_verdict_and_the_right_ids() {
    // Checksums verified: a bad one is dropped, not taken for offloading.
    // The IPv6 ones cover the whole 2001:db8:: addresses.
    let (events, summary) = run(&["--checksums", "verify"]);
    assert_eq!(summary_count(&summary, "tcp_bad_checksum_dropped"), 0);
    let txns = transaction_events(&events);
    assert_eq!(txns.len(), 5);
    let codes: Vec<Vec<&str>> = txns
        .iter()
        .map(|t| {
            t["qmwatch"]["replies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["code"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            vec!["D"],
            vec!["K"],
            vec!["Z"],
            vec!["K", "Z", "K"],
            vec!["Z"]
        ]
    );
    let r = relays(&events);
    let verdicts: Vec<(&str, &str)> = r
        .iter()
        .map(|e| {
            (
                e["source"]["ip"].as_str().unwrap(),
                e["qmwatch"]["relay"]["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("192.0.2.7", "refused"),
            ("192.0.2.7", "open_relay"),
            ("192.0.2.7", "deferred"),
            // K and Z for foreign recipients: the message went out.
            ("192.0.2.8", "open_relay"),
            ("2001:db8::7", "deferred"),
        ]
    );
    let b = from(&r, "192.0.2.8")[0];
    assert_eq!(b["event"]["severity"], 90);
    assert_eq!(b["qmwatch"]["relay"]["local_recipients"], 1);
    let foreign: Vec<&str> = b["qmwatch"]["relay"]["foreign_recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(foreign, ["K", "Z"]);
    let c = from(&r, "2001:db8::7")[0];
    assert_eq!(c["event"]["severity"], 40);
    assert_eq!(c["destination"]["ip"], S6);
    assert_eq!(c["network"]["type"], "ipv6");
    // Community IDs from the reference implementation. A's client has the
    // lower address and the higher port.
    let cid = |ip: &str| {
        let t = txns.iter().find(|t| t["source"]["ip"] == ip).unwrap();
        t["network"]["community_id"].as_str().unwrap().to_string()
    };
    assert_eq!(cid("192.0.2.7"), "1:Bj7QyKlPN3qYF8CMk994pCoJ3Z4=");
    assert_eq!(cid("192.0.2.8"), "1:05VpLfWoBlAF5Jgch4N9Rlg2N3M=");
    assert_eq!(cid("2001:db8::7"), "1:lqUD/F8ZJnFfORynv+9iy8AhvvA=");
    // Nanosecond packet times: each session starts 10 s after the one
    // before, half a millisecond past the second, and lasts 80 us.
    let seconds = ["06:40", "06:50", "07:00", "07:10", "07:20"];
    for (t, s) in txns.iter().zip(seconds) {
        let ts = t["@timestamp"].as_str().unwrap();
        let (head, frac) = ts.split_once('.').unwrap();
        assert_eq!(head, format!("2026-11-18T11:{s}"), "{ts}");
        let us: u64 = frac.trim_end_matches('Z').parse().unwrap();
        assert!((500..=580).contains(&us), "{ts}");
    }
}

#[test]
fn a_window_whose_verdicts_change_reports_the_worst() {
    let (events, _) = run(&["--alert-window", "60s"]);
    let r = relays(&events);
    assert_eq!(r.len(), 3, "{r:?}");
    let a = from(&r, "192.0.2.7");
    assert_eq!(a.len(), 1);
    let a = a[0];
    assert_eq!(a["qmwatch"]["aggregate"]["count"], 3);
    assert_eq!(
        a["qmwatch"]["aggregate"]["verdicts"],
        serde_json::json!({"refused": 1, "open_relay": 1, "deferred": 1})
    );
    assert_eq!(a["qmwatch"]["relay"]["verdict"], "open_relay");
    assert_eq!(a["event"]["action"], "open_relay");
    assert_eq!(a["event"]["severity"], 90);
    assert_eq!(a["rule"]["id"], "qmwatch-relay-open");
    assert_eq!(a["qmwatch"]["aggregate"]["first"]["source"]["port"], 40001);
    assert_eq!(a["qmwatch"]["aggregate"]["last"]["source"]["port"], 40003);
    assert_eq!(
        from(&r, "192.0.2.8")[0]["qmwatch"]["relay"]["verdict"],
        "open_relay"
    );
    assert_eq!(
        from(&r, "2001:db8::7")[0]["qmwatch"]["relay"]["verdict"],
        "deferred"
    );
}
