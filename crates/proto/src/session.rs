//! One TCP connection seen as a (possible) QMTP/QMQP session.
//!
//! Owns: deciding which side is the client (from the SYN, or for flows picked
//! up mid-stream from who sends a package and who sends replies), choosing the
//! request parser from the client's first bytes, matching replies to
//! recipients in order (QMTP, across pipelined packages) or to the single
//! message (QMQP), confirming the session, and emitting [`Record`]s.
//!
//! Must not: emit anything for a flow that never looked like QMTP/QMQP, hold
//! unbounded state (pending packages, early replies and held anomalies are
//! capped), or look at addresses beyond the endpoints it was given.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::admission::{is_standard_port, standard_protocol};
use super::reply::ReplyParser;
use super::request::{RequestEvent, RequestParser};
use super::sniff::{Sniffer, Verdict};
use super::{
    printable, Anomaly, AnomalyKind, CodeCounts, Endpoints, Evidence, Protocol, Record, Reply,
    Request, RequestState, Transaction, MAX_EARLY_REPLIES, MAX_PENDING,
};

/// Copied bytes (addresses, reply texts) a session may hold; replies past
/// it keep their code but not their text (flagged truncated).
pub(crate) const SESSION_STORED_BYTES: usize = 256 * 1024;

/// Held anomalies of a session that is not confirmed yet.
const MAX_HELD_ANOMALIES: usize = 16;
/// Held packages no reply is awaited for, of a session not confirmed yet.
const MAX_HELD_PACKAGES: usize = 16;
/// Mid-stream flows: segments to try recognising before giving up.
const RESYNC_ATTEMPTS: u8 = 8;
/// Bytes of a wrong-protocol client's first data kept for the anomaly.
const WRONG_PROTOCOL_SAMPLE: usize = 48;

/// What the flow layer should do with the flow after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Keep reassembling and feeding.
    Continue,
    /// Not QMTP/QMQP: stop reassembling and free the session.
    Reject,
}

/// Counters a session contributes to the worker's statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionCounters {
    pub replies_to_unseen_requests: u64,
    pub anomalies_dropped_unconfirmed: u64,
    pub requests_dropped_unconfirmed: u64,
}

#[derive(Clone, Debug)]
struct Side {
    sniffer: Sniffer,
    /// Stream offset of the first byte the sniffer looked at.
    sniff_offset: Option<u64>,
    /// Mid-stream: remaining tries at a later segment start.
    resync_left: u8,
    ended: bool,
}

impl Side {
    fn new(midstream: bool) -> Self {
        Side {
            sniffer: Sniffer::new(),
            sniff_offset: None,
            resync_left: if midstream { RESYNC_ATTEMPTS } else { 0 },
            ended: false,
        }
    }
}

#[derive(Clone, Debug)]
struct Pending {
    request: Request,
    replies: Vec<Option<Reply>>,
    answered: u64,
    codes: CodeCounts,
    /// Bytes this pending transaction holds (for the session budget).
    bytes: usize,
}

#[derive(Clone, Debug)]
struct WrongProtocol {
    sample: Vec<u8>,
    ts: u64,
}

/// The protocol state of one flow.
#[derive(Debug)]
pub struct Session {
    /// Source address of each flow direction (0 and 1).
    addrs: [SocketAddr; 2],
    client_dir: Option<usize>,
    midstream: bool,
    sides: [Side; 2],
    server_hint: bool,
    /// The protocol the server was confirmed as elsewhere in this run: bytes
    /// that fit both are read as that protocol.
    server_protocol: Option<Protocol>,
    /// The server's first bytes were another protocol's: the flow is no
    /// QMTP/QMQP flow, evasion signatures or not.
    server_other: bool,
    client: Option<RequestParser>,
    server: Option<ReplyParser>,
    protocol: Option<Protocol>,
    confirmed: Option<Evidence>,
    rejected: bool,
    pending: VecDeque<Pending>,
    early: VecDeque<Reply>,
    broken: Vec<Request>,
    /// Complete packages no reply is awaited for (a QMTP package naming no
    /// recipient; the oldest of too many pipelined ones), while the
    /// session is not confirmed: written when it is, or at its end, never
    /// for a flow rejected later (at most [`MAX_HELD_PACKAGES`]).
    unawaited: Vec<Pending>,
    held: Vec<Anomaly>,
    wrong: Option<WrongProtocol>,
    /// Why the session rejected the flow, when it did (see
    /// [`Session::rejection`]).
    rejection: Option<Anomaly>,
    requests_seen: u64,
    replies_seen: u64,
    first_request_offset: Option<u64>,
    txn_index: u32,
    /// Bytes held by pending transactions.
    pending_bytes: usize,
    /// Mid-stream QMTP: replies are matched at the end (see `resolve_deferred`).
    defer: bool,
    pub counters: SessionCounters,
    scratch_requests: Vec<RequestEvent>,
    scratch_replies: Vec<Reply>,
}

