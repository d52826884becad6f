//! Capture-file reader: frames classic pcap and pcapng files into packet records.
//!
//! This module owns the capture *file*: recognising the format (classic pcap in either
//! byte order with micro- or nanosecond timestamps, the Kuznetzov "modified" pcap
//! variant, and pcapng with any number of sections and interfaces), framing the file
//! into whole packet records inside large caller-owned block buffers (or windows of a
//! mapped file), converting every timestamp to nanoseconds since the Unix epoch,
//! attaching each packet's link type (per interface in pcapng), counting what it skips,
//! and reporting file-level errors as `FILE: byte OFFSET: reason`.
//!
//! It must not decode packets (that is the decoder's job: a record is only a byte range),
//! must never allocate or reserve memory by a length read from the file (buffers grow
//! only with bytes actually read, and every length is capped first), and must never
//! panic on any input: the file may be shaped by an attacker. The per-packet path is a
//! handful of bounds checks and integer reads, with no per-packet allocation or copy.
//!
//! Conventions: classic pcap `thiszone` is ignored (as libpcap does; stamps are UTC) and its
//! link type is the low 16 bits of the header field (the upper bits are FCS flags); a
//! pcapng Simple Packet Block has no timestamp and gets the last timestamp delivered
//! (0 before any); an error found after some records of a block is reported by the next
//! `next_block` call, so the records before it are always delivered first.
//!
//! The pieces: `error` (what is wrong, and where), `record` (records and counters,
//! shared with live capture), `frame` (integer reads and why a framer stops), `pcap`
//! (classic header and records), `pcapng` (sections, interfaces, blocks), `mapped` (the
//! same reader over windows of a mapped file, [`MappedReader`]), and here the reader
//! that fills block buffers and hands them to the framer of the file's format. The
//! block loop is written once, over where a block's bytes are (`Fill`: a buffer filled
//! by reads, or a window of a mapping), so that both readers frame the same bytes into
//! the same records and errors.
#![deny(unsafe_code)]

mod error;
mod frame;
#[cfg(unix)]
pub(crate) mod mapped;
mod pcap;
mod pcapng;
mod record;

use std::io::{self, Read};

pub use error::{link_type_name, CaptureError, CaptureErrorKind, TruncatedPart};
#[cfg(unix)]
pub use mapped::MappedReader;
pub use record::{PacketRecord, ReaderStats};

use frame::{word_dyn, Stop};
use pcap::{classic_magic, frame_pcap, Magic, PcapFormat};
use pcapng::{check_block_len, check_shb, shb_big_endian, NgState, SHB_TYPE};

/// libpcap's MAXIMUM_SNAPLEN: classic pcap records up to this size are always accepted.
pub(crate) const MAXIMUM_SNAPLEN: u32 = 262_144;
/// Hard cap on a pcapng block, and on a classic pcap record even if the header's
/// snaplen is larger.
pub(crate) const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
/// Default block buffer size used by [`CaptureReader::next_block`].
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
/// Smallest block size accepted by [`CaptureReader::set_block_size`].
pub const MIN_BLOCK_SIZE: usize = 64;
/// Largest block size accepted by [`CaptureReader::set_block_size`] (offsets stay `u32`).
pub(crate) const MAX_BLOCK_SIZE: usize = 1 << 30;
/// Interfaces allowed in one pcapng section before the file is declared malformed.
pub(crate) const MAX_INTERFACES: usize = 1 << 16;

/// Largest single read used when a buffer must grow beyond the block size.
const GROW_CHUNK: usize = 1 << 20;

/// The file's format, and with it which framer runs.
#[derive(Clone)]
enum Format {
    /// Classic pcap; the flag says big-endian.
    Pcap(PcapFormat, bool),
    PcapNg(NgState),
}

