//! Detection: from protocol records to the findings a SOC acts on.
//!
//! Owns: run-wide judgement — each server reported once per protocol and
//! marked sanctioned or unexpected ([`policy`]), relay attempts and their
//! verdicts (open relay, refused, deferred, unanswered), scanner probes
//! ([`probe`]), optional per-window aggregation of repeated relay alerts, and
//! the inventory the `audit` report is built from. It runs in one thread
//! after the workers, so its state needs no locks.
//!
//! Every decision about a finding is taken here and handed over in a typed
//! finding ([`crate::finding`]): whether it is an alert, its severity and
//! rule ([`rules`]), the relay verdict; `event` only maps findings to ECS.
//! The dependencies run one way: detect → event → finding, and detect →
//! finding.
//!
//! Must not: touch packets or flows, or block on output (it hands events to
//! the sink). Its tables are bounded: servers and clients are capped and the
//! overflow counted.

pub mod policy;
pub mod probe;
mod rules;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::event::{self, Event, RelayEvent};
use crate::finding::{
    FlowSeen, PolicyNote, ProbeFinding, RelayFinding, RelayWindowFinding, ServiceFinding,
    TransactionFinding,
};
pub use crate::finding::{RelayAttempt, RelayVerdict};
use policy::{domain_of, is_reserved_example, Policy};
use qmwatch_proto::{Endpoints, Evidence, Protocol, Record, ReplyCode, Transaction};

/// Servers kept in the inventory; more are counted.
const MAX_SERVERS: usize = 100_000;
/// Distinct clients remembered per server.
const MAX_CLIENTS_PER_SERVER: usize = 1024;
/// Open-relay evidence kept for the audit report.
const MAX_OPEN_RELAY_EVIDENCE: usize = 10_000;
/// Servers whose activity over time is kept for the audit report (each
/// at most 48 buckets of 20 bytes).
const MAX_TIMELINES: usize = 4096;
/// Relay windows open at once.
const MAX_WINDOWS: usize = 100_000;

/// Judges a transaction against the policy: `None` unless it is a relay
/// attempt (untrusted client, at least one non-local recipient).
pub fn judge<'a>(t: &'a Transaction, policy: &Policy) -> Option<RelayAttempt<'a>> {
    let req = t.request.as_ref()?;
    if policy.is_trusted(t.endpoints.client.ip()) {
        return None;
    }
    let mut foreign = Vec::new();
    let mut local_count = 0;
    let mut example_accepted = false;
    for (i, rcpt) in req.recipients.iter().enumerate() {
        let addr = rcpt.text();
        if policy.is_local(&addr) {
            local_count += 1;
            continue;
        }
        let reply = t.replies.get(i).and_then(|r| r.as_ref());
        if reply.map(|r| r.code) == Some(ReplyCode::K)
            && domain_of(&addr).is_some_and(|d| is_reserved_example(&d))
        {
            example_accepted = true;
        }
        foreign.push((addr, reply));
    }
    if foreign.is_empty() {
        return None;
    }
    let codes: Vec<Option<ReplyCode>> = foreign.iter().map(|(_, r)| r.map(|r| r.code)).collect();
    let verdict = if codes.contains(&Some(ReplyCode::K)) {
        RelayVerdict::OpenRelay
    } else if codes.contains(&Some(ReplyCode::Z)) {
        RelayVerdict::Deferred
    } else if codes.contains(&Some(ReplyCode::D)) {
        RelayVerdict::Refused
    } else {
        RelayVerdict::Unanswered
    };
    let confident =
        !policy.local_domains_defaulted || verdict != RelayVerdict::OpenRelay || example_accepted;
    Some(RelayAttempt {
        verdict,
        foreign,
        local_count,
        confident,
    })
}

