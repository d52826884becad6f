//! The capture thread may leave a block's frames to the one worker
//! (`Defer`): the worker must then see exactly the segments, in the same
//! order and with the same bytes, that it would have seen had the capture
//! thread decoded them, whatever mix of deferred frames, fragments decoded
//! in the capture thread, and notes of lost datagrams a block holds.

use super::*;
use qmwatch_wire::capture::file::CaptureReader;
use qmwatch_wire::decode::{supported_link_type, FRAG_NOTE_DROPPED, LINKTYPE_ETHERNET};

/// One captured frame, owned.
#[derive(Clone)]
struct Frame {
    ts: u64,
    link_type: u32,
    bytes: Vec<u8>,
}

fn fixture(name: &str) -> Vec<Frame> {
    let path = format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut reader = CaptureReader::new(path.clone(), file, supported_link_type)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut records = Vec::new();
    loop {
        records.clear();
        let more = reader
            .next_block(&mut buf, &mut records)
            .unwrap_or_else(|e| panic!("{e}"));
        for r in &records {
            let at = r.data_start as usize;
            frames.push(Frame {
                ts: r.ts_nanos,
                link_type: r.link_type,
                bytes: buf[at..at + r.caplen as usize].to_vec(),
            });
        }
        if !more {
            return frames;
        }
    }
}

/// An Ethernet/IPv4 frame whose IP payload is longer than 16 bytes, cut
/// into two fragments (second first, so the first completes it).
fn fragmented(f: &Frame, id: u16) -> Option<[Frame; 2]> {
    let b = &f.bytes;
    if f.link_type != LINKTYPE_ETHERNET || b.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(b.get(14)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*b.get(16)?, *b.get(17)?]));
    let payload = b.get(14 + ihl..14 + total)?;
    if payload.len() <= 16 {
        return None;
    }
    let cut = payload.len() / 16 * 8;
    let piece = |part: &[u8], field: u16| {
        let mut out = b[..14 + ihl].to_vec();
        out[16..18].copy_from_slice(&((ihl + part.len()) as u16).to_be_bytes());
        out[18..20].copy_from_slice(&id.to_be_bytes());
        out[20..22].copy_from_slice(&field.to_be_bytes());
        out.extend_from_slice(part);
        Frame {
            ts: f.ts,
            link_type: f.link_type,
            bytes: out,
        }
    };
    Some([
        piece(&payload[cut..], (cut / 8) as u16),
        piece(&payload[..cut], 0x2000),
    ])
}

/// The fixtures' frames with every third IPv4 frame of any size sent in
/// two fragments, then the first fragment of a datagram that never
/// completes, and 40 s later more frames of its flow (the loss is noted
/// on them).
fn mixed_frames() -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut id = 0x4000u16;
    for name in [
        "qmtp-open-relay-2209.pcap",
        "qmqp-postfix-concurrent.pcap",
        "qmtp-ipv6.pcapng",
        "neg-smtp.pcap",
    ] {
        for (i, f) in fixture(name).into_iter().enumerate() {
            id = id.wrapping_add(1);
            match fragmented(&f, id) {
                Some(pieces) if i % 3 == 0 => frames.extend(pieces),
                _ => frames.push(f),
            }
        }
    }
    let relay = fixture("qmtp-open-relay-2209.pcap");
    let (whole, [_, head]) = relay
        .iter()
        .rev()
        .find_map(|f| Some((f.clone(), fragmented(f, 0x7777)?)))
        .expect("a fragmentable frame");
    let later = relay.last().map_or(0, |f| f.ts) + 40_000_000_000;
    frames.push(head);
    // Its flow again, over enough blocks that the loss, noted at the end of
    // one, is told in the next.
    for i in 0..150 {
        frames.push(Frame {
            ts: later + i,
            ..whole.clone()
        });
    }
    frames
}

/// Each segment a worker saw, with its payload bytes.
type View = Vec<(Segment, Vec<u8>)>;

/// A replay's splitter (deciding deferral as `defer` says) with a
/// lossless queue of room for 1024 batches for each of `workers`, and
/// their receiving ends.
fn replay_split(
    workers: usize,
    defer: Defer,
) -> (Splitter, Vec<WorkerQueue>, Vec<Receiver<Batch>>) {
    let counters = Arc::new(CaptureCounters::default());
    let mut queues = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = bounded::<Batch>(1024);
        queues.push(WorkerQueue {
            tx,
            lossless: true,
            counters: Arc::clone(&counters),
        });
        rxs.push(rx);
    }
    let mut splitter = Splitter::new(workers, true, counters);
    splitter.defer = defer;
    (splitter, queues, rxs)
}

