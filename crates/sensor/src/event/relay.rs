//! `qmwatch.relay`: an untrusted client named a recipient the site does
//! not receive mail for; and the alert of a window of such attempts.
//!
//! Owns: their fields and messages, and the ECS words of a verdict
//! (`event.outcome`, `event.type`), written once for both. Must not: judge
//! the attempt or rate it (the finding carries verdict, severity and rule).

use super::flow::{common, flow_ref, rule_fields, Head};
use super::ids::flow_id;
use super::text::{ip_text, upper_name, Addr, Ip};
use super::typed::{
    Address, AggregateFields, Email, ForeignRecipient, PolicyFields, RelayFields, RelayQmwatch,
};
use super::{stable_id, RelayEvent, DATASET_RELAY};
use crate::finding::{RelayFinding, RelayVerdict, RelayWindowFinding};

/// `event.outcome` of a verdict: whether the relaying worked.
fn outcome(v: RelayVerdict) -> &'static str {
    match v {
        RelayVerdict::OpenRelay => "success",
        RelayVerdict::Refused | RelayVerdict::Deferred => "failure",
        RelayVerdict::Unanswered => "unknown",
    }
}

/// ECS `event.type` of a relay alert: each value is one ECS expects for one
/// of its categories (`allowed`/`denied` for intrusion_detection and
/// network, `info` for email).
fn types(v: RelayVerdict) -> &'static [&'static str] {
    match v {
        RelayVerdict::OpenRelay => &["allowed", "info"],
        RelayVerdict::Refused | RelayVerdict::Deferred => &["denied", "info"],
        RelayVerdict::Unanswered => &["info"],
    }
}

/// A `qmwatch.relay` alert: an untrusted client named a non-local recipient.
pub fn relay(f: &RelayFinding<'_>) -> RelayEvent {
    let (t, a) = (f.transaction, f.attempt);
    let c = common(t.ts, &t.endpoints, Some(t.protocol));
    let index = t.index.to_string();
    let id = flow_id(
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
    let head = Head {
        dataset: DATASET_RELAY,
        action: a.verdict.name(),
        category: &["email", "intrusion_detection", "network"],
        types: types(a.verdict),
        outcome: Some(outcome(a.verdict)),
        id,
    };
    let qmwatch = RelayQmwatch {
        aggregate: None,
        relay: RelayFields {
            confident: a.confident,
            foreign_recipients: foreign,
            local_recipients: a.local_count,
            policy: PolicyFields {
                description: f.policy.description.clone(),
                local_domains_defaulted: f.policy.local_domains_defaulted,
                trusted_networks_defaulted: f.policy.trusted_networks_defaulted,
            },
            scanner: f.scanner.map(str::to_string),
            transaction_index: t.index,
            verdict: a.verdict.name(),
        },
    };
    let mut e = c.into_event(head, Some(&f.alert), message(f), qmwatch);
    e.email = Some(email);
    e
}

/// The message of one relay attempt.
fn message(f: &RelayFinding<'_>) -> String {
    let (t, a) = (f.transaction, f.attempt);
    let proto = upper_name(t.protocol);
    let who = match f.scanner {
        Some(s) => format!("{s} scanner {}", Ip(t.endpoints.client.ip())),
        None => ip_text(t.endpoints.client.ip()),
    };
    let server = Addr(t.endpoints.server);
    let first = a.foreign.first().map(|(r, _)| r.as_str()).unwrap_or("");
    match a.verdict {
        RelayVerdict::OpenRelay => {
            let accepted: Vec<&str> = a
                .foreign
                .iter()
                .filter(|(_, r)| r.is_some_and(|r| r.code.letter() == "K"))
                .map(|(r, _)| r.as_str())
                .collect();
            format!(
                "Open relay: {who} relayed to {} through {server} ({proto}), server replied K",
                accepted.join(", "),
            )
        }
        RelayVerdict::Refused => format!(
            "Relay attempt refused: {who} tried {first} through {server} ({proto}), server replied D"
        ),
        RelayVerdict::Deferred => format!(
            "Relay attempt deferred: {who} tried {first} through {server} ({proto}), server replied Z"
        ),
        RelayVerdict::Unanswered => {
            format!("Relay attempt: {who} tried {first} through {server} ({proto}), no reply seen")
        }
    }
}

/// The alert of a window of relay attempts of one client through one
/// server: the window's first alert `first`, folded with what the window
/// saw. With more than one attempt it takes the worst verdict's words,
/// severity and rule.
pub(crate) fn aggregate_relay(mut first: RelayEvent, w: RelayWindowFinding) -> RelayEvent {
    let window_s = w.window_ns / 1_000_000_000;
    let worst = w.worst;
    if w.count > 1 {
        first.message = format!(
            "{} relay attempts from {} through {}:{} within {window_s} s (worst: {})",
            w.count,
            first.source.ip,
            first.destination.ip,
            first.destination.port,
            worst.name()
        );
        first.event.severity = Some(w.alert.severity);
        first.event.action = worst.name();
        first.event.types = types(worst);
        first.event.outcome = Some(outcome(worst));
        first.rule = Some(rule_fields(w.alert.rule));
    }
    // The aggregate is a finding of its own: its id is the first alert's,
    // qualified by what was folded into it.
    let (count_s, window_str) = (w.count.to_string(), window_s.to_string());
    first.event.id = stable_id(&[
        DATASET_RELAY,
        "aggregate",
        &first.event.id,
        &count_s,
        &window_str,
        worst.name(),
    ]);
    first.qmwatch.relay.verdict = worst.name();
    first.qmwatch.aggregate = Some(AggregateFields {
        count: w.count,
        first: flow_ref(&w.first),
        last: flow_ref(&w.last),
        verdicts: w.verdicts,
        window_seconds: window_s,
    });
    first
}
