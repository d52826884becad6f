//! `qmwatch.probe`: a known scanner's probe went by.
//!
//! Owns: its fields, message and outcome (what the server answered). Must
//! not: recognise probes or rate them (`detect` does both).

use super::flow::{common, Head};
use super::ids::flow_id;
use super::typed::{ProbeAnswer, ProbeFields, ProbeQmwatch};
use super::{ProbeEvent, DATASET_PROBE};
use crate::finding::ProbeFinding;

/// A `qmwatch.probe` event.
pub(crate) fn probe(f: &ProbeFinding<'_>) -> ProbeEvent {
    let (t, p) = (f.transaction, f.probe);
    let c = common(t.ts, &t.endpoints, Some(t.protocol));
    let index = t.index.to_string();
    let id = flow_id(DATASET_PROBE, &c.network.community_id, t.ts, &[&index]);
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
    let answers = t
        .replies
        .iter()
        .map(|r| ProbeAnswer {
            code: r.as_ref().map(|r| r.code.letter()),
            text: r.as_ref().map(|r| r.text.text()),
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
    let message = format!(
        "{} probe (plugin 11134, {} form) from {} to {}: {answer}",
        p.scanner, p.form, t.endpoints.client, t.endpoints.server
    );
    let head = Head {
        dataset: DATASET_PROBE,
        action: "scanner_probe",
        category: &["intrusion_detection", "network"],
        types: &["info"],
        outcome: Some(outcome),
        id,
    };
    let qmwatch = ProbeQmwatch {
        probe: ProbeFields {
            answers,
            client_trusted: f.client_trusted,
            form: p.form,
            plugin: "11134",
            scanner: p.scanner.clone(),
        },
    };
    c.into_event(head, Some(&f.alert), message, qmwatch)
}