/// Reads until `buf` is full, EOF or an error, retrying interrupted reads. Returns the
/// bytes read (also when an error follows them) and the error, if any.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while let Some(dst) = buf.get_mut(filled..) {
        if dst.is_empty() {
            break;
        }
        match reader.read(dst) {
            Ok(0) => break,
            Ok(n) => filled += n.min(dst.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

/// Where the bytes of the block being framed are: what differs between reading a file into
/// buffers ([`ReadFill`]) and framing it where it is mapped (`MapFill`, in `mapped`). The
/// block loop ([`CaptureReader::frame_block`]) and its framers, counters and errors are the
/// same for both, so both give the same records and errors for the same bytes.
trait Fill<R: Read> {
    /// Starts a block at the reader's `consumed` offset; returns how many bytes are valid.
    fn refill(&mut self, rd: &mut CaptureReader<R>) -> Result<usize, CaptureError>;
    /// The valid bytes of the block.
    fn bytes(&self, filled: usize) -> &[u8];
    /// Makes at least `want` bytes valid, or as many as there are; returns how many are.
    fn grow(
        &mut self,
        rd: &mut CaptureReader<R>,
        filled: usize,
        want: usize,
    ) -> Result<usize, CaptureError>;
    /// Keeps `pos..filled` (a partial record) for the next block.
    fn keep(&mut self, rd: &mut CaptureReader<R>, pos: usize, filled: usize);
    /// The block ends with `filled` valid bytes.
    fn finish(&mut self, filled: usize);
}

/// A caller's buffer filled by reads.
struct ReadFill<'a>(&'a mut Vec<u8>);

impl<R: Read> Fill<R> for ReadFill<'_> {
    fn refill(&mut self, rd: &mut CaptureReader<R>) -> Result<usize, CaptureError> {
        rd.refill(self.0)
    }

    fn bytes(&self, filled: usize) -> &[u8] {
        self.0.get(..filled).unwrap_or_default()
    }

    fn grow(
        &mut self,
        rd: &mut CaptureReader<R>,
        filled: usize,
        want: usize,
    ) -> Result<usize, CaptureError> {
        rd.grow(self.0, filled, want)
    }

    fn keep(&mut self, rd: &mut CaptureReader<R>, pos: usize, filled: usize) {
        rd.carry
            .extend_from_slice(self.0.get(pos..filled).unwrap_or_default());
    }

    fn finish(&mut self, filled: usize) {
        self.0.truncate(filled);
    }
}

/// Block-oriented, zero-copy reader of classic pcap and pcapng capture files.
pub struct CaptureReader<R: Read> {
    file: String,
    reader: R,
    supported: fn(u32) -> bool,
    format: Format,
    /// Partial record left at the end of the previous block.
    carry: Vec<u8>,
    block_size: usize,
    /// The underlying reader returned 0.
    eof: bool,
    /// File offset of the end of the last whole record/block consumed.
    consumed: u64,
    /// Error found after records of the same block; returned by the next call.
    pending: Option<CaptureError>,
    /// No more calls will produce records (clean end or error returned).
    done: bool,
    stats: ReaderStats,
}

impl<R: Read> CaptureReader<R> {
    /// Reads and checks the file header (classic pcap: magic a1b2c3d4 / a1b23c4d, both byte
    /// orders, micro- or nanosecond timestamps, and the a1b2cd34 "modified" format;
    /// pcapng: Section Header Block, either byte order).
    /// `supported(link_type)` says which link types the caller can decode: a classic pcap
    /// whose link type is unsupported fails HERE with UnsupportedLinkType; in pcapng only that
    /// interface's packets are counted in skipped_unsupported_link and skipped.
    pub fn new(
        file: impl Into<String>,
        reader: R,
        supported: fn(u32) -> bool,
    ) -> Result<Self, CaptureError> {
        let mut me = CaptureReader {
            file: file.into(),
            reader,
            supported,
            format: Format::PcapNg(NgState::new(false)),
            carry: Vec::new(),
            block_size: DEFAULT_BLOCK_SIZE,
            eof: false,
            consumed: 0,
            pending: None,
            done: false,
            stats: ReaderStats::default(),
        };
        me.read_file_header()?;
        Ok(me)
    }

    /// This reader's state over another input (the file header parsed, the rest of the
    /// file to come from `reader`).
    #[cfg(unix)]
    fn rehost<S: Read>(self, reader: S) -> CaptureReader<S> {
        CaptureReader {
            file: self.file,
            reader,
            supported: self.supported,
            format: self.format,
            carry: self.carry,
            block_size: self.block_size,
            eof: self.eof,
            consumed: self.consumed,
            pending: self.pending,
            done: self.done,
            stats: self.stats,
        }
    }

