use super::*;
use qmwatch_proto::{AnomalyKind, CodeCounts, Endpoints, Field, Reply, Request, RequestState};
use serde_json::Value;

fn field(s: &str) -> Field {
    Field {
        bytes: s.as_bytes().to_vec(),
        wire_len: s.len() as u64,
        ..Field::default()
    }
}

fn reply(code: ReplyCode) -> Reply {
    Reply {
        code,
        text: field("text"),
        ts: 5,
        acked_client_offset: None,
    }
}

fn txn(client: &str, rcpts: &[(&str, Option<ReplyCode>)]) -> Transaction {
    let mut r = Request::new(Protocol::Qmtp, 0, 1);
    r.sender = Some(field("s@example.org"));
    for (a, _) in rcpts {
        r.add_recipient(field(a));
    }
    r.state = RequestState::Complete;
    let mut codes = CodeCounts::default();
    for (_, c) in rcpts {
        codes.add(*c);
    }
    Transaction {
        endpoints: Endpoints {
            client: client.parse().unwrap(),
            server: "198.51.100.25:209".parse().unwrap(),
        },
        protocol: Protocol::Qmtp,
        request: Some(r),
        replies: rcpts.iter().map(|(_, c)| c.map(reply)).collect(),
        reply: None,
        codes,
        index: 1,
        session_confirmed: true,
        ts: 10,
    }
}

fn site() -> Policy {
    let mut b = policy::PolicyBuilder::new();
    b.local_domain("example.net", "t").unwrap();
    b.trusted_net("192.0.2.0/24", "t").unwrap();
    b.build()
}

#[test]
fn verdicts() {
    let p = site();
    use ReplyCode::*;
    let j = |c, r: &[(&str, Option<ReplyCode>)]| judge(&txn(c, r), &p).map(|a| a.verdict);
    let ext = "203.0.113.9:4000";
    assert_eq!(
        j(ext, &[("a@example.com", Some(K))]),
        Some(RelayVerdict::OpenRelay)
    );
    assert_eq!(
        j(
            ext,
            &[("a@example.com", Some(D)), ("b@example.org", Some(D))]
        ),
        Some(RelayVerdict::Refused)
    );
    assert_eq!(
        j(
            ext,
            &[("a@example.com", Some(Z)), ("b@example.org", Some(D))]
        ),
        Some(RelayVerdict::Deferred)
    );
    assert_eq!(
        j(ext, &[("a@example.com", None)]),
        Some(RelayVerdict::Unanswered)
    );
    assert_eq!(
        j(
            ext,
            &[("joe@example.net", Some(K)), ("v@example.com", Some(D))]
        ),
        Some(RelayVerdict::Refused)
    );
    // Local-only recipients and trusted clients never raise it.
    assert_eq!(
        j(
            ext,
            &[("joe@example.net", Some(K)), ("postmaster", Some(K))]
        ),
        None
    );
    assert_eq!(j("192.0.2.7:4000", &[("a@example.com", Some(K))]), None);
}

#[test]
fn defaulted_policy_is_said_and_confidence_follows_example_domains() {
    let p = Policy::default();
    let t = txn("203.0.113.9:4000", &[("a@example.com", Some(ReplyCode::K))]);
    let a = judge(&t, &p).unwrap();
    assert_eq!(a.verdict, RelayVerdict::OpenRelay);
    assert!(
        a.confident,
        "a K to a reserved example domain is always an open relay"
    );
    let t = txn(
        "203.0.113.9:4000",
        &[
            ("a@mail.example", Some(ReplyCode::K)),
            ("b@corp.invalid", Some(ReplyCode::D)),
        ],
    );
    assert!(judge(&t, &p).unwrap().confident);
    let t = txn(
        "203.0.113.9:4000",
        &[("bob@mailbox.org", Some(ReplyCode::K))],
    );
    let a = judge(&t, &p).unwrap();
    assert!(
        !a.confident,
        "only the default policy made this recipient foreign"
    );
    let mut out = Vec::new();
    let mut d = Detector::new(Arc::new(p), None);
    d.record(Record::Transaction(Box::new(t)), &mut out);
    let objs = objects(&out);
    let relay = objs
        .iter()
        .find(|e| e["event"]["dataset"] == "qmwatch.relay")
        .unwrap();
    assert_eq!(
        relay["qmwatch"]["relay"]["policy"]["local_domains_defaulted"],
        true
    );
    assert_eq!(relay["event"]["severity"], 70);
}

