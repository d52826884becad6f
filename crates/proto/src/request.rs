//! Client-side parser: QMTP packages and QMQP messages.
//!
//! Owns: turning the client's byte stream into [`Request`]s. QMTP: a message
//! netstring whose first byte is the encoding, a sender netstring, and a
//! recipient-list netstring of recipient netstrings; packages may follow each
//! other (pipelining). QMQP: one netstring wrapping message, sender and
//! recipient netstrings (recipients not wrapped again).
//!
//! Must not: copy the message (it is skipped by length), copy more than
//! [`super::MAX_FIELD_BYTES`] of a field, or store more than
//! [`super::MAX_RECIPIENTS`] recipients.

use super::netstring::{Token, Tokenizer};
use super::{AnomalyKind, Encoding, Field, Protocol, Request, RequestState};

/// Where in a request the parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Between requests.
    Idle,
    /// QMTP message: the encoding byte is next.
    MessageEncoding,
    /// Message content: skipped.
    Message,
    Sender,
    /// Inside QMTP's recipient list, between recipients.
    RecipientList,
    Recipient,
    /// Inside QMQP's wrapper, at the netstring with this index (0 message, 1 sender, 2.. recipients).
    QmqpItem(u32),
}

/// What came out of feeding the parser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestEvent {
    /// A request was read whole ([`RequestState::Complete`]) or ended badly
    /// (truncated or malformed: the parser then stops).
    Request(Request),
}

/// Incremental parser for one client stream.
#[derive(Clone, Debug)]
pub struct RequestParser {
    protocol: Protocol,
    tok: Tokenizer,
    /// Stream offset of the next byte to be fed.
    offset: u64,
    /// Index of the top-level netstring inside the current QMTP package (0..3).
    top_index: u8,
    slot: Slot,
    current: Option<Request>,
    field: Field,
    failed: bool,
}

