use super::*;
use qmwatch_proto::{CodeCounts, Encoding, Endpoints, Evidence, Protocol, ReplyCode, RequestState};
use qmwatch_wire::decode::{addr_from_ip, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG};

/// A QMTP package: message "\nabcd" (LF encoding), sender, one recipient.
const PACKAGE: &[u8] = b"5:\nabcd,17:alice@example.org,19:15:bob@example.com,,";
const REPLY: &[u8] = b"23:Kok 1795238274 qp 15868,";

fn ns(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

#[test]
fn sample_bytes_are_well_formed() {
    let mut p = ns(b"\nabcd");
    p.extend(ns(b"alice@example.org"));
    p.extend(ns(&ns(b"bob@example.com")));
    assert_eq!(PACKAGE, &p[..]);
    assert_eq!(REPLY, &ns(b"Kok 1795238274 qp 15868")[..]);
}

type Pkt = (Segment, Vec<u8>);

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// One TCP connection; offsets are stream offsets of each direction.
#[derive(Clone, Copy)]
struct Conn {
    c: SocketAddr,
    s: SocketAddr,
    cisn: u32,
    sisn: u32,
}

impl Conn {
    fn new(c: &str, s: &str) -> Self {
        Conn {
            c: sa(c),
            s: sa(s),
            cisn: u32::MAX - 20,
            sisn: 0x1234_5678,
        }
    }
    fn pkt(
        ts: u64,
        from: SocketAddr,
        to: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) -> Pkt {
        let seg = Segment {
            ts,
            src: addr_from_ip(from.ip()),
            dst: addr_from_ip(to.ip()),
            v4: from.is_ipv4(),
            sport: from.port(),
            dport: to.port(),
            seq,
            ack,
            flags,
            payload_len: payload.len() as u32,
            tcp_header_len: 20,
            ..Segment::default()
        };
        (seg, payload.to_vec())
    }
    fn syn(&self, ts: u64) -> Pkt {
        Self::pkt(ts, self.c, self.s, self.cisn, 0, TCP_SYN, b"")
    }
    fn syn_ack(&self, ts: u64) -> Pkt {
        let ack = self.cisn.wrapping_add(1);
        Self::pkt(ts, self.s, self.c, self.sisn, ack, TCP_SYN | TCP_ACK, b"")
    }
    /// Client to server: `off` into the client stream, acking `ack` of the server's.
    fn c2s(&self, ts: u64, off: u64, ack: u64, flags: u8, payload: &[u8]) -> Pkt {
        let seq = self.cisn.wrapping_add(1).wrapping_add(off as u32);
        let ack = self.sisn.wrapping_add(1).wrapping_add(ack as u32);
        Self::pkt(ts, self.c, self.s, seq, ack, flags | TCP_ACK, payload)
    }
    fn s2c(&self, ts: u64, off: u64, ack: u64, flags: u8, payload: &[u8]) -> Pkt {
        let seq = self.sisn.wrapping_add(1).wrapping_add(off as u32);
        let ack = self.cisn.wrapping_add(1).wrapping_add(ack as u32);
        Self::pkt(ts, self.s, self.c, seq, ack, flags | TCP_ACK, payload)
    }
    /// SYN, SYN-ACK, ACK at ts 1000..3000.
    fn handshake(&self) -> Vec<Pkt> {
        vec![
            self.syn(1000),
            self.syn_ack(2000),
            self.c2s(3000, 0, 0, 0, b""),
        ]
    }
    /// Handshake, request at 4000, ack and reply (5000, 6000), FINs both
    /// ways and the last ACK (7000..9000).
    fn conversation(&self, req: &[u8], reply: &[u8]) -> Vec<Pkt> {
        let (q, r) = (req.len() as u64, reply.len() as u64);
        let mut v = self.handshake();
        v.extend([
            self.c2s(4000, 0, 0, 0, req),
            self.s2c(5000, 0, q, 0, b""),
            self.s2c(6000, 0, q, 0, reply),
            self.c2s(7000, q, r, TCP_FIN, b""),
            self.s2c(8000, r, q + 1, TCP_FIN, b""),
            self.c2s(9000, q + 1, r + 1, 0, b""),
        ]);
        v
    }
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            client: self.c,
            server: self.s,
        }
    }
}

fn run(t: &mut FlowTable, pkts: &[Pkt]) -> Vec<Record> {
    let mut out = Vec::new();
    for (seg, payload) in pkts {
        t.segment(seg, payload, &mut out);
    }
    out
}

/// The package, as sent by `conn`'s client, with the given replies.
fn check_transaction(r: &Record, conn: &Conn, reply_ts: Option<u64>) {
    let Record::Transaction(t) = r else {
        panic!("not a transaction: {r:?}");
    };
    assert_eq!(t.endpoints, conn.endpoints());
    assert_eq!(t.protocol, Protocol::Qmtp);
    assert_eq!(t.index, 1);
    let req = t.request.as_ref().expect("request");
    assert_eq!(req.state, RequestState::Complete);
    assert_eq!(req.encoding, Some(Encoding::Lf));
    assert_eq!(req.message_bytes, 4);
    assert_eq!(
        req.sender.as_ref().map(|f| f.text()).as_deref(),
        Some("alice@example.org")
    );
    let rcpts: Vec<String> = req.recipients.iter().map(|f| f.text()).collect();
    assert_eq!(rcpts, ["bob@example.com"]);
    assert_eq!(
        (req.start_offset, req.end_offset),
        (0, PACKAGE.len() as u64)
    );
    assert_eq!(t.replies.len(), 1);
    assert_eq!(t.reply, None);
    match reply_ts {
        Some(ts) => {
            let rep = t.replies[0].as_ref().expect("reply");
            assert_eq!(rep.code, ReplyCode::K);
            assert_eq!(rep.text.text(), "ok 1795238274 qp 15868");
            assert_eq!(rep.ts, ts);
            assert_eq!(rep.acked_client_offset, Some(PACKAGE.len() as u64));
            assert_eq!(
                t.codes,
                CodeCounts {
                    k: 1,
                    ..CodeCounts::default()
                }
            );
            assert!(t.complete());
            assert!(t.session_confirmed);
            assert_eq!(t.ts, ts);
        }
        None => {
            assert_eq!(t.replies[0], None);
            assert_eq!(
                t.codes,
                CodeCounts {
                    missing: 1,
                    ..CodeCounts::default()
                }
            );
            assert!(!t.complete());
            assert!(!t.session_confirmed);
            assert_eq!(t.ts, 4000);
        }
    }
}

/// A full QMTP conversation's records: the service, then the transaction.
fn check_qmtp(out: &[Record], conn: &Conn) {
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        out[0],
        Record::Service {
            endpoints: conn.endpoints(),
            protocol: Protocol::Qmtp,
            evidence: Evidence::RequestAndReply,
            ts: 6000,
        }
    );
    check_transaction(&out[1], conn, Some(6000));
}

#[test]
fn qmtp_conversation_yields_service_and_transaction() {
    for conn in [
        Conn::new("10.0.0.1:40000", "10.0.0.2:209"),
        // The client is the higher address, and uses the lower port.
        Conn::new("10.0.0.9:100", "10.0.0.2:209"),
        Conn::new("10.0.0.1:100", "10.0.0.1:209"),
        Conn::new("[2001:db8::2]:1025", "[2001:db8::1]:209"),
    ] {
        let mut t = FlowTable::new(FlowConfig::default());
        let out = run(&mut t, &conn.conversation(PACKAGE, REPLY));
        check_qmtp(&out, &conn);
        let st = &t.stats;
        assert_eq!(
            (st.flows_created, st.flows_candidate, st.flows_rejected),
            (1, 1, 0)
        );
        assert_eq!(st.flows_closed, 1);
        assert_eq!(st.reassembly, StreamEvents::default());
        // The closed entry lingers, then expires without more records.
        assert_eq!(t.len(), 1);
        let mut more = Vec::new();
        t.expire(9000 + FlowConfig::default().closed_linger_ns + 1, &mut more);
        assert!(more.is_empty());
        assert!(t.is_empty());
        // The SYN missed: the SYN-ACK names the client.
        let mut t = FlowTable::new(FlowConfig::default());
        check_qmtp(&run(&mut t, &conn.conversation(PACKAGE, REPLY)[1..]), &conn);
    }
}

#[test]
fn client_bytes_reversed_give_same_records() {
    let conn = Conn::new("192.0.2.7:2000", "192.0.2.1:209");
    let mut t = FlowTable::new(FlowConfig::default());
    let expected = run(&mut t, &conn.conversation(PACKAGE, REPLY));
    check_qmtp(&expected, &conn);

    let whole = conn.conversation(PACKAGE, REPLY);
    let mut pkts = conn.handshake();
    for (i, b) in PACKAGE.iter().enumerate().rev() {
        pkts.push(conn.c2s(4000, i as u64, 0, 0, &[*b]));
    }
    pkts.extend(whole[4..].iter().cloned());
    let mut t = FlowTable::new(FlowConfig::default());
    let out = run(&mut t, &pkts);
    assert_eq!(out, expected);
    assert_eq!(t.held_bytes(), 0);
    assert_eq!(t.stats.reassembly.gaps, 0);
    assert_eq!(t.stats.flows_closed, 1);
}

