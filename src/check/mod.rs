//! `qmwatch check`: the active re-test the scanners' remediation advice
//! asks for — is a QMTP or QMQP server listening there, and does it relay
//! for a stranger?
//!
//! ```text
//! targets ─▶ jobs (address × port) ─▶ N threads ─▶ per port:
//!   connect ─▶ greeting wait ─▶ QMQP detection request      (one connection)
//!           ─▶ QMTP detection package                        (if nothing yet)
//!           ─▶ TLS ClientHello                               (if nothing yet)
//!   found QMTP/QMQP and --relay-test ─▶ one relay-test package
//! ─▶ reports ─▶ text report, ECS events, exit status
//! ```
//!
//! Owns: the order of the probes and what their answers prove
//! ([`Finding`]), the relay test's verdict, the concurrency limit, and the
//! check's view of the site policy: only configured trusted networks count
//! ([`check_policy`]) — the passive defaults (private, loopback) would make
//! every test run from inside look trusted.
//!
//! Must not: send to anything but the expanded targets ([`target`]), send
//! a request that can deliver mail during detection ([`wire`]), wait
//! without a timeout or read more than [`net::MAX_ANSWER`] bytes a
//! connection ([`net`]), or write anything (`main` writes what [`report`]
//! renders).

pub mod classify;
pub mod net;
pub mod report;
pub mod target;
pub mod wire;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use classify::Answer;
use net::{ConnectFailure, End};
use qmwatch_proto::request::{RequestEvent, RequestParser};
use qmwatch_proto::{
    CodeCounts, Endpoints, Evidence, Protocol, Reply, ReplyCode, Request, Transaction,
};
use qmwatch_sensor::detect::policy::Policy;
use qmwatch_sensor::detect::{judge, RelayVerdict};
use target::Job;

/// `observer.type` of every event an active check writes.
pub const OBSERVER_TYPE: &str = "active_check";

/// The waits of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For a connection to be accepted.
    pub connect: Duration,
    /// For a server that speaks first (an SMTP banner; Postfix `qmqpd`
    /// refusing a client after its 1 s `qmqpd_error_delay`).
    pub greeting: Duration,
    /// For the answer to each request, from the moment it was sent.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            greeting: Duration::from_secs(2),
            read: Duration::from_secs(5),
        }
    }
}

/// How a check runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub timeouts: Timeouts,
    /// `--source`: the local address every connection is made from.
    pub source: Option<IpAddr>,
    pub relay_test: bool,
    pub relay_recipient: String,
    /// Ports checked at once.
    pub concurrency: usize,
    /// Named in the messages sent, so their readers know who sent them.
    pub hostname: String,
}

/// The default concurrency limit.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// What a port turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    Qmtp,
    Qmqp,
    Smtp,
    Tls,
    Http,
    Ssh,
    /// Answered with something else.
    Other,
    /// Accepted connections and never answered.
    Silent,
    /// Accepted connections and closed them without a byte.
    ClosesWithoutAnswer,
    /// Connection refused.
    Closed,
    /// The connection attempt timed out.
    NoAnswer,
    /// Another connection error (no route…).
    Unreachable,
}

impl Finding {
    pub fn name(self) -> &'static str {
        match self {
            Finding::Qmtp => "qmtp",
            Finding::Qmqp => "qmqp",
            Finding::Smtp => "smtp",
            Finding::Tls => "tls",
            Finding::Http => "http",
            Finding::Ssh => "ssh",
            Finding::Other => "other",
            Finding::Silent => "silent",
            Finding::ClosesWithoutAnswer => "closes_without_answer",
            Finding::Closed => "closed",
            Finding::NoAnswer => "no_answer",
            Finding::Unreachable => "unreachable",
        }
    }

    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Finding::Qmtp => Some(Protocol::Qmtp),
            Finding::Qmqp => Some(Protocol::Qmqp),
            _ => None,
        }
    }

    /// No connection could be made.
    pub fn unreached(self) -> bool {
        matches!(self, Finding::NoAnswer | Finding::Unreachable)
    }
}

