//! Server-side parser: reply netstrings (`K`, `Z` or `D` followed by text).
//!
//! Owns: turning the server's byte stream into [`Reply`]s, however the
//! server split or batched them into segments.
//!
//! Must not: match replies to recipients (the session does that) or copy more
//! than [`super::MAX_FIELD_BYTES`] of a reply's text.

use super::netstring::{Token, Tokenizer};
use super::{AnomalyKind, Field, Reply, ReplyCode};

/// Incremental reply parser for one server stream.
#[derive(Clone, Debug, Default)]
pub struct ReplyParser {
    tok: Tokenizer,
    code: Option<ReplyCode>,
    text: Field,
    in_reply: bool,
    failed: Option<AnomalyKind>,
}

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Why the parser stopped, if it did.
    pub fn failed(&self) -> Option<AnomalyKind> {
        self.failed
    }

    /// True when a reply is partly read.
    pub fn in_reply(&self) -> bool {
        self.in_reply
    }

    /// Feeds in-order server bytes. Complete replies are appended to `out`.
    /// Returns the anomaly kind if the stream stopped being replies.
    pub fn feed(
        &mut self,
        data: &[u8],
        ts: u64,
        acked_client_offset: Option<u64>,
        out: &mut Vec<Reply>,
    ) -> Option<AnomalyKind> {
        if self.failed.is_some() {
            return None;
        }
        let mut input = data;
        while let Some(step) = self.tok.next(&mut input) {
            match step {
                Err(e) => {
                    self.failed = Some(e.kind());
                    return self.failed;
                }
                Ok(Token::Start { len, .. }) => {
                    if len == 0 {
                        self.failed = Some(AnomalyKind::ReplyEmpty);
                        return self.failed;
                    }
                    self.in_reply = true;
                    self.code = None;
                    self.text = Field::default();
                }
                Ok(Token::Data(d)) => {
                    let rest = if self.code.is_none() {
                        let Some((&first, rest)) = d.split_first() else {
                            continue;
                        };
                        match ReplyCode::from_byte(first) {
                            Some(c) => self.code = Some(c),
                            None => {
                                self.failed = Some(AnomalyKind::ReplyBadCode);
                                return self.failed;
                            }
                        }
                        rest
                    } else {
                        d
                    };
                    self.text.push(rest);
                }
                Ok(Token::End { .. }) => {
                    self.in_reply = false;
                    if let Some(code) = self.code.take() {
                        out.push(Reply {
                            code,
                            text: std::mem::take(&mut self.text),
                            ts,
                            acked_client_offset,
                        });
                    }
                }
            }
        }
        None
    }

    /// `n` bytes of the server stream were lost: a reply cut by a gap is lost.
    pub fn gap(&mut self, n: u64) -> Option<AnomalyKind> {
        if self.failed.is_some() {
            return None;
        }
        if self.code.is_some() && self.tok.gap(n).is_ok() {
            self.text.damaged = true;
            return None;
        }
        self.failed = Some(AnomalyKind::GapInReplyStream);
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_and_split_replies() {
        let s = b"23:Kok 1795238274 qp 15868,66:Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1),5:Zbusy,";
        for chunk in 1..=s.len() {
            let mut p = ReplyParser::new();
            let mut out = Vec::new();
            for c in s.chunks(chunk) {
                assert_eq!(p.feed(c, 1, None, &mut out), None);
            }
            let got: Vec<_> = out.iter().map(|r| (r.code, r.text.text())).collect();
            assert_eq!(
                got,
                [
                    (ReplyCode::K, "ok 1795238274 qp 15868".to_string()),
                    (
                        ReplyCode::D,
                        "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
                            .to_string()
                    ),
                    (ReplyCode::Z, "busy".to_string()),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn non_reply_fails() {
        let mut out = Vec::new();
        assert_eq!(
            ReplyParser::new().feed(b"220 mail ESMTP\r\n", 1, None, &mut out),
            Some(AnomalyKind::NetstringBadLengthByte)
        );
        assert_eq!(
            ReplyParser::new().feed(b"3:Xab,", 1, None, &mut out),
            Some(AnomalyKind::ReplyBadCode)
        );
        assert_eq!(
            ReplyParser::new().feed(b"0:,", 1, None, &mut out),
            Some(AnomalyKind::ReplyEmpty)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn long_reply_text_is_bounded() {
        let text = format!("D{}", "x".repeat(5000));
        let s = format!("{}:{},", text.len(), text);
        let mut out = Vec::new();
        ReplyParser::new().feed(s.as_bytes(), 1, None, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].text.truncated);
        assert_eq!(out[0].text.bytes.len(), crate::MAX_FIELD_BYTES);
    }

    #[test]
    fn a_gap_inside_reply_text_is_damage_elsewhere_a_failure() {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        assert!(!p.in_reply());
        assert_eq!(p.feed(b"5:Kab", 1, None, &mut out), None);
        assert!(p.in_reply());
        assert_eq!(p.gap(2), None);
        assert_eq!(p.feed(b",2:Dx,", 2, None, &mut out), None);
        assert!(!p.in_reply());
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.code, r.text.text(), r.text.damaged))
            .collect();
        assert_eq!(
            got,
            [
                (ReplyCode::K, "ab".to_string(), true),
                (ReplyCode::D, "x".to_string(), false)
            ]
        );
        // Before the code is known the reply cannot be judged.
        let mut p = ReplyParser::new();
        assert_eq!(p.feed(b"5:", 1, None, &mut out), None);
        assert_eq!(p.gap(3), Some(AnomalyKind::GapInReplyStream));
        assert_eq!(p.failed(), Some(AnomalyKind::GapInReplyStream));
    }
}
