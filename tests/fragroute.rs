//! Evasion variants made by a third-party rewriter: tcprewrite's fragroute
//! engine (Debian's `tcpreplay` package), applied to every fixture, plus
//! flows picked up mid-stream and captures cut mid-session; and, made here
//! and the same every run, chaff with one right checksum per connection
//! (`chaff_with_one_right_checksum`).
//!
//! Each fixture is first rebuilt as Ethernet with valid IP and TCP
//! checksums (the fixtures, taken on loopback, carry offloaded ones), so
//! that chaff is the only bad checksum. Every variant is replayed with the
//! labels' policy and judged against the replay of that clean base:
//!
//! - `same`: exactly the base's findings (services, transactions with their
//!   replies, relay verdicts, probes);
//! - `anomaly`: findings differ, and every flow whose findings differ (or
//!   the server of a service that went missing) carries an anomaly;
//! - `MISSED`: a finding lost or changed with no anomaly on its flow, or
//!   anything reported from a negative capture;
//! - `partial (consistent)` (captures cut mid-session only): less than the
//!   clean capture, and nothing that contradicts it.
//!
//! The table goes to `$QMWATCH_EVASION_TABLE` (default
//! `target/evasion-table.md`); docs/evasion.md holds a copy. Without
//! `tcprewrite` the test skips, unless `CI` is set, where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::pcapio::*;
use common::*;
use serde_json::Value;

/// The fragroute transformations: (column name, fragroute configuration).
const FRAGROUTE: &[(&str, &str)] = &[
    ("ip_frag 8", "ip_frag 8"),
    ("ip_frag 8, order reverse", "ip_frag 8\norder reverse"),
    ("ip_frag 16", "ip_frag 16"),
    ("ip_frag 16, order reverse", "ip_frag 16\norder reverse"),
    ("tcp_seg 1, order random", "tcp_seg 1\norder random"),
    ("tcp_seg 3, order random", "tcp_seg 3\norder random"),
    ("tcp_seg 64, order random", "tcp_seg 64\norder random"),
    ("dup", "dup first 100"),
    (
        "dup, order random",
        "tcp_seg 16\ndup random 50\norder random",
    ),
    ("tcp_seg 4 old", "tcp_seg 4 old"),
    ("tcp_seg 4 new", "tcp_seg 4 new"),
    (
        "tcp_seg 4 new, order reverse",
        "tcp_seg 4 new\norder reverse",
    ),
    ("tcp_chaff cksum", "tcp_seg 8\ntcp_chaff cksum"),
    (
        "tcp_chaff cksum, order reverse",
        "tcp_seg 8\ntcp_chaff cksum\norder reverse",
    ),
    ("tcp_chaff null", "tcp_seg 8\ntcp_chaff null"),
    (
        "tcp_chaff null, order reverse",
        "tcp_seg 8\ntcp_chaff null\norder reverse",
    ),
    ("tcp_chaff paws", "tcp_seg 8\ntcp_chaff paws"),
    (
        "tcp_chaff paws, order reverse",
        "tcp_seg 8\ntcp_chaff paws\norder reverse",
    ),
    ("tcp_chaff rexmit", "tcp_seg 8\ntcp_chaff rexmit"),
    (
        "tcp_chaff rexmit, order reverse",
        "tcp_seg 8\ntcp_chaff rexmit\norder reverse",
    ),
    ("tcp_chaff seq", "tcp_seg 8\ntcp_chaff seq"),
    (
        "tcp_chaff seq, order reverse",
        "tcp_seg 8\ntcp_chaff seq\norder reverse",
    ),
    ("tcp_chaff syn", "tcp_seg 8\ntcp_chaff syn"),
    (
        "tcp_chaff syn, order reverse",
        "tcp_seg 8\ntcp_chaff syn\norder reverse",
    ),
    ("tcp_chaff ttl 1", "tcp_seg 8\ntcp_chaff 1"),
    (
        "tcp_chaff ttl 1, order reverse",
        "tcp_seg 8\ntcp_chaff 1\norder reverse",
    ),
];

