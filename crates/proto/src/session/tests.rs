use super::*;
use crate::{Encoding, Field, ReplyCode, MAX_RECIPIENTS};

const CLIENT: usize = 0;
const SERVER: usize = 1;

fn ns(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

/// QMTP package: message (with its encoding byte), sender, recipient list.
fn qmtp(enc: u8, body: &[u8], sender: &[u8], rcpts: &[&[u8]]) -> Vec<u8> {
    let mut msg = vec![enc];
    msg.extend_from_slice(body);
    let mut out = ns(&msg);
    out.extend(ns(sender));
    let list: Vec<u8> = rcpts.iter().flat_map(|r| ns(r)).collect();
    out.extend(ns(&list));
    out
}

/// QMQP request: one netstring wrapping message, sender and recipients.
fn qmqp(body: &[u8], sender: &[u8], rcpts: &[&[u8]]) -> Vec<u8> {
    let mut inner = ns(body);
    inner.extend(ns(sender));
    for r in rcpts {
        inner.extend(ns(r));
    }
    ns(&inner)
}

/// Reply netstring: code letter then text.
fn reply(code: u8, text: &str) -> Vec<u8> {
    let mut v = vec![code];
    v.extend_from_slice(text.as_bytes());
    ns(&v)
}

fn field(b: &[u8]) -> Field {
    Field {
        bytes: b.to_vec(),
        truncated: false,
        damaged: false,
        wire_len: b.len() as u64,
    }
}

fn rep(code: ReplyCode, text: &str, ts: u64, ack: Option<u64>) -> Reply {
    Reply {
        code,
        text: field(text.as_bytes()),
        ts,
        acked_client_offset: ack,
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const C_ADDR: &str = "192.0.2.10:40000";

/// A session with the SYN seen: direction 0 is the client.
fn session(server_port: u16) -> Session {
    Session::new(
        [sock(C_ADDR), sock(&format!("198.51.100.1:{server_port}"))],
        Some(CLIENT),
        false,
    )
}

fn eps(server_port: u16) -> Endpoints {
    Endpoints {
        client: sock(C_ADDR),
        server: sock(&format!("198.51.100.1:{server_port}")),
    }
}

fn txn(r: &Record) -> &Transaction {
    match r {
        Record::Transaction(t) => t,
        other => panic!("expected a transaction, got {other:?}"),
    }
}

fn anomaly(r: &Record) -> &Anomaly {
    match r {
        Record::Anomaly(a) => a,
        other => panic!("expected an anomaly, got {other:?}"),
    }
}

fn service(ep: Endpoints, protocol: Protocol, evidence: Evidence, ts: u64) -> Record {
    Record::Service {
        endpoints: ep,
        protocol,
        evidence,
        ts,
    }
}

fn rcpt_texts(t: &Transaction) -> Vec<String> {
    let r = t.request.as_ref().unwrap();
    r.recipients.iter().map(Field::text).collect()
}

fn codes(k: u64, z: u64, d: u64, missing: u64) -> CodeCounts {
    CodeCounts { k, z, d, missing }
}

/// Feeds `stream` (from offset 0) in direction `dir` cut at `cuts`, all at `ts`.
fn feed(
    s: &mut Session,
    dir: usize,
    stream: &[u8],
    cuts: &[usize],
    ts: u64,
    ack: Option<u64>,
    out: &mut Vec<Record>,
) -> Status {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
    bounds.push(stream.len());
    let mut status = Status::Continue;
    for w in bounds.windows(2) {
        status = s.data(dir, w[0] as u64, &stream[w[0]..w[1]], ts, ack, out);
    }
    status
}

fn pipelined_packages() -> [Vec<u8>; 3] {
    [
        qmtp(
            b'\n',
            b"Subject: one\n\n1:a, 22:b,\n",
            b"alice@example.org",
            &[b"r1@example.net", b"r2@example.net"],
        ),
        qmtp(b'\r', b"Subject: two\r\n\r\n", b"", &[b"r3@example.net"]),
        qmtp(
            b'\n',
            b"three",
            b"carol@example.org",
            &[b"r4@example.com", b"r5@example.com", b"r6@example.com"],
        ),
    ]
}

const PIPELINED_REPLIES: [(u8, &str); 6] = [
    (b'K', "ok 1"),
    (b'Z', "busy, try later"),
    (b'K', "ok 3"),
    (b'D', "sorry, no mailbox here"),
    (b'K', "ok 5"),
    (b'K', "ok 6"),
];

/// Three packages sent before any reply, then all six replies; the client
/// stream and the reply stream are cut at the given positions.
fn run_pipelined(client_cuts: &[usize], reply_cuts: &[usize]) -> Vec<Record> {
    let stream: Vec<u8> = pipelined_packages().concat();
    let replies: Vec<u8> = PIPELINED_REPLIES
        .iter()
        .flat_map(|&(c, t)| reply(c, t))
        .collect();
    let mut s = session(209);
    let mut out = Vec::new();
    assert_eq!(
        feed(&mut s, CLIENT, &stream, client_cuts, 10, None, &mut out),
        Status::Continue
    );
    assert!(out.is_empty(), "nothing before a reply: {out:?}");
    let ack = Some(stream.len() as u64);
    assert_eq!(
        feed(&mut s, SERVER, &replies, reply_cuts, 20, ack, &mut out),
        Status::Continue
    );
    s.end_of_direction(CLIENT, 30, &mut out);
    s.finish(31, &mut out);
    out
}

#[test]
fn pipelined_qmtp_packages_matched_in_order() {
    let p = pipelined_packages();
    let (l0, l1, l2) = (p[0].len() as u64, p[1].len() as u64, p[2].len() as u64);
    let out = run_pipelined(&[l0 as usize, (l0 + l1) as usize], &[]);
    assert_eq!(out.len(), 4, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 20)
    );
    let ack = Some(l0 + l1 + l2);
    let r = |i: usize| {
        let (c, t) = PIPELINED_REPLIES[i];
        Some(rep(ReplyCode::from_byte(c).unwrap(), t, 20, ack))
    };
    let t1 = txn(&out[1]);
    let t2 = txn(&out[2]);
    let t3 = txn(&out[3]);
    assert_eq!((t1.index, t2.index, t3.index), (1, 2, 3));
    assert_eq!(t1.replies, vec![r(0), r(1)]);
    assert_eq!(t2.replies, vec![r(2)]);
    assert_eq!(t3.replies, vec![r(3), r(4), r(5)]);
    assert_eq!(t1.codes, codes(1, 1, 0, 0));
    assert_eq!(t2.codes, codes(1, 0, 0, 0));
    assert_eq!(t3.codes, codes(2, 0, 1, 0));
    for t in [t1, t2, t3] {
        assert_eq!(t.endpoints, eps(209));
        assert_eq!(t.protocol, Protocol::Qmtp);
        assert_eq!(t.reply, None);
        assert!(t.session_confirmed);
        assert_eq!(t.ts, 20);
        assert!(t.complete());
    }
    let q1 = t1.request.as_ref().unwrap();
    assert_eq!(q1.encoding, Some(Encoding::Lf));
    assert_eq!(q1.message_bytes, 25);
    assert_eq!(q1.sender, Some(field(b"alice@example.org")));
    assert_eq!(rcpt_texts(t1), ["r1@example.net", "r2@example.net"]);
    assert_eq!((q1.start_offset, q1.end_offset), (0, l0));
    let q2 = t2.request.as_ref().unwrap();
    assert_eq!(q2.encoding, Some(Encoding::Crlf));
    assert_eq!(q2.sender, Some(field(b"")));
    assert_eq!(rcpt_texts(t2), ["r3@example.net"]);
    assert_eq!((q2.start_offset, q2.end_offset), (l0, l0 + l1));
    let q3 = t3.request.as_ref().unwrap();
    assert_eq!(q3.recipient_count, 3);
    assert_eq!(
        rcpt_texts(t3),
        ["r4@example.com", "r5@example.com", "r6@example.com"]
    );
    assert_eq!((q3.start_offset, q3.end_offset), (l0 + l1, l0 + l1 + l2));
}

#[test]
fn pipelined_replies_split_anywhere_give_same_records() {
    let whole = run_pipelined(&[], &[]);
    assert_eq!(whole.len(), 4);
    let replies_len: usize = PIPELINED_REPLIES
        .iter()
        .map(|&(c, t)| reply(c, t).len())
        .sum();
    for cut in 1..replies_len {
        assert_eq!(run_pipelined(&[], &[cut]), whole, "reply cut at {cut}");
    }
    let stream_len: usize = pipelined_packages().iter().map(Vec::len).sum();
    for cut in 1..stream_len {
        assert_eq!(run_pipelined(&[cut], &[]), whole, "client cut at {cut}");
    }
    // One byte at a time on both sides.
    let all_s: Vec<usize> = (1..stream_len).collect();
    let all_r: Vec<usize> = (1..replies_len).collect();
    assert_eq!(run_pipelined(&all_s, &all_r), whole);
}

fn qmqp_request() -> Vec<u8> {
    qmqp(
        b"Subject: q\n\nbody, 3:x,\n",
        b"sender@example.org",
        &[b"a@example.net", b"b@example.net"],
    )
}

fn check_qmqp_transaction(t: &Transaction, r: &Reply, len: u64) {
    assert_eq!(t.protocol, Protocol::Qmqp);
    assert_eq!(t.index, 1);
    assert_eq!(t.reply.as_ref(), Some(r));
    assert_eq!(t.replies, vec![Some(r.clone()), Some(r.clone())]);
    assert!(t.session_confirmed);
    assert!(t.complete());
    let q = t.request.as_ref().unwrap();
    assert_eq!(q.state, RequestState::Complete);
    assert_eq!(q.encoding, None);
    assert_eq!(q.message_bytes, 23);
    assert_eq!(q.sender, Some(field(b"sender@example.org")));
    assert_eq!(rcpt_texts(t), ["a@example.net", "b@example.net"]);
    assert_eq!((q.start_offset, q.end_offset), (0, len));
}

#[test]
fn qmqp_request_then_reply() {
    let req = qmqp_request();
    let len = req.len() as u64;
    let mut s = session(628);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &req, 10, None, &mut out);
    s.data(
        SERVER,
        0,
        &reply(b'K', "ok 17 qp 3"),
        20,
        Some(len),
        &mut out,
    );
    s.finish(30, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(628), Protocol::Qmqp, Evidence::RequestAndReply, 20)
    );
    let r = rep(ReplyCode::K, "ok 17 qp 3", 20, Some(len));
    let t = txn(&out[1]);
    check_qmqp_transaction(t, &r, len);
    assert_eq!(t.codes, codes(2, 0, 0, 0));
    assert_eq!(t.ts, 20);
}

