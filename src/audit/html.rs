//! The audit report as one self-contained HTML page, to attach to a ticket.
//!
//! Owns: the page — status, captures and policy, the servers table, a
//! timeline per server drawn here as inline SVG (transactions, and relay
//! attempts by verdict), every open relay's evidence, the errors — with its
//! style inline, no script, and a Content-Security-Policy that forbids
//! loading anything, so it renders the same offline, from a mail
//! attachment or a ticket system.
//!
//! Must not: put any text into the page unescaped (addresses and reply
//! texts are attacker-controlled), or reach the network.

use std::fmt::Write as _;

use qmwatch_sensor::detect::timeline::SERIES;
use qmwatch_sensor::detect::Inventory;
use qmwatch_sensor::event::rfc3339;

/// What the page shows.
pub struct Page<'a> {
    pub inventory: &'a Inventory,
    pub files: &'a [String],
    pub policy: &'a str,
    pub errors: &'a [String],
    pub packets: u64,
    /// 0 clean, 1 findings, 2 error.
    pub status: u8,
}

/// Text made safe for HTML content and attribute values. Control
/// characters are shown as `\xNN` rather than passed on.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(o, "\\x{:02x}", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o
}

/// Colours of the series, in [`SERIES`] order.
const COLOURS: [&str; 5] = ["#c9d6e3", "#c62828", "#2e7d32", "#ef8f00", "#78909c"];
const LABELS: [&str; 5] = [
    "transactions",
    "open relay",
    "refused",
    "deferred",
    "unanswered",
];

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1d2733;background:#fff}
h1{font-size:1.6em;margin:0 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid #d8dee6;padding-bottom:.2em}h3{font-size:1em;margin:1.2em 0 .2em}
table{border-collapse:collapse;width:100%;font-size:.92em}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e8ee;vertical-align:top}th{background:#f3f6f9}
td.n{text-align:right;font-variant-numeric:tabular-nums}code,.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.95em;word-break:break-all}
.status{padding:10px 14px;border-radius:6px;font-weight:600;margin:.6em 0 1em}.clean{background:#e6f4ea;color:#1e5631}.findings{background:#fdecea;color:#8a1c1c}.error{background:#fff4e0;color:#7a4b00}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:.85em;font-weight:600}.ok{background:#e6f4ea;color:#1e5631}.bad{background:#fdecea;color:#8a1c1c}
.meta td:first-child{width:13em;color:#4a5868}.legend span{margin-right:14px;white-space:nowrap}.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;border-radius:2px}
svg{display:block;width:100%;height:auto}svg text{font-size:11px;fill:#4a5868}.note{color:#4a5868;font-size:.9em}footer{margin-top:2em;color:#6b7785;font-size:.85em}";

/// The whole page.
pub fn render(p: &Page<'_>) -> String {
    let inv = p.inventory;
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // Nothing may be fetched or run, even if a bug let markup through.
    h.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        h,
        "<title>qmwatch audit: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        esc(&p.files.join(", "))
    );
    h.push_str("<h1>qmwatch audit</h1>\n");
    let (class, verdict) = match p.status {
        0 => (
            "clean",
            "CLEAN: no unsanctioned service, no open relay".to_string(),
        ),
        1 => (
            "findings",
            format!(
                "FINDINGS: {} unsanctioned service(s), {} open-relay recipient(s)",
                inv.unsanctioned_services(),
                inv.open_relays_total
            ),
        ),
        _ => (
            "error",
            "ERROR: the captures could not be read completely".to_string(),
        ),
    };
    let _ = writeln!(
        h,
        "<div class=\"status {class}\" id=\"status\">{}</div>",
        esc(&verdict)
    );

    meta(&mut h, p);
    servers(&mut h, inv);
    timelines(&mut h, inv);
    open_relays(&mut h, inv);
    if !p.errors.is_empty() {
        h.push_str("<h2 id=\"errors\">Errors</h2>\n<ul>\n");
        for e in p.errors {
            let _ = writeln!(h, "<li class=\"mono\">{}</li>", esc(e));
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(
        h,
        "<footer>Written by qmwatch {} from traffic alone. Times are packet times, UTC.</footer>\n</body>\n</html>",
        esc(env!("CARGO_PKG_VERSION"))
    );
    h
}

fn meta(h: &mut String, p: &Page<'_>) {
    let inv = p.inventory;
    h.push_str("<table class=\"meta\">\n");
    let files: Vec<String> = p
        .files
        .iter()
        .map(|f| format!("<code>{}</code>", esc(f)))
        .collect();
    let _ = writeln!(
        h,
        "<tr><td>captures</td><td>{} ({} packets)</td></tr>",
        files.join(", "),
        p.packets
    );
    let _ = writeln!(h, "<tr><td>policy</td><td>{}</td></tr>", esc(p.policy));
    let attempts: Vec<String> = qmwatch_sensor::detect::RelayVerdict::ALL
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                esc(v.name()),
                inv.relay_attempts.get(v.name()).copied().unwrap_or(0)
            )
        })
        .collect();
    let total: u64 = inv.relay_attempts.values().sum();
    let _ = writeln!(
        h,
        "<tr><td>relay attempts</td><td id=\"relay-attempts\">{total} ({})</td></tr>",
        attempts.join(", ")
    );
    let _ = writeln!(
        h,
        "<tr><td>open-relay recipients</td><td>{}</td></tr>",
        inv.open_relays_total
    );
    if !inv.probes.is_empty() {
        let probes: Vec<String> = inv
            .probes
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>scanner probes</td><td>{}</td></tr>",
            probes.join(", ")
        );
    }
    h.push_str("</table>\n");
}