#[test]
fn window_folds_repeated_alerts() {
    let mut d = Detector::new(Arc::new(site()), Some(60_000_000_000));
    let mut out = Vec::new();
    for i in 0..5u64 {
        let mut t = txn(
            &format!("203.0.113.9:{}", 4000 + i),
            &[("a@example.com", Some(ReplyCode::D))],
        );
        t.ts = 1_000_000_000 * (i + 1);
        d.record(Record::Transaction(Box::new(t)), &mut out);
    }
    // A different client: its own window.
    d.record(
        Record::Transaction(Box::new(txn(
            "203.0.113.10:5000",
            &[("a@example.com", Some(ReplyCode::K))],
        ))),
        &mut out,
    );
    let relays = |out: &Vec<Event>| {
        objects(out)
            .iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .count()
    };
    assert_eq!(relays(&out), 0, "held until the window closes");
    assert_eq!(
        objects(&out)
            .iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.transaction")
            .count(),
        6
    );
    d.finish(&mut out);
    let objs = objects(&out);
    let r: Vec<&Value> = objs
        .iter()
        .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
        .collect();
    assert_eq!(r.len(), 2);
    let agg = r
        .iter()
        .find(|e| e["qmwatch"]["aggregate"]["count"] == 5)
        .unwrap();
    assert_eq!(agg["qmwatch"]["aggregate"]["first"]["source"]["port"], 4000);
    assert_eq!(agg["qmwatch"]["aggregate"]["last"]["source"]["port"], 4004);
    assert_eq!(agg["qmwatch"]["relay"]["verdict"], "refused");
}

/// With the window table full, an alert of a new client is reported at
/// once, alone, and counted; the open windows still fold theirs.
#[test]
fn a_full_window_table_reports_new_alerts_alone() {
    let mut d = Detector::new(Arc::new(site()), Some(60_000_000_000)).with_max_windows(2);
    let mut out = Vec::new();
    let relays = |out: &Vec<Event>| {
        objects(out)
            .into_iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .collect::<Vec<_>>()
    };
    for (i, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]
        .iter()
        .enumerate()
    {
        let mut t = txn(
            &format!("{client}:4000"),
            &[("a@example.com", Some(ReplyCode::K))],
        );
        t.ts = 1_000_000_000 * (i as u64 + 1);
        d.record(Record::Transaction(Box::new(t)), &mut out);
    }
    // Two windows hold theirs; the third and fourth clients are alone.
    let alone = relays(&out);
    assert_eq!(alone.len(), 2);
    assert_eq!(alone[0]["source"]["ip"], "203.0.113.3");
    assert_eq!(alone[1]["source"]["ip"], "203.0.113.4");
    assert_eq!(d.stats.windows_dropped_cap, 2);
    // The first client again: folded into its open window, not alone.
    let mut t = txn("203.0.113.1:4001", &[("a@example.com", Some(ReplyCode::K))]);
    t.ts = 6_000_000_000;
    d.record(Record::Transaction(Box::new(t)), &mut out);
    assert_eq!(relays(&out).len(), 2);
    assert_eq!(d.stats.windows_dropped_cap, 2);
    assert_eq!(d.stats.relay_alerts_aggregated, 1);
    d.finish(&mut out);
    let all = relays(&out);
    assert_eq!(all.len(), 4);
    let first = all
        .iter()
        .find(|e| e["source"]["ip"] == "203.0.113.1")
        .unwrap();
    assert_eq!(first["qmwatch"]["aggregate"]["count"], 2);
}

