//! Every anomaly kind qmwatch can write (`AnomalyKind::ALL`) is documented
//! in docs/events.md and listed in docs/events.schema.json, and the schema
//! names no kind the code does not have: a new kind cannot ship
//! undocumented, and a removed one does not linger in the schema.

use std::collections::BTreeSet;
use std::path::PathBuf;

use qmwatch_proto::AnomalyKind;
use serde_json::Value;

fn read(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn names() -> BTreeSet<&'static str> {
    AnomalyKind::ALL
        .into_iter()
        .map(AnomalyKind::name)
        .collect()
}

/// Every string a `const` or `enum` of `v` allows.
fn allowed(v: &Value, into: &mut BTreeSet<String>) {
    if let Some(s) = v.get("const").and_then(Value::as_str) {
        into.insert(s.to_string());
    }
    for s in v
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = s.as_str() {
            into.insert(s.to_string());
        }
    }
}

/// Every kind the schema names for `qmwatch.anomaly.kind`, wherever it
/// constrains it (the shared list, and the sensor anomalies' own).
fn schema_kinds(v: &Value, into: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            let kind = m
                .get("anomaly")
                .and_then(|a| a.get("properties"))
                .and_then(|p| p.get("kind"));
            if let Some(k) = kind {
                allowed(k, into);
            }
            for v in m.values() {
                schema_kinds(v, into);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| schema_kinds(v, into)),
        _ => {}
    }
}

#[test]
fn every_kind_is_documented_in_events_md() {
    let md = read("docs/events.md");
    let missing: Vec<&str> = names()
        .into_iter()
        .filter(|n| !md.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "anomaly kinds not documented in docs/events.md: {missing:?}"
    );
}

#[test]
fn the_schema_lists_exactly_the_kinds() {
    let schema: Value = serde_json::from_str(&read("docs/events.schema.json")).unwrap();
    let list = &schema["$defs"]["anomaly_kind"];
    let mut listed = BTreeSet::new();
    allowed(list, &mut listed);
    let names: BTreeSet<String> = names().into_iter().map(String::from).collect();
    assert_eq!(
        listed.difference(&names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the schema's anomaly_kind lists kinds the code does not have"
    );
    assert_eq!(
        names.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "anomaly kinds missing from the schema's anomaly_kind"
    );
    // Both the kind and the anomaly's event.action take their values from
    // that list.
    let anomaly = &schema["$defs"]["anomaly"]["properties"];
    for at in [
        &anomaly["qmwatch"]["properties"]["anomaly"]["properties"]["kind"],
        &anomaly["event"]["properties"]["action"],
    ] {
        assert_eq!(at["$ref"], "#/$defs/anomaly_kind", "{at}");
    }
    // Other places that narrow the kind (the sensor anomalies) name kinds
    // of the list.
    let mut narrowed = BTreeSet::new();
    schema_kinds(&schema, &mut narrowed);
    assert!(!narrowed.is_empty());
    for k in &narrowed {
        assert!(
            names.contains(k),
            "the schema narrows the kind to unknown {k}"
        );
    }
}
