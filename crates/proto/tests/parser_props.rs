//! Property tests of the protocol parsers over the public API: any split of a
//! stream into chunks must give the same result as feeding it at once, and
//! valid streams must parse back to what was generated.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use qmwatch_proto::netstring::{NetstringError, Token, Tokenizer};
use qmwatch_proto::reply::ReplyParser;
use qmwatch_proto::request::{RequestEvent, RequestParser};
use qmwatch_proto::sniff::{Sniffer, Verdict};
use qmwatch_proto::{
    AnomalyKind, Encoding, Field, Protocol, Reply, ReplyCode, Request, RequestState,
    MAX_FIELD_BYTES, MESSAGE_PREFIX_BYTES,
};

// ---------------------------------------------------------------- helpers

fn ns(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

/// Chunk boundaries of a stream of `len` bytes: 0, the cuts (sorted, maybe
/// repeated, so empty chunks occur), `len`.
fn bounds(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut b: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
    b.push(0);
    b.push(len);
    b.sort_unstable();
    b
}

/// Packet time of chunk `i`.
fn chunk_ts(i: usize) -> u64 {
    1000 + i as u64
}

/// Index of the chunk that holds byte `pos`.
fn chunk_of(b: &[usize], pos: usize) -> usize {
    b.windows(2)
        .position(|w| w[0] <= pos && pos < w[1])
        .expect("position inside the stream")
}

fn field(b: &[u8]) -> Field {
    Field {
        bytes: b[..b.len().min(MAX_FIELD_BYTES)].to_vec(),
        truncated: b.len() > MAX_FIELD_BYTES,
        damaged: false,
        wire_len: b.len() as u64,
    }
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// Everything of a request a test generates (whatever else the struct holds).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Summary {
    protocol: Protocol,
    encoding: Option<Encoding>,
    message_bytes: u64,
    message_gap_bytes: u64,
    /// The start of the message as on the wire (QMTP: with its encoding byte).
    message_prefix: Vec<u8>,
    sender: Option<Field>,
    recipients: Vec<Field>,
    recipient_count: u64,
    offsets: (u64, u64),
    ts: (u64, u64),
    state: RequestState,
}

fn summary(r: &Request) -> Summary {
    Summary {
        protocol: r.protocol,
        encoding: r.encoding,
        message_bytes: r.message_bytes,
        message_gap_bytes: r.message_gap_bytes,
        message_prefix: r.message_prefix.clone(),
        sender: r.sender.clone(),
        recipients: r.recipients.clone(),
        recipient_count: r.recipient_count,
        offsets: (r.start_offset, r.end_offset),
        ts: (r.first_ts, r.last_ts),
        state: r.state,
    }
}

/// Feeds `stream` to a fresh parser chunk by chunk (chunk `i` at
/// `chunk_ts(i)`), then ends it.
fn parse_requests(p: Protocol, stream: &[u8], b: &[usize]) -> Vec<Request> {
    let mut parser = RequestParser::new(p, 0);
    let mut out = Vec::new();
    for (i, w) in b.windows(2).enumerate() {
        parser.feed(&stream[w[0]..w[1]], chunk_ts(i), &mut out);
    }
    parser.finish(9999, &mut out);
    out.into_iter().map(|RequestEvent::Request(r)| r).collect()
}

fn without_ts(rs: &[Request]) -> Vec<Request> {
    rs.iter()
        .map(|r| Request {
            first_ts: 0,
            last_ts: 0,
            ..r.clone()
        })
        .collect()
}

// ---------------------------------------------------------------- strategies

fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            any::<u8>(),
            Just(b','),
            Just(b':'),
            b'0'..=b'9',
            Just(b'\n'),
            Just(b'\r')
        ],
        0..300,
    )
}

fn address() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), vec(0x20u8..=0x7e, 0..40)]
}

#[derive(Clone, Debug)]
struct Msg {
    crlf: bool,
    body: Vec<u8>,
    sender: Vec<u8>,
    rcpts: Vec<Vec<u8>>,
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        any::<bool>(),
        message_bytes(),
        address(),
        vec(address(), 0..5),
    )
        .prop_map(|(crlf, body, sender, rcpts)| Msg {
            crlf,
            body,
            sender,
            rcpts,
        })
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..12)
}