#[test]
fn other_protocols_rejected_at_first_payload() {
    // HTTP: the client speaks first.
    let http = Conn::new("10.1.0.1:50000", "10.1.0.2:80");
    let pkts = http.conversation(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    // SMTP: the server speaks first.
    let smtp = Conn::new("10.1.0.1:50001", "10.1.0.2:25");
    let banner = b"220 mx.example.org ESMTP\r\n";
    let ehlo = b"EHLO client.example.org\r\n";
    let (b, e) = (banner.len() as u64, ehlo.len() as u64);
    let mut smtp_pkts = smtp.handshake();
    smtp_pkts.extend([
        smtp.s2c(4000, 0, 0, 0, banner),
        smtp.c2s(5000, 0, b, 0, ehlo),
        smtp.s2c(6000, b, e, 0, b"250 ok\r\n"),
        smtp.c2s(7000, e, b + 8, TCP_FIN, b""),
        smtp.s2c(8000, b + 8, e + 1, TCP_FIN, b""),
    ]);
    // HTTP is rejected at the server's first bytes (a QMQP server may answer
    // a client's garbage with a reply netstring); SMTP at its banner.
    for (pkts, first_payload) in [(pkts, 5), (smtp_pkts, 3)] {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        for (i, (seg, payload)) in pkts.iter().enumerate() {
            t.segment(seg, payload, &mut out);
            let rejected = u64::from(i >= first_payload);
            assert_eq!(t.stats.flows_rejected, rejected, "after packet {i}");
            assert!(out.is_empty());
        }
        assert_eq!(t.stats.flows_candidate, 0);
        assert_eq!(t.stats.flows_closed, 1);
        assert_eq!(t.held_bytes(), 0);
        t.finish_all(&mut out);
        assert!(out.is_empty());
        assert!(t.is_empty());
    }
}

/// A FIN or RST that rides on the segment whose bytes judge a flow (or on
/// the client's bytes while the server's answer is awaited) ends the flow
/// as a bare one does: the flow is closed at once, not left in the table
/// until it times out. Short exchanges often close that way (an HTTP/1.0
/// answer with its FIN, a request sent with the client's FIN, a reset
/// that carries a diagnostic text).
#[test]
fn a_fin_or_rst_on_the_judged_bytes_still_ends_the_flow() {
    let req = b"GET / HTTP/1.0\r\n\r\n";
    let more = b"X-More: 1\r\n";
    let answer = b"HTTP/1.0 200 OK\r\n\r\n";
    let (q, m, a) = (req.len() as u64, more.len() as u64, answer.len() as u64);
    let conn = Conn::new("192.0.2.1:50000", "198.51.100.2:8080");
    let with = |extra: Vec<Pkt>| {
        let mut v = conn.handshake();
        v.extend(extra);
        v
    };
    let cases: Vec<(&str, Vec<Pkt>)> = vec![
        (
            "the answer carries the server's FIN",
            with(vec![
                conn.c2s(4000, 0, 0, 0, req),
                conn.s2c(5000, 0, q, TCP_FIN, answer),
                conn.c2s(6000, q, a + 1, TCP_FIN, b""),
            ]),
        ),
        (
            "the request carries the client's FIN",
            with(vec![
                conn.c2s(4000, 0, 0, TCP_FIN, req),
                conn.s2c(5000, 0, q + 1, TCP_FIN, answer),
            ]),
        ),
        (
            "the client's FIN rides on more bytes while the answer is awaited",
            with(vec![
                conn.c2s(4000, 0, 0, 0, req),
                conn.c2s(4500, q, 0, TCP_FIN, more),
                conn.s2c(5000, 0, q + m + 1, TCP_FIN, answer),
            ]),
        ),
        (
            "the server resets with a text",
            with(vec![
                conn.c2s(4000, 0, 0, 0, req),
                conn.s2c(5000, 0, q, TCP_RST, b"no thanks"),
            ]),
        ),
        (
            "the client resets with a text",
            with(vec![conn.c2s(4000, 0, 0, TCP_RST, req)]),
        ),
    ];
    for (name, pkts) in cases {
        let mut t = FlowTable::new(FlowConfig::default());
        let out = run(&mut t, &pkts);
        assert!(out.is_empty(), "{name}: {out:#?}");
        assert_eq!(t.stats.flows_candidate, 0, "{name}");
        assert_eq!(t.stats.flows_closed, 1, "{name}");
    }
}

/// A RST or the last FIN on the segment whose bytes make the session
/// reject a candidate (or pass the session memory cap) ends the flow as
/// well: left open, the flow waited out the idle timeout and, taken for
/// the same connection, swallowed a new one's first bytes on its
/// four-tuple as a second copy of the rejected ones.
#[test]
fn a_reset_on_the_bytes_a_session_rejects_ends_the_flow() {
    let conn = Conn::new("192.0.2.1:50000", "198.51.100.2:209");
    let p = PACKAGE.len() as u64;
    let junk = b"HTTP/1.0 400 Bad Request\r\n\r\n";
    let cases: Vec<(&str, FlowConfig, Vec<Pkt>)> = vec![
        (
            "the server's first bytes are not a reply, and reset",
            FlowConfig::default(),
            vec![
                conn.c2s(4000, 0, 0, 0, PACKAGE),
                conn.s2c(5000, 0, p, TCP_RST, junk),
            ],
        ),
        (
            "the server's first bytes are not a reply, with the last FIN",
            FlowConfig::default(),
            vec![
                conn.c2s(4000, 0, 0, TCP_FIN, PACKAGE),
                conn.s2c(5000, 0, p + 1, TCP_FIN, junk),
            ],
        ),
        (
            "the package passes the session memory cap, and the client resets",
            FlowConfig {
                session_memory: 8,
                ..FlowConfig::default()
            },
            vec![conn.c2s(4000, 0, 0, TCP_RST, PACKAGE)],
        ),
    ];
    for (name, cfg, extra) in cases {
        let mut pkts = conn.handshake();
        pkts.extend(extra);
        let mut t = FlowTable::new(cfg);
        run(&mut t, &pkts);
        assert_eq!(t.stats.flows_candidate, 1, "{name}");
        assert_eq!(t.stats.flows_rejected, 1, "{name}");
        assert_eq!(t.stats.flows_closed, 1, "{name}: the flow was left open");
        // A new connection on the four-tuple once the old one's linger is
        // over is followed from its first bytes.
        let later = Conn {
            cisn: 7_000,
            sisn: 9_000,
            ..conn
        };
        let mut next: Vec<Pkt> = later.conversation(PACKAGE, REPLY);
        for (seg, _) in &mut next {
            seg.ts += 5_000_000_000;
        }
        let mut out = Vec::new();
        t.expire(5_000_000_000, &mut out);
        let out = run(&mut t, &next);
        assert!(
            out.iter().any(|r| matches!(r, Record::Transaction(_))),
            "{name}: the next connection was not followed: {out:#?}"
        );
    }
}

#[test]
fn flow_cap_evicts_oldest() {
    let cfg = FlowConfig {
        max_flows: 3,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    let mut keys = Vec::new();
    for i in 0..10u16 {
        let conn = Conn::new(&format!("10.2.0.1:{}", 40000 + i), "10.2.0.2:209");
        let (seg, payload) = conn.syn(1000 + u64::from(i));
        t.segment(&seg, &payload, &mut out);
        keys.push(FlowKey::of(&seg).0);
        assert!(t.len() <= 3);
    }
    assert_eq!(t.len(), 3);
    assert_eq!((t.stats.flows_created, t.stats.flows_evicted_cap), (10, 7));
    assert_eq!(t.stats.flows_peak, 3);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(t.lookup(k, k.tag()).is_some(), i >= 7, "flow {i}");
    }
    assert!(out.is_empty());
}

#[test]
fn idle_flow_times_out_with_unanswered_package() {
    let conn = Conn::new("10.3.0.1:40000", "10.3.0.2:209");
    let cfg = FlowConfig::default();
    let mut t = FlowTable::new(cfg);
    let mut pkts = conn.handshake();
    pkts.push(conn.c2s(4000, 0, 0, 0, PACKAGE));
    let mut out = run(&mut t, &pkts);
    assert!(out.is_empty());
    t.expire(4000 + cfg.idle_timeout_ns, &mut out);
    assert!(out.is_empty());
    assert_eq!(t.len(), 1);
    t.expire(4000 + cfg.idle_timeout_ns + 1, &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    check_transaction(&out[0], &conn, None);
    assert_eq!(t.stats.flows_timed_out, 1);
    assert!(t.is_empty());
}

#[test]
fn finish_all_reports_open_flows() {
    let open = Conn::new("10.4.0.1:40000", "10.4.0.2:209");
    let done = Conn::new("10.4.0.1:40001", "10.4.0.2:209");
    let mut t = FlowTable::new(FlowConfig::default());
    let mut pkts = open.handshake();
    pkts.push(open.c2s(4000, 0, 0, 0, PACKAGE));
    let mut out = run(&mut t, &pkts);
    out.extend(run(&mut t, &done.conversation(PACKAGE, REPLY)));
    check_qmtp(&out, &done);
    assert_eq!(t.len(), 2);
    let mut rest = Vec::new();
    t.finish_all(&mut rest);
    assert_eq!(rest.len(), 1, "{rest:#?}");
    check_transaction(&rest[0], &open, None);
    assert!(t.is_empty());
    assert_eq!(t.held_bytes(), 0);
}

/// At the end of input only flows with a session report, least recently
/// active first, however many other flows are open (a scan's unanswered
/// SYNs, flows set aside or waiting for a server's answer); the table is
/// left empty.
#[test]
fn finish_all_reports_sessions_in_order_among_many_open_flows() {
    let early = Conn::new("192.0.2.10:40000", "198.51.100.2:209");
    let late = Conn::new("192.0.2.11:40000", "198.51.100.2:209");
    let mut t = FlowTable::new(FlowConfig::default());
    let mut pkts = late.handshake();
    pkts.push(late.c2s(9000, 0, 0, 0, PACKAGE));
    pkts.extend(early.handshake());
    pkts.push(early.c2s(4000, 0, 0, 0, PACKAGE));
    for n in 0..2000u16 {
        let scanned = Conn::new("203.0.113.7:40000", &format!("198.51.100.3:{}", 1000 + n));
        pkts.push(scanned.syn(5000));
    }
    let http = Conn::new("192.0.2.12:50000", "198.51.100.4:8080");
    pkts.extend(http.handshake());
    pkts.push(http.c2s(6000, 0, 0, 0, b"GET / HTTP/1.0\r\n\r\n"));
    let mut out = run(&mut t, &pkts);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(t.len(), 2003);
    t.finish_all(&mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    check_transaction(&out[0], &early, None);
    let Record::Transaction(last) = &out[1] else {
        panic!("not a transaction: {:?}", out[1]);
    };
    assert_eq!((last.endpoints, last.ts), (late.endpoints(), 9000));
    assert!(t.is_empty());
    assert_eq!((t.held_bytes(), t.session_bytes()), (0, 0));
}

#[test]
fn rst_outside_window_is_ignored_and_reported() {
    let conn = Conn::new("10.5.0.1:40000", "10.5.0.2:209");
    let q = PACKAGE.len() as u64;
    let mut t = FlowTable::new(FlowConfig::default());
    let mut pkts = conn.handshake();
    pkts.push(conn.c2s(4000, 0, 0, 0, PACKAGE));
    pkts.push(conn.s2c(5000, 1_000_000, q, TCP_RST, b""));
    let mut out = run(&mut t, &pkts);
    // Held until the session is confirmed.
    assert!(out.is_empty());
    assert_eq!(t.stats.flows_closed, 0);
    let whole = conn.conversation(PACKAGE, REPLY);
    out.extend(run(&mut t, &whole[5..]));
    assert_eq!(out.len(), 3, "{out:#?}");
    check_qmtp(&[out[0].clone(), out[2].clone()], &conn);
    let Record::Anomaly(a) = &out[1] else {
        panic!("not an anomaly: {:?}", out[1]);
    };
    assert_eq!(a.kind.name(), "tcp_rst_out_of_window");
    assert_eq!(
        (a.endpoints, a.protocol, a.ts),
        (conn.endpoints(), Some(Protocol::Qmtp), 5000)
    );
    assert_eq!(t.stats.flows_closed, 1);
}

/// A RST elsewhere than at the sender's next byte before any payload (which
/// the endpoint drops, RFC 5961) does not end the flow: the QMTP session
/// after it is seen.
#[test]
fn rst_outside_window_before_any_payload_does_not_blind() {
    let conn = Conn::new("192.0.2.5:40000", "198.51.100.5:2209");
    for (name, rst) in [
        ("client", conn.c2s(3500, 1_000_000, 0, TCP_RST, b"")),
        ("server", conn.s2c(3500, 1_000_000, 0, TCP_RST, b"")),
        (
            "client, with text",
            conn.c2s(3500, 1_000_000, 0, TCP_RST, b"x"),
        ),
        // In the window but not at the next byte: an RFC 5961 receiver
        // answers it with an ACK and goes on.
        (
            "client, in the window",
            conn.c2s(3500, 1000, 0, TCP_RST, b""),
        ),
        (
            "server, in the window",
            conn.s2c(3500, 1000, 0, TCP_RST, b""),
        ),
    ] {
        let mut t = FlowTable::new(FlowConfig::default());
        let whole = conn.conversation(PACKAGE, REPLY);
        let mut pkts = whole[..3].to_vec();
        pkts.push(rst);
        pkts.extend_from_slice(&whole[3..]);
        let out = run(&mut t, &pkts);
        let (kinds, rest) = split_anomalies(out);
        check_qmtp(&rest, &conn);
        assert_eq!(kinds, ["tcp_rst_out_of_window"], "{name}");
        assert_eq!(t.stats.flows_closed, 1, "{name}");
    }
    // One that fits the sender's stream ends the flow before its payload.
    let mut t = FlowTable::new(FlowConfig::default());
    let mut pkts = conn.handshake();
    pkts.push(conn.c2s(3500, 0, 0, TCP_RST, b""));
    assert!(run(&mut t, &pkts).is_empty());
    assert_eq!(t.stats.flows_closed, 1);
    assert_eq!(t.stats.rst_out_of_window_dropped, 0);
}

/// During a session too, a RST in the window but not at the next byte (as
/// the client itself could send to hide the rest of the connection) is
/// ignored and reported; the one at the next byte ends the flow.
#[test]
fn rst_in_the_window_but_not_at_the_next_byte_is_ignored() {
    let conn = Conn::new("192.0.2.6:40000", "198.51.100.6:209");
    let q = PACKAGE.len() as u64;
    let whole = conn.conversation(PACKAGE, REPLY);
    let mut pkts = whole[..4].to_vec();
    pkts.push(conn.c2s(4500, q + 1000, 0, TCP_RST, b""));
    pkts.extend_from_slice(&whole[4..]);
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &pkts));
    check_qmtp(&rest, &conn);
    assert_eq!(kinds, ["tcp_rst_out_of_window"]);
    // At the next byte, after the package: the flow ends there.
    let mut pkts = whole[..4].to_vec();
    pkts.push(conn.c2s(4500, q, 0, TCP_RST, b""));
    let mut t = FlowTable::new(FlowConfig::default());
    let out = run(&mut t, &pkts);
    assert_eq!(t.stats.flows_closed, 1, "{out:#?}");
}

/// Feeds `pkts` with their TCP header bytes (20 bytes, checksum not
/// checked), the urgent pointer `urgent` in the header of each packet
/// that has one.
fn run_with_headers(t: &mut FlowTable, pkts: &[(Pkt, u16)]) -> Vec<Record> {
    let mut out = Vec::new();
    for ((seg, payload), urgent) in pkts {
        let mut tcp = vec![0u8; 20];
        tcp[18..20].copy_from_slice(&urgent.to_be_bytes());
        tcp.extend_from_slice(payload);
        let given = Given {
            tcp: Some(&tcp),
            payload,
        };
        t.segment_checked(seg, given, &mut out);
    }
    out
}

/// After a client's `q` bytes: the server's ACK and its `r`-byte reply
/// (`REPLY`), then FINs both ways and the last ACK (5000..9000), without
/// urgent pointers.
fn answered_and_closed(conn: &Conn, q: u64, r: u64) -> Vec<(Pkt, u16)> {
    [
        conn.s2c(5000, 0, q, 0, b""),
        conn.s2c(6000, 0, q, 0, REPLY),
        conn.c2s(7000, q, r, TCP_FIN, b""),
        conn.s2c(8000, r, q + 1, TCP_FIN, b""),
        conn.c2s(9000, q + 1, r + 1, 0, b""),
    ]
    .into_iter()
    .map(|p| (p, 0))
    .collect()
}

/// `conn`'s QMTP conversation with an urgent byte `X` put into the
/// client's package at `at` (URG, the pointer on the byte after it), in
/// `copies` copies of that segment; every client sequence number past it
/// and every acknowledgement of them counts it, as TCP's do.
fn with_urgent_byte(conn: &Conn, at: usize, copies: usize) -> Vec<(Pkt, u16)> {
    let mut data = PACKAGE[..at].to_vec();
    data.push(b'X');
    data.extend_from_slice(&PACKAGE[at..]);
    let (q, r) = (data.len() as u64, REPLY.len() as u64);
    let mut v: Vec<(Pkt, u16)> = conn.handshake().into_iter().map(|p| (p, 0)).collect();
    for n in 0..copies {
        let (mut seg, p) = conn.c2s(4000 + n as u64, 0, 0, 0, &data);
        seg.flags |= TCP_URG;
        v.push(((seg, p), at as u16 + 1));
    }
    v.extend(answered_and_closed(conn, q, r));
    v
}

/// An urgent byte in a client's package is read out of band by the server
/// (the default of every socket): the sensor takes it out of the stream
/// too, so the package reads as the server reads it, and names the trick.
/// At the start (where the sensor would otherwise judge the flow by it)
/// and inside the package, once or retransmitted.
#[test]
fn an_urgent_byte_is_taken_out_of_the_stream() {
    let conn = Conn::new("192.0.2.8:40000", "198.51.100.8:2209");
    for (at, copies) in [(0, 1), (0, 2), (9, 1), (20, 2), (PACKAGE.len(), 1)] {
        let cfg = FlowConfig {
            checksums: ChecksumMode::Ignore,
            ..FlowConfig::default()
        };
        let mut t = FlowTable::new(cfg);
        let out = run_with_headers(&mut t, &with_urgent_byte(&conn, at, copies));
        let (kinds, rest) = split_anomalies(out);
        assert_eq!(kinds, ["tcp_urgent_data"], "at {at}, {copies} copies");
        check_qmtp(&rest, &conn);
        assert_eq!(t.stats.flows_closed, 1);
    }
}

/// An urgent pointer past its segment's payload points at a byte of a
/// later segment, which the server takes out when it comes (Linux does):
/// so does the sensor. Past the per-direction cap urgent bytes stay in.
#[test]
fn an_urgent_pointer_ahead_takes_out_a_later_byte() {
    let conn = Conn::new("192.0.2.9:40000", "198.51.100.9:2209");
    let cfg = FlowConfig {
        checksums: ChecksumMode::Ignore,
        ..FlowConfig::default()
    };
    // The package in two segments: the first (URG) points at the byte
    // after the sixth of the second, an `X` that is not the package's.
    let (head, tail) = PACKAGE.split_at(10);
    let mut second = tail[..5].to_vec();
    second.push(b'X');
    second.extend_from_slice(&tail[5..]);
    let (h, q) = (head.len() as u64, PACKAGE.len() as u64 + 1);
    let r = REPLY.len() as u64;
    let mut pkts: Vec<(Pkt, u16)> = conn.handshake().into_iter().map(|p| (p, 0)).collect();
    let (mut seg, p) = conn.c2s(4000, 0, 0, 0, head);
    seg.flags |= TCP_URG;
    pkts.push(((seg, p), head.len() as u16 + 6));
    pkts.push((conn.c2s(4100, h, 0, 0, &second), 0));
    pkts.extend(answered_and_closed(&conn, q, r));
    let mut t = FlowTable::new(cfg);
    let (kinds, rest) = split_anomalies(run_with_headers(&mut t, &pkts));
    assert_eq!(kinds, ["tcp_urgent_data"]);
    check_qmtp(&rest, &conn);
    // The cap.
    let mut u = urgent::Urgent::default();
    for k in 0..urgent::MAX_URGENT as u32 {
        assert!(u.take_out(k));
    }
    assert!(!u.take_out(100));
}

/// The same with bytes before the urgent one held out of order when the
/// pointer comes: they do not stand in the way (only bytes at or past the
/// urgent byte would have to be renumbered), so the first copy of the
/// pointer takes the byte out, as the server does, and a retransmission
/// of it changes nothing.
#[test]
fn an_urgent_pointer_ahead_of_bytes_held_before_it_takes_out_the_byte() {
    let conn = Conn::new("192.0.2.9:40001", "198.51.100.9:2209");
    let cfg = FlowConfig {
        checksums: ChecksumMode::Ignore,
        ..FlowConfig::default()
    };
    let (head, tail) = PACKAGE.split_at(10);
    let (a, b) = head.split_at(4);
    let mut second = tail[..5].to_vec();
    second.push(b'X');
    second.extend_from_slice(&tail[5..]);
    let (h, q) = (head.len() as u64, PACKAGE.len() as u64 + 1);
    let r = REPLY.len() as u64;
    for copies in [1, 2] {
        let mut pkts: Vec<(Pkt, u16)> = conn.handshake().into_iter().map(|p| (p, 0)).collect();
        // Bytes 4..10 first (held), then 0..4 with the pointer on the `X`
        // at offset 15 (sent `copies` times), then the rest.
        pkts.push((conn.c2s(3900, a.len() as u64, 0, 0, b), 0));
        let (mut seg, p) = conn.c2s(4000, 0, 0, 0, a);
        seg.flags |= TCP_URG;
        for _ in 0..copies {
            pkts.push(((seg, p.clone()), 16));
        }
        pkts.push((conn.c2s(4100, h, 0, 0, &second), 0));
        pkts.extend(answered_and_closed(&conn, q, r));
        let mut t = FlowTable::new(cfg);
        let (kinds, rest) = split_anomalies(run_with_headers(&mut t, &pkts));
        assert_eq!(kinds, ["tcp_urgent_data"], "{copies} copies");
        check_qmtp(&rest, &conn);
    }
}

#[test]
fn rst_in_window_ends_flow() {
    let conn = Conn::new("10.5.0.1:40000", "10.5.0.2:209");
    let q = PACKAGE.len() as u64;
    let mut t = FlowTable::new(FlowConfig::default());
    let mut pkts = conn.handshake();
    pkts.push(conn.c2s(4000, 0, 0, 0, PACKAGE));
    pkts.push(conn.s2c(5000, 0, q, TCP_RST, b""));
    let out = run(&mut t, &pkts);
    assert_eq!(out.len(), 1, "{out:#?}");
    check_transaction(&out[0], &conn, None);
    assert_eq!(t.stats.flows_closed, 1);
    // The reply after it belongs to a closed flow.
    let whole = conn.conversation(PACKAGE, REPLY);
    assert!(run(&mut t, &whole[5..]).is_empty());
}

#[test]
fn qmtp_on_other_port_recognised() {
    let conn = Conn::new("10.6.0.1:40000", "10.6.0.2:8025");
    let mut t = FlowTable::new(FlowConfig::default());
    let out = run(&mut t, &conn.conversation(PACKAGE, REPLY));
    check_qmtp(&out, &conn);
    assert_eq!((t.stats.flows_candidate, t.stats.flows_rejected), (1, 0));
}

#[test]
fn session_memory_cap_reports_and_drops_the_session() {
    // Ten pipelined packages of 20 recipients with 3000-byte addresses: far
    // past a 100 KiB session-memory cap before any reply.
    let conn = Conn::new("203.0.113.9:40000", "198.51.100.25:209");
    let mut stream = Vec::new();
    for p in 0..10 {
        let mut list = Vec::new();
        for r in 0..20 {
            let addr = format!("{}{p}-{r}@example.com", "a".repeat(3000));
            list.extend(ns(addr.as_bytes()));
        }
        stream.extend(ns(b"\nbody"));
        stream.extend(ns(b"s@example.org"));
        stream.extend(ns(&list));
    }
    let cfg = FlowConfig {
        session_memory: 100 * 1024,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    let mut pkts = conn.handshake();
    let mut off = 0u64;
    for chunk in stream.chunks(1448) {
        pkts.push(conn.c2s(4000 + off, off, 0, 0, chunk));
        off += chunk.len() as u64;
    }
    let out = run(&mut t, &pkts);
    assert_eq!(t.stats.sessions_dropped_memcap, 1);
    assert!(
        t.session_bytes <= 100 * 1024 + 70 * 1024,
        "{}",
        t.session_bytes
    );
    // Reported as far as it got: the packages parsed before the cap, unanswered.
    let txns = out
        .iter()
        .filter(|r| matches!(r, Record::Transaction(_)))
        .count();
    assert!(txns >= 1, "{out:?}");
    // And no longer followed: later packets of the flow add nothing.
    let more = run(&mut t, &[conn.s2c(90_000, 0, off, 0, REPLY)]);
    assert!(more.is_empty());
    t.finish_all(&mut Vec::new());
    assert_eq!(t.session_bytes, 0);
}

#[test]
fn garbage_to_a_qmqp_server_on_a_non_standard_port() {
    // Postfix qmqpd answers garbage with a D reply netstring, on any port.
    let conn = Conn::new("203.0.113.9:40000", "198.51.100.25:6628");
    let reply = ns(b"Dnetstring format error while receiving QMQP packet header");
    let mut t = FlowTable::new(FlowConfig::default());
    let out = run(
        &mut t,
        &conn.conversation(b"EHLO client.example.org\r\n", &reply),
    );
    assert_eq!(t.stats.flows_candidate, 1);
    let kinds: Vec<String> = out
        .iter()
        .map(|r| match r {
            Record::Service {
                protocol, evidence, ..
            } => format!("service {protocol:?} {evidence:?}"),
            Record::Transaction(t) => format!(
                "txn request={} reply={:?}",
                t.request.is_some(),
                t.reply.as_ref().map(|r| r.code)
            ),
            Record::Anomaly(a) => format!("anomaly {}", a.kind),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "service Qmqp ReplyOnly",
            "txn request=false reply=Some(D)",
            "anomaly smtp_to_qm_server"
        ]
    );
    if let Some(Record::Anomaly(a)) = out.last() {
        assert!(a.detail.contains("EHLO client.exam"), "{}", a.detail);
    }
}

#[test]
fn ordinary_client_and_server_stay_cheap() {
    // The client's first bytes alone do not reject on a non-standard port:
    // the server's first bytes do, without a candidate ever being made.
    let conn = Conn::new("203.0.113.9:40000", "198.51.100.25:8080");
    let mut t = FlowTable::new(FlowConfig::default());
    let out = run(
        &mut t,
        &conn.conversation(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"),
    );
    assert!(out.is_empty());
    assert_eq!((t.stats.flows_candidate, t.stats.flows_rejected), (0, 1));
}

#[test]
fn a_flow_that_is_not_qmtp_costs_under_256_bytes() {
    // The index holds 8-byte slots, at least a quarter full after growing
    // (shrinking keeps it over an eighth full; a flood that has gone is
    // paid until it shrinks).
    let index = 8 * 4;
    let open = std::mem::size_of::<Flow>() + index;
    assert!(open <= 256, "{open} bytes per open flow");
    // A closed flow leaves its entry for what lingers, with its place in
    // the closed queue.
    let closed = std::mem::size_of::<Lingering>() + index + std::mem::size_of::<ClosedEntry>();
    assert!(closed <= 144, "{closed} bytes per closed flow");
}

#[test]
fn flow_cap_evicts_the_least_recently_active_not_the_oldest() {
    let cfg = FlowConfig {
        max_flows: 3,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    let conns: Vec<Conn> = (0..4u16)
        .map(|i| Conn::new(&format!("10.2.1.1:{}", 40000 + i), "10.2.1.2:209"))
        .collect();
    let key = |c: &Conn| {
        let (seg, _) = c.syn(0);
        FlowKey::of(&seg).0
    };
    for (i, c) in conns.iter().take(3).enumerate() {
        let (seg, payload) = c.syn(1000 + i as u64);
        t.segment(&seg, &payload, &mut out);
    }
    // The oldest flow is active again: the next one in age goes instead.
    let (seg, payload) = conns[0].syn(2000);
    t.segment(&seg, &payload, &mut out);
    let (seg, payload) = conns[3].syn(3000);
    t.segment(&seg, &payload, &mut out);
    let present: Vec<bool> = conns
        .iter()
        .map(|c| t.lookup(&key(c), key(c).tag()).is_some())
        .collect();
    assert_eq!(present, [true, false, true, true]);
}

#[test]
fn an_active_flow_does_not_time_out_however_long_ago_it_began() {
    let cfg = FlowConfig {
        idle_timeout_ns: 100,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    let a = Conn::new("10.2.2.1:40000", "10.2.2.2:209");
    let b = Conn::new("10.2.2.1:40001", "10.2.2.2:209");
    let (seg, payload) = a.syn(0);
    t.segment(&seg, &payload, &mut out);
    let (seg, payload) = b.syn(10);
    t.segment(&seg, &payload, &mut out);
    // `a` stays active every 50 ns; `b` goes quiet.
    for now in (50..=1000).step_by(50) {
        let (seg, payload) = a.syn(now);
        t.segment(&seg, &payload, &mut out);
        t.expire(now, &mut out);
    }
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats.flows_timed_out, 1);
    let (seg, _) = a.syn(0);
    let k = FlowKey::of(&seg).0;
    assert!(t.lookup(&k, k.tag()).is_some());
}

/// Both directions of a connection get one tag, and so one worker
/// (moved here from qmwatch-wire's decode tests, which check that the two
/// directions decode to mirrored sockets).
#[test]
fn flow_tag_is_direction_free() {
    let conn = Conn::new("192.0.2.1:40000", "198.51.100.2:628");
    let (sa, _) = conn.syn(0);
    let (sb, _) = conn.syn_ack(1);
    let (sc, _) = Conn::new("192.0.2.1:40001", "198.51.100.2:628").syn(0);
    assert_eq!(sb.src_socket(), sa.dst_socket());
    assert_eq!(flow_tag(&sa), flow_tag(&sb));
    assert_ne!(flow_tag(&sa), flow_tag(&sc));
    for workers in 1..=64 {
        assert!(worker_of(flow_tag(&sa), workers) < workers);
        assert_eq!(
            worker_of(flow_tag(&sa), workers),
            worker_of(flow_tag(&sb), workers)
        );
    }
    assert_eq!(worker_of(u32::MAX, 64), 63);
}

#[test]
fn the_capture_threads_tag_is_the_keys_tag() {
    for (c, sv) in [
        ("192.0.2.1:40000", "198.51.100.2:209"),
        ("198.51.100.2:209", "192.0.2.1:40000"),
        ("[2001:db8::1]:5", "[2001:db8::2]:628"),
        ("192.0.2.7:1", "192.0.2.7:1"),
    ] {
        let (seg, _) = Conn::new(c, sv).syn(0);
        let (key, _) = FlowKey::of(&seg);
        assert_eq!(flow_tag(&seg), key.tag(), "{c} {sv}");
    }
}

#[test]
fn remembered_servers_are_capped_and_counted() {
    let mut t = FlowTable::new(FlowConfig::default());
    let service = |n: usize| Record::Service {
        endpoints: Endpoints {
            client: "192.0.2.1:40000".parse().unwrap(),
            server: SocketAddr::new(
                std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | n as u128).into(),
                10000 + (n % 1000) as u16,
            ),
        },
        protocol: Protocol::Qmtp,
        evidence: Evidence::RequestAndReply,
        ts: 0,
    };
    for n in 0..MAX_KNOWN_SERVERS + 10 {
        t.note_services(&[service(n)]);
    }
    // Already known: not counted again.
    t.note_services(&[service(0)]);
    assert_eq!(t.known_servers.len(), MAX_KNOWN_SERVERS);
    assert_eq!(t.stats.known_servers_not_remembered, 10);

    // A service is remembered however many anomalies, held until it was
    // confirmed, follow it.
    let mut t = FlowTable::new(FlowConfig::default());
    let held = |n: u64| {
        Record::Anomaly(Box::new(Anomaly {
            endpoints: Endpoints {
                client: "192.0.2.1:40000".parse().unwrap(),
                server: "198.51.100.2:2209".parse().unwrap(),
            },
            protocol: Some(Protocol::Qmtp),
            kind: AnomalyKind::TcpOverlapConflict,
            detail: "held".into(),
            ts: n,
        }))
    };
    let mut records = vec![service(7)];
    records.extend((0..20).map(held));
    t.note_services(&records);
    assert_eq!(t.known_servers.len(), 1);
}

#[test]
fn a_closed_flow_lingers_from_its_last_packet_and_goes_first_at_the_cap() {
    let linger = 1000;
    let cfg = FlowConfig {
        closed_linger_ns: linger,
        max_flows: 3,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    let a = Conn::new("10.4.0.1:40000", "10.4.0.2:80");
    let b = Conn::new("10.4.0.1:40001", "10.4.0.2:80");
    let c = Conn::new("10.4.0.1:40002", "10.4.0.2:80");
    let present = |t: &FlowTable, conn: &Conn| {
        let (k, _) = FlowKey::of(&conn.syn(0).0);
        t.lookup(&k, k.tag()).is_some()
    };
    for (conn, ts) in [(&a, 0), (&b, 10)] {
        let (seg, p) = conn.syn(ts);
        t.segment(&seg, &p, &mut out);
        let (seg, p) = conn.c2s(ts + 1, 0, 0, TCP_RST, b"");
        t.segment(&seg, &p, &mut out);
    }
    assert_eq!(t.stats.flows_closed, 2);
    // A stray packet on `a` after it closed: it lingers from there.
    let (seg, p) = a.c2s(900, 0, 0, TCP_ACK, b"");
    t.segment(&seg, &p, &mut out);
    t.expire(1500, &mut out);
    assert!(present(&t, &a) && !present(&t, &b));
    t.expire(1901, &mut out);
    assert!(!present(&t, &a));
    // At the cap, a closed entry goes before any open flow.
    let (seg, p) = a.syn(2000);
    t.segment(&seg, &p, &mut out);
    let (seg, p) = b.syn(2001);
    t.segment(&seg, &p, &mut out);
    let (seg, p) = b.c2s(2002, 0, 0, TCP_RST, b"");
    t.segment(&seg, &p, &mut out);
    let (seg, p) = c.syn(2003);
    t.segment(&seg, &p, &mut out);
    let d = Conn::new("10.4.0.1:40003", "10.4.0.2:80");
    let (seg, p) = d.syn(2004);
    t.segment(&seg, &p, &mut out);
    assert_eq!(t.len(), 3);
    assert!(present(&t, &a) && !present(&t, &b) && present(&t, &c) && present(&t, &d));
    assert_eq!(t.stats.flows_evicted_cap, 1);
}

#[test]
fn structured_floods_do_not_collide_in_tags() {
    // Addresses and ports counting up together (a SYN flood's shape), v4
    // and v6: tags must look random (200,000 flows in 2^32 tags: a handful
    // of collisions by chance, never clusters).
    for v6 in [false, true] {
        let mut tags = std::collections::HashSet::new();
        let n = 200_000u32;
        for i in 0..n {
            let b = i.to_be_bytes();
            let client = if v6 {
                format!(
                    "[2001:db8::{:x}:{:x}]:{}",
                    i >> 16,
                    i & 0xffff,
                    1024 + i % 60000
                )
            } else {
                format!("10.{}.{}.{}:{}", b[1], b[2], b[3], 1024 + i % 60000)
            };
            let (seg, _) = Conn::new(&client, "192.0.2.9:209").syn(0);
            tags.insert(flow_tag(&seg));
        }
        assert!(
            tags.len() as u32 >= n - 50,
            "{} distinct of {n}",
            tags.len()
        );
    }
}

/// Anomaly kinds in `out`, and the other records.
fn split_anomalies(out: Vec<Record>) -> (Vec<&'static str>, Vec<Record>) {
    let mut kinds = Vec::new();
    let mut rest = Vec::new();
    for r in out {
        match r {
            Record::Anomaly(a) => kinds.push(a.kind.name()),
            r => rest.push(r),
        }
    }
    (kinds, rest)
}

/// Every packet with TTL 64 and, if `ts`, a TCP timestamp that grows with
/// the packet time (per direction, as a sender's clock does).
fn stamped(pkts: Vec<Pkt>, ts: bool) -> Vec<Pkt> {
    pkts.into_iter()
        .map(|(mut s, p)| {
            s.ttl = 64;
            if ts {
                s.has_tsval = true;
                s.tsval = 0x7000_0000u32.wrapping_add((s.ts / 1000) as u32);
            }
            (s, p)
        })
        .collect()
}

/// The conversation with `chaff` sent just before the request (index 3).
fn with_chaff(conn: &Conn, chaff: Vec<Pkt>, ts: bool) -> Vec<Pkt> {
    let mut v = stamped(conn.conversation(PACKAGE, REPLY), ts);
    for (k, c) in chaff.into_iter().enumerate() {
        v.insert(3 + k, c);
    }
    v
}

#[test]
fn chaff_with_a_lower_ttl_is_ignored_and_named() {
    let conn = Conn::new("192.0.2.10:40000", "198.51.100.20:209");
    let (mut chaff, p) = conn.c2s(3500, 0, 0, 0, &[b'9'; PACKAGE.len()]);
    chaff.ttl = 1;
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &with_chaff(&conn, vec![(chaff, p)], false)));
    check_qmtp(&rest, &conn);
    assert_eq!(kinds, ["tcp_ttl_insertion"]);
    assert_eq!(t.stats.ttl_insertion_dropped, 1);
    // A higher TTL (a shorter path) is not chaff; nor is an unknown one.
    let mut t = FlowTable::new(FlowConfig::default());
    let mut v = stamped(conn.conversation(PACKAGE, REPLY), false);
    v[3].0.ttl = 128;
    v[5].0.ttl = 0;
    let (kinds, rest) = split_anomalies(run(&mut t, &v));
    check_qmtp(&rest, &conn);
    assert!(kinds.is_empty(), "{kinds:?}");
}

#[test]
fn chaff_without_ack_or_with_another_syn_is_ignored_and_named() {
    let conn = Conn::new("192.0.2.10:40001", "198.51.100.20:209");
    // fragroute `tcp_chaff null`: no flags at all, other bytes.
    let (mut null, p) = conn.c2s(3500, 0, 0, 0, &[b'9'; PACKAGE.len()]);
    null.flags = 0;
    // `tcp_chaff syn`: a SYN with another ISN, here with data too.
    let syn = Conn::pkt(3600, conn.c, conn.s, 0x0bad_cafe, 0, TCP_SYN, b"1:x,");
    let mut t = FlowTable::new(FlowConfig::default());
    let pkts = with_chaff(&conn, vec![(null, p), syn], false);
    let (kinds, rest) = split_anomalies(run(&mut t, &pkts));
    check_qmtp(&rest, &conn);
    // Once per flow.
    assert_eq!(kinds, ["tcp_chaff_flags"]);
    assert_eq!(t.stats.chaff_flags_dropped, 2);
}

#[test]
fn a_retransmitted_syn_is_not_chaff() {
    let conn = Conn::new("192.0.2.10:40002", "198.51.100.20:209");
    let mut v = conn.conversation(PACKAGE, REPLY);
    v.insert(1, conn.syn(1500));
    v.insert(3, conn.syn_ack(2500));
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &v));
    check_qmtp(&rest, &conn);
    assert!(kinds.is_empty(), "{kinds:?}");
    assert_eq!(t.stats.chaff_flags_dropped, 0);
}

