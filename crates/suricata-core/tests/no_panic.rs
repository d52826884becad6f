//! No panic path reaches the plugin's entry points: the functions behind
//! every FFI call of the Suricata plugin (probe, data, gap, end of
//! direction, flow end, transaction lookup and free, every rule buffer,
//! the EVE record, event ids) are driven with random and mutated inputs in
//! random chunks, in a deterministic loop (SplitMix64 from the testkit, so
//! a failure is reproducible from its seed).
//!
//! Inputs: well-formed QMTP packages, QMQP messages and reply streams
//! (then mutated: bytes flipped, inserted, dropped, cut), windows of the
//! fixture captures starting where the sniffer sees QMTP/QMQP (real
//! protocol bytes interleaved with packet headers), and plain noise.
//! `QMWATCH_NO_PANIC_ROUNDS` sets the rounds (default 20000).

use std::path::PathBuf;

use qmwatch_proto::sniff::{Sniffer, Verdict};
use qmwatch_suricata_core::eve::{log, log_as, StringWriter};
use qmwatch_suricata_core::flow::{TO_CLIENT, TO_SERVER};
use qmwatch_suricata_core::{events, probe, FlowState, Protocol};
use qmwatch_testkit::rng::Rng;

fn ns(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

fn address(rng: &mut Rng) -> Vec<u8> {
    let users = ["joe", "victim", "postmaster", "a", ""];
    let domains = ["example.net", "example.com", "example.org", ""];
    let u = users[rng.index(users.len())];
    let d = domains[rng.index(domains.len())];
    if d.is_empty() {
        u.as_bytes().to_vec()
    } else {
        format!("{u}@{d}").into_bytes()
    }
}

fn client_stream(rng: &mut Rng, protocol: Protocol) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let packages = 1 + rng.index(3);
    let mut rcpts_total = 0;
    for _ in 0..packages {
        let body_len = rng.index(300);
        let mut body: Vec<u8> = (0..body_len)
            .map(|_| b'a' + (rng.index(26) as u8))
            .collect();
        if rng.chance(0.3) {
            body.splice(
                0..0,
                b"Message-ID: <1234567890.666.nessus@example.org>\n"
                    .iter()
                    .copied(),
            );
        }
        let n = rng.index(5);
        rcpts_total += n;
        let mut rcpts = Vec::new();
        for _ in 0..n {
            rcpts.extend(ns(&address(rng)));
        }
        let sender = ns(&address(rng));
        match protocol {
            Protocol::Qmtp => {
                let mut msg = vec![if rng.chance(0.5) { b'\n' } else { b'\r' }];
                msg.extend(body);
                out.extend(ns(&msg));
                out.extend(sender);
                out.extend(ns(&rcpts));
            }
            Protocol::Qmqp => {
                let mut inner = ns(&body);
                inner.extend(sender);
                inner.extend(rcpts);
                out.extend(ns(&inner));
            }
        }
    }
    (out, rcpts_total.max(packages))
}

fn server_stream(rng: &mut Rng, replies: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..replies {
        let code = [b'K', b'Z', b'D', b'X'][rng.index(4)];
        let mut r = vec![code];
        r.extend_from_slice(b"ok 1795238265 qp 15824");
        r.truncate(1 + rng.index(23));
        out.extend(ns(&r));
    }
    out
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    for _ in 0..rng.index(4) {
        if v.is_empty() {
            break;
        }
        let i = rng.index(v.len());
        match rng.index(5) {
            0 => v[i] = rng.next_u32() as u8,
            1 => v[i] = [b':', b',', b'0', b'9', b'K', b'\n'][rng.index(6)],
            2 => v.insert(i, rng.next_u32() as u8),
            3 => {
                v.remove(i);
            }
            _ => v.truncate(i),
        }
    }
}

fn fixture_windows() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
        if ext != "pcap" && ext != "pcapng" {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let mut i = 0;
        while i < bytes.len() {
            let mut s = Sniffer::new();
            if let (Some(Verdict::Qmtp | Verdict::Qmqp | Verdict::Reply), _) = s.feed(&bytes[i..]) {
                let end = (i + 2000).min(bytes.len());
                out.push(bytes[i..end].to_vec());
                i += 200;
            }
            i += 1;
        }
    }
    out
}