// ---------------------------------------------------------------- encoders

/// The QMTP stream and, per package, the position of the message length's
/// colon and the package's end.
fn qmtp_stream(msgs: &[Msg]) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
    let mut s = Vec::new();
    let mut marks = Vec::new();
    for m in msgs {
        let start = s.len();
        let mut message = vec![if m.crlf { b'\r' } else { b'\n' }];
        message.extend_from_slice(&m.body);
        s.extend(ns(&message));
        s.extend(ns(&m.sender));
        let list: Vec<u8> = m.rcpts.iter().flat_map(|r| ns(r)).collect();
        s.extend(ns(&list));
        marks.push((start, start + digits(message.len()), s.len()));
    }
    (s, marks)
}

fn qmqp_stream(msgs: &[Msg]) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
    let mut s = Vec::new();
    let mut marks = Vec::new();
    for m in msgs {
        let start = s.len();
        let mut inner = ns(&m.body);
        inner.extend(ns(&m.sender));
        for r in &m.rcpts {
            inner.extend(ns(r));
        }
        s.extend(ns(&inner));
        marks.push((start, start + digits(inner.len()), s.len()));
    }
    (s, marks)
}

fn expected(
    p: Protocol,
    msgs: &[Msg],
    marks: &[(usize, usize, usize)],
    b: &[usize],
) -> Vec<Summary> {
    msgs.iter()
        .zip(marks)
        .map(|(m, &(start, colon, end))| Summary {
            protocol: p,
            encoding: match p {
                Protocol::Qmqp => None,
                Protocol::Qmtp if m.crlf => Some(Encoding::Crlf),
                Protocol::Qmtp => Some(Encoding::Lf),
            },
            message_bytes: m.body.len() as u64,
            message_gap_bytes: 0,
            message_prefix: {
                let mut wire = match p {
                    Protocol::Qmtp => vec![if m.crlf { b'\r' } else { b'\n' }],
                    Protocol::Qmqp => Vec::new(),
                };
                wire.extend_from_slice(&m.body);
                wire.truncate(MESSAGE_PREFIX_BYTES);
                wire
            },
            sender: Some(field(&m.sender)),
            recipients: m.rcpts.iter().map(|r| field(r)).collect(),
            recipient_count: m.rcpts.len() as u64,
            offsets: (start as u64, end as u64),
            ts: (chunk_ts(chunk_of(b, colon)), chunk_ts(chunk_of(b, end - 1))),
            state: RequestState::Complete,
        })
        .collect()
}

fn check_requests(p: Protocol, msgs: &[Msg], cuts: &[Index]) -> Result<(), TestCaseError> {
    let (stream, marks) = match p {
        Protocol::Qmtp => qmtp_stream(msgs),
        Protocol::Qmqp => qmqp_stream(msgs),
    };
    let split = bounds(stream.len(), cuts);
    let whole = vec![0, stream.len()];
    let chunked = parse_requests(p, &stream, &split);
    let at_once = parse_requests(p, &stream, &whole);
    prop_assert_eq!(without_ts(&chunked), without_ts(&at_once));
    let got: Vec<Summary> = chunked.iter().map(summary).collect();
    prop_assert_eq!(got, expected(p, msgs, &marks, &split));
    let got: Vec<Summary> = at_once.iter().map(summary).collect();
    prop_assert_eq!(got, expected(p, msgs, &marks, &whole));
    Ok(())
}

// ---------------------------------------------------------------- tokenizer

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Start(u64, u8),
    Data(Vec<u8>),
    End(u8),
}

#[derive(Debug, PartialEq, Eq)]
struct TokRun {
    tokens: Vec<Tok>,
    error: Option<NetstringError>,
    at_top: bool,
    depth: u8,
}

