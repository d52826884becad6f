//! Events: the JSON objects qmwatch writes, in Elastic Common Schema names.
//!
//! Owns: the mapping from detection results to nested ECS 8.x JSON (one
//! object per line, ASCII only), packet-time timestamps in RFC 3339, the
//! Community ID v1 of each flow, the stable `event.id` of each finding, and
//! the `observer.*` fields ([`Observer`]). `docs/events.md` documents every
//! field and `docs/events.schema.json` is the JSON Schema every event meets.
//!
//! Must not: decide what is worth reporting (that is `detect`), write
//! anything (that is `sink`), or do any per-packet work: events are built
//! once per finding. Nothing in a finding may depend on wall-clock time or on
//! thread scheduling, so that a replay gives the same ids every time. The
//! sensor's own health — the `qmwatch.stats` metric and the `capture_loss`
//! anomaly ([`stats`], [`capture_loss`]) — is about the run, not the
//! traffic: those two carry wall-clock time and no flow.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use crate::detect::policy::Policy;
use crate::detect::probe::Probe;
use crate::detect::{RelayAttempt, RelayVerdict};
use qmwatch_proto::{Endpoints, Protocol, Reply, RequestState, Transaction};

mod typed;
use typed::{
    Address, Codes, Common, Ecs, Email, EventFields, ForeignRecipient, Ingress, IpPort, Name,
    Network, ObserverFields, PolicyFields, RecipientReply, Related, RelayFields, RelayQmwatch,
    ReplyFields, Rule, TransactionFields, TransactionQmwatch,
};
pub use typed::{RelayEvent, TransactionEvent};

/// One event, as the detector hands it to the outputs: the two kinds
/// written for every package are typed records (see [`typed`]); the rest
/// are JSON objects.
#[derive(Clone, Debug)]
pub enum Event {
    Object(Map<String, Value>),
    Transaction(Box<TransactionEvent>),
    Relay(Box<RelayEvent>),
}

impl Event {
    /// Adds the `observer.*` fields of `o` (host name, interface).
    pub fn stamp(&mut self, o: &Observer) {
        let fields = match self {
            Event::Object(m) => return o.stamp(m),
            Event::Transaction(t) => &mut t.observer,
            Event::Relay(r) => &mut r.observer,
        };
        fields.hostname = Some(o.hostname.clone());
        fields.ingress = o.ingress_interface.as_ref().map(|i| Ingress {
            interface: Name { name: i.clone() },
        });
    }

    /// One JSON line (no newline), ASCII only; see [`to_json_line`].
    pub fn to_json_line(&self) -> Option<String> {
        match self {
            Event::Object(m) => to_json_line(m),
            Event::Transaction(t) => typed_json_line(t),
            Event::Relay(r) => typed_json_line(r),
        }
    }

    /// The event as a JSON object (tests; relay alerts held for folding).
    pub fn into_object(self) -> Map<String, Value> {
        let v = match self {
            Event::Object(m) => return m,
            Event::Transaction(t) => serde_json::to_value(t),
            Event::Relay(r) => serde_json::to_value(r),
        };
        match v {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// `event.<key>` of an object event.
    fn object_event_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        m.get("event").and_then(|e| e.get(key))
    }

    /// `event.<key>`, a string: from the object, or by `typed` from a
    /// typed event's fields.
    fn event_str(&self, key: &str, typed: fn(&EventFields) -> &'static str) -> &str {
        match self {
            Event::Object(m) => Self::object_event_field(m, key)
                .and_then(Value::as_str)
                .unwrap_or(""),
            Event::Transaction(t) => typed(&t.event),
            Event::Relay(r) => typed(&r.event),
        }
    }

    /// `event.dataset`.
    pub fn dataset(&self) -> &str {
        self.event_str("dataset", |e| e.dataset)
    }

    /// `event.kind`.
    pub fn kind(&self) -> &str {
        self.event_str("kind", |e| e.kind)
    }

    /// `event.severity`, when the event has one.
    pub fn severity(&self) -> Option<u64> {
        match self {
            Event::Object(m) => Self::object_event_field(m, "severity").and_then(Value::as_u64),
            Event::Transaction(t) => t.event.severity,
            Event::Relay(r) => r.event.severity,
        }
    }

    /// `@timestamp`.
    pub fn timestamp(&self) -> &str {
        match self {
            Event::Object(m) => m.get("@timestamp").and_then(Value::as_str).unwrap_or(""),
            Event::Transaction(t) => &t.timestamp,
            Event::Relay(r) => &r.timestamp,
        }
    }
}

impl From<Map<String, Value>> for Event {
    fn from(m: Map<String, Value>) -> Self {
        Event::Object(m)
    }
}

/// A typed event as one JSON line, through serde_json with the same
/// formatter as [`to_json_line`] (so the same bytes as its map).
fn typed_json_line<T: serde::Serialize>(e: &T) -> Option<String> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        let mut ser = serde_json::Serializer::with_formatter(&mut *b, AsciiFormatter);
        e.serialize(&mut ser).ok()?;
        std::str::from_utf8(&b).ok().map(str::to_owned)
    })
}

