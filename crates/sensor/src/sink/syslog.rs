//! Syslog output: RFC 5424 messages over UDP, over TCP (octet-counting
//! framing, RFC 6587) or to a local datagram socket (`/dev/log`).
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG
//!   PRI       facility × 8 + severity (see [`severity_of`])
//!   TIMESTAMP the event's @timestamp (packet time)
//!   HOSTNAME  observer.hostname
//!   APP-NAME  --syslog-app-name (qmwatch)
//!   PROCID    qmwatch's process id
//!   MSGID     event.dataset (qmwatch.relay, …)
//!   MSG       the JSON event, ASCII only (no BOM needed)
//! ```
//!
//! Owns: the connection to one collector, reconnecting with capped
//! exponential backoff, telling the operator about an outage in exactly two
//! stderr lines (when it starts; when it ends, with the number of events
//! dropped meanwhile), and giving up on what is left when the run ends and
//! the collector is still down after the drain timeout.
//!
//! Must not: block the producer (its queue drops the oldest line when full,
//! see `queue`), hold more than one batch outside its queue, crash on any
//! network error, or send a partial frame as if it were whole (after a
//! failed TCP write the message is sent again whole on a new connection).
//!
//! Delivery is at-most-once for UDP and the local socket (a datagram sent
//! while the collector is down is lost without an error for the first one
//! or two; later sends fail and the outage is seen) and at-least-once for
//! TCP except for what the collector's kernel had accepted when it died.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{Pop, Queue};
use super::{Backoff, Line, OutputCounters};

/// Largest UDP payload (IPv4).
const MAX_UDP: usize = 65_507;
/// Lines taken from the queue at once (held outside the queue while sent).
const BATCH: usize = 64;
/// First reconnect wait; it doubles up to `Options::retry_max`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
#[cfg(target_os = "linux")]
const EMSGSIZE: i32 = 90;
#[cfg(not(target_os = "linux"))]
const EMSGSIZE: i32 = 40;

/// Syslog facilities by name (RFC 5424 table 1, names as in syslog.conf).
pub(crate) const FACILITIES: [(&str, u8); 24] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// `local0`, `daemon`, … or a number 0–23.
pub fn parse_facility(s: &str) -> Result<u8, String> {
    let t = s.trim().to_ascii_lowercase();
    if let Some((_, n)) = FACILITIES.iter().find(|(name, _)| *name == t) {
        return Ok(*n);
    }
    match t.parse::<u8>() {
        Ok(n) if n <= 23 => Ok(n),
        _ => Err(format!(
            "unknown syslog facility {s:?} (kern, user, mail, daemon, auth, syslog, \
             lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, \
             solaris-cron, local0-local7, or 0-23)"
        )),
    }
}

/// An APP-NAME: 1–48 printable ASCII characters without spaces.
pub fn check_app_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 48 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "bad syslog app-name {s:?}: 1 to 48 printable ASCII characters, no spaces"
        ));
    }
    Ok(s.to_string())
}

/// The RFC 5424 severity of an event.
///
/// | event | severity |
/// |---|---|
/// | alert, `event.severity` ≥ 73 (open relay 90) | 2 critical |
/// | alert, 47–72 (unexpected service 47/63, open relay not confident 70, unanswered relay 50) | 3 error |
/// | alert, 21–46 (deferred 40, refused 30, scanner probe 21) | 4 warning |
/// | alert below 21 or without severity | 5 notice |
/// | `qmwatch.anomaly` | 5 notice |
/// | anything else (transactions, sanctioned services, statistics) | 6 informational |
///
/// The bands are Elastic's risk bands (low 21, medium 47, high 73).
pub(crate) fn severity_of(kind: &str, ecs_severity: Option<u64>, dataset: &str) -> u8 {
    if kind == "alert" {
        return match ecs_severity {
            Some(s) if s >= 73 => 2,
            Some(s) if s >= 47 => 3,
            Some(s) if s >= 21 => 4,
            _ => 5,
        };
    }
    if dataset == crate::event::DATASET_ANOMALY {
        5
    } else {
        6
    }
}

