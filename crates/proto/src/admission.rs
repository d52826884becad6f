//! Admission: whether a new flow is worth parsing as QMTP/QMQP.
//!
//! Owns: the one question the flow table asks the protocol layer about a
//! flow that has no session yet — given its first payload, is it a
//! candidate ([`probe`])? — and the standard ports that bear on the answer
//! ([`is_standard_port`], from [`Protocol::standard_port`]). Also whether a
//! second copy of a rejected flow's first bytes looks like QMTP/QMQP
//! ([`looks_like_qm`]).
//!
//! Must not: allocate, keep state (the flow table keeps the flow's sample
//! and acts on the answer), or confirm anything: a candidate is only
//! parsed, and only a server's reply netstring confirms a session
//! ([`crate::session`]).

use crate::sniff::{Sniffer, Verdict};
use crate::Protocol;

/// What the flow table knows of a flow when its first payload arrives.
#[derive(Clone, Copy, Debug)]
pub struct FirstPayload<'a> {
    /// The payload bytes of the segment.
    pub bytes: &'a [u8],
    /// Both endpoints' ports (which one is the server may not be known).
    pub ports: [u16; 2],
    /// The bytes are the first of their direction's stream: the flow was
    /// seen from its SYN, and this direction's SYN (if it was seen) is
    /// directly before them. Bytes picked up mid-stream may be
    /// mid-message: those flows are left to the session's resync attempts.
    pub at_stream_start: bool,
    /// The bytes come from the client (the side that sent the first SYN).
    pub from_client: bool,
    /// One of the endpoints is a server confirmed earlier in the run.
    pub known_server: bool,
}

/// The answer to [`probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Parse the flow: give it reassembly and a session.
    Candidate,
    /// The client spoke another protocol, but a QMQP server answers
    /// garbage with a reply netstring (Postfix qmqpd does): judge the flow
    /// by the server's first bytes, keeping it cheap until then.
    AwaitServer,
    /// Not QMTP/QMQP: never buffered or parsed again.
    Reject,
}

/// `port` is QMTP's or QMQP's standard port.
#[inline]
pub(crate) fn is_standard_port(port: u16) -> bool {
    // Two comparisons, not a search of a list: this runs for every new
    // flow's first payload.
    port == Protocol::Qmtp.standard_port() || port == Protocol::Qmqp.standard_port()
}

/// The protocol whose standard port `port` is.
pub(crate) fn standard_protocol(port: u16) -> Option<Protocol> {
    [Protocol::Qmtp, Protocol::Qmqp]
        .into_iter()
        .find(|p| p.standard_port() == port)
}

/// Decides whether a flow is a QMTP/QMQP candidate from its first payload.
///
/// A flow on a standard port, or to a known server, is always a candidate
/// (another protocol spoken to it is itself worth reporting), and so is one
/// picked up mid-stream. Otherwise the first bytes are sniffed: those that
/// are clearly not QMTP/QMQP reject the flow — unless they are the
/// client's, where the server's answer decides ([`Admission::AwaitServer`]).
/// Bytes too few to tell make a candidate.
#[inline]
pub fn probe(first: &FirstPayload<'_>) -> Admission {
    let [a, b] = first.ports;
    if !first.at_stream_start || is_standard_port(a) || is_standard_port(b) || first.known_server {
        return Admission::Candidate;
    }
    let mut s = Sniffer::new();
    match s.feed(first.bytes) {
        (Some(Verdict::Other), _) if first.from_client => Admission::AwaitServer,
        (Some(Verdict::Other), _) => Admission::Reject,
        _ => Admission::Candidate,
    }
}

/// The bytes are recognisably QMTP/QMQP (a request or a reply), not merely
/// too few to tell.
pub fn looks_like_qm(bytes: &[u8]) -> bool {
    let mut s = Sniffer::new();
    !matches!(s.feed(bytes).0, None | Some(Verdict::Other))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(bytes: &[u8], ports: [u16; 2], from_client: bool) -> FirstPayload<'_> {
        FirstPayload {
            bytes,
            ports,
            at_stream_start: true,
            from_client,
            known_server: false,
        }
    }

    #[test]
    fn the_standard_ports_are_the_protocols() {
        assert!(is_standard_port(209) && is_standard_port(628));
        assert!(!is_standard_port(25) && !is_standard_port(2209));
        assert_eq!(standard_protocol(209), Some(Protocol::Qmtp));
        assert_eq!(standard_protocol(628), Some(Protocol::Qmqp));
        assert_eq!(standard_protocol(2628), None);
    }

    #[test]
    fn other_bytes_off_the_standard_ports_are_rejected_or_await_the_server() {
        let http = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(probe(&first(http, [40000, 8080], false)), Admission::Reject);
        assert_eq!(
            probe(&first(http, [40000, 8080], true)),
            Admission::AwaitServer
        );
    }

    #[test]
    fn candidates() {
        let http = b"GET / HTTP/1.0\r\n\r\n";
        // QMTP bytes anywhere.
        assert_eq!(
            probe(&first(b"12:\nhello", [40000, 2209], true)),
            Admission::Candidate
        );
        // Too few bytes to tell.
        assert_eq!(
            probe(&first(b"12", [40000, 2209], true)),
            Admission::Candidate
        );
        // Anything on a standard port, either side.
        for ports in [[40000, 209], [628, 40000]] {
            assert_eq!(probe(&first(http, ports, false)), Admission::Candidate);
        }
        // Anything to a known server, or picked up mid-stream.
        let mut f = first(http, [40000, 8080], false);
        f.known_server = true;
        assert_eq!(probe(&f), Admission::Candidate);
        let mut f = first(http, [40000, 8080], false);
        f.at_stream_start = false;
        assert_eq!(probe(&f), Admission::Candidate);
    }

    #[test]
    fn looks_like_qm_needs_a_verdict() {
        assert!(looks_like_qm(b"12:\nhello"));
        assert!(looks_like_qm(b"5:Kok,"));
        assert!(!looks_like_qm(b"12"));
        assert!(!looks_like_qm(b"EHLO x"));
    }
}
