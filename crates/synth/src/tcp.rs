//! TCP connections driven by a script of application writes.
//!
//! A [`Script`] says what each side writes and when: "after the peer's stream
//! reached offset X, wait D, then write these bytes" (or close with FIN, or
//! abort with RST). A [`Conn`] turns it into packets one at a time, in time
//! order, as seen at a capture point between the two hosts:
//!
//! - handshake SYN, SYN-ACK, ACK (MSS, SACK-permitted, timestamps, window
//!   scale), or a refused SYN answered by RST-ACK;
//! - data in MSS-sized segments (1448 bytes over IPv4, 1428 over IPv6, with
//!   the timestamp option), consecutive writes coalesced into one segment as
//!   a socket does, PSH at the end of what was written;
//! - the receiver acknowledges every second segment, or after a 40 ms
//!   delayed-ACK timer, unless its own data carries the acknowledgement;
//! - the sender never has more than its window unacknowledged;
//! - FIN/RST teardown.
//!
//! Each endpoint sits `rtt` (round trip) away from the capture point: a
//! packet it sends in reaction to one seen at time `t` is seen at `t + rtt`
//! at the earliest, and the acknowledgement number of a packet seen at `t`
//! covers exactly the peer data seen before `t - rtt`. So acknowledgements
//! never run ahead of the data in the capture.

use std::collections::VecDeque;