#[test]
fn window_closes_on_packet_time() {
    let mut d = Detector::new(Arc::new(site()), Some(10_000_000_000));
    let mut out = Vec::new();
    let mut t = txn("203.0.113.9:4000", &[("a@example.com", Some(ReplyCode::K))]);
    t.ts = 1_000_000_000;
    d.record(Record::Transaction(Box::new(t)), &mut out);
    let mut t = txn("203.0.113.9:4001", &[("a@example.com", Some(ReplyCode::K))]);
    t.ts = 30_000_000_000;
    d.record(Record::Transaction(Box::new(t)), &mut out);
    assert_eq!(
        objects(&out)
            .iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .count(),
        1
    );
    d.finish(&mut out);
    assert_eq!(
        objects(&out)
            .iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .count(),
        2
    );
}

#[test]
fn sanctioned_services_are_inventory_others_alerts() {
    let mut b = policy::PolicyBuilder::new();
    b.sanctioned("198.51.100.25:209/qmtp", "t").unwrap();
    let mut d = Detector::new(Arc::new(b.build()), None);
    let mut out = Vec::new();
    let ep = |s: &str| Endpoints {
        client: "203.0.113.9:4000".parse().unwrap(),
        server: s.parse().unwrap(),
    };
    for s in [
        "198.51.100.25:209",
        "198.51.100.25:2209",
        "198.51.100.25:209",
    ] {
        d.record(
            Record::Service {
                endpoints: ep(s),
                protocol: Protocol::Qmtp,
                evidence: qmwatch_proto::Evidence::RequestAndReply,
                ts: 1,
            },
            &mut out,
        );
    }
    assert_eq!(out.len(), 2);
    let out = objects(&out);
    assert_eq!(out[0]["event"]["kind"], "event");
    assert_eq!(out[0]["qmwatch"]["service"]["sanctioned"], true);
    assert_eq!(out[1]["event"]["kind"], "alert");
    assert_eq!(out[1]["qmwatch"]["service"]["sanctioned"], false);
    assert_eq!(d.stats.inventory.unsanctioned_services(), 1);
}

/// The events as JSON objects, as the outputs write them.
fn objects(out: &[Event]) -> Vec<Value> {
    out.iter()
        .map(|e| Value::Object(e.clone().into_object()))
        .collect()
}

