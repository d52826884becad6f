//! Events: the JSON objects qmwatch writes, in Elastic Common Schema names.
//!
//! Owns: the mapping from detection results to nested ECS JSON (one object
//! per line), packet-time timestamps in RFC 3339, and the Community ID v1 of
//! each flow. `docs/events.md` documents every field.
//!
//! Must not: decide what is worth reporting (that is `detect`), or do any
//! per-packet work: events are built once per finding.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use crate::detect::policy::Policy;
use crate::detect::probe::Probe;
use crate::detect::{RelayAttempt, RelayVerdict};
use crate::protocol::{Endpoints, Protocol, Reply, RequestState, Transaction};

pub const DATASET_SERVICE: &str = "qmwatch.service";
pub const DATASET_TRANSACTION: &str = "qmwatch.transaction";
pub const DATASET_ANOMALY: &str = "qmwatch.anomaly";
pub const DATASET_RELAY: &str = "qmwatch.relay";
pub const DATASET_PROBE: &str = "qmwatch.probe";

/// Formats nanoseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// Community ID v1 (seed 0) of a TCP flow: the same string whichever side
/// is given first, so a SIEM can join qmwatch with Zeek, Suricata or others.
pub fn community_id(a: SocketAddr, b: SocketAddr) -> String {
    let (ia, ib) = (ip_bytes(a.ip()), ip_bytes(b.ip()));
    let ((sa, pa), (sb, pb)) = if (ia.as_slice(), a.port()) <= (ib.as_slice(), b.port()) {
        ((ia, a.port()), (ib, b.port()))
    } else {
        ((ib, b.port()), (ia, a.port()))
    };
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(&sa);
    h.update(&sb);
    h.update([6u8, 0u8]);
    h.update(pa.to_be_bytes());
    h.update(pb.to_be_bytes());
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    )
}

/// The fields every event carries.
pub fn base(
    ts: u64,
    kind: &str,
    dataset: &str,
    category: &[&str],
    types: &[&str],
    ep: &Endpoints,
    protocol: Option<Protocol>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("@timestamp".into(), json!(rfc3339(ts)));
    m.insert(
        "event".into(),
        json!({
            "kind": kind,
            "category": category,
            "type": types,
            "dataset": dataset,
            "module": "qmwatch",
        }),
    );
    m.insert(
        "source".into(),
        json!({"ip": ep.client.ip().to_string(), "port": ep.client.port()}),
    );
    m.insert(
        "destination".into(),
        json!({"ip": ep.server.ip().to_string(), "port": ep.server.port()}),
    );
    let mut net = Map::new();
    net.insert("transport".into(), json!("tcp"));
    net.insert(
        "type".into(),
        json!(if ep.server.is_ipv4() { "ipv4" } else { "ipv6" }),
    );
    if let Some(p) = protocol {
        net.insert("protocol".into(), json!(p.name()));
    }
    net.insert(
        "community_id".into(),
        json!(community_id(ep.client, ep.server)),
    );
    m.insert("network".into(), Value::Object(net));
    m.insert(
        "observer".into(),
        json!({"type": "sensor", "product": "qmwatch", "vendor": "qmwatch"}),
    );
    m
}

fn reply_json(r: &Reply) -> Value {
    json!({
        "code": r.code.letter(),
        "text": r.text.text(),
        "text_truncated": r.text.truncated,
    })
}

/// Adds `key: value` into the `qmwatch` object of `m`.
pub fn put_qmwatch(m: &mut Map<String, Value>, key: &str, value: Value) {
    let q = m
        .entry("qmwatch")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(q) = q {
        q.insert(key.into(), value);
    }
}

