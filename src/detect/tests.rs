use super::*;
use crate::protocol::{CodeCounts, Endpoints, Field, Request, RequestState};

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
    let relay = out
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
    let relays = |out: &Vec<Map<String, Value>>| {
        out.iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .count()
    };
    assert_eq!(relays(&out), 0, "held until the window closes");
    assert_eq!(
        out.iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.transaction")
            .count(),
        6
    );
    d.finish(&mut out);
    let r: Vec<&Map<String, Value>> = out
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
        out.iter()
            .filter(|e| e["event"]["dataset"] == "qmwatch.relay")
            .count(),
        1
    );
    d.finish(&mut out);
    assert_eq!(
        out.iter()
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
                evidence: crate::protocol::Evidence::RequestAndReply,
                ts: 1,
            },
            &mut out,
        );
    }
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["event"]["kind"], "event");
    assert_eq!(out[0]["qmwatch"]["service"]["sanctioned"], true);
    assert_eq!(out[1]["event"]["kind"], "alert");
    assert_eq!(out[1]["qmwatch"]["service"]["sanctioned"], false);
    assert_eq!(d.stats.inventory.unsanctioned_services(), 1);
}