/// The typed events write exactly the bytes their JSON objects would
/// (fields in sorted order, the same formatting), for every dataset and
/// every shape they take: services (sanctioned or not, either port),
/// anomalies (with and without a protocol), transactions, probes, relay
/// alerts, and windows of relay alerts.
#[test]
fn typed_events_write_what_their_objects_would() {
    use crate::event::Observer;
    let mut shapes = Vec::new();
    for verdict_codes in [
        vec![("a@example.com", Some(ReplyCode::K))],
        vec![
            ("a@example.com", Some(ReplyCode::D)),
            ("b@example.net", None),
        ],
        vec![("a@example.com", Some(ReplyCode::Z))],
        vec![("a@example.com", None)],
        vec![("x@example.net", Some(ReplyCode::K))],
    ] {
        shapes.push(txn("203.0.113.9:4000", &verdict_codes));
    }
    // Odd shapes: no request, truncated and malformed requests, a bounce,
    // recipients not stored, a cut sender, text needing escapes, IPv6, a
    // QMQP reply, a scanner's probe.
    let mut t = txn("203.0.113.9:4001", &[("a@example.com", Some(ReplyCode::K))]);
    t.request = None;
    t.reply = Some(reply(ReplyCode::D));
    shapes.push(t);
    let mut t = txn(
        "[2001:db8::9]:4002",
        &[("\u{e9}\"\\\u{1}@example.com", None)],
    );
    if let Some(r) = t.request.as_mut() {
        r.state = RequestState::Truncated;
        r.sender = Some(Field {
            truncated: true,
            ..field("")
        });
        r.recipient_count = 5000;
        r.message_gap_bytes = 7;
        r.encoding = Some(qmwatch_proto::Encoding::Lf);
    }
    shapes.push(t);
    let mut t = txn("203.0.113.9:4003", &[("a@example.com", Some(ReplyCode::K))]);
    if let Some(r) = t.request.as_mut() {
        r.state = RequestState::Malformed(AnomalyKind::NetstringBadLengthByte);
        r.protocol = Protocol::Qmqp;
        r.recipients[0].truncated = true;
    }
    t.protocol = Protocol::Qmqp;
    t.reply = Some(reply(ReplyCode::K));
    shapes.push(t);
    let mut t = txn("203.0.113.9:4004", &[("a@example.com", Some(ReplyCode::K))]);
    if let Some(r) = t.request.as_mut() {
        r.message_prefix = b"\ntest".to_vec();
    }
    shapes.push(t);
    let mut t = txn(
        "203.0.113.9:4005",
        &[("postmaster@example.com", Some(ReplyCode::D))],
    );
    if let Some(r) = t.request.as_mut() {
        r.message_prefix = b"\nMessage-ID: <1234567890.666.nessus@example.org>\n".to_vec();
        r.sender = Some(field("nessus@example.org"));
    }
    shapes.push(t);

    let observer = Observer {
        hostname: "sensor-1".into(),
        ingress_interface: Some("eth1".into()),
    };
    let mut typed = 0;
    let mut datasets = BTreeSet::new();
    let policies = || [site(), policy::PolicyBuilder::new().build()];
    let windows = [None, Some(60_000_000_000)];
    for (policy, window) in policies()
        .into_iter()
        .flat_map(|p| windows.map(|w| (p.clone(), w)))
    {
        let mut d = Detector::new(Arc::new(policy), window).with_observer(observer.clone());
        let mut out = Vec::new();
        for server in ["198.51.100.25:209", "198.51.100.26:2628"] {
            d.record(
                Record::Service {
                    endpoints: Endpoints {
                        client: "203.0.113.9:4000".parse().unwrap(),
                        server: server.parse().unwrap(),
                    },
                    protocol: Protocol::Qmtp,
                    evidence: qmwatch_proto::Evidence::RequestAndReply,
                    ts: 1,
                },
                &mut out,
            );
        }
        for protocol in [None, Some(Protocol::Qmqp)] {
            d.record(
                Record::Anomaly(Box::new(qmwatch_proto::Anomaly {
                    endpoints: shapes[0].endpoints,
                    protocol,
                    kind: AnomalyKind::TcpOverlapConflict,
                    detail: "12 bytes \u{e9}".into(),
                    ts: 2,
                })),
                &mut out,
            );
        }
        for t in &shapes {
            d.record(Record::Transaction(Box::new(t.clone())), &mut out);
        }
        d.finish(&mut out);
        for e in out {
            datasets.insert(e.dataset().to_string());
            typed += 1;
            let line = e.to_json_line().unwrap();
            assert_eq!(Some(line.clone()), e.to_object_line(), "{line}");
        }
    }
    assert!(typed > 40, "{typed}");
    assert_eq!(datasets.len(), 5, "{datasets:?}");
}

#[test]
fn mixed_replies_take_the_most_serious_verdict() {
    let p = site();
    use ReplyCode::*;
    let j = |r: &[(&str, Option<ReplyCode>)]| {
        judge(&txn("203.0.113.9:4000", r), &p).map(|a| (a.verdict, a.foreign.len(), a.local_count))
    };
    // One K among Zs is an open relay whatever the order: the message went out.
    for r in [
        [("a@example.com", Some(K)), ("b@example.org", Some(Z))],
        [("a@example.com", Some(Z)), ("b@example.org", Some(K))],
    ] {
        assert_eq!(j(&r), Some((RelayVerdict::OpenRelay, 2, 0)), "{r:?}");
    }
    assert_eq!(
        j(&[("a@example.com", Some(D)), ("b@example.org", Some(K))]),
        Some((RelayVerdict::OpenRelay, 2, 0))
    );
    // Z beats D and silence; D beats silence.
    assert_eq!(
        j(&[("a@example.com", None), ("b@example.org", Some(Z))]),
        Some((RelayVerdict::Deferred, 2, 0))
    );
    assert_eq!(
        j(&[("a@example.com", None), ("b@example.org", Some(D))]),
        Some((RelayVerdict::Refused, 2, 0))
    );
    // A K for a local recipient is not relaying; a foreign Z is deferred.
    assert_eq!(
        j(&[("joe@example.net", Some(K)), ("b@example.org", Some(Z))]),
        Some((RelayVerdict::Deferred, 1, 1))
    );
}