pub const DATASET_SERVICE: &str = "qmwatch.service";
pub const DATASET_TRANSACTION: &str = "qmwatch.transaction";
pub const DATASET_ANOMALY: &str = "qmwatch.anomaly";
pub const DATASET_RELAY: &str = "qmwatch.relay";
pub const DATASET_PROBE: &str = "qmwatch.probe";
pub const DATASET_STATS: &str = "qmwatch.stats";

/// The ECS version the events follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.17.0";

/// Who observed the traffic: the `observer.*` fields stamped on every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observer {
    /// `observer.hostname`; also the syslog HOSTNAME.
    pub hostname: String,
    /// `observer.ingress.interface.name`: the interface packets were
    /// captured on. Live capture sets it; a replay has none.
    pub ingress_interface: Option<String>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::from_system()
    }
}

impl Observer {
    /// The machine's host name (kernel, then `/etc/hostname`, then
    /// `$HOSTNAME`, else `localhost`), printable ASCII, at most 255 bytes.
    pub fn from_system() -> Observer {
        let from_files = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| sanitize_hostname(&s))
            .find(|s| !s.is_empty());
        let hostname = from_files
            .or_else(|| {
                std::env::var("HOSTNAME")
                    .ok()
                    .map(|s| sanitize_hostname(&s))
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "localhost".to_string());
        Observer {
            hostname,
            ingress_interface: None,
        }
    }

    /// Adds `observer.hostname` (and the ingress interface, in live capture).
    pub fn stamp(&self, m: &mut Map<String, Value>) {
        let o = m
            .entry("observer")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = o {
            o.insert("hostname".into(), Value::String(self.hostname.clone()));
            if let Some(i) = &self.ingress_interface {
                o.insert("ingress".into(), json!({"interface": {"name": i}}));
            }
        }
    }
}

/// Printable ASCII without spaces, at most 255 bytes.
pub fn sanitize_hostname(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect()
}

/// A stable event id: the first 128 bits of SHA-1 over the parts (each
/// length-prefixed), in hex. The parts name the finding, never the time of
/// the run, so the same finding in the same capture has the same id.
pub fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha1::new();
    for p in parts {
        id_part(&mut h, p);
    }
    id_hex(h)
}

/// Feeds one length-prefixed part of a stable id.
fn id_part(h: &mut Sha1, p: &str) {
    h.update((p.len() as u64).to_be_bytes());
    h.update(p.as_bytes());
}

/// The first 128 bits of the digest, in lower-case hex.
fn id_hex(h: Sha1) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = h.finalize();
    let mut s = String::with_capacity(32);
    for &b in d.iter().take(16) {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// The id of a finding about one flow: dataset, Community ID, packet time
/// (ns) and what distinguishes findings of the same flow and time.
/// `m` is the event [`base`] built for that flow: its Community ID is
/// reused rather than computed again.
fn flow_id(dataset: &str, m: &Map<String, Value>, ts: u64, rest: &[&str]) -> String {
    let cid = m
        .get("network")
        .and_then(|n| n.get("community_id"))
        .and_then(Value::as_str)
        .unwrap_or("");
    flow_id_of(dataset, cid, ts, rest)
}

/// [`flow_id`] from the flow's Community ID.
fn flow_id_of(dataset: &str, cid: &str, ts: u64, rest: &[&str]) -> String {
    let mut h = Sha1::new();
    id_part(&mut h, dataset);
    id_part(&mut h, cid);
    let mut digits = [0u8; 20];
    id_part(&mut h, decimal(ts, &mut digits));
    for p in rest {
        id_part(&mut h, p);
    }
    id_hex(h)
}

/// `n` in decimal, written into `buf` (as `n.to_string()` would).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Serializes an event as one JSON line (no newline), ASCII only: anything
/// outside printable ASCII in a string is a `\u` escape, so every transport
/// (syslog included) carries it unchanged. The bytes are exactly those of
/// serde_json's compact serializer with [`AsciiFormatter`], written directly.
pub fn to_json_line(m: &Map<String, Value>) -> Option<String> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        write_object(m, &mut b)?;
        std::str::from_utf8(&b).ok().map(str::to_owned)
    })
}

fn write_object(m: &Map<String, Value>, out: &mut Vec<u8>) -> Option<()> {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write_value(v, out)?;
    }
    out.push(b'}');
    Some(())
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match n.as_u64() {
            Some(u) => {
                let mut digits = [0u8; 20];
                out.extend_from_slice(decimal(u, &mut digits).as_bytes());
            }
            None => {
                let mut ser = serde_json::Serializer::with_formatter(&mut *out, AsciiFormatter);
                serde::Serialize::serialize(n, &mut ser).ok()?;
            }
        },
        Value::String(s) => write_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(e, out)?;
            }
            out.push(b']');
        }
        Value::Object(o) => write_object(o, out)?,
    }
    Some(())
}