/// `ip:port`, with brackets for IPv6.
fn addr(a: &std::net::SocketAddr) -> String {
    esc(&a.to_string())
}

fn servers(h: &mut String, inv: &Inventory) {
    let _ = writeln!(
        h,
        "<h2 id=\"servers\">QMTP/QMQP servers seen: {}</h2>",
        inv.servers.len()
    );
    if inv.servers.is_empty() {
        h.push_str("<p class=\"note\">No QMTP or QMQP server was seen.</p>\n");
        return;
    }
    h.push_str("<table id=\"servers-table\">\n<tr><th>server</th><th>protocol</th><th>status</th><th>first seen</th><th>last seen</th><th>transactions</th><th>clients</th></tr>\n");
    for ((a, proto), s) in &inv.servers {
        let status = if s.sanctioned {
            "<span class=\"badge ok\">sanctioned</span>"
        } else {
            "<span class=\"badge bad\">NOT SANCTIONED</span>"
        };
        let clients: Vec<String> = s.clients.iter().map(|c| esc(&c.to_string())).collect();
        let _ = writeln!(
            h,
            "<tr class=\"server\" data-server=\"{a}\"><td class=\"mono\">{a}</td><td>{p}</td><td>{status}</td><td>{first}</td><td>{last}</td><td class=\"n\">{tx}</td><td><details><summary>{n}{more}</summary><span class=\"mono\">{list}</span></details></td></tr>",
            a = addr(a),
            p = esc(&proto.name().to_uppercase()),
            first = esc(&rfc3339(s.first_seen)),
            last = esc(&rfc3339(s.last_seen)),
            tx = s.transactions,
            n = s.clients.len(),
            more = if s.clients_capped { "+" } else { "" },
            list = clients.join(", "),
        );
    }
    h.push_str("</table>\n");
    if inv.servers_not_stored > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} more servers were seen but not kept (cap).</p>",
            inv.servers_not_stored
        );
    }
}

/// Plot geometry.
const W: f64 = 760.0;
const X0: f64 = 44.0;
const X1: f64 = 748.0;
const TOP: f64 = 12.0;
const BASE: f64 = 84.0;
const HEIGHT: f64 = 104.0;

