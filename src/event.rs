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

use crate::protocol::{Endpoints, Protocol, Reply, RequestState, Transaction};

pub const DATASET_SERVICE: &str = "qmwatch.service";
pub const DATASET_TRANSACTION: &str = "qmwatch.transaction";
pub const DATASET_ANOMALY: &str = "qmwatch.anomaly";

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

/// A `qmwatch.service` event.
pub fn service(ts: u64, ep: &Endpoints, protocol: Protocol, evidence: &str) -> Map<String, Value> {
    let standard = ep.server.port() == protocol.standard_port();
    let mut m = base(
        ts,
        "event",
        DATASET_SERVICE,
        &["network"],
        &["info", "protocol"],
        ep,
        Some(protocol),
    );
    m.insert(
        "message".into(),
        json!(format!(
            "{} service on {} ({}port)",
            protocol.name().to_uppercase(),
            ep.server,
            if standard {
                "standard "
            } else {
                "non-standard "
            }
        )),
    );
    put_qmwatch(
        &mut m,
        "service",
        json!({
            "address": ep.server.ip().to_string(),
            "port": ep.server.port(),
            "protocol": protocol.name(),
            "standard_port": standard,
            "evidence": evidence,
        }),
    );
    m
}

/// A `qmwatch.transaction` event.
pub fn transaction(t: &Transaction) -> Map<String, Value> {
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
