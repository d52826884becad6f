//! Profiles: which flows a capture holds, who talks to whom, what they say,
//! and the scheduler that interleaves them in time.
//!
//! Address plan (documentation ranges only):
//!
//! | who | IPv4 | IPv6 |
//! |---|---|---|
//! | internal clients (trusted) | 192.0.2.100–254 | 2001:db8:1::a:0/116 |
//! | internal servers | 192.0.2.20–99 | 2001:db8:1::/112 |
//! | external clients | 198.51.100.1–199, 203.0.113.100–254 | 2001:db8:ee::a:0/116 |
//! | external servers | 198.51.100.200–254, 203.0.113.1–99 | 2001:db8:ff::/112 |
//!
//! Local mail domain `example.net` (and subdomains); foreign `example.com`,
//! `example.org`. QMTP/QMQP servers, each with its own behaviour, are in
//! [`qm_servers`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::content::{self, netstring, netstring_of, Content, Piece};
use super::rng::Rng;
use super::tcp::{Conn, EndSpec, Script, CLIENT, SERVER};
use super::truth::{
    CaptureInfo, Code, GeneratorInfo, PolicyInfo, Proto, Recorder, SessionTruth, SitePolicy, Truth,
    TxTruth,
};
use super::wire::{self, Host, PcapWriter};
use super::{Config, Profile, Target};

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// Packet time of the first flow: 2026-01-01T00:00:00Z.
pub const EPOCH_NS: u64 = 1_767_225_600 * SEC;
/// Below this target size the large size distributions shrink with it.
const FULL_SCALE_BYTES: u64 = 256 << 20;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn ip6(net: u16, host: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        net,
        0,
        0,
        0,
        (host >> 16) as u16,
        host as u16,
    ))
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[..3] == [192, 0, 2],
        IpAddr::V6(a) => a.segments()[..3] == [0x2001, 0xdb8, 1],
    }
}

fn host(ip: IpAddr) -> Host {
    // Packets from outside crossed some routers.
    let ttl = if is_internal(ip) {
        64
    } else {
        let last = match ip {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => a.octets()[15],
        };
        52 + last % 10
    };
    Host::new(ip, ttl)
}

fn internal_client(rng: &mut Rng, ipv6: bool) -> IpAddr {
    if ipv6 {
        ip6(1, 0xa_0000 | rng.below(4096) as u32)
    } else {
        v4(192, 0, 2, rng.range(100, 254) as u8)
    }
}

fn external_client(rng: &mut Rng, ipv6: bool) -> IpAddr {
    if ipv6 {
        ip6(0xee, 0xa_0000 | rng.below(4096) as u32)
    } else if rng.chance(0.5) {
        v4(198, 51, 100, rng.range(1, 199) as u8)
    } else {
        v4(203, 0, 113, rng.range(100, 254) as u8)
    }
}

/// A server that is neither QMTP/QMQP nor DNS.
fn other_server(rng: &mut Rng, ipv6: bool, internal: bool) -> IpAddr {
    match (ipv6, internal) {
        (true, true) => ip6(1, 0x100 + rng.below(256) as u32),
        (true, false) => ip6(0xff, 0x100 + rng.below(3840) as u32),
        (false, true) => v4(192, 0, 2, rng.range(60, 99) as u8),
        (false, false) => {
            if rng.chance(0.7) {
                v4(203, 0, 113, rng.range(1, 99) as u8)
            } else {
                v4(198, 51, 100, rng.range(211, 254) as u8)
            }
        }
    }
}

/// How a QMTP/QMQP server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// qmail-qmtpd with rcpthosts: untrusted clients get `D` for foreign recipients.
    Closed,
    /// Relays for anyone (RELAYCLIENT set for every client): an open relay.
    Open,
    /// Like `Closed`, but its queue often fails: whole packages get `Z`.
    Flaky,
    /// Postfix qmqpd: authorised (trusted) clients only; others get a `D`
    /// after a one-second delay, without the server reading the request.
    Authorized,
    /// A QMQP server authorising everyone: an open relay.
    QmqpOpen,
}

/// One QMTP/QMQP server of the site (or outside it).
#[derive(Clone, Copy, Debug)]
pub struct QmServer {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub kind: ServerKind,
    pub internal: bool,
    weight: u32,
}

/// The QMTP/QMQP servers of every profile.
pub fn qm_servers() -> Vec<QmServer> {
    use ServerKind::*;
    let s = |ip: IpAddr, port: u16, proto, kind, weight| QmServer {
        addr: SocketAddr::new(ip, port),
        proto,
        kind,
        internal: is_internal(ip),
        weight,
    };
    vec![
        s(v4(192, 0, 2, 25), 209, Proto::Qmtp, Closed, 20),
        s(v4(192, 0, 2, 26), 209, Proto::Qmtp, Closed, 12),
        s(v4(192, 0, 2, 27), 2209, Proto::Qmtp, Open, 8),
        s(v4(192, 0, 2, 31), 8025, Proto::Qmtp, Closed, 6),
        s(ip6(1, 0x25), 209, Proto::Qmtp, Closed, 8),
        s(v4(192, 0, 2, 33), 10209, Proto::Qmtp, Flaky, 5),
        s(v4(198, 51, 100, 210), 209, Proto::Qmtp, Closed, 5),
        s(ip6(0xff, 0x25), 209, Proto::Qmtp, Open, 3),
        s(v4(192, 0, 2, 28), 628, Proto::Qmqp, Authorized, 14),
        s(v4(192, 0, 2, 29), 6628, Proto::Qmqp, Authorized, 6),
        s(ip6(1, 0x28), 628, Proto::Qmqp, Authorized, 5),
        s(v4(192, 0, 2, 30), 628, Proto::Qmqp, QmqpOpen, 5),
    ]
}

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar", "peggy", "trent", "victor", "walter", "sales", "info", "billing", "ops",
];