/// One connection of a check: what was sent and what came back.
#[derive(Clone, Debug)]
pub struct Step {
    /// `greeting`, `qmqp_detect`, `qmtp_detect`, `tls_client_hello` or
    /// `relay_test`.
    pub probe: &'static str,
    pub local: Option<SocketAddr>,
    pub sent: usize,
    pub send_error: Option<String>,
    /// What the server sent, at most [`net::MAX_ANSWER`] bytes.
    pub received: Vec<u8>,
    pub end: End,
    pub error: Option<String>,
    /// Wall time the step started (ns since the epoch).
    pub ts: u64,
    pub elapsed: Duration,
}

impl Step {
    fn new(probe: &'static str, stream: Option<&TcpStream>) -> Step {
        Step {
            probe,
            local: stream.and_then(|s| s.local_addr().ok()),
            sent: 0,
            send_error: None,
            received: Vec::new(),
            end: End::Timeout,
            error: None,
            ts: now_ns(),
            elapsed: Duration::ZERO,
        }
    }

    /// A step whose connection failed.
    fn failed(probe: &'static str, f: &ConnectFailure) -> Step {
        let mut s = Step::new(probe, None);
        s.end = End::Error;
        s.error = Some(format!("connect: {}", describe_failure(f)));
        s
    }

    fn send(&mut self, stream: &mut TcpStream, data: &[u8], timeout: Duration) {
        match net::send(stream, data, timeout) {
            Ok(()) => self.sent = data.len(),
            Err(e) => self.send_error = Some(e),
        }
    }

    /// Reads the answer for at most `wait`, until `want` replies or
    /// another kind of answer is complete.
    fn read(&mut self, stream: &mut TcpStream, wait: Duration, want: usize) {
        let start = Instant::now();
        let (end, err) = net::receive(stream, &mut self.received, start + wait, &|b: &[u8]| {
            classify::enough(b, want)
        });
        self.end = end;
        self.error = err;
        self.elapsed = Duration::from_nanos(now_ns().saturating_sub(self.ts));
    }

    /// The server closed or reset without sending a byte.
    fn closed_silently(&self) -> bool {
        self.received.is_empty() && matches!(self.end, End::Eof | End::Reset)
    }
}

/// What a relay test concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayResult {
    /// `K` for a foreign recipient from a source outside the trusted networks.
    OpenRelay,
    /// `K` from a source inside `--trusted-net`: relaying allowed, as configured.
    AcceptedTrusted,
    Refused,
    Deferred,
    /// No reply netstring.
    Unanswered,
}

impl RelayResult {
    pub fn name(self) -> &'static str {
        match self {
            RelayResult::OpenRelay => "open_relay",
            RelayResult::AcceptedTrusted => "accepted_trusted",
            RelayResult::Refused => "refused",
            RelayResult::Deferred => "deferred",
            RelayResult::Unanswered => "unanswered",
        }
    }
}

/// One relay test.
#[derive(Clone, Debug)]
pub struct RelayTest {
    pub protocol: Protocol,
    pub step: Step,
    pub result: RelayResult,
    pub recipient: String,
    pub client_trusted: bool,
    /// The package as sent and the replies it got (for the same events as
    /// the passive side's); `None` when no connection was made.
    pub transaction: Option<Transaction>,
    pub reply: Option<Reply>,
}

/// Everything learnt about one address and port.
#[derive(Clone, Debug)]
pub struct PortReport {
    pub job: Job,
    pub finding: Finding,
    /// One human sentence saying what proved it.
    pub detail: String,
    /// For QMTP/QMQP: request and reply, or reply only (spoke first).
    pub evidence: Option<Evidence>,
    /// The step that proved the finding, an index into `steps`.
    pub proof: Option<usize>,
    /// The reply netstrings that proved a service.
    pub replies: Vec<Reply>,
    pub steps: Vec<Step>,
    pub sanctioned: bool,
    pub relay: Option<RelayTest>,
    /// When the port's check ended (ns since the epoch).
    pub ts: u64,
}