impl Session {
    /// `addrs[d]` is the source of direction `d`; `client_dir` comes from the
    /// SYN when it was seen. `server_hint` says the server side is already
    /// known to be a QMTP/QMQP server, or sits on 209/628, so that a client
    /// speaking another protocol to it is worth reporting.
    pub fn new(addrs: [SocketAddr; 2], client_dir: Option<usize>, midstream: bool) -> Self {
        Session {
            addrs,
            client_dir,
            midstream,
            sides: [Side::new(midstream), Side::new(midstream)],
            server_hint: false,
            server_protocol: None,
            server_other: false,
            client: None,
            server: None,
            protocol: None,
            confirmed: None,
            rejected: false,
            pending: VecDeque::new(),
            early: VecDeque::new(),
            broken: Vec::new(),
            unawaited: Vec::new(),
            held: Vec::new(),
            wrong: None,
            rejection: None,
            requests_seen: 0,
            replies_seen: 0,
            first_request_offset: None,
            txn_index: 0,
            pending_bytes: 0,
            defer: false,
            counters: SessionCounters::default(),
            scratch_requests: Vec::new(),
            scratch_replies: Vec::new(),
        }
    }

    /// Copied bytes the session holds (addresses, reply texts), for the
    /// worker's memory cap.
    pub fn stored_bytes(&self) -> usize {
        self.pending_bytes
            + self
                .early
                .iter()
                .map(|r| r.text.bytes.len() + 64)
                .sum::<usize>()
            + self.broken.iter().map(|r| r.stored_bytes()).sum::<usize>()
    }

    pub fn client_dir(&self) -> Option<usize> {
        self.client_dir
    }

    pub fn confirmed(&self) -> Option<Evidence> {
        self.confirmed
    }

    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    fn endpoints(&self) -> Endpoints {
        let c = self.client_dir.unwrap_or(0);
        let client = self.addrs.get(c).copied().unwrap_or(self.addrs[0]);
        let server = self
            .addrs
            .get(1 - c.min(1))
            .copied()
            .unwrap_or(self.addrs[1]);
        Endpoints { client, server }
    }

    fn server_port_is_standard(&self) -> bool {
        is_standard_port(self.endpoints().server.port())
    }

    /// The client's first bytes (`sample`) were not QMTP/QMQP; the session
    /// only watches whether the server answers with reply netstrings.
    pub fn client_spoke_other(&mut self, sample: &[u8], ts: u64) {
        self.wrong = Some(WrongProtocol {
            sample: sample
                .get(..sample.len().min(WRONG_PROTOCOL_SAMPLE))
                .unwrap_or_default()
                .to_vec(),
            ts,
        });
    }

    /// Anomalies held by a session that was then rejected as not
    /// QMTP/QMQP, which are evasion signatures: the bytes that made it look
    /// like something else may not be the bytes the endpoint took, so the
    /// flow is reported even though it was never confirmed.
    pub fn take_evasion_signs(&mut self) -> Vec<Anomaly> {
        if self.rejected && !self.server_other {
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        }
    }

    /// Marks the server as one already confirmed elsewhere in this run.
    pub fn set_known_server(&mut self) {
        self.server_hint = true;
    }

    /// Marks the server as confirmed elsewhere in this run as `protocol`: a
    /// request of the other protocol sent to it is another protocol spoken
    /// to this server (a QMQP server answers a QMTP package with one reply
    /// netstring, which would also read as a one-recipient QMTP reply).
    pub fn set_known_server_protocol(&mut self, protocol: Protocol) {
        self.server_hint = true;
        self.server_protocol = Some(protocol);
    }

    /// Records an anomaly found below the protocol layer (reassembly).
    pub fn anomaly(&mut self, kind: AnomalyKind, detail: String, ts: u64, out: &mut Vec<Record>) {
        let a = Anomaly {
            endpoints: self.endpoints(),
            protocol: self.protocol,
            kind,
            detail,
            ts,
        };
        self.push_anomaly(a, out);
    }

    fn push_anomaly(&mut self, a: Anomaly, out: &mut Vec<Record>) {
        if self.confirmed.is_some() {
            out.push(Record::Anomaly(Box::new(a)));
            return;
        }
        if self.held.len() < MAX_HELD_ANOMALIES {
            self.held.push(a);
            return;
        }
        // Full. An evasion sign goes in, and the latest anomaly that is not
        // one goes: the signs are what reports a flow the session then
        // rejects (`take_evasion_signs`), and chaff with bad checksums,
        // which a sender of chaff adds at will, would otherwise fill the
        // list first and silence the conflict that follows.
        let place = a
            .kind
            .is_evasion_sign()
            .then(|| self.held.iter().rposition(|h| !h.kind.is_evasion_sign()))
            .flatten();
        if let Some(i) = place {
            self.held.remove(i);
            self.held.push(a);
        }
        self.counters.anomalies_dropped_unconfirmed += 1;
    }

    /// Why the session stopped reading the flow as QMTP/QMQP, once it
    /// has: the first thing that was not QMTP/QMQP. A flow layer that
    /// admitted the flow as QMTP/QMQP on other grounds (a detector that
    /// already claimed it) reports it; qmwatch's own flow table does not,
    /// as it admits candidates that may be anything.
    pub fn rejection(&self) -> Option<&Anomaly> {
        self.rejection.as_ref()
    }