fn user(rng: &mut Rng) -> String {
    let u = USERS[rng.index(USERS.len())];
    if rng.chance(0.4) {
        format!("{u}{}", rng.below(1000))
    } else {
        u.to_string()
    }
}

/// A recipient in the local domain, in the forms qmail sees.
fn local_address(rng: &mut Rng) -> String {
    let u = user(rng);
    match rng.weighted(&[60, 10, 8, 8, 6, 8]) {
        0 => format!("{u}@example.net"),
        1 => format!("{u}@lists.example.net"),
        2 => format!("{u}@mail.example.net"),
        3 => format!("{u}@EXAMPLE.NET"),
        4 => "postmaster".to_string(),
        _ => format!("{}.{u}@Example.Net", USERS[rng.index(USERS.len())]),
    }
}

fn foreign_address(rng: &mut Rng) -> String {
    let u = user(rng);
    match rng.weighted(&[40, 30, 15, 10, 5]) {
        0 => format!("{u}@example.com"),
        1 => format!("{u}@example.org"),
        2 => format!("{u}@mail.example.org"),
        3 => format!("{u}@lists.example.com"),
        _ => format!("{u}@EXAMPLE.COM"),
    }
}

/// How many recipients a message has: 1 to 20, mostly few.
fn recipient_count(rng: &mut Rng, small: bool) -> usize {
    if small {
        return rng.range(1, 3) as usize;
    }
    match rng.weighted(&[50, 35, 15]) {
        0 => 1,
        1 => rng.range(2, 5) as usize,
        _ => rng.range(6, 20) as usize,
    }
}

fn reply_ns(code: Code, text: &str) -> Vec<u8> {
    netstring(format!("{}{text}", code.letter()).as_bytes())
}

fn qmail_ok(rng: &mut Rng) -> String {
    format!(
        "ok {} qp {}",
        1_767_225_600 + rng.below(86_400),
        rng.range(1000, 65_000)
    )
}

/// One generated flow.
enum Flow {
    Tcp(Box<Conn>),
    Udp(UdpFlow),
}

/// A few UDP datagrams (DNS).
struct UdpFlow {
    a: (Host, u16),
    b: (Host, u16),
    packets: VecDeque<(u64, bool, Vec<u8>)>,
    ip_id: u16,
}

impl Flow {
    fn next_ts(&self) -> Option<u64> {
        match self {
            Flow::Tcp(c) => c.next_ts(),
            Flow::Udp(u) => u.packets.front().map(|p| p.0),
        }
    }

    fn emit(&mut self, frame: &mut Vec<u8>) -> Option<u64> {
        match self {
            Flow::Tcp(c) => c.emit(frame),
            Flow::Udp(u) => {
                let (ts, from_a, payload) = u.packets.pop_front()?;
                let (src, dst) = if from_a { (&u.a, &u.b) } else { (&u.b, &u.a) };
                wire::udp_frame(frame, (&src.0, src.1), (&dst.0, dst.1), u.ip_id, &payload);
                u.ip_id = u.ip_id.wrapping_add(1);
                Some(ts)
            }
        }
    }

    fn stuck(&self) -> bool {
        matches!(self, Flow::Tcp(c) if c.stuck)
    }
}

/// What kind of flow to start.
#[derive(Clone, Copy, Debug)]
enum FlowKind {
    HttpBulk,
    Http,
    Tls,
    Smtp,
    Dns,
    Lookalike,
    Qm,
    Tiny,
    Refused,
}

impl Profile {
    /// Flow kinds and their weights (per thousand flows started).
    fn mix(self) -> &'static [(FlowKind, u32)] {
        use FlowKind::*;
        match self {
            Profile::Mixed => &[
                (Dns, 150),
                (Http, 455),
                (Refused, 10),
                (Tls, 240),
                (HttpBulk, 30),
                (Smtp, 30),
                (Qm, 20),
                (Lookalike, 10),
                (Tiny, 55),
            ],
            Profile::QmtpHeavy => &[(Qm, 1000)],
            Profile::SmallFlows => &[
                (Tiny, 720),
                (Dns, 150),
                (Refused, 50),
                (Lookalike, 75),
                (Qm, 5),
            ],
        }
    }

    /// Mean time between flow starts.
    fn mean_gap_ns(self) -> u64 {
        match self {
            Profile::Mixed => 1_000 * US,
            Profile::QmtpHeavy => 20 * MS,
            Profile::SmallFlows => 10 * US,
        }
    }
}

/// Rates and distances of one endpoint.
fn end_spec(rng: &mut Rng, ip: IpAddr, port: u16, small: bool) -> EndSpec {
    let near = is_internal(ip);
    let rtt = match (near, small) {
        (true, false) => rng.range(100 * US, 2 * MS),
        (false, false) => rng.range(5 * MS, 150 * MS),
        (true, true) => rng.range(50 * US, MS),
        (false, true) => rng.range(2 * MS, 40 * MS),
    };
    let mbps = if near {
        rng.log_uniform(100, 10_000)
    } else {
        rng.log_uniform(10, 1_000)
    };
    EndSpec {
        host: host(ip),
        port,
        rtt,
        ps_per_byte: 8_000_000 / mbps,
        wnd: rng.log_uniform(64 << 10, 4 << 20),
    }
}

/// The generator's state.
struct Gen {
    profile: Profile,
    /// Large sizes are multiplied by this (small targets).
    scale: f64,
    rng: Rng,
    ports: HashMap<IpAddr, u16>,
    qm_pairs: HashSet<(SocketAddr, SocketAddr)>,
    servers: Vec<QmServer>,
    policy: SitePolicy,
    rec: Recorder,
    tcp_flows: u64,
    udp_flows: u64,
}

impl Gen {
    /// A size from `lo..=hi`, both ends scaled down for small targets (the
    /// lower one never below `min(lo, 256)`).
    fn size(&self, rng: &mut Rng, lo: u64, hi: u64) -> u64 {
        let lo = ((lo as f64 * self.scale) as u64).max(lo.min(256));
        let hi = ((hi as f64 * self.scale) as u64)
            .max(lo.saturating_mul(4))
            .min(hi);
        rng.log_uniform(lo, hi)
    }

