//! The fuzz harnesses: one function per cargo-fuzz target, taking the raw
//! fuzzer input. Shared, through `#[path]`, by the targets in
//! `fuzz/fuzz_targets/` and by the regression test `tests/fuzz_regressions.rs`,
//! so a saved crasher is replayed through exactly the code and the checks
//! that found it. Only qmwatch's public API is used.
//!
//! Every harness must accept any input: a malformed input is the point, and
//! the only failures are panics inside qmwatch or a failed assertion here.
#![allow(dead_code)]

use std::io::{self, Cursor, Read};
use std::net::SocketAddr;

use qmwatch_proto::netstring::{NetstringError, Token, Tokenizer};
use qmwatch_proto::reply::ReplyParser;
use qmwatch_proto::request::{RequestEvent, RequestParser};
use qmwatch_proto::session::{Session, Status};
use qmwatch_proto::sniff::{Sniffer, Verdict};
use qmwatch_proto::{
    AnomalyKind, Endpoints, Protocol, Record, Reply, Transaction, MAX_FIELD_BYTES, MAX_RECIPIENTS,
    MESSAGE_PREFIX_BYTES,
};
use qmwatch_sensor::flow::reassembly::{
    Budget, Delivery, ReassemblyConfig, Stream, StreamEvents, StreamSegment,
};
use qmwatch_sensor::flow::{ChecksumMode, FlowConfig, FlowTable};
use qmwatch_wire::capture::file::{CaptureReader, ReaderStats, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE};
use qmwatch_wire::capture::Block;
use qmwatch_wire::decode::defrag::DefragConfig;
use qmwatch_wire::decode::{
    addr_from_ip, supported_link_type, Decoded, Decoder, Segment, CSUM_FIELD_PSEUDO, CSUM_SUMMED,
    CSUM_SUM_OK, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG,
};

/// Splits `n` bytes off the front of `data`.
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn byte(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

/// The `protocol_chunks` input format, shared with the `suricata_flow`
/// target: `[opts][parser][k][schedule: k bytes][client_len u16 LE][client][server]`.
pub struct ChunksInput<'a> {
    pub opts: u8,
    pub parser: u8,
    pub schedule: &'a [u8],
    pub client: &'a [u8],
    pub server: &'a [u8],
}

pub fn chunks_input(data: &[u8]) -> ChunksInput<'_> {
    let mut input = data;
    let opts = byte(&mut input);
    let parser = byte(&mut input);
    let k = usize::from(byte(&mut input));
    let schedule = take(&mut input, k);
    let len = take(&mut input, 2);
    let client_len = usize::from(len.first().copied().unwrap_or(0))
        | usize::from(len.get(1).copied().unwrap_or(0)) << 8;
    let client = take(&mut input, client_len);
    ChunksInput {
        opts,
        parser,
        schedule,
        client,
        server: input,
    }
}

// ------------------------------------------------------------ decode_frame

/// The link types [`supported_link_type`] accepts, selected by the input's
/// first byte.
pub const LINK_TYPES: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

/// Where frames sit in their buffer (odd on purpose), and guard bytes after.
const FRAME_START: usize = 5;
const FRAME_GUARD: usize = 3;

/// `decode_frame` target.
///
/// Input: `sel`, then the frame(s). `sel & 0x0f` (mod 10) picks the link
/// type; bit 6 selects small IP-defragmentation caps; bit 7 makes the rest a
/// sequence of frames `[len u16 LE][cut u8][dt u8][len bytes]` (cut: bytes
/// on the wire beyond the captured ones; dt: time step in 250 ms), fed to
/// one `Decoder` so that IP fragments meet across calls. Without bit 7 the
/// rest is one whole frame.
///
/// Checks: every segment's payload and TCP header lie inside its frame (or
/// inside the reassembled datagram), counters add up.
pub fn decode_frame(data: &[u8]) {
    let mut input = data;
    let sel = byte(&mut input);
    let link_type = LINK_TYPES[usize::from(sel & 0x0f) % LINK_TYPES.len()];
    assert!(supported_link_type(link_type));
    let cfg = if sel & 0x40 != 0 {
        DefragConfig {
            max_datagrams: 3,
            max_fragments_per_datagram: 6,
            max_datagram_bytes: 2048,
            max_datagram_memory: 4096,
            max_total_memory: 8192,
            timeout_nanos: 30_000_000_000,
        }
    } else {
        DefragConfig::default()
    };
    let mut frames: Vec<(&[u8], u32, u64)> = Vec::new();
    if sel & 0x80 == 0 {
        frames.push((input, input.len() as u32, 0));
    } else {
        while input.len() >= 4 && frames.len() < 256 {
            let head = take(&mut input, 4);
            let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let frame = take(&mut input, len);
            frames.push((
                frame,
                frame.len() as u32 + u32::from(head[2]),
                u64::from(head[3]),
            ));
        }
    }
    let mut dec = Decoder::new(cfg);
    let mut ts: u64 = 1_700_000_000_000_000_000;
    for (frame, wire_len, dt) in frames {
        ts += dt * 250_000_000;
        let mut buf = vec![0xa5; FRAME_START];
        buf.extend_from_slice(frame);
        buf.extend_from_slice(&[0x5a; FRAME_GUARD]);
        let before = dec.stats.clone();
        let out = dec.decode(ts, link_type, frame, FRAME_START as u32, wire_len);
        assert_eq!(dec.stats.frames, before.frames + 1);
        match out {
            Decoded::Segment(seg) => {
                assert!(!seg.reassembled);
                assert_eq!(dec.stats.tcp_segments, before.tcp_segments + 1);
                let hdr = usize::from(seg.tcp_header_len);
                assert!((20..=60).contains(&hdr), "TCP header of {hdr} bytes");
                let start = seg.payload_start as usize;
                let end = start + seg.payload_len as usize;
                assert!(
                    start >= FRAME_START + hdr && end <= FRAME_START + frame.len(),
                    "payload {start}..{end} (header {hdr}) outside the frame at \
                     {FRAME_START}..{}",
                    FRAME_START + frame.len()
                );
                let block = Block::new(buf.clone(), None);
                assert_eq!(block.payload(&seg), &buf[start..end]);
                let tcp = block.tcp_segment(&seg);
                assert_eq!(tcp, &buf[start - hdr..end]);
                let _ = seg.checksum_ok(tcp);
                let _ = (
                    seg.src_socket(),
                    seg.dst_socket(),
                    qmwatch_sensor::flow::flow_tag(&seg),
                );
            }
            Decoded::Reassembled(seg, bytes) => {
                assert!(seg.reassembled);
                assert_eq!(seg.missing, 0);
                assert_eq!(dec.stats.tcp_segments, before.tcp_segments + 1);
                let hdr = usize::from(seg.tcp_header_len);
                assert!((20..=60).contains(&hdr), "TCP header of {hdr} bytes");
                let start = seg.payload_start as usize;
                let end = start + seg.payload_len as usize;
                assert!(start >= hdr && end <= bytes.len());
                let mut block = Block::new(buf, None);
                block.extra = bytes.clone();
                assert_eq!(block.payload(&seg), &bytes[start..end]);
                let tcp = block.tcp_segment(&seg);
                assert_eq!(tcp, &bytes[start - hdr..end]);
                let _ = seg.checksum_ok(tcp);
            }
            Decoded::Skip(s) => {
                assert_eq!(dec.stats.skipped(s), before.skipped(s) + 1);
                assert_eq!(dec.stats.tcp_segments, before.tcp_segments);
            }
        }
        let skipped: u64 = dec.stats.skipped.iter().sum();
        assert_eq!(dec.stats.tcp_segments + skipped, dec.stats.frames);
        let d = dec.defrag_stats();
        assert!(d.datagrams_completed <= d.fragments);
        if dt & 1 == 1 {
            dec.expire(ts);
        }
    }
}