    /// Anomalies found while the session is not confirmed, held until it
    /// is (then reported) or until the flow ends (then dropped, as the
    /// flow may be no QMTP/QMQP at all). A flow layer that knows the flow
    /// is QMTP/QMQP's on other grounds may report them at once.
    pub fn held_anomalies(&self) -> &[Anomaly] {
        &self.held
    }

    /// The client speaks another protocol to this QMTP/QMQP server: the
    /// kind and what the client sent. The session reports it when the flow
    /// ends, with what the server answered.
    pub fn wrong_protocol(&self) -> Option<(AnomalyKind, String)> {
        let w = self.wrong.as_ref()?;
        Some((
            wrong_protocol_kind(&w.sample),
            format!(
                "client sent \"{}\"",
                printable(&w.sample, WRONG_PROTOCOL_SAMPLE)
            ),
        ))
    }

    /// The server's stream ends inside a reply netstring: when the flow is
    /// over, that reply's end was lost. An anomaly for a flow layer whose
    /// stream may end short of what the endpoints exchanged (qmwatch's own
    /// flow table reports capture loss by other means and does not ask).
    pub fn reply_cut_short(&self, ts: u64) -> Option<Anomaly> {
        if self.rejected || !self.server.as_ref().is_some_and(ReplyParser::in_reply) {
            return None;
        }
        Some(Anomaly {
            endpoints: self.endpoints(),
            protocol: self.protocol,
            kind: AnomalyKind::GapInReplyStream,
            detail: "the server's stream ended inside a reply netstring".into(),
            ts,
        })
    }

    /// Rejects the flow, noting why.
    fn reject_because(&mut self, kind: AnomalyKind, detail: String, ts: u64) -> Status {
        if self.rejection.is_none() {
            self.rejection = Some(Anomaly {
                endpoints: self.endpoints(),
                protocol: self.protocol,
                kind,
                detail,
                ts,
            });
        }
        self.reject()
    }

    fn reject(&mut self) -> Status {
        self.rejected = true;
        self.pending.clear();
        self.unawaited.clear();
        self.early.clear();
        // Evasion signatures stay for the flow layer to report (see
        // `take_evasion_signs`); the rest go.
        self.held.retain(|a| a.kind.is_evasion_sign());
        self.broken.clear();
        self.client = None;
        self.server = None;
        Status::Reject
    }

    /// In-order bytes of direction `dir`, starting at stream offset `offset`.
    /// `peer_ack` is the other direction's stream offset acknowledged by the
    /// segment that carried them.
    pub fn data(
        &mut self,
        dir: usize,
        offset: u64,
        data: &[u8],
        ts: u64,
        peer_ack: Option<u64>,
        out: &mut Vec<Record>,
    ) -> Status {
        if self.rejected {
            return Status::Reject;
        }
        if data.is_empty() || dir > 1 {
            return Status::Continue;
        }
        let role_client = match self.client_dir {
            Some(c) => c == dir,
            None => {
                // Roles unknown (picked up mid-stream): let the bytes decide.
                match self.sniff(dir, offset, data) {
                    None => return Status::Continue,
                    Some(Verdict::Qmtp) | Some(Verdict::Qmqp) => {
                        self.client_dir = Some(dir);
                        true
                    }
                    Some(Verdict::Reply) => {
                        self.client_dir = Some(1 - dir);
                        false
                    }
                    Some(Verdict::Other) => return self.retry_or_reject(dir),
                }
            }
        };
        if role_client {
            self.client_data(dir, offset, data, ts, out)
        } else {
            self.server_data(dir, offset, data, ts, peer_ack, out)
        }
    }

    /// Feeds the sniffer of `dir`; remembers where its bytes began.
    fn sniff(&mut self, dir: usize, offset: u64, data: &[u8]) -> Option<Verdict> {
        let side = self.sides.get_mut(dir)?;
        if let Some(v) = side.sniffer.verdict() {
            return Some(v);
        }
        if side.sniff_offset.is_none() {
            side.sniff_offset = Some(offset);
        }
        side.sniffer.feed(data).0
    }

    /// Mid-stream flows get a few more chances at later segment starts.
    fn retry_or_reject(&mut self, dir: usize) -> Status {
        match self.sides.get_mut(dir) {
            Some(side) if side.resync_left > 0 => {
                side.resync_left -= 1;
                side.sniffer = Sniffer::new();
                side.sniff_offset = None;
                Status::Continue
            }
            _ => self.reject(),
        }
    }

