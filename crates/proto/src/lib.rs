//! The protocol layer: QMTP and QMQP over reassembled TCP byte streams.
//!
//! Owns: recognising QMTP/QMQP from a flow's first bytes ([`sniff`]) and
//! deciding whether a new flow is worth parsing ([`admission`]), parsing
//! client requests ([`request`]) and server replies ([`reply`]) incrementally
//! with the zero-copy [`netstring`] tokenizer, matching replies to recipients,
//! and deciding when a session is confirmed ([`session`]). Its output is a
//! stream of [`Record`]s: facts about what was said on the wire. The
//! anomaly vocabulary of every layer is [`AnomalyKind`] ([`anomaly`]).
//!
//! Must not: copy message bodies (they are skipped by length), copy any field
//! beyond [`MAX_FIELD_BYTES`], hold more than [`MAX_RECIPIENTS`] recipients or
//! [`MAX_PENDING`] pipelined packages per session, look at IP/TCP headers, or
//! apply site policy (trusted networks, local domains: that is `detect`'s job).
//!
//! The crate is pure: no I/O, no threads, no dependencies; fed any split of
//! the bytes, it gives the same records.
#![deny(unsafe_code)]

pub mod admission;
pub mod anomaly;
pub mod netstring;
pub mod reply;
pub mod request;
pub mod session;
pub mod sniff;

use std::net::SocketAddr;

pub use anomaly::AnomalyKind;

/// Longest address or reply text copied; longer ones are cut and flagged.
/// qmail refuses addresses of 1000 bytes or more: such an address is still
/// reported whole, with the server's refusal.
pub const MAX_FIELD_BYTES: usize = 4096;
/// Recipients stored per transaction; more are counted, not stored.
pub const MAX_RECIPIENTS: usize = 1000;
/// Address bytes stored per transaction (sender and recipients); recipients
/// past it are counted, not stored, like those past [`MAX_RECIPIENTS`].
pub(crate) const MAX_REQUEST_FIELD_BYTES: usize = 64 * 1024;
/// Pipelined packages awaiting replies per session; more are reported unanswered.
pub(crate) const MAX_PENDING: usize = 32;
/// Replies held before their request was parsed.
pub(crate) const MAX_EARLY_REPLIES: usize = 256;
/// Bytes of a message's start kept to recognise scanner probes.
pub const MESSAGE_PREFIX_BYTES: usize = 64;

/// QMTP (port 209) or QMQP (port 628).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Qmtp,
    Qmqp,
}

impl Protocol {
    /// QMQP for QMTP and the other way round.
    pub fn other(self) -> Protocol {
        match self {
            Protocol::Qmtp => Protocol::Qmqp,
            Protocol::Qmqp => Protocol::Qmtp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Qmtp => "qmtp",
            Protocol::Qmqp => "qmqp",
        }
    }
    /// The port IANA assigned (209, 628). Inlined: the flow table asks
    /// it, through [`admission`], for every new flow's first payload.
    #[inline]
    pub const fn standard_port(self) -> u16 {
        match self {
            Protocol::Qmtp => 209,
            Protocol::Qmqp => 628,
        }
    }
}

/// QMTP message line-ending encoding, from the message's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// 0x0d: "encoding #1", CRLF line endings.
    Crlf,
    /// 0x0a: "encoding #2", LF line endings.
    Lf,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Crlf => "CRLF",
            Encoding::Lf => "LF",
        }
    }
}

/// A small copied field (an address or a reply text), bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Field {
    pub bytes: Vec<u8>,
    /// Longer than [`MAX_FIELD_BYTES`]: only the start was kept.
    pub truncated: bool,
    /// Some of its bytes were lost in a capture gap.
    pub damaged: bool,
    /// Its full length on the wire.
    pub wire_len: u64,
}

impl Field {
    pub fn push(&mut self, data: &[u8]) {
        self.wire_len += data.len() as u64;
        let room = MAX_FIELD_BYTES.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }
    /// The bytes as text, invalid UTF-8 replaced (U+FFFD). Valid text is
    /// checked by `from_utf8`, a word at a time, rather than by the lossy
    /// decoder's walk through each character.
    pub fn text(&self) -> String {
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(&self.bytes).into_owned(),
        }
    }
}