fn have_tcprewrite() -> bool {
    Command::new("tcprewrite")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a replay found, by flow: `("*", server)` holds the services of a
/// server, `(client, server)` the transactions, relay verdicts and probes
/// of that flow, in order.
type Findings = BTreeMap<(String, String), Vec<String>>;

fn findings(events: &[Value]) -> Findings {
    let mut f = Findings::new();
    for e in transaction_events(events) {
        let t = &e["qmwatch"];
        let replies: Vec<Value> = t["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r["recipient"], r["code"], r["text"]]))
            .collect();
        f.entry(session_key(e)).or_default().push(format!(
            "transaction {} from {} {}",
            t["transaction"]["index"],
            e["email"]["from"]["address"],
            Value::from(replies)
        ));
    }
    let mut relays: Vec<&Value> = events
        .iter()
        .filter(|e| dataset(e) == "qmwatch.relay")
        .collect();
    relays.sort_by_key(|e| {
        (
            session_key(e),
            e["qmwatch"]["relay"]["transaction_index"].as_u64(),
        )
    });
    for e in relays {
        let r = &e["qmwatch"]["relay"];
        f.entry(session_key(e)).or_default().push(format!(
            "relay {} {} {}",
            r["transaction_index"], r["verdict"], r["foreign_recipients"]
        ));
    }
    for e in events {
        match dataset(e) {
            "qmwatch.probe" => f
                .entry(session_key(e))
                .or_default()
                .push(format!("probe {}", e["message"])),
            "qmwatch.service" => f
                .entry((
                    "*".into(),
                    endpoint(&e["destination"]["ip"], &e["destination"]["port"]),
                ))
                .or_default()
                .push(format!("service {}", e["network"]["protocol"])),
            _ => {}
        }
    }
    for v in f.values_mut() {
        if v.first().is_some_and(|s| s.starts_with("service")) {
            v.sort();
        }
    }
    f
}

/// Flows (client, server) that carry an anomaly, and the anomaly kinds.
fn anomalies(events: &[Value]) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut flows = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for e in events.iter().filter(|e| dataset(e) == "qmwatch.anomaly") {
        flows.insert(session_key(e));
        kinds.insert(
            e["qmwatch"]["anomaly"]["kind"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    (flows, kinds)
}

/// One cell of the table.
#[derive(Debug)]
enum Cell {
    Same,
    /// A cut capture reported less, all of it consistent with the clean one.
    Partial,
    Anomaly(BTreeSet<String>),
    Missed(String),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Same => "same".into(),
            Cell::Partial => "partial (consistent)".into(),
            Cell::Anomaly(k) => format!(
                "anomaly ({})",
                k.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            Cell::Missed(_) => "**MISSED**".into(),
        }
    }
}

/// Judges a variant's events against the clean base's findings. `spares`
/// says which differing flows need no anomaly (the cut capture's).
fn judge(
    negative: bool,
    base: &Findings,
    events: &[Value],
    spare: impl Fn(&(String, String), Option<&Vec<String>>, Option<&Vec<String>>) -> bool,
) -> Cell {
    let got = findings(events);
    let (flagged, kinds) = anomalies(events);
    if negative {
        return if got.is_empty() {
            if kinds.is_empty() {
                Cell::Same
            } else {
                Cell::Anomaly(kinds)
            }
        } else {
            Cell::Missed(format!("false positive: {got:?}"))
        };
    }
    let keys: BTreeSet<&(String, String)> = got.keys().chain(base.keys()).collect();
    let mut missed = Vec::new();
    let mut differ = false;
    let mut spared = false;
    for k in keys {
        let (g, b) = (got.get(k), base.get(k));
        if g == b {
            continue;
        }
        if spare(k, g, b) {
            spared = true;
            continue;
        }
        differ = true;
        // A service reported beyond the base's is a false positive, always.
        let extra_service =
            k.0 == "*" && g.is_some_and(|g| g.iter().any(|s| !b.is_some_and(|b| b.contains(s))));
        let named = if k.0 == "*" {
            flagged.iter().any(|f| f.1 == k.1)
        } else {
            flagged.contains(k)
        };
        if extra_service || !named {
            missed.push(format!(
                "{} -> {}: got {g:?}, clean {b:?}{}",
                k.0,
                k.1,
                if extra_service {
                    " (false positive)"
                } else {
                    " (no anomaly on the flow)"
                }
            ));
        }
    }
    if !missed.is_empty() {
        Cell::Missed(missed.join("\n  "))
    } else if differ || !kinds.is_empty() {
        Cell::Anomaly(kinds)
    } else if spared {
        Cell::Partial
    } else {
        Cell::Same
    }
}

struct Fixture {
    name: String,
    labels: Value,
    pkts: Vec<Pkt>,
    base: PathBuf,
    /// The fixture as captured (offloaded checksums), as Ethernet.
    raw: PathBuf,
    findings: Findings,
}

fn replay(labels: &Value, path: &Path) -> Vec<Value> {
    let mut args = vec!["replay".to_string(), "--quiet".to_string()];
    args.extend(policy_args(labels));
    args.push(path.to_str().unwrap().into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (events, stderr, code) = run_qmwatch(&a, None);
    assert_eq!(code, 0, "{path:?}: {stderr}");
    events
}

/// Every frame rebuilt as Ethernet with valid checksums.
fn rebuilt(pkts: &[Pkt]) -> Vec<Frame> {
    pkts.iter()
        .map(|p| match p {
            Pkt::Tcp(t) => frame(t),
            Pkt::Other(f) => f.clone(),
        })
        .collect()
}

/// Drops, for every connection, every packet before its first payload
/// (the handshake): the sensor starts after the connection did.
fn midstream(pkts: &[Pkt]) -> Vec<Frame> {
    let (conns, conn_of) = connections(pkts);
    let mut started = vec![false; conns.len()];
    let mut out = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        match p {
            Pkt::Tcp(t) => {
                let c = conn_of[i].unwrap();
                started[c] |= !t.payload.is_empty();
                if started[c] {
                    out.push(frame(t));
                }
            }
            Pkt::Other(f) => out.push(f.clone()),
        }
    }
    out
}

/// A transaction or relay line of a cut capture is consistent with the
/// clean one when it is the same, or the same with replies still missing
/// (`null`) and recipients cut short.
fn consistent(got: &[String], clean: &[String]) -> bool {
    fn parts(s: &str) -> (String, Option<Value>) {
        // "transaction N from SENDER [replies]" / "relay N VERDICT [..]"
        match s.find(" [") {
            Some(at) => (s[..at].to_string(), serde_json::from_str(&s[at + 1..]).ok()),
            None => (s.to_string(), None),
        }
    }
    got.iter().all(|g| {
        if clean.contains(g) {
            return true;
        }
        let (gh, gv) = parts(g);
        clean.iter().any(|c| {
            let (ch, cv) = parts(c);
            let (Some(Value::Array(ga)), Some(Value::Array(ca))) = (&gv, &cv) else {
                return false;
            };
            if !g.starts_with("transaction") || gh != ch || ga.len() > ca.len() {
                return false;
            }
            ga.iter()
                .zip(ca)
                .all(|(a, b)| a == b || (a[0] == b[0] && a[1].is_null()))
        }) || (g.starts_with("relay") && gv.is_some_and(|v| v.to_string().contains("null")))
    })
}

#[test]
fn fragroute_variants_of_every_fixture() {
    if !have_tcprewrite() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tcprewrite (Debian package tcpreplay) is required in CI"
        );
        eprintln!("skipped: tcprewrite is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("QMWATCH_KEEP_VARIANTS").map(PathBuf::from);
    let fixtures: Vec<Fixture> = captures()
        .into_iter()
        .map(|path| {
            let labels = labels(&path);
            let name = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split('.')
                .next()
                .unwrap()
                .to_string();
            let pkts: Vec<Pkt> = read_capture(&path).iter().map(parse).collect();
            let base = dir.path().join(format!("{name}.pcap"));
            write_pcap(&base, &rebuilt(&pkts));
            let raw = dir.path().join(format!("{name}-raw.pcap"));
            write_pcap(&raw, &read_capture(&path));
            let findings = findings(&replay(&labels, &base));
            Fixture {
                name,
                labels,
                pkts,
                base,
                raw,
                findings,
            }
        })
        .collect();

    let mut rows: Vec<(String, Vec<Cell>)> = Vec::new();
    // Every transformation on the rebuilt base (valid checksums: chaff is
    // the only bad checksum), then the chaff again on the fixtures as
    // captured: loopback captures carry offloaded checksums, which
    // tcprewrite copies into its chaff, so there the checksum tells
    // nothing and the other signs must.
    let raw_chaff = FRAGROUTE
        .iter()
        .filter(|(col, _)| col.starts_with("tcp_chaff"))
        .map(|(col, conf)| (format!("{col} (offloaded checksums)"), *conf, true));
    let all = FRAGROUTE
        .iter()
        .map(|(col, conf)| (col.to_string(), *conf, false))
        .chain(raw_chaff);
    for (col, conf, from_raw) in all {
        let conf_path = dir.path().join("fragroute.conf");
        std::fs::write(&conf_path, format!("{conf}\n")).unwrap();
        let mut cells = Vec::new();
        for fx in &fixtures {
            let out = dir.path().join(format!("{}-variant.pcap", fx.name));
            let st = Command::new("tcprewrite")
                .arg(format!("--fragroute={}", conf_path.display()))
                .arg("-i")
                .arg(if from_raw { &fx.raw } else { &fx.base })
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "tcprewrite {conf:?} on {}: {}",
                fx.name,
                String::from_utf8_lossy(&st.stderr)
            );
            if let Some(k) = &keep {
                std::fs::create_dir_all(k).unwrap();
                let n = format!("{}-{}.pcap", fx.name, col.replace([' ', ','], "_"));
                std::fs::copy(&out, k.join(n)).unwrap();
            }
            let events = replay(&fx.labels, &out);
            cells.push(judge(
                fx.labels["services"].as_array().unwrap().is_empty(),
                &fx.findings,
                &events,
                |_, _, _| false,
            ));
        }
        rows.push((col, cells));
    }

    // Picked up mid-stream: every connection's handshake is missing.
    let mut cells = Vec::new();
    for fx in &fixtures {
        let out = dir.path().join(format!("{}-midstream.pcap", fx.name));
        write_pcap(&out, &midstream(&fx.pkts));
        let events = replay(&fx.labels, &out);
        cells.push(judge(
            fx.labels["services"].as_array().unwrap().is_empty(),
            &fx.findings,
            &events,
            |_, _, _| false,
        ));
    }
    rows.push(("midstream (no handshake)".into(), cells));

    // Cut mid-session: the capture ends halfway through its packets. A
    // flow that crosses the cut may report less, never anything else.
    let mut cells = Vec::new();
    for fx in &fixtures {
        let cut = fx.pkts.len() / 2;
        let out = dir.path().join(format!("{}-cut.pcap", fx.name));
        let frames = rebuilt(&fx.pkts);
        write_pcap(&out, &frames[..cut]);
        let (conns, conn_of) = connections(&fx.pkts);
        let crossing: BTreeSet<(String, String)> = conns
            .iter()
            .enumerate()
            .filter(|(ci, c)| {
                c.pkts.iter().any(|&i| i >= cut) && (0..cut).any(|i| conn_of[i] == Some(*ci))
            })
            .map(|(_, c)| (Conn::label_name(c.client), Conn::label_name(c.server)))
            .collect();
        let after: BTreeSet<(String, String)> = conns
            .iter()
            .filter(|c| c.pkts.iter().all(|&i| i >= cut))
            .map(|c| (Conn::label_name(c.client), Conn::label_name(c.server)))
            .collect();
        let events = replay(&fx.labels, &out);
        cells.push(judge(
            fx.labels["services"].as_array().unwrap().is_empty(),
            &fx.findings,
            &events,
            |k, got, clean| {
                let clean = clean.map_or(&[][..], |v| v.as_slice());
                let got = got.map_or(&[][..], |v| v.as_slice());
                if k.0 == "*" {
                    // A service seen only in later flows, or a subset.
                    return got.iter().all(|s| clean.contains(s));
                }
                (after.contains(k) && got.is_empty())
                    || (crossing.contains(k) && consistent(got, clean))
            },
        ));
    }
    rows.push(("capture cut mid-session".into(), cells));

    let mut table = String::from("| transformation |");
    for fx in &fixtures {
        table.push_str(&format!(" {} |", fx.name));
    }
    table.push_str("\n|---|");
    table.push_str(&"---|".repeat(fixtures.len()));
    table.push('\n');
    let mut missed = Vec::new();
    for (col, cells) in &rows {
        table.push_str(&format!("| {col} |"));
        for (fx, c) in fixtures.iter().zip(cells) {
            table.push_str(&format!(" {} |", c.text()));
            if let Cell::Missed(why) = c {
                missed.push(format!("{col} on {}:\n  {why}", fx.name));
            }
        }
        table.push('\n');
    }
    let out = std::env::var_os("QMWATCH_EVASION_TABLE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/evasion-table.md"),
        PathBuf::from,
    );
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(&out, &table).unwrap();
    eprintln!("{table}");
    assert!(missed.is_empty(), "\n{}", missed.join("\n\n"));
}

/// Where in a direction's stream the one chaff copy with a right checksum
/// goes (see [`chaff_with_one_right_checksum`]).
#[derive(Clone, Copy, Debug)]
enum Spot {
    First,
    Middle,
    Last,
}

/// Every data segment cut into 8-byte pieces (in reverse order when
/// `reversed`), each piece sent after a copy of it with other bytes, as
/// fragroute's `tcp_seg 8` and `tcp_chaff rexmit` make them. The copies
/// carry a wrong checksum, but in every connection one: the copy of the
/// piece that holds byte `spot` of direction `dir`'s stream has a right
/// one. An on-path sender of chaff can always give it a right checksum;
/// tcprewrite's chaff has one by chance (its checksum field is the real
/// segment's: one copy in 65,536).
fn chaffed(pkts: &[Pkt], dir: usize, spot: Spot, reversed: bool) -> Vec<Frame> {
    let (conns, conn_of) = connections(pkts);
    let mut placed = vec![false; conns.len()];
    let mut state = 0x2545_f491_u32;
    let mut other_byte = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    };
    let mut out = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        let t = match p {
            Pkt::Tcp(t) if !t.payload.is_empty() && !t.has(TCP_SYN) => t,
            Pkt::Tcp(t) => {
                out.push(frame(t));
                continue;
            }
            Pkt::Other(f) => {
                out.push(f.clone());
                continue;
            }
        };
        let Some(ci) = conn_of[i] else {
            out.push(frame(t));
            continue;
        };
        let conn = &conns[ci];
        let d = conn.dir(t);
        let len = conn.streams[d].len();
        let target = match spot {
            Spot::First => 0,
            Spot::Middle => len / 2,
            Spot::Last => len.saturating_sub(1),
        };
        let cuts: Vec<usize> = (8..t.payload.len()).step_by(8).collect();
        let mut pieces = t.split_at(&cuts);
        if reversed {
            pieces.reverse();
        }
        for piece in pieces {
            let at = conn.offset(t) + piece.seq.wrapping_sub(t.seq) as usize;
            let mut chaff = piece.clone();
            chaff.payload.iter_mut().for_each(|b| *b = other_byte());
            if chaff.payload == piece.payload {
                chaff.payload[0] ^= 0xff;
            }
            let right = d == dir && !placed[ci] && (at..at + piece.payload.len()).contains(&target);
            placed[ci] |= right;
            chaff.bad_checksum = !right;
            out.push(frame(&chaff));
            out.push(frame(&piece));
        }
    }
    out
}