/// How messages are built and how hard to try.
#[derive(Clone, Debug)]
pub struct Options {
    /// 0–23; `local0` (16) by default.
    pub facility: u8,
    /// APP-NAME; `qmwatch` by default.
    pub app_name: String,
    /// HOSTNAME: `observer.hostname`.
    pub hostname: String,
    /// Longest wait between reconnect attempts.
    pub retry_max: Duration,
    /// At the end of the run, how long to keep trying a collector that is
    /// down before counting what is left as undeliverable.
    pub drain_timeout: Duration,
    /// A write that takes longer (a stuck collector) is an outage.
    pub write_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            facility: 16,
            app_name: "qmwatch".into(),
            hostname: crate::event::Observer::from_system().hostname,
            retry_max: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// A collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Udp { host: String, port: u16 },
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Target {
    /// `syslog+udp://HOST:PORT`, `syslog+tcp://HOST:PORT` (HOST may be
    /// `[IPv6]`), `syslog+unix:///dev/log`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = |why: &str| {
            Err(format!(
                "bad syslog output {s:?}: {why} (syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT or syslog+unix:///PATH)"
            ))
        };
        if let Some(path) = s.strip_prefix("syslog+unix://") {
            if !path.starts_with('/') {
                return bad("the socket path must be absolute");
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let (udp, rest) = if let Some(r) = s.strip_prefix("syslog+udp://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("syslog+tcp://") {
            (false, r)
        } else {
            return bad("unknown scheme");
        };
        let rest = rest.trim_end_matches('/');
        let Some((host, port)) = rest.rsplit_once(':') else {
            return bad("a port is required");
        };
        let (host, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(h) => (h, true),
            None => (host, false),
        };
        if host.is_empty() || host.contains(['/', '[', ']']) {
            return bad("bad host");
        }
        if bracketed != host.contains(':')
            || (bracketed && host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return bad("an IPv6 address goes in brackets, [::1]:514");
        }
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 => p,
            _ => return bad("bad port"),
        };
        let host = host.to_string();
        Ok(if udp {
            Target::Udp { host, port }
        } else {
            Target::Tcp { host, port }
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hp = |host: &str, port: u16| {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        };
        match self {
            Target::Udp { host, port } => write!(f, "syslog+udp://{}", hp(host, *port)),
            Target::Tcp { host, port } => write!(f, "syslog+tcp://{}", hp(host, *port)),
            Target::Unix(p) => write!(f, "syslog+unix://{}", p.display()),
        }
    }
}

/// Printable ASCII without spaces, at most `max` bytes, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// The RFC 5424 message of a line.
pub(crate) fn format_message(line: &Line, opts: &Options, procid: &str) -> String {
    let pri = u16::from(opts.facility.min(23)) * 8 + u16::from(line.severity.min(7));
    let ts = if is_rfc3339(&line.timestamp) {
        line.timestamp.as_str()
    } else {
        "-"
    };
    format!(
        "<{pri}>1 {ts} {} {} {} {} - {}",
        header_field(&opts.hostname, 255),
        header_field(&opts.app_name, 48),
        header_field(procid, 128),
        header_field(&line.dataset, 32),
        line.json
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`, as qmwatch writes @timestamp.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b.len() <= 32
        && b.iter().all(|c| c.is_ascii_graphic())
        && b.get(4) == Some(&b'-')
        && b.get(10) == Some(&b'T')
        && b.last() == Some(&b'Z')
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixDatagram),
}

enum SendError {
    /// The message cannot be sent at all (too large for a datagram).
    TooLarge,
    /// The collector is unreachable: reconnect and send it again.
    Down,
}

fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

fn connect(target: &Target, opts: &Options) -> io::Result<Conn> {
    match target {
        Target::Tcp { host, port } => {
            let mut last = None;
            for a in resolve(host, *port)? {
                match TcpStream::connect_timeout(&a, opts.write_timeout) {
                    Ok(s) => {
                        s.set_write_timeout(Some(opts.write_timeout))?;
                        let _ = s.set_nodelay(true);
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no address")))
        }
        Target::Udp { host, port } => {
            let mut last = None;
            for a in resolve(host, *port)? {
                let local: SocketAddr = if a.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                match UdpSocket::bind(local).and_then(|s| s.connect(a).map(|_| s)) {
                    Ok(s) => {
                        s.set_write_timeout(Some(opts.write_timeout))?;
                        return Ok(Conn::Udp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no address")))
        }
        #[cfg(unix)]
        Target::Unix(p) => {
            let s = std::os::unix::net::UnixDatagram::unbound()?;
            s.connect(p)?;
            s.set_write_timeout(Some(opts.write_timeout))?;
            Ok(Conn::Unix(s))
        }
        #[cfg(not(unix))]
        Target::Unix(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "unix sockets are not supported on this system",
        )),
    }
}

impl Conn {
    /// True when the collector closed a TCP connection (or sent data, which
    /// a syslog collector never does; it is read and ignored).
    fn peer_closed(&mut self) -> bool {
        let Conn::Tcp(s) = self else {
            return false;
        };
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut buf = [0u8; 512];
        let mut closed = false;
        for _ in 0..16 {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if s.set_nonblocking(false).is_err() {
            return true;
        }
        closed
    }

    /// Sends one message; returns the bytes sent (with framing).
    fn send(&mut self, msg: &str) -> Result<u64, SendError> {
        let datagram = |r: io::Result<usize>| match r {
            Ok(n) => Ok(n as u64),
            Err(e) if e.raw_os_error() == Some(EMSGSIZE) => Err(SendError::TooLarge),
            Err(_) => Err(SendError::Down),
        };
        match self {
            Conn::Tcp(s) => {
                let head = format!("{} ", msg.len());
                s.write_all(head.as_bytes())
                    .and_then(|_| s.write_all(msg.as_bytes()))
                    .map_err(|_| SendError::Down)?;
                Ok((head.len() + msg.len()) as u64)
            }
            Conn::Udp(s) => {
                if msg.len() > MAX_UDP {
                    return Err(SendError::TooLarge);
                }
                datagram(s.send(msg.as_bytes()))
            }
            #[cfg(unix)]
            Conn::Unix(s) => datagram(s.send(msg.as_bytes())),
        }
    }
}

/// An outage in progress. It ends, and is reported with its drops, when
/// the queue it overflowed is first found empty after the reconnect: drops
/// while the backlog drains are the outage's too, so the line's count and
/// the summary's agree.
struct Outage {
    since: Instant,
    dropped_before: u64,
    /// How long the collector was away, once it is back.
    back_after: Option<Duration>,
}

/// Reports an outage whose collector is back, if there is one.
fn end_outage(outage: &mut Option<Outage>, counters: &OutputCounters, name: &str) {
    let Some(o) = outage.as_ref() else {
        return;
    };
    let Some(back) = o.back_after else {
        return;
    };
    let dropped = counters.dropped().saturating_sub(o.dropped_before);
    counters
        .dropped_in_outages
        .fetch_add(dropped, Ordering::Relaxed);
    eprintln!(
        "qmwatch: output {name}: collector reachable again after {:.1} s; \
         {dropped} event(s) dropped during the outage",
        back.as_secs_f64()
    );
    *outage = None;
}

/// Sends lines until the queue is closed and empty (or, with the collector
/// down at the end, until the drain timeout). Never fails: every problem is
/// an outage or a counted drop.
// Long: the connect, outage and drain-deadline state machine of one output thread, its state in locals of one loop.
pub fn run(
    target: &Target,
    opts: &Options,
    queue: &Queue,
    counters: &OutputCounters,
    name: &str,
) -> Option<String> {
    let procid = std::process::id().to_string();
    let mut conn: Option<Conn> = None;
    let mut pending: VecDeque<Arc<Line>> = VecDeque::new();
    let mut backoff = Backoff::new(FIRST_BACKOFF, opts.retry_max);
    let mut next_try = Instant::now();
    let mut outage: Option<Outage> = None;
    // The drop count when the connection was lost (or at the start): an
    // outage counts its drops from there, not from the failed reconnect,
    // which the producer may have overflowed the queue before.
    let mut lost_at: Option<u64> = Some(counters.dropped());
    // The drop count at the last line the collector took: a collector that
    // went away is noticed only at the next send or idle check, and what the
    // queue dropped since that line is the outage's too.
    let mut dropped_at_last_send = counters.dropped();
    let mut drain_deadline: Option<Instant> = None;
    let mut too_large_told = false;
    loop {
        if drain_deadline.is_none() && queue.is_closed() {
            drain_deadline = Some(Instant::now() + opts.drain_timeout);
        }
        if pending.is_empty() {
            match queue.pop(BATCH, Duration::from_millis(200)) {
                Pop::Lines(v) => pending.extend(v),
                Pop::Idle => {
                    // The backlog is gone: an outage that ended is over.
                    end_outage(&mut outage, counters, name);
                    if conn.as_mut().is_some_and(Conn::peer_closed) {
                        conn = None;
                        lost_at.get_or_insert(dropped_at_last_send);
                    }
                    continue;
                }
                Pop::Closed => {
                    end_outage(&mut outage, counters, name);
                    break;
                }
            }
        }
        if conn.is_none() {
            let now = Instant::now();
            if drain_deadline.is_some_and(|d| now >= d) {
                give_up(&mut pending, queue, counters, name, opts.drain_timeout);
                // Still down at the end: the outage's line is this one.
                if let Some(o) = outage.take() {
                    let dropped = counters.dropped().saturating_sub(o.dropped_before);
                    counters
                        .dropped_in_outages
                        .fetch_add(dropped, Ordering::Relaxed);
                    eprintln!(
                        "qmwatch: output {name}: {dropped} event(s) dropped during the outage \
                         (those not delivered included)"
                    );
                }
                break;
            }
            if now < next_try {
                let mut wait = next_try - now;
                if let Some(d) = drain_deadline {
                    wait = wait.min(d.saturating_duration_since(now));
                }
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                continue;
            }
            match connect(target, opts) {
                Ok(c) => {
                    conn = Some(c);
                    lost_at = None;
                    counters.connects.fetch_add(1, Ordering::Relaxed);
                    if let Some(o) = outage.as_mut() {
                        o.back_after.get_or_insert(o.since.elapsed());
                    }
                }
                Err(e) => {
                    // Lost again while its backlog drained: the same outage.
                    if let Some(o) = outage.as_mut() {
                        o.back_after = None;
                    }
                    if outage.is_none() {
                        counters.outages.fetch_add(1, Ordering::Relaxed);
                        outage = Some(Outage {
                            since: Instant::now(),
                            dropped_before: lost_at.unwrap_or_else(|| counters.dropped()),
                            back_after: None,
                        });
                        eprintln!(
                            "qmwatch: output {name}: collector unreachable ({e}); holding up to \
                             {} event(s), oldest dropped first, retrying every {} s at most",
                            queue_cap_hint(queue),
                            opts.retry_max.as_secs_f64()
                        );
                    }
                    next_try = Instant::now() + backoff.step();
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        if c.peer_closed() {
            // The collector went away since the last send: reconnect now.
            conn = None;
            lost_at.get_or_insert(dropped_at_last_send);
            continue;
        }
        while let Some(line) = pending.front() {
            let msg = format_message(line, opts, &procid);
            match c.send(&msg) {
                Ok(n) => {
                    counters.written.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(n, Ordering::Relaxed);
                    pending.pop_front();
                    backoff.reset();
                    dropped_at_last_send = counters.dropped();
                }
                Err(SendError::TooLarge) => {
                    counters
                        .dropped_undeliverable
                        .fetch_add(1, Ordering::Relaxed);
                    if !too_large_told {
                        too_large_told = true;
                        eprintln!(
                            "qmwatch: output {name}: an event of {} bytes is too large for a \
                             datagram; dropped (counted; use syslog+tcp for large events)",
                            msg.len()
                        );
                    }
                    pending.pop_front();
                }
                Err(SendError::Down) => {
                    // Reconnect after the (short, unless this keeps
                    // happening) backoff; if that fails the outage begins.
                    conn = None;
                    lost_at.get_or_insert(dropped_at_last_send);
                    next_try = Instant::now() + backoff.step();
                    break;
                }
            }
        }
    }
    None
}

/// The queue's line cap, for the outage message.
fn queue_cap_hint(queue: &Queue) -> String {
    queue.max_items().to_string()
}

fn give_up(
    pending: &mut VecDeque<Arc<Line>>,
    queue: &Queue,
    counters: &OutputCounters,
    name: &str,
    waited: Duration,
) {
    let n = pending.len() as u64 + queue.abandon();
    counters
        .dropped_undeliverable
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
    pending.clear();
    eprintln!(
        "qmwatch: output {name}: collector still unreachable {} s after the end of input; \
         {n} event(s) not delivered (counted as dropped)",
        waited.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("syslog+udp://127.0.0.1:514").unwrap(),
            Target::Udp {
                host: "127.0.0.1".into(),
                port: 514
            }
        );
        assert_eq!(
            Target::parse("syslog+tcp://[::1]:6514").unwrap(),
            Target::Tcp {
                host: "::1".into(),
                port: 6514
            }
        );
        assert_eq!(
            Target::parse("syslog+unix:///dev/log").unwrap(),
            Target::Unix("/dev/log".into())
        );
        for bad in [
            "syslog+tcp://host",
            "syslog+tcp://:514",
            "syslog+tcp://h:0",
            "syslog+tcp://h:99999",
            "syslog+udp://::1:514",
            "syslog+unix://dev/log",
            "syslog+http://h:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Target::parse("syslog+tcp://[::1]:6514")
                .unwrap()
                .to_string(),
            "syslog+tcp://[::1]:6514"
        );
    }

    #[test]
    fn facilities_and_app_names() {
        assert_eq!(parse_facility("local0"), Ok(16));
        assert_eq!(parse_facility("DAEMON"), Ok(3));
        assert_eq!(parse_facility("23"), Ok(23));
        assert!(parse_facility("24").is_err());
        assert!(parse_facility("local8").is_err());
        assert!(check_app_name("qmwatch").is_ok());
        assert!(check_app_name("qm watch").is_err());
        assert!(check_app_name(&"x".repeat(49)).is_err());
    }

    #[test]
    fn severity_mapping() {
        assert_eq!(severity_of("alert", Some(90), "qmwatch.relay"), 2);
        assert_eq!(severity_of("alert", Some(73), "qmwatch.relay"), 2);
        assert_eq!(severity_of("alert", Some(70), "qmwatch.relay"), 3);
        assert_eq!(severity_of("alert", Some(47), "qmwatch.service"), 3);
        assert_eq!(severity_of("alert", Some(40), "qmwatch.relay"), 4);
        assert_eq!(severity_of("alert", Some(21), "qmwatch.probe"), 4);
        assert_eq!(severity_of("alert", None, "qmwatch.probe"), 5);
        assert_eq!(severity_of("event", None, "qmwatch.anomaly"), 5);
        assert_eq!(severity_of("event", None, "qmwatch.transaction"), 6);
    }

    #[test]
    fn rfc5424_message() {
        let line = Line::from_json(
            r#"{"@timestamp":"2026-11-21T05:17:46.472475Z","event":{"kind":"alert","severity":90,"dataset":"qmwatch.relay"}}"#
                .into(),
        );
        let opts = Options {
            hostname: "sensor 1".into(),
            ..Options::default()
        };
        let m = format_message(&line, &opts, "42");
        assert_eq!(
            m,
            format!(
                "<130>1 2026-11-21T05:17:46.472475Z sensor1 qmwatch 42 qmwatch.relay - {}",
                line.json
            )
        );
        let bare = Line::from_json("{}".into());
        assert!(format_message(&bare, &opts, "42").starts_with("<134>1 - sensor1 qmwatch 42 - - {"));
    }

    #[test]
    fn tcp_frames_are_octet_counted() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let mut c = connect(&t, &Options::default()).ok().unwrap();
        let (mut s, _) = l.accept().unwrap();
        assert!(!c.peer_closed());
        c.send("hello").ok().unwrap();
        c.send("wörld").ok().unwrap();
        drop(c);
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "5 hello6 wörld");
    }

    #[test]
    fn peer_close_is_seen_before_sending() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let mut c = connect(&t, &Options::default()).ok().unwrap();
        let (s, _) = l.accept().unwrap();
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.peer_closed());
    }
}