use super::content::Content;
use super::wire::{self, Host, TcpFields, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// Delayed-ACK timeout.
pub const ATO_NS: u64 = 40_000_000;
/// TCP header with the timestamp option.
const TCP_HDR_TS: u64 = 32;

pub const CLIENT: usize = 0;
pub const SERVER: usize = 1;

/// What a write does.
#[derive(Clone, Debug)]
pub enum Action {
    Data(Content),
    Fin,
    Rst,
}

/// One application write of a script.
#[derive(Clone, Debug)]
pub struct Write {
    /// The write waits until the peer's stream (data bytes, plus one for its
    /// FIN) reached this offset; 0: only for the connection to be open.
    pub after_peer: u64,
    /// Think time after that, in nanoseconds.
    pub delay: u64,
    pub action: Action,
    /// Packet time at which the peer's stream reached `after_peer`.
    reached: Option<u64>,
}

/// What both sides of a connection write, in order.
#[derive(Clone, Debug, Default)]
pub struct Script {
    writes: [Vec<Write>; 2],
    /// Stream length of each side so far (data, plus one after a FIN).
    end: [u64; 2],
    data: [u64; 2],
    closed: [bool; 2],
    /// Refused connection: SYN answered by RST-ACK, no writes.
    pub refused: bool,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection attempt to a closed port.
    pub fn refused() -> Self {
        Script {
            refused: true,
            ..Self::default()
        }
    }

    /// Data bytes `side` has written so far.
    pub fn sent(&self, side: usize) -> u64 {
        self.data[side]
    }

    /// Stream offset of `side` after everything scheduled (FIN included).
    pub fn end(&self, side: usize) -> u64 {
        self.end[side]
    }

    fn push(&mut self, side: usize, after_peer: u64, delay: u64, action: Action) {
        debug_assert!(!self.closed[side], "write after close");
        debug_assert!(
            self.writes[side]
                .last()
                .is_none_or(|w| w.after_peer <= after_peer),
            "dependencies must not go backwards"
        );
        self.writes[side].push(Write {
            after_peer,
            delay,
            action,
            reached: None,
        });
    }

    /// `side` writes `data` once the peer's stream reached `after_peer`,
    /// `delay` ns later. Returns `side`'s stream offset after it.
    pub fn write_after(&mut self, side: usize, after_peer: u64, delay: u64, data: Content) -> u64 {
        if !data.is_empty() {
            self.end[side] += data.len();
            self.data[side] += data.len();
            self.push(side, after_peer, delay, Action::Data(data));
        }
        self.end[side]
    }

    /// `side` writes `data` after everything the peer wrote so far arrived.
    pub fn reply(&mut self, side: usize, delay: u64, data: Content) -> u64 {
        let after = self.data[1 - side];
        self.write_after(side, after, delay, data)
    }

    /// `side` closes (FIN) once the peer's stream reached `after_peer`.
    pub fn fin_after(&mut self, side: usize, after_peer: u64, delay: u64) {
        self.push(side, after_peer, delay, Action::Fin);
        self.end[side] += 1;
        self.closed[side] = true;
    }

    /// `side` closes once everything the peer scheduled (its FIN included) arrived.
    pub fn fin_last(&mut self, side: usize, delay: u64) {
        let after = self.end[1 - side];
        self.fin_after(side, after, delay);
    }

    /// `side` aborts (RST) once the peer's stream reached `after_peer`. The
    /// connection ends there: nothing may be scheduled after it.
    pub fn rst_after(&mut self, side: usize, after_peer: u64, delay: u64) {
        self.push(side, after_peer, delay, Action::Rst);
        self.closed = [true, true];
    }

    /// Capture bytes this script will produce, roughly (pcap headers
    /// included), for sizing a capture.
    pub fn estimate(&self, v4: bool) -> u64 {
        let base = if v4 { 14 + 20 } else { 14 + 40 } + TCP_HDR_TS + 16;
        let mss = if v4 { 1448 } else { 1428 };
        if self.refused {
            return 2 * (base + 16);
        }
        let mut total = 3 * (base + 8);
        for side in 0..2 {
            let segs = self.data[side].div_ceil(mss) + self.writes[side].len() as u64 / 2;
            total += self.data[side] + segs * base;
            // The peer's ACKs: one per two segments.
            total += segs.div_ceil(2) * base;
            if self.closed[side] {
                total += 2 * base;
            }
        }
        total
    }
}

/// How one endpoint of a connection behaves on the wire.
#[derive(Clone, Copy, Debug)]
pub struct EndSpec {
    pub host: Host,
    pub port: u16,
    /// Round trip between the capture point and this host, ns.
    pub rtt: u64,
    /// Sending rate as picoseconds per byte (8000 = 1 Gbit/s).
    pub ps_per_byte: u64,
    /// Most bytes this host leaves unacknowledged (the peer's receive window).
    pub wnd: u64,
}

#[derive(Debug)]
struct End {
    spec: EndSpec,
    mss: u64,
    isn: u32,
    ip_id: u16,
    ts_base: u32,
    writes: VecDeque<Write>,
    /// Bytes of the front write already sent.
    cur: u64,
    /// Stream offset of the next byte to send (after a FIN: one more).
    snd: u64,
    /// Earliest time the connection is open for this host's data.
    ready: u64,
    /// Earliest time of the next segment (sending rate).
    next_free: u64,
    /// Pure ACKs due: (time, peer offset they must cover).
    acks: VecDeque<(u64, u64)>,
    /// The delayed-ACK timer.
    delayed: Option<(u64, u64)>,
    unacked_segments: u8,
    /// What this host sent: (time seen, stream offset after it).
    sent_hist: VecDeque<(u64, u64)>,
    /// Acknowledgements this host sent: (time seen, peer offset).
    ack_hist: VecDeque<(u64, u64)>,
    /// Peer stream offset received (what this host acknowledges).
    rcv: u64,
    /// Own stream offset known to be acknowledged.
    acked: u64,
    last_ack: u64,
}

impl End {
    fn new(spec: EndSpec, isn: u32, ts_base: u32, writes: Vec<Write>) -> Self {
        let mss = if spec.host.ip.is_ipv4() { 1448 } else { 1428 };
        End {
            spec,
            mss,
            isn,
            ip_id: (isn >> 16) as u16,
            ts_base,
            writes: writes.into(),
            cur: 0,
            snd: 0,
            ready: 0,
            next_free: 0,
            acks: VecDeque::new(),
            delayed: None,
            unacked_segments: 0,
            sent_hist: VecDeque::new(),
            ack_hist: VecDeque::new(),
            rcv: 0,
            acked: 0,
            last_ack: 0,
        }
    }

    fn avail(&self, w: &Write) -> Option<u64> {
        if w.after_peer == 0 {
            return Some(self.ready + w.delay);
        }
        w.reached.map(|r| r + self.spec.rtt + w.delay)
    }

    fn seq(&self) -> u32 {
        self.isn.wrapping_add(1).wrapping_add(self.snd as u32)
    }

    fn idle(&self) -> bool {
        self.writes.is_empty() && self.acks.is_empty() && self.delayed.is_none()
    }

    fn tsval(&self, t: u64) -> u32 {
        self.ts_base.wrapping_add((t / 1_000_000) as u32)
    }

    /// Pure ACK due time.
    fn ack_due(&self) -> Option<u64> {
        match (self.acks.front(), self.delayed) {
            (Some(a), Some(d)) => Some(a.0.min(d.0)),
            (Some(a), None) => Some(a.0),
            (None, Some(d)) => Some(d.0),
            (None, None) => None,
        }
    }
}

/// What a segment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data(u64),
    Fin,
    Rst,
    Ack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Syn,
    SynAck,
    HsAck,
    Refuse,
    Open,
    Done,
}