    // Long: the client's first bytes decide between a request parser, watching a wrong protocol and rejecting, from one sniffer state.
    fn client_data(
        &mut self,
        dir: usize,
        offset: u64,
        data: &[u8],
        ts: u64,
        out: &mut Vec<Record>,
    ) -> Status {
        if let Some(w) = self.wrong.as_mut() {
            // Complete the sample however the client's bytes were segmented.
            let room = WRONG_PROTOCOL_SAMPLE.saturating_sub(w.sample.len());
            w.sample
                .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
            return Status::Continue;
        }
        if self.client.is_none() {
            let verdict = match self.sniff(dir, offset, data) {
                None => return Status::Continue,
                Some(v) => v,
            };
            let sniffed = match verdict {
                Verdict::Qmtp => Some(Protocol::Qmtp),
                Verdict::Qmqp => Some(Protocol::Qmqp),
                Verdict::Reply | Verdict::Other => None,
            };
            // A request of the other protocol to a known server is not that
            // server's protocol: handled as any other protocol spoken to it.
            let sniffed = sniffed.filter(|p| self.server_protocol.is_none_or(|s| s == *p));
            let protocol = match sniffed {
                Some(p) => p,
                None => {
                    if self.midstream && self.sides[dir].resync_left > 0 {
                        return self.retry_or_reject(dir);
                    }
                    // What the sniffer saw plus the rest of this chunk.
                    let mut sample = self.sides[dir].sniffer.stashed().to_vec();
                    let seen_here = usize::try_from(
                        (self.sides[dir].sniff_offset.unwrap_or(offset) + sample.len() as u64)
                            .saturating_sub(offset),
                    )
                    .unwrap_or(0);
                    if let Some(rest) = data.get(seen_here.min(data.len())..) {
                        let room = WRONG_PROTOCOL_SAMPLE.saturating_sub(sample.len());
                        sample.extend_from_slice(
                            rest.get(..room.min(rest.len())).unwrap_or_default(),
                        );
                    }
                    sample.truncate(WRONG_PROTOCOL_SAMPLE);
                    if self.server_hint || self.server_port_is_standard() || self.replies_seen > 0 {
                        // Another protocol spoken to a QMTP/QMQP server: watch
                        // what the server answers.
                        self.wrong = Some(WrongProtocol { sample, ts });
                        return Status::Continue;
                    }
                    let detail = format!(
                        "client sent \"{}\", not a QMTP/QMQP request",
                        printable(&sample, WRONG_PROTOCOL_SAMPLE)
                    );
                    return self.reject_because(wrong_protocol_kind(&sample), detail, ts);
                }
            };
            let start = self.sides[dir].sniff_offset.unwrap_or(offset);
            self.protocol = Some(protocol);
            self.defer = self.midstream && protocol == Protocol::Qmtp;
            self.first_request_offset = Some(start);
            if protocol == Protocol::Qmtp {
                // Replies held before the protocol was known: apply the test
                // `on_reply` applies to QMTP replies, so that a reply to a
                // package before our view is not matched to the first one seen.
                let held = self.early.len();
                let midstream = self.midstream;
                self.early.retain(|r| {
                    !(midstream || r.acked_client_offset.is_some_and(|ack| ack <= start))
                });
                self.counters.replies_to_unseen_requests += (held - self.early.len()) as u64;
            }
            let mut parser = RequestParser::new(protocol, start);
            // Replay what the sniffer looked at, then the rest of this chunk.
            let stash = self.sides[dir].sniffer.stashed().to_vec();
            let mut events = std::mem::take(&mut self.scratch_requests);
            parser.feed(&stash, ts, &mut events);
            let consumed_here =
                usize::try_from(parser.offset().saturating_sub(offset)).unwrap_or(0);
            if let Some(rest) = data.get(consumed_here.min(data.len())..) {
                parser.feed(rest, ts, &mut events);
            }
            self.client = Some(parser);
            self.on_requests(&mut events, ts, out);
            self.scratch_requests = events;
            return Status::Continue;
        }
        let mut events = std::mem::take(&mut self.scratch_requests);
        if let Some(p) = self.client.as_mut() {
            p.feed(data, ts, &mut events);
        }
        self.on_requests(&mut events, ts, out);
        self.scratch_requests = events;
        Status::Continue
    }

    fn server_data(
        &mut self,
        dir: usize,
        offset: u64,
        data: &[u8],
        ts: u64,
        peer_ack: Option<u64>,
        out: &mut Vec<Record>,
    ) -> Status {
        let mut replies = std::mem::take(&mut self.scratch_replies);
        let failure = if let Some(p) = self.server.as_mut() {
            p.feed(data, ts, peer_ack, &mut replies)
        } else {
            match self.sniff(dir, offset, data) {
                None => {
                    self.scratch_replies = replies;
                    return Status::Continue;
                }
                Some(Verdict::Reply) => {
                    let mut p = ReplyParser::new();
                    let start = self.sides[dir].sniff_offset.unwrap_or(offset);
                    let stash = self.sides[dir].sniffer.stashed().to_vec();
                    let mut f = p.feed(&stash, ts, peer_ack, &mut replies);
                    let consumed_here =
                        usize::try_from((start + stash.len() as u64).saturating_sub(offset))
                            .unwrap_or(0);
                    if f.is_none() {
                        if let Some(rest) = data.get(consumed_here.min(data.len())..) {
                            f = p.feed(rest, ts, peer_ack, &mut replies);
                        }
                    }
                    self.server = Some(p);
                    f
                }
                Some(_) => {
                    self.scratch_replies = replies;
                    if self.midstream && self.sides[dir].resync_left > 0 {
                        return self.retry_or_reject(dir);
                    }
                    if self.confirmed.is_none() {
                        // The server itself speaks another protocol (an SMTP
                        // banner, an HTTP response): whatever tricks its
                        // bytes showed, this is no QMTP/QMQP flow.
                        self.server_other = true;
                        return self.reject_server_other(dir, ts);
                    }
                    return Status::Continue;
                }
            }
        };
        for r in replies.drain(..) {
            self.on_reply(r, out);
        }
        self.scratch_replies = replies;
        if let Some(kind) = failure {
            if self.confirmed.is_none() && self.replies_seen == 0 {
                return self.reject_because(
                    kind,
                    "server stream is not reply netstrings".into(),
                    ts,
                );
            }
            self.anomaly(
                kind,
                "server stream stopped being reply netstrings".into(),
                ts,
                out,
            );
        }
        self.try_confirm(ts, out);
        Status::Continue
    }