/// The finding of a server seen for the first time: an alert unless it is
/// sanctioned.
pub fn service_finding(
    ts: u64,
    endpoints: &Endpoints,
    protocol: Protocol,
    evidence: Evidence,
    sanctioned: bool,
) -> ServiceFinding<'_> {
    let standard_port = endpoints.server.port() == protocol.standard_port();
    ServiceFinding {
        ts,
        endpoints,
        protocol,
        evidence: evidence.name(),
        sanctioned,
        standard_port,
        alert: rules::service(sanctioned, standard_port),
    }
}

/// What a relay finding says of the policy that judged it.
pub fn policy_note(policy: &Policy) -> PolicyNote {
    PolicyNote {
        description: policy.describe(),
        local_domains_defaulted: policy.local_domains_defaulted,
        trusted_networks_defaulted: policy.trusted_defaulted,
    }
}

/// The finding of a judged relay attempt, rated by its verdict; `policy`
/// is [`policy_note`] of the policy that judged it.
pub fn relay_finding<'a>(
    t: &'a Transaction,
    attempt: &'a RelayAttempt<'a>,
    policy: &'a PolicyNote,
    probe: Option<&'a probe::Probe>,
) -> RelayFinding<'a> {
    RelayFinding {
        transaction: t,
        attempt,
        policy,
        scanner: probe.map(|p| p.scanner.as_str()),
        alert: rules::relay(attempt.verdict, attempt.confident),
    }
}

/// A server in the inventory.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub first_seen: u64,
    pub last_seen: u64,
    pub transactions: u64,
    pub clients: BTreeSet<IpAddr>,
    pub clients_capped: bool,
    pub sanctioned: bool,
    pub evidence: &'static str,
    /// Transactions and relay attempts by verdict over time (empty when
    /// more than `MAX_TIMELINES` servers were seen).
    pub timeline: timeline::Timeline,
}

/// One open relay, with its evidence.
#[derive(Clone, Debug)]
pub struct OpenRelay {
    pub ts: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub protocol: Protocol,
    pub recipient: String,
    pub reply_text: String,
    pub scanner: Option<String>,
}

/// What the audit report is made of.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub servers: BTreeMap<(SocketAddr, Protocol), ServerInfo>,
    pub servers_not_stored: u64,
    pub relay_attempts: BTreeMap<&'static str, u64>,
    pub open_relays: Vec<OpenRelay>,
    pub open_relays_total: u64,
    pub probes: BTreeMap<String, u64>,
    /// Servers with a timeline.
    pub timelines: usize,
}

impl Inventory {
    /// Counts `series` (an index into [`timeline::SERIES`]) for a server.
    fn note_time(&mut self, key: &(SocketAddr, Protocol), ts: u64, series: usize) {
        let room = self.timelines < MAX_TIMELINES;
        let Some(s) = self.servers.get_mut(key) else {
            return;
        };
        if s.timeline.is_empty() {
            if !room {
                return;
            }
            self.timelines += 1;
        }
        s.timeline.add(ts, series);
    }

    /// Counts a relay attempt by verdict (in all and in its server's
    /// timeline) and keeps the evidence of each recipient an open relay
    /// accepted.
    fn note_relay_attempt(
        &mut self,
        t: &Transaction,
        a: &RelayAttempt<'_>,
        probe: Option<&probe::Probe>,
    ) {
        *self.relay_attempts.entry(a.verdict.name()).or_default() += 1;
        let series = match a.verdict {
            RelayVerdict::OpenRelay => 1,
            RelayVerdict::Refused => 2,
            RelayVerdict::Deferred => 3,
            RelayVerdict::Unanswered => 4,
        };
        self.note_time(&(t.endpoints.server, t.protocol), t.ts, series);
        if a.verdict != RelayVerdict::OpenRelay {
            return;
        }
        for (rcpt, reply) in &a.foreign {
            let Some(r) = reply.filter(|r| r.code == ReplyCode::K) else {
                continue;
            };
            self.open_relays_total += 1;
            if self.open_relays.len() < MAX_OPEN_RELAY_EVIDENCE {
                self.open_relays.push(OpenRelay {
                    ts: t.ts,
                    client: t.endpoints.client,
                    server: t.endpoints.server,
                    protocol: t.protocol,
                    recipient: rcpt.clone(),
                    reply_text: r.text.text(),
                    scanner: probe.map(|p| p.scanner.clone()),
                });
            }
        }
    }