    fn ephemeral_port(&mut self, ip: IpAddr) -> u16 {
        let rng = &mut self.rng;
        let p = self
            .ports
            .entry(ip)
            .or_insert_with(|| rng.range(32_768, 60_999) as u16);
        let port = *p;
        *p = if *p >= 60_999 { 32_768 } else { *p + 1 };
        port
    }

    fn conn(
        &mut self,
        rng: &mut Rng,
        client: IpAddr,
        server: SocketAddr,
        script: Script,
        start: u64,
    ) -> (Flow, u64) {
        let cport = self.ephemeral_port(client);
        self.conn_from(rng, SocketAddr::new(client, cport), server, script, start)
    }

    fn conn_from(
        &mut self,
        rng: &mut Rng,
        client: SocketAddr,
        server: SocketAddr,
        script: Script,
        start: u64,
    ) -> (Flow, u64) {
        let small = self.profile == Profile::SmallFlows;
        let c = end_spec(rng, client.ip(), client.port(), small);
        let s = end_spec(rng, server.ip(), server.port(), small);
        let est = script.estimate(client.is_ipv4());
        let seeds = [
            rng.next_u32(),
            rng.next_u32(),
            rng.next_u32(),
            rng.next_u32(),
            rng.next_u32(),
        ];
        self.tcp_flows += 1;
        (
            Flow::Tcp(Box::new(Conn::new(c, s, script, start, seeds))),
            est,
        )
    }

    fn start(&mut self, start: u64) -> (Flow, u64) {
        let mix = self.profile.mix();
        let weights: Vec<u32> = mix.iter().map(|m| m.1).collect();
        let kind = mix[self.rng.weighted(&weights)].0;
        let mut rng = self.rng.fork();
        let rng = &mut rng;
        match kind {
            FlowKind::HttpBulk => self.http_bulk(rng, start),
            FlowKind::Http => self.http(rng, start),
            FlowKind::Tls => self.tls(rng, start),
            FlowKind::Smtp => self.smtp(rng, start),
            FlowKind::Dns => self.dns(rng, start),
            FlowKind::Lookalike => self.lookalike(rng, start),
            FlowKind::Qm => self.qm_session(rng, start),
            FlowKind::Tiny => self.tiny(rng, start),
            FlowKind::Refused => {
                self.rec.flow("refused");
                let v6 = rng.chance(0.2);
                let c = internal_client(rng, v6);
                let internal = rng.chance(0.3);
                let srv = other_server(rng, v6, internal);
                let port = [23, 445, 3389, 8081, 5432][rng.index(5)];
                self.conn(rng, c, SocketAddr::new(srv, port), Script::refused(), start)
            }
        }
    }

    /// Closes a request/response connection in one of the usual ways.
    fn close(rng: &mut Rng, s: &mut Script) {
        match rng.weighted(&[70, 15, 15]) {
            0 => {
                let after = s.sent(SERVER);
                s.fin_after(CLIENT, after, rng.range(0, 5 * MS));
                s.fin_last(SERVER, rng.range(0, 200 * US));
            }
            1 => {
                let after = s.end(CLIENT);
                s.fin_after(SERVER, after, rng.range(0, MS));
                s.fin_last(CLIENT, rng.range(0, MS));
            }
            _ => {
                let after = s.sent(SERVER);
                s.rst_after(CLIENT, after, rng.range(0, 5 * MS));
            }
        }
    }

    fn http_request(rng: &mut Rng, host: &str, path: &str) -> Vec<u8> {
        let post = rng.chance(0.15);
        let mut r = format!(
            "{} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
             Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n\
             Accept-Encoding: gzip, deflate, br\r\nCookie: session={:016x}\r\nConnection: keep-alive\r\n",
            if post { "POST" } else { "GET" },
            rng.next_u64()
        );
        if post {
            let body = format!(
                "{{\"id\":{},\"action\":\"update\",\"value\":\"{:x}\"}}",
                rng.below(100_000),
                rng.next_u64()
            );
            r.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            r.push_str("\r\n");
        }
        r.into_bytes()
    }

    fn http_response(rng: &mut Rng, size: u64) -> Content {
        let ctype = ["text/html; charset=utf-8", "application/json", "text/css"][rng.index(3)];
        let head = format!(
            "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\
             Content-Type: {ctype}\r\nContent-Length: {size}\r\nCache-Control: max-age=600\r\n\r\n"
        );
        let mut c = Content::bytes(head.into_bytes());
        c.push(Piece::Text {
            len: size,
            crlf: false,
            start: content::text_start(rng.next_u32(), false),
        });
        c
    }

    fn http(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("http");
        let v6 = rng.chance(0.15);
        let c = internal_client(rng, v6);
        let internal = rng.chance(0.2);
        let srv = other_server(rng, v6, internal);
        let port = [80, 80, 80, 8080, 8000][rng.index(5)];
        let name = format!("www{}.example.com", rng.below(50));
        let mut s = Script::new();
        let n = rng.weighted(&[60, 25, 10, 5]) + 1;
        for i in 0..n {
            let path = format!("/static/{}/{:x}.html", rng.below(100), rng.next_u32());
            let think = if i == 0 {
                rng.range(0, 500 * US)
            } else {
                rng.range(MS, 300 * MS)
            };
            s.reply(
                CLIENT,
                think,
                Content::bytes(Self::http_request(rng, &name, &path)),
            );
            let size = self.size(rng, 100, 60_000);
            s.reply(
                SERVER,
                rng.range(200 * US, 30 * MS),
                Self::http_response(rng, size),
            );
        }
        Self::close(rng, &mut s);
        self.conn(rng, c, SocketAddr::new(srv, port), s, start)
    }