    /// Rejects a flow whose server's first bytes are no reply netstring,
    /// noting what a reply parser makes of them.
    fn reject_server_other(&mut self, dir: usize, ts: u64) -> Status {
        let stash = self
            .sides
            .get(dir)
            .map(|s| s.sniffer.stashed().to_vec())
            .unwrap_or_default();
        let kind = ReplyParser::new()
            .feed(&stash, ts, None, &mut Vec::new())
            .unwrap_or(AnomalyKind::ReplyBadCode);
        let detail = format!(
            "server sent \"{}\", not reply netstrings",
            printable(&stash, WRONG_PROTOCOL_SAMPLE)
        );
        self.reject_because(kind, detail, ts)
    }

    fn on_requests(&mut self, events: &mut Vec<RequestEvent>, ts: u64, out: &mut Vec<Record>) {
        // Most calls bring none (a chunk inside a message): no drain then.
        if !events.is_empty() {
            for RequestEvent::Request(req) in events.drain(..) {
                self.on_request(req, out);
            }
        }
        self.try_confirm(ts, out);
    }

    fn on_request(&mut self, req: Request, out: &mut Vec<Record>) {
        self.requests_seen += 1;
        match req.state {
            RequestState::Complete => {
                if req.protocol == Protocol::Qmtp && req.recipient_count == 0 {
                    // qmail-qmtpd sends no reply to a package without recipients.
                    self.anomaly(
                        AnomalyKind::QmtpPackageWithoutRecipients,
                        "package names no recipient; no reply is due".into(),
                        req.last_ts,
                        out,
                    );
                    let bytes = req.stored_bytes();
                    self.pending_bytes += bytes;
                    let p = Pending {
                        replies: Vec::new(),
                        answered: 0,
                        codes: CodeCounts::default(),
                        bytes,
                        request: req,
                    };
                    self.hold_or_write(p, out);
                    return;
                }
                if self.pending.len() >= MAX_PENDING {
                    let ts = req.last_ts;
                    if let Some(old) = self.pending.pop_front() {
                        self.hold_or_write(old, out);
                    }
                    self.anomaly(
                        AnomalyKind::TooManyPipelinedPackages,
                        format!("more than {MAX_PENDING} packages awaiting replies"),
                        ts,
                        out,
                    );
                }
                let stored = req.recipients.len();
                let last_ts = req.last_ts;
                let bytes = req.stored_bytes() + stored * std::mem::size_of::<Option<Reply>>();
                self.pending_bytes += bytes;
                self.pending.push_back(Pending {
                    request: req,
                    replies: vec![None; stored],
                    answered: 0,
                    codes: CodeCounts::default(),
                    bytes,
                });
                // Replies that came first (a QMQP server speaking first):
                // confirm before they are assigned, so the service record
                // precedes the transaction.
                self.try_confirm(last_ts, out);
                if !self.defer {
                    while let Some(r) = self.early.pop_front() {
                        if !self.assign(r, out) {
                            break;
                        }
                    }
                }
            }
            RequestState::Truncated => {
                if self.broken.len() < 4 {
                    self.broken.push(req);
                }
            }
            RequestState::Malformed(kind) => {
                let detail = format!(
                    "{} request is not well-formed after {} bytes",
                    req.protocol.name(),
                    req.end_offset.saturating_sub(req.start_offset)
                );
                self.anomaly(kind, detail, req.last_ts, out);
                if self.broken.len() < 4 {
                    self.broken.push(req);
                }
            }
        }
    }

    fn on_reply(&mut self, r: Reply, out: &mut Vec<Record>) {
        self.replies_seen += 1;
        // Confirm first, so the service event precedes the transaction.
        self.try_confirm(r.ts, out);
        if self.defer && self.early.len() >= MAX_EARLY_REPLIES {
            // Too many to hold: decide with what is known now.
            let ts = r.ts;
            self.resolve_deferred(ts, out);
        }
        if self.pending.is_empty() || self.defer {
            // A reply to bytes before our view of the stream (mid-stream
            // pickup) belongs to no request we saw.
            let before_view = match (r.acked_client_offset, self.first_request_offset) {
                (Some(ack), Some(first)) => ack <= first,
                _ => false,
            };
            if self.protocol == Some(Protocol::Qmtp)
                && (before_view || (self.midstream && self.requests_seen == 0))
            {
                self.counters.replies_to_unseen_requests += 1;
                return;
            }
            if self.early.len() < MAX_EARLY_REPLIES {
                let mut r = r;
                if self.stored_bytes().saturating_add(r.text.bytes.len()) > SESSION_STORED_BYTES {
                    r.text.bytes = Vec::new();
                    r.text.truncated = true;
                }
                self.early.push_back(r);
            } else {
                self.counters.replies_to_unseen_requests += 1;
            }
            return;
        }
        self.assign(r, out);
    }