// ---------------------------------------------------------- capture_reader

/// A reader that hands out the file in short reads of the sizes the input
/// chose (a size of 0 is one `Interrupted` error, which the reader must
/// retry), and optionally fails with an I/O error at a given offset.
struct ShortReads<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: &'a [u8],
    turn: usize,
    interrupted: bool,
    fail_at: Option<usize>,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.fail_at.is_some_and(|f| self.pos >= f) {
            return Err(io::Error::other("injected read error"));
        }
        let size = if self.sizes.is_empty() {
            usize::MAX
        } else {
            let s = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            if s == 0 && !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            usize::from(s.max(1))
        };
        self.interrupted = false;
        let limit = self.fail_at.unwrap_or(usize::MAX);
        let n = size
            .min(buf.len())
            .min(self.data.len() - self.pos)
            .min(limit - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn every_link_type(_: u32) -> bool {
    true
}

/// One delivered record: its fields (but where it sits in the block, which
/// depends on the block size) and its bytes.
type Essence = (u64, u32, u32, u32, u32, Vec<u8>);

/// What reading a whole file gave.
struct ReadOutcome {
    records: Vec<Essence>,
    /// Error of `CaptureReader::new` or of a `next_block` call.
    error: Option<String>,
    error_offset: Option<u64>,
    stats: Option<ReaderStats>,
    consumed: u64,
}

/// Reads a whole capture, checking the `next_block` contract on every call.
fn read_capture<R: Read>(
    reader: R,
    block_size: usize,
    supported: fn(u32) -> bool,
    file_len: usize,
) -> ReadOutcome {
    let mut rd = match CaptureReader::new("fuzz.pcap", reader, supported) {
        Ok(rd) => rd,
        Err(e) => {
            assert!(e.offset <= file_len as u64, "{e}");
            return ReadOutcome {
                records: Vec::new(),
                error: Some(e.to_string()),
                error_offset: Some(e.offset),
                stats: None,
                consumed: 0,
            };
        }
    };
    rd.set_block_size(block_size);
    let mut block = Vec::new();
    let mut recs = Vec::new();
    let mut out = Vec::new();
    let mut error = None;
    let mut error_offset = None;
    // Every call but the last reads or frames something: more calls than
    // bytes (plus a few) is a reader that stopped making progress.
    let mut calls_left = file_len + 8;
    loop {
        assert!(calls_left > 0, "next_block makes no progress");
        calls_left -= 1;
        recs.clear();
        let step = rd.next_block(&mut block, &mut recs);
        for r in &recs {
            let start = r.data_start as usize;
            let end = start + r.caplen as usize;
            assert!(
                end <= block.len(),
                "record {start}..{end} outside the block of {} bytes",
                block.len()
            );
            assert!(supported(r.link_type));
            out.push((
                r.ts_nanos,
                r.link_type,
                r.caplen,
                r.origlen,
                r.interface,
                block[start..end].to_vec(),
            ));
        }
        match step {
            Ok(true) => {}
            Ok(false) => {
                assert!(recs.is_empty(), "Ok(false) came with records");
                assert_eq!(
                    rd.bytes_consumed(),
                    file_len as u64,
                    "clean end before the end"
                );
                break;
            }
            Err(e) => {
                assert!(recs.is_empty(), "an error came with records");
                assert!(e.offset <= file_len as u64, "{e}");
                error_offset = Some(e.offset);
                error = Some(e.to_string());
                break;
            }
        }
    }
    // After the end, or an error, the reader stays finished.
    recs.clear();
    assert!(matches!(rd.next_block(&mut block, &mut recs), Ok(false)));
    assert!(recs.is_empty());
    let stats = rd.stats().clone();
    assert_eq!(stats.records, out.len() as u64);
    assert!(stats.bytes_read <= file_len as u64);
    assert!(rd.bytes_consumed() <= file_len as u64);
    ReadOutcome {
        records: out,
        error,
        error_offset,
        stats: Some(stats),
        consumed: rd.bytes_consumed(),
    }
}

fn same_stats(a: &ReaderStats, b: &ReaderStats) -> bool {
    a.records == b.records
        && a.skipped_unsupported_link == b.skipped_unsupported_link
        && a.skipped_unknown_blocks == b.skipped_unknown_blocks
        && a.skipped_bad_interface == b.skipped_bad_interface
        && a.zero_length_packets == b.zero_length_packets
        && a.truncated_packets == b.truncated_packets
}

/// `capture_reader` target.
///
/// Input: `[bs][mode][(fail_lo fail_hi)][sizes...][file]`: block size
/// `64 + 3·bs` bytes; `mode & 0x0f` read sizes follow; bit 4: every link
/// type is supported (not only the decoder's); bit 5: an I/O error at
/// offset `fail` (two bytes after `mode`).
///
/// Checks: never a panic; every record lies inside its block; the
/// `next_block` contract (records before an error are delivered first,
/// `Ok(false)` and errors come alone, a clean end consumed the whole file,
/// finished stays finished); progress; and the same records, counters and
/// error as one plain read with the default 1 MiB block (a prefix of them
/// when an I/O error cut the read).
pub fn capture_reader(data: &[u8]) {
    let mut input = data;
    let block_size = MIN_BLOCK_SIZE + 3 * usize::from(byte(&mut input));
    let mode = byte(&mut input);
    let fail_at = if mode & 0x20 != 0 {
        let f = take(&mut input, 2);
        Some(
            usize::from(f.first().copied().unwrap_or(0))
                | usize::from(f.get(1).copied().unwrap_or(0)) << 8,
        )
    } else {
        None
    };
    let sizes = take(&mut input, usize::from(mode & 0x0f));
    let file = input;
    // An error at or past the end would never be reached by a reader that
    // stops at EOF (and would make an empty file fail differently).
    let fail_at = fail_at.filter(|&f| f < file.len());
    let supported: fn(u32) -> bool = if mode & 0x10 != 0 {
        every_link_type
    } else {
        supported_link_type
    };
    let short = ShortReads {
        data: file,
        pos: 0,
        sizes,
        turn: 0,
        interrupted: false,
        fail_at,
    };
    let got = read_capture(short, block_size, supported, file.len());
    let plain = read_capture(Cursor::new(file), DEFAULT_BLOCK_SIZE, supported, file.len());
    if fail_at.is_some() {
        assert!(got.records.len() <= plain.records.len());
        assert!(
            got.records == plain.records[..got.records.len()],
            "records before the injected error differ"
        );
        return;
    }
    assert!(
        got.records == plain.records,
        "records depend on the block size"
    );
    assert_eq!(got.error, plain.error, "errors depend on the block size");
    assert_eq!(got.error_offset, plain.error_offset);
    assert_eq!(got.consumed, plain.consumed);
    match (&got.stats, &plain.stats) {
        (Some(a), Some(b)) => assert!(same_stats(a, b), "{a:?} != {b:?}"),
        (None, None) => {}
        _ => panic!("one read opened the file, the other did not"),
    }
}

// --------------------------------------------------------- protocol_chunks

/// One step of a two-direction byte stream: `dir` 0 is the first (client)
/// stream, 1 the second (server); `lost` bytes were not captured.
#[derive(Clone, Copy, Debug)]
struct Piece {
    dir: usize,
    from: usize,
    to: usize,
    lost: bool,
}

/// Cuts the two streams into pieces following `schedule`, cycled: a byte
/// `b` is direction `b >> 7`, then `(b & 0x60) == 0x60` loses
/// `(b & 0x1f) + 1` bytes, anything else is a chunk of `(b & 0x7f) + 1`
/// bytes. An empty schedule gives each stream whole, first then second.
fn pieces(lens: [usize; 2], schedule: &[u8]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = [0usize; 2];
    if schedule.is_empty() {
        for (dir, &len) in lens.iter().enumerate() {
            if len > 0 {
                out.push(Piece {
                    dir,
                    from: 0,
                    to: len,
                    lost: false,
                });
            }
        }
        return out;
    }
    while at != lens {
        let mut progress = false;
        for &b in schedule {
            let dir = usize::from(b >> 7);
            let left = lens[dir] - at[dir];
            if left == 0 {
                continue;
            }
            let (n, lost) = if b & 0x60 == 0x60 {
                (usize::from(b & 0x1f) + 1, true)
            } else {
                (usize::from(b & 0x7f) + 1, false)
            };
            let n = n.min(left);
            out.push(Piece {
                dir,
                from: at[dir],
                to: at[dir] + n,
                lost,
            });
            at[dir] += n;
            progress = true;
        }
        if !progress {
            // The schedule names only finished directions: the rest whole.
            for dir in 0..2 {
                if at[dir] < lens[dir] {
                    out.push(Piece {
                        dir,
                        from: at[dir],
                        to: lens[dir],
                        lost: false,
                    });
                    at[dir] = lens[dir];
                }
            }
        }
    }
    out
}

/// The same stream with adjacent data pieces of one direction merged
/// (nothing of the other direction between them, no loss between them).
fn coalesced(pieces: &[Piece]) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for p in pieces {
        if let Some(last) = out.last_mut() {
            if !p.lost && !last.lost && last.dir == p.dir && last.to == p.from {
                last.to = p.to;
                continue;
            }
        }
        out.push(*p);
    }
    out
}

