//! Events as JSON objects, for the one event whose fields its owner
//! assembles: the binary's active check (`qmwatch.check`).
//!
//! Owns: the fields every such event starts with ([`base`], [`host_base`])
//! and setting one field by name. Must not: build a flow dataset (those are
//! typed records, [`super::typed`]).

use qmwatch_proto::{Endpoints, Protocol};
use serde_json::{json, Map, Value};

use super::{community_id, rfc3339, ECS_VERSION};

/// The fields every event about a flow carries (the typed records carry
/// the same, [`super::flow`]).
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

/// Sets `event.<key>`.
pub fn set_event(m: &mut Map<String, Value>, key: &str, v: Value) {
    if let Some(Value::Object(e)) = m.get_mut("event") {
        e.insert(key.into(), v);
    }
}

/// The fields every event has: `@timestamp`, `ecs`, `event`, `observer`
/// ([`base`] adds the flow's).
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