    pub fn unsanctioned_services(&self) -> usize {
        self.servers.values().filter(|s| !s.sanctioned).count()
    }
}

/// Run-wide counts the summary prints.
#[derive(Clone, Debug, Default)]
pub struct DetectStats {
    pub events_by_dataset: BTreeMap<&'static str, u64>,
    pub sessions_by_protocol: BTreeMap<&'static str, u64>,
    pub services: u64,
    pub transactions: u64,
    pub anomalies_by_kind: BTreeMap<String, u64>,
    pub relay_alerts_aggregated: u64,
    pub windows_dropped_cap: u64,
    /// Sessions that confirmed a server already reported as the other
    /// protocol (not reported again).
    pub service_protocol_conflicts: u64,
    /// Findings of a replay with several workers handed on before their
    /// turn in capture order, because too many were held back
    /// (`pipeline::merge`).
    pub findings_out_of_capture_order: u64,
    pub inventory: Inventory,
}

/// Repeated relay attempts of one client through one server, held for a window.
struct Window {
    start: u64,
    /// The window's first alert, into which the rest are folded.
    first: Box<RelayEvent>,
    first_flow: FlowSeen,
    last_flow: FlowSeen,
    count: u64,
    verdicts: BTreeMap<&'static str, u64>,
    worst: RelayVerdict,
}

/// Turns records into events.
pub(crate) struct Detector {
    policy: Arc<Policy>,
    /// [`policy_note`] of `policy`, written once: every relay alert
    /// carries it (describing the policy again cost more than the rest of
    /// the finding).
    policy_note: PolicyNote,
    window_ns: Option<u64>,
    windows: HashMap<(IpAddr, SocketAddr), Window>,
    /// Windows open at most ([`MAX_WINDOWS`]; tests set a smaller one).
    max_windows: usize,
    /// Start of the oldest open window: nothing is due before it ends.
    earliest_window: u64,
    observer: event::Observer,
    pub stats: DetectStats,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(Arc::new(Policy::default()), None)
    }
}

impl Detector {
    /// `window_ns`: aggregate repeated relay alerts of one client through one
    /// server into one alert per window of packet time.
    pub fn new(policy: Arc<Policy>, window_ns: Option<u64>) -> Self {
        Detector {
            policy_note: policy_note(&policy),
            policy,
            window_ns,
            windows: HashMap::new(),
            max_windows: MAX_WINDOWS,
            earliest_window: u64::MAX,
            observer: event::Observer::from_system(),
            stats: DetectStats::default(),
        }
    }

    /// The cap on open windows, lowered so that a test can reach it.
    #[cfg(test)]
    pub(crate) fn with_max_windows(mut self, max: usize) -> Self {
        self.max_windows = max;
        self
    }

    /// Sets the `observer.*` fields stamped on every event (the host name
    /// by default; live capture adds the interface).
    pub(crate) fn with_observer(mut self, observer: event::Observer) -> Self {
        self.observer = observer;
        self
    }

    fn count(&mut self, dataset: &'static str) {
        *self.stats.events_by_dataset.entry(dataset).or_default() += 1;
    }

    fn emit(&mut self, dataset: &'static str, e: impl Into<Event>, out: &mut Vec<Event>) {
        self.count(dataset);
        let mut e = e.into();
        e.stamp(&self.observer);
        out.push(e);
    }

    /// Emits an event about the sensor itself (statistics, capture loss):
    /// counted by dataset and stamped with the observer like every event.
    pub(crate) fn emit_sensor(&mut self, dataset: &'static str, e: Event, out: &mut Vec<Event>) {
        self.emit(dataset, e, out);
    }