/// One client through one server, within one window: the folded alert
/// carries the worst verdict, whichever came first.
#[test]
fn window_folds_to_the_worst_verdict() {
    use ReplyCode::*;
    let run = |codes: &[Option<ReplyCode>]| {
        let mut d = Detector::new(Arc::new(site()), Some(60_000_000_000));
        let mut out = Vec::new();
        for (i, c) in codes.iter().enumerate() {
            let mut t = txn(
                &format!("203.0.113.9:{}", 4000 + i),
                &[("a@example.com", *c)],
            );
            t.ts = 1_000_000_000 * (i as u64 + 1);
            d.record(Record::Transaction(Box::new(t)), &mut out);
        }
        d.finish(&mut out);
        let r: Vec<Value> = objects(&out)
            .into_iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .collect();
        assert_eq!(r.len(), 1, "{codes:?}");
        assert_eq!(r[0]["qmwatch"]["aggregate"]["count"], codes.len());
        r.into_iter().next().unwrap()
    };
    let a = run(&[Some(D), Some(K), Some(D)]);
    assert_eq!(a["qmwatch"]["relay"]["verdict"], "open_relay");
    assert_eq!(a["event"]["action"], "open_relay");
    assert_eq!(a["event"]["outcome"], "success");
    assert_eq!(a["event"]["severity"], 90);
    assert_eq!(a["event"]["type"], serde_json::json!(["allowed", "info"]));
    assert_eq!(a["rule"]["id"], "qmwatch-relay-open");
    assert_eq!(
        a["qmwatch"]["aggregate"]["verdicts"],
        serde_json::json!({"open_relay": 1, "refused": 2})
    );
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("3 relay attempts from 203.0.113.9 through 198.51.100.25:209 within 60 s (worst: open_relay)"),
        "{}",
        a["message"]
    );
    // Without an open relay: deferred is worse than refused, unanswered
    // worse than deferred (nothing seen might have been accepted).
    let a = run(&[Some(D), Some(Z)]);
    assert_eq!(a["qmwatch"]["relay"]["verdict"], "deferred");
    assert_eq!(a["event"]["severity"], 40);
    assert_eq!(a["event"]["outcome"], "failure");
    let a = run(&[Some(Z), None, Some(D)]);
    assert_eq!(a["qmwatch"]["relay"]["verdict"], "unanswered");
    assert_eq!(a["event"]["outcome"], "unknown");
    assert_eq!(a["event"]["severity"], 50);
    // Worst first, milder after: still the worst.
    let a = run(&[Some(K), Some(D)]);
    assert_eq!(a["qmwatch"]["relay"]["verdict"], "open_relay");
}

#[test]
fn confidence_doubts_only_an_open_relay_judged_by_the_default_policy() {
    use ReplyCode::*;
    let t = |c| txn("203.0.113.9:4000", &[("bob@mailbox.org", Some(c))]);
    // Configured policy: sure either way.
    for c in [K, D] {
        assert!(judge(&t(c), &site()).unwrap().confident, "{c:?}");
    }
    // Default policy: only the open relay is in doubt.
    let p = Policy::default();
    assert!(!judge(&t(K), &p).unwrap().confident);
    assert!(judge(&t(D), &p).unwrap().confident);
}

fn service(client: &str, server: &str, protocol: Protocol, ts: u64) -> Record {
    Record::Service {
        endpoints: Endpoints {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
        },
        protocol,
        evidence: qmwatch_proto::Evidence::RequestAndReply,
        ts,
    }
}