impl PortReport {
    fn new(job: Job) -> PortReport {
        PortReport {
            job,
            finding: Finding::Silent,
            detail: String::new(),
            evidence: None,
            proof: None,
            replies: Vec::new(),
            steps: Vec::new(),
            sanctioned: false,
            relay: None,
            ts: 0,
        }
    }

    /// A service that is not sanctioned: a finding.
    pub fn unexpected_service(&self) -> bool {
        self.finding.protocol().is_some() && !self.sanctioned
    }

    pub fn open_relay(&self) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.result == RelayResult::OpenRelay)
    }

    /// The step that proved the finding.
    pub fn proof_step(&self) -> Option<&Step> {
        self.proof.and_then(|i| self.steps.get(i))
    }
}

/// Nanoseconds since the epoch, wall clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn describe_failure(f: &ConnectFailure) -> String {
    match f {
        ConnectFailure::Refused => "connection refused".into(),
        ConnectFailure::TimedOut => "timed out".into(),
        ConnectFailure::Unreachable(e) => e.clone(),
    }
}

/// The policy an active check judges by: as configured, except that the
/// passive defaults for trusted clients do not apply — a test run from a
/// private or loopback address is trusted only when `--trusted-net` (or
/// the policy file) says so.
pub fn check_policy(mut p: Policy) -> Policy {
    if p.trusted_defaulted {
        p.trusted.clear();
        p.trusted_defaulted = false;
        p.sources
            .push("active check (only configured trusted networks count)".to_string());
    }
    p
}

/// Checks every job, `cfg.concurrency` at a time; reports in job order.
pub fn run(jobs: &[Job], cfg: &Config, policy: &Policy) -> Result<Vec<PortReport>, String> {
    let n = cfg.concurrency.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<PortReport>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for i in 0..n {
            let worker = || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(k) else {
                    break;
                };
                let r = check_port(job, cfg, policy);
                if let Some(Ok(mut slot)) = slots.get(k).map(|m| m.lock()) {
                    *slot = Some(r);
                }
            };
            std::thread::Builder::new()
                .name(format!("qmwatch-check-{i}"))
                .spawn_scoped(s, worker)
                .map_err(|e| format!("cannot start a check thread: {e}"))?;
        }
        Ok::<(), String>(())
    })?;
    let reports: Vec<PortReport> = slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect();
    if reports.len() != jobs.len() {
        return Err("a check thread ended without its report".into());
    }
    Ok(reports)
}

/// Checks one address and port.
pub fn check_port(job: &Job, cfg: &Config, policy: &Policy) -> PortReport {
    let mut r = PortReport::new(job.clone());
    detect(&mut r, cfg);
    if let Some(p) = r.finding.protocol() {
        r.sanctioned = policy.is_sanctioned(job.addr, p);
        if cfg.relay_test {
            r.relay = Some(relay_test(job.addr, p, cfg, policy));
        }
    }
    r.ts = now_ns();
    r
}

