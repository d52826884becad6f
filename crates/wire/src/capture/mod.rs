//! Capture: where packets come from.
//!
//! Owns: capture sources (capture files in [`file`](mod@file); a live interface through
//! libpcap in `live`, behind the `live` feature, with `fanout` joining
//! several handles into one kernel `PACKET_FANOUT` group; regular files
//! mapped into memory in [`mapping`], and which of reading and mapping a
//! replay uses for a file in [`access`] — `fanout` and `mapping`, with
//! `flow::prefetch`, are the only code of qmwatch allowed `unsafe`) and the
//! buffers packets live in. Packets are read in large blocks that are
//! shared, read-only, with every worker through an [`Arc<Block>`]; a worker
//! sees a packet as a slice of its block, so no packet is copied between
//! capture and classifier. A block's bytes are either a buffer filled by
//! `read` (standard input, pipes, live capture, which copies each packet
//! once, off the kernel's ring, into its block) or a window of a mapped
//! regular file, which is not copied at all. An owned buffer goes back to a
//! pool when the last worker drops the block; a mapped window's pages are
//! given back to the kernel instead. A batch's segment list goes back to the
//! capture thread.
//!
//! Must not: decode packets, or block forever: every buffer and queue is
//! bounded.

#[cfg(unix)]
pub mod access;
#[cfg(all(feature = "live", target_os = "linux"))]
pub mod fanout;
pub mod file;
#[cfg(feature = "live")]
pub mod live;
#[cfg(unix)]
pub mod mapping;

use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::capture::file::PacketRecord;
use crate::decode::Segment;

/// Where a block's bytes are.
enum Bytes {
    /// A buffer filled by reads (file read path, live capture).
    Owned(Vec<u8>),
    /// A window of a mapped capture file.
    #[cfg(unix)]
    Mapped(mapping::Window),
}

/// A block of capture data shared by the workers.
pub struct Block {
    /// Raw capture bytes; packets are ranges of them.
    bytes: Bytes,
    /// Payloads that exist nowhere in `data` (reassembled IP fragments).
    pub extra: Vec<u8>,
    /// For each payload in `extra`, in order: where it starts in `extra`
    /// and where the frame that completed its datagram starts in `data`
    /// ([`Block::capture_offset`]).
    pub extra_frames: Vec<(u32, u32)>,
    /// Where an owned buffer goes back when the block is dropped.
    pool: Option<PoolReturn>,
}

impl Block {
    /// A block over an owned buffer, given back to `pool` when dropped.
    pub fn new(data: Vec<u8>, pool: Option<PoolReturn>) -> Self {
        Block {
            bytes: Bytes::Owned(data),
            extra: Vec::new(),
            extra_frames: Vec::new(),
            pool,
        }
    }

    /// A block over a window of a mapped file (no pool: nothing to reuse).
    #[cfg(unix)]
    pub fn mapped(window: mapping::Window) -> Self {
        Block {
            bytes: Bytes::Mapped(window),
            extra: Vec::new(),
            extra_frames: Vec::new(),
            pool: None,
        }
    }