    /// A QMTP session picked up mid-stream may see replies to packages sent
    /// before the capture began, and a pipelining client's acknowledgement
    /// numbers cannot tell them apart. Its replies are held until the flow
    /// ends; then the leading surplus of replies over the recipients seen
    /// belongs to unseen packages. When replies are short, which packages
    /// they answer is ambiguous: none are matched, and that is reported.
    fn resolve_deferred(&mut self, ts: u64, out: &mut Vec<Record>) {
        self.defer = false;
        let wanted: u64 = self
            .pending
            .iter()
            .map(|p| p.request.recipient_count.saturating_sub(p.answered))
            .sum();
        let have = self.early.len() as u64;
        if have >= wanted {
            for _ in 0..have - wanted {
                self.early.pop_front();
                self.counters.replies_to_unseen_requests += 1;
            }
            while let Some(r) = self.early.pop_front() {
                if !self.assign(r, out) {
                    break;
                }
            }
        } else {
            self.counters.replies_to_unseen_requests += have;
            self.early.clear();
            self.anomaly(
                AnomalyKind::QmtpMidstreamRepliesAmbiguous,
                format!(
                    "picked up mid-stream: {have} replies for {wanted} recipients seen; which packages they answer is unknown, so none were matched"
                ),
                ts,
                out,
            );
        }
    }

    /// Gives `r` to the oldest pending request. False if none was waiting.
    fn assign(&mut self, mut r: Reply, out: &mut Vec<Record>) -> bool {
        let copies = match self.pending.front() {
            Some(f) if f.request.protocol == Protocol::Qmqp => f.replies.len().max(1),
            _ => 1,
        };
        let cost = r.text.bytes.len().saturating_mul(copies);
        if self.pending_bytes.saturating_add(cost) > SESSION_STORED_BYTES {
            r.text.bytes = Vec::new();
            r.text.truncated = true;
        }
        let cost = r.text.bytes.len().saturating_mul(copies);
        let Some(front) = self.pending.front_mut() else {
            self.early.push_front(r);
            return false;
        };
        front.bytes += cost;
        self.pending_bytes += cost;
        match front.request.protocol {
            Protocol::Qmqp => {
                let n = front.request.recipient_count;
                for slot in front.replies.iter_mut() {
                    *slot = Some(r.clone());
                }
                front.codes.add_n(Some(r.code), n);
                front.answered = n;
                if let Some(p) = self.pending.pop_front() {
                    self.emit(p, Some(r), out);
                }
            }
            Protocol::Qmtp => {
                let i = front.answered;
                front.codes.add(Some(r.code));
                if let Some(slot) = usize::try_from(i)
                    .ok()
                    .and_then(|i| front.replies.get_mut(i))
                {
                    *slot = Some(r);
                }
                front.answered += 1;
                if front.answered >= front.request.recipient_count {
                    if let Some(p) = self.pending.pop_front() {
                        self.emit(p, None, out);
                    }
                }
            }
        }
        true
    }

    fn try_confirm(&mut self, ts: u64, out: &mut Vec<Record>) {
        if self.confirmed.is_some() || self.replies_seen == 0 {
            return;
        }
        let has_request = self.requests_seen > 0
            && (self.txn_index > 0
                || !self.unawaited.is_empty()
                || self
                    .pending
                    .iter()
                    .any(|p| p.request.state == RequestState::Complete));
        if has_request {
            self.confirm(Evidence::RequestAndReply, ts, out);
        }
    }

    fn confirm(&mut self, evidence: Evidence, ts: u64, out: &mut Vec<Record>) {
        if self.confirmed.is_some() {
            return;
        }
        self.confirmed = Some(evidence);
        let protocol = self.protocol.unwrap_or_else(|| self.guess_protocol());
        self.protocol = Some(protocol);
        out.push(Record::Service {
            endpoints: self.endpoints(),
            protocol,
            evidence,
            ts,
        });
        for mut a in self.held.drain(..) {
            a.protocol = Some(protocol);
            out.push(Record::Anomaly(Box::new(a)));
        }
        self.write_unawaited(out);
    }

    /// A complete package no reply is awaited for (its bytes counted in
    /// `pending_bytes`): written now if the session is confirmed, else held
    /// until it is, so that a flow rejected later writes nothing.
    fn hold_or_write(&mut self, p: Pending, out: &mut Vec<Record>) {
        if self.confirmed.is_some() {
            self.emit(p, None, out);
        } else if self.unawaited.len() < MAX_HELD_PACKAGES {
            self.unawaited.push(p);
        } else {
            self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
            self.counters.requests_dropped_unconfirmed += 1;
        }
    }

    /// Writes the held packages no reply is awaited for, in their order.
    fn write_unawaited(&mut self, out: &mut Vec<Record>) {
        for p in std::mem::take(&mut self.unawaited) {
            self.emit(p, None, out);
        }
    }