#[test]
fn qmqp_server_speaks_first() {
    // Postfix qmqpd refuses an unauthorised client before reading its request.
    let req = qmqp_request();
    let len = req.len() as u64;
    let refusal = reply(b'D', "Error: unauthorized connection");
    let mut s = session(628);
    let mut out = Vec::new();
    s.data(SERVER, 0, &refusal, 5, Some(0), &mut out);
    assert!(out.is_empty(), "{out:#?}");
    s.data(CLIENT, 0, &req, 10, Some(refusal.len() as u64), &mut out);
    s.end_of_direction(SERVER, 11, &mut out);
    s.finish(12, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(628), Protocol::Qmqp, Evidence::RequestAndReply, 10)
    );
    let r = rep(ReplyCode::D, "Error: unauthorized connection", 5, Some(0));
    let t = txn(&out[1]);
    check_qmqp_transaction(t, &r, len);
    assert_eq!(t.codes, codes(0, 0, 2, 0));
    assert_eq!(t.ts, 5);
}

#[test]
fn reply_to_smtp_garbage_is_reply_only_service() {
    let mut s = session(628);
    let mut out = Vec::new();
    assert_eq!(
        s.data(CLIENT, 0, b"EHLO x\r\n", 10, None, &mut out),
        Status::Continue
    );
    let d = reply(b'D', "netstring format error");
    assert_eq!(
        s.data(SERVER, 0, &d, 11, Some(8), &mut out),
        Status::Continue
    );
    assert!(out.is_empty(), "{out:#?}");
    s.finish(12, &mut out);
    let ep = eps(628);
    let expected = vec![
        service(ep, Protocol::Qmqp, Evidence::ReplyOnly, 12),
        Record::Transaction(Box::new(Transaction {
            endpoints: ep,
            protocol: Protocol::Qmqp,
            request: None,
            replies: Vec::new(),
            reply: Some(rep(ReplyCode::D, "netstring format error", 11, Some(8))),
            codes: codes(0, 0, 1, 0),
            index: 1,
            session_confirmed: true,
            ts: 11,
        })),
        Record::Anomaly(Box::new(Anomaly {
            endpoints: ep,
            protocol: Some(Protocol::Qmqp),
            kind: AnomalyKind::SmtpToQmServer,
            detail: "client sent \"EHLO x\\r\\n\"; the server answered with 1 reply netstring(s)"
                .into(),
            ts: 10,
        })),
    ];
    assert_eq!(out, expected);
}

#[test]
fn wrong_protocol_sample_when_sniffer_spans_chunks() {
    // The sniffer needs three bytes to say "not QMTP/QMQP": the sample must
    // hold each client byte once.
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, b"1", 1, None, &mut out);
    s.data(CLIENT, 1, b"2 foo", 2, None, &mut out);
    s.finish(4, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = anomaly(&out[0]);
    assert_eq!(a.kind, AnomalyKind::WrongProtocolToQmServer);
    assert_eq!(
        a.detail,
        "client sent \"12 foo\"; the server sent no reply netstring"
    );
    assert_eq!(a.protocol, None);
}

#[test]
fn smtp_on_port_25_rejected() {
    // Server banner first.
    let mut s = session(25);
    let mut out = Vec::new();
    let banner = b"220 mail.example.net ESMTP Postfix\r\n";
    assert_eq!(s.data(SERVER, 0, banner, 1, None, &mut out), Status::Reject);
    assert_eq!(
        s.data(CLIENT, 0, b"EHLO x\r\n", 2, Some(36), &mut out),
        Status::Reject
    );
    s.finish(3, &mut out);
    assert!(out.is_empty(), "{out:#?}");
    // Client bytes first.
    let mut s = session(25);
    assert_eq!(
        s.data(CLIENT, 0, b"EHLO x\r\n", 1, None, &mut out),
        Status::Reject
    );
    assert_eq!(s.data(SERVER, 0, banner, 2, None, &mut out), Status::Reject);
    s.end_of_direction(CLIENT, 3, &mut out);
    s.finish(4, &mut out);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn scgi_and_bencode_rejected() {
    let scgi = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,";
    let samples: [(&[u8], u16); 3] = [(scgi, 4000), (b"d4:spaml1:a1:bee", 6881), (b"4:spam", 6881)];
    for (bytes, port) in samples {
        // Whole, and byte by byte.
        for cuts in [vec![], (1..bytes.len()).collect::<Vec<_>>()] {
            let mut s = session(port);
            let mut out = Vec::new();
            let st = feed(&mut s, CLIENT, bytes, &cuts, 1, None, &mut out);
            assert_eq!(st, Status::Reject, "{bytes:?}");
            assert_eq!(
                s.data(SERVER, 0, b"Status: 200 OK\r\n", 2, None, &mut out),
                Status::Reject
            );
            s.finish(3, &mut out);
            assert!(out.is_empty(), "{out:#?}");
        }
    }
}

#[test]
fn unanswered_package_reported_without_service() {
    let p = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@a.net", b"y@a.net"]);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p, 10, None, &mut out);
    s.end_of_direction(CLIENT, 15, &mut out);
    assert!(out.is_empty(), "{out:#?}");
    s.finish(50, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    let t = txn(&out[0]);
    assert_eq!(t.replies, vec![None, None]);
    assert_eq!(t.reply, None);
    assert_eq!(t.codes, codes(0, 0, 0, 2));
    assert!(!t.session_confirmed);
    assert!(!t.complete());
    assert_eq!(t.index, 1);
    assert_eq!(t.ts, 10);
    assert_eq!(t.request.as_ref().unwrap().state, RequestState::Complete);
    assert_eq!(s.confirmed(), None);
}

#[test]
fn package_without_recipients_gets_no_reply() {
    let a = qmtp(b'\n', b"no one", b"a@example.org", &[]);
    assert!(a.ends_with(b"0:,"));
    let b = qmtp(b'\n', b"two", b"b@example.org", &[b"p@a.net", b"q@a.net"]);
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &stream, 10, None, &mut out);
    let mut replies = reply(b'K', "ok p");
    replies.extend(reply(b'D', "no q"));
    s.data(SERVER, 0, &replies, 20, Some(stream.len() as u64), &mut out);
    s.finish(30, &mut out);
    // Held until the session is confirmed, then written in order after
    // the service and the held anomaly.
    assert_eq!(out.len(), 4, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 20)
    );
    let an = anomaly(&out[1]);
    assert_eq!(an.kind, AnomalyKind::QmtpPackageWithoutRecipients);
    assert_eq!(an.protocol, Some(Protocol::Qmtp));
    let ta = txn(&out[2]);
    assert_eq!(ta.index, 1);
    assert_eq!(ta.replies, vec![]);
    assert_eq!(ta.codes, codes(0, 0, 0, 0));
    assert_eq!(ta.request.as_ref().unwrap().recipient_count, 0);
    assert!(ta.session_confirmed);
    let tb = txn(&out[3]);
    assert_eq!(tb.index, 2);
    let ack = Some(stream.len() as u64);
    assert_eq!(
        tb.replies,
        vec![
            Some(rep(ReplyCode::K, "ok p", 20, ack)),
            Some(rep(ReplyCode::D, "no q", 20, ack))
        ]
    );
    assert_eq!(rcpt_texts(tb), ["p@a.net", "q@a.net"]);
    assert_eq!(tb.request.as_ref().unwrap().start_offset, a.len() as u64);
}

/// A session fed `client` (at 10), then `server` (at 20), whose first bytes
/// are no reply: the flow is rejected and nothing is written, before or at
/// the end.
fn rejected_flow_writes_nothing(client: &[u8], server: &[u8]) {
    let mut s = session(209);
    let mut out = Vec::new();
    assert_eq!(
        s.data(CLIENT, 0, client, 10, None, &mut out),
        Status::Continue
    );
    assert!(out.is_empty(), "{out:#?}");
    let ack = Some(client.len() as u64);
    assert_eq!(s.data(SERVER, 0, server, 20, ack, &mut out), Status::Reject);
    s.finish(30, &mut out);
    assert!(out.is_empty(), "a rejected flow wrote: {out:#?}");
}