    fn http_bulk(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("http_bulk");
        let v6 = rng.chance(0.15);
        let c = internal_client(rng, v6);
        let srv = other_server(rng, v6, false);
        let port = if rng.chance(0.8) { 80 } else { 8080 };
        let size = self.size(rng, 1 << 20, 60 << 20);
        let path = format!(
            "/downloads/{}-{}.tar.gz",
            ["release", "backup", "dataset", "image", "update"][rng.index(5)],
            rng.below(100_000)
        );
        let mut s = Script::new();
        s.reply(
            CLIENT,
            rng.range(0, MS),
            Content::bytes(Self::http_request(rng, "downloads.example.com", &path)),
        );
        let mut resp = Content::bytes(
            format!(
                "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {size}\r\nAccept-Ranges: bytes\r\nETag: \"{:x}\"\r\n\r\n",
                rng.next_u64()
            )
            .into_bytes(),
        );
        resp.push(Piece::Binary {
            len: size,
            seed: rng.next_u32(),
        });
        s.reply(SERVER, rng.range(MS, 30 * MS), resp);
        Self::close(rng, &mut s);
        self.conn(rng, c, SocketAddr::new(srv, port), s, start)
    }

    fn tls(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("tls");
        let v6 = rng.chance(0.2);
        let c = internal_client(rng, v6);
        let internal = rng.chance(0.1);
        let srv = other_server(rng, v6, internal);
        let port = if rng.chance(0.9) { 443 } else { 8443 };
        let mut s = Script::new();
        let sni = format!(
            "{}.example.com",
            ["www", "api", "cdn", "login"][rng.index(4)]
        );
        s.reply(
            CLIENT,
            rng.range(0, 500 * US),
            content::tls_client_hello(&sni, rng),
        );
        s.reply(
            SERVER,
            rng.range(300 * US, 10 * MS),
            content::tls_record(0x16, rng.range(2_500, 5_000), rng),
        );
        let mut fin = Content::bytes([0x14, 3, 3, 0, 1, 1].to_vec());
        fin.append(content::tls_record(0x16, rng.range(40, 80), rng));
        s.reply(CLIENT, rng.range(100 * US, 2 * MS), fin);
        let mut sfin = Content::bytes([0x14, 3, 3, 0, 1, 1].to_vec());
        sfin.append(content::tls_record(0x16, rng.range(40, 80), rng));
        s.reply(SERVER, rng.range(100 * US, 2 * MS), sfin);
        for i in 0..rng.range(1, 5) {
            let think = if i == 0 {
                rng.range(0, MS)
            } else {
                rng.range(MS, 200 * MS)
            };
            s.reply(
                CLIENT,
                think,
                content::tls_record(0x17, rng.range(100, 1_500), rng),
            );
            let mut total = self.size(rng, 300, 500_000);
            let mut resp = Content::new();
            while total > 0 {
                let r = total.min(16_384);
                resp.append(content::tls_record(0x17, r, rng));
                total -= r;
            }
            s.reply(SERVER, rng.range(200 * US, 40 * MS), resp);
        }
        if rng.chance(0.8) {
            s.reply(
                CLIENT,
                rng.range(0, 50 * MS),
                content::tls_record(0x15, 26, rng),
            );
        }
        Self::close(rng, &mut s);
        self.conn(rng, c, SocketAddr::new(srv, port), s, start)
    }

    fn smtp(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("smtp");
        let inbound = rng.chance(0.5);
        let (client, server, helo, mx) = if inbound {
            (
                external_client(rng, false),
                v4(192, 0, 2, rng.range(20, 22) as u8),
                "mail.example.org",
                "mx.example.net",
            )
        } else {
            (
                v4(192, 0, 2, 20),
                v4(198, 51, 100, rng.range(200, 209) as u8),
                "mx.example.net",
                "mx.example.com",
            )
        };
        let from = if inbound {
            foreign_address(rng)
        } else {
            local_address(rng)
        };
        let mut s = Script::new();
        let say = |s: &mut Script, rng: &mut Rng, side: usize, text: String| {
            let d = if side == SERVER {
                rng.range(100 * US, 5 * MS)
            } else {
                rng.range(10 * US, MS)
            };
            s.reply(side, d, Content::bytes(text.into_bytes()));
        };
        s.write_after(
            SERVER,
            0,
            rng.range(MS, 50 * MS),
            Content::bytes(format!("220 {mx} ESMTP Postfix\r\n").into_bytes()),
        );
        say(&mut s, rng, CLIENT, format!("EHLO {helo}\r\n"));
        say(
            &mut s,
            rng,
            SERVER,
            format!("250-{mx}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"),
        );
        say(&mut s, rng, CLIENT, format!("MAIL FROM:<{from}>\r\n"));
        say(&mut s, rng, SERVER, "250 2.1.0 Ok\r\n".into());
        let n = recipient_count(rng, false).min(5);
        let mut to = String::new();
        for _ in 0..n {
            let r = if inbound {
                local_address(rng)
            } else {
                foreign_address(rng)
            };
            say(&mut s, rng, CLIENT, format!("RCPT TO:<{r}>\r\n"));
            say(&mut s, rng, SERVER, "250 2.1.5 Ok\r\n".into());
            to = r;
        }
        say(&mut s, rng, CLIENT, "DATA\r\n".into());
        say(
            &mut s,
            rng,
            SERVER,
            "354 End data with <CR><LF>.<CR><LF>\r\n".into(),
        );
        let len = self.size(rng, 500, 200_000);
        let mut m = content::mail_message(len, true, rng, &from, &to);
        m.lit(b"\r\n.\r\n");
        s.reply(CLIENT, rng.range(10 * US, MS), m);
        let queued = format!("250 2.0.0 Ok: queued as {:X}\r\n", rng.next_u32());
        say(&mut s, rng, SERVER, queued);
        say(&mut s, rng, CLIENT, "QUIT\r\n".into());
        say(&mut s, rng, SERVER, "221 2.0.0 Bye\r\n".into());
        let after = s.end(CLIENT);
        s.fin_after(SERVER, after, rng.range(10 * US, 500 * US));
        s.fin_last(CLIENT, rng.range(10 * US, MS));
        self.conn(rng, client, SocketAddr::new(server, 25), s, start)
    }

