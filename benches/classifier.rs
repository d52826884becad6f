//! Parser throughput: QMTP packages, QMQP messages and server replies fed to
//! the incremental parsers in TCP-sized (1448-byte) and 1-byte chunks.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qmwatch_proto::reply::ReplyParser;
use qmwatch_proto::request::{RequestEvent, RequestParser};
use qmwatch_proto::{Protocol, Reply, RequestState};

/// Bytes per chunk of the realistic case: one full-size TCP segment payload.
const SEGMENT: usize = 1448;

fn ns(content: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", content.len()).into_bytes();
    v.extend_from_slice(content);
    v.push(b',');
    v
}

/// A mail message of exactly `len` bytes: headers, then text lines.
fn message(len: usize, crlf: bool, seed: usize) -> Vec<u8> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut m = Vec::with_capacity(len + 128);
    for h in [
        format!(
            "Received: from relay{seed}.example.org (relay{seed}.example.org [192.0.2.{}])",
            seed % 250
        ),
        format!(
            "Message-ID: <{}.{seed}.qmwatch@example.org>",
            1_700_000_000 + seed
        ),
        format!("From: sender{seed}@example.org"),
        "To: list@example.net".to_string(),
        format!("Subject: benchmark message {seed}"),
        String::new(),
    ] {
        m.extend_from_slice(h.as_bytes());
        m.extend_from_slice(eol);
    }
    let words = [
        "the",
        "quick",
        "mail",
        "queue",
        "relays",
        "every",
        "message",
        "to",
        "its",
        "recipients",
    ];
    let mut i = seed;
    while m.len() < len {
        let mut line = String::new();
        while line.len() < 70 {
            line.push_str(words[i % words.len()]);
            line.push(' ');
            i += 7;
        }
        m.extend_from_slice(line.trim_end().as_bytes());
        m.extend_from_slice(eol);
    }
    m.truncate(len);
    m
}

/// 4 KiB bodies with every fourth one 64 KiB.
fn body_len(i: usize) -> usize {
    if i % 4 == 3 {
        64 * 1024
    } else {
        4 * 1024
    }
}

fn recipients(i: usize) -> Vec<String> {
    (0..1 + i % 5)
        .map(|r| format!("user{r}.{i}@example.net"))
        .collect()
}

/// `n` pipelined QMTP packages, alternating LF and CRLF encodings.
fn qmtp_stream(n: usize, body: impl Fn(usize) -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let crlf = i % 2 == 1;
        let mut msg = vec![if crlf { b'\r' } else { b'\n' }];
        msg.extend(message(body(i), crlf, i));
        out.extend(ns(&msg));
        out.extend(ns(format!("sender{i}@example.org").as_bytes()));
        let list: Vec<u8> = recipients(i)
            .iter()
            .flat_map(|r| ns(r.as_bytes()))
            .collect();
        out.extend(ns(&list));
    }
    out
}

/// `n` QMQP messages back to back (one parser handles them in sequence).
fn qmqp_stream(n: usize, body: impl Fn(usize) -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut inner = ns(&message(body(i), false, i));
        inner.extend(ns(format!("sender{i}@example.org").as_bytes()));
        for r in recipients(i) {
            inner.extend(ns(r.as_bytes()));
        }
        out.extend(ns(&inner));
    }
    out
}

/// `n` replies: mostly K, some D (qmail's relay refusal) and Z.
fn reply_stream(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let text = match i % 10 {
            7 => "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)".to_string(),
            9 => "Zqq temporary problem (#4.3.0)".to_string(),
            _ => format!("Kok {} qp {}", 1_795_238_274 + i, 15_868 + i),
        };
        out.extend(ns(text.as_bytes()));
    }
    out
}

fn parse_requests(protocol: Protocol, data: &[u8], chunk: usize, out: &mut Vec<RequestEvent>) {
    let mut parser = RequestParser::new(protocol, 0);
    for c in data.chunks(chunk) {
        parser.feed(c, 1, out);
    }
}

fn parse_replies(data: &[u8], chunk: usize, out: &mut Vec<Reply>) {
    let mut parser = ReplyParser::new();
    for c in data.chunks(chunk) {
        parser.feed(c, 1, None, out);
    }
}

/// Checks once, untimed, that the stream parses into `expected` complete requests.
fn check_requests(protocol: Protocol, data: &[u8], chunk: usize, expected: usize) {
    let mut out = Vec::new();
    parse_requests(protocol, data, chunk, &mut out);
    assert_eq!(out.len(), expected, "{protocol:?} in {chunk}-byte chunks");
    for RequestEvent::Request(r) in &out {
        assert_eq!(r.state, RequestState::Complete, "{protocol:?}: {r:?}");
    }
}

fn check_replies(data: &[u8], chunk: usize, expected: usize) {
    let mut out = Vec::new();
    let mut parser = ReplyParser::new();
    for c in data.chunks(chunk) {
        assert_eq!(parser.feed(c, 1, None, &mut out), None);
    }
    assert_eq!(out.len(), expected, "replies in {chunk}-byte chunks");
}

fn bench_requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("classifier");
    let cases = [
        // (name, protocol, stream, requests, chunk)
        (
            "qmtp",
            Protocol::Qmtp,
            qmtp_stream(50, body_len),
            50,
            SEGMENT,
        ),
        ("qmtp", Protocol::Qmtp, qmtp_stream(8, |_| 4096), 8, 1),
        (
            "qmqp",
            Protocol::Qmqp,
            qmqp_stream(50, body_len),
            50,
            SEGMENT,
        ),
        ("qmqp", Protocol::Qmqp, qmqp_stream(8, |_| 4096), 8, 1),
    ];
    for (name, protocol, data, expected, chunk) in &cases {
        check_requests(*protocol, data, *chunk, *expected);
        group.throughput(Throughput::Bytes(data.len() as u64));
        let mut out = Vec::with_capacity(*expected);
        group.bench_function(BenchmarkId::new(*name, format!("chunk{chunk}")), |b| {
            b.iter(|| {
                out.clear();
                parse_requests(*protocol, black_box(data), *chunk, &mut out);
                black_box(out.len())
            })
        });
    }

    let replies = [
        (reply_stream(500), 500, SEGMENT),
        (reply_stream(100), 100, 1),
    ];
    for (data, expected, chunk) in &replies {
        check_replies(data, *chunk, *expected);
        group.throughput(Throughput::Bytes(data.len() as u64));
        let mut out = Vec::with_capacity(*expected);
        group.bench_function(BenchmarkId::new("reply", format!("chunk{chunk}")), |b| {
            b.iter(|| {
                out.clear();
                parse_replies(black_box(data), *chunk, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_requests);
criterion_main!(benches);