    fn error(&self, offset: u64, kind: CaptureErrorKind) -> CaptureError {
        CaptureError {
            file: self.file.clone(),
            offset,
            kind,
        }
    }

    /// Reads into `buf[from..to]` until full or EOF; returns the new fill level.
    fn read_into(&mut self, buf: &mut [u8], from: usize, to: usize) -> Result<usize, CaptureError> {
        let Some(dst) = buf.get_mut(from..to) else {
            return Ok(from);
        };
        let want = dst.len();
        let (n, err) = read_full(&mut self.reader, dst);
        self.stats.bytes_read += n as u64;
        if let Some(e) = err {
            return Err(self.error(self.stats.bytes_read, CaptureErrorKind::Io(e)));
        }
        if n < want {
            self.eof = true;
        }
        Ok(from + n)
    }

    /// Appends to `buf` by reading until it holds `to` bytes or EOF, without
    /// zero-filling the room first (what [`read_into`](Self::read_into) does
    /// for bytes already there); interrupted reads are retried. Returns the
    /// new length; on an error the bytes read before it are counted as read.
    fn append_up_to(&mut self, buf: &mut Vec<u8>, to: usize) -> Result<usize, CaptureError> {
        let from = buf.len();
        let want = to.saturating_sub(from);
        let res = (&mut self.reader).take(want as u64).read_to_end(buf);
        let n = buf.len() - from;
        self.stats.bytes_read += n as u64;
        if let Err(e) = res {
            return Err(self.error(self.stats.bytes_read, CaptureErrorKind::Io(e)));
        }
        if n < want {
            self.eof = true;
        }
        Ok(buf.len())
    }

    /// Grows `buf` by reading (never by a declared length) until it holds `want` bytes
    /// or EOF. Returns the new fill level.
    fn grow(
        &mut self,
        buf: &mut Vec<u8>,
        mut filled: usize,
        want: usize,
    ) -> Result<usize, CaptureError> {
        while filled < want && !self.eof {
            let end = want.min(filled.saturating_add(GROW_CHUNK));
            if buf.len() < end {
                buf.resize(end, 0);
            }
            filled = self.read_into(buf, filled, end)?;
        }
        Ok(filled)
    }

    /// Reads and checks the file header and sets the format from it.
    fn read_file_header(&mut self) -> Result<(), CaptureError> {
        let mut head = [0u8; pcap::FILE_HEADER_LEN];
        let n = self.read_into(&mut head, 0, 4)?;
        if n == 0 {
            return Err(self.error(0, CaptureErrorKind::Empty));
        }
        if n < 4 {
            return Err(self.error(0, truncated_header(4, n)));
        }
        let [m0, m1, m2, m3, ..] = head;
        let magic = [m0, m1, m2, m3];
        if let Some(variant) = classic_magic(magic) {
            return self.read_pcap_header(head, variant);
        }
        if u32::from_be_bytes(magic) != SHB_TYPE {
            return Err(self.error(
                0,
                CaptureErrorKind::NotACapture {
                    magic: u32::from_be_bytes(magic),
                },
            ));
        }
        self.read_section_header(head)
    }

    /// The rest of a classic pcap file header, whose first four bytes (in
    /// `head`) named the `variant`.
    fn read_pcap_header(
        &mut self,
        mut head: [u8; pcap::FILE_HEADER_LEN],
        variant: Magic,
    ) -> Result<(), CaptureError> {
        let n = self.read_into(&mut head, 4, pcap::FILE_HEADER_LEN)?;
        if n < pcap::FILE_HEADER_LEN {
            return Err(self.error(0, truncated_header(24, n)));
        }
        let fmt = PcapFormat::from_header(&head, variant, self.supported)
            .map_err(|(offset, kind)| self.error(offset, kind))?;
        self.format = Format::Pcap(fmt, variant.0);
        self.consumed = 24;
        Ok(())
    }

