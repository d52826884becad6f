//! Incremental, zero-copy netstring tokenizer.
//!
//! Owns: turning a byte stream, fed in chunks of any size (down to one byte),
//! into `Start`/`Data`/`End` tokens for netstrings and for netstrings nested
//! inside other netstrings (QMTP's recipient list, QMQP's outer wrapper).
//! Content is handed out as slices of the caller's chunk; the tokenizer never
//! copies or buffers content, so a message body is skipped by its length.
//!
//! Must not: allocate (its state is a few integers), trust a length (a claim is
//! only a counter; lengths with more than [`MAX_LEN_DIGITS`] digits are refused),
//! or know anything about QMTP/QMQP (the protocol parsers decide what to nest).

use crate::AnomalyKind;

/// Longest accepted length field. 12 digits allow netstrings up to ~1 TB, far
/// beyond any real message; more digits are an anomaly, never a counter.
pub(crate) const MAX_LEN_DIGITS: u8 = 12;

/// Deepest nesting the tokenizer tracks (QMTP and QMQP need 1).
const MAX_DEPTH: usize = 2;

/// Why a stream stopped being a valid netstring stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetstringError {
    /// A length that starts with `0` but is not exactly `0`.
    LeadingZero,
    /// More than [`MAX_LEN_DIGITS`] digits.
    LengthTooLong,
    /// `:` with no digit before it.
    EmptyLength,
    /// A byte other than a digit or `:` in the length.
    BadLengthByte(u8),
    /// The byte after the content is not `,`.
    MissingComma(u8),
    /// A nested netstring claims more bytes than its container has left.
    InnerOverrun,
    /// Nesting deeper than the tokenizer tracks.
    TooDeep,
    /// Bytes were lost (capture gap) somewhere other than inside content.
    LostSync,
}

impl NetstringError {
    /// The anomaly this error is reported as.
    pub fn kind(&self) -> AnomalyKind {
        match self {
            NetstringError::LeadingZero => AnomalyKind::NetstringLeadingZero,
            NetstringError::LengthTooLong => AnomalyKind::NetstringLengthTooLong,
            NetstringError::EmptyLength => AnomalyKind::NetstringEmptyLength,
            NetstringError::BadLengthByte(_) => AnomalyKind::NetstringBadLengthByte,
            NetstringError::MissingComma(_) => AnomalyKind::NetstringMissingComma,
            NetstringError::InnerOverrun => AnomalyKind::NetstringInnerOverrun,
            NetstringError::TooDeep => AnomalyKind::NetstringTooDeep,
            NetstringError::LostSync => AnomalyKind::GapOutsideContent,
        }
    }
}

