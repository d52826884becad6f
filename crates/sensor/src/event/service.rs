//! `qmwatch.service`: a QMTP/QMQP server seen for the first time.
//!
//! Owns: its fields and message. Must not: decide whether the server is
//! sanctioned or how severe an unexpected one is (the finding says).

use super::flow::{common, kind, Head};
use super::text::{ip_text, upper_name};
use super::typed::{ServiceFields, ServiceQmwatch};
use super::{stable_id, ServiceEvent, DATASET_SERVICE};
use crate::finding::ServiceFinding;

/// A `qmwatch.service` event: an alert when the finding is one (an
/// unexpected service), plain inventory otherwise.
pub fn service(f: &ServiceFinding<'_>) -> ServiceEvent {
    let (ep, protocol) = (f.endpoints, f.protocol);
    let alert = f.alert.as_ref();
    let c = common(f.ts, ep, Some(protocol));
    // A service is one finding per server and protocol, whichever flow
    // showed it first (with several workers that flow can differ).
    let server = ep.server.to_string();
    let id = stable_id(&[DATASET_SERVICE, &server, protocol.name(), kind(alert)]);
    let proto = upper_name(protocol);
    let port_word = if f.standard_port {
        "standard"
    } else {
        "non-standard"
    };
    let message = if f.sanctioned {
        format!("Sanctioned {proto} service on {server} ({port_word} port)")
    } else {
        format!(
            "Unexpected {proto} service on {server} ({port_word} port): not a sanctioned server"
        )
    };
    let head = Head {
        dataset: DATASET_SERVICE,
        action: "service_detected",
        category: if alert.is_some() {
            &["network", "intrusion_detection"]
        } else {
            &["network"]
        },
        types: &["info", "protocol"],
        outcome: None,
        id,
    };
    let qmwatch = ServiceQmwatch {
        service: ServiceFields {
            address: ip_text(ep.server.ip()),
            evidence: f.evidence,
            port: ep.server.port(),
            protocol: protocol.name(),
            sanctioned: f.sanctioned,
            standard_port: f.standard_port,
        },
    };
    c.into_event(head, alert, message, qmwatch)
}