/// Tokenizes with a fixed entering rule (every top-level netstring, inner
/// ones of even length, and at depth 2 lengths divisible by 3, which is too
/// deep), merging `Data` pieces so that chunking does not show.
fn tokenize(input: &[u8], b: &[usize]) -> TokRun {
    let mut t = Tokenizer::new();
    let mut tokens: Vec<Tok> = Vec::new();
    let mut error = None;
    'feed: for w in b.windows(2) {
        let mut piece = &input[w[0]..w[1]];
        while let Some(step) = t.next(&mut piece) {
            match step {
                Err(e) => {
                    assert_eq!(t.error(), Some(e), "the error is kept");
                    error = Some(e);
                    break 'feed;
                }
                Ok(Token::Start { len, depth }) => {
                    tokens.push(Tok::Start(len, depth));
                    let enter = match depth {
                        0 => true,
                        1 => len % 2 == 0,
                        _ => len % 3 == 0,
                    };
                    if enter {
                        if let Err(e) = t.enter() {
                            assert_eq!(t.error(), Some(e), "the error is kept");
                            error = Some(e);
                            break 'feed;
                        }
                    }
                }
                Ok(Token::Data(d)) => match tokens.last_mut() {
                    Some(Tok::Data(prev)) => prev.extend_from_slice(d),
                    _ => tokens.push(Tok::Data(d.to_vec())),
                },
                Ok(Token::End { depth }) => tokens.push(Tok::End(depth)),
            }
        }
    }
    assert_eq!(error, t.error());
    TokRun {
        tokens,
        error,
        at_top: t.at_top_boundary(),
        depth: t.depth(),
    }
}

/// Bytes that are mostly netstring syntax, or anything at all.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        vec(
            prop::sample::select(b"0123456789::,,,\n\rKZDx".to_vec()),
            0..200
        ),
    ]
}

// ---------------------------------------------------------------- sniffer

fn sniff(input: &[u8], b: &[usize]) -> (Option<Verdict>, usize, Vec<u8>) {
    let mut s = Sniffer::new();
    let mut used = 0;
    let mut verdict = None;
    for w in b.windows(2) {
        let (v, n) = s.feed(&input[w[0]..w[1]]);
        used += n;
        if v.is_some() {
            verdict = v;
            break;
        }
    }
    (verdict, used, s.stashed().to_vec())
}

/// The table of docs/protocols.md, written independently of the sniffer
/// (lengths of at most 12 digits). `None`: not decided yet.
fn table(b: &[u8]) -> Option<Verdict> {
    let at = |i: usize| b.get(i).copied();
    if !matches!(at(0)?, b'1'..=b'9') {
        return Some(Verdict::Other);
    }
    let mut i = 1;
    loop {
        match at(i)? {
            b'0'..=b'9' if i < 12 => i += 1,
            b':' => break,
            _ => return Some(Verdict::Other),
        }
    }
    i += 1;
    Some(match at(i)? {
        b'\n' | b'\r' => Verdict::Qmtp,
        b'K' | b'Z' | b'D' => Verdict::Reply,
        b'0' if at(i + 1)? == b':' => Verdict::Qmqp,
        b'1'..=b'9' => {
            let first = i;
            i += 1;
            loop {
                match at(i)? {
                    b'0'..=b'9' if i - first < 12 => i += 1,
                    b':' => return Some(Verdict::Qmqp),
                    _ => return Some(Verdict::Other),
                }
            }
        }
        _ => Verdict::Other,
    })
}

fn sniff_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..40),
        vec(prop::sample::select(b"0123456789:\n\rKZDx".to_vec()), 0..40),
        (
            vec(b'0'..=b'9', 0..14),
            vec(b'0'..=b'9', 0..14),
            any::<u8>()
        )
            .prop_map(|(a, b, c)| {
                let mut v = a;
                v.push(b':');
                v.extend(b);
                v.push(b':');
                v.push(c);
                v
            }),
    ]
}

/// Replaces a few bytes of `s` and maybe cuts it short.
fn damage(s: &mut Vec<u8>, edits: &[(Index, u8)], cut: &Option<Index>) {
    for (at, b) in edits {
        if !s.is_empty() {
            let i = at.index(s.len());
            s[i] = *b;
        }
    }
    if let Some(c) = cut {
        s.truncate(c.index(s.len() + 1));
    }
}