    /// The raw capture bytes: packets are ranges of them.
    #[inline]
    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(v) => v,
            #[cfg(unix)]
            Bytes::Mapped(w) => w.bytes(),
        }
    }

    /// Where in this block's capture bytes the frame of `seg` lies: its
    /// payload's offset, or for a reassembled datagram the offset of the
    /// frame that completed it; `u32::MAX` for a segment of no frame here.
    /// Frames lie in the block in capture order, so this orders a block's
    /// segments as they were captured, whichever worker has them.
    pub fn capture_offset(&self, seg: &Segment) -> u32 {
        if !seg.reassembled {
            return seg.payload_start;
        }
        match self
            .extra_frames
            .binary_search_by_key(&seg.payload_start, |&(at, _)| at)
        {
            Ok(i) => self.extra_frames.get(i).map_or(u32::MAX, |&(_, f)| f),
            Err(_) => u32::MAX,
        }
    }

    /// The payload bytes of `seg`, or an empty slice if its range is not in
    /// this block (never panics).
    pub fn payload(&self, seg: &Segment) -> &[u8] {
        let buf = if seg.reassembled {
            &self.extra
        } else {
            self.data()
        };
        let start = seg.payload_start as usize;
        buf.get(start..start.saturating_add(seg.payload_len as usize))
            .unwrap_or_default()
    }

    /// [`tcp_segment`](Self::tcp_segment) and [`payload`](Self::payload)
    /// of `seg` at once (the payload is the segment past its header): what
    /// a worker needs of every segment, from one look at the buffer.
    #[inline]
    pub fn tcp_and_payload(&self, seg: &Segment) -> (&[u8], &[u8]) {
        let buf = if seg.reassembled {
            &self.extra
        } else {
            self.data()
        };
        let start = seg.payload_start as usize;
        let header = usize::from(seg.tcp_header_len);
        let end = start.saturating_add(seg.payload_len as usize);
        // Both ranges end at `end`: both are in the buffer, or neither.
        match buf.get(start.saturating_sub(header)..end) {
            Some(tcp) if start >= header => (tcp, tcp.get(header..).unwrap_or_default()),
            Some(tcp) => (tcp, buf.get(start..end).unwrap_or_default()),
            None => (&[], &[]),
        }
    }

    /// The whole TCP segment (header and captured payload) of `seg`, for
    /// checksum verification; empty if its range is not in this block.
    pub fn tcp_segment(&self, seg: &Segment) -> &[u8] {
        let buf = if seg.reassembled {
            &self.extra
        } else {
            self.data()
        };
        let end = (seg.payload_start as usize).saturating_add(seg.payload_len as usize);
        let start = (seg.payload_start as usize).saturating_sub(usize::from(seg.tcp_header_len));
        buf.get(start..end).unwrap_or_default()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let (Some(pool), Bytes::Owned(data)) = (&self.pool, &mut self.bytes) {
            // Not cleared: the reader overwrites it, and a buffer that keeps
            // its length is not zero-filled again.
            pool.give_back(std::mem::take(data));
        }
    }
}

/// What a worker receives: the segments of one block that hash to it (or
/// the block's frames, for it to decode), and the packet time reached, so
/// that idle timeouts advance on every worker.
pub struct Batch {
    pub block: Arc<Block>,
    /// Segments the capture thread decoded, in capture order.
    pub segments: Vec<Segment>,
    /// When not empty: the block's frames in capture order, left for the
    /// worker to decode; a frame whose `caplen` is [`DECODED_HERE`] stands
    /// for the next of `segments`, which the capture thread decoded (a
    /// fragment, say). Empty: `segments` is all there is.
    pub frames: Vec<PacketRecord>,
    pub now: u64,
    /// The block's number in the run (0, 1, …): every worker's batch of
    /// one block has the same, so that findings can be put back in capture
    /// order.
    pub seq: u64,
    /// Where the emptied lists go back for reuse: a fresh list of a
    /// megabyte per block would cost page faults on every block.
    pub recycle: Option<Sender<BatchLists>>,
}

/// `caplen` of a [`Batch::frames`] entry that marks the place of a segment
/// the capture thread decoded (no frame is that long: records are capped
/// far below).
pub const DECODED_HERE: u32 = u32::MAX;

/// A batch's lists, emptied, on their way back to the capture thread.
#[derive(Default)]
pub struct BatchLists {
    pub segments: Vec<Segment>,
    pub frames: Vec<PacketRecord>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(pool) = &self.recycle {
            let mut segments = std::mem::take(&mut self.segments);
            segments.clear();
            let mut frames = std::mem::take(&mut self.frames);
            frames.clear();
            // A full pool just frees the lists.
            let _ = pool.try_send(BatchLists { segments, frames });
        }
    }
}

/// A pool of reusable block buffers: a stack, so that the buffer handed
/// out next is the one given back last, the likeliest to be still in the
/// cache when the next read is copied into it. (A queue hands back the
/// buffer idle longest: every read then writes to lines long evicted, and
/// the pool's whole size, several MiB a worker, competes for the cache.)
pub struct BufferPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle: usize,
}

/// Where a dropped [`Block`] gives its buffer back ([`BufferPool::returner`]).
#[derive(Clone)]
pub struct PoolReturn(Arc<PoolShared>);

impl PoolReturn {
    /// Keeps `buf` for the next [`BufferPool::get`]; a full pool just frees it.
    fn give_back(&self, buf: Vec<u8>) {
        // A lock poisoned by a panicking thread: the buffer is freed.
        if let Ok(mut idle) = self.0.idle.lock() {
            if idle.len() < self.0.max_idle {
                idle.push(buf);
            }
        }
    }
}