/// One direction's pieces, merged as far as that direction alone allows.
fn one_direction(pieces: &[Piece], dir: usize) -> Vec<Piece> {
    let mine: Vec<Piece> = pieces.iter().filter(|p| p.dir == dir).copied().collect();
    coalesced(&mine)
}

const TS: u64 = 1_700_000_000_000_000_000;

#[derive(Debug, PartialEq, Eq)]
struct RequestRun {
    events: Vec<RequestEvent>,
    failed: bool,
    offset: u64,
    idle_before_finish: bool,
}

fn run_requests(protocol: Protocol, stream: &[u8], pieces: &[Piece], origin: u64) -> RequestRun {
    let mut p = RequestParser::new(protocol, origin);
    let mut events = Vec::new();
    for piece in pieces {
        if piece.lost {
            p.gap((piece.to - piece.from) as u64, TS, &mut events);
        } else {
            p.feed(&stream[piece.from..piece.to], TS, &mut events);
        }
    }
    let idle_before_finish = p.idle();
    p.finish(TS + 1, &mut events);
    assert!(p.failed());
    assert_eq!(p.protocol(), protocol);
    RequestRun {
        events,
        failed: p.failed(),
        offset: p.offset(),
        idle_before_finish,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ReplyRun {
    replies: Vec<Reply>,
    failures: Vec<AnomalyKind>,
    failed: Option<AnomalyKind>,
    in_reply: bool,
}

fn run_replies(stream: &[u8], pieces: &[Piece]) -> ReplyRun {
    let mut p = ReplyParser::new();
    let mut replies = Vec::new();
    let mut failures = Vec::new();
    for piece in pieces {
        let f = if piece.lost {
            p.gap((piece.to - piece.from) as u64)
        } else {
            p.feed(&stream[piece.from..piece.to], TS, Some(7), &mut replies)
        };
        failures.extend(f);
    }
    assert!(
        failures.len() <= 1,
        "a failure reported twice: {failures:?}"
    );
    ReplyRun {
        replies,
        failures,
        failed: p.failed(),
        in_reply: p.in_reply(),
    }
}

/// Token stream with content concatenated, so that it does not depend on
/// how the input was cut.
#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Start(u64, u8),
    Data(Vec<u8>),
    End(u8),
    Gap(u64, Result<(), NetstringError>),
    Enter(Result<(), NetstringError>),
    Error(NetstringError),
}

/// Tokenizes, entering every netstring whose depth bit is set in `enter`.
fn run_tokens(
    stream: &[u8],
    pieces: &[Piece],
    enter: u8,
) -> (Vec<Tok>, Option<NetstringError>, u8) {
    let mut t = Tokenizer::new();
    let mut out: Vec<Tok> = Vec::new();
    'pieces: for piece in pieces {
        if piece.lost {
            let n = (piece.to - piece.from) as u64;
            out.push(Tok::Gap(n, t.gap(n)));
            continue;
        }
        let mut input = &stream[piece.from..piece.to];
        while let Some(step) = t.next(&mut input) {
            match step {
                Ok(Token::Start { len, depth }) => {
                    out.push(Tok::Start(len, depth));
                    if enter & (1 << depth.min(7)) != 0 {
                        out.push(Tok::Enter(t.enter()));
                    }
                }
                Ok(Token::Data(d)) => {
                    assert!(!d.is_empty(), "empty Data token");
                    match out.last_mut() {
                        Some(Tok::Data(v)) => v.extend_from_slice(d),
                        _ => out.push(Tok::Data(d.to_vec())),
                    }
                }
                Ok(Token::End { depth }) => out.push(Tok::End(depth)),
                Err(e) => {
                    out.push(Tok::Error(e));
                    // Every later call repeats the error.
                    assert_eq!(t.next(&mut input), Some(Err(e)));
                    break 'pieces;
                }
            }
        }
        assert!(
            input.is_empty(),
            "the tokenizer stopped before the end of its input"
        );
    }
    (out, t.error(), t.depth())
}

