//! What a check tells: a report to read, and ECS events with the passive
//! events' field names.
//!
//! Owns: the text report; the events — per port a `qmwatch.check` event
//! (the result, each probe's bytes sent and answer escaped), and with the
//! passive side's own builders a `qmwatch.service` event per QMTP/QMQP
//! service found, a `qmwatch.transaction` event per relay test and a
//! `qmwatch.relay` alert when the tester is outside the trusted networks —
//! so a SIEM rule written for the sensor fires on the check too. Every
//! event says `observer.type: active_check` and has an id of its own run.
//!
//! Must not: judge (the verdicts come from `check` and `detect`), or put
//! unescaped server bytes in a report.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{classify, target, Config, Finding, PortReport, RelayResult, Step, OBSERVER_TYPE};
use qmwatch_proto::{Endpoints, Reply};
use qmwatch_sensor::detect::policy::Policy;
use qmwatch_sensor::detect::{judge, policy_note, probe, relay_finding, service_finding};
use qmwatch_sensor::event::{
    self, CheckFields, CheckProbe, Event, Observer, RelayTestFields, ReplyFields, DATASET_CHECK,
};
use qmwatch_sensor::finding::TransactionFinding;

/// Escaped answer bytes kept per probe in an event.
const EVIDENCE_BYTES: usize = 1024;

fn reply_fields(r: &Reply) -> ReplyFields {
    ReplyFields {
        code: r.code.letter(),
        text: r.text.text(),
        text_truncated: r.text.truncated,
    }
}

fn probe_fields(s: &Step) -> CheckProbe {
    CheckProbe {
        elapsed_ms: u64::try_from(s.elapsed.as_millis()).unwrap_or(u64::MAX),
        end: s.end.name(),
        error: s.error.as_ref().or(s.send_error.as_ref()).cloned(),
        probe: s.probe,
        received: classify::escaped(&s.received, EVIDENCE_BYTES),
        received_bytes: s.received.len(),
        sent_bytes: s.sent,
        source: s.local.map(|l| l.to_string()),
    }
}

/// The local address the finding was seen from, if a connection was made.
fn local_of(r: &PortReport) -> Option<SocketAddr> {
    r.proof_step()
        .and_then(|s| s.local)
        .or_else(|| r.steps.iter().find_map(|s| s.local))
}

/// The `qmwatch.check` event of one port.
fn check_event(r: &PortReport, run_ns: u64) -> Event {
    let server = r.job.addr;
    let service = r.finding.protocol().is_some();
    let fields = CheckFields {
        detail: r.detail.clone(),
        evidence: r.evidence.filter(|_| service).map(|e| e.name()),
        probes: r.steps.iter().map(probe_fields).collect(),
        proof: r.proof_step().map(|s| s.probe),
        relay_test: r.relay.as_ref().map(|t| RelayTestFields {
            client_trusted: t.client_trusted,
            probe: probe_fields(&t.step),
            protocol: t.protocol.name(),
            recipient: t.recipient.clone(),
            reply: t.reply.as_ref().map(reply_fields),
            verdict: t.result.name(),
        }),
        replies: service.then(|| r.replies.iter().map(reply_fields).collect()),
        result: r.finding.name(),
        sanctioned: service.then_some(r.sanctioned),
        service,
        target: r.job.target.clone(),
    };
    let (srv, run) = (server.to_string(), run_ns.to_string());
    let id = event::stable_id(&[DATASET_CHECK, &srv, &run]);
    let e = event::check(
        r.ts,
        server,
        local_of(r),
        r.finding.protocol(),
        r.finding.unreached(),
        id,
        fields,
    );
    Event::Check(Box::new(e))
}

/// Marks an event as the active check's: `observer.type`, and an id of
/// this run (the passive side's ids name findings in a capture; a re-test
/// is a new observation, not a duplicate to fold away).
fn as_check(mut e: Event, observer: &Observer, run_ns: u64) -> Event {
    e.stamp(observer);
    e.set_observer_type(OBSERVER_TYPE);
    let run = run_ns.to_string();
    let id = event::stable_id(&[OBSERVER_TYPE, e.id(), &run]);
    e.set_id(id);
    e
}

/// Every event of a check, port by port.
pub fn events(
    reports: &[PortReport],
    policy: &Policy,
    observer: &Observer,
    run_ns: u64,
) -> Vec<Event> {
    let mut out = Vec::new();
    for r in reports {
        let mut check = check_event(r, run_ns);
        check.stamp(observer);
        check.set_observer_type(OBSERVER_TYPE);
        out.push(check);
        if let (Some(p), Some(ev)) = (r.finding.protocol(), r.evidence) {
            let local = local_of(r)
                .unwrap_or_else(|| SocketAddr::new(target::unspecified_like(&r.job.addr.ip()), 0));
            let ep = Endpoints {
                client: local,
                server: r.job.addr,
            };
            let f = service_finding(r.ts, &ep, p, ev, r.sanctioned);
            let e = Event::Service(Box::new(event::service(&f)));
            out.push(as_check(e, observer, run_ns));
        }
        let Some(t) = r.relay.as_ref().and_then(|t| t.transaction.as_ref()) else {
            continue;
        };
        let attempt = judge(t, policy);
        let trusted = policy.is_trusted(t.endpoints.client.ip());
        let e = event::transaction(&TransactionFinding {
            transaction: t,
            client_trusted: trusted,
            relay: attempt.as_ref().map(|a| a.verdict),
        });
        out.push(as_check(Event::Transaction(Box::new(e)), observer, run_ns));
        if let Some(a) = attempt {
            let pr = t.request.as_ref().and_then(probe::recognise);
            let e = event::relay(&relay_finding(t, &a, &policy_note(policy), pr.as_ref()));
            out.push(as_check(Event::Relay(Box::new(e)), observer, run_ns));
        }
    }
    out
}

