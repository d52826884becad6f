//! Ground truth: what a generated capture holds, counted as the generator
//! writes it, and judged by the definitions in docs/protocols.md with the generator's
//! own site policy (deliberately not the sensor's code).
//!
//! Definitions (docs/protocols.md and README "Site policy"):
//! - a **transaction** is a QMTP package or a QMQP message;
//! - a session is **confirmed** when a well-formed request was answered by
//!   at least one K/Z/D reply netstring;
//! - a **relay attempt** is a transaction from a client outside the trusted
//!   networks naming at least one recipient outside the local domains (an
//!   address without `@` is local); its verdict is `open_relay` if a foreign
//!   recipient got `K`, else `deferred` if one got `Z`, else `refused` if one
//!   got `D`, else `unanswered`;
//! - recipient **codes** count one per recipient: a QMQP reply answers every
//!   recipient of its message; a recipient with no reply is `missing`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// Transactions listed one by one up to this many; beyond it only counts.
pub const LIST_LIMIT: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Qmtp,
    Qmqp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Qmtp => "qmtp",
            Proto::Qmqp => "qmqp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    K,
    Z,
    D,
}

impl Code {
    pub fn letter(self) -> &'static str {
        match self {
            Code::K => "K",
            Code::Z => "Z",
            Code::D => "D",
        }
    }
}

/// The site policy the capture is judged with: qmail `rcpthosts` entries
/// and trusted client networks.
#[derive(Clone, Debug)]
pub struct SitePolicy {
    pub local_domains: Vec<String>,
    pub trusted: Vec<(IpAddr, u8)>,
}

impl SitePolicy {
    /// `example.net` and its subdomains are local; 192.0.2.0/24 and
    /// 2001:db8:1::/48 are the trusted (internal) networks.
    pub fn standard() -> Self {
        SitePolicy {
            local_domains: vec!["example.net".into(), ".example.net".into()],
            trusted: vec![
                ("192.0.2.0".parse().expect("literal"), 24),
                ("2001:db8:1::".parse().expect("literal"), 48),
            ],
        }
    }

    /// qmail `rcpthosts` semantics, case-insensitive; no `@`: local.
    pub fn is_local(&self, address: &str) -> bool {
        let Some(at) = address.rfind('@') else {
            return true;
        };
        let domain = address[at + 1..].to_ascii_lowercase();
        self.local_domains
            .iter()
            .any(|e| match e.strip_prefix('.') {
                Some(parent) => domain.ends_with(&format!(".{parent}")),
                None => domain == *e,
            })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    pub fn networks(&self) -> Vec<String> {
        self.trusted
            .iter()
            .map(|(ip, bits)| format!("{ip}/{bits}"))
            .collect()
    }
}

/// One transaction as generated.
#[derive(Clone, Debug)]
pub struct TxTruth {
    pub sender: String,
    pub recipients: Vec<String>,
    /// Per recipient; `None`: no reply came.
    pub codes: Vec<Option<Code>>,
    /// QMTP: `Some(true)` for CRLF (0x0d), `Some(false)` for LF (0x0a).
    pub crlf: Option<bool>,
    /// QMTP: without the encoding byte; QMQP: the message netstring's content.
    pub message_bytes: u64,
}

/// One QMTP/QMQP TCP connection as generated.
#[derive(Clone, Debug)]
pub struct SessionTruth {
    pub protocol: Proto,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub pipelined: bool,
    pub transactions: Vec<TxTruth>,
    /// K/Z/D reply netstrings the server sent, in order.
    pub replies: Vec<Code>,
}

/// Counts by protocol.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ByProto {
    pub qmtp: u64,
    pub qmqp: u64,
}

impl ByProto {
    fn add(&mut self, p: Proto) {
        match p {
            Proto::Qmtp => self.qmtp += 1,
            Proto::Qmqp => self.qmqp += 1,
        }
    }
}

/// Counts by reply code.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Codes {
    #[serde(rename = "K")]
    pub k: u64,
    #[serde(rename = "Z")]
    pub z: u64,
    #[serde(rename = "D")]
    pub d: u64,
    pub missing: u64,
}

impl Codes {
    fn add(&mut self, c: Option<Code>) {
        match c {
            Some(Code::K) => self.k += 1,
            Some(Code::Z) => self.z += 1,
            Some(Code::D) => self.d += 1,
            None => self.missing += 1,
        }
    }
}

/// Reply netstrings by code.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Replies {
    #[serde(rename = "K")]
    pub k: u64,
    #[serde(rename = "Z")]
    pub z: u64,
    #[serde(rename = "D")]
    pub d: u64,
}

/// Relay attempts by verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdicts {
    pub open_relay: u64,
    pub refused: u64,
    pub deferred: u64,
    pub unanswered: u64,
}

/// A QMTP/QMQP server seen confirmed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Service {
    pub server: String,
    pub protocol: &'static str,
    pub standard_port: bool,
}