/// A package naming no recipient gets no reply, so nothing confirms the
/// session when it comes: it is held like the session's anomalies. A
/// server whose first bytes are no reply netstring rejects the flow, and
/// then nothing at all is written; a silent server, at the end, leaves
/// the package reported as a transaction, as any unanswered package is.
#[test]
fn a_package_without_recipients_waits_for_the_session() {
    let a = qmtp(b'\n', b"no one", b"a@example.org", &[]);
    rejected_flow_writes_nothing(&a, b"HTTP/1.1 400 Bad Request\r\n\r\n");

    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &a, 10, None, &mut out);
    assert!(out.is_empty());
    s.finish(30, &mut out);
    let t = transactions(&out);
    assert_eq!(t.len(), 1, "{out:#?}");
    assert_eq!(t[0].request.as_ref().unwrap().recipient_count, 0);
    assert!(!t[0].session_confirmed);
    assert_eq!(s.confirmed(), None);
}

/// Past `MAX_PENDING` pipelined packages, the oldest stops waiting for its
/// replies. Before the session is confirmed it is held as the anomaly is:
/// written once replies confirm the session (first, unanswered; the
/// replies then go to the packages after it), never for a flow whose server
/// turns out to speak another protocol.
#[test]
fn too_many_pipelined_packages_wait_for_the_session() {
    let mut stream = Vec::new();
    for i in 0..=MAX_PENDING {
        let rcpt = format!("r{i}@example.net");
        stream.extend(qmtp(b'\n', b"hi", b"a@example.org", &[rcpt.as_bytes()]));
    }
    let ack = Some(stream.len() as u64);
    rejected_flow_writes_nothing(&stream, b"220 mail.example.net ESMTP\r\n");

    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &stream, 10, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "ok"), 20, ack, &mut out);
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 20)
    );
    assert_eq!(kinds(&out), ["too_many_pipelined_packages"]);
    let t = transactions(&out);
    assert_eq!(t.len(), 2, "{out:#?}");
    assert_eq!((t[0].index, t[0].codes), (1, codes(0, 0, 0, 1)));
    assert_eq!(rcpt_texts(t[0]), ["r0@example.net"]);
    assert_eq!((t[1].index, t[1].codes), (2, codes(1, 0, 0, 0)));
    assert_eq!(rcpt_texts(t[1]), ["r1@example.net"]);
}

#[test]
fn midstream_reply_to_unseen_package_is_not_matched() {
    let stale = reply(b'K', "ok for a package we never saw");
    let p = qmtp(b'\n', b"seen", b"a@example.org", &[b"x@example.net"]);
    let mine = reply(b'Z', "greylisted");
    let c = sock("192.0.2.7:51000");
    let srv = sock("198.51.100.9:209");
    let mut s = Session::new([c, srv], None, true);
    let mut out = Vec::new();
    // The server's reply to an earlier package: it acks up to where our view
    // of the client stream begins.
    s.data(SERVER, 0, &stale, 1, Some(0), &mut out);
    assert_eq!(s.client_dir(), Some(CLIENT));
    s.data(CLIENT, 0, &p, 2, Some(stale.len() as u64), &mut out);
    let ack = Some(p.len() as u64);
    s.data(SERVER, stale.len() as u64, &mine, 3, ack, &mut out);
    s.finish(4, &mut out);
    let ep = Endpoints {
        client: c,
        server: srv,
    };
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(ep, Protocol::Qmtp, Evidence::RequestAndReply, 2)
    );
    let t = txn(&out[1]);
    assert_eq!(t.endpoints, ep);
    assert_eq!(t.index, 1);
    assert_eq!(
        t.replies,
        vec![Some(rep(ReplyCode::Z, "greylisted", 3, ack))]
    );
    assert_eq!(rcpt_texts(t), ["x@example.net"]);
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
}

#[test]
fn midstream_roles_from_high_port_client() {
    // Direction 0 is the server on 209; the client (high port) speaks first.
    let srv = sock("198.51.100.9:209");
    let c = sock("192.0.2.7:61000");
    let p = qmtp(b'\r', b"x", b"s@example.org", &[b"r@example.net"]);
    let ep = Endpoints {
        client: c,
        server: srv,
    };
    for server_first in [false, true] {
        let mut s = Session::new([srv, c], None, true);
        let mut out = Vec::new();
        if server_first {
            // A reply from direction 0 makes direction 1 the client.
            s.data(0, 0, &reply(b'K', "old"), 1, Some(0), &mut out);
            assert_eq!(s.client_dir(), Some(1));
        }
        s.data(1, 0, &p, 2, None, &mut out);
        assert_eq!(s.client_dir(), Some(1));
        let off = if server_first { 7 } else { 0 };
        s.data(
            0,
            off,
            &reply(b'K', "ok"),
            3,
            Some(p.len() as u64),
            &mut out,
        );
        s.finish(4, &mut out);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(
            out[0],
            service(
                ep,
                Protocol::Qmtp,
                Evidence::RequestAndReply,
                if server_first { 2 } else { 3 }
            )
        );
        let t = txn(&out[1]);
        assert_eq!(t.endpoints, ep);
        assert_eq!(t.replies.len(), 1);
        assert_eq!(t.replies[0].as_ref().unwrap().text.text(), "ok");
    }
}

#[test]
fn client_closes_mid_package_on_confirmed_session() {
    let p1 = qmtp(b'\n', b"first", b"a@example.org", &[b"x@example.net"]);
    let p2 = qmtp(
        b'\n',
        b"second",
        b"b@example.org",
        &[b"y@a.net", b"z@a.net"],
    );
    // Cut p2 right after its first recipient netstring.
    let head = ns(b"\nsecond").len() + ns(b"b@example.org").len();
    let list_len = ns(b"y@a.net").len() + ns(b"z@a.net").len();
    let cut = head + format!("{list_len}:").len() + ns(b"y@a.net").len();
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p1, 10, None, &mut out);
    let l1 = p1.len() as u64;
    s.data(SERVER, 0, &reply(b'K', "ok"), 11, Some(l1), &mut out);
    assert_eq!(out.len(), 2);
    s.data(CLIENT, l1, &p2[..cut], 12, None, &mut out);
    s.end_of_direction(CLIENT, 13, &mut out);
    s.finish(14, &mut out);
    assert_eq!(out.len(), 3, "{out:#?}");
    let t = txn(&out[2]);
    assert_eq!(t.index, 2);
    assert!(t.session_confirmed);
    assert!(!t.complete());
    let q = t.request.as_ref().unwrap();
    assert_eq!(q.state, RequestState::Truncated);
    assert_eq!(q.sender, Some(field(b"b@example.org")));
    assert_eq!(rcpt_texts(t), ["y@a.net"]);
    assert_eq!((q.start_offset, q.end_offset), (l1, l1 + cut as u64));
    assert_eq!(t.replies, vec![None]);
    assert_eq!(t.codes, codes(0, 0, 0, 1));
    assert_eq!(t.ts, 13);
}

#[test]
fn recipients_beyond_cap_counted_and_replies_consumed() {
    let n = MAX_RECIPIENTS + 2;
    let names: Vec<String> = (0..n).map(|i| format!("r{i}@example.net")).collect();
    let refs: Vec<&[u8]> = names.iter().map(|s| s.as_bytes()).collect();
    let p1 = qmtp(b'\n', b"many", b"bulk@example.org", &refs);
    let p2 = qmtp(b'\n', b"next", b"one@example.org", &[b"last@example.net"]);
    let mut stream = p1.clone();
    stream.extend_from_slice(&p2);
    let mut replies: Vec<u8> = (0..n)
        .flat_map(|i| reply(b'K', &format!("ok {i}")))
        .collect();
    replies.extend(reply(b'D', "no such user"));
    let mut s = session(209);
    let mut out = Vec::new();
    feed(&mut s, CLIENT, &stream, &[1448, 2896], 10, None, &mut out);
    let ack = Some(stream.len() as u64);
    let cuts: Vec<usize> = (1..replies.len() / 1000 + 1).map(|i| i * 1000).collect();
    feed(&mut s, SERVER, &replies, &cuts, 20, ack, &mut out);
    s.finish(30, &mut out);
    assert_eq!(out.len(), 3, "{}", out.len());
    let t1 = txn(&out[1]);
    let q1 = t1.request.as_ref().unwrap();
    assert_eq!(q1.recipient_count, n as u64);
    assert_eq!(q1.recipients.len(), MAX_RECIPIENTS);
    assert_eq!(q1.recipients[MAX_RECIPIENTS - 1].text(), "r999@example.net");
    assert_eq!(t1.replies.len(), MAX_RECIPIENTS);
    assert!(t1.replies.iter().all(Option::is_some));
    assert_eq!(t1.replies[999].as_ref().unwrap().text.text(), "ok 999");
    assert_eq!(t1.codes, codes(n as u64, 0, 0, 0));
    let t2 = txn(&out[2]);
    assert_eq!(rcpt_texts(t2), ["last@example.net"]);
    assert_eq!(
        t2.replies,
        vec![Some(rep(ReplyCode::D, "no such user", 20, ack))]
    );
    assert_eq!(t2.codes, codes(0, 0, 1, 0));
}