    /// The rest of the first pcapng Section Header Block, whose first four
    /// bytes are in `head`.
    fn read_section_header(
        &mut self,
        mut head: [u8; pcap::FILE_HEADER_LEN],
    ) -> Result<(), CaptureError> {
        let n = self.read_into(&mut head, 4, 12)?;
        if n < 12 {
            return Err(self.error(0, truncated_header(28, n)));
        }
        let be = shb_big_endian(&head).map_err(|k| self.error(0, k))?;
        let len = word_dyn(be, &head, 4);
        check_block_len(len).map_err(|k| self.error(0, k))?;
        let mut shb = head.get(..12).unwrap_or_default().to_vec();
        let got = self.grow(&mut shb, 12, len as usize)?;
        if got < len as usize {
            return Err(self.error(0, truncated_header(u64::from(len), got)));
        }
        shb.truncate(got);
        let be = check_shb(&shb).map_err(|k| self.error(0, k))?;
        self.format = Format::PcapNg(NgState::new(be));
        self.consumed = u64::from(len);
        Ok(())
    }

    /// Frames whole records in `block[pos..]` with the current format.
    fn frame(
        &mut self,
        block: &[u8],
        mut pos: usize,
        records: &mut Vec<PacketRecord>,
    ) -> (usize, Stop) {
        let stats = &mut self.stats;
        match &mut self.format {
            Format::Pcap(fmt, true) => frame_pcap::<true>(fmt, block, pos, records, stats),
            Format::Pcap(fmt, false) => frame_pcap::<false>(fmt, block, pos, records, stats),
            Format::PcapNg(ng) => loop {
                let (p, stop) = if ng.big_endian {
                    ng.frame::<true>(block, pos, self.supported, records, stats)
                } else {
                    ng.frame::<false>(block, pos, self.supported, records, stats)
                };
                pos = p;
                if !matches!(stop, Stop::Switch) {
                    return (pos, stop);
                }
            },
        }
    }

    /// Records an error at `offset`: returned now if this call produced no records,
    /// otherwise kept for the next call so the records before it are delivered first.
    fn fail(&mut self, err: CaptureError, produced: bool) -> Result<bool, CaptureError> {
        if produced {
            self.pending = Some(err);
            Ok(true)
        } else {
            self.done = true;
            Err(err)
        }
    }

    /// Fills `block` with as many WHOLE records as fit and appends one PacketRecord per packet
    /// to `records` (which the caller has cleared). Returns Ok(true) while there may be more,
    /// Ok(false) at a clean end of file (never together with new records; a call that
    /// produced records returns Ok(true), and the next call Ok(false)). Ok(true) may come
    /// with no records (e.g. a block of only non-packet pcapng blocks).
    ///
    /// `block` is a reusable buffer owned by the caller; its old content is replaced by the
    /// partial record left over from the previous call followed by fresh reads until it
    /// holds `block_size` bytes or EOF. Pass the same (uncleared) buffer every time to avoid
    /// zero-filling it; any buffer works. A record bigger than the block size (within the
    /// caps) makes the buffer grow, by bytes actually read. On return `block.len()` is the
    /// number of valid bytes.
    ///
    /// An error found after some records of a block is returned by the following call, so
    /// every record before the bad one is delivered. After an error, calls return Ok(false).
    pub fn next_block(
        &mut self,
        block: &mut Vec<u8>,
        records: &mut Vec<PacketRecord>,
    ) -> Result<bool, CaptureError> {
        self.frame_block(&mut ReadFill(block), records)
    }

    /// The block loop of [`next_block`](Self::next_block), whatever holds the block's bytes:
    /// a buffer filled by reads, or a window of a mapped file ([`Fill`]).
    fn frame_block<F: Fill<R>>(
        &mut self,
        fill: &mut F,
        records: &mut Vec<PacketRecord>,
    ) -> Result<bool, CaptureError> {
        if let Some(err) = self.pending.take() {
            self.done = true;
            return Err(err);
        }
        if self.done {
            fill.finish(0);
            return Ok(false);
        }
        let first_record = records.len();
        let base = self.consumed;
        let mut filled = fill.refill(self)?;
        let mut pos = 0;
        loop {
            let (p, stop) = self.frame(fill.bytes(filled), pos, records);
            pos = p;
            let produced = records.len() > first_record;
            let at = base.saturating_add(pos as u64);
            self.consumed = at;
            match stop {
                Stop::Fail(kind) => {
                    fill.finish(filled);
                    let err = self.error(at, kind);
                    return self.fail(err, produced);
                }
                Stop::Switch => {
                    // Handled inside frame(); unreachable, but harmless: keep framing.
                    continue;
                }
                Stop::Short {
                    part,
                    needed,
                    available,
                    total,
                } => {
                    if pos >= filled {
                        fill.finish(filled);
                        if self.eof {
                            self.done = true;
                            return Ok(produced);
                        }
                        return Ok(true);
                    }
                    if self.eof {
                        fill.finish(filled);
                        let err = self.error(
                            at,
                            CaptureErrorKind::Truncated {
                                part,
                                needed,
                                available,
                            },
                        );
                        return self.fail(err, produced);
                    }
                    if pos > 0 {
                        fill.keep(self, pos, filled);
                        fill.finish(filled);
                        return Ok(true);
                    }
                    // A single record larger than the block: grow (by reading) and retry.
                    let want = total.max(filled.saturating_add(1));
                    filled = match fill.grow(self, filled, want) {
                        Ok(f) => f,
                        Err(e) => {
                            fill.finish(filled);
                            self.done = true;
                            return Err(e);
                        }
                    };
                }
            }
        }
    }

