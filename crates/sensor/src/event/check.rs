//! `qmwatch.check`: the active check's result for one port.
//!
//! Owns: its envelope (a flow event's, without `source` and Community ID
//! when no connection was made) and its message. Must not: decide the
//! result, run the check or fill `qmwatch.check` (the binary's check does:
//! it owns the probes and what their answers prove).

use std::net::SocketAddr;

use qmwatch_proto::{Endpoints, Protocol};

use super::flow::common;
use super::typed::{CheckEvent, CheckFields, CheckNetwork, CheckQmwatch, Ecs, EventFields};
use super::{DATASET_CHECK, ECS_VERSION};

/// The `qmwatch.check` event of `server`, checked from `client` (`None`
/// when no connection was made: then there is no `source`, no Community ID,
/// and `related.ip` is the server's alone). `unreached` makes its
/// `event.outcome` a failure; `id` is the caller's (a check's ids are of
/// its own run).
pub fn check(
    ts: u64,
    server: SocketAddr,
    client: Option<SocketAddr>,
    protocol: Option<Protocol>,
    unreached: bool,
    id: String,
    check: CheckFields,
) -> CheckEvent {
    // Without a client, the server stands in for it: `related.ip` is then
    // the server's address alone, and the flow's other fields are dropped.
    let ep = Endpoints {
        client: client.unwrap_or(server),
        server,
    };
    let c = common(ts, &ep, protocol);
    let connected = client.is_some();
    CheckEvent {
        timestamp: c.timestamp,
        destination: c.destination,
        ecs: Ecs {
            version: ECS_VERSION,
        },
        event: EventFields {
            action: "active_check",
            category: &["network"],
            dataset: DATASET_CHECK,
            id,
            kind: "event",
            module: "qmwatch",
            outcome: Some(if unreached { "failure" } else { "success" }),
            severity: None,
            types: &["info"],
        },
        message: format!("{server}: {}", check.detail),
        network: CheckNetwork {
            community_id: connected.then_some(c.network.community_id),
            protocol: c.network.protocol,
            transport: c.network.transport,
            ip_version: c.network.ip_version,
        },
        observer: c.observer,
        qmwatch: CheckQmwatch { check },
        related: c.related,
        source: connected.then_some(c.source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::typed::{CheckProbe, RelayTestFields, ReplyFields};
    use crate::event::{Event, Observer};

    fn probe(source: Option<&str>, error: Option<&str>) -> CheckProbe {
        CheckProbe {
            elapsed_ms: 7,
            end: "answered",
            error: error.map(str::to_owned),
            probe: "greeting",
            received: "11:Dno thanks.,".into(),
            received_bytes: 15,
            sent_bytes: 0,
            source: source.map(str::to_owned),
        }
    }

    /// A check event writes what its JSON object would (fields in sorted
    /// order), with every optional field there and with none.
    #[test]
    fn check_event_writes_its_object() {
        let reply = ReplyFields {
            code: "D",
            text: "no caf\u{e9}".into(),
            text_truncated: false,
        };
        let full = CheckFields {
            detail: "spoke first".into(),
            evidence: Some("reply_only"),
            probes: vec![probe(Some("127.0.0.1:4000"), Some("read: reset"))],
            proof: Some("greeting"),
            relay_test: Some(RelayTestFields {
                client_trusted: false,
                probe: probe(Some("127.0.0.1:4001"), None),
                protocol: "qmqp",
                recipient: "r@x.invalid".into(),
                reply: Some(reply.clone()),
                verdict: "refused",
            }),
            replies: Some(vec![reply]),
            result: "qmqp",
            sanctioned: Some(false),
            service: true,
            target: "127.0.0.1:628".into(),
        };
        let bare = CheckFields {
            detail: "closed: connection refused".into(),
            evidence: None,
            probes: vec![probe(None, None)],
            proof: None,
            relay_test: None,
            replies: None,
            result: "closed",
            sanctioned: None,
            service: false,
            target: "[::1]:209".into(),
        };
        let observer = Observer {
            hostname: "h".into(),
            ingress_interface: Some("eth0".into()),
        };
        let (srv4, srv6) = (
            "127.0.0.1:628".parse().unwrap(),
            "[::1]:209".parse().unwrap(),
        );
        let events = [
            check(
                1,
                srv4,
                Some("127.0.0.1:4000".parse().unwrap()),
                Some(Protocol::Qmqp),
                false,
                "a".into(),
                full,
            ),
            check(2, srv6, None, None, true, "b".into(), bare),
        ];
        for e in events {
            let mut e = Event::Check(Box::new(e));
            e.stamp(&observer);
            e.set_observer_type("active_check");
            let line = e.to_json_line();
            assert_eq!(line, e.to_object_line());
            assert!(line.is_some_and(|l| l.is_ascii() && l.starts_with("{\"@timestamp\"")));
        }
    }

    /// Without a connection: no source, no Community ID, the server alone
    /// in `related.ip`, and a failed outcome when unreached.
    #[test]
    fn unconnected_check_has_no_flow() {
        let server: SocketAddr = "192.0.2.1:628".parse().unwrap();
        let fields = CheckFields {
            detail: "timeout".into(),
            evidence: None,
            probes: Vec::new(),
            proof: None,
            relay_test: None,
            replies: None,
            result: "unreachable",
            sanctioned: None,
            service: false,
            target: "192.0.2.1".into(),
        };
        let e = check(1, server, None, None, true, "x".into(), fields);
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("source").is_none());
        assert!(v["network"].get("community_id").is_none());
        assert_eq!(v["related"]["ip"], serde_json::json!(["192.0.2.1"]));
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["message"], "192.0.2.1:628: timeout");
    }
}