/// Feeds both streams in random chunks, interleaved, with gaps and ends,
/// reading every buffer and the EVE record of every transaction made.
fn drive(rng: &mut Rng, protocol: Protocol, dp: u16, client: &[u8], server: &[u8]) -> u64 {
    let mut f = FlowState::new(protocol, 1024 + rng.index(60000) as u16, dp);
    let streams = [client, server];
    let mut pos = [0usize; 2];
    let mut ts = 0u64;
    while pos[0] < client.len() || pos[1] < server.len() {
        let dir = if pos[TO_SERVER] >= client.len() {
            TO_CLIENT
        } else if pos[TO_CLIENT] >= server.len() || rng.chance(0.5) {
            TO_SERVER
        } else {
            TO_CLIENT
        };
        let left = streams[dir].len() - pos[dir];
        let n = 1 + rng.index(left.min(64));
        ts += rng.below(1000);
        // What the plugin calls around each chunk: Suricata's offset of
        // the chunk (now and then far ahead, behind, or at the ends of the
        // range), and how much may wait.
        let at = match rng.index(20) {
            0 => u64::MAX,
            1 => 0,
            2 => rng.below(1 << 40),
            _ => pos[dir] as u64,
        };
        f.catch_up(dir, at, ts);
        let _ = f.body_ahead(dir);
        if rng.chance(0.05) {
            f.gap(dir, n as u64, ts);
        } else {
            f.data(dir, &streams[dir][pos[dir]..pos[dir] + n], ts);
        }
        pos[dir] += n;
        if rng.chance(0.02) {
            f.eof(dir, ts);
        }
        if rng.chance(0.02) {
            let count = f.tx_count();
            f.free_tx(rng.below(count + 2));
        }
    }
    match rng.index(3) {
        0 => {
            f.eof(TO_SERVER, ts);
            f.eof(TO_CLIENT, ts);
        }
        1 => {
            f.finish(ts);
        }
        _ => {}
    }
    // After the end, more of everything must still be harmless.
    f.data(TO_SERVER, b"12:\nx", ts);
    f.gap(TO_CLIENT, 7, ts);
    for id in 0..f.tx_count() + 2 {
        if let Some(tx) = f.tx(id) {
            let _ = tx.sender();
            let _ = tx.message_start();
            for i in 0..(tx.body.as_ref().map_or(0, |b| b.recipients.len()) as u32 + 2) {
                let _ = (
                    tx.rcpt(i),
                    tx.reply_code(i),
                    tx.reply_text(i),
                    tx.rcpt_reply(i),
                );
            }
            for i in 0..(tx.anomalies.len() as u32 + 2) {
                let _ = tx.anomaly(i);
            }
            let mut w = StringWriter::new();
            let _ = log(tx, &mut w);
            let mut w = StringWriter::new();
            let _ = log_as(tx, protocol.other().name(), &mut w);
            for (k, _) in &tx.anomalies {
                let id = events::id(*k);
                assert_eq!(events::kind(id), Some(*k));
                assert!(events::c_name(*k).is_some());
            }
        }
    }
    f.drain_txs().count() as u64
}

#[test]
fn the_entry_points_do_not_panic() {
    let rounds: u64 = std::env::var("QMWATCH_NO_PANIC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let windows = fixture_windows();
    assert!(!windows.is_empty(), "no fixture bytes found");
    let mut rng = Rng::new(0x5eed_0017);
    let mut txs = 0;
    for round in 0..rounds {
        let seed = rng.next_u64();
        let mut r = Rng::new(seed);
        let protocol = if r.chance(0.5) {
            Protocol::Qmtp
        } else {
            Protocol::Qmqp
        };
        let dp = [209u16, 628, 2209, 6628, 25][r.index(5)];
        let (mut client, mut server) = match r.index(3) {
            0 => {
                let (c, n) = client_stream(&mut r, protocol);
                (c, server_stream(&mut r, n))
            }
            1 => {
                let a = windows[r.index(windows.len())].clone();
                let b = windows[r.index(windows.len())].clone();
                (a, b)
            }
            _ => {
                let n = r.index(400);
                let m = r.index(400);
                (
                    (0..n).map(|_| r.next_u32() as u8).collect(),
                    (0..m).map(|_| r.next_u32() as u8).collect(),
                )
            }
        };
        mutate(&mut r, &mut client);
        mutate(&mut r, &mut server);
        for len in [0, 1, 3, 8, 32, client.len()] {
            let c = &client[..len.min(client.len())];
            let s = &server[..len.min(server.len())];
            let _ = (probe(c, true, dp), probe(s, false, dp));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drive(&mut r, protocol, dp, &client, &server)
        }));
        match result {
            Ok(n) => txs += n,
            Err(_) => panic!("round {round}: panic with seed {seed:#x}"),
        }
    }
    // The inputs reach the transaction code, not only the sniffer.
    assert!(
        txs > rounds / 10,
        "only {txs} transactions in {rounds} rounds"
    );
}