fn edits() -> impl Strategy<Value = Vec<(Index, u8)>> {
    vec(
        (
            any::<Index>(),
            prop_oneof![
                any::<u8>(),
                prop::sample::select(b"0123456789:,\n\rKZD".to_vec())
            ],
        ),
        0..4,
    )
}

/// Reply parser results (replies with time and ack cleared, failure, whether
/// a reply is left open), chunked and at once.
fn replies_at_once_and_chunked(
    stream: &[u8],
    cuts: &[Index],
) -> Vec<(Vec<Reply>, Option<AnomalyKind>, bool)> {
    [bounds(stream.len(), cuts), vec![0, stream.len()]]
        .iter()
        .map(|b| {
            let mut p = ReplyParser::new();
            let mut out = Vec::new();
            let mut failure = None;
            for (i, w) in b.windows(2).enumerate() {
                let f = p.feed(&stream[w[0]..w[1]], chunk_ts(i), Some(i as u64), &mut out);
                failure = failure.or(f);
            }
            assert_eq!(failure, p.failed());
            for r in &mut out {
                r.ts = 0;
                r.acked_client_offset = None;
            }
            (out, failure, p.in_reply())
        })
        .collect()
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn qmtp_requests_survive_any_split(msgs in vec(msg(), 1..4), cuts in cuts()) {
        check_requests(Protocol::Qmtp, &msgs, &cuts)?;
    }

    #[test]
    fn qmqp_requests_survive_any_split(msgs in vec(msg(), 1..4), cuts in cuts()) {
        check_requests(Protocol::Qmqp, &msgs, &cuts)?;
    }

    #[test]
    fn replies_survive_any_split(
        replies in vec(
            (
                prop::sample::select(vec![b'K', b'Z', b'D']),
                prop_oneof![vec(any::<u8>(), 0..60), vec(any::<u8>(), 1000..1100)],
            ),
            1..8,
        ),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (code, text) in &replies {
            let mut r = vec![*code];
            r.extend_from_slice(text);
            stream.extend(ns(&r));
            ends.push(stream.len() - 1);
        }
        let split = bounds(stream.len(), &cuts);
        for b in [split, vec![0, stream.len()]] {
            let mut p = ReplyParser::new();
            let mut out = Vec::new();
            for (i, w) in b.windows(2).enumerate() {
                let ack = Some(i as u64);
                prop_assert_eq!(p.feed(&stream[w[0]..w[1]], chunk_ts(i), ack, &mut out), None);
            }
            prop_assert!(!p.in_reply());
            prop_assert_eq!(p.failed(), None);
            let want: Vec<Reply> = replies
                .iter()
                .zip(&ends)
                .map(|((code, text), &end)| Reply {
                    code: ReplyCode::from_byte(*code).unwrap(),
                    text: field(text),
                    ts: chunk_ts(chunk_of(&b, end)),
                    acked_client_offset: Some(chunk_of(&b, end) as u64),
                })
                .collect();
            prop_assert_eq!(out, want);
        }
    }

    #[test]
    fn tokenizer_is_split_invariant(input in wire_bytes(), cuts in cuts()) {
        let at_once = tokenize(&input, &[0, input.len()]);
        let chunked = tokenize(&input, &bounds(input.len(), &cuts));
        prop_assert_eq!(&chunked, &at_once);
        let bytewise: Vec<usize> = (0..=input.len()).collect();
        prop_assert_eq!(&tokenize(&input, &bytewise), &at_once);
    }

    #[test]
    fn sniffer_is_split_invariant_and_follows_the_table(
        input in sniff_bytes(),
        cuts in cuts(),
    ) {
        let at_once = sniff(&input, &[0, input.len()]);
        prop_assert_eq!(&sniff(&input, &bounds(input.len(), &cuts)), &at_once);
        let (verdict, used, stash) = at_once;
        prop_assert_eq!(verdict, table(&input));
        prop_assert_eq!(&stash[..], &input[..used]);
        if verdict.is_none() {
            prop_assert_eq!(used, input.len());
        }
    }

    #[test]
    fn damaged_requests_parse_the_same_for_any_split(
        msgs in vec(msg(), 1..3),
        qmqp in any::<bool>(),
        edits in edits(),
        cut in proptest::option::of(any::<Index>()),
        cuts in cuts(),
    ) {
        let p = if qmqp { Protocol::Qmqp } else { Protocol::Qmtp };
        let (mut stream, _) = match p {
            Protocol::Qmtp => qmtp_stream(&msgs),
            Protocol::Qmqp => qmqp_stream(&msgs),
        };
        damage(&mut stream, &edits, &cut);
        let chunked = parse_requests(p, &stream, &bounds(stream.len(), &cuts));
        let at_once = parse_requests(p, &stream, &[0, stream.len()]);
        prop_assert_eq!(without_ts(&chunked), without_ts(&at_once));
        // At most one request that did not complete, and it comes last.
        let bad = at_once.iter().filter(|r| r.state != RequestState::Complete).count();
        prop_assert!(bad <= 1);
        if bad == 1 {
            prop_assert!(at_once.last().unwrap().state != RequestState::Complete);
        }
        for r in &at_once {
            prop_assert!(r.start_offset <= r.end_offset);
            prop_assert!(r.end_offset <= stream.len() as u64);
        }
    }

    #[test]
    fn damaged_replies_parse_the_same_for_any_split(
        replies in vec((prop::sample::select(vec![b'K', b'Z', b'D']), vec(any::<u8>(), 0..40)), 1..6),
        edits in edits(),
        cut in proptest::option::of(any::<Index>()),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        for (code, text) in &replies {
            let mut r = vec![*code];
            r.extend_from_slice(text);
            stream.extend(ns(&r));
        }
        damage(&mut stream, &edits, &cut);
        let runs = replies_at_once_and_chunked(&stream, &cuts);
        prop_assert_eq!(&runs[0], &runs[1]);
    }
}