/// Runs the probes in order until one of them names the port.
// Long: the probe sequence in its order (greeting, QMQP, QMTP, TLS), each step deciding the next.
fn detect(r: &mut PortReport, cfg: &Config) {
    let t = cfg.timeouts;
    let addr = r.job.addr;
    let mut stream = match net::connect(addr, cfg.source, t.connect) {
        Ok(s) => s,
        Err(f) => {
            let (finding, detail) = match &f {
                ConnectFailure::Refused => {
                    (Finding::Closed, "closed: connection refused".to_string())
                }
                ConnectFailure::TimedOut => (
                    Finding::NoAnswer,
                    format!(
                        "no answer: the connection attempt timed out after {}",
                        seconds(t.connect)
                    ),
                ),
                ConnectFailure::Unreachable(e) => {
                    (Finding::Unreachable, format!("unreachable: {e}"))
                }
            };
            r.steps.push(Step::failed("greeting", &f));
            r.finding = finding;
            r.detail = detail;
            return;
        }
    };
    // 1. Does it speak first? Then the QMQP request on the same connection.
    let mut greet = Step::new("greeting", Some(&stream));
    greet.read(&mut stream, t.greeting, 1);
    let spoke = !greet.received.is_empty();
    let closed = greet.closed_silently();
    r.steps.push(greet);
    if spoke {
        net::close(&stream);
        name_from(r, 0);
        return;
    }
    if closed {
        r.finding = Finding::ClosesWithoutAnswer;
        r.detail = "accepted the connection and closed it at once without a byte (an access rule may refuse this source)".into();
        r.proof = Some(0);
        return;
    }
    let mut qmqp = Step::new("qmqp_detect", Some(&stream));
    qmqp.send(&mut stream, &wire::qmqp_detect(&cfg.hostname), t.read);
    qmqp.read(&mut stream, t.read, 1);
    net::close(&stream);
    r.steps.push(qmqp);
    if name_from(r, r.steps.len() - 1) {
        return;
    }
    // 2. QMTP: qmail-qmtpd closed the QMQP request without a byte.
    let qmtp = one_shot(
        addr,
        cfg,
        "qmtp_detect",
        &wire::qmtp_detect(&cfg.hostname),
        wire::QMTP_DETECT_RECIPIENTS,
    );
    r.steps.push(qmtp);
    if name_from(r, r.steps.len() - 1) {
        return;
    }
    // 3. TLS servers may close on bytes that are not a ClientHello.
    let tls = one_shot(addr, cfg, "tls_client_hello", &wire::tls_client_hello(), 1);
    r.steps.push(tls);
    if name_from(r, r.steps.len() - 1) {
        return;
    }
    // The greeting wait always ends in a timeout when the server is
    // silent: only the answers to requests tell silence from closing.
    let timed_out = r
        .steps
        .iter()
        .filter(|s| s.probe != "greeting")
        .any(|s| s.end == End::Timeout && s.received.is_empty());
    if timed_out {
        r.finding = Finding::Silent;
        r.detail = format!(
            "accepts connections and never answers: not a byte to the greeting wait, the QMQP and QMTP detection requests or a TLS ClientHello (read timeout {})",
            seconds(t.read)
        );
    } else {
        r.finding = Finding::ClosesWithoutAnswer;
        r.detail = "accepts connections and closes them without a byte, whatever is sent: not QMTP/QMQP as far as it shows (an access rule may refuse this source)".into();
    }
}

/// Connects, sends `data`, reads the answer.
fn one_shot(addr: SocketAddr, cfg: &Config, probe: &'static str, data: &[u8], want: usize) -> Step {
    let t = cfg.timeouts;
    let mut stream = match net::connect(addr, cfg.source, t.connect) {
        Ok(s) => s,
        Err(f) => return Step::failed(probe, &f),
    };
    let mut step = Step::new(probe, Some(&stream));
    step.send(&mut stream, data, t.read);
    step.read(&mut stream, t.read, want);
    net::close(&stream);
    step
}

