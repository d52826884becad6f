//! The envelope every flow event shares: time, endpoints, network,
//! observer, and `event.*` with the alert detection decided on.
//!
//! Owns: filling [`FlowEvent`] from a flow and a finding's [`Alert`] (an
//! alert is `event.kind: alert` with its severity and rule; anything else is
//! `event.kind: event`). Must not: decide whether a finding is an alert.

use qmwatch_proto::{Endpoints, Protocol};

use super::community_id;
use super::text::ip_text;
use super::time::rfc3339;
use super::typed::{
    Common, Ecs, EventFields, FlowEvent, FlowRef, IpPort, Network, ObserverFields, Related,
    RuleFields,
};
use super::ECS_VERSION;
use crate::finding::{Alert, FlowSeen, Rule};

/// The fields every flow event shares.
pub(super) fn common(ts: u64, ep: &Endpoints, protocol: Option<Protocol>) -> Common {
    let (c, sv) = (ip_text(ep.client.ip()), ip_text(ep.server.ip()));
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
            protocol: protocol.map(Protocol::name),
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

/// What an event says of itself in `event.*`, apart from its kind and
/// severity (which come from the finding's alert).
pub(super) struct Head {
    pub dataset: &'static str,
    pub action: &'static str,
    pub category: &'static [&'static str],
    pub types: &'static [&'static str],
    pub outcome: Option<&'static str>,
    pub id: String,
}

impl Common {
    /// The event: `alert` makes it an ECS alert with its severity and rule.
    pub(super) fn into_event<Q>(
        self,
        head: Head,
        alert: Option<&Alert>,
        message: String,
        qmwatch: Q,
    ) -> FlowEvent<Q> {
        FlowEvent {
            timestamp: self.timestamp,
            destination: self.destination,
            ecs: Ecs {
                version: ECS_VERSION,
            },
            email: None,
            event: EventFields {
                action: head.action,
                category: head.category,
                dataset: head.dataset,
                id: head.id,
                kind: kind(alert),
                module: "qmwatch",
                outcome: head.outcome,
                severity: alert.map(|a| a.severity),
                types: head.types,
            },
            message,
            network: self.network,
            observer: self.observer,
            qmwatch,
            related: self.related,
            rule: alert.map(|a| rule_fields(a.rule)),
            source: self.source,
        }
    }
}

/// `event.kind`.
pub(super) fn kind(alert: Option<&Alert>) -> &'static str {
    if alert.is_some() {
        "alert"
    } else {
        "event"
    }
}

/// `rule.*`.
pub(super) fn rule_fields(r: Rule) -> RuleFields {
    RuleFields {
        category: r.category,
        id: r.id,
        name: r.name,
    }
}

/// A short reference to a flow: time, client and Community ID.
pub(super) fn flow_ref(f: &FlowSeen) -> FlowRef {
    let ep = &f.endpoints;
    FlowRef {
        timestamp: rfc3339(f.ts),
        community_id: community_id(ep.client, ep.server),
        source: IpPort {
            ip: ip_text(ep.client.ip()),
            port: ep.client.port(),
        },
    }
}