/// Sniffs the stream's start (up to its first lost bytes).
fn run_sniffer(stream: &[u8], pieces: &[Piece]) -> (Option<Verdict>, Vec<u8>) {
    let mut s = Sniffer::new();
    for piece in pieces {
        if piece.lost {
            break;
        }
        let chunk = &stream[piece.from..piece.to];
        let (v, used) = s.feed(chunk);
        assert!(used <= chunk.len());
        if v.is_some() {
            break;
        }
    }
    (s.verdict(), s.stashed().to_vec())
}

/// Checks what a session may emit, whatever it was fed.
/// A transaction's fields are bounded and its reply codes add up.
fn check_transaction(t: &Transaction) {
    let c = t.codes;
    match &t.request {
        Some(req) => {
            assert_eq!(t.replies.len(), req.recipients.len());
            assert_eq!(
                c.k + c.z + c.d + c.missing,
                req.recipient_count,
                "codes do not add up to the recipients: {t:?}"
            );
            assert!(req.recipients.len() <= MAX_RECIPIENTS);
            assert!(req.recipients.len() as u64 <= req.recipient_count);
            assert!(req.message_prefix.len() <= MESSAGE_PREFIX_BYTES);
            assert!(req.start_offset <= req.end_offset);
            for f in req.recipients.iter().chain(req.sender.iter()) {
                assert!(f.bytes.len() <= MAX_FIELD_BYTES);
                assert!(f.bytes.len() as u64 <= f.wire_len);
            }
        }
        None => {
            assert!(t.replies.is_empty());
            assert!(t.reply.is_some());
            assert_eq!(c.k + c.z + c.d, 1);
        }
    }
    for reply in t.replies.iter().flatten().chain(t.reply.iter()) {
        assert!(reply.text.bytes.len() <= MAX_FIELD_BYTES);
    }
}

fn check_records(records: &[Record]) {
    let mut services = 0;
    let mut index = 0;
    for r in records {
        match r {
            Record::Service { .. } => services += 1,
            Record::Transaction(t) => {
                index += 1;
                assert_eq!(t.index, index, "transactions out of order");
                check_transaction(t);
            }
            Record::Anomaly(a) => {
                // Anomalies of an unconfirmed session are held, and dropped
                // if it never is; only the wrong-protocol report stands alone.
                assert!(
                    services > 0 || a.kind.is_wrong_protocol(),
                    "anomaly {} before the session was confirmed",
                    a.kind
                );
            }
        }
    }
    assert!(services <= 1, "{services} service records for one session");
}

/// Feeds a session with `pieces` of the two streams, as the flow layer does.
fn run_session(streams: [&[u8]; 2], pieces: &[Piece], opts: u8) -> Vec<Record> {
    let port = [209, 628, 2209, 25][usize::from(opts & 3)];
    let client: SocketAddr = "192.0.2.7:40001".parse().unwrap();
    let server = SocketAddr::new("198.51.100.25".parse().unwrap(), port);
    let client_dir = match (opts >> 2) & 3 {
        0 | 3 => Some(0),
        1 => None,
        _ => Some(1),
    };
    let midstream = opts & 0x10 != 0;
    let addrs = if client_dir == Some(1) {
        [server, client]
    } else {
        [client, server]
    };
    let mut s = Session::new(addrs, client_dir, midstream);
    if opts & 0x20 != 0 {
        s.set_known_server();
    }
    let mut out = Vec::new();
    let mut offset = [0u64; 2];
    let mut rejected = false;
    for p in pieces {
        let n = (p.to - p.from) as u64;
        let before = out.len();
        let status = if p.lost {
            s.gap(p.dir, n, TS, &mut out)
        } else {
            let peer_ack = Some(offset[1 - p.dir]);
            s.data(
                p.dir,
                offset[p.dir],
                &streams[p.dir][p.from..p.to],
                TS,
                peer_ack,
                &mut out,
            )
        };
        offset[p.dir] += n;
        if rejected {
            assert_eq!(status, Status::Reject, "a rejected session came back");
            assert_eq!(out.len(), before, "a rejected session emitted records");
        }
        if status == Status::Reject {
            // The flow layer frees the session here; keep feeding it to
            // check that it stays rejected and silent.
            rejected = true;
        }
    }
    if opts & 0x40 != 0 {
        if let Some(c) = s.client_dir() {
            s.end_of_direction(c, TS + 1, &mut out);
        }
    }
    s.finish(TS + 2, &mut out);
    let n = out.len();
    s.finish(TS + 3, &mut out);
    assert_eq!(out.len(), n, "a finished session emitted more");
    if rejected {
        assert!(out.is_empty(), "a rejected session emitted records");
    }
    check_records(&out);
    out
}

/// Records with the wrong-protocol report's detail left out: its sample of
/// the client's first bytes is taken from the segment that showed them, so
/// it depends on segmentation (a known limitation, not checked here).
fn comparable(records: Vec<Record>) -> Vec<Record> {
    records
        .into_iter()
        .map(|r| match r {
            Record::Anomaly(mut a) if a.kind.is_wrong_protocol() => {
                a.kind = AnomalyKind::WrongProtocolToQmServer;
                a.detail.clear();
                Record::Anomaly(a)
            }
            r => r,
        })
        .collect()
}