/// What each of `workers` sees of `frames` split into blocks of
/// `per_block`, decoded as `defer` says; every decoder's counters added up;
/// how many frames were left to the workers.
fn worker_view(
    frames: &[Frame],
    per_block: usize,
    defer: Defer,
    workers: usize,
) -> (Vec<View>, DecodeStats, usize) {
    let (mut splitter, queues, rxs) = replay_split(workers, defer);
    let mut own: Vec<OwnDecoding> = (0..workers).map(|_| OwnDecoding::default()).collect();
    let mut seen: Vec<View> = vec![Vec::new(); workers];
    let mut deferred = 0;
    for chunk in frames.chunks(per_block) {
        let (buf, records) = block_of(chunk);
        splitter
            .dispatch(Block::new(buf, None), &records, &queues)
            .unwrap_or_else(|_| panic!("worker gone"));
        for (w, rx) in rxs.iter().enumerate() {
            while let Ok(batch) = rx.try_recv() {
                let left = batch.frames.iter().filter(|r| r.caplen != DECODED_HERE);
                deferred += left.count();
                for s in own[w].segments(&batch) {
                    seen[w].push((*s, batch.block.payload(s).to_vec()));
                }
            }
        }
    }
    let mut stats = splitter.decode_stats().clone();
    for o in &own {
        stats.merge(&o.decoder.stats);
    }
    (seen, stats, deferred)
}

/// A block holding `frames` back to back, and their records.
fn block_of(frames: &[Frame]) -> (Vec<u8>, Vec<PacketRecord>) {
    let mut buf = Vec::new();
    let mut records = Vec::new();
    for f in frames {
        records.push(PacketRecord {
            ts_nanos: f.ts,
            link_type: f.link_type,
            data_start: buf.len() as u32,
            caplen: f.bytes.len() as u32,
            origlen: f.bytes.len() as u32,
            interface: 0,
        });
        buf.extend_from_slice(&f.bytes);
    }
    (buf, records)
}

#[test]
fn frames_decoded_by_the_worker_give_the_same_segments() {
    let frames = mixed_frames();
    for workers in [1, 2, 3] {
        for per_block in [1, 7, 64, frames.len()] {
            let case = format!("{workers} workers, blocks of {per_block}");
            let (central, central_stats, none) =
                worker_view(&frames, per_block, Defer::Never, workers);
            let (deferred, deferred_stats, some) =
                worker_view(&frames, per_block, Defer::Always, workers);
            assert_eq!(none, 0);
            assert!(
                some > frames.len() / 2,
                "{some} of {} deferred, {case}",
                frames.len()
            );
            let all = || central.iter().flatten();
            assert!(all().any(|(s, _)| s.reassembled), "fragments reassembled");
            // Told only to a segment decoded after the block that lost it.
            assert_eq!(
                all().any(|(s, _)| s.frag_notes & FRAG_NOTE_DROPPED != 0),
                per_block < frames.len(),
                "the lost datagram is noted, {case}"
            );
            assert!(
                central.iter().all(|v| !v.is_empty()),
                "every worker has flows"
            );
            // The capture thread sums small segments' checksums ahead, a
            // worker's decoder does not; the rest is the same.
            assert!(all().any(|(s, _)| s.csum != 0), "summed ahead, {case}");
            for (w, (c, d)) in central.iter().zip(&deferred).enumerate() {
                assert_eq!(c.len(), d.len(), "worker {w}, {case}");
                for (i, ((a, pa), (b, pb))) in c.iter().zip(d).enumerate() {
                    let (a, b) = (Segment { csum: 0, ..*a }, Segment { csum: 0, ..*b });
                    assert_eq!((a, pa), (b, pb), "worker {w}, segment {i}, {case}");
                }
            }
            // Left to the workers, most frames were decoded unsummed.
            let summed = |v: &[View]| v.iter().flatten().filter(|(s, _)| s.csum != 0).count();
            assert!(
                summed(&deferred) < summed(&central),
                "a worker's decoder summed, {case}"
            );
            let (a, b) = (format!("{central_stats:?}"), format!("{deferred_stats:?}"));
            assert_eq!(a, b, "{case}");
        }
    }
}