/// A `qmwatch.service` event: an alert when the server is not sanctioned
/// (an unexpected service), plain inventory when it is.
pub fn service(
    ts: u64,
    ep: &Endpoints,
    protocol: Protocol,
    evidence: &str,
    sanctioned: bool,
) -> Map<String, Value> {
    let standard = ep.server.port() == protocol.standard_port();
    let mut m = base(
        ts,
        if sanctioned { "event" } else { "alert" },
        DATASET_SERVICE,
        &["network"],
        &["info", "protocol"],
        ep,
        Some(protocol),
    );
    let proto = protocol.name().to_uppercase();
    let port_word = if standard { "standard" } else { "non-standard" };
    let msg = if sanctioned {
        format!(
            "Sanctioned {proto} service on {} ({port_word} port)",
            ep.server
        )
    } else {
        format!(
            "Unexpected {proto} service on {} ({port_word} port): not a sanctioned server",
            ep.server
        )
    };
    m.insert("message".into(), json!(msg));
    if !sanctioned {
        set_event(&mut m, "severity", json!(if standard { 47 } else { 63 }));
        m.insert(
            "rule".into(),
            json!({
                "id": "qmwatch-unexpected-service",
                "name": "Unexpected QMTP/QMQP service",
                "category": "QMTP/QMQP Server Detection (passive counterpart of Nessus/OpenVAS 11134)",
            }),
        );
    }
    put_qmwatch(
        &mut m,
        "service",
        json!({
            "address": ep.server.ip().to_string(),
            "port": ep.server.port(),
            "protocol": protocol.name(),
            "standard_port": standard,
            "evidence": evidence,
            "sanctioned": sanctioned,
        }),
    );
    m
}

/// Sets `event.<key>`.
pub fn set_event(m: &mut Map<String, Value>, key: &str, v: Value) {
    if let Some(Value::Object(e)) = m.get_mut("event") {
        e.insert(key.into(), v);
    }
}

/// A short reference to a flow: time, client and Community ID.
pub fn flow_ref(ts: u64, ep: &Endpoints) -> Value {
    json!({
        "@timestamp": rfc3339(ts),
        "source": {"ip": ep.client.ip().to_string(), "port": ep.client.port()},
        "community_id": community_id(ep.client, ep.server),
    })
}

