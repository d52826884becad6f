//! The audit report: what a person reads in one glance after a replay.
//!
//! Owns: rendering the detector's inventory (servers, relay attempts by
//! verdict, open relays with their evidence) as text, as one JSON
//! document, or as one self-contained HTML page ([`html`]), and the exit
//! status a pipeline acts on: 0 clean, 1 when an
//! unsanctioned service or an open relay was seen, 2 on error.
//!
//! Must not: judge anything itself — every verdict comes from `detect`.

pub mod html;

use std::fmt::Write as _;

use serde_json::json;

use qmwatch_sensor::detect::RelayVerdict;
use qmwatch_sensor::event::rfc3339;
use qmwatch_sensor::pipeline::RunReport;

/// How the report is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Html,
}

/// 0 clean, 1 findings, 2 error.
pub fn exit_status(r: &RunReport) -> u8 {
    let inv = &r.detect.inventory;
    if !r.errors.is_empty() || r.interrupted {
        2
    } else if inv.unsanctioned_services() > 0 || inv.open_relays_total > 0 {
        1
    } else {
        0
    }
}

pub fn render(r: &RunReport, files: &[String], policy: &str, format: Format) -> String {
    match format {
        Format::Text => text(r, files, policy),
        Format::Html => html::render(&html::Page {
            inventory: &r.detect.inventory,
            files,
            policy,
            errors: &r.errors,
            packets: r.decode.frames,
            status: exit_status(r),
        }),
        Format::Json => {
            let mut s =
                serde_json::to_string_pretty(&json_report(r, files, policy)).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

fn verdict_counts(r: &RunReport) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for v in RelayVerdict::ALL {
        let n = r
            .detect
            .inventory
            .relay_attempts
            .get(v.name())
            .copied()
            .unwrap_or(0);
        m.insert(v.name().into(), json!(n));
    }
    m
}

pub fn json_report(r: &RunReport, files: &[String], policy: &str) -> serde_json::Value {
    let inv = &r.detect.inventory;
    let servers: Vec<_> = inv
        .servers
        .iter()
        .map(|((addr, proto), s)| {
            json!({
                "address": addr.ip().to_string(),
                "port": addr.port(),
                "protocol": proto.name(),
                "sanctioned": s.sanctioned,
                "standard_port": addr.port() == proto.standard_port(),
                "first_seen": rfc3339(s.first_seen),
                "last_seen": rfc3339(s.last_seen),
                "transactions": s.transactions,
                "clients": s.clients.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "clients_truncated": s.clients_capped,
                "evidence": s.evidence,
                "timeline": timeline_json(&s.timeline),
            })
        })
        .collect();
    let open: Vec<_> = inv
        .open_relays
        .iter()
        .map(|o| {
            json!({
                "@timestamp": rfc3339(o.ts),
                "client": o.client.to_string(),
                "server": o.server.to_string(),
                "protocol": o.protocol.name(),
                "recipient": o.recipient,
                "reply": format!("K{}", o.reply_text),
                "scanner": o.scanner,
            })
        })
        .collect();
    let status = exit_status(r);
    json!({
        "captures": files,
        "policy": policy,
        "status": match status { 0 => "clean", 1 => "findings", _ => "error" },
        "exit_status": status,
        "servers": servers,
        "unsanctioned_services": inv.unsanctioned_services(),
        "relay_attempts": verdict_counts(r),
        "open_relays": open,
        "open_relay_recipients_total": inv.open_relays_total,
        "probes": inv.probes,
        "errors": r.errors,
        "packets": r.decode.frames,
    })
}

/// A server's timeline: the bucket width and every bucket with something
/// in it (its start, and a count per series).
fn timeline_json(t: &qmwatch_sensor::detect::timeline::Timeline) -> serde_json::Value {
    use qmwatch_sensor::detect::timeline::SERIES;
    let buckets: Vec<_> = t
        .buckets()
        .filter(|(_, b)| b.iter().any(|v| *v > 0))
        .map(|(start, b)| {
            let mut m = serde_json::Map::new();
            m.insert("start".into(), json!(rfc3339(start)));
            for (name, v) in SERIES.iter().zip(b) {
                m.insert((*name).into(), json!(v));
            }
            serde_json::Value::Object(m)
        })
        .collect();
    json!({
        "bucket_seconds": t.width_ns() / 1_000_000_000,
        "buckets": buckets,
    })
}

fn text(r: &RunReport, files: &[String], policy: &str) -> String {
    let inv = &r.detect.inventory;
    let mut s = String::new();
    let status = exit_status(r);
    let _ = writeln!(
        s,
        "qmwatch audit of {} capture file(s), {} packets",
        files.len(),
        r.decode.frames
    );
    let _ = writeln!(s, "policy: {policy}");
    let _ = writeln!(s);
    let _ = writeln!(s, "QMTP/QMQP servers seen: {}", inv.servers.len());
    for ((addr, proto), sv) in &inv.servers {
        let _ = writeln!(
            s,
            "  {:<28} {:<4} {:<14} first {}  last {}  transactions {}  clients {}{}",
            addr.to_string(),
            proto.name().to_uppercase(),
            if sv.sanctioned {
                "sanctioned"
            } else {
                "NOT SANCTIONED"
            },
            rfc3339(sv.first_seen),
            rfc3339(sv.last_seen),
            sv.transactions,
            sv.clients.len(),
            if sv.clients_capped { "+" } else { "" }
        );
    }
    let counts = verdict_counts(r);
    let total: u64 = counts.values().filter_map(|v| v.as_u64()).sum();
    let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s);
    let _ = writeln!(s, "Relay attempts: {total} ({})", list.join(", "));
    let _ = writeln!(
        s,
        "Open relays: {} accepted foreign recipient(s)",
        inv.open_relays_total
    );
    for o in &inv.open_relays {
        let _ = writeln!(
            s,
            "  {}  {} -> {} ({})  {}  replied \"K{}\"{}",
            rfc3339(o.ts),
            o.client.ip(),
            o.server,
            o.protocol.name().to_uppercase(),
            o.recipient,
            o.reply_text,
            o.scanner
                .as_ref()
                .map(|n| format!("  [{n} probe]"))
                .unwrap_or_default()
        );
    }
    if !inv.probes.is_empty() {
        let p: Vec<String> = inv.probes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "Scanner probes: {}", p.join(", "));
    }
    for e in &r.errors {
        let _ = writeln!(s, "error: {e}");
    }
    let _ = writeln!(s);
    let verdict = match status {
        0 => "CLEAN: no unsanctioned service, no open relay".to_string(),
        1 => format!(
            "FINDINGS: {} unsanctioned service(s), {} open-relay recipient(s)",
            inv.unsanctioned_services(),
            inv.open_relays_total
        ),
        _ => "ERROR: the captures could not be read completely".to_string(),
    };
    let _ = writeln!(s, "{verdict}");
    s
}