#[test]
fn a_syn_in_a_flow_picked_up_mid_stream_is_chaff() {
    let conn = Conn::new("192.0.2.10:40003", "198.51.100.20:209");
    let v = conn.conversation(PACKAGE, REPLY);
    // No handshake; a SYN from the server's side after the request.
    let mut pkts: Vec<Pkt> = v[3..].to_vec();
    pkts.insert(1, Conn::pkt(4500, conn.s, conn.c, 77, 0, TCP_SYN, b""));
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &pkts));
    assert!(kinds.contains(&"tcp_chaff_flags"), "{kinds:?}");
    assert!(rest.iter().any(|r| matches!(r, Record::Transaction(_))));
}

#[test]
fn chaff_failing_paws_is_ignored_and_named() {
    let conn = Conn::new("192.0.2.10:40004", "198.51.100.20:209");
    // fragroute `tcp_chaff paws`: TSval 0, other bytes.
    let (mut chaff, p) = conn.c2s(3500, 0, 0, 0, &[b'9'; PACKAGE.len()]);
    chaff.ttl = 64;
    chaff.has_tsval = true;
    chaff.tsval = 0;
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &with_chaff(&conn, vec![(chaff, p)], true)));
    check_qmtp(&rest, &conn);
    assert_eq!(kinds, ["tcp_paws_failed"]);
    assert_eq!(t.stats.paws_dropped, 1);
}

