//! The anomaly vocabulary: every kind of anomaly qmwatch reports, with the
//! stable name it carries in `qmwatch.anomaly.kind` and `event.action`.
//!
//! Owns: [`AnomalyKind`], its names ([`AnomalyKind::name`], the list
//! [`AnomalyKind::ALL`]) and the sets of kinds that behave alike
//! ([`AnomalyKind::is_evasion_sign`]). A test (`tests/anomaly_kinds.rs`)
//! checks that every name is documented in docs/events.md and listed in
//! docs/events.schema.json, so a new kind cannot ship undocumented.
//!
//! Must not: rename a kind (the names are an interface: SIEM rules match
//! them), or decide when a kind is raised (the parsers, the session, the
//! flow table and the sensor's event layer do).
//!
//! One enum for all layers, transport kinds included: the names are one
//! vocabulary that SIEM users read in one list, and the proto crate is the
//! one every producer depends on (the flow table and reassembly raise
//! `tcp_*` and `ip_*` kinds on a [`crate::session::Session`]). The wire
//! crate, which knows nothing of mail or anomalies, keeps its own typed
//! notes (the `FRAG_NOTE_*` bits of a decoded segment); the sensor's flow
//! table maps them to kinds here. The three kinds about the sensor itself
//! (`capture_*`) have no flow and are written by the sensor's event layer,
//! but they are names of the same field, so they are listed here too.

use std::fmt;

/// A kind of anomaly; its [`name`](AnomalyKind::name) is what the events
/// carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    // Reassembly and transport (raised by the sensor's flow table).
    /// A retransmission or overlapping segment carried different bytes.
    TcpOverlapConflict,
    /// IP fragments overlapped with different bytes.
    IpFragmentOverlapConflict,
    /// IP fragments of the flow were dropped by the defragmenter.
    IpFragmentsDropped,
    /// A segment was reassembled from implausibly small IP fragments.
    IpTinyFragments,
    /// A segment with a lower TTL / hop limit than its direction's.
    TcpTtlInsertion,
    /// Data without ACK, or a SYN inside an established flow.
    TcpChaffFlags,
    /// A TCP timestamp older than its direction's TS.Recent.
    TcpPawsFailed,
    /// A segment with a bad TCP checksum.
    TcpBadChecksum,
    /// A RST whose sequence number is outside the stream.
    TcpRstOutOfWindow,
    /// A segment carried TCP urgent data, which QMTP/QMQP never send.
    TcpUrgentData,
    /// The worker's session memory cap was reached.
    SessionMemoryCap,
    // Netstrings ([`crate::netstring::NetstringError`]).
    NetstringLeadingZero,
    NetstringLengthTooLong,
    NetstringEmptyLength,
    NetstringBadLengthByte,
    NetstringMissingComma,
    NetstringInnerOverrun,
    NetstringTooDeep,
    /// Bytes lost somewhere other than inside a netstring's content.
    GapOutsideContent,
    // Requests.
    QmtpEmptyMessage,
    QmtpBadEncodingByte,
    QmqpMissingSender,
    QmtpPackageWithoutRecipients,
    TooManyPipelinedPackages,
    /// Client bytes lost outside a message body.
    GapOutsideMessage,
    // Replies.
    ReplyEmpty,
    ReplyBadCode,
    GapInReplyStream,
    QmtpMidstreamRepliesAmbiguous,
    QmtpUnsolicitedReply,
    // Another protocol spoken to a QMTP/QMQP server.
    SmtpToQmServer,
    TlsToQmServer,
    HttpToQmServer,
    WrongProtocolToQmServer,
    // About the sensor, no flow.
    CaptureLoss,
    CaptureSilent,
    CaptureResumed,
}