    /// Protocol of a server seen only through its replies.
    fn guess_protocol(&self) -> Protocol {
        if let Some(p) = self.server_protocol {
            return p;
        }
        // Off the standard ports: only QMQP servers (Postfix qmqpd) speak
        // first or answer garbage.
        standard_protocol(self.endpoints().server.port()).unwrap_or(Protocol::Qmqp)
    }

    fn emit(&mut self, p: Pending, single: Option<Reply>, out: &mut Vec<Record>) {
        self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
        let mut codes = p.codes;
        codes.missing = p.request.recipient_count.saturating_sub(p.answered);
        self.txn_index += 1;
        let ts = p
            .replies
            .iter()
            .flatten()
            .map(|r| r.ts)
            .chain(single.iter().map(|r| r.ts))
            .max()
            .unwrap_or(p.request.last_ts);
        let t = Transaction {
            endpoints: self.endpoints(),
            protocol: p.request.protocol,
            replies: p.replies,
            reply: single,
            codes,
            index: self.txn_index,
            session_confirmed: self.confirmed.is_some() || p.answered > 0,
            ts,
            request: Some(p.request),
        };
        out.push(Record::Transaction(Box::new(t)));
    }

    /// The stream offsets of direction `dir` that the client parser will
    /// skip unread (the rest of a message body), if any.
    #[inline]
    pub fn skippable(&self, dir: usize) -> Option<(u64, u64)> {
        if self.rejected || self.client_dir != Some(dir) {
            return None;
        }
        self.client.as_ref()?.skippable()
    }

    /// `n` bytes of direction `dir` arrived inside the range
    /// [`Session::skippable`] gave and were not kept.
    pub fn skip(&mut self, dir: usize, n: u64, ts: u64, out: &mut Vec<Record>) -> Status {
        if self.rejected {
            return Status::Reject;
        }
        match self.client.as_mut() {
            Some(p) if self.client_dir == Some(dir) => {
                // Inside the body (nearly always) the parser only moves on:
                // no request comes of it.
                if p.skip_in_body(n) {
                    self.try_confirm(ts, out);
                } else {
                    let mut events = std::mem::take(&mut self.scratch_requests);
                    p.skip(n, ts, &mut events);
                    self.on_requests(&mut events, ts, out);
                    self.scratch_requests = events;
                }
                Status::Continue
            }
            // Only a client parser hands out skip ranges; anything else is
            // lost bytes.
            _ => self.gap(dir, n, ts, out),
        }
    }

    /// Bytes of direction `dir` were lost at `offset`.
    pub fn gap(&mut self, dir: usize, n: u64, ts: u64, out: &mut Vec<Record>) -> Status {
        if self.rejected {
            return Status::Reject;
        }
        let is_client = self.client_dir == Some(dir);
        let is_server = self.client_dir.is_some() && !is_client;
        if is_client {
            if let Some(p) = self.client.as_mut() {
                let mut events = std::mem::take(&mut self.scratch_requests);
                let before = p.failed();
                p.gap(n, ts, &mut events);
                let lost = !before && p.failed();
                self.on_requests(&mut events, ts, out);
                self.scratch_requests = events;
                if lost {
                    self.anomaly(
                        AnomalyKind::GapOutsideMessage,
                        format!("{n} client bytes lost outside a message body; session incomplete"),
                        ts,
                        out,
                    );
                }
                return Status::Continue;
            }
        } else if is_server {
            if let Some(p) = self.server.as_mut() {
                if let Some(kind) = p.gap(n) {
                    self.anomaly(
                        kind,
                        format!("{n} server bytes lost; replies after it unknown"),
                        ts,
                        out,
                    );
                }
                return Status::Continue;
            }
        }
        // Lost bytes before we knew what the flow is: a mid-stream flow may
        // still be recognised at a later segment.
        if self.midstream {
            if let Some(side) = self.sides.get_mut(dir) {
                side.sniffer = Sniffer::new();
                side.sniff_offset = None;
            }
            return Status::Continue;
        }
        if self.client.is_none() && self.server.is_none() && self.wrong.is_none() {
            let kind = if is_server {
                AnomalyKind::GapInReplyStream
            } else {
                AnomalyKind::GapOutsideMessage
            };
            return self.reject_because(
                kind,
                format!("{n} bytes lost before the flow's protocol was known"),
                ts,
            );
        }
        Status::Continue
    }

    /// Direction `dir` ended (FIN reached).
    pub fn end_of_direction(&mut self, dir: usize, ts: u64, out: &mut Vec<Record>) {
        if let Some(s) = self.sides.get_mut(dir) {
            s.ended = true;
        }
        if self.client_dir == Some(dir) {
            if let Some(p) = self.client.as_mut() {
                let mut events = std::mem::take(&mut self.scratch_requests);
                p.finish(ts, &mut events);
                self.on_requests(&mut events, ts, out);
                self.scratch_requests = events;
            }
        }
    }