/// A `qmwatch.transaction` event.
pub fn transaction(
    t: &Transaction,
    client_trusted: bool,
    relay: Option<RelayVerdict>,
) -> Map<String, Value> {
    let mut m = base(
        t.ts,
        "event",
        DATASET_TRANSACTION,
        &["email", "network"],
        &["protocol", "info"],
        &t.endpoints,
        Some(t.protocol),
    );
    let outcome = if t.codes.d + t.codes.z + t.codes.missing == 0 && t.codes.k > 0 {
        "success"
    } else if t.codes.k == 0 && t.codes.d + t.codes.z > 0 {
        "failure"
    } else {
        "unknown"
    };
    if let Value::Object(e) = m.entry("event").or_insert(Value::Null) {
        e.insert("outcome".into(), json!(outcome));
    }
    let mut tx = Map::new();
    tx.insert("index".into(), json!(t.index));
    tx.insert("complete".into(), json!(t.complete()));
    tx.insert("session_confirmed".into(), json!(t.session_confirmed));
    tx.insert("client_trusted".into(), json!(client_trusted));
    tx.insert("relay_attempt".into(), json!(relay.is_some()));
    tx.insert(
        "open_relay".into(),
        json!(relay == Some(RelayVerdict::OpenRelay)),
    );
    let mut email = Map::new();
    match &t.request {
        Some(r) => {
            let state = match r.state {
                RequestState::Complete => "complete".to_string(),
                RequestState::Truncated => "truncated".to_string(),
                RequestState::Malformed(k) => format!("malformed:{k}"),
            };
            tx.insert("request_state".into(), json!(state));
            tx.insert("message_bytes".into(), json!(r.message_bytes));
            if r.message_gap_bytes > 0 {
                tx.insert("message_gap_bytes".into(), json!(r.message_gap_bytes));
            }
            if let Some(enc) = r.encoding {
                tx.insert("encoding".into(), json!(enc.name()));
            }
            tx.insert("recipient_count".into(), json!(r.recipient_count));
            if r.recipient_count > r.recipients.len() as u64 {
                tx.insert(
                    "recipients_not_stored".into(),
                    json!(r.recipient_count - r.recipients.len() as u64),
                );
            }
            if let Some(s) = &r.sender {
                email.insert("from".into(), json!({"address": s.text()}));
                if s.truncated {
                    tx.insert("sender_truncated".into(), json!(true));
                }
                tx.insert("bounce".into(), json!(s.wire_len == 0));
            }
            let to: Vec<String> = r.recipients.iter().map(|f| f.text()).collect();
            email.insert("to".into(), json!({"address": to}));
            let replies: Vec<Value> = r
                .recipients
                .iter()
                .zip(t.replies.iter())
                .map(|(rc, rep)| {
                    let mut o = Map::new();
                    o.insert("recipient".into(), json!(rc.text()));
                    match rep {
                        Some(rep) => {
                            o.insert("code".into(), json!(rep.code.letter()));
                            o.insert("text".into(), json!(rep.text.text()));
                        }
                        None => {
                            o.insert("code".into(), Value::Null);
                            o.insert("text".into(), Value::Null);
                        }
                    }
                    if rc.truncated {
                        o.insert("recipient_truncated".into(), json!(true));
                    }
                    Value::Object(o)
                })
                .collect();
            put_qmwatch(&mut m, "replies", Value::Array(replies));
            let verb = match t.protocol {
                Protocol::Qmtp => "package",
                Protocol::Qmqp => "message",
            };
            m.insert(
                "message".into(),
                json!(format!(
                    "{} {verb} from {} to {} ({} recipient(s)): {} K, {} Z, {} D, {} unanswered",
                    t.protocol.name().to_uppercase(),
                    t.endpoints.client,
                    t.endpoints.server,
                    r.recipient_count,
                    t.codes.k,
                    t.codes.z,
                    t.codes.d,
                    t.codes.missing
                )),
            );
        }
        None => {
            tx.insert("request_state".into(), json!("absent"));
            put_qmwatch(&mut m, "replies", json!([]));
            m.insert(
                "message".into(),
                json!(format!(
                    "{} server {} replied to {} without a readable request",
                    t.protocol.name().to_uppercase(),
                    t.endpoints.server,
                    t.endpoints.client
                )),
            );
        }
    }
    tx.insert(
        "codes".into(),
        json!({"K": t.codes.k, "Z": t.codes.z, "D": t.codes.d, "missing": t.codes.missing}),
    );
    if !email.is_empty() {
        m.insert("email".into(), Value::Object(email));
    }
    if let Some(r) = &t.reply {
        put_qmwatch(&mut m, "reply", reply_json(r));
    }
    put_qmwatch(&mut m, "transaction", Value::Object(tx));
    m
}

/// A `qmwatch.anomaly` event.
pub fn anomaly(
    ts: u64,
    ep: &Endpoints,
    protocol: Option<Protocol>,
    kind: &str,
    detail: &str,
) -> Map<String, Value> {
    let mut m = base(
        ts,
        "event",
        DATASET_ANOMALY,
        &["network", "intrusion_detection"],
        &["info", "protocol"],
        ep,
        protocol,
    );
    m.insert(
        "message".into(),
        json!(format!(
            "Anomaly {kind} on {} -> {}: {detail}",
            ep.client, ep.server
        )),
    );
    put_qmwatch(&mut m, "anomaly", json!({"kind": kind, "detail": detail}));
    m
}

fn severity(v: RelayVerdict, confident: bool) -> u64 {
    match (v, confident) {
        (RelayVerdict::OpenRelay, true) => 90,
        (RelayVerdict::OpenRelay, false) => 70,
        (RelayVerdict::Unanswered, _) => 50,
        (RelayVerdict::Deferred, _) => 40,
        (RelayVerdict::Refused, _) => 30,
    }
}

