//! Findings: what detection concluded about the traffic, typed, before it
//! is written.
//!
//! Owns: the vocabulary that detection and the ECS mapping share — relay
//! verdicts, recognised scanner probes, judged relay attempts, the alert
//! classification of a finding (its severity and rule) — and one record per
//! kind of finding (a protocol anomaly is its own record,
//! `qmwatch_proto::Anomaly`: nothing is decided about it). The dependencies run one way: `detect` produces these
//! records and decides every severity, rule and alert-or-event in them;
//! `event` only maps them to ECS JSON; this module imports neither.
//!
//! Must not: import `detect` or `event`; decide anything (it holds what
//! `detect` decided); know JSON.

use std::collections::BTreeMap;

use qmwatch_proto::{Endpoints, Protocol, Reply, Transaction};

/// What happened to a relay attempt's foreign recipients. The order is
/// the order of seriousness (`min` is the worst).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RelayVerdict {
    /// Some foreign recipient got `K`.
    OpenRelay,
    /// No reply was seen for any foreign recipient.
    Unanswered,
    /// Some foreign recipient got `Z`, none `K`.
    Deferred,
    /// Every answered foreign recipient got `D`.
    Refused,
}

impl RelayVerdict {
    /// The stable name (`event.action`, `qmwatch.relay.verdict`).
    pub fn name(self) -> &'static str {
        match self {
            RelayVerdict::OpenRelay => "open_relay",
            RelayVerdict::Unanswered => "unanswered",
            RelayVerdict::Deferred => "deferred",
            RelayVerdict::Refused => "refused",
        }
    }

    /// Every verdict, in the order reports list them.
    pub const ALL: [RelayVerdict; 4] = [
        RelayVerdict::OpenRelay,
        RelayVerdict::Refused,
        RelayVerdict::Deferred,
        RelayVerdict::Unanswered,
    ];
}

/// A recognised scanner probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The scanner's name as it writes it ("nessus", "openvas", …).
    pub scanner: String,
    /// `qmtp`, or `qmqp-wrapped` for the QMTP package wrapped for port 628.
    pub form: &'static str,
}

/// A judged relay attempt.
#[derive(Clone, Debug)]
pub struct RelayAttempt<'a> {
    pub verdict: RelayVerdict,
    /// Foreign recipients with their replies, in wire order.
    pub foreign: Vec<(String, Option<&'a Reply>)>,
    pub local_count: usize,
    /// The verdict rests on the configured policy, or on a reserved example
    /// domain; false when only the default policy made a recipient foreign.
    pub confident: bool,
}

/// The detection rule a finding matched (`rule.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
    pub category: Option<&'static str>,
}

/// A finding a SOC is asked to act on: written as an ECS alert
/// (`event.kind: alert`) with this severity and rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alert {
    /// `event.severity`, 0–100.
    pub severity: u64,
    pub rule: Rule,
}

/// A QMTP/QMQP server seen for the first time.
#[derive(Clone, Debug)]
pub struct ServiceFinding<'a> {
    pub ts: u64,
    pub endpoints: &'a Endpoints,
    pub protocol: Protocol,
    /// How the session was confirmed (`Evidence::name`).
    pub evidence: &'static str,
    pub sanctioned: bool,
    /// The server listens on its protocol's standard port.
    pub standard_port: bool,
    /// `None`: inventory, not an alert.
    pub alert: Option<Alert>,
}

/// One package or message, with the policy's view of its client.
#[derive(Clone, Copy, Debug)]
pub struct TransactionFinding<'a> {
    pub transaction: &'a Transaction,
    pub client_trusted: bool,
    /// The verdict of the relay attempt it is, if it is one.
    pub relay: Option<RelayVerdict>,
}

/// A known scanner's probe.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbeFinding<'a> {
    pub transaction: &'a Transaction,
    pub probe: &'a Probe,
    pub client_trusted: bool,
    pub alert: Alert,
}

/// What the site policy was when a relay attempt was judged.
#[derive(Clone, Debug)]
pub struct PolicyNote {
    pub description: String,
    pub local_domains_defaulted: bool,
    pub trusted_networks_defaulted: bool,
}

/// A relay attempt of an untrusted client.
#[derive(Clone, Debug)]
pub struct RelayFinding<'a> {
    pub transaction: &'a Transaction,
    pub attempt: &'a RelayAttempt<'a>,
    pub policy: &'a PolicyNote,
    /// The scanner whose probe the attempt was, if any.
    pub scanner: Option<&'a str>,
    pub alert: Alert,
}

/// A flow one relay attempt of a window was seen on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlowSeen {
    pub ts: u64,
    pub endpoints: Endpoints,
}

/// Repeated relay attempts of one client through one server within one
/// window, folded into the window's first alert.
#[derive(Clone, Debug)]
pub(crate) struct RelayWindowFinding {
    pub count: u64,
    pub window_ns: u64,
    /// Attempts by verdict name.
    pub verdicts: BTreeMap<&'static str, u64>,
    pub worst: RelayVerdict,
    /// The alert of the worst verdict.
    pub alert: Alert,
    pub first: FlowSeen,
    pub last: FlowSeen,
}