fn timelines(h: &mut String, inv: &Inventory) {
    if inv.servers.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"timelines\">Activity over time</h2>\n<p class=\"legend\">");
    for (c, l) in COLOURS.iter().zip(LABELS) {
        let _ = write!(
            h,
            "<span><i class=\"sw\" style=\"background:{c}\"></i>{l}</span>"
        );
    }
    h.push_str("<br><span class=\"note\">Grey bars: transactions per time bucket; coloured bars inside them: relay attempts by verdict.</span></p>\n");
    // One time axis for every server, so that they line up.
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for s in inv.servers.values() {
        for (start, _) in s.timeline.buckets() {
            lo = lo.min(start);
            hi = hi.max(start.saturating_add(s.timeline.width_ns()));
        }
    }
    for ((a, proto), s) in &inv.servers {
        let _ = writeln!(
            h,
            "<h3 class=\"mono\">{} <span class=\"note\">{}</span></h3>",
            addr(a),
            esc(&proto.name().to_uppercase())
        );
        if s.timeline.is_empty() || lo >= hi {
            h.push_str("<p class=\"note\">No transaction seen (or too many servers to keep every timeline).</p>\n");
            continue;
        }
        svg(h, s, &a.to_string(), lo, hi);
    }
}

// Long: one SVG drawing, element after element; split, its scale and coordinates would be passed around.
fn svg(h: &mut String, s: &qmwatch_sensor::detect::ServerInfo, name: &str, lo: u64, hi: u64) {
    let t = &s.timeline;
    let span = (hi - lo) as f64;
    let max = t
        .buckets()
        .map(|(_, b)| b.iter().copied().max().unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = (BASE - TOP) / f64::from(max);
    let _ = writeln!(
        h,
        "<svg viewBox=\"0 0 {W} {HEIGHT}\" width=\"{W}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"activity of {}\">",
        esc(name)
    );
    let _ = writeln!(
        h,
        "<line x1=\"{X0}\" y1=\"{BASE}\" x2=\"{X1}\" y2=\"{BASE}\" stroke=\"#9aa7b4\"/><line x1=\"{X0}\" y1=\"{TOP}\" x2=\"{X0}\" y2=\"{BASE}\" stroke=\"#d8dee6\"/>"
    );
    let _ = writeln!(
        h,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max}</text><text x=\"{}\" y=\"{BASE}\" text-anchor=\"end\">0</text>",
        X0 - 4.0,
        TOP + 8.0,
        X0 - 4.0
    );
    let width = t.width_ns() as f64;
    for (start, b) in t.buckets() {
        if b.iter().all(|v| *v == 0) {
            continue;
        }
        let x = X0 + (start.saturating_sub(lo)) as f64 / span * (X1 - X0);
        let w = (width / span * (X1 - X0) - 1.0).max(2.0);
        let mut tip = format!(
            "{} + {}: {} transaction(s)",
            rfc3339(start),
            duration(t.width_ns()),
            b[0]
        );
        for (i, label) in LABELS.iter().enumerate().skip(1) {
            if let Some(v) = b.get(i).filter(|v| **v > 0) {
                let _ = write!(tip, ", {v} {label}");
            }
        }
        let _ = write!(h, "<g><title>{}</title>", esc(&tip));
        let tx_h = f64::from(b[0]) * scale;
        let _ = write!(
            h,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{tx_h:.1}\" fill=\"{}\"/>",
            BASE - tx_h,
            COLOURS[0]
        );
        // Relay attempts stacked inside the transactions bar.
        let inset = (w * 0.2).min(4.0);
        let mut y = BASE;
        for (i, colour) in COLOURS.iter().enumerate().skip(1) {
            let v = b.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let bh = f64::from(v) * scale;
            y -= bh;
            let _ = write!(
                h,
                "<rect class=\"{}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"/>",
                SERIES.get(i).copied().unwrap_or_default(),
                x + inset,
                (w - 2.0 * inset).max(1.0)
            );
        }
        h.push_str("</g>\n");
    }
    let _ = writeln!(
        h,
        "<text x=\"{X0}\" y=\"{}\">{}</text><text x=\"{X1}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">bucket {}</text>",
        BASE + 14.0,
        esc(&short_time(lo)),
        BASE + 14.0,
        esc(&short_time(hi)),
        (X0 + X1) / 2.0,
        BASE + 14.0,
        esc(&duration(t.width_ns()))
    );
    h.push_str("</svg>\n");
}

/// `2026-11-21 05:17:45` from a packet time.
fn short_time(ns: u64) -> String {
    let s = rfc3339(ns);
    s.get(..19).map(|x| x.replace('T', " ")).unwrap_or(s)
}

fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn open_relays(h: &mut String, inv: &Inventory) {
    let _ = writeln!(
        h,
        "<h2 id=\"open-relays\">Open relays: {} accepted foreign recipient(s)</h2>",
        inv.open_relays_total
    );
    if inv.open_relays.is_empty() {
        h.push_str("<p class=\"note\">No server accepted a foreign recipient from an untrusted client.</p>\n");
        return;
    }
    h.push_str("<table id=\"open-relays-table\">\n<tr><th>time</th><th>client</th><th>server</th><th>protocol</th><th>recipient</th><th>server reply</th><th>scanner</th></tr>\n");
    for o in &inv.open_relays {
        let _ = writeln!(
            h,
            "<tr class=\"open-relay\"><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">K{}</td><td>{}</td></tr>",
            esc(&rfc3339(o.ts)),
            esc(&o.client.ip().to_string()),
            addr(&o.server),
            esc(&o.protocol.name().to_uppercase()),
            esc(&o.recipient),
            esc(&o.reply_text),
            o.scanner.as_deref().map(esc).unwrap_or_default()
        );
    }
    h.push_str("</table>\n");
    let shown = inv.open_relays.len() as u64;
    if inv.open_relays_total > shown {
        let _ = writeln!(
            h,
            "<p class=\"note\">The first {shown} are listed; {} more were counted.</p>",
            inv.open_relays_total - shown
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmwatch_proto::Protocol;
    use qmwatch_sensor::detect::{OpenRelay, ServerInfo};
    use std::collections::BTreeSet;

    const HOSTILE: &str = "<script>alert(1)</script><img src=x onerror=\"alert('x')\">&\u{1}";

    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        let server: std::net::SocketAddr = "192.0.2.25:209".parse().unwrap();
        let mut info = ServerInfo {
            first_seen: 1_800_000_000_000_000_000,
            last_seen: 1_800_000_100_000_000_000,
            transactions: 3,
            clients: BTreeSet::new(),
            clients_capped: false,
            sanctioned: false,
            evidence: "request_and_reply",
            timeline: Default::default(),
        };
        info.clients.insert("203.0.113.9".parse().unwrap());
        info.timeline.add(1_800_000_000_000_000_000, 0);
        info.timeline.add(1_800_000_000_000_000_000, 1);
        inv.servers.insert((server, Protocol::Qmtp), info);
        inv.open_relays_total = 1;
        inv.open_relays.push(OpenRelay {
            ts: 1_800_000_000_000_000_000,
            client: "203.0.113.9:40000".parse().unwrap(),
            server,
            protocol: Protocol::Qmtp,
            recipient: format!("victim@example.com{HOSTILE}"),
            reply_text: format!("ok {HOSTILE}"),
            scanner: Some(HOSTILE.to_string()),
        });
        inv.probes.insert(HOSTILE.to_string(), 1);
        inv
    }

    #[test]
    fn attacker_text_is_escaped_everywhere() {
        let inv = inventory();
        let files = vec![format!("cap{HOSTILE}.pcap")];
        let errors = vec![HOSTILE.to_string()];
        let html = render(&Page {
            inventory: &inv,
            files: &files,
            policy: HOSTILE,
            errors: &errors,
            packets: 10,
            status: 1,
        });
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("onerror=\""), "{html}");
        assert!(!html.contains('\u{1}'));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("\\x01"));
        // Nothing is fetched: no URL at all.
        assert_eq!(html.matches("http").count(), 1, "{html}");
        assert!(html.contains("http-equiv=\"Content-Security-Policy\""));
    }

    #[test]
    fn the_page_holds_servers_timeline_and_evidence() {
        let inv = inventory();
        let html = render(&Page {
            inventory: &inv,
            files: &["a.pcap".to_string()],
            policy: "p",
            errors: &[],
            packets: 10,
            status: 1,
        });
        assert!(html.contains("192.0.2.25:209"));
        assert!(html.contains("NOT SANCTIONED"));
        assert!(html.contains("<svg"));
        assert!(html.contains("class=\"open_relay\""));
        assert!(html.contains("class=\"open-relay\""));
        assert!(html.contains("203.0.113.9"));
    }
}