/// A JSON string as serde_json writes it (`"`, `\\` and control bytes
/// escaped, the short forms where JSON has them), with non-ASCII and DEL
/// as `\u` escapes of their UTF-16 units ([`AsciiFormatter`]).
fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // PLAIN[b]: byte b is written as it is.
    const PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0x20;
        while b < 0x7f {
            t[b] = b != b'"' as usize && b != b'\\' as usize;
            b += 1;
        }
        t
    };
    if bytes.iter().all(|&b| PLAIN[usize::from(b)]) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\x08' => out.extend_from_slice(b"\\b"),
            '\x0c' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c as u32 >= 0x7f => {
                let mut units = [0u16; 2];
                for &u in c.encode_utf16(&mut units).iter() {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[usize::from((u >> shift) & 0xf)]);
                    }
                }
            }
            c => out.push(c as u8),
        }
    }
    out.push(b'"');
}

/// serde_json's compact formatter, with non-ASCII and DEL escaped.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.bytes().all(|b| b < 0x7f) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            writer.write_all(fragment.get(start..i).unwrap_or_default().as_bytes())?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(writer, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(fragment.get(start..).unwrap_or_default().as_bytes())
    }
}

/// The reference serialization [`to_json_line`] must match byte for byte.
#[cfg(test)]
fn to_json_line_serde(m: &Map<String, Value>) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, AsciiFormatter);
    serde::Serialize::serialize(m, &mut ser).ok()?;
    String::from_utf8(buf).ok()
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, (rem % 3600) / 60);
    put(17, 2, rem % 60);
    put(20, 6, micros);
    String::from_utf8_lossy(&b).into_owned()
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

fn ip_bytes(ip: &IpAddr, buf: &mut [u8; 16]) -> usize {
    match ip {
        IpAddr::V4(v) => {
            buf[..4].copy_from_slice(&v.octets());
            4
        }
        IpAddr::V6(v) => {
            buf.copy_from_slice(&v.octets());
            16
        }
    }
}

/// Community ID v1 (seed 0) of a TCP flow: the same string whichever side
/// is given first, so a SIEM can join qmwatch with Zeek, Suricata or others.
pub fn community_id(a: SocketAddr, b: SocketAddr) -> String {
    let (mut ba, mut bb) = ([0u8; 16], [0u8; 16]);
    let la = ip_bytes(&a.ip(), &mut ba);
    let lb = ip_bytes(&b.ip(), &mut bb);
    let (ia, ib) = (&ba[..la], &bb[..lb]);
    let ((sa, pa), (sb, pb)) = if (ia, a.port()) <= (ib, b.port()) {
        ((ia, a.port()), (ib, b.port()))
    } else {
        ((ib, b.port()), (ia, a.port()))
    };
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(sa);
    h.update(sb);
    h.update([6u8, 0u8]);
    h.update(pa.to_be_bytes());
    h.update(pb.to_be_bytes());
    let mut s = String::with_capacity(30);
    s.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(h.finalize(), &mut s);
    s
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
    let mut m = host_base(ts, kind, dataset, category, types);
    let (c, sv) = (ep.client.ip().to_string(), ep.server.ip().to_string());
    let related = if c == sv {
        vec![Value::String(c.clone())]
    } else {
        vec![Value::String(c.clone()), Value::String(sv.clone())]
    };
    m.insert("source".into(), ip_port(c, ep.client.port()));
    m.insert("destination".into(), ip_port(sv, ep.server.port()));
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
    let mut rel = Map::new();
    rel.insert("ip".into(), Value::Array(related));
    m.insert("related".into(), Value::Object(rel));
    m
}