// ------------------------------------------------- reference models
//
// Written from the netstring definition and docs/protocols.md, sharing no code
// with the parsers: the properties below compare the parsers with these,
// not only with themselves.

/// `tokenize`'s entering rule.
fn tokenize_rule(len: u64, depth: u8) -> bool {
    match depth {
        0 => true,
        1 => len % 2 == 0,
        _ => len % 3 == 0,
    }
}

/// The tokens of `input` as a straight reading of the definition:
/// `[1-9][0-9]*:` or `0:` (at most 12 digits), the content, `,`. A
/// netstring `enter` picks holds a sequence of netstrings that must fit its
/// content exactly; two levels at most. Also where the reading stopped: the
/// nesting depth (a container whose content is used up is left before its
/// comma), and whether between two top-level netstrings.
fn model_tokens(input: &[u8], enter: fn(u64, u8) -> bool) -> TokRun {
    let mut tokens = Vec::new();
    // Where the comma of each entered netstring is.
    let mut open: Vec<usize> = Vec::new();
    let mut pos = 0;
    let stop = |tokens, error, depth: usize, at_top| TokRun {
        tokens,
        error,
        at_top,
        depth: depth as u8,
    };
    loop {
        if open.last() == Some(&pos) {
            // The container's content is used up: its comma.
            let depth = open.len() - 1;
            let Some(&b) = input.get(pos) else {
                return stop(tokens, None, depth, false);
            };
            if b != b',' {
                return stop(tokens, Some(NetstringError::MissingComma(b)), depth, false);
            }
            open.pop();
            tokens.push(Tok::End(depth as u8));
            pos += 1;
            continue;
        }
        // The header.
        let start = pos;
        let mut len: u64 = 0;
        loop {
            let Some(&b) = input.get(pos) else {
                let between = pos == start && open.is_empty();
                return stop(tokens, None, open.len(), between);
            };
            if open.last().is_some_and(|&end| pos >= end) {
                return stop(
                    tokens,
                    Some(NetstringError::InnerOverrun),
                    open.len(),
                    false,
                );
            }
            let e = match b {
                b'0'..=b'9' if pos > start && input[start] == b'0' => NetstringError::LeadingZero,
                b'0'..=b'9' if pos - start >= 12 => NetstringError::LengthTooLong,
                b'0'..=b'9' => {
                    len = len * 10 + u64::from(b - b'0');
                    pos += 1;
                    continue;
                }
                b':' if pos == start => NetstringError::EmptyLength,
                b':' => {
                    pos += 1;
                    break;
                }
                other => NetstringError::BadLengthByte(other),
            };
            return stop(tokens, Some(e), open.len(), false);
        }
        let depth = open.len();
        if open
            .last()
            .is_some_and(|&end| pos as u64 + len + 1 > end as u64)
        {
            return stop(tokens, Some(NetstringError::InnerOverrun), depth, false);
        }
        tokens.push(Tok::Start(len, depth as u8));
        if enter(len, depth as u8) {
            if depth >= 2 {
                return stop(tokens, Some(NetstringError::TooDeep), depth, false);
            }
            open.push(pos + len as usize);
            continue;
        }
        let end = pos.saturating_add(len as usize);
        let data = &input[pos..end.min(input.len())];
        if !data.is_empty() {
            tokens.push(Tok::Data(data.to_vec()));
        }
        let Some(&b) = input.get(end) else {
            return stop(tokens, None, depth, false);
        };
        if b != b',' {
            return stop(tokens, Some(NetstringError::MissingComma(b)), depth, false);
        }
        tokens.push(Tok::End(depth as u8));
        pos = end + 1;
    }
}