fn verdict_words(r: RelayResult) -> &'static str {
    match r {
        RelayResult::OpenRelay => "OPEN RELAY",
        RelayResult::AcceptedTrusted => "accepted for a trusted client (not an open relay)",
        RelayResult::Refused => "refused",
        RelayResult::Deferred => "deferred",
        RelayResult::Unanswered => "unanswered",
    }
}

/// The report a person reads.
// Long: the report a person reads, section after section in the order printed.
pub fn text(reports: &[PortReport], cfg: &Config, policy: &Policy) -> String {
    let mut s = String::new();
    let mut targets: Vec<&str> = reports.iter().map(|r| r.job.target.as_str()).collect();
    targets.dedup();
    let t = cfg.timeouts;
    let _ = writeln!(
        s,
        "qmwatch check: {} port{} on {} target{} (connect timeout {}, greeting wait {}, read timeout {}{})",
        reports.len(),
        plural(reports.len()),
        targets.len(),
        plural(targets.len()),
        super::seconds(t.connect),
        super::seconds(t.greeting),
        super::seconds(t.read),
        match cfg.source {
            Some(ip) => format!(", from {ip}"),
            None => String::new(),
        }
    );
    let _ = writeln!(s, "policy: {}", policy.describe());
    s.push('\n');
    for r in reports {
        let named = if r.job.target == r.job.addr.ip().to_string()
            || r.job.target == r.job.addr.to_string()
        {
            String::new()
        } else {
            format!(" ({})", r.job.target)
        };
        match r.finding.protocol() {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "{}{named}  {} service, {}",
                    r.job.addr,
                    p.name().to_uppercase(),
                    if r.sanctioned {
                        "sanctioned"
                    } else {
                        "UNEXPECTED (not sanctioned)"
                    }
                );
                let _ = writeln!(s, "    {}", r.detail);
            }
            None => {
                let _ = writeln!(s, "{}{named}  {}", r.job.addr, r.detail);
            }
        }
        if let Some(t) = &r.relay {
            let from = t
                .step
                .local
                .map(|l| l.ip().to_string())
                .unwrap_or_else(|| "?".into());
            let answer = match &t.reply {
                Some(rep) => format!(
                    "{} \"{}\"",
                    rep.code.letter(),
                    classify::escaped(&rep.text.bytes, 200)
                ),
                None if t.step.received.is_empty() => match &t.step.error {
                    Some(e) => format!("no reply ({e})"),
                    None => format!("no reply ({})", t.step.end.name().replace('_', " ")),
                },
                None => format!(
                    "no reply netstring: \"{}\"",
                    classify::escaped(&t.step.received, 200)
                ),
            };
            let _ = writeln!(
                s,
                "    relay test from {from} to {}: {} — {answer}",
                t.recipient,
                verdict_words(t.result)
            );
        }
    }
    s.push('\n');
    let count = |f: Finding| reports.iter().filter(|r| r.finding == f).count();
    let services = reports
        .iter()
        .filter(|r| r.finding.protocol().is_some())
        .count();
    let unexpected: Vec<&PortReport> = reports.iter().filter(|r| r.unexpected_service()).collect();
    let open: Vec<&PortReport> = reports.iter().filter(|r| r.open_relay()).collect();
    let _ = write!(
        s,
        "summary: {services} QMTP/QMQP service{} ({} QMTP, {} QMQP; {} unexpected)",
        plural(services),
        count(Finding::Qmtp),
        count(Finding::Qmqp),
        unexpected.len()
    );
    if cfg.relay_test {
        let mut by: Vec<String> = Vec::new();
        for v in [
            RelayResult::OpenRelay,
            RelayResult::AcceptedTrusted,
            RelayResult::Refused,
            RelayResult::Deferred,
            RelayResult::Unanswered,
        ] {
            let n = reports
                .iter()
                .filter(|r| r.relay.as_ref().is_some_and(|t| t.result == v))
                .count();
            if n > 0 {
                by.push(format!("{n} {}", v.name()));
            }
        }
        let _ = write!(
            s,
            "; relay tests: {}",
            if by.is_empty() {
                "none run".to_string()
            } else {
                by.join(", ")
            }
        );
    }
    let others = reports.len() - services;
    let closed = count(Finding::Closed);
    let unreached = reports.iter().filter(|r| r.finding.unreached()).count();
    let _ = writeln!(
        s,
        "; {others} other port{} ({closed} closed, {unreached} unreachable or not answering)",
        plural(others)
    );
    if unexpected.is_empty() && open.is_empty() {
        let _ = writeln!(s, "result: nothing found (exit status 0)");
    } else {
        let mut what: Vec<String> = unexpected
            .iter()
            .map(|r| {
                format!(
                    "unexpected {} service on {}",
                    r.finding.name().to_uppercase(),
                    r.job.addr
                )
            })
            .collect();
        what.extend(open.iter().map(|r| format!("open relay at {}", r.job.addr)));
        let _ = writeln!(s, "result: FOUND {} (exit status 1)", what.join(", "));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