/// Counts of the QMTP/QMQP traffic.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QmCounts {
    /// TCP connections carrying QMTP/QMQP.
    pub sessions: ByProto,
    /// Of those, the confirmed ones (request answered by a reply netstring).
    pub confirmed_sessions: ByProto,
    /// QMTP sessions sending more than one package without waiting for replies.
    pub pipelined_sessions: u64,
    /// QMTP packages and QMQP messages.
    pub transactions: ByProto,
    pub transactions_total: u64,
    pub recipients: u64,
    /// Per recipient (QMQP: the message's reply counts for each recipient).
    pub codes: Codes,
    /// Reply netstrings on the wire.
    pub reply_netstrings: Replies,
    pub relay_attempts: Verdicts,
    pub relay_attempts_total: u64,
    /// Foreign recipients accepted (`K`) from untrusted clients.
    pub accepted_relay_recipients: u64,
    /// Transactions with an empty envelope sender.
    pub bounces: u64,
    /// QMTP packages by encoding.
    pub encoding_lf: u64,
    pub encoding_crlf: u64,
    pub message_bytes: u64,
    pub max_message_bytes: u64,
    pub max_recipients: u64,
    /// Distinct servers (address, port, protocol) with a confirmed session.
    pub services: Vec<Service>,
}

/// One transaction, for exact comparison.
#[derive(Clone, Debug, Serialize)]
pub struct TxRecord {
    pub protocol: &'static str,
    pub client: String,
    pub server: String,
    /// 1-based position in its session.
    pub index: u32,
    pub sender: String,
    pub recipients: Vec<String>,
    pub codes: Vec<Option<&'static str>>,
    /// QMTP only: `LF` or `CRLF`.
    pub encoding: Option<&'static str>,
    pub message_bytes: u64,
    /// The relay verdict, if a relay attempt.
    pub relay: Option<&'static str>,
}

/// Judges a transaction: `None` unless it is a relay attempt.
pub fn verdict(policy: &SitePolicy, client: IpAddr, tx: &TxTruth) -> Option<&'static str> {
    if policy.is_trusted(client) {
        return None;
    }
    let foreign: Vec<Option<Code>> = tx
        .recipients
        .iter()
        .zip(&tx.codes)
        .filter(|(r, _)| !policy.is_local(r))
        .map(|(_, c)| *c)
        .collect();
    if foreign.is_empty() {
        return None;
    }
    Some(if foreign.contains(&Some(Code::K)) {
        "open_relay"
    } else if foreign.contains(&Some(Code::Z)) {
        "deferred"
    } else if foreign.contains(&Some(Code::D)) {
        "refused"
    } else {
        "unanswered"
    })
}

/// Accumulates the truth while the capture is written.
#[derive(Debug)]
pub struct Recorder {
    pub policy: SitePolicy,
    pub qm: QmCounts,
    services: BTreeSet<Service>,
    list: Option<Vec<TxRecord>>,
    pub flows: BTreeMap<&'static str, u64>,
}

impl Recorder {
    pub fn new(policy: SitePolicy) -> Self {
        Recorder {
            policy,
            qm: QmCounts::default(),
            services: BTreeSet::new(),
            list: Some(Vec::new()),
            flows: BTreeMap::new(),
        }
    }

    pub fn flow(&mut self, kind: &'static str) {
        *self.flows.entry(kind).or_default() += 1;
    }

    pub fn session(&mut self, s: &SessionTruth) {
        let q = &mut self.qm;
        q.sessions.add(s.protocol);
        if s.pipelined {
            q.pipelined_sessions += 1;
        }
        for r in &s.replies {
            let n = &mut q.reply_netstrings;
            match r {
                Code::K => n.k += 1,
                Code::Z => n.z += 1,
                Code::D => n.d += 1,
            }
        }
        if !s.replies.is_empty() && !s.transactions.is_empty() {
            q.confirmed_sessions.add(s.protocol);
            let standard = match s.protocol {
                Proto::Qmtp => 209,
                Proto::Qmqp => 628,
            };
            self.services.insert(Service {
                server: s.server.to_string(),
                protocol: s.protocol.name(),
                standard_port: s.server.port() == standard,
            });
        }
        for (i, tx) in s.transactions.iter().enumerate() {
            q.transactions.add(s.protocol);
            q.transactions_total += 1;
            q.recipients += tx.recipients.len() as u64;
            q.max_recipients = q.max_recipients.max(tx.recipients.len() as u64);
            for c in &tx.codes {
                q.codes.add(*c);
            }
            if tx.sender.is_empty() {
                q.bounces += 1;
            }
            match tx.crlf {
                Some(true) => q.encoding_crlf += 1,
                Some(false) => q.encoding_lf += 1,
                None => {}
            }
            q.message_bytes += tx.message_bytes;
            q.max_message_bytes = q.max_message_bytes.max(tx.message_bytes);
            let v = verdict(&self.policy, s.client.ip(), tx);
            if let Some(v) = v {
                q.relay_attempts_total += 1;
                match v {
                    "open_relay" => q.relay_attempts.open_relay += 1,
                    "refused" => q.relay_attempts.refused += 1,
                    "deferred" => q.relay_attempts.deferred += 1,
                    _ => q.relay_attempts.unanswered += 1,
                }
                q.accepted_relay_recipients += tx
                    .recipients
                    .iter()
                    .zip(&tx.codes)
                    .filter(|(r, c)| !self.policy.is_local(r) && **c == Some(Code::K))
                    .count() as u64;
            }
            if let Some(list) = &mut self.list {
                if list.len() >= LIST_LIMIT {
                    self.list = None;
                    continue;
                }
                list.push(TxRecord {
                    protocol: s.protocol.name(),
                    client: s.client.to_string(),
                    server: s.server.to_string(),
                    index: i as u32 + 1,
                    sender: tx.sender.clone(),
                    recipients: tx.recipients.clone(),
                    codes: tx.codes.iter().map(|c| c.map(Code::letter)).collect(),
                    encoding: tx.crlf.map(|c| if c { "CRLF" } else { "LF" }),
                    message_bytes: tx.message_bytes,
                    relay: v,
                });
            }
        }
    }