/// Replies (code and text), the failure, and whether a reply is left open.
type ReplyRun = (Vec<(ReplyCode, Vec<u8>)>, Option<AnomalyKind>, bool);

/// Replies as docs/protocols.md states them: top-level netstrings, each a code
/// `K`, `Z` or `D` then text. An empty netstring, another first byte or
/// broken syntax ends the stream.
fn model_replies(stream: &[u8]) -> ReplyRun {
    let run = model_tokens(stream, |_, _| false);
    let mut replies = Vec::new();
    let mut open = false;
    let mut content: Vec<u8> = Vec::new();
    for tok in run.tokens {
        match tok {
            Tok::Start(0, _) => return (replies, Some(AnomalyKind::ReplyEmpty), true),
            Tok::Start(..) => {
                open = true;
                content.clear();
            }
            Tok::Data(d) => {
                if content.is_empty() && ReplyCode::from_byte(d[0]).is_none() {
                    return (replies, Some(AnomalyKind::ReplyBadCode), true);
                }
                content.extend_from_slice(&d);
            }
            Tok::End(_) => {
                open = false;
                let code = ReplyCode::from_byte(content[0]).unwrap();
                replies.push((code, content[1..].to_vec()));
            }
        }
    }
    (replies, run.error.map(|e| e.kind()), open)
}

/// A netstring of `inner` (bytes and the positions of the commas that end
/// netstrings inside it), with the positions shifted and its own comma added.
fn ns_marked((bytes, commas): (Vec<u8>, Vec<usize>)) -> (Vec<u8>, Vec<usize>) {
    let mut v = format!("{}:", bytes.len()).into_bytes();
    let at = v.len();
    let mut c: Vec<usize> = commas.iter().map(|p| p + at).collect();
    v.extend_from_slice(&bytes);
    v.push(b',');
    c.push(v.len() - 1);
    (v, c)
}

fn concat(parts: Vec<(Vec<u8>, Vec<usize>)>) -> (Vec<u8>, Vec<usize>) {
    let (mut v, mut c) = (Vec::new(), Vec::new());
    for (b, cs) in parts {
        c.extend(cs.iter().map(|p| p + v.len()));
        v.extend_from_slice(&b);
    }
    (v, c)
}

