//! Recognising QMTP/QMQP from the first bytes of one direction of a flow.
//!
//! Owns: the table in docs/protocols.md ("Telling them apart from the first
//! bytes"), as a byte-at-a-time state machine so it works on any split of the
//! stream. It keeps the few bytes it has looked at (at most [`STASH`]) so the
//! chosen parser can be fed them afterwards.
//!
//! Must not: decide that a session is QMTP/QMQP (only a server reply confirms
//! that), or look further than one length and the byte after it.

use super::netstring::MAX_LEN_DIGITS;

/// Longest prefix the sniffer needs: two length fields, two colons, one byte.
pub(crate) const STASH: usize = 2 * MAX_LEN_DIGITS as usize + 3;

/// What the first bytes look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `[1-9][0-9]*:` then 0x0a or 0x0d: a QMTP package.
    Qmtp,
    /// `[1-9][0-9]*:` then `[1-9][0-9]*:` or `0:`: a QMQP request.
    Qmqp,
    /// `[1-9][0-9]*:` then `K`, `Z` or `D`: a server reply.
    Reply,
    /// Anything else.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Start,
    OuterLen(u8),
    AfterColon,
    InnerLen(u8),
    InnerZero,
    Done(Verdict),
}

/// Byte-at-a-time classifier of a stream's first bytes.
#[derive(Clone, Debug)]
pub struct Sniffer {
    step: Step,
    stash: [u8; STASH],
    stashed: u8,
}

impl Default for Sniffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sniffer {
    pub const fn new() -> Self {
        Sniffer {
            step: Step::Start,
            stash: [0; STASH],
            stashed: 0,
        }
    }

    /// The bytes looked at so far.
    pub fn stashed(&self) -> &[u8] {
        self.stash
            .get(..usize::from(self.stashed))
            .unwrap_or_default()
    }

    pub fn verdict(&self) -> Option<Verdict> {
        match self.step {
            Step::Done(v) => Some(v),
            _ => None,
        }
    }

    /// Looks at bytes from the start of `data`. Returns the verdict once
    /// known, and how many bytes of `data` were looked at.
    pub fn feed(&mut self, data: &[u8]) -> (Option<Verdict>, usize) {
        let mut used = 0;
        for &b in data {
            if let Step::Done(v) = self.step {
                return (Some(v), used);
            }
            used += 1;
            if let Some(slot) = self.stash.get_mut(usize::from(self.stashed)) {
                *slot = b;
                self.stashed += 1;
            }
            self.step = match (self.step, b) {
                (Step::Start, b'1'..=b'9') => Step::OuterLen(1),
                (Step::OuterLen(n), b'0'..=b'9') if n < MAX_LEN_DIGITS => Step::OuterLen(n + 1),
                (Step::OuterLen(_), b':') => Step::AfterColon,
                (Step::AfterColon, b'\n' | b'\r') => Step::Done(Verdict::Qmtp),
                (Step::AfterColon, b'K' | b'Z' | b'D') => Step::Done(Verdict::Reply),
                (Step::AfterColon, b'1'..=b'9') => Step::InnerLen(1),
                (Step::AfterColon, b'0') => Step::InnerZero,
                (Step::InnerLen(n), b'0'..=b'9') if n < MAX_LEN_DIGITS => Step::InnerLen(n + 1),
                (Step::InnerLen(_), b':') | (Step::InnerZero, b':') => Step::Done(Verdict::Qmqp),
                (Step::Done(v), _) => Step::Done(v),
                _ => Step::Done(Verdict::Other),
            };
        }
        (self.verdict(), used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(s: &[u8]) -> Option<Verdict> {
        // Byte by byte and all at once must agree.
        let mut a = Sniffer::new();
        let whole = a.feed(s).0;
        let mut b = Sniffer::new();
        let mut last = None;
        for ch in s.chunks(1) {
            last = b.feed(ch).0;
            if last.is_some() {
                break;
            }
        }
        assert_eq!(whole, last);
        whole
    }

    #[test]
    fn table_from_protocols_md() {
        assert_eq!(verdict(b"246:\nReceived"), Some(Verdict::Qmtp));
        assert_eq!(verdict(b"9:\r\nSubject"), Some(Verdict::Qmtp));
        assert_eq!(verdict(b"64:16:A simple"), Some(Verdict::Qmqp));
        assert_eq!(verdict(b"64:0:,"), Some(Verdict::Qmqp));
        assert_eq!(verdict(b"21:Kok 838640135"), Some(Verdict::Reply));
        assert_eq!(verdict(b"66:Dsorry"), Some(Verdict::Reply));
        assert_eq!(verdict(b"EHLO example.org\r\n"), Some(Verdict::Other));
        assert_eq!(verdict(b"GET / HTTP/1.1"), Some(Verdict::Other));
        assert_eq!(verdict(b"\x16\x03\x01"), Some(Verdict::Other));
        assert_eq!(verdict(b"220 mail.example.net ESMTP"), Some(Verdict::Other));
    }

    #[test]
    fn netstring_lookalikes_are_not_qm() {
        // SCGI: a netstring of headers.
        assert_eq!(
            verdict(b"70:CONTENT_LENGTH\x0027\x00"),
            Some(Verdict::Other)
        );
        // bencode strings and dictionaries.
        assert_eq!(verdict(b"4:spam"), Some(Verdict::Other));
        assert_eq!(verdict(b"d4:spaml1:a1:bee"), Some(Verdict::Other));
        // leading zero, empty length
        assert_eq!(verdict(b"012:\n"), Some(Verdict::Other));
        assert_eq!(verdict(b":\n"), Some(Verdict::Other));
        assert_eq!(verdict(b"0:,"), Some(Verdict::Other));
        // QMQP-like with leading zero inner length
        assert_eq!(verdict(b"12:01:"), Some(Verdict::Other));
    }

    #[test]
    fn too_many_digits_is_other() {
        assert_eq!(verdict(b"1234567890123:\n"), Some(Verdict::Other));
        assert_eq!(verdict(b"123456789012:\n"), Some(Verdict::Qmtp));
    }

    #[test]
    fn needs_more_then_stashes() {
        let mut s = Sniffer::new();
        assert_eq!(s.feed(b"24"), (None, 2));
        assert_eq!(s.feed(b"6:\nabc"), (Some(Verdict::Qmtp), 3));
        assert_eq!(s.stashed(), b"246:\n");
    }
}