/// Segments the network reordered carry older timestamps than segments
/// already seen, but TS.Recent only follows in-order segments (RFC 7323
/// §4.3): nothing is dropped.
#[test]
fn reordered_segments_with_older_timestamps_pass_paws() {
    let conn = Conn::new("192.0.2.10:40005", "198.51.100.20:209");
    let q = PACKAGE.len() as u64;
    let mut v = stamped(conn.handshake(), true);
    let mut parts = Vec::new();
    for (k, chunk) in PACKAGE.chunks(10).enumerate() {
        let off = 10 * k as u64;
        parts.push(conn.c2s(4000 + 1000 * off, off, 0, 0, chunk));
    }
    let mut parts = stamped(parts, true);
    parts.reverse();
    v.extend(parts);
    v.extend(stamped(
        vec![
            conn.s2c(90_000, 0, q, 0, REPLY),
            conn.c2s(91_000, q, REPLY.len() as u64, TCP_FIN, b""),
            conn.s2c(92_000, REPLY.len() as u64, q + 1, TCP_FIN, b""),
        ],
        true,
    ));
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &v));
    assert!(kinds.is_empty(), "{kinds:?}");
    assert_eq!(t.stats.paws_dropped, 0);
    assert!(
        rest.iter().any(|r| matches!(r, Record::Transaction(_))),
        "{rest:#?}"
    );
    // A retransmission of an old segment carries a new timestamp: fine too.
    assert_eq!(t.stats.reassembly.gaps, 0);
}