impl RequestParser {
    /// A parser whose first byte is at client stream offset `offset`.
    pub fn new(protocol: Protocol, offset: u64) -> Self {
        RequestParser {
            protocol,
            tok: Tokenizer::new(),
            offset,
            top_index: 0,
            slot: Slot::Idle,
            current: None,
            field: Field::default(),
            failed: false,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True when nothing of a request is pending.
    pub fn idle(&self) -> bool {
        self.current.is_none()
    }

    fn fail(&mut self, kind: AnomalyKind, ts: u64, out: &mut Vec<RequestEvent>) {
        self.failed = true;
        let mut req = self
            .current
            .take()
            .unwrap_or_else(|| Request::new(self.protocol, self.offset, ts));
        req.state = RequestState::Malformed(kind);
        req.last_ts = ts;
        req.end_offset = self.offset;
        out.push(RequestEvent::Request(req));
    }

    /// Feeds the next in-order bytes of the client stream.
    pub fn feed(&mut self, data: &[u8], ts: u64, out: &mut Vec<RequestEvent>) {
        if self.failed {
            return;
        }
        // Inside a message body past its kept prefix, bytes that end before
        // the body does change nothing but the position: moved past as
        // `skip` moves, without a token for each. On a stream of large
        // messages this is most of what a client sends.
        if let Some((from, to)) = self.skippable() {
            let n = data.len() as u64;
            if from == self.offset && n < to - from && self.skip_in_body(n) {
                return;
            }
        }
        let mut input = data;
        loop {
            let before = input.len();
            let step = self.tok.next(&mut input);
            self.offset += (before - input.len()) as u64;
            let token = match step {
                None => return,
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    return self.fail(e.kind(), ts, out);
                }
            };
            if let Err(kind) = self.on_token(token, ts, out) {
                return self.fail(kind, ts, out);
            }
        }
    }

    /// One token of the client stream, read as the parser's protocol.
    fn on_token(
        &mut self,
        token: Token<'_>,
        ts: u64,
        out: &mut Vec<RequestEvent>,
    ) -> Result<(), AnomalyKind> {
        match self.protocol {
            Protocol::Qmtp => self.on_qmtp_token(token, ts, out),
            Protocol::Qmqp => self.on_qmqp_token(token, ts, out),
        }
    }

    /// A QMTP package: three top-level netstrings (message with its
    /// encoding byte first, sender, recipient list), the last entered to
    /// read the recipient netstrings inside it; `top_index` counts them.
    fn on_qmtp_token(
        &mut self,
        token: Token<'_>,
        ts: u64,
        out: &mut Vec<RequestEvent>,
    ) -> Result<(), AnomalyKind> {
        match token {
            Token::Start { len, depth: 0 } => self.on_qmtp_top_start(len, ts)?,
            Token::Start { .. } => {
                self.field = Field::default();
                self.slot = Slot::Recipient;
            }
            Token::Data(d) => match self.slot {
                Slot::MessageEncoding => self.on_qmtp_encoding(d)?,
                Slot::Message => {
                    if let Some(r) = self.current.as_mut() {
                        r.note_message(d);
                    }
                }
                Slot::Sender | Slot::Recipient => self.field.push(d),
                _ => {}
            },
            Token::End { depth: 1 } => {
                let f = std::mem::take(&mut self.field);
                if let Some(r) = self.current.as_mut() {
                    r.add_recipient(f);
                }
                self.slot = Slot::RecipientList;
            }
            Token::End { .. } => {
                self.top_index += 1;
                match self.top_index {
                    1 => self.slot = Slot::Idle,
                    2 => {
                        let f = std::mem::take(&mut self.field);
                        if let Some(r) = self.current.as_mut() {
                            r.sender = Some(f);
                        }
                        self.slot = Slot::Idle;
                    }
                    _ => self.finish_request(ts, out),
                }
            }
        }
        Ok(())
    }

    /// The header of a QMTP package's message (which starts the request),
    /// sender or recipient-list netstring.
    fn on_qmtp_top_start(&mut self, len: u64, ts: u64) -> Result<(), AnomalyKind> {
        match self.top_index {
            0 => {
                if len == 0 {
                    return Err(AnomalyKind::QmtpEmptyMessage);
                }
                // The token ends at the colon; the request starts at its first digit.
                let start = self.offset.saturating_sub(digits(len) + 1);
                let mut r = Request::new(Protocol::Qmtp, start, ts);
                r.message_bytes = len - 1;
                self.current = Some(r);
                self.slot = Slot::MessageEncoding;
            }
            1 => {
                self.field = Field::default();
                self.slot = Slot::Sender;
            }
            _ => {
                self.tok.enter().map_err(|e| e.kind())?;
                self.slot = Slot::RecipientList;
            }
        }
        Ok(())
    }

    /// The first content of a QMTP message: its encoding byte.
    fn on_qmtp_encoding(&mut self, d: &[u8]) -> Result<(), AnomalyKind> {
        let enc = match d.first() {
            Some(b'\n') => Encoding::Lf,
            Some(b'\r') => Encoding::Crlf,
            _ => {
                // The request ends at the offending byte, however
                // the stream was cut into chunks.
                self.offset -= d.len().saturating_sub(1) as u64;
                return Err(AnomalyKind::QmtpBadEncodingByte);
            }
        };
        if let Some(r) = self.current.as_mut() {
            r.encoding = Some(enc);
            r.note_message(d);
        }
        self.slot = Slot::Message;
        Ok(())
    }

    /// A QMQP message: one netstring, entered, holding the message, the
    /// sender and the recipients (`Slot::QmqpItem` counts them).
    fn on_qmqp_token(
        &mut self,
        token: Token<'_>,
        ts: u64,
        out: &mut Vec<RequestEvent>,
    ) -> Result<(), AnomalyKind> {
        match token {
            Token::Start { len, depth: 0 } => {
                self.tok.enter().map_err(|e| e.kind())?;
                let start = self.offset.saturating_sub(digits(len) + 1);
                self.current = Some(Request::new(Protocol::Qmqp, start, ts));
                self.slot = Slot::QmqpItem(0);
            }
            Token::Start { len, .. } => {
                if let Slot::QmqpItem(0) = self.slot {
                    if let Some(r) = self.current.as_mut() {
                        r.message_bytes = len;
                    }
                } else {
                    self.field = Field::default();
                }
            }
            Token::Data(d) => match self.slot {
                Slot::QmqpItem(0) => {
                    if let Some(r) = self.current.as_mut() {
                        r.note_message(d);
                    }
                }
                Slot::QmqpItem(_) => self.field.push(d),
                _ => {}
            },
            Token::End { depth: 1 } => {
                if let Slot::QmqpItem(i) = self.slot {
                    if let Some(r) = self.current.as_mut() {
                        match i {
                            0 => {}
                            1 => r.sender = Some(std::mem::take(&mut self.field)),
                            _ => r.add_recipient(std::mem::take(&mut self.field)),
                        }
                    }
                    self.slot = Slot::QmqpItem(i.saturating_add(1));
                }
            }
            Token::End { .. } => {
                let missing = match self.slot {
                    Slot::QmqpItem(i) => i < 2,
                    _ => true,
                };
                if missing {
                    return Err(AnomalyKind::QmqpMissingSender);
                }
                self.finish_request(ts, out);
            }
        }
        Ok(())
    }

    fn finish_request(&mut self, ts: u64, out: &mut Vec<RequestEvent>) {
        if let Some(mut r) = self.current.take() {
            r.state = RequestState::Complete;
            r.last_ts = ts;
            r.end_offset = self.offset;
            out.push(RequestEvent::Request(r));
        }
        self.top_index = 0;
        self.slot = Slot::Idle;
        self.field = Field::default();
    }

    /// The stream offsets `[from, to)` that this parser will skip without
    /// looking at them: the rest of the current message body after the
    /// prefix kept for probe recognition. `None` outside a message body.
    #[inline]
    pub fn skippable(&self) -> Option<(u64, u64)> {
        if self.failed || !matches!(self.slot, Slot::Message | Slot::QmqpItem(0)) {
            return None;
        }
        let remaining = self.tok.body_remaining();
        let kept = self.current.as_ref().map_or(0, |r| {
            super::MESSAGE_PREFIX_BYTES.saturating_sub(r.message_prefix.len()) as u64
        });
        (remaining > kept).then(|| (self.offset + kept, self.offset + remaining))
    }

    /// `n` bytes inside the range [`RequestParser::skippable`] gave, moved
    /// past as [`RequestParser::skip`] moves when they lie inside the
    /// current message body (no token, no request comes of them); false,
    /// with nothing changed, when they do not (`skip` then says what they
    /// are).
    #[inline]
    pub fn skip_in_body(&mut self, n: u64) -> bool {
        let remaining = self.tok.body_remaining();
        if self.failed || remaining == 0 || n > remaining || self.tok.gap(n).is_err() {
            return false;
        }
        self.offset += n;
        true
    }

    /// `n` bytes of the client stream arrived inside the range
    /// [`RequestParser::skippable`] gave, and were not kept: the parser
    /// moves past them as it would have (nothing was lost).
    #[inline]
    pub fn skip(&mut self, n: u64, ts: u64, out: &mut Vec<RequestEvent>) {
        if self.failed {
            return;
        }
        match self.tok.gap(n) {
            Ok(()) => self.offset += n,
            // Not inside a body after all: treat it as lost bytes.
            Err(_) => self.lose(n, ts, out),
        }
    }

    /// `n` bytes of the client stream were lost. Free inside a message; a
    /// lost address byte marks the field damaged; anywhere else the request
    /// cannot be followed and is reported truncated.
    pub fn gap(&mut self, n: u64, ts: u64, out: &mut Vec<RequestEvent>) {
        if self.failed {
            return;
        }
        match self.tok.gap(n) {
            Ok(()) => {
                self.offset += n;
                match self.slot {
                    Slot::Message | Slot::MessageEncoding | Slot::QmqpItem(0) => {
                        if let Some(r) = self.current.as_mut() {
                            r.message_gap_bytes += n;
                        }
                        if self.slot == Slot::MessageEncoding {
                            self.slot = Slot::Message;
                        }
                    }
                    _ => {
                        self.field.damaged = true;
                        self.field.wire_len += n;
                    }
                }
            }
            Err(_) => self.lose(n, ts, out),
        }
    }

    /// `n` bytes lost where the request cannot be followed: it is reported
    /// truncated and the parser stops.
    fn lose(&mut self, n: u64, ts: u64, out: &mut Vec<RequestEvent>) {
        self.offset += n;
        self.failed = true;
        if let Some(mut r) = self.current.take() {
            r.state = RequestState::Truncated;
            r.last_ts = ts;
            r.end_offset = self.offset;
            out.push(RequestEvent::Request(r));
        }
    }

    /// The client stream ended. A request in progress was cut short.
    pub fn finish(&mut self, ts: u64, out: &mut Vec<RequestEvent>) {
        if let Some(mut r) = self.current.take() {
            r.state = RequestState::Truncated;
            r.last_ts = ts;
            r.end_offset = self.offset;
            if self.slot == Slot::Sender || matches!(self.slot, Slot::QmqpItem(1)) {
                r.sender = Some(std::mem::take(&mut self.field));
            }
            out.push(RequestEvent::Request(r));
        }
        self.failed = true;
    }
}

/// Number of decimal digits of `n`.
fn digits(mut n: u64) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn qmtp_package(enc: u8, body: &str, sender: &str, rcpts: &[&str]) -> Vec<u8> {
        let mut msg = vec![enc];
        msg.extend_from_slice(body.as_bytes());
        let mut out = ns(&msg);
        out.extend(ns(sender.as_bytes()));
        let mut list = Vec::new();
        for r in rcpts {
            list.extend(ns(r.as_bytes()));
        }
        out.extend(ns(&list));
        out
    }