    fn dns(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("dns");
        self.udp_flows += 1;
        let v6 = rng.chance(0.2);
        let client = if rng.chance(0.9) {
            internal_client(rng, v6)
        } else {
            external_client(rng, v6)
        };
        let resolver = if v6 { ip6(1, 0x53) } else { v4(192, 0, 2, 53) };
        let names = [
            "www.example.com",
            "mail.example.org",
            "cdn.example.net",
            "api.example.com",
            "login.example.org",
            "mx.example.net",
            "downloads.example.com",
        ];
        let mut packets = VecDeque::new();
        let mut t = start;
        let aaaa = rng.chance(0.3);
        let name = names[rng.index(names.len())];
        let id = rng.next_u32() as u16;
        let q = content::dns_query(id, name, aaaa);
        let r = content::dns_response(&q, aaaa, rng.range(1, 3) as u8, rng);
        let small = self.profile == Profile::SmallFlows;
        packets.push_back((t, true, q));
        t += if small {
            rng.range(100 * US, 5 * MS)
        } else {
            rng.range(200 * US, 30 * MS)
        };
        packets.push_back((t, false, r));
        let est = packets
            .iter()
            .map(|p| 16 + 14 + 28 + p.2.len() as u64)
            .sum();
        let flow = UdpFlow {
            a: (host(client), rng.range(1024, 65_535) as u16),
            b: (host(resolver), 53),
            packets,
            ip_id: rng.next_u32() as u16,
        };
        (Flow::Udp(flow), est)
    }

    /// Ordinary flows whose first bytes look like a netstring length.
    fn lookalike(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("lookalike");
        let v6 = rng.chance(0.2);
        let c = if rng.chance(0.7) {
            internal_client(rng, v6)
        } else {
            external_client(rng, v6)
        };
        let internal = rng.chance(0.5);
        let srv = other_server(rng, v6, internal);
        let scgi_headers = b"CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00";
        let (port, req, resp): (u16, Vec<u8>, Vec<u8>) = match rng.below(5) {
            // `12:` followed by plain text.
            0 => (
                7000,
                b"12:hello world!,12:how are you?,".to_vec(),
                b"OK\r\n".to_vec(),
            ),
            // bencode strings.
            1 => (
                6881,
                b"4:spam4:eggsl4:spami42ee".to_vec(),
                b"d8:completei5e10:incompletei3e8:intervali1800ee".to_vec(),
            ),
            // SCGI: a netstring of headers, then the body.
            2 => {
                let mut r = netstring(scgi_headers);
                r.extend_from_slice(b"What is the answer to life?");
                (
                    4000,
                    r,
                    b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n42".to_vec(),
                )
            }
            // A netstring of netstrings (parses as a QMQP start), answered
            // with a line, not a reply netstring.
            3 => {
                let mut inner = netstring(b"PING");
                inner.extend(netstring(format!("{}", rng.range(1, 1 << 40)).as_bytes()));
                (5000, netstring(&inner), b"+PONG\r\n".to_vec())
            }
            // A netstring starting with LF (a QMTP start) that is no package.
            _ => (
                9000,
                b"17:\nHELLO WORLD 1234,PING\r\n".to_vec(),
                b"-ERR unknown command\r\n".to_vec(),
            ),
        };
        let mut s = Script::new();
        s.reply(CLIENT, rng.range(0, MS), Content::bytes(req));
        s.reply(SERVER, rng.range(100 * US, 10 * MS), Content::bytes(resp));
        Self::close(rng, &mut s);
        self.conn(rng, c, SocketAddr::new(srv, port), s, start)
    }

    /// A short TCP flow of small frames (60-200 bytes on the wire).
    fn tiny(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        self.rec.flow("tiny");
        let v6 = rng.chance(0.3);
        let internal_client_side = rng.chance(0.6);
        let c = if internal_client_side {
            internal_client(rng, v6)
        } else {
            external_client(rng, v6)
        };
        let internal = !internal_client_side || rng.chance(0.3);
        let srv = other_server(rng, v6, internal);
        let max_payload: u64 = 200 - if v6 { 14 + 40 + 32 } else { 14 + 20 + 32 };
        let kind = rng.below(4);
        let port = [80, 443, 6379, 11_211][kind as usize];
        let fit = |mut b: Vec<u8>, len: u64, rng: &mut Rng| {
            let len = len as usize;
            while b.len() < len {
                b.push(b'a' + rng.below(26) as u8);
            }
            b.truncate(len);
            Content::bytes(b)
        };
        let mut s = Script::new();
        for i in 0..rng.range(1, 3) {
            let qlen = rng.range(20, max_payload);
            let rlen = rng.range(20, max_payload);
            let (q, r): (Vec<u8>, Vec<u8>) = match kind {
                0 => (
                    format!(
                        "GET /t/{:x} HTTP/1.1\r\nHost: t.example.com\r\nX-Id: ",
                        rng.next_u32()
                    )
                    .into_bytes(),
                    b"HTTP/1.1 204 No Content\r\nServer: edge\r\nX-Id: ".to_vec(),
                ),
                1 => (
                    vec![0x17, 3, 3, 0, (qlen - 5) as u8],
                    vec![0x17, 3, 3, 0, (rlen - 5) as u8],
                ),
                2 => (
                    b"*2\r\n$3\r\nGET\r\n$8\r\nkey:".to_vec(),
                    b"$8\r\n".to_vec(),
                ),
                _ => (b"get session:".to_vec(), b"VALUE session:".to_vec()),
            };
            let think = if i == 0 {
                rng.range(0, 200 * US)
            } else {
                rng.range(100 * US, 20 * MS)
            };
            s.reply(CLIENT, think, fit(q, qlen, rng));
            s.reply(SERVER, rng.range(20 * US, 2 * MS), fit(r, rlen, rng));
        }
        Self::close(rng, &mut s);
        self.conn(rng, c, SocketAddr::new(srv, port), s, start)
    }