fn relay_rule(v: RelayVerdict) -> Value {
    let (id, name) = match v {
        RelayVerdict::OpenRelay => (
            "qmwatch-relay-open",
            "Open relay: a foreign recipient was accepted from an untrusted client",
        ),
        RelayVerdict::Refused => ("qmwatch-relay-refused", "Relay attempt refused"),
        RelayVerdict::Deferred => ("qmwatch-relay-deferred", "Relay attempt deferred"),
        RelayVerdict::Unanswered => (
            "qmwatch-relay-unanswered",
            "Relay attempt with no reply seen",
        ),
    };
    json!({"id": id, "name": name, "category": "QMTP Open Relay (passive counterpart of Nessus 38789)"})
}

/// A `qmwatch.relay` alert: an untrusted client named a non-local recipient.
pub fn relay(
    t: &Transaction,
    a: &RelayAttempt<'_>,
    policy: &Policy,
    probe: Option<&Probe>,
) -> Map<String, Value> {
    let mut m = base(
        t.ts,
        "alert",
        DATASET_RELAY,
        &["email", "intrusion_detection", "network"],
        &[
            if a.verdict == RelayVerdict::OpenRelay {
                "allowed"
            } else {
                "denied"
            },
            "indicator",
        ],
        &t.endpoints,
        Some(t.protocol),
    );
    set_event(&mut m, "severity", json!(severity(a.verdict, a.confident)));
    set_event(
        &mut m,
        "outcome",
        json!(match a.verdict {
            RelayVerdict::OpenRelay => "success",
            RelayVerdict::Refused | RelayVerdict::Deferred => "failure",
            RelayVerdict::Unanswered => "unknown",
        }),
    );
    set_event(&mut m, "action", json!(a.verdict.name()));
    m.insert("rule".into(), relay_rule(a.verdict));
    let foreign: Vec<Value> = a
        .foreign
        .iter()
        .map(|(r, rep)| match rep {
            Some(rep) => {
                json!({"recipient": r, "code": rep.code.letter(), "text": rep.text.text()})
            }
            None => json!({"recipient": r, "code": null, "text": null}),
        })
        .collect();
    let to: Vec<&str> = a.foreign.iter().map(|(r, _)| r.as_str()).collect();
    let sender = t
        .request
        .as_ref()
        .and_then(|r| r.sender.as_ref())
        .map(|s| s.text());
    let mut email = Map::new();
    if let Some(s) = &sender {
        email.insert("from".into(), json!({"address": s}));
    }
    email.insert("to".into(), json!({"address": to}));
    m.insert("email".into(), Value::Object(email));
    let proto = t.protocol.name().to_uppercase();
    let who = match probe {
        Some(p) => format!("{} scanner {}", p.scanner, t.endpoints.client.ip()),
        None => t.endpoints.client.ip().to_string(),
    };
    let first = a.foreign.first().map(|(r, _)| r.as_str()).unwrap_or("");
    let msg = match a.verdict {
        RelayVerdict::OpenRelay => {
            let accepted: Vec<&str> = a
                .foreign
                .iter()
                .filter(|(_, r)| r.is_some_and(|r| r.code.letter() == "K"))
                .map(|(r, _)| r.as_str())
                .collect();
            format!(
                "Open relay: {who} relayed to {} through {} ({proto}), server replied K",
                accepted.join(", "),
                t.endpoints.server
            )
        }
        RelayVerdict::Refused => format!(
            "Relay attempt refused: {who} tried {first} through {} ({proto}), server replied D",
            t.endpoints.server
        ),
        RelayVerdict::Deferred => format!(
            "Relay attempt deferred: {who} tried {first} through {} ({proto}), server replied Z",
            t.endpoints.server
        ),
        RelayVerdict::Unanswered => format!(
            "Relay attempt: {who} tried {first} through {} ({proto}), no reply seen",
            t.endpoints.server
        ),
    };
    m.insert("message".into(), json!(msg));
    let mut relay = Map::new();
    relay.insert("verdict".into(), json!(a.verdict.name()));
    relay.insert("foreign_recipients".into(), Value::Array(foreign));
    relay.insert("local_recipients".into(), json!(a.local_count));
    relay.insert("confident".into(), json!(a.confident));
    relay.insert("transaction_index".into(), json!(t.index));
    relay.insert(
        "policy".into(),
        json!({
            "description": policy.describe(),
            "local_domains_defaulted": policy.local_domains_defaulted,
            "trusted_networks_defaulted": policy.trusted_defaulted,
        }),
    );
    if let Some(p) = probe {
        relay.insert("scanner".into(), json!(p.scanner));
    }
    put_qmwatch(&mut m, "relay", Value::Object(relay));
    m
}