/// Names the port from the answer of step `i`, if it answered anything.
// Long: one table from each probe's answer to what the port is.
fn name_from(r: &mut PortReport, i: usize) -> bool {
    let Some(step) = r.steps.get(i) else {
        return false;
    };
    if step.received.is_empty() {
        return false;
    }
    let bytes = &step.received;
    let shown = classify::escaped(bytes, 200);
    let line = classify::first_line(bytes);
    let (finding, evidence, detail) = match classify::classify(bytes) {
        Answer::Replies(rs) => {
            let n = rs.len();
            let closed = matches!(step.end, End::Eof | End::Reset);
            let (finding, evidence, detail) = match step.probe {
                "greeting" => (
                    Finding::Qmqp,
                    Evidence::ReplyOnly,
                    format!("spoke first with a reply netstring, as Postfix qmqpd does to a client it does not authorize: {shown}"),
                ),
                "qmqp_detect" => (
                    Finding::Qmqp,
                    Evidence::RequestAndReply,
                    format!("answered the QMQP detection request (no recipient) with a reply netstring: {shown}"),
                ),
                "qmtp_detect" if n == 1 && closed => (
                    Finding::Qmqp,
                    Evidence::RequestAndReply,
                    format!("answered the QMTP detection package with one reply netstring and closed, as a QMQP server does: {shown}"),
                ),
                "qmtp_detect" => (
                    Finding::Qmtp,
                    Evidence::RequestAndReply,
                    format!(
                        "answered the QMTP detection package ({} recipients) with {n} reply netstring{}: {shown}",
                        wire::QMTP_DETECT_RECIPIENTS,
                        if n == 1 { "" } else { "s" }
                    ),
                ),
                _ => (
                    Finding::Qmqp,
                    Evidence::ReplyOnly,
                    format!("answered a TLS ClientHello with a reply netstring, as Postfix qmqpd answers garbage: {shown}"),
                ),
            };
            r.replies = rs;
            (finding, Some(evidence), detail)
        }
        Answer::Smtp => (
            Finding::Smtp,
            None,
            format!("not QMTP/QMQP: SMTP banner \"{line}\""),
        ),
        Answer::Http => (
            Finding::Http,
            None,
            format!("not QMTP/QMQP: HTTP answer \"{line}\""),
        ),
        Answer::Tls => (
            Finding::Tls,
            None,
            format!(
                "not QMTP/QMQP: TLS (answered with a TLS record: {})",
                classify::escaped(bytes, 16)
            ),
        ),
        Answer::Ssh => (
            Finding::Ssh,
            None,
            format!("not QMTP/QMQP: SSH banner \"{line}\""),
        ),
        Answer::Other => (
            Finding::Other,
            None,
            format!("not QMTP/QMQP: answered \"{shown}\""),
        ),
    };
    r.finding = finding;
    r.evidence = evidence;
    r.detail = detail;
    r.proof = Some(i);
    true
}

fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Reads `bytes` with the project's request parser: the request as the
/// passive side would report it.
fn parse_request(protocol: Protocol, bytes: &[u8], ts: u64) -> Option<Request> {
    let mut p = RequestParser::new(protocol, 0);
    let mut out = Vec::new();
    p.feed(bytes, ts, &mut out);
    p.finish(ts, &mut out);
    out.into_iter().next().map(|RequestEvent::Request(r)| r)
}

/// One relay-test package to a server found speaking `protocol`.
fn relay_test(addr: SocketAddr, protocol: Protocol, cfg: &Config, policy: &Policy) -> RelayTest {
    let t = cfg.timeouts;
    let mut test = RelayTest {
        protocol,
        step: Step::new("relay_test", None),
        result: RelayResult::Unanswered,
        recipient: cfg.relay_recipient.clone(),
        client_trusted: false,
        transaction: None,
        reply: None,
    };
    let mut stream = match net::connect(addr, cfg.source, t.connect) {
        Ok(s) => s,
        Err(f) => {
            test.step = Step::failed("relay_test", &f);
            return test;
        }
    };
    let mut step = Step::new("relay_test", Some(&stream));
    let local = step
        .local
        .unwrap_or_else(|| SocketAddr::new(target::unspecified_like(&addr.ip()), 0));
    let time = qmwatch_sensor::event::rfc3339(step.ts);
    let msg = wire::relay_message(&wire::RelayContext {
        hostname: &cfg.hostname,
        source: local,
        server: addr,
        protocol,
        recipient: &cfg.relay_recipient,
        time: &time,
    });
    let bytes = wire::relay_request(protocol, &msg, &cfg.relay_recipient);
    step.send(&mut stream, &bytes, t.read);
    step.read(&mut stream, t.read, 1);
    net::close(&stream);
    let (replies, _) = classify::replies(&step.received);
    let reply = replies.into_iter().next();
    let ts = now_ns();
    test.client_trusted = policy.is_trusted(local.ip());
    if let Some(req) = parse_request(protocol, &bytes, step.ts) {
        let n = req.recipients.len();
        let mut codes = CodeCounts::default();
        codes.add_n(reply.as_ref().map(|r| r.code), req.recipient_count);
        let t = Transaction {
            endpoints: Endpoints {
                client: local,
                server: addr,
            },
            protocol,
            replies: vec![reply.clone(); n],
            reply: match protocol {
                Protocol::Qmqp => reply.clone(),
                Protocol::Qmtp => None,
            },
            request: Some(req),
            codes,
            index: 1,
            session_confirmed: reply.is_some(),
            ts,
        };
        test.result = match judge(&t, policy) {
            Some(a) => match a.verdict {
                RelayVerdict::OpenRelay => RelayResult::OpenRelay,
                RelayVerdict::Refused => RelayResult::Refused,
                RelayVerdict::Deferred => RelayResult::Deferred,
                RelayVerdict::Unanswered => RelayResult::Unanswered,
            },
            None => match reply.as_ref().map(|r| r.code) {
                Some(ReplyCode::K) => RelayResult::AcceptedTrusted,
                Some(ReplyCode::Z) => RelayResult::Deferred,
                Some(ReplyCode::D) => RelayResult::Refused,
                None => RelayResult::Unanswered,
            },
        };
        test.transaction = Some(t);
    }
    test.reply = reply;
    test.step = step;
    test
}