/// One package and the positions of every comma that ends a netstring in it.
fn package_marked(p: Protocol, m: &Msg) -> (Vec<u8>, Vec<usize>) {
    let flat = |b: &[u8]| ns_marked((b.to_vec(), Vec::new()));
    match p {
        Protocol::Qmtp => {
            let mut message = vec![if m.crlf { b'\r' } else { b'\n' }];
            message.extend_from_slice(&m.body);
            let list = concat(m.rcpts.iter().map(|r| flat(r)).collect());
            concat(vec![flat(&message), flat(&m.sender), ns_marked(list)])
        }
        Protocol::Qmqp => {
            let mut items = vec![flat(&m.body), flat(&m.sender)];
            items.extend(m.rcpts.iter().map(|r| flat(r)));
            ns_marked(concat(items))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The tokenizer equals the model on valid and broken streams alike.
    #[test]
    fn tokenizer_follows_the_definition(input in wire_bytes(), cuts in cuts()) {
        let got = tokenize(&input, &bounds(input.len(), &cuts));
        prop_assert_eq!(got, model_tokens(&input, tokenize_rule));
    }

    /// The reply parser equals the model, damaged streams included.
    #[test]
    fn replies_follow_the_definition(
        replies in vec((prop::sample::select(vec![b'K', b'Z', b'D']), vec(any::<u8>(), 0..40)), 1..6),
        edits in edits(),
        cut in proptest::option::of(any::<Index>()),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        for (code, text) in &replies {
            let mut r = vec![*code];
            r.extend_from_slice(text);
            stream.extend(ns(&r));
        }
        damage(&mut stream, &edits, &cut);
        let (want, failure, open) = model_replies(&stream);
        for (got, got_failure, got_open) in replies_at_once_and_chunked(&stream, &cuts) {
            let got: Vec<(ReplyCode, Vec<u8>)> =
                got.iter().map(|r| (r.code, r.text.bytes.clone())).collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(got_failure, failure);
            // A failed parser has no reply open to speak of.
            if failure.is_none() {
                prop_assert_eq!(got_open, open);
            }
        }
    }

    /// Any netstring of a request whose closing comma is replaced or, at
    /// the end of the stream, missing: the requests before it are whole,
    /// that request is malformed (or cut short) where the comma should be,
    /// and nothing after it is read.
    #[test]
    fn a_missing_comma_is_never_accepted(
        msgs in vec(msg(), 1..4),
        qmqp in any::<bool>(),
        which in (any::<Index>(), any::<Index>()),
        byte in prop::sample::select(b"x0:;\n\r9KD".to_vec()),
        cuts in cuts(),
    ) {
        let p = if qmqp { Protocol::Qmqp } else { Protocol::Qmtp };
        let mut stream = Vec::new();
        let mut marks = Vec::new();
        let mut commas = Vec::new();
        for m in &msgs {
            let (b, c) = package_marked(p, m);
            commas.push(c.iter().map(|x| x + stream.len()).collect::<Vec<_>>());
            let start = stream.len();
            stream.extend_from_slice(&b);
            marks.push((start, start + b.iter().position(|&x| x == b':').unwrap(), stream.len()));
        }
        let k = which.0.index(msgs.len());
        let at = commas[k][which.1.index(commas[k].len())];
        let whole = vec![0, stream.len()];
        let before = expected(p, &msgs[..k], &marks[..k], &whole);
        // Replaced.
        let mut bad = stream.clone();
        bad[at] = byte;
        for b in [bounds(bad.len(), &cuts), whole.clone()] {
            let got = parse_requests(p, &bad, &b);
            prop_assert_eq!(got.len(), k + 1);
            let ok: Vec<Summary> = without_ts(&got[..k]).iter().map(summary).collect();
            let want: Vec<Summary> = before.iter().map(|s| Summary { ts: (0, 0), ..s.clone() }).collect();
            prop_assert_eq!(ok, want);
            prop_assert_eq!(got[k].state, RequestState::Malformed(AnomalyKind::NetstringMissingComma));
            prop_assert_eq!(got[k].start_offset, marks[k].0 as u64);
            prop_assert_eq!(got[k].end_offset, at as u64 + 1);
        }
        // Missing at the very end: cut short, never complete.
        let last = *commas.last().unwrap().last().unwrap();
        let got = parse_requests(p, &stream[..last], &[0, last]);
        prop_assert_eq!(got.len(), msgs.len());
        prop_assert_eq!(got[msgs.len() - 1].state, RequestState::Truncated);
    }
}