    pub(crate) fn ns(b: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", b.len()).into_bytes();
        v.extend_from_slice(b);
        v.push(b',');
        v
    }

    fn parse(p: Protocol, data: &[u8], chunk: usize) -> Vec<Request> {
        let mut parser = RequestParser::new(p, 0);
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            parser.feed(c, 7, &mut out);
        }
        parser.finish(9, &mut out);
        out.into_iter().map(|RequestEvent::Request(r)| r).collect()
    }

    #[test]
    fn qmtp_spec_example() {
        let mut pkg = qmtp_package(
            b'\n',
            &"x".repeat(245),
            "God-DSN-37@heaven.af.mil",
            &["djb@silverton.berkeley.edu"],
        );
        assert!(pkg.starts_with(b"246:\n"));
        assert!(pkg.ends_with(b"24:God-DSN-37@heaven.af.mil,30:26:djb@silverton.berkeley.edu,,"));
        let len = pkg.len() as u64;
        pkg.extend(qmtp_package(
            b'\r',
            "hi",
            "",
            &["a@example.net", "b@example.com"],
        ));
        for chunk in [1, 2, 3, 7, 100, 10_000] {
            let r = parse(Protocol::Qmtp, &pkg, chunk);
            assert_eq!(r.len(), 2, "chunk {chunk}");
            assert_eq!(r[0].state, RequestState::Complete);
            assert_eq!(r[0].encoding, Some(Encoding::Lf));
            assert_eq!(r[0].message_bytes, 245);
            assert_eq!(
                r[0].sender.as_ref().unwrap().bytes,
                b"God-DSN-37@heaven.af.mil"
            );
            assert_eq!(r[0].recipients[0].bytes, b"djb@silverton.berkeley.edu");
            assert_eq!((r[0].start_offset, r[0].end_offset), (0, len));
            assert_eq!(r[1].encoding, Some(Encoding::Crlf));
            assert_eq!(r[1].sender.as_ref().unwrap().bytes, b"");
            assert_eq!(r[1].recipient_count, 2);
            assert_eq!(r[1].recipients[1].bytes, b"b@example.com");
            assert_eq!(r[1].start_offset, len);
            assert_eq!(r[1].end_offset, pkg.len() as u64);
        }
    }

    /// Body bytes moved past with `skip_in_body` (where the parser says
    /// it skips) give the requests feeding them gives; anywhere else it
    /// declines and changes nothing.
    #[test]
    fn skipping_inside_a_body_is_feeding_it() {
        let mut pkg = qmtp_package(b'\n', &"y".repeat(500), "a@example.org", &["b@example.com"]);
        pkg.extend(qmtp_package(
            b'\r',
            &"w".repeat(300),
            "",
            &["c@example.net"],
        ));
        for (p, data) in [
            (Protocol::Qmtp, pkg.clone()),
            (Protocol::Qmqp, {
                let mut items = ns(&[b'z'; 300]);
                items.extend(ns(b"s@example.org"));
                items.extend(ns(b"r@example.net"));
                ns(&items)
            }),
        ] {
            let want = parse(p, &data, 7);
            let mut parser = RequestParser::new(p, 0);
            let mut out = Vec::new();
            let mut at = 0;
            let mut skipped = 0;
            while at < data.len() {
                if let Some((from, to)) = parser.skippable() {
                    if from == parser.offset() {
                        let n = (to - from).min(37);
                        assert!(parser.skip_in_body(n));
                        skipped += n;
                        at += n as usize;
                        continue;
                    }
                }
                let end = (at + 7).min(data.len());
                parser.feed(&data[at..end], 7, &mut out);
                at = end;
            }
            parser.finish(9, &mut out);
            let got: Vec<Request> = out.into_iter().map(|RequestEvent::Request(r)| r).collect();
            assert!(skipped > 200, "{p:?}: {skipped}");
            assert_eq!(got, want, "{p:?}");
        }
        // Outside a body: declined, nothing changed.
        let mut parser = RequestParser::new(Protocol::Qmtp, 0);
        assert!(!parser.skip_in_body(1));
        assert_eq!(parser.offset(), 0);
        let mut out = Vec::new();
        parser.feed(&pkg, 7, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn qmqp_spec_example() {
        let s = b"62:16:A simple message,18:sender@example.org,16:rcpt@example.net,,";
        for chunk in 1..=s.len() {
            let r = parse(Protocol::Qmqp, s, chunk);
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].state, RequestState::Complete);
            assert_eq!(r[0].message_bytes, 16);
            assert_eq!(r[0].sender.as_ref().unwrap().bytes, b"sender@example.org");
            assert_eq!(r[0].recipients.len(), 1);
            assert_eq!(r[0].recipients[0].bytes, b"rcpt@example.net");
            assert_eq!(r[0].end_offset, s.len() as u64);
        }
    }

    #[test]
    fn qmtp_bad_encoding_is_malformed() {
        let p = qmtp_package(b'X', "abc", "a@b", &["c@d"]);
        let r = parse(Protocol::Qmtp, &p, 3);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].state,
            RequestState::Malformed(AnomalyKind::QmtpBadEncodingByte)
        );
    }

    #[test]
    fn truncated_package_reported_once() {
        let p = qmtp_package(b'\n', "abc", "a@example.org", &["c@example.com"]);
        let cut = &p[..p.len() - 5];
        let r = parse(Protocol::Qmtp, cut, 4);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, RequestState::Truncated);
        assert_eq!(r[0].sender.as_ref().unwrap().bytes, b"a@example.org");
    }

    #[test]
    fn recipients_capped_but_counted() {
        let rc: Vec<String> = (0..1500).map(|i| format!("r{i}@example.com")).collect();
        let refs: Vec<&str> = rc.iter().map(|s| s.as_str()).collect();
        let p = qmtp_package(b'\n', "x", "s@example.org", &refs);
        let r = parse(Protocol::Qmtp, &p, 1448);
        assert_eq!(r[0].recipient_count, 1500);
        assert_eq!(r[0].recipients.len(), crate::MAX_RECIPIENTS);
    }

    #[test]
    fn huge_claimed_length_then_stop_is_truncated_not_allocated() {
        let r = parse(Protocol::Qmtp, b"4294967296:\nabc", 2);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, RequestState::Truncated);
        assert_eq!(r[0].message_bytes, 4294967295);
    }

    #[test]
    fn gap_in_body_costs_nothing() {
        let p = qmtp_package(b'\n', &"m".repeat(100), "a@example.org", &["c@example.com"]);
        let mut parser = RequestParser::new(Protocol::Qmtp, 0);
        let mut out = Vec::new();
        parser.feed(&p[..20], 1, &mut out);
        parser.gap(50, 1, &mut out);
        parser.feed(&p[70..], 2, &mut out);
        assert_eq!(out.len(), 1);
        let RequestEvent::Request(r) = &out[0];
        assert_eq!(r.state, RequestState::Complete);
        assert_eq!(r.message_gap_bytes, 50);
        assert_eq!(r.recipients[0].bytes, b"c@example.com");
    }

    #[test]
    fn gap_between_packages_truncates() {
        let p = qmtp_package(b'\n', "abc", "a@example.org", &["c@example.com"]);
        let mut parser = RequestParser::new(Protocol::Qmtp, 0);
        let mut out = Vec::new();
        // "4:\nabc," ends at byte 7: a gap there is outside any content.
        parser.feed(&p[..7], 1, &mut out);
        parser.gap(3, 1, &mut out);
        assert!(parser.failed());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_bad_encoding_byte_ends_the_request_at_that_byte() {
        let p = b"4:xabc,13:a@example.org,";
        for chunk in [1, 3, 4, p.len()] {
            let r = parse(Protocol::Qmtp, p, chunk);
            assert_eq!(r.len(), 1);
            assert_eq!(
                r[0].state,
                RequestState::Malformed(AnomalyKind::QmtpBadEncodingByte)
            );
            assert_eq!(
                (r[0].start_offset, r[0].end_offset),
                (0, 3),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_gap_inside_an_address_damages_only_that_field() {
        let mut parser = RequestParser::new(Protocol::Qmtp, 0);
        let mut out = Vec::new();
        parser.feed(b"4:\nabc,13:a@exa", 1, &mut out);
        parser.gap(3, 1, &mut out);
        parser.feed(b"e.org,17:13:b@example.net,,", 1, &mut out);
        assert_eq!(out.len(), 1);
        let RequestEvent::Request(r) = &out[0];
        assert_eq!(r.state, RequestState::Complete);
        let sender = r.sender.as_ref().unwrap();
        assert_eq!(sender.bytes, b"a@exae.org");
        assert_eq!((sender.wire_len, sender.damaged), (13, true));
        assert_eq!(r.message_gap_bytes, 0);
        assert_eq!(r.recipients[0].bytes, b"b@example.net");
        assert!(!r.recipients[0].damaged);
    }

    #[test]
    fn gaps_keep_the_offsets_and_a_lost_encoding_byte_is_no_error() {
        // The encoding byte itself lost: the rest is still the message.
        let mut parser = RequestParser::new(Protocol::Qmtp, 100);
        let mut out = Vec::new();
        parser.feed(b"4:", 1, &mut out);
        parser.gap(1, 1, &mut out);
        parser.feed(b"abc,13:a@example.org,17:13:b@example.net,,", 1, &mut out);
        let RequestEvent::Request(r) = &out[0];
        assert_eq!(r.state, RequestState::Complete);
        assert_eq!((r.encoding, r.message_gap_bytes), (None, 1));
        assert_eq!((r.start_offset, r.end_offset), (100, 145));
        // Lost between two netstrings of a package: cut short where the
        // gap ends.
        let p = qmtp_package(b'\n', "abc", "a@example.org", &["c@example.com"]);
        let mut parser = RequestParser::new(Protocol::Qmtp, 0);
        let mut out = Vec::new();
        parser.feed(&p[..7], 1, &mut out);
        parser.gap(3, 2, &mut out);
        let RequestEvent::Request(r) = &out[0];
        assert_eq!(r.state, RequestState::Truncated);
        assert_eq!((r.end_offset, r.last_ts), (10, 2));
        assert_eq!(parser.offset(), 10);
    }

    #[test]
    fn idle_and_failed_follow_the_stream() {
        let p = qmtp_package(b'\n', "abc", "a@example.org", &["c@example.com"]);
        let mut parser = RequestParser::new(Protocol::Qmtp, 0);
        let mut out = Vec::new();
        assert!(parser.idle() && !parser.failed());
        parser.feed(&p[..3], 1, &mut out);
        assert!(!parser.idle() && !parser.failed());
        // Lost bytes inside the message body cost nothing.
        parser.gap(2, 1, &mut out);
        parser.feed(&p[5..], 1, &mut out);
        assert!(parser.idle() && !parser.failed());
        assert_eq!(out.len(), 1);
        let RequestEvent::Request(r) = &out[0];
        assert_eq!(r.state, RequestState::Complete);
        assert_eq!((r.message_bytes, r.message_gap_bytes), (3, 2));
        assert_eq!(r.message_prefix, b"\nc");
        assert_eq!((r.start_offset, r.end_offset), (0, p.len() as u64));
        // A gap inside a length field: the stream cannot be followed.
        parser.feed(b"4", 2, &mut out);
        parser.gap(1, 2, &mut out);
        assert!(parser.failed());
    }

    #[test]
    fn nessus_probe_wrapped_for_qmqp() {
        // On 628 the scanner wraps its QMTP package in one more netstring.
        let inner = qmtp_package(
            b'\n',
            "Message-ID: <1234567890.666.nessus@example.org>\n",
            "nessus@example.org",
            &["postmaster@example.com"],
        );
        let wrapped = ns(&inner);
        let r = parse(Protocol::Qmqp, &wrapped, 5);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, RequestState::Complete);
        assert_eq!(r[0].sender.as_ref().unwrap().bytes, b"nessus@example.org");
        assert_eq!(r[0].recipients[0].bytes, b"22:postmaster@example.com,");
    }
}