/// `protocol_chunks` target.
///
/// Input: `[opts][parser][k][schedule: k bytes][client_len u16 LE][client
/// stream][server stream]`. The schedule cuts and interleaves the two
/// streams, with losses (see [`pieces`]); `parser` chooses which netstrings
/// the bare tokenizer enters (bit per depth); `opts` sets up the session
/// (server port, which side is the client or none, mid-stream, known
/// server, FIN before the end).
///
/// Checks: the tokenizer, the sniffer, both request parsers (QMTP and QMQP)
/// and the reply parser give identical results whether each stream is fed
/// chunk by chunk or in runs as long as the losses allow; a session gives
/// well-formed records, the same for the schedule and for its coalesced
/// form (not mid-stream: resynchronisation counts segments by design), and
/// stays silent once it rejected the flow.
pub fn protocol_chunks(data: &[u8]) {
    let ChunksInput {
        opts,
        parser,
        schedule,
        client,
        server,
    } = chunks_input(data);
    let streams = [client, server];
    let chunked = pieces([client.len(), server.len()], schedule);

    for (dir, stream) in streams.iter().enumerate() {
        let mine: Vec<Piece> = chunked.iter().filter(|p| p.dir == dir).copied().collect();
        let whole = one_direction(&chunked, dir);
        assert_eq!(
            run_tokens(stream, &mine, parser),
            run_tokens(stream, &whole, parser),
            "tokenizer depends on chunking"
        );
        assert_eq!(
            run_sniffer(stream, &mine),
            run_sniffer(stream, &whole),
            "sniffer depends on chunking"
        );
        let origin = u64::from(parser >> 4) * 1000;
        for protocol in [Protocol::Qmtp, Protocol::Qmqp] {
            assert_eq!(
                run_requests(protocol, stream, &mine, origin),
                run_requests(protocol, stream, &whole, origin),
                "{protocol:?} request parser depends on chunking"
            );
        }
        assert_eq!(
            run_replies(stream, &mine),
            run_replies(stream, &whole),
            "reply parser depends on chunking"
        );
    }

    let a = run_session(streams, &chunked, opts);
    let b = run_session(streams, &coalesced(&chunked), opts);
    if opts & 0x10 == 0 {
        assert_eq!(
            comparable(a),
            comparable(b),
            "session records depend on segmentation"
        );
    }
}

// -------------------------------------------------------- reassembly_model

/// Segment positions are taken modulo this, so that segments meet often.
const POSITIONS: usize = 8192;
/// Length of the base stream every segment is cut from.
const BASE_LEN: usize = POSITIONS + 16 * 255 + 256;