#[test]
fn gap_in_message_body_costs_nothing() {
    let body = vec![b'm'; 200];
    let p = qmtp(b'\n', &body, b"a@example.org", &[b"x@example.net"]);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p[..20], 10, None, &mut out);
    assert_eq!(s.gap(CLIENT, 100, 11, &mut out), Status::Continue);
    s.data(CLIENT, 120, &p[120..], 12, None, &mut out);
    let ack = Some(p.len() as u64);
    s.data(SERVER, 0, &reply(b'K', "ok"), 13, ack, &mut out);
    s.finish(14, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 13)
    );
    let t = txn(&out[1]);
    assert!(t.complete());
    let q = t.request.as_ref().unwrap();
    assert_eq!(q.message_gap_bytes, 100);
    assert_eq!(q.message_bytes, 200);
    assert_eq!(q.sender, Some(field(b"a@example.org")));
    assert_eq!(rcpt_texts(t), ["x@example.net"]);
    assert_eq!(t.replies, vec![Some(rep(ReplyCode::K, "ok", 13, ack))]);
}

#[test]
fn wrong_protocol_kind_does_not_depend_on_segmentation() {
    for split in [1usize, 2, 5, 30] {
        let c: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let s: SocketAddr = "198.51.100.25:209".parse().unwrap();
        let mut sess = Session::new([c, s], Some(0), false);
        let mut out = Vec::new();
        let ehlo = b"EHLO client.example.org\r\n";
        let mut off = 0u64;
        for piece in ehlo.chunks(split) {
            sess.data(0, off, piece, 1, None, &mut out);
            off += piece.len() as u64;
        }
        sess.finish(2, &mut out);
        let kinds: Vec<&str> = out
            .iter()
            .filter_map(|r| match r {
                Record::Anomaly(a) => Some(a.kind.name()),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["smtp_to_qm_server"], "split {split}");
    }
}

#[test]
fn a_package_cut_after_its_message_is_reported_even_unanswered() {
    let c: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let s: SocketAddr = "198.51.100.25:8025".parse().unwrap();
    // Message netstring whole, sender started, then the client stops.
    let cut = b"5:\nabcd,20:spammer@exam";
    let mut sess = Session::new([c, s], Some(0), false);
    let mut out = Vec::new();
    sess.data(0, 0, cut, 1, None, &mut out);
    sess.finish(2, &mut out);
    let txns: Vec<&Transaction> = out
        .iter()
        .filter_map(|r| match r {
            Record::Transaction(t) => Some(&**t),
            _ => None,
        })
        .collect();
    assert_eq!(txns.len(), 1, "{out:?}");
    let req = txns[0].request.as_ref().unwrap();
    assert_eq!(req.state, RequestState::Truncated);
    assert_eq!(req.sender.as_ref().unwrap().bytes, b"spammer@exam");
    assert!(!txns[0].session_confirmed);
    // A look-alike cut inside its first netstring stays unreported.
    let mut sess = Session::new([c, s], Some(0), false);
    let mut out = Vec::new();
    sess.data(0, 0, b"12:\nabc", 1, None, &mut out);
    sess.finish(2, &mut out);
    assert!(out.is_empty(), "{out:?}");
}

/// Picked up mid-stream (no SYN), a lone netstring from one side whose
/// first content byte is K, Z or D proves nothing: an SCGI exchange whose
/// start was not captured must not become a QMQP service. From a server
/// already confirmed, they do.
#[test]
fn midstream_lone_reply_netstring_is_not_a_service() {
    let srv = sock("198.51.100.20:4000");
    let c = sock("192.0.2.30:51000");
    // The tail of an SCGI request body, then a netstring response.
    let tail = b"ntent-Type: text/plain\r\n\r\nhello";
    let answer = ns(b"Done: 3 items");
    for (known, reported) in [(false, false), (true, true)] {
        let mut s = Session::new([c, srv], None, true);
        if known {
            s.set_known_server();
        }
        let mut out = Vec::new();
        s.data(0, 0, tail, 1, None, &mut out);
        s.data(1, 0, &answer, 2, Some(tail.len() as u64), &mut out);
        s.finish(3, &mut out);
        let services = out
            .iter()
            .filter(|r| matches!(r, Record::Service { .. }))
            .count();
        assert_eq!(services, usize::from(reported), "known {known}: {out:#?}");
        if !reported {
            assert!(out.is_empty(), "{out:#?}");
        }
    }
}

// ---- Tests that pin exact answers (issue 16: mutation testing) ----

/// Anomaly kinds as they are named today; tests compare kinds only through
/// these, so a change of the kind's type touches this block alone.
const OVERLAP: &str = "tcp_overlap_conflict";
const NOT_AN_EVASION_SIGN: &str = "gap_outside_message";

fn kind_name(a: &Anomaly) -> String {
    a.kind.to_string()
}

/// Kinds of the anomalies in `out`, in order.
fn kinds(out: &[Record]) -> Vec<String> {
    out.iter()
        .filter_map(|r| match r {
            Record::Anomaly(a) => Some(kind_name(a)),
            _ => None,
        })
        .collect()
}

/// Raises an anomaly from below the protocol layer, as the flow layer does.
fn raise(s: &mut Session, kind: &'static str, detail: &str, ts: u64, out: &mut Vec<Record>) {
    let kind = crate::AnomalyKind::from_name(kind).expect("a known kind");
    s.anomaly(kind, detail.to_string(), ts, out);
}

fn transactions(out: &[Record]) -> Vec<&Transaction> {
    out.iter()
        .filter_map(|r| match r {
            Record::Transaction(t) => Some(&**t),
            _ => None,
        })
        .collect()
}

/// Bytes a pending package holds: its copied fields plus one reply slot
/// per stored recipient.
fn pending_cost(recipients: &[&[u8]], sender: &[u8], prefix: &[u8]) -> usize {
    recipients.iter().map(|r| r.len()).sum::<usize>()
        + sender.len()
        + prefix.len()
        + recipients.len() * std::mem::size_of::<Option<Reply>>()
}

/// `stored_bytes` is exactly pending packages (fields, reply slots and the
/// reply texts given to them) + early reply texts (+64 each) + broken
/// requests, and drops back to 0 once everything has been reported.
#[test]
fn stored_bytes_is_pending_plus_early_plus_broken() {
    // Early replies alone: a QMQP server speaking first.
    let mut s = session(628);
    let mut out = Vec::new();
    assert_eq!(s.stored_bytes(), 0);
    s.data(SERVER, 0, &reply(b'D', "not now"), 1, Some(0), &mut out);
    assert_eq!(s.stored_bytes(), 7 + 64);
    s.data(SERVER, 10, &reply(b'K', "x"), 2, Some(0), &mut out);
    assert_eq!(s.stored_bytes(), 7 + 64 + 1 + 64);
    // A request takes the first; the second waits for the next request.
    s.data(CLIENT, 0, &qmqp_request(), 3, Some(20), &mut out);
    assert_eq!(s.stored_bytes(), 1 + 64);
    assert_eq!(transactions(&out).len(), 1);

    // Pending, early and broken at once: a QMTP flow picked up mid-stream
    // holds its replies until the end.
    let rcpts: [&[u8]; 2] = [b"r1@example.net", b"r2@example.net"];
    let p1 = qmtp(b'\n', b"body", b"alice@example.org", &rcpts);
    let p0 = pending_cost(&rcpts, b"alice@example.org", b"\nbody");
    let mut p2 = qmtp(b'\n', b"hi", b"me@example.org", &[]);
    p2.truncate(p2.len() - 3);
    p2.extend_from_slice(b"9:x"); // recipient list that is no netstring list
    let c = sock("192.0.2.7:51000");
    let srv = sock("198.51.100.9:209");
    let mut s = Session::new([c, srv], None, true);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p1, 1, None, &mut out);
    assert_eq!(s.stored_bytes(), p0);
    let ack = Some(p1.len() as u64);
    s.data(SERVER, 0, &reply(b'K', "ok"), 2, ack, &mut out);
    s.data(SERVER, 5, &reply(b'Z', "no"), 3, ack, &mut out);
    assert_eq!(s.stored_bytes(), p0 + 2 * (2 + 64));
    s.data(CLIENT, p1.len() as u64, &p2, 4, None, &mut out);
    let broken = b"me@example.org".len() + b"\nhi".len();
    assert_eq!(s.stored_bytes(), p0 + 2 * (2 + 64) + broken);
    s.finish(5, &mut out);
    assert_eq!(s.stored_bytes(), 0);
    let t = transactions(&out);
    assert_eq!(t.len(), 2, "{out:#?}");
    assert_eq!(
        t[0].replies,
        vec![
            Some(rep(ReplyCode::K, "ok", 2, ack)),
            Some(rep(ReplyCode::Z, "no", 3, ack))
        ]
    );
    let q = t[0].request.as_ref().unwrap();
    assert_eq!(q.message_prefix, b"\nbody");
    assert_eq!(
        q.stored_bytes() + 2 * std::mem::size_of::<Option<Reply>>(),
        p0
    );
    assert!(matches!(
        t[1].request.as_ref().unwrap().state,
        RequestState::Malformed(_)
    ));
    assert_eq!(s.confirmed(), Some(Evidence::RequestAndReply));
    assert_eq!(s.protocol(), Some(Protocol::Qmtp));

    // Seen from the start, a package answered in full is reported at once
    // and its bytes (fields and reply texts) are released.
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p1, 1, None, &mut out);
    assert_eq!(s.stored_bytes(), p0);
    s.data(SERVER, 0, &reply(b'K', "ok"), 2, ack, &mut out);
    assert_eq!(s.stored_bytes(), p0 + 2);
    s.data(SERVER, 5, &reply(b'K', "ok"), 2, ack, &mut out);
    assert_eq!(transactions(&out).len(), 1);
    assert_eq!(s.stored_bytes(), 0);
}