/// `3s`, `500ms`, `1.5s` or `3` (seconds): 10 ms to 300 s.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, ms) = match t.strip_suffix("ms") {
        Some(n) => (n, true),
        None => (t.strip_suffix('s').unwrap_or(t), false),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 3s, 500ms)"))?;
    let secs = if ms { v / 1000.0 } else { v };
    if !(0.01..=300.0).contains(&secs) {
        return Err(format!("duration out of range: {s:?} (10ms to 300s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The relay test's recipient must be an address, and must not be local:
/// a server accepting mail for its own domains is not relaying.
pub fn check_recipient(r: &str, policy: &Policy) -> Result<(), String> {
    let printable = r.bytes().all(|b| (0x21..=0x7e).contains(&b));
    let ok = printable
        && r.len() < 1000
        && r.rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
    if !ok {
        return Err(format!(
            "--relay-recipient {r:?}: not an address (local@domain, printable, under 1000 bytes)"
        ));
    }
    if policy.is_local(r) {
        return Err(format!(
            "--relay-recipient {r}: its domain is a --local-domain, and accepting mail for a local domain is not relaying"
        ));
    }
    Ok(())
}

/// 0 nothing found, 1 an unsanctioned QMTP/QMQP service or an open relay.
pub fn exit_status(reports: &[PortReport]) -> u8 {
    if reports
        .iter()
        .any(|r| r.unexpected_service() || r.open_relay())
    {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_defaults_do_not_apply() {
        let p = check_policy(Policy::default());
        assert!(!p.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(!p.is_trusted("10.1.2.3".parse().unwrap()));
        let mut b = qmwatch_sensor::detect::policy::PolicyBuilder::new();
        b.trusted_net("127.0.0.1/32", "test").unwrap();
        let p = check_policy(b.build());
        assert!(p.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(!p.is_trusted("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn timeouts_and_recipients() {
        assert_eq!(parse_timeout("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_timeout("0").is_err() && parse_timeout("1h").is_err());
        let p = Policy::default();
        assert!(check_recipient(wire::DEFAULT_RELAY_RECIPIENT, &p).is_ok());
        assert!(check_recipient("postmaster", &p).is_err());
        assert!(check_recipient("a b@example.com", &p).is_err());
        let mut b = qmwatch_sensor::detect::policy::PolicyBuilder::new();
        b.local_domain("example.net", "test").unwrap();
        let e = check_recipient("joe@example.net", &b.build()).unwrap_err();
        assert!(e.contains("local"), "{e}");
    }

    #[test]
    fn names_of_findings_are_stable() {
        let all = [
            Finding::Qmtp,
            Finding::Qmqp,
            Finding::Smtp,
            Finding::Tls,
            Finding::Http,
            Finding::Ssh,
            Finding::Other,
            Finding::Silent,
            Finding::ClosesWithoutAnswer,
            Finding::Closed,
            Finding::NoAnswer,
            Finding::Unreachable,
        ];
        let names: Vec<&str> = all.iter().map(|f| f.name()).collect();
        assert_eq!(
            names.join(","),
            "qmtp,qmqp,smtp,tls,http,ssh,other,silent,closes_without_answer,closed,no_answer,unreachable"
        );
    }
}