impl AnomalyKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [AnomalyKind; 37] = [
        AnomalyKind::TcpOverlapConflict,
        AnomalyKind::IpFragmentOverlapConflict,
        AnomalyKind::IpFragmentsDropped,
        AnomalyKind::IpTinyFragments,
        AnomalyKind::TcpTtlInsertion,
        AnomalyKind::TcpChaffFlags,
        AnomalyKind::TcpPawsFailed,
        AnomalyKind::TcpBadChecksum,
        AnomalyKind::TcpRstOutOfWindow,
        AnomalyKind::TcpUrgentData,
        AnomalyKind::SessionMemoryCap,
        AnomalyKind::NetstringLeadingZero,
        AnomalyKind::NetstringLengthTooLong,
        AnomalyKind::NetstringEmptyLength,
        AnomalyKind::NetstringBadLengthByte,
        AnomalyKind::NetstringMissingComma,
        AnomalyKind::NetstringInnerOverrun,
        AnomalyKind::NetstringTooDeep,
        AnomalyKind::GapOutsideContent,
        AnomalyKind::QmtpEmptyMessage,
        AnomalyKind::QmtpBadEncodingByte,
        AnomalyKind::QmqpMissingSender,
        AnomalyKind::QmtpPackageWithoutRecipients,
        AnomalyKind::TooManyPipelinedPackages,
        AnomalyKind::GapOutsideMessage,
        AnomalyKind::ReplyEmpty,
        AnomalyKind::ReplyBadCode,
        AnomalyKind::GapInReplyStream,
        AnomalyKind::QmtpMidstreamRepliesAmbiguous,
        AnomalyKind::QmtpUnsolicitedReply,
        AnomalyKind::SmtpToQmServer,
        AnomalyKind::TlsToQmServer,
        AnomalyKind::HttpToQmServer,
        AnomalyKind::WrongProtocolToQmServer,
        AnomalyKind::CaptureLoss,
        AnomalyKind::CaptureSilent,
        AnomalyKind::CaptureResumed,
    ];

    /// The stable name: `qmwatch.anomaly.kind` and `event.action`.
    pub const fn name(self) -> &'static str {
        match self {
            AnomalyKind::TcpOverlapConflict => "tcp_overlap_conflict",
            AnomalyKind::IpFragmentOverlapConflict => "ip_fragment_overlap_conflict",
            AnomalyKind::IpFragmentsDropped => "ip_fragments_dropped",
            AnomalyKind::IpTinyFragments => "ip_tiny_fragments",
            AnomalyKind::TcpTtlInsertion => "tcp_ttl_insertion",
            AnomalyKind::TcpChaffFlags => "tcp_chaff_flags",
            AnomalyKind::TcpPawsFailed => "tcp_paws_failed",
            AnomalyKind::TcpBadChecksum => "tcp_bad_checksum",
            AnomalyKind::TcpRstOutOfWindow => "tcp_rst_out_of_window",
            AnomalyKind::TcpUrgentData => "tcp_urgent_data",
            AnomalyKind::SessionMemoryCap => "session_memory_cap",
            AnomalyKind::NetstringLeadingZero => "netstring_leading_zero",
            AnomalyKind::NetstringLengthTooLong => "netstring_length_too_long",
            AnomalyKind::NetstringEmptyLength => "netstring_empty_length",
            AnomalyKind::NetstringBadLengthByte => "netstring_bad_length_byte",
            AnomalyKind::NetstringMissingComma => "netstring_missing_comma",
            AnomalyKind::NetstringInnerOverrun => "netstring_inner_overrun",
            AnomalyKind::NetstringTooDeep => "netstring_too_deep",
            AnomalyKind::GapOutsideContent => "gap_outside_content",
            AnomalyKind::QmtpEmptyMessage => "qmtp_empty_message",
            AnomalyKind::QmtpBadEncodingByte => "qmtp_bad_encoding_byte",
            AnomalyKind::QmqpMissingSender => "qmqp_missing_sender",
            AnomalyKind::QmtpPackageWithoutRecipients => "qmtp_package_without_recipients",
            AnomalyKind::TooManyPipelinedPackages => "too_many_pipelined_packages",
            AnomalyKind::GapOutsideMessage => "gap_outside_message",
            AnomalyKind::ReplyEmpty => "reply_empty",
            AnomalyKind::ReplyBadCode => "reply_bad_code",
            AnomalyKind::GapInReplyStream => "gap_in_reply_stream",
            AnomalyKind::QmtpMidstreamRepliesAmbiguous => "qmtp_midstream_replies_ambiguous",
            AnomalyKind::QmtpUnsolicitedReply => "qmtp_unsolicited_reply",
            AnomalyKind::SmtpToQmServer => "smtp_to_qm_server",
            AnomalyKind::TlsToQmServer => "tls_to_qm_server",
            AnomalyKind::HttpToQmServer => "http_to_qm_server",
            AnomalyKind::WrongProtocolToQmServer => "wrong_protocol_to_qm_server",
            AnomalyKind::CaptureLoss => "capture_loss",
            AnomalyKind::CaptureSilent => "capture_silent",
            AnomalyKind::CaptureResumed => "capture_resumed",
        }
    }

    /// Kinds that say the bytes seen may differ from the bytes an endpoint
    /// took (two contents for the same bytes, bytes lost, segments judged
    /// chaff and left out, urgent bytes read out of band): reported even
    /// for a flow that was never confirmed or was rejected as not
    /// QMTP/QMQP. A bad checksum is not
    /// among them: the endpoint drops such a segment just as qmwatch does.
    pub(crate) const fn is_evasion_sign(self) -> bool {
        matches!(
            self,
            AnomalyKind::TcpOverlapConflict
                | AnomalyKind::IpFragmentOverlapConflict
                | AnomalyKind::IpFragmentsDropped
                | AnomalyKind::TcpTtlInsertion
                | AnomalyKind::TcpChaffFlags
                | AnomalyKind::TcpPawsFailed
                | AnomalyKind::TcpUrgentData
        )
    }

    /// Kinds that name another protocol a client spoke to a QMTP/QMQP
    /// server (`*_to_qm_server`).
    pub const fn is_wrong_protocol(self) -> bool {
        matches!(
            self,
            AnomalyKind::SmtpToQmServer
                | AnomalyKind::TlsToQmServer
                | AnomalyKind::HttpToQmServer
                | AnomalyKind::WrongProtocolToQmServer
        )
    }

    /// The kind with this name, if there is one.
    pub fn from_name(name: &str) -> Option<AnomalyKind> {
        AnomalyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for k in AnomalyKind::ALL {
            let n = k.name();
            assert!(
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
            assert!(seen.insert(n), "{n} twice");
            assert_eq!(AnomalyKind::from_name(n), Some(k));
            assert_eq!(k.to_string(), n);
        }
        assert_eq!(AnomalyKind::from_name("no_such_kind"), None);
    }

    #[test]
    fn all_lists_every_kind_once_in_enum_order() {
        // Discriminants run 0..n in declaration order: `ALL[i]` must be the
        // i-th variant, and the last variant closes the list.
        for (i, k) in AnomalyKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "{k} out of place in ALL");
        }
        assert_eq!(
            AnomalyKind::ALL.len(),
            AnomalyKind::CaptureResumed as usize + 1
        );
    }

    #[test]
    fn the_sets_hold_the_kinds_they_name() {
        let evasion: Vec<&str> = AnomalyKind::ALL
            .into_iter()
            .filter(|k| k.is_evasion_sign())
            .map(AnomalyKind::name)
            .collect();
        assert_eq!(
            evasion,
            [
                "tcp_overlap_conflict",
                "ip_fragment_overlap_conflict",
                "ip_fragments_dropped",
                "tcp_ttl_insertion",
                "tcp_chaff_flags",
                "tcp_paws_failed",
                "tcp_urgent_data",
            ]
        );
        for k in AnomalyKind::ALL {
            assert_eq!(k.is_wrong_protocol(), k.name().ends_with("_to_qm_server"));
        }
    }
}
