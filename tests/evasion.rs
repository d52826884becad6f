//! Evasion: the classic ways to blind a passive sensor (Ptacek & Newsham,
//! "Insertion, Evasion, and Denial of Service", 1998), applied to every real
//! fixture. Each test rewrites the TCP connections of every capture in
//! `fixtures/` (pcapng and Linux-cooked ones are converted to Ethernet by
//! `common::pcapio`), writes the variant as a classic pcap in a temporary
//! directory, runs the real binary with the labels' policy, and requires the
//! SAME transactions (senders, recipients, reply codes and texts, in order),
//! the same relay verdicts and services as the clean capture — plus, where
//! the bytes are ambiguous on purpose, an anomaly that names the trick.
//!
//! Set `QMWATCH_KEEP_VARIANTS=/some/dir` to keep the generated captures.
//!
//! Every rewritten frame gets correct IP and TCP checksums (the fixtures,
//! taken on loopback, have offloaded ones), so the default `--checksums
//! auto` verifies every direction of these variants.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::pcapio::*;
use common::*;
use serde_json::Value;

/// A fixture, parsed.
struct Fx {
    name: String,
    labels: Value,
    pkts: Vec<Pkt>,
    conns: Vec<Conn>,
    conn_of: Vec<Option<usize>>,
    /// Relay verdicts qmwatch reports on the clean capture.
    clean_relays: Relays,
}

impl Fx {
    fn negative(&self) -> bool {
        self.labels["services"].as_array().unwrap().is_empty()
    }
    /// The labelled protocol of a connection ("qmtp", "qmqp", "none").
    fn protocol(&self, c: &Conn) -> String {
        let (cl, sv) = (Conn::label_name(c.client), Conn::label_name(c.server));
        self.labels["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["client"] == cl.as_str() && s["server"] == sv.as_str())
            .unwrap_or_else(|| panic!("{}: connection {cl} -> {sv} not labelled", self.name))
            ["protocol"]
            .as_str()
            .unwrap()
            .to_string()
    }
    /// (client, server) of each labelled QMTP/QMQP session.
    fn qm_sessions(&self) -> Vec<(String, String)> {
        self.labels["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["protocol"] != "none")
            .map(|s| {
                (
                    s["client"].as_str().unwrap().to_string(),
                    s["server"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// (client, server) -> relay verdicts in transaction order, each with its
/// foreign recipients and their codes.
type Relays = BTreeMap<(String, String), Vec<(String, Vec<(String, Value)>)>>;

fn relays(events: &[Value]) -> Relays {
    let mut v: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.relay")
        .collect();
    v.sort_by_key(|e| e["qmwatch"]["relay"]["transaction_index"].as_u64());
    let mut m = Relays::new();
    for e in v {
        let r = &e["qmwatch"]["relay"];
        let foreign = r["foreign_recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["recipient"].as_str().unwrap().to_string(),
                    f["code"].clone(),
                )
            })
            .collect();
        m.entry(session_key(e))
            .or_default()
            .push((r["verdict"].as_str().unwrap().to_string(), foreign));
    }
    m
}

fn args_for(labels: &Value) -> Vec<String> {
    let mut a = vec!["replay".to_string()];
    a.extend(policy_args(labels));
    a
}

fn all_fixtures() -> &'static [Fx] {
    static FX: OnceLock<Vec<Fx>> = OnceLock::new();
    FX.get_or_init(|| {
        captures()
            .into_iter()
            .map(|path| {
                let labels = labels(&path);
                let frames = read_capture(&path);
                let pkts: Vec<Pkt> = frames.iter().map(parse).collect();
                let (conns, conn_of) = connections(&pkts);
                let mut args = args_for(&labels);
                args.push("--quiet".into());
                args.push(path.to_str().unwrap().into());
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let (events, stderr, code) = run_qmwatch(&a, None);
                assert_eq!(code, 0, "{path:?}: {stderr}");
                Fx {
                    name: path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .split('.')
                        .next()
                        .unwrap()
                        .to_string(),
                    labels,
                    pkts,
                    conns,
                    conn_of,
                    clean_relays: relays(&events),
                }
            })
            .collect()
    })
}

/// Writes `frames` as a pcap and runs qmwatch on it (policy from the labels,
/// then `extra`). Returns the events and the summary.
fn run(fx: &Fx, variant: &str, frames: &[Frame], extra: &[&str]) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}-{variant}.pcap", fx.name));
    write_pcap(&path, frames);
    if let Ok(keep) = std::env::var("QMWATCH_KEEP_VARIANTS") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&path, keep.join(path.file_name().unwrap())).unwrap();
    }
    let mut args = args_for(&fx.labels);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(path.to_str().unwrap().into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (events, stderr, code) = run_qmwatch(&a, None);
    assert_eq!(code, 0, "{}/{variant}: exit {code}: {stderr}", fx.name);
    (events, stderr)
}

/// What a variant must produce.
struct Expect<'a> {
    /// The transactions; the labels' when `None`.
    txns: Option<Txns>,
    /// Anomaly kinds allowed at all.
    allowed: &'a [&'a str],
    /// Every labelled QMTP/QMQP session must raise at least one of these.
    required: &'a [&'a str],
    /// Compare relay verdicts with the clean capture's.
    relays: bool,
}

impl Expect<'static> {
    /// Same findings as the clean capture, which has no anomaly.
    fn clean() -> Self {
        Expect {
            txns: None,
            allowed: &[],
            required: &[],
            relays: true,
        }
    }
    /// Same findings, and every session names the trick.
    fn trick(kinds: &'static [&'static str]) -> Self {
        Expect {
            txns: None,
            allowed: kinds,
            required: kinds,
            relays: true,
        }
    }
}