/// One step of the token stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// A netstring's header was read: its content is `len` bytes, at nesting `depth`.
    Start { len: u64, depth: u8 },
    /// Part of the content of the current (non-entered) netstring.
    Data(&'a [u8]),
    /// The closing `,` of a netstring at `depth`.
    End { depth: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Len {
        value: u64,
        digits: u8,
        leading_zero: bool,
    },
    Body {
        remaining: u64,
    },
    Comma,
    Failed(NetstringError),
}

/// The tokenizer. Feed it with [`Tokenizer::next`] until it returns `None`.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    state: State,
    /// Content bytes left in each open (entered) container, outermost first.
    containers: [u64; MAX_DEPTH],
    depth: u8,
    /// A `Start` was just returned and `enter` may still be called.
    can_enter: bool,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokenizer {
    pub const fn new() -> Self {
        Tokenizer {
            state: State::Len {
                value: 0,
                digits: 0,
                leading_zero: false,
            },
            containers: [0; MAX_DEPTH],
            depth: 0,
            can_enter: false,
        }
    }

    /// Current nesting depth (number of entered containers).
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// True between netstrings at the top level (nothing partially read).
    pub fn at_top_boundary(&self) -> bool {
        self.depth == 0
            && matches!(
                self.state,
                State::Len {
                    digits: 0,
                    leading_zero: false,
                    ..
                }
            )
    }

    /// Content bytes of the current netstring not yet read, when inside one
    /// that was not entered (0 anywhere else).
    pub(crate) fn body_remaining(&self) -> u64 {
        match self.state {
            State::Body { remaining } => remaining,
            _ => 0,
        }
    }

    /// The error that stopped the tokenizer, if any.
    pub fn error(&self) -> Option<NetstringError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// After a `Start`, treat that netstring's content as a sequence of
    /// netstrings instead of opaque data.
    pub fn enter(&mut self) -> Result<(), NetstringError> {
        let State::Body { remaining } = self.state else {
            return Ok(());
        };
        if !self.can_enter {
            return Ok(());
        }
        let d = usize::from(self.depth);
        let Some(slot) = self.containers.get_mut(d) else {
            return Err(self.fail(NetstringError::TooDeep));
        };
        *slot = remaining;
        self.depth += 1;
        self.can_enter = false;
        self.state = Self::fresh_len();
        Ok(())
    }

    const fn fresh_len() -> State {
        State::Len {
            value: 0,
            digits: 0,
            leading_zero: false,
        }
    }

    fn fail(&mut self, e: NetstringError) -> NetstringError {
        self.state = State::Failed(e);
        e
    }

    /// Charges `n` consumed bytes to every open container. Callers only pass
    /// counts that were checked to fit the innermost one, and outer ones are
    /// always at least as large.
    fn charge(&mut self, n: u64) {
        let d = usize::from(self.depth).min(MAX_DEPTH);
        for c in self.containers.iter_mut().take(d) {
            *c = c.saturating_sub(n);
        }
    }

    /// Bytes left in the innermost open container, or `u64::MAX` at top level.
    fn room(&self) -> u64 {
        match self.depth {
            0 => u64::MAX,
            d => self
                .containers
                .get(usize::from(d) - 1)
                .copied()
                .unwrap_or(0),
        }
    }

    /// Tells the tokenizer that `n` bytes of the stream were lost. Inside
    /// content this is free (the content is skipped by length anyway) and the
    /// lost bytes are simply not reported as `Data`; anywhere else the stream
    /// can no longer be followed.
    #[inline]
    pub fn gap(&mut self, n: u64) -> Result<(), NetstringError> {
        match self.state {
            State::Body { remaining } if n <= remaining => {
                self.can_enter = false;
                self.charge(n);
                self.state = if n == remaining {
                    State::Comma
                } else {
                    State::Body {
                        remaining: remaining - n,
                    }
                };
                Ok(())
            }
            State::Failed(e) => Err(e),
            _ => Err(self.fail(NetstringError::LostSync)),
        }
    }

    /// Returns the next token from `input`, advancing `input` past the bytes
    /// it used. `None` means `input` is exhausted (feed more). After an error,
    /// every call returns the same error.
    // Long: one state machine over the input (length digits, colon, content, comma, container ends), its states side by side.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Option<Result<Token<'a>, NetstringError>> {
        loop {
            match self.state {
                State::Failed(e) => return Some(Err(e)),
                State::Len {
                    value,
                    digits,
                    leading_zero,
                } => {
                    // A container whose content is used up closes here.
                    if digits == 0 && !leading_zero && self.depth > 0 && self.room() == 0 {
                        self.depth -= 1;
                        self.state = State::Comma;
                        continue;
                    }
                    let (&b, rest) = input.split_first()?;
                    if self.room() == 0 {
                        return Some(Err(self.fail(NetstringError::InnerOverrun)));
                    }
                    *input = rest;
                    self.can_enter = false;
                    self.charge(1);
                    match b {
                        b'0'..=b'9' => {
                            if leading_zero {
                                return Some(Err(self.fail(NetstringError::LeadingZero)));
                            }
                            if digits >= MAX_LEN_DIGITS {
                                return Some(Err(self.fail(NetstringError::LengthTooLong)));
                            }
                            let v = value * 10 + u64::from(b - b'0');
                            self.state = State::Len {
                                value: v,
                                digits: digits + 1,
                                leading_zero: digits == 0 && b == b'0',
                            };
                        }
                        b':' => {
                            if digits == 0 {
                                return Some(Err(self.fail(NetstringError::EmptyLength)));
                            }
                            // Content plus the closing comma must fit the container.
                            if self.depth > 0 && value.saturating_add(1) > self.room() {
                                return Some(Err(self.fail(NetstringError::InnerOverrun)));
                            }
                            self.state = if value == 0 {
                                State::Comma
                            } else {
                                State::Body { remaining: value }
                            };
                            // An empty netstring may still be entered (it closes at once).
                            if value == 0 {
                                self.state = State::Body { remaining: 0 };
                            }
                            self.can_enter = true;
                            return Some(Ok(Token::Start {
                                len: value,
                                depth: self.depth,
                            }));
                        }
                        other => return Some(Err(self.fail(NetstringError::BadLengthByte(other)))),
                    }
                }
                State::Body { remaining } => {
                    if remaining == 0 {
                        self.can_enter = false;
                        self.state = State::Comma;
                        continue;
                    }
                    if input.is_empty() {
                        return None;
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (data, rest) = input.split_at(take);
                    *input = rest;
                    self.can_enter = false;
                    self.charge(take as u64);
                    self.state = State::Body {
                        remaining: remaining - take as u64,
                    };
                    return Some(Ok(Token::Data(data)));
                }
                State::Comma => {
                    let (&b, rest) = input.split_first()?;
                    *input = rest;
                    self.charge(1);
                    if b != b',' {
                        return Some(Err(self.fail(NetstringError::MissingComma(b))));
                    }
                    self.state = Self::fresh_len();
                    return Some(Ok(Token::End { depth: self.depth }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokenizes `input` fed in chunks of `chunk` bytes, entering every
    /// netstring whose index (at depth 0) is in `enter_top`.
    fn tokens(
        input: &[u8],
        chunk: usize,
        enter_top: &[usize],
    ) -> (Vec<String>, Option<NetstringError>) {
        let mut t = Tokenizer::new();
        let mut out = Vec::new();
        let mut top_index = 0usize;
        let mut data = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut p = piece;
            while let Some(r) = t.next(&mut p) {
                match r {
                    Ok(Token::Start { len, depth }) => {
                        out.push(format!("S{depth}:{len}"));
                        if depth == 0 && enter_top.contains(&top_index) {
                            t.enter().unwrap();
                        }
                    }
                    Ok(Token::Data(d)) => data.extend_from_slice(d),
                    Ok(Token::End { depth }) => {
                        if !data.is_empty() {
                            out.push(format!("D:{}", String::from_utf8_lossy(&data)));
                            data.clear();
                        }
                        out.push(format!("E{depth}"));
                        if depth == 0 {
                            top_index += 1;
                        }
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, t.error())
    }

    #[test]
    fn simple_and_empty() {
        let (t, e) = tokens(b"12:hello world!,0:,", 100, &[]);
        assert_eq!(e, None);
        assert_eq!(t, ["S0:12", "D:hello world!", "E0", "S0:0", "E0"]);
    }

    #[test]
    fn nested_qmqp_example() {
        // A widely copied example claims 19 and 17 bytes for 18- and 16-byte
        // addresses (and 64 for 62): a strict parser must refuse it, so this
        // is the example with correct lengths.
        let s = b"62:16:A simple message,18:sender@example.org,16:rcpt@example.net,,";
        for chunk in 1..s.len() {
            let (t, e) = tokens(s, chunk, &[0]);
            assert_eq!(e, None, "chunk {chunk}");
            assert_eq!(
                t,
                [
                    "S0:62",
                    "S1:16",
                    "D:A simple message",
                    "E1",
                    "S1:18",
                    "D:sender@example.org",
                    "E1",
                    "S1:16",
                    "D:rcpt@example.net",
                    "E1",
                    "E0"
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn protocols_md_example_has_wrong_lengths() {
        let s = b"64:16:A simple message,19:sender@example.org,17:rcpt@example.net,,";
        assert_eq!(
            tokens(s, 5, &[0]).1,
            Some(NetstringError::MissingComma(b'1'))
        );
    }

    #[test]
    fn empty_container_closes() {
        let (t, e) = tokens(b"0:,3:abc,", 1, &[0]);
        assert_eq!(e, None);
        assert_eq!(t, ["S0:0", "E0", "S0:3", "D:abc", "E0"]);
    }

    #[test]
    fn leading_zero_rejected() {
        assert_eq!(tokens(b"012:", 1, &[]).1, Some(NetstringError::LeadingZero));
        assert_eq!(tokens(b"00:", 1, &[]).1, Some(NetstringError::LeadingZero));
    }

    #[test]
    fn too_many_digits_rejected_without_overflow() {
        let (_, e) = tokens(b"10000000000000000000:x,", 3, &[]);
        assert_eq!(e, Some(NetstringError::LengthTooLong));
        let (t, e) = tokens(b"999999999999:", 3, &[]);
        assert_eq!(e, None);
        assert_eq!(t, ["S0:999999999999"]);
    }

    #[test]
    fn missing_comma_and_bad_bytes() {
        assert_eq!(
            tokens(b"3:abc;", 1, &[]).1,
            Some(NetstringError::MissingComma(b';'))
        );
        assert_eq!(tokens(b":", 1, &[]).1, Some(NetstringError::EmptyLength));
        assert_eq!(
            tokens(b"EHLO", 1, &[]).1,
            Some(NetstringError::BadLengthByte(b'E'))
        );
    }

    #[test]
    fn inner_overrun_detected() {
        // container of 5 bytes holding a netstring that claims 9
        assert_eq!(
            tokens(b"5:9:abcdefghi,,", 2, &[0]).1,
            Some(NetstringError::InnerOverrun)
        );
        // container content ends in the middle of an inner length
        assert_eq!(
            tokens(b"2:12:,", 1, &[0]).1,
            Some(NetstringError::InnerOverrun)
        );
    }

    #[test]
    fn gap_inside_body_is_free() {
        let mut t = Tokenizer::new();
        let mut p: &[u8] = b"10:abc";
        assert_eq!(t.next(&mut p), Some(Ok(Token::Start { len: 10, depth: 0 })));
        assert_eq!(t.next(&mut p), Some(Ok(Token::Data(b"abc"))));
        t.gap(7).unwrap();
        let mut p: &[u8] = b",";
        assert_eq!(t.next(&mut p), Some(Ok(Token::End { depth: 0 })));
        assert!(t.at_top_boundary());
        // a gap at a boundary loses sync
        assert_eq!(t.gap(1), Err(NetstringError::LostSync));
    }

    #[test]
    fn gap_larger_than_body_loses_sync() {
        let mut t = Tokenizer::new();
        let mut p: &[u8] = b"3:";
        let _ = t.next(&mut p);
        assert_eq!(t.gap(4), Err(NetstringError::LostSync));
    }

    #[test]
    fn a_gap_after_a_failure_keeps_the_first_error() {
        let mut t = Tokenizer::new();
        let mut p: &[u8] = b"1:ab";
        let _ = t.next(&mut p);
        let _ = t.next(&mut p);
        let e = NetstringError::MissingComma(b'b');
        assert_eq!(t.next(&mut p), Some(Err(e)));
        assert_eq!(t.gap(1), Err(e));
        assert_eq!(t.error(), Some(e));
    }
}
