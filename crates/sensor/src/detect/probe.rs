//! Recognising the active scanners' QMTP/QMQP probes (Nessus/OpenVAS plugin
//! 11134 "QMTP/QMQP Server Detection") in passing traffic.
//!
//! Owns: the probe's fingerprint — its message starts
//! `"\nMessage-ID: <1234567890.666.NAME@example.org>"`, its sender is
//! `NAME@example.org` and its only recipient `postmaster@example.com`, or on
//! QMQP, where the scanner wraps its QMTP package in one more netstring, the
//! literal recipient `22:postmaster@example.com,`. And qmwatch's own active
//! check (`qmwatch check`), whose every request's message starts with the
//! header [`CHECK_HEADER`] (after QMTP's encoding byte), whatever its
//! envelope: the null sender, a deliberately unacceptable one, or none.
//!
//! Must not: read more of the message than the bounded prefix the parser kept.

use qmwatch_proto::{Protocol, Request};

pub use crate::finding::Probe;

const MESSAGE_ID: &[u8] = b"Message-ID: <1234567890.666.";

/// The first header of every message `qmwatch check` sends; the rest of
/// the line says which request it is (`detect` or `relay-test`).
pub const CHECK_HEADER: &[u8] = b"X-Qmwatch-Check: ";

/// The scanner name qmwatch's own check traffic is reported under.
pub(crate) const CHECK_SCANNER: &str = "qmwatch";

/// Returns the probe `req` is, if it is one.
pub fn recognise(req: &Request) -> Option<Probe> {
    if let Some(p) = recognise_check(req) {
        return Some(p);
    }
    let p = req.message_prefix.as_slice();
    let p = p
        .strip_prefix(b"\r\n")
        .or_else(|| p.strip_prefix(b"\n"))
        .unwrap_or(p);
    let rest = p.strip_prefix(MESSAGE_ID)?;
    let at = rest.iter().position(|&b| b == b'@')?;
    let name = rest.get(..at)?;
    if name.is_empty() || name.len() > 32 || !name.iter().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if rest.get(at..at + 14)? != b"@example.org>\n" && rest.get(at..at + 13)? != b"@example.org>" {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let sender = req.sender.as_ref()?.text().to_ascii_lowercase();
    if sender != format!("{name}@example.org") {
        return None;
    }
    let [rcpt] = req.recipients.as_slice() else {
        return None;
    };
    let form = match (req.protocol, rcpt.bytes.as_slice()) {
        (Protocol::Qmtp, b"postmaster@example.com") => "qmtp",
        (Protocol::Qmqp, b"22:postmaster@example.com,") => "qmqp-wrapped",
        (Protocol::Qmqp, b"postmaster@example.com") => "qmqp",
        _ => return None,
    };
    Some(Probe {
        scanner: name,
        form,
    })
}

/// qmwatch's own check: the header first in the message (QMTP: after the
/// encoding byte), in the QMTP or plain QMQP form.
fn recognise_check(req: &Request) -> Option<Probe> {
    let p = req.message_prefix.as_slice();
    let p = match req.protocol {
        Protocol::Qmtp => p.get(1..)?,
        Protocol::Qmqp => p,
    };
    if !p.starts_with(CHECK_HEADER) {
        return None;
    }
    Some(Probe {
        scanner: CHECK_SCANNER.to_string(),
        form: req.protocol.name(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmwatch_proto::{Field, RequestState};

    fn req(protocol: Protocol, msg: &[u8], sender: &str, rcpt: &str) -> Request {
        let mut r = Request::new(protocol, 0, 0);
        r.note_message(msg);
        r.sender = Some(Field {
            bytes: sender.as_bytes().to_vec(),
            ..Field::default()
        });
        r.add_recipient(Field {
            bytes: rcpt.as_bytes().to_vec(),
            ..Field::default()
        });
        r.state = RequestState::Complete;
        r
    }

    const NESSUS: &[u8] = b"\nMessage-ID: <1234567890.666.nessus@example.org>\nFrom: nessus@example.org\nTo: postmaster@example.com\n\nNessus is probing this server.\n";

    #[test]
    fn nessus_qmtp_and_wrapped_qmqp() {
        let p = recognise(&req(
            Protocol::Qmtp,
            NESSUS,
            "nessus@example.org",
            "postmaster@example.com",
        ))
        .unwrap();
        assert_eq!((p.scanner.as_str(), p.form), ("nessus", "qmtp"));
        let p = recognise(&req(
            Protocol::Qmqp,
            NESSUS,
            "nessus@example.org",
            "22:postmaster@example.com,",
        ))
        .unwrap();
        assert_eq!((p.scanner.as_str(), p.form), ("nessus", "qmqp-wrapped"));
    }

    #[test]
    fn openvas_names_itself() {
        let msg =
            b"\nMessage-ID: <1234567890.666.openvas@example.org>\nFrom: openvas@example.org\n";
        let p = recognise(&req(
            Protocol::Qmtp,
            msg,
            "openvas@example.org",
            "postmaster@example.com",
        ))
        .unwrap();
        assert_eq!(p.scanner, "openvas");
    }

    #[test]
    fn qmwatch_check_names_itself_whatever_the_envelope() {
        let msg = b"\nX-Qmwatch-Check: relay-test\nSubject: qmwatch relay test\n";
        let p = recognise(&req(
            Protocol::Qmtp,
            msg,
            "",
            "relay-test@qmwatch-check.invalid",
        ))
        .unwrap();
        assert_eq!((p.scanner.as_str(), p.form), ("qmwatch", "qmtp"));
        let p = recognise(&req(Protocol::Qmqp, &msg[1..], "", "a@example.invalid")).unwrap();
        assert_eq!((p.scanner.as_str(), p.form), ("qmwatch", "qmqp"));
        // QMQP has no encoding byte: a leading LF is not the check's form.
        assert!(recognise(&req(Protocol::Qmqp, msg, "", "a@example.invalid")).is_none());
        // The header must come first.
        let late = b"\nSubject: hi\nX-Qmwatch-Check: relay-test\n";
        assert!(recognise(&req(Protocol::Qmtp, late, "", "a@example.invalid")).is_none());
    }

    #[test]
    fn ordinary_mail_is_not_a_probe() {
        assert!(recognise(&req(
            Protocol::Qmtp,
            b"\nSubject: hi\n",
            "nessus@example.org",
            "postmaster@example.com"
        ))
        .is_none());
        assert!(recognise(&req(
            Protocol::Qmtp,
            NESSUS,
            "spammer@example.org",
            "postmaster@example.com"
        ))
        .is_none());
        assert!(recognise(&req(
            Protocol::Qmtp,
            NESSUS,
            "nessus@example.org",
            "victim@example.com"
        ))
        .is_none());
    }
}