/// What a client sent: a QMTP package or a QMQP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub protocol: Protocol,
    /// QMTP only.
    pub encoding: Option<Encoding>,
    /// QMTP: message length without the encoding byte; QMQP: message netstring length.
    pub message_bytes: u64,
    /// Message bytes lost in capture gaps (skipped anyway).
    pub message_gap_bytes: u64,
    /// The message's first bytes (QMTP: including the encoding byte), at most
    /// [`MESSAGE_PREFIX_BYTES`]: enough to recognise a scanner's probe.
    pub message_prefix: Vec<u8>,
    /// `None` until the sender netstring was read.
    pub sender: Option<Field>,
    /// Stored recipients, in wire order (at most [`MAX_RECIPIENTS`]).
    pub recipients: Vec<Field>,
    /// All recipients on the wire, stored or not.
    pub recipient_count: u64,
    /// Bytes of the stored recipients.
    pub recipient_bytes: usize,
    /// Client stream offsets of the request's first and one-past-last byte.
    pub start_offset: u64,
    pub end_offset: u64,
    /// Packet times (ns) of the first and last byte.
    pub first_ts: u64,
    pub last_ts: u64,
    pub state: RequestState,
}

/// How far a request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Fully sent and well-formed.
    Complete,
    /// The stream ended (or was lost) in the middle of it.
    Truncated,
    /// Not a well-formed request, for this reason.
    Malformed(AnomalyKind),
}

impl Request {
    pub fn new(protocol: Protocol, start_offset: u64, ts: u64) -> Self {
        Request {
            protocol,
            encoding: None,
            message_bytes: 0,
            message_gap_bytes: 0,
            message_prefix: Vec::new(),
            sender: None,
            recipients: Vec::new(),
            recipient_count: 0,
            recipient_bytes: 0,
            start_offset,
            end_offset: start_offset,
            first_ts: ts,
            last_ts: ts,
            state: RequestState::Truncated,
        }
    }

    /// Keeps the start of the message, up to [`MESSAGE_PREFIX_BYTES`].
    pub fn note_message(&mut self, data: &[u8]) {
        let room = MESSAGE_PREFIX_BYTES.saturating_sub(self.message_prefix.len());
        if room > 0 {
            self.message_prefix
                .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
        }
    }

    pub fn add_recipient(&mut self, f: Field) {
        self.recipient_count += 1;
        let total = self.recipient_bytes.saturating_add(f.bytes.len());
        if self.recipients.len() < MAX_RECIPIENTS && total <= MAX_REQUEST_FIELD_BYTES {
            self.recipient_bytes = total;
            self.recipients.push(f);
        }
    }

    /// Bytes of copied fields this request holds.
    pub fn stored_bytes(&self) -> usize {
        self.recipient_bytes
            + self.sender.as_ref().map_or(0, |s| s.bytes.len())
            + self.message_prefix.len()
    }
}

/// The first byte of a reply netstring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// Accepted.
    K,
    /// Temporary failure.
    Z,
    /// Permanent failure.
    D,
}

impl ReplyCode {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'K' => Some(ReplyCode::K),
            b'Z' => Some(ReplyCode::Z),
            b'D' => Some(ReplyCode::D),
            _ => None,
        }
    }
    pub fn letter(self) -> &'static str {
        match self {
            ReplyCode::K => "K",
            ReplyCode::Z => "Z",
            ReplyCode::D => "D",
        }
    }
}

/// One reply netstring from a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    /// Text after the code letter.
    pub text: Field,
    /// Packet time of its last byte.
    pub ts: u64,
    /// Client stream offset acknowledged by the segment that carried it.
    pub acked_client_offset: Option<u64>,
}

/// Client and server of a session, as the session layer decided them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// How a service was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A well-formed request answered by a K/Z/D reply netstring.
    RequestAndReply,
    /// Only a K/Z/D reply netstring (server spoke first, or answered garbage).
    ReplyOnly,
}

