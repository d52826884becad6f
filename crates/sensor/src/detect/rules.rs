//! Which findings are alerts, and with what severity and rule.
//!
//! Owns: every `event.severity` and `rule.*` qmwatch writes — an unexpected
//! service (47 on its standard port, 63 elsewhere), a scanner probe (21), a
//! relay attempt by verdict (open relay 90, or 70 when only the default
//! policy made a recipient foreign; unanswered 50; deferred 40; refused 30).
//!
//! Must not: look at traffic (callers pass what they judged) or know JSON.

use crate::finding::{Alert, RelayVerdict, Rule};

/// The alert of a server that is not sanctioned; `None` for a sanctioned
/// one (inventory).
pub fn service(sanctioned: bool, standard_port: bool) -> Option<Alert> {
    (!sanctioned).then_some(Alert {
        severity: if standard_port { 47 } else { 63 },
        rule: Rule {
            id: "qmwatch-unexpected-service",
            name: "Unexpected QMTP/QMQP service",
            category: Some(
                "QMTP/QMQP Server Detection (passive counterpart of Nessus/OpenVAS 11134)",
            ),
        },
    })
}

/// The alert of a known scanner's probe.
pub fn probe() -> Alert {
    Alert {
        severity: 21,
        rule: Rule {
            id: "qmwatch-scanner-probe",
            name: "QMTP/QMQP scanner probe (Nessus/OpenVAS 11134)",
            category: None,
        },
    }
}

/// The alert of a relay attempt. `confident`: the verdict rests on the
/// configured policy (see `RelayAttempt::confident`); a folded window of
/// attempts is judged confident.
pub fn relay(v: RelayVerdict, confident: bool) -> Alert {
    let severity = match (v, confident) {
        (RelayVerdict::OpenRelay, true) => 90,
        (RelayVerdict::OpenRelay, false) => 70,
        (RelayVerdict::Unanswered, _) => 50,
        (RelayVerdict::Deferred, _) => 40,
        (RelayVerdict::Refused, _) => 30,
    };
    let (id, name) = match v {
        RelayVerdict::OpenRelay => (
            "qmwatch-relay-open",
            "Open relay: a foreign recipient was accepted from an untrusted client",
        ),
        RelayVerdict::Refused => ("qmwatch-relay-refused", "Relay attempt refused"),
        RelayVerdict::Deferred => ("qmwatch-relay-deferred", "Relay attempt deferred"),
        RelayVerdict::Unanswered => (
            "qmwatch-relay-unanswered",
            "Relay attempt with no reply seen",
        ),
    };
    Alert {
        severity,
        rule: Rule {
            id,
            name,
            category: Some("QMTP Open Relay (passive counterpart of Nessus 38789)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities() {
        assert_eq!(service(true, true), None);
        assert_eq!(service(false, true).map(|a| a.severity), Some(47));
        assert_eq!(service(false, false).map(|a| a.severity), Some(63));
        assert_eq!(probe().severity, 21);
        let relay_severity = |v, c| relay(v, c).severity;
        assert_eq!(relay_severity(RelayVerdict::OpenRelay, true), 90);
        assert_eq!(relay_severity(RelayVerdict::OpenRelay, false), 70);
        assert_eq!(relay_severity(RelayVerdict::Unanswered, false), 50);
        assert_eq!(relay_severity(RelayVerdict::Deferred, true), 40);
        assert_eq!(relay_severity(RelayVerdict::Refused, true), 30);
        assert_eq!(
            relay(RelayVerdict::Refused, true).rule.id,
            "qmwatch-relay-refused"
        );
    }
}
