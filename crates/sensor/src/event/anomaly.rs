//! `qmwatch.anomaly` about a flow: what the protocol layer or the flow
//! table found odd, as it reported it.
//!
//! Owns: its fields and message. Must not: judge the anomaly (it is never
//! an alert; a SIEM rule may make it one).

use qmwatch_proto::Anomaly;

use super::flow::{common, Head};
use super::ids::flow_id;
use super::text::Addr;
use super::typed::{AnomalyFields, AnomalyQmwatch};
use super::{AnomalyEvent, DATASET_ANOMALY};

/// A `qmwatch.anomaly` event.
pub(crate) fn anomaly(a: &Anomaly) -> AnomalyEvent {
    let (ep, kind, detail) = (&a.endpoints, a.kind.name(), a.detail.as_str());
    let c = common(a.ts, ep, a.protocol);
    let id = flow_id(
        DATASET_ANOMALY,
        &c.network.community_id,
        a.ts,
        &[kind, detail],
    );
    let message = format!(
        "Anomaly {kind} on {} -> {}: {detail}",
        Addr(ep.client),
        Addr(ep.server)
    );
    let head = Head {
        dataset: DATASET_ANOMALY,
        action: kind,
        category: &["network", "intrusion_detection"],
        types: &["info", "protocol"],
        outcome: None,
        id,
    };
    let qmwatch = AnomalyQmwatch {
        anomaly: AnomalyFields {
            detail: detail.to_string(),
            kind,
        },
    };
    c.into_event(head, None, message, qmwatch)
}