impl Evidence {
    pub fn name(self) -> &'static str {
        match self {
            Evidence::RequestAndReply => "request_and_reply",
            Evidence::ReplyOnly => "reply_only",
        }
    }
}

/// One QMTP package or QMQP message with whatever replies it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub endpoints: Endpoints,
    pub protocol: Protocol,
    /// `None` when the server replied but no request was seen (garbage, or nothing).
    pub request: Option<Request>,
    /// Per stored recipient, in order: its reply (QMQP: the single reply, copied).
    pub replies: Vec<Option<Reply>>,
    /// QMQP's single reply; for QMTP, a reply left over with no recipient.
    pub reply: Option<Reply>,
    /// Replies counted by code, over all recipients (stored or not).
    pub codes: CodeCounts,
    /// 1-based position of the transaction in its session.
    pub index: u32,
    /// The session was confirmed (request and reply, or reply only).
    pub session_confirmed: bool,
    /// Time the transaction is reported at (its last reply, or the flow's end).
    pub ts: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeCounts {
    pub k: u64,
    pub z: u64,
    pub d: u64,
    pub missing: u64,
}

impl CodeCounts {
    /// Counts `n` recipients answered with `code`.
    pub fn add_n(&mut self, code: Option<ReplyCode>, n: u64) {
        match code {
            Some(ReplyCode::K) => self.k += n,
            Some(ReplyCode::Z) => self.z += n,
            Some(ReplyCode::D) => self.d += n,
            None => self.missing += n,
        }
    }

    pub fn add(&mut self, code: Option<ReplyCode>) {
        match code {
            Some(ReplyCode::K) => self.k += 1,
            Some(ReplyCode::Z) => self.z += 1,
            Some(ReplyCode::D) => self.d += 1,
            None => self.missing += 1,
        }
    }
}

impl Transaction {
    /// Fully sent, well-formed, and every recipient answered.
    pub fn complete(&self) -> bool {
        match &self.request {
            Some(r) => r.state == RequestState::Complete && self.codes.missing == 0,
            None => false,
        }
    }
}

/// A protocol violation or reassembly conflict seen on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub endpoints: Endpoints,
    pub protocol: Option<Protocol>,
    pub kind: AnomalyKind,
    /// Short, bounded, human-readable detail.
    pub detail: String,
    pub ts: u64,
}

/// What the protocol layer reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A session confirmed a server speaking `protocol`.
    Service {
        endpoints: Endpoints,
        protocol: Protocol,
        evidence: Evidence,
        ts: u64,
    },
    Transaction(Box<Transaction>),
    Anomaly(Box<Anomaly>),
}

/// Makes bytes safe to show in a one-line detail: printable ASCII kept,
/// the rest escaped, at most `max` input bytes.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b' '..=b'~' => s.push(char::from(b)),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_bounded() {
        let mut f = Field::default();
        f.push(&[b'a'; 3000]);
        assert!(!f.truncated);
        f.push(&[b'b'; 3000]);
        assert_eq!(f.bytes.len(), MAX_FIELD_BYTES);
        assert!(f.truncated);
        assert_eq!(f.wire_len, 6000);
    }

    #[test]
    fn request_field_bytes_are_bounded() {
        let mut r = Request::new(Protocol::Qmtp, 0, 0);
        for _ in 0..100 {
            let mut f = Field::default();
            f.push(&[b'x'; 4000]);
            r.add_recipient(f);
        }
        assert_eq!(r.recipient_count, 100);
        assert_eq!(r.recipients.len(), MAX_REQUEST_FIELD_BYTES / 4000);
        assert!(r.stored_bytes() <= MAX_REQUEST_FIELD_BYTES);
    }

    #[test]
    fn printable_escapes() {
        assert_eq!(printable(b"EHLO x\r\n\x00", 64), "EHLO x\\r\\n\\x00");
        assert_eq!(printable(b"abcdef", 3), "abc…");
    }
}