/// Feeds `seg` with its TCP segment `tcp` (header and payload) and its
/// payload, so that the checksum is checked.
fn feed_checked(
    t: &mut FlowTable,
    seg: &Segment,
    tcp: &[u8],
    payload: &[u8],
    out: &mut Vec<Record>,
) {
    t.segment_checked(
        seg,
        Given {
            tcp: Some(tcp),
            payload,
        },
        out,
    );
}

/// TCP header (20 bytes, no options) and payload of `seg` with the
/// checksum field set to `field`.
fn tcp_bytes(seg: &Segment, payload: &[u8], field: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&seg.sport.to_be_bytes());
    v.extend_from_slice(&seg.dport.to_be_bytes());
    v.extend_from_slice(&seg.seq.to_be_bytes());
    v.extend_from_slice(&seg.ack.to_be_bytes());
    v.extend_from_slice(&[5 << 4, seg.flags, 0xff, 0xff]);
    v.extend_from_slice(&field.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// RFC 1071 sum of big-endian words, folded.
fn fold_sum(words: impl Iterator<Item = u16>) -> u16 {
    let mut s: u64 = words.map(u64::from).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(seg: &Segment, len: usize) -> u16 {
    let a = (seg.src as u32, seg.dst as u32);
    fold_sum(
        [
            (a.0 >> 16) as u16,
            a.0 as u16,
            (a.1 >> 16) as u16,
            a.1 as u16,
            6,
            len as u16,
        ]
        .into_iter(),
    )
}

fn valid_field(seg: &Segment, payload: &[u8]) -> u16 {
    let t = tcp_bytes(seg, payload, 0);
    let words = t
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    !fold_sum([pseudo(seg, t.len())].into_iter().chain(words))
}

#[test]
fn offloaded_checksums_told_from_corrupted_ones() {
    let conn = Conn::new("192.0.2.10:40006", "198.51.100.20:209");
    let (chaff, p) = conn.c2s(3500, 0, 0, 0, &[b'9'; PACKAGE.len()]);
    let pkts = with_chaff(&conn, vec![(chaff, p)], false);
    // As captured on the sending host: every field holds the pseudo-header
    // sum (Linux; its complement is accepted too), the chaff a random value.
    for complement in [false, true] {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        for (k, (seg, payload)) in pkts.iter().enumerate() {
            let len = 20 + payload.len();
            let mut field = pseudo(seg, len);
            if complement {
                field = !field;
            }
            if k == 3 {
                field = field.wrapping_add(0x1357);
            }
            let tcp = tcp_bytes(seg, payload, field);
            feed_checked(&mut t, seg, &tcp, payload, &mut out);
        }
        let (kinds, rest) = split_anomalies(out);
        check_qmtp(&rest, &conn);
        assert_eq!(kinds, ["tcp_bad_checksum"]);
        assert_eq!(t.stats.bad_checksum_dropped, 1);
        assert_eq!(t.stats.directions_checksum_offloaded, 2);
    }
    // Valid checksums in an offloaded direction are fine (software
    // retransmissions), and a direction whose fields are zero cannot be
    // judged: nothing is dropped there.
    let mut t = FlowTable::new(FlowConfig::default());
    let mut out = Vec::new();
    for (k, (seg, payload)) in pkts.iter().enumerate() {
        if k == 3 {
            continue;
        }
        let from_client = seg.sport == conn.c.port();
        let field = if from_client {
            0
        } else if k % 2 == 0 {
            valid_field(seg, payload)
        } else {
            pseudo(seg, 20 + payload.len())
        };
        let tcp = tcp_bytes(seg, payload, field);
        feed_checked(&mut t, seg, &tcp, payload, &mut out);
    }
    let (kinds, rest) = split_anomalies(out);
    check_qmtp(&rest, &conn);
    assert!(kinds.is_empty(), "{kinds:?}");
}

#[test]
fn fragment_notes_become_anomalies_once_per_flow() {
    use qmwatch_wire::decode::{FRAG_NOTE_DROPPED, FRAG_NOTE_TINY};
    let conn = Conn::new("192.0.2.10:40007", "198.51.100.20:209");
    let mut v = conn.conversation(PACKAGE, REPLY);
    // The server's ACK (before the flow has a session) learns that a
    // datagram of the flow was lost; the request was reassembled from tiny
    // fragments, and so was the reply.
    v[1].0.frag_notes = FRAG_NOTE_DROPPED;
    v[3].0.frag_notes = FRAG_NOTE_TINY;
    v[5].0.frag_notes = FRAG_NOTE_TINY | FRAG_NOTE_DROPPED;
    let mut t = FlowTable::new(FlowConfig::default());
    let (mut kinds, rest) = split_anomalies(run(&mut t, &v));
    check_qmtp(&rest, &conn);
    kinds.sort_unstable();
    assert_eq!(kinds, ["ip_fragments_dropped", "ip_tiny_fragments"]);
}

/// A package whose message body is 2,000 bytes, its client stream cut in
/// 200-byte segments (stamped, valid checksums), the reply, FINs; and where
/// `chaff` (offset, ts) asks, a copy of the segment at that offset with
/// other bytes and a bad checksum just before the real one.
struct BodyRun {
    pkts: Vec<(Pkt, bool)>,
    request: Vec<u8>,
}

fn body_run(conn: &Conn, chaff_at: Option<u64>, chaff_first: bool) -> BodyRun {
    let mut message = b"\n".to_vec();
    message.extend(std::iter::repeat_n(b'm', 1999));
    let mut request = ns(&message);
    request.extend(ns(b"alice@example.org"));
    request.extend(ns(&ns(b"bob@example.com")));
    let q = request.len() as u64;
    let r = REPLY.len() as u64;
    let mut pkts: Vec<(Pkt, bool)> = stamped(conn.handshake(), true)
        .into_iter()
        .map(|p| (p, true))
        .collect();
    for (k, chunk) in request.chunks(200).enumerate() {
        let off = 200 * k as u64;
        let ts = 4000 + 10 * off;
        let real = (
            stamped(vec![conn.c2s(ts + 1, off, 0, 0, chunk)], true).remove(0),
            true,
        );
        if !chaff_first {
            pkts.push(real.clone());
        }
        if chaff_at == Some(off) {
            let mut c = stamped(
                vec![conn.c2s(ts, off, 0, 0, &vec![b'9'; chunk.len()])],
                true,
            );
            if let Some((seg, _)) = c.first_mut() {
                // From the future: TS.Recent taken from it would make every
                // real segment after it fail PAWS.
                seg.tsval = seg.tsval.wrapping_add(1 << 30);
            }
            pkts.extend(c.into_iter().map(|p| (p, false)));
        }
        if chaff_first {
            pkts.push(real);
        }
    }
    let tail = stamped(
        vec![
            conn.s2c(90_000, 0, q, 0, b""),
            conn.s2c(91_000, 0, q, 0, REPLY),
            conn.c2s(92_000, q, r, TCP_FIN, b""),
            conn.s2c(93_000, r, q + 1, TCP_FIN, b""),
            conn.c2s(94_000, q + 1, r + 1, 0, b""),
        ],
        true,
    );
    pkts.extend(tail.into_iter().map(|p| (p, true)));
    BodyRun { pkts, request }
}

/// Feeds `run` with real checksums (bad where marked) under `cfg`.
fn run_checked(t: &mut FlowTable, run: &BodyRun) -> Vec<Record> {
    let mut out = Vec::new();
    for ((seg, payload), good) in &run.pkts {
        let mut field = valid_field(seg, payload);
        if !good {
            field = field.wrapping_add(0x1357);
        }
        let tcp = tcp_bytes(seg, payload, field);
        feed_checked(t, seg, &tcp, payload, &mut out);
    }
    out
}

fn the_package(rest: &[Record], request: &[u8]) {
    let t = rest
        .iter()
        .find_map(|r| match r {
            Record::Transaction(t) => Some(t),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no transaction: {rest:#?}"));
    let req = t.request.as_ref().expect("request");
    assert_eq!(req.state, RequestState::Complete);
    assert_eq!(req.message_bytes, 1999);
    assert_eq!(
        req.sender.as_ref().map(|f| f.text()).as_deref(),
        Some("alice@example.org")
    );
    let rcpts: Vec<String> = req.recipients.iter().map(|f| f.text()).collect();
    assert_eq!(rcpts, ["bob@example.com"]);
    assert_eq!(req.end_offset, request.len() as u64);
    assert_eq!(t.codes.k, 1);
}

/// Segments that only carry new bytes of a body the parser skips are not
/// summed (in `Auto` mode, once a direction's checksums are known real):
/// chaff there changes no finding, must not become a reference for the
/// checks of the segments after it (here: a timestamp from the future would
/// make them all fail PAWS), and is still reported (the real segment
/// conflicts with it); after the real bytes it is summed and named.
#[test]
fn body_segments_go_unsummed_and_set_no_reference() {
    let conn = Conn::new("192.0.2.10:40008", "198.51.100.20:209");
    let clean = body_run(&conn, None, true);
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run_checked(&mut t, &clean));
    assert!(kinds.is_empty(), "{kinds:?}");
    the_package(&rest, &clean.request);

    // Chaff at 600 lies wholly in the body (from byte 5 + 64 kept to 2,006).
    let chaffed = body_run(&conn, Some(600), true);
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest2) = split_anomalies(run_checked(&mut t, &chaffed));
    assert_eq!(kinds, ["tcp_overlap_conflict"]);
    the_package(&rest2, &chaffed.request);
    assert_eq!(rest, rest2);
    assert_eq!(t.stats.paws_dropped, 0);
    assert_eq!(t.stats.bad_checksum_dropped, 0);

    // Chaff after the real bytes, over the message's first bytes (kept for
    // probe recognition) or over the envelope is summed, dropped and named.
    for (at, first) in [(600, false), (0, true), (2000, true)] {
        let chaffed = body_run(&conn, Some(at), first);
        let mut t = FlowTable::new(FlowConfig::default());
        let (kinds, rest) = split_anomalies(run_checked(&mut t, &chaffed));
        assert_eq!(kinds, ["tcp_bad_checksum"], "chaff at {at}");
        the_package(&rest, &chaffed.request);
        assert_eq!(t.stats.bad_checksum_dropped, 1);
    }

    // `--checksums verify` sums every segment.
    let mut t = FlowTable::new(FlowConfig {
        checksums: ChecksumMode::Verify,
        ..FlowConfig::default()
    });
    let (kinds, rest) = split_anomalies(run_checked(&mut t, &body_run(&conn, Some(600), true)));
    assert_eq!(kinds, ["tcp_bad_checksum"]);
    the_package(&rest, &chaffed.request);
}

/// While the other direction holds out-of-order data, a body segment's ACK
/// could declare a hole there lost: it is summed.
#[test]
fn body_segments_are_summed_while_the_peer_holds_data() {
    let conn = Conn::new("192.0.2.10:40009", "198.51.100.20:209");
    let mut run = body_run(&conn, Some(600), true);
    // The server's bytes 5.. arrive before the chaff, 0..5 never: held.
    let early = stamped(vec![conn.s2c(5000, 5, 0, 0, b"hello")], true).remove(0);
    let at = run
        .pkts
        .iter()
        .position(|(_, good)| !good)
        .expect("chaff in the run");
    run.pkts.insert(at, (early, true));
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, _) = split_anomalies(run_checked(&mut t, &run));
    assert!(kinds.contains(&"tcp_bad_checksum"), "{kinds:?}");
    assert_eq!(t.stats.bad_checksum_dropped, 1);
}

/// `pkts` with every timestamp moved `by` nanoseconds later.
fn later(pkts: Vec<Pkt>, by: u64) -> Vec<Pkt> {
    pkts.into_iter()
        .map(|(mut s, p)| {
            s.ts += by;
            (s, p)
        })
        .collect()
}

#[test]
fn a_new_connection_on_a_closed_flows_ports_is_tracked() {
    // The first connection is not QMTP (rejected), or is QMTP (closed after
    // its records), and ends by FIN or RST; 100 ms later the client opens
    // the same four-tuple again (an endpoint accepts it: after an RST there
    // is nothing to wait out, and a SYN with a higher sequence number is
    // taken over TIME_WAIT) and relays a package. The closed entry must not
    // absorb the new connection.
    let first = Conn::new("192.0.2.7:40000", "198.51.100.1:209");
    let mut again = first;
    again.cisn = first.cisn.wrapping_add(100_000);
    again.sisn = first.sisn.wrapping_add(7_777);
    let garbage = first.conversation(b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 400 Bad\r\n\r\n");
    let mut reset = first.handshake();
    reset.push(first.c2s(4000, 0, 0, 0, b"hello there\r\n"));
    reset.push(first.s2c(5000, 0, 13, TCP_RST, b""));
    let qmtp = first.conversation(PACKAGE, REPLY);
    for (name, opening) in [("fin", garbage), ("rst", reset), ("qmtp", qmtp)] {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = run(&mut t, &opening);
        assert_eq!(t.stats.flows_closed, 1, "{name}");
        let skip = out.len();
        out.extend(run(
            &mut t,
            &later(again.conversation(PACKAGE, REPLY), 100_000_000),
        ));
        let (anomalies, rest) = split_anomalies(out.split_off(skip));
        assert!(anomalies.is_empty(), "{name}: {anomalies:?}");
        let shifted: Vec<Record> = rest;
        assert_eq!(shifted.len(), 2, "{name}: {shifted:#?}");
        let Record::Transaction(tr) = &shifted[1] else {
            panic!("{name}: not a transaction: {:?}", shifted[1]);
        };
        assert_eq!(tr.endpoints, again.endpoints(), "{name}");
        assert_eq!(tr.codes.k, 1, "{name}");
        assert_eq!(t.stats.flows_created, 2, "{name}");
        assert_eq!(t.stats.flows_closed, 2, "{name}");
    }
}

#[test]
fn a_closed_flow_absorbs_its_own_retransmitted_syn_and_a_reopened_one_is_freed() {
    let first = Conn::new("192.0.2.8:40001", "198.51.100.1:209");
    let mut again = first;
    again.cisn = first.cisn.wrapping_add(1_000_000);
    let mut t = FlowTable::new(FlowConfig::default());
    run(&mut t, &first.conversation(PACKAGE, REPLY));
    // The old connection's SYN, retransmitted late: a stray packet.
    assert!(run(&mut t, &later(vec![first.syn(0)], 10_000)).is_empty());
    assert_eq!((t.stats.flows_created, t.stats.flows_reopened), (1, 0));
    // A new one: its own entry; the old one leaves the index at once and
    // the slab when the closed queue reaches it.
    let out = run(&mut t, &later(again.conversation(PACKAGE, REPLY), 20_000));
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!((t.stats.flows_created, t.stats.flows_reopened), (2, 1));
    assert_eq!((t.len(), t.replaced), (1, 1));
    let mut more = Vec::new();
    t.expire(30_000 + FlowConfig::default().closed_linger_ns, &mut more);
    assert!(more.is_empty());
    assert!(t.is_empty());
    assert_eq!(t.replaced, 0);
    // Each connection's entry was freed when it closed; what lingered went
    // at its turn.
    assert_eq!((t.free.len(), t.lingering_free.len()), (1, 2));
    check_bookkeeping(&t);

    // At a cap of one flow, the replaced entry makes room for the new one.
    let cfg = FlowConfig {
        max_flows: 1,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg);
    run(&mut t, &first.conversation(PACKAGE, REPLY));
    let out = run(&mut t, &later(again.conversation(PACKAGE, REPLY), 20_000));
    let (_, rest) = split_anomalies(out);
    assert_eq!(rest.len(), 2, "{rest:#?}");
    assert_eq!((t.len(), t.replaced, t.slab.len()), (1, 0, 1));
    check_bookkeeping(&t);
}

/// The table's bookkeeping holds: every slab entry is free or open (and
/// indexed, or the newer of a twin pair, whose older one is indexed and
/// names it back); every lingering entry is free, or in the closed queue
/// once and either indexed or replaced; the counts agree.
fn check_bookkeeping(t: &FlowTable) {
    let n = t.slab.len();
    let mut free = vec![false; n];
    for &i in &t.free {
        assert!(!free[i as usize], "slot {i} freed twice");
        free[i as usize] = true;
    }
    let (mut indexed, mut twins, mut survivors) = (0, 0, 0);
    for (i, f) in t.slab.iter().enumerate() {
        if free[i] {
            assert_eq!(f.state, State::Closed, "free slot {i}");
            continue;
        }
        assert_ne!(f.state, State::Closed, "slot {i} closed but not free");
        if f.twin_role == TWIN_NEW {
            twins += 1;
            let old = t.slab.get(f.twin as usize).map(|o| (o.twin_role, o.twin));
            assert_eq!(old, Some((TWIN_INDEXED, i as u32)), "twin of slot {i}");
            assert_eq!(t.lookup(&f.key, f.tag), Some(f.twin), "twin {i}'s pair");
            continue;
        }
        indexed += 1;
        assert_eq!(
            t.lookup(&f.key, f.tag),
            Some(i as u32),
            "slot {i} not found"
        );
        if f.twin_role == TWIN_INDEXED {
            let new = t.slab.get(f.twin as usize).map(|o| (o.twin_role, o.twin));
            assert_eq!(new, Some((TWIN_NEW, i as u32)), "twin of slot {i}");
        } else if f.twin_role >= TWIN_LEFT_NEW {
            survivors += 1;
            assert!(
                t.twin_lingering
                    .get(&f.twin)
                    .is_some_and(|e| e.left == i as u32),
                "survivor {i}"
            );
            let ended = t.lingering.get(f.twin as usize).map(|e| e.replaced);
            assert_eq!(ended, Some(true), "survivor {i}'s twin");
        } else {
            assert_eq!((f.twin_role, f.twin), (0, NIL), "slot {i}");
        }
    }
    assert_eq!(twins, t.twins);
    assert_eq!(survivors, t.twin_lingering.len());
    let m = t.lingering.len();
    let mut lfree = vec![false; m];
    for &l in &t.lingering_free {
        assert!(!lfree[l as usize], "lingering {l} freed twice");
        lfree[l as usize] = true;
    }
    let mut queued = vec![0u32; m];
    for c in &t.closed {
        queued[c.flow as usize] += 1;
    }
    let mut replaced = 0;
    for (l, e) in t.lingering.iter().enumerate() {
        if lfree[l] {
            assert_eq!(queued[l], 0, "free lingering {l} in the closed queue");
            continue;
        }
        assert_eq!(queued[l], 1, "lingering {l}");
        if e.replaced {
            replaced += 1;
        } else {
            indexed += 1;
            assert_eq!(
                t.lookup(&e.key, e.tag),
                Some(l as u32 | LINGERING),
                "lingering {l} not found"
            );
        }
    }
    assert_eq!(indexed, t.index.len());
    assert_eq!(replaced, t.replaced);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Connections opened, used, reset or finished and opened again on a
    /// few four-tuples, with time passing and a small flow cap.
    #[test]
    fn reopened_and_expired_flows_keep_the_books(
        ops in proptest::collection::vec((0u8..6, 0u16..3, 0u64..1_500_000_000), 1..160),
        cap in 1usize..5,
    ) {
        let cfg = FlowConfig { max_flows: cap, ..FlowConfig::default() };
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        let mut now = 1_000u64;
        let mut isn = [0u32; 3];
        for (op, port, dt) in ops {
            now += dt / 8;
            let mut c = Conn::new(&format!("192.0.2.1:{}", 40_000 + port), "198.51.100.1:209");
            let p = usize::from(port);
            c.cisn = isn[p];
            let at = |mut k: Pkt| {
                k.0.ts = now;
                k
            };
            let pkts = match op {
                // A new connection: a fresh number, its handshake and a package.
                0 | 1 => {
                    isn[p] = isn[p].wrapping_add(0x0100_0000 + u32::from(op));
                    c.cisn = isn[p];
                    vec![at(c.syn(0)), at(c.syn_ack(0)), at(c.c2s(0, 0, 0, 0, b"")), at(c.c2s(0, 0, 0, 0, PACKAGE))]
                }
                // The old SYN again (a retransmission).
                2 => vec![at(c.syn(0))],
                3 => vec![at(c.c2s(0, PACKAGE.len() as u64, 0, TCP_RST, b""))],
                4 => vec![
                    at(c.c2s(0, PACKAGE.len() as u64, 0, TCP_FIN, b"")),
                    at(c.s2c(0, 0, PACKAGE.len() as u64 + 1, TCP_FIN, b"")),
                ],
                _ => {
                    t.expire(now, &mut out);
                    Vec::new()
                }
            };
            for (seg, payload) in &pkts {
                t.segment(seg, payload, &mut out);
            }
            check_bookkeeping(&t);
            proptest::prop_assert!(t.index.len() + t.replaced <= cap);
        }
        t.expire(now + 10_000_000_000, &mut out);
        t.finish_all(&mut out);
        check_bookkeeping(&t);
        proptest::prop_assert!(t.is_empty());
        proptest::prop_assert_eq!(t.replaced, 0);
    }
}

/// An ended candidate's state (streams reset, buffers kept) serves the
/// next candidate: the same records as a new table gives, and no more
/// kept than ended.
#[test]
fn an_ended_candidate_serves_the_next_as_a_new_one() {
    let a = Conn::new("192.0.2.7:2000", "192.0.2.1:209");
    let mut pkts = a.handshake();
    pkts.extend([
        a.c2s(4000, 0, 0, 0, &PACKAGE[..10]),
        // Bytes 10..20 never come: the rest is held.
        a.c2s(4100, 20, 0, 0, &PACKAGE[20..]),
        // Not QMTP after all: the flow is rejected with bytes held.
        a.s2c(4200, 0, 10, 0, b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    ]);
    let mut t = FlowTable::new(FlowConfig::default());
    run(&mut t, &pkts);
    assert_eq!((t.stats.flows_candidate, t.stats.flows_rejected), (1, 1));
    assert_eq!(t.spare.len(), 1, "the ended candidate is kept");
    assert_eq!(t.held_bytes(), 0);

    let b = Conn::new("192.0.2.8:2001", "198.51.100.1:209");
    let mut later = b.handshake();
    for (i, byte) in PACKAGE.iter().enumerate().rev() {
        later.push(b.c2s(4000, i as u64, 0, 0, &[*byte]));
    }
    later.push(b.c2s(4500, 3, 0, 0, b"XY"));
    later.extend(b.conversation(PACKAGE, REPLY)[4..].iter().cloned());
    let reused = run(&mut t, &later);
    assert_eq!(
        t.spare.len(),
        1,
        "the kept state was taken, then kept again"
    );
    let fresh = run(&mut FlowTable::new(FlowConfig::default()), &later);
    assert_eq!(reused, fresh);
    let (kinds, rest) = split_anomalies(fresh);
    assert_eq!(kinds, ["tcp_overlap_conflict"]);
    check_qmtp(&rest, &b);
}

/// SYNs of a rejected flow, as an endpoint takes them. A direction's first
/// SYN that comes after the flow was rejected (both ends opening at once
/// here, each SYN with data and a FIN) is what a retransmission of it is
/// told apart by once the flow lingers: not a new connection, so the copy
/// opens no second flow with a package of its own. One with another
/// sequence number is dropped, FIN and all.
#[test]
fn syns_of_a_rejected_flow_as_an_endpoint_takes_them() {
    let conn = Conn::new("198.51.100.8:40000", "192.0.2.2:628");
    let server = Conn::pkt(
        1000,
        conn.s,
        conn.c,
        conn.sisn,
        0,
        TCP_SYN | TCP_FIN,
        b"23:Kok 1795238274 qp 1",
    );
    let client = Conn::pkt(
        2000,
        conn.c,
        conn.s,
        conn.cisn,
        0,
        TCP_SYN | TCP_FIN,
        b"47:4:abcd,17:alice@ex",
    );
    let mut t = FlowTable::new(FlowConfig::default());
    let out = run(&mut t, &[server.clone(), client.clone(), client.clone()]);
    assert_eq!(t.stats.flows_closed, 1);
    assert_eq!(t.stats.flows_reopened, 0, "{out:#?}");
    assert_eq!(t.stats.flows_created, 1);
    assert!(out.is_empty(), "{out:#?}");
    // A SYN with another sequence number on a rejected flow (the server
    // answered with another protocol and its FIN) is dropped, as the
    // endpoint drops it: its FIN does not end the flow, once or twice.
    let (mut other, payload) = client;
    other.seq = other.seq.wrapping_add(1_000_000);
    for copies in [1, 2] {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut pkts = conn.handshake();
        pkts.push(conn.s2c(3500, 0, 0, TCP_FIN, b"HTTP/1.0 200 OK\r\n\r\n"));
        pkts.extend(std::iter::repeat_n((other, payload.clone()), copies));
        let out = run(&mut t, &pkts);
        assert_eq!(t.stats.flows_rejected, 1, "{copies}");
        assert_eq!(t.stats.flows_closed, 0, "{copies}: {out:#?}");
        assert_eq!(t.stats.flows_created, 1, "{copies}");
    }
}

/// A new connection on the four-tuple of a flow whose end the capture lost
/// (no FIN, no RST seen) is followed once the server answers its SYN with
/// a SYN-ACK. A flow set aside as another protocol is closed then, and the
/// new connection gets a flow of its own, its package and verdict seen. A
/// flow still parsed is not ended so (the client could forge the server's
/// SYN-ACK towards itself to hide the rest of its session): the new
/// connection gets a twin flow beside it, and both sessions are followed.
/// A SYN answered by a plain ACK (what a live connection answers, RFC
/// 5961) opens nothing.
#[test]
fn a_new_connection_after_an_end_the_capture_lost_is_followed() {
    let old = Conn::new("192.0.2.1:40000", "198.51.100.1:209");
    let new = Conn {
        cisn: 0x0bad_cafe,
        sisn: 0x7777_0000,
        ..old
    };
    let q = PACKAGE.len() as u64;
    let req = b"GET / HTTP/1.0\r\n\r\n";
    let next = || later(new.conversation(PACKAGE, REPLY), 10_000_000_000);
    // After HTTP, answered (the flow is set aside), its FINs lost.
    let mut pkts = old.handshake();
    pkts.push(old.c2s(4000, 0, 0, 0, req));
    pkts.push(old.s2c(5000, 0, req.len() as u64, 0, b"HTTP/1.0 200 OK\r\n\r\n"));
    pkts.extend(next());
    let mut t = FlowTable::new(FlowConfig::default());
    let (_, rest) = split_anomalies(run(&mut t, &pkts));
    assert_eq!(t.stats.flows_reopened, 1);
    let Some(Record::Transaction(txn)) = rest.last() else {
        panic!("{rest:#?}");
    };
    assert_eq!(txn.codes.k, 1, "the new connection's reply");
    // After a QMTP session: the SYN-ACK ends nothing; the new connection
    // is followed by a twin, and both sessions are reported.
    let mut pkts = old.conversation(PACKAGE, REPLY)[..6].to_vec();
    pkts.extend(next());
    let mut t = FlowTable::new(FlowConfig::default());
    let (kinds, rest) = split_anomalies(run(&mut t, &pkts));
    assert_eq!(t.stats.flows_reopened, 1);
    assert_eq!(t.stats.flows_created, 2);
    assert!(kinds.contains(&"tcp_chaff_flags"), "{kinds:?}");
    let txns = rest.iter().filter(|r| matches!(r, Record::Transaction(_)));
    assert_eq!(txns.count(), 2, "{rest:#?}");
    // A SYN with another sequence number answered by an ACK: the old
    // session goes on and is reported whole.
    let mut pkts = old.conversation(PACKAGE, REPLY);
    let syn = Conn::pkt(4500, old.c, old.s, 0x0bad_cafe, 0, TCP_SYN, b"");
    let challenge = old.s2c(4600, 0, q, 0, b"");
    pkts.splice(4..4, [syn, challenge]);
    let mut t = FlowTable::new(FlowConfig::default());
    let (_, rest) = split_anomalies(run(&mut t, &pkts));
    check_qmtp(&rest, &old);
    assert_eq!(t.stats.flows_reopened, 0);
    assert_eq!(t.stats.flows_created, 1);
}

/// Twin flows: a QMTP session whose end the capture never shows, and a new
/// connection on its four-tuple that the server answered with a SYN-ACK.
/// Each packet goes to its own connection's flow, so both sessions are read
/// whole whichever way their packets interleave: the old one's reply
/// after the new connection opened (as when the SYN-ACK was forged by the
/// client and the old session goes on), the new one's package after the
/// old one's FINs (the new flow then takes the old one's place in the
/// index), or neither ending before the input does.
#[test]
fn twin_flows_follow_both_connections() {
    let (old, new) = old_and_new();
    let (q, r) = (PACKAGE.len() as u64, REPLY.len() as u64);
    let old_fins = || {
        vec![
            old.c2s(6100, q, r, TCP_FIN, b""),
            old.s2c(6200, r, q + 1, TCP_FIN, b""),
            old.c2s(6300, q + 1, r + 1, 0, b""),
        ]
    };
    let mut opening = old.handshake();
    opening.extend([
        old.c2s(4000, 0, 0, 0, PACKAGE),
        old.s2c(4100, 0, q, 0, b""),
        new.syn(5000),
        new.syn_ack(5100),
        new.c2s(5200, 0, 0, 0, b""),
        old.s2c(6000, 0, q, 0, REPLY),
    ]);
    let new_session = [
        new.c2s(7000, 0, 0, 0, PACKAGE),
        new.s2c(7100, 0, q, 0, b""),
        new.s2c(7200, 0, q, 0, REPLY),
    ];
    let new_fins = [
        new.c2s(8000, q, r, TCP_FIN, b""),
        new.s2c(8100, r, q + 1, TCP_FIN, b""),
        new.c2s(8200, q + 1, r + 1, 0, b""),
    ];
    for (name, old_ends, new_ends) in [
        ("old ends first", true, true),
        ("only the new one ends", false, true),
        ("neither ends", false, false),
    ] {
        let mut pkts = opening.clone();
        if old_ends {
            pkts.extend(old_fins());
        }
        pkts.extend(new_session.clone());
        if new_ends {
            pkts.extend(new_fins.clone());
        }
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = run(&mut t, &pkts);
        check_bookkeeping(&t);
        assert_eq!(t.twins, usize::from(!old_ends && !new_ends), "{name}");
        t.finish_all(&mut out);
        let (_, rest) = split_anomalies(out);
        let txns: Vec<&Record> = rest
            .iter()
            .filter(|r| matches!(r, Record::Transaction(_)))
            .collect();
        assert_eq!(txns.len(), 2, "{name}: {rest:#?}");
        check_transaction(txns[0], &old, Some(6000));
        check_transaction(txns[1], &new, Some(7200));
        assert_eq!(
            (t.stats.flows_created, t.stats.flows_reopened),
            (2, 1),
            "{name}"
        );
        assert!(t.is_empty(), "{name}");
        // Every packet sent twice: a flow that ended leaves its copies to
        // what lingers of it, not to its twin.
        let twice: Vec<Pkt> = pkts.iter().flat_map(|p| [p.clone(), p.clone()]).collect();
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = run(&mut t, &twice);
        check_bookkeeping(&t);
        t.finish_all(&mut out);
        let (_, again) = split_anomalies(out);
        assert_eq!(again, rest, "{name}, every packet twice");
    }
}

/// Twins of a flow picked up midstream (its handshake not in the capture):
/// a new connection whose sequence numbers start just above the old one's
/// (as clock-based initial sequence numbers do) is still told apart, by
/// the first byte each stream took rather than by the highest byte seen,
/// which the new SYN itself moved.
#[test]
fn twins_of_a_flow_picked_up_midstream_are_told_apart() {
    let old = Conn::new("192.0.2.1:40000", "198.51.100.1:209");
    let (q, r) = (PACKAGE.len() as u64, REPLY.len() as u64);
    let new = Conn {
        cisn: old.cisn.wrapping_add(q as u32 + 1_000),
        sisn: old.sisn.wrapping_add(5_000),
        ..old
    };
    let pkts = [
        old.c2s(4000, 0, 0, 0, PACKAGE),
        old.s2c(4100, 0, q, 0, b""),
        new.syn(5000),
        new.syn_ack(5100),
        new.c2s(5200, 0, 0, 0, b""),
        old.s2c(6000, 0, q, 0, REPLY),
        new.c2s(7000, 0, 0, 0, PACKAGE),
        new.s2c(7100, 0, q, 0, b""),
        new.s2c(7200, 0, q, 0, REPLY),
        new.c2s(8000, q, r, TCP_FIN, b""),
        new.s2c(8100, r, q + 1, TCP_FIN, b""),
        new.c2s(8200, q + 1, r + 1, 0, b""),
    ];
    let mut t = FlowTable::new(FlowConfig::default());
    let mut out = run(&mut t, &pkts);
    check_bookkeeping(&t);
    t.finish_all(&mut out);
    let (_, rest) = split_anomalies(out);
    let mut replies = txn_times_and_ks(&rest);
    // (The old session, picked up midstream, is reported at its end.)
    replies.sort_unstable();
    assert_eq!(replies, [(6000, 1), (7200, 1)], "{rest:#?}");
    assert_eq!(t.stats.flows_reopened, 1);
}

/// When one flow of a twin pair ends, what lingers of it takes its
/// connection's strays: a reply retransmitted after the new connection's
/// RST is not read as the answer to the old connection's package (whose
/// flow, picked up midstream, has no server bytes to tell it apart by).
#[test]
fn an_ended_twins_strays_do_not_reach_the_other() {
    let (old, new) = old_and_new();
    let (q, r) = (PACKAGE.len() as u64, REPLY.len() as u64);
    let pkts = [
        old.c2s(4000, 0, 0, 0, PACKAGE),
        new.syn(5000),
        new.syn_ack(5100),
        new.c2s(5200, 0, 0, 0, b""),
        new.c2s(7000, 0, 0, 0, PACKAGE),
        new.s2c(7200, 0, q, 0, REPLY),
        new.c2s(8000, q, r, TCP_RST | TCP_ACK, b""),
        // The reply again, after the RST.
        new.s2c(8100, 0, q, 0, REPLY),
    ];
    let mut t = FlowTable::new(FlowConfig::default());
    let mut out = run(&mut t, &pkts);
    check_bookkeeping(&t);
    assert_eq!((t.twins, t.twin_lingering.len()), (0, 1));
    t.finish_all(&mut out);
    let (_, rest) = split_anomalies(out);
    let mut replies = txn_times_and_ks(&rest);
    replies.sort_unstable();
    // The old package unanswered, the new one answered once.
    assert_eq!(replies, [(4000, 0), (7200, 1)], "{rest:#?}");
}

/// Each transaction's time and K count, in `records`' order.
fn txn_times_and_ks(records: &[Record]) -> Vec<(u64, u64)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Transaction(t) => Some((t.ts, t.codes.k)),
            _ => None,
        })
        .collect()
}

/// A connection, and a new one on its four-tuple with other numbers.
fn old_and_new() -> (Conn, Conn) {
    let old = Conn::new("192.0.2.1:40000", "198.51.100.1:209");
    let new = Conn {
        cisn: 0x0bad_cafe,
        sisn: 0x7777_0000,
        ..old
    };
    (old, new)
}