impl BufferPool {
    /// A pool that keeps at most `max_idle` (at least 1) idle buffers.
    pub fn new(max_idle: usize) -> Self {
        let max_idle = max_idle.max(1);
        BufferPool {
            shared: Arc::new(PoolShared {
                idle: Mutex::new(Vec::with_capacity(max_idle)),
                max_idle,
            }),
        }
    }

    /// The buffer given back last, or a new one. A pooled buffer keeps its
    /// previous length and bytes (so it is not zero-filled again): clear it
    /// before appending to it.
    pub fn get(&self, capacity: usize) -> Vec<u8> {
        self.shared
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    pub fn returner(&self) -> PoolReturn {
        PoolReturn(Arc::clone(&self.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer a dropped block gives back is the next one handed out,
    /// with its bytes; the pool keeps no more than its cap.
    #[test]
    fn the_pool_hands_out_the_buffer_given_back_last() {
        let pool = BufferPool::new(2);
        let tagged = |b: u8| {
            let mut v = pool.get(16);
            v.clear();
            v.push(b);
            v
        };
        let (a, b, c) = (tagged(1), tagged(2), tagged(3));
        for v in [a, b, c] {
            drop(Block::new(v, Some(pool.returner())));
        }
        // 3 was dropped: the pool was full. Then last in, first out.
        assert_eq!(pool.get(16), vec![2]);
        assert_eq!(pool.get(16), vec![1]);
        let fresh = pool.get(16);
        assert!(fresh.is_empty() && fresh.capacity() >= 16);
        // A block without a pool just frees its buffer.
        drop(Block::new(vec![4], None));
        assert!(pool.get(16).is_empty());
    }

    /// A segment's place: its payload's offset in the block, or for a
    /// reassembled datagram its completing frame's; no panic and no match
    /// for an offset the side buffer does not start a payload at.
    #[test]
    fn capture_offset_is_the_frames_place_in_the_block() {
        let mut block = Block::new(vec![0; 1000], None);
        block.extra = vec![0; 300];
        block.extra_frames = vec![(20, 400), (120, 700), (260, 900)];
        let seg = |payload_start, reassembled| Segment {
            payload_start,
            reassembled,
            ..Segment::default()
        };
        assert_eq!(block.capture_offset(&seg(54, false)), 54);
        assert_eq!(block.capture_offset(&seg(120, false)), 120);
        assert_eq!(block.capture_offset(&seg(20, true)), 400);
        assert_eq!(block.capture_offset(&seg(120, true)), 700);
        assert_eq!(block.capture_offset(&seg(260, true)), 900);
        for other in [0, 21, 119, 299, u32::MAX] {
            assert_eq!(block.capture_offset(&seg(other, true)), u32::MAX);
        }
        assert_eq!(
            Block::new(Vec::new(), None).capture_offset(&seg(5, true)),
            u32::MAX
        );
    }

    /// `tcp_and_payload` is `tcp_segment` and `payload` together, on
    /// ranges inside, at the end of, across the end of and past the block,
    /// with headers longer than what precedes the payload, in the block and
    /// in its side buffer.
    #[test]
    fn tcp_and_payload_is_tcp_segment_and_payload() {
        let mut block = Block::new((0..100u8).collect(), None);
        block.extra = (200..240u8).collect();
        let starts = [0u32, 1, 19, 20, 21, 39, 40, 60, 99, 100, 101, u32::MAX];
        let lens = [0u32, 1, 20, 39, 40, 41, 80, u32::MAX];
        let headers = [0u8, 20, 32, 60, 255];
        for &payload_start in &starts {
            for &payload_len in &lens {
                for &tcp_header_len in &headers {
                    for reassembled in [false, true] {
                        let seg = Segment {
                            payload_start,
                            payload_len,
                            tcp_header_len,
                            reassembled,
                            ..Segment::default()
                        };
                        assert_eq!(
                            block.tcp_and_payload(&seg),
                            (block.tcp_segment(&seg), block.payload(&seg)),
                            "{payload_start} {payload_len} {tcp_header_len} {reassembled}"
                        );
                    }
                }
            }
        }
    }
}