/// The counts the summary and the audit report are made of, worked out by
/// hand for a small run.
#[test]
fn stats_and_inventory_count_what_happened() {
    use ReplyCode::*;
    let mut b = policy::PolicyBuilder::new();
    b.local_domain("example.net", "t").unwrap();
    b.trusted_net("192.0.2.0/24", "t").unwrap();
    b.sanctioned("198.51.100.25:209/qmtp", "t").unwrap();
    let mut d = Detector::new(Arc::new(b.build()), None);
    let mut out = Vec::new();
    let s25 = "198.51.100.25:209";
    d.record(
        service("203.0.113.9:4000", s25, Protocol::Qmtp, 5),
        &mut out,
    );
    d.record(
        service("203.0.113.10:4001", s25, Protocol::Qmtp, 3),
        &mut out,
    );
    d.record(
        service("203.0.113.9:4002", "198.51.100.26:2209", Protocol::Qmtp, 7),
        &mut out,
    );
    d.record(
        service("203.0.113.9:4003", "198.51.100.25:628", Protocol::Qmqp, 8),
        &mut out,
    );
    let mut open = txn(
        "203.0.113.9:4000",
        &[
            ("a@example.com", Some(K)),
            ("b@example.org", Some(K)),
            ("c@example.com", Some(D)),
            ("joe@example.net", Some(K)),
        ],
    );
    open.ts = 12;
    d.record(Record::Transaction(Box::new(open)), &mut out);
    let trusted = txn("192.0.2.7:4000", &[("a@example.com", Some(K))]);
    d.record(Record::Transaction(Box::new(trusted)), &mut out);
    let refused = txn("203.0.113.11:4000", &[("a@example.com", Some(D))]);
    d.record(Record::Transaction(Box::new(refused)), &mut out);
    // Two scanner probes from a trusted client: counted, not relaying.
    for _ in 0..2 {
        let mut probe = txn("192.0.2.9:4000", &[("postmaster@example.com", Some(K))]);
        if let Some(r) = probe.request.as_mut() {
            r.sender = Some(field("nessus@example.org"));
            r.message_prefix = b"\nMessage-ID: <1234567890.666.nessus@example.org>\n".to_vec();
        }
        d.record(Record::Transaction(Box::new(probe)), &mut out);
    }
    for _ in 0..2 {
        let a = qmwatch_proto::Anomaly {
            endpoints: Endpoints {
                client: "203.0.113.9:4000".parse().unwrap(),
                server: s25.parse().unwrap(),
            },
            protocol: Some(Protocol::Qmtp),
            kind: AnomalyKind::NetstringMissingComma,
            detail: "x".into(),
            ts: 11,
        };
        d.record(Record::Anomaly(Box::new(a)), &mut out);
    }
    let st = &d.stats;
    let counts = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&st.events_by_dataset),
        [
            ("qmwatch.anomaly".to_string(), 2),
            ("qmwatch.probe".to_string(), 2),
            ("qmwatch.relay".to_string(), 2),
            ("qmwatch.service".to_string(), 3),
            ("qmwatch.transaction".to_string(), 5),
        ]
    );
    assert_eq!(out.len(), 14);
    assert_eq!(
        counts(&st.sessions_by_protocol),
        [("qmqp".to_string(), 1), ("qmtp".to_string(), 3)]
    );
    assert_eq!((st.services, st.transactions), (3, 5));
    assert_eq!(
        st.anomalies_by_kind.get("netstring_missing_comma"),
        Some(&2)
    );
    assert_eq!(st.relay_alerts_aggregated, 0);
    let inv = &st.inventory;
    assert_eq!(inv.servers.len(), 3);
    assert_eq!(inv.unsanctioned_services(), 2);
    let s = &inv.servers[&(s25.parse().unwrap(), Protocol::Qmtp)];
    assert!(s.sanctioned);
    assert_eq!((s.first_seen, s.last_seen, s.transactions), (3, 12, 5));
    let clients: Vec<String> = s.clients.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        clients,
        [
            "192.0.2.7",
            "192.0.2.9",
            "203.0.113.9",
            "203.0.113.10",
            "203.0.113.11"
        ]
    );
    assert!(!s.clients_capped);
    assert_eq!(
        counts(&inv.relay_attempts),
        [("open_relay".to_string(), 1), ("refused".to_string(), 1)]
    );
    // Two foreign recipients got K: two pieces of evidence.
    assert_eq!(inv.open_relays_total, 2);
    let rcpts: Vec<&str> = inv
        .open_relays
        .iter()
        .map(|o| o.recipient.as_str())
        .collect();
    assert_eq!(rcpts, ["a@example.com", "b@example.org"]);
    assert_eq!(inv.open_relays[0].reply_text, "text");
    assert_eq!(inv.probes.get("nessus"), Some(&2));
}