/// Several relay alerts of one client through one server, folded into one.
pub fn aggregate_relay(
    mut first: Map<String, Value>,
    count: u64,
    first_flow: Value,
    last_flow: Value,
    verdicts: &std::collections::BTreeMap<&'static str, u64>,
    worst: RelayVerdict,
    window_ns: u64,
) -> Map<String, Value> {
    if count > 1 {
        let src = first
            .get("source")
            .and_then(|s| s.get("ip"))
            .cloned()
            .unwrap_or(Value::Null);
        let dst = first.get("destination").cloned().unwrap_or(Value::Null);
        first.insert(
            "message".into(),
            json!(format!(
                "{count} relay attempts from {} through {}:{} within {} s (worst: {})",
                src.as_str().unwrap_or("?"),
                dst.get("ip").and_then(|v| v.as_str()).unwrap_or("?"),
                dst.get("port").and_then(|v| v.as_u64()).unwrap_or(0),
                window_ns / 1_000_000_000,
                worst.name()
            )),
        );
        set_event(&mut first, "severity", json!(severity(worst, true)));
        set_event(&mut first, "action", json!(worst.name()));
        first.insert("rule".into(), relay_rule(worst));
    }
    if let Some(Value::Object(q)) = first.get_mut("qmwatch") {
        if let Some(Value::Object(r)) = q.get_mut("relay") {
            r.insert("verdict".into(), json!(worst.name()));
        }
    }
    put_qmwatch(
        &mut first,
        "aggregate",
        json!({
            "count": count,
            "window_seconds": window_ns / 1_000_000_000,
            "verdicts": verdicts,
            "first": first_flow,
            "last": last_flow,
        }),
    );
    first
}

/// A `qmwatch.probe` event: a known scanner probe went by.
pub fn probe(t: &Transaction, p: &Probe, client_trusted: bool) -> Map<String, Value> {
    let mut m = base(
        t.ts,
        "alert",
        DATASET_PROBE,
        &["intrusion_detection", "network"],
        &["info", "indicator"],
        &t.endpoints,
        Some(t.protocol),
    );
    set_event(&mut m, "severity", json!(21));
    m.insert(
        "rule".into(),
        json!({"id": "qmwatch-scanner-probe", "name": "QMTP/QMQP scanner probe (Nessus/OpenVAS 11134)"}),
    );
    let answers: Vec<Value> = t
        .replies
        .iter()
        .map(|r| match r {
            Some(r) => json!({"code": r.code.letter(), "text": r.text.text()}),
            None => json!({"code": null, "text": null}),
        })
        .collect();
    let answer = match t
        .replies
        .first()
        .and_then(|r| r.as_ref())
        .or(t.reply.as_ref())
    {
        Some(r) => format!("server replied {}", r.code.letter()),
        None => "no reply seen".to_string(),
    };
    m.insert(
        "message".into(),
        json!(format!(
            "{} probe (plugin 11134, {} form) from {} to {}: {answer}",
            p.scanner, p.form, t.endpoints.client, t.endpoints.server
        )),
    );
    put_qmwatch(
        &mut m,
        "probe",
        json!({
            "scanner": p.scanner,
            "plugin": "11134",
            "form": p.form,
            "client_trusted": client_trusted,
            "answers": answers,
        }),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_id_matches_spec_example() {
        // From the Community ID specification's test vectors.
        let a: SocketAddr = "128.232.110.120:34855".parse().unwrap();
        let b: SocketAddr = "66.35.250.204:80".parse().unwrap();
        assert_eq!(community_id(a, b), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        assert_eq!(community_id(b, a), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_795_238_274_123_456_789),
            "2026-11-21T05:17:54.123456Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