/// The next packet of a connection.
#[derive(Clone, Copy, Debug)]
struct Next {
    ts: u64,
    side: usize,
    kind: Kind,
}

/// One TCP connection being written.
#[derive(Debug)]
pub struct Conn {
    e: [End; 2],
    phase: Phase,
    t_syn: u64,
    t_synack: u64,
    flow_label: u32,
    next: Option<Next>,
    refused: bool,
    /// Set when the script cannot go on (a generator bug).
    pub stuck: bool,
}

fn ends_mut(e: &mut [End; 2], side: usize) -> (&mut End, &mut End) {
    let [a, b] = e;
    if side == 0 {
        (a, b)
    } else {
        (b, a)
    }
}

impl Conn {
    /// A connection whose SYN is seen at `start`. `isn`/`ts` seed the initial
    /// sequence numbers and timestamp clocks.
    pub fn new(
        client: EndSpec,
        server: EndSpec,
        script: Script,
        start: u64,
        seeds: [u32; 5],
    ) -> Self {
        let [cw, sw] = script.writes;
        let mut c = Conn {
            e: [
                End::new(client, seeds[0], seeds[1], cw),
                End::new(server, seeds[2], seeds[3], sw),
            ],
            phase: Phase::Syn,
            t_syn: start,
            t_synack: 0,
            flow_label: seeds[4] & 0xf_ffff,
            next: None,
            refused: script.refused,
            stuck: false,
        };
        c.next = c.compute_next();
        c
    }

    /// Time of the next packet; `None` when the connection is over.
    pub fn next_ts(&self) -> Option<u64> {
        self.next.map(|n| n.ts)
    }

    fn side_next(&self, side: usize) -> Option<Next> {
        let me = &self.e[side];
        let peer = &self.e[1 - side];
        let mut best: Option<Next> = None;
        if let Some(w) = me.writes.front() {
            if let Some(avail) = me.avail(w) {
                let mut t = avail.max(me.next_free).max(me.ready);
                let kind = match &w.action {
                    Action::Fin => Some(Kind::Fin),
                    Action::Rst => Some(Kind::Rst),
                    Action::Data(c) => {
                        let mut len = (c.len() - me.cur).min(me.mss);
                        for w2 in me.writes.iter().skip(1) {
                            if len >= me.mss {
                                break;
                            }
                            match &w2.action {
                                Action::Data(c2) if me.avail(w2).is_some_and(|a| a <= t) => {
                                    len = (len + c2.len()).min(me.mss);
                                }
                                _ => break,
                            }
                        }
                        // The window: wait for the acknowledgement that makes room.
                        let need = (me.snd + len).saturating_sub(me.spec.wnd);
                        if need > me.acked {
                            match peer.ack_hist.iter().find(|&&(_, v)| v >= need) {
                                Some(&(ta, _)) => {
                                    t = t.max(ta + me.spec.rtt);
                                    Some(Kind::Data(len))
                                }
                                None => None,
                            }
                        } else {
                            Some(Kind::Data(len))
                        }
                    }
                };
                if let Some(kind) = kind {
                    best = Some(Next { ts: t, side, kind });
                }
            }
        }
        if let Some(t) = me.ack_due() {
            if best.is_none_or(|b| t < b.ts) {
                best = Some(Next {
                    ts: t,
                    side,
                    kind: Kind::Ack,
                });
            }
        }
        best
    }

