//! What `qmwatch check` sends: two detection requests that cannot deliver
//! anything, the one relay-test package, and a TLS ClientHello.
//!
//! Owns: the bytes on the wire. Every message starts with the header
//! [`CHECK_HEADER`] (after QMTP's encoding byte), so the passive side
//! reports this traffic as `scanner: qmwatch`; every message says in its
//! own text what it is and who sent it.
//!
//! - QMQP detection: a well-formed request with the null sender and **no
//!   recipient** — nothing to deliver. Postfix `qmqpd` answers it with a `D`
//!   reply (`Error: no recipients specified`); to a client it does not
//!   authorize it says `D` before reading anything.
//! - QMTP detection: a package whose envelope sender is over 1000 bytes,
//!   which qmail-qmtpd refuses for the whole package (`Dunacceptable
//!   sender (#5.1.7)` for each recipient, nothing queued), with two
//!   recipients at a `.invalid` domain, so a QMTP server answers with two
//!   reply netstrings. A QMQP server answers it with a single one and
//!   closes (Postfix: `Dnetstring format error …`).
//! - Relay test: one package (QMTP) or message (QMQP) from the null
//!   envelope sender (no bounce goes anywhere) to one recipient, by default
//!   at a `.invalid` domain (it cannot be delivered).
//!
//! Must not: send anything that could deliver mail during detection, or
//! write a message whose lines end in anything but LF.

use std::net::SocketAddr;

use qmwatch_proto::Protocol;
use qmwatch_sensor::detect::probe::CHECK_HEADER;

/// The reserved domain of the detection recipients and the default relay
/// recipient (`.invalid` never resolves).
pub const CHECK_DOMAIN: &str = "qmwatch-check.invalid";
/// The relay test's recipient unless `--relay-recipient` names one.
pub const DEFAULT_RELAY_RECIPIENT: &str = "relay-test@qmwatch-check.invalid";
/// Length of the QMTP detection sender: qmail refuses 1000 bytes or more.
pub const LONG_SENDER_BYTES: usize = 1024;
/// Recipients of the QMTP detection package (and so replies expected).
pub const QMTP_DETECT_RECIPIENTS: usize = 2;

/// Appends `content` as a netstring.
pub fn netstring(out: &mut Vec<u8>, content: &[u8]) {
    out.extend_from_slice(content.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(content);
    out.push(b',');
}

fn header(kind: &str) -> Vec<u8> {
    let mut m = CHECK_HEADER.to_vec();
    m.extend_from_slice(kind.as_bytes());
    m.push(b'\n');
    m
}

/// The detection message (LF line endings, no encoding byte).
pub fn detect_message(hostname: &str) -> Vec<u8> {
    let mut m = header("detect");
    m.extend_from_slice(
        format!(
            "Subject: qmwatch detection request (cannot be delivered)\n\
             \n\
             This request was sent by `qmwatch check` on {hostname} to find out whether\n\
             a QMTP or QMQP server listens on this port. It cannot be delivered: as\n\
             QMQP it has no recipient, as QMTP its envelope sender is longer than\n\
             qmail accepts and its recipients are at the reserved domain {CHECK_DOMAIN}.\n"
        )
        .as_bytes(),
    );
    m
}

/// The QMTP detection sender: over 1000 bytes, at the reserved domain.
pub fn long_sender() -> String {
    let head = "qmwatch-check-detection-sender-longer-than-qmail-accepts-";
    let tail = format!("@{CHECK_DOMAIN}");
    let pad = LONG_SENDER_BYTES.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// QMQP detection request: the message, the null sender, no recipient.
pub fn qmqp_detect(hostname: &str) -> Vec<u8> {
    let mut inner = Vec::new();
    netstring(&mut inner, &detect_message(hostname));
    netstring(&mut inner, b"");
    let mut out = Vec::new();
    netstring(&mut out, &inner);
    out
}

/// QMTP detection package: LF encoding, an unacceptable sender, two
/// undeliverable recipients.
pub fn qmtp_detect(hostname: &str) -> Vec<u8> {
    let mut msg = vec![b'\n'];
    msg.extend_from_slice(&detect_message(hostname));
    let mut out = Vec::new();
    netstring(&mut out, &msg);
    netstring(&mut out, long_sender().as_bytes());
    let mut list = Vec::new();
    for i in 1..=QMTP_DETECT_RECIPIENTS {
        netstring(&mut list, format!("detect-{i}@{CHECK_DOMAIN}").as_bytes());
    }
    netstring(&mut out, &list);
    out
}

/// Who sends a relay test, from where, to where.
#[derive(Clone, Debug)]
pub struct RelayContext<'a> {
    pub hostname: &'a str,
    pub source: SocketAddr,
    pub server: SocketAddr,
    pub protocol: Protocol,
    pub recipient: &'a str,
    /// RFC 3339 time of the test.
    pub time: &'a str,
}

/// The relay-test message (LF line endings, no encoding byte): it says
/// what it is and who sent it.
pub fn relay_message(c: &RelayContext<'_>) -> Vec<u8> {
    let mut m = header("relay-test");
    let proto = c.protocol.name().to_uppercase();
    m.extend_from_slice(
        format!(
            "Subject: qmwatch relay test: this message must not be delivered\n\
             To: <{rcpt}>\n\
             \n\
             This is a relay test made by `qmwatch check --relay-test` on host\n\
             {host}, from address {src}, to the {proto} server {srv}, at {time}.\n\
             \n\
             It comes from the null envelope sender (no bounce goes anywhere) and is\n\
             addressed to {rcpt}. A server that accepts it for a client outside the\n\
             networks allowed to relay is an open relay: restrict relaying to those\n\
             networks (qmail: RELAYCLIENT through tcprules; Postfix:\n\
             qmqpd_authorized_clients, mynetworks).\n\
             \n\
             Questions about this test: the administrator of {host}.\n",
            rcpt = c.recipient,
            host = c.hostname,
            src = c.source.ip(),
            srv = c.server,
            time = c.time,
        )
        .as_bytes(),
    );
    m
}

/// The relay-test request of `protocol`: `message`, the null sender, one
/// recipient.
pub fn relay_request(protocol: Protocol, message: &[u8], recipient: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Qmtp => {
            let mut msg = vec![b'\n'];
            msg.extend_from_slice(message);
            netstring(&mut out, &msg);
            netstring(&mut out, b"");
            let mut list = Vec::new();
            netstring(&mut list, recipient.as_bytes());
            netstring(&mut out, &list);
        }
        Protocol::Qmqp => {
            let mut inner = Vec::new();
            netstring(&mut inner, message);
            netstring(&mut inner, b"");
            netstring(&mut inner, recipient.as_bytes());
            netstring(&mut out, &inner);
        }
    }
    out
}