/// `take_evasion_signs` returns the held evasion signs (and only those)
/// of a session rejected because of what the client sent, once; nothing
/// while the session is alive, and nothing when the server itself spoke
/// another protocol.
#[test]
fn evasion_signs_only_from_a_session_the_client_side_rejected() {
    let mut s = session(25);
    let mut out = Vec::new();
    raise(&mut s, OVERLAP, "first", 1, &mut out);
    raise(&mut s, NOT_AN_EVASION_SIGN, "second", 1, &mut out);
    assert!(out.is_empty());
    assert!(s.take_evasion_signs().is_empty(), "alive: nothing to take");
    assert_eq!(
        s.data(CLIENT, 0, b"EHLO x\r\n", 2, None, &mut out),
        Status::Reject
    );
    let signs = s.take_evasion_signs();
    assert_eq!(signs.len(), 1, "{signs:#?}");
    assert_eq!(kind_name(&signs[0]), OVERLAP);
    assert_eq!(signs[0].detail, "first");
    assert_eq!(signs[0].endpoints, eps(25));
    assert!(s.take_evasion_signs().is_empty(), "taken once");

    let mut s = session(25);
    raise(&mut s, OVERLAP, "first", 1, &mut out);
    let banner = b"220 mail.example.net ESMTP\r\n";
    assert_eq!(s.data(SERVER, 0, banner, 2, None, &mut out), Status::Reject);
    assert!(s.take_evasion_signs().is_empty());
    s.finish(3, &mut out);
    assert!(out.is_empty(), "{out:#?}");
}

/// Held anomalies are capped, but anomalies that are no evasion sign
/// (chaff with bad checksums, which a sender of chaff adds at will) do not
/// crowd out the sign that follows them: the conflict is what reports the
/// flow when the session then rejects it. Once the list holds signs only,
/// a further one is dropped (and counted) like any other.
#[test]
fn evasion_signs_are_not_crowded_out_of_the_held_anomalies() {
    let cap = super::MAX_HELD_ANOMALIES;
    let mut s = session(25);
    let mut out = Vec::new();
    for i in 0..cap + 3 {
        raise(
            &mut s,
            NOT_AN_EVASION_SIGN,
            &format!("chaff {i}"),
            1,
            &mut out,
        );
    }
    raise(&mut s, OVERLAP, "the conflict", 2, &mut out);
    assert!(out.is_empty());
    assert_eq!(s.held_anomalies().len(), cap);
    let last = s.held_anomalies().last().map(kind_name);
    assert_eq!(last.as_deref(), Some(OVERLAP), "the sign is kept, last");
    assert_eq!(s.counters.anomalies_dropped_unconfirmed, 4);
    assert_eq!(
        s.data(CLIENT, 0, b"EHLO x\r\n", 3, None, &mut out),
        Status::Reject
    );
    let signs = s.take_evasion_signs();
    assert_eq!(signs.len(), 1, "{signs:#?}");
    assert_eq!(signs[0].detail, "the conflict");

    // Signs fill the list: a later one is dropped, the earlier stay.
    let mut s = session(25);
    for i in 0..cap + 1 {
        raise(&mut s, OVERLAP, &format!("sign {i}"), 1, &mut out);
    }
    assert_eq!(s.held_anomalies().len(), cap);
    assert_eq!(
        s.held_anomalies()[cap - 1].detail,
        format!("sign {}", cap - 1)
    );
    assert_eq!(s.counters.anomalies_dropped_unconfirmed, 1);
}

/// The flow layer may have seen the client's first bytes before the
/// session existed: that sample (at most 48 bytes, completed from later
/// client bytes) is what the wrong-protocol anomaly reports.
#[test]
fn a_sample_handed_over_by_the_flow_layer_is_reported() {
    let first = b"GET /index.html HTTP/1.1\r\nHost: "; // 32 bytes
    let later = b"mail.example.net\r\nAccept: */*\r\n";
    let mut s = session(8025);
    let mut out = Vec::new();
    s.client_spoke_other(first, 3);
    let st = s.data(CLIENT, first.len() as u64, later, 4, None, &mut out);
    assert_eq!(st, Status::Continue);
    s.data(SERVER, 0, &reply(b'D', "format"), 5, Some(60), &mut out);
    s.finish(6, &mut out);
    assert_eq!(kinds(&out), ["http_to_qm_server"], "{out:#?}");
    let a = anomaly(out.last().unwrap());
    assert_eq!(
        a.detail,
        "client sent \"GET /index.html HTTP/1.1\\r\\nHost: mail.example.net\"; \
         the server answered with 1 reply netstring(s)"
    );
    assert_eq!(a.ts, 3);
    assert_eq!(
        out[0],
        service(eps(8025), Protocol::Qmqp, Evidence::ReplyOnly, 6)
    );

    // A longer sample is cut at 48 bytes.
    let mut s = session(209);
    let mut out = Vec::new();
    let long = [b'A'; 60];
    s.client_spoke_other(&long, 1);
    s.finish(2, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(
        anomaly(&out[0]).detail,
        format!(
            "client sent \"{}\"; the server sent no reply netstring",
            "A".repeat(48)
        )
    );
}

/// `set_known_server_protocol`: a request of the other protocol to a
/// server known to speak one is another protocol spoken to it (its one
/// reply is a reply-only transaction of the known protocol); a request of
/// the same protocol is a transaction of that protocol.
#[test]
fn a_known_server_protocol_decides_what_a_request_is() {
    let pkg = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@example.net"]);
    let req = qmqp_request();
    let ep = eps(8025);

    // QMTP package to a known QMQP server.
    let mut s = session(8025);
    s.set_known_server_protocol(Protocol::Qmqp);
    let mut out = Vec::new();
    assert_eq!(s.data(CLIENT, 0, &pkg, 1, None, &mut out), Status::Continue);
    let ack = Some(pkg.len() as u64);
    s.data(SERVER, 0, &reply(b'D', "bad"), 2, ack, &mut out);
    s.finish(3, &mut out);
    assert_eq!(out.len(), 3, "{out:#?}");
    assert_eq!(out[0], service(ep, Protocol::Qmqp, Evidence::ReplyOnly, 3));
    let t = txn(&out[1]);
    assert_eq!(t.protocol, Protocol::Qmqp);
    assert_eq!(t.request, None);
    assert_eq!(t.reply, Some(rep(ReplyCode::D, "bad", 2, ack)));
    assert_eq!(kinds(&out), ["wrong_protocol_to_qm_server"]);
    assert_eq!(s.protocol(), Some(Protocol::Qmqp));

    // QMQP request to a known QMQP server.
    let mut s = session(8025);
    s.set_known_server_protocol(Protocol::Qmqp);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &req, 1, None, &mut out);
    let ack = Some(req.len() as u64);
    s.data(SERVER, 0, &reply(b'K', "ok"), 2, ack, &mut out);
    s.finish(3, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(ep, Protocol::Qmqp, Evidence::RequestAndReply, 2)
    );
    assert_eq!(txn(&out[1]).codes, codes(2, 0, 0, 0));

    // QMQP request to a known QMTP server: its reply is an unsolicited
    // QMTP reply.
    let mut s = session(8025);
    s.set_known_server_protocol(Protocol::Qmtp);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &req, 1, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "ok"), 2, ack, &mut out);
    s.finish(3, &mut out);
    assert_eq!(out[0], service(ep, Protocol::Qmtp, Evidence::ReplyOnly, 3));
    assert_eq!(
        kinds(&out),
        ["qmtp_unsolicited_reply", "wrong_protocol_to_qm_server"],
        "{out:#?}"
    );
    assert!(transactions(&out).is_empty());
}

/// A reply-only server's protocol is guessed from its port: 209 QMTP,
/// 628 QMQP, any other QMQP (only QMQP servers speak first).
#[test]
fn a_reply_only_server_is_guessed_from_its_port() {
    for (port, protocol) in [
        (209, Protocol::Qmtp),
        (628, Protocol::Qmqp),
        (8025, Protocol::Qmqp),
    ] {
        let mut s = session(port);
        let mut out = Vec::new();
        let refusal = reply(b'D', "go away");
        s.data(SERVER, 0, &refusal, 1, Some(0), &mut out);
        // Bytes of another protocol after a reply: still watched, whatever
        // the port.
        let st = s.data(CLIENT, 0, b"EHLO x\r\n", 2, None, &mut out);
        assert_eq!(st, Status::Continue, "port {port}");
        s.finish(3, &mut out);
        assert_eq!(
            out[0],
            service(eps(port), protocol, Evidence::ReplyOnly, 3),
            "port {port}"
        );
        assert_eq!(s.protocol(), Some(protocol));
        assert_eq!(s.confirmed(), Some(Evidence::ReplyOnly));
        if protocol == Protocol::Qmtp {
            assert_eq!(kinds(&out), ["qmtp_unsolicited_reply", "smtp_to_qm_server"]);
            assert_eq!(out.len(), 3);
        } else {
            assert_eq!(kinds(&out), ["smtp_to_qm_server"]);
            assert_eq!(out.len(), 3);
            let t = txn(&out[1]);
            assert_eq!(t.protocol, Protocol::Qmqp);
            assert_eq!(t.reply, Some(rep(ReplyCode::D, "go away", 1, Some(0))));
        }
    }
}