    /// The counts, services sorted, and the list if it stayed small.
    pub fn finish(mut self) -> (QmCounts, Option<Vec<TxRecord>>, BTreeMap<&'static str, u64>) {
        self.qm.services = self.services.into_iter().collect();
        (self.qm, self.list, self.flows)
    }
}

/// What the capture file holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureInfo {
    pub packets: u64,
    pub file_bytes: u64,
    pub wire_bytes: u64,
    pub tcp_flows: u64,
    pub udp_flows: u64,
    /// Packet times, microseconds since the Unix epoch.
    pub first_ts_us: u64,
    pub last_ts_us: u64,
}

/// The policy flags to judge the capture with (same names as the fixtures'
/// labels: `qmwatch replay --local-domain D --trusted-net N`).
#[derive(Clone, Debug, Serialize)]
pub struct PolicyInfo {
    pub local_domains: Vec<String>,
    pub trusted_client_networks: Vec<String>,
}

/// How the capture was made.
#[derive(Clone, Debug, Serialize)]
pub struct GeneratorInfo {
    pub profile: &'static str,
    pub seed: u64,
    pub target_bytes: Option<u64>,
    pub target_flows: Option<u64>,
}

/// The ground truth of one generated capture.
#[derive(Clone, Debug, Serialize)]
pub struct Truth {
    pub schema: &'static str,
    pub generator: GeneratorInfo,
    pub capture: CaptureInfo,
    /// Flows started, by kind.
    pub flows: BTreeMap<&'static str, u64>,
    pub policy: PolicyInfo,
    pub qm: QmCounts,
    /// `transactions` lists every transaction (fewer than [`LIST_LIMIT`]).
    pub transactions_listed: bool,
    pub transactions: Vec<TxRecord>,
}

impl Truth {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// `--local-domain`/`--trusted-net` arguments for `qmwatch replay`.
    pub fn policy_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in &self.policy.local_domains {
            v.push("--local-domain".to_string());
            v.push(d.clone());
        }
        for n in &self.policy.trusted_client_networks {
            v.push("--trusted-net".to_string());
            v.push(n.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_words() {
        let p = SitePolicy::standard();
        assert!(p.is_local("joe@example.net"));
        assert!(p.is_local("Joe@EXAMPLE.Net"));
        assert!(p.is_local("ops@lists.example.net"));
        assert!(p.is_local("postmaster"));
        assert!(!p.is_local("a@example.com"));
        assert!(!p.is_local("a@badexample.net"));
        assert!(!p.is_local("a@example.net.example.org"));
        assert!(p.is_trusted("192.0.2.77".parse().unwrap()));
        assert!(p.is_trusted("2001:db8:1::a:5".parse().unwrap()));
        assert!(!p.is_trusted("2001:db8:ee::a:5".parse().unwrap()));
        assert!(!p.is_trusted("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn verdict_precedence() {
        let p = SitePolicy::standard();
        let ext: IpAddr = "203.0.113.9".parse().unwrap();
        let tx = |codes: Vec<Option<Code>>| TxTruth {
            sender: String::new(),
            recipients: vec![
                "a@example.com".into(),
                "b@example.org".into(),
                "c@example.net".into(),
            ],
            codes,
            crlf: None,
            message_bytes: 1,
        };
        use Code::*;
        assert_eq!(
            verdict(&p, ext, &tx(vec![Some(D), Some(K), Some(K)])),
            Some("open_relay")
        );
        assert_eq!(
            verdict(&p, ext, &tx(vec![Some(D), Some(Z), Some(K)])),
            Some("deferred")
        );
        assert_eq!(
            verdict(&p, ext, &tx(vec![Some(D), None, Some(K)])),
            Some("refused")
        );
        assert_eq!(
            verdict(&p, ext, &tx(vec![None, None, Some(K)])),
            Some("unanswered")
        );
        let int: IpAddr = "192.0.2.100".parse().unwrap();
        assert_eq!(verdict(&p, int, &tx(vec![Some(K), Some(K), Some(K)])), None);
    }
}
