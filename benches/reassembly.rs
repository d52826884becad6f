//! TCP reassembly and flow-table throughput, in packets per second.
//!
//! - `stream/*`: one direction's [`Stream::segment`] with 1448-byte segments
//!   in order, with every pair swapped, and with every segment followed by a
//!   retransmission shifted by half a segment (consistent overlaps).
//! - `flow_table/short_http`: [`FlowTable::segment`] over thousands of short
//!   non-QMTP connections: the reject fast path and table churn.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qmwatch_sensor::flow::reassembly::{
    Budget, Delivery, ReassemblyConfig, Stream, StreamEvents, StreamSegment,
};
use qmwatch_sensor::flow::{FlowConfig, FlowTable};
use qmwatch_wire::decode::{addr_from_ip, Segment, TCP_ACK, TCP_FIN, TCP_SYN};

const MSS: usize = 1448;
/// Segments per stream case (about 2.8 MiB of payload).
const SEGMENTS: usize = 2000;
/// Initial sequence number: close to the wrap, so the stream crosses it.
const ISN: u32 = 0xffff_f000;

/// One packet of a stream case: sequence number and payload range.
#[derive(Clone, Copy)]
struct Piece {
    seq: u32,
    from: usize,
    to: usize,
}

fn piece(from: usize, to: usize) -> Piece {
    Piece {
        seq: ISN.wrapping_add(1).wrapping_add(from as u32),
        from,
        to,
    }
}

fn in_order() -> Vec<Piece> {
    (0..SEGMENTS)
        .map(|i| piece(i * MSS, (i + 1) * MSS))
        .collect()
}

/// Segments 1, 0, 3, 2, ...: every odd segment is held, then drained.
fn swapped_pairs() -> Vec<Piece> {
    let mut v = in_order();
    for pair in v.chunks_mut(2) {
        pair.reverse();
    }
    v
}

/// Each segment followed by a retransmission starting half-way into it, so
/// every packet after the first repeats half of the previous one.
fn half_overlaps() -> Vec<Piece> {
    let total = SEGMENTS * MSS;
    let mut v = Vec::new();
    for i in 0..SEGMENTS {
        v.push(piece(i * MSS, (i + 1) * MSS));
        let from = i * MSS + MSS / 2;
        if from + MSS <= total {
            v.push(piece(from, from + MSS));
        }
    }
    v
}

/// Runs one stream over `pieces`; returns delivered bytes and the events.
fn run_stream(data: &[u8], pieces: &[Piece], cfg: &ReassemblyConfig) -> (u64, StreamEvents) {
    let mut stream = Stream::default();
    stream.syn(ISN);
    let mut budget = Budget::new(64 << 20);
    let mut ev = StreamEvents::default();
    let mut delivered = 0u64;
    let mut deliver = |d: Delivery<'_>| match d {
        Delivery::Data { bytes, .. } => delivered += bytes.len() as u64,
        Delivery::Gap { len, .. } | Delivery::Skip { len, .. } => delivered += len,
    };
    for p in pieces {
        let payload = &data[p.from..p.to];
        stream.segment(
            StreamSegment::data(p.seq, payload),
            cfg,
            &mut budget,
            &mut ev,
            &mut deliver,
        );
    }
    (black_box(delivered), ev)
}

fn bench_stream(c: &mut Criterion) {
    let data: Vec<u8> = (0..SEGMENTS * MSS)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let cfg = ReassemblyConfig::default();
    let mut group = c.benchmark_group("reassembly");
    for (name, pieces) in [
        ("in_order", in_order()),
        ("swapped_pairs", swapped_pairs()),
        ("half_overlap", half_overlaps()),
    ] {
        // Once, untimed: everything arrives, nothing is lost or conflicting.
        let (delivered, ev) = run_stream(&data, &pieces, &cfg);
        assert_eq!(delivered, data.len() as u64, "{name}");
        assert_eq!(
            (ev.gaps, ev.overlaps_conflicting, ev.cap_gaps),
            (0, 0, 0),
            "{name}"
        );
        if name == "half_overlap" {
            assert_eq!(ev.overlaps_consistent, pieces.len() as u64 - 1, "{name}");
        }
        group.throughput(Throughput::Elements(pieces.len() as u64));
        group.bench_function(BenchmarkId::new("stream", name), |b| {
            b.iter(|| run_stream(black_box(&data), &pieces, &cfg))
        });
    }
    group.finish();
}