    fn compute_next(&mut self) -> Option<Next> {
        let (c, s) = (&self.e[CLIENT], &self.e[SERVER]);
        match self.phase {
            Phase::Syn => Some(Next {
                ts: self.t_syn,
                side: CLIENT,
                kind: Kind::Ack,
            }),
            Phase::SynAck | Phase::Refuse => Some(Next {
                ts: self.t_syn + s.spec.rtt,
                side: SERVER,
                kind: Kind::Ack,
            }),
            Phase::HsAck => Some(Next {
                ts: self.t_synack + c.spec.rtt,
                side: CLIENT,
                kind: Kind::Ack,
            }),
            Phase::Done => None,
            Phase::Open => {
                let a = self.side_next(CLIENT);
                let b = self.side_next(SERVER);
                let n = match (a, b) {
                    (Some(a), Some(b)) => Some(if b.ts < a.ts { b } else { a }),
                    (a, b) => a.or(b),
                };
                if n.is_none() {
                    if !(c.idle() && s.idle()) {
                        self.stuck = true;
                    }
                    self.phase = Phase::Done;
                }
                n
            }
        }
    }

    fn syn_options(&self, side: usize, t: u64) -> [u8; 20] {
        let me = &self.e[side];
        let mss: u16 = if me.spec.host.ip.is_ipv4() {
            1460
        } else {
            1440
        };
        let tsval = me.tsval(t);
        let tsecr = if side == SERVER {
            self.e[CLIENT].tsval(self.t_syn)
        } else {
            0
        };
        let mut o = [0u8; 20];
        o[0] = 2;
        o[1] = 4;
        o[2..4].copy_from_slice(&mss.to_be_bytes());
        o[4] = 4;
        o[5] = 2;
        o[6] = 8;
        o[7] = 10;
        o[8..12].copy_from_slice(&tsval.to_be_bytes());
        o[12..16].copy_from_slice(&tsecr.to_be_bytes());
        o[16] = 1;
        o[17] = 3;
        o[18] = 3;
        o[19] = 7;
        o
    }

    /// Writes the next packet into `frame`; returns its time.
    pub fn emit(&mut self, frame: &mut Vec<u8>) -> Option<u64> {
        let n = self.next?;
        let t = n.ts;
        match self.phase {
            Phase::Syn => {
                let o = self.syn_options(CLIENT, t);
                let isn = self.e[CLIENT].isn;
                self.segment(frame, CLIENT, TCP_SYN, (isn, 0), &o);
                self.phase = if self.refused {
                    Phase::Refuse
                } else {
                    Phase::SynAck
                };
            }
            Phase::Refuse => {
                let ack = self.e[CLIENT].isn.wrapping_add(1);
                self.segment(frame, SERVER, TCP_RST | TCP_ACK, (0, ack), &[]);
                self.phase = Phase::Done;
            }
            Phase::SynAck => {
                let o = self.syn_options(SERVER, t);
                let ack = self.e[CLIENT].isn.wrapping_add(1);
                let isn = self.e[SERVER].isn;
                self.segment(frame, SERVER, TCP_SYN | TCP_ACK, (isn, ack), &o);
                self.t_synack = t;
                self.phase = Phase::HsAck;
            }
            Phase::HsAck => {
                let seq = self.e[CLIENT].seq();
                let ack = self.e[SERVER].isn.wrapping_add(1);
                let o = self.ts_options(CLIENT, t);
                self.segment(frame, CLIENT, TCP_ACK, (seq, ack), &o);
                self.e[CLIENT].ready = t;
                self.e[SERVER].ready = t + self.e[SERVER].spec.rtt;
                self.phase = Phase::Open;
            }
            Phase::Open => self.open_packet(frame, n),
            Phase::Done => return None,
        }
        self.next = self.compute_next();
        Some(t)
    }