#[test]
fn client_and_evidence_caps_hold_and_say_so() {
    let mut d = Detector::default();
    let mut out = Vec::new();
    let server = "198.51.100.25:209";
    let client = |i: usize| format!("[2001:db8::{:x}]:4000", i + 1);
    for i in 0..MAX_CLIENTS_PER_SERVER {
        d.record(service(&client(i), server, Protocol::Qmtp, 1), &mut out);
    }
    let key = (server.parse().unwrap(), Protocol::Qmtp);
    // Full, but a client already known does not count as one too many.
    d.record(service(&client(0), server, Protocol::Qmtp, 2), &mut out);
    let s = &d.stats.inventory.servers[&key];
    assert_eq!(s.clients.len(), MAX_CLIENTS_PER_SERVER);
    assert!(!s.clients_capped);
    d.record(
        service(&client(MAX_CLIENTS_PER_SERVER), server, Protocol::Qmtp, 3),
        &mut out,
    );
    let s = &d.stats.inventory.servers[&key];
    assert_eq!(s.clients.len(), MAX_CLIENTS_PER_SERVER);
    assert!(s.clients_capped);

    // Open-relay evidence: kept up to its cap, all of it counted. Requests
    // store 1000 recipients each.
    let rcpts: Vec<(String, Option<ReplyCode>)> = (0..1000)
        .map(|i| (format!("r{i}@example.com"), Some(ReplyCode::K)))
        .collect();
    let rcpts: Vec<(&str, Option<ReplyCode>)> =
        rcpts.iter().map(|(a, c)| (a.as_str(), *c)).collect();
    let n = MAX_OPEN_RELAY_EVIDENCE / 1000;
    for _ in 0..n {
        let t = txn("203.0.113.9:4000", &rcpts);
        d.record(Record::Transaction(Box::new(t)), &mut out);
        out.clear();
    }
    assert_eq!(d.stats.inventory.open_relays.len(), MAX_OPEN_RELAY_EVIDENCE);
    let t = txn("203.0.113.9:4000", &rcpts[..1]);
    d.record(Record::Transaction(Box::new(t)), &mut out);
    assert_eq!(d.stats.inventory.open_relays.len(), MAX_OPEN_RELAY_EVIDENCE);
    assert_eq!(
        d.stats.inventory.open_relays_total,
        MAX_OPEN_RELAY_EVIDENCE as u64 + 1
    );
}