    /// A client port on `ip` never used before with `server`.
    fn qm_client(&mut self, ip: IpAddr, server: SocketAddr) -> SocketAddr {
        loop {
            let c = SocketAddr::new(ip, self.ephemeral_port(ip));
            if self.qm_pairs.insert((c, server)) {
                return c;
            }
        }
    }

    fn qm_session(&mut self, rng: &mut Rng, start: u64) -> (Flow, u64) {
        let weights: Vec<u32> = self.servers.iter().map(|s| s.weight).collect();
        let srv = self.servers[rng.weighted(&weights)];
        let v6 = srv.addr.is_ipv6();
        let trusted = !srv.internal || rng.chance(0.6);
        let ip = if trusted {
            internal_client(rng, v6)
        } else {
            external_client(rng, v6)
        };
        let client = self.qm_client(ip, srv.addr);
        // External clients: half deliver to local users, half try to relay.
        let relaying = !trusted && rng.chance(0.5);
        let inbound = !trusted && !relaying;
        let small = self.profile == Profile::SmallFlows;
        let rcpts = |rng: &mut Rng| {
            let n = recipient_count(rng, small);
            let mut v: Vec<String> = (0..n)
                .map(|_| {
                    let foreign = if inbound {
                        false
                    } else if relaying {
                        rng.chance(0.75)
                    } else {
                        rng.chance(0.5)
                    };
                    if foreign {
                        foreign_address(rng)
                    } else {
                        local_address(rng)
                    }
                })
                .collect();
            if relaying && v.iter().all(|r| self.policy.is_local(r)) {
                v[0] = foreign_address(rng);
            }
            v
        };
        let sender = |rng: &mut Rng| {
            if rng.chance(0.1) {
                String::new()
            } else if trusted {
                local_address(rng)
            } else {
                foreign_address(rng)
            }
        };
        let (script, truth) = match srv.proto {
            Proto::Qmtp => {
                self.rec.flow("qmtp");
                let n = if small {
                    rng.range(1, 2) as usize
                } else {
                    match rng.weighted(&[55, 30, 15]) {
                        0 => 1,
                        1 => rng.range(2, 3) as usize,
                        _ => rng.range(4, 8) as usize,
                    }
                };
                let mut pkgs = Vec::new();
                for _ in 0..n {
                    let sender = sender(rng);
                    let recipients = rcpts(rng);
                    let len = self.message_len(rng, small);
                    pkgs.push((sender, recipients, len, rng.chance(0.3)));
                }
                self.qmtp_script(rng, srv, client, trusted, pkgs)
            }
            Proto::Qmqp => {
                self.rec.flow("qmqp");
                let sender = sender(rng);
                let recipients = rcpts(rng);
                let authorized = trusted || srv.kind == ServerKind::QmqpOpen;
                let len = if authorized {
                    self.message_len(rng, small)
                } else {
                    // The server replies after a second without reading:
                    // keep the request short enough to be sent by then.
                    rng.log_uniform(200, 64 << 10)
                };
                self.qmqp_script(rng, srv, client, authorized, sender, recipients, len)
            }
        };
        self.rec.session(&truth);
        self.conn_from(rng, client, srv.addr, script, start)
    }

    fn message_len(&self, rng: &mut Rng, small: bool) -> u64 {
        if small {
            rng.log_uniform(200, 1_500)
        } else {
            self.size(rng, 200, 5_000_000)
        }
    }

    /// Per-recipient replies of a QMTP package.
    fn qmtp_codes(
        &self,
        rng: &mut Rng,
        srv: QmServer,
        trusted: bool,
        rcpts: &[String],
    ) -> Vec<(Code, String)> {
        if (srv.kind == ServerKind::Flaky && rng.chance(0.4)) || rng.chance(0.02) {
            let text = "qq temporary problem (#4.3.0)";
            return rcpts.iter().map(|_| (Code::Z, text.to_string())).collect();
        }
        let ok = qmail_ok(rng);
        rcpts
            .iter()
            .map(|r| {
                let foreign = !self.policy.is_local(r);
                if srv.kind != ServerKind::Open && !trusted && foreign {
                    return (
                        Code::D,
                        "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
                            .to_string(),
                    );
                }
                match rng.weighted(&[90, 5, 5]) {
                    0 => (Code::K, ok.clone()),
                    1 => (
                        Code::D,
                        "sorry, no mailbox here by that name. (#5.1.1)".to_string(),
                    ),
                    _ => (Code::Z, "mailbox is over quota (#4.2.2)".to_string()),
                }
            })
            .collect()
    }