    fn ts_options(&self, side: usize, t: u64) -> [u8; 12] {
        let me = &self.e[side];
        let peer = &self.e[1 - side];
        let tsval = me.tsval(t);
        let tsecr = peer.tsval(t.saturating_sub(me.spec.rtt));
        let mut o = [1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
        o[4..8].copy_from_slice(&tsval.to_be_bytes());
        o[8..12].copy_from_slice(&tsecr.to_be_bytes());
        o
    }

    fn open_packet(&mut self, frame: &mut Vec<u8>, n: Next) {
        let (t, side) = (n.ts, n.side);
        {
            // What this host knows at `t`: peer data and acknowledgements
            // seen at least one round trip ago.
            let (me, peer) = ends_mut(&mut self.e, side);
            let rtt = me.spec.rtt;
            while let Some(&(ts, off)) = peer.sent_hist.front() {
                if ts + rtt > t {
                    break;
                }
                me.rcv = me.rcv.max(off);
                peer.sent_hist.pop_front();
            }
            while let Some(&(ts, off)) = peer.ack_hist.front() {
                if ts + rtt > t {
                    break;
                }
                me.acked = me.acked.max(off);
                peer.ack_hist.pop_front();
            }
        }
        let o = self.ts_options(side, t);
        let (me, peer) = ends_mut(&mut self.e, side);
        let seq = me.seq();
        let ack = peer.isn.wrapping_add(1).wrapping_add(me.rcv as u32);
        let mut flags = TCP_ACK;
        let mut len = 0u64;
        match n.kind {
            Kind::Ack => {}
            Kind::Rst => {
                flags |= TCP_RST;
                me.writes.clear();
                self.phase = Phase::Done;
            }
            Kind::Fin => {
                flags |= TCP_FIN;
                me.writes.pop_front();
                me.snd += 1;
            }
            Kind::Data(l) => {
                len = l;
                // PSH when this segment empties what was written by now.
                let mut left = l;
                let mut rest_available = false;
                for (i, w) in me.writes.iter().enumerate() {
                    let Action::Data(c) = &w.action else { break };
                    let have = if i == 0 { c.len() - me.cur } else { c.len() };
                    if left >= have {
                        left -= have;
                        continue;
                    }
                    rest_available = me.avail(w).is_some_and(|a| a <= t);
                    break;
                }
                if !rest_available {
                    flags |= TCP_PSH;
                }
                me.snd += l;
                me.next_free = t + l * me.spec.ps_per_byte / 1000;
            }
        }
        // Options and window, then the frame.
        let window = (peer.spec.wnd >> 7).clamp(64, 65_535) as u16;
        let fields = TcpFields {
            sport: me.spec.port,
            dport: peer.spec.port,
            seq,
            ack,
            flags,
            window,
            options: &o,
            ip_id: me.ip_id,
            flow_label: self.flow_label,
        };
        me.ip_id = me.ip_id.wrapping_add(1);
        let (src, dst) = (me.spec.host, peer.spec.host);
        let writes = &mut me.writes;
        let cur = &mut me.cur;
        wire::tcp_frame(frame, &src, &dst, &fields, len as usize, |out| {
            let mut left = len;
            while left > 0 {
                let Some(w) = writes.front() else { break };
                let Action::Data(c) = &w.action else { break };
                let take = left.min(c.len() - *cur);
                c.copy(*cur, take as usize, out);
                *cur += take;
                left -= take;
                if *cur == c.len() {
                    writes.pop_front();
                    *cur = 0;
                }
            }
        });
        if self.phase == Phase::Done {
            for e in &mut self.e {
                e.acks.clear();
                e.delayed = None;
                e.writes.clear();
            }
            return;
        }
        // This packet acknowledges `rcv`: pure ACKs it covers are void.
        while me.acks.front().is_some_and(|&(_, off)| off <= me.rcv) {
            me.acks.pop_front();
        }
        if me.delayed.is_some_and(|(_, off)| off <= me.rcv) {
            me.delayed = None;
            me.unacked_segments = 0;
        }
        if me.rcv > me.last_ack {
            me.last_ack = me.rcv;
            me.ack_hist.push_back((t, me.rcv));
        }
        if len > 0 || n.kind == Kind::Fin {
            let end = me.snd;
            me.sent_hist.push_back((t, end));
            // The peer receives it: ACK every second segment, a FIN at once,
            // otherwise after the delayed-ACK timeout.
            let prtt = peer.spec.rtt;
            if n.kind == Kind::Fin {
                peer.acks.push_back((t + prtt, end));
                peer.delayed = None;
                peer.unacked_segments = 0;
            } else {
                peer.unacked_segments += 1;
                if peer.unacked_segments >= 2 {
                    peer.acks.push_back((t + prtt, end));
                    peer.delayed = None;
                    peer.unacked_segments = 0;
                } else {
                    peer.delayed = Some((t + prtt + ATO_NS, end));
                }
            }
            // Writes of the peer waiting for this offset can start.
            for w in peer.writes.iter_mut() {
                if w.reached.is_some() || w.after_peer == 0 {
                    continue;
                }
                if w.after_peer > end {
                    break;
                }
                w.reached = Some(t);
            }
        }
    }

    /// A handshake or refusal segment (no payload).
    fn segment(
        &mut self,
        frame: &mut Vec<u8>,
        side: usize,
        flags: u8,
        (seq, ack): (u32, u32),
        options: &[u8],
    ) {
        let (me, peer) = ends_mut(&mut self.e, side);
        let window = if flags & TCP_RST != 0 {
            0
        } else if flags & TCP_SYN != 0 {
            64_240
        } else {
            (peer.spec.wnd >> 7).clamp(64, 65_535) as u16
        };
        let fields = TcpFields {
            sport: me.spec.port,
            dport: peer.spec.port,
            seq,
            ack,
            flags,
            window,
            options,
            ip_id: me.ip_id,
            flow_label: self.flow_label,
        };
        me.ip_id = me.ip_id.wrapping_add(1);
        wire::tcp_frame(frame, &me.spec.host, &peer.spec.host, &fields, 0, |_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketHeaders, TransportHeader};

    fn spec(ip: &str, port: u16, rtt_us: u64) -> EndSpec {
        EndSpec {
            host: Host::new(ip.parse().unwrap(), 64),
            port,
            rtt: rtt_us * 1000,
            ps_per_byte: 8_000,
            wnd: 64 * 1024,
        }
    }

    struct Pkt {
        ts: u64,
        from_client: bool,
        seq: u32,
        ack: u32,
        flags: (bool, bool, bool, bool),
        payload: Vec<u8>,
    }

    fn run(script: Script, v6: bool) -> Vec<Pkt> {
        let (c, s) = if v6 {
            (
                spec("2001:db8:1::1000", 40_000, 30_000),
                spec("2001:db8:1::25", 209, 200),
            )
        } else {
            (
                spec("198.51.100.7", 40_000, 30_000),
                spec("192.0.2.25", 209, 200),
            )
        };
        let mut conn = Conn::new(c, s, script, 1_000_000_000, [1000, 5, 0xffff_fff0, 9, 77]);
        let mut out = Vec::new();
        let mut frame = Vec::new();
        while let Some(ts) = conn.emit(&mut frame) {
            let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
            let Some(TransportHeader::Tcp(t)) = h.transport else {
                panic!()
            };
            out.push(Pkt {
                ts,
                from_client: t.source_port == 40_000,
                seq: t.sequence_number,
                ack: t.acknowledgment_number,
                flags: (t.syn, t.ack, t.fin, t.rst),
                payload: h.payload.slice().to_vec(),
            });
        }
        assert!(!conn.stuck);
        out
    }

    /// Reassembles both directions checking seq/ack consistency.
    fn check(pkts: &[Pkt]) -> (Vec<u8>, Vec<u8>) {
        let mut streams = [Vec::new(), Vec::new()];
        let mut next = [None::<u32>, None::<u32>];
        let mut last_ts = 0;
        for p in pkts {
            assert!(p.ts >= last_ts);
            last_ts = p.ts;
            let d = usize::from(!p.from_client);
            if p.flags.0 {
                next[d] = Some(p.seq.wrapping_add(1));
                continue;
            }
            if p.flags.3 {
                break;
            }
            let n = next[d].unwrap();
            assert_eq!(p.seq, n, "in order, no gaps");
            streams[d].extend_from_slice(&p.payload);
            next[d] = Some(n.wrapping_add(p.payload.len() as u32 + u32::from(p.flags.2)));
            // The ACK never covers more than the peer sent so far.
            if p.flags.1 {
                if let Some(pn) = next[1 - d] {
                    assert!(p.ack.wrapping_sub(pn) as i32 <= 0, "ack ahead of data");
                }
            }
        }
        let [a, b] = streams;
        (a, b)
    }

    #[test]
    fn request_response_close() {
        let mut s = Script::new();
        s.reply(CLIENT, 0, Content::bytes(b"hello".to_vec()));
        let big = Content::bytes(vec![7u8; 100_000]);
        s.reply(SERVER, 1_000, big);
        s.fin_after(CLIENT, s.sent(SERVER), 0);
        s.fin_last(SERVER, 0);
        for v6 in [false, true] {
            let p = run(s.clone(), v6);
            let (c, sv) = check(&p);
            assert_eq!(c, b"hello");
            assert_eq!(sv.len(), 100_000);
            let mss = if v6 { 1428 } else { 1448 };
            assert!(p.iter().all(|x| x.payload.len() <= mss));
            assert!(p.iter().any(|x| x.payload.len() == mss));
            // Handshake first, FINs at the end, a pure ACK last.
            assert!(p[0].flags.0 && !p[0].flags.1);
            assert!(p[1].flags.0 && p[1].flags.1);
            let last = p.last().unwrap();
            assert!(last.payload.is_empty() && !last.flags.2 && last.from_client);
            assert_eq!(p.iter().filter(|x| x.flags.2).count(), 2);
            // Pure ACKs from the client while the server sends.
            assert!(
                p.iter()
                    .filter(|x| x.from_client && x.payload.is_empty() && !x.flags.2)
                    .count()
                    > 30
            );
        }
    }

    #[test]
    fn pipelined_writes_coalesce_and_rst_ends() {
        let mut s = Script::new();
        for _ in 0..3 {
            s.write_after(CLIENT, 0, 0, Content::bytes(vec![b'a'; 1000]));
        }
        let c_end = s.sent(CLIENT);
        s.write_after(SERVER, 1000, 0, Content::bytes(b"r1".to_vec()));
        s.write_after(SERVER, c_end, 0, Content::bytes(b"r2r3".to_vec()));
        s.rst_after(CLIENT, s.sent(SERVER), 5_000_000);
        let p = run(s, false);
        let (c, sv) = check(&p);
        assert_eq!(c.len(), 3000);
        assert_eq!(sv, b"r1r2r3");
        // Three 1000-byte writes at once: coalesced into full segments.
        let sizes: Vec<usize> = p
            .iter()
            .filter(|x| x.from_client && !x.payload.is_empty())
            .map(|x| x.payload.len())
            .collect();
        assert_eq!(sizes, [1448, 1448, 104]);
        assert!(p.last().unwrap().flags.3);
    }

    #[test]
    fn refused_connection() {
        let p = run(Script::refused(), false);
        assert_eq!(p.len(), 2);
        assert!(p[1].flags.3);
    }

    #[test]
    fn window_limits_flight() {
        let mut s = Script::new();
        s.reply(CLIENT, 0, Content::bytes(vec![1u8; 1_000_000]));
        s.fin_after(CLIENT, 0, 0);
        s.fin_last(SERVER, 0);
        let p = run(s, false);
        check(&p);
        // With a 64 KiB window and a 30 ms round trip the transfer takes
        // at least 1 MB / 64 KiB round trips.
        let data: Vec<&Pkt> = p.iter().filter(|x| !x.payload.is_empty()).collect();
        let span = data.last().unwrap().ts - data[0].ts;
        assert!(span > 14 * 30_000_000, "{span}");
    }
}