/// The automatic choice defers only to a worker that waits: with a batch
/// still queued, the capture thread decodes the next block itself.
#[test]
fn frames_are_left_only_to_a_waiting_worker() {
    let frames = fixture("qmtp-open-relay-2209.pcap");
    let counters = Arc::new(CaptureCounters::default());
    let (tx, rx) = bounded::<Batch>(8);
    let queues = vec![WorkerQueue {
        tx,
        lossless: true,
        counters: Arc::clone(&counters),
    }];
    let mut splitter = Splitter::new(1, true, counters);
    let (buf, records) = block_of(&frames);
    splitter
        .dispatch(Block::new(buf, None), &records, &queues)
        .ok();
    let (buf2, records2) = block_of(&frames);
    splitter
        .dispatch(Block::new(buf2, None), &records2, &queues)
        .ok();
    let first = rx.try_recv().expect("first batch");
    let second = rx.try_recv().expect("second batch");
    assert_eq!(first.frames.len(), frames.len(), "an idle worker decodes");
    assert!(first.segments.is_empty());
    assert!(second.frames.is_empty(), "a busy worker is spared");
    assert!(!second.segments.is_empty());
}

/// With several workers, frames are left to them only while all of them
/// wait: one batch queued anywhere, and the capture thread decodes.
#[test]
fn several_workers_get_frames_only_when_all_wait() {
    let frames = fixture("qmqp-postfix-concurrent.pcap");
    let counters = Arc::new(CaptureCounters::default());
    let mut queues = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = bounded::<Batch>(8);
        queues.push(WorkerQueue {
            tx,
            lossless: true,
            counters: Arc::clone(&counters),
        });
        rxs.push(rx);
    }
    let mut splitter = Splitter::new(2, true, counters);
    let (buf, records) = block_of(&frames);
    splitter
        .dispatch(Block::new(buf, None), &records, &queues)
        .ok();
    let first: Vec<Batch> = rxs.iter().filter_map(|rx| rx.try_recv().ok()).collect();
    assert_eq!(first.len(), 2);
    assert!(first
        .iter()
        .all(|b| b.segments.is_empty() && !b.frames.is_empty()));
    // Worker 1 has taken its batch; worker 0's is still queued.
    let (buf, records) = block_of(&frames);
    splitter
        .dispatch(Block::new(buf.clone(), None), &records, &queues)
        .ok();
    let _ = rxs[1].try_recv();
    splitter
        .dispatch(Block::new(buf, None), &records, &queues)
        .ok();
    let _ = rxs[0].try_recv();
    let third = rxs[0].try_recv().expect("a batch");
    assert!(third.frames.is_empty() && !third.segments.is_empty());
}

/// A live queue that is full drops the batch and counts what it held,
/// frames left undecoded included (marks of segments counted once).
#[test]
fn a_dropped_batch_counts_its_undecoded_frames() {
    let frames = fixture("qmtp-open-relay-2209.pcap");
    let counters = Arc::new(CaptureCounters::default());
    let (tx, _rx) = bounded::<Batch>(1);
    let q = WorkerQueue {
        tx,
        lossless: false,
        counters: Arc::clone(&counters),
    };
    let (buf, records) = block_of(&frames);
    let block = Arc::new(Block::new(buf, None));
    let batch = |segments: Vec<Segment>, frames: Vec<PacketRecord>| Batch {
        block: Arc::clone(&block),
        segments,
        frames,
        now: 0,
        seq: 0,
        recycle: None,
    };
    q.send(batch(Vec::new(), Vec::new())).ok();
    let mut marked = records.clone();
    marked[0].caplen = DECODED_HERE;
    q.send(batch(vec![Segment::default()], marked)).ok();
    // An empty batch (a replay's clock tick) lost to a full queue loses
    // nothing: not counted.
    q.send(batch(Vec::new(), Vec::new())).ok();
    let c = counters.totals();
    assert_eq!(c.queue_drops, records.len() as u64);
    assert_eq!(c.queue_dropped_batches, 1);
}

