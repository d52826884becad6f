//! One flow's app-layer state: a `qmwatch-proto` session fed Suricata's
//! reassembled stream, and the transactions it produced.
//!
//! Owns: the stream offsets of both directions, feeding data, gaps and
//! end-of-direction to the [`Session`], turning its [`Record`]s into
//! [`Tx`]s (one per QMTP package or QMQP message, created when its replies
//! are in or the flow ends; anomalies ride on the transaction created in
//! the same call, or on one of their own; a session that stops reading
//! the flow says why at once), the placeholder transaction held in
//! progress while only one direction has ended (so that Suricata brings
//! the flow's end), and the transaction list Suricata walks and frees.
//!
//! Must not: parse anything itself, hold transactions Suricata has freed,
//! or grow without bound (the session is bounded; transactions are freed
//! by Suricata once logged and inspected, and past [`MAX_TXS`] unfreed ones
//! the oldest are dropped).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use qmwatch_proto::session::{Session, Status};
use qmwatch_proto::{AnomalyKind, Endpoints, Protocol, Record};

use crate::tx::Tx;

/// Transactions held that Suricata has not freed yet.
pub const MAX_TXS: usize = 1024;

/// At most this many bytes of a message body are left in Suricata's stream
/// between two calls ([`FlowState::body_ahead`]): what a flow may make
/// Suricata hold on its account.
pub const MAX_BODY_AHEAD: u64 = 64 * 1024;
/// Below this, waiting saves too few calls to be worth asking for.
pub const MIN_BODY_AHEAD: u64 = 4 * 1024;

/// Direction 0: client to server (Suricata's to-server); 1: to the client.
pub const TO_SERVER: usize = 0;
pub const TO_CLIENT: usize = 1;

/// The state of one flow.
#[derive(Debug)]
pub struct FlowState {
    session: Session,
    /// The session's endpoints (unspecified addresses, the real ports).
    endpoints: Endpoints,
    protocol: Protocol,
    /// The server's port is QMTP's or QMQP's ([`FlowState::vouched`]).
    by_port: bool,
    offsets: [u64; 2],
    /// Suricata's stream offset of each direction's offset 0, from its
    /// first call ([`FlowState::catch_up`]).
    bases: [Option<u64>; 2],
    eof: [bool; 2],
    finished: bool,
    rejected: bool,
    next_id: u64,
    /// The id of the placeholder transaction held open, if any.
    open: Option<u64>,
    /// Anomalies raised before the session reported them (see
    /// [`FlowState::report_known`]): at most the session's held ones and
    /// one wrong-protocol anomaly.
    raised: Vec<(AnomalyKind, String)>,
    txs: VecDeque<Tx>,
    scratch: Vec<Record>,
}

