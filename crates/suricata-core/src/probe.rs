//! Protocol detection for Suricata: is this direction's first data QMTP,
//! QMQP, not yet known, or not ours?
//!
//! Owns: the answer Suricata's probing parsers give, built from
//! `qmwatch-proto`'s sniffer (the same table qmwatch's flow table uses):
//! a QMTP package or QMQP request from the client claims the flow on any
//! port; a reply netstring from the server claims it too (the server
//! answered something; off the standard ports only QMQP servers answer
//! garbage, so such a flow is QMQP, as qmwatch's session guesses); any other
//! first bytes to a standard port (209, 628) claim the flow for that port's
//! protocol, so that another protocol spoken to a QMTP/QMQP server is
//! reported (as qmwatch does for standard ports).
//!
//! Must not: claim netstring look-alikes (SCGI, bencode: the sniffer calls
//! them `Other`), keep state, or look past the sniffer's few bytes.

use qmwatch_proto::sniff::{Sniffer, Verdict};
use qmwatch_proto::Protocol;

/// What a probing parser answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The flow is this protocol.
    Is(Protocol),
    /// Too few bytes to tell: ask again with more.
    NeedMore,
    /// Not QMTP/QMQP.
    Not,
}

/// The protocol whose standard port `port` is.
pub fn standard_protocol(port: u16) -> Option<Protocol> {
    [Protocol::Qmtp, Protocol::Qmqp]
        .into_iter()
        .find(|p| p.standard_port() == port)
}

/// Probes `bytes`, the first of one direction. `to_server`: they are the
/// client's; `server_port`: the flow's destination port.
pub fn probe(bytes: &[u8], to_server: bool, server_port: u16) -> ProbeResult {
    let mut s = Sniffer::new();
    let verdict = s.feed(bytes).0;
    let standard = standard_protocol(server_port);
    match (verdict, to_server) {
        (Some(Verdict::Qmtp), true) => ProbeResult::Is(Protocol::Qmtp),
        (Some(Verdict::Qmqp), true) => ProbeResult::Is(Protocol::Qmqp),
        (Some(Verdict::Reply), false) => ProbeResult::Is(standard.unwrap_or(Protocol::Qmqp)),
        (None, _) => ProbeResult::NeedMore,
        // Another protocol (or a reply from the client, or a request from
        // the server) on a standard port: the session reports what it is.
        (Some(_), true) => match standard {
            Some(p) => ProbeResult::Is(p),
            None => ProbeResult::Not,
        },
        (Some(_), false) => ProbeResult::Not,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_claim_any_port() {
        assert_eq!(
            probe(b"246:\nReceived", true, 2209),
            ProbeResult::Is(Protocol::Qmtp)
        );
        assert_eq!(
            probe(b"64:16:A simple", true, 6628),
            ProbeResult::Is(Protocol::Qmqp)
        );
        assert_eq!(probe(b"24", true, 2209), ProbeResult::NeedMore);
    }

    #[test]
    fn replies_claim_from_the_server_only() {
        assert_eq!(
            probe(b"21:Kok 838640135", false, 6628),
            ProbeResult::Is(Protocol::Qmqp)
        );
        assert_eq!(
            probe(b"21:Kok 838640135", false, 209),
            ProbeResult::Is(Protocol::Qmtp)
        );
        assert_eq!(probe(b"21:Kok 838640135", true, 2209), ProbeResult::Not);
    }

    #[test]
    fn lookalikes_are_not_claimed_off_the_standard_ports() {
        assert_eq!(
            probe(b"70:CONTENT_LENGTH\x0027\x00", true, 4000),
            ProbeResult::Not
        );
        assert_eq!(probe(b"d4:spaml1:a1:bee", true, 6881), ProbeResult::Not);
        assert_eq!(probe(b"4:spam", false, 6881), ProbeResult::Not);
        assert_eq!(probe(b"EHLO x\r\n", true, 25), ProbeResult::Not);
    }

    #[test]
    fn anything_to_a_standard_port_is_claimed() {
        assert_eq!(
            probe(b"EHLO x\r\n", true, 209),
            ProbeResult::Is(Protocol::Qmtp)
        );
        assert_eq!(
            probe(b"GET / HTTP/1.0", true, 628),
            ProbeResult::Is(Protocol::Qmqp)
        );
        assert_eq!(probe(b"220 mail ESMTP", false, 209), ProbeResult::Not);
    }
}