/// Held anomalies of an unconfirmed session are capped at 16; the rest
/// are counted. At the end the held evasion signs are reported.
#[test]
fn held_anomalies_are_capped_at_16_and_the_rest_counted() {
    let mut s = session(209);
    let mut out = Vec::new();
    for i in 0..20 {
        raise(&mut s, OVERLAP, &i.to_string(), i, &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(s.counters.anomalies_dropped_unconfirmed, 4);
    s.finish(30, &mut out);
    let details: Vec<&str> = out.iter().map(|r| anomaly(r).detail.as_str()).collect();
    let expected: Vec<String> = (0..16).map(|i: u32| i.to_string()).collect();
    assert_eq!(details, expected);
    assert_eq!(s.counters.anomalies_dropped_unconfirmed, 4);

    // Held ones that are not evasion signs are counted at the end too.
    let mut s = session(209);
    let mut out = Vec::new();
    raise(&mut s, NOT_AN_EVASION_SIGN, "a", 1, &mut out);
    raise(&mut s, OVERLAP, "b", 1, &mut out);
    s.finish(2, &mut out);
    assert_eq!(kinds(&out), [OVERLAP]);
    assert_eq!(s.counters.anomalies_dropped_unconfirmed, 1);
}

/// Direction 2 is no side of the flow, and an empty chunk says nothing
/// (not even where the stream starts): both are ignored.
#[test]
fn direction_2_and_empty_chunks_are_ignored() {
    let p = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@example.net"]);
    let ack = Some(p.len() as u64);
    let mut s = session(209);
    let mut out = Vec::new();
    assert_eq!(s.data(CLIENT, 7, b"", 1, None, &mut out), Status::Continue);
    s.data(CLIENT, 0, &p, 1, None, &mut out);
    assert_eq!(s.data(SERVER, 0, b"", 2, ack, &mut out), Status::Continue);
    let r = reply(b'K', "ok");
    assert_eq!(s.data(2, 0, &r, 2, ack, &mut out), Status::Continue);
    assert!(out.is_empty(), "{out:#?}");
    s.data(SERVER, 0, &r, 3, ack, &mut out);
    assert_eq!(s.data(2, 6, &r, 3, ack, &mut out), Status::Continue);
    s.finish(4, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    let t = txn(&out[1]);
    assert_eq!(t.replies, vec![Some(rep(ReplyCode::K, "ok", 3, ack))]);
    let q = t.request.as_ref().unwrap();
    assert_eq!((q.start_offset, q.end_offset), (0, p.len() as u64));
    assert!(kinds(&out).is_empty());
}

fn midstream_session(server_port: u16) -> Session {
    Session::new(
        [sock(C_ADDR), sock(&format!("198.51.100.1:{server_port}"))],
        None,
        true,
    )
}

/// A mid-stream flow whose roles are unknown gets 8 more tries at a later
/// segment start, then is rejected; a package at the 9th start is still
/// recognised, where it begins.
#[test]
fn a_midstream_flow_gets_8_more_tries_then_is_rejected() {
    let p = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@example.net"]);
    for garbage_segments in [8u64, 9] {
        let mut s = midstream_session(209);
        let mut out = Vec::new();
        let mut off = 1000;
        for i in 0..garbage_segments {
            let seg = format!("garbage {i}\r\n");
            let st = s.data(CLIENT, off, seg.as_bytes(), i, None, &mut out);
            let want = if i < 8 {
                Status::Continue
            } else {
                Status::Reject
            };
            assert_eq!(st, want, "segment {i}");
            off += seg.len() as u64;
        }
        let st = s.data(CLIENT, off, &p, 20, None, &mut out);
        if garbage_segments == 9 {
            assert_eq!(st, Status::Reject);
            s.finish(30, &mut out);
            assert!(out.is_empty(), "{out:#?}");
            continue;
        }
        assert_eq!(st, Status::Continue);
        assert_eq!(s.client_dir(), Some(CLIENT));
        let ack = Some(off + p.len() as u64);
        s.data(SERVER, 0, &reply(b'K', "ok"), 21, ack, &mut out);
        s.finish(30, &mut out);
        assert_eq!(out.len(), 2, "{out:#?}");
        let q = txn(&out[1]).request.as_ref().unwrap();
        assert_eq!((q.start_offset, q.end_offset), (off, off + p.len() as u64));
    }
}

/// Mid-stream, once a reply made the roles known, the client side too gets
/// 8 more tries; after them another protocol spoken to a QMTP port is
/// watched (and reported with the sample where it was finally judged),
/// not rejected.
#[test]
fn a_midstream_client_gets_8_tries_then_is_another_protocol() {
    let mut s = midstream_session(209);
    let mut out = Vec::new();
    s.data(SERVER, 0, &reply(b'K', "old"), 1, Some(0), &mut out);
    assert_eq!(s.client_dir(), Some(CLIENT));
    let mut off = 500;
    for i in 0..8 {
        let seg = format!("junk {i}\r\n");
        let st = s.data(CLIENT, off, seg.as_bytes(), 2, None, &mut out);
        assert_eq!(st, Status::Continue, "segment {i}");
        off += seg.len() as u64;
    }
    let st = s.data(CLIENT, off, b"EHLO nine\r\n", 3, None, &mut out);
    assert_eq!(st, Status::Continue);
    s.finish(4, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = anomaly(&out[0]);
    assert_eq!(kind_name(a), "smtp_to_qm_server");
    assert_eq!(
        a.detail,
        "client sent \"EHLO nine\\r\\n\"; the server answered with 1 reply netstring(s)"
    );
    assert_eq!((a.ts, a.protocol), (3, None));
    assert_eq!(s.confirmed(), None);
}

/// Mid-stream, the server side gets 8 more tries at later segment starts
/// (a reply at the 9th is matched); a 9th segment of another protocol
/// rejects the flow as one whose server speaks another protocol, so its
/// evasion signs are not reported.
#[test]
fn a_midstream_server_gets_8_tries_then_is_another_protocol() {
    let p = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@example.net"]);
    let ack = Some(p.len() as u64);
    for garbage_segments in [8u64, 9] {
        let mut s = midstream_session(209);
        let mut out = Vec::new();
        raise(&mut s, OVERLAP, "early", 0, &mut out);
        s.data(CLIENT, 0, &p, 1, None, &mut out);
        assert_eq!(s.client_dir(), Some(CLIENT));
        let mut off = 0;
        for i in 0..garbage_segments {
            let seg = format!("220 banner {i}\r\n");
            let st = s.data(SERVER, off, seg.as_bytes(), 2, ack, &mut out);
            let want = if i < 8 {
                Status::Continue
            } else {
                Status::Reject
            };
            assert_eq!(st, want, "segment {i}");
            off += seg.len() as u64;
        }
        if garbage_segments == 9 {
            assert!(s.take_evasion_signs().is_empty());
            s.finish(5, &mut out);
            assert!(out.is_empty(), "{out:#?}");
            continue;
        }
        let st = s.data(SERVER, off, &reply(b'K', "ok"), 3, ack, &mut out);
        assert_eq!(st, Status::Continue);
        s.finish(5, &mut out);
        assert_eq!(
            out[0],
            service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 3)
        );
        assert_eq!(kinds(&out), [OVERLAP]);
        let t = txn(&out[2]);
        assert_eq!(t.replies, vec![Some(rep(ReplyCode::K, "ok", 3, ack))]);
    }
}

/// Seen from the start, replies that arrive before the package are held;
/// when it is parsed, those acknowledging only bytes before it belong to no
/// package (counted), the others answer its recipients in order.
#[test]
fn replies_before_the_package_are_matched_unless_they_ack_nothing_of_it() {
    let p = qmtp(
        b'\n',
        b"hello",
        b"a@example.org",
        &[b"x@example.net", b"y@example.net"],
    );
    let ack = Some(p.len() as u64);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(SERVER, 0, &reply(b'K', "stale"), 1, Some(0), &mut out);
    s.data(SERVER, 9, &reply(b'K', "ok 1"), 2, ack, &mut out);
    s.data(SERVER, 17, &reply(b'Z', "later"), 3, ack, &mut out);
    assert!(out.is_empty());
    s.data(CLIENT, 0, &p, 4, None, &mut out);
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 4)
    );
    let t = txn(&out[1]);
    assert_eq!(
        t.replies,
        vec![
            Some(rep(ReplyCode::K, "ok 1", 2, ack)),
            Some(rep(ReplyCode::Z, "later", 3, ack))
        ]
    );
    assert_eq!(t.codes, codes(1, 1, 0, 0));
    s.finish(5, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
}

/// A reply acknowledging only bytes before the first package seen belongs
/// to no package: counted, not matched (QMTP, even once the package began).
#[test]
fn a_reply_acking_nothing_of_the_first_package_is_counted_not_matched() {
    let p = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@example.net"]);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p[..10], 1, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "stale"), 2, Some(0), &mut out);
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
    s.data(CLIENT, 10, &p[10..], 3, None, &mut out);
    s.finish(4, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 3)
    );
    let t = txn(&out[1]);
    assert_eq!(t.replies, vec![None]);
    assert_eq!(t.codes, codes(0, 0, 0, 1));
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
}

/// Mid-stream QMTP holds its replies to the end: the leading surplus over
/// the recipients seen answers packages sent before the capture began.
/// Mid-stream QMQP matches at once (one reply per request).
#[test]
fn midstream_qmtp_replies_are_matched_from_the_end_and_qmqp_at_once() {
    let p = qmtp(b'\n', b"hello", b"a@example.org", &[b"x@example.net"]);
    let ack = Some(p.len() as u64);
    let mut s = midstream_session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p, 1, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "old"), 2, ack, &mut out);
    s.data(SERVER, 8, &reply(b'D', "mine"), 3, ack, &mut out);
    s.finish(4, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 2)
    );
    assert_eq!(
        txn(&out[1]).replies,
        vec![Some(rep(ReplyCode::D, "mine", 3, ack))]
    );
    assert_eq!(s.counters.replies_to_unseen_requests, 1);

    let req = qmqp_request();
    let ack = Some(req.len() as u64);
    let mut s = midstream_session(628);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &req, 1, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "queued"), 2, ack, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    s.finish(4, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    let r = rep(ReplyCode::K, "queued", 2, ack);
    check_qmqp_transaction(txn(&out[1]), &r, req.len() as u64);
    assert_eq!(s.counters.replies_to_unseen_requests, 0);
}