/// `{"ip": ip, "port": port}`.
fn ip_port(ip: String, port: u16) -> Value {
    let mut o = Map::new();
    o.insert("ip".into(), Value::String(ip));
    o.insert("port".into(), Value::from(port));
    Value::Object(o)
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
    let kind = if sanctioned { "event" } else { "alert" };
    let category: &[&str] = if sanctioned {
        &["network"]
    } else {
        &["network", "intrusion_detection"]
    };
    let mut m = base(
        ts,
        kind,
        DATASET_SERVICE,
        category,
        &["info", "protocol"],
        ep,
        Some(protocol),
    );
    set_event(&mut m, "action", json!("service_detected"));
    // A service is one finding per server and protocol, whichever flow
    // showed it first (with several workers that flow can differ).
    let server = ep.server.to_string();
    set_event(
        &mut m,
        "id",
        json!(stable_id(&[
            DATASET_SERVICE,
            &server,
            protocol.name(),
            kind
        ])),
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

/// The fields every event has: `@timestamp`, `ecs`, `event`, `observer`
/// (an event about the sensor itself has nothing more; see [`base`]).
fn host_base(
    ts: u64,
    kind: &str,
    dataset: &str,
    category: &[&str],
    types: &[&str],
) -> Map<String, Value> {
    fn strs(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|s| Value::String((*s).into())).collect())
    }
    fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
        let mut o = Map::new();
        for (k, v) in fields {
            o.insert(k.into(), v);
        }
        Value::Object(o)
    }
    let s = |v: &str| Value::String(v.into());
    let mut m = Map::new();
    m.insert("@timestamp".into(), Value::String(rfc3339(ts)));
    m.insert("ecs".into(), object([("version", s(ECS_VERSION))]));
    m.insert(
        "event".into(),
        object([
            ("kind", s(kind)),
            ("category", strs(category)),
            ("type", strs(types)),
            ("dataset", s(dataset)),
            ("module", s("qmwatch")),
        ]),
    );
    m.insert(
        "observer".into(),
        object([
            ("type", s("sensor")),
            ("product", s("qmwatch")),
            ("vendor", s("qmwatch")),
            ("version", s(env!("CARGO_PKG_VERSION"))),
        ]),
    );
    m
}

/// Which run a sensor event belongs to: host, interface, run start.
#[derive(Clone, Debug)]
pub struct RunId {
    pub hostname: String,
    pub interface: Option<String>,
    /// Wall-clock start of the run (ns since the epoch).
    pub started_ns: u64,
}

impl RunId {
    fn id(&self, dataset: &str, seq: u64) -> String {
        let (start, seq) = (self.started_ns.to_string(), seq.to_string());
        stable_id(&[
            dataset,
            &self.hostname,
            self.interface.as_deref().unwrap_or(""),
            &start,
            &seq,
        ])
    }
}

/// A `qmwatch.stats` metric event: the sensor's health at wall time `ts`.
/// `stats` is the `qmwatch.stats` object (documented in docs/events.md).
pub fn stats(ts: u64, run: &RunId, seq: u64, message: String, stats: Value) -> Map<String, Value> {
    let mut m = host_base(ts, "metric", DATASET_STATS, &["network"], &["info"]);
    set_event(&mut m, "action", json!("stats"));
    set_event(&mut m, "id", json!(run.id(DATASET_STATS, seq)));
    m.insert("message".into(), json!(message));
    put_qmwatch(&mut m, "stats", stats);
    m
}

/// What the capture-loss estimate measured over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaptureLoss {
    pub percent: f64,
    pub acked_bytes: u64,
    pub gap_bytes: u64,
    pub threshold_percent: f64,
    pub interval_seconds: f64,
}

/// A `qmwatch.anomaly` with action `capture_loss`: the sensor is missing
/// traffic the hosts exchanged (no flow: it is about the sensor).
pub fn capture_loss(ts: u64, run: &RunId, seq: u64, l: &CaptureLoss) -> Map<String, Value> {
    let mut m = host_base(
        ts,
        "event",
        DATASET_ANOMALY,
        &["network", "intrusion_detection"],
        &["info"],
    );
    set_event(&mut m, "action", json!("capture_loss"));
    set_event(&mut m, "id", json!(run.id("capture_loss", seq)));
    let detail = format!(
        "{:.2} % of the TCP bytes acknowledged in the last {:.1} s were never captured ({} of {} bytes; threshold {} %): the sensor is blind to part of the traffic",
        l.percent, l.interval_seconds, l.gap_bytes, l.acked_bytes, l.threshold_percent
    );
    m.insert(
        "message".into(),
        json!(format!("Anomaly capture_loss: {detail}")),
    );
    put_qmwatch(
        &mut m,
        "anomaly",
        json!({"kind": "capture_loss", "detail": detail}),
    );
    put_qmwatch(
        &mut m,
        "capture_loss",
        json!({
            "percent": l.percent,
            "acked_bytes": l.acked_bytes,
            "gap_bytes": l.gap_bytes,
            "threshold_percent": l.threshold_percent,
            "interval_seconds": l.interval_seconds,
        }),
    );
    m
}

/// A silence of the capture (`--idle-alarm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Silence {
    /// The alarm threshold, seconds.
    pub idle_alarm_seconds: f64,
    /// How long no packet came: up to now (`capture_silent`), or from the
    /// last packet before the silence to the first after it
    /// (`capture_resumed`).
    pub silent_seconds: f64,
    /// Wall-clock time (ns) of the last packet before the silence; `None`
    /// when none came since the start.
    pub last_packet_ns: Option<u64>,
}