/// A TLS 1.2 ClientHello (TLS 1.3 suites offered too): any TLS server
/// answers it with a handshake or an alert record.
pub fn tls_client_hello() -> Vec<u8> {
    let suites: [u16; 8] = [
        0x1301, 0x1302, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0x009c, 0x002f,
    ];
    let mut body = vec![0x03, 0x03];
    // Not secret: this hello never completes a handshake.
    body.extend((0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    // supported_groups: x25519, secp256r1, secp384r1
    ext.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18,
    ]);
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: rsa_pkcs1_sha256, ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
    ext.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x01, 0x04, 0x03, 0x08, 0x04,
    ]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmwatch_proto::request::{RequestEvent, RequestParser};
    use qmwatch_proto::{Request, RequestState};
    use qmwatch_sensor::detect::probe;

    /// The project's own request parser reads what the check sends.
    fn parse(protocol: Protocol, bytes: &[u8]) -> Vec<Request> {
        let mut p = RequestParser::new(protocol, 0);
        let mut out = Vec::new();
        p.feed(bytes, 1, &mut out);
        p.finish(2, &mut out);
        out.into_iter().map(|RequestEvent::Request(r)| r).collect()
    }

    #[test]
    fn qmqp_detection_has_no_recipient() {
        let b = qmqp_detect("sensor.example.net");
        let r = parse(Protocol::Qmqp, &b);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, RequestState::Complete);
        assert_eq!(r[0].recipient_count, 0);
        assert_eq!(r[0].sender.as_ref().unwrap().wire_len, 0);
        let p = probe::recognise(&r[0]).unwrap();
        assert_eq!((p.scanner.as_str(), p.form), ("qmwatch", "qmqp"));
        assert!(!b.contains(&b'\r'));
    }

    #[test]
    fn qmtp_detection_sender_is_refused_by_qmail() {
        let b = qmtp_detect("sensor.example.net");
        let r = parse(Protocol::Qmtp, &b);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, RequestState::Complete);
        let sender = r[0].sender.as_ref().unwrap();
        assert!(sender.wire_len >= 1000, "qmail refuses 1000 bytes or more");
        assert!(sender.text().ends_with("@qmwatch-check.invalid"));
        assert_eq!(r[0].recipient_count, QMTP_DETECT_RECIPIENTS as u64);
        assert!(r[0]
            .recipients
            .iter()
            .all(|f| f.text().ends_with(".invalid")));
        assert_eq!(probe::recognise(&r[0]).unwrap().form, "qmtp");
    }

    #[test]
    fn relay_requests_parse_and_name_themselves() {
        let c = RelayContext {
            hostname: "sensor.example.net",
            source: "198.51.100.9:40000".parse().unwrap(),
            server: "192.0.2.25:209".parse().unwrap(),
            protocol: Protocol::Qmtp,
            recipient: DEFAULT_RELAY_RECIPIENT,
            time: "2026-12-03T12:00:00.000000Z",
        };
        let msg = relay_message(&c);
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(text.contains("sensor.example.net") && text.contains("198.51.100.9"));
        assert!(text.contains("192.0.2.25:209") && text.contains("qmwatch check --relay-test"));
        for proto in [Protocol::Qmtp, Protocol::Qmqp] {
            let r = parse(proto, &relay_request(proto, &msg, DEFAULT_RELAY_RECIPIENT));
            assert_eq!(r.len(), 1, "{proto:?}");
            assert_eq!(r[0].state, RequestState::Complete);
            assert_eq!(r[0].sender.as_ref().unwrap().wire_len, 0, "null sender");
            assert_eq!(r[0].recipients[0].text(), DEFAULT_RELAY_RECIPIENT);
            let p = probe::recognise(&r[0]).unwrap();
            assert_eq!((p.scanner.as_str(), p.form), ("qmwatch", proto.name()));
        }
    }

    #[test]
    fn client_hello_lengths_add_up() {
        let h = tls_client_hello();
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        let rec_len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        assert_eq!(rec_len, h.len() - 5);
        let hs_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
        assert_eq!(hs_len, h.len() - 9);
    }
}