/// At most 256 replies wait for a request; the next is counted.
#[test]
fn early_replies_are_capped_at_256_and_the_rest_counted() {
    let mut s = session(628);
    let mut out = Vec::new();
    let r = reply(b'D', "no");
    for i in 0..257u64 {
        s.data(SERVER, i * r.len() as u64, &r, i, Some(0), &mut out);
    }
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
    assert_eq!(s.stored_bytes(), 256 * (2 + 64));
    s.finish(300, &mut out);
    assert_eq!(transactions(&out).len(), 256);
    assert_eq!(txn(out.last().unwrap()).ts, 255);
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
}

/// Early reply texts fill the session budget exactly: a text that just fits
/// is kept, the next loses its text (flagged truncated) but keeps its code.
#[test]
fn early_reply_texts_fill_the_budget_exactly() {
    let mut s = session(628);
    let mut out = Vec::new();
    let mut off = 0u64;
    let mut send = |s: &mut Session, code: u8, len: usize, out: &mut Vec<Record>| {
        let r = reply(code, &"x".repeat(len));
        s.data(SERVER, off, &r, 1, Some(0), out);
        off += r.len() as u64;
    };
    for _ in 0..63 {
        send(&mut s, b'D', 4032, &mut out);
    }
    assert_eq!(s.stored_bytes(), 63 * 4096);
    send(&mut s, b'Z', 4096, &mut out);
    assert_eq!(s.stored_bytes(), SESSION_STORED_BYTES + 64);
    send(&mut s, b'K', 1, &mut out);
    assert_eq!(s.stored_bytes(), SESSION_STORED_BYTES + 128);
    s.finish(2, &mut out);
    let t = transactions(&out);
    assert_eq!(t.len(), 65);
    let fits = t[63].reply.as_ref().unwrap();
    assert_eq!((fits.code, fits.text.bytes.len()), (ReplyCode::Z, 4096));
    assert!(!fits.text.truncated);
    let over = t[64].reply.as_ref().unwrap();
    assert_eq!(over.code, ReplyCode::K);
    assert!(over.text.bytes.is_empty());
    assert!(over.text.truncated);
}

/// A QMQP reply is copied to every recipient, so its text counts once per
/// recipient against the session budget.
#[test]
fn a_qmqp_reply_text_counts_once_per_recipient() {
    let names: Vec<String> = (0..64).map(|i| format!("r{i}@x")).collect();
    let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    for (rcpts, kept) in [(&refs[..1], true), (&refs[..], false)] {
        let req = qmqp(b"m", b"s@x", rcpts);
        let mut s = session(628);
        let mut out = Vec::new();
        s.data(CLIENT, 0, &req, 1, None, &mut out);
        let text = "y".repeat(4096);
        let ack = Some(req.len() as u64);
        s.data(SERVER, 0, &reply(b'K', &text), 2, ack, &mut out);
        let t = txn(&out[1]);
        let r = t.reply.as_ref().unwrap();
        assert_eq!(r.code, ReplyCode::K);
        assert_eq!(r.text.truncated, !kept, "{} recipients", rcpts.len());
        assert_eq!(r.text.bytes.len(), if kept { 4096 } else { 0 });
        assert_eq!(t.codes, codes(rcpts.len() as u64, 0, 0, 0));
        assert_eq!(s.stored_bytes(), 0);
    }
}

/// Reply texts given to a pending package fill the budget exactly: the
/// text that just fits is kept, the next reply loses its text.
#[test]
fn reply_texts_of_a_pending_package_fill_the_budget_exactly() {
    let names: Vec<String> = (0..70).map(|i| format!("r{i:02}@example.net")).collect();
    let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    let p = qmtp(b'\n', b"hi", b"bulk@example.org", &refs);
    let p0 = pending_cost(&refs, b"bulk@example.org", b"\nhi");
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p, 1, None, &mut out);
    assert_eq!(s.stored_bytes(), p0);
    let ack = Some(p.len() as u64);
    let mut lens = Vec::new();
    let mut left = SESSION_STORED_BYTES - p0;
    while left > 4096 {
        lens.push(4096);
        left -= 4096;
    }
    lens.push(left);
    lens.push(1);
    let mut off = 0u64;
    for &n in &lens {
        let r = reply(b'K', &"z".repeat(n));
        s.data(SERVER, off, &r, 2, ack, &mut out);
        off += r.len() as u64;
    }
    assert_eq!(s.stored_bytes(), SESSION_STORED_BYTES);
    s.finish(3, &mut out);
    let t = txn(&out[1]);
    let got: Vec<(usize, bool)> = t
        .replies
        .iter()
        .flatten()
        .map(|r| (r.text.bytes.len(), r.text.truncated))
        .collect();
    let mut want: Vec<(usize, bool)> = lens.iter().map(|&n| (n, false)).collect();
    *want.last_mut().unwrap() = (0, true);
    assert_eq!(got, want);
    assert_eq!(
        t.codes,
        codes(lens.len() as u64, 0, 0, 70 - lens.len() as u64)
    );
}

/// A reply confirms the session as request-and-reply only after a complete
/// request: one already reported (a package naming no recipient) counts; a
/// malformed one does not (then only the end confirms it, by the reply).
#[test]
fn only_a_complete_request_and_a_reply_confirm_a_session() {
    let a = qmtp(b'\n', b"no one", b"a@example.org", &[]);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &a, 10, None, &mut out);
    assert!(out.is_empty(), "held until confirmed: {out:#?}");
    let ack = Some(a.len() as u64);
    s.data(SERVER, 0, &reply(b'K', "what"), 20, ack, &mut out);
    assert_eq!(s.confirmed(), Some(Evidence::RequestAndReply));
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::RequestAndReply, 20)
    );
    assert_eq!(transactions(&out).len(), 1);
    s.finish(30, &mut out);
    assert_eq!(
        kinds(&out),
        ["qmtp_package_without_recipients", "qmtp_unsolicited_reply"]
    );

    // Message netstring, then a sender whose comma is missing.
    let mut bad = ns(b"\nhello");
    bad.extend_from_slice(b"3:abc;");
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &bad, 10, None, &mut out);
    let ack = Some(bad.len() as u64);
    s.data(SERVER, 0, &reply(b'D', "format"), 20, ack, &mut out);
    assert_eq!(s.confirmed(), None);
    assert!(out.is_empty(), "{out:#?}");
    s.finish(30, &mut out);
    assert_eq!(
        out[0],
        service(eps(209), Protocol::Qmtp, Evidence::ReplyOnly, 30)
    );
    assert_eq!(
        kinds(&out),
        ["netstring_missing_comma", "qmtp_unsolicited_reply"]
    );
    let t = transactions(&out);
    assert_eq!(t.len(), 1, "{out:#?}");
    let q = t[0].request.as_ref().unwrap();
    assert_eq!(
        q.state,
        RequestState::Malformed(crate::AnomalyKind::NetstringMissingComma)
    );
    assert_eq!((q.start_offset, q.end_offset), (0, bad.len() as u64));
    assert!(t[0].session_confirmed);
}