/// Chaff with one right checksum per connection, ahead of the piece it
/// copies: in the client's or the server's stream, at its first byte, its
/// middle or its last, the pieces in order or reversed. Whichever copy the
/// endpoint took, the sensor must report the flow's findings or an anomaly
/// on it, never lose it in silence (a chaff copy of a server's first reply
/// bytes once made a flow vanish: the session took the server for another
/// protocol, and a copy of a reply's last bytes had its conflict crowded
/// out by the bad-checksum chaff before it). Deterministic, and no
/// tcprewrite needed.
#[test]
fn chaff_with_one_right_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<String> = Vec::new();
    let mut missed = Vec::new();
    for path in captures() {
        let labels = labels(&path);
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let negative = labels["services"].as_array().unwrap().is_empty();
        let pkts: Vec<Pkt> = read_capture(&path).iter().map(parse).collect();
        let base = dir.path().join(format!("{name}.pcap"));
        write_pcap(&base, &rebuilt(&pkts));
        let clean = findings(&replay(&labels, &base));
        let mut cells = Vec::new();
        for reversed in [false, true] {
            for (side, d) in [("client", 0), ("server", 1)] {
                for spot in [Spot::First, Spot::Middle, Spot::Last] {
                    let out = dir.path().join(format!("{name}-chaff.pcap"));
                    write_pcap(&out, &chaffed(&pkts, d, spot, reversed));
                    let cell = judge(negative, &clean, &replay(&labels, &out), |_, _, _| false);
                    let what = format!(
                        "{side} {spot:?}{}",
                        if reversed { ", reversed" } else { "" }
                    );
                    if let Cell::Missed(why) = &cell {
                        missed.push(format!("{what} on {name}:\n  {why}"));
                    }
                    cells.push(format!("{what}: {}", cell.text()));
                }
            }
        }
        rows.push(format!("{name}: {}", cells.join("; ")));
    }
    eprintln!("{}", rows.join("\n"));
    assert!(missed.is_empty(), "\n{}", missed.join("\n\n"));
}