#[test]
fn window_counts_folded_alerts_and_ends_inclusively() {
    let len = 10_000_000_000;
    let mut d = Detector::new(Arc::new(site()), Some(len));
    let mut out = Vec::new();
    let mut at = |d: &mut Detector, client: &str, ts: u64| {
        let mut t = txn(client, &[("a@example.com", Some(ReplyCode::D))]);
        t.ts = ts;
        d.record(Record::Transaction(Box::new(t)), &mut out);
    };
    at(&mut d, "203.0.113.9:4000", 0);
    at(&mut d, "203.0.113.10:4000", 5_000_000_000);
    // The first window is due; the second ends exactly now and still
    // takes this attempt.
    at(&mut d, "203.0.113.10:4001", 5_000_000_000 + len);
    assert_eq!(d.stats.relay_alerts_aggregated, 1);
    d.finish(&mut out);
    let relays: Vec<Value> = objects(&out)
        .into_iter()
        .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
        .collect();
    let counts: Vec<(&str, u64)> = relays
        .iter()
        .map(|e| {
            (
                e["source"]["ip"].as_str().unwrap(),
                e["qmwatch"]["aggregate"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [("203.0.113.9", 1), ("203.0.113.10", 2)]);
    // The same attempts without a window: a window of one is that alert
    // unchanged; a folded one has an id of its own, from the first alert's.
    let mut plain = Detector::new(Arc::new(site()), None);
    let mut alone = Vec::new();
    for (client, ts) in [
        ("203.0.113.9:4000", 0),
        ("203.0.113.10:4000", 5_000_000_000),
    ] {
        let mut t = txn(client, &[("a@example.com", Some(ReplyCode::D))]);
        t.ts = ts;
        plain.record(Record::Transaction(Box::new(t)), &mut alone);
    }
    let alone: Vec<Value> = objects(&alone)
        .into_iter()
        .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
        .collect();
    assert_eq!(relays[0]["message"], alone[0]["message"]);
    assert_eq!(
        relays[0]["event"]["severity"],
        alone[0]["event"]["severity"]
    );
    let first_id = alone[1]["event"]["id"].as_str().unwrap();
    assert_eq!(
        relays[1]["event"]["id"],
        crate::event::stable_id(&["qmwatch.relay", "aggregate", first_id, "2", "10", "refused"])
    );
    assert!(relays[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("2 relay attempts from 203.0.113.10 through 198.51.100.25:209 within 10 s"));
}

#[test]
fn servers_past_the_inventory_cap_are_counted_not_stored() {
    let mut d = Detector::default();
    let mut out = Vec::new();
    for i in 0..=MAX_SERVERS as u32 {
        let ip = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i));
        let server = SocketAddr::new(ip.into(), 209).to_string();
        d.record(
            service("203.0.113.9:4000", &server, Protocol::Qmtp, 1),
            &mut out,
        );
        out.clear();
    }
    let inv = &d.stats.inventory;
    assert_eq!(inv.servers.len(), MAX_SERVERS);
    assert_eq!(inv.servers_not_stored, 1);
    // Still reported: every new server is an event.
    assert_eq!(d.stats.services, MAX_SERVERS as u64 + 1);
}

#[test]
fn every_event_carries_the_observer_and_sensor_events_are_counted() {
    let observer = crate::event::Observer {
        hostname: "sensor-1.example.net".into(),
        ingress_interface: Some("eth1".into()),
    };
    let mut d = Detector::default().with_observer(observer);
    let mut out = Vec::new();
    d.record(
        service("203.0.113.9:4000", "198.51.100.25:209", Protocol::Qmtp, 1),
        &mut out,
    );
    let run = crate::event::RunId {
        hostname: "sensor-1.example.net".into(),
        interface: None,
        started_ns: 0,
    };
    let stats = crate::event::stats(2, &run, 1, String::new(), serde_json::json!({}));
    d.emit_sensor(crate::event::DATASET_STATS, stats, &mut out);
    assert_eq!(out.len(), 2);
    for e in objects(&out) {
        assert_eq!(e["observer"]["hostname"], "sensor-1.example.net", "{e}");
        assert_eq!(e["observer"]["ingress"]["interface"]["name"], "eth1");
    }
    assert_eq!(
        d.stats.events_by_dataset.get(crate::event::DATASET_STATS),
        Some(&1)
    );
}

/// `Event::severity` (the syslog severity comes from it) is what the
/// event carries, for objects and typed events alike.
#[test]
fn severity_accessor_matches_the_event() {
    let mut d = Detector::new(Arc::new(site()), None);
    let mut out = Vec::new();
    d.record(
        service("203.0.113.9:4000", "198.51.100.25:209", Protocol::Qmtp, 1),
        &mut out,
    );
    for c in [ReplyCode::K, ReplyCode::D] {
        let t = txn("203.0.113.9:4000", &[("a@example.com", Some(c))]);
        d.record(Record::Transaction(Box::new(t)), &mut out);
    }
    let got: Vec<Option<u64>> = out.iter().map(Event::severity).collect();
    let want: Vec<Option<u64>> = objects(&out)
        .iter()
        .map(|e| e["event"]["severity"].as_u64())
        .collect();
    assert_eq!(got, want);
    // service, transaction, relay (open), transaction, relay (refused)
    assert_eq!(got[2], Some(90));
    assert_eq!(got[4], Some(30));
    assert!(got[0].is_some_and(|s| s > 1));
}