/// A `qmwatch.anomaly` with action `capture_silent` (no packet for the
/// idle alarm: the mirror port may be gone) or, `resumed`, action
/// `capture_resumed` (packets again). About the sensor: no flow.
pub fn capture_silence(
    ts: u64,
    run: &RunId,
    seq: u64,
    resumed: bool,
    s: &Silence,
) -> Map<String, Value> {
    let kind = if resumed {
        "capture_resumed"
    } else {
        "capture_silent"
    };
    let mut m = host_base(
        ts,
        "event",
        DATASET_ANOMALY,
        &["network", "intrusion_detection"],
        &["info"],
    );
    set_event(&mut m, "action", json!(kind));
    set_event(&mut m, "id", json!(run.id(kind, seq)));
    let on = run
        .interface
        .as_deref()
        .map(|i| format!(" on {i}"))
        .unwrap_or_default();
    let detail = if resumed {
        format!(
            "packets again{on} after {:.1} s without any: the sensor sees traffic again",
            s.silent_seconds
        )
    } else {
        format!(
            "no packet{on} for {:.1} s (idle alarm {} s): the sensor is blind (a SPAN session removed, a cable or port down) or the network is quiet",
            s.silent_seconds, s.idle_alarm_seconds
        )
    };
    m.insert("message".into(), json!(format!("Anomaly {kind}: {detail}")));
    put_qmwatch(&mut m, "anomaly", json!({"kind": kind, "detail": detail}));
    put_qmwatch(
        &mut m,
        "capture_silence",
        json!({
            "idle_alarm_seconds": s.idle_alarm_seconds,
            "silent_seconds": s.silent_seconds,
            "last_packet": s.last_packet_ns.map(rfc3339),
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

/// The fields every flow event shares (see [`base`], which builds the same
/// as a map).
fn common(ts: u64, ep: &Endpoints, protocol: Protocol) -> Common {
    let (c, sv) = (ep.client.ip().to_string(), ep.server.ip().to_string());
    let related = if c == sv {
        vec![c.clone()]
    } else {
        vec![c.clone(), sv.clone()]
    };
    Common {
        timestamp: rfc3339(ts),
        source: IpPort {
            ip: c,
            port: ep.client.port(),
        },
        destination: IpPort {
            ip: sv,
            port: ep.server.port(),
        },
        network: Network {
            community_id: community_id(ep.client, ep.server),
            protocol: protocol.name(),
            transport: "tcp",
            ip_version: if ep.server.is_ipv4() { "ipv4" } else { "ipv6" },
        },
        observer: ObserverFields {
            hostname: None,
            ingress: None,
            product: "qmwatch",
            kind: "sensor",
            vendor: "qmwatch",
            version: env!("CARGO_PKG_VERSION"),
        },
        related: Related { ip: related },
    }
}

fn reply_fields(r: &Reply) -> ReplyFields {
    ReplyFields {
        code: r.code.letter(),
        text: r.text.text(),
        text_truncated: r.text.truncated,
    }
}

/// A `qmwatch.transaction` event.
pub fn transaction(
    t: &Transaction,
    client_trusted: bool,
    relay: Option<RelayVerdict>,
) -> TransactionEvent {
    let c = common(t.ts, &t.endpoints, t.protocol);
    let outcome = if t.codes.d + t.codes.z + t.codes.missing == 0 && t.codes.k > 0 {
        "success"
    } else if t.codes.k == 0 && t.codes.d + t.codes.z > 0 {
        "failure"
    } else {
        "unknown"
    };
    let index = t.index.to_string();
    let id = flow_id_of(
        DATASET_TRANSACTION,
        &c.network.community_id,
        t.ts,
        &[&index],
    );
    let mut tx = TransactionFields {
        bounce: None,
        client_trusted,
        codes: Codes {
            d: t.codes.d,
            k: t.codes.k,
            z: t.codes.z,
            missing: t.codes.missing,
        },
        complete: t.complete(),
        encoding: None,
        index: t.index,
        message_bytes: None,
        message_gap_bytes: None,
        open_relay: relay == Some(RelayVerdict::OpenRelay),
        recipient_count: None,
        recipients_not_stored: None,
        relay_attempt: relay.is_some(),
        request_state: "absent".to_string(),
        sender_truncated: false,
        session_confirmed: t.session_confirmed,
    };
    let (email, replies, message) = match &t.request {
        Some(r) => {
            tx.request_state = match r.state {
                RequestState::Complete => "complete".to_string(),
                RequestState::Truncated => "truncated".to_string(),
                RequestState::Malformed(k) => format!("malformed:{k}"),
            };
            tx.message_bytes = Some(r.message_bytes);
            tx.message_gap_bytes = (r.message_gap_bytes > 0).then_some(r.message_gap_bytes);
            tx.encoding = r.encoding.map(|e| e.name());
            tx.recipient_count = Some(r.recipient_count);
            let stored = r.recipients.len() as u64;
            tx.recipients_not_stored =
                (r.recipient_count > stored).then(|| r.recipient_count - stored);
            let from = r.sender.as_ref().map(|s| {
                tx.sender_truncated = s.truncated;
                tx.bounce = Some(s.wire_len == 0);
                Address { address: s.text() }
            });
            let email = Email {
                from,
                to: Address {
                    address: r.recipients.iter().map(|f| f.text()).collect(),
                },
            };
            let replies = r
                .recipients
                .iter()
                .zip(t.replies.iter())
                .map(|(rc, rep)| RecipientReply {
                    code: rep.as_ref().map(|r| r.code.letter()),
                    recipient: rc.text(),
                    recipient_truncated: rc.truncated,
                    text: rep.as_ref().map(|r| r.text.text()),
                })
                .collect();
            let verb = match t.protocol {
                Protocol::Qmtp => "package",
                Protocol::Qmqp => "message",
            };
            let message = format!(
                "{} {verb} from {} to {} ({} recipient(s)): {} K, {} Z, {} D, {} unanswered",
                t.protocol.name().to_uppercase(),
                t.endpoints.client,
                t.endpoints.server,
                r.recipient_count,
                t.codes.k,
                t.codes.z,
                t.codes.d,
                t.codes.missing
            );
            (Some(email), replies, message)
        }
        None => {
            let message = format!(
                "{} server {} replied to {} without a readable request",
                t.protocol.name().to_uppercase(),
                t.endpoints.server,
                t.endpoints.client
            );
            (None, Vec::new(), message)
        }
    };
    TransactionEvent {
        timestamp: c.timestamp,
        destination: c.destination,
        ecs: Ecs {
            version: ECS_VERSION,
        },
        email,
        event: EventFields {
            action: match t.protocol {
                Protocol::Qmtp => "qmtp_package",
                Protocol::Qmqp => "qmqp_message",
            },
            category: &["email", "network"],
            dataset: DATASET_TRANSACTION,
            id,
            kind: "event",
            module: "qmwatch",
            outcome,
            severity: None,
            types: &["protocol", "info"],
        },
        message,
        network: c.network,
        observer: c.observer,
        qmwatch: TransactionQmwatch {
            replies,
            reply: t.reply.as_ref().map(reply_fields),
            transaction: tx,
        },
        related: c.related,
        source: c.source,
    }
}

/// A `qmwatch.anomaly` event.
pub fn anomaly(
    ts: u64,
    ep: &Endpoints,
    protocol: Option<Protocol>,
    kind: qmwatch_proto::AnomalyKind,
    detail: &str,
) -> Map<String, Value> {
    let kind = kind.name();
    let mut m = base(
        ts,
        "event",
        DATASET_ANOMALY,
        &["network", "intrusion_detection"],
        &["info", "protocol"],
        ep,
        protocol,
    );
    set_event(&mut m, "action", json!(kind));
    let id = flow_id(DATASET_ANOMALY, &m, ts, &[kind, detail]);
    set_event(&mut m, "id", Value::String(id));
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

/// ECS `event.type` of a relay alert: each value is one ECS expects for one
/// of its categories (`allowed`/`denied` for intrusion_detection and
/// network, `info` for email).
fn relay_types(v: RelayVerdict) -> &'static [&'static str] {
    match v {
        RelayVerdict::OpenRelay => &["allowed", "info"],
        RelayVerdict::Refused | RelayVerdict::Deferred => &["denied", "info"],
        RelayVerdict::Unanswered => &["info"],
    }
}

fn relay_rule(v: RelayVerdict) -> Rule {
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
    Rule {
        category: "QMTP Open Relay (passive counterpart of Nessus 38789)",
        id,
        name,
    }
}

/// A `qmwatch.relay` alert: an untrusted client named a non-local recipient.
pub fn relay(
    t: &Transaction,
    a: &RelayAttempt<'_>,
    policy: &Policy,
    probe: Option<&Probe>,
) -> RelayEvent {
    let c = common(t.ts, &t.endpoints, t.protocol);
    let index = t.index.to_string();
    let id = flow_id_of(
        DATASET_RELAY,
        &c.network.community_id,
        t.ts,
        &[&index, a.verdict.name()],
    );
    let foreign = a
        .foreign
        .iter()
        .map(|(r, rep)| ForeignRecipient {
            code: rep.map(|rep| rep.code.letter()),
            recipient: r.clone(),
            text: rep.map(|rep| rep.text.text()),
        })
        .collect();
    let sender = t
        .request
        .as_ref()
        .and_then(|r| r.sender.as_ref())
        .map(|s| s.text());
    let email = Email {
        from: sender.map(|s| Address { address: s }),
        to: Address {
            address: a.foreign.iter().map(|(r, _)| r.clone()).collect(),
        },
    };
    let proto = t.protocol.name().to_uppercase();
    let who = match probe {
        Some(p) => format!("{} scanner {}", p.scanner, t.endpoints.client.ip()),
        None => t.endpoints.client.ip().to_string(),
    };
    let first = a.foreign.first().map(|(r, _)| r.as_str()).unwrap_or("");
    let message = match a.verdict {
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
    RelayEvent {
        timestamp: c.timestamp,
        destination: c.destination,
        ecs: Ecs {
            version: ECS_VERSION,
        },
        email,
        event: EventFields {
            action: a.verdict.name(),
            category: &["email", "intrusion_detection", "network"],
            dataset: DATASET_RELAY,
            id,
            kind: "alert",
            module: "qmwatch",
            outcome: match a.verdict {
                RelayVerdict::OpenRelay => "success",
                RelayVerdict::Refused | RelayVerdict::Deferred => "failure",
                RelayVerdict::Unanswered => "unknown",
            },
            severity: Some(severity(a.verdict, a.confident)),
            types: relay_types(a.verdict),
        },
        message,
        network: c.network,
        observer: c.observer,
        qmwatch: RelayQmwatch {
            relay: RelayFields {
                confident: a.confident,
                foreign_recipients: foreign,
                local_recipients: a.local_count,
                policy: PolicyFields {
                    description: policy.describe(),
                    local_domains_defaulted: policy.local_domains_defaulted,
                    trusted_networks_defaulted: policy.trusted_defaulted,
                },
                scanner: probe.map(|p| p.scanner.clone()),
                transaction_index: t.index,
                verdict: a.verdict.name(),
            },
        },
        related: c.related,
        rule: relay_rule(a.verdict),
        source: c.source,
    }
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
        set_event(&mut first, "type", json!(relay_types(worst)));
        set_event(
            &mut first,
            "outcome",
            json!(match worst {
                RelayVerdict::OpenRelay => "success",
                RelayVerdict::Refused | RelayVerdict::Deferred => "failure",
                RelayVerdict::Unanswered => "unknown",
            }),
        );
        first.insert(
            "rule".into(),
            serde_json::to_value(relay_rule(worst)).unwrap_or(Value::Null),
        );
    }
    // The aggregate is a finding of its own: its id is the first alert's,
    // qualified by what was folded into it.
    let first_id = first
        .get("event")
        .and_then(|e| e.get("id"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let (count_s, window_s) = (count.to_string(), (window_ns / 1_000_000_000).to_string());
    set_event(
        &mut first,
        "id",
        json!(stable_id(&[
            DATASET_RELAY,
            "aggregate",
            &first_id,
            &count_s,
            &window_s,
            worst.name()
        ])),
    );
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
        &["info"],
        &t.endpoints,
        Some(t.protocol),
    );
    set_event(&mut m, "severity", json!(21));
    set_event(&mut m, "action", json!("scanner_probe"));
    let index = t.index.to_string();
    let id = flow_id(DATASET_PROBE, &m, t.ts, &[&index]);
    set_event(&mut m, "id", Value::String(id));
    let outcome = if t.codes.k > 0 {
        "success"
    } else if t.codes.d + t.codes.z > 0 || t.reply.as_ref().is_some_and(|r| r.code.letter() != "K")
    {
        "failure"
    } else if t.reply.is_some() {
        "success"
    } else {
        "unknown"
    };
    set_event(&mut m, "outcome", json!(outcome));
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
    fn community_id_matches_reference_implementation() {
        // Values from the spec's reference implementation (Python
        // `communityid` 1.5, TCP, seed 0). Each case is checked in both
        // orders: the id must not depend on which side is the client.
        let cases = [
            // Lower address with the higher port: ordering by port first
            // would swap the endpoints and give a different id.
            (
                "192.0.2.1:40000",
                "192.0.2.2:209",
                "1:hSSxeEyfVOrgTHOSu2dBbsrs900=",
            ),
            // Same address: the ports decide the order.
            (
                "198.51.100.1:40000",
                "198.51.100.1:209",
                "1:ynVfBs99wiYpCClcGts25d9Jl80=",
            ),
            // Equal ports: the addresses decide the order.
            (
                "203.0.113.5:628",
                "203.0.113.9:628",
                "1:Txlxqt2ohkJTQ57O6ssyVGG+0kI=",
            ),
            (
                "1.2.3.4:1122",
                "5.6.7.8:3344",
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            ),
            (
                "[2001:db8::1]:40000",
                "[2001:db8::2]:209",
                "1:VD6R9YIA/wawptNWgxu+Lhm7+DI=",
            ),
            // Addresses equal in their first 8 bytes: all 16 must be hashed.
            (
                "[2001:db8::1]:50000",
                "[2001:db8::1:0:0:1]:628",
                "1:IfA8/S4FxH3deP+zxliAHUR2e0E=",
            ),
            (
                "[2001:db8::1]:50000",
                "[2001:db8::1]:628",
                "1:0aHzq6zuwyGQXXGLlHz/NoM+LVM=",
            ),
            (
                "[fe80::1]:1122",
                "[fe80::2]:3344",
                "1:z4Cp91yf8hKQyZMv3qo7NH6sE3k=",
            ),
        ];
        for (a, b, want) in cases {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(community_id(a, b), want, "{a} -> {b}");
            assert_eq!(community_id(b, a), want, "{b} -> {a}");
        }
    }

    #[test]
    fn json_line_matches_serde() {
        let v = json!({
            "a": "plain",
            "b": "quote \" backslash \\ ctl \u{1} \u{8} \u{c} \n \r \t \u{1f} del \u{7f} e\u{e9} \u{1F600} \u{2028}",
            "n": [0, 1, u64::MAX, -5, i64::MIN, 1.5, 0.1, 1e300, -0.0, 100.0],
            "o": {"x": null, "y": true, "z": false, "\u{e9}k\"": []},
            "e": {},
        });
        let Value::Object(m) = v else { unreachable!() };
        assert_eq!(to_json_line(&m), to_json_line_serde(&m));
        for ns in [0, 1, 999, 1_795_238_274_123_456_789, u64::MAX] {
            let mut d = [0u8; 20];
            assert_eq!(decimal(ns, &mut d), ns.to_string());
        }
    }

    /// Ids computed outside the project (Python hashlib): SHA-1 over
    /// 8-byte big-endian lengths and the parts, first 16 bytes in hex.
    #[test]
    fn ids_match_an_independent_computation() {
        assert_eq!(stable_id(&[]), "da39a3ee5e6b4b0d3255bfef95601890");
        // The length prefix keeps the parts apart.
        assert_eq!(stable_id(&["a", "bc"]), "ae9d42cc36ff72230d3027a273873081");
        assert_eq!(stable_id(&["ab", "c"]), "c27d1f025accf1fdcc822aaa1a6cca5e");
        assert_eq!(
            stable_id(&["qmwatch.relay", "aggregate", "", "3", "60", "open_relay"]),
            "c9069f99cb3e3feffe984a7be2fc1019"
        );
        let cid = "1:hSSxeEyfVOrgTHOSu2dBbsrs900=";
        let ds = "qmwatch.transaction";
        assert_eq!(
            flow_id_of(ds, cid, 1_795_000_000_123_456_789, &["1"]),
            "2750ca611e097885d58996be34ef4734"
        );
        assert_eq!(
            flow_id_of(ds, cid, 0, &["1"]),
            "1efdb95693500591ec55358b39afe0c4"
        );
        let mut m = Map::new();
        m.insert("network".into(), json!({ "community_id": cid }));
        assert_eq!(
            flow_id(ds, &m, 0, &["1"]),
            "1efdb95693500591ec55358b39afe0c4"
        );
    }

    #[test]
    fn sensor_event_ids_name_the_run() {
        let mut run = RunId {
            hostname: "sensor-1.example.net".into(),
            interface: Some("eth1".into()),
            started_ns: 1_795_000_000_000_000_000,
        };
        let id = |run: &RunId| {
            let m = stats(1, run, 3, String::new(), json!({}));
            m["event"]["id"].as_str().unwrap().to_string()
        };
        assert_eq!(id(&run), "8aba0a957df103a7c026ace540cd74ae");
        run.interface = None;
        assert_eq!(id(&run), "03b26ff14bc897f447d1c7f3da3ec53f");
    }

    /// Against Python's datetime: day and leap-year boundaries (2000 and
    /// 2024 leap, 2100 not), the largest u64, and random instants.
    #[test]
    fn timestamps_match_an_independent_calendar() {
        for (ns, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (999, "1970-01-01T00:00:00.000000Z"),
            (86_399_999_999_999, "1970-01-01T23:59:59.999999Z"),
            (86_400_000_000_000, "1970-01-02T00:00:00.000000Z"),
            (68_169_600_000_000_000, "1972-02-29T00:00:00.000000Z"),
            (951_782_399_999_999_999, "2000-02-28T23:59:59.999999Z"),
            (1_709_164_800_000_000_000, "2024-02-29T00:00:00.000000Z"),
            (4_102_444_799_999_999_000, "2099-12-31T23:59:59.999999Z"),
            (4_107_542_400_000_000_000, "2100-03-01T00:00:00.000000Z"),
            (u64::MAX, "2554-07-21T23:34:33.709551Z"),
            (8_655_628_691_030_458_795, "2244-04-14T21:18:11.030458Z"),
            (7_691_418_475_598_800_341, "2213-09-25T01:07:55.598800Z"),
            (107_979_628_678_664_349, "1973-06-03T18:20:28.678664Z"),
            (186_835_497_852_677_522, "1975-12-03T10:44:57.852677Z"),
            (15_032_457_632_618_298_465, "2446-05-11T18:40:32.618298Z"),
            (11_106_931_077_284_914_532, "2321-12-19T10:37:57.284914Z"),
        ] {
            assert_eq!(rfc3339(ns), want, "{ns}");
        }
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