    fn qmtp_script(
        &self,
        rng: &mut Rng,
        srv: QmServer,
        client: SocketAddr,
        trusted: bool,
        pkgs: Vec<(String, Vec<String>, u64, bool)>,
    ) -> (Script, SessionTruth) {
        #[derive(PartialEq)]
        enum Mode {
            Sequential,
            Pipelined,
            HalfClose,
        }
        let n = pkgs.len();
        let mode = match rng.weighted(&[45, 35, 20]) {
            0 => Mode::Sequential,
            1 => Mode::Pipelined,
            _ => Mode::HalfClose,
        };
        let codes: Vec<Vec<(Code, String)>> = pkgs
            .iter()
            .map(|p| self.qmtp_codes(rng, srv, trusted, &p.1))
            .collect();
        // A server that stops answering: only the first `cut` replies.
        let total: usize = codes.iter().map(Vec::len).sum();
        let cut = if rng.chance(0.03) {
            rng.below(total as u64) as usize
        } else {
            total
        };
        let mut s = Script::new();
        let mut truth = SessionTruth {
            protocol: Proto::Qmtp,
            client,
            server: srv.addr,
            pipelined: mode != Mode::Sequential && n > 1,
            transactions: Vec::new(),
            replies: Vec::new(),
        };
        let mut bodies = Vec::new();
        for (sender, rcpts, len, crlf) in &pkgs {
            let mut c = Content::bytes(format!("{}:", len + 1).into_bytes());
            c.lit(&[if *crlf { b'\r' } else { b'\n' }]);
            let to = rcpts.first().map_or("", String::as_str);
            c.append(content::mail_message(*len, *crlf, rng, sender, to));
            c.lit(b",");
            c.lit(&netstring(sender.as_bytes()));
            let list: Vec<u8> = rcpts.iter().flat_map(|r| netstring(r.as_bytes())).collect();
            c.lit(&netstring(&list));
            bodies.push(c);
        }
        // The replies each package gets (after the cut, none).
        let mut given = 0usize;
        let mut replies: Vec<Vec<u8>> = Vec::new();
        for (k, cs) in codes.iter().enumerate() {
            let mut bytes = Vec::new();
            let mut got = Vec::new();
            for (code, text) in cs {
                if given < cut {
                    bytes.extend(reply_ns(*code, text));
                    got.push(Some(*code));
                    truth.replies.push(*code);
                    given += 1;
                } else {
                    got.push(None);
                }
            }
            let (sender, rcpts, len, crlf) = &pkgs[k];
            truth.transactions.push(TxTruth {
                sender: sender.clone(),
                recipients: rcpts.clone(),
                codes: got,
                crlf: Some(*crlf),
                message_bytes: *len,
            });
            replies.push(bytes);
        }
        let write_replies = |s: &mut Script, rng: &mut Rng, after: u64, bytes: Vec<u8>| {
            let d = rng.range(50 * US, 5 * MS);
            if bytes.len() > 1 && rng.chance(0.3) {
                // Split anywhere, as qmail-qmtpd's buffered writes may be.
                let at = rng.range(1, bytes.len() as u64 - 1) as usize;
                s.write_after(SERVER, after, d, Content::bytes(bytes[..at].to_vec()));
                let d2 = d + rng.range(200 * US, 3 * MS);
                s.write_after(SERVER, after, d2, Content::bytes(bytes[at..].to_vec()));
            } else {
                s.write_after(SERVER, after, d, Content::bytes(bytes));
            }
        };
        let aborted = cut < total;
        match mode {
            Mode::Sequential => {
                let mut answered = 0;
                let mut sent = 0;
                for (k, body) in bodies.into_iter().enumerate() {
                    let after = s.sent(SERVER);
                    let think = if k == 0 {
                        rng.range(0, 2 * MS)
                    } else {
                        rng.range(100 * US, 20 * MS)
                    };
                    let end = s.write_after(CLIENT, after, think, body);
                    sent += 1;
                    let want = codes[k].len();
                    let bytes = std::mem::take(&mut replies[k]);
                    let got = want.min(cut.saturating_sub(answered));
                    answered += got;
                    if !bytes.is_empty() {
                        write_replies(&mut s, rng, end, bytes);
                    }
                    if got < want {
                        break;
                    }
                }
                // Packages never sent are not transactions.
                truth.transactions.truncate(sent);
            }
            Mode::Pipelined | Mode::HalfClose => {
                let mut ends = Vec::new();
                let mut d = rng.range(0, MS);
                for body in bodies {
                    ends.push(s.write_after(CLIENT, 0, d, body));
                    d += rng.range(0, 300 * US);
                }
                if mode == Mode::HalfClose {
                    s.fin_after(CLIENT, 0, d + rng.range(10 * US, 100 * US));
                }
                // Replies to a package may wait for the next one (the server
                // writes when it next needs input): then they share a segment.
                let mut last_after = 0;
                for (k, bytes) in replies.into_iter().enumerate() {
                    let mut after = if k + 1 < n && rng.chance(0.3) {
                        ends[k + 1]
                    } else {
                        ends[k]
                    };
                    after = after.max(last_after);
                    last_after = after;
                    if !bytes.is_empty() {
                        write_replies(&mut s, rng, after, bytes);
                    }
                }
            }
        }
        if aborted {
            let after = s.end(CLIENT);
            s.fin_after(SERVER, after, rng.range(500 * MS, 3 * SEC));
            if mode != Mode::HalfClose {
                s.fin_last(CLIENT, rng.range(10 * US, MS));
            }
        } else if mode == Mode::HalfClose {
            s.fin_last(SERVER, rng.range(10 * US, MS));
        } else {
            match rng.weighted(&[85, 10, 5]) {
                0 => {
                    let after = s.sent(SERVER);
                    s.fin_after(CLIENT, after, rng.range(10 * US, 2 * MS));
                    s.fin_last(SERVER, rng.range(10 * US, MS));
                }
                1 => {
                    let after = s.sent(SERVER);
                    s.rst_after(CLIENT, after, rng.range(10 * US, 2 * MS));
                }
                _ => {
                    let after = s.end(CLIENT);
                    s.fin_after(SERVER, after, rng.range(5 * MS, 20 * MS));
                    s.fin_last(CLIENT, rng.range(10 * US, MS));
                }
            }
        }
        (s, truth)
    }