impl FlowState {
    /// A flow from client port `sp` to server port `dp`, detected as
    /// `protocol`. Suricata knows which side opened the flow, so the
    /// session is told the client direction.
    pub fn new(protocol: Protocol, sp: u16, dp: u16) -> Self {
        // The session only uses the ports (the server's, for the standard
        // port test); EVE carries the real addresses.
        let ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let addrs = [SocketAddr::new(ip, sp), SocketAddr::new(ip, dp)];
        FlowState {
            session: Session::new(addrs, Some(TO_SERVER), false),
            endpoints: Endpoints {
                client: addrs[0],
                server: addrs[1],
            },
            protocol,
            by_port: dp == Protocol::Qmtp.standard_port() || dp == Protocol::Qmqp.standard_port(),
            offsets: [0; 2],
            bases: [None; 2],
            eof: [false; 2],
            finished: false,
            rejected: false,
            next_id: 0,
            open: None,
            raised: Vec::new(),
            txs: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// The protocol the flow was detected as.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Transactions created so far (Suricata's tx count).
    pub fn tx_count(&self) -> u64 {
        self.next_id
    }

    /// The transaction with Suricata's id `id` (0-based).
    pub fn tx(&self, id: u64) -> Option<&Tx> {
        self.txs.iter().find(|t| t.id == id.wrapping_add(1))
    }

    /// Held transactions, oldest first.
    pub fn txs(&self) -> &VecDeque<Tx> {
        &self.txs
    }

    /// Hands over the held transactions, oldest first (the plugin keeps
    /// its own list, each with Suricata's per-transaction data).
    pub fn drain_txs(&mut self) -> std::collections::vec_deque::Drain<'_, Tx> {
        self.txs.drain(..)
    }

    /// Suricata freed transaction `id` (0-based).
    pub fn free_tx(&mut self, id: u64) {
        if let Some(i) = self.txs.iter().position(|t| t.id == id.wrapping_add(1)) {
            self.txs.remove(i);
        }
    }

    /// The flow is over (both directions ended, or Suricata said so): every
    /// pending transaction has been created.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Bytes of direction `dir`, in order. Returns the new ids (1-based),
    /// as a range (a transaction that fills the placeholder keeps its id).
    pub fn data(&mut self, dir: usize, data: &[u8], ts: u64) -> std::ops::Range<u64> {
        let first = self.next_id;
        if self.finished || dir > 1 || data.is_empty() {
            return first..first;
        }
        let offset = self.offsets.get(dir).copied().unwrap_or(0);
        if let Some(o) = self.offsets.get_mut(dir) {
            *o = o.saturating_add(data.len() as u64);
        }
        if !self.rejected {
            let mut out = std::mem::take(&mut self.scratch);
            let st = self.session.data(dir, offset, data, ts, None, &mut out);
            self.after_call(st, ts, out);
        }
        self.settle(ts);
        first..self.next_id
    }

    /// What the session said in one call (`st`, records `out`) becomes
    /// anomalies and transactions; `out` goes back as the scratch list.
    fn after_call(&mut self, st: Status, ts: u64, mut out: Vec<Record>) {
        self.note(st, &mut out);
        self.report_known(ts, &mut out);
        self.take(&mut out);
        self.scratch = out;
    }

    /// `n` bytes of direction `dir` were lost.
    pub fn gap(&mut self, dir: usize, n: u64, ts: u64) -> std::ops::Range<u64> {
        let first = self.next_id;
        if self.finished || dir > 1 || n == 0 {
            return first..first;
        }
        if let Some(o) = self.offsets.get_mut(dir) {
            *o = o.saturating_add(n);
        }
        if !self.rejected {
            let mut out = std::mem::take(&mut self.scratch);
            // Inside a message body, skipping is what the parser does
            // anyway: a gap there costs nothing.
            let st = match self.session.skippable(dir) {
                Some((from, to)) => {
                    let at = self
                        .offsets
                        .get(dir)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(n);
                    if at >= from && at.saturating_add(n) <= to {
                        self.session.skip(dir, n, ts, &mut out)
                    } else {
                        self.session.gap(dir, n, ts, &mut out)
                    }
                }
                None => self.session.gap(dir, n, ts, &mut out),
            };
            self.after_call(st, ts, out);
        }
        self.settle(ts);
        first..self.next_id
    }

    /// How many more bytes direction `dir` can leave in Suricata's stream
    /// before the parser needs to see them: the rest of the message body
    /// the session skips unread, at most [`MAX_BODY_AHEAD`], when at least
    /// [`MIN_BODY_AHEAD`]. Asking Suricata to wait for them (an
    /// "incomplete" result) makes it call the parser, and move its stream
    /// buffer along, once per that many bytes instead of once per
    /// acknowledgement: with large messages that slide is most of what
    /// parsing a flow costs Suricata.
    pub fn body_ahead(&self, dir: usize) -> Option<u32> {
        if self.finished || self.rejected {
            return None;
        }
        let (from, to) = self.session.skippable(dir)?;
        let at = self.offsets.get(dir).copied()?;
        if at < from || at >= to {
            return None;
        }
        let n = (to - at).min(MAX_BODY_AHEAD);
        if n < MIN_BODY_AHEAD {
            return None;
        }
        u32::try_from(n).ok()
    }

    /// The next call's bytes of direction `dir` start at Suricata's stream
    /// offset `stream_offset`. If that is past the bytes already given,
    /// Suricata passed over the bytes between (it does, without a call,
    /// when data it was asked to wait for is cut short by a gap): they are
    /// a gap here, inside a message body a free one. The first call of a
    /// direction sets where its offset 0 lies. Suricata can pass over at
    /// most what it was asked to wait for (a `u32`): a larger jump is not
    /// one, and is left alone.
    pub fn catch_up(&mut self, dir: usize, stream_offset: u64, ts: u64) -> std::ops::Range<u64> {
        let first = self.next_id;
        let own = self.offsets.get(dir).copied().unwrap_or(0);
        let Some(base) = self.bases.get_mut(dir) else {
            return first..first;
        };
        let base = *base.get_or_insert(stream_offset.saturating_sub(own));
        let expected = base.saturating_add(own);
        match stream_offset.checked_sub(expected) {
            Some(jump) if jump > 0 && jump <= u64::from(u32::MAX) => self.gap(dir, jump, ts),
            _ => first..first,
        }
    }

    /// The session's status after a call. Suricata handed the flow over as
    /// QMTP/QMQP (by port or by its first bytes), so a session that stops
    /// reading it is reported at once, with why: the bytes Suricata gives
    /// stopped being QMTP/QMQP (another protocol, or an evasion whose
    /// chaff Suricata's reassembly kept), and nothing later in the flow
    /// will say so.
    fn note(&mut self, st: Status, out: &mut Vec<Record>) {
        if st != Status::Reject || self.rejected {
            return;
        }
        self.rejected = true;
        if !self.vouched() {
            return;
        }
        if let Some(a) = self.session.rejection() {
            out.push(Record::Anomaly(Box::new(a.clone())));
        }
    }

    /// Whether the flow is QMTP/QMQP's on grounds other than its first
    /// bytes: Suricata handed it over for its port (209, 628), or a reply
    /// confirmed the session. A flow claimed only because its first bytes
    /// looked like a netstring (a probe, on any port) may be another
    /// netstring protocol: as in qmwatch's own flow table, what its
    /// session finds wrong is then not reported until it is confirmed, and
    /// its rejection is the end of a look-alike, not an anomaly.
    fn vouched(&self) -> bool {
        self.by_port || self.session.confirmed().is_some()
    }

    /// What the session knows but holds back is raised now: Suricata
    /// handed the flow over as QMTP/QMQP, so an anomaly found before the
    /// session is confirmed (a malformed request no reply ever confirms)
    /// and another protocol spoken to the server are not left for a
    /// confirmation or a flow's end that may not come. When the session
    /// reports them itself later, those records are dropped (a
    /// wrong-protocol anomaly at the flow's end, with the server's answer,
    /// gives way to the one raised when the client spoke).
    fn report_known(&mut self, ts: u64, out: &mut Vec<Record>) {
        if !self.raised.is_empty() {
            let raised = &mut self.raised;
            out.retain(|r| match r {
                Record::Anomaly(a) if a.kind.is_wrong_protocol() => {
                    !raised.iter().any(|(k, _)| k.is_wrong_protocol())
                }
                Record::Anomaly(a) => match raised
                    .iter()
                    .position(|(k, d)| *k == a.kind && *d == a.detail)
                {
                    Some(i) => {
                        raised.swap_remove(i);
                        false
                    }
                    None => true,
                },
                _ => true,
            });
        }
        if self.finished || self.rejected || !self.vouched() {
            return;
        }
        for a in self.session.held_anomalies() {
            let known = self
                .raised
                .iter()
                .any(|(k, d)| *k == a.kind && *d == a.detail);
            if !known {
                self.raised.push((a.kind, a.detail.clone()));
                out.push(Record::Anomaly(Box::new(a.clone())));
            }
        }
        if !self.raised.iter().any(|(k, _)| k.is_wrong_protocol()) {
            if let Some((kind, detail)) = self.session.wrong_protocol() {
                self.raised.push((kind, detail.clone()));
                out.push(Record::Anomaly(Box::new(qmwatch_proto::Anomaly {
                    endpoints: self.endpoints,
                    protocol: self.session.protocol(),
                    kind,
                    detail,
                    ts,
                })));
            }
        }
    }

    /// Direction `dir` ended. When both have, the flow is finished.
    ///
    /// While only one has, a placeholder transaction in progress is held
    /// open (Suricata's tx count is one more than the transactions made):
    /// Suricata does not always report the end of the other direction (a
    /// TCP session that closed reports it for the side whose data the last
    /// ACK acknowledged only), and a flow with no transaction in progress
    /// is freed without any further call when it times out. One in progress
    /// makes Suricata's flow timeout and shutdown push both directions
    /// through the parser once more, with their end, so that what the
    /// session reports at the flow's end is logged.
    pub fn eof(&mut self, dir: usize, ts: u64) -> std::ops::Range<u64> {
        let first = self.next_id;
        if self.finished || dir > 1 {
            return first..first;
        }
        // Suricata's end flag stays set: later calls repeat it.
        let again = self.eof.get(dir).copied().unwrap_or(true);
        if let Some(e) = self.eof.get_mut(dir) {
            *e = true;
        }
        let mut out = std::mem::take(&mut self.scratch);
        if !self.rejected && !again {
            self.session.end_of_direction(dir, ts, &mut out);
        }
        // Suricata does not always report the end of the server's
        // direction (a server that closed first, a capture that ends): once
        // the client is done and nothing awaits a reply, the flow is over.
        // A rejected session has nothing left to report.
        let client_done_nothing_pending =
            dir == TO_SERVER && !self.rejected && self.session.stored_bytes() == 0;
        if self.eof == [true, true] || client_done_nothing_pending || self.rejected {
            self.finish_into(ts, &mut out);
        }
        self.report_known(ts, &mut out);
        self.take(&mut out);
        self.scratch = out;
        self.settle(ts);
        first..self.next_id
    }

    /// After a call: a flow with one direction ended and not finished holds
    /// a placeholder open (see [`FlowState::eof`]); a finished one closes it.
    fn settle(&mut self, ts: u64) {
        // The replies the client waited for came after its end: nothing is
        // left to wait for.
        let client_done = self.eof.get(TO_SERVER).copied().unwrap_or(false);
        if !self.finished && client_done && !self.rejected && self.session.stored_bytes() == 0 {
            self.finish(ts);
            return;
        }
        if self.finished {
            self.close_placeholder();
        } else if self.open.is_none() && self.eof.contains(&true) {
            let id = self.new_id();
            self.open = Some(id);
            let protocol = self.session.protocol().unwrap_or(self.protocol);
            self.push(Tx::placeholder(id, protocol));
        }
    }

    /// The flow ended with the placeholder unfilled: it is done, and empty.
    fn close_placeholder(&mut self) {
        if let Some(id) = self.open.take() {
            let protocol = self.session.protocol().unwrap_or(self.protocol);
            self.push(Tx::anomalies_only(id, protocol));
        }
    }

    /// The flow is over whatever the directions said.
    pub fn finish(&mut self, ts: u64) -> std::ops::Range<u64> {
        let first = self.next_id;
        if self.finished {
            return first..first;
        }
        let mut out = std::mem::take(&mut self.scratch);
        self.finish_into(ts, &mut out);
        self.report_known(ts, &mut out);
        self.take(&mut out);
        self.scratch = out;
        self.close_placeholder();
        first..self.next_id
    }

    fn finish_into(&mut self, ts: u64, out: &mut Vec<Record>) {
        self.finished = true;
        // A rejected session has nothing pending but may hold evasion
        // signatures; `finish` reports nothing for it.
        for a in self.session.take_evasion_signs() {
            out.push(Record::Anomaly(Box::new(a)));
        }
        // Suricata's stream may end short of the server's last reply (a
        // segment its stream engine dropped): that reply is lost, not
        // merely unsent.
        if let Some(a) = self.session.reply_cut_short(ts) {
            out.push(Record::Anomaly(Box::new(a)));
        }
        self.session.finish(ts, out);
    }

    /// The next transaction's id: the placeholder's, when one is open.
    fn new_id(&mut self) -> u64 {
        if let Some(id) = self.open.take() {
            return id;
        }
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }

    /// Holds `tx`; one with the same id (the placeholder) is replaced.
    /// Once handed over by [`FlowState::drain_txs`], the holder of the
    /// placeholder replaces it by id too.
    fn push(&mut self, tx: Tx) {
        if let Some(t) = self.txs.iter_mut().find(|t| t.id == tx.id) {
            *t = tx;
            return;
        }
        if self.txs.len() >= MAX_TXS {
            self.txs.pop_front();
        }
        self.txs.push_back(tx);
    }

    /// Records of one call to transactions.
    fn take(&mut self, out: &mut Vec<Record>) {
        if out.is_empty() {
            return;
        }
        let mut created_here = None;
        let mut anomalies = Vec::new();
        for r in out.drain(..) {
            match r {
                Record::Service { .. } => {}
                Record::Transaction(t) => {
                    let id = self.new_id();
                    let tx = Tx::from_transaction(id, &t);
                    self.push(tx);
                    created_here = Some(id);
                }
                Record::Anomaly(a) => anomalies.push((a.kind, a.detail)),
            }
        }
        if anomalies.is_empty() {
            return;
        }
        let last = created_here.and_then(|id| self.txs.iter_mut().rev().find(|t| t.id == id));
        match last {
            Some(t) => t.anomalies.extend(anomalies),
            _ => {
                let id = self.new_id();
                let mut tx =
                    Tx::anomalies_only(id, self.session.protocol().unwrap_or(self.protocol));
                tx.anomalies = anomalies;
                self.push(tx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(protocol: Protocol, dp: u16, client: &[u8], server: &[u8], chunk: usize) -> Vec<Tx> {
        let mut f = FlowState::new(protocol, 40000, dp);
        for c in client.chunks(chunk.max(1)) {
            f.data(TO_SERVER, c, 1);
        }
        for c in server.chunks(chunk.max(1)) {
            f.data(TO_CLIENT, c, 2);
        }
        f.eof(TO_SERVER, 3);
        f.eof(TO_CLIENT, 3);
        assert!(f.finished());
        f.txs().iter().cloned().collect()
    }

    fn ns(b: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", b.len()).into_bytes();
        v.extend_from_slice(b);
        v.push(b',');
        v
    }

    fn pkg() -> Vec<u8> {
        let mut v = ns(b"\nSubject: hi\n");
        v.extend(ns(b"alice@example.net"));
        let mut r = ns(b"victim@example.com");
        r.extend(ns(b"joe@example.net"));
        v.extend(ns(&r));
        v
    }

    fn replies() -> Vec<u8> {
        let mut v = ns(b"Kok 1");
        v.extend(ns(b"Dsorry, no relaying"));
        v
    }

    #[test]
    fn a_qmtp_package_in_any_chunking_is_one_transaction() {
        for chunk in [1, 2, 3, 7, 1000] {
            let txs = run(Protocol::Qmtp, 2209, &pkg(), &replies(), chunk);
            assert_eq!(txs.len(), 1, "chunk {chunk}");
            let t = &txs[0];
            assert_eq!(t.sender(), Some(&b"alice@example.net"[..]));
            assert_eq!(t.rcpt(0), Some(&b"victim@example.com"[..]));
            assert_eq!(t.rcpt(1), Some(&b"joe@example.net"[..]));
            assert_eq!(t.rcpt(2), None);
            assert_eq!(t.reply_code(0), Some(&b"K"[..]));
            assert_eq!(t.reply_code(1), Some(&b"D"[..]));
            assert_eq!(t.reply_text(1), Some(&b"sorry, no relaying"[..]));
            assert_eq!(t.rcpt_reply(0), Some(&b"K victim@example.com"[..]));
            assert!(t.body.as_ref().unwrap().complete);
            assert_eq!(t.body.as_ref().unwrap().encoding, Some("LF"));
        }
    }

    #[test]
    fn a_gap_in_the_body_costs_nothing() {
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        let p = pkg();
        f.data(TO_SERVER, &p[..8], 1);
        f.gap(TO_SERVER, 6, 1);
        f.data(TO_SERVER, &p[14..], 1);
        f.data(TO_CLIENT, &replies(), 2);
        let t = f.tx(0).unwrap();
        assert!(t.body.as_ref().unwrap().complete);
        assert_eq!(t.body.as_ref().unwrap().message_gap_bytes, 6);
        assert!(t.anomalies.is_empty());
    }

    /// A package whose message body is `len` bytes.
    fn big_pkg(len: usize) -> Vec<u8> {
        let mut m = b"\n".to_vec();
        m.resize(len, b'm');
        let mut v = ns(&m);
        v.extend(ns(b"alice@example.net"));
        v.extend(ns(&ns(b"victim@example.com")));
        v
    }

    #[test]
    fn the_rest_of_a_large_body_can_wait() {
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        let p = big_pkg(200_000);
        let head = 7 + 64; // "200000:" and the message's first bytes, kept
        assert_eq!(f.body_ahead(TO_SERVER), None);
        f.data(TO_SERVER, &p[..head - 1], 1);
        // Still reading the kept prefix: nothing to wait for yet.
        assert_eq!(f.body_ahead(TO_SERVER), None);
        f.data(TO_SERVER, &p[head - 1..head], 1);
        assert_eq!(f.body_ahead(TO_SERVER), Some(MAX_BODY_AHEAD as u32));
        assert_eq!(f.body_ahead(TO_CLIENT), None);
        // Near the body's end: only what is left of it, then nothing.
        let end = 7 + 200_000;
        f.data(TO_SERVER, &p[head..end - 5000], 1);
        assert_eq!(f.body_ahead(TO_SERVER), Some(5000));
        f.data(TO_SERVER, &p[end - 5000..end - 100], 1);
        assert_eq!(f.body_ahead(TO_SERVER), None);
        f.data(TO_SERVER, &p[end - 100..], 1);
        assert_eq!(f.body_ahead(TO_SERVER), None);
        f.data(TO_CLIENT, &ns(b"Kok"), 2);
        let t = f.tx(0).unwrap();
        assert_eq!(t.sender(), Some(&b"alice@example.net"[..]));
        assert_eq!(t.rcpt(0), Some(&b"victim@example.com"[..]));
        assert_eq!(t.reply_code(0), Some(&b"K"[..]));
    }

    /// Bytes Suricata passed over without a call (the stream offset of the
    /// next call jumps) are a gap: free inside the body, so the envelope
    /// after it is read where it is.
    #[test]
    fn bytes_passed_over_are_caught_up_as_a_gap() {
        let p = big_pkg(200_000);
        let base = 1000; // Suricata's offset of the first byte
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.catch_up(TO_SERVER, base, 1);
        f.data(TO_SERVER, &p[..10_000], 1);
        // 30,000 bytes passed over, then the rest.
        f.catch_up(TO_SERVER, base + 40_000, 1);
        f.data(TO_SERVER, &p[40_000..], 1);
        // A call at the expected offset changes nothing.
        f.catch_up(TO_SERVER, base + p.len() as u64, 1);
        f.catch_up(TO_CLIENT, 7, 2);
        f.data(TO_CLIENT, &ns(b"Kok"), 2);
        let t = f.tx(0).unwrap();
        assert_eq!(t.sender(), Some(&b"alice@example.net"[..]));
        assert_eq!(t.rcpt(0), Some(&b"victim@example.com"[..]));
        assert_eq!(t.reply_code(0), Some(&b"K"[..]));
        let body = t.body.as_ref().unwrap();
        assert!(body.complete);
        // Inside the body, skipped (as every gap there is).
        assert_eq!(body.message_gap_bytes, 0);
        assert!(t.anomalies.is_empty(), "{:?}", t.anomalies);
        assert_eq!(f.tx_count(), 1);
    }

    #[test]
    fn unanswered_package_is_reported_at_flow_end() {
        let txs = run(Protocol::Qmtp, 209, &pkg(), b"", 5);
        assert_eq!(txs.len(), 1);
        assert!(!txs[0].body.as_ref().unwrap().complete);
        assert_eq!(txs[0].reply_code(0), None);
    }

    #[test]
    fn smtp_to_a_qmtp_port_is_an_anomaly() {
        let txs = run(Protocol::Qmtp, 209, b"EHLO x\r\n", b"", 100);
        assert_eq!(txs.len(), 1);
        assert!(txs[0].body.is_none());
        assert_eq!(
            txs[0].anomalies[0].0,
            qmwatch_proto::AnomalyKind::SmtpToQmServer
        );
        // The `anomaly` rule buffer: the kind's name, one instance each.
        assert_eq!(txs[0].anomaly(0), Some(&b"smtp_to_qm_server"[..]));
        assert_eq!(txs[0].anomaly(1), None);
        assert_eq!(txs[0].anomaly(u32::MAX), None);
    }

    #[test]
    fn a_repeated_end_is_one_end() {
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        let p = pkg();
        f.data(TO_SERVER, &p[..p.len() - 3], 1);
        for _ in 0..3 {
            f.eof(TO_SERVER, 2);
        }
        f.data(TO_CLIENT, &replies(), 3);
        f.eof(TO_CLIENT, 4);
        f.eof(TO_CLIENT, 4);
        assert!(f.finished());
        assert_eq!(f.txs().len(), 1);
    }

    #[test]
    fn the_client_done_with_nothing_pending_ends_the_flow() {
        // SMTP to a QMTP port, the client closes, the server never does:
        // the anomaly is not held back for an end that may not come.
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, b"EHLO x\r\n", 1);
        f.eof(TO_SERVER, 2);
        assert!(f.finished());
        assert_eq!(f.txs().len(), 1);
        // A package still awaiting replies keeps the flow open.
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, &pkg(), 1);
        f.eof(TO_SERVER, 2);
        assert!(!f.finished());
        f.data(TO_CLIENT, &replies(), 3);
        assert_eq!(f.txs().len(), 1);
        assert!(f.txs()[0].body.as_ref().unwrap().complete);
    }

    #[test]
    fn a_stream_that_stops_being_qmtp_is_reported_at_once() {
        // Chaff Suricata kept: the first reply lost its comma. The session
        // rejects the flow (no reply was ever read); the plugin says why,
        // before any end of the flow.
        let mut f = FlowState::new(Protocol::Qmqp, 40000, 628);
        f.data(
            TO_SERVER,
            &ns(&[ns(b"msg"), ns(b"a@example.net"), ns(b"b@example.net")].concat()),
            1,
        );
        f.data(TO_CLIENT, b"8:Kqueued X", 2);
        assert!(!f.finished());
        assert_eq!(f.txs().len(), 1);
        assert!(f.txs()[0].body.is_none());
        assert_eq!(
            f.txs()[0].anomalies[0].0,
            qmwatch_proto::AnomalyKind::NetstringMissingComma
        );
        // Nothing more comes of the flow, and its end adds nothing.
        f.data(TO_CLIENT, b"8:Kqueued,", 3);
        f.eof(TO_SERVER, 4);
        f.eof(TO_CLIENT, 4);
        assert_eq!(f.tx_count(), 1);
        // A server whose first bytes are no reply netstring.
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, &pkg(), 1);
        f.data(TO_CLIENT, b"xyzzy:Kok,", 2);
        assert_eq!(f.txs().len(), 1);
        assert_eq!(
            f.txs()[0].anomalies[0].0,
            qmwatch_proto::AnomalyKind::NetstringBadLengthByte
        );
        // Off the standard ports, the same after a reply confirmed the
        // session.
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 2209);
        f.data(TO_SERVER, &pkg(), 1);
        f.data(TO_CLIENT, &replies(), 2);
        f.data(TO_SERVER, &pkg(), 3);
        f.data(TO_CLIENT, b"xyzzy:Kok,", 4);
        let kinds: Vec<_> = f
            .txs()
            .iter()
            .flat_map(|t| t.anomalies.iter().map(|a| a.0))
            .collect();
        assert_eq!(kinds, [qmwatch_proto::AnomalyKind::NetstringBadLengthByte]);
    }

    /// A flow claimed off the standard ports for its first bytes alone may
    /// be another netstring protocol: when its session gives up before a
    /// reply confirmed it, that is the end of a look-alike, not an anomaly
    /// (no transaction, no event).
    #[test]
    fn a_look_alike_off_the_standard_ports_is_dropped_quietly() {
        for (client, server) in [
            (
                &b"17:\nHELLO WORLD 1234,PING\r\n"[..],
                &b"-ERR unknown command\r\n"[..],
            ),
            (&pkg()[..], &b"xyzzy:Kok,"[..]),
            (&b"GET / HTTP/1.0\r\n\r\n"[..], &b"HTTP/1.0 200 OK\r\n"[..]),
        ] {
            let mut f = FlowState::new(Protocol::Qmtp, 40000, 9000);
            f.data(TO_SERVER, client, 1);
            f.data(TO_CLIENT, server, 2);
            f.eof(TO_SERVER, 3);
            f.eof(TO_CLIENT, 3);
            assert_eq!(f.tx_count(), 0, "{:?}", f.txs());
        }
    }

    #[test]
    fn one_ended_direction_holds_a_transaction_open() {
        // The client ended with its package unanswered; Suricata may never
        // report the server's end. A transaction in progress keeps the
        // flow's end coming (Suricata's timeout pushes flows with one).
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, &pkg(), 1);
        f.eof(TO_SERVER, 2);
        assert!(!f.finished());
        assert_eq!(f.tx_count(), 1);
        assert!(f.tx(0).unwrap().open);
        // The flow's end fills it, under the same id.
        f.eof(TO_CLIENT, 3);
        assert!(f.finished());
        assert_eq!(f.tx_count(), 1);
        let t = f.tx(0).unwrap();
        assert!(!t.open);
        assert_eq!(t.rcpt(0), Some(&b"victim@example.com"[..]));
        assert_eq!(t.reply_code(0), None);
        // Only the server's end reported: the same.
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, &pkg(), 1);
        f.data(TO_CLIENT, &replies(), 2);
        f.eof(TO_CLIENT, 3);
        assert_eq!(f.tx_count(), 2);
        assert!(f.tx(1).unwrap().open);
        // Nothing was pending: the end leaves it empty (not logged).
        f.eof(TO_SERVER, 4);
        assert!(f.finished());
        let t = f.tx(1).unwrap();
        assert!(!t.open && t.is_empty());
        assert!(!f.tx(0).unwrap().is_empty());
    }

    #[test]
    fn a_reply_cut_short_by_the_end_is_reported() {
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, &pkg(), 1);
        f.data(TO_CLIENT, b"5:Kok 1,6:Dsor", 2);
        f.eof(TO_SERVER, 3);
        f.eof(TO_CLIENT, 3);
        let t = f.txs().back().unwrap();
        assert_eq!(t.reply_code(0), Some(&b"K"[..]));
        assert_eq!(t.reply_code(1), None);
        assert_eq!(
            t.anomalies.iter().map(|a| a.0).collect::<Vec<_>>(),
            [qmwatch_proto::AnomalyKind::GapInReplyStream]
        );
    }

    #[test]
    fn a_request_with_no_sender_has_no_from() {
        let mut f = FlowState::new(Protocol::Qmqp, 40000, 628);
        f.data(TO_SERVER, &ns(&[ns(b"msg"), b"3:ab".to_vec()].concat()), 1);
        f.data(TO_CLIENT, &ns(b"Kok"), 2);
        f.eof(TO_SERVER, 3);
        f.eof(TO_CLIENT, 3);
        let t = f.txs().iter().find(|t| t.body.is_some()).unwrap();
        assert!(t.body.as_ref().unwrap().request);
        assert_eq!(t.sender(), None);
    }

    #[test]
    fn another_protocol_is_reported_when_the_client_speaks() {
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, b"EHLO x\r\n", 1);
        assert!(!f.finished());
        assert_eq!(f.txs().len(), 1);
        assert_eq!(
            f.txs()[0].anomalies,
            [(
                qmwatch_proto::AnomalyKind::SmtpToQmServer,
                "client sent \"EHLO x\\r\\n\"".to_string()
            )]
        );
        // The session's own report at the flow's end is not repeated.
        f.data(TO_SERVER, b"MAIL FROM:<a@example.org>\r\n", 2);
        f.eof(TO_SERVER, 3);
        f.eof(TO_CLIENT, 3);
        assert!(f.finished());
        assert_eq!(f.tx_count(), 1);
        assert_eq!(f.txs().iter().map(|t| t.anomalies.len()).sum::<usize>(), 1);
    }

    #[test]
    fn an_anomaly_no_reply_confirms_is_reported_at_once() {
        // A malformed request to a QMQP server that never answers: the
        // session holds the anomaly for a confirmation that never comes
        // and drops it at the end; the plugin raises it when found.
        let bad = ns(&[ns(b"msg"), b"3:ab".to_vec()].concat());
        let mut f = FlowState::new(Protocol::Qmqp, 40000, 628);
        f.data(TO_SERVER, &bad, 1);
        assert_eq!(f.txs().len(), 1);
        let kind = f.txs()[0].anomalies[0].0;
        f.eof(TO_SERVER, 2);
        f.eof(TO_CLIENT, 2);
        assert!(f.finished());
        assert_eq!(f.txs().iter().map(|t| t.anomalies.len()).sum::<usize>(), 1);
        // When a reply confirms the session after all, its report of the
        // held anomaly is not repeated.
        let mut f = FlowState::new(Protocol::Qmqp, 40000, 628);
        f.data(TO_SERVER, &bad, 1);
        f.data(TO_CLIENT, &ns(b"Dno"), 2);
        f.eof(TO_SERVER, 3);
        f.eof(TO_CLIENT, 3);
        let kinds: Vec<_> = f
            .txs()
            .iter()
            .flat_map(|t| t.anomalies.iter().map(|a| a.0))
            .collect();
        assert_eq!(kinds, [kind]);
    }

    #[test]
    fn freed_transactions_go() {
        let mut f = FlowState::new(Protocol::Qmtp, 40000, 209);
        f.data(TO_SERVER, &pkg(), 1);
        f.data(TO_CLIENT, &replies(), 2);
        assert_eq!(f.tx_count(), 1);
        assert!(f.tx(0).is_some());
        f.free_tx(0);
        assert!(f.tx(0).is_none());
        assert_eq!(f.tx_count(), 1);
    }
}