fn base_byte(seed: u8, p: usize) -> u8 {
    let x = (p as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(u32::from(seed));
    (x >> 24) as u8 ^ (p as u8)
}

/// A delivery, copied out of the callback.
#[derive(Debug)]
enum Seen {
    Data(u64, Vec<u8>),
    Gap(u64, u64),
}

/// The model: what the stream must look like from outside.
struct Model {
    seed: u8,
    /// Base-stream position of stream offset 0, once the stream started.
    shift: Option<usize>,
    /// First byte accepted at each base-stream position.
    first: Vec<Option<u8>>,
    /// Next stream offset to be delivered.
    next: u64,
    fin: Option<u64>,
    corrupt_accepted: bool,
    /// End of the furthest captured bytes accepted (stream offset).
    captured_end: u64,
    finished_reported: bool,
}

impl Model {
    /// Checks the deliveries of one call, in order.
    fn deliveries(&mut self, seen: &[Seen], ev_before: &StreamEvents, ev: &StreamEvents) {
        let shift = self.shift.unwrap_or(0);
        let (mut gaps, mut gap_bytes) = (0, 0);
        for d in seen {
            match d {
                Seen::Data(offset, bytes) => {
                    assert_eq!(*offset, self.next, "data not contiguous");
                    assert!(!bytes.is_empty(), "empty data delivery");
                    for (i, &b) in bytes.iter().enumerate() {
                        let p = shift + *offset as usize + i;
                        let first = self.first.get(p).copied().flatten();
                        assert_eq!(
                            Some(b),
                            first,
                            "byte at stream offset {} is not the first one received",
                            *offset as usize + i
                        );
                        if !self.corrupt_accepted {
                            assert_eq!(b, base_byte(self.seed, p));
                        }
                    }
                    self.next += bytes.len() as u64;
                }
                Seen::Gap(offset, len) => {
                    assert_eq!(*offset, self.next, "gap not contiguous");
                    assert!(*len > 0, "empty gap");
                    for o in *offset..*offset + *len {
                        let p = shift + o as usize;
                        assert!(
                            self.first.get(p).copied().flatten().is_none(),
                            "stream offset {o} was received but declared a gap"
                        );
                    }
                    gaps += 1;
                    gap_bytes += len;
                    self.next += len;
                }
            }
        }
        assert_eq!(ev.gaps - ev_before.gaps, gaps, "gap count");
        assert_eq!(ev.gap_bytes - ev_before.gap_bytes, gap_bytes, "gap bytes");
    }
}

/// `reassembly_model` target.
///
/// Input: `[caps][limits][prefill][seed][isn u32 LE]`, then operations of 4
/// bytes `[op][pos_lo][pos_hi][len]` over a fixed base stream (base-stream
/// position `pos` mod 8192, sequence number `isn + 1 + pos`): `op & 3` is 0/1 a
/// segment, 2 an acknowledgement of `pos` by the peer, 3 a flush; segment
/// flags: 0x04 SYN, 0x08 FIN, 0x10 corrupt (bytes differ from the base
/// stream), 0x20 `len + 1` more bytes cut by the snap length; `op >> 6`
/// scales `len` by 1, 2, 4 or 16.
///
/// Checks, after every operation: deliveries are contiguous from offset 0;
/// every delivered byte is the first byte accepted at its offset (so the
/// base stream's byte when no corrupt segment was accepted); no byte that
/// was received is ever declared a gap; no conflict is counted when every
/// segment agreed; gap counters match the gaps delivered; held bytes stay
/// within the stream cap and the shared budget, which accounts exactly;
/// FIN completion is reported once, when every byte before it was
/// delivered. At the end a flush delivers everything and frees the budget.
pub fn reassembly_model(data: &[u8]) {
    let mut input = data;
    let caps = byte(&mut input);
    let limits = byte(&mut input);
    let prefill = byte(&mut input);
    let seed = byte(&mut input);
    let isn = take(&mut input, 4);
    let isn = u32::from_le_bytes([
        isn.first().copied().unwrap_or(0),
        isn.get(1).copied().unwrap_or(0),
        isn.get(2).copied().unwrap_or(0),
        isn.get(3).copied().unwrap_or(0),
    ]);
    let cfg = ReassemblyConfig {
        max_held_bytes: [0, 1, 8, 64, 300, 1024, 4096, 262_144][usize::from(caps & 7)],
        max_held_pieces: [0, 1, 2, 3, 4, 8, 16, 256][usize::from((caps >> 3) & 7)],
        recent_window: [0, 1, 16, 2048][usize::from(caps >> 6)],
        max_ahead: [0, 1, 100, 1000, 4096, 65_536, 1 << 20, 64 << 20][usize::from(limits & 7)],
    };
    let cap = [0, 16, 64, 512, 4096, 65_536, 1 << 20, 64 << 20][usize::from((limits >> 3) & 7)];
    let mut budget = Budget::new(cap);
    let prefill = (usize::from(prefill) * 8).min(cap);
    budget.held = prefill;

    let mut stream = Stream::default();
    let mut ev = StreamEvents::default();
    let mut model = Model {
        seed,
        shift: None,
        first: vec![None; BASE_LEN + 512],
        next: 0,
        fin: None,
        corrupt_accepted: false,
        captured_end: 0,
        finished_reported: false,
    };
    let mut seen: Vec<Seen> = Vec::new();
    let mut ops = 0;
    while input.len() >= 4 && ops < 4096 {
        ops += 1;
        let op = take(&mut input, 4);
        let (kind, len) = (op[0], usize::from(op[3]));
        let pos = usize::from(u16::from_le_bytes([op[1], op[2]])) % POSITIONS;
        let seq = isn.wrapping_add(1).wrapping_add(pos as u32);
        seen.clear();
        let ev_before = ev;
        let mut deliver = |d: Delivery<'_>| match d {
            Delivery::Data { offset, bytes } => seen.push(Seen::Data(offset, bytes.to_vec())),
            Delivery::Gap { offset, len } => seen.push(Seen::Gap(offset, len)),
            Delivery::Skip { .. } => panic!("no skip range was set"),
        };
        match kind & 3 {
            0 | 1 => {
                let syn = kind & 0x04 != 0;
                let fin = kind & 0x08 != 0;
                let corrupt = kind & 0x10 != 0;
                let missing = if kind & 0x20 != 0 { len as u32 + 1 } else { 0 };
                let len = len * [1, 2, 4, 16][usize::from(kind >> 6)];
                let payload: Vec<u8> = (pos..pos + len)
                    .map(|p| base_byte(seed, p) ^ if corrupt { 0xa5 } else { 0 })
                    .collect();
                let seg_seq = if syn { seq.wrapping_sub(1) } else { seq };
                if model.shift.is_none() {
                    model.shift = Some(pos);
                }
                let piece = StreamSegment {
                    seq: seg_seq,
                    syn,
                    fin,
                    payload: &payload,
                    missing,
                };
                let done = stream.segment(piece, &cfg, &mut budget, &mut ev, &mut deliver);
                let accepted = ev.out_of_window == ev_before.out_of_window;
                let shift = model.shift.unwrap_or(0);
                if accepted {
                    for (i, &b) in payload.iter().enumerate() {
                        let slot = &mut model.first[pos + i];
                        if slot.is_none() {
                            *slot = Some(b);
                        }
                    }
                    model.corrupt_accepted |= corrupt && len > 0;
                    if len > 0 && pos + len > shift {
                        model.captured_end = model.captured_end.max((pos + len - shift) as u64);
                    }
                    if fin && model.fin.is_none() {
                        let end = (pos + len) as i64 + i64::from(missing) - shift as i64;
                        assert!(end >= 0, "FIN accepted before the stream's start");
                        model.fin = Some(end as u64);
                    }
                }
                model.deliveries(&seen, &ev_before, &ev);
                if done {
                    assert!(!model.finished_reported, "FIN reached twice");
                    assert!(stream.finished());
                    model.finished_reported = true;
                }
            }
            2 => {
                stream.peer_acked(seq, &cfg, &mut budget, &mut ev, &mut deliver);
                model.deliveries(&seen, &ev_before, &ev);
            }
            _ => {
                stream.flush(&cfg, &mut budget, &mut ev, &mut deliver);
                model.deliveries(&seen, &ev_before, &ev);
                assert_eq!(stream.held_bytes(), 0);
            }
        }
        if !model.corrupt_accepted {
            assert_eq!(
                ev.overlaps_conflicting, 0,
                "conflict counted, yet all agreed"
            );
        }
        assert_eq!(stream.started(), model.shift.is_some());
        if stream.started() {
            assert_eq!(stream.next_offset(), model.next);
        }
        assert!(
            stream.held_bytes() <= cfg.max_held_bytes,
            "stream cap passed"
        );
        assert_eq!(
            budget.held,
            prefill + stream.held_bytes(),
            "budget accounting"
        );
        assert!(budget.held <= budget.cap.max(prefill), "budget cap passed");
        let fin_reached = model.fin.is_some_and(|f| model.next >= f);
        assert_eq!(stream.finished(), fin_reached);
    }
    seen.clear();
    let ev_before = ev;
    let mut deliver = |d: Delivery<'_>| match d {
        Delivery::Data { offset, bytes } => seen.push(Seen::Data(offset, bytes.to_vec())),
        Delivery::Gap { offset, len } => seen.push(Seen::Gap(offset, len)),
        Delivery::Skip { .. } => panic!("no skip range was set"),
    };
    stream.flush(&cfg, &mut budget, &mut ev, &mut deliver);
    model.deliveries(&seen, &ev_before, &ev);
    assert_eq!(stream.held_bytes(), 0);
    assert_eq!(budget.held, prefill);
    assert!(
        model.next >= model.captured_end,
        "received bytes up to {} never delivered (stream at {})",
        model.captured_end,
        model.next
    );
    let mut budget2 = budget;
    stream.reset(&mut budget2);
    assert_eq!(budget2.held, prefill);
}

// ------------------------------------------------------------- flow_table

/// The connections `flow_table` plays: (client, server). Two clients share
/// each server and four-tuples share hosts, so flows meet in the table,
/// in the known-servers map and under the flow cap.
const FLOW_CONNS: [(&str, &str); 8] = [
    ("198.51.100.7:40000", "192.0.2.1:209"),
    ("198.51.100.7:40001", "192.0.2.1:209"),
    ("198.51.100.8:40000", "192.0.2.2:628"),
    ("198.51.100.7:40002", "192.0.2.2:628"),
    ("198.51.100.9:40000", "192.0.2.3:80"),
    ("198.51.100.9:40001", "192.0.2.1:80"),
    ("[2001:db8::7]:40000", "[2001:db8::1]:209"),
    ("192.0.2.1:209", "198.51.100.7:40000"),
];