    #[allow(clippy::too_many_arguments)]
    fn qmqp_script(
        &self,
        rng: &mut Rng,
        srv: QmServer,
        client: SocketAddr,
        authorized: bool,
        sender: String,
        recipients: Vec<String>,
        len: u64,
    ) -> (Script, SessionTruth) {
        let to = recipients.first().map_or("", String::as_str);
        let mut inner = netstring_of(content::mail_message(len, false, rng, &sender, to));
        inner.lit(&netstring(sender.as_bytes()));
        for r in &recipients {
            inner.lit(&netstring(r.as_bytes()));
        }
        let mut s = Script::new();
        let cend = s.write_after(CLIENT, 0, rng.range(0, 2 * MS), netstring_of(inner));
        let mut code = None;
        if !authorized {
            // Postfix qmqpd: `D` after qmqpd_error_delay (1 s), then close.
            let d = SEC + rng.range(0, 20 * MS);
            let text = "Error: unauthorized client";
            s.write_after(SERVER, 0, d, Content::bytes(reply_ns(Code::D, text)));
            s.fin_after(SERVER, 0, d + rng.range(10 * US, 500 * US));
            code = Some(Code::D);
        } else if rng.chance(0.02) {
            // The server gives up without a reply.
            s.fin_after(SERVER, cend, rng.range(200 * MS, 2 * SEC));
        } else {
            let (c, text) = match rng.weighted(&[92, 5, 3]) {
                0 => (Code::K, format!("Ok: queued as {:X}", rng.next_u64() >> 24)),
                1 => (Code::Z, "Error: queue file write error".to_string()),
                _ => (
                    Code::D,
                    "Error: message rejected: too many recipients".to_string(),
                ),
            };
            let d = rng.range(MS, 50 * MS);
            s.write_after(SERVER, cend, d, Content::bytes(reply_ns(c, &text)));
            s.fin_after(SERVER, cend, d + rng.range(10 * US, MS));
            code = Some(c);
        }
        s.fin_last(CLIENT, rng.range(10 * US, MS));
        let n = recipients.len();
        let truth = SessionTruth {
            protocol: Proto::Qmqp,
            client,
            server: srv.addr,
            pipelined: false,
            transactions: vec![TxTruth {
                sender,
                recipients,
                codes: vec![code; n],
                crlf: None,
                message_bytes: len,
            }],
            replies: code.into_iter().collect(),
        };
        (s, truth)
    }
}

/// Writes the capture for `cfg` to `out` (buffered here) and returns its truth.
pub fn run<W: Write>(cfg: &Config, out: W) -> io::Result<Truth> {
    let scale = match cfg.target {
        Target::Bytes(b) => (b as f64 / FULL_SCALE_BYTES as f64).clamp(1.0 / 4096.0, 1.0),
        Target::Flows(_) => 1.0,
    };
    let policy = SitePolicy::standard();
    let mut g = Gen {
        profile: cfg.profile,
        scale,
        rng: Rng::new(cfg.seed ^ 0x716d_7761_7463_6800),
        ports: HashMap::new(),
        qm_pairs: HashSet::new(),
        servers: qm_servers(),
        policy: policy.clone(),
        rec: Recorder::new(policy.clone()),
        tcp_flows: 0,
        udp_flows: 0,
    };
    let mut pcap = PcapWriter::new(io::BufWriter::with_capacity(1 << 20, out))?;
    // Active flows with the bytes their estimate still expects.
    let mut slots: Vec<Option<(Flow, u64)>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut frame = Vec::with_capacity(2048);
    let mut next_arrival = EPOCH_NS;
    // Bytes the active flows are still expected to write: with what was
    // written, what the capture will hold if no flow starts any more.
    let mut pending = 0u64;
    let mut started = 0u64;
    let gap = cfg.profile.mean_gap_ns();
    loop {
        let more = match cfg.target {
            Target::Bytes(b) => pcap.file_bytes + pending < b,
            Target::Flows(n) => started < n,
        };
        if more && heap.peek().is_none_or(|r| next_arrival <= r.0 .0) {
            let (flow, est) = g.start(next_arrival);
            started += 1;
            if let Some(ts) = flow.next_ts() {
                pending += est;
                let slot = match free.pop() {
                    Some(i) => {
                        slots[i] = Some((flow, est));
                        i
                    }
                    None => {
                        slots.push(Some((flow, est)));
                        slots.len() - 1
                    }
                };
                heap.push(Reverse((ts, started, slot)));
            }
            next_arrival += g.rng.range(0, 2 * gap);
            continue;
        }
        let Some(Reverse((_, id, slot))) = heap.pop() else {
            break;
        };
        let Some((flow, left)) = slots.get_mut(slot).and_then(Option::as_mut) else {
            continue;
        };
        if let Some(ts) = flow.emit(&mut frame) {
            pcap.record(ts, &frame, frame.len() as u32)?;
            let used = (*left).min(16 + frame.len() as u64);
            *left -= used;
            pending -= used;
        }
        match flow.next_ts() {
            Some(ts) => heap.push(Reverse((ts, id, slot))),
            None => {
                pending -= *left;
                if flow.stuck() {
                    return Err(io::Error::other(format!(
                        "synth: flow {id} cannot go on (a generator bug)"
                    )));
                }
                slots[slot] = None;
                free.push(slot);
            }
        }
    }
    let capture = CaptureInfo {
        packets: pcap.packets,
        file_bytes: pcap.file_bytes,
        wire_bytes: pcap.wire_bytes,
        tcp_flows: g.tcp_flows,
        udp_flows: g.udp_flows,
        first_ts_us: pcap.first_ts_ns.unwrap_or(0) / 1000,
        last_ts_us: pcap.last_ts_ns / 1000,
    };
    pcap.finish()?;
    let (qm, list, flows) = g.rec.finish();
    let listed = list.is_some();
    Ok(Truth {
        schema: "qmwatch-synth-truth/1",
        generator: GeneratorInfo {
            profile: cfg.profile.name(),
            seed: cfg.seed,
            target_bytes: match cfg.target {
                Target::Bytes(b) => Some(b),
                Target::Flows(_) => None,
            },
            target_flows: match cfg.target {
                Target::Flows(n) => Some(n),
                Target::Bytes(_) => None,
            },
        },
        capture,
        flows,
        policy: PolicyInfo {
            local_domains: policy.local_domains.clone(),
            trusted_client_networks: policy.networks(),
        },
        qm,
        transactions_listed: listed,
        transactions: list.unwrap_or_default(),
    })
}