/// In a replay every worker gets a batch for every block, even with
/// nothing of its own in it, so that its packet-time clock advances (idle
/// flows expire on time); and the block's packets and wire bytes are
/// counted once, whichever thread decodes them.
#[test]
fn every_worker_hears_of_every_block_and_packets_are_counted() {
    let frames = fixture("qmtp-open-relay-2209.pcap");
    for defer in [Defer::Never, Defer::Always] {
        let counters = Arc::new(CaptureCounters::default());
        let mut queues = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = bounded::<Batch>(64);
            queues.push(WorkerQueue {
                tx,
                lossless: true,
                counters: Arc::clone(&counters),
            });
            rxs.push(rx);
        }
        let mut splitter = Splitter::new(3, true, Arc::clone(&counters));
        splitter.defer = defer;
        // One frame a block: two of the three workers have nothing in it.
        for f in &frames {
            let (buf, records) = block_of(std::slice::from_ref(f));
            splitter
                .dispatch(Block::new(buf, None), &records, &queues)
                .unwrap_or_else(|_| panic!("worker gone"));
        }
        for rx in &rxs {
            let nows: Vec<u64> = rx.try_iter().map(|b| b.now).collect();
            let want: Vec<u64> = frames.iter().map(|f| f.ts).collect();
            assert_eq!(nows, want, "{defer:?}");
        }
        let c = counters.totals();
        assert_eq!(c.packets, frames.len() as u64);
        let bytes: usize = frames.iter().map(|f| f.bytes.len()).sum();
        assert_eq!(c.bytes, bytes as u64);
        assert!(counters.last_packet_ns.load(Ordering::Relaxed) > 0);
    }
    // Nothing read: nothing to note as the latest packet.
    let counters = Arc::new(CaptureCounters::default());
    let (tx, _rx) = bounded::<Batch>(4);
    let queues = vec![WorkerQueue {
        tx,
        lossless: true,
        counters: Arc::clone(&counters),
    }];
    let mut splitter = Splitter::new(1, true, Arc::clone(&counters));
    splitter
        .dispatch(Block::new(Vec::new(), None), &[], &queues)
        .unwrap_or_else(|_| panic!("worker gone"));
    assert_eq!(counters.last_packet_ns.load(Ordering::Relaxed), 0);
}

/// One block's batches, one per worker: `(seq, [(capture offset, segment)])`.
type BlockBatches = Vec<(u64, Vec<(u32, Segment)>)>;

/// Each block's batches, the segments as the workers decode them
/// (checksum marks cleared).
fn placed(frames: &[Frame], per_block: usize, defer: Defer, workers: usize) -> Vec<BlockBatches> {
    let (mut splitter, queues, rxs) = replay_split(workers, defer);
    let mut own: Vec<OwnDecoding> = (0..workers).map(|_| OwnDecoding::default()).collect();
    let mut blocks = Vec::new();
    for chunk in frames.chunks(per_block) {
        let (buf, records) = block_of(chunk);
        splitter
            .dispatch(Block::new(buf, None), &records, &queues)
            .unwrap_or_else(|_| panic!("worker gone"));
        let mut batches = Vec::new();
        for (w, rx) in rxs.iter().enumerate() {
            while let Ok(batch) = rx.try_recv() {
                let segs = own[w]
                    .segments(&batch)
                    .iter()
                    .map(|s| (batch.block.capture_offset(s), Segment { csum: 0, ..*s }))
                    .collect();
                batches.push((batch.seq, segs));
            }
        }
        blocks.push(batches);
    }
    blocks
}

/// Findings are merged by the block's number and the frame's offset in it
/// (`merge`): those must put every worker's segments back in the order
/// one worker sees them, fragments reassembled in the capture thread and
/// frames decoded by the workers included.
#[test]
fn places_put_every_workers_segments_back_in_capture_order() {
    let frames = mixed_frames();
    for per_block in [7, 64, frames.len()] {
        let one = placed(&frames, per_block, Defer::Never, 1);
        for workers in [2, 3] {
            for defer in [Defer::Never, Defer::Always] {
                let case = format!("{workers} workers, blocks of {per_block}, {defer:?}");
                let many = placed(&frames, per_block, defer, workers);
                assert_eq!(one.len(), many.len(), "{case}");
                for (b, (o, m)) in one.iter().zip(&many).enumerate() {
                    assert_eq!(m.len(), workers, "a batch per worker, block {b}, {case}");
                    assert!(m.iter().all(|(seq, _)| *seq == b as u64), "{case}");
                    let mut merged: Vec<(u32, Segment)> =
                        m.iter().flat_map(|(_, s)| s.iter().copied()).collect();
                    merged.sort_by_key(|(at, _)| *at);
                    let offsets: Vec<u32> = merged.iter().map(|(at, _)| *at).collect();
                    assert!(
                        offsets.windows(2).all(|w| w[0] < w[1]),
                        "one offset per frame, block {b}, {case}"
                    );
                    assert!(offsets.iter().all(|&at| at != u32::MAX), "{case}");
                    let expected: Vec<Segment> =
                        o.iter().flat_map(|(_, s)| s.iter().map(|x| x.1)).collect();
                    let got: Vec<Segment> = merged.into_iter().map(|(_, s)| s).collect();
                    assert_eq!(got, expected, "block {b}, {case}");
                }
            }
        }
    }
}