    /// Handles one record; pushes zero or more events.
    pub fn record(&mut self, rec: Record, out: &mut Vec<Event>) {
        let ts = match &rec {
            Record::Service { ts, .. } => *ts,
            Record::Transaction(t) => t.ts,
            Record::Anomaly(a) => a.ts,
        };
        self.close_windows(Some(ts), out);
        match rec {
            Record::Service {
                endpoints,
                protocol,
                evidence,
                ts,
            } => {
                // A session confirms once: one Service record per session.
                *self
                    .stats
                    .sessions_by_protocol
                    .entry(protocol.name())
                    .or_default() += 1;
                let key = (endpoints.server, protocol);
                let inv = &mut self.stats.inventory;
                if let Some(s) = inv.servers.get_mut(&key) {
                    note_client(s, endpoints.client.ip(), ts);
                    return;
                }
                // One port, one server program: a server already reported as
                // the other protocol (a session whose bytes fit both, such as
                // a QMTP probe answered by a QMQP server's one reply) is not
                // a second service.
                let other = (endpoints.server, protocol.other());
                if let Some(s) = inv.servers.get_mut(&other) {
                    note_client(s, endpoints.client.ip(), ts);
                    self.stats.service_protocol_conflicts += 1;
                    return;
                }
                let sanctioned = self.policy.is_sanctioned(endpoints.server, protocol);
                if inv.servers.len() < MAX_SERVERS {
                    let mut info = ServerInfo {
                        first_seen: ts,
                        last_seen: ts,
                        transactions: 0,
                        clients: BTreeSet::new(),
                        clients_capped: false,
                        sanctioned,
                        evidence: evidence.name(),
                        timeline: timeline::Timeline::default(),
                    };
                    note_client(&mut info, endpoints.client.ip(), ts);
                    inv.servers.insert(key, info);
                } else {
                    inv.servers_not_stored += 1;
                }
                self.stats.services += 1;
                let f = service_finding(ts, &endpoints, protocol, evidence, sanctioned);
                let e = Event::Service(Box::new(event::service(&f)));
                self.emit(event::DATASET_SERVICE, e, out);
            }
            Record::Transaction(t) => self.transaction(&t, out),
            Record::Anomaly(a) => {
                *self
                    .stats
                    .anomalies_by_kind
                    .entry(a.kind.to_string())
                    .or_default() += 1;
                let e = Event::Anomaly(Box::new(event::anomaly(&a)));
                self.emit(event::DATASET_ANOMALY, e, out);
            }
        }
    }

    fn transaction(&mut self, t: &Transaction, out: &mut Vec<Event>) {
        self.stats.transactions += 1;
        let policy = Arc::clone(&self.policy);
        let client_trusted = policy.is_trusted(t.endpoints.client.ip());
        let attempt = judge(t, &policy);
        let probe = t.request.as_ref().and_then(probe::recognise);
        if let Some(s) = self
            .stats
            .inventory
            .servers
            .get_mut(&(t.endpoints.server, t.protocol))
        {
            s.transactions += 1;
            note_client(s, t.endpoints.client.ip(), t.ts);
        }
        let server_key = (t.endpoints.server, t.protocol);
        self.stats.inventory.note_time(&server_key, t.ts, 0);
        let e = event::transaction(&TransactionFinding {
            transaction: t,
            client_trusted,
            relay: attempt.as_ref().map(|a| a.verdict),
        });
        self.emit(
            event::DATASET_TRANSACTION,
            Event::Transaction(Box::new(e)),
            out,
        );
        if let Some(p) = &probe {
            *self
                .stats
                .inventory
                .probes
                .entry(p.scanner.clone())
                .or_default() += 1;
            let e = event::probe(&ProbeFinding {
                transaction: t,
                probe: p,
                client_trusted,
                alert: rules::probe(),
            });
            self.emit(event::DATASET_PROBE, Event::Probe(Box::new(e)), out);
        }
        let Some(a) = attempt else {
            return;
        };
        self.stats
            .inventory
            .note_relay_attempt(t, &a, probe.as_ref());
        let e = Box::new(event::relay(&relay_finding(
            t,
            &a,
            &self.policy_note,
            probe.as_ref(),
        )));
        match self.window_ns {
            None => self.emit(event::DATASET_RELAY, Event::Relay(e), out),
            Some(_) => self.windowed(t, a.verdict, e, out),
        }
    }