fn check(fx: &Fx, variant: &str, events: &[Value], exp: &Expect<'_>) -> Result<(), String> {
    let name = format!("{}/{variant}", fx.name);
    let mut errs = Vec::new();
    if fx.negative() && !events.is_empty() {
        errs.push(format!(
            "{name}: negative capture produced events: {}",
            events
                .iter()
                .map(|e| e["message"].to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let expected = exp
        .txns
        .clone()
        .unwrap_or_else(|| label_transactions(&fx.labels));
    let ours = our_transactions(events);
    if ours != expected {
        errs.push(format!(
            "{name}: transactions differ from the labels:\n{}",
            txn_diff(&ours, &expected)
        ));
    }
    if exp.relays {
        let r = relays(events);
        if r != fx.clean_relays {
            errs.push(format!(
                "{name}: relay verdicts differ from the clean capture's: got {r:?}, clean {:?}",
                fx.clean_relays
            ));
        }
    }
    // Services: every required one, nothing outside the labels.
    let services = fx.labels["services"].as_array().unwrap();
    let reported: BTreeSet<(String, u64, String)> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.service")
        .map(|e| {
            (
                e["destination"]["ip"].as_str().unwrap().to_string(),
                e["destination"]["port"].as_u64().unwrap(),
                e["network"]["protocol"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for s in services {
        let key = (
            s["ip"].as_str().unwrap().to_string(),
            s["port"].as_u64().unwrap(),
            s["protocol"].as_str().unwrap().to_string(),
        );
        if s["detect"] == "required" && !reported.contains(&key) {
            errs.push(format!("{name}: service {key:?} not reported"));
        }
    }
    for r in &reported {
        if !services
            .iter()
            .any(|s| s["ip"] == r.0.as_str() && s["port"] == r.1 && s["protocol"] == r.2.as_str())
        {
            errs.push(format!("{name}: service not in the labels: {r:?}"));
        }
    }
    // Anomalies: only the trick's, and every session names it.
    let anomalies: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.anomaly")
        .collect();
    for a in &anomalies {
        let kind = a["qmwatch"]["anomaly"]["kind"].as_str().unwrap_or("");
        if !exp.allowed.contains(&kind) {
            errs.push(format!(
                "{name}: unexpected anomaly {kind} in {:?}: {}",
                session_key(a),
                a["message"]
            ));
        }
    }
    if !exp.required.is_empty() {
        for s in fx.qm_sessions() {
            let named = anomalies.iter().any(|a| {
                session_key(a) == s
                    && exp
                        .required
                        .contains(&a["qmwatch"]["anomaly"]["kind"].as_str().unwrap_or(""))
            });
            if !named {
                errs.push(format!(
                    "{name}: session {} -> {} raised none of {:?}",
                    s.0, s.1, exp.required
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

/// The summary counter `name` must be at least `min` (proves the trick
/// reached qmwatch, so that a variant cannot silently be a no-op).
fn counted(fx: &Fx, variant: &str, stderr: &str, name: &str, min: u64) -> Result<(), String> {
    let n = summary_count(stderr, name);
    if n < min {
        return Err(format!(
            "{}/{variant}: summary counter {name} is {n}, expected >= {min}:\n{stderr}",
            fx.name
        ));
    }
    Ok(())
}

/// Payload bytes of all TCP segments of the fixture.
fn payload_bytes(fx: &Fx) -> u64 {
    fx.pkts
        .iter()
        .map(|p| match p {
            Pkt::Tcp(t) => t.payload.len() as u64,
            Pkt::Other(_) => 0,
        })
        .sum()
}

/// Runs `make` on every fixture, checks, and reports all failures at once.
fn each_fixture(
    variant: &str,
    extra: &[&str],
    mut make: impl FnMut(&Fx) -> Vec<Frame>,
    mut expect: impl FnMut(&Fx, &[Value], &str) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for fx in all_fixtures() {
        let frames = make(fx);
        let (events, stderr) = run(fx, variant, &frames, extra);
        if let Err(e) = expect(fx, &events, &stderr) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Rebuilds every packet through `f` (TCP) or as it was (anything else).
fn map_tcp(fx: &Fx, mut f: impl FnMut(&Conn, usize, &Tcp, &mut Vec<Frame>)) -> Vec<Frame> {
    let mut out = Vec::new();
    for (i, p) in fx.pkts.iter().enumerate() {
        match p {
            Pkt::Other(fr) => out.push(fr.clone()),
            Pkt::Tcp(t) => {
                let c = &fx.conns[fx.conn_of[i].unwrap()];
                f(c, c.dir(t), t, &mut out);
            }
        }
    }
    out
}

/// The same capture, every frame rebuilt (valid checksums).
fn rebuilt(fx: &Fx) -> Vec<Frame> {
    map_tcp(fx, |_, _, t, out| out.push(frame(t)))
}

fn xor(b: &[u8]) -> Vec<u8> {
    b.iter().map(|x| x ^ 0x55).collect()
}

/// Random cut points inside `len`, pieces of `lo..=hi` bytes.
fn random_cuts(rng: &mut Rng, len: usize, lo: usize, hi: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut o = rng.range(lo as u64, hi as u64) as usize;
    while o < len {
        v.push(o);
        o += rng.range(lo as u64, hi as u64) as usize;
    }
    v
}

// ---------------------------------------------------------------------------
// Re-segmentation, order, duplication.

#[test]
fn rebuilt_capture_is_still_clean() {
    // The baseline for everything below: the rewriter itself changes nothing.
    each_fixture("rebuilt", &[], rebuilt, |fx, ev, _| {
        check(fx, "rebuilt", ev, &Expect::clean())
    });
}

#[test]
fn one_byte_segments() {
    each_fixture(
        "one-byte",
        &[],
        |fx| {
            map_tcp(fx, |_, _, t, out| {
                let cuts: Vec<usize> = (1..t.payload.len()).collect();
                out.extend(t.split_at(&cuts).iter().map(frame));
            })
        },
        |fx, ev, stderr| {
            check(fx, "one-byte", ev, &Expect::clean())?;
            counted(fx, "one-byte", stderr, "tcp segments", payload_bytes(fx))
        },
    );
}

#[test]
fn random_segment_sizes() {
    for seed in [1u64, 2, 3] {
        let variant = format!("random-sizes-{seed}");
        let mut rng = Rng::new(seed);
        each_fixture(
            &variant,
            &[],
            |fx| {
                map_tcp(fx, |_, _, t, out| {
                    let hi = rng.range(1, 97) as usize;
                    let cuts = random_cuts(&mut rng, t.payload.len(), 1, hi);
                    out.extend(t.split_at(&cuts).iter().map(frame));
                })
            },
            |fx, ev, _| check(fx, &variant, ev, &Expect::clean()),
        );
    }
}

/// Every run of client data (with the pure ACKs among it) is cut into
/// 8..48-byte segments sent last first; the ACKs follow the run. For
/// pipelined sessions a run is the whole client package stream; for
/// sequential ones, one package.
fn reverse_client_runs(fx: &Fx, rng: &mut Rng) -> Vec<Frame> {
    let n = fx.pkts.len();
    let mut slots: Vec<Vec<Frame>> = vec![Vec::new(); n];
    for (i, p) in fx.pkts.iter().enumerate() {
        match p {
            Pkt::Other(f) => slots[i].push(f.clone()),
            Pkt::Tcp(t) => slots[i].push(frame(t)),
        }
    }
    for c in &fx.conns {
        let mut run: Vec<usize> = Vec::new();
        let mut flush = |run: &mut Vec<usize>, slots: &mut Vec<Vec<Frame>>| {
            let data: Vec<&Tcp> = run
                .iter()
                .filter_map(|&i| match &fx.pkts[i] {
                    Pkt::Tcp(t) if !t.payload.is_empty() => Some(t),
                    _ => None,
                })
                .collect();
            if data.is_empty() {
                run.clear();
                return;
            }
            let mut pieces: Vec<Tcp> = Vec::new();
            for t in data {
                let cuts = random_cuts(rng, t.payload.len(), 8, 48);
                pieces.extend(t.split_at(&cuts));
            }
            pieces.reverse();
            let last = *run.last().unwrap();
            // Sent where the run ended, at that time (packet time stays
            // monotonic: only the order of the bytes is the trick).
            let Pkt::Tcp(lt) = &fx.pkts[last] else {
                unreachable!()
            };
            for p in &mut pieces {
                p.ts_ns = lt.ts_ns;
            }
            let mut out: Vec<Frame> = pieces.iter().map(frame).collect();
            for &i in run.iter() {
                if let Pkt::Tcp(t) = &fx.pkts[i] {
                    if t.payload.is_empty() {
                        out.push(frame(t));
                    }
                }
                slots[i].clear();
            }
            slots[last] = out;
            run.clear();
        };
        for &i in &c.pkts {
            let Pkt::Tcp(t) = &fx.pkts[i] else { continue };
            let client_data =
                c.dir(t) == 0 && !t.payload.is_empty() && !t.has(TCP_SYN) && !t.has(TCP_RST);
            if client_data || (t.pure_ack() && !run.is_empty()) {
                run.push(i);
            } else {
                flush(&mut run, &mut slots);
            }
        }
        flush(&mut run, &mut slots);
    }
    slots.into_iter().flatten().collect()
}

#[test]
fn client_package_stream_in_reverse_segment_order() {
    let mut rng = Rng::new(7);
    each_fixture(
        "reverse",
        &[],
        |fx| reverse_client_runs(fx, &mut rng),
        |fx, ev, stderr| {
            check(fx, "reverse", ev, &Expect::clean())?;
            // Out-of-order data was held (not on the negative capture: its
            // flows are rejected at the server's first bytes).
            counted(
                fx,
                "reverse",
                stderr,
                "reassembly held bytes peak",
                u64::from(!fx.negative()),
            )
        },
    );
}

#[test]
fn every_segment_duplicated() {
    each_fixture(
        "duplicated",
        &[],
        |fx| {
            map_tcp(fx, |_, _, t, out| {
                out.push(frame(t));
                out.push(frame(t));
            })
        },
        |fx, ev, stderr| {
            check(fx, "duplicated", ev, &Expect::clean())?;
            // Rejected (not QMTP/QMQP) flows are not reassembled.
            counted(
                fx,
                "duplicated",
                stderr,
                "tcp_overlap_consistent",
                u64::from(!fx.negative()),
            )
        },
    );
}

// ---------------------------------------------------------------------------
// Overlaps.

#[test]
fn overlapping_segments_that_agree() {
    // Pieces of 4..40 bytes, each reaching back 0..8 bytes into the one
    // before, every other pair swapped (so overlaps meet held data too),
    // and half the segments sent again whole at the end.
    let mut rng = Rng::new(11);
    each_fixture(
        "overlap-agree",
        &[],
        |fx| {
            map_tcp(fx, |_, _, t, out| {
                let len = t.payload.len();
                if len < 2 {
                    out.push(frame(t));
                    return;
                }
                let cuts = random_cuts(&mut rng, len, 4, 40);
                let mut bounds = vec![0];
                bounds.extend(cuts);
                bounds.push(len);
                let mut pieces: Vec<Tcp> = bounds
                    .windows(2)
                    .map(|w| {
                        let back = (rng.range(0, 8) as usize).min(w[0]);
                        t.piece(w[0] - back, w[1])
                    })
                    .collect();
                for k in (0..pieces.len().saturating_sub(1)).step_by(4) {
                    pieces.swap(k, k + 1);
                }
                out.extend(pieces.iter().map(frame));
                if rng.range(0, 1) == 1 {
                    out.push(frame(t));
                }
            })
        },
        |fx, ev, stderr| {
            check(fx, "overlap-agree", ev, &Expect::clean())?;
            counted(
                fx,
                "overlap-agree",
                stderr,
                "tcp_overlap_consistent",
                u64::from(!fx.negative()),
            )
        },
    );
}

#[test]
fn overlapping_segments_that_differ_real_copy_first() {
    // After each data segment (both directions), a segment over its middle
    // half with different bytes. First data wins: the real bytes are kept,
    // and the conflict is reported.
    each_fixture(
        "overlap-conflict-real-first",
        &[],
        |fx| {
            map_tcp(fx, |_, _, t, out| {
                out.push(frame(t));
                let len = t.payload.len();
                if len >= 2 {
                    let (a, b) = (len / 4, (3 * len / 4).max(len / 4 + 1));
                    let mut bogus = t.piece(a, b);
                    bogus.payload = xor(&bogus.payload);
                    out.push(frame(&bogus));
                }
            })
        },
        |fx, ev, stderr| {
            check(
                fx,
                "overlap-conflict-real-first",
                ev,
                &Expect::trick(&["tcp_overlap_conflict"]),
            )?;
            counted(
                fx,
                "overlap-conflict-real-first",
                stderr,
                "tcp_overlap_conflicting",
                u64::from(!fx.negative()),
            )
        },
    );
}

#[test]
fn overlapping_segments_that_differ_bogus_copy_first_inside_a_body() {
    // Before the segment that carries bytes 8..24 of each message body, a
    // segment with other bytes for that range. First data wins, so the
    // bogus bytes are what is reassembled — but they sit inside a message
    // body, which is skipped, so the transactions are the labelled ones;
    // the real segment's disagreement is reported.
    each_fixture(
        "overlap-conflict-bogus-first",
        &[],
        |fx| {
            let mut before: BTreeMap<usize, Vec<Tcp>> = BTreeMap::new();
            for c in &fx.conns {
                let proto = fx.protocol(c);
                if proto == "none" {
                    continue;
                }
                for r in requests(&c.streams[0], proto == "qmqp") {
                    if r.body.len() < 24 {
                        continue;
                    }
                    let x = r.body.start + 8;
                    let (i, t) = c
                        .pkts
                        .iter()
                        .find_map(|&i| match &fx.pkts[i] {
                            Pkt::Tcp(t)
                                if c.dir(t) == 0
                                    && c.offset(t) <= x
                                    && x < c.offset(t) + t.payload.len() =>
                            {
                                Some((i, t))
                            }
                            _ => None,
                        })
                        .unwrap();
                    let o = c.offset(t);
                    let x = x.max(o + 1);
                    let y = (x + 16).min(r.body.end).min(o + t.payload.len());
                    assert!(x < y);
                    let mut bogus = t.piece(x - o, y - o);
                    bogus.payload = xor(&bogus.payload);
                    bogus.flags &= !TCP_FIN;
                    before.entry(i).or_default().push(bogus);
                }
            }
            let mut out = Vec::new();
            for (i, p) in fx.pkts.iter().enumerate() {
                for b in before.get(&i).into_iter().flatten() {
                    out.push(frame(b));
                }
                match p {
                    Pkt::Tcp(t) => out.push(frame(t)),
                    Pkt::Other(f) => out.push(f.clone()),
                }
            }
            out
        },
        |fx, ev, stderr| {
            check(
                fx,
                "overlap-conflict-bogus-first",
                ev,
                &Expect::trick(&["tcp_overlap_conflict"]),
            )?;
            counted(
                fx,
                "overlap-conflict-bogus-first",
                stderr,
                "tcp_overlap_conflicting",
                u64::from(!fx.negative()),
            )
        },
    );
}

#[test]
fn retransmission_with_different_content() {
    // Every data segment (both directions) is followed by a retransmission
    // of exactly its sequence range with other bytes: the first copy is
    // kept and the conflict reported.
    each_fixture(
        "retransmit-conflict",
        &[],
        |fx| {
            map_tcp(fx, |_, _, t, out| {
                out.push(frame(t));
                if !t.payload.is_empty() {
                    let mut r = t.clone();
                    r.payload = xor(&t.payload);
                    r.ts_ns += 1000;
                    out.push(frame(&r));
                }
            })
        },
        |fx, ev, stderr| {
            check(
                fx,
                "retransmit-conflict",
                ev,
                &Expect::trick(&["tcp_overlap_conflict"]),
            )?;
            counted(
                fx,
                "retransmit-conflict",
                stderr,
                "tcp_overlap_conflicting",
                u64::from(!fx.negative()),
            )
        },
    );
}

// ---------------------------------------------------------------------------
// IP fragments.

/// Data segments re-cut to at most 200 payload bytes (so that 8-byte
/// fragments stay within the defragmenter's 64 fragments per datagram),
/// each sent as IP fragments made by `frags`.
fn fragmented(fx: &Fx, mut frags: impl FnMut(&[u8]) -> Vec<Frag>) -> Vec<Frame> {
    let mut id = 0x4000u32;
    map_tcp(fx, |_, _, t, out| {
        if t.payload.is_empty() {
            out.push(frame(t));
            return;
        }
        let cuts: Vec<usize> = (200..t.payload.len()).step_by(200).collect();
        for piece in t.split_at(&cuts) {
            let l4 = tcp_bytes(&piece);
            id += 1;
            out.extend(fragment_frames(&piece, &frags(&l4), id));
        }
    })
}

#[test]
fn tiny_ip_fragments_out_of_order_with_consistent_overlaps() {
    // 8-byte fragments (the first one holds only part of the TCP header),
    // plus a 16-byte fragment over every fourth pair, all shuffled. IPv4 on
    // the IPv4 fixtures; IPv6 with a Fragment header on qmtp-ipv6.
    let mut rng = Rng::new(23);
    each_fixture(
        "ip-fragments",
        &[],
        |fx| {
            fragmented(fx, |l4| {
                let mut f = cut_fragments(l4, 8);
                let n = f.len();
                for k in (0..n.saturating_sub(2)).step_by(4) {
                    let o = f[k].offset;
                    f.push(Frag {
                        offset: o,
                        data: l4[o..o + 16].to_vec(),
                        more: true,
                    });
                }
                rng.shuffle(&mut f);
                f
            })
        },
        |fx, ev, stderr| {
            // Reassembled (same findings), and named: 8-byte fragments are
            // an evasion signature.
            check(
                fx,
                "ip-fragments",
                ev,
                &Expect::trick(&["ip_tiny_fragments"]),
            )?;
            counted(fx, "ip-fragments", stderr, "ip_fragment_held", 1)
        },
    );
}

#[test]
fn ip_fragments_reversed() {
    each_fixture(
        "ip-fragments-reversed",
        &[],
        |fx| {
            fragmented(fx, |l4| {
                let mut f = cut_fragments(l4, 24);
                f.reverse();
                f
            })
        },
        |fx, ev, stderr| {
            check(
                fx,
                "ip-fragments-reversed",
                ev,
                &Expect::trick(&["ip_tiny_fragments"]),
            )?;
            counted(fx, "ip-fragments-reversed", stderr, "ip_fragment_held", 1)
        },
    );
}

#[test]
fn ip_fragments_overlapping_with_different_bytes() {
    // 16-byte fragments in order; the second one is followed by a copy
    // with other bytes. The defragmenter keeps the first bytes (the real
    // ones here) and counts the conflict.
    each_fixture(
        "ip-fragments-conflict",
        &[],
        |fx| {
            fragmented(fx, |l4| {
                let mut v = Vec::new();
                let f = cut_fragments(l4, 16);
                let n = f.len();
                for (k, fr) in f.into_iter().enumerate() {
                    let bogus = (k == 1 && n > 2).then(|| Frag {
                        offset: fr.offset,
                        data: xor(&fr.data),
                        more: fr.more,
                    });
                    v.push(fr);
                    v.extend(bogus);
                }
                v
            })
        },
        |fx, ev, stderr| {
            check(
                fx,
                "ip-fragments-conflict",
                ev,
                &Expect {
                    allowed: &["ip_fragment_overlap_conflict", "ip_tiny_fragments"],
                    ..Expect::trick(&["ip_fragment_overlap_conflict"])
                },
            )?;
            counted(
                fx,
                "ip-fragments-conflict",
                stderr,
                "ip_fragment_overlap_conflict",
                1,
            )
        },
    );
}

// ---------------------------------------------------------------------------
// Insertion: segments an endpoint would drop.

/// Valid checksums everywhere, and before every data segment (both
/// directions) an insertion with the same sequence range, other bytes and
/// a bad checksum. Accepted, it would win (first data wins) and destroy
/// the session.
fn bad_checksum_insertions(fx: &Fx) -> Vec<Frame> {
    map_tcp(fx, |_, _, t, out| {
        if !t.payload.is_empty() {
            let mut bogus = t.clone();
            bogus.payload = xor(&t.payload);
            bogus.bad_checksum = true;
            out.push(frame(&bogus));
        }
        out.push(frame(t));
    })
}

#[test]
fn bad_checksum_insertions_with_checksums_verify() {
    each_fixture(
        "badsum-verify",
        &["--checksums", "verify"],
        bad_checksum_insertions,
        |fx, ev, stderr| {
            check(
                fx,
                "badsum-verify",
                ev,
                &Expect::trick(&["tcp_bad_checksum"]),
            )?;
            if !fx.negative() && summary_count(stderr, "tcp_bad_checksum_dropped") == 0 {
                return Err(format!(
                    "{}: no tcp_bad_checksum_dropped in {stderr}",
                    fx.name
                ));
            }
            Ok(())
        },
    );
}

#[test]
fn bad_checksum_insertions_with_checksums_auto() {
    // Each direction's first packet (SYN, SYN-ACK) has a valid checksum, so
    // auto mode verifies the direction and drops the insertions.
    each_fixture(
        "badsum-auto",
        &[],
        bad_checksum_insertions,
        |fx, ev, stderr| {
            check(fx, "badsum-auto", ev, &Expect::trick(&["tcp_bad_checksum"]))?;
            if summary_count(stderr, "directions_with_offloaded_checksums") != 0 {
                return Err(format!(
                    "{}: auto mode took valid checksums for offloaded: {stderr}",
                    fx.name
                ));
            }
            Ok(())
        },
    );
}

#[test]
fn segments_far_outside_the_window_are_ignored() {
    // After every data segment, two segments 1 GiB ahead and 1 GiB behind
    // carrying what looks like a QMTP package and a reply. An endpoint
    // drops them; so does qmwatch (counted as tcp_out_of_window).
    const FAKE_PKG: &[u8] = b"12:\nhello world,13:evil@example,20:16:x@evil.example.com,,";
    const FAKE_REPLY: &[u8] = b"9:Kbogus ok,";
    each_fixture(
        "out-of-window",
        &[],
        |fx| {
            map_tcp(fx, |_, d, t, out| {
                out.push(frame(t));
                if t.payload.is_empty() {
                    return;
                }
                for delta in [1u32 << 30, 3u32 << 30] {
                    let mut g = t.clone();
                    g.seq = t.seq.wrapping_add(delta);
                    g.flags = TCP_ACK | TCP_PSH;
                    g.payload = if d == 0 { FAKE_PKG } else { FAKE_REPLY }.to_vec();
                    out.push(frame(&g));
                }
            })
        },
        |fx, ev, stderr| {
            check(
                fx,
                "out-of-window",
                ev,
                &Expect {
                    txns: None,
                    allowed: &["tcp_out_of_window"],
                    required: &[],
                    relays: true,
                },
            )?;
            if !fx.negative() && summary_count(stderr, "tcp_out_of_window") == 0 {
                return Err(format!(
                    "{}: tcp_out_of_window not counted: {stderr}",
                    fx.name
                ));
            }
            Ok(())
        },
    );
}

#[test]
fn rst_with_a_wrong_sequence_number_is_ignored() {
    // After the first data segment of each side, a RST from that side whose
    // sequence number is 1 MiB past (client) or before (server) its stream.
    each_fixture(
        "bad-rst",
        &[],
        |fx| {
            let mut done: BTreeSet<(usize, usize)> = BTreeSet::new();
            let mut out = Vec::new();
            for (i, p) in fx.pkts.iter().enumerate() {
                let t = match p {
                    Pkt::Tcp(t) => t,
                    Pkt::Other(f) => {
                        out.push(f.clone());
                        continue;
                    }
                };
                out.push(frame(t));
                let c = fx.conn_of[i].unwrap();
                let d = fx.conns[c].dir(t);
                if !t.payload.is_empty() && done.insert((c, d)) {
                    let mut r = t.clone();
                    let next = t.seq.wrapping_add(t.payload.len() as u32);
                    r.seq = if d == 0 {
                        next.wrapping_add(1 << 20)
                    } else {
                        t.seq.wrapping_sub(1 << 20)
                    };
                    r.flags = TCP_RST | TCP_ACK;
                    r.payload.clear();
                    out.push(frame(&r));
                }
            }
            out
        },
        |fx, ev, _| {
            check(
                fx,
                "bad-rst",
                ev,
                &Expect::trick(&["tcp_rst_out_of_window"]),
            )
        },
    );
}

// ---------------------------------------------------------------------------
// Sessions picked up in the middle.

/// Drops, in every multi-package QMTP session, the handshake and everything
/// before the second package's first byte (cutting the segment that holds
/// it). Returns the frames and the sessions cut.
fn picked_up_after_first_package(fx: &Fx) -> (Vec<Frame>, Vec<(String, String)>) {
    let mut drop: BTreeSet<usize> = BTreeSet::new();
    let mut trim: BTreeMap<usize, usize> = BTreeMap::new();
    let mut cut = Vec::new();
    for c in &fx.conns {
        if fx.protocol(c) != "qmtp" {
            continue;
        }
        let reqs = requests(&c.streams[0], false);
        if reqs.len() < 2 {
            continue;
        }
        let p2 = reqs[1].start;
        let (pos, first) = c
            .pkts
            .iter()
            .enumerate()
            .find_map(|(k, &i)| match &fx.pkts[i] {
                Pkt::Tcp(t)
                    if c.dir(t) == 0 && c.offset(t) <= p2 && p2 < c.offset(t) + t.payload.len() =>
                {
                    Some((k, i))
                }
                _ => None,
            })
            .unwrap();
        drop.extend(c.pkts[..pos].iter().copied());
        let Pkt::Tcp(t) = &fx.pkts[first] else {
            unreachable!()
        };
        trim.insert(first, p2 - c.offset(t));
        cut.push((Conn::label_name(c.client), Conn::label_name(c.server)));
    }
    let mut out = Vec::new();
    for (i, p) in fx.pkts.iter().enumerate() {
        if drop.contains(&i) {
            continue;
        }
        match p {
            Pkt::Other(f) => out.push(f.clone()),
            Pkt::Tcp(t) => match trim.get(&i) {
                Some(&k) => out.push(frame(&t.piece(k, t.payload.len()))),
                None => out.push(frame(t)),
            },
        }
    }
    (out, cut)
}

/// Runs the mid-stream variant of every fixture that has a multi-package
/// QMTP session. `judge(fx, session, cut, sequential, got, expected)`
/// returns whether one session's transactions are acceptable.
fn midstream_check(
    variant: &str,
    judge: impl Fn(bool, bool, Option<&Vec<Txn>>, &Vec<Txn>) -> bool,
    only_pipelined: bool,
) {
    let mut failures = Vec::new();
    for fx in all_fixtures() {
        let (frames, cut) = picked_up_after_first_package(fx);
        if cut.is_empty() {
            continue;
        }
        let (events, _) = run(fx, variant, &frames, &[]);
        let mut expected = label_transactions(&fx.labels);
        for k in &cut {
            expected.get_mut(k).unwrap().remove(0);
        }
        let ours = our_transactions(&events);
        let sequential: BTreeSet<(String, String)> = fx.labels["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["pipelined"] == false)
            .map(|s| {
                (
                    s["client"].as_str().unwrap().to_string(),
                    s["server"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for (k, exp) in &expected {
            let (is_cut, is_seq) = (cut.contains(k), sequential.contains(k));
            if only_pipelined != (is_cut && !is_seq) {
                continue;
            }
            let got = ours.get(k);
            if !judge(is_cut, is_seq, got, exp) {
                failures.push(format!(
                    "{}/{variant}{}: session {} -> {}\n  got      {}\n  expected {}",
                    fx.name,
                    if !is_cut {
                        " (session not cut)"
                    } else if is_seq {
                        " (sequential, cut after package 1 and its reply)"
                    } else {
                        " (pipelined, cut after package 1; replies may be null, never another package's)"
                    },
                    k.0,
                    k.1,
                    serde_json::to_string(&got).unwrap(),
                    serde_json::to_string(exp).unwrap()
                ));
            }
        }
        for k in ours.keys() {
            if !expected.contains_key(k) {
                failures.push(format!("{}/{variant}: unexpected session {k:?}", fx.name));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// One transaction as compared: sender, then (recipient, code, text).
type Txn = (Value, Vec<(String, Value, Value)>);

#[test]
fn sessions_picked_up_after_the_first_package() {
    // Multi-package QMTP sessions with the handshake and everything before
    // the second package's first byte dropped (the segment holding it is
    // cut there): qmtp-pipelined 1 (3 pipelined packages), 2 (2 pipelined),
    // 3 (3 sequential: each reply awaited), 4 (4 pipelined, half-close);
    // qmtp-open-relay-2209 5 (2 pipelined); qmtp-ipv6 2 (2 pipelined). The
    // other sessions of each file are untouched.
    //
    // Here: the sequential session (the reply to package 1 came before
    // package 2, so it is not in the capture) must report packages 2.. with
    // exactly their labelled replies; the untouched sessions their labels.
    // The pipelined sessions are judged by the next test.
    midstream_check("midstream", |_, _, got, exp| got == Some(exp), false);
}

/// Pipelined sessions picked up after the first package: the client sent
/// every package before any reply, so the server's replies to the dropped
/// package come AFTER the capture starts, first in the same reply stream,
/// and their ACK numbers already cover every package — neither position
/// nor ACK says which package they answer; only counting does (replies
/// seen minus recipients seen, known once the server's replies end).
///
/// Expected: senders and recipients of packages 2.. as labelled, each with
/// its labelled reply — never the reply of another package (which, on
/// qmtp-pipelined 127.66.0.5:38419 -> :8025, would turn a refused relay
/// attempt into a false "Open relay" alert). qmwatch holds a mid-stream QMTP
/// session's replies until the flow ends and drops the leading surplus.
#[test]
fn pipelined_sessions_picked_up_after_the_first_package_get_no_foreign_replies() {
    midstream_check(
        "midstream-pipelined",
        |_, _, got, exp| {
            got.is_some_and(|g| {
                g.len() == exp.len()
                    && g.iter().zip(exp).all(|((gs, gr), (es, er))| {
                        gs == es
                            && gr.len() == er.len()
                            && gr.iter().zip(er).all(|(a, b)| {
                                a.0 == b.0 && (a == b || (a.1.is_null() && a.2.is_null()))
                            })
                    })
            })
        },
        true,
    );
}

/// A TCP segment from `from` to `to` (valid checksums, TTL 64).
fn tcp_seg(
    ts_ns: u64,
    from: (IpAddr, u16),
    to: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Frame {
    frame(&Tcp {
        ts_ns,
        src: from.0,
        dst: to.0,
        ttl: 64,
        ip_id: 0,
        sport: from.1,
        dport: to.1,
        seq,
        ack,
        flags,
        window: 65_535,
        options: Vec::new(),
        payload: payload.to_vec(),
        bad_checksum: false,
        no_checksum: false,
    })
}

/// One TCP connection, handshake to teardown: the client sends
/// `request`, the server answers `answer` and closes first.
fn conversation(
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    ts0: u64,
    request: &[u8],
    answer: &[u8],
) -> Vec<Frame> {
    let (cs, ss) = (1_000u32, 50_000u32);
    let seg = |from_client: bool, i: u64, seq: u32, ack: u32, flags: u8, payload: &[u8]| {
        let (a, b) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        tcp_seg(ts0 + i * 1_000_000, a, b, seq, ack, flags, payload)
    };
    let (rq, an) = (request.len() as u32, answer.len() as u32);
    vec![
        seg(true, 0, cs, 0, TCP_SYN, b""),
        seg(false, 1, ss, cs + 1, TCP_SYN | TCP_ACK, b""),
        seg(true, 2, cs + 1, ss + 1, TCP_ACK, b""),
        seg(true, 3, cs + 1, ss + 1, TCP_ACK | TCP_PSH, request),
        seg(false, 4, ss + 1, cs + 1 + rq, TCP_ACK | TCP_PSH, answer),
        seg(false, 5, ss + 1 + an, cs + 1 + rq, TCP_ACK | TCP_FIN, b""),
        seg(true, 6, cs + 1 + rq, ss + 2 + an, TCP_ACK | TCP_FIN, b""),
        seg(false, 7, ss + 2 + an, cs + 2 + rq, TCP_ACK, b""),
    ]
}

/// A server's protocol is a property of the server: once 127.0.0.1:628 is
/// confirmed as QMQP (Postfix qmqpd), a QMTP-form scanner probe sent to it
/// and answered with qmqpd's one `D` reply netstring (which would also read
/// as a one-recipient QMTP reply) is another protocol spoken to that QMQP
/// server: the service is listed once, as QMQP, and no relay is judged
/// through QMTP.
#[test]
fn a_qmtp_probe_to_a_known_qmqp_server_is_read_as_qmqp() {
    let fx = all_fixtures()
        .iter()
        .find(|f| f.name == "qmqp-postfix-authorized")
        .unwrap();
    let mut frames = rebuilt(fx);
    let last = frames.iter().map(|f| f.ts_ns).max().unwrap();
    let mut probe = Vec::new();
    let body = b"\nFrom: nessus@example.org\nTo: postmaster@example.com\n\nNessus is probing this server.\n";
    probe.extend_from_slice(format!("{}:", body.len()).as_bytes());
    probe.extend_from_slice(body);
    probe.extend_from_slice(b",18:nessus@example.org,26:22:postmaster@example.com,,");
    let answer = b"59:Dnetstring format error while receiving QMQP packet header,";
    let scanner: IpAddr = "127.66.0.9".parse().unwrap();
    let server: IpAddr = "127.0.0.1".parse().unwrap();
    frames.extend(conversation(
        (scanner, 40_404),
        (server, 628),
        last + 1_000_000_000,
        &probe,
        answer,
    ));
    let (events, _) = run(fx, "qmtp-probe-to-qmqp", &frames, &[]);
    let services: Vec<(String, String)> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.service")
        .map(|e| {
            (
                endpoint(&e["destination"]["ip"], &e["destination"]["port"]),
                e["network"]["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        services,
        vec![("127.0.0.1:628".to_string(), "qmqp".to_string())],
        "{events:#?}"
    );
    let probe_key = ("127.66.0.9:40404".to_string(), "127.0.0.1:628".to_string());
    let qmtp_from_probe: Vec<&Value> = events
        .iter()
        .filter(|e| session_key(e) == probe_key && e["network"]["protocol"] == "qmtp")
        .collect();
    assert!(qmtp_from_probe.is_empty(), "{qmtp_from_probe:#?}");
    assert!(
        !events
            .iter()
            .any(|e| dataset(e) == "qmwatch.relay" && session_key(e) == probe_key),
        "a relay judged through the wrong protocol"
    );
    // The scanner's session is not silent: the wrong protocol is reported.
    assert!(
        events
            .iter()
            .any(|e| session_key(e) == probe_key && dataset(e) == "qmwatch.anomaly"),
        "{events:#?}"
    );
}

/// A ~300 KB QMTP package in 64-byte segments in random order (as
/// fragroute's `tcp_seg 64` and `order random` make them, over a wider
/// window), and its reply in 1-byte segments reversed: the body is skipped
/// by length, so out-of-order bytes inside it keep only their extent; the
/// transaction is reported whole, no cap reached.
#[test]
fn a_large_package_in_tiny_segments_in_random_order_loses_nothing() {
    let client: (IpAddr, u16) = ("192.0.2.44".parse().unwrap(), 50_123);
    let server: (IpAddr, u16) = ("198.51.100.25".parse().unwrap(), 209);
    let mut body = b"\n".to_vec();
    while body.len() < 300_000 {
        body.extend_from_slice(b"Subject: a long message from the test suite\n");
    }
    let mut request = format!("{}:", body.len()).into_bytes();
    request.extend_from_slice(&body);
    request.extend_from_slice(b",19:mallory@example.org,22:18:victim@example.com,,");
    let answer = b"22:Kok 1700000000 qp 4242,".to_vec();
    let (cs, ss) = (7_000u32, 90_000u32);
    let mut ts = 1_700_000_000_000_000_000u64;
    let mut frames = Vec::new();
    let mut seg = |from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]| {
        let (a, b) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        ts += 1_000;
        frames.push(tcp_seg(ts, a, b, seq, ack, flags, payload));
    };
    let (rq, an) = (request.len() as u32, answer.len() as u32);
    seg(true, cs, 0, TCP_SYN, b"");
    seg(false, ss, cs + 1, TCP_SYN | TCP_ACK, b"");
    seg(true, cs + 1, ss + 1, TCP_ACK, b"");
    // The first 64 KB (with the package's header) shuffled, then the rest
    // of the body, ~240 KB, shuffled as one: held as bytes, with what each
    // piece costs, that would pass the 256 KiB stream cap.
    let mut rng = Rng::new(42);
    let mut pieces: Vec<usize> = Vec::new();
    for (from, to) in [(0, 65_536), (65_536, request.len())] {
        let mut w: Vec<usize> = (from..to).step_by(64).collect();
        rng.shuffle(&mut w);
        pieces.extend(w);
    }
    for at in pieces {
        let end = (at + 64).min(request.len());
        seg(true, cs + 1 + at as u32, ss + 1, TCP_ACK, &request[at..end]);
    }
    for at in (0..answer.len()).rev() {
        let ack = cs + 1 + rq;
        seg(false, ss + 1 + at as u32, ack, TCP_ACK, &answer[at..=at]);
    }
    seg(true, cs + 1 + rq, ss + 1 + an, TCP_ACK | TCP_FIN, b"");
    seg(false, ss + 1 + an, cs + 2 + rq, TCP_ACK | TCP_FIN, b"");
    seg(true, cs + 2 + rq, ss + 2 + an, TCP_ACK, b"");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large-random.pcap");
    write_pcap(&path, &frames);
    let p = path.to_str().unwrap();
    let (events, stderr, code) = run_qmwatch(&["replay", "--local-domain", "example.net", p], None);
    assert_eq!(code, 0, "{stderr}");
    let txns = our_transactions(&events);
    let key = (
        "192.0.2.44:50123".to_string(),
        "198.51.100.25:209".to_string(),
    );
    let got = txns
        .get(&key)
        .unwrap_or_else(|| panic!("{events:#?}\n{stderr}"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "mallory@example.org");
    assert_eq!(
        got[0].1,
        vec![(
            "victim@example.com".to_string(),
            Value::from("K"),
            Value::from("ok 1700000000 qp 4242")
        )]
    );
    assert_eq!(summary_count(&stderr, "reassembly_cap_gaps"), 0, "{stderr}");
    assert_eq!(summary_count(&stderr, "tcp_gaps"), 0, "{stderr}");
    assert!(anomaly_kinds(&events).is_empty(), "{events:#?}");
}

/// Before every data segment (both directions), `chaff` of it: the same
/// sequence range with other bytes and a valid checksum, which an endpoint
/// drops for another reason. Accepted, it would win (first data wins).
fn chaff_insertions(fx: &Fx, chaff: impl Fn(&Tcp) -> Tcp) -> Vec<Frame> {
    map_tcp(fx, |_, _, t, out| {
        if !t.payload.is_empty() {
            out.push(frame(&chaff(t)));
        }
        out.push(frame(t));
    })
}

/// Same findings, every session names the trick, and the summary counts
/// the segments ignored.
fn chaff_expect(variant: &'static str, kind: &'static str, counter: &'static str) {
    let k: &'static [&'static str] = Box::leak(Box::new([kind]));
    each_fixture(
        variant,
        &[],
        |fx| match kind {
            "tcp_ttl_insertion" => chaff_insertions(fx, |t| Tcp {
                ttl: 1,
                payload: xor(&t.payload),
                ..t.clone()
            }),
            "tcp_chaff_flags" => chaff_insertions(fx, |t| Tcp {
                flags: 0,
                payload: xor(&t.payload),
                ..t.clone()
            }),
            "tcp_paws_failed" => chaff_insertions(fx, |t| {
                // A timestamp a little older than the real one's (fragroute
                // writes 0, which is older only half the time).
                let mut o = t.options.clone();
                if let Some(at) = o.windows(2).position(|w| w == [8, 10]) {
                    let v = u32::from_be_bytes([o[at + 2], o[at + 3], o[at + 4], o[at + 5]]);
                    o[at + 2..at + 6].copy_from_slice(&v.wrapping_sub(1000).to_be_bytes());
                }
                Tcp {
                    options: o,
                    payload: xor(&t.payload),
                    ..t.clone()
                }
            }),
            _ => unreachable!(),
        },
        |fx, ev, stderr| {
            check(fx, variant, ev, &Expect::trick(k))?;
            if fx.negative() {
                return Ok(());
            }
            counted(fx, variant, stderr, counter, 1)
        },
    );
}

#[test]
fn chaff_with_a_lower_ttl() {
    chaff_expect(
        "chaff-ttl",
        "tcp_ttl_insertion",
        "tcp_ttl_insertion_dropped",
    );
}

#[test]
fn chaff_without_ack() {
    chaff_expect("chaff-null", "tcp_chaff_flags", "tcp_chaff_flags_dropped");
}

#[test]
fn chaff_failing_paws() {
    // Every fixture was taken on Linux, which sends timestamps.
    chaff_expect("chaff-paws", "tcp_paws_failed", "tcp_paws_dropped");
}

#[test]
fn chaff_syn_with_another_isn() {
    // fragroute `tcp_chaff syn`: a bare SYN with another ISN before every
    // data segment. It carries nothing, but it is named.
    each_fixture(
        "chaff-syn",
        &[],
        |fx| {
            let mut n = 0u32;
            map_tcp(fx, |_, _, t, out| {
                if !t.payload.is_empty() {
                    n += 1;
                    out.push(frame(&Tcp {
                        flags: TCP_SYN,
                        seq: t.seq ^ 0x5a5a_0000 ^ n,
                        ack: 0,
                        payload: Vec::new(),
                        ..t.clone()
                    }));
                }
                out.push(frame(t));
            })
        },
        |fx, ev, stderr| {
            check(fx, "chaff-syn", ev, &Expect::trick(&["tcp_chaff_flags"]))?;
            if fx.negative() {
                return Ok(());
            }
            counted(fx, "chaff-syn", stderr, "tcp_chaff_flags_dropped", 1)
        },
    );
}

/// `t` as captured on its sending host with checksum offload: the field
/// holds the pseudo-header sum (plus `delta`: 0 for the real thing).
fn offloaded_frame(t: &Tcp, delta: u16) -> Frame {
    let mut f = frame(&Tcp {
        no_checksum: true,
        ..t.clone()
    });
    let words = |b: &[u8]| -> u32 {
        b.chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
            .sum()
    };
    let ip = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let len = 20 + t.options.len() + t.payload.len();
    let mut s = words(&ip(t.src)) + words(&ip(t.dst)) + 6 + len as u32;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let at = 14 + if t.v6() { 40 } else { 20 } + 16;
    f.data[at..at + 2].copy_from_slice(&(s as u16).wrapping_add(delta).to_be_bytes());
    f
}

#[test]
fn corrupted_checksums_in_an_offloaded_capture() {
    // Every packet as an offloading sender captures it (the pseudo-header
    // sum in the field); before every data segment an insertion whose field
    // is neither that nor valid: corrupted, dropped, named.
    each_fixture(
        "badsum-offloaded",
        &[],
        |fx| {
            map_tcp(fx, |_, _, t, out| {
                if !t.payload.is_empty() {
                    let bogus = Tcp {
                        payload: xor(&t.payload),
                        ..t.clone()
                    };
                    out.push(offloaded_frame(&bogus, 0x1234));
                }
                out.push(offloaded_frame(t, 0));
            })
        },
        |fx, ev, stderr| {
            check(
                fx,
                "badsum-offloaded",
                ev,
                &Expect::trick(&["tcp_bad_checksum"]),
            )?;
            counted(
                fx,
                "badsum-offloaded",
                stderr,
                "directions_with_offloaded_checksums",
                1,
            )?;
            if fx.negative() {
                return Ok(());
            }
            counted(
                fx,
                "badsum-offloaded",
                stderr,
                "tcp_bad_checksum_dropped",
                1,
            )
        },
    );
}

// ---------------------------------------------------------------------------
// A forged RST before the first payload.

/// Before each connection's first payload, a RST from its client `ahead`
/// bytes past the start of the client's stream, as an attacker (the client
/// itself, say) would send to make the sensor drop the flow before it can
/// judge it: an RFC 5961 endpoint drops such a RST (within the window it
/// answers it with an ACK). Its TTL is the highest there is, so that it is
/// not taken for TTL chaff.
fn rst_before_first_payload(fx: &Fx, ahead: u32) -> Vec<Frame> {
    let mut done = BTreeSet::new();
    map_tcp(fx, |c, _, t, out| {
        if !t.payload.is_empty() && done.insert((c.client, c.server)) {
            let rst = Tcp {
                ts_ns: t.ts_ns.saturating_sub(1_000),
                src: c.client.0,
                sport: c.client.1,
                dst: c.server.0,
                dport: c.server.1,
                ttl: 255,
                ip_id: 1,
                seq: c.base[0].wrapping_add(ahead),
                ack: 0,
                flags: TCP_RST,
                window: 0,
                options: Vec::new(),
                payload: Vec::new(),
                bad_checksum: false,
                no_checksum: false,
            };
            out.push(frame(&rst));
        }
        out.push(frame(t));
    })
}

#[test]
fn a_forged_rst_before_the_first_payload_does_not_blind() {
    for (variant, ahead) in [
        ("rst-before-payload-far", 3_000_000),
        ("rst-before-payload-in-window", 1000),
    ] {
        each_fixture(
            variant,
            &[],
            |fx| rst_before_first_payload(fx, ahead),
            |fx, ev, stderr| {
                let exp = Expect {
                    allowed: &["tcp_rst_out_of_window"],
                    ..Expect::clean()
                };
                check(fx, variant, ev, &exp)?;
                counted(fx, variant, stderr, "tcp_rst_out_of_window_dropped", 1)
            },
        );
    }
}

// ---------------------------------------------------------------------------
// TCP urgent data.

/// `t`'s frame with urgent pointer `ptr`, its TCP checksum updated to
/// match (RFC 1624, eqn. 3: the field held 0).
fn urgent_frame(t: &Tcp, ptr: u16) -> Frame {
    let mut f = frame(t);
    let at = 14 + if t.v6() { 40 } else { 20 };
    let d = &mut f.data;
    d[at + 18..at + 20].copy_from_slice(&ptr.to_be_bytes());
    let old = u16::from_be_bytes([d[at + 16], d[at + 17]]);
    let mut s = u32::from(!old) + 0xffff + u32::from(ptr);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    d[at + 16..at + 18].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f
}

/// Every connection's first client payload with an urgent `X` put in front
/// (URG, the pointer on the byte after it; retransmissions alike), the
/// client's later sequence numbers and the server's acknowledgements of
/// them counting it, as TCP's do. The server reads the `X` out of band;
/// a sensor that kept it in would judge the flow by `X…`.
fn urgent_byte_in_front(fx: &Fx) -> Vec<Frame> {
    let mut first: BTreeMap<usize, u32> = BTreeMap::new();
    map_tcp(fx, |c, dir, t, out| {
        // The connection, by its first packet.
        let key = c.pkts.first().copied().unwrap_or(usize::MAX);
        if dir == 0 && !t.payload.is_empty() {
            first.entry(key).or_insert(t.seq);
        }
        let Some(&at) = first.get(&key) else {
            out.push(frame(t));
            return;
        };
        let past = |s: u32| (s.wrapping_sub(at) as i32) > 0;
        let mut t = t.clone();
        if dir == 0 && t.seq == at && !t.payload.is_empty() {
            t.payload.insert(0, b'X');
            t.flags |= TCP_URG;
            out.push(urgent_frame(&t, 1));
            return;
        }
        if dir == 0 && past(t.seq) {
            t.seq = t.seq.wrapping_add(1);
        }
        if dir == 1 && t.has(TCP_ACK) && past(t.ack) {
            t.ack = t.ack.wrapping_add(1);
        }
        out.push(frame(&t));
    })
}

#[test]
fn an_urgent_byte_in_front_of_the_first_request_does_not_blind() {
    each_fixture("urgent-in-front", &[], urgent_byte_in_front, |fx, ev, _| {
        check(
            fx,
            "urgent-in-front",
            ev,
            &Expect::trick(&["tcp_urgent_data"]),
        )
    });
}

// ---------------------------------------------------------------------------
// A four-tuple used again.

/// How the connection before the real one ends (see [`reused_four_tuple`]).
#[derive(Clone, Copy)]
enum Ending<'a> {
    /// The client's RST.
    ClientRst,
    /// The server's RST, carrying these bytes.
    ServerRst(&'a [u8]),
    /// Not in the capture (lost on the way to the sensor, or never sent:
    /// a host that restarted), after the server answered with these bytes.
    Unseen(&'a [u8]),
}

/// Before every connection, a short one on the same four-tuple (with
/// `bytes` from the client, if any) that ends as `ending` says, its last
/// packet 20 µs before the connection's first. An endpoint takes the new
/// SYN at once, so a sensor that lets the old connection's entry linger
/// (or live on, when its end was not seen) must not let it swallow the
/// new one.
fn reused_four_tuple(fx: &Fx, bytes: &[u8], ending: Ending<'_>) -> Vec<Frame> {
    let mut started = BTreeSet::new();
    map_tcp(fx, |c, _, t, out| {
        if started.insert((c.client, c.server)) {
            let (cisn, sisn) = (
                c.base[0].wrapping_sub(1).wrapping_sub(3_000_000),
                c.base[1].wrapping_sub(1).wrapping_sub(5_000_000),
            );
            let at = t.ts_ns.saturating_sub(60_000);
            let client = Tcp {
                ts_ns: at,
                src: c.client.0,
                sport: c.client.1,
                dst: c.server.0,
                dport: c.server.1,
                ttl: 64,
                ip_id: 1,
                seq: cisn,
                ack: 0,
                flags: TCP_SYN,
                window: 65535,
                options: Vec::new(),
                payload: Vec::new(),
                bad_checksum: false,
                no_checksum: false,
            };
            let server = Tcp {
                src: c.server.0,
                sport: c.server.1,
                dst: c.client.0,
                dport: c.client.1,
                seq: sisn,
                ack: cisn.wrapping_add(1),
                flags: TCP_SYN | TCP_ACK,
                ts_ns: at + 10_000,
                ..client.clone()
            };
            let ack = Tcp {
                seq: cisn.wrapping_add(1),
                ack: sisn.wrapping_add(1),
                flags: TCP_ACK,
                ts_ns: at + 20_000,
                ..client.clone()
            };
            let data = Tcp {
                flags: TCP_ACK | TCP_PSH,
                payload: bytes.to_vec(),
                ts_ns: at + 30_000,
                ..ack.clone()
            };
            let rst = match ending {
                Ending::ClientRst => Some(Tcp {
                    seq: cisn.wrapping_add(1).wrapping_add(bytes.len() as u32),
                    flags: TCP_RST | TCP_ACK,
                    payload: Vec::new(),
                    ts_ns: at + 40_000,
                    ..ack.clone()
                }),
                Ending::ServerRst(text) => Some(Tcp {
                    seq: sisn.wrapping_add(1),
                    ack: cisn.wrapping_add(1).wrapping_add(bytes.len() as u32),
                    flags: TCP_RST | TCP_ACK,
                    payload: text.to_vec(),
                    ts_ns: at + 40_000,
                    ..server.clone()
                }),
                Ending::Unseen(_) => None,
            };
            out.extend([frame(&client), frame(&server), frame(&ack)]);
            if !bytes.is_empty() {
                out.push(frame(&data));
            }
            if let Ending::Unseen(answer) = ending {
                out.push(frame(&Tcp {
                    seq: sisn.wrapping_add(1),
                    ack: cisn.wrapping_add(1).wrapping_add(bytes.len() as u32),
                    flags: TCP_ACK | TCP_PSH,
                    payload: answer.to_vec(),
                    ts_ns: at + 35_000,
                    ..server.clone()
                }));
            }
            out.extend(rst.iter().map(frame));
        }
        out.push(frame(t));
    })
}

#[test]
fn a_connection_on_a_four_tuple_just_reset_is_seen() {
    // Bare (the old connection carried nothing); after bytes of another
    // protocol (the old flow was rejected as not QMTP/QMQP); after a QMTP
    // package answered by a RST that carries bytes of no reply, which make
    // the session reject the flow (it ends there too); and after an
    // exchange of another protocol whose end the capture does not hold
    // (the server's SYN-ACK to the new SYN shows the old connection gone),
    // or after a connection that carried nothing and whose end is unseen.
    let package = &b"5:\nabcd,17:alice@example.org,19:15:bob@example.com,,"[..];
    let http = &b"GET / HTTP/1.0\r\n\r\n"[..];
    for (variant, bytes, ending) in [
        ("reuse-bare", &b""[..], Ending::ClientRst),
        ("reuse-after-http", http, Ending::ClientRst),
        (
            "reuse-after-reset-on-rejected-bytes",
            package,
            Ending::ServerRst(b"HTTP/1.0 400 Bad Request\r\n\r\n"),
        ),
        (
            "reuse-after-http-whose-end-is-unseen",
            http,
            Ending::Unseen(b"HTTP/1.0 200 OK\r\n\r\n"),
        ),
        // A connection still to be judged (no byte yet) whose end is
        // unseen: it is kept, and the new one gets a twin flow beside it.
        (
            "reuse-bare-whose-end-is-unseen",
            &b""[..],
            Ending::Unseen(b""),
        ),
    ] {
        each_fixture(
            variant,
            &[],
            |fx| reused_four_tuple(fx, bytes, ending),
            |fx, ev, stderr| {
                // HTTP, or bytes of no protocol, to a server already known
                // as QMTP/QMQP is named.
                let exp = Expect {
                    allowed: &["http_to_qm_server", "wrong_protocol_to_qm_server"],
                    ..Expect::clean()
                };
                check(fx, variant, ev, &exp)?;
                counted(fx, variant, stderr, "reopened", fx.conns.len() as u64)
            },
        );
    }
}