/// One packet of the flow-table case.
struct Packet {
    seg: Segment,
    payload: &'static [u8],
}

const REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<p>hello</p>\n";
/// Short connections in the flow-table case.
const FLOWS: u32 = 8192;

/// SYN, SYN-ACK, ACK, request, response, FIN, FIN for `FLOWS` distinct
/// 5-tuples, one connection starting every 2 ms (so closed entries age out
/// of the 5 s linger during the run), interleaved by time.
fn short_flows() -> Vec<Packet> {
    let mut v = Vec::new();
    for i in 0..FLOWS {
        let client = IpAddr::V4(Ipv4Addr::new(
            10,
            1 + (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ));
        let server = IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 200) as u8 + 1));
        let sport = 32_768 + (i % 28_000) as u16;
        let dport = [80, 443, 8080][i as usize % 3];
        let (cisn, sisn) = (
            i.wrapping_mul(2_654_435_761),
            i.wrapping_mul(40_503) ^ 0x5555,
        );
        let t0 = u64::from(i) * 2_000_000;
        let rq = REQUEST.len() as u32;
        let rs = RESPONSE.len() as u32;
        // (from client, seq, ack, flags, payload)
        let c = |n: u32| cisn.wrapping_add(n);
        let s = |n: u32| sisn.wrapping_add(n);
        let steps: [(bool, u32, u32, u8, &'static [u8]); 7] = [
            (true, c(0), 0, TCP_SYN, b""),
            (false, s(0), c(1), TCP_SYN | TCP_ACK, b""),
            (true, c(1), s(1), TCP_ACK, b""),
            (true, c(1), s(1), TCP_ACK, REQUEST),
            (false, s(1), c(1 + rq), TCP_ACK, RESPONSE),
            (true, c(1 + rq), s(1 + rs), TCP_ACK | TCP_FIN, b""),
            (false, s(1 + rs), c(2 + rq), TCP_ACK | TCP_FIN, b""),
        ];
        for (k, (from_client, seq, ack, flags, payload)) in steps.into_iter().enumerate() {
            let (src, dst, sp, dp) = if from_client {
                (client, server, sport, dport)
            } else {
                (server, client, dport, sport)
            };
            v.push(Packet {
                seg: Segment {
                    ts: t0 + k as u64 * 1_000_000,
                    src: addr_from_ip(src),
                    dst: addr_from_ip(dst),
                    v4: true,
                    sport: sp,
                    dport: dp,
                    seq,
                    ack,
                    flags,
                    payload_len: payload.len() as u32,
                    tcp_header_len: 20,
                    ..Segment::default()
                },
                payload,
            });
        }
    }
    v.sort_by_key(|p| p.seg.ts);
    v
}

/// Feeds every packet to a fresh table, expiring every 256 packets as the
/// pipeline does per batch, then finishes it.
fn run_table(packets: &[Packet]) -> FlowTable {
    let mut table = FlowTable::new(FlowConfig::default());
    let mut out = Vec::new();
    for batch in packets.chunks(256) {
        for p in batch {
            table.segment(&p.seg, p.payload, &mut out);
        }
        if let Some(last) = batch.last() {
            table.expire(last.seg.ts, &mut out);
        }
    }
    table.finish_all(&mut out);
    assert!(out.is_empty(), "non-QMTP flows must report nothing");
    table
}

fn bench_flow_table(c: &mut Criterion) {
    let packets = short_flows();
    let s = run_table(&packets).stats;
    let n = u64::from(FLOWS);
    assert_eq!(
        (
            s.flows_created,
            s.flows_rejected,
            s.flows_candidate,
            s.flows_closed
        ),
        (n, n, 0, n)
    );
    assert_eq!(s.packets_without_flow, 0);
    let mut group = c.benchmark_group("reassembly");
    group.throughput(Throughput::Elements(packets.len() as u64));
    group.bench_function("flow_table/short_http", |b| {
        b.iter(|| black_box(run_table(black_box(&packets)).len()))
    });
    group.finish();
}

criterion_group!(benches, bench_stream, bench_flow_table);
criterion_main!(benches);