/// What each side sends, by server port: a client's requests and a
/// server's replies, repeated; each segment takes the bytes at its stream
/// offset, so in-order segments carry a well-formed conversation.
fn flow_script(port: u16, client: bool) -> &'static [u8] {
    match (port, client) {
        (209, true) => b"5:\nabcd,17:alice@example.org,38:15:bob@example.com,15:eve@example.net,,",
        (209, false) => b"23:Kok 1795238274 qp 15868,7:Zlater.,",
        (628, true) => b"47:4:abcd,17:alice@example.org,15:bob@example.com,,",
        (628, false) => b"23:Kok 1795238274 qp 15868,",
        (_, true) => b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n",
        _ => b"HTTP/1.0 200 OK\r\n\r\nhello",
    }
}

/// Segment flags by the op's high nibble; 15 is not a segment but an
/// expiry pass far ahead in time.
const FLOW_FLAGS: [u8; 15] = [
    TCP_ACK,
    TCP_ACK | 0x08,
    TCP_SYN,
    TCP_SYN | TCP_ACK,
    TCP_FIN | TCP_ACK,
    TCP_RST,
    TCP_RST | TCP_ACK,
    TCP_ACK | TCP_URG,
    TCP_FIN | TCP_ACK | 0x08,
    0,
    TCP_SYN | TCP_FIN,
    TCP_ACK,
    TCP_ACK | 0x08,
    TCP_ACK | 0x08,
    TCP_ACK | TCP_URG | 0x08,
];

/// `flow_table` target: a worker's whole flow stage.
///
/// Input: `[caps][isn]`, then 4-byte ops `[kind][len][seqsel][extra]`.
/// `caps` picks the flow cap (1–64), the held-bytes cap, the session
/// memory cap and the checksum mode. An op's `kind & 7` picks one of
/// [`FLOW_CONNS`], bit 3 its direction (0: client), the high nibble its
/// flags ([`FLOW_FLAGS`]; 15: an expiry pass, or with bit 3 set a new
/// connection on that four-tuple: new initial sequence numbers, moved by
/// `len`, and the old connection's end never sent). `len` payload bytes come
/// from the direction's [`flow_script`] at the stream offset the segment
/// claims. `seqsel` moves the sequence number from the direction's next
/// byte (bits 0–2: none, back, ahead, far ahead, into the last bytes,
/// wrapped), the acknowledgement (bits 3–4), the TTL (bits 5–6) and
/// corrupts the payload (bit 7). `extra`: the time step (bits 0–1), a
/// snap-cut payload (bit 2), a bad checksum (bit 3), the offload pattern
/// in the checksum field (bit 4), a TCP timestamp (bit 5) and the urgent
/// pointer (bits 6–7). Segments go through `FlowTable::segment_with_header`
/// with their TCP header, as a capture's would.
///
/// Checks: the flow cap, the held-bytes cap and the session memory cap
/// hold after every op; every record names one of the connections, is
/// not from the future, and its transaction is bounded; the end of input
/// leaves nothing held, no session memory counted and an empty table.
/// With every cap roomy (`caps & 0x3f == 0x3f`), the same ops with each
/// segment sent twice in a row give the same services and transactions.
pub fn flow_table(data: &[u8]) {
    let once = flow_table_records(data);
    // With room under every cap, a retransmission of each segment right
    // after it (what a sender or a SPAN port's duplication produces) must
    // change no service and no transaction.
    if data.first().is_some_and(|caps| caps & 0x3f == 0x3f) {
        let twice = flow_table_run(data, 2);
        assert_eq!(
            findings(&once),
            findings(&twice),
            "duplicated segments changed the findings"
        );
    }
}

/// The services and transactions among `records` (anomalies left out:
/// retransmissions are themselves worth naming).
fn findings(records: &[Record]) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| !matches!(r, Record::Anomaly(_)))
        .collect()
}

/// [`flow_table`]'s run, returning every record the table produced.
pub fn flow_table_records(data: &[u8]) -> Vec<Record> {
    flow_table_run(data, 1)
}