    /// Holds a relay alert in its client's and server's window, or counts
    /// it into the window already open.
    fn windowed(
        &mut self,
        t: &Transaction,
        verdict: RelayVerdict,
        e: Box<RelayEvent>,
        out: &mut Vec<Event>,
    ) {
        let key = (t.endpoints.client.ip(), t.endpoints.server);
        let flow = FlowSeen {
            ts: t.ts,
            endpoints: t.endpoints,
        };
        if let Some(w) = self.windows.get_mut(&key) {
            w.count += 1;
            w.last_flow = flow;
            *w.verdicts.entry(verdict.name()).or_default() += 1;
            w.worst = w.worst.min(verdict);
            self.stats.relay_alerts_aggregated += 1;
            return;
        }
        if self.windows.len() >= self.max_windows {
            // Too many windows open: report this one alone rather than hold it.
            self.stats.windows_dropped_cap += 1;
            self.emit(event::DATASET_RELAY, Event::Relay(e), out);
            return;
        }
        let mut verdicts = BTreeMap::new();
        verdicts.insert(verdict.name(), 1);
        self.earliest_window = self.earliest_window.min(t.ts);
        self.windows.insert(
            key,
            Window {
                start: t.ts,
                first: e,
                first_flow: flow,
                last_flow: flow,
                count: 1,
                verdicts,
                worst: verdict,
            },
        );
    }

    /// Emits the windows that ended before `now` (all of them with `None`).
    fn close_windows(&mut self, now: Option<u64>, out: &mut Vec<Event>) {
        let Some(len) = self.window_ns else {
            return;
        };
        if self.windows.is_empty() {
            return;
        }
        // Scanning every window per record would be quadratic under a flood
        // of distinct relaying clients: look only when the oldest is due.
        if now.is_some_and(|n| self.earliest_window.saturating_add(len) >= n) {
            return;
        }
        let due: Vec<(IpAddr, SocketAddr)> = self
            .windows
            .iter()
            .filter(|(_, w)| now.is_none_or(|n| w.start.saturating_add(len) < n))
            .map(|(k, _)| *k)
            .collect();
        let mut due_windows: Vec<Window> =
            due.iter().filter_map(|k| self.windows.remove(k)).collect();
        due_windows.sort_by_key(|w| w.start);
        self.earliest_window = self
            .windows
            .values()
            .map(|w| w.start)
            .min()
            .unwrap_or(u64::MAX);
        for w in due_windows {
            let folded = RelayWindowFinding {
                count: w.count,
                window_ns: len,
                verdicts: w.verdicts,
                worst: w.worst,
                // Used only when more than one attempt was folded: the
                // worst verdict's confident rating (a window of one keeps
                // its own alert).
                alert: rules::relay(w.worst, true),
                first: w.first_flow,
                last: w.last_flow,
            };
            let e = event::aggregate_relay(*w.first, folded);
            self.emit(event::DATASET_RELAY, Event::Relay(Box::new(e)), out);
        }
    }

    /// End of input: everything held is written.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.close_windows(None, out);
    }
}

fn note_client(s: &mut ServerInfo, client: IpAddr, ts: u64) {
    s.last_seen = s.last_seen.max(ts);
    s.first_seen = s.first_seen.min(ts);
    if s.clients.len() < MAX_CLIENTS_PER_SERVER {
        s.clients.insert(client);
    } else if !s.clients.contains(&client) {
        s.clients_capped = true;
    }
}

#[cfg(test)]
mod tests;