    /// The flow is over: report everything still pending.
    // Long: the end-of-flow account (confirmation, deferred replies, pending and broken requests, leftover replies) in the order its records must come out.
    pub fn finish(&mut self, ts: u64, out: &mut Vec<Record>) {
        if self.rejected {
            return;
        }
        if let Some(c) = self.client_dir {
            self.end_of_direction(c, ts, out);
        }
        // Replies alone confirm a server only when the flow was seen from
        // its start (or the server is already known): picked up mid-stream,
        // a lone netstring from one side whose first byte is K, Z or D is
        // not evidence of anything (SCGI and other netstring protocols send
        // such strings).
        let replies_prove = !self.midstream || self.server_hint;
        if self.confirmed.is_none() && self.replies_seen > 0 && replies_prove {
            self.confirm(Evidence::ReplyOnly, ts, out);
        }
        if self.defer {
            self.resolve_deferred(ts, out);
        }
        let confirmed = self.confirmed.is_some();
        self.write_unawaited(out);
        while let Some(p) = self.pending.pop_front() {
            self.emit(p, None, out);
        }
        for req in std::mem::take(&mut self.broken) {
            // A request cut short after a complete message netstring and the
            // start of a sender is QMTP/QMQP by its structure even when the
            // server never answered (it drops such a package silently).
            let structured = req.state == RequestState::Truncated && req.sender.is_some();
            if confirmed || structured {
                let reply = if req.protocol == Protocol::Qmqp {
                    self.early.pop_front()
                } else {
                    None
                };
                let stored = req.recipients.len();
                let answered = if reply.is_some() {
                    req.recipient_count
                } else {
                    0
                };
                let mut codes = CodeCounts::default();
                let replies = match &reply {
                    Some(r) => {
                        // QMQP: the single reply answers every recipient.
                        codes.add_n(Some(r.code), req.recipient_count);
                        vec![Some(r.clone()); stored]
                    }
                    None => vec![None; stored],
                };
                self.emit(
                    Pending {
                        request: req,
                        replies,
                        answered,
                        codes,
                        bytes: 0,
                    },
                    reply,
                    out,
                );
            } else {
                self.counters.requests_dropped_unconfirmed += 1;
            }
        }
        if confirmed {
            // Replies with no request: QMQP servers that spoke first or
            // answered garbage; for QMTP, replies nobody asked for.
            let leftover: Vec<Reply> = self.early.drain(..).collect();
            let protocol = self.protocol.unwrap_or(Protocol::Qmqp);
            if protocol == Protocol::Qmtp && !leftover.is_empty() {
                let n = leftover.len();
                self.anomaly(
                    AnomalyKind::QmtpUnsolicitedReply,
                    format!("{n} replies with no package awaiting them"),
                    ts,
                    out,
                );
            } else {
                for r in leftover {
                    self.txn_index += 1;
                    let mut codes = CodeCounts::default();
                    codes.add(Some(r.code));
                    out.push(Record::Transaction(Box::new(Transaction {
                        endpoints: self.endpoints(),
                        protocol,
                        request: None,
                        replies: Vec::new(),
                        codes,
                        index: self.txn_index,
                        session_confirmed: true,
                        ts: r.ts,
                        reply: Some(r),
                    })));
                }
            }
        } else {
            // Evasion signatures are reported even so: the session may be
            // unconfirmed because of what they did to its bytes.
            for a in std::mem::take(&mut self.held) {
                if a.kind.is_evasion_sign() {
                    out.push(Record::Anomaly(Box::new(a)));
                } else {
                    self.counters.anomalies_dropped_unconfirmed += 1;
                }
            }
        }
        if let Some(w) = self.wrong.take() {
            if confirmed || self.server_hint || self.server_port_is_standard() {
                let answer = match self.replies_seen {
                    0 => "the server sent no reply netstring".to_string(),
                    n => format!("the server answered with {n} reply netstring(s)"),
                };
                let a = Anomaly {
                    endpoints: self.endpoints(),
                    protocol: self.protocol,
                    kind: wrong_protocol_kind(&w.sample),
                    detail: format!(
                        "client sent \"{}\"; {answer}",
                        printable(&w.sample, WRONG_PROTOCOL_SAMPLE)
                    ),
                    ts: w.ts,
                };
                out.push(Record::Anomaly(Box::new(a)));
            }
        }
        self.rejected = true;
    }
}

/// Names what a client sent instead of QMTP/QMQP.
fn wrong_protocol_kind(sample: &[u8]) -> AnomalyKind {
    let upper: Vec<u8> = sample
        .iter()
        .take(10)
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let smtp = [
        &b"HELO"[..],
        b"EHLO",
        b"MAIL FROM",
        b"RCPT TO",
        b"DATA",
        b"QUIT",
        b"STARTTLS",
        b"RSET",
        b"NOOP",
        b"VRFY",
    ];
    if smtp.iter().any(|c| upper.starts_with(c)) {
        AnomalyKind::SmtpToQmServer
    } else if sample.first() == Some(&0x16) {
        AnomalyKind::TlsToQmServer
    } else if [&b"GET "[..], b"POST", b"HEAD", b"PUT ", b"OPTI"]
        .iter()
        .any(|m| upper.starts_with(m))
    {
        AnomalyKind::HttpToQmServer
    } else {
        AnomalyKind::WrongProtocolToQmServer
    }
}

#[cfg(test)]
mod tests;