/// Plays `data`'s ops, each segment `copies` times in a row.
fn flow_table_run(data: &[u8], copies: usize) -> Vec<Record> {
    let mut input = data;
    let caps = byte(&mut input);
    let isn = byte(&mut input);
    let cfg = FlowConfig {
        max_flows: [1, 2, 3, 64][usize::from(caps & 3)],
        held_bytes_cap: [0, 100, 4096, 1 << 20][usize::from((caps >> 2) & 3)],
        session_memory: [0, 200, 4096, 1 << 20][usize::from((caps >> 4) & 3)],
        checksums: [
            ChecksumMode::Auto,
            ChecksumMode::Verify,
            ChecksumMode::Ignore,
            ChecksumMode::Auto,
        ][usize::from(caps >> 6)],
        idle_timeout_ns: 600_000_000_000,
        closed_linger_ns: 1_000_000_000,
        ..FlowConfig::default()
    };
    let conns: Vec<(SocketAddr, SocketAddr)> = FLOW_CONNS
        .iter()
        .map(|(c, s)| (c.parse().unwrap(), s.parse().unwrap()))
        .collect();
    // Initial sequence numbers near the wrap, by the input.
    let mut isns: Vec<[u32; 2]> = (0..conns.len() as u32)
        .map(|i| {
            let base = u32::from(isn)
                .wrapping_mul(0x0101_0101)
                .wrapping_add(i << 20);
            [base.wrapping_sub(300), base.wrapping_add(0x8000_0000)]
        })
        .collect();
    // Next stream offset (after the SYN) each direction sent.
    let mut next = vec![[0u32; 2]; conns.len()];
    // Urgent bytes each direction sent in order (out of its script).
    let mut urgent_sent = vec![[0usize; 2]; conns.len()];
    let mut table = FlowTable::new(cfg);
    let mut out = Vec::new();
    let start = 1_000_000_000u64;
    let mut ts = start;
    let mut tsval = 1000u32;
    let mut ops = 0;
    let mut buf = Vec::new();
    while input.len() >= 4 && ops < 2048 {
        ops += 1;
        let op = take(&mut input, 4);
        let (kind, len, seqsel, extra) = (op[0], usize::from(op[1]), op[2], op[3]);
        ts += [0, 1_000_000, 1_000_000_000, 700_000_000_000][usize::from(extra & 3)];
        let before = out.len();
        let Some(&flags) = FLOW_FLAGS.get(usize::from(kind >> 4)) else {
            let c = usize::from(kind & 7);
            if let (true, Some(isn), Some(n), Some(u)) = (
                kind & 0x08 != 0,
                isns.get_mut(c),
                next.get_mut(c),
                urgent_sent.get_mut(c),
            ) {
                // Above the old numbers or anywhere, as hosts choose them.
                let step = (len as u32 + 1).wrapping_mul(0x0001_0301);
                *isn = [isn[0].wrapping_add(step), isn[1].wrapping_sub(step)];
                (*n, *u) = ([0; 2], [0; 2]);
            } else {
                table.expire(ts, &mut out);
            }
            flow_table_checks(&table, &cfg, &conns, &out[before..], ts);
            continue;
        };
        let c = usize::from(kind & 7);
        let dir = usize::from((kind >> 3) & 1);
        let (client, server) = conns[c];
        let (from, to) = if dir == 0 {
            (client, server)
        } else {
            (server, client)
        };
        let stream_off = next[c][dir];
        let off = match seqsel & 7 {
            0 | 1 => stream_off,
            2 => stream_off.wrapping_sub(len as u32 / 2 + 1),
            3 => stream_off.wrapping_add(len as u32 + 7),
            4 => stream_off.wrapping_add(70_000),
            5 => stream_off.wrapping_sub(1),
            6 => stream_off.saturating_sub(3),
            _ => stream_off.wrapping_add(0x8000_0000),
        };
        let seq = if flags & TCP_SYN != 0 {
            isns[c][dir]
        } else {
            isns[c][dir].wrapping_add(1).wrapping_add(off)
        };
        let peer = isns[c][1 - dir]
            .wrapping_add(1)
            .wrapping_add(next[c][1 - dir]);
        let ack = match (seqsel >> 3) & 3 {
            0 | 1 => peer,
            2 => peer.wrapping_sub(5),
            _ => peer.wrapping_add(100_000),
        };
        let ttl = [64, 64, 1, 255][usize::from((seqsel >> 5) & 3)];
        let script = flow_script(server.port(), dir == 0);
        let urgent: u16 = match extra >> 6 {
            0 => 0,
            1 => 1,
            2 => (len / 2 + 1) as u16,
            _ => (len + 3) as u16,
        };
        // An urgent byte inside the segment is sent out of band: the
        // script goes on around it, as a program's writes would.
        let oob = flags & TCP_URG != 0 && (1..=len).contains(&usize::from(urgent));
        let at = (off as usize).wrapping_sub(urgent_sent[c][dir]);
        let mut payload: Vec<u8> = (0..len - usize::from(oob))
            .map(|k| script[at.wrapping_add(k) % script.len()])
            .collect();
        if oob {
            payload.insert(usize::from(urgent) - 1, b'X');
        }
        if seqsel & 0x80 != 0 {
            for b in payload.iter_mut().step_by(3) {
                *b ^= 0x5a;
            }
        }
        let missing = if extra & 0x04 != 0 {
            let cut = payload.len() / 2;
            payload.truncate(cut);
            (len - cut) as u32
        } else {
            0
        };
        let with_ts = extra & 0x20 != 0;
        let hdr = if with_ts { 32 } else { 20 };
        buf.clear();
        buf.extend_from_slice(&from.port().to_be_bytes());
        buf.extend_from_slice(&to.port().to_be_bytes());
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend_from_slice(&ack.to_be_bytes());
        buf.push((hdr as u8 / 4) << 4);
        buf.push(flags);
        buf.extend_from_slice(&[0xff, 0xff, 0, 0]);
        buf.extend_from_slice(&urgent.to_be_bytes());
        if with_ts {
            tsval = tsval.wrapping_add(u32::from(extra & 3) * 100);
            buf.extend_from_slice(&[1, 1, 8, 10]);
            buf.extend_from_slice(&tsval.to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, 0]);
        }
        buf.extend_from_slice(&payload);
        let mut csum = CSUM_SUMMED;
        if extra & 0x08 == 0 {
            csum |= CSUM_SUM_OK;
        }
        if extra & 0x10 != 0 {
            csum |= CSUM_FIELD_PSEUDO;
        }
        let seg = Segment {
            ts,
            src: addr_from_ip(from.ip()),
            dst: addr_from_ip(to.ip()),
            v4: from.is_ipv4(),
            sport: from.port(),
            dport: to.port(),
            seq,
            ack,
            flags,
            payload_len: payload.len() as u32,
            missing,
            tcp_header_len: hdr as u8,
            ttl,
            csum,
            ..Segment::default()
        };
        for _ in 0..copies {
            table.segment_with_header(&seg, &buf, &buf[hdr..], &mut out);
        }
        // The sender moves on when it sent its next bytes.
        if off == stream_off && flags & (TCP_SYN | TCP_RST) == 0 {
            let sent = (len as u32).wrapping_add(u32::from(flags & TCP_FIN != 0));
            next[c][dir] = stream_off.wrapping_add(sent);
            urgent_sent[c][dir] += usize::from(oob);
        }
        flow_table_checks(&table, &cfg, &conns, &out[before..], ts);
    }
    let before = out.len();
    table.finish_all(&mut out);
    flow_table_checks(&table, &cfg, &conns, &out[before..], ts);
    assert!(table.is_empty(), "flows left after the end of input");
    assert_eq!(table.held_bytes(), 0, "bytes held after the end of input");
    assert_eq!(table.session_bytes(), 0, "session memory still counted");
    out
}

/// `flow_table`'s checks after one op (`new`: the records it produced).
fn flow_table_checks(
    table: &FlowTable,
    cfg: &FlowConfig,
    conns: &[(SocketAddr, SocketAddr)],
    new: &[Record],
    now: u64,
) {
    assert!(table.len() <= cfg.max_flows, "flow cap passed");
    assert!(
        table.held_bytes() <= cfg.held_bytes_cap,
        "held-bytes cap passed"
    );
    assert!(
        table.session_bytes() <= cfg.session_memory,
        "session memory cap passed: {} > {}",
        table.session_bytes(),
        cfg.session_memory
    );
    let known = |e: &Endpoints| {
        conns
            .iter()
            .any(|&(c, s)| (e.client, e.server) == (c, s) || (e.client, e.server) == (s, c))
    };
    for r in new {
        let (e, ts) = match r {
            Record::Service { endpoints, ts, .. } => (endpoints, *ts),
            Record::Transaction(t) => {
                check_transaction(t);
                (&t.endpoints, t.ts)
            }
            Record::Anomaly(a) => (&a.endpoints, a.ts),
        };
        assert!(known(e), "a record names endpoints never seen: {e:?}");
        assert!(ts <= now, "a record from the future: {ts} > {now}");
    }
}