/// A server stream that stops being reply netstrings: before any reply the
/// flow is rejected; after one it is an anomaly and the session goes on.
#[test]
fn a_broken_reply_stream_rejects_only_before_the_first_reply() {
    let mut s = session(628);
    let mut out = Vec::new();
    assert_eq!(
        s.data(SERVER, 0, b"3:Dab;", 1, Some(0), &mut out),
        Status::Reject
    );
    s.finish(2, &mut out);
    assert!(out.is_empty(), "{out:#?}");

    let mut s = session(628);
    let mut out = Vec::new();
    let mut bytes = reply(b'D', "no");
    bytes.extend_from_slice(b"3:Dab;");
    assert_eq!(
        s.data(SERVER, 0, &bytes, 1, Some(0), &mut out),
        Status::Continue
    );
    s.finish(2, &mut out);
    assert_eq!(
        out[0],
        service(eps(628), Protocol::Qmqp, Evidence::ReplyOnly, 2)
    );
    assert_eq!(kinds(&out), ["netstring_missing_comma"]);
    assert_eq!(
        anomaly(&out[1]).detail,
        "server stream stopped being reply netstrings"
    );
    assert_eq!(transactions(&out).len(), 1);
}

/// Inside a message body the client parser hands out the range it will
/// skip (past the 64 bytes kept); bytes skipped there cost nothing and are
/// no gap. The server side has no such range, and a skip there is a loss
/// of server bytes.
#[test]
fn skipped_body_bytes_are_no_gap_and_a_server_skip_is_a_loss() {
    let body = vec![b'm'; 200];
    let p = qmtp(b'\n', &body, b"a@example.org", &[b"x@example.net"]);
    let q = qmtp(b'\n', b"next", b"b@example.org", &[b"y@a.net", b"z@a.net"]);
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p[..20], 10, None, &mut out);
    // "201:" then the encoding byte and 15 body bytes: 48 more are kept.
    assert_eq!(s.skippable(CLIENT), Some((68, 205)));
    assert_eq!(s.skippable(SERVER), None);
    s.data(CLIENT, 20, &p[20..68], 10, None, &mut out);
    assert_eq!(s.skippable(CLIENT), Some((68, 205)));
    assert_eq!(s.skip(CLIENT, 137, 11, &mut out), Status::Continue);
    assert_eq!(s.skippable(CLIENT), None);
    s.data(CLIENT, 205, &p[205..], 12, None, &mut out);
    let l1 = p.len() as u64;
    s.data(SERVER, 0, &reply(b'K', "ok"), 13, Some(l1), &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    let t = txn(&out[1]);
    let r = t.request.as_ref().unwrap();
    assert_eq!((r.message_bytes, r.message_gap_bytes), (200, 0));
    assert_eq!(r.message_prefix.len(), 64);
    assert_eq!(rcpt_texts(t), ["x@example.net"]);

    // The next package's replies: one, then 4 server bytes skipped.
    s.data(CLIENT, l1, &q, 14, None, &mut out);
    let ack = Some(l1 + q.len() as u64);
    s.data(SERVER, 6, &reply(b'K', "ok y"), 15, ack, &mut out);
    assert_eq!(s.skip(SERVER, 4, 16, &mut out), Status::Continue);
    assert_eq!(kinds(&out), ["gap_in_reply_stream"]);
    let a = anomaly(out.last().unwrap());
    assert_eq!(a.detail, "4 server bytes lost; replies after it unknown");
    assert_eq!(a.ts, 16);
    s.finish(17, &mut out);
    let t = txn(out.last().unwrap());
    assert_eq!(rcpt_texts(t), ["y@a.net", "z@a.net"]);
    assert_eq!(t.codes, codes(1, 0, 0, 1));
}

/// Lost client bytes outside a message body end the client stream: the
/// package in progress is reported truncated, and one anomaly says so
/// however many gaps follow. Lost server bytes before the server's first
/// byte leave the session waiting for its replies; lost bytes before
/// anything is known reject a flow seen from its start.
#[test]
fn gaps_outside_a_body_are_reported_once() {
    let p = qmtp(b'\n', b"one", b"a@example.org", &[b"x@example.net"]);
    let l1 = p.len() as u64;
    let mut s = session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p, 1, None, &mut out);
    assert_eq!(s.gap(SERVER, 10, 2, &mut out), Status::Continue);
    assert!(out.is_empty(), "{out:#?}");
    s.data(SERVER, 10, &reply(b'K', "ok"), 3, Some(l1), &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        txn(&out[1]).replies,
        vec![Some(rep(ReplyCode::K, "ok", 3, Some(l1)))]
    );
    // The second package loses bytes inside its sender's length.
    let mut head = ns(b"\nhi");
    head.extend_from_slice(b"1");
    s.data(CLIENT, l1, &head, 4, None, &mut out);
    assert_eq!(s.gap(CLIENT, 5, 5, &mut out), Status::Continue);
    assert_eq!(s.gap(CLIENT, 3, 6, &mut out), Status::Continue);
    assert_eq!(kinds(&out), ["gap_outside_message"]);
    let a = anomaly(out.last().unwrap());
    assert_eq!(
        a.detail,
        "5 client bytes lost outside a message body; session incomplete"
    );
    assert_eq!((a.ts, a.protocol), (5, Some(Protocol::Qmtp)));
    s.finish(7, &mut out);
    assert_eq!(out.len(), 4, "{out:#?}");
    let t = txn(&out[3]);
    assert_eq!(t.index, 2);
    let q = t.request.as_ref().unwrap();
    assert_eq!(q.state, RequestState::Truncated);
    assert_eq!(
        (q.start_offset, q.end_offset),
        (l1, l1 + head.len() as u64 + 5)
    );

    // Nothing known yet, seen from the start: rejected.
    let mut s = session(209);
    assert_eq!(s.gap(CLIENT, 10, 1, &mut out), Status::Reject);
    assert_eq!(s.data(CLIENT, 10, &p, 2, None, &mut out), Status::Reject);
    // Mid-stream: the next segment start is tried afresh.
    let mut s = midstream_session(209);
    let mut out = Vec::new();
    assert_eq!(
        s.data(CLIENT, 0, b"12", 1, None, &mut out),
        Status::Continue
    );
    assert_eq!(s.gap(CLIENT, 5, 2, &mut out), Status::Continue);
    s.data(CLIENT, 7, &p, 3, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "ok"), 4, Some(7 + l1), &mut out);
    s.finish(5, &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    let q = txn(&out[1]).request.as_ref().unwrap();
    assert_eq!((q.start_offset, q.end_offset), (7, 7 + l1));
}

/// Mid-stream, a QMQP request cut short after its sender is reported with
/// the server's one reply, which answers all its recipients (and makes the
/// transaction confirmed though the session is not); one cut inside its
/// message netstring is dropped and counted.
#[test]
fn a_cut_midstream_qmqp_request_takes_the_early_reply() {
    let body = b"Subject: q\n\nbody";
    let inner_len =
        ns(body).len() + ns(b"s@example.org").len() + ns(b"a@x").len() + ns(b"b@x").len();
    let req = qmqp(body, b"s@example.org", &[b"a@x", b"b@x"]);
    let cut = format!("{inner_len}:").len()
        + ns(body).len()
        + ns(b"s@example.org").len()
        + ns(b"a@x").len();
    let mut s = midstream_session(628);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &req[..cut], 1, None, &mut out);
    let r = rep(ReplyCode::D, "too slow", 2, Some(cut as u64));
    s.data(
        SERVER,
        0,
        &reply(b'D', "too slow"),
        2,
        Some(cut as u64),
        &mut out,
    );
    s.end_of_direction(CLIENT, 3, &mut out);
    s.finish(4, &mut out);
    assert_eq!(s.confirmed(), None);
    assert_eq!(out.len(), 1, "{out:#?}");
    let t = txn(&out[0]);
    assert!(t.session_confirmed);
    assert_eq!(t.reply, Some(r.clone()));
    assert_eq!(t.replies, vec![Some(r)]);
    assert_eq!(t.codes, codes(0, 0, 1, 0));
    let q = t.request.as_ref().unwrap();
    assert_eq!(q.state, RequestState::Truncated);
    assert_eq!(q.sender, Some(field(b"s@example.org")));
    assert_eq!(rcpt_texts(t), ["a@x"]);
    assert_eq!(s.counters.requests_dropped_unconfirmed, 0);

    let mut s = midstream_session(628);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &req[..10], 1, None, &mut out);
    s.finish(2, &mut out);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(s.counters.requests_dropped_unconfirmed, 1);
}

/// Mid-stream QMTP with fewer replies than recipients seen: which packages
/// they answer is unknown, so none is matched; each is counted and the
/// ambiguity reported.
#[test]
fn midstream_qmtp_short_of_replies_matches_none() {
    let p = qmtp(
        b'\n',
        b"hello",
        b"a@example.org",
        &[b"x@example.net", b"y@example.net"],
    );
    let ack = Some(p.len() as u64);
    let mut s = midstream_session(209);
    let mut out = Vec::new();
    s.data(CLIENT, 0, &p, 1, None, &mut out);
    s.data(SERVER, 0, &reply(b'K', "ok"), 2, ack, &mut out);
    s.finish(3, &mut out);
    assert_eq!(s.counters.replies_to_unseen_requests, 1);
    assert_eq!(
        kinds(&out),
        ["qmtp_midstream_replies_ambiguous"],
        "{out:#?}"
    );
    assert_eq!(
        anomaly(&out[1]).detail,
        "picked up mid-stream: 1 replies for 2 recipients seen; which packages they answer is unknown, so none were matched"
    );
    let t = txn(&out[2]);
    assert_eq!(t.replies, vec![None, None]);
    assert_eq!(t.codes, codes(0, 0, 0, 2));
}