    /// Starts a block: the partial record carried over from the previous call, then
    /// fresh reads up to the block size (or EOF). Returns how many bytes of `block` are
    /// valid. A read error ends the file.
    ///
    /// A buffer that already holds a block's length (a pooled one) is
    /// overwritten where it is; a shorter one (fresh from the pool, with
    /// only capacity) is filled by reading into its spare capacity, so that
    /// its megabyte is not zero-filled first only to be overwritten.
    fn refill(&mut self, block: &mut Vec<u8>) -> Result<usize, CaptureError> {
        let carry_len = self.carry.len();
        let target = self.block_size.max(carry_len);
        if block.len() < target {
            block.clear();
            block.reserve_exact(target);
            block.extend_from_slice(&self.carry);
            self.carry.clear();
            if self.eof {
                return Ok(carry_len);
            }
            return match self.append_up_to(block, target) {
                Ok(filled) => Ok(filled),
                Err(e) => {
                    block.truncate(carry_len);
                    self.done = true;
                    Err(e)
                }
            };
        }
        block.truncate(target);
        if let Some(dst) = block.get_mut(..carry_len) {
            dst.copy_from_slice(&self.carry);
        }
        self.carry.clear();
        if self.eof {
            return Ok(carry_len);
        }
        match self.read_into(block, carry_len, target) {
            Ok(filled) => Ok(filled),
            Err(e) => {
                block.truncate(carry_len);
                self.done = true;
                Err(e)
            }
        }
    }

    /// What a read of `block[from..to]` would do on a file of `len` bytes that is already
    /// in memory: counts the bytes as read and notes the end of file, copying nothing.
    /// Returns the new fill level.
    fn skip_into(&mut self, len: usize, from: usize, to: usize) -> usize {
        if self.eof || to <= from {
            return from;
        }
        let want = to - from;
        let at = usize::try_from(self.stats.bytes_read).unwrap_or(usize::MAX);
        let n = want.min(len.saturating_sub(at));
        self.stats.bytes_read += n as u64;
        if n < want {
            self.eof = true;
        }
        from + n
    }

    /// Counters of delivered and skipped things so far.
    pub fn stats(&self) -> &ReaderStats {
        &self.stats
    }

    /// File offset of the end of the last whole record (or block) consumed, for progress.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Sets the block size used by later [`next_block`](Self::next_block) calls, clamped to
    /// `MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE`. Default 1 MiB.
    pub fn set_block_size(&mut self, n: usize) {
        self.block_size = n.clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
    }

    /// The block size in use.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The file name given to [`new`](Self::new), used in error messages.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// Link type of a classic pcap file (`None` for pcapng, where it is per interface).
    pub fn pcap_link_type(&self) -> Option<u32> {
        match &self.format {
            Format::Pcap(fmt, _) => Some(fmt.link_type),
            Format::PcapNg(_) => None,
        }
    }

    /// True for pcapng input.
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::PcapNg(_))
    }
}

/// The file ends inside its header: `needed` bytes, `available` there.
fn truncated_header(needed: u64, available: usize) -> CaptureErrorKind {
    CaptureErrorKind::Truncated {
        part: TruncatedPart::FileHeader,
        needed,
        available: available as u64,
    }
}

#[cfg(test)]
mod tests;
